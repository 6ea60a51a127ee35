"""The transaction layer: every client and server transaction, matched and timed (RFC 3261 §17).

Theory of operation
===================

``TransactionLayer`` owns the four kinds of transaction machine
(``client.py``, ``server.py``) and is the only thing the transaction user
(TU) and the transport driver talk to. Inputs are method calls; each returns
``list[Output]`` (``events.py``) in a deterministic order:

- ``receive(message, source, now)``: a parsed message from the network.
  Responses go to the client transaction with the same top Via branch and
  CSeq method (§17.1.3), else out as ``StrayResponse``. Requests go to the
  server transaction with the same branch, sent-by and method (§17.2.3; an
  RFC 2543 key without the magic cookie), where they are retransmissions, or
  start a new one announced by ``RequestReceived``. An ACK belongs to its
  INVITE's transaction: for a 3xx-6xx it is absorbed there (→ Confirmed);
  any other ACK (the ACK for a 2xx) is passed up as ``AckReceived``. A CANCEL
  gets its own NIST, which the layer answers 200 itself when the CANCEL
  matches an INVITE server transaction (§9.2), reporting ``CancelReceived``
  if that INVITE has no final response yet; an unmatched CANCEL is a normal
  ``RequestReceived`` (a UAS answers 481, a proxy forwards it, §16.10).
- ``send_request(request, peer, now)``: a new client transaction. The
  request must already carry the top Via with a fresh branch (``add_via``).
- ``respond(key, response, now)``: the TU answers a server transaction.
- ``cancel(key, now)``: CANCEL a client INVITE transaction (§9.1), sent when
  the first provisional response has arrived.
- ``send_stateless(message, peer)``: outside any transaction (the ACK for a
  2xx, a proxy's stateless forwarding).
- ``next_deadline()`` / ``handle_timeout(now)``: timers. Every deadline
  ``<= now`` is handled in (deadline, transaction creation) order, one timer
  at a time, so the outcome does not depend on how late the call comes.

A transaction that reaches Terminated is removed at once and reported with
``TransactionTerminated`` (the last output about it in that call).

Overload: when ``max_transactions`` transactions are pending (no final
response sent or received yet), a new request (never an ACK, CANCEL or
retransmission) is answered ``503 Service Unavailable`` with ``Retry-After:
retry_after_s`` by the layer itself, without a transaction:
``SendMessage(503)`` then ``RequestRejected``. Settled transactions, which
only linger to absorb retransmissions (Timer J keeps a UDP REGISTER's for
32 s), do not count: a registrar taking 10,000 REGISTERs/s holds 320,000 of
them. They are bounded too, at ``LINGER_FACTOR`` times the limit, and past that
bound the one settled longest ago ends at once, as its last timer would end it
(``TransactionTerminated``; counted in ``ended_early``): under load the window in
which retransmissions are absorbed shrinks, and new requests are still served.

Completed non-INVITE server transactions over UDP, the bulk of what lingers (every
REGISTER's, 32 s each), are not kept as machines: their key maps to the bytes of the
final response and where they went (``_completed``), which a retransmission gets
again until Timer J, in the order they completed. That is what Figure 8's Completed
state does, in two thirds of the memory, holding nothing the garbage collector walks
but the key. They are the first to end early past the bound.

Deviations and choices
======================
- RFC 2543 matching compares the To tag only for an ACK (with the tag of
  the response the transaction sent); for other requests the Request-URI,
  Call-ID, From tag, CSeq and top Via in the key decide.
- A CANCEL matching an IST that has already sent its final response is
  answered 200 and has no other effect (§9.2).
- Past ``LINGER_FACTOR * max_transactions`` settled transactions the oldest ends
  before its timer (J, L, M, D, K, I, or H for an IST still awaiting its ACK): a
  retransmission arriving after that is handled as a new request, or passed up as a
  stray response. Refusing new requests instead would let a retransmission window
  of 32 s cap the rate a registrar serves (10,000 REGISTERs/s settle 320,000).
- The 200 to a CANCEL reuses the To tag of the INVITE's last response, or
  a fresh one; ``received``/``rport`` (§18.2.1, RFC 3581) are the
  transport's to add before ``receive``; responses go to
  ``response_peer(top Via, source)``.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import assert_never

from sipwake.errors import LocalProtocolError, SipParseError
from sipwake.ids import BRANCH_MAGIC, Ids
from sipwake.sip.message import Request, Response, make_response
from sipwake.sip.peer import Peer, response_peer
from sipwake.transaction.client import (
    IctInput,
    IctState,
    InviteClientTransaction,
    NictState,
    NonInviteClientTransaction,
    ict_input,
    nict_input,
)
from sipwake.transaction.events import (
    AckReceived,
    CancelReceived,
    MessageDropped,
    Output,
    RequestReceived,
    RequestRejected,
    SendMessage,
    StrayResponse,
    TransactionTerminated,
    TransportFailed,
)
from sipwake.transaction.keys import (
    ClientKey,
    LegacyServerKey,
    ServerTransactionKey,
    TransactionKey,
    client_key,
    server_key,
    top_branch,
)
from sipwake.transaction.messages import build_cancel, overload_response, sent_response
from sipwake.transaction.server import (
    InviteServerTransaction,
    IstInput,
    IstState,
    NistInput,
    NistState,
    NonInviteServerTransaction,
    ist_send_input,
    nist_send_input,
)
from sipwake.transaction.timers import TimerConfig

__all__ = ["LINGER_FACTOR", "AnyTransaction", "TransactionLayer", "TransactionState"]

#: Settled transactions may reach this many times ``max_transactions``; past it the one
#: settled longest ago ends early.
LINGER_FACTOR = 3

AnyTransaction = (
    InviteClientTransaction
    | NonInviteClientTransaction
    | InviteServerTransaction
    | NonInviteServerTransaction
)
ClientTransaction = InviteClientTransaction | NonInviteClientTransaction
#: A completed UDP NIST: Timer J's deadline, the final response as sent, and the
#: transport, host, port and flow of the peer it went to.
_Completed = tuple[float, bytes, str, str, int, int | None]
TransactionState = IctState | NictState | IstState | NistState


class TransactionLayer:
    """All transactions of one SIP element (RFC 3261 §17); see the module docstring."""

    def __init__(
        self,
        ids: Ids,
        timers: TimerConfig | None = None,
        *,
        max_transactions: int | None = None,
        retry_after_s: int = 5,
    ) -> None:
        self._ids = ids
        self.timers = timers if timers is not None else TimerConfig()
        self.max_transactions = max_transactions
        self.retry_after_s = retry_after_s
        self._transactions: dict[TransactionKey, AnyTransaction] = {}
        #: The client transactions again, by ``(branch, CSeq method)``: a response is matched
        #: without building a ``ClientKey`` (RFC 3261 §17.1.3).
        self._clients: dict[tuple[str, str], ClientTransaction] = {}
        self._created = 0
        self._pushes = 0
        #: The transactions again, by creation order (``txn.order``): the timer heap names
        #: them so, and a finished transaction is not kept alive by a stale entry.
        self._by_order: dict[int, AnyTransaction] = {}
        #: (deadline, creation order, push number): an entry is stale (and skipped) unless
        #: its transaction is still there and ``txn.scheduled`` names the deadline.
        self._heap: list[tuple[float, int, int]] = []
        #: How many transactions have their final response (they only absorb retransmissions).
        self._settled = 0
        #: The creation orders of settled transactions, in the order they settled (an order
        #: whose transaction is gone is skipped, and dropped when the queue is rebuilt).
        self._settle_queue: deque[int] = deque()
        #: How many settled transactions ended before their timer, past the linger bound.
        self.ended_early = 0
        #: Completed UDP NISTs: key → (Timer J deadline, final response as sent, and the
        #: transport, host, port and flow it went to); ``_completed_order`` holds the same
        #: keys in the order they completed (so by deadline).
        self._completed: dict[TransactionKey, _Completed] = {}
        self._completed_order: deque[TransactionKey] = deque()

    # -- introspection -----------------------------------------------------
    def __len__(self) -> int:
        return len(self._transactions) + len(self._completed)

    @property
    def pending(self) -> int:
        """Transactions without their final response yet (what ``max_transactions`` limits)."""
        return len(self._transactions) - self._settled

    def __contains__(self, key: object) -> bool:
        return key in self._transactions or key in self._completed

    def counts(self) -> dict[str, int]:
        """How many transactions of each kind (``ICT``, ``NICT``, ``IST``, ``NIST``) exist."""
        counts = {"ICT": 0, "NICT": 0, "IST": 0, "NIST": len(self._completed)}
        for txn in self._transactions.values():
            counts[txn.kind] += 1
        return counts

    def state_of(self, key: TransactionKey) -> TransactionState | None:
        """The transaction's state, or ``None`` once it is gone (or never existed)."""
        txn = self._transactions.get(key)
        if txn is None:
            return NistState.COMPLETED if key in self._completed else None
        return txn.state

    # -- timers ------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """The earliest timer deadline of any transaction, or ``None``."""
        heap = self._heap
        first = self._first_completed_deadline()
        while heap:
            deadline, order, _ = heap[0]
            txn = self._by_order.get(order)
            if txn is not None and txn.scheduled == deadline:
                return deadline if first is None else min(deadline, first)
            heapq.heappop(heap)
        return first

    def handle_timeout(self, now: float) -> list[Output]:
        """Fire every timer due at ``now``, in (deadline, creation order)."""
        outputs: list[Output] = []
        heap = self._heap
        while True:
            first = self._first_completed_deadline()
            if heap and heap[0][0] <= now and (first is None or heap[0][0] <= first):
                deadline, order, _ = heapq.heappop(heap)
                txn = self._by_order.get(order)
                if txn is None or txn.scheduled != deadline:
                    continue
                txn.scheduled = None
                outputs += self._settle(txn, txn.on_timer(now))
            elif first is not None and first <= now:  # Timer J of a completed NIST
                outputs.append(self._end_first_completed())
            else:
                return outputs

    def _first_completed_deadline(self) -> float | None:
        """Timer J of the completed NIST that completed first (so the earliest)."""
        order = self._completed_order
        return self._completed[order[0]][0] if order else None

    def _end_first_completed(self) -> TransactionTerminated:
        key = self._completed_order.popleft()
        del self._completed[key]
        return TransactionTerminated(transaction_key=key)

    # -- client side -------------------------------------------------------
    def send_request(
        self, request: Request, peer: Peer, now: float
    ) -> tuple[ClientKey, list[Output]]:
        """Start a client transaction for ``request`` to ``peer`` (RFC 3261 §17.1).

        The top Via must carry a fresh ``z9hG4bK`` branch (see ``add_via``).
        An ACK is not a transaction: use ``send_stateless``.
        """
        if request.method == "ACK":
            raise LocalProtocolError("an ACK has no client transaction: use send_stateless")
        try:
            key = client_key(request)
        except SipParseError as exc:
            raise LocalProtocolError(f"{request.method}: {exc.reason}") from exc
        if key.method != request.method:
            raise LocalProtocolError(
                f"CSeq method {key.method!r} differs from request method {request.method!r}"
            )
        if not key.branch.startswith(BRANCH_MAGIC):
            raise LocalProtocolError(
                f"{request.method}: top Via branch must start with {BRANCH_MAGIC!r} "
                f"(add one with add_via), got {key.branch!r}"
            )
        if key in self._transactions:
            raise LocalProtocolError(f"{key}: a client transaction with this branch exists")
        txn: InviteClientTransaction | NonInviteClientTransaction
        if request.method == "INVITE":
            txn = InviteClientTransaction(key=key, request=request, peer=peer, config=self.timers)
        else:
            txn = NonInviteClientTransaction(
                key=key, request=request, peer=peer, config=self.timers
            )
        return key, self._start(txn, now)

    def cancel(
        self, key: ClientKey, now: float, *, reason: str | None = None
    ) -> tuple[ClientKey, list[Output]]:
        """CANCEL the client INVITE transaction ``key`` (RFC 3261 §9.1).

        Returns the CANCEL's own client transaction key. The CANCEL is sent
        now if a provisional response has arrived, else when the first one
        does (and never if a final response comes first). ``reason`` becomes
        a Reason header field (RFC 3326). Cancelling twice, or after a final
        response, is a ``LocalProtocolError``.
        """
        txn = self._transactions.get(key)
        if not isinstance(txn, InviteClientTransaction):
            raise LocalProtocolError(f"{key}: no client INVITE transaction to cancel")
        if txn.cancelled:
            raise LocalProtocolError(f"{key}: already cancelled")
        cancel_key = ClientKey(branch=txn.client_key.branch, method="CANCEL")
        if cancel_key in self._transactions:
            raise LocalProtocolError(f"{key}: a CANCEL with this branch was already sent")
        invite = txn.request
        if invite is None:  # a final response is in: the table refuses CANCEL (raises)
            return cancel_key, txn.process(IctInput.CANCEL, now)
        outputs = txn.process(IctInput.CANCEL, now, build_cancel(invite, reason=reason))
        outputs += self._flush_cancel(txn, now)
        return cancel_key, self._settle(txn, outputs)

    def send_stateless(self, message: Request | Response, peer: Peer) -> list[Output]:
        """Send outside any transaction: the ACK for a 2xx, stateless forwarding (§16.11)."""
        return [SendMessage(message=message, peer=peer)]

    # -- server side -------------------------------------------------------
    def respond(self, key: ServerTransactionKey, response: Response, now: float) -> list[Output]:
        """Send the TU's ``response`` in server transaction ``key`` (RFC 3261 §17.2).

        A response the transaction's state does not allow (a second final
        response, a 2xx after a 3xx-6xx) is a ``LocalProtocolError``; a proxy
        sends such a late 2xx with ``send_stateless`` (§16.7 step 10).
        """
        if not 100 <= response.status <= 699:
            raise LocalProtocolError(f"status {response.status} outside 100-699")
        txn = self._transactions.get(key)
        match txn:
            case InviteServerTransaction():
                outputs = txn.process(ist_send_input(response), now, response)
            case NonInviteServerTransaction():
                outputs = txn.process(nist_send_input(response), now, response)
            case None if key in self._completed:  # Figure 8: Completed takes no response
                raise LocalProtocolError(
                    f"<NIST {key}>: input {nist_send_input(response).name} not allowed in state "
                    f"{NistState.COMPLETED.name}"
                )
            case InviteClientTransaction() | NonInviteClientTransaction() | None:
                raise LocalProtocolError(f"{key}: no server transaction to respond in")
            case _:
                assert_never(txn)
        return self._settle(txn, outputs)

    def transport_error(self, key: ClientKey) -> list[Output]:
        """The transport could not send client transaction ``key``'s request (RFC 3261
        §17.1.4): the transaction ends now, and the TU hears it as ``TransportFailed``."""
        txn = self._transactions.get(key)
        if not isinstance(txn, InviteClientTransaction | NonInviteClientTransaction):
            return []
        self._remove(txn)
        return [TransportFailed(transaction_key=key), TransactionTerminated(transaction_key=key)]

    # -- network input -----------------------------------------------------
    def receive(self, message: Request | Response, source: Peer, now: float) -> list[Output]:
        """A message from ``source``: match it to a transaction (RFC 3261 §17.1.3, §17.2.3)."""
        try:
            client_match = _check(message)
        except SipParseError as exc:
            return [MessageDropped(reason=exc.reason, source=source)]
        match message:
            case Request():
                return self._receive_request(message, source, now)
            case Response():
                return self._receive_response(message, client_match, source, now)
            case _:
                assert_never(message)

    def _receive_response(
        self, response: Response, client_match: tuple[str | None, str], source: Peer, now: float
    ) -> list[Output]:
        branch, method = client_match
        txn = self._clients.get((branch, method)) if branch else None
        match txn:
            case InviteClientTransaction():
                outputs = txn.process(ict_input(response), now, response)
                outputs += self._flush_cancel(txn, now)
            case NonInviteClientTransaction():
                outputs = txn.process(nict_input(response), now, response)
            case None:
                return [StrayResponse(response=response, source=source)]
            case _:
                assert_never(txn)
        return self._settle(txn, outputs)

    def _receive_request(self, request: Request, source: Peer, now: float) -> list[Output]:
        if request.method == "ACK":
            return self._receive_ack(request, source, now)
        key = server_key(request)
        txn = self._transactions.get(key)
        if txn is None and self._completed:
            done = self._completed.get(key)
            if done is not None:  # Figure 8: Completed re-sends its final response
                _, data, transport, host, port, flow = done
                peer = Peer(transport=transport, host=host, port=port, flow=flow)
                return [SendMessage(message=sent_response(data), peer=peer, data=data)]
        match txn:
            case InviteServerTransaction():
                return self._settle(txn, txn.process(IstInput.RECV_INVITE, now, request, source))
            case NonInviteServerTransaction():
                outputs = txn.process(NistInput.RECV_REQUEST, now, request, source)
                return self._settle(txn, outputs)
            case InviteClientTransaction() | NonInviteClientTransaction() | None:
                pass
            case _:
                assert_never(txn)
        if request.method == "CANCEL":
            return self._receive_cancel(request, source, key, now)
        limit = self.max_transactions
        if limit is not None and self.pending >= limit:
            response = overload_response(
                request, to_tag=self._ids.tag(), retry_after_s=self.retry_after_s
            )
            return [
                SendMessage(message=response, peer=response_peer(request.top_via, source)),
                RequestRejected(request=request, source=source, status=503),
            ]
        server: InviteServerTransaction | NonInviteServerTransaction
        if request.method == "INVITE":
            server = InviteServerTransaction(
                key=key, request=request, source=source, config=self.timers
            )
        else:
            server = NonInviteServerTransaction(
                key=key, request=request, source=source, config=self.timers
            )
        outputs = self._start(server, now)
        outputs.append(RequestReceived(request=request, source=source, transaction_key=key))
        return outputs

    def _receive_ack(self, ack: Request, source: Peer, now: float) -> list[Output]:
        key = server_key(ack)
        txn = self._transactions.get(key)
        if not isinstance(txn, InviteServerTransaction):
            return [AckReceived(request=ack, source=source)]
        if isinstance(key, LegacyServerKey):
            sent_tag = txn.response.to.tag if txn.response is not None else None
            if ack.to.tag != sent_tag:
                return [AckReceived(request=ack, source=source)]
        return self._settle(txn, txn.process(IstInput.RECV_ACK, now, ack, source))

    def _receive_cancel(
        self, cancel: Request, source: Peer, key: ServerTransactionKey, now: float
    ) -> list[Output]:
        invite_key = server_key(cancel, "INVITE")
        invite = self._transactions.get(invite_key)
        nist = NonInviteServerTransaction(
            key=key, request=cancel, source=source, config=self.timers
        )
        outputs = self._start(nist, now)
        if not isinstance(invite, InviteServerTransaction):
            outputs.append(RequestReceived(request=cancel, source=source, transaction_key=key))
            return outputs
        tag = invite.response.to.tag if invite.response is not None else None
        ok = make_response(cancel, 200, to_tag=tag or self._ids.tag())
        outputs += nist.process(NistInput.SEND_200_699, now, ok)
        if invite.state is IstState.PROCEEDING:
            outputs.append(CancelReceived(cancel=cancel, source=source, invite_key=invite_key))
        return self._settle(nist, outputs)

    # -- bookkeeping -------------------------------------------------------
    def _start(self, txn: AnyTransaction, now: float) -> list[Output]:
        self._created += 1
        txn.order = self._created
        self._transactions[txn.key] = txn
        self._by_order[txn.order] = txn
        if isinstance(txn, ClientTransaction):
            self._clients[txn.client_key.branch, txn.client_key.method] = txn
        return self._settle(txn, txn.start(now))

    def _flush_cancel(self, txn: InviteClientTransaction, now: float) -> list[Output]:
        """Send a requested CANCEL once the INVITE is in Proceeding (RFC 3261 §9.1)."""
        cancel = txn.cancel
        if cancel is None or txn.cancel_sent or txn.state is not IctState.PROCEEDING:
            return []
        txn.cancel_sent = True
        txn.cancel = None  # its own transaction holds it from now on
        key = ClientKey(branch=txn.client_key.branch, method="CANCEL")
        if key in self._transactions:  # the TU sent its own CANCEL meanwhile
            return []
        nict = NonInviteClientTransaction(
            key=key, request=cancel, peer=txn.peer, config=self.timers
        )
        return self._start(nict, now)

    def _settle(self, txn: AnyTransaction, outputs: list[Output]) -> list[Output]:
        """Remove ``txn`` if it terminated, else (re)schedule its next deadline."""
        if txn.state is txn.terminated_state:
            if not txn.removed:
                self._remove(txn)
                outputs.append(TransactionTerminated(transaction_key=txn.key))
            return outputs
        if txn.state is NistState.COMPLETED and not txn.reliable:
            return self._complete(txn, outputs)
        if not txn.settled and txn.state in txn.settled_states:
            txn.settled = True
            self._settled += 1
            if self.max_transactions is not None:
                outputs += self._queue_settled(txn)
        armed = txn.armed
        if not armed:
            txn.scheduled = None
        else:
            deadline = min(armed.values())
            if txn.scheduled != deadline:
                txn.scheduled = deadline
                self._pushes += 1
                heapq.heappush(self._heap, (deadline, txn.order, self._pushes))
        return outputs

    def _complete(self, txn: NonInviteServerTransaction, outputs: list[Output]) -> list[Output]:
        """Keep a NIST that completed over UDP as its final response alone (see the module
        docstring) until Timer J."""
        data = txn.final
        deadline = txn.armed.get("J")
        if data is None or deadline is None:  # Figure 8: it sent one, and armed Timer J
            raise LocalProtocolError(f"{txn!r}: Completed without a final response or Timer J")
        self._remove(txn)
        peer = txn.peer
        self._completed[txn.key] = (deadline, data, peer.transport, peer.host, peer.port, peer.flow)
        self._completed_order.append(txn.key)
        if self._past_linger_bound():
            outputs += self._end_oldest_settled()
        return outputs

    def _past_linger_bound(self) -> bool:
        limit = self.max_transactions
        return limit is not None and self._settled + len(self._completed) > limit * LINGER_FACTOR

    def _queue_settled(self, txn: AnyTransaction) -> list[Output]:
        """Note that ``txn`` settled; past the bound, end the transaction settled longest
        ago, as its last timer would (see "Deviations and choices")."""
        queue = self._settle_queue
        queue.append(txn.order)
        if len(queue) > 2 * self._settled + 64:  # mostly orders of transactions gone
            self._settle_queue = deque(o for o in queue if o in self._by_order)
        return self._end_oldest_settled() if self._past_linger_bound() else []

    def _end_oldest_settled(self) -> list[Output]:
        """End a settled transaction before its timer: the completed NIST that completed
        first if any (its retransmission is the cheapest to meet again), else the
        transaction settled longest ago."""
        if self._completed_order:
            self.ended_early += 1
            return [self._end_first_completed()]
        queue = self._settle_queue
        while queue:
            oldest = self._by_order.get(queue.popleft())
            if oldest is None:
                continue
            oldest.end()
            oldest.scheduled = None
            self._remove(oldest)
            self.ended_early += 1
            return [TransactionTerminated(transaction_key=oldest.key)]
        return []

    def _remove(self, txn: AnyTransaction) -> None:
        del self._transactions[txn.key]
        if isinstance(txn, ClientTransaction):
            del self._clients[txn.client_key.branch, txn.client_key.method]
        del self._by_order[txn.order]
        txn.removed = True
        if txn.settled:
            self._settled -= 1


def _check(message: Request | Response) -> tuple[str | None, str]:
    """Parse (and cache) the header fields matching needs; raises ``SipParseError``.

    Returns what a response is matched on: its top Via branch (``top_branch``: a
    response's Via is read for nothing else) and CSeq method (RFC 3261 §17.1.3). A
    request's top Via is parsed and cached instead, as ``server_key`` reads its sent-by
    (the transport has usually parsed it already, to mark it received). From and To
    need only be present here: matching reads the From tag of RFC 2543 requests alone,
    and the parser has already checked the fields' shape."""
    if isinstance(message, Response):
        branch = top_branch(message)
    else:
        message.top_via  # noqa: B018
        branch = None
    method = message.cseq.method
    message.call_id  # noqa: B018
    headers = message.headers
    for name in ("From", "To"):
        if headers.get(name) is None:  # what ``in`` says, without a generator per field
            raise SipParseError(f"missing {name} header")
    return branch, method
