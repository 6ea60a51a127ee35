"""ApnsProvider's HTTP/2 connection against the mock APNs: limits, flow control, failures.

Real HTTP/2 over TLS on 127.0.0.1; each test bounded by the module timeout.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sipwake.push.apns import ApnsProvider
from sipwake.push.base import PushKind, PushRequest
from sipwake.push.mock import MockApns
from sipwake.push.payload import ApnsSettings
from sipwake.sip.pushtarget import PushTarget

pytestmark = pytest.mark.timeout(30)

TEAM, KID, BUNDLE = "TEAM123456", "KEY1234567", "org.lab.phone"
SETTINGS = ApnsSettings(team_id=TEAM, key_id=KID, bundle_id=BUNDLE, environment="sandbox")


def _key_pair() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


Make = Callable[..., ApnsProvider]


@pytest.fixture
async def mock_and_make(tmp_path: Path) -> AsyncIterator[tuple[MockApns, Make]]:
    private, public = _key_pair()
    providers: list[ApnsProvider] = []
    # Many tokens, none issued: the lab mode binds each to the topic of its first push.
    async with MockApns(
        tmp_path / "tls", public_key=public, team_id=TEAM, key_id=KID, learn_tokens=True
    ) as mock:

        def make(timeout: float = 5.0, base_url: str | None = None) -> ApnsProvider:
            provider = ApnsProvider(
                SETTINGS,
                private_key=private,
                base_url=base_url or mock.base_url,
                ssl_context=mock.client_ssl(),
                timeout=timeout,
            )
            providers.append(provider)
            return provider

        try:
            yield mock, make
        finally:
            for provider in providers:
                await provider.close()


def _push(n: int = 0, kind: PushKind = "call", body: str | None = None) -> PushRequest:
    # A call to a PushKit VoIP token, an alert to a remote-notification token.
    service = "voip" if kind == "call" else "remote"
    target = PushTarget(provider="apns", prid=f"{n + 1:064x}", param=f"{TEAM}.{BUNDLE}.{service}")
    return PushRequest(kind=kind, target=target, call_id=f"c{n}@lab", caller="Alice", body=body)


async def _until_answer_pending(mock: MockApns) -> None:
    """Wait until the mock holds a request (waiting out its ``latency``)."""
    for _ in range(300):
        if mock._tasks:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the mock never received the request")


async def test_more_pushes_than_the_server_allows_streams_wait_for_a_slot(
    mock_and_make: tuple[MockApns, Make],
) -> None:
    mock, make = mock_and_make
    mock.latency = 0.05
    provider = make()
    # h2 servers allow 100 concurrent streams by default; 250 pushes must queue.
    outcomes = await asyncio.gather(*(provider.send(_push(n)) for n in range(250)))
    assert [o.status for o in outcomes] == ["delivered"] * 250
    assert mock.connections == 1
    assert len({p.token for p in mock.pushes}) == 250


async def test_bodies_beyond_the_flow_control_window_are_sent_as_it_opens(
    mock_and_make: tuple[MockApns, Make],
) -> None:
    mock, make = mock_and_make
    provider = make()
    assert (await provider.send(_push(99))).status == "delivered"  # connected
    text = "x" * 3900
    # 40 alert bodies of ~4 KB, sent in one turn of the loop, exceed the 64 KiB window.
    outcomes = await asyncio.gather(
        *(provider.send(_push(n, kind="message", body=text)) for n in range(40))
    )
    assert [o.status for o in outcomes] == ["delivered"] * 40
    assert all(p.body["aps"]["alert"]["body"] == text for p in mock.pushes[1:])
    assert mock.connections == 1


async def test_unanswered_push_times_out_and_the_connection_stays_usable(
    mock_and_make: tuple[MockApns, Make],
) -> None:
    mock, make = mock_and_make
    provider = make(timeout=0.3)
    mock.latency = 2.0
    outcome = await provider.send(_push(0))
    assert (outcome.status, outcome.reason) == ("retry", "timeout: ReadTimeout")
    assert 0.25 < outcome.latency < 1.5
    mock.latency = 0.0
    assert (await provider.send(_push(1))).status == "delivered"
    assert mock.connections == 1


async def test_lost_connection_fails_pushes_in_flight_then_reconnects(
    mock_and_make: tuple[MockApns, Make],
) -> None:
    mock, make = mock_and_make
    provider = make()
    assert (await provider.send(_push(0))).status == "delivered"
    mock.latency = 1.0
    in_flight = asyncio.ensure_future(provider.send(_push(1)))
    await _until_answer_pending(mock)
    for writer in list(mock._writers):
        writer.close()
    outcome = await in_flight
    assert outcome.status == "retry"
    assert outcome.reason == "transport: ConnectionLost"
    mock.latency = 0.0
    assert (await provider.send(_push(2))).status == "delivered"
    assert mock.connections == 2


async def test_refused_connection_is_retry(mock_and_make: tuple[MockApns, Make]) -> None:
    _, make = mock_and_make
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    outcome = await make(base_url=f"https://127.0.0.1:{port}").send(_push())
    assert outcome.status == "retry"
    assert outcome.reason is not None
    assert outcome.reason.startswith("transport: ConnectError")


async def test_close_ends_pushes_in_flight(mock_and_make: tuple[MockApns, Make]) -> None:
    mock, make = mock_and_make
    provider = make()
    mock.latency = 1.0
    in_flight = asyncio.ensure_future(provider.send(_push()))
    await _until_answer_pending(mock)
    await provider.close()
    outcome = await in_flight
    assert (outcome.status, outcome.reason) == ("retry", "transport: Closed")
    assert (await provider.send(_push(1))).reason == "transport: Closed"


def test_base_url_must_be_https() -> None:
    private, _ = _key_pair()
    with pytest.raises(ValueError, match="expected https://host"):
        ApnsProvider(SETTINGS, private_key=private, base_url="http://127.0.0.1:80")


async def test_pushes_share_one_connect_attempt_and_close_stops_it(
    mock_and_make: tuple[MockApns, Make],
) -> None:
    _, make = mock_and_make
    # A listener that never completes the TLS handshake: connecting hangs.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        provider = make(timeout=5.0, base_url=f"https://127.0.0.1:{port}")
        pushes = [asyncio.ensure_future(provider.send(_push(n))) for n in range(5)]
        await asyncio.sleep(0.2)
        assert not any(p.done() for p in pushes)
        await provider.close()
        outcomes = await asyncio.wait_for(asyncio.gather(*pushes), timeout=2.0)
    assert {(o.status, o.reason) for o in outcomes} == {("retry", "transport: Closed")}


async def test_connect_timeout_is_retry(mock_and_make: tuple[MockApns, Make]) -> None:
    _, make = mock_and_make
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        provider = make(timeout=0.3, base_url=f"https://127.0.0.1:{port}")
        outcomes = await asyncio.gather(*(provider.send(_push(n)) for n in range(5)))
    assert {(o.status, o.reason) for o in outcomes} == {("retry", "timeout: ConnectTimeout")}
    # One shared attempt: all five gave up together, not one after another.
    assert max(o.latency for o in outcomes) < 1.0
