# Moving a session directory's files, rarely: a message in a slot past
# this client's outbox (a client with a larger one wrote it: dirload.py
# calls move_far() at boot; widen() when there are more messages than this
# outbox holds), a slot longer than the boot's buffer (too_long()), and a
# whole new directory for restore_session() (replace(), and rename() at a
# boot after a cut). A module of its own:
# dirload.py's compile is the heap's peak of a boot from .py source with a
# full outbox, and these are seldom needed.
import os
from micropython import const

from . import crc
from .codec import u16
from .dirclear import remove
from .dirstate import checkpoint, tag
from .filestore import SlotJournal
from .records import raise_full

_R_OUT_PUB = const(0x02)     # docs/session-format.md (store.py's numbers)


def move_far(j, moved, buf, nbytes):
    from .dirload import note_slot, read_slot, seq_of    # (loaded: the caller's)
    free = 0
    for p in j.pid:
        free += not p
    if len(moved) <= free:
        try:
            for name in moved:
                # A message in a slot past this client's outbox goes into a
                # free slot of it: written there, then removed (a cut between
                # leaves two copies, the same record: the next boot keeps one).
                n = read_slot(j.dir + "/" + name, buf)
                s = -1
                for t in range(len(j.pid) - 1, -1, -1):   # its copy, else the first free slot
                    if j.pid[t] == u16(buf, 7) and j.seq[t] == seq_of(buf):
                        s = t
                        break
                    if not j.pid[t]:
                        s = t
                if not j.pid[s]:
                    j.put_file(str(s), memoryview(buf)[0:n])
                    j.made = max(j.made, s + 1)
                    note_slot(j, s, buf, n, nbytes)
                os.remove(j.dir + "/" + name)
            return
        except OSError:
            pass                      # (read-only, full: those left stay where they are, as below)
    # More messages than this outbox holds: it grows to hold them
    # (restore.py), and each stays in its slot.
    widen(j, 1 + max(int(name) for name in moved), nbytes)
    for name in moved:
        n = read_slot(j.dir + "/" + name, buf)
        if n > 0:                     # (not one moved above)
            s = int(name)
            note_slot(j, s, buf, n, nbytes)
            j.made = max(j.made, s + 1)


def widen(j, n, *more):
    # j's slot tables (and `more` arrays beside them) to n slots: a stored
    # session with more messages than this client's outbox, which grows to
    # hold them (restore.py).
    for a in (j.pid, j.seq, j.stale, j.rel, j.guard, j.blocked, j.batch) + more:
        while len(a) < n:
            a.append(0)


def too_long(f, buf):
    # A slot longer than buf, which holds its first bytes: a message larger
    # than this client's buf_size (a larger one wrote it, and restore.py
    # lets it go out) or damage. Its CRC is checked through buf first, so
    # that damage never needs the file's size in one piece of heap. Whole,
    # buf grows to hold it and the file is read again: the byte count (the
    # caller checks it as any slot); -length when damaged; ValueError when
    # the heap cannot hold it (the session is set aside).
    n = f.seek(0, 2)
    if buf[4] != _R_OUT_PUB or u16(buf, 5) != n - 11:
        return -n
    want = bytearray(4)
    f.seek(n - 4)
    f.readinto(want)
    s = bytearray(4)
    crc.start(s)
    f.seek(0)
    left = n - 4
    while left:
        k = f.readinto(buf)
        if not k:
            return -n
        k = min(k, left)
        crc.add(s, buf, 0, k)
        left -= k
    crc.put(s, buf, 0)
    if buf[:4] != want:
        return -n
    try:
        buf.extend(bytes(n + 1 - len(buf)))
    except MemoryError:
        raise ValueError("a stored packet of %d bytes is larger than this heap holds" % (n - 13))
    f.seek(0)
    return f.readinto(buf)


def replace(j, offline):
    # restore_session(): the engine's state, not the one stored, becomes the
    # session. Written over the old slots (as it was before 0.2.0), a cut
    # in between left a mixture of the two, neither state. So it is written
    # whole into PATH.d.d (its "h" last), then PATH.d goes and PATH.d.d takes
    # its name; rename() finishes or undoes that at the next boot. (".d"
    # again: a string the library has already, one interned name less on a
    # board that compiles the .py.) Returns the journal of the new directory.
    if j.path:
        # j works in PATH.d.d, a rename refused before (below): that move
        # is finished first (refused again: raised, nothing changed).
        rename(j.path + ".d")
        j.dir = j.path + ".d"
        del j.path
    new = j.dir + ".d"
    remove(new)
    if not j.tag:
        tag(j)                      # (the session file names PATH.d, whichever copy it is)
    k = SlotJournal(new, j.e, j.batch_ms)
    k.tag = True
    checkpoint(k, offline)
    try:
        rename(j.dir)
    except OSError:
        # Refused (a full filesystem), with PATH.d perhaps gone: PATH.d.d
        # is whole, and it is the session now. Its journal goes on there
        # (raised, the client went on writing into a PATH.d that the next
        # boot replaced with PATH.d.d: what it accepted meanwhile was lost);
        # the next boot, or restore_session(), moves it into place.
        k.path = j.dir[:-2]
        remove(j.dir)                # (what rename() left of the old state: a boot must not find it)
        return k
    k.dir = j.dir
    return k


def rename(dir):
    # A whole dir + ".d" (its "h" written) replaces dir; one without "h"
    # (cut while written) goes. At replace()'s end, and at a boot after a
    # cut (load.py).
    new = dir + ".d"
    try:
        os.stat(new + "/h")
    except OSError:
        remove(new)
        return
    remove(dir)
    try:
        os.rename(new, dir)
    except OSError as x:
        raise_full(x)
