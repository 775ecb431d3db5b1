# Benchmark workload for micropython-mqtt (PyPI), whose module is
# mqtt_async: Thorsten von Eicken's asyncio client derived from Peter
# Hinch's mqtt_as. Used its normal way: `await publish(..., qos=1)` (the
# default sync=True) returns after the PUBACK; messages arrive through the
# background read task and the subs_cb callback.
#
# Shims (documented in tools/bench/shims/README.md):
# - network.py / machine.py from tools/bench/shims, imported before the
#   RAM baseline because on a board they are firmware built-ins;
# - the unix port's socket.getaddrinfo() returns a packed sockaddr where
#   mqtt_async expects the (ip, port) tuple of the bare-metal ports, so
#   _dns_lookup is replaced by one that stores (server, port).
import wlcommon as w
import network  # noqa: F401  (shim; firmware built-in on a board)
import machine  # noqa: F401  (shim)

a = w.args()
test = a["test"]
ram = w.Ram() if test == "ram" else None

from mqtt_async import MQTTClient, config

imp = ram.now() if test == "ram" else 0

import asyncio


def _dns_lookup(self):
    self._addr = (self._c.server, self._c.port)


MQTTClient._dns_lookup = _dns_lookup

T = a["topic"].encode()
P = w.payload(a["payload"])
meter = None
state = {"got": 0}
done = asyncio.Event()


def on_msg(topic, msg, retained, qos):
    if meter is not None:
        da = meter.done_a
        db = meter.done_b
        meter.on_msg()
        if meter.done_a is not da or meter.done_b is not db:
            done.set()
    else:
        state["got"] += 1
        done.set()


config.server = "127.0.0.1"
config.port = a["port"]
config.client_id = a["cid"].encode()
config.subs_cb = on_msg
config.keepalive = a.get("keepalive", 0)


async def pub_windows(qos):
    # wlcommon.pub_windows with awaits
    gc = w.gc
    mt = w.mem_total
    n = a["n"]
    most = 100 * n
    for i in range(a["warm"]):
        await c.publish(T, P, False, qos)
    gc.collect()
    t_start = w.ticks_ms()
    t0 = w.ticks_us()
    m0 = mt()
    mn = 0
    i = 0
    while i < most:
        await c.publish(T, P, False, qos)
        i += 1
        if i == n:
            mn = mt()
        if not i & 7:
            el = w.ticks_diff(w.ticks_ms(), t_start)
            if el > a["cap_ms"] or (i >= n and el >= a["min_ms"]):
                break
    t1 = w.ticks_us()
    m1 = mt()
    alloc = (mn - m0) / n if i >= n else (m1 - m0) / i
    nb = w.window_budget(alloc if w.HAVE_MEM_TOTAL else 4096, min(i, n))
    if not w.HAVE_MEM_TOTAL:
        alloc = None
    gc.collect()
    gc.disable()
    g0 = gc.mem_alloc()
    j = 0
    while j < nb:
        await c.publish(T, P, False, qos)
        j += 1
    g1 = gc.mem_alloc()
    gc.enable()
    return {"n": min(i, n), "n_rate": i, "rate": i * 1e6 / w.ticks_diff(t1, t0), "alloc": alloc,
            "n_garbage": nb, "garbage": (g1 - g0) / nb}


async def idle(a):
    gc = w.gc
    for _ in range(5):
        await asyncio.sleep_ms(10)
    gc.collect()
    gc.disable()
    g0 = gc.mem_alloc()
    m0 = w.mem_total()
    t0 = w.ticks_ms()
    polls = 0
    while w.ticks_diff(w.ticks_ms(), t0) < a["idle_ms"]:
        await asyncio.sleep_ms(10)      # the event loop runs the client's tasks
        polls += 1
    t1 = w.ticks_ms()
    m1 = w.mem_total()
    g1 = gc.mem_alloc()
    gc.enable()
    dt = w.ticks_diff(t1, t0) / 1000
    return {"alloc": (m1 - m0) / dt if w.HAVE_MEM_TOTAL else None, "garbage": (g1 - g0) / dt,
            "polls": polls, "seconds": dt}


async def main():
    global c, meter
    c = MQTTClient(config)
    await c.connect()
    if test == "ram":
        w.result(**{"import": imp, "connect": ram.now(), "modules": w.modules()})
    elif test in ("pub0", "pub1"):
        w.result(**(await pub_windows(1 if test == "pub1" else 0)))
    elif test in ("rx0", "rx1"):
        await c.subscribe(T, 1 if test == "rx1" else 0)
        meter = w.RxMeter(a)
        done.clear()
        meter.request_a()
        await done.wait()
        done.clear()
        meter.request_b()
        await done.wait()
        w.result(**meter.result())
    elif test == "idle":
        w.result(**(await idle(a)))
    await c.disconnect()


c = None
asyncio.run(main())
