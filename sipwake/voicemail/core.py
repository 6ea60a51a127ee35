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
from dataclasses import dataclass

from sipwake.errors import LocalProtocolError, RemoteProtocolError
from sipwake.ids import Ids
from sipwake.sip.message import Request, Response, make_response
from sipwake.sip.peer import Peer
from sipwake.transaction import ServerTransactionKey, TimerConfig
from sipwake.voicemail.events import (
    CallLogged,
    CloseMedia,
    Dropped,
    EndReason,
    OpenMedia,
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
from sipwake.voicemail.uas import UasCall, UasCore

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
class _Call(UasCall):
    mailbox: Mailbox
    offer: SessionDescription | None
    state: CallState = CallState.ANSWERING
    codec: Codec | None = None
    media_port: int | None = None
    sdp_body: bytes = b""
    sdp_version: int = 1
    recording: Recording | None = None
    answered_at: float | None = None
    started: float | None = None


class VoicemailCore(UasCore[_Call]):
    """A recording UAS; see the module docstring (the skeleton is ``uas.UasCore``)."""

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
        super().__init__(host=host, port=port, ids=ids, timers=timers)
        self.max_message_s = max_message_s
        self.contact = f"<sip:{user}@{self._host_port}>"

    # -- introspection -------------------------------------------------------------
    def state_of(self, call_ref: str) -> CallState | None:
        call = self._calls.get(call_ref)
        return None if call is None else call.state

    def media_port_of(self, call_ref: str) -> int | None:
        call = self._calls.get(call_ref)
        return None if call is None else call.media_port

    # -- inputs --------------------------------------------------------------------
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

    # -- requests --------------------------------------------------------------------
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
        call = _Call(
            ref=self._ids.token(12),
            order=self._next_order(),
            invite=request,
            invite_key=key,
            source=source,
            mailbox=mailbox_for(request),
            local_tag=self._ids.tag(),
            offer=offer,
            session_id=int(self._ids.token(8), 16),
            route_set=list(request.headers.values("Record-Route")),
        )
        self._add(call)
        trying = make_response(request, 100)
        out = self._run(self.layer.respond(key, trying, now), now)
        box = call.mailbox
        cause = f", cause {box.cause}" if box.cause is not None else ""
        detail = f"from {request.from_.uri} for {box.callee} ({box.found_in}{cause})"
        out.append(self._log(call, "invited", detail))
        out.append(OpenMedia(call_ref=call.ref))
        return out

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
        self._stop_retransmit(call)
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

    def _on_cancel(
        self, key: ServerTransactionKey, reason: str | None, now: float
    ) -> list[VoicemailOutput]:
        call = self._call_of(key)
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

    def _call_timer(self, call: _Call, now: float) -> list[VoicemailOutput]:
        if self._ack_overdue(call, now):
            out = [self._log(call, "failed", "no ACK for the 200 OK")]
            return out + self._hang_up(call, now, "no-ack")
        again = self._retransmit(call, now)
        if again is not None:
            return again
        if call.ends_at is not None and call.ends_at <= now:
            return self._hang_up(call, now, "max-length")
        raise LocalProtocolError(f"call {call.ref}: timer fired with nothing due")

    def _hang_up(
        self, call: _Call, now: float, reason: EndReason, *, store: bool = True
    ) -> list[VoicemailOutput]:
        """Send BYE in the dialog (RFC 3261 §15.1.1), then end the call."""
        out = self._send_bye(call, now)
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
