"""Mount requests and their state machine.

Rule: every state change of a request goes through `transition`, against the one
table below. An illegal transition raises; it is never a silent no-op.
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
    if new not in _LEGAL[current]:
        raise IllegalTransitionError(f"request cannot go from {current} to {new}")
    return new


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
