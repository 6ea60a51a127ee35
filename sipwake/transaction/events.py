"""What the transaction layer hands back: commands to the transport, facts for the TU.

Every entry point of ``TransactionLayer`` returns a ``list[Output]`` in a
deterministic order. ``SendMessage`` is the only command (the caller turns the
message into bytes with ``message.to_bytes()`` and writes them to ``peer``);
everything else is a fact for the transaction user (TU: the proxy core, the
registrar, a UA).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sipwake.frozen import interpreted_init
from sipwake.sip.message import Request, Response
from sipwake.sip.peer import Peer
from sipwake.transaction.keys import ClientKey, ServerTransactionKey, TransactionKey

__all__ = [
    "AckReceived",
    "CancelReceived",
    "MessageDropped",
    "Output",
    "RequestReceived",
    "RequestRejected",
    "ResponseReceived",
    "SendMessage",
    "StrayResponse",
    "TransactionTerminated",
    "TransactionTimedOut",
    "TransportFailed",
]


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class SendMessage:
    """Write ``message`` to ``peer`` (over ``peer.flow`` when it names a connection).
    ``data`` is its bytes when the transaction already has them (a final response or an
    ACK it keeps to re-send): the caller writes those rather than serialise it again."""

    message: Request | Response
    peer: Peer
    data: bytes | None = field(default=None, compare=False, repr=False)

    def __init__(
        self, *, message: Request | Response, peer: Peer, data: bytes | None = None
    ) -> None:
        self.message = message  # type: ignore[misc]
        self.peer = peer  # type: ignore[misc]
        self.data = data  # type: ignore[misc]


interpreted_init(SendMessage)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class RequestReceived:
    """A new server transaction: the TU must answer it with ``TransactionLayer.respond``."""

    request: Request
    source: Peer
    transaction_key: ServerTransactionKey

    def __init__(
        self, *, request: Request, source: Peer, transaction_key: ServerTransactionKey
    ) -> None:
        self.request = request  # type: ignore[misc]
        self.source = source  # type: ignore[misc]
        self.transaction_key = transaction_key  # type: ignore[misc]


interpreted_init(RequestReceived)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class ResponseReceived:
    """A response for one of the TU's client transactions (retransmitted 2xx included)."""

    response: Response
    transaction_key: ClientKey

    def __init__(self, *, response: Response, transaction_key: ClientKey) -> None:
        self.response = response  # type: ignore[misc]
        self.transaction_key = transaction_key  # type: ignore[misc]


interpreted_init(ResponseReceived)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class AckReceived:
    """An ACK that is not part of an INVITE transaction: the ACK for a 2xx (RFC 3261 §17.2.3).

    A proxy forwards it statelessly; a UAS ends its 2xx retransmissions.
    """

    request: Request
    source: Peer

    def __init__(self, *, request: Request, source: Peer) -> None:
        self.request = request  # type: ignore[misc]
        self.source = source  # type: ignore[misc]


interpreted_init(AckReceived)


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelReceived:
    """A CANCEL matched the INVITE server transaction ``invite_key``, which has not sent a
    final response yet. The layer has already answered the CANCEL with 200 (RFC 3261 §9.2);
    the TU decides whether to answer the INVITE with 487 (a proxy cancels its branches)."""

    cancel: Request
    source: Peer
    invite_key: ServerTransactionKey


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestRejected:
    """A new request was answered ``status`` (503 + Retry-After) by the layer itself, without a
    transaction, because ``max_transactions`` was reached. A ``SendMessage`` precedes it."""

    request: Request
    source: Peer
    status: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionTimedOut:
    """Timer B or F (client: act as on a 408, RFC 3261 §8.1.3.1) or Timer H (server: no ACK
    came for a 3xx-6xx final response) fired. ``TransactionTerminated`` follows."""

    transaction_key: TransactionKey


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportFailed:
    """The request of a client transaction could not be sent (a connection that could not
    be opened or is gone): RFC 3261 §17.1.4, the TU acts as on a 503 (§16.9 for a proxy)
    at once instead of waiting for Timer B/F. ``TransactionTerminated`` follows."""

    transaction_key: ClientKey


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class TransactionTerminated:
    """The transaction reached Terminated and was removed from the layer."""

    transaction_key: TransactionKey

    def __init__(self, *, transaction_key: TransactionKey) -> None:
        self.transaction_key = transaction_key  # type: ignore[misc]


interpreted_init(TransactionTerminated)


@dataclass(frozen=True, slots=True, kw_only=True)
class StrayResponse:
    """A response matching no client transaction: a proxy forwards it statelessly (RFC 3261
    §16.7), e.g. a 2xx retransmission after the ICT terminated; anyone else drops it."""

    response: Response
    source: Peer


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageDropped:
    """A message the layer could not use (a header it needs is missing or malformed)."""

    reason: str
    source: Peer | None = None


Output = (
    SendMessage
    | RequestReceived
    | ResponseReceived
    | AckReceived
    | CancelReceived
    | RequestRejected
    | TransactionTimedOut
    | TransportFailed
    | TransactionTerminated
    | StrayResponse
    | MessageDropped
)
