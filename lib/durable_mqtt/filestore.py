# The session in a directory of small files on LittleFS, laid out for how
# LittleFS commits (docs/session-format.md#session-directory, flash-wear.md):
#
#   PATH           the session file: the tag (MAGIC, format 0) that says the
#                  session is in PATH.d; removed, so is the session
#   PATH.d/h       the header and subscriptions (MAGIC, HEADER, SUB records)
#   PATH.d/i0, i1  the incoming QoS 2 ids awaiting PUBREL: a sequence number
#                  (u32) and one IN_LIST record; written in turn, the newer
#                  intact one counts
#   PATH.d/0 ..    slot files: empty (free), or a sequence number (u32) and
#                  one OUT_PUB or OUT_REL record, its CRC covering the number
#
# A file no larger than LittleFS's inline limit (128 bytes on a stock ESP32
# mount, 512 on a stock RP2040 mount) lives in its directory's metadata log:
# rewriting it appends one commit there instead of copying a 4 KB block. So
# every change is one whole-file write (open "wb", write, close): accepting
# a message writes a free slot, a PUBREC writes the message's OUT_REL into
# another free slot (a newer sequence number; the OUT_PUB slot is then free),
# an incoming QoS 2 writes the older of i0/i1, a checkpoint writes "h" as
# h.tmp and renames it over "h". No write ever replaces the only copy of
# something still needed, so a cut anywhere leaves the old state or the
# new one on any file system, not only on LittleFS, whose commits are
# atomic anyway. An acknowledgement costs nothing at first: the slot is
# free to be overwritten by the next message, which makes the ack durable;
# slots acknowledged but not yet reused are emptied when nothing is in
# flight (tick), at flush(), disconnect() and checkpoints. The sequence
# numbers give the resend order; load.py reads it all back.
#
# Cost: a file object and its LittleFS cache per write, garbage after the
# write (make bench reports the bytes per message, per mount); a QoS 1
# message usually costs two writes, its slot and, once the window drains,
# the emptying. The log-file layout (filelog.py) allocates nothing per
# append but erases about one block per message; pass
# session_file=FileLog(path) to choose it.
from array import array
import gc
import time
from micropython import const

from . import crc
from .codec import put_u16
from .records import fits, raise_full

_R_OUT_PUB = const(2)
_R_OUT_REL = const(4)
_R_IN_LIST = const(8)        # pid u16 * n: the incoming QoS 2 ids, whole


class SlotJournal:
    # The journal (store.py's interface) of engine e in directory dir.
    tag = False             # the session file (dir less ".d") holds the tag (dirstate.tag())
    # The session file PATH when dir is PATH.d.d, a restore_session() whose
    # rename was refused (slotmove.replace(), load.py); else None: PATH.d.
    path = None
    # A late SUBACK / UNSUBACK changed the subscriptions (request.ack), which
    # only the header holds: a checkpoint after the read (tick()).
    behind = False

    def __init__(self, dir, e, batch_ms=0):
        self.dir = dir
        self.e = e
        self.batch_ms = batch_ms
        if batch_ms:
            from .batch import due      # (MQTTClient.due: waits cut to the batch)
            self.due = due
        n = e.qos12 + 1              # every message held, and one being replaced
        self.pid = array("H", bytes(2 * n))      # the message each slot holds (0: none)
        self.seq = array("i", bytes(4 * n))      # its sequence number
        self.stale = bytearray(n)                # acknowledged, not yet emptied on flash
        self.rel = bytearray(n)                  # holds an OUT_REL (PUBREC came)
        # After a PUBREC the message's OUT_PUB stays in its old slot until
        # that slot is emptied or reused: guard[s] = r + 1 for the slot r of
        # its OUT_REL, which must outlive it (blocked[r]): were r reused
        # first, a reboot would find the OUT_PUB alone and send the PUBLISH
        # again after its PUBREL, a second delivery.
        self.guard = array("H", bytes(2 * n))
        self.blocked = bytearray(n)
        self.made = 0                            # slot files that exist (0 .. made-1)
        self.next = 1                            # the next sequence number
        self.iseq = 0                            # that of the newer of i0 / i1
        self.batch = array("H", bytes(2 * n))    # batched mode: OUT_PUB not yet written
        self.nbatch = 0
        self.batch_t0 = 0
        self.nacks = 0                           # stale slots
        self.lead = True                         # the next OUT_PUB is not batched (store.py's put())
        self.h = bytearray(20)
        self.s = bytearray(4)
        self.appends = self.checkpoints = self.bytes_written = self.file_writes = 0
        from .dirstate import make_dir, capacity
        make_dir(dir)
        self.capacity = capacity(dir)

    # ------------------------------------------------------------ per message
    def put(self):
        # Write the change the engine just made (e.rec) before its packet
        # goes out.
        e = self.e
        k = e.rec
        e.rec = 0
        if k == _R_OUT_PUB:
            pid = e.pid[e.rec_slot]
            if self.batch_ms and (self.nbatch or not self.lead):
                if not self.nbatch:
                    self.batch_t0 = time.ticks_ms()
                self.batch[self.nbatch] = pid
                self.nbatch += 1
                # (lead: written at once, after those batched before it)
                if self.lead or self.nbatch == len(self.batch) or time.ticks_diff(time.ticks_ms(), self.batch_t0) >= self.batch_ms:
                    try:
                        self.flush()      # full, or the oldest has waited its time
                    except BaseException:
                        if self.slot_of(pid) < 0:
                            self.nbatch -= 1      # not written: refused (client.py takes it back)
                            raise
                        # (written: what failed is emptying a slot, tried again later)
                return
            self.stored(e.rec_slot)
            self.lead = False
            return
        # A QoS 2 record goes at once and takes the batch with it (sessions.md);
        # a message batched before its PUBREC is then written as its OUT_REL.
        if self.nbatch:
            self.flush()
        if k == _R_OUT_REL:
            s = self.slot_of(e.rec_pid)
            if s >= 0 and not self.rel[s]:
                self.released(s)
        else:                        # IN_QOS2, IN_REL: the whole table again
            self.write_ids()

    def stored(self, i):
        # Write the engine's slot i into a free slot file: its PUBLISH, or
        # its OUT_REL when it has no packet any more (PUBREC came).
        e = self.e
        pid = e.pid[i]
        s = self._free()
        if self.records() - self.stale[s] + 1 > e.qos12:
            # One record more than the outbox holds would make a reboot
            # refuse the whole session (load.py): acknowledged ones go
            # first (a full outbox: rare, so dirclear.py's).
            from .dirclear import make_room
            make_room(self, s)
        n = e.len[i]
        self._write(s, _R_OUT_PUB if n else _R_OUT_REL, pid, e.arena, e.off[i], n)

    def records(self):
        # Slots holding a record that a reboot would read: messages held,
        # and those acknowledged but not yet emptied.
        n = self.nacks
        for s in range(self.made):
            if self.pid[s]:
                n += 1
        return n

    def released(self, s):
        # PUBREC came for the message in slot s: its OUT_REL goes into a free
        # slot with the next sequence number (the reader takes the newer
        # record of an id; PUBRELs go out again in the order their PUBRECs
        # came, MQTT-4.6.0-4); slot s is then free. The OUT_PUB stays intact
        # until the OUT_REL is complete.
        pid = self.pid[s]
        r = self._free()
        self._write(r, _R_OUT_REL, pid, None, 0, 0)
        self.pid[s] = 0
        self.stale[s] = 1
        self.nacks += 1
        self.guard[s] = r + 1
        self.blocked[r] = 1

    def slot_of(self, pid):
        # The slot holding message pid (-1: none).
        for s in range(self.made):
            if self.pid[s] == pid:
                return s
        return -1

    def _free(self):
        # A slot to write a new message into: an acknowledged one (its
        # rewrite makes the ack durable), the OUT_PUB of a released message
        # first; else an empty one; else a new file. Never a blocked one.
        slot = -1
        for s in range(self.made):
            if not self.pid[s] and not self.blocked[s]:
                if self.guard[s]:
                    return s
                if self.stale[s] or slot < 0:
                    slot = s
        if slot < 0:
            slot = self.made          # (counted once written: _write())
        return slot

    def rewritten(self, s):
        # Slot s no longer holds what it held: a guard it kept is lifted.
        guard = self.guard[s]
        if guard:
            self.blocked[guard - 1] = 0
            self.guard[s] = 0
        if self.stale[s]:
            self.stale[s] = 0
            self.nacks -= 1

    def _write(self, s, kind, pid, buf, off, n):
        # Slot s := the next sequence number, record (type kind, pid,
        # buf[off:off+n]); one commit. Slot s holds message pid only once
        # the write succeeded: a write refused (StoreFull) leaves every
        # table as it was, else each refusal took a slot for good.
        h = self.h
        _put_seq(h, self.next)
        h[4] = kind
        put_u16(h, 5, n + 2)
        put_u16(h, 7, pid)
        crc.start(self.s)
        crc.add(self.s, h, 0, 9)
        if n:
            crc.add(self.s, buf, off, n)
        crc.put(self.s, h, 9)
        try:
            with open(self._path(s), "wb") as f:
                f.write(h, 0, 9)
                if n:
                    f.write(buf, off, n)
                f.write(h, 9, 4)
        except OSError as x:
            raise_full(x)
        self.rewritten(s)
        if s == self.made:
            self.made += 1
        self.pid[s] = pid
        self.seq[s] = self.next
        self.next = (self.next + 1) & 0x1FFFFFFF    # (modulo 2**29: session-format.md)
        self.rel[s] = kind == _R_OUT_REL
        self.appends = (self.appends + 1) & 0x1FFFFFFF     # (a small int on a board: docs/api.md#stats)
        self.bytes_written = (self.bytes_written + n + 13) & 0x1FFFFFFF    # (docs/api.md#stats)

    def _path(self, s):
        # Made per write (a file object is made per write anyway): a list of
        # the paths would hold 40-odd strings for the life of the client.
        return "%s/%d" % (self.dir, s)

    def write_ids(self):
        # The older of i0 / i1 := a sequence number and one IN_LIST record of
        # the incoming QoS 2 ids awaiting PUBREL (the newer stays intact).
        # The turn moves on once the write is done: after one that failed,
        # the next goes to the same file, never to the newer copy (on FAT a
        # write cut midway leaves its file damaged).
        e = self.e
        n = e.rx2_n
        b = bytearray(11 + 2 * n)
        seq = (self.iseq + 1) & 0x1FFFFFFF
        _put_seq(b, seq)
        b[4] = _R_IN_LIST
        put_u16(b, 5, 2 * n)
        for k in range(n):
            put_u16(b, 7 + 2 * k, e.rx2[k])
        crc.seal(b, 0, 7 + 2 * n)
        self.put_file("i1" if seq & 1 else "i0", b)
        self.iseq = seq

    def put_file(self, name, data):
        # File `name` of the directory := data, in one commit.
        try:
            with open(self.dir + "/" + name, "wb") as f:
                f.write(data)
        except OSError as x:
            raise_full(x)
        self.file_writes = (self.file_writes + 1) & 0x1FFFFFFF
        self.bytes_written = (self.bytes_written + len(data)) & 0x1FFFFFFF

    def acked(self, pid):
        # A QoS 1/2 message left the session: its slot becomes free, to be
        # overwritten (or emptied) later.
        s = self.slot_of(pid)
        if s >= 0:
            self.pid[s] = 0
            self.stale[s] = 1
            self.nacks += 1
        else:
            for k in range(self.nbatch):     # batched and never written
                if self.batch[k] == pid:
                    self.batch[k] = 0
                    self.lead = True          # (unless a later one is: flush())

    def flush(self):
        # Batched messages and emptied slots reach flash now.
        e = self.e
        for k in range(self.nbatch):
            pid = self.batch[k]
            i = e.find(pid, 0) if pid else -1
            if i >= 0:
                self.stored(i)        # its OUT_PUB, or its OUT_REL when PUBREC came first
            self.batch[k] = 0         # (written: a retry after a refused one skips it)
            if pid:
                # The newest not written as an OUT_PUB (past PUBREC; or
                # acknowledged first, acked()): the id a boot counts from
                # is behind it (store.py alike).
                self.lead = i < 0 or not e.len[i]
        self.nbatch = 0
        for first in (1, 0):          # guarded OUT_PUB slots before the OUT_REL they guard
            for s in range(self.made):
                if self.stale[s] and (self.guard[s] or not first):
                    self.put_file(str(s), b"")
                    self.rewritten(s)
                    self.lead = True      # (it may have held the newest id a boot counts from)

    def tick(self, now):
        if self.behind:
            # After the read that brought a late SUBACK / UNSUBACK
            # (inbound.after): tried once; refused, the error is raised as
            # any write's here, and the next checkpoint writes it.
            del self.behind
            self.checkpoint()
        elif self.nbatch and time.ticks_diff(now, self.batch_t0) >= self.batch_ms:
            self.flush()
        elif self.nacks and not self.e.held:
            self.flush()              # idle: the acks reach flash before the program may end

    def fits(self, n):  # noalloc while it fits
        if fits(self.e, n, self.capacity):
            return True
        from .dirstate import room    # refused: measured again (dirstate.py)
        return room(self, n)

    # ------------------------------------------------------------ the whole state
    # (dirstate.py: what a connect, subscribe, disconnect or boot does, not a
    # message; loaded for the call)
    def checkpoint(self, offline=False, replaced=False):
        gc.collect()                  # before a compile or load: MQTTClient.__init__
        if replaced:
            from .slotmove import replace
            return replace(self, offline)      # the journal to use from now on
        from .dirstate import checkpoint
        checkpoint(self, offline)

    def erase(self):
        from .dirclear import erase
        erase(self)

    def set_aside(self):
        from .dirclear import set_aside
        set_aside(self)

    def close(self):
        pass

    def stats(self):
        return {"bytes_written": self.bytes_written, "slots": self.made, "slot_writes": self.appends,
                "other_writes": self.file_writes}


def _put_seq(b, seq):  # noalloc
    # A sequence number (below 2**29) as u32 at b[0:4].
    b[0] = seq >> 24
    b[1] = (seq >> 16) & 0xFF
    put_u16(b, 2, seq & 0xFFFF)
