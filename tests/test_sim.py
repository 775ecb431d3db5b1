"""`make sim` end to end, shortened: the example firmware on the simulated
board survives power cuts with nothing lost and obeys its commands."""
import subprocess
import sys

from conftest import ROOT


def test_simulation_loses_nothing(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "sim.py"), "--cuts", "2", "--up-s", "0.8", "1.5",
                        "--dir", str(tmp_path / "sim"), "--no-progress"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "lost                    : 0" in out, out
    accepted = int(out.split("accepted by the library : ")[1].split()[0])
    distinct = int(out.split("received by subscriber  : ")[1].split()[0])
    assert accepted > 50 and distinct == accepted, out
    assert int(out.split("commands obeyed         : ")[1].split()[0]) >= 2, out


def test_sim_help():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "sim.py"), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--cuts" in r.stdout
