/*
 * A control loop in C against the simulated device (ffi/examples/sim_device.rs):
 *
 *   control BASE_URL CLOSED_URL
 *
 * BASE_URL is the device (http://127.0.0.1:PORT), CLOSED_URL a loopback port on which nothing
 * listens. Every outcome is checked; the exit status is 0 only if every check passed. Every wait
 * is bounded (client timeouts, request deadlines, and alarm() as a last resort), so it cannot
 * hang. .ci/ffi builds it against libfinwatch.a and libfinwatch.so and runs it.
 */
#define _POSIX_C_SOURCE 200809L

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "finwatch.h"

static int checks, failures;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (cond) {                                                                    \
            checks++;                                                                  \
        } else {                                                                       \
            failures++;                                                                \
            fprintf(stderr, "control.c:%d: check failed: %s\n", __LINE__, #cond);      \
        }                                                                              \
    } while (0)

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* Whether the response's body is exactly `want`. */
static int body_is(const finwatch_response *r, const char *want) {
    size_t len = 0;
    const uint8_t *body = finwatch_response_body(r, &len);
    return len == strlen(want) && memcmp(body, want, len) == 0;
}

/* Whether the response's header field `name` is exactly `want`. */
static int header_is(const finwatch_response *r, const char *name, const char *want) {
    size_t len = 0;
    const uint8_t *value = finwatch_response_header(r, name, &len);
    return value != NULL && len == strlen(want) && memcmp(value, want, len) == 0;
}

/* Checks that `e` is an error of `kind` with that `may_have_been_processed`, and frees it. */
static void expect_error(finwatch_error *e, const char *kind, int may_have_been_processed) {
    CHECK(e != NULL);
    if (e == NULL) return;
    printf("  error: %s (may have been processed: %d): %s\n", finwatch_error_kind(e),
           finwatch_error_may_have_been_processed(e), finwatch_error_message(e));
    CHECK(strcmp(finwatch_error_kind(e), kind) == 0);
    CHECK(finwatch_error_may_have_been_processed(e) == may_have_been_processed);
    finwatch_error_free(e);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s BASE_URL CLOSED_URL\n", argv[0]);
        return 2;
    }
    alarm(30); /* the last resort: SIGALRM ends the process with a failure */
    const char *base = argv[1], *closed = argv[2];
    char url[512];
    finwatch_error *err = NULL;

    printf("%s\n", finwatch_version());
    finwatch_client *client = finwatch_client_new_with_timeouts(500, 2000, &err);
    CHECK(client != NULL && err == NULL);
    if (client == NULL) return 1;

    /* 1. A command and a query: status and body. */
    const char *command = "{\"ioId\":25602,\"value\":1}";
    snprintf(url, sizeof url, "%s/unico/v1/interface/io", base);
    finwatch_response *r = finwatch_send(client, "PUT", url, command, strlen(command), &err);
    CHECK(r != NULL && err == NULL);
    CHECK(finwatch_response_status(r) == 200);
    CHECK(body_is(r, "{\"value\":1}"));
    CHECK(header_is(r, "content-type", "application/json"));
    finwatch_response_free(r);

    /* 2. The incident: a device that closes (FIN) after every response, commands back to back.
     *    None may fail (and the device counts any byte written after its FIN). */
    snprintf(url, sizeof url, "%s/fin/unico/v1/interface/io", base);
    int ok = 0;
    for (int i = 0; i < 20; i++) {
        r = finwatch_send(client, "PUT", url, "1", 1, &err);
        if (r != NULL && finwatch_response_status(r) == 200) ok++;
        if (err != NULL) expect_error(err, "(none expected)", 0);
        finwatch_response_free(r);
    }
    printf("  device closing after every response: %d/20 commands answered\n", ok);
    CHECK(ok == 20);

    /* 3. A prepared request with header fields, a deadline and a retry permission, sent twice. */
    snprintf(url, sizeof url, "%s/echo/api/pulse", base);
    finwatch_request *pulse = finwatch_request_new("POST", url, &err);
    CHECK(pulse != NULL && err == NULL);
    CHECK(finwatch_request_add_header(pulse, "X-Command-Id", "41", &err) == 0);
    CHECK(finwatch_request_add_header(pulse, "Content-Type", "text/plain", &err) == 0);
    CHECK(finwatch_request_set_body(pulse, "dedup=41", 8, &err) == 0);
    CHECK(finwatch_request_set_timeout_ms(pulse, 1000, &err) == 0);
    CHECK(finwatch_request_set_retryable(pulse, 1, &err) == 0);
    CHECK(err == NULL);
    /* Header injection is refused (the request is left as it was). */
    CHECK(finwatch_request_add_header(pulse, "X-Evil", "1\r\nX-Injected: 1", &err) == -1);
    expect_error(err, "invalid_request", 0);
    for (int i = 0; i < 2; i++) {
        r = finwatch_send_request(client, pulse, &err);
        CHECK(r != NULL && err == NULL);
        CHECK(finwatch_response_status(r) == 200);
        CHECK(body_is(r, "dedup=41"));
        CHECK(header_is(r, "X-Command-Id", "41"));
        CHECK(header_is(r, "X-Method", "POST"));
        finwatch_response_free(r);
    }

    /* 4. A 404 is a response, not an error. */
    snprintf(url, sizeof url, "%s/missing", base);
    r = finwatch_send(client, "GET", url, NULL, 0, &err);
    CHECK(r != NULL && err == NULL && finwatch_response_status(r) == 404);
    finwatch_response_free(r);

    /* 5. A refused connection: nothing was sent, so sending again cannot apply it twice. */
    r = finwatch_send(client, "PUT", closed, "1", 1, &err);
    CHECK(r == NULL);
    expect_error(err, "connect_failed", 0);

    /* 6. A request deadline: the device had the request, so it may have acted on it. */
    snprintf(url, sizeof url, "%s/slow", base);
    finwatch_request *slow = finwatch_request_new("GET", url, &err);
    CHECK(finwatch_request_set_timeout_ms(slow, 200, &err) == 0);
    double started = now_ms();
    r = finwatch_send_request(client, slow, &err);
    double took = now_ms() - started;
    CHECK(r == NULL);
    CHECK(took >= 150 && took < 1500);
    expect_error(err, "deadline_exceeded", 1);
    finwatch_request_free(slow);

    /* 7. Bad arguments are errors, not crashes. */
    r = finwatch_send(client, "GET", NULL, NULL, 0, &err);
    CHECK(r == NULL);
    expect_error(err, "invalid_argument", 0);
    r = finwatch_send(client, "GET", "http://127.0.0.1/\xff", NULL, 0, &err);
    CHECK(r == NULL);
    expect_error(err, "invalid_argument", 0);
    r = finwatch_send(client, "GET", "ftp://10.0.0.5/", NULL, 0, &err);
    CHECK(r == NULL);
    expect_error(err, "invalid_url", 0);
    r = finwatch_send(NULL, "GET", base, NULL, 0, &err);
    CHECK(r == NULL);
    expect_error(err, "invalid_argument", 0);
    finwatch_response_free(NULL);
    finwatch_error_free(NULL);
    finwatch_request_free(NULL);
    finwatch_client_free(NULL);

    /* 8. Submit + poll from a host event loop: poll(2) on the client's fd, bounded by its next
     *    deadline; three requests, one of them refused. */
    snprintf(url, sizeof url, "%s/unico/v1/interface/io-state?ioId=25602", base);
    finwatch_request *state = finwatch_request_new("GET", url, &err);
    finwatch_request *refused = finwatch_request_new("GET", closed, &err);
    CHECK(state != NULL && refused != NULL && err == NULL);
    uint64_t a = finwatch_submit(client, state, &err);
    uint64_t b = finwatch_submit(client, pulse, &err);
    uint64_t c = finwatch_submit(client, refused, &err);
    CHECK(a != 0 && b != 0 && c != 0 && err == NULL);
    int fd = finwatch_client_fd(client);
    CHECK(fd >= 0);
    int got_state = 0, got_pulse = 0, got_refused = 0, taken = 0;
    started = now_ms();
    while (taken < 3 && now_ms() - started < 5000) {
        /* finwatch's turn first: a submit only queues its work, which this call starts (the fd
         * announces nothing before that). */
        CHECK(finwatch_poll(client, 0, &err) >= 0);
        uint64_t id;
        finwatch_response *resp;
        finwatch_error *failure;
        while (finwatch_take_completion(client, &id, &resp, &failure) == 1) {
            taken++;
            if (id == a) got_state = resp != NULL && body_is(resp, "{\"value\":1}");
            if (id == b) got_pulse = resp != NULL && body_is(resp, "dedup=41");
            if (id == c) {
                got_refused = resp == NULL && failure != NULL &&
                              strcmp(finwatch_error_kind(failure), "connect_failed") == 0 &&
                              !finwatch_error_may_have_been_processed(failure);
            }
            finwatch_response_free(resp);
            finwatch_error_free(failure);
        }
        if (taken == 3) break;
        /* The host loop's wait: the fd readable, or the client's next deadline. */
        int64_t wait = finwatch_client_next_deadline_ms(client);
        if (wait < 0 || wait > 100) wait = 100;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, (int)wait) < 0) break;
    }
    printf("  host loop: %d completions in %.1f ms\n", taken, now_ms() - started);
    CHECK(taken == 3 && got_state && got_pulse && got_refused);
    CHECK(finwatch_pending(client) == 0);

    finwatch_request_free(state);
    finwatch_request_free(refused);
    finwatch_request_free(pulse);
    finwatch_client_free(client);

    if (failures) {
        fprintf(stderr, "control.c: %d of %d checks FAILED\n", failures, checks + failures);
        return 1;
    }
    printf("control.c: all %d checks passed\n", checks);
    return 0;
}
