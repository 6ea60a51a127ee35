"""The registrar: the RFC 3261 §10.3 location service, held in memory, sans-IO.

Theory of operation
-------------------
Inputs are method calls; each returns what happened, in order:

* ``handle_register(request, source, now)`` → ``RegisterResult``: the
  response to send and the binding changes (``BindingAdded``,
  ``BindingRefreshed``, ``BindingRemoved``, ``BindingExpired``). The caller
  persists the changes *before* it sends the response (a 200 promises the
  binding exists); if persisting fails it calls ``revert(changes)`` and
  answers 500 instead (RFC 3261 §10.3 step 7: all updates or none).
* ``handle_timeout(now)`` → ``[BindingExpired]`` for every binding whose
  expiry is ≤ ``now``, in (deadline, creation) order; ``next_deadline()``
  says when to call it next.
* ``remove``, ``remove_push_target`` and ``restore`` serve the node (an
  administrator, a dead push token, a store loaded at start).

A REGISTER is read and checked first (``validate.read_register``): every
refusal (4xx, 555) happens before any binding changes. Then its contacts are
applied, in order, to a working copy of the AOR's bindings; a contact finds
the binding it renews by RFC 5626 instance/reg-id, then by RFC 8599 push
target, then by RFC 3261 §19.1.4 URI comparison (see ``bindings``). An iOS app
that registers its PushKit VoIP token and its remote-notification token as two
contacts of one ``+sip.instance`` (RFC 8599 has no two-token form) gets one binding
holding both (``PushTarget.combined``): the second contact renews the first's
binding and adds its token. A renewed
binding from the same Call-ID needs a higher CSeq, else the whole request
fails and nothing changes (§10.3 step 7). The RFC names no status for that
failure; the only one it gives for a failed binding update is 500, so 500 it
is (Kamailio and OpenSIPS answer 400 "Invalid CSeq number"). Past
``max_bindings_per_aor`` the least recently registered bindings are dropped
(``BindingRemoved(reason="limit")``). The working copy is committed and the
200 lists every current binding with its remaining seconds (§10.3 step 8),
plus Path (RFC 3327), ``Require: outbound``/``Flow-Timer`` (RFC 5626 §6) and
``Feature-Caps`` (RFC 8599 §5.6.1) as they apply.

Push keys: a contact with push parameters registered over TLS or WSS gets a
random 32-byte ``seal_key`` (kept when the binding is refreshed over a secure
transport, dropped when over a plain one); the 200 to that REGISTER, and to no
other request, carries one ``Sipwake-Push-Key`` header (base64url) per such
contact of the request, in Contact order.

Expired bindings are dropped lazily too: a REGISTER for an AOR first expires
that AOR's stale bindings (reported as ``BindingExpired``), and lookups never
return a binding whose ``expires_at`` ≤ ``now``.

Authentication is the caller's job (§10.3 steps 3-4): call
``handle_register`` only for an authorised request. Nothing here logs.
"""

from __future__ import annotations

import base64
import dataclasses
import heapq
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import assert_never

from sipwake.errors import LocalProtocolError, RemoteProtocolError, cut
from sipwake.frozen import interpreted_init
from sipwake.ids import Ids
from sipwake.registrar.bindings import (
    PUSH_KEY_BYTES,
    PUSH_KEY_HEADER,
    SECURE_TRANSPORTS,
    Binding,
    PushKey,
)
from sipwake.registrar.config import RegistrarConfig
from sipwake.registrar.events import (
    BindingAdded,
    BindingExpired,
    BindingRefreshed,
    BindingRemoved,
    PushTargetRemoved,
    RegistrarEvent,
    RemovalReason,
)
from sipwake.registrar.reach import behind_nat
from sipwake.registrar.validate import ContactPlan, RegisterPlan, Rejection, read_register
from sipwake.sip.headers import Via
from sipwake.sip.message import Request, Response, make_response
from sipwake.sip.peer import Peer
from sipwake.sip.uri import SipUri

__all__ = ["RegisterResult", "Registrar", "http_date"]

_BINDING_ID_LENGTH = 16
#: The changes that leave a binding in place (its push key goes into the 200).
_BOUND = (BindingAdded, BindingRefreshed)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, init=False)
class RegisterResult:
    """What a REGISTER did: the response to send and the binding changes, in order."""

    response: Response
    changes: tuple[RegistrarEvent, ...] = ()
    aor: str | None = None
    """The AOR key, once the request got far enough to name one."""
    bindings: tuple[Binding, ...] = ()
    """The AOR's current bindings after the request (what a 200 lists)."""

    def __init__(
        self,
        *,
        response: Response,
        changes: tuple[RegistrarEvent, ...] = (),
        aor: str | None = None,
        bindings: tuple[Binding, ...] = (),
    ) -> None:
        self.response = response  # type: ignore[misc]
        self.changes = changes  # type: ignore[misc]
        self.aor = aor  # type: ignore[misc]
        self.bindings = bindings  # type: ignore[misc]

    @property
    def accepted(self) -> bool:
        return 200 <= self.response.status < 300


interpreted_init(RegisterResult)


class Registrar:
    """Bindings per AOR, with RFC 3261 §10.3, RFC 5626 §6 and RFC 8599 §5.6.1 rules."""

    def __init__(self, *, ids: Ids, config: RegistrarConfig) -> None:
        self._ids = ids
        self.config = config
        self._aors: dict[str, dict[str, Binding]] = {}
        self._aor_of: dict[str, str] = {}
        #: push key → binding ids (a tuple: nearly always one id, and far smaller than a dict)
        self._by_push: dict[PushKey, tuple[str, ...]] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0

    # -- inputs -----------------------------------------------------------
    def handle_register(
        self, request: Request, source: Peer, now: float, *, wall: float | None = None
    ) -> RegisterResult:
        """Process a REGISTER that arrived from ``source`` (RFC 3261 §10.3).

        ``wall`` (Unix seconds), when given, adds a ``Date`` header to the 200
        (§10.3 step 8 SHOULD). Raises ``LocalProtocolError`` only for a
        request that is not a REGISTER (a caller bug); a peer's bad request
        becomes an error response.
        """
        if request.method != "REGISTER":
            raise LocalProtocolError(f"handle_register: expected REGISTER, got {request.method}")
        to_tag = self._ids.tag()
        try:
            plan = read_register(request, self.config)
        except Rejection as rejection:
            return RegisterResult(response=self._refuse(request, rejection, to_tag))
        except RemoteProtocolError as exc:
            refusal = Rejection(exc.status_hint, cut(exc.reason))
            return RegisterResult(response=self._refuse(request, refusal, to_tag))
        expired = self._expire_aor(plan.aor, now)
        try:
            changes = self._apply(plan, source, now, request.top_via)
        except Rejection as rejection:
            return RegisterResult(
                response=self._refuse(request, rejection, to_tag),
                changes=tuple(expired),
                aor=plan.aor,
                bindings=tuple(self.lookup(plan.aor, now)),
            )
        bindings = self.lookup(plan.aor, now)
        keys = [
            change.binding.seal_key
            for change in changes
            if isinstance(change, _BOUND) and change.binding.seal_key is not None
        ]
        response = self._accept(request, plan, bindings, source, now, to_tag, wall, keys)
        return RegisterResult(
            response=response,
            changes=(*expired, *changes),
            aor=plan.aor,
            bindings=tuple(bindings),
        )

    def next_deadline(self) -> float | None:
        """When the earliest binding expires (None with no bindings)."""
        heap = self._heap
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def handle_timeout(self, now: float) -> list[RegistrarEvent]:
        """Expire every binding whose expiry is ≤ ``now``, in (deadline, creation) order."""
        out: list[RegistrarEvent] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if self._live(entry):
                binding = self._binding(entry[2])
                self._drop(binding)
                out.append(BindingExpired(binding=binding))
        return out

    def remove(
        self, aor: str, binding_id: str | None = None, *, reason: RemovalReason = "removed"
    ) -> list[RegistrarEvent]:
        """Remove one binding of ``aor`` (or all of them when ``binding_id`` is None)."""
        bindings = self._aors.get(aor, {})
        if binding_id is not None and binding_id not in bindings:
            return []
        chosen = list(bindings.values()) if binding_id is None else [bindings[binding_id]]
        out: list[RegistrarEvent] = []
        for binding in chosen:
            self._drop(binding)
            out.append(BindingRemoved(binding=binding, reason=reason))
        return out

    def remove_push_target(
        self, binding_id: str, *, prid: str | None = None, unregistered_at: float | None = None
    ) -> list[RegistrarEvent]:
        """Stop pushing a binding whose token the provider declared dead (PROTOCOLS §8 item 4).

        With ``prid``, only that token, and only if the binding still has it: a device
        that re-registered with a fresh token meanwhile keeps it, and an iOS device that
        registered two (VoIP and remote, ``PushTarget.tokens``) keeps the other one. With
        ``unregistered_at`` (monotonic; APNs 410 ``timestamp``), nothing is dropped when
        the binding was registered after it: Apple's rule, the device registered the
        token again since the service last saw it invalid.
        """
        binding = self.get(binding_id)
        if binding is None or binding.push is None:
            return []
        if prid is not None and not binding.push.holds(prid):
            return []
        if unregistered_at is not None and binding.registered_at > unregistered_at:
            return []
        left = None if prid is None else binding.push.without(prid)
        updated = dataclasses.replace(binding, push=left)
        self._put(updated)
        return [PushTargetRemoved(binding=updated, previous=binding)]

    def restore(self, bindings: Iterable[Binding]) -> None:
        """Load bindings (from a store, at start), replacing any with the same id."""
        for binding in bindings:
            self._put(binding)

    def revert(self, changes: Iterable[RegistrarEvent]) -> None:
        """Undo ``changes`` (newest first), e.g. when the store failed to persist them
        (RFC 3261 §10.3: tentative binding updates are removed and the REGISTER gets 500).
        Expiries are not undone."""
        for change in reversed(list(changes)):
            match change:
                case BindingAdded(binding=binding):
                    if self.get(binding.binding_id) == binding:
                        self._drop(binding)
                case BindingRefreshed(previous=previous) | PushTargetRemoved(previous=previous):
                    self._put(previous)
                case BindingRemoved(binding=binding):
                    self._put(binding)
                case BindingExpired():
                    pass
                case _:
                    assert_never(change)

    # -- queries ----------------------------------------------------------
    def get(self, binding_id: str) -> Binding | None:
        aor = self._aor_of.get(binding_id)
        return None if aor is None else self._aors[aor][binding_id]

    def lookup(self, aor: str, now: float) -> list[Binding]:
        """The AOR's unexpired bindings, highest q first, then most recently registered."""
        live = [b for b in self._aors.get(aor, {}).values() if not b.expired(now)]
        if len(live) > 1:
            live.sort(key=lambda b: (-b.q, -b.registered_at))
        return live

    def find_by_instance(self, aor: str, instance: str, now: float) -> list[Binding]:
        """Unexpired bindings of one device (``+sip.instance``, RFC 5626), any reg-id."""
        return [b for b in self.lookup(aor, now) if b.instance == instance]

    def find_by_push(self, key: PushKey, now: float, *, aor: str | None = None) -> list[Binding]:
        """Unexpired bindings with this RFC 8599 device identity (provider, param, prid)."""
        found = [self._binding(i) for i in self._by_push.get(key, ())]
        return [b for b in found if not b.expired(now) and (aor is None or b.aor == aor)]

    def all_bindings(self) -> list[Binding]:
        """Every binding held, expired or not, AOR by AOR in insertion order."""
        return [b for bindings in self._aors.values() for b in bindings.values()]

    def aors(self) -> list[str]:
        return list(self._aors)

    def __len__(self) -> int:
        return len(self._aor_of)

    # -- REGISTER processing ---------------------------------------------
    def _apply(
        self, plan: RegisterPlan, source: Peer, now: float, via: Via
    ) -> list[RegistrarEvent]:
        """Apply the plan to a working copy; commit and report the net changes. ``via`` is
        the REGISTER's top Via (NAT detection, ``sipwake.registrar.reach``)."""
        before = self._aors.get(plan.aor, {})
        current = dict(before)
        touched: dict[str, None] = {}
        reasons: dict[str, RemovalReason] = {}

        def take_out(binding: Binding, reason: RemovalReason) -> None:
            del current[binding.binding_id]
            touched[binding.binding_id] = None
            reasons[binding.binding_id] = reason

        if plan.wildcard:
            for binding in list(current.values()):
                _check_order(binding, plan)
                take_out(binding, "unregistered")
        for contact in plan.contacts:
            match = _match(current, contact)
            if match is not None and match.binding_id not in touched:
                _check_order(match, plan)
            if contact.expires_s == 0:
                if match is not None:
                    take_out(match, "unregistered")
                continue
            binding_id = match.binding_id if match else self._ids.token(_BINDING_ID_LENGTH)
            seal_key = None
            if contact.push is not None and source.transport in SECURE_TRANSPORTS:
                seal_key = match.seal_key if match is not None else None
                seal_key = seal_key or self._ids.random_bytes(PUSH_KEY_BYTES)
            push = contact.push
            if (
                push is not None
                and match is not None
                and match.push is not None
                and contact.instance is not None
                and match.instance == contact.instance
            ):  # RFC 8599 VoIP and remote tokens as two contacts of one device
                push = match.push.combined(push)
            current[binding_id] = Binding(
                binding_id=binding_id,
                aor=plan.aor,
                contact=_kept_contact(match, contact),
                expires_at=now + contact.expires_s,
                registered_at=now,
                call_id=plan.call_id,
                cseq=plan.cseq,
                q=contact.q,
                instance=contact.instance,
                reg_id=contact.reg_id,
                path=plan.path,
                source=source,
                push=push,
                user_agent=plan.user_agent,
                pnsreg=contact.pnsreg,
                seal_key=seal_key,
                nat=source.transport == "udp" and behind_nat(via, source, contact.uri),
            )
            touched[binding_id] = None
            reasons.pop(binding_id, None)
        while len(current) > self.config.max_bindings_per_aor:
            take_out(min(current.values(), key=lambda b: b.registered_at), "limit")

        changes: list[RegistrarEvent] = []
        for binding_id in touched:
            old, new = before.get(binding_id), current.get(binding_id)
            if old is not None and new is None:
                self._drop(old)
                changes.append(BindingRemoved(binding=old, reason=reasons[binding_id]))
            elif new is not None:
                self._put(new)
                changes.append(
                    BindingAdded(binding=new)
                    if old is None
                    else BindingRefreshed(binding=new, previous=old)
                )
        return changes

    def _accept(
        self,
        request: Request,
        plan: RegisterPlan,
        bindings: list[Binding],
        source: Peer,
        now: float,
        to_tag: str,
        wall: float | None,
        keys: list[bytes],
    ) -> Response:
        """The 200 OK of RFC 3261 §10.3 step 8 with the extensions' headers, and the push
        keys of this request's contacts (``keys``: only ever over TLS or WSS)."""
        response = _response(request, 200, None, to_tag)
        headers = response.headers
        headers.remove("Content-Length")
        for binding in bindings:
            headers.add("Contact", binding.contact_value(now))
        if plan.echo_path:
            for value in plan.path:
                headers.add("Path", value)
        if plan.outbound:
            headers.add("Require", "outbound")
            if self.config.flow_timer is not None and source.reliable:
                headers.add("Flow-Timer", str(self.config.flow_timer))
        for value in plan.feature_caps:
            headers.add("Feature-Caps", value)
        if wall is not None:
            headers.add("Date", http_date(wall))
        if source.transport in SECURE_TRANSPORTS:
            for key in keys:
                headers.add(PUSH_KEY_HEADER, base64.urlsafe_b64encode(key).rstrip(b"=").decode())
        headers.add("Content-Length", "0")
        return response

    def _refuse(self, request: Request, rejection: Rejection, to_tag: str) -> Response:
        response = _response(request, rejection.status, rejection.reason, to_tag)
        if rejection.headers:
            response.headers.remove("Content-Length")
            for name, value in rejection.headers:
                response.headers.add(name, value)
            response.headers.add("Content-Length", "0")
        return response

    # -- index maintenance ------------------------------------------------
    def _expire_aor(self, aor: str, now: float) -> list[RegistrarEvent]:
        bindings = self._aors.get(aor)
        if bindings is None:
            return []
        stale = [b for b in bindings.values() if b.expired(now)]
        stale.sort(key=lambda b: b.expires_at)
        for binding in stale:
            self._drop(binding)
        return [BindingExpired(binding=b) for b in stale]

    def _binding(self, binding_id: str) -> Binding:
        return self._aors[self._aor_of[binding_id]][binding_id]

    def _live(self, entry: tuple[float, int, str]) -> bool:
        binding = self.get(entry[2])
        return binding is not None and binding.expires_at == entry[0]

    def _put(self, binding: Binding) -> None:
        old = self.get(binding.binding_id)
        if old is not None:
            if old.aor != binding.aor:
                self._drop(old)
            else:
                self._unindex_push(old)
        self._aors.setdefault(binding.aor, {})[binding.binding_id] = binding
        self._aor_of[binding.binding_id] = binding.aor
        key = binding.push_key
        if key is not None:
            ids = self._by_push.get(key, ())
            if binding.binding_id not in ids:
                self._by_push[key] = (*ids, binding.binding_id)
        if old is None or old.expires_at != binding.expires_at:
            self._seq += 1
            heapq.heappush(self._heap, (binding.expires_at, self._seq, binding.binding_id))
            if len(self._heap) > 2 * len(self._aor_of) + 64:
                self._heap = [e for e in self._heap if self._live(e)]
                heapq.heapify(self._heap)

    def _drop(self, binding: Binding) -> None:
        bindings = self._aors.get(binding.aor)
        if bindings is None or binding.binding_id not in bindings:
            return
        self._unindex_push(bindings.pop(binding.binding_id))
        if not bindings:
            del self._aors[binding.aor]
        del self._aor_of[binding.binding_id]

    def _unindex_push(self, binding: Binding) -> None:
        key = binding.push_key
        if key is None:
            return
        ids = tuple(i for i in self._by_push.get(key, ()) if i != binding.binding_id)
        if ids:
            self._by_push[key] = ids
        else:
            self._by_push.pop(key, None)


def _match(current: dict[str, Binding], contact: ContactPlan) -> Binding | None:
    """The binding a contact renews (see ``bindings`` for the order of identities)."""
    if not current:
        return None
    bindings = list(current.values())
    if contact.instance is not None:
        same = [b for b in bindings if b.instance == contact.instance]
        if contact.reg_id is not None:
            # RFC 5626 §6: (instance, reg-id) is the key; other flows of the device stay.
            hit = next((b for b in same if b.reg_id == contact.reg_id), None)
        else:
            hit = next((b for b in same if b.reg_id is None), same[0] if same else None)
        if hit is not None:
            return hit
        if contact.push is not None:
            key = contact.push.key()
            hit = next(
                (b for b in bindings if b.instance != contact.instance and b.push_key == key), None
            )
            if hit is not None:
                return hit
        return next(
            (b for b in bindings if b.instance is None and b.contact.equivalent(contact.uri)), None
        )
    if contact.push is not None:
        key = contact.push.key()
        hit = next((b for b in bindings if b.push_key == key), None)
        if hit is not None:
            return hit
    return next((b for b in bindings if b.contact.equivalent(contact.uri)), None)


def _kept_contact(match: Binding | None, contact: ContactPlan) -> SipUri:
    """The contact URI to hold, without its text (bindings live for hours): the renewed
    binding's when it is the same value (compact already, unless restored from a store),
    else a compact copy of the request's."""
    if match is not None and match.contact == contact.uri:
        return match.contact.compact()
    return contact.uri.compact()


def _check_order(binding: Binding, plan: RegisterPlan) -> None:
    """RFC 3261 §10.3 step 7: same Call-ID needs a higher CSeq, else the request fails."""
    if binding.call_id == plan.call_id and plan.cseq <= binding.cseq:
        raise Rejection(500, "CSeq Out of Order")


def _response(request: Request, status: int, reason: str | None, to_tag: str) -> Response:
    try:
        return make_response(request, status, reason, to_tag=to_tag)
    except RemoteProtocolError:  # a To header too broken to tag
        return make_response(request, status, reason)


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(wall: float) -> str:
    """RFC 3261 §20.17 Date (RFC 1123 form, always GMT), locale-independent."""
    t = datetime.fromtimestamp(wall, tz=UTC)
    return (
        f"{_DAYS[t.weekday()]}, {t.day:02d} {_MONTHS[t.month - 1]} {t.year} "
        f"{t.hour:02d}:{t.minute:02d}:{t.second:02d} GMT"
    )
