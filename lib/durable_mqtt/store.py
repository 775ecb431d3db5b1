# Session state <-> bytes. The byte format is documented in
# docs/session-format.md; a host-side decoder is tools/session_inspect.py.
#
# A state is a stream of records. A full state (what save_session() returns,
# and every checkpoint a backend holds) starts with MAGIC and a HEADER record;
# changes are then appended as further records. Every record carries a CRC-32;
# a bad CRC ends the stream at the last good record (a torn append), an
# unknown record type is skipped (a newer writer), a bad header means a
# foreign or corrupt state.
#
# Backends (filestore.FileStore, ring.RingStore) store the bytes and know
# nothing of MQTT. Durability order (MQTT client side):
#   OUT_PUB before the PUBLISH is sent, OUT_REL before the PUBREL is sent,
#   IN_QOS2 before the PUBREC is sent, IN_REL before the PUBCOMP is sent.
#   OUT_ACKED is lazy: acknowledgements ride on the next append (or a flush
#   at disconnect / checkpoint). Losing one at a power cut only means the
#   message is resent with DUP=1 after the reboot, which QoS 1 allows and
#   QoS 2 absorbs (a PUBREL for an id the broker forgot is answered PUBCOMP).
from array import array
import time
import micropython
from micropython import const

from . import crc
from .memcopy import copy
from .codec import put_u16, get_u16, get_u32
from .errors import StoreFull

MAGIC = b"DMQS"
FORMAT = const(1)        # format version this code writes
_MAGIC_LEN = const(5)    # MAGIC + format version byte

R_HEADER = const(0x01)   # proto u8, flags u8, expiry u32, saved_min u32, next_pid u16, id_len u16, id
R_OUT_PUB = const(0x02)  # pid u16, PUBLISH packet as first sent (DUP 0)
R_OUT_ACKED = const(0x03)  # pid u16 * n: completed (PUBACK, PUBCOMP, refusal >= 0x80)
R_OUT_REL = const(0x04)  # pid u16: PUBREC received, PUBREL owed
R_IN_QOS2 = const(0x05)  # pid u16: incoming QoS 2 delivered, awaiting PUBREL
R_IN_REL = const(0x06)   # pid u16 * n: PUBREL received, id released
R_SUB = const(0x07)      # sub_id u32, options u8, topic filter
_REC_OVERHEAD = const(7)  # type u8 + length u16 + crc32

HF_ASSIGNED_ID = const(0x01)   # header flag: the client id was assigned by the broker
HF_OFFLINE = const(0x02)       # header flag: written at DISCONNECT (saved-at = the broker's expiry start)


class FormatError(ValueError):
    pass


class SessionStore:
    """Writes session changes to a backend as records. `stage_size` bounds
    the largest record batch (one OUT_PUB plus pending acknowledgements).

    `owner` is the client whose state a checkpoint writes. Every caller
    changes the state in RAM first and logs the change second, so when the
    backend asks for compaction (or is full) a checkpoint of the RAM state
    replaces the append: it already contains the change.

    Batched mode (batch_ms > 0): OUT_PUB records collect in the stage and
    reach flash together, when batch_ms has passed since the first of them,
    when the stage is full, or with the next synchronous record (OUT_REL,
    IN_QOS2, IN_REL stay synchronous: batching them would break QoS 2).
    The loss window is docs/sessions.md's: messages accepted in the last
    batch_ms that the broker had not received by the power cut."""

    def __init__(self, backend, stage_size, max_acks, owner, batch_ms=0):
        self.backend = backend
        self.owner = owner
        self.batch_ms = batch_ms
        self.fill = 0            # bytes of batched records waiting in the stage
        self.batch_t0 = 0
        self.max_record = 0      # largest OUT_PUB record seen (batch room check)
        self._sink = backend.write_checkpoint     # bound once: binding allocates
        self.stage = bytearray(stage_size)
        self.acks = array("H", bytes(2 * max_acks))
        self.nacks = 0
        self.appends = 0
        self.checkpoints = 0
        self.dirty = False       # state changed since the last checkpoint (subs, header)

    # ------------------------------------------------------------ records
    @micropython.native
    def _acks_into(self, pos):  # noalloc
        n = self.nacks
        if not n:
            return pos
        st = self.stage
        st[pos] = R_OUT_ACKED
        put_u16(st, pos + 1, 2 * n)
        p = pos + 3
        for k in range(n):
            p = put_u16(st, p, self.acks[k])
        crc.put(st, pos, p - pos)
        return p + 4          # (nacks is cleared once the write succeeded)

    @micropython.native
    def _pid_record(self, kind, pid):  # noalloc
        st = self.stage
        f = self.fill
        p = self._acks_into(f)
        st[p] = kind
        put_u16(st, p + 1, 2)
        put_u16(st, p + 3, pid)
        crc.put(st, p, 5)
        self._append(p + 9)              # with any batched records before it

    @micropython.native
    def _append(self, n):  # noalloc (ring); a file checkpoint opens a file
        b = self.backend
        if n > b.max_append or b.needs_checkpoint():
            self.checkpoint(self.owner)
            return
        try:
            b.append(self.stage, n)
        except StoreFull:
            # Compacting frees the space of everything acknowledged; if the
            # live state itself does not fit, this raises StoreFull too and
            # the caller refuses the change.
            self.checkpoint(self.owner)
            return
        self.fill = 0
        self.nacks = 0
        self.appends += 1

    @micropython.native
    def out_publish(self, arena, off, n, pid):  # noalloc
        """Accepted QoS 1/2 message; on flash before it is sent (in batched
        mode: within batch_ms)."""
        st = self.stage
        f = self.fill
        if f and f + 2 * n + 32 + 2 * self.nacks > len(st):
            self.flush()                  # no room for this record in the batch
            f = 0
        p = self._acks_into(f)
        st[p] = R_OUT_PUB
        put_u16(st, p + 1, n + 2)
        put_u16(st, p + 3, pid)
        copy(st, p + 5, arena, off, n)
        crc.put(st, p, n + 5)
        if self.batch_ms:
            if not f:
                self.batch_t0 = time.ticks_ms()
            self.nacks = 0        # they are in the batch now
            self.fill = p + n + 9
            return
        self._append(p + n + 9)   # refused (full, I/O): acks stay pending

    def out_acked(self, pid):  # noalloc
        if self.nacks >= len(self.acks):
            self.flush()
        self.acks[self.nacks] = pid
        self.nacks += 1

    def out_rel(self, pid):  # noalloc
        self._pid_record(R_OUT_REL, pid)

    def in_qos2(self, pid):  # noalloc
        self._pid_record(R_IN_QOS2, pid)

    def in_rel(self, pid):  # noalloc
        self._pid_record(R_IN_REL, pid)

    def flush(self):  # noalloc
        """Write batched records and pending acknowledgements now (idle,
        disconnect, flush())."""
        if self.nacks or self.fill:
            self._append(self._acks_into(self.fill))

    def tick(self):  # noalloc
        """Batched mode: write the batch once batch_ms have passed."""
        if self.fill and time.ticks_diff(time.ticks_ms(), self.batch_t0) >= self.batch_ms:
            self.flush()

    def needs_checkpoint(self):
        return self.dirty or self.backend.needs_checkpoint()

    # ------------------------------------------------------------ checkpoints
    def checkpoint(self, c):
        """Write the whole state of client `c` as the backend's new base."""
        b = self.backend
        # The stage is scratch for the checkpoint: batched records in it are
        # overwritten, but the RAM state holds them (this or the next
        # checkpoint writes them).
        self.fill = 0
        b.begin_checkpoint()
        write_state(c, self.stage, self._sink)
        b.end_checkpoint()
        self.nacks = 0
        self.dirty = False
        self.checkpoints += 1


# ---------------------------------------------------------------- full state

def write_state(c, st, sink):
    """Stream the full state of client `c` as records through
    sink(buf, n), one record (or the magic) per call, using `st` as scratch."""
    st[0:4] = MAGIC
    st[4] = FORMAT
    sink(st, _MAGIC_LEN)
    cid = c._cid
    st[0] = R_HEADER
    n = 14 + len(cid)
    put_u16(st, 1, n)
    st[3] = c._version
    st[4] = (HF_ASSIGNED_ID if c._cid_assigned else 0) | (HF_OFFLINE if c._saving_offline else 0)
    st[5:9] = c._expiry_bytes
    saved = c._wall_minutes()
    put_u16(st, 9, saved >> 16)
    put_u16(st, 11, saved & 0xFFFF)
    put_u16(st, 13, c._pids.last)
    put_u16(st, 15, len(cid))
    st[17:17 + len(cid)] = cid
    crc.put(st, 0, n + 3)
    sink(st, n + 7)
    subs = c._subs
    for k in range(len(subs)):            # (a for-in over a list allocates an iterator)
        f, opts, sid = subs[k]
        n = 5 + len(f)
        st[0] = R_SUB
        put_u16(st, 1, n)
        put_u16(st, 3, sid >> 16)
        put_u16(st, 5, sid & 0xFFFF)
        st[7] = opts
        st[8:8 + len(f)] = f
        crc.put(st, 0, n + 3)
        sink(st, n + 7)
    o = c._out
    for k in range(o.count):
        i = o.index(k)
        s = o.state[i] & 0x0F
        if not o.pid[i] or not s:
            continue                      # QoS 0 and holes are not session state
        if s == 3:                        # RELEASE
            _pid_rec(st, R_OUT_REL, o.pid[i])
            sink(st, 9)
        else:
            n = o.len[i]
            if n + 9 > len(st):
                raise ValueError("a stored packet of %d bytes does not fit buf_size" % n)
            st[0] = R_OUT_PUB
            put_u16(st, 1, n + 2)
            put_u16(st, 3, o.pid[i])
            copy(st, 5, o.arena, o.off[i], n)
            crc.put(st, 0, n + 5)
            sink(st, n + 9)
    r = c._rx2
    for k in range(r.n):
        _pid_rec(st, R_IN_QOS2, r.ids[k])
        sink(st, 9)


def _pid_rec(st, kind, pid):
    st[0] = kind
    put_u16(st, 1, 2)
    put_u16(st, 3, pid)
    crc.put(st, 0, 5)


class State:
    """A state read back from bytes (boot-time; allocates freely)."""

    def __init__(self):
        self.version = 0
        self.flags = 0
        self.saved_offline = False   # written at DISCONNECT (HF_OFFLINE)
        self.expiry = 0
        self.saved_min = 0
        self.next_pid = 0
        self.client_id = b""
        self.subs = []           # [(filter bytes, options, sub_id)]
        self.out = []            # [[pid, packet bytes or None (= PUBREL owed)]] in send order
        self.in_qos2 = []        # [pid]
        self.records = 0
        self.torn = False        # stream ended at a bad record (a torn append)
        self.dropped = 0         # bytes after that record
        self.intact_after = False  # a valid record follows the damage (not just a torn append)
        self.format = FORMAT


def parse_state(data):
    """Bytes -> State. Raises FormatError when the bytes are not a state
    (no magic, unknown future format, bad header); a damaged record after
    a good header only ends the stream there (st.torn)."""
    n = len(data)
    if n < _MAGIC_LEN or bytes(data[0:4]) != MAGIC:
        raise FormatError("not a durable_mqtt session state (no magic)")
    if data[4] > FORMAT or data[4] == 0:
        raise FormatError("session format version %d is newer than this library reads (%d)" % (data[4], FORMAT))
    buf = data if isinstance(data, (bytearray, memoryview)) else bytearray(data)
    st = State()
    st.format = buf[4]
    p = _MAGIC_LEN
    last_pid = 0
    out_index = {}
    while p < n:
        if p + 3 > n:
            st.torn = True
            break
        kind = buf[p]
        ln = get_u16(buf, p + 1)
        end = p + 3 + ln
        if end + 4 > n or not crc.check(buf, p, ln + 3):
            if not st.records:
                raise FormatError("session header damaged")
            st.torn = True
            st.dropped = n - p
            st.intact_after = _valid_record_after(buf, p + 1, n)
            break
        b = p + 3
        if st.records == 0 and kind != R_HEADER:
            raise FormatError("session state does not start with a header")
        if kind == R_HEADER:
            if ln < 14 or st.records:
                raise FormatError("bad session header")
            st.version = buf[b]
            st.flags = buf[b + 1]
            st.saved_offline = bool(st.flags & HF_OFFLINE)
            st.expiry = get_u32(buf, b + 2)
            st.saved_min = get_u32(buf, b + 6)
            st.next_pid = last_pid = get_u16(buf, b + 10)
            idl = get_u16(buf, b + 12)
            if 14 + idl != ln:
                raise FormatError("bad session header length")
            st.client_id = bytes(buf[b + 14:b + 14 + idl])
            if st.version not in (4, 5):
                raise FormatError("bad protocol version %d in session header" % st.version)
        elif kind == R_SUB:
            sid = get_u32(buf, b)
            f = bytes(buf[b + 5:end])
            st.subs = [s for s in st.subs if s[0] != f]
            st.subs.append((f, buf[b + 4], sid))
        elif kind == R_OUT_PUB:
            pid = get_u16(buf, b)
            ent = [pid, bytes(buf[b + 2:end])]
            _drop(st.out, out_index, pid)
            st.out.append(ent)
            out_index[pid] = ent
            last_pid = pid
        elif kind == R_OUT_ACKED:
            for q in range(b, end - 1, 2):
                _drop(st.out, out_index, get_u16(buf, q))
        elif kind == R_OUT_REL:
            pid = get_u16(buf, b)
            ent = out_index.get(pid)
            if ent is None:
                ent = [pid, None]
                st.out.append(ent)
                out_index[pid] = ent
            ent[1] = None
        elif kind == R_IN_QOS2:
            pid = get_u16(buf, b)
            if pid not in st.in_qos2:
                st.in_qos2.append(pid)
        elif kind == R_IN_REL:
            for q in range(b, end - 1, 2):
                pid = get_u16(buf, q)
                if pid in st.in_qos2:
                    st.in_qos2.remove(pid)
        # any other record type: written by a newer version, skipped
        st.records += 1
        p = end + 4
    if not st.records:
        raise FormatError("empty session state")
    st.next_pid = last_pid
    return st


def _valid_record_after(buf, p, n):
    # Boot-time only: is there a whole record with a good CRC past p?
    while p + 7 <= n:
        ln = get_u16(buf, p + 1)
        if 1 <= buf[p] <= R_SUB and p + ln + 7 <= n and crc.check(buf, p, ln + 3):
            return True
        p += 1
    return False


def _drop(lst, index, pid):
    ent = index.pop(pid, None)
    if ent is not None:
        lst.remove(ent)


def state_bytes(c):
    """The full state of client `c` as bytes (save_session())."""
    out = bytearray()

    def sink(buf, n):
        out.extend(memoryview(buf)[:n])

    write_state(c, bytearray(c._stage_size), sink)
    return bytes(out)
