"""Typed errors through real sockets: a closed port, a server that accepts
TCP and never answers, a broker that requires a password, and a link that
breaks under a connected client (a small relay started here is cut). Every
failure is an MQTTException, hence an OSError; after a broken link the
session survives and the next connect() delivers what was published while
the link was down."""
import select
import socket
import subprocess
import threading

import pytest

from conftest import free_port, reports, run_mp

VERSIONS = (4, 5)

PRELUDE = """
import socket, sys, time
from durable_mqtt import MQTTClient, MQTTException
from fake_report import report, emit, pump, pump_until, outcome
V = %d
"""


def mp(v, body, timeout=30):
    r = run_mp(PRELUDE % v + body, timeout=timeout)
    return reports(r.stdout), r.stdout


def assert_error(res, cls, *words, codes=None):
    assert not res["ok"], "expected %s, the call returned %r" % (cls, res.get("value"))
    assert res["cls"] == cls, res
    assert res["mqtt"] and res["oserror"], res        # isinstance(e, MQTTException) and OSError
    msg = str(res["args"][1]).lower()
    for w in words:
        assert w.lower() in msg, "%r not in %r" % (w, res["args"][1])
    if codes is not None:
        assert res["args"][0] in codes, res


# ---------------------------------------------------------------- no broker

@pytest.mark.parametrize("v", VERSIONS)
def test_closed_port_is_refused(v):
    port = free_port()          # nothing listens there
    res, out = mp(v, """
c = MQTTClient("closed", "127.0.0.1", port=%d, version=V, timeout_ms=2000)
report("connect", c.connect)
report("check", c.check_msg)
report("publish_q1", lambda: c.publish("a/b", b"kept", qos=1))
emit("state", connected=c.is_connected(), pending=c.pending())
""" % port)
    assert_error(res["connect"], "MQTTException", "refused", str(port))
    assert res["connect"]["ms"] < 1000
    assert_error(res["check"], "NotConnected", "connect")
    # A QoS 1 message is accepted into the session even without a link.
    assert res["publish_q1"]["ok"] and res["publish_q1"]["value"] > 0, res["publish_q1"]
    assert res["state"] == {"tag": "state", "connected": False, "pending": 1}


class SilentServer:
    """Accepts TCP connections and never writes a byte."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conns = []
        self.received = b""
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._read, args=(c,), daemon=True).start()

    def _read(self, c):
        try:
            while True:
                data = c.recv(4096)
                if not data:
                    return
                self.received += data
        except OSError:
            return

    def close(self):
        self.listener.close()
        for c in self.conns:
            c.close()


@pytest.mark.parametrize("v", VERSIONS)
def test_server_that_never_answers_times_out(v):
    srv = SilentServer()
    try:
        res, out = mp(v, """
c = MQTTClient("silent", "127.0.0.1", port=%d, version=V, timeout_ms=500)
report("connect", c.connect)
report("connect_override", lambda: c.connect(timeout_ms=300))
emit("state", connected=c.is_connected())
""" % srv.port)
    finally:
        srv.close()
    assert_error(res["connect"], "Timeout", "CONNACK", "500")
    assert 400 <= res["connect"]["ms"] < 1500, res["connect"]
    assert_error(res["connect_override"], "Timeout", "CONNACK", "300")
    assert 250 <= res["connect_override"]["ms"] < 1200, res["connect_override"]
    assert res["state"]["connected"] is False
    assert srv.received[:1] == b"\x10"          # it did send a CONNECT


@pytest.mark.parametrize("v", VERSIONS)
def test_connect_larger_than_buf_size_says_what_to_change(v):
    """A CONNECT that buf_size cannot hold (a long client id, a will) is
    PacketTooLarge before anything is sent, and says what fills it and
    that buf_size is the limit (it said only "exceeds the limit of 64");
    the session keeps what was published."""
    srv = SilentServer()
    try:
        res, out = mp(v, """
c = MQTTClient("c" * 80, "127.0.0.1", port=%d, version=V, buf_size=64, timeout_ms=500)
report("q1", lambda: c.publish("a/b", b"kept", qos=1))
report("connect", c.connect)
emit("state", connected=c.is_connected(), pending=c.pending())
""" % srv.port)
    finally:
        srv.close()
    assert_error(res["connect"], "PacketTooLarge", "CONNECT", "client id", "will", "buf_size", "64")
    assert res["state"] == {"tag": "state", "connected": False, "pending": 1}, out
    assert srv.received == b""                  # nothing sent


@pytest.mark.parametrize("v", VERSIONS)
def test_a_publish_larger_than_buf_size_names_buf_size(v):
    """PacketTooLarge from publish() said "PUBLISH of 107 bytes exceeds the
    limit of 64", and left a user to guess which limit (a review found it):
    it names buf_size (or the broker's Maximum Packet Size when that is the
    smaller, docs/troubleshooting.md)."""
    res, out = mp(v, """
c = MQTTClient("big", "127.0.0.1", port=1, version=V, buf_size=64)
report("q1", lambda: c.publish("a/b", b"x" * 100, qos=1))
""")
    assert_error(res["q1"], "PacketTooLarge", "PUBLISH (buf_size)", "exceeds the limit of 64")


# ---------------------------------------------------------------- authentication

@pytest.fixture
def auth_broker(fresh_broker, tmp_path):
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "alice", "s3cret"], check=True,
                   capture_output=True, timeout=30)
    return fresh_broker(extra_conf="allow_anonymous false\npassword_file %s\n" % pw)


@pytest.mark.parametrize("v", VERSIONS)
def test_password_refused_and_accepted(auth_broker, v):
    res, out = mp(v, """
P = %d
def attempt(tag, **kw):
    c = MQTTClient("auth-" + tag, "127.0.0.1", port=P, version=V, timeout_ms=3000, **kw)
    report(tag, c.connect)
    emit(tag + "_state", connected=c.is_connected())
    return c
attempt("wrong", user="alice", password="nope")
attempt("unknown_user", user="mallory", password="s3cret")
attempt("anonymous")
c = attempt("right", user="alice", password=b"s3cret")
report("sub", lambda: c.subscribe("auth/t", 1))
c.disconnect()
""" % auth_broker.port)
    codes = (4, 5) if v == 4 else (0x86, 0x87)
    for tag in ("wrong", "unknown_user", "anonymous"):
        r = res[tag]
        assert_error(r, "ConnectRefused", "refused", codes=codes)
        msg = r["args"][1].lower()
        assert "not authorized" in msg or "user name or password" in msg, r
        assert res[tag + "_state"]["connected"] is False
    assert res["right"]["ok"], (res["right"], out)
    assert res["right_state"]["connected"] is True
    assert res["sub"]["ok"] and res["sub"]["value"] == 1, res["sub"]


# ---------------------------------------------------------------- a link that breaks

class Relay:
    """A one-thread TCP relay to `upstream`. Connecting to `kill_port` cuts
    every relayed connection (reset: SO_LINGER 0) and answers b"ok"."""

    def __init__(self, upstream_port):
        self.upstream = ("127.0.0.1", upstream_port)
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.ksock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.kill_port = self.ksock.getsockname()[1]
        self.peer = {}
        self.accepted = 0
        self.mode = "rst"
        self.running = True
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _cut(self, s):
        if self.mode == "rst":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()

    def _drop(self, s):
        other = self.peer.pop(s, None)
        self.peer.pop(other, None)
        for x in (s, other):
            if x is not None:
                try:
                    self._cut(x)
                except OSError:
                    pass

    def _loop(self):
        while self.running:
            socks = [self.lsock, self.ksock] + list(self.peer)
            try:
                ready, _, _ = select.select(socks, [], [], 0.05)
            except (OSError, ValueError):
                continue
            for s in ready:
                if s is self.lsock:
                    c, _ = s.accept()
                    self.accepted += 1
                    try:
                        u = socket.create_connection(self.upstream, timeout=5)
                    except OSError:
                        c.close()
                        continue
                    self.peer[c] = u
                    self.peer[u] = c
                elif s is self.ksock:
                    k, _ = s.accept()
                    for x in list(self.peer):
                        self._drop(x)
                    k.sendall(b"ok")
                    k.close()
                elif s in self.peer:
                    try:
                        data = s.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        self._drop(s)
                        continue
                    try:
                        self.peer[s].sendall(data)
                    except OSError:
                        self._drop(s)
        for x in list(self.peer):
            self._drop(x)

    def stop(self):
        self.running = False
        self.thread.join(5)
        self.lsock.close()
        self.ksock.close()


@pytest.fixture
def relays(broker):
    made = []

    def make(mode="rst"):
        r = Relay(broker.port)
        r.mode = mode
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()


BROKEN_LINK = """
BROKER = %d
RELAY1 = %d
KILL1 = %d
RELAY2 = %d
HOW = %r
CLEAN = %r
TAG = "%%d-%%s-%%s" %% (V, HOW, TAG_EXTRA)
TOPIC = "errors/broken/" + TAG
got = []
sub = MQTTClient("esub-" + TAG, "127.0.0.1", port=BROKER, version=V, timeout_ms=3000)
sub.set_callback(lambda t, m, r, q: got.append(bytes(m)))
sub.connect()
sub.subscribe(TOPIC, 1)

pub = MQTTClient("epub-" + TAG, "127.0.0.1", port=RELAY1, version=V, clean_session=CLEAN, timeout_ms=3000)
pub.connect(clean_session=True)          # start from nothing on the broker
pub.disconnect()
def need(d):
    if not d["ok"]:          # no point going on: the test reports this step
        sys.exit(0)
need(report("connect1", pub.connect))
need(report("before", lambda: pub.publish(TOPIC, b"before", qos=1)))
need(report("before_acked", lambda: pump_until(pub, lambda: pub.pending() == 0)))
need(report("before_recv", lambda: pump_until(sub, lambda: b"before" in got)))

k = socket.socket()
k.connect(socket.getaddrinfo("127.0.0.1", KILL1)[0][-1])
assert k.recv(2) == b"ok"
k.close()
time.sleep_ms(150)

def once():
    if HOW == "check":
        return pub.check_msg()
    if HOW == "wait":
        return pub.wait_msg(2000)
    return pub.ping()
report("broken", once)                   # the very next call reports the broken link
emit("after_break", connected=pub.is_connected(), pending=pub.pending())
report("again", once)                    # then: not connected (no hang, no odd error)
report("during", lambda: pub.publish(TOPIC, b"during", qos=1))
report("during_q2", lambda: pub.publish(TOPIC, b"during2", qos=2))
report("during_q0", lambda: pub.publish(TOPIC, b"during0", qos=0))
emit("down", pending=pub.pending())

pub.port = RELAY2
need(report("reconnect", pub.connect))
report("delivered", lambda: pump_until(pub, lambda: pub.pending() == 0))
report("received", lambda: pump_until(sub, lambda: b"during" in got and b"during2" in got and b"during0" in got))
emit("end", pending=pub.pending(), got=repr(sorted(got)))
pub.disconnect()
sub.disconnect()
"""


@pytest.mark.parametrize("v,how,mode,clean", [
    (4, "check", "rst", False), (4, "wait", "rst", False), (4, "ping", "rst", False),
    (5, "check", "rst", False), (5, "wait", "rst", False), (5, "ping", "rst", False),
    (4, "check", "fin", False), (5, "wait", "fin", False),
    (4, "wait", "rst", True), (5, "check", "rst", True),
])
def test_broken_link_surfaces_and_session_survives(broker, relays, v, how, mode, clean):
    r1 = relays(mode)
    r2 = relays()
    res, out = mp(v, ("TAG_EXTRA = %r\n" % ("%s-%s" % (mode, "clean" if clean else "persistent")))
                  + BROKEN_LINK % (broker.port, r1.port, r1.kill_port, r2.port, how, clean))
    for tag in ("connect1", "before", "before_acked", "before_recv"):
        assert res[tag]["ok"], (tag, res[tag], out)
    # The broken link is reported by the next call, as an OSError.
    b = res["broken"]
    assert not b["ok"], "%s() did not report the broken link" % how
    assert b["oserror"] and b["mqtt"], b
    assert b["cls"] == "PeerClosed", b
    msg = b["args"][1].lower()
    assert "closed" in msg or "dropped" in msg, b
    assert b["ms"] < 1000, b
    assert res["after_break"]["connected"] is False and res["after_break"]["pending"] == 0
    assert_error(res["again"], "NotConnected", "connect")
    # Published while the link is down: accepted, counted, ids returned.
    for tag in ("during", "during_q2"):
        assert res[tag]["ok"] and isinstance(res[tag]["value"], int) and res[tag]["value"] > 0, res[tag]
    assert res["during"]["value"] != res["during_q2"]["value"]
    assert res["during_q0"]["ok"] and res["during_q0"]["value"] is None, res["during_q0"]
    assert res["down"]["pending"] == 2
    # The next connect() (through a new relay) resumes and delivers them.
    assert res["reconnect"]["ok"], (res["reconnect"], out)
    assert res["reconnect"]["value"] is (not clean)        # session present when persistent
    assert res["delivered"]["ok"], (res["delivered"], out)
    assert res["received"]["ok"], (res["received"], res["end"], out)
    assert res["end"]["pending"] == 0
    assert res["end"]["got"] == repr(sorted([b"before", b"during", b"during2", b"during0"]))
    assert r1.accepted == 2 and r2.accepted == 1     # clean start + the session; then the new relay
