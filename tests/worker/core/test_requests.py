"""The request state table and the lease rule, on their own."""

from __future__ import annotations

import itertools

import pytest

from worker.core.requests import (
    ACTIVE,
    TERMINAL,
    RequestState,
    lease_expired,
    lease_expiry,
    transition,
)
from worker.errors import IllegalTransitionError

P, M, R, REL, F = (
    RequestState.PENDING,
    RequestState.MOUNTING,
    RequestState.READY,
    RequestState.RELEASED,
    RequestState.FAILED,
)

#: Every legal move, written out again here so that a change of the table shows.
LEGAL = {
    (P, M), (P, R), (P, REL), (P, F),
    (M, P), (M, R), (M, REL), (M, F),
    (R, REL), (R, F), (R, P),
}  # fmt: skip


@pytest.mark.parametrize(("current", "new"), sorted(LEGAL))
def test_every_legal_transition_is_allowed(current: RequestState, new: RequestState) -> None:
    assert transition(current, new) is new


ILLEGAL = sorted(set(itertools.product(RequestState, repeat=2)) - LEGAL)


@pytest.mark.parametrize(("current", "new"), ILLEGAL)
def test_every_other_transition_is_refused(current: RequestState, new: RequestState) -> None:
    with pytest.raises(IllegalTransitionError, match=f"from {current} to {new}"):
        transition(current, new)


def test_an_ended_request_never_moves_again() -> None:
    for current, new in itertools.product(TERMINAL, RequestState):
        with pytest.raises(IllegalTransitionError):
            transition(current, new)


def test_active_and_terminal_split_the_states() -> None:
    assert set(RequestState) == ACTIVE | TERMINAL
    assert not ACTIVE & TERMINAL


def test_a_lease_lasts_hold_seconds_from_its_grant() -> None:
    assert lease_expiry(1000.0, 3600.0) == 4600.0


def test_a_ready_lease_ends_at_its_expiry_and_not_before() -> None:
    expires = lease_expiry(1000.0, 60.0)
    assert not lease_expired(R, expires, 1059.9)
    assert lease_expired(R, expires, 1060.0)
    assert lease_expired(R, expires, 5000.0)


def test_only_a_ready_request_with_an_end_loses_its_lease() -> None:
    assert not lease_expired(R, None, 10**12)
    for state in (P, M, REL, F):
        assert not lease_expired(state, 0.0, 10**12)
