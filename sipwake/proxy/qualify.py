"""Liveness of UDP bindings without push parameters: OPTIONS pings (sans-IO).

Theory of operation
-------------------
A UDP binding has no connection whose loss tells that its device went away. One with
push parameters needs no proof of life: ``udp_foreground_s`` after its last REGISTER
it is *suspended*, and a call wakes it with a push (``sipwake.registrar.state``); it is
never pinged. One without push parameters cannot be woken, so the node checks that
it still answers, as Asterisk's ``qualify`` and Kamailio's nathelper pings do:

* every sign of life counts: the REGISTER that made or refreshed the binding
  (``watch``), any message from its source address and port (``seen``: requests,
  responses, and the CRLF or STUN keep-alives the transport reports), and any
  response to a ping, 4xx and 5xx included (``answered``);
* ``window`` seconds (the user's ``udp_foreground_s``) after the last one, a ping is
  due: an OPTIONS (RFC 3261 §11) from the server to the contact, sent to the
  binding's source address (its NAT binding, RFC 3581) as a client transaction of
  the transaction layer, preceded by the binding's Path (RFC 3327) as Route;
* no sign of life within ``timeout_s`` of the ping: the binding is unreachable
  (``ReachabilityChanged(reachable=False)``); its client state reads offline and
  calls are not forked to it. It stays registered until it expires or the device
  removes it (a registrar does not delete bindings on its own, RFC 3261 §10.3);
* any later sign of life, the late answer to that very ping included, makes it
  reachable again (``ReachabilityChanged(reachable=True)``);
* an unreachable binding is pinged again one ``window`` after its last ping.

Bounds: one ping per binding at a time (a ping not answered yet, whose transaction
still runs, up to Timer F, holds back the next), and at most ``per_s`` pings a second
over all bindings (a token bucket holding one second's worth): the pings a registration
storm makes due at the same moment, ``window`` later, go out spread at that rate, and
100,000 idle bindings cost ``per_s`` small datagrams a second, not a flood.

A binding registered through an edge proxy (it has a Path) is not kept alive by
traffic from its source address: that is the proxy, which carries every other
device's traffic too; only its REGISTERs and the answers to its pings count.

The qualifier keeps no clock: ``next_deadline``/``handle_timeout`` drive it, and only
``handle_timeout`` sends. Times are monotonic seconds.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from sipwake.errors import SipParseError
from sipwake.ids import Ids
from sipwake.proxy.routing import Locality, uri_peer
from sipwake.registrar.bindings import Binding
from sipwake.sip.message import Request
from sipwake.sip.parser import parse_message
from sipwake.sip.peer import Peer
from sipwake.transaction.events import Output
from sipwake.transaction.keys import ClientKey
from sipwake.transaction.layer import TransactionLayer

__all__ = ["Qualifier", "QualifyOutput", "QualifySettings", "ReachabilityChanged"]

#: A token, give or take the rounding of refilling it in steps: at the time ``_token_at``
#: names, the bucket must count as holding one (else that deadline would come back).
_WHOLE = 1.0 - 1e-9


@dataclass(frozen=True, slots=True, kw_only=True)
class QualifySettings:
    """``calls.udp_qualify*`` (README "Calls to phones that sleep")."""

    enabled: bool = True
    timeout_s: float = 6.0
    """How long a ping waits for a sign of life before the binding is unreachable
    (shorter than Timer F, 32 s: the transaction goes on, and a late answer counts)."""
    per_s: float = 200.0
    """Pings sent per second at most, over all bindings."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReachabilityChanged:
    """A UDP binding without push parameters stopped or started answering."""

    binding_id: str
    aor: str
    reachable: bool
    reason: str


QualifyOutput = Output | ReachabilityChanged


@dataclass(slots=True, kw_only=True)
class _Watch:
    binding: Binding
    window: float
    last_seen: float
    """The latest sign of life."""
    pinged_at: float | None = None
    """When the latest ping was sent."""
    key: ClientKey | None = None
    """The ping transaction under way."""
    unreachable: bool = False
    queued: int = 0
    """The order number of this binding's entry in the due heap (0: none)."""


class Qualifier:
    """Pings UDP bindings without push parameters; see the module docstring."""

    def __init__(
        self, *, layer: TransactionLayer, ids: Ids, locality: Locality, settings: QualifySettings
    ) -> None:
        self._layer = layer
        self._ids = ids
        self._locality = locality
        self.settings = settings
        self._watches: dict[str, _Watch] = {}
        self._by_source: dict[tuple[str, int], tuple[str, ...]] = {}
        """(host, port) a binding registered from → its binding ids (no Path)."""
        self._pings: dict[ClientKey, str] = {}
        self._due: list[tuple[float, int, str]] = []
        self._timeouts: list[tuple[float, int, str, float]] = []
        """(deadline, order, binding id, when its ping was sent)."""
        self._seq = 0
        self._tokens = max(1.0, settings.per_s)
        self._filled_at: float | None = None
        self.pings_sent = 0

    def __len__(self) -> int:
        return len(self._watches)

    @staticmethod
    def applies(binding: Binding) -> bool:
        """A UDP binding without push parameters (the only kind pinged)."""
        source = binding.source
        return binding.push is None and source.flow is None and not source.reliable

    # -- bindings -------------------------------------------------------------------------
    def watch(self, binding: Binding, window: float) -> None:
        """``binding`` was added, refreshed or restored (its ``registered_at`` is a sign of
        life), or lost its push parameters. Bindings the qualifier does not ping are
        forgotten."""
        if not self.settings.enabled or not self.applies(binding):
            self.forget(binding.binding_id)
            return
        watch = self._watches.get(binding.binding_id)
        if watch is None:
            watch = _Watch(binding=binding, window=window, last_seen=binding.registered_at)
            self._watches[binding.binding_id] = watch
        else:
            self._unindex(watch.binding)
            watch.binding = binding
            watch.window = window
            watch.last_seen = max(watch.last_seen, binding.registered_at)
            watch.unreachable = False
        if not binding.path:
            peer = _where(binding)
            where = (peer.host, peer.port)
            self._by_source[where] = (*self._by_source.get(where, ()), binding.binding_id)
        if not watch.queued:
            self._queue(watch)

    def forget(self, binding_id: str) -> None:
        """The binding is gone (removed, expired) or no longer pinged."""
        watch = self._watches.pop(binding_id, None)
        if watch is not None:
            self._unindex(watch.binding)

    def reachable(self, binding_id: str) -> bool:
        """False for a watched binding that did not answer its last ping in time and
        showed no sign of life since; True for every other binding."""
        watch = self._watches.get(binding_id)
        return watch is None or not watch.unreachable

    # -- signs of life ----------------------------------------------------------------------
    def seen(self, source: Peer, now: float) -> list[ReachabilityChanged]:
        """A message or keep-alive arrived over UDP from ``source``."""
        found = self._by_source.get((source.host, source.port))
        if found is None:
            return []
        out: list[ReachabilityChanged] = []
        for binding_id in found:
            watch = self._watches.get(binding_id)
            if watch is not None:
                out += self._alive(watch, now, "traffic from its address")
        return out

    def owns(self, key: ClientKey) -> bool:
        """A ping transaction of ours (its outcome goes to ``answered`` and
        ``transaction_ended``)."""
        return key in self._pings

    def answered(self, key: ClientKey, status: int, now: float) -> list[ReachabilityChanged]:
        """A response to a ping: whatever its status, the device is there. A final one
        settles the ping (its transaction lingers only to absorb retransmissions)."""
        binding_id = self._pings.get(key)
        watch = self._watches.get(binding_id) if binding_id is not None else None
        if watch is None:
            return []
        out = self._alive(watch, now, f"answered OPTIONS {status}")
        if status >= 200 and watch.key == key:
            watch.key = None
            if not watch.queued:
                self._queue(watch)
        return out

    def transaction_ended(self, key: ClientKey) -> None:
        """A ping transaction ended (answered, timed out or failed): the next may follow."""
        binding_id = self._pings.pop(key, None)
        watch = self._watches.get(binding_id) if binding_id is not None else None
        if watch is not None and watch.key == key:
            watch.key = None
            if not watch.queued:
                self._queue(watch)

    def _alive(self, watch: _Watch, now: float, reason: str) -> list[ReachabilityChanged]:
        watch.last_seen = max(watch.last_seen, now)
        if not watch.unreachable:
            return []
        watch.unreachable = False
        binding = watch.binding
        return [
            ReachabilityChanged(
                binding_id=binding.binding_id, aor=binding.aor, reachable=True, reason=reason
            )
        ]

    # -- timers ---------------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        due = self._due
        while due and not self._current(due[0]):
            heapq.heappop(due)
        earliest: float | None = None
        if due:
            earliest = max(due[0][0], self._token_at())
        if self._timeouts:
            deadline = self._timeouts[0][0]
            if earliest is None or deadline < earliest:
                earliest = deadline
        return earliest

    def handle_timeout(self, now: float) -> list[QualifyOutput]:
        """Bindings whose ping went unanswered turn unreachable; due pings are sent, as
        many as the rate allows."""
        out: list[QualifyOutput] = []
        timeouts = self._timeouts
        while timeouts and timeouts[0][0] <= now:
            _, _, binding_id, sent_at = heapq.heappop(timeouts)
            watch = self._watches.get(binding_id)
            if (
                watch is None
                or watch.pinged_at != sent_at
                or watch.last_seen >= sent_at
                or watch.unreachable
            ):
                continue
            watch.unreachable = True
            out.append(
                ReachabilityChanged(
                    binding_id=binding_id,
                    aor=watch.binding.aor,
                    reachable=False,
                    reason=f"no answer to OPTIONS in {self.settings.timeout_s:g} s",
                )
            )
        due = self._due
        while due and due[0][0] <= now:
            entry = due[0]
            if not self._current(entry):
                heapq.heappop(due)
                continue
            watch = self._watches[entry[2]]
            at = self._due_at(watch)
            if at > now:
                heapq.heappop(due)
                self._queue(watch, at)
                continue
            if watch.key is not None:  # the last ping still runs: it queues the next
                heapq.heappop(due)
                watch.queued = 0
                continue
            if not self._take_token(now):
                break
            heapq.heappop(due)
            watch.queued = 0
            out += self._ping(watch, now)
        return out

    def _current(self, entry: tuple[float, int, str]) -> bool:
        watch = self._watches.get(entry[2])
        return watch is not None and watch.queued == entry[1]

    @staticmethod
    def _due_at(watch: _Watch) -> float:
        last = watch.last_seen
        if watch.pinged_at is not None and watch.pinged_at > last:
            last = watch.pinged_at  # unanswered: once a window, from the last ping
        return last + watch.window

    def _queue(self, watch: _Watch, at: float | None = None) -> None:
        self._seq += 1
        watch.queued = self._seq
        deadline = self._due_at(watch) if at is None else at
        heapq.heappush(self._due, (deadline, self._seq, watch.binding.binding_id))

    def _unindex(self, binding: Binding) -> None:
        peer = _where(binding)
        where = (peer.host, peer.port)
        found = self._by_source.get(where)
        if found is None or binding.binding_id not in found:
            return
        rest = tuple(i for i in found if i != binding.binding_id)
        if rest:
            self._by_source[where] = rest
        else:
            del self._by_source[where]

    # -- the rate cap ---------------------------------------------------------------------------
    def _take_token(self, now: float) -> bool:
        rate = self.settings.per_s
        if self._filled_at is not None and now > self._filled_at:
            self._tokens = min(max(1.0, rate), self._tokens + (now - self._filled_at) * rate)
        if self._filled_at is None or now > self._filled_at:
            self._filled_at = now
        if self._tokens >= _WHOLE:
            self._tokens -= 1.0
            return True
        return False

    def _token_at(self) -> float:
        """When the bucket next holds a whole token."""
        if self._tokens >= _WHOLE or self._filled_at is None:
            return 0.0
        return self._filled_at + (1.0 - self._tokens) / self.settings.per_s

    # -- the ping ---------------------------------------------------------------------------------
    def _ping(self, watch: _Watch, now: float) -> list[QualifyOutput]:
        binding = watch.binding
        listener = self._locality.listener_for(binding.source.transport)
        lines = [
            f"OPTIONS {binding.forward_uri()} SIP/2.0",
            f"Via: SIP/2.0/{listener.via_transport} {listener.host_port}"
            f";branch={self._ids.branch()};rport",
            "Max-Forwards: 70",
            *(f"Route: {route}" for route in binding.path),
            f"From: <sip:sipwake@{self._locality.domain}>;tag={self._ids.tag()}",
            f"To: <{binding.aor}>",
            f"Call-ID: {self._ids.call_id()}",
            "CSeq: 1 OPTIONS",
            "Accept: application/sdp",
            "Content-Length: 0",
        ]
        try:
            request = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
        except SipParseError:  # a contact we cannot write into a Request-URI: not pinged
            self.forget(binding.binding_id)
            return []
        assert isinstance(request, Request)
        key, out = self._layer.send_request(request, _where(binding), now)
        self._pings[key] = binding.binding_id
        watch.key = key
        watch.pinged_at = now
        self.pings_sent += 1
        self._seq += 1
        deadline = now + self.settings.timeout_s
        heapq.heappush(self._timeouts, (deadline, self._seq, binding.binding_id, now))
        return list(out)


def _where(binding: Binding) -> Peer:
    """Where a pinged binding is reached and shows signs of life: its Contact, or the
    REGISTER's source behind a NAT, with outbound or through an edge proxy (Path) —
    as calls reach it (``sipwake.registrar.reach``)."""
    if binding.path or binding.reach_source():
        return binding.source
    peer = uri_peer(binding.forward_uri())
    return peer if peer is not None and peer.transport == "udp" else binding.source
