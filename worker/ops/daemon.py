"""What the operations routes and checks see of the running daemon.

A narrow view the service satisfies, so that ops reads the daemon without importing
the module that wires it (and that module imports ops to mount its routes).
"""

from __future__ import annotations

from typing import Any, Protocol

from worker.intake.mqtt import MqttIntake
from worker.runtime.executor import Executor
from worker.runtime.reconciler import Reconciler
from worker.settings import Settings
from worker.state.journal import Journal


class RunningDaemon(Protocol):
    settings: Settings
    mqtt: MqttIntake | None
    reconciler: Reconciler | None
    executor: Executor | None

    @property
    def journal(self) -> Journal | None: ...

    @property
    def journal_fault(self) -> str | None: ...

    async def operator_changed(self, action: dict[str, Any]) -> None: ...

    async def destinations_changed(self, destination_ids: set[int]) -> None: ...
