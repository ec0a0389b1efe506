"""`tapeworker fleet status`: every library's retained summary, read from the broker.

A library whose daemon vanished shows as gone: the broker retained its last will.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

import aiomqtt

from worker.settings import Settings

EXIT_UNREACHABLE = 1


def add_command(commands: Any, config_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    fleet = commands.add_parser("fleet", help="the libraries sharing this daemon's broker")
    fleet_commands = fleet.add_subparsers(dest="fleet_command", required=True)
    status = fleet_commands.add_parser(
        "status", help="every library's drives, queue, pools and health, side by side"
    )
    config_arg(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--timeout", type=float, default=10.0, help="give up on the broker after this (s)"
    )


async def read_summaries(settings: Settings, timeout_s: float) -> dict[str, dict[str, Any]]:
    """The retained summary of every library under the configured prefix."""
    mqtt = settings.mqtt
    prefix = mqtt.prefix
    # The broker sends retained messages when we subscribe, before anything published
    # after: once our own probe comes back, every summary has arrived. No quiet-period
    # guess, however slow the broker.
    probe = f"{prefix}/fleet-probe/{uuid.uuid4().hex}"
    summaries: dict[str, dict[str, Any]] = {}
    password = mqtt.password.get_secret_value() if mqtt.password else None
    async with asyncio.timeout(timeout_s):
        async with aiomqtt.Client(
            hostname=mqtt.host or "localhost",
            port=mqtt.port,
            username=mqtt.username,
            password=password,
            identifier=f"tapeworker-fleet-status-{uuid.uuid4().hex[:12]}",
            protocol=aiomqtt.ProtocolVersion.V5,
        ) as client:
            await client.subscribe(f"{prefix}/fleet/+", qos=1)
            await client.subscribe(probe, qos=1)
            await client.publish(probe, b"", qos=1)
            async for message in client.messages:
                topic = message.topic.value
                if topic == probe:
                    break
                library_id = topic.rsplit("/", 1)[1]
                data = _summary_of(message.payload)
                summaries[library_id] = {**data, "library_id": library_id}
    return dict(sorted(summaries.items()))


def _summary_of(payload: object) -> dict[str, Any]:
    unreadable = {"alive": None, "error": "unreadable summary"}
    if not isinstance(payload, bytes | bytearray):
        return unreadable
    try:
        data = json.loads(bytes(payload))
    except ValueError:
        return unreadable
    return data if isinstance(data, dict) else unreadable


def _pools(summary: dict[str, Any]) -> str:
    parts = []
    for name, pool in summary.get("pools", {}).items():
        free_tb = pool.get("free_bytes", 0) / 10**12
        parts.append(f"{name} {pool.get('writable', 0)}/{pool.get('tapes', 0)} {free_tb:.1f}TB")
    return ", ".join(parts) or "-"


def render(summaries: dict[str, dict[str, Any]]) -> str:
    """One line per library, the gone ones included."""
    header = ("LIBRARY", "DAEMON", "DRIVES UP", "LOADED", "PENDING", "MOUNTING", "READY")
    rows: list[tuple[str, ...]] = [header]
    pools: list[str] = []
    for library_id, summary in summaries.items():
        if summary.get("alive") is not True:
            gone = "STOPPED" if summary.get("stopped") else "GONE"
            rows.append((library_id, gone, "-", "-", "-", "-", "-"))
            continue
        drives = summary.get("drives", {})
        queue = summary.get("queue", {})
        health = summary.get("health", {})
        state = "draining" if health.get("draining") else "up"
        if health.get("journal", "ok") != "ok":
            state = "journal fault"
        rows.append(
            (
                library_id,
                state,
                f"{drives.get('up', 0)}/{drives.get('total', 0)}",
                str(drives.get("loaded", 0)),
                str(queue.get("pending", 0)),
                str(queue.get("mounting", 0)),
                str(queue.get("ready", 0)),
            )
        )
        pools.append(f"  {library_id}: {_pools(summary)}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    if pools:
        lines += ["", "pools (writable/tapes, free native capacity):", *pools]
    return "\n".join(line.rstrip() for line in lines)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.mqtt.host:
        print("tapeworker: fleet status needs the broker: [mqtt] host is not set")
        return EXIT_UNREACHABLE
    try:
        summaries = asyncio.run(read_summaries(settings, args.timeout))
    except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
        where = f"{settings.mqtt.host}:{settings.mqtt.port}"
        print(f"tapeworker: fleet status: broker {where}: {exc or 'no answer in time'}")
        return EXIT_UNREACHABLE
    if args.json:
        print(json.dumps(list(summaries.values()), indent=2))
    elif summaries:
        print(render(summaries))
    else:
        print(f"no library has published a summary under {settings.mqtt.prefix}/fleet/")
    return 0
