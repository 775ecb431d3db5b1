"""Batched mode (persist_batch_ms): every wait of the client ends by the
time a batch of records is due, so that a power cut loses no more than
what was accepted in the last persist_batch_ms (docs/sessions.md), and a
failed write of a due batch is reported as a store error, never as a link
failure. Found by reviews of the change that cut wait_msg() and poll()."""
import re
import socket
import threading

from conftest import run_mp
from fakebroker import stalling_broker

# The flash ring's device, noting when each program happens.
TIMED_FLASH = r"""
import time
from norflash import NorFlash

class Dev(NorFlash):
    def writeblocks(self, n, buf, off=None):
        self.log.append(time.ticks_ms())
        NorFlash.writeblocks(self, n, buf, off)
"""



STOREFULL = r"""
from durable_mqtt import MQTTClient
from durable_mqtt.errors import StoreFull
c = MQTTClient("due-full", "127.0.0.1", %d, keepalive=60, timeout_ms=1000,
               session_file=%r, persist_batch_ms=100, clean_session=False)
c.connect()
c.publish("t", b"hello", qos=1)               # sent; its record batched
from durable_mqtt import filestore
def full(self, *a):                           # every slot write: the filesystem is full
    filestore.raise_full(OSError(28))
filestore.SlotJournal._write = full
try:
    c.%s
    print("NO ERROR")
except OSError as x:
    print("RAISED", repr(x))
print("CONNECTED", c.is_connected())
"""


def test_store_full_during_wait_msg_keeps_the_link(tmp_path):
    """A batch due while wait_msg() waits is written there; a StoreFull
    (an OSError) from that write was taken for a link failure and closed a
    healthy connection (a review found it). It is raised at the end of the
    call with the link up, as check_msg() raises it."""
    port, t = stalling_broker(4, 4, lambda conn: None)
    r = run_mp(STOREFULL % (port, str(tmp_path / "s"), "wait_msg(1000)"), timeout=30)
    print(r.stdout)
    assert "CONNECTED True" in r.stdout, r.stdout


STOREFULL_AIO = r"""
import asyncio
from durable_mqtt.aio import AsyncClient
from durable_mqtt.errors import StoreFull
async def main():
    c = AsyncClient("due-full-aio", "127.0.0.1", %d, keepalive=60, timeout_ms=2000,
                    session_file=%r, persist_batch_ms=100, clean_session=False)
    await c.connect(timeout_ms=3000)
    from durable_mqtt import filestore
    def full(self, *a):                       # every slot write: the filesystem is full
        filestore.raise_full(OSError(28))
    filestore.SlotJournal._write = full
    c.publish_nowait("t", b"hello", qos=1)
    await asyncio.sleep_ms(2500)
    print("TASK DONE", c._task.done(), "CONNECTED", c.is_connected())
    if c._task.done():
        try:
            await c._task
        except Exception as x:
            print("TASK DIED OF", repr(x))
asyncio.run(main())
"""


def test_store_full_when_the_batch_is_due_leaves_the_async_task_running(tmp_path):
    """The same in AsyncClient, where it ended the background task, the
    socket open and unread."""
    port, t = stalling_broker(4, 4, lambda conn: None)
    r = run_mp(STOREFULL_AIO % (port, str(tmp_path / "a")), timeout=30)
    print(r.stdout, r.stderr)
    assert "TASK DONE False" in r.stdout, r.stdout


CONNECTING = TIMED_FLASH + r"""
from durable_mqtt.robust import RobustClient

dev = Dev(4096, 16, prog_size=32)
dev.log = []
c = RobustClient("batch-connect", "127.0.0.1", %d, keepalive=60, timeout_ms=3000,
                 session_file=dev, persist_batch_ms=100, clean_session=False)
n0 = len(dev.log)
t0 = time.ticks_ms()
c.publish("t", b"hello", qos=1)        # offline: queued, batched
print("poll", c.poll(0))               # a connect attempt: the broker never answers
print("POLL RETURNED AFTER", time.ticks_diff(time.ticks_ms(), t0))
print("ON FLASH AFTER", [time.ticks_diff(x, t0) for x in dev.log[n0:]][:1])
"""


def test_batch_reaches_flash_within_persist_batch_ms_during_a_connect_attempt():
    """A connect attempt (RobustClient.poll() once the backoff is over)
    waited for the CONNACK up to timeout_ms with the batch unwritten: the
    records accepted while offline reached flash only after it (a review
    found it). Its waits are cut to the batch's due time too."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    conns = []
    threading.Thread(target=lambda: conns.append(srv.accept()), daemon=True).start()
    r = run_mp(CONNECTING % srv.getsockname()[1], timeout=30)
    print(r.stdout)
    m = re.search(r"ON FLASH AFTER \[(\d+)\]", r.stdout)
    assert m and int(m.group(1)) < 400, r.stdout


AIO_PUBLISH = TIMED_FLASH + r"""
import asyncio
from durable_mqtt.aio import AsyncClient

async def main():
    dev = Dev(4096, 16, prog_size=32)
    dev.log = []
    c = AsyncClient("aio-batch", "127.0.0.1", %d, keepalive=60, timeout_ms=2000,
                    session_file=dev, persist_batch_ms=100, clean_session=False)
    await c.connect(timeout_ms=3000)
    await asyncio.sleep_ms(50)                 # the task now waits on the quiet socket
    n0 = len(dev.log)
    t0 = time.ticks_ms()
    c.publish_nowait("t", b"hello", qos=1)
    await asyncio.sleep_ms(1500)
    print("ON FLASH AFTER", [time.ticks_diff(x, t0) for x in dev.log[n0:]][:1])
asyncio.run(main())
"""


def test_async_batch_reaches_flash_within_persist_batch_ms():
    """A publish made while AsyncClient's task waits (its wait computed
    with no batch open) did not shorten that wait: on a quiet link the batch
    reached flash after up to 1 s for persist_batch_ms=100 (a review found
    it). In batched mode every wait is at most persist_batch_ms."""
    port, t = stalling_broker(4, 4, lambda conn: None)
    r = run_mp(AIO_PUBLISH % port, timeout=30)
    print(r.stdout)
    m = re.search(r"ON FLASH AFTER \[(\d+)\]", r.stdout)
    assert m and int(m.group(1)) < 400, r.stdout


BATCH_DUE = TIMED_FLASH + r"""
from durable_mqtt import MQTTClient
from durable_mqtt.robust import RobustClient

def run(cls, port, wait, **kw):
    dev = Dev(4096, 16, prog_size=32)
    dev.log = []
    c = cls("batch-" + cls.__name__, "127.0.0.1", port, keepalive=60, timeout_ms=500,
            session_file=dev, persist_batch_ms=100, clean_session=False, **kw)
    if cls is MQTTClient:
        c.connect()
    else:
        c.poll(0)                                # no broker there: offline, next try in 5 s
    n0 = len(dev.log)
    t0 = time.ticks_ms()
    c.publish("t", b"hello", qos=1)
    wait(c)
    print(cls.__name__, "ON FLASH AFTER", [time.ticks_diff(x, t0) for x in dev.log[n0:]][:1])

run(MQTTClient, %d, lambda c: c.wait_msg(3000))       # a quiet link
run(RobustClient, %d, lambda c: c.poll(1000), backoff_ms=(5000, 30000))   # offline
"""


def test_batched_records_reach_flash_within_persist_batch_ms_while_the_client_waits(tmp_path):
    """persist_batch_ms=N promises that a power cut loses only what was
    accepted in the last N ms (docs/sessions.md). A blocking wait held the
    batch for its whole length: wait_msg(3000) on a quiet link wrote it
    after 3,001 ms, RobustClient.poll(1000) while offline after 1,000 ms
    (a review found it). Every wait now ends when the batch is due."""
    port, t = stalling_broker(4, 6, lambda conn: None)       # CONNACK, then silence
    r = run_mp(BATCH_DUE % (port, 1), timeout=30)            # (port 1: nothing listens)
    for cls in ("MQTTClient", "RobustClient"):
        m = re.search(cls + r" ON FLASH AFTER \[(\d+)\]", r.stdout)
        assert m and 100 <= int(m.group(1)) < 400, r.stdout
