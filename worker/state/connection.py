"""One SQLite connection on a thread of its own, awaited from the event loop.

Every call is one trip: the work is handed to the connection's thread and the loop
waits for the answer. A trip costs far more than a statement (hundreds of
microseconds on a busy machine, against a few for an indexed statement), so work of
many statements is best handed over whole with `run`: the journal applies a batch of
events that way, BEGIN to COMMIT in one trip.

The thread takes its work from a queue: trips run one after the other, in the order
they were asked for, whether or not their callers still wait (a cancelled caller's
statement still runs; the next trip comes after it). Each answer goes back to the
caller's event loop with one `call_soon_threadsafe`: a `ThreadPoolExecutor` costs a
concurrent future with its locks, a thread-count check and a chained asyncio future
a trip, which the HTTP create paid for on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

__all__ = ["Cursor", "ThreadConnection"]

Result = TypeVar("Result")
Params = ParamSpec("Params")


@dataclass(frozen=True, slots=True)
class Cursor:
    """What a statement left: its rows (all of them, fetched in the same trip), the
    rows it changed and the last rowid it inserted."""

    rows: list[sqlite3.Row]
    rowcount: int
    lastrowid: int | None


def _execute(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> Cursor:
    cursor = conn.execute(sql, params)
    try:
        rows = cursor.fetchall()
        return Cursor(rows, cursor.rowcount, cursor.lastrowid)
    finally:
        cursor.close()


def _plain_cursor(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> sqlite3.Cursor:
    cursor = conn.cursor()
    # Tuples: far cheaper to read than named rows.
    cursor.row_factory = None
    return cursor.execute(sql, params)


def _fetch(_conn: sqlite3.Connection, cursor: sqlite3.Cursor, size: int) -> list[tuple[Any, ...]]:
    return cursor.fetchmany(size)


def _close(_conn: sqlite3.Connection, cursor: sqlite3.Cursor) -> None:
    cursor.close()


def _executemany(conn: sqlite3.Connection, sql: str, params: Iterable[Sequence[Any]]) -> None:
    conn.executemany(sql, params).close()


def _executescript(conn: sqlite3.Connection, script: str) -> None:
    conn.executescript(script).close()


#: A trip: the call, and the caller's loop and future its answer goes to.
_Trip = tuple[Callable[[], Any], asyncio.AbstractEventLoop, asyncio.Future[Any]]


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """In the caller's loop: the answer, unless the caller stopped waiting."""
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _serve(trips: queue.SimpleQueue[_Trip | None]) -> None:
    """The connection's thread: each trip in turn, until told to stop (None)."""
    while (trip := trips.get()) is not None:
        call, loop, future = trip
        try:
            result = call()
        except BaseException as exc:  # the caller's to handle, whatever it is
            answer: tuple[Any, BaseException | None] = (None, exc)
        else:
            answer = (result, None)
        # A closed loop (RuntimeError): nobody is left to answer.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, future, *answer)
        del trip, call, future, answer


class ThreadConnection:
    """A `sqlite3.Connection` used from its own thread only; rows are `sqlite3.Row`."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        trips: queue.SimpleQueue[_Trip | None],
    ) -> None:
        self._conn = conn
        self._trips = trips
        self._closed = False
        #: Trips to the connection's thread so far (`run`, and each statement).
        self.trips = 0
        #: Told of each trip; the journal hands it to the metrics.
        self.on_trip: Callable[[], None] = _nothing

    @property
    def connection(self) -> sqlite3.Connection:
        """The connection itself, for work handed to `run` (use it nowhere else)."""
        return self._conn

    @classmethod
    async def connect(cls, target: str | Any, **kwargs: Any) -> ThreadConnection:
        """Open `target` (a path, or a URI with `uri=True`) in a new thread of its own."""
        trips: queue.SimpleQueue[_Trip | None] = queue.SimpleQueue()
        # A daemon thread: a process that exits without closing its journal must not
        # hang on it, and SQLite's own journal makes an interrupted transaction safe.
        thread = threading.Thread(target=_serve, args=(trips,), name="journal", daemon=True)
        thread.start()
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[sqlite3.Connection] = loop.create_future()
        connect = functools.partial(sqlite3.connect, target, check_same_thread=False, **kwargs)
        trips.put((connect, loop, opened))
        try:
            conn = await opened
        except BaseException:
            trips.put(None)
            raise
        conn.row_factory = sqlite3.Row
        return cls(conn, trips)

    async def run(
        self,
        work: Callable[..., Result],
        *args: Any,
    ) -> Result:
        """`work(connection, *args)` in the connection's thread: one trip, whatever it does.

        It runs in a copy of the caller's context (context variables, the log's bound
        values), as `asyncio.to_thread` does.
        """
        if self._closed:
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
        self.trips += 1
        self.on_trip()
        context = contextvars.copy_context()
        call = functools.partial(context.run, work, self._conn, *args)
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Result] = loop.create_future()
        self._trips.put((call, loop, answer))
        return await answer

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return await self.run(_execute, sql, params)

    async def execute_fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return (await self.run(_execute, sql, params)).rows

    async def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> None:
        await self.run(_executemany, sql, list(params))

    async def executescript(self, script: str) -> None:
        await self.run(_executescript, script)

    async def chunks(
        self, sql: str, params: Sequence[Any], size: int
    ) -> AsyncIterator[list[tuple[Any, ...]]]:
        """The rows as plain tuples, `size` a trip: a large table is never read whole."""
        cursor = await self.run(_plain_cursor, sql, params)
        try:
            while chunk := await self.run(_fetch, cursor, size):
                yield chunk
        finally:
            await self.run(_close, cursor)

    async def close(self) -> None:
        """Close the connection and end its thread (idempotent)."""
        if self._closed:
            return
        try:
            await self.run(sqlite3.Connection.close)
        finally:
            self._closed = True
            self._trips.put(None)


def _nothing() -> None:
    """No one counts the trips."""
