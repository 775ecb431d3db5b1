# Words for exception messages, loaded on the first error that needs them
# and unloaded after (client.unload), so they cost no RAM while all is well:
# MQTT return and reason codes, the refusal of a publish() whose QoS or
# retain flag is not allowed, a QoS 1/2 publish() the store cannot take
# (refusal()), a failed connect's socket error (dial.py), an MQTT 5 broker's
# DISCONNECT (link.py), the incoming QoS 2 table full (session.py).
import errno
from micropython import const

from . import errors
from .codec import fail
from .errors import MQTTException, PacketTooLarge, PeerClosed, StoreFull, Timeout

_ERR_TIMEOUT = const(-4)
_ERR_CLOSED = const(-5)
_ERR_FULL = const(-7)
_MAX_PACKET = const(65533)   # records.MAX_PACKET (not imported: a client without a session file has no records.py)

_V4 = {
    1: "unacceptable protocol version", 2: "identifier rejected", 3: "server unavailable",
    4: "bad user name or password", 5: "not authorized",
}
_V5 = {
    0x04: "disconnect with will message", 0x10: "no matching subscribers", 0x11: "no subscription existed",
    0x80: "unspecified error", 0x81: "malformed packet", 0x82: "protocol error",
    0x83: "implementation specific error", 0x84: "unsupported protocol version",
    0x85: "client identifier not valid", 0x86: "bad user name or password", 0x87: "not authorized",
    0x88: "server unavailable", 0x89: "server busy", 0x8A: "banned", 0x8B: "server shutting down",
    0x8C: "bad authentication method", 0x8D: "keep alive timeout", 0x8E: "session taken over",
    0x8F: "topic filter invalid", 0x90: "topic name invalid", 0x91: "packet identifier in use",
    0x92: "packet identifier not found", 0x93: "receive maximum exceeded", 0x94: "topic alias invalid",
    0x95: "packet too large", 0x96: "message rate too high", 0x97: "quota exceeded",
    0x98: "administrative action", 0x99: "payload format invalid", 0x9A: "retain not supported",
    0x9B: "QoS not supported", 0x9C: "use another server", 0x9D: "server moved",
    0x9E: "shared subscriptions not supported", 0x9F: "connection rate exceeded",
    0xA0: "maximum connect time", 0xA1: "subscription identifiers not supported",
    0xA2: "wildcard subscriptions not supported",
}


def text(code, v5, connack=False, props=None):
    # The code as words (a CONNACK's 3.1.1 return codes when connack), with
    # the broker's MQTT 5 reason string when props hold one.
    if connack and not v5:
        t = _V4.get(code, "return code %d" % code)
    else:
        t = _V5.get(code, "reason code 0x%02x" % code)
    if props and "reason_string" in props:
        t += " (%s)" % props["reason_string"]
    if props and "server_reference" in props:
        t += "; server reference: %s" % props["server_reference"]
    return t


def refuse(e, qos, retain):
    # publish() with a QoS or retain flag that is not allowed (engine e:
    # the broker's limits): raises. (ValueError for a float too, as
    # subscribe() and set_last_will() do; MicroPython's bool is no int
    # subclass.)
    if qos not in (0, 1, 2) or not isinstance(qos, (int, bool)):
        raise ValueError("qos must be 0, 1 or 2, not %r" % (qos,))
    if not isinstance(retain, (int, bool)) or retain and retain != 1:   # 2 would set a QoS bit of the header
        raise ValueError("retain must be True or False, not %r" % (retain,))
    raise MQTTException(0x9A if qos <= e.max_qos else 0x9B, "broker takes QoS %d at most, retain %s "
                        "(MQTT-3.2.2-11, -14)" % (e.max_qos, bool(e.retain)))


def failed(s, e, host, port, timeout_ms, tls):
    # A connect's socket s that failed with e (dial.py): closed, and the
    # error raised as a sentence a user can act on (docs/troubleshooting.md).
    s.close()
    code = e.args[0] if e.args else None
    if code in (errno.ETIMEDOUT, 116, -110):
        raise Timeout(_ERR_TIMEOUT, "connect to %s:%d: no answer in %d ms" % (host, port, timeout_ms))
    if code in (errno.ECONNREFUSED, 111) or code in (errno.ECONNRESET, 104) and tls is None:
        # (lwIP, ESP32 and RP2040: a port with no listener resets the
        # connect, ECONNRESET; in a TLS handshake a reset is the broker's.)
        why = "refused: no broker on that port"
    elif code in (errno.EHOSTUNREACH, -2, -202):      # (not 113: ECONNABORTED on an ESP32)
        why = "host unreachable"
    elif tls is not None:
        raise MQTTException(_ERR_CLOSED, "TLS handshake with %s:%d failed (%s): %s" % (
            host, port, e, _tls_hint(e, code)))
    else:
        why = "socket error"
    raise MQTTException(_ERR_CLOSED, "connect to %s:%d failed, %s (errno %s)" % (host, port, why, code))


def _tls_hint(e, code):
    # What to look at, by mbedTLS's code (MicroPython raises OSError(code,
    # name); a certificate it cannot verify as ValueError or -0x2700, and
    # so every broker with no CA loaded).
    if isinstance(e, ValueError) or type(code) is int and -0x3000 <= code <= -0x2000:    # X509
        return ("the broker's certificate was not verified: is its CA loaded in the ssl context "
                "(load_verify_locations), and is the server name the one in its certificate?")
    if code in (errno.ENOMEM, 12, -0x7F00, -0x10):    # SSL_ALLOC_FAILED, MPI_ALLOC_FAILED
        return "out of memory for TLS: a handshake needs a heap block of about 20 KB (docs/tls.md)"
    if type(code) is int and code > 0 or code in (-0x7280, -0x7200):    # CONN_EOF, INVALID_RECORD
        # A socket error (the peer reset or closed it) or bytes that are no
        # TLS: a broker that does not speak TLS there (1883 for 8883 is the
        # common slip); the CA is not the place to look.
        return "the broker closed it or does not speak TLS there: is it a TLS port (8883)?"
    if code == -0x7780:                                   # FATAL_ALERT_MESSAGE
        return "the broker refused the handshake: its TLS version, ciphers or a client certificate?"
    return "is it a TLS port (8883), and is the broker's CA loaded (load_verify_locations)?"


def disconnected(k):
    # MQTT 5: the broker closes link k's connection with a reason (the
    # DISCONNECT's body in k.rx): raised as PeerClosed with that code.
    rx = k.rx
    n = k.rlen
    code = rx[0] if n else 0
    p = k.c.props.decode(rx, 1, n, 8) if n > 1 else None
    if p and "server_reference" in p:
        k.c.server_reference = p["server_reference"]
    raise PeerClosed(code, "broker sent DISCONNECT: " + text(code, True, False, p))


def refusal(n):
    # Why a store cannot take a QoS 1/2 PUBLISH of n bytes (publish() raises it).
    if n > _MAX_PACKET:
        errors.why = 0                   # not the broker's (errors.why)
        return PacketTooLarge(-3, "a QoS 1/2 PUBLISH of %d bytes is larger than the session on flash holds "
                              "(%d)" % (n, _MAX_PACKET))
    return StoreFull(-7, "flash store full")     # (-3, -7: errors.ERR_TOO_LARGE, ERR_FULL)


def full(e, k=None):
    # Engine e's incoming QoS 2 table is full (Session._rx2_full: the
    # message is not taken, the connection closes): raised, MQTT 5 as
    # Receive Maximum exceeded. With link k: no more input waits on it and
    # QoS 2 messages were not taken (inbound.incoming, Link.idle): it
    # closes now, as for a protocol error (the acknowledgements owed go
    # first), and the next connection has the broker send them again.
    if k is not None:
        del k.floods
        e.floods += 1                # (a link closed over a full table: robust.py)
        try:
            full(e)
        except Exception:
            k.drop(True)
            raise
    if e.v5:
        fail("more than %d QoS 2 messages unreleased" % len(e.rx2), 0x93, 0x93)
    # 3.1.1 has no DISCONNECT with a reason, but the close is this client's
    # as a protocol error's is (Link.drop, leave.refuse): the
    # acknowledgements owed for what was delivered go first (MQTT-4.5.0-2),
    # else the broker sends those messages again, QoS 1 ones delivered twice.
    # (-1: no reason code to send; one left by a refused argument is > 0.)
    errors.why = -1
    raise MQTTException(_ERR_FULL, "more than %d QoS 2 messages unreleased: the table is full; "
                        "the broker sends the message again" % len(e.rx2))
