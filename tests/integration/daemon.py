"""The real daemon as a subprocess, with helpers to talk to it and look inside."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from drivers import open_library
from drivers.base import Inventory
from drivers.definition import LibraryDefinition, load_definition
from drivers.media import can_write, media_of
from drivers.sim.library import SimulatedLibrary
from drivers.sim.scsi.emulator import EmulatedDevices
from drivers.sim.standins import install_standins
from tests.integration.broker import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
DEMO_LIBRARY = REPO / "config" / "demo-library.toml"
AUTH = ("tester", "secret-for-tests")
DEFINITION = load_definition(DEMO_LIBRARY)
GENERATIONS = {d.generation for d in DEFINITION.drives}

T = TypeVar("T")


def writable_tapes(definition: LibraryDefinition, pool: str | None = None) -> list[str]:
    """Pool tapes the demo library's drives can write, in definition order."""
    found = []
    for tape in definition.tapes:
        media = media_of(tape.barcode)
        if (
            tape.pool is not None
            and (pool is None or tape.pool == pool)
            and media is not None
            and any(can_write(g, media) for g in GENERATIONS)
            and not (tape.locked or tape.write_protected or tape.full or tape.need_to_check)
            and tape.slot is not None
        ):
            found.append(tape.barcode)
    return found


def wait_until(
    condition: Callable[[], T | None], timeout: float = 20.0, what: str = "condition"
) -> T:
    """Poll a condition until it holds (returns a truthy value), or fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@dataclass
class Daemon:
    folder: Path
    http_port: int = field(default_factory=free_port)
    mqtt_port: int | None = None
    prefix: str = "tw"
    library: Path = DEMO_LIBRARY
    #: sim; mtx (stand-in tools); scsi (the mtx backend with Debian's own mtx and mt
    #: against the SCSI emulation of the simulator).
    backend: str = "sim"
    extra_env: dict[str, str] = field(default_factory=dict)
    extra_config: str = ""
    hold_seconds: float = 3600.0
    #: The checkout whose `worker` runs (another one compares versions side by side).
    source: Path = REPO
    drive_down_after: int = 3
    process: subprocess.Popen[bytes] | None = None
    #: The emulated device nodes (backend scsi); they outlive daemon restarts.
    devices: EmulatedDevices | None = None

    @property
    def state_dir(self) -> Path:
        return self.folder / "state"

    @property
    def config_path(self) -> Path:
        return self.folder / "tapeworker.toml"

    def write_config(self) -> None:
        mqtt = (
            f'[mqtt]\nhost = "127.0.0.1"\nport = {self.mqtt_port}\nprefix = "{self.prefix}"\n'
            f'client_id = "tapeworker-{self.http_port}"\n'
            if self.mqtt_port
            else ""
        )
        self.config_path.write_text(
            f'state_dir = "{self.state_dir}"\n'
            f'library = "{self.library}"\n'
            f'backend = "{"sim" if self.backend == "sim" else "mtx"}"\n'
            "sim_speed = 500.0\n"
            f"hold_seconds = {self.hold_seconds}\n"
            'log_format = "json"\n'
            'log_level = "info"\n'
            f"{self.extra_config}\n"
            f'[http]\nport = {self.http_port}\n[http.users]\n{AUTH[0]} = "{AUTH[1]}"\n'
            "[executor]\nready_poll_s = 0.02\nbackoff_s = 0.02\nretries = 2\n"
            f"drive_down_after = {self.drive_down_after}\n"
            "[planner]\ndismount_delay_s = 3600\n"
            f"{mqtt}",
            encoding="utf-8",
        )

    def prepare_mtx_backend(self) -> None:
        """The real mtx backend, driving the simulator through stand-in mtx and mt."""

        state_file = self.state_dir / "sim-library.json"
        SimulatedLibrary.open(load_definition(self.library), state_file=state_file, speed=500.0)
        bin_dir = self.folder / "bin"
        install_standins(bin_dir, state_file)
        self.extra_env["PATH"] = f"{bin_dir}:{os.environ['PATH']}"

    def prepare_scsi_backend(self) -> None:
        """The real mtx backend with Debian's mtx and mt, against the SCSI emulation."""
        state_file = self.state_dir / "sim-library.json"
        SimulatedLibrary.open(load_definition(self.library), state_file=state_file, speed=500.0)
        self.devices = EmulatedDevices(state_file)
        self.devices.start()
        env = self.devices.env({})
        self.extra_config += (
            '\n[mtx]\nmtx = "/usr/sbin/mtx"\nmt = "/bin/mt"\n[mtx.env]\n'
            f'LD_PRELOAD = "{env["LD_PRELOAD"]}"\nUMOCKDEV_DIR = "{env["UMOCKDEV_DIR"]}"\n'
        )

    def close(self) -> None:
        """Stop the daemon and the emulated devices."""
        self.stop()
        if self.devices is not None:
            self.devices.stop()
            self.devices = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.backend == "mtx" and "PATH" not in self.extra_env:
            self.prepare_mtx_backend()
        if self.backend == "scsi" and self.devices is None:
            self.prepare_scsi_backend()
        if not self.config_path.exists():
            self.write_config()
        log = (self.folder / "daemon.log").open("ab")
        env = {**os.environ, **self.extra_env}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "run", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.source,
            env=env,
        )
        log.close()
        process = self.process

        def listening() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"daemon exited at start:\n{self.log_tail()}")
            try:
                wait_for_port(self.http_port, timeout=0.05)
            except TimeoutError:
                return False
            return True

        try:
            # A bound for a busy machine, where a start takes 10-20 s.
            wait_until(listening, timeout=120, what="the daemon to listen")
        except AssertionError:
            self.stop()
            raise

    def log_tail(self, lines: int = 40) -> str:
        path = self.folder / "daemon.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def log_entries(self) -> list[dict[str, Any]]:
        """The JSON lines of the daemon's output so far (anything else is skipped)."""
        path = self.folder / "daemon.log"
        if not path.exists():
            return []
        entries = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # not JSON, or a line still being written
            if isinstance(entry, dict):
                entries.append(entry)
        return entries

    def wait_logged(self, event: str, timeout: float = 20.0, **fields: object) -> dict[str, Any]:
        """The first log line of `event` with these fields, once it is written.

        The daemon logs what it did after the commit returns, so a test that has seen
        the journal row (or the HTTP answer, or the retained state) may still read the
        log before the line: wait on the line itself."""

        def find() -> dict[str, Any] | None:
            for entry in self.log_entries():
                if entry.get("event") == event and all(
                    entry.get(k) == v for k, v in fields.items()
                ):
                    return entry
            return None

        try:
            return wait_until(find, timeout, f"the log line {event!r} {fields}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log_tail()}") from None

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.process = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    # -- talking to it ---------------------------------------------------------------

    def http(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.http_port}/api/v2", auth=AUTH, timeout=10
        )

    # -- looking inside ----------------------------------------------------------------

    def library_inventory(self) -> Inventory:
        """The simulated library's own view, read through the driver interface."""

        async def read() -> Inventory:
            library = open_library(
                "sim", DEFINITION, state_file=self.state_dir / "sim-library.json", speed=500.0
            )
            async with library:
                return await library.inventory()

        return asyncio.run(read())

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Read the journal the way an operator would, from another process."""
        with sqlite3.connect(f"file:{self.state_dir / 'journal.sqlite3'}?mode=ro", uri=True) as db:
            db.row_factory = sqlite3.Row
            return list(db.execute(sql, params))

    def request_of(self, destination_id: int) -> sqlite3.Row | None:
        rows = self.query(
            "SELECT * FROM requests WHERE destination_id=? ORDER BY id DESC LIMIT 1",
            (destination_id,),
        )
        return rows[0] if rows else None

    def wait_request(self, destination_id: int, state: str, timeout: float = 20.0) -> sqlite3.Row:
        def check() -> sqlite3.Row | None:
            row = self.request_of(destination_id)
            if row is not None and row["state"] == state:
                return row
            return None

        try:
            return wait_until(check, timeout, f"destination {destination_id} {state}")
        except AssertionError:
            row = self.request_of(destination_id)
            raise AssertionError(
                f"destination {destination_id} never reached {state}: "
                f"{dict(row) if row else None}\n{self.log_tail()}"
            ) from None
