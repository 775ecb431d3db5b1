# The session from flash into the engine: the journal for a session_file
# (with its stored state restored), the session directory read back
# (docs/session-format.md#session-directory). The record stream itself is
# stream.py's; save_session() and restore_session() are state.py's.
# Boot-time code: loaded when needed and unloaded after (client.unload); it
# allocates freely.
import gc
import os
import sys

from .records import wall_minutes



def open_session(c, session_file, prog_size, batch, clean):
    # Client c's journal on `session_file`, its stored state restored;
    # batch: (persist_batch_ms, persist_batch_bytes).
    e = c.engine
    c.journal = j = open_journal(session_file, e, prog_size, batch[0], c.event, batch[1])
    if e.has_state:
        # Batched: the ids of messages whose records were still in the
        # batch at a power cut may have gone out, and a QoS 2 one's id stays
        # in use at the broker until a PUBREL this client cannot send
        # (MQTT-4.3.3-2): new ids start past every id a batch holds
        # (MQTT-2.3.1-2), not at the last one flash knows. The jump is
        # not stored, but the first id given out after it is, before it
        # goes out (the journal's `lead`, store.py put()): a second cut
        # then finds it, and the next boot jumps past the ids this one
        # gave out unrecorded. The batch was the boot's that wrote the
        # state, whose settings flash does not keep: a firmware update
        # may have turned batching off or made the outbox smaller since
        # (ejabberd then took the new messages for repeats of the old,
        # never delivered). So every boot jumps, past 4,095 ids at least
        # (a batch of that boot held at most its max_inflight +
        # outbox_size; skipped ids cost nothing).
        e.last_pid = (e.last_pid + max(len(j.batch), 4096) - 1) % 65535 + 1
        j.lead = True
    if e.has_state or e.held:         # a session, or messages for the next one (restore.py)
        # (clean: the last CONNECT's, which made this session, not the
        # constructor's: a disconnect() before any connect keeps it, leave.py)
        c.clean_session = c.clean = False
        c.persist = True
        c.sent_expiry = c.expiry_for(False)   # (a disconnect() before any connect keeps it: leave.py)
    elif c.persistent(clean):
        c.persist = True              # what is accepted before the first connect is kept
        _checkpoint(j, c.event)       # a full or read-only filesystem: store_full, not a failed boot


def open_journal(session_file, e, prog_size, batch_ms, event, batch_bytes=None):
    # The journal for `session_file`, with the stored state restored
    # into engine e: a path (a directory of slot files, filestore.py; a
    # session file of the older log layout is moved into it), a block device
    # (the raw ring, ring.py), or a log backend object such as
    # filelog.FileLog. An unusable state is set aside and reported through
    # event(name, info).
    if isinstance(session_file, str):
        if not session_file:
            raise ValueError("session_file: an empty path")
        return _open_dir(session_file, e, batch_ms, event)
    if not hasattr(session_file, "readblocks") and not hasattr(session_file, "load"):
        raise TypeError("session_file must be a path (str), a block device or a FileLog, not %s"
                        % type(session_file).__name__)
    ring = hasattr(session_file, "readblocks")
    if ring:
        from .ring import RingStore
        if prog_size is None and sys.platform == "rp2":
            prog_size = 256           # rp2.Flash programs whole 256-byte pages
        session_file = RingStore(session_file, prog_size=prog_size, max_append=e.buf_size + 16 + 2 * e.nslots)
    from .store import LogJournal
    j = LogJournal(session_file, e, batch_ms, e.qos12, batch_bytes)
    try:
        data = session_file.load()
        if data:
            from .stream import parse
            st = parse(data)
            _restore(e, st, event)
            # At once: drops a torn tail and the acks it replays. Refused
            # (a full filesystem), the next write is a checkpoint all the
            # same: appended after bytes that end the stream (FAT: a cut
            # mid-append), a record is where no boot reads it. Not on a
            # ring unless it needs one: its commits are whole (nothing
            # torn to drop), and each boot checkpoint a brown-out cuts
            # costs the ring a commit's room (ring-format.md).
            if ring and not st.torn and not session_file.needs_checkpoint():
                pass
            elif not _checkpoint(j, event) and st.torn:
                j.behind = True
    except ValueError as x:           # FormatError, or a state that is not ours
        j.set_aside()
        event("discarded", {"reason": str(x)})
    return j


def _checkpoint(j, event):
    # A checkpoint at boot or connect that may find the state larger than
    # one checkpoint holds (a ring that boot checkpoints cut at two boots in
    # a row have filled): the state stays in RAM and on flash as it was,
    # reported; acknowledgements make room, and a later checkpoint takes it.
    # Raised, it would stop every boot, and every connect that could drain it.
    # Returns whether it was written.
    from .errors import StoreFull
    try:
        j.checkpoint()
        return True
    except StoreFull as x:
        event("store_full", {"reason": x.args[1]})
        return False


def _restore(e, st, event):
    gc.collect()                      # before a compile or load: MQTTClient.__init__
    from .restore import restore
    if st.intact_after:               # more than a torn last write: records lost
        event("damaged", {"dropped_bytes": st.dropped})
    restore(e, st, wall_minutes(), event)
    if e.expired:
        event("expired", {"saved_min": st.saved_min, "expiry": st.expiry})


def _open_dir(path, e, batch_ms, event):
    # The session directory PATH.d and its session file PATH: the tag that
    # says the session is there (dirstate.tag). A session file removed
    # takes its session with it; one that holds anything else is set
    # aside (PATH.bad, "discarded") and the directory's state kept; a
    # session file of the log layout (0.1.0) is moved into the directory.
    # PATH is never missing while the directory holds a session, unless
    # PATH.d/m holds the tag that is to take its place.
    gc.collect()                      # before a compile or load: MQTTClient.__init__
    d = path + ".d"
    try:
        os.stat(d + ".d")
        from .slotmove import rename  # a restore_session() cut short: finished or undone
        try:
            rename(d)
        except OSError:
            from . import dirclear
            dirclear.remove(d)        # (the old state, what is left of it: superseded)
            d += ".d"                 # refused (a full filesystem): the session is used where it is
    except OSError:
        pass
    from .filestore import SlotJournal
    from .records import MAGIC
    j = SlotJournal(d, e, batch_ms)
    if d != path + ".d":
        j.path = path
    m = j.dir + "/" + "m"
    reason = old = st = None
    try:
        old = read(path)
        if old is None:
            os.stat(path)             # there, and no file to read (a directory, EIO)
            reason = "%s cannot be read" % path
    except ValueError as x:           # too large to be a session file
        reason = str(x)
    except OSError:                   # no session file
        pass
    if old == MAGIC + b"\x00":
        j.tag = True
        old = None
    elif old is not None:
        gc.collect()                  # before a compile or load: MQTTClient.__init__
        from .stream import parse
        try:
            parse(old)                # a session file of the log layout (0.1.0): it
        except ValueError as x:       # stays until the directory holds its state
            reason = "%s is not a session file: %s" % (path, x)
            old = None
    elif not reason:
        # No session file. A tag not yet renamed into place (a cut, or
        # FAT's rename over a file, which removes that file first) is
        # renamed now; else it was removed, and so is its session: its
        # header goes (the slots at _read_dir, as for a session erased),
        # or, read-only, it is not read.
        try:
            st = read(m)
        except ValueError:
            st = None
        if st == MAGIC + b"\x00":
            try:
                os.rename(m, path)
                j.tag = True
            except OSError:
                pass                  # (kept: the next checkpoint or boot names it)
            st = None
        else:
            remove(j.dir + "/h")
            remove(j.dir + "/" + "h.tmp")
            st = read(j.dir + "/h") or read(j.dir + "/" + "h.tmp") or None
    if reason:
        # The tag is written first (m): once the stranger is renamed away,
        # a cut finds it, never a directory without its session file.
        # Refused (a full or read-only filesystem), the stranger stays,
        # set aside at a later boot.
        try:
            j.put_file("m", MAGIC + b"\x00")
            os.rename(path, path + ".bad")
            os.rename(m, path)
            j.tag = True
        except OSError:
            pass
        event("discarded", {"reason": reason})
    try:
        if st is None:
            st = _read_dir(j)
            if st is None and old:
                st = parse(old)
        else:
            st = None                 # removed, on a read-only filesystem
        if st is not None:
            _restore(e, st, event)
            if len(j.pid) <= e.qos12:     # the outbox grew: a slot for each message, and one more
                from .slotmove import widen
                widen(j, e.qos12 + 1)
            if old and not j.made:
                # (The tag before the header would replace the 0.1.0 file
                # before the directory holds its state: after, below.)
                j.tag = True
                try:
                    if not _checkpoint(j, event):
                        old = None    # not moved (refused): the file stays
                finally:
                    j.tag = False
    except ValueError as x:           # FormatError, or a state that is not ours
        j.set_aside()
        if old:
            try:
                os.rename(path, path + ".bad")
            except OSError:
                pass
            old = None
        st = None
        event("discarded", {"reason": str(x)})
    if old is not None:
        # The directory holds the state of the 0.1.0 file: the tag goes
        # over it (refused, read-only: the next boot does this again).
        try:
            gc.collect()
            from .dirstate import tag
            tag(j)
        except OSError:
            pass
    return j


def read(path):
    # The file's bytes, None when it cannot be read. One too large for this
    # heap is no state this client can restore (a stray file, or a state
    # from a device with more RAM): ValueError, so that it is set aside; a
    # MemoryError would fail every boot the same way.
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None
    except MemoryError:
        raise ValueError("%s is larger than this heap can read" % path)




def _read_dir(j):
    # The state in j's directory (filestore.py), or None without a valid
    # "h". Slots that hold nothing valid are emptied before anything new is
    # written, so that an old copy cannot come back later.
    try:
        if not os.stat(j.dir)[0] & 0x4000:     # S_IFDIR: a directory (os.stat)
            raise ValueError("%s is a file, not a session directory" % j.dir)
    except OSError:
        return None                   # not made: a full or read-only filesystem (store_full)
    head = read(j.dir + "/h") or _header_in_tmp(j)
    if not head:
        for name in names_in(j):      # no session: whatever else is there goes
            try:                      # (a read-only filesystem: at a later boot)
                if name.isdigit() and os.stat(j.dir + "/" + name)[6]:
                    j.put_file(name, b"")
                elif name in ("i0", "i1"):   # (an erase() cut short) else the new
                    try:                     # session's ids could rank below them
                        os.remove(j.dir + "/" + name)
                    except OSError:
                        j.put_file(name, b"")    # (an empty one holds no ids)
            except OSError as x:
                # Refused (a full filesystem): a slot left is noted as an
                # acknowledged one, which the first checkpoint empties
                # before its header makes a session of the directory
                # (refused: no header). Else the new session took it in.
                # (Read-only: this boot writes no header.)
                if name.isdigit() and int(name) < len(j.pid) and x.args[1:] != ("filesystem read-only",):
                    s = int(name)
                    j.made = max(j.made, s + 1)
                    j.stale[s] = 1
                    j.nacks += 1
        return None
    gc.collect()                      # before a compile or load: MQTTClient.__init__
    from . import stream  # noqa: F401  (the larger compile first, before dirload's)
    gc.collect()
    from .dirload import read_state   # (a fresh directory never loads it)
    return read_state(j, head)


def _header_in_tmp(j):
    # No "h", but a whole h.tmp: a checkpoint cut between removing the old
    # "h" and naming the new one (FAT renames over a file in those two
    # steps; LittleFS and the first checkpoint: the rename not made). The
    # slots were written before h.tmp, so it is their header: renamed into
    # place and read, rather than the slots emptied as a session erased.
    path = j.dir + "/" + "h.tmp"       # (not "/h.tmp": one name less on a board)
    data = read(path)
    if not data:
        return None
    gc.collect()                      # before a compile or load: MQTTClient.__init__
    from .stream import parse
    try:
        if parse(data).torn:
            return None               # cut while written: no header to trust
    except ValueError:
        return None
    try:
        os.rename(path, j.dir + "/h")
    except OSError:
        pass                          # (read-only: read from h.tmp, named at the next checkpoint)
    return data


def names_in(j):
    # The files in j's directory. The library makes no directory in it: an
    # empty one goes, as a stray file would; one that holds something is
    # left alone, unless it takes a name the library writes (then the
    # session cannot go on there: ValueError, set aside).
    names = []
    dirs = []                         # (removed after the listing: not while it runs)
    for x in os.ilistdir(j.dir):      # (one entry at a time: a full outbox lists 40)
        (names if x[1] != 0x4000 else dirs).append(x[0])     # (S_IFDIR: os.ilistdir)
    for name in dirs:
        try:
            os.rmdir(j.dir + "/" + name)
        except OSError:
            if name.isdigit() or name in ("h", "h.tmp", "i0", "i1"):
                raise ValueError("%s/%s is a directory" % (j.dir, name))
    return names


def remove(path):
    try:
        os.remove(path)
    except OSError:               # (a read-only filesystem: it stays, and is skipped again)
        pass
