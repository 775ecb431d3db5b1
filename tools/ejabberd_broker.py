"""Private ejabberd nodes (Debian's ejabberd 23.01, its MQTT broker mod_mqtt)
on 127.0.0.1 for the tests: a second broker next to mosquitto
(tools/testbroker.py), and a cluster of them. CPython, stdlib only.

    n = EjabberdNode(tmpdir).start()         # MQTT on n.port, 127.0.0.1
    ... n.port ... n.kill() ... n.start() ... n.stop(); print(n.log_text())

    c = Cluster(tmpdir, n=2)                 # started and joined
    a, b = c.nodes; ... a.kill() ...; c.stop()

tools/ensure_ejabberd.sh installs the package (`make test` runs it).

How a node runs, and why not through the system service or ejabberdctl
----------------------------------------------------------------------
Nothing under /etc/ejabberd, /var/lib/ejabberd or /var/log/ejabberd is read
or written, and the system service is never used. Each node has its own
directory:

    ejabberd.yml   the config (written here, see _config())
    inetrc         Erlang's resolver config (localhost = 127.0.0.1)
    cookie         the Erlang cookie (random, shared by a cluster's nodes)
    spool/         the Mnesia database (ejabberdctl --spool)
    log/           ejabberd.log, error.log, crash.log (ejabberdctl --logs)
    vm.out         the VM's stdout/stderr: every log line, unbuffered (log_text())

/usr/sbin/ejabberdctl, run as root, always re-executes itself as the user
`ejabberd` through `su` (INSTALLUSER is hard-wired), so that user would
need access to the node directory (pytest's tmp directories are 0700 root),
and the PID we start would be a shell, not the VM. So we start the VM the
way `ejabberdctl foreground` does, directly, as the current user (root is
fine for a test broker):

    erl -sname ejab1@localhost -setcookie COOKIE -start_epmd false
        -kernel inet_dist_use_interface {127,0,0,1} +K true +P 250000
        -mnesia dir '"DIR/spool"' -s ejabberd -noinput

with the environment ejabberdctl would export: EJABBERD_CONFIG_PATH,
EJABBERD_LOG_PATH, ERL_LIBS (parsed from /usr/sbin/ejabberdctl: the
directory holding ejabberd-23.01/), ERL_INETRC, ERL_CRASH_DUMP(_BYTES=0),
plus HOME=DIR (so nothing lands in ~root). `erl` execs erlexec, which execs
beam.smp: the PID Popen returns *is* the VM, so stop()/kill() signal it
directly; its helper erl_child_setup exits with it. To run a node through
ejabberdctl by hand instead (`ejabberdctl --config-dir DIR --spool
DIR/spool --logs DIR/log foreground`, an ejabberdctl.cfg with ERLANG_NODE
in DIR, DIR owned by user ejabberd), see ../shared/TOOLCHAIN.md section 12.

Commands (`ejabberdctl status`, `join_cluster`, `list_cluster`, ...) go
through node.ctl(...), which runs what ejabberdctl runs for them: a hidden
Erlang node `erl ... -s ejabberd_ctl -extra NODE COMMAND ARGS`.

epmd: every node, or every cluster, starts its own epmd on a free loopback
port (ERL_EPMD_PORT, `epmd -port P -address 127.0.0.1` in the foreground,
its PID kept) and stops it afterwards. Nothing registers with the system's
epmd on 4369, so no stale node name survives into the next test, and a node
killed with SIGKILL is dropped from our epmd at once (its connection closes).

MQTT login (measured on 23.01; mod_mqtt_session:authenticate/2)
---------------------------------------------------------------
auth_method: [anonymous] with anonymous_protocol: login_anon accepts ANY
user name that is a valid JID node ("dev", or "dev@localhost") with ANY
NON-EMPTY password. What fails:
  - no user name and no password: CONNACK "not authorized" (3.1.1 return
    code 5, MQTT 5 reason 0x87): an empty password is taken as a request
    for TLS client-certificate login, which a plain TCP listener refuses;
  - a user name without a password (or with an empty one): the same;
  - MQTT 5 password without a user name: the connection is closed;
  - "a@b@c": 4 (bad user name); "dev@otherhost": 3 (server unavailable).
So every test client passes user=USER, password=PASSWORD (below). The
session identity is user@localhost/client-id: the same client id under two
user names is two sessions. allow_multiple_connections: true lets many
clients share the anonymous user name.

Broker settings
---------------
mod_mqtt keeps ejabberd's defaults unless a keyword says otherwise:
session_expiry 5 min (a cap: MQTT 5 clients see it in CONNACK, 3.1.1
clients are cut to it silently), max_queue 5000 messages per offline
session, max_topic_depth 8, queue_type ram.

Timings measured here (2 CPUs): start() 0.7-1.2 s until a CONNECT is
answered; stop() ~1.1 s (Erlang's clean shutdown on SIGTERM takes ~1 s even
for an idle VM); kill() ~20 ms; a ctl() command 0.3-0.6 s (it boots a VM).
A Cluster of 2: start 1.3-2.1 s (in parallel), join 1.0-1.3 s, stop ~1.1 s.
"""
import os
import pathlib
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time

ERL = shutil.which("erl") or "/usr/bin/erl"
EPMD = shutil.which("epmd") or "/usr/bin/epmd"
EJABBERDCTL = "/usr/sbin/ejabberdctl"
# Credentials every MQTT client of these nodes uses (see the docstring).
USER = "dev"
PASSWORD = "x"

_ctl_seq = [0]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def _connack(port, deadline, alive):
    """Open a connection to `port`, send an MQTT 3.1.1 CONNECT and wait for
    its CONNACK until `deadline` (time.monotonic()) or until alive() is
    False. True on CONNACK 0. An open port is not enough: ejabberd listens
    early in its start and accepts only once it is up (a node stopped in
    between crashes noisily), so the CONNECT waits in the backlog."""
    def s16(b):
        return len(b).to_bytes(2, "big") + b
    body = (s16(b"MQTT") + bytes([4, 0x80 | 0x40 | 0x02]) + (0).to_bytes(2, "big")
            + s16(b"ready-probe") + s16(USER.encode()) + s16(PASSWORD.encode()))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(bytes([0x10, len(body)]) + body)
            s.settimeout(0.05)
            data = b""
            while len(data) < 4 and time.monotonic() < deadline and alive():
                try:
                    chunk = s.recv(4 - len(data))
                except socket.timeout:
                    continue
                if not chunk:
                    return False
                data += chunk
            if data == b"\x20\x02\x00\x00":
                s.sendall(b"\xe0\x00")      # DISCONNECT
                return True
            return False
    except OSError:
        return False


def erl_libs():
    """The ERL_LIBS ejabberdctl uses (the directory holding ejabberd-23.01/;
    architecture-dependent on Debian), or raise with how to install."""
    try:
        m = re.search(r"^ERL_LIBS='([^']+)'", pathlib.Path(EJABBERDCTL).read_text(), re.M)
    except OSError:
        m = None
    if m and list(pathlib.Path(m.group(1)).glob("ejabberd-*/ebin")) and os.path.exists(ERL):
        return m.group(1)
    raise RuntimeError("ejabberd is not installed (Debian: apt-get install ejabberd); "
                       "`make test` installs it through tools/ensure_ejabberd.sh")


def _signal(proc, sig):
    if proc is not None and proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass


class Epmd:
    """A private Erlang port mapper on a free loopback port, run in the
    foreground so that its PID is ours to stop."""

    def __init__(self, port=None):
        self.port = port or free_port()
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([EPMD, "-port", str(self.port), "-address", "127.0.0.1"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        end = time.monotonic() + 5
        while not _port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                raise RuntimeError("epmd did not start on port %d" % self.port)
            time.sleep(0.01)
        return self

    def stop(self):
        _signal(self.proc, signal.SIGTERM)
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class EjabberdNode:
    """One ejabberd node with an MQTT listener on 127.0.0.1:port.

    directory   holds everything of the node (created)
    port        MQTT port; a free one by default
    name        Erlang short name; the node is NAME@localhost
    epmd_port   an epmd already running (a Cluster's); None: the node starts
                and stops its own
    cookie      Erlang cookie (a Cluster's); None: a random one
    session_expiry, max_queue, max_topic_depth   mod_mqtt options (seconds,
                messages, levels); None keeps ejabberd's default
    loglevel    ejabberd's: info logs every MQTT connection (kept: the log
                is what tells a failing test's story)
    """

    def __init__(self, directory, port=None, name="ejab1", *, epmd_port=None, cookie=None,
                 session_expiry=None, max_queue=None, max_topic_depth=None, loglevel="info"):
        self.dir = pathlib.Path(directory).resolve()
        self.port = port or free_port()
        self.name = name
        self.node = "%s@localhost" % name
        self.mqtt_opts = {"session_expiry": session_expiry, "max_queue": max_queue,
                          "max_topic_depth": max_topic_depth}
        self.loglevel = loglevel
        self._own_epmd = None if epmd_port else Epmd()
        self.epmd_port = epmd_port or self._own_epmd.port
        self.cookie = cookie or secrets.token_hex(16)
        self.proc = None
        self.conf = self.dir / "ejabberd.yml"
        self.spool = self.dir / "spool"
        self.logdir = self.dir / "log"
        for d in (self.dir, self.spool, self.logdir):
            d.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(self._config())
        (self.dir / "inetrc").write_text('{lookup,["file","native"]}.\n'
                                         '{host,{127,0,0,1}, ["localhost"]}.\n')
        (self.dir / "cookie").write_text(self.cookie + "\n")
        os.chmod(self.dir / "cookie", 0o600)

    def _config(self):
        lines = [
            "# Written by tools/ejabberd_broker.py: one private test node.",
            "hosts: [localhost]",
            "loglevel: %s" % self.loglevel,
            "acme: {auto: false}",                  # no certificate requests
            "listen:",                              # MQTT only: no XMPP listeners at all
            '  - {port: %d, ip: "127.0.0.1", module: mod_mqtt, backlog: 1000}' % self.port,
            "auth_method: [anonymous]",             # see "MQTT login" above
            "anonymous_protocol: login_anon",
            "allow_multiple_connections: true",
            "api_permissions:",                     # ctl() may run every command
            '  "console commands": {from: [ejabberd_ctl], who: all, what: "*"}',
            "modules:",
        ]
        opts = ["    %s: %d" % (k, v) for k, v in self.mqtt_opts.items() if v is not None]
        lines += ["  mod_mqtt:"] + opts if opts else ["  mod_mqtt: {}"]
        return "\n".join(lines) + "\n"

    def _env(self):
        env = dict(os.environ)
        env.update({
            "EJABBERD_CONFIG_PATH": str(self.conf),
            "EJABBERD_LOG_PATH": str(self.logdir / "ejabberd.log"),
            "EJABBERD_PID_PATH": str(self.dir / "ejabberd.pid"),
            "ERL_LIBS": erl_libs(),
            "ERL_INETRC": str(self.dir / "inetrc"),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_CRASH_DUMP": str(self.logdir / "erl_crash.dump"),
            "ERL_CRASH_DUMP_BYTES": "0",
            "ERL_MAX_PORTS": "32000",
            "ERL_MAX_ETS_TABLES": "1400",
            "CONTRIB_MODULES_PATH": str(self.dir / "modules"),
            "HOME": str(self.dir),
        })
        return env

    def _erl(self, sname, *args):
        return [ERL, "-sname", sname, "-setcookie", self.cookie, "-start_epmd", "false",
                "-kernel", "inet_dist_use_interface", "{127,0,0,1}", *args]

    # ------------------------------------------------------------ life cycle
    def launch(self):
        """Start the VM without waiting for it (Cluster starts its nodes in
        parallel); wait_ready() completes start()."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("%s is already running" % self.node)
        if self._own_epmd is not None and (self._own_epmd.proc is None
                                           or self._own_epmd.proc.poll() is not None):
            self._own_epmd.start()
        with open(self.dir / "vm.out", "ab") as out:
            self.proc = subprocess.Popen(
                self._erl(self.node, "+K", "true", "+P", "250000",
                          "-mnesia", "dir", '"%s"' % self.spool, "-s", "ejabberd", "-noinput"),
                cwd=str(self.spool), env=self._env(), stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self._t_launch = time.monotonic()
        return self

    def wait_ready(self, timeout=30.0):
        """Wait until the node answers an MQTT CONNECT (CONNACK 0)."""
        end = time.monotonic() + timeout
        while not _connack(self.port, end, self.running):
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("ejabberd %s exited (%s) during start:\n%s"
                                   % (self.node, self.proc.returncode, self.log_text()[-6000:]))
            if time.monotonic() > end:
                self.stop()
                raise RuntimeError("ejabberd %s did not accept MQTT on port %d in %.0f s:\n%s"
                                   % (self.node, self.port, timeout, self.log_text()[-6000:]))
            time.sleep(0.02)
        self.start_s = time.monotonic() - self._t_launch
        return self

    def start(self, timeout=30.0):
        """Start the node; returns when it answers an MQTT CONNECT."""
        return self.launch().wait_ready(timeout)

    def stop(self, timeout=10.0, graceful=True):
        """Stop the VM we started, then our own epmd. graceful: SIGTERM,
        on which Erlang runs init:stop(), a clean shutdown that takes ~1 s
        however idle the node (SIGKILL after `timeout`); graceful=False:
        SIGKILL at once, for a node whose data does not matter."""
        if self.proc is not None and self.proc.poll() is None:
            _signal(self.proc, signal.SIGTERM if graceful else signal.SIGKILL)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._own_epmd is not None:
            self._own_epmd.stop()

    def kill(self):
        """SIGKILL the VM (a crashed or powered-off node). The epmd stays;
        start() brings the node back with its database (in a cluster it
        rejoins by itself)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------ inspection
    def ctl(self, *args, timeout=60.0, check=True):
        """Run an ejabberdctl command against this node (what ejabberdctl
        does: a hidden Erlang node calling ejabberd_ctl). Returns the
        CompletedProcess; with check=True a non-zero status raises."""
        _ctl_seq[0] += 1
        sname = "ctl%d_%d@localhost" % (os.getpid(), _ctl_seq[0])
        r = subprocess.run(self._erl(sname, "-hidden", "-noinput", "-s", "ejabberd_ctl",
                                     "-extra", self.node, *map(str, args)),
                           env=self._env(), cwd=str(self.dir), stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError("ejabberdctl %s on %s failed (%d):\n%s%s"
                               % (" ".join(map(str, args)), self.node, r.returncode, r.stdout, r.stderr))
        return r

    def log_text(self):
        """Everything the VM printed (vm.out): ejabberd's log lines through
        its console handler, unbuffered, so complete even after kill(), and
        what ejabberd cannot log itself (a VM that fails to boot). The same
        lines are in log/ejabberd.log (error.log, crash.log beside it), but
        the file handler writes with a delay of up to a few seconds."""
        text = ""
        for p in (self.dir / "vm.out", self.logdir / "ejabberd.log"):
            if p.exists():
                text = p.read_text(errors="replace")
                if text.strip():
                    break
        return text


class Cluster:
    """n ejabberd nodes (ejab1..ejabN@localhost, node0..nodeN-1/ under
    `directory`) sharing one private epmd and cookie, started in parallel and
    joined (`ejabberdctl join_cluster ejab1@localhost` on the others). The
    constructor starts it; stop() stops everything.

    Shared cluster-wide (Mnesia): routing (a subscriber on one node gets
    what is published on another) and the session registry (a client that
    left node A and connects to node B with Clean Session 0 resumes its
    session there, Session Present 1). Not shared: the session itself is a
    process on one node and dies with it (SIGKILL A: a reconnect to B gets
    Session Present 0).

    ejabberd 23.01's takeover race (measured with raw clients): when a
    client whose connection to A was not ended by DISCONNECT (dropped, or
    still open) connects to B within the same wall-clock second as its
    connect to A, B sends CONNACK and closes the connection at once; from
    then on every CONNECT of that client, on either node, gets CONNACK
    0x80 (3.1.1 too) for ~60 s, and the session is lost (Session Present 0)
    after that. Sessions are ordered by (wall-clock second, per-node
    counter), so the old one can win. Moving in the next second works
    (Session Present 1), and so does a same-second move after a clean
    DISCONNECT. So space node switches by more than a second.
    """

    def __init__(self, directory, n=2, **node_kw):
        self.dir = pathlib.Path(directory)
        self.epmd = Epmd()
        cookie = secrets.token_hex(16)
        self.nodes = [EjabberdNode(self.dir / ("node%d" % i), name="ejab%d" % (i + 1),
                                   epmd_port=self.epmd.port, cookie=cookie, **node_kw)
                      for i in range(n)]
        self.start_s = self.join_s = None
        try:
            t0 = time.monotonic()
            self.epmd.start()
            for node in self.nodes:
                node.launch()
            for node in self.nodes:
                node.wait_ready()
            self.start_s = time.monotonic() - t0
            t1 = time.monotonic()
            first = self.nodes[0]
            for node in self.nodes[1:]:
                # Synchronous: ejabberd on `node` stops, copies the schema
                # from `first`, and starts again before the command returns
                # (a failure is a non-zero status: ctl raises).
                node.ctl("join_cluster", first.node)
                node.wait_ready()
            self.join_s = time.monotonic() - t1
        except BaseException:
            self.stop()
            raise

    def stop(self, graceful=True):
        """Stop every node (graceful: SIGTERM to all at once, a clean stop
        takes ~1 s; else SIGKILL), then the cluster's epmd."""
        for node in self.nodes:
            _signal(node.proc, signal.SIGTERM if graceful else signal.SIGKILL)
        for node in self.nodes:
            node.stop(graceful=graceful)
        self.epmd.stop()

    def restart_dead(self):
        """start() every node that is not running (after kill()): it comes
        back with its database and rejoins the cluster by itself."""
        dead = [n for n in self.nodes if not n.running()]
        for node in dead:
            node.launch()
        for node in dead:
            node.wait_ready()
        return dead

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def log_text(self):
        return "\n".join("===== %s\n%s" % (n.node, n.log_text()) for n in self.nodes)
