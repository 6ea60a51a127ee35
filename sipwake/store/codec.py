"""Bindings to storable rows and back: text and JSON columns, wall-clock times.

One ``BindingRow`` per binding, every field a plain SQL/JSON value, so the
SQLite store (and a later Redis store) share one encoding. ``flow`` is not
stored (see ``base``). Decoding raises ``StoreError`` naming the binding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from json.encoder import encode_basestring_ascii
from typing import Any

from sipwake.errors import SipwakeError
from sipwake.registrar.bindings import PUSH_KEY_BYTES, Binding
from sipwake.sip.peer import Peer
from sipwake.sip.pushtarget import PushTarget
from sipwake.sip.uri import SipUri, parse_uri
from sipwake.store.base import StoreError

__all__ = ["COLUMNS", "BindingRow", "decode", "encode", "encode_values"]


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
#: Each field with its JSON key as written: ``"name": ``.
_PUSH_KEYS = tuple((name, f"{encode_basestring_ascii(name)}: ") for name in _PUSH_FIELDS)


def _json_value(value: object) -> str:
    """``value`` (str, bool, int or None) as ``json.dumps`` writes it."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return encode_basestring_ascii(value)
    if isinstance(value, int):
        return str(int(value))
    return json.dumps(value)


def _push_json(push: PushTarget) -> str:
    """The push column: what ``json.dumps`` of the fields in name order writes, built
    without it (a REGISTER writes one; ``json.dumps`` costs a few times more)."""
    return (
        "{" + ", ".join([key + _json_value(getattr(push, name)) for name, key in _PUSH_KEYS]) + "}"
    )


def _path_json(path: tuple[str, ...]) -> str:
    """The path column: a JSON list of strings."""
    return "[" + ", ".join([encode_basestring_ascii(p) for p in path]) + "]" if path else "[]"


def _source_json(binding: Binding) -> str:
    """The source column: host, nat (only when set: rows of old versions read), port,
    transport, in name order, as ``json.dumps(..., sort_keys=True)`` would write them."""
    source = binding.source
    nat = '"nat": true, ' if binding.nat else ""
    return (
        f'{{"host": {encode_basestring_ascii(source.host)}, {nat}"port": {int(source.port)}, '
        f'"transport": {encode_basestring_ascii(source.transport)}}}'
    )


def encode_values(binding: Binding, now: float, wall: float) -> tuple[object, ...]:
    """The row for ``binding`` as the values of ``COLUMNS``, in order (what ``encode``
    gives, without the ``BindingRow``: the store's write path)."""
    push = binding.push
    return (
        binding.binding_id,
        binding.aor,
        str(binding.contact),
        wall + (binding.expires_at - now),
        wall - (now - binding.registered_at),
        binding.call_id,
        binding.cseq,
        binding.q,
        binding.instance,
        binding.reg_id,
        _path_json(binding.path),
        _source_json(binding),
        None if push is None else _push_json(push),
        binding.user_agent,
        int(binding.pnsreg),
        binding.seal_key,
    )


def encode(binding: Binding, now: float, wall: float) -> BindingRow:
    """The row for ``binding``; monotonic times become wall-clock times."""
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
        path=_path_json(binding.path),
        source=_source_json(binding),
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
