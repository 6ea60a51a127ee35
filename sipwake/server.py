"""``sipwake serve``: wire the node to real sockets, a store and the loop's clock.

Ordinary asyncio I/O code. ``Server.start()`` binds the listeners and loads the
bindings; ``Server.run()`` serves until SIGINT/SIGTERM (or ``stop()``), then
closes the flows and the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import hashlib
import hmac
import logging
import os
import secrets
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from sipwake.admin import AdminServer
from sipwake.calls.recorder import CallRecorder, binding_devices
from sipwake.config import BUILTIN_VOICEMAIL, Config
from sipwake.errors import ConfigError
from sipwake.ids import SystemIds
from sipwake.mobile import MobileServer
from sipwake.node import Node, NodeSettings
from sipwake.proxy.plan import CallPlan
from sipwake.proxy.qualify import QualifySettings
from sipwake.proxy.routing import LocalAddress, Locality
from sipwake.push.configure import providers_from_config
from sipwake.push.registry import PushProviders
from sipwake.push.sandbox import SandboxProvider
from sipwake.registrar.config import RegistrarConfig
from sipwake.registrar.events import BindingAdded
from sipwake.registrar.registrar import Registrar
from sipwake.sip.auth import DigestServer
from sipwake.sip.peer import Peer
from sipwake.store.background import LogWriter
from sipwake.store.base import BindingStore
from sipwake.store.sqlite import SqliteStore
from sipwake.store.writer import BindingWriter
from sipwake.transaction.layer import TransactionLayer
from sipwake.transport.base import (
    ListenerConfig,
    LocalAddr,
    TransportLimits,
    TransportManager,
)
from sipwake.transport.driver import Driver
from sipwake.voicemail.server import VoicemailServer

__all__ = ["Server", "demo_password", "load_secret"]

logger = logging.getLogger("sipwake.server")

#: Seconds a call's entries gather in the recorder before they go to the writer thread.
RECORDS_DELAY = 0.005


def load_secret(path: Path) -> bytes:
    """The node's secret (nonces, demo passwords): read, or made on first run (mode 0600)."""
    try:
        data = path.read_bytes().strip()
        if len(data) >= 32:
            return data
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot read the secret file: {exc.strerror}", path=str(path)) from exc
    secret = secrets.token_hex(32).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secret + b"\n")
    except OSError as exc:
        raise ConfigError(f"cannot write the secret file: {exc.strerror}", path=str(path)) from exc
    return secret


def demo_password(secret: bytes, user: str) -> str:
    """A stable password for a demo user without one: derived from the node's secret."""
    digest = hmac.new(secret, f"demo-password:{user}".encode(), hashlib.sha256).hexdigest()
    return digest[:12]


def _provider_label(provider: object, config: Config, route: str = "") -> str:
    """A push provider as the banner names it: its kind and where it sends."""
    name = getattr(provider, "name", None) or route.split(".")[0] or type(provider).__name__
    push = config.push
    if name == "webhook" and push.webhook is not None:
        parts = urlsplit(push.webhook.url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"webhook {parts.scheme}://{host}{port}{parts.path} (README: Webhook)"
    if name == "apns" and push.apns is not None:
        a = push.apns
        auth = "certificate" if a.cert_file is not None else f"token, team {a.team_id}"
        where = a.base_url or a.environment
        return f"APNs {where} ({auth}, topic {a.bundle_id}.voip)"
    if name == "fcm" and push.fcm is not None:
        return f"FCM HTTP v1 ({push.fcm.service_account.name})"
    if name == "webpush":
        return "Web Push (VAPID)"
    return str(name)


@dataclass(slots=True)
class Server:
    config: Config
    open: bool = False
    trace: bool = False
    passwords: dict[str, str] = field(default_factory=dict)
    bound: list[LocalAddress] = field(default_factory=list)
    node: Node | None = None
    _transports: TransportManager | None = None
    _driver: Driver | None = None
    pusher: PushProviders | None = None
    admin: AdminServer | None = None
    voicemail: VoicemailServer | None = None
    mobile: MobileServer | None = None
    recorder: CallRecorder | None = None
    sandbox: SandboxProvider | None = None
    _store: BindingStore | None = None
    _log: LogWriter | None = None
    _bindings: BindingWriter | None = None
    _stop: asyncio.Event | None = None

    async def start(self) -> None:
        config = self.config
        secret = load_secret(config.secret_file)
        self.passwords = {
            name: user.password or demo_password(secret, name)
            for name, user in config.users.items()
        }
        ids = SystemIds()
        layer = TransactionLayer(ids, max_transactions=config.limits.max_transactions)
        auth = DigestServer(
            config.realm,
            secret,
            algorithms=tuple(config.auth.algorithms),
            nonce_lifetime=config.auth.nonce_lifetime_s,
        )
        self._stop = asyncio.Event()

        def receive(data: bytes, peer: Peer, local: LocalAddr) -> None:
            driver = self._driver
            if driver is not None:  # nothing is served before the node is ready
                driver.on_bytes(data, peer, local)

        def flow_closed(flow: int) -> None:
            driver = self._driver
            if driver is not None:
                driver.on_flow_closed(flow)

        def send_failed(data: bytes, peer: Peer) -> None:
            driver = self._driver
            if driver is not None:
                driver.on_send_failed(data, peer)

        self._transports = TransportManager(
            receive,
            on_flow_closed=flow_closed,
            on_send_failed=send_failed,
            limits=TransportLimits(
                max_message=config.limits.max_message_bytes,
                max_flows_per_ip=config.limits.max_connections_per_source,
                message_timeout=config.limits.message_timeout_s,
                tls_handshake_timeout=config.limits.tls_handshake_timeout_s,
                ws_handshake_timeout=config.limits.ws_handshake_timeout_s,
                idle_timeout=config.limits.idle_timeout_s,
            ),
            tls_dir=config.tls.dir,
        )
        listeners = [
            ListenerConfig(
                transport=spec.transport,
                host=spec.host,
                port=spec.port,
                cert=config.tls.cert,
                key=config.tls.key,
            )
            for spec in config.listen
        ]
        await self._transports.start(listeners)
        self.bound = [
            LocalAddress(transport=b.transport, host=b.host, port=b.port)
            for b in self._transports.bound()
        ]
        hosts = {b.host for b in self.bound} | {"localhost", config.domain, *config.aliases}
        registrar = Registrar(
            ids=ids,
            config=RegistrarConfig(
                domains=hosts,
                canonical_domain=config.domain,
                push_providers=frozenset(config.registrar.push_providers),
                default_expires=config.registrar.default_expires_s,
                min_expires=config.registrar.min_expires_s,
                max_expires=config.registrar.max_expires_s,
                max_push_expires=config.registrar.push_max_expires_s,
                max_bindings_per_aor=config.registrar.max_bindings_per_aor,
            ),
        )
        # The registrar holds the bindings; a store is where they outlive the process.
        # With the memory backend there is nothing to outlive it for: no store at all.
        # Binding changes are committed by a writer thread (the loop goes on meanwhile; the
        # 200s wait for the commit), call records and the push log by another (nobody
        # waits for them); the loop's connection loads and keeps held messages.
        lock = threading.Lock()
        self._store = (
            SqliteStore(config.store.path, lock=lock) if config.store.backend == "sqlite" else None
        )
        loop = asyncio.get_running_loop()
        if self._store is not None:
            self._log = LogWriter(config.store.path, lock=lock, reader=self._store)
            self._bindings = BindingWriter(config.store.path, loop=loop, lock=lock)
        restored = self._store.load(loop.time(), time.time()) if self._store is not None else []
        registrar.restore(restored)
        # Few of sipwake's objects form cycles: collect rarely, and never walk what start-up
        # built (the restored bindings) again. A gen1 collection walks up to 20,000 x 10
        # young objects, about 50 ms (with x 50 it was 0.3 s: long enough for UDP peers
        # to retransmit); the total work is the same, in shorter pauses.
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 10, 100)
        locality = Locality(
            domain=config.domain,
            aliases=frozenset(config.aliases) | {"localhost"},
            listeners=tuple(self.bound),
        )
        if config.uses_builtin_voicemail:
            box = config.voicemail_box
            self.voicemail = VoicemailServer(
                box.host, box.port, box.dir, max_message_s=box.max_message_s
            )
            await self.voicemail.start()
            logger.info("voicemail at %s, messages in %s", self.voicemail.uri, box.dir)
        if config.uses_builtin_mobile:
            mobile_box = config.mobile_box
            self.mobile = MobileServer(
                mobile_box.host, mobile_box.port, answer_after=config.mobile_answer_after
            )
            await self.mobile.start()
        settings = NodeSettings(
            domain=config.domain,
            realm=config.realm,
            users=dict(self.passwords),
            open=self.open or config.auth.open,
            max_message_bytes=config.limits.max_message_bytes,
            plan=self._plan(None),
            plans={name: self._plan(name) for name in config.users},
            requests_per_source=config.limits.rate("requests_per_source"),
            wake_pushes_per_source=config.limits.rate("wake_pushes_per_source"),
            wake_pushes_per_user=config.limits.rate("wake_pushes_per_user"),
            trusted_sources=tuple(config.limits.trusted_sources),
            auth_guard=config.auth.guard(),
            qualify=QualifySettings(
                enabled=config.calls.udp_qualify,
                timeout_s=config.calls.udp_qualify_timeout_s,
                per_s=config.calls.udp_qualify_per_s,
            ),
            secret=secret,
        )
        for name, plan in settings.plans.items():
            for warning in plan.warnings():
                logger.warning("user %s: %s", name, warning)
        self.node = Node(
            settings=settings,
            ids=ids,
            locality=locality,
            registrar=registrar,
            layer=layer,
            auth=auth,
        )
        self.node.restore(BindingAdded(binding=b) for b in restored)
        if isinstance(self._store, SqliteStore):
            held = self.node.restore_messages(
                (mid, aor, data) for mid, aor, data, _ in self._store.held_messages()
            )
            if held:
                logger.info("%d instant messages wait for their devices", held)
        if self._log is not None:
            self.recorder = CallRecorder(
                self._log,
                wall_offset=time.time() - loop.time(),
                schedule=loop.call_later,
                flush_delay=RECORDS_DELAY,
                devices=binding_devices(lambda aor: registrar.lookup(aor, loop.time())),
            )
        self.sandbox = SandboxProvider()
        self.pusher = providers_from_config(
            config.push, secret=secret, log=self._log, sandbox=self.sandbox
        )
        driver = Driver(
            self.node,
            sink=self._bindings,
            trace=self.trace,
            shed_load=config.limits.shed_load,
            pusher=self.pusher,
            messages=self._store if isinstance(self._store, SqliteStore) else None,
            calls=self.recorder,
        )
        driver.sender = self._transports
        self._driver = driver
        self._transports.receive_with(driver.on_bytes)
        self._transports.keepalives_to(driver.on_keepalive)
        driver._rearm()
        address = config.admin_address(self.bound[0].port if self.bound else None)
        if address is not None:
            node = self.node
            mobile = self.mobile
            admin = AdminServer(
                lambda: {
                    "domain": config.domain,
                    "calls_active": len(node.wake),
                    "users": node.snapshot(loop.time()),
                    "limits": node.limits_snapshot(),
                    "mobile_calls": mobile.status() if mobile is not None else [],
                },
                *address,
                action=self._admin_action,
                identity={
                    "domain": config.domain,
                    "folder": str(config.admin_file.resolve().parent),
                },
            )
            # ``auto`` takes any free port when its usual one is taken; an address the
            # configuration names is the user's: not getting it stops the start.
            try:
                await admin.start(fallback_to_any_port=config.admin == "auto")
            except OSError as exc:
                raise OSError(
                    exc.errno,
                    f"admin endpoint {config.admin}: {exc.strerror} "
                    "(--admin HOST:PORT elsewhere, --admin auto or --admin off)",
                ) from exc
            self.admin = admin
            try:
                admin.write_file(config.admin_file)
            except OSError as exc:
                logger.warning("cannot write %s: %s", config.admin_file, exc.strerror)
        logger.info(
            "sipwake serving %s on %s (%d bindings restored)",
            config.domain,
            ", ".join(f"{b.transport}:{b.host_port}" for b in self.bound),
            len(restored),
        )

    def describe(self) -> list[tuple[str, str]]:
        """What this server does with a call beyond ringing phones, one ``(what, how)``
        per line of the start banner: push routes, voicemail, twinning. No secret: a
        webhook URL is shown without its query and credentials."""
        lines: list[tuple[str, str]] = []
        config = self.config
        if self.pusher is not None:
            for key, provider in self.pusher.routes.items():
                lines.append(("push", f"{key:<9} -> {_provider_label(provider, config, key)}"))
            fallback = self.pusher.fallback
            rest = "every push" if not self.pusher.routes else "other pushes"
            if fallback is self.sandbox:
                how = "sandbox: recorded, nobody woken (sipwake pushes; README: Push)"
            else:
                how = _provider_label(fallback, config)
            lines.append(("push", f"{rest} -> {how}"))
        plans = {name: self._plan(name) for name in config.users}
        if self.voicemail is not None:
            lines.append(
                (
                    "voicemail",
                    f"built-in {self.voicemail.uri}, messages in {config.voicemail_box.dir}",
                )
            )
        targets = sorted(
            {p.voicemail for p in plans.values() if p.voicemail}
            - {self.voicemail.uri if self.voicemail is not None else ""}
        )
        for target in targets:
            users = ", ".join(n for n, p in plans.items() if p.voicemail == target)
            lines.append(("voicemail", f"{target} for {users}"))
        if self.voicemail is None and not targets:
            lines.append(("voicemail", "none: unanswered calls end 480/408 (calls.voicemail)"))
        twins = {n: u.mobile for n, u in config.users.items() if u.mobile}
        if not twins:
            lines.append(("twinning", "none (no user has a mobile number)"))
        elif self.mobile is not None:
            listed = ", ".join(f"{n} {m}" for n, m in twins.items())
            lines.append(
                ("twinning", f"built-in mobile for {listed} (sipwake mobile answer NUMBER)")
            )
        else:
            listed = ", ".join(twins)
            lines.append(("twinning", f"{config.calls.twin_gateway} for {listed}"))
        return lines

    def _admin_action(self, path: str) -> tuple[int, dict[str, object]]:
        """``POST /mobile/NUMBER/answer`` (or ``reject``, ``hangup``): the built-in mobile;
        ``POST /dnd/USER/on`` (or ``off``): the user's do-not-disturb (``sipwake dnd``)."""
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "dnd":
            return self._dnd_action(parts[1], parts[2])
        if len(parts) != 3 or parts[0] != "mobile":
            return 404, {"error": f"no such action: {path[:80]}"}
        if self.mobile is None:
            return 409, {
                "error": "no built-in mobile (no user has a mobile number, or "
                "calls.twin_gateway is set)"
            }
        number, verb = parts[1], parts[2]
        commands = {
            "answer": self.mobile.answer,
            "reject": self.mobile.reject,
            "hangup": self.mobile.hang_up,
        }
        command = commands.get(verb)
        if command is None:
            return 404, {"error": f"unknown mobile action {verb[:20]!r}: answer, reject, hangup"}
        count = command(number)
        if count == 0:
            return 409, {"error": f"no call to {verb} on {number}", "calls": 0}
        return 200, {"number": number, "action": verb, "calls": count}

    def _dnd_action(self, user: str, state: str) -> tuple[int, dict[str, object]]:
        """Set ``user``'s DND while the server runs (kept in memory: a restart returns to
        ``users.<name>.dnd``), as the phone's ``*78``/``*79`` does."""
        if state not in ("on", "off"):
            return 404, {"error": f"DND is on or off, not {state[:20]!r}"}
        node = self.node
        if node is None or not node.set_dnd(user, state == "on"):
            return 404, {"error": f"no user {user[:40]!r} on this server"}
        logger.info("DND %s for %s (admin)", state, user)
        return 200, {"user": user, "dnd": state == "on"}

    def _plan(self, user: str | None) -> CallPlan:
        """The user's call plan, ``builtin`` voicemail replaced by its URI, the twin sent
        to the built-in mobile when there is no gateway."""
        plan = self.config.call_plan(user)
        entry = self.config.users.get(user) if user is not None else None
        if self.mobile is not None and plan.twin is None and entry is not None and entry.mobile:
            plan = dataclasses.replace(plan, twin=self.mobile.uri(entry.mobile))
        if self.voicemail is None:
            return plan
        uri = self.voicemail.uri

        def swap(value: str | None) -> str | None:
            return uri if value == BUILTIN_VOICEMAIL else value

        return dataclasses.replace(
            plan,
            voicemail=swap(plan.voicemail),
            forward_no_answer=swap(plan.forward_no_answer),
            forward_busy=swap(plan.forward_busy),
        )

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    async def run(self) -> None:
        """Serve until SIGINT/SIGTERM or ``stop()``."""
        if self.node is None:
            await self.start()
        assert self._stop is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        try:
            await self._stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
            await self.close()

    async def close(self) -> None:
        if self.admin is not None:
            await self.admin.close()
            self.admin = None
        if self._driver is not None:
            # The REGISTERs whose changes are gathering or committing get their answers.
            if not await self._driver.drain():
                logger.warning("binding changes still committing at the stop: not answered")
            self._driver.close()
        if self.pusher is not None:
            await self.pusher.close()
            self.pusher = None
        if self.voicemail is not None:
            await self.voicemail.close()
            self.voicemail = None
        if self.mobile is not None:
            await self.mobile.close()
            self.mobile = None
        if self._transports is not None:
            await self._transports.close()
            self._transports = None
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._bindings is not None:
            self._bindings.close()
            self._bindings = None
        if self._store is not None:
            self._store.close()
            self._store = None
        logger.info("sipwake stopped")
