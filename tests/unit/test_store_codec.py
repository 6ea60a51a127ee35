"""The binding row's JSON columns: valid JSON that reads back to the binding, written as
``json.dumps`` writes them (rows written before and after compare equal)."""

from __future__ import annotations

import dataclasses
import json

from sipwake.registrar.bindings import Binding
from sipwake.sip.peer import Peer
from sipwake.sip.pushtarget import PushTarget
from sipwake.sip.uri import SipUri
from sipwake.store.codec import COLUMNS, decode, encode, encode_values

WALL = 1_700_000_000.0
BINDING = Binding(
    binding_id="b1",
    aor="sip:alice@lab.test",
    contact=SipUri(user="alice", host="192.0.2.7", port=5070),
    expires_at=600.0,
    registered_at=10.0,
    call_id="c1",
    cseq=3,
    source=Peer(transport="udp", host="192.0.2.7", port=5070),
    push=PushTarget(provider="apns", prid="00ff" * 16, param="ABCDE12345.org.example.voip"),
    seal_key=bytes(range(32)),
)
# Strings a client controls, with what JSON must escape: quotes, backslashes, control
# characters, non-ASCII (json.dumps writes \\u escapes), a lone surrogate-free emoji.
AWKWARD = 'a"b\\c\n\t\x01é☃😀'


def _as_json_dumps(binding: Binding) -> tuple[str, str, str | None]:
    source: dict[str, object] = {"host": binding.source.host}
    if binding.nat:
        source["nat"] = True
    source |= {"port": binding.source.port, "transport": binding.source.transport}
    push = binding.push
    pushed = None
    if push is not None:
        names = sorted(f.name for f in dataclasses.fields(PushTarget))
        pushed = json.dumps({name: getattr(push, name) for name in names})
    return json.dumps(list(binding.path)) if binding.path else "[]", json.dumps(source), pushed


def test_json_columns_are_what_json_dumps_writes() -> None:
    awkward = dataclasses.replace(
        BINDING,
        path=(f"<sip:{AWKWARD}@proxy;lr>", "<sip:edge>"),
        nat=True,
        source=Peer(transport="tcp", host="2001:db8::1", port=5060),
        push=PushTarget(
            provider="webpush",
            prid=f"https://push.example/{AWKWARD}",
            silent=True,
            timeout_s=30,
            call_str=AWKWARD,
            p256dh="BNc",
            auth="x-y",
        ),
    )
    for binding in (BINDING, awkward, dataclasses.replace(BINDING, push=None)):
        values = dict(zip(COLUMNS, encode_values(binding, 5.0, WALL), strict=True))
        assert (values["path"], values["source"], values["push"]) == _as_json_dumps(binding)
        assert encode(binding, 5.0, WALL).values() == tuple(values.values())


def test_a_row_reads_back_to_its_binding() -> None:
    awkward = dataclasses.replace(
        BINDING,
        path=(f"<sip:{AWKWARD}@proxy;lr>",),
        nat=True,
        push=PushTarget(provider="fcm", prid=AWKWARD, param="proj", timeout_s=5),
        user_agent=AWKWARD,
    )
    for binding in (BINDING, awkward):
        row = encode(binding, 5.0, WALL)
        assert row.expires_wall == WALL + 595.0
        assert decode(row, 5.0, WALL) == dataclasses.replace(binding, source=binding.source)
