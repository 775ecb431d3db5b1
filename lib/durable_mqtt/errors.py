# One small error family. MQTTException subclasses OSError so a reconnect
# loop written for umqtt (`except OSError`) catches every link and protocol
# failure. args[0] is the MQTT return/reason code where there is one, else a
# negative code below; args[1] is a sentence a person can act on.

# Codes for failures that have no MQTT reason code (negative, so they never
# collide with a CONNACK return code or an MQTT 5 reason code).
ERR_PROTOCOL = -2       # the peer sent something the specification forbids
ERR_TOO_LARGE = -3      # a packet does not fit buf_size / the peer's maximum
ERR_TIMEOUT = -4        # a network wait ran out
ERR_CLOSED = -5         # the peer closed the connection
ERR_NOT_CONNECTED = -6  # an operation needs a connection and there is none
ERR_FULL = -7           # outbox, in-flight table or flash store is full
ERR_SESSION = -8        # session state problem (e.g. MQTT-3.2.2-4)


class MQTTException(OSError):
    # Any MQTT failure. args[0]: reason/return code; args[1]: explanation.
    pass


class ConnectRefused(MQTTException):
    # The broker answered CONNECT with a refusal (args[0]: its code).
    pass


class ProtocolError(MQTTException):
    # Malformed or unexpected packet; the connection is closed.
    pass


class PacketTooLarge(MQTTException):
    # A packet does not fit buf_size (or the broker's Maximum Packet Size).
    pass


class Timeout(MQTTException):
    # A network wait (connect, CONNACK, SUBACK, read, write, ping) ran out.
    pass


class PeerClosed(MQTTException):
    # The broker or the network closed the connection.
    pass


class NotConnected(MQTTException):
    # The call needs a live connection.
    pass


class QueueFull(MQTTException):
    # The outbox cannot accept another message; the message was not accepted.
    pass


class StoreFull(QueueFull):
    # The flash store has no room for the change; nothing accepted was lost.
    pass


class SessionError(MQTTException):
    # The session cannot continue as the specification requires.
    pass
