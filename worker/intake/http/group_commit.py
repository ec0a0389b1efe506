"""Group commit: the events of concurrent requests share one transaction and one fsync.

A request's event joins the queue; if no commit is running, one starts at once with
everything queued. Events that arrive while a commit runs wait for it and then go
together in the next one. Each event still gets its own outcome (`record_events`
undoes a poison event alone, by savepoint) and its own writes in the same
transaction (an Idempotency-Key); a journal fault fails the whole group, with
nothing written, and every request of it answers 503.

Writes that need no answer (the response body an Idempotency-Key replays) ride
along with the next group, or go alone once nothing else came for `flush_after_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from prometheus_client import Counter

from worker.callbacks import ChangeListener, Clock
from worker.intake.destinations import DestinationEvent, Outcome, RejectedInput, record_events
from worker.state.journal import Journal, UnitOfWork

log = structlog.get_logger("tapeworker.http")

COMMIT_GROUPS = Counter("tapeworker_http_commit_groups", "Transactions of HTTP writes committed")
GROUPED_WRITES = Counter(
    "tapeworker_http_grouped_writes", "HTTP creates, updates, destroys and releases committed"
)

#: What one request adds to its event's transaction, given its event's outcome (run in
#: the journal's database thread, with the group: see `record_events`).
WithinOne = Callable[[UnitOfWork, Outcome], None]
#: A write that needs no answer, made in some later transaction (as above).
Deferred = Callable[[UnitOfWork], None]

#: As many events as the MQTT intake commits together: a transaction stays short.
MAX_GROUP = 200
#: How long a deferred write waits for a group to ride along with.
FLUSH_AFTER_S = 0.5


@dataclass(slots=True)
class _Entry:
    event: DestinationEvent | RejectedInput
    within: WithinOne | None
    outcome: asyncio.Future[Outcome]


@dataclass(slots=True)
class _Later:
    write: Deferred
    #: Called once the write is durable, or given up after a failure.
    done: Callable[[], None] | None


@dataclass
class GroupCommit:
    """The queue of events waiting for the next transaction, and the task committing them."""

    journal: Journal
    hold_seconds: float
    clock: Clock
    #: Told the destinations each group changed, after its commit.
    on_change: ChangeListener | None = None
    max_group: int = MAX_GROUP
    flush_after_s: float = FLUSH_AFTER_S
    _queue: list[_Entry] = field(default_factory=list)
    _later: list[_Later] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _committer: asyncio.Task[None] | None = None
    _flushing: int = 0
    #: Transactions committed and the events they held (for metrics and tests).
    groups: int = 0
    grouped_events: int = 0

    async def submit(
        self, event: DestinationEvent | RejectedInput, within: WithinOne | None = None
    ) -> Outcome:
        """Journal and apply `event` with whatever else is waiting; its outcome."""
        entry = _Entry(event, within, asyncio.get_running_loop().create_future())
        self._queue.append(entry)
        self._wake()
        try:
            return await entry.outcome
        except asyncio.CancelledError:
            # The client went away before its group formed: nothing of it is written.
            # Once in a group it commits with the others (as if it had gone away after).
            with contextlib.suppress(ValueError):
                self._queue.remove(entry)
            raise

    @property
    def has_room(self) -> bool:
        """Whether the next group has room: beyond it, waiting costs a request its turn."""
        return len(self._queue) < self.max_group

    def defer(self, write: Deferred, done: Callable[[], None] | None = None) -> None:
        """Make `write` in a later transaction; `done` is called once it is durable, or
        once it is given up (a write that failed twice: it must never be needed)."""
        self._later.append(_Later(write, done))
        self._wake()

    async def flush(self) -> None:
        """Commit everything queued or deferred so far, without waiting for company."""
        self._flushing += 1
        try:
            self._arrived.set()
            while self._committer is not None and not self._committer.done():
                await asyncio.shield(self._committer)
        finally:
            self._flushing -= 1

    def _wake(self) -> None:
        self._arrived.set()
        if self._committer is None or self._committer.done():
            self._committer = asyncio.get_running_loop().create_task(
                self._commit_all(), name="http-group-commit"
            )

    async def _commit_all(self) -> None:
        while self._queue or self._later:
            if not self._queue and not self._flushing:
                # Only deferred writes: give them a moment to find a group.
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.flush_after_s):
                        await self._arrived.wait()
            group = self._queue[: self.max_group]
            del self._queue[: len(group)]
            later, self._later = self._later, []
            try:
                await self._commit(group, later)
            except asyncio.CancelledError:
                for entry in group:
                    entry.outcome.cancel()
                raise

    async def _commit(self, group: list[_Entry], later: list[_Later]) -> None:
        if not group:

            def writes(unit: UnitOfWork) -> None:
                for deferred in later:
                    deferred.write(unit)

            try:
                await self.journal.apply(writes)
            except Exception as exc:  # a fault or a bug: neither may stop intake
                log.warning("deferred http writes given up", error=str(exc), writes=len(later))
            self._settled(later)
            return

        def within(unit: UnitOfWork, outcomes: list[Outcome]) -> None:
            for entry, outcome in zip(group, outcomes, strict=True):
                if entry.within is not None:
                    entry.within(unit, outcome)
            for deferred in later:
                deferred.write(unit)

        try:
            outcomes = await record_events(
                self.journal,
                [entry.event for entry in group],
                now=self.clock(),
                hold_seconds=self.hold_seconds,
                within=within,
            )
        except Exception as exc:  # every request of the group answers it
            self._fail(group, exc)
            # Not lost: they try again with the next group.
            self._later[:0] = later
            return
        self.groups += 1
        self.grouped_events += len(group)
        COMMIT_GROUPS.inc()
        GROUPED_WRITES.inc(len(group))
        self._settled(later)
        changed: set[int] = set()
        for entry, outcome in zip(group, outcomes, strict=True):
            if not entry.outcome.done():
                entry.outcome.set_result(outcome)
            # Only an applied event changes a destination; a refused create's id names nothing.
            if outcome.status == "applied" and outcome.destination_id is not None:
                changed.add(outcome.destination_id)
        if changed and self.on_change is not None:
            try:
                await self.on_change(changed)
            except Exception:  # committed all the same; the next change publishes
                log.exception("publishing committed http changes failed")

    def _fail(self, group: list[_Entry], exc: BaseException) -> None:
        for entry in group:
            if not entry.outcome.done():
                entry.outcome.set_exception(exc)

    @staticmethod
    def _settled(later: list[_Later]) -> None:
        for deferred in later:
            if deferred.done is not None:
                deferred.done()
