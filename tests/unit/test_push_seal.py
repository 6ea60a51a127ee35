"""Sealed call details (``calls.encrypt_push``): the sealing itself, opened with an
independent AES-GCM; the payload builders of every provider keeping details out of the
clear; the registrar's push keys (only over TLS/WSS, only in that REGISTER's 200)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sipwake.ids import SeededIds
from sipwake.push.base import PushKind, PushRequest
from sipwake.push.fcm_payload import FcmSettings, build_fcm_request
from sipwake.push.payload import ApnsSettings, build_apns_request
from sipwake.push.seal import open_sealed, seal
from sipwake.push.webhook import build_webhook_request
from sipwake.push.webpush import webpush_plaintext
from sipwake.registrar import BindingRefreshed, Registrar, RegistrarConfig
from sipwake.registrar.bindings import PUSH_KEY_HEADER
from sipwake.sip.message import Request
from sipwake.sip.parser import parse_message
from sipwake.sip.peer import Peer
from sipwake.sip.pushtarget import PushTarget, redact

KEY = bytes(range(32))
NUMBER = "+15551230001"
NAME = "Alice Example"
CALL_ID = "a84b4c76e66710@pc33.lab.test"
UUID = "0b5e7c3a-1111-4222-8333-444455556666"


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _open(key: bytes, enc: str) -> dict[str, Any]:
    """What a device does, with nothing from sipwake: split nonce, AES-256-GCM open."""
    raw = _b64url_decode(enc)
    plaintext = AESGCM(key).decrypt(raw[:12], raw[12:], None)
    document: dict[str, Any] = json.loads(plaintext)
    return document


def _request(
    kind: PushKind = "call",
    *,
    provider: str = "apns",
    prid: str = "0f1e2d3c" * 8,
    key: bytes | None = KEY,
    private: bool = True,
    body: str | None = None,
) -> PushRequest:
    # An iOS app's VoIP token and its remote token (alerts go to the latter).
    if provider.startswith("apns"):
        prid = f"{prid}:voip&{'5a6b7c8d' * 8}:remote"
    param = "TEAM123456.org.lab.phone.voip&remote" if provider.startswith("apns") else None
    target = PushTarget(provider=provider, prid=prid, param=param)
    return PushRequest(
        kind=kind,
        target=target,
        call_id=CALL_ID,
        caller=NAME,
        caller_number=NUMBER,
        call_uuid=UUID,
        body=body,
        private=private,
        seal_key=key,
    )


def _leaks(blob: str | bytes) -> list[str]:
    text = blob.decode() if isinstance(blob, bytes) else blob
    return [secret for secret in (NUMBER, NAME, CALL_ID, UUID, "Alice") if secret in text]


# -- the sealing ----------------------------------------------------------------------


def test_seal_opens_with_an_independent_aes_gcm_to_the_original_json() -> None:
    plaintext = json.dumps({"caller": NUMBER, "name": NAME, "call_id": CALL_ID}).encode()
    enc = seal(KEY, plaintext, nonce=b"\x01" * 12)
    raw = _b64url_decode(enc)
    assert "=" not in enc
    assert raw[:12] == b"\x01" * 12
    assert len(raw) == 12 + len(plaintext) + 16
    assert AESGCM(KEY).decrypt(raw[:12], raw[12:], None) == plaintext
    assert open_sealed(KEY, enc) == plaintext


def test_wrong_key_or_tampered_enc_does_not_open() -> None:
    enc = seal(KEY, b'{"caller":"1"}')
    wrong = bytes(32)
    with pytest.raises(InvalidTag):
        _open(wrong, enc)
    with pytest.raises(ValueError, match="does not open"):
        open_sealed(wrong, enc)
    raw = bytearray(_b64url_decode(enc))
    raw[-1] ^= 1
    tampered = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    with pytest.raises(ValueError, match="does not open"):
        open_sealed(KEY, tampered)
    with pytest.raises(ValueError, match="too short"):
        open_sealed(KEY, "AAAA")


def test_nonces_differ_so_equal_details_seal_differently() -> None:
    assert seal(KEY, b"same") != seal(KEY, b"same")


def test_key_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        seal(KEY[:16], b"x")


def test_push_request_repr_hides_the_key() -> None:
    assert repr(KEY) not in repr(_request())
    assert "seal_key" not in repr(_request())


# -- APNs --------------------------------------------------------------------------------


def test_apns_private_call_push_carries_only_type_and_enc() -> None:
    built = build_apns_request(_request(), ApnsSettings(bundle_id="org.lab.phone"), wall_now=0)
    body = json.loads(built.body)
    assert set(body) == {"type", "enc", "aps"}
    assert body["type"] == "call"
    assert _leaks(built.body) == []
    assert built.headers["apns-topic"] == "org.lab.phone.voip"
    details = _open(KEY, body["enc"])
    assert details == {
        "v": 1,
        "type": "call",
        "caller": NUMBER,
        "name": NAME,
        "call_id": CALL_ID,
        "uuid": UUID,
    }


def test_apns_private_cancel_push_has_generic_alert_and_no_collapse_id() -> None:
    request = _request("cancel", body="Missed call from Alice Example")
    built = build_apns_request(request, ApnsSettings(bundle_id="org.lab.phone"), wall_now=0)
    body = json.loads(built.body)
    assert _leaks(built.body) == []
    assert "apns-collapse-id" not in built.headers
    assert body["aps"]["alert"] == {"title": "Missed call", "body": "Missed call"}
    assert body["aps"]["mutable-content"] == 1
    assert _open(KEY, body["enc"])["body"] == "Missed call from Alice Example"


def test_apns_private_push_without_key_carries_no_details_at_all() -> None:
    request = _request("cancel", key=None)
    built = build_apns_request(request, ApnsSettings(bundle_id="org.lab.phone"), wall_now=0)
    body = json.loads(built.body)
    assert "enc" not in body
    assert "mutable-content" not in body["aps"]
    assert body["type"] == "cancel"
    assert _leaks(built.body) == []


def test_apns_clear_push_is_unchanged_when_not_private() -> None:
    built = build_apns_request(
        _request(private=False), ApnsSettings(bundle_id="org.lab.phone"), wall_now=0
    )
    body = json.loads(built.body)
    assert body["caller"] == NAME
    assert body["call-id"] == CALL_ID
    assert "enc" not in body


# -- FCM, Web Push, webhook ---------------------------------------------------------------


def test_fcm_private_data_is_type_and_enc_without_collapse_key() -> None:
    request = _request(provider="fcm", prid="fcm-token:APA91b-xyz")
    built = build_fcm_request(request, FcmSettings(), default_project="lab-app")
    message = json.loads(built.body)["message"]
    assert set(message["data"]) == {"type", "enc"}
    assert "collapse_key" not in message["android"]
    assert _leaks(built.body) == []
    assert _open(KEY, message["data"]["enc"])["caller"] == NUMBER


def test_webpush_private_plaintext_is_type_and_enc() -> None:
    plaintext = webpush_plaintext(_request(provider="webpush", prid="https://push.test/p/1"))
    document = json.loads(plaintext)
    assert set(document) == {"type", "enc"}
    assert _leaks(plaintext) == []
    assert _open(KEY, document["enc"])["call_id"] == CALL_ID


def test_webhook_private_body_has_details_only_sealed() -> None:
    built = build_webhook_request(_request(), "secret", wall_now=1_800_000_000.0)
    document = json.loads(built.body)
    assert document["caller"] is None
    assert document["call_id"] is None
    assert _leaks(built.body) == []
    assert _open(KEY, document["enc"])["name"] == NAME


# -- the registrar's push keys -------------------------------------------------------------

TLS = Peer(transport="tls", host="10.0.0.1", port=5071, flow=7)
WSS = Peer(transport="wss", host="10.0.0.1", port=5072, flow=8)
TCP = Peer(transport="tcp", host="10.0.0.1", port=5070, flow=1)
UDP = Peer(transport="udp", host="10.0.0.1", port=5060)
PUSH = "pn-provider=apns;pn-param=ABCD1234.com.example.app.voip;pn-prid=00fc13adff785122"


def _register(cseq: int, contact: str = f"<sip:alice@10.0.0.1:5071;{PUSH}>") -> Request:
    text = (
        "REGISTER sip:example.com SIP/2.0\r\n"
        "Via: SIP/2.0/TLS 10.0.0.1:5071;branch=z9hG4bKr1\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.com>;tag=f1\r\n"
        "To: <sip:alice@example.com>\r\n"
        "Call-ID: reg-1\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        f"Contact: {contact}\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def _registrar() -> Registrar:
    return Registrar(ids=SeededIds(0), config=RegistrarConfig(domains={"example.com"}))


@pytest.mark.parametrize("source", [TLS, WSS])
def test_push_binding_over_tls_or_wss_gets_a_key_in_its_200(source: Peer) -> None:
    result = _registrar().handle_register(_register(1), source, 0.0)
    [binding] = result.bindings
    assert binding.seal_key is not None
    assert len(binding.seal_key) == 32
    [header] = result.response.headers.values(PUSH_KEY_HEADER)
    assert _b64url_decode(header) == binding.seal_key
    assert len(header) == 43
    assert repr(binding.seal_key) not in repr(binding)


@pytest.mark.parametrize("source", [TCP, UDP])
def test_push_binding_over_plain_transport_gets_no_key(source: Peer) -> None:
    result = _registrar().handle_register(_register(1), source, 0.0)
    [binding] = result.bindings
    assert binding.seal_key is None
    assert result.response.headers.values(PUSH_KEY_HEADER) == []


def test_binding_without_push_parameters_gets_no_key_even_over_tls() -> None:
    result = _registrar().handle_register(_register(1, "<sip:alice@10.0.0.1:5071>"), TLS, 0.0)
    assert result.bindings[0].seal_key is None
    assert result.response.headers.values(PUSH_KEY_HEADER) == []


def test_key_kept_on_refresh_over_tls_and_dropped_by_a_plain_refresh() -> None:
    registrar = _registrar()
    first = registrar.handle_register(_register(1), TLS, 0.0)
    key = first.bindings[0].seal_key
    again = registrar.handle_register(_register(2), TLS, 10.0)
    assert isinstance(again.changes[-1], BindingRefreshed)
    assert again.bindings[0].seal_key == key
    assert again.response.headers.values(PUSH_KEY_HEADER) == first.response.headers.values(
        PUSH_KEY_HEADER
    )
    plain = registrar.handle_register(_register(3), UDP, 20.0)
    assert plain.bindings[0].seal_key is None
    assert plain.response.headers.values(PUSH_KEY_HEADER) == []
    fresh = registrar.handle_register(_register(4), TLS, 30.0)
    assert fresh.bindings[0].seal_key not in (None, key)


def test_another_devices_register_does_not_get_this_devices_key() -> None:
    registrar = _registrar()
    registrar.handle_register(_register(1), TLS, 0.0)
    text = _register(1, "<sip:alice@10.0.0.9:5071>").to_bytes().replace(b"reg-1", b"reg-2")
    message = parse_message(text)
    assert isinstance(message, Request)
    result = registrar.handle_register(message, TLS, 5.0)
    assert len(result.bindings) == 2  # the 200 lists both contacts...
    assert result.response.headers.values(PUSH_KEY_HEADER) == []  # ...but no key


def test_trace_text_hides_the_key() -> None:
    result = _registrar().handle_register(_register(1), TLS, 0.0)
    [header] = result.response.headers.values(PUSH_KEY_HEADER)
    shown = redact(result.response.to_bytes().decode())
    assert header not in shown
    assert f"{PUSH_KEY_HEADER}: ***" in shown
