"""Build sipwake with its core compiled by mypyc into a directory of its own.

    python bench/compiled.py DIR   # then: PYTHONSAFEPATH=1 PYTHONPATH=DIR python -m sipwake serve

What ``SIPWAKE_COMPILE=1 pip install .`` installs, without touching the installed
sipwake: the source is copied to DIR and the core's modules are built there, in place,
as C extensions (which Python imports in preference to the ``.py`` beside them).
``bench_proxy.py --compiled`` and tests/integration/test_compiled.py use it.
Needs a C compiler, Python's headers and mypy (``pip install -e '.[dev]'``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def missing_tools() -> str | None:
    """Why the core cannot be compiled here, or None."""
    if shutil.which((sysconfig.get_config_var("CC") or "cc").split()[0]) is None:
        return "no C compiler (apt-get install gcc)"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        return "no Python headers (apt-get install python3-dev)"
    try:
        import mypyc.build  # noqa: F401
    except ImportError:
        return "no mypyc (pip install mypy)"
    return None


def build_compiled(dest: Path, *, timeout: float = 900) -> Path:
    """Copy the source to ``dest`` and compile the core in place; returns ``dest``, the
    directory to put first on ``PYTHONPATH``. Raises ``RuntimeError`` with the compiler's
    output when the build fails."""
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.pyc")
    shutil.copytree(ROOT / "sipwake", dest / "sipwake", ignore=ignore, dirs_exist_ok=True)
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    jobs = str(os.cpu_count() or 1)
    proc = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace", "-j", jobs],
        cwd=dest,
        env={**os.environ, "SIPWAKE_COMPILE": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"compiling the core failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    return dest


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    reason = missing_tools()
    if reason is not None:
        sys.exit(f"cannot compile the core: {reason}")
    dest = build_compiled(Path(sys.argv[1]).resolve())
    print(f"compiled: PYTHONSAFEPATH=1 PYTHONPATH={dest} python -m sipwake serve")


if __name__ == "__main__":
    main()
