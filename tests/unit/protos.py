"""The PROTOS c07-sip test cases' placeholders, filled the same way by every test."""

from __future__ import annotations

PLACEHOLDERS = {
    b"<To>": b"bob@127.0.0.1",
    b"<From>": b"protos@127.0.0.1",
    b"<From-Address>": b"127.0.0.1",
    b"<From-IP>": b"127.0.0.1",
    b"<Local-Port>": b"5061",
    b"<Branch-ID>": b"42",
    b"<Call-ID>": b"protos-42",
    b"<CSeq>": b"1",
    b"<Teardown-Method>": b"CANCEL",
}


def fill(template: bytes) -> bytes:
    """``template`` with every placeholder but ``<Content-Length>`` filled in."""
    for key, value in PLACEHOLDERS.items():
        template = template.replace(key, value)
    return template
