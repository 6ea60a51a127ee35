"""Build hook: ``SIPWAKE_COMPILE=1 pip install .`` compiles the sans-IO core with mypyc.

Everything else about the package is in pyproject.toml. Without the variable (the default,
and what ``pip install -e`` is for) sipwake is pure Python. Compiled, the same source
runs as C extension modules: a quarter to a half less CPU per message (README, "Speed").
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent

#: The modules every message goes through: parser, transactions, registrar, node, proxy,
#: presence, and the driver and UDP transport around them (a third of the time per
#: REGISTER was theirs). The stream transports and push clients stay interpreted.
COMPILED = (
    "sipwake/sip",
    "sipwake/transaction",
    "sipwake/registrar",
    "sipwake/proxy",
    "sipwake/presence",
)
COMPILED_FILES = (
    "sipwake/node.py",
    "sipwake/ids.py",
    "sipwake/overload.py",
    "sipwake/frozen.py",
    "sipwake/transport/udp.py",
    "sipwake/transport/driver.py",
    "sipwake/transport/common.py",
    "sipwake/transport/base.py",
)


def compiled_sources() -> list[str]:
    files = [str(p.relative_to(HERE)) for d in COMPILED for p in sorted((HERE / d).glob("*.py"))]
    return files + list(COMPILED_FILES)


def ext_modules() -> list[object]:
    wanted = os.environ.get("SIPWAKE_COMPILE", "").strip().lower()
    if wanted in ("", "0", "no", "false"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        raise SystemExit(
            "SIPWAKE_COMPILE=1 needs mypyc where the build runs: install sipwake first "
            "(pip install -e '.[dev]', which brings mypy), then "
            "SIPWAKE_COMPILE=1 pip install --no-build-isolation --no-deps ."
        ) from None

    return list(mypycify(compiled_sources(), opt_level="3"))


setup(ext_modules=ext_modules())
