# What a board does at reset, on the unix port (MicroPython):
#
#   micropython board_rom.py BOARD_DIR [name=module ...]
#
# BOARD_DIR becomes the filesystem root "/" (a VfsPosix rooted there takes
# the place of the host's), sys.path becomes a board's ['', '.frozen',
# '/lib'], the working directory "/", and boot.py then main.py run as
# MicroPython runs them after a reset (as __main__, no arguments). So the
# files a deploy put on the board are all there is: a module it forgot is an
# ImportError here as on the board, and "/session.dmq" is a file in
# BOARD_DIR, not on the host.
#
# The only simulated parts are modules the firmware has built in and the
# unix port lacks: each name=module argument loads `module` (from
# MICROPYPATH, before the switch) as `name`, e.g. network=fw_network.
# At the end it prints "LOADED <module> <file>" for each durable_mqtt module.
import os
import sys
import vfs

root = sys.argv[1]
for spec in sys.argv[2:]:
    name, _, mod = spec.partition("=")
    sys.modules[name] = __import__(mod)

class Root:
    # VfsPosix rooted at BOARD_DIR, except for rename(), which an unrooted
    # VfsPosix does with the full host paths: the rooted one renames the new
    # path onto itself in the unix port pinned here (fixed upstream in
    # 3a89fc2411, "extmod/vfs_posix: Fix renaming with a non-empty VFS root").
    def __init__(self, path):
        self.fs = vfs.VfsPosix(path)

    def __getattr__(self, name):        # mount, open, stat, ilistdir, chdir, ...
        return getattr(self.fs, name)

    def rename(self, old, new):
        host.rename(_host(old), _host(new))

def _host(path):
    return root.rstrip("/") + path if path.startswith("/") else path

host = vfs.VfsPosix()
vfs.umount("/")
vfs.mount(Root(root), "/")
os.chdir("/")
sys.path[:] = ["", ".frozen", "/lib"]
sys.argv[:] = []

def run(name):
    try:
        f = open(name)
    except OSError:
        return
    with f:
        src = f.read()
    exec(compile(src, name, "exec"), {"__name__": "__main__", "__file__": name})

run("boot.py")
run("main.py")
for name in sorted(sys.modules):
    if name == "durable_mqtt" or name.startswith("durable_mqtt."):
        print("LOADED", name, sys.modules[name].__file__)
