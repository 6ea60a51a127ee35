"""A mock Web Push service on loopback: HTTP/2 over TLS, for integration tests.

It hands out subscriptions (``subscribe`` → endpoint URL ``<base_url>/push/<id>``) and
checks each push message as a real push service does (PROTOCOLS.md §6):

* RFC 8030 §5.2 to §5.4: ``TTL`` present and a number (else 400), ``Urgency`` one of
  ``very-low``/``low``/``normal``/``high`` (else 400), ``Topic`` at most 32 base64url
  characters (else 400), body at most 4096 bytes (else 413); unknown subscription 404.
* RFC 8291 §4: a non-empty body needs ``Content-Encoding: aes128gcm`` and a well-formed
  header (65-byte ``keyid`` starting 0x04, a record size that holds the record), else 400.
* RFC 8292: ``Authorization: vapid t=<JWT>, k=<key>``: the JWT must verify (ES256) with
  the ``k`` key, ``aud`` must be this service's origin and ``exp`` in the future and at
  most 24 h ahead (else 403). A subscription created with ``restricted_key`` (the
  browser's ``applicationServerKey``) needs VAPID (401 when missing) with that very key
  (403 otherwise); an unrestricted one accepts a push without ``Authorization``.

Accepted messages are recorded with their headers and raw (still encrypted) body and
answered ``201 Created`` with a ``Location``. Faults are injected on demand: 410 Gone for
chosen subscriptions (``expire``), queued answers such as 429 with ``Retry-After`` or
503 (``fail_next``), added ``latency``. Error answers carry a JSON body shaped like
Mozilla autopush's (``code``, ``errno``, ``error``, ``message``).

    async with MockWebPush(tmp_path) as service:
        endpoint = service.subscribe(restricted_key=provider.public_key)

Test tooling, not production code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import ssl
import struct
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ConnectionTerminated, DataReceived, RequestReceived, StreamEnded, StreamReset

from sipwake.push.mock import write_self_signed_cert
from sipwake.push.webpush import (
    MAX_VAPID_LIFETIME_S,
    WEBPUSH_BODY_LIMIT,
    b64url_decode,
    b64url_encode,
)

__all__ = ["MockWebPush", "RecordedMessage", "WebPushAnswer"]

_TOPIC_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
_URGENCIES = frozenset({"very-low", "low", "normal", "high"})
_PHRASES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    410: "Gone",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedMessage:
    """One push message the mock accepted."""

    subscription: str
    """The subscription id (last path segment of the endpoint)."""
    headers: Mapping[str, str]
    """Request headers, lower case, pseudo-headers and ``authorization`` included."""
    body: bytes
    """The body as received: the ``aes128gcm`` ciphertext, or empty."""
    jwt: str | None
    """The verified VAPID JWT, when the push carried one."""
    connection: int
    """Which TLS connection (1, 2, …) carried the push."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WebPushAnswer:
    """An answer to give instead of the normal one (a fault)."""

    status: int
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)


class MockWebPush:
    """A loopback Web Push service; an async context manager that starts and stops it."""

    def __init__(
        self,
        directory: Path,
        *,
        clock: Callable[[], float] = time.time,
        host: str = "127.0.0.1",
    ) -> None:
        """``directory`` receives the TLS certificate; ``clock`` (wall seconds) judges
        VAPID ``exp``."""
        self._directory = directory
        self._clock = clock
        self._host = host
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._connection_tasks: set[asyncio.Task[Any]] = set()
        self._subscriptions: dict[str, bytes | None] = {}
        self.cert_file: Path | None = None
        self.base_url = ""
        self.messages: list[RecordedMessage] = []
        self.rejected: list[tuple[int, str]] = []
        """(status, message) of every refused request, in order."""
        self.connections = 0
        self.expired: set[str] = set()
        """Subscription ids answered 410 Gone."""
        self.faults: deque[WebPushAnswer] = deque()
        """Answers given to the next requests that pass every check, one each."""
        self.latency = 0.0
        """Seconds to wait before answering each request."""

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> MockWebPush:
        cert, key = write_self_signed_cert(self._directory, host=self._host)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)
        context.set_alpn_protocols(["h2"])
        self.cert_file = cert
        self._server = await asyncio.start_server(self._serve, self._host, 0, ssl=context)
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"https://{self._host}:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._connection_tasks:
            await asyncio.wait(self._connection_tasks, timeout=2.0)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def client_ssl(self) -> ssl.SSLContext:
        """A client TLS context that trusts this mock's certificate."""
        if self.cert_file is None:
            raise RuntimeError("MockWebPush is not started")
        return ssl.create_default_context(cafile=str(self.cert_file))

    # -- subscriptions and faults ------------------------------------------------------

    def subscribe(self, restricted_key: str | None = None) -> str:
        """A new subscription's endpoint URL (RFC 8030 §4).

        ``restricted_key`` (base64url uncompressed P-256 key, the browser's
        ``applicationServerKey``) restricts it to pushes signed with that VAPID key.
        """
        if not self.base_url:
            raise RuntimeError("MockWebPush is not started")
        key = None if restricted_key is None else b64url_decode(restricted_key)
        if key is not None and (len(key) != 65 or key[0] != 0x04):
            raise ValueError("restricted_key must be an uncompressed P-256 key, base64url")
        subscription = secrets.token_urlsafe(32)
        self._subscriptions[subscription] = key
        return f"{self.base_url}/push/{subscription}"

    def expire(self, endpoint: str) -> None:
        """Answer 410 Gone for ``endpoint``'s subscription from now on."""
        self.expired.add(endpoint.rsplit("/", 1)[-1])

    def fail_next(
        self, status: int, message: str = "", *, retry_after: int | None = None, times: int = 1
    ) -> None:
        """Answer the next ``times`` requests that pass every check with ``status``."""
        headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
        for _ in range(times):
            self.faults.append(WebPushAnswer(status=status, message=message, headers=headers))

    @property
    def jwts(self) -> list[str]:
        """Distinct VAPID JWTs seen on accepted messages, in first-use order."""
        return list(dict.fromkeys(m.jwt for m in self.messages if m.jwt is not None))

    # -- HTTP/2 ------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._connection_tasks.add(task)
        conn = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                for event in conn.receive_data(data):
                    if isinstance(event, RequestReceived):
                        streams[event.stream_id] = (
                            {bytes(k).decode(): bytes(v).decode() for k, v in event.headers},
                            bytearray(),
                        )
                    elif isinstance(event, DataReceived):
                        stream = streams.get(event.stream_id)
                        if stream is not None:
                            stream[1].extend(event.data)
                        conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                    elif isinstance(event, StreamEnded):
                        headers, body = streams.pop(event.stream_id)
                        self._spawn(
                            self._respond(conn, writer, event.stream_id, headers, body, number)
                        )
                    elif isinstance(event, StreamReset):
                        streams.pop(event.stream_id, None)
                    elif isinstance(event, ConnectionTerminated):
                        return
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._connection_tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _respond(
        self,
        conn: H2Connection,
        writer: asyncio.StreamWriter,
        stream_id: int,
        headers: dict[str, str],
        body: bytearray,
        number: int,
    ) -> None:
        if self.latency:
            await asyncio.sleep(self.latency)
        status, message, extra = self._judge(headers, bytes(body), number)
        answer = b""
        response = [(":status", str(status)), *extra.items()]
        if status >= 300:
            self.rejected.append((status, message))
            phrase = _PHRASES.get(status, "Error")
            answer = json.dumps(
                {"code": status, "errno": 999, "error": phrase, "message": message}
            ).encode()
            response += [("content-type", "application/json"), ("content-length", str(len(answer)))]
        try:
            conn.send_headers(stream_id, response, end_stream=not answer)
            if answer:
                conn.send_data(stream_id, answer, end_stream=True)
            writer.write(conn.data_to_send())
            await writer.drain()
        except Exception:  # the client went away or reset the stream
            return

    # -- the checks --------------------------------------------------------------------

    def _judge(
        self, headers: Mapping[str, str], body: bytes, number: int
    ) -> tuple[int, str, dict[str, str]]:
        """(status, message, extra headers) for one request, as a push service answers."""
        if headers.get(":method") != "POST":
            return 405, "push messages are POSTed", {}
        path = headers.get(":path", "")
        subscription = path.removeprefix("/push/")
        if not path.startswith("/push/") or subscription not in self._subscriptions:
            return 404, "no such subscription", {}
        ttl = headers.get("ttl")
        if ttl is None or not ttl.strip().isdigit():
            return 400, "TTL header missing or not a number", {}
        urgency = headers.get("urgency")
        if urgency is not None and urgency.strip() not in _URGENCIES:
            return 400, "Urgency must be very-low, low, normal or high", {}
        topic = headers.get("topic")
        if topic is not None and not _TOPIC_RE.fullmatch(topic):
            return 400, "Topic must be at most 32 base64url characters", {}
        if len(body) > WEBPUSH_BODY_LIMIT:
            return 413, f"body of {len(body)} bytes exceeds {WEBPUSH_BODY_LIMIT}", {}
        if body:
            refusal = _check_encrypted(headers.get("content-encoding"), body)
            if refusal is not None:
                return 400, refusal, {}
        status, message, token = self._check_vapid(
            headers.get("authorization"), self._subscriptions[subscription]
        )
        if status:
            return status, message, {}
        if self.faults:
            fault = self.faults.popleft()
            return fault.status, fault.message, dict(fault.headers)
        if subscription in self.expired:
            return 410, "subscription expired", {}
        self.messages.append(
            RecordedMessage(
                subscription=subscription,
                headers=dict(headers),
                body=body,
                jwt=token,
                connection=number,
            )
        )
        location = f"{self.base_url}/message/{secrets.token_urlsafe(12)}"
        return 201, "", {"location": location, "ttl": ttl.strip()}

    def _check_vapid(
        self, authorization: str | None, restricted: bytes | None
    ) -> tuple[int, str, str | None]:
        """(0, "", jwt) for acceptable VAPID (or none where allowed), else the refusal."""
        if authorization is None:
            if restricted is not None:
                return 401, "restricted subscription: VAPID authorization required", None
            return 0, "", None
        scheme, _, rest = authorization.strip().partition(" ")
        if scheme.lower() != "vapid":
            return 401, "authorization scheme must be vapid", None
        params: dict[str, str] = {}
        for part in rest.split(","):
            name, _, value = part.strip().partition("=")
            params[name.strip().lower()] = value.strip()
        token, key_text = params.get("t"), params.get("k")
        if not token or not key_text:
            return 401, "vapid authorization needs t= and k=", None
        try:
            key_bytes = b64url_decode(key_text)
            public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key_bytes)
        except ValueError:
            return 403, "k is not a P-256 public key", None
        if restricted is not None and key_bytes != restricted:
            return 403, "VAPID key does not match the restricted subscription", None
        try:
            claims = jwt.decode(
                token,
                public_key,
                algorithms=["ES256"],
                options={"verify_exp": False, "verify_aud": False, "require": ["aud", "exp"]},
            )
        except jwt.PyJWTError as exc:
            return 403, f"invalid VAPID JWT: {type(exc).__name__}", None
        if claims.get("aud") != self.base_url:
            return 403, "VAPID aud is not this push service's origin", None
        expires = claims.get("exp")
        now = self._clock()
        if not isinstance(expires, int) or expires <= now:
            return 403, "VAPID JWT expired", None
        if expires > now + MAX_VAPID_LIFETIME_S:
            return 403, "VAPID exp more than 24 hours ahead", None
        return 0, "", token

    @property
    def restricted_keys(self) -> dict[str, str | None]:
        """Subscription id → its restricting key (base64url), for assertions."""
        return {
            sub: None if key is None else b64url_encode(key)
            for sub, key in self._subscriptions.items()
        }


def _check_encrypted(encoding: str | None, body: bytes) -> str | None:
    """None when ``body`` looks like one RFC 8291 ``aes128gcm`` message, else why not."""
    if encoding is None or encoding.strip().lower() != "aes128gcm":
        return "a payload needs Content-Encoding: aes128gcm"
    if len(body) < 86 + 17:
        return "aes128gcm body shorter than header and one record"
    record_size, id_length = struct.unpack("!IB", body[16:21])
    if id_length != 65 or body[21] != 0x04:
        return "aes128gcm keyid must be a 65-byte uncompressed P-256 key"
    if record_size < 18 or len(body) - 86 > record_size:
        return "aes128gcm record size does not hold the single record"
    return None
