# durable_mqtt settings for an ESP32 without PSRAM (boards/esp32/README.md).
# `make deploy BOARD=esp32` copies it to the board's root as /profile.py,
# where firmware/main.py imports it.
#
#   from profile import PROFILE, session_file
#   c = MQTTClient("sensor-17", "broker.lan", session_file=session_file(),
#                  clean_session=False, **PROFILE)
#
# The figures behind PROFILE, and how they were measured, are in the README.
# This module imports on any port: the esp32 module is only looked for
# inside session_file().

PROFILE = {
    "buf_size": 1024,      # largest packet either way: topic + payload up to ~1000 bytes
    "max_inflight": 8,     # QoS 1/2 messages awaiting PUBACK/PUBCOMP at once
    "receive_max": 8,      # incoming QoS 1/2 the broker may have unacknowledged
    "outbox_size": 32,     # messages that wait beyond the window or while Wi-Fi is down
    "outbox_bytes": 8192,  # the bytes those messages may take (encoded PUBLISH packets)
}

SESSION_PATH = "/session.dmq"     # on the LittleFS mounted at /
PARTITION_LABEL = "mqttsess"      # a raw data partition, if the partition table has one


def session_file(label=PARTITION_LABEL, path=SESSION_PATH):
    """Where the session lives: the raw data partition `label` when the
    partition table has one (the log-structured ring, the cheaper store in
    flash wear), else the file `path` on the filesystem."""
    try:
        from esp32 import Partition
    except ImportError:            # not an ESP32 (e.g. the unix port in tests)
        return path
    found = Partition.find(Partition.TYPE_DATA, label=label)
    return found[0] if found else path
