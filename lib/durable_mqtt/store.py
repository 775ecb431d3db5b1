# The session on flash as a log of records (docs/session-format.md; decode
# one with tools/session_inspect.py). This module knows the record format
# and the order of writes; a backend stores bytes and knows nothing of MQTT:
# the raw flash ring (ring.py) or a log file (filelog.py).
#
# A state is MAGIC, a HEADER record, then records. Every record carries a
# CRC-32; a bad CRC ends the stream at the last good record (a torn write),
# an unknown record type is skipped (a newer writer), a bad header means a
# foreign or corrupt state. A checkpoint writes the whole state anew; later
# changes are appended to it.
#
# Durability order: OUT_PUB before its PUBLISH is sent, OUT_REL before the
# PUBREL, IN_QOS2 before the PUBREC, IN_REL before the PUBCOMP. OUT_ACKED is
# lazy: acknowledgements ride on the next record, and are written at once
# when nothing is left in flight (so a program that ends after its last
# acknowledgement resends nothing at the next boot). A lost one only means a
# resend with DUP=1, which QoS 1 allows and QoS 2 absorbs.
from array import array
from micropython import const
import sys
import time

from . import crc
from .codec import put_u16, u16
from .errors import StoreFull
from .session import OUT_PUB, OUT_REL, IN_QOS2, IN_REL

MAGIC = b"DMQS"
FORMAT = const(1)          # the format version this code writes

R_HEADER = const(0x01)     # proto u8, flags u8, expiry u32, saved_min u32, next_pid u16, id_len u16, id
R_OUT_PUB = const(0x02)    # pid u16, the PUBLISH packet
R_OUT_ACKED = const(0x03)  # pid u16 * n: completed (PUBACK, PUBCOMP, refusal, expiry)
R_OUT_REL = const(0x04)    # pid u16: PUBREC received, PUBREL owed
R_IN_QOS2 = const(0x05)    # pid u16: incoming QoS 2 delivered, awaiting PUBREL
R_IN_REL = const(0x06)     # pid u16 * n: PUBREL received, id released
R_SUB = const(0x07)        # sub_id u32, options u8, topic filter

HF_ASSIGNED_ID = const(0x01)   # the client id was assigned by the broker
HF_OFFLINE = const(0x02)       # written at DISCONNECT: saved_min starts the broker's expiry clock


class FormatError(ValueError):
    pass


class LogJournal:
    """The session engine `e` logged as records to `backend`. batch_ms > 0:
    OUT_PUB records are written together within batch_ms (or with the next
    synchronous record), the loss window of docs/sessions.md."""

    def __init__(self, backend, e, batch_ms=0, batch_max=16):
        self.b = backend
        self.e = e
        self.batch_ms = batch_ms
        self.batch = array("H", bytes(2 * batch_max))   # OUT_PUB records not yet written
        self.nbatch = 0
        self.batch_t0 = 0
        self.acks = bytearray(7 + 2 * e.nslots)        # the OUT_ACKED record being gathered
        self.nacks = 0
        self.h = bytearray(20)                          # a record's header, or a whole small one
        self.s = bytearray(4)                           # CRC register
        self.appends = 0
        self.checkpoints = 0
        self._exp = None                                # e.expiry as 4 bytes, cached

    def expiry_bytes(self):  # noalloc while the expiry is unchanged
        x = self.e.expiry
        if x is not self._exp:
            self._exp = x
            self._exp_b = x.to_bytes(4, "big")
        return self._exp_b

    # ------------------------------------------------------------ one change
    def put(self):  # noalloc (ring; a file backend may open a file)
        """Write the change the engine just made (e.rec) before its packet goes out."""
        e = self.e
        k = e.rec
        e.rec = 0
        if k == OUT_PUB and self.batch_ms:
            if self.nbatch >= len(self.batch):
                self.flush()
            if not self.nbatch:
                self.batch_t0 = time.ticks_ms()
            self.batch[self.nbatch] = e.pid[e.rec_slot]
            self.nbatch += 1
            return
        if not self._room(e.len[e.rec_slot] + 9 if k == OUT_PUB else 9):
            self.checkpoint()                 # it holds the change: the RAM state has it
            return
        self._batched()
        if k == OUT_PUB:
            self._pub(e.rec_slot)
        else:
            self._pid(k, e.rec_pid)
        self._sync()

    def acked(self, pid):  # noalloc
        """A QoS 1/2 message left the session: logged lazily."""
        if self.nacks >= self.e.nslots:
            self.flush()
        put_u16(self.acks, 3 + 2 * self.nacks, pid)
        self.nacks += 1

    def flush(self):  # noalloc
        """Write batched records and acknowledgements now."""
        if self.nacks or self.nbatch:
            if not self._room(0):
                self.checkpoint()
                return
            self._batched()
            self._sync()

    def tick(self, now):  # noalloc
        """Called from the front end's loop: batches and acknowledgements
        that are due reach flash."""
        if self.nbatch and time.ticks_diff(now, self.batch_t0) >= self.batch_ms:
            self.flush()
        elif self.nacks and not self.e.held:
            self.flush()

    def _room(self, n):  # noalloc
        # Can this append go to the backend, or must a checkpoint replace it?
        b = self.b
        return not b.needs_checkpoint() and n + 2 * self.nacks + 7 <= b.max_append

    def _batched(self):  # noalloc
        # The pending acknowledgements and batched OUT_PUB, into the open append.
        if self.nacks:
            a = self.acks
            a[0] = R_OUT_ACKED
            put_u16(a, 1, 2 * self.nacks)
            crc.seal(a, 0, 3 + 2 * self.nacks)
            self.b.write(a, 0, 7 + 2 * self.nacks)
        e = self.e
        for k in range(self.nbatch):
            i = e.find(self.batch[k], 0)
            if i >= 0 and e.len[i]:
                self._pub(i)

    def _sync(self):  # noalloc
        try:
            self.b.sync()
        except StoreFull:
            # Compacting frees what is acknowledged; if the live state does
            # not fit either, this raises StoreFull for the caller.
            self.checkpoint()
            return
        self.nacks = 0
        self.nbatch = 0
        self.appends += 1

    def _pub(self, i):  # noalloc
        e = self.e
        n = e.len[i]
        h = self.h
        h[0] = R_OUT_PUB
        put_u16(h, 1, n + 2)
        put_u16(h, 3, e.pid[i])
        self._part(h, 0, 5, True)
        self._part(e.arena, e.off[i], n, False)
        crc.put(self.s, h, 0)
        self.b.write(h, 0, 4)

    def _part(self, buf, off, n, first):  # noalloc
        if first:
            crc.start(self.s)
        crc.add(self.s, buf, off, n)
        self.b.write(buf, off, n)

    def _pid(self, kind, pid):  # noalloc
        h = self.h
        h[0] = kind
        put_u16(h, 1, 2)
        put_u16(h, 3, pid)
        crc.seal(h, 0, 5)
        self.b.write(h, 0, 9)

    # ------------------------------------------------------------ the whole state
    def checkpoint(self, offline=False):
        """Write the whole state as the backend's new base (compaction)."""
        b = self.b
        b.begin()
        write_state(self.e, self, offline)
        b.end()
        self.nacks = 0
        self.nbatch = 0
        self.checkpoints += 1

    def erase(self):
        self.nacks = 0
        self.nbatch = 0
        self.b.erase()

    def set_aside(self):
        # An unusable state is kept for inspection where the backend can.
        self.nacks = 0
        getattr(self.b, "set_aside", self.b.erase)()

    def close(self):
        self.b.close()

    def stats(self):
        return self.b.stats()

    def load(self):
        """The stored State, or None. Raises FormatError for a state that is
        not this library's (the caller sets it aside)."""
        data = self.b.load()
        return parse(data) if data else None

    def fits(self, n):  # noalloc
        """Would the state, grown by a record of n bytes, fit one checkpoint?"""
        e = self.e
        size = (30 + len(e.cid) + 16 * len(e.subs) + e.subs_len + e.nbytes + 9 * e.count
                + 9 * e.rx2_n + n)
        return size <= self.b.capacity


def open_journal(where, e, prog_size, batch_ms, event):
    """The journal for session_file `where` (a path or a block device), with
    the stored state restored into engine e. An unusable state is set aside
    and reported through event(name, info)."""
    if isinstance(where, str):
        from .filelog import FileLog
        b = FileLog(where)
    else:
        from .ring import RingStore
        if prog_size is None and sys.platform == "rp2":
            prog_size = 256           # rp2.Flash programs whole 256-byte pages
        b = RingStore(where, prog_size=prog_size, max_append=e.buf_size + 16 + 2 * e.nslots)
    j = LogJournal(b, e, batch_ms, e.qos12)
    try:
        st = j.load()
        if st:
            if st.intact_after:       # more than a torn last write: records lost
                event("damaged", {"dropped_bytes": st.dropped})
            e.restore(st, time.ticks_ms(), wall_minutes())
            if e.expired:
                event("expired", {"saved_min": st.saved_min, "expiry": st.expiry})
            j.checkpoint()            # at once: drops a torn tail and the acks it replays
    except ValueError as x:           # FormatError, or a state that is not ours
        j.set_aside()
        event("discarded", {"reason": str(x)})
    return j


def write_state(e, j, offline):
    """Stream engine e's whole state as records through journal j."""
    h = j.h
    h[0:4] = MAGIC
    h[4] = FORMAT
    j.b.write(h, 0, 5)
    cid = e.cid
    h[0] = R_HEADER
    put_u16(h, 1, 14 + len(cid))
    h[3] = 5 if e.v5 else 4
    h[4] = (HF_ASSIGNED_ID if e.cid_assigned else 0) | (HF_OFFLINE if offline else 0)
    h[5:9] = j.expiry_bytes()
    # The time is kept only for a state saved at DISCONNECT, the one case
    # the expiry rule judges (session.py); reading it allocates on some ports.
    m = wall_minutes() if offline else 0
    put_u16(h, 9, m >> 16)
    put_u16(h, 11, m & 0xFFFF)
    put_u16(h, 13, e.last_pid)
    put_u16(h, 15, len(cid))
    j._part(h, 0, 17, True)
    j._part(cid, 0, len(cid), False)
    crc.put(j.s, h, 0)
    j.b.write(h, 0, 4)
    for k in range(len(e.subs)):         # (a for-in over a list allocates an iterator)
        f, opts, sid = e.subs[k]
        h[0] = R_SUB
        put_u16(h, 1, 5 + len(f))
        put_u16(h, 3, sid >> 16)
        put_u16(h, 5, sid & 0xFFFF)
        h[7] = opts
        j._part(h, 0, 8, True)
        j._part(f, 0, len(f), False)
        crc.put(j.s, h, 0)
        j.b.write(h, 0, 4)
    for k in range(e.count):
        s = e.slot(k)
        if s == 1:
            j._pub(e.index(k))
        elif s == 3:
            j._pid(R_OUT_REL, e.pid[e.index(k)])
    for k in range(e.rx2_n):
        j._pid(R_IN_QOS2, e.rx2[k])


_EPOCH_2000 = const(946684800)


def wall_minutes():
    """Minutes since 2000-01-01 UTC from the board's clock, 0 when the clock
    is not set (before 2020). Below 2**30: no big integer on a board."""
    t = time.time()
    if time.gmtime(0)[0] != 2000:
        t -= _EPOCH_2000
    return int(t) // 60 if t > 631152000 else 0


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
    if n < 5 or bytes(data[0:4]) != MAGIC:
        raise FormatError("not a durable_mqtt session (no magic)")
    if not 0 < data[4] <= FORMAT:
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
        if kind == R_HEADER:
            if ln < 14 or st.records or 14 + u16(buf, b + 12) != ln or buf[b] not in (4, 5):
                raise FormatError("bad session header")
            st.version = buf[b]
            st.flags = buf[b + 1]
            st.assigned = bool(buf[b + 1] & HF_ASSIGNED_ID)
            st.offline = bool(buf[b + 1] & HF_OFFLINE)
            st.expiry = int.from_bytes(bytes(buf[b + 2:b + 6]), "big")
            st.saved_min = int.from_bytes(bytes(buf[b + 6:b + 10]), "big")
            st.next_pid = last = u16(buf, b + 10)
            st.client_id = bytes(buf[b + 14:end])
        elif not st.records:
            raise FormatError("session does not start with a header")
        elif kind == R_SUB:
            f = bytes(buf[b + 5:end])
            st.subs = [s for s in st.subs if s[0] != f]
            st.subs.append((f, buf[b + 4], int.from_bytes(bytes(buf[b:b + 4]), "big")))
        elif kind == R_OUT_PUB:
            last = u16(buf, b)
            _drop(st.out, out, last)
            ent = [last, bytes(buf[b + 2:end])]
            st.out.append(ent)
            out[last] = ent
        elif kind == R_OUT_ACKED:
            for q in range(b, end - 1, 2):
                _drop(st.out, out, u16(buf, q))
        elif kind == R_OUT_REL:
            pid = u16(buf, b)
            ent = out.get(pid)
            if ent is None:
                ent = out[pid] = [pid, None]
                st.out.append(ent)
            ent[1] = None
        elif kind == R_IN_QOS2:
            pid = u16(buf, b)
            if pid not in st.in_qos2:
                st.in_qos2.append(pid)
        elif kind == R_IN_REL:
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
        if 1 <= buf[p] <= R_SUB and p + ln + 7 <= n and crc.check(buf, p, ln + 3):
            return True
        p += 1
    return False


def _drop(lst, index, pid):
    ent = index.pop(pid, None)
    if ent is not None:
        lst.remove(ent)


class Bytes:
    """A backend that collects a checkpoint in RAM: save_session()."""

    def __init__(self):
        self.out = bytearray()

    def write(self, buf, off, n):
        self.out.extend(buf[off:off + n])


def state_bytes(e):
    """The whole state of engine e as bytes (save_session())."""
    j = LogJournal(Bytes(), e)
    write_state(e, j, False)
    return bytes(j.b.out)
