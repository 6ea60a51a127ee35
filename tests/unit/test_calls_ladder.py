"""Call records drawn as text: the summary rules, the timeline and the ladder (pure)."""

from __future__ import annotations

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

    def msg(self, at: float, direction: Literal["in", "out"], peer: str, line: str) -> Builder:
        self.entries.append(
            CallMessageRecord(
                ref="r1",
                seq=len(self.entries) + 1,
                wall=WALL + at,
                direction=direction,
                peer=peer,
                first_line=line,
                call_id=CALL_ID,
            )
        )
        return self

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
        .msg(0.85, "in", PHONE, "SIP/2.0 180 Ringing")
        .msg(0.85, "out", CALLER, "SIP/2.0 180 Ringing")
        .msg(3.2, "in", PHONE, "SIP/2.0 200 OK")
        .step(3.2, "answered", "iphone")
        .msg(3.2, "out", CALLER, "SIP/2.0 200 OK")
    )


GOLDEN = [
    "                   caller                sipwake                apns                branch 1",
    "              udp:10.0.0.9:5060                                                "
    "tls:10.0.0.5:5061#3",
    "                      |                     |                     |                     |",
    "  +0.000 s            |- INVITE ----------->|                     |                     |",
    "  +0.000 s            |<- 100 Trying -------|                     |                     |",
    "  +0.000 s            |                     * received from sip:bob@lab.test            |",
    "  +0.000 s            |                     |- push call -------->|                     |",
    "  +0.015 s            |                     |<- delivered 12 ms --|                     |",
    "  +0.800 s            |                     * registered iphone   |                     |",
    "  +0.800 s            |                     * forked iphone       |                     |",
    "  +0.800 s            |                     |- INVITE --------------------------------->|",
    "  +0.850 s            |                     |<- 180 Ringing ----------------------------|",
    "  +0.850 s            |<- 180 Ringing ------|                     |                     |",
    "  +3.200 s            |                     |<- 200 OK ---------------------------------|",
    "  +3.200 s            |                     * answered iphone     |                     |",
    "  +3.200 s            |<- 200 OK -----------|                     |                     |",
]


def test_ladder_of_a_push_wake_call_matches_the_golden_lines() -> None:
    lines = render_ladder(push_wake_call().record(pushes=(push_record(),)))
    assert lines == GOLDEN
    assert max(len(line) for line in lines) <= 100


def test_ladder_without_push_records_times_the_push_between_its_steps() -> None:
    lines = render_ladder(push_wake_call().record())
    # The service is the one the step names; the latency is the gap between the steps.
    assert lines[0].split() == ["caller", "sipwake", "apns", "branch", "1"]
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
    arrows = [line.split("|")[2] for line in lines[2:] if line.count("|") == 3]
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
