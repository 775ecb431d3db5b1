#!/usr/bin/env python3
"""make sim: the example firmware on a simulated board, with power cuts.

Starts a private mosquitto on a free loopback port, a subscriber that
records every telemetry message, and firmware/main.py in the MicroPython
unix port on a simulated board (boards/unix: flash is a LittleFS image
file, Wi-Fi a no-op). The device is killed with SIGKILL (a power cut) at
random moments, restarted from its flash image each time, sent commands,
and finally told to stop. Then it prints what was accepted by the library,
received by the subscriber, resent, and lost (the goal: zero).

  python3 tools/sim.py [--cuts 5] [--seed 1] [--interval-ms 20] [--keep] [--ring]

With --ring the session lives in a raw flash ring (ring.img, 16 erase
blocks of 4 KB, as an ESP32's data partition) instead of the session
directory, and the simulated flash programs it 16 bytes at a time, so that
a cut can leave a commit half written.

Exit status 0 when nothing was lost, 1 otherwise.
"""
import argparse
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
MICROPYTHON = ROOT / ".venv" / "bin" / "micropython"
sys.path.insert(0, str(ROOT / "tools"))
from testbroker import Broker  # noqa: E402


class Progress:
    def __init__(self, enabled):
        self.enabled = enabled

    def show(self, text):
        if self.enabled:
            sys.stdout.write("\r\x1b[K" + text)
            sys.stdout.flush()

    def done(self):
        if self.enabled:
            sys.stdout.write("\n")


def start_broker(run):
    return Broker(run, log_types=("all",)).start()


def device(run, env):
    out = open(run / "device.log", "a")
    return subprocess.Popen([str(MICROPYTHON), str(ROOT / "firmware" / "main.py"),
                             str(run / "config.json"), str(run / "nosecrets.json")],
                            cwd=run, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1), out


def pump(proc, log, stats):
    """Read what the device printed so far (non-blocking), keep its stats."""
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    while sel.select(0):
        line = proc.stdout.readline()
        if not line:
            break
        log.write(line)
        if line.startswith("STATS "):
            stats.update(json.loads(line[6:]))
    sel.close()


def ring_torn(image, seen):
    """How many torn commits the ring holds that `seen` (a set, updated)
    did not: those the power cut just left. Read as tools/session_inspect.py
    --ring reads it."""
    from session_inspect import Diag, Unreadable, read_ring
    diag = Diag()
    try:
        read_ring(image.read_bytes(), 4096, None, 0, None, diag, {})
    except Unreadable:
        pass
    new = {(d["block"], d["block_offset"], d["message"]) for d in diag.items if d["kind"] == "ring_torn_commit"}
    n = len(new - seen)
    seen |= new
    return n


def count_received(path):
    seen = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                m = json.loads(line)
            except ValueError:
                continue
            k = (m["boot"], m["seq"])
            seen[k] = seen.get(k, 0) + 1
    return seen


def accepted(path):
    out = set()
    if path.exists():
        for line in path.read_text().split():
            b, s = line.split(":")
            out.add((int(b), int(s)))
    return out


def reconcile(acc, rec):
    """(lost, cut short, unexplained) from the traced and the received (boot, seq) sets.

    A cut can fall after publish() has sent a message and before the
    firmware writes its trace line: the broker has it, the trace does not.
    That is at most one message per cut boot, the one after its last traced.
    Anything else received but never traced is a fault."""
    last_seq = {}
    for b, s in acc:
        last_seq[b] = max(s, last_seq.get(b, -1))
    extra = rec - acc
    final_boot = max(b for b, _ in acc | rec) if acc or rec else 0
    cut_short = {(b, s) for b, s in extra if b != final_boot and s == last_seq.get(b, -1) + 1}
    return sorted(acc - rec), cut_short, sorted(extra - cut_short)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--cuts", type=int, default=5, help="power cuts (SIGKILL) during the run (default 5)")
    ap.add_argument("--seed", type=int, default=1, help="random seed for the cut times")
    ap.add_argument("--interval-ms", type=int, default=20, help="telemetry interval (default 20 ms)")
    ap.add_argument("--up-s", type=float, nargs=2, default=(1.0, 2.5), metavar=("MIN", "MAX"),
                    help="seconds the device runs between cuts (default 1.0 2.5)")
    ap.add_argument("--dir", default=str(ROOT / "sim-run"), help="work folder (flash image, logs)")
    ap.add_argument("--keep", action="store_true", help="keep the flash image from an earlier run")
    ap.add_argument("--no-progress", action="store_true", help="no progress line")
    ap.add_argument("--ring", action="store_true",
                    help="the session in a raw flash ring (ring.img), programs tearable by a cut")
    args = ap.parse_args(argv)
    if args.cuts < 0:
        ap.error("--cuts must be 0 or more")
    if args.interval_ms <= 0:
        ap.error("--interval-ms must be positive")
    if not 0 < args.up_s[0] <= args.up_s[1]:
        ap.error("--up-s MIN MAX: 0 < MIN <= MAX seconds")
    run = pathlib.Path(args.dir)
    if run.exists() and not run.is_dir():
        ap.error("--dir %s is not a folder" % run)
    if run.exists() and not args.keep and any(run.iterdir()) and not (run / "config.json").exists():
        # Only a folder of an earlier run (its config.json) is cleared:
        # --dir names a work folder, and a typo must not empty another one.
        ap.error("--dir %s holds files not made by sim.py: give a new or empty folder" % run)
    if not MICROPYTHON.exists():
        sys.exit("error: %s missing: run `make sim` (it creates the venv)" % MICROPYTHON)
    rng = random.Random(args.seed)
    if run.exists() and not args.keep:
        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)
    progress = Progress(not args.no_progress and sys.stdout.isatty())

    broker = start_broker(run)
    port = broker.port
    base = "sim/dev1"
    received_path = run / "received.jsonl"
    sub = subprocess.Popen(["mosquitto_sub", "-p", str(port), "-q", "1", "-t", base + "/tele",
                            "-i", "sim-watcher", "-c"], stdout=open(received_path, "a"))
    time.sleep(0.3)
    (run / "config.json").write_text(json.dumps({
        "client_id": "sim-dev1", "broker": "127.0.0.1", "port": port, "version": 4,
        "keepalive": 10, "topic_base": base, "interval_ms": args.interval_ms,
        "timeout_ms": 2000, "trace": str(run / "accepted.txt"),
        "sim": dict({"image": str(run / "flash.img"), "blocks": 64},
                    **({"ring_image": str(run / "ring.img"), "ring_blocks": 16} if args.ring else {}))}))
    (run / "nosecrets.json").write_text("{}")
    env = dict(os.environ)
    env["MICROPYPATH"] = ":".join(str(p) for p in (ROOT / "lib", ROOT / "boards" / "unix", ROOT / "boards",
                                                   ROOT / "firmware")) + ":.frozen"
    stats_per_boot = []
    torn = 0                                  # cuts that left a commit half programmed (--ring)
    torn_seen = set()
    t_start = time.monotonic()
    try:
        for boot in range(args.cuts + 1):
            proc, log = device(run, env)
            stats = {}
            last = boot == args.cuts
            up_for = rng.uniform(*args.up_s)
            t0 = time.monotonic()
            commanded = False
            while proc.poll() is None:
                pump(proc, log, stats)
                elapsed = time.monotonic() - t0
                if not commanded and elapsed > up_for / 2:
                    # A command mid-run: it reaches the device now, or after
                    # the restart (the broker queues it for the session).
                    cmd = "stop" if last else "interval=%d" % args.interval_ms
                    subprocess.run(["mosquitto_pub", "-p", str(port), "-q", "1", "-t", base + "/cmd",
                                    "-m", cmd], check=True)
                    commanded = True
                if not last and elapsed >= up_for:
                    proc.send_signal(signal.SIGKILL)     # the power cut
                    proc.wait()
                    if args.ring:
                        torn += ring_torn(run / "ring.img", torn_seen)
                    break
                if last and elapsed > 60:
                    proc.kill()
                    raise SystemExit("error: the device did not stop within 60 s")
                acc = accepted(run / "accepted.txt")
                progress.show("boot %d/%d  %s  accepted %d  received %d  pending %s" % (
                    boot + 1, args.cuts + 1, "running" if not last else "final run, draining",
                    len(acc), len(count_received(received_path)), stats.get("pending", "?")))
                time.sleep(0.1)
            pump(proc, log, stats)
            log.close()
            stats_per_boot.append(stats)
        time.sleep(0.5)
    finally:
        sub.send_signal(signal.SIGTERM)
        sub.wait(5)
        broker.stop()
        progress.done()

    acc = accepted(run / "accepted.txt")
    rec = count_received(received_path)
    lost, cut_short, unexplained = reconcile(acc, set(rec))
    dups = sum(n - 1 for n in rec.values())
    resent = sum(s.get("resent", 0) for s in stats_per_boot)
    final = stats_per_boot[-1] if stats_per_boot else {}
    image = run / ("ring.img" if args.ring else "flash.img")
    flash = image.stat().st_size if image.exists() else 0
    cmd_lines = (run / "device.log").read_text().count("CMD ")
    lines = [
        "durable_mqtt simulation: %d power cuts in %.1f s (seed %d)" % (args.cuts, time.monotonic() - t_start, args.seed),
        "  accepted by the library : %d messages (QoS 1) over %d boots" % (len(acc), len(stats_per_boot)),
        "  received by subscriber  : %d distinct, %d repeats (QoS 1 allows repeats after a cut)" % (len(rec), dups),
        "  sent, cut before return : %d (publish() had sent it when the power went)" % len(cut_short),
        "  resent after restarts   : %d (DUP=1, original packet ids)" % resent,
        "  commands obeyed         : %d" % cmd_lines,
        "  flash image             : %d KB %s; last boot programmed %s bytes, %s erases" % (
            flash // 1024, "raw ring" if args.ring else "LittleFS",
            final.get("flash_programmed", "?"), final.get("flash_erases", "?")),
        "  lost                    : %d%s" % (len(lost), "" if not lost else "  e.g. %s" % lost[:10]),
    ]
    if args.ring:
        lines.insert(-1, "  cuts that tore a commit : %d (the boot after wrote on past it)" % torn)
    if unexplained:
        lines.append("  never published         : %d received, e.g. %s" % (len(unexplained), unexplained[:10]))
    print("\n".join(lines))
    (run / "report.txt").write_text("\n".join(lines) + "\n")
    return 0 if not lost and not unexplained and acc else 1


if __name__ == "__main__":
    sys.exit(main())
