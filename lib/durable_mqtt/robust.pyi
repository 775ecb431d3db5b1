# Type stubs for durable_mqtt.robust (host only): RobustClient, MQTTClient
# plus the loop that reconnects by itself. Its keyword arguments are
# MQTTClient's (spelled out here so a type checker catches a typo), with
# clean_session defaulting to False: a robust client keeps its session.
from typing import Any, Callable, Dict, List, NoReturn, Optional, Protocol, Sequence, Tuple, Union

from .client import (MQTTClient, _EventCallback, _SessionFile, _SSLContext, _Steps,
                     _Topic)


class _Link(Protocol):
    """The network under the connection (boards/wlan.py: WLANLink, NullLink)."""

    def up(self, timeout_ms: int) -> bool: ...
    def isconnected(self) -> bool: ...


_Server = Union[str, Tuple[str, int]]


class RobustClient(MQTTClient):
    servers: List[Tuple[str, int]]
    link: Optional[_Link]
    backoff_min: int
    backoff_max: int
    on_up: Optional[Callable[["RobustClient"], None]]
    on_down: Optional[Callable[["RobustClient", Optional[BaseException]], None]]
    last_error: Optional[BaseException]
    link_downs: int
    connect_failures: int
    store_error: Optional[OSError]
    subs_failed: bool
    subs_waiting: int
    # (topic, qos, options) per subscription made while down; (topic, -1, None)
    # per unsubscribe made while down
    pending_subs: List[Tuple[Union[str, bytes], int, Optional[Dict[str, Any]]]]

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
        servers: Optional[Sequence[_Server]] = None,
        link: Optional[_Link] = None,
        backoff_ms: Tuple[int, int] = (250, 30000),
        on_up: Optional[Callable[["RobustClient"], None]] = None,
        on_down: Optional[Callable[["RobustClient", Optional[BaseException]], None]] = None,
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

    def connect(self, clean_session: Optional[bool] = None, timeout_ms: Optional[int] = None) -> bool: ...
    def connect_fresh(self, timeout_ms: Optional[int] = None) -> bool: ...
    def disconnect(self, session_expiry: Optional[int] = None) -> None: ...
    def drop_link(self) -> None: ...
    def poll(self, timeout_ms: int = 0) -> bool: ...
    def loop_forever(self, step_ms: int = 1000) -> NoReturn: ...
    def stats(self) -> Dict[str, int]: ...
    def subscribe(self, topic: _Topic, qos: int = 0, *, no_local: bool = False,  # type: ignore[override]
                  retain_as_published: bool = False, retain_handling: int = 0,
                  sub_id: int = 0) -> Optional[int]: ...
    def unsubscribe(self, topic: _Topic) -> Optional[int]: ...  # type: ignore[override]
    def close(self) -> None: ...
    # building blocks of the asyncio front end
    def offline(self) -> int: ...
    def reconnecting(self, bring_up: bool = True) -> _Steps[None]: ...
    def tick(self) -> None: ...
    def store_ok(self) -> None: ...
    def holds_outbox(self) -> bool: ...
    def link_up(self) -> None: ...
    def link_down(self, exc: BaseException, attempt: bool = False) -> None: ...
