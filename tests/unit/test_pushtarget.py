"""RFC 8599 and Linphone legacy push parameters read into one PushTarget."""

from __future__ import annotations

import pytest

from sipwake.errors import SipParseError
from sipwake.sip.pushtarget import (
    is_push_query,
    mask_token,
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
