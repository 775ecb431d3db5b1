# The simulated board: the unix port with its flash as an image file and
# Wi-Fi as a no-op. Same shape as boards/esp32/profile.py, so firmware/main.py
# runs unchanged here and on a board (tools/sim.py; `make deploy BOARD=unix`
# copies it as /profile.py, like the boards' own).
#
# Flash is a file-backed block device (4 KB blocks, erased = 0xFF) holding a
# LittleFS filesystem mounted at /flash, like a board's internal flash. It
# counts programmed bytes and erases, and survives SIGKILL (each write is
# flushed), so killing the process is a power cut.
import os
import time

import vfs

PROFILE = {
    "buf_size": 1024,
    "max_inflight": 8,
    "receive_max": 8,
    "outbox_size": 32,
    "outbox_bytes": 8192,
}
FLASH_ROOT = "/flash"
SESSION_PATH = FLASH_ROOT + "/session.dmq"
BLOCK = 4096


class FileFlash:
    """Block device on an image file (extended block protocol). With
    `torn`, a program goes to the file a few bytes at a time, each flushed,
    so that a SIGKILL can land inside it and leave it half done, as a power
    cut during a flash program does."""

    def __init__(self, path, blocks=64, torn=0):
        self.blocks = blocks
        self.torn = torn                     # bytes per write, each flushed (0: whole)
        try:
            size = os.stat(path)[6]
        except OSError:
            size = 0
        if size != blocks * BLOCK:
            with open(path, "wb") as f:
                for _ in range(blocks):
                    f.write(b"\xff" * BLOCK)
        self.f = open(path, "r+b")
        self.programmed = 0
        self.erases = 0

    def readblocks(self, n, buf, off=0):
        self.f.seek(n * BLOCK + off)
        self.f.readinto(buf)

    def writeblocks(self, n, buf, off=None):
        if off is None:                      # simple protocol: whole blocks, erase first
            for i in range(len(buf) // BLOCK):
                self.ioctl(6, n + i)
            off = 0
        self.f.seek(n * BLOCK + off)
        step = self.torn or len(buf)
        mv = memoryview(buf)
        for i in range(0, len(buf), step):
            self.f.write(mv[i:i + step])
            self.f.flush()
            if self.torn:
                time.sleep_us(50)            # a page program's time, for a cut to land in
        self.programmed += len(buf)

    def ioctl(self, op, arg):
        if op == 4:
            return self.blocks
        if op == 5:
            return BLOCK
        if op == 6:
            self.f.seek(arg * BLOCK)
            if self.torn:                    # an erase cut short leaves part of the block
                for i in range(0, BLOCK, 512):
                    self.f.write(b"\xff" * 512)
                    self.f.flush()
                    time.sleep_us(2000)
            else:
                self.f.write(b"\xff" * BLOCK)
            self.f.flush()
            self.erases += 1
            return 0
        if op == 3:
            self.f.flush()
        return 0


flash = None
ring = None


def setup(image="flash.img", blocks=64, ring_image=None, ring_blocks=16):
    """Mount the flash image at /flash (formatting a blank one); returns the
    network link (a no-op here). With ring_image, the session goes to a raw
    region of ring_blocks erase blocks in that image file instead (the
    flash ring, as an ESP32's data partition), programmed 16 bytes at a
    time so that a SIGKILL can tear a commit."""
    global flash, ring
    flash = FileFlash(image, blocks)
    if ring_image:
        ring = FileFlash(ring_image, ring_blocks, torn=16)
    try:
        vfs.mount(vfs.VfsLfs2(flash), FLASH_ROOT)
    except OSError:
        vfs.VfsLfs2.mkfs(flash)
        vfs.mount(vfs.VfsLfs2(flash), FLASH_ROOT)
    from wlan import NullLink
    return NullLink()


def session_file():
    return ring or SESSION_PATH


def flash_stats():
    dev = ring or flash
    return {"flash_programmed": dev.programmed, "flash_erases": dev.erases} if dev else {}
