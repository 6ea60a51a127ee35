"""The presence agent: SUBSCRIBE/NOTIFY for the presence of local users (sans-IO).

Theory of operation
-------------------
The node hands in every SUBSCRIBE for a local user's AOR that it has let
through (authenticated, or the server runs open) with ``subscribe``, and the
refreshes in the dialogs the agent created (``owns_dialog``). The agent is the
notifier of RFC 6665 §4.2 for the ``presence`` event package (RFC 3856):

* a SUBSCRIBE for any other event package gets 489 Bad Event with
  ``Allow-Events: presence``; an ``Accept`` without ``application/pidf+xml``
  406; an ``Expires`` below ``min_expires_s`` 423 with ``Min-Expires``
  (longer ones are cut to ``max_expires_s``; none means ``default_expires_s``);
* an accepted SUBSCRIBE gets 200 (with To tag, Expires and Contact) and at
  once a NOTIFY with the current state (``Subscription-State: active``) and a
  PIDF body (``pidf.py``); a refresh likewise;
* ``changed(aors, now)``: the node says the bindings of these AORs changed
  (registration, removal, expiry, a flow lost, a dead push token); the agent
  asks ``state_of`` and sends a NOTIFY to each subscription whose state differs
  from the last one it notified;
* time alone changes a state too: a UDP binding with push parameters is
  foreground only for ``udp_foreground_s`` after its REGISTER, then suspended
  (``sipwake.registrar.state``). For each watched AOR the agent asks
  ``changes_at`` when its state would next change with nothing else happening,
  keeps that as a deadline, and then checks as ``changed`` does (a re-REGISTER
  before it moves the deadline);
* ``Expires: 0`` (unsubscribe, or a one-off fetch) and the expiry of a
  subscription end it with a final NOTIFY ``Subscription-State:
  terminated;reason=timeout``;
* a NOTIFY answered 481 (or timing out, or any final status but 2xx) ends the
  subscription without another NOTIFY (RFC 6665 §4.2.2).

NOTIFYs go to the flow the SUBSCRIBE came over when it is still open, else to
the subscriber's Contact (``reach``). The agent keeps no clock:
``next_deadline``/``handle_timeout`` drive the expiries and those re-checks.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sipwake.ids import Ids
from sipwake.presence.pidf import PIDF_TYPE, Presence, pidf_document
from sipwake.proxy.routing import LocalAddress, Locality
from sipwake.sip.message import Request, make_response
from sipwake.sip.parser import parse_message
from sipwake.sip.peer import Peer
from sipwake.sip.uri import Uri
from sipwake.transaction.events import Output
from sipwake.transaction.keys import ClientKey, ServerTransactionKey
from sipwake.transaction.layer import TransactionLayer

__all__ = ["EVENT", "PresenceAgent"]

EVENT = "presence"


@dataclass(slots=True, kw_only=True)
class _Subscription:
    aor: str
    call_id: str
    local_tag: str
    local: str
    """The SUBSCRIBE's To value (our side of the dialog, without tag)."""
    remote: str
    """The SUBSCRIBE's From value (the subscriber, with its tag)."""
    remote_target: Uri
    route_set: tuple[str, ...]
    peer: Peer
    listener: LocalAddress
    event: str
    expires_at: float
    cseq: int = 0
    notified: Presence | None = None


class PresenceAgent:
    """Presence subscriptions to local users; see the module docstring."""

    def __init__(
        self,
        *,
        layer: TransactionLayer,
        ids: Ids,
        locality: Locality,
        state_of: Callable[[str, float], Presence],
        reach: Callable[[Peer, Uri], Peer | None],
        changes_at: Callable[[str, float], float | None] | None = None,
        min_expires_s: int = 60,
        max_expires_s: int = 3600,
        default_expires_s: int = 3600,
    ) -> None:
        self._layer = layer
        self._ids = ids
        self._locality = locality
        self._state_of = state_of
        self._reach = reach
        self._changes_at = changes_at
        self.min_expires_s = min_expires_s
        self.max_expires_s = max_expires_s
        self.default_expires_s = default_expires_s
        self._subs: dict[tuple[str, str], _Subscription] = {}
        """(Call-ID, our tag) → subscription."""
        self._by_aor: dict[str, set[tuple[str, str]]] = {}
        self._notifies: dict[ClientKey, tuple[str, str]] = {}
        self._timers: list[tuple[float, int, tuple[str, str]]] = []
        self._timer_seq = 0
        self._rechecks: list[tuple[float, int, str]] = []
        self._recheck_at: dict[str, float] = {}
        """Watched AOR → when its state changes by time alone (``changes_at``)."""

    def __len__(self) -> int:
        return len(self._subs)

    def watched(self) -> set[str]:
        """AORs somebody subscribes to."""
        return set(self._by_aor)

    def owns_dialog(self, request: Request) -> bool:
        """An in-dialog SUBSCRIBE for one of our subscriptions."""
        tag = request.to.tag
        return tag is not None and (request.call_id, tag) in self._subs

    def owns(self, key: ClientKey) -> bool:
        """A NOTIFY transaction of ours."""
        return key in self._notifies

    # -- SUBSCRIBE ------------------------------------------------------------------------
    def subscribe(
        self,
        key: ServerTransactionKey,
        request: Request,
        source: Peer,
        listener: LocalAddress,
        aor: str,
        now: float,
    ) -> list[Output]:
        """A SUBSCRIBE for ``aor`` (initial, or a refresh in one of our dialogs)."""
        event_header = request.headers.get("Event") or ""
        event = event_header.split(";", 1)[0].strip().lower()
        if event != EVENT:
            return self._respond(key, request, 489, now, ("Allow-Events", EVENT))
        accept = [a.split(";", 1)[0].strip().lower() for a in request.headers.values("Accept")]
        if accept and not {PIDF_TYPE, "application/*", "*/*"} & set(accept):
            return self._respond(key, request, 406, now, ("Accept", PIDF_TYPE))
        expires = request.expires
        if expires is None:
            expires = self.default_expires_s
        if 0 < expires < self.min_expires_s:
            return self._respond(key, request, 423, now, ("Min-Expires", str(self.min_expires_s)))
        expires = min(expires, self.max_expires_s)
        tag = request.to.tag
        if tag is not None:
            sub = self._subs.get((request.call_id, tag))
            if sub is None:
                return self._respond(key, request, 481, now)
            sub.peer = source
            sub.listener = listener
        else:
            contacts = request.contacts or []
            if not contacts:
                return self._respond(key, request, 400, now, reason="Missing Contact")
            sub = _Subscription(
                aor=aor,
                call_id=request.call_id,
                local_tag=self._ids.tag(),
                local=request.headers.get("To") or str(request.to),
                remote=request.headers.get("From") or str(request.from_),
                remote_target=contacts[0].uri,
                route_set=tuple(request.headers.values("Record-Route")),
                peer=source,
                listener=listener,
                event=event_header.strip(),
                expires_at=now,
            )
        ok = make_response(request, 200, to_tag=sub.local_tag)
        ok.headers.add("Expires", str(expires))
        ok.headers.add("Contact", _contact(listener))
        for value in request.headers.get_all("Record-Route"):
            ok.headers.add("Record-Route", value)
        out = list(self._layer.respond(key, ok, now))
        if expires == 0:
            self._forget(sub)
            return out + self._notify(sub, now, terminated=True)
        sub.expires_at = now + expires
        ident = (sub.call_id, sub.local_tag)
        if ident not in self._subs:
            self._subs[ident] = sub
            self._by_aor.setdefault(aor, set()).add(ident)
        self._timer_seq += 1
        heapq.heappush(self._timers, (sub.expires_at, self._timer_seq, ident))
        out += self._notify(sub, now)
        self._plan_recheck(aor, now)
        return out

    def _respond(
        self,
        key: ServerTransactionKey,
        request: Request,
        status: int,
        now: float,
        *extra: tuple[str, str],
        reason: str | None = None,
    ) -> list[Output]:
        response = make_response(request, status, reason, to_tag=self._ids.tag())
        for name, value in extra:
            response.headers.add(name, value)
        return list(self._layer.respond(key, response, now))

    # -- state changes and NOTIFY ------------------------------------------------------------
    def changed(self, aors: Iterable[str], now: float) -> list[Output]:
        """The bindings of ``aors`` changed: notify subscribers whose view is now stale."""
        out: list[Output] = []
        for aor in sorted(set(aors) & set(self._by_aor)):
            state = self._state_of(aor, now)
            for ident in sorted(self._by_aor.get(aor, ())):
                sub = self._subs[ident]
                if sub.notified != state:
                    out += self._notify(sub, now, state=state)
            self._plan_recheck(aor, now)
        return out

    def _plan_recheck(self, aor: str, now: float) -> None:
        """Keep the time ``aor``'s state next changes by time alone as a deadline."""
        at = None
        if self._changes_at is not None and aor in self._by_aor:
            at = self._changes_at(aor, now)
        if at is None or at <= now:
            self._recheck_at.pop(aor, None)
            return
        if self._recheck_at.get(aor) != at:
            self._recheck_at[aor] = at
            self._timer_seq += 1
            heapq.heappush(self._rechecks, (at, self._timer_seq, aor))

    def notify_answered(self, key: ClientKey, status: int, now: float) -> list[Output]:
        """The subscriber answered a NOTIFY (408 for a timeout)."""
        del now
        if status < 200:
            return []
        ident = self._notifies.pop(key, None)
        sub = self._subs.get(ident) if ident is not None else None
        if sub is not None and status >= 300:
            self._forget(sub)  # RFC 6665 §4.2.2: 481 and other failures end it
        return []

    def _notify(
        self,
        sub: _Subscription,
        now: float,
        *,
        terminated: bool = False,
        state: Presence | None = None,
    ) -> list[Output]:
        if state is None:
            state = self._state_of(sub.aor, now)
        peer = self._reach(sub.peer, sub.remote_target)
        if peer is None:
            self._forget(sub)
            return []
        sub.notified = state
        sub.cseq += 1
        if terminated:
            status = "terminated;reason=timeout"
        else:
            status = f"active;expires={max(int(sub.expires_at - now), 0)}"
        listener = self._locality.listener_for(peer.transport)
        body = pidf_document(sub.aor, state)
        lines = [
            f"NOTIFY {sub.remote_target} SIP/2.0",
            f"Via: SIP/2.0/{listener.via_transport} {listener.host_port}"
            f";branch={self._ids.branch()};rport",
            "Max-Forwards: 70",
            *(f"Route: {route}" for route in sub.route_set),
            f"From: {sub.local};tag={sub.local_tag}",
            f"To: {sub.remote}",
            f"Call-ID: {sub.call_id}",
            f"CSeq: {sub.cseq} NOTIFY",
            f"Contact: {_contact(sub.listener)}",
            f"Event: {sub.event}",
            f"Subscription-State: {status}",
            f"Content-Type: {PIDF_TYPE}",
            f"Content-Length: {len(body)}",
        ]
        request = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        assert isinstance(request, Request)
        key, out = self._layer.send_request(request, peer, now)
        if not terminated:
            self._notifies[key] = (sub.call_id, sub.local_tag)
        return out

    def _forget(self, sub: _Subscription) -> None:
        ident = (sub.call_id, sub.local_tag)
        if self._subs.pop(ident, None) is None:
            return
        idents = self._by_aor.get(sub.aor)
        if idents is not None:
            idents.discard(ident)
            if not idents:
                del self._by_aor[sub.aor]
                self._recheck_at.pop(sub.aor, None)

    def forget_transaction(self, key: ClientKey) -> None:
        """A NOTIFY transaction ended (after its response or timeout)."""
        self._notifies.pop(key, None)

    # -- timers -------------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        timers = self._timers
        expiry = None
        while timers:
            deadline, _, ident = timers[0]
            sub = self._subs.get(ident)
            if sub is not None and sub.expires_at == deadline:
                expiry = deadline
                break
            heapq.heappop(timers)
        rechecks = self._rechecks
        while rechecks:
            deadline, _, aor = rechecks[0]
            if self._recheck_at.get(aor) == deadline:
                return deadline if expiry is None else min(deadline, expiry)
            heapq.heappop(rechecks)
        return expiry

    def handle_timeout(self, now: float) -> list[Output]:
        """Watched users whose state changed by time alone are notified; subscriptions
        that were not refreshed in time end (a final NOTIFY)."""
        due: set[str] = set()
        rechecks = self._rechecks
        while rechecks and rechecks[0][0] <= now:
            deadline, _, aor = heapq.heappop(rechecks)
            if self._recheck_at.get(aor) == deadline:
                del self._recheck_at[aor]
                due.add(aor)
        out: list[Output] = self.changed(due, now) if due else []
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, _, ident = heapq.heappop(timers)
            sub = self._subs.get(ident)
            if sub is None or sub.expires_at != deadline:
                continue
            self._forget(sub)
            out += self._notify(sub, now, terminated=True)
        return out


def _contact(listener: LocalAddress) -> str:
    transport = "" if listener.transport == "udp" else f";transport={listener.transport}"
    return f"<sip:{listener.host_port}{transport}>"
