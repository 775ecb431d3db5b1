"""tools/mpy_check.py, the firmware check of INSTALL.md: what it prints on
the unix port (its .mpy version, sub-version and arch, and whether the
shipped .mpy files load), run as a user runs it (`mpremote run
tools/mpy_check.py` against the unix port behind a PTY) and plain; its
verdicts against what the unix port's loader really does with real and
altered .mpy headers; and its reading of other firmware (6.2, 5, an
RP2350) from MicroPython's rules."""
import re
import subprocess
import sys

import pytest

from conftest import MICROPYTHON, ROOT
from isolated_mp import run_isolated
from ptyboard import unix_board  # noqa: F401  (a fixture)

sys.path.insert(0, str(ROOT / "tools"))
import build_mpy  # noqa: E402

TOOL = ROOT / "tools" / "mpy_check.py"
MPREMOTE = str(__import__("pathlib").Path(sys.executable).parent / "mpremote")


@pytest.fixture(scope="module")
def unix_mpy():
    """The unix port's own sys.implementation._mpy, and what it decodes to."""
    r = subprocess.run([MICROPYTHON, "-c", "import sys; print(sys.implementation._mpy)"],
                       capture_output=True, text=True, check=True)
    m = int(r.stdout)
    return m, m & 0xFF, (m >> 8) & 3, build_mpy.ARCH_CODES[(m >> 10) & 0x2F]


def test_prints_version_subversion_and_arch_and_the_shipped_files_load(unix_mpy, tmp_path):
    m, ver, sub, arch = unix_mpy
    assert (ver, sub) == (6, 3)                # MicroPython 1.2x, mpy-cross 1.29
    # The mip .mpy set as installed (MICROPYPATH holds mpy/: .../durable_mqtt/*.mpy).
    r = run_isolated(None, [ROOT / "mpy"], tmp_path, args=[TOOL], check=True)
    lines = r.stdout.splitlines()
    n = len(list((ROOT / "mpy" / "durable_mqtt").glob("*.mpy")))
    assert lines == [
        "mpy 6.3, arch %s" % arch,
        "bytecode .mpy (package-mpy.json, .mpy 6): load here",
        "native .mpy for %s (make deploy MPY=%s, .mpy 6.3): load here" % (arch, arch),
        "viper: yes (native.py compiles here: the CRC runs as machine code)",
        "%s/durable_mqtt: %d .mpy files, all load here" % (ROOT / "mpy", n),
    ], r.stdout


def test_mpremote_run_as_typed(unix_mpy, unix_board):
    """`mpremote run tools/mpy_check.py` (INSTALL.md), from the checkout."""
    r = subprocess.run([MPREMOTE, "connect", unix_board, "resume", "run", "tools/mpy_check.py"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[0] == "mpy 6.3, arch %s" % unix_mpy[3], r.stdout


def test_reports_a_foreign_build_on_the_board(unix_mpy, tmp_path):
    """make mpy's xtensawin native.mpy on the unix port: named as not loading."""
    out = tmp_path / "build"
    build_mpy.build(["xtensawin"], out)
    r = run_isolated(None, [out / "xtensawin"], tmp_path, args=[TOOL], check=True)
    assert ("%s/durable_mqtt/native.mpy: does NOT load here: incompatible .mpy arch: xtensawin code, "
            "the firmware runs %s" % (out / "xtensawin", unix_mpy[3])) in r.stdout.splitlines(), r.stdout


def test_verdicts_match_the_loader(tmp_path):
    """For real .mpy files and copies with an altered header, the tool's
    verdict on the unix port equals what `import` does there."""
    d = tmp_path / "m"
    d.mkdir()
    src = tmp_path / "v.py"
    src.write_text("import micropython\n@micropython.viper\ndef f(x: int) -> int:\n    return x + 1\nOK = 1\n")
    bc = tmp_path / "b.py"
    bc.write_text("OK = 1\n")
    mc = build_mpy.find_mpy_cross()
    files = {}
    for name, args, path in (("native_x64", ["-march=x64"], src), ("native_xtensawin", ["-march=xtensawin"], src),
                             ("native_armv6m", ["-march=armv6m"], src), ("bytecode", [], bc)):
        subprocess.run([mc] + args + ["-o", str(d / (name + ".mpy")), str(path)], check=True)
        files[name] = (d / (name + ".mpy")).read_bytes()

    def altered(name, data, i, value):
        b = bytearray(data)
        b[i] = value
        (d / (name + ".mpy")).write_bytes(bytes(b))

    altered("bytecode_v5", files["bytecode"], 1, 5)                     # an .mpy of MicroPython 1.12-1.18
    altered("bytecode_sub2", files["bytecode"], 2, 2)                   # sub-version ignored for bytecode
    altered("native_x64_sub2", files["native_x64"], 2, (2 << 2) | 2)    # native code of 6.2
    code = r"""
import os, sys
sys.path.insert(0, %(tools)r)
import mpy_check
board = mpy_check.decode(sys.implementation._mpy)
sys.path.insert(0, %(d)r)
for f in sorted(os.listdir(%(d)r)):
    with open(%(d)r + '/' + f, 'rb') as fh:
        verdict = mpy_check.loads(board, fh.read(4))
    try:
        __import__(f[:-4])
        real = None
    except ValueError as e:
        real = str(e)
    print(f[:-4], 'tool:', 'loads' if verdict is None else 'refuses', 'vm:', 'loads' if real is None else real)
""" % {"tools": str(ROOT / "tools"), "d": str(d)}
    r = run_isolated(code, [], tmp_path, check=True)
    got = {line.split()[0]: line for line in r.stdout.splitlines() if " tool: " in line}
    assert sorted(got) == ["bytecode", "bytecode_sub2", "bytecode_v5", "native_armv6m", "native_x64",
                           "native_x64_sub2", "native_xtensawin"], r.stdout
    for name, line in got.items():
        tool, vm = re.match(r"\S+ tool: (\S+) vm: (.*)", line).groups()
        assert (tool == "loads") == (vm == "loads"), line
    assert "vm: loads" in got["bytecode_sub2"] and "incompatible .mpy file" in got["bytecode_v5"]
    assert "incompatible .mpy file" in got["native_x64_sub2"]
    assert "incompatible .mpy arch" in got["native_xtensawin"]


def test_other_firmware_from_the_rules(tmp_path):
    """_mpy values of other firmware (decoded as py/persistentcode.h says):
    an ESP32 on 1.22 (6.2) loads the bytecode but not 6.3 native code;
    firmware 1.18 (.mpy 5) loads neither; an RP2350 (armv7emsp) runs the
    RP2040's armv6m native.mpy; an ESP32 refuses it."""
    code = r"""
import sys
sys.path.insert(0, %(tools)r)
import mpy_check as c
native_armv6m = b'M\x06' + bytes([4 << 2 | 3, 31])
bytecode = b'M\x06\x00\x1f'
for m in (0x2A06, 0x2B05, 0x1F06, 0x2B06):
    for line in c.report(m, [('/lib/durable_mqtt', [('native.mpy', native_armv6m), ('client.mpy', bytecode)])]):
        print(hex(m), line)
""" % {"tools": str(ROOT / "tools")}
    r = run_isolated(code, [], tmp_path, check=True)
    out = r.stdout.splitlines()
    esp_122 = [x[7:] for x in out if x.startswith("0x2a06 ")]
    assert esp_122[0] == "mpy 6.2, arch xtensawin"
    assert esp_122[1] == "bytecode .mpy (package-mpy.json, .mpy 6): load here"
    assert "do NOT load here (incompatible .mpy file: native code for 6.3, the firmware is 6.2)" in esp_122[2]
    old = [x[7:] for x in out if x.startswith("0x2b05 ")]
    assert old[0] == "mpy 5.3, arch xtensawin" and "do NOT load here" in old[1] and "install package.json" in old[1]
    assert "/lib/durable_mqtt/client.mpy: does NOT load here" in old[-1]
    rp2350 = [x[7:] for x in out if x.startswith("0x1f06 ")]
    assert rp2350[0] == "mpy 6.3, arch armv7emsp" and rp2350[-1] == "/lib/durable_mqtt: 2 .mpy files, all load here"
    esp = [x[7:] for x in out if x.startswith("0x2b06 ")]
    assert esp[-1] == ("/lib/durable_mqtt/native.mpy: does NOT load here: incompatible .mpy arch: armv6m code, "
                       "the firmware runs xtensawin")


def test_install_md_repl_line(unix_mpy, tmp_path):
    """The one line INSTALL.md gives for the REPL, run as given."""
    text = (ROOT / "INSTALL.md").read_text()
    line = [x for x in text.splitlines() if x.startswith("import sys; m = sys.implementation._mpy")]
    assert len(line) == 1
    r = run_isolated(line[0], [], tmp_path, check=True)
    m, ver, sub, arch = unix_mpy
    assert r.stdout.strip() == "mpy 6.3 arch %d" % ((m >> 10) & 0x2F)
