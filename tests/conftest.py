from __future__ import annotations

import pathlib

import pytest

CORPORA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "corpora"


@pytest.fixture(scope="session")
def corpora() -> pathlib.Path:
    if not CORPORA.is_dir():
        pytest.skip(f"torture corpora not found at {CORPORA} (shared/ must sit beside the clone)")
    return CORPORA
