# Type stubs for durable_mqtt, for editors and type checkers on the host.
# Not installed on boards: mip, `make deploy` and lib/manifest.py take only
# the .py modules. docs/api.md describes every name.
# Names starting with an underscore exist only in this stub.
from typing import Any, Callable, Dict, Optional, Protocol, Union

__version__: str

_BytesLike = Union[bytes, bytearray, memoryview]
_Topic = Union[str, _BytesLike]
_Payload = Union[str, _BytesLike, None]
# MQTT 5 properties: names ("message_expiry") or ids as keys, or a block
# already encoded (bytes) to keep publish() free of allocation.
_Props = Union[Dict[Union[str, int], Any], bytes, None]

# args[0] of an exception without an MQTT code is negative; the values are
# durable_mqtt.errors.ERR_PROTOCOL -2, ERR_TOO_LARGE -3, ERR_TIMEOUT -4,
# ERR_CLOSED -5, ERR_NOT_CONNECTED -6, ERR_FULL -7, ERR_SESSION -8.


class MQTTException(OSError):
    """args[0]: MQTT return/reason code, or a negative ERR_* code; args[1]: explanation."""


class ConnectRefused(MQTTException): ...       # CONNACK refusal, or a SUBACK failure code
class ProtocolError(MQTTException): ...        # the broker broke the protocol; link closed
class PacketTooLarge(MQTTException): ...       # does not fit buf_size / broker maximum
class Timeout(MQTTException): ...              # a network wait ran out
class PeerClosed(MQTTException): ...           # broker or network closed the connection
class NotConnected(MQTTException): ...         # the call needs a connection
class QueueFull(MQTTException): ...            # outbox full: the message was not accepted
class StoreFull(QueueFull): ...                # flash store full: the message was not accepted
class SessionError(MQTTException): ...         # e.g. MQTT-3.2.2-4


class _BlockDevice(Protocol):
    """MicroPython's extended block protocol (esp32.Partition, rp2.Flash)."""

    def readblocks(self, block_num: int, buf: bytearray, offset: int = ...) -> None: ...
    def writeblocks(self, block_num: int, buf: _BytesLike, offset: int = ...) -> None: ...
    def ioctl(self, op: int, arg: int) -> Optional[int]: ...


_MessageCallback = Union[
    Callable[[memoryview, memoryview, bool, int], None],
    Callable[[memoryview, memoryview, bool, int, Optional[Dict[str, Any]]], None],
]
# event: "new", "resumed", "lost", "expired", "discarded" or "damaged"
_EventCallback = Callable[[str, Dict[str, Any]], None]


class MQTTClient:
    server: str
    port: int
    keepalive: int
    clean_session: bool
    buf_size: int
    timeout_ms: int
    resubscribe: bool
    max_inflight: int
    receive_max: int
    session_present: bool
    last_event: Optional[str]
    stats_counters: Dict[str, int]

    def __init__(
        self,
        client_id: Union[str, bytes],
        server: str,
        port: int = 0,
        user: Optional[Union[str, bytes]] = None,
        password: Optional[Union[str, bytes]] = None,
        keepalive: int = 0,
        ssl: Any = None,
        *,
        version: int = 4,
        clean_session: bool = True,
        session_expiry: Optional[int] = None,
        session_file: Union[str, _BlockDevice, None] = None,
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
    ) -> None: ...

    def set_callback(self, f: Optional[_MessageCallback], props: bool = False) -> None: ...
    def set_event_callback(self, f: Optional[_EventCallback]) -> None: ...
    def set_last_will(self, topic: _Topic, msg: _Payload, retain: bool = False, qos: int = 0,
                      props: _Props = None) -> None: ...
    def connect(self, clean_session: Optional[bool] = None, timeout_ms: Optional[int] = None) -> bool: ...
    def connect_fresh(self, timeout_ms: Optional[int] = None) -> bool: ...
    def disconnect(self, session_expiry: Optional[int] = None) -> None: ...
    def close(self) -> None: ...
    def publish(self, topic: _Topic, msg: _Payload, retain: bool = False, qos: int = 0,
                props: _Props = None) -> Optional[int]: ...
    def subscribe(self, topic: _Topic, qos: int = 0, *, no_local: bool = False,
                  retain_as_published: bool = False, retain_handling: int = 0,
                  sub_id: int = 0) -> int: ...
    def unsubscribe(self, topic: _Topic) -> None: ...
    def check_msg(self) -> None: ...
    def wait_msg(self, timeout_ms: Optional[int] = None) -> Optional[int]: ...
    def ping(self) -> None: ...
    def pending(self) -> int: ...
    def is_connected(self) -> bool: ...
    def flush(self, timeout_ms: int = 10000) -> bool: ...
    def save_session(self) -> bytes: ...
    def restore_session(self, data: _BytesLike) -> None: ...
    def stats(self) -> Dict[str, int]: ...

