"""The index's response, streamed: `{"count": N, "task_destinations": [...]}`.

Each destination's JSON is built by SQLite (`Journal.destination_listing`), so that an
unpaged listing of tens of thousands of destinations costs no Python per row; the
objects of the tapes and pools it shows are built here by the views, from the same
records as a single destination's. Rows are read in chunks: memory stays flat.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence

from worker.intake.views import pool_json, tape_json
from worker.seed.query import IndexQuery
from worker.state.journal import Journal, PoolRecord

#: Destinations per journal read while a listing streams.
CHUNK = 1000


def _pools_by_id(pools: Sequence[PoolRecord]) -> str:
    return json.dumps({str(pool.pool_id): pool_json(pool) for pool in pools})


async def _tapes_by_id(
    journal: Journal, ids: Sequence[int], pools: Sequence[PoolRecord], library_id: int
) -> str:
    pool_ids = {pool.name: pool.pool_id for pool in pools}
    tapes = await journal.listing_tapes(ids)
    return json.dumps(
        {
            str(tape.tape_id): tape_json(
                tape, pool_ids.get(tape.pool) if tape.pool else None, library_id
            )
            for tape in tapes
        }
    )


async def index_listing(
    journal: Journal, task_id: str, query: IndexQuery
) -> tuple[int, AsyncIterator[bytes]]:
    """How many destinations match, and the response body as chunks of JSON."""
    count, ids = await journal.destination_page(task_id, query)
    pools = await journal.pools()
    pools_json = _pools_by_id(pools)
    library_id = await journal.tape_library_id()

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"count":%d,"task_destinations":[' % count
        separator = b""
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            tapes_json = await _tapes_by_id(journal, chunk, pools, library_id)
            rows = await journal.destination_listing(chunk, tapes_json, pools_json)
            if rows:
                yield separator + b",".join(rows)
                separator = b","
        yield b"]}"

    return count, chunks()
