# A device on a flaky link: publishes a numbered stream with RobustClient
# through the fault proxy until every message is acknowledged.
#   micropython device_flaky.py PORT VER QOS N KEEPALIVE [ring]
import sys
import time

from durable_mqtt import PeerClosed, Timeout
from durable_mqtt.robust import RobustClient

port, ver, qos, n, ka = (int(x) for x in sys.argv[1:6])
downs = []
ups = []


def on_down(c, exc):
    downs.append(time.ticks_ms())


def on_up(c):
    ups.append(time.ticks_ms())


c = RobustClient("flaky-%d-%d" % (ver, qos), "127.0.0.1", port, keepalive=ka, version=ver,
                 backoff_ms=(50, 400), on_up=on_up, on_down=on_down, timeout_ms=2000,
                 max_inflight=8, outbox_size=64)
# The proxy's faults start with it: a drop can meet this first connect (on
# a loaded machine the import outlasts the first drop's delay), and
# RobustClient.connect() raises then, as api.md says; the stream's own
# reconnects are what is under test.
for attempt in range(20):
    try:
        c.connect(clean_session=True)
        break
    except (PeerClosed, Timeout):
        time.sleep_ms(50)
c.clean_session = False
c.disconnect()
k = 0
t0 = time.ticks_ms()
while k < n:
    c.publish("flaky/%d/%d" % (ver, qos), "%d" % k, qos=qos)   # never blocks, never fails
    k += 1
    while c.pending() >= 40:
        c.poll(20)
    c.poll()
    time.sleep_ms(10)   # a telemetry pace: faults land all through the stream
ok = c.flush(120000)
# Reconnect latency: from each detected drop to the next successful connect.
lat = []
j = 0
for d in downs:
    while j < len(ups) and time.ticks_diff(ups[j], d) < 0:
        j += 1
    if j < len(ups):
        lat.append(time.ticks_diff(ups[j], d))
lat.sort()
print("RESULT flushed=%s downs=%d reconnects=%d median_reconnect_ms=%d secs=%d stats=%s" % (
    ok, len(downs), len(ups), lat[len(lat) // 2] if lat else -1,
    time.ticks_diff(time.ticks_ms(), t0) // 1000, c.stats()))
c.disconnect()
