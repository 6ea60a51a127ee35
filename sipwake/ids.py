"""Identifier sources: where branch ids, tags, Call-IDs and nonces come from.

The sans-IO cores never draw random numbers themselves; they are handed an
``Ids`` (STYLE §1). ``SystemIds`` draws from the operating system's CSPRNG;
``SeededIds(seed)`` is repeatable, for tests and virtual-clock replays.
"""

from __future__ import annotations

import random
import secrets
from typing import Protocol

__all__ = ["BRANCH_MAGIC", "Ids", "SeededIds", "SystemIds"]

#: RFC 3261 §8.1.1.7: every branch we create starts with the magic cookie.
BRANCH_MAGIC = "z9hG4bK"

_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


class Ids(Protocol):
    """A source of fresh, unguessable identifiers."""

    def token(self, length: int = 16) -> str:
        """A random string of ``length`` characters from ``[a-z0-9]``."""
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


class SystemIds(_IdsBase):
    """Identifiers from the OS CSPRNG (production)."""

    def token(self, length: int = 16) -> str:
        return "".join(secrets.choice(_ALPHABET) for _ in range(length))

    def random_bytes(self, n: int) -> bytes:
        return secrets.token_bytes(n)


class SeededIds(_IdsBase):
    """Repeatable identifiers from a seed (tests, replays): same seed, same sequence."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)

    def token(self, length: int = 16) -> str:
        return "".join(self._rng.choice(_ALPHABET) for _ in range(length))

    def random_bytes(self, n: int) -> bytes:
        return self._rng.randbytes(n)
