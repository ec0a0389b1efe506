"""The worker's error hierarchy. Each class says what the caller does next."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class WorkerError(Exception):
    """Base of everything the worker raises on purpose."""


class ConfigError(WorkerError):
    """The configuration is invalid; the message names the file, the key and the problem."""


class IllegalTransitionError(WorkerError):
    """A request state change outside the table in `worker.core.requests`: a bug, never ignored."""


class RejectedEventError(WorkerError):
    """An event that can never be applied (malformed, contradictory); journaled as rejected."""

    def __init__(
        self, reason: str, details: Mapping[str, Sequence[Mapping[str, str]]] | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        #: Per attribute, the archive manager's error kind and the received value.
        self.details = details


class ConflictingEventError(RejectedEventError):
    """A well-formed event that contradicts what the library knows (a tape_id that is
    another barcode's, a pool_id that is another pool's, a tape of another pool): the
    client's view of the library is out of date; rejected, never guessed."""


class JournalError(WorkerError):
    """The journal could not be opened or is from an incompatible version."""


class JournalDamagedError(JournalError):
    """The journal file is damaged: stop, and let an operator salvage it
    (`tapeworker journal recover`); serving from it would fail every write."""


class JournalFaultError(JournalError):
    """The journal cannot take writes right now (disk full, read-only, I/O error,
    damage): hold the work back, acknowledge nothing, and retry later."""

    def __init__(self, path: str, kind: str, detail: str) -> None:
        super().__init__(f"{path}: journal {kind}: {detail}")
        self.path = path
        self.kind = kind
        self.detail = detail


class StartupError(WorkerError):
    """The daemon cannot start; the message says what is wrong and where."""
