"""SandboxProvider (records, faults, wake-ups) and PushProviders (routing, errors, records)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from sipwake.push.base import PushKind, PushOutcome, PushRecord, PushRequest
from sipwake.push.registry import PushProviders, build_push_providers, route_key
from sipwake.push.sandbox import SandboxProvider
from sipwake.sip.pushtarget import PushTarget, mask_token
from sipwake.store.base import StoreError
from sipwake.store.memory import MemoryStore

pytestmark = pytest.mark.timeout(10)

APNS_TOKEN = "a1b2c3d4" * 8
FCM_TOKEN = "fcm-token-" + "x" * 40
WALL = 1_800_000_000.0


def request(
    provider: str = "apns",
    prid: str = APNS_TOKEN,
    *,
    sandbox: bool = False,
    kind: PushKind = "call",
) -> PushRequest:
    param = "TEAM.org.lab.phone.voip" if provider.startswith("apns") else "project-1"
    target = PushTarget(provider=provider, prid=prid, param=param, sandbox=sandbox)
    return PushRequest(kind=kind, target=target, call_id="c-1", caller="Bob")


class Recorder:
    """A provider double that remembers what it was asked and answers ``delivered``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[PushRequest] = []
        self.closed = 0

    async def send(self, request: PushRequest) -> PushOutcome:
        self.sent.append(request)
        return PushOutcome(status="delivered", provider=self.name, http_status=200)

    async def close(self) -> None:
        self.closed += 1


class Exploding:
    name = "broken"

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def send(self, request: PushRequest) -> PushOutcome:
        raise self.exc

    async def close(self) -> None:
        raise RuntimeError("close failed too")


# -- sandbox -----------------------------------------------------------------------------


async def test_sandbox_records_and_delivers() -> None:
    sandbox = SandboxProvider(clock=lambda: WALL)
    outcome = await sandbox.send(request())
    await sandbox.send(request("fcm", FCM_TOKEN, kind="message"))
    assert outcome.status == "delivered"
    assert outcome.provider == "sandbox"
    assert [p.request.target.prid for p in sandbox.pushes] == [APNS_TOKEN, FCM_TOKEN]
    assert [p.request.kind for p in sandbox.pushes_to(FCM_TOKEN)] == ["message"]
    assert sandbox.pushes[0].wall == WALL
    assert APNS_TOKEN not in repr(sandbox.pushes[0].request)


async def test_sandbox_is_bounded() -> None:
    sandbox = SandboxProvider(maxlen=3)
    for i in range(5):
        await sandbox.send(request(prid=f"token-{i:04d}-padding"))
    assert [p.request.target.prid for p in sandbox.pushes] == [
        f"token-{i:04d}-padding" for i in (2, 3, 4)
    ]


async def test_sandbox_faults_per_token_until_healed() -> None:
    sandbox = SandboxProvider()
    sandbox.fail(APNS_TOKEN, "invalid_target", "Unregistered")
    sandbox.fail(FCM_TOKEN, "retry", retry_after=2.5)
    gone = await sandbox.send(request())
    busy = await sandbox.send(request("fcm", FCM_TOKEN))
    other = await sandbox.send(request(prid="b" * 64))
    assert (gone.status, gone.reason) == ("invalid_target", "Unregistered")
    assert (busy.status, busy.retry_after) == ("retry", 2.5)
    assert busy.reason == "sandbox fault: retry"
    assert other.status == "delivered"
    assert [p.outcome.status for p in sandbox.pushes] == ["invalid_target", "retry", "delivered"]
    sandbox.heal(APNS_TOKEN)
    assert (await sandbox.send(request())).status == "delivered"
    assert (await sandbox.send(request("fcm", FCM_TOKEN))).status == "retry"
    sandbox.heal()
    assert (await sandbox.send(request("fcm", FCM_TOKEN))).status == "delivered"


def test_sandbox_refuses_delivered_as_a_fault() -> None:
    with pytest.raises(ValueError, match="fault status must be one of"):
        SandboxProvider().fail(APNS_TOKEN, "delivered")  # type: ignore[arg-type]


async def test_sandbox_wakes_subscribers_and_listeners_only_when_delivered() -> None:
    sandbox = SandboxProvider()
    queue = sandbox.subscribe()
    heard: list[str] = []

    def broken(_: PushRequest) -> None:
        raise RuntimeError("listener bug")

    sandbox.add_listener(broken)
    sandbox.add_listener(lambda r: heard.append(r.target.prid))
    sandbox.fail(FCM_TOKEN, "error", "denied")
    await sandbox.send(request("fcm", FCM_TOKEN))
    outcome = await sandbox.send(request())
    assert outcome.status == "delivered"  # the broken listener did not fail the push
    woken = await asyncio.wait_for(queue.get(), 1)
    assert woken.target.prid == APNS_TOKEN
    assert queue.empty()
    assert heard == [APNS_TOKEN]
    sandbox.unsubscribe(queue)
    await sandbox.send(request())
    assert queue.empty()
    assert heard == [APNS_TOKEN, APNS_TOKEN]


async def test_sandbox_after_close_answers_error() -> None:
    sandbox = SandboxProvider()
    await sandbox.close()
    outcome = await sandbox.send(request())
    assert (outcome.status, outcome.reason) == ("error", "sandbox closed")


# -- registry ----------------------------------------------------------------------------


def test_route_keys() -> None:
    assert route_key(request().target) == "apns"
    assert route_key(request("apns.dev", sandbox=True).target) == "apns.dev"
    assert route_key(request("fcm", FCM_TOKEN).target) == "fcm"


async def test_registry_routes_by_provider_and_sandbox_flag() -> None:
    apns, apns_dev, fcm = Recorder("apns"), Recorder("apns-dev"), Recorder("fcm")
    sandbox = SandboxProvider()
    providers = build_push_providers(apns=apns, apns_sandbox=apns_dev, fcm=fcm, sandbox=sandbox)
    assert (await providers.send(request())).provider == "apns"
    assert (await providers.send(request("apns.dev", sandbox=True))).provider == "apns-dev"
    assert (await providers.send(request("fcm", FCM_TOKEN))).provider == "fcm"
    web = request("webpush", "https://push.example/sub/1234567890")
    assert (await providers.send(web)).provider == "sandbox"
    assert [len(p.sent) for p in (apns, apns_dev, fcm)] == [1, 1, 1]
    assert apns_dev.sent[0].target.sandbox
    assert [p.request.target.base_provider for p in sandbox.pushes] == ["webpush"]


async def test_sandbox_target_never_falls_back_to_production() -> None:
    apns = Recorder("apns")
    providers = build_push_providers(apns=apns)
    outcome = await providers.send(request("apns.dev", sandbox=True))
    assert outcome.provider == "sandbox"
    assert apns.sent == []


async def test_webhook_for_all_is_the_fallback_and_named_routes_still_win() -> None:
    apns, hook = Recorder("apns"), Recorder("webhook")
    providers = build_push_providers(apns=apns, webhook=hook, webhook_for="all")
    assert providers.fallback is hook
    assert (await providers.send(request())).provider == "apns"
    assert (await providers.send(request("fcm", FCM_TOKEN))).provider == "webhook"


async def test_webhook_for_listed_routes() -> None:
    hook = Recorder("webhook")
    providers = build_push_providers(webhook=hook, webhook_for=["fcm"])
    assert (await providers.send(request("fcm", FCM_TOKEN))).provider == "webhook"
    assert (await providers.send(request())).provider == "sandbox"
    with pytest.raises(ValueError, match="'apns' has a provider and the webhook both"):
        build_push_providers(apns=Recorder("apns"), webhook=hook, webhook_for=["apns"])


async def test_provider_exception_becomes_error_outcome_with_masked_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()
    broken = Exploding(ValueError(f"cannot push {APNS_TOKEN} today"))
    providers = PushProviders({"apns": broken}, fallback=SandboxProvider(), log=store)
    with caplog.at_level(logging.WARNING):
        outcome = await providers.send(request(), binding_id="b1", aor="sip:alice@lab.test")
    assert outcome.status == "error"
    assert outcome.provider == "broken"
    assert outcome.reason == f"cannot push {mask_token(APNS_TOKEN)} today"
    assert APNS_TOKEN not in caplog.text
    assert mask_token(APNS_TOKEN) in caplog.text
    [record] = store.pushes()
    assert (record.status, record.provider, record.binding_id) == ("error", "broken", "b1")


async def test_exception_without_message_names_its_type() -> None:
    providers = PushProviders({"apns": Exploding(KeyError())}, fallback=SandboxProvider())
    outcome = await providers.send(request())
    assert (outcome.status, outcome.reason) == ("error", "KeyError")


async def test_registry_measures_latency_and_records_every_attempt() -> None:
    ticks = iter([10.0, 10.25, 20.0, 20.5])
    store = MemoryStore()
    sandbox = SandboxProvider()
    sandbox.fail(FCM_TOKEN, "invalid_target", "Unregistered")
    providers = PushProviders(
        {}, fallback=sandbox, log=store, clock=lambda: WALL, timer=lambda: next(ticks)
    )
    first = await providers.send(request(), binding_id="b1", aor="sip:alice@lab.test")
    second = await providers.send(
        request("fcm", FCM_TOKEN), binding_id="b2", aor="sip:bob@lab.test"
    )
    assert (first.latency, second.latency) == (0.25, 0.5)
    records = store.pushes()
    assert [r.binding_id for r in records] == ["b2", "b1"]  # newest first
    assert records[0] == PushRecord(
        wall=WALL,
        aor="sip:bob@lab.test",
        binding_id="b2",
        kind="call",
        provider="sandbox",
        pn_provider="fcm",
        token=mask_token(FCM_TOKEN),
        status="invalid_target",
        reason="Unregistered",
        latency=0.5,
        call_id="c-1",
    )
    assert [r.aor for r in store.pushes(aor="sip:alice@lab.test")] == ["sip:alice@lab.test"]


async def test_a_failing_log_does_not_fail_the_push(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    store.close()  # every record_push now raises StoreError
    providers = PushProviders({}, fallback=SandboxProvider(), log=store)
    with caplog.at_level(logging.WARNING):
        outcome = await providers.send(request())
    assert outcome.status == "delivered"
    assert "cannot record push" in caplog.text
    with pytest.raises(StoreError):
        store.record_push(PushRecord.of(request(), outcome, wall=WALL))


async def test_close_closes_each_provider_once_and_survives_failures() -> None:
    apns, hook = Recorder("apns"), Recorder("webhook")
    providers = PushProviders(
        {"apns": apns, "apns.dev": apns, "fcm": Exploding(RuntimeError())}, fallback=hook
    )
    await providers.close()
    assert (apns.closed, hook.closed) == (1, 1)


def test_push_record_refuses_an_unmasked_token() -> None:
    outcome = PushOutcome(status="delivered", provider="sandbox")
    record = PushRecord.of(request(), outcome, wall=WALL)
    assert record.token == mask_token(APNS_TOKEN)
    with pytest.raises(ValueError, match="must be masked"):
        PushRecord(
            wall=WALL,
            aor=None,
            binding_id=None,
            kind="call",
            provider="apns",
            pn_provider="apns",
            token=APNS_TOKEN,
            status="delivered",
        )


def test_mock_fault_commands_are_read_or_refused_with_the_reason(tmp_path: Path) -> None:
    from sipwake.push.mock import MockApns, MockFcm
    from sipwake.push.mock_webpush import MockWebPush
    from sipwake.push.mockfaults import MockSet, apply_fault

    mocks = MockSet(
        apns=MockApns(tmp_path),
        fcm=MockFcm(tmp_path, project_id="p"),
        webpush=MockWebPush(tmp_path),
    )
    assert "FCM" in apply_fault("fail fcm quota_exceeded retry-after=7 times=2", mocks)
    assert [f.code for f in mocks.fcm.faults] == ["QUOTA_EXCEEDED"] * 2
    assert mocks.fcm.faults[0].retry_after == 7
    apply_fault("latency 40", mocks)
    assert mocks.webpush.latency == pytest.approx(0.04)
    apply_fault("dead abc", mocks)
    assert "abc" in mocks.apns.unregistered
    assert "abc" in mocks.fcm.unregistered
    for bad, why in [
        ("fail apns 200 OK", "400-599"),
        ("fail fcm NOT_A_CODE", "unknown FCM error"),
        ("fail apns 429 TooMany times=x", "whole number"),
        ("explode", "commands:"),
    ]:
        with pytest.raises(ValueError, match=why):
            apply_fault(bad, mocks)
    apply_fault("clear", mocks)
    assert not mocks.fcm.faults
    assert mocks.apns.latency == 0.0
