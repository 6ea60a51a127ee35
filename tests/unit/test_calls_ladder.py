"""Call records drawn as text: the summary rules, the timeline and the ladder (pure)."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from sipwake.calls import (
    CallMessageRecord,
    CallRecord,
    CallStepRecord,
    CallSummary,
    advance,
    render_ladder,
    render_timeline,
)
from sipwake.calls.ladder import message_label
from sipwake.calls.records import CallDevice
from sipwake.calls.view import durations, render_call, render_call_list
from sipwake.push.base import PushOutcome, PushRecord, PushRequest
from sipwake.sip.pushtarget import PushTarget

WALL = 1_800_000_000.0
AOR = "sip:alice@lab.test"
CALLER = "udp:10.0.0.9:5060"
PHONE = "tls:10.0.0.5:5061#3"
CALL_ID = "a84b4c76e66710@10.0.0.9"


class Builder:
    """Entries of one call in order, as a recorder would write them."""

    def __init__(self) -> None:
        self.entries: list[CallStepRecord | CallMessageRecord] = []

    def step(self, at: float, step: str, detail: str = "") -> Builder:
        self.entries.append(
            CallStepRecord(
                ref="r1",
                seq=len(self.entries) + 1,
                wall=WALL + at,
                aor=AOR,
                step=step,
                detail=detail,
                call_id=CALL_ID,
            )
        )
        return self

    def msg(
        self,
        at: float,
        direction: Literal["in", "out"],
        peer: str,
        line: str,
        *headers: tuple[str, str],
    ) -> Builder:
        self.entries.append(
            CallMessageRecord(
                ref="r1",
                seq=len(self.entries) + 1,
                wall=WALL + at,
                direction=direction,
                peer=peer,
                first_line=line,
                call_id=CALL_ID,
                headers=headers,
            )
        )
        return self

    def device(self, at: float, device: CallDevice) -> Builder:
        """The recorder's ``branch`` step: which device a peer is."""
        return self.step(at, "branch", device.to_detail())

    def record(self, pushes: tuple[PushRecord, ...] = ()) -> CallRecord:
        summary: CallSummary | None = None
        for entry in self.entries:
            summary = advance(summary, entry)
        assert summary is not None
        return CallRecord(
            summary=summary,
            events=tuple(e for e in self.entries if isinstance(e, CallStepRecord)),
            messages=tuple(e for e in self.entries if isinstance(e, CallMessageRecord)),
            pushes=pushes,
        )


def push_record(*, latency: float = 0.0123) -> PushRecord:
    request = PushRequest(
        kind="call",
        target=PushTarget(provider="apns", prid="c0ffee00" * 8, param="TEAM.org.lab.voip"),
        call_id=CALL_ID,
    )
    outcome = PushOutcome(status="delivered", provider="apns", http_status=200, latency=latency)
    return PushRecord.of(request, outcome, wall=WALL + 0.0004, aor=AOR, binding_id="b1")


IPHONE = CallDevice(
    peer=PHONE,
    aor=AOR,
    contact="sip:alice@10.0.0.5:5061;transport=tls",
    instance="urn:uuid:0a1b2c3d-0000-4000-8000-00000000a11c",
    user_agent="Linphone/5.2 (iPhone; iOS 17.1)",
    push="apns",
)


def push_wake_call() -> Builder:
    """INVITE to a sleeping iPhone: push, registration, late fork, 180, 200."""
    return (
        Builder()
        .msg(0.0, "in", CALLER, "INVITE sip:alice@lab.test SIP/2.0")
        .msg(0.0, "out", CALLER, "SIP/2.0 100 Trying")
        .step(0.0, "received", "from sip:bob@lab.test")
        .step(0.0, "push-sent", "call to apns (try 1)")
        .step(0.015, "push-result", "call apns delivered")
        .step(0.8, "registered", "iphone")
        .step(0.8, "forked", "iphone")
        .msg(0.8, "out", PHONE, "INVITE sip:alice@10.0.0.5:5061;transport=tls SIP/2.0")
        .device(0.8, IPHONE)
        .msg(0.85, "in", PHONE, "SIP/2.0 180 Ringing")
        .msg(0.85, "out", CALLER, "SIP/2.0 180 Ringing")
        .msg(3.2, "in", PHONE, "SIP/2.0 200 OK")
        .step(3.2, "answered", "iphone")
        .msg(3.2, "out", CALLER, "SIP/2.0 200 OK")
    )


GOLDEN = [
    "                caller            sipwake                apns       alice#1",
    "                  udp                                    push    iPhone, apns",
    "                   |                 |                     |           |",
    "  +0.000 s         |- INVITE ------->|                     |           |",
    "  +0.000 s         |<- 100 Trying ---|                     |           |",
    "  +0.000 s         |                 * received from sip:bob@lab.test  |",
    "  +0.000 s         |                 |- push call -------->|           |",
    "  +0.015 s         |                 |<- delivered 12 ms --|           |",
    "  +0.800 s         |                 * registered iphone   |           |",
    "  +0.800 s         |                 * forked iphone       |           |",
    "  +0.800 s         |                 |- INVITE ----------------------->|",
    "  +0.850 s         |                 |<- 180 Ringing ------------------|",
    "  +0.850 s         |<- 180 Ringing --|                     |           |",
    "  +3.200 s         |                 |<- 200 OK -----------------------|",
    "  +3.200 s         |                 * answered by alice#1 |           |",
    "  +3.200 s         |<- 200 OK -------|                     |           |",
]


def test_ladder_of_a_push_wake_call_matches_the_golden_lines() -> None:
    lines = render_ladder(push_wake_call().record(pushes=(push_record(),)))
    assert lines == GOLDEN
    assert max(len(line) for line in lines) <= 100


def test_ladder_without_push_records_times_the_push_between_its_steps() -> None:
    lines = render_ladder(push_wake_call().record())
    # The service is the one the step names; the latency is the gap between the steps.
    assert lines[0].split() == ["caller", "sipwake", "apns", "alice#1"]
    assert "|- push call -------->|" in lines[6]
    assert "|<- delivered 15 ms --|" in lines[7]


def test_ladder_names_a_fallback_provider_and_a_failed_status() -> None:
    record = (
        Builder()
        .step(0.0, "received", "from sip:bob@lab.test")
        .step(0.0, "push-sent", "call to fcm (try 1)")
        .step(0.2, "push-result", "call sandbox invalid_target Unregistered")
        .step(0.2, "push-sent", "cancel (missed call)")
        .step(0.3, "push-result", "cancel sandbox delivered")
        .record()
    )
    lines = render_ladder(record)
    assert lines[0].split() == ["caller", "sipwake", "fcm"]
    assert lines[1].split() == ["push"]
    arrows = [line.split("|")[2] for line in lines[3:] if line.count("|") == 3]
    assert arrows[0].startswith("- push call ")
    assert arrows[1] == "<- sandbox: inva… 200 ms "  # cut to fit its arrow, latency kept
    assert arrows[2].startswith("- push cancel ")  # the cancel goes where the call's went
    assert arrows[3] == "<- sandbox: deli… 100 ms "


def test_ladder_fits_narrow_widths_and_cuts_long_notes() -> None:
    record = push_wake_call().step(4.0, "diverted", "x" * 200).record()
    assert render_ladder(record, width=100)[-1].endswith("x…")
    assert max(len(line) for line in render_ladder(record, width=100)) == 100
    narrow = render_ladder(record, width=60)
    assert narrow[-1].endswith("…")
    assert max(len(line) for line in narrow) == 60


def test_ladder_offsets_start_at_the_first_entry_and_grow() -> None:
    record = push_wake_call().step(75.5, "ended").record()
    offsets = [line[:10].strip() for line in render_ladder(record)[3:]]
    assert offsets[0] == "+0.000 s"
    assert offsets[-1] == "+75.500 s"
    assert offsets == sorted(offsets, key=lambda o: float(o.strip("+ s")))


def test_ladder_of_a_call_without_messages_has_caller_and_sipwake() -> None:
    record = Builder().step(0.0, "received", "from sip:bob@lab.test").record()
    lines = render_ladder(record)
    assert lines[0].split() == ["caller", "sipwake"]
    assert lines[-1].endswith("* received from sip:bob@lab.test")


def test_message_labels() -> None:
    assert message_label("INVITE sip:alice@lab.test SIP/2.0") == "INVITE"
    assert message_label("SIP/2.0 486 Busy Here") == "486 Busy Here"
    assert message_label("SIP/2.0 200") == "200"


def test_timeline_lists_every_step_with_its_offset() -> None:
    lines = render_timeline(push_wake_call().record())
    assert lines == [
        "  +0.000 s  received    from sip:bob@lab.test",
        "  +0.000 s  push-sent   call to apns (try 1)",
        "  +0.015 s  push-result call apns delivered",
        "  +0.800 s  registered  iphone",
        "  +0.800 s  forked      iphone",
        "  +3.200 s  answered    iphone",
    ]


def test_summary_of_a_push_wake_call() -> None:
    summary = push_wake_call().record().summary
    assert summary.ref == "r1"
    assert summary.aor == AOR
    assert summary.caller == "sip:bob@lab.test"
    assert summary.call_id == CALL_ID
    assert summary.started == WALL
    assert summary.updated == WALL + 3.2
    assert summary.outcome == "answered"
    assert summary.answered_by == "iphone"
    assert summary.ringing is not None
    assert abs(summary.ringing - 3.2) < 1e-6
    assert summary.pushes == 1
    assert summary.messages == 7


def test_summary_outcome_keeps_the_telling_step() -> None:
    def summary(*steps: tuple[str, str]) -> CallSummary:
        builder = Builder().step(0.0, "received", "from sip:bob@lab.test")
        for i, (step, detail) in enumerate(steps, 1):
            builder.step(float(i), step, detail)
        return builder.record().summary

    assert summary().outcome == "ringing"
    assert summary().ringing is None
    assert summary(("busy", "every device is busy"), ("failed", "486")).outcome == "busy"
    no_answer = summary(("no-answer", "after 30 s"), ("failed", "480 (no-answer)"))
    assert no_answer.outcome == "no-answer"
    diverted = summary(("no-answer", "after 30 s"), ("diverted", "to sip:vm@lab.test"))
    assert (diverted.outcome, diverted.ringing) == ("diverted", 2.0)
    voicemail = summary(("diverted", "to sip:vm@lab.test"), ("answered", "divert vm"))
    assert (voicemail.outcome, voicemail.answered_by) == ("answered", "divert vm")
    assert summary(("diverted", "to vm"), ("failed", "no answer")).outcome == "failed"
    assert summary(("cancelled", "by the caller"), ("ended", "")).outcome == "cancelled"
    assert summary(("forked", "iphone"), ("twin", "sip:+33@gw")).outcome == "ringing"


def test_summary_starts_at_a_message_seen_before_the_first_step() -> None:
    first = CallStepRecord(ref="r", seq=2, wall=WALL + 1, aor=AOR, step="received")
    early = CallMessageRecord(
        ref="r", seq=1, wall=WALL, direction="in", peer=CALLER, first_line="INVITE x", call_id="c"
    )
    summary = advance(advance(None, first), early)
    assert (summary.started, summary.updated, summary.call_id) == (WALL, WALL + 1, "c")
    assert summary.messages == 1


# -- two phones of one user: labels, legend, headers, width ---------------------------------
PHONE_A = "udp:10.0.0.5:5062"
PHONE_B = "udp:10.0.0.5:5064"
CALLER_FROM = ("From", "<sip:bob@lab.test>;tag=c1")
Q850 = 'Q.850;cause=16;text="Normal call clearing"'
ELSEWHERE = 'SIP;cause=200;text="Call completed elsewhere"'


def phone(peer: str, n: int, agent: str, push: str, user: str = "alice") -> CallDevice:
    return CallDevice(
        peer=peer,
        aor=f"sip:{user}@lab.test",
        contact=f"sip:{user}@{peer.removeprefix('udp:')}",
        instance=f"urn:uuid:00000000-0000-4000-8000-00000000000{n}",
        user_agent=agent,
        push=push,
    )


def forked_call(user: str = "alice") -> Builder:
    """Bob calls a user with two phones whose contacts differ by one digit; the iPhone
    answers, the Android is cancelled, bob hangs up."""
    a = phone(PHONE_A, 1, "Linphone/5.2 (iPhone; iOS 17.1)", "apns", user)
    b = phone(PHONE_B, 2, "Linphone/5.2 (Android 14)", "fcm", user)
    cseq = ("CSeq", "1 INVITE")
    return (
        Builder()
        .msg(
            0.0,
            "in",
            CALLER,
            f"INVITE sip:{user}@lab.test SIP/2.0",
            CALLER_FROM,
            ("To", f"<sip:{user}@lab.test>"),
            cseq,
            ("Contact", "<sip:bob@10.0.0.9:5060>"),
            ("User-Agent", "Zoiper 5.6"),
        )
        .step(0.0, "received", "from sip:bob@lab.test")
        .msg(0.0, "out", CALLER, "SIP/2.0 100 Trying", cseq)
        .step(0.0, "forked", a.instance)
        .step(0.0, "forked", b.instance)
        .msg(0.001, "out", PHONE_A, f"INVITE {a.contact} SIP/2.0", cseq)
        .device(0.001, a)
        .msg(0.001, "out", PHONE_B, f"INVITE {b.contact} SIP/2.0", cseq)
        .device(0.001, b)
        .msg(0.1, "in", PHONE_A, "SIP/2.0 180 Ringing", cseq)
        .msg(0.1, "out", CALLER, "SIP/2.0 180 Ringing", cseq)
        .msg(0.12, "in", PHONE_B, "SIP/2.0 180 Ringing", cseq)
        .msg(
            4.0,
            "in",
            PHONE_A,
            "SIP/2.0 200 OK",
            cseq,
            ("Contact", f"<{a.contact};ob>"),
            ("Server", "Linphone/5.2 (iPhone; iOS 17.1)"),
        )
        .step(4.0, "answered", "sip:alice@lab.test (iPhone, apns)")
        .msg(4.0, "out", CALLER, "SIP/2.0 200 OK", cseq)
        .msg(4.0, "out", PHONE_B, f"CANCEL {b.contact} SIP/2.0", ("Reason", ELSEWHERE))
        .msg(4.01, "in", PHONE_B, "SIP/2.0 200 OK", ("CSeq", "1 CANCEL"))
        .msg(4.01, "in", PHONE_B, "SIP/2.0 487 Request Terminated", cseq)
        .msg(4.02, "in", CALLER, f"ACK {a.contact} SIP/2.0", ("CSeq", "1 ACK"))
        .msg(64.0, "in", CALLER, f"BYE {a.contact} SIP/2.0", CALLER_FROM, ("Reason", Q850))
        .step(64.0, "hangup", "by the caller")
        .msg(64.0, "out", PHONE_A, f"BYE {a.contact} SIP/2.0", CALLER_FROM, ("Reason", Q850))
        .msg(64.05, "in", PHONE_A, "SIP/2.0 200 OK", ("CSeq", "2 BYE"))
        .msg(64.05, "out", CALLER, "SIP/2.0 200 OK", ("CSeq", "2 BYE"))
    )


def test_two_phones_of_one_user_get_distinct_labels_within_80_columns() -> None:
    lines = render_ladder(forked_call().record())
    assert lines[0].split() == ["caller", "sipwake", "alice#1", "alice#2"]
    assert [w.strip() for w in lines[1].split("  ") if w.strip()] == [
        "Zoiper, udp",
        "iPhone, apns",
        "Android, fcm",
    ]
    assert max(len(line) for line in lines) <= 80
    # Devices are named by their labels, never by their instance URNs.
    assert not any("urn:uuid" in line for line in lines)
    assert any("* forked alice#1" in line for line in lines)
    assert any("* answered by alice#1" in line for line in lines)
    assert any("* hangup by the caller" in line for line in lines)


def test_long_user_names_keep_their_device_numbers_when_cut() -> None:
    user = "alexandra.konstantinopoulou"
    lines = render_ladder(forked_call(user).record())
    labels = lines[0].split()
    assert labels[2].endswith("…#1")
    assert labels[3].endswith("…#2")
    assert max(len(line) for line in lines) <= 80


def test_ladder_prints_the_headers_that_explain_a_call_under_their_arrows() -> None:
    lines = render_ladder(forked_call().record(), width=120)
    cancel = next(i for i, line in enumerate(lines) if "- CANCEL -" in line)
    assert lines[cancel + 1].split("|")[-1].strip() == f"Reason: {ELSEWHERE}"
    byes = [i for i, line in enumerate(lines) if "BYE --" in line]
    assert len(byes) == 2
    assert all(f"|  Reason: {Q850}" in lines[i + 1] for i in byes)
    # A response names the method it answers unless that is INVITE.
    assert any("<- 200 OK (CANCEL) -" in line for line in lines)
    assert any("<- 200 OK (BYE) -" in line for line in lines)
    assert sum("<- 200 OK ---" in line for line in lines) == 2  # the INVITE's, in and out
    narrow = render_ladder(forked_call().record())
    assert any(f"Reason: {ELSEWHERE}"[:30] in line for line in narrow)  # cut, still there
    assert max(len(line) for line in narrow) <= 80


def test_call_view_has_times_legend_and_who_hung_up() -> None:
    lines = render_call(forked_call().record())
    assert max(len(line) for line in lines) <= 80
    assert lines[0] == "call r1: sip:bob@lab.test → sip:alice@lab.test"
    head = lines[: lines.index("participants")]
    assert "  outcome   answered by alice#1 sip:alice@lab.test (iPhone, apns)" in head
    assert any(line.startswith("  answered  ") and line.endswith("ring 4.000 s") for line in head)
    assert any(line.startswith("  ended     ") and line.endswith("talk 60.000 s") for line in head)
    assert "  ended by  the caller (BYE)" in head
    assert f"            Reason: {Q850}" in head
    assert "  duration  64.000 s" in head
    legend = lines[lines.index("participants") + 1 : lines.index("timeline")]
    assert legend[0] == "  caller    sip:bob@lab.test (Zoiper, udp)"
    assert "    via       udp:10.0.0.9:5060" in legend
    assert "    agent     Zoiper 5.6" in legend
    a = legend.index("  alice#1   sip:alice@lab.test (iPhone, apns)")
    b = legend.index("  alice#2   sip:alice@lab.test (Android, fcm)")
    assert legend[a + 1 : b] == [
        "    via       udp:10.0.0.5:5062",
        "    contact   <sip:alice@10.0.0.5:5062;ob>",  # as the phone sent it
        "    instance  urn:uuid:00000000-0000-4000-8000-000000000001",
        "    agent     Linphone/5.2 (iPhone; iOS 17.1)",
    ]
    assert "    instance  urn:uuid:00000000-0000-4000-8000-000000000002" in legend[b:]
    timeline = lines[lines.index("timeline") + 1 : lines.index("ladder")]
    assert "  +0.000 s  forked      alice#2" in timeline
    assert not any("branch" in line for line in timeline)  # the legend's
    assert "messages" not in lines


def test_call_view_with_messages_prints_each_message_and_its_headers() -> None:
    lines = render_call(forked_call().record(), messages=True)
    assert max(len(line) for line in lines) <= 80
    messages = lines[lines.index("messages") + 1 :]
    assert messages[0] == "  +0.000 s  caller → sipwake  (udp:10.0.0.9:5060)"
    assert messages[1:6] == [
        "            INVITE sip:alice@lab.test SIP/2.0",
        "            From: <sip:bob@lab.test>;tag=c1",
        "            To: <sip:alice@lab.test>",
        "            CSeq: 1 INVITE",
        "            Contact: <sip:bob@10.0.0.9:5060>",
    ]
    assert "  +4.000 s  sipwake → alice#2  (udp:10.0.0.5:5064)" in messages
    assert f"            Reason: {ELSEWHERE}" in messages


def test_summary_times_and_who_ended_the_call() -> None:
    def summary(*steps: tuple[float, str, str]) -> CallSummary:
        builder = Builder().step(0.0, "received", "from sip:bob@lab.test")
        for at, step, detail in steps:
            builder.step(at, step, detail)
        return builder.record().summary

    talked = summary((2.0, "answered", "x"), (9.5, "hangup", "by the callee"))
    assert (talked.answered, talked.ended, talked.ended_by) == (WALL + 2, WALL + 9.5, "callee")
    assert durations(talked) == {"ring_s": 2.0, "talk_s": 7.5, "duration_s": 9.5}
    twice = summary((2.0, "answered", "x"), (3, "hangup", "by the caller"), (4, "hangup", "x"))
    assert (twice.ended, twice.ended_by) == (WALL + 3, "caller")  # the first BYE ends it
    going = summary((2.0, "answered", "x"))
    assert durations(going) == {"ring_s": 2.0, "talk_s": None, "duration_s": None}
    cancelled = summary((3.0, "cancelled", "by the caller"))
    assert (cancelled.ended, cancelled.ended_by) == (WALL + 3, "caller")
    assert durations(cancelled) == {"ring_s": 3.0, "talk_s": None, "duration_s": 3.0}
    busy = summary((1.0, "busy", "every device is busy"), (1.0, "failed", "486"))
    assert (busy.outcome, busy.ended_by) == ("busy", "callee")
    timeout = summary((30.0, "no-answer", "after 30 s"), (30.0, "failed", "480 (no-answer)"))
    assert (timeout.outcome, timeout.ended_by) == ("no-answer", "sipwake")
    voicemail = summary(
        (30.0, "no-answer", "after 30 s"),
        (30.0, "diverted", "to sip:vm@lab.test (no-answer, cause 408)"),
        (30.5, "answered", "divert sip:vm@lab.test"),
        (45.0, "hangup", "by the caller"),
    )
    assert (voicemail.answered, voicemail.ended_by) == (WALL + 30.5, "caller")
    assert durations(voicemail) == {"ring_s": 30.5, "talk_s": 14.5, "duration_s": 45.0}
    ringing = summary((1.0, "forked", "x"))
    assert durations(ringing) == {"ring_s": None, "talk_s": None, "duration_s": None}


def test_call_list_fits_80_columns_with_durations_and_who_hung_up() -> None:
    long_caller = replace(
        forked_call().record().summary, ref="r2", caller="sip:+33612345678@gw.example.net"
    )
    lines = render_call_list([forked_call().record().summary, long_caller])
    assert max(len(line) for line in lines) <= 80
    assert lines[0].split() == [
        "started", "ref", "from", "→", "to", "outcome", "ring", "talk", "hung", "up", "push"
    ]  # fmt: skip
    assert lines[1].split()[2:] == [
        "r1",
        "bob",
        "→",
        "alice",
        "answered",
        "4.0s",
        "60s",
        "caller",
        "0",
    ]
    assert lines[2].split()[3].endswith("…")  # cut to fit, the rest of the line intact
    assert lines[2].split()[-5:] == ["answered", "4.0s", "60s", "caller", "0"]
    wide = render_call_list([long_caller], width=120)
    assert "+33612345678@gw.example.net → alice@lab.test" in wide[1]


def test_a_damaged_branch_step_is_left_out_not_fatal() -> None:
    assert CallDevice.from_detail("not json") is None
    assert CallDevice.from_detail('["a"]') is None
    assert CallDevice.from_detail('{"peer": "udp:1.2.3.4:5"}') is None
    record = forked_call().step(5.0, "branch", "{broken").record()
    lines = render_call(record)
    assert "  alice#1   sip:alice@lab.test (iPhone, apns)" in lines


def test_call_view_of_sparse_records_says_what_is_known() -> None:
    ringing = render_call(Builder().step(0.0, "received", "from sip:bob@lab.test").record())
    assert "  outcome   ringing" in ringing
    assert not any(line.startswith(("  ended", "  answered", "    via")) for line in ringing)
    cancelled = render_call(Builder().step(0.0, "received", "").step(1, "cancelled", "").record())
    assert "  ended by  the caller (CANCEL)" in cancelled
    assert "  duration  1.000 s" in cancelled
    busy = render_call(
        Builder()
        .step(0.0, "received", "from sip:bob@lab.test")
        .step(2.0, "busy", "every device is busy")
        .step(2.0, "failed", "486")
        .record()
    )
    assert "  ended by  the callee (busy: every device is busy)" in busy
    answered = forked_call().record()
    going = replace(answered, messages=answered.messages[:-5], events=answered.events[:-1])
    assert (
        "  ended     - (no BYE recorded: the call goes on, or its end was not seen)"
        in render_call(replace(going, summary=replace(going.summary, ended=None, ended_by=None)))
    )
