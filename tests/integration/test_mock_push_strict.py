"""The mock APNs and FCM refuse what Apple and Google refuse (PROTOCOLS.md §3, §5), one
rule per test, over real HTTP/2 on 127.0.0.1: raw requests, so each rule is seen on its
own, whatever sipwake's builders would send."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sipwake.push.base import PushRequest
from sipwake.push.fcm import FcmProvider
from sipwake.push.mock import MockApns, MockFcm
from sipwake.push.mock_webpush import MockWebPush
from sipwake.push.mockfaults import MockSet, apply_fault
from sipwake.sip.pushtarget import PushTarget

pytestmark = pytest.mark.timeout(30)

TEAM, KID, BUNDLE = "TEAM123456", "KEY1234567", "org.lab.phone"
VOIP = "0f1e2d3c" * 8
"""A PushKit VoIP token: topic ``org.lab.phone.voip`` only."""
REMOTE = "4b5a6978" * 8
"""The same app's remote-notification token: topic ``org.lab.phone`` only."""
START = 1_800_000_000.0


@dataclass
class Clock:
    now: float = START

    def __call__(self) -> float:
        return self.now


@dataclass
class Apns:
    mock: MockApns
    clock: Clock
    key: ec.EllipticCurvePrivateKey

    def jwt(self, iat: float | None = None) -> str:
        claims = {"iss": TEAM, "iat": int(self.clock.now if iat is None else iat)}
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": KID})

    async def post(
        self, token: str = VOIP, body: bytes = b'{"aps":{}}', **headers: str
    ) -> tuple[int, str, dict[str, str]]:
        """POST one push; (status, reason or "", response headers)."""
        sent = {
            "authorization": f"bearer {headers.pop('provider_token', None) or self.jwt()}",
            "apns-push-type": "voip",
            "apns-topic": f"{BUNDLE}.voip",
            **{k.replace("_", "-"): v for k, v in headers.items()},
        }
        sent = {k: v for k, v in sent.items() if v != ""}
        async with httpx.AsyncClient(http2=True, verify=self.mock.client_ssl()) as client:
            response = await client.post(
                f"{self.mock.base_url}/3/device/{token}", headers=sent, content=body
            )
        reason = response.json()["reason"] if response.content else ""
        return response.status_code, reason, dict(response.headers)


def _public(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture
async def apns(tmp_path: Path) -> AsyncIterator[Apns]:
    key = ec.generate_private_key(ec.SECP256R1())
    clock = Clock()
    async with MockApns(
        tmp_path, public_key=_public(key), team_id=TEAM, key_id=KID, clock=clock
    ) as mock:
        mock.issue_token(VOIP, f"{BUNDLE}.voip")
        mock.issue_token(REMOTE, BUNDLE)
        yield Apns(mock=mock, clock=clock, key=key)


# -- tokens and topics -----------------------------------------------------------------------
async def test_voip_push_to_the_voip_token_is_taken_and_apns_id_echoed(apns: Apns) -> None:
    apns_id = "123e4567-e89b-12d3-a456-426614174000"
    status, _, headers = await apns.post(apns_id=apns_id)
    assert status == 200
    assert headers["apns-id"] == apns_id
    status, _, headers = await apns.post()
    assert status == 200
    assert len(headers["apns-id"]) == 36  # made by APNs when the request had none


async def test_alert_to_a_voip_token_is_device_token_not_for_topic(apns: Apns) -> None:
    """Issue 19 finding 1: what sipwake used to do with missed-call alerts."""
    status, reason, _ = await apns.post(VOIP, apns_push_type="alert", apns_topic=BUNDLE)
    assert (status, reason) == (400, "DeviceTokenNotForTopic")


async def test_voip_push_to_a_remote_token_is_device_token_not_for_topic(apns: Apns) -> None:
    assert (await apns.post(REMOTE))[:2] == (400, "DeviceTokenNotForTopic")
    ok = await apns.post(REMOTE, apns_push_type="alert", apns_topic=BUNDLE, body=b'{"aps":{}}')
    assert ok[0] == 200


async def test_a_token_never_issued_is_bad_device_token(apns: Apns) -> None:
    assert (await apns.post("ab" * 32))[:2] == (400, "BadDeviceToken")


async def test_a_token_that_is_not_hex_is_bad_device_token(apns: Apns) -> None:
    assert (await apns.post("zz" * 32))[:2] == (400, "BadDeviceToken")


async def test_lab_mode_binds_an_unknown_token_to_its_first_topic(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    clock = Clock(time.time())
    async with MockApns(
        tmp_path, public_key=_public(key), team_id=TEAM, key_id=KID, clock=clock, learn_tokens=True
    ) as mock:
        lab = Apns(mock=mock, clock=clock, key=key)
        assert (await lab.post("ab" * 32))[0] == 200  # first use: a VoIP token from now on
        second = await lab.post("ab" * 32, apns_push_type="alert", apns_topic=BUNDLE)
        assert second[:2] == (400, "DeviceTokenNotForTopic")
        assert mock.tokens.topic_of("ab" * 32) == f"{BUNDLE}.voip"


# -- headers ---------------------------------------------------------------------------------
async def test_voip_push_type_needs_the_voip_topic_and_alert_must_not_have_it(apns: Apns) -> None:
    assert (await apns.post(apns_topic=BUNDLE))[:2] == (400, "BadTopic")
    alert = await apns.post(REMOTE, apns_push_type="alert", apns_topic=f"{BUNDLE}.voip")
    assert alert[:2] == (400, "BadTopic")


async def test_missing_or_unknown_push_type_is_invalid_push_type(apns: Apns) -> None:
    assert (await apns.post(apns_push_type=""))[:2] == (400, "InvalidPushType")
    assert (await apns.post(apns_push_type="urgent"))[:2] == (400, "InvalidPushType")


async def test_missing_topic_with_token_auth_is_missing_topic(apns: Apns) -> None:
    assert (await apns.post(apns_topic=""))[:2] == (400, "MissingTopic")


@pytest.mark.parametrize(
    ("push_type", "priority", "expected"),
    [
        ("voip", "10", 200),
        ("voip", "5", 200),
        ("voip", "1", 400),  # a call must not wait for power considerations
        ("background", "5", 200),
        ("background", "10", 400),  # Apple: background pushes must use 5
        ("background", "", 400),  # omitted means 10
        ("alert", "10", 200),
        ("alert", "1", 200),
        ("alert", "7", 400),
    ],
)
async def test_priority_rules(apns: Apns, push_type: str, priority: str, expected: int) -> None:
    token, topic = (VOIP, f"{BUNDLE}.voip") if push_type == "voip" else (REMOTE, BUNDLE)
    status, reason, _ = await apns.post(
        token, apns_push_type=push_type, apns_topic=topic, apns_priority=priority
    )
    assert status == expected
    if expected == 400:
        assert reason == "BadPriority"


@pytest.mark.parametrize("value", ["soon", "-1", "1.5", "1e9"])
async def test_expiration_must_be_unix_seconds(apns: Apns, value: str) -> None:
    assert (await apns.post(apns_expiration=value))[:2] == (400, "BadExpirationDate")


async def test_expiration_zero_and_a_date_are_taken(apns: Apns) -> None:
    assert (await apns.post(apns_expiration="0"))[0] == 200
    assert (await apns.post(apns_expiration=str(int(START) + 60)))[0] == 200


@pytest.mark.parametrize("value", ["not-a-uuid", "123E4567-E89B-12D3-A456-426614174000"])
async def test_apns_id_must_be_a_lower_case_uuid(apns: Apns, value: str) -> None:
    assert (await apns.post(apns_id=value))[:2] == (400, "BadMessageId")


async def test_collapse_id_over_64_bytes_is_refused(apns: Apns) -> None:
    alert = {"apns_push_type": "alert", "apns_topic": BUNDLE}
    assert (await apns.post(REMOTE, apns_collapse_id="c" * 64, **alert))[0] == 200
    refused = await apns.post(REMOTE, apns_collapse_id="c" * 65, **alert)
    assert refused[:2] == (400, "BadCollapseId")


# -- payload ---------------------------------------------------------------------------------
def _body(size: int) -> bytes:
    head = b'{"aps":{},"x":"'
    return head + b"y" * (size - len(head) - 2) + b'"}'


async def test_voip_payload_limit_is_5120_bytes(apns: Apns) -> None:
    assert (await apns.post(body=_body(5120)))[0] == 200
    assert (await apns.post(body=_body(5121)))[:2] == (413, "PayloadTooLarge")


async def test_alert_payload_limit_is_4096_bytes(apns: Apns) -> None:
    alert = {"apns_push_type": "alert", "apns_topic": BUNDLE}
    assert (await apns.post(REMOTE, body=_body(4096), **alert))[0] == 200
    assert (await apns.post(REMOTE, body=_body(4097), **alert))[:2] == (413, "PayloadTooLarge")


async def test_empty_body_is_payload_empty(apns: Apns) -> None:
    assert (await apns.post(body=b""))[:2] == (400, "PayloadEmpty")


# -- provider token --------------------------------------------------------------------------
async def test_provider_token_older_than_an_hour_is_expired(apns: Apns) -> None:
    old = apns.jwt(iat=START - 3601)
    assert (await apns.post(provider_token=old))[:2] == (403, "ExpiredProviderToken")
    assert (await apns.post(provider_token=apns.jwt(iat=START - 3500)))[0] == 200


async def test_a_new_provider_token_within_20_minutes_is_too_many_updates(apns: Apns) -> None:
    """On one connection, a token replacing another must be at least 20 minutes newer."""
    first, soon, later = apns.jwt(), apns.jwt(iat=START + 60), apns.jwt(iat=START + 1200)
    async with httpx.AsyncClient(http2=True, verify=apns.mock.client_ssl()) as client:

        async def post(token: str) -> tuple[int, str]:
            headers = {
                "authorization": f"bearer {token}",
                "apns-push-type": "voip",
                "apns-topic": f"{BUNDLE}.voip",
            }
            response = await client.post(
                f"{apns.mock.base_url}/3/device/{VOIP}", headers=headers, content=b'{"aps":{}}'
            )
            return response.status_code, response.json()["reason"] if response.content else ""

        apns.clock.now = START + 1200
        assert await post(first) == (200, "")
        assert await post(soon) == (429, "TooManyProviderTokenUpdates")
        assert await post(first) == (200, "")  # the token in use still works
        assert await post(later) == (200, "")  # 20 minutes newer: fine
    assert apns.mock.connections == 1


# -- 410 -------------------------------------------------------------------------------------
async def test_unregistered_token_answers_410_with_a_timestamp(apns: Apns) -> None:
    apns.mock.unregister(VOIP, timestamp_ms=1_799_999_000_000)
    status, _, _ = await apns.post()
    assert status == 410
    async with httpx.AsyncClient(http2=True, verify=apns.mock.client_ssl()) as client:
        response = await client.post(
            f"{apns.mock.base_url}/3/device/{VOIP}",
            headers={
                "authorization": f"bearer {apns.jwt()}",
                "apns-push-type": "voip",
                "apns-topic": f"{BUNDLE}.voip",
            },
            content=b'{"aps":{}}',
        )
    assert response.json() == {"reason": "Unregistered", "timestamp": 1_799_999_000_000}


# -- FCM: tokens belong to a project ---------------------------------------------------------
def _fcm_push(token: str) -> PushRequest:
    target = PushTarget(provider="fcm", prid=token, param="lab-app")
    return PushRequest(kind="call", target=target, call_id="c1@lab", caller="Alice")


async def test_fcm_token_of_another_project_is_sender_id_mismatch(tmp_path: Path) -> None:
    async with MockFcm(tmp_path, project_id="lab-app") as mock:
        account = mock.new_service_account(tmp_path / "keys")
        provider = FcmProvider(account.path, base_url=mock.base_url, ssl_context=mock.client_ssl())
        mock.issue_token("mine:APA91b-1")
        mock.issue_token("theirs:APA91b-2", "another-app")
        try:
            ok = await provider.send(_fcm_push("mine:APA91b-1"))
            theirs = await provider.send(_fcm_push("theirs:APA91b-2"))
            unknown = await provider.send(_fcm_push("unknown:APA91b-3"))
        finally:
            await provider.close()
    assert ok.status == "delivered", ok
    assert (theirs.http_status, theirs.reason, theirs.status) == (
        403,
        "SENDER_ID_MISMATCH",
        "error",
    )
    assert (unknown.http_status, unknown.reason) == (400, "INVALID_ARGUMENT")
    assert unknown.status == "invalid_target"  # about message.token: never issued


async def test_fcm_lab_mode_binds_a_token_to_the_project_of_its_first_message(
    tmp_path: Path,
) -> None:
    async with MockFcm(tmp_path, project_id="lab-app", learn_tokens=True) as mock:
        account = mock.new_service_account(tmp_path / "keys")
        provider = FcmProvider(account.path, base_url=mock.base_url, ssl_context=mock.client_ssl())
        try:
            outcome = await provider.send(_fcm_push("new:APA91b-1"))
        finally:
            await provider.close()
    assert outcome.status == "delivered", outcome
    assert mock.senders == {"new:APA91b-1": "lab-app"}


# -- the lab's typed commands ----------------------------------------------------------------
async def test_mock_push_token_command_issues_tokens(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    async with (
        MockApns(tmp_path / "a", public_key=_public(key), team_id=TEAM, key_id=KID) as apns,
        MockFcm(tmp_path / "f", project_id="lab-app") as fcm,
        MockWebPush(tmp_path / "w") as web,
    ):
        mocks = MockSet(apns=apns, fcm=fcm, webpush=web)
        said = apply_fault(f"token apns {VOIP} {BUNDLE}.voip", mocks)
        assert VOIP not in said  # masked
        assert apns.tokens.topic_of(VOIP) == f"{BUNDLE}.voip"
        apply_fault("token fcm abc:APA91b other-app", mocks)
        assert fcm.senders["abc:APA91b"] == "other-app"
        with pytest.raises(ValueError, match="cannot read"):
            apply_fault("token apns onlytoken", mocks)
