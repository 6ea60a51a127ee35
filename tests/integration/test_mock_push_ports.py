"""``sipwake mock-push`` at fixed ports with its files kept: a server configured once
from ``push.yaml`` keeps working when the mocks are started again."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
import yaml

from sipwake.push.mockcli import mock_ports, run_mock_push

pytestmark = pytest.mark.timeout(30)


def _three_free_ports() -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        ok = True
        for port in (base, base + 1, base + 2):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
        if ok:
            return base
    raise RuntimeError("no three consecutive free ports")


async def _run_once(directory: Path, port: int) -> tuple[dict[str, dict[str, str]], list[str]]:
    stop = asyncio.Event()
    said: list[str] = []

    def say(line: str) -> None:
        said.append(line)
        if line.startswith("ready:"):
            stop.set()

    snippet = await run_mock_push(
        directory, bundle_id="org.lab.phone", say=say, stop=stop, poll_s=0.01, port=port
    )
    settings = yaml.safe_load(await asyncio.to_thread(snippet.read_text))["push"]
    return settings, said


def test_ports_are_the_base_and_the_next_two() -> None:
    assert mock_ports(18443) == {"apns": 18443, "fcm": 18444, "webpush": 18445}
    assert mock_ports(0) == {"apns": 0, "fcm": 0, "webpush": 0}


async def test_a_second_run_listens_where_the_first_did_with_the_same_files(
    tmp_path: Path,
) -> None:
    base = _three_free_ports()
    first, said = await _run_once(tmp_path / "mock", base)
    assert first["apns"]["base_url"] == f"https://127.0.0.1:{base}"
    assert first["fcm"]["base_url"] == f"https://127.0.0.1:{base + 1}"
    assert f"mock Web Push at https://127.0.0.1:{base + 2}" in said[2]
    files = {
        name: await asyncio.to_thread(Path(path).read_bytes)
        for name, path in (
            ("apns-key", first["apns"]["key_file"]),
            ("apns-ca", first["apns"]["ca_file"]),
            ("fcm-ca", first["fcm"]["ca_file"]),
            ("account", first["fcm"]["service_account"]),
            ("vapid", first["webpush"]["vapid_key_file"]),
        )
    }
    second, _ = await _run_once(tmp_path / "mock", base)
    assert second == first
    for name, data in files.items():
        path = {
            "apns-key": second["apns"]["key_file"],
            "apns-ca": second["apns"]["ca_file"],
            "fcm-ca": second["fcm"]["ca_file"],
            "account": second["fcm"]["service_account"],
            "vapid": second["webpush"]["vapid_key_file"],
        }[name]
        assert await asyncio.to_thread(Path(path).read_bytes) == data, name
