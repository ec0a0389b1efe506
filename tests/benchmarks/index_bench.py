"""The index at scale: a page, a filtered page and the unpaged listing, through the
HTTP app on a real journal file, timed side by side in one run.

    python -m tests.benchmarks.index_bench --destinations 100000 --listing 50000

prints the figures and the ratios the README quotes (`make bench-api`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from pydantic import SecretStr

from tests.worker.harness import CATALOG
from worker.intake.http.app import create_app
from worker.settings import HttpSettings, Settings
from worker.state.journal import DestinationWrite, Journal

AUTH = ("bench", "bench")
#: Pools of the catalog: a filter on one of them matches half of the destinations.
POOLS = ((6, "offline-tapes"), (7, "online-tapes"))


@dataclass(frozen=True)
class Figures:
    destinations: int
    listing: int
    page_s: float
    filtered_page_s: float
    listing_s: float
    listing_bytes: int
    #: The process's CPU time over each: on a machine busy with other work, the share of
    #: the wall time that was ours.
    page_cpu_s: float
    filtered_page_cpu_s: float
    listing_cpu_s: float

    @property
    def filtered_ratio(self) -> float:
        return self.filtered_page_s / self.page_s

    @property
    def page_ratio(self) -> float:
        # Against the smaller listing: a stricter bound than the whole journal's.
        return self.page_s / self.listing_s

    def lines(self) -> list[str]:
        def verdict(ok: bool) -> str:
            return "met" if ok else "MISSED"

        return [
            f"destinations in the journal: {self.destinations}",
            f"page of 100 (sort by id):                  {self.page_s * 1000:8.1f} ms "
            f"(CPU {self.page_cpu_s * 1000:.1f} ms)",
            f"filtered page of 100 (pool_id=6, half):    {self.filtered_page_s * 1000:8.1f} ms "
            f"(CPU {self.filtered_page_cpu_s * 1000:.1f} ms)",
            f"unpaged listing of {self.listing} (task 8):  {self.listing_s:8.2f} s, "
            f"{self.listing_bytes / 1e6:.1f} MB (CPU {self.listing_cpu_s:.2f} s)",
            f"filtered page / page = {self.filtered_ratio:.2f} (target <= 3): "
            f"{verdict(self.filtered_ratio <= 3)}; in CPU time "
            f"{self.filtered_page_cpu_s / self.page_cpu_s:.2f}",
            f"page / unpaged listing = 1/{1 / self.page_ratio:.0f} (target <= 1/100): "
            f"{verdict(self.page_ratio <= 0.01)}",
            f"listing of {self.listing} in {self.listing_s:.2f} s (target < 2 s): "
            f"{verdict(self.listing_s < 2.0)}",
        ]


async def fill(journal: Journal, task_id: str, count: int, first_id: int) -> None:
    """Destinations as pool and folder creates leave them, in batches of 5,000."""
    for start in range(0, count, 5000):
        writes = []
        for n in range(start, min(count, start + 5000)):
            pool_id, pool = POOLS[n % 2]
            body = {
                "folder_id": n % 997,
                "folder_path": f"/container/folder-{n}",
                "tape_id": None,
                "tape_barcode": None,
                "pool_id": pool_id,
                "pool_name": None,
            }
            writes.append(
                DestinationWrite(first_id + n, task_id, body, None, None, pool, "active", None)
            )
        async with journal.transaction() as tx:
            await tx.insert_destinations(writes, now=1000.0)


async def _median(repeat: int, call: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """The median wall time of a call, and the median CPU time of this process over it."""
    times, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        await call()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(times), statistics.median(cpu)


async def measure(destinations: int, listing: int, repeat: int = 15) -> Figures:
    async def ignore(_: set[int]) -> None:
        return None

    with tempfile.TemporaryDirectory() as tmp:
        journal = await Journal.open(Path(tmp) / "journal.sqlite3")
        try:
            await journal.sync_catalog(CATALOG, now=1.0)
            await fill(journal, "7", destinations, 1)
            await fill(journal, "8", listing, destinations + 1)
            settings = Settings(http=HttpSettings(users={AUTH[0]: SecretStr(AUTH[1])}))
            app = create_app(journal, settings, on_change=ignore, clock=time.time)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://bench", auth=AUTH, timeout=600
            ) as client:

                async def get(task: str, **params: str | int) -> bytes:
                    url = f"/api/v2/tasks/{task}/task_destinations"
                    response = await client.get(url, params=params)
                    assert response.status_code == 200, response.text[:300]
                    return response.content

                def check(body: bytes, count: int, rows: int) -> None:
                    # Outside the timings: parsing is the client's cost, not the daemon's.
                    data = json.loads(body)
                    assert data["count"] == count, data["count"]
                    assert len(data["task_destinations"]) == rows

                # Interleaved, so that a busy neighbour slows both sides alike.
                page_s, page_cpu_s = await _median(repeat, lambda: get("7", limit=100, offset=500))
                filtered_s, filtered_cpu_s = await _median(
                    repeat, lambda: get("7", limit=100, offset=500, pool_id="6")
                )
                again_s, again_cpu_s = await _median(
                    repeat, lambda: get("7", limit=100, offset=500)
                )
                page_s, page_cpu_s = min(page_s, again_s), min(page_cpu_s, again_cpu_s)
                check(await get("7", limit=100, offset=500), destinations, 100)
                check(await get("7", limit=100, offset=500, pool_id="6"), destinations // 2, 100)
                body = b""

                async def whole() -> None:
                    nonlocal body
                    body = await get("8")

                listing_s, listing_cpu_s = await _median(1 if listing > 10_000 else 3, whole)
                check(body, listing, listing)
                size = len(body)
        finally:
            await journal.close()
    return Figures(
        destinations,
        listing,
        page_s,
        filtered_s,
        listing_s,
        size,
        page_cpu_s,
        filtered_cpu_s,
        listing_cpu_s,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--destinations", type=int, default=100_000)
    parser.add_argument("--listing", type=int, default=50_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    figures = asyncio.run(measure(args.destinations, args.listing))
    if args.json:
        print(json.dumps(figures.__dict__))
    else:
        print("\n".join(figures.lines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
