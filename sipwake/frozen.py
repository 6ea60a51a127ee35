"""Quick construction of the frozen dataclasses made on every message.

Events, outputs and parsed values are ``@dataclass(frozen=True, slots=True,
kw_only=True)`` (STYLE.md §3). The ``__init__`` that ``dataclasses`` generates for
a frozen class sets each field through ``object.__setattr__`` (the class's own
``__setattr__`` refuses), and it is interpreted Python even in the compiled core:
mypyc compiles a class's methods but leaves the ones ``dataclasses`` generates at
import. Called from compiled code it costs about 1.4 µs for eight fields, and a call
goes through some 200 field stores, a REGISTER through 100. So the classes built on
every message declare ``init=False`` and write their ``__init__`` as plain stores,
then hand the class to ``interpreted_init``::

    @dataclass(frozen=True, slots=True, kw_only=True, init=False)
    class SendMessage:
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

Compiled, those stores are native: a slot written directly, without a call (the
class's frozen ``__setattr__`` is not consulted, and stays in force for everyone
else). Interpreted, the frozen class refuses them, so ``interpreted_init`` puts in
place an ``__init__`` of the same signature that sets each slot through its
descriptor's ``__set__`` (0.9 µs for eight fields against 1.4). The ``type: ignore``
is mypy seeing a store into a frozen field, which only this pattern may do.

The written body must store each parameter, unchanged, in the field of the same
name and do nothing else (the interpreted replacement does exactly that);
``tests/unit/test_frozen.py`` reads each body to hold it to that, and holds both
versions to the fields: the same names, keyword-only, the same defaults, every field
set, still frozen. Instances keep the generated ``__eq__``, ``__hash__`` and
``__repr__``; ``dataclasses.replace`` works as before. The few mutable records made
per call (the proxy's contexts and branches, the wake engine's calls) write an
``__init__`` of plain assignments, for the same reason, and need nothing more.
"""

from __future__ import annotations

import inspect
from dataclasses import fields
from types import FunctionType
from typing import TypeVar

__all__ = ["interpreted_init"]

T = TypeVar("T", bound=type)


def interpreted_init(cls: T) -> T:
    """When ``cls``'s module runs interpreted, replace its written ``__init__`` (field
    stores, which its frozen ``__setattr__`` refuses) by one with the same signature that
    sets each slot through its descriptor. Compiled, the written one is kept."""
    written = vars(cls)["__init__"]
    if not isinstance(written, FunctionType):  # compiled by mypyc: its stores are native
        return cls
    params = list(inspect.signature(written).parameters.values())[1:]
    names = [p.name for p in params]
    if sorted(names) != sorted(f.name for f in fields(cls)):
        raise TypeError(f"{cls.__qualname__}.__init__ takes {names}, not its fields")
    namespace: dict[str, object] = {}
    for p in params:
        namespace[f"_set_{p.name}"] = vars(cls)[p.name].__set__
        namespace[f"_default_{p.name}"] = p.default
    signature = ", ".join(
        p.name if p.default is inspect.Parameter.empty else f"{p.name}=_default_{p.name}"
        for p in params
    )
    body = "".join(f"    _set_{name}(self, {name})\n" for name in names)
    # Source, as ``dataclasses`` builds its methods: a function with this exact signature
    # runs as fast as a written one, where a generic ``**kwargs`` loop would not.
    exec(f"def __init__(self, *, {signature}):\n{body}", namespace)
    init = namespace["__init__"]
    assert isinstance(init, FunctionType)
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = written.__doc__
    init.__annotations__ = written.__annotations__
    init.__wrapped__ = written  # type: ignore[attr-defined]
    cls.__init__ = init  # type: ignore[misc]
    return cls
