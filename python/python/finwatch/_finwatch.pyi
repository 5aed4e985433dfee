from types import TracebackType
from typing import Any, Iterable, Mapping, Optional, Protocol, Tuple, Type, Union

_Body = Union[bytes, bytearray, memoryview, str]
_Headers = Union[Mapping[str, str], Iterable[Tuple[str, str]]]

class _Reader(Protocol):
    def read(self, n: int, /) -> bytes: ...

class _Writer(Protocol):
    def write(self, data: bytes, /) -> Any: ...

class Error(Exception):
    kind: Optional[str]
    may_have_been_processed: bool

class Response:
    status: int
    reason: str
    version: str
    headers: list[Tuple[str, str]]
    body: bytes
    ok: bool
    connection_id: int
    reused: bool
    retries: int
    def header(self, name: str, default: Optional[str] = None) -> Optional[str]: ...

class Client:
    def __init__(
        self,
        *,
        connect_timeout: float = ...,
        request_timeout: float = ...,
        idle_timeout: float = ...,
        max_retries: int = ...,
        max_in_flight_per_host: int = ...,
        max_connections_per_host: int = ...,
        nodelay: bool = ...,
        busy_poll: float = ...,
        adaptive_spin: float = ...,
        warm_spares: bool = ...,
        user_agent: Optional[str] = ...,
        max_head_bytes: int = ...,
        max_headers: int = ...,
        max_body_bytes: int = ...,
        max_interim_responses: int = ...,
    ) -> None: ...
    def request(
        self,
        method: str,
        url: str,
        body: Optional[_Body] = None,
        headers: Optional[_Headers] = None,
        timeout: Optional[float] = None,
        retryable: bool = False,
    ) -> Response: ...
    def get(self, url: str, headers: Optional[_Headers] = None, timeout: Optional[float] = None) -> Response: ...
    def put(
        self, url: str, body: _Body, headers: Optional[_Headers] = None, timeout: Optional[float] = None
    ) -> Response: ...
    def post(
        self,
        url: str,
        body: _Body,
        headers: Optional[_Headers] = None,
        timeout: Optional[float] = None,
        retryable: bool = False,
    ) -> Response: ...
    def delete(self, url: str, headers: Optional[_Headers] = None, timeout: Optional[float] = None) -> Response: ...
    def send_streaming(
        self,
        method: str,
        url: str,
        reader: _Reader,
        length: int,
        headers: Optional[_Headers] = None,
        timeout: Optional[float] = None,
    ) -> Response: ...
    def send_to(
        self,
        method: str,
        url: str,
        writer: _Writer,
        body: Optional[_Body] = None,
        headers: Optional[_Headers] = None,
        timeout: Optional[float] = None,
    ) -> Response: ...
    def stats(self) -> dict[str, int]: ...
    def close(self) -> None: ...
    def __enter__(self) -> "Client": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None: ...
