"""A pure node on hand-moved time with simulated phones: the call-wake engine's test bench.

``WakeLab`` registers devices (UDP, or TCP flows that can be closed to suspend a phone),
places calls, answers forwarded INVITEs, reports push outcomes and moves the clock; every
output is kept so a test can ask "what was sent to whom".
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from sipwake.ids import SeededIds
from sipwake.node import CallEvent, Node, NodeOutput, NodeSettings, PersistChanges, SendBytes
from sipwake.proxy.plan import CallPlan
from sipwake.proxy.qualify import QualifySettings
from sipwake.proxy.routing import LocalAddress, Locality
from sipwake.proxy.wake import SendPush
from sipwake.push.base import PushOutcome, PushStatus
from sipwake.registrar.config import RegistrarConfig
from sipwake.registrar.registrar import Registrar
from sipwake.sip.message import Request, Response, make_response
from sipwake.sip.parser import parse_message
from sipwake.sip.peer import Peer
from sipwake.transaction.layer import TransactionLayer

UDP = LocalAddress(transport="udp", host="127.0.0.1", port=5060)
TCP = LocalAddress(transport="tcp", host="127.0.0.1", port=5060)
TLS = LocalAddress(transport="tls", host="127.0.0.1", port=5061)


def open_node(
    *listeners: LocalAddress,
    plan: CallPlan | None = None,
    qualify: QualifySettings | None = None,
    aliases: frozenset[str] = frozenset(),
    **settings: Any,
) -> Node:
    """A node as ``sipwake serve --open --memory`` builds it for ``lab.test``, on seeded ids
    (``settings``: more ``NodeSettings`` fields, e.g. rate limits)."""
    ids = SeededIds(0)
    registrar = Registrar(
        ids=ids, config=RegistrarConfig(domains={"lab.test"}, canonical_domain="lab.test")
    )
    return Node(
        settings=NodeSettings(
            domain="lab.test",
            realm="lab.test",
            open=True,
            plan=plan or CallPlan(),
            qualify=qualify or QualifySettings(),
            **settings,
        ),
        ids=ids,
        locality=Locality(domain="lab.test", aliases=aliases, listeners=listeners),
        registrar=registrar,
        layer=TransactionLayer(ids),
        auth=None,
    )


CALLER = Peer(transport="udp", host="127.0.0.1", port=6000)
TEAM_PARAM = "TEAM123456.org.lab.phone.voip"


@dataclass
class Phone:
    user: str
    port: int
    transport: str = "tcp"
    instance: str | None = None
    token: str | None = None
    remote: str | None = None
    """An iOS app's remote-notification token beside its VoIP ``token`` (Linphone's
    two-token form ``pn-prid=V:voip&R:remote``)."""
    provider: str = "apns"
    flow: int | None = None
    cseq: int = 0
    call_id: str = ""

    @property
    def peer(self) -> Peer:
        return Peer(transport=self.transport, host="127.0.0.1", port=self.port, flow=self.flow)


@dataclass
class Sent:
    message: Request | Response
    peer: Peer


@dataclass
class WakeLab:
    plan: CallPlan = field(default_factory=CallPlan)
    qualify: QualifySettings = field(default_factory=QualifySettings)
    now: float = 100.0
    node: Node = field(init=False)
    outputs: list[NodeOutput] = field(default_factory=list)
    _flows: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _calls: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    settings: dict[str, Any] = field(default_factory=dict)
    """More ``NodeSettings`` fields (rate limits)."""

    def __post_init__(self) -> None:
        self.node = open_node(UDP, TCP, TLS, plan=self.plan, qualify=self.qualify, **self.settings)

    # -- the clock ----------------------------------------------------------------------
    def advance(self, delay: float) -> None:
        """Move time forward by ``delay``, firing every timer due on the way."""
        end = self.now + delay
        while True:
            deadline = self.node.next_deadline()
            if deadline is None or deadline > end:
                break
            self.now = max(self.now, deadline)
            self._keep(self.node.handle_timeout(self.now))
        self.now = end

    # -- phones ----------------------------------------------------------------------------
    def register(self, phone: Phone, *, expires: int = 3600) -> Response:
        """REGISTER ``phone`` (over a fresh flow for TCP/TLS) and store it."""
        if phone.transport != "udp":
            phone.flow = next(self._flows)
        phone.cseq += 1
        phone.call_id = phone.call_id or f"reg-{phone.user}-{phone.port}"
        params = f";transport={phone.transport}" if phone.transport != "udp" else ""
        if phone.token is not None:
            if phone.provider == "apns" and phone.remote is not None:
                params += (
                    f";pn-provider=apns;pn-param={TEAM_PARAM}&remote"
                    f";pn-prid={phone.token}:voip&{phone.remote}:remote"
                )
            elif phone.provider == "apns":
                params += f";pn-provider=apns;pn-param={TEAM_PARAM};pn-prid={phone.token}"
            else:
                params += f";pn-provider={phone.provider};pn-prid={phone.token}"
        instance = f';+sip.instance="<{phone.instance}>"' if phone.instance else ""
        via_t = phone.transport.upper()
        branch = f"z9hG4bKr{phone.port}x{phone.cseq}"
        data = (
            f"REGISTER sip:lab.test SIP/2.0\r\n"
            f"Via: SIP/2.0/{via_t} 127.0.0.1:{phone.port};branch={branch};rport\r\n"
            f"From: <sip:{phone.user}@lab.test>;tag=r{phone.port}\r\n"
            f"To: <sip:{phone.user}@lab.test>\r\n"
            f"Call-ID: {phone.call_id}\r\nCSeq: {phone.cseq} REGISTER\r\n"
            f"Contact: <sip:{phone.user}@127.0.0.1:{phone.port}{params}>{instance}\r\n"
            f"Expires: {expires}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        listener = {"udp": UDP, "tcp": TCP, "tls": TLS}[phone.transport]
        outputs = self.node.receive(data, phone.peer, listener, self.now)
        self._keep(outputs)
        for output in outputs:
            if isinstance(output, PersistChanges) and output.token is not None:
                self._keep(self.node.changes_stored(output.token, True, self.now))
        (response,) = [s.message for s in self.sent_to(phone) if isinstance(s.message, Response)][
            -1:
        ]
        return response

    def suspend(self, phone: Phone) -> None:
        """The app is suspended: its connection closes."""
        assert phone.flow is not None
        self._keep(self.node.flow_closed(phone.flow, self.now))

    # -- calls ----------------------------------------------------------------------------
    def call(self, callee: str, *, caller: str = "carol", source: Peer = CALLER) -> str:
        n = next(self._calls)
        call_id = f"call-{n}"
        data = (
            f"INVITE sip:{callee}@lab.test SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKc{n};rport\r\n"
            f'From: "Carol C" <sip:{caller}@lab.test>;tag=c{n}\r\n'
            f"To: <sip:{callee}@lab.test>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:{caller}@127.0.0.1:6000>\r\n"
            f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        self._keep(self.node.receive(data, source, UDP, self.now))
        return call_id

    def message(
        self, callee: str, text: str, *, caller: str = "carol", source: Peer = CALLER
    ) -> str:
        n = next(self._calls)
        call_id = f"msg-{n}"
        body = text.encode()
        data = (
            f"MESSAGE sip:{callee}@lab.test SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKm{n};rport\r\n"
            f"From: <sip:{caller}@lab.test>;tag=m{n}\r\n"
            f"To: <sip:{callee}@lab.test>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 MESSAGE\r\n"
            f"Content-Type: text/plain\r\nMax-Forwards: 70\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self._keep(self.node.receive(data, source, UDP, self.now))
        return call_id

    def cancel(self, call_id: str, *, reason: str | None = None) -> None:
        n = call_id.split("-")[1]
        extra = f"Reason: {reason}\r\n" if reason else ""
        data = (
            f"CANCEL sip:bob@lab.test SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKc{n};rport\r\n"
            f'From: "Carol C" <sip:carol@lab.test>;tag=c{n}\r\n'
            f"To: <sip:bob@lab.test>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 CANCEL\r\n{extra}"
            f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        self._keep(self.node.receive(data, CALLER, UDP, self.now))

    def answer(self, invite: Sent, status: int, *, tag: str = "dev") -> None:
        """The device (or gateway) that got ``invite`` answers ``status``."""
        assert isinstance(invite.message, Request)
        response = make_response(invite.message, status, to_tag=tag)
        if 200 <= status < 300:
            response.headers.add("Contact", f"<sip:dev@{invite.peer.host}:{invite.peer.port}>")
        listener = {"udp": UDP, "tcp": TCP, "tls": TLS}[invite.peer.transport]
        self._keep(self.node.receive(response.to_bytes(), invite.peer, listener, self.now))

    def push_result(
        self, push: SendPush, status: PushStatus, *, wall: float | None = None, **extra: object
    ) -> None:
        outcome = PushOutcome(status=status, provider="apns", **extra)  # type: ignore[arg-type]
        self._keep(self.node.push_completed(push.push_id, outcome, self.now, wall=wall))

    # -- what happened ----------------------------------------------------------------------
    def _keep(self, outputs: list[NodeOutput]) -> None:
        self.outputs += outputs

    def sent(self) -> list[Sent]:
        out = []
        for o in self.outputs:
            if isinstance(o, SendBytes):
                message = parse_message(o.data)
                out.append(Sent(message=message, peer=o.peer))
        return out

    def sent_to(self, phone: Phone | Peer) -> list[Sent]:
        port = phone.port
        return [s for s in self.sent() if s.peer.port == port]

    def invites_to(self, port: int, method: str = "INVITE") -> list[Sent]:
        """Requests of ``method`` sent to ``port``, retransmissions left out."""
        seen: set[str] = set()
        out = []
        for s in self.sent():
            message = s.message
            if s.peer.port != port or not isinstance(message, Request):
                continue
            if message.method != method or message.top_via.branch in seen:
                continue
            seen.add(message.top_via.branch or "")
            out.append(s)
        return out

    def to_caller(self) -> list[int]:
        return [
            s.message.status
            for s in self.sent()
            if s.peer.port == CALLER.port and isinstance(s.message, Response)
        ]

    def pushes(self, kind: str | None = None) -> list[SendPush]:
        return [
            o
            for o in self.outputs
            if isinstance(o, SendPush) and (kind is None or o.request.kind == kind)
        ]

    def steps(self) -> list[str]:
        return [o.step for o in self.outputs if isinstance(o, CallEvent)]

    def events(self) -> list[CallEvent]:
        return [o for o in self.outputs if isinstance(o, CallEvent)]
