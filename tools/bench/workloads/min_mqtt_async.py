# Smallest-heap run for micropython-mqtt (mqtt_async): see min_durable.py;
# the shims and the getaddrinfo work-around of mqtt_async_wl.py.
import json
import sys

import network  # noqa: F401  (shim; firmware built-in on a board)
import machine  # noqa: F401  (shim)

with open(sys.argv[1]) as f:
    a = json.load(f)

from mqtt_async import MQTTClient, config
import asyncio


def _dns_lookup(self):
    self._addr = (self._c.server, self._c.port)


MQTTClient._dns_lookup = _dns_lookup
done = asyncio.Event()


def on_msg(topic, msg, retained, qos):
    done.set()


config.server = "127.0.0.1"
config.port = a["port"]
config.client_id = a["cid"].encode()
config.subs_cb = on_msg
config.keepalive = a.get("keepalive", 0)


async def main():
    c = MQTTClient(config)
    await c.connect()
    T = a["topic"].encode()
    await c.subscribe(T, 1)
    await c.publish(T, b"A" * a["payload"], False, 1)
    await done.wait()
    await c.disconnect()


asyncio.run(main())
print('{"ok": 1}')
