"""The intake benchmark, small (`make bench-intake` for the full size).

Rates and ratios are printed, never asserted: they depend on the disk and on the
machine's load. What is asserted is that the machinery measured what it claims.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.benchmarks.intake_bench import CONCURRENCY, measure

pytestmark = [pytest.mark.benchmark, pytest.mark.integration, pytest.mark.timeout(600)]


def test_print_intake_against_the_bare_consumers() -> None:
    figures = asyncio.run(measure(messages=300, requests=40))
    print()
    print("\n".join(figures.lines()))
    # Both consumers drained the whole backlog, each event committed once.
    assert figures.bare is not None
    assert figures.daemon is not None
    assert figures.bare.messages == figures.daemon.messages == 300
    assert len(figures.daemon.tenths()) == 10
    assert figures.daemon.peak_rss_bytes is not None
    assert figures.daemon.peak_rss_bytes > 0
    # The daemon came back over its journal and was measured once ready.
    assert figures.daemon.restart_rss_bytes is not None
    assert figures.daemon.restart_peak_rss_bytes is not None
    assert 0 < figures.daemon.restart_rss_bytes <= figures.daemon.restart_peak_rss_bytes
    assert figures.daemon.planning_rounds is not None
    # Every trip counted, at least one per commit.
    assert figures.daemon.round_trips is not None
    assert figures.daemon.round_trips >= len(set(figures.daemon.commits))
    # The CPU was measured over the messages drained after the consumer was seen
    # running (the daemon may have drained all 300 before it was first looked at).
    # Each consumer's event loop was seen running, and no share exceeds the wall time.
    for drain in (figures.bare, figures.daemon):
        name, running, waiting = drain.thread_times[0]
        assert name in ("main", "event loop")
        assert 0 < running + waiting <= drain.sched_wall_s * 1.05
    assert figures.bare.most_held is not None
    assert figures.bare.most_held >= 1
    assert figures.bare.cpu_s is not None
    assert figures.bare.cpu_s > 0
    assert figures.bare.cpu_messages == 300
    assert figures.daemon.cpu_s is not None
    assert figures.daemon.cpu_s >= 0
    assert 0 <= figures.daemon.cpu_messages <= 300
    # The journal's thread is one of the daemon's: its CPU is part of the whole.
    assert figures.daemon.journal_cpu_s is not None
    assert 0 <= figures.daemon.journal_cpu_s <= figures.daemon.cpu_s
    assert figures.daemon.read_pauses is not None
    assert figures.daemon.reconnects == 0
    # The CPU window ran until the drain's state publications were all confirmed: at
    # least one for each destination, none dropped.
    assert figures.daemon.publication_lag_s is not None
    assert figures.daemon.publications_dropped == 0
    assert figures.daemon.publications_confirmed is not None
    assert figures.daemon.publications_confirmed >= 300
    assert "0 dropped (target 0): met" in figures.publication_line()
    # Both servers parsed HTTP with the same parser: the ratio compares like with like.
    assert figures.http_parsers == (
        "uvicorn + httptools for the trivial app, uvicorn + httptools for the daemon"
    )
    # Every HTTP create got an answer from both servers, at every concurrency.
    pairs = figures.http_pairs()
    assert [daemon.concurrency for _, daemon in pairs] == list(CONCURRENCY)
    for trivial, daemon in pairs:
        assert sum(trivial.statuses.values()) == sum(daemon.statuses.values()) == 40
        assert trivial.statuses.get(201) == 40
        assert set(daemon.statuses) <= {201, 503}, daemon.statuses
        # Every create was committed, in at most one transaction each (group commit).
        assert daemon.commit_groups is not None
        assert 1 <= daemon.commit_groups <= daemon.statuses.get(201, 0)
