# Stand-in for the `network` module an ESP32 or Pico W firmware has built
# in, for tests/mp/board_rom.py on the unix port: a station interface that
# associates at once (the host's own network carries the traffic). Only what
# boards/wlan.py and the board pages use; calls are printed as "WLAN ...".
STA_IF = 0
AP_IF = 1
STAT_IDLE = 0
STAT_GOT_IP = 1010
_hostname = "mpy"


def hostname(name=None):
    global _hostname
    if name is None:
        return _hostname
    _hostname = name
    print("WLAN hostname", name)


_country = "XX"


def country(code=None):
    global _country
    if code is None:
        return _country
    _country = code
    print("WLAN country", code)


class WLAN:
    IF_STA = STA_IF
    IF_AP = AP_IF
    PM_NONE = 0

    def __init__(self, interface=STA_IF):
        self._active = False
        self._up = False

    def active(self, *state):
        if state:
            self._active = bool(state[0])
        return self._active

    def connect(self, ssid=None, key=None, **kw):
        if not self._active:
            raise OSError("Wifi Not Started")
        print("WLAN connect", ssid)
        self._up = True

    def disconnect(self):
        self._up = False

    def isconnected(self):
        return self._up

    def status(self, *param):
        return STAT_GOT_IP if self._up else STAT_IDLE

    def config(self, *param, **kw):
        if "pm" in kw:
            print("WLAN config pm=0x%x" % kw["pm"])
        return None

    def ifconfig(self, *config):
        return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")

    def ipconfig(self, *param, **kw):
        return ("127.0.0.1", 8)
