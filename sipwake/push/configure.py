"""Push providers from the ``push:`` section of the configuration.

Nothing configured: every push goes to the in-process sandbox (records it, reports it
delivered), so ``sipwake serve`` wakes nobody but shows what would have been sent.
A webhook for ``all`` takes every push without a service of its own; APNs, FCM and Web
Push get their routes when their keys are given.
"""

from __future__ import annotations

import hashlib
import hmac
import ssl
import time
from pathlib import Path

from sipwake.config import ApnsConfig, PushConfig
from sipwake.errors import ConfigError
from sipwake.push.base import PushProvider
from sipwake.push.payload import ApnsSettings
from sipwake.push.registry import PushProviders, build_push_providers
from sipwake.push.sandbox import SandboxProvider
from sipwake.store.base import PushLog

__all__ = ["providers_from_config", "webhook_secret"]


def webhook_secret(secret: bytes) -> str:
    """The webhook HMAC key derived from the server secret (when none is configured)."""
    return hmac.new(secret, b"sipwake webhook", hashlib.sha256).hexdigest()


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what}: {exc.strerror}", path=str(path)) from exc


def _trust(ca_file: Path | None) -> ssl.SSLContext | None:
    if ca_file is None:
        return None
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load CA file: {exc}", path=str(ca_file)) from exc
    return context


def _apns_with_certificate(
    settings: ApnsSettings, cert_file: Path, key_file: Path | None, config: ApnsConfig
) -> PushProvider:
    """APNs with certificate auth; a certificate or key that cannot be used is a
    ``ConfigError`` naming the file (never its contents)."""
    from sipwake.push.apns import ApnsProvider

    for path, what in ((cert_file, "APNs certificate"), (key_file, "APNs certificate key")):
        if path is not None:
            _read(path, what)
    try:
        return ApnsProvider(
            settings,
            client_cert=cert_file,
            client_key=key_file,
            base_url=config.base_url,
            ssl_context=_trust(config.ca_file),
        )
    except (OSError, ssl.SSLError) as exc:
        # ssl names only what went wrong (e.g. KEY_VALUES_MISMATCH), never key material.
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise ConfigError(
            f"cannot use the APNs client certificate: {reason}", path=str(cert_file)
        ) from None


def providers_from_config(
    config: PushConfig,
    *,
    secret: bytes,
    log: PushLog | None,
    sandbox: SandboxProvider | None = None,
) -> PushProviders:
    """Build every configured provider (their connections open lazily, on first push)."""
    apns: PushProvider | None = None
    webpush: PushProvider | None = None
    webhook: PushProvider | None = None
    if config.apns is not None:
        from sipwake.push.apns import ApnsProvider

        a = config.apns
        settings = ApnsSettings(
            team_id=a.team_id or "",
            key_id=a.key_id or "",
            bundle_id=a.bundle_id,
            environment=a.environment,
        )
        if a.cert_file is not None:
            apns = _apns_with_certificate(settings, a.cert_file, a.cert_key_file, a)
        else:
            assert a.key_file is not None  # ApnsConfig: token auth has all three fields
            apns = ApnsProvider(
                settings,
                private_key=_read(a.key_file, "APNs key"),
                base_url=a.base_url,
                ssl_context=_trust(a.ca_file),
            )
    fcm: PushProvider | None = None
    if config.fcm is not None:
        from sipwake.push.fcm import FcmProvider

        f = config.fcm
        if not f.service_account.is_file():
            raise ConfigError("FCM service account file not found", path=str(f.service_account))
        fcm = FcmProvider(
            f.service_account,
            base_url=f.base_url,
            token_uri=f.token_uri,
            ssl_context=_trust(f.ca_file),
        )
    if config.webpush is not None:
        from sipwake.push.webpush import DEFAULT_PUSH_HOSTS, WebPushProvider

        w = config.webpush
        webpush = WebPushProvider(
            _read(w.vapid_key_file, "VAPID key"),
            w.subject,
            ssl_context=_trust(w.ca_file),
            allowed_hosts=tuple(w.allowed_hosts) if w.allowed_hosts else DEFAULT_PUSH_HOSTS,
        )
    if config.webhook is not None:
        from sipwake.push.webhook import WebhookProvider

        h = config.webhook
        webhook = WebhookProvider(
            h.url, h.secret or webhook_secret(secret), clock=time.time, timeout_s=h.timeout_s
        )
    routes = config.webhook.routes if config.webhook is not None else "all"
    return build_push_providers(
        apns=apns,
        fcm=fcm,
        webpush=webpush,
        webhook=webhook,
        webhook_for=routes,
        sandbox=sandbox,
        log=log,
    )
