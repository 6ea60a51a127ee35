"""The call recorder: grouping by call and Call-ID, wall time, bounds, batched writes.

Pure: the recorder is fed by hand (times are arguments) and writes to a ``MemoryStore``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from sipwake.calls import CallRecorder, sip_head
from sipwake.calls.recorder import kept_headers
from sipwake.calls.records import (
    MAX_HEADER_VALUE,
    MAX_HEADERS,
    CallDevice,
    CallEntry,
    CallMessageRecord,
    CallStepRecord,
)
from sipwake.proxy.wake import CallEvent, CallStep, SendPush
from sipwake.push.base import PushOutcome, PushRequest
from sipwake.sip.pushtarget import PushTarget
from sipwake.store import MemoryStore, StoreError

OFFSET = 1_800_000_000.0
ALICE = "sip:alice@lab.test"
CALLER = "udp:10.0.0.9:5060"
PHONE = "udp:10.0.0.5:5062"


def event(ref: str, at: float, step: CallStep, detail: str = "", aor: str = ALICE) -> CallEvent:
    return CallEvent(call_ref=ref, aor=aor, at=at, step=step, detail=detail)


def recorder(store: MemoryStore, **options: object) -> CallRecorder:
    return CallRecorder(store, wall_offset=OFFSET, **options)  # type: ignore[arg-type]


def first_lines(store: MemoryStore, ref: str) -> list[str]:
    record = store.call(ref)
    assert record is not None
    return [f"{m.direction} {m.first_line}" for m in record.messages]


def test_events_and_messages_are_grouped_by_call_with_wall_times() -> None:
    store = MemoryStore()
    rec = recorder(store)
    rec.call_event(event("r1", 10.0, "received", "from sip:bob@lab.test"))
    rec.bind_call_id("r1", "cid-1")
    rec.call_event(event("r2", 10.5, "received", "from sip:carol@lab.test", aor="sip:dave@lab"))
    rec.bind_call_id("r2", "cid-2")
    rec.message("out", PHONE, "INVITE sip:alice@10.0.0.5 SIP/2.0", "cid-1", 10.25)
    rec.message("out", "udp:10.0.0.7:5060", "INVITE sip:dave@10.0.0.7 SIP/2.0", "cid-2", 10.5)
    rec.message("in", PHONE, "SIP/2.0 180 Ringing", "cid-1", 11.0)
    rec.message("in", CALLER, "REGISTER sip:lab.test SIP/2.0", "reg-7", 11.0)  # not a call's
    rec.call_event(event("r1", 12.0, "answered", "iphone"))

    r1, r2 = store.call("r1"), store.call("r2")
    assert r1 is not None
    assert r2 is not None
    assert [e.step for e in r1.events] == ["received", "answered"]
    assert [e.wall for e in r1.events] == [OFFSET + 10.0, OFFSET + 12.0]
    assert [m.wall for m in r1.messages] == [OFFSET + 10.25, OFFSET + 11.0]
    assert first_lines(store, "r1") == [
        "out INVITE sip:alice@10.0.0.5 SIP/2.0",
        "in SIP/2.0 180 Ringing",
    ]
    assert first_lines(store, "r2") == ["out INVITE sip:dave@10.0.0.7 SIP/2.0"]
    assert r2.summary.aor == "sip:dave@lab"
    assert r1.summary.call_id == "cid-1"
    assert (r1.summary.outcome, r1.summary.answered_by) == ("answered", "iphone")
    # Sequence numbers follow arrival order across events and messages.
    seqs = sorted([*(e.seq for e in r1.events), *(m.seq for m in r1.messages)])
    assert seqs == sorted(set(seqs))
    assert rec.call_ref_of("cid-1") == "r1"
    assert rec.call_ref_of("reg-7") is None
    assert rec.pending_call_ids == 0


def test_an_invite_seen_before_the_binding_joins_its_call() -> None:
    store = MemoryStore()
    rec = recorder(store)
    # Challenged first, then the authenticated INVITE; the lead binds after the event.
    rec.message("in", CALLER, "INVITE sip:alice@lab.test SIP/2.0", "cid-1", 5.0)
    rec.message("out", CALLER, "SIP/2.0 407 Proxy Authentication Required", "cid-1", 5.0)
    rec.message("in", CALLER, "ACK sip:alice@lab.test SIP/2.0", "cid-1", 5.1)
    rec.message("in", CALLER, "INVITE sip:alice@lab.test SIP/2.0", "cid-1", 5.2)
    assert rec.pending_call_ids == 1
    rec.message("out", CALLER, "SIP/2.0 100 Trying", "cid-9", 5.2)  # another call, unbound
    rec.call_event(event("r1", 5.2, "received", "from sip:bob@lab.test"))
    assert store.call("r1") is not None
    assert first_lines(store, "r1") == []  # the 100 to cid-9 came between: no guess
    rec.bind_call_id("r1", "cid-1")
    assert first_lines(store, "r1") == [
        "in INVITE sip:alice@lab.test SIP/2.0",
        "out SIP/2.0 407 Proxy Authentication Required",
        "in ACK sip:alice@lab.test SIP/2.0",
        "in INVITE sip:alice@lab.test SIP/2.0",
    ]
    record = store.call("r1")
    assert record is not None
    assert record.summary.started == OFFSET + 5.0  # the first INVITE, before the step
    assert record.summary.call_id == "cid-1"
    assert rec.pending_call_ids == 0
    rec.bind_call_id("r1", "cid-1")  # again: nothing new
    assert len(first_lines(store, "r1")) == 4


def test_received_right_after_an_unbound_invite_binds_it() -> None:
    store = MemoryStore()
    rec = recorder(store)
    rec.message("in", CALLER, "INVITE sip:alice@lab.test SIP/2.0", "cid-1", 1.0)
    rec.message("out", CALLER, "SIP/2.0 100 Trying", "cid-1", 1.0)
    rec.call_event(event("r1", 1.0, "received", "from sip:bob@lab.test"))
    rec.message("out", PHONE, "INVITE sip:alice@10.0.0.5 SIP/2.0", "cid-1", 1.0)
    assert rec.call_ref_of("cid-1") == "r1"
    assert first_lines(store, "r1") == [
        "in INVITE sip:alice@lab.test SIP/2.0",
        "out SIP/2.0 100 Trying",
        "out INVITE sip:alice@10.0.0.5 SIP/2.0",
    ]
    record = store.call("r1")
    assert record is not None
    assert [e.call_id for e in record.events] == ["cid-1"]


def test_a_push_names_its_calls_call_id() -> None:
    store = MemoryStore()
    rec = recorder(store)
    rec.call_event(event("r1", 1.0, "received", "from sip:bob@lab.test"))
    rec.message("in", PHONE, "INVITE sip:x SIP/2.0", "cid-1", 1.0)  # pending, not bound
    request = PushRequest(
        kind="call", target=PushTarget(provider="fcm", prid="tok" * 10), call_id="cid-1"
    )
    push = SendPush(push_id=1, request=request, binding_id="b1", aor=ALICE, call_ref="r1")
    rec.push_done(push, PushOutcome(status="delivered", provider="fcm"))
    assert rec.call_ref_of("cid-1") == "r1"
    assert first_lines(store, "r1") == ["in INVITE sip:x SIP/2.0"]
    # A push for a call no longer followed binds nothing.
    other = SendPush(push_id=2, request=request, binding_id="b1", aor=ALICE, call_ref="gone")
    rec.push_done(other, PushOutcome(status="delivered", provider="fcm"))
    assert len(rec) == 1


def test_messages_per_call_are_capped_with_one_note() -> None:
    store = MemoryStore()
    rec = recorder(store, max_messages=3)
    rec.call_event(event("r1", 0.0, "received"))
    rec.bind_call_id("r1", "cid")
    for i in range(10):
        rec.message("in", PHONE, f"SIP/2.0 18{i} Progress", "cid", 1.0 + i)
    record = store.call("r1")
    assert record is not None
    assert len(record.messages) == 3
    assert [e.step for e in record.events] == ["received", "truncated"]
    assert record.events[1].detail == "more than 3 messages: later ones not kept"
    assert record.events[1].wall == OFFSET + 4.0


def test_finished_calls_are_forgotten_after_their_linger() -> None:
    store = MemoryStore()
    rec = recorder(store, linger_s=30.0, answered_linger_s=600.0)
    rec.call_event(event("r1", 0.0, "received"))
    rec.bind_call_id("r1", "cid-1")
    rec.call_event(event("r1", 1.0, "cancelled", "by the caller"))
    rec.call_event(event("r2", 2.0, "received"))
    rec.bind_call_id("r2", "cid-2")
    rec.call_event(event("r2", 3.0, "answered", "iphone"))
    rec.message("in", CALLER, "ACK sip:a SIP/2.0", "cid-1", 20.0)  # within the linger
    assert first_lines(store, "r1") == ["in ACK sip:a SIP/2.0"]
    rec.message("in", CALLER, "SIP/2.0 200 OK", "cid-1", 31.0)  # r1 is forgotten now
    assert first_lines(store, "r1") == ["in ACK sip:a SIP/2.0"]
    assert rec.call_ref_of("cid-1") is None
    assert len(rec) == 1
    # An answered call lingers longer; its BYE shortens the wait to linger_s.
    rec.message("in", CALLER, "BYE sip:a SIP/2.0", "cid-2", 300.0)
    rec.message("out", PHONE, "BYE sip:a SIP/2.0", "cid-2", 300.0)
    rec.message("in", PHONE, "SIP/2.0 200 OK", "cid-2", 300.1)
    assert len(first_lines(store, "r2")) == 3
    rec.message("in", CALLER, "INVITE sip:other SIP/2.0", "cid-3", 331.0)
    assert len(rec) == 0
    assert rec.call_ref_of("cid-2") is None


def test_followed_calls_and_pending_call_ids_are_bounded() -> None:
    store = MemoryStore()
    rec = recorder(store, max_live=3, max_pending=2, linger_s=10.0)
    for i in range(5):
        rec.call_event(event(f"r{i}", float(i), "received"))
        rec.bind_call_id(f"r{i}", f"cid-{i}")
    assert len(rec) == 3
    assert [rec.call_ref_of(f"cid-{i}") for i in range(5)] == [None, None, "r2", "r3", "r4"]
    for i in range(4):
        rec.message("in", CALLER, "INVITE sip:x SIP/2.0", f"new-{i}", 5.0)
    assert rec.pending_call_ids == 2
    rec.message("in", CALLER, "INVITE sip:x SIP/2.0", "late", 15.1)  # the others are stale
    assert rec.pending_call_ids == 1
    assert len(store.calls()) == 5  # the store keeps what the recorder forgot


class FakeSchedule:
    """``loop.call_later`` stand-in: remembers callbacks; the test runs them."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, Callable[[], None]]] = []

    def __call__(self, delay: float, callback: Callable[[], None]) -> None:
        self.calls.append((delay, callback))


class CountingLog(MemoryStore):
    def __init__(self, *, fail: bool = False) -> None:
        super().__init__()
        self.batches: list[int] = []
        self.fail = fail

    def record_call_entries(self, entries: Sequence[CallEntry]) -> None:
        self.batches.append(len(entries))
        if self.fail:
            raise StoreError("disk full")
        super().record_call_entries(entries)


def test_writes_are_batched_when_a_schedule_is_given() -> None:
    store = CountingLog()
    schedule = FakeSchedule()
    rec = recorder(store, schedule=schedule, flush_delay=0.2, max_batch=4)
    rec.message("in", CALLER, "INVITE sip:alice SIP/2.0", "cid", 1.0)
    rec.call_event(event("r1", 1.0, "received"))
    rec.call_event(event("r1", 1.0, "push-sent", "call to apns (try 1)"))
    assert store.batches == []
    assert [d for d, _ in schedule.calls] == [0.2]  # armed once
    schedule.calls[0][1]()
    assert store.batches == [3]
    record = store.call("r1")
    assert record is not None
    assert [e.call_id for e in record.events] == ["cid", "cid"]
    for i in range(4):
        rec.call_event(event("r1", 2.0 + i, "forked", f"dev{i}"))
    assert store.batches == [3, 4]  # max_batch reached: written without waiting
    rec.call_event(event("r1", 9.0, "answered", "dev0"))
    assert len(schedule.calls) == 2  # the flush armed by the first "forked" is still due
    rec.close()
    assert store.batches == [3, 4, 1]
    schedule.calls[1][1]()  # the armed flush finds nothing left
    assert store.batches == [3, 4, 1]


def test_a_failing_store_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    store = CountingLog(fail=True)
    rec = recorder(store)
    rec.call_event(event("r1", 1.0, "received"))
    rec.call_event(event("r1", 2.0, "cancelled"))
    assert rec.failures == 2
    assert "call records: cannot write 1 entries: disk full" in caplog.text
    store.fail = False
    rec.call_event(event("r1", 3.0, "ended"))
    record = store.call("r1")
    assert record is not None
    assert [e.step for e in record.events] == ["ended"]  # failed batches are dropped


def test_message_bytes_reads_the_first_line_and_call_id() -> None:
    store = MemoryStore()
    rec = recorder(store)
    rec.call_event(event("r1", 1.0, "received"))
    rec.bind_call_id("r1", "cid@h")
    data = b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h\r\ni: cid@h\r\nContent-Length: 0\r\n\r\n"
    rec.message_bytes("in", PHONE, data, 2.0)
    rec.message_bytes("in", PHONE, b"\r\n\r\n", 2.0)  # a keep-alive
    record = store.call("r1")
    assert record is not None
    assert record.messages == (
        CallMessageRecord(
            ref="r1",
            seq=2,
            wall=OFFSET + 2.0,
            direction="in",
            peer=PHONE,
            first_line="SIP/2.0 180 Ringing",
            call_id="cid@h",
        ),
    )
    assert isinstance(record.events[0], CallStepRecord)


def test_sip_head() -> None:
    assert sip_head(b"INVITE sip:a SIP/2.0\r\nCall-ID: x1\r\n\r\nv=0\r\nCall-ID: no") == (
        "INVITE sip:a SIP/2.0",
        "x1",
    )
    assert sip_head(b"OPTIONS sip:a SIP/2.0\r\ncall-id :  spaced \r\n\r\n") == (
        "OPTIONS sip:a SIP/2.0",
        "spaced",
    )
    assert sip_head(b"\r\n\r\n") is None
    assert sip_head(b"INVITE sip:a SIP/2.0\r\nTo: <sip:a>\r\n\r\n") is None
    assert sip_head(b"") is None
    # A Call-ID line in the body is not the message's, however it is spelled.
    assert sip_head(b"MESSAGE sip:a SIP/2.0\r\nTo: <sip:a>\r\n\r\nx\r\nCall-ID: body") is None
    assert sip_head(b"SIP/2.0 200 OK\r\ni: compact\r\n\r\nx\r\nCall-ID: body") == (
        "SIP/2.0 200 OK",
        "compact",
    )
    assert sip_head(b"BYE sip:a SIP/2.0\r\nCall-ID:\r\ni: second\r\n\r\n") is None
    assert sip_head(b"\r\nCall-ID: x\r\n\r\n") is None  # no first line
    assert sip_head(b"ACK sip:a SIP/2.0\r\nCall-ID:  tight\r\nCSeq: 1 ACK") == (
        "ACK sip:a SIP/2.0",
        "tight",
    )


def test_bad_arguments_are_refused() -> None:
    rec = recorder(MemoryStore())
    with pytest.raises(ValueError, match="direction must be 'in' or 'out'"):
        rec.message("sideways", PHONE, "x", "c", 0.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty Call-ID"):
        rec.bind_call_id("r1", "")
    with pytest.raises(ValueError, match="max_messages must be > 0"):
        recorder(MemoryStore(), max_messages=0)


# -- header fields, hang-up side, devices ----------------------------------------------------
def sip(first_line: str, call_id: str, *headers: str, body: bytes = b"") -> bytes:
    head = "\r\n".join([first_line, f"Call-ID: {call_id}", *headers])
    return f"{head}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


def test_kept_headers_are_the_bounded_set_that_explains_a_call() -> None:
    data = sip(
        "SIP/2.0 200 OK",
        "c1",
        "Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK1",
        "f: <sip:bob@lab.test>;tag=c1",  # compact forms (RFC 3261 §7.3.3)
        "t: <sip:alice@lab.test>;tag=a1",
        "CSeq: 1 INVITE",
        f"m: <sip:alice@10.0.0.5:5062;pn-provider=apns;pn-prid={'ab12' * 16}>",
        'Proxy-Authorization: Digest username="alice", response="secret"',
        "Reason: Q.850;cause=16;",
        ' text="Normal call clearing"',  # folded onto two lines (RFC 3261 §7.3.1)
        "Server: Linphone/5.2",
        f'Warning: 399 lab.test "{"w" * 300}"',
        body=b"v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\n",
    )
    headers = kept_headers(data)
    assert [name for name, _ in headers] == [
        "From", "To", "CSeq", "Contact", "Reason", "Server", "Warning"
    ]  # fmt: skip
    values = dict(headers)
    assert values["Reason"] == 'Q.850;cause=16; text="Normal call clearing"'
    assert values["Contact"] == "<sip:alice@10.0.0.5:5062;pn-provider=apns;pn-prid=ab12…ab12>"
    assert len(values["Warning"]) == MAX_HEADER_VALUE
    assert values["Warning"].endswith("…")
    assert "secret" not in repr(headers)  # credentials are never kept
    assert "v=0" not in repr(headers)  # nor the body
    many = sip(
        "BYE sip:a SIP/2.0", "c1", *(f"History-Info: <sip:h{i}@lab>;index=1" for i in range(40))
    )
    assert len(kept_headers(many)) == MAX_HEADERS


def test_headers_are_kept_for_a_calls_messages_only() -> None:
    store = MemoryStore()
    rec = recorder(store)
    invite = sip("INVITE sip:alice@lab.test SIP/2.0", "c1", "From: <sip:bob@lab.test>;tag=b1")
    rec.message_bytes("in", CALLER, invite, 1.0)
    rec.call_event(event("r1", 1.0, "received", "from sip:bob@lab.test"))
    rec.message_bytes("in", PHONE, sip("REGISTER sip:lab.test SIP/2.0", "reg", "To: <sip:x>"), 1.1)
    ringing = sip("SIP/2.0 486 Busy Here", "c1", "CSeq: 1 INVITE", "Server: Zoiper")
    rec.message_bytes("in", PHONE, ringing, 1.2)
    record = store.call("r1")
    assert record is not None
    assert [m.headers for m in record.messages] == [
        (("From", "<sip:bob@lab.test>;tag=b1"),),
        (("CSeq", "1 INVITE"), ("Server", "Zoiper")),
    ]


def answered_call(store: MemoryStore, **options: object) -> CallRecorder:
    """Bob (tag b1) calls alice; her phone (tag a1) answers."""
    rec = recorder(store, **options)
    rec.message_bytes(
        "in", CALLER, sip("INVITE sip:alice@lab.test SIP/2.0", "c1", "f: <sip:bob@lab>;tag=b1"), 1
    )
    rec.call_event(event("r1", 1.0, "received", "from sip:bob@lab"))
    rec.message_bytes("out", PHONE, sip("INVITE sip:alice@10.0.0.5:5062 SIP/2.0", "c1"), 1.0)
    rec.message_bytes("in", PHONE, sip("SIP/2.0 200 OK", "c1", "CSeq: 1 INVITE"), 3.0)
    rec.call_event(event("r1", 3.0, "answered", "urn:uuid:phone-1"))
    return rec


def steps(store: MemoryStore) -> list[tuple[str, str]]:
    record = store.call("r1")
    assert record is not None
    return [(e.step, e.detail) for e in record.events]


@pytest.mark.parametrize(
    ("side", "peer", "from_"),
    [
        ("caller", CALLER, "<sip:bob@lab>;tag=b1"),
        ("callee", PHONE, "<sip:alice@lab.test>;tag=a1"),
        # The caller's BYE from another address is still the caller's: tags decide.
        ("caller", "udp:10.0.0.99:5060", "<sip:bob@lab>;tag=b1"),
    ],
)
def test_the_first_bye_received_says_who_hung_up(side: str, peer: str, from_: str) -> None:
    store = MemoryStore()
    rec = answered_call(store)
    rec.message_bytes("out", PHONE, sip("BYE sip:alice@10.0.0.5 SIP/2.0", "c1"), 9.0)  # ignored
    rec.message_bytes("in", peer, sip("BYE sip:x SIP/2.0", "c1", f"From: {from_}"), 10.0)
    other = "<sip:alice@lab.test>;tag=a1" if side == "caller" else "<sip:bob@lab>;tag=b1"
    rec.message_bytes("in", PHONE, sip("BYE sip:x SIP/2.0", "c1", f"From: {other}"), 10.1)
    assert [s for s in steps(store) if s[0] == "hangup"] == [("hangup", f"by the {side}")]
    (summary,) = store.calls()
    assert (summary.ended, summary.ended_by) == (OFFSET + 10.0, side)


def test_a_branch_names_its_device_and_the_answer_names_the_device() -> None:
    asked: list[tuple[str, str, str]] = []

    def devices(aor: str, request_uri: str, peer: str) -> CallDevice | None:
        asked.append((aor, request_uri, peer))
        return CallDevice(
            peer=peer,
            aor=aor,
            contact=request_uri,
            instance="urn:uuid:phone-1",
            user_agent="Linphone/5.2 (iPhone; iOS 17.1)",
            push="apns",
        )

    store = MemoryStore()
    rec = answered_call(store, devices=devices)
    rec.message_bytes("out", PHONE, sip("INVITE sip:alice@10.0.0.5:5062 SIP/2.0", "c1"), 1.5)
    assert asked == [(ALICE, "sip:alice@10.0.0.5:5062", PHONE)]  # once per peer
    (branch,) = [detail for step, detail in steps(store) if step == "branch"]
    device = CallDevice.from_detail(branch)
    assert device is not None
    assert (device.peer, device.instance, device.hint()) == (
        PHONE,
        "urn:uuid:phone-1",
        "iPhone, apns",
    )
    assert ("answered", "sip:alice@lab.test (iPhone, apns)") in steps(store)
    (summary,) = store.calls()
    assert summary.answered_by == "sip:alice@lab.test (iPhone, apns)"


def test_a_failing_device_lookup_is_logged_and_the_call_still_recorded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def devices(aor: str, request_uri: str, peer: str) -> CallDevice | None:
        raise RuntimeError("registrar gone")

    store = MemoryStore()
    answered_call(store, devices=devices)
    assert ("answered", "urn:uuid:phone-1") in steps(store)  # the engine's label, as it was
    assert "device lookup failed: registrar gone" in caplog.text


@pytest.mark.parametrize(
    ("direction", "first_line", "extra", "kept"),
    [
        # What a peer sends says who it is and why: all of it is read.
        ("in", "INVITE sip:alice@lab.test SIP/2.0", (), ["From", "CSeq", "Reason"]),
        ("in", "SIP/2.0 181 Call Is Being Forwarded", (), ["From", "CSeq", "Reason"]),
        ("in", "BYE sip:alice@10.0.0.5 SIP/2.0", (), ["From", "CSeq", "Reason"]),
        ("in", "SIP/2.0 486 Busy Here", (), ["From", "CSeq", "Reason"]),
        # A 100, a 180, a 183 and a 2xx to a BYE say nothing more than their CSeq; an
        # ACK nothing its first line does not.
        ("in", "SIP/2.0 100 Trying", (), ["CSeq"]),
        ("in", "SIP/2.0 180 Ringing", (), ["CSeq"]),
        ("in", "SIP/2.0 183 Session Progress", (), ["CSeq"]),
        ("in", "ACK sip:alice@10.0.0.5 SIP/2.0", (), []),
        ("in", "SIP/2.0 200 OK", ("CSeq: 2 BYE",), ["CSeq"]),
        # Of what sipwake sends, forwarded copies keep no more than a response's CSeq ...
        ("out", "SIP/2.0 180 Ringing", (), ["CSeq"]),
        ("out", "BYE sip:alice@10.0.0.5 SIP/2.0", (), []),
        ("out", "INVITE sip:alice@10.0.0.5 SIP/2.0", (), []),
        # ... what it adds or decides is read: a diversion, a CANCEL, its own failure.
        ("out", "INVITE sip:vm@10.0.0.7 SIP/2.0", ("Diversion: <sip:a@lab>",), None),
        ("out", "CANCEL sip:alice@10.0.0.5 SIP/2.0", (), ["From", "CSeq", "Reason"]),
        ("out", "SIP/2.0 480 Temporarily Unavailable", (), ["From", "CSeq", "Reason"]),
    ],
)
def test_header_fields_are_read_where_they_can_say_something(
    direction: str, first_line: str, extra: tuple[str, ...], kept: list[str] | None
) -> None:
    store = MemoryStore()
    rec = answered_call(store)
    cseq = extra[0] if extra and extra[0].startswith("CSeq") else "CSeq: 1 INVITE"
    more = [e for e in extra if not e.startswith("CSeq")]
    data = sip(first_line, "c1", "From: <sip:x@lab>;tag=9", cseq, *more, "Reason: SIP;cause=1")
    rec.message_bytes(direction, PHONE, data, 5.0)  # type: ignore[arg-type]
    record = store.call("r1")
    assert record is not None
    names = [name for name, _ in record.messages[-1].headers]
    assert names == (kept if kept is not None else ["From", "CSeq", "Diversion", "Reason"])


def test_cseq_is_found_in_any_case() -> None:
    store = MemoryStore()
    rec = answered_call(store)
    rec.message_bytes("out", CALLER, sip("SIP/2.0 200 OK", "c1", "cseq : 2 BYE"), 5.0)
    record = store.call("r1")
    assert record is not None
    assert record.messages[-1].headers == (("CSeq", "2 BYE"),)
