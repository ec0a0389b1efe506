"""What the planner asks the shell to do. Frozen values; the executor runs them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Assign:
    """A pool request is resolved to this tape (recorded before any move)."""

    request_id: int
    barcode: str


@dataclass(frozen=True, slots=True)
class Load:
    """Move a tape from its slot into a drive, for these requests."""

    barcode: str
    slot: int
    drive: int
    request_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Unload:
    """Return a drive's tape to a slot (its home slot when free)."""

    drive: int
    barcode: str
    slot: int


@dataclass(frozen=True, slots=True)
class Attach:
    """Requests served by a tape already in a drive: no robot move."""

    drive: int
    barcode: str
    request_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Clean:
    """Mount a cleaning cartridge into a drive that asked for cleaning."""

    drive: int
    barcode: str
    slot: int


@dataclass(frozen=True, slots=True)
class Fail:
    """A request that cannot be served by this library, with the reason."""

    request_id: int
    reason: str


Action = Assign | Load | Unload | Attach | Clean | Fail
