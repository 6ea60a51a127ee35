"""Mock push services on loopback: HTTP/2 over TLS, for integration tests.

``MockApns`` is APNs' provider API (PROTOCOLS.md §3): it checks the ES256 provider token
(signature with the configured public key, ``kid``, ``iss``, age under one hour, and on
one connection no new token less than 20 minutes after the one before:
``TooManyProviderTokenUpdates``), or, given ``client_ca``, accepts certificate auth
instead (mutual TLS: a client certificate that CA issued; its subject UID names the app,
whose topics alone it may push to); then what ``sipwake.push.apns_rules`` checks: push
type against topic, priority, expiration, ``apns-id``, collapse id, payload size, and
that the device token belongs to the topic (``DeviceTokenNotForTopic``). Tokens are
issued with their topic (``issue_token``); an unknown one is ``BadDeviceToken``, unless
``learn_tokens`` (the lab's ``sipwake mock-push``) binds it to the topic of its first
push. Every answer echoes ``apns-id`` (the request's, else a new one).

``MockFcm`` is FCM HTTP v1 and Google's OAuth token endpoint on one origin
(PROTOCOLS.md §5): ``POST /token`` verifies the RS256 service-account assertion (key,
``kid``, ``iss``, ``scope``, ``aud``, ``iat``/``exp``) and issues access tokens with an
``expires_in``; ``POST /v1/projects/<p>/messages:send`` checks the bearer token is one it
issued and not expired, the project, and the message (token, string data values, no
reserved keys, ``android.priority`` and ``ttl``, data size), and that the registration
token was issued to that project (``issue_token``; another project's:
``SENDER_ID_MISMATCH``; unknown: ``INVALID_ARGUMENT`` on ``message.token``, unless
``learn_tokens`` binds it to the project of its first message); errors use Google's JSON
shape with the ``FcmError`` detail. ``write_service_account`` writes a key file with a
fresh RSA key for it.

Both record what they accept and inject faults on demand (dead tokens, queued error
answers such as 429 with ``Retry-After`` or 503, added latency), and count TLS
connections so a test can see that a client multiplexes streams over one.

    async with MockApns(tmp_path, public_key=pem, team_id="T", key_id="K") as apns:
        provider = ApnsProvider(..., base_url=apns.base_url, ssl_context=apns.client_ssl())

    async with MockFcm(tmp_path, project_id="lab-app") as fcm:
        account = fcm.new_service_account(tmp_path)
        provider = FcmProvider(account.path, base_url=fcm.base_url, ssl_context=fcm.client_ssl())

The servers live in this package so that tests and the lab CLI can both start them; they
are test tooling, not production code.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import os
import re
import secrets
import ssl
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ConnectionTerminated, DataReceived, RequestReceived, StreamEnded, StreamReset

from sipwake.push.apns_rules import TokenBook, check_apns_request
from sipwake.push.fcm_payload import (
    FCM_DATA_LIMIT,
    FCM_ERROR_TYPE,
    FCM_SCOPE,
    JWT_BEARER_GRANT,
    MAX_TTL_S,
    data_size,
)

__all__ = [
    "FCM_ERRORS",
    "IssuedAccessToken",
    "MockAnswer",
    "MockApns",
    "MockFcm",
    "MockFcmFault",
    "RecordedFcmMessage",
    "RecordedPush",
    "ServiceAccountFile",
    "write_self_signed_cert",
    "write_service_account",
]

_TOKEN_MAX_AGE_S = 3600
#: PROTOCOLS.md §3.3: a provider token may be replaced at most once per 20 minutes.
_TOKEN_MIN_UPDATE_S = 20 * 60


def _reusable_cert(directory: Path, host: str, stem: str) -> tuple[Path, Path] | None:
    """``<stem>.pem``/``.key`` already in ``directory``, if for ``host`` and valid a day more."""
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if not key_path.is_file():
            return None
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return None
    ips = {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    left = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    if host not in ips or left < datetime.timedelta(days=1):
        return None
    return cert_path, key_path


def write_self_signed_cert(
    directory: Path, *, host: str = "127.0.0.1", stem: str = "mock-apns", days: int = 1
) -> tuple[Path, Path]:
    """A self-signed P-256 certificate for ``host`` (IP SAN and ``localhost``), valid
    ``days``: (cert, key) written as ``<stem>.pem`` and ``<stem>.key``."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{stem}.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_private(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return cert_path, key_path


def write_private(path: Path, data: bytes) -> None:
    """Write a private key (or a file holding one) readable by its owner only: made with
    mode 0600, so it is never world-readable, not even between a write and a chmod; an
    existing file is narrowed to 0600 too."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(data)


# -- shared HTTP/2 + TLS plumbing ----------------------------------------------------------

_Reply = tuple[int, list[tuple[str, str]], bytes]
"""(status, extra response headers, body) of one answer."""


class _H2TlsMock:
    """An HTTP/2-over-TLS loopback server; subclasses answer requests in ``_answer``.

    Each completed request stream is answered by its own task (after ``latency``), so
    concurrent streams are served concurrently, as a real front end does.
    """

    _stem = "mock"

    def __init__(self, directory: Path, *, host: str) -> None:
        self._directory = directory
        self._host = host
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._connection_tasks: set[asyncio.Task[Any]] = set()
        self.cert_file: Path | None = None
        self.base_url = ""
        self.client_ca: Path | None = None
        """Ask clients for a TLS certificate and verify it against this CA (mutual TLS);
        set before starting. A client without one still connects (``CERT_OPTIONAL``)."""
        self.client_certs: dict[int, x509.Certificate | None] = {}
        """Connection number → the verified client certificate it presented (or None)."""
        self.connections = 0
        self.latency = 0.0
        """Seconds to wait before answering each request."""
        self.port = 0
        """The port to listen on (0: any free one); set before starting."""
        self.reuse_cert = False
        """Keep the certificate already in ``directory`` (for this host, valid a day more)
        instead of making a new one, and make new ones valid for a year: a server that
        trusts it once keeps trusting it (``sipwake mock-push``, replay ``--target``)."""

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        kept = _reusable_cert(self._directory, self._host, self._stem) if self.reuse_cert else None
        cert, key = kept or write_self_signed_cert(
            self._directory, host=self._host, stem=self._stem, days=365 if self.reuse_cert else 1
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)
        context.set_alpn_protocols(["h2"])
        if self.client_ca is not None:
            context.verify_mode = ssl.CERT_OPTIONAL
            context.load_verify_locations(cafile=str(self.client_ca))
        self.cert_file = cert
        self._server = await asyncio.start_server(self._serve, self._host, self.port, ssl=context)
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"https://{self._host}:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._connection_tasks:
            # Closing the transports ends each connection's read loop; wait for them.
            _, left = await asyncio.wait(self._connection_tasks, timeout=0.5)
            if left:
                # A client that keeps its connection (a server in another process) never
                # answers the TLS close: drop the connection rather than wait 30 s for it.
                for writer in list(self._writers):
                    writer.transport.abort()
                await asyncio.wait(left, timeout=2.0)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def client_ssl(self) -> ssl.SSLContext:
        """A client TLS context that trusts this mock's certificate."""
        if self.cert_file is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return ssl.create_default_context(cafile=str(self.cert_file))

    # -- HTTP/2 ------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        self.client_certs[number] = x509.load_der_x509_certificate(der) if der else None
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
                        streams[event.stream_id][1].extend(event.data)
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
        status, extra, answer = self._answer(headers, bytes(body), number)
        response = [(":status", str(status)), *extra]
        if answer:
            response += [("content-length", str(len(answer)))]
        try:
            conn.send_headers(stream_id, response, end_stream=not answer)
            if answer:
                conn.send_data(stream_id, answer, end_stream=True)
            writer.write(conn.data_to_send())
            await writer.drain()
        except Exception:  # the client went away or reset the stream
            return

    def _answer(self, headers: Mapping[str, str], body: bytes, number: int) -> _Reply:
        """The answer to one request that arrived on connection ``number``."""
        raise NotImplementedError


# -- APNs ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedPush:
    """One push the mock APNs accepted."""

    token: str
    headers: Mapping[str, str]
    """Request headers, lower case, ``authorization`` included (the verified JWT)."""
    body: Any
    jwt: str
    """The verified provider token; empty for a push authenticated by certificate."""
    connection: int
    """Which TLS connection (1, 2, …) carried the push."""
    client_cert: str | None = None
    """Subject of the client certificate that authenticated the push (certificate auth)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MockAnswer:
    """An answer to give instead of the normal one (a fault)."""

    status: int
    reason: str
    headers: Mapping[str, str] = field(default_factory=dict)


class MockApns(_H2TlsMock):
    """A loopback APNs; an async context manager that starts and stops it."""

    _stem = "mock-apns"

    def __init__(
        self,
        directory: Path,
        *,
        public_key: str | bytes | None = None,
        team_id: str = "",
        key_id: str = "",
        client_ca: Path | None = None,
        clock: Callable[[], float] = time.time,
        host: str = "127.0.0.1",
        learn_tokens: bool = False,
    ) -> None:
        """``directory`` receives the TLS certificate; ``public_key`` (PEM) verifies
        provider tokens (None: token auth refused); ``client_ca`` enables certificate auth:
        a TLS client certificate issued by that CA authenticates every push on its
        connection (PROTOCOLS.md §3.4; a request with neither gets 403
        MissingProviderToken, as from APNs). ``clock`` (wall seconds) judges token age.
        ``learn_tokens``: an unknown device token is bound to the topic of its first push
        instead of refused (``BadDeviceToken``)."""
        super().__init__(directory, host=host)
        self.tokens = TokenBook(learn=learn_tokens)
        """Device token → the one topic it belongs to (``issue_token``)."""
        self._provider_tokens: dict[int, tuple[str, int]] = {}
        """Connection number → (provider token in use, its ``iat``)."""
        self.client_ca = client_ca
        self._public_key = public_key
        self._team_id = team_id
        self._key_id = key_id
        self._clock = clock
        self.pushes: list[RecordedPush] = []
        self.rejected: list[tuple[int, str]] = []
        """(status, reason) of every refused request, in order."""
        self.unregistered: dict[str, int] = {}
        """Device tokens answered 410 Unregistered, with their timestamp (ms)."""
        self.faults: deque[MockAnswer] = deque()
        """Answers given to the next requests that pass authentication, one each."""

    # -- faults ------------------------------------------------------------------------

    def issue_token(self, token: str, topic: str) -> None:
        """``token`` is a device token for ``topic``: ``<bundle>.voip`` for a PushKit VoIP
        token, ``<bundle>`` for a remote-notification one. Pushes on another topic get
        400 DeviceTokenNotForTopic, as from APNs."""
        self.tokens.issue(token, topic)

    def unregister(self, token: str, timestamp_ms: int | None = None) -> None:
        """Answer 410 Unregistered for ``token`` from now on (``timestamp_ms``: since
        when, in the answer's ``timestamp``; now by default)."""
        self.unregistered[token] = (
            timestamp_ms if timestamp_ms is not None else int(self._clock() * 1000)
        )

    def fail_next(
        self, status: int, reason: str, *, retry_after: int | None = None, times: int = 1
    ) -> None:
        """Answer the next ``times`` authenticated requests with ``status``/``reason``."""
        headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
        for _ in range(times):
            self.faults.append(MockAnswer(status=status, reason=reason, headers=headers))

    @property
    def jwts(self) -> list[str]:
        """Distinct provider tokens seen on accepted pushes, in first-use order."""
        return list(dict.fromkeys(push.jwt for push in self.pushes))

    # -- answers -----------------------------------------------------------------------

    def _answer(self, headers: Mapping[str, str], body: bytes, number: int) -> _Reply:
        status, reason, extra = self._judge(headers, body, number)
        apns_id = headers.get("apns-id") or str(uuid.uuid4())
        answer = b""
        if status != 200:
            self.rejected.append((status, reason))
            doc: dict[str, Any] = {"reason": reason}
            if status == 410:
                doc["timestamp"] = int(extra.pop("timestamp"))
            answer = json.dumps(doc).encode()
        response = [("apns-id", apns_id), *extra.items()]
        if answer:
            response.append(("content-type", "application/json"))
        return status, response, answer

    def _judge(
        self, headers: Mapping[str, str], body: bytes, number: int
    ) -> tuple[int, str, dict[str, str]]:
        """(status, reason, extra headers) for one request, as APNs would answer."""
        path = headers.get(":path", "")
        if headers.get(":method") != "POST":
            return 405, "MethodNotAllowed", {}
        if not path.startswith("/3/device/"):
            return 404, "BadPath", {}
        token = path.removeprefix("/3/device/")
        if not token:
            return 400, "MissingDeviceToken", {}
        certificate = self.client_certs.get(number)
        provider_token = ""
        topic = headers.get("apns-topic")
        if certificate is not None:
            # Certificate auth: ``authorization`` is ignored (PROTOCOLS.md §3.2); the topic
            # defaults to the certificate's, and must be one of its app's (UID: bundle id).
            bundle = _certificate_bundle(certificate)
            topic = topic or bundle
            if bundle is not None and topic not in (bundle, f"{bundle}.voip"):
                return 400, "TopicDisallowed", {}
        else:
            auth = headers.get("authorization", "")
            if not auth.lower().startswith("bearer "):
                return 403, "MissingProviderToken", {}
            provider_token = auth[7:].strip()
            refused = self._check_token(provider_token, number)
            if refused is not None:
                return refused[0], refused[1], {}
        checked = {**headers, "apns-topic": topic or ""}
        refusal = check_apns_request(token, checked, body, book=None)
        if refusal is not None:
            return refusal[0], refusal[1], {}
        document = json.loads(body)
        if self.faults:
            fault = self.faults.popleft()
            return fault.status, fault.reason, dict(fault.headers)
        if token in self.unregistered:
            return 410, "Unregistered", {"timestamp": str(self.unregistered[token])}
        refusal = self.tokens.check(token, topic or "")
        if refusal is not None:
            return refusal[0], refusal[1], {}
        self.pushes.append(
            RecordedPush(
                token=token,
                headers=dict(headers),
                body=document,
                jwt=provider_token,
                connection=number,
                client_cert=None if certificate is None else certificate.subject.rfc4514_string(),
            )
        )
        return 200, "", {}

    def _check_token(self, token: str, number: int) -> tuple[int, str] | None:
        """None when ``token`` is a valid provider token for connection ``number``, else
        APNs' refusal: 403 for a bad or expired one, 429 TooManyProviderTokenUpdates for
        a new one less than 20 minutes (by ``iat``) after the one it replaces."""
        if self._public_key is None:
            return 403, "InvalidProviderToken"
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(
                token,
                self._public_key,
                algorithms=["ES256"],
                options={"verify_iat": False, "verify_exp": False, "require": ["iss", "iat"]},
            )
        except jwt.PyJWTError:
            return 403, "InvalidProviderToken"
        if header.get("kid") != self._key_id or claims.get("iss") != self._team_id:
            return 403, "InvalidProviderToken"
        issued_at = claims.get("iat")
        if not isinstance(issued_at, int) or self._clock() - issued_at > _TOKEN_MAX_AGE_S:
            return 403, "ExpiredProviderToken"
        current = self._provider_tokens.get(number)
        replaced = current is not None and current[0] != token
        if current is not None and replaced and issued_at - current[1] < _TOKEN_MIN_UPDATE_S:
            return 429, "TooManyProviderTokenUpdates"
        if current is None or replaced:
            self._provider_tokens[number] = (token, issued_at)
        return None


def _certificate_bundle(certificate: x509.Certificate) -> str | None:
    """The app an APNs client certificate is for: its subject's UID (the bundle id)."""
    values = certificate.subject.get_attributes_for_oid(NameOID.USER_ID)
    return str(values[0].value) if values else None


# -- FCM -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceAccountFile:
    """A service-account key file written for tests, and what verifies its assertions."""

    path: Path
    project_id: str
    client_email: str
    private_key_id: str
    public_key: bytes
    """The PEM public key matching the file's ``private_key``."""


def write_service_account(
    directory: Path,
    project_id: str,
    token_uri: str,
    *,
    client_email: str | None = None,
    private_key_id: str | None = None,
    name: str = "service-account.json",
) -> ServiceAccountFile:
    """A Google service-account JSON key file with a fresh 2048-bit RSA key."""
    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    email = client_email or f"sipwake-push@{project_id}.iam.gserviceaccount.com"
    key_id = private_key_id or secrets.token_hex(20)
    document = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": key_id,
        "private_key": private_pem.decode(),
        "client_email": email,
        "client_id": str(100_000_000_000_000_000_000 + secrets.randbelow(10**20)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    }
    path = directory / name
    write_private(path, json.dumps(document, indent=2).encode())
    return ServiceAccountFile(
        path=path,
        project_id=project_id,
        client_email=email,
        private_key_id=key_id,
        public_key=public_pem,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedFcmMessage:
    """One message the mock FCM accepted."""

    project: str
    message: Mapping[str, Any]
    """The request's ``message`` object (``token``, ``data``, ``android``…)."""
    name: str
    """The name it was answered with: ``projects/<p>/messages/<id>``."""
    access_token: str
    headers: Mapping[str, str]
    connection: int

    @property
    def token(self) -> str:
        return str(self.message["token"])


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedAccessToken:
    """An access token the mock token endpoint handed out."""

    value: str
    client_email: str
    issued_at: float
    expires_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class MockFcmFault:
    """An FCM error to answer instead of the normal outcome (``code`` in ``FCM_ERRORS``)."""

    code: str
    retry_after: int | None = None


#: FCM ``errorCode``s and Google RPC statuses the mock answers with:
#: code → (HTTP status, RPC ``status``, ``message``, whether an ``FcmError`` detail is sent).
FCM_ERRORS: Mapping[str, tuple[int, str, str, bool]] = {
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT", "Request contains an invalid argument.", True),
    "UNREGISTERED": (404, "NOT_FOUND", "Requested entity was not found.", True),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED", "SenderId mismatch", True),
    "QUOTA_EXCEEDED": (
        429,
        "RESOURCE_EXHAUSTED",
        "Quota exceeded for quota metric 'Send requests'.",
        True,
    ),
    "UNAVAILABLE": (503, "UNAVAILABLE", "The service is currently unavailable.", True),
    "INTERNAL": (500, "INTERNAL", "Internal error encountered.", True),
    "THIRD_PARTY_AUTH_ERROR": (
        401,
        "UNAUTHENTICATED",
        "Auth error from APNS or Web Push Service",
        True,
    ),
    "UNAUTHENTICATED": (
        401,
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, "
        "login cookie or other valid authentication credential.",
        False,
    ),
    "PERMISSION_DENIED": (
        403,
        "PERMISSION_DENIED",
        "Permission 'cloudmessaging.messages.create' denied on resource.",
        False,
    ),
    "NOT_FOUND": (404, "NOT_FOUND", "Requested entity was not found.", False),
}

_SEND_PATH_RE = re.compile(r"/v1/projects/([^/]+)/messages:send")
_FCM_TOKEN_RE = re.compile(r"[A-Za-z0-9_:.\-]+")
_TTL_RE = re.compile(r"(\d+)(\.\d{1,9})?s")
_PRIORITIES = frozenset({"HIGH", "NORMAL", "high", "normal"})
_RESERVED_DATA_KEYS = frozenset({"from", "message_type", "notification", "collapse_key"})
_ASSERTION_SKEW_S = 300


class _FcmRefusal(Exception):
    """Internal: a request the mock refuses with FCM error ``code``."""

    def __init__(
        self,
        code: str,
        message: str | None = None,
        field: str | None = None,
        *,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(code)
        self.code, self.message, self.field = code, message, field
        self.retry_after = retry_after


class MockFcm(_H2TlsMock):
    """A loopback FCM v1 plus OAuth token endpoint; an async context manager."""

    _stem = "mock-fcm"

    def __init__(
        self,
        directory: Path,
        *,
        project_id: str,
        clock: Callable[[], float] = time.time,
        host: str = "127.0.0.1",
        access_token_ttl_s: int = 3599,
        learn_tokens: bool = False,
    ) -> None:
        """``directory`` receives the TLS certificate; ``project_id`` is the only project
        messages may be sent to; ``clock`` (wall seconds) judges assertions and access
        token expiry; issued access tokens live ``access_token_ttl_s``; ``learn_tokens``:
        an unknown registration token is bound to the project of its first message."""
        super().__init__(directory, host=host)
        self.learn_tokens = learn_tokens
        self.senders: dict[str, str] = {}
        """Registration token → the Firebase project (sender) it was issued to."""
        self.project_id = project_id
        self._clock = clock
        self.access_token_ttl_s = access_token_ttl_s
        self._accounts: dict[str, tuple[bytes, str]] = {}
        self.issued: list[IssuedAccessToken] = []
        """Access tokens handed out, in order."""
        self._valid: dict[str, IssuedAccessToken] = {}
        self.token_requests = 0
        """Requests seen on the token endpoint (granted or not)."""
        self.messages: list[RecordedFcmMessage] = []
        self.rejected: list[tuple[int, str]] = []
        """(status, errorCode or OAuth error) of every refused request, in order."""
        self.unregistered: set[str] = set()
        """Registration tokens answered 404 UNREGISTERED."""
        self.mismatched: set[str] = set()
        """Registration tokens answered 403 SENDER_ID_MISMATCH (another project's)."""
        self.faults: deque[MockFcmFault] = deque()
        """Errors given to the next valid send requests, one each."""
        self.token_faults: deque[tuple[int, str]] = deque()
        """(status, OAuth error) given to the next token requests, one each."""

    @property
    def token_uri(self) -> str:
        """The OAuth token endpoint (the ``aud`` assertions must carry)."""
        return f"{self.base_url}/token"

    # -- accounts and faults -----------------------------------------------------------

    def add_service_account(
        self, client_email: str, public_key: bytes | str, private_key_id: str
    ) -> None:
        """Accept assertions from ``client_email`` signed by the matching private key."""
        pem = public_key.encode() if isinstance(public_key, str) else public_key
        self._accounts[client_email] = (pem, private_key_id)

    def new_service_account(
        self, directory: Path, *, project_id: str | None = None, name: str = "service-account.json"
    ) -> ServiceAccountFile:
        """Write a service-account key file for this mock's token endpoint and accept it."""
        if not self.base_url:
            raise RuntimeError("MockFcm is not started")
        account = write_service_account(
            directory, project_id or self.project_id, self.token_uri, name=name
        )
        self.add_service_account(account.client_email, account.public_key, account.private_key_id)
        return account

    def issue_token(self, token: str, project: str | None = None) -> None:
        """``token`` is a registration token of an app of ``project`` (this mock's by
        default); a message to it through another project gets SENDER_ID_MISMATCH."""
        self.senders[token] = project or self.project_id

    def unregister(self, token: str) -> None:
        """Answer 404 UNREGISTERED for ``token`` from now on."""
        self.unregistered.add(token)

    def mismatch(self, token: str) -> None:
        """Answer 403 SENDER_ID_MISMATCH for ``token`` from now on."""
        self.mismatched.add(token)

    def fail_next(self, code: str, *, retry_after: int | None = None, times: int = 1) -> None:
        """Answer the next ``times`` valid send requests with the FCM error ``code``."""
        if code not in FCM_ERRORS:
            raise ValueError(f"unknown FCM error {code!r}; expected one of {sorted(FCM_ERRORS)}")
        for _ in range(times):
            self.faults.append(MockFcmFault(code=code, retry_after=retry_after))

    def fail_token_next(self, status: int = 503, error: str = "backend_error") -> None:
        """Answer the next token request with ``status`` and OAuth ``error``."""
        self.token_faults.append((status, error))

    def revoke_access_tokens(self) -> None:
        """Forget every issued access token: sends with them get 401 UNAUTHENTICATED."""
        self._valid.clear()

    @property
    def access_tokens(self) -> list[str]:
        """Distinct access tokens seen on accepted messages, in first-use order."""
        return list(dict.fromkeys(message.access_token for message in self.messages))

    # -- answers -----------------------------------------------------------------------

    def _answer(self, headers: Mapping[str, str], body: bytes, number: int) -> _Reply:
        if headers.get(":path", "").split("?", 1)[0] == "/token":
            status, doc = self._token(headers, body)
            extra: list[tuple[str, str]] = [("cache-control", "no-store")]
            if status != 200:
                self.rejected.append((status, str(doc.get("error"))))
        else:
            try:
                doc = self._send(headers, body, number)
                status, extra = 200, []
            except _FcmRefusal as refusal:
                status, doc, extra = self._error(refusal)
                self.rejected.append((status, refusal.code))
        extra.append(("content-type", "application/json; charset=UTF-8"))
        return status, extra, json.dumps(doc).encode()

    def _error(self, refusal: _FcmRefusal) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        """Google's error JSON for ``refusal`` (PROTOCOLS.md §5), and its headers."""
        status, rpc_status, message, fcm_detail = FCM_ERRORS[refusal.code]
        details: list[dict[str, Any]] = []
        if fcm_detail:
            details.append({"@type": FCM_ERROR_TYPE, "errorCode": refusal.code})
        if refusal.field is not None:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [
                        {"field": refusal.field, "description": refusal.message or message}
                    ],
                }
            )
        error: dict[str, Any] = {
            "code": status,
            "message": refusal.message or message,
            "status": rpc_status,
        }
        if details:
            error["details"] = details
        retry_after = refusal.retry_after
        extra = [("retry-after", str(retry_after))] if retry_after is not None else []
        return status, {"error": error}, extra

    def _token(self, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        """The token endpoint: (status, JSON answer) for one assertion grant request."""
        self.token_requests += 1
        if headers.get(":method") != "POST":
            return 405, {"error": "invalid_request", "error_description": "POST only"}
        if self.token_faults:
            status, error = self.token_faults.popleft()
            return status, {"error": error}
        if not headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return 400, {"error": "invalid_request", "error_description": "form body expected"}
        form = parse_qs(body.decode(errors="replace"))
        if form.get("grant_type") != [JWT_BEARER_GRANT]:
            return 400, {"error": "unsupported_grant_type", "error_description": "Invalid grant"}
        assertions = form.get("assertion", [])
        if len(assertions) != 1:
            return 400, {"error": "invalid_request", "error_description": "assertion missing"}
        refusal = self._check_assertion(assertions[0])
        if refusal is not None:
            error, description = refusal
            return 400, {"error": error, "error_description": description}
        email = jwt.decode(assertions[0], options={"verify_signature": False})["iss"]
        now = self._clock()
        value = f"ya29.mock-{secrets.token_urlsafe(32)}"
        issued = IssuedAccessToken(
            value=value,
            client_email=email,
            issued_at=now,
            expires_at=now + self.access_token_ttl_s,
        )
        self.issued.append(issued)
        self._valid[value] = issued
        return 200, {
            "access_token": value,
            "expires_in": self.access_token_ttl_s,
            "token_type": "Bearer",
        }

    def _check_assertion(self, assertion: str) -> tuple[str, str] | None:
        """None when ``assertion`` is a valid service-account JWT, else (error, description)."""
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            return "invalid_grant", "Invalid JWT."
        account = self._accounts.get(str(unverified.get("iss")))
        if account is None:
            return "invalid_grant", "Invalid grant: account not found"
        public_key, key_id = account
        if header.get("alg") != "RS256" or header.get("kid") != key_id:
            return "invalid_grant", "Invalid JWT Signature."
        try:
            claims = jwt.decode(
                assertion,
                public_key,
                algorithms=["RS256"],
                audience=self.token_uri,
                options={
                    "verify_iat": False,
                    "verify_exp": False,
                    "require": ["iss", "aud", "iat", "exp", "scope"],
                },
            )
        except jwt.InvalidAudienceError:
            return "invalid_grant", "Invalid JWT: audience"
        except jwt.PyJWTError:
            return "invalid_grant", "Invalid JWT Signature."
        scope = claims.get("scope")
        if not isinstance(scope, str) or FCM_SCOPE not in scope.split():
            return "invalid_scope", "firebase.messaging scope missing"
        issued_at, expires_at, now = claims.get("iat"), claims.get("exp"), self._clock()
        if (
            not isinstance(issued_at, int)
            or not isinstance(expires_at, int)
            or expires_at - issued_at > 3600
            or expires_at <= now
            or issued_at > now + _ASSERTION_SKEW_S
        ):
            return (
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                "reasonable timeframe. Check your iat and exp values in the JWT claim.",
            )
        return None

    def _send(self, headers: Mapping[str, str], body: bytes, number: int) -> dict[str, Any]:
        """messages:send: the answer for a valid message, else raises ``_FcmRefusal``."""
        match = _SEND_PATH_RE.fullmatch(headers.get(":path", ""))
        if headers.get(":method") != "POST" or match is None:
            raise _FcmRefusal("NOT_FOUND")
        auth = headers.get("authorization", "")
        scheme, _, access_token = auth.partition(" ")
        issued = self._valid.get(access_token.strip()) if scheme.lower() == "bearer" else None
        if issued is None or self._clock() >= issued.expires_at:
            raise _FcmRefusal("UNAUTHENTICATED")
        project = match.group(1)
        if project != self.project_id:
            raise _FcmRefusal("PERMISSION_DENIED")
        message = self._check_message(body)
        if self.faults:
            fault = self.faults.popleft()
            raise _FcmRefusal(fault.code, retry_after=fault.retry_after)
        token = str(message["token"])
        if token in self.unregistered:
            raise _FcmRefusal("UNREGISTERED")
        if token in self.mismatched:
            raise _FcmRefusal("SENDER_ID_MISMATCH")
        sender = self.senders.get(token)
        if sender is None and self.learn_tokens:
            sender = self.senders[token] = project
        if sender is None:
            raise _FcmRefusal(
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
                "message.token",
            )
        if sender != project:
            raise _FcmRefusal("SENDER_ID_MISMATCH")
        name = f"projects/{project}/messages/0:{len(self.messages) + 1:016d}%mock"
        self.messages.append(
            RecordedFcmMessage(
                project=project,
                message=message,
                name=name,
                access_token=issued.value,
                headers=dict(headers),
                connection=number,
            )
        )
        return {"name": name}

    def _check_message(self, body: bytes) -> dict[str, Any]:
        """The request's ``message``, checked as FCM checks it (PROTOCOLS.md §5)."""
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise _FcmRefusal("INVALID_ARGUMENT", "Invalid JSON payload received.") from None
        message = document.get("message") if isinstance(document, dict) else None
        if not isinstance(message, dict):
            raise _FcmRefusal("INVALID_ARGUMENT", "message is required", "message")
        token = message.get("token")
        if not isinstance(token, str) or not token:
            raise _FcmRefusal("INVALID_ARGUMENT", "Recipient of the message is not set.")
        if not _FCM_TOKEN_RE.fullmatch(token):
            raise _FcmRefusal(
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
                "message.token",
            )
        data = message.get("data", {})
        if not isinstance(data, dict):
            raise _FcmRefusal("INVALID_ARGUMENT", "data must be a map", "message.data")
        for index, (key, value) in enumerate(data.items()):
            if not isinstance(value, str):
                raise _FcmRefusal(
                    "INVALID_ARGUMENT",
                    f"Invalid value at 'message.data[{index}].value' (TYPE_STRING)",
                    f"message.data[{index}].value",
                )
            if key in _RESERVED_DATA_KEYS or key.startswith(("google", "gcm")):
                raise _FcmRefusal(
                    "INVALID_ARGUMENT", f"Invalid data payload key: {key}", "message.data"
                )
        if data_size(data) > FCM_DATA_LIMIT:
            raise _FcmRefusal("INVALID_ARGUMENT", "Android message is too big", "message")
        android = message.get("android", {})
        if not isinstance(android, dict):
            raise _FcmRefusal("INVALID_ARGUMENT", "android must be an object", "message.android")
        priority = android.get("priority", "NORMAL")
        if priority not in _PRIORITIES:
            raise _FcmRefusal(
                "INVALID_ARGUMENT",
                f"Invalid value at 'message.android.priority': {str(priority)[:20]!r}",
                "message.android.priority",
            )
        ttl = android.get("ttl", "2419200s")
        ttl_match = _TTL_RE.fullmatch(ttl) if isinstance(ttl, str) else None
        if ttl_match is None or int(ttl_match.group(1)) > MAX_TTL_S:
            raise _FcmRefusal(
                "INVALID_ARGUMENT",
                "Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf"
                ".Duration)",
                "message.android.ttl",
            )
        return message
