"""Real-time replay in-process: against a running sipwake at ``target``, and what the
embedded server's store keeps across a restart."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from sipwake.config import AuthConfig, Config, ListenerSpec, StoreConfig, TlsConfig
from sipwake.scenario import evaluate, load_scenario, parse_scenario
from sipwake.scenario.live import MockPush, replay_live
from sipwake.server import Server

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"

pytestmark = pytest.mark.timeout(30)


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (target mode uses one for both)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both UDP and TCP")


def _free_pair() -> int:
    """A port with the next one free too (the mock APNs and FCM of target mode)."""
    for _ in range(20):
        port = _free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            try:
                tcp.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no two consecutive free ports")


async def test_target_mode_replays_against_a_running_sipwake(tmp_path: Path) -> None:
    port = _free_port()
    config = Config(
        domain="lab.test",
        listen=[
            ListenerSpec(transport="udp", host="127.0.0.1", port=port),
            ListenerSpec(transport="tcp", host="127.0.0.1", port=port),
        ],
        store=StoreConfig(backend="memory"),
        tls=TlsConfig(dir=tmp_path / "tls"),
        auth=AuthConfig(open=True),
        users={},
        admin=None,
        secret_file=tmp_path / "secret",
    )
    server = Server(config, open=True)
    await server.start()
    try:
        scenario = load_scenario(SCENARIOS / "foreground-rings-at-once.yaml")
        mocks = MockPush(port=_free_pair(), directory=tmp_path / "mock-push")
        record = await replay_live(
            scenario, tmp_path / "run", target=("127.0.0.1", port), mocks=mocks
        )
    finally:
        await server.close()
    checks = evaluate(record)
    assert all(c.met for c in checks), [str(c.error()) for c in checks if not c.met]
    assert record.target == f"127.0.0.1:{port}"
    # Against a target the server's internals are not seen: only what the agents saw.
    assert not any(r.src == "sipwake" and not r.dst for r in record.rows)
    labels = [(r.src, r.dst, r.label) for r in record.rows]
    assert ("sipwake", "bob.desk", "INVITE") in labels
    assert ("bob.desk", "sipwake", "200 OK") in labels
    # Real time: the answer came 3 s after the desk phone rang, give or take jitter.
    (answer,) = record.calls["call1"].answers
    assert answer[1] == "bob.desk"
    assert 3.95 <= answer[0] <= 4.05


async def test_a_message_held_across_a_restart_is_delivered_from_the_store(
    tmp_path: Path,
) -> None:
    # The message arrives while the phone sleeps and cannot wake (the push is lost on a
    # phone that never wakes); the server restarts; the phone then comes back by itself
    # and the restarted server delivers the message it read from its SQLite file.
    text = (SCENARIOS / "message-stored-until-wake.yaml").read_text()
    text = text.replace("wake_delay_s: 2", "wake_delay_s: never")
    message = '    message: {from: carol, to: bob, text: "Call me when you land", id: note}\n'
    text = text.replace(
        f"  - at: 1\n{message}",
        f"  - at: 0.5\n{message}"
        "  - at: 1\n    restart_server: {down_s: 0.3}\n"
        "  - at: 2\n    resume: bob.iphone\n",
    )
    text = text.replace(
        "after_wake: true, at: 3.06, tolerance: 0.2", "after_wake: false, at: 2.0, tolerance: 0.2"
    )
    scenario = parse_scenario(text)
    record = await replay_live(scenario, tmp_path)
    checks = evaluate(record)
    assert all(c.met for c in checks), [str(c.error()) for c in checks if not c.met]
    notes = [r.label for r in record.rows if r.src == "sipwake" and not r.dst]
    assert "started again on the same ports: 1 bindings from the store" in notes
    assert record.calls["note"].delivered[0][1] == "bob.iphone"


def _quicker(name: str, *edits: tuple[str, str]) -> str:
    """A library scenario with shorter times, so it runs in about two seconds."""
    text = (SCENARIOS / name).read_text()
    for old, new in edits:
        assert old in text, f"{old!r} not in {name}"
        text = text.replace(old, new)
    return text


async def test_sealed_call_details_are_opened_by_the_phone_in_real_time(tmp_path: Path) -> None:
    # Over real TLS the phone keeps the push key of its REGISTER's 200 and opens the
    # sealed payload of the push the server really sent.
    text = _quicker(
        "innovaphone-encrypted-call-push.yaml",
        ("at: 1\n", "at: 0.2\n"),
        ("wake_delay_s: 2", "wake_delay_s: 0.3"),
        ("answer_after_s: 1", "answer_after_s: 0.2"),
        ("at: 4.06, tolerance: 0.1", "at: 0.76, tolerance: 0.15"),
    )
    record = await replay_live(parse_scenario(text), tmp_path)
    checks = evaluate(record)
    assert all(c.met for c in checks), [str(c.error()) for c in checks if not c.met]
    (push,) = [p for p in record.pushes if p.kind == "call"]
    assert push.opened is not None
    assert push.opened["call_id"] == record.calls["call1"].call_id


async def test_flexisip_invite_then_cancel_reaches_the_phone_in_real_time(tmp_path: Path) -> None:
    text = _quicker(
        "flexisip-invite-cancel-after-caller-gives-up.yaml",
        ("at: 1\n", "at: 0.2\n"),
        ("at: 3\n", "at: 0.5\n"),
        ("wake_delay_s: 5", "wake_delay_s: 0.8"),
        ("within: 5.5", "within: 1.5"),
    )
    record = await replay_live(parse_scenario(text), tmp_path)
    checks = evaluate(record)
    assert all(c.met for c in checks), [str(c.error()) for c in checks if not c.met]
    ((_, device, reason),) = record.calls["call1"].device_cancels
    assert device == "bob.iphone"
    assert reason is not None
    assert "cause=200" in reason


async def test_suspend_in_real_time_closes_the_connection_and_the_call_pushes(
    tmp_path: Path,
) -> None:
    # The app goes to the background: its TLS connection really closes, the embedded
    # server keeps the binding as suspended, and the next call is a push, not an INVITE.
    text = _quicker(
        "suspend-then-call-wakes-by-push.yaml",
        ("  - at: 5\n    suspend: bob.iphone", "  - at: 0.2\n    suspend: bob.iphone"),
        ("  - at: 10\n    call:", "  - at: 0.5\n    call:"),
        ("wake_delay_s: 2", "wake_delay_s: 0.3"),
        ("answer_after_s: 1", "answer_after_s: 0.2"),
        ("at: 13.06, tolerance: 0.1", "at: 1.06, tolerance: 0.15"),
    )
    record = await replay_live(parse_scenario(text), tmp_path)
    checks = evaluate(record)
    assert all(c.met for c in checks), [str(c.error()) for c in checks if not c.met]
    (push,) = [p for p in record.pushes if p.kind == "call"]
    assert 0.5 <= push.at < 0.6
    (invite,) = record.calls["call1"].device_invites
    assert invite[0] > record.wakes[0][0]  # the INVITE came over the woken connection


async def test_resume_in_real_time_brings_an_offline_phone_into_the_ringing_call(
    tmp_path: Path,
) -> None:
    text = _quicker(
        "late-registering-device-joins-ringing-call.yaml",
        ("  - at: 1\n    call:", "  - at: 0.2\n    call:"),
        ("  - at: 3\n    resume: bob.desk", "  - at: 0.6\n    resume: bob.desk"),
        ("wake_delay_s: 8", "wake_delay_s: 1.2"),
        ("answer_after_s: 1.5", "answer_after_s: 0.3"),
        ("at: 4.51, tolerance: 0.1", "at: 0.91, tolerance: 0.15"),
        ("within: 3.7", "within: 1.0"),
    )
    record = await replay_live(parse_scenario(text), tmp_path)
    checks = evaluate(record)
    assert all(c.met for c in checks), [str(c.error()) for c in checks if not c.met]
    notes = [r.label for r in record.rows if r.src == "bob.desk" and not r.dst]
    assert "comes online: new connection, REGISTER" in notes
    ((at, who),) = record.calls["call1"].device_invites
    assert who == "bob.desk"
    assert 0.6 <= at < 0.75
