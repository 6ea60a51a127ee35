"""What ``VoicemailCore`` hands back: commands for the shell, facts for the log.

Commands (imperative): ``SendDatagram`` (write bytes to a peer from the SIP
socket), ``OpenMedia`` (bind an RTP socket for a call, then call
``VoicemailCore.media_ready``), ``CloseMedia``, ``StoreMessage`` (write the
WAV file and its JSON sidecar). Facts (past tense): ``CallLogged`` and
``Dropped``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sipwake.sip.peer import Peer

__all__ = [
    "CallLogged",
    "CallStep",
    "CloseMedia",
    "Dropped",
    "EndReason",
    "OpenMedia",
    "SendDatagram",
    "StoreMessage",
    "VoicemailMessage",
    "VoicemailOutput",
]

CallStep = Literal["invited", "answered", "recording", "ended", "cancelled", "rejected", "failed"]
EndReason = Literal["bye", "max-length", "no-ack", "bad-answer", "shutdown"]


@dataclass(frozen=True, slots=True, kw_only=True)
class VoicemailMessage:
    """One recorded message, as the sidecar describes it (times are monotonic: the shell
    turns ``started`` into wall-clock time)."""

    id: str
    call_id: str
    user: str
    """The mailbox: the callee's user part, safe as a directory name."""
    callee: str
    caller: str
    """The From URI (``sip:bob@lab.test``)."""
    caller_name: str | None
    cause: int | None
    codec: str
    packets: int
    duration_s: float
    started: float
    ended_by: EndReason


@dataclass(frozen=True, slots=True, kw_only=True)
class SendDatagram:
    """Write ``data`` to ``peer`` from the voicemail's SIP socket."""

    data: bytes
    peer: Peer


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenMedia:
    """Bind a UDP socket for the call's RTP, then report its port with ``media_ready``
    (or ``media_failed``)."""

    call_ref: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseMedia:
    """Close the call's RTP socket (or, if it is still being opened, close it once open)."""

    call_ref: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreMessage:
    """Write ``pcm`` (16-bit little-endian, 8000 Hz mono) as a WAV file with a JSON sidecar."""

    message: VoicemailMessage
    pcm: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class CallLogged:
    """A step in a call's life, for the log."""

    call_ref: str
    step: CallStep
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Dropped:
    """A datagram or message the core could not use."""

    reason: str
    peer: Peer | None = None


VoicemailOutput = SendDatagram | OpenMedia | CloseMedia | StoreMessage | CallLogged | Dropped
