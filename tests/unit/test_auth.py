"""Digest authentication: RFC vectors, parsing, serialisation, server and client."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipwake.errors import AuthError, LocalProtocolError
from sipwake.ids import SeededIds
from sipwake.sip.auth import (
    ALGORITHMS,
    SUPPORTED_ALGORITHMS,
    AuthResult,
    Challenge,
    Credentials,
    DigestClient,
    DigestServer,
    answer_challenge,
    compute_response,
    ha1_for,
    parse_challenge,
    parse_credentials,
)

SECRET = b"0123456789abcdef0123456789abcdef"
REALM = "sip.example.com"
URI = "sip:sip.example.com"


def make_server(**kwargs: object) -> DigestServer:
    return DigestServer(REALM, SECRET, **kwargs)  # type: ignore[arg-type]


def verify(server: DigestServer, creds: Credentials, now: float) -> AuthResult:
    return server.verify(creds, method="REGISTER", password="secret", now=now)


def answer(
    challenges: list[Challenge], *, nc: int = 1, method: str = "REGISTER", body: bytes = b""
) -> Credentials:
    """Alice's answer with password "secret"."""
    return answer_challenge(
        challenges,
        username="alice",
        password="secret",
        method=method,
        uri=URI,
        ids=SeededIds(nc),
        body=body,
        nc=nc,
    )


def digest(nonce: str, algorithm: str = "SHA-256", qop: tuple[str, ...] = ("auth",)) -> Challenge:
    return Challenge(realm=REALM, nonce=nonce, algorithm=algorithm, qop=qop)


def login(
    server: DigestServer,
    now: float,
    *,
    password: str = "secret",
    method: str = "REGISTER",
    ids: SeededIds | None = None,
) -> Credentials:
    """Challenge, answer as alice, and carry the answer through its header text."""
    challenges = [parse_challenge(str(c)) for c in server.challenge(now)]
    creds = answer_challenge(
        challenges,
        username="alice",
        password=password,
        method=method,
        uri=URI,
        ids=ids or SeededIds(0),
    )
    return parse_credentials(str(creds))


# --- RFC test vectors ---------------------------------------------------------------------------


def test_rfc2617_section_3_5_md5_example() -> None:
    response = compute_response(
        algorithm="MD5",
        username="Mufasa",
        realm="testrealm@host.com",
        password="Circle Of Life",
        method="GET",
        uri="/dir/index.html",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        nc="00000001",
        cnonce="0a4f113b",
        qop="auth",
    )
    assert response == "6629fae49393a05397450978507c4ef1"


def test_rfc2617_section_3_5_authorization_header_parses_and_checks() -> None:
    creds = parse_credentials(
        'Digest username="Mufasa", realm="testrealm@host.com", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, '
        'nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", '
        'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    assert creds.opaque == "5ccc069c403ebaf9f0171e9517f40e41"
    assert creds.algorithm == "MD5"
    expected = compute_response(
        algorithm=creds.algorithm,
        username=creds.username,
        realm=creds.realm,
        password="Circle Of Life",
        method="GET",
        uri=creds.uri,
        nonce=creds.nonce,
        nc=creds.nc,
        cnonce=creds.cnonce,
        qop=creds.qop,
    )
    assert expected == creds.response


RFC7616 = {
    "username": "Mufasa",
    "realm": "http-auth@example.org",
    "password": "Circle of Life",
    "method": "GET",
    "uri": "/dir/index.html",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "nc": "00000001",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    "qop": "auth",
}


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ],
)
def test_rfc7616_section_3_9_1_example(algorithm: str, expected: str) -> None:
    assert compute_response(algorithm=algorithm, **RFC7616) == expected  # type: ignore[arg-type]


def test_rfc7616_section_3_9_1_challenges_parse_in_order() -> None:
    opaque = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
    values = [
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={alg}, '
        f'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="{opaque}"'
        for alg in ("SHA-256", "MD5")
    ]
    challenges = [parse_challenge(v) for v in values]
    assert [c.algorithm for c in challenges] == ["SHA-256", "MD5"]
    assert challenges[0].qop == ("auth", "auth-int")
    ids = SeededIds(0)
    creds = answer_challenge(
        challenges,
        username="Mufasa",
        password="Circle of Life",
        method="GET",
        uri="/dir/index.html",
        ids=ids,
    )
    assert creds.algorithm == "SHA-256"
    assert creds.qop == "auth"
    assert creds.opaque == opaque


def test_ha1_can_stand_in_for_the_password() -> None:
    ha1 = ha1_for("Mufasa", "http-auth@example.org", "Circle of Life", "SHA-256")
    args = {k: v for k, v in RFC7616.items() if k != "password"}
    response = compute_response(algorithm="SHA-256", ha1=ha1, **args)  # type: ignore[arg-type]
    assert response == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


def test_compute_response_needs_exactly_one_of_password_and_ha1() -> None:
    args = {k: v for k, v in RFC7616.items() if k != "password"}
    with pytest.raises(LocalProtocolError):
        compute_response(algorithm="MD5", **args)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        compute_response(algorithm="MD5", password="x", ha1="y", **args)  # type: ignore[arg-type]


def test_compute_response_rejects_unknown_algorithm_and_qop() -> None:
    args = dict(RFC7616)
    with pytest.raises(AuthError, match="algorithm"):
        compute_response(algorithm="SHA-999", **args)  # type: ignore[arg-type]
    args["qop"] = "auth-conf"
    with pytest.raises(AuthError, match="qop"):
        compute_response(algorithm="MD5", **args)  # type: ignore[arg-type]


def test_sha512_256_is_available_on_this_python() -> None:
    assert set(SUPPORTED_ALGORITHMS) == set(ALGORITHMS)


# --- server: round trips and outcomes -----------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_round_trip_client_to_server_for_each_algorithm(algorithm: str) -> None:
    server = make_server(algorithms=(algorithm,))
    creds = login(server, 10.0)
    assert creds.algorithm == algorithm
    assert verify(server, creds, 11.0) is AuthResult.OK


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_verify_with_stored_ha1(algorithm: str) -> None:
    server = make_server(algorithms=(algorithm,))
    creds = login(server, 0.0)
    ha1 = ha1_for("alice", REALM, "secret", creds.algorithm)
    assert server.verify(creds, method="REGISTER", ha1=ha1, now=1.0) is AuthResult.OK


def test_verify_needs_password_or_ha1() -> None:
    server = make_server()
    creds = login(server, 0.0)
    with pytest.raises(LocalProtocolError):
        server.verify(creds, method="REGISTER", now=1.0)


def test_wrong_password() -> None:
    server = make_server()
    creds = login(server, 0.0, password="guess")
    result = verify(server, creds, 1.0)
    assert result is AuthResult.WRONG_RESPONSE


def test_wrong_method_is_a_wrong_response() -> None:
    server = make_server()
    creds = login(server, 0.0, method="REGISTER")
    assert (
        server.verify(creds, method="INVITE", password="secret", now=1.0)
        is AuthResult.WRONG_RESPONSE
    )


def test_uppercase_hex_response_is_accepted() -> None:
    server = make_server()
    creds = login(server, 0.0)
    upper = dataclasses.replace(creds, response=creds.response.upper())
    assert verify(server, upper, 1.0) is AuthResult.OK


def test_expired_nonce_is_stale_then_a_fresh_challenge_says_stale_true() -> None:
    server = make_server(nonce_lifetime=300.0)
    creds = login(server, 0.0)
    result = verify(server, creds, 300.0)
    assert result is AuthResult.STALE
    fresh = server.challenge(300.0, stale=True)
    assert all(c.stale for c in fresh)
    assert "stale=true" in str(fresh[0])
    assert parse_challenge(str(fresh[0])).stale is True
    assert fresh[0].nonce != creds.nonce
    again = answer(fresh)
    assert verify(server, again, 301.0) is AuthResult.OK


def test_expired_nonce_with_wrong_password_is_not_stale() -> None:
    """RFC 2617 §3.2.1: stale only when the digest itself is valid."""
    server = make_server()
    creds = login(server, 0.0, password="guess")
    result = verify(server, creds, 1000.0)
    assert result is AuthResult.WRONG_RESPONSE


def test_nonce_carries_its_issue_time_to_the_millisecond() -> None:
    server = make_server(nonce_lifetime=1.0)
    creds = login(server, 10.0004)  # encoded as 10000 ms
    assert verify(server, creds, 10.9995) is AuthResult.OK
    creds = login(server, 20.0)
    assert verify(server, creds, 21.0) is AuthResult.STALE


def test_nonce_from_the_far_future_is_stale() -> None:
    server = make_server(nonce_lifetime=10.0)
    creds = login(server, 1000.0)
    assert verify(server, creds, 0.0) is AuthResult.STALE


def test_nonces_are_stateless_across_server_instances() -> None:
    issuer, checker = make_server(), make_server()
    creds = login(issuer, 5.0)
    assert verify(checker, creds, 6.0) is AuthResult.OK


def test_nonces_issued_in_the_same_millisecond_differ() -> None:
    server = make_server()
    assert server.challenge(1.0)[0].nonce != server.challenge(1.0)[0].nonce


@pytest.mark.parametrize(
    "nonce",
    [
        "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        "A" * 40,
        "",
        "not base64 at all!!",
        "é" * 40,
    ],
)
def test_forged_nonce(nonce: str) -> None:
    server = make_server()
    assert verify(server, answer([digest(nonce)]), 1.0) is AuthResult.BAD_NONCE


def test_tampered_nonce_is_bad() -> None:
    server = make_server()
    nonce = server.challenge(0.0)[0].nonce
    flipped = nonce[:5] + ("A" if nonce[5] != "A" else "B") + nonce[6:]
    assert verify(server, answer([digest(flipped)]), 1.0) is AuthResult.BAD_NONCE


def test_nonce_from_another_secret_or_realm_is_bad() -> None:
    server = make_server()
    for other in (
        DigestServer(REALM, b"another secret of 32 bytes......"),
        DigestServer("other.example.com", SECRET),
    ):
        nonce = other.challenge(0.0)[0].nonce
        assert verify(server, answer([digest(nonce)]), 1.0) is AuthResult.BAD_NONCE


def test_realm_mismatch() -> None:
    server = make_server()
    creds = dataclasses.replace(login(server, 0.0), realm="evil.example.com")
    result = verify(server, creds, 1.0)
    assert result is AuthResult.REALM_MISMATCH


def test_unsupported_algorithm() -> None:
    md5_server = make_server(algorithms=("MD5",))
    creds = login(md5_server, 0.0)
    sha_only = make_server(algorithms=("SHA-256",))
    result = verify(sha_only, creds, 1.0)
    assert result is AuthResult.UNSUPPORTED_ALGORITHM


@pytest.mark.parametrize(
    "change",
    [
        {"scheme": "Basic"},
        {"qop": "auth-conf"},
        {"cnonce": None},
        {"nc": None},
    ],
)
def test_malformed_credentials(change: dict[str, object]) -> None:
    server = make_server()
    creds = dataclasses.replace(login(server, 0.0), **change)  # type: ignore[arg-type]
    result = verify(server, creds, 1.0)
    assert result is AuthResult.MALFORMED


def test_sess_without_cnonce_is_malformed() -> None:
    server = make_server(algorithms=("MD5-sess",))
    creds = dataclasses.replace(login(server, 0.0), qop=None, nc=None, cnonce=None)
    result = verify(server, creds, 1.0)
    assert result is AuthResult.MALFORMED


# --- replay protection --------------------------------------------------------------------------


def _with_nc(creds: Credentials, nc: int) -> Credentials:
    return answer([digest(creds.nonce, creds.algorithm)], nc=nc)


def test_replayed_nc_is_rejected() -> None:
    server = make_server()
    creds = login(server, 0.0)
    assert verify(server, creds, 1.0) is AuthResult.OK
    assert verify(server, creds, 2.0) is AuthResult.REPLAY


def test_increasing_nc_is_accepted_and_lower_nc_is_replay() -> None:
    server = make_server()
    first = login(server, 0.0)
    for nc in (1, 2, 5, 6):
        creds = _with_nc(first, nc)
        assert verify(server, creds, nc) is AuthResult.OK
    for nc in (3, 6):
        creds = _with_nc(first, nc)
        assert verify(server, creds, 10.0) is AuthResult.REPLAY


def test_nc_window_accepts_out_of_order_counts_once() -> None:
    server = make_server(nc_window=4)
    first = login(server, 0.0)

    def check(nc: int) -> AuthResult:
        return verify(server, _with_nc(first, nc), 1.0)

    assert check(3) is AuthResult.OK
    assert check(1) is AuthResult.OK
    assert check(2) is AuthResult.OK
    assert check(2) is AuthResult.REPLAY
    assert check(3) is AuthResult.REPLAY
    assert check(9) is AuthResult.OK
    assert check(5) is AuthResult.REPLAY  # 4 below the highest: outside the window
    assert check(6) is AuthResult.OK
    assert check(0xFFFFFFFF) is AuthResult.OK  # a huge jump is cheap
    assert check(0xFFFFFFFE) is AuthResult.OK


def test_rfc2069_no_qop_nonce_is_good_once() -> None:
    server = make_server(algorithms=("MD5",))
    nonce = server.challenge(0.0)[0].nonce
    legacy = answer([digest(nonce, "MD5", qop=())])
    assert legacy.qop is None
    assert legacy.nc is None
    assert legacy.cnonce is None
    header = str(legacy)
    assert "qop" not in header
    assert "nc=" not in header
    legacy = parse_credentials(header)
    assert verify(server, legacy, 1.0) is AuthResult.OK
    assert verify(server, legacy, 2.0) is AuthResult.REPLAY


def test_no_qop_after_qop_on_the_same_nonce_is_replay() -> None:
    server = make_server(algorithms=("MD5",))
    creds = login(server, 0.0)
    assert verify(server, creds, 1.0) is AuthResult.OK
    legacy = answer([digest(creds.nonce, "MD5", qop=())])
    assert verify(server, legacy, 2.0) is AuthResult.REPLAY


def test_replay_table_is_pruned_when_nonces_expire() -> None:
    server = make_server(nonce_lifetime=30.0)
    assert server.next_deadline() is None
    creds = login(server, 0.0)
    assert verify(server, creds, 1.0) is AuthResult.OK
    assert server.next_deadline() == pytest.approx(30.0)
    server.handle_timeout(29.999)
    assert server.next_deadline() == pytest.approx(30.0)
    server.handle_timeout(30.0)
    assert server.next_deadline() is None
    # Forgotten, but the nonce is expired: the replay is stale, never OK.
    assert verify(server, creds, 30.0) is AuthResult.STALE


def test_verify_prunes_lazily() -> None:
    server = make_server(nonce_lifetime=30.0)
    old = login(server, 0.0)
    assert verify(server, old, 1.0) is AuthResult.OK
    new = login(server, 100.0)
    assert verify(server, new, 101.0) is AuthResult.OK
    assert server.next_deadline() == pytest.approx(130.0)


def test_replay_table_cap_evicts_oldest_and_never_reopens_a_replay() -> None:
    server = make_server(max_nonces=2)
    logins = [login(server, float(t)) for t in (0, 1, 2)]
    for i, creds in enumerate(logins):
        result = server.verify(creds, method="REGISTER", password="secret", now=3.0 + i)
        assert result is AuthResult.OK
    assert server.next_deadline() == pytest.approx(301.0)  # the t=0 entry went
    # The evicted nonce's count is forgotten, so its replay is refused as stale.
    assert (
        server.verify(logins[0], method="REGISTER", password="secret", now=10.0) is AuthResult.STALE
    )
    assert (
        server.verify(logins[2], method="REGISTER", password="secret", now=10.0)
        is AuthResult.REPLAY
    )


# --- server: challenges and construction --------------------------------------------------------


def test_challenge_lists_algorithms_most_preferred_first_with_qop_auth() -> None:
    server = DigestServer(REALM, SECRET, algorithms=("SHA-512-256", "SHA-256", "md5"))
    challenges = server.challenge(42.0, opaque="abc")
    assert [c.algorithm for c in challenges] == ["SHA-512-256", "SHA-256", "MD5"]
    assert {c.nonce for c in challenges} == {challenges[0].nonce}
    for c in challenges:
        assert c.realm == REALM
        assert c.qop == ("auth",)
        assert c.opaque == "abc"
        assert c.stale is False
    assert str(challenges[2]) == (
        f'Digest realm="{REALM}", nonce="{challenges[0].nonce}", opaque="abc", '
        'algorithm=MD5, qop="auth"'
    )


def test_server_repr_hides_the_secret() -> None:
    server = make_server()
    text = repr(server)
    assert "secret=<hidden>" in text
    assert SECRET.decode() not in text
    assert repr(SECRET) not in text
    assert REALM in text


@pytest.mark.parametrize(
    "kwargs",
    [
        {"secret": b"short"},
        {"algorithms": ()},
        {"algorithms": ("SHA-999",)},
        {"nonce_lifetime": 0.0},
        {"nc_window": -1},
        {"max_nonces": 0},
    ],
)
def test_server_rejects_bad_configuration(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"realm": REALM, "secret": SECRET, **kwargs}
    with pytest.raises(LocalProtocolError):
        DigestServer(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize("now", [float("nan"), float("inf"), 1e300])
def test_server_rejects_unusable_clock_values(now: float) -> None:
    with pytest.raises(LocalProtocolError):
        make_server().challenge(now)


# --- client -------------------------------------------------------------------------------------


def test_answer_skips_unknown_schemes_and_algorithms() -> None:
    challenges = [
        parse_challenge("NoOneKnowsThisScheme opaque-data=here"),
        parse_challenge('Digest realm="r", nonce="n", algorithm=SHA-999, qop="auth"'),
        parse_challenge('Digest realm="r", nonce="n", algorithm=SHA-256, qop="auth-conf"'),
        parse_challenge('Digest realm="r", nonce="n", algorithm=MD5, qop="auth", opaque="o"'),
    ]
    creds = answer(challenges)
    assert creds.algorithm == "MD5"
    assert creds.opaque == "o"
    assert creds.nc == "00000001"
    assert creds.cnonce is not None
    assert len(creds.cnonce) == 16


def test_answer_without_usable_challenge_raises() -> None:
    with pytest.raises(AuthError, match="no usable digest challenge"):
        answer([parse_challenge("Basic realm=x")])
    with pytest.raises(AuthError, match="none"):
        answer([])


def test_answer_is_repeatable_with_seeded_ids() -> None:
    challenges = make_server().challenge(0.0)
    answers = [answer(challenges, nc=7) for _ in range(2)]
    assert answers[0] == answers[1]


def test_answer_formats_nc_as_eight_hex_digits() -> None:
    creds = answer(make_server().challenge(0.0), nc=255)
    assert creds.nc == "000000ff"
    assert "nc=000000ff" in str(creds)


def test_auth_int_when_only_auth_int_is_offered() -> None:
    server = make_server(algorithms=("SHA-256",))
    nonce = server.challenge(0.0)[0].nonce
    body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n"
    creds = answer([digest(nonce, qop=("auth-int",))], method="INVITE", body=body)
    assert creds.qop == "auth-int"
    ok = server.verify(creds, method="INVITE", password="secret", now=1.0, body=body)
    assert ok is AuthResult.OK
    creds2 = dataclasses.replace(creds, nc="00000002")
    tampered = server.verify(creds2, method="INVITE", password="secret", now=1.0, body=b"x")
    assert tampered is AuthResult.WRONG_RESPONSE


def test_answer_prefers_auth_over_auth_int() -> None:
    creds = answer([parse_challenge('Digest realm="r", nonce="n", qop="auth-int,auth"')])
    assert creds.qop == "auth"


def test_answer_rejects_out_of_range_nc() -> None:
    with pytest.raises(LocalProtocolError):
        answer(make_server().challenge(0.0), nc=0)


def test_client_counts_nc_up_on_the_same_nonce() -> None:
    server = make_server()
    client = DigestClient(username="alice", ids=SeededIds(0))
    assert client.next_credentials(password="secret", method="REGISTER", uri=URI) is None
    first = client.answer(server.challenge(0.0), password="secret", method="REGISTER", uri=URI)
    second = client.next_credentials(password="secret", method="REGISTER", uri=URI)
    assert second is not None
    assert (first.nc, second.nc) == ("00000001", "00000002")
    assert first.nonce == second.nonce
    assert first.cnonce != second.cnonce
    for creds in (first, second):
        assert verify(server, creds, 1.0) is AuthResult.OK
    again = client.answer(
        server.challenge(400.0, stale=True), password="secret", method="REGISTER", uri=URI
    )
    assert again.nc == "00000001"
    assert again.nonce != first.nonce
    assert "secret" not in repr(client)
    with pytest.raises(AuthError):
        client.answer([], password="secret", method="REGISTER", uri=URI)


# --- parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        'Digest realm="r", nonce="n", algorithm=SHA-256, qop="auth"',
        'digest realm="r",nonce="n",algorithm=SHA-256,qop="auth"',
        'DIGEST REALM="r" , NONCE = "n" ,\tAlgorithm = "sha-256" , QOP=auth',
        '  Digest\t realm = "r",,, nonce="n", algorithm=SHA-256, qop="auth",  ',
        'Digest nonce="n", qop=" auth ", algorithm=SHA-256, realm="r"',
    ],
)
def test_odd_but_legal_challenge_spellings(value: str) -> None:
    challenge = parse_challenge(value)
    assert challenge == Challenge(realm="r", nonce="n", algorithm="SHA-256", qop=("auth",))
    assert challenge.is_digest


def test_challenge_fields_and_extension_params() -> None:
    challenge = parse_challenge(
        'Digest realm="atlanta.com", domain="sip:ss1.carrier.com", qop="auth,auth-int", '
        'nonce="f84f1cec41e6cbe5aea9c8e88d359", opaque="", stale=FALSE, algorithm=MD5-SESS, '
        "charset=UTF-8, userhash=false"
    )
    assert challenge.realm == "atlanta.com"
    assert challenge.domain == "sip:ss1.carrier.com"
    assert challenge.qop == ("auth", "auth-int")
    assert challenge.opaque == ""
    assert challenge.stale is False
    assert challenge.algorithm == "MD5-sess"
    assert challenge.params == (("charset", "UTF-8"), ("userhash", "false"))


def test_stale_spellings() -> None:
    base = 'Digest realm="r", nonce="n", stale='
    assert parse_challenge(base + "TRUE").stale is True
    assert parse_challenge(base + '"true"').stale is True
    assert parse_challenge(base + "false").stale is False
    with pytest.raises(AuthError, match="stale"):
        parse_challenge(base + "maybe")


def test_absent_algorithm_means_md5() -> None:
    assert parse_challenge('Digest realm="r", nonce="n"').algorithm == "MD5"


def test_unknown_algorithm_is_kept_verbatim() -> None:
    assert parse_challenge('Digest realm="r", nonce="n", algorithm=SHA-999').algorithm == "SHA-999"


def test_quoted_string_escapes() -> None:
    challenge = parse_challenge(r'Digest realm="a \"quoted\" realm \\ here", nonce="n\,x"')
    assert challenge.realm == 'a "quoted" realm \\ here'
    assert challenge.nonce == "n,x"
    assert parse_challenge(str(challenge)) == challenge


def test_quoted_string_keeps_commas_and_equals() -> None:
    challenge = parse_challenge('Digest realm="a, b=c", nonce="x=="')
    assert challenge.realm == "a, b=c"
    assert challenge.nonce == "x=="


def test_utf8_username() -> None:
    creds = parse_credentials(
        'Digest username="Jäsøn Doe", realm="r", nonce="n", uri="sip:r", response="00"'
    )
    assert creds.username == "Jäsøn Doe"
    assert parse_credentials(str(creds)) == creds


def test_bare_unquoted_values_are_tolerated() -> None:
    challenge = parse_challenge("Digest realm=example.com, nonce=abc/def+ghi==")
    assert challenge.realm == "example.com"
    assert challenge.nonce == "abc/def+ghi=="


def test_credentials_fields() -> None:
    creds = parse_credentials(
        'Digest username="alice", realm="atlanta.com", nonce="84a4cc6f3082121f32b42a2187831a9e", '
        'uri="sip:alice@atlanta.com", response="7587245234b3434cc3412213e5f113a5", '
        'algorithm=MD5, cnonce="0a4f113b", opaque="op", qop=auth, nc=0000000A, foo="bar baz"'
    )
    assert creds == Credentials(
        username="alice",
        realm="atlanta.com",
        nonce="84a4cc6f3082121f32b42a2187831a9e",
        uri="sip:alice@atlanta.com",
        response="7587245234b3434cc3412213e5f113a5",
        algorithm="MD5",
        cnonce="0a4f113b",
        opaque="op",
        qop="auth",
        nc="0000000A",
        params=(("foo", "bar baz"),),
    )


def test_credentials_qop_may_be_quoted_by_sloppy_clients() -> None:
    creds = parse_credentials(
        'Digest username="a", realm="r", nonce="n", uri="u", response="0", qop="auth", '
        'nc=00000001, cnonce="c"'
    )
    assert creds.qop == "auth"


def test_unknown_scheme_keeps_its_params() -> None:
    challenge = parse_challenge("NoOneKnowsThisScheme opaque-data=here")
    assert challenge.scheme == "NoOneKnowsThisScheme"
    assert not challenge.is_digest
    assert challenge.params == (("opaque-data", "here"),)
    assert str(challenge) == "NoOneKnowsThisScheme opaque-data=here"
    creds = parse_credentials('Bearer realm="x y", scope=openid')
    assert creds.scheme == "Bearer"
    assert not creds.is_digest
    assert creds.params == (("realm", "x y"), ("scope", "openid"))
    assert parse_credentials(str(creds)) == creds


def test_unknown_scheme_with_token68() -> None:
    creds = parse_credentials("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
    assert creds.scheme == "Basic"
    assert creds.token68 == "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
    assert str(creds) == "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
    assert str(parse_challenge("Negotiate")) == "Negotiate"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "expected an auth scheme"),
        ('"Digest" realm="r"', "expected an auth scheme"),
        ('Digest, realm="r", nonce="n"', "expected a space after the scheme"),
        ('Digest nonce="n"', "missing param 'realm'"),
        ('Digest realm="r"', "missing param 'nonce'"),
        ("Digest", "missing param 'realm'"),
        ('Digest realm="r, nonce="n"', "param 'realm': expected ','"),
        ('Digest realm="unterminated', "param 'realm': unterminated quoted-string"),
        ('Digest realm="r", realm="s", nonce="n"', "param 'realm' appears twice"),
        ('Digest realm="r" nonce="n"', "param 'realm': expected ','"),
        ('Digest realm=, nonce="n"', "param 'realm': expected a token or quoted-string"),
        ('Digest realm="r", nonce=', "param 'nonce': expected a token or quoted-string"),
        ('Digest realm="r", nonce="n", =x', "expected a param name"),
        ('Digest realm="r", nonce', "param 'nonce': expected '='"),
        ('Digest realm="a\x00b", nonce="n"', "param 'realm': control character"),
        ('Digest realm="r", nonce="n", qop="auth int"', "param 'qop': expected a token"),
        ('Digest realm="r", nonce="n", algorithm="SHA 256"', "param 'algorithm'"),
    ],
)
def test_bad_challenges_name_the_problem(value: str, message: str) -> None:
    with pytest.raises(AuthError, match=message):
        parse_challenge(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('Digest realm="r", nonce="n", uri="u", response="0"', "missing param 'username'"),
        ('Digest username="a", realm="r", nonce="n", response="0"', "missing param 'uri'"),
        ('Digest username="a", realm="r", nonce="n", uri="u"', "missing param 'response'"),
        (
            'Digest username="a", realm="r", nonce="n", uri="u", response="0", qop=auth, '
            'cnonce="c"',
            "missing param 'nc'",
        ),
        (
            'Digest username="a", realm="r", nonce="n", uri="u", response="0", qop=auth, '
            "nc=00000001",
            "missing param 'cnonce'",
        ),
        (
            'Digest username="a", realm="r", nonce="n", uri="u", response="0", qop=auth, '
            'nc=1, cnonce="c"',
            "param 'nc': expected 8 hex digits",
        ),
        (
            'Digest username="a", realm="r", nonce="n", uri="u", response="0", qop=auth, '
            'nc=0000000g, cnonce="c"',
            "param 'nc'",
        ),
    ],
)
def test_bad_credentials_name_the_problem(value: str, message: str) -> None:
    with pytest.raises(AuthError, match=message):
        parse_credentials(value)


def test_objects_refuse_values_that_would_break_the_header_line() -> None:
    with pytest.raises(AuthError, match="realm"):
        Challenge(realm="a\r\nVia: evil", nonce="n")
    with pytest.raises(AuthError, match="username"):
        Credentials(username="a\nb")
    with pytest.raises(AuthError, match="nc"):
        Credentials(nc="1")
    with pytest.raises(AuthError, match="algorithm"):
        Challenge(algorithm="MD5, evil=1")


# --- serialisation ------------------------------------------------------------------------------


def test_challenge_serialisation_quotes_per_rfc2617() -> None:
    challenge = Challenge(
        realm="r",
        nonce="n",
        algorithm="SHA-256",
        qop=("auth", "auth-int"),
        opaque="o",
        domain="sip:a sip:b",
        stale=True,
        params=(("charset", "UTF-8"),),
    )
    assert str(challenge) == (
        'Digest realm="r", domain="sip:a sip:b", nonce="n", opaque="o", stale=true, '
        'algorithm=SHA-256, qop="auth,auth-int", charset=UTF-8'
    )
    assert parse_challenge(str(challenge)) == challenge


def test_credentials_serialisation_quotes_per_rfc2617() -> None:
    creds = Credentials(
        username="alice",
        realm="r",
        nonce="n",
        uri="sip:r",
        response="abc",
        algorithm="MD5",
        cnonce="c",
        opaque="o",
        qop="auth",
        nc="00000001",
    )
    assert str(creds) == (
        'Digest username="alice", realm="r", nonce="n", uri="sip:r", response="abc", '
        'algorithm=MD5, cnonce="c", opaque="o", qop=auth, nc=00000001'
    )
    assert parse_credentials(str(creds)) == creds


# --- properties ---------------------------------------------------------------------------------

_AUTHISH = st.text(alphabet='Digest realmnonc=",\\ \t-auth:/qp\x00\r\n0123456789AF', max_size=80)
_VALUE = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\x7f"),
    max_size=30,
)
_TOKEN = st.from_regex(r"[A-Za-z0-9\-.!%*_+`'~]{1,12}", fullmatch=True)


@given(st.text(max_size=200))
def test_parse_only_ever_raises_auth_error(text: str) -> None:
    for parse in (parse_challenge, parse_credentials):
        with contextlib.suppress(AuthError):
            parse(text)


@given(st.one_of(_AUTHISH, st.builds(lambda s: "Digest " + s, _AUTHISH)))
def test_parse_of_auth_like_text_only_ever_raises_auth_error(text: str) -> None:
    for parse in (parse_challenge, parse_credentials):
        try:
            parsed = parse(text)
        except AuthError:
            continue
        assert parse(str(parsed)) == parsed


@given(
    realm=_VALUE,
    nonce=_VALUE,
    opaque=st.none() | _VALUE,
    domain=st.none() | _VALUE,
    stale=st.booleans(),
    algorithm=st.sampled_from(ALGORITHMS),
    qop=st.lists(_TOKEN, max_size=3).map(tuple),
)
def test_challenge_serialisation_round_trips(
    realm: str,
    nonce: str,
    opaque: str | None,
    domain: str | None,
    stale: bool,
    algorithm: str,
    qop: tuple[str, ...],
) -> None:
    challenge = Challenge(
        realm=realm,
        nonce=nonce,
        opaque=opaque,
        domain=domain,
        stale=stale,
        algorithm=algorithm,
        qop=qop,
    )
    assert parse_challenge(str(challenge)) == challenge


@given(username=_VALUE, password=_VALUE, uri=_VALUE, algorithm=st.sampled_from(ALGORITHMS))
def test_any_user_round_trips_client_to_server(
    username: str, password: str, uri: str, algorithm: str
) -> None:
    server = make_server(algorithms=(algorithm,))
    creds = answer_challenge(
        server.challenge(0.0),
        username=username,
        password=password,
        method="REGISTER",
        uri=uri,
        ids=SeededIds(0),
    )
    parsed = parse_credentials(str(creds))
    assert parsed == creds
    assert server.verify(parsed, method="REGISTER", password=password, now=1.0) is AuthResult.OK
