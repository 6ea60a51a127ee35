"""README's three commands are what CI runs, and they work in a fresh clone and venv.

A newcomer types README's block to the letter: ``pip install -e '.[dev]'``,
``sipwake serve``, ``pytest``. CI (``.ci/run``) must run the same install and test
commands, character for character, or CI can pass while the README's command fails (it
did: ``pytest`` found no ``tests`` package where ``python -m pytest`` did).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import venv
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> dict[str, str]:
    """The commands of the README's "Install, run, test" block, keyed install/run/test."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Install, run, test", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "README: no ```sh block under 'Install, run, test'"
    commands = [
        line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()
    ]
    assert len(commands) == 3, f"README's block should hold three commands, has {commands}"
    return dict(zip(("install", "run", "test"), commands, strict=True))


def ci_lines() -> list[str]:
    return [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]


def test_readme_block_is_install_serve_test() -> None:
    commands = readme_commands()
    assert commands["install"].startswith("pip install")
    assert commands["run"] == "sipwake serve"
    assert commands["test"].split()[0] == "pytest"


@pytest.mark.parametrize("which", ["install", "test"])
def test_ci_runs_the_readme_command_character_for_character(which: str) -> None:
    command = readme_commands()[which]
    assert command in ci_lines(), f".ci/run does not run README's {which} command {command!r}"


def test_the_readme_test_command_is_the_last_thing_ci_runs() -> None:
    """CI's verdict is the README test command's exit status (``set -e`` before it)."""
    lines = [line for line in ci_lines() if line and not line.startswith("#")]
    assert "set -euo pipefail" in lines
    assert lines[-1] == readme_commands()["test"]


def test_readme_webhook_verifier_accepts_sipwake_signatures_and_refuses_others() -> None:
    """The receiver code README gives (section Webhook) checks what sipwake signs."""
    from sipwake.push.base import PushRequest
    from sipwake.push.webhook import SIGNATURE_HEADER, build_webhook_request
    from sipwake.sip.pushtarget import PushTarget

    section = (ROOT / "README.md").read_text().split("### Webhook", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "README's Webhook section has no python block"
    scope: dict[str, Any] = {}
    exec(compile(code.group(1), "README.md (Webhook)", "exec"), scope)
    verify = scope["verify"]
    request = PushRequest(
        kind="call",
        target=PushTarget(provider="apns", prid="ab" * 32, param="T.org.lab.phone.voip"),
        call_id="c1",
        caller="Alice",
    )
    now = time.time()
    signed = build_webhook_request(request, "s3cret", wall_now=now)
    header = signed.headers[SIGNATURE_HEADER.lower()]
    assert verify(b"s3cret", header, signed.body)
    assert not verify(b"other", header, signed.body)
    assert not verify(b"s3cret", header, signed.body + b" ")
    old = build_webhook_request(request, "s3cret", wall_now=now - 3600)
    assert not verify(b"s3cret", old.headers[SIGNATURE_HEADER.lower()], old.body)


@pytest.mark.timeout(900)
def test_fresh_clone_and_venv_follow_the_readme(tmp_path: Path) -> None:
    """Clone the committed tree, make a new venv, run README's install command in it and
    collect the whole suite with README's test command: no import error anywhere."""
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing to clone")
    clone = tmp_path / "clone"
    subprocess.run([git, "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bindir = env_dir / "bin"
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(env_dir),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    commands = readme_commands()
    install = subprocess.run(
        commands["install"],
        shell=True,
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    assert (bindir / "sipwake").exists(), "README's install did not install the sipwake command"
    assert (bindir / "pytest").exists(), "README's install did not install pytest"
    collect = subprocess.run(
        f"{commands['test']} --collect-only -q",
        shell=True,
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = collect.stdout + collect.stderr
    assert collect.returncode == 0, output[-3000:]
    summary = output.strip().splitlines()[-1]
    assert re.match(r"\d+ tests collected", summary), summary
    assert "error" not in summary
    # ``pytest`` collects what ``python -m pytest`` (the checkout on sys.path) collects.
    module = subprocess.run(
        [str(bindir / "python"), "-m", "pytest", "--collect-only", "-q"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert module.returncode == 0, (module.stdout + module.stderr)[-3000:]
    assert summary.split()[0] == module.stdout.strip().splitlines()[-1].split()[0]
