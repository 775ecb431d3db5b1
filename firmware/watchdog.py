# The example firmware's watchdog (boot.py, main.py): machine.WDT, so that a
# board whose application hangs resets itself. Off unless config.json sets
# "wdt_ms" (docs/firmware.md says how to choose it).
#
# machine.WDT cannot be stopped once started: not by Ctrl-C, not by a soft
# reset (on an ESP32 a second WDT() only takes a new timeout; on an RP2040
# 8388 ms at most). So that a console or an mpremote session (make deploy)
# is not cut short by a reset, a timer feeds it while no application runs:
#   boot.py    starts it and the timer (boot.py runs at every soft reset,
#              mpremote's included; main.py only at a normal boot);
#   main.py    stops the timer (take()) and feeds it itself: each loop
#              iteration, each step of a connect attempt (right before and
#              right after a DNS lookup: LOOKUP_MS), the Wi-Fi join;
#              at Ctrl-C or the "stop" command the timer feeds again
#              (hold()). Any other exception that ends main.py leaves it
#              unfed, a config fault before take() included (main.py
#              stops the timer): the board resets and runs the
#              application again (docs/firmware.md says why).
MIN_MS = 2000          # a session checkpoint erases flash blocks: not much less

# A broker given by name is looked up at the first connect, and again after
# three dials without a CONNACK (durable_mqtt/dial.py). The lookup blocks
# in C, where nothing feeds the watchdog: main.py feeds right before it and
# right after (it is a step of the connect of its own), so wdt_ms must
# outlast the lookup alone. Its worst case, the Wi-Fi up and no DNS server
# answering: lwIP asks a server DNS_MAX_RETRIES (4) times, 1, 1 and 2 s
# apart, and gives it up 3 s after the last ask (a 1 s DNS_TMR_INTERVAL
# tick; dns_check_entry() in lwIP's src/core/dns.c, and in esp-lwip,
# ESP-IDF's fork): 7 s per server, then it asks the next server:
#   rp2    ports/rp2/lwip_inc/lwipopts.h and extmod/lwip-include/
#          lwipopts_common.h (MicroPython 1c3c201, lwIP 77dcd25) keep
#          lwIP's defaults, DNS_MAX_SERVERS 2 and 4 retries: 14 s;
#   esp32  ESP-IDF's components/lwip/port/include/lwipopts.h sets
#          DNS_MAX_SERVERS 3 and keeps 4 retries: 21 s; and a name ending
#          in ".local" is first asked of mDNS, MDNS_QUERY_TIMEOUT_MS 5000
#          (MicroPython's ports/esp32/modsocket.c): 26 s.
# LOOKUP_MS: that 26 s, and a second for lwIP's timer to run late. An
# address (IPv4 dotted or IPv6) is never looked up, and needs no such
# bound. The RP2040's watchdog stops at 8388 ms: on a Pico W the watchdog
# needs the broker's address.
LOOKUP_MS = 27000

ms = 0                 # the timeout of the watchdog running, 0: none
_wdt = None
_timer = None


def timeout(cfg, where="config.json"):
    # cfg's "wdt_ms", checked: 0 or absent (off), else MIN_MS or more, at
    # least twice timeout_ms (a whole number of ms, checked too: a TCP
    # connect, then a TLS handshake, each up to timeout_ms, come in one
    # connect step), and LOOKUP_MS or more when the broker is a name.
    w = cfg.get("wdt_ms") or 0
    if type(w) is not int or 0 < w < MIN_MS or w < 0:
        raise ValueError("%s: wdt_ms must be 0 (off) or a whole number of ms from %d, not %r"
                         % (where, MIN_MS, cfg.get("wdt_ms")))
    t = cfg.get("timeout_ms", 5000)
    if type(t) is not int:       # (checked here for boot.py too, wdt_ms set or not)
        raise ValueError("%s: timeout_ms must be a whole number of ms, not %r" % (where, t))
    if w and 2 * t > w:
        raise ValueError("%s: wdt_ms %d needs timeout_ms %d at most (half of it), not %r"
                         % (where, w, w // 2, t))
    b = cfg.get("broker")
    if w and w < LOOKUP_MS and isinstance(b, str) and b and not _address(b):
        raise ValueError("%s: broker %r is a name, whose DNS lookup may block %d ms unfed: wdt_ms must be "
                         "%d or more (an ESP32; a Pico W's watchdog stops at 8388 ms), not %d, or give "
                         "the broker's IP address" % (where, b, LOOKUP_MS, LOOKUP_MS, w))
    return w


def _address(host):
    # Whether host is an IP address, which getaddrinfo() answers without
    # asking a DNS server: IPv4 as four dotted numbers, or IPv6 (hex digits
    # and colons). Anything else is asked of DNS ("broker.lan:1883" too).
    parts = host.split(".")
    if len(parts) == 4 and all(p.isdigit() for p in parts):
        return True
    return ":" in host and all(ch in "0123456789abcdefABCDEF:." for ch in host)


def start(w):
    # Starts machine.WDT with timeout w ms (0: none); one running already
    # takes w again. Returns it, or None (with a note where the port has
    # no machine.WDT, e.g. the unix port).
    global _wdt, ms
    if not w:
        return None
    try:
        from machine import WDT
    except ImportError:
        print("WDT: this port has no machine.WDT: running without a watchdog")
        return None
    _wdt = WDT(timeout=w)        # ValueError past the chip's maximum (RP2040: 8388 ms)
    ms = w
    return _wdt


def feed():
    if _wdt is not None:
        _wdt.feed()


def hold():
    # While no application runs (after boot.py, at Ctrl-C, after "stop"):
    # a timer feeds the watchdog, a quarter of its timeout apart.
    global _timer
    if _wdt is None or _timer is not None:
        return
    from machine import Timer
    try:
        t = Timer(-1)            # a virtual timer (RP2040, recent ESP32 firmware)
    except ValueError:
        t = Timer(0)             # older ESP32 firmware ("invalid Timer number"): hardware timer 0
    t.init(period=ms // 4, callback=_fed)
    _timer = t


def take():
    # The application feeds the watchdog from now on: the timer stops.
    global _timer
    if _timer is not None:
        _timer.deinit()
        _timer = None
    feed()


def _fed(_):
    feed()
