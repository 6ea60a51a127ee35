"""The driver: the asyncio shell around the node (aioquic's protocol.py, for SIP).

It reads the loop's clock, hands each received message to the node, performs
the outputs in order and re-arms one timer for the node's next deadline. Nothing
else in sipwake touches the loop's clock.

Group commit: binding changes (``PersistChanges``) are not written one by one.
Those of every message handled in one turn of the event loop (a UDP batch, and
what the other transports read in that turn) gather, and right after that turn
go to the sink as one batch: one transaction, one fsync. Only once it is
committed does the node hear ``changes_stored`` for each, in order, and send the
200s (RFC 3261 §10.3: a 200 lists bindings that are stored).

Pipelined: a sink with ``submit`` (``sipwake.store.writer.BindingWriter``)
commits in a thread while the loop goes on reading and handling messages. At
most one batch is in it; the changes of the turns that end meanwhile gather into
the next batch, handed over as soon as the one in flight is committed (before
its 200s are sent). Batches thus commit in order. If one fails, its REGISTERs
and those gathered behind it (which may have built on it: the registrar already
holds their changes) get 500 and are undone newest first: the gathered ones from
the last back, then the failed batch's. A sink with only ``apply`` stores the
batch at the end of the turn, on the loop.

The backlog is bounded: while ``max_backlog`` changes already wait for the
next batch, a new REGISTER is undone at once and answered 503 with Retry-After
(the disk is behind; its retry finds room). Expiries and other changes with no
REGISTER waiting are never refused.

While its batch commits, a new binding is in the registrar: a call in that
window is routed to it before its 200 is sent. That is as it should be for the
running process (the registrar is the authority); a crash then loses the call
with the process anyway, and the device, answered no 200, registers again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Literal, Protocol, cast

from sipwake.node import (
    AuthFailed,
    CallEvent,
    Dropped,
    ForgetMessage,
    KeepMessage,
    Limited,
    Node,
    NodeOutput,
    PersistChanges,
    ReachabilityChanged,
    SendBytes,
    SendPush,
)
from sipwake.overload import LoadMeter
from sipwake.proxy.routing import LocalAddress
from sipwake.push.base import PushOutcome, PushRequest, configuration_error
from sipwake.registrar.events import (
    BindingAdded,
    BindingExpired,
    BindingRefreshed,
    BindingRemoved,
    RegistrarEvent,
)
from sipwake.sip.peer import Peer
from sipwake.sip.pushtarget import mask_token, redact
from sipwake.transport.common import LocalAddr

__all__ = ["CallSink", "ChangeSink", "Driver", "PipelinedSink", "Pusher"]

logger = logging.getLogger("sipwake.driver")
trace_logger = logging.getLogger("sipwake.trace")


class ChangeSink(Protocol):
    """Where binding changes go before the response that confirms them is sent: all of
    them durably, or none and an exception."""

    def apply(self, events: tuple[RegistrarEvent, ...], now: float) -> None: ...


class PipelinedSink(Protocol):
    """A ``ChangeSink`` that commits off the loop: ``done(ok)`` is called on the loop's
    thread once the batch is durable (or failed), never from inside ``submit``; one
    batch at a time."""

    def submit(
        self, events: tuple[RegistrarEvent, ...], now: float, done: Callable[[bool], None]
    ) -> None: ...


class Pusher(Protocol):
    """Sends pushes (``sipwake.push``): never raises for what a provider answered."""

    async def send(
        self, request: PushRequest, *, binding_id: str | None = None, aor: str | None = None
    ) -> PushOutcome: ...


class CallSink(Protocol):
    """Where call timelines and push attempts go (call records, ``sipwake calls``)."""

    def call_event(self, event: CallEvent) -> None: ...

    def push_done(self, push: SendPush, outcome: PushOutcome) -> None: ...

    def message_bytes(
        self, direction: Literal["in", "out"], peer: object, data: bytes, at: float
    ) -> None: ...


class MessageSink(Protocol):
    """Where MESSAGEs held for suspended devices are kept (``SqliteStore``)."""

    def keep_message(self, message_id: str, aor: str, data: bytes, wall: float) -> None: ...

    def drop_message(self, message_id: str) -> None: ...


class Sender(Protocol):
    def send(self, data: bytes, peer: Peer) -> bool: ...

    def cork(self) -> None: ...

    def uncork(self) -> None: ...

    def pin_flow(self, flow_id: int, pinned: bool = True) -> bool: ...


#: Seconds between two load samples.
SAMPLE_INTERVAL = 0.25
#: Samples without an early ending before the driver says the endings stopped (10 s).
QUIET_SAMPLES = 40
#: Binding changes that may wait for the next commit before new REGISTERs get 503.
MAX_BACKLOG = 4096
#: Seconds ``drain`` waits for the batches still gathering or in flight.
DRAIN_TIMEOUT = 5.0


class Driver:
    """Feeds a ``Node`` from the transports and keeps its timer armed."""

    def __init__(
        self,
        node: Node,
        *,
        sink: ChangeSink | PipelinedSink | None = None,
        trace: bool = False,
        shed_load: bool = True,
        pusher: Pusher | None = None,
        calls: CallSink | None = None,
        messages: MessageSink | None = None,
        max_backlog: int = MAX_BACKLOG,
    ) -> None:
        self.node = node
        self.sink = sink
        #: The sink commits off the loop (``PipelinedSink``), else on it (``apply``).
        self.pipelined = sink is not None and hasattr(sink, "submit")
        self._writer: PipelinedSink | None = cast(PipelinedSink, sink) if self.pipelined else None
        self._applier: ChangeSink | None = None if self.pipelined else cast(ChangeSink, sink)
        self.max_backlog = max_backlog
        self.pusher = pusher
        self.calls = calls
        self.messages = messages
        self._pushes: set[asyncio.Task[None]] = set()
        self.trace = trace
        self.sender: Sender | None = None
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        #: The rearm that follows the messages of one loop iteration (see ``on_bytes``).
        self._rearm_soon: asyncio.Handle | None = None
        #: Binding changes of this loop iteration, and the tokens waiting for them.
        self._changes: list[RegistrarEvent] = []
        self._tokens: list[int] = []
        self._commit_soon: asyncio.Handle | None = None
        #: The batch the sink is committing: its changes, its tokens, its number.
        self._inflight: tuple[tuple[RegistrarEvent, ...], list[int]] | None = None
        self._inflight_seq = 0
        #: Transactions the sink was asked for (one per batch).
        self.commits = 0
        #: REGISTERs answered 503 because ``max_backlog`` changes waited.
        self.refused = 0
        self.dropped = 0
        self._listeners: dict[LocalAddr, LocalAddress] = {}
        self._last_listener: tuple[LocalAddr, LocalAddress] | None = None
        if node.load is None and shed_load:
            node.load = LoadMeter(high=0.9, low=0.5)
        self._sampler: asyncio.TimerHandle | None = None
        self._cpu_mark = (0.0, 0.0)
        #: ``node.layer.ended_early`` when last sampled, and whether it was rising then.
        self._ended_mark = node.layer.ended_early
        self._ending = False
        self._quiet = 0
        #: Binding id -> the flow it was registered over, and flow -> how many bindings.
        self._binding_flows: dict[str, int] = {}
        self._flow_bindings: dict[int, int] = {}
        self._start_sampling()

    def now(self) -> float:
        return self._loop.time()

    # -- transport callbacks ---------------------------------------------------------
    def on_bytes(self, data: bytes, peer: Peer, local: LocalAddr) -> None:
        last = self._last_listener  # as a rule, the same ``local`` object every time
        listener = last[1] if last is not None and last[0] is local else self._listener(local)
        if self.trace:
            trace_logger.info("recv %s <- %s\n%s", listener.transport, peer, _show(data))
        now = self.now()
        if self.calls is not None:
            self.calls.message_bytes("in", peer, data, now)
        try:
            outputs = self.node.receive(data, peer, listener, now)
        except Exception:  # a bug must not take the server down with it
            logger.exception("internal error handling a message from %s", peer)
            return
        self._step(outputs)
        # The timer is set once after the messages read in this loop iteration (a UDP
        # batch), not after each: no timer can fire before then, and the next deadline
        # asks every part of the node.
        if self._rearm_soon is None:
            self._rearm_soon = self._loop.call_soon(self._rearm_after_batch)

    def _rearm_after_batch(self) -> None:
        self._rearm_soon = None
        self._rearm()

    def _listener(self, local: LocalAddr) -> LocalAddress:
        """The node's name for the listener ``local`` (remembered, with the last one used)."""
        listener = self._listeners.get(local)
        if listener is None:
            listener = LocalAddress(transport=local.transport, host=local.host, port=local.port)
            self._listeners[local] = listener
        self._last_listener = (local, listener)
        return listener

    # -- load sampling ------------------------------------------------------------------
    def _start_sampling(self) -> None:
        self._cpu_mark = (time.monotonic(), time.process_time())
        self._sampler = self._loop.call_later(SAMPLE_INTERVAL, self._sample)

    def _sample(self) -> None:
        """Every quarter second: whether settled transactions end early, and the load."""
        self._note_early_endings()
        meter = self.node.load
        if meter is not None:
            self._observe_load(meter)
        self._sampler = self._loop.call_later(SAMPLE_INTERVAL, self._sample)

    def _note_early_endings(self) -> None:
        """Say when the transaction layer starts (and stops) ending settled transactions
        before their timer: retransmissions are then absorbed for less than 32 s."""
        layer = self.node.layer
        ended = layer.ended_early
        ending = ended > self._ended_mark
        self._ended_mark = ended
        self._quiet = 0 if ending else self._quiet + 1
        if ending and not self._ending:
            self._ending = True
            logger.warning(
                "%d settled transactions held (the bound): the oldest now end before their "
                "timer, and retransmissions are absorbed for less than 32 s",
                len(layer) - layer.pending,
            )
        elif self._ending and self._quiet >= QUIET_SAMPLES:
            self._ending = False
            logger.warning(
                "settled transactions end on their timers again (%d ended early so far)", ended
            )

    def _observe_load(self, meter: LoadMeter) -> None:
        """How full the UDP queue is, else how busy this process is."""
        # A sender may tell how full its UDP queue is (``TransportManager.udp_backlog``).
        queue_fill = getattr(self.sender, "udp_backlog", None)
        backlog: float | None = queue_fill() if queue_fill is not None else None
        wall, cpu = time.monotonic(), time.process_time()
        last_wall, last_cpu = self._cpu_mark
        self._cpu_mark = (wall, cpu)
        busy = (cpu - last_cpu) / max(wall - last_wall, 1e-6)
        # The queue tells how far behind the server is; the CPU share alone would also fire
        # when a peer on the same cores is the bottleneck. Both are on a 0..1 scale; the
        # queue counts four times so that a quarter-full buffer reads as full load.
        load = min(1.0, 4 * backlog) if backlog is not None else min(busy, 1.0)
        was = meter.overloaded
        meter.observe(load)
        if meter.overloaded != was:
            if meter.overloaded:
                logger.warning(
                    "overloaded (queue %s, cpu %.0f%%): shedding new requests with 503",
                    "n/a" if backlog is None else f"{backlog:.0%}",
                    busy * 100,
                )
            else:
                logger.warning("load back to normal: accepting every request")

    def on_send_failed(self, data: bytes, peer: Peer) -> None:
        """A message the transport accepted never went out (its connection failed)."""
        logger.info("could not send to %s: the connection failed", peer)
        self._step(self.node.send_failed(data, self.now()))
        self._rearm()

    def on_keepalive(self, peer: Peer, local: LocalAddr) -> None:
        """A keep-alive (CRLF, STUN) arrived from ``peer``: a sign of life."""
        del local
        try:
            outputs = self.node.keepalive(peer, self.now())
        except Exception:
            logger.exception("internal error handling a keep-alive from %s", peer)
            return
        if outputs:
            self._step(outputs)
            self._rearm()

    def on_flow_closed(self, flow: int) -> None:
        self._flow_bindings.pop(flow, None)
        self._step(self.node.flow_closed(flow, self.now()))
        self._rearm()

    # -- outputs and timers ------------------------------------------------------------
    def _step(self, outputs: list[NodeOutput]) -> None:
        """Perform what one step of the node asked for; what it sends over one connection
        leaves in one write."""
        sender = self.sender
        if sender is None:
            self._perform(outputs)
            return
        sender.cork()
        try:
            self._perform(outputs)
        finally:
            sender.uncork()

    def _perform(self, outputs: list[NodeOutput]) -> None:
        for output in outputs:
            match output:  # the most frequent output first
                case SendBytes(data=data, peer=peer):
                    if self.calls is not None:
                        self.calls.message_bytes("out", peer, data, self.now())
                    if self.trace:
                        trace_logger.info("send -> %s\n%s", peer, _show(data))
                    if self.sender is not None and not self.sender.send(data, peer):
                        logger.info("could not send to %s (flow gone)", peer)
                        self._perform(self.node.send_failed(data, self.now(), output.message))
                case PersistChanges(events=events, token=token):
                    if self.sink is not None:  # stored with the others of this turn
                        if token is not None and len(self._changes) >= self.max_backlog:
                            self._refuse(token)
                            continue
                        self._changes.extend(events)
                        if token is not None:
                            self._tokens.append(token)
                        if self._commit_soon is None:
                            self._commit_soon = self._loop.call_soon(self._commit)
                    else:
                        self._pin_flows(events)
                        if token is not None:
                            self._perform(self.node.changes_stored(token, True, self.now()))
                case Dropped(reason=reason, peer=peer):
                    self.dropped += 1
                    logger.debug("dropped message from %s: %s", peer, reason)
                case AuthFailed():
                    _log_auth_failure(output)
                case Limited(what=what, key=key, rate=rate, refused=refused):
                    logger.warning(
                        "rate limit: %s from %s over %s (%d refused so far)",
                        what,
                        key,
                        rate,
                        refused,
                    )
                case SendPush():
                    task = self._loop.create_task(self._push(output))
                    self._pushes.add(task)
                    task.add_done_callback(self._pushes.discard)
                case KeepMessage(message_id=message_id, aor=aor, data=data):
                    if self.messages is not None:
                        try:
                            self.messages.keep_message(message_id, aor, data, time.time())
                        except Exception:
                            logger.exception("could not store a message for %s", aor)
                case ForgetMessage(message_id=message_id):
                    if self.messages is not None:
                        try:
                            self.messages.drop_message(message_id)
                        except Exception:
                            logger.exception("could not delete delivered message %s", message_id)
                case ReachabilityChanged(aor=aor, binding_id=binding_id, reason=reason):
                    logger.info(
                        "%s binding %s %s: %s",
                        aor,
                        binding_id,
                        "reachable again" if output.reachable else "unreachable",
                        reason,
                    )
                case CallEvent(call_ref=ref, aor=aor, step=step, detail=detail):
                    logger.info("call %s to %s: %s %s", ref, aor, step, detail)
                    if self.calls is not None:
                        self.calls.call_event(output)

    def _refuse(self, token: int) -> None:
        """The backlog is full: undo this REGISTER (the newest change) and answer 503."""
        self.refused += 1
        if self.refused == 1 or self.refused % 1000 == 0:
            logger.warning(
                "binding store behind (%d changes wait): REGISTERs answered 503 (%d so far)",
                len(self._changes),
                self.refused,
            )
        try:
            self._perform(self.node.changes_stored(token, False, self.now(), busy=True))
        except Exception:
            logger.exception("internal error refusing a REGISTER")

    def _commit(self) -> None:
        """The end of a loop turn that gathered binding changes: hand them to the sink,
        unless a batch is in flight (they then ride the next one)."""
        self._commit_soon = None
        if self._inflight is None:
            self._submit()

    def _submit(self) -> None:
        """Hand what gathered to the sink as one batch."""
        changes, tokens = self._changes, self._tokens
        if not changes and not tokens:
            return
        self._changes, self._tokens = [], []
        self.commits += 1
        self._inflight_seq += 1
        seq = self._inflight_seq
        batch = tuple(changes)
        self._inflight = (batch, tokens)
        now = self.now()
        writer = self._writer
        if writer is None:
            assert self._applier is not None  # changes gather only when there is a sink
            ok = True
            try:
                self._applier.apply(batch, now)
            except Exception:
                logger.exception(
                    "binding store failed: %d REGISTERs of this batch get 500", len(tokens)
                )
                ok = False
            self._stored(seq, ok)
            return
        try:
            writer.submit(batch, now, lambda ok: self._stored(seq, ok))
        except Exception:
            logger.exception("binding store refused a batch of %d REGISTERs", len(tokens))
            self._stored(seq, False)

    def _stored(self, seq: int, ok: bool) -> None:
        """The sink committed (``ok``) or failed batch ``seq``: the next batch goes to the
        sink, then the REGISTERs of this one are answered (in order), or this one's and
        those gathered behind it get 500, undone newest first."""
        inflight = self._inflight
        if inflight is None or seq != self._inflight_seq:
            return  # answered already (``close``)
        self._inflight = None
        changes, tokens = inflight
        if not ok:
            behind = self._tokens
            if behind:
                logger.warning(
                    "binding store failed: %d REGISTERs gathered behind the batch get 500 too",
                    len(behind),
                )
            # The gathered changes are dropped: they may build on the failed ones.
            self._changes, self._tokens = [], []
            undo = behind[::-1] + tokens[::-1]
            self._step(self._answer(undo, False))
            self._rearm()
            return
        if self.pipelined:
            self._submit()  # committed while this batch's 200s go out
        self._pin_flows(changes)
        self._step(self._answer(tokens, True))
        self._rearm()

    def _answer(self, tokens: list[int], ok: bool) -> list[NodeOutput]:
        outputs: list[NodeOutput] = []
        now = self.now()
        for token in tokens:
            try:
                outputs += self.node.changes_stored(token, ok, now)
            except Exception:  # a bug must not leave the rest of the batch unanswered
                logger.exception("internal error answering a stored REGISTER")
        return outputs

    @property
    def backlog(self) -> int:
        """Binding changes not yet committed: gathering, and in flight."""
        inflight = self._inflight
        return len(self._changes) + (len(inflight[0]) if inflight is not None else 0)

    async def drain(self) -> bool:
        """Wait until every binding change gathered or in flight is committed and
        answered (before a stop); False if that took longer than ``DRAIN_TIMEOUT``."""
        deadline = self.now() + DRAIN_TIMEOUT
        while self._inflight is not None or self._changes or self._tokens:
            if self._inflight is None:
                if self._commit_soon is not None:
                    self._commit_soon.cancel()
                    self._commit_soon = None
                self._submit()
                continue
            if self.now() >= deadline:
                return False
            await asyncio.sleep(0.001)
        return True

    def _pin_flows(self, events: tuple[RegistrarEvent, ...]) -> None:
        """A connection a binding was registered over stays open as long as a binding
        needs it (the transport's idle timeout spares it): it is how the device is reached
        and how a sleeping one is told apart (Kamailio's registrar ``tcp_persistent_flag``)."""
        for event in events:
            if isinstance(event, BindingAdded | BindingRefreshed):
                binding = event.binding
                flow = binding.source.flow
                old = self._binding_flows.get(binding.binding_id)
                if old == flow:
                    continue  # the common refresh: same connection
                if old is not None:
                    del self._binding_flows[binding.binding_id]
                    self._release_flow(old)
                if flow is not None:
                    self._binding_flows[binding.binding_id] = flow
                    count = self._flow_bindings.get(flow, 0)
                    self._flow_bindings[flow] = count + 1
                    if count == 0 and self.sender is not None:
                        self.sender.pin_flow(flow, True)
            elif isinstance(event, BindingRemoved | BindingExpired):
                old = self._binding_flows.pop(event.binding.binding_id, None)
                if old is not None:
                    self._release_flow(old)

    def _release_flow(self, flow: int) -> None:
        """One binding less over ``flow``: unpinned when it was the last."""
        count = self._flow_bindings.get(flow)
        if count is None:
            return  # the flow has closed
        if count > 1:
            self._flow_bindings[flow] = count - 1
            return
        del self._flow_bindings[flow]
        if self.sender is not None:
            self.sender.pin_flow(flow, False)

    async def _push(self, push: SendPush) -> None:
        """Send one push and hand the outcome back to the node."""
        target = push.request.target
        if self.pusher is None:
            outcome = PushOutcome(
                status="error", provider=target.provider, reason="no push provider configured"
            )
        else:
            try:
                outcome = await self.pusher.send(
                    push.request, binding_id=push.binding_id, aor=push.aor
                )
            except Exception as exc:  # a provider bug must not lose the call
                logger.exception("push provider failed for %s", mask_token(target.prid))
                outcome = PushOutcome(status="error", provider=target.provider, reason=str(exc))
        if self.calls is not None:
            self.calls.push_done(push, outcome)
        logger.info(
            "push %s to %s (%s %s) via %s: %s%s in %.1f ms",
            push.request.kind,
            push.aor or "?",
            target.provider,
            mask_token(target.prid),
            outcome.provider,  # the provider that sent it: a webhook, the sandbox, ...
            outcome.status,
            f" {outcome.reason}" if outcome.reason else "",
            outcome.latency * 1000,
        )
        if configuration_error(outcome):
            channel = target.channel("call" if push.request.kind == "call" else "alert")
            logger.error(
                "push %s to %s refused by %s: %s for topic %s: a configuration error "
                "(bundle id, project or key), not a dead token; the token is kept",
                push.request.kind,
                push.aor or "?",
                outcome.provider,
                outcome.reason,
                (channel.apns_topic if channel else None) or target.param or "?",
            )
        try:
            outputs = self.node.push_completed(push.push_id, outcome, self.now(), wall=time.time())
        except Exception:
            logger.exception("internal error handling a push outcome")
            return
        self._step(outputs)
        self._rearm()

    def _rearm(self) -> None:
        deadline = self.node.next_deadline()
        if self._timer is not None:
            if deadline is None or self._timer.when() <= deadline:
                # The wake-up armed comes no later than the next deadline: it serves (when
                # it comes early, nothing is due and it arms the next). A deadline that
                # only moves later, as a busy layer's oldest settled transaction does on
                # every message, costs no timer handle per message.
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        try:
            outputs = self.node.handle_timeout(self.now())
        except Exception:
            logger.exception("internal error handling timers")
            outputs = []
        self._step(outputs)
        self._rearm()

    def close(self) -> None:
        """Stop; binding changes still gathering are stored and answered first (with a
        pipelined sink, only those that ``drain`` saw committed)."""
        if self._commit_soon is not None:
            self._commit_soon.cancel()
            self._commit_soon = None
        if not self.pipelined and self._inflight is None:
            self._submit()
        # A batch still in a pipelined sink is committed by its close; nobody is answered.
        self._inflight = None
        for task in list(self._pushes):
            task.cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._rearm_soon is not None:
            self._rearm_soon.cancel()
            self._rearm_soon = None
        if self._sampler is not None:
            self._sampler.cancel()
            self._sampler = None


def _show(data: bytes) -> str:
    """A message for the trace: text with push tokens and credentials masked."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = []
    for line in head.decode("utf-8", "replace").split("\r\n"):
        name = line.split(":", 1)[0].strip().lower()
        if name in ("authorization", "proxy-authorization"):
            line = f"{line.split(':', 1)[0]}: ***"
        lines.append("  " + redact(line))
    if body:
        lines.append(f"  ({len(body)} body bytes)")
    return "\n".join(lines)


auth_logger = logging.getLogger("sipwake.auth")


def _log_auth_failure(failed: AuthFailed) -> None:
    """One line per refused credential, in the format contrib/fail2ban matches (README,
    "Exposing sipwake to a network"): the address first, then what the client chose,
    escaped (a crafted user name cannot name another address or add a line)."""
    peer = failed.source
    host = f"[{peer.host}]" if ":" in peer.host else peer.host
    user = json.dumps(failed.user[:64], ensure_ascii=True)
    line = (
        f"authentication failed from {host}:{peer.port} ({peer.transport}): user {user}, "
        f"{failed.method}: {failed.reason}"
    )
    if failed.failures:
        line += f"; {failed.failures} from this address in {failed.window_s:g} s"
    if failed.delay_s:
        line += f", answer delayed {failed.delay_s:g} s"
    auth_logger.warning("%s", line)
    if failed.banned_s:
        auth_logger.warning(
            "banned %s for %g s after %d failed authentications in %g s",
            peer.host,
            failed.banned_s,
            failed.failures,
            failed.window_s,
        )
