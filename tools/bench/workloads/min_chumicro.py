# Smallest-heap run for chumicro-mqtt: see min_durable.py.
import json
import sys
from time import ticks_ms

with open(sys.argv[1]) as f:
    a = json.load(f)

from chumicro_mqtt import MQTTClient, ProtocolState

cnt = {"acked": 0, "got": 0}


def on_msg(topic, payload):
    cnt["got"] += 1


def on_publish(topic, payload):
    cnt["acked"] += 1


c = MQTTClient.from_config({"mqtt.broker.host": "127.0.0.1", "mqtt.broker.port": a["port"]},
                           client_id=a["cid"], keep_alive_seconds=a.get("keepalive", 60))
c.on_message = on_msg
c.on_publish = on_publish
c.connect()


def tick_until(cond):
    while not cond():
        c.handle(ticks_ms())
        if c.state == ProtocolState.FAILED:
            raise OSError("link failed: %r" % (c.last_error,))


tick_until(lambda: c.state == ProtocolState.CONNECTED)
T = a["topic"]
c.subscribe(T, 1)
c.publish(T, b"A" * a["payload"], qos=1)
tick_until(lambda: cnt["got"] and cnt["acked"])
c.disconnect()
for _ in range(5):
    c.handle(ticks_ms())
print('{"ok": 1}')
