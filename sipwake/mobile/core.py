"""The built-in "mobile": the user's GSM phone behind the twin branch, sans-IO.

Theory of operation
===================

When no ``calls.twin_gateway`` is configured, the twin branch of a user with a
``mobile`` number goes to this user agent server instead of a gateway: it
*is* that mobile. ``MobileCore`` runs on sipwake's ``TransactionLayer``; the
shell feeds it datagrams and the time, and fires its timers
(``next_deadline``/``handle_timeout``). Outputs are the voicemail's
(``SendDatagram``, ``CallLogged``, ``Dropped``).

A call::

    RINGING  --answer_after_s, or answer(number)-->  ANSWERED (200 + SDP, retransmitted)
    RINGING  --reject(number)-->                     gone     (486 Busy Here)
    RINGING  --CANCEL-->                             gone     (487)
    ANSWERED --ACK-->                                TALKING
    ANSWERED --64*T1 without ACK-->                  gone     (BYE)
    TALKING  --BYE-->                                gone     (200)
    TALKING  --max_call_s, or hang_up(number)-->     gone     (BYE)

- INVITE: 100 Trying, then 180 Ringing at once (the caller hears the mobile
  ring). The number is the Request-URI's user part (``sip:{number}@…``).
  ``answer_after(number)`` says after how many seconds the mobile answers by
  itself, ``None`` for never (someone must ``answer`` it: ``sipwake mobile
  answer NUMBER``).
- The 200 answers the SDP offer with PCMU/PCMA on ``media_port`` (one socket
  the shell binds and drains; nothing is played or recorded), or offers them
  when the INVITE had no offer. It is retransmitted until the ACK (RFC 3261
  §13.3.1.4), as the voicemail does.
- In-dialog BYE gets 200; other in-dialog requests 481 unless they are ours;
  OPTIONS 200; other methods 405.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import assert_never

from sipwake.errors import RemoteProtocolError, SipParseError
from sipwake.ids import Ids
from sipwake.sip.message import Request, Response, make_response
from sipwake.sip.parser import parse_message
from sipwake.sip.peer import Peer, mark_received, response_peer
from sipwake.sip.uri import SipUri
from sipwake.transaction import (
    AckReceived,
    CancelReceived,
    MessageDropped,
    Output,
    RequestReceived,
    RequestRejected,
    ResponseReceived,
    SendMessage,
    ServerTransactionKey,
    StrayResponse,
    TimerConfig,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
)
from sipwake.voicemail.dialog import build_bye
from sipwake.voicemail.events import CallLogged, CallStep, Dropped, SendDatagram
from sipwake.voicemail.sdp import answer_offer, make_offer, parse_sdp

__all__ = ["ALLOW", "MobileCall", "MobileCore", "MobileOutput", "MobileState"]

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS"

MobileOutput = SendDatagram | CallLogged | Dropped


class MobileState(enum.Enum):
    RINGING = "ringing"
    ANSWERED = "answered"
    TALKING = "talking"


@dataclass(slots=True, kw_only=True)
class MobileCall:
    """One call to the mobile (``calls()`` lists them for the status endpoint)."""

    ref: str
    order: int
    number: str
    caller: str
    invite: Request
    invite_key: ServerTransactionKey
    source: Peer
    local_tag: str
    session_id: int
    state: MobileState = MobileState.RINGING
    answer_at: float | None = None
    ends_at: float | None = None
    local_cseq: int = 0
    ok: Response | None = None
    ok_peer: Peer | None = None
    ok_interval: float = 0.0
    ok_next: float | None = None
    ok_give_up: float | None = None

    def deadline(self) -> float | None:
        candidates = (self.answer_at, self.ok_next, self.ok_give_up, self.ends_at)
        times = [t for t in candidates if t is not None]
        return min(times) if times else None


class MobileCore:
    """The twin branch's far end; see the module docstring."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        media_port: int,
        ids: Ids,
        answer_after: Callable[[str], float | None] = lambda _number: None,
        max_call_s: float = 600.0,
        timers: TimerConfig | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.media_port = media_port
        self.answer_after = answer_after
        self.max_call_s = max_call_s
        self._ids = ids
        self.layer = TransactionLayer(ids, timers)
        self.timers = self.layer.timers
        host_part = f"[{host}]" if ":" in host and not host.startswith("[") else host
        self._host_port = f"{host_part}:{port}"
        self._calls: dict[str, MobileCall] = {}
        self._by_invite: dict[ServerTransactionKey, str] = {}
        self._dialogs: dict[tuple[str, str], str] = {}
        self._created = 0

    def __len__(self) -> int:
        return len(self._calls)

    def calls(self) -> list[MobileCall]:
        return sorted(self._calls.values(), key=lambda c: c.order)

    # -- inputs --------------------------------------------------------------------
    def receive(self, data: bytes, source: Peer, now: float) -> list[MobileOutput]:
        """One datagram from ``source`` on the SIP socket."""
        try:
            message = parse_message(data)
            if isinstance(message, Request):
                mark_received(message, source)
        except SipParseError as exc:
            return [Dropped(reason=f"unparsable message: {exc.reason}", peer=source)]
        return self._run(self.layer.receive(message, source, now), now)

    def answer(self, number: str, now: float) -> list[MobileOutput]:
        """Answer every call ringing on ``number`` (``sipwake mobile answer``)."""
        out: list[MobileOutput] = []
        for call in self.calls():
            if call.number == number and call.state is MobileState.RINGING:
                call.answer_at = None
                out += self._pick_up(call, now)
        return out

    def reject(self, number: str, now: float) -> list[MobileOutput]:
        """Decline every call ringing on ``number`` with 486 Busy Here."""
        out: list[MobileOutput] = []
        for call in self.calls():
            if call.number == number and call.state is MobileState.RINGING:
                out += self._respond(call.invite_key, call.invite, 486, now, tag=call.local_tag)
                self._forget(call)
                out.append(self._log(call, "rejected", "486 Busy Here"))
        return out

    def hang_up(self, number: str, now: float) -> list[MobileOutput]:
        """End every answered call on ``number`` with a BYE."""
        out: list[MobileOutput] = []
        for call in self.calls():
            if call.number == number and call.state is not MobileState.RINGING:
                out += self._bye(call, now, "hung up")
        return out

    def next_deadline(self) -> float | None:
        deadlines = [d for d in (c.deadline() for c in self._calls.values()) if d is not None]
        layer = self.layer.next_deadline()
        if layer is not None:
            deadlines.append(layer)
        return min(deadlines) if deadlines else None

    def handle_timeout(self, now: float) -> list[MobileOutput]:
        out = self._run(self.layer.handle_timeout(now), now)
        while True:
            due = [
                (d, c.order, c)
                for c in self._calls.values()
                if (d := c.deadline()) is not None and d <= now
            ]
            if not due:
                return out
            _, _, call = min(due, key=lambda item: (item[0], item[1]))
            out += self._call_timer(call, now)

    # -- transaction layer ------------------------------------------------------------
    def _run(self, outputs: list[Output], now: float) -> list[MobileOutput]:
        out: list[MobileOutput] = []
        for output in outputs:
            match output:
                case SendMessage(message=message, peer=peer):
                    out.append(SendDatagram(data=message.to_bytes(), peer=peer))
                case RequestReceived(request=request, source=source, transaction_key=key):
                    out += self._on_request(request, source, key, now)
                case AckReceived(request=ack):
                    out += self._on_ack(ack)
                case CancelReceived(invite_key=key, cancel=cancel):
                    out += self._on_cancel(key, cancel.headers.get("Reason"), now)
                case MessageDropped(reason=reason, source=source):
                    out.append(Dropped(reason=reason, peer=source))
                case StrayResponse(response=response, source=source):
                    out.append(Dropped(reason=f"stray {response.status} response", peer=source))
                case (
                    ResponseReceived()
                    | RequestRejected()
                    | TransactionTimedOut()
                    | TransportFailed()
                    | TransactionTerminated()
                ):
                    pass  # responses to our BYEs need no action
                case _:
                    assert_never(output)
        return out

    def _respond(
        self,
        key: ServerTransactionKey,
        request: Request,
        status: int,
        now: float,
        *,
        tag: str | None = None,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> list[MobileOutput]:
        response = make_response(request, status, to_tag=tag or self._ids.tag())
        for name, value in extra:
            response.headers.add(name, value)
        return self._run(self.layer.respond(key, response, now), now)

    def _on_request(
        self, request: Request, source: Peer, key: ServerTransactionKey, now: float
    ) -> list[MobileOutput]:
        method = request.method
        if method == "INVITE" and request.to.tag is None:
            return self._on_invite(request, source, key, now)
        call = self._dialog(request)
        if method == "BYE" and call is not None:
            out = self._respond(key, request, 200, now, tag=call.local_tag)
            self._forget(call)
            return [*out, self._log(call, "ended", "BYE from the caller")]
        if method == "OPTIONS":
            return self._respond(key, request, 200, now, extra=(("Allow", ALLOW),))
        if method in ("BYE", "INVITE", "CANCEL") or request.to.tag is not None:
            return self._respond(key, request, 481, now)
        return self._respond(key, request, 405, now, extra=(("Allow", ALLOW),))

    def _on_invite(
        self, request: Request, source: Peer, key: ServerTransactionKey, now: float
    ) -> list[MobileOutput]:
        uri = request.uri
        number = (uri.user if isinstance(uri, SipUri) else None) or "?"
        offer = None
        if request.body.strip():
            try:
                offer = parse_sdp(request.body)
            except RemoteProtocolError:
                offer = None
            if offer is None or answer_offer(offer, host=self.host, port=9, session_id=0) is None:
                warning = (("Warning", f'305 {self.host} "Incompatible media format"'),)
                return self._respond(key, request, 488, now, extra=warning)
        self._created += 1
        call = MobileCall(
            ref=self._ids.token(12),
            order=self._created,
            number=number,
            caller=str(request.from_.uri),
            invite=request,
            invite_key=key,
            source=source,
            local_tag=self._ids.tag(),
            session_id=int(self._ids.token(8), 16),
        )
        delay = self.answer_after(number)
        if delay is not None:
            call.answer_at = now + delay
        self._calls[call.ref] = call
        self._by_invite[key] = call.ref
        self._dialogs[(request.call_id, call.local_tag)] = call.ref
        out = self._run(self.layer.respond(key, make_response(request, 100), now), now)
        ringing = make_response(request, 180, to_tag=call.local_tag)
        ringing.headers.add("Contact", self._contact(number))
        out += self._run(self.layer.respond(key, ringing, now), now)
        when = "never by itself" if delay is None else f"after {delay:g} s"
        out.append(self._log(call, "invited", f"{number} rings for {call.caller}; answers {when}"))
        return out

    def _on_ack(self, ack: Request) -> list[MobileOutput]:
        call = self._dialog(ack)
        if call is None or call.state is not MobileState.ANSWERED:
            return []
        call.state = MobileState.TALKING
        call.ok = None
        call.ok_next = call.ok_give_up = None
        return [self._log(call, "answered", "ACK: in the call")]

    def _on_cancel(
        self, key: ServerTransactionKey, reason: str | None, now: float
    ) -> list[MobileOutput]:
        ref = self._by_invite.get(key)
        call = self._calls.get(ref) if ref is not None else None
        if call is None or call.state is not MobileState.RINGING:
            return []
        out = self._respond(key, call.invite, 487, now, tag=call.local_tag)
        self._forget(call)
        why = f" (Reason: {reason})" if reason else ""
        return [*out, self._log(call, "cancelled", f"CANCEL while ringing{why}")]

    def _dialog(self, request: Request) -> MobileCall | None:
        tag = request.to.tag
        ref = self._dialogs.get((request.call_id, tag)) if tag else None
        return self._calls.get(ref) if ref is not None else None

    # -- calls ------------------------------------------------------------------------
    def _call_timer(self, call: MobileCall, now: float) -> list[MobileOutput]:
        if call.answer_at is not None and call.answer_at <= now:
            call.answer_at = None
            return self._pick_up(call, now)
        if call.ok_give_up is not None and call.ok_give_up <= now:
            return [self._log(call, "failed", "no ACK for the 200 OK"), *self._bye(call, now, "")]
        if call.ok_next is not None and call.ok_next <= now and call.ok is not None:
            assert call.ok_peer is not None
            call.ok_interval = min(2 * call.ok_interval, self.timers.T2)
            call.ok_next = now + call.ok_interval
            return [SendDatagram(data=call.ok.to_bytes(), peer=call.ok_peer)]
        return self._bye(call, now, f"after {self.max_call_s:g} s")

    def _pick_up(self, call: MobileCall, now: float) -> list[MobileOutput]:
        """Send the 200 OK with SDP and retransmit it until the ACK."""
        request = call.invite
        body = make_offer(host=self.host, port=self.media_port, session_id=call.session_id)
        if request.body.strip():
            answer = answer_offer(
                parse_sdp(request.body),
                host=self.host,
                port=self.media_port,
                session_id=call.session_id,
            )
            assert answer is not None  # checked when the INVITE came
            body = answer.body
        ok = make_response(request, 200, to_tag=call.local_tag)
        for value in request.headers.get_all("Record-Route"):  # RFC 3261 §12.1.1
            ok.headers.add("Record-Route", value)
        ok.headers.add("Contact", self._contact(call.number))
        ok.headers.add("Allow", ALLOW)
        ok.set_body(body, "application/sdp")
        out = self._run(self.layer.respond(call.invite_key, ok, now), now)
        call.state = MobileState.ANSWERED
        call.ok = ok
        call.ok_peer = response_peer(request.top_via, call.source)
        call.ok_interval = self.timers.T1
        call.ok_next = now + self.timers.T1
        call.ok_give_up = now + 64 * self.timers.T1
        call.ends_at = now + self.max_call_s
        return [*out, self._log(call, "answered", f"{call.number} answered (200 OK)")]

    def _bye(self, call: MobileCall, now: float, why: str) -> list[MobileOutput]:
        call.local_cseq += 1
        bye, peer = build_bye(
            call.invite,
            local_tag=call.local_tag,
            route_set=list(call.invite.headers.values("Record-Route")),
            cseq=call.local_cseq,
            host=self.host,
            port=self.port,
            ids=self._ids,
            source=call.source,
        )
        _, outputs = self.layer.send_request(bye, peer, now)
        self._forget(call)
        return [*self._run(outputs, now), self._log(call, "ended", f"BYE sent {why}".strip())]

    def _forget(self, call: MobileCall) -> None:
        self._calls.pop(call.ref, None)
        self._by_invite.pop(call.invite_key, None)
        self._dialogs.pop((call.invite.call_id, call.local_tag), None)

    def _contact(self, number: str) -> str:
        return f"<sip:{number}@{self._host_port}>"

    @staticmethod
    def _log(call: MobileCall, step: CallStep, detail: str) -> CallLogged:
        return CallLogged(call_ref=call.ref, step=step, detail=detail)
