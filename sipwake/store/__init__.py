"""Where bindings survive restarts: the ``BindingStore`` contract and its backends.

Ordinary (synchronous) I/O code, written through by the node after each
registrar change and read once at start.
"""

from __future__ import annotations

from sipwake.store.base import BindingStore, CallLog, PushLog, StoreError, net_writes
from sipwake.store.memory import MemoryStore
from sipwake.store.sqlite import SCHEMA_VERSION, SqliteStore

__all__ = [
    "SCHEMA_VERSION",
    "BindingStore",
    "CallLog",
    "MemoryStore",
    "PushLog",
    "SqliteStore",
    "StoreError",
    "net_writes",
]
