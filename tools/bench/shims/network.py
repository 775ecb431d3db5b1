# Minimal `network` shim so micropython-mqtt (mqtt_async, an mqtt_as
# derivative) runs on the MicroPython unix port, which has no `network`
# module. The host is always "on the LAN": the station interface reports
# itself active and connected, so the library skips its Wi-Fi bring-up and
# goes straight to the TCP connect. Only the names mqtt_async touches exist.
# Used by `make bench` only (tools/bench/run.py puts this folder on
# MICROPYPATH for that client); never installed on a board.
STA_IF = 0
STAT_CONNECTING = 1001   # esp32 values; the library only compares against it
STAT_GOT_IP = 1010


class WLAN:
    def __init__(self, interface=STA_IF):
        pass

    def active(self, *state):
        return True

    def isconnected(self):
        return True

    def status(self, *param):
        return STAT_GOT_IP

    def connect(self, *args, **kwargs):
        pass

    def disconnect(self):
        pass
