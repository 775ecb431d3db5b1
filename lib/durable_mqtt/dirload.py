# A session directory read back at a boot that found its header "h"
# (load.py): the incoming QoS 2 ids (i0, i1), the slots, their order, and
# each message read again as restore() copies it into the outbox
# (docs/session-format.md#session-directory). A module of its own: a first
# boot, or any boot without a session, never compiles it, and load.py's
# compile stays the smaller peak of a boot from .py source.
import gc
import os
from array import array
from micropython import const

from . import crc
from .codec import u16
from .load import names_in, read, remove

_R_OUT_PUB = const(0x02)     # docs/session-format.md (store.py's numbers)
_R_OUT_REL = const(0x04)
_R_IN_LIST = const(0x08)


def read_state(j, head):
    # The State of j's directory whose "h" holds head; slots that hold
    # nothing valid are emptied before anything new is written, so that an
    # old copy cannot come back later.
    gc.collect()                      # before a compile or load: MQTTClient.__init__
    from .stream import parse
    st = parse(head)
    names = names_in(j)               # after the compile: the heap's peak at a reboot
    got = False
    for name in ("i0", "i1"):         # the newer intact one holds the incoming QoS 2 ids
        p = j.dir + "/" + name
        try:
            n = os.stat(p)[6]
        except OSError:
            n = 0
        d = read(p) if n <= 0xFFFF + 11 else None       # (larger than a record can say: damage)
        if d and len(d) == n and n >= 11 and d[4] == _R_IN_LIST and u16(d, 5) == n - 11 and crc.check(d, 0, n - 4):
            q = seq_of(d)
            # Newer: as serial numbers (modulo 2**29), by distance.
            if not got or 0 < (q - j.iseq) & 0x1FFFFFFF < 0x10000000:
                got = True
                j.iseq = q
                st.rx2 = [u16(d, 7 + 2 * k) for k in range(u16(d, 5) // 2)]
        elif n:
            # Damaged (LittleFS never leaves a write half done): if it was
            # the newer file, ids recorded only there are lost and their
            # resent PUBLISH may be delivered again (MQTT-4.3.3-10), so it
            # is reported, and emptied, as a damaged slot is.
            clear(j, name)
            st.damaged(n)
    # Boot with a full outbox is where this client needs the most heap: the
    # slots are noted in the journal's own arrays (no object per message),
    # and each packet is read again, into one buffer, as restore() copies
    # it into the outbox (st.view).
    buf = bytearray(j.e.buf_size + 14)
    nbytes = array("i", bytes(4 * len(j.pid)))
    moved = []
    for name in names:
        # (A slot is named as str() names its number: "07" would be read as
        # slot 7 beside the "7" the library writes, and a name of many
        # digits made widen() build tables that long. Such names are
        # strangers.)
        if not name.isdigit() or len(name) > 5 or name != str(int(name)):
            if name not in ("h", "i0", "i1"):
                remove(j.dir + "/" + name)       # h.tmp of a cut checkpoint, or a stranger
            continue
        s = int(name)
        n = read_slot(j.dir + "/" + name, buf)
        if s >= len(j.pid):
            if n > 0:
                moved.append(name)    # (a larger outbox wrote it) moved below
            else:
                remove(j.dir + "/" + name)
            continue
        j.made = max(j.made, s + 1)
        if n > 0:
            note_slot(j, s, buf, n, nbytes)
        elif n:
            clear(j, name)            # damaged (LittleFS never leaves a write half done)
            st.damaged(-n)            # (n < 0: minus its length)
    if moved:
        # (Its own module: this one's compile is a source boot's peak,
        # with a full outbox restored.)
        from .slotmove import move_far
        move_far(j, moved, buf, nbytes)
    # Sequence numbers grow for as long as a message is held and wrap at
    # 2**29 (so that no sum of them is a big integer on a board): they are
    # compared as serial numbers, by their distance from one of them (every
    # slot on flash was written within far fewer than 2**28 writes of the
    # others).
    seq = 0
    for s in range(j.made):
        if j.pid[s]:
            seq = j.seq[s]

    def key(s):                       # s's place in the order written
        return (j.seq[s] - seq + 0x10000000) & 0x1FFFFFFF

    for s in range(j.made):
        # An id twice: reused while the old slot waited to be emptied, or an
        # OUT_PUB and its OUT_REL: the higher seq wins (on a tie, the
        # OUT_REL). The loser is emptied.
        for t in range(s + 1, j.made):
            if j.pid[s] and j.pid[t] == j.pid[s]:
                drop = s if (key(s), j.rel[s]) < (key(t), j.rel[t]) else t
                j.pid[drop] = j.seq[drop] = j.rel[drop] = 0
                try:
                    j.put_file(str(drop), b"")
                except OSError as x:
                    # Refused: it stays on flash. Read-only, this boot
                    # writes nothing (a later one repairs it); full, it is
                    # guarded as a released message's OUT_PUB is
                    # (filestore.py): emptied or reused before the slot that
                    # beats it. Else that slot went first (the message
                    # completed) and a boot found this one alone: a PUBLISH
                    # sent again after its PUBREL.
                    if x.args[1:] == ("filesystem read-only",):    # (records.raise_full)
                        continue
                    j.stale[drop] = 1
                    j.nacks += 1
                    j.guard[drop] = s + t - drop + 1
                    j.blocked[s + t - drop] = 1
    slots = [s for s in range(j.made) if j.pid[s]]
    slots.sort(key=key)
    for s in slots:
        j.next = (j.seq[s] + 1) & 0x1FFFFFFF
        if not j.rel[s]:
            st.next_pid = j.pid[s]    # the newest PUBLISH's id: the last issued
    st.out = [(j.pid[s], None if j.rel[s] else nbytes[s]) for s in slots]

    def view(k):
        # The k-th message's PUBLISH, read again from its slot (a view of buf).
        n = read_slot(j.dir + "/" + str(slots[k]), buf)
        if n != nbytes[slots[k]] + 13:
            raise OSError(5, "session slot %d changed while it was restored" % slots[k])
        return memoryview(buf)[9:n - 4]
    st.view = view
    return st


def clear(j, name):
    # File `name` of the directory emptied; on a read-only filesystem it
    # stays (the boot goes on: the same repair at a later boot).
    try:
        j.put_file(name, b"")
    except OSError:
        pass


def note_slot(j, s, buf, n, nbytes):
    # Slot s holds the record in buf[0:n].
    j.pid[s] = u16(buf, 7)
    j.seq[s] = seq_of(buf)
    j.rel[s] = buf[4] == _R_OUT_REL
    nbytes[s] = n - 13


def read_slot(path, buf):
    # A slot file into buf: its length when it holds a whole OUT_PUB or
    # OUT_REL record (docs/session-format.md#session-directory), -length
    # when it holds anything else, 0 when empty or absent. A whole record
    # longer than buf (a packet larger than buf_size) makes buf grow;
    # ValueError when the heap cannot hold it.
    try:
        with open(path, "rb") as f:
            n = f.readinto(buf)
            if n == len(buf):
                from .slotmove import too_long
                n = too_long(f, buf)  # (buf grown to hold a whole record)
                if n < 0:
                    return n
    except OSError:
        return 0
    return n if _whole(buf, n) else -n


def _whole(d, n):
    # A whole record: an OUT_REL of its pid alone, or an OUT_PUB whose packet
    # is a QoS 1/2 PUBLISH of its pid (anything else is damage: emptied).
    from .stream import publish_ok
    return (n >= 13 and u16(d, 5) == n - 11 and crc.check(d, 0, n - 4)
            and (d[4] == _R_OUT_REL and n == 13 and u16(d, 7) or d[4] == _R_OUT_PUB and publish_ok(d, 9, n - 13, u16(d, 7))))


def seq_of(b):
    # (The top two bits are not the number's: 0 from this writer.)
    return ((b[0] & 0x1F) << 24) | (b[1] << 16) | u16(b, 2)
