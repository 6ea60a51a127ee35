"""The APNs provider token cache: minted once, shared, refreshed on wall time (§3.3)."""

from __future__ import annotations

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sipwake.errors import PushError
from sipwake.push.apns import ProviderToken

T0 = 1_800_000_000.0


@pytest.fixture(scope="module")
def key_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _token(key_pem: bytes, **kw: float) -> ProviderToken:
    return ProviderToken(team_id="TEAM123456", key_id="KEY1234567", private_key=key_pem, **kw)


def test_token_is_es256_with_kid_iss_iat(key_pem: bytes) -> None:
    token = _token(key_pem).get(T0 + 0.7)
    header = jwt.get_unverified_header(token)
    assert (header["alg"], header["kid"]) == ("ES256", "KEY1234567")
    public = serialization.load_pem_private_key(key_pem, None).public_key()
    claims = jwt.decode(token, public, algorithms=["ES256"], options={"verify_iat": False})  # type: ignore[arg-type]
    assert claims == {"iss": "TEAM123456", "iat": int(T0)}


def test_cached_until_refresh_age(key_pem: bytes) -> None:
    cache = _token(key_pem)
    first = cache.get(T0)
    assert cache.get(T0 + 49 * 60) == first
    assert cache.minted == 1
    second = cache.get(T0 + 50 * 60)
    assert second != first
    assert cache.minted == 2
    assert cache.get(T0 + 99 * 60) == second


def test_expire_respects_the_20_minute_floor(key_pem: bytes) -> None:
    cache = _token(key_pem)
    first = cache.get(T0)
    assert cache.expire(T0 + 19 * 60) is False
    assert cache.get(T0 + 19 * 60) == first
    assert cache.expire(T0 + 20 * 60) is True
    assert cache.get(T0 + 20 * 60) != first


@pytest.mark.parametrize("refresh", [60.0, 19 * 60.0, 60 * 60.0])
def test_refresh_outside_apple_window_refused(key_pem: bytes, refresh: float) -> None:
    with pytest.raises(ValueError, match="refresh_after_s"):
        _token(key_pem, refresh_after_s=refresh)


def test_bad_key_raises_push_error_without_the_key() -> None:
    secret = "-----BEGIN PRIVATE KEY-----\nTOTALLYSECRETKEYMATERIAL\n-----END PRIVATE KEY-----\n"
    cache = ProviderToken(team_id="T", key_id="K", private_key=secret)
    with pytest.raises(PushError, match="cannot sign") as info:
        cache.get(T0)
    assert "TOTALLYSECRET" not in str(info.value)
    assert info.value.retryable is False
    assert "TOTALLYSECRET" not in repr(cache)
