"""Client transactions: INVITE (ICT) and non-INVITE (NICT), RFC 3261 §17.1.

Theory of operation
===================

A client transaction sends one request to one ``Peer`` and delivers the
responses to the TU. ``start(now)`` sends the request; ``process(input, now,
response)`` feeds a response or a local input; ``on_timer(now)`` fires the
earliest due timer. Every call returns outputs (``SendMessage``,
``ResponseReceived``, ``TransactionTimedOut``); the layer removes the
transaction once it is Terminated and reports ``TransactionTerminated``.

ICT — RFC 3261 Figure 5 as amended by RFC 6026 §7.2::

    Calling     --1xx-->            Proceeding   (pass up; A and B stop)
    Calling     --Timer A-->        Calling      (retransmit; interval doubles, UDP only)
    Calling     --Timer B-->        Terminated   (TransactionTimedOut: act as on 408)
    Calling/Proceeding --2xx-->     Accepted     (pass up; Timer M = 64*T1)
    Calling/Proceeding --300-699--> Completed    (pass up; send ACK; Timer D)
    Proceeding  --1xx-->            Proceeding   (pass up)
    Completed   --300-699-->        Completed    (re-send the ACK, not passed up)
    Completed   --2xx-->            Completed    (pass up: see "Deviations")
    Completed   --Timer D-->        Terminated   (32 s UDP, at once over reliable)
    Accepted    --2xx-->            Accepted     (pass up: the TU ACKs each 2xx)
    Accepted    --Timer M-->        Terminated

NICT — RFC 3261 Figure 6::

    Trying      --Timer E-->        Trying       (retransmit; interval doubles up to T2)
    Trying      --1xx-->            Proceeding   (pass up)
    Proceeding  --Timer E-->        Proceeding   (retransmit; interval T2)
    Trying/Proceeding --Timer F-->  Terminated   (TransactionTimedOut)
    Trying/Proceeding --200-699-->  Completed    (pass up; Timer K)
    Proceeding  --1xx-->            Proceeding   (pass up)
    Completed   --Timer K-->        Terminated   (T4 UDP, at once over reliable)

Retransmission timers A and E run only over unreliable transports
(``Peer.reliable``). Responses a state has no entry for (a 1xx after the
final, a retransmitted final in NICT Completed) are absorbed.

Deviations and choices
======================
- ``CANCEL`` is a local ICT input carrying the CANCEL request the layer
  built (RFC 3261 §9.1): allowed in Calling and Proceeding only, where it
  just records the request in ``cancel``; the layer sends it in its own NICT
  once the ICT is in Proceeding, i.e. at once or when the first provisional
  arrives (never if a final response comes first). After a final response
  it is a ``LocalProtocolError``.
- A 2xx in Completed is passed up instead of dropped: after a 6xx a
  downstream proxy still forwards a late 2xx (RFC 3261 §16.7 step 5), and
  only the TU can forward it or ACK and BYE it. Figure 5 has no such arrow.
- Retransmission timers restart from the ``now`` they fire at, so a late
  ``handle_timeout`` sends one retransmission, not a burst.
- Transport errors (§17.1.4) are not modelled: the driver reports them to
  the TU directly.
- Once a final response has arrived the request is dropped (nothing re-sends
  it), and the ICT keeps its ACK as the bytes it sent: a finished transaction
  lingers up to 32 s (Timers D, M) and holds nothing else the garbage
  collector walks (``Transaction``'s docstring).
"""

from __future__ import annotations

from sipwake.sip.message import Request, Response
from sipwake.sip.peer import Peer
from sipwake.sip.uri import Uri
from sipwake.transaction.base import Handler, Transaction, need_request, need_response
from sipwake.transaction.events import (
    Output,
    ResponseReceived,
    SendMessage,
    TransactionTimedOut,
)
from sipwake.transaction.keys import ClientKey
from sipwake.transaction.messages import build_ack, sent_request
from sipwake.transaction.timers import IdentityEnum, Timer, TimerConfig

__all__ = [
    "ICT_TABLE",
    "NICT_TABLE",
    "IctInput",
    "IctState",
    "InviteClientTransaction",
    "NictInput",
    "NictState",
    "NonInviteClientTransaction",
    "ict_input",
    "nict_input",
]

_Message = Request | Response | None


# -- ICT -------------------------------------------------------------------


class IctState(IdentityEnum):
    """INVITE client transaction states (RFC 3261 Figure 5, RFC 6026 Figure 5)."""

    CALLING = "Calling"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class IctInput(IdentityEnum):
    """What drives an ICT: responses (remote), timers and the TU's CANCEL (local)."""

    RECV_1XX = "1xx received"
    RECV_2XX = "2xx received"
    RECV_300_699 = "300-699 received"
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    TIMER_D = "Timer D"
    TIMER_M = "Timer M"
    CANCEL = "CANCEL from TU"


ICT_REMOTE_INPUTS = frozenset({IctInput.RECV_1XX, IctInput.RECV_2XX, IctInput.RECV_300_699})
_ICT_TIMER_INPUTS = {
    Timer.A: IctInput.TIMER_A,
    Timer.B: IctInput.TIMER_B,
    Timer.D: IctInput.TIMER_D,
    Timer.M: IctInput.TIMER_M,
}


def ict_input(response: Response) -> IctInput:
    """The ICT input for a received response."""
    if response.status < 200:
        return IctInput.RECV_1XX
    return IctInput.RECV_2XX if response.status < 300 else IctInput.RECV_300_699


class InviteClientTransaction(Transaction[IctState, IctInput]):
    """An INVITE client transaction (RFC 3261 §17.1.1, RFC 6026 §7.2)."""

    kind = "ICT"
    remote_inputs = ICT_REMOTE_INPUTS
    timer_inputs = _ICT_TIMER_INPUTS
    terminated_state = IctState.TERMINATED
    settled_states = frozenset({IctState.COMPLETED, IctState.ACCEPTED, IctState.TERMINATED})

    def __init__(
        self, *, key: ClientKey, request: Request, peer: Peer, config: TimerConfig
    ) -> None:
        super().__init__(key=key, config=config, reliable=peer.reliable)
        self.client_key = key
        self.request: Request | None = request
        """The INVITE, until a final response arrives."""
        self.peer = peer
        self.state = IctState.CALLING
        self.interval_a = config.timer_a
        self.ack: bytes | None = None
        """The ACK sent for a 3xx-6xx response, as sent (re-sent for its retransmissions)."""
        self.ack_uri: Uri | None = None
        """The ACK's Request-URI (the INVITE's), to read the ACK back with."""
        self.cancelled = False
        self.cancel: Request | None = None
        """The CANCEL the TU asked for, until the layer sends it (``cancel_sent``)."""
        self.cancel_sent = False

    def start(self, now: float) -> list[Output]:
        """Send the INVITE; start Timer A (unreliable only) and Timer B."""
        if not self.reliable:
            self._arm(Timer.A, self.interval_a, now)
        self._arm(Timer.B, self.config.timer_b, now)
        return self._send_request()

    def _send_request(self) -> list[Output]:
        assert self.request is not None, "the INVITE is kept until a final response"
        return [SendMessage(message=self.request, peer=self.peer)]

    # -- handlers ----------------------------------------------------------
    def _retransmit(self, now: float, message: _Message, source: Peer | None) -> list[Output]:
        self.interval_a *= 2
        self._arm(Timer.A, self.interval_a, now)
        return self._send_request()

    def _time_out(self, now: float, message: _Message, source: Peer | None) -> list[Output]:
        return [TransactionTimedOut(transaction_key=self.client_key)]

    def _proceed(self, now: float, message: _Message, source: Peer | None) -> list[Output]:
        response = need_response(message, IctInput.RECV_1XX)
        self._disarm(Timer.A, Timer.B)
        return [ResponseReceived(response=response, transaction_key=self.client_key)]

    def _pass_up(self, now: float, message: _Message, source: Peer | None) -> list[Output]:
        response = need_response(message, IctInput.RECV_1XX)
        return [ResponseReceived(response=response, transaction_key=self.client_key)]

    def _accept(self, now: float, message: _Message, source: Peer | None) -> list[Output]:
        response = need_response(message, IctInput.RECV_2XX)
        self._disarm(Timer.A, Timer.B)
        self._arm(Timer.M, self.config.timer_m, now)
        self._finish()
        return [ResponseReceived(response=response, transaction_key=self.client_key)]

    def _complete(self, now: float, message: _Message, source: Peer | None) -> list[Output]:
        response = need_response(message, IctInput.RECV_300_699)
        self._disarm(Timer.A, Timer.B)
        assert self.request is not None, "the INVITE is kept until a final response"
        ack = build_ack(self.request, response)
        self.ack = ack.to_bytes()
        self.ack_uri = ack.uri
        self._arm(Timer.D, self.config.timer_d(self.reliable), now)
        self._finish()
        return [
            ResponseReceived(response=response, transaction_key=self.client_key),
            SendMessage(message=ack, peer=self.peer, data=self.ack),
        ]

    def _finish(self) -> None:
        """A final response arrived: the INVITE (and a CANCEL not sent) are not needed."""
        self.request = None
        self.cancel = None

    def _resend_ack(self, now: float, message: _Message, source: Peer | None) -> list[Output]:
        need_response(message, IctInput.RECV_300_699)
        if self.ack is None or self.ack_uri is None:
            return []
        ack = sent_request(self.ack, self.ack_uri)
        return [SendMessage(message=ack, peer=self.peer, data=self.ack)]

    def _request_cancel(self, now: float, message: _Message, source: Peer | None) -> list[Output]:
        self.cancel = need_request(message, IctInput.CANCEL)
        self.cancelled = True
        return []

    def _terminate(self, now: float, message: _Message, source: Peer | None) -> list[Output]:
        return []


ICT = InviteClientTransaction
_S = IctState
_I = IctInput
#: RFC 3261 Figure 5 + RFC 6026: ``(state, input) -> (handler, next state)``.
ICT_TABLE: dict[tuple[IctState, IctInput], tuple[Handler, IctState]] = {
    (_S.CALLING, _I.TIMER_A): (ICT._retransmit, _S.CALLING),
    (_S.CALLING, _I.TIMER_B): (ICT._time_out, _S.TERMINATED),
    (_S.CALLING, _I.RECV_1XX): (ICT._proceed, _S.PROCEEDING),
    (_S.CALLING, _I.RECV_2XX): (ICT._accept, _S.ACCEPTED),
    (_S.CALLING, _I.RECV_300_699): (ICT._complete, _S.COMPLETED),
    (_S.CALLING, _I.CANCEL): (ICT._request_cancel, _S.CALLING),
    (_S.PROCEEDING, _I.RECV_1XX): (ICT._pass_up, _S.PROCEEDING),
    (_S.PROCEEDING, _I.RECV_2XX): (ICT._accept, _S.ACCEPTED),
    (_S.PROCEEDING, _I.RECV_300_699): (ICT._complete, _S.COMPLETED),
    (_S.PROCEEDING, _I.CANCEL): (ICT._request_cancel, _S.PROCEEDING),
    (_S.COMPLETED, _I.RECV_300_699): (ICT._resend_ack, _S.COMPLETED),
    (_S.COMPLETED, _I.RECV_2XX): (ICT._pass_up, _S.COMPLETED),
    (_S.COMPLETED, _I.TIMER_D): (ICT._terminate, _S.TERMINATED),
    (_S.ACCEPTED, _I.RECV_2XX): (ICT._pass_up, _S.ACCEPTED),
    (_S.ACCEPTED, _I.TIMER_M): (ICT._terminate, _S.TERMINATED),
}
ICT.table = ICT_TABLE  # the table names the methods above: attached once both exist


# -- NICT ------------------------------------------------------------------


class NictState(IdentityEnum):
    """Non-INVITE client transaction states (RFC 3261 Figure 6)."""

    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    TERMINATED = "Terminated"


class NictInput(IdentityEnum):
    """What drives a NICT: responses (remote) and timers (local)."""

    RECV_1XX = "1xx received"
    RECV_200_699 = "200-699 received"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_K = "Timer K"


NICT_REMOTE_INPUTS = frozenset({NictInput.RECV_1XX, NictInput.RECV_200_699})
_NICT_TIMER_INPUTS = {
    Timer.E: NictInput.TIMER_E,
    Timer.F: NictInput.TIMER_F,
    Timer.K: NictInput.TIMER_K,
}


def nict_input(response: Response) -> NictInput:
    """The NICT input for a received response."""
    return NictInput.RECV_1XX if response.status < 200 else NictInput.RECV_200_699


class NonInviteClientTransaction(Transaction[NictState, NictInput]):
    """A non-INVITE client transaction (RFC 3261 §17.1.2)."""

    kind = "NICT"
    remote_inputs = NICT_REMOTE_INPUTS
    timer_inputs = _NICT_TIMER_INPUTS
    terminated_state = NictState.TERMINATED
    settled_states = frozenset({NictState.COMPLETED, NictState.TERMINATED})

    def __init__(
        self, *, key: ClientKey, request: Request, peer: Peer, config: TimerConfig
    ) -> None:
        super().__init__(key=key, config=config, reliable=peer.reliable)
        self.client_key = key
        self.request: Request | None = request
        """The request, until a final response arrives."""
        self.peer = peer
        self.state = NictState.TRYING
        self.interval_e = config.timer_e

    def start(self, now: float) -> list[Output]:
        """Send the request; start Timer E (unreliable only) and Timer F."""
        if not self.reliable:
            self._arm(Timer.E, self.interval_e, now)
        self._arm(Timer.F, self.config.timer_f, now)
        return self._send_request()

    def _send_request(self) -> list[Output]:
        assert self.request is not None, "the request is kept until a final response"
        return [SendMessage(message=self.request, peer=self.peer)]

    # -- handlers ----------------------------------------------------------
    def _retransmit_trying(
        self, now: float, message: _Message, source: Peer | None
    ) -> list[Output]:
        self.interval_e = min(2 * self.interval_e, self.config.T2)
        self._arm(Timer.E, self.interval_e, now)
        return self._send_request()

    def _retransmit_proceeding(
        self, now: float, message: _Message, source: Peer | None
    ) -> list[Output]:
        self.interval_e = self.config.T2
        self._arm(Timer.E, self.interval_e, now)
        return self._send_request()

    def _time_out(self, now: float, message: _Message, source: Peer | None) -> list[Output]:
        return [TransactionTimedOut(transaction_key=self.client_key)]

    def _pass_up(self, now: float, message: _Message, source: Peer | None) -> list[Output]:
        response = need_response(message, NictInput.RECV_1XX)
        return [ResponseReceived(response=response, transaction_key=self.client_key)]

    def _complete(self, now: float, message: _Message, source: Peer | None) -> list[Output]:
        response = need_response(message, NictInput.RECV_200_699)
        self._disarm(Timer.E, Timer.F)
        self._arm(Timer.K, self.config.timer_k(self.reliable), now)
        self.request = None
        return [ResponseReceived(response=response, transaction_key=self.client_key)]

    def _terminate(self, now: float, message: _Message, source: Peer | None) -> list[Output]:
        return []


NICT = NonInviteClientTransaction
_N = NictState
_J = NictInput
#: RFC 3261 Figure 6: ``(state, input) -> (handler, next state)``.
NICT_TABLE: dict[tuple[NictState, NictInput], tuple[Handler, NictState]] = {
    (_N.TRYING, _J.TIMER_E): (NICT._retransmit_trying, _N.TRYING),
    (_N.TRYING, _J.TIMER_F): (NICT._time_out, _N.TERMINATED),
    (_N.TRYING, _J.RECV_1XX): (NICT._pass_up, _N.PROCEEDING),
    (_N.TRYING, _J.RECV_200_699): (NICT._complete, _N.COMPLETED),
    (_N.PROCEEDING, _J.TIMER_E): (NICT._retransmit_proceeding, _N.PROCEEDING),
    (_N.PROCEEDING, _J.TIMER_F): (NICT._time_out, _N.TERMINATED),
    (_N.PROCEEDING, _J.RECV_1XX): (NICT._pass_up, _N.PROCEEDING),
    (_N.PROCEEDING, _J.RECV_200_699): (NICT._complete, _N.COMPLETED),
    (_N.COMPLETED, _J.TIMER_K): (NICT._terminate, _N.TERMINATED),
}
NICT.table = NICT_TABLE
