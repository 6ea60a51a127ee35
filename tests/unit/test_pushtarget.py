"""RFC 8599 and Linphone legacy push parameters read into one PushTarget."""

from __future__ import annotations

import pytest

from sipwake.errors import SipParseError
from sipwake.sip.pushtarget import (
    PUSH_PARAMS,
    is_push_query,
    is_push_query_params,
    mask_token,
    push_params,
    push_target_from_params,
    push_target_from_uri,
    redact,
)
from sipwake.sip.uri import SipUri, parse_uri

TOKEN = "00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0"


def _uri(text: str) -> SipUri:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    return uri


def test_rfc8599_apns_voip() -> None:
    target = push_target_from_uri(
        _uri(f"sip:a@h;pn-provider=apns;pn-param=DEF123GHIJ.com.example.app.voip;pn-prid={TOKEN}")
    )
    assert target is not None
    assert (target.provider, target.prid, target.legacy) == ("apns", TOKEN, False)
    assert target.team_id == "DEF123GHIJ"
    assert target.topic == "com.example.app.voip"
    assert target.bundle_id == "com.example.app"
    assert target.services == ("voip",)
    assert target.key() == ("apns", "DEF123GHIJ.com.example.app.voip", TOKEN)
    assert TOKEN not in repr(target)


def test_rfc8599_fcm_and_escaped_webpush() -> None:
    fcm = push_target_from_uri(_uri("sip:a@h;pn-provider=fcm;pn-param=my-project;pn-prid=tok123"))
    assert fcm is not None
    assert (fcm.provider, fcm.param, fcm.prid) == ("fcm", "my-project", "tok123")
    web = push_target_from_uri(
        _uri("sip:a@h;pn-provider=webpush;pn-prid=https%3A%2F%2Fpush.example.org%2Fsub%2F42")
    )
    assert web is not None
    assert web.prid == "https://push.example.org/sub/42"


def test_linphone_apns_dev_and_two_services() -> None:
    target = push_target_from_uri(
        _uri(
            "sip:a@h;pn-provider=apns.dev;pn-param=ABCD1234.org.linphone.phone.voip&remote;"
            "pn-prid=aaaa:voip&bbbb:remote;pn-silent=1;pn-timeout=0"
        )
    )
    assert target is not None
    assert target.sandbox
    assert target.base_provider == "apns"
    assert target.services == ("voip", "remote")
    assert target.silent


def test_linphone_legacy_parameters() -> None:
    target = push_target_from_uri(
        _uri(f"sip:a@h;pn-type=apple;app-id=org.linphone.phone.voip.dev;pn-tok={TOKEN};pn-silent=1")
    )
    assert target is not None
    assert target.legacy
    assert target.provider == "apns"
    assert target.sandbox
    assert target.topic == "org.linphone.phone.voip"
    firebase = push_target_from_uri(_uri("sip:a@h;pn-type=firebase;app-id=929724111839;pn-tok=t1"))
    assert firebase is not None
    assert (firebase.provider, firebase.param, firebase.legacy) == ("fcm", "929724111839", True)


def test_no_push_parameters_and_capability_query() -> None:
    assert push_target_from_uri(_uri("sip:a@h;transport=tcp")) is None
    query = _uri("sip:a@h;pn-provider=apns")
    assert push_target_from_uri(query) is None
    assert is_push_query(query)


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("sip:a@h;pn-provider=apns;pn-param=nodots;pn-prid=x", "pn-param for apns"),
        ("sip:a@h;pn-provider=webpush;pn-param=x;pn-prid=y", "must not be used with webpush"),
        ("sip:a@h;pn-provider;pn-prid=x", "pn-provider is empty"),
        ("sip:a@h;pn-type=apple;app-id=x", "pn-tok missing"),
        ("sip:a@h;pn-type=nokia;pn-tok=x", "unknown pn-type"),
        ("sip:a@h;pn-provider=fcm;pn-param=p;pn-prid=x;pn-timeout=soon", "pn-timeout"),
    ],
)
def test_unusable_parameters_are_refused_with_a_reason(uri: str, reason: str) -> None:
    with pytest.raises(SipParseError, match=reason):
        push_target_from_uri(_uri(uri))


def test_masking_for_logs() -> None:
    assert mask_token(TOKEN) == "00fc…e8f0"
    assert mask_token("short") == "*****"
    line = f"Contact: <sip:a@h;pn-prid={TOKEN};pn-param=T.b.voip>"
    shown = redact(line)
    assert TOKEN not in shown
    assert "pn-prid=00fc…e8f0" in shown
    assert "pn-param=T.b.voip" in shown


# RFC 8291 Appendix A subscription keys (the receiver's public key and auth secret).
P256DH = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
AUTH = "BTBZMqHH6r4Tts7J_aSIgg"
ENDPOINT = "https%3A%2F%2Fpush.example.net%2Fpush%2FJzLQ3raZJfFBR0aqvOMsLrt54w4rJUsV"


def test_webpush_subscription_keys_are_read() -> None:
    target = push_target_from_uri(
        _uri(f"sip:a@h;pn-provider=webpush;pn-prid={ENDPOINT};pn-p256dh={P256DH};pn-auth={AUTH}")
    )
    assert target is not None
    assert target.prid == "https://push.example.net/push/JzLQ3raZJfFBR0aqvOMsLrt54w4rJUsV"
    assert (target.p256dh, target.auth, target.has_keys) == (P256DH, AUTH, True)
    assert target.param is None
    assert AUTH not in repr(target)
    assert P256DH not in repr(target)
    assert "keys=***" in repr(target)


def test_webpush_keys_may_be_padded_and_escaped() -> None:
    padded = push_target_from_uri(
        _uri(
            f"sip:a@h;pn-provider=webpush;pn-prid={ENDPOINT};pn-p256dh={P256DH}%3D;pn-auth={AUTH}%3D%3D"
        )
    )
    assert padded is not None
    assert (padded.p256dh, padded.auth) == (P256DH + "=", AUTH + "==")


def test_webpush_without_keys_has_no_payload_keys() -> None:
    target = push_target_from_uri(_uri(f"sip:a@h;pn-provider=webpush;pn-prid={ENDPOINT}"))
    assert target is not None
    assert (target.p256dh, target.auth, target.has_keys) == (None, None, False)
    assert "keys" not in repr(target)


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        (f"pn-p256dh={P256DH}", "pn-auth missing"),
        (f"pn-auth={AUTH}", "pn-p256dh missing"),
        (f"pn-p256dh={P256DH[:-4]};pn-auth={AUTH}", r"65 bytes starting 0x04\), got 62 bytes"),
        (f"pn-p256dh=A{P256DH[1:]};pn-auth={AUTH}", r"65 bytes starting 0x04\), got 65 bytes"),
        (f"pn-p256dh={P256DH};pn-auth={AUTH}AAAA", "pn-auth must decode to 16 bytes"),
        (f"pn-p256dh={P256DH};pn-auth=A", "pn-auth must be base64url, got 1 characters"),
        (f"pn-p256dh={P256DH};pn-auth=ab%2Bcd", "pn-auth must be base64url"),
        (f"pn-p256dh=not.base64;pn-auth={AUTH}", "pn-p256dh must be base64url, got 'not.base64'"),
        (f"pn-p256dh={P256DH};pn-auth=%3D%3D", "pn-auth must be base64url, got 2 characters"),
    ],
)
def test_unusable_webpush_keys_are_refused(params: str, reason: str) -> None:
    with pytest.raises(SipParseError, match=reason):
        push_target_from_uri(_uri(f"sip:a@h;pn-provider=webpush;pn-prid={ENDPOINT};{params}"))


def test_webpush_keys_refused_for_other_providers() -> None:
    with pytest.raises(SipParseError, match="for webpush, not 'fcm'"):
        push_target_from_uri(
            _uri(f"sip:a@h;pn-provider=fcm;pn-param=p;pn-prid=t;pn-p256dh={P256DH};pn-auth={AUTH}")
        )


def test_webpush_keys_are_push_params_and_redacted() -> None:
    contact = _uri(
        f"sip:a@h;transport=ws;pn-provider=webpush;pn-prid={ENDPOINT};"
        f"pn-p256dh={P256DH};pn-auth={AUTH}"
    )
    assert {"pn-p256dh", "pn-auth"} <= PUSH_PARAMS
    stripped = str(contact.without_params(*PUSH_PARAMS))
    assert "pn-" not in stripped
    assert "transport=ws" in stripped
    shown = redact(f"Contact: <{contact}>")
    assert AUTH not in shown
    assert P256DH not in shown
    assert ENDPOINT not in shown
    assert f"pn-auth={mask_token(AUTH)}" in shown


@pytest.mark.parametrize(
    "text",
    [
        "sip:a@h",
        "sip:a@h;transport=tcp;ob",
        f"sip:a@h;pn-provider=apns;pn-param=T.com.example.voip;pn-prid={TOKEN}",
        "sip:a@h;PN-Provider=FCM;Pn-Prid=tok;PN-PARAM=proj",
        "sip:a@h;pn-provider=fcm;pn-prid=first;pn-prid=second;pn-param=p",
        "sip:a@h;pn-prid=x;pn-provider=fcm;pn-provider=apns",
        "sip:a@h;pn-provider=webpush;pn-prid=https%3A%2F%2Fpush.example.org%2F1",
        "sip:a@h;pn-provider=apns",
        "sip:a@h;pn-provider;pn-prid",
        "sip:a@h;app-idx=1;pn-foo=2",
        "sip:a@h;pn-type=apple;APP-ID=org.example.voip.dev;pn-tok=t;pn-silent=1;pn-timeout=30",
        "sip:a@h;pn-type=firebase;app-id=9;pn-tok=t;pn-call-str=hi;pn-msg-str=yo",
    ],
)
def test_push_params_read_as_sip_uri_param(text: str) -> None:
    """One pass over the parameters finds what ``SipUri.param`` finds, name by name
    (case-insensitive, the first of a repeated name)."""
    uri = _uri(text)
    found = push_params(uri)
    for name in [*PUSH_PARAMS, "app-idx", "pn-foo"]:
        assert (name in found) == uri.has_param(name)
        assert found.get(name) == uri.param(name)
    assert all(name.startswith(("pn-", "app-id")) for name in found)
    assert is_push_query_params(found) == (
        uri.has_param("pn-provider") and not uri.has_param("pn-prid")
    )
    assert push_target_from_params(found) == push_target_from_uri(uri)
    assert is_push_query(uri) == is_push_query_params(found)


def test_push_params_first_of_a_repeated_name_wins() -> None:
    target = push_target_from_uri(
        _uri("sip:a@h;pn-provider=fcm;pn-prid=first;pn-param=p;PN-PRID=second")
    )
    assert target is not None
    assert target.prid == "first"


# -- Linphone's two-token APNs form (PROTOCOLS.md §2.2, issue 19 finding 2) ----------------
VOIP = "a1" * 32
REMOTE = "b2" * 32


@pytest.mark.parametrize(
    ("prid", "services"),
    [
        (f"{VOIP}:voip&{REMOTE}:remote", "voip&remote"),
        (f"{REMOTE}:remote&{VOIP}:voip", "remote&voip"),
    ],
)
def test_two_tokens_split_by_service_in_either_order(prid: str, services: str) -> None:
    target = push_target_from_uri(
        _uri(
            f"sip:a@h;pn-provider=apns;pn-param=ABCD1234.org.linphone.phone.{services};pn-prid={prid}"
        )
    )
    assert target is not None
    assert target.tokens() == {"voip": VOIP, "remote": REMOTE}
    call, alert = target.channel("call"), target.channel("alert")
    assert call is not None
    assert alert is not None
    assert (call.prid, call.service, call.apns_topic) == (VOIP, "voip", "org.linphone.phone.voip")
    assert (alert.prid, alert.service, alert.apns_topic) == (REMOTE, "remote", "org.linphone.phone")
    assert call.team_id == alert.team_id == "ABCD1234"
    # A refusal of one token leaves the other.
    assert target.without(VOIP) == alert
    assert target.without(REMOTE) == call
    assert target.holds(VOIP)
    assert target.holds(REMOTE)


def test_single_voip_token_has_no_alert_channel() -> None:
    target = push_target_from_uri(
        _uri(f"sip:a@h;pn-provider=apns;pn-param=T1.org.lab.phone.voip;pn-prid={TOKEN}")
    )
    assert target is not None
    assert target.channel("call") is target
    assert target.channel("alert") is None
    assert target.without(TOKEN) is None


def test_bundle_without_service_is_a_remote_token() -> None:
    """Flexisip: a pn-param with no service suffix means ``remote``: calls reach such an
    app as alerts on its bundle topic."""
    target = push_target_from_uri(
        _uri(f"sip:a@h;pn-provider=apns;pn-param=ABCD1234.org.lab.phone;pn-prid={TOKEN}")
    )
    assert target is not None
    assert target.service == "remote"
    assert target.channel("call") is target
    assert target.channel("alert") is target
    assert target.apns_topic == "org.lab.phone"


def test_fcm_token_serves_both_channels_even_with_a_colon() -> None:
    target = push_target_from_uri(_uri("sip:a@h;pn-provider=fcm;pn-param=proj;pn-prid=abc:APA91b"))
    assert target is not None
    assert target.channel("call") is target
    assert target.channel("alert") is target


@pytest.mark.parametrize(
    ("param", "prid", "why"),
    [
        ("T.b.app.voip&remote", f"{VOIP}:voip", "1 token"),
        ("T.b.app.voip&remote", f"{VOIP}&{REMOTE}", "names no service"),
        ("T.b.app.voip&remote", f"{VOIP}:voip&{REMOTE}:voip", "does not match"),
        ("T.b.app.voip", f"{VOIP}:remote", "does not match"),
        ("T.b.app.voip&remote", f"{VOIP}:voip&:remote", "empty"),
    ],
)
def test_tokens_that_do_not_pair_with_services_are_refused(param: str, prid: str, why: str) -> None:
    with pytest.raises(SipParseError, match=why) as info:
        push_target_from_uri(_uri(f"sip:a@h;pn-provider=apns;pn-param={param};pn-prid={prid}"))
    assert VOIP not in str(info.value)


def test_redact_masks_both_tokens_of_the_two_token_form() -> None:
    text = redact(
        f"Contact: <sip:a@h;pn-prid={VOIP}:voip&{REMOTE}:remote;pn-param=T.b.voip&remote>"
    )
    assert VOIP not in text
    assert REMOTE not in text
    assert "pn-param=T.b.voip&remote" in text
