"""Digest authentication in the replay: simulated phones and callers answer 401/407 with
``sipwake.sip.auth.DigestClient``; the embedded server authenticates when the scenario
gives passwords; a missing or wrong password is a named failure, not a hang."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipwake.ids import SeededIds
from sipwake.scenario import evaluate, load_scenario, parse_scenario
from sipwake.scenario.agents import AnswerPlan, CallerAgent, DeviceAgent, Transmit
from sipwake.scenario.record import Replay
from sipwake.scenario.runner import _Runner, replay
from sipwake.sip.auth import AuthResult, DigestServer, parse_credentials
from sipwake.sip.message import Request, Response, make_response
from sipwake.sip.peer import Peer

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
AUTH_SCENARIO = SCENARIOS / "authenticated-phones-wake-and-answer.yaml"
SERVER = Peer(transport="udp", host="127.0.0.1", port=5060)
SECRET = b"0123456789abcdef0123456789abcdef"


def _labels(record: Replay, agent: str) -> list[str]:
    """What ``agent`` sent and got, in order (its own ladder column)."""
    return [
        f"{'>' if r.src == agent else '<'} {r.label}"
        for r in record.rows
        if r.dst and agent in (r.src, r.dst)
    ]


# -- the virtual replay --------------------------------------------------------------------
def test_a_scenario_with_passwords_passes_through_401_and_407() -> None:
    record = replay(load_scenario(AUTH_SCENARIO))
    checks = evaluate(record)
    assert all(c.met for c in checks), [str(c.error()) for c in checks if not c.met]
    assert record.auth_failures == []
    # The phone registers, is challenged (401), registers with credentials and gets 200;
    # woken later it registers on the nonce it has: no second challenge.
    bob = _labels(record, "bob.iphone")
    assert bob[:4] == ["> REGISTER", "< 401 (REGISTER)", "> REGISTER", "< 200 (REGISTER)"]
    assert bob.count("< 401 (REGISTER)") == 1
    assert bob.count("< 200 (REGISTER)") == 2
    # The caller's INVITE and MESSAGE are challenged by the proxy (407), then go through.
    carol = _labels(record, "carol")
    assert carol[:3] == ["> INVITE", "< 407 Proxy Authentication Required", "> INVITE"]
    message = carol.index("> MESSAGE")
    assert carol[message : message + 4] == [
        "> MESSAGE",
        "< 407 (MESSAGE)",
        "> MESSAGE",
        "< 202 (MESSAGE)",
    ]
    # The challenge is not the call's outcome: the caller's final answer is the 200.
    assert record.calls["call1"].final is not None
    assert record.calls["call1"].final[1] == 200


def test_the_same_scenario_without_passwords_is_never_challenged() -> None:
    text = AUTH_SCENARIO.read_text().replace('  carol:\n    password: "carol-pw-2024"\n', "")
    for line in [ln for ln in text.splitlines() if "password:" in ln]:
        text = text.replace(line + "\n", "")
    assert "password:" not in text
    record = replay(parse_scenario(text))
    assert all(c.met for c in evaluate(record))
    labels = [r.label for r in record.rows]
    assert not any(label.startswith(("401", "407")) for label in labels)


def test_a_wrong_password_fails_naming_the_user() -> None:
    runner = _Runner(load_scenario(AUTH_SCENARIO))
    runner.devices["bob.iphone"].set_credentials("not bob's password")
    record = runner.run()
    (failure,) = record.auth_failures
    assert failure.startswith("bob (bob.iphone): the server refused the credentials of bob (403")
    assert "wrong password or auth_user?" in failure
    checks = evaluate(record)
    auth = checks[-1]
    assert auth.kind == "authentication"
    assert not auth.met
    assert "bob (bob.iphone)" in auth.got
    # Bob could not register, so he was never woken: the call expectations miss too.
    missed = {c.kind for c in checks if not c.met}
    assert {"push", "answered", "authentication"} <= missed
    # The 403 was the REGISTER's answer; the phone did not try again and again.
    assert _labels(record, "bob.iphone").count("> REGISTER") == 2


def test_a_challenge_to_a_caller_without_a_password_is_named_not_hung() -> None:
    text = AUTH_SCENARIO.read_text().replace('  carol:\n    password: "carol-pw-2024"\n', "")
    record = replay(parse_scenario(text))
    assert record.auth_failures == [
        "carol: the server asked for authentication (407 to INVITE) and the scenario gives "
        "no password (users.carol.password)",
        "carol: the server asked for authentication (407 to MESSAGE) and the scenario gives "
        "no password (users.carol.password)",
    ]
    # The 407 ends the call: the caller's final answer, not a call left hanging.
    assert record.calls["call1"].final is not None
    assert record.calls["call1"].final[1] == 407
    notes = [r.label for r in record.rows if r.src == "carol" and not r.dst]
    assert any("gives no password" in n for n in notes)
    checks = evaluate(record)
    assert checks[-1].kind == "authentication"
    assert "carol: the server asked for authentication (407 to INVITE)" in checks[-1].got


def test_the_password_is_not_in_the_scenarios_repr() -> None:
    scenario = load_scenario(AUTH_SCENARIO)
    assert scenario.users["bob"].password == "correct horse battery staple"
    assert "correct horse" not in repr(scenario)


# -- the agents against a digest server -----------------------------------------------------
def _device() -> DeviceAgent:
    return DeviceAgent(
        name="bob.desk",
        user="bob",
        domain="lab.test",
        transport="udp",
        port=7001,
        ids=SeededIds(3),
        push_params="",
        instance="urn:uuid:00000000-0000-4000-8000-000000000001",
        platform="desk",
        answer=AnswerPlan(ring=True, status=None),
    )


def _challenge(request: Request, server: DigestServer, status: int, now: float) -> bytes:
    response = make_response(request, status, to_tag="srv")
    header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    for challenge in server.challenge(now):
        response.headers.add(header, str(challenge))
    return response.to_bytes()


def _only(out: list[Transmit]) -> Request:
    (transmit,) = out
    assert isinstance(transmit.message, Request)
    return transmit.message


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_a_device_answers_401_and_counts_nc_on_the_next_register(algorithm: str) -> None:
    server = DigestServer("lab.test", SECRET, algorithms=(algorithm,))
    device = _device()
    device.set_credentials("pw-bob")
    first = _only(device.register(1.0))
    assert "Authorization" not in first.headers
    retry = _only(device.receive(_challenge(first, server, 401, 1.0), SERVER, 1.0))
    assert retry.cseq.seq == first.cseq.seq + 1
    assert retry.call_id == first.call_id
    assert retry.top_via.branch != first.top_via.branch
    credentials = parse_credentials(retry.headers.get("Authorization") or "")
    assert (credentials.username, credentials.algorithm) == ("bob", algorithm)
    assert (credentials.qop, credentials.nc, credentials.uri) == (
        "auth",
        "00000001",
        "sip:lab.test",
    )
    assert server.verify(credentials, method="REGISTER", password="pw-bob", now=1.1) is (
        AuthResult.OK
    )
    # The next REGISTER (a wake) is authorized at once on the same nonce, nc counting up.
    device._on_response(make_response(retry, 200, to_tag="srv"), None, 1.2)
    again = _only(device.register(2.0))
    assert again.cseq.seq == retry.cseq.seq + 1
    later = parse_credentials(again.headers.get("Authorization") or "")
    assert (later.nonce, later.nc) == (credentials.nonce, "00000002")
    assert server.verify(later, method="REGISTER", password="pw-bob", now=2.1) is AuthResult.OK


def test_a_second_challenge_after_the_credentials_gives_up_and_says_why() -> None:
    server = DigestServer("lab.test", SECRET, algorithms=("MD5",))
    device = _device()
    device.set_credentials("wrong")
    first = _only(device.register(1.0))
    retry = _only(device.receive(_challenge(first, server, 401, 1.0), SERVER, 1.0))
    out = device.receive(_challenge(retry, server, 401, 1.1), SERVER, 1.1)
    assert out == []
    assert device.registered == 401
    assert device.auth_failures == [
        "bob (bob.desk): the server asked again for authentication (401 to REGISTER) after "
        "bob's credentials were sent: wrong password or auth_user?"
    ]


def test_a_stale_nonce_is_answered_once_more() -> None:
    server = DigestServer("lab.test", SECRET, algorithms=("MD5",), nonce_lifetime=1.0)
    device = _device()
    device.set_credentials("pw-bob")
    first = _only(device.register(1.0))
    retry = _only(device.receive(_challenge(first, server, 401, 1.0), SERVER, 1.0))
    stale = make_response(retry, 401, to_tag="srv")
    for challenge in server.challenge(5.0, stale=True):
        stale.headers.add("WWW-Authenticate", str(challenge))
    third = _only(device.receive(stale.to_bytes(), SERVER, 5.0))
    credentials = parse_credentials(third.headers.get("Authorization") or "")
    assert server.verify(credentials, method="REGISTER", password="pw-bob", now=5.1) is (
        AuthResult.OK
    )
    assert device.auth_failures == []


def test_a_caller_answers_a_401_to_invite_and_its_ack_carries_the_credentials() -> None:
    # Some PBXes (Asterisk among them) challenge an INVITE with 401, not 407.
    server = DigestServer("pbx.example", SECRET, algorithms=("SHA-256", "MD5"))
    caller = CallerAgent(name="carol", user="carol", domain="lab.test", port=6000, ids=SeededIds(5))
    caller.set_credentials("pw-carol", auth_user="1001")
    _, out = caller.invite("call1", "bob", 1.0)
    invite = _only(out)
    transmits = caller.receive(_challenge(invite, server, 401, 1.0), SERVER, 1.0)
    # The transaction layer ACKs the 401; the INVITE goes again with credentials.
    retry = next(
        t.message
        for t in transmits
        if isinstance(t.message, Request) and t.message.method == "INVITE"
    )
    assert retry.cseq.seq == 2
    assert retry.from_.tag == invite.from_.tag
    credentials = parse_credentials(retry.headers.get("Authorization") or "")
    assert (credentials.username, credentials.algorithm) == ("1001", "SHA-256")
    assert (
        server.verify(credentials, method="INVITE", password="pw-carol", now=1.1, body=retry.body)
        is AuthResult.OK
    )
    ok = make_response(retry, 200, to_tag="bob1")
    ok.headers.add("Contact", "<sip:bob@127.0.0.1:7001>")
    (ack,) = (t.message for t in caller.receive(ok.to_bytes(), SERVER, 1.2))
    assert isinstance(ack, Request)
    assert ack.method == "ACK"
    assert str(ack.cseq) == "2 ACK"
    assert ack.headers.get("Authorization") == retry.headers.get("Authorization")
    assert caller.calls["call1"].invite is retry


def test_an_agent_without_a_password_does_not_retry() -> None:
    device = _device()
    first = _only(device.register(1.0))
    server = DigestServer("lab.test", SECRET)
    challenge = make_response(first, 401, to_tag="srv")
    for c in server.challenge(1.0):
        challenge.headers.add("WWW-Authenticate", str(c))
    assert not device.will_answer(challenge)
    assert device.receive(challenge.to_bytes(), SERVER, 1.0) == []
    assert device.registered == 401
    assert device.auth_failures == [
        "bob (bob.desk): the server asked for authentication (401 to REGISTER) and the "
        "scenario gives no password (users.bob.password)"
    ]
    assert isinstance(challenge, Response)
