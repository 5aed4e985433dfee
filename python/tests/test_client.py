"""finwatch's Python API against the device in conftest.py (loopback only, every wait bounded)."""

import _thread
import io
import os
import socket
import threading
import time

import pytest

import finwatch

# Short enough that a failing test fails fast, long enough for a loaded CI machine.
OPTIONS = dict(connect_timeout=2.0, request_timeout=5.0)


@pytest.fixture
def client():
    with finwatch.Client(**OPTIONS) as c:
        yield c


# --- round trips -----------------------------------------------------------------------------


def test_get_round_trip(client, device):
    resp = client.get(device.url("/anything"))
    assert resp.status == 200
    assert resp.reason == "OK"
    assert resp.version == "HTTP/1.1"
    assert resp.ok
    assert isinstance(resp.body, bytes)
    assert resp.body == b"hello"
    assert device.paths() == [("GET", "/anything")]


def test_put_round_trip_sends_the_body_bytes(client, device):
    payload = bytes(range(256)) * 4  # every byte value, NUL and CR/LF included
    resp = client.put(device.url("/echo"), payload)
    assert resp.status == 200
    assert resp.body == payload
    assert resp.header("X-Method") == "PUT"
    assert device.requests[0][:3] == ("PUT", "/echo", payload)


@pytest.mark.parametrize(
    "body, sent",
    [
        (b"raw", b"raw"),
        (bytearray(b"array"), b"array"),
        (memoryview(b"view"), b"view"),
        ("t\u00e9xt", "t\u00e9xt".encode()),
        (b"", b""),
    ],
)
def test_body_types(client, device, body, sent):
    assert client.request("POST", device.url("/echo"), body=body).body == sent


def test_body_of_another_type_is_a_type_error(client, device):
    with pytest.raises(TypeError, match="body must be"):
        client.put(device.url("/echo"), 12)
    assert device.requests == []


def test_request_any_method_and_delete(client, device):
    assert client.request("PATCH", device.url("/echo"), b"x").status == 501  # http.server has no PATCH
    assert client.delete(device.url("/echo")).header("X-Method") == "DELETE"
    assert client.post(device.url("/echo"), b"p").body == b"p"


def test_keep_alive_reuses_the_connection(client, device):
    first = client.get(device.url("/a"))
    second = client.get(device.url("/b"))
    assert not first.reused and second.reused
    assert first.connection_id == second.connection_id
    assert device.connections == 1
    stats = client.stats()
    assert (stats["connects"], stats["reuses"], stats["succeeded"]) == (1, 1, 2)


# --- headers ---------------------------------------------------------------------------------


def test_request_headers_from_a_dict_or_pairs(client, device):
    resp = client.get(device.url("/echo"), headers={"X-Probe-One": "1"})
    assert resp.header("x-got-one") == "1"  # case-insensitive lookup
    pairs = [("X-Probe-A", "a"), ("X-Probe-B", "b  ")]  # trailing spaces are dropped
    resp = client.request("GET", device.url("/echo"), headers=pairs)
    assert (resp.header("X-Got-A"), resp.header("X-Got-B")) == ("a", "b")


def test_response_headers_are_ordered_name_value_tuples(client, device):
    resp = client.get(device.url("/echo"))
    assert isinstance(resp.headers, list)
    assert all(isinstance(h, tuple) and len(h) == 2 for h in resp.headers)
    names = [n for n, _ in resp.headers]
    assert names.index("Content-Length") < names.index("X-Method") < names.index("X-Path")
    assert ("X-Path", "/echo") in resp.headers
    assert resp.header("No-Such-Header") is None
    assert resp.header("No-Such-Header", "default") == "default"


def test_response_header_values_are_iso_8859_1(client, device):
    value = client.get(device.url("/latin")).header("X-Latin")
    assert value == "caf\u00e9"
    assert value.encode("latin-1") == b"caf\xe9"  # the bytes on the wire


def test_user_agent_option(device):
    with finwatch.Client(user_agent="plant-controller/2", **OPTIONS) as c:
        assert "User-Agent: plant-controller/2\n" in c.get(device.url("/headers")).body.decode()
        # A request's own User-Agent wins, and is sent once.
        body = c.get(device.url("/headers"), headers={"user-agent": "mine"}).body.decode()
        assert "user-agent: mine\n" in body.lower() and body.lower().count("user-agent") == 1


def test_bad_headers_argument_is_a_type_error(client, device):
    with pytest.raises(TypeError, match="headers must be"):
        client.get(device.url("/"), headers=[("X-Only-A-Name",)])
    with pytest.raises(TypeError, match="headers must be"):
        client.get(device.url("/"), headers={"X-Int": 1})
    assert device.requests == []


# --- statuses and the device closing ---------------------------------------------------------


@pytest.mark.parametrize("code", [404, 500, 503])
def test_non_2xx_is_a_response_not_an_error(client, device, code):
    resp = client.get(device.url(f"/status/{code}"))
    assert resp.status == code
    assert not resp.ok
    assert resp.body == f"status {code}".encode()


def test_device_closing_after_every_response_loses_no_command(device):
    # The incident finwatch exists for: the device answers, then closes (FIN) without saying
    # Connection: close. Every command must still be answered, each exactly once.
    with finwatch.Client(**OPTIONS) as c:
        for i in range(20):
            resp = c.put(device.url("/close"), str(i))
            assert (resp.status, resp.body) == (200, b"closing")
            time.sleep(0.005)  # the FIN reaches the client while the connection is idle
        stats = c.stats()
    assert [body for _, _, body, _ in device.requests] == [str(i).encode() for i in range(20)]
    assert stats["succeeded"] == 20 and stats["failed"] == 0 and stats["retries"] == 0
    # A fresh connection for every command (a warm spare, after the first few), never a write
    # on a closed one.
    assert stats["connects"] >= 20


def test_warm_spares_option(device):
    with finwatch.Client(warm_spares=False, **OPTIONS) as c:
        for _ in range(3):
            c.get(device.url("/close"))
        assert c.stats()["warm_spares_opened"] == 0


# --- errors ----------------------------------------------------------------------------------


def test_error_is_an_exception_subclass():
    assert issubclass(finwatch.Error, Exception)
    e = finwatch.Error("made by hand")
    assert e.kind is None and e.may_have_been_processed is True  # unknown, so assumed


def test_connection_refused(client, closed_port):
    with pytest.raises(finwatch.Error) as info:
        client.put(f"http://127.0.0.1:{closed_port}/io", b"1")
    e = info.value
    assert e.kind == "connect_failed"
    assert e.may_have_been_processed is False
    assert "could not connect" in str(e) and str(closed_port) in str(e)


def test_timeout_of_a_sent_put(client, device):
    start = time.monotonic()
    with pytest.raises(finwatch.Error) as info:
        client.put(device.url("/hang"), b"on", timeout=0.3)
    elapsed = time.monotonic() - start
    e = info.value
    assert e.kind == "deadline_exceeded"
    assert e.may_have_been_processed is True  # the device had the whole PUT
    assert "may have acted" in str(e)
    assert 0.25 <= elapsed < 3
    assert device.paths() == [("PUT", "/hang")]


def test_client_request_timeout_option(device):
    with finwatch.Client(request_timeout=0.2, connect_timeout=1) as c:
        with pytest.raises(finwatch.Error) as info:
            c.get(device.url("/delay/2000"))
        assert info.value.kind == "deadline_exceeded"
        # The per-request timeout overrides it.
        assert c.get(device.url("/delay/300"), timeout=3).body == b"late"


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1/", "not a url", "http://", "http://user:secret@127.0.0.1/", "http://10.0.5/", ""],
)
def test_invalid_url(client, url):
    with pytest.raises(finwatch.Error) as info:
        client.get(url)
    assert info.value.kind == "invalid_url"
    assert info.value.may_have_been_processed is False
    assert "secret" not in str(info.value)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Id": "1\r\nX-Evil: 1"},
        {"X-Id": "1\nX-Evil: 1"},
        {"X-Id": "1\r"},
        {"X-Id": "nul\x00"},
        {"X-Evil: 1\r\nX-Id": "1"},
        {"": "empty name"},
        {"Transfer-Encoding": "chunked"},
    ],
)
def test_header_injection_is_refused_before_sending(client, device, headers):
    with pytest.raises(finwatch.Error) as info:
        client.get(device.url("/echo"), headers=headers)
    assert info.value.kind == "invalid_request"
    assert info.value.may_have_been_processed is False
    assert device.requests == []


@pytest.mark.parametrize("method", ["GE T", "GET\r\nX: 1", "", "CONNECT"])
def test_invalid_method(client, device, method):
    with pytest.raises(finwatch.Error) as info:
        client.request(method, device.url("/"))
    assert info.value.kind == "invalid_request"
    assert device.requests == []


def test_limit_exceeded(device):
    with finwatch.Client(max_body_bytes=4, **OPTIONS) as c:
        with pytest.raises(finwatch.Error) as info:
            c.get(device.url("/"))  # "hello": 5 bytes
    assert info.value.kind == "limit_exceeded"
    assert info.value.may_have_been_processed is True


def test_errors_leave_the_client_usable(client, device, closed_port):
    with pytest.raises(finwatch.Error):
        client.get(f"http://127.0.0.1:{closed_port}/")
    with pytest.raises(finwatch.Error):
        client.get("ftp://x/")
    assert client.get(device.url("/")).body == b"hello"


# --- options ---------------------------------------------------------------------------------


def test_every_option_is_accepted(device):
    with finwatch.Client(
        connect_timeout=1,
        request_timeout=2.5,
        idle_timeout=5,
        max_retries=0,
        max_in_flight_per_host=1,
        max_connections_per_host=2,
        nodelay=True,
        busy_poll=0.0001,
        adaptive_spin=0,
        warm_spares=True,
        user_agent=None,
        max_head_bytes=8192,
        max_headers=32,
        max_body_bytes=1024,
        max_interim_responses=2,
    ) as c:
        assert c.get(device.url("/")).status == 200


def test_unknown_option_is_a_type_error():
    with pytest.raises(TypeError, match="unexpected option 'request_timout'"):
        finwatch.Client(request_timout=1)
    with pytest.raises(TypeError):
        finwatch.Client(1.0)  # options are keywords only


@pytest.mark.parametrize(
    "options, error",
    [
        (dict(request_timeout=-1), ValueError),
        (dict(request_timeout=float("nan")), ValueError),
        (dict(request_timeout=float("inf")), ValueError),
        (dict(request_timeout="1"), TypeError),
        (dict(connect_timeout=True), TypeError),
        (dict(warm_spares=1), TypeError),
        (dict(max_connections_per_host=-1), ValueError),
        (dict(max_retries=True), TypeError),
        (dict(user_agent=3), TypeError),
    ],
)
def test_bad_option_values(options, error):
    with pytest.raises(error):
        finwatch.Client(**options)


def test_user_agent_with_cr_lf_is_refused():
    with pytest.raises(finwatch.Error) as info:
        finwatch.Client(user_agent="x\r\nX-Evil: 1")
    assert info.value.kind == "invalid_request"


def test_bad_timeout_argument(client, device):
    with pytest.raises(ValueError):
        client.get(device.url("/"), timeout=-0.1)
    assert device.requests == []


def test_closed_client(device):
    c = finwatch.Client(**OPTIONS)
    assert c.get(device.url("/")).status == 200
    c.close()
    c.close()  # harmless
    with pytest.raises(ValueError, match="closed"):
        c.get(device.url("/"))


# --- threads and the GIL ---------------------------------------------------------------------


def test_gil_is_released_while_a_request_waits(client, device):
    ticks = 0
    stop = threading.Event()

    def counter():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.001)  # needs the GIL back after every sleep

    t = threading.Thread(target=counter, daemon=True)
    t.start()
    try:
        time.sleep(0.05)
        before = ticks
        resp = client.get(device.url("/delay/500"))
        during = ticks - before
    finally:
        stop.set()
        t.join(timeout=5)
    assert resp.body == b"late"
    # Had the request held the GIL for its 500 ms, the counter could not have moved.
    assert during >= 20, f"the counter advanced {during} times during a 500 ms request"


def test_ctrl_c_ends_a_wait_at_once_and_leaves_the_client_usable(client, device):
    # A device that never answers, a 10 s deadline, and a Ctrl-C (the same as SIGINT's
    # handler) 0.3 s into the wait: the KeyboardInterrupt arrives then, not at the deadline.
    timer = threading.Timer(0.3, _thread.interrupt_main)
    start = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt) as info:
            client.put(device.url("/hang"), b"on", timeout=10)
    finally:
        timer.cancel()
    elapsed = time.monotonic() - start
    assert 0.25 <= elapsed < 2, f"the interrupt took {elapsed:.2f} s"
    # Why the command ended, and whether the device may have acted: it had the whole PUT.
    cause = info.value.__cause__
    assert isinstance(cause, finwatch.Error), repr(cause)
    assert cause.kind == "shutdown"
    assert cause.may_have_been_processed is True
    assert client.get(device.url("/echo")).status == 200


def test_one_client_used_from_several_threads(client, device):
    # The client moves between threads (it is Send) and serialises their requests.
    errors = []

    def worker(n):
        try:
            for i in range(10):
                body = f"{n}-{i}".encode()
                assert client.put(device.url("/echo"), body).body == body
        except Exception as e:  # noqa: BLE001 -- reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert len(device.requests) == 40
    assert client.stats()["succeeded"] == 40


def test_a_waiting_request_does_not_block_another_client(device):
    # Two clients, two threads: a slow request on one does not delay the other.
    with finwatch.Client(**OPTIONS) as slow, finwatch.Client(**OPTIONS) as fast:
        result = {}
        t = threading.Thread(target=lambda: result.update(slow=slow.get(device.url("/delay/800"))))
        t.start()
        time.sleep(0.05)
        start = time.monotonic()
        assert fast.get(device.url("/")).status == 200
        assert time.monotonic() - start < 0.5
        t.join(timeout=5)
        assert result["slow"].body == b"late"


# --- streamed bodies -------------------------------------------------------------------------

MIB = 1024 * 1024


def test_send_streaming_uploads_from_a_file_object_and_a_file(client, device, tmp_path):
    data = os.urandom(3 * MIB + 7)
    resp = client.send_streaming("PUT", device.url("/echo"), io.BytesIO(data), len(data))
    assert resp.status == 200 and resp.body == data
    path = tmp_path / "firmware.bin"
    path.write_bytes(data)
    with open(path, "rb") as f:
        resp = client.send_streaming("POST", device.url("/echo"), f, len(data), timeout=30)
    assert resp.body == data
    assert [r[2] == data for r in device.requests] == [True, True]
    assert client.stats()["connects"] == 1  # the connection is reused after a streamed body


def test_send_to_downloads_into_a_file_object_and_a_file(client, device, tmp_path):
    data = os.urandom(3 * MIB + 7)
    sink = io.BytesIO()
    resp = client.send_to("PUT", device.url("/echo"), sink, body=data)
    assert resp.status == 200
    assert resp.body == b""  # the body went to the writer, not into the response
    assert sink.getvalue() == data
    path = tmp_path / "log.bin"
    with open(path, "wb") as f:
        client.send_to("PUT", device.url("/echo"), f, body=data)
    assert path.read_bytes() == data


def test_a_reader_that_raises_or_ends_early_is_a_body_stream_error(client, device):
    class Failing:
        def __init__(self):
            self.reads = 0

        def read(self, n):
            self.reads += 1
            if self.reads > 2:
                raise OSError("the flash went away")
            return b"x" * n

    with pytest.raises(finwatch.Error) as info:
        client.send_streaming("PUT", device.url("/echo"), Failing(), 10 * MIB)
    e = info.value
    assert e.kind == "body_stream"
    assert e.may_have_been_processed is True  # the device had the head
    assert isinstance(e.__cause__, OSError) and "flash went away" in str(e.__cause__)

    with pytest.raises(finwatch.Error) as info:
        client.send_streaming("PUT", device.url("/echo"), io.BytesIO(b"short"), 100)
    assert info.value.kind == "body_stream"
    with pytest.raises(finwatch.Error) as info:
        client.send_streaming("PUT", device.url("/echo"), io.StringIO("text, not bytes"), 15)
    assert info.value.kind == "body_stream"
    assert isinstance(info.value.__cause__, TypeError) and "not bytes" in str(info.value.__cause__)
    assert client.get(device.url("/echo")).status == 200  # usable


def test_a_writer_that_raises_is_a_body_stream_error(client, device):
    class Full:
        def write(self, data):
            raise OSError("disk full")

    with pytest.raises(finwatch.Error) as info:
        client.send_to("PUT", device.url("/echo"), Full(), body=b"y" * MIB)
    e = info.value
    assert e.kind == "body_stream"
    assert isinstance(e.__cause__, OSError) and "disk full" in str(e.__cause__)
    assert client.get(device.url("/echo")).status == 200


def test_ctrl_c_during_a_streamed_upload(client, device):
    # A slow reader (a 64 KiB read every 20 ms: 10 MiB would take 3 s) and a Ctrl-C 0.3 s in.
    class Slow:
        def read(self, n):
            time.sleep(0.02)
            return b"z" * n

    timer = threading.Timer(0.3, _thread.interrupt_main)
    start = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt) as info:
            client.send_streaming("PUT", device.url("/echo"), Slow(), 10 * MIB, timeout=30)
    finally:
        timer.cancel()
    assert time.monotonic() - start < 2
    cause = info.value.__cause__
    assert isinstance(cause, finwatch.Error) and cause.kind == "body_stream", repr(cause)
    assert client.get(device.url("/echo")).status == 200


def test_ctrl_c_during_a_download_that_stalls():
    # A device that sends a head and part of a body, then nothing: no write() is called while
    # it stalls, and the Ctrl-C still ends the wait at once (not at the 30 s deadline).
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def device():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"a" * 1000)
        time.sleep(3)
        conn.close()

    t = threading.Thread(target=device, daemon=True)
    t.start()
    timer = threading.Timer(0.3, _thread.interrupt_main)
    start = time.monotonic()
    with finwatch.Client(**OPTIONS) as c:
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt) as info:
                c.send_to("GET", f"http://127.0.0.1:{port}/log", io.BytesIO(), timeout=30)
        finally:
            timer.cancel()
    assert time.monotonic() - start < 2
    cause = info.value.__cause__
    assert isinstance(cause, finwatch.Error) and cause.kind == "shutdown", repr(cause)
    assert cause.may_have_been_processed is True
    listener.close()
