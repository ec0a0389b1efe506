"""Seeded fault injection for the simulator, with the daemon's policy under faults
(`worker/runtime/executor.py`), so `tapeworker simulate` can show how each policy copes
with a flaky robot, a dead drive or a slow one.

The model:
- every robot move (slot -> drive, drive -> slot, the two moves of a cleaning)
  fails with probability `move_rate`; the failed move costs its robot time;
- a failed move counts against its drive; a successful one resets the count;
  after `drive_down_after` consecutive failures the drive is down for good;
- otherwise the move is retried after `backoff_s * 2**(k-1)` (the k-th retry),
  at most `retries` times; then the operation fails;
- a failed load leaves the cartridge in its slot; its requests go back to the
  queue, each with one more attempt, and fail once the attempts exceed
  `retries` (the daemon's request retry budget), with the reason recorded;
- a failed unload (or cleaning unload) leaves the cartridge stuck in the drive:
  the tape is need_to_check and the drive down;
- `kills`: drive D dies at virtual time T: down for good; its cartridge is stuck
  (need_to_check); the requests it held go back to the queue (one more attempt);
- `slow_ready`: drive D needs S more seconds to become ready after every load.

Draws come from their own generator (seeded from the run's seed), so a run with
no faults is identical to one without this module, and every policy of a
comparison sees the same fault stream.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


class FaultSpecError(ValueError):
    """A malformed or impossible fault option."""


@dataclass(frozen=True, slots=True)
class FaultPlan:
    move_rate: float = 0.0
    drive_down_after: int = 3
    retries: int = 3
    backoff_s: float = 5.0
    #: (drive, virtual time in s) pairs.
    kills: tuple[tuple[int, float], ...] = ()
    #: Extra seconds to become ready after a load, by drive.
    slow_ready: Mapping[int, float] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not 0.0 <= self.move_rate < 1.0:
            raise FaultSpecError(f"fault rate must be in [0, 1), not {self.move_rate}")
        if self.drive_down_after < 1:
            raise FaultSpecError("--drive-down-after must be at least 1")
        if self.retries < 0:
            raise FaultSpecError("--retries must not be negative")
        if self.backoff_s < 0:
            raise FaultSpecError("--backoff must not be negative")
        for drive, at in self.kills:
            if at < 0:
                raise FaultSpecError(f"drive {drive} killed at a negative time {at}")
        for drive, extra in self.slow_ready.items():
            if extra < 0:
                raise FaultSpecError(f"drive {drive}: negative extra ready time {extra}")

    @property
    def active(self) -> bool:
        return self.move_rate > 0 or bool(self.kills) or any(self.slow_ready.values())

    def rng(self, seed: int) -> random.Random:
        """The fault draws of a run: the same for every policy with this seed."""
        return random.Random(f"tapeworker-faults:{seed}")  # noqa: S311 -- reproducible

    def check_drives(self, indices: set[int]) -> None:
        named = {d for d, _ in self.kills} | set(self.slow_ready)
        unknown = sorted(named - indices)
        if unknown:
            raise FaultSpecError(
                f"no drive {unknown[0]} in the library (drives: "
                + ", ".join(str(i) for i in sorted(indices))
                + ")"
            )

    def describe(self) -> str:
        parts: list[str] = []
        if self.move_rate:
            parts.append(f"move fault rate {self.move_rate:g}")
        parts.extend(f"drive {d} dies at {t:g} s" for d, t in self.kills)
        parts.extend(f"drive {d} +{s:g} s to ready" for d, s in sorted(self.slow_ready.items()))
        if not parts:
            return "no faults"
        return (
            "; ".join(parts)
            + f" (down after {self.drive_down_after} consecutive failures, "
            + f"{self.retries} retries, backoff {self.backoff_s:g} s)"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "move_rate": self.move_rate,
            "drive_down_after": self.drive_down_after,
            "retries": self.retries,
            "backoff_s": self.backoff_s,
            "kills": [{"drive": d, "at_s": t} for d, t in self.kills],
            "slow_ready": {str(d): s for d, s in sorted(self.slow_ready.items())},
        }


NO_FAULTS = FaultPlan()


def parse_kill(text: str) -> tuple[int, float]:
    """`D@T`: drive D dies at virtual time T seconds."""
    drive, sep, at = text.partition("@")
    if not sep:
        raise FaultSpecError(f"--kill-drive wants DRIVE@SECONDS, not {text!r}")
    return _int(drive, text), _float(at, text)


def parse_slow(text: str) -> tuple[int, float]:
    """`D:S`: drive D needs S extra seconds to become ready after a load."""
    drive, sep, extra = text.partition(":")
    if not sep:
        raise FaultSpecError(f"--slow-ready wants DRIVE:SECONDS, not {text!r}")
    return _int(drive, text), _float(extra, text)


def _int(value: str, whole: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise FaultSpecError(f"bad drive index in {whole!r}") from None


def _float(value: str, whole: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise FaultSpecError(f"bad number of seconds in {whole!r}") from None
    if not math.isfinite(number):
        raise FaultSpecError(f"bad number of seconds in {whole!r}")
    return number
