"""Registrar: RFC 3261 §10.3, RFC 5626 §6, RFC 3327, RFC 8599 §5.6.1, on hand-moved time."""

from __future__ import annotations

import pathlib

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from sipwake.errors import LocalProtocolError
from sipwake.ids import SeededIds
from sipwake.registrar import (
    BindingAdded,
    BindingExpired,
    BindingRefreshed,
    BindingRemoved,
    PushTargetRemoved,
    RegisterResult,
    Registrar,
    RegistrarConfig,
)
from sipwake.registrar.validate import RegisterPlan, Rejection, read_register
from sipwake.sip.message import Request
from sipwake.sip.parser import parse_message
from sipwake.sip.peer import Peer
from sipwake.sip.uri import SipUri

AOR = "sip:alice@example.com"
TCP = Peer(transport="tcp", host="10.0.0.1", port=5070, flow=1)
UDP = Peer(transport="udp", host="10.0.0.1", port=5060)
APNS = "pn-provider=apns;pn-param=ABCD1234.com.example.app.voip;pn-prid=00fc13adff785122"
TOKEN = "00fc13adff785122"


def register(
    *contacts: str,
    call_id: str = "reg-1",
    cseq: int = 1,
    expires: int | None = None,
    to: str = "<sip:alice@example.com>",
    headers: tuple[str, ...] = (),
    vias: int = 1,
) -> Request:
    """A REGISTER as a softphone sends it; ``contacts`` are Contact header values."""
    lines = ["REGISTER sip:example.com SIP/2.0"]
    lines += [f"Via: SIP/2.0/TCP 192.0.2.{i + 1}:5060;branch=z9hG4bKr{i}" for i in range(vias)][
        ::-1
    ]
    lines += [
        "Max-Forwards: 70",
        "From: <sip:alice@example.com>;tag=f1",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
    ]
    lines += [f"Contact: {c}" for c in contacts]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    lines += list(headers)
    lines.append("Content-Length: 0")
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def make_registrar(**config: object) -> Registrar:
    settings: dict[str, object] = {"domains": {"example.com"}, **config}
    return Registrar(ids=SeededIds(0), config=RegistrarConfig(**settings))  # type: ignore[arg-type]


def contacts_of(result: RegisterResult) -> list[str]:
    return result.response.headers.values("Contact")


# -- adding, refreshing, removing --------------------------------------------


def test_add_binding() -> None:
    reg = make_registrar()
    result = reg.handle_register(register("<sip:alice@10.0.0.1:5070;transport=tcp>"), TCP, 100.0)
    assert result.response.status == 200
    assert result.accepted
    assert result.response.to.tag is not None
    assert contacts_of(result) == ["<sip:alice@10.0.0.1:5070;transport=tcp>;expires=3600"]
    [added] = result.changes
    assert isinstance(added, BindingAdded)
    binding = added.binding
    assert binding.aor == AOR == result.aor
    assert binding.expires_at == 3700.0
    assert binding.registered_at == 100.0
    assert binding.source == TCP
    assert (binding.call_id, binding.cseq) == ("reg-1", 1)
    assert reg.lookup(AOR, 100.0) == [binding]
    assert reg.next_deadline() == 3700.0
    assert result.response.headers.get("Content-Length") == "0"
    assert list(result.response.headers)[-1] == ("Content-Length", "0")


def test_refresh_keeps_binding_id_and_moves_expiry() -> None:
    reg = make_registrar()
    first = reg.handle_register(register("<sip:alice@10.0.0.1>", expires=600), UDP, 0.0)
    second = reg.handle_register(register("<sip:alice@10.0.0.1>", cseq=2, expires=600), UDP, 300.0)
    [refreshed] = second.changes
    assert isinstance(refreshed, BindingRefreshed)
    assert refreshed.binding.binding_id == first.bindings[0].binding_id
    assert refreshed.previous == first.bindings[0]
    assert not refreshed.moved
    assert refreshed.binding.expires_at == 900.0
    assert contacts_of(second) == ["<sip:alice@10.0.0.1>;expires=600"]
    # The old deadline passes without an expiry.
    assert reg.next_deadline() == 900.0
    assert reg.handle_timeout(600.0) == []
    assert len(reg) == 1


def test_remaining_seconds_listed_for_other_bindings() -> None:
    reg = make_registrar()
    reg.handle_register(register("<sip:alice@10.0.0.1>", expires=600), UDP, 0.0)
    result = reg.handle_register(register("<sip:alice@10.0.0.2>", cseq=2, expires=600), UDP, 99.5)
    assert sorted(contacts_of(result)) == [
        "<sip:alice@10.0.0.1>;expires=500",
        "<sip:alice@10.0.0.2>;expires=600",
    ]


@pytest.mark.parametrize(
    ("contact", "expires"),
    [("<sip:alice@10.0.0.1>", 0), ("<sip:alice@10.0.0.1>;expires=0", None)],
)
def test_remove_with_expires_zero(contact: str, expires: int | None) -> None:
    reg = make_registrar()
    reg.handle_register(register("<sip:alice@10.0.0.1>"), UDP, 0.0)
    result = reg.handle_register(register(contact, cseq=2, expires=expires), UDP, 10.0)
    assert result.response.status == 200
    [removed] = result.changes
    assert isinstance(removed, BindingRemoved)
    assert removed.reason == "unregistered"
    assert contacts_of(result) == []
    assert reg.lookup(AOR, 10.0) == []
    assert reg.next_deadline() is None


def test_remove_unknown_contact_is_a_no_op() -> None:
    reg = make_registrar()
    result = reg.handle_register(register("<sip:alice@10.0.0.9>", expires=0), UDP, 0.0)
    assert result.response.status == 200
    assert result.changes == ()


def test_unregister_matches_contact_without_push_params() -> None:
    """RFC 8599 §4.1.2: the removing REGISTER carries no pn-prid; URI comparison
    (RFC 3261 §19.1.4) ignores parameters present on one side only."""
    reg = make_registrar()
    reg.handle_register(register(f"<sip:alice@10.0.0.1;{APNS}>"), UDP, 0.0)
    result = reg.handle_register(register("<sip:alice@10.0.0.1>", cseq=2, expires=0), UDP, 1.0)
    assert [type(c) for c in result.changes] == [BindingRemoved]


def test_wildcard_with_expires_zero_removes_all() -> None:
    reg = make_registrar()
    reg.handle_register(register("<sip:alice@10.0.0.1>", "<sip:alice@10.0.0.2>"), UDP, 0.0)
    result = reg.handle_register(register("*", call_id="other", cseq=1, expires=0), UDP, 5.0)
    assert result.response.status == 200
    assert [type(c) for c in result.changes] == [BindingRemoved, BindingRemoved]
    assert all(c.reason == "unregistered" for c in result.changes if isinstance(c, BindingRemoved))
    assert len(reg) == 0


@pytest.mark.parametrize("expires", [None, 10])
def test_wildcard_without_expires_zero_is_400(expires: int | None) -> None:
    reg = make_registrar()
    reg.handle_register(register("<sip:alice@10.0.0.1>"), UDP, 0.0)
    result = reg.handle_register(register("*", cseq=2, expires=expires), UDP, 1.0)
    assert result.response.status == 400
    assert result.changes == ()
    assert len(reg) == 1


def test_wildcard_with_another_contact_is_400() -> None:
    reg = make_registrar()
    result = reg.handle_register(register("*", "<sip:alice@10.0.0.1>", expires=0), UDP, 0.0)
    assert result.response.status == 400
    assert len(reg) == 0


def test_wildcard_obeys_cseq_order() -> None:
    reg = make_registrar()
    reg.handle_register(register("<sip:alice@10.0.0.1>", cseq=5), UDP, 0.0)
    result = reg.handle_register(register("*", cseq=5, expires=0), UDP, 1.0)
    assert result.response.status == 500
    assert len(reg) == 1


# -- expiry values ----------------------------------------------------------------


def test_interval_too_brief_is_423_with_min_expires() -> None:
    reg = make_registrar()
    result = reg.handle_register(register("<sip:alice@10.0.0.1>", expires=30), UDP, 0.0)
    assert result.response.status == 423
    assert result.response.headers.get("Min-Expires") == "60"
    assert len(reg) == 0


def test_push_contact_needs_min_push_expires() -> None:
    """RFC 8599 §5.6.1.1 step 3: a binding too short to push for its refresh gets 423."""
    reg = make_registrar()
    result = reg.handle_register(register(f"<sip:alice@10.0.0.1;{APNS}>;expires=100"), UDP, 0.0)
    assert result.response.status == 423
    assert result.response.headers.get("Min-Expires") == "180"
    ok = reg.handle_register(register(f"<sip:alice@10.0.0.1;{APNS}>;expires=180", cseq=2), UDP, 0.0)
    assert ok.response.status == 200


def test_expires_clamped_to_max() -> None:
    reg = make_registrar(max_expires=1800)
    result = reg.handle_register(register("<sip:alice@10.0.0.1>", expires=7200), UDP, 0.0)
    assert contacts_of(result) == ["<sip:alice@10.0.0.1>;expires=1800"]
    assert result.bindings[0].expires_at == 1800.0


def test_push_contacts_may_get_longer_bindings() -> None:
    reg = make_registrar(max_push_expires=604800)
    result = reg.handle_register(
        register(f"<sip:alice@10.0.0.1;{APNS}>", "<sip:alice@10.0.0.2>", expires=604800), UDP, 0.0
    )
    assert sorted(b.expires_at for b in result.bindings) == [3600.0, 604800.0]


def test_contact_expires_param_wins_over_expires_header() -> None:
    reg = make_registrar()
    result = reg.handle_register(
        register("<sip:alice@10.0.0.1>;expires=120", "<sip:alice@10.0.0.2>", expires=300),
        UDP,
        0.0,
    )
    assert sorted(b.expires_at for b in result.bindings) == [120.0, 300.0]


def test_malformed_expires_header_is_400() -> None:
    reg = make_registrar()
    result = reg.handle_register(
        register("<sip:alice@10.0.0.1>", headers=("Expires: soon",)), UDP, 0.0
    )
    assert result.response.status == 400
    assert "Expires" in result.response.reason


# -- Call-ID / CSeq ordering (RFC 3261 §10.3 step 7) ---------------------------------


@pytest.mark.parametrize("cseq", [5, 4])
def test_same_call_id_needs_higher_cseq(cseq: int) -> None:
    reg = make_registrar()
    reg.handle_register(register("<sip:alice@10.0.0.1>", cseq=5, expires=600), UDP, 0.0)
    result = reg.handle_register(register("<sip:alice@10.0.0.1>", cseq=cseq), UDP, 10.0)
    assert result.response.status == 500
    assert result.changes == ()
    assert reg.lookup(AOR, 10.0)[0].expires_at == 600.0


def test_failed_order_check_changes_nothing() -> None:
    """All updates or none: the first contact is new, the second is out of order."""
    reg = make_registrar()
    reg.handle_register(register("<sip:alice@10.0.0.1>", cseq=5), UDP, 0.0)
    result = reg.handle_register(
        register("<sip:alice@10.0.0.2>", "<sip:alice@10.0.0.1>", cseq=5), UDP, 1.0
    )
    assert result.response.status == 500
    assert [b.contact.host for b in reg.lookup(AOR, 1.0)] == ["10.0.0.1"]


def test_other_call_id_may_have_lower_cseq() -> None:
    reg = make_registrar()
    reg.handle_register(register("<sip:alice@10.0.0.1>", cseq=5), UDP, 0.0)
    result = reg.handle_register(register("<sip:alice@10.0.0.1>", call_id="x", cseq=1), UDP, 1.0)
    assert result.response.status == 200
    assert isinstance(result.changes[0], BindingRefreshed)


def test_same_contact_twice_in_one_request() -> None:
    reg = make_registrar()
    result = reg.handle_register(
        register("<sip:alice@10.0.0.1>;expires=100", "<sip:alice@10.0.0.1>;expires=200"), UDP, 0.0
    )
    assert result.response.status == 200
    [added] = result.changes
    assert isinstance(added, BindingAdded)
    assert added.binding.expires_at == 200.0


# -- RFC 5626 outbound and instance identity -----------------------------------------

INSTANCE = '+sip.instance="<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>"'
OUTBOUND = ("Supported: outbound, path",)


def test_instance_and_reg_id_replace_binding_from_new_flow() -> None:
    reg = make_registrar()
    first = reg.handle_register(
        register(
            f"<sip:alice@10.0.0.1:5070;transport=tcp;ob>;{INSTANCE};reg-id=1", headers=OUTBOUND
        ),
        TCP,
        0.0,
    )
    new_flow = Peer(transport="tcp", host="198.51.100.7", port=40000, flow=9)
    second = reg.handle_register(
        register(
            f"<sip:alice@198.51.100.7:40000;transport=tcp;ob>;{INSTANCE};reg-id=1",
            call_id="after-wake",
            headers=OUTBOUND,
        ),
        new_flow,
        50.0,
    )
    [refreshed] = second.changes
    assert isinstance(refreshed, BindingRefreshed)
    assert refreshed.moved
    assert refreshed.binding.binding_id == first.bindings[0].binding_id
    assert refreshed.binding.source == new_flow
    assert [b.contact.host for b in reg.lookup(AOR, 50.0)] == ["198.51.100.7"]
    assert second.response.headers.get("Require") == "outbound"
    assert second.response.headers.get("Flow-Timer") == "120"
    assert contacts_of(second) == [
        "<sip:alice@198.51.100.7:40000;transport=tcp;ob>;expires=3600;"
        '+sip.instance="<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>";reg-id=1'
    ]


def test_two_reg_ids_of_one_instance_coexist() -> None:
    reg = make_registrar()
    reg.handle_register(
        register(f"<sip:alice@10.0.0.1;ob>;{INSTANCE};reg-id=1", headers=OUTBOUND), TCP, 0.0
    )
    result = reg.handle_register(
        register(f"<sip:alice@10.0.0.1;ob>;{INSTANCE};reg-id=2", call_id="r2", headers=OUTBOUND),
        Peer(transport="tcp", host="10.0.0.1", port=5071, flow=2),
        1.0,
    )
    assert [type(c) for c in result.changes] == [BindingAdded]
    assert sorted(b.reg_id or 0 for b in reg.lookup(AOR, 1.0)) == [1, 2]


def test_instance_without_reg_id_replaces_binding() -> None:
    """Linphone reconnecting after a push wake: same +sip.instance, new contact."""
    reg = make_registrar()
    reg.handle_register(register(f"<sip:alice@10.0.0.1;transport=tcp>;{INSTANCE}"), TCP, 0.0)
    result = reg.handle_register(
        register(f"<sip:alice@10.9.9.9:6000;transport=tcp>;{INSTANCE}", call_id="new"), TCP, 5.0
    )
    assert [type(c) for c in result.changes] == [BindingRefreshed]
    assert len(reg) == 1
    assert reg.find_by_instance(AOR, "urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF", 5.0) == list(
        result.bindings
    )
    assert result.response.headers.get("Require") is None


def test_reg_id_ignored_without_supported_outbound() -> None:
    reg = make_registrar()
    result = reg.handle_register(register(f"<sip:alice@10.0.0.1>;{INSTANCE};reg-id=1"), TCP, 0.0)
    assert result.bindings[0].reg_id is None
    assert result.response.headers.get("Require") is None
    assert "reg-id" not in contacts_of(result)[0]


def test_no_flow_timer_over_udp() -> None:
    reg = make_registrar()
    result = reg.handle_register(
        register(f"<sip:alice@10.0.0.1;ob>;{INSTANCE};reg-id=1", headers=OUTBOUND), UDP, 0.0
    )
    assert result.response.headers.get("Require") == "outbound"
    assert result.response.headers.get("Flow-Timer") is None


def test_reg_id_without_instance_is_400() -> None:
    reg = make_registrar()
    result = reg.handle_register(
        register("<sip:alice@10.0.0.1>;reg-id=1", headers=OUTBOUND), TCP, 0.0
    )
    assert result.response.status == 400
    assert "reg-id" in result.response.reason


def test_outbound_through_first_hop_without_ob_is_439() -> None:
    reg = make_registrar()
    contact = f"<sip:alice@10.0.0.1;ob>;{INSTANCE};reg-id=1"
    refused = reg.handle_register(
        register(contact, headers=(*OUTBOUND, "Path: <sip:edge.example.com;lr>"), vias=2), TCP, 0.0
    )
    assert refused.response.status == 439
    accepted = reg.handle_register(
        register(contact, headers=(*OUTBOUND, "Path: <sip:edge.example.com;lr;ob>"), vias=2),
        TCP,
        0.0,
    )
    assert accepted.response.status == 200


# -- RFC 8599 push parameters ----------------------------------------------------------


def test_push_triple_replaces_binding_from_new_contact() -> None:
    """RFC 8599 §5.3: the same device (same pn-provider/pn-param/pn-prid) woke on
    another network; its old binding is replaced, not kept beside the new one."""
    reg = make_registrar()
    first = reg.handle_register(register(f"<sip:alice@10.0.0.1:5060;{APNS}>"), UDP, 0.0)
    result = reg.handle_register(
        register(f"<sip:alice@172.16.0.5:41000;{APNS}>", call_id="other"),
        Peer(transport="udp", host="203.0.113.9", port=41000),
        30.0,
    )
    [refreshed] = result.changes
    assert isinstance(refreshed, BindingRefreshed)
    assert refreshed.moved
    assert refreshed.binding.binding_id == first.bindings[0].binding_id
    assert len(reg) == 1
    key = ("apns", "ABCD1234.com.example.app.voip", TOKEN)
    assert reg.find_by_push(key, 30.0) == [refreshed.binding]
    assert reg.find_by_push(key, 30.0, aor="sip:bob@example.com") == []


def test_binding_keeps_push_target_and_strips_it_for_forwarding() -> None:
    reg = make_registrar()
    result = reg.handle_register(register(f"<sip:alice@10.0.0.1;transport=tcp;{APNS}>"), TCP, 0.0)
    binding = result.bindings[0]
    assert binding.push is not None
    assert binding.push.prid == TOKEN
    assert binding.push_key == ("apns", "ABCD1234.com.example.app.voip", TOKEN)
    assert binding.contact.param("pn-prid") == TOKEN
    assert str(binding.forward_uri()) == "sip:alice@10.0.0.1;transport=tcp"
    assert TOKEN not in repr(binding)
    assert TOKEN not in repr(result.changes)


def test_unknown_push_provider_is_555() -> None:
    reg = make_registrar()
    result = reg.handle_register(
        register("<sip:alice@10.0.0.1;pn-provider=hms;pn-prid=abc>"), UDP, 0.0
    )
    assert result.response.status == 555
    assert result.response.reason == "Push Notification Service Not Supported"
    assert len(reg) == 0


def test_provider_set_is_configurable() -> None:
    reg = make_registrar(push_providers={"apns", "fcm", "webpush"})
    result = reg.handle_register(
        register("<sip:alice@10.0.0.1;pn-provider=apns.dev;pn-param=T.com.ex.voip;pn-prid=ab>"),
        UDP,
        0.0,
    )
    assert result.response.status == 555


def test_malformed_push_params_are_400() -> None:
    reg = make_registrar()
    result = reg.handle_register(
        register("<sip:alice@10.0.0.1;pn-provider=apns;pn-param=nodots;pn-prid=ab>"), UDP, 0.0
    )
    assert result.response.status == 400
    assert "pn-param" in result.response.reason


def test_feature_caps_on_push_registration() -> None:
    reg = make_registrar()
    result = reg.handle_register(register(f"<sip:alice@10.0.0.1;{APNS}>"), UDP, 0.0)
    assert result.response.headers.values("Feature-Caps") == ['*;+sip.pns="apns"']


def test_feature_caps_with_pnsreg_and_linphone_sandbox() -> None:
    reg = make_registrar()
    contact = (
        "<sip:alice@10.0.0.1;pn-provider=apns.dev;pn-param=ABCD1234.org.linphone.phone.voip;"
        "pn-prid=aa11:voip>;+sip.pnsreg"
    )
    result = reg.handle_register(register(contact), UDP, 0.0)
    assert result.response.headers.get_all("Feature-Caps") == [
        '*;+sip.pns="apns.dev";+sip.pnsreg="130"'
    ]
    assert result.bindings[0].pnsreg
    assert result.bindings[0].push is not None
    assert result.bindings[0].push.sandbox


def test_legacy_linphone_params_register_without_feature_caps() -> None:
    reg = make_registrar()
    contact = "<sip:alice@10.0.0.1;pn-type=apple;app-id=org.linphone.phone.prod;pn-tok=ab12cd34>"
    result = reg.handle_register(register(contact), UDP, 0.0)
    assert result.response.status == 200
    assert result.bindings[0].push is not None
    assert result.bindings[0].push.legacy
    assert result.response.headers.get("Feature-Caps") is None


def test_push_capability_query() -> None:
    """RFC 8599 §4.1.5: pn-provider without pn-prid asks; the binding is a normal one."""
    reg = make_registrar()
    result = reg.handle_register(register("<sip:alice@10.0.0.1;pn-provider=fcm>"), UDP, 0.0)
    assert result.response.status == 200
    assert result.response.headers.values("Feature-Caps") == ['*;+sip.pns="fcm"']
    assert result.bindings[0].push is None


def test_push_capability_query_for_every_provider() -> None:
    reg = make_registrar()
    result = reg.handle_register(register("<sip:alice@10.0.0.1;pn-provider>"), UDP, 0.0)
    assert result.response.headers.get_all("Feature-Caps") == [
        '*;+sip.pns="apns"',
        '*;+sip.pns="apns.dev"',
        '*;+sip.pns="fcm"',
        '*;+sip.pns="webpush"',
    ]


def test_push_capability_query_for_unknown_provider_is_555() -> None:
    reg = make_registrar()
    result = reg.handle_register(register("<sip:alice@10.0.0.1;pn-provider=hms>"), UDP, 0.0)
    assert result.response.status == 555


def test_remove_push_target_spares_a_fresh_token() -> None:
    reg = make_registrar()
    binding = reg.handle_register(register(f"<sip:alice@10.0.0.1;{APNS}>"), UDP, 0.0).bindings[0]
    assert reg.remove_push_target(binding.binding_id, prid="stale-token") == []
    [cleared] = reg.remove_push_target(binding.binding_id, prid=TOKEN)
    assert isinstance(cleared, PushTargetRemoved)
    assert cleared.binding.push is None
    assert reg.get(binding.binding_id) == cleared.binding
    assert reg.find_by_push(("apns", "ABCD1234.com.example.app.voip", TOKEN), 0.0) == []


# -- queries, Path, ordering, limits ------------------------------------------------------


def test_query_lists_bindings_without_changes() -> None:
    reg = make_registrar()
    reg.handle_register(register("<sip:alice@10.0.0.1>", expires=600), UDP, 0.0)
    result = reg.handle_register(register(cseq=2), UDP, 100.0)
    assert result.response.status == 200
    assert result.changes == ()
    assert contacts_of(result) == ["<sip:alice@10.0.0.1>;expires=500"]


def test_path_echoed_when_supported() -> None:
    reg = make_registrar()
    path = ("Path: <sip:edge1.example.com;lr>", "Path: <sip:edge2.example.com;lr>")
    result = reg.handle_register(
        register("<sip:alice@10.0.0.1>", headers=(*path, "Supported: path"), vias=3), UDP, 0.0
    )
    assert result.response.headers.values("Path") == [
        "<sip:edge1.example.com;lr>",
        "<sip:edge2.example.com;lr>",
    ]
    assert result.bindings[0].path == ("<sip:edge1.example.com;lr>", "<sip:edge2.example.com;lr>")


def test_path_stored_but_not_echoed_without_supported_path() -> None:
    reg = make_registrar()
    result = reg.handle_register(
        register("<sip:alice@10.0.0.1>", headers=("Path: <sip:edge1.example.com;lr>",), vias=2),
        UDP,
        0.0,
    )
    assert result.response.status == 200
    assert result.response.headers.get("Path") is None
    assert result.bindings[0].path == ("<sip:edge1.example.com;lr>",)


def test_bindings_sorted_by_q_then_most_recent() -> None:
    reg = make_registrar()
    reg.handle_register(register("<sip:alice@10.0.0.1>;q=0.5"), UDP, 0.0)
    reg.handle_register(register("<sip:alice@10.0.0.2>;q=0.5", cseq=2), UDP, 1.0)
    result = reg.handle_register(register("<sip:alice@10.0.0.3>;q=1.0", cseq=3), UDP, 2.0)
    order = [b.contact.host for b in reg.lookup(AOR, 3.0)]
    assert order == ["10.0.0.3", "10.0.0.2", "10.0.0.1"]
    assert contacts_of(result) == [
        "<sip:alice@10.0.0.3>;expires=3600",
        "<sip:alice@10.0.0.2>;expires=3599;q=0.5",
        "<sip:alice@10.0.0.1>;expires=3598;q=0.5",
    ]


def test_limit_drops_least_recently_registered() -> None:
    reg = make_registrar(max_bindings_per_aor=2)
    reg.handle_register(register("<sip:alice@10.0.0.1>"), UDP, 0.0)
    reg.handle_register(register("<sip:alice@10.0.0.2>", cseq=2), UDP, 1.0)
    reg.handle_register(register("<sip:alice@10.0.0.1>", cseq=3), UDP, 2.0)  # refresh .1
    result = reg.handle_register(register("<sip:alice@10.0.0.3>", cseq=4), UDP, 3.0)
    assert [type(c) for c in result.changes] == [BindingAdded, BindingRemoved]
    removed = result.changes[1]
    assert isinstance(removed, BindingRemoved)
    assert removed.reason == "limit"
    assert removed.binding.contact.host == "10.0.0.2"
    assert sorted(b.contact.host for b in reg.lookup(AOR, 3.0)) == ["10.0.0.1", "10.0.0.3"]


# -- refusals before any binding changes -------------------------------------------------


def test_domain_not_served_is_404() -> None:
    reg = make_registrar()
    result = reg.handle_register(
        register("<sip:alice@10.0.0.1>", to="<sip:alice@elsewhere.org>"), UDP, 0.0
    )
    assert result.response.status == 404
    assert result.aor is None


def test_unknown_required_extension_is_420() -> None:
    reg = make_registrar()
    result = reg.handle_register(
        register("<sip:alice@10.0.0.1>", headers=("Require: path, foo",)), UDP, 0.0
    )
    assert result.response.status == 420
    assert result.response.headers.get("Unsupported") == "foo"


def test_non_sip_request_uri_is_416() -> None:
    reg = make_registrar()
    request = register("<sip:alice@10.0.0.1>")
    bad = parse_message(request.to_bytes().replace(b"REGISTER sip:example.com", b"REGISTER tel:+1"))
    assert isinstance(bad, Request)
    assert reg.handle_register(bad, UDP, 0.0).response.status == 416


def test_not_a_register_is_a_local_error() -> None:
    reg = make_registrar()
    request = register("<sip:alice@10.0.0.1>")
    request.method = "OPTIONS"
    with pytest.raises(LocalProtocolError):
        reg.handle_register(request, UDP, 0.0)


def test_rfc4475_unksm2(corpora: pathlib.Path) -> None:
    """RFC 4475 §3.3.4: an isbn: AOR in To is well-formed, but a registrar answers 400."""
    message = parse_message((corpora / "rfc4475" / "unksm2.sip").read_bytes())
    assert isinstance(message, Request)
    result = make_registrar().handle_register(message, UDP, 0.0)
    assert result.response.status == 400


def test_rfc4475_regescrt(corpora: pathlib.Path) -> None:
    """RFC 4475 §3.3.14: the binding keeps the escaped ?Route= header of its contact."""
    message = parse_message((corpora / "rfc4475" / "regescrt.sip").read_bytes())
    assert isinstance(message, Request)
    result = make_registrar().handle_register(message, UDP, 0.0)
    assert result.response.status == 200
    contact = result.bindings[0].contact
    assert isinstance(contact, SipUri)
    assert contact.headers == (("Route", "%3Csip:sip.example.com%3E"),)
    assert contacts_of(result) == [
        "<sip:user@example.com?Route=%3Csip:sip.example.com%3E>;expires=3600"
    ]


# -- time: deadlines and expiry -------------------------------------------------------------


def test_expiry_events_at_their_deadlines() -> None:
    reg = make_registrar()
    reg.handle_register(register("<sip:alice@10.0.0.1>;expires=300"), UDP, 0.0)
    reg.handle_register(register("<sip:alice@10.0.0.2>;expires=120", cseq=2), UDP, 0.0)
    reg.handle_register(
        register("<sip:bob@10.0.0.3>;expires=120", to="<sip:bob@example.com>"), UDP, 0.0
    )
    assert reg.next_deadline() == 120.0
    assert reg.handle_timeout(119.9) == []
    now = reg.next_deadline()
    assert now is not None
    events = reg.handle_timeout(now)
    assert [type(e) for e in events] == [BindingExpired, BindingExpired]
    # Same deadline: creation order.
    assert [e.binding.contact.host for e in events] == ["10.0.0.2", "10.0.0.3"]
    assert reg.next_deadline() == 300.0
    [last] = reg.handle_timeout(1000.0)
    assert last.binding.contact.host == "10.0.0.1"
    assert reg.next_deadline() is None
    assert len(reg) == 0


def test_lookup_hides_expired_and_register_reports_them() -> None:
    reg = make_registrar()
    reg.handle_register(register("<sip:alice@10.0.0.1>;expires=60"), UDP, 0.0)
    assert reg.lookup(AOR, 60.0) == []
    result = reg.handle_register(register("<sip:alice@10.0.0.2>", cseq=2), UDP, 61.0)
    assert [type(c) for c in result.changes] == [BindingExpired, BindingAdded]
    assert reg.handle_timeout(61.0) == []


def test_date_header_from_wall_clock() -> None:
    reg = make_registrar()
    result = reg.handle_register(register("<sip:alice@10.0.0.1>"), UDP, 0.0, wall=0.0)
    assert result.response.headers.get("Date") == "Thu, 01 Jan 1970 00:00:00 GMT"


# -- node operations -----------------------------------------------------------------------


def test_revert_undoes_a_register() -> None:
    reg = make_registrar(max_bindings_per_aor=2)
    reg.handle_register(register("<sip:alice@10.0.0.1>", expires=600), UDP, 0.0)
    reg.handle_register(register("<sip:alice@10.0.0.2>", cseq=2), UDP, 1.0)
    before = reg.all_bindings()
    result = reg.handle_register(
        register("<sip:alice@10.0.0.1>", "<sip:alice@10.0.0.3>", cseq=3), UDP, 2.0
    )
    assert {type(c) for c in result.changes} == {BindingRefreshed, BindingAdded, BindingRemoved}
    reg.revert(result.changes)
    assert sorted(reg.all_bindings(), key=lambda b: b.binding_id) == sorted(
        before, key=lambda b: b.binding_id
    )
    assert reg.next_deadline() == 600.0


def test_remove_and_restore() -> None:
    reg = make_registrar()
    result = reg.handle_register(register("<sip:alice@10.0.0.1>", "<sip:alice@10.0.0.2>"), UDP, 0.0)
    one = result.bindings[0]
    [removed] = reg.remove(AOR, one.binding_id)
    assert isinstance(removed, BindingRemoved)
    assert removed.reason == "removed"
    assert reg.remove(AOR, "no-such-id") == []
    assert len(reg.remove(AOR)) == 1
    assert len(reg) == 0

    fresh = make_registrar()
    fresh.restore(result.bindings)
    assert fresh.lookup(AOR, 0.0) == list(result.bindings)
    assert fresh.next_deadline() == 3600.0
    assert fresh.aors() == [AOR]


def test_same_seed_same_bytes() -> None:
    def run() -> list[bytes]:
        reg = make_registrar()
        return [
            reg.handle_register(
                register(f"<sip:alice@10.0.0.1;{APNS}>"), UDP, 0.0
            ).response.to_bytes(),
            reg.handle_register(
                register("<sip:alice@10.0.0.2>", cseq=2), UDP, 1.0
            ).response.to_bytes(),
        ]

    assert run() == run()


@pytest.mark.parametrize(
    "uri",
    [
        "<sip:alice@10.0.0.1>",
        f"<sip:alice@10.0.0.1;{APNS}>",
        "<sip:alice@10.0.0.1;pn-provider=fcm>",
        "<sip:alice@10.0.0.1;pn-provider=xyz;pn-prid=t>",
    ],
)
@pytest.mark.parametrize("expires", [None, 0, 30, 600, 99999])
def test_contact_without_parameters_reads_as_with_a_neutral_one(
    uri: str, expires: int | None
) -> None:
    """A Contact with no header parameters (read without looking them up) gets the plan
    the general reading gives the same Contact with a parameter that changes nothing."""
    config = RegistrarConfig(domains={"example.com"}, min_push_expires=60)
    plans: list[RegisterPlan | tuple[int, str | None]] = []
    for contact in (uri, f"{uri};x-neutral"):
        try:
            plans.append(read_register(register(contact, expires=expires), config))
        except Rejection as rejection:  # the same refusal both ways
            plans.append((rejection.status, rejection.reason))
    assert plans[0] == plans[1]


def test_refresh_with_the_same_contact_keeps_its_value() -> None:
    reg = make_registrar()
    first = reg.handle_register(register(f"<sip:alice@10.0.0.1:0050;{APNS}>"), UDP, 0.0)
    again = reg.handle_register(register(f"<sip:alice@10.0.0.1:50;{APNS}>", cseq=2), UDP, 10.0)
    moved = reg.handle_register(register(f"<sip:alice@10.0.0.2:50;{APNS}>", cseq=3), UDP, 20.0)
    assert again.bindings[0].contact is first.bindings[0].contact
    assert contacts_of(first) == [f"<sip:alice@10.0.0.1:50;{APNS}>;expires=3600"]
    assert contacts_of(again) == [f"<sip:alice@10.0.0.1:50;{APNS}>;expires=3600"]
    assert contacts_of(moved) == [f"<sip:alice@10.0.0.2:50;{APNS}>;expires=3600"]
    assert isinstance(moved.changes[0], BindingRefreshed)
    assert moved.changes[0].moved


def test_contact_value_lists_every_parameter() -> None:
    reg = make_registrar()
    contact = '<sip:alice@10.0.0.1;ob>;q=0.25;+sip.instance="<urn:uuid:1>";reg-id=7;expires=100'
    result = reg.handle_register(register(contact, headers=("Supported: outbound",)), TCP, 0.0)
    assert contacts_of(result) == [
        '<sip:alice@10.0.0.1;ob>;expires=100;q=0.25;+sip.instance="<urn:uuid:1>";reg-id=7'
    ]
    assert result.bindings[0].contact_value(99.5) == (
        '<sip:alice@10.0.0.1;ob>;expires=1;q=0.25;+sip.instance="<urn:uuid:1>";reg-id=7'
    )


# -- the expiry granted is never longer than asked (RFC 3261 §10.3 step 7) ---------------

#: Monotonic clocks as ``loop.time()`` reads them: any, and just below a power of two, where
#: ``now + expires`` takes a coarser float step than ``now`` and ``(now + e) - now`` comes
#: out a hair above or below ``e`` (600 was listed as 601 in about 0.15% of REGISTERs).
CLOCKS = st.one_of(
    st.floats(min_value=0.0, max_value=1e9, allow_nan=False, allow_infinity=False),
    st.builds(
        lambda exponent, back: 2.0**exponent - back,
        st.integers(min_value=13, max_value=30),
        st.floats(min_value=0.0, max_value=7200.0),
    ),
)


@settings(max_examples=300, deadline=None)
@example(now=16000.123457, asked=600, in_header=True)
@example(now=12345.678901, asked=600, in_header=False)
@given(now=CLOCKS, asked=st.integers(min_value=60, max_value=7200), in_header=st.booleans())
def test_a_fresh_binding_is_granted_exactly_what_was_asked_up_to_the_maximum(
    now: float, asked: int, in_header: bool
) -> None:
    reg = make_registrar(max_expires=3600)
    uri = "<sip:alice@10.0.0.1:5060>"
    contact = uri if in_header else f"{uri};expires={asked}"
    result = reg.handle_register(register(contact, expires=asked if in_header else None), UDP, now)
    granted = min(asked, 3600)
    assert contacts_of(result) == [f"{uri};expires={granted}"]
    assert all(int(v) <= granted for v in result.response.headers.values("Expires"))


@settings(max_examples=300, deadline=None)
@example(now=16000.123457, asked=600, later=0.001)
@given(
    now=CLOCKS,
    asked=st.integers(min_value=60, max_value=3600),
    later=st.floats(min_value=0.0, max_value=1.0, exclude_min=True, exclude_max=True),
)
def test_a_binding_listed_later_shows_whole_seconds_left_never_more(
    now: float, asked: int, later: float
) -> None:
    # Another device of the user registers ``later`` of the binding's life after it: the
    # 200 lists the first binding with what is left, rounded down (a client re-registering
    # by then still finds it), and never 0 while it lasts (0 would read as removed).
    reg = make_registrar()
    reg.handle_register(register("<sip:alice@10.0.0.1:5060>", expires=asked), UDP, now)
    then = now + later * asked
    assume(now < then < now + asked)
    result = reg.handle_register(
        register("<sip:alice@10.0.0.2:5060>", call_id="reg-2", expires=asked), UDP, then
    )
    listed = {
        value.split(">")[0] + ">": int(value.rsplit("expires=", 1)[1])
        for value in contacts_of(result)
    }
    left = (now + asked) - then
    assert listed["<sip:alice@10.0.0.2:5060>"] == asked
    first = listed["<sip:alice@10.0.0.1:5060>"]
    assert 1 <= first <= asked
    assert first <= left or first == 1
    assert first > left - 1


# -- RFC 8599: an iOS app's two tokens as two contacts of one device (issue 19) --------------
VOIP_TOKEN, REMOTE_TOKEN = "aa11" * 16, "bb22" * 16
PHONE_INSTANCE = ';+sip.instance="<urn:uuid:00000000-0000-4000-8000-000000000001>"'


def _apns_contact(port: int, token: str, service: str) -> str:
    param = "ABCD1234.com.example.app" + (".voip" if service == "voip" else "")
    return (
        f"<sip:alice@10.0.0.1:{port};transport=tcp;pn-provider=apns;"
        f"pn-param={param};pn-prid={token}>{PHONE_INSTANCE}"
    )


def test_voip_and_remote_contacts_of_one_instance_make_one_binding_with_both_tokens() -> None:
    reg = make_registrar()
    request = register(
        _apns_contact(5070, VOIP_TOKEN, "voip"), _apns_contact(5071, REMOTE_TOKEN, "remote")
    )
    result = reg.handle_register(request, TCP, 100.0)
    assert result.accepted
    (binding,) = reg.lookup(AOR, 100.0)
    assert binding.push is not None
    assert binding.push.tokens() == {"voip": VOIP_TOKEN, "remote": REMOTE_TOKEN}
    call, alert = binding.push.channel("call"), binding.push.channel("alert")
    assert call is not None
    assert alert is not None
    assert (call.prid, call.apns_topic) == (VOIP_TOKEN, "com.example.app.voip")
    assert (alert.prid, alert.apns_topic) == (REMOTE_TOKEN, "com.example.app")


def test_a_later_register_of_one_token_keeps_the_other() -> None:
    reg = make_registrar()
    reg.handle_register(register(_apns_contact(5070, VOIP_TOKEN, "voip")), TCP, 100.0)
    reg.handle_register(register(_apns_contact(5071, REMOTE_TOKEN, "remote"), cseq=2), TCP, 101.0)
    new_voip = "cc33" * 16
    reg.handle_register(register(_apns_contact(5070, new_voip, "voip"), cseq=3), TCP, 102.0)
    (binding,) = reg.lookup(AOR, 102.0)
    assert binding.push is not None
    assert binding.push.tokens() == {"voip": new_voip, "remote": REMOTE_TOKEN}


def test_without_an_instance_the_two_contacts_stay_two_bindings() -> None:
    reg = make_registrar()
    plain = [_apns_contact(p, t, s).replace(PHONE_INSTANCE, "") for p, t, s in
             ((5070, VOIP_TOKEN, "voip"), (5071, REMOTE_TOKEN, "remote"))]  # fmt: skip
    reg.handle_register(register(*plain), TCP, 100.0)
    assert len(reg.lookup(AOR, 100.0)) == 2


def test_push_contacts_live_up_to_7_days_by_default_and_are_capped_there() -> None:
    # Issue 19 finding 4: a push binding must outlive a phone asleep for days.
    reg = make_registrar()
    result = reg.handle_register(
        register(f"<sip:alice@10.0.0.1;{APNS}>", "<sip:alice@10.0.0.2>", expires=10**7), UDP, 0.0
    )
    assert sorted(b.expires_at for b in result.bindings) == [3600.0, 604800.0]


def test_push_maximum_below_the_plain_maximum_is_refused() -> None:
    with pytest.raises(ValueError, match="max_push_expires"):
        RegistrarConfig(domains={"example.com"}, max_expires=7200, max_push_expires=3600)


def test_feature_caps_promise_the_push_and_pnsreg_only_to_who_asked() -> None:
    # RFC 8599 §5.6.1.1 step 5 / §4.1.3: +sip.pns (the network pushes, refresh pushes
    # included); +sip.pnsreg="N" (N > 120) only when the Contact carried the +sip.pnsreg
    # media feature tag, in the same Feature-Caps field as +sip.pns (§5.4).
    reg = make_registrar()
    plain = reg.handle_register(register(f"<sip:alice@10.0.0.1;{APNS}>"), UDP, 0.0)
    assert plain.response.headers.get_all("Feature-Caps") == ['*;+sip.pns="apns"']
    asked = reg.handle_register(
        register(f"<sip:alice@10.0.0.1;{APNS}>;+sip.pnsreg", cseq=2), UDP, 1.0
    )
    (caps,) = asked.response.headers.get_all("Feature-Caps")
    assert caps.startswith('*;+sip.pns="apns";+sip.pnsreg="')
    assert int(caps.rsplit('"', 2)[1]) > 120
