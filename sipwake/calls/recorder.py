"""The call recorder: the driver's ``CallSink``, writing call records through to a store.

Theory of operation
-------------------
Inputs are the wake engine's ``CallEvent`` facts (``call_event``), the SIP
messages the driver sends and receives (``message`` or ``message_bytes``), the
push outcomes (``push_done``) and the lead's ``bind_call_id(call_ref, call_id)``.
Every input carries the event loop's monotonic time ``at``; the recorder adds
``wall_offset`` (``time.time() - loop.time()`` taken once at start) to stamp
entries with wall-clock seconds, and numbers them (``seq``) in arrival order.

Grouping: events carry their ``call_ref``. Messages carry a SIP Call-ID; a proxy
keeps the caller's Call-ID on every branch (RFC 3261 §16.6), so one Call-ID
names one call, and a map Call-ID → call ref files them. The map is filled by

* ``bind_call_id`` (explicit: the lead knows the INVITE of the "received" event);
* a ``CallEvent`` that has a ``call_id`` attribute (should the engine add one);
* ``push_done``: a push request carries the call's Call-ID and ref;
* a "received" event that directly follows an inbound INVITE whose Call-ID is not
  yet bound: the driver hands the INVITE to the node, which answers with that event
  in the same call, so that INVITE is the call's.

Messages of a Call-ID not yet bound wait (``pending``) when they start with an
inbound INVITE, and join the call when it is bound: the INVITE, a 407 challenge,
the 100 Trying sent before the engine spoke. Other unbound traffic (REGISTER,
OPTIONS) is ignored.

What is kept of a message: nothing but its Call-ID is read of a message of no
call (REGISTER, OPTIONS, the common case). A call's message is kept raw, as its
head (``sipwake.calls.heads.clip_head``: first line and header fields, at most
2 KB, never the body; credentials and push tokens hidden at the byte level) with
the call it belongs to, its direction, peer and time; ``sipwake calls show``
parses heads into first lines and header fields when it reads the call, in its
own process (``heads.readable``). On the event loop, only INVITEs and BYEs
are read further, for the facts the recorder derives, each written as a step of
their own:

* ``branch``: the first INVITE sent to a new peer is looked up with ``devices``
  (the server asks the registrar which binding of the called AOR has that
  Request-URI) and the device is written as a ``CallDevice``; the ``answered``
  step then names that device's AOR and kind rather than its instance URN;
* ``hangup``: the first BYE received ends the call; it is the caller's when its
  From tag is the one of the caller's INVITE (RFC 3261 §12.2.1.1: a party's
  requests in a dialog carry its own tag in From), else the callee's.

Bounds: at most ``max_messages`` messages are kept per call (then one
"truncated" step says so); at most ``max_live`` calls are followed at once (the
oldest is forgotten first); a call that reached a terminal step (answered,
declined, cancelled, failed) is forgotten ``linger_s`` seconds later, or
``answered_linger_s`` after an answer (a BYE shortens that to ``linger_s``), so
its ACK, BYE and cancel pushes still join it; pending Call-IDs are dropped after
``linger_s`` seconds or beyond ``max_pending``.

Writes: entries queue up and go to the store in one ``record_call_entries``
batch. With ``schedule`` (``loop.call_later``) the batch is written
``flush_delay`` seconds after its first entry, or at once when ``max_batch``
entries wait; without it every input is written at once. A failing store is
logged (never raised into the driver) and its batch dropped. ``close()``
writes what is left.
"""

from __future__ import annotations

import heapq
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from sipwake.calls.heads import clip_head, from_tag, kept_headers
from sipwake.calls.records import (
    TERMINAL_STEPS,
    CallDevice,
    CallEntry,
    CallMessageRecord,
    CallStepRecord,
    Direction,
)
from sipwake.sip.pushtarget import redact

if TYPE_CHECKING:
    from sipwake.proxy.wake import CallEvent, SendPush
    from sipwake.push.base import PushOutcome
    from sipwake.registrar.bindings import Binding
    from sipwake.store.base import CallLog

__all__ = ["CallRecorder", "DeviceLookup", "binding_devices", "kept_headers", "sip_head"]

logger = logging.getLogger("sipwake.calls")

Schedule = Callable[[float, Callable[[], None]], object]
DeviceLookup = Callable[[str, str, str], CallDevice | None]
"""``(aor, request_uri, peer)`` → the registered device an INVITE went to, if any."""
Headers = tuple[tuple[str, str], ...]


@dataclass(slots=True)
class _Live:
    ref: str
    call_id: str = ""
    call_ids: set[str] = field(default_factory=set)
    messages: int = 0
    truncated: bool = False
    until: float | None = None
    """Monotonic time at which the call is forgotten (None: still ringing)."""
    aor: str = ""
    caller_tag: str | None = None
    """The From tag of the caller's INVITE (None: not seen yet)."""
    caller_peer: str = ""
    branches: set[str] = field(default_factory=set)
    """Peers an INVITE of this call was sent to (looked up once each)."""
    devices: list[CallDevice] = field(default_factory=list)
    hung_up: bool = False


_Item = tuple[int, float, Direction, str, str, Headers, bytes]
"""A message waiting to be filed: seq, monotonic time, direction, peer, first line,
header fields and head (a raw message has "" and () for the two it keeps in
``head``)."""


class CallRecorder:
    """Files call events and SIP messages by call and writes them to a ``CallLog``."""

    def __init__(
        self,
        log: CallLog,
        *,
        wall_offset: float,
        schedule: Schedule | None = None,
        flush_delay: float = 0.25,
        max_batch: int = 500,
        max_messages: int = 200,
        max_live: int = 4096,
        max_pending: int = 256,
        linger_s: float = 32.0,
        answered_linger_s: float = 3600.0,
        devices: DeviceLookup | None = None,
    ) -> None:
        """``wall_offset`` is wall-clock minus monotonic seconds (``time.time() -
        loop.time()``); ``schedule(delay, callback)`` defers a batch write
        (``loop.call_later``; None writes every input at once); ``devices`` names the
        device behind a branch (None: branches are known by address only)."""
        for name, value in (
            ("max_batch", max_batch),
            ("max_messages", max_messages),
            ("max_live", max_live),
            ("max_pending", max_pending),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        self._log = log
        self.wall_offset = wall_offset
        self._schedule = schedule
        self.flush_delay = flush_delay
        self.max_batch = max_batch
        self.max_messages = max_messages
        self.max_live = max_live
        self.max_pending = max_pending
        self.linger_s = linger_s
        self.answered_linger_s = answered_linger_s
        self._devices = devices
        self._seq = 0
        self._live: OrderedDict[str, _Live] = OrderedDict()
        self._by_call_id: dict[str, str] = {}
        self._pending: OrderedDict[str, list[_Item]] = OrderedDict()
        self._last_invite: str | None = None
        """Call-ID of the latest input if it was an unbound inbound INVITE."""
        self._expiry: list[tuple[float, str]] = []
        self._queue: list[CallEntry] = []
        self._flush_armed = False
        self.failures = 0
        """Batches the store refused (each logged as a warning, then dropped)."""

    def __len__(self) -> int:
        """Calls followed now."""
        return len(self._live)

    @property
    def pending_call_ids(self) -> int:
        return len(self._pending)

    def call_ref_of(self, call_id: str) -> str | None:
        """The call a Call-ID is filed under, if it is followed now."""
        return self._by_call_id.get(call_id)

    # -- CallSink -----------------------------------------------------------------------
    def call_event(self, event: CallEvent) -> None:
        """One step of a call, from the wake engine (via the driver)."""
        self._sweep(event.at)
        last_invite, self._last_invite = self._last_invite, None
        if last_invite not in self._pending:
            last_invite = None
        live = self._follow(event.call_ref)
        if event.aor and not live.aor:
            live.aor = event.aor
        if not live.call_id:
            call_id = getattr(event, "call_id", None)
            if isinstance(call_id, str) and call_id:
                self._bind(live, call_id)
            elif event.step == "received" and last_invite is not None:
                self._bind(live, last_invite)
        self._enqueue(
            CallStepRecord(
                ref=event.call_ref,
                seq=self._next_seq(),
                wall=event.at + self.wall_offset,
                aor=event.aor,
                step=event.step,
                detail=_answerer(live, event.detail) if event.step == "answered" else event.detail,
                call_id=live.call_id,
            )
        )
        if event.step in TERMINAL_STEPS and live.until is None:
            linger = self.answered_linger_s if event.step == "answered" else self.linger_s
            self._forget_at(live, event.at + linger)
        self._written()

    def push_done(self, push: SendPush, outcome: PushOutcome) -> None:
        """A push finished: its request names the call's Call-ID. (Its outcome is in the
        ``push-result`` step that follows and in the push log.)"""
        del outcome
        live = self._live.get(push.call_ref) if push.call_ref else None
        if live is not None and push.request.call_id and not live.call_id:
            self._bind(live, push.request.call_id)
            self._written()

    # -- the lead's inputs ------------------------------------------------------------
    def bind_call_id(self, call_ref: str, call_id: str) -> None:
        """File SIP messages with ``call_id`` under call ``call_ref`` (the INVITE of its
        "received" step); messages of that Call-ID seen before join it now."""
        if not call_id:
            raise ValueError("bind_call_id: empty Call-ID")
        live = self._follow(call_ref)
        if call_id in live.call_ids:
            return
        self._bind(live, call_id)
        self._written()

    def message(
        self,
        direction: Direction,
        peer: str,
        first_line: str,
        call_id: str,
        at: float,
        headers: Headers = (),
    ) -> None:
        """A SIP message received (``"in"``) from or sent (``"out"``) to ``peer``, with
        the header fields to keep (``kept_headers``)."""
        if direction not in ("in", "out"):
            raise ValueError(f"direction must be 'in' or 'out', got {direction!r}")
        self._message(direction, peer, first_line, call_id, at, headers, None)

    def message_bytes(self, direction: Direction, peer: object, data: bytes, at: float) -> None:
        """``message`` for raw bytes as the driver has them (keep-alives and non-SIP
        data are skipped). Only the Call-ID is read of a message of no call; a call's
        message is kept raw (``heads.clip_head``) and parsed when the call is read."""
        # As sipwake and most peers spell it: found without splitting the head (and
        # no further than the Call-ID, for the messages of no call).
        start = data.find(b"\r\nCall-ID:")
        if start > 0 and data.find(b"\r\n\r\n", 0, start + 2) < 0:
            stop = data.find(b"\r\n", start + 10)
            call_id = (
                data[start + 10 : stop if stop >= 0 else len(data)]
                .strip()
                .decode("utf-8", "replace")
            )
            if not call_id or data.startswith(b"\r\n"):
                return
        else:
            found = sip_head(data)
            if found is None:
                return
            call_id = found[1]
        if self._pending or (self._expiry and self._expiry[0][0] <= at):
            self._sweep(at)
        ref = self._by_call_id.get(call_id)
        live = self._live.get(ref) if ref is not None else None
        if live is None:
            waiting = self._pending.get(call_id)
            if waiting is None and (direction != "in" or not data.startswith(b"INVITE ")):
                self._last_invite = None  # not a call's (REGISTER, OPTIONS): the common case
                return
        head = clip_head(data, data.find(b"\r\n\r\n"))
        self._seq = seq = self._seq + 1
        if live is not None:
            self._last_invite = None
            self._add_message(live, seq, at, direction, str(peer), "", (), head)
            if not self._flush_armed or len(self._queue) >= self.max_batch:
                self._written()
        else:
            self._wait(call_id, (seq, at, direction, str(peer), "", (), head))

    def _message(
        self,
        direction: Direction,
        peer: str,
        first_line: str,
        call_id: str,
        at: float,
        headers: Headers,
        data: bytes | None,
    ) -> None:
        self._sweep(at)
        ref = self._by_call_id.get(call_id)
        live = self._live.get(ref) if ref is not None else None
        invite = direction == "in" and first_line.startswith("INVITE ")
        if live is None and call_id not in self._pending and not invite:
            self._last_invite = None
            return
        if "pn-" in first_line.lower():
            first_line = redact(first_line)
        item = (self._next_seq(), at, direction, peer, first_line, headers, b"")
        if live is not None:
            self._last_invite = None
            self._add_message(live, *item)
            self._written()
        else:
            self._wait(call_id, item)

    def _wait(self, call_id: str, item: _Item) -> None:
        """A message of a Call-ID not bound yet: its INVITE opens a wait."""
        waiting = self._pending.get(call_id)
        if waiting is not None:
            if len(waiting) < self.max_messages:
                waiting.append(item)
            if self._last_invite != call_id:
                self._last_invite = None
            return
        self._pending[call_id] = [item]
        while len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)
        self._last_invite = call_id

    # -- writing ------------------------------------------------------------------------
    def flush(self) -> None:
        """Write every queued entry to the store now (one batch)."""
        if not self._queue:
            return
        batch = [e if e.call_id else self._with_call_id(e) for e in self._queue]
        self._queue = []
        try:
            self._log.record_call_entries(batch)
        except Exception as exc:  # a full disk must not fail the calls it records
            self.failures += 1
            logger.warning("call records: cannot write %d entries: %s", len(batch), exc)

    def _deferred_flush(self) -> None:
        self._flush_armed = False
        self.flush()

    def close(self) -> None:
        """Write what is queued; the recorder may still be used afterwards."""
        self.flush()

    # -- internals ----------------------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _follow(self, ref: str) -> _Live:
        live = self._live.get(ref)
        if live is None:
            live = self._live[ref] = _Live(ref=ref)
            while len(self._live) > self.max_live:
                _, oldest = self._live.popitem(last=False)
                self._unmap(oldest)
        return live

    def _bind(self, live: _Live, call_id: str) -> None:
        previous = self._by_call_id.get(call_id)
        if previous is not None and previous != live.ref:
            old = self._live.get(previous)
            if old is not None:
                old.call_ids.discard(call_id)
        self._by_call_id[call_id] = live.ref
        live.call_ids.add(call_id)
        if not live.call_id:
            live.call_id = call_id
        for item in self._pending.pop(call_id, []):
            self._add_message(live, *item, call_id=call_id)
        if self._last_invite == call_id:
            self._last_invite = None

    def _add_message(
        self,
        live: _Live,
        seq: int,
        at: float,
        direction: Direction,
        peer: str,
        first_line: str,
        headers: Headers,
        head: bytes,
        call_id: str | None = None,
    ) -> None:
        if live.messages >= self.max_messages:
            if not live.truncated:
                live.truncated = True
                self._enqueue(
                    CallStepRecord(
                        ref=live.ref,
                        seq=seq,
                        wall=at + self.wall_offset,
                        aor="",
                        step="truncated",
                        detail=f"more than {self.max_messages} messages: later ones not kept",
                        call_id=live.call_id,
                    )
                )
            return
        live.messages += 1
        wall = at + self.wall_offset
        self._queue.append(
            CallMessageRecord(
                ref=live.ref,
                seq=seq,
                wall=wall,
                direction=direction,
                peer=peer,
                first_line=first_line,
                call_id=call_id or live.call_id,
                headers=headers,
                head=head,
            )
        )
        # What the recorder itself derives: read from the head only here.
        if head:
            invite = head.startswith(b"INVITE ")
            bye = not invite and direction == "in" and head.startswith(b"BYE ")
        else:
            invite = first_line.startswith("INVITE ")
            bye = not invite and direction == "in" and first_line.startswith("BYE ")
        if invite:
            if direction == "in" and live.caller_tag is None:
                live.caller_tag = from_tag(head) if head else _tag(_header(headers, "From"))
                live.caller_peer = peer
            elif direction == "out" and peer not in live.branches:
                self._branch(live, peer, wall, _request_uri(head, first_line))
        elif bye:
            if not live.hung_up:
                live.hung_up = True
                tag = from_tag(head) if head else _tag(_header(headers, "From"))
                self._step(live, wall, "hangup", f"by the {_bye_side(live, tag, peer)}")
            if live.until is not None:
                self._forget_at(live, min(live.until, at + self.linger_s))

    def _branch(self, live: _Live, peer: str, wall: float, request_uri: str) -> None:
        """An INVITE went to a new peer: note the device there, if it is a binding."""
        live.branches.add(peer)
        if self._devices is None or not live.aor:
            return
        try:
            device = self._devices(live.aor, request_uri, peer)
        except Exception as exc:  # a lookup must not fail the call it describes
            logger.warning("call records: device lookup failed: %s", exc)
            return
        if device is not None:
            live.devices.append(device)
            self._step(live, wall, "branch", device.to_detail())

    def _step(self, live: _Live, wall: float, step: str, detail: str) -> None:
        self._enqueue(
            CallStepRecord(
                ref=live.ref,
                seq=self._next_seq(),
                wall=wall,
                aor="",
                step=step,
                detail=detail,
                call_id=live.call_id,
            )
        )

    def _forget_at(self, live: _Live, deadline: float) -> None:
        live.until = deadline
        heapq.heappush(self._expiry, (deadline, live.ref))

    def _sweep(self, now: float) -> None:
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            _, ref = heapq.heappop(expiry)
            live = self._live.get(ref)
            if live is not None and live.until is not None and live.until <= now:
                del self._live[ref]
                self._unmap(live)
        while self._pending:
            call_id, items = next(iter(self._pending.items()))
            if items[0][1] + self.linger_s > now:
                break
            del self._pending[call_id]
            if self._last_invite == call_id:
                self._last_invite = None

    def _unmap(self, live: _Live) -> None:
        for call_id in live.call_ids:
            if self._by_call_id.get(call_id) == live.ref:
                del self._by_call_id[call_id]

    def _with_call_id(self, entry: CallEntry) -> CallEntry:
        """Entries written before their call's Call-ID was known get it now."""
        if entry.call_id:
            return entry
        live = self._live.get(entry.ref)
        return replace(entry, call_id=live.call_id) if live is not None and live.call_id else entry

    def _enqueue(self, entry: CallEntry) -> None:
        self._queue.append(entry)

    def _written(self) -> None:
        """Inputs queued entries: write them now, or arm the deferred write."""
        if not self._queue:
            return
        if self._schedule is None or len(self._queue) >= self.max_batch:
            self.flush()
        elif not self._flush_armed:
            self._flush_armed = True
            self._schedule(self.flush_delay, self._deferred_flush)


def binding_devices(bindings: Callable[[str], Iterable[Binding]]) -> DeviceLookup:
    """A ``DeviceLookup`` over ``bindings(aor)`` (the registrar's live bindings): the
    binding whose forwarding URI is the INVITE's Request-URI, else the one registered
    from the peer the INVITE went to."""

    def lookup(aor: str, request_uri: str, peer: str) -> CallDevice | None:
        found = list(bindings(aor))
        match = next((b for b in found if str(b.forward_uri()) == request_uri), None)
        if match is None:
            match = next((b for b in found if str(b.source) == peer), None)
        if match is None:
            return None
        return CallDevice(
            peer=peer,
            aor=match.aor,
            contact=str(match.forward_uri()),
            instance=match.instance or "",
            user_agent=match.user_agent or "",
            push=match.push.base_provider if match.push is not None else "",
        )

    return lookup


def _tag(name_addr: str | None) -> str:
    """The ``tag`` parameter of a From or To value ("" if none)."""
    if not name_addr:
        return ""
    params = name_addr.rpartition(">")[2] if ">" in name_addr else name_addr
    for param in params.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "tag":
            return value.strip()
    return ""


def _bye_side(live: _Live, tag: str, peer: str) -> str:
    """``caller`` if the BYE carries the caller's From tag (or, without tags, comes from
    the caller's address), else ``callee``."""
    if live.caller_tag and tag:
        return "caller" if tag == live.caller_tag else "callee"
    return "caller" if peer == live.caller_peer else "callee"


def _header(headers: Headers, name: str) -> str | None:
    return next((value for key, value in headers if key == name), None)


def _request_uri(head: bytes, first_line: str) -> str:
    """The Request-URI of an INVITE's first line."""
    if head:
        stop = head.find(b"\r\n")
        first_line = (head if stop < 0 else head[:stop]).decode("utf-8", "replace")
    parts = first_line.split(" ")
    return parts[1] if len(parts) > 1 else ""


def _answerer(live: _Live, label: str) -> str:
    """The wake engine names the answering branch by its instance or Contact; say
    which user and device that is (``sip:alice@lab.test (iPhone, apns)``)."""
    for device in live.devices:
        if label and label in (device.instance, device.contact):
            return f"{device.aor} ({device.hint()})"
    return label


def sip_head(data: bytes) -> tuple[str, str] | None:
    """The first line and the Call-ID of a SIP message (RFC 3261 §7.3.3 compact ``i``
    too), or None for a keep-alive or anything without both."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        end = len(data)
    # The driver hands every message here: find the header as sipwake and most peers
    # spell it without splitting the head; any other spelling takes the long way.
    start = data.find(b"\r\nCall-ID:", 0, end)
    if start > 0:
        line_end = data.find(b"\r\n", start + 10, end)
        call_id = data[start + 10 : end if line_end < 0 else line_end].strip()
        first = data[: data.find(b"\r\n")].strip()
        if call_id and first:
            return first.decode("utf-8", "replace"), call_id.decode("utf-8", "replace")
    lines = data[:end].decode("utf-8", "replace").split("\r\n")
    first_line = lines[0].strip()
    if not first_line:
        return None
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon and name.strip().lower() in ("call-id", "i"):
            value = value.strip()
            return (first_line, value) if value else None
    return None
