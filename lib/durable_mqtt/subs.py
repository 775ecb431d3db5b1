# The session engine's rules for SUBSCRIBE and UNSUBSCRIBE: the packet id of
# a request, waits abandoned whose late answer may still come, the list of
# subscriptions made. session.py's other half, as functions of the engine
# (e): loaded with request.py (and by connect.py when it resubscribes),
# unloaded after (client.unload), so a running device does not keep them.
# Sans-IO as session.py: no socket, no store, no clock.
#
# Rules:
# - MQTT-2.2.1-3: a request's id is non-zero and not in use (next_pid); an
#   id whose answer may still come stays in use.
# - MQTT-2.2.1-6 (3.1.1: 2.3.1-7; a SUBACK / UNSUBACK carries its request's id): an
#   answer with another id than the one awaited is a protocol error, unless
#   it is the late answer to a request abandoned.
from micropython import const

from .codec import fail
from .session import next_pid

_STALE = const(4)        # ids of abandoned requests kept in use, at most (session.py's)


def request(e, kind):
    # A packet id for a SUBSCRIBE (kind: the ack awaited) or UNSUBSCRIBE.
    e.req_pid = 0
    e.req_pid = e.last_pid = next_pid(e)
    e.req_kind = kind
    return e.req_pid


def abandon(e, sent=True, f=None, opts=0, sid=0):
    # The wait for the request's answer ended without it (sent: the
    # request went out, so its answer may still come). Each such answer
    # is let through once: several waits can be abandoned (cancelled)
    # before the first late answer arrives. Until it comes (or the
    # connection ends) the id stays in use (MQTT-2.2.1-3): a request
    # given it again would take the late answer for its own. f, opts,
    # sid: the request (opts < 0: an UNSUBSCRIBE), kept with its id so
    # that its late answer is recorded as an awaited one is.
    if e.req_pid and sent:
        if e.stale_n < _STALE:
            if e.stale_ids is None:
                e.stale_ids = [None] * _STALE
            e.stale_ids[e.stale_n] = (e.req_pid, f, opts, sid)
        e.stale_n += 1
    e.req_pid = 0


def answer(e, kind, pid):
    # A SUBACK / UNSUBACK: True when it is the one awaited; for the late
    # answer to an abandoned request, what abandon() kept of it
    # (pid, f, opts, sid), or None.
    if pid and pid != e.req_pid and e.stale_n:
        # The late answer to an abandoned request, of its kind (an
        # UNSUBACK for an UNSUBSCRIBE: opts < 0): its id is free again.
        # One whose id no kept request had is another request's only
        # when more were abandoned than are kept (_STALE); else it is
        # the protocol error below, as without any abandoned.
        n = e.stale_n if e.stale_n < _STALE else _STALE
        for i in range(n):
            f = e.stale_ids[i]
            if f[0] == pid and (f[2] < 0) == (kind != 0x90):
                for i in range(i, n - 1):
                    e.stale_ids[i] = e.stale_ids[i + 1]
                e.stale_n -= 1
                return f
        if e.stale_n > _STALE:
            e.stale_n -= 1           # (one of those not kept: nothing to record)
            return None
    if not pid or pid != e.req_pid or kind != e.req_kind:
        fail((18, "SUB" if kind == 0x90 else "UNSUB", pid), 0x82)  # %sACK for packet id %d, not awaiting one
    e.req_pid = 0
    return True


def subscribed(e, f, opts, sid):
    # The broker granted the subscription to filter f: the same filter
    # again replaces the one made before, as at the broker (MQTT-3.8.4-3).
    unsubscribed(e, f)
    e.subs.append((f, opts, sid))


def unsubscribed(e, f):
    e.subs = [s for s in e.subs if s[0] != f]
