# Type stubs for durable_mqtt.aio (host only): AsyncClient, the asyncio
# front end over a RobustClient. Its keyword arguments are RobustClient's
# (spelled out); on_up/on_down are called with the AsyncClient.
import asyncio
from typing import (Any, AsyncIterator, Awaitable, Callable, Dict, Generator, Optional, Protocol, Sequence, Tuple,
                    TypeVar, Union)

from .client import _EventCallback, _MessageCallback, _Payload, _Props, _SessionFile, _SSLContext, _Topic
from .robust import RobustClient, _Link, _Server

_T = TypeVar("_T")


class _AsyncLink(Protocol):
    """A network whose up() is awaited (boards/wlan.py: AsyncWLANLink)."""

    def up(self, timeout_ms: int) -> Awaitable[bool]: ...
    def isconnected(self) -> bool: ...


class AsyncClient:
    client: RobustClient
    up: asyncio.Event             # set while connected
    down: asyncio.Event           # set while not connected
    dropped_messages: int         # copies messages() dropped when its queue was full

    def __init__(
        self,
        client_id: Union[str, bytes],
        server: str,
        port: int = 0,
        user: Optional[Union[str, bytes]] = None,
        password: Optional[Union[str, bytes]] = None,
        keepalive: int = 60,
        ssl: Optional[_SSLContext] = None,
        *,
        queue_size: int = 8,
        on_up: Optional[Callable[["AsyncClient"], None]] = None,
        on_down: Optional[Callable[["AsyncClient", Optional[BaseException]], None]] = None,
        servers: Optional[Sequence[_Server]] = None,
        link: Optional[Union[_Link, _AsyncLink]] = None,
        backoff_ms: Tuple[int, int] = (250, 30000),
        version: int = 4,
        clean_session: bool = False,
        session_expiry: Optional[int] = None,
        session_file: _SessionFile = None,
        buf_size: int = 1024,
        max_inflight: int = 16,
        receive_max: int = 8,
        outbox_size: int = 32,
        outbox_bytes: Optional[int] = None,
        timeout_ms: int = 10000,
        resubscribe: bool = True,
        ring_prog_size: Optional[int] = None,
        persist_batch_ms: int = 0,
        persist_batch_bytes: Optional[int] = None,
        tls_verify: bool = True,
        event_callback: Optional[_EventCallback] = None,
    ) -> None: ...

    async def steps(self, gen: Generator[int, None, _T], look: bool = False) -> _T: ...
    async def connect(self, timeout_ms: Optional[int] = None) -> bool: ...
    async def disconnect(self, session_expiry: Optional[int] = None) -> None: ...
    async def close(self) -> None: ...
    def is_connected(self) -> bool: ...
    def publish_nowait(self, topic: _Topic, msg: _Payload, retain: bool = False, qos: int = 0,
                       props: _Props = None) -> Optional[int]: ...
    async def publish(self, topic: _Topic, msg: _Payload, retain: bool = False, qos: int = 0,
                      props: _Props = None, timeout_ms: Optional[int] = None) -> Optional[int]: ...
    async def flush(self, timeout_ms: int = 10000) -> bool: ...
    def pending(self) -> int: ...
    def stats(self) -> Dict[str, int]: ...
    async def subscribe(self, topic: _Topic, qos: int = 0, timeout_ms: Optional[int] = None, *,
                        no_local: bool = False, retain_as_published: bool = False,
                        retain_handling: int = 0, sub_id: int = 0) -> int: ...
    async def unsubscribe(self, topic: _Topic, timeout_ms: Optional[int] = None) -> int: ...
    def set_callback(self, f: Optional[_MessageCallback], props: bool = False) -> None: ...
    def messages(self) -> AsyncIterator[Tuple[bytes, bytes, bool, int]]: ...
