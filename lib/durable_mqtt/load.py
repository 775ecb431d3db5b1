# The session from flash or bytes into the engine, and out as bytes: the
# journal for a session_file (with its stored state restored), the record
# stream read back (docs/session-format.md), save_session() and
# restore_session(). Boot-time code: loaded when needed and unloaded after
# (client.unload); it allocates freely.
import os
import sys
from micropython import const

from . import crc
from .codec import u16
from .records import wall_minutes

# docs/session-format.md (the same numbers as store.py's)
_FORMAT = const(1)
_R_HEADER = const(0x01)
_R_OUT_PUB = const(0x02)
_R_OUT_ACKED = const(0x03)
_R_OUT_REL = const(0x04)
_R_IN_QOS2 = const(0x05)
_R_IN_REL = const(0x06)
_R_SUB = const(0x07)
_HF_ASSIGNED_ID = const(0x01)
_HF_OFFLINE = const(0x02)
_R_IN_LIST = const(0x08)


class FormatError(ValueError):
    """Bytes that are not a session state of this library."""


def open_session(c, where, prog_size, batch, clean):
    """Client c's journal on session_file `where`, its stored state restored;
    batch: (persist_batch_ms, persist_batch_bytes)."""
    e = c.engine
    c.journal = j = open_journal(where, e, prog_size, batch[0], c.event, batch[1])
    if e.has_state:
        c.clean_session = False
        c.persist = True
    elif c.persistent(clean):
        c.persist = True              # what is accepted before the first connect is kept
        j.checkpoint()


def open_journal(where, e, prog_size, batch_ms, event, batch_bytes=None):
    """The journal for session_file `where`, with the stored state restored
    into engine e: a path (a directory of slot files, filestore.py; a
    session file of the older log layout is moved into it), a block device
    (the raw ring, ring.py), or a log backend object such as
    filelog.FileLog. An unusable state is set aside and reported through
    event(name, info)."""
    if isinstance(where, str):
        return _open_dir(where, e, batch_ms, event)
    if hasattr(where, "readblocks"):
        from .ring import RingStore
        if prog_size is None and sys.platform == "rp2":
            prog_size = 256           # rp2.Flash programs whole 256-byte pages
        where = RingStore(where, prog_size=prog_size, max_append=e.buf_size + 16 + 2 * e.nslots)
    from .store import LogJournal
    j = LogJournal(where, e, batch_ms, e.qos12, batch_bytes)
    try:
        data = where.load()
        if data:
            _restore(e, parse(data), event)
            j.checkpoint()            # at once: drops a torn tail and the acks it replays
    except ValueError as x:           # FormatError, or a state that is not ours
        j.set_aside()
        event("discarded", {"reason": str(x)})
    return j


def _restore(e, st, event):
    if st.intact_after:               # more than a torn last write: records lost
        event("damaged", {"dropped_bytes": st.dropped})
    restore(e, st, wall_minutes())
    if e.expired:
        event("expired", {"saved_min": st.saved_min, "expiry": st.expiry})


def _open_dir(path, e, batch_ms, event):
    from .filestore import SlotJournal
    j = SlotJournal(path + ".d", e, batch_ms)
    old = _read(path)                 # a session file of the log layout (0.1.0)
    try:
        st = _read_dir(j)
        if st is None and old:
            st = parse(old)
        if st is not None:
            _restore(e, st, event)
            if old and not j.made:
                j.checkpoint()        # moved into the directory, the header last
    except ValueError as x:           # FormatError, or a state that is not ours
        j.set_aside()
        if old:
            try:
                os.rename(path, path + ".bad")
            except OSError:
                pass
            old = None
        event("discarded", {"reason": str(x)})
    if old is not None:
        os.remove(path)               # the directory holds it now
    return j


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _read_dir(j):
    """The state in j's directory (filestore.py), or None without a valid
    "h". Slots that hold nothing valid are emptied before anything new is
    written, so that an old copy cannot come back later."""
    head = _read(j.dir + "/h")
    names = os.listdir(j.dir)
    if not head:
        for name in names:            # no session: whatever else is there goes
            if name.isdigit() and _read(j.dir + "/" + name):
                j.put_file(name, b"")
        return None
    st = parse(head)
    for name in ("i0", "i1"):         # the newer intact one holds the incoming QoS 2 ids
        d = _read(j.dir + "/" + name)
        n = len(d) if d else 0
        if n >= 11 and d[4] == _R_IN_LIST and u16(d, 5) == n - 11 and crc.check(d, 0, n - 4):
            q = _seq(d)
            if q > j.iseq:
                j.iseq = q
                st.in_qos2 = [u16(d, 7 + 2 * k) for k in range(u16(d, 5) // 2)]
    found = []
    for name in names:
        if not name.isdigit():
            if name not in ("h", "i0", "i1"):
                os.remove(j.dir + "/" + name)     # h.tmp of a cut checkpoint, or a stranger
            continue
        s = int(name)
        data = _read(j.dir + "/" + name)
        n = len(data) if data else 0
        ok = n >= 13 and u16(data, 5) == n - 11 and data[4] in (_R_OUT_PUB, _R_OUT_REL) and crc.check(data, 0, n - 4)
        if s >= len(j.pid):
            if ok:
                raise ValueError("session holds more messages than this client's outbox")
            os.remove(j.dir + "/" + name)
            continue
        j.made = max(j.made, s + 1)
        if ok:
            # (seq, 1 for an OUT_REL: it follows its OUT_PUB of the same seq)
            rel = data[4] == _R_OUT_REL
            found.append((_seq(data), rel, s, u16(data, 7), None if rel else bytes(data[9:n - 4])))
        elif n:
            j.put_file(name, b"")        # damaged (LittleFS never leaves a write half done)
            st.dropped += n
            st.intact_after = True    # reported as `damaged`
    found.sort()
    seen = {}
    for seq, rel, s, pid, pkt in found:
        # An id twice: reused while the old slot waited to be emptied (the
        # higher seq wins), or an OUT_PUB and its OUT_REL (same seq: the
        # OUT_REL wins). The loser is emptied.
        if pid in seen:
            j.put_file(str(seen[pid][1]), b"")
        seen[pid] = (seq, s, pid, pkt)
    live = sorted(seen.values())
    for seq, s, pid, pkt in live:
        j.pid[s] = pid
        j.seq[s] = seq
        j.rel[s] = pkt is None
        j.next = seq + 1
        st.next_pid = pid             # the newest message's id: the last issued
    st.out = [[pid, pkt] for _, _, pid, pkt in live]
    return st


def _seq(b):
    return (b[0] << 24) | (b[1] << 16) | u16(b, 2)


def save_session(c):
    if c.journal:
        c.journal.flush()
    from .store import state_bytes
    return state_bytes(c.engine)


def restore_session(c, data):
    if c.is_connected():
        from .errors import MQTTException
        raise MQTTException(-8, "restore_session() needs a disconnected client")
    try:
        st = parse(data)
        if st.torn:
            raise ValueError("truncated or damaged (save_session() bytes are whole)")
        restore(c.engine, st, 0)
    except ValueError as x:
        raise ValueError("not a valid session state: %s" % x)
    c.clean_session = False
    if c.journal:
        c.persist = True
        c.journal.checkpoint()


def restore(e, st, now_min):
    """Replace engine e's state with a stored one. Raises ValueError,
    changing nothing, when it is not this client's or does not fit."""
    if (st.version == 5) != e.v5:
        raise ValueError("session is for another MQTT version")
    if st.client_id != e.cid and not (st.assigned and not e.cid):
        raise ValueError("session belongs to client id %r" % st.client_id)
    need = 0
    for _, pkt in st.out:
        if pkt and len(pkt) > e.buf_size:
            raise ValueError("stored packet larger than buf_size")
        need += len(pkt) if pkt else 0
    if len(st.out) > e.qos12 or need > len(e.arena) or len(st.in_qos2) > len(e.rx2):
        raise ValueError("stored session larger than this client's outbox")
    # Saved at DISCONNECT (where the broker's expiry clock starts) longer ago
    # than the expiry: the broker has dropped it. The next connect starts
    # clean; the messages are kept and go out as new ones. A state saved
    # while connected is never judged: a power cut has no time.
    e.expired = bool(st.offline and st.saved_min and now_min and st.expiry != 0xFFFFFFFF
                     and now_min - st.saved_min > (st.expiry + 59) // 60)
    e.clear()
    for pid, pkt in st.out:
        e.stored(pid, pkt)
    for pid in st.in_qos2:
        e.rx2[e.rx2_n] = pid
        e.rx2_n += 1
    e.subs = list(st.subs)
    e.last_pid = st.next_pid
    e.cid = st.client_id
    e.cid_assigned = st.assigned
    e.expiry = st.expiry
    e.has_state = True


class State:
    """A stored state read back (boot time; allocates freely)."""

    def __init__(self):
        self.version = 0
        self.flags = 0
        self.assigned = False
        self.offline = False
        self.expiry = 0
        self.saved_min = 0
        self.next_pid = 0
        self.client_id = b""
        self.subs = []           # [(filter, options, sub_id)]
        self.out = []            # [[pid, packet or None (a PUBREL owed)]] in send order
        self.in_qos2 = []
        self.records = 0
        self.torn = False        # the stream ended at a bad record
        self.dropped = 0         # bytes from there on
        self.intact_after = False    # a good record follows the damage: not just a torn tail


def parse(data):
    """Bytes -> State. FormatError when they are not a state (no magic, a
    newer format, a bad header); a damaged record after a good header only
    ends the stream there (st.torn)."""
    n = len(data)
    if n < 5 or bytes(data[0:4]) != b"DMQS":
        raise FormatError("not a durable_mqtt session (no magic)")
    if not 0 < data[4] <= _FORMAT:
        raise FormatError("session format %d is newer than this library's" % data[4])
    buf = data if isinstance(data, (bytearray, memoryview)) else bytearray(data)
    st = State()
    p = 5
    last = 0
    out = {}
    while p < n:
        kind = buf[p]
        ln = u16(buf, p + 1) if p + 3 <= n else 0
        end = p + 3 + ln
        if p + 3 > n or end + 4 > n or not crc.check(buf, p, ln + 3):
            if not st.records:
                raise FormatError("session header damaged")
            st.torn = True
            st.dropped = n - p
            st.intact_after = _record_after(buf, p + 1, n)
            break
        b = p + 3
        if kind == _R_HEADER:
            if ln < 14 or st.records or 14 + u16(buf, b + 12) != ln or buf[b] not in (4, 5):
                raise FormatError("bad session header")
            st.version = buf[b]
            st.flags = buf[b + 1]
            st.assigned = bool(buf[b + 1] & _HF_ASSIGNED_ID)
            st.offline = bool(buf[b + 1] & _HF_OFFLINE)
            st.expiry = int.from_bytes(bytes(buf[b + 2:b + 6]), "big")
            st.saved_min = int.from_bytes(bytes(buf[b + 6:b + 10]), "big")
            st.next_pid = last = u16(buf, b + 10)
            st.client_id = bytes(buf[b + 14:end])
        elif not st.records:
            raise FormatError("session does not start with a header")
        elif kind == _R_SUB:
            f = bytes(buf[b + 5:end])
            st.subs = [s for s in st.subs if s[0] != f]
            st.subs.append((f, buf[b + 4], int.from_bytes(bytes(buf[b:b + 4]), "big")))
        elif kind == _R_OUT_PUB:
            last = u16(buf, b)
            _drop(st.out, out, last)
            ent = [last, bytes(buf[b + 2:end])]
            st.out.append(ent)
            out[last] = ent
        elif kind == _R_OUT_ACKED:
            for q in range(b, end - 1, 2):
                _drop(st.out, out, u16(buf, q))
        elif kind == _R_OUT_REL:
            pid = u16(buf, b)
            ent = out.get(pid)
            if ent is None:
                ent = out[pid] = [pid, None]
                st.out.append(ent)
            ent[1] = None
        elif kind == _R_IN_QOS2:
            pid = u16(buf, b)
            if pid not in st.in_qos2:
                st.in_qos2.append(pid)
        elif kind == _R_IN_REL:
            for q in range(b, end - 1, 2):
                pid = u16(buf, q)
                if pid in st.in_qos2:
                    st.in_qos2.remove(pid)
        st.records += 1              # (any other type: a newer writer's, skipped)
        p = end + 4
    if not st.records:
        raise FormatError("empty session")
    st.next_pid = last
    return st


def _record_after(buf, p, n):
    # Is there a whole record with a good CRC past p? (boot only)
    while p + 7 <= n:
        ln = u16(buf, p + 1)
        if 1 <= buf[p] <= _R_SUB and p + ln + 7 <= n and crc.check(buf, p, ln + 3):
            return True
        p += 1
    return False


def _drop(lst, index, pid):
    ent = index.pop(pid, None)
    if ent is not None:
        lst.remove(ent)


