"""End-to-end through a real mosquitto, MQTT 3.1.1 and 5.0: QoS 0/1/2 both
ways, payload sizes up to the buffer, retained, will, refusals, keepalive,
packet-id wrap, publishing while disconnected."""
import pytest

from conftest import run_mp

COMMON = r"""
from durable_mqtt import MQTTClient, MQTTException, PacketTooLarge
from testlib import wait_until
import time
VER = %(ver)d
PORT = %(port)d
got = []
def cb(t, m, r, q):
    got.append((bytes(t), bytes(m), r, q))
def client(name, **kw):
    c = MQTTClient(name + str(VER), "127.0.0.1", PORT, version=VER, **kw)
    c.set_callback(cb)
    return c
"""


def mp(broker, ver, body, **kw):
    return run_mp(COMMON % {"ver": ver, "port": broker.port} + body, **kw)


@pytest.mark.parametrize("ver", [4, 5])
def test_qos_roundtrip_and_payload_sizes(broker, ver):
    r = mp(broker, ver, r"""
c = client("rt", buf_size=256, keepalive=10)
c.connect()
c.subscribe("rt/%d/#" % VER, 2)
topic = "rt/%d/m" % VER
# Largest payload whose PUBLISH is exactly buf_size at QoS 1/2:
# 1 + 2 (remaining length) + 2 + len(topic) + 2 (pid) [+ 1 props length in v5]
fixed = 1 + 2 + 2 + len(topic) + 2 + (1 if VER == 5 else 0)
big = 256 - fixed
for qos in (0, 1, 2):
    for size in (0, 1, big):
        got.clear()
        c.publish(topic, bytes([65 + qos]) * size, qos=qos)
        wait_until(c, lambda: got and not c.pending())
        t, m, r, q = got[0]
        assert t == topic.encode() and len(m) == size and q == qos and r is False, got[0]
        assert m == bytes([65 + qos]) * size
try:
    c.publish(topic, b"x" * (big + 1), qos=1)
    raise AssertionError("one byte over buf_size was accepted")
except PacketTooLarge as e:
    assert "exceeds" in e.args[1]
assert c.pending() == 0
print("OK", c.stats()["received"])
c.disconnect()
""")
    assert "OK 9" in r.stdout


@pytest.mark.parametrize("ver", [4, 5])
def test_retained_message(broker, ver):
    r = mp(broker, ver, r"""
a = client("ret-a")
a.connect()
a.publish("ret/%d" % VER, b"kept", retain=True, qos=1)
wait_until(a, lambda: not a.pending())
a.disconnect()
b = client("ret-b")
b.connect()
b.subscribe("ret/%d" % VER, 1)
wait_until(b, lambda: got)
assert got[0] == (b"ret/%d" % VER, b"kept", True, 1), got
b.publish("ret/%d" % VER, b"", retain=True, qos=1)     # clear it
wait_until(b, lambda: not b.pending())
b.disconnect()
print("OK")
""")
    assert "OK" in r.stdout


@pytest.mark.parametrize("ver", [4, 5])
def test_MQTT_3_14_4_1_disconnect_right_after_publishing_loses_nothing_and_fires_no_will(broker, ver):
    # publish() three QoS 1 messages and disconnect() at once, 200 times.
    # The PUBACKs arrive while the client closes: a socket closed with bytes
    # unread sends a TCP reset instead of a FIN, and mosquitto, meeting the
    # reset first, dropped what it had not read yet ("disconnected due to out
    # of memory"): a last PUBLISH, and the DISCONNECT itself, so the will was
    # published. About 1 run in 50 did that; now disconnect() reads until the
    # broker closes its side (at most 500 ms) and closes after it.
    r = mp(broker, ver, r"""
w = client("linger-watch")
w.connect()
w.subscribe("linger/#", 1)
for k in range(200):
    p = client("linger-pub")
    p.set_last_will("linger/will", "died", qos=1)
    p.connect()
    for i in range(3):
        p.publish("linger/t", b"%d" % (3 * k + i), qos=1)
    p.disconnect()
    w.check_msg()
wait_until(w, lambda: len(got) >= 600, 5000)
t0 = time.ticks_ms()
while time.ticks_diff(time.ticks_ms(), t0) < 300:
    w.wait_msg(50)
wills = [m for t, m, r, q in got if t == b"linger/will"]
nums = sorted(int(m) for t, m, r, q in got if t == b"linger/t")
assert not wills, "the will fired %d times" % len(wills)
assert nums == list(range(600)), [n for n in range(600) if n not in nums]
w.disconnect()
print("OK")
""", timeout=60)
    assert "OK" in r.stdout, r.stdout


@pytest.mark.parametrize("ver", [4, 5])
def test_will_fires_on_abrupt_close(broker, ver):
    r = mp(broker, ver, r"""
w = client("will-watch")
w.connect()
w.subscribe("will/%d" % VER, 1)
d = client("will-dev", keepalive=5)
wp = None
if VER == 5:
    # Every MQTT 5 will property; the broker passes the message ones on.
    def cb5(t, m, r, q, p):
        got.append((bytes(t), bytes(m), r, q, p))
    w.set_callback(cb5, props=True)
    wp = {"will_delay": 0, "payload_format": 1, "message_expiry": 60, "content_type": "text/plain",
          "response_topic": "will/reply", "correlation_data": b"\x07", "user_property": [("k", "v")]}
d.set_last_will("will/%d" % VER, "dead", qos=1, props=wp)
d.connect()
d.close()                     # no DISCONNECT: the broker must publish the will
wait_until(w, lambda: got, 3000)
assert got[0][:2] == (b"will/%d" % VER, b"dead"), got
if VER == 5:
    p = got[0][4]
    assert p["content_type"] == "text/plain" and p["response_topic"] == "will/reply", p
    assert p["correlation_data"] == b"\x07" and p["user_property"] == [("k", "v")], p
    assert p["payload_format"] == 1 and 0 < p["message_expiry"] <= 60, p
    w.set_callback(cb)
# A normal DISCONNECT does not fire it.
got.clear()
d2 = client("will-dev2")
d2.set_last_will("will/%d" % VER, "dead2")
d2.connect()
d2.disconnect()
t0 = time.ticks_ms()
while time.ticks_diff(time.ticks_ms(), t0) < 500:
    w.wait_msg(50)
assert not got, got
w.disconnect()
print("OK")
""")
    assert "OK" in r.stdout


def dynsec_broker(fresh_broker, tmp_path):
    """A broker whose dynamic-security plugin lets user 'dev' subscribe to
    open/# only (mosquitto's acl_file grants every SUBSCRIBE; dynsec refuses)."""
    import json
    import subprocess
    cfg = tmp_path / "dynsec.json"
    subprocess.run(["mosquitto_ctrl", "dynsec", "init", str(cfg), "dev", "devpw"],
                   check=True, capture_output=True)
    d = json.loads(cfg.read_text())
    d["roles"] = [{"rolename": "admin", "acls": [
        {"acltype": "publishClientSend", "topic": "open/#", "allow": True},
        {"acltype": "publishClientReceive", "topic": "open/#", "allow": True},
        {"acltype": "subscribePattern", "topic": "open/#", "allow": True}]}]
    cfg.write_text(json.dumps(d))
    plugin = subprocess.run(["sh", "-c", "dpkg -L mosquitto | grep dynamic_security.so"],
                            capture_output=True, text=True).stdout.strip()
    return fresh_broker("plugin %s\nplugin_opt_config_file %s\n" % (plugin, cfg))


@pytest.mark.parametrize("ver", [4, 5])
def test_subscription_refused(fresh_broker, tmp_path, ver):
    b = dynsec_broker(fresh_broker, tmp_path)
    r = mp(b, ver, r"""
c = client("acl", user="dev", password="devpw")
c.connect()
assert c.subscribe("open/x", 1) == 1
try:
    c.subscribe("secret/x", 1)
    raise AssertionError("refused subscription returned")
except MQTTException as e:
    assert e.args[0] >= 0x80, e.args
    assert "refused the subscription" in e.args[1], e.args
    print("refused", e.args[0])
c.publish("open/x", b"still usable", qos=1)     # the connection carries on
wait_until(c, lambda: got and not c.pending())
c.disconnect()
print("OK")
""")
    assert "OK" in r.stdout


@pytest.mark.parametrize("ver", [4, 5])
def test_keepalive_keeps_idle_connection_alive(broker, ver):
    # keepalive 1 s: the broker drops a silent client after 1.5 s. Stay idle
    # in wait_msg for 3 s (> 2x keepalive); the client pings on its own.
    r = mp(broker, ver, r"""
c = client("ka", keepalive=1)
c.connect()
t0 = time.ticks_ms()
while time.ticks_diff(time.ticks_ms(), t0) < 3000:
    c.wait_msg(200)
c.subscribe("ka/%d" % VER, 1)
c.publish("ka/%d" % VER, b"alive", qos=1)
wait_until(c, lambda: got)
assert got[0][1] == b"alive"
c.disconnect()
print("OK")
""")
    assert "OK" in r.stdout
    assert "exceeded timeout" not in broker.log_text().split("ka%d" % ver)[-1]


def test_packet_id_wraps_and_skips_ids_in_use(broker):
    # MQTT-2.3.1-2: past 65,535 the id wraps to 1 and skips ids still held.
    r = mp(broker, 4, r"""
c = client("wrap", max_inflight=64, outbox_size=64)
c.connect()
last = 0
wraps = 0
for i in range(65600):
    pid = c.publish(b"wrap/x", b"p", qos=1)
    assert 1 <= pid <= 65535
    if pid < last:
        assert last == 65535 and pid == 1, (last, pid)
        wraps += 1
    last = pid
    while c.pending() >= 64:
        c.wait_msg(50)
wait_until(c, lambda: not c.pending(), 10000)
assert wraps == 1 and c.stats()["acked"] == 65600
c.disconnect()
print("OK", last)
""", timeout=120)
    assert "OK" in r.stdout


@pytest.mark.parametrize("ver", [4, 5])
def test_publish_while_disconnected_goes_out_after_connect(broker, ver):
    r = mp(broker, ver, r"""
w = client("off-watch")
w.connect()
w.subscribe("off/%d" % VER, 1)
c = client("off-dev")
ids = [c.publish("off/%d" % VER, b"m%d" % i, qos=1) for i in range(5)]
assert ids == [1, 2, 3, 4, 5], ids
assert c.pending() == 5
c.publish("off/%d" % VER, b"q0")               # QoS 0 queued while there is room
c.connect()
wait_until(c, lambda: not c.pending())
wait_until(w, lambda: len(got) == 6)
assert [m for _, m, _, _ in got] == [b"m0", b"m1", b"m2", b"m3", b"m4", b"q0"], got
print("OK")
""")
    assert "OK" in r.stdout


@pytest.mark.parametrize("ver", [4, 5])
def test_inflight_window_and_outbox_limits(broker, ver):
    r = mp(broker, ver, r"""
from durable_mqtt import QueueFull
c = client("win", max_inflight=2, outbox_size=3)
for i in range(5):
    c.publish("win/x", b"m", qos=1)
try:
    c.publish("win/x", b"m", qos=1)
    raise AssertionError("outbox overflow accepted")
except QueueFull as e:
    assert "outbox full" in e.args[1]
assert c.pending() == 5
c.connect()
assert c.stats()["inflight"] <= 2
wait_until(c, lambda: not c.pending())
c.disconnect()
print("OK")
""")
    assert "OK" in r.stdout


@pytest.mark.parametrize("ver", [4, 5])
@pytest.mark.parametrize("qos", [1, 2])
def test_acknowledgements_of_a_burst_share_writes_and_all_arrive(broker, ver, qos):
    # A burst received with wait_msg(), one packet a call: the PUBACKs /
    # PUBRECs wait while more input is already there and go out together
    # (link.py), in order. The socket is wrapped to count the writes; the
    # broker's view is checked by resuming the session: nothing comes again.
    r = mp(broker, ver, r"""
QOS = %d
class Counting:
    def __init__(self, s):
        self.s = s
        self.writes = 0
    def write(self, b, off=0, n=None):
        self.writes += 1
        return self.s.write(b, off, n) if n is not None else self.s.write(b)
    def __getattr__(self, name):
        return getattr(self.s, name)
rx = client("burst-rx%%d-" %% QOS, clean_session=False, keepalive=30, receive_max=32)
rx.connect()
rx.subscribe("burst/%%d" %% VER, QOS)
rx.disconnect()                      # the broker queues the burst for the session
tx = client("burst-tx%%d-" %% QOS)
tx.connect()
N = 24
for i in range(N):
    tx.publish("burst/%%d" %% VER, b"%%02d" %% i, qos=QOS)
wait_until(tx, lambda: not tx.pending())
tx.disconnect()
rx.connect()
sock = rx.conn.net.sock
counting = rx.conn.net.sock = Counting(sock)
deadline = time.ticks_add(time.ticks_ms(), 10000)
while len(got) < N and time.ticks_diff(deadline, time.ticks_ms()) > 0:
    rx.wait_msg(500)
for _ in range(20):                  # QoS 2: the PUBRELs, their PUBCOMPs
    rx.check_msg()
    time.sleep_ms(20)
assert [m for _, m, _, _ in got] == [b"%%02d" %% i for i in range(N)], got
writes = counting.writes
rx.conn.net.sock = sock
rx.disconnect()
got.clear()
rx.connect()                         # resumed: anything unacknowledged would come again
for _ in range(30):
    rx.check_msg()
    time.sleep_ms(20)
assert not got, got
rx.disconnect()
print("OK", N, writes)
""" % qos)
    out = r.stdout.split()
    assert out[-3] == "OK", r.stdout
    n, writes = int(out[-2]), int(out[-1])
    # One write per acknowledgement would be n (QoS 2: 2n with the PUBCOMPs).
    # QoS 1: at least two acknowledgements a write on average. QoS 2: the
    # PUBCOMPs answer the broker's PUBRELs, which come a round trip after the
    # PUBRECs, so how many go together depends on the timing: 6 to 17 writes
    # for 48 acknowledgements measured (3.1.1), and the faster the client
    # reads, the fewer it finds waiting. At least two a write on average there.
    assert writes <= n // 2 if qos == 1 else writes <= n, r.stdout
