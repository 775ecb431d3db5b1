"""boards/<board>/profile.py on the unix port (no esp32/rp2 modules there),
with stand-ins for those modules, and the RAM figures in the board READMEs:

    .venv/bin/pytest -q -s tests/test_boards.py -k ram     # prints the table

RAM: tests/mp/ram_probe.py imports the library, makes a client with the
board's PROFILE and a session file, connects to mosquitto, subscribes, and
round-trips 20 QoS 1 messages; gc.mem_alloc() after each step (after a
collect) is what stays allocated. The smallest -X heapsize=<n>wK the whole
run fits in is found by bisection: <n>wK is n KB scaled to 64-bit words (an
estimate that understates a board's need: objects and code grow by less than
2x on 64-bit, so the doubled heap has room to spare).

The board pages' RAM tables and budgets are not this test's: `make bench`
runs the same probe on a 32-bit build of the unix port (MICROPY32) and writes
them (tools/figures.py); this test checks that the probe runs and prints
its table."""
import json
import sys

import pytest

from conftest import MP_HELPERS, ROOT, LIB
from isolated_mp import run_isolated

sys.path.insert(0, str(ROOT / "tools"))
import build_mpy  # noqa: E402

BOARDS = ("esp32", "rp2040")
KWARGS = ("buf_size", "max_inflight", "receive_max", "outbox_size", "outbox_bytes", "ring_prog_size")


@pytest.mark.parametrize("board", BOARDS)
def test_profile_imports_without_board_modules(board, tmp_path):
    r = run_isolated(r"""
import profile
from durable_mqtt import MQTTClient
assert set(profile.PROFILE) <= set(%r), profile.PROFILE
assert profile.session_file() == '/session.dmq'
c = MQTTClient('p', '127.0.0.1', **profile.PROFILE)     # the kwargs are the client's
print('OK', sorted(profile.PROFILE))
""" % (KWARGS,), [LIB, ROOT / "boards" / board], tmp_path, check=True)
    assert "OK" in r.stdout


def test_esp32_session_file_prefers_the_partition(tmp_path):
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "esp32.py").write_text(
        "class Partition:\n"
        "    TYPE_DATA = 1\n"
        "    tables = {'mqttsess': ['the mqttsess partition']}\n"
        "    @classmethod\n"
        "    def find(cls, type=0, subtype=0xff, label=None, block_size=4096):\n"
        "        assert type == cls.TYPE_DATA\n"
        "        return list(cls.tables.get(label, []))\n")
    r = run_isolated(r"""
import profile
print(profile.session_file())
print(profile.session_file(label='other'))
""", [shim, ROOT / "boards" / "esp32"], tmp_path, check=True)
    assert r.stdout.split("\n")[:2] == ["the mqttsess partition", "/session.dmq"], r.stdout + r.stderr


def test_rp2040_session_file_refuses_a_ring_over_the_filesystem(tmp_path):
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "rp2.py").write_text(
        "class Flash:\n"
        "    def __init__(self, start=-1, len=-1):\n"
        "        self.start, self.len = start, len\n"
        "    def __repr__(self):\n"
        "        return 'Flash(%d, %d)' % (self.start, self.len)\n")
    r = run_isolated(r"""
import os, profile
assert profile.session_file() == '/session.dmq'       # RING_START None: a file
fs = os.statvfs('/')
print(profile.session_file(ring_start=fs[1] * fs[2], ring_len=65536))
try:
    profile.session_file(ring_start=0)
except ValueError as e:
    print('refused', e)
""", [shim, ROOT / "boards" / "rp2040"], tmp_path, check=True)
    lines = r.stdout.splitlines()
    assert lines[0].startswith("Flash(") and lines[0].endswith(", 65536)")
    assert lines[1].startswith("refused ring at 0 overlaps the filesystem")


def _probe(path, broker, tmp_path, tag, heapsize=None):
    sess = tmp_path / ("%s.dmq" % tag)
    if sess.exists():
        sess.unlink()
    r = run_isolated(None, path, tmp_path, heapsize=heapsize,
                     args=[MP_HELPERS / "ram_probe.py", broker.port, tag, sess])
    line = [x for x in r.stdout.splitlines() if x.startswith("{")]
    return json.loads(line[0]) if r.returncode == 0 and line else None


def _smallest_heap(path, broker, tmp_path, tag, lo=8, hi=256):
    """Smallest n (KB, word-scaled) for which the probe runs in -X heapsize=<n>wK."""
    assert _probe(path, broker, tmp_path, tag + "-hi", "%dwK" % hi), "does not run in %dwK" % hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _probe(path, broker, tmp_path, "%s-%d" % (tag, mid), "%dwK" % mid):
            hi = mid
        else:
            lo = mid
    return hi


def test_ram_figures(broker, tmp_path):
    mpy = tmp_path / "mpy"
    build_mpy.build(["x64"], mpy)
    rows = []
    for board in BOARDS:
        for variant, lib in ((".py", LIB), (".mpy", mpy / "x64")):
            path = [lib, ROOT / "boards" / board]
            tag = "ram-%s-%s" % (board, variant[1:])
            m = _probe(path, broker, tmp_path, tag)
            assert m, "probe failed for %s %s" % (board, variant)
            rows.append((board, variant, m, _smallest_heap(path, broker, tmp_path, tag)))
    out = ["", "RAM on the unix port (64-bit), bytes held after each step (gc.mem_alloc after collect):",
           "%-7s %-5s %9s %9s %9s %9s %9s %10s" % ("board", "lib", "import", "+store", "+client",
                                                  "+connect", "steady", "min heap")]
    for board, variant, m, heap in rows:
        imp = m["import"] - m["profile"]
        out.append("%-7s %-5s %9d %9d %9d %9d %9d %7dwK" % (
            board, variant, imp, m["import_store"] - m["import"], m["client"] - m["import_store"],
            m["connected"] - m["client"], m["steady"] - m["connected"], heap))
    print("\n".join(out))
    for board, variant, m, heap in rows:
        # In word-scaled KB (see above: an underestimate; the 32-bit figures
        # on the board pages, from make bench, are the real ones).
        assert heap <= (128 if variant == ".py" else 64), (board, variant, heap)


def test_wlan_link_on_a_stand_in_network(tmp_path):
    """boards/wlan.py (deployed as /wlan.py) over tests/mp/fw_network.py, the
    stand-in for the firmware's network module: up() activates the station,
    leaves any half-finished attempt and connects; a link that is up is not
    touched again; NullLink is always up."""
    r = run_isolated(r"""
import sys, fw_network
sys.modules['network'] = fw_network
from wlan import WLANLink, NullLink
w = WLANLink('my-ssid', 'secret', 'dev-7', country='DE')
assert not w.isconnected() and fw_network.country() == 'DE'

assert w.up(1000) and w.isconnected() and w.attempts == 1
assert w.up(1000) and w.attempts == 1            # already up: no new attempt
w.down()
assert not w.isconnected() and not w.wlan.active()
n = NullLink()
assert n.up(0) and n.isconnected()
import asyncio
from wlan import AsyncWLANLink
a = AsyncWLANLink('other', 'secret')
assert not a.isconnected()
assert asyncio.run(a.up(1000)) and a.isconnected() and a.attempts == 1     # awaited (AsyncClient)
assert asyncio.run(a.up(1000)) and a.attempts == 1
print('OK')
""", [MP_HELPERS, ROOT / "boards"], tmp_path, check=True)
    assert r.stdout.splitlines() == ["WLAN country DE", "WLAN hostname dev-7", "WLAN connect my-ssid",
                                     "WLAN connect other", "OK"], r.stdout


def test_wlan_link_feeds_a_watchdog_while_the_radio_associates(tmp_path):
    """WLANLink(feed=...) calls feed every 100 ms of a join (the firmware
    passes its watchdog's feed: a join may take timeout_ms); a radio that
    never associates is given up after timeout_ms, fed all the while."""
    r = run_isolated(r"""
import sys, time, fw_network
sys.modules['network'] = fw_network
fw_network.WLAN.connect = lambda self, ssid=None, key=None, **kw: None    # never associates
from wlan import WLANLink, AsyncWLANLink
fed = []
feed = lambda: fed.append(time.ticks_ms())
t0 = time.ticks_ms()
assert not WLANLink('ssid', 'pw', feed=feed).up(1000)
gaps = [time.ticks_diff(b, a) for a, b in zip([t0] + fed, fed)]
print('SYNC', len(fed), max(gaps) < 300)
del fed[:]
import asyncio
assert not asyncio.run(AsyncWLANLink('ssid', 'pw', feed=feed).up(500))
print('ASYNC', len(fed))
""", [MP_HELPERS, ROOT / "boards"], tmp_path, check=True)
    lines = r.stdout.split()
    assert lines[0] == "SYNC" and 9 <= int(lines[1]) <= 11 and lines[2] == "True", r.stdout
    assert lines[3] == "ASYNC" and 4 <= int(lines[4]) <= 6, r.stdout
