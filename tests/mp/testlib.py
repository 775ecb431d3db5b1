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


def assert_no_alloc(name, f, warmups=2):
    """f takes no arguments. Warm-up calls first (first sight of a size may
    fill a bounded cache), then one call under heap_lock and one measured."""
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
        raise AssertionError("%s allocated %d bytes" % (name, d))
    print("noalloc ok:", name)


def wait_until(client, cond, timeout_ms=5000, step_ms=20):
    t0 = time.ticks_ms()
    while not cond():
        if time.ticks_diff(time.ticks_ms(), t0) > timeout_ms:
            raise AssertionError("timed out waiting")
        client.wait_msg(step_ms)
