# The only native code in durable_mqtt: two short viper loops that run for
# every byte the flash store writes or reads, measured worth their bytes in
# `make bench` (docs/benchmarks.md, "crc"). crc.py imports them and falls
# back to bytecode when the firmware has no viper emitter or this .mpy was
# built for another architecture. The callers check bounds: viper does not.
import micropython


@micropython.viper
def crc_add(state: ptr32, buf: ptr8, off: int, n: int, tab: ptr32):
    # CRC-32 (IEEE, as zlib) of buf[off:off+n] into the running register
    # state[0], with a 16-entry table (a half byte per step).
    c = uint(state[0])
    i = off
    end = off + n
    while i < end:
        c ^= uint(buf[i])
        c = (c >> 4) ^ uint(tab[c & 15])
        c = (c >> 4) ^ uint(tab[c & 15])
        i += 1
    state[0] = c


@micropython.viper
def copy(dst: ptr8, doff: int, src: ptr8, soff: int, n: int):
    # dst[doff:doff+n] = src[soff:soff+n] without a slice (a slice allocates).
    i = 0
    while i < n:
        dst[doff + i] = src[soff + i]
        i += 1
