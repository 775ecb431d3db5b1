#!/usr/bin/env python3
"""faultproxy: a fault-injecting TCP proxy for testing MQTT clients on loopback.

It sits between a client and a broker on this machine and, on command, on a
timetable or at random, does to the TCP connection what a flaky Wi-Fi link does:

  drop       reset both sides of every open connection now (RST, not FIN)
  stall      stop forwarding one or both directions and hold the data; it is
             delivered in order on resume() or after `seconds`
  blackhole  stop forwarding and silently discard what arrives meanwhile
             (a FIN is hidden too, until the blackhole ends)
  cut        forward only the next `keep_bytes` bytes in one direction, then
             reset: the peer sees a truncated MQTT packet, then a dead socket
  refuse     "reset": accept new connections and reset them at once;
             "hang": stop accepting, so they wait in the listen backlog
  delay      wait `delay_ms` (plus up to `jitter_ms`) before forwarding a chunk
  throttle   cap each direction of each connection at `throttle_bps` bytes/s

"up" is client -> broker, "down" is broker -> client. A chunk is what one
recv() returned. Only loopback addresses are accepted, for listening and for
the upstream: test traffic never leaves the machine.

Library (CPython 3.11, stdlib only):

    from faultproxy import FaultProxy
    p = FaultProxy(upstream=("127.0.0.1", broker_port)).start()
    sock = socket.create_connection(("127.0.0.1", p.port))
    p.stall("down", seconds=2)          # the client's reads time out for 2 s
    p.cut_next("down", keep_bytes=3)    # next packet to the client is cut
    p.drop_all()                        # both sides get ECONNRESET
    p.refuse = True                     # new connections are reset
    p.delay_ms, p.jitter_ms, p.throttle_bps = 50, 20, 4000
    p.random_faults(seed=7, drop_prob=0.02, drop_every=(0.2, 1.5), max_faults=5)
    p.run_script([(0.5, "drop"), (1.0, "stall", 2.0), (4.0, "cut", 5, "up")])
    print(p.stats(), p.event_log())
    p.stop()

Command line (first line out is "listening HOST:PORT"; a summary on exit):

    python3 tools/faultproxy.py --upstream 127.0.0.1:1883 --listen 127.0.0.1:0 \\
        --seed 7 --drop-every 0.2-1.5 --max-faults 20 --duration 60 --json
    python3 tools/faultproxy.py --upstream 127.0.0.1:1883 \\
        --script "0.5:drop,1:stall=2,3:cut=5@down,4:refuse=reset,6:refuse=off"

Random faults are reproducible: timed faults draw from one generator per kind,
per-chunk faults from one generator per connection and direction, all seeded
from `seed`; the same seed and the same traffic give the same faults.
"""
import argparse
import collections
import ipaddress
import json
import random
import signal
import socket
import struct
import sys
import threading
import time

DIRECTIONS = ("up", "down")
FAULT_KINDS = ("drop", "stall", "blackhole", "cut", "refuse")
SCRIPT_ACTIONS = ("drop", "stall", "blackhole", "resume", "cut", "refuse",
                  "delay", "jitter", "throttle")
CHUNK_BYTES = 16384
POLL_S = 0.1              # how often a blocked thread looks at stop/close flags
UPSTREAM_TIMEOUT_S = 2.0
EVENT_LOG_LENGTH = 10000
SIOCOUTQNSD = 0x894B       # Linux ioctl: bytes queued but not yet sent


# ---------------------------------------------------------------- addresses

def loopback_address(host, port):
    """(family, (ip, port)) for `host`, which must be a loopback address."""
    infos = socket.getaddrinfo(host or "127.0.0.1", port, type=socket.SOCK_STREAM)
    infos.sort(key=lambda info: info[0] != socket.AF_INET)   # prefer IPv4
    for family, _, _, _, sockaddr in infos:
        if ipaddress.ip_address(sockaddr[0]).is_loopback:
            return family, sockaddr[:2]
    raise ValueError("%s is not a loopback address: faultproxy only works on this machine" % host)


def parse_hostport(text, default_host="127.0.0.1"):
    """'127.0.0.1:1883', '[::1]:1883', 'localhost:0' or '1883' -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = default_host, text
    host = host.strip("[]") or default_host
    if not port.isdigit() or int(port) > 65535:
        raise ValueError("bad HOST:PORT %r" % text)
    return host, int(port)


def parse_range(text):
    """'0.2-1.5' -> (0.2, 1.5); '2' -> (2.0, 2.0). Seconds or milliseconds."""
    low, _, high = text.partition("-")
    low, high = float(low), float(high or low)
    if not 0 <= low <= high:
        raise ValueError("bad range %r (want A-B with 0 <= A <= B)" % text)
    return low, high


def as_range(value):
    """A number or a (low, high) pair -> (low, high)."""
    if isinstance(value, (int, float)):
        return float(value), float(value)
    low, high = value
    return float(low), float(high)


def directions_of(direction):
    if direction == "both":
        return DIRECTIONS
    if direction in DIRECTIONS:
        return (direction,)
    raise ValueError("direction must be 'up', 'down' or 'both', not %r" % (direction,))


# ---------------------------------------------------------------- scripts

def _script_arg(action, text):
    if text is None or text == "":
        return None
    if action == "refuse":
        return text
    return int(text) if action == "cut" else float(text)


def parse_script(text):
    """'0.5:drop,1:stall=2@up,3:cut=5' -> [(0.5, 'drop', None, None),
    (1.0, 'stall', 2.0, 'up'), (3.0, 'cut', 5, None)].

    Each step is TIME:ACTION[=ARG][@DIRECTION], TIME in seconds from the start."""
    steps = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        when, sep, rest = item.partition(":")
        body, _, direction = rest.partition("@")
        action, _, arg = body.partition("=")
        if not sep or not action:
            raise ValueError("bad script step %r (want TIME:ACTION[=ARG][@DIR])" % item)
        steps.append(normalize_step((float(when), action, _script_arg(action, arg), direction or None)))
    return steps


def normalize_step(step):
    """(t, action[, arg[, direction]]) -> a checked (t, action, arg, direction)."""
    when, action, arg, direction = (tuple(step) + (None, None))[:4]
    if action not in SCRIPT_ACTIONS:
        raise ValueError("unknown script action %r (one of %s)" % (action, ", ".join(SCRIPT_ACTIONS)))
    if direction is not None:
        directions_of(direction)
    if when < 0:
        raise ValueError("script time must be >= 0, not %r" % (when,))
    return float(when), action, arg, direction


# ---------------------------------------------------------------- sockets

def reset_socket(sock):
    """Close `sock` so the peer gets RST, waking any thread blocked in recv()."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # Needed: wakes the pump blocked in recv() on this socket; without it
        # the kernel defers the close and no RST is sent (TOOLCHAIN 4a).
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    sock.close()


def wait_until_sent(sock, timeout_s=0.2):
    """Best effort: wait until the kernel has put on the wire what we wrote,
    so an RST right after does not discard it (Linux SIOCOUTQNSD)."""
    try:
        import fcntl
    except ImportError:
        time.sleep(0.02)
        return
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            unsent = struct.unpack("i", fcntl.ioctl(sock.fileno(), SIOCOUTQNSD, b"\0\0\0\0"))[0]
        except OSError:
            return
        if unsent == 0:
            return
        time.sleep(0.002)


def send_all(sock, data, closed):
    """sendall() that gives up when the `closed` event is set or the socket
    fails. Returns how many bytes were sent."""
    view = memoryview(data)
    sent = 0
    while sent < len(view):
        if closed.is_set():
            break
        try:
            sent += sock.send(view[sent:])
        except socket.timeout:
            continue
        except OSError:
            break
    return sent


# ---------------------------------------------------------------- state

class _Gate:
    """What one direction does with data: 'flow', 'stall' (hold) or
    'blackhole' (discard), until a deadline or until told otherwise."""

    def __init__(self):
        self._lock = threading.Lock()
        self._mode = "flow"
        self._until = None

    def set(self, mode, seconds=None):
        with self._lock:
            self._mode = mode
            self._until = None if seconds is None else time.monotonic() + seconds

    def mode(self):
        with self._lock:
            if self._until is not None and time.monotonic() >= self._until:
                self._mode, self._until = "flow", None
            return self._mode


class _Link:
    """One proxied connection: the client's socket, the broker's, and whether
    it is over."""

    def __init__(self, number, client):
        self.number = number
        self.client = client
        self.upstream = None
        self.closed = threading.Event()
        self.rngs = {}
        self._lock = threading.Lock()
        self._eof = set()

    def ends(self, direction):
        """(source, destination) sockets for data going `direction`."""
        if direction == "up":
            return self.client, self.upstream
        return self.upstream, self.client

    def reset(self):
        """Reset both sides; True if this call is the one that ended the link."""
        with self._lock:
            if self.closed.is_set():
                return False
            self.closed.set()
        for sock in (self.client, self.upstream):
            if sock is not None:
                reset_socket(sock)
        return True

    def pass_eof(self, direction):
        """Forward an EOF; True if that ended the link (both sides done)."""
        try:
            self.ends(direction)[1].shutdown(socket.SHUT_WR)
        except OSError:
            pass
        with self._lock:
            self._eof.add(direction)
            finished = len(self._eof) == 2 and not self.closed.is_set()
            if finished:
                self.closed.set()
        if finished:
            self.client.close()
            self.upstream.close()
        return finished


class _ChunkFaults:
    """Per-chunk fault probabilities and the seed their generators come from."""

    def __init__(self, seed, drop_prob, cut_prob, stall_prob, stall_for):
        if min(drop_prob, cut_prob, stall_prob) < 0 or drop_prob + cut_prob + stall_prob > 1:
            raise ValueError("per-chunk probabilities must be >= 0 and sum to <= 1")
        self.seed = seed
        self.drop_prob, self.cut_prob, self.stall_prob = drop_prob, cut_prob, stall_prob
        self.stall_for = as_range(stall_for)

    def draw(self, rng, chunk_len):
        """None, ('drop',), ('cut', keep_bytes) or ('stall', seconds).

        Always draws the same amount from `rng` per outcome, so decisions
        depend only on the seed and the chunk sequence."""
        roll = rng.random()
        if roll < self.drop_prob:
            return ("drop",)
        roll -= self.drop_prob
        if roll < self.cut_prob:
            return ("cut", rng.randrange(chunk_len))
        roll -= self.cut_prob
        if roll < self.stall_prob:
            return ("stall", rng.uniform(*self.stall_for))
        return None


# ---------------------------------------------------------------- proxy

class FaultProxy:
    """A loopback TCP proxy that injects faults; see the module docstring."""

    def __init__(self, upstream, listen=("127.0.0.1", 0), seed=None, verbose=False):
        self.upstream = loopback_address(*upstream)[1]
        family, listen_addr = loopback_address(*listen)
        # Without a seed, pick one, so a run can still be repeated from stats().
        self.seed = random.SystemRandom().randrange(2 ** 32) if seed is None else seed
        self.verbose = verbose
        self.delay_ms = 0.0
        self.jitter_ms = 0.0
        self.throttle_bps = None
        self._refuse = None
        self._jitter_rng = random.Random("%s:jitter" % (self.seed,))
        self._gates = {d: _Gate() for d in DIRECTIONS}
        self._cut_budget = {d: None for d in DIRECTIONS}
        self._chunk_faults = None
        self._random_generation = 0
        self._random_deadline = None
        self._random_budget = None
        self._lock = threading.Lock()
        self._links = {}
        self._threads = []
        self._events = collections.deque(maxlen=EVENT_LOG_LENGTH)
        self._counters = collections.Counter()
        self._faults = collections.Counter({kind: 0 for kind in FAULT_KINDS})
        self._stopping = threading.Event()
        self._started_at = None
        self._listener = self._open_listener(family, listen_addr)
        self.host, self.port = self._listener.getsockname()[:2]

    # -- lifecycle

    @staticmethod
    def _open_listener(family, address):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(16)
        sock.settimeout(POLL_S)
        return sock

    def start(self):
        """Start accepting connections; returns self. Idempotent."""
        if self._started_at is None:
            self._started_at = time.monotonic()
            self._spawn(self._accept_loop, "accept")
        return self

    def stop(self, timeout_s=2.0):
        """Reset every connection, close the listener and wait for the threads."""
        self._stopping.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self._reset_links()
        self._join_threads(time.monotonic() + timeout_s)
        self._log("stop")

    def _join_threads(self, deadline):
        # Repeat: a thread that was mid-way through spawning another can
        # start it after the first look.
        while time.monotonic() < deadline:
            threads = [t for t in self._live_threads() if t is not threading.current_thread()]
            if not threads:
                return
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _spawn(self, target, name, *args):
        thread = threading.Thread(target=target, args=args, daemon=True,
                                  name="faultproxy:%d:%s" % (self.port, name))
        with self._lock:                  # started inside, so stop() never sees it unstarted
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
            thread.start()
        return thread

    def _live_threads(self):
        with self._lock:
            return [t for t in self._threads if t.is_alive()]

    # -- faults on command

    def drop_all(self):
        """Reset every open connection (both sides get RST). Returns how many."""
        return self._drop_all("manual")

    def stall(self, direction="both", seconds=None):
        """Hold data in `direction` until resume() or for `seconds`."""
        self._close_gates("stall", direction, seconds, "manual")

    def blackhole(self, direction="both", seconds=None):
        """Discard data in `direction` until resume() or for `seconds`."""
        self._close_gates("blackhole", direction, seconds, "manual")

    def resume(self, direction="both"):
        """End a stall or blackhole; held data is delivered."""
        for d in directions_of(direction):
            self._gates[d].set("flow")
        self._log("resume", dir=direction)

    def cut_next(self, direction="down", keep_bytes=0):
        """Forward only the next `keep_bytes` bytes going `direction` (on
        whichever connection carries them), then reset that connection."""
        self._arm_cut(direction, keep_bytes, "manual")

    @property
    def refuse(self):
        """False, 'reset' (accept then RST) or 'hang' (stop accepting).
        Set True for 'reset'."""
        return self._refuse or False

    @refuse.setter
    def refuse(self, mode):
        modes = {False: None, None: None, "off": None, "0": None,
                 True: "reset", "on": "reset", "1": "reset", "reset": "reset", "hang": "hang"}
        if mode not in modes:
            raise ValueError("refuse must be True, False, 'reset' or 'hang', not %r" % (mode,))
        self._refuse = modes[mode]
        self._log("refuse_mode", mode=self._refuse or "off")

    # -- faults on a timetable

    def run_script(self, steps):
        """Run [(seconds_from_now, action[, arg[, direction]]), ...] in a thread.

        Actions: drop; stall/blackhole [seconds]; resume; cut [keep_bytes]
        (direction defaults to 'down'); refuse [mode]; delay/jitter [ms];
        throttle [bytes/s, 0 = off]. Direction defaults to 'both'."""
        steps = sorted((normalize_step(step) for step in steps), key=lambda step: step[0])
        self._spawn(self._script_loop, "script", steps, time.monotonic())
        return self

    def _script_loop(self, steps, started):
        for when, action, arg, direction in steps:
            if self._stopping.wait(max(0.0, started + when - time.monotonic())):
                return
            self._apply_action(action, arg, direction, "script")

    def _apply_action(self, action, arg, direction, cause):
        if action == "drop":
            self._drop_all(cause)
        elif action in ("stall", "blackhole"):
            self._close_gates(action, direction or "both", arg, cause)
        elif action == "resume":
            self.resume(direction or "both")
        elif action == "cut":
            self._arm_cut(direction or "down", arg or 0, cause)
        elif action == "refuse":
            self.refuse = True if arg is None else arg
        elif action == "delay":
            self.delay_ms = arg or 0.0
        elif action == "jitter":
            self.jitter_ms = arg or 0.0
        elif action == "throttle":
            self.throttle_bps = arg or None

    # -- faults at random

    def random_faults(self, seed=None, *, drop_every=None, stall_every=None, stall_for=(0.5, 2.0),
                      blackhole_every=None, blackhole_for=(0.5, 2.0), cut_every=None, cut_keep=(0, 4),
                      drop_prob=0.0, cut_prob=0.0, stall_prob=0.0, direction="both",
                      max_faults=None, duration=None):
        """Inject faults at random, reproducibly for a given seed.

        *_every=(low, high): seconds between timed faults of that kind.
        *_for=(low, high): how long a stall or blackhole lasts.
        cut_keep=(low, high): bytes a timed cut lets through.
        drop_prob, cut_prob, stall_prob: chance per chunk (a cut keeps part
        of the chunk; a stall holds that chunk's direction for stall_for).
        direction: which way timed stalls, blackholes and cuts act.
        max_faults, duration: stop injecting after that many faults or seconds.
        Replaces any earlier random_faults() settings; returns self."""
        seed = self.seed = self.seed if seed is None else seed
        directions_of(direction)
        for every in (drop_every, stall_every, blackhole_every, cut_every):
            if every is not None and not 0 < as_range(every)[1]:
                raise ValueError("*_every must allow a positive interval, not %r" % (every,))
        with self._lock:
            self._random_generation += 1
            generation = self._random_generation
            self._random_budget = max_faults
            self._random_deadline = None if duration is None else time.monotonic() + duration
            self._chunk_faults = None
            if drop_prob or cut_prob or stall_prob:
                self._chunk_faults = _ChunkFaults(seed, drop_prob, cut_prob, stall_prob, stall_for)
        timed = {
            "drop": (drop_every, lambda rng: self._drop_all("random")),
            "stall": (stall_every, lambda rng: self._close_gates(
                "stall", direction, rng.uniform(*as_range(stall_for)), "random")),
            "blackhole": (blackhole_every, lambda rng: self._close_gates(
                "blackhole", direction, rng.uniform(*as_range(blackhole_for)), "random")),
            "cut": (cut_every, lambda rng: self._random_cut(rng, direction, as_range(cut_keep))),
        }
        for kind, (every, inject) in timed.items():
            if every is not None:
                rng = random.Random("%s:%s" % (seed, kind))
                self._spawn(self._every_loop, "random-" + kind, generation, as_range(every), rng, inject)
        self._log("random_faults", seed=seed, max_faults=max_faults, duration=duration)
        return self

    def _random_cut(self, rng, direction, keep_range):
        chosen = rng.choice(DIRECTIONS) if direction == "both" else direction
        self._arm_cut(chosen, rng.randint(int(keep_range[0]), int(keep_range[1])), "random")

    def _every_loop(self, generation, interval, rng, inject):
        while not self._stopping.wait(rng.uniform(*interval)):
            if generation != self._random_generation or not self._random_allows():
                return
            inject(rng)

    def _random_allows(self):
        """True (and one fault spent) if random faults may fire now."""
        with self._lock:
            if self._random_deadline is not None and time.monotonic() >= self._random_deadline:
                return False
            if self._random_budget is not None:
                if self._random_budget <= 0:
                    return False
                self._random_budget -= 1
            return True

    def _chunk_fault(self, link, direction, chunk_len):
        """The random fault (if any) for this chunk; see _ChunkFaults.draw."""
        faults = self._chunk_faults
        if faults is None:
            return None
        key = (faults.seed, direction)
        if key not in link.rngs:
            link.rngs[key] = random.Random("%s:%d:%s" % (faults.seed, link.number, direction))
        fault = faults.draw(link.rngs[key], chunk_len)
        return fault if fault and self._random_allows() else None

    # -- observing

    def stats(self):
        """Counters as a dict (JSON-ready)."""
        with self._lock:
            counters = dict(self._counters)
            faults = dict(self._faults)
            active = len(self._links)
        started = self._started_at or time.monotonic()
        result = {"seed": self.seed, "uptime_s": round(time.monotonic() - started, 3),
                  "connections": counters.get("connections", 0), "active": active,
                  "upstream_errors": counters.get("upstream_errors", 0)}
        for name in ("bytes_up", "bytes_down", "discarded_up", "discarded_down"):
            result[name] = counters.get(name, 0)
        result["faults"] = faults
        result["faults_total"] = sum(faults.values())
        return result

    def event_log(self, kinds=None):
        """Events so far as dicts {'t': seconds since start, 'event': kind, ...};
        only those whose 'event' is in `kinds` if given."""
        with self._lock:
            events = list(self._events)
        return [e for e in events if kinds is None or e["event"] in kinds]

    def _count(self, name, amount=1):
        with self._lock:
            self._counters[name] += amount
            return self._counters[name]

    def _log(self, event, **details):
        entry = {"t": round(time.monotonic() - (self._started_at or time.monotonic()), 3), "event": event}
        entry.update(details)
        with self._lock:
            self._events.append(entry)
        if self.verbose:
            words = " ".join("%s=%s" % item for item in details.items())
            print("faultproxy %8.3f %s %s" % (entry["t"], event, words), file=sys.stderr, flush=True)

    def _record_fault(self, kind, **details):
        with self._lock:
            self._faults[kind] += 1
        self._log(kind, **details)

    # -- fault mechanics

    def _drop_all(self, cause):
        links = self._take_links()
        self._record_fault("drop", cause=cause, links=len(links))
        for link in links:
            link.reset()
        return len(links)

    def _reset_links(self):
        for link in self._take_links():
            link.reset()

    def _take_links(self):
        with self._lock:
            links, self._links = list(self._links.values()), {}
        return links

    def _arm_cut(self, direction, keep_bytes, cause):
        if keep_bytes < 0:
            raise ValueError("keep_bytes must be >= 0")
        with self._lock:
            for d in directions_of(direction):
                self._cut_budget[d] = (int(keep_bytes), cause)
        self._log("cut_armed", cause=cause, dir=direction, keep=int(keep_bytes))

    def _close_gates(self, mode, direction, seconds, cause):
        for d in directions_of(direction):
            self._gates[d].set(mode, seconds)
        self._record_fault(mode, cause=cause, dir=direction, seconds=seconds)

    def _end_link(self, link, reason):
        """Reset `link` (if still open) and forget it."""
        if link.reset():
            self._forget(link, reason)

    def _forget(self, link, reason):
        with self._lock:
            self._links.pop(link.number, None)
        self._log("close", conn=link.number, reason=reason)

    # -- accepting

    def _accept_loop(self):
        while not self._stopping.is_set():
            if self._refuse == "hang":
                self._stopping.wait(POLL_S)
                continue
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            while self._refuse == "hang" and not self._stopping.wait(POLL_S):
                pass                      # it came in just as the hang began
            self._admit(client)

    def _admit(self, client):
        number = self._count("connections")
        if self._refuse == "reset":
            self._record_fault("refuse", cause="refuse", conn=number)
            reset_socket(client)
            return
        client.settimeout(POLL_S)
        link = _Link(number, client)
        with self._lock:                  # stop() sets _stopping, then takes the links
            stopping = self._stopping.is_set()
            if not stopping:
                self._links[number] = link
        if stopping:
            reset_socket(client)
            return
        self._spawn(self._run_link, "conn%d-up" % number, link)

    def _run_link(self, link):
        try:
            upstream = socket.create_connection(self.upstream, timeout=UPSTREAM_TIMEOUT_S)
        except OSError as error:
            self._count("upstream_errors")
            self._log("upstream_error", conn=link.number, error=str(error))
            self._end_link(link, "upstream unreachable")
            return
        upstream.settimeout(POLL_S)
        link.upstream = upstream
        if link.closed.is_set():          # dropped while we were connecting
            reset_socket(upstream)
            return
        self._log("accept", conn=link.number)
        self._spawn(self._pump, "conn%d-down" % link.number, link, "down")
        self._pump(link, "up")

    # -- forwarding

    def _pump(self, link, direction):
        source = link.ends(direction)[0]
        chunk_no = 0
        while True:
            data = self._receive(link, source)
            if link.closed.is_set():
                return
            if data is None:
                self._end_link(link, "reset by peer (%s)" % direction)
                return
            if not data:
                self._forward_eof(link, direction)
                return
            chunk_no += 1
            if not self._forward(link, direction, data, chunk_no):
                return

    @staticmethod
    def _receive(link, sock):
        """A chunk, b'' at EOF, None on error or when the link is closed."""
        while not link.closed.is_set():
            try:
                return sock.recv(CHUNK_BYTES)
            except socket.timeout:
                continue
            except OSError:
                return None
        return None

    def _wait_while(self, link, direction, modes):
        """Wait while the gate's mode is in `modes`; the mode it ends in, or
        None if the link closed meanwhile."""
        gate = self._gates[direction]
        while not link.closed.is_set():
            mode = gate.mode()
            if mode not in modes:
                return mode
            link.closed.wait(0.01)
        return None

    def _forward_eof(self, link, direction):
        # A stall or blackhole hides the FIN too, as a dead link would.
        if self._wait_while(link, direction, ("stall", "blackhole")) and link.pass_eof(direction):
            self._forget(link, "closed")

    def _forward(self, link, direction, data, chunk_no):
        """Put one chunk through gate, faults, delay and throttle. False when
        the link is over."""
        if not self._admit_chunk(link, direction, data):
            return not link.closed.is_set()
        fault = self._chunk_fault(link, direction, len(data))
        where = {"cause": "random", "conn": link.number, "dir": direction, "chunk": chunk_no}
        if fault and fault[0] == "drop":
            self._record_fault("drop", links=1, **where)
            self._end_link(link, "random drop")
            return False
        if fault and fault[0] == "cut":
            return self._cut(link, direction, data[:fault[1]], where)
        if fault and fault[0] == "stall":
            self._gates[direction].set("stall", fault[1])
            self._record_fault("stall", seconds=round(fault[1], 3), **where)
            if not self._admit_chunk(link, direction, data):
                return not link.closed.is_set()
        keep, where["cause"] = self._take_cut_budget(direction, len(data))
        if keep is not None:
            return self._cut(link, direction, data[:keep], where)
        self._pause(link)
        return self._deliver(link, direction, data)

    def _admit_chunk(self, link, direction, data):
        """Hold the chunk while its direction is stalled. True to go on;
        False if it was blackholed or the link closed meanwhile."""
        mode = self._wait_while(link, direction, ("stall",))
        if mode == "blackhole":
            self._count("discarded_" + direction, len(data))
        return mode == "flow"

    def _take_cut_budget(self, direction, chunk_len):
        """(None, None) to forward the chunk whole, else (bytes to keep
        before the armed cut resets the link, who armed it)."""
        with self._lock:
            armed = self._cut_budget[direction]
            if armed is None:
                return None, None
            budget, cause = armed
            if chunk_len < budget:
                self._cut_budget[direction] = (budget - chunk_len, cause)
                return None, None
            self._cut_budget[direction] = None
            return budget, cause

    def _cut(self, link, direction, head, where):
        if head and self._deliver(link, direction, head):
            wait_until_sent(link.ends(direction)[1])
        self._record_fault("cut", keep=len(head), **where)
        self._end_link(link, "cut")
        return False

    def _pause(self, link):
        delay_ms = self.delay_ms
        if self.jitter_ms:
            delay_ms += self._jitter_rng.uniform(0, self.jitter_ms)
        if delay_ms > 0:
            link.closed.wait(delay_ms / 1000.0)

    def _deliver(self, link, direction, data):
        destination = link.ends(direction)[1]
        for piece in self._pieces(data):
            # Counted first, so stats() already shows what a peer may have read.
            self._count("bytes_" + direction, len(piece))
            sent = send_all(destination, piece, link.closed)
            if sent < len(piece):
                self._count("bytes_" + direction, sent - len(piece))
                self._end_link(link, "send failed (%s)" % direction)
                return False
            bytes_per_s = self.throttle_bps
            if bytes_per_s:
                link.closed.wait(len(piece) / bytes_per_s)
        return True

    def _pieces(self, data):
        """`data` in slices small enough for the throttle to pace smoothly."""
        bytes_per_s = self.throttle_bps
        step = max(1, int(bytes_per_s) // 20) if bytes_per_s else len(data)
        view = memoryview(data)
        return [view[i:i + step] for i in range(0, len(data), step)]


# ---------------------------------------------------------------- command line

EPILOG = """\
script steps (--script, comma-separated, TIME in seconds from start):
  TIME:drop                   reset every open connection
  TIME:stall[=SECONDS][@DIR]  hold data (until resume, or for SECONDS)
  TIME:blackhole[=S][@DIR]    discard data (until resume, or for S)
  TIME:resume[@DIR]           end a stall or blackhole
  TIME:cut[=KEEP][@DIR]       pass KEEP more bytes (default 0) then reset;
                              DIR defaults to down
  TIME:refuse[=reset|hang|off]  reset new connections / stop accepting / normal
  TIME:delay=MS  TIME:jitter=MS  TIME:throttle=BYTES_PER_S (0 = off)
  DIR is up (client->broker), down (broker->client) or both (default).

examples:
  %(prog)s --upstream 127.0.0.1:1883 --seed 7 --drop-every 0.2-1.5 --max-faults 10
  %(prog)s --upstream 127.0.0.1:1883 --script "0.5:drop,1:stall=2@down,4:cut=5" --duration 8
  %(prog)s --upstream 127.0.0.1:1883 --seed 3 --drop-prob 0.01 --cut-prob 0.01 --json

The first line printed is "listening HOST:PORT" (useful with port 0).
On exit (--duration, SIGINT or SIGTERM) a summary of counters is printed.
Only loopback addresses are accepted.
"""


def build_parser():
    parser = argparse.ArgumentParser(
        prog="faultproxy.py", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fault-injecting TCP proxy between an MQTT client and a broker on loopback.")
    add = parser.add_argument
    add("--listen", default="127.0.0.1:0", metavar="HOST:PORT",
        help="where clients connect (default 127.0.0.1:0, a free port)")
    add("--upstream", default="127.0.0.1:1883", metavar="HOST:PORT",
        help="the broker (default 127.0.0.1:1883)")
    add("--seed", help="seed for random faults and jitter (same seed, same faults)")
    add("--script", metavar="STEPS", help="timed faults, e.g. '0.5:drop,1:stall=2' (see below)")
    add("--drop-every", type=parse_range, metavar="A-B", help="drop all connections every A..B s")
    add("--stall-every", type=parse_range, metavar="A-B", help="stall every A..B s")
    add("--stall-for", type=parse_range, default=(0.5, 2.0), metavar="A-B",
        help="how long a random stall lasts, s (default 0.5-2)")
    add("--blackhole-every", type=parse_range, metavar="A-B", help="blackhole every A..B s")
    add("--blackhole-for", type=parse_range, default=(0.5, 2.0), metavar="A-B",
        help="how long a random blackhole lasts, s (default 0.5-2)")
    add("--cut-every", type=parse_range, metavar="A-B", help="cut mid-packet every A..B s")
    add("--cut-keep", type=parse_range, default=(0, 4), metavar="A-B",
        help="bytes a timed cut lets through (default 0-4)")
    add("--direction", choices=("up", "down", "both"), default="both",
        help="direction of timed stalls, blackholes and cuts (default both)")
    add("--drop-prob", type=float, default=0.0, metavar="P", help="chance per chunk of a drop")
    add("--cut-prob", type=float, default=0.0, metavar="P", help="chance per chunk of a cut inside it")
    add("--stall-prob", type=float, default=0.0, metavar="P",
        help="chance per chunk of a stall (lasting --stall-for)")
    add("--delay-ms", type=float, default=0.0, metavar="MS", help="delay before each chunk")
    add("--jitter-ms", type=float, default=0.0, metavar="MS", help="extra random delay, 0..MS")
    add("--throttle", type=float, default=None, metavar="BYTES_PER_S",
        help="cap each direction of each connection")
    add("--refuse", choices=("reset", "hang"), help="refuse connections from the start")
    add("--max-faults", type=int, metavar="N", help="inject at most N random faults")
    add("--duration", type=float, metavar="S", help="exit after S seconds")
    add("--json", action="store_true", help="print the exit summary as one JSON line")
    add("--verbose", action="store_true", help="log every event to stderr")
    return parser


def random_options(args):
    """random_faults() keyword arguments from the command line, or None."""
    options = dict(drop_every=args.drop_every, stall_every=args.stall_every, stall_for=args.stall_for,
                   blackhole_every=args.blackhole_every, blackhole_for=args.blackhole_for,
                   cut_every=args.cut_every, cut_keep=args.cut_keep, drop_prob=args.drop_prob,
                   cut_prob=args.cut_prob, stall_prob=args.stall_prob, direction=args.direction)
    wanted = any(options[k] for k in ("drop_every", "stall_every", "blackhole_every", "cut_every",
                                      "drop_prob", "cut_prob", "stall_prob"))
    return options if wanted else None


def summary_text(stats):
    faults = " ".join("%s=%d" % item for item in stats["faults"].items())
    return ("seed=%(seed)s uptime_s=%(uptime_s)s\n"
            "connections=%(connections)d active=%(active)d upstream_errors=%(upstream_errors)d\n"
            "bytes_up=%(bytes_up)d bytes_down=%(bytes_down)d "
            "discarded_up=%(discarded_up)d discarded_down=%(discarded_down)d\n" % stats
            + "faults total=%d %s" % (stats["faults_total"], faults))


def make_proxy(args, parser):
    """The proxy the command line asks for (random faults already armed) and
    its script; a bad option exits with a usage error before anything runs."""
    try:
        proxy = FaultProxy(upstream=parse_hostport(args.upstream), listen=parse_hostport(args.listen),
                           seed=args.seed, verbose=args.verbose)
        script = parse_script(args.script) if args.script else None
        options = random_options(args)
        if options:
            proxy.random_faults(args.seed, max_faults=args.max_faults, duration=args.duration, **options)
    except (ValueError, OSError) as error:
        parser.error(str(error))
    proxy.delay_ms, proxy.jitter_ms, proxy.throttle_bps = args.delay_ms, args.jitter_ms, args.throttle
    if args.refuse:
        proxy.refuse = args.refuse
    return proxy, script


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    proxy, script = make_proxy(args, parser)
    finished = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: finished.set())
    proxy.start()
    print("listening %s:%d" % (proxy.host, proxy.port), flush=True)
    if script:
        proxy.run_script(script)
    try:
        finished.wait(args.duration)
    except KeyboardInterrupt:
        pass
    proxy.stop()
    stats = proxy.stats()
    print(json.dumps(stats, sort_keys=True) if args.json else summary_text(stats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
