# MQTT 3.1.1 and 5.0 packet codec. Sans-IO: no sockets, no clock, no files.
#
# Encoders write a whole packet, fixed header included, into a caller's
# bytearray at `off` and return the end offset. Decoders read a packet body
# that the transport has already placed in a buffer and fill a preallocated
# `Incoming` record. Functions marked `# noalloc` allocate nothing for
# bytes-like arguments and ASCII str (heap_lock tests prove it); the rest run
# once per connection and may allocate.
#
# Version is the MQTT protocol level: 4 = 3.1.1, 5 = 5.0.
import micropython
from micropython import const

from .errors import ProtocolError, PacketTooLarge, ERR_PROTOCOL, ERR_TOO_LARGE
from .memcopy import copy

CONNECT = const(0x10)
CONNACK = const(0x20)
PUBLISH = const(0x30)
PUBACK = const(0x40)
PUBREC = const(0x50)
PUBREL = const(0x62)      # PUBREL, SUBSCRIBE, UNSUBSCRIBE carry flags 0b0010 (MQTT-3.6.1-1, 3.8.1-1, 3.10.1-1)
PUBCOMP = const(0x70)
SUBSCRIBE = const(0x82)
SUBACK = const(0x90)
UNSUBSCRIBE = const(0xA2)
UNSUBACK = const(0xB0)
PINGREQ = const(0xC0)
PINGRESP = const(0xD0)
DISCONNECT = const(0xE0)
AUTH = const(0xF0)

FLAG_DUP = const(0x08)
FLAG_RETAIN = const(0x01)
MAX_REMAINING = const(268435455)   # 4-byte Variable Byte Integer limit

# MQTT 5 property identifiers (section 2.2.2.2).
P_PAYLOAD_FORMAT = const(0x01)
P_MESSAGE_EXPIRY = const(0x02)
P_CONTENT_TYPE = const(0x03)
P_RESPONSE_TOPIC = const(0x08)
P_CORRELATION_DATA = const(0x09)
P_SUBSCRIPTION_ID = const(0x0B)
P_SESSION_EXPIRY = const(0x11)
P_ASSIGNED_CLIENT_ID = const(0x12)
P_SERVER_KEEP_ALIVE = const(0x13)
P_AUTH_METHOD = const(0x15)
P_AUTH_DATA = const(0x16)
P_REQUEST_PROBLEM_INFO = const(0x17)
P_WILL_DELAY = const(0x18)
P_REQUEST_RESPONSE_INFO = const(0x19)
P_RESPONSE_INFO = const(0x1A)
P_SERVER_REFERENCE = const(0x1C)
P_REASON_STRING = const(0x1F)
P_RECEIVE_MAXIMUM = const(0x21)
P_TOPIC_ALIAS_MAXIMUM = const(0x22)
P_TOPIC_ALIAS = const(0x23)
P_MAXIMUM_QOS = const(0x24)
P_RETAIN_AVAILABLE = const(0x25)
P_USER_PROPERTY = const(0x26)
P_MAXIMUM_PACKET_SIZE = const(0x27)
P_WILDCARD_SUB_AVAILABLE = const(0x28)
P_SUB_ID_AVAILABLE = const(0x29)
P_SHARED_SUB_AVAILABLE = const(0x2A)

# Property value kinds.
_BYTE = const(1)
_U16 = const(2)
_U32 = const(3)
_VARINT = const(4)
_STR = const(5)
_BIN = const(6)
_PAIR = const(7)

# Index = property id, value = kind (0 = not a property).
_KIND = bytes((
    0, 1, 3, 5, 0, 0, 0, 0, 5, 6, 0, 4, 0, 0, 0, 0,     # 0x00-0x0F
    0, 3, 5, 2, 0, 5, 6, 1, 3, 1, 5, 0, 5, 0, 0, 5,     # 0x10-0x1F
    0, 2, 2, 2, 1, 1, 7, 3, 1, 1, 1))                   # 0x20-0x2A

_P_NAMES = {
    0x01: "payload_format", 0x02: "message_expiry", 0x03: "content_type",
    0x08: "response_topic", 0x09: "correlation_data", 0x0B: "subscription_id",
    0x11: "session_expiry", 0x12: "assigned_client_id", 0x13: "server_keep_alive",
    0x15: "auth_method", 0x16: "auth_data", 0x17: "request_problem_info",
    0x18: "will_delay", 0x19: "request_response_info", 0x1A: "response_info",
    0x1C: "server_reference", 0x1F: "reason_string", 0x21: "receive_maximum",
    0x22: "topic_alias_maximum", 0x23: "topic_alias", 0x24: "maximum_qos",
    0x25: "retain_available", 0x26: "user_property", 0x27: "maximum_packet_size",
    0x28: "wildcard_sub_available", 0x29: "sub_id_available", 0x2A: "shared_sub_available",
}
_P_IDS = {v: k for k, v in _P_NAMES.items()}


def _fail(msg):
    raise ProtocolError(ERR_PROTOCOL, msg)


# ---------------------------------------------------------------- primitives

@micropython.viper
def _copy_ascii(dst: ptr8, doff: int, src: ptr8, n: int) -> int:
    # Copies n bytes of a str's UTF-8 buffer; returns 0 at the first
    # non-ASCII byte (then the caller encodes the str, which allocates).
    i = 0
    while i < n:
        c = src[i]
        if c >= 0x80:
            return 0
        dst[doff + i] = c
        i += 1
    return 1


def put_bytes(buf, off, data, n):  # noalloc
    """Copy n bytes of bytes-like or ASCII str `data` into buf at off."""
    if isinstance(data, str):
        if not _copy_ascii(buf, off, data, n):
            raise ValueError("non-ASCII str")
    elif n:
        copy(buf, off, data, 0, n)      # (a slice in native code would allocate)
    return off + n


def varint_size(n):  # noalloc
    return 1 if n < 128 else 2 if n < 16384 else 3 if n < 2097152 else 4


def put_varint(buf, off, n):  # noalloc
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            buf[off] = b | 0x80
            off += 1
        else:
            buf[off] = b
            return off + 1


def put_u16(buf, off, v):  # noalloc
    buf[off] = v >> 8
    buf[off + 1] = v & 0xFF
    return off + 2


def put_u32(buf, off, v):  # noalloc
    buf[off] = (v >> 24) & 0xFF
    buf[off + 1] = (v >> 16) & 0xFF
    buf[off + 2] = (v >> 8) & 0xFF
    buf[off + 3] = v & 0xFF
    return off + 4


def get_u16(buf, off):  # noalloc
    return (buf[off] << 8) | buf[off + 1]


def get_u32(buf, off):  # may allocate on 32-bit boards for values >= 2**30
    return (buf[off] << 24) | (buf[off + 1] << 16) | (buf[off + 2] << 8) | buf[off + 3]


def get_varint(buf, off, end, out):  # noalloc
    """Decode a Variable Byte Integer at off; returns the offset after it and
    stores the value in out.value. Raises ProtocolError if malformed."""
    v = 0
    shift = 0
    while True:
        if off >= end:
            _fail("truncated variable byte integer")
        b = buf[off]
        off += 1
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            out.value = v
            return off
        shift += 7
        if shift > 21:
            _fail("variable byte integer longer than 4 bytes")


def header(buf, off, first, remaining):  # noalloc
    """Fixed header: first byte and Remaining Length."""
    buf[off] = first
    return put_varint(buf, off + 1, remaining)


def check_room(end, size, what):
    if end > size:
        raise PacketTooLarge(ERR_TOO_LARGE, "%s packet of %d bytes exceeds the buffer of %d" % (what, end, size))


# ---------------------------------------------------------------- properties

def encode_props(props):
    """MQTT 5 properties from a dict (keys: property ids or names such as
    'message_expiry'; user_property: list of (key, value)) to the encoded
    property block *without* its length prefix. Done once per distinct
    property set: pass the bytes to publish() to keep the hot path free of
    allocation."""
    if props is None:
        return b""
    if isinstance(props, (bytes, bytearray)):
        return bytes(props)
    out = bytearray()
    tmp = bytearray(4)
    for key, val in props.items():
        pid = _P_IDS.get(key, key) if isinstance(key, str) else key
        if not isinstance(pid, int) or pid >= len(_KIND) or not _KIND[pid]:
            raise ValueError("unknown MQTT 5 property %r" % (key,))
        kind = _KIND[pid]
        vals = val if (kind == _PAIR or pid == P_SUBSCRIPTION_ID) and isinstance(val, list) else (val,)
        for v in vals:
            out.append(pid)
            if kind == _BYTE:
                out.append(v)
            elif kind == _U16:
                out += bytes(((v >> 8) & 0xFF, v & 0xFF))
            elif kind == _U32:
                put_u32(tmp, 0, v)
                out += tmp
            elif kind == _VARINT:
                e = put_varint(tmp, 0, v)
                out += tmp[:e]
            elif kind == _PAIR:
                for s in v:
                    s = s.encode() if isinstance(s, str) else bytes(s)
                    out += bytes((len(s) >> 8, len(s) & 0xFF)) + s
            else:
                s = v.encode() if isinstance(v, str) else bytes(v)
                out += bytes((len(s) >> 8, len(s) & 0xFF)) + s
    return bytes(out)


def decode_props(buf, off, end, names=True):
    """Property block at off (its length varint included) to a dict; returns
    (dict, offset after the block). Allocates: used for CONNACK, SUBACK,
    DISCONNECT and for callbacks that asked for properties."""
    lv = _Value()
    off = get_varint(buf, off, end, lv)
    stop = off + lv.value
    if stop > end:
        _fail("property length beyond packet")
    d = {}
    while off < stop:
        pid = buf[off]
        off += 1
        kind = _KIND[pid] if pid < len(_KIND) else 0
        if not kind:
            _fail("unknown property 0x%02x" % pid)
        if kind == _BYTE:
            need = 1
        elif kind == _U16:
            need = 2
        elif kind == _U32:
            need = 4
        else:
            need = 0
        if off + need > stop:
            _fail("truncated property 0x%02x" % pid)
        if kind == _BYTE:
            v = buf[off]
        elif kind == _U16:
            v = get_u16(buf, off)
        elif kind == _U32:
            v = get_u32(buf, off)
        elif kind == _VARINT:
            off = get_varint(buf, off, stop, lv)
            v = lv.value
        else:
            v, off = _get_str(buf, off, stop, pid)
            if kind == _PAIR:
                v2, off = _get_str(buf, off, stop, pid)
                v = (v, v2)
            elif kind == _STR:
                try:
                    v = v.decode()
                except UnicodeError:
                    _fail("invalid UTF-8 in property 0x%02x" % pid)
        off += need
        key = _P_NAMES[pid] if names else pid
        if kind == _PAIR or pid == P_SUBSCRIPTION_ID:
            d.setdefault(key, []).append(v)
        else:
            d[key] = v
    return d, stop


def _get_str(buf, off, end, pid):
    if off + 2 > end:
        _fail("truncated property 0x%02x" % pid)
    n = get_u16(buf, off)
    off += 2
    if off + n > end:
        _fail("property 0x%02x length beyond packet" % pid)
    return bytes(buf[off:off + n]), off + n


@micropython.native
def skip_props(buf, off, end, inc):  # noalloc
    """Walk a property block without allocating; note in `inc` the ones the
    client acts on (topic alias, message expiry, subscription id). Returns
    the offset after the block."""
    off = get_varint(buf, off, end, inc)
    stop = off + inc.value
    if stop > end:
        _fail("property length beyond packet")
    inc.topic_alias = 0
    while off < stop:
        pid = buf[off]
        off += 1
        kind = _KIND[pid] if pid < len(_KIND) else 0
        if kind == _BYTE:
            off += 1
        elif kind == _U16:
            if pid == P_TOPIC_ALIAS and off + 2 <= stop:
                inc.topic_alias = get_u16(buf, off)
            off += 2
        elif kind == _U32:
            off += 4
        elif kind == _VARINT:
            off = get_varint(buf, off, stop, inc)
        elif kind == _STR or kind == _BIN:
            if off + 2 > stop:
                _fail("truncated property 0x%02x" % pid)
            off += 2 + get_u16(buf, off)
        elif kind == _PAIR:
            for _ in range(2):
                if off + 2 > stop:
                    _fail("truncated user property")
                off += 2 + get_u16(buf, off)
        else:
            _fail("unknown property 0x%02x" % pid)
        if off > stop:
            _fail("truncated property 0x%02x" % pid)
    return stop


def has_prop(block, pid):
    """True when an encoded property block (no length prefix) holds `pid`."""
    b = bytearray(4 + len(block))
    e = put_varint(b, 0, len(block))
    b[e:] = block
    d, _ = decode_props(b, 0, len(b), False)
    return pid in d


class _Value:
    value = 0


# ---------------------------------------------------------------- encoders

def publish_size(topic_len, payload_len, qos, props_len, version):  # noalloc
    """Remaining Length of a PUBLISH."""
    n = 2 + topic_len + payload_len + (2 if qos else 0)
    if version == 5:
        n += varint_size(props_len) + props_len
    return n


@micropython.native
def encode_publish(buf, off, topic, topic_len, payload, payload_len, qos, retain, dup, pid,
                   props, props_len, version):  # noalloc
    """PUBLISH into buf at off; returns the end offset. `props` is an encoded
    property block (see encode_props) or None. The caller has checked size."""
    rl = publish_size(topic_len, payload_len, qos, props_len, version)
    first = PUBLISH | (qos << 1)
    if retain:
        first |= FLAG_RETAIN
    if dup:
        first |= FLAG_DUP
    off = header(buf, off, first, rl)
    off = put_u16(buf, off, topic_len)
    off = put_bytes(buf, off, topic, topic_len)
    if qos:
        off = put_u16(buf, off, pid)
    if version == 5:
        off = put_varint(buf, off, props_len)
        if props_len:
            copy(buf, off, props, 0, props_len)
            off += props_len
    return put_bytes(buf, off, payload, payload_len)


def encode_ack(buf, off, kind, pid, reason, version):  # noalloc
    """PUBACK, PUBREC, PUBREL or PUBCOMP. In MQTT 5 the reason code is
    omitted when it is 0 (Success), as section 3.4.2.1 allows."""
    if version == 5 and reason:
        buf[off] = kind
        buf[off + 1] = 3
        put_u16(buf, off + 2, pid)
        buf[off + 4] = reason
        return off + 5
    buf[off] = kind
    buf[off + 1] = 2
    return put_u16(buf, off + 2, pid)


def encode_pingreq(buf, off):  # noalloc
    buf[off] = PINGREQ
    buf[off + 1] = 0
    return off + 2


def _blen(s):
    return 0 if s is None else len(s)


def encode_connect(buf, client_id, *, version=4, keepalive=0, clean=True, user=None, password=None,
                   will_topic=None, will_msg=None, will_qos=0, will_retain=False, will_props=b"",
                   props=b""):
    """CONNECT at offset 0 of buf; arguments are bytes (the client converts).
    Returns the end offset."""
    if version not in (4, 5):
        raise ValueError("version must be 4 (MQTT 3.1.1) or 5 (MQTT 5.0)")
    rl = 10 + 2 + len(client_id)
    if version == 5:
        rl += varint_size(len(props)) + len(props)
    flags = 0x02 if clean else 0
    if will_topic is not None:
        flags |= 0x04 | (will_qos << 3) | (0x20 if will_retain else 0)
        rl += 2 + len(will_topic) + 2 + _blen(will_msg)
        if version == 5:
            rl += varint_size(len(will_props)) + len(will_props)
    if user is not None:
        flags |= 0x80
        rl += 2 + len(user)
    if password is not None:
        flags |= 0x40
        rl += 2 + len(password)
    check_room(1 + varint_size(rl) + rl, len(buf), "CONNECT")
    off = header(buf, 0, CONNECT, rl)
    off = put_u16(buf, off, 4)
    buf[off:off + 4] = b"MQTT"
    off += 4
    buf[off] = version
    buf[off + 1] = flags
    off = put_u16(buf, off + 2, keepalive)
    if version == 5:
        off = _put_block(buf, off, props)
    off = _put_lstr(buf, off, client_id)
    if will_topic is not None:
        if version == 5:
            off = _put_block(buf, off, will_props)
        off = _put_lstr(buf, off, will_topic)
        off = _put_lstr(buf, off, will_msg or b"")
    if user is not None:
        off = _put_lstr(buf, off, user)
    if password is not None:
        off = _put_lstr(buf, off, password)
    return off


def _put_lstr(buf, off, s):
    off = put_u16(buf, off, len(s))
    buf[off:off + len(s)] = s
    return off + len(s)


def _put_block(buf, off, block):
    off = put_varint(buf, off, len(block))
    buf[off:off + len(block)] = block
    return off + len(block)


def encode_subscribe(buf, pid, filters, version, props=b""):
    """SUBSCRIBE for [(filter_bytes, options_byte), ...]. options: QoS in
    bits 0-1; MQTT 5 adds No Local (bit 2), Retain As Published (3) and
    Retain Handling (4-5)."""
    rl = 2 + sum(3 + len(f) for f, _ in filters)
    if version == 5:
        rl += varint_size(len(props)) + len(props)
    check_room(1 + varint_size(rl) + rl, len(buf), "SUBSCRIBE")
    off = header(buf, 0, SUBSCRIBE, rl)
    off = put_u16(buf, off, pid)
    if version == 5:
        off = _put_block(buf, off, props)
    for f, opts in filters:
        off = _put_lstr(buf, off, f)
        buf[off] = opts
        off += 1
    return off


def encode_unsubscribe(buf, pid, filters, version):
    rl = 2 + sum(2 + len(f) for f in filters) + (1 if version == 5 else 0)
    check_room(1 + varint_size(rl) + rl, len(buf), "UNSUBSCRIBE")
    off = header(buf, 0, UNSUBSCRIBE, rl)
    off = put_u16(buf, off, pid)
    if version == 5:
        buf[off] = 0
        off += 1
    for f in filters:
        off = _put_lstr(buf, off, f)
    return off


def encode_disconnect(buf, version, reason=0, session_expiry=None):
    if version != 5 or (reason == 0 and session_expiry is None):
        buf[0] = DISCONNECT
        buf[1] = 0
        return 2
    props = b"" if session_expiry is None else bytes((P_SESSION_EXPIRY,)) + _u32b(session_expiry)
    off = header(buf, 0, DISCONNECT, 1 + varint_size(len(props)) + len(props))
    buf[off] = reason
    return _put_block(buf, off + 1, props)


def _u32b(v):
    b = bytearray(4)
    put_u32(b, 0, v)
    return bytes(b)


# ---------------------------------------------------------------- decoders

class Incoming:
    """Preallocated result of decoding a PUBLISH (offsets into the body)."""
    value = 0          # scratch for get_varint
    topic_off = 0
    topic_len = 0
    payload_off = 0
    payload_len = 0
    props_off = 0      # MQTT 5: offset of the property block (its length varint)
    pid = 0
    qos = 0
    retain = 0
    dup = 0
    topic_alias = 0


@micropython.native
def parse_publish(body, n, flags, version, inc):  # noalloc
    """Decode a PUBLISH body of n bytes (flags: low nibble of the first byte)."""
    qos = (flags >> 1) & 3
    if qos == 3:
        _fail("PUBLISH with QoS 3 (MQTT-3.3.1-4)")
    if n < 2:
        _fail("PUBLISH shorter than its topic length")
    tl = get_u16(body, 0)
    off = 2 + tl
    if qos:
        off += 2
    if off > n:
        _fail("PUBLISH topic length beyond packet")
    inc.qos = qos
    inc.retain = flags & 1
    inc.dup = (flags >> 3) & 1
    inc.topic_off = 2
    inc.topic_len = tl
    inc.pid = get_u16(body, off - 2) if qos else 0
    if qos and not inc.pid:
        _fail("PUBLISH with packet id 0 (MQTT-2.3.1-1)")
    inc.props_off = off
    inc.topic_alias = 0
    if version == 5:
        off = skip_props(body, off, n, inc)
    inc.payload_off = off
    inc.payload_len = n - off


def parse_ack(body, n, version):  # noalloc
    """Packet id of a PUBACK/PUBREC/PUBREL/PUBCOMP/UNSUBACK body; the MQTT 5
    reason code is read with ack_reason()."""
    if n < 2 or (version == 4 and n != 2):
        _fail("acknowledgement of %d bytes" % n)
    pid = get_u16(body, 0)
    if not pid:
        _fail("acknowledgement with packet id 0")
    return pid


def ack_reason(body, n):  # noalloc
    return body[2] if n > 2 else 0


def parse_connack(body, n, version):
    """(session_present, code, props dict or None)."""
    if n < 2 or (version == 4 and n != 2):
        _fail("CONNACK of %d bytes" % n)
    if body[0] & 0xFE:
        _fail("CONNACK reserved flags set (MQTT-3.2.2-1)")
    props = None
    if version == 5:
        props, _ = decode_props(body, 2, n) if n > 2 else ({}, 2)
    return bool(body[0] & 1), body[1], props


def expected_flags(kind):  # noalloc
    """Low-nibble flags a server packet of this type must carry (-1: any)."""
    if kind == PUBLISH:
        return -1
    return 2 if kind == (PUBREL & 0xF0) else 0


def reason_text(code, version, connack=False):
    """The reason or return code as words (the tables load only when an
    error needs them)."""
    from .reasons import text
    return text(code, version, connack)
