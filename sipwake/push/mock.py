"""A mock APNs provider API on loopback: HTTP/2 over TLS, for integration tests.

It checks what real APNs checks and matters to us (PROTOCOLS.md §3): the ES256 provider
token (signature with the configured public key, ``kid``, ``iss``, age under one hour),
``apns-topic`` ending in ``.voip`` for VoIP pushes, and the payload size. Accepted pushes
are recorded; faults are injected on demand (410 for chosen tokens, queued error answers
such as 429 with ``Retry-After`` or 503, added latency). It counts TLS connections so a
test can see that a client multiplexes streams over one.

    async with MockApns(tmp_path, public_key=pem, team_id="T", key_id="K") as apns:
        provider = ApnsProvider(..., base_url=apns.base_url, ssl_context=apns.client_ssl())

The server lives in this package so that tests and the lab CLI can both start it; it is
test tooling, not production code.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import ssl
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ConnectionTerminated, DataReceived, RequestReceived, StreamEnded, StreamReset

from sipwake.push.payload import ALERT_PAYLOAD_LIMIT, VOIP_PAYLOAD_LIMIT

__all__ = ["MockAnswer", "MockApns", "RecordedPush", "write_self_signed_cert"]

_TOKEN_MAX_AGE_S = 3600


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedPush:
    """One push the mock accepted."""

    token: str
    headers: Mapping[str, str]
    """Request headers, lower case, ``authorization`` included (the verified JWT)."""
    body: Any
    jwt: str
    connection: int
    """Which TLS connection (1, 2, …) carried the push."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MockAnswer:
    """An answer to give instead of the normal one (a fault)."""

    status: int
    reason: str
    headers: Mapping[str, str] = field(default_factory=dict)


def write_self_signed_cert(directory: Path, *, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed P-256 certificate for ``host`` (IP SAN and ``localhost``): (cert, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mock-apns.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "mock-apns.pem", directory / "mock-apns.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class MockApns:
    """A loopback APNs; an async context manager that starts and stops it."""

    def __init__(
        self,
        directory: Path,
        *,
        public_key: str | bytes,
        team_id: str,
        key_id: str,
        clock: Callable[[], float] = time.time,
        host: str = "127.0.0.1",
    ) -> None:
        """``directory`` receives the TLS certificate; ``public_key`` (PEM) verifies tokens;
        ``clock`` (wall seconds) judges token age."""
        self._directory = directory
        self._public_key = public_key
        self._team_id = team_id
        self._key_id = key_id
        self._clock = clock
        self._host = host
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._connection_tasks: set[asyncio.Task[Any]] = set()
        self.cert_file: Path | None = None
        self.base_url = ""
        self.pushes: list[RecordedPush] = []
        self.rejected: list[tuple[int, str]] = []
        """(status, reason) of every refused request, in order."""
        self.connections = 0
        self.unregistered: dict[str, int] = {}
        """Device tokens answered 410 Unregistered, with their timestamp (ms)."""
        self.faults: deque[MockAnswer] = deque()
        """Answers given to the next requests that pass authentication, one each."""
        self.latency = 0.0
        """Seconds to wait before answering each request."""

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> MockApns:
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
            # Closing the transports ends each connection's read loop; wait for them.
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
            raise RuntimeError("MockApns is not started")
        return ssl.create_default_context(cafile=str(self.cert_file))

    # -- faults ------------------------------------------------------------------------

    def unregister(self, token: str, timestamp_ms: int | None = None) -> None:
        """Answer 410 Unregistered for ``token`` from now on."""
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
        status, reason, extra = self._judge(headers, bytes(body), number)
        apns_id = headers.get("apns-id") or str(uuid.uuid4())
        answer = b""
        if status != 200:
            self.rejected.append((status, reason))
            doc: dict[str, Any] = {"reason": reason}
            if status == 410:
                doc["timestamp"] = int(extra.pop("timestamp"))
            answer = json.dumps(doc).encode()
        response = [(":status", str(status)), ("apns-id", apns_id), *extra.items()]
        if answer:
            response += [("content-type", "application/json"), ("content-length", str(len(answer)))]
        try:
            conn.send_headers(stream_id, response, end_stream=not answer)
            if answer:
                conn.send_data(stream_id, answer, end_stream=True)
            writer.write(conn.data_to_send())
            await writer.drain()
        except Exception:  # the client went away or reset the stream
            return

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
        auth = headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            return 403, "MissingProviderToken", {}
        provider_token = auth[7:].strip()
        refusal = self._check_token(provider_token)
        if refusal is not None:
            return 403, refusal, {}
        push_type = headers.get("apns-push-type")
        topic = headers.get("apns-topic")
        if not topic:
            return 400, "MissingTopic", {}
        if push_type is None or push_type not in ("alert", "background", "voip"):
            return 400, "InvalidPushType", {}
        if (push_type == "voip") != topic.endswith(".voip"):
            return 400, "BadTopic", {}
        if not body:
            return 400, "PayloadEmpty", {}
        if len(body) > (VOIP_PAYLOAD_LIMIT if push_type == "voip" else ALERT_PAYLOAD_LIMIT):
            return 413, "PayloadTooLarge", {}
        try:
            document = json.loads(body)
        except ValueError:
            return 400, "BadPayload", {}
        if self.faults:
            fault = self.faults.popleft()
            return fault.status, fault.reason, dict(fault.headers)
        if token in self.unregistered:
            return 410, "Unregistered", {"timestamp": str(self.unregistered[token])}
        self.pushes.append(
            RecordedPush(
                token=token,
                headers=dict(headers),
                body=document,
                jwt=provider_token,
                connection=number,
            )
        )
        return 200, "", {}

    def _check_token(self, token: str) -> str | None:
        """None when ``token`` is a valid provider token, else APNs' 403 reason."""
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(
                token,
                self._public_key,
                algorithms=["ES256"],
                options={"verify_iat": False, "verify_exp": False, "require": ["iss", "iat"]},
            )
        except jwt.PyJWTError:
            return "InvalidProviderToken"
        if header.get("kid") != self._key_id or claims.get("iss") != self._team_id:
            return "InvalidProviderToken"
        issued_at = claims.get("iat")
        if not isinstance(issued_at, int) or self._clock() - issued_at > _TOKEN_MAX_AGE_S:
            return "ExpiredProviderToken"
        return None
