""".mpy builds (`make mpy`, tools/build_mpy.py): every module compiles for
ESP32 (xtensawin) and RP2040 (armv6m), the viper modules carry machine code
for exactly that arch, and a client runs from .mpy files alone on the unix
port (an x64 build: the unix port refuses xtensawin machine code, which the
last test shows)."""
import ast
import subprocess
import sys

import pytest

from conftest import MP_HELPERS, ROOT
from isolated_mp import run_isolated

sys.path.insert(0, str(ROOT / "tools"))
import build_mpy  # noqa: E402

MODULES = sorted(p.name[:-3] for p in (ROOT / "lib" / "durable_mqtt").glob("*.py"))


def _emits_machine_code(path):
    """A function decorated @micropython.native or .viper anywhere in the
    module's code (memcopy keeps its viper code in a string: not counted)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for d in node.decorator_list:
                if isinstance(d, ast.Attribute) and d.attr in ("native", "viper"):
                    return True
    return False


NATIVE = {m for m in MODULES if _emits_machine_code(ROOT / "lib" / "durable_mqtt" / (m + ".py"))}


@pytest.fixture(scope="module")
def mpy_out(tmp_path_factory):
    """The build for the boards and for the unix port, made by the command
    line `make mpy` runs (into a temporary folder, so build/ is untouched)."""
    out = tmp_path_factory.mktemp("mpy")
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "build_mpy.py"), "--out", str(out),
                        "--arch", "xtensawin", "--arch", "armv6m", "--arch", "x64"],
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
    assert "xtensawin (ESP32)" in lines[2] and "armv6m (RP2040)" in lines[2]
    for m in MODULES:
        assert any(line.split()[:1] == [m] for line in lines), m
    total = [line.split() for line in lines if line.startswith("total")][0]
    for col, arch in enumerate(("xtensawin", "armv6m", "x64"), 1):
        files = (out / arch / "durable_mqtt").iterdir()
        assert int(total[col]) == sum(f.stat().st_size for f in files)


def test_viper_modules_hold_machine_code_for_the_named_arch(mpy_out):
    assert {"codec", "crc"} <= NATIVE
    out, _ = mpy_out
    for arch in ("xtensawin", "armv6m", "x64"):
        for m in MODULES:
            got = build_mpy.mpy_arch(out / arch / "durable_mqtt" / (m + ".mpy"))
            assert got == (arch if m in NATIVE else None), (arch, m, got)


def test_client_runs_from_mpy_files_only(mpy_out, broker, tmp_path):
    """MICROPYPATH = the x64 .mpy build + tests/mp (a NOR flash simulator,
    no library code) + .frozen. Every durable_mqtt module must come from a
    .mpy; the viper code runs (memcopy compiles its own at import); MQTT
    3.1.1 and 5 round trips with a session on a file and on a raw ring."""
    out, _ = mpy_out
    code = r"""
import sys
import durable_mqtt
from durable_mqtt import MQTTClient, MQTTException, client, codec, crc, errors, memcopy, session, store, transport
from durable_mqtt import filestore, ring, robust, aio, reasons
from norflash import NorFlash
mods = (durable_mqtt, client, codec, crc, errors, memcopy, session, store, transport, filestore, ring, robust, aio,
        reasons)
assert len(mods) == %(nmods)d
for mod in mods:
    assert mod.__file__.endswith('.mpy') and mod.__file__.startswith(%(out)r), mod.__file__
assert memcopy.native
b = bytearray(b'123456789\x00\x00\x00\x00')
crc.put(b, 0, 9)
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
""" % {"out": str(out / "x64"), "port": broker.port, "nmods": len(MODULES)}
    r = run_isolated(code, [out / "x64", MP_HELPERS], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK 4" in r.stdout and "OK 5" in r.stdout


def test_unix_port_refuses_board_machine_code(mpy_out, tmp_path):
    """The xtensawin build really holds ESP32 machine code: the unix port
    loads its bytecode-only modules and refuses the viper ones."""
    out, _ = mpy_out
    # Imported as top-level modules: the package's __init__ pulls in codec.
    r = run_isolated("import errors\nprint('bytecode ok')\nimport crc",
                     [out / "xtensawin" / "durable_mqtt"], tmp_path)
    assert "bytecode ok" in r.stdout
    assert "incompatible .mpy arch" in r.stdout + r.stderr
