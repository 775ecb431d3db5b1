# Smallest-heap run for durable_mqtt (tools/bench/run.py bisects -X heapsize
# over it): connect, subscribe, one QoS 1 publish, its receipt, disconnect,
# and nothing of the harness but reading the arguments, so the figure is the
# client's. Each client has a script like this one (min_*.py). With
# "restored": the boot first restores that many messages a previous run
# ("fill") left in the session, and they are all sent and acknowledged too.
import json
import sys

with open(sys.argv[1]) as f:
    a = json.load(f)

from durable_mqtt import MQTTClient

got = [0]


def on_msg(topic, msg, retained, qos):
    got[0] += 1


session = a.get("session")
T = a["topic"].encode()
c = MQTTClient(a["cid"], "127.0.0.1", a["port"], keepalive=a.get("keepalive", 0),
               clean_session=session is None, session_file=session, **(a.get("cfg") or {}))
if a.get("fill"):
    # (Not measured: run.py's first run leaves a full outbox on flash, as a
    # device that lost Wi-Fi and then its power would.)
    for i in range(a["fill"]):
        c.publish(T, b"F" * a["payload"], False, 1 + i % 2)
    c.close()
    print('{"ok": 1}')
    sys.exit()
if c.pending() != a.get("restored", 0):        # the boot restored them all
    raise AssertionError("restored %d of %d" % (c.pending(), a["restored"]))
c.set_callback(on_msg)
c.connect()
c.subscribe(T, 1)
c.publish(T, b"A" * a["payload"], False, 1)
while c.pending() or not got[0]:
    c.wait_msg(1000)
c.disconnect()
print('{"ok": 1}')
