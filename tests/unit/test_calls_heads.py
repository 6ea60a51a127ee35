"""What a call record keeps of a message: its raw head, bounded, secrets hidden.

The recorder keeps heads as bytes and parses them when a call is read. What lands in
a store must never hold a credential (RFC 3261 §22: Authorization and
Proxy-Authorization carry a digest response an attacker can try to crack offline)
nor a push token in clear (RFC 8599 §13: a token lets anyone who has it wake the
device), whatever the case of the header or parameter names (RFC 3261 §7.3.1,
§19.1.4), folded or not.
"""

from __future__ import annotations

import pytest

from sipwake.calls import CallRecorder
from sipwake.calls.heads import MAX_HEAD, clip_head, readable, scrub
from sipwake.calls.records import CallEntry, CallMessageRecord
from sipwake.proxy.wake import CallEvent
from sipwake.store import MemoryStore

TOKEN = "f00dfeed" * 8  # an APNs device token: 64 hex digits
FCM = "cXk2:APA91bH-secret_registration_token"
RESPONSE = "6629fae49393a05397450978507c4ef1"
CALLER = "udp:10.0.0.9:5060"
PHONE = "udp:10.0.0.5:5062"


def head(first_line: str, *headers: str, call_id: str = "c1") -> bytes:
    lines = [first_line, f"Call-ID: {call_id}", *headers, "Content-Length: 4"]
    return ("\r\n".join(lines) + "\r\n\r\nv=0\n").encode()


class Capture:
    """A ``CallLog`` that keeps the entries exactly as the recorder hands them over."""

    def __init__(self) -> None:
        self.entries: list[CallEntry] = []

    def record_call_entries(self, entries: list[CallEntry]) -> None:
        self.entries.extend(entries)


def stored_heads(*messages: tuple[str, str, bytes]) -> list[bytes]:
    """The heads the recorder hands to its store for one call of ``messages``."""
    log = Capture()
    rec = CallRecorder(log, wall_offset=0.0)  # type: ignore[arg-type]
    for i, (direction, peer, data) in enumerate(messages):
        rec.message_bytes(direction, peer, data, 1.0 + i)  # type: ignore[arg-type]
        if i == 0:
            rec.call_event(
                CallEvent(call_ref="r1", aor="sip:alice@lab.test", at=1.0, step="received")
            )
    heads = [e.head for e in log.entries if isinstance(e, CallMessageRecord)]
    assert len(heads) == len(messages)
    return heads


@pytest.mark.parametrize(
    "line",
    [
        f'Proxy-Authorization: Digest username="bob", realm="lab.test", response="{RESPONSE}"',
        f'Authorization: Digest username="bob", response="{RESPONSE}"',
        f'proxy-authorization:Digest username="bob",response="{RESPONSE}"',
        f'AUTHORIZATION : Digest username="bob",\r\n response="{RESPONSE}"',  # folded
        f"Sipwake-Push-Key: {RESPONSE}",
    ],
)
def test_a_stored_head_holds_no_credential(line: str) -> None:
    invite = head("INVITE sip:alice@lab.test SIP/2.0", "From: <sip:bob@lab.test>;tag=b1", line)
    (stored,) = stored_heads(("in", CALLER, invite))
    assert RESPONSE.encode() not in stored
    assert b"***" in stored
    assert b"From: <sip:bob@lab.test>;tag=b1" in stored  # the rest is kept as it came


@pytest.mark.parametrize(
    ("where", "param"),
    [
        ("Contact: <sip:alice@10.0.0.5:5062;{}>", f"pn-provider=apns;pn-prid={TOKEN}"),
        ("Contact: <sip:alice@10.0.0.5:5062;{}>", f"PN-PRID={TOKEN};pn-provider=apns"),
        ("m: <sip:alice@10.0.0.5;{}>;expires=600", f"pn-tok={TOKEN}"),  # Linphone, compact
        ("Contact: <sip:alice@10.0.0.5;{}>", f"pn-provider=fcm;pn-prid={FCM}"),
    ],
)
def test_a_stored_head_holds_no_push_token(where: str, param: str) -> None:
    ok = head("SIP/2.0 200 OK", "CSeq: 1 INVITE", where.format(param))
    forwarded = head(f"INVITE sip:alice@10.0.0.5:5062;{param} SIP/2.0", "CSeq: 1 INVITE")
    invite = head("INVITE sip:alice@lab.test SIP/2.0", "CSeq: 1 INVITE")
    stored = stored_heads(("in", CALLER, invite), ("out", PHONE, forwarded), ("in", PHONE, ok))
    secret = (TOKEN if TOKEN in param else FCM).encode()
    for kept in stored[1:]:
        assert secret not in kept
        assert secret[:4] + "…".encode() + secret[-4:] in kept  # masked as logs print it


def test_a_stored_head_is_bounded_and_never_holds_the_body() -> None:
    long = head("INVITE sip:alice@lab.test SIP/2.0", *(f"X-Pad-{i}: {'p' * 90}" for i in range(40)))
    with_body = head("INVITE sip:alice@lab.test SIP/2.0", call_id="c2")
    (kept,) = stored_heads(("in", CALLER, long))
    assert len(long) > 2 * MAX_HEAD
    assert kept == long[:MAX_HEAD]
    (kept,) = stored_heads(("in", CALLER, with_body))
    assert kept.endswith(b"Content-Length: 4")
    assert b"v=0" not in kept


def test_a_cut_head_leaves_no_token_behind() -> None:
    # The cut falls inside the token: what is left of it is masked too (its first and
    # last four characters, as a whole token's mask shows).
    prefix = b"INVITE sip:a@lab SIP/2.0\r\nCall-ID: c1\r\nContact: <sip:a@h;pn-prid="
    data = prefix + b"a" * (MAX_HEAD - len(prefix) - 6) + b"b" * 64 + b">\r\n\r\n"
    kept = clip_head(data, data.find(b"\r\n\r\n"))
    assert len(kept) <= MAX_HEAD
    assert kept.endswith("pn-prid=aaaa…bbbb".encode())


def test_reading_a_head_gives_the_first_line_and_the_fields_that_explain_a_call() -> None:
    data = head(
        "BYE sip:alice@10.0.0.5 SIP/2.0",
        "f: <sip:bob@lab.test>;tag=b1",
        f'Authorization: Digest response="{RESPONSE}"',
        "CSeq: 2 BYE",
        "Reason: Q.850;cause=16",
    )
    message = CallMessageRecord(
        ref="r1",
        seq=1,
        wall=1.0,
        direction="in",
        peer=CALLER,
        first_line="",
        call_id="c1",
        head=clip_head(data, data.find(b"\r\n\r\n")),
    )
    read = readable(message)
    assert read.first_line == "BYE sip:alice@10.0.0.5 SIP/2.0"
    assert read.headers == (
        ("From", "<sip:bob@lab.test>;tag=b1"),
        ("CSeq", "2 BYE"),
        ("Reason", "Q.850;cause=16"),
    )
    assert read.head == b""
    assert readable(read) is read


def test_scrub_leaves_a_head_without_secrets_as_it_was() -> None:
    plain = head("SIP/2.0 180 Ringing", "CSeq: 1 INVITE", "Contact: <sip:a@10.0.0.5>")
    assert scrub(plain) == plain


def test_a_memory_store_reads_the_recorded_heads() -> None:
    store = MemoryStore()
    rec = CallRecorder(store, wall_offset=0.0)
    rec.message_bytes(
        "in", CALLER, head("INVITE sip:alice@lab.test SIP/2.0", "CSeq: 1 INVITE"), 1.0
    )
    rec.call_event(CallEvent(call_ref="r1", aor="sip:alice@lab.test", at=1.0, step="received"))
    record = store.call("r1")
    assert record is not None
    (invite,) = record.messages
    assert (invite.first_line, invite.headers, invite.head) == (
        "INVITE sip:alice@lab.test SIP/2.0",
        (("CSeq", "1 INVITE"),),
        b"",
    )
