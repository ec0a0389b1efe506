"""The view of a running daemon that ops reads (what the service satisfies), built
from real parts: a journal, the executor's in-flight record, an asyncio event for
the broker link."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.sim.library import SimulatedLibrary
from tests.worker.harness import definition
from worker.runtime.in_flight import InFlight
from worker.settings import Settings
from worker.state.journal import Journal


@dataclass
class Broker:
    connected: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Loop:
    heartbeat: float = field(default_factory=time.monotonic)


@dataclass
class Executing:
    in_flight: InFlight = field(default_factory=InFlight)


@dataclass
class Daemon:
    """The view of a running daemon that ops and the admin routes read (what the
    service satisfies)."""

    journal: Journal | None
    settings: Settings = field(default_factory=Settings)
    mqtt: Broker | None = None
    pools: Broker | None = None
    reconciler: Loop | None = field(default_factory=Loop)
    executor: Executing | None = field(default_factory=Executing)
    journal_fault: str | None = None
    #: What the daemon was told, in order: operator actions and changed destinations.
    operator_actions: list[dict[str, Any]] = field(default_factory=list)
    changed: list[set[int]] = field(default_factory=list)

    async def operator_changed(self, action: dict[str, Any]) -> None:
        self.operator_actions.append(action)

    async def destinations_changed(self, destination_ids: set[int]) -> None:
        self.changed.append(destination_ids)


async def inventoried(journal: Journal, folder: Path) -> Journal:
    """The journal after a first inventory of a simulated library (harness.definition())."""
    library = SimulatedLibrary.open(definition(), state_file=folder / "sim.json", speed=1000)
    async with library:
        await journal.apply_inventory(await library.inventory(), time.time())
    return journal
