"""The frozen dataclasses with a written ``__init__`` (sipwake/frozen.py) build what the
generated ``__init__`` would: every field a keyword, the same defaults, every slot set,
and still frozen."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil

import pytest

import sipwake
from sipwake.sip.grammar import COMPILED
from sipwake.sip.peer import Peer
from sipwake.transaction.keys import ClientKey, ServerKey


def _written_init_classes() -> list[type]:
    found: dict[str, type] = {}
    for info in pkgutil.walk_packages(sipwake.__path__, "sipwake."):
        if info.name == "sipwake.__main__":
            continue
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and obj.__module__ == info.name
                and dataclasses.is_dataclass(obj)
                and not obj.__dataclass_params__.init  # type: ignore[attr-defined]
                and "__init__" in vars(obj)
            ):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[name] for name in sorted(found)]


CLASSES = _written_init_classes()


def test_the_classes_made_on_every_message_are_found() -> None:
    names = {cls.__name__ for cls in CLASSES}
    assert {
        "SendMessage",
        "SendBytes",
        "RequestReceived",
        "ResponseReceived",
        "ClientKey",
        "ServerKey",
        "Binding",
        "PushTarget",
        "RegisterPlan",
        "_Context",
        "_Call",
    } <= names


def _default(f: dataclasses.Field[object]) -> object:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _required(f: dataclasses.Field[object]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


# Stand-in values of no field's type: the compiled core checks argument types, so these
# checks run on the interpreted source (the compiled build is made from the same source).
needs_source = pytest.mark.skipif(COMPILED, reason="stand-in values are refused when compiled")


@needs_source
@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_every_field_is_set_from_its_keyword(cls: type) -> None:
    values = {f.name: object() for f in dataclasses.fields(cls)}
    obj = cls(**values)
    for name, value in values.items():
        assert getattr(obj, name) is value, name


@needs_source
@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_omitted_fields_take_their_declared_defaults(cls: type) -> None:
    fields = dataclasses.fields(cls)
    obj = cls(**{f.name: object() for f in fields if _required(f)})
    for f in fields:
        if not _required(f):
            assert getattr(obj, f.name) == _default(f), f.name


@needs_source
@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_required_fields_are_required_and_keywords_only(cls: type) -> None:
    fields = dataclasses.fields(cls)
    required = {f.name: object() for f in fields if _required(f)}
    for name in required:
        with pytest.raises(TypeError):
            cls(**{k: v for k, v in required.items() if k != name})
    with pytest.raises(TypeError):
        cls(*required.values(), **required)
    with pytest.raises(TypeError):
        cls(**required, not_a_field=1)


@needs_source
@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_frozen_ones_still_frozen_and_all_equal_by_value(cls: type) -> None:
    values = {f.name: object() for f in dataclasses.fields(cls)}
    obj = cls(**values)
    if cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, dataclasses.fields(cls)[0].name, 1)
    assert obj == cls(**values)
    assert dataclasses.replace(obj) == obj


def test_written_hash_and_eq_agree_with_the_fields() -> None:
    """Peer and the transaction keys write ``__hash__`` (and Peer ``__eq__``) so the compiled
    core runs them in C; they stay the value-based ones, in both builds."""
    peer = Peer(transport="udp", host="127.0.0.1", port=5060)
    same = Peer(transport="udp", host="127.0.0.1", port=5060)
    assert peer == same
    assert hash(peer) == hash(same)
    assert {peer: 1}[same] == 1
    assert peer != Peer(transport="udp", host="127.0.0.1", port=5060, flow=3)
    assert peer != Peer(transport="tcp", host="127.0.0.1", port=5060)
    assert peer != "udp:127.0.0.1:5060"
    key = ServerKey(branch="z9hG4bK1", sent_by=("h", 5060), method="INVITE")
    twin = ServerKey(branch="z9hG4bK1", sent_by=("h", 5060), method="INVITE")
    assert hash(key) == hash(twin)
    assert {key: 1}[twin] == 1
    assert key != ServerKey(branch="z9hG4bK1", sent_by=("h", 5060), method="ACK")
    client = ClientKey(branch="z9hG4bK2", method="INVITE")
    assert {client: 1}[ClientKey(branch="z9hG4bK2", method="INVITE")] == 1
    assert ClientKey(branch="z9hG4bK2", method="CANCEL") not in {client: 1}
