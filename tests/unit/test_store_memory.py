"""Binding rows (codec), net writes and the in-memory store: no disk, no event loop."""

from __future__ import annotations

import dataclasses
import json

import pytest

from sipwake.registrar import (
    Binding,
    BindingAdded,
    BindingExpired,
    BindingRefreshed,
    BindingRemoved,
    PushTargetRemoved,
)
from sipwake.sip.peer import Peer
from sipwake.sip.pushtarget import push_target_from_uri
from sipwake.sip.uri import SipUri, parse_uri
from sipwake.store import MemoryStore, StoreError, net_writes
from sipwake.store.codec import decode, encode

TOKEN = "00fc13adff785122"


def make_binding(
    binding_id: str = "b1", *, expires_at: float = 3700.0, **changes: object
) -> Binding:
    contact = parse_uri(
        "sip:alice@10.0.0.1:5070;transport=tcp;pn-provider=apns;"
        f"pn-param=ABCD1234.com.example.app.voip;pn-prid={TOKEN}"
    )
    assert isinstance(contact, SipUri)
    binding = Binding(
        binding_id=binding_id,
        aor="sip:alice@example.com",
        contact=contact,
        expires_at=expires_at,
        registered_at=100.0,
        call_id="reg-1",
        cseq=7,
        q=0.5,
        instance="urn:uuid:1",
        reg_id=1,
        path=("<sip:edge.example.com;lr;ob>",),
        source=Peer(transport="tcp", host="10.0.0.1", port=5070, flow=4),
        push=push_target_from_uri(contact),
        user_agent="Linphone/5.2",
        pnsreg=True,
    )
    return dataclasses.replace(binding, **changes)  # type: ignore[arg-type]


def test_codec_round_trip_moves_times_to_the_new_clock() -> None:
    binding = make_binding()
    row = encode(binding, 100.0, 1_700_000_000.0)
    assert row.expires_wall == 1_700_003_600.0
    assert row.registered_wall == 1_700_000_000.0
    # A new process: monotonic clock at 5, wall clock 600 s later.
    back = decode(row, 5.0, 1_700_000_600.0)
    assert back.remaining(5.0) == pytest.approx(3000.0)
    assert back.registered_at == pytest.approx(-595.0)
    assert back.source == Peer(transport="tcp", host="10.0.0.1", port=5070)  # flow forgotten
    same = dataclasses.replace(
        binding, expires_at=back.expires_at, registered_at=back.registered_at, source=back.source
    )
    assert back == same
    assert back.push == binding.push


def test_json_columns_are_written_as_sort_keys_writes_them() -> None:
    """Rows written by earlier versions (``json.dumps(..., sort_keys=True)`` of the
    dataclass) and by this one are the same text, for every PushTarget field."""
    binding = make_binding()
    assert binding.push is not None
    every = dataclasses.replace(
        binding.push, purr="p", call_str="c", msg_str="m", p256dh="k", auth="a", silent=True
    )
    for b in (binding, make_binding(push=every), make_binding(push=None, path=())):
        row = encode(b, 100.0, 1_700_000_000.0)
        push = None if b.push is None else json.dumps(dataclasses.asdict(b.push), sort_keys=True)
        source = {"transport": b.source.transport, "host": b.source.host, "port": b.source.port}
        assert row.push == push
        assert row.source == json.dumps(source, sort_keys=True)
        assert row.path == json.dumps(list(b.path))


def test_row_repr_hides_the_token() -> None:
    row = encode(make_binding(), 0.0, 0.0)
    assert TOKEN in (row.push or "")
    assert TOKEN not in repr(row)


def test_corrupt_row_raises_store_error_without_token() -> None:
    row = dataclasses.replace(encode(make_binding(), 0.0, 0.0), contact=f"bogus {TOKEN}")
    with pytest.raises(StoreError) as info:
        decode(row, 0.0, 0.0)
    assert "contact" in str(info.value)
    assert TOKEN not in str(info.value)


def test_net_writes_last_change_wins() -> None:
    a, b = make_binding("a"), make_binding("b")
    a2 = dataclasses.replace(a, cseq=8)
    writes = net_writes(
        [
            BindingAdded(binding=a),
            BindingAdded(binding=b),
            BindingRefreshed(binding=a2, previous=a),
            BindingRemoved(binding=b, reason="limit"),
            PushTargetRemoved(binding=dataclasses.replace(a2, push=None), previous=a2),
            BindingExpired(binding=make_binding("c")),
        ]
    )
    assert list(writes) == ["a", "b", "c"]
    assert writes["a"] == dataclasses.replace(a2, push=None)
    assert writes["b"] is None
    assert writes["c"] is None


def test_memory_store_behaves_as_after_a_restart() -> None:
    store = MemoryStore()
    kept = make_binding("kept", expires_at=3700.0)
    gone = make_binding("gone", expires_at=160.0)
    removed = make_binding("removed")
    store.apply(
        [
            BindingAdded(binding=kept),
            BindingAdded(binding=gone),
            BindingAdded(binding=removed),
            BindingRemoved(binding=removed, reason="unregistered"),
        ],
        100.0,
        1_000.0,
    )
    assert len(store) == 2
    [loaded] = store.load(0.0, 1_100.0)  # "gone" expired at wall 1060
    assert loaded.binding_id == "kept"
    assert loaded.remaining(0.0) == pytest.approx(3500.0)
    assert len(store) == 1
    store.delete("kept")
    store.upsert(gone, 100.0, 1_000.0)
    assert [b.binding_id for b in store.load(100.0, 1_000.0)] == ["gone"]
    store.close()
    with pytest.raises(StoreError):
        store.load(0.0, 0.0)
