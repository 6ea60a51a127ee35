"""APNs certificate auth (PROTOCOLS.md §3.4) against the mock APNs in mutual-TLS mode:
real HTTP/2 over TLS on 127.0.0.1, a CA and client certificates made here."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sipwake.config import PushConfig
from sipwake.errors import ConfigError
from sipwake.push.apns import ApnsProvider
from sipwake.push.base import PushKind, PushRequest
from sipwake.push.configure import providers_from_config
from sipwake.push.mock import MockApns
from sipwake.push.payload import ApnsSettings
from sipwake.sip.pushtarget import PushTarget

pytestmark = pytest.mark.timeout(30)

BUNDLE = "org.lab.phone"
TOKEN = "0f1e2d3c" * 8
REMOTE = "4b5a6978" * 8


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class Ca:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    path: Path

    def issue(self, directory: Path, stem: str, *, uid: str) -> tuple[Path, Path]:
        """A client certificate for app ``uid`` (as Apple's: UID = bundle id)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.USER_ID, uid),
                x509.NameAttribute(NameOID.COMMON_NAME, f"VoIP Services: {uid}"),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(_pem_key(key))
        return cert_path, key_path


def _make_ca(directory: Path, name: str) -> Ca:
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Ca(cert=cert, key=key, path=path)


@dataclass
class Lab:
    mock: MockApns
    ca: Ca
    directory: Path


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    ca = _make_ca(tmp_path / "ca", "Lab Apple CA")
    async with MockApns(tmp_path / "tls", client_ca=ca.path) as mock:
        mock.issue_token(TOKEN, f"{BUNDLE}.voip")
        mock.issue_token(REMOTE, BUNDLE)
        yield Lab(mock=mock, ca=ca, directory=tmp_path)


def _push(kind: PushKind = "call") -> PushRequest:
    prid = f"{TOKEN}:voip&{REMOTE}:remote"  # calls to the VoIP token, alerts to the other
    target = PushTarget(provider="apns", prid=prid, param=f"TEAM123456.{BUNDLE}.voip&remote")
    return PushRequest(kind=kind, target=target, call_id="c1@lab", caller="Alice")


def _provider(lab: Lab, cert: Path, key: Path | None) -> ApnsProvider:
    return ApnsProvider(
        ApnsSettings(bundle_id=BUNDLE, environment="sandbox"),
        client_cert=cert,
        client_key=key,
        base_url=lab.mock.base_url,
        ssl_context=lab.mock.client_ssl(),
        timeout=5.0,
    )


async def test_push_with_client_certificate_is_accepted_without_a_jwt(lab: Lab) -> None:
    cert, key = lab.ca.issue(lab.directory, "voip", uid=BUNDLE)
    provider = _provider(lab, cert, key)
    try:
        assert provider.uses_certificate
        call = await provider.send(_push("call"))
        cancel = await provider.send(_push("cancel"))
    finally:
        await provider.close()
    assert call.status == "delivered", call
    assert cancel.status == "delivered", cancel
    voip, alert = lab.mock.pushes
    assert "authorization" not in voip.headers
    assert "authorization" not in alert.headers
    assert voip.jwt == ""
    assert provider.tokens_minted == 0
    assert voip.headers["apns-topic"] == f"{BUNDLE}.voip"
    assert voip.headers["apns-push-type"] == "voip"
    assert alert.headers["apns-topic"] == BUNDLE
    assert voip.client_cert is not None
    assert BUNDLE in voip.client_cert
    assert voip.connection == alert.connection  # one connection carries both


async def test_certificate_and_key_in_one_pem_file(lab: Lab) -> None:
    cert, key = lab.ca.issue(lab.directory, "voip", uid=BUNDLE)
    combined = lab.directory / "combined.pem"
    combined.write_bytes(cert.read_bytes() + key.read_bytes())
    provider = _provider(lab, combined, None)
    try:
        outcome = await provider.send(_push())
    finally:
        await provider.close()
    assert outcome.status == "delivered", outcome


async def test_request_without_certificate_or_token_is_refused_403(lab: Lab) -> None:
    async with httpx.AsyncClient(http2=True, verify=lab.mock.client_ssl()) as client:
        answer = await client.post(
            f"{lab.mock.base_url}/3/device/{TOKEN}",
            headers={"apns-topic": f"{BUNDLE}.voip", "apns-push-type": "voip"},
            content=b'{"aps":{}}',
        )
    assert answer.http_version == "HTTP/2"
    assert answer.status_code == 403
    assert answer.json() == {"reason": "MissingProviderToken"}
    assert lab.mock.pushes == []
    assert lab.mock.rejected == [(403, "MissingProviderToken")]


async def test_certificate_of_another_ca_is_refused(lab: Lab) -> None:
    rogue = _make_ca(lab.directory / "rogue", "Rogue CA")
    cert, key = rogue.issue(lab.directory, "rogue", uid=BUNDLE)
    provider = _provider(lab, cert, key)
    try:
        outcome = await provider.send(_push())
    finally:
        await provider.close()
    assert outcome.status != "delivered"
    assert outcome.reason is not None
    assert outcome.reason.startswith("transport:")
    assert lab.mock.pushes == []


async def test_certificate_of_another_app_may_not_push_to_this_topic(lab: Lab) -> None:
    cert, key = lab.ca.issue(lab.directory, "other", uid="org.other.app")
    provider = _provider(lab, cert, key)
    try:
        outcome = await provider.send(_push())
    finally:
        await provider.close()
    assert outcome.status == "error"
    assert (outcome.http_status, outcome.reason) == (400, "TopicDisallowed")
    assert lab.mock.pushes == []


async def test_push_config_with_certificate_builds_a_certificate_provider(lab: Lab) -> None:
    cert, key = lab.ca.issue(lab.directory, "voip", uid=BUNDLE)
    assert lab.mock.cert_file is not None
    config = PushConfig.model_validate(
        {
            "apns": {
                "cert_file": str(cert),
                "cert_key_file": str(key),
                "bundle_id": BUNDLE,
                "base_url": lab.mock.base_url,
                "ca_file": str(lab.mock.cert_file),
            }
        }
    )
    providers = providers_from_config(config, secret=b"s" * 32, log=None)
    try:
        outcome = await providers.send(_push())
    finally:
        await providers.close()
    assert outcome.status == "delivered", outcome
    [push] = lab.mock.pushes
    assert "authorization" not in push.headers


def test_unusable_certificate_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    ca = _make_ca(tmp_path / "ca", "Lab Apple CA")
    cert, _ = ca.issue(tmp_path, "voip", uid=BUNDLE)
    _, other_key = ca.issue(tmp_path, "other", uid=BUNDLE)
    config = PushConfig.model_validate(
        {"apns": {"cert_file": str(cert), "cert_key_file": str(other_key), "bundle_id": BUNDLE}}
    )
    with pytest.raises(ConfigError) as caught:
        providers_from_config(config, secret=b"s" * 32, log=None)
    assert str(cert) in str(caught.value)
    assert "certificate" in str(caught.value)
    missing = PushConfig.model_validate(
        {"apns": {"cert_file": str(tmp_path / "nope.pem"), "bundle_id": BUNDLE}}
    )
    with pytest.raises(ConfigError, match=r"nope\.pem"):
        providers_from_config(missing, secret=b"s" * 32, log=None)
