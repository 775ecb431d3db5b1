# Stand-in for the board's `socket` module, for tests/mp/board_rom.py on the
# unix port: the built-in one, with a getaddrinfo() that stalls as lwIP's
# does when the Wi-Fi is up and no DNS server answers (up to 26 s on an
# ESP32: firmware/watchdog.py), then answers 127.0.0.1 (the port asked).
# The stall is FW_DNS_STALL_MS (an environment variable), in one sleep: a
# lookup blocks in C, where nothing can feed a watchdog. Each lookup prints
# "DNS <name> unfed_ms <n>": how long fw_machine's watchdog had gone unfed
# when it began (-1: no watchdog).
import os
import sys
import time
from usocket import *  # noqa: F401,F403  (everything else: the built-in module's)
import usocket

_stall = int(os.getenv("FW_DNS_STALL_MS") or "0")


def getaddrinfo(host, port, *a):
    w = getattr(sys.modules.get("fw_machine"), "_wdt", None)
    print("DNS", host, "unfed_ms", -1 if w is None else time.ticks_diff(time.ticks_ms(), w.last))
    time.sleep_ms(_stall)
    return usocket.getaddrinfo("127.0.0.1", port, *a)
