"""TLS contexts for the ``tls`` and ``wss`` listeners and outgoing TLS flows (RFC 3261 §26.2).

``ensure_self_signed`` gives a lab PBX a certificate on first run: an EC P-256
key and a self-signed certificate naming the listener hosts, ``localhost``,
``127.0.0.1`` and ``::1``, written once into a directory and reused after.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["client_context", "ensure_self_signed", "server_context"]

logger = logging.getLogger("sipwake.transport")

CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
_VALIDITY = datetime.timedelta(days=3650)
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})
_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


def ensure_self_signed(dir: Path, hosts: list[str]) -> tuple[Path, Path]:
    """Return ``(cert, key)`` in ``dir``, generating a self-signed pair if absent.

    An existing pair is reused as it is, whatever hosts it names. The key file
    is created with mode 0600.
    """
    cert_path, key_path = dir / CERT_FILE, dir / KEY_FILE
    if cert_path.is_file() and key_path.is_file():
        return cert_path, key_path
    names = list(dict.fromkeys([h for h in hosts if h not in _WILDCARDS]))
    names += [n for n in ("localhost", "127.0.0.1", "::1") if n not in names]
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_KEY_USAGE, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    dir.mkdir(parents=True, exist_ok=True)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    logger.info("generated a self-signed certificate for %s in %s", ", ".join(names), dir)
    return cert_path, key_path


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context (TLS 1.2 or later) presenting ``cert``; clients are not asked for one."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def client_context(verify: bool = True, cafile: Path | None = None) -> ssl.SSLContext:
    """A client context; ``verify=False`` accepts any certificate (lab use only)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
