# The session from flash or bytes into the engine, and out as bytes: the
# journal for a session_file (with its stored state restored), the session
# directory read back (docs/session-format.md#session-directory),
# save_session() and restore_session(). The record stream itself is
# stream.py's. Boot-time code: loaded when needed and unloaded after
# (client.unload); it allocates freely.
import gc
import os
import sys
from array import array
from micropython import const

from . import crc
from .codec import u16
from .records import wall_minutes

_R_OUT_PUB = const(0x02)     # docs/session-format.md (store.py's numbers)
_R_OUT_REL = const(0x04)
_R_IN_LIST = const(0x08)
_S_IFDIR = const(0x4000)     # os.stat / os.ilistdir: a directory


def open_session(c, where, prog_size, batch, clean):
    # Client c's journal on session_file `where`, its stored state restored;
    # batch: (persist_batch_ms, persist_batch_bytes).
    e = c.engine
    c.journal = j = open_journal(where, e, prog_size, batch[0], c.event, batch[1])
    if e.has_state:
        c.clean_session = False
        c.persist = True
    elif c.persistent(clean):
        c.persist = True              # what is accepted before the first connect is kept
        _checkpoint(j, c.event)       # a full or read-only filesystem: store_full, not a failed boot


def open_journal(where, e, prog_size, batch_ms, event, batch_bytes=None):
    # The journal for session_file `where`, with the stored state restored
    # into engine e: a path (a directory of slot files, filestore.py; a
    # session file of the older log layout is moved into it), a block device
    # (the raw ring, ring.py), or a log backend object such as
    # filelog.FileLog. An unusable state is set aside and reported through
    # event(name, info).
    if isinstance(where, str):
        if not where:
            raise ValueError("session_file: an empty path")
        return _open_dir(where, e, batch_ms, event)
    if not hasattr(where, "readblocks") and not hasattr(where, "load"):
        raise TypeError("session_file must be a path (str), a block device or a FileLog, not %s"
                        % type(where).__name__)
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
            from .stream import parse
            _restore(e, parse(data), event)
            _checkpoint(j, event)     # at once: drops a torn tail and the acks it replays
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
    from .stream import restore
    if st.intact_after:               # more than a torn last write: records lost
        event("damaged", {"dropped_bytes": st.dropped})
    restore(e, st, wall_minutes())
    if e.expired:
        event("expired", {"saved_min": st.saved_min, "expiry": st.expiry})


def _open_dir(path, e, batch_ms, event):
    gc.collect()                      # before a compile or load: MQTTClient.__init__
    from .filestore import SlotJournal
    j = SlotJournal(path + ".d", e, batch_ms)
    old = _read(path)                 # a session file of the log layout (0.1.0)
    try:
        st = _read_dir(j)
        if st is None and old:
            from .stream import parse
            st = parse(old)
        if st is not None:
            _restore(e, st, event)
            if old and not j.made and not _checkpoint(j, event):
                old = None            # moved into the directory (the header last), else kept
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
    # The state in j's directory (filestore.py), or None without a valid
    # "h". Slots that hold nothing valid are emptied before anything new is
    # written, so that an old copy cannot come back later.
    try:
        if not os.stat(j.dir)[0] & _S_IFDIR:
            raise ValueError("%s is a file, not a session directory" % j.dir)
    except OSError:
        return None                   # not made: a full or read-only filesystem (store_full)
    head = _read(j.dir + "/h") or _header_in_tmp(j)
    if not head:
        for name in _names(j):                    # no session: whatever else is there goes
            try:                      # (a read-only filesystem: at a later boot)
                if name.isdigit() and _read(j.dir + "/" + name):
                    j.put_file(name, b"")
                elif name in ("i0", "i1"):   # (an erase() cut short) else the new
                    os.remove(j.dir + "/" + name)   # session's ids could rank below them
            except OSError:
                pass
        return None
    gc.collect()                      # before a compile or load: MQTTClient.__init__
    from .stream import parse       # (a fresh directory never loads it)
    st = parse(head)
    names = _names(j)                 # after the compile: the heap's peak at a reboot
    got = False
    for name in ("i0", "i1"):         # the newer intact one holds the incoming QoS 2 ids
        d = _read(j.dir + "/" + name)
        n = len(d) if d else 0
        if n >= 11 and d[4] == _R_IN_LIST and u16(d, 5) == n - 11 and crc.check(d, 0, n - 4):
            q = seq_of(d)
            # Newer: as serial numbers (u32, they wrap), by distance.
            if not got or 0 < (q - j.iseq) & 0xFFFFFFFF < 0x80000000:
                got = True
                j.iseq = q
                st.in_qos2 = [u16(d, 7 + 2 * k) for k in range(u16(d, 5) // 2)]
        elif n:
            # Damaged (LittleFS never leaves a write half done): if it was
            # the newer file, ids recorded only there are lost and their
            # resent PUBLISH may be delivered again (MQTT-4.3.3-10), so it
            # is reported, and emptied, as a damaged slot is.
            j.put_file(name, b"")
            st.dropped += n
            st.intact_after = True    # reported as `damaged`
    # Boot with a full outbox is where this client needs the most heap: the
    # slots are noted in the journal's own arrays (no object per message),
    # and each packet is read again, into one buffer, as restore() copies
    # it into the outbox (st.fetch).
    buf = bytearray(j.e.buf_size + 14)
    size = array("i", bytes(4 * len(j.pid)))
    far = []
    for name in names:
        if not name.isdigit():
            if name not in ("h", "i0", "i1"):
                _remove(j.dir + "/" + name)       # h.tmp of a cut checkpoint, or a stranger
            continue
        s = int(name)
        n = read_slot(j.dir + "/" + name, buf)
        if s >= len(j.pid):
            if n > 0:
                far.append(name)      # (a larger outbox wrote it) moved below
            else:
                os.remove(j.dir + "/" + name)
            continue
        j.made = max(j.made, s + 1)
        if n > 0:
            note_slot(j, s, buf, n, size)
        elif n:
            j.put_file(name, b"")        # damaged (LittleFS never leaves a write half done)
            st.dropped -= n           # (n < 0: minus its length)
            st.intact_after = True    # reported as `damaged`
    if far:
        # (Its own module: load.py's compile is a source boot's peak, with
        # a full outbox restored.)
        from .slotmove import move_far
        move_far(j, far, buf, size)
    # Sequence numbers are u32 (j.seq holds them as signed 32-bit) and grow
    # for as long as a message is held, so they may have passed 2**31 or
    # 2**32: they are compared as serial numbers, by their distance from
    # one of them (every slot on flash was written within far fewer than
    # 2**31 writes of the others).
    ref = 0
    for s in range(j.made):
        if j.pid[s]:
            ref = j.seq[s]

    def age(s):
        return (j.seq[s] - ref + 0x80000000) & 0xFFFFFFFF

    for s in range(j.made):
        # An id twice: reused while the old slot waited to be emptied, or an
        # OUT_PUB and its OUT_REL: the higher seq wins (on a tie, the
        # OUT_REL). The loser is emptied.
        for t in range(s + 1, j.made):
            if j.pid[s] and j.pid[t] == j.pid[s]:
                lose = s if (age(s), j.rel[s]) < (age(t), j.rel[t]) else t
                j.pid[lose] = j.seq[lose] = j.rel[lose] = 0
                j.put_file(str(lose), b"")
    live = [s for s in range(j.made) if j.pid[s]]
    live.sort(key=age)
    for s in live:
        j.next = j.seq[s] + 1
        if not j.rel[s]:
            st.next_pid = j.pid[s]    # the newest PUBLISH's id: the last issued
    st.out = [(j.pid[s], None if j.rel[s] else size[s]) for s in live]

    def fetch(k):
        # The k-th message's PUBLISH, read again from its slot (a view of buf).
        n = read_slot(j.dir + "/" + str(live[k]), buf)
        if n != size[live[k]] + 13:
            raise OSError(5, "session slot %d changed while it was restored" % live[k])
        return memoryview(buf)[9:n - 4]
    st.fetch = fetch
    return st


def _header_in_tmp(j):
    # No "h", but a whole h.tmp: a checkpoint cut between removing the old
    # "h" and naming the new one (FAT renames over a file in those two
    # steps; LittleFS and the first checkpoint: the rename not made). The
    # slots were written before h.tmp, so it is their header: renamed into
    # place and read, rather than the slots emptied as a session erased.
    tmp = _read(j.dir + "/h.tmp")
    if not tmp:
        return None
    gc.collect()                      # before a compile or load: MQTTClient.__init__
    from .stream import parse
    try:
        if parse(tmp).torn:
            return None               # cut while written: no header to trust
    except ValueError:
        return None
    try:
        os.rename(j.dir + "/h.tmp", j.dir + "/h")
    except OSError:
        pass                          # (read-only: read from h.tmp, named at the next checkpoint)
    return tmp


def _names(j):
    # The files in j's directory. The library makes no directory in it: an
    # empty one goes, as a stray file would; one that holds something is
    # left alone, unless it takes a name the library writes (then the
    # session cannot go on there: ValueError, set aside).
    names = []
    dirs = []
    for x in os.ilistdir(j.dir):
        (dirs if x[1] == _S_IFDIR else names).append(x[0])
    for name in dirs:
        try:
            os.rmdir(j.dir + "/" + name)
        except OSError:
            if name.isdigit() or name in ("h", "h.tmp", "i0", "i1"):
                raise ValueError("%s/%s is a directory" % (j.dir, name))
    return names


def _remove(path):
    try:
        os.remove(path)
    except OSError:               # (a read-only filesystem: it stays, and is skipped again)
        pass


def note_slot(j, s, buf, n, size):
    # Slot s holds the record in buf[0:n].
    j.pid[s] = u16(buf, 7)
    j.seq[s] = seq_of(buf)
    j.rel[s] = buf[4] == _R_OUT_REL
    size[s] = n - 13


def read_slot(path, buf):
    # A slot file into buf: its length when it holds a whole OUT_PUB or
    # OUT_REL record (docs/session-format.md#session-directory), -length
    # when it holds anything else, 0 when empty or absent. Raises
    # ValueError for a whole record longer than buf (a packet larger than
    # buf_size).
    try:
        with open(path, "rb") as f:
            n = f.readinto(buf)
    except OSError:
        return 0
    if n == len(buf):
        data = _read(path)            # longer than any packet this client takes
        n = len(data)
        if _whole(data, n):
            raise ValueError("stored packet larger than buf_size")
        return -n
    return n if _whole(buf, n) else -n


def _whole(d, n):
    # A whole record: an OUT_REL of its pid alone, or an OUT_PUB whose packet
    # is a QoS 1/2 PUBLISH of its pid (anything else is damage: emptied).
    from .stream import publish_ok
    return (n >= 13 and u16(d, 5) == n - 11 and crc.check(d, 0, n - 4)
            and (d[4] == _R_OUT_REL and n == 13 and u16(d, 7) or d[4] == _R_OUT_PUB and publish_ok(d, 9, n - 13, u16(d, 7))))


def seq_of(b):
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
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("restore_session() takes the bytes save_session() returned, not %s" % type(data).__name__)
    try:
        from .stream import parse, restore
        st = parse(data)
        if st.torn or st.dropped:     # (dropped: a record skipped as damage)
            raise ValueError("truncated or damaged (save_session() bytes are whole)")
        restore(c.engine, st, 0)
    except ValueError as x:
        raise ValueError("not a valid session state: %s" % x)
    c.clean_session = False
    if c.journal:
        c.persist = True
        c.journal.checkpoint(replaced=True)
