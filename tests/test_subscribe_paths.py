"""subscribe() / unsubscribe() paths found wrong in a review (stop 42), each
against a stand-in broker (tests/fakebroker.py) and, where flash matters,
a LittleFS image on a simulated NOR flash (tests/mp/norflash.py):

* the event callback's exception on the store_full of a subscribe's
  checkpoint came out of the next, unrelated connect() (RobustClient: out
  of poll() at the next reconnect, which ended loop_forever());
* filters.py stayed loaded after a refused request, or one RobustClient or
  AsyncClient keeps for later: in the heap beside the next dial;
* a late SUBACK (its wait cancelled) was never written to a session
  directory;
* an MQTT 5 UNSUBACK refusal forgot the filter the broker still had."""
import signal
import time

import pytest

from conftest import reports, run_mp, spawn_mp
from fakebroker import FakeBroker, connack, pkt

# A LittleFS image on a NOR flash, mounted at /fl; remount(True) makes it
# read-only (a checkpoint is then refused: store_full).
LFS = r"""
import vfs
from norflash import NorFlash
P = 32
dev = NorFlash(4096, 32, prog_size=P)
vfs.VfsLfs2.mkfs(dev, progsize=P)
vfs.mount(vfs.VfsLfs2(dev, progsize=P), "/fl")
def remount(ro):
    vfs.umount("/fl")
    vfs.mount(vfs.VfsLfs2(dev, progsize=P), "/fl", readonly=ro)
events = []
def on_event(name, info):
    events.append(name)
    if name == "store_full":
        raise ValueError("event callback on store_full")
def call(f, *a):
    try:
        return "returned %r" % (f(*a),)
    except Exception as x:
        return "raised %r" % (x,)
"""


def answer(kind, v, code):
    # A SUBACK (0x90) / UNSUBACK (0xB0) to the last request received.
    def reply(got):
        body = got[-1][1][:2] + (b"\x00" if v == 5 else b"")
        return pkt(kind, body + (bytes((code,)) if kind == 0x90 or v == 5 else b""))
    return ("reply", reply)


def test_the_event_callbacks_exception_on_a_requests_store_full_comes_out_of_that_request():
    # docs/api.md: an exception the event callback raises comes out once the
    # work its event is part of is done. subscribe() and unsubscribe() kept
    # it instead, and the next connect() raised it although it connected.
    # disconnect()'s checkpoint alike.
    fb = FakeBroker([("send", connack(4)), ("recv",), answer(0x90, 4, 1), ("recv",), answer(0xB0, 4, 0),
                     ("recv",)],
                    [("send", connack(4, sp=1)), ("sleep", 0.3)], io_timeout=10)
    r = run_mp(LFS + r"""
from durable_mqtt import MQTTClient
c = MQTTClient("dev", "127.0.0.1", %d, clean_session=False, session_file="/fl/s", event_callback=on_event,
               timeout_ms=3000)
c.connect()
remount(True)
print("SUBSCRIBE", call(c.subscribe, "t", 1), [bytes(s[0]) for s in c.engine.subs])
print("UNSUBSCRIBE", call(c.unsubscribe, "t"), [bytes(s[0]) for s in c.engine.subs])
print("DISCONNECT", call(c.disconnect), c.is_connected())
remount(False)
print("CONNECT", call(c.connect), c.is_connected())
print("EVENTS", events)
c.close()
""" % fb.port)
    fb.join()
    out = r.stdout
    assert "SUBSCRIBE raised ValueError('event callback on store_full',) [b't']" in out, out
    assert "UNSUBSCRIBE raised ValueError('event callback on store_full',) []" in out, out
    assert "DISCONNECT raised ValueError('event callback on store_full',) False" in out, out
    assert "CONNECT returned True True" in out, out
    assert [f for f, _ in fb.conns[0][1:]] == [0x82, 0xA2, 0xE0], fb.conns[0]   # each request made, DISCONNECT sent


def test_asyncclient_reports_the_event_callbacks_exception_on_a_requests_store_full_at_that_request():
    # AsyncClient reports such an exception as the event callback_error: at
    # the request it came from, not at the next reconnect as that one's.
    fb = FakeBroker([("send", connack(4)), ("recv",), answer(0x90, 4, 1), ("sleep", 0.5), ("recv",)],
                    io_timeout=10)
    r = run_mp(LFS + r"""
import asyncio
from durable_mqtt.aio import AsyncClient
async def main():
    a = AsyncClient("dev", "127.0.0.1", %d, clean_session=False, session_file="/fl/s", event_callback=on_event,
                    timeout_ms=3000)
    await a.connect()
    remount(True)
    print("SUBSCRIBE", await a.subscribe("t", 1), events, a.callback_errors)
    await a.disconnect()
    print("DISCONNECT", events, a.callback_errors, a.client.cb_error)
asyncio.run(main())
""" % fb.port)
    fb.join()
    out = r.stdout
    assert "SUBSCRIBE 1 ['new', 'store_full', 'callback_error'] 1" in out, out
    assert ("DISCONNECT ['new', 'store_full', 'callback_error', 'store_full', 'callback_error'] 2 None"
            in out), out


def test_no_once_per_call_module_stays_loaded_after_a_request_refused_or_kept_for_later():
    # filters.py checks a request and is unloaded after it; a request
    # refused by its arguments, or one RobustClient keeps while down, left
    # it loaded, in the heap beside the next connect's dial.py.
    fb = FakeBroker([("send", connack(4)), ("recv",), answer(0x90, 4, 0x80), ("sleep", 0.5)], io_timeout=10)
    r = run_mp(r"""
import sys
from durable_mqtt import MQTTClient
from durable_mqtt.robust import RobustClient
def loaded():
    return sorted(m[13:] for m in sys.modules if m.startswith("durable_mqtt.") and m[13:] in (
        "filters", "request", "settle", "dirstate", "connect", "dial", "connack", "leave", "reasons"))
def attempt(tag, f, *a):
    try:
        f(*a)
    except Exception as x:
        tag += " " + type(x).__name__
    print(tag, loaded())
c = MQTTClient("dev", "127.0.0.1", %d, timeout_ms=2000)
attempt("BAD-QOS-DOWN", c.subscribe, "t", 3)
c.connect()
attempt("REFUSED", c.subscribe, "t", 1)
attempt("BAD-QOS-UP", c.subscribe, "t", 3)
attempt("BAD-FILTER-UP", c.unsubscribe, "a/#/b")
c.close()
rc = RobustClient("dev2", "127.0.0.1", 1)
attempt("ROBUST-SUB-DOWN", rc.subscribe, "a/b", 1)
attempt("ROBUST-UNSUB-DOWN", rc.unsubscribe, "a/b")
attempt("ROBUST-BAD-DOWN", rc.subscribe, "a/#/b", 1)
print("KEPT", rc.pending_subs)
import asyncio
from durable_mqtt.aio import AsyncClient
async def main():
    a = AsyncClient("dev3", "127.0.0.1", 1, timeout_ms=500)
    t = asyncio.create_task(a.subscribe("a/b", 1))   # waits for a connection that never comes
    await asyncio.sleep_ms(50)
    print("ASYNC-WAITING", loaded())
    t.cancel()
asyncio.run(main())
""" % fb.port)
    fb.join()
    out = r.stdout
    for tag in ("BAD-QOS-DOWN ValueError", "REFUSED ConnectRefused", "BAD-QOS-UP ValueError",
                "BAD-FILTER-UP ValueError", "ROBUST-SUB-DOWN", "ROBUST-UNSUB-DOWN", "ROBUST-BAD-DOWN ValueError",
                "ASYNC-WAITING"):
        assert tag + " []" in out, (tag, out)
    assert "KEPT [('a/b', -1, None)]" in out, out      # (the unsubscribe replaced the subscribe kept)


def _pid(body):
    tl = body[0] << 8 | body[1]
    return body[2 + tl:4 + tl]


@pytest.mark.parametrize("store,then", [("directory", "publish"), ("directory", "idle"), ("log", "publish")])
def test_a_late_suback_reaches_flash(tmp_path, store, then):
    # An AsyncClient subscribe() cancelled after its SUBSCRIBE went: the
    # broker's late SUBACK makes the subscription all the same, and the
    # session records it: a session directory (filestore.py) right after
    # the read that brought it, a log or ring with its next write. The
    # session directory never wrote it: after a QoS 1 message written and
    # acknowledged, or nothing, a power cut, the subscription was not on
    # flash, and a broker that lost the session was never asked for it again.
    send = [("recv",), ("reply", lambda got: pkt(0x40, _pid(got[-1][1])))] if then == "publish" else []
    fb = FakeBroker([("send", connack(4)), ("recv",), ("sleep", 0.6), answer(0x90, 4, 1)] + send + [("sleep", 5)],
                    io_timeout=10)
    session = repr(str(tmp_path / "s")) if store == "directory" else "FileLog(%r)" % str(tmp_path / "log")
    script = tmp_path / "dev.py"
    script.write_text(r"""
import asyncio
from durable_mqtt.aio import AsyncClient
from durable_mqtt.filelog import FileLog
async def main():
    a = AsyncClient("dev", "127.0.0.1", %d, clean_session=False, session_file=%s, timeout_ms=3000)
    await a.connect()
    try:
        await asyncio.wait_for_ms(a.subscribe("late/t", 1), 200)
    except asyncio.TimeoutError:
        pass
    await asyncio.sleep_ms(800)          # the late SUBACK is read meanwhile
    print("RAM", [bytes(s[0]) for s in a.client.engine.subs])
    if %r == "publish":
        await a.publish("p", b"x", qos=1)
        while a.client.pending():
            await asyncio.sleep_ms(10)
    print("READY")
    await asyncio.sleep_ms(5000)
asyncio.run(main())
""" % (fb.port, session, then))
    p = spawn_mp(script)
    try:
        lines = []
        for line in p.stdout:
            lines.append(line)
            if line.startswith("READY"):
                time.sleep(0.2)
                break
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    fb.join()
    assert "RAM [b'late/t']\n" in lines, lines
    r = run_mp(r"""
from durable_mqtt import MQTTClient
from durable_mqtt.filelog import FileLog
c = MQTTClient("dev", "127.0.0.1", 1, clean_session=False, session_file=%s)
print("FLASH", [bytes(s[0]) for s in c.engine.subs])
""" % session)
    assert "FLASH [b'late/t']" in r.stdout, r.stdout


def test_an_unsubscribe_the_broker_refuses_raises_and_keeps_the_filter(tmp_path):
    # MQTT 5 UNSUBACK reason codes of 0x80 and up are refusals (3.11.2.1):
    # 0x87 Not authorized leaves the subscription at the broker. It was
    # returned, not raised, and the filter forgotten, on flash too: a
    # broker that later lost the session was never asked for it again,
    # although the device still received on it until then. Raised now, as
    # a refused subscribe() is, and kept; 0x11 (no subscription existed)
    # is no refusal: forgotten.
    fb = FakeBroker([("send", connack(5)), ("recv",), answer(0x90, 5, 1), ("recv",), answer(0x90, 5, 1),
                     ("recv",), answer(0xB0, 5, 0x87), ("recv",), answer(0xB0, 5, 0x11), ("sleep", 0.5)],
                    io_timeout=10)
    path = str(tmp_path / "s")
    r = run_mp(r"""
from durable_mqtt import MQTTClient
c = MQTTClient("dev", "127.0.0.1", %d, version=5, clean_session=False, session_file=%r, timeout_ms=3000)
c.connect()
c.subscribe("a/b", 1)
c.subscribe("c/d", 1)
try:
    print("REFUSED returned", c.unsubscribe("a/b"))
except Exception as x:
    print("REFUSED raised", type(x).__name__, hex(x.args[0]), x.args[1])
print("NONE returned", hex(c.unsubscribe("c/d")))
print("RAM", [bytes(s[0]) for s in c.engine.subs])
c.close()
c = MQTTClient("dev", "127.0.0.1", 1, version=5, clean_session=False, session_file=%r)
print("FLASH", [bytes(s[0]) for s in c.engine.subs])
""" % (fb.port, path, path))
    fb.join()
    out = r.stdout
    assert "REFUSED raised ConnectRefused 0x87 broker refused the unsubscription from b'a/b'" in out, out
    assert "NONE returned 0x11" in out and "RAM [b'a/b']" in out and "FLASH [b'a/b']" in out, out


def test_a_callbacks_subscribe_whose_record_of_its_qos2_message_is_refused_closes_the_link(tmp_path):
    # The QoS 2 message whose callback subscribes has its id written before
    # the SUBSCRIBE goes. Refused (a read-only filesystem here), the
    # subscribe() raised StoreFull into the callback with the link up, and
    # the PUBREC went when the callback returned, for an id on no flash: a
    # reboot then delivered it again. Now the link closes, as when the
    # record after a callback is refused: no PUBREC, no SUBSCRIBE.
    fb = FakeBroker([("send", connack(4)), ("sleep", 0.3),
                     ("send", b"\x34\x07\x00\x01a\x00\x07m1"), ("sleep", 1.0)], io_timeout=10)
    r = run_mp(LFS + r"""
from durable_mqtt import MQTTClient
c = MQTTClient("dev", "127.0.0.1", %d, clean_session=False, session_file="/fl/s", timeout_ms=2000)
got = []
def cb(t, m, r, q):
    got.append((bytes(t), q))
    got.append(call(c.subscribe, "x", 1))
c.set_callback(cb)
c.connect()
remount(True)
print("WAIT", call(c.wait_msg, 2000), c.is_connected())
print("GOT", got)
""" % fb.port)
    fb.join()
    out = r.stdout
    assert "GOT [(b'a', 2), \"raised StoreFull(-7, 'filesystem read-only')\"]" in out, out
    assert "WAIT raised StoreFull(-7, 'filesystem read-only') False" in out, out
    assert fb.conns[0][1:] == [], fb.conns[0]            # no SUBSCRIBE, no PUBREC


@pytest.mark.parametrize("front", ["MQTTClient", "RobustClient"])
def test_an_exception_kept_before_a_request_neither_replaces_its_failure_nor_comes_out_of_it(front):
    # subscribe() raises the event callback's exception from its own
    # store_full once it is done (above); one kept before it (RobustClient:
    # a poll()'s store_error, for its next connect to raise) stays kept, and
    # a request that fails raises its own failure. It raised the kept one in
    # place of the link's: RobustClient took that for a refusal and neither
    # queued the subscription nor reported the drop (found in review).
    fb = FakeBroker([("send", connack(4)), ("recv",), ("close",)],
                    [("send", connack(4, sp=1)), ("recv",), answer(0x90, 4, 1), ("sleep", 0.5)], io_timeout=10)
    r = run_mp(r"""
from durable_mqtt import MQTTClient
from durable_mqtt.robust import RobustClient
c = %s("dev", "127.0.0.1", %d, clean_session=False, timeout_ms=2000)
c.connect()
c.cb_error = ValueError("kept before")     # (as event() keeps one)
try:
    print("SUBSCRIBE returned", c.subscribe("t", 1))
except Exception as x:
    print("SUBSCRIBE raised", type(x).__name__)
print("KEPT", repr(c.cb_error), getattr(c, "pending_subs", None))
try:
    c.connect()
except Exception as x:
    print("CONNECT raised", repr(x))
print("SUBS", [bytes(s[0]) for s in c.engine.subs])
""" % (front, fb.port))
    fb.join()
    out = r.stdout
    if front == "MQTTClient":
        assert "SUBSCRIBE raised PeerClosed" in out and "KEPT ValueError('kept before',) None" in out, out
        assert "SUBS []" in out, out
    else:
        assert "SUBSCRIBE returned None" in out and "KEPT ValueError('kept before',) [('t', 1, {})]" in out, out
        assert "SUBS [b't']" in out, out                  # made at the reconnect
    assert "CONNECT raised ValueError('kept before',)" in out, out


def test_a_late_subacks_refused_checkpoint_leaves_flash_agreeing_with_what_publish_accepted():
    # The late SUBACK's checkpoint ran first inside the next publish()'s
    # record (a review's finding, before it was moved after the read): the
    # checkpoint wrote the new message's slot, then its header was refused;
    # publish() raised StoreFull and took the message back, but its slot
    # stayed on flash under the id the next accepted message reused, and a
    # reboot sent the refused message in place of the accepted one. Here the
    # header's rename is refused while the late SUBACK is read: the messages
    # published then and after are on flash exactly as in RAM.
    fb = FakeBroker([("send", connack(4)), ("recv",), ("sleep", 0.6), answer(0x90, 4, 1), ("sleep", 2.0)],
                    io_timeout=10)
    r = run_mp(r"""
import vfs
from norflash import NorFlash
from faultfs import FaultFS
P = 32
dev = NorFlash(4096, 32, prog_size=P)
vfs.VfsLfs2.mkfs(dev, progsize=P)
fs = FaultFS(vfs.VfsLfs2(dev, progsize=P))
vfs.mount(fs, "/fl")
import asyncio
from durable_mqtt import MQTTClient
from durable_mqtt.aio import AsyncClient
def outbox(c):
    e = c.engine
    return [(e.pid[e.index(k)], bytes(e.arena[e.off[e.index(k)]:e.off[e.index(k)] + e.len[e.index(k)]])[-3:])
            for k in range(e.count)]
async def main():
    a = AsyncClient("dev", "127.0.0.1", %d, clean_session=False, session_file="/fl/s", timeout_ms=3000)
    await a.connect()
    try:
        await asyncio.wait_for_ms(a.subscribe("late/t", 1), 200)
    except asyncio.TimeoutError:
        pass
    fs.refuse("rename", "h.tmp", 28)          # the header's commit refused
    await asyncio.sleep_ms(800)                # the late SUBACK is read meanwhile
    print("SUBS", [bytes(s[0]) for s in a.client.engine.subs], fs.refused)
    for m in (b"one", b"two"):
        try:
            print("PUBLISH", m, a.publish_nowait("p", m, qos=1))
        except Exception as x:
            print("PUBLISH", m, repr(x))
        fs.refuse(None)
    ram = outbox(a.client)
    c = MQTTClient("dev", "127.0.0.1", 1, clean_session=False, session_file="/fl/s")   # a reboot
    print("RAM", ram)
    print("FLASH", outbox(c))
asyncio.run(main())
""" % fb.port)
    fb.join()
    out = r.stdout
    ram = out.split("RAM ")[1].splitlines()[0]
    assert "SUBS [b'late/t'] 1" in out, out       # the checkpoint after the read, refused
    assert ram == "[(2, b'one'), (3, b'two')]" and "FLASH " + ram in out, out


@pytest.mark.parametrize("v", [4, 5])
def test_aio_a_subscribe_whose_link_closes_over_a_qos2_flood_goes_again_on_the_next(v):
    """AsyncClient.subscribe() while messages() is behind (its queue full):
    the broker's QoS 2 backlog comes before the SUBACK and overflows the
    incoming QoS 2 table, and the client closes the link. MQTT 5 closes it
    as a ProtocolError (Receive Maximum exceeded), and the request went
    again on the next connection, as documented; 3.1.1 closes it with an
    MQTTException of its own, which subscribe() raised, and the next
    connection never saw a SUBSCRIBE: the subscription was missing, with
    no error left to see. Now a failure of the link's met in the wait is a
    lost link, whatever its class (a review's reproduction)."""
    from fakebroker import publish
    flood = b"".join(publish(v, b"in/x", b"m%d" % k, qos=2, pid=k + 1) for k in range(70))
    first = [("send", connack(v)),
             ("send", b"".join(publish(v, b"in/x", b"q%d" % k, qos=1, pid=200 + k) for k in range(4))),
             ("recv",), ("send", flood), ("sleep", 1)]
    second = [("send", connack(v, sp=1)), ("recv",),
              ("reply", lambda got: pkt(0x90, got[-1][1][:2] + (b"\x00" if v == 5 else b"") + b"\x01"))]
    fb = FakeBroker(first, second)
    r = run_mp(r"""
import asyncio
from durable_mqtt.aio import AsyncClient
async def main():
    c = AsyncClient("flood", "127.0.0.1", %d, version=%d, timeout_ms=3000, backoff_ms=(50, 100), queue_size=4)
    await c.connect()
    await asyncio.sleep_ms(300)              # the 4 queued: the background task reads no more
    try:
        print("SUBSCRIBED", await c.subscribe("in/#", 2))
    except Exception as x:
        print("RAISED", repr(x))
    await c.disconnect()
asyncio.run(main())
""" % (fb.port, v), timeout=30)
    fb.join()
    print(r.stdout)
    assert "SUBSCRIBED 1" in r.stdout, r.stdout
    assert [sum(1 for f, _ in conn if f == 0x82) for conn in fb.conns[:2]] == [1, 1], fb.conns
