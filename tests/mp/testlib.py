# Helpers for test scripts that run inside the MicroPython unix port.
import gc
import micropython
import time


def alloc_bytes(f):
    """Heap bytes f() allocates, gc disabled (catches allocations that
    heap_lock misses, such as exception objects)."""
    gc.collect()
    gc.disable()
    try:
        m0 = gc.mem_alloc()
        f()
        return gc.mem_alloc() - m0
    finally:
        gc.enable()


def total_bytes(f):
    """Every heap byte f() asked for, freed or not (micropython.mem_total(),
    which this unix port has). Beside garbage it counts what heap_lock cannot
    see: a bytecode frame of more than 11 words is taken from the heap and
    freed at return (under heap_lock the VM uses the C stack instead). Such
    frames are not garbage; `make bench` reports them per message."""
    t0 = micropython.mem_total()
    f()
    return micropython.mem_total() - t0


def assert_no_alloc(name, f, warmups=2):
    """f takes no arguments. Warm-up calls first (first sight of a size may
    fill a bounded cache), then one call under heap_lock and one measured
    with gc.mem_alloc() with the collector off: it must leave nothing for
    the collector. The heap frames it took and gave back (mem_total()) are
    printed, not judged."""
    for _ in range(warmups):
        f()
    micropython.heap_lock()
    try:
        f()
    except MemoryError:
        micropython.heap_unlock()
        raise AssertionError("%s allocated under heap_lock" % name)
    micropython.heap_unlock()
    d = alloc_bytes(f)
    if d:
        raise AssertionError("%s left %d bytes allocated" % (name, d))
    t = total_bytes(f) if hasattr(micropython, "mem_total") else -1
    print("noalloc ok:", name, "(heap frames: %d bytes)" % t)


def wait_until(client, cond, timeout_ms=5000, step_ms=20):
    t0 = time.ticks_ms()
    while not cond():
        if time.ticks_diff(time.ticks_ms(), t0) > timeout_ms:
            raise AssertionError("timed out waiting")
        client.wait_msg(step_ms)


async def ticker(loop_stats, step_ms=10):
    """A task beside the code under test, counting its wake-ups
    (loop_stats[0]) and the longest gap between two (loop_stats[1], ms): how
    long the event loop was ever held up."""
    import asyncio
    last = time.ticks_ms()
    while True:
        await asyncio.sleep_ms(step_ms)
        now = time.ticks_ms()
        loop_stats[1] = max(loop_stats[1], time.ticks_diff(now, last))
        last = now
        loop_stats[0] += 1
