"""Transaction keys: how messages are matched to transactions (RFC 3261 §17.1.3, §17.2.3).

A client transaction is found by the top Via ``branch`` (which we generated)
and the CSeq method: a CANCEL shares its INVITE's branch but not its key.

A server transaction is found by the top Via ``branch``, its sent-by and the
request method, where an ACK looks for the INVITE's transaction. When the
branch lacks the RFC 3261 magic cookie the request comes from an RFC 2543
element and the key is built from the Request-URI, Call-ID, From tag, CSeq
number and top Via instead; the To tag (of the request, or for an ACK of the
response the transaction sent) is compared by the layer after the lookup,
since it is not known when the transaction is created.

``top_branch`` reads the top Via's branch. Most Vias have one plain shape
(``SIP/2.0/UDP host:port;branch=z9hG4bK…;rport``: the branch first, then
parameters of token characters); on such a value ``parse_via`` cannot fail and
finds the same branch (a unit test holds the two to agree), so the branch is
taken from one regex match instead of building the ``Via``. Any other value
goes through ``message.top_via``, which parses it, caches it and raises
``SipParseError`` if it is malformed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sipwake.frozen import interpreted_init
from sipwake.ids import BRANCH_MAGIC
from sipwake.sip.grammar import HOST, PORT, TOKEN, TOKEN_CHARS
from sipwake.sip.message import Request, Response

__all__ = [
    "ClientKey",
    "LegacyServerKey",
    "ServerKey",
    "ServerTransactionKey",
    "TransactionKey",
    "client_key",
    "server_key",
    "top_branch",
]

#: The plain shape of a Via value: a subset of what ``parse_via`` accepts.
_PLAIN_VIA = re.compile(
    rf"SIP/2\.0/{TOKEN} {HOST}(?::{PORT})?;branch=({TOKEN})(?:;{TOKEN}(?:=[{TOKEN_CHARS}:]++)?)*+"
)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class ClientKey:
    """A client transaction: our branch and the request method (RFC 3261 §17.1.3)."""

    branch: str
    method: str

    def __init__(self, *, branch: str, method: str) -> None:
        self.branch = branch  # type: ignore[misc]
        self.method = method  # type: ignore[misc]

    def __hash__(self) -> int:  # the generated one's value, compiled with the core
        return hash((self.branch, self.method))


interpreted_init(ClientKey)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class ServerKey:
    """A server transaction for an RFC 3261 request: branch, sent-by, method (§17.2.3)."""

    branch: str
    sent_by: tuple[str, int | None]
    method: str

    def __init__(self, *, branch: str, sent_by: tuple[str, int | None], method: str) -> None:
        self.branch = branch  # type: ignore[misc]
        self.sent_by = sent_by  # type: ignore[misc]
        self.method = method  # type: ignore[misc]

    def __hash__(self) -> int:  # the generated one's value, compiled with the core
        return hash((self.branch, self.sent_by, self.method))


interpreted_init(ServerKey)


@dataclass(frozen=True, slots=True, kw_only=True)
class LegacyServerKey:
    """A server transaction for an RFC 2543 request (no magic cookie, §17.2.3)."""

    request_uri: str
    call_id: str
    from_tag: str | None
    cseq: int
    method: str
    top_via: str


ServerTransactionKey = ServerKey | LegacyServerKey
TransactionKey = ClientKey | ServerKey | LegacyServerKey


def top_branch(message: Request | Response) -> str | None:
    """The top Via's ``branch`` parameter, or ``None`` if it has none.

    Raises ``SipParseError`` when the top Via is missing or malformed.
    """
    raw = message.headers.get("Via")
    if raw is not None:
        plain = _PLAIN_VIA.fullmatch(raw)
        if plain is not None:
            return plain.group(1)
    return message.top_via.branch


def client_key(request: Request) -> ClientKey:
    """The key of the client transaction that sends ``request`` (its top Via branch)."""
    branch = top_branch(request) or ""
    return ClientKey(branch=branch, method=request.cseq.method)


def server_key(request: Request, method: str | None = None) -> ServerTransactionKey:
    """The key of the server transaction ``request`` belongs to.

    ``method`` overrides the request's own: an ACK (and a CANCEL looking for
    what it cancels) is matched with ``"INVITE"``. An ACK defaults to INVITE.
    """
    via = request.top_via
    if method is None:
        method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch
    if branch is not None and branch.startswith(BRANCH_MAGIC):
        return ServerKey(branch=branch, sent_by=via.sent_by, method=method)
    return LegacyServerKey(
        request_uri=str(request.uri),
        call_id=request.call_id,
        from_tag=request.from_.tag,
        cseq=request.cseq.seq,
        method=method,
        top_via=str(via),
    )
