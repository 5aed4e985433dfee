#!/usr/bin/env python3
"""Writes the seed corpus under fuzz/seeds/<target>/ (committed; re-run after changing the layout).

The layouts are those of src/proto/fuzz.rs:
- response: [flags, n_splits, split lengths..., payload...]; flags bit 0 = HEAD request,
  bit 1 = feed EOF after the payload (close-delimited bodies end that way).
- engine:   a sequence of (op, arg[, extra bytes]) driver events; see the helpers below. Connection
  indices count the engine's Connect actions in order (the harness's `conns` list), and the harness
  configures max_in_flight_per_host = 2, max_connections_per_host = 3.

Usage: python3 fuzz/gen_seeds.py   (from anywhere)
"""

import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, "seeds")

# ---------------------------------------------------------------- response


def resp(payload, splits=(), head=False, eof=False):
    assert len(splits) < 8 and all(0 <= s < 256 for s in splits)
    flags = (1 if head else 0) | (2 if eof else 0)
    return bytes([flags, len(splits)] + list(splits)) + payload


CL = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: application/json\r\n\r\nhello"
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n3\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n"
)

RESPONSE_SEEDS = {
    "content_length": resp(CL),
    "content_length_split": resp(CL, splits=(1, 9, 17, 30)),
    "content_length_split_in_body": resp(CL, splits=(len(CL) - 3, 1)),
    "content_length_repeated_agreeing": resp(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nok"
    ),
    "content_length_conflicting": resp(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"),
    "content_length_zero_keep_alive": resp(
        b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5, max=100\r\nConnection: keep-alive\r\n"
        b"Content-Length: 0\r\n\r\n"
    ),
    "keep_alive_max_zero": resp(b"HTTP/1.1 200 OK\r\nKeep-Alive: max=0; timeout=1\r\nContent-Length: 0\r\n\r\n"),
    "connection_close": resp(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"),
    "chunked": resp(CHUNKED),
    "chunked_split_everywhere": resp(CHUNKED, splits=(45, 2, 5, 3, 9, 4, 1)),
    "chunked_cut_short_eof": resp(CHUNKED[:70], eof=True),
    "chunked_bad_size": resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
    "chunked_and_content_length": resp(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"
    ),
    "transfer_encoding_gzip_chunked": resp(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
    ),
    "http10_chunked": resp(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    "close_delimited_eof": resp(b"HTTP/1.1 200 OK\r\n\r\nbody until the server closes", eof=True),
    "close_delimited_split_eof": resp(b"HTTP/1.1 200 OK\r\n\r\nbody until close", splits=(10, 10), eof=True),
    "close_delimited_no_eof": resp(b"HTTP/1.1 200 OK\r\n\r\nnever ends"),
    "http10_keep_alive": resp(
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabc", splits=(12,)
    ),
    "http10_close_delimited": resp(b"HTTP/1.0 200 OK\r\n\r\nabc", eof=True),
    "interim_100": resp(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", splits=(20, 6)),
    "interim_103_twice": resp(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n"
        b"HTTP/1.1 204 No Content\r\n\r\n"
    ),
    "interim_too_many": resp(b"HTTP/1.1 100 Continue\r\n\r\n" * 5 + b"HTTP/1.1 204 No Content\r\n\r\n"),
    "switching_protocols": resp(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"),
    "no_content_ignores_length": resp(b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n"),
    "not_modified": resp(b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"),
    "head_request": resp(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", head=True),
    "head_request_chunked_then_next": resp(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nHTTP/1.1 200 OK\r\n", head=True
    ),
    "obs_fold_and_space_before_colon": resp(
        b"HTTP/1.1 200 OK\r\nX-Long: a\r\n  b\r\nServer : dev\r\nContent-Length: 1\r\n\r\nx", splits=(27, 3)
    ),
    "bare_lf": resp(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok"),
    "pipelined_extra": resp(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n", splits=(40,)),
    "body_over_limit": resp(b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n" + b"a" * 40),
    "close_delimited_over_limit": resp(b"HTTP/1.1 200 OK\r\n\r\n" + b"b" * 1100, splits=(200, 200, 200), eof=True),
    "chunked_over_limit": resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n401\r\n" + b"c" * 1025),
    "head_over_limit": resp(b"HTTP/1.1 200 OK\r\nX-Pad: " + b"p" * 520 + b"\r\n\r\n", splits=(100, 255)),
    "too_many_headers": resp(b"HTTP/1.1 200 OK\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(20)) + b"\r\n"),
    "bad_status_line": resp(b"HTTP/1.1 2x0 OK\r\n\r\n"),
    "not_http": resp(b"SSH-2.0-OpenSSH\r\n"),
    "empty_eof": resp(b"", eof=True),
    "digest_challenges": resp(
        b'HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm="x", Digest realm="a \\"b\\"", '
        b'nonce="abc", qop="auth,auth-int", algorithm=SHA-256-sess, opaque="o"\r\n'
        b'WWW-Authenticate: Digest realm="r", nonce=n2\r\nContent-Length: 0\r\n\r\n',
        splits=(40, 30),
    ),
}

# ---------------------------------------------------------------- engine

GET, PUT, POST, PATCH = range(4)
ALIVE, FIN, DATA, ERROR = range(4)
# The harness's canned RESPONSES (src/proto/fuzz.rs), by index; `data` cuts them by length.
CANNED = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n\r\nclose-delimited",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=1, max=2\r\nContent-Length: 0\r\n\r\n",
    b'HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Digest realm="r", nonce="n", qop=auth\r\nContent-Length: 0\r\n\r\n',
]
R_CL, R_CLOSE, R_CHUNKED, R_UNTIL_CLOSE, R_INTERIM, R_KEEP_ALIVE, R_CHALLENGE = range(len(CANNED))
RESPONSE_LENS = [len(r) for r in CANNED]


def submit(method, host=0, timeout_ms=None, digest=False):
    """op 0: submit; the arg byte chooses method (arg % 4), host (arg / 4 % 3), with bit 7 a
    timeout of arg & 0x3f ms, and with bit 6 Digest credentials."""
    want = 0x40 if digest else 0
    args = [a for a in range(256) if a % 4 == method and a // 4 % 3 == host and a & 0x40 == want]
    if timeout_ms is None:
        return [0, next(a for a in args if a & 0x80 == 0)]
    # The timeout shares its low bits with the method: take the nearest one not below the ask.
    return [0, min((a for a in args if a & 0x80 and a & 0x3F >= timeout_ms), key=lambda a: a & 0x3F)]


def connected(c):
    return [1, c]


def connect_failed(c):
    return [2, c]


def probe(c, outcome=ALIVE):
    return [3, c, outcome]


def write(c, n=255):
    return [4, c, n]


def data(c, which, cut=None):
    return [5, c, which, RESPONSE_LENS[which] if cut is None else cut]


def fin(c):
    return [6, c]


def rst(c):
    return [7, c]


def tick(ms):
    """op 8: time advances by arg * 8 ms, then timers run."""
    return [8, (ms + 7) // 8]


def junk(arg, payload):
    """op 9: arg % 16 bytes that follow are fed as data on conns[arg % len(conns)]."""
    assert arg % 16 == len(payload)
    return [9, arg] + list(payload)


def seq(*events):
    return bytes(b for e in events for b in e)


def exchange(c, which=R_CL):
    return [*probe(c), *write(c), *data(c, which)]


ENGINE_SEEDS = {
    # A POST with Digest credentials is challenged, sent again with the answer, and answered.
    "digest_challenge_post": seq(
        submit(POST, digest=True), connected(0), exchange(0, R_CHALLENGE), exchange(0, R_CL)
    ),
    # submit -> connect -> probe -> write -> data, then the device closes the idle connection.
    "get_ok_then_idle_fin": seq(submit(GET), connected(0), exchange(0), fin(0)),
    # Keep-alive reuse: the second request goes on the same connection after a fresh probe.
    "put_keep_alive_reuse": seq(
        submit(PUT), connected(0), exchange(0, R_KEEP_ALIVE), submit(PUT), exchange(0, R_KEEP_ALIVE)
    ),
    "connection_close_retires": seq(submit(GET), connected(0), exchange(0, R_CLOSE), submit(GET), connected(1),
                                    exchange(1)),
    "chunked_ok": seq(submit(GET), connected(0), exchange(0, R_CHUNKED)),
    "chunked_cut_by_fin": seq(submit(PUT), connected(0), probe(0), write(0), data(0, R_CHUNKED, 50), fin(0)),
    "close_delimited_by_fin": seq(submit(GET), connected(0), exchange(0, R_UNTIL_CLOSE), fin(0)),
    "interim_then_204": seq(submit(POST), connected(0), exchange(0, R_INTERIM)),
    # A FIN that only the pre-write peek catches: the request goes back to the queue, not retried.
    "stale_idle_caught_by_peek": seq(
        submit(PUT), connected(0), exchange(0), submit(POST), probe(0, FIN), connected(1), exchange(1)
    ),
    "peek_finds_reset": seq(submit(GET), connected(0), exchange(0), submit(GET), probe(0, ERROR), connected(1),
                            exchange(1)),
    "peek_finds_data": seq(submit(GET), connected(0), exchange(0), submit(GET), probe(0, DATA), connected(1),
                           exchange(1)),
    # The keep-alive race: the request crosses the device's FIN/RST on a reused connection.
    "put_retried_after_rst_on_reused": seq(
        submit(PUT), connected(0), exchange(0), submit(PUT), probe(0), write(0), rst(0), connected(1), exchange(1)
    ),
    "post_not_retried_after_fin_on_reused": seq(
        submit(POST), connected(0), exchange(0), submit(POST), probe(0), write(0), fin(0), submit(GET),
        connected(1), exchange(1),
    ),
    "post_fresh_conn_rst_not_retried": seq(submit(POST), connected(0), probe(0), write(0), rst(0)),
    # Partially written: the device cannot have it all, so even a POST is retried.
    "post_partial_write_then_fin_retried": seq(
        submit(POST), connected(0), probe(0), write(0, 10), fin(0), connected(1), probe(1), write(1, 7),
        write(1), data(1, R_CL),
    ),
    # Partial writes, then the response in two reads (op 5 always starts at the canned response's
    # first byte, so the rest comes as raw data through op 9).
    "partial_writes_split_response": seq(
        submit(PATCH), connected(0), probe(0), write(0, 1), write(0, 2), write(0, 30), write(0),
        data(0, R_CL, 25), junk(15, CANNED[R_CL][25:]),
    ),
    "early_response_while_writing": seq(submit(PUT), connected(0), probe(0), write(0, 5), data(0, R_CLOSE),
                                        write(0)),
    "response_after_retry_exhausted": seq(
        submit(PUT), connected(0), exchange(0), submit(PUT), probe(0), write(0), fin(0), connected(1), probe(1),
        write(1, 3), rst(1), connected(2),
    ),
    # Deadlines: while connecting, while awaiting the response, while queued behind others.
    "deadline_while_connecting": seq(submit(GET, timeout_ms=5), tick(16), connected(0)),
    "deadline_awaiting_response": seq(
        submit(POST, timeout_ms=20), connected(0), probe(0), write(0), tick(40), data(0, R_CL)
    ),
    "deadline_queued": seq(
        submit(PUT), submit(PUT), submit(GET, timeout_ms=3), connected(0), tick(8), connected(1), exchange(0),
        exchange(1),
    ),
    "connect_failed": seq(submit(GET), connect_failed(0), submit(POST), connected(1), exchange(1)),
    "connect_timeout": seq(submit(PUT), tick(2040), tick(2040), submit(PUT), connected(1), exchange(1)),
    "idle_expiry_keep_alive_timeout": seq(submit(GET), connected(0), exchange(0, R_KEEP_ALIVE), tick(1000),
                                          submit(GET), connected(1), exchange(1)),
    # Two hosts, two in flight per host, three connections per host.
    "two_hosts_in_flight": seq(
        submit(GET, 0), submit(POST, 0), submit(PUT, 1), submit(GET, 0),
        connected(0), connected(1), connected(2),
        exchange(0), exchange(1, R_CHUNKED), exchange(2, R_UNTIL_CLOSE), fin(2), probe(0), write(0),
        data(0, R_CLOSE),
    ),
    "unsolicited_data_on_idle": seq(submit(GET), connected(0), exchange(0), junk(5, b"HTTP/"), submit(GET),
                                    connected(1), exchange(1)),
    "junk_response": seq(submit(GET), connected(0), probe(0), write(0), junk(13, b"HTTP/9.9 xx\r\n")),
    "fin_while_connecting": seq(submit(POST), fin(0), submit(POST), connected(1), exchange(1)),
    "rst_on_idle_then_new": seq(submit(GET), connected(0), exchange(0), rst(0), submit(PUT), connected(1),
                                exchange(1)),
}


# Hand-minimised forms of crashes the fuzzers found (their raw inputs sit beside them, named
# crash-<sha1> by libFuzzer). Every file under regressions/<target>/ is run by tests/regressions.rs.
REGRESSIONS = {
    "response": {
        # httparse returns a 'static "" reason for these; framing.rs computes its offset in the head
        # buffer by pointer subtraction -> "attempt to subtract with overflow" (feed_head).
        "reason_missing": resp(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n"),
        "reason_obs_text": resp(b"HTTP/1.1 200 Gr\xf6\xdfe\r\nContent-Length: 0\r\n\r\n"),
        "interim_reason_missing": resp(b"HTTP/1.1 100\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"),
        # A backslash before a multi-byte character in a challenge's quoted-string: the parser
        # stepped into the middle of the character and panicked slicing the string (digest.rs).
        "digest_backslash_utf8": resp(
            b'HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Digest realm="\\\xc3\xa9", nonce=n\r\n'
            b"Content-Length: 0\r\n\r\n"
        ),
    },
    "engine": {
        "reason_missing": seq(
            submit(GET), connected(0), probe(0), write(0), junk(14, b"HTTP/1.1 200\r\n"), junk(2, b"\r\n")
        ),
    },
}


def write_dir(name, seeds):
    d = os.path.join(SEEDS, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for k, v in seeds.items():
        with open(os.path.join(d, k), "wb") as f:
            f.write(v)
    print(f"{len(seeds)} seeds in {os.path.relpath(d)}")


def write_regressions():
    for target, inputs in REGRESSIONS.items():
        d = os.path.join(HERE, "regressions", target)
        os.makedirs(d, exist_ok=True)
        for k, v in inputs.items():
            with open(os.path.join(d, k), "wb") as f:
                f.write(v)


if __name__ == "__main__":
    write_dir("response", RESPONSE_SEEDS)
    write_dir("engine", ENGINE_SEEDS)
    write_regressions()
