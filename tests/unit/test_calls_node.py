"""The recorder fed as the driver feeds it, by a real node: a push-wake call, end to end.

Every message the node receives and every output it returns go to the recorder in the
driver's order (received bytes first, then the outputs in order), on hand-moved time.
"""

from __future__ import annotations

from sipwake.calls import CallRecorder, render_ladder
from sipwake.calls.recorder import binding_devices
from sipwake.calls.records import CallDevice
from sipwake.node import CallEvent, Node, NodeOutput, SendBytes
from sipwake.proxy.routing import LocalAddress
from sipwake.push.base import PushOutcome
from sipwake.sip.peer import Peer
from sipwake.store import MemoryStore
from tests.unit.wakelab import Phone, WakeLab

OFFSET = 1_700_000_000.0
TOKEN = "a1b2c3d4" * 8


class RecordingNode:
    """The node as the driver reports it: each received message, then each output in order,
    to the recorder. A wrapper rather than patched methods: compiled (mypyc), the node's
    methods cannot be replaced."""

    def __init__(self, node: Node, recorder: CallRecorder, lab: WakeLab) -> None:
        self.node, self.recorder, self.lab = node, recorder, lab

    def _perform(self, outputs: list[NodeOutput]) -> list[NodeOutput]:
        for output in outputs:
            if isinstance(output, SendBytes):
                self.recorder.message_bytes("out", output.peer, output.data, self.lab.now)
            elif isinstance(output, CallEvent):
                self.recorder.call_event(output)
        return outputs

    def receive(self, data: bytes, peer: Peer, local: LocalAddress, now: float) -> list[NodeOutput]:
        self.recorder.message_bytes("in", peer, data, self.lab.now)
        return self._perform(self.node.receive(data, peer, local, now))

    def changes_stored(self, token: int, ok: bool, now: float) -> list[NodeOutput]:
        return self._perform(self.node.changes_stored(token, ok, now))

    def push_completed(
        self, push_id: int, outcome: PushOutcome, now: float, *, wall: float | None = None
    ) -> list[NodeOutput]:
        return self._perform(self.node.push_completed(push_id, outcome, now, wall=wall))

    def handle_timeout(self, now: float) -> list[NodeOutput]:
        return self._perform(self.node.handle_timeout(now))

    def flow_closed(self, flow: int, now: float | None = None) -> list[NodeOutput]:
        return self._perform(self.node.flow_closed(flow, now))

    def next_deadline(self) -> float | None:
        return self.node.next_deadline()


def recorded_lab(store: MemoryStore) -> tuple[WakeLab, CallRecorder]:
    """A ``WakeLab`` whose node reports to a recorder as the driver would, the recorder
    asking the node's registrar for the devices (as the server wires it)."""
    lab = WakeLab()
    node = lab.node
    recorder = CallRecorder(
        store,
        wall_offset=OFFSET,
        devices=binding_devices(lambda aor: node.registrar.lookup(aor, lab.now)),
    )
    lab.node = RecordingNode(node, recorder, lab)  # type: ignore[assignment]
    return lab, recorder


def test_a_push_wake_call_from_the_node_is_recorded_and_drawn() -> None:
    store = MemoryStore()
    lab, recorder = recorded_lab(store)
    phone = Phone(user="bob", port=7001, instance="urn:uuid:phone-1", token=TOKEN)
    assert lab.register(phone).status == 200
    lab.suspend(phone)
    lab.advance(1.0)
    lab.call("bob")
    (push,) = lab.pushes("call")
    lab.advance(0.02)
    lab.push_result(push, "delivered")
    lab.advance(1.5)
    assert lab.register(phone).status == 200  # the woken phone, over a new connection
    (invite,) = lab.invites_to(phone.port)
    lab.advance(0.5)
    lab.answer(invite, 180)
    lab.advance(2.0)
    lab.answer(invite, 200)
    recorder.close()

    (summary,) = store.calls()
    assert summary.aor == "sip:bob@lab.test"
    assert summary.caller == "sip:carol@lab.test"
    assert summary.call_id == "call-1"  # bound without help: the INVITE preceded "received"
    assert summary.started == OFFSET + 101.0
    assert (summary.outcome, summary.answered_by, summary.pushes) == (
        "answered",
        "sip:bob@lab.test (apns)",  # the device, not its instance URN
        1,
    )
    assert summary.answered == summary.started + summary.ringing  # 4.02 s after the INVITE
    assert (summary.ended, summary.ended_by) == (None, None)  # no BYE yet
    record = store.call(summary.ref)
    assert record is not None
    assert not any(m.first_line.startswith("REGISTER") for m in record.messages)

    lines = render_ladder(record)
    phone_lane = f"tcp:127.0.0.1:7001#{phone.flow}"
    assert lines[0].split() == ["caller", "sipwake", "apns", "bob#1"]
    assert lines[1].split() == ["udp", "push", "apns"]
    (branch,) = [e for e in record.events if e.step == "branch"]
    assert CallDevice.from_detail(branch.detail) == CallDevice(
        peer=phone_lane,
        aor="sip:bob@lab.test",
        contact="sip:bob@127.0.0.1:7001;transport=tcp",
        instance="urn:uuid:phone-1",
        push="apns",
    )
    assert all(len(line) <= 80 for line in lines)
    body = [line[11:].strip() for line in lines[3:]]
    assert [line[:10].strip() for line in (lines[3], lines[-1])] == ["+0.000 s", "+4.020 s"]
    # Each line in words: arrows and bars left out, labels and notes kept.
    words = [" ".join(w for w in line.split() if set(w) - set("|-<>*")) for line in body]
    assert words == [
        "INVITE",
        "received from sip:carol@lab.test",
        "100 Trying",
        "push call",
        "180 Ringing",
        "ringback 180 Ringing",
        "delivered 20 ms",
        "registered bob#1",
        "INVITE",
        "forked bob#1",
        "180 Ringing",
        "180 Ringing",
        "200 OK",
        "200 OK",
        "answered by bob#1",
    ]
    arrows = [line.split("|")[1:3] for line in lines[3:]]
    assert arrows[0][0].endswith(">")  # caller to sipwake
    assert arrows[3][1].endswith(">")  # sipwake to apns
    assert arrows[6][1].startswith("<")  # apns back to sipwake
