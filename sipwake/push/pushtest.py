"""``sipwake push-test``: one real push to a registered device, and the provider's answer.

What an app developer reaches for every day: "does my device's token still work with
these credentials?". The device is found in the server's binding store (read only: the
running server's file is never written), the push goes through the providers the
configuration names (APNs, FCM, Web Push, a webhook; the mocks of ``sipwake mock-push``
through its ``push.yaml``), and each answer is printed as the provider gave it. A device
whose service has no provider configured is not pushed: the sandbox would take it and
wake nobody, which is not a test of anything.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from sipwake.config import Config
from sipwake.push.base import PushKind, PushOutcome, PushRequest
from sipwake.push.configure import providers_from_config
from sipwake.push.registry import PushProviders, route_key
from sipwake.registrar.bindings import Binding
from sipwake.server import load_secret
from sipwake.sip.pushtarget import PushTarget
from sipwake.store.base import StoreError
from sipwake.store.codec import COLUMNS, BindingRow, decode

__all__ = ["PushTestError", "find_devices", "push_test"]


class PushTestError(Exception):
    """Nothing to push, or nothing to push with; the message says which and what to do."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Tested:
    binding: Binding
    target: PushTarget
    """The single token pushed (an iOS app's VoIP or remote token)."""
    route: str
    provider: str
    outcome: PushOutcome


def _read_bindings(db: Path) -> list[Binding]:
    """The unexpired bindings in ``db``, opened read-only."""
    if not db.exists():
        raise PushTestError(
            f"{db}: no such database (the server's bindings: sipwake serve writes "
            "./sipwake.db, or give --db FILE)"
        )
    wall = time.time()
    try:
        connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            rows = connection.execute(
                f"SELECT {', '.join(COLUMNS)} FROM bindings WHERE expires_wall > ? "
                "ORDER BY aor, registered_wall",
                (wall,),
            ).fetchall()
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise PushTestError(f"{db}: cannot read the bindings ({exc})") from exc
    bindings = []
    for values in rows:
        row = BindingRow(**dict(zip(COLUMNS, values, strict=True)))
        try:
            bindings.append(decode(row, 0.0, wall))
        except StoreError:
            continue
    return bindings


def find_devices(bindings: list[Binding], target: str, domain: str) -> list[Binding]:
    """The pushable bindings ``target`` names: a user (``bob``), an AOR
    (``sip:bob@lab.test``), a device's ``+sip.instance`` or the start of its push token
    (at least 6 characters)."""
    aor = target if target.startswith(("sip:", "sips:")) else f"sip:{target}"
    if "@" not in aor:
        aor = f"{aor}@{domain}"
    pushable = [b for b in bindings if b.push is not None]
    by_user = [b for b in pushable if b.aor == aor]
    if by_user:
        return by_user
    by_instance = [b for b in pushable if b.instance is not None and target in b.instance]
    if by_instance:
        return by_instance
    if len(target) >= 6:
        return [b for b in pushable if b.push is not None and b.push.prid.startswith(target)]
    return []


def _request(binding: Binding, kind: PushKind) -> PushRequest | None:
    """The test push, to the token its kind goes to (an iOS app's VoIP token for a call,
    its remote token for an alert); None when the device has no such token."""
    assert binding.push is not None
    target = binding.push.channel("call" if kind == "call" else "alert")
    if target is None:
        return None
    test_id = uuid.uuid4()
    return PushRequest(
        kind=kind,
        target=target,
        call_id=f"push-test-{test_id.hex[:12]}@sipwake",
        caller="sipwake push-test",
        call_uuid=str(test_id),
        body="sipwake push-test" if kind != "call" else None,
        caller_number="push-test",
        seal_key=binding.seal_key,
    )


async def push_test(
    config: Config,
    db: Path,
    target: str,
    *,
    kind: PushKind = "call",
    say: Callable[[str], None] = print,
) -> list[Tested]:
    """Push every device ``target`` names (see ``find_devices``) once; ``PushTestError``
    when there is none, or no provider for its service."""
    bindings = _read_bindings(db)
    devices = find_devices(bindings, target, config.domain)
    if not devices:
        known = sorted({b.aor for b in bindings if b.push is not None})
        listed = ", ".join(known) if known else "none"
        raise PushTestError(
            f"no registered device with push parameters matches {target!r} in {db} "
            f"(users with pushable devices: {listed})"
        )
    providers: PushProviders = providers_from_config(
        config.push, secret=load_secret(config.secret_file), log=None
    )
    results: list[Tested] = []
    try:
        for binding in devices:
            assert binding.push is not None
            route = route_key(binding.push)
            name, provider = providers.provider_for(binding.push)
            if provider is providers.fallback and name == "sandbox":
                raise PushTestError(
                    f"{binding.aor}: its device pushes through {route}, and the configuration "
                    f"has no provider for it (push.{route.split('.')[0]}): the sandbox would "
                    "take the push and wake nobody. Configure the service, or run `sipwake "
                    "mock-push` and add its push.yaml to the configuration"
                )
            request = _request(binding, kind)
            if request is None:
                raise PushTestError(
                    f"{binding.aor}: its device registered no remote-notification token, so "
                    f"it gets no {kind} push (alerts never go to a VoIP token: APNs answers "
                    "DeviceTokenNotForTopic); try --kind call"
                )
            outcome = await providers.send(request, binding_id=binding.binding_id, aor=binding.aor)
            results.append(
                Tested(
                    binding=binding,
                    target=request.target,
                    route=route,
                    provider=name,
                    outcome=outcome,
                )
            )
            say(describe(results[-1], kind))
            if outcome.http_status is None and outcome.status != "delivered":
                say(
                    f"  cannot reach {name} at {endpoint(name, binding, config)}: "
                    f"{outcome.reason or 'no answer'} (is the address right, and does it "
                    "listen? the push was not delivered)"
                )
    finally:
        await providers.close()
    return results


def describe(tested: Tested, kind: PushKind) -> str:
    """One line: which device, through what, and the provider's answer."""
    binding, outcome = tested.binding, tested.outcome
    assert binding.push is not None
    device = binding.instance or str(binding.forward_uri())
    answer: str = outcome.status
    if outcome.http_status is not None and outcome.status != "delivered":
        answer += f" (HTTP {outcome.http_status}"
        answer += f" {outcome.reason})" if outcome.reason else ")"
    elif outcome.reason:
        answer += f" ({outcome.reason})"
    extra = f", apns-id {outcome.apns_id}" if outcome.apns_id else ""
    note = ""
    if outcome.status == "invalid_target":
        note = "; a running server drops this device's push target at its next push"
    return (
        f"{binding.aor} {device}: {kind} push to {tested.target.masked()} via "
        f"{tested.provider}: {answer} in {outcome.latency * 1000:.1f} ms{extra}{note}"
    )


def endpoint(provider: str, binding: Binding, config: Config) -> str:
    """Where ``provider`` sends a push for ``binding`` (for a message that says it cannot
    be reached): the configured URL, or the service's own; no credentials, no query."""
    push = config.push
    if provider == "apns" and push.apns is not None:
        if push.apns.base_url:
            return push.apns.base_url
        sandbox = push.apns.environment == "sandbox" or (
            binding.push is not None and (binding.push.sandbox)
        )
        return "https://api.sandbox.push.apple.com" if sandbox else "https://api.push.apple.com"
    if provider == "fcm" and push.fcm is not None:
        return push.fcm.base_url or "https://fcm.googleapis.com"
    if provider == "webhook" and push.webhook is not None:
        parts = urlsplit(push.webhook.url)
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"
    if binding.push is not None and binding.push.prid.startswith("https://"):
        parts = urlsplit(binding.push.prid)
        return f"https://{parts.hostname}"
    return provider


def db_of(config: Config, db: str | None) -> Path:
    """The binding store to read: ``--db``, else the configuration's."""
    return Path(db) if db else Path(os.fspath(config.store.path))
