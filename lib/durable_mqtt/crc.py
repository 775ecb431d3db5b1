# CRC-32 (IEEE 802.3, the zlib polynomial) for the flash records, in pieces
# and without big integers: a board's small int holds 31 bits, so the
# register lives in a 4-byte buffer and never becomes a Python int.
#
#   s = bytearray(4)
#   start(s); add(s, buf, off, n); ...; put(s, dst, off)   # CRC big-endian at dst[off]
#   check(buf, off, n)   # True when buf[off+n:off+n+4] holds the CRC of buf[off:off+n]
#   copy(dst, doff, src, soff, n)   # a byte copy between buffers that allocates nothing
#
# The loops are viper (native.py) where the firmware can run it, else the
# bytecode below: same results, about 40 times slower.
from array import array

# The table for 4 bits at a time, x^32 polynomial reflected (0xEDB88320).
_TAB = array("I", (0, 0x1DB71064, 0x3B6E20C8, 0x26D930AC, 0x76DC4190, 0x6B6B51F4, 0x4DB26158,
                   0x5005713C, 0xEDB88320, 0xF00F9344, 0xD6D6A3E8, 0xCB61B38C, 0x9B64C2B0,
                   0x86D3D2D4, 0xA00AE278, 0xBDBDF21C))
_T16 = bytearray(64)             # the same table as 16-bit halves, for the bytecode
for _i in range(16):
    _T16[4 * _i] = _TAB[_i] >> 24
    _T16[4 * _i + 1] = (_TAB[_i] >> 16) & 0xFF
    _T16[4 * _i + 2] = (_TAB[_i] >> 8) & 0xFF
    _T16[4 * _i + 3] = _TAB[_i] & 0xFF
_reg = array("I", (0,))          # one-shot register for check()
_tmp = bytearray(4)

try:
    from .native import crc_add, copy

    def add(s, buf, off, n):  # noalloc
        crc_add(s, buf, off, n, _TAB)

except Exception:                # no viper here, or the .mpy is for another arch
    def add(s, buf, off, n):  # noalloc
        # The register as two 16-bit halves (s is little-endian as array("I")).
        lo = s[0] | (s[1] << 8)
        hi = s[2] | (s[3] << 8)
        t = _T16
        for i in range(off, off + n):
            lo ^= buf[i]
            j = (lo & 15) << 2
            lo = ((lo >> 4) | ((hi & 15) << 12)) ^ ((t[j + 2] << 8) | t[j + 3])
            hi = (hi >> 4) ^ ((t[j] << 8) | t[j + 1])
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


def start(s):  # noalloc
    s[0] = s[1] = s[2] = s[3] = 0xFF


def put(s, dst, off):  # noalloc
    # The final value is the register inverted; s holds it little-endian.
    dst[off] = s[3] ^ 0xFF
    dst[off + 1] = s[2] ^ 0xFF
    dst[off + 2] = s[1] ^ 0xFF
    dst[off + 3] = s[0] ^ 0xFF


def seal(buf, off, n):  # noalloc
    """Write the CRC of buf[off:off+n] at buf[off+n]."""
    start(_tmp)
    add(_tmp, buf, off, n)
    put(_tmp, buf, off + n)


def check(buf, off, n):  # noalloc
    start(_tmp)
    add(_tmp, buf, off, n)
    p = off + n
    return (buf[p] == _tmp[3] ^ 0xFF and buf[p + 1] == _tmp[2] ^ 0xFF
            and buf[p + 2] == _tmp[1] ^ 0xFF and buf[p + 3] == _tmp[0] ^ 0xFF)
