"""What sipwake's built-in user agent servers share (the voicemail, the twin "mobile").

Theory of operation
===================

``UasCore`` runs on sipwake's ``TransactionLayer``, sans-IO: ``receive(data,
source, now)`` takes one datagram, ``next_deadline``/``handle_timeout`` the
time; outputs are ``SendDatagram``, ``CallLogged`` and ``Dropped``
(``events.py``) plus whatever a subclass adds. It keeps the calls (``UasCall``)
by reference, by INVITE transaction and by dialog (Call-ID, our tag), answers
an unparsable request 400 with the reason (RFC 3261 §8.2.2, as the proxy
does), retransmits the 2xx to an INVITE until its ACK (§13.3.1.4: T1, doubling
up to T2, given up after 64*T1) and sends BYE in a dialog it answered (§15.1.1).

A subclass decides what requests mean (``_on_request``, ``_on_ack``,
``_on_cancel``) and what a call's own timers do (``_call_timer``, called for
the earliest due call in (deadline, creation) order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from sipwake.errors import SipParseError
from sipwake.ids import Ids
from sipwake.sip.message import Request, Response, make_response, parse_error_response
from sipwake.sip.parser import parse_message
from sipwake.sip.peer import Peer, mark_received, response_peer
from sipwake.transaction import (
    AckReceived,
    CancelReceived,
    MessageDropped,
    Output,
    RequestReceived,
    SendMessage,
    ServerTransactionKey,
    StrayResponse,
    TimerConfig,
    TransactionLayer,
)
from sipwake.voicemail.dialog import build_bye
from sipwake.voicemail.events import CallLogged, CallStep, Dropped, SendDatagram, VoicemailOutput

__all__ = ["UasCall", "UasCore", "UasOutput"]

#: What a UAS emits: the voicemail's outputs (the mobile uses only SendDatagram,
#: CallLogged and Dropped).
UasOutput = VoicemailOutput


@dataclass(slots=True, kw_only=True)
class UasCall:
    """One call a UAS answered, or is answering."""

    ref: str
    order: int
    invite: Request
    invite_key: ServerTransactionKey
    source: Peer
    local_tag: str
    session_id: int
    route_set: list[str] = field(default_factory=list)
    local_cseq: int = 0
    ends_at: float | None = None
    # The 2xx being retransmitted until its ACK (RFC 3261 §13.3.1.4).
    ok: Response | None = None
    ok_cseq: int = 0
    ok_peer: Peer | None = None
    ok_interval: float = 0.0
    ok_next: float | None = None
    ok_give_up: float | None = None

    def deadline(self) -> float | None:
        times = [t for t in self._deadlines() if t is not None]
        return min(times) if times else None

    def _deadlines(self) -> tuple[float | None, ...]:
        return (self.ok_next, self.ok_give_up, self.ends_at)


C = TypeVar("C", bound=UasCall)


class UasCore(Generic[C]):
    """The skeleton of a UAS over UDP; see the module docstring."""

    def __init__(
        self, *, host: str, port: int, ids: Ids, timers: TimerConfig | None = None
    ) -> None:
        self.host = host
        self.port = port
        self._ids = ids
        self.layer = TransactionLayer(ids, timers)
        self.timers = self.layer.timers
        host_part = f"[{host}]" if ":" in host and not host.startswith("[") else host
        self._host_port = f"{host_part}:{port}"
        self._calls: dict[str, C] = {}
        self._by_invite: dict[ServerTransactionKey, str] = {}
        self._dialogs: dict[tuple[str, str], str] = {}
        self._created = 0

    def __len__(self) -> int:
        return len(self._calls)

    # -- inputs --------------------------------------------------------------------
    def receive(self, data: bytes, source: Peer, now: float) -> list[UasOutput]:
        """One datagram from ``source`` on the SIP socket."""
        try:
            message = parse_message(data)
        except SipParseError as exc:
            response = parse_error_response(exc)
            if response is not None:
                return [SendDatagram(data=response.to_bytes(), peer=source)]
            return [Dropped(reason=f"unparsable message: {exc.reason}", peer=source)]
        if isinstance(message, Request):
            try:
                mark_received(message, source)
            except SipParseError as exc:
                return [Dropped(reason=exc.reason, peer=source)]
        return self._run(self.layer.receive(message, source, now), now)

    def next_deadline(self) -> float | None:
        """The earliest timer of the transaction layer or any call."""
        deadlines = [d for d in (c.deadline() for c in self._calls.values()) if d is not None]
        layer = self.layer.next_deadline()
        if layer is not None:
            deadlines.append(layer)
        return min(deadlines) if deadlines else None

    def handle_timeout(self, now: float) -> list[UasOutput]:
        """Fire every timer due at ``now``: the layer's, then the calls' in (deadline, order)."""
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

    # -- what a subclass decides ---------------------------------------------------------
    def _on_request(
        self, request: Request, source: Peer, key: ServerTransactionKey, now: float
    ) -> list[UasOutput]:
        raise NotImplementedError

    def _on_ack(self, ack: Request, source: Peer, now: float) -> list[UasOutput]:
        raise NotImplementedError

    def _on_cancel(
        self, key: ServerTransactionKey, reason: str | None, now: float
    ) -> list[UasOutput]:
        raise NotImplementedError

    def _call_timer(self, call: C, now: float) -> list[UasOutput]:
        raise NotImplementedError

    # -- transaction layer outputs ---------------------------------------------------
    def _run(self, outputs: list[Output], now: float) -> list[UasOutput]:
        out: list[UasOutput] = []
        for output in outputs:
            match output:
                case SendMessage(message=message, peer=peer):
                    out.append(SendDatagram(data=message.to_bytes(), peer=peer))
                case RequestReceived(request=request, source=source, transaction_key=key):
                    out += self._on_request(request, source, key, now)
                case AckReceived(request=ack, source=source):
                    out += self._on_ack(ack, source, now)
                case CancelReceived(invite_key=key, cancel=cancel):
                    out += self._on_cancel(key, cancel.headers.get("Reason"), now)
                case MessageDropped(reason=reason, source=source):
                    out.append(Dropped(reason=reason, peer=source))
                case StrayResponse(response=response, source=source):
                    out.append(Dropped(reason=f"stray {response.status} response", peer=source))
                case _:
                    pass  # responses to our BYEs, timeouts, terminations: nothing to do
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
    ) -> list[UasOutput]:
        response = make_response(request, status, to_tag=tag or self._ids.tag())
        for name, value in extra:
            response.headers.add(name, value)
        return self._run(self.layer.respond(key, response, now), now)

    # -- calls -----------------------------------------------------------------------
    def _next_order(self) -> int:
        self._created += 1
        return self._created

    def _add(self, call: C) -> None:
        self._calls[call.ref] = call
        self._by_invite[call.invite_key] = call.ref
        self._dialogs[(call.invite.call_id, call.local_tag)] = call.ref

    def _forget(self, call: C) -> None:
        self._calls.pop(call.ref, None)
        self._by_invite.pop(call.invite_key, None)
        self._dialogs.pop((call.invite.call_id, call.local_tag), None)

    def _call_of(self, key: ServerTransactionKey) -> C | None:
        """The call whose INVITE is server transaction ``key``."""
        ref = self._by_invite.get(key)
        return self._calls.get(ref) if ref is not None else None

    def _dialog(self, request: Request) -> C | None:
        """The call an in-dialog request belongs to (Call-ID, our tag, the caller's tag)."""
        tag = request.to.tag
        if tag is None:
            return None
        ref = self._dialogs.get((request.call_id, tag))
        call = self._calls.get(ref) if ref is not None else None
        if call is None or request.from_.tag != call.invite.from_.tag:
            return None
        return call

    def _start_retransmit(self, call: C, ok: Response, request: Request, now: float) -> None:
        """Retransmit ``ok`` (the 2xx to ``request``) until its ACK (RFC 3261 §13.3.1.4)."""
        call.ok = ok
        call.ok_cseq = request.cseq.seq
        call.ok_peer = response_peer(request.top_via, call.source)
        call.ok_interval = self.timers.T1
        call.ok_next = now + self.timers.T1
        call.ok_give_up = now + 64 * self.timers.T1

    @staticmethod
    def _stop_retransmit(call: C) -> None:
        call.ok = None
        call.ok_next = call.ok_give_up = None

    def _retransmit(self, call: C, now: float) -> list[UasOutput] | None:
        """The 2xx again if its retransmission is due, else None."""
        if call.ok is None or call.ok_next is None or call.ok_next > now:
            return None
        assert call.ok_peer is not None
        call.ok_interval = min(2 * call.ok_interval, self.timers.T2)
        call.ok_next = now + call.ok_interval
        return [SendDatagram(data=call.ok.to_bytes(), peer=call.ok_peer)]

    @staticmethod
    def _ack_overdue(call: C, now: float) -> bool:
        """No ACK came within 64*T1 of the 2xx: the call is to be hung up."""
        return call.ok_give_up is not None and call.ok_give_up <= now

    def _send_bye(self, call: C, now: float) -> list[UasOutput]:
        """BYE in the call's dialog (RFC 3261 §15.1.1); the caller forgets the call."""
        call.local_cseq += 1
        bye, peer = build_bye(
            call.invite,
            local_tag=call.local_tag,
            route_set=call.route_set,
            cseq=call.local_cseq,
            host=self.host,
            port=self.port,
            ids=self._ids,
            source=call.source,
        )
        _, outputs = self.layer.send_request(bye, peer, now)
        return self._run(outputs, now)

    @staticmethod
    def _log(call: UasCall, step: CallStep, detail: str) -> CallLogged:
        return CallLogged(call_ref=call.ref, step=step, detail=detail)
