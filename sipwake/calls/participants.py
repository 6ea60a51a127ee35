"""Who took part in a call, each under a short label unique within the call (pure).

A ladder needs one short name per lane; an engineer needs to know which device that
name stands for. ``participants(record)`` gives both, in lane order:

* ``caller``: the peer the call's INVITE came from (its From, Contact, User-Agent);
* ``sipwake``: this server;
* each push service a push of the call went to (``apns``, ``fcm``, …);
* each other peer a message of the call went to or came from. A registered device
  (a ``branch`` step names it: AOR, contact, instance, push service) is labelled
  ``user#n``, numbered per user in order of appearance (``alice#1``, ``alice#2``),
  so two phones of one user with look-alike contacts stay apart; another peer
  (voicemail, a twin gateway, a diversion target) by the user part of its
  INVITE's Request-URI (``vm``), or ``peer`` when there is none. A label met twice
  gets ``#2``, ``#3``.

The full address, contact, instance, transport and user agent of each label are
the legend's (``Participant.facts``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sipwake.calls.records import CallDevice, CallMessageRecord, CallRecord, device_kind

__all__ = ["SIPWAKE", "Participant", "caller_peer", "name_devices", "participants"]

SIPWAKE = "sipwake"

Kind = Literal["caller", "sipwake", "push", "device", "peer"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Participant:
    """One lane of the ladder: its key (a peer, a push service, ``sipwake``), its
    label and what is known of it."""

    lane: str
    label: str
    kind: Kind
    aor: str = ""
    """The party's address of record (the caller's From, a device's AOR)."""
    contact: str = ""
    """Its Contact (as it sent it, else the Request-URI it was sent)."""
    uri: str = ""
    """The Request-URI of the INVITE sent to it."""
    instance: str = ""
    user_agent: str = ""
    push: str = ""

    @property
    def transport(self) -> str:
        if self.kind not in ("caller", "device", "peer") or ":" not in self.lane:
            return ""
        return self.lane.partition(":")[0]

    @property
    def hint(self) -> str:
        """A few words telling the party apart (``iPhone, apns``), "" if none."""
        if self.kind == "push":
            return "push"
        if self.kind == "sipwake":
            return ""
        return ", ".join(
            p for p in (device_kind(self.user_agent), self.push or self.transport) if p
        )

    def facts(self) -> list[tuple[str, str]]:
        """What the legend prints under the label: (name, value), known values only."""
        if self.kind == "sipwake":
            return [("", "this server (the proxy: every message passes here)")]
        if self.kind == "push":
            return [("", "push service")]
        facts = [
            ("address", self.aor),
            ("device", self.hint),
            ("via", self.lane if ":" in self.lane else ""),
            ("contact", self.contact),
            ("instance", self.instance),
            ("agent", self.user_agent),
        ]
        return [(name, value) for name, value in facts if value]

    def describe(self) -> str:
        """``alice#1 sip:alice@lab.test (iPhone, apns)``."""
        text = f"{self.label} {self.aor}".strip()
        return f"{text} ({self.hint})" if self.hint else text


def name_devices(text: str, parties: list[Participant] | tuple[Participant, ...]) -> str:
    """``text`` with each device's instance URN or contact replaced by its label (the
    wake engine's steps name devices so: ``forked urn:uuid:…`` → ``forked alice#1``)."""
    for part in parties:
        for name in (part.instance, part.uri):
            if part.kind == "device" and name and name in text:
                text = text.replace(name, part.label)
    return text


def caller_peer(messages: tuple[CallMessageRecord, ...]) -> str | None:
    """The peer the call's INVITE came from (else the first peer heard from)."""
    for m in messages:
        if m.direction == "in" and m.first_line.startswith("INVITE "):
            return m.peer
    for m in messages:
        if m.direction == "in":
            return m.peer
    return None


def participants(record: CallRecord, push_lanes: list[str]) -> list[Participant]:
    """The call's parties in lane order: caller, sipwake, ``push_lanes`` (the push
    services the ladder draws), then every other peer in order of appearance."""
    messages = sorted(record.messages, key=lambda m: (m.wall, m.seq))
    caller = caller_peer(record.messages)
    devices: dict[str, CallDevice] = {}
    for event in record.events:
        if event.step == "branch":
            device = CallDevice.from_detail(event.detail)
            if device is not None and device.peer not in devices:
                devices[device.peer] = device
    out = [
        _caller(record, messages, caller),
        Participant(lane=SIPWAKE, label=SIPWAKE, kind="sipwake"),
    ]
    out += [Participant(lane=lane, label=lane, kind="push") for lane in push_lanes]
    peers: list[str] = []
    for m in messages:
        if m.peer != caller and m.peer not in peers:
            peers.append(m.peer)
    for peer in peers:
        device = devices.get(peer)
        from_peer = [m for m in messages if m.peer == peer]
        agent = _first(from_peer, "in", "Server", "User-Agent")
        contact = _first(from_peer, "in", "Contact")
        if device is not None:
            out.append(
                Participant(
                    lane=peer,
                    label=f"{_user(device.aor)}#",
                    kind="device",
                    aor=device.aor,
                    contact=contact or device.contact,
                    uri=device.contact,
                    instance=device.instance,
                    user_agent=device.user_agent or agent,
                    push=device.push,
                )
            )
        else:
            invite = next((m for m in from_peer if m.first_line.startswith("INVITE ")), None)
            uri = invite.first_line.split(" ")[1] if invite is not None else ""
            out.append(
                Participant(
                    lane=peer,
                    label=_user(uri) or "peer",
                    kind="peer",
                    aor=uri.partition(";")[0],
                    contact=contact,
                    uri=uri,
                    user_agent=agent,
                )
            )
    return _unique(out)


def _caller(record: CallRecord, messages: list[CallMessageRecord], peer: str | None) -> Participant:
    invite = next(
        (m for m in messages if m.peer == peer and m.first_line.startswith("INVITE ")), None
    )
    aor = record.summary.caller
    if invite is not None and not aor:
        aor = _uri_of(invite.header("From") or "")
    return Participant(
        lane=peer or "caller",
        label="caller",
        kind="caller",
        aor=aor,
        contact=(invite.header("Contact") or "") if invite is not None else "",
        user_agent=(invite.header("User-Agent") or "") if invite is not None else "",
    )


def _unique(parts: list[Participant]) -> list[Participant]:
    """Number device labels per user (``alice#1``) and any other label met twice."""
    counts: dict[str, int] = {}
    out: list[Participant] = []
    taken: set[str] = set()
    for part in parts:
        label = part.label
        if label.endswith("#"):
            base = label[:-1]
            counts[base] = counts.get(base, 0) + 1
            label = f"{base}#{counts[base]}"
        n = 1
        candidate = label
        while candidate in taken:
            n += 1
            candidate = f"{label}#{n}"
        taken.add(candidate)
        out.append(part if candidate == part.label else _relabel(part, candidate))
    return out


def _relabel(part: Participant, label: str) -> Participant:
    return Participant(
        lane=part.lane,
        label=label,
        kind=part.kind,
        aor=part.aor,
        contact=part.contact,
        uri=part.uri,
        instance=part.instance,
        user_agent=part.user_agent,
        push=part.push,
    )


def _first(messages: list[CallMessageRecord], direction: str, *names: str) -> str:
    """The first value of any of ``names`` in ``messages`` going ``direction``."""
    for m in messages:
        if m.direction != direction:
            continue
        for name in names:
            value = m.header(name)
            if value:
                return value
    return ""


def _uri_of(name_addr: str) -> str:
    """``"Bob" <sip:bob@lab.test>;tag=1`` → ``sip:bob@lab.test``."""
    if "<" in name_addr:
        return name_addr.partition("<")[2].partition(">")[0]
    return name_addr.partition(";")[0].strip()


def _user(uri: str) -> str:
    """The user part of a SIP URI (``sip:alice@lab.test`` → ``alice``), else ""."""
    rest = uri.partition(":")[2] if uri.startswith(("sip:", "sips:")) else uri
    user, at, _ = rest.partition("@")
    return user if at else ""
