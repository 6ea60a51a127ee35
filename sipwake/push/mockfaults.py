"""Faults for ``sipwake mock-push``, given as short commands at start (``--fault``) or
typed on its standard input while it runs:

    dead TOKEN                         APNs 410 Unregistered, FCM UNREGISTERED and Web
                                       Push 410 Gone for that token / subscription id
    fail apns STATUS REASON [retry-after=S] [times=N]
    fail fcm CODE [retry-after=S] [times=N]        (UNAVAILABLE, QUOTA_EXCEEDED, …)
    fail webpush STATUS [retry-after=S] [times=N]
    token apns TOKEN TOPIC             TOKEN is a device token of TOPIC (ORG.APP.voip: a
                                       PushKit VoIP token; ORG.APP: a remote one)
    token fcm TOKEN PROJECT            TOKEN is a registration token of PROJECT's app
    latency MS                         every answer of every mock waits MS milliseconds
    clear                              forget queued failures and added latency

A queued failure answers the next ``times`` requests (default 1) that pass every check.
Tokens the mocks were not told of are bound to the topic (APNs) or project (FCM) of their
first push; from then on a push on another topic gets ``DeviceTokenNotForTopic``, a
message through another project ``SENDER_ID_MISMATCH``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sipwake.push.mock import MockApns, MockFcm
from sipwake.push.mock_webpush import MockWebPush
from sipwake.sip.pushtarget import mask_token

__all__ = ["FAULT_HELP", "MockSet", "apply_fault"]

FAULT_HELP = __doc__.split("\n\n")[1] if __doc__ else ""


@dataclass(frozen=True, slots=True)
class MockSet:
    apns: MockApns
    fcm: MockFcm
    webpush: MockWebPush


def _options(words: list[str]) -> tuple[list[str], int | None, int]:
    """Split ``key=value`` options (retry-after, times) from positional words."""
    retry_after: int | None = None
    times = 1
    positional: list[str] = []
    for word in words:
        name, sep, value = word.partition("=")
        if not sep:
            positional.append(word)
            continue
        if not value.isdigit():
            raise ValueError(f"{name}: expected a whole number, got {value!r}")
        if name == "retry-after":
            retry_after = int(value)
        elif name == "times":
            times = max(1, int(value))
        else:
            raise ValueError(f"unknown option {name!r} (retry-after=S, times=N)")
    return positional, retry_after, times


def _status(text: str) -> int:
    if not text.isdigit() or not 400 <= int(text) <= 599:
        raise ValueError(f"expected an HTTP error status 400-599, got {text!r}")
    return int(text)


def apply_fault(command: str, mocks: MockSet) -> str:
    """Apply one fault command; what was done, in words. ``ValueError`` says what is wrong
    with a command that cannot be applied (nothing is changed then)."""
    words = command.split()
    if not words:
        raise ValueError("empty command")
    verb, rest = words[0].lower(), words[1:]
    if verb == "help":
        return f"commands:\n{FAULT_HELP}"
    if verb == "dead" and len(rest) == 1:
        token = rest[0]
        mocks.apns.unregister(token)
        mocks.fcm.unregister(token)
        mocks.webpush.expire(token)
        return f"token {mask_token(token)} is dead (410 / UNREGISTERED) from now on"
    if verb == "token" and len(rest) == 3 and rest[0].lower() in ("apns", "fcm"):
        service, token, owner = rest[0].lower(), rest[1], rest[2]
        if service == "apns":
            mocks.apns.issue_token(token, owner)
            return f"APNs token {mask_token(token)} belongs to topic {owner}"
        mocks.fcm.issue_token(token, owner)
        return f"FCM token {mask_token(token)} belongs to project {owner}"
    if verb == "latency" and len(rest) == 1:
        try:
            ms = float(rest[0])
        except ValueError:
            raise ValueError(f"latency: expected milliseconds, got {rest[0]!r}") from None
        if not 0 <= ms <= 60_000:
            raise ValueError("latency: 0 to 60000 ms")
        for mock in (mocks.apns, mocks.fcm, mocks.webpush):
            mock.latency = ms / 1000
        return f"every answer now waits {ms:g} ms"
    if verb == "clear" and not rest:
        mocks.apns.faults.clear()
        mocks.fcm.faults.clear()
        mocks.webpush.faults.clear()
        for mock in (mocks.apns, mocks.fcm, mocks.webpush):
            mock.latency = 0.0
        return "queued failures and latency cleared"
    if verb == "fail" and rest:
        service, (positional, retry_after, times) = rest[0].lower(), _options(rest[1:])
        after = f", Retry-After {retry_after} s" if retry_after is not None else ""
        if service == "apns" and len(positional) == 2:
            status = _status(positional[0])
            mocks.apns.fail_next(status, positional[1], retry_after=retry_after, times=times)
            return f"next {times} APNs push(es): {status} {positional[1]}{after}"
        if service == "fcm" and len(positional) == 1:
            code = positional[0].upper()
            mocks.fcm.fail_next(code, retry_after=retry_after, times=times)
            return f"next {times} FCM message(s): {code}{after}"
        if service == "webpush" and len(positional) == 1:
            status = _status(positional[0])
            mocks.webpush.fail_next(status, retry_after=retry_after, times=times)
            return f"next {times} Web Push message(s): {status}{after}"
    raise ValueError(f"cannot read {command!r}; commands:\n{FAULT_HELP}")
