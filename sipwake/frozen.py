"""Quick construction of the frozen dataclasses made on every message.

Events, outputs and parsed values are ``@dataclass(frozen=True, slots=True,
kw_only=True)`` (STYLE.md §3). The ``__init__`` that ``dataclasses`` generates for
a frozen class sets each field through ``object.__setattr__`` (the class's own
``__setattr__`` refuses), and it is interpreted Python even in the compiled core:
mypyc compiles a class's methods but leaves the ones ``dataclasses`` generates at
import. Called through the type from compiled code, it costs about 1.4 µs for eight
fields; a written ``__init__`` that calls each slot's ``__set__`` costs 0.4 µs
compiled and 0.9 µs interpreted. A call went through 58 such constructors and a
REGISTER through 19, so the classes built on every message declare ``init=False``
and write that ``__init__``::

    @dataclass(frozen=True, slots=True, kw_only=True, init=False)
    class SendMessage:
        message: Request | Response
        peer: Peer
        data: bytes | None = field(default=None, compare=False, repr=False)

        def __init__(
            self, *, message: Request | Response, peer: Peer, data: bytes | None = None
        ) -> None:
            s = _SEND_MESSAGE_SLOTS
            s[0](self, message)
            s[1](self, peer)
            s[2](self, data)


    _SEND_MESSAGE_SLOTS = slot_setters(SendMessage)

Instances stay frozen (assigning a field raises ``FrozenInstanceError``) and keep the
generated ``__eq__``, ``__hash__`` and ``__repr__``; ``dataclasses.replace`` works as
before. The few mutable records made per call (the proxy's contexts and branches, the
wake engine's calls) write an ``__init__`` of plain assignments, for the same reason.
``tests/unit/test_frozen.py`` holds each such ``__init__`` to its fields: the same names,
keyword-only, the same defaults, every field set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

__all__ = ["SlotSetter", "slot_setters"]

SlotSetter = Callable[[Any, Any], None]


def slot_setters(cls: type) -> tuple[SlotSetter, ...]:
    """The ``__set__`` of the slot of each field of the slotted dataclass ``cls``, in the
    order the fields are declared."""
    return tuple(vars(cls)[f.name].__set__ for f in fields(cls))
