"""The journal's connection on a thread of its own: one trip per call, in order."""

from __future__ import annotations

import asyncio
import contextvars
import sqlite3
import threading
from pathlib import Path

import pytest

from worker.state.connection import ThreadConnection

_caller: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="none")


async def test_each_call_is_one_trip_and_work_runs_on_the_connections_thread(
    tmp_path: Path,
) -> None:
    db = await ThreadConnection.connect(tmp_path / "db.sqlite3", isolation_level=None)
    counted: list[int] = []
    db.on_trip = lambda: counted.append(1)
    try:
        await db.executescript("CREATE TABLE t (n INTEGER PRIMARY KEY, v TEXT)")
        inserted = await db.execute("INSERT INTO t(v) VALUES('a')")
        assert (inserted.rowcount, inserted.lastrowid) == (1, 1)

        def many(conn: sqlite3.Connection, count: int) -> tuple[str, str]:
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO t(v) VALUES(?)", [(str(n),) for n in range(count)])
            conn.execute("COMMIT")
            return threading.current_thread().name, _caller.get()

        _caller.set("the caller")
        before = db.trips
        thread, caller = await db.run(many, 100)
        assert db.trips - before == 1
        assert thread.startswith("journal")
        assert thread != threading.current_thread().name
        # The caller's context goes with the work.
        assert caller == "the caller"
        [row] = await db.execute_fetchall("SELECT COUNT(*) AS n FROM t")
        assert row["n"] == 101
        assert len(counted) == db.trips == 4
    finally:
        await db.close()


async def test_errors_come_back_to_the_caller_and_a_closed_connection_refuses(
    tmp_path: Path,
) -> None:
    db = await ThreadConnection.connect(tmp_path / "db.sqlite3", isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        await db.execute("SELECT * FROM missing")
    # The connection goes on after an error.
    assert [tuple(r) for r in await db.execute_fetchall("SELECT 1")] == [(1,)]
    await db.close()
    await db.close()
    with pytest.raises(sqlite3.ProgrammingError):
        await db.execute("SELECT 1")


async def test_a_cancelled_callers_work_still_runs_in_order_and_its_answer_is_dropped(
    tmp_path: Path,
) -> None:
    db = await ThreadConnection.connect(tmp_path / "db.sqlite3", isolation_level=None)
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    held = threading.Event()
    try:
        await db.executescript("CREATE TABLE t (n INTEGER PRIMARY KEY, v TEXT)")

        def blocked(conn: sqlite3.Connection) -> None:
            held.wait(timeout=30)
            conn.execute("INSERT INTO t(v) VALUES('first')")

        first = asyncio.create_task(db.run(blocked))
        second = asyncio.create_task(db.execute("INSERT INTO t(v) VALUES('second')"))
        await asyncio.sleep(0)
        first.cancel()
        held.set()
        inserted = await second
        # The cancelled caller's statement ran, before the next one.
        assert inserted.lastrowid == 2
        rows = await db.execute_fetchall("SELECT v FROM t ORDER BY n")
        assert [row["v"] for row in rows] == ["first", "second"]
        with pytest.raises(asyncio.CancelledError):
            await first
        # Its answer found nobody waiting, and that is no error.
        assert errors == []
    finally:
        loop.set_exception_handler(None)
        await db.close()
