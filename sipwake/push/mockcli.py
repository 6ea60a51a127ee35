"""``sipwake mock-push``: local stand-ins for APNs, FCM and a Web Push service, for labs
without Apple, Google or a browser vendor.

It starts the mock APNs, mock FCM and mock Web Push service (HTTP/2 over TLS on
127.0.0.1, checking what the real services check: ES256 provider tokens, topics, push
types, OAuth2 assertions, VAPID, ``aes128gcm`` bodies, payload sizes), writes what a
sipwake server needs to use them into a directory — the APNs signing key, an FCM
service-account file, a VAPID key, the mocks' certificates and a ``push.yaml`` with the
matching ``push:`` section — and prints every push it accepts or refuses (tokens and
subscriptions masked) until it is stopped. Web Push subscriptions are made over HTTP
(RFC 8030 §4: ``POST <url>/subscribe``, the endpoint in the ``Link`` header). Faults
(dead tokens, error answers with Retry-After, latency: ``sipwake.push.mockfaults``)
are given at start and as commands while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sipwake.push.mock import MockApns, MockFcm
from sipwake.push.mock_webpush import MockWebPush
from sipwake.push.mockfaults import MockSet, apply_fault
from sipwake.sip.pushtarget import mask_token

__all__ = ["run_mock_push"]

TEAM_ID = "TEAM123456"
KEY_ID = "KEY1234567"
PROJECT_ID = "sipwake-lab"


def _apns_key(directory: Path) -> tuple[Path, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    path = directory / f"AuthKey_{KEY_ID}.p8"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return path, public


def _vapid_key(directory: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    path = directory / "vapid.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def _prepare(directory: Path) -> Path:
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    return directory


async def run_mock_push(
    directory: Path,
    *,
    bundle_id: str,
    say: Callable[[str], None],
    stop: asyncio.Event,
    poll_s: float = 0.2,
    faults: Sequence[str] = (),
    commands: asyncio.Queue[str] | None = None,
) -> Path:
    """Serve until ``stop`` is set; returns the ``push.yaml`` written (for tests).

    ``faults`` are applied before the services say they are ready (a bad one raises
    ``ValueError``); ``commands`` are fault commands arriving while they run."""
    directory = await asyncio.to_thread(_prepare, directory)
    key_file, public = _apns_key(directory)
    vapid_file = _vapid_key(directory)
    async with (
        MockApns(directory, public_key=public, team_id=TEAM_ID, key_id=KEY_ID) as apns,
        MockFcm(directory, project_id=PROJECT_ID) as fcm,
        MockWebPush(directory) as webpush,
    ):
        mocks = MockSet(apns=apns, fcm=fcm, webpush=webpush)
        for fault in faults:
            say(f"fault: {apply_fault(fault, mocks)}")
        account = fcm.new_service_account(directory)
        section = {
            "push": {
                "apns": {
                    "team_id": TEAM_ID,
                    "key_id": KEY_ID,
                    "key_file": str(key_file),
                    "bundle_id": bundle_id,
                    "base_url": apns.base_url,
                    "ca_file": str(apns.cert_file),
                },
                "fcm": {
                    "service_account": str(account.path),
                    "base_url": fcm.base_url,
                    "ca_file": str(fcm.cert_file),
                },
                "webpush": {
                    "vapid_key_file": str(vapid_file),
                    "subject": "mailto:lab@lab.test",
                    "allowed_hosts": [urlsplit(webpush.base_url).hostname],
                    "ca_file": str(webpush.cert_file),
                },
            }
        }
        snippet = directory / "push.yaml"
        snippet.write_text(yaml.safe_dump(section, sort_keys=False))
        say(f"mock APNs at {apns.base_url} (team {TEAM_ID}, key {KEY_ID})")
        say(f"mock FCM at {fcm.base_url} (project {PROJECT_ID})")
        say(f"mock Web Push at {webpush.base_url} (subscribe: POST {webpush.base_url}/subscribe)")
        say(f"ready: push settings for sipwake in {snippet}")
        seen_apns = seen_fcm = seen_refused = seen_web = seen_web_refused = 0
        while not stop.is_set():
            for push in apns.pushes[seen_apns:]:
                kind = push.headers.get("apns-push-type", "?")
                say(f"apns {kind} push to {mask_token(push.token)}: accepted")
            seen_apns = len(apns.pushes)
            for message in fcm.messages[seen_fcm:]:
                say(f"fcm push to {mask_token(message.token)}: accepted")
            seen_fcm = len(fcm.messages)
            for status, reason in apns.rejected[seen_refused:]:
                say(f"apns refused a push: {status} {reason}")
            seen_refused = len(apns.rejected)
            for web_message in webpush.messages[seen_web:]:
                urgency = web_message.headers.get("urgency", "normal")
                masked = mask_token(web_message.subscription)
                say(f"webpush {urgency} push to {masked}: accepted")
            seen_web = len(webpush.messages)
            for status, text in webpush.rejected[seen_web_refused:]:
                say(f"webpush refused a push: {status} {text}")
            seen_web_refused = len(webpush.rejected)
            while commands is not None and not commands.empty():
                command = commands.get_nowait()
                if not command.strip():
                    continue
                try:
                    say(f"fault: {apply_fault(command, mocks)}")
                except ValueError as exc:
                    say(f"error: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll_s)
    return snippet
