"""A state stored while the client holds no session (header flag 0x08).

Before its first CONNACK, and after a session ended (MQTT 5
disconnect(session_expiry=0), a 3.1.1 clean session), the client may still
hold messages for the next session, and stores them. Every checkpoint of
such a state says so, and a boot restores it as no session: the next
connect starts one, with the expiry the client is configured for. Found by
a review of the commits that introduced the flag and the storing before a
persistent CONNECT (434b666, d1032cc); each test fails at d1032cc. Real
mosquitto, the real unix port."""
import subprocess
import sys

import pytest

from conftest import MICROPYTHON, ROOT, free_port, mp_env
from test_session import PRE, mp

sys.path.insert(0, str(ROOT / "tools"))
from faultproxy import FaultProxy  # noqa: E402


def test_v5_boot_after_expiry_zero_disconnect_with_nothing_held_stores_what_is_published(broker, tmp_path):
    """disconnect(session_expiry=0) with nothing unacknowledged, a reboot,
    a QoS 1 publish() before the first connect, a power cut: the message
    was gone. The state's header holds the ended session's expiry 0, which
    the boot took for the client's, so it did not store (a persistent
    client is one whose expiry is above 0). A no-session state now leaves
    the configured expiry."""
    sess = tmp_path / "s"
    r = mp(broker.port, 5, sess, r"""
c = dev("g0", session_expiry=600)
c.connect()
c.disconnect(session_expiry=0)         # nothing unacknowledged: an empty no-session state
c.close()
c = dev("g0", session_expiry=600)      # reboot
print("BOOT1", c.persist, c.engine.expiry)
c.publish("g0/x", b"reading", qos=1)   # accepted before the first connect
c.close()                              # power cut (e.g. a brown-out joining Wi-Fi)
c = dev("g0", session_expiry=600)      # reboot
print("BOOT2", c.pending())
""")
    assert "BOOT2 1" in r.stdout, r.stdout


def test_v5_the_no_session_mark_survives_a_second_filelog_boot(broker, tmp_path):
    """The mark was written only at a DISCONNECT. FileLog checkpoints at
    every boot: the second boot restored a session held, and the next
    connect reported "lost", not "new". Now every checkpoint of a client
    holding no session carries it."""
    sess = tmp_path / "s.bin"
    r = mp(broker.port, 5, sess, r"""
from durable_mqtt.filelog import FileLog
ev = []
def d():
    return dev("ns2", session_expiry=600, event_callback=lambda e, i: ev.append(e),
               session_file=FileLog(PATH))
c = d()
c.connect()
c.subscribe("ns2/cmd", 1)
c.disconnect(session_expiry=0)
c.publish("ns2/y", b"b", qos=1)
c.close()                        # power cut
c = d()                          # boot 1: restored, no session held
print("BOOT1", c.pending(), c.engine.has_state)
c.close()                        # power cut again, before any connect
c = d()                          # boot 2
print("BOOT2", c.pending(), c.engine.has_state)
ev = []
drained(c, ev)
""")
    assert "BOOT1 1 False" in r.stdout, r.stdout
    assert "BOOT2 1 False" in r.stdout, r.stdout
    assert "EVENTS ['new']" in r.stdout, r.stdout


MAKE = r"""
import sys
from durable_mqtt.robust import RobustClient
from durable_mqtt.filelog import FileLog
CASE = %r
def d(port=PORT):
    kw = dict(clean_session=False, session_expiry=600, keepalive=10, version=5,
              session_file=FileLog(PATH) if CASE == "filelog" else PATH)
    c = (RobustClient if CASE == "robust" else MQTTClient)("dupq-" + CASE, "127.0.0.1", port, **kw)
    c.set_callback(cb)
    return c
"""


@pytest.mark.parametrize("case", ["robust", "filelog"])
def test_v5_a_qos2_message_is_not_delivered_again_after_its_session_ended_on_a_dead_link(broker, tmp_path, case):
    """A dead link: the PUBREC of a delivered QoS 2 message and the
    DISCONNECT with expiry 0 never reach the broker, which keeps the
    session and the message. The client's session ended (its QoS 2 ids
    gone), so the next connect meets Session Present 1 holding none:
    SessionError (MQTT-3.2.2-4), and a clean start. A later checkpoint
    (RobustClient's before a failed reconnect, FileLog's at boot) dropped
    the no-session mark: after a reboot the client resumed the broker's
    session and its resent PUBLISH was delivered a second time."""
    sess = tmp_path / "s.bin"
    proxy = FaultProxy(upstream=("127.0.0.1", broker.port)).start()
    try:
        code = PRE % {"port": proxy.port, "ver": 5, "path": str(sess)} + MAKE % case + r"""
c = d()
c.connect()
c.subscribe("dupq/t", 2)
print("READY")
sys.stdin.readline()
wait_until(c, lambda: got)            # delivered; its PUBREC goes into the blackhole
print("GOT1", got)
c.disconnect(session_expiry=0)        # its DISCONNECT too: the broker keeps the session
c.publish("dupq/x", b"kept", qos=1)
if CASE == "robust":
    c.port = %d                       # Wi-Fi down: one reconnect attempt fails
    try:
        c.connect()
    except OSError as x:
        print("RECONNECT FAILED", x.args[0])
c.close()
print("DONE")
""" % free_port()
        p = subprocess.Popen([MICROPYTHON, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=mp_env())
        first = p.stdout.readline().strip()
        assert first == "READY", first + p.stdout.read() + p.stderr.read()
        proxy.blackhole("up")             # client -> broker lost from now on: a dead link
        subprocess.run(["mosquitto_pub", "-p", str(broker.port), "-V", "mqttv5", "-q", "2",
                        "-t", "dupq/t", "-m", "once"], check=True, timeout=10)
        p.stdin.write("go\n")
        p.stdin.flush()
        out, err = p.communicate(timeout=30)
        assert "GOT1 [(b'dupq/t', b'once', 2)]" in out and "DONE" in out, out + err
        proxy.drop_all()                  # the broker sees the link die; its session stays (expiry 600)
    finally:
        proxy.stop()
    r = mp(broker.port, 5, sess, MAKE % case + r"""
c = d()                               # boot 1
print("BOOT1", c.pending(), c.engine.has_state, c.engine.rx2_n)
if CASE != "robust":
    c.close()                         # a power cut before any connect
    c = d()                           # boot 2
    print("BOOT2", c.pending(), c.engine.has_state, c.engine.rx2_n)
try:
    print("PRESENT", c.connect())
    try:
        wait_until(c, lambda: False, 2000)
    except AssertionError:
        pass
except SessionError as x:
    print("SESSIONERROR")
print("GOT2", got)
""")
    assert "GOT2 []" in r.stdout, r.stdout       # it was delivered once, before the reboot


def test_v4_state_after_a_failed_persistent_connect_is_not_judged_expired(broker, tmp_path):
    """3.1.1: a clean session whose link dropped, then a persistent connect
    with the network down (its checkpoint before the CONNECT makes the
    client store), then disconnect(): the state was written as a session
    held, with the clean CONNECT's expiry 0, and a boot ten minutes later
    reported it "expired" (API.md: no session expiry in version 4). The
    clean session ended with its connection: the state is a no-session
    one now."""
    sess = tmp_path / "s"
    r = mp(broker.port, 4, sess, r"""
c = dev("v4exp2")
c.connect(clean_session=True)      # a one-off clean session
c.conn.drop()                      # its link lost
c.port = %d                        # Wi-Fi down
try:
    c.connect()                    # persistent: stores from here (d1032cc)
except OSError as x:
    print("CONNECT FAILED", x.args[0])
c.publish("v4exp2/x", b"m", qos=1)
c.disconnect()
print("EXPIRY", c.engine.expiry, c.engine.has_state)
""" % free_port())
    assert "CONNECT FAILED -5" in r.stdout, r.stdout
    r = mp(broker.port, 4, sess, r"""
import durable_mqtt.records as rec
w = rec.wall_minutes
rec.wall_minutes = lambda: w() + 10          # ten minutes later
ev = []
c = dev("v4exp2", event_callback=lambda e, i: ev.append(e))
print("BOOT", c.pending(), c.engine.has_state, c.engine.expiry)
print("EVENTS", ev)
""")
    assert "BOOT 1 " in r.stdout and "EVENTS []" in r.stdout, r.stdout


def test_the_pre_connect_checkpoint_module_is_not_kept_through_the_dial(broker, tmp_path):
    """The checkpoint before the CONNECT of a client not storing (after a
    clean session) left dirstate.py loaded through dial.py's lookup, TCP
    and TLS, the connect's heap peak. It is unloaded there, as after the
    other checkpoint before a CONNECT (subscriptions owed)."""
    sess = tmp_path / "s"
    r = mp(broker.port, 5, sess, r"""
import sys
c = dev("dial5")                  # session_expiry not given: a clean session's is 0
c.connect(clean_session=True)     # a clean session: the client stops storing
c.disconnect()
c.publish("dial5/x", b"m", qos=1)
c.port = %d
def dialling():
    g = c.connecting(False)
    next(g)                       # dial.opening()'s first step, before the lookup and TCP
    m = sorted(x[13:] for x in sys.modules if x.startswith("durable_mqtt."))
    try:
        while True:
            next(g)
    except (OSError, StopIteration):
        pass
    return m
print("STORING", c.persist)
m = dialling()
print("PERSIST", c.persist)
print("DIALLING WITH", m)
""" % free_port())
    assert "STORING False" in r.stdout and "PERSIST True" in r.stdout, r.stdout
    assert "'dial'" in r.stdout and "'dirstate'" not in r.stdout, r.stdout


def test_v4_an_offline_disconnect_of_a_restored_session_keeps_it(broker, tmp_path):
    """3.1.1, a client built with the default clean_session and a session
    file, made persistent by connect_fresh() at its first boot; later boots
    restore the session (clean_session False). A wake that cannot reach the
    broker calls disconnect() before its deep sleep. No CONNECT went on that
    boot, but the clean flag leave.py goes by was still the constructor's
    True: the session was written as ended (flag 0x08, its subscription
    dropped), the next boot connected with Clean Session 1, and the broker
    discarded the session with the command queued while the board slept; a
    reading published before that connect was not stored (a power cut lost
    it). A restored session's clean flag is its last CONNECT's: False."""
    sess = tmp_path / "s"
    dflt = r"""
ev = []
def d(port=PORT):
    c = MQTTClient("dflt4", "127.0.0.1", port, version=4, keepalive=10, session_file=PATH,
                   event_callback=lambda e, i: ev.append(e))
    c.set_callback(cb)
    return c
"""
    mp(broker.port, 4, sess, dflt + r"""
c = d()
c.connect_fresh()                       # first boot: a persistent session from now on
c.subscribe("dflt4/cmd", 1)
c.disconnect()
""")
    r = mp(broker.port, 4, sess, dflt + r"""
c = d()                                 # a wake that cannot reach the broker
c.port = %d
try:
    c.connect()
except OSError as x:
    print("OFFLINE", x.args[0])
c.disconnect()                          # the shutdown path before sleeping
c = d()                                 # the next wake
print("BOOT", c.clean_session, c.engine.has_state, c.engine.subs, c.persist)
c.publish("dflt4/x", b"reading", qos=1)
c.close()                               # a power cut before its connect
""" % free_port())
    assert "OFFLINE -5" in r.stdout, r.stdout
    assert "BOOT False True [(b'dflt4/cmd', 1, 0)] True" in r.stdout, r.stdout
    subprocess.run(["mosquitto_pub", "-p", str(broker.port), "-q", "1", "-t", "dflt4/cmd",
                    "-m", "while-asleep"], check=True, timeout=10)     # queued in the board's session
    r = mp(broker.port, 4, sess, dflt + r"""
c = d()
print("PENDING", c.pending())
sp = c.connect()
wait_until(c, lambda: got and not c.pending())
print("CONNECTED", sp, ev, "GOT", got)
c.disconnect()
""")
    assert "PENDING 1" in r.stdout, r.stdout
    assert "CONNECTED True ['resumed'] GOT [(b'dflt4/cmd', b'while-asleep', 1)]" in r.stdout, r.stdout
