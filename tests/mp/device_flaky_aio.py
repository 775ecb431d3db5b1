# The asyncio front end on a flaky link: a publisher task sends a numbered
# stream (every 10th message awaited to completion, the rest enqueued), a
# ticker task measures how long the event loop was ever held up.
#   micropython device_flaky_aio.py PORT VER QOS N KEEPALIVE
import asyncio
import sys

from durable_mqtt.aio import AsyncClient
from testlib import ticker

port, ver, qos, n, ka = (int(x) for x in sys.argv[1:6])
loop = [0, 0]               # testlib.ticker: wake-ups, longest gap (ms)


async def main():
    c = AsyncClient("aflaky-%d-%d" % (ver, qos), "127.0.0.1", port, keepalive=ka, version=ver,
                    backoff_ms=(50, 400), timeout_ms=1000, max_inflight=8, outbox_size=64,
                    clean_session=False)
    asyncio.create_task(ticker(loop))
    await c.connect()
    for k in range(n):
        if k % 10 == 9:
            await c.publish("aflaky/%d/%d" % (ver, qos), "%d" % k, qos=qos)
        else:
            while c.pending() >= 40:
                await asyncio.sleep_ms(10)
            c.publish_nowait("aflaky/%d/%d" % (ver, qos), "%d" % k, qos=qos)
        await asyncio.sleep_ms(10)
    ok = await c.flush(120000)
    s = c.stats()
    print("RESULT flushed=%s reconnects=%d link_downs=%d worst_loop_gap_ms=%d" % (
        ok, s["reconnects"], s["link_downs"], loop[1]))
    await c.disconnect()


asyncio.run(main())
