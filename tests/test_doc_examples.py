"""The first script of each getting-started page, run as a user runs it: its
`main.py` block taken from the page, on a board laid out as a directory
(tests/mp/board_rom.py: that directory is "/", a board's sys.path, the
board's own profile.py in /lib), against mosquitto. The only edits are the
broker's address and port (and, for one test, the protocol version), made
where the page says "BROKER", and a client id of its own per test; each is
checked to have happened.

What a new user meets in the first hour: the session and its events survive
a kill -9 (the events the constructor raises reach the page's on_event),
and the page's reconnect loop recovers from SessionError, the MQTT 5 answer
to a device that lost its session file (without the recovery it would fail
the same way for ever).

Also run: the ESP32 page's deep-sleep variant, wake after wake, and the
worked example of docs/session-format.md against the bytes it shows."""
import re
import shutil
import subprocess
import time

import pytest

from conftest import MICROPYTHON, MP_HELPERS, ROOT, mp_env

PAGES = {"esp32": "docs/getting-started-esp32.md", "rp2040": "docs/getting-started-pico-w.md"}
STAND_INS = {"esp32": ["network=fw_network", "esp32=fw_esp32"], "rp2040": ["network=fw_network"]}


def first_script(page):
    text = (ROOT / page).read_text()
    m = re.search(r"```python\n(# main\.py:.*?)```", text, re.S)
    assert m, "no main.py block in " + page
    return m.group(1)


def lay_out(tmp_path, board, port, version=None):
    root = tmp_path / "board"
    shutil.rmtree(root, ignore_errors=True)
    (root / "lib").mkdir(parents=True)
    shutil.copytree(ROOT / "lib" / "durable_mqtt", root / "lib" / "durable_mqtt",
                    ignore=shutil.ignore_patterns("*.pyi", "__pycache__"))
    shutil.copy(ROOT / "boards" / board / "profile.py", root / "lib" / "profile.py")
    src, n = re.subn(r'BROKER = "[^"]*"', 'BROKER = "127.0.0.1"', first_script(PAGES[board]))
    assert n == 1, "the page's BROKER line changed"
    # One id per test: the broker is shared and keeps sessions.
    src, n = re.subn(r'CLIENT_ID = "([^"]*)"', r'CLIENT_ID = "\1-%s"' % tmp_path.name[-12:], src)
    assert n == 1, "the page's CLIENT_ID line changed"
    extra = "%d, version=%d," % (port, version) if version else "%d," % port
    src, n = re.subn(r"MQTTClient\(CLIENT_ID, BROKER,", "MQTTClient(CLIENT_ID, BROKER, " + extra, src)
    assert n == 1, "the page's MQTTClient(...) line changed"
    (root / "main.py").write_text(src)
    return root


def power_on(root, board, tmp_path):
    return subprocess.Popen([MICROPYTHON, str(MP_HELPERS / "board_rom.py"), str(root)] + STAND_INS[board],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(mp_env(()), MICROPYPATH="%s:.frozen" % MP_HELPERS), cwd=tmp_path)


def run_until(proc, needle, timeout=20):
    """Output of the board until a line holds `needle`; then the board is
    killed (SIGKILL, as a power cut stops it)."""
    out = []
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            line = proc.stdout.readline()
            if not line:
                break
            out.append(line)
            if needle in line:
                return "".join(out)
        raise AssertionError("no %r from the board:\n%s" % (needle, "".join(out)))
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("board", sorted(PAGES))
def test_first_script_resumes_after_a_kill_and_shows_its_events(broker, tmp_path, board):
    root = lay_out(tmp_path, board, broker.port)
    first = run_until(power_on(root, board, tmp_path), "queued 0")
    assert "messages restored" in first and "session: new" in first, first
    assert (root / "session.dmq.d" / "h").exists(), sorted(p.name for p in root.iterdir())
    second = run_until(power_on(root, board, tmp_path), "queued 0")
    assert "session: resumed" in second, second
    # A session that cannot be used is reported through the page's on_event,
    # though the constructor found it before any other line of main.py ran.
    (root / "session.dmq.d" / "h").write_bytes(b"not a session")
    third = run_until(power_on(root, board, tmp_path), "queued 0")
    assert "session: discarded" in third, third
    assert (root / "session.dmq.d.bad" / "h").read_bytes() == b"not a session"     # kept for inspection


@pytest.mark.parametrize("board", sorted(PAGES))
def test_first_script_loop_recovers_from_session_error(broker, tmp_path, board):
    """MQTT 5: the broker keeps the session, the board loses its session
    file. The broker answers Session Present 1 to a client with no state,
    which must close the connection (MQTT-3.2.2-4): SessionError. The page's
    loop starts a fresh session and goes on publishing."""
    root = lay_out(tmp_path, board, broker.port, version=5)
    run_until(power_on(root, board, tmp_path), "queued 0")
    shutil.rmtree(root / "session.dmq.d")               # the flash was wiped
    again = run_until(power_on(root, board, tmp_path), "queued 0")
    assert "connect failed" not in again, again        # recovered inside the loop, at once
    assert "session: new" in again, again
    assert (root / "session.dmq.d" / "h").exists()


def test_session_format_worked_example_makes_the_bytes_it_shows():
    """docs/session-format.md's worked example, run as printed: its state is
    the hex dump under it, byte for byte, and the CRC check it gives holds."""
    import binascii
    import zlib
    from conftest import run_mp
    text = (ROOT / "docs" / "session-format.md").read_text()
    part = text[text.index("## Worked example"):]
    m = re.search(r"```python\n(.*?)```\n+```\n(.*?)```", part, re.S)
    assert m, "no example and dump in the Worked example section"
    out = run_mp(m.group(1) + "\nimport binascii\nprint(binascii.hexlify(state).decode())\n").stdout
    made = bytes.fromhex(out.split()[-1])
    shown = bytes.fromhex("".join(line[10:57] for line in m.group(2).splitlines()))
    assert made == shown, (binascii.hexlify(made), binascii.hexlify(shown))
    crc = re.search(r"zlib\.crc32\(state\[5:26\]\) == (0x[0-9A-Fa-f]+)", part)
    assert crc and zlib.crc32(made[5:26]) == int(crc.group(1), 16)


def watch(tmp_path, port):
    """A watcher's persistent subscription to the readings, made now."""
    from conftest import run_mp
    run_mp(r"""
from durable_mqtt import MQTTClient
w = MQTTClient("watch-%s", "127.0.0.1", %d, clean_session=False)
w.connect()
w.subscribe("sleeper/reading", 1)
w.disconnect()
""" % (tmp_path.name[-12:], port))


def watched(tmp_path, port):
    """What the watcher's session received since, sorted (its output)."""
    from conftest import run_mp
    return run_mp(r"""
from durable_mqtt import MQTTClient
got = []
w = MQTTClient("watch-%s", "127.0.0.1", %d, clean_session=False)
w.set_callback(lambda t, m, r, q: got.append(bytes(m)))
w.connect()
while w.wait_msg(300) is not None:
    pass
print(sorted(got))
""" % (tmp_path.name[-12:], port)).stdout


def deep_sleep_board(tmp_path, port, profile=None):
    """The ESP32 page's deep-sleep main.py on a board directory, as typed
    but for the broker, the client id and the two helpers it leaves to the
    reader (profile: a profile.py of one's own, else the ESP32 one's).
    Returns wake(n): one wake reading "reading n", its output."""
    text = (ROOT / PAGES["esp32"]).read_text()
    m = re.search(r"```python\n(# main\.py, deep-sleep variant:.*?)```", text, re.S)
    assert m, "no deep-sleep block in " + PAGES["esp32"]
    src, n = re.subn(r'BROKER = "[^"]*"', 'BROKER = "127.0.0.1"', m.group(1))
    assert n == 1
    src, n = re.subn(r'CLIENT_ID = "([^"]*)"', r'CLIENT_ID = "\1-%s"' % tmp_path.name[-12:], src)
    assert n == 1
    src, n = re.subn(r"MQTTClient\(CLIENT_ID, BROKER,", "MQTTClient(CLIENT_ID, BROKER, %d," % port, src)
    assert n == 1
    helpers = "def wifi_up():\n    pass\ndef read_sensor():\n    return open('/wake').read()\n"
    root = tmp_path / "board"
    (root / "lib").mkdir(parents=True)
    shutil.copytree(ROOT / "lib" / "durable_mqtt", root / "lib" / "durable_mqtt",
                    ignore=shutil.ignore_patterns("*.pyi", "__pycache__"))
    if profile:
        (root / "lib" / "profile.py").write_text(profile)
    else:
        shutil.copy(ROOT / "boards" / "esp32" / "profile.py", root / "lib" / "profile.py")
    (root / "main.py").write_text(helpers + src)

    def wake(n):
        (root / "wake").write_text("reading %d" % n)
        p = subprocess.Popen([MICROPYTHON, str(MP_HELPERS / "board_rom.py"), str(root),
                              "network=fw_network", "esp32=fw_esp32", "machine=fw_machine"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=dict(mp_env(()), MICROPYPATH="%s:.frozen" % MP_HELPERS), cwd=tmp_path)
        out = p.communicate(timeout=30)[0]
        assert "DEEPSLEEP 60000" in out, out
        return out
    return wake


def test_deep_sleep_variant_sends_each_wake_and_takes_what_came_while_asleep(broker, tmp_path):
    """The ESP32 page's deep-sleep main.py, as typed but for the broker, the
    client id and the two helpers it leaves to the reader: every wake's
    reading reaches the broker, a command sent while the board slept
    arrives at the next wake, and each wake ends in machine.deepsleep()."""
    from conftest import run_mp
    wake = deep_sleep_board(tmp_path, broker.port)
    watch(tmp_path, broker.port)

    assert "offline" not in wake(1)
    run_mp(r"""
from durable_mqtt import MQTTClient
p = MQTTClient("cmd-%s", "127.0.0.1", %d)
p.connect()
p.publish("sleeper/cmd", b"led=on", qos=1)
assert p.flush(5000)
p.disconnect()
""" % (tmp_path.name[-12:], broker.port))
    out = wake(2)
    assert "command: b'sleeper/cmd' b'led=on'" in out and "offline" not in out, out
    got = watched(tmp_path, broker.port)
    assert "[b'reading 1', b'reading 2']" in got, got


def test_deep_sleep_variant_sleeps_on_with_a_full_outbox_and_sends_it_once_back(broker, tmp_path):
    """The deep-sleep main.py while the broker is out of reach: each wake
    keeps its reading until the outbox is full (here 2 places); then
    publish() raises QueueFull. Uncaught (the page's first version), it
    stopped every later wake before connect(): the board never slept again
    and the readings on flash never went. Caught, the wake sleeps, and the
    first wake that reaches the broker sends what was kept."""
    from conftest import run_mp
    from testbroker import free_port
    down = free_port()                     # nothing listens there: the broker out of reach
    profile = 'PROFILE = {"max_inflight": 1, "outbox_size": 1}\ndef session_file():\n    return "/session.dmq"\n'
    wake = deep_sleep_board(tmp_path, down, profile)
    for n in (1, 2):
        out = wake(n)
        assert "offline" in out and "not kept" not in out, out
    out = wake(3)
    assert "not kept: " in out and "outbox full" in out and "offline" in out, out
    # The broker is back (its port in main.py).
    main = tmp_path / "board" / "main.py"
    main.write_text(main.read_text().replace(", %d," % down, ", %d," % broker.port))
    watch(tmp_path, broker.port)
    out = wake(4)
    assert "not kept" in out and "offline" not in out, out      # the outbox was full at its publish()
    out = wake(5)
    assert "not kept" not in out and "offline" not in out, out
    got = watched(tmp_path, broker.port)
    assert "[b'reading 1', b'reading 2', b'reading 5']" in got, got
