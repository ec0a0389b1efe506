"""Applying destination events to the desired state, inside the journal.

An event becomes durable and takes effect in one transaction: the inbox row, the
destination row and the request changes commit together. Applying is
idempotent by meaning: a create repeated with the same target renews the lease
and changes nothing else; an update or release after a destroy changes nothing.

Nothing goes backwards: an event that carries the publisher's order (`sequence`)
and is older than the last change applied to its destination is rejected with the
reason, and a destroy is final even when it overtakes its create. A publisher's
event-id is journaled once: the same message again is a duplicate, another message
under a used event-id is rejected.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from pydantic import ValidationError

from drivers.errors import InvalidArgumentError
from drivers.media import validate_barcode
from worker.core.requests import RequestState
from worker.errors import ConflictingEventError, JournalFaultError, RejectedEventError
from worker.fleet import routing
from worker.logging import level_enabled
from worker.ops import metrics
from worker.seed.error_details import VALUE_CHARS, Details, detail, validation_details
from worker.seed.models import Container, Folder, TaskDestinationBody
from worker.seed.tape_ids import library_of_tape_id
from worker.state.journal import (
    DestinationRecord,
    DestinationWrite,
    EventRecord,
    Journal,
    NewEvent,
    NewRequest,
    RequestRecord,
    UnitOfWork,
    fault_kind,
)

log = structlog.get_logger("tapeworker.destinations")

Verb = Literal["create", "update", "destroy", "release"]
VERBS: tuple[Verb, ...] = ("create", "update", "destroy", "release")
Status = Literal["applied", "rejected", "duplicate", "ignored"]
OUTCOMES: tuple[Status, ...] = ("applied", "duplicate", "ignored", "rejected")
#: How committed events are logged: a line each, or a line a batch (`log_outcomes`).
Lines = Literal["each", "batch"]


@dataclass(frozen=True, slots=True)
class DestinationEvent:
    verb: Verb
    task_id: str
    #: None for an HTTP create: we allocate the id.
    destination_id: int | None
    body: TaskDestinationBody | None
    source: str
    topic: str | None = None
    payload: str | None = None
    dedup_key: str | None = None
    #: What the destination will write, when the payload says (see `parse_payload`).
    size_bytes: int | None = None
    #: The publisher's order of this change of the destination, when it gives one.
    sequence: int | None = None
    #: `message_digest` of the message, for telling a redelivery from a reused event-id.
    digest: str | None = None
    #: The nested `folder` and `container` of a full TaskDestination payload.
    nested: dict[str, Any] | None = None
    #: In a fleet, whether this library applies it (worker/fleet/routing.py).
    route: routing.Route | None = None


@dataclass(frozen=True, slots=True)
class RejectedInput:
    """Input that never became an event; journaled with the reason."""

    reason: str
    source: str
    topic: str | None = None
    payload: str | None = None
    dedup_key: str | None = None
    digest: str | None = None
    #: Per attribute, what was wrong (the HTTP API answers with it).
    details: Details | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Status
    destination_id: int | None = None
    reason: str | None = None
    #: Rejected because handling it raised a bug, not because of what it said.
    poison: bool = False
    details: Details | None = None
    #: Rejected because it contradicts what the library knows (ConflictingEventError).
    conflict: bool = False


@dataclass(frozen=True, slots=True)
class Target:
    """What a destination asks of the library."""

    barcode: str | None
    pool: str | None
    status: str
    reason: str | None = None


#: Extra writes that must commit with a batch of events (see `record_events`); they
#: run in the database thread, with the batch.
WithinTransaction = Callable[[UnitOfWork, list[Outcome]], None]


def message_digest(topic: str, payload: bytes) -> str:
    """What makes two deliveries the same message: its topic and its whole payload."""
    return hashlib.sha256(topic.encode() + b"\0" + payload).hexdigest()


async def record_events(
    journal: Journal,
    events: list[DestinationEvent | RejectedInput],
    *,
    now: float,
    hold_seconds: float,
    within: WithinTransaction | None = None,
    lines: Lines = "each",
) -> list[Outcome]:
    """Journal and apply a batch in one transaction (one fsync for the batch), in one
    trip to the database thread (`apply_events`).

    `within` runs last inside the same transaction, with the outcomes: what it writes
    commits with the events or not at all (an HTTP create's Idempotency-Key). `lines`
    says how the committed events are logged (see `log_outcomes`).

    An event whose handling raises something unexpected (a bug) is undone alone and
    journaled as a rejected poison event with the reason, so it cannot stop the
    daemon, twice or ever; a journal fault (JournalFaultError) commits nothing.
    """
    outcomes = await journal.apply(
        functools.partial(apply_events, events, now=now, hold_seconds=hold_seconds, within=within)
    )
    # Committed: only now is an event received (a crash before the commit loses it,
    # and the client or the broker sends it again).
    log_outcomes(events, outcomes, lines)
    return outcomes


def apply_events(
    events: Sequence[DestinationEvent | RejectedInput],
    unit: UnitOfWork,
    *,
    now: float,
    hold_seconds: float,
    within: WithinTransaction | None = None,
) -> list[Outcome]:
    """Journal and apply each event through `unit` (synchronous: it runs in the
    database thread, inside the transaction).

    The batch runs in one savepoint. When the handling of one of its events raises
    something unexpected, the savepoint undoes the whole batch and it is done again
    event by event, each in a savepoint of its own (`_apply_each`): the event that
    raises is journaled as poison and the others apply exactly as if it were not
    there. Savepoints cost two statements each, and nearly every batch has no poison.
    Inside it, runs of plain creates are written together (`_CreateRun`).
    """
    if len(events) > 1:
        try:
            with unit.savepoint():
                outcomes = _record_batch(events, unit, now, hold_seconds)
        except Exception as exc:
            if _is_fault(exc):
                raise
            outcomes = _apply_each(events, unit, now, hold_seconds)
    else:
        outcomes = _apply_each(events, unit, now, hold_seconds)
    if within is not None:
        within(unit, outcomes)
    return outcomes


def _record_batch(
    events: Sequence[DestinationEvent | RejectedInput],
    unit: UnitOfWork,
    now: float,
    hold_seconds: float,
) -> list[Outcome]:
    """Every event of the batch in order, the plain creates among them a run at a time."""
    outcomes: list[Outcome] = []
    run = _CreateRun()
    for event in events:
        destination_id = run.take(unit, event)
        if destination_id is not None:
            outcomes.append(Outcome("applied", destination_id))
            continue
        run.write(unit, now)
        outcomes.append(_record_input(unit, event, now, hold_seconds))
    run.write(unit, now)
    return outcomes


class _CreateRun:
    """Consecutive plain creates of a batch, written with one statement per table.

    A create is plain when it creates a destination the journal has never seen (an
    HTTP create, whose id is the next one, or an MQTT create of an id neither in the
    file nor earlier in this run: any other event of the batch that touched it was
    written before, so the journal sees it), carries no event-id (nothing to
    deduplicate), is not routed (no fleet), and its body names a tape or pool the
    library has for data (`resolve_target` says "active"). Such a create always does
    the same three writes: the destination, one pending request, and its event,
    applied. Any other event ends the run: the run is written first, so the rows and
    ids are those that event by event would give.
    """

    __slots__ = ("destinations", "events", "highest", "ids", "requests")

    def __init__(self) -> None:
        self.destinations: list[DestinationWrite] = []
        self.requests: list[NewRequest] = []
        self.events: list[NewEvent] = []
        self.ids: set[int] = set()
        self.highest = 0

    def take(self, unit: UnitOfWork, event: DestinationEvent | RejectedInput) -> int | None:
        """Add `event` to the run if it is a plain create: its destination id, or None."""
        if (
            type(event) is not DestinationEvent
            or event.verb != "create"
            or event.dedup_key is not None
            or event.route is not None
            or event.body is None
        ):
            return None
        destination_id = event.destination_id
        if destination_id is None:
            # An HTTP create: the id event by event would give, past the run's own.
            destination_id = max(unit.next_destination_id(), self.highest + 1)
        elif destination_id in self.ids or unit.destination(destination_id) is not None:
            return None
        try:
            target = resolve_target(unit, event.body)
        except RejectedEventError:
            return None
        if target.status != "active":
            return None
        self.ids.add(destination_id)
        self.highest = max(self.highest, destination_id)
        self.destinations.append(
            DestinationWrite(
                destination_id,
                event.task_id,
                event.body.model_dump(mode="json"),
                event.nested,
                target.barcode,
                target.pool,
                "active",
                None,
                event.sequence,
            )
        )
        self.requests.append((destination_id, target.barcode, target.pool, event.size_bytes))
        self.events.append(
            (
                event.source,
                event.topic,
                "create",
                event.task_id,
                destination_id,
                event.payload,
                "applied",
                None,
                event.digest,
            )
        )
        return destination_id

    def write(self, unit: UnitOfWork, now: float) -> None:
        """Write the run (if any) and start a new one."""
        if not self.events:
            return
        unit.insert_destinations(self.destinations, now)
        unit.add_requests(self.requests, now)
        unit.insert_events(self.events, now)
        self.destinations, self.requests, self.events = [], [], []
        self.ids.clear()
        self.highest = 0


def _apply_each(
    events: Sequence[DestinationEvent | RejectedInput],
    unit: UnitOfWork,
    now: float,
    hold_seconds: float,
) -> list[Outcome]:
    """Each event in a savepoint of its own: one that raises is undone alone and
    journaled as poison."""
    outcomes: list[Outcome] = []
    for event in events:
        try:
            with unit.savepoint():
                outcome = _record_input(unit, event, now, hold_seconds)
        except Exception as exc:
            if _is_fault(exc):
                raise
            outcome = _record_poison(unit, event, now, exc)
        outcomes.append(outcome)
    return outcomes


def _is_fault(exc: Exception) -> bool:
    """The journal refused a write: the transaction commits nothing."""
    return isinstance(exc, JournalFaultError) or fault_kind(exc) is not None


def log_outcomes(
    events: Sequence[DestinationEvent | RejectedInput], outcomes: Sequence[Outcome], lines: Lines
) -> None:
    """Log what a commit did and count it. Every rejected event has its own warning
    (an operator needs each). The others have their own `event received` line at info
    (`each`), or at debug with one `events committed` line at info for the batch
    (`batch`): a backlog drained at thousands of events a second would otherwise write
    as many lines, past what journald keeps (its default rate limit drops a service's
    lines beyond 10,000 in 30 s)."""
    counts: dict[tuple[str, str], int] = {}
    each = lines == "each" or level_enabled("debug")
    for event, outcome in zip(events, outcomes, strict=True):
        key = (event.source, outcome.status)
        counts[key] = counts.get(key, 0) + 1
        if outcome.status == "rejected" or each:
            _log_outcome(event, outcome, "info" if lines == "each" else "debug")
    # One increment a batch: a labelled counter takes a lookup and a lock each time.
    for (source, status), n in counts.items():
        metrics.EVENTS.labels(source, status).inc(n)
    if lines == "batch" and events:
        _log_batch(events, outcomes)


def _log_outcome(event: DestinationEvent | RejectedInput, outcome: Outcome, level: str) -> None:
    task = event.task_id if isinstance(event, DestinationEvent) else None
    verb = event.verb if isinstance(event, DestinationEvent) else None
    if outcome.status == "rejected":
        log.warning(
            "event rejected",
            intake=event.source,
            verb=verb,
            task=task,
            destination=outcome.destination_id,
            reason=outcome.reason,
        )
        return
    (log.info if level == "info" else log.debug)(
        "event received",
        intake=event.source,
        verb=verb,
        task=task,
        destination=outcome.destination_id,
        outcome=outcome.status,
        reason=outcome.reason,
    )


def _log_batch(
    events: Sequence[DestinationEvent | RejectedInput], outcomes: Sequence[Outcome]
) -> None:
    """One line for a committed batch: how many events, by outcome and by verb, and
    the first and last destination it touched."""
    by_outcome: dict[str, int] = {}
    by_verb: dict[str, int] = {}
    touched = []
    for event, outcome in zip(events, outcomes, strict=True):
        by_outcome[outcome.status] = by_outcome.get(outcome.status, 0) + 1
        if isinstance(event, DestinationEvent):
            by_verb[event.verb] = by_verb.get(event.verb, 0) + 1
        if outcome.destination_id is not None:
            touched.append(outcome.destination_id)
    log.info(
        "events committed",
        intake=events[0].source,
        events=len(events),
        **{status: by_outcome[status] for status in OUTCOMES if status in by_outcome},
        **{verb: by_verb[verb] for verb in VERBS if verb in by_verb},
        first_destination=touched[0] if touched else None,
        last_destination=touched[-1] if touched else None,
    )


def _record_input(
    unit: UnitOfWork, event: DestinationEvent | RejectedInput, now: float, hold_seconds: float
) -> Outcome:
    if event.dedup_key is not None:
        prior = unit.event_with_dedup_key(event.dedup_key)
        if prior is not None:
            return _record_seen(unit, event, prior, now)
    if isinstance(event, RejectedInput):
        seq = unit.insert_event(
            source=event.source,
            received=now,
            topic=event.topic,
            payload=event.payload,
            status="rejected",
            reason=event.reason,
            dedup_key=event.dedup_key,
            digest=event.digest,
        )
        return Outcome(
            "rejected" if seq else "duplicate", reason=event.reason, details=event.details
        )
    return _record_one(unit, event, now, hold_seconds)


def _record_poison(
    unit: UnitOfWork, event: DestinationEvent | RejectedInput, now: float, exc: Exception
) -> Outcome:
    reason = f"poison event: handling raised {type(exc).__name__}: {exc}"[:1000]
    log.error("poison event skipped", topic=event.topic, reason=reason, exc_info=exc)
    destination_id = event.destination_id if isinstance(event, DestinationEvent) else None
    seq = unit.insert_event(
        source=event.source,
        received=now,
        topic=event.topic,
        verb=event.verb if isinstance(event, DestinationEvent) else None,
        task_id=event.task_id if isinstance(event, DestinationEvent) else None,
        destination_id=destination_id,
        payload=event.payload,
        status="rejected",
        reason=reason,
        dedup_key=event.dedup_key,
        digest=event.digest,
    )
    return Outcome("rejected" if seq else "duplicate", destination_id, reason, poison=True)


def _record_seen(
    unit: UnitOfWork, event: DestinationEvent | RejectedInput, prior: EventRecord, now: float
) -> Outcome:
    """An event-id journaled before: the same message is a redelivery, another is an error."""
    if _same_message(prior, event):
        # A broker redelivery after a crash: applying it again could undo a later event.
        return Outcome("duplicate", prior.destination_id)
    event_id = (event.dedup_key or "").removeprefix("mqtt:")
    reason = (
        f"event-id {event_id!r} was already used by journal event {prior.seq} "
        f"({prior.topic}) for another message: not applied"
    )
    verb = task_id = destination_id = None
    if isinstance(event, DestinationEvent):
        verb, task_id, destination_id = event.verb, event.task_id, event.destination_id
    unit.insert_event(
        source=event.source,
        received=now,
        topic=event.topic,
        verb=verb,
        task_id=task_id,
        destination_id=destination_id,
        payload=event.payload,
        status="rejected",
        reason=reason,
        digest=event.digest,
    )
    return Outcome("rejected", destination_id, reason)


def _same_message(prior: EventRecord, event: DestinationEvent | RejectedInput) -> bool:
    if prior.digest is not None and event.digest is not None:
        return prior.digest == event.digest
    # Journaled before digests were kept: the stored topic and payload tell.
    return (prior.topic, prior.payload) == (event.topic, event.payload)


def _record_one(
    unit: UnitOfWork, event: DestinationEvent, now: float, hold_seconds: float
) -> Outcome:
    destination_id = event.destination_id
    if destination_id is None:
        destination_id = unit.next_destination_id()
    try:
        outcome = _apply(unit, event, destination_id, now, hold_seconds)
    except RejectedEventError as exc:
        outcome = Outcome(
            "rejected",
            destination_id,
            exc.reason,
            details=exc.details,
            conflict=isinstance(exc, ConflictingEventError),
        )
    seq = unit.insert_event(
        source=event.source,
        received=now,
        topic=event.topic,
        verb=event.verb,
        task_id=event.task_id,
        destination_id=destination_id,
        payload=event.payload,
        status=outcome.status,
        reason=outcome.reason,
        dedup_key=event.dedup_key,
        digest=event.digest,
    )
    assert seq is not None, "dedup key checked above, inside the same transaction"
    return outcome


def resolve_target(unit: UnitOfWork, body: TaskDestinationBody) -> Target:
    """Which tape or pool a body names; contradictions are rejected, not guessed."""
    barcode = body.tape_barcode
    if barcode is not None:
        try:
            validate_barcode(barcode)
        except InvalidArgumentError as exc:
            raise RejectedEventError(
                f"tape_barcode: {exc.message}", {"tape_barcode": [detail("invalid", barcode)]}
            ) from exc
    if body.tape_id is not None:
        tape = unit.tape_by_id(body.tape_id)
        if tape is None:
            if barcode is None:
                return Target(None, None, "failed", f"unknown tape_id {body.tape_id}")
        elif barcode is not None and tape.barcode != barcode:
            raise ConflictingEventError(
                f"tape_id {body.tape_id} is tape {tape.barcode}, not {barcode}",
                {"tape_id": [detail("invalid", body.tape_id)]},
            )
        else:
            barcode = tape.barcode
    pool_name = body.pool_name
    needs_pools = pool_name is not None or body.pool_id is not None
    pools = {p.name: p for p in unit.pools()} if needs_pools else {}
    if body.pool_id is not None:
        by_id = next((p for p in pools.values() if p.pool_id == body.pool_id), None)
        if by_id is None and pool_name is None:
            return Target(barcode, None, "failed", f"unknown pool_id {body.pool_id}")
        if by_id is not None and pool_name is not None and by_id.name != pool_name:
            raise ConflictingEventError(
                f"pool_id {body.pool_id} is pool {by_id.name!r}, not {pool_name!r}",
                {"pool_id": [detail("invalid", body.pool_id)]},
            )
        if by_id is not None:
            pool_name = by_id.name
    if pool_name is not None and pool_name not in pools:
        return Target(barcode, pool_name, "failed", f"unknown pool {pool_name!r}")
    if pool_name is not None and pools[pool_name].content != "tape":
        return Target(
            None,
            pool_name,
            "ignored",
            f"pool {pool_name!r} holds {pools[pool_name].content}, not tape: not ours",
        )
    if barcode is not None:
        tape = unit.tape(barcode)
        if tape is None:
            return Target(
                barcode, pool_name, "failed", f"unknown barcode {barcode}: not in this library"
            )
        if pool_name is not None and tape.pool != pool_name:
            raise ConflictingEventError(
                f"tape {barcode} belongs to pool {tape.pool!r}, not {pool_name!r}",
                {"pool_name" if body.pool_name else "pool_id": [detail("invalid", pool_name)]},
            )
        if tape.cleaning:
            # Said now, not after a planning round: nothing will ever be written there.
            return Target(
                barcode, tape.pool, "failed", f"{barcode} is a cleaning cartridge, not a data tape"
            )
        return Target(barcode, tape.pool, "active")
    if pool_name is not None:
        return Target(None, pool_name, "active")
    return Target(None, None, "applied", "no tape asked for: nothing to mount")


def _apply(
    unit: UnitOfWork,
    event: DestinationEvent,
    destination_id: int,
    now: float,
    hold_seconds: float,
) -> Outcome:
    existing = unit.destination(destination_id)
    if existing is not None and existing.task_id != event.task_id:
        raise RejectedEventError(
            f"destination {destination_id} belongs to task {existing.task_id}, not {event.task_id}"
        )
    if existing is not None and existing.deleted:
        return Outcome("ignored", destination_id, f"destination {destination_id} was destroyed")
    route = event.route
    if route is not None and route.via == "pass":
        return Outcome("ignored", destination_id, route.reason)
    body = event.body.model_dump(mode="json") if event.body else None
    if existing is not None:
        _check_order(existing, event, body)
    if event.verb == "release":
        if existing is None:
            return Outcome("ignored", destination_id, f"no destination {destination_id}")
        _release_active(unit, destination_id, now, "released")
        return Outcome("applied", destination_id)
    if event.verb == "destroy":
        if existing is None:
            unit.destroy_unknown_destination(
                destination_id, task_id=event.task_id, sequence=event.sequence, now=now
            )
            return Outcome(
                "applied",
                destination_id,
                f"destination {destination_id} destroyed before it was created: "
                "a create of it arriving later is ignored",
            )
        _release_active(unit, destination_id, now, "destroyed")
        unit.destroy_destination(destination_id, sequence=event.sequence, now=now)
        return Outcome("applied", destination_id)

    if event.body is None or body is None:
        raise RejectedEventError(f"{event.verb} needs a body")
    # With a sequence, an update that overtook its create is the newest desired
    # state and applies; the create, arriving later, is then stale.
    unknown_update = event.verb == "update" and existing is None and event.sequence is None
    if unknown_update and route is None:
        raise RejectedEventError(f"update of unknown destination {destination_id}")
    target = resolve_target(unit, event.body)
    if route is not None:
        # In a fleet, another library's destination is journaled as such first: an
        # update of one we never saw is most likely theirs.
        tape_id = event.body.tape_id
        # A tape id another library's block holds is theirs (worker/seed/tape_ids.py).
        foreign_tape_id = (
            tape_id is not None
            and target.barcode is None
            and target.status == "failed"
            and library_of_tape_id(tape_id) != unit.tape_library_id()
        )
        routed = (
            routing.not_ours_tape_id(tape_id, route.library_id)
            if foreign_tape_id and tape_id is not None
            else _route_target(event, route, existing, target)
        )
        if isinstance(routed, str):
            return _not_ours(unit, event, existing, destination_id, now, routed)
        if unknown_update:
            raise RejectedEventError(f"update of unknown destination {destination_id}")
        target = routed
    write = DestinationWrite(
        destination_id,
        event.task_id,
        body,
        event.nested,
        target.barcode,
        target.pool,
        target.status,
        target.reason,
        event.sequence,
    )
    # A destination we have just created has no request yet.
    active = unit.active_request_for(destination_id) if existing is not None else None
    if existing is None:
        unit.insert_destination(write, now)
    else:
        unit.update_destination(write, now)
    if active is not None and _same_target(active, target):
        # A repeated create/update renews the lease; nothing else changes.
        if active.state is RequestState.READY:
            unit.renew_lease(active.id, now, hold_seconds)
        return Outcome("applied", destination_id)
    if active is not None:
        unit.release(active, now, "replaced by an update")
    if target.status == "active":
        unit.add_request(
            destination_id,
            barcode=target.barcode,
            pool=target.pool,
            now=now,
            size_bytes=event.size_bytes,
        )
    elif target.status == "failed":
        failed = unit.add_request(destination_id, barcode=target.barcode, pool=target.pool, now=now)
        unit.set_request_state(failed, RequestState.FAILED, now, reason=target.reason)
    return Outcome("applied", destination_id, target.reason)


def _route_target(
    event: DestinationEvent,
    route: routing.Route,
    existing: DestinationRecord | None,
    target: Target,
) -> Target | str:
    """The target as this library of a fleet applies it, or why it is not ours."""
    if route.via == "fail":
        return Target(None, target.pool, "failed", route.reason)
    if route.via == "take":
        return target
    if target.barcode is not None:
        held = not (target.status == "failed" and (target.reason or "").startswith("unknown"))
        return target if held else routing.not_ours_barcode(target.barcode, route.library_id)
    if target.pool is None:
        return target
    unknown_pool = target.status == "failed"
    if event.verb == "create" and existing is None and not unknown_pool:
        raise RejectedEventError(routing.pool_create_on_common_topic(route.prefix, target.pool))
    owned = existing is not None and existing.status != "ignored"
    if owned and not unknown_pool:
        return target
    return routing.not_ours_pool(target.pool, route.library_id)


def _not_ours(
    unit: UnitOfWork,
    event: DestinationEvent,
    existing: DestinationRecord | None,
    destination_id: int,
    now: float,
    reason: str,
) -> Outcome:
    """Journal another library's destination: the row says so, and nothing is asked of
    the hardware (an update may make it ours later)."""
    assert event.body is not None
    write = DestinationWrite(
        destination_id,
        event.task_id,
        event.body.model_dump(mode="json"),
        event.nested,
        None,
        None,
        "ignored",
        reason,
        event.sequence,
    )
    if existing is None:
        unit.insert_destination(write, now)
    else:
        _release_active(unit, destination_id, now, "now another library's")
        unit.update_destination(write, now)
    return Outcome("ignored", destination_id, reason)


def _check_order(
    existing: DestinationRecord, event: DestinationEvent, body: dict[str, Any] | None
) -> None:
    """Reject a change older than the last one applied to the destination.

    Only events that both carry a sequence are compared; a release comes from the
    data mover, which does not know the archive manager's order. The same sequence
    again is a repeat of that change (it renews the lease) when it asks for the same
    thing, and a contradiction otherwise.
    """
    last = existing.sequence
    sequence = event.sequence
    if sequence is None or last is None or event.verb == "release":
        return
    if sequence < last:
        raise RejectedEventError(
            f"stale {event.verb}: sequence {sequence} is older than sequence {last} "
            f"already applied to destination {existing.id}"
        )
    if sequence == last and (event.verb == "destroy" or body is None or body != existing.body):
        raise RejectedEventError(
            f"{event.verb} with sequence {sequence} differs from the change of the same "
            f"sequence already applied to destination {existing.id}"
        )


def _same_target(active: RequestRecord, target: Target) -> bool:
    if target.status != "active":
        return False
    if target.barcode is not None:
        return active.barcode == target.barcode and (
            active.pool is None or target.pool is None or active.pool == target.pool
        )
    # A pool destination keeps the tape we chose for it while the pool is unchanged.
    return target.pool is not None and active.pool == target.pool


def _release_active(unit: UnitOfWork, destination_id: int, now: float, why: str) -> None:
    active = unit.active_request_for(destination_id)
    if active is not None:
        unit.release(active, now, why)


@dataclass(frozen=True, slots=True)
class ParsedPayload:
    body: TaskDestinationBody
    #: The nested folder's `size` of a full TaskDestination: the bytes the task will
    #: write, which lets the planner pick a tape with room for them.
    size_bytes: int | None = None
    #: The nested `folder` and `container` of a full TaskDestination, as the seed has them.
    nested: dict[str, Any] | None = None


def parse_body(payload: bytes | str) -> TaskDestinationBody:
    """Decode a create/update payload; RejectedEventError names the problem."""
    return parse_payload(payload).body


def parse_payload(payload: bytes | str) -> ParsedPayload:
    """Decode a create/update payload, body and declared size; RejectedEventError
    names the problem."""
    # Most payloads are a body of the seed's fields alone: pydantic validates those
    # straight from the bytes, in one pass, for half the cost of decoding the JSON first.
    # The model forbids any other field, so anything else (a full TaskDestination, a
    # mistake) fails here and takes the path that keeps the rest and names the problem.
    try:
        return ParsedPayload(TaskDestinationBody.model_validate_json(payload))
    except ValueError:  # a ValidationError, whatever the problem
        return parse_full_payload(payload)


def parse_full_payload(payload: bytes | str) -> ParsedPayload:
    """`parse_payload` for any payload: a body, a full TaskDestination (its nested
    folder and container kept), or what is wrong with it."""
    try:
        text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError, UnicodeDecodeError and integers longer
        # than Python converts (4300 digits); RecursionError a deeply nested array.
        raise RejectedEventError(
            f"payload is not JSON: {exc}", {"body": [detail("invalid", _prefix(payload))]}
        ) from exc
    if not isinstance(data, dict):
        raise RejectedEventError(
            f"payload must be a JSON object, not {type(data).__name__}",
            {"body": [detail("invalid", _prefix(payload))]},
        )
    # A full TaskDestination (as the seed's responses show) is accepted too: we keep
    # the body fields and ignore the nested read-only objects.
    body_fields = set(TaskDestinationBody.model_fields)
    extra = set(data) - body_fields - {"id", "folder", "container", "tape", "pool", "state"}
    if extra:
        raise RejectedEventError(
            f"unknown fields: {sorted(extra)}",
            {name: [detail("unknown_attribute", data[name])] for name in sorted(extra)},
        )
    try:
        body = TaskDestinationBody.model_validate(
            {k: v for k, v in data.items() if k in body_fields}
        )
    except ValidationError as exc:
        raise RejectedEventError(
            f"invalid body: {_short(exc)}", validation_details(exc.errors())
        ) from exc
    return ParsedPayload(body, _folder_size(data.get("folder")), _nested(data))


def _nested(data: dict[str, Any]) -> dict[str, Any] | None:
    """The folder and container of a full TaskDestination, checked against the seed."""
    nested: dict[str, Any] = {}
    for name, model in (("folder", Folder), ("container", Container)):
        if data.get(name) is None:
            continue
        try:
            nested[name] = model.model_validate(data[name]).model_dump(mode="json")
        except ValidationError as exc:
            details = {
                f"{name}.{key}": items for key, items in validation_details(exc.errors()).items()
            }
            raise RejectedEventError(f"invalid {name}: {_short(exc)}", details) from exc
    return nested or None


def _folder_size(folder: object) -> int | None:
    if not isinstance(folder, dict) or folder.get("size") is None:
        return None
    size = folder["size"]
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= 2**63 - 1:
        raise RejectedEventError(
            f"folder.size must be a whole number of bytes from 0 to 2^63-1, not {size!r:.40}",
            {"folder.size": [detail("invalid", size)]},
        )
    return size


def _prefix(payload: bytes | str) -> str:
    """The start of a payload, as text, for an error to repeat back."""
    head = payload[:VALUE_CHARS]
    return head.decode("utf-8", "replace") if isinstance(head, bytes) else head


def _short(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors())
    return str(exc)
