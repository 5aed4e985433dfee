// A control loop in C++17 against the simulated device (ffi/examples/sim_device.rs), through
// small RAII wrappers over finwatch.h (every handle is a std::unique_ptr with the matching
// finwatch_*_free, so nothing leaks on any path, exceptions included):
//
//   control BASE_URL CLOSED_URL
//
// Every outcome is checked; the exit status is 0 only if every check passed. Every wait is
// bounded (client timeouts, request deadlines, alarm() as a last resort).

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "finwatch.h"

namespace finwatch {

template <typename T, void (*Free)(T *)>
struct Deleter {
    void operator()(T *p) const noexcept { Free(p); }
};
template <typename T, void (*Free)(T *)>
using Handle = std::unique_ptr<T, Deleter<T, Free>>;

// An error (owned). Immutable: may be read from any thread.
class Error {
  public:
    explicit Error(finwatch_error *e) : e_(e) {}
    std::string_view kind() const { return finwatch_error_kind(e_.get()); }
    std::string_view message() const { return finwatch_error_message(e_.get()); }
    // false is a guarantee: the device did not get the whole request; sending it again is safe.
    bool may_have_been_processed() const { return finwatch_error_may_have_been_processed(e_.get()) != 0; }

  private:
    Handle<finwatch_error, finwatch_error_free> e_;
};

// Thrown where failing is a programming error (building a request, creating a client).
class Exception : public std::runtime_error {
  public:
    explicit Exception(Error e) : std::runtime_error(std::string(e.message())), error_(std::move(e)) {}
    const Error &error() const { return error_; }

  private:
    Error error_;
};

// A response (owned). Immutable: may be read from any thread.
class Response {
  public:
    explicit Response(finwatch_response *r) : r_(r) {}
    int status() const { return finwatch_response_status(r_.get()); }
    std::string_view body() const {
        size_t len = 0;
        const uint8_t *p = finwatch_response_body(r_.get(), &len);
        return {reinterpret_cast<const char *>(p), len};
    }
    std::optional<std::string_view> header(const char *name) const {
        size_t len = 0;
        const uint8_t *p = finwatch_response_header(r_.get(), name, &len);
        if (p == nullptr) return std::nullopt;
        return std::string_view(reinterpret_cast<const char *>(p), len);
    }

  private:
    Handle<finwatch_response, finwatch_response_free> r_;
};

// The outcome of a send: a response, or an error. (Failures are a control loop's daily business,
// so they are values, not exceptions.)
class Result {
  public:
    static Result from(finwatch_response *r, finwatch_error *e) {
        Result out;
        if (r != nullptr) out.response_.emplace(r);
        if (e != nullptr) out.error_.emplace(e);
        return out;
    }
    explicit operator bool() const { return response_.has_value(); }
    const Response &operator*() const { return *response_; }
    const Response *operator->() const { return &*response_; }
    const Error &error() const { return *error_; }
    bool has_error() const { return error_.has_value(); }

  private:
    std::optional<Response> response_;
    std::optional<Error> error_;
};

// A prepared request; setters throw Exception on invalid input (the request is then unchanged).
class Request {
  public:
    Request(const std::string &method, const std::string &url) {
        finwatch_error *e = nullptr;
        r_.reset(finwatch_request_new(method.c_str(), url.c_str(), &e));
        check(e);
    }
    Request &header(const std::string &name, const std::string &value) {
        finwatch_error *e = nullptr;
        finwatch_request_add_header(r_.get(), name.c_str(), value.c_str(), &e);
        return check(e);
    }
    Request &body(std::string_view body) {
        finwatch_error *e = nullptr;
        finwatch_request_set_body(r_.get(), body.data(), body.size(), &e);
        return check(e);
    }
    Request &timeout(std::chrono::milliseconds t) {
        finwatch_error *e = nullptr;
        finwatch_request_set_timeout_ms(r_.get(), static_cast<uint64_t>(t.count()), &e);
        return check(e);
    }
    Request &retryable(bool on) {
        finwatch_error *e = nullptr;
        finwatch_request_set_retryable(r_.get(), on ? 1 : 0, &e);
        return check(e);
    }
    const finwatch_request *get() const { return r_.get(); }

  private:
    Request &check(finwatch_error *e) {
        if (e != nullptr) throw Exception(Error(e));
        return *this;
    }
    Handle<finwatch_request, finwatch_request_free> r_;
};

// finwatch_client: NOT thread-safe; one thread at a time (movable, not copyable).
class Client {
  public:
    Client(std::chrono::milliseconds connect_timeout, std::chrono::milliseconds request_timeout) {
        finwatch_error *e = nullptr;
        c_.reset(finwatch_client_new_with_timeouts(static_cast<uint64_t>(connect_timeout.count()),
                                                   static_cast<uint64_t>(request_timeout.count()), &e));
        if (e != nullptr) throw Exception(Error(e));
    }
    Result send(const std::string &method, const std::string &url, std::string_view body = {}) {
        finwatch_error *e = nullptr;
        finwatch_response *r =
            finwatch_send(c_.get(), method.c_str(), url.c_str(), body.data(), body.size(), &e);
        return Result::from(r, e);
    }
    Result send(const Request &req) {
        finwatch_error *e = nullptr;
        finwatch_response *r = finwatch_send_request(c_.get(), req.get(), &e);
        return Result::from(r, e);
    }

  private:
    Handle<finwatch_client, finwatch_client_free> c_;
};

// finwatch_shared_client: thread-safe; share it by reference between threads.
class SharedClient {
  public:
    SharedClient(std::chrono::milliseconds connect_timeout, std::chrono::milliseconds request_timeout) {
        finwatch_error *e = nullptr;
        c_.reset(finwatch_shared_client_new_with_timeouts(static_cast<uint64_t>(connect_timeout.count()),
                                                          static_cast<uint64_t>(request_timeout.count()), &e));
        if (e != nullptr) throw Exception(Error(e));
    }
    Result send(const std::string &method, const std::string &url, std::string_view body = {}) const {
        finwatch_error *e = nullptr;
        finwatch_response *r =
            finwatch_shared_client_send(c_.get(), method.c_str(), url.c_str(), body.data(), body.size(), &e);
        return Result::from(r, e);
    }
    Result send(const Request &req) const {
        finwatch_error *e = nullptr;
        finwatch_response *r = finwatch_shared_client_send_request(c_.get(), req.get(), &e);
        return Result::from(r, e);
    }

  private:
    Handle<finwatch_shared_client, finwatch_shared_client_free> c_;
};

}  // namespace finwatch

namespace {

std::atomic<int> checks{0}, failures{0};

void check(bool ok, const char *what, int line) {
    if (ok) {
        ++checks;
    } else {
        ++failures;
        std::fprintf(stderr, "control.cpp:%d: check failed: %s\n", line, what);
    }
}
#define CHECK(cond) check(static_cast<bool>(cond), #cond, __LINE__)

void expect_error(const finwatch::Result &r, std::string_view kind, bool may_have_been_processed) {
    CHECK(!r && r.has_error());
    if (!r.has_error()) return;
    const auto &e = r.error();
    std::printf("  error: %.*s (may have been processed: %d): %.*s\n", int(e.kind().size()), e.kind().data(),
                int(e.may_have_been_processed()), int(e.message().size()), e.message().data());
    CHECK(e.kind() == kind);
    CHECK(e.may_have_been_processed() == may_have_been_processed);
}

}  // namespace

int main(int argc, char **argv) {
    using namespace std::chrono_literals;
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s BASE_URL CLOSED_URL\n", argv[0]);
        return 2;
    }
    alarm(30);  // the last resort: SIGALRM ends the process with a failure
    const std::string base = argv[1], closed = argv[2];

    try {
        finwatch::Client client(500ms, 2000ms);

        // 1. A command and a query.
        auto put = client.send("PUT", base + "/unico/v1/interface/io", R"({"ioId":25602,"value":1})");
        CHECK(put && put->status() == 200 && put->body() == R"({"value":1})");
        CHECK(put && put->header("Content-Type") == std::optional<std::string_view>("application/json"));

        // 2. The incident's device: FIN after every response, commands back to back.
        int ok = 0;
        for (int i = 0; i < 20; i++) {
            auto r = client.send("PUT", base + "/fin/io", "1");
            ok += r && r->status() == 200;
        }
        std::printf("  device closing after every response: %d/20 commands answered\n", ok);
        CHECK(ok == 20);

        // 3. A prepared request, sent twice; responses outlive nothing they borrow (moved around).
        finwatch::Request pulse("POST", base + "/echo/api/pulse");
        pulse.header("X-Command-Id", "42").body("dedup=42").timeout(1000ms).retryable(true);
        std::vector<finwatch::Result> answers;
        answers.push_back(client.send(pulse));
        answers.push_back(client.send(pulse));
        for (const auto &r : answers) {
            CHECK(r && r->status() == 200 && r->body() == "dedup=42");
            CHECK(r && r->header("x-command-id") == std::optional<std::string_view>("42"));
        }

        // 4. Invalid input throws from the request's setters, with finwatch's error.
        try {
            pulse.header("X-Evil", "1\r\nX-Injected: 1");
            CHECK(!"header injection was accepted");
        } catch (const finwatch::Exception &e) {
            CHECK(e.error().kind() == "invalid_request");
            CHECK(!e.error().may_have_been_processed());
        }
        try {
            finwatch::Request bad("GET", "ftp://10.0.0.5/");
            CHECK(!"an ftp URL was accepted");
        } catch (const finwatch::Exception &e) {
            CHECK(e.error().kind() == "invalid_url");
        }

        // 5. A refused connection: nothing was sent.
        expect_error(client.send("PUT", closed, "1"), "connect_failed", false);

        // 6. A deadline: the device had the request.
        finwatch::Request slow("GET", base + "/slow");
        slow.timeout(200ms);
        auto started = std::chrono::steady_clock::now();
        auto late = client.send(slow);
        auto took = std::chrono::steady_clock::now() - started;
        expect_error(late, "deadline_exceeded", true);
        CHECK(took >= 150ms && took < 1500ms);

        // 7. A shared client, four threads at once, keep-alive and closing paths mixed.
        finwatch::SharedClient shared(500ms, 2000ms);
        std::atomic<int> answered{0};
        std::vector<std::thread> workers;
        for (int t = 0; t < 4; t++) {
            workers.emplace_back([&, t] {
                for (int i = 0; i < 10; i++) {
                    auto path = (i % 2) ? "/fin/io?t=" : "/io-state?t=";
                    auto r = shared.send("GET", base + path + std::to_string(t));
                    if (r && r->status() == 200) ++answered;
                }
            });
        }
        for (auto &w : workers) w.join();
        std::printf("  shared client, 4 threads: %d/40 commands answered\n", answered.load());
        CHECK(answered == 40);
        auto echoed = shared.send(pulse);
        CHECK(echoed && echoed->body() == "dedup=42");
        expect_error(shared.send("GET", closed), "connect_failed", false);
    } catch (const finwatch::Exception &e) {
        std::fprintf(stderr, "control.cpp: unexpected finwatch exception: %s\n", e.what());
        return 1;
    }

    if (failures) {
        std::fprintf(stderr, "control.cpp: %d of %d checks FAILED\n", failures.load(), checks + failures);
        return 1;
    }
    std::printf("control.cpp: all %d checks passed\n", checks.load());
    return 0;
}
