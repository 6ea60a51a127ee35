"""RFC 3261 §17 transactions, sans-IO: ``TransactionLayer`` and its outputs.

``layer.py`` matches messages to transactions and runs their timers;
``client.py`` (ICT, NICT) and ``server.py`` (IST, NIST) are the state tables;
``timers.py`` the timer values; ``events.py`` the outputs; ``keys.py`` the
matching keys; ``messages.py`` the Via, ACK and CANCEL the layer builds.
"""

from __future__ import annotations

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
    TransportFailed,
)
from sipwake.transaction.keys import (
    ClientKey,
    LegacyServerKey,
    ServerKey,
    ServerTransactionKey,
    TransactionKey,
)
from sipwake.transaction.layer import TransactionLayer, TransactionState
from sipwake.transaction.messages import add_via, build_ack, build_cancel
from sipwake.transaction.timers import Timer, TimerConfig

__all__ = [
    "AckReceived",
    "CancelReceived",
    "ClientKey",
    "LegacyServerKey",
    "MessageDropped",
    "Output",
    "RequestReceived",
    "RequestRejected",
    "ResponseReceived",
    "SendMessage",
    "ServerKey",
    "ServerTransactionKey",
    "StrayResponse",
    "Timer",
    "TimerConfig",
    "TransactionKey",
    "TransactionLayer",
    "TransactionState",
    "TransactionTerminated",
    "TransactionTimedOut",
    "TransportFailed",
    "add_via",
    "build_ack",
    "build_cancel",
]
