# Runs under MicroPython (tools/heapmap.py starts it): where a client's
# heap goes, as JSON lines on stdout.
#
#   micropython heapmap_mp.py steps PORT SESSION
#       the smallest-heap workload (connect, subscribe, a QoS 1 message
#       out and back, disconnect) with buf_size=256, max_inflight=4,
#       receive_max=4 and a session file: live heap, modules loaded and
#       interned names after each step
#   micropython heapmap_mp.py parts PORT SESSION MOD,MOD,...
#       the same client built after importing each resident module in
#       turn: the heap each module keeps (its code, its names), then what
#       the client itself keeps (buffers, tables, objects)
#
# "live" is gc.mem_alloc() after a collection, less what it was before the
# first import. Interned names live in qstr pools on the same heap:
# micropython.qstr_info() prints their bytes before each JSON line.
import gc
import json
import os
import sys

import micropython

_PKG = "durable_mqtt."
_BASE = [0]


def qstr_pools():
    # qstr_info() prints "qstr pool: n_pool=.., n_qstr=.., n_str_data_bytes=..,
    # n_total_bytes=.." to the C stdout (not sys.stdout): tools/heapmap.py
    # reads that line and gives it to the JSON line that follows.
    micropython.qstr_info()


def live():
    gc.collect()
    return gc.mem_alloc() - _BASE[0]


def loaded():
    return sorted(k[len(_PKG):] for k in sys.modules if k.startswith(_PKG))


def report(kind, name):
    d = {"kind": kind, "name": name, "live": live(), "modules": loaded()}
    qstr_pools()
    print(json.dumps(d))


def client(port, session):
    from durable_mqtt import MQTTClient
    try:
        os.mkdir(session.rsplit("/", 1)[0])
    except OSError:
        pass
    return MQTTClient("heapmap", "127.0.0.1", port, keepalive=0, clean_session=False, session_file=session,
                      buf_size=256, max_inflight=4, receive_max=4)


def steps(port, session):
    got = []
    report("step", "start")
    import durable_mqtt  # noqa: F401
    report("step", "import")
    c = client(port, session)
    report("step", "built")
    c.set_callback(lambda t, m, r, q: got.append(q))
    c.connect()
    report("step", "connected")
    c.subscribe(b"heapmap/t", 1)
    report("step", "subscribed")
    c.publish(b"heapmap/t", b"A" * 64, False, 1)
    while c.pending() or not got:
        c.wait_msg(1000)
    report("step", "published and received")
    c.disconnect()
    report("step", "disconnected")


def parts(port, session, mods):
    report("part", "start")
    import durable_mqtt  # noqa: F401
    report("part", "durable_mqtt")
    for m in mods:
        if _PKG + m not in sys.modules:
            __import__(_PKG + m)
        report("part", m)
    c = client(port, session)
    report("part", "the client built")
    sizes = []
    for owner, obj in (("client", c), ("engine", c.engine), ("journal", c.journal)):
        for k in sorted(dir(obj)):
            v = getattr(obj, k, None)
            if isinstance(v, (bytearray, bytes, memoryview)) or type(v).__name__ == "array":
                n = len(v) * (len(bytes(v[0:1])) if len(v) else 1)
                if n >= 32:
                    sizes.append([owner + "." + k, n])
    print(json.dumps({"kind": "buffers", "list": sizes}))
    c.close()


def main():
    gc.collect()
    _BASE[0] = gc.mem_alloc()
    what, port, session = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if what == "steps":
        steps(port, session)
    else:
        parts(port, session, [m for m in sys.argv[4].split(",") if m])


main()
