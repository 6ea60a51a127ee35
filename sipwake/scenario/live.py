"""Replay a scenario in real time over loopback sockets (``sipwake replay --clock real``).

The same agents as the virtual replay, each on its own sockets (``TransportManager`` on
127.0.0.1, port 0: UDP, TCP or TLS as the device says), against a real server:

* by default an embedded ``sipwake.server.Server`` (the code ``sipwake serve`` runs) on
  127.0.0.1 port 0 (UDP, TCP, TLS), with the scenario's call plans, open registration
  for the scenario's users, and an SQLite store in a temporary directory (so
  ``restart_server`` really closes the server and starts a new one on the same ports
  from that file). Pushes go to the server's sandbox provider; when the scenario
  makes APNs or FCM fail (``push_fails``) they go to the mock services of
  ``sipwake mock-push`` (``MockApns``/``MockFcm``) started in-process, which answer
  the scheduled failures as the real services would. Webpush faults are answered by
  the push tap itself (the sandbox cannot fail by time window).
  When a user of the scenario has a ``password`` the embedded server authenticates
  (``auth.open`` false, every scenario user with the password given; MD5 challenges,
  ``sipwake serve``'s default) and the agents answer its challenges.
* with ``target=(host, port)``, any SIP server: UDP and TCP devices use ``port``, TLS
  ones ``port + 1``. Its own settings apply (the scenario's ``pbx`` section does not);
  it must know the ``lab.test`` users, with the scenario's passwords when it
  authenticates. The agents see no server internals there: a push counts when it
  reaches the mock APNs or FCM this module starts (``MockPush``: APNs on a fixed
  port, FCM on the next, with keys and certificates kept in a directory, as
  ``sipwake mock-push`` does, so the server is configured for them once; their URLs
  are in ``LiveRunner.mock_urls`` and the server's ``push:`` settings in the
  directory's ``push.yaml``), the call it belongs to is guessed as the latest one to
  that device's user, and voicemail or twinning cannot be replayed (the server does
  not know the simulated voicemail's and gateway's addresses).

Time is the event loop's: scenario time 0 is when the devices have registered (and the
suspended ones disconnected), and a 30 s scenario takes up to 30 s. Unless ``full`` is
asked for, the run ends earlier once nothing more can happen that an expectation
looks at: every step done, every call and message answered, no wake or network loss
pending, past the last time an expectation names, and a second without traffic.

Limits against the virtual replay: messages take the loopback's time (not
``network_delay_s``); a suspended UDP device registers at time -2 s, so the server
counts it as foreground for ``udp_foreground_s`` after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from sipwake.config import (
    ApnsConfig,
    AuthConfig,
    Config,
    FcmConfig,
    ListenerSpec,
    PushConfig,
    StoreConfig,
    TlsConfig,
    UserConfig,
)
from sipwake.node import CallEvent, SendPush
from sipwake.proxy.plan import CallPlan
from sipwake.push.base import PushOutcome, PushRequest
from sipwake.push.mock import MockApns, MockFcm, _FcmRefusal
from sipwake.push.mockcli import (
    KEY_ID,
    MOCK_PUSH_PORT,
    apns_key,
    mock_ports,
    push_settings,
    service_account,
)
from sipwake.scenario.agents import HOST, DeviceAgent, Transmit, UserAgent
from sipwake.scenario.model import (
    AnsweredExpect,
    DeviceCancelledExpect,
    MessageDeliveredExpect,
    PushExpect,
    RingingExpect,
    Scenario,
    TimedExpect,
)
from sipwake.scenario.pushview import clear_in
from sipwake.scenario.record import PushRecordSeen, Replay, label
from sipwake.scenario.runner import fault_windows
from sipwake.scenario.virtual import FaultWindow, PushSandbox
from sipwake.scenario.world import BUNDLE, DOMAIN, FCM_PROJECT, PUSH, SERVER, TEAM, World
from sipwake.server import Server
from sipwake.sip.parser import parse_message
from sipwake.sip.peer import Peer
from sipwake.transport import tls
from sipwake.transport.base import ListenerConfig, LocalAddr, TransportManager

__all__ = ["LiveRunner", "MockPush", "MockPushError", "horizon", "replay_live"]

logger = logging.getLogger("sipwake.scenario.live")

_SETUP_S = 1.0
"""Scenario time 0 is this long after the start: the devices register before it."""
_QUIET_S = 1.0
_KEY_ID = KEY_ID
_TRANSPORTS: dict[str, Literal["udp", "tcp", "tls"]] = {"udp": "udp", "tcp": "tcp", "tls": "tls"}
_FCM_CODES = {400: "INVALID_ARGUMENT", 403: "SENDER_ID_MISMATCH", 404: "UNREGISTERED"}
_FCM_CODES |= {429: "QUOTA_EXCEEDED", 500: "INTERNAL", 503: "UNAVAILABLE"}


@dataclass(frozen=True, slots=True)
class MockPush:
    """Where a ``--target`` replay's mock push services listen and keep their files:
    APNs on ``port``, FCM on ``port + 1`` (``port + 2`` is Web Push's in ``sipwake
    mock-push``); keys, certificates and ``push.yaml`` in ``directory``."""

    host: str = "127.0.0.1"
    port: int = MOCK_PUSH_PORT
    directory: Path = field(default_factory=lambda: Path("sipwake-mock-push"))

    def url(self, provider: str) -> str:
        return f"https://{self.host}:{mock_ports(self.port)[provider]}"


class MockPushError(OSError):
    """A mock push service could not start (its port is taken, the directory unusable)."""


class _ScenarioServer(Server):
    """``sipwake serve``'s server with the scenario's call plans."""

    plans: dict[str | None, CallPlan]

    def _plan(self, user: str | None) -> CallPlan:
        return self.plans.get(user, self.plans[None])


class _Link:
    """One agent's sockets."""

    def __init__(self, agent: UserAgent, manager: TransportManager) -> None:
        self.agent = agent
        self.manager = manager
        self.flows: set[int] = set()
        self.timer: asyncio.TimerHandle | None = None
        self.deadline: float | None = None


class LiveRunner(World):
    """One real-time replay (see the module text); ``await run()``."""

    def __init__(
        self,
        scenario: Scenario,
        workdir: Path,
        *,
        target: tuple[str, int] | None = None,
        mocks: MockPush | None = None,
        full: bool = False,
    ) -> None:
        super().__init__(scenario, embedded=target is None)
        self.auth_notes()
        self.workdir = workdir
        self.target = target
        self.mocks = (mocks or MockPush()) if target is not None else None
        self.full = full
        self.record.clock = "real"
        self.record.target = f"{target[0]}:{target[1]}" if target is not None else None
        if target is not None:
            # The target outlives the run: each run registers in a REGISTER dialog of
            # its own, or a second run of the same seed would be refused 500.
            run = secrets.token_hex(4)
            for device in self.devices.values():
                device.new_registration_call_id(f"{device.ids.call_id()}-{run}")
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time() + _SETUP_S
        self.links: dict[str, _Link] = {}
        self.server: _ScenarioServer | None = None
        self.server_ports: dict[str, int] = {}
        self.faults = fault_windows(scenario)
        self.sandbox = PushSandbox(latency_s=0.0, faults=self.faults, bundle_id=BUNDLE)
        for provider, token, owner in self.issued:
            if provider == "apns":
                self.sandbox.issue_apns(token, owner)
            elif provider == "fcm":
                self.sandbox.issue_fcm(token, owner)
        self.apns: _ScenarioApns | None = None
        self.fcm: _ScenarioFcm | None = None
        self.mock_urls: dict[str, str] = {}
        self.apns_key_file: Path | None = None
        self.fcm_account: Path | None = None
        self._push_ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handles: list[asyncio.TimerHandle] = []
        self._busy = 0
        """Things under way that end later (wakes, network losses, restarts)."""
        self._last_traffic = -math.inf
        self._config: Config | None = None

    # -- World ------------------------------------------------------------------------------
    @property
    def now(self) -> float:
        return round(self.loop.time() - self.t0, 6)

    def agent_now(self) -> float:
        return self.loop.time()

    def later(self, delay: float, action: Callable[[], None]) -> None:
        self._busy += 1

        def run() -> None:
            self._busy -= 1
            self._guard(action)

        self._handles.append(self.loop.call_later(delay, run))

    def send_out(self, agent: UserAgent, transmit: Transmit) -> None:
        self._last_traffic = self.now
        link = self.links[agent.name]
        link.manager.send(transmit.message.to_bytes(), transmit.peer)

    def connect(self, device: DeviceAgent) -> None:
        self.disconnect(device)  # the next message opens a new connection

    def disconnect(self, device: DeviceAgent) -> None:
        link = self.links[device.name]
        for flow in sorted(link.flows):
            link.manager.close_flow(flow)
        link.flows.clear()
        device.flow = None

    def restart_server(self, down_s: float) -> None:
        if self.server is None:
            self.note(SERVER, "cannot restart a server it did not start (--target)")
            return
        self._busy += 1
        self._spawn(self._restart(down_s))

    async def _restart(self, down_s: float) -> None:
        stopped = self.loop.time()
        server, self.server = self.server, None
        if server is not None:
            await server.close()
        for link in self.links.values():
            link.flows.clear()
        await asyncio.sleep(max(0.0, stopped + down_s - self.loop.time()))
        await self._start_server(again=True)
        self._busy -= 1
        self._guard(self.server_back)

    # -- running -------------------------------------------------------------------------
    async def run(self) -> Replay:
        try:
            await self._start()
            await self._setup()
            delay = self.t0 - self.loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:  # setup overran: time 0 is now
                self.t0 = self.loop.time()
            for step in self.scenario.timeline:
                action = functools.partial(self.run_step, step)
                self._handles.append(self.loop.call_at(self.t0 + step.at, self._guard, action))
            await self._wait_end()
        finally:
            await self._close()
        self.record.end = self.now
        self.record.columns = self.columns()
        return self.record

    async def _start(self) -> None:
        await self._start_mocks()
        client = tls.client_context(verify=False)
        for agent in self.agents:
            manager = TransportManager(
                functools.partial(self._received, agent),
                on_flow_closed=functools.partial(self._flow_closed, agent.name),
                tls_dir=self.workdir / "agent-tls",
                tls_client=client,
            )
            listener = ListenerConfig(transport=_TRANSPORTS[agent.transport], host=HOST, port=0)
            await manager.start([listener])
            agent.port = manager.bound()[0].port
            self.links[agent.name] = _Link(agent, manager)
        if self.target is None:
            await self._start_server(again=False)
        else:
            port = self.target[1]
            self.server_ports = {"udp": port, "tcp": port, "tls": port + 1}
            for provider, url in self.mock_urls.items():
                self.note(PUSH, f"mock {provider} at {url}: the target's pushes are seen there")
            if self.mocks is not None:
                settings = self.mocks.directory.resolve() / "push.yaml"
                self.note(PUSH, f"the target's push settings for these mocks: {settings}")
        self._point_agents()

    def _flow_closed(self, name: str, flow: int) -> None:
        self.links[name].flows.discard(flow)

    def _point_agents(self) -> None:
        host = self.target[0] if self.target is not None else HOST
        for agent in self.agents:
            agent.server = Peer(
                transport=agent.transport, host=host, port=self.server_ports[agent.transport]
            )

    def _plans(self) -> dict[str | None, CallPlan]:
        vm = f"sip:vm@{HOST}:{self.voicemail.port}"
        gateway = self.scenario.pbx.twin_gateway.replace(
            "127.0.0.1:5095", f"{HOST}:{self.gateway.port}"
        )
        plans: dict[str | None, CallPlan] = {
            None: self.plan(None, voicemail_uri=vm, twin_gateway=gateway)
        }
        for name, user in self.scenario.users.items():
            plans[name] = self.plan(user, voicemail_uri=vm, twin_gateway=gateway)
        return plans

    async def _start_server(self, *, again: bool) -> None:
        if self._config is None:
            self._config = self._server_config()
        elif self.server_ports:  # a restart listens where it listened before
            self._config = self._config.model_copy(
                update={
                    "listen": [
                        ListenerSpec(transport=_TRANSPORTS[t], host=HOST, port=p)
                        for t, p in self.server_ports.items()
                    ]
                }
            )
        server = _ScenarioServer(self._config, open=not self.requires_auth)
        server.plans = self._plans()
        await server.start()
        self.server = server
        self.server_ports = {b.transport: b.port for b in server.bound}
        driver = server._driver
        assert driver is not None
        assert server.node is not None
        driver.pusher = _PushTap(driver.pusher, self)
        driver.calls = _CallTap(driver.calls, self, server)
        if again:
            now = self.loop.time()
            restored = sum(
                len(server.node.registrar.lookup(f"sip:{user}@{DOMAIN}", now))
                for user in self.scenario.users
            )
            self.note(
                SERVER, f"started again on the same ports: {restored} bindings from the store"
            )

    def _server_config(self) -> Config:
        wd = self.workdir
        push = PushConfig()
        if self.apns is not None and self.apns_key_file is not None:
            push.apns = ApnsConfig(
                team_id=TEAM,
                key_id=_KEY_ID,
                key_file=self.apns_key_file,
                bundle_id=BUNDLE,
                base_url=self.apns.base_url,
                ca_file=self.apns.cert_file,
            )
        if self.fcm is not None:
            account = self.fcm.new_service_account(wd)
            push.fcm = FcmConfig(
                service_account=account.path,
                base_url=self.fcm.base_url,
                token_uri=self.fcm.token_uri,
                ca_file=self.fcm.cert_file,
            )
        return Config(
            domain=DOMAIN,
            listen=[ListenerSpec(transport=t, host=HOST, port=0) for t in ("udp", "tcp", "tls")],
            tls=TlsConfig(dir=wd / "server-tls"),
            store=StoreConfig(backend="sqlite", path=wd / "sipwake.db"),
            auth=AuthConfig(open=not self.requires_auth),
            users={n: UserConfig(password=u.password) for n, u in self.scenario.users.items()},
            push=push,
            admin=None,
            secret_file=wd / "secret",
        )

    async def _start_mocks(self) -> None:
        """Mock APNs/FCM: for faults the sandbox cannot give, and at a ``--target``."""
        providers = {d.provider for _, d in self.scenario.device_refs().values()}
        faulted = {f.provider for f in self.faults}
        if self.mocks is not None:  # --target: both, where the target was told they are
            wanted = {"apns", "fcm"}
            directory = self.mocks.directory.resolve()
            host, ports = self.mocks.host, mock_ports(self.mocks.port)
        else:
            wanted = {p for p in ("apns", "fcm") if p in providers and ({p, None} & faulted)}
            directory, host, ports = self.workdir, HOST, mock_ports(0)
        try:
            await self._start_mock_services(wanted, directory, host, ports)
        except OSError as exc:
            where = f"{host} ports {ports['apns']}-{ports['fcm']}"
            raise MockPushError(
                f"cannot start the mock push services on {where}: {exc} "
                "(is sipwake mock-push running? --mock-push HOST:PORT picks others)"
            ) from exc

    async def _start_mock_services(
        self, wanted: set[str], directory: Path, host: str, ports: dict[str, int]
    ) -> None:
        keep = self.mocks is not None
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
        if "apns" in wanted:
            key_file, public = await asyncio.to_thread(apns_key, directory, _KEY_ID)
            self.apns_key_file = key_file
            apns = _ScenarioApns(
                self, directory, public_key=public, team_id=TEAM, key_id=_KEY_ID, host=host
            )
            apns.port, apns.reuse_cert = ports["apns"], keep
            for provider, token, topic in self.issued:  # each device's tokens, with topics
                if provider == "apns":
                    apns.issue_token(token, topic)
            await apns.__aenter__()
            self.apns = apns
            self.mock_urls["apns"] = apns.base_url
        if "fcm" in wanted:
            fcm = _ScenarioFcm(self, directory, project_id=FCM_PROJECT, host=host)
            fcm.port, fcm.reuse_cert = ports["fcm"], keep
            for provider, token, project in self.issued:
                if provider == "fcm":
                    fcm.issue_token(token, project)
            await fcm.__aenter__()
            self.fcm = fcm
            self.mock_urls["fcm"] = fcm.base_url
            self.fcm_account = service_account(fcm, directory) if keep else None
        if keep and self.apns is not None and self.fcm is not None:
            assert self.fcm_account is not None
            assert self.apns_key_file is not None
            settings = push_settings(
                apns=self.apns,
                apns_key_file=self.apns_key_file,
                fcm=self.fcm,
                account=self.fcm_account,
                bundle_id=BUNDLE,
                team_id=TEAM,
                key_id=_KEY_ID,
            )
            text = yaml.safe_dump(settings, sort_keys=False)
            await asyncio.to_thread((directory / "push.yaml").write_text, text)

    async def _setup(self) -> None:
        """Every device that is not offline registers; suspended ones then disconnect."""
        devices = [
            self.devices[ref]
            for ref, (_, spec) in self.scenario.device_refs().items()
            if spec.state != "offline"
        ]
        for device in devices:
            self.register(device)
            self._rearm_all()
        for _ in range(int(_SETUP_S * 0.75 / 0.01)):  # the 200 OKs, or give up waiting
            if all(d.registered is not None for d in devices):
                break
            await asyncio.sleep(0.01)
        for device in devices:
            if self.spec(device).state == "suspended":
                self.suspend(device)
        await asyncio.sleep(0.1)  # the server notices the closed connections

    async def _wait_end(self) -> None:
        end = self.t0 + self.scenario.duration_s
        horizon = self._horizon()
        while self.loop.time() < end:
            await asyncio.sleep(min(0.05, max(0.0, end - self.loop.time())))
            if not self.full and self._settled(horizon):
                return

    def _horizon(self) -> float:
        return horizon(self.scenario)

    def _settled(self, horizon: float) -> bool:
        now = self.now
        if now < horizon + _QUIET_S or now - self._last_traffic < _QUIET_S or self._busy:
            return False
        if any(d.network_down for d in self.devices.values()):
            return False
        return all(c.final is not None for c in self.record.calls.values())

    async def _close(self) -> None:
        for handle in self._handles:
            handle.cancel()
        for link in self.links.values():
            if link.timer is not None:
                link.timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.close()
            self.server = None
        for link in self.links.values():
            await link.manager.close()
        for mock in (self.apns, self.fcm):
            if mock is not None:
                await mock.__aexit__(None, None, None)

    # -- agents ------------------------------------------------------------------------------
    def _received(self, agent: UserAgent, data: bytes, peer: Peer, local: LocalAddr) -> None:
        link = self.links[agent.name]
        if peer.flow is not None:
            link.flows.add(peer.flow)
        self._last_traffic = self.now
        try:
            message = parse_message(data, stream=peer.reliable)
        except Exception:
            self.note(agent.name, "dropped an unparsable message")
            return
        if not agent.reachable:
            why = (
                "no network"
                if isinstance(agent, DeviceAgent) and agent.network_down
                else "not in the foreground"
            )
            self.row(SERVER, agent.name, label(message), lost=why)
            if peer.flow is not None:
                link.manager.close_flow(peer.flow)
            return
        self.record.messages += 1
        self.row(SERVER, agent.name, label(message))
        self.observe_delivery(agent, message)
        self._guard(functools.partial(self._deliver, agent, data, peer))

    def _deliver(self, agent: UserAgent, data: bytes, peer: Peer) -> None:
        self.transmit(agent, agent.receive(data, peer, self.loop.time()))

    def _guard(self, action: Callable[[], None]) -> None:
        """Run ``action`` (a callback of the loop), then re-arm the agents' timers."""
        try:
            action()
        except Exception:
            logger.exception("replay step failed")
            self.note(SERVER, "internal error in the replay (see the log)")
        self._rearm_all()

    def _rearm_all(self) -> None:
        for link in self.links.values():
            deadline = link.agent.next_deadline()
            if deadline == link.deadline:
                continue
            if link.timer is not None:
                link.timer.cancel()
            link.deadline = deadline
            link.timer = (
                self.loop.call_at(deadline, self._fire, link) if deadline is not None else None
            )

    def _fire(self, link: _Link) -> None:
        link.timer = None
        link.deadline = None
        self._guard(functools.partial(self._timeout, link.agent))

    def _timeout(self, agent: UserAgent) -> None:
        self.transmit(agent, agent.handle_timeout(self.loop.time()))

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- pushes ------------------------------------------------------------------------------
    def fault_for(self, provider: str, token: str) -> FaultWindow | None:
        device = self.by_token.get(token)
        ref = device.name if device is not None else None
        return next((f for f in self.faults if f.applies(self.now, provider, ref)), None)

    def mock_push_seen(
        self, provider: str, token: str, kind: str, payload: dict[str, Any] | None = None
    ) -> None:
        """A push reached a mock service (``--target``: how the agents see pushes);
        ``payload`` is what it carries to the device (the APNs JSON body, the FCM
        ``data``), so the device opens it and ``push.encrypted`` can be judged."""
        if self.target is None:
            return
        device = self.by_token.get(token)
        ref = device.name if device is not None else None
        wanted = "message" if kind == "message" else "call"
        call = next(
            (
                c.id
                for c in reversed(list(self.record.calls.values()))
                if device is not None and c.callee == device.user and c.kind == wanted
            ),
            None,
        )
        record = PushRecordSeen(
            at=self.now,
            push_id=next(self._push_ids),
            kind=kind,
            provider=provider,
            device=ref,
            call=call,
        )
        if payload is not None:
            record.payload = payload
            known = self.record.calls.get(call) if call is not None else None
            if known is not None:
                caller = self.callers.get(known.caller)
                details = (
                    ("caller", known.caller),
                    ("name", caller.display_name if caller is not None else None),
                    ("call-id", known.call_id),
                )
                record.clear = clear_in(payload, details)
        self.record.pushes.append(record)
        self.row(SERVER, PUSH, f"{kind} push ({provider}) for {ref or 'unknown device'}")
        self._guard(
            lambda: self.push_answered(record, PushOutcome(status="delivered", provider=provider))
        )


class _PushTap:
    """The embedded server's pusher, watched: each push is recorded, held for the
    scenario's ``push_latency_s``, failed when a ``push_fails`` window says so (for
    providers without a mock), and its outcome given to the device."""

    def __init__(self, inner: Any, runner: LiveRunner) -> None:
        self.inner = inner
        self.runner = runner

    async def send(
        self, request: PushRequest, *, binding_id: str | None = None, aor: str | None = None
    ) -> PushOutcome:
        runner = self.runner
        record = runner.push_sent(request, next(runner._push_ids))
        runner._busy += 1
        try:
            await asyncio.sleep(runner.scenario.push_latency_s)
            provider = request.target.base_provider
            mocked = {"apns": runner.apns, "fcm": runner.fcm}.get(provider) is not None
            outcome: PushOutcome | None = None
            if not mocked:
                answer = runner.sandbox.answer(request, at=runner.now, device=record.device)
                outcome = answer if answer.status != "delivered" else None
            if outcome is None:
                outcome = await self.inner.send(request, binding_id=binding_id, aor=aor)
            runner._guard(lambda: runner.push_answered(record, outcome))
            return outcome
        finally:
            runner._busy -= 1

    async def close(self) -> None:
        await self.inner.close()


class _CallTap:
    """The embedded server's call sink, watched: the engine's steps go to the ladder."""

    def __init__(self, inner: Any, runner: LiveRunner, server: Server) -> None:
        self.inner = inner
        self.runner = runner
        self.server = server

    def call_event(self, event: CallEvent) -> None:
        node = self.server.node
        calls = getattr(node.wake, "_calls", {}) if node is not None else {}
        self.runner.call_event(event, calls)
        if self.inner is not None:
            self.inner.call_event(event)

    def push_done(self, push: SendPush, outcome: PushOutcome) -> None:
        if self.inner is not None:
            self.inner.push_done(push, outcome)

    def message_bytes(
        self, direction: Literal["in", "out"], peer: object, data: bytes, at: float
    ) -> None:
        if self.inner is not None:
            self.inner.message_bytes(direction, peer, data, at)


class _ScenarioApns(MockApns):
    """The mock APNs answering the scenario's ``push_fails`` windows."""

    def __init__(self, runner: LiveRunner, directory: Path, **kwargs: Any) -> None:
        super().__init__(directory, **kwargs)
        self.runner = runner

    def _judge(self, headers: Any, body: bytes, number: int) -> tuple[int, str, dict[str, str]]:
        status, reason, extra = super()._judge(headers, body, number)
        if status != 200:
            return status, reason, extra
        token = headers.get(":path", "").removeprefix("/3/device/")
        fault = self.runner.fault_for("apns", token)
        if fault is not None:
            self.pushes.pop()
            extra = {}
            if fault.status == 410:
                when = fault.unregistered_at
                since = 0.0 if when is None else self.runner.now - when
                extra["timestamp"] = str(int((self._clock() - since) * 1000))
            if fault.retry_after_s is not None:
                extra["retry-after"] = str(math.ceil(fault.retry_after_s))
            return fault.status, fault.reason or "", extra
        payload = _json_object(body)
        kind = str((payload or {}).get("type", ""))
        if kind not in ("call", "cancel", "message"):  # another server's own payload
            kind = "call" if headers.get("apns-push-type") == "voip" else "message"
        self.runner.mock_push_seen("apns", token, kind, payload)
        return status, reason, extra


class _ScenarioFcm(MockFcm):
    """The mock FCM answering the scenario's ``push_fails`` windows."""

    def __init__(self, runner: LiveRunner, directory: Path, **kwargs: Any) -> None:
        super().__init__(directory, **kwargs)
        self.runner = runner

    def _send(self, headers: Any, body: bytes, number: int) -> dict[str, Any]:
        doc = super()._send(headers, body, number)
        message = self.messages[-1]
        fault = self.runner.fault_for("fcm", message.token)
        if fault is not None:
            self.messages.pop()
            code = _FCM_CODES.get(fault.status, "INTERNAL")
            retry = math.ceil(fault.retry_after_s) if fault.retry_after_s is not None else None
            raise _FcmRefusal(code, retry_after=retry)
        data = message.message.get("data") or {}
        kind = str(data.get("type", "call"))
        payload = dict(data) if isinstance(data, dict) else None
        self.runner.mock_push_seen("fcm", message.token, kind, payload)
        return doc


def _json_object(body: bytes) -> dict[str, Any] | None:
    """A push body as the device reads it (None: not a JSON object)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def horizon(scenario: Scenario) -> float:
    """The last scenario time a step or an expectation names: a real-time replay does
    not stop before it (``within`` counts from the call, ``at`` with its tolerance)."""
    times = [step.at for step in scenario.timeline]
    starts = {ref: step.at for ref, step in scenario.calls() + scenario.messages()}
    first = min(starts.values(), default=0.0)
    for item in scenario.expect:
        spec = item.spec
        start = starts.get(getattr(spec, "call", None) or "", first)
        if isinstance(spec, PushExpect | RingingExpect | DeviceCancelledExpect):
            times.append(start + spec.within)
        elif isinstance(spec, AnsweredExpect | TimedExpect | MessageDeliveredExpect):
            times.append((spec.at or 0.0) + spec.tolerance)
    return max(times, default=0.0)


async def replay_live(
    scenario: Scenario,
    workdir: Path,
    *,
    target: tuple[str, int] | None = None,
    mocks: MockPush | None = None,
    full: bool = False,
) -> Replay:
    """Run ``scenario`` in real time (see the module text); ``workdir`` holds the
    server's store, keys and certificates; ``mocks`` where the mock push services of a
    ``target`` replay listen (default ``MockPush()``)."""
    runner = LiveRunner(scenario, workdir, target=target, mocks=mocks, full=full)
    return await runner.run()
