"""ejabberd 23.01 (Debian's package; its MQTT broker is mod_mqtt) as a second
broker: the library's round trips, persistent sessions and SIGKILL streams
against it, the ways it differs from mosquitto that a device meets, and a
two-node cluster. The nodes are private (tools/ejabberd_broker.py), on free
loopback ports; tools/ensure_ejabberd.sh installs the package.

The library is driven only through its public API (MQTTClient,
MQTTException, RobustClient, last_event, session_present). A few tests also
talk raw MQTT from CPython (class Raw) to pin down what the broker itself
sends, where the library has no public way to show it.

What differs from mosquitto, as measured here (test names in brackets):

- Login: anonymous login needs a user name AND a non-empty password (any);
  without them CONNACK "not authorized", 5 / 0x87. Every client here
  passes USER/PASSWORD. [test_login_needs_user_and_password]
- Session expiry is capped by the broker (mod_mqtt session_expiry, 5 min by
  default): MQTT 5 clients see the cap in CONNACK, MQTT 3.1.1 clients are
  cut to it silently and find Session Present 0 afterwards.
  [test_connack_reports_the_session_expiry_cap, test_session_expiry_is_capped]
- An offline session that gets more than max_queue messages (5000 by
  default) is ended, queue and subscriptions included: Session Present 0
  (mosquitto drops only the excess). [test_offline_queue_overflow_ends_the_session]
- One QoS 1/2 message in flight towards a client (mosquitto: 20); the rest
  waits in the session queue. [test_one_message_in_flight_towards_the_client]
- The client's Maximum Packet Size (MQTT 5) is not honoured: a PUBLISH
  bigger than it is sent anyway (mosquitto drops it).
  [test_client_maximum_packet_size_is_ignored]
- CONNECT refusals: a will topic starting with '$' is refused with 3.1.1
  return code 0x80, a code 3.1.1 does not define (MQTT 5: 0x90); a CONNECT
  that does not decode is answered by closing the connection, no CONNACK;
  an empty client id with Clean Session 0 is accepted (3.1.1 requires
  return code 2, which mosquitto sends); MQTT 5 password without user name
  closes the connection. [test_will_topic_with_dollar_is_refused,
  test_connect_refusals_raw]
- Topic filters deeper than 8 levels get SUBACK 0x8F, in 3.1.1 too (where
  only 0x80 is a valid failure code: a strict client closes the link over
  it); a '$share/' filter drops the
  connection (MQTT 5: DISCONNECT 0x9E). [test_deep_filter_refused,
  test_shared_subscription_drops_the_connection]
- Cluster: a session lives in a process on one node and dies with it
  (Session Present 0 on the other node). A switch to the other node within
  the wall-clock second of the previous connect, without a DISCONNECT in
  between, wedges the session: CONNACK 0x80 on every node for ~60 s, then
  the session is gone (tools/ejabberd_broker.py, Cluster; too slow to test
  here). [test_cluster_*]
"""
import ast
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest

from conftest import MP_HELPERS, boot_with_kills, spawn_mp, run_mp
from ejabberd_broker import PASSWORD, USER, Cluster, EjabberdNode, erl_libs

DEVICE = MP_HELPERS / "device_stream.py"


# ---------------------------------------------------------------- fixtures
def _require_ejabberd():
    """Fail (never skip) when the package is missing."""
    try:
        erl_libs()
    except RuntimeError as e:
        pytest.fail("%s.\nRun `make test` (it runs tools/ensure_ejabberd.sh) or, as root, "
                    "`sh tools/ensure_ejabberd.sh`." % e, pytrace=False)


@pytest.fixture(scope="module")
def ejabberd(tmp_path_factory):
    """One private ejabberd node, mod_mqtt with ejabberd's defaults."""
    _require_ejabberd()
    node = EjabberdNode(tmp_path_factory.mktemp("ejabberd")).start()
    yield node
    node.stop(graceful=False)     # throwaway data: skip Erlang's ~1 s clean shutdown


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    """A node with small mod_mqtt limits, to show them at work cheaply:
    sessions expire 2 s after their client left, an offline session queues
    at most 5 messages (+1 in flight). Defaults: 5 min, 5000."""
    _require_ejabberd()
    node = EjabberdNode(tmp_path_factory.mktemp("ejabberd-limited"), session_expiry=2,
                        max_queue=5).start()
    yield node
    node.stop(graceful=False)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    _require_ejabberd()
    c = Cluster(tmp_path_factory.mktemp("ejabberd-cluster"), n=2)
    yield c
    c.stop(graceful=False)


@pytest.fixture
def live_cluster(cluster):
    """The module's cluster with every node up: a test before may have
    killed one (it restarts with its database and rejoins, ~1 s)."""
    cluster.restart_dead()
    return cluster


@pytest.fixture(autouse=True)
def _ejabberd_log_on_failure(request):
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for name in ("ejabberd", "limited", "cluster"):
            if name in request.fixturenames:
                text = request.getfixturevalue(name).log_text()
                sys.stderr.write("\n--- ejabberd log tail (%s)\n%s\n" % (name, text[-8000:]))


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    """tests/mp/device_stream.py, run unchanged, with the user name and
    password that ejabberd's anonymous login needs (the script passes
    neither): a wrapper adds them to the MQTTClient it constructs, then
    executes the script with the same argv."""
    path = tmp_path_factory.mktemp("device") / "device_stream_login.py"
    path.write_text(
        "# Generated by tests/test_ejabberd.py: device_stream.py with a login.\n"
        "import sys\n"
        "import durable_mqtt\n"
        "_MQTTClient = durable_mqtt.MQTTClient\n"
        "def _with_login(*args, **kw):\n"
        "    if len(args) < 4:\n"
        "        kw.setdefault('user', %r)\n"
        "    if len(args) < 5:\n"
        "        kw.setdefault('password', %r)\n"
        "    return _MQTTClient(*args, **kw)\n"
        "durable_mqtt.MQTTClient = _with_login\n"
        "sys.argv[0] = %r\n"
        "exec(open(%r).read())\n" % (USER, PASSWORD, str(DEVICE), str(DEVICE)))
    return path


# ------------------------------------------------- MicroPython script helpers
PRELUDE = r"""
import time
from durable_mqtt import MQTTClient, MQTTException
from testlib import wait_until
USER, PASSWORD = %r, %r
def client(cid, port, **kw):
    kw.setdefault("user", USER)
    kw.setdefault("password", PASSWORD)
    return MQTTClient(cid, "127.0.0.1", port, **kw)
def collect(c):
    got = []
    c.set_callback(lambda t, m, r, q: got.append((bytes(t), bytes(m), r, q)))
    return got
def settle(c, ms=200):
    # Keep receiving for a while: a duplicate would arrive now.
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < ms:
        c.wait_msg(20)
""" % (USER, PASSWORD)


def mp(body, timeout=60, **subs):
    """Run PRELUDE + body % subs in the unix port; return the value of
    its `print("RESULT", repr(x))` line."""
    r = run_mp(PRELUDE + (body % subs if subs else body), timeout=timeout)
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            return ast.literal_eval(line[7:])
    pytest.fail("no RESULT line:\n" + r.stdout[-4000:])


def publish_mp(port, ver, topic, payloads, qos):
    """Publish payloads (bytes) in order from a clean-session client."""
    mp(r"""
p = client("pub-%%d" %% time.ticks_ms(), %(port)d, version=%(ver)d, keepalive=10)
p.connect()
for m in %(payloads)r:
    p.publish(%(topic)r, m, qos=%(qos)d)
wait_until(p, lambda: not p.pending())
p.disconnect()
print("RESULT", repr(True))
""", port=port, ver=ver, topic=topic, payloads=list(payloads), qos=qos)


# ------------------------------------------------------- raw MQTT (CPython)
class Raw:
    """Just enough MQTT to see what the broker sends: no retries, no
    automatic acknowledgements."""

    def __init__(self, port, version=4):
        self.v = version
        self.s = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""

    @staticmethod
    def _str(b):
        return struct.pack("!H", len(b)) + b

    @staticmethod
    def _vbi(n):
        out = b""
        while True:
            d, n = n % 128, n // 128
            out += bytes([d | (0x80 if n else 0)])
            if not n:
                return out

    def send(self, first, body):
        self.s.sendall(bytes([first]) + self._vbi(len(body)) + body)

    def connect(self, cid, user=USER, password=PASSWORD, clean=True, props=b"", extra_flags=0):
        """Send CONNECT; return the CONNACK (see recv), or None if the
        broker closed the connection instead."""
        flags = (0x02 if clean else 0) | extra_flags
        payload = self._str(cid.encode())
        if user is not None:
            flags |= 0x80
            payload += self._str(user.encode())
        if password is not None:
            flags |= 0x40
            payload += self._str(password.encode())
        vh = self._str(b"MQTT") + bytes([self.v, flags]) + struct.pack("!H", 30)
        if self.v == 5:
            vh += self._vbi(len(props)) + props
        self.send(0x10, vh + payload)
        return self.recv(3)

    def props(self):
        return b"\x00" if self.v == 5 else b""

    def subscribe(self, topic, qos, pid=1):
        self.send(0x82, struct.pack("!H", pid) + self.props() + self._str(topic.encode()) + bytes([qos]))
        return self.recv(3)

    def publish(self, topic, payload, qos, pid):
        self.send(0x30 | qos << 1,
                  self._str(topic.encode()) + struct.pack("!H", pid) + self.props() + payload)

    def ack(self, first, pid):
        self.send(first, struct.pack("!H", pid))

    def recv(self, timeout):
        """The next packet as (first byte, body), None when the broker closed
        the connection, or "timeout"."""
        end = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 2:
                n, mult, i = 0, 1, 1
                while i < len(self.buf):
                    n += (self.buf[i] & 0x7F) * mult
                    mult *= 128
                    i += 1
                    if not self.buf[i - 1] & 0x80:
                        break
                else:
                    i = None
                if i is not None and len(self.buf) >= i + n:
                    pkt = (self.buf[0], self.buf[i:i + n])
                    self.buf = self.buf[i + n:]
                    return pkt
            left = end - time.monotonic()
            if left <= 0:
                return "timeout"
            self.s.settimeout(left)
            try:
                data = self.s.recv(4096)
            except socket.timeout:
                return "timeout"
            except ConnectionResetError:
                return None
            if not data:
                return None
            self.buf += data

    def drain(self, timeout):
        """Every packet that arrives within `timeout` s."""
        out = []
        end = time.monotonic() + timeout
        while True:
            p = self.recv(max(0.01, end - time.monotonic()))
            if p == "timeout" or p is None:
                return out
            out.append(p)

    def close(self):
        self.s.close()


def connack_props(body):
    """MQTT 5 CONNACK body -> {property id: value} (integers; strings and
    binary data as bytes; a repeated property keeps its last value)."""
    n, mult, i = 0, 1, 2
    while True:
        n += (body[i] & 0x7F) * mult
        mult *= 128
        i += 1
        if not body[i - 1] & 0x80:
            break
    p, end, out = i, i + n, {}
    sizes = {1: (0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A), 2: (0x13, 0x21, 0x22, 0x23),
             4: (0x02, 0x11, 0x18, 0x27)}
    while p < end:
        pid = body[p]
        p += 1
        for size, ids in sizes.items():
            if pid in ids:
                out[pid] = int.from_bytes(body[p:p + size], "big")
                p += size
                break
        else:                      # a string / binary property
            ln = struct.unpack("!H", body[p:p + 2])[0]
            out[pid] = body[p + 2:p + 2 + ln]
            p += 2 + ln
    return out


def wait_for_line(path, text, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.02)
    raise AssertionError("%r never appeared in %s" % (text, path))


def sub_process(port, ver, qos, topic, out_path, client_id):
    """mosquitto_sub with ejabberd's login, printing payloads into out_path."""
    with open(out_path, "w") as out:
        return subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-q", str(qos),
                                 "-t", topic, "-i", client_id, "-u", USER, "-P", PASSWORD,
                                 "-V", "mqttv5" if ver == 5 else "mqttv311"],
                                stdout=out, stderr=subprocess.STDOUT)


def sub_ready(port, ver, topic, out_path):
    """Publish a marker until the subscriber writing out_path shows it."""
    for _ in range(50):
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", topic,
                        "-m", "ready", "-u", USER, "-P", PASSWORD,
                        "-V", "mqttv5" if ver == 5 else "mqttv311"], check=True, timeout=10)
        try:
            wait_for_line(out_path, "ready", 0.2)
            return
        except AssertionError:
            pass
    raise AssertionError("subscriber on port %d never became ready" % port)


# ------------------------------------------------------------ round trips
@pytest.mark.parametrize("ver", [4, 5])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_qos_round_trip(ejabberd, ver, qos):
    topic = "rt/%d/%d" % (ver, qos)
    payload = b"payload-%d-%d" % (ver, qos)
    sp, pid, got, pending = mp(r"""
c = client("rt-%(ver)d-%(qos)d", %(port)d, version=%(ver)d, keepalive=10)
got = collect(c)
sp = c.connect()
c.subscribe(%(topic)r, %(qos)d)
pid = c.publish(%(topic)r, %(payload)r, qos=%(qos)d)
wait_until(c, lambda: got and not c.pending())
settle(c)
c.disconnect()
print("RESULT", repr((sp, pid, got, c.pending())))
""", ver=ver, qos=qos, port=ejabberd.port, topic=topic, payload=payload)
    assert sp is False
    if qos == 0:
        assert pid is None
    else:
        assert 1 <= pid <= 65535
    assert got == [(topic.encode(), payload, False, qos)]       # exactly once
    assert pending == 0


# ----------------------------------------------------- persistent session
@pytest.mark.parametrize("ver", [4, 5])
def test_persistent_session_survives_process_restart(ejabberd, tmp_path, ver):
    session = str(tmp_path / "session.bin")
    device = r"""
c = client("persist-%(ver)d", %(port)d, version=%(ver)d, keepalive=10, clean_session=False,
           session_file=%(session)r)
got = collect(c)
"""
    subs = dict(ver=ver, port=ejabberd.port, session=session)
    # Boot 1: subscribe, then end without DISCONNECT, as a reset would.
    sp, event = mp(device + r"""
sp = c.connect()
c.subscribe("persist/%(ver)d/1", 1)
c.subscribe("persist/%(ver)d/2", 2)
print("RESULT", repr((sp, c.last_event)))
""", **subs)
    assert (sp, event) == (False, "new")
    # Meanwhile another client publishes; ejabberd queues them in the session.
    msgs = [b"m%d" % i for i in range(5)]
    publish_mp(ejabberd.port, ver, "persist/%d/1" % ver, msgs, 1)
    publish_mp(ejabberd.port, ver, "persist/%d/2" % ver, msgs, 2)
    # Boot 2: the same device, restored from its session file.
    sp, present, event, got = mp(device + r"""
sp = c.connect()
wait_until(c, lambda: len(got) >= 10)
settle(c)
print("RESULT", repr((sp, c.session_present, c.last_event, got)))
c.disconnect()
""", **subs)
    assert sp is True and present is True
    assert event == "resumed"
    for q in (1, 2):
        t = b"persist/%d/%d" % (ver, q)
        assert [m for (tt, m, r, qq) in got if tt == t] == msgs, got     # all, in order, once
        assert all(qq == q for (tt, m, r, qq) in got if tt == t), got
    assert len(got) == 10


# -------------------------------------------------------- SIGKILL streams
# As tests/test_kill_restart.py against mosquitto, smaller to keep this
# module well under a minute: N messages, KILLS random SIGKILLs.
N = 120
KILLS = 5


@pytest.mark.parametrize("ver,qos", [(4, 1), (4, 2), (5, 1), (5, 2)])
def test_publisher_killed_at_random_loses_nothing(ejabberd, device, tmp_path, ver, qos):
    rng = random.Random(1000 * ver + qos)
    topic = "stream/%d/%d" % (ver, qos)
    out_path = tmp_path / "sub.out"
    sub = sub_process(ejabberd.port, ver, 2, topic, out_path, "ksub-%d-%d" % (ver, qos))
    try:
        sub_ready(ejabberd.port, ver, topic, out_path)
        session = tmp_path / "session.bin"
        progress = tmp_path / "progress"
        kills, _ = boot_with_kills(lambda boot: spawn_mp(device, "pub", ejabberd.port, ver, qos, N, session,
                                                         progress, boot), rng, KILLS, budget_s=40)
        time.sleep(0.5)
    finally:
        sub.terminate()
        sub.wait(5)
    received = [x for x in out_path.read_text().split() if x != "ready"]
    numbers = [int(x.split(":")[0]) for x in received]
    missing = set(range(N)) - set(numbers)
    assert kills >= KILLS - 1, "the stream ended before enough kills (%d)" % kills
    assert not missing, "lost %d messages: %s" % (len(missing), sorted(missing)[:20])
    if qos == 2:
        # A payload is (number, boot): the same one twice is a library duplicate.
        dups = [x for x in set(received) if received.count(x) > 1]
        assert not dups, "QoS 2 delivered twice: %s" % dups[:10]
    print("kills=%d received=%d app-repeats=%d" % (kills, len(received), len(received) - N))


@pytest.mark.parametrize("ver,qos", [(4, 1), (4, 2), (5, 1), (5, 2)])
def test_receiver_killed_at_random_gets_everything(ejabberd, device, tmp_path, ver, qos):
    rng = random.Random(7 * ver + qos)
    session = tmp_path / "session.bin"
    delivered = tmp_path / "delivered"
    first = spawn_mp(device, "sub", ejabberd.port, ver, qos, 0, session, delivered, 0)
    out, _ = first.communicate(timeout=30)
    assert "DONE" in out, out
    topic = "stream/%d/%d" % (ver, qos)
    pub = subprocess.Popen(["sh", "-c", "for i in $(seq 0 %d); do echo $i:x; sleep 0.015; done | "
                            "mosquitto_pub -p %d -q %d -t %s -l -V %s -u %s -P %s"
                            % (N - 1, ejabberd.port, qos, topic, "mqttv5" if ver == 5 else "mqttv311",
                               USER, PASSWORD)], start_new_session=True)
    try:
        kills, _ = boot_with_kills(lambda boot: spawn_mp(device, "sub", ejabberd.port, ver, qos, N, session,
                                                         delivered, 1), rng, KILLS, pause=(0.05, 0.35), budget_s=40)
        assert pub.wait(30) == 0
    finally:
        if pub.poll() is None:            # the shell and its mosquitto_pub
            os.killpg(pub.pid, signal.SIGTERM)
            pub.wait(5)
    numbers = [int(x.split(":")[0]) for x in delivered.read_text().split()]
    missing = set(range(N)) - set(numbers)
    assert not missing, "lost %d: %s" % (len(missing), sorted(missing)[:20])
    if qos == 2:
        dups = len(numbers) - len(set(numbers))
        # Only a kill between delivery and the flash write can repeat one.
        assert dups <= kills, (dups, kills)
        print("kills=%d duplicates=%d (window allows up to %d)" % (kills, dups, kills))
    assert kills >= KILLS - 1


# ------------------------------------------- where ejabberd differs: login
@pytest.mark.parametrize("ver", [4, 5])
def test_login_needs_user_and_password(ejabberd, broker, ver):
    body = r"""
res = []
for port in (%(ejabberd)d, %(mosquitto)d):
    row = []
    for user, password in ((None, None), (USER, None), (USER, ""), (USER, "anything")):
        c = client("ej-login-%(ver)d", port, version=%(ver)d, user=user, password=password)
        try:
            c.connect()
            c.disconnect()
            row.append("ok")
        except MQTTException as e:
            row.append(e.args[0])
    res.append(row)
print("RESULT", repr(res))
"""
    ej, mosq = mp(body, ver=ver, ejabberd=ejabberd.port, mosquitto=broker.port)
    refused = 5 if ver == 4 else 0x87            # not authorized
    assert ej == [refused, refused, refused, "ok"]
    assert mosq == ["ok", "ok", "ok", "ok"]       # mosquitto: allow_anonymous


# ---------------------------------------------- session expiry is capped
def test_connack_reports_the_session_expiry_cap(ejabberd, broker):
    """MQTT 5 asks for 0xFFFFFFFF; ejabberd answers with its cap (300 s by
    default) in CONNACK. mosquitto grants it (no property in CONNACK)."""
    seen = {}
    for name, port in (("ejabberd", ejabberd.port), ("mosquitto", broker.port)):
        r = Raw(port, 5)
        ack = r.connect("ej-cap-raw", clean=False, props=b"\x11\xff\xff\xff\xff")
        r.send(0xE0, b"\x00\x05\x11\x00\x00\x00\x00")    # DISCONNECT, expiry 0: session ends
        r.close()
        assert ack[0] == 0x20 and ack[1][1] == 0, ack
        seen[name] = connack_props(ack[1]).get(0x11)
    assert seen == {"ejabberd": 300, "mosquitto": None}


def test_session_expiry_is_capped(limited, broker):
    """On a node with session_expiry 2 s, a session asked to live forever
    (3.1.1 Clean Session 0; MQTT 5 expiry 0xFFFFFFFF) is gone 2.6 s after
    the disconnect: Session Present 0 (the library reports `lost`). In 3.1.1
    nothing told the client. mosquitto keeps both."""
    res = mp(r"""
cs = []
for port in (%(ejabberd)d, %(mosquitto)d):
    for ver in (4, 5):
        c = client("ej-cap-%%d" %% ver, port, version=ver, keepalive=10, clean_session=False)
        c.connect()
        c.subscribe("cap/%%d" %% ver, 1)
        c.disconnect()
        cs.append(c)
time.sleep_ms(2600)
res = []
for c in cs:
    sp = c.connect()
    res.append((sp, c.last_event))
    c.disconnect()
print("RESULT", repr(res))
""", ejabberd=limited.port, mosquitto=broker.port)
    assert res[:2] == [(False, "lost"), (False, "lost")], res         # ejabberd 3.1.1, 5
    assert res[2:] == [(True, "resumed"), (True, "resumed")], res     # mosquitto 3.1.1, 5


def test_offline_queue_overflow_ends_the_session(limited, tmp_path):
    """max_queue (5000 by default, 5 here): one message more than the queue
    (+1 in flight) holds for an offline client, and ejabberd ends the whole
    session: Session Present 0, every queued message gone, subscriptions
    too (mosquitto drops only the excess, max_queued_messages, and keeps
    the session). 6 messages arrive; 7 end the session."""
    port = limited.port
    res = {}
    for ver in (4, 5):
        for count in (6, 7):
            cid, topic = "ql-%d-%d" % (ver, count), "ql/%d/%d" % (ver, count)
            device = r"""
c = client(%(cid)r, %(port)d, version=%(ver)d, keepalive=10, clean_session=False,
           session_file=%(session)r)
got = collect(c)
"""
            subs = dict(cid=cid, port=port, ver=ver, session=str(tmp_path / cid))
            mp(device + r"""
c.connect()
c.subscribe(%(topic)r, 1)
c.disconnect()
print("RESULT", repr(True))
""", topic=topic, **subs)
            publish_mp(port, ver, topic, [b"m%d" % i for i in range(count)], 1)
            res[ver, count] = mp(device + r"""
sp = c.connect()
event = c.last_event
settle(c, 300)
c.disconnect()
print("RESULT", repr((sp, event, len(got))))
""", **subs)
    for ver in (4, 5):
        assert res[ver, 6] == (True, "resumed", 6), res
        assert res[ver, 7] == (False, "lost", 0), res


# -------------------------------- one message in flight towards the client
@pytest.mark.parametrize("ver", [4, 5])
def test_one_message_in_flight_towards_the_client(ejabberd, broker, ver):
    """5 QoS 1 and 3 QoS 2 messages for a subscriber that does not
    acknowledge yet: ejabberd sends 1 and holds the rest until it is
    acknowledged (at QoS 2 until PUBCOMP: after PUBREC only PUBREL comes);
    mosquitto sends all 8 (its max_inflight_messages is 20)."""
    first_burst = {}
    for name, port in (("ejabberd", ejabberd.port), ("mosquitto", broker.port)):
        topic = "inflight/%d/%s" % (ver, name)
        sub = Raw(port, ver)
        assert sub.connect("ej-inflight-sub-%d" % ver)[1][1] == 0
        assert sub.subscribe(topic, 2)[0] == 0x90
        pub = Raw(port, ver)
        assert pub.connect("ej-inflight-pub-%d" % ver)[1][1] == 0
        for i in range(1, 6):
            pub.publish(topic, b"q1-%d" % i, 1, i)
        for i in range(6, 9):
            pub.publish(topic, b"q2-%d" % i, 2, i)
        done, end = 0, time.monotonic() + 5
        while done < 8 and time.monotonic() < end:    # the publisher's side of the flows
            p = pub.recv(1)
            if isinstance(p, tuple) and p[0] & 0xF0 == 0x50:
                pub.ack(0x62, struct.unpack("!H", p[1][:2])[0])            # PUBREC -> PUBREL
            elif isinstance(p, tuple) and p[0] & 0xF0 in (0x40, 0x70):     # PUBACK, PUBCOMP
                done += 1
        assert done == 8
        queue = sub.drain(0.3)
        first_burst[name] = sum(1 for p in queue if p[0] & 0xF0 == 0x30)
        # Now acknowledge each packet as it comes: all 8 arrive, in order.
        got, after_pubrec, end = [], None, time.monotonic() + 5
        while len(got) < 8 and time.monotonic() < end:
            p = queue.pop(0) if queue else sub.recv(1)
            if not isinstance(p, tuple):
                continue
            first, body = p
            if first & 0xF0 == 0x30:                                  # PUBLISH
                ln = struct.unpack("!H", body[:2])[0]
                pid = struct.unpack("!H", body[2 + ln:4 + ln])[0]
                data = body[4 + ln:]
                if ver == 5:                                          # skip the properties
                    plen, i = 0, 0
                    while True:
                        plen |= (data[i] & 0x7F) << (7 * i)
                        i += 1
                        if not data[i - 1] & 0x80:
                            break
                    data = data[i + plen:]
                got.append(data)
                if (first >> 1) & 3 == 1:
                    sub.ack(0x40, pid)                                # PUBACK
                else:
                    sub.ack(0x50, pid)                                # PUBREC
                    if name == "ejabberd" and after_pubrec is None:
                        queue += sub.drain(0.2)
                        after_pubrec = [x[0] & 0xF0 for x in queue]
            elif first & 0xF0 == 0x60:                                # PUBREL
                sub.ack(0x70, struct.unpack("!H", body[:2])[0])       # PUBCOMP
        sub.close()
        pub.close()
        assert got == [b"q1-%d" % i for i in range(1, 6)] + [b"q2-%d" % i for i in range(6, 9)], got
        if name == "ejabberd":
            assert after_pubrec == [0x60], after_pubrec               # PUBREL only
    assert first_burst == {"ejabberd": 1, "mosquitto": 8}


# ---------------------------------------- the client's Maximum Packet Size
def test_client_maximum_packet_size_is_ignored(ejabberd, broker):
    """MQTT 5 device with buf_size 128 (sent as Maximum Packet Size): a
    600-byte PUBLISH for it. mosquitto does not send it (MQTT-3.1.2-24);
    ejabberd does: the library refuses it with an MQTTException from
    wait_msg, keeps the link and receives the next message."""
    res = mp(r"""
res = []
for port in (%(ejabberd)d, %(mosquitto)d):
    c = client("ej-mps", port, version=5, buf_size=128, keepalive=10)
    got = collect(c)
    c.connect()
    c.subscribe("mps/t", 1)
    p = client("ej-mps-pub", port, version=5, buf_size=2048, keepalive=10)
    p.connect()
    p.publish("mps/t", b"B" * 600, qos=1)
    p.publish("mps/t", b"small", qos=1)
    wait_until(p, lambda: not p.pending())
    p.disconnect()
    errors = []
    t0 = time.ticks_ms()
    quiet_from = None
    while time.ticks_diff(time.ticks_ms(), t0) < 3000:
        try:
            c.wait_msg(20)
        except MQTTException as e:
            errors.append(type(e).__name__)
        if got and quiet_from is None:
            quiet_from = time.ticks_ms()
        if quiet_from is not None and time.ticks_diff(time.ticks_ms(), quiet_from) > 200:
            break
    c.disconnect()
    res.append((errors, [m for (t, m, r, q) in got]))
print("RESULT", repr(res))
""", ejabberd=ejabberd.port, mosquitto=broker.port)
    ej, mosq = res
    assert len(ej[0]) == 1 and ej[1] == [b"small"], ej     # one refusal (PacketTooLarge), link kept
    assert mosq == ([], [b"small"]), mosq


# ---------------------------------------------------- CONNECT refusals
@pytest.mark.parametrize("ver", [4, 5])
def test_will_topic_with_dollar_is_refused(ejabberd, broker, ver):
    """ejabberd refuses to publish to any topic starting with '$', a will
    included: 3.1.1 CONNACK return code 0x80 (not one 3.1.1 defines, the
    library reports it as is), MQTT 5 0x90 topic name invalid. mosquitto
    accepts the will."""
    res = mp(r"""
res = []
for port in (%(ejabberd)d, %(mosquitto)d):
    c = client("ej-will-%(ver)d", port, version=%(ver)d)
    c.set_last_will("$dev/status", b"gone", qos=1)
    try:
        c.connect()
        c.disconnect()
        res.append("ok")
    except MQTTException as e:
        res.append(e.args[0])
print("RESULT", repr(res))
""", ver=ver, ejabberd=ejabberd.port, mosquitto=broker.port)
    assert res == [0x80 if ver == 4 else 0x90, "ok"]


def test_connect_refusals_raw(ejabberd, broker):
    """What other bad CONNECTs get (raw bytes; CONNACK return code, or None
    when the broker just closes the connection)."""
    def code(port, ver, **kw):
        r = Raw(port, ver)
        ack = r.connect(**kw)
        r.close()
        return None if ack is None else ack[1][1]

    cases = {
        "reserved flag bit set": dict(ver=4, cid="bad-1", extra_flags=0x01),
        "3.1.1 empty client id, Clean Session 0": dict(ver=4, cid="", clean=False),
        "MQTT 5 password without user name": dict(ver=5, cid="bad-3", user=None),
        "user name that is not a JID": dict(ver=4, cid="bad-4", user="a@b@c"),
    }
    ej = {k: code(ejabberd.port, **v) for k, v in cases.items()}
    mosq = {k: code(broker.port, **v) for k, v in cases.items()}
    assert ej == {"reserved flag bit set": None,
                  "3.1.1 empty client id, Clean Session 0": 0,      # accepted (spec: 2)
                  "MQTT 5 password without user name": None,
                  "user name that is not a JID": 4}, ej
    assert mosq == {"reserved flag bit set": None,
                    "3.1.1 empty client id, Clean Session 0": 2,
                    "MQTT 5 password without user name": 0,
                    "user name that is not a JID": 0}, mosq


# -------------------------------------------------------- subscriptions
@pytest.mark.parametrize("ver", [4, 5])
def test_deep_filter_refused(ejabberd, ver):
    """max_topic_depth 8: a 9-level filter gets SUBACK 0x8F, in 3.1.1 too,
    where only 0x80 is a valid failure code (MQTT-3.9.3-2). The library
    raises for it; in 3.1.1 it may take the invalid code for a protocol
    error and close the link (the session survives: connect() resumes it)."""
    r = Raw(ejabberd.port, ver)
    assert r.connect("deep-raw-%d" % ver)[1][1] == 0
    first, body = r.subscribe("d/2/3/4/5/6/7/8/9", 1)
    r.close()
    if ver == 5:                          # skip the properties (a Reason String)
        plen, i = 0, 2
        while True:
            plen |= (body[i] & 0x7F) << (7 * (i - 2))
            i += 1
            if not body[i - 1] & 0x80:
                break
        codes = body[i + plen:]
    else:
        codes = body[2:]
    assert (first, codes) == (0x90, b"\x8f")

    refused, sp, got = mp(r"""
c = client("deep-%(ver)d", %(port)d, version=%(ver)d, keepalive=10, clean_session=False)
got = collect(c)
c.connect()
c.subscribe("d/2/3/4/5/6/7/8", 1)
try:
    c.subscribe("d/2/3/4/5/6/7/8/9", 1)
    refused = "granted"
except MQTTException as e:
    refused = e.args[0]
sp = None
try:
    c.check_msg()
except OSError:                 # the link was closed over it: resume the session
    sp = c.connect()
c.publish("d/2/3/4/5/6/7/8", b"still subscribed", qos=1)
wait_until(c, lambda: got and not c.pending())
c.disconnect()
print("RESULT", repr((refused, sp, got)))
""", ver=ver, port=ejabberd.port)
    assert got == [(b"d/2/3/4/5/6/7/8", b"still subscribed", False, 1)]
    if ver == 5:
        assert (refused, sp) == (0x8F, None)
    else:
        assert refused != "granted" and sp in (None, True), (refused, sp)
        print("3.1.1 SUBACK 0x8F: library raised code %r, %s" % (
            refused, "link kept" if sp is None else "link closed, session resumed"))


@pytest.mark.parametrize("ver", [4, 5])
def test_shared_subscription_drops_the_connection(ejabberd, ver):
    """A '$share/' filter: ejabberd closes the connection instead of a
    SUBACK (MQTT 5: DISCONNECT 0x9E first). mosquitto grants it."""
    res = mp(r"""
c = client("share-%(ver)d", %(port)d, version=%(ver)d, keepalive=10)
c.connect()
try:
    c.subscribe("$share/g/t", 1)
    res = "granted"
except MQTTException as e:
    res = e.args[0]
sp = c.connect()          # a new connection works
c.disconnect()
print("RESULT", repr((res, sp)))
""", ver=ver, port=ejabberd.port)
    if ver == 4:
        # Closed without a word (the library raises PeerClosed, args[0] -5).
        assert res[0] != "granted" and res[1] is False, res
    else:
        assert res == (0x9E, False)     # DISCONNECT: shared subscriptions not supported


# ---------------------------------------------------------------- cluster
def _space():
    """Sleep past the next wall-clock second boundary: ejabberd 23.01 can
    wedge a session whose client connects to another node within the same
    second as its previous connect."""
    time.sleep(1.0 - (time.time() % 1.0) + 0.15)


def test_cluster_session_moves_between_nodes_and_dies_with_its_node(live_cluster, tmp_path):
    a, b = live_cluster.nodes
    device = r"""
cs = []                     # (version, client, received): MQTT 3.1.1 and 5 side by side
for ver in (4, 5):
    c = client("cl-%%d" %% ver, %(port)d, version=ver, keepalive=10, clean_session=False,
               session_file=%(dir)r + "/cl-%%d.bin" %% ver)
    cs.append((ver, c, collect(c)))
"""
    # 1. On node A: subscribe, then leave (session kept on A).
    res = mp(device + r"""
res = []
for ver, c, got in cs:
    res.append(c.connect())
    c.subscribe("cl/%%d" %% ver, 1)
    c.disconnect()
print("RESULT", repr(res))
""", port=a.port, dir=str(tmp_path))
    assert res == [False, False]
    # 2. Published on node B while the device is offline: routed to A's session.
    for ver in (4, 5):
        publish_mp(b.port, ver, "cl/%d" % ver, [b"while-away"], 1)
    _space()
    # 3. The device comes back on node B: the session moved (Session Present 1)
    #    and brought the queued message.
    res = mp(device + r"""
res = []
for ver, c, got in cs:
    sp = c.connect()
    wait_until(c, lambda: got)
    settle(c, 200)
    res.append((sp, c.last_event, got))
    c.disconnect()
print("RESULT", repr(res))
""", port=b.port, dir=str(tmp_path))
    for ver, (sp, event, got) in zip((4, 5), res):
        assert (sp, event) == (True, "resumed")
        assert got == [(b"cl/%d" % ver, b"while-away", False, 1)]
    _space()
    # 4. Back on node A; then A dies with the session in it.
    res = mp(device + r"""
res = []
for ver, c, got in cs:
    res.append(c.connect())
    c.disconnect()
print("RESULT", repr(res))
""", port=a.port, dir=str(tmp_path))
    assert res == [True, True]
    a.kill()
    _space()
    # 5. On node B: Session Present 0; the library re-subscribes (event
    #    `lost`) and messages flow again.
    res = mp(device + r"""
res = []
for ver, c, got in cs:
    sp = c.connect()
    event = c.last_event
    p = client("cl-pub-%%d" %% ver, %(port)d, version=ver)
    p.connect()
    p.publish("cl/%%d" %% ver, b"after-failover", qos=1)
    wait_until(p, lambda: not p.pending())
    p.disconnect()
    wait_until(c, lambda: got)
    res.append((sp, c.session_present, event, got))
    c.disconnect()
print("RESULT", repr(res))
""", port=b.port, dir=str(tmp_path))
    for ver, (sp, present, event, got) in zip((4, 5), res):
        assert (sp, present, event) == (False, False, "lost")
        assert got == [(b"cl/%d" % ver, b"after-failover", False, 1)]


FAILOVER_DEVICE = r"""
# A device streaming numbered QoS 1 messages through RobustClient with both
# cluster nodes in `servers`; its broker node is SIGKILLed mid-stream.
#   micropython failover.py PORT_A PORT_B VER N SESSION PROGRESS
import sys
import time
from durable_mqtt import MQTTException
from durable_mqtt.robust import RobustClient

port_a, port_b, ver, n = [int(x) for x in sys.argv[1:5]]
session, progress = sys.argv[5:7]
TOPIC = "failover/%%d" %% ver
c = RobustClient("failover-%%d" %% ver, "127.0.0.1", port_a, user=%(user)r, password=%(password)r,
                 keepalive=5, servers=[("127.0.0.1", port_a), ("127.0.0.1", port_b)],
                 version=ver, clean_session=False, session_file=session,
                 max_inflight=8, outbox_size=64, backoff_ms=(100, 1000),
                 on_up=lambda c: print("UP", c.session_present, c.last_event),
                 on_down=lambda c, e: print("DOWN", repr(e)))
t0 = time.ticks_ms()
while not c.poll(50):
    if time.ticks_diff(time.ticks_ms(), t0) > 10000:
        raise SystemExit("never connected: %%r" %% (c.last_error,))
print("CONNECTED")
prog = open(progress, "a")
for k in range(n):
    while True:
        try:
            c.publish(TOPIC, "%%d" %% k, qos=1)      # accepted: it must arrive
            break
        except MQTTException:                    # outbox full while down: not accepted
            c.poll(50)
    prog.write("%%d\n" %% k)
    prog.flush()
    c.poll(0)
    time.sleep_ms(10)
t0 = time.ticks_ms()
while c.pending() and time.ticks_diff(time.ticks_ms(), t0) < 20000:
    c.poll(50)
print("PENDING", c.pending())
c.disconnect()
print("DONE")
""" % {"user": USER, "password": PASSWORD}


def _serving_node(nodes, pid, timeout=5.0):
    """The node that process `pid` has an established TCP connection to
    (Linux /proc: the process's socket inodes against /proc/net/tcp); the
    MicroPython VM runs inside that process."""
    ports = {node.port: node for node in nodes}
    end = time.monotonic() + timeout
    while True:
        inodes = set()
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
        peers = set()
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                x = line.split()
                if x[3] == "01" and x[9] in inodes:            # ESTABLISHED
                    peers.add(int(x[2].split(":")[1], 16))
        hit = [ports[p] for p in peers if p in ports]
        if len(hit) == 1:
            return hit[0]
        assert time.monotonic() < end, "process %d is connected to none of %s" % (pid, sorted(ports))
        time.sleep(0.02)


@pytest.mark.parametrize("ver", [4, 5])
def test_cluster_failover_streams_every_number(live_cluster, tmp_path, ver):
    """RobustClient(servers=[A, B]) streams numbered QoS 1 messages with a
    persistent session on flash; the node it is connected to is SIGKILLed
    mid-stream; the device goes on through the other node (Session Present
    0: the session died with its node, the library re-queues what was in
    flight) and a subscriber on the surviving node gets every number the
    device accepted."""
    nodes = live_cluster.nodes
    n = 150
    script = tmp_path / "failover.py"
    script.write_text(FAILOVER_DEVICE)
    topic = "failover/%d" % ver
    outs = {}
    subs = []
    for i, node in enumerate(nodes):       # one subscriber per node: one survives
        outs[node.node] = tmp_path / ("sub%d.out" % i)
        subs.append(sub_process(node.port, ver, 1, topic, outs[node.node], "fsub-%d-%d" % (ver, i)))
    try:
        for node in nodes:
            sub_ready(node.port, ver, topic, outs[node.node])
        progress = tmp_path / "progress"
        progress.write_text("")
        dev_out = tmp_path / "device.out"
        with open(dev_out, "w") as f:
            dev = spawn_mp(script, nodes[0].port, nodes[1].port, ver, n, tmp_path / "session.bin",
                           progress, stdout=f)
        try:
            end = time.monotonic() + 15
            while len(progress.read_text().split()) < n // 3:
                assert dev.poll() is None, "device died:\n" + dev_out.read_text()
                assert time.monotonic() < end, "device stalled:\n" + dev_out.read_text()
                time.sleep(0.02)
            victim = _serving_node(nodes, dev.pid)
            victim.kill()
            dev.wait(60)
        finally:
            if dev.poll() is None:
                dev.kill()
                dev.wait()
        out = dev_out.read_text()
        assert dev.returncode == 0 and "DONE" in out, out
        assert "PENDING 0" in out, out
        # Connected once to the victim, then (after a DOWN) to the survivor,
        # where the session is new: Session Present 0, event `lost`.
        assert "DOWN" in out and "UP False lost" in out, out
        survivor = [x for x in nodes if x is not victim][0]
        time.sleep(0.5)
    finally:
        for s in subs:
            s.terminate()
            s.wait(5)
    accepted = {int(x) for x in progress.read_text().split()}
    received = [x for x in outs[survivor.node].read_text().split() if x != "ready"]
    missing = accepted - {int(x) for x in received}
    print("killed %s; %d accepted, %d received on %s\n%s"
          % (victim.node, len(accepted), len(received), survivor.node, out))
    assert len(accepted) == n
    assert not missing, "lost %d of %d accepted: %s" % (len(missing), n, sorted(missing)[:20])
