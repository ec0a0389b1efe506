"""How long things take in a real library (SCHEDULING.md 2.1 and 2.3), in seconds.

The simulator divides every figure by its speed factor, so tests run in
milliseconds with the same proportions.
"""

from __future__ import annotations

from dataclasses import dataclass

#: One-way robot move between a slot and a drive (Diamondback-class accessor).
ROBOT_MOVE_S = 7.0
#: Nominal load-to-ready per generation (the drive threads after the robot lets go).
LOAD_TO_READY_S = {5: 12.0, 6: 12.0, 7: 15.0, 8: 15.0, 9: 17.0}
#: Nominal unload (rewind from near BOT + unthread) per generation.
UNLOAD_S = {5: 17.0, 6: 17.0, 7: 20.0, 8: 24.0, 9: 30.0}
REWIND_S = 10.0
INVENTORY_S = 2.0


@dataclass(frozen=True, slots=True)
class Timing:
    speed: float = 1.0

    def scaled(self, seconds: float) -> float:
        return seconds / self.speed

    def move(self) -> float:
        return self.scaled(ROBOT_MOVE_S)

    def load_to_ready(self, generation: int) -> float:
        return self.scaled(LOAD_TO_READY_S.get(generation, 15.0))

    def unload(self, generation: int) -> float:
        return self.scaled(UNLOAD_S.get(generation, 24.0))

    def rewind(self) -> float:
        return self.scaled(REWIND_S)

    def inventory(self) -> float:
        return self.scaled(INVENTORY_S)
