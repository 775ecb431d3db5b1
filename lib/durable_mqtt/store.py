# The session on flash as a log of records (docs/session-format.md; decode
# one with tools/session_inspect.py). This module knows the record format
# and the order of writes; reading it back is load.py's (boot only). A
# backend stores bytes and knows nothing of MQTT: the raw flash ring
# (ring.py) or a log file (filelog.py).
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
import time

from . import crc
from .codec import put_u16
from .errors import StoreFull
from .records import MAGIC, FORMAT, MAX_PACKET, header, sub, fits

# Record types (docs/session-format.md; session.py uses the same numbers).
R_OUT_PUB = const(0x02)    # pid u16, the PUBLISH packet
R_OUT_ACKED = const(0x03)  # pid u16 * n: completed (PUBACK, PUBCOMP, refusal, expiry)
R_OUT_REL = const(0x04)    # pid u16: PUBREC received, PUBREL owed
R_IN_QOS2 = const(0x05)    # pid u16: incoming QoS 2 delivered, awaiting PUBREL
R_IN_REL = const(0x06)     # pid u16 * n: PUBREL received, id released
_ERR_FULL = const(-7)      # errors.ERR_FULL


class LogJournal:
    # The session engine `e` logged as records to `backend`. batch_ms > 0:
    # OUT_PUB records are written together within batch_ms (or with the next
    # synchronous record), the loss window of docs/sessions.md.

    refused = False           # the last checkpoint was refused midway (checkpoint())
    behind = False            # flash lacks acknowledgements RAM has: the next write is a checkpoint
    error = None              # the write error acked() met, for tick() to raise

    def __init__(self, backend, e, batch_ms=0, batch_max=16, batch_bytes=None):
        self.b = backend
        self.e = e
        self.batch_ms = batch_ms
        if batch_ms:
            from .batch import due      # (MQTTClient.due: waits cut to the batch)
            self.due = due
        self.batch = array("H", bytes(2 * batch_max))   # OUT_PUB records not yet written
        self.nbatch = 0
        self.nbytes = 0                                 # their bytes: they go out in one append
        most = getattr(backend, "max_append", 0x3FFFFFFF)
        self.batch_bytes = min(batch_bytes or most, most)
        self.batch_t0 = 0
        self.acks = bytearray(7 + 2 * e.nslots)        # the OUT_ACKED record being gathered
        self.nacks = 0
        self.h = bytearray(20)                          # a record's header, or a whole small one
        self.s = bytearray(4)                           # CRC register
        self.appends = 0
        self.checkpoints = 0
        self._exp = None                                # e.expiry as 4 bytes, cached
        self.lead = True                                # the next OUT_PUB is not batched (put())

    def expiry_bytes(self):  # noalloc while the expiry is unchanged
        x = self.e.expiry
        if x is not self._exp:
            self._exp = x
            self._exp_b = x.to_bytes(4, "big")
        return self._exp_b

    # ------------------------------------------------------------ one change
    def put(self):  # noalloc (ring; a file backend may open a file)
        # Write the change the engine just made before its packet goes out:
        # e.rec is the record type (session.py uses the same numbers).
        e = self.e
        k = e.rec
        e.rec = 0
        # Batched, unless the id counter a boot would find is behind (lead:
        # after a boot, or a checkpoint of a state that holds messages): a
        # boot counts ids from the newest OUT_PUB on flash (from the
        # checkpoint's header only without one) and starts a batch's worth
        # past it (load.py), so an id may go out unrecorded only within a
        # batch of one recorded.
        if k == R_OUT_PUB and self.batch_ms and not self.lead:
            n = e.len[e.rec_slot] + 9
            if self.nbatch >= len(self.batch) or self.nbytes + n + 2 * self.nacks + 7 > self.batch_bytes:
                self.flush()              # the batch would not fit one append
            if not self.nbatch:
                self.batch_t0 = time.ticks_ms()
            self.batch[self.nbatch] = e.pid[e.rec_slot]
            self.nbatch += 1
            self.nbytes += n
            if time.ticks_diff(time.ticks_ms(), self.batch_t0) >= self.batch_ms:
                self.flush()              # the oldest has waited its time (no tick while offline)
            return
        if self.behind or not self._room(e.len[e.rec_slot] + 9 if k == R_OUT_PUB else 9):
            self.checkpoint()                 # it holds the change: the RAM state has it
            return
        self._batched()
        if k == R_OUT_PUB:
            self._pub(e.rec_slot)
        else:
            self._pid(k, e.rec_pid)
        self._sync()
        if k == R_OUT_PUB:
            self.lead = False

    def acked(self, pid):  # noalloc
        # A QoS 1/2 message left the session: logged lazily (behind: by
        # the checkpoint that is the next write).
        if self.behind:
            return
        if 2 * self.nacks + 7 >= len(self.acks):   # (the engine's outbox may have grown since: restore.py)
            self._full()
            if self.behind:
                return
        put_u16(self.acks, 3 + 2 * self.nacks, pid)
        self.nacks += 1

    def _full(self):
        # The acknowledgements gathered fill their record: written now,
        # inside the read that brought the PUBACK or PUBCOMP. A write error
        # here is kept for tick(), which the front end calls after the
        # read: raised here, it closed the link over a flash fault. Until
        # a write gets through, RAM alone has the acknowledgements, and
        # the next write is a checkpoint of the whole state (behind; nacks
        # stays above 0, so the front ends call tick() for it). Meanwhile
        # a boot resends what was acknowledged, as an ack not yet written
        # always could (QoS 1 allows it; a QoS 2 one gets its PUBREL).
        try:
            self.flush()
        except OSError as x:
            self.behind = True
            self.error = x

    def flush(self):  # noalloc
        # Write batched records and acknowledgements now.
        if self.nacks or self.nbatch:
            if self.behind or not self._room(0):
                self.checkpoint()
                return
            self._batched()
            self._sync()

    def tick(self, now):  # noalloc
        # Called from the front end's loop: batches and acknowledgements
        # that are due reach flash; a write error acked() kept is raised.
        x = self.error
        if x is not None:
            self.error = None
            raise x
        if self.behind or self.nbatch and time.ticks_diff(now, self.batch_t0) >= self.batch_ms:
            self.flush()
        elif self.nacks and not self.e.held:
            self.flush()

    def _room(self, n):  # noalloc
        # Can this append go to the backend, or must a checkpoint replace it?
        b = self.b
        return not b.needs_checkpoint() and n + self.nbytes + 2 * self.nacks + 7 <= b.max_append

    def _batched(self):  # noalloc
        # The pending acknowledgements and batched OUT_PUB, into the open append.
        if self.nacks:
            a = self.acks
            a[0] = R_OUT_ACKED
            put_u16(a, 1, 2 * self.nacks)
            crc.seal(a, 0, 3 + 2 * self.nacks)
            self.b.write(a, 0, 7 + 2 * self.nacks)
        # The newest id not written (acknowledged, or past PUBREC: its
        # OUT_REL went alone) leaves the counter a boot finds behind it:
        # the next OUT_PUB is then not batched (lead, put()).
        e = self.e
        for k in range(self.nbatch):
            i = e.find(self.batch[k], 0)
            self.lead = i < 0 or not e.len[i]
            if not self.lead:
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
        self.nbatch = self.nbytes = 0
        self.appends = (self.appends + 1) & 0x1FFFFFFF     # (a small int on a board: docs/api.md#stats)

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
    def checkpoint(self, offline=False, replaced=False):
        # Write the whole state as the backend's new base (compaction); a
        # state replaced (restore_session()) needs nothing more.
        b = self.b
        if self.refused and not self.fits(0):
            # After a checkpoint refused midway, the next are refused before
            # a byte is written until the state fits again: on the ring a
            # refused checkpoint's bytes stay inside the live span, which
            # budgets one such (a power cut's), and a state past capacity
            # tried again at every flush left the ring full for good.
            # (fits() overestimates a little: not used for the first try.)
            raise StoreFull(_ERR_FULL, "session state exceeds the store's capacity")
        b.begin()
        try:
            write_state(self.e, self, offline)
            b.end()
        except StoreFull:
            self.refused = True
            raise
        self.refused = self.behind = False
        self.error = None             # (what acked() met is over: flash has it all)
        self.nacks = 0
        self.nbatch = self.nbytes = 0
        self.lead = self.e.held       # (held: not the header's id, the newest OUT_PUB's counts)
        self.checkpoints += 1

    def erase(self):
        # (The journal forgets what it holds back once the erase got
        # through: a failed one leaves it behind, its next write a checkpoint.)
        self.b.erase()
        self.nacks = 0
        self.nbatch = self.nbytes = 0
        self.behind = False
        self.error = None

    def set_aside(self):
        # An unusable state is kept for inspection where the backend can.
        self.nacks = 0
        getattr(self.b, "set_aside", self.b.erase)()

    def close(self):
        self.b.close()

    def stats(self):
        return self.b.stats()

    def fits(self, n):  # noalloc while it fits
        # Refused, a file backend measures its room again (other files may
        # have made room since: a FileLog full at boot had capacity 0 for
        # good); a ring's is fixed by its partition: none to measure.
        return fits(self.e, n, self.b.capacity) or fits(self.e, n, getattr(self.b, "capacity_bytes", int)())


def write_state(e, j, offline):
    # Stream engine e's whole state as records through journal j.
    write_head(e, j, offline)
    for k in range(e.count):
        s = e.slot(k)
        if s == 1:
            j._pub(e.index(k))
        elif s == 3:
            j._pid(R_OUT_REL, e.pid[e.index(k)])
    for k in range(e.rx2_n):
        j._pid(R_IN_QOS2, e.rx2[k])


def write_head(e, j, offline):
    # MAGIC, the HEADER record and a SUB record per subscription.
    h = j.h
    h[0:4] = MAGIC
    h[4] = FORMAT
    j.b.write(h, 0, 5)
    header(e, h, j.expiry_bytes(), offline)
    j._part(h, 0, 17, True)
    j._part(e.cid, 0, len(e.cid), False)
    crc.put(j.s, h, 0)
    j.b.write(h, 0, 4)
    for k in range(len(e.subs)):         # (a for-in over a list allocates an iterator)
        f = sub(h, k, e)
        j._part(h, 0, 8, True)
        j._part(f, 0, len(f), False)
        crc.put(j.s, h, 0)
        j.b.write(h, 0, 4)


class Bytes:
    # A backend that collects a checkpoint in RAM: save_session().

    def __init__(self):
        self.out = bytearray()

    def write(self, buf, off, n):
        self.out.extend(buf[off:off + n])


def state_bytes(e):
    # The whole state of engine e as bytes (save_session()).
    for k in range(e.count):
        if e.len[e.index(k)] > MAX_PACKET:
            raise ValueError("a message of %d bytes is larger than a session record holds (%d)"
                             % (e.len[e.index(k)], MAX_PACKET))
    j = LogJournal(Bytes(), e)
    write_state(e, j, False)
    return bytes(j.b.out)
