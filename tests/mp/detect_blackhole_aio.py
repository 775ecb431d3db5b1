# As detect_blackhole.py, with the asyncio front end.
import asyncio
import sys
import time

from durable_mqtt.aio import AsyncClient

port, ver, ka = (int(x) for x in sys.argv[1:4])


async def main():
    c = AsyncClient("abh%d" % ver, "127.0.0.1", port, keepalive=ka, version=ver, clean_session=True)
    await c.connect()
    await asyncio.sleep_ms(300)
    print("READY")
    t0 = time.ticks_ms()
    try:
        await asyncio.wait_for_ms(c.down.wait(), 20000)
        print("DETECTED_MS", time.ticks_diff(time.ticks_ms(), t0), repr(c.client.last_error))
    except asyncio.TimeoutError:
        print("DETECTED_MS -1")


asyncio.run(main())
