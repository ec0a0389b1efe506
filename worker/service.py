"""Start-up, the main loop and shutdown: the wiring of every part.

Start: load config, open the journal, open the library, inventory, recover,
then serve. SIGTERM lets the robot move in progress finish, then stops cleanly;
SIGHUP re-reads the configuration's planner settings (the rest needs a restart).
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import structlog
import uvicorn

from drivers.definition import load_definition
from drivers.errors import DefinitionError
from worker.errors import ConfigError
from worker.executor import Executor
from worker.http_api import create_app
from worker.http_guard import server_config
from worker.http_idempotency import IdempotentCreates
from worker.journal import Journal
from worker.mqtt_intake import MqttIntake
from worker.reconciler import Reconciler
from worker.sdnotify import notify, watchdog_interval_s
from worker.settings import Settings, load_settings
from worker.views import destination_view

log = structlog.get_logger("tapeworker.service")


class Service:
    def __init__(self, settings: Settings, config_path: Path | None = None) -> None:
        self.settings = settings
        self.config_path = config_path
        self.stopping = asyncio.Event()
        self.mqtt: MqttIntake | None = None
        self.reconciler: Reconciler | None = None
        self.http_port: int | None = None
        self._published_drives: dict[int, dict[str, object]] = {}

    async def _changed(self, destination_ids: set[int]) -> None:
        if self.reconciler is not None:
            self.reconciler.wake.set()
        if self.mqtt is None:
            return
        await self._publish_drives(self.mqtt)
        for destination_id in destination_ids:
            record = await self._journal.destination(destination_id)
            if record is None:
                continue
            if record.deleted:
                self.mqtt.publish_state(
                    destination_id, {"id": destination_id, "state": "destroyed"}
                )
                continue
            view = await destination_view(self._journal, record)
            self.mqtt.publish_state(destination_id, view.to_json())

    async def _publish_drives(self, mqtt: MqttIntake) -> None:
        """Drive states, retained, whenever one changes (a drive marked down above all)."""
        for drive in await self._journal.drives():
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
                mqtt.publish_nowait(f"{mqtt.prefix}/state/drives/{drive.index}", data, retain=True)

    async def run(self) -> None:
        settings = self.settings
        try:
            definition = load_definition(settings.library)
        except DefinitionError as exc:
            raise ConfigError(str(exc)) from exc
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        self._journal = journal = await Journal.open(settings.journal_path)
        library = settings.open_library(definition)
        try:
            problems = await library.check()
            for problem in problems:
                log.error("start-up check", problem=problem)
            await journal.sync_catalog(definition, time.time())
            executor = Executor(
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
            )
            await reconciler.recover()
            await self._serve(journal, reconciler)
        finally:
            await library.aclose()
            await journal.close()

    async def _serve(self, journal: Journal, reconciler: Reconciler) -> None:
        settings = self.settings
        server: uvicorn.Server | None = None
        self._install_signal_handlers()
        async with asyncio.TaskGroup() as group:
            planning = group.create_task(reconciler.run(), name="reconciler")
            background: list[asyncio.Task[None]] = []
            if settings.mqtt.host:
                self.mqtt = MqttIntake(
                    settings.mqtt,
                    journal,
                    hold_seconds=settings.hold_seconds,
                    on_change=self._changed,
                    clock=time.time,
                )
                background.append(group.create_task(self.mqtt.run(), name="mqtt"))
            if settings.http.enabled:
                app = IdempotentCreates(
                    create_app(journal, settings, on_change=self._changed, clock=time.time),
                    journal,
                    settings.http,
                    clock=time.time,
                )
                server = uvicorn.Server(server_config(app, settings.http))
                serving = group.create_task(server.serve(), name="http")
                # uvicorn offers no started event to await.
                while not server.started and not serving.done():  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                if serving.done():
                    raise ConfigError(
                        f"http: cannot listen on {settings.http.host}:{settings.http.port}"
                    )
                self.http_port = server.servers[0].sockets[0].getsockname()[1]
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
            for task in background:
                task.cancel()
        log.info("stopped")

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
        # Only the planner's settings change live; the rest needs a restart.
        self.settings = self.settings.model_copy(update={"planner": fresh.planner})
        log.info("configuration reloaded", planner=fresh.planner.model_dump())

    async def _watchdog(self, interval: float) -> None:
        while True:
            notify("WATCHDOG=1")
            await asyncio.sleep(interval)
