"""The worker's errors: each class tells the caller what to do, and carries what it
needs for that as attributes, not only in its message."""

from __future__ import annotations

import pytest

from worker.errors import (
    ConfigError,
    IllegalTransitionError,
    JournalDamagedError,
    JournalError,
    JournalFaultError,
    RejectedEventError,
    StartupError,
    WorkerError,
)


@pytest.mark.parametrize(
    "error",
    [ConfigError, IllegalTransitionError, RejectedEventError, JournalError, StartupError],
)
def test_every_error_is_a_worker_error(error: type[Exception]) -> None:
    assert issubclass(error, WorkerError)


def test_journal_faults_and_damage_are_journal_errors() -> None:
    # A caller that handles JournalError handles both; one that must tell them apart can.
    assert issubclass(JournalFaultError, JournalError)
    assert issubclass(JournalDamagedError, JournalError)
    assert not issubclass(JournalFaultError, JournalDamagedError)


def test_a_fault_names_the_file_its_kind_and_what_sqlite_said() -> None:
    fault = JournalFaultError("/var/lib/tapeworker/journal.sqlite3", "full", "database is full")
    assert (fault.path, fault.kind, fault.detail) == (
        "/var/lib/tapeworker/journal.sqlite3",
        "full",
        "database is full",
    )
    assert str(fault) == "/var/lib/tapeworker/journal.sqlite3: journal full: database is full"


def test_a_rejection_carries_its_reason_and_details() -> None:
    details = {"tape_barcode": [{"error": "invalid", "value": "NOD 400"}]}
    rejected = RejectedEventError("invalid body", details)
    assert rejected.reason == "invalid body"
    assert rejected.details == details
    assert str(rejected) == "invalid body"
    assert RejectedEventError("no details").details is None
