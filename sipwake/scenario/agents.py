"""Simulated SIP user agents: softphones, callers, the voicemail and the GSM gateway.

Each agent is a small sans-IO SIP user agent on sipwake's own transaction layer
(``TransactionLayer``), fed and read like the node: ``receive(data, source, now)``
takes the bytes of one message, ``handle_timeout(now)`` fires its timers, and both
return ``Transmit`` commands (a real SIP message to write to the server). Agents only
ever talk to the server (it is their outbound proxy), over UDP or over a connection
(``flow``) the runner opened for them.

* ``DeviceAgent``: a softphone. REGISTERs with RFC 8599 (or Linphone legacy) push
  parameters and ``+sip.instance``; rings (180) on INVITE and answers after its delay
  with 200 or its reject code, or 486 (busy) / 480 (its own DND) at once; 487 when
  cancelled; 200 to BYE; can hang up (BYE) an answered call.
* ``CallerAgent``: places calls (INVITE with SDP), ACKs 2xx (and BYEs extra 2xx from
  other forks, RFC 3261 §13.2.2.4), CANCELs, hangs up with BYE; sends instant messages
  (RFC 3428 MESSAGE).
* ``EndpointAgent``: a UAS at a fixed address (voicemail, twin gateway) that answers
  after a delay.

Digest authentication (RFC 3261 §22.2, RFC 2617 / RFC 7616 through
``sipwake.sip.auth.DigestClient``): an agent given credentials (``set_credentials``)
answers a 401 or 407 to any request it sent (REGISTER, INVITE, MESSAGE, BYE; CANCEL
and ACK get none, RFC 3261 §22.1) by sending it again with the next CSeq and an
``Authorization`` or ``Proxy-Authorization`` header, and authorizes later requests of
the same method pre-emptively on the last nonce, counting ``nc`` up. The ACK of a 2xx
carries the INVITE's credentials (§13.2.2.4). It answers one challenge per request
(two when the server says ``stale=true``); a challenge after that, a 403 to a request
that carried credentials, or any challenge to an agent without a password ends that
request, and the agent says why in ``auth_failures``.

Deterministic: identifiers come from the ``Ids`` each agent is given.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from sipwake.errors import AuthError
from sipwake.ids import Ids
from sipwake.sip.auth import Challenge, DigestClient, parse_challenge
from sipwake.sip.message import Headers, Request, Response, make_response
from sipwake.sip.parser import parse_message
from sipwake.sip.peer import Peer
from sipwake.sip.uri import SipUri, parse_uri
from sipwake.transaction.client import IctState
from sipwake.transaction.events import (
    AckReceived,
    CancelReceived,
    MessageDropped,
    Output,
    RequestReceived,
    RequestRejected,
    ResponseReceived,
    SendMessage,
    StrayResponse,
    TransactionTerminated,
    TransactionTimedOut,
)
from sipwake.transaction.keys import ClientKey, ServerTransactionKey
from sipwake.transaction.layer import TransactionLayer
from sipwake.transaction.messages import add_via

__all__ = [
    "HOST",
    "AnswerPlan",
    "CallerAgent",
    "DeviceAgent",
    "EndpointAgent",
    "Transmit",
    "UserAgent",
]

HOST = "127.0.0.1"
_SDP = (
    "v=0\r\no=- {sess} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Transmit:
    """Write ``message`` to the server at ``peer`` (``peer.flow``: over that connection)."""

    message: Request | Response
    peer: Peer


@dataclass(frozen=True, slots=True, kw_only=True)
class AnswerPlan:
    """How a UAS answers an INVITE: ring or not, then ``status`` after ``after`` s (None:
    never, it rings until cancelled)."""

    ring: bool
    status: int | None
    after: float = 0.0
    reason: str | None = None


@dataclass(slots=True, kw_only=True)
class _Dialog:
    """RFC 3261 §12: what an in-dialog request needs."""

    call_id: str
    local: str
    """Our From for requests we send (name-addr with our tag)."""
    remote: str
    """Their To for requests we send (name-addr with their tag)."""
    remote_target: str
    routes: tuple[str, ...]
    cseq: int


@dataclass(slots=True, kw_only=True)
class _Pending:
    """A request this agent sent, until its final response: what to send again with
    credentials when the server challenges it."""

    request: Request
    answered: int = 0
    """Challenges answered for it so far (the request is the answer to the last one)."""


#: (Call-ID, CSeq number, method): the request a response answers.
_RequestRef = tuple[str, int, str]
_CHALLENGE_HEADER = {401: "WWW-Authenticate", 407: "Proxy-Authenticate"}
_CREDENTIALS_HEADER = {401: "Authorization", 407: "Proxy-Authorization"}


def _ref(message: Request | Response) -> _RequestRef:
    return (message.call_id, message.cseq.seq, message.cseq.method)


@dataclass(slots=True, kw_only=True)
class _Incoming:
    """An INVITE this agent is answering."""

    key: ServerTransactionKey
    request: Request
    tag: str
    final: int | None = None


@dataclass(slots=True, kw_only=True)
class _Outgoing:
    """A call this agent placed."""

    call: str
    key: ClientKey | None
    """The INVITE's client transaction (the latest one, after a digest challenge)."""
    invite: Request
    acked: set[str] = field(default_factory=set)
    """To tags of the 2xx responses already ACKed."""
    dialog: _Dialog | None = None
    cancelled: bool = False
    ended: bool = False


class UserAgent:
    """A SIP user agent core: the transaction layer, dialogs, a timer heap."""

    role: Literal["device", "caller", "endpoint"]

    def __init__(
        self, *, name: str, user: str, domain: str, transport: str, port: int, ids: Ids
    ) -> None:
        self.name = name
        self.user = user
        self.domain = domain
        self.transport = transport
        self.port = port
        self.ids = ids
        self.layer = TransactionLayer(ids)
        self.server = Peer(
            transport=transport, host=HOST, port=5061 if transport == "tls" else 5060
        )
        self.flow: int | None = None
        """The connection to the server (TCP/TLS), when one is open."""
        self._timers: list[tuple[float, int, str, str]] = []
        self._timer_seq = 0
        self._incoming: dict[str, _Incoming] = {}
        """Call-ID → INVITE being answered."""
        self._dialogs: dict[str, _Dialog] = {}
        """Call-ID → confirmed dialog."""
        self.auth_user: str | None = None
        self._password: str | None = None
        self._digest = {
            status: DigestClient(username=user, ids=ids) for status in _CHALLENGE_HEADER
        }
        self._challenged_as: dict[str, int] = {}
        """Method → the status (401/407) its last challenge came with: how to authorize
        the next request of that method pre-emptively."""
        self._pending: dict[_RequestRef, _Pending] = {}
        self.auth_failures: list[str] = []
        """Why a request of this agent could not authenticate, one sentence each (the
        replay drains it into the record)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.transport}:{self.port}>"

    # -- addresses -------------------------------------------------------------------
    @property
    def server_peer(self) -> Peer:
        return Peer(
            transport=self.server.transport,
            host=self.server.host,
            port=self.server.port,
            flow=self.flow,
        )

    @property
    def contact(self) -> str:
        tp = "" if self.transport == "udp" else f";transport={self.transport}"
        return f"<sip:{self.user}@{HOST}:{self.port}{tp}>"

    @property
    def reachable(self) -> bool:
        """Whether the agent takes messages (a suspended phone does not)."""
        return True

    # -- credentials -----------------------------------------------------------------
    @property
    def who(self) -> str:
        """How failures name this agent: ``bob (bob.iphone)`` or ``carol``."""
        return self.name if self.name == self.user else f"{self.user} ({self.name})"

    def set_credentials(self, password: str, auth_user: str | None = None) -> None:
        """Answer digest challenges as ``auth_user`` (default: the user) with ``password``."""
        self.auth_user = auth_user or self.user
        self._password = password
        self._digest = {
            status: DigestClient(username=self.auth_user, ids=self.ids)
            for status in _CHALLENGE_HEADER
        }

    def will_answer(self, response: Response) -> bool:
        """Whether this agent will send the request ``response`` challenges again with
        credentials (so ``response`` is not the request's outcome)."""
        pending = self._pending.get(_ref(response))
        if response.status not in _CHALLENGE_HEADER or pending is None:
            return False
        return self._password is not None and self._may_answer(pending, response)

    @staticmethod
    def _challenges(response: Response) -> list[Challenge]:
        out = []
        for value in response.headers.get_all(_CHALLENGE_HEADER[response.status]):
            try:
                out.append(parse_challenge(value))
            except AuthError:
                continue  # RFC 8760 §2.5: skip what cannot be used
        return out

    def _may_answer(self, pending: _Pending, response: Response) -> bool:
        stale = any(c.stale for c in self._challenges(response))
        return pending.answered == 0 or (stale and pending.answered < 2)

    def _authorize(self, request: Request) -> None:
        """Pre-emptive credentials on the last nonce of the method's last challenge."""
        status = self._challenged_as.get(request.method)
        if status is None or self._password is None:
            return
        credentials = self._digest[status].next_credentials(
            password=self._password, method=request.method, uri=str(request.uri), body=request.body
        )
        if credentials is not None:
            request.headers.set(_CREDENTIALS_HEADER[status], str(credentials))

    def _on_challenge(self, response: Response, now: float) -> list[Transmit] | None:
        """The request ``response`` (a final answer) ends, or is sent again with
        credentials: the retry's messages, or None when the response is the outcome."""
        pending = self._pending.pop(_ref(response), None)
        if pending is None:
            return None
        status = response.status
        request = pending.request
        what = f"{status} to {request.method}"
        carried = any(h in request.headers for h in _CREDENTIALS_HEADER.values())
        if status == 403 and carried:
            reason = f" {response.reason}" if response.reason else ""
            self.auth_failures.append(
                f"{self.who}: the server refused the credentials of {self.auth_user} "
                f"({status}{reason} to {request.method}): wrong password or auth_user?"
            )
            return None
        if status not in _CHALLENGE_HEADER:
            return None
        if self._password is None:
            self.auth_failures.append(
                f"{self.who}: the server asked for authentication ({what}) and the scenario "
                f"gives no password (users.{self.user}.password)"
            )
            return None
        if not self._may_answer(pending, response):
            self.auth_failures.append(
                f"{self.who}: the server asked again for authentication ({what}) after "
                f"{self.auth_user}'s credentials were sent: wrong password or auth_user?"
            )
            return None
        try:
            credentials = self._digest[status].answer(
                self._challenges(response),
                password=self._password,
                method=request.method,
                uri=str(request.uri),
                body=request.body,
            )
        except AuthError as exc:
            self.auth_failures.append(f"{self.who}: cannot answer the {what}: {exc}")
            return None
        self._challenged_as[request.method] = status
        retry = request.copy()
        retry.headers.remove("Via")
        for header in _CREDENTIALS_HEADER.values():
            retry.headers.remove(header)
        retry.headers.set("CSeq", f"{request.cseq.seq + 1} {request.method}")
        retry.headers.add(_CREDENTIALS_HEADER[status], str(credentials))
        key, out = self._send_keyed(retry, now, answered=pending.answered + 1)
        self._resent(request, retry, key)
        return out

    def _resent(self, old: Request, new: Request, key: ClientKey) -> None:
        """``old`` went out again as ``new`` (with credentials) in transaction ``key``."""

    # -- sans-IO entry points -------------------------------------------------------
    def receive(self, data: bytes, source: Peer, now: float) -> list[Transmit]:
        message = parse_message(data, stream=source.reliable)
        return self._run(self.layer.receive(message, source, now), now)

    def next_deadline(self) -> float | None:
        own = self._timers[0][0] if self._timers else None
        layer = self.layer.next_deadline()
        if own is None:
            return layer
        return own if layer is None else min(own, layer)

    def handle_timeout(self, now: float) -> list[Transmit]:
        out = self._run(self.layer.handle_timeout(now), now)
        while self._timers and self._timers[0][0] <= now:
            _, _, what, ref = heapq.heappop(self._timers)
            out += self._on_timer(what, ref, now)
        return out

    # -- plumbing -------------------------------------------------------------------
    def _arm(self, deadline: float, what: str, ref: str) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (deadline, self._timer_seq, what, ref))

    def _run(self, outputs: Sequence[Output], now: float) -> list[Transmit]:
        out: list[Transmit] = []
        for item in outputs:
            match item:
                case SendMessage(message=message, peer=peer):
                    out.append(Transmit(message=message, peer=peer))
                case RequestReceived(request=request, transaction_key=key):
                    out += self._on_request(request, key, now)
                case ResponseReceived(response=response, transaction_key=key):
                    retry = self._on_challenge(response, now) if response.final else None
                    out += retry if retry is not None else self._on_response(response, key, now)
                case CancelReceived(invite_key=key):
                    out += self._on_cancel(key, now)
                case StrayResponse(response=response):
                    out += self._on_response(response, None, now)
                case AckReceived() | TransactionTerminated() | MessageDropped():
                    pass
                case RequestRejected() | TransactionTimedOut():
                    pass
        return out

    def _send(self, request: Request, now: float) -> list[Transmit]:
        return self._send_keyed(request, now)[1]

    def _send_keyed(
        self, request: Request, now: float, *, answered: int = 0
    ) -> tuple[ClientKey, list[Transmit]]:
        """Send ``request`` in a new client transaction (authorized pre-emptively unless
        it answers a challenge), remembered until its final response."""
        if not answered:
            self._authorize(request)
        add_via(request, transport=self.transport, host=HOST, port=self.port, ids=self.ids)
        self._pending[_ref(request)] = _Pending(request=request, answered=answered)
        key, outputs = self.layer.send_request(request, self.server_peer, now)
        return key, self._run(outputs, now)

    def _request(
        self, method: str, uri: str, fields: list[tuple[str, str]], body: str = ""
    ) -> Request:
        headers = Headers([("Max-Forwards", "70"), *fields])
        if body:
            headers.add("Content-Type", "application/sdp")
        headers.add("Content-Length", str(len(body.encode())))
        return Request(method, parse_uri(uri), headers, body.encode())

    # -- the UAS side ----------------------------------------------------------------
    def answer_plan(self, request: Request) -> AnswerPlan:
        return AnswerPlan(ring=True, status=None)

    def _on_request(
        self, request: Request, key: ServerTransactionKey, now: float
    ) -> list[Transmit]:
        method = request.method
        if method == "INVITE":
            return self._on_invite(request, key, now)
        if method == "BYE":
            known = self._dialogs.pop(request.call_id, None) is not None
            return self._respond(key, request, 200 if known else 481, now)
        if method in ("OPTIONS", "MESSAGE", "NOTIFY", "INFO", "UPDATE"):
            return self._respond(key, request, 200, now)
        return self._respond(key, request, 405, now)

    def _respond(
        self,
        key: ServerTransactionKey,
        request: Request,
        status: int,
        now: float,
        *,
        tag: str | None = None,
        reason: str | None = None,
    ) -> list[Transmit]:
        response = make_response(request, status, reason, to_tag=tag or self.ids.tag())
        if request.method == "INVITE" and 100 < status < 300:
            response.headers.add("Contact", self.contact)
            # RFC 3261 §12.1.1: a UAS answering in a dialog copies the Record-Route, so
            # the caller's in-dialog requests follow the route set the proxy recorded.
            for value in request.headers.get_all("Record-Route"):
                response.headers.add("Record-Route", value)
        if request.method == "INVITE" and 200 <= status < 300:
            body = _SDP.format(sess=self.port, port=40000 + self.port % 1000 * 2).encode()
            response.headers.remove("Content-Length")
            response.set_body(body, "application/sdp")
        return self._run(self.layer.respond(key, response, now), now)

    def _on_invite(self, request: Request, key: ServerTransactionKey, now: float) -> list[Transmit]:
        if request.to.tag is not None:  # a re-INVITE: keep the session as it is
            return self._respond(key, request, 200, now)
        plan = self.answer_plan(request)
        incoming = _Incoming(key=key, request=request, tag=self.ids.tag())
        self._incoming[request.call_id] = incoming
        out: list[Transmit] = []
        if plan.ring:
            out += self._respond(key, request, 180, now, tag=incoming.tag)
        if plan.status is not None:
            if plan.after <= 0:
                out += self._final(incoming, plan.status, now, plan.reason)
            else:
                self._arm(
                    now + plan.after, f"answer:{plan.status}:{plan.reason or ''}", request.call_id
                )
        return out

    def _final(
        self, incoming: _Incoming, status: int, now: float, reason: str | None = None
    ) -> list[Transmit]:
        if incoming.final is not None:
            return []
        incoming.final = status
        request = incoming.request
        out = self._respond(incoming.key, request, status, now, tag=incoming.tag, reason=reason)
        if 200 <= status < 300:
            contact = next(iter(request.contacts or []), None)
            self._dialogs[request.call_id] = _Dialog(
                call_id=request.call_id,
                local=f"{request.headers.get('To')};tag={incoming.tag}",
                remote=request.headers.get("From") or "",
                remote_target=str(contact.uri) if contact is not None else str(request.uri),
                routes=tuple(request.headers.values("Record-Route")),
                cseq=0,
            )
        return out

    def _on_cancel(self, key: ServerTransactionKey, now: float) -> list[Transmit]:
        for incoming in self._incoming.values():
            if incoming.key == key and incoming.final is None:
                return self._final(incoming, 487, now)
        return []

    def _on_timer(self, what: str, ref: str, now: float) -> list[Transmit]:
        if what.startswith("answer:"):
            _, status, reason = what.split(":", 2)
            incoming = self._incoming.get(ref)
            if incoming is not None:
                return self._final(incoming, int(status), now, reason or None)
        return []

    def _on_response(self, response: Response, key: ClientKey | None, now: float) -> list[Transmit]:
        return []

    def incoming_uri(self, call_id: str) -> str | None:
        """The Request-URI of the INVITE of ``call_id`` this agent answered, if any."""
        incoming = self._incoming.get(call_id)
        return None if incoming is None else str(incoming.request.uri)

    # -- in-dialog -------------------------------------------------------------------
    def has_dialog(self, call_id: str) -> bool:
        return call_id in self._dialogs

    def bye(self, call_id: str, now: float) -> list[Transmit]:
        """Hang up the confirmed dialog of ``call_id`` (RFC 3261 §15.1.1)."""
        dialog = self._dialogs.pop(call_id, None)
        if dialog is None:
            return []
        dialog.cseq += 1
        fields = [("Route", r) for r in dialog.routes]
        fields += [
            ("From", dialog.local),
            ("To", dialog.remote),
            ("Call-ID", dialog.call_id),
            ("CSeq", f"{dialog.cseq} BYE"),
        ]
        return self._send(self._request("BYE", dialog.remote_target, fields), now)


class DeviceAgent(UserAgent):
    """A softphone of a scenario user (see the module docstring)."""

    role = "device"

    def __init__(
        self,
        *,
        name: str,
        user: str,
        domain: str,
        transport: str,
        port: int,
        ids: Ids,
        push_params: str,
        instance: str,
        platform: str,
        answer: AnswerPlan,
    ) -> None:
        super().__init__(
            name=name, user=user, domain=domain, transport=transport, port=port, ids=ids
        )
        self.push_params = push_params
        """The Contact URI parameters that carry the push target ("" for none)."""
        self.instance = instance
        self.platform = platform
        self.answer = answer
        self.state: Literal["foreground", "suspended", "offline"] = "offline"
        self.waking = False
        self.network_down = False
        """No network (``network_loss``): nothing reaches the device, it sends nothing."""
        self.push_waiting = False
        """A push arrived for it while it had no network (the push service keeps it)."""
        self._reg_call_id = ids.call_id()
        self._reg_tag = ids.tag()
        self._reg_cseq = 0
        self.registered: int | None = None
        """Status of the last REGISTER answer."""
        self.feature_answers: list[str] = []
        """The server's final answers to the feature codes it dialled (``603 DND On``)."""

    @property
    def reachable(self) -> bool:
        return self.state == "foreground" and not self.network_down

    def answer_plan(self, request: Request) -> AnswerPlan:
        return self.answer

    def register(self, now: float, *, expires: int = 3600) -> list[Transmit]:
        """REGISTER (over the current flow): RFC 8599 push parameters, +sip.instance."""
        self.state = "foreground"
        self.waking = False
        self._reg_cseq += 1
        aor = f"<sip:{self.user}@{self.domain}>"
        tp = "" if self.transport == "udp" else f";transport={self.transport}"
        contact = (
            f"<sip:{self.user}@{HOST}:{self.port}{tp}{self.push_params}>"
            f';+sip.instance="<{self.instance}>"'
        )
        fields = [
            ("From", f"{aor};tag={self._reg_tag}"),
            ("To", aor),
            ("Call-ID", self._reg_call_id),
            ("CSeq", f"{self._reg_cseq} REGISTER"),
            ("Contact", contact),
            ("Expires", str(expires)),
            ("User-Agent", f"sipwake-replay/{self.platform}"),
        ]
        return self._send(self._request("REGISTER", f"sip:{self.domain}", fields), now)

    def new_registration_call_id(self, call_id: str) -> None:
        """REGISTER from now on with this Call-ID, CSeq from 1 (a server that keeps the
        bindings of an earlier run with the same Call-ID would refuse a CSeq that is not
        higher: RFC 3261 §10.3 step 7)."""
        self._reg_call_id = call_id
        self._reg_cseq = 0

    def dial_feature_code(self, code: str, now: float) -> list[Transmit]:
        """Dial a PBX feature code (``*78``: DND on): an INVITE to ``sip:CODE@domain``
        the server answers itself; its final answer lands in ``feature_answers``."""
        aor = f"<sip:{self.user}@{self.domain}>"
        fields = [
            ("From", f"{aor};tag={self.ids.tag()}"),
            ("To", f"<sip:{code}@{self.domain}>"),
            ("Call-ID", self.ids.call_id()),
            ("CSeq", "1 INVITE"),
            ("Contact", self.contact),
            ("User-Agent", f"sipwake-replay/{self.platform}"),
        ]
        return self._send(self._request("INVITE", f"sip:{code}@{self.domain}", fields), now)

    def suspend(self) -> None:
        """The app goes to the background: no more messages reach it."""
        self.state = "suspended"
        self.flow = None

    def go_offline(self) -> None:
        self.state = "offline"
        self.flow = None

    def _on_response(self, response: Response, key: ClientKey | None, now: float) -> list[Transmit]:
        if response.cseq.method == "REGISTER" and response.status >= 200:
            self.registered = response.status
        elif response.cseq.method == "INVITE" and response.status >= 200:
            self.feature_answers.append(f"{response.status} {response.reason}")
        return []

    def _resent(self, old: Request, new: Request, key: ClientKey) -> None:
        if new.method == "REGISTER":
            self._reg_cseq = max(self._reg_cseq, new.cseq.seq)


class CallerAgent(UserAgent):
    """A caller: places calls to the server's users and hangs them up."""

    role = "caller"

    def __init__(
        self,
        *,
        name: str,
        user: str,
        domain: str,
        port: int,
        ids: Ids,
        display_name: str | None = None,
    ) -> None:
        super().__init__(name=name, user=user, domain=domain, transport="udp", port=port, ids=ids)
        self.display_name = display_name
        self.calls: dict[str, _Outgoing] = {}
        """Scenario call id → the call."""
        self._by_call_id: dict[str, _Outgoing] = {}

    def invite(self, call: str, to_user: str, now: float) -> tuple[str, list[Transmit]]:
        """Call ``to_user``; returns the INVITE's Call-ID and what to send."""
        call_id = self.ids.call_id()
        name = f'"{self.display_name}" ' if self.display_name else ""
        fields = [
            ("From", f"{name}<sip:{self.user}@{self.domain}>;tag={self.ids.tag()}"),
            ("To", f"<sip:{to_user}@{self.domain}>"),
            ("Call-ID", call_id),
            ("CSeq", "1 INVITE"),
            ("Contact", self.contact),
            ("User-Agent", "sipwake-replay/caller"),
        ]
        body = _SDP.format(sess=self.port, port=30000 + self.port % 1000 * 2)
        request = self._request("INVITE", f"sip:{to_user}@{self.domain}", fields, body)
        outgoing = _Outgoing(call=call, key=None, invite=request)
        self.calls[call] = outgoing
        self._by_call_id[call_id] = outgoing
        outgoing.key, out = self._send_keyed(request, now)
        return call_id, out

    def _resent(self, old: Request, new: Request, key: ClientKey) -> None:
        outgoing = self._by_call_id.get(new.call_id)
        if new.method == "INVITE" and outgoing is not None and outgoing.invite is old:
            outgoing.invite, outgoing.key = new, key

    def message(self, ref: str, to_user: str, text: str, now: float) -> tuple[str, list[Transmit]]:
        """Send an instant message to ``to_user`` (RFC 3428); its Call-ID and what to send."""
        call_id = self.ids.call_id()
        name = f'"{self.display_name}" ' if self.display_name else ""
        fields = [
            ("From", f"{name}<sip:{self.user}@{self.domain}>;tag={self.ids.tag()}"),
            ("To", f"<sip:{to_user}@{self.domain}>"),
            ("Call-ID", call_id),
            ("CSeq", "1 MESSAGE"),
            ("User-Agent", "sipwake-replay/caller"),
        ]
        body = text.encode()
        headers = Headers([("Max-Forwards", "70"), *fields])
        headers.add("Content-Type", "text/plain;charset=utf-8")
        headers.add("Content-Length", str(len(body)))
        request = Request("MESSAGE", parse_uri(f"sip:{to_user}@{self.domain}"), headers, body)
        return call_id, self._send(request, now)

    def cancel(self, call: str, now: float) -> list[Transmit]:
        """CANCEL the call if it has no final answer yet (RFC 3261 §9.1)."""
        outgoing = self.calls.get(call)
        if outgoing is None or outgoing.cancelled or outgoing.dialog is not None:
            return []
        live = (IctState.CALLING, IctState.PROCEEDING)
        if outgoing.key is None or self.layer.state_of(outgoing.key) not in live:
            return []  # gone, or a final response came first (Completed, waiting for Timer D)
        outgoing.cancelled = True
        _, outputs = self.layer.cancel(outgoing.key, now)
        return self._run(outputs, now)

    def hangup(self, call: str, now: float) -> list[Transmit]:
        """BYE once answered; CANCEL before."""
        outgoing = self.calls.get(call)
        if outgoing is None:
            return []
        if outgoing.dialog is None:
            return self.cancel(call, now)
        outgoing.ended = True
        return self.bye(outgoing.invite.call_id, now)

    def _on_response(self, response: Response, key: ClientKey | None, now: float) -> list[Transmit]:
        outgoing = self._by_call_id.get(response.call_id)
        if outgoing is None or response.cseq.method != "INVITE" or not 200 <= response.status < 300:
            return []
        tag = response.to.tag or ""
        out = self._ack(outgoing, response, now)
        if tag in outgoing.acked:
            return out  # a retransmitted 2xx: ACK again
        outgoing.acked.add(tag)
        contact = next(iter(response.contacts or []), None)
        dialog = _Dialog(
            call_id=response.call_id,
            local=outgoing.invite.headers.get("From") or "",
            remote=response.headers.get("To") or "",
            remote_target=str(contact.uri) if contact is not None else str(outgoing.invite.uri),
            routes=tuple(reversed(response.headers.values("Record-Route"))),
            cseq=1,
        )
        if outgoing.dialog is None and not outgoing.ended:
            outgoing.dialog = dialog
            self._dialogs[response.call_id] = dialog
            return out
        # A second fork answered too (RFC 3261 §13.2.2.4): ACK it, then hang it up.
        self._dialogs[f"{response.call_id}#{tag}"] = dialog
        return out + self.bye(f"{response.call_id}#{tag}", now)

    def _ack(self, outgoing: _Outgoing, response: Response, now: float) -> list[Transmit]:
        """The ACK for a 2xx: a new transaction-less request along the route set (§13.2.2.4)."""
        contact = next(iter(response.contacts or []), None)
        target = str(contact.uri) if contact is not None else str(outgoing.invite.uri)
        fields = [("Route", r) for r in reversed(response.headers.values("Record-Route"))]
        fields += [
            ("From", outgoing.invite.headers.get("From") or ""),
            ("To", response.headers.get("To") or ""),
            ("Call-ID", response.call_id),
            ("CSeq", f"{outgoing.invite.cseq.seq} ACK"),
        ]
        # RFC 3261 §13.2.2.4: the ACK carries the same credentials as the INVITE.
        fields += [
            (name, value)
            for name in _CREDENTIALS_HEADER.values()
            for value in outgoing.invite.headers.get_all(name)
        ]
        ack = self._request("ACK", target, fields)
        add_via(ack, transport="udp", host=HOST, port=self.port, ids=self.ids)
        return self._run(self.layer.send_stateless(ack, self.server_peer), now)


class EndpointAgent(UserAgent):
    """A UAS at a fixed address: the lab voicemail or the GSM gateway for twin calls."""

    role = "endpoint"

    def __init__(
        self,
        *,
        name: str,
        port: int,
        ids: Ids,
        domain: str,
        plans: dict[str, AnswerPlan],
        default: AnswerPlan,
    ) -> None:
        super().__init__(name=name, user=name, domain=domain, transport="udp", port=port, ids=ids)
        self.plans = plans
        """Request-URI user → how to answer (the gateway: one per mobile number)."""
        self.default = default

    def answer_plan(self, request: Request) -> AnswerPlan:
        uri = request.uri
        user = uri.user if isinstance(uri, SipUri) else None
        return self.plans.get(user or "", self.default)
