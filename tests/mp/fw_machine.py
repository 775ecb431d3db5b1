# Stand-in for the board's `machine` module, for tests/mp/board_rom.py on
# the unix port: deepsleep() prints and ends the run, as the reset that ends
# a deep sleep on an ESP32 would.
import sys


def deepsleep(ms=0):
    print("DEEPSLEEP", ms)
    sys.exit(0)
