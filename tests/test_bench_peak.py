"""make bench logs, beside each smallest heap, where the run fails just below
it (tools/bench/run.py where_short). Read here from a real MemoryError of
the unix port, raised two calls deep in a module of its own."""
import subprocess
import sys
from pathlib import Path

from conftest import MICROPYTHON

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools" / "bench"))
from run import where_short  # noqa: E402

DEEP = """\
def outer(n):
    return inner(n)


def inner(n):
    return bytearray(n)
"""


def run_tail(tmp_path, code):
    (tmp_path / "deep.py").write_text(DEEP)
    r = subprocess.run([MICROPYTHON, "-X", "heapsize=16384", "-c", code], cwd=tmp_path,
                       capture_output=True, text=True, timeout=30,
                       env={"MICROPYPATH": str(tmp_path)})
    return (r.stdout + r.stderr).splitlines()


def test_the_innermost_frames_and_the_size_asked(tmp_path):
    tail = run_tail(tmp_path, "import deep\ndeep.outer(100000)")
    assert tail[-1].startswith("MemoryError"), tail
    assert where_short(tail) == "<stdin> <module> > deep outer > deep inner: 100000 B"


def test_a_run_that_failed_otherwise_has_no_peak(tmp_path):
    tail = run_tail(tmp_path, 'import deep\ndeep.outer("x")')
    assert "MemoryError" not in tail[-1], tail
    assert where_short(tail) is None
    assert where_short([]) is None
