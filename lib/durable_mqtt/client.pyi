# Type stubs for durable_mqtt.client (host only; never installed on a board):
# MQTTClient, the blocking and polling front end. docs/api.md describes
# every name; tests/test_stubs.py keeps these signatures equal to the code's.
from typing import (Any, Callable, Dict, Generator, Optional, Protocol, Tuple, TypeVar, Union)

from .filelog import FileLog

_T = TypeVar("_T")
_BytesLike = Union[bytes, bytearray, memoryview]
_Topic = Union[str, _BytesLike]
_Payload = Union[str, _BytesLike, None]
# MQTT 5 properties: names ("message_expiry") or ids as keys, or a block
# already encoded (bytes) to keep publish() free of allocation.
_Props = Union[Dict[Union[str, int], Any], bytes, None]
# What a step generator yields: ms it may wait for the socket (negative:
# to become writable). run() drives one to its end and returns its value.
_Steps = Generator[int, None, _T]


class _SSLContext(Protocol):
    """An ssl.SSLContext (MicroPython's or CPython's) with the broker's CA
    loaded: the client calls wrap_socket(sock, server_hostname=server).
    ssl=True or any other non-context is refused: TypeError at construction."""

    def wrap_socket(self, sock: Any, *, server_hostname: Optional[str] = ...) -> Any: ...


class _BlockDevice(Protocol):
    """MicroPython's extended block protocol (esp32.Partition, rp2.Flash):
    session_file as one selects the raw flash ring."""

    def readblocks(self, block_num: int, buf: bytearray, offset: int = ...) -> None: ...
    def writeblocks(self, block_num: int, buf: _BytesLike, offset: int = ...) -> None: ...
    def ioctl(self, op: int, arg: int) -> Optional[int]: ...


# A path (a session directory on the filesystem), a block device (the raw
# ring), or FileLog(path) (the single log file layout of 0.1.0).
_SessionFile = Union[str, _BlockDevice, FileLog, None]

_MessageCallback = Union[
    Callable[[memoryview, memoryview, bool, int], None],
    Callable[[memoryview, memoryview, bool, int, Optional[Dict[str, Any]]], None],
]
# event: "new", "resumed", "lost", "expired", "discarded", "damaged", "outbox_grown", "store_full",
# or (AsyncClient) "callback_error" (docs/api.md)
_EventCallback = Callable[[str, Dict[str, Any]], None]
# f(pid, reason): 0 acknowledged, >= 0x80 refused (MQTT 5), -1 expired unsent
_DoneCallback = Callable[[int, int], None]


def unload() -> None:
    """Internal: drops the modules loaded for one call (connect, subscribe, boot)."""


def need_callable(f: Any) -> None:
    """Internal: TypeError unless f is None or callable (the callback setters, RobustClient)."""


class MQTTClient:
    server: str
    port: int
    keepalive: int
    clean_session: bool
    buf_size: int
    receive_max: int
    timeout_ms: int
    resubscribe: bool
    renews_subs: bool
    session_present: bool
    server_reference: Optional[str]
    last_event: Optional[str]

    def __init__(
        self,
        client_id: Union[str, bytes],
        server: str,
        port: int = 0,
        user: Optional[Union[str, bytes]] = None,
        password: Optional[Union[str, bytes]] = None,
        keepalive: int = 0,
        ssl: Optional[_SSLContext] = None,
        *,
        version: int = 4,
        clean_session: bool = True,
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

    # settings
    def expiry_for(self, clean: bool) -> int: ...
    def persistent(self, clean: bool) -> bool: ...
    # callbacks
    def set_callback(self, f: Optional[_MessageCallback], props: bool = False) -> None: ...
    def set_event_callback(self, f: Optional[_EventCallback]) -> None: ...
    def set_done_callback(self, f: Optional[_DoneCallback]) -> None: ...
    def event(self, kind: str, info: Dict[str, Any]) -> None: ...
    # (front ends) raise the event callback's first exception, kept by
    # event() until the call under way is done
    def report(self) -> None: ...
    # (front ends) a wait in ms (-1: none) cut to when persist_batch_ms
    # batched records are due
    def due(self, wait: int) -> int: ...
    # (front ends) what the store holds back and is due now reaches flash;
    # a write error is raised (RobustClient: kept in last_error)
    def tick(self) -> None: ...
    def set_last_will(self, topic: _Topic, msg: _Payload, retain: bool = False, qos: int = 0,
                      props: _Props = None) -> None: ...
    # state
    def pending(self) -> int: ...
    def is_connected(self) -> bool: ...
    def holds(self, pid: int) -> bool: ...
    def stats(self) -> Dict[str, int]: ...
    def flush(self, timeout_ms: int = 10000) -> bool: ...
    # connection
    def connect(self, clean_session: Optional[bool] = None, timeout_ms: Optional[int] = None) -> bool: ...
    def connect_fresh(self, timeout_ms: Optional[int] = None) -> bool: ...
    def disconnect(self, session_expiry: Optional[int] = None) -> None: ...
    def close(self) -> None: ...
    # publishing, subscribing, receiving
    def publish(self, topic: _Topic, msg: _Payload, retain: bool = False, qos: int = 0,
                props: _Props = None) -> Optional[int]: ...
    def subscribe(self, topic: _Topic, qos: int = 0, *, no_local: bool = False,
                  retain_as_published: bool = False, retain_handling: int = 0,
                  sub_id: int = 0) -> int: ...
    def unsubscribe(self, topic: _Topic) -> int: ...
    def check_msg(self) -> None: ...
    def wait_msg(self, timeout_ms: Optional[int] = None) -> Optional[int]: ...
    def ping(self) -> None: ...
    # session as bytes
    def save_session(self) -> bytes: ...
    def restore_session(self, data: _BytesLike) -> None: ...
    # building blocks of the front ends (robust.py, aio.py)
    def connection(self) -> Any: ...
    # (run: also the hook a subclass may override, docs/api.md#runsteps)
    def run(self, steps: _Steps[_T]) -> _T: ...
    def connecting(self, clean_session: Optional[bool] = None, timeout_ms: Optional[int] = None,
                   server: Optional[str] = None, port: int = 0, fresh: bool = False) -> _Steps[bool]: ...
    def requesting(self, f: bytes, opts: int, sid: int, timeout_ms: int = 0) -> _Steps[int]: ...
    def subscription(self, topic: _Topic, qos: int = 0, no_local: bool = False,
                     retain_as_published: bool = False, retain_handling: int = 0,
                     sub_id: int = 0) -> Tuple[bytes, int, int]: ...
    def need_link(self) -> Any: ...
    def socket(self) -> Any: ...
    def keepalive_wait(self) -> int: ...
