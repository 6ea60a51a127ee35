"""The frozen dataclasses with a written ``__init__`` (sipwake/frozen.py) build what the
generated ``__init__`` would: every field a keyword, the same defaults, every slot set,
and still frozen. Interpreted, the ``__init__`` that runs is the one ``interpreted_init``
makes from the written one's signature; the written bodies, which run compiled, are read
here to hold them to storing each parameter in its field."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil
import textwrap

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


FROZEN = [cls for cls in CLASSES if cls.__dataclass_params__.frozen]  # type: ignore[attr-defined]


@needs_source
@pytest.mark.parametrize("cls", FROZEN, ids=lambda cls: cls.__name__)
def test_frozen_classes_run_the_interpreted_init_made_from_the_written_one(cls: type) -> None:
    """Without ``interpreted_init`` a frozen class refuses its written stores."""
    init = vars(cls)["__init__"]
    written = getattr(init, "__wrapped__", None)
    assert written is not None, f"{cls.__name__} is not given to interpreted_init"
    assert inspect.signature(written) == inspect.signature(init, follow_wrapped=False)


def _stores(function: object) -> list[tuple[str, str]]:
    """``(field, parameter)`` of each ``self.<field> = <parameter>`` statement of a written
    ``__init__``; fails on any other statement (the docstring aside)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))  # type: ignore[arg-type]
    init = tree.body[0]
    assert isinstance(init, ast.FunctionDef)
    body = init.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    out = []
    for stmt in body:
        assert isinstance(stmt, ast.Assign), ast.unparse(stmt)
        (target,) = stmt.targets
        assert isinstance(target, ast.Attribute), ast.unparse(stmt)
        assert isinstance(target.value, ast.Name)
        assert target.value.id == "self"
        assert isinstance(stmt.value, ast.Name), ast.unparse(stmt)
        out.append((target.attr, stmt.value.id))
    return out


@needs_source
@pytest.mark.parametrize("cls", FROZEN, ids=lambda cls: cls.__name__)
def test_written_bodies_store_each_parameter_in_its_field(cls: type) -> None:
    written = vars(cls)["__init__"].__wrapped__
    stores = _stores(written)
    assert all(field == parameter for field, parameter in stores), stores
    fields = sorted(f.name for f in dataclasses.fields(cls))
    assert sorted(field for field, _ in stores) == fields
    assert sorted(list(inspect.signature(written).parameters)[1:]) == fields


def test_a_written_body_that_computes_is_refused() -> None:
    def __init__(self: object, *, a: int, b: int = 0) -> None:
        self.a = a  # type: ignore[attr-defined]
        self.b = b + 1  # type: ignore[attr-defined]

    with pytest.raises(AssertionError):
        _stores(__init__)


def test_a_written_signature_that_differs_from_the_fields_is_refused() -> None:
    from sipwake.frozen import interpreted_init

    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True, init=False)
    class Point:
        x: int
        y: int = 0

        def __init__(self, *, x: int, z: int = 0) -> None:
            self.x = x  # type: ignore[misc]

    with pytest.raises(TypeError, match=r"Point.__init__ takes \['x', 'z'\], not its fields"):
        interpreted_init(Point)


def test_interpreted_init_keeps_the_class_frozen_and_sets_defaults() -> None:
    from sipwake.frozen import interpreted_init

    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True, init=False)
    class Point:
        x: int
        y: int = 7

        def __init__(self, *, x: int, y: int = 7) -> None:
            self.x = x  # type: ignore[misc]
            self.y = y  # type: ignore[misc]

    with pytest.raises(dataclasses.FrozenInstanceError):
        Point(x=1)  # the written stores, refused by the frozen class when interpreted
    interpreted_init(Point)
    point = Point(x=1)
    assert (point.x, point.y) == (1, 7)
    assert point == Point(x=1, y=7)
    with pytest.raises(dataclasses.FrozenInstanceError):
        point.x = 2  # type: ignore[misc]


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
