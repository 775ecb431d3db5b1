#!/usr/bin/env python3
"""gen_package: write the mip package files from the modules in lib/durable_mqtt/.

    python3 tools/gen_package.py           # (re)write package.json and package-core.json
    python3 tools/gen_package.py --check   # exit 1 when either is stale or a version disagrees

Each unit maps every module it holds to its install path and its source path
relative to the repository root, which mip (the on-board one and mpremote's)
resolves against the URL of the package file itself:

    ["durable_mqtt/client.py", "lib/durable_mqtt/client.py"]

so `mpremote mip install github:OWNER/durable_mqtt` and
`mip.install("http://host:port/package.json")` from a checkout both work.

Units:
  package.json       the whole library (what `github:OWNER/durable_mqtt` installs)
  package-core.json  without the flash backends (ring.py, filestore.py): for
                     an application that keeps no session on flash, or keeps
                     save_session() bytes itself. client.py imports the
                     backends only when session_file is given, so they cost
                     flash, never RAM; this unit saves the flash.

One version number: `__version__` in lib/durable_mqtt/__init__.py. This script
copies it into the package files and --check also compares it with
metadata(version=...) in lib/manifest.py. CPython 3.8+, stdlib only.
"""
import argparse
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PKG_DIR = ROOT / "lib" / "durable_mqtt"
MANIFEST = ROOT / "lib" / "manifest.py"

# unit file -> modules left out of it
UNITS = {
    "package.json": (),
    "package-core.json": ("ring.py", "filestore.py"),
}


def modules():
    """Every module of the package, sorted (stubs and caches are not modules)."""
    return sorted(p.name for p in PKG_DIR.glob("*.py"))


def library_version():
    text = (PKG_DIR / "__init__.py").read_text()
    m = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', text, re.M)
    if not m:
        raise SystemExit("error: no __version__ = \"...\" in %s" % (PKG_DIR / "__init__.py"))
    return m.group(1)


def manifest_version():
    m = re.search(r'metadata\([^)]*version\s*=\s*["\']([^"\']+)["\']', MANIFEST.read_text(), re.S)
    return m.group(1) if m else None


def render(left_out, version):
    # One [install path, source] pair a line, as micropython-lib writes them.
    pairs = [json.dumps(["durable_mqtt/" + f, "lib/durable_mqtt/" + f])
             for f in modules() if f not in left_out]
    return '{\n  "urls": [\n    %s\n  ],\n  "version": %s\n}\n' % (",\n    ".join(pairs), json.dumps(version))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only check; exit 1 if anything is stale")
    args = ap.parse_args(argv)
    version = library_version()
    problems = []
    for name, left_out in UNITS.items():
        path = ROOT / name
        want = render(left_out, version)
        have = path.read_text() if path.exists() else None
        if have == want:
            continue
        if args.check:
            problems.append("%s is stale: run python3 tools/gen_package.py" % name)
        else:
            path.write_text(want)
            print("wrote", name)
    mv = manifest_version()
    if mv != version:
        problems.append("lib/manifest.py metadata(version=%r) differs from __version__ %r" % (mv, version))
    for p in problems:
        print("error:", p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
