"""The registrar: bindings per address-of-record (RFC 3261 §10, RFC 5626, RFC 8599).

Pure code: time comes in as ``now``, ids from an injected ``Ids``; it never
does I/O and never logs.
"""

from __future__ import annotations

from sipwake.registrar.bindings import Binding, PushKey
from sipwake.registrar.config import DEFAULT_PUSH_PROVIDERS, RegistrarConfig
from sipwake.registrar.events import (
    BindingAdded,
    BindingExpired,
    BindingRefreshed,
    BindingRemoved,
    PushTargetRemoved,
    RegistrarEvent,
    RemovalReason,
)
from sipwake.registrar.registrar import RegisterResult, Registrar

__all__ = [
    "DEFAULT_PUSH_PROVIDERS",
    "Binding",
    "BindingAdded",
    "BindingExpired",
    "BindingRefreshed",
    "BindingRemoved",
    "PushKey",
    "PushTargetRemoved",
    "RegisterResult",
    "Registrar",
    "RegistrarConfig",
    "RegistrarEvent",
    "RemovalReason",
]
