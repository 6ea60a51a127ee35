"""The status/admin endpoint: where it listens, and how client commands find their server.

Two servers on one machine (two checkouts, two users) must not clash, and ``sipwake
status`` / ``sipwake mobile`` run in a server's folder must talk to that server, never to
another one that happens to listen where it expects (the endpoint used to be fixed at
127.0.0.1:5064: a second server only logged a warning, and ``status`` showed the first
server's users).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from sipwake.cli import main
from sipwake.config import Config, ListenerSpec, StoreConfig, TlsConfig, UserConfig
from sipwake.server import Server

pytestmark = pytest.mark.timeout(60)


def _config(folder: Path, domain: str, *, port: int = 0, admin: str | None = "auto") -> Config:
    folder.mkdir(parents=True, exist_ok=True)
    return Config(
        domain=domain,
        listen=[ListenerSpec(transport="udp", host="127.0.0.1", port=port)],
        store=StoreConfig(backend="memory"),
        tls=TlsConfig(dir=folder / "tls"),
        users={"alice": UserConfig(password="a")},
        secret_file=folder / "sipwake-secret",
        admin=admin,
    )


async def _cli(*args: str, cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sipwake",
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _free_udp_tcp_port() -> int:
    """A port free for UDP and for TCP at +4 (the auto admin port)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 4 > 65535:
            continue
        with socket.socket() as t:
            try:
                t.bind(("127.0.0.1", port + 4))
            except OSError:
                continue
        return port
    raise AssertionError("no free port pair")


async def test_two_servers_on_one_machine_each_found_from_its_own_folder(
    tmp_path: Path,
) -> None:
    first = Server(_config(tmp_path / "one", "one.test"))
    second = Server(_config(tmp_path / "two", "two.test"))
    await first.start()
    await second.start()
    try:
        assert first.admin is not None
        assert second.admin is not None
        assert first.admin.port != second.admin.port
        for folder, domain in (("one", "one.test"), ("two", "two.test")):
            code, out, err = await _cli("status", "--json", cwd=tmp_path / folder)
            assert code == 0, err
            data = json.loads(out)
            assert data["domain"] == domain
            assert data["server"]["folder"] == str((tmp_path / folder).resolve())
            assert data["server"]["pid"] == os.getpid()
        # --server names the folder from anywhere.
        code, out, _ = await _cli(
            "status", "--json", "--server", str(tmp_path / "two"), cwd=tmp_path
        )
        assert code == 0
        assert json.loads(out)["domain"] == "two.test"
    finally:
        await first.close()
        await second.close()


async def test_auto_admin_sits_beside_the_first_sip_port_or_takes_a_free_one(
    tmp_path: Path,
) -> None:
    port = _free_udp_tcp_port()
    server = Server(_config(tmp_path / "a", "lab.test", port=port))
    await server.start()
    try:
        assert server.admin is not None
        assert server.admin.port == port + 4
    finally:
        await server.close()
    # The usual port taken (another program): any free port, written to the admin file.
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", port + 4))
    blocker.listen()
    try:
        server = Server(_config(tmp_path / "b", "lab.test", port=port))
        await server.start()
        try:
            assert server.admin is not None
            assert server.admin.port not in (0, port + 4)
            recorded = json.loads((tmp_path / "b" / "sipwake-admin").read_text())
            assert recorded["url"] == server.admin.url
        finally:
            await server.close()
    finally:
        blocker.close()


async def test_an_address_the_config_names_is_not_silently_replaced(tmp_path: Path) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    server = Server(_config(tmp_path, "lab.test", admin=f"127.0.0.1:{taken}"))
    try:
        with pytest.raises(OSError, match=r"admin endpoint 127\.0\.0\.1:\d+: .*--admin"):
            await server.start()
    finally:
        await server.close()
        blocker.close()


async def test_admin_file_is_private_and_removed_at_stop(tmp_path: Path) -> None:
    server = Server(_config(tmp_path, "lab.test"))
    await server.start()
    path = tmp_path / "sipwake-admin"
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        recorded = json.loads(path.read_text())
        assert server.admin is not None
        assert recorded["url"] == server.admin.url
        assert len(recorded["token"]) >= 24
    finally:
        await server.close()
    assert not path.exists()


async def test_client_refuses_a_server_that_is_not_the_one_of_its_folder(tmp_path: Path) -> None:
    """A stale admin file (its server crashed) whose address another server now holds."""
    other = Server(_config(tmp_path / "other", "other.test"))
    await other.start()
    try:
        assert other.admin is not None
        stale = tmp_path / "mine"
        stale.mkdir()
        (stale / "sipwake-admin").write_text(
            json.dumps({"url": other.admin.url, "token": "not-the-token", "pid": 1})
        )
        code, out, err = await _cli("status", cwd=stale)
        assert code == 2
        assert "other.test" not in out
        assert f"is not the sipwake serve of {stale.resolve()}" in err
        assert "other.test" in err  # says whose server it is
        code, _, err = await _cli("mobile", "answer", "+4917012345", cwd=stale)
        assert code == 2
        assert "is not the sipwake serve of" in err
    finally:
        await other.close()


async def test_client_says_when_no_server_runs_in_the_folder(tmp_path: Path) -> None:
    code, _, err = await _cli("status", cwd=tmp_path)
    assert code == 2
    assert "no sipwake serve runs in" in err
    assert "--server" in err
    # A file left by a server that died: nothing listens there any more.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    (tmp_path / "sipwake-admin").write_text(
        json.dumps({"url": f"http://127.0.0.1:{dead}", "token": "t", "pid": 4242})
    )
    code, _, err = await _cli("status", cwd=tmp_path)
    assert code == 2
    assert "is not running" in err
    assert "4242" in err


async def test_actions_need_the_token_reads_do_not(tmp_path: Path) -> None:
    server = Server(_config(tmp_path, "lab.test"))
    await server.start()
    try:
        assert server.admin is not None
        url = server.admin.url
        async with httpx.AsyncClient() as client:
            status = await client.get(f"{url}/status")
            assert status.status_code == 200
            assert status.json()["server"]["domain"] == "lab.test"
            denied = await client.post(f"{url}/mobile/123/answer")
            assert denied.status_code == 403
            wrong = await client.get(f"{url}/status", headers={"X-Sipwake-Token": "x"})
            assert wrong.status_code == 403
            token = json.loads((tmp_path / "sipwake-admin").read_text())["token"]
            allowed = await client.post(
                f"{url}/mobile/123/answer", headers={"X-Sipwake-Token": token}
            )
            assert allowed.status_code == 409  # reached the action: no built-in mobile here
        # --url alone from another folder: reads work, actions say what they need.
        code, out, _ = await _cli("status", "--json", "--url", url, cwd=tmp_path.parent)
        assert code == 0
        assert json.loads(out)["domain"] == "lab.test"
        code, _, err = await _cli("mobile", "answer", "123", "--url", url, cwd=tmp_path.parent)
        assert code == 2
        assert "wants its token" in err
    finally:
        await server.close()


async def test_admin_off(tmp_path: Path) -> None:
    server = Server(_config(tmp_path, "lab.test", admin=None))
    await server.start()
    try:
        assert server.admin is None
        assert not (tmp_path / "sipwake-admin").exists()
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("off", None), ("auto", "auto"), ("127.0.0.1:7000", "127.0.0.1:7000"), ("none", None)],
)
def test_admin_setting_values(value: str, expected: Any) -> None:
    assert Config.model_validate({"admin": value}).admin == expected


def test_serve_refuses_a_bad_admin_flag() -> None:
    result = CliRunner().invoke(main, ["serve", "--admin", "localhost"])
    assert result.exit_code == 2
    assert "--admin" in result.output
    assert "expected auto, off or HOST:PORT" in result.output


async def test_sipwake_dnd_sets_and_clears_a_users_dnd_through_the_admin_endpoint(
    tmp_path: Path,
) -> None:
    """`sipwake dnd USER on|off` in the server's folder: the status shows (DND), the plan
    the next call gets has it; an unknown user is an error, and so is a POST without the
    token (anyone on the machine could read the status, not change it)."""
    server = Server(_config(tmp_path, "lab.test"))
    await server.start()
    try:
        assert server.admin is not None
        assert server.node is not None
        code, out, err = await _cli("dnd", "alice", "on", cwd=tmp_path)
        assert code == 0, err
        assert "alice: do not disturb on" in out
        assert server.node.plan_of("alice").dnd is True
        code, out, err = await _cli("dnd", "alice", "off", cwd=tmp_path)
        assert code == 0, err
        assert server.node.plan_of("alice").dnd is False
        code, _, err = await _cli("dnd", "nobody", "on", cwd=tmp_path)
        assert code == 1
        assert "no user 'nobody'" in err
        code, _, err = await _cli("dnd", "alice", "maybe", cwd=tmp_path)
        assert code == 2
        async with httpx.AsyncClient() as client:
            denied = await client.post(f"{server.admin.url}/dnd/alice/on")
        assert denied.status_code == 403
        assert server.node.plan_of("alice").dnd is False
    finally:
        await server.close()
