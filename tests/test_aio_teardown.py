"""AsyncClient.disconnect() cut short: an argument the session refuses, or
the caller cancelled while the DISCONNECT waits for room in a congested
socket. The background task is stopped first; the link must not outlive it
open, unread, and still "connected" (a review's findings)."""
import socket
import threading
import time

from conftest import fields, run_mp
from fakebroker import FakeBroker, connack
from test_frontends import AIO


def test_aio_disconnect_with_a_refused_session_expiry_leaves_no_link_behind(broker):
    # MQTT 3.1.1: disconnect(session_expiry=...) raises ValueError, after the
    # background task was cancelled. The link stayed open with nobody reading
    # it and is_connected() True, so the next connect() started a task that
    # took the link for up and never set `up`: connect() hung (Timeout here).
    r = run_mp(AIO % broker.port + r"""
async def main():
    c = await connected("td-expiry", 2000)
    try:
        await c.disconnect(session_expiry=0)
    except ValueError:
        print("disconnect raised ValueError")
    print("AFTER", c.is_connected(), c.client.socket() is None)
    try:
        await c.connect(timeout_ms=3000)
        print("RECONNECT ok", c.is_connected())
    except Timeout:
        print("RECONNECT hung")
    await c.disconnect()
asyncio.run(main())
""", timeout=30)
    assert "disconnect raised ValueError" in r.stdout, r.stdout
    assert fields(r.stdout, "AFTER")[1:] == ["False", "True"], r.stdout
    assert "RECONNECT ok True" in r.stdout, r.stdout


def stall_then_serve(stall_s):
    """A broker for two connections: the first is answered CONNACK, then
    left unread for stall_s (a small receive buffer: the client's socket
    fills), then read to its end; the second is answered and read. Records
    per connection whether a DISCONNECT came. Returns (port, seen, thread)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.bind(("127.0.0.1", 0))
    s.listen(2)
    s.settimeout(15)
    seen = []

    def serve():
        try:
            for i in range(2):
                conn, _ = s.accept()
                conn.settimeout(15)
                rec = {"disconnect": False}
                seen.append(rec)
                try:
                    p = FakeBroker._read(FakeBroker, conn)
                    if p is None or p[0] != 0x10:
                        return
                    conn.sendall(connack(4))
                    if i == 0:
                        time.sleep(stall_s)
                    while True:
                        p = FakeBroker._read(FakeBroker, conn)
                        if p is None:
                            break
                        if p[0] == 0xE0:
                            rec["disconnect"] = True
                            break
                except OSError:
                    pass
                finally:
                    conn.close()
        except OSError:
            pass
        finally:
            s.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return s.getsockname()[1], seen, t


def test_aio_a_cancelled_disconnect_leaves_no_link_behind():
    # disconnect() on a congested link waits (awaited, up to timeout_ms) for
    # the queued output to go before its DISCONNECT. Cancelled there (a
    # wait_for_ms() around it), it had cancelled the background task but
    # never reached the DISCONNECT: the link stayed open with nobody reading
    # it and is_connected() True, and the next connect() hung for good.
    port, seen, t = stall_then_serve(4.0)
    r = run_mp(AIO % port + r"""
async def main():
    c = AsyncClient("td-cancel", "127.0.0.1", PORT, keepalive=0, timeout_ms=5000, buf_size=1100,
                    max_inflight=64, outbox_size=8, outbox_bytes=90000, backoff_ms=(50, 100))
    await c.connect(timeout_ms=2000)
    msg = b"x" * 1000
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < 1500:     # (the socket's buffers grow as they fill)
        for i in range(20):
            c.publish_nowait("td/full", msg, qos=0)
        await asyncio.sleep_ms(1)
    for i in range(30):
        c.publish_nowait("td/full", msg, qos=1)     # (these wait in the session for room)
    print("FULL", c.client.conn.full, c.pending())
    t0 = time.ticks_ms()
    try:
        await asyncio.wait_for_ms(c.disconnect(), 300)
        print("disconnect returned")
    except asyncio.TimeoutError:
        print("disconnect cut", time.ticks_diff(time.ticks_ms(), t0))
    print("AFTER", c.is_connected(), c.client.socket() is None)
    try:
        await c.connect(timeout_ms=6000)
        print("RECONNECT ok", c.is_connected())
    except Timeout:
        print("RECONNECT hung")
    await c.disconnect()
asyncio.run(main())
""", timeout=60)
    t.join(20)
    assert "FULL True" in r.stdout, r.stdout
    assert "disconnect cut" in r.stdout, r.stdout
    assert fields(r.stdout, "AFTER")[1:] == ["False", "True"], r.stdout
    assert "RECONNECT ok True" in r.stdout, r.stdout
    assert len(seen) == 2 and seen[1]["disconnect"], seen


def test_aio_a_subscribe_cut_by_disconnect_leaves_the_next_connection_alone():
    # subscribe() awaits its SUBACK; disconnect(), then connect() at once.
    # The request's steps resumed only after the next connection had begun
    # (they look every 20 ms), found the link not connected, and their
    # clean-up (k.failed()) closed the socket the connect was dialling: that
    # connect() failed (here: timed out after 3 s; 2 runs in 3), the broker
    # saw a connection close before its CONNECT, and the disconnect() after
    # it took over 5 s. Where the connect won the race, subscribe() took the
    # connection for a lost link and sent its SUBSCRIBE again on the new one,
    # not the NotConnected a disconnect() gives what waits (docs/api.md).
    fb = FakeBroker([("send", connack(4)), ("recv",)], [("send", connack(4)), ("sleep", 3)])
    r = run_mp(AIO % fb.port + r"""
async def main():
    c = await connected("td-sub", 3000)
    async def sub():
        try:
            print("SUB returned", await c.subscribe("td/s", 1))
        except NotConnected:
            print("SUB NotConnected")
    st = asyncio.create_task(sub())
    await asyncio.sleep_ms(100)           # the SUBSCRIBE is out; no SUBACK comes
    await c.disconnect()
    t0 = time.ticks_ms()
    try:
        await c.connect(timeout_ms=3000)
        print("RECONNECT ok", time.ticks_diff(time.ticks_ms(), t0))
    except Timeout:
        print("RECONNECT failed")
    await st
    print("UP", c.is_connected(), c.stats()["link_downs"], c.stats()["connect_failures"])
    await c.disconnect()
asyncio.run(main())
""", timeout=30)
    fb.join()
    assert "SUB NotConnected" in r.stdout, r.stdout
    assert "RECONNECT ok" in r.stdout, r.stdout
    assert fields(r.stdout, "UP")[1:] == ["True", "0", "0"], r.stdout
    assert [p[0] for p in fb.conns[1]] == [0x10, 0xE0] and not fb.errors, (fb.conns, fb.errors)


def test_aio_a_subscribe_timeout_is_its_own_not_the_clients():
    # subscribe(timeout_ms=...) set the client's timeout_ms to its own
    # while it waited: every other task's work in that time (a reconnect,
    # a write waiting for room, disconnect()) ran with the subscribe's
    # timeout. The broker here never answers the SUBSCRIBE.
    fb = FakeBroker([("send", connack(4)), ("recv",), ("sleep", 1.5)])
    r = run_mp(AIO % fb.port + r"""
async def main():
    c = await connected("td-tmo", 2000)
    seen = []
    async def watch():
        for i in range(10):
            seen.append(c.client.timeout_ms)
            await asyncio.sleep_ms(30)
    w = asyncio.create_task(watch())
    try:
        await c.subscribe("a/b", 1, timeout_ms=250)
    except Timeout:
        print("subscribe Timeout")
    await w
    print("TIMEOUTS", sorted(set(seen)))
    c.client.close()
asyncio.run(main())
""", timeout=30)
    fb.join()
    assert "subscribe Timeout" in r.stdout, r.stdout
    assert "TIMEOUTS [2000]" in r.stdout, r.stdout


def test_aio_disconnect_and_close_end_the_task_when_its_wait_times_out_at_that_moment(broker):
    """connect(), sleep one second, disconnect() (or close()): the
    background task's wait_for_ms() times out each second, and a cancel
    that lands while wait_for_ms() cleans up after its timeout goes to its
    runner task, which absorbs it (MicroPython's asyncio). The task went
    on, answering the keepalive, and disconnect()/close() awaited it for
    ever (a review found 3 hangs in 3 runs against mosquitto). Now the task
    is cancelled until it has ended: both return at once, every time."""
    r = run_mp(AIO % broker.port + r"""
async def main():
    for what in ("disconnect", "close") * 3:
        c = await connected("td-sleep1")
        await asyncio.sleep(1)
        t = c._task
        t0 = time.ticks_ms()
        try:
            await asyncio.wait_for_ms(getattr(c, what)(), 3000)
            print("RETURNED", what, time.ticks_diff(time.ticks_ms(), t0) < 1000, t.done(), c.is_connected())
        except asyncio.TimeoutError:
            print("HUNG", what, c.is_connected(), t.done())
            c.client.close()
asyncio.run(main())
""", timeout=60)
    assert "HUNG" not in r.stdout, r.stdout
    assert r.stdout.count("RETURNED") == 6 and all(
        fields(line, "RETURNED")[2:] == ["True", "True", "False"] for line in r.stdout.splitlines()
        if line.startswith("RETURNED")), r.stdout
