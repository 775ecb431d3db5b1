# Type stubs for durable_mqtt.errors (host only; never installed on a board).
# One error family: MQTTException subclasses OSError, so `except OSError`
# loops written for umqtt catch every link and protocol failure. args[0] is
# the MQTT return/reason code, or one of the negative codes below; args[1] a
# sentence a person can act on.
from typing import Any, Final, NoReturn, Tuple, Type, Union

ERR_PROTOCOL: Final = -2       # the peer sent something the specification forbids
ERR_TOO_LARGE: Final = -3      # a packet does not fit buf_size / the peer's maximum
ERR_TIMEOUT: Final = -4        # a network wait ran out
ERR_CLOSED: Final = -5         # the peer closed the connection
ERR_NOT_CONNECTED: Final = -6  # an operation needs a connection and there is none
ERR_FULL: Final = -7           # outbox, in-flight table or flash store is full
ERR_SESSION: Final = -8        # session state problem (e.g. MQTT-3.2.2-4)


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


# For the package's own modules, not part of the API (API.md): what a packet
# from the broker that breaks the protocol raises, and its MQTT 5 reason code
# (the link sends it in a DISCONNECT before it closes the connection); the
# resident modules' exception sentences by number (texts.py).
BAD_PACKET: Tuple[Type[MQTTException], ...]
why: int
def fail(msg: Union[str, int, Tuple[Any, ...]], rc: int = 0x81, code: int = ERR_PROTOCOL) -> NoReturn: ...
def said(msg: Union[int, Tuple[Any, ...]]) -> str: ...   # a sentence of texts.py
def too_large(kind: str, n: int, limit: int, rc: int = 0x95) -> NoReturn: ...
