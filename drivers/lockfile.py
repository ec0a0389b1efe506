"""The changer lock across processes: a flock on a file in the daemon's state directory.

The daemon takes it around every changer command, and so does a manual
`tapeworker inventory`, so that the CLI never runs `mtx status` during a move.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from pathlib import Path

#: How often a waiter tries again; a robot move takes seconds, so this costs nothing.
_RETRY_S = (0.01, 0.05, 0.1, 0.25)


@contextlib.asynccontextmanager
async def file_lock(path: Path | None) -> AsyncIterator[None]:
    """Hold an exclusive flock on `path` (created when its folder exists).

    Without a path, or without its folder (no daemon has used that state directory),
    there is nobody to exclude and nothing is locked. We poll with LOCK_NB rather than
    block in a thread: a cancelled waiter must not leave a thread that takes the lock
    later and never gives it back.
    """
    if path is None or not path.parent.is_dir():
        yield
        return
    # O_RDONLY is enough for flock, and lets an operator who may only read the
    # state directory still take part.
    flags = os.O_RDONLY | os.O_CLOEXEC | (os.O_CREAT if os.access(path.parent, os.W_OK) else 0)
    fd = os.open(path, flags, 0o640)
    try:
        attempt = 0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(_RETRY_S[min(attempt, len(_RETRY_S) - 1)])
                attempt += 1
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
