"""APNs HTTP/2 client with provider-token (JWT) or certificate authentication
(PROTOCOLS.md §3.3, §3.4).

Theory of operation: each provider holds one HTTP/2 connection over TLS (an
``asyncio.Protocol`` driving an ``h2`` state machine), opened on the first push and again
after the old one is lost or sent GOAWAY; concurrent ``send`` calls become concurrent
streams, up to the server's ``SETTINGS_MAX_CONCURRENT_STREAMS`` (further pushes wait for a
stream to end). Frames go out in one write per turn of the event loop, or sooner once
16 new streams wait (so the server starts on them while we prepare the rest). No stream
is opened before the server's SETTINGS arrive (APNs may allow few streams at first).
Every request is bounded by ``timeout``: connecting, and then waiting for a
stream slot plus the answer; a push without an answer becomes ``retry``. The provider token
is an ES256 JWT (header ``kid``, claims ``iss``/``iat``) minted from the ``.p8`` key and
shared by every request; it is re-minted when older than ``refresh_after_s`` (50 min by
default, inside Apple's 20 to 60 min window, §3.3), never per request. Wall time for ``iat``
comes from an injected clock. With certificate auth instead (``client_cert``), the TLS
client certificate identifies us on every connection and requests carry no
``authorization`` header. Requests and answers go through the pure builder and
classifier in ``sipwake.push.payload``.

Secrets stay out of logs: the key and JWTs are never logged; device tokens only masked.
hpack logs whole header blocks (path and ``authorization``) at DEBUG, and httpx (used by
other providers) logs request URLs at INFO, so the provider attaches a filter to those
library loggers that masks ``/3/device/<token>`` and anything shaped like a JWT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
import jwt
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import H2Error
from hpack import Encoder, NeverIndexedHeaderTuple

from sipwake.errors import PushError
from sipwake.push.base import PushOutcome, PushRequest
from sipwake.push.logmask import guard_library_loggers, mask_jwts
from sipwake.push.payload import (
    APNS_HOSTS,
    ApnsSettings,
    build_apns_request,
    classify_apns_response,
)
from sipwake.sip.pushtarget import mask_token

__all__ = ["MIN_REFRESH_S", "ApnsProvider", "ProviderToken"]

logger = logging.getLogger(__name__)

#: PROTOCOLS.md §3.3: changing the token more often than this gets 429 from APNs.
MIN_REFRESH_S = 20 * 60
#: PROTOCOLS.md §3.3: APNs rejects tokens older than this (403 ExpiredProviderToken).
MAX_TOKEN_AGE_S = 60 * 60

_DEVICE_PATH_RE = re.compile(r"(/3/device/)([0-9A-Fa-f]+)")


def _mask_secrets(text: str) -> str:
    """APNs device tokens in request paths, and JWTs."""
    return mask_jwts(_DEVICE_PATH_RE.sub(lambda m: m.group(1) + mask_token(m.group(2)), text))


class ProviderToken:
    """The shared APNs provider token of one (team, key): minted lazily, cached, refreshed.

    Pure apart from signing: the caller passes wall time (UNIX seconds) to ``get``.
    """

    def __init__(
        self,
        *,
        team_id: str,
        key_id: str,
        private_key: str | bytes,
        refresh_after_s: float = 50 * 60,
    ) -> None:
        if not MIN_REFRESH_S <= refresh_after_s < MAX_TOKEN_AGE_S:
            raise ValueError(
                f"refresh_after_s must be in [{MIN_REFRESH_S}, {MAX_TOKEN_AGE_S}), "
                f"got {refresh_after_s}"
            )
        self._team_id = team_id
        self._key_id = key_id
        self._private_key = private_key
        self._refresh_after_s = refresh_after_s
        self._token: str | None = None
        self._issued_at = 0
        self.minted = 0
        """How many tokens have been minted (for metrics and tests)."""

    def __repr__(self) -> str:
        return (
            f"ProviderToken(team_id={self._team_id!r}, key_id={self._key_id!r}, "
            f"minted={self.minted})"
        )

    def get(self, wall_now: float) -> str:
        """The current token, minted anew when missing or older than ``refresh_after_s``."""
        if self._token is None or wall_now - self._issued_at >= self._refresh_after_s:
            self._mint(wall_now)
        assert self._token is not None
        return self._token

    def expire(self, wall_now: float) -> bool:
        """APNs called the token expired: drop it if Apple lets us mint again (≥ 20 min).

        Returns whether the next ``get`` will mint a new token.
        """
        if self._token is not None and wall_now - self._issued_at >= MIN_REFRESH_S:
            self._token = None
            return True
        return False

    def _mint(self, wall_now: float) -> None:
        issued_at = int(wall_now)
        try:
            token = jwt.encode(
                {"iss": self._team_id, "iat": issued_at},
                self._private_key,
                algorithm="ES256",
                headers={"kid": self._key_id},
            )
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            # Never echo the key: name only the failure's type.
            raise PushError(
                "apns", f"cannot sign provider token: {type(exc).__name__}", retryable=False
            ) from None
        self._token, self._issued_at = token, issued_at
        self.minted += 1
        logger.info("apns: minted provider token kid=%s iss=%s", self._key_id, self._team_id)


#: Request headers whose values (nearly) never repeat: kept out of the HPACK dynamic table
#: so that they do not evict the ones that do (topic, push type, provider token).
_UNIQUE_HEADERS = frozenset({"apns-id", "apns-collapse-id"})


#: Write as soon as this many new streams wait to go out, rather than at the end of the
#: event loop's turn: the server starts on the first ones while we prepare the rest.
#: A request alone in flight is written at once.
_FLUSH_AFTER_STREAMS = 16


class _Unanswered(Exception):
    """No answer from APNs for one request; ``reason`` is the outcome's reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    headers: dict[str, str]
    """Lower-case names."""
    body: bytes


class _Stream:
    """One request in flight: its answer so far and request body bytes not yet sent."""

    __slots__ = ("body", "headers", "pending", "response", "status")

    def __init__(self, response: asyncio.Future[_Response], pending: bytes) -> None:
        self.response = response
        self.pending = pending
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = bytearray()


_Header = tuple[bytes, bytes]


class _PlainEncoder(Encoder):
    """HPACK without Huffman coding of literals: the pure-Python Huffman coder costs more
    per push (about 20 µs) than the 40 bytes it saves on a request's unique values."""

    def encode(self, headers: Any, huffman: bool = False) -> bytes:
        return super().encode(headers, huffman=False)


class _Http2Connection(asyncio.Protocol):
    """One HTTP/2 client connection: ``request`` opens a stream and awaits its answer.

    ``failure`` is set (to an outcome reason) once the connection can take no new
    streams: lost, closed, or told to go away by the server.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        # Header names come lower-case and trimmed from our builder, so h2 need not
        # normalise them; it would also keep ``authorization`` out of the HPACK table,
        # re-encoding the same 200-byte provider token on every request. The token is
        # high-entropy, so indexing it is safe (RFC 7541 §7.1.3: HPACK only ever matches
        # whole values).
        self._h2 = H2Connection(
            H2Configuration(
                client_side=True, header_encoding=None, normalize_outbound_headers=False
            )
        )
        self._h2.encoder = _PlainEncoder()
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, _Stream] = {}
        self._blocked: set[int] = set()
        """Streams whose body waits for flow-control window."""
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        self._flush_scheduled = False
        self._unflushed = 0
        self.ready: asyncio.Future[None] = self._loop.create_future()
        """Done when the server's first SETTINGS arrived or the connection failed."""
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self.failure: str | None = None

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's are not asyncio.Transport subclasses).
        stream = cast(asyncio.Transport, transport)
        self._transport = stream
        self._h2.initiate_connection()
        stream.write(self._h2.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except H2Error as exc:
            self.fail(f"transport: {type(exc).__name__}")
            return
        for event in events:
            if isinstance(event, ResponseReceived):
                stream = self._streams.get(event.stream_id)
                if stream is not None and event.headers is not None:
                    for name, value in event.headers:
                        key = bytes(name).decode("ascii", "replace")
                        if key == ":status":
                            stream.status = int(value)
                        else:
                            stream.headers[key] = bytes(value).decode("latin-1")
            elif isinstance(event, DataReceived):
                stream = self._streams.get(event.stream_id)
                if stream is not None and event.data:
                    stream.body += event.data
                if event.flow_controlled_length:
                    self._h2.acknowledge_received_data(
                        event.flow_controlled_length,
                        event.stream_id,
                    )
            elif isinstance(event, StreamEnded):
                stream = self._end_stream(event.stream_id)
                if stream is not None and not stream.response.done():
                    stream.response.set_result(
                        _Response(stream.status, stream.headers, bytes(stream.body))
                    )
            elif isinstance(event, StreamReset):
                stream = self._end_stream(event.stream_id)
                if stream is not None and not stream.response.done():
                    code = _error_name(event.error_code)
                    stream.response.set_exception(_Unanswered(f"transport: StreamReset {code}"))
            elif isinstance(event, WindowUpdated | RemoteSettingsChanged):
                if isinstance(event, RemoteSettingsChanged):
                    if not self.ready.done():
                        self.ready.set_result(None)
                    self._wake_waiters()
                for stream_id in list(self._blocked):
                    self._send_body(stream_id)
            elif isinstance(event, ConnectionTerminated):
                self._go_away(event)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail("transport: ConnectionLost")
        self._transport = None
        if not self.closed.done():
            self.closed.set_result(None)

    # -- requests --------------------------------------------------------------------

    async def request(self, headers: Sequence[_Header], body: bytes) -> _Response:
        """Send one request and await its answer; raises ``_Unanswered``."""
        while self.failure is None and len(self._streams) >= self._max_streams():
            waiter = self._loop.create_future()
            self._slot_waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_waiters()  # pass the slot we were given on
                raise
        if self.failure is not None:
            raise _Unanswered(self.failure)
        stream_id = self._h2.get_next_available_stream_id()
        self._h2.send_headers(stream_id, headers, end_stream=not body)
        stream = _Stream(self._loop.create_future(), body)
        self._streams[stream_id] = stream
        self._send_body(stream_id)
        self._unflushed += 1
        if self._unflushed >= _FLUSH_AFTER_STREAMS or len(self._streams) == 1:
            # Alone in flight, no batch is forming: a call is waiting on this push.
            self._flush()
        else:
            self._schedule_flush()
        try:
            return await stream.response
        except asyncio.CancelledError:
            if self._end_stream(stream_id) is not None and self.failure is None:
                with contextlib.suppress(H2Error):
                    self._h2.reset_stream(stream_id, ErrorCodes.CANCEL)
                self._schedule_flush()
            raise

    def _max_streams(self) -> int:
        limit: int = self._h2.remote_settings.max_concurrent_streams
        return limit

    def _send_body(self, stream_id: int) -> None:
        """Send what the flow-control window allows of the stream's body."""
        stream = self._streams.get(stream_id)
        if stream is None:
            self._blocked.discard(stream_id)
            return
        while stream.pending:
            window = min(
                self._h2.local_flow_control_window(stream_id), self._h2.max_outbound_frame_size
            )
            if window <= 0:
                self._blocked.add(stream_id)
                return
            chunk, stream.pending = stream.pending[:window], stream.pending[window:]
            self._h2.send_data(stream_id, chunk, end_stream=not stream.pending)
        self._blocked.discard(stream_id)

    def _end_stream(self, stream_id: int) -> _Stream | None:
        """Forget a stream (answered, reset or abandoned) and give its slot away."""
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            self._blocked.discard(stream_id)
            self._wake_waiters()
            if self.failure is not None and not self._streams:
                self._close_transport()
        return stream

    def _wake_waiters(self) -> None:
        free = self._max_streams() - len(self._streams) if self.failure is None else 1 << 30
        while free > 0 and self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    # -- writing -----------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        """Write pending frames once this turn of the event loop is over."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._unflushed = 0
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    # -- ending ------------------------------------------------------------------------

    def _go_away(self, event: ConnectionTerminated) -> None:
        """GOAWAY: streams above ``last_stream_id`` were not processed; the rest may finish
        unless the server reported an error."""
        if event.error_code not in (None, ErrorCodes.NO_ERROR):
            self.fail(f"transport: GoAway {_error_name(event.error_code)}")
            return
        self.failure = "transport: GoAway"
        last = event.last_stream_id if event.last_stream_id is not None else 0
        for stream_id in [s for s in self._streams if s > last]:
            stream = self._streams.pop(stream_id)
            if not stream.response.done():
                stream.response.set_exception(_Unanswered(self.failure))
        self._wake_waiters()
        if not self._streams:
            self._close_transport()

    def fail(self, reason: str) -> None:
        """Take no new streams; end every request in flight with ``reason``; close."""
        if self.failure is None or self._streams:
            self.failure = self.failure or reason
            streams, self._streams = self._streams, {}
            self._blocked.clear()
            for stream in streams.values():
                if not stream.response.done():
                    stream.response.set_exception(_Unanswered(reason))
        self._wake_waiters()
        if not self.ready.done():
            self.ready.set_result(None)
        self._close_transport()

    def _close_transport(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            if self.failure == "transport: Closed":
                self._h2.close_connection()
                self._flush()
            self._transport.close()


def _error_name(code: object) -> str:
    return code.name if isinstance(code, ErrorCodes) else str(code)


def _client_ssl_context(ssl_context: ssl.SSLContext | None) -> ssl.SSLContext:
    # httpx's default context: SSL_CERT_FILE / SSL_CERT_DIR if set, else certifi's roots.
    context = ssl_context or httpx.create_ssl_context()
    context.set_alpn_protocols(["h2"])
    return context


class ApnsProvider:
    """Sends pushes to APNs over one persistent HTTP/2 connection (a ``PushProvider``)."""

    def __init__(
        self,
        settings: ApnsSettings,
        *,
        private_key: str | bytes | None = None,
        client_cert: str | os.PathLike[str] | None = None,
        client_key: str | os.PathLike[str] | None = None,
        base_url: str | None = None,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.perf_counter,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        refresh_after_s: float = 50 * 60,
    ) -> None:
        """Token auth: ``private_key`` is the ``.p8`` PEM text. Certificate auth instead:
        ``client_cert`` is the PEM certificate file, ``client_key`` its private key file
        (when not in ``client_cert``); ``ValueError`` unless exactly one way is given, and
        ``ssl.SSLError``/``OSError`` when the certificate cannot be loaded.

        ``base_url`` defaults to the host of ``settings.environment``; ``clock`` gives wall
        seconds (JWT ``iat``), ``timer`` monotonic seconds (latency); ``ssl_context``
        overrides the trust store (as httpx picks it by default); ``timeout`` bounds
        connecting, and then each request's answer."""
        self.settings = settings
        self.base_url = base_url or APNS_HOSTS[settings.environment]
        url = urlsplit(self.base_url)
        if url.scheme != "https" or not url.hostname:
            raise ValueError(f"base_url: expected https://host[:port], got {self.base_url!r}")
        self._host = url.hostname
        self._port = url.port or 443
        self._authority = url.netloc.encode()
        self._clock = clock
        self._timer = timer
        self._timeout = timeout
        if (private_key is None) == (client_cert is None):
            raise ValueError("ApnsProvider: give private_key (token auth) or client_cert")
        self._ssl = _client_ssl_context(ssl_context)
        self._token: ProviderToken | None = None
        if client_cert is not None:
            self._ssl.load_cert_chain(client_cert, client_key)
        else:
            assert private_key is not None
            self._token = ProviderToken(
                team_id=settings.team_id,
                key_id=settings.key_id,
                private_key=private_key,
                refresh_after_s=refresh_after_s,
            )
        self._bearer_token: str | None = None
        self._bearer = b""
        self._connection: _Http2Connection | None = None
        self._connecting: asyncio.Future[_Http2Connection] | None = None
        self._closed = False
        guard_library_loggers("apns", _mask_secrets)

    def __repr__(self) -> str:
        return f"ApnsProvider(base_url={self.base_url!r}, settings={self.settings!r})"

    @property
    def tokens_minted(self) -> int:
        return 0 if self._token is None else self._token.minted

    @property
    def uses_certificate(self) -> bool:
        """Certificate auth (no provider token, no ``authorization`` header)."""
        return self._token is None

    async def send(self, request: PushRequest) -> PushOutcome:
        try:
            outcome = await self._send_once(request)
            if (
                outcome.reason == "ExpiredProviderToken"
                and self._token is not None
                and self._token.expire(self._clock())
            ):
                outcome = await self._send_once(request)
        except PushError as exc:
            outcome = PushOutcome(
                status="invalid_target" if exc.reason.startswith("BadDeviceToken") else "error",
                provider="apns",
                reason=exc.reason,
            )
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "apns: %s push to %s: %s%s (%.0f ms)",
                request.kind,
                request.target.masked(),
                outcome.status,
                f" {outcome.http_status} {outcome.reason}" if outcome.http_status != 200 else "",
                outcome.latency * 1000,
            )
        return outcome

    async def _send_once(self, request: PushRequest) -> PushOutcome:
        wall_now = self._clock()
        built = build_apns_request(request, self.settings, wall_now=wall_now)
        headers: list[_Header] = [
            (b":method", built.method.encode()),
            (b":scheme", b"https"),
            (b":authority", self._authority),
            NeverIndexedHeaderTuple(b":path", built.path.encode()),
        ]
        for name, value in built.headers.items():
            field = (name.encode(), value.encode())
            headers.append(NeverIndexedHeaderTuple(*field) if name in _UNIQUE_HEADERS else field)
        if self._token is not None:
            headers.append((b"authorization", self._authorization(self._token, wall_now)))
        started = self._timer()
        try:
            connection = await self._connected()
            async with asyncio.timeout(self._timeout):
                response = await connection.request(headers, built.body)
        except TimeoutError:
            return self._unanswered("timeout: ReadTimeout", started)
        except _Unanswered as exc:
            return self._unanswered(exc.reason, started)
        return classify_apns_response(
            response.status,
            response.body,
            response.headers,
            latency=self._timer() - started,
            wall_now=wall_now,
        )

    def _authorization(self, provider_token: ProviderToken, wall_now: float) -> bytes:
        token = provider_token.get(wall_now)
        if token is not self._bearer_token:
            self._bearer_token, self._bearer = token, f"bearer {token}".encode()
        return self._bearer

    async def _connected(self) -> _Http2Connection:
        """The open connection, or a new one (raises ``_Unanswered`` when it fails).

        Pushes that arrive while a connection is being opened share that one attempt.
        """
        connection = self._connection
        if connection is not None and connection.failure is None:
            return connection
        if self._closed:
            raise _Unanswered("transport: Closed")
        attempt = self._connecting
        if attempt is None:
            attempt = self._connecting = asyncio.ensure_future(self._connect())
            attempt.add_done_callback(self._connect_done)
        try:
            return await asyncio.shield(attempt)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if attempt.cancelled() and (task is None or not task.cancelling()):
                raise _Unanswered("transport: Closed") from None  # close() stopped it
            raise

    def _connect_done(self, attempt: asyncio.Future[_Http2Connection]) -> None:
        self._connecting = None
        if attempt.cancelled() or attempt.exception() is not None:
            return
        connection = attempt.result()
        if self._closed:
            connection.fail("transport: Closed")
        else:
            self._connection = connection

    async def _connect(self) -> _Http2Connection:
        loop = asyncio.get_running_loop()
        connection: _Http2Connection | None = None
        try:
            async with asyncio.timeout(self._timeout):
                transport, connection = await loop.create_connection(
                    _Http2Connection, self._host, self._port, ssl=self._ssl
                )
                alpn = transport.get_extra_info("ssl_object").selected_alpn_protocol()
                if alpn not in (None, "h2"):
                    connection.fail(f"transport: ALPN {alpn[:20]!r}, not h2")
                await connection.ready
        except TimeoutError:
            if connection is not None:
                connection.fail("timeout: ConnectTimeout")
            raise _Unanswered("timeout: ConnectTimeout") from None
        except (OSError, ssl.SSLError) as exc:
            raise _Unanswered(f"transport: ConnectError {type(exc).__name__}") from None
        except asyncio.CancelledError:
            if connection is not None:
                connection.fail("transport: Closed")
            raise
        if connection.failure is not None:
            raise _Unanswered(connection.failure)
        return connection

    def _unanswered(self, reason: str, started: float) -> PushOutcome:
        """No answer from APNs (timeout, connection lost): the push may be retried."""
        return PushOutcome(
            status="retry",
            provider="apns",
            reason=reason,
            latency=self._timer() - started,
        )

    async def close(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.fail("transport: Closed")
            # Let TLS say goodbye; a peer that does not answer must not hold us up.
            await asyncio.wait([connection.closed], timeout=1.0)

    async def __aenter__(self) -> ApnsProvider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
