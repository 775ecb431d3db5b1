# Byte copy and fill between caller buffers, by offset, without slicing.
#
#   copy(dst, doff, src, soff, n)   dst[doff:doff+n] = src[soff:soff+n]
#   fill(dst, off, n, value)        dst[off:off+n] = value (0..255), n times
#
# A slice (`buf[a:b]`, `mv[a:b]`) makes a new object, so hot paths copy with
# these instead. Both allocate nothing. The caller checks bounds: the viper
# versions do not, and writing past the end corrupts the heap. Overlapping
# ranges in one buffer are handled as memmove does.
#
# The viper versions (native code) are compiled from a string at import, so
# that firmware without the viper emitter, where `@micropython.viper` is a
# SyntaxError at compile time and no try/except around it in the module
# itself could help, falls back to the plain Python versions below.

_VIPER = """
@micropython.viper
def copy(dst: ptr8, doff: int, src: ptr8, soff: int, n: int):
    if doff <= soff:
        i = 0
        while i < n:
            dst[doff + i] = src[soff + i]
            i += 1
    else:
        i = n - 1
        while i >= 0:
            dst[doff + i] = src[soff + i]
            i -= 1


@micropython.viper
def fill(dst: ptr8, off: int, n: int, value: int):
    i = off
    end = off + n
    while i < end:
        dst[i] = value
        i += 1
"""


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


native = False                # True when copy and fill are the viper versions
try:
    import micropython        # the exec'd source uses @micropython.viper
    exec(_VIPER, globals())   # replaces copy and fill
    native = True
except Exception:
    pass
del _VIPER
