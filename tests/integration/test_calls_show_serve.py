"""``sipwake calls`` and ``sipwake calls show`` after real calls through ``sipwake serve``
on loopback: a forked call answered by one of two phones of the same user and hung up
by that phone (BYE with a Q.850 Reason), a call the caller cancels (CANCEL with a
Reason), and a call no phone answers, diverted to voicemail (Diversion, History-Info)
and hung up by the caller.

What is checked is what an engineer reads there (RFC 3261 §12.2.1.1: a BYE carries
its sender's tag in From; RFC 3326 Reason; RFC 5806 Diversion; RFC 7044 History-Info):
ring and talk time, who hung up, the two phones told apart, the headers that explain
the call, every line within 80 columns.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from serving import running
from sipua import Ua, udp_address

from sipwake.cli import main
from sipwake.config import Config, ListenerSpec, StoreConfig, TlsConfig, UserConfig
from sipwake.sip.message import Request, Response, make_response

pytestmark = pytest.mark.timeout(60)

Q850 = 'Q.850;cause=16;text="Normal call clearing"'
CANCEL_REASON = 'SIP;cause=487;text="Caller gave up"'


async def register(ua: Ua, n: int) -> None:
    """A phone of bob: its own instance, an iPhone's User-Agent."""
    request = ua.request(
        "REGISTER",
        "sip:lab.test",
        to="<sip:bob@lab.test>",
        extra="Expires: 600\r\nUser-Agent: Linphone/5.2 (iPhone; iOS 17.1)\r\n",
    )
    request.headers.set(
        "Contact",
        f'<sip:bob@127.0.0.1:{ua.port}>;+sip.instance="<urn:uuid:00000000-0000-4000-8000-00000000000{n}>"',
    )
    await ua.transact(request, 200)


async def ring(phone: Ua, tag: str) -> tuple[Request, tuple[str, int]]:
    """The phone gets the INVITE and answers 180; returns it and where to answer."""
    invite = await phone.expect("INVITE")
    assert isinstance(invite, Request)
    back = phone.sent_from[invite.call_id + "INVITE"]
    phone.send(make_response(invite, 180, to_tag=tag), back)
    return invite, back


def in_dialog(ua: Ua, method: str, target: Ua, route: str, call_id: str, **kw: str) -> Request:
    """A request within the dialog, through sipwake: ``route`` is the Record-Route it put
    in the dialog (RFC 3261 §12.1: the route set), with its dialog token."""
    return ua.request(
        method,
        f"sip:{target.user}@127.0.0.1:{target.port}",
        call_id=call_id,
        cseq=int(kw.pop("cseq", "2")),
        extra=f"Route: {route}\r\n" + kw.pop("extra", ""),
        **kw,
    )


def _route(message: Request | Response) -> str:
    (record_route,) = message.headers.get_all("Record-Route")  # one: UDP in and out
    return record_route


async def answered_call(alice: Ua, b1: Ua, b2: Ua, server: tuple[str, int]) -> str:
    invite = alice.request(
        "INVITE", "sip:bob@lab.test", to="<sip:bob@lab.test>", extra="User-Agent: Zoiper 5\r\n"
    )
    alice.send(invite)
    got1, back1 = await ring(b1, "bob1")
    got2, back2 = await ring(b2, "bob2")
    await asyncio.sleep(0.2)  # ring time
    ok = make_response(got1, 200, to_tag="bob1")
    ok.headers.add("Contact", b1.contact)
    ok.headers.add("Record-Route", _route(got1))  # RFC 3261 §12.1.1: the UAS copies it
    ok.headers.add("Server", "Linphone/5.2 (iPhone; iOS 17.1)")
    b1.send(ok, back1)
    cancel = await b2.expect("CANCEL")  # the other phone stops ringing
    b2.send(make_response(cancel, 200), back2)
    b2.send(make_response(got2, 487, to_tag="bob2"), back2)
    final = await alice.expect(200)
    assert isinstance(final, Response)
    route = _route(final)
    ack = in_dialog(
        alice, "ACK", b1, route, invite.call_id, cseq="1", to="<sip:bob@lab.test>;tag=bob1"
    )
    alice.send(ack)
    await asyncio.sleep(0.3)  # talk time
    bye = in_dialog(
        b1,
        "BYE",
        alice,
        _route(got1),
        invite.call_id,
        to="<sip:alice@lab.test>;tag=ft",
        from_tag="bob1",
        extra=f"Reason: {Q850}\r\n",
    )
    b1.send(bye, back1)
    got = await alice.expect("BYE")
    assert isinstance(got, Request)
    alice.send(make_response(got, 200))
    await b1.expect(200)
    return invite.call_id


async def cancelled_call(alice: Ua, b1: Ua, b2: Ua) -> str:
    invite = alice.request("INVITE", "sip:bob@lab.test", to="<sip:bob@lab.test>")
    alice.send(invite)
    got1, back1 = await ring(b1, "bob1")
    got2, back2 = await ring(b2, "bob2")
    await alice.expect(180)
    cancel = alice.cancel_last().replace(
        b"Content-Length: 0", f"Reason: {CANCEL_REASON}\r\nContent-Length: 0".encode()
    )
    alice.send(cancel)
    for phone, got, back, tag in ((b1, got1, back1, "bob1"), (b2, got2, back2, "bob2")):
        forwarded = await phone.expect("CANCEL")
        phone.send(make_response(forwarded, 200), back)
        phone.send(make_response(got, 487, to_tag=tag), back)
    await alice.expect(487)
    return invite.call_id


async def diverted_call(alice: Ua, b1: Ua, b2: Ua, vm: Ua, server: tuple[str, int]) -> str:
    invite = alice.request("INVITE", "sip:bob@lab.test", to="<sip:bob@lab.test>")
    alice.send(invite)
    for phone, tag in ((b1, "bob1"), (b2, "bob2")):
        got, back = await ring(phone, tag)
        cancel = await phone.expect("CANCEL", within=4)  # no answer: the call moves on
        phone.send(make_response(cancel, 200), back)
        phone.send(make_response(got, 487, to_tag=tag), back)
    diverted = await vm.expect("INVITE", within=4)
    assert isinstance(diverted, Request)
    ok = make_response(diverted, 200, to_tag="vm1")
    ok.headers.add("Contact", vm.contact)
    ok.headers.add("Record-Route", _route(diverted))
    vm.send(ok, vm.sent_from[diverted.call_id + "INVITE"])
    answer = await alice.expect(200)
    assert isinstance(answer, Response)
    route = _route(answer)
    alice.send(in_dialog(alice, "ACK", vm, route, invite.call_id, cseq="1", to=str(answer.to)))
    await asyncio.sleep(0.2)
    bye = in_dialog(alice, "BYE", vm, route, invite.call_id, cseq="3", to=str(answer.to))
    alice.send(bye)
    got = await vm.expect("BYE")
    assert isinstance(got, Request)
    vm.send(make_response(got, 200), vm.sent_from[got.call_id + "BYE"])
    await alice.expect(200)
    return invite.call_id


def cli(*args: str) -> str:
    done = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert done.exit_code == 0, done.output
    return done.output


async def test_calls_show_after_real_calls(tmp_path: Path) -> None:
    db = tmp_path / "sipwake.db"
    vm = await Ua("vm", "", ("127.0.0.1", 9), "lab.test").start()
    config = Config(
        domain="lab.test",
        listen=[ListenerSpec(transport="udp", host="127.0.0.1", port=0)],
        store=StoreConfig(backend="sqlite", path=db),
        tls=TlsConfig(dir=tmp_path / "tls"),
        users={"alice": UserConfig(password="a"), "bob": UserConfig(password="b")},
        secret_file=tmp_path / "secret",
        admin=None,
        auth={"open": True},  # type: ignore[arg-type]
        calls={"no_answer_s": 1.0, "voicemail": f"sip:vm@127.0.0.1:{vm.port}"},  # type: ignore[arg-type]
    )
    phones: list[Ua] = []
    try:
        async with running(config) as server:
            address = udp_address(server)
            alice = await Ua("alice", "a", address, "lab.test").start()
            b1 = await Ua("bob", "b", address, "lab.test").start()
            b2 = await Ua("bob", "b", address, "lab.test").start()
            phones += [alice, b1, b2]
            await register(b1, 1)
            await register(b2, 2)
            answered = await answered_call(alice, b1, b2, address)
            cancelled = await cancelled_call(alice, b1, b2)
            diverted = await diverted_call(alice, b1, b2, vm, address)
            await asyncio.sleep(0.1)
    finally:
        for ua in (*phones, vm):
            ua.close()

    calls = {c["call_id"]: c for c in json.loads(cli("calls", "--db", str(db), "--json"))}
    first = calls[answered]
    assert (first["outcome"], first["ended_by"]) == ("answered", "callee")
    assert 0.15 < first["ring_s"] < 1.0
    assert 0.25 < first["talk_s"] < 1.5
    assert first["duration_s"] == pytest.approx(first["ring_s"] + first["talk_s"])
    assert (calls[cancelled]["outcome"], calls[cancelled]["ended_by"]) == ("cancelled", "caller")
    assert calls[cancelled]["talk_s"] is None
    assert (calls[diverted]["outcome"], calls[diverted]["ended_by"]) == ("answered", "caller")
    assert calls[diverted]["ring_s"] > 0.9  # the no-answer time before voicemail

    listing = cli("calls", "--db", str(db)).splitlines()
    assert all(len(line) <= 80 for line in listing)
    row = next(line for line in listing if first["ref"] in line)
    words = row.split()
    assert words[3:7] + words[9:] == ["alice", "→", "bob", "answered", "callee", "0"]
    assert words[7:9] == [f"{first['ring_s']:.1f}s", f"{first['talk_s']:.1f}s"]

    # Answered by one phone (b1), hung up by it with a Q.850 Reason; the other was
    # cancelled with "Call completed elsewhere" (RFC 3326).
    data = json.loads(cli("calls", "--db", str(db), "show", first["ref"], "--json"))
    labels = {p["instance"]: p["label"] for p in data["participants"] if p["instance"]}
    b1_label = labels["urn:uuid:00000000-0000-4000-8000-000000000001"]
    b2_label = labels["urn:uuid:00000000-0000-4000-8000-000000000002"]
    assert {b1_label, b2_label} == {"bob#1", "bob#2"}
    assert data["ended_by"] == {
        "who": "callee",
        "how": f"the callee {b1_label} (BYE)",
        "reason": Q850,
    }
    assert data["answered_by"] == f"{b1_label} sip:bob@lab.test (iPhone, udp)"
    bye = next(m for m in data["messages"] if m["first_line"].startswith("BYE "))
    assert ["Reason", Q850] in bye["headers"]
    assert bye["party"] == b1_label

    lines = cli("calls", "--db", str(db), "show", first["ref"]).splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    field = {
        line[2:12].strip(): line[12:] for line in lines if line[:3].strip() and line[:2] == "  "
    }
    assert field["outcome"] == f"answered by {b1_label} sip:bob@lab.test (iPhone, udp)"
    assert "urn:uuid" not in field["outcome"]  # only in the legend
    assert field["ended by"] == f"the callee {b1_label} (BYE)"
    assert lines[lines.index(f"  ended by  the callee {b1_label} (BYE)") + 1] == (
        f"            Reason: {Q850}"
    )
    assert field["answered"].endswith(f"ring {first['ring_s']:.3f} s")
    assert field["ended"].endswith(f"talk {first['talk_s']:.3f} s")
    assert field["duration"] == f"{first['duration_s']:.3f} s"
    legend = lines[lines.index("participants") + 1 : lines.index("timeline")]
    assert "    instance  urn:uuid:00000000-0000-4000-8000-000000000001" in legend
    assert "    agent     Linphone/5.2 (iPhone; iOS 17.1)" in legend
    assert legend[0] == "  caller    sip:alice@lab.test (Zoiper, udp)"
    ladder = lines[lines.index("ladder") + 1 :]
    assert ladder[0].split() == ["caller", "sipwake", "bob#1", "bob#2"]
    assert any("|<- BYE" in line for line in ladder)
    assert any('Reason: SIP;cause=200;text="Call complet' in line for line in ladder)
    assert any(f"* answered by {b1_label}" in line for line in ladder)
    assert any("* hangup by the callee" in line for line in ladder)

    # Cancelled by the caller, with its Reason.
    ref = calls[cancelled]["ref"]
    shown = cli("calls", "--db", str(db), "show", ref).splitlines()
    assert "  ended by  the caller (CANCEL)" in shown
    assert f"            Reason: {CANCEL_REASON}" in shown

    # Diverted to voicemail after no answer; the caller hung up.
    ref = calls[diverted]["ref"]
    shown = cli("calls", "--db", str(db), "show", ref, "--messages").splitlines()
    assert all(len(line) <= 80 for line in shown), max(shown, key=len)
    assert any(line.startswith("  diverted  to sip:vm@127.0.0.1") for line in shown)
    assert "  ended by  the caller (BYE)" in shown
    ladder = shown[shown.index("ladder") + 1 : shown.index("messages")]
    assert ladder[0].split() == ["caller", "sipwake", "bob#1", "bob#2", "vm"]
    assert any("|  Diversion: <sip:bob@lab.test>;reason=" in line for line in ladder)
    assert any("History-Info: <sip:bob@lab.test>;index=1" in line for line in ladder)
    messages = shown[shown.index("messages") + 1 :]
    assert "            Diversion: <sip:bob@lab.test>;reason=no-answer;counter=1" in messages
    assert "            CSeq: 3 BYE" in messages
