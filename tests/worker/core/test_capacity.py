"""Declared sizes and tape capacity, through the real reconciler, executor and
simulated library: the planner sees what the journal knows."""

from __future__ import annotations

import math
from pathlib import Path

from drivers.definition import LibraryDefinition
from tests.worker.harness import running_worker
from worker.core.planner import PlanPolicy

#: The capacity rules under fill-one-tape-at-a-time: with the default margin the
#: planner may start on the scratch tape to save the locate to the end of data.
FILL_IN_ORDER = PlanPolicy(write_margin_s=math.inf)

GB = 10**9
LTO9 = 18_000 * GB


def _pool_of_two(almost_full: int) -> LibraryDefinition:
    return LibraryDefinition.model_validate(
        {
            "slots": 12,
            "drives": [{"index": 0, "device": "/dev/nst0", "generation": "LTO-9"}],
            "pools": [{"id": 6, "name": "offline-tapes"}],
            "tapes": [
                {
                    "barcode": "AAA001L9",
                    "slot": 1,
                    "pool": "offline-tapes",
                    "used_bytes": almost_full,
                },
                {"barcode": "AAA002L9", "slot": 2, "pool": "offline-tapes"},
            ],
        }
    )


async def test_a_write_too_big_for_the_fullest_tape_goes_to_one_with_room(tmp_path: Path) -> None:
    async with running_worker(
        tmp_path, _pool_of_two(LTO9 - 2 * GB), policy=FILL_IN_ORDER
    ) as worker:
        # Small enough for the fullest tape: it is filled first.
        await worker.submit("create", 1, size_bytes=1 * GB, pool_name="offline-tapes")
        first = await worker.wait_for(1, "ready")
        assert first.barcode == "AAA001L9"
        await worker.submit("destroy", 1)
        # 1 GB of its 2 GB left is now counted as written: 5 GB no longer fits there.
        tape = await worker.journal.tape("AAA001L9")
        assert tape is not None
        assert tape.used_bytes == LTO9 - 1 * GB
        await worker.submit("create", 2, size_bytes=5 * GB, pool_name="offline-tapes")
        second = await worker.wait_for(2, "ready")
        assert second.barcode == "AAA002L9"
        snapshot, _ = await worker.reconciler.snapshot()
        assert snapshot.tapes["AAA002L9"].capacity_bytes == LTO9


async def test_a_write_of_unknown_size_fills_the_fullest_tape(tmp_path: Path) -> None:
    async with running_worker(
        tmp_path, _pool_of_two(LTO9 - 2 * GB), policy=FILL_IN_ORDER
    ) as worker:
        await worker.submit("create", 1, pool_name="offline-tapes")
        assert (await worker.wait_for(1, "ready")).barcode == "AAA001L9"
