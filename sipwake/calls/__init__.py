"""Call records: what happened to each call, kept in the store and drawn as ladders.

``CallRecorder`` (the driver's ``CallSink``) files the wake engine's steps and the
SIP messages by call and writes them to a ``CallLog`` (``sipwake.store``);
``render_ladder`` and ``render_timeline`` draw a ``CallRecord`` for ``sipwake calls
show``.
"""

from __future__ import annotations

from sipwake.calls.ladder import render_ladder, render_timeline
from sipwake.calls.recorder import CallRecorder, sip_head
from sipwake.calls.records import (
    CallMessageRecord,
    CallRecord,
    CallStepRecord,
    CallSummary,
    advance,
)

__all__ = [
    "CallMessageRecord",
    "CallRecord",
    "CallRecorder",
    "CallStepRecord",
    "CallSummary",
    "advance",
    "render_ladder",
    "render_timeline",
    "sip_head",
]
