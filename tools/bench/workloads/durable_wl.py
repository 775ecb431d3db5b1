# Benchmark workload for durable_mqtt (this repository), used its normal
# way: publish() returns at once (QoS 1/2 go into the in-flight window or
# the outbox), the application loop calls check_msg(), and wait_msg() when
# the outbox is full; "acknowledged" means pending() == 0.
#
# a["cfg"]: constructor options (buf_size, max_inflight, receive_max,
# outbox_size). a["session"]: None, or a host path for session_file (a file
# on the unix port's own filesystem). Test "flash": the session on a
# simulated NOR flash (tests/mp/norflash.py), a["backend"] "lfs" (a file on
# vfs.VfsLfs2 over the device: FileStore) or "ring" (the device itself:
# RingStore); figures counted at the block device.
import wlcommon as w

a = w.args()
test = a["test"]
ram = w.Ram() if test == "ram" else None

from durable_mqtt import MQTTClient

imp = ram.now() if test == "ram" else 0

T = a["topic"].encode()
P = w.payload(a["payload"])
cfg = a.get("cfg") or {}
meter = None
got = [0]


def on_msg(topic, msg, retained, qos):
    if meter is not None:
        meter.on_msg()
    else:
        got[0] += 1


bdev = None
session = a.get("session")
if test == "flash":
    from norflash import NorFlash
    fl = a["flash"]
    bdev = NorFlash(fl["block_size"], fl["blocks"], fl["prog_size"])
    if a["backend"] == "lfs":
        import vfs
        vfs.VfsLfs2.mkfs(bdev)
        vfs.mount(vfs.VfsLfs2(bdev), "/flash")
        session = "/flash/session.dmq"
    else:
        session = bdev

c = MQTTClient(a["cid"], "127.0.0.1", a["port"], keepalive=a.get("keepalive", 0),
               clean_session=session is None, session_file=session, **cfg)
c.set_callback(on_msg)
c.connect()

# Keep at most two windows' worth of messages pending: the in-flight window
# full and as many again waiting in the outbox (which also has a byte budget,
# outbox_bytes: 32 messages of 86 bytes fit the default). No try/except in
# step(): a handler makes the frame big enough for the VM to take it from
# the heap, and that would be charged to the client.
limit = min(2 * c.max_inflight, c.max_inflight + cfg.get("outbox_size", 32))


def drain():
    while c.pending():
        c.wait_msg(1000)


def make_step(qos):
    if not qos:
        def step0(i):       # QoS 0: publish() writes the packet; nothing to poll for
            c.publish(T, P, False, 0)
        return step0

    def step(i):
        while c.pending() >= limit:
            c.wait_msg(1000)
        c.publish(T, P, False, qos)
        c.check_msg()
    return step


def nothing():
    pass


if test == "ram":
    w.result(**{"import": imp, "connect": ram.now(), "modules": w.modules()})

elif test in ("pub0", "pub1"):
    qos = 1 if test == "pub1" else 0
    w.result(**w.pub_windows(make_step(qos), drain if qos else nothing, a))

elif test in ("rx0", "rx1"):
    c.subscribe(T, 1 if test == "rx1" else 0)
    meter = w.RxMeter(a)
    meter.request_a()
    while not meter.done_a:
        c.wait_msg(1000)
    meter.request_b()
    while not meter.done_b:
        c.wait_msg(1000)
    w.result(**meter.result())

elif test == "idle":
    w.result(**w.idle_window(c.check_msg, a))

elif test == "minheap":
    c.subscribe(T, 1)
    c.publish(T, P, False, 1)
    while c.pending() or not got[0]:
        c.wait_msg(1000)
    w.emit(ok=1)

elif test == "flash":
    # Warm up, then count what the block device sees for n messages of
    # each QoS, until all are acknowledged (PUBACK / PUBCOMP). The figures
    # include the checkpoints (compactions) the store takes by itself; their
    # number is read from the client's internals.
    store = c._store

    out = {"prog_size": getattr(c._backend, "prog_size", None)}
    for qos in (1, 2):
        step = make_step(qos)
        for i in range(a["warm"]):
            step(i)
        drain()
        bdev.reset_counters()
        cp0 = store.checkpoints
        t_start = w.ticks_ms()
        t0 = w.ticks_us()
        i = 0
        while i < a["n"]:
            step(i)
            i += 1
            if not i & 7 and w.ticks_diff(w.ticks_ms(), t_start) > a["cap_ms"]:
                break
        drain()
        dt = w.ticks_diff(w.ticks_us(), t0)
        out["qos%d" % qos] = {"n": i, "rate": i * 1e6 / dt,
                              "programmed": bdev.programmed_bytes / i,
                              "erases": bdev.erases / i,
                              "programs": bdev.programs / i,
                              "max_block_erases": max(bdev.block_erases),
                              "checkpoints": store.checkpoints - cp0}
    w.result(**out)

c.disconnect()
