"""The core compiled by mypyc (``SIPWAKE_COMPILE=1 pip install .``) behaves as the source.

The core is built into a temporary directory (bench/compiled.py, as setup.py builds it)
and the unit tests, the SIPp interop tests and the ``sipwake serve`` tests run again in a
child pytest with that directory first on the path, so every import of the core (and the
``sipwake serve`` subprocesses) takes the C extensions.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench.compiled import ROOT, build_compiled, missing_tools

MISSING = missing_tools()
#: The build may take up to ``BUILD_TIMEOUT_S`` on a small machine (about 5 minutes on 2
#: busy cores) and the child test run up to ``RUN_TIMEOUT_S``: the suite-wide 120 s
#: pytest-timeout would kill the build, which counts as the first test's setup.
BUILD_TIMEOUT_S = 900
RUN_TIMEOUT_S = 900
pytestmark = [
    pytest.mark.skipif(MISSING is not None, reason=f"cannot compile: {MISSING}"),
    pytest.mark.timeout(BUILD_TIMEOUT_S + RUN_TIMEOUT_S + 60),
]

#: Against the compiled core: every unit test, real SIPp calls through the proxy,
#: ``sipwake serve`` as a subprocess (restart, kill -9, trace masking), and the attacks
#: of tests/security.
SUITES = (
    "tests/unit",
    "tests/interop/test_sipp.py",
    "tests/integration/test_cli.py",
    "tests/integration/test_server.py",
    "tests/integration/test_group_commit.py",
    "tests/integration/test_transport.py",
    "tests/integration/test_flows.py",
    "tests/integration/test_linger_serve.py",
    "tests/security",
)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment under which Python imports the compiled core first."""
    dest = build_compiled(tmp_path_factory.mktemp("compiled"), timeout=BUILD_TIMEOUT_S)
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(dest), str(ROOT)]),
        "PYTHONSAFEPATH": "1",  # not the current directory's (interpreted) sipwake first
    }


def test_the_core_is_built_as_c_extensions(compiled: dict[str, str]) -> None:
    probe = (
        "import sipwake.node, sipwake.sip.parser, sipwake.transaction.layer, "
        "sipwake.registrar.registrar, sipwake.proxy.core, sipwake.transport.driver, "
        "sipwake.transport.udp, sipwake.sip.grammar as g; "
        "print(g.COMPILED, *(m.__file__.rsplit('.', 1)[-1] for m in (sipwake.node, "
        "sipwake.sip.parser, sipwake.transaction.layer, sipwake.registrar.registrar, "
        "sipwake.proxy.core, sipwake.transport.driver, sipwake.transport.udp)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env=compiled,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert out == ["True", "so", "so", "so", "so", "so", "so", "so"]


def test_the_compiled_core_passes_the_tests(compiled: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *SUITES],
        cwd=ROOT,
        env=compiled,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, tail
    summary = proc.stdout.strip().splitlines()[-1]
    assert " passed" in summary
    assert "failed" not in summary
    assert "error" not in summary
    assert int(summary.split(" passed")[0].split()[-1]) > 1000, summary
