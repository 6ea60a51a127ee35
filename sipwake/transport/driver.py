"""The driver: the asyncio shell around the node (aioquic's protocol.py, for SIP).

It reads the loop's clock, hands each received message to the node, performs
the outputs in order and re-arms one timer for the node's next deadline. Nothing
else in sipwake touches the loop's clock.

Group commit: binding changes (``PersistChanges``) are not written one by one.
Those of every message handled in one turn of the event loop (a UDP batch, and
what the other transports read in that turn) gather, and right after that turn
go to the sink in one ``apply``: one transaction, one fsync. Only then does the
node hear ``changes_stored`` for each, in order, and send the 200s (RFC 3261
§10.3: a 200 lists bindings that are stored). If that ``apply`` fails, every
REGISTER of the batch gets its 500 and its changes undone, newest first, so
that a REGISTER that built on an earlier one of the batch is undone before it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Literal, Protocol

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

__all__ = ["CallSink", "ChangeSink", "Driver", "Pusher"]

logger = logging.getLogger("sipwake.driver")
trace_logger = logging.getLogger("sipwake.trace")


class ChangeSink(Protocol):
    """Where binding changes go before the response that confirms them is sent: all of
    them durably, or none and an exception."""

    def apply(self, events: tuple[RegistrarEvent, ...], now: float) -> None: ...


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


class Driver:
    """Feeds a ``Node`` from the transports and keeps its timer armed."""

    def __init__(
        self,
        node: Node,
        *,
        sink: ChangeSink | None = None,
        trace: bool = False,
        shed_load: bool = True,
        pusher: Pusher | None = None,
        calls: CallSink | None = None,
        messages: MessageSink | None = None,
    ) -> None:
        self.node = node
        self.sink = sink
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
        #: Transactions the sink was asked for (one per batch).
        self.commits = 0
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

    def _commit(self) -> None:
        """Store the binding changes gathered in this loop iteration in one transaction,
        then let the node answer the REGISTERs that waited for them."""
        self._commit_soon = None
        self._step(self._store_changes())
        self._rearm()

    def _store_changes(self) -> list[NodeOutput]:
        changes, tokens = self._changes, self._tokens
        if not changes and not tokens:
            return []
        self._changes, self._tokens = [], []
        assert self.sink is not None  # changes gather only when there is one
        self.commits += 1
        now = self.now()
        ok = True
        try:
            self.sink.apply(tuple(changes), now)
        except Exception:
            logger.exception(
                "binding store failed: %d REGISTERs of this batch get 500", len(tokens)
            )
            ok = False
        if ok:
            self._pin_flows(tuple(changes))
        outputs: list[NodeOutput] = []
        # Undone newest first: a later REGISTER may have built on an earlier one.
        for token in tokens if ok else tokens[::-1]:
            try:
                outputs += self.node.changes_stored(token, ok, now)
            except Exception:  # a bug must not leave the rest of the batch unanswered
                logger.exception("internal error answering a stored REGISTER")
        return outputs

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
        """Stop; binding changes still gathering are stored and answered first."""
        if self._commit_soon is not None:
            self._commit_soon.cancel()
            self._commit()
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
