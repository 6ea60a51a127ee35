"""Identifier sources: where branch ids, tags, Call-IDs and nonces come from.

The sans-IO cores never draw random numbers themselves; they are handed an
``Ids`` (STYLE §1). ``SystemIds`` draws from the operating system's CSPRNG;
``SeededIds(seed)`` is repeatable, for tests and virtual-clock replays.
"""

from __future__ import annotations

import os
import random
from typing import Protocol

__all__ = ["BRANCH_MAGIC", "Ids", "SeededIds", "SystemIds"]

#: RFC 3261 §8.1.1.7: every branch we create starts with the magic cookie.
BRANCH_MAGIC = "z9hG4bK"


class Ids(Protocol):
    """A source of fresh, unguessable identifiers."""

    def token(self, length: int = 16) -> str:
        """A random string of ``length`` lower-case hex digits."""
        ...

    def random_bytes(self, n: int) -> bytes:
        """``n`` random octets (secrets, cnonces)."""
        ...

    def branch(self) -> str:
        """A fresh Via branch parameter, with the RFC 3261 magic cookie."""
        ...

    def tag(self) -> str:
        """A fresh From/To tag."""
        ...

    def call_id(self) -> str:
        """A fresh Call-ID."""
        ...


class _IdsBase:
    def token(self, length: int = 16) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def random_bytes(self, n: int) -> bytes:  # pragma: no cover - overridden
        raise NotImplementedError

    def branch(self) -> str:
        return BRANCH_MAGIC + self.token(16)

    def tag(self) -> str:
        return self.token(10)

    def call_id(self) -> str:
        return self.token(20)


def _hex(data: bytes, length: int) -> str:
    return data.hex()[:length]


class SystemIds(_IdsBase):
    """Identifiers from the OS CSPRNG (production), read 4 KiB at a time."""

    def __init__(self) -> None:
        self._pool = b""
        self._pos = 0

    def token(self, length: int = 16) -> str:
        n = (length + 1) // 2
        if self._pos + n > len(self._pool):
            self._pool = os.urandom(4096)
            self._pos = 0
        chunk = self._pool[self._pos : self._pos + n]
        self._pos += n
        return _hex(chunk, length)

    def random_bytes(self, n: int) -> bytes:
        return os.urandom(n)


class SeededIds(_IdsBase):
    """Repeatable identifiers from a seed (tests, replays): same seed, same sequence."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)

    def token(self, length: int = 16) -> str:
        return _hex(self._rng.randbytes((length + 1) // 2), length)

    def random_bytes(self, n: int) -> bytes:
        return self._rng.randbytes(n)
