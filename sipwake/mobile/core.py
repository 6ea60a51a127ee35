"""The built-in "mobile": the user's GSM phone behind the twin branch, sans-IO.

Theory of operation
===================

When no ``calls.twin_gateway`` is configured, the twin branch of a user with a
``mobile`` number goes to this user agent server instead of a gateway: it
*is* that mobile. ``MobileCore`` runs on sipwake's ``TransactionLayer``; the
shell feeds it datagrams and the time, and fires its timers
(``next_deadline``/``handle_timeout``). Outputs are the voicemail's
(``SendDatagram``, ``CallLogged``, ``Dropped``); the skeleton (calls, dialogs,
2xx retransmission, BYE, 400 to what does not parse) is ``voicemail.uas``.

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

from sipwake.errors import RemoteProtocolError
from sipwake.ids import Ids
from sipwake.sip.message import Request, make_response
from sipwake.sip.peer import Peer
from sipwake.sip.uri import SipUri
from sipwake.transaction import ServerTransactionKey, TimerConfig
from sipwake.voicemail.sdp import answer_offer, make_offer, parse_sdp
from sipwake.voicemail.uas import UasCall, UasCore, UasOutput

__all__ = ["ALLOW", "MobileCall", "MobileCore", "MobileOutput", "MobileState"]

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS"

MobileOutput = UasOutput


class MobileState(enum.Enum):
    RINGING = "ringing"
    ANSWERED = "answered"
    TALKING = "talking"


@dataclass(slots=True, kw_only=True)
class MobileCall(UasCall):
    """One call to the mobile (``calls()`` lists them for the status endpoint)."""

    number: str
    caller: str
    state: MobileState = MobileState.RINGING
    answer_at: float | None = None

    def _deadlines(self) -> tuple[float | None, ...]:
        return (self.answer_at, self.ok_next, self.ok_give_up, self.ends_at)


class MobileCore(UasCore[MobileCall]):
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
        super().__init__(host=host, port=port, ids=ids, timers=timers)
        self.media_port = media_port
        self.answer_after = answer_after
        self.max_call_s = max_call_s

    def calls(self) -> list[MobileCall]:
        return sorted(self._calls.values(), key=lambda c: c.order)

    # -- commands ----------------------------------------------------------------------
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

    # -- requests ----------------------------------------------------------------------
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
        call = MobileCall(
            ref=self._ids.token(12),
            order=self._next_order(),
            number=number,
            caller=str(request.from_.uri),
            invite=request,
            invite_key=key,
            source=source,
            local_tag=self._ids.tag(),
            session_id=int(self._ids.token(8), 16),
            route_set=list(request.headers.values("Record-Route")),
        )
        delay = self.answer_after(number)
        if delay is not None:
            call.answer_at = now + delay
        self._add(call)
        out = self._run(self.layer.respond(key, make_response(request, 100), now), now)
        ringing = make_response(request, 180, to_tag=call.local_tag)
        ringing.headers.add("Contact", self._contact(number))
        out += self._run(self.layer.respond(key, ringing, now), now)
        when = "never by itself" if delay is None else f"after {delay:g} s"
        out.append(self._log(call, "invited", f"{number} rings for {call.caller}; answers {when}"))
        return out

    def _on_ack(self, ack: Request, source: Peer, now: float) -> list[MobileOutput]:
        call = self._dialog(ack)
        if call is None or call.state is not MobileState.ANSWERED:
            return []
        call.state = MobileState.TALKING
        self._stop_retransmit(call)
        return [self._log(call, "answered", "ACK: in the call")]

    def _on_cancel(
        self, key: ServerTransactionKey, reason: str | None, now: float
    ) -> list[MobileOutput]:
        call = self._call_of(key)
        if call is None or call.state is not MobileState.RINGING:
            return []
        out = self._respond(key, call.invite, 487, now, tag=call.local_tag)
        self._forget(call)
        why = f" (Reason: {reason})" if reason else ""
        return [*out, self._log(call, "cancelled", f"CANCEL while ringing{why}")]

    # -- calls ------------------------------------------------------------------------
    def _call_timer(self, call: MobileCall, now: float) -> list[MobileOutput]:
        if call.answer_at is not None and call.answer_at <= now:
            call.answer_at = None
            return self._pick_up(call, now)
        if self._ack_overdue(call, now):
            return [self._log(call, "failed", "no ACK for the 200 OK"), *self._bye(call, now, "")]
        again = self._retransmit(call, now)
        if again is not None:
            return again
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
        self._start_retransmit(call, ok, request, now)
        call.ends_at = now + self.max_call_s
        return [*out, self._log(call, "answered", f"{call.number} answered (200 OK)")]

    def _bye(self, call: MobileCall, now: float, why: str) -> list[MobileOutput]:
        out = self._send_bye(call, now)
        self._forget(call)
        return [*out, self._log(call, "ended", f"BYE sent {why}".strip())]

    def _contact(self, number: str) -> str:
        return f"<sip:{number}@{self._host_port}>"
