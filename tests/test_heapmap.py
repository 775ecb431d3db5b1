"""tools/heapmap.py: the map of a client's heap by step and by module
(docs/footprint.md), on the venv's micropython with the committed .mpy."""
import json
import subprocess
import sys

from conftest import MICROPYTHON, ROOT


def test_heapmap_maps_the_smallest_heap_workload(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "heapmap.py"), "--json", "--micropython", MICROPYTHON],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    d = json.loads(r.stdout)
    steps = {s["name"]: s for s in d["steps"]}
    assert list(steps) == ["start", "import", "built", "connected", "subscribed", "published and received",
                           "disconnected"]
    # What a connected client keeps: the engine, the link and its reader,
    # the transport, the session directory's journal; and not the
    # once-per-call modules (connect.py, request.py, leave.py ...).
    kept = set(steps["connected"]["modules"])
    assert {"client", "session", "link", "inbound", "transport", "filestore"} <= kept, kept
    assert not kept & {"connect", "dial", "connack", "request", "subs", "leave", "configure", "load"}, kept
    assert steps["disconnected"]["modules"] == steps["connected"]["modules"]
    for name in ("import", "built", "connected", "disconnected"):
        s = steps[name]
        assert s["live"] > 0 and s["qstr"][0] > steps["start"]["qstr"][0], s
    assert steps["import"]["live"] < steps["built"]["live"] <= steps["connected"]["live"]
    # The second run, module by module, ends with the same client: its
    # heap within 10 % of the first run's (the import order differs).
    parts = d["parts"]
    assert parts[-1]["name"] == "the client built"
    assert sorted(parts[-1]["modules"]) == sorted(steps["built"]["modules"])
    built = parts[-1]["live"] - parts[0]["live"]
    assert abs(built - steps["built"]["live"]) < steps["built"]["live"] // 10, (built, steps["built"])
    # The outbox arena is the largest buffer: 96 bytes a place, for
    # outbox_size=32 plus max_inflight=4 plus the QoS 0 places.
    sizes = dict(d["buffers"])
    assert max(sizes, key=sizes.get) == "engine.arena" and sizes["engine.arena"] % 96 == 0, sizes
    # The tables of the same map.
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "heapmap.py"), "--micropython", MICROPYTHON],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0 and "| connected |" in r.stdout and "| the client built |" in r.stdout, r.stdout
