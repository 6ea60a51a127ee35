"""G.711 µ-law and A-law (ITU-T G.711, RTP payload types 0 and 8, RFC 3551 §4.5.14).

Decoding is a 256-entry table lookup per octet; the tables are computed here
from the G.711 segment rules (``audioop`` left the standard library in Python
3.13, and sipwake does not depend on it). PCM is signed 16-bit little-endian
(the WAV sample format), one channel, 8000 Hz.

- µ-law: the octet is sent inverted; sign bit, 3-bit exponent, 4-bit mantissa;
  the magnitude is ``((mantissa << 3) + 0x84) << exponent`` less the 0x84 bias,
  so ``0xFF`` decodes to 0 and ``0x00`` to -32124.
- A-law: even bits are inverted (XOR 0x55); sign bit set means positive;
  segment 0 is linear (``(mantissa << 4) + 8``), segment ``s > 0`` is
  ``((mantissa << 4) + 0x108) << (s - 1)``, so ``0xD5`` decodes to 8 and ``0x55`` to -8.

Encoders are here too (test tones, a greeting one day); they round to the
segment a G.711 codec would pick.
"""

from __future__ import annotations

__all__ = [
    "ALAW_TO_LINEAR",
    "ULAW_TO_LINEAR",
    "alaw_to_linear",
    "decode_alaw",
    "decode_ulaw",
    "encode_alaw",
    "encode_ulaw",
    "linear_to_alaw",
    "linear_to_ulaw",
    "ulaw_to_linear",
]

#: µ-law bias and clip on the 14-bit magnitude the encoder works with.
_ULAW_BIAS = 0x21
_ULAW_CLIP = 8159


def ulaw_to_linear(octet: int) -> int:
    """One µ-law octet to a 16-bit sample (G.711 §3)."""
    inverted = ~octet & 0xFF
    exponent = (inverted >> 4) & 0x07
    mantissa = inverted & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return -magnitude if inverted & 0x80 else magnitude


def alaw_to_linear(octet: int) -> int:
    """One A-law octet to a 16-bit sample (G.711 §2)."""
    value = octet ^ 0x55
    segment = (value >> 4) & 0x07
    mantissa = value & 0x0F
    linear = (mantissa << 4) + 8  # segment 0 is linear; the others add the implicit bit
    magnitude = linear if segment == 0 else (linear + 0x100) << (segment - 1)
    return magnitude if value & 0x80 else -magnitude


def linear_to_ulaw(sample: int) -> int:
    """One 16-bit sample to a µ-law octet (on the 14-bit magnitude, as G.711's tables)."""
    value = sample >> 2
    if value < 0:
        value, mask = -value, 0x7F
    else:
        mask = 0xFF
    value = min(value, _ULAW_CLIP) + _ULAW_BIAS
    segment = max(value.bit_length() - 6, 0)
    if segment >= 8:
        return 0x7F ^ mask
    return ((segment << 4) | ((value >> (segment + 1)) & 0x0F)) ^ mask


def linear_to_alaw(sample: int) -> int:
    """One 16-bit sample to an A-law octet (13-bit magnitude, 8 segments)."""
    value = sample >> 3
    if value >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        value = -value - 1
    segment = max(value.bit_length() - 5, 0)
    if segment >= 8:
        return 0x7F ^ mask
    mantissa = (value >> 1) & 0x0F if segment < 2 else (value >> segment) & 0x0F
    return ((segment << 4) | mantissa) ^ mask


#: µ-law octet → sample, for every octet.
ULAW_TO_LINEAR: tuple[int, ...] = tuple(ulaw_to_linear(b) for b in range(256))
#: A-law octet → sample, for every octet.
ALAW_TO_LINEAR: tuple[int, ...] = tuple(alaw_to_linear(b) for b in range(256))

_ULAW_PCM: tuple[bytes, ...] = tuple(s.to_bytes(2, "little", signed=True) for s in ULAW_TO_LINEAR)
_ALAW_PCM: tuple[bytes, ...] = tuple(s.to_bytes(2, "little", signed=True) for s in ALAW_TO_LINEAR)


def decode_ulaw(payload: bytes) -> bytes:
    """µ-law octets to 16-bit little-endian PCM (two bytes per octet)."""
    return b"".join(map(_ULAW_PCM.__getitem__, payload))


def decode_alaw(payload: bytes) -> bytes:
    """A-law octets to 16-bit little-endian PCM (two bytes per octet)."""
    return b"".join(map(_ALAW_PCM.__getitem__, payload))


def _clamp(sample: int) -> int:
    return max(-32768, min(32767, sample))


def encode_ulaw(samples: list[int] | tuple[int, ...]) -> bytes:
    """16-bit samples (ints) to µ-law octets."""
    return bytes(linear_to_ulaw(_clamp(s)) for s in samples)


def encode_alaw(samples: list[int] | tuple[int, ...]) -> bytes:
    """16-bit samples (ints) to A-law octets."""
    return bytes(linear_to_alaw(_clamp(s)) for s in samples)
