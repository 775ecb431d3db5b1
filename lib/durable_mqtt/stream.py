# The record stream (docs/session-format.md) read back: parse() makes a
# State of the bytes (load.restore() puts it into the engine). Used at boot
# by load.py (the stream of a log, the ring, a session directory's "h") and
# by restore_session(); unloaded after (client.unload). Allocates freely.
from micropython import const

from . import crc
from .codec import u16

_R_HEADER = const(0x01)
_R_OUT_PUB = const(0x02)
_R_OUT_ACKED = const(0x03)
_R_OUT_REL = const(0x04)
_R_IN_QOS2 = const(0x05)
_R_IN_REL = const(0x06)
_R_SUB = const(0x07)
_HF_ASSIGNED_ID = const(0x01)
_HF_OFFLINE = const(0x02)


class FormatError(ValueError):
    # Bytes that are not a session state of this library.
    pass


class State:
    # A stored state read back (boot time; allocates freely).

    def __init__(self):
        self.version = 0
        self.flags = 0
        self.cid_assigned = False
        self.offline = False
        self.expiry = 0
        self.saved_min = 0
        self.next_pid = 0
        self.client_id = b""
        self.subs = []           # [(filter, options, sub_id)]
        self.out = []            # [[pid, packet (a view of the stream) or None (a PUBREL owed)]] in send order; the
                                 # session directory gives the packet's length, and
        self.view = None         # view(k) reads out[k]'s packet when restore() copies it
        self.rx2 = []
        self.records = 0
        self.torn = False        # the stream ended at a bad record
        self.dropped = 0         # bytes from there on
        self.intact_after = False    # a good record follows the damage: not just a torn tail

    def damaged(self, n):
        # n bytes skipped as damage among good records: reported as
        # `damaged` (load.py), not taken for a torn last write.
        self.dropped += n
        self.intact_after = True


def parse(data):
    # Bytes -> State. FormatError when they are not a state (no magic, a
    # newer format, a bad header); a damaged record after a good header only
    # ends the stream there (st.torn).
    n = len(data)
    if n < 5 or bytes(data[0:4]) != b"DMQS":
        raise FormatError("not a durable_mqtt session (no magic)")
    if not 0 < data[4] <= 1:          # (1: the newest format this code reads)
        raise FormatError("session format %d is newer than this library's" % data[4])
    buf = data if isinstance(data, (bytearray, memoryview)) else bytearray(data)
    view = memoryview(buf)            # each packet a view of the stream: restore() copies it
    st = State()
    p = 5
    pid = 0                           # the newest PUBLISH's id: the header's, then each OUT_PUB's
    out = {}
    while p < n:
        kind = buf[p]
        length = u16(buf, p + 1) if p + 3 <= n else 0
        end = p + 3 + length
        if p + 3 > n or end + 4 > n or not crc.check(buf, p, length + 3):
            if not st.records:
                raise FormatError("session header damaged")
            st.torn = True
            st.dropped = n - p
            st.intact_after = _record_after(buf, p + 1, n)
            break
        if kind == _R_HEADER:
            header(st, buf, p + 3, length)
            pid = st.next_pid
        elif not st.records:
            raise FormatError("session does not start with a header")
        elif kind == _R_OUT_PUB:
            if length >= 2 and publish_ok(buf, p + 5, length - 2, u16(buf, p + 3)):
                pid = u16(buf, p + 3)
                drop(st.out, out, pid)
                rec = [pid, view[p + 5:end]]
                st.out.append(rec)
                out[pid] = rec
            else:                     # a good CRC round no PUBLISH of its id: damage, reported
                st.damaged(length + 7)
        else:
            _record(st, out, kind, buf, p + 3, end)
        st.records += 1
        p = end + 4
    if not st.records:
        raise FormatError("empty session")
    st.next_pid = pid
    return st


def publish_ok(b, p, m, pid):
    # Is b[p:p+m] a QoS 1/2 PUBLISH carrying packet id pid, as an OUT_PUB
    # holds it (docs/session-format.md)? Else it is not resent: its bytes
    # would go to the broker as they are.
    if not pid or m < 6 or b[p] & 0xF0 != 0x30 or not 0 < (b[p] >> 1) & 3 < 3:
        return False                  # (a packet id is never 0, MQTT-2.3.1-1)
    n = shift = 0
    q = p + 1
    while True:                       # Remaining Length (MQTT-1.5.5)
        if q >= p + m or q > p + 4:
            return False
        c = b[q]
        n |= (c & 0x7F) << shift
        shift += 7
        q += 1
        if not c & 0x80:
            break
    if n != p + m - q:
        return False
    t = q + 2 + u16(b, q)             # past the topic name: the packet id
    return t + 2 <= p + m and u16(b, t) == pid


def header(st, buf, b, length):
    if length < 14 or st.records or 14 + u16(buf, b + 12) != length or buf[b] not in (4, 5):
        raise FormatError("bad session header")
    st.version = buf[b]
    st.flags = buf[b + 1]
    st.cid_assigned = bool(buf[b + 1] & _HF_ASSIGNED_ID)
    st.offline = bool(buf[b + 1] & _HF_OFFLINE)
    st.expiry = int.from_bytes(bytes(buf[b + 2:b + 6]), "big")
    st.saved_min = int.from_bytes(bytes(buf[b + 6:b + 10]), "big")
    st.next_pid = u16(buf, b + 10)
    st.client_id = bytes(buf[b + 14:b + length])


def _record(st, out, kind, buf, b, end):
    # A record other than HEADER and OUT_PUB (any other type: a newer
    # writer's, skipped).
    if kind == _R_SUB:
        opts = buf[b + 4] if end - b > 4 else 3    # (no options byte: damage, below)
        sid = int.from_bytes(bytes(buf[b:b + 4]), "big")
        # Options and identifier as a SUBSCRIBE may carry them (no writer of
        # this library stores others; sent, the broker must close): QoS 0-2;
        # 3.1.1 nothing else (MQTT-3.8.3-4), no identifier; 5.0 Retain
        # Handling 0-2, bits 6-7 zero, an identifier up to 268,435,455
        # (MQTT 5, 3.8.3.1, 3.8.2.1.2). Else damage: skipped, reported.
        if opts & 3 == 3 or (opts & 0x30 == 0x30 or opts & 0xC0 or sid > 268435455 if st.version == 5 else opts & 0xFC or sid):
            st.damaged(end + 7 - b)
            return
        f = bytes(buf[b + 5:end])
        st.subs = [s for s in st.subs if s[0] != f]
        st.subs.append((f, opts, sid))
    elif kind == _R_OUT_ACKED:
        for q in range(b, end - 1, 2):
            drop(st.out, out, u16(buf, q))
    elif kind == _R_OUT_REL:
        # The PUBREL owed goes after those owed before it: PUBRELs go out
        # again in the order their PUBRECs came (MQTT-4.6.0-4).
        pid = u16(buf, b) if end - b == 2 else 0
        if not pid:                   # not a packet id (MQTT-2.3.1-1): damage
            st.damaged(end + 7 - b)
            return
        drop(st.out, out, pid)
        rec = out[pid] = [pid, None]
        st.out.append(rec)
    elif kind == _R_IN_QOS2:
        pid = u16(buf, b) if end - b == 2 else 0
        if not pid:                   # (as for _R_OUT_REL: else a QoS 2 message with that id was never delivered)
            st.damaged(end + 7 - b)
            return
        if pid not in st.rx2:
            st.rx2.append(pid)
    elif kind == _R_IN_REL:
        for q in range(b, end - 1, 2):
            pid = u16(buf, q)
            if pid in st.rx2:
                st.rx2.remove(pid)


def _record_after(buf, p, n):
    # Is there a whole record with a good CRC past p? (boot only)
    while p + 7 <= n:
        length = u16(buf, p + 1)
        if 1 <= buf[p] <= _R_SUB and p + length + 7 <= n and crc.check(buf, p, length + 3):
            return True
        p += 1
    return False


def drop(items, index, pid):
    rec = index.pop(pid, None)
    if rec is not None:
        items.remove(rec)


