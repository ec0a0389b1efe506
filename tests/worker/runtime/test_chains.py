"""A drive chain ends its request whatever it raises: not only driver errors."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from tests.worker.harness import SETTINGS, Harness, definition, running_worker
from worker.core.requests import RequestState
from worker.state.journal import OperationRecord


@contextlib.contextmanager
def disk_full_for_the_simulator(tmp_path: Path) -> Iterator[None]:
    """Every write of the simulator's state fails with a real ENOSPC from the kernel:
    its temporary file (written, then renamed over the state) is /dev/full."""
    tmp = tmp_path / f"sim.json.{os.getpid()}.tmp"
    tmp.symlink_to("/dev/full")
    try:
        yield
    finally:
        tmp.unlink()


async def _failed_operation(worker: Harness) -> OperationRecord | None:
    failed = await worker.journal.operations("failed")
    return failed[0] if failed else None


async def _chain_ended(worker: Harness) -> bool:
    return not worker.reconciler.busy


async def test_a_chain_that_hits_enospc_ends_its_request_and_frees_the_drive(
    tmp_path: Path,
) -> None:
    async with running_worker(tmp_path, definition(drives=1)) as worker:
        with disk_full_for_the_simulator(tmp_path):
            await worker.submit("create", 1, tape_barcode="AAA001L9")
            op = await worker.wait_until(
                "the load recorded as failed", lambda: _failed_operation(worker)
            )
            await worker.wait_until("the chain to end", lambda: _chain_ended(worker))
            assert op.kind == "load"
            assert op.error_class == "OSError"
            assert "No space left on device" in (op.error or "")
            # The request is pending again, counted, with the reason; nothing holds
            # the drive, nothing is left in flight.
            request = await worker.request(1)
            assert request.state is RequestState.PENDING
            assert request.attempts == 1
            assert "No space left on device" in (request.reason or "")
            assert request.drive is None
            assert not worker.executor.in_flight.moving
            assert await worker.journal.operations("intent") == []
            assert not worker.reconciler.busy
            [drive] = await worker.journal.drives()
            assert drive.idle_since is not None
            assert drive.up, "a full disk is not the drive's fault"
        # Once the disk has room the changer is re-inventoried and the mount retried.
        ready = await worker.wait_for(1, "ready")
        assert ready.drive == 0
        assert ready.attempts == 1


async def test_a_chain_error_fails_the_request_once_its_budget_is_spent(tmp_path: Path) -> None:
    settings = SETTINGS.model_copy(update={"retries": 0})
    async with running_worker(tmp_path, definition(drives=1), settings=settings) as worker:
        with disk_full_for_the_simulator(tmp_path):
            await worker.submit("create", 1, tape_barcode="AAA001L9")
            failed = await worker.wait_for(1, "failed")
            assert failed.reason is not None
            assert failed.reason.startswith("OSError: ")
            assert "No space left on device" in failed.reason
            await worker.wait_until("the chain to end", lambda: _chain_ended(worker))
            assert not worker.executor.in_flight.moving
            assert await worker.journal.operations("intent") == []


async def _mounting(worker: Harness) -> bool:
    return (await worker.request(1)).state is RequestState.MOUNTING and not worker.reconciler.busy


async def test_a_chain_that_cannot_record_its_end_is_ended_before_the_next_round(
    tmp_path: Path,
) -> None:
    async with running_worker(tmp_path, definition(drives=1)) as worker:
        # Another program holds the robot: the load waits with its intent recorded.
        with (tmp_path / "sim.json.robot").open("a+b") as robot:
            fcntl.flock(robot.fileno(), fcntl.LOCK_EX)
            await worker.submit("create", 1, tape_barcode="AAA001L9")
            await worker.wait_until("the load to begin", lambda: _begun(worker))
            # Now the move fails with ENOSPC, and the journal refuses every write.
            await worker.journal._db.execute("PRAGMA query_only=ON")
            full = disk_full_for_the_simulator(tmp_path)
            full.__enter__()
        try:
            await worker.wait_until("the chain to end unrecorded", lambda: _mounting(worker))
            assert not worker.executor.in_flight.moving
        finally:
            full.__exit__(None, None, None)
            await worker.journal._db.execute("PRAGMA query_only=OFF")
        # Writable again: the next round ends the chain, and the mount is retried.
        ready = await worker.wait_for(1, "ready")
        assert ready.attempts == 1
        [failed] = await worker.journal.operations("failed")
        assert failed.error_class == "OSError"
        assert "No space left on device" in (failed.error or "")


async def _begun(worker: Harness) -> bool:
    return bool(await worker.journal.operations("intent"))
