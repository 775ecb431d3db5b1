#!/usr/bin/env python3
"""Where a durable_mqtt client's heap goes: a map by step and by module.

    python3 tools/heapmap.py                  # the venv's micropython, bytecode from mpy/
    MICROPY32=../shared/tools/micropython-x86 python3 tools/heapmap.py   # as on a board
    python3 tools/heapmap.py --source         # the .py files, compiled at import

Runs the smallest-heap workload of `make bench` (buf_size=256,
max_inflight=4, receive_max=4, a session file; connect, subscribe, a QoS 1
message out and back, disconnect) against a private mosquitto, twice
(tools/heapmap_mp.py does the measuring):
1. step by step: the live heap (gc.mem_alloc() after a collection), the
   names interned so far and the bytes of their qstr pools, and the
   modules loaded;
2. module by module: each module the client keeps, imported in turn, then
   the client built: what each keeps (its code and the names it interns)
   and what the client keeps (buffers, tables), with its largest buffers.

The smallest heap `make bench` finds is the live heap of the busiest step
plus the module a call loads for itself (connect.py, leave.py, ...) plus
the holes between blocks; this map shows the first of the three.
CPython, stdlib only; needs mosquitto (tools/testbroker.py).
"""
import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from testbroker import Broker  # noqa: E402

QSTR = re.compile(r"n_qstr=(\d+), n_str_data_bytes=(\d+), n_total_bytes=(\d+)")
# A module that a module of the package imports is attributed to the first
# one that loads it (the "with" column): importing leaves first keeps them
# apart. Modules not named here come after these, in the order loaded.
ORDER = ["errors", "codec", "client", "crc", "crcpy", "records", "session", "transport", "inbound", "link"]


def run(mp, path, args, cwd):
    """The JSON lines tools/heapmap_mp.py printed, each with the qstr
    figures printed just before it: [names, pool bytes, name characters]."""
    env = dict(os.environ, MICROPYPATH=str(path))
    r = subprocess.run([mp, "-X", "heapsize=400000", str(ROOT / "tools" / "heapmap_mp.py")] + args,
                       capture_output=True, text=True, env=env, cwd=cwd, timeout=120)
    if r.returncode:
        raise SystemExit("heapmap_mp.py failed (%d):\n%s%s" % (r.returncode, r.stdout, r.stderr))
    rows, q = [], None
    for line in r.stdout.splitlines():
        m = QSTR.search(line)
        if m:
            q = [int(m.group(1)), int(m.group(3)), int(m.group(2))]
        elif line.startswith("{"):
            d = json.loads(line)
            d["qstr"] = q
            rows.append(d)
    return rows


def heap_map(mp, path, workdir):
    """(steps, parts, buffers): the two runs' rows."""
    broker = Broker(pathlib.Path(workdir) / "broker").start()
    try:
        steps = run(mp, path, ["steps", str(broker.port), "s1/session"], workdir)
        kept = []
        for row in steps:
            kept += [m for m in row.get("modules", []) if m not in kept]
        seen = list(kept)
        kept.sort(key=lambda m: ORDER.index(m) if m in ORDER else len(ORDER) + seen.index(m))
        rows = run(mp, path, ["parts", str(broker.port), "s2/session", ",".join(kept)], workdir)
    finally:
        broker.stop()
    parts = [r for r in rows if r["kind"] == "part"]
    buffers = [r for r in rows if r["kind"] == "buffers"][0]["list"]
    return steps, parts, buffers


def table(steps, parts, buffers):
    out = ["| step | live heap (B) | names interned | their qstr pools (B) | modules of the package loaded |",
           "|---|---:|---:|---:|---|"]
    for r in steps:
        out.append("| %s | %s | %s | %s | %s |" % (r["name"], "{:,}".format(r["live"]), r["qstr"][0],
                                                   "{:,}".format(r["qstr"][1]), ", ".join(r["modules"]) or "-"))
    out += ["", "| kept by | with | heap (B) | names interned | their characters (B) |", "|---|---|---:|---:|---:|"]
    prev = parts[0]
    code = 0
    for r in parts[1:]:
        if r["name"] != "the client built" and r["modules"] == prev["modules"]:
            prev = r
            continue                  # loaded by an earlier row already
        new = [m for m in r["modules"] if m not in prev["modules"] and m != r["name"]]
        d = r["live"] - prev["live"]
        out.append("| %s | %s | %s | %s | %s |" % (r["name"], ", ".join(new) or "", "{:,}".format(d),
                                                    r["qstr"][0] - prev["qstr"][0],
                                                    "{:,}".format(r["qstr"][2] - prev["qstr"][2])))
        if r["name"] != "the client built":
            code += d
        prev = r
    built = parts[-1]
    out += ["", "Modules kept: %s B; the client built: %s B in all, of which %s B are qstr pools "
            "(%d names; a pool holds a name's hash, length and pointer besides its characters, "
            "and grows by whole pools)." % (
                "{:,}".format(code), "{:,}".format(built["live"] - parts[0]["live"]),
                "{:,}".format(built["qstr"][1] - parts[0]["qstr"][1]), built["qstr"][0] - parts[0]["qstr"][0]),
        "", "Its largest buffers: " + ", ".join("%s %s B" % (k, "{:,}".format(n))
                                                 for k, n in sorted(buffers, key=lambda x: -x[1])[:8]) + "."]
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--micropython", default=os.environ.get("MICROPY32") or str(
        pathlib.Path(sys.executable).parent / "micropython"),
        help="the micropython to run (default: $MICROPY32, else the venv's)")
    ap.add_argument("--source", action="store_true", help="the .py files of lib/ instead of the .mpy of mpy/")
    ap.add_argument("--json", action="store_true", help="the rows as JSON instead of tables")
    a = ap.parse_args(argv)
    path = ROOT / ("lib" if a.source else "mpy")
    with tempfile.TemporaryDirectory() as tmp:
        steps, parts, buffers = heap_map(a.micropython, path, tmp)
    if a.json:
        print(json.dumps({"steps": steps, "parts": parts, "buffers": buffers}))
    else:
        print(table(steps, parts, buffers))


if __name__ == "__main__":
    main()
