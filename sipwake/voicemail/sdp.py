"""SDP (RFC 4566) read and written as far as a recording answerer needs, and the RFC 3264
offer/answer choice of a G.711 codec.

``parse_sdp`` keeps, per ``m=`` line, the media, port, proto, formats, the
connection address (media- or session-level ``c=``), ``a=rtpmap`` entries and
the direction attribute. ``answer_offer`` picks the first format of the first
usable audio stream that is PCMU or PCMA (static payload type 0 or 8, or a
dynamic one whose ``rtpmap`` says ``PCMU/8000``/``PCMA/8000``) and writes an
answer with one ``m=`` line for every offered one (RFC 3264 §6): the chosen
stream gets our port, every other stream port 0 (rejected). ``make_offer``
writes the offer sent in a 200 when the INVITE had none (RFC 3264 §5), and
``choose_from_answer`` reads the answer that comes back in the ACK.

Direction (RFC 3264 §6.1): the voicemail only receives, so a ``sendrecv`` or
``sendonly`` offer is answered ``recvonly``, a ``recvonly`` or ``inactive``
one ``inactive``.

Deviations and choices
======================
- Only ``RTP/AVP`` and ``RTP/AVPF`` are usable; secure profiles (``RTP/SAVP``…)
  are rejected, as there is no SRTP here.
- Lines the parser does not need (``b=``, ``k=``, ``t=`` beyond the first …) are
  skipped; a body with no ``v=0`` first line is not SDP.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sipwake.errors import RemoteProtocolError, cut

__all__ = [
    "CODECS",
    "Codec",
    "MediaDescription",
    "SdpAnswer",
    "SessionDescription",
    "answer_offer",
    "choose_from_answer",
    "make_offer",
    "parse_sdp",
]

#: Profiles an answerer without SRTP can take (RFC 3551, RFC 4585).
USABLE_PROTOS = frozenset({"RTP/AVP", "RTP/AVPF"})
DIRECTIONS = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Codec:
    """A negotiated audio format: the payload type used on the wire and its name."""

    payload_type: int
    name: str  # "PCMU" or "PCMA"
    clock_rate: int = 8000


#: The codecs the voicemail records, by static payload type (RFC 3551 Table 4).
CODECS = {0: Codec(payload_type=0, name="PCMU"), 8: Codec(payload_type=8, name="PCMA")}
_NAMES = {"PCMU": 0, "PCMA": 8}


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaDescription:
    """One ``m=`` section (RFC 4566 §5.14)."""

    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    connection: str | None = None
    rtpmap: dict[int, str] = field(default_factory=dict)
    """Payload type → ``encoding/clock[/channels]`` as written."""
    direction: str = "sendrecv"


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionDescription:
    """The parts of an SDP body a voicemail reads."""

    origin: str
    connection: str | None
    media: tuple[MediaDescription, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class SdpAnswer:
    """The answer to write and what it agreed to."""

    codec: Codec
    body: bytes
    remote_host: str | None
    remote_port: int


def _fail(reason: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"SDP: {reason}", 488)


def parse_sdp(body: bytes) -> SessionDescription:
    """Parse an SDP body; ``RemoteProtocolError`` (hint 488) says what is wrong."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail("body is not UTF-8") from exc
    lines = [line.rstrip("\r") for line in text.split("\n") if line.strip()]
    if not lines or lines[0].strip() != "v=0":
        raise _fail(f"expected 'v=0' first, got {cut(lines[0] if lines else '')!r}")
    origin = ""
    session_c: str | None = None
    session_dir = "sendrecv"
    media: list[_MediaBuilder] = []
    for number, line in enumerate(lines[1:], start=2):
        kind, eq, value = line.partition("=")
        if not eq or len(kind) != 1:
            raise _fail(f"line {number}: expected '<type>=<value>', got {cut(line)!r}")
        current = media[-1] if media else None
        if kind == "o":
            origin = value
        elif kind == "c":
            address = _connection(value, number)
            if current is None:
                session_c = address
            else:
                current.connection = address
        elif kind == "m":
            media.append(_media_line(value, number))
        elif kind == "a":
            name, _, arg = value.partition(":")
            if name in DIRECTIONS:
                if current is None:
                    session_dir = name
                else:
                    current.direction = name
            elif name == "rtpmap" and current is not None:
                pt_text, _, encoding = arg.strip().partition(" ")
                if pt_text.isdigit() and encoding:
                    current.rtpmap[int(pt_text)] = encoding.strip()
    descriptions = tuple(
        MediaDescription(
            media=m.media,
            port=m.port,
            proto=m.proto,
            formats=m.formats,
            connection=m.connection,
            rtpmap=m.rtpmap,
            direction=m.direction or session_dir,
        )
        for m in media
    )
    return SessionDescription(origin=origin, connection=session_c, media=descriptions)


@dataclass(slots=True, kw_only=True)
class _MediaBuilder:
    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    connection: str | None = None
    rtpmap: dict[int, str] = field(default_factory=dict)
    direction: str | None = None


def _connection(value: str, number: int) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise _fail(f"line {number}: expected 'c=IN IP4 <address>', got {cut(value)!r}")
    return parts[2].split("/")[0]


def _media_line(value: str, number: int) -> _MediaBuilder:
    parts = value.split()
    if len(parts) < 4:
        raise _fail(
            f"line {number}: expected 'm=<media> <port> <proto> <fmt>…', got {cut(value)!r}"
        )
    port_text = parts[1].split("/")[0]
    if not port_text.isdigit() or int(port_text) > 65535:
        raise _fail(f"line {number}: bad port {cut(parts[1])!r}")
    return _MediaBuilder(
        media=parts[0], port=int(port_text), proto=parts[2], formats=tuple(parts[3:])
    )


def _codec_of(media: MediaDescription, fmt: str) -> Codec | None:
    """The G.711 codec format ``fmt`` stands for in ``media``, if it is one."""
    if not fmt.isdigit():
        return None
    pt = int(fmt)
    mapped = media.rtpmap.get(pt)
    if mapped is not None:
        name, _, rest = mapped.partition("/")
        clock = rest.partition("/")[0]
        static = _NAMES.get(name.upper())
        if static is None or clock != "8000":
            return None
        return Codec(payload_type=pt, name=CODECS[static].name)
    return CODECS.get(pt)


def _usable(media: MediaDescription) -> bool:
    return media.media == "audio" and media.port != 0 and media.proto in USABLE_PROTOS


def _session_lines(host: str, session_id: int, version: int) -> list[str]:
    family = "IP6" if ":" in host else "IP4"
    return [
        "v=0",
        f"o=sipwake-vm {session_id} {version} IN {family} {host}",
        "s=sipwake voicemail",
        f"c=IN {family} {host}",
        "t=0 0",
    ]


def _answer_direction(offered: str) -> str:
    return "recvonly" if offered in ("sendrecv", "sendonly") else "inactive"


def answer_offer(
    offer: SessionDescription,
    *,
    host: str,
    port: int,
    session_id: int,
    version: int = 1,
    only: str | None = None,
) -> SdpAnswer | None:
    """The RFC 3264 §6 answer taking PCMU or PCMA on ``host:port``, or ``None`` when the
    offer has no usable audio stream with either (the INVITE gets 488). ``only`` limits
    the choice to one codec name (a re-INVITE keeps the codec being recorded)."""
    chosen: tuple[int, Codec] | None = None
    for index, media in enumerate(offer.media):
        if not _usable(media):
            continue
        for fmt in media.formats:
            codec = _codec_of(media, fmt)
            if codec is not None and only in (None, codec.name):
                chosen = (index, codec)
                break
        if chosen is not None:
            break
    if chosen is None:
        return None
    index, codec = chosen
    lines = _session_lines(host, session_id, version)
    for i, media in enumerate(offer.media):
        if i != index:
            lines.append(f"m={media.media} 0 {media.proto} {' '.join(media.formats)}")
            continue
        lines += [
            f"m=audio {port} {media.proto} {codec.payload_type}",
            f"a=rtpmap:{codec.payload_type} {codec.name}/8000",
            "a=ptime:20",
            f"a={_answer_direction(media.direction)}",
        ]
    accepted = offer.media[index]
    return SdpAnswer(
        codec=codec,
        body=("\r\n".join(lines) + "\r\n").encode(),
        remote_host=accepted.connection or offer.connection,
        remote_port=accepted.port,
    )


def make_offer(*, host: str, port: int, session_id: int, version: int = 1) -> bytes:
    """Our offer (RFC 3264 §5) when the INVITE had none: PCMU and PCMA, receive only."""
    lines = _session_lines(host, session_id, version)
    lines += [
        f"m=audio {port} RTP/AVP 0 8",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=ptime:20",
        "a=recvonly",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def choose_from_answer(answer: SessionDescription) -> Codec | None:
    """The codec an answer to ``make_offer`` agreed to (RFC 3264 §7), or ``None``."""
    for media in answer.media:
        if not _usable(media):
            continue
        for fmt in media.formats:
            codec = _codec_of(media, fmt)
            if codec is not None and codec.payload_type in CODECS:
                return codec
    return None
