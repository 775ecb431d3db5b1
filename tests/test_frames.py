"""Every function marked `# noalloc` runs in a frame on the C stack. A
bytecode frame of more than 11 words is taken from the heap on each call
(and the heap_lock tests cannot see it: the VM falls back to the C stack
when the heap is locked), so a hot function that grows past that must be
split or made @micropython.native. tools/bench/frames.py reads the frame
sizes from what mpy-cross compiles."""
import subprocess
import sys

from conftest import ROOT


def test_no_noalloc_function_takes_its_frame_from_the_heap():
    files = sorted(str(p) for p in (ROOT / "lib" / "durable_mqtt").glob("*.py"))
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "bench" / "frames.py"), *files],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    marked = [line for line in r.stdout.splitlines() if "# noalloc" in line]
    assert len(marked) > 40, r.stdout            # it saw the marked functions
    heap = [line for line in marked if "HEAP FRAME" in line]
    assert not heap, "\n".join(heap)
