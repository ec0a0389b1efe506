"""What the operations routes and checks see of the running daemon.

A narrow view the service satisfies, so that ops reads the daemon without importing
the module that wires it (and that module imports ops to mount its routes). The parts
are described by what ops reads of them, not by their classes: ops stays below the
intakes and the runtime that it reports on.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from worker.settings import Settings
from worker.state.journal import Journal


class BrokerLink(Protocol):
    """The MQTT intake: set while it is connected to the broker."""

    @property
    def connected(self) -> asyncio.Event: ...


class PlanningLoop(Protocol):
    """The reconciler: when its loop last came round (monotonic seconds)."""

    @property
    def heartbeat(self) -> float: ...


class ChangerDoubts(Protocol):
    """The executor's in-flight record: whether the changer must be re-inventoried."""

    @property
    def needs_inventory(self) -> bool: ...


class Executing(Protocol):
    @property
    def in_flight(self) -> ChangerDoubts: ...


class RunningDaemon(Protocol):
    settings: Settings

    @property
    def mqtt(self) -> BrokerLink | None: ...

    @property
    def pools(self) -> BrokerLink | None:
        """In a fleet, the pool intake's own connection."""
        ...

    @property
    def reconciler(self) -> PlanningLoop | None: ...

    @property
    def executor(self) -> Executing | None: ...

    @property
    def journal(self) -> Journal | None: ...

    @property
    def journal_fault(self) -> str | None: ...

    async def operator_changed(self, action: dict[str, Any]) -> None: ...

    async def destinations_changed(self, destination_ids: set[int]) -> None: ...
