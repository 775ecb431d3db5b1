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


# The classes are made with type(), not class statements: a class body
# leaves __module__ and __qualname__ in a dict of its own per class; type()
# with an empty dict allocates no table (measured on the 32-bit unix port:
# about 60 B of heap less per class, .mpy and source alike).
#
# MQTTException: any MQTT failure. args[0]: reason/return code; args[1]: explanation.
MQTTException = type("MQTTException", (OSError,), {})
# The broker answered CONNECT with a refusal (args[0]: its code).
ConnectRefused = type("ConnectRefused", (MQTTException,), {})
# Malformed or unexpected packet; the connection is closed.
ProtocolError = type("ProtocolError", (MQTTException,), {})
# A packet does not fit buf_size (or the broker's Maximum Packet Size).
PacketTooLarge = type("PacketTooLarge", (MQTTException,), {})
# A network wait (connect, CONNACK, SUBACK, read, write, ping) ran out.
Timeout = type("Timeout", (MQTTException,), {})
# The broker or the network closed the connection.
PeerClosed = type("PeerClosed", (MQTTException,), {})
# The call needs a live connection.
NotConnected = type("NotConnected", (MQTTException,), {})
# The outbox cannot accept another message; the message was not accepted.
QueueFull = type("QueueFull", (MQTTException,), {})
# The flash store has no room for the change; nothing accepted was lost.
StoreFull = type("StoreFull", (QueueFull,), {})
# The session cannot continue as the specification requires.
SessionError = type("SessionError", (MQTTException,), {})


# For the package's own modules, not part of the API (API.md).
#
# What a packet from the broker that breaks the protocol raises: the link
# closes the connection, MQTT 5 after a DISCONNECT with the reason code
# (link.Link.drop, leave.refuse). One object, so that the handler loads one
# global, not two to build a tuple: that would deepen the frame of
# check_msg() past 11 words, taken from the heap then at every call.
BAD_PACKET = (ProtocolError, PacketTooLarge)

# The MQTT 5 reason code of the last ProtocolError or PacketTooLarge that
# fail() or too_large() (codec.fail, codec.too_large) raised: 0x81
# Malformed Packet, 0x82 Protocol Error, or a more specific one (MQTT 5,
# 4.13.1 and 3.14.2.1). Set right before each raise, so that
# leave.refuse() reads the code of the one the link caught without binding
# it ("except ... as x" on check_msg()'s path takes its frame from the heap
# at every call); it clears it. Every ProtocolError and PacketTooLarge
# that can be raised inside the link's reads goes through these two (or
# sets it, records.refusal), those about the client's own outgoing packets
# with rc 0 (no DISCONNECT: not the broker's fault), so a code left by an
# error handled elsewhere (made a ValueError, or met before CONNACK) is
# never sent for another one. (The done callback runs inside the read: a
# PacketTooLarge of its publish() went to the broker as 0x81, the code a
# ValueError before had left.)
why = 0


def fail(msg, rc=0x81, code=ERR_PROTOCOL):
    # A packet received is malformed (rc 0x81), breaks the protocol (0x82)
    # or a limit of this client (rc; code, args[0], is then rc too). msg:
    # the sentence, or (the resident modules) its number in texts.py, or a
    # tuple of that number and the values it takes (said()).
    global why
    why = rc
    if type(msg) is not str:
        msg = said(msg)
    raise ProtocolError(code, msg)


def said(msg):
    # texts.py's sentence msg (a number, or a tuple: the number, then its
    # values): the resident modules' exceptions take their words from here.
    # The module is loaded for it and dropped again at once; with no heap
    # to load it, the number says which.
    import sys
    n = msg if type(msg) is int else msg[0]
    try:
        from .texts import TEXTS
        return TEXTS[n] % msg[1:] if type(msg) is tuple else TEXTS[n]
    except MemoryError:
        return "error %d (texts.py)" % n
    finally:
        p = sys.modules[__name__[:-7]]    # the package ("durable_mqtt": less ".errors")
        sys.modules.pop(p.__name__ + ".texts", None)
        p.__dict__.pop("texts", None)


def too_large(kind, n, limit, rc=0x95):
    # rc 0x95 Packet too large: one received; 0: one of the client's own.
    global why
    why = rc
    raise PacketTooLarge(ERR_TOO_LARGE, "%s of %d bytes exceeds the limit of %d" % (kind, n, limit))
