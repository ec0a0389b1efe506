"""Hardware abstraction for tapeworker: the driver interface and its backends.

`open_library` is the one place that picks a backend; backends are imported
lazily so that the worker never depends on one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    # Imported when needed: the SCSI shell of the simulator imports `drivers.sim`
    # under Debian's python3, which lacks the daemon's dependencies.
    from drivers.base import TapeLibrary
    from drivers.definition import LibraryDefinition

Backend = Literal["sim", "mtx"]


def open_library(
    backend: Backend,
    definition: LibraryDefinition,
    *,
    state_file: Path | None = None,
    speed: float = 1.0,
    mtx: str = "mtx",
    mt: str = "mt",
    timeout_s: float = 900.0,
    lock_file: Path | None = None,
    mtx_env: Mapping[str, str] | None = None,
) -> TapeLibrary:
    """Build the backend named in the configuration."""
    if backend == "sim":
        from drivers.sim.library import SimulatedLibrary  # noqa: PLC0415

        return SimulatedLibrary.open(definition, state_file=state_file, speed=speed)
    if backend == "mtx":
        from drivers.mtx.backend import MtxLibrary  # noqa: PLC0415

        # The tools' environment: ours, plus what the configuration adds.
        env = {**os.environ, **mtx_env} if mtx_env else None
        return MtxLibrary(
            definition, mtx=mtx, mt=mt, timeout_s=timeout_s, lock_file=lock_file, env=env
        )
    raise ValueError(f"unknown backend {backend!r}")


def __getattr__(name: str) -> object:
    if name == "TapeLibrary":
        from drivers.base import TapeLibrary  # noqa: PLC0415

        return TapeLibrary
    raise AttributeError(name)


__all__ = ["Backend", "TapeLibrary", "open_library"]
