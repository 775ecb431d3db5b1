# mpy_check: which .mpy files this firmware loads, and whether durable_mqtt's do.
# Runs ON THE BOARD (MicroPython), from a computer:
#
#     mpremote run tools/mpy_check.py
#
# or at the REPL after copying it (`mpremote cp tools/mpy_check.py :`,
# then `import mpy_check`). It prints, for example:
#
#     mpy 6.3, arch xtensawin
#     bytecode .mpy (package-mpy.json, .mpy 6): load here
#     native .mpy for xtensawin (make deploy MPY=xtensawin, .mpy 6.3): load here
#     viper: yes (native.py compiles here: the CRC runs as machine code)
#     /lib/durable_mqtt: 44 .mpy files, all load here
#
# The rules are MicroPython's own (py/persistentcode.c, mp_raw_code_load;
# docs/reference/mpyfiles.rst). sys.implementation._mpy holds the .mpy
# version in its low 8 bits, the sub-version in bits 8-9 and the native
# arch in bits 10-15 (6.3 on MicroPython 1.23 and later). A .mpy file's
# header is b"M", its version, arch << 2 | sub-version, and the small-int
# bits it needs. A file loads when its version equals the firmware's; if it
# holds machine code, its sub-version must be equal too, and its arch one
# the firmware runs (a Thumb-2 core also runs armv6m code). Bytecode-only
# files carry no arch and sub-version 0: durable_mqtt's mip set loads on any
# firmware with .mpy version 6 (MicroPython 1.19 and later by these rules;
# the library itself is tested on 1.29.0-preview, the unix port). `sys.implementation._mpy & 0xff`
# alone prints 6 for 6.1, 6.2 and 6.3 alike: native code needs the sub-version.
import sys

ARCHES = (None, "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp",
          "xtensa", "xtensawin", "rv32imc", "rv64imc")
_ARMV6M = 4
_ARMV7EMDP = 8
SHIPPED_VERSION = 6    # the mip set's bytecode files (mpy-cross 1.29 writes 6, no arch)
SHIPPED_SUB = 3        # make mpy's native.mpy (mpy-cross 1.29: 6.3)


def decode(m):
    """(version, sub-version, arch number) of a sys.implementation._mpy value."""
    feat = (m >> 8) & 0xFF
    return m & 0xFF, feat & 3, (feat >> 2) & 0x2F


def arch_name(n):
    return ARCHES[n] if 0 <= n < len(ARCHES) else "arch%d" % n


def runs_arch(board_arch, arch):
    # MPY_FEATURE_ARCH_TEST: the same arch; Thumb cores take any older Thumb.
    if _ARMV6M <= board_arch <= _ARMV7EMDP:
        return _ARMV6M <= arch <= board_arch
    return arch == board_arch


def loads(board, header):
    """None when a .mpy file with this 4-byte header loads on firmware
    `board` (a decode() triple), else the reason it does not."""
    ver, sub, barch = board
    if len(header) < 4 or header[0] != 0x4D:
        return "not a .mpy file"
    arch = (header[2] >> 2) & 0x2F
    if header[1] != ver:
        return "incompatible .mpy file: version %d, the firmware loads %d" % (header[1], ver)
    if arch and (header[2] & 3) != sub:
        return "incompatible .mpy file: native code for %d.%d, the firmware is %d.%d" % (
            header[1], header[2] & 3, ver, sub)
    if arch and not barch:
        return "native code in .mpy unsupported by this firmware"
    if arch and not runs_arch(barch, arch):
        return "incompatible .mpy arch: %s code, the firmware runs %s" % (arch_name(arch), arch_name(barch))
    return None


def report(m, installed=(), viper=None):
    """The lines mpy_check prints, for _mpy value m, installed files
    [(folder, [(name, header)])] and viper True/False/None (not known)."""
    if m is None:
        return ["no sys.implementation._mpy: this firmware cannot import .mpy files;",
                "install the .py package (package.json) or freeze the library"]
    board = decode(m)
    ver, sub, barch = board
    out = ["mpy %d.%d, arch %s" % (ver, sub, arch_name(barch) if barch else "none (no native code)")]
    why = loads(board, bytes((0x4D, SHIPPED_VERSION, 0, 31)))
    out.append("bytecode .mpy (package-mpy.json, .mpy %d): %s" % (
        SHIPPED_VERSION, "load here" if why is None else "do NOT load here (%s); install package.json" % why))
    if barch:
        name = arch_name(barch)
        why = loads(board, bytes((0x4D, SHIPPED_VERSION, barch << 2 | SHIPPED_SUB, 31)))
        out.append("native .mpy for %s (make deploy MPY=%s, .mpy %d.%d): %s" % (
            name, name, SHIPPED_VERSION, SHIPPED_SUB, "load here" if why is None else "do NOT load here (%s)" % why))
    if viper is not None:
        out.append("viper: yes (native.py compiles here: the CRC runs as machine code)" if viper
                   else "viper: no (crc.py falls back to crcpy.py: same results, slower)")
    for folder, files in installed:
        bad = [(n, loads(board, h)) for n, h in files if loads(board, h)]
        if not bad:
            out.append("%s: %d .mpy files, all load here" % (folder, len(files)))
        for n, why in bad:
            out.append("%s/%s: does NOT load here: %s" % (folder, n, why))
    return out


def _installed():
    import os
    found = []
    for p in sys.path:
        d = (p or ".") + "/durable_mqtt"
        try:
            names = sorted(n for n in os.listdir(d) if n.endswith(".mpy"))
        except OSError:
            continue
        files = []
        for n in names:
            with open(d + "/" + n, "rb") as f:
                files.append((n, f.read(4)))
        if files:
            found.append((d, files))
    return found


def _viper():
    try:
        exec("import micropython\n@micropython.viper\ndef _f(x: int) -> int:\n    return x + 1\n", {})
        return True
    except Exception:
        return False


def main():
    m = getattr(sys.implementation, "_mpy", None)
    for line in report(m, _installed(), _viper()):
        print(line)


main()
