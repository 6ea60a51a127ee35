"""RTP packets (RFC 3550 §5.1) and the recording a voicemail makes of them.

``parse_rtp`` reads the fixed header, skips CSRCs and a header extension,
strips padding and returns ``None`` for anything that is not RTP version 2
(STUN, RTCP sent to the wrong port, garbage).

``Recording`` keeps one message's audio: payloads of the negotiated payload
type are decoded from G.711 to 16-bit PCM and appended in arrival order;
a packet whose sequence number was seen among the last ``DEDUP_WINDOW``
packets is a duplicate and skipped; other payload types (telephone-event,
comfort noise) are counted and ignored. Audio stops growing at the sample
limit (the longest message plus a little), so a flood cannot fill memory.

Deviations and choices
======================
- No jitter buffer: late packets are appended where they arrive and lost ones
  leave no silence. On loopback and short lab calls this is inaudible.
- The SSRC is not checked: a caller that restarts its stream keeps recording.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from sipwake.voicemail.g711 import decode_alaw, decode_ulaw
from sipwake.voicemail.sdp import Codec

__all__ = ["DEDUP_WINDOW", "Recording", "RtpPacket", "build_rtp", "parse_rtp"]

#: How many recent sequence numbers are remembered to drop duplicates.
DEDUP_WINDOW = 512
_HEADER = 12


@dataclass(frozen=True, slots=True, kw_only=True)
class RtpPacket:
    """An RTP data packet's header fields and payload."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool
    payload: bytes


def parse_rtp(data: bytes) -> RtpPacket | None:
    """An RTP packet (RFC 3550 §5.1), or ``None`` if ``data`` is not one."""
    if len(data) < _HEADER or data[0] >> 6 != 2:
        return None
    padding = bool(data[0] & 0x20)
    extension = bool(data[0] & 0x10)
    offset = _HEADER + 4 * (data[0] & 0x0F)
    if extension:
        if len(data) < offset + 4:
            return None
        offset += 4 + 4 * int.from_bytes(data[offset + 2 : offset + 4], "big")
    end = len(data)
    if padding:
        end -= data[-1]
    if offset > end:
        return None
    payload_type = data[1] & 0x7F
    if 72 <= payload_type <= 76:  # RTCP SR/RR/SDES/BYE/APP on the RTP port (RFC 5761 §4)
        return None
    return RtpPacket(
        payload_type=payload_type,
        marker=bool(data[1] & 0x80),
        sequence=int.from_bytes(data[2:4], "big"),
        timestamp=int.from_bytes(data[4:8], "big"),
        ssrc=int.from_bytes(data[8:12], "big"),
        payload=data[offset:end],
    )


def build_rtp(
    payload: bytes,
    *,
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    marker: bool = False,
) -> bytes:
    """An RTP packet with a plain 12-byte header (test senders, a greeting)."""
    return (
        bytes([0x80, (0x80 if marker else 0) | (payload_type & 0x7F)])
        + (sequence & 0xFFFF).to_bytes(2, "big")
        + (timestamp & 0xFFFFFFFF).to_bytes(4, "big")
        + (ssrc & 0xFFFFFFFF).to_bytes(4, "big")
        + payload
    )


class Recording:
    """One message's audio, decoded as it arrives; see the module docstring."""

    __slots__ = (
        "_pcm",
        "_recent",
        "_recent_set",
        "codec",
        "duplicates",
        "ignored",
        "max_samples",
        "packets",
    )

    def __init__(self, codec: Codec, *, max_samples: int) -> None:
        self.codec = codec
        self.max_samples = max_samples
        self.packets = 0
        """Packets of the negotiated payload type that were recorded."""
        self.duplicates = 0
        self.ignored = 0
        """Packets of another payload type, or not RTP at all."""
        self._pcm = bytearray()
        self._recent: deque[int] = deque()
        self._recent_set: set[int] = set()

    @property
    def samples(self) -> int:
        return len(self._pcm) // 2

    @property
    def duration_s(self) -> float:
        return self.samples / self.codec.clock_rate

    @property
    def pcm(self) -> bytes:
        """16-bit little-endian mono PCM at 8000 Hz."""
        return bytes(self._pcm)

    def add(self, data: bytes) -> bool:
        """Take one datagram; ``True`` if its audio was recorded."""
        packet = parse_rtp(data)
        if packet is None or packet.payload_type != self.codec.payload_type:
            self.ignored += 1
            return False
        if packet.sequence in self._recent_set:
            self.duplicates += 1
            return False
        self._recent.append(packet.sequence)
        self._recent_set.add(packet.sequence)
        if len(self._recent) > DEDUP_WINDOW:
            self._recent_set.discard(self._recent.popleft())
        room = self.max_samples - self.samples
        if room <= 0:
            return False
        payload = packet.payload[:room]
        pcm = decode_ulaw(payload) if self.codec.name == "PCMU" else decode_alaw(payload)
        self._pcm += pcm
        self.packets += 1
        return True
