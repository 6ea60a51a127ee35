"""The voicemail user agent server, sans-IO: SIP bytes and RTP in, sends and effects out.

Theory of operation
===================

``VoicemailCore`` is a UAS (RFC 3261 §8.2, §12, §13.3) on top of sipwake's
``TransactionLayer``. The shell feeds it datagrams with the time
(``receive(data, source, now)``, ``rtp_received(call_ref, data, now)``),
reports the RTP sockets it opened (``media_ready`` / ``media_failed``) and
fires its timers (``next_deadline`` / ``handle_timeout``). Each call returns
``list[VoicemailOutput]`` (``events.py``) in a deterministic order.

A call goes through three states::

    ANSWERING --media_ready-->  ANSWERED  (200 OK + SDP sent, retransmitted)
    ANSWERING --CANCEL-->       gone      (487; CloseMedia)
    ANSWERED  --ACK-->          RECORDING (max-length timer armed)
    ANSWERED  --64*T1, no ACK-> gone      (BYE, RFC 3261 §13.3.1.4)
    RECORDING --BYE-->          gone      (200; StoreMessage; CloseMedia)
    RECORDING --max length-->   gone      (BYE; StoreMessage; CloseMedia)

- INVITE (no To tag): an SDP offer must hold PCMU or PCMA (else 488 with
  Warning 305); a body that is not ``application/sdp`` gets 415, a ``Require``
  we do not know 420. The core answers 100 Trying at once, works out whose
  mailbox it is (``mailbox.py``) and asks the shell for an RTP socket
  (``OpenMedia``). ``media_ready`` sends the 200 with the SDP answer (RFC 3264
  §6) — or, when the INVITE had no offer, our offer, whose answer comes in
  the ACK (RFC 3264 §5, RFC 3261 §13.2.1).
- The 2xx is retransmitted by the core itself (RFC 3261 §13.3.1.4, the
  transaction layer leaves that to the TU per RFC 6026): T1, doubling up to
  T2, until the ACK comes; after 64*T1 without one the call is hung up.
- ACK starts the recording: ``StoreMessage`` is emitted when the call ends,
  even with no RTP at all (a 0-second message).
- BYE in the dialog gets 200 and ends the call; BYE, re-INVITE or ACK for an
  unknown dialog get 481 (ACKs are dropped). Re-INVITEs are answered with the
  same codec (488 if the new offer lacks it). OPTIONS gets 200; other
  methods 405.

Deviations and choices
======================
- RTP arriving between the 200 and the ACK is recorded: the ACK and the first
  packets race on separate sockets, and the caller starts talking at the 200.
- In-dialog requests we send (BYE) go to the first Route, else the remote
  target, over UDP; strict routing (RFC 2543) is not supported.
- No greeting is played: the answer is ``recvonly``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import assert_never

from sipwake.errors import LocalProtocolError, RemoteProtocolError, SipParseError
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
from sipwake.voicemail.events import (
    CallLogged,
    CallStep,
    CloseMedia,
    Dropped,
    EndReason,
    OpenMedia,
    SendDatagram,
    StoreMessage,
    VoicemailMessage,
    VoicemailOutput,
)
from sipwake.voicemail.mailbox import Mailbox, mailbox_for
from sipwake.voicemail.rtp import Recording
from sipwake.voicemail.sdp import (
    Codec,
    SessionDescription,
    answer_offer,
    choose_from_answer,
    make_offer,
    parse_sdp,
)

__all__ = ["ALLOW", "CallState", "VoicemailCore"]

#: Methods the voicemail answers (RFC 3261 §20.5).
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS"
#: Extra seconds of audio kept beyond the maximum length (packets in flight at the BYE).
_SLACK_S = 2.0


class CallState(enum.Enum):
    """Where a voicemail call is (see the module docstring)."""

    ANSWERING = "answering"
    ANSWERED = "answered"
    RECORDING = "recording"


@dataclass(slots=True, kw_only=True)
class _Call:
    ref: str
    order: int
    invite: Request
    invite_key: ServerTransactionKey
    source: Peer
    mailbox: Mailbox
    local_tag: str
    offer: SessionDescription | None
    session_id: int
    state: CallState = CallState.ANSWERING
    codec: Codec | None = None
    media_port: int | None = None
    sdp_body: bytes = b""
    sdp_version: int = 1
    recording: Recording | None = None
    answered_at: float | None = None
    started: float | None = None
    ends_at: float | None = None
    local_cseq: int = 0
    # The 2xx being retransmitted until its ACK (RFC 3261 §13.3.1.4).
    ok: Response | None = None
    ok_cseq: int = 0
    ok_peer: Peer | None = None
    ok_interval: float = 0.0
    ok_next: float | None = None
    ok_give_up: float | None = None
    route_set: list[str] = field(default_factory=list)

    def deadline(self) -> float | None:
        times = [t for t in (self.ok_next, self.ok_give_up, self.ends_at) if t is not None]
        return min(times) if times else None


class VoicemailCore:
    """A recording UAS; see the module docstring."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        ids: Ids,
        max_message_s: float = 120.0,
        timers: TimerConfig | None = None,
        user: str = "vm",
    ) -> None:
        if not max_message_s > 0:
            raise ValueError(f"max_message_s: expected a positive number, got {max_message_s!r}")
        self.host = host
        self.port = port
        self.max_message_s = max_message_s
        self._ids = ids
        self.layer = TransactionLayer(ids, timers)
        self.timers = self.layer.timers
        host_part = f"[{host}]" if ":" in host and not host.startswith("[") else host
        self.contact = f"<sip:{user}@{host_part}:{port}>"
        self._calls: dict[str, _Call] = {}
        self._by_invite: dict[ServerTransactionKey, str] = {}
        self._dialogs: dict[tuple[str, str], str] = {}
        self._created = 0

    # -- introspection -------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._calls)

    def state_of(self, call_ref: str) -> CallState | None:
        call = self._calls.get(call_ref)
        return None if call is None else call.state

    def media_port_of(self, call_ref: str) -> int | None:
        call = self._calls.get(call_ref)
        return None if call is None else call.media_port

    # -- inputs --------------------------------------------------------------------
    def receive(self, data: bytes, source: Peer, now: float) -> list[VoicemailOutput]:
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

    def media_ready(self, call_ref: str, port: int, now: float) -> list[VoicemailOutput]:
        """The RTP socket for ``call_ref`` is bound on ``port``: answer the call."""
        call = self._calls.get(call_ref)
        if call is None:  # cancelled (or refused) while the socket was being opened
            return [CloseMedia(call_ref=call_ref)]
        if call.state is not CallState.ANSWERING:
            return []
        call.media_port = port
        if call.offer is None:
            call.sdp_body = make_offer(host=self.host, port=port, session_id=call.session_id)
        else:
            answer = answer_offer(call.offer, host=self.host, port=port, session_id=call.session_id)
            if answer is None:  # checked when the INVITE came; kept for safety
                out = self._refuse(call, 488, now, "no common codec")
                return [*out, CloseMedia(call_ref=call_ref)]
            call.sdp_body = answer.body
            call.codec = answer.codec
            call.recording = self._recording(answer.codec)
        ok = self._ok(call.invite, call)
        out = self._run(self.layer.respond(call.invite_key, ok, now), now)
        call.state = CallState.ANSWERED
        call.answered_at = now
        self._start_retransmit(call, ok, call.invite, now)
        codec = call.codec.name if call.codec else "offer in 200"
        out.append(self._log(call, "answered", f"RTP port {port}, {codec}"))
        return out

    def media_failed(self, call_ref: str, reason: str, now: float) -> list[VoicemailOutput]:
        """No RTP socket could be opened for ``call_ref``: the INVITE gets 500."""
        call = self._calls.get(call_ref)
        if call is None or call.state is not CallState.ANSWERING:
            return []
        return self._refuse(call, 500, now, f"no RTP socket: {reason}")

    def rtp_received(self, call_ref: str, data: bytes, now: float) -> list[VoicemailOutput]:
        """One datagram on the call's RTP socket."""
        call = self._calls.get(call_ref)
        if call is None or call.recording is None:
            return []
        call.recording.add(data)
        return []

    def next_deadline(self) -> float | None:
        """The earliest timer of the transaction layer or any call."""
        deadlines = [d for d in (c.deadline() for c in self._calls.values()) if d is not None]
        layer = self.layer.next_deadline()
        if layer is not None:
            deadlines.append(layer)
        return min(deadlines) if deadlines else None

    def handle_timeout(self, now: float) -> list[VoicemailOutput]:
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

    def close(self, now: float) -> list[VoicemailOutput]:
        """Shut down: refuse calls being answered, hang up (and store) the others."""
        out: list[VoicemailOutput] = []
        for call in sorted(self._calls.values(), key=lambda c: c.order):
            if call.state is CallState.ANSWERING:
                out += self._refuse(call, 503, now, "shutting down")
                out.append(CloseMedia(call_ref=call.ref))
            else:
                out += self._hang_up(call, now, "shutdown")
        return out

    # -- transaction layer outputs ---------------------------------------------------
    def _run(self, outputs: list[Output], now: float) -> list[VoicemailOutput]:
        out: list[VoicemailOutput] = []
        for output in outputs:
            match output:
                case SendMessage(message=message, peer=peer):
                    out.append(SendDatagram(data=message.to_bytes(), peer=peer))
                case RequestReceived(request=request, source=source, transaction_key=key):
                    out += self._on_request(request, source, key, now)
                case AckReceived(request=ack, source=source):
                    out += self._on_ack(ack, source, now)
                case CancelReceived(invite_key=key):
                    out += self._on_cancel(key, now)
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

    # -- requests --------------------------------------------------------------------
    def _respond(
        self,
        key: ServerTransactionKey,
        request: Request,
        status: int,
        now: float,
        *,
        tag: str | None = None,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> list[VoicemailOutput]:
        response = make_response(request, status, to_tag=tag or self._ids.tag())
        for name, value in extra:
            response.headers.add(name, value)
        return self._run(self.layer.respond(key, response, now), now)

    def _on_request(
        self, request: Request, source: Peer, key: ServerTransactionKey, now: float
    ) -> list[VoicemailOutput]:
        method = request.method
        if method == "INVITE":
            if request.to.tag is None:
                return self._on_invite(request, source, key, now)
            return self._on_reinvite(request, key, now)
        if method == "BYE":
            return self._on_bye(request, key, now)
        if method == "OPTIONS":
            extra = (("Allow", ALLOW), ("Accept", "application/sdp"))
            return self._respond(key, request, 200, now, extra=extra)
        if method == "CANCEL":  # a CANCEL matching no INVITE (RFC 3261 §9.2)
            return self._respond(key, request, 481, now)
        return self._respond(key, request, 405, now, extra=(("Allow", ALLOW),))

    def _check_invite(
        self, request: Request, key: ServerTransactionKey, now: float
    ) -> tuple[SessionDescription | None, list[VoicemailOutput] | None]:
        """The INVITE's offer (``None`` if it has none), or the rejection to send."""
        required = [t for t in request.tokens("Require") if t]
        if required:
            extra = (("Unsupported", ", ".join(required)),)
            return None, self._respond(key, request, 420, now, extra=extra)
        if not request.body.strip():
            return None, None
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/sdp":
            extra = (("Accept", "application/sdp"),)
            return None, self._respond(key, request, 415, now, extra=extra)
        try:
            offer = parse_sdp(request.body)
        except RemoteProtocolError as exc:
            warning = (("Warning", f'399 {self.host} "{exc.reason}"'),)
            return None, self._respond(key, request, 488, now, extra=warning)
        if answer_offer(offer, host=self.host, port=9, session_id=0) is None:
            warning = (("Warning", f'305 {self.host} "Incompatible media format"'),)
            return None, self._respond(key, request, 488, now, extra=warning)
        return offer, None

    def _on_invite(
        self, request: Request, source: Peer, key: ServerTransactionKey, now: float
    ) -> list[VoicemailOutput]:
        offer, rejection = self._check_invite(request, key, now)
        if rejection is not None:
            detail = f"{request.from_.uri} → {request.uri}: refused"
            return [*rejection, CallLogged(call_ref="-", step="rejected", detail=detail)]
        self._created += 1
        call = _Call(
            ref=self._ids.token(12),
            order=self._created,
            invite=request,
            invite_key=key,
            source=source,
            mailbox=mailbox_for(request),
            local_tag=self._ids.tag(),
            offer=offer,
            session_id=int(self._ids.token(8), 16),
            route_set=list(request.headers.values("Record-Route")),
        )
        self._calls[call.ref] = call
        self._by_invite[key] = call.ref
        self._dialogs[(request.call_id, call.local_tag)] = call.ref
        trying = make_response(request, 100)
        out = self._run(self.layer.respond(key, trying, now), now)
        box = call.mailbox
        cause = f", cause {box.cause}" if box.cause is not None else ""
        detail = f"from {request.from_.uri} for {box.callee} ({box.found_in}{cause})"
        out.append(self._log(call, "invited", detail))
        out.append(OpenMedia(call_ref=call.ref))
        return out

    def _dialog(self, request: Request) -> _Call | None:
        tag = request.to.tag
        if tag is None:
            return None
        ref = self._dialogs.get((request.call_id, tag))
        call = self._calls.get(ref) if ref is not None else None
        if call is None or request.from_.tag != call.invite.from_.tag:
            return None
        return call

    def _on_reinvite(
        self, request: Request, key: ServerTransactionKey, now: float
    ) -> list[VoicemailOutput]:
        call = self._dialog(request)
        if call is None or call.media_port is None:
            return self._respond(key, request, 481, now)
        if call.ok is not None:  # our 2xx is still unacknowledged (RFC 3261 §14.2)
            extra = (("Retry-After", "1"),)
            return self._respond(key, request, 500, now, tag=call.local_tag, extra=extra)
        if request.body.strip():
            try:
                offer = parse_sdp(request.body)
            except RemoteProtocolError as exc:
                warning = (("Warning", f'399 {self.host} "{exc.reason}"'),)
                return self._respond(key, request, 488, now, tag=call.local_tag, extra=warning)
            answer = answer_offer(
                offer,
                host=self.host,
                port=call.media_port,
                session_id=call.session_id,
                version=call.sdp_version,
                only=call.codec.name if call.codec else None,
            )
            if answer is None:
                warning = (("Warning", f'305 {self.host} "Incompatible media format"'),)
                return self._respond(key, request, 488, now, tag=call.local_tag, extra=warning)
            if answer.body != call.sdp_body:
                call.sdp_version += 1
                answer = answer_offer(
                    offer,
                    host=self.host,
                    port=call.media_port,
                    session_id=call.session_id,
                    version=call.sdp_version,
                    only=answer.codec.name,
                )
                assert answer is not None  # the same offer and codec as just above
                call.sdp_body = answer.body
            if call.codec is None:
                call.codec = answer.codec
                call.recording = self._recording(answer.codec)
        ok = self._ok(request, call)
        out = self._run(self.layer.respond(key, ok, now), now)
        self._start_retransmit(call, ok, request, now)
        return out

    def _on_bye(
        self, request: Request, key: ServerTransactionKey, now: float
    ) -> list[VoicemailOutput]:
        call = self._dialog(request)
        if call is None:
            return self._respond(key, request, 481, now)
        out = self._respond(key, request, 200, now, tag=call.local_tag)
        return out + self._finish(call, now, "bye")

    def _on_ack(self, ack: Request, source: Peer, now: float) -> list[VoicemailOutput]:
        call = self._dialog(ack)
        if call is None:
            return [Dropped(reason="ACK for no dialog of ours", peer=source)]
        if call.ok is None or ack.cseq.seq != call.ok_cseq:
            return []  # a retransmitted ACK
        call.ok = None
        call.ok_next = call.ok_give_up = None
        if call.state is not CallState.ANSWERED:
            return []  # the ACK for a re-INVITE's 2xx
        out: list[VoicemailOutput] = []
        if call.codec is None:  # our offer went in the 200: the answer is in the ACK
            codec = None
            if ack.body.strip():
                try:
                    codec = choose_from_answer(parse_sdp(ack.body))
                except RemoteProtocolError:
                    codec = None
            if codec is None:
                out.append(self._log(call, "failed", "no usable SDP answer in the ACK"))
                return out + self._hang_up(call, now, "bad-answer", store=False)
            call.codec = codec
            call.recording = self._recording(codec)
        call.state = CallState.RECORDING
        call.started = now
        call.ends_at = now + self.max_message_s
        codec_name = call.codec.name if call.codec else "?"
        out.append(self._log(call, "recording", f"{codec_name}, up to {self.max_message_s:g} s"))
        return out

    def _on_cancel(self, key: ServerTransactionKey, now: float) -> list[VoicemailOutput]:
        ref = self._by_invite.get(key)
        call = self._calls.get(ref) if ref is not None else None
        if call is None or call.state is not CallState.ANSWERING:
            return []
        out = self._respond(key, call.invite, 487, now, tag=call.local_tag)
        self._forget(call)
        out.append(CloseMedia(call_ref=call.ref))
        out.append(self._log(call, "cancelled", "CANCEL before the answer"))
        return out

    # -- calls -----------------------------------------------------------------------
    def _recording(self, codec: Codec) -> Recording:
        limit = int((self.max_message_s + _SLACK_S) * codec.clock_rate)
        return Recording(codec, max_samples=limit)

    def _ok(self, request: Request, call: _Call) -> Response:
        ok = make_response(request, 200, to_tag=call.local_tag)
        for value in request.headers.get_all("Record-Route"):  # RFC 3261 §12.1.1
            ok.headers.add("Record-Route", value)
        ok.headers.add("Contact", self.contact)
        ok.headers.add("Allow", ALLOW)
        ok.set_body(call.sdp_body, "application/sdp")
        return ok

    def _start_retransmit(self, call: _Call, ok: Response, request: Request, now: float) -> None:
        call.ok = ok
        call.ok_cseq = request.cseq.seq
        call.ok_peer = response_peer(request.top_via, call.source)
        call.ok_interval = self.timers.T1
        call.ok_next = now + self.timers.T1
        call.ok_give_up = now + 64 * self.timers.T1

    def _call_timer(self, call: _Call, now: float) -> list[VoicemailOutput]:
        if call.ok_give_up is not None and call.ok_give_up <= now:
            out = [self._log(call, "failed", "no ACK for the 200 OK")]
            return out + self._hang_up(call, now, "no-ack")
        if call.ok_next is not None and call.ok_next <= now and call.ok is not None:
            assert call.ok_peer is not None
            call.ok_interval = min(2 * call.ok_interval, self.timers.T2)
            call.ok_next = now + call.ok_interval
            return [SendDatagram(data=call.ok.to_bytes(), peer=call.ok_peer)]
        if call.ends_at is not None and call.ends_at <= now:
            return self._hang_up(call, now, "max-length")
        raise LocalProtocolError(f"call {call.ref}: timer fired with nothing due")

    def _hang_up(
        self, call: _Call, now: float, reason: EndReason, *, store: bool = True
    ) -> list[VoicemailOutput]:
        """Send BYE in the dialog (RFC 3261 §15.1.1), then end the call."""
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
        out = self._run(outputs, now)
        return out + self._finish(call, now, reason, store=store)

    def _finish(
        self, call: _Call, now: float, reason: EndReason, *, store: bool = True
    ) -> list[VoicemailOutput]:
        self._forget(call)
        out: list[VoicemailOutput] = [CloseMedia(call_ref=call.ref)]
        recording = call.recording
        packets = recording.packets if recording is not None else 0
        if not store or (call.started is None and packets == 0):
            out.append(self._log(call, "ended", f"{reason}, nothing recorded"))
            return out
        invite = call.invite
        message = VoicemailMessage(
            id=call.ref,
            call_id=invite.call_id,
            user=call.mailbox.user,
            callee=call.mailbox.callee,
            caller=invite.from_.uri.aor(),
            caller_name=invite.from_.display_name,
            cause=call.mailbox.cause,
            codec=call.codec.name if call.codec else "-",
            packets=packets,
            duration_s=recording.duration_s if recording is not None else 0.0,
            started=next(t for t in (call.started, call.answered_at, now) if t is not None),
            ended_by=reason,
        )
        out.append(StoreMessage(message=message, pcm=recording.pcm if recording else b""))
        detail = f"{reason}: {message.duration_s:.1f} s, {packets} packets for {message.user}"
        out.append(self._log(call, "ended", detail))
        return out

    def _refuse(self, call: _Call, status: int, now: float, detail: str) -> list[VoicemailOutput]:
        out = self._respond(call.invite_key, call.invite, status, now, tag=call.local_tag)
        self._forget(call)
        out.append(self._log(call, "failed", f"{status}: {detail}"))
        return out

    def _forget(self, call: _Call) -> None:
        self._calls.pop(call.ref, None)
        self._by_invite.pop(call.invite_key, None)
        self._dialogs.pop((call.invite.call_id, call.local_tag), None)

    @staticmethod
    def _log(call: _Call, step: CallStep, detail: str) -> CallLogged:
        return CallLogged(call_ref=call.ref, step=step, detail=detail)
