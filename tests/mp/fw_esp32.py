# Stand-in for the `esp32` module of an ESP32 firmware, for
# tests/mp/board_rom.py on the unix port: a stock partition table, which has
# no "mqttsess" data partition (so boards/esp32/profile.py picks the file).
class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    @staticmethod
    def find(type=TYPE_APP, subtype=0xFF, label=None, block_size=4096):
        return []
