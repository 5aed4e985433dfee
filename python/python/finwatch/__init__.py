"""finwatch: an HTTP/1.1 client for control loops that command embedded devices.

Python bindings of the Rust crate finwatch. It never writes a request on a connection the device
has closed (FIN or RST), never loses a command silently, and retries only where that cannot
double an effect.

    import finwatch

    client = finwatch.Client(connect_timeout=0.5, request_timeout=2.0)
    resp = client.put("http://10.0.0.5/unico/v1/interface/io", b'{"ioId":25602,"value":1}')
    print(resp.status, resp.headers, resp.body)

``Client(**options)`` -- every option is a keyword; an unknown one raises TypeError:

- ``connect_timeout`` (seconds, default 3.0): how long a TCP handshake may take.
- ``request_timeout`` (seconds, default 10.0): a request's deadline, from submission to the last
  response byte; ``request(..., timeout=...)`` overrides it per request.
- ``idle_timeout`` (seconds, default 30.0): how long an idle connection is kept for reuse.
- ``max_retries`` (int, default 1): retries on a fresh connection after a lost one, where safe.
- ``max_in_flight_per_host`` (int, default 1), ``max_connections_per_host`` (int, default 4).
- ``nodelay`` (bool, default True): TCP_NODELAY.
- ``busy_poll`` (seconds, default 0 = off): spin this long before sleeping while waiting.
- ``adaptive_spin`` (seconds, default 0.0001; 0 = off): the cap of the adaptive spin before a
  wait sleeps (it spins only while responses come within the cap; see the Rust docs of
  ``ClientBuilder::adaptive_spin``).
- ``warm_spares`` (bool, default True): open the next connection ahead of need when the device
  is known to close the current one.
- ``user_agent`` (str, default none): sent as User-Agent on every request that sets none.
- ``max_head_bytes``, ``max_headers``, ``max_body_bytes``, ``max_interim_responses`` (ints):
  response limits; going over raises Error with kind ``limit_exceeded``.

Every failure to get a response raises ``finwatch.Error``, with ``.kind`` and
``.may_have_been_processed``. The GIL is released while a request waits.
"""

from ._finwatch import Client, Error, Response

__all__ = ["Client", "Error", "Response"]
