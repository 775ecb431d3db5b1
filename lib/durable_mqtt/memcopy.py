# Byte copy and fill between caller buffers, by offset, without slicing.
#
#   copy(dst, doff, src, soff, n)   dst[doff:doff+n] = src[soff:soff+n]
#   fill(dst, off, n, value)        dst[off:off+n] = value (0..255) repeated
#
# A slice (`buf[a:b]`, `mv[a:b]`) makes a new object, so hot paths copy with
# these instead. Both allocate nothing. They are viper (native code) where the
# firmware has the viper emitter and plain Python otherwise. The caller checks
# bounds: viper does not, and writing past the end corrupts the heap.
# Overlapping ranges inside one buffer are copied as memmove would.
import micropython

try:
    @micropython.viper
    def copy(dst: ptr8, doff: int, src: ptr8, soff: int, n: int):  # noalloc
        if doff <= soff:
            i = 0
            while i < n:
                dst[doff + i] = src[soff + i]
                i += 1
        else:  # same buffer, destination after source: copy backwards
            i = n - 1
            while i >= 0:
                dst[doff + i] = src[soff + i]
                i -= 1

    @micropython.viper
    def fill(dst: ptr8, off: int, n: int, value: int):  # noalloc
        i = off
        end = off + n
        while i < end:
            dst[i] = value
            i += 1

except Exception:  # no viper emitter in this firmware
    def copy(dst, doff, src, soff, n):  # noalloc
        if doff <= soff:
            for i in range(n):
                dst[doff + i] = src[soff + i]
        else:
            for i in range(n - 1, -1, -1):
                dst[doff + i] = src[soff + i]

    def fill(dst, off, n, value):  # noalloc
        for i in range(off, off + n):
            dst[i] = value
