# A filesystem that refuses chosen operations, over a real one (MicroPython):
# the errors a full or failing flash gives at one exact step, which a
# power-cut sweep does not reach (tests/test_store_errors.py).
#
#   fs = FaultFS(vfs.VfsLfs2(dev, progsize=32))
#   vfs.mount(fs, "/fl")
#   fs.refuse("rename", "/s.d.d", 28)   # os.rename("/fl/s.d.d", ...) raises OSError(28)
#   fs.refuse(("remove", "open"), "/s.d/h")   # either of them, on that path
#   fs.refuse("write", "/s.d/0")        # open() to write (not to read) raises
#   fs.refuse(None)                     # nothing refused
#
# Paths are as the mounted filesystem sees them (without the mount point);
# an operation matches when its first path ends with the one given.


class FaultFS:
    def __init__(self, fs):
        self.fs = fs
        self.op = None
        self.path = None
        self.errno = 0
        self.refused = 0          # operations refused so far

    def refuse(self, op, path=None, errno=28):
        self.op, self.path, self.errno = op, path, errno

    def _check(self, op, path):
        if (op == self.op or type(self.op) is tuple and op in self.op) and path.endswith(self.path):
            self.refused += 1
            raise OSError(self.errno)

    def mount(self, readonly, mkfs):
        self.fs.mount(readonly, mkfs)

    def umount(self):
        self.fs.umount()

    def ilistdir(self, path):
        return self.fs.ilistdir(path)

    def chdir(self, path):
        return self.fs.chdir(path)

    def getcwd(self):
        return self.fs.getcwd()

    def stat(self, path):
        return self.fs.stat(path)

    def statvfs(self, path):
        return self.fs.statvfs(path)

    def mkdir(self, path):
        self._check("mkdir", path)
        return self.fs.mkdir(path)

    def rmdir(self, path):
        self._check("rmdir", path)
        return self.fs.rmdir(path)

    def remove(self, path):
        self._check("remove", path)
        return self.fs.remove(path)

    def rename(self, old, new):
        self._check("rename", old)
        return self.fs.rename(old, new)

    def open(self, path, mode):
        self._check("open", path)
        if "w" in mode or "a" in mode:
            self._check("write", path)    # ("write": an open to write only, not to read)
        return self.fs.open(path, mode)
