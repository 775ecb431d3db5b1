# Benchmark workload for durable_mqtt (this repository), used its normal
# way: publish() returns at once (QoS 1/2 go into the in-flight window or
# the outbox), the application loop calls check_msg(), and wait_msg() when
# the window is full; "acknowledged" means pending() == 0.
#
# a["cfg"]: constructor options (buf_size, max_inflight, ...). a["session"]:
# None, or a host path for session_file (the session directory layout on
# the unix port's own filesystem).
#
# a["store"] (tests "paths" and "flash"): the session on a simulated NOR
# flash (tests/mp/norflash.py), mounted as a stock board mounts it
# (a["mount"]: "esp32" = vfs.VfsLfs2(bdev) on 32-byte programs, "rp2040" =
# vfs.VfsLfs2(bdev, progsize=256) on 256-byte programs):
#   "dir"  session_file=PATH: the session directory layout (filestore.py)
#   "log"  session_file=FileLog(PATH): the single log file (filelog.py)
#   "ring" session_file=the device itself: the raw ring (ring.py)
#   None   no session file
import wlcommon as w

a = w.args()
test = a["test"]
ram = w.Ram() if test == "ram" else None

from durable_mqtt import MQTTClient

marks = {}
if test == "ram":
    marks["import"] = ram.now()

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
store = a.get("store")
if store:
    from norflash import NorFlash
    mount = a["mount"]
    prog = 256 if mount == "rp2040" else 32
    if store == "ring":
        bdev = NorFlash(4096, a.get("ring_blocks", 16), prog)
        session = bdev
        cfg = dict(cfg, ring_prog_size=prog)
    else:
        import vfs
        bdev = NorFlash(4096, a.get("fs_blocks", 64), prog)
        if mount == "rp2040":
            vfs.VfsLfs2.mkfs(bdev, progsize=256)
            fs = vfs.VfsLfs2(bdev, progsize=256)
        else:
            vfs.VfsLfs2.mkfs(bdev)
            fs = vfs.VfsLfs2(bdev)
        vfs.mount(fs, "/flash")
        session = "/flash/session.dmq"
        if store == "log":
            from durable_mqtt.filelog import FileLog
            session = FileLog(session)

c = MQTTClient(a["cid"], "127.0.0.1", a["port"], keepalive=a.get("keepalive", 0),
               clean_session=session is None, session_file=session, **cfg)
c.set_callback(on_msg)
if test == "ram":
    marks["client"] = ram.now()
c.connect()

# Keep at most `window` messages pending (default: two windows' worth, the
# in-flight window full and as many again waiting in the outbox). No
# try/except in step(): a handler makes the frame big enough for the VM to
# take it from the heap, and that would be charged to the client.
limit = a.get("window") or min(2 * cfg.get("max_inflight", 16),
                               cfg.get("max_inflight", 16) + cfg.get("outbox_size", 32))


def drain():
    while c.pending():
        c.wait_msg(1000)


def make_step(qos, payload=P, poll=True):
    if not qos:
        def step0(i):       # QoS 0: publish() writes the packet; nothing to poll for
            c.publish(T, payload, False, 0)
        return step0

    def step(i):
        while c.pending() >= limit:
            c.wait_msg(1000)
        c.publish(T, payload, False, qos)
        c.check_msg()

    def step_full(i):       # the window kept full: read only when it is
        while c.pending() >= limit:
            c.wait_msg(1000)
        c.publish(T, payload, False, qos)
    return step if poll else step_full


def nothing():
    pass


def paths():
    # Per message (per call for ping and idle): every heap byte asked for
    # (mem_total: frames freed at return included) and what is left for the
    # collector (gc.mem_alloc() delta, GC off), over n messages after a
    # warm-up. Publish: windowed as in the publish tests; receive: the
    # driver's publisher sends a burst at that QoS.
    gc = w.gc
    n = a["n"]
    out = {}
    RT = a["topic"][:6] + "r" + a["topic"][7:]      # a topic of the same length to receive on
    c.subscribe(RT, 2)

    # The log file's checkpoints open a file, reopen the log and rename
    # (filelog.py): what those filesystem calls alone leave on this mount,
    # measured here, is the filesystem's (LittleFS's file objects, the
    # VFS's path strings); "own" is the rest, the library's.
    fs_cost = 0
    if store == "log":
        import os
        t, p = session.tmp, session.path + "x"     # (a file beside the log, its name made once)

        def fs_calls():
            f = open(t, "wb")
            f.write(P)
            f.close()
            f = open(p, "ab")
            f.close()
            os.rename(t, p)
        fs_calls()
        gc.collect()
        gc.disable()
        g0 = gc.mem_alloc()
        fs_calls()
        fs_cost = gc.mem_alloc() - g0
        gc.enable()
        os.remove(p)

    def window(name, run, count):
        k0 = session.checkpoints if fs_cost else 0
        gc.collect()
        gc.disable()
        g0 = gc.mem_alloc()
        m0 = w.mem_total()
        run()
        m1 = w.mem_total()
        g1 = gc.mem_alloc()
        gc.enable()
        fs = (session.checkpoints - k0) * fs_cost if fs_cost else 0
        out[name] = {"alloc": (m1 - m0) / count if w.HAVE_MEM_TOTAL else None,
                     "garbage": (g1 - g0) / count, "own": (g1 - g0 - fs) / count, "n": count}

    for qos in (0, 1, 2):
        step = make_step(qos)

        def run():
            i = 0
            while i < n:
                step(i)
                i += 1
            drain()
        i = 0
        while i < a["warm"]:
            step(i)
            i += 1
        drain()
        window("pub%d" % qos, run, n)
    for qos in (0, 1, 2):
        def ask(count):      # the driver's publisher sends `count` messages at this QoS
            got[0] = 0
            # (QoS 2 in chunks of 16, 20 ms apart: with MQTT 3.1.1 mosquitto
            # sends new QoS 2 messages before the PUBRELs of the last ones,
            # and the client allows 64 unreleased)
            w.emit(ready="rx", count=count, qos=qos, topic=RT, pause_ms=20)

        def rx(count=n):
            while got[0] < count:
                c.wait_msg(1000)
            k = 0
            while k < 5:             # the QoS 2 flow ends with PUBREL -> PUBCOMP
                c.check_msg()
                k += 1
        ask(a["warm"])
        rx(a["warm"])
        ask(n)                       # (before the window: the request allocates)
        window("rx%d" % qos, rx, n)

    def ping():
        i = 0
        while i < n:
            c.ping()
            while c.wait_msg(1000) != 0xD0:
                pass
            i += 1
    window("ping", ping, n)

    def idle():
        i = 0
        while i < n:
            c.check_msg()
            i += 1
    idle()
    window("idle", idle, n)
    return out


def flash():
    # What the block device sees per message in steady state: a stream that
    # keeps `limit` messages in flight (it reads only when the window is
    # full, so acknowledgements ride on the next writes), or one at a time, each
    # acknowledged and the client idle before the next ("slow", as at one
    # message a second: the store writes the acknowledgement once nothing
    # is in flight). Counted from after the warm-up until every message is
    # acknowledged (PUBACK / PUBCOMP).
    size = a["size"]
    # PUBLISH = 1 + len(varint) + 2 + topic + 2 (packet id) + payload
    rest = 2 + len(T) + 2
    pl = size - 1 - rest - 1
    if pl + rest > 127:
        pl -= 1
    body = w.payload(pl)
    j = c.journal
    out = {"prog_size": getattr(j.b, "prog_size", None) if hasattr(j, "b") else None, "payload": pl}
    slow = a.get("mode") == "slow"
    for qos in a.get("qos", (1, 2)):
        if slow:
            def step(i):
                c.publish(T, body, False, qos)
                while c.pending():
                    c.wait_msg(1000)
                c.check_msg()            # idle: the acknowledgement reaches flash
        else:
            step = make_step(qos, body, False)
        for i in range(a["warm"]):
            step(i)
        drain()
        c.check_msg()
        bdev.reset_counters()
        cp0 = j.checkpoints
        t0 = w.ticks_us()
        i = 0
        n = a["n"]
        while i < n:
            step(i)
            i += 1
        drain()
        c.check_msg()
        dt = w.ticks_diff(w.ticks_us(), t0)
        be = bdev.block_erases
        out["qos%d" % qos] = {"n": i, "rate": i * 1e6 / dt,
                              "programmed": bdev.programmed_bytes / i,
                              "erases": bdev.erases / i,
                              "programs": bdev.programs / i,
                              "max_block_erases": max(be),
                              "blocks_erased": sum(1 for x in be if x),
                              "checkpoints": j.checkpoints - cp0}
    return out


if test == "ram":
    marks["connect"] = ram.now()
    marks["modules"] = w.modules()
    c.disconnect()
    c = None
    # what stays without the client: the code this configuration loaded and keeps
    marks["code"] = ram.now()
    w.result(**marks)

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

elif test == "paths":
    w.result(**paths())

elif test == "flash":
    w.result(**flash())

if c is not None:
    c.disconnect()
