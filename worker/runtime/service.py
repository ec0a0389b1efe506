"""Start-up, the main loop and shutdown: the wiring of every part.

Start: load config, check the state directory, open and check the journal, open
the library, bind the HTTP port, inventory, recover, then serve. A start-up that
cannot succeed stops with a StartupError (or a ConfigError, or a JournalError)
naming what and where, having closed what it opened. SIGTERM lets the robot move
in progress finish, then stops cleanly; SIGHUP re-reads the configuration's
planner settings (the rest needs a restart).

While running, a journal fault is a state (`journal_fault`): intake pauses, a probe
retries with back-off and the daemon resumes by itself; old rows are pruned in the
background.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog
import uvicorn

from drivers.definition import load_definition
from drivers.errors import DefinitionError, DriverError
from worker.errors import ConfigError, JournalFaultError, StartupError
from worker.fleet import library_summary, resolve_library_id
from worker.fleet.routing import Route, claim_topic, pools_held
from worker.intake.admin import admin_router
from worker.intake.http.app import create_app
from worker.intake.http.group_commit import GroupCommit
from worker.intake.http.guard import GuardedServer, server_config
from worker.intake.http.idempotency import IdempotentCreates
from worker.intake.mqtt import MqttIntake
from worker.intake.pools import PoolIntake
from worker.intake.views import ViewFragments, destination_payloads, destinations_by_ids
from worker.logging import set_level
from worker.ops import metrics
from worker.ops.health import alive_for_watchdog
from worker.ops.health_file import HealthFile, health_path
from worker.ops.http import health_router
from worker.runtime.executor import Executor
from worker.runtime.reconciler import Reconciler
from worker.runtime.sdnotify import notify, watchdog_interval_s
from worker.seed.models import iso_time
from worker.settings import Settings, load_settings
from worker.state.journal import DriveRecord, Journal

log = structlog.get_logger("tapeworker.service")

#: How long a clean stop waits for the broker to take our "stopped" summary.
GOODBYE_TIMEOUT_S = 5.0


class Service:
    def __init__(self, settings: Settings, config_path: Path | None = None) -> None:
        self.settings = settings
        self.config_path = config_path
        self.stopping = asyncio.Event()
        self.mqtt: MqttIntake | None = None
        self.pools: PoolIntake | None = None
        self.reconciler: Reconciler | None = None
        self.executor: Executor | None = None
        self.http_port: int | None = None
        self.library_id: str | None = None
        #: In a fleet, the pools whose destinations this library may take.
        self._routed_pools: tuple[str, ...] = ()
        self._published_drives: dict[int, dict[str, object]] = {}
        #: The drive records last published: a batch that changed no drive publishes none.
        self._drive_records: dict[int, DriveRecord] = {}
        #: Tapes and pools serialised once per record for the state publications.
        self._fragments = ViewFragments()
        self._journal: Journal | None = None
        self._health = HealthFile(health_path(settings.state_dir))

    @property
    def journal(self) -> Journal | None:
        return self._journal

    @property
    def journal_fault(self) -> str | None:
        """Why the journal refuses writes, or None when it takes them."""
        journal = self._journal
        if journal is None or journal.fault is None:
            return None
        return journal.fault.describe()

    @property
    def health(self) -> dict[str, Any]:
        """The daemon's own view of itself, for readiness checks and `status`."""
        journal = self._journal
        fault = journal.fault if journal is not None else None
        return {
            "journal": "ok" if fault is None else "fault",
            "journal_fault": fault.describe() if fault is not None else None,
            "journal_fault_kind": fault.kind if fault is not None else None,
            "journal_fault_since": fault.since if fault is not None else None,
        }

    async def operator_changed(self, action: dict[str, Any]) -> None:
        """An operator's action took effect: plan again, and tell MQTT."""
        if action["action"] in ("drain", "resume") and self.reconciler is not None:
            self.reconciler.draining = action["action"] == "drain"
            metrics.DRAINING.set(int(self.reconciler.draining))
        if self.reconciler is not None:
            self.reconciler.wake.set()
        if self.mqtt is None:
            return
        self.mqtt.publish_nowait(
            f"{self.mqtt.library_prefix}/operator",
            {**action, "time": iso_time(time.time())},
            retain=False,
        )
        if self.reconciler is not None:
            self.mqtt.publish_nowait(
                f"{self.mqtt.library_prefix}/state/draining",
                {"draining": self.reconciler.draining},
                retain=True,
            )
        await self._publish_drives(self.mqtt)

    async def destinations_changed(self, destination_ids: set[int]) -> None:
        await self._changed(destination_ids)

    async def _changed(self, destination_ids: set[int]) -> None:
        if self.reconciler is not None:
            self.reconciler.requests_changed()
        if self.mqtt is None or self._journal is None:
            return
        await self._publish_drives(self.mqtt)
        # A batch of events is published with a handful of queries, not a few per event.
        records = await destinations_by_ids(self._journal, sorted(destination_ids))
        for record in records:
            if record.deleted:
                self.mqtt.publish_state(
                    record.id,
                    json.dumps(
                        {"id": record.id, "state": "destroyed", "sequence": record.sequence}
                    ).encode(),
                )
                pool = record.pool
                if record.barcode is None and pool is not None and pool in self._routed_pools:
                    # A pool destination we took: its claim has served its purpose.
                    self.mqtt.clear_retained(
                        claim_topic(self.settings.mqtt.prefix, pool, record.id)
                    )
        live = [record for record in records if not record.deleted]
        for destination_id, payload in await destination_payloads(
            self._journal, live, self._fragments
        ):
            self.mqtt.publish_state(destination_id, payload)

    def _pool_intake(self, journal: Journal, mqtt: MqttIntake) -> PoolIntake:
        """The fleet's pool intake: the pools this library holds tapes of."""
        assert self.library_id is not None
        return PoolIntake(
            self.settings.mqtt,
            self.settings.fleet,
            journal,
            library_id=self.library_id,
            client_id=mqtt.client_id,
            pools=self._routed_pools,
            hold_seconds=self.settings.hold_seconds,
            on_change=self._changed,
            dead_letter=lambda data: mqtt.publish_nowait(
                f"{mqtt.prefix}/dead-letter", data, retain=False
            ),
            clock=time.time,
            journal_retry_s=(
                self.settings.journal.retry_first_s,
                self.settings.journal.retry_max_s,
            ),
        )

    async def _publish_summary(self, journal: Journal, mqtt: MqttIntake) -> None:
        """This library's summary for the fleet view, refreshed on a timer."""
        while True:
            # A journal fault is reported on /readyz; the next round tries again.
            with contextlib.suppress(JournalFaultError):
                # From memory: a large backlog must not cost a read of every request.
                model = journal.model or await journal.load_model()
                mqtt.publish_summary(
                    library_summary(
                        mqtt.library_id,
                        drives=list(model.drives.values()),
                        tapes=list(model.tapes.values()),
                        queue=model.request_counts(),
                        pending_by_pool=model.pending_by_pool(),
                        draining=self.reconciler is not None and self.reconciler.draining,
                        journal_fault=self.journal_fault,
                    )
                )
            await asyncio.sleep(self.settings.mqtt.fleet_interval_s)

    async def _publish_drives(self, mqtt: MqttIntake) -> None:
        """Drive states, retained, whenever one changes (a drive marked down above all)."""
        assert self._journal is not None
        model = self._journal.model or await self._journal.load_model()
        for drive in list(model.drives.values()):
            # Records are replaced when they change: the same record, nothing to say.
            if self._drive_records.get(drive.index) is drive:
                continue
            self._drive_records[drive.index] = drive
            data = {
                "index": drive.index,
                "device": drive.device,
                "generation": f"LTO-{drive.generation}",
                "barcode": drive.barcode,
                "up": drive.up,
                "failures": drive.failures,
                "reason": drive.reason,
            }
            if self._published_drives.get(drive.index) != data:
                self._published_drives[drive.index] = data
                mqtt.publish_nowait(
                    f"{mqtt.library_prefix}/state/drives/{drive.index}", data, retain=True
                )

    async def run(self) -> None:
        settings = self.settings
        try:
            definition = load_definition(settings.library)
        except DefinitionError as exc:
            raise ConfigError(str(exc)) from exc
        self.library_id = resolve_library_id(settings.library_id, definition.name)
        self._routed_pools = pools_held(definition) if settings.fleet.routing else ()
        # Every line this daemon logs names its library: a fleet's logs meet in one place.
        structlog.contextvars.bind_contextvars(library=self.library_id)
        metrics.LIBRARY.info({"library_id": self.library_id})
        check_state_dir(settings.state_dir)
        async with contextlib.AsyncExitStack() as stack:
            self._journal = journal = await Journal.open(settings.journal_path)
            stack.push_async_callback(journal.close)
            journal.max_payload_bytes = settings.journal.max_payload_bytes
            journal.on_commit = metrics.JOURNAL_COMMIT.observe
            journal.count_round_trips(metrics.JOURNAL_ROUND_TRIPS.inc)
            try:
                library = settings.open_library(definition)
            except (OSError, DriverError) as exc:
                raise StartupError(f"{settings.backend} library: cannot open it: {exc}") from exc
            stack.push_async_callback(library.aclose)
            listener = None
            if settings.http.enabled:
                listener = listen(settings.http.host, settings.http.port)
                stack.callback(listener.close)
            try:
                self._health.open()
            except OSError as exc:
                raise StartupError(f"{self._health.path}: cannot write it: {exc}") from exc
            stack.callback(self._health.close)
            problems = await library.check()
            for problem in problems:
                log.error("start-up check", problem=problem)
            try:
                await journal.sync_catalog(definition, time.time())
                # From here on, the library and the requests are read from memory.
                await journal.load_model()
            except JournalFaultError as exc:
                raise StartupError(f"{exc}: the journal must take writes to start") from exc
            self.executor = executor = Executor(
                library,
                journal,
                settings.executor,
                hold_seconds=settings.hold_seconds,
                on_change=self._changed,
            )
            self.reconciler = reconciler = Reconciler(
                definition,
                library,
                journal,
                executor,
                settings.planner.policy(),
                on_change=self._changed,
                inventory_interval_s=settings.executor.inventory_interval_s,
            )
            try:
                await reconciler.recover()
                # A drain survives a restart: maintenance is not over until resumed.
                reconciler.draining = await journal.draining() is not None
                metrics.DRAINING.set(int(reconciler.draining))
            except JournalFaultError as exc:
                raise StartupError(f"{exc}: the journal must take writes to start") from exc
            await self._serve(journal, reconciler, listener)

    async def _serve(
        self, journal: Journal, reconciler: Reconciler, listener: socket.socket | None
    ) -> None:
        settings = self.settings
        server: uvicorn.Server | None = None
        commits: GroupCommit | None = None
        self._install_signal_handlers()
        async with asyncio.TaskGroup() as group:
            planning = group.create_task(reconciler.run(), name="reconciler")
            background: list[asyncio.Task[None]] = [
                group.create_task(self._watch_journal(journal), name="journal-watch"),
                group.create_task(self._retention(journal), name="journal-retention"),
            ]
            if settings.mqtt.host:
                assert self.library_id is not None  # resolved before the journal opened
                self.mqtt = MqttIntake(
                    settings.mqtt,
                    journal,
                    hold_seconds=settings.hold_seconds,
                    on_change=self._changed,
                    clock=time.time,
                    library_id=self.library_id,
                    journal_retry_s=(settings.journal.retry_first_s, settings.journal.retry_max_s),
                    route=(
                        Route(self.library_id, "common", prefix=settings.mqtt.prefix)
                        if settings.fleet.routing
                        else None
                    ),
                )
                background.append(group.create_task(self.mqtt.run(), name="mqtt"))
                if settings.fleet.routing:
                    self.pools = self._pool_intake(journal, self.mqtt)
                    background.append(group.create_task(self.pools.run(), name="pools"))
                background.append(
                    group.create_task(self._publish_summary(journal, self.mqtt), name="fleet")
                )
            if listener is not None:
                api = create_app(journal, settings, on_change=self._changed, clock=time.time)
                # Health, metrics and the operator's controls live beside the API.
                api.include_router(health_router(self))
                api.include_router(admin_router(self, api.state.auth))
                commits = api.state.commits
                app = IdempotentCreates(
                    api, journal, settings.http, clock=time.time, commits=commits
                )
                server = GuardedServer(server_config(app, settings.http))
                # The socket is bound already: a port in use stopped the start-up
                # with a message instead of failing inside the task group.
                group.create_task(server.serve(sockets=[listener]), name="http")
                self.http_port = listener.getsockname()[1]
            # Again after uvicorn started, which takes SIGTERM and SIGINT for itself:
            # the shutdown order is ours.
            self._install_signal_handlers()
            interval = watchdog_interval_s()
            if interval is not None:
                background.append(group.create_task(self._watchdog(interval), name="watchdog"))
            notify("READY=1", "STATUS=serving")
            log.info(
                "tapeworker ready",
                backend=settings.backend,
                http=f"{settings.http.host}:{self.http_port}" if self.http_port else None,
                mqtt=settings.mqtt.host,
            )
            await self.stopping.wait()
            notify("STOPPING=1", "STATUS=finishing the move in progress")
            log.info("stopping: letting the moves in progress finish")
            planning.cancel()
            await reconciler.drain(settings.executor.stop_timeout_s)
            if server is not None:
                server.should_exit = True
            if commits is not None:
                # The response bodies Idempotency-Keys replay, saved before we go.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(GOODBYE_TIMEOUT_S):
                        await commits.flush()
            if self.mqtt is not None:
                # A clean stop sends no last will: say so ourselves, or the fleet view
                # would show us alive until the next start.
                await self.mqtt.say_goodbye(GOODBYE_TIMEOUT_S)
            if self.pools is not None:
                await self.pools.say_goodbye(GOODBYE_TIMEOUT_S)
            for task in background:
                task.cancel()
        log.info("stopped")

    async def _watch_journal(self, journal: Journal, tick_s: float = 1.0) -> None:
        """Say whether the journal takes writes (health file, systemd STATUS), and
        while it does not, probe it with back-off so that the daemon resumes by
        itself even when no event arrives to try."""
        first, longest = self.settings.journal.retry_first_s, self.settings.journal.retry_max_s
        delay = first
        while True:
            self._health.write(self.health)
            if journal.fault is None:
                delay = first
                await asyncio.sleep(tick_s)
                continue
            notify(f"STATUS=paused: {journal.fault.describe()}")
            await asyncio.sleep(delay)
            if await journal.probe(time.time()):
                notify("STATUS=serving")
                if self.reconciler is not None:
                    self.reconciler.wake.set()
            else:
                delay = min(delay * 2, longest)

    async def _retention(self, journal: Journal) -> None:
        """Prune what ended longer ago than the retention, in the background."""
        settings = self.settings.journal
        while True:
            try:
                pruned = await journal.prune(time.time() - settings.retention_days * 86400)
            except JournalFaultError:
                pass  # the journal said so; the next round tries again
            else:
                if pruned.total:
                    log.info(
                        "journal pruned",
                        events=pruned.events,
                        requests=pruned.requests,
                        operations=pruned.operations,
                        destinations=pruned.destinations,
                        size_bytes=journal.size_bytes(),
                    )
            await asyncio.sleep(settings.prune_interval_s)

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload)

    def _reload(self) -> None:
        try:
            fresh = load_settings(self.config_path)
        except ConfigError as exc:
            log.error("reload refused: configuration invalid", problem=str(exc))
            return
        if self.reconciler is not None:
            self.reconciler.set_policy(fresh.planner.policy())
        set_level(fresh.log_level)
        # Only the planner's settings and the log level change live; the rest needs a
        # restart.
        self.settings = self.settings.model_copy(
            update={"planner": fresh.planner, "log_level": fresh.log_level}
        )
        log.info(
            "configuration reloaded", planner=fresh.planner.model_dump(), log_level=fresh.log_level
        )

    async def _watchdog(self, interval: float) -> None:
        """Ping systemd only while the planning loop comes round and the journal
        answers: a stuck daemon is then restarted by systemd."""
        withheld: str | None = None
        while True:
            problem = await alive_for_watchdog(self)
            if problem is None:
                notify("WATCHDOG=1")
            elif problem != withheld:
                log.error("watchdog not pinged", problem=problem)
            withheld = problem
            await asyncio.sleep(interval)


def check_state_dir(path: Path) -> None:
    """The state directory exists and takes a new file (permission bits do not stop
    root, a read-only mount or a full disk do: so we try)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise StartupError(
            f"{path}: the state directory is not writable ({exc.strerror or exc}); "
            "the daemon keeps its journal there"
        ) from exc


def listen(host: str, port: int) -> socket.socket:
    """The HTTP listening socket, bound now so that a taken port stops the start-up."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise StartupError(f"http: cannot listen on {host}:{port}: {exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise StartupError(
            f"http: cannot listen on {host}:{port}: {exc.strerror or exc} "
            "(another daemon on this port? set [http] port)"
        ) from exc
    return sock
