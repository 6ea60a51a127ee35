"""Server transactions: INVITE (IST) and non-INVITE (NIST), RFC 3261 §17.2.

Theory of operation
===================

A server transaction holds one received request, sends the TU's responses
to ``response_peer(top Via, source)`` (RFC 3261 §18.2.2) and absorbs the
request's retransmissions by re-sending its last response. ``start(now)``
arms the first timers; ``process(input, now, message, source)`` feeds a
retransmitted request, an ACK or a TU response; ``on_timer(now)`` fires the
earliest due timer. The layer removes the transaction once it is Terminated.

IST — RFC 3261 Figure 7 as amended by RFC 6026 §7.1::

    Proceeding --Timer TRYING-->   Proceeding  (send 100 Trying unless the TU responded)
    Proceeding --1xx from TU-->    Proceeding  (send)
    Proceeding --INVITE-->         Proceeding  (re-send the last provisional)
    Proceeding --2xx from TU-->    Accepted    (send; Timer L = 64*T1)
    Proceeding --300-699 from TU-> Completed   (send; Timer G (UDP only), Timer H)
    Completed  --INVITE-->         Completed   (re-send the final response)
    Completed  --Timer G-->        Completed   (re-send; interval doubles up to T2)
    Completed  --ACK-->            Confirmed   (G and H stop; Timer I)
    Completed  --Timer H-->        Terminated  (TransactionTimedOut: no ACK came)
    Confirmed  --ACK-->            Confirmed   (absorbed)
    Confirmed  --Timer I-->        Terminated  (T4 UDP, at once over reliable)
    Accepted   --2xx from TU-->    Accepted    (send: the TU retransmits its 2xx)
    Accepted   --INVITE-->         Accepted    (absorbed, RFC 6026 §7.1)
    Accepted   --ACK-->            Accepted    (AckReceived: the ACK for the 2xx goes to the TU)
    Accepted   --Timer L-->        Terminated

NIST — RFC 3261 Figure 8::

    Trying     --request-->        Trying      (absorbed)
    Trying/Proceeding --1xx from TU-->      Proceeding (send)
    Trying/Proceeding --200-699 from TU-->  Completed  (send; Timer J)
    Proceeding --request-->        Proceeding  (re-send the last provisional)
    Completed  --request-->        Completed   (re-send the final response)
    Completed  --Timer J-->        Terminated  (64*T1 UDP, at once over reliable)

Requests and ACKs a state has no entry for are absorbed. A response from the
TU a state has no entry for (a second final, a 2xx in IST Completed) is a
``LocalProtocolError``: a proxy forwards such a late 2xx statelessly
(RFC 3261 §16.7 step 10).

Deviations and choices
======================
- The 100 Trying timer is named ``TRYING`` (RFC 3261 §17.2.1: "200 ms");
  ``TimerConfig.trying_delay = 0`` sends 100 as the transaction starts.
- Transport errors (§17.2.4) are not modelled: the driver reports them.
- Once the final response is sent the request is dropped and the response is
  kept as the bytes that went out (``final``), re-sent read back from them
  (``sent_response``): a settled transaction lingers up to 32 s and holds
  nothing the garbage collector walks (``Transaction``'s docstring).
"""

from __future__ import annotations

import enum
from typing import TypeVar

from sipwake.sip.message import Request, Response
from sipwake.sip.peer import Peer, response_peer
from sipwake.transaction.base import Handler, Transaction, need_request, need_response
from sipwake.transaction.events import AckReceived, Output, SendMessage, TransactionTimedOut
from sipwake.transaction.keys import ServerTransactionKey
from sipwake.transaction.messages import sent_response, trying_response
from sipwake.transaction.timers import IdentityEnum, Timer, TimerConfig

__all__ = [
    "IST_TABLE",
    "NIST_TABLE",
    "InviteServerTransaction",
    "IstInput",
    "IstState",
    "NistInput",
    "NistState",
    "NonInviteServerTransaction",
    "ist_send_input",
    "nist_send_input",
]

_Message = Request | Response | None
StateT = TypeVar("StateT", bound=enum.Enum)
InputT = TypeVar("InputT", bound=enum.Enum)


class _ServerTransaction(Transaction[StateT, InputT]):
    """What IST and NIST share: the request, where responses go, the last response.

    Once the final response is sent only that response matters (re-sent for a
    retransmitted request, its To tag read for a CANCEL or an RFC 2543 ACK), and the
    transaction may linger 32 s (Timer J, L, H): it drops the request and keeps the
    final response as the bytes that went out (``final``), which the garbage collector
    does not track; ``response`` reads it back when asked.
    """

    def __init__(
        self, *, key: ServerTransactionKey, request: Request, source: Peer, config: TimerConfig
    ) -> None:
        super().__init__(key=key, config=config, reliable=source.reliable)
        self.server_key = key
        self.request: Request | None = request
        """The request, until the final response is sent."""
        self.source = source
        self.peer = response_peer(request.top_via, source)
        self.provisional: Response | None = None
        """The last provisional response, until the final one is sent."""
        self.final: bytes | None = None
        """The final response as sent (the last one, if the TU re-sent a 2xx)."""

    @property
    def response(self) -> Response | None:
        """The last response sent (a final one read back from ``final``), or ``None``."""
        if self.final is not None:
            return sent_response(self.final)
        return self.provisional

    def _send(self, response: Response) -> list[Output]:
        if response.status < 200:
            self.provisional = response
            return [SendMessage(message=response, peer=self.peer)]
        self.final = response.to_bytes()
        self.provisional = None
        self.request = None
        return [SendMessage(message=response, peer=self.peer, data=self.final)]

    def _resend(self, now: float, message: _Message, source: Peer | None) -> list[Output]:
        response = self.response
        if response is None:
            return []
        return [SendMessage(message=response, peer=self.peer, data=self.final)]


# -- IST -------------------------------------------------------------------


class IstState(IdentityEnum):
    """INVITE server transaction states (RFC 3261 Figure 7, RFC 6026 Figure 7)."""

    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class IstInput(IdentityEnum):
    """What drives an IST: requests (remote), TU responses and timers (local)."""

    RECV_INVITE = "INVITE received"
    RECV_ACK = "ACK received"
    SEND_1XX = "1xx from TU"
    SEND_2XX = "2xx from TU"
    SEND_300_699 = "300-699 from TU"
    TIMER_TRYING = "100 Trying timer"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_L = "Timer L"


IST_REMOTE_INPUTS = frozenset({IstInput.RECV_INVITE, IstInput.RECV_ACK})
_IST_TIMER_INPUTS = {
    Timer.TRYING: IstInput.TIMER_TRYING,
    Timer.G: IstInput.TIMER_G,
    Timer.H: IstInput.TIMER_H,
    Timer.I: IstInput.TIMER_I,
    Timer.L: IstInput.TIMER_L,
}


def ist_send_input(response: Response) -> IstInput:
    """The IST input for a TU response."""
    if response.status < 200:
        return IstInput.SEND_1XX
    return IstInput.SEND_2XX if response.status < 300 else IstInput.SEND_300_699


class InviteServerTransaction(_ServerTransaction[IstState, IstInput]):
    """An INVITE server transaction (RFC 3261 §17.2.1, RFC 6026 §7.1)."""

    kind = "IST"
    remote_inputs = IST_REMOTE_INPUTS
    timer_inputs = _IST_TIMER_INPUTS
    terminated_state = IstState.TERMINATED
    settled_states = frozenset(set(IstState) - {IstState.PROCEEDING})

    def __init__(
        self, *, key: ServerTransactionKey, request: Request, source: Peer, config: TimerConfig
    ) -> None:
        super().__init__(key=key, request=request, source=source, config=config)
        self.state = IstState.PROCEEDING
        self.interval_g = config.timer_g

    def start(self, now: float) -> list[Output]:
        """Arm the 100 Trying timer (a zero ``trying_delay`` sends 100 at once)."""
        self._arm(Timer.TRYING, self.config.trying_delay, now)
        return self._drain(now)

    # -- handlers ----------------------------------------------------------
    def _send_trying(self, now: float, message: _Message, source: Peer | None) -> list[Output]:
        if self.provisional is not None or self.request is None:
            return []
        return self._send(trying_response(self.request))

    def _send_provisional(self, now: float, message: _Message, source: Peer | None) -> list[Output]:
        response = need_response(message, IstInput.SEND_1XX)
        self._disarm(Timer.TRYING)
        return self._send(response)

    def _send_2xx(self, now: float, message: _Message, source: Peer | None) -> list[Output]:
        response = need_response(message, IstInput.SEND_2XX)
        self._disarm(Timer.TRYING)
        self._arm(Timer.L, self.config.timer_l, now)
        return self._send(response)

    def _send_2xx_again(self, now: float, message: _Message, source: Peer | None) -> list[Output]:
        return self._send(need_response(message, IstInput.SEND_2XX))

    def _send_final(self, now: float, message: _Message, source: Peer | None) -> list[Output]:
        response = need_response(message, IstInput.SEND_300_699)
        self._disarm(Timer.TRYING)
        if not self.reliable:
            self._arm(Timer.G, self.interval_g, now)
        self._arm(Timer.H, self.config.timer_h, now)
        return self._send(response)

    def _retransmit_final(self, now: float, message: _Message, source: Peer | None) -> list[Output]:
        self.interval_g = min(2 * self.interval_g, self.config.T2)
        self._arm(Timer.G, self.interval_g, now)
        return self._resend(now, message, source)

    def _confirm(self, now: float, message: _Message, source: Peer | None) -> list[Output]:
        need_request(message, IstInput.RECV_ACK)
        self._disarm(Timer.G, Timer.H)
        self._arm(Timer.I, self.config.timer_i(self.reliable), now)
        return []

    def _time_out(self, now: float, message: _Message, source: Peer | None) -> list[Output]:
        return [TransactionTimedOut(transaction_key=self.server_key)]

    def _ack_to_tu(self, now: float, message: _Message, source: Peer | None) -> list[Output]:
        ack = need_request(message, IstInput.RECV_ACK)
        return [AckReceived(request=ack, source=source or self.source)]


IST = InviteServerTransaction
_S = IstState
_I = IstInput
#: RFC 3261 Figure 7 + RFC 6026: ``(state, input) -> (handler, next state)``.
IST_TABLE: dict[tuple[IstState, IstInput], tuple[Handler, IstState]] = {
    (_S.PROCEEDING, _I.TIMER_TRYING): (IST._send_trying, _S.PROCEEDING),
    (_S.PROCEEDING, _I.SEND_1XX): (IST._send_provisional, _S.PROCEEDING),
    (_S.PROCEEDING, _I.RECV_INVITE): (IST._resend, _S.PROCEEDING),
    (_S.PROCEEDING, _I.SEND_2XX): (IST._send_2xx, _S.ACCEPTED),
    (_S.PROCEEDING, _I.SEND_300_699): (IST._send_final, _S.COMPLETED),
    (_S.COMPLETED, _I.RECV_INVITE): (IST._resend, _S.COMPLETED),
    (_S.COMPLETED, _I.TIMER_G): (IST._retransmit_final, _S.COMPLETED),
    (_S.COMPLETED, _I.RECV_ACK): (IST._confirm, _S.CONFIRMED),
    (_S.COMPLETED, _I.TIMER_H): (IST._time_out, _S.TERMINATED),
    (_S.CONFIRMED, _I.RECV_ACK): (IST._absorb, _S.CONFIRMED),
    (_S.CONFIRMED, _I.TIMER_I): (IST._absorb, _S.TERMINATED),
    (_S.ACCEPTED, _I.SEND_2XX): (IST._send_2xx_again, _S.ACCEPTED),
    (_S.ACCEPTED, _I.RECV_INVITE): (IST._absorb, _S.ACCEPTED),
    (_S.ACCEPTED, _I.RECV_ACK): (IST._ack_to_tu, _S.ACCEPTED),
    (_S.ACCEPTED, _I.TIMER_L): (IST._absorb, _S.TERMINATED),
}
IST.table = IST_TABLE  # the table names the methods above: attached once both exist


# -- NIST ------------------------------------------------------------------


class NistState(IdentityEnum):
    """Non-INVITE server transaction states (RFC 3261 Figure 8)."""

    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    TERMINATED = "Terminated"


class NistInput(IdentityEnum):
    """What drives a NIST: request retransmissions (remote), TU responses and Timer J."""

    RECV_REQUEST = "request received"
    SEND_1XX = "1xx from TU"
    SEND_200_699 = "200-699 from TU"
    TIMER_J = "Timer J"


NIST_REMOTE_INPUTS = frozenset({NistInput.RECV_REQUEST})
_NIST_TIMER_INPUTS = {Timer.J: NistInput.TIMER_J}


def nist_send_input(response: Response) -> NistInput:
    """The NIST input for a TU response."""
    return NistInput.SEND_1XX if response.status < 200 else NistInput.SEND_200_699


class NonInviteServerTransaction(_ServerTransaction[NistState, NistInput]):
    """A non-INVITE server transaction (RFC 3261 §17.2.2)."""

    kind = "NIST"
    remote_inputs = NIST_REMOTE_INPUTS
    timer_inputs = _NIST_TIMER_INPUTS
    terminated_state = NistState.TERMINATED
    settled_states = frozenset({NistState.COMPLETED, NistState.TERMINATED})

    def __init__(
        self, *, key: ServerTransactionKey, request: Request, source: Peer, config: TimerConfig
    ) -> None:
        super().__init__(key=key, request=request, source=source, config=config)
        self.state = NistState.TRYING

    def start(self, now: float) -> list[Output]:
        """Nothing to send: a NIST never answers 100 on its own (RFC 4320 §4.1)."""
        return []

    # -- handlers ----------------------------------------------------------
    def _send_provisional(self, now: float, message: _Message, source: Peer | None) -> list[Output]:
        return self._send(need_response(message, NistInput.SEND_1XX))

    def _send_final(self, now: float, message: _Message, source: Peer | None) -> list[Output]:
        response = need_response(message, NistInput.SEND_200_699)
        self._arm(Timer.J, self.config.timer_j(self.reliable), now)
        return self._send(response)


NIST = NonInviteServerTransaction
_N = NistState
_J = NistInput
#: RFC 3261 Figure 8: ``(state, input) -> (handler, next state)``.
NIST_TABLE: dict[tuple[NistState, NistInput], tuple[Handler, NistState]] = {
    (_N.TRYING, _J.RECV_REQUEST): (NIST._absorb, _N.TRYING),
    (_N.TRYING, _J.SEND_1XX): (NIST._send_provisional, _N.PROCEEDING),
    (_N.TRYING, _J.SEND_200_699): (NIST._send_final, _N.COMPLETED),
    (_N.PROCEEDING, _J.RECV_REQUEST): (NIST._resend, _N.PROCEEDING),
    (_N.PROCEEDING, _J.SEND_1XX): (NIST._send_provisional, _N.PROCEEDING),
    (_N.PROCEEDING, _J.SEND_200_699): (NIST._send_final, _N.COMPLETED),
    (_N.COMPLETED, _J.RECV_REQUEST): (NIST._resend, _N.COMPLETED),
    (_N.COMPLETED, _J.TIMER_J): (NIST._absorb, _N.TERMINATED),
}
NIST.table = NIST_TABLE
