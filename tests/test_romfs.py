"""A ROMFS image of the library (INSTALL.md section 6): the build command as
typed, and a client imported from an image mounted at /rom on the unix port
(vfs.VfsRom, as firmware mounts a romfs partition), against mosquitto."""
import pathlib
import platform
import re
import subprocess
import sys

from conftest import ROOT, run_mp

MPREMOTE = str(pathlib.Path(sys.executable).parent / "mpremote")
ROMFS_MAGIC = b"\xd2\xcd\x31"


def install_md_romfs_command():
    text = (ROOT / "INSTALL.md").read_text()
    section = text.split("## 6. A ROMFS image", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if "mpremote romfs" in line][0]


def build_mpy(arch, out):
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "build_mpy.py"), "--arch", arch, "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_install_md_romfs_build_as_typed(tmp_path):
    build_mpy("xtensawin", tmp_path / "build" / "mpy")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "mpremote").symlink_to(MPREMOTE)
    cmd = install_md_romfs_command()
    r = subprocess.run(cmd, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    img = (tmp_path / "build" / "esp32.romfs").read_bytes()
    assert img.startswith(ROMFS_MAGIC), img[:8]
    for name in ("client.mpy", "session.mpy", "link.mpy", "native.mpy"):
        assert name.encode() in img, name


def test_client_runs_from_a_romfs_image(tmp_path, broker):
    arch = {"x86_64": "x64", "i686": "x86", "i386": "x86"}[platform.machine()]
    build_mpy(arch, tmp_path / "mpy")
    img = tmp_path / "lib.romfs"
    r = subprocess.run([MPREMOTE, "romfs", "--no-mpy", "-o", str(img), "build", str(tmp_path / "mpy" / arch)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_mp(r"""
import sys, vfs
with open(%r, "rb") as f:
    img = f.read()
vfs.mount(vfs.VfsRom(img), "/rom")
sys.path.insert(0, "/rom")            # as firmware does for its romfs partition
from durable_mqtt import MQTTClient
import durable_mqtt.client, durable_mqtt.session
assert durable_mqtt.client.__file__ == "/rom/durable_mqtt/client.mpy", durable_mqtt.client.__file__
assert durable_mqtt.session.__file__.startswith("/rom/"), durable_mqtt.session.__file__
got = []
c = MQTTClient("romfs-1", "127.0.0.1", %d, session_file="sess.dmq", clean_session=False)
c.set_callback(lambda t, m, r, q: got.append(bytes(m)))
c.connect()
c.subscribe("romfs/t", 1)
c.publish("romfs/t", b"from /rom", qos=1)
for _ in range(200):
    if got and not c.pending():
        break
    c.wait_msg(50)
assert got == [b"from /rom"], got
import durable_mqtt.filestore
assert durable_mqtt.filestore.__file__.startswith("/rom/")
c.disconnect()
print("OK")
""" % (str(img), broker.port), cwd=str(tmp_path))
    assert r.stdout.strip().endswith("OK"), r.stdout
