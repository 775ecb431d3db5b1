# Session store backend: one log file on the board's filesystem (LittleFS).
#
#   path         the state: the latest checkpoint, then every append after it
#   path.tmp     a checkpoint being written; renamed over `path` when complete
#
# append() writes at the end of the open file and flushes. On LittleFS a
# flush is atomic (the file's new size is committed with its metadata, or not
# at all), so a power cut during an append leaves the file as it was or with
# the whole append. os.rename() replaces `path` atomically on LittleFS, so a
# power cut during a checkpoint leaves the old file (and maybe a stale .tmp,
# which the constructor deletes). Records written by the session layer carry
# their own CRC, so on a filesystem without those guarantees a torn tail is
# dropped by the parser and gone at the next checkpoint.
#
# Cost: LittleFS copies a file's last block on every flush, so each append
# costs about one block erase (docs/flash-wear.md); RingStore avoids that.
#
# append() allocates nothing once the file is open (the file object is kept
# between appends). The checkpoint calls open a file, which allocates.
import os

from .errors import StoreFull, ERR_FULL
from .records import raise_full



class FileLog:
    # Session backend on a file. `compact_bytes`: appended bytes after which
    # needs_checkpoint() asks for a checkpoint (which rewrites the file).

    max_append = 0x3FFFFFFF     # no limit of its own

    def __init__(self, path, compact_bytes=4096):
        self.path = path
        self.tmp = path + ".tmp"
        self.compact_bytes = compact_bytes
        self.bytes_written = 0   # modulo 2**29: a small int on a board (docs/api.md#stats)
        self.appends = 0
        self.checkpoints = 0
        self._f = None           # the log, open for appending
        self._ck = None          # the .tmp file of an open checkpoint
        self._since = 0          # bytes appended since the last checkpoint
        self._size = -1          # expected size of the log (-1: not known yet)
        self._torn = False       # a failed append may have left bytes behind
        self._pending = 0        # bytes written since the last sync
        if _file_size(path) or not _file_size(self.tmp):
            _remove(self.tmp)    # a checkpoint cut short before its rename
        else:
            # No log but a .tmp: a rename cut between removing the old file
            # and naming the new one (FAT does it in two steps): the .tmp is
            # the newest state (whole, or cut short: the parser keeps what
            # is intact).
            try:
                os.rename(self.tmp, path)
            except OSError:
                pass
        self.capacity_bytes()

    def load(self):
        # The file's bytes, b"" when there is no file. Boot only. A
        # directory at the path is foreign: ValueError (set aside).
        self._close_log()
        try:
            if os.stat(self.path)[0] & 0x4000:
                raise ValueError("%s is a directory, not a session file" % self.path)
        except OSError:
            pass
        try:
            with open(self.path, "rb") as f:
                data = bytearray(f.seek(0, 2))   # (read() grows a buffer: twice the heap;
                f.seek(0)                        # parse() reads a bytearray without a copy)
                f.readinto(data)
        except OSError:
            data = b""
        except MemoryError:
            # A state larger than this heap (a device with more RAM wrote
            # it): raised, it would fail every boot the same way. Set aside.
            raise ValueError("%s is larger than this heap can read" % self.path)
        self._size = len(data)
        return data

    def _open_log(self):
        # Not in steady state: once per boot and after each checkpoint.
        if self._size < 0:
            self._size = _file_size(self.path)
        self._f = open(self.path, "ab")

    def _close_log(self):
        f = self._f
        self._f = None
        if f is not None:
            try:
                f.close()
            except OSError:
                pass

    def write(self, buf, off, n):  # noalloc once the file is open
        # buf[off:off+n] into the open checkpoint, or the next append.
        f = self._ck
        if f is None:
            if self._torn:
                raise StoreFull(ERR_FULL, "session file needs a checkpoint")
        try:
            if f is None:
                if self._f is None:
                    self._open_log()  # (read-only: EROFS, StoreFull)
                f = self._f
            f.write(buf, off, n)
        except OSError as e:
            self._failed()
            raise_full(e)
        self._pending += n

    def sync(self):  # noalloc
        # Make the append durable (LittleFS commits at flush).
        n = self._pending
        self._pending = 0
        try:
            self._f.flush()
        except OSError as e:
            self._failed()
            raise_full(e)
        self._size += n
        self._since += n
        self.bytes_written = (self.bytes_written + n) & 0x1FFFFFFF
        self.appends = (self.appends + 1) & 0x1FFFFFFF     # (a small int on a board: docs/api.md#stats)

    def _failed(self):
        if self._ck is not None:
            self._abort_checkpoint()
        else:
            self._failed_append()

    def _failed_append(self):
        # On LittleFS a failed write marks the open file as errored: closing
        # it commits nothing, so the file keeps its last flushed size. The
        # handle itself must not be used again (its cache may hold part of
        # the failed write), so it is closed and reopened on the next append.
        # Elsewhere (FAT: a write the full card cut short) a part of the
        # write may have reached the file; then no append is accepted until
        # a checkpoint has rewritten the file, so no good record ever
        # follows the torn one. needs_checkpoint() says so: the journal's
        # next write is that checkpoint (the whole state, from RAM).
        self._pending = 0        # (the failed append's bytes are not the log's)
        self._close_log()
        if _file_size(self.path) != self._size:
            self._torn = True

    def needs_checkpoint(self):  # noalloc
        # (Also while the log holds no state, its first checkpoint refused:
        # a record appended to no header would be set aside at boot.)
        return self._torn or self._since > self.compact_bytes or not self._size

    def capacity_bytes(self):
        # An estimate of the largest state a checkpoint can write now: half
        # of the free space plus the current file (the old file and the new
        # .tmp coexist until the rename), less two blocks of filesystem
        # metadata; kept as self.capacity. Asks the filesystem (allocates:
        # the constructor, and a refusal, LogJournal.fits(), since other
        # files may have made room).
        d = self.path.rsplit("/", 1)[0] if "/" in self.path else "."
        try:
            st = os.statvfs(d or "/")
            # (More free blocks than there are: none. A full LittleFS's
            # count wraps, dirstate.capacity().)
            n = max(0, (((st[4] if st[4] <= st[2] else 0) - 2) * st[0] + _file_size(self.path)) // 2)
        except OSError:
            n = 0
        self.capacity = n
        return n

    def begin(self):
        self._abort_checkpoint()
        self._pending = 0
        try:
            self._ck = open(self.tmp, "wb")
        except OSError as e:
            self._abort_checkpoint()
            raise_full(e)

    def end(self):
        # Complete the checkpoint: close the .tmp file, rename it over the log.
        f = self._ck
        if f is None:
            raise ValueError("end without begin")
        try:
            f.close()              # flushes: LittleFS commits the file here
        except OSError as e:
            self._abort_checkpoint()
            raise_full(e)
        self._ck = None
        self._close_log()
        try:
            os.rename(self.tmp, self.path)   # the commit point (atomic on LittleFS)
        except OSError as e:
            self._pending = 0
            _remove(self.tmp)
            raise_full(e)
        self.bytes_written = (self.bytes_written + self._pending) & 0x1FFFFFFF
        self._size = self._pending   # the log is the checkpoint: no stat at the next append
        self._pending = 0
        self._since = 0
        self._torn = False
        self.checkpoints += 1

    def _abort_checkpoint(self):
        f = self._ck
        self._ck = None
        if f is not None:
            self._pending = 0    # the .tmp's bytes: not the log's (sync() would count them)
            try:
                f.close()
            except OSError:
                pass
            _remove(self.tmp)

    def erase(self):
        # Forget everything: remove the file (one atomic metadata commit).
        # A remove refused (a full LittleFS can) empties the file instead,
        # the .tmp first (a boot takes a whole .tmp beside an empty log for
        # a cut rename); that refused too raises StoreFull with the state
        # still whole, rather than have the next boot bring back a session
        # this one ended.
        self._abort_checkpoint()
        self._close_log()
        for name in (self.tmp, self.path):
            _remove(name)
            if _file_size(name):
                try:
                    open(name, "wb").close()
                except OSError as x:
                    raise_full(x)
        self._size = 0
        self._since = 0
        self._torn = False

    def set_aside(self, suffix=".bad"):
        # Keep an unusable session file for inspection and start clean:
        # rename it to path + suffix (replacing an older one).
        self._abort_checkpoint()
        self._close_log()
        bad = self.path + suffix
        try:
            os.rename(self.path, bad)
        except OSError:
            # (an older copy of another kind: a directory over a file or
            # the reverse) it goes, then the rename again
            _remove(bad)
            try:
                os.rmdir(bad)
            except OSError:
                pass
            try:
                os.rename(self.path, bad)
            except OSError:
                try:
                    self.erase()   # (refused too: the state stays, set aside at the next boot)
                except OSError:
                    pass
        self._size = 0
        self._since = 0
        self._torn = False

    def close(self):
        self._abort_checkpoint()
        self._close_log()

    def stats(self):
        return {"bytes_written": self.bytes_written, "appends": self.appends,
                "checkpoints": self.checkpoints, "since_checkpoint": self._since}


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _file_size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return 0
