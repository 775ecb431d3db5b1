# NOR flash as a block device, for tests and the simulated device.
#
# The device speaks MicroPython's extended block protocol, like
# esp32.Partition and rp2.Flash:
#
#   readblocks(n, buf, off=0)     read len(buf) bytes at block n + off
#   writeblocks(n, buf, off)      program len(buf) bytes at block n + off,
#                                 no erase (off=None: erase the blocks first,
#                                 the simple protocol)
#   ioctl(4) block count, ioctl(5) block size, ioctl(6, n) erase block n,
#   ioctl(1/2/3) init/deinit/sync
#
# NOR rules it enforces: an erased byte reads 0xFF; programming only clears
# bits; programming a byte that is not erased raises ProgramError (a bug in
# the code under test, not a power cut), as does a program whose offset or
# length is not a multiple of prog_size. Counters: programs, programmed_bytes,
# erases, reads.
#
# Power cuts: cut_after(n) makes the n-th program from now (n >= 1) the last
# thing the chip does. With torn=True that program stores only a prefix
# (`fraction` of its bytes; with noise=True the next 16 bytes get only some of
# their bits cleared) before PowerCut is raised; with torn=False it stores
# nothing. count_erases=True counts erases as well, and a cut erase leaves the
# block partly erased (erase_pattern "prefix", "suffix" or "stripes"). Every
# call after the cut raises PowerCut until power_on().
#
# reboot() models a reset after a cut: it returns a new device object on the
# same image with the power on, and retires this one: the old object gets a
# private copy of the image and its power back, so whatever still holds it (a
# VfsLfs2 mounted before the cut, the finaliser of a file opened on it) runs
# on quietly without ever touching the real image again.
#
# path=FILE keeps the image in a file as well, flushed on every change, so it
# survives SIGKILL (the simulated board). The RAM image stays authoritative.
#
# readblocks, writeblocks and ioctl allocate nothing while the power is on,
# so code under test can run them under micropython.heap_lock().
import micropython


class PowerCut(Exception):
    pass


class ProgramError(Exception):
    pass


try:
    @micropython.viper
    def _copy(dst: ptr8, doff: int, src: ptr8, soff: int, n: int):
        i = 0
        while i < n:
            dst[doff + i] = src[soff + i]
            i += 1

    @micropython.viper
    def _first_programmed(data: ptr8, off: int, n: int) -> int:
        # Index (from off) of the first byte that is not 0xFF, or -1.
        i = 0
        while i < n:
            if data[off + i] != 0xFF:
                return i
            i += 1
        return -1

    @micropython.viper
    def _program(data: ptr8, off: int, src: ptr8, n: int, keep: int):
        # NOR program: bits only go from 1 to 0. `keep` set bits are left as
        # they were (a partly programmed byte); keep=0 is a normal program.
        i = 0
        while i < n:
            data[off + i] = data[off + i] & (src[i] | keep)
            i += 1

    @micropython.viper
    def _erase(data: ptr8, off: int, n: int):
        i = 0
        while i < n:
            data[off + i] = 0xFF
            i += 1

except Exception:  # no viper: same behaviour, slower
    def _copy(dst, doff, src, soff, n):
        for i in range(n):
            dst[doff + i] = src[soff + i]

    def _first_programmed(data, off, n):
        for i in range(n):
            if data[off + i] != 0xFF:
                return i
        return -1

    def _program(data, off, src, n, keep):
        for i in range(n):
            data[off + i] &= src[i] | keep

    def _erase(data, off, n):
        for i in range(off, off + n):
            data[i] = 0xFF


class NorFlash:
    def __init__(self, block_size=4096, num_blocks=16, prog_size=1, path=None, _image=None):
        if block_size % prog_size:
            raise ValueError("block_size must be a multiple of prog_size")
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.prog_size = prog_size
        self.size = block_size * num_blocks
        if _image is not None:  # reboot(): same chip, counters carry on
            self.data = _image.data
            self.programs = _image.programs
            self.programmed_bytes = _image.programmed_bytes
            self.erases = _image.erases
            self.reads = _image.reads
            self.block_erases = _image.block_erases
        else:
            self.data = bytearray(self.size)
            _erase(self.data, 0, self.size)
            self.programs = 0
            self.programmed_bytes = 0
            self.erases = 0
            self.reads = 0
            self.block_erases = [0] * num_blocks   # wear per block
        self._countdown = 0      # ops left until the cut; 0 = no cut armed
        self._dead = False
        self._torn = True
        self._fraction = 0.5
        self._noise = False
        self._count_erases = False
        self._erase_pattern = "prefix"
        self._retired = False
        self._file = None
        if _image is not None:
            self._file = _image._file
        elif path is not None:
            self._open_image(path)

    # -- image file (simulated board) ---------------------------------------

    def _open_image(self, path):
        import os
        try:
            have = os.stat(path)[6]
        except OSError:
            have = -1
        if have != self.size:
            with open(path, "wb") as f:
                f.write(self.data)
        self._file = open(path, "r+b")
        self._file.readinto(self.data)

    def _mirror(self, a, n):
        f = self._file
        if f is not None:
            f.seek(a)
            f.write(memoryview(self.data)[a:a + n])
            f.flush()

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    # -- power --------------------------------------------------------------

    def cut_after(self, n, torn=True, fraction=0.5, noise=False, count_erases=False,
                  erase_pattern="prefix"):
        if n < 1:
            raise ValueError("n counts from 1 (the next operation)")
        self._countdown = n
        self._torn = torn
        self._fraction = fraction
        self._noise = noise
        self._count_erases = count_erases
        self._erase_pattern = erase_pattern

    def power_off(self):
        self._dead = True
        self._countdown = 0

    def power_on(self):
        self._dead = False
        self._countdown = 0

    def reboot(self):
        new = NorFlash(self.block_size, self.num_blocks, self.prog_size, _image=self)
        self.data = bytearray(self.data)
        self.block_erases = list(self.block_erases)
        self._file = None
        self._dead = False
        self._countdown = 0
        self._retired = True
        return new

    @property
    def cut(self):
        """True when the power has been cut (and not restored)."""
        return self._dead

    def disarm(self):
        """Cancel a cut_after() that has not fired yet; returns the ops left."""
        left = self._countdown
        self._countdown = 0
        return left

    def _tick(self):
        # Count one operation; True when this one is the cut.
        if self._countdown:
            self._countdown -= 1
            if self._countdown == 0:
                self._dead = True
                return True
        return False

    # -- block protocol -----------------------------------------------------

    def _addr(self, n, off, length):
        a = n * self.block_size + off
        if n < 0 or off < 0 or a + length > self.size:
            raise ValueError("access outside the device")
        return a

    @micropython.native
    def readblocks(self, n, buf, off=0):
        if self._dead:
            raise PowerCut
        a = self._addr(n, off, len(buf))
        self.reads += 1
        _copy(buf, 0, self.data, a, len(buf))

    @micropython.native
    def writeblocks(self, n, buf, off=None):
        if off is None:  # simple protocol: whole blocks, erase first
            nb = (len(buf) + self.block_size - 1) // self.block_size
            for i in range(nb):
                self.erase(n + i)
            off = 0
        if self._dead:
            raise PowerCut
        length = len(buf)
        a = self._addr(n, off, length)
        p = self.prog_size
        if a % p or length % p:
            raise ProgramError("unaligned program at %d+%d (prog_size %d)" % (a, length, p))
        bad = _first_programmed(self.data, a, length)
        if bad >= 0 and not self._retired:   # (a retired copy just absorbs writes)
            raise ProgramError("program over a programmed byte at block %d offset %d"
                               % (n, off + bad))
        self.programs += 1
        if self._tick():
            if self._torn:
                k = int(length * self._fraction)
                _program(self.data, a, buf, k, 0)
                self.programmed_bytes += k
                if self._noise and k < length:
                    m = min(16, length - k)
                    tail = memoryview(buf)[k:k + m]
                    _program(self.data, a + k, tail, m, 0x55)
                    k += m
                self._mirror(a, k)
            raise PowerCut
        _program(self.data, a, buf, length, 0)
        self.programmed_bytes += length
        if self._file is not None:
            self._mirror(a, length)

    @micropython.native
    def erase(self, n):
        if self._dead:
            raise PowerCut
        a = self._addr(n, 0, self.block_size)
        bs = self.block_size
        self.erases += 1
        self.block_erases[n] += 1
        if self._count_erases and self._tick():
            if self._torn:
                pat = self._erase_pattern
                k = int(bs * self._fraction)
                if pat == "prefix":
                    _erase(self.data, a, k)
                elif pat == "suffix":
                    _erase(self.data, a + bs - k, k)
                else:  # stripes: every other 64-byte run
                    for s in range(0, bs, 128):
                        _erase(self.data, a + s, min(64, bs - s))
                self._mirror(a, bs)
            raise PowerCut
        _erase(self.data, a, bs)
        if self._file is not None:
            self._mirror(a, bs)

    def ioctl(self, op, arg):
        if op == 4:
            return self.num_blocks
        if op == 5:
            return self.block_size
        if self._dead:
            raise PowerCut
        if op == 6:
            self.erase(arg)
            return 0
        if op in (1, 2, 3):
            return 0
        return None

    # -- helpers for tests --------------------------------------------------

    def stats(self):
        return {"programs": self.programs, "programmed_bytes": self.programmed_bytes,
                "erases": self.erases, "max_block_erases": max(self.block_erases)}

    def reset_counters(self):
        self.programs = self.programmed_bytes = self.erases = self.reads = 0
        for i in range(self.num_blocks):
            self.block_erases[i] = 0

    def snapshot(self):
        return bytes(self.data)

    def restore(self, image):
        _copy(self.data, 0, image, 0, self.size)


class FailingNorFlash(NorFlash):
    # A device whose writes raise OSError(5) (EIO) while .bad is set: a
    # failing flash chip, for the stores' write-error paths.
    bad = False

    def writeblocks(self, n, buf, off=None):
        if self.bad:
            raise OSError(5)
        return super().writeblocks(n, buf, off)
