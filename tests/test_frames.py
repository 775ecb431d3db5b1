"""Which `# noalloc` functions take their VM frame from the heap.

A bytecode function whose frame (locals and value stack, plus 3 words per
exception handler) exceeds 11 words gets it from the heap on each call: a
malloc and a free, not garbage (the zero-allocation proofs hold), but
counted by micropython.mem_total() and reported per message by `make
bench`. The library keeps per-message functions within 11 words where that
is cheap, and native code out of the default build (ISSUE: bytecode first),
so some per-message functions do take a heap frame. They are listed here,
each with why; the test fails when a function not on the list grows past 11
words (a regression) or one on the list no longer needs to be here.
tools/bench/frames.py reads the frame sizes from what mpy-cross compiles."""
import subprocess
import sys

from conftest import ROOT

# function -> why its frame stays over 11 words
HEAP_FRAMES = {
    "MQTTClient.publish": "arguments to the wire in one function: five arguments and the checks (two would take two heap frames)",
    "Session.accept": "encodes the PUBLISH into the outbox: eight arguments",
    "Link.publish0": "a try block (3 words) around the QoS 0 write",
    "Link.drain": "a try block around send_out() (after a read, and at connect; publish() has its own)",
    "Link.wait_msg": "a try block and the wait's deadline",
    "oversize.drain": "an oversize PUBLISH only",
    "oversize.far_topic": "an oversize PUBLISH whose Topic Name runs past the receive buffer only",
    "inbound.deliver_props": "set_callback(props=True) only: five arguments, the properties and the call's mark (inbound.incoming)",
    "inbound.incoming": "a PUBLISH: parse, MQTT 5 checks, delivery (a try block: a callback's error waits for the acknowledgement), acknowledgement",
    "codec.utf8": "a multi-byte UTF-8 sequence (ASCII topics never call it)",
    "codec.topic_name": "a try block; publish() checks a str or bytes topic once, a bytearray or memoryview one each time",
    "props.check": "MQTT 5 only: the property walk",
    "props._value": "MQTT 5 only: one property value",
    "props.find": "MQTT 5 only: a message with a Message Expiry, at its first send (the time left)",
    "Transport._room": "only when the socket buffer is full",
    "crcpy.add": "firmware without viper only",
    "crcpy.copy": "firmware without viper only",
    "FileLog.write": "a try block (ENOSPC)",
    "FileLog.sync": "a try block (ENOSPC)",
    "LogJournal._batched": "acknowledgements and batched records of one append",
    "RingStore._program": "a try block (a failed program closes the block)",
    "RingStore._frame": "frames a commit",
    "RingStore._empty_checkpoint": "erase() and the first write only",
    "RingStore._ck_write": "checkpoints only",
    "records.header": "checkpoints only: the HEADER record",
    "records.sub": "checkpoints only: one SUB record",
}


def test_heap_frames_are_the_listed_ones():
    files = sorted(str(p) for p in (ROOT / "lib" / "durable_mqtt").glob("*.py"))
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "bench" / "frames.py"), *files],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    marked = [line for line in r.stdout.splitlines() if "# noalloc" in line]
    assert len(marked) > 60, r.stdout            # it saw the marked functions
    heap = set()
    for line in marked:
        if "HEAP FRAME" in line:
            f = line.split()
            name = f[1]
            if "." not in name:
                name = f[0][:-3] + "." + name    # a module-level function: module.name
            heap.add(name)
    assert heap - set(HEAP_FRAMES) == set(), "new heap frames:\n%s" % r.stdout
    assert set(HEAP_FRAMES) - heap == set(), "no longer heap frames (update the list): %s" % (set(HEAP_FRAMES) - heap)
