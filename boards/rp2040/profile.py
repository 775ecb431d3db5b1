# durable_mqtt settings for a Raspberry Pi Pico W (RP2040) (boards/rp2040/README.md).
# `make deploy BOARD=rp2040` copies it to the board's root as /profile.py,
# where firmware/main.py imports it.
#
#   from profile import PROFILE, session_file
#   c = MQTTClient("pico-3", "broker.lan", session_file=session_file(),
#                  clean_session=False, **PROFILE)
#
# The figures behind PROFILE, and how they were measured, are in the README.
# This module imports on any port: rp2 and os are only looked for inside
# session_file().

PROFILE = {
    "buf_size": 1024,      # largest packet either way: topic + payload up to ~1000 bytes
    "max_inflight": 8,     # QoS 1/2 messages awaiting PUBACK/PUBCOMP at once
    "receive_max": 8,      # incoming QoS 1/2 the broker may have unacknowledged
    "outbox_size": 48,     # messages that wait beyond the window or while Wi-Fi is down
    "outbox_bytes": 12288, # the bytes those messages may take (encoded PUBLISH packets)
    "ring_prog_size": 256, # rp2.Flash programs whole 256-byte pages (used by a raw ring only)
}

SESSION_PATH = "/session.dmq"     # on the LittleFS mounted at /
# Wi-Fi power management for WLANLink (firmware/main.py): power saving off
# (the CYW43's default with its mode bits 0, the value of Raspberry Pi's
# Pico W guide; the README's bring-up uses network.WLAN.PM_NONE to the same
# end): power saving delays the broker's replies, PINGRESP timeouts.
WLAN_PM = 0xA11140
# A raw ring needs flash the filesystem does not use. Stock firmware gives
# the whole storage area to the filesystem (rp2.Flash() is all of it), so
# RING_START stays None (a file) unless your firmware mounts a smaller
# filesystem and leaves the end of the storage area free: see the README.
RING_START = None                 # byte offset inside rp2.Flash(), a multiple of 4096
RING_LEN = 64 * 1024


def session_file(path=SESSION_PATH, ring_start=RING_START, ring_len=RING_LEN):
    """Where the session lives: rp2.Flash(start=ring_start, len=ring_len)
    when a region was reserved for it, else the file `path`. Refuses a
    region that overlaps the mounted filesystem: the ring would destroy it."""
    if ring_start is None:
        return path
    try:
        import rp2
    except ImportError:            # not an RP2040 (e.g. the unix port in tests)
        return path
    import os
    st = os.statvfs("/")
    fs_end = st[1] * st[2]         # fragment size * blocks: the end of a filesystem at offset 0
    if ring_start < fs_end:
        raise ValueError("ring at %d overlaps the filesystem (%d bytes from 0)" % (ring_start, fs_end))
    return rp2.Flash(start=ring_start, len=ring_len)
