"""``sipwake mock-push`` as a user runs it: a subprocess that writes push settings and
accepts a real APNs push signed with the key it wrote, and a real Web Push message to a
subscription made over HTTP (RFC 8030 §4), sent with the settings it wrote."""

from __future__ import annotations

import asyncio
import os
import ssl
import stat
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sipwake.config import PushConfig
from sipwake.push.apns import ApnsProvider
from sipwake.push.base import PushRequest
from sipwake.push.configure import providers_from_config
from sipwake.push.payload import ApnsSettings
from sipwake.push.webpush import b64url_encode
from sipwake.sip.pushtarget import PushTarget

pytestmark = pytest.mark.timeout(30)

TOKEN = "5eed" * 16


async def _start(directory: Path) -> tuple[asyncio.subprocess.Process, list[str]]:
    """``sipwake mock-push`` in a subprocess, once it said it is ready; and what it said."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sipwake",
        "mock-push",
        "--port",
        "0",
        "--dir",
        str(directory),
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
        assert line, f"mock-push exited: {lines}"
        lines.append(line)
        if line.startswith("ready:"):
            return proc, lines


async def test_mock_push_accepts_a_web_push_from_its_own_settings(tmp_path: Path) -> None:
    proc, said = await _start(tmp_path / "mock")
    assert proc.stdout is not None
    try:
        [announced] = [line for line in said if line.startswith("mock Web Push at ")]
        origin = announced.split()[4]
        assert origin.startswith("https://127.0.0.1:")
        settings = yaml.safe_load((tmp_path / "mock" / "push.yaml").read_text())["push"]
        web = settings["webpush"]
        trust = ssl.create_default_context(cafile=web["ca_file"])
        async with httpx.AsyncClient(http2=True, verify=trust) as client:
            made = await client.post(f"{origin}/subscribe")
        assert made.status_code == 201
        assert made.http_version == "HTTP/2"
        endpoint = made.links["urn:ietf:params:push"]["url"]
        assert endpoint.startswith(f"{origin}/push/")
        browser = ec.generate_private_key(ec.SECP256R1())
        p256dh = browser.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        target = PushTarget(
            provider="webpush",
            prid=endpoint,
            p256dh=b64url_encode(p256dh),
            auth=b64url_encode(os.urandom(16)),
        )
        providers = providers_from_config(
            PushConfig.model_validate({"webpush": web}), secret=b"s" * 32, log=None
        )
        try:
            outcome = await providers.send(
                PushRequest(kind="call", target=target, call_id="c1", caller="Alice")
            )
        finally:
            await providers.close()
        assert outcome.status == "delivered", outcome
        assert outcome.provider == "webpush"
        subscription = endpoint.rsplit("/", 1)[-1]
        line = (await asyncio.wait_for(proc.stdout.readline(), 5)).decode()
        assert line.startswith("webpush high push to "), line
        assert line.rstrip().endswith(": accepted")
        assert subscription not in line
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
    assert proc.returncode == 0


async def test_mock_push_accepts_a_push_from_its_own_settings(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sipwake",
        "mock-push",
        "--port",
        "0",
        "--dir",
        str(tmp_path / "mock"),
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        while True:
            line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
            assert line, "mock-push exited"
            if line.startswith("ready:"):
                break
        settings = yaml.safe_load((tmp_path / "mock" / "push.yaml").read_text())["push"]
        apns = settings["apns"]
        provider = ApnsProvider(
            ApnsSettings(team_id=apns["team_id"], key_id=apns["key_id"], bundle_id="org.lab.phone"),
            private_key=await asyncio.to_thread(Path(apns["key_file"]).read_bytes),
            base_url=apns["base_url"],
            ssl_context=ssl.create_default_context(cafile=apns["ca_file"]),
        )
        target = PushTarget(provider="apns", prid=TOKEN, param="TEAM123456.org.lab.phone.voip")
        outcome = await provider.send(PushRequest(kind="call", target=target, call_id="c1"))
        await provider.close()
        assert outcome.status == "delivered"
        line = (await asyncio.wait_for(proc.stdout.readline(), 5)).decode()
        assert "apns voip push to 5eed…5eed: accepted" in line
        assert TOKEN not in line
        # What an app developer wants to see: the headers APNs decides on and the payload.
        detail = [(await asyncio.wait_for(proc.stdout.readline(), 5)).decode() for _ in range(3)]
        headers, auth, payload = (d.strip() for d in detail)
        assert headers.startswith("headers: apns-push-type=voip apns-topic=org.lab.phone.voip")
        assert "apns-priority=10" in headers
        assert auth == "auth: provider token (ES256 JWT, verified)"
        assert payload.startswith("payload: {")
        assert '"call_id": "c1"' in payload or "c1" in payload
        assert all(TOKEN not in d for d in detail)
        assert "eyJ" not in "".join(detail)  # the JWT itself is never printed
        assert await asyncio.to_thread(Path(settings["fcm"]["service_account"]).is_file)
        # Private keys are the owner's alone (0600), certificates may be read by anyone.
        private = [
            Path(apns["key_file"]),
            Path(settings["fcm"]["service_account"]),
            *(tmp_path / "mock").glob("*.key"),
            *(tmp_path / "mock").glob("vapid.pem"),
        ]
        assert len(private) >= 5, private
        for path in private:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
    assert proc.returncode == 0


async def test_mock_push_faults_from_the_start_and_typed_while_it_runs(tmp_path: Path) -> None:
    """``--fault dead TOKEN`` kills a token from the start; a command typed on standard
    input queues a 429 with Retry-After for the next push; a bad command is answered
    with an error and changes nothing."""
    dead = "dead" * 16
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sipwake",
        "mock-push",
        "--port",
        "0",
        "--dir",
        str(tmp_path / "mock"),
        "--fault",
        f"dead {dead}",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stdin is not None

    async def said(prefix: str) -> str:
        while True:
            line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()  # type: ignore[union-attr]
            assert line, "mock-push exited"
            if line.startswith(prefix):
                return line

    try:
        assert "dead…dead is dead" in await said("fault:")
        await said("ready:")
        apns = yaml.safe_load((tmp_path / "mock" / "push.yaml").read_text())["push"]["apns"]
        provider = ApnsProvider(
            ApnsSettings(team_id=apns["team_id"], key_id=apns["key_id"], bundle_id="org.lab.phone"),
            private_key=await asyncio.to_thread(Path(apns["key_file"]).read_bytes),
            base_url=apns["base_url"],
            ssl_context=ssl.create_default_context(cafile=apns["ca_file"]),
        )

        def request(token: str) -> PushRequest:
            target = PushTarget(provider="apns", prid=token, param="TEAM123456.org.lab.phone.voip")
            return PushRequest(kind="call", target=target, call_id="c1")

        try:
            gone = await provider.send(request(dead))
            assert (gone.status, gone.http_status, gone.reason) == (
                "invalid_target",
                410,
                "Unregistered",
            )
            proc.stdin.write(b"fail apns 42 Nonsense\n")
            proc.stdin.write(b"fail apns 429 TooManyRequests retry-after=3\n")
            await proc.stdin.drain()
            assert "error:" in await said("error:")
            assert "429 TooManyRequests, Retry-After 3 s" in await said("fault:")
            busy = await provider.send(request(TOKEN))
            assert (busy.status, busy.http_status, busy.retry_after) == ("retry", 429, 3.0)
            fine = await provider.send(request(TOKEN))  # the fault was for one push only
            assert fine.status == "delivered"
        finally:
            await provider.close()
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
    assert proc.returncode == 0
