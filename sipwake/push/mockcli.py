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

Ports and files stay put, so a server is configured for the mocks once: APNs listens on
``--port`` (``MOCK_PUSH_PORT`` by default), FCM on the next port, Web Push on the one
after; the APNs key, the VAPID key, the service account and the TLS certificates (valid
a year) found in the directory are used again. ``sipwake replay --target`` starts its
mock APNs and FCM the same way (``sipwake.scenario.live``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sipwake.push.mock import MockApns, MockFcm, RecordedFcmMessage, RecordedPush, write_private
from sipwake.push.mock_webpush import MockWebPush, RecordedMessage
from sipwake.push.mockfaults import MockSet, apply_fault
from sipwake.sip.pushtarget import mask_token

__all__ = [
    "MOCK_PUSH_PORT",
    "apns_key",
    "mock_ports",
    "push_settings",
    "run_mock_push",
    "service_account",
    "vapid_key",
]

TEAM_ID = "TEAM123456"
KEY_ID = "KEY1234567"
PROJECT_ID = "sipwake-lab"


MOCK_PUSH_PORT = 18443
"""The default base port: APNs listens on it, FCM on the next, Web Push on the one after
(``sipwake mock-push`` and ``sipwake replay --target`` alike)."""
PROVIDERS = ("apns", "fcm", "webpush")


#: Request headers an app developer reads off a push (APNs, Web Push), in this order.
_APNS_HEADERS = (
    "apns-push-type",
    "apns-topic",
    "apns-priority",
    "apns-expiration",
    "apns-collapse-id",
    "apns-id",
)
_WEBPUSH_HEADERS = ("ttl", "urgency", "topic", "content-encoding", "content-length")


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), sort_keys=True)


def describe_apns(push: RecordedPush) -> list[str]:
    """What the mock APNs got, as the lines it prints: the headers that decide delivery,
    how it was authenticated (never the JWT itself), and the payload."""
    headers = " ".join(f"{h}={push.headers[h]}" for h in _APNS_HEADERS if h in push.headers)
    auth = "provider token (ES256 JWT, verified)" if push.jwt else "client certificate"
    return [f"headers: {headers}", f"auth: {auth}", f"payload: {_json(push.body)}"]


def describe_fcm(message: RecordedFcmMessage) -> list[str]:
    """What the mock FCM got: the ``message`` object, its token masked."""
    shown = {k: v for k, v in message.message.items() if k != "token"}
    return [f"message: {_json(shown)}"]


def describe_webpush(message: RecordedMessage) -> list[str]:
    """What the mock Web Push service got: headers and the size of the sealed body (RFC
    8291: only the browser can read it)."""
    headers = " ".join(
        f"{h}={message.headers[h]}" for h in _WEBPUSH_HEADERS if h in message.headers
    )
    vapid = "VAPID (verified)" if message.jwt else "none"
    return [f"headers: {headers}", f"auth: {vapid}", f"body: {len(message.body)} bytes encrypted"]


def mock_ports(base: int) -> dict[str, int]:
    """Each mock's port: APNs ``base``, FCM ``base + 1``, Web Push ``base + 2`` (0: any)."""
    return {p: base + i if base else 0 for i, p in enumerate(PROVIDERS)}


def _write_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    write_private(
        path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return key


def _p256_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The P-256 key in ``path``, made when missing or unreadable (kept across runs, so a
    server configured once with it keeps working)."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return _write_key(path)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        return _write_key(path)
    return key


def apns_key(directory: Path, key_id: str = KEY_ID) -> tuple[Path, bytes]:
    """The APNs signing key ``AuthKey_<key_id>.p8`` (kept) and its PEM public key."""
    path = directory / f"AuthKey_{key_id}.p8"
    public = (
        _p256_key(path)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return path, public


def vapid_key(directory: Path) -> Path:
    """The VAPID key ``vapid.pem`` (kept)."""
    path = directory / "vapid.pem"
    _p256_key(path)
    return path


def service_account(fcm: MockFcm, directory: Path) -> Path:
    """``service-account.json`` for ``fcm``'s token endpoint, accepted by it: the one in
    ``directory`` when it is for the same endpoint, else a new one."""
    path = directory / "service-account.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("token_uri") != fcm.token_uri:
            raise ValueError("another token endpoint")
        key = serialization.load_pem_private_key(doc["private_key"].encode(), password=None)
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        fcm.add_service_account(doc["client_email"], public, doc["private_key_id"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return fcm.new_service_account(directory).path
    return path


def push_settings(
    *,
    apns: MockApns,
    apns_key_file: Path,
    fcm: MockFcm,
    account: Path,
    bundle_id: str,
    vapid_file: Path | None = None,
    webpush_url: str | None = None,
    webpush_ca: Path | None = None,
    team_id: str = TEAM_ID,
    key_id: str = KEY_ID,
) -> dict[str, object]:
    """The ``push:`` section of a sipwake config that uses these mocks."""
    section: dict[str, object] = {
        "apns": {
            "team_id": team_id,
            "key_id": key_id,
            "key_file": str(apns_key_file),
            "bundle_id": bundle_id,
            "base_url": apns.base_url,
            "ca_file": str(apns.cert_file),
        },
        "fcm": {
            "service_account": str(account),
            "base_url": fcm.base_url,
            "ca_file": str(fcm.cert_file),
        },
    }
    if vapid_file is not None and webpush_url is not None:
        section["webpush"] = {
            "vapid_key_file": str(vapid_file),
            "subject": "mailto:lab@lab.test",
            "allowed_hosts": [urlsplit(webpush_url).hostname],
            "ca_file": str(webpush_ca),
        }
    return {"push": section}


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
    host: str = "127.0.0.1",
    port: int = 0,
) -> Path:
    """Serve until ``stop`` is set; returns the ``push.yaml`` written (for tests).

    The mocks listen on ``host``, APNs on ``port``, FCM on ``port + 1``, Web Push on
    ``port + 2`` (``port`` 0: any free ports). Keys, certificates and the service account
    already in ``directory`` are used again, so a server configured with ``push.yaml``
    once keeps working across runs. ``faults`` are applied before the services say they
    are ready (a bad one raises ``ValueError``); ``commands`` are fault commands arriving
    while they run."""
    directory = await asyncio.to_thread(_prepare, directory)
    key_file, public = apns_key(directory)
    vapid_file = vapid_key(directory)
    # A lab's phones are not introduced to the mocks: a token is bound to the topic (or
    # project) of its first push, and refused on any other from then on.
    apns = MockApns(
        directory,
        public_key=public,
        team_id=TEAM_ID,
        key_id=KEY_ID,
        host=host,
        learn_tokens=True,
    )
    fcm = MockFcm(directory, project_id=PROJECT_ID, host=host, learn_tokens=True)
    webpush = MockWebPush(directory, host=host)
    ports = mock_ports(port)
    for name, mock in (("apns", apns), ("fcm", fcm), ("webpush", webpush)):
        mock.port = ports[name]
        mock.reuse_cert = True
    async with apns, fcm, webpush:
        mocks = MockSet(apns=apns, fcm=fcm, webpush=webpush)
        for fault in faults:
            say(f"fault: {apply_fault(fault, mocks)}")
        section = push_settings(
            apns=apns,
            apns_key_file=key_file,
            fcm=fcm,
            account=service_account(fcm, directory),
            bundle_id=bundle_id,
            vapid_file=vapid_file,
            webpush_url=webpush.base_url,
            webpush_ca=webpush.cert_file,
        )
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
                for line in describe_apns(push):
                    say(f"  {line}")
            seen_apns = len(apns.pushes)
            for message in fcm.messages[seen_fcm:]:
                say(f"fcm push to {mask_token(message.token)}: accepted")
                for line in describe_fcm(message):
                    say(f"  {line}")
            seen_fcm = len(fcm.messages)
            for status, reason in apns.rejected[seen_refused:]:
                say(f"apns refused a push: {status} {reason}")
            seen_refused = len(apns.rejected)
            for web_message in webpush.messages[seen_web:]:
                urgency = web_message.headers.get("urgency", "normal")
                masked = mask_token(web_message.subscription)
                say(f"webpush {urgency} push to {masked}: accepted")
                for line in describe_webpush(web_message):
                    say(f"  {line}")
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
