"""What an object holds, interpreted or compiled by mypyc (tests/integration/test_compiled.py)."""

from __future__ import annotations


def attributes(obj: object) -> list[object]:
    """The values of ``obj``'s instance attributes: its ``__dict__``, or, compiled by mypyc
    (no ``__dict__``), the attributes mypyc lists for its class."""
    names = getattr(type(obj), "__mypyc_attrs__", None)
    if names is None:
        return list(vars(obj).values())
    return [getattr(obj, n) for n in names if n != "__dict__" and hasattr(obj, n)]
