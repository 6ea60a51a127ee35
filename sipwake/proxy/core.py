"""The stateful forking proxy core (RFC 3261 §16).

Theory of operation
-------------------
Each proxied request has a *response context*, keyed by its server
transaction: the original request, where it came from, and one *branch* per
target it was forked to (a client transaction each). Branches may be added
while the context lives (late forking, §16.5: a device that registers during
the call).

Responses from a branch (§16.7): 100 is absorbed; other provisionals are
forwarded at once (and reset Timer C); every 2xx is forwarded at once, even
after another final, and the first one cancels the pending branches; a 6xx
cancels the pending branches; other finals are kept until every branch has
one, then the best is forwarded (§16.7 step 6: a 6xx, else the lowest class,
with 401/407/415/420/484 preferred inside 4xx, 503 sent as 500). A branch
that times out counts as 408; Timer C (default 180 s, §16.8) cancels a
ringing INVITE branch that never answers.

CANCEL (§16.10) from the caller: the transaction layer has answered 200; the
core cancels every pending branch and answers the INVITE 487 itself. Branches
cancelled because another one answered (or declined with a 6xx) carry an
RFC 3326 Reason (``SIP;cause=200;text="Call completed elsewhere"``), so a
phone does not log the call as missed.

``send_cancelled`` sends a call's INVITE to a device that woke after the call
ended, followed at once by a CANCEL with a Reason (Flexisip's answer to iOS
CallKit: the app must report a call for its VoIP push, so it gets one and
sees it end). It belongs to no response context: the caller's Via is left
out, so its responses stop here.

ACKs for 2xx and in-dialog requests that name a next hop are forwarded
statelessly or over a new client transaction without forking; responses no
transaction knows (late 2xx retransmissions) are forwarded statelessly by
popping our Via (§16.11).

The core never picks targets for an AOR itself: the node looks bindings up
and hands in ``Target`` values, so the registrar and the call-wake engine
decide who rings.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field

from sipwake.errors import LocalProtocolError
from sipwake.frozen import interpreted_init
from sipwake.ids import Ids
from sipwake.proxy.policy import EdgePolicy
from sipwake.proxy.routing import LocalAddress, Locality, stateless_branch
from sipwake.sip.message import Request, Response, make_response
from sipwake.sip.peer import Peer, response_peer
from sipwake.sip.uri import Uri
from sipwake.transaction.events import Output, SendMessage
from sipwake.transaction.keys import ClientKey, ServerTransactionKey
from sipwake.transaction.layer import TransactionLayer

__all__ = [
    "COMPLETED_ELSEWHERE",
    "BranchesDone",
    "CallAnswered",
    "Proxy",
    "ProxyOutput",
    "Target",
    "decline_reason",
]

#: RFC 3261 §16.7 step 6: inside 4xx these carry information the caller can act on.
_PREFERRED_4XX = (401, 407, 415, 420, 484)
#: Methods that create dialogs: the proxy stays on their path (Record-Route).
_DIALOG_METHODS = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})
#: RFC 3326 Reason of the CANCELs sent when another branch answered.
COMPLETED_ELSEWHERE = 'SIP;cause=200;text="Call completed elsewhere"'


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class Target:
    """Where to fork: the Request-URI to use, the next hop, and a pre-loaded route (Path)."""

    uri: Uri
    peer: Peer
    route: tuple[str, ...] = ()
    label: str = ""
    """Who this is, for call records (e.g. the binding's instance id)."""
    binding_id: str | None = None
    """The binding this branch reaches, when it is one (the call-wake engine's key)."""
    headers: tuple[tuple[str, str], ...] = ()
    """Header fields added to this branch's request only (Diversion, History-Info)."""

    def __init__(
        self,
        *,
        uri: Uri,
        peer: Peer,
        route: tuple[str, ...] = (),
        label: str = "",
        binding_id: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.uri = uri  # type: ignore[misc]
        self.peer = peer  # type: ignore[misc]
        self.route = route  # type: ignore[misc]
        self.label = label  # type: ignore[misc]
        self.binding_id = binding_id  # type: ignore[misc]
        self.headers = headers  # type: ignore[misc]


interpreted_init(Target)


@dataclass(frozen=True, slots=True, kw_only=True)
class BranchesDone:
    """A held context (``hold=True``) has no pending branch left and sent no final
    response: the owner decides what comes next (``release``, ``add_target``…)."""

    server_key: ServerTransactionKey


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class CallAnswered:
    """The first 2xx of a context was forwarded: this target answered."""

    server_key: ServerTransactionKey
    target: Target
    status: int

    def __init__(self, *, server_key: ServerTransactionKey, target: Target, status: int) -> None:
        self.server_key = server_key  # type: ignore[misc]
        self.target = target  # type: ignore[misc]
        self.status = status  # type: ignore[misc]


interpreted_init(CallAnswered)


ProxyOutput = Output | BranchesDone | CallAnswered


@dataclass(slots=True, kw_only=True, init=False)
class _Branch:
    key: ClientKey
    target: Target | None
    """Whom it reaches, until the context has answered and the branch has its final."""
    request: Request | None
    """The request sent, until a final response arrives."""
    provisional: bool = False
    status: int | None = None
    """The first final status."""
    final: Response | None = None
    """The first final response, until the context has answered."""
    timer_c: float | None = None

    def __init__(  # written: compiled with the core (sipwake/frozen.py)
        self,
        *,
        key: ClientKey,
        target: Target | None,
        request: Request | None,
        provisional: bool = False,
        status: int | None = None,
        final: Response | None = None,
        timer_c: float | None = None,
    ) -> None:
        self.key = key
        self.target = target
        self.request = request
        self.provisional = provisional
        self.status = status
        self.final = final
        self.timer_c = timer_c


@dataclass(slots=True, kw_only=True, init=False)
class _Context:
    server_key: ServerTransactionKey
    request: Request | None
    """The request, until the context has answered and every branch has its final."""
    method: str
    source: Peer
    listener: LocalAddress
    to_tag: str
    branches: dict[ClientKey, _Branch] = field(default_factory=dict)
    final_sent: bool = False
    holding: bool = False
    """Kept open with no live branch (a device is being woken): don't answer yet."""
    loop_mark: str = ""
    """Ends the branch of each request forwarded (RFC 3261 §16.6 item 8, ``EdgePolicy``)."""

    def __init__(  # written: compiled with the core (sipwake/frozen.py)
        self,
        *,
        server_key: ServerTransactionKey,
        request: Request | None,
        method: str,
        source: Peer,
        listener: LocalAddress,
        to_tag: str,
        branches: dict[ClientKey, _Branch] | None = None,
        final_sent: bool = False,
        holding: bool = False,
        loop_mark: str = "",
    ) -> None:
        self.server_key = server_key
        self.request = request
        self.method = method
        self.source = source
        self.listener = listener
        self.to_tag = to_tag
        self.branches = {} if branches is None else branches
        self.final_sent = final_sent
        self.holding = holding
        self.loop_mark = loop_mark

    @property
    def pending(self) -> list[_Branch]:
        return [b for b in self.branches.values() if b.status is None]

    def original(self) -> Request:
        """The request, while the context may still answer it or fork it."""
        if self.request is None:
            raise LocalProtocolError(f"{self.server_key}: the context has finished")
        return self.request


class Proxy:
    """RFC 3261 §16 stateful proxy over a ``TransactionLayer``."""

    def __init__(
        self,
        *,
        layer: TransactionLayer,
        locality: Locality,
        ids: Ids,
        timer_c: float = 180.0,
        record_route: bool = True,
        policy: EdgePolicy | None = None,
    ) -> None:
        self._layer = layer
        self._policy = policy
        """Marks our Record-Route with the dialog token and our branches for loops."""
        self.locality = locality
        self._ids = ids
        self.timer_c = timer_c
        self.record_route = record_route
        self._contexts: dict[ServerTransactionKey, _Context] = {}
        self._by_client: dict[ClientKey, _Context] = {}
        self._salt = ids.token(12)
        #: Timer C deadlines: (deadline, push order, branch, method), naming the branch's
        #: ``ClientKey`` by its atomic parts: a stale entry (skipped) stays up to 180 s and
        #: keeps nothing alive, and the collector does not track it.
        self._timer_heap: list[tuple[float, int, str, str]] = []
        self._timer_seq = 0

    # -- introspection ------------------------------------------------------
    def __len__(self) -> int:
        return len(self._contexts)

    def has_context(self, key: ServerTransactionKey) -> bool:
        return key in self._contexts

    def answered(self, key: ServerTransactionKey) -> bool:
        ctx = self._contexts.get(key)
        return ctx is None or ctx.final_sent

    # -- requests -------------------------------------------------------------
    def fork(
        self,
        key: ServerTransactionKey,
        request: Request,
        source: Peer,
        listener: LocalAddress,
        targets: Iterable[Target],
        now: float,
        *,
        hold: bool = False,
    ) -> list[ProxyOutput]:
        """Start proxying ``request`` to ``targets`` (in parallel). With ``hold`` the context
        stays open even when every branch has failed, until ``release`` is called."""
        ctx = _Context(
            server_key=key,
            request=request,
            method=request.method,
            source=source,
            listener=listener,
            to_tag=self._ids.tag(),
            holding=hold,
            loop_mark="" if self._policy is None else self._policy.loop_mark(request),
        )
        self._contexts[key] = ctx
        out: list[ProxyOutput] = []
        if request.method == "INVITE":
            out += self._layer.respond(key, make_response(request, 100), now)
        for target in targets:
            out += self._add_branch(ctx, target, now)
        if not ctx.branches and not hold:
            out += self._answer(ctx, 480, now)
        self._release_finished(ctx)
        return out

    def add_target(
        self, key: ServerTransactionKey, target: Target, now: float
    ) -> list[ProxyOutput]:
        """Late forking: one more branch for a live context (a device that just registered)."""
        ctx = self._contexts.get(key)
        if ctx is None or ctx.final_sent:
            return []
        return self._add_branch(ctx, target, now)

    def provisional(
        self, key: ServerTransactionKey, status: int, now: float, reason: str | None = None
    ) -> list[ProxyOutput]:
        """Send a provisional response of the proxy's own (180 ringback while a device wakes,
        Flexisip's 110 Push sent) to the caller."""
        ctx = self._contexts.get(key)
        if ctx is None or ctx.final_sent:
            return []
        response = make_response(ctx.original(), status, reason, to_tag=ctx.to_tag)
        return self._respond(ctx, response, now)

    def cancel_branches(self, key: ServerTransactionKey, now: float) -> list[ProxyOutput]:
        """Cancel every pending branch but keep the context (to divert it elsewhere)."""
        ctx = self._contexts.get(key)
        if ctx is None or ctx.final_sent:
            return []
        return self._cancel_pending(ctx, now)

    def pending_targets(self, key: ServerTransactionKey) -> list[Target]:
        """Targets of the branches still without a final response."""
        ctx = self._contexts.get(key)
        return [] if ctx is None else [b.target for b in ctx.pending if b.target is not None]

    def final_statuses(self, key: ServerTransactionKey) -> list[int]:
        """Final statuses received from the branches so far."""
        ctx = self._contexts.get(key)
        if ctx is None:
            return []
        return [b.status for b in ctx.branches.values() if b.status is not None]

    def release(
        self, key: ServerTransactionKey, now: float, status: int = 480
    ) -> list[ProxyOutput]:
        """Stop holding: if every branch has failed (or there is none), answer now."""
        ctx = self._contexts.get(key)
        if ctx is None:
            return []
        ctx.holding = False
        if ctx.final_sent or ctx.pending:
            return []
        if ctx.branches:
            return self._send_best(ctx, now)
        return self._answer(ctx, status, now)

    def terminate(
        self, key: ServerTransactionKey, status: int, now: float, reason: str | None = None
    ) -> list[ProxyOutput]:
        """Cancel every branch and answer ``status`` (no-answer time, divert…)."""
        ctx = self._contexts.get(key)
        if ctx is None or ctx.final_sent:
            return []
        out = self._cancel_pending(ctx, now)
        return out + self._answer(ctx, status, now, reason)

    def forward(
        self,
        key: ServerTransactionKey,
        request: Request,
        source: Peer,
        listener: LocalAddress,
        next_hop: Peer,
        now: float,
    ) -> list[ProxyOutput]:
        """Proxy a request to one next hop without changing its Request-URI (loose routing,
        in-dialog requests): a context with a single branch."""
        target = Target(uri=request.uri, peer=next_hop)
        return self.fork(key, request, source, listener, [target], now)

    def forward_stateless(
        self, request: Request, listener: LocalAddress, next_hop: Peer
    ) -> list[ProxyOutput]:
        """§16.11: forward an ACK for a 2xx (or any request we keep no state for)."""
        fwd = request.copy()
        self._decrement_max_forwards(fwd)
        out_listener = self.locality.listener_for(next_hop.transport)
        branch = stateless_branch(request.top_via.branch, self._salt)
        fwd.headers.insert(
            "Via", f"SIP/2.0/{out_listener.via_transport} {out_listener.host_port};branch={branch}"
        )
        return [SendMessage(message=fwd, peer=next_hop)]

    def cancel(
        self, key: ServerTransactionKey, now: float, *, reason: str | None = None
    ) -> list[ProxyOutput]:
        """The caller sent CANCEL (§16.10): cancel the branches (passing on the caller's
        RFC 3326 ``reason``), answer the INVITE 487."""
        ctx = self._contexts.get(key)
        if ctx is None or ctx.final_sent:
            return []
        out = self._cancel_pending(ctx, now, reason=reason)
        return out + self._answer(ctx, 487, now)

    def send_cancelled(
        self, invite: Request, target: Target, now: float, *, reason: str | None
    ) -> list[ProxyOutput]:
        """Send ``invite`` (a call that already ended) to ``target`` and CANCEL it at once
        with ``reason`` (RFC 3326); the CANCEL leaves with the device's first provisional
        response (RFC 3261 §9.1). Nothing is forwarded back to the caller."""
        request = invite.copy()
        for name in ("Via", "Record-Route", "Route"):
            request.headers.remove(name)
        request.uri = target.uri
        self._decrement_max_forwards(request)
        for route in reversed(target.route):
            request.headers.insert("Route", route)
        listener = self.locality.listener_for(target.peer.transport)
        request.headers.insert(
            "Via",
            f"SIP/2.0/{listener.via_transport} {listener.host_port}"
            f";branch={self._ids.branch()};rport",
        )
        key, out = self._layer.send_request(request, target.peer, now)
        _, cancel = self._layer.cancel(key, now, reason=reason)
        return [*out, *cancel]

    # -- responses --------------------------------------------------------------
    def response_received(
        self, response: Response, key: ClientKey, now: float
    ) -> list[ProxyOutput]:
        ctx = self._by_client.get(key)
        if ctx is None:
            return self.forward_response_stateless(response)
        branch = ctx.branches[key]
        status = response.status
        if status < 200:
            if status == 100:
                return []
            branch.provisional = True
            if branch.timer_c is not None:
                self._set_timer_c(branch, now + self.timer_c)
            if ctx.final_sent:
                return []
            return self._respond(ctx, self._upstream(response), now)
        if branch.status is not None and status >= 300:
            return []  # a retransmitted final of a branch already decided
        if branch.status is None:
            branch.status = status
            branch.final = response
            branch.request = None
        branch.timer_c = None
        if status < 300:
            out: list[ProxyOutput] = self._respond(ctx, self._upstream(response), now)
            if not ctx.final_sent:
                assert branch.target is not None, "kept until the context has answered"
                ctx.final_sent = True
                out.append(
                    CallAnswered(server_key=ctx.server_key, target=branch.target, status=status)
                )
                out += self._cancel_pending(ctx, now, reason=COMPLETED_ELSEWHERE)
            self._release_finished(ctx)
            return out
        if ctx.final_sent:
            self._release_finished(ctx)
            return []
        out = []
        if status >= 600:
            out += self._cancel_pending(ctx, now, reason=decline_reason(response))
        if not ctx.pending:
            if ctx.holding:
                out.append(BranchesDone(server_key=ctx.server_key))
            else:
                out += self._send_best(ctx, now)
        self._release_finished(ctx)
        return out

    def _release_finished(self, ctx: _Context) -> None:
        """Once a context has answered and every branch has its final, only late responses
        reach it, while its transactions linger 32 s (Timers J, K, L, M) to absorb
        retransmissions; under load what it holds is what the garbage collector walks.

        A non-INVITE context is forgotten: nothing can reach it any more (no CANCEL, no 2xx
        retransmission through a proxy for a non-INVITE). An INVITE context stays while its
        server transaction lingers, as a late 2xx from a branch is still forwarded through
        it (RFC 6026 §8.6), but keeps only what that reads: keys, where the request came
        from, each branch's final status."""
        if not ctx.final_sent or ctx.pending:
            return
        if ctx.method != "INVITE":
            self._contexts.pop(ctx.server_key, None)
            for client in ctx.branches:
                self._by_client.pop(client, None)
            return
        ctx.request = None
        for branch in ctx.branches.values():
            branch.target = None
            branch.final = None

    def client_timed_out(self, key: ClientKey, now: float) -> list[ProxyOutput]:
        """Timer B/F fired on a branch: treat it as a 408 from that branch (§16.7)."""
        ctx = self._by_client.get(key)
        if ctx is None:
            return []
        branch = ctx.branches[key]
        if branch.request is None:  # its final is in
            return []
        return self.response_received(make_response(branch.request, 408), key, now)

    def transport_failed(self, key: ClientKey, now: float) -> list[ProxyOutput]:
        """§16.9: a transport error on a branch counts as a 503 from it."""
        ctx = self._by_client.get(key)
        request = None if ctx is None else ctx.branches[key].request
        if ctx is None or request is None:  # unknown, or its final is in
            return []
        return self.response_received(make_response(request, 503), key, now)

    def server_terminated(self, key: ServerTransactionKey) -> None:
        ctx = self._contexts.pop(key, None)
        if ctx is not None:
            for client in ctx.branches:
                self._by_client.pop(client, None)

    def client_terminated(self, key: ClientKey) -> None:
        ctx = self._by_client.get(key)
        if ctx is not None and ctx.final_sent and key in ctx.branches:
            status = ctx.branches[key].status
            if status is not None and status >= 300:
                self._by_client.pop(key, None)

    def forward_response_stateless(self, response: Response) -> list[ProxyOutput]:
        """§16.11 / §18.2.2: a response with no transaction goes to the next Via."""
        vias = response.via
        if len(vias) < 2:
            return []
        fwd = self._upstream(response)
        via = fwd.via[0]
        transport = via.transport.lower()
        port = via.rport or via.port or (5061 if transport == "tls" else 5060)
        host = (via.received or via.host).strip("[]")
        return [SendMessage(message=fwd, peer=Peer(transport=transport, host=host, port=port))]

    # -- timers -----------------------------------------------------------------
    def next_deadline(self) -> float | None:
        heap = self._timer_heap
        while heap:
            deadline, _, client_branch, method = heap[0]
            branch = self._branch(ClientKey(branch=client_branch, method=method))
            if branch is not None and branch.timer_c == deadline:
                return deadline
            heapq.heappop(heap)  # stale: the branch ended or its Timer C moved
        return None

    def handle_timeout(self, now: float) -> list[ProxyOutput]:
        """Fire Timer C on every branch whose deadline is ``now`` or earlier (§16.8)."""
        out: list[ProxyOutput] = []
        heap = self._timer_heap
        while heap and heap[0][0] <= now:
            deadline, _, client_branch, method = heapq.heappop(heap)
            branch = self._branch(ClientKey(branch=client_branch, method=method))
            if branch is None or branch.timer_c != deadline:
                continue
            branch.timer_c = None
            if branch.request is None:  # its final is in
                continue
            if branch.provisional:
                out += self._cancel_branch(branch, now)
            else:
                out += self.response_received(make_response(branch.request, 408), branch.key, now)
        return out

    def _branch(self, key: ClientKey) -> _Branch | None:
        ctx = self._by_client.get(key)
        return None if ctx is None else ctx.branches.get(key)

    def _set_timer_c(self, branch: _Branch, deadline: float) -> None:
        branch.timer_c = deadline
        self._timer_seq += 1
        key = branch.key
        heapq.heappush(self._timer_heap, (deadline, self._timer_seq, key.branch, key.method))

    # -- internals ----------------------------------------------------------------
    def _add_branch(self, ctx: _Context, target: Target, now: float) -> list[ProxyOutput]:
        request = ctx.original().copy()
        request.uri = target.uri
        self._decrement_max_forwards(request)
        out_listener = self.locality.listener_for(target.peer.transport)
        if self.record_route and request.method in _DIALOG_METHODS and not request.to.tag:
            if out_listener.transport != ctx.listener.transport:
                request.headers.insert("Record-Route", self._record_route(ctx.listener, request))
            request.headers.insert("Record-Route", self._record_route(out_listener, request))
        for route in reversed(target.route):
            request.headers.insert("Route", route)
        for name, value in target.headers:
            request.headers.add(name, value)
        request.headers.insert(
            "Via",
            f"SIP/2.0/{out_listener.via_transport} {out_listener.host_port}"
            f";branch={self._ids.branch()}{ctx.loop_mark};rport",
        )
        if "content-length" not in request.headers:
            request.headers.add("Content-Length", str(len(request.body)))
        key, out = self._layer.send_request(request, target.peer, now)
        branch = _Branch(key=key, target=target, request=request)
        ctx.branches[key] = branch
        self._by_client[key] = ctx
        if request.method == "INVITE":
            self._set_timer_c(branch, now + self.timer_c)
        return [*out]

    def _record_route(self, listener: LocalAddress, request: Request) -> str:
        policy = self._policy
        if policy is None:
            return listener.record_route()
        return policy.record_route(listener, request)

    @staticmethod
    def _decrement_max_forwards(request: Request) -> None:
        mf = request.max_forwards
        request.headers.set("Max-Forwards", str(69 if mf is None else max(mf - 1, 0)))

    def _upstream(self, response: Response) -> Response:
        fwd = response.copy()
        fwd.headers.pop_first_value("Via")
        return fwd

    def _cancel_pending(
        self, ctx: _Context, now: float, *, reason: str | None = None
    ) -> list[ProxyOutput]:
        out: list[ProxyOutput] = []
        if ctx.method != "INVITE":
            return out
        for branch in ctx.pending:
            branch.timer_c = None
            out += self._cancel_branch(branch, now, reason=reason)
        return out

    def _cancel_branch(
        self, branch: _Branch, now: float, *, reason: str | None = None
    ) -> list[ProxyOutput]:
        try:
            _, out = self._layer.cancel(branch.key, now, reason=reason)
        except LocalProtocolError:
            return []  # already cancelled, or its final response is in
        return [*out]

    def _respond(self, ctx: _Context, response: Response, now: float) -> list[ProxyOutput]:
        """Answer in the server transaction; a late 2xx it no longer takes goes statelessly
        (RFC 3261 §16.7 step 10)."""
        try:
            return [*self._layer.respond(ctx.server_key, response, now)]
        except LocalProtocolError:
            if not 200 <= response.status < 300:
                return []
            peer = response_peer(response.top_via, ctx.source)
            return [SendMessage(message=response, peer=peer)]

    def _answer(
        self, ctx: _Context, status: int, now: float, reason: str | None = None
    ) -> list[ProxyOutput]:
        ctx.final_sent = True
        response = make_response(ctx.original(), status, reason, to_tag=ctx.to_tag)
        out = self._respond(ctx, response, now)
        self._release_finished(ctx)
        return out

    def _send_best(self, ctx: _Context, now: float) -> list[ProxyOutput]:
        finals = [b.final for b in ctx.branches.values() if b.final is not None]
        best = _best_response(finals)
        ctx.final_sent = True
        if best is None:
            return self._answer(ctx, 408, now)
        if best.status == 503:
            return self._answer(ctx, 500, now, "Next hop unavailable")
        out = self._respond(ctx, self._upstream(best), now)
        self._release_finished(ctx)
        return out


def decline_reason(response: Response) -> str:
    """RFC 3326 Reason for the branches cancelled because one declined with a 6xx."""
    text = (response.reason or "Declined").replace('"', "'")
    return f'SIP;cause={response.status};text="{text}"'


def _best_response(finals: list[Response]) -> Response | None:
    """RFC 3261 §16.7 step 6."""
    if not finals:
        return None
    six = [r for r in finals if r.status >= 600]
    if six:
        return six[0]
    lowest = min(r.status // 100 for r in finals)
    group = [r for r in finals if r.status // 100 == lowest]
    if lowest == 4:
        for preferred in _PREFERRED_4XX:
            for r in group:
                if r.status == preferred:
                    return r
    return group[0]
