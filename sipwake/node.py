"""The node: the pure layers composed into one SIP server core.

``Node.receive(data, source, listener, now)`` takes one message's bytes and
returns what to do: ``SendBytes`` to write, ``PersistChanges`` to store
(performed before the bytes that follow it, so a 200 to a REGISTER is only
sent once the binding is on disk). ``next_deadline``/``handle_timeout`` drive
every timer below (transactions, Timer C, binding expiry, nonces).

Routing (RFC 3261 §16.4-16.5, RFC 3581): requests get ``received``/``rport``;
what each request takes to be served (loops, dialogs, credentials, relaying, what a
scanner can tell apart) is the edge policy's, ``sipwake.proxy.policy``. REGISTER for our
domain goes to the registrar after digest authentication; requests in a dialog sipwake
recorded follow their route set; initial requests for a user of our domain fork to that
user's bindings; others are relayed only for an authenticated local user.
SUBSCRIBE to a local user is answered by the presence agent (``sipwake.presence``: RFC
3856 presence from the devices' client states).

UDP bindings without push parameters are pinged with OPTIONS once quiet for
``udp_foreground_s`` (``sipwake.proxy.qualify``): every message from a binding's
address (``receive``) and every keep-alive (``keepalive``) is a sign of life, and
one that stops answering reads offline (not forked to, presence closed) until it
shows one again.
"""

from __future__ import annotations

import heapq
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sipwake.errors import AuthError, SipParseError
from sipwake.frozen import interpreted_init
from sipwake.ids import Ids
from sipwake.overload import LoadMeter
from sipwake.presence import Presence, PresenceAgent, presence_of
from sipwake.proxy.authguard import AuthGuard, GuardSettings
from sipwake.proxy.core import BranchesDone, CallAnswered, Proxy, Target
from sipwake.proxy.dnd import DndState, feature_code, feature_reply
from sipwake.proxy.plan import CallPlan
from sipwake.proxy.policy import (
    NEVER_CHALLENGED,
    Admission,
    Destination,
    EdgePolicy,
    RouteCheck,
    Sender,
    digest_uri_matches,
)
from sipwake.proxy.qualify import Qualifier, QualifyOutput, QualifySettings, ReachabilityChanged
from sipwake.proxy.ratelimit import Rate, RateLimiter
from sipwake.proxy.routing import LocalAddress, Locality, uri_peer
from sipwake.proxy.wake import CallEvent, Device, DropPushTarget, SendPush, WakeEngine, WakeOutput
from sipwake.push.base import PushOutcome
from sipwake.registrar.bindings import Binding
from sipwake.registrar.events import (
    BindingAdded,
    BindingExpired,
    BindingRefreshed,
    BindingRemoved,
    PushTargetRemoved,
    RegistrarEvent,
)
from sipwake.registrar.refresh import RefreshSchedule
from sipwake.registrar.registrar import Registrar
from sipwake.registrar.state import client_state, foreground_ends_at
from sipwake.sip.auth import AuthResult, DigestServer, parse_credentials
from sipwake.sip.message import Request, Response, make_response, parse_error_response
from sipwake.sip.parser import parse_message
from sipwake.sip.peer import Peer, mark_received
from sipwake.sip.pushtarget import PushTarget, mask_token
from sipwake.sip.uri import SipUri, TelUri, Uri, parse_uri
from sipwake.transaction.events import (
    AckReceived,
    CancelReceived,
    MessageDropped,
    RequestReceived,
    RequestRejected,
    ResponseReceived,
    SendMessage,
    StrayResponse,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
)
from sipwake.transaction.keys import ClientKey, ServerTransactionKey, client_key, server_key
from sipwake.transaction.layer import TransactionLayer

__all__ = [
    "AuthFailed",
    "CallEvent",
    "Dropped",
    "ForgetMessage",
    "KeepMessage",
    "Limited",
    "Node",
    "NodeOutput",
    "NodeSettings",
    "PersistChanges",
    "ReachabilityChanged",
    "SendBytes",
    "SendPush",
]

ALLOW = (
    "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, REGISTER, UPDATE, INFO, REFER, NOTIFY, "
    "SUBSCRIBE, PRACK"
)
SUPPORTED = "path, outbound, gruu"
_CLOSED_FLOWS_KEPT = 65536
#: The one answer to credentials that do not prove a user, whoever they name (no user
#: enumeration: ``sipwake.proxy.policy``).
_REFUSED = "Wrong user or password"
#: Checked in place of a password when credentials name a user we do not have, so that
#: they go through the same checks (nonce, response) as a known user's wrong ones.
_DECOY_PASSWORD = "\x00decoy"


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class SendBytes:
    """Write ``data`` to ``peer``; ``message`` is kept for traces and call records."""

    data: bytes
    peer: Peer
    message: Request | Response | None = None

    def __init__(
        self, *, data: bytes, peer: Peer, message: Request | Response | None = None
    ) -> None:
        self.data = data  # type: ignore[misc]
        self.peer = peer  # type: ignore[misc]
        self.message = message  # type: ignore[misc]


interpreted_init(SendBytes)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class PersistChanges:
    """Store these binding changes, then tell the node with ``changes_stored(token, ok)``
    (``token`` None: nothing waits for them, e.g. expiries)."""

    events: tuple[RegistrarEvent, ...]
    token: int | None = None

    def __init__(self, *, events: tuple[RegistrarEvent, ...], token: int | None = None) -> None:
        self.events = events  # type: ignore[misc]
        self.token = token  # type: ignore[misc]


interpreted_init(PersistChanges)


@dataclass(frozen=True, slots=True, kw_only=True)
class Dropped:
    """A message that was not processed, and why (for logs and counters)."""

    reason: str
    peer: Peer | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Limited:
    """A rate limit refused something (``sipwake.proxy.ratelimit``): for the log, on the
    1st, 10th, 100th… refusal of one key, so that a flood does not flood it."""

    what: str
    """``requests`` (dropped), ``wake pushes`` (the call rang foreground devices only)."""
    key: str
    """The source address, or ``SOURCE -> AOR``, or the AOR."""
    rate: str
    refused: int
    """Refusals of this key so far."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthFailed:
    """A request's credentials were refused (for the log that fail2ban reads, and the
    brute-force guard's verdict, ``sipwake.proxy.authguard``)."""

    source: Peer
    user: str
    """The digest user name as sent (the log escapes it)."""
    method: str
    reason: str
    failures: int
    """Failures from this source within the guard's window (0: not counted, trusted)."""
    window_s: float
    delay_s: float = 0.0
    """How long the answer is held back."""
    banned_s: float = 0.0
    """This failure banned the source for that long (0: it did not)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KeepMessage:
    """Store this MESSAGE for ``aor`` until it is delivered (a suspended device)."""

    message_id: str
    aor: str
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ForgetMessage:
    """A held MESSAGE was delivered: delete it from the store."""

    message_id: str


NodeOutput = (
    SendBytes
    | PersistChanges
    | Dropped
    | SendPush
    | CallEvent
    | KeepMessage
    | ForgetMessage
    | Limited
    | AuthFailed
    | ReachabilityChanged
)
_Work = WakeOutput | QualifyOutput


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class _Unconfirmed:
    """A REGISTER whose binding changes are being stored; its response waits for that."""

    key: ServerTransactionKey
    request: Request
    response: Response
    events: tuple[RegistrarEvent, ...]
    listener: LocalAddress

    def __init__(
        self,
        *,
        key: ServerTransactionKey,
        request: Request,
        response: Response,
        events: tuple[RegistrarEvent, ...],
        listener: LocalAddress,
    ) -> None:
        self.key = key  # type: ignore[misc]
        self.request = request  # type: ignore[misc]
        self.response = response  # type: ignore[misc]
        self.events = events  # type: ignore[misc]
        self.listener = listener  # type: ignore[misc]


interpreted_init(_Unconfirmed)


@dataclass(slots=True, kw_only=True)
class NodeSettings:
    domain: str
    realm: str
    users: dict[str, str | None] = field(default_factory=dict)
    """User name → password (``None``: no password set, only usable with ``open``)."""
    open: bool = False
    max_message_bytes: int = 65535
    retry_after_s: int = 2
    """Retry-After of the 503 sent while shedding load."""
    plan: CallPlan = field(default_factory=CallPlan)
    """The call plan of users without one of their own."""
    plans: dict[str, CallPlan] = field(default_factory=dict)
    """User name → call plan (no-answer time, voicemail, twin…)."""
    requests_per_source: Rate | None = None
    """Requests one source address may send (``sipwake.proxy.ratelimit``); None: no limit."""
    wake_pushes_per_source: Rate | None = None
    """Calls and messages from one source that may push one user's sleeping phones."""
    wake_pushes_per_user: Rate | None = None
    """Calls and messages that may push one user's sleeping phones, from any source."""
    trusted_sources: tuple[str, ...] = ()
    """Networks (``10.0.0.0/8``) exempt from ``requests_per_source`` and the guard."""
    auth_guard: GuardSettings | None = None
    """Failed authentications: delay, then ban (``sipwake.proxy.authguard``); None: none."""
    qualify: QualifySettings = field(default_factory=QualifySettings)
    """OPTIONS pings to UDP bindings without push parameters (``calls.udp_qualify*``)."""
    secret: bytes = b""
    """The node's secret (``sipwake-secret``): keys the dialog tokens of our Record-Route
    and the loop marks of our branches (``sipwake.proxy.policy``). Empty: a key derived
    from the domain, which anyone could compute (tests and replays only)."""

    def plan_of(self, user: str) -> CallPlan:
        return self.plans.get(user, self.plan)


class Node:
    """One SIP server: transactions, registrar, proxy, authentication."""

    def __init__(
        self,
        *,
        settings: NodeSettings,
        ids: Ids,
        locality: Locality,
        registrar: Registrar,
        layer: TransactionLayer,
        auth: DigestServer | None,
    ) -> None:
        self.settings = settings
        self.ids = ids
        self.locality = locality
        self.registrar = registrar
        self.layer = layer
        self.auth = auth
        secret = settings.secret or f"sipwake unkeyed node {settings.domain}".encode()
        self.policy = EdgePolicy(
            secret=secret, locality=locality, open=settings.open or auth is None
        )
        self.proxy = Proxy(layer=layer, locality=locality, ids=ids, policy=self.policy)
        self.wake = WakeEngine(proxy=self.proxy, ids=ids, resolve=self._resolve)
        self.presence = PresenceAgent(
            layer=layer,
            ids=ids,
            locality=locality,
            state_of=self.presence_of,
            reach=self._reach,
            changes_at=self.presence_changes_at,
        )
        self.qualifier = Qualifier(
            layer=layer, ids=ids, locality=locality, settings=settings.qualify
        )
        self.refresh = RefreshSchedule()
        """Refresh pushes before push bindings expire (``sipwake.registrar.refresh``)."""
        self._contact_flows: dict[tuple[str | None, str, int | None], Peer] = {}
        self._closed_flows: dict[int, None] = {}
        self._persist_seq = 0
        self.load: LoadMeter | None = None
        """Fed by the driver with the time it spends working (``sipwake.overload``)."""
        self.shed = 0
        self._unconfirmed: dict[int, _Unconfirmed] = {}
        self._held: dict[str, dict[str, Request]] = {}
        """AOR → message id → MESSAGE waiting for a device of that user to register."""
        self._delivering: dict[ClientKey, tuple[str, str]] = {}
        """Client transaction → (aor, message id) of a held MESSAGE being delivered."""
        s = settings
        self.request_limit = _limiter(s.requests_per_source)
        self.wake_limit_source = _limiter(s.wake_pushes_per_source)
        self.wake_limit_user = _limiter(s.wake_pushes_per_user)
        self._trusted = tuple(ipaddress.ip_network(n, strict=False) for n in s.trusted_sources)
        self.guard = AuthGuard(s.auth_guard) if s.auth_guard is not None else None
        self._held_answers: list[tuple[float, int, ServerTransactionKey, Response]] = []
        """Answers held back by the guard: (due, order, transaction, response)."""
        self._held_seq = 0
        self._auth_events: list[NodeOutput] = []
        """``AuthFailed`` events of the request being handled (``receive`` hands them out)."""
        self._trust: dict[str, bool] = {}
        """Source host → trusted (a cache: parsing an address costs more than a lookup)."""
        self.dnd = DndState()
        """DND set while running (feature codes, ``sipwake dnd``): in memory only."""

    # -- input ------------------------------------------------------------------
    def receive(
        self, data: bytes, source: Peer, listener: LocalAddress, now: float
    ) -> list[NodeOutput]:
        """One whole message's bytes from ``source``, arrived on ``listener``."""
        limit = self.request_limit
        guard = self.guard
        banned = False
        if (limit is not None or guard is not None) and not data.startswith(b"SIP/"):
            host = source.host
            if not self._trusted_host(source):
                if guard is not None and guard.banned(host, now):
                    if guard.settings.ban == "drop":
                        return []  # a banned source learns nothing, not even that it is
                    banned = True
                elif limit is not None and not limit.allow(host, now):
                    if limit.should_report(host):  # over its source's rate: dropped
                        return [self._limited("requests", host, limit)]
                    return []
        stream = source.transport in ("tcp", "tls")
        try:
            message = parse_message(data, stream=stream, max_size=self.settings.max_message_bytes)
        except SipParseError as exc:
            return self._reject_unparsable(exc, source)
        alive: list[ReachabilityChanged] = []
        if source.flow is None:
            alive = self.qualifier.seen(source, now)
        if isinstance(message, Request):
            meter = self.load
            if (
                meter is not None
                and meter.overloaded
                and self._sheddable(message)
                and not meter.admit()
            ):
                return self._shed(message, source)
            if banned:
                if message.method == "ACK":
                    return []
                return self._refuse_banned(message, source)
            mark_received(message, source)
        if alive:
            out = self._run([*alive, *self.layer.receive(message, source, now)], now, listener)
        else:
            out = self._run(self.layer.receive(message, source, now), now, listener)
        if self._auth_events:
            out += self._auth_events
            self._auth_events = []
        return out

    def keepalive(self, source: Peer, now: float) -> list[NodeOutput]:
        """A keep-alive (CRLF, or a STUN binding request: RFC 5626 §4.4.1) from
        ``source``: a sign of life of the UDP bindings registered from there."""
        if source.flow is not None:
            return []
        alive = self.qualifier.seen(source, now)
        return self._run(alive, now, self.locality.listeners[0]) if alive else []

    def next_deadline(self) -> float | None:
        # The driver asks after every message: a plain loop, no intermediate list.
        earliest: float | None = None
        for deadline in (
            self.layer.next_deadline(),
            self.proxy.next_deadline(),
            self.registrar.next_deadline(),
            self.wake.next_deadline(),
            self.presence.next_deadline(),
            self.qualifier.next_deadline(),
            self.refresh.next_deadline(),
            self._held_answers[0][0] if self._held_answers else None,
        ):
            if deadline is not None and (earliest is None or deadline < earliest):
                earliest = deadline
        return earliest

    def handle_timeout(self, now: float) -> list[NodeOutput]:
        out: list[NodeOutput] = []
        events = self.registrar.handle_timeout(now)
        listener = self.locality.listeners[0]
        if events:
            self._index(events)
            out.append(PersistChanges(events=tuple(events)))
            aors = {e.binding.aor for e in events}
            out += self._run(self.presence.changed(aors, now), now, listener)
        out += self._run(self.layer.handle_timeout(now), now, listener)
        out += self._run(self.proxy.handle_timeout(now), now, listener)
        out += self._run(self.wake.handle_timeout(now), now, listener)
        out += self._run(self.presence.handle_timeout(now), now, listener)
        out += self._run(self.qualifier.handle_timeout(now), now, listener)
        for binding_id in self.refresh.due(now):
            out += self._run(self._refresh_push(binding_id, now), now, listener)
        held = self._held_answers
        while held and held[0][0] <= now:
            _, _, key, response = heapq.heappop(held)
            out += self._run(self.layer.respond(key, response, now), now, listener)
        if self.auth is not None:
            self.auth.handle_timeout(now)
        return out

    def restore(self, events: Iterable[RegistrarEvent]) -> None:
        """Index bindings loaded from a store (their flows are gone; UDP ones still work)."""
        self._index(list(events))

    def flow_closed(self, flow: int, now: float | None = None) -> list[NodeOutput]:
        """A connection closed: bindings that came over it are reached at their contact
        (or need a push); with ``now``, presence subscribers are told what changed."""
        self._closed_flows[flow] = None
        if len(self._closed_flows) > _CLOSED_FLOWS_KEPT:
            del self._closed_flows[next(iter(self._closed_flows))]
        for key, peer in list(self._contact_flows.items()):
            if peer.flow == flow:
                del self._contact_flows[key]
        if now is None:
            return []
        listener = self.locality.listeners[0]
        return self._run(self.presence.changed(self.presence.watched(), now), now, listener)

    def send_failed(
        self, data: bytes, now: float, message: Request | Response | None = None
    ) -> list[NodeOutput]:
        """The transport could not send ``data`` (a connection that could not be opened, or
        one that is gone): a request of ours fails at once as a 503 (RFC 3261 §17.1.4,
        §16.9) rather than after Timer B/F; a response that could not be sent is lost.
        ``message`` is ``data`` parsed, when the caller still has it."""
        if message is None:
            try:
                message = parse_message(data)
            except SipParseError:
                return []
        if not isinstance(message, Request) or message.method == "ACK":
            return []
        return self._run(
            self.layer.transport_error(client_key(message)), now, self.locality.listeners[0]
        )

    # -- dispatch ---------------------------------------------------------------
    def _run(
        self, outputs: Sequence[_Work], now: float, listener: LocalAddress
    ) -> list[NodeOutput]:
        out: list[NodeOutput] = []
        work: list[_Work] = list(outputs)
        while work:
            item = work.pop(0)
            more: Sequence[_Work] = []
            match item:
                case SendPush() | CallEvent():
                    out.append(item)
                case BranchesDone(server_key=key):
                    more = self.wake.branches_done(key, now)
                case CallAnswered(server_key=key, target=target):
                    more = self.wake.answered(key, target, now)
                case DropPushTarget(binding_id=binding_id, prid=prid, unregistered_at=since):
                    events = self.registrar.remove_push_target(
                        binding_id, prid=prid, unregistered_at=since
                    )
                    if events:
                        self._index(events)
                        out.append(PersistChanges(events=tuple(events)))
                        more = self.presence.changed({e.binding.aor for e in events}, now)
                case SendMessage(message=message, peer=peer, data=data):
                    if data is None:
                        data = message.to_bytes()
                    out.append(SendBytes(data=data, peer=peer, message=message))
                case RequestReceived(request=request, source=source, transaction_key=key):
                    more, extra = self._on_request(request, source, key, listener, now)
                    out += extra
                case ResponseReceived(response=response, transaction_key=key):
                    if key in self._delivering:
                        out += self._message_answered(key, response.status)
                    elif self.qualifier.owns(key):
                        more = self.qualifier.answered(key, response.status, now)
                    elif self.presence.owns(key):
                        more = self.presence.notify_answered(key, response.status, now)
                    else:
                        more = self.proxy.response_received(response, key, now)
                case AckReceived(request=ack, source=source):
                    more = self._on_ack(ack, listener, now)
                case CancelReceived(invite_key=key, cancel=cancel):
                    reason = cancel.headers.get("Reason")
                    more = [
                        *self.wake.cancelled(key, now, reason=reason),
                        *self.proxy.cancel(key, now, reason=reason),
                    ]
                case TransactionTimedOut(transaction_key=key):
                    if isinstance(key, ClientKey) and key in self._delivering:
                        out += self._message_answered(key, 408)
                    elif isinstance(key, ClientKey) and self.qualifier.owns(key):
                        pass  # unanswered: the ping's own, shorter, timeout has told
                    elif isinstance(key, ClientKey) and self.presence.owns(key):
                        more = self.presence.notify_answered(key, 408, now)
                    elif isinstance(key, ClientKey):
                        more = self.proxy.client_timed_out(key, now)
                case TransportFailed(transaction_key=key):
                    if key in self._delivering:
                        out += self._message_answered(key, 503)
                    elif self.qualifier.owns(key):
                        pass  # as unanswered
                    elif self.presence.owns(key):
                        more = self.presence.notify_answered(key, 503, now)
                    else:
                        more = self.proxy.transport_failed(key, now)
                case TransactionTerminated(transaction_key=key):
                    if isinstance(key, ClientKey):
                        self.proxy.client_terminated(key)
                        self.presence.forget_transaction(key)
                        self.qualifier.transaction_ended(key)
                    else:
                        self.proxy.server_terminated(key)
                        self.wake.ended(key)
                case StrayResponse(response=response):
                    more = self.proxy.forward_response_stateless(response)
                case MessageDropped(reason=reason, source=source):
                    out.append(Dropped(reason=reason, peer=source))
                case RequestRejected(status=status, source=source):
                    out.append(Dropped(reason=f"answered {status}: overloaded", peer=source))
                case ReachabilityChanged(aor=aor):
                    out.append(item)
                    more = self.presence.changed({aor}, now)
                case _:
                    out.append(Dropped(reason=f"unhandled output {type(item).__name__}"))
            work[0:0] = more
        return out

    def _sheddable(self, request: Request) -> bool:
        """A new initial request (not a retransmission, not in a dialog, not ACK/CANCEL)."""
        if request.method in ("ACK", "CANCEL", "BYE") or request.to.tag is not None:
            return False
        return server_key(request) not in self.layer

    def _shed(self, request: Request, source: Peer) -> list[NodeOutput]:
        response = make_response(request, 503, "Overloaded", to_tag=self.ids.tag())
        response.headers.add("Retry-After", str(self.settings.retry_after_s))
        self.shed += 1
        return [SendBytes(data=response.to_bytes(), peer=source, message=response)]

    def _refuse_banned(self, request: Request, source: Peer) -> list[NodeOutput]:
        """A request from a source the guard banned (``ban: reject``): 403, statelessly."""
        response = make_response(request, 403, "Forbidden", to_tag=self.ids.tag())
        return [SendBytes(data=response.to_bytes(), peer=source, message=response)]

    def _reject_unparsable(self, exc: SipParseError, source: Peer) -> list[NodeOutput]:
        response = parse_error_response(exc)
        if response is not None:
            return [SendBytes(data=response.to_bytes(), peer=source, message=response)]
        return [Dropped(reason=f"unparsable message: {exc.reason}", peer=source)]

    # -- requests ---------------------------------------------------------------
    def _respond(
        self, key: ServerTransactionKey, request: Request, status: int, now: float, **extra: str
    ) -> Sequence[WakeOutput]:
        reason = extra.pop("reason", None)
        response = make_response(request, status, reason, to_tag=self.ids.tag())
        for name, value in extra.items():
            response.headers.add(name.replace("_", "-"), value)
        return self.layer.respond(key, response, now)

    def _on_request(
        self,
        request: Request,
        source: Peer,
        key: ServerTransactionKey,
        listener: LocalAddress,
        now: float,
    ) -> tuple[Sequence[WakeOutput], list[NodeOutput]]:
        """The edge policy's rules in order (``sipwake.proxy.policy``), then the request's
        business: the registrar, the presence agent, a user's bindings, or one next hop."""
        method = request.method
        uri = request.uri
        if not isinstance(uri, SipUri | TelUri):
            return self._respond(key, request, 416, now), []
        if request.headers.get("proxy-require"):
            unsupported = ", ".join(request.tokens("proxy-require"))
            return self._respond(key, request, 420, now, Unsupported=unsupported), []
        policy = self.policy
        routed = policy.strip_own_routes(request)
        if policy.looped(request):
            return self._respond(key, request, 482, now), []
        # Addressed to the proxy itself (no user part): OPTIONS pings, stray in-dialog requests.
        for_us = (
            isinstance(uri, SipUri)
            and uri.user is None
            and self.locality.is_us(uri)
            and not request.routes
        )
        if request.max_forwards == 0 and not (for_us and method == "OPTIONS"):
            return self._respond(key, request, 483, now), []
        if method == "REGISTER":
            return self._on_register(request, source, key, listener, now)
        if method == "SUBSCRIBE" and self.presence.owns_dialog(request):
            return self.presence.subscribe(key, request, source, listener, "", now), []
        if request.to.tag is not None:
            return self._in_dialog(request, source, key, listener, routed, for_us, now), []
        if method == "CANCEL":
            # No INVITE here to cancel (the layer matched none): never forwarded (a relay).
            return self._respond(key, request, 481, now), []
        if for_us:
            if method == "OPTIONS":
                return self._respond(key, request, 200, now, Allow=ALLOW, Supported=SUPPORTED), []
            return self._respond(key, request, 404, now), []
        destination = policy.destination(request)
        admission = policy.admission(policy.sender(request), destination)
        if admission is Admission.REFUSE:
            return self._respond(key, request, 403, now, reason="Relaying denied"), []
        if admission is Admission.AUTHENTICATE:
            challenge = self._authorize(request, key, now, proxy=True, source=source)
            if challenge is not None:
                return challenge, []
        policy.consume_credentials(request, self.settings.realm)
        if method == "INVITE" and destination is Destination.LOCAL and isinstance(uri, SipUri):
            dnd = feature_code(uri.user)
            if dnd is not None:
                return self._feature_code(key, request, dnd, now), []
        if destination is Destination.ELSEWHERE or not isinstance(uri, SipUri):
            next_hop = self._route_peer(request) if request.routes else self._contact_peer(uri)
            return self._forward(key, request, source, listener, next_hop, now), []
        user = uri.user
        if user is None or (not self.settings.open and user not in self.settings.users):
            # Answered as a user of ours with no device (480): nothing to tell apart.
            return self.proxy.fork(key, request, source, listener, [], now), []
        aor = self.registrar.config.aor(uri)
        if method == "SUBSCRIBE":
            return self._on_subscribe(key, request, source, listener, aor, now), []
        if method == "MESSAGE":
            return self._on_message(key, request, source, listener, aor, user, now)
        if method == "INVITE":
            plan = self.plan_of(user)
            devices = self._devices(aor, now, plan)
            limited: list[NodeOutput] = []
            may_push = not self.wake.would_push(devices, plan) or self._may_wake(
                source, aor, now, limited
            )
            wake = self.wake.invite(
                key, request, source, listener, aor, plan, devices, now, may_push=may_push
            )
            return wake, limited
        targets = self._targets(aor, now)
        return self.proxy.fork(key, request, source, listener, targets, now), []

    def _feature_code(
        self, key: ServerTransactionKey, request: Request, dnd: bool, now: float
    ) -> Sequence[WakeOutput]:
        """``*78``/``*79`` (``sipwake.proxy.dnd``): the calling user's own DND, for a local
        user only (authenticated by now, unless the server runs open)."""
        from_uri = request.from_.uri
        user = from_uri.user if isinstance(from_uri, SipUri) else None
        if user is None or not self._from_local_user(request) or not self.set_dnd(user, dnd):
            return self._respond(key, request, 403, now, reason="Feature codes are for local users")
        status, reason, warning = feature_reply(dnd)
        return self._respond(key, request, status, now, reason=reason, Warning=warning)

    def plan_of(self, user: str) -> CallPlan:
        """The user's call plan with the DND set while running (``sipwake.proxy.dnd``)."""
        return self.dnd.apply(user, self.settings.plan_of(user))

    def set_dnd(self, user: str, on: bool) -> bool:
        """Turn ``user``'s DND on or off (a feature code, ``sipwake dnd``); False for a
        user the server does not have. Kept in memory: a restart forgets it."""
        if not self.settings.open and user not in self.settings.users:
            return False
        self.dnd.set(user, on)
        return True

    def _in_dialog(
        self,
        request: Request,
        source: Peer,
        key: ServerTransactionKey,
        listener: LocalAddress,
        routed: RouteCheck,
        for_us: bool,
        now: float,
    ) -> Sequence[WakeOutput]:
        """A request with a To-tag: it follows its route set if sipwake recorded it (the
        dialog token). Without that it is no dialog of ours: served only toward one of
        our registered devices and judged as an out-of-dialog request to them would be
        (a callee that did not copy the Record-Route, RFC 3261 §12.1.1), else 404."""
        if for_us:
            return self._respond(key, request, 481, now)
        uri = request.uri
        next_hop = self._route_peer(request) if request.routes else self._contact_peer(uri)
        if not routed.dialog:
            if request.routes or next_hop is None or not self._is_device(next_hop, request, now):
                return self._respond(key, request, 404, now, reason="Not Here")
            policy = self.policy
            if not policy.open and (
                policy.admission(policy.sender(request), Destination.LOCAL)
                is Admission.AUTHENTICATE
            ):
                challenge = self._authorize(request, key, now, proxy=True, source=source)
                if challenge is not None:
                    return challenge
        if next_hop is not None and self.policy.is_listener(next_hop):
            return self._respond(key, request, 482, now)
        self.policy.consume_credentials(request, self.settings.realm)
        return self._forward(key, request, source, listener, next_hop, now)

    def _is_device(self, peer: Peer, request: Request, now: float) -> bool:
        """``peer`` is where a registered device of the user the To header names is
        reached (its source or its contact): a request there is one to that user."""
        to_uri = request.to.uri
        if not (isinstance(to_uri, SipUri) and self.locality.is_our_domain(to_uri.host)):
            return False
        host = peer.host.lower().strip("[]")
        for binding in self.registrar.lookup(self.registrar.config.aor(to_uri), now):
            if _same_address(binding.source, peer.port, host):
                return True
            contact = uri_peer(binding.contact)
            if contact is not None and _same_address(contact, peer.port, host):
                return True
        return False

    def _on_subscribe(
        self,
        key: ServerTransactionKey,
        request: Request,
        source: Peer,
        listener: LocalAddress,
        aor: str,
        now: float,
    ) -> Sequence[WakeOutput]:
        """RFC 3856: we are the presence agent of our users. Only local users (who have
        authenticated, like a caller) may watch them, unless the server runs open."""
        if not (self._from_local_user(request) or self.settings.open or self.auth is None):
            return self._respond(key, request, 403, now, reason="Presence is for local users")
        return self.presence.subscribe(key, request, source, listener, aor, now)

    def _from_local_user(self, request: Request) -> bool:
        """The request's From names a user of our domains."""
        return self.policy.sender(request) is Sender.LOCAL

    def _forward(
        self,
        key: ServerTransactionKey,
        request: Request,
        source: Peer,
        listener: LocalAddress,
        next_hop: Peer | None,
        now: float,
    ) -> Sequence[WakeOutput]:
        """Proxy to one next hop, or answer 404 when there is none we can reach (no DNS),
        482 when it is one of our own listeners (it would come straight back)."""
        if next_hop is None:
            return self._respond(key, request, 404, now, reason="Next hop not reachable")
        if self.policy.is_listener(next_hop):
            return self._respond(key, request, 482, now)
        return self.proxy.forward(key, request, source, listener, next_hop, now)

    def _on_register(
        self,
        request: Request,
        source: Peer,
        key: ServerTransactionKey,
        listener: LocalAddress,
        now: float,
    ) -> tuple[Sequence[WakeOutput], list[NodeOutput]]:
        uri = request.uri
        if not isinstance(uri, SipUri) or not self.locality.is_our_domain(uri.host):
            return self._respond(key, request, 403, now, reason="Not our domain"), []
        to_uri = request.to.uri
        if not isinstance(to_uri, SipUri):
            return self._respond(key, request, 400, now, reason="AOR must be a SIP URI"), []
        user = to_uri.user
        if user is None:
            return self._respond(key, request, 404, now), []
        # Challenged before the user is looked up: an unknown name gets the same 401.
        challenge = self._authorize(request, key, now, proxy=False, source=source, user=user)
        if challenge is not None:
            return challenge, []
        if not self.settings.open and user not in self.settings.users:
            return self._respond(key, request, 404, now), []  # only without authentication
        result = self.registrar.handle_register(request, source, now)
        events = tuple(result.changes)
        if not events:
            return self.layer.respond(key, result.response, now), []
        # RFC 3261 §10.3: the 200 waits until the changes are stored (``changes_stored``).
        self._persist_seq += 1
        token = self._persist_seq
        self._unconfirmed[token] = _Unconfirmed(
            key=key, request=request, response=result.response, events=events, listener=listener
        )
        return [], [PersistChanges(events=events, token=token)]

    def changes_stored(
        self, token: int, ok: bool, now: float, *, busy: bool = False
    ) -> list[NodeOutput]:
        """The store has written (``ok``) or failed to write the changes of ``PersistChanges``
        ``token``: send the REGISTER's response, or undo the changes and answer 500 (503
        when ``busy``: the store is behind and refused to queue more, RFC 3261 §21.5.4)."""
        entry = self._unconfirmed.pop(token, None)
        if entry is None:
            return []
        response = entry.response
        if ok:
            self._index(entry.events)
            out = self._run(self.layer.respond(entry.key, response, now), now, entry.listener)
            aors = {e.binding.aor for e in entry.events}
            out += self._run(self.presence.changed(aors, now), now, entry.listener)
            # The device is reachable again: calls waiting for it fork to it now, after
            # its 200 OK (RFC 8599 §5.6.3).
            for event in entry.events:
                if isinstance(event, BindingAdded | BindingRefreshed):
                    binding = event.binding
                    if not self.wake.waits_for(binding.aor) and binding.aor not in self._held:
                        continue  # the common case: nothing waits for this user
                    target = self._binding_target(binding)
                    wake = self.wake.registered(binding, target, now)
                    out += self._run(wake, now, entry.listener)
                    if target is not None and binding.aor in self._held:
                        out += self._run(
                            self._deliver_held(binding.aor, target, now), now, entry.listener
                        )
            return out
        self.registrar.revert(entry.events)
        if busy:
            response = make_response(
                entry.request, 503, "Binding store busy", to_tag=self.ids.tag()
            )
            response.headers.add("Retry-After", str(self.settings.retry_after_s))
        else:
            response = make_response(
                entry.request, 500, "Binding store unavailable", to_tag=self.ids.tag()
            )
            response.headers.add("Retry-After", "5")
        return self._run(self.layer.respond(entry.key, response, now), now, entry.listener)

    def _on_ack(self, ack: Request, listener: LocalAddress, now: float) -> Sequence[WakeOutput]:
        """The ACK for a 2xx: forwarded along a dialog sipwake recorded, or to one of our
        registered devices; else dropped (it cannot be answered, and a made-up one must
        not leave for anywhere)."""
        dialog = self.policy.strip_own_routes(ack).dialog
        if ack.max_forwards == 0:
            return []
        next_hop = self._route_peer(ack) if ack.routes else None
        if next_hop is None and isinstance(ack.uri, SipUri) and not self.locality.is_us(ack.uri):
            next_hop = self._contact_peer(ack.uri)
        if next_hop is None or self.policy.is_listener(next_hop):
            return []
        if not dialog and (ack.routes or not self._is_device(next_hop, ack, now)):
            return []
        return self.proxy.forward_stateless(ack, listener, next_hop)

    # -- authentication -----------------------------------------------------------
    def _authorize(
        self,
        request: Request,
        key: ServerTransactionKey,
        now: float,
        *,
        proxy: bool,
        source: Peer,
        user: str | None = None,
    ) -> Sequence[WakeOutput] | None:
        """None when ``request`` may proceed; else the 401/407 challenge (or 403) to send.

        The answer depends on the credentials, never on whether the user exists: a name
        we do not have is checked against a decoy password and fails as a wrong password
        does (``_REFUSED``). A replayed nonce-count or an expired nonce with the right
        password gets a fresh challenge with ``stale=true`` (RFC 2617 §3.2.1)."""
        if self.auth is None or self.settings.open or request.method in NEVER_CHALLENGED:
            return None
        from_uri = request.from_.uri
        header = "Proxy-Authorization" if proxy else "Authorization"
        stale = False
        for value in request.headers.get_all(header):
            try:
                credentials = parse_credentials(value)
            except AuthError:
                continue
            if not credentials.is_digest or credentials.realm != self.settings.realm:
                continue
            username = credentials.username or ""
            expected = (
                user
                if user is not None
                else (from_uri.user if isinstance(from_uri, SipUri) else None)
            )
            if username != expected:
                return self._refused(key, request, source, username, "not the user", now)
            if not digest_uri_matches(credentials.uri, request.uri):
                return self._refused(key, request, source, username, "digest uri", now)
            password = self.settings.users.get(username)
            result = self.auth.verify(
                credentials,
                method=request.method,
                password=_DECOY_PASSWORD if password is None else password,
                now=now,
                body=request.body,
            )
            if password is None:
                return self._refused(key, request, source, username, "unknown user", now)
            if result is AuthResult.OK:
                if self.guard is not None:
                    self.guard.succeeded(username)
                return None
            if result is AuthResult.STALE or result is AuthResult.REPLAY:
                stale = True
                break
            return self._refused(key, request, source, username, "wrong password", now)
        status = 407 if proxy else 401
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        response = make_response(request, status, to_tag=self.ids.tag())
        for challenge in self.auth.challenge(now, stale=stale):
            response.headers.add(name, str(challenge))
        return self.layer.respond(key, response, now)

    def _refused(
        self,
        key: ServerTransactionKey,
        request: Request,
        source: Peer,
        user: str,
        reason: str,
        now: float,
    ) -> Sequence[WakeOutput]:
        """Credentials refused: the one 403 every refusal gets (nothing to tell apart),
        an ``AuthFailed`` for the log, and the guard's verdict: the 403 held back while a
        source or user keeps failing (``sipwake.proxy.authguard``)."""
        response = make_response(request, 403, _REFUSED, to_tag=self.ids.tag())
        guard = self.guard
        if guard is None or self._trusted_host(source):
            self._auth_events.append(
                AuthFailed(
                    source=source,
                    user=user,
                    method=request.method,
                    reason=reason,
                    failures=0,
                    window_s=0.0,
                )
            )
            return self.layer.respond(key, response, now)
        strike = guard.failed(source.host, user, now)
        self._auth_events.append(
            AuthFailed(
                source=source,
                user=user,
                method=request.method,
                reason=reason,
                failures=strike.source_failures,
                window_s=guard.settings.window_s,
                delay_s=strike.delay_s,
                banned_s=guard.settings.ban_s if strike.banned else 0.0,
            )
        )
        if strike.delay_s <= 0:
            return self.layer.respond(key, response, now)
        # Held back: the transaction stays open and absorbs the client's retransmissions.
        self._held_seq += 1
        heapq.heappush(self._held_answers, (now + strike.delay_s, self._held_seq, key, response))
        return []

    # -- rate limits (sipwake.proxy.ratelimit) -----------------------------------------
    def _trusted_host(self, source: Peer) -> bool:
        host = source.host
        trusted = self._trust.get(host)
        if trusted is None:
            try:
                address = ipaddress.ip_address(host.strip("[]"))
                trusted = any(address in network for network in self._trusted)
            except ValueError:
                trusted = False
            if len(self._trust) >= 10_000:
                self._trust.clear()
            self._trust[host] = trusted
        return trusted

    def _may_wake(self, source: Peer, aor: str, now: float, out: list[NodeOutput]) -> bool:
        """Whether a call or message from ``source`` may push ``aor``'s sleeping phones;
        when not, a ``Limited`` for the log is appended to ``out`` (see the module text of
        ``sipwake.proxy.ratelimit``)."""
        per_source = self.wake_limit_source
        if per_source is not None:
            key = f"{source.host} -> {aor}"
            if not per_source.allow(key, now):
                if per_source.should_report(key):
                    out.append(self._limited("wake pushes", key, per_source))
                return False
        per_user = self.wake_limit_user
        if per_user is not None and not per_user.allow(aor, now):
            if per_user.should_report(aor):
                out.append(self._limited("wake pushes", aor, per_user))
            return False
        return True

    @staticmethod
    def _limited(what: str, key: str, limit: RateLimiter) -> Limited:
        return Limited(what=what, key=key, rate=str(limit.rate), refused=limit.refused_by[key])

    def limits_snapshot(self) -> dict[str, object]:
        """What the rate limits refused, for ``sipwake status``."""
        out: dict[str, object] = {}
        for name, limit in (
            ("requests_per_source", self.request_limit),
            ("wake_pushes_per_source", self.wake_limit_source),
            ("wake_pushes_per_user", self.wake_limit_user),
        ):
            if limit is not None:
                out[name] = {
                    "rate": str(limit.rate),
                    "refused": limit.refused,
                    "top": [{"key": str(k), "refused": n} for k, n in limit.top()],
                }
        return out

    # -- routing helpers -------------------------------------------------------------
    def _route_peer(self, request: Request) -> Peer | None:
        uri = request.routes[0].uri
        if not isinstance(uri, SipUri):
            return None
        return self._contact_peer(uri)

    def _contact_peer(self, uri: SipUri | object) -> Peer | None:
        if not isinstance(uri, SipUri):
            return None
        peer = self._contact_flows.get(_contact_key(uri))
        return peer if peer is not None else uri_peer(uri)

    # -- instant messages to sleeping devices (store and forward) ----------------------
    def _on_message(
        self,
        key: ServerTransactionKey,
        request: Request,
        source: Peer,
        listener: LocalAddress,
        aor: str,
        user: str,
        now: float,
    ) -> tuple[Sequence[WakeOutput], list[NodeOutput]]:
        """RFC 3428 MESSAGE: devices awake get it now; with only suspended devices it is
        kept (202 Accepted), they get an alert push (not VoIP: iOS 13+), and it is
        delivered when one registers again."""
        plan = self.plan_of(user)
        devices = self._devices(aor, now, plan)
        awake = [d.target for d in devices if d.state != "suspended" and d.target is not None]
        if awake or plan.dnd:
            return self.proxy.fork(key, request, source, listener, awake, now), []
        asleep = [d for d in devices if d.state == "suspended" and d.binding.push is not None]
        if not asleep:
            return self.proxy.fork(key, request, source, listener, [], now), []
        message_id = self.ids.token(12)
        self._held.setdefault(aor, {})[message_id] = request
        extra: list[NodeOutput] = [
            KeepMessage(message_id=message_id, aor=aor, data=request.to_bytes())
        ]
        text = request.body.decode("utf-8", "replace")[:200] if request.body else None
        pushes: list[WakeOutput] = []
        if self._may_wake(source, aor, now, extra):  # else kept for the next registration
            for d in asleep:
                push = self.wake.message_push(
                    aor, d.binding, request, text, private=plan.encrypt_push
                )
                if push is not None:  # None: no alert token; it waits for a REGISTER
                    pushes.append(push)
        return [*self._respond(key, request, 202, now), *pushes], extra

    def _deliver_held(self, aor: str, target: Target, now: float) -> list[WakeOutput]:
        """Send every MESSAGE held for ``aor`` to a device that just registered."""
        out: list[WakeOutput] = []
        in_flight = {mid for held_aor, mid in self._delivering.values() if held_aor == aor}
        listener = self.locality.listener_for(target.peer.transport)
        for message_id, held in list(self._held.get(aor, {}).items()):
            if message_id in in_flight:
                continue
            request = _fresh_message(held, target, listener, self.ids.branch())
            key, sent = self.layer.send_request(request, target.peer, now)
            self._delivering[key] = (aor, message_id)
            out += sent
        return out

    def _message_answered(self, key: ClientKey, status: int) -> list[NodeOutput]:
        if status < 200:
            return []
        aor, message_id = self._delivering.pop(key)
        if status >= 300:
            return []  # kept: the next registration tries again
        held = self._held.get(aor)
        if held is None or held.pop(message_id, None) is None:
            return []
        if not held:
            del self._held[aor]
        return [ForgetMessage(message_id=message_id)]

    def restore_messages(self, messages: Iterable[tuple[str, str, bytes]]) -> int:
        """Held messages loaded from a store (after a restart); returns how many."""
        count = 0
        for message_id, aor, data in messages:
            try:
                request = parse_message(data)
            except SipParseError:
                continue
            if isinstance(request, Request):
                self._held.setdefault(aor, {})[message_id] = request
                count += 1
        return count

    def held_messages(self, aor: str) -> int:
        return len(self._held.get(aor, {}))

    def push_completed(
        self, push_id: int, outcome: PushOutcome, now: float, *, wall: float | None = None
    ) -> list[NodeOutput]:
        """The driver's report on a ``SendPush``; ``wall``: UNIX seconds at ``now`` (an
        APNs 410's ``timestamp`` is compared with the binding's last REGISTER)."""
        listener = self.locality.listeners[0]
        outputs = self.wake.push_completed(push_id, outcome, now, wall=wall)
        return self._run(outputs, now, listener)

    def snapshot(self, now: float) -> list[dict[str, object]]:
        """Every user with bindings, their devices and client state (``sipwake status``).

        Push tokens are masked; a user whose devices are all suspended reads as ``away``
        (they can be reached, after a push), with any foreground device as ``available``.
        """
        users = []
        for aor in sorted(self.registrar.aors()):
            plan = self._plan_of_aor(aor)
            devices = []
            found = self._devices(aor, now, plan)
            for device in found:
                b = device.binding
                push = b.push
                devices.append(
                    {
                        "binding_id": b.binding_id,
                        "state": device.state,
                        "contact": str(b.forward_uri()),
                        "transport": b.source.transport,
                        "source": f"{b.source.host}:{b.source.port}",
                        "instance": b.instance,
                        "registered_s_ago": round(now - b.registered_at, 1),
                        "expires_in_s": round(b.remaining(now), 1),
                        "user_agent": b.user_agent,
                        "push": None if push is None else _push_view(push),
                    }
                )
            if not devices:
                continue
            presence = presence_of(d.state for d in found)
            users.append({"aor": aor, "presence": presence, "dnd": plan.dnd, "devices": devices})
        return users

    def _plan_of_aor(self, aor: str) -> CallPlan:
        """The call plan of the user whose address-of-record is ``aor`` (``sip:user@domain``)."""
        return self.plan_of(aor.removeprefix("sip:").split("@", 1)[0])

    def presence_of(self, aor: str, now: float) -> Presence:
        """The user's presence from their devices (``available``, ``away``, ``offline``)."""
        plan = self._plan_of_aor(aor)
        return presence_of(d.state for d in self._devices(aor, now, plan))

    def presence_changes_at(self, aor: str, now: float) -> float | None:
        """When the user's presence may next change by time alone: a UDP binding with push
        parameters turning suspended as its ``udp_foreground_s`` runs out."""
        window = self._plan_of_aor(aor).udp_foreground_s
        ends = [
            foreground_ends_at(b, now=now, udp_foreground_s=window)
            for b in self.registrar.lookup(aor, now)
        ]
        return min((t for t in ends if t is not None), default=None)

    def _reach(self, peer: Peer, contact: Uri) -> Peer | None:
        """Where a request in a dialog goes: the flow it came over while that is open, else
        the remote target (RFC 3261 §18.1.1: a new connection)."""
        if peer.flow is None or peer.flow not in self._closed_flows:
            return peer
        return uri_peer(contact) if isinstance(contact, SipUri) else None

    def _flow_open(self, binding: Binding) -> bool:
        flow = binding.source.flow
        return flow is None or flow not in self._closed_flows

    def _devices(self, aor: str, now: float, plan: CallPlan) -> list[Device]:
        """The AOR's bindings, each with its client state and how to reach it now."""
        devices = []
        for binding in self.registrar.lookup(aor, now):
            state = client_state(
                binding,
                flow_open=self._flow_open(binding),
                now=now,
                udp_foreground_s=plan.udp_foreground_s,
                answering=self.qualifier.reachable(binding.binding_id),
            )
            unreachable = state == "suspended" or (
                state == "offline" and binding.source.flow is None
            )
            target = None if unreachable else self._binding_target(binding)
            devices.append(Device(binding=binding, state=state, target=target))
        return devices

    def _binding_target(self, binding: Binding) -> Target | None:
        peer = self._binding_peer(binding)
        if peer is None:
            return None
        return Target(
            uri=binding.forward_uri(),
            peer=peer,
            route=binding.path,
            label=binding.instance or str(binding.forward_uri()),
            binding_id=binding.binding_id,
        )

    def _binding_peer(self, binding: Binding) -> Peer | None:
        """Where requests for ``binding`` go (``sipwake.registrar.reach``): the flow it
        registered over (a connection while it is open, RFC 5626 outbound, a NAT), else
        its Contact (RFC 3261 §16.5; a third-party registration, RFC 3261 §10.2)."""
        if binding.path:
            return binding.source  # RFC 3327: the edge proxy that added Path reaches it
        if binding.reach_source() and self._flow_open(binding):
            return binding.source
        # The Contact: over UDP when no NAT is in the way (a Contact naming a host name,
        # which we do not resolve, falls back to the source); over a connection that is
        # gone, a new one (RFC 3261 §18.1.1; outbound flows would get 430 instead).
        peer = uri_peer(binding.forward_uri())
        if peer is None and not binding.source.reliable:
            return binding.source
        return peer

    def _resolve(self, text: str, now: float) -> list[Target]:
        """Targets for a divert or twin URI: a local user's reachable devices, or the
        URI's own host (no DNS: an address or a name we know)."""
        try:
            uri = parse_uri(text, "divert target")
        except SipParseError:
            return []
        if not isinstance(uri, SipUri):
            return []
        local = self.locality.is_our_domain(uri.host) and (
            uri.port is None or any(lst.port == uri.port for lst in self.locality.listeners)
        )
        if uri.user is not None and local:
            return self._targets(self.registrar.config.aor(uri), now)
        peer = uri_peer(uri)
        return [] if peer is None else [Target(uri=uri, peer=peer, label=str(uri))]

    def _targets(self, aor: str, now: float) -> list[Target]:
        targets = []
        for binding in self.registrar.lookup(aor, now):
            if not self.qualifier.reachable(binding.binding_id):
                continue  # a UDP device that stopped answering: only a wait for Timer B/F
            target = self._binding_target(binding)
            if target is not None:
                targets.append(target)
        return targets

    def _index(self, events: Iterable[RegistrarEvent]) -> None:
        for event in events:
            match event:
                case BindingAdded(binding=b) | BindingRefreshed(binding=b):
                    peer = self._binding_peer(b)
                    if peer is not None:
                        self._contact_flows[_contact_key(b.contact)] = peer
                    self._qualify(b)
                    self.refresh.track(b)
                case BindingRemoved(binding=b) | BindingExpired(binding=b):
                    self._contact_flows.pop(_contact_key(b.contact), None)
                    self.qualifier.forget(b.binding_id)
                    self.refresh.forget(b.binding_id)
                case PushTargetRemoved(binding=b):
                    self._qualify(b)  # no push now: a UDP one is pinged instead
                    self.refresh.track(b)
                case _:
                    pass

    def _refresh_push(self, binding_id: str, now: float) -> list[SendPush]:
        """A binding's refresh time came: push it if it is suspended (a foreground app
        refreshes by itself; a UDP one counted foreground by its last REGISTER is looked
        at again when that window ends)."""
        binding = self.registrar.get(binding_id)
        if binding is None or binding.expired(now) or binding.push is None:
            return []
        window = self._plan_of_aor(binding.aor).udp_foreground_s
        state = client_state(
            binding, flow_open=self._flow_open(binding), now=now, udp_foreground_s=window
        )
        if state != "suspended":
            ends = foreground_ends_at(binding, now=now, udp_foreground_s=window)
            if ends is not None and ends < binding.expires_at:
                self.refresh.later(binding_id, ends)
            return []
        push = self.wake.refresh_push(binding)
        return [] if push is None else [push]

    def _qualify(self, binding: Binding) -> None:
        if self.qualifier.settings.enabled:
            window = self._plan_of_aor(binding.aor).udp_foreground_s
            self.qualifier.watch(binding, window)


def _limiter(rate: Rate | None) -> RateLimiter | None:
    return RateLimiter(rate) if rate is not None else None


def _same_address(peer: Peer, port: int, host: str) -> bool:
    return peer.port == port and peer.host.lower().strip("[]") == host


def _contact_key(uri: SipUri) -> tuple[str | None, str, int | None]:
    return (uri.user, uri.host.lower(), uri.port)


def _fresh_message(held: Request, target: Target, listener: LocalAddress, branch: str) -> Request:
    """A held MESSAGE sent anew by the server (the caller's transaction ended long ago):
    the caller's From, To, Call-ID, CSeq and body, our Via, the device's URI."""
    lines = [
        f"MESSAGE {target.uri} SIP/2.0",
        f"Via: SIP/2.0/{listener.via_transport} {listener.host_port};branch={branch};rport",
        "Max-Forwards: 70",
    ]
    for name in ("From", "To", "Call-ID", "CSeq", "Content-Type", "Date"):
        value = held.headers.get(name)
        if value is not None:
            lines.append(f"{name}: {value}")
    for route in target.route:
        lines.append(f"Route: {route}")
    lines.append(f"Content-Length: {len(held.body)}")
    request = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode() + held.body)
    assert isinstance(request, Request)
    return request


def _push_view(push: PushTarget) -> dict[str, object]:
    """A binding's push target in ``sipwake status``: tokens masked, and where calls and
    alerts go (``no alert token``: an iOS app that gave only its VoIP token gets no
    missed-call, cancel or message alert)."""
    call, alert = push.channel("call"), push.channel("alert")
    return {
        "provider": push.provider,
        "token": mask_token(push.prid),
        "param": push.param,
        "call": None if call is None else mask_token(call.prid),
        "alert": "no alert token" if alert is None else mask_token(alert.prid),
    }
