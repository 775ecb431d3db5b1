"""Messages accepted while no persistent session is connected reach flash.

A client configured to persist (clean_session=False, a session file) keeps
every QoS 1/2 message publish() accepts on flash until it is acknowledged,
connected or not. These are the paths around a clean session or a failed
connect where that did not hold, found by a review with reproductions: a
reboot (a new MQTTClient on the same session file) lost what RAM alone
held. Each test fails at the commit before its fix. Real mosquitto, the
real unix port; "the network is down" is a port where nothing listens.
"""
import pytest

from conftest import free_port
from test_session import mp


def test_v5_a_failed_clean_connect_leaves_the_session_to_a_later_disconnect(broker, tmp_path):
    """A connect(clean_session=True) that fails before its CONNECT goes (no
    TCP) changed nothing at the broker, but the client took the expiry 0 it
    was to send for the session's: a later plain disconnect() ended the
    session, erasing what flash held and storing nothing more. Now only a
    CONNECT that went sets what a DISCONNECT goes by: the session stays,
    on flash and at the broker, and the next connect resumes it."""
    sess = tmp_path / "s"
    r = mp(broker.port, 5, sess, r"""
c = dev("failclean")
c.connect()
c.subscribe("failclean/cmd", 1)
c.disconnect()
c.publish("failclean/x", b"before", qos=1)    # while down: on flash
c.port = %d                                  # the network is down
try:
    c.connect(clean_session=True)
except OSError as x:
    print("CLEAN CONNECT FAILED", x.args[0])
c.port = PORT
c.disconnect()                               # no session_expiry given
c.publish("failclean/x", b"after", qos=1)
print("BOOT1", c.pending(), c.persist, c.engine.subs)
""" % free_port())
    assert "CLEAN CONNECT FAILED -5" in r.stdout, r.stdout
    assert "BOOT1 2 True [(b'failclean/cmd', 1, 0)]" in r.stdout, r.stdout
    r = mp(broker.port, 5, sess, r"""
ev = []
c = dev("failclean", event_callback=lambda e, i: ev.append(e))
print("BOOT2", c.pending(), c.engine.subs)
drained(c, ev)
""")
    assert "BOOT2 2 [(b'failclean/cmd', 1, 0)]" in r.stdout, r.stdout
    assert "EVENTS ['resumed']" in r.stdout, r.stdout


@pytest.mark.parametrize("ver", [4, 5])
def test_a_failed_persistent_connect_after_a_clean_session_stores_what_is_published(broker, tmp_path, ver):
    """After one clean session (connect(clean_session=True), then its
    disconnect), the constructor's persistent connect() fails (Wi-Fi down).
    Storing started only at a persistent CONNACK, so every QoS 1 message
    accepted meanwhile was in RAM only. Now the persistent attempt stores
    what the client holds before its CONNECT, and what follows is stored."""
    sess = tmp_path / "s"
    r = mp(broker.port, ver, sess, r"""
c = dev("afterclean")
c.connect(clean_session=True)                # a one-off clean start
c.disconnect()
c.port = %d                                  # Wi-Fi down
try:
    c.connect()                              # the constructor's clean_session=False
except OSError as x:
    print("CONNECT FAILED", x.args[0])
for i in range(3):
    c.publish("afterclean/x", b"m%%d" %% i, qos=1)
print("BOOT1", c.pending(), c.persist)
""" % free_port())
    assert "CONNECT FAILED -5" in r.stdout and "BOOT1 3 True" in r.stdout, r.stdout
    r = mp(broker.port, ver, sess, r"""
c = dev("afterclean")
print("BOOT2", c.pending())
c.connect()
wait_until(c, lambda: not c.pending())
print("SENT")
c.disconnect()
""")
    assert "BOOT2 3" in r.stdout and "SENT" in r.stdout, r.stdout


def test_robust_client_stores_what_an_outage_after_a_clean_session_accepts(broker, tmp_path):
    """RobustClient connected clean once (provisioning); then the link drops
    and its persistent reconnects fail. The messages accepted during the
    outage were in RAM only: a reboot during the outage lost them all."""
    sess = tmp_path / "s"
    r = mp(broker.port, 4, sess, r"""
from durable_mqtt.robust import RobustClient
c = RobustClient("robustclean", "127.0.0.1", PORT, session_file=PATH)
c.connect(clean_session=True)
c.servers = [("127.0.0.1", %d)]              # the broker unreachable from now on
c.drop_link()                                # Wi-Fi drops
for i in range(3):
    c.publish("robustclean/x", b"m%%d" %% i, qos=1)
    c.poll(300)                              # a persistent reconnect, which fails
print("BOOT1", c.pending(), c.persist, c.last_error.args[0])
""" % free_port())
    assert "BOOT1 3 True -5" in r.stdout, r.stdout
    r = mp(broker.port, 4, sess, r"""
from durable_mqtt.robust import RobustClient
c = RobustClient("robustclean", "127.0.0.1", PORT, session_file=PATH)
print("BOOT2", c.pending())
""")
    assert "BOOT2 3" in r.stdout, r.stdout


def test_v4_connect_fresh_stores_what_its_clean_leg_accepted(broker, tmp_path):
    """MQTT 3.1.1 connect_fresh(): a clean leg, DISCONNECT, a persistent
    leg. A QoS 1 message the clean leg's "new" event published (a birth
    message) was accepted while nothing was stored; when the persistent leg
    then failed, it stayed in RAM only, although messages published after
    it reached flash."""
    sess = tmp_path / "s"
    r = mp(broker.port, 4, sess, r"""
c = None
def on_event(name, info):
    if name == "new" and c.port == PORT:
        print("BIRTH", c.publish("fresh/x", b"hello", qos=1))
        c.port = %d                          # the network drops between the legs
c = dev("fresh", event_callback=on_event)
try:
    c.connect_fresh()
except OSError as x:
    print("CONNECT_FRESH FAILED", x.args[0])
c.publish("fresh/x", b"later", qos=1)
print("BOOT1", c.pending(), c.persist)
""" % free_port())
    assert "BIRTH 1" in r.stdout and "CONNECT_FRESH FAILED -5" in r.stdout, r.stdout
    assert "BOOT1 2 True" in r.stdout, r.stdout
    r = mp(broker.port, 4, sess, r"""
c = dev("fresh")
print("BOOT2", c.pending())
""")
    assert "BOOT2 2" in r.stdout, r.stdout
