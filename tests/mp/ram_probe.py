# RAM taken by durable_mqtt on the unix port, step by step (MicroPython).
#
#   micropython [-X heapsize=..] ram_probe.py PORT CLIENT_ID SESSION_PATH [fill|restored N]
#
# "fill N": only publishes N QoS 1/2 messages offline into the session and
# closes (the outbox a device leaves when it loses Wi-Fi, then power);
# "restored N": the run, after checking that the boot restored those N (the
# run then sends them too).
# with MICROPYPATH holding the library (.py or .mpy) and a board folder
# (boards/esp32 or boards/rp2040), whose profile.PROFILE gives the client's
# keyword arguments. Prints one JSON line: gc.mem_alloc() after each step,
# after a gc.collect(), so each figure is what stays allocated (code,
# objects, buffers), not the transient peak; the peak shows as the smallest
# heap the whole run fits in (the driver bisects -X heapsize).
import gc
import sys

gc.collect()
base = gc.mem_alloc()
marks = {}


def mark(name):
    gc.collect()
    marks[name] = gc.mem_alloc() - base


import profile                     # noqa: E402  the board's recommended kwargs
mark("profile")
import durable_mqtt                # noqa: E402,F401
from durable_mqtt import MQTTClient  # noqa: E402
mark("import")
# Loaded lazily by a client with a session path (and kept): the session
# directory layout, with what it imports.
from durable_mqtt import filestore  # noqa: E402,F401
mark("import_store")

port, cid, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
mode, n = (sys.argv[4], int(sys.argv[5])) if len(sys.argv) > 5 else ("", 0)
got = []
c = MQTTClient(cid, "127.0.0.1", port, keepalive=30, clean_session=False,
               session_file=path, **profile.PROFILE)
if mode == "fill":
    for i in range(n):
        c.publish("ram/" + cid, b"f" * 64, qos=1 + i % 2)
    c.close()
    print('{"ok": 1, "filled": %d}' % c.pending())
    sys.exit()
if c.pending() != n:
    raise AssertionError("restored %d of %d" % (c.pending(), n))
c.set_callback(lambda t, m, r, q: got.append(q))
mark("client")
c.connect()
c.subscribe("ram/" + cid, 1)
mark("connected")
for i in range(20):
    c.publish("ram/" + cid, b"x" * 64, qos=1)
    while c.pending() or len(got) <= i:
        c.wait_msg(100)
mark("steady")
c.disconnect()
print('{"total": %d, %s}' % (gc.mem_alloc() + gc.mem_free(),
                             ", ".join('"%s": %d' % kv for kv in marks.items())))
