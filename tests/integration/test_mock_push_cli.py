"""``sipwake mock-push`` as a user runs it: a subprocess that writes push settings and
accepts a real APNs push signed with the key it wrote."""

from __future__ import annotations

import asyncio
import ssl
import sys
from pathlib import Path

import pytest
import yaml

from sipwake.push.apns import ApnsProvider
from sipwake.push.base import PushRequest
from sipwake.push.payload import ApnsSettings
from sipwake.sip.pushtarget import PushTarget

pytestmark = pytest.mark.timeout(30)

TOKEN = "5eed" * 16


async def test_mock_push_accepts_a_push_from_its_own_settings(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sipwake",
        "mock-push",
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
        assert await asyncio.to_thread(Path(settings["fcm"]["service_account"]).is_file)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
    assert proc.returncode == 0
