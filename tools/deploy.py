#!/usr/bin/env python3
"""deploy: copy durable_mqtt and the firmware app to a board with mpremote.

    .venv/bin/python tools/deploy.py --port /dev/ttyUSB0                 # .py sources
    .venv/bin/python tools/deploy.py --port /dev/ttyACM0 --mpy armv6m    # `make mpy` output
    .venv/bin/python tools/deploy.py --port /dev/ttyUSB0 --dry-run       # print, run nothing
    make deploy PORT=/dev/ttyUSB0 [MPY=xtensawin] [DEPLOY_ARGS=--with-secrets]

Everything happens in one mpremote session (one connection, one raw REPL):

  1. exec: make /lib and /lib/durable_mqtt if missing, and delete every file
     in /lib/durable_mqtt that this deploy does not bring. That matters: the
     board imports client.py before client.mpy, so a .py left from an earlier
     deploy would shadow a new .mpy (and a module dropped from the library
     would linger).
  2. cp each library file to :/lib/durable_mqtt/: lib/durable_mqtt/*.py, or
     with --mpy ARCH build/mpy/ARCH/durable_mqtt/*.mpy (ARCH xtensawin for
     ESP32, armv6m for RP2040; esp32, rp2 and rp2040 are accepted too).
     mpremote skips a file whose copy on the board has the same hash.
  3. cp the app from firmware/ to the board's root: every top-level *.py
     (boot.py, main.py, ...) and config.json when present. secrets.json and
     secrets.py (Wi-Fi and broker passwords) only with --with-secrets.
  4. reset (a hard reset, so boot.py and main.py run as at power-up).

--dry-run prints that command, one step a line, in shell syntax, and runs
nothing. --resume and --no-reset make it usable against the unix port behind
socat (TOOLCHAIN §5), which has no soft or hard reset; --remote-root puts the
files under another directory on the target. CPython 3.8+, stdlib only.
"""
import argparse
import json
import pathlib
import shlex
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PKG_DIR = ROOT / "lib" / "durable_mqtt"
ARCH_ALIASES = {"esp32": "xtensawin", "rp2": "armv6m", "rp2040": "armv6m", "pico": "armv6m"}
SECRETS = ("secrets.json", "secrets.py")

# Run on the board (MicroPython): mkdir -p and remove files not deployed.
# Strings in double quotes, so the shell form of the command stays readable.
_PREPARE = """import os
for d in ({lib}, {pkg}):
    try:
        os.mkdir(d)
    except OSError:
        pass
for f in os.listdir({pkg}):
    if f not in ({keep},):
        os.remove({pkg} + "/" + f)
"""


class DeployError(Exception):
    pass


def library_files(mpy_arch=None, build_dir=None):
    """(local path, file name) for each module, .py or the built .mpy."""
    mods = sorted(PKG_DIR.glob("*.py"))
    if not mpy_arch:
        return [(p, p.name) for p in mods]
    out = pathlib.Path(build_dir) / mpy_arch / "durable_mqtt"
    return [(out / (p.stem + ".mpy"), p.stem + ".mpy") for p in mods]


def check_built(files):
    """Every .mpy present and newer than its source, else DeployError."""
    for path, name in files:
        src = PKG_DIR / (pathlib.Path(name).stem + ".py")
        if not path.exists():
            raise DeployError("%s is missing: run `make mpy` first" % path)
        if path.stat().st_mtime < src.stat().st_mtime:
            raise DeployError("%s is older than %s: run `make mpy` again" % (path, src))


def app_files(firmware_dir, with_secrets):
    d = pathlib.Path(firmware_dir)
    if not d.is_dir():
        return []
    files = sorted(p for p in d.iterdir()
                   if p.is_file() and (p.suffix == ".py" or p.name == "config.json"))
    if with_secrets:
        files += [d / s for s in SECRETS if (d / s).is_file() and d / s not in files]
    else:
        files = [p for p in files if p.name not in SECRETS]
    return files


def steps(mpy_arch=None, with_secrets=False, firmware_dir=ROOT / "firmware",
          build_dir=ROOT / "build" / "mpy", remote_root="/", reset=True):
    """The mpremote sub-commands, in order (each a list of arguments)."""
    root = remote_root.rstrip("/")
    lib, pkg = root + "/lib", root + "/lib/durable_mqtt"
    lib_files = library_files(mpy_arch, build_dir)
    keep = tuple(name for _, name in lib_files)
    out = [["exec", _PREPARE.format(lib=json.dumps(lib), pkg=json.dumps(pkg),
                                    keep=", ".join(json.dumps(k) for k in keep))]]
    out += [["cp", _rel(path), ":%s/%s" % (pkg, name)] for path, name in lib_files]
    out += [["cp", _rel(path), ":%s/%s" % (root, path.name)] for path in app_files(firmware_dir, with_secrets)]
    if reset:
        out.append(["reset"])
    return out


def _rel(path):
    path = pathlib.Path(path)
    try:
        return str(path.resolve().relative_to(pathlib.Path.cwd()))
    except ValueError:
        return str(path)


def command(mpremote, port, step_list, resume=False):
    """The one mpremote invocation: connect PORT [resume] step + step + ..."""
    cmd = [mpremote, "connect", port] + (["resume"] if resume else [])
    for i, s in enumerate(step_list):
        cmd += (["+"] if i else []) + s
    return cmd


def show(mpremote, port, step_list, resume=False):
    """Shell syntax, one step a line."""
    head = [mpremote, "connect", port] + (["resume"] if resume else [])
    lines = [shlex.join(head)]
    for i, s in enumerate(step_list):
        lines.append("  " + ("+ " if i else "") + shlex.join(s))
    return " \\\n".join(lines) + "\n"


def find_mpremote():
    venv = pathlib.Path(sys.executable).parent / "mpremote"
    if venv.exists():
        return str(venv)
    return shutil.which("mpremote") or "mpremote"


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Copy durable_mqtt (.py or .mpy) and the firmware/ app to a board with mpremote.",
        epilog="Example: make deploy PORT=/dev/ttyUSB0 MPY=xtensawin")
    ap.add_argument("--port", default="/dev/ttyUSB0",
                    help="serial port of the board (default /dev/ttyUSB0; mpremote also takes e.g. 'a0' or 'id:...')")
    ap.add_argument("--mpy", metavar="ARCH",
                    help="copy the .mpy build for ARCH (xtensawin/esp32 or armv6m/rp2040) instead of .py")
    ap.add_argument("--with-secrets", action="store_true",
                    help="also copy firmware/secrets.json (and secrets.py); off by default")
    ap.add_argument("--dry-run", action="store_true", help="print the mpremote command and exit")
    ap.add_argument("--firmware", default=str(ROOT / "firmware"), help="app folder (default firmware/)")
    ap.add_argument("--build-dir", default=str(ROOT / "build" / "mpy"), help="where `make mpy` wrote (default build/mpy)")
    ap.add_argument("--remote-root", default="/", help="target folder on the board (default /)")
    ap.add_argument("--resume", action="store_true", help="pass mpremote 'resume' (no soft reset on connect)")
    ap.add_argument("--no-reset", action="store_true", help="do not reset the board at the end")
    ap.add_argument("--mpremote", default=None, help="mpremote to run (default: the venv's)")
    args = ap.parse_args(argv)

    arch = ARCH_ALIASES.get(args.mpy, args.mpy) if args.mpy else None
    st = steps(arch, args.with_secrets, args.firmware, args.build_dir, args.remote_root, not args.no_reset)
    mpremote = args.mpremote or find_mpremote()
    if arch:
        try:
            check_built(library_files(arch, args.build_dir))
        except DeployError as e:
            if not args.dry_run:
                print("error:", e, file=sys.stderr)
                return 2
            print("warning:", e, file=sys.stderr)
    if args.with_secrets and not any(pathlib.Path(args.firmware, s).is_file() for s in SECRETS):
        print("warning: --with-secrets, but %s has no secrets.json" % args.firmware, file=sys.stderr)
    if args.dry_run:
        sys.stdout.write(show(mpremote, args.port, st, args.resume))
        return 0
    return subprocess.call(command(mpremote, args.port, st, args.resume))


if __name__ == "__main__":
    sys.exit(main())
