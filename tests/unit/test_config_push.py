"""The ``push.apns`` section: provider-token auth or certificate auth, errors with file,
line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipwake.config import Config, load_config
from sipwake.errors import ConfigError


def _load(tmp_path: Path, text: str) -> Config | ConfigError:
    path = tmp_path / "lab.yaml"
    path.write_text(text)
    try:
        return load_config(path)
    except ConfigError as exc:
        return exc


def load_config_text(tmp_path: Path, text: str) -> Config:
    result = _load(tmp_path, text)
    assert not isinstance(result, ConfigError), result
    return result


def _error(tmp_path: Path, text: str) -> str:
    result = _load(tmp_path, text)
    assert isinstance(result, ConfigError), result
    return str(result)


def test_token_auth_and_certificate_auth_both_load(tmp_path: Path) -> None:
    token = load_config_text(
        tmp_path,
        "push:\n  apns:\n    team_id: T\n    key_id: K\n    key_file: k.p8\n"
        "    bundle_id: org.lab.phone\n",
    )
    assert token.push.apns is not None
    assert not token.push.apns.uses_certificate
    cert = load_config_text(
        tmp_path,
        "push:\n  apns:\n    cert_file: voip.pem\n    cert_key_file: voip.key\n"
        "    bundle_id: org.lab.phone\n",
    )
    assert cert.push.apns is not None
    assert cert.push.apns.uses_certificate
    assert cert.push.apns.team_id is None


def test_token_field_beside_a_certificate_is_named_with_its_line(tmp_path: Path) -> None:
    message = _error(
        tmp_path,
        "push:\n  apns:\n    cert_file: voip.pem\n    bundle_id: org.lab.phone\n    key_id: K\n",
    )
    assert message.startswith(f"{tmp_path / 'lab.yaml'}:5: push.apns.key_id:")
    assert "not both" in message


def test_missing_token_field_without_certificate_is_named(tmp_path: Path) -> None:
    message = _error(
        tmp_path, "push:\n  apns:\n    team_id: T\n    key_id: K\n    bundle_id: org.lab.phone\n"
    )
    assert ":2: push.apns.key_file:" in message
    assert "cert_file" in message


def test_certificate_key_without_certificate_is_named(tmp_path: Path) -> None:
    message = _error(
        tmp_path, "push:\n  apns:\n    bundle_id: org.lab.phone\n    cert_key_file: voip.key\n"
    )
    assert ":4: push.apns.cert_key_file:" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("calls:\n  preset: innovaphone\n", True),
        ("calls:\n  encrypt_push: true\n", True),
        ("calls:\n  preset: innovaphone\n  encrypt_push: false\n", False),
        ("{}\n", False),
    ],
)
def test_encrypt_push_setting_reaches_the_call_plan(
    tmp_path: Path, text: str, expected: bool
) -> None:
    config = load_config_text(tmp_path, text)
    assert config.call_plan("alice").encrypt_push is expected


def test_encrypt_push_per_user_override(tmp_path: Path) -> None:
    config = load_config_text(
        tmp_path,
        "calls:\n  encrypt_push: true\nusers:\n  alice:\n    password: a\n"
        "    encrypt_push: false\n  bob:\n    password: b\n",
    )
    assert config.call_plan("alice").encrypt_push is False
    assert config.call_plan("bob").encrypt_push is True
