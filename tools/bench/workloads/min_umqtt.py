# Smallest-heap run for umqtt.simple / umqtt.robust: see min_durable.py.
import json
import sys

with open(sys.argv[1]) as f:
    a = json.load(f)

if a["module"] == "umqtt.robust":
    from umqtt.robust import MQTTClient
else:
    from umqtt.simple import MQTTClient

got = [0]


def on_msg(topic, msg):
    got[0] += 1


c = MQTTClient(a["cid"].encode(), "127.0.0.1", a["port"], keepalive=a.get("keepalive", 0))
c.set_callback(on_msg)
c.connect()
T = a["topic"].encode()
c.subscribe(T, 1)
c.publish(T, b"A" * a["payload"], False, 1)     # blocks until its PUBACK
while not got[0]:
    c.wait_msg()
c.disconnect()
print('{"ok": 1}')
