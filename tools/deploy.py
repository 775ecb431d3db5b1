#!/usr/bin/env python3
"""deploy: copy durable_mqtt, the board's files and the firmware app to a board with mpremote.

    .venv/bin/python tools/deploy.py --port /dev/ttyUSB0                 # ESP32, .py sources
    .venv/bin/python tools/deploy.py --port /dev/ttyACM0 --board rp2040 --mpy armv6m   # `make mpy` output
    .venv/bin/python tools/deploy.py --port /dev/ttyUSB0 --dry-run       # print, run nothing
    make deploy PORT=/dev/ttyUSB0 [BOARD=rp2040] [MPY=xtensawin] [DEPLOY_ARGS=--with-secrets]

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
  3. cp the board's files to the board's root: boards/<board>/profile.py as
     profile.py (the recommended client settings and where the session
     lives) and boards/wlan.py as wlan.py (the Wi-Fi link the firmware
     hands to RobustClient). --board is esp32, rp2040 or unix; without it,
     the board whose arch --mpy names (armv6m: rp2040), else esp32.
  4. cp the app from firmware/ to the board's root: every top-level *.py
     (boot.py, main.py, ...) and config.json when present. secrets.json and
     secrets.py (Wi-Fi and broker passwords) only with --with-secrets.
  5. reset (a hard reset, so boot.py and main.py run as at power-up).

Before that it checks that every module the deployed .py files import is
either deployed or one the firmware has built in (BUILTINS), and warns
otherwise: that is how `ImportError: no module named 'profile'` is caught
on the host. With --mpy it refuses a build that is missing, older than the
sources, or whose native.mpy holds machine code for another arch than the
board's.

--dry-run prints that command, one step a line, in shell syntax, and runs
nothing. --resume and --no-reset make it usable against the unix port behind
socat (TOOLCHAIN §5), which has no soft or hard reset; --remote-root puts the
files under another directory on the target. CPython 3.8+, stdlib only.
"""
import argparse
import ast
import json
import pathlib
import shlex
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PKG_DIR = ROOT / "lib" / "durable_mqtt"
BOARDS_DIR = ROOT / "boards"
ARCH_ALIASES = {"esp32": "xtensawin", "rp2": "armv6m", "rp2040": "armv6m", "pico": "armv6m", "unix": "x64"}
# The machine code a board runs (its firmware's .mpy arch; the unix board is
# the unix port on this machine).
BOARD_ARCHES = {"esp32": ("xtensawin",), "rp2040": ("armv6m",), "unix": ("x64", "x86")}
SECRETS = ("secrets.json", "secrets.py")
# Modules a stock ESP32 or RP2040 firmware (or the unix port) has built in or
# frozen: an import of one of these needs no file on the board.
BUILTINS = frozenset("""
    _thread array asyncio binascii bluetooth builtins cmath collections deflate dht ds18x20 errno
    esp esp32 espnow framebuf gc hashlib heapq io json machine math micropython mip neopixel
    network ntptime onewire os platform random re requests rp2 select socket ssl struct sys time
    uasyncio uctypes vfs webrepl
""".split())

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


sys.path.insert(0, str(ROOT / "tools"))
import build_mpy  # noqa: E402  (mpy_arch: the arch in a .mpy header)


class DeployError(Exception):
    pass


def library_files(mpy_arch=None, build_dir=None):
    """(local path, file name) for each module, .py or the built .mpy."""
    mods = sorted(PKG_DIR.glob("*.py"))
    if not mpy_arch:
        return [(p, p.name) for p in mods]
    out = pathlib.Path(build_dir) / mpy_arch / "durable_mqtt"
    return [(out / (p.stem + ".mpy"), p.stem + ".mpy") for p in mods]


def check_built(files, arch=None):
    """Every .mpy present, newer than its source, and any machine code in it
    for `arch`, else DeployError."""
    for path, name in files:
        src = PKG_DIR / (pathlib.Path(name).stem + ".py")
        if not path.exists():
            raise DeployError("%s is missing: run `make mpy` first" % path)
        if path.stat().st_mtime < src.stat().st_mtime:
            raise DeployError("%s is older than %s: run `make mpy` again" % (path, src))
        got = build_mpy.mpy_arch(path)
        if arch and got and got != arch:
            raise DeployError("%s holds %s machine code, not %s: run `make mpy` again" % (path, got, arch))


def boards():
    """The boards deploy knows: directories of boards/ with a profile.py."""
    return sorted(p.parent.name for p in BOARDS_DIR.glob("*/profile.py"))


def board_files(board):
    """(local path, name at the board's root) of the board's own files."""
    return [(BOARDS_DIR / board / "profile.py", "profile.py"), (BOARDS_DIR / "wlan.py", "wlan.py")]


def needs_secrets(board):
    """True for a board whose firmware brings Wi-Fi up from secrets.json
    (its profile has no setup(), which the simulated board uses instead)."""
    tree = ast.parse((BOARDS_DIR / board / "profile.py").read_text())
    return not any(isinstance(n, ast.FunctionDef) and n.name == "setup" for n in tree.body)


def imports(path):
    """Every module an .py file imports, anywhere in it (dotted names)."""
    out = []
    for node in ast.walk(ast.parse(pathlib.Path(path).read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            out.append(node.module)
            out += [node.module + "." + a.name for a in node.names]
    return out


def unresolved_imports(root_files, lib_names):
    """(file, module) for each import in the deployed top-level .py files that
    neither the deploy nor the firmware provides. root_files: (local path,
    name at the board's root); lib_names: file names in /lib/durable_mqtt."""
    top = {pathlib.Path(name).stem for _, name in root_files if name.endswith(".py")}
    pkg = {pathlib.PurePath(n).stem for n in lib_names}
    out = []
    for path, name in root_files:
        if not name.endswith(".py"):
            continue
        for mod in imports(path):
            head, _, sub = mod.partition(".")
            if head == "durable_mqtt":
                # durable_mqtt.X: a module of the package or a name __init__ exports
                first = sub.split(".")[0]
                ok = not sub or first in pkg or _exported(first)
            else:
                ok = head in top or head in BUILTINS
            if not ok and (name, mod) not in out:
                out.append((name, mod))
    return out


def _exported(name):
    tree = ast.parse((PKG_DIR / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            return True
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return True
    return False


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


def root_files(board="esp32", with_secrets=False, firmware_dir=ROOT / "firmware"):
    """(local path, name at the board's root): the board's files, then the app's."""
    return board_files(board) + [(p, p.name) for p in app_files(firmware_dir, with_secrets)]


def steps(mpy_arch=None, with_secrets=False, firmware_dir=ROOT / "firmware",
          build_dir=ROOT / "build" / "mpy", remote_root="/", reset=True, board="esp32"):
    """The mpremote sub-commands, in order (each a list of arguments)."""
    root = remote_root.rstrip("/")
    lib, pkg = root + "/lib", root + "/lib/durable_mqtt"
    lib_files = library_files(mpy_arch, build_dir)
    keep = tuple(name for _, name in lib_files)
    out = [["exec", _PREPARE.format(lib=json.dumps(lib), pkg=json.dumps(pkg),
                                    keep=", ".join(json.dumps(k) for k in keep))]]
    out += [["cp", _rel(path), ":%s/%s" % (pkg, name)] for path, name in lib_files]
    out += [["cp", _rel(path), ":%s/%s" % (root, name)]
            for path, name in root_files(board, with_secrets, firmware_dir)]
    if reset:
        out.append(["reset"])
    return out


def layout(step_list, remote_root="/"):
    """{path relative to the board's root: local file} of the cp steps: what
    the board's filesystem holds after the deploy (tests lay it out as a
    directory). The paths are relative: joining them to a folder stays in it."""
    prefix = ":" + remote_root.rstrip("/") + "/"
    out = {}
    for s in step_list:
        if s[0] == "cp":
            if not s[2].startswith(prefix):
                raise DeployError("%s is not under %s" % (s[2], remote_root))
            out[s[2][len(prefix):]] = pathlib.Path(s[1])
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
        description="Copy durable_mqtt (.py or .mpy), the board's profile.py and wlan.py, and the "
                    "firmware/ app to a board with mpremote.",
        epilog="Example: make deploy PORT=/dev/ttyACM0 BOARD=rp2040 MPY=armv6m")
    ap.add_argument("--port", default="/dev/ttyUSB0",
                    help="serial port of the board (default /dev/ttyUSB0; mpremote also takes e.g. 'a0' or 'id:...')")
    ap.add_argument("--board", choices=boards(),
                    help="board whose boards/<board>/profile.py goes on as profile.py (default: the "
                         "board of --mpy's arch, else esp32)")
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
    if args.board is None:
        args.board = next((b for b, a in BOARD_ARCHES.items() if arch in a), "esp32")
    if arch and arch not in BOARD_ARCHES.get(args.board, (arch,)):
        print("error: --mpy %s is not the arch of --board %s (%s)"
              % (args.mpy, args.board, " or ".join(BOARD_ARCHES[args.board])), file=sys.stderr)
        return 2
    st = steps(arch, args.with_secrets, args.firmware, args.build_dir, args.remote_root, not args.no_reset,
               args.board)
    mpremote = args.mpremote or find_mpremote()
    if arch:
        try:
            check_built(library_files(arch, args.build_dir), arch)
        except DeployError as e:
            if not args.dry_run:
                print("error:", e, file=sys.stderr)
                return 2
            print("warning:", e, file=sys.stderr)
    lib_names = [name for _, name in library_files(arch, args.build_dir)]
    for name, mod in unresolved_imports(root_files(args.board, args.with_secrets, args.firmware), lib_names):
        print("warning: %s imports %s, which neither this deploy nor the firmware provides" % (name, mod),
              file=sys.stderr)
    if args.with_secrets and not any(pathlib.Path(args.firmware, s).is_file() for s in SECRETS):
        # Stopped: deployed without them, the board boots with no Wi-Fi and
        # no broker credentials, and says so only on its console.
        print("error: --with-secrets, but %s has no secrets.json: copy %s to %s and fill it in"
              % (args.firmware, pathlib.Path(args.firmware, "secrets.example.json"),
                 pathlib.Path(args.firmware, "secrets.json")), file=sys.stderr)
        return 2
    elif not args.with_secrets and needs_secrets(args.board):
        print("note: main.py reads the Wi-Fi and broker credentials from secrets.json on the board; "
              "copy it once with DEPLOY_ARGS=--with-secrets (see firmware/secrets.example.json)",
              file=sys.stderr)
    if args.dry_run:
        sys.stdout.write(show(mpremote, args.port, st, args.resume))
        return 0
    return subprocess.call(command(mpremote, args.port, st, args.resume))


if __name__ == "__main__":
    sys.exit(main())
