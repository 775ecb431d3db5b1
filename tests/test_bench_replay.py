"""The stand-in server of make bench's client-bound receive row
(tools/bench/replay.py): a real client (durable_mqtt on the unix port,
MQTT 3.1.1) connects, subscribes, receives every QoS 1 message of a burst
and acknowledges each, as the bench's workloads do."""
import sys
import threading
from pathlib import Path

from conftest import run_mp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools" / "bench"))
from replay import ReplayServer  # noqa: E402


def test_a_client_receives_and_acknowledges_a_whole_burst():
    srv = ReplayServer()
    try:
        def feed():
            if srv.subscribed.wait(20):
                srv.burst(b"bench/replay", b"x" * 64, 500, 1)
        t = threading.Thread(target=feed, daemon=True)
        t.start()
        r = run_mp(r"""
import time
from durable_mqtt import MQTTClient
got = []
c = MQTTClient("replay-test", "127.0.0.1", %d, keepalive=30)
c.set_callback(lambda t, m, r, q: got.append((bytes(t), len(m), q)))
print("session present", c.connect())
print("granted", c.subscribe("bench/replay", 1))
t0 = time.ticks_ms()
while len(got) < 500 and time.ticks_diff(time.ticks_ms(), t0) < 10000:
    c.wait_msg(1000)
print("got", len(got), got[0], got[-1], len(set(got)))
c.ping()
c.disconnect()
""" % srv.port)
        t.join(5)
        assert "session present False" in r.stdout and "granted 1" in r.stdout, r.stdout
        assert "got 500 (b'bench/replay', 64, 1) (b'bench/replay', 64, 1) 1" in r.stdout, r.stdout
        for _ in range(100):                 # (the last PUBACKs may still be on their way)
            if srv.acks == 500:
                break
            threading.Event().wait(0.02)
        assert srv.acks == 500 and not srv.errors, (srv.acks, srv.errors)
    finally:
        srv.close()
