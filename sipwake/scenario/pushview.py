"""What a simulated phone finds in a push, and how its app opens sealed call details.

The replay sees each push as the server's ``PushRequest``; a real phone gets what the
provider delivers. ``device_payload`` builds that with sipwake's own request builders
(APNs: the JSON body of ``build_apns_request``; FCM: the ``data`` of
``build_fcm_request``), so a replay checks the bytes Apple or Google would carry.
``clear_details`` says which call details anyone on the way can read there, and
``open_push`` is the app's part of ``calls.encrypt_push``: it opens ``enc`` with the key
the device got in the 200 to its REGISTER (``Sipwake-Push-Key``, base64url) and returns
the details (``sipwake.push.seal``). Pure functions.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from sipwake.errors import PushError
from sipwake.push.base import PushRequest
from sipwake.push.fcm_payload import FcmSettings, build_fcm_request
from sipwake.push.payload import ApnsSettings, build_apns_request
from sipwake.push.seal import open_sealed
from sipwake.registrar.bindings import PUSH_KEY_HEADER
from sipwake.sip.message import Response

__all__ = ["clear_details", "clear_in", "device_payload", "open_push", "push_key_of"]


def device_payload(request: PushRequest, *, bundle: str, project: str) -> dict[str, Any] | None:
    """The payload ``request`` reaches the device with: the APNs JSON body, the FCM
    ``data``; None for Web Push (encrypted end to end anyway) or a push no provider
    would accept."""
    try:
        match request.target.base_provider:
            case "apns":
                apns = build_apns_request(request, ApnsSettings(bundle_id=bundle), wall_now=0.0)
                body: dict[str, Any] = json.loads(apns.body)
                return body
            case "fcm":
                fcm = build_fcm_request(request, FcmSettings(), default_project=project)
                data: dict[str, Any] = json.loads(fcm.body)["message"]["data"]
                return data
    except PushError:
        return None
    return None


def clear_details(payload: dict[str, Any], request: PushRequest) -> tuple[str, ...]:
    """The call details of ``request`` readable in ``payload`` outside ``enc``."""
    details = (
        ("caller", request.caller_number),
        ("name", request.caller),
        ("call-id", request.call_id),
        ("uuid", request.call_uuid),
    )
    return clear_in(payload, details)


def clear_in(
    payload: dict[str, Any], details: tuple[tuple[str, str | None], ...]
) -> tuple[str, ...]:
    """Which of ``details`` (name, value) are readable in ``payload`` outside ``enc``
    (a ``--target`` replay knows the call, not the server's push request)."""
    text = json.dumps({k: v for k, v in payload.items() if k != "enc"}, ensure_ascii=False)
    return tuple(name for name, value in details if value and value in text)


def push_key_of(response: Response) -> bytes | None:
    """The push key in the 200 to a REGISTER (the first ``Sipwake-Push-Key``), if any."""
    value = response.headers.get(PUSH_KEY_HEADER)
    if not value:
        return None
    text = value.strip()
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, binascii.Error):
        return None


def open_push(payload: dict[str, Any], key: bytes | None) -> dict[str, Any]:
    """The call details sealed in ``payload["enc"]``, opened with ``key``; ``ValueError``
    saying why when the device cannot."""
    enc = payload.get("enc")
    if not isinstance(enc, str):
        raise ValueError("the push has no enc")
    if key is None:
        raise ValueError(f"the device has no push key (no {PUSH_KEY_HEADER} in its 200)")
    plaintext = open_sealed(key, enc)
    try:
        details = json.loads(plaintext)
    except ValueError as exc:
        raise ValueError("enc opens to something that is not JSON") from exc
    if not isinstance(details, dict):
        raise ValueError("enc opens to JSON that is not an object")
    return details
