# CRC-32 (IEEE 802.3, the zlib/binascii polynomial) that never makes a big
# integer. On ESP32 and RP2040 a small int holds 31 bits, so a CRC-32 value
# returned to Python would be a heap-allocated long. These helpers therefore
# never return the CRC: they write it into the buffer or compare it there.
#
#   put(buf, off, n)    writes CRC-32(buf[off:off+n]) big-endian at buf[off+n]
#   check(buf, off, n)  True when buf[off+n:off+n+4] holds that CRC
#
# Both are viper (native code, ~40x faster than bytecode) where the firmware
# has the viper emitter, and fall back to plain Python otherwise. They take
# offsets instead of slices, so calling them allocates nothing.
import micropython

# Half-byte table: 16 entries of 32 bits, 64 bytes of RAM instead of 1 KB.
_T = b"\x00\x00\x00\x00\x1d\xb7\x10\x64\x3b\x6e\x20\xc8\x26\xd9\x30\xac" \
     b"\x76\xdc\x41\x90\x6b\x6b\x51\xf4\x4d\xb2\x61\x58\x50\x05\x71\x3c" \
     b"\xed\xb8\x83\x20\xf0\x0f\x93\x44\xd6\xd6\xa3\xe8\xcb\x61\xb3\x8c" \
     b"\x9b\x64\xc2\xb0\x86\xd3\xd2\xd4\xa0\x0a\xe2\x78\xbd\xbd\xf2\x1c"

try:
    @micropython.viper
    def _crc(buf: ptr8, off: int, n: int, tab: ptr8) -> uint:
        c = uint(0xFFFFFFFF)
        i = off
        end = off + n
        while i < end:
            c ^= uint(buf[i])
            j = (c & 0xF) << 2
            c = (c >> 4) ^ ((uint(tab[j]) << 24) | (uint(tab[j + 1]) << 16) | (uint(tab[j + 2]) << 8) | uint(tab[j + 3]))
            j = (c & 0xF) << 2
            c = (c >> 4) ^ ((uint(tab[j]) << 24) | (uint(tab[j + 1]) << 16) | (uint(tab[j + 2]) << 8) | uint(tab[j + 3]))
            i += 1
        return c ^ uint(0xFFFFFFFF)

    @micropython.viper
    def _put(buf: ptr8, off: int, n: int, tab: ptr8):
        c = uint(_crc(buf, off, n, tab))
        p = off + n
        buf[p] = c >> 24
        buf[p + 1] = (c >> 16) & 0xFF
        buf[p + 2] = (c >> 8) & 0xFF
        buf[p + 3] = c & 0xFF

    @micropython.viper
    def _check(buf: ptr8, off: int, n: int, tab: ptr8) -> bool:
        c = uint(_crc(buf, off, n, tab))
        p = off + n
        return (uint(buf[p]) == (c >> 24) and uint(buf[p + 1]) == ((c >> 16) & 0xFF)
                and uint(buf[p + 2]) == ((c >> 8) & 0xFF) and uint(buf[p + 3]) == (c & 0xFF))

    def put(buf, off, n):  # noalloc
        _put(buf, off, n, _T)

    def check(buf, off, n):  # noalloc
        return _check(buf, off, n, _T)

except Exception:  # no viper emitter in this firmware: same result, slower
    def _crc16(buf, off, n):
        # Works on the two 16-bit halves so every intermediate stays small.
        hi = lo = 0xFFFF
        t = _T
        for i in range(off, off + n):
            lo ^= buf[i]
            for _ in range(2):
                j = (lo & 0xF) << 2
                lo = ((lo >> 4) | ((hi & 0xF) << 12)) ^ ((t[j + 2] << 8) | t[j + 3])
                hi = (hi >> 4) ^ ((t[j] << 8) | t[j + 1])
        return hi ^ 0xFFFF, lo ^ 0xFFFF

    def put(buf, off, n):
        hi, lo = _crc16(buf, off, n)
        p = off + n
        buf[p] = hi >> 8
        buf[p + 1] = hi & 0xFF
        buf[p + 2] = lo >> 8
        buf[p + 3] = lo & 0xFF

    def check(buf, off, n):
        hi, lo = _crc16(buf, off, n)
        p = off + n
        return buf[p] == hi >> 8 and buf[p + 1] == hi & 0xFF and buf[p + 2] == lo >> 8 and buf[p + 3] == lo & 0xFF
