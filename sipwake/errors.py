"""The errors sipwake raises, in one tree.

    SipwakeError
    ├── ProtocolError                 a SIP rule was broken
    │   ├── LocalProtocolError        by us (a bug, or a caller misusing an API)
    │   └── RemoteProtocolError       by a peer; carries ``status_hint`` (400, 505, …)
    │       └── SipParseError         bytes that are not a SIP message; ``reason`` fits a
    │                                 400 reason phrase
    ├── AuthError                     a digest challenge or credentials we cannot use
    ├── ConfigError(path, line, key)  a configuration file is wrong at file:line, key
    ├── ScenarioError(step, expected, got)
    │                                 a scenario expectation was missed
    └── PushError(provider, reason, retryable)
                                      a push provider refused or failed

Peer errors never unwind the sans-IO cores: they are caught at the edge and
turned into outputs (a 400 response, or ``MessageDropped``). ``SipParseError``
is the only exception the parser raises, whatever the bytes.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "ConfigError",
    "LocalProtocolError",
    "ProtocolError",
    "PushError",
    "RemoteProtocolError",
    "ScenarioError",
    "SipParseError",
    "SipwakeError",
]


class SipwakeError(Exception):
    """Base of every error sipwake raises on purpose."""


class ProtocolError(SipwakeError):
    """A SIP protocol rule was broken."""

    def __init__(self, reason: str, status_hint: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_hint = status_hint


class LocalProtocolError(ProtocolError):
    """We were asked to do something SIP does not allow (a bug in the caller)."""


class RemoteProtocolError(ProtocolError):
    """A peer sent something SIP does not allow; ``status_hint`` is the answer to give."""


class SipParseError(RemoteProtocolError):
    """Bytes that do not form a valid SIP message.

    ``reason`` says what and where, short enough for a 400 reason phrase:
    ``Via #2: expected 'SIP/2.0/<transport>', got 'SIP/3.0/UDP'``.
    ``partial`` is the message as far as it could be read (start line and
    header fields), when it got that far: enough for a server to answer 400.
    """

    def __init__(self, reason: str, status_hint: int = 400, *, partial: object = None) -> None:
        super().__init__(reason, status_hint)
        self.partial = partial


class AuthError(SipwakeError):
    """A digest challenge or credentials header that cannot be used."""


class ConfigError(SipwakeError):
    """A configuration file is wrong; names the file, the line and the key."""

    def __init__(self, message: str, *, path: str, line: int | None = None, key: str = "") -> None:
        where = path if line is None else f"{path}:{line}"
        text = f"{where}: {key}: {message}" if key else f"{where}: {message}"
        super().__init__(text)
        self.path = path
        self.line = line
        self.key = key
        self.message = message


class ScenarioError(SipwakeError):
    """A scenario expectation was not met."""

    def __init__(self, step: str, expected: str, got: str) -> None:
        super().__init__(f"{step}: expected {expected}, got {got}")
        self.step = step
        self.expected = expected
        self.got = got


class PushError(SipwakeError):
    """A push provider refused or failed; ``retryable`` says whether to try again."""

    def __init__(self, provider: str, reason: str, *, retryable: bool) -> None:
        super().__init__(f"{provider}: {reason}")
        self.provider = provider
        self.reason = reason
        self.retryable = retryable


def cut(text: str, limit: int = 80) -> str:
    """A raw value shortened for an error message (80 characters)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
