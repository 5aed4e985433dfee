"""A tiny HTTP/1.1 device on 127.0.0.1 for the tests, and a watchdog so that no test can hang.

The device (http.server, one thread per connection) keeps connections alive and answers:

- ``GET|PUT|POST|DELETE /echo``: 200 with the request body as the body, and ``X-Method``,
  ``X-Path`` and ``X-Got-<name>`` (for each request header ``X-Probe-<name>``) headers;
- ``/latin``: 200 with the header ``X-Latin: caf\xe9`` (one byte, ISO-8859-1);
- ``/headers``: 200 with the request's header fields, one ``name: value`` line each;
- ``/status/<code>``: that status, with the body ``status <code>``;
- ``/close``: 200, then closes the connection (FIN) **without** ``Connection: close``: the
  embedded-device behaviour finwatch exists for;
- ``/delay/<ms>``: 200 after that many milliseconds;
- ``/hang``: reads the request and never answers (until the device stops, 10 s at most).

Every request is recorded (method, path, body, the connection's number) in ``device.requests``.
"""

import faulthandler
import http.server
import signal
import socket
import sys
import threading

import pytest

# A shell that starts CI as a background job without job control (`( .ci/run & )`) starts it
# with SIGINT ignored; Python then installs no handler of its own, and `_thread.interrupt_main`,
# the Ctrl-C tests' way of pressing Ctrl-C, does nothing: those tests then fail for the way CI
# was started, not for the client. They are about Ctrl-C, so SIGINT gets Python's own handler
# whatever the parent left it.
signal.signal(signal.SIGINT, signal.default_int_handler)

# Every test is over in seconds; one stuck past this (a bug: every wait in the tests and in the
# client is bounded) dumps every thread's stack and exits instead of hanging CI.
WATCHDOG_SECONDS = 60


@pytest.fixture(autouse=True)
def watchdog():
    faulthandler.dump_traceback_later(WATCHDOG_SECONDS, exit=True, file=sys.stderr)
    yield
    faulthandler.cancel_dump_traceback_later()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless told otherwise
    timeout = 10  # a connection idle this long is closed (bounds the handler threads)

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        with self.server.lock:
            self.server.connections += 1
            self.conn_no = self.server.connections

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with self.server.lock:
            self.server.requests.append((self.command, self.path, body, self.conn_no))
        path = self.path
        if path == "/echo":
            extra = [("X-Method", self.command), ("X-Path", path)]
            for name, value in self.headers.items():
                if name.lower().startswith("x-probe-"):
                    extra.append(("X-Got-" + name[len("x-probe-"):], value))
            self._send(200, body, extra)
        elif path == "/latin":
            # http.server encodes header values as ISO-8859-1: one byte 0xE9 for the é.
            self._send(200, b"", [("X-Latin", "caf\u00e9")])
        elif path == "/headers":
            lines = "".join(f"{n}: {v}\n" for n, v in self.headers.items())
            self._send(200, lines.encode("latin-1"))
        elif path.startswith("/status/"):
            code = int(path[len("/status/"):])
            self._send(code, f"status {code}".encode())
        elif path == "/close":
            self._send(200, b"closing")
            # No Connection: close header: the device just closes (FIN) after the response.
            self.close_connection = True
        elif path.startswith("/delay/"):
            self.server.stop.wait(int(path[len("/delay/"):]) / 1000)
            self._send(200, b"late")
        elif path == "/hang":
            self.server.stop.wait(10)
            self.close_connection = True
        else:
            self._send(200, b"hello")

    def _send(self, code, body, extra=()):
        try:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            for name, value in extra:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up first (a test of its deadline): nothing to answer.
            self.close_connection = True

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _answer


class Device(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.connections = 0
        self.requests = []
        self.base = f"http://127.0.0.1:{self.server_address[1]}"

    def url(self, path):
        return self.base + path

    def paths(self):
        with self.lock:
            return [(method, path) for method, path, _, _ in self.requests]


@pytest.fixture
def device():
    d = Device()
    t = threading.Thread(target=d.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield d
    finally:
        d.stop.set()
        d.shutdown()
        d.server_close()
        t.join(timeout=5)


@pytest.fixture
def closed_port():
    """A port on 127.0.0.1 on which nothing listens (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
