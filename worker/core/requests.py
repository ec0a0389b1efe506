"""Mount requests, their state machine and their lease.

Rule: every state change of a request goes through `transition`, against the one
table below. An illegal transition raises; it is never a silent no-op.

A ready request holds its drive until its lease ends: `lease_expiry` sets the
lease (when the tape becomes ready, and again at each repeated create or update),
`lease_expired` is the one test of whether it has ended.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from worker.errors import IllegalTransitionError


class RequestState(StrEnum):
    PENDING = "pending"
    MOUNTING = "mounting"
    READY = "ready"
    RELEASED = "released"
    FAILED = "failed"


_LEGAL: dict[RequestState, frozenset[RequestState]] = {
    RequestState.PENDING: frozenset(
        {RequestState.MOUNTING, RequestState.READY, RequestState.RELEASED, RequestState.FAILED}
    ),
    # A mount that fails for a retryable reason goes back to pending.
    RequestState.MOUNTING: frozenset(
        {RequestState.PENDING, RequestState.READY, RequestState.RELEASED, RequestState.FAILED}
    ),
    # A drive that goes down under a ready request sends it back to pending.
    RequestState.READY: frozenset(
        {RequestState.RELEASED, RequestState.FAILED, RequestState.PENDING}
    ),
    RequestState.RELEASED: frozenset(),
    RequestState.FAILED: frozenset(),
}

TERMINAL = frozenset({RequestState.RELEASED, RequestState.FAILED})
ACTIVE = frozenset({RequestState.PENDING, RequestState.MOUNTING, RequestState.READY})


def transition(current: RequestState, new: RequestState) -> RequestState:
    """The new state when the table allows the move; IllegalTransitionError otherwise."""
    if new not in _LEGAL[current]:
        raise IllegalTransitionError(f"request cannot go from {current} to {new}")
    return new


def lease_expiry(now: float, hold_seconds: float) -> float:
    """When a lease granted or renewed at `now` ends."""
    return now + hold_seconds


def lease_expired(state: RequestState, lease_expires: float | None, now: float) -> bool:
    """Whether a request's drive is free to go: a ready request whose lease has ended.

    Only a ready request holds a lease; one without an end holds its drive until it
    is released or destroyed.
    """
    return state is RequestState.READY and lease_expires is not None and lease_expires <= now


@dataclass(frozen=True, slots=True)
class MountRequest:
    """What a destination asks of the library: a tape, or any writable tape of a pool."""

    id: int
    barcode: str | None
    pool: str | None
    arrival: float
    write: bool = True
    priority: int = 0
    size_bytes: int | None = None
