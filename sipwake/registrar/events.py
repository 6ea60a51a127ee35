"""What happened to bindings: the registrar's outputs besides its responses.

Every change to the location service comes out as one of these facts, in the
order it happened, so that

* a store persists exactly the changes (upsert on ``BindingAdded``,
  ``BindingRefreshed``, ``PushTargetRemoved``; delete on ``BindingRemoved``,
  ``BindingExpired``) before the 200 OK is sent;
* the call-wake engine sees a device come back (``BindingAdded`` or
  ``BindingRefreshed`` of a binding it pushed: RFC 8599 §5.3 late forking)
  and stops pushing a device that went away (RFC 8599 §5.5: never push a
  PRID whose binding expired or was removed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sipwake.frozen import interpreted_init
from sipwake.registrar.bindings import Binding

__all__ = [
    "BindingAdded",
    "BindingExpired",
    "BindingRefreshed",
    "BindingRemoved",
    "PushTargetRemoved",
    "RegistrarEvent",
    "RemovalReason",
]

RemovalReason = Literal["unregistered", "limit", "removed"]
"""Why a binding went: ``unregistered`` by the client (``expires=0`` or
``Contact: *``, RFC 3261 §10.2.2), ``limit`` (oldest dropped to make room,
``max_bindings_per_aor``), ``removed`` (by the node: administration, a dead
flow without push…)."""


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class BindingAdded:
    """A new binding (no earlier binding of the same identity)."""

    binding: Binding

    def __init__(self, *, binding: Binding) -> None:
        self.binding = binding  # type: ignore[misc]


interpreted_init(BindingAdded)


@dataclass(frozen=True, slots=True, kw_only=True)
class BindingRefreshed:
    """An existing binding renewed or replaced by a REGISTER from the same device.

    ``binding.binding_id == previous.binding_id``. The contact, flow or push
    token may have changed (RFC 5626 §6 flow replacement, RFC 8599 §5.3).
    """

    binding: Binding
    previous: Binding

    @property
    def moved(self) -> bool:
        """The device is now reached elsewhere: new contact URI, flow or Path."""
        return (
            not self.binding.contact.equivalent(self.previous.contact)
            or self.binding.source != self.previous.source
            or self.binding.path != self.previous.path
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class BindingRemoved:
    """A binding removed before its expiry."""

    binding: Binding
    reason: RemovalReason


@dataclass(frozen=True, slots=True, kw_only=True)
class BindingExpired:
    """A binding reached its expiry time without a refresh (RFC 3261 §10.2.1)."""

    binding: Binding


@dataclass(frozen=True, slots=True, kw_only=True)
class PushTargetRemoved:
    """The binding stays but may no longer be pushed, or only with its other token (the
    provider said a token is dead: APNs 410 Unregistered, FCM UNREGISTERED; PROTOCOLS
    §8 item 4): ``binding.push`` is what is left."""

    binding: Binding
    previous: Binding


RegistrarEvent = (
    BindingAdded | BindingRefreshed | BindingRemoved | BindingExpired | PushTargetRemoved
)
