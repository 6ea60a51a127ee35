"""Bindings to storable rows and back: text and JSON columns, wall-clock times.

One ``BindingRow`` per binding, every field a plain SQL/JSON value, so the
SQLite store (and a later Redis store) share one encoding. ``flow`` is not
stored (see ``base``). Decoding raises ``StoreError`` naming the binding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from sipwake.errors import SipwakeError
from sipwake.registrar.bindings import PUSH_KEY_BYTES, Binding
from sipwake.sip.peer import Peer
from sipwake.sip.pushtarget import PushTarget
from sipwake.sip.uri import SipUri, parse_uri
from sipwake.store.base import StoreError

__all__ = ["COLUMNS", "BindingRow", "decode", "encode"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BindingRow:
    """A binding as stored; ``*_wall`` are Unix seconds."""

    binding_id: str
    aor: str
    contact: str
    expires_wall: float
    registered_wall: float
    call_id: str
    cseq: int
    q: float
    instance: str | None
    reg_id: int | None
    path: str
    """JSON list of Path header values."""
    source: str
    """JSON object: transport, host, port."""
    push: str | None
    """JSON object of the PushTarget fields, or NULL."""
    user_agent: str | None
    pnsreg: int
    seal_key: bytes | None = None
    """The binding's push key (32 bytes), or NULL."""

    def __repr__(self) -> str:  # the push column holds a token, seal_key a key
        return f"BindingRow(binding_id={self.binding_id!r}, aor={self.aor!r})"

    def values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in COLUMNS)


#: Column order shared by every backend.
COLUMNS = (
    "binding_id",
    "aor",
    "contact",
    "expires_wall",
    "registered_wall",
    "call_id",
    "cseq",
    "q",
    "instance",
    "reg_id",
    "path",
    "source",
    "push",
    "user_agent",
    "pnsreg",
    "seal_key",
)


#: The PushTarget fields in name order: the push column's JSON keys, as
#: ``json.dumps(asdict(push), sort_keys=True)`` writes them (without its deep copy).
_PUSH_FIELDS = tuple(sorted(f.name for f in fields(PushTarget)))


def _push_json(push: PushTarget) -> str:
    return json.dumps({name: getattr(push, name) for name in _PUSH_FIELDS})


def encode(binding: Binding, now: float, wall: float) -> BindingRow:
    """The row for ``binding``; monotonic times become wall-clock times."""
    source: dict[str, object] = {
        "host": binding.source.host,
        **({"nat": True} if binding.nat else {}),  # only when set: rows of old versions read
        "port": binding.source.port,
        "transport": binding.source.transport,
    }
    return BindingRow(
        binding_id=binding.binding_id,
        aor=binding.aor,
        contact=str(binding.contact),
        expires_wall=wall + (binding.expires_at - now),
        registered_wall=wall - (now - binding.registered_at),
        call_id=binding.call_id,
        cseq=binding.cseq,
        q=binding.q,
        instance=binding.instance,
        reg_id=binding.reg_id,
        path=json.dumps(list(binding.path)) if binding.path else "[]",
        source=json.dumps(source),  # keys in name order, as sort_keys would write them
        push=None if binding.push is None else _push_json(binding.push),
        user_agent=binding.user_agent,
        pnsreg=int(binding.pnsreg),
        seal_key=binding.seal_key,
    )


def decode(row: BindingRow, now: float, wall: float) -> Binding:
    """The binding a row holds, with times on this process's monotonic clock."""
    column = "contact"
    try:
        contact = parse_uri(row.contact, "contact")
        if not isinstance(contact, SipUri):
            raise ValueError("not a sip/sips URI")
        column = "source"
        source: dict[str, Any] = json.loads(row.source)
        peer = Peer(
            transport=str(source["transport"]), host=str(source["host"]), port=int(source["port"])
        )
        column = "push"
        push_fields: dict[str, Any] | None = None if row.push is None else json.loads(row.push)
        push = None if push_fields is None else PushTarget(**push_fields)
        column = "path"
        path = json.loads(row.path)
        if not isinstance(path, list) or not all(isinstance(p, str) for p in path):
            raise ValueError("not a list of strings")
        column = "seal_key"
        seal_key = None if row.seal_key is None else bytes(row.seal_key)
        if seal_key is not None and len(seal_key) != PUSH_KEY_BYTES:
            raise ValueError(f"not {PUSH_KEY_BYTES} bytes")
        column = "row"
        return Binding(
            binding_id=row.binding_id,
            aor=row.aor,
            contact=contact,
            expires_at=now + (row.expires_wall - wall),
            registered_at=now - (wall - row.registered_wall),
            call_id=row.call_id,
            cseq=int(row.cseq),
            q=float(row.q),
            instance=row.instance,
            reg_id=None if row.reg_id is None else int(row.reg_id),
            path=tuple(path),
            source=peer,
            push=push,
            user_agent=row.user_agent,
            pnsreg=bool(row.pnsreg),
            seal_key=seal_key,
            nat=source.get("nat") is True,
        )
    except (SipwakeError, ValueError, TypeError, KeyError) as exc:
        # The message names the column only: values may hold a push token.
        raise StoreError(f"binding {row.binding_id!r}: unreadable {column} column") from exc
