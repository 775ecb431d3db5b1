# The bytecode versions of native.py's loops, for firmware without the viper
# emitter (crc.py imports this only then). Same results, about 40 times
# slower; nothing here makes a big integer.
from .crc import TAB

# TAB as 16-bit halves (hi, lo) so that every intermediate stays small.
_H = bytearray(64)
for _i in range(16):
    _v = TAB[_i]
    _H[4 * _i] = _v >> 24
    _H[4 * _i + 1] = (_v >> 16) & 0xFF
    _H[4 * _i + 2] = (_v >> 8) & 0xFF
    _H[4 * _i + 3] = _v & 0xFF


def add(s, buf, off, n):  # noalloc
    # The register as two 16-bit halves (s is little-endian as in native.py).
    lo = s[0] | (s[1] << 8)
    hi = s[2] | (s[3] << 8)
    t = _H
    for i in range(off, off + n):
        lo ^= buf[i]
        for _ in range(2):
            j = (lo & 15) << 2
            lo = ((lo >> 4) | ((hi & 15) << 12)) ^ ((t[j + 2] << 8) | t[j + 3])
            hi = (hi >> 4) ^ ((t[j] << 8) | t[j + 1])
    s[0] = lo & 0xFF
    s[1] = lo >> 8
    s[2] = hi & 0xFF
    s[3] = hi >> 8


def copy(dst, doff, src, soff, n):  # noalloc
    for i in range(n):
        dst[doff + i] = src[soff + i]
