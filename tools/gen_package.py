#!/usr/bin/env python3
"""gen_package: write the mip package files from the modules in lib/durable_mqtt/.

    python3 tools/gen_package.py           # (re)write package.json, package-core.json, package-mpy.json
    python3 tools/gen_package.py --check   # exit 1 when one is stale or a version disagrees

Each unit maps every file it installs to its source path relative to the
repository root, which mip (the on-board one and mpremote's) resolves
against the URL of the package file itself:

    ["durable_mqtt/client.py", "lib/durable_mqtt/client.py"]

so `mpremote mip install github:<owner>/durable_mqtt`, `mip.install(
"http://host:port/package.json")` from a checkout served over HTTP, and
`mpremote mip install package.json` run in a checkout all work (INSTALL.md).

Units:
  package.json       the whole library as .py source (compiled on the board)
  package-core.json  without the flash backends (filelog.py, filestore.py
                     with dirclear.py and dirstate.py, ring.py): for an application that keeps no session on
                     flash, or keeps save_session() bytes itself. The client
                     imports a backend only for a session_file, so leaving
                     them out saves flash, never RAM.
  package-mpy.json   precompiled bytecode: mpy/durable_mqtt/*.mpy (built by
                     `make mpy`, committed), and native.py as source (its
                     viper functions cannot be bytecode; the board compiles
                     them at import). Loads on any firmware with .mpy
                     version 6 (tools/mpy_check.py tells).

One version number. Its source is metadata(version=...) in lib/manifest.py
(as micropython-lib keeps it); this script copies it into the package files,
and --check also demands the same `__version__` in
lib/durable_mqtt/__init__.py and a `## [X.Y.Z]` section in CHANGELOG.md.
CPython 3.8+, stdlib only.
"""
import argparse
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PKG_DIR = ROOT / "lib" / "durable_mqtt"
MANIFEST = ROOT / "lib" / "manifest.py"
CHANGELOG = ROOT / "CHANGELOG.md"
MPY_DIR = ROOT / "mpy"            # the committed bytecode set (make mpy)
FLASH_BACKENDS = ("dirclear.py", "dirload.py", "dirstate.py", "filelog.py", "filestore.py", "ring.py", "slotmove.py")

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import build_mpy  # noqa: E402


def modules():
    """Every module of the package, sorted (stubs and caches are not modules)."""
    return sorted(p.name for p in PKG_DIR.glob("*.py"))


def source_pairs(left_out=()):
    return [["durable_mqtt/" + f, "lib/durable_mqtt/" + f] for f in modules() if f not in left_out]


def mpy_pairs():
    """The .mpy set: bytecode modules from mpy/, the others as .py source."""
    bc = set(build_mpy.bytecode_modules())
    out = []
    for f in modules():
        if f in bc:
            name = f[:-3] + ".mpy"
            out.append(["durable_mqtt/" + name, "mpy/durable_mqtt/" + name])
        else:
            out.append(["durable_mqtt/" + f, "lib/durable_mqtt/" + f])
    return out


# unit file -> its [install path, source] pairs
UNITS = {
    "package.json": lambda: source_pairs(),
    "package-core.json": lambda: source_pairs(FLASH_BACKENDS),
    "package-mpy.json": mpy_pairs,
}


def manifest_version():
    m = re.search(r'metadata\([^)]*version\s*=\s*["\']([^"\']+)["\']', MANIFEST.read_text(), re.S)
    return m.group(1) if m else None


def library_version():
    """__version__ in lib/durable_mqtt/__init__.py (what a board reports)."""
    m = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', (PKG_DIR / "__init__.py").read_text(), re.M)
    return m.group(1) if m else None


def changelog_versions():
    """Versions with a `## [X.Y.Z]` section in CHANGELOG.md, newest first."""
    return re.findall(r"^## \[(\d+\.\d+\.\d+[^\]]*)\]", CHANGELOG.read_text(), re.M)


def version():
    v = manifest_version()
    if not v:
        raise SystemExit("error: no metadata(version=\"...\") in %s" % MANIFEST)
    return v


def render(pairs, v):
    # One [install path, source] pair a line, as micropython-lib writes them.
    return '{\n  "urls": [\n    %s\n  ],\n  "version": %s\n}\n' % (
        ",\n    ".join(json.dumps(p) for p in pairs), json.dumps(v))


def problems_with_versions(v):
    out = []
    lv = library_version()
    if lv != v:
        out.append("lib/durable_mqtt/__init__.py has __version__ = %r, lib/manifest.py says %r: "
                   "make them equal" % (lv, v))
    cv = changelog_versions()
    if not cv or cv[0] != v:
        out.append("CHANGELOG.md's newest section is %r, not [%s]" % (cv[0] if cv else None, v))
    return out


def problems_with_mpy_set():
    """The committed .mpy set has one file per bytecode module, no more
    (that the bytes are current is tests/test_mpy.py's job: it needs mpy-cross)."""
    want = sorted(f[:-3] + ".mpy" for f in build_mpy.bytecode_modules())
    have = sorted(p.name for p in (MPY_DIR / "durable_mqtt").glob("*.mpy"))
    if want != have:
        return ["mpy/durable_mqtt/ holds %s, the package needs %s: run `make mpy`"
                % (sorted(set(have) - set(want)) or "no extra", sorted(set(want) - set(have)) or "nothing more")]
    return []


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only check; exit 1 if anything is stale")
    args = ap.parse_args(argv)
    v = version()
    problems = []
    for name, pairs in UNITS.items():
        path = ROOT / name
        want = render(pairs(), v)
        have = path.read_text() if path.exists() else None
        if have == want:
            continue
        if args.check:
            problems.append("%s is stale: run python3 tools/gen_package.py" % name)
        else:
            path.write_text(want)
            print("wrote", name)
    problems += problems_with_versions(v) + problems_with_mpy_set()
    for p in problems:
        print("error:" if args.check else "warning:", p, file=sys.stderr)
    return 1 if problems and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
