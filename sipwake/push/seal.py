"""Call details sealed for one device (``calls.encrypt_push``, the innovaphone model).

A push service (Apple, Google, a browser vendor) sees every payload in clear. With
``encrypt_push`` on, a push carries only its kind (``type``) and ``enc``: the call details
sealed with the device's push key, which sipwake made when the device registered over
TLS or WSS and handed it only in the 200 to that REGISTER (``Sipwake-Push-Key``,
``sipwake.registrar.bindings``). A device registered without TLS has no key: its pushes
carry no details at all (privacy wins), and the app learns the call over SIP once it
has registered.

Format (stable; the README shows how a device opens it)::

    enc = base64url_nopad(nonce[12] || AES-256-GCM(key, nonce, plaintext, aad=None))

``plaintext`` is compact UTF-8 JSON with the fields that apply::

    {"v": 1, "type": "call", "caller": "+15551230001", "name": "Alice",
     "call_id": "…", "uuid": "…", "body": "…"}

``caller`` is the caller's number (the From URI's user), ``name`` the name shown for
them, ``call_id`` the SIP Call-ID the app matches after it registers, ``uuid`` the
CallKit UUID, ``body`` the message text or missed-call line. Pure functions; the nonce
is drawn from the OS unless given (tests).
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sipwake.push.base import PushRequest

__all__ = [
    "NONCE_BYTES",
    "SEAL_VERSION",
    "open_sealed",
    "private_fields",
    "seal",
    "sealed_details",
]

NONCE_BYTES = 12
SEAL_VERSION = 1
_KEY_BYTES = 32
_TEXT_LIMIT = 256
_BODY_LIMIT = 1024


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _check_key(key: bytes) -> None:
    if len(key) != _KEY_BYTES:
        raise ValueError(f"push key must be {_KEY_BYTES} bytes, got {len(key)}")


def sealed_details(request: PushRequest) -> dict[str, Any]:
    """The call details of ``request`` that travel only sealed (the JSON before sealing)."""
    details: dict[str, Any] = {"v": SEAL_VERSION, "type": request.kind}
    number = (request.caller_number or "")[:_TEXT_LIMIT]
    name = (request.caller or "")[:_TEXT_LIMIT]
    if number:
        details["caller"] = number
    if name:
        details["name"] = name
    details["call_id"] = request.call_id
    if request.call_uuid is not None:
        details["uuid"] = request.call_uuid
    if request.body:
        details["body"] = request.body[:_BODY_LIMIT]
    return details


def seal(key: bytes, plaintext: bytes, *, nonce: bytes | None = None) -> str:
    """``base64url(nonce || AES-256-GCM ciphertext and tag)`` of ``plaintext`` under ``key``."""
    _check_key(key)
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"nonce must be {NONCE_BYTES} bytes, got {len(nonce)}")
    return _b64url(nonce + AESGCM(key).encrypt(nonce, plaintext, None))


def open_sealed(key: bytes, enc: str) -> bytes:
    """The plaintext ``seal`` sealed (what a device does); ``ValueError`` when ``enc`` is
    malformed or was not sealed with ``key``."""
    _check_key(key)
    try:
        raw = base64.urlsafe_b64decode(enc + "=" * (-len(enc) % 4))
    except ValueError as exc:
        raise ValueError("enc is not base64url") from exc
    if len(raw) < NONCE_BYTES + 16:
        raise ValueError("enc is too short for a nonce and a GCM tag")
    try:
        return AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], None)
    except InvalidTag:
        raise ValueError("enc does not open with this key") from None


def private_fields(request: PushRequest, *, nonce: bytes | None = None) -> dict[str, str]:
    """What a private push (``request.private``) carries besides its ``type``: ``enc``
    with the sealed details, or nothing when the device has no push key."""
    if request.seal_key is None:
        return {}
    plaintext = json.dumps(
        sealed_details(request), separators=(",", ":"), ensure_ascii=False
    ).encode()
    return {"enc": seal(request.seal_key, plaintext, nonce=nonce)}
