"""tools/faultproxy.py: each fault as a client sees it, against a tiny echo
server started here and against the private mosquitto (raw MQTT 3.1.1 bytes
from CPython sockets), plus random-mode determinism, stop() and the CLI."""
import json
import pathlib
import socket
import subprocess
import sys
import threading
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "faultproxy.py"
sys.path.insert(0, str(TOOL.parent))

from faultproxy import FaultProxy, parse_range, parse_script  # noqa: E402


# ---------------------------------------------------------------- helpers

class Upstream:
    """A loopback server in threads: 'echo' returns what it gets, 'flood'
    sends data without end (to fill a client that does not read)."""

    def __init__(self, mode="echo"):
        self.mode = mode
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.conns = []
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)
            threading.Thread(target=getattr(self, "_" + self.mode), args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn):
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                conn.sendall(data)
        except OSError:
            pass
        conn.close()

    @staticmethod
    def _flood(conn):
        block = b"x" * 65536
        try:
            while True:
                conn.sendall(block)
        except OSError:
            pass

    def close(self):
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        for conn in self.conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()


@pytest.fixture
def echo():
    server = Upstream("echo")
    yield server
    server.close()


@pytest.fixture
def make_proxy():
    proxies = []

    def make(port, **kwargs):
        proxy = FaultProxy(upstream=("127.0.0.1", port), **kwargs).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


_client_sockets = []


@pytest.fixture(autouse=True)
def _close_client_sockets():
    yield
    while _client_sockets:
        _client_sockets.pop().close()


def connect(port, timeout=2.0):
    """A client socket, closed by the end of the test."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    _client_sockets.append(sock)
    sock.settimeout(timeout)
    return sock


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        more = sock.recv(n - len(data))
        if not more:
            raise ConnectionError("closed after %d of %d bytes" % (len(data), n))
        data += more
    return data


def read_until_closed(sock, timeout=2.0):
    """(bytes received, 'eof' or 'reset'); a read timeout fails the test."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            more = sock.recv(4096)
        except ConnectionResetError:
            return data, "reset"
        if not more:
            return data, "eof"
        data += more


def send_ignoring_reset(sock, data):
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def is_refused(port):
    """True if a new connection to `port` is reset or closed, whether that
    shows at connect(), send() or recv()."""
    try:
        sock = connect(port)
    except ConnectionResetError:
        return True
    with sock:
        send_ignoring_reset(sock, b"hi")
        return read_until_closed(sock)[0] == b""


def wait_for(condition, timeout=3.0):
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.01)


def proxy_threads(proxy):
    prefix = "faultproxy:%d:" % proxy.port
    return [t for t in threading.enumerate() if t.name.startswith(prefix) and t.is_alive()]


# ---------------------------------------------------------------- MQTT 3.1.1 by hand

def remaining_length(n):
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(first_byte, body):
    return bytes([first_byte]) + remaining_length(len(body)) + body


def mqtt_string(text):
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def connect_packet(client_id):
    # protocol name "MQTT", level 4 (3.1.1), flags 0x02 clean session, keepalive 60 s
    return packet(0x10, b"\x00\x04MQTT\x04\x02\x00\x3c" + mqtt_string(client_id))


def subscribe_packet(topic, packet_id=1):
    # MQTT-3.8.1-1: SUBSCRIBE fixed header flags are 0b0010
    return packet(0x82, packet_id.to_bytes(2, "big") + mqtt_string(topic) + b"\x00")


def publish_packet(topic, payload):
    return packet(0x30, mqtt_string(topic) + payload)  # QoS 0: no packet id


PINGREQ = b"\xc0\x00"
PINGRESP = b"\xd0\x00"
CONNACK_ACCEPTED = b"\x20\x02\x00\x00"


def read_packet(sock):
    first = recv_exact(sock, 1)
    length, shift = 0, 0
    while True:
        byte = recv_exact(sock, 1)[0]
        first += bytes([byte])
        length += (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            break
    return first + recv_exact(sock, length)


def mqtt_session(port, client_id):
    sock = connect(port)
    sock.sendall(connect_packet(client_id))
    assert read_packet(sock) == CONNACK_ACCEPTED
    return sock


# ---------------------------------------------------------------- echo upstream

def test_passthrough_counts_bytes_and_connections(echo, make_proxy):
    proxy = make_proxy(echo.port)
    with connect(proxy.port) as sock:
        sock.sendall(b"hello")
        assert recv_exact(sock, 5) == b"hello"
    stats = proxy.stats()
    assert (stats["connections"], stats["bytes_up"], stats["bytes_down"]) == (1, 5, 5)
    assert stats["faults_total"] == 0


def test_clean_close_passes_through_as_eof(echo, make_proxy):
    proxy = make_proxy(echo.port)
    sock = connect(proxy.port)
    sock.sendall(b"bye")
    sock.shutdown(socket.SHUT_WR)
    assert read_until_closed(sock) == (b"bye", "eof")
    wait_for(lambda: proxy.stats()["active"] == 0)
    assert proxy.stats()["faults_total"] == 0


def test_blackhole_hides_the_fin_until_it_ends(echo, make_proxy):
    proxy = make_proxy(echo.port)
    sock = connect(proxy.port, timeout=0.3)
    proxy.blackhole("up")
    sock.shutdown(socket.SHUT_WR)
    with pytest.raises(socket.timeout):
        sock.recv(10)
    proxy.resume()
    assert read_until_closed(sock) == (b"", "eof")


def test_drop_all_resets_both_sides(echo, make_proxy):
    proxy = make_proxy(echo.port)
    sock = connect(proxy.port)
    sock.sendall(b"ping")
    recv_exact(sock, 4)
    assert proxy.drop_all() == 1
    assert read_until_closed(sock) == (b"", "reset")
    assert proxy.stats()["faults"]["drop"] == 1


def test_stall_holds_data_then_delivers_in_order(echo, make_proxy):
    proxy = make_proxy(echo.port)
    sock = connect(proxy.port, timeout=0.3)
    proxy.stall("up")
    sock.sendall(b"one")
    sock.sendall(b"two")
    with pytest.raises(socket.timeout):
        sock.recv(10)
    proxy.resume()
    sock.settimeout(2)
    assert recv_exact(sock, 6) == b"onetwo"


def test_stall_with_seconds_ends_by_itself(echo, make_proxy):
    proxy = make_proxy(echo.port)
    sock = connect(proxy.port)
    proxy.stall("down", seconds=0.3)
    started = time.monotonic()
    sock.sendall(b"late")
    assert recv_exact(sock, 4) == b"late"
    assert time.monotonic() - started >= 0.25


def test_blackhole_discards_silently(echo, make_proxy):
    proxy = make_proxy(echo.port)
    sock = connect(proxy.port, timeout=0.3)
    proxy.blackhole("up")
    sock.sendall(b"lost")
    with pytest.raises(socket.timeout):
        sock.recv(10)
    proxy.resume("up")
    sock.settimeout(2)
    sock.sendall(b"kept")
    assert recv_exact(sock, 4) == b"kept"
    assert proxy.stats()["discarded_up"] == 4


def test_cut_next_forwards_a_prefix_then_resets(echo, make_proxy):
    proxy = make_proxy(echo.port)
    sock = connect(proxy.port)
    proxy.cut_next("down", keep_bytes=3)
    sock.sendall(b"0123456789")
    assert read_until_closed(sock) == (b"012", "reset")
    cut = proxy.event_log(kinds=("cut",))
    assert [(e["dir"], e["keep"]) for e in cut] == [("down", 3)]


def test_cut_budget_spans_chunks(echo, make_proxy):
    proxy = make_proxy(echo.port)
    sock = connect(proxy.port)
    proxy.cut_next("up", keep_bytes=6)
    sock.sendall(b"abcd")
    assert recv_exact(sock, 4) == b"abcd"
    sock.sendall(b"efgh")
    data, how = read_until_closed(sock)
    assert b"abcd" + data in (b"abcd", b"abcdef")   # echo of "ef" may lose the race with the RST
    assert how == "reset"


def test_refuse_reset_then_accept_again(echo, make_proxy):
    proxy = make_proxy(echo.port)
    proxy.refuse = True
    assert is_refused(proxy.port)
    assert echo.accepted == 0 and proxy.stats()["faults"]["refuse"] == 1
    proxy.refuse = False
    with connect(proxy.port) as sock:
        sock.sendall(b"hi")
        assert recv_exact(sock, 2) == b"hi"


def test_refuse_hang_leaves_connections_in_the_backlog(echo, make_proxy):
    proxy = make_proxy(echo.port)
    proxy.refuse = "hang"
    sock = connect(proxy.port, timeout=0.3)   # the kernel completes the handshake
    sock.sendall(b"wait")
    with pytest.raises(socket.timeout):
        sock.recv(10)
    proxy.refuse = False
    sock.settimeout(2)
    assert recv_exact(sock, 4) == b"wait"


def test_delay_adds_latency_each_way(echo, make_proxy):
    proxy = make_proxy(echo.port)
    proxy.delay_ms = 150
    sock = connect(proxy.port)
    started = time.monotonic()
    sock.sendall(b"slow")
    recv_exact(sock, 4)
    assert time.monotonic() - started >= 0.29      # up chunk + down chunk


def test_throttle_caps_the_rate(echo, make_proxy):
    proxy = make_proxy(echo.port)
    proxy.throttle_bps = 4000
    sock = connect(proxy.port)
    started = time.monotonic()
    sock.sendall(b"z" * 2000)
    recv_exact(sock, 2000)
    assert time.monotonic() - started >= 0.45      # 2000 B at 4000 B/s


def test_script_runs_timed_actions(echo, make_proxy):
    proxy = make_proxy(echo.port)
    sock = connect(proxy.port)
    # (Timed from before run_script(), whose steps count from its call: timed
    # from the send, a loaded machine's late sleep() took up to 0.13 s of the
    # 0.4 s and the echo came "early", 0.27 s after it.)
    started = time.monotonic()
    proxy.run_script([(0.0, "stall", None, "up"), (0.4, "resume")])
    time.sleep(0.05)
    sock.sendall(b"queued")
    assert recv_exact(sock, 6) == b"queued"
    assert time.monotonic() - started >= 0.4
    assert [e["cause"] for e in proxy.event_log(kinds=("stall",))] == ["script"]


def test_parse_script_and_ranges():
    assert parse_script("0.5:drop, 1:stall=2@up,3:cut=5,4:refuse=hang,5:throttle=100") == [
        (0.5, "drop", None, None), (1.0, "stall", 2.0, "up"), (3.0, "cut", 5, None),
        (4.0, "refuse", "hang", None), (5.0, "throttle", 100.0, None)]
    assert parse_range("0.2-1.5") == (0.2, 1.5) and parse_range("2") == (2.0, 2.0)
    for bad in ("1:explode", "drop", "1:stall@sideways", "-1:drop"):
        with pytest.raises(ValueError):
            parse_script(bad)


def test_only_loopback_addresses_are_accepted():
    with pytest.raises(ValueError):
        FaultProxy(upstream=("10.1.2.3", 1883))
    with pytest.raises(ValueError):
        FaultProxy(upstream=("127.0.0.1", 1883), listen=("0.0.0.0", 0))


# ---------------------------------------------------------------- random mode

def lockstep_faults(seed, rounds=80):
    """Echo `rounds` 8-byte messages one at a time through a proxy with
    per-chunk random faults, reconnecting after each fault; return the
    random faults as (kind, connection, direction, chunk)."""
    server = Upstream("echo")
    proxy = FaultProxy(upstream=("127.0.0.1", server.port)).start()
    proxy.random_faults(seed, drop_prob=0.05, cut_prob=0.05, stall_prob=0.05,
                        stall_for=(0.01, 0.03), max_faults=10)
    sock = None
    try:
        for i in range(rounds):
            sock = sock or connect(proxy.port)
            message = b"msg%05d" % i
            send_ignoring_reset(sock, message)
            data, how = b"", None
            while len(data) < 8 and how is None:
                try:
                    more = sock.recv(8 - len(data))
                except ConnectionResetError:
                    more = b""
                how = None if more else "closed"
                data += more
            if how:
                sock.close()
                sock = None
        return [(e["event"], e["conn"], e["dir"], e["chunk"])
                for e in proxy.event_log() if e.get("cause") == "random"], proxy.stats()
    finally:
        if sock:
            sock.close()
        proxy.stop()
        server.close()


def test_random_chunk_faults_repeat_for_the_same_seed():
    first, stats = lockstep_faults(7)
    second, _ = lockstep_faults(7)
    other, _ = lockstep_faults(8)
    assert first == second
    assert first != other
    assert {kind for kind, *_ in first} == {"drop", "cut", "stall"}
    assert len(first) == stats["faults_total"] == 10       # bounded by max_faults


def test_timed_random_drops_stop_at_max_faults(echo, make_proxy):
    proxy = make_proxy(echo.port, seed=3)
    proxy.random_faults(drop_every=(0.02, 0.05), max_faults=3)
    time.sleep(0.5)
    assert proxy.stats()["faults"]["drop"] == 3


def test_timed_random_intervals_repeat_for_the_same_seed(echo, make_proxy):
    def cut_sequence(seed):
        proxy = make_proxy(echo.port)
        proxy.random_faults(seed, cut_every=(0.01, 0.02), max_faults=5, direction="both")
        time.sleep(0.3)
        return [(e["dir"], e["keep"]) for e in proxy.event_log(kinds=("cut_armed",))]

    first = cut_sequence(11)
    assert len(first) == 5 and first == cut_sequence(11)


def test_timed_random_cut_truncates_the_next_chunk(echo, make_proxy):
    proxy = make_proxy(echo.port, seed=5)
    sock = connect(proxy.port)
    proxy.random_faults(cut_every=0.01, cut_keep=(2, 2), direction="down", max_faults=1)
    wait_for(lambda: proxy.event_log(kinds=("cut_armed",)))
    sock.sendall(b"0123456789")
    assert read_until_closed(sock) == (b"01", "reset")
    assert [e["cause"] for e in proxy.event_log(kinds=("cut",))] == ["random"]
    assert proxy.stats()["seed"] == 5


# ---------------------------------------------------------------- stop()

def test_stop_is_prompt_and_leaves_no_thread(make_proxy):
    flood = Upstream("flood")
    try:
        proxy = make_proxy(flood.port)
        proxy.random_faults(seed=1, drop_every=(5, 6))
        blocked_in_send = connect(proxy.port)          # never read: the down pump blocks
        stalled = connect(proxy.port)
        proxy.stall("up")
        stalled.sendall(b"held")
        # accept, random-drop timer, and an up and a down pump per connection
        wait_for(lambda: len(proxy_threads(proxy)) == 6)
        time.sleep(0.1)                                  # let the flood fill the buffers
        started = time.monotonic()
        proxy.stop()
        assert time.monotonic() - started < 1.0
        assert proxy_threads(proxy) == []
        assert read_until_closed(stalled)[1] == "reset"
        blocked_in_send.close()
    finally:
        flood.close()


# ---------------------------------------------------------------- real broker

def test_mqtt_drop_is_seen_as_a_closed_connection(broker, make_proxy):
    proxy = make_proxy(broker.port)
    sock = mqtt_session(proxy.port, "fp-drop")
    proxy.drop_all()
    assert read_until_closed(sock) == (b"", "reset")
    with pytest.raises(OSError):
        sock.sendall(PINGREQ)


def test_mqtt_stall_is_seen_as_a_read_timeout(broker, make_proxy):
    proxy = make_proxy(broker.port)
    sock = mqtt_session(proxy.port, "fp-stall")
    proxy.stall("down")
    sock.sendall(PINGREQ)
    sock.settimeout(0.5)
    with pytest.raises(socket.timeout):
        sock.recv(10)
    proxy.resume()
    sock.settimeout(2)
    assert read_packet(sock) == PINGRESP


def test_mqtt_cut_mid_packet_gives_a_truncated_publish_then_close(broker, make_proxy):
    proxy = make_proxy(broker.port)
    subscriber = mqtt_session(proxy.port, "fp-cut-sub")
    subscriber.sendall(subscribe_packet("fp/cut"))
    assert read_packet(subscriber) == b"\x90\x03\x00\x01\x00"   # SUBACK, granted QoS 0
    proxy.cut_next("down", keep_bytes=6)
    publisher = connect(broker.port)
    publisher.sendall(connect_packet("fp-cut-pub"))
    assert read_packet(publisher) == CONNACK_ACCEPTED
    publish = publish_packet("fp/cut", b"p" * 40)
    publisher.sendall(publish)
    data, how = read_until_closed(subscriber)
    assert data == publish[:6] and len(data) < len(publish)     # header says 48, we got 4 of them
    assert how == "reset"


def test_mqtt_refuse_is_seen_as_a_reset(broker, make_proxy):
    proxy = make_proxy(broker.port)
    proxy.refuse = True
    try:
        sock = connect(proxy.port)
        send_ignoring_reset(sock, connect_packet("fp-refuse"))
        assert read_until_closed(sock)[0] == b""
    except ConnectionResetError:
        pass                                      # the RST beat connect() home
    assert proxy.stats()["faults"]["refuse"] == 1


def test_mqtt_delay_adds_latency(broker, make_proxy):
    proxy = make_proxy(broker.port)
    proxy.delay_ms = 100
    started = time.monotonic()
    mqtt_session(proxy.port, "fp-delay")
    assert time.monotonic() - started >= 0.19      # CONNECT up + CONNACK down


# ---------------------------------------------------------------- command line

def run_tool(*args, **kwargs):
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True,
                          timeout=10, **kwargs)


def test_cli_help_exits_zero():
    result = run_tool("--help")
    assert result.returncode == 0
    assert "--script" in result.stdout and "--drop-every" in result.stdout


def test_cli_prints_stats_on_sigterm(echo):
    proc = subprocess.Popen([sys.executable, str(TOOL), "--upstream", "127.0.0.1:%d" % echo.port, "--json"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("listening 127.0.0.1:")
        proc.terminate()
        out, _ = proc.communicate(timeout=5)
    finally:
        proc.kill()
    assert proc.returncode == 0 and json.loads(out)["connections"] == 0


def test_cli_rejects_a_non_loopback_upstream():
    result = run_tool("--upstream", "10.1.2.3:1883", "--duration", "0.1")
    assert result.returncode == 2 and "loopback" in result.stderr


def test_cli_runs_for_its_duration_and_prints_json_stats(echo):
    proc = subprocess.Popen([sys.executable, str(TOOL), "--listen", "127.0.0.1:0",
                             "--upstream", "127.0.0.1:%d" % echo.port, "--duration", "1", "--json"],
                            stdout=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline().split()
        assert first[0] == "listening"
        port = int(first[1].rpartition(":")[2])
        with connect(port) as sock:
            sock.sendall(b"ping")
            assert recv_exact(sock, 4) == b"ping"
        assert proc.wait(timeout=5) == 0
        stats = json.loads(proc.stdout.read().strip().splitlines()[-1])
    finally:
        proc.kill()
        proc.stdout.close()
    assert stats["connections"] == 1 and stats["bytes_up"] == 4 and stats["bytes_down"] == 4


def test_cli_random_mode_prints_a_summary(echo):
    result = run_tool("--upstream", "127.0.0.1:%d" % echo.port, "--seed", "7", "--drop-every", "0.05-0.1",
                      "--max-faults", "2", "--script", "0.1:stall=0.1", "--duration", "0.5")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("listening 127.0.0.1:")
    assert "faults total=3 drop=2 stall=1" in result.stdout
