"""Where the daemon's event loop spends its time during an intake drain, from py-spy.

    .venv/bin/py-spy record --subprocesses --idle --threads --format raw -r 100 \\
        -o /tmp/drain.txt -- .venv/bin/python -m tests.benchmarks.intake_bench \\
        --messages 20000 --requests 0
    .venv/bin/python -m tests.benchmarks.loop_profile /tmp/drain.txt

py-spy is not a dependency (`pip install py-spy` into the venv to use it). The
benchmark starts the daemon twice (the drain, then a restart over its journal): the
first daemon is the drain. Each sample of its main thread counts for the first part
below whose frame is in its stack (a sample in parsing, inside the inbox's reader,
counts as parsing). `--idle` samples are wall-clock: a share also counts time the
thread held its place while another process had the core.
"""

from __future__ import annotations

import argparse
import collections
import sys
from collections.abc import Iterable
from pathlib import Path

#: (part, a frame that marks it), the first match wins.
PARTS: tuple[tuple[str, str], ...] = (
    ("idle", "select (selectors.py"),
    ("start-up", "_find_and_load"),
    ("the per-event log line", "_log_outcome"),
    ("the per-event log line", "structlog"),
    ("the per-event log line", "worker/logging.py"),
    ("parsing messages into events", "message_to_event"),
    ("parsing messages into events", "MqttIntake._delivery"),
    ("decoding PUBLISH packets, reading the subscribing socket", "decode_publish"),
    ("decoding PUBLISH packets, reading the subscribing socket", "Inbox._read"),
    ("the state's view, serialised", "Service._changed"),
    ("the publisher's task", "MqttIntake._publisher"),
    ("the publishing connection's reads and PUBACKs", "PublishWindow._handle_puback"),
    ("the publishing connection's reads and PUBACKs", "PublishWindow._read"),
    ("the publishing connection's reads and PUBACKs", "Client.loop_read"),
    ("paho writing", "Client.loop_write"),
    ("handing batches to the journal, the model", "Journal.apply"),
    ("handing batches to the journal, the model", "worker/state/"),
    ("planning", "Reconciler"),
    ("planning", "planner.py"),
)


def shares(lines: Iterable[str]) -> tuple[collections.Counter[str], str | None]:
    """Samples of the first daemon's main thread by part, and that daemon's process."""
    counts: collections.Counter[str] = collections.Counter()
    daemon = None
    for line in lines:
        stack, _, number = line.rstrip("\n").rpartition(" ")
        frames = stack.split(";")
        if len(frames) < 3 or "worker.cli run" not in frames[1] or "MainThread" not in frames[2]:
            continue
        process = frames[1].split(":", 1)[0]
        daemon = daemon or process
        if process != daemon:
            continue
        part = next((name for name, mark in PARTS if any(mark in f for f in frames)), "other")
        counts[part] += int(number)
    return counts, daemon


def report(counts: collections.Counter[str]) -> list[str]:
    idle, start = counts["idle"], counts["start-up"]
    busy = sum(counts.values()) - idle - start
    lines = [
        f"main thread: {busy} busy samples, idle {idle / max(1, busy + idle):.0%} "
        f"(start-up's {start} left out)"
    ]
    for part, n in counts.most_common():
        if part not in ("idle", "start-up"):
            lines.append(f"  {part:<58} {n:6d} {n / max(1, busy):6.1%}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("raw", type=Path, help="py-spy's --format raw output")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    with args.raw.open(encoding="utf-8") as lines:
        counts, daemon = shares(lines)
    if daemon is None:
        print("no daemon's main thread in these samples (py-spy --subprocesses --threads?)")
        return 1
    print(f"{daemon}:")
    print("\n".join(report(counts)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
