# RobustClient: MQTTClient plus the loop that keeps a session alive across a
# flaky link and across brokers, so the application writes no retry code.
#
# Failure model (docs/resilience.md has the figures):
# - a dead link is found by the core: a socket error, the peer closing, or a
#   PINGRESP overdue by half the keepalive;
# - the client reconnects with capped exponential backoff and jitter, after
#   bringing the network up through an optional `link` (boards/wlan.py:
#   up(timeout_ms) -> bool, isconnected() -> bool);
# - with several brokers (`servers`), a failed attempt passes the turn to
#   the next one; a drop retries the same broker first. A switch to another
#   broker waits until more than a second has passed since the last CONNECT
#   (a clustered broker can wedge a session taken over within the second);
# - the session resumes (Clean Session 0 / Clean Start 0) wherever it can:
#   Session Present 1 resends what was in flight, Session Present 0 re-queues
#   and resubscribes. publish() never blocks or fails while the link is down;
#   only a full outbox refuses a message.
import random
import time
from micropython import const

from .client import MQTTClient, need_callable, unload
from .codec import as_bytes
from .errors import ConnectRefused, PacketTooLarge, ProtocolError, SessionError

_SWITCH_MS = const(1100)
# A link that lasted less than this after its CONNACK does not reset the
# backoff: a broker that closes at once (two devices with one client id,
# each taking the session from the other; a policy that disconnects) is
# not hammered at the first delay for ever.
_STABLE_MS = const(10000)
_BAD_ANSWER = const(-2)      # link.result after a malformed or wrong (UN)SUBACK (request.py's)
_RECEIVED = const(4)         # counts[]: messages received, and duplicates of them (client._COUNTS)
_DUP_IN = const(5)


class RobustClient(MQTTClient):
    # Keyword arguments beyond MQTTClient's:
    #
    # servers       brokers to use in turn: [(host, port), ...] or host names
    #               (port: `port`); default [(server, port)]
    # link          object with up(timeout_ms) and isconnected(), or None
    # backoff_ms    (first, cap) reconnect delay; doubles per failure, jittered
    #               between 50 % and 100 % so a fleet does not reconnect in step
    # on_up, on_down  f(client) / f(client, exc), called when the link changes
    #
    # Its subscriptions outlive a clean start (clean_session=True): each
    # connect that begins a new session makes them again (resubscribe).
    renews_subs = True
    store_error = None           # the write error the store meets now (tick)
    subs_failed = False          # a subscription made while down failed with its link
    subs_waiting = 0             # subscribe() calls a front end makes once up (AsyncClient's)

    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=60,
                 ssl=None, *, servers=None, link=None, backoff_ms=(250, 30000), on_up=None,
                 on_down=None, **kw):
        # Checked before the session file is opened. (A str for servers
        # would be taken letter by letter, a 1-tuple fail later.)
        if isinstance(servers, str) or any(not isinstance(s, str) and not (
                isinstance(s, tuple) and len(s) == 2 and type(s[1]) is int and 0 <= s[1] < 65536)
                for s in servers or ()):
            raise TypeError("servers: a list of host names or (host, port) pairs, port 0..65535")
        if not 0 < backoff_ms[0] <= backoff_ms[1]:
            raise ValueError("backoff_ms: (first, cap) with 0 < first <= cap")
        need_callable(on_up)
        need_callable(on_down)
        kw.setdefault("clean_session", False)
        super().__init__(client_id, server, port, user, password, keepalive, ssl, **kw)
        p = self.port                 # `port`, or its default (1883, 8883 with ssl)
        self.servers = [(s[0], s[1] or p) if isinstance(s, tuple) else (s, p)
                        for s in servers or ((server, port),)]
        self.server, self.port = self.servers[0]     # connect()'s, until poll() takes turns
        self.link = link
        self.backoff_min, self.backoff_max = backoff_ms
        self.on_up = on_up
        self.on_down = on_down
        self.last_error = None
        self._turn = 0                # index in servers of the next attempt
        self._used = -1               # index of the broker this attempt's CONNECT went to (-1: none yet)
        self._connect_at = 0
        self._backoff = 0
        self._up = False              # the link was up (the core drops it before we hear)
        self._up_at = 0               # when it came up
        self._marks = (0, 0)          # engine.floods and _taken() at the last attempt
        self._next_try = time.ticks_ms()
        self.pending_subs = []
        self.link_downs = 0
        self.connect_failures = 0

    def connect(self, clean_session=None, timeout_ms=None):
        try:
            return self._open(self.connecting(clean_session, timeout_ms))
        except SessionError:
            # MQTT 5: the broker keeps a session this client lost
            # (MQTT-3.2.2-4): a new one, as poll() starts after a drop.
            return self.connect_fresh(timeout_ms)

    def connect_fresh(self, timeout_ms=None):
        # MQTTClient's, as a connect of this client's: the subscriptions
        # made while down are made, a drop after it is reported.
        return self._open(self.connecting(True, timeout_ms, None, 0, True))

    def _open(self, steps):
        # (steps: not begun yet, so the old connection is still up here)
        if self.is_connected():
            # The old connection ends as disconnect() ends it (connect.py):
            # asked for, not a drop. Should the new one fail, this call
            # raises it; it was reported later as well, as a drop ("link
            # dropped while sending": on_down, link_downs) with a backoff
            # before poll() tried again.
            self._asked()
        try:
            sp = self.run(steps)
            try:
                self.run(self._subscribes_first())
            except OSError as x:
                # The subscriptions made while down failed with the link:
                # a failed attempt, as poll()'s reconnect counts one (no
                # on_up came, so no on_down), and raised.
                self.link_down(x, True)
                raise
            except BaseException:
                # Anything else (a MemoryError loading request.py): the link
                # is up all the same (the outbox went, _subscribes_first), so
                # it is reported up, and a drop after it as a drop.
                if self.is_connected():
                    self.link_up()
                raise
            # Up: on_up, as after poll()'s reconnects (on_up never came
            # for a connect(), and the next drop's on_down came alone).
            self.link_up()
        finally:
            # The event callback's, once all that is done, or failed (in place
            # of the failure then: left, it came out of the next connect).
            self.report()
        return sp

    def disconnect(self, session_expiry=None):
        # Asked for, not a drop: no on_down, not counted in link_downs.
        self._asked()
        super().disconnect(session_expiry)

    def close(self):
        # MQTTClient's, asked for as disconnect() is: the next poll()
        # took it for a drop (on_down, "link dropped while sending").
        self._asked()
        super().close()

    def drop_link(self):
        # Closes the link at once, without a DISCONNECT (the broker then
        # publishes the will), as asked for: not a drop either. The session
        # stays; the next connect() resumes it. (AsyncClient: a disconnect()
        # cancelled before its DISCONNECT could go.)
        self._asked()
        if self.conn is not None:
            self.conn.drop()

    def _asked(self):
        # The link ends as asked for: the next attempt may come at once.
        # (The last drop's _next_try may be days old: past half the ticks
        # period, 6.2 days on a board, ticks_diff() read it as days ahead.)
        # Not when down already (an on_down that disconnects): the
        # backoff that drop set stays.
        if self._up:
            self._up = False
            self._next_try = time.ticks_ms()

    # ------------------------------------------------------------ the loop
    def poll(self, timeout_ms=0):
        # One step: reconnect when down and the backoff allows, else handle
        # traffic for up to timeout_ms. Never raises for a link or broker
        # failure (see last_error); returns True while connected.
        if not self.is_connected():
            wait = self.offline()
            if wait > 0:
                if timeout_ms:
                    time.sleep_ms(self.due(min(wait, timeout_ms)))
                    self.due(-1)    # (due now: written)
                return False
            try:
                self.run(self.reconnecting())
            except (OSError, MemoryError) as x:
                # (MemoryError: a heap too full to connect, the application
                # holding it or a message copy just failed: a failed attempt,
                # as in AsyncClient; the next one may find it.)
                self.link_down(x, True)
                self.report()           # the event callback's in this attempt, if it raised
                return False
            self.link_up()
            return True
        try:
            if timeout_ms:
                self.wait_msg(timeout_ms)
            else:
                self.check_msg()
        except OSError as x:
            if not self.is_connected():
                self.link_down(x)
            elif isinstance(x, PacketTooLarge) and x.args[1].startswith("dropped an incoming"):
                self.last_error = x      # an oversize PUBLISH dropped, the link up (inbound.after)
            else:
                # The message callback's own (api.md: whatever its type; a
                # PacketTooLarge of its publish() too, which was kept in
                # last_error as if an incoming one had been dropped).
                raise
        if self.store_error is not None:
            self.store_ok()             # (written meanwhile by a publish(), a checkpoint)
        return self.is_connected()

    def loop_forever(self, step_ms=1000):
        while True:
            self.poll(step_ms)

    def _step(self, ms):
        self.poll(ms)

    def stats(self):
        d = super().stats()
        d["link_downs"] = self.link_downs
        d["connect_failures"] = self.connect_failures
        return d

    def subscribe(self, topic, qos=0, **kw):
        # Subscribes now when up; when down, remembers the subscription and
        # makes it after the next connect (returns None then). A refusal by
        # the broker still raises.
        try:
            x = None
            if self.is_connected():
                s = self.engine.subs
                try:
                    return super().subscribe(topic, qos, **kw)
                except OSError as e:
                    if self.is_connected():  # the broker refused: not a link problem
                        raise
                    x = e
                if self.engine.subs is not s and self.subscription(topic, qos, **kw) in self.engine.subs:
                    # The SUBACK came (the session's list replaced, this one in
                    # it): what closed the link is the checkpoint after it (a
                    # write error, EIO: request.py). Made, kept in the session
                    # in RAM, on flash with the next connect's checkpoint; not
                    # queued (it was SUBSCRIBEd a second time after the reconnect).
                    self.link_down(x)
                    return None
            # A bad filter raises now, not at a reconnect; so does a SUBSCRIBE
            # larger than buf_size or the last CONNACK's Maximum Packet Size.
            from .filters import check
            check(self, *self.subscription(topic, qos, **kw))
            self.pending_subs.append((topic, qos, kw))
            if x is not None:
                self.link_down(x)            # kept first: an on_down that raises loses no subscription
            return None
        finally:
            unload()                     # (filters.py, when it checked one kept for later)

    def unsubscribe(self, topic):
        # Unsubscribes now when up; when down, the UNSUBSCRIBE goes after
        # the next connect, in its turn among the subscriptions made while
        # down (returns None then); those made for this filter before it
        # are dropped. (MQTTClient's raised NotConnected, and a
        # subscription made while down was made all the same.)
        x = None
        if self.is_connected():
            try:
                return super().unsubscribe(topic)
            except OSError as e:
                if self.is_connected():  # the broker refused: not a link problem
                    raise
                x = e
        f = as_bytes(topic)
        from .filters import check       # (a bad filter raises now, not out of every reconnect's poll())
        try:
            check(self, f, -1, 0)
        finally:
            del check
            unload()
        self.pending_subs = [p for p in self.pending_subs if as_bytes(p[0]) != f]
        self.pending_subs.append((topic, -1, None))
        if x is not None:
            self.link_down(x)
        return None

    # ------------------------------------------------------------ for the front ends
    def offline(self):
        # While down: reports a drop noticed inside publish() (its send path
        # does not raise), lets batches and acknowledgements due reach flash,
        # and returns the ms until the next connect attempt (0: now).
        if self._up:
            self.link_down(OSError(-1, "link dropped while sending"))    # (or the failure kept)
        j = self.journal
        if j is not None and (j.nacks or j.nbatch):
            self.tick()
        if self.v5:
            self.props.tick(self.engine, time.ticks_ms())   # Message Expiry across a long outage
        return max(0, time.ticks_diff(self._next_try, time.ticks_ms()))

    def reconnecting(self, bring_up=True):
        # One connect attempt, as steps (a generator, see MQTTClient):
        # the network link (bring_up False: AsyncClient awaited it), CONNECT
        # to the broker whose turn it is (a clean start if an MQTT 5 broker
        # has a session this device lost), then the subscriptions made
        # while down.
        if bring_up and self.link is not None and not self.link.isconnected():
            r = self.link.up(self.timeout_ms)
            if hasattr(r, "send"):
                # async def up(): its coroutine object is truthy, and was
                # taken for success without ever running.
                r.close()
                raise TypeError("link.up() is a coroutine function: that link needs AsyncClient")
            if not r:
                raise OSError(-1, "network link did not come up")
        host, port = self.servers[self._turn]
        self.server = host
        self.port = port
        self._used = self._turn
        self._connect_at = time.ticks_ms()
        self._marks = (self.engine.floods, self._taken())
        try:
            yield from self.connecting(None, None, host, port)
        except SessionError:
            yield from self.connecting(True, None, host, port, True)
        yield from self._subscribes_first()

    def holds_outbox(self):
        # connect.py asks, before it sends the outbox: the subscriptions
        # made while down go first (then _subscribes_first() sends it), so
        # that once the broker has a message the device queued, it has the
        # device's subscriptions too (a backend that answers a first boot's
        # telemetry with a command finds its subscriber). Not after one of
        # them failed with its link (no SUBACK, the broker closed on it):
        # held for it, the outbox went out on no connection at all while
        # the broker kept refusing that way. AsyncClient's subscribe()
        # calls made while down hold it alike (subs_waiting: until their
        # first attempt, for one connection at most; aio.py sends it).
        return bool(self.pending_subs or self.subs_waiting) and not self.subs_failed

    def _subscribes_first(self):
        # The subscriptions made while down, then the outbox connect.py
        # held back for them (still held for an AsyncClient subscribe()
        # waiting to go: it sends it). Any failure sends what it can first
        # (a link still up: a MemoryError loading request.py, say).
        try:
            yield from self._subscribe_pending()
        except Exception:
            self.conn.release()
            raise
        if not self.holds_outbox():
            self.conn.release()

    def _subscribe_pending(self):
        # The subscriptions made while down, as steps (after any connect).
        # The link is up: the last failure is over (cleared here, not after
        # these, which report a refusal in last_error).
        self.last_error = None
        while self.pending_subs:
            topic, qos, kw = self.pending_subs[0]
            sub = self.subscription(topic, qos, **kw) if kw is not None else (as_bytes(topic), -1, 0)
            s = self.engine.subs
            try:
                yield from self.requesting(*sub)
            except (ConnectRefused, PacketTooLarge) as x:
                # The broker refused it, or it is larger than the broker
                # takes: reported, never retried (it would otherwise fail
                # every reconnect for ever). A link failure keeps it for the
                # next connect.
                self.last_error = x
            except ProtocolError:
                self.subs_failed = True
                # Its answer was malformed or not the one awaited
                # (request.ack) and the link closed over it: dropped as a
                # refusal is, and reported by this attempt's failure
                # (last_error). subscribe() queued it after a first such
                # answer; sent at every reconnect, it failed every one.
                if self.conn.result == _BAD_ANSWER:
                    self.pending_subs.pop(0)
                raise
            except OSError:
                # Its SUBACK came, then its checkpoint failed the attempt (a
                # write error: subscribe() above): made, not sent again.
                # Else its link failed (no SUBACK, closed): kept, and no
                # longer sent before the outbox (holds_outbox).
                if self.engine.subs is not s and sub in self.engine.subs:
                    self.pending_subs.pop(0)
                else:
                    self.subs_failed = True
                raise
            self.pending_subs.pop(0)
        self.subs_failed = False

    def tick(self):
        # What the store holds back reaches flash (MQTTClient's): after
        # the reads, and while down. A write error there (EIO emptying an
        # acknowledged slot, appending the acknowledgements, writing a
        # batch that is due; a full filesystem) is kept in last_error, not
        # raised: poll() raised it as the message callback's, from every
        # call (each tries the write again), and loop_forever() ended;
        # AsyncClient's task ended at one while down. The client goes on
        # from RAM, where the state is whole; the store tries again at the
        # next tick and at every checkpoint (a connect's) until one gets
        # through. A boot before then finds what flash last took: an
        # acknowledged QoS 1 message is sent again; a QoS 2 one past PUBREC
        # gets its PUBREL again, never its PUBLISH (its OUT_REL is on flash
        # since the PUBREC; filestore.py empties the OUT_PUB first).
        # last_error is the link's too, and a reconnect replaces it: the
        # first such error is also the event "store_error", and kept in
        # store_error until the store holds nothing back (store_ok(): here,
        # at a connect, in poll()); the flash failing is a state, not one
        # call's failure: a device may remount or reset.
        try:
            MQTTClient.tick(self)
        except OSError as x:
            self.last_error = x
            if self.store_error is None:
                self.store_error = x
                self.event("store_error", {"error": x})
            return
        if self.store_error is not None:
            self.store_ok()

    def store_ok(self):
        # store_error is over once the store holds nothing back: a tick
        # that wrote nothing (acknowledgements wait for an empty window) or
        # a connect whose checkpoint was refused (store_full) is not that.
        j = self.journal
        if j is None or not (j.nacks or j.nbatch or getattr(j, "refused", False) or getattr(j, "behind", False)):
            self.store_error = None

    def link_up(self):
        # An attempt succeeded (the backoff is reset once the link has lasted:
        # link_down). What the event callback raised in it comes out now
        # (report()), and on_up runs whatever it was: an exception from
        # on_up comes out in its place. (on_up called first and raising
        # skipped report(): the event callback's exception stayed, to come
        # out of a later connect as that one's.)
        self._up = True
        self._up_at = time.ticks_ms()
        self.store_ok()
        try:
            self.report()
        finally:
            if self.on_up:
                self.on_up(self)

    def _flooded(self):
        # Since the last connect attempt began, a link closed because the
        # broker sent more QoS 2 messages than the table of unreleased ids
        # holds (session.py, _rx2_full), after some were taken: progress,
        # which the next link goes on with, on the same broker after the
        # first delay (mosquitto draining its queue so is not met by a
        # backoff that doubles per 64 messages). A table full from the
        # start took nothing and counts as a failure. (A PUBLISH the full
        # table did not take is not counted as received: inbound.incoming.
        # One the engine refused, session.py's _rx2_full, is: hence the minus.)
        floods, taken = self._marks
        floods = self.engine.floods - floods
        return floods and self._taken() - taken > 0

    def _taken(self):
        return self.counts[_RECEIVED] - self.counts[_DUP_IN]

    def link_down(self, exc, attempt=False):
        # The link failed (attempt=True: a connect attempt failed): schedule
        # the next attempt, on the next broker after a failed attempt.
        was_up = self._up
        self._up = False
        k = self.conn
        if k is not None:
            k.drop()                  # (the core has closed it already when it failed)
            # The first failure the link met, if still kept, is the cause
            # (a callback's write that failed in a subscribe(), whose own
            # "closed before the SUBACK" followed); reported here, not again
            # by the next call.
            exc = k.failure or exc
            k.failure = None
        self.last_error = exc
        flooded = self._flooded()
        used = self._used
        self._used = -1               # (a CONNECT of the next attempt sets it)
        if attempt and not flooded:
            self.connect_failures += 1
            if used == self._turn:
                # Its CONNECT went to the broker whose turn it was: the turn
                # passes. Not when none went (the network link did not come
                # up): no broker failed.
                self._turn = (self._turn + 1) % len(self.servers)
        elif flooded or was_up and not 0 <= time.ticks_diff(time.ticks_ms(), self._up_at) < _STABLE_MS:
            # (Negative: the link outlived half the ticks period, 6.2 days
            # on a board, and the difference wrapped.)
            self._backoff = 0
        self._backoff = min(self.backoff_max, self._backoff * 2 if self._backoff else self.backoff_min)
        jitter = self._backoff // 2
        delay = self._backoff - jitter + (random.getrandbits(16) * jitter >> 16)
        if self._turn != used and used >= 0:
            # (A CONNECT of this attempt, so since is recent: taken from
            # a link that had lasted days, it wrapped, and read as days.)
            since = time.ticks_diff(time.ticks_ms(), self._connect_at)
            if 0 <= since < _SWITCH_MS:
                delay = max(delay, _SWITCH_MS - since)
        self._next_try = time.ticks_add(time.ticks_ms(), delay)
        if was_up:
            self.link_downs += 1
            if self.on_down:
                self.on_down(self, exc)
