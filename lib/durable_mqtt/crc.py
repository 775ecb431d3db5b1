# CRC-32 (IEEE 802.3, the zlib polynomial) for the flash records, in pieces
# and without big integers: a board's small int holds 31 bits, so the
# register lives in a 4-byte buffer and never becomes a Python int.
#
#   s = bytearray(4)
#   start(s); add(s, buf, off, n); ...; put(s, dst, off)   # CRC big-endian at dst[off]
#   seal(buf, off, n)    # the CRC of buf[off:off+n] written at buf[off+n]
#   check(buf, off, n)   # True when buf[off+n:off+n+4] holds that CRC
#   copy(dst, doff, src, soff, n)   # a byte copy between buffers, allocating nothing
#
# add() and copy() are viper (native.py) where the firmware can run it, else
# bytecode (crcpy.py, loaded only then): same results, about 40 times slower.
from array import array

# The table for 4 bits at a time, x^32 polynomial reflected (0xEDB88320).
TAB = array("I", (0, 0x1DB71064, 0x3B6E20C8, 0x26D930AC, 0x76DC4190, 0x6B6B51F4, 0x4DB26158,
                  0x5005713C, 0xEDB88320, 0xF00F9344, 0xD6D6A3E8, 0xCB61B38C, 0x9B64C2B0,
                  0x86D3D2D4, 0xA00AE278, 0xBDBDF21C))
_s = bytearray(4)            # the register of seal() and check()

try:
    from .native import crc_add, copy

    def add(s, buf, off, n):  # noalloc
        crc_add(s, buf, off, n, TAB)
except Exception:            # no viper here, or the .mpy is for another arch
    from .crcpy import add, copy


def start(s):  # noalloc
    s[0] = s[1] = s[2] = s[3] = 0xFF


def put(s, dst, off):  # noalloc
    # The final value is the register inverted; s holds it little-endian.
    for k in range(4):
        dst[off + k] = s[3 - k] ^ 0xFF


def seal(buf, off, n):  # noalloc
    # Write the CRC of buf[off:off+n] at buf[off+n].
    start(_s)
    add(_s, buf, off, n)
    put(_s, buf, off + n)


def check(buf, off, n):  # noalloc
    start(_s)
    add(_s, buf, off, n)
    p = off + n
    for k in range(4):
        if buf[p + k] != _s[3 - k] ^ 0xFF:
            return False
    return True
