"""The edge policy: what sipwake lets through from a network it does not trust.

A server on ``udp:0.0.0.0:5060`` is scanned within minutes (SIPVicious ``svmap``,
``svwar``, then toll-fraud INVITEs to premium numbers through whatever forwards them).
These rules decide, for each request, what it takes to be served; the node applies them
in this order, after removing the Route entries that name sipwake (RFC 3261 §16.4):

1. **Loops** (§16.3 item 4). The branch of every request sipwake forwards ends with a
   *loop mark*: a keyed hash of what routes it (Request-URI, Route, Call-ID, From, To,
   CSeq, Proxy-Require). A request that carries a Via with the mark sipwake would give it now
   has been here before unchanged: 482 Loop Detected. (One that changed on the way, a
   *spiral*, has another mark and goes on.) A request whose next hop is one of sipwake's
   own listeners is refused 482 before it leaves.
2. **Dialogs.** sipwake's Record-Route carries a *dialog token*: a MAC (keyed BLAKE2s)
   with the node's secret over the Call-ID and the caller's tag. A request with a To-tag
   is in a dialog only if one of the Route entries naming sipwake carries the token for
   its Call-ID and either of its tags (the callee's requests have the tags swapped); it
   then follows its route set with no further question, as the dialog was admitted when
   it was set up (Kamailio's stock ``has_totag`` + ``loose_route``). A To-tag without that is not a
   dialog of ours: it may only go to one of our registered devices (a callee that did
   not copy our Record-Route into its 2xx, as SIPp's built-in UAS, RFC 3261 §12.1.1),
   judged as an out-of-dialog request to that user would be (rule 3); anything else
   gets 404 (an ACK is dropped). A CANCEL that matched no INVITE here gets 481 (never
   forwarded: it would be a relay).
3. **Out-of-dialog requests**, by who sends them and where they go (``OUT_OF_DIALOG``):
   the sender is *local* when the From host is one of our domains; the destination is
   *local* when, once our Route entries are removed, no Route is left and the
   Request-URI names our domain (a user of ours: their bindings are the next hops).

   ============  ===========  =============================================
   sender        destination  what it takes
   ============  ===========  =============================================
   local         local        credentials (407), whatever the method
   local         elsewhere    credentials (407): a relay for one of ours
   outside       local        nothing: calls from anywhere to our users
   outside       elsewhere    refused, 403 Relaying denied
   ============  ===========  =============================================

   ACK and CANCEL are never challenged (§22.1). REGISTER is the registrar's: every one
   is challenged (401) before its user is looked up. With ``open`` (``--open``, labs)
   nobody authenticates: users of our domain are taken at their word for requests to
   users of our domain, and nothing is relayed (``OPEN``).
4. **What a scanner can tell apart.** A REGISTER for a name we do not have is challenged
   like any other; wrong credentials get one answer (403, one reason phrase) whatever
   user they name, checked against a decoy password when the name is unknown; a request
   from outside for an unknown user of our domain is answered as one for a user of ours
   with no device (100 then 480 Temporarily Unavailable).
5. **Credentials.** The digest ``uri`` must be the Request-URI (RFC 2617 §3.2.2.5,
   compared as SIP URIs, §19.1.4); a replayed nonce-count gets a fresh challenge with
   ``stale=true``; Proxy-Authorization for our own realm is removed before the request
   is forwarded (§22.3).

Known limit: a dialog token proves sipwake admitted the dialog, not who sends within
it. Someone who called one of our users from outside holds a valid route set, and an
in-dialog request may name any Request-URI (as in Kamailio's and OpenSIPS's stock
configurations).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress

from sipwake.errors import AuthError, SipParseError
from sipwake.proxy.routing import LocalAddress, Locality
from sipwake.sip.auth import parse_credentials
from sipwake.sip.message import Request
from sipwake.sip.peer import Peer
from sipwake.sip.uri import SipUri, parse_uri

__all__ = [
    "NEVER_CHALLENGED",
    "OPEN",
    "OUT_OF_DIALOG",
    "Admission",
    "Destination",
    "EdgePolicy",
    "RouteCheck",
    "Sender",
    "digest_uri_matches",
]

#: The URI parameter of sipwake's Record-Route that carries the dialog token.
TOKEN_PARAM = "swd"
#: Separates a branch's random part from its loop mark.
_MARK_SEP = "."
_TOKEN_BYTES = 12
_MARK_BYTES = 6


class Sender(enum.Enum):
    LOCAL = "local"
    """The From host is one of our domains: a user of ours, if they can prove it."""
    OUTSIDE = "outside"


class Destination(enum.Enum):
    LOCAL = "local"
    """No Route left after ours, and a Request-URI in our domain."""
    ELSEWHERE = "elsewhere"


class Admission(enum.Enum):
    ROUTE = "route"
    """Serve it: look the user up and fork to their bindings."""
    AUTHENTICATE = "authenticate"
    """Serve it once the sender proved to be the local user they claim (407)."""
    REFUSE = "refuse"
    """403 Relaying denied."""


#: Out-of-dialog requests, by sender and destination.
OUT_OF_DIALOG: dict[tuple[Sender, Destination], Admission] = {
    (Sender.LOCAL, Destination.LOCAL): Admission.AUTHENTICATE,
    (Sender.LOCAL, Destination.ELSEWHERE): Admission.AUTHENTICATE,
    (Sender.OUTSIDE, Destination.LOCAL): Admission.ROUTE,
    (Sender.OUTSIDE, Destination.ELSEWHERE): Admission.REFUSE,
}

#: The same with ``open``: nobody authenticates, so nothing is relayed.
OPEN: dict[tuple[Sender, Destination], Admission] = {
    (Sender.LOCAL, Destination.LOCAL): Admission.ROUTE,
    (Sender.LOCAL, Destination.ELSEWHERE): Admission.REFUSE,
    (Sender.OUTSIDE, Destination.LOCAL): Admission.ROUTE,
    (Sender.OUTSIDE, Destination.ELSEWHERE): Admission.REFUSE,
}

#: RFC 3261 §22.1: these cannot be resent with credentials, so they are never challenged.
NEVER_CHALLENGED = frozenset({"ACK", "CANCEL"})


class RouteCheck:
    """What removing our own Route entries found."""

    __slots__ = ("dialog", "stripped")

    def __init__(self, *, stripped: bool, dialog: bool) -> None:
        self.stripped = stripped
        """At least one Route named sipwake."""
        self.dialog = dialog
        """One of them carried this request's dialog token: a dialog sipwake admitted."""


_NO_ROUTE = RouteCheck(stripped=False, dialog=False)


def _unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class EdgePolicy:
    """The rules above for one node: its ``secret`` keys dialog tokens and loop marks."""

    def __init__(self, *, secret: bytes, locality: Locality, open: bool = False) -> None:
        self._dialog_key = hmac.new(secret, b"sipwake dialog token", hashlib.sha256).digest()
        self._loop_key = hmac.new(secret, b"sipwake loop mark", hashlib.sha256).digest()
        self.locality = locality
        self.open = open
        self.table = OPEN if open else OUT_OF_DIALOG

    def __repr__(self) -> str:
        return f"EdgePolicy(open={self.open!r}, secret=<hidden>)"

    # -- dialogs ----------------------------------------------------------------------------
    def dialog_token(self, call_id: str, tag: str) -> str:
        """The token of the dialog set up by a request with this Call-ID and From tag."""
        data = f"{call_id}\x00{tag}".encode()
        return hashlib.blake2s(data, key=self._dialog_key, digest_size=_TOKEN_BYTES).hexdigest()

    def record_route(self, listener: LocalAddress, request: Request) -> str:
        """sipwake's Record-Route for a dialog-creating ``request``, with its token."""
        token = self.dialog_token(request.call_id, request.from_.tag or "")
        return listener.record_route(f";{TOKEN_PARAM}={token}")

    def strip_own_routes(self, request: Request) -> RouteCheck:
        """Remove the Route entries at the top that name sipwake (§16.4) and say whether
        one carried the dialog token of ``request``."""
        routes = request.routes
        if not routes:
            return _NO_ROUTE
        tokens: list[str] = []
        count = 0
        for route in routes:
            uri = route.uri
            if not (isinstance(uri, SipUri) and self.locality.is_us(uri)):
                break
            count += 1
            token = uri.param(TOKEN_PARAM)
            if token:
                tokens.append(token)
        if not count:
            return _NO_ROUTE
        for _ in range(count):
            request.headers.pop_first_value("Route")
        dialog = bool(tokens) and self._in_dialog(request, tokens)
        return RouteCheck(stripped=True, dialog=dialog)

    def _in_dialog(self, request: Request, tokens: list[str]) -> bool:
        to_tag = request.to.tag
        if to_tag is None:
            return False
        call_id = request.call_id
        wanted = [self.dialog_token(call_id, to_tag)]
        from_tag = request.from_.tag
        if from_tag is not None:
            wanted.append(self.dialog_token(call_id, from_tag))
        return any(hmac.compare_digest(t, w) for t in tokens for w in wanted)

    # -- out-of-dialog admission ------------------------------------------------------------
    def sender(self, request: Request) -> Sender:
        from_uri = request.from_.uri
        local = isinstance(from_uri, SipUri) and self.locality.is_our_domain(from_uri.host)
        return Sender.LOCAL if local else Sender.OUTSIDE

    def destination(self, request: Request) -> Destination:
        """Where ``request`` goes once our own Route entries are gone."""
        uri = request.uri
        if request.routes or not (
            isinstance(uri, SipUri) and self.locality.is_our_domain(uri.host)
        ):
            return Destination.ELSEWHERE
        return Destination.LOCAL

    def admission(self, sender: Sender, destination: Destination) -> Admission:
        return self.table[(sender, destination)]

    # -- loops ------------------------------------------------------------------------------
    def loop_mark(self, request: Request) -> str:
        """The suffix of the branch of every request sipwake forwards for ``request``
        (§16.6 item 8): it depends on everything that routes the request here."""
        headers = request.headers
        parts = [
            str(request.uri),
            # As written: proxies pass these on unchanged, and nothing needs them parsed.
            headers.get("call-id") or "",
            headers.get("from") or "",
            headers.get("to") or "",
            headers.get("cseq") or "",
            *headers.get_all("Route"),
            *headers.get_all("Proxy-Require"),
        ]
        data = "\x00".join(parts).encode()
        mac = hashlib.blake2s(data, key=self._loop_key, digest_size=_MARK_BYTES)
        return _MARK_SEP + mac.hexdigest()

    def looped(self, request: Request) -> bool:
        """§16.3 item 4: a Via of ours with the loop mark this request would get now."""
        raw = request.headers.get_all("Via")
        # Most requests come straight from a phone: one Via, parsed already (``top_via``).
        vias = [request.top_via] if len(raw) == 1 and "," not in raw[0] else request.via
        mark: str | None = None
        for via in vias:
            branch = via.branch
            if branch is None or _MARK_SEP not in branch:
                continue
            if mark is None:
                mark = self.loop_mark(request)
            if branch.endswith(mark):
                return True
        return False

    def is_listener(self, peer: Peer) -> bool:
        """``peer`` is one of sipwake's own sockets: a request sent there comes back."""
        host = peer.host.lower().strip("[]")
        for listener in self.locality.listeners:
            if listener.port != peer.port:
                continue
            mine = listener.host.lower().strip("[]")
            if mine == host or (_unspecified(mine) and _loopback(host)):
                return True
        return False

    # -- credentials ------------------------------------------------------------------------
    @staticmethod
    def consume_credentials(request: Request, realm: str) -> None:
        """Remove the Proxy-Authorization values for ``realm`` (§22.3): they were for us."""
        values = request.headers.get_all("Proxy-Authorization")
        if not values:
            return
        keep = [v for v in values if _realm_of(v) != realm]
        if len(keep) == len(values):
            return
        request.headers.remove("Proxy-Authorization")
        for value in keep:
            request.headers.add("Proxy-Authorization", value)


def _realm_of(value: str) -> str | None:
    try:
        return parse_credentials(value).realm
    except AuthError:
        return None


def digest_uri_matches(digest_uri: str, request_uri: object) -> bool:
    """RFC 2617 §3.2.2.5 / RFC 3261 §22.4: the credentials' ``uri`` is the Request-URI,
    compared as SIP URIs (§19.1.4) when both are, else as text."""
    text = str(request_uri)
    if digest_uri == text:
        return True
    if not isinstance(request_uri, SipUri):
        return False
    try:
        parsed = parse_uri(digest_uri, "digest uri")
    except SipParseError:
        return False
    return request_uri.equivalent(parsed)
