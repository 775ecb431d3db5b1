# MQTT 5 properties (section 2.2.2). Only a client made with version=5
# imports this module; an MQTT 3.1.1 client never pays for it.
#
#   encode(d)                          dict -> property block (no length prefix)
#   check(buf, off, end, where, box)   validates a block strictly; allocates nothing
#   incoming(buf, off, end, box)       a received PUBLISH's: check(), and no Topic Alias
#   decode(buf, off, end, where)       the same, and returns the properties as a dict
#
# A block that does not decode exactly is a malformed packet and closes the
# link: an unknown identifier or one not allowed in that packet, a length
# past the block, a repeated single-valued property, an ill-formed string
# (MQTT-1.5.4-1), a value the specification forbids (a Receive Maximum,
# Topic Alias, Maximum Packet Size or Subscription Identifier of 0; a byte
# property other than 0 or 1).
from micropython import const
from time import ticks_add, ticks_diff

from .codec import as_bytes, fail, get_varint, u16, check_utf8, put_varint, utf8
from .errors import ProtocolError

# The packets a broker may send a property in (the `where` argument).
CONNACK = const(1)
PUBLISH = const(2)
ACK = const(4)            # PUBACK PUBREC PUBREL PUBCOMP SUBACK UNSUBACK
DISCONNECT = const(8)
WILL = const(16)          # not received: a client's Will Properties, checked before they go out

_BYTE = const(1)
_U16 = const(2)
_U32 = const(3)
_VAR = const(4)
_STR = const(5)
_BIN = const(6)
_PAIR = const(7)

_EXPIRY = const(0x02)
_RESPONSE_TOPIC = const(0x08)
_SUB_ID = const(0x0B)
_KEEP_ALIVE = const(0x13)
_ALIAS_MAX = const(0x22)
_ALIAS = const(0x23)
_USER = const(0x26)
_MAX_PACKET = const(0x27)

# Per identifier 0x00..0x2A: the value kind in the low 3 bits, the packets it
# may arrive in from bit 3 up (CONNACK 0x08, PUBLISH 0x10, ACK 0x20,
# DISCONNECT 0x40), and 0x80 for a Will Property (section 3.1.3.2).
# Session Expiry (0x11) comes in CONNACK only: a broker must not send it in
# DISCONNECT (MQTT-3.14.2-2). Authentication Method and Data (0x15, 0x16)
# come only after a client asked for enhanced authentication, which this
# one never does (section 4.12). Properties only a client sends (will
# delay, request flags, ...) keep their kind for encode().
_T = bytes((
    0, 0x91, 0x93, 0x95, 0, 0, 0, 0, 0x95, 0x96, 0, 0x14, 0, 0, 0, 0,
    0, 0x0B, 0x0D, 0x0A, 0, 0x05, 0x06, 0x01, 0x83, 0x01, 0x0D, 0, 0x4D, 0, 0, 0x6D,
    0, 0x0A, 0x0A, 0x12, 0x09, 0x09, 0xFF, 0x0B, 0x09, 0x09, 0x09))

NAMES = ("", "payload_format", "message_expiry", "content_type", "", "", "", "",
         "response_topic", "correlation_data", "", "subscription_id", "", "", "", "",
         "", "session_expiry", "assigned_client_id", "server_keep_alive", "",
         "auth_method", "auth_data", "request_problem_info", "will_delay",
         "request_response_info", "response_info", "", "server_reference", "", "",
         "reason_string", "", "receive_maximum", "topic_alias_maximum", "topic_alias",
         "maximum_qos", "retain_available", "user_property", "maximum_packet_size",
         "wildcard_sub_available", "sub_id_available", "shared_sub_available")


def check(buf, off, end, where, box, out=None):  # noalloc without out
    # Validates the block at off (its length varint first). It must end at
    # `end` exactly, except in a PUBLISH, where the payload follows. Notes
    # Topic Alias and Message Expiry in box. With a dict `out`, also fills it.
    # Returns the offset after the block.
    off = get_varint(buf, off, end, box)
    stop = off + box.value
    if stop > end or (where != PUBLISH and stop != end):
        fail("property length beyond packet")
    box.alias = 0
    box.expiry = 0
    lo = hi = 0                 # identifiers seen (two ints: small on 32 bits)
    while off < stop:
        pid = buf[off]
        if pid > 0x2A or not _T[pid]:
            fail("unknown property 0x%02x" % pid)
        if not (_T[pid] >> 3) & where:
            fail("property 0x%02x not allowed in this packet" % pid)
        if pid != _USER and pid != _SUB_ID:    # the only two that may repeat
            if pid < 28:
                if lo >> pid & 1:
                    fail("repeated property 0x%02x" % pid, 0x82)
                lo |= 1 << pid
            else:
                if hi >> (pid - 28) & 1:
                    fail("repeated property 0x%02x" % pid, 0x82)
                hi |= 1 << (pid - 28)
        off = _value(buf, off + 1, stop, pid, box, out)
    return stop


def incoming(buf, off, end, box):  # noalloc
    # A received PUBLISH's block (check()), and what this client refuses
    # in it.
    check(buf, off, end, PUBLISH, box)
    if box.alias:
        # This client announces no Topic Alias Maximum (0): the broker
        # may send no alias at all (MQTT-3.1.2-27, 3.3.2-11).
        fail("topic alias used; the client allows none", 0x94, 0x94)
    if not box.topic_len:
        # A Protocol Error without a Topic Alias (MQTT 5, 3.3.2.3.4).
        fail("empty topic name (MQTT-4.7.3-1)", 0x82)


def _value(buf, off, stop, pid, box, out):  # noalloc without out
    # One property value at off; returns the offset after it.
    kind = _T[pid] & 7
    v = None
    if kind == _VAR:
        off = get_varint(buf, off, stop, box)
        v = box.value
        if not v:
            fail("subscription identifier 0", 0x82)
    elif kind >= _STR:
        s = off + 2
        off = _field(buf, off, stop, pid)
        if kind == _PAIR:
            off = _field(buf, off, stop, pid)
        if out is not None:
            v = _text(buf, s, off, kind)
    else:
        n = 1 if kind == _BYTE else 2 if kind == _U16 else 4
        if off + n > stop:
            fail("truncated property 0x%02x" % pid)
        v = buf[off]
        if kind == _BYTE:
            if v > 1:
                fail("property 0x%02x out of range" % pid, 0x82)
        elif kind == _U16:
            v = u16(buf, off)
            if pid == _ALIAS:
                box.alias = v
                if not v:
                    # MQTT 5, 3.3.2.3.4: a Topic Alias of 0 is a Protocol
                    # Error answered with DISCONNECT 0x94 (Topic Alias invalid).
                    fail("topic alias 0", 0x94, 0x94)
            if not v and pid != _KEEP_ALIVE and pid != _ALIAS_MAX:
                fail("property 0x%02x is 0" % pid, 0x82)
        else:
            # Kept below 2**30 (no big integer on a 32-bit board) unless a
            # dict is wanted: 0x3FFFFFFF seconds is 34 years.
            v = 0x3FFFFFFF if v >= 0x40 else (u16(buf, off) << 16) | u16(buf, off + 2)
            if pid == _EXPIRY:
                box.expiry = v
            if out is not None:
                v = int.from_bytes(bytes(buf[off:off + 4]), "big")
            if pid == _MAX_PACKET and not (buf[off] | buf[off + 1] | buf[off + 2] | buf[off + 3]):
                fail("maximum packet size 0", 0x82)
        off += n
    if out is not None:
        k = NAMES[pid]
        if pid == _USER or pid == _SUB_ID:
            out.setdefault(k, []).append(v)
        else:
            out[k] = v
    return off


def find(buf, off, prop):  # noalloc
    # The offset of property prop's value in the (valid) property block at
    # off, its length varint first; -1: none.
    off = get_varint(buf, off, len(buf), _box)
    stop = off + _box.value
    while off < stop:
        pid = buf[off]
        if pid == prop:
            return off + 1
        off = _value(buf, off + 1, stop, pid, _box, None)
    return -1


def _field(buf, off, stop, pid):  # noalloc
    # A length-prefixed string (checked UTF-8) or binary field; returns its
    # end. A Response Topic is a Topic Name (MQTT-3.3.2-14: no wildcard).
    if off + 2 > stop or off + 2 + u16(buf, off) > stop:
        fail("truncated property 0x%02x" % pid)
    s = off + 2
    off = s + u16(buf, off)
    if _T[pid] & 7 != _BIN:
        check_utf8(buf, s, off, pid == _RESPONSE_TOPIC)
    return off


def _text(buf, s, e, kind):
    if kind == _BIN:
        return bytes(buf[s:e])
    if kind == _STR:
        return bytes(buf[s:e]).decode()
    k = s + u16(buf, s - 2)                  # a user property: (name, value)
    return bytes(buf[s:k]).decode(), bytes(buf[k + 2:e]).decode()


def decode(buf, off, end, where):
    # The block at off as a dict (checked like check()); allocates.
    d = {}
    check(buf, off, end, where, _box, d)
    return d


def encode(d):
    # A dict (names such as "message_expiry", or identifiers, as keys;
    # user_property a list of (name, value) pairs; subscription_id an int or a
    # list) -> the encoded block, without its length. Raises ValueError for
    # an unknown property or a value its type cannot hold, TypeError for
    # props that are not a dict.
    if not isinstance(d, dict):
        raise TypeError("MQTT 5 properties: a dict or encoded bytes, not %s" % type(d).__name__)
    out = bytearray()
    tmp = bytearray(4)
    for key, val in d.items():
        pid = NAMES.index(key) if isinstance(key, str) and key in NAMES else key
        if not isinstance(pid, int) or not 0 < pid <= 0x2A or not _T[pid]:
            raise ValueError("unknown MQTT 5 property %r" % (key,))
        kind = _T[pid] & 7
        try:
            for v in val if isinstance(val, list) and (pid == _USER or pid == _SUB_ID) else (val,):
                out.append(pid)
                if kind == _VAR:
                    if not 0 <= v < 268435456:
                        raise OverflowError
                    out += tmp[:put_varint(tmp, 0, v)]
                elif kind < _VAR:
                    out += v.to_bytes((0, 1, 2, 4)[kind], "big")
                else:
                    if kind == _PAIR and not (isinstance(v, (tuple, list)) and len(v) == 2):
                        # (A dict, a str or a 1-item list was taken apart
                        # into some other pair: {"a": 1, "b": 2} went as
                        # ("b", "a").)
                        raise TypeError
                    for s in v if kind == _PAIR else (v,):
                        s = as_bytes(s)      # (bytes(5) would be five zero bytes)
                        if len(s) > 65535:
                            raise OverflowError
                        if kind != _BIN:
                            check_utf8(s, 0, len(s), 2)     # (sent: no control character either)
                        out += len(s).to_bytes(2, "big") + s
        except (AttributeError, TypeError, OverflowError):
            raise ValueError("MQTT 5 property %r: %r is not a value it holds" % (key, val))
        except ProtocolError as x:
            raise ValueError("MQTT 5 property %r: %s" % (key, x.args[1]))
    return bytes(out)


def will(d, msg):
    # set_last_will() props: the encoded block; ValueError for a property
    # that is not a will property (section 3.1.3.2), a value the broker
    # would find malformed (scan()), or payload_format 1 and a payload msg
    # that is not UTF-8. The broker refuses such a CONNECT, at every reconnect.
    if isinstance(d, (bytes, bytearray, memoryview)):
        block = bytes(d)             # pre-encoded, as publish() takes them: scan() checks them
    else:
        block = encode(d)
        for key in d:
            if not _T[NAMES.index(key) if isinstance(key, str) else key] & 0x80:
                raise ValueError("%r is not a will property (MQTT 5 section 3.1.3.2)" % (key,))
    d = {}
    scan(block, WILL, d)
    if d.get("payload_format") == 1:
        utf8_payload(msg)
    return block


def utf8_payload(msg):
    # A payload said to be UTF-8 (Payload Format Indicator 1: publish()
    # and will props): ValueError unless it is well-formed (U+0000
    # allowed: character data, not an MQTT string).
    i = 0
    n = len(msg)
    try:
        while i < n:
            i = utf8(msg, i, n) if msg[i] >= 0x80 else i + 1
    except ProtocolError as x:
        raise ValueError("payload_format 1 and a payload that is not UTF-8: %s" % x.args[1])


def scan(block, where=PUBLISH, out=None):
    # Checks an encoded block (no length prefix) of the application's as a
    # received one is checked, so that no broker closes the link over it
    # (strings well-formed UTF-8 without U+0000, MQTT-1.5.4-1, -2, 1.5.7-1;
    # a Response Topic without wildcards, MQTT-3.3.2-14; a byte property 0
    # or 1): ValueError if it fails. Returns the box with its Topic Alias and
    # Message Expiry; fills the dict out if given. Allocates: once per props
    # object.
    b = bytearray(4 + len(block))
    e = put_varint(b, 0, len(block))
    b[e:e + len(block)] = block
    try:
        check(b, 0, e + len(block), where, _box, out)
    except ProtocolError as x:
        raise ValueError("MQTT 5 properties: " + x.args[1])
    return _box


class _Box:
    value = 0
    alias = 0
    expiry = 0


_box = _Box()


# The Message Expiry Interval of queued messages: rules of the session
# engine (session.py calls expiry(); the front ends call tick()), here
# because only MQTT 5 has them: a 3.1.1 client never compiles or loads
# these lines. A deadline is dl[i] of the engine, a ticks_ms value (0:
# none; session.py sets it at accept()).

def expiry(e, i, now):
    # 3.3.2.3.3: the interval is the message's lifetime, so what goes out
    # is the time it has left, not what was asked when it was queued. Its
    # 4-byte value in engine e's arena (after the fixed header, the topic
    # and the packet id: the property block) is rewritten: the whole
    # seconds left, at least 1, never more than it holds (a deadline
    # passed longer ago than ticks_diff holds reads as one days ahead).
    a = e.arena
    o = e.off[i]
    p = o + 1
    while a[p] & 0x80:               # the Remaining Length
        p += 1
    p += 3 + u16(a, p + 1)           # past it and the topic
    if a[o] & 6:
        p += 2                       # the packet id (QoS 1/2)
    p = find(a, p, _EXPIRY)
    if p > 0:
        left = max(1, min(ticks_diff(e.dl[i], now) // 1000, a[p + 1] << 16 | u16(a, p + 2)))
        a[p] = 0
        a[p + 1] = left >> 16
        a[p + 2] = (left >> 8) & 0xFF
        a[p + 3] = left & 0xFF


def tick(e, now):  # noalloc
    # A queued message's expiry is found when its turn comes (next_out),
    # by ticks_diff, which holds 2**29 ms on a board (6.2 days): a deadline
    # passed longer ago than that looked ahead again, and the message went
    # out (MQTT-3.3.2-5). The front ends call this while the link is down:
    # each passed deadline is moved to now, so it stays passed for another
    # 6 days.
    k = 0
    while k < e.count:
        i = e.index(k)
        d = e.dl[i]
        if d and ticks_diff(now, d) >= 0:
            e.dl[i] = ticks_add(now, -2) | 1
        k += 1


_NO_PROPS = (None, b"", 0, False)    # publish() without props (client.py's own)


def publish(c, props):  # noalloc for the same props object
    # (object, encoded block, Message Expiry s, UTF-8 payload) of client c's
    # publish() props, checked once per props object (MQTTClient.publish).
    if props is None:
        return _NO_PROPS
    if props is not c.pc[0]:
        pr = props if isinstance(props, bytes) else encode(props)
        d = {}
        box = scan(pr, out=d)
        if box.alias:
            # Aliases belong to one connection (MQTT-3.3.2-7); a stored
            # message must not carry one.
            raise ValueError("no topic alias in publish() props")
        if "subscription_id" in d:
            raise ValueError("no subscription_id in publish() props: the broker's to set (MQTT-3.3.4-6)")
        c.pc = (props, pr, box.expiry, d.get("payload_format") == 1)
    return c.pc
