"""The shell around the planner: state model -> snapshot -> plan -> executor -> journal.

Rule: only this module turns the state the journal keeps (in memory, as the model)
into the planner's frozen values and the planner's actions into journal changes and
driver work. A round reads the model, never the file. The planner itself never
awaits and never reads a clock; `now` comes from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time

import structlog

from drivers.base import Inventory, TapeLibrary
from drivers.definition import LibraryDefinition
from drivers.errors import DriverError, RetryableError
from worker.callbacks import ChangeListener, Clock
from worker.core.actions import Action, Assign, Attach, Clean, Fail, Load, Unload
from worker.core.pending import PendingRequests
from worker.core.planner import PlanPolicy, next_change, plan
from worker.core.requests import RequestState, lease_expired
from worker.core.snapshot import (
    LibrarySnapshot,
    TapeView,
    TapeViews,
    build_snapshot,
    drive_view,
    tape_view,
)
from worker.errors import JournalFaultError
from worker.ops import metrics
from worker.runtime.executor import ChainNotEndedError, DriveWork, Executor
from worker.state.journal import Journal, RequestRecord
from worker.state.model import StateModel

log = structlog.get_logger("tapeworker.reconciler")

#: How long cancelled chains get to unwind at the end of a bounded drain.
_CANCEL_GRACE_S = 5.0
#: After a round, the planning loop rests this many times the round's duration
#: (at most MAX_REST_S; not at all below MIN_REST_S): planning takes at most a
#: quarter of the event loop while changes keep coming.
COALESCE = 3.0
MAX_REST_S = 5.0
MIN_REST_S = 0.002
#: How long a change of requests waits for company while no drive could take a
#: mount: long enough for creates sent one at a time to share a round (tens of them
#: at a hundred a second), short beside a mount (see `requests_changed`).
DEFER_S = 0.2


class Reconciler:
    def __init__(
        self,
        definition: LibraryDefinition,
        library: TapeLibrary,
        journal: Journal,
        executor: Executor,
        policy: PlanPolicy,
        *,
        on_change: ChangeListener,
        clock: Clock = time.time,
        retry_delay_s: float = 1.0,
        inventory_interval_s: float = 300.0,
    ) -> None:
        self._retry_delay_s = retry_delay_s
        #: The drift check's period (0: only at start-up and after errors).
        self._inventory_interval_s = inventory_interval_s
        self._inventory_checked = time.monotonic()
        #: Inventories read from the changer since start-up.
        self.inventory_checks = 0
        self._definition = definition
        self._library = library
        self._journal = journal
        self._executor = executor
        self._policy = policy
        self._on_change = on_change
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        #: What each running chain does, to name it if a shutdown cuts it short.
        self._chains: dict[asyncio.Task[None], str] = {}
        #: Requests handed to the executor and not finished yet.
        self._dispatched: set[int] = set()
        #: Chains that crashed and could not record it: ended before the next plan.
        self._unended: list[tuple[int, list[DriveWork], Exception]] = []
        self.wake = asyncio.Event()
        #: The wake-up of requests that changed while no drive was free.
        self._deferred: asyncio.TimerHandle | None = None
        #: Set by the operator (`tapeworker drain`): no new mount is started.
        self.draining = False
        #: time.monotonic() at the start of the planning loop's latest round.
        self.heartbeat = time.monotonic()
        #: The planner's view of each tape, built again only when the tape changes.
        self._views = TapeViews()
        #: The tapes' views and the free slots, kept while no tape changes (most rounds
        #: follow a change of the requests alone), and the model's tapes they are of.
        self._kept_tapes: tuple[dict[str, TapeView], tuple[int, ...]] = ({}, ())
        self._kept_tapes_of: tuple[int, int] | None = None
        #: The inputs of the last round, when it planned nothing (see `_inputs`), and
        #: when the same inputs could first plan something else (a dismount or an
        #: age limit falls due).
        self._last_inputs: tuple[object, ...] | None = None
        self._replan_at = math.inf
        #: How many rounds ran the planner (the others found nothing changed).
        self.plans = 0

    def requests_changed(self) -> None:
        """Committed events changed destinations or requests: plan them.

        At once when some drive could take a mount, else within `DEFER_S`, together
        with whatever else changes meanwhile. With every drive held, busy or down, the
        planner can attach, load or assign nothing (it serves only free drives); what
        is left for a new request is a refusal, which may come up to `DEFER_S` later.
        A round per create, sent one at a time, was a tenth of its CPU, and a round
        over a backlog of thousands costs more than a create.
        """
        if self._a_drive_is_free():
            self._cancel_deferred()
            self.wake.set()
        elif self._deferred is None and not self.wake.is_set():
            self._deferred = asyncio.get_running_loop().call_later(DEFER_S, self._deferred_due)

    def _a_drive_is_free(self) -> bool:
        """Whether some drive is up, idle and held by no request, as the planner's
        `_free` counts it (an unknown state counts as free)."""
        model = self._journal.model
        if model is None:
            return True
        busy = self._executor.in_flight.drive_busy
        return any(
            d.up and not busy(d.index) and not model.holders(d.index) for d in model.drives.values()
        )

    def _deferred_due(self) -> None:
        self._deferred = None
        self.wake.set()

    def _cancel_deferred(self) -> None:
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None

    def set_policy(self, policy: PlanPolicy) -> None:
        self._policy = policy
        self.wake.set()

    # -- inventory and recovery ------------------------------------------------------

    async def take_inventory(self, attempts: int = 4, *, periodic: bool = False) -> list[str]:
        """A fresh inventory under the robot lock, compared with the journal.

        Transient answers (unit attention after a door was opened, a changer still
        inventorying) are retried; a degraded answer is never recorded. A periodic
        check that finds every cartridge where the journal has it writes nothing.
        Anything else the journal did not expect (a tape moved by hand, a cartridge
        that appeared or vanished) is logged and recorded for `tapeworker status`,
        and a ready request whose tape left its drive goes back to pending.
        """
        for attempt in range(1, attempts + 1):
            try:
                async with self._executor.robot:
                    inventory = await self._library.inventory()
                break
            except RetryableError as exc:
                if attempt == attempts:
                    raise
                log.warning("inventory retried", attempt=attempt, error=str(exc))
                await asyncio.sleep(self._retry_delay_s * attempt)
        self._inventory_checked = time.monotonic()
        self.inventory_checks += 1
        in_flight = self._executor.in_flight
        journal_tapes = {t.barcode: t for t in await self._journal.tapes()}
        journal_drives = {d.index: d.barcode for d in await self._journal.drives()}
        found = _placement(inventory)
        unchanged = found == {
            t.barcode: (t.slot, t.drive) for t in journal_tapes.values() if t.known
        } and journal_drives == {d.index: d.barcode if d.full else None for d in inventory.drives}
        in_flight.inventory_taken()
        to_verify = in_flight.to_verify
        if periodic and unchanged and not to_verify:
            return []
        now = self._clock()
        # Cartridges a command may have moved are not surprises, wherever they are.
        moved = set(to_verify) | {
            op.barcode
            for op in await self._journal.operations("intent")
            + await self._journal.operations("moved")
            if op.barcode is not None
        }
        surprises = await self._journal.apply_inventory(inventory, now)
        for barcode, where in sorted(found.items()):
            before = journal_tapes.get(barcode)
            if barcode in moved:
                continue
            if before is None:
                surprises.append(f"tape {barcode} found in {_where(where)}: not in the catalog")
            elif not before.known:
                surprises.append(f"tape {barcode} is back, in {_where(where)}")
            elif (before.slot, before.drive) != where:
                surprises.append(
                    f"tape {barcode} found in {_where(where)}; "
                    f"the journal had it in {_where((before.slot, before.drive))}"
                )
        for barcode in sorted(to_verify):
            tape = await self._journal.tape(barcode)
            if tape is not None and not tape.known:
                await self._journal.update_tape(barcode, need_to_check=True)
                log.warning(
                    "need_to_check set", barcode=barcode, reason="not found after a failed move"
                )
                surprises.append(f"tape {barcode} is lost after a failed move: need_to_check")
        in_flight.verified(to_verify)
        for surprise in surprises:
            log.warning("inventory surprise", problem=surprise)
        await self._journal.record_surprises(surprises, now)
        await self._requeue_drifted()
        return surprises

    async def _requeue_drifted(self) -> None:
        """Ready requests whose tape is no longer in their drive go back to pending:
        the planner mounts the tape again from wherever it now is."""
        tapes = {t.barcode: t for t in await self._journal.tapes()}
        drifted: list[tuple[RequestRecord, str]] = []
        for request in await self._journal.requests((RequestState.READY,)):
            tape = tapes.get(request.barcode or "")
            if request.id in self._dispatched or (
                tape is not None and tape.known and tape.drive == request.drive
            ):
                continue
            now_in = (
                _where((tape.slot, tape.drive))
                if tape is not None and tape.known
                else "nowhere in the library"
            )
            drifted.append(
                (request, f"tape {request.barcode} left drive {request.drive}: now {now_in}")
            )
        if not drifted:
            return
        now = self._clock()
        async with self._journal.transaction() as tx:
            for request, reason in drifted:
                await tx.set_request_state(
                    request.id, RequestState.PENDING, now, drive=None, reason=reason
                )
                if request.drive is not None:
                    await tx.drive_freed(request.drive, now)
        for request, reason in drifted:
            log.warning(
                "ready request back to pending",
                request=request.id,
                destination=request.destination_id,
                reason=reason,
            )
        await self._on_change({request.destination_id for request, _ in drifted})

    def _inventory_due(self) -> bool:
        return (
            self._inventory_interval_s > 0
            and time.monotonic() - self._inventory_checked >= self._inventory_interval_s
        )

    async def recover(self) -> None:
        """After a restart: settle what was in flight against a fresh inventory.

        Nothing is replayed blindly: an interrupted mount goes back to pending, and
        the planner finds the tape wherever the inventory says it now is.
        """
        await self.take_inventory()
        now = self._clock()
        tapes = {t.barcode: t for t in await self._journal.tapes()}
        changed: set[int] = set()
        async with self._journal.transaction() as tx:
            for op in await self._journal.operations("intent") + await self._journal.operations(
                "moved"
            ):
                await tx.finish_operation(
                    op.id, "interrupted", now, error="daemon stopped while in flight"
                )
                log.warning("interrupted operation", operation=op.id, kind=op.kind)
                tape = tapes.get(op.barcode or "")
                if tape is not None and not tape.known:
                    # The cartridge was moving and the library no longer shows it:
                    # an operator must look, we do not guess where it went.
                    await tx.tape_needs_check(tape.barcode)
                    log.error("tape lost in flight", barcode=tape.barcode, operation=op.id)
                    log.warning("need_to_check set", barcode=tape.barcode, reason="lost in flight")
            for request in await self._journal.requests(
                (RequestState.MOUNTING, RequestState.READY)
            ):
                tape = tapes.get(request.barcode or "")
                still_there = (
                    request.state is RequestState.READY
                    and tape is not None
                    and tape.drive == request.drive
                )
                if still_there:
                    continue
                await tx.set_request_state(
                    request.id,
                    RequestState.PENDING,
                    now,
                    drive=None,
                    reason="recovered after a restart",
                )
                changed.add(request.destination_id)
        if changed:
            await self._on_change(changed)
        await self._put_back_ejected()

    async def _put_back_ejected(self) -> None:
        """Finish the unloads a stop cut between `mt offline` and the robot's move.

        Such a cartridge sits unthreaded in its drive and never comes online by
        itself: waiting for it would cost the ready timeout and count against a
        sound drive. Back in a slot, the planner loads it again like any other.
        """
        inventory = await self._journal.last_inventory() or {}
        occupied = {s["number"] for s in inventory.get("slots", ()) if s["full"]}
        free = set(range(1, self._definition.slots + 1)) - occupied
        tapes = {t.barcode: t for t in await self._journal.tapes()}
        for drive in await self._journal.drives():
            if drive.barcode is None or not drive.up:
                continue
            try:
                status = await self._library.drive_status(drive.index)
            except DriverError as exc:
                log.warning("drive status at start-up", drive=drive.index, error=str(exc))
                continue
            if status.loaded:
                continue
            tape = tapes.get(drive.barcode)
            home = tape.home_slot if tape is not None else None
            slot = home if home in free else min(free, default=None)
            if slot is None:
                log.error("ejected cartridge has no free slot", drive=drive.index)
                continue
            free.discard(slot)
            log.warning(
                "ejected cartridge put back", drive=drive.index, barcode=drive.barcode, slot=slot
            )
            chain: list[DriveWork] = [Unload(drive=drive.index, barcode=drive.barcode, slot=slot)]
            self._executor.claim(drive.index, chain)
            await self._executor.run_chain(drive.index, chain)

    # -- one round -------------------------------------------------------------------

    async def _model(self) -> StateModel:
        """The state in memory (read from the journal the first time it is asked for)."""
        return self._journal.model or await self._journal.load_model()

    async def expire_leases(self) -> None:
        now = self._clock()
        model = await self._model()
        expired = [
            r
            for r in model.requests((RequestState.READY,))
            if lease_expired(r.state, r.lease_expires, now)
        ]
        if not expired:
            return
        async with self._journal.transaction() as tx:
            for request in expired:
                await tx.release(request, now, "lease expired")
        await self._on_change({r.destination_id for r in expired})

    async def snapshot(self) -> tuple[LibrarySnapshot, PendingRequests]:
        """The planner's input, from the state in memory: the library as the in-flight
        work leaves it, and the pending requests as the model keeps them (requests
        handed to the executor are held back by `round`)."""
        model = await self._model()
        in_flight = self._executor.in_flight
        drives = [
            drive_view(d, holders=model.holders(d.index), busy=in_flight.drive_busy(d.index))
            for d in model.drives.values()
        ]
        tapes, free_slots = self._tapes_and_slots(model)
        overrides: dict[str, TapeView] = {}
        for barcode in in_flight.claimed_tapes:
            tape = model.tape(barcode)
            if tape is None or not tape.known:
                continue
            where = in_flight.position(barcode, tape.slot, tape.drive)
            if where != (tape.slot, tape.drive):
                overrides[barcode] = tape_view(tape, where=where)
        if overrides:
            tapes = {**tapes, **overrides}
        snapshot = build_snapshot(
            drives, tapes, free_slots=free_slots, robot_busy=self._executor.robot_busy
        )
        return snapshot, model.pending

    def _tapes_and_slots(self, model: StateModel) -> tuple[dict[str, TapeView], tuple[int, ...]]:
        """The views of the known tapes and the free slots, built again only when a
        tape changed. Never changed in place: a snapshot may hold them."""
        key = (id(model), model.tapes_version)
        if key != self._kept_tapes_of:
            all_tapes = model.tapes.values()
            views = self._views.views(t for t in all_tapes if t.known)
            occupied = {t.slot for t in all_tapes if t.slot is not None}
            free = tuple(n for n in range(1, self._definition.slots + 1) if n not in occupied)
            self._kept_tapes, self._kept_tapes_of = (views, free), key
        return self._kept_tapes

    def _inputs(self, model: StateModel) -> tuple[object, ...]:
        """What a plan depends on besides the clock: a round with the same inputs as
        the last one, before the plan's next time-bound change, plans nothing new."""
        return (
            model.version,
            self._executor.in_flight.changes,
            frozenset(self._dispatched),
            self._executor.robot_busy,
            self.draining,
            self._policy,
        )

    async def plan_round(self, now: float) -> tuple[list[Action], float]:
        """The planner's actions for the state in memory (none that load while the
        library drains), and, when there are none, when the same state could first
        plan otherwise (see `next_change`)."""
        snapshot, pending = await self.snapshot()
        # Requests handed to the executor are still pending in the journal until their
        # mount starts; the planner must not see them. Taken out of the kept queue
        # for this plan only and put back at once (nothing awaits in between).
        held_back = [r for r in map(pending.discard, self._dispatched) if r is not None]
        self.plans += 1
        try:
            actions = plan(snapshot, pending, self._policy, now)
            if self.draining:
                # Drained for maintenance: what is mounted stays and serves, nothing
                # new goes into a drive; unloads still run, so the library can empty.
                actions = [a for a in actions if not isinstance(a, Load | Clean)]
            # Only a round that plans nothing is skipped after: the others change
            # the state, and the next round plans again anyway.
            replan_at = now if actions else next_change(snapshot, pending, self._policy, now)
        finally:
            for request in held_back:
                pending.add(request)
        return actions, replan_at

    async def round(self) -> list[Action]:
        """Plan once and hand the work out; returns what was planned."""
        while self._unended:
            drive, chain, exc = self._unended[0]
            await self._executor.abandon(drive, chain, exc)
            self._unended.pop(0)
        in_flight = self._executor.in_flight
        if in_flight.needs_inventory or self._inventory_due():
            if in_flight.moving:
                # No new move before the changer is re-inventoried, and no inventory
                # while cartridges are moving: wait for the moves in flight.
                return []
            if in_flight.needs_inventory:
                await self.take_inventory()
            else:
                await self._periodic_inventory()
        await self.expire_leases()
        now = self._clock()
        model = await self._model()
        inputs = self._inputs(model)
        if inputs == self._last_inputs and now < self._replan_at:
            # Nothing changed since a round that planned nothing, and no deadline
            # has passed: the plan would be the same empty one. An idle daemon with
            # a large backlog that cannot be served costs next to nothing.
            return []
        actions, replan_at = await self.plan_round(now)
        if actions:
            self._last_inputs = None
            await self._dispatch(actions, now)
        else:
            self._last_inputs, self._replan_at = inputs, replan_at
        return actions

    async def _periodic_inventory(self) -> None:
        """The drift check; a changer that cannot answer now is asked again next period
        (its moves report their own errors), it does not stop the planning."""
        try:
            await self.take_inventory(periodic=True)
        except DriverError as exc:
            self._inventory_checked = time.monotonic()
            log.warning("periodic inventory failed", error=str(exc))

    async def _dispatch(self, actions: list[Action], now: float) -> None:
        model = await self._model()
        changed: set[int] = set()
        chains: dict[int, list[DriveWork]] = {}
        async with self._journal.transaction() as tx:
            for action in actions:
                if isinstance(action, Assign | Fail) and not _still_pending(
                    model, action.request_id
                ):
                    # Released or changed by an event committed while this round planned:
                    # the plan is stale for it, and the next round sees what is now true.
                    continue
                if isinstance(action, Assign):
                    await tx.assign_tape(action.request_id, action.barcode, now)
                    # The model has the request (pending); its destination never changes.
                    record = model.request(action.request_id)
                    if record is not None:
                        changed.add(record.destination_id)
                elif isinstance(action, Fail):
                    record = await tx.set_request_state(
                        action.request_id, RequestState.FAILED, now, reason=action.reason
                    )
                    changed.add(record.destination_id)
                    log.warning("request failed", request=action.request_id, reason=action.reason)
                elif isinstance(action, Load | Unload | Attach | Clean):
                    chains.setdefault(action.drive, []).append(action)
        for drive, chain in chains.items():
            self._executor.claim(drive, chain)
            for action in chain:
                if isinstance(action, Load | Attach):
                    self._dispatched.update(action.request_ids)
            task = asyncio.create_task(self._run_chain(drive, chain), name=f"drive-{drive}")
            self._tasks.add(task)
            self._chains[task] = _describe(drive, chain)
            task.add_done_callback(self._chain_done)
        if changed:
            await self._on_change(changed)

    async def _run_chain(self, drive: int, chain: list[DriveWork]) -> None:
        try:
            await self._executor.run_chain(drive, chain)
        except Exception as exc:
            # The chain could not even record its own end (the journal refused the
            # write): keep it, and end it before the next planning round.
            log.exception("drive chain could not be ended", drive=drive)
            self._executor.in_flight.suspect()
            cause = exc.cause if isinstance(exc, ChainNotEndedError) else exc
            self._unended.append((drive, chain, cause))
        finally:
            for action in chain:
                if isinstance(action, Load | Attach):
                    self._dispatched.difference_update(action.request_ids)
            self.wake.set()

    async def run(self, tick_s: float = 1.0) -> None:
        """Plan whenever something changes, and at least every tick.

        Rounds are coalesced: after a round that took T seconds the loop rests
        `COALESCE` x T before it looks for work again, so that the changes of a burst
        (batches of MQTT events, concurrent HTTP creates, chains ending) are planned
        together by one round, and the intakes get the event loop meanwhile. A cheap
        round rests next to nothing: a lone change is planned at once.
        """
        while True:
            # The watchdog pings systemd only while this loop keeps coming round.
            self.heartbeat = started = time.monotonic()
            try:
                await self.round()
                metrics.PLANNING_ROUNDS.inc()
            except JournalFaultError:
                pass  # the journal logged its fault once; the next tick tries again
            except Exception:
                # One bad round must not stop the daemon; the next tick tries again.
                log.exception("planning round failed")
            rest = coalescing_rest(time.monotonic() - started)
            if rest:
                await asyncio.sleep(rest)
            await self.wait_for_work(tick_s)

    async def wait_for_work(self, timeout_s: float) -> None:
        """Until something changes or `timeout_s` passes; a cancellation always ends it.

        Not `asyncio.wait_for`: before Python 3.12 it swallows a cancellation that
        arrives just as the awaited event is set, and the loop would never stop.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.wake.wait()
        self.wake.clear()
        # The round about to run sees every change so far, deferred ones included.
        self._cancel_deferred()

    async def drain(self, timeout_s: float | None = None) -> list[str]:
        """Let the moves in progress finish (SIGTERM), for at most `timeout_s`.

        Whatever still runs then is cancelled (a cancelled mtx child is killed) and
        named in the log; its operation stays recorded as begun, so the next start
        marks it interrupted and finds the cartridge by a fresh inventory. Returns
        what was left.
        """
        if not self._tasks:
            return []
        _, running = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        if not running:
            return []
        left = sorted(self._chains[task] for task in running if task in self._chains)
        log.error("stopped with moves in progress", waited_s=timeout_s, left=left)
        for task in running:
            task.cancel()
        # A cancelled chain unwinds at once (journal rollback, child killed); bounded
        # all the same, since nothing here may hang a shutdown.
        await asyncio.wait(running, timeout=_CANCEL_GRACE_S)
        return left

    def _chain_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._chains.pop(task, None)

    @property
    def busy(self) -> bool:
        return bool(self._tasks)


def _still_pending(model: StateModel, request_id: int) -> bool:
    """Whether a request the round planned for is still waiting, as the last commit left it."""
    record = model.request(request_id)
    return record is not None and record.state is RequestState.PENDING


def coalescing_rest(round_s: float) -> float:
    """How long the planning loop rests after a round that took `round_s`."""
    rest = min(round_s * COALESCE, MAX_REST_S)
    return rest if rest >= MIN_REST_S else 0.0


def _placement(inventory: Inventory) -> dict[str, tuple[int | None, int | None]]:
    """Each labelled cartridge's (slot, drive), as the journal's tapes record it."""
    found: dict[str, tuple[int | None, int | None]] = {}
    for slot in inventory.slots:
        if slot.full and slot.barcode:
            found[slot.barcode] = (slot.number, None)
    for drive in inventory.drives:
        if drive.full and drive.barcode:
            found[drive.barcode] = (None, drive.index)
    return found


def _where(place: tuple[int | None, int | None]) -> str:
    slot, drive = place
    if drive is not None:
        return f"drive {drive}"
    if slot is not None:
        return f"slot {slot}"
    return "nowhere in the library"


def _describe(drive: int, chain: list[DriveWork]) -> str:
    """A drive's chain as an operator reads it: `drive 0: unload X to slot 3, load Y ...`."""
    steps = []
    for action in chain:
        if isinstance(action, Load):
            steps.append(f"load {action.barcode} from slot {action.slot}")
        elif isinstance(action, Unload):
            steps.append(f"unload {action.barcode} to slot {action.slot}")
        elif isinstance(action, Clean):
            steps.append(f"clean with {action.barcode} from slot {action.slot}")
        else:
            steps.append(f"attach {action.barcode}")
    return f"drive {drive}: {', '.join(steps)}"
