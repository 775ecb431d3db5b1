# The session directory's whole-state operations (filestore.py keeps what a
# message does): a checkpoint (constructor, connect(), subscribe(),
# disconnect()), the filesystem measured. Erasing the session, setting an
# unusable one aside and making room in a full outbox are dirclear.py's:
# rare, and not in the heap beside a checkpoint, the peak of a connect,
# subscribe or disconnect. Loaded for the call and unloaded after
# (client.unload): on a board that compiles .py, filestore.py compiles at
# boot while load.py is in the heap, the client's largest moment, and these
# lines need not be part of it (32-bit, small configuration with a session
# directory: 4.9 KB less heap from source). docs/session-format.md#session-directory.
import os

from . import crc
from .records import FORMAT, MAGIC, fits, header, raise_full, sub


def checkpoint(j, offline):
    # Journal j's whole state made current: slots for the messages the
    # engine holds (a move from the log layout), none for those it dropped
    # (a clean start), the header and incoming ids rewritten (the header
    # last: it makes the session). (A state that is not the one stored,
    # restore_session(), goes to a new directory: slotmove.replace().)
    e = j.e
    # Until "h" is written, a QoS 1/2 publish() measures the filesystem
    # and makes a directory with no "h" take a checkpoint before its
    # message (filestore.py room()): capacity 0 meanwhile.
    old = j.capacity
    j.capacity = 0
    # The boot may not have made the directory (a full or read-only
    # filesystem: store_full, load.py); now it must be there.
    make_dir(j.dir, True)
    j.flush()
    for s in range(j.made):
        if j.pid[s] and e.find(j.pid[s], 0) < 0:
            j.acked(j.pid[s])
    for k in range(e.count):
        if e.slot(k):
            i = e.index(k)
            s = j.slot_of(e.pid[i])
            if s < 0:
                j.stored(i)
            elif not e.len[i] and not j.rel[s]:
                j.released(s)
    j.flush()
    j.write_ids()
    if not j.tag:
        tag(j)                        # the session file first: a header without it is no session
    name = "h.tmp"                     # (one literal: each is a name on a board)
    j.put_file(name, head_bytes(e, offline))
    try:
        os.rename(j.dir + "/" + name, j.dir + "/h")    # the commit point
    except OSError as x:
        raise_full(x)
    j.lead = e.held                    # (the header's id counts only without a slot: store.py put())
    if j.behind:
        del j.behind                   # (back to SlotJournal's class default)
    j.checkpoints += 1
    j.capacity = old


def tag(j):
    # The session file PATH := the tag (MAGIC, format 0): the session is in
    # PATH.d (docs/session-format.md#session-directory). Written whole as
    # PATH.d/m, then renamed: never half a file, and a session file of the
    # log layout (0.1.0) there is replaced only once the directory holds
    # its state (load.py).
    j.put_file("m", MAGIC + b"\x00")
    try:
        os.rename(j.dir + "/" + "m", j.path or j.dir[:-2])
    except OSError as x:
        raise_full(x)
    j.tag = True


def head_bytes(e, offline):
    # MAGIC, the HEADER record and a SUB record per subscription, as bytes
    # (records.py's records): the "h" file.
    cid = e.cid
    b = bytearray(26 + len(cid))
    b[0:4] = MAGIC
    b[4] = FORMAT
    header(e, memoryview(b)[5:], e.expiry.to_bytes(4, "big"), offline)
    b[22:22 + len(cid)] = cid
    crc.seal(b, 5, 17 + len(cid))
    h = bytearray(8)
    for k in range(len(e.subs)):
        f = sub(h, k, e)
        r = h + f + b"1234"
        crc.seal(r, 0, 8 + len(f))
        b += r
    return b


def make_dir(path, strict=False):
    # strict: a directory that cannot be made raises (StoreFull when the
    # filesystem is full or read-only); else a checkpoint will try again.
    try:
        os.mkdir(path)
    except OSError as x:
        if strict:
            try:
                os.stat(path)         # it exists (EEXIST, or EROFS for one that exists)
            except OSError:
                raise_full(x)


def room(j, n):
    # A QoS 1/2 publish() the capacity refused (filestore.py fits()): the
    # filesystem is measured again (allocates: only here), since other
    # files may have made room (a capacity measured at boot was otherwise
    # kept: 0 until a checkpoint, a small one for good). A directory
    # holding no session yet (its checkpoints refused: no "h") takes a
    # checkpoint first, else the message's slot would be emptied at the
    # next boot. (Loaded here until the client's next unload().)
    old = capacity(j.dir)
    if not fits(j.e, n, old):
        return False
    try:
        os.stat(j.dir + "/h")
    except OSError:
        j.checkpoint()                # (refused: StoreFull)
    j.capacity = old
    return True


def capacity(dir):
    # The largest state this filesystem can take: half its free space (a
    # rewrite may need room for the old and the new copy), less 2 blocks.
    # More free blocks than it has is none: VfsLfs2 reports block_count
    # less the blocks LittleFS's traverse reached, some twice, as a u32,
    # which wraps (2**32 - 2) when that count passes block_count.
    try:
        st = os.statvfs(dir)
    except OSError:
        return 0
    return max(0, (st[3] - 2) * st[0] // 2) if st[3] <= st[2] else 0
