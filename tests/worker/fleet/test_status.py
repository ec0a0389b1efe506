"""`tapeworker fleet status` on its own: the summaries retained on a real mosquitto,
the table, and what it says when the broker is not there."""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from typing import Any

import aiomqtt
import pytest

from tests.integration.broker import Broker, free_port
from worker.fleet import fleet_topic, gone_summary, library_summary
from worker.fleet.status import EXIT_UNREACHABLE, add_command, read_summaries, render, run
from worker.settings import MqttSettings, Settings


def settings_for(port: int, prefix: str) -> Settings:
    return Settings(mqtt=MqttSettings(host="127.0.0.1", port=port, prefix=prefix))


def live(library_id: str, **health: object) -> dict[str, Any]:
    summary = library_summary(
        library_id, drives=[], tapes=[], queue={}, draining=False, journal_fault=None
    )
    summary["health"] = {**summary["health"], **health}
    return summary


async def retain(port: int, messages: dict[str, bytes]) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"t-{uuid.uuid4().hex[:8]}") as c:
        for topic, payload in messages.items():
            await c.publish(topic, payload, qos=1, retain=True)


@pytest.mark.integration
async def test_every_retained_summary_under_the_prefix_is_read(broker: Broker) -> None:
    prefix = f"tw{uuid.uuid4().hex[:8]}"
    await retain(
        broker.port,
        {
            fleet_topic(prefix, "b"): json.dumps(gone_summary("b")).encode(),
            fleet_topic(prefix, "a"): json.dumps(live("a")).encode(),
            fleet_topic(prefix, "c"): b"\xff not json",
            fleet_topic(prefix, "d"): b"[1, 2]",
            # Another fleet on the same broker is not ours.
            fleet_topic(prefix + "x", "e"): json.dumps(live("e")).encode(),
        },
    )
    summaries = await read_summaries(settings_for(broker.port, prefix), timeout_s=30)
    assert list(summaries) == ["a", "b", "c", "d"], "sorted by library id"
    assert summaries["a"]["alive"] is True
    assert summaries["b"] == {"library_id": "b", "alive": False}
    unreadable = {"alive": None, "error": "unreadable summary"}
    assert summaries["c"] == {**unreadable, "library_id": "c"}
    assert summaries["d"] == {**unreadable, "library_id": "d"}


@pytest.mark.integration
async def test_no_summary_at_all_is_an_empty_fleet(broker: Broker) -> None:
    # The probe comes back: no waiting for a quiet period.
    summaries = await read_summaries(settings_for(broker.port, "empty-fleet"), timeout_s=30)
    assert summaries == {}


def config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config")


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command")
    add_command(commands, config_arg)
    return parser.parse_args(list(argv))


def test_the_command_line() -> None:
    args = parse("fleet", "status", "--json", "--timeout", "3", "--config", "x.toml")
    assert (args.fleet_command, args.json, args.timeout, args.config) == (
        "status",
        True,
        3.0,
        "x.toml",
    )
    assert parse("fleet", "status").timeout == 10.0
    with pytest.raises(SystemExit):
        parse("fleet")


def test_without_a_broker_configured_it_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(parse("fleet", "status"), Settings()) == EXIT_UNREACHABLE
    assert "[mqtt] host is not set" in capsys.readouterr().out


def test_a_broker_that_does_not_answer_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()  # nothing listens there
    status = run(parse("fleet", "status", "--timeout", "30"), settings_for(port, "tw"))
    assert status == EXIT_UNREACHABLE
    assert f"fleet status: broker 127.0.0.1:{port}: " in capsys.readouterr().out


@pytest.mark.integration
def test_json_and_table_output(broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    prefix = f"tw{uuid.uuid4().hex[:8]}"
    settings = settings_for(broker.port, prefix)
    assert run(parse("fleet", "status"), settings) == 0
    assert capsys.readouterr().out.strip() == (
        f"no library has published a summary under {prefix}/fleet/"
    )
    asyncio.run(retain(broker.port, {fleet_topic(prefix, "a"): json.dumps(live("a")).encode()}))
    assert run(parse("fleet", "status", "--json"), settings) == 0
    assert [s["library_id"] for s in json.loads(capsys.readouterr().out)] == ["a"]
    assert run(parse("fleet", "status"), settings) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == ["a", "up"]


def test_the_table_says_why_a_library_is_not_up() -> None:
    table = render(
        {
            "a": live("a", draining=True),
            "b": live("b", journal="journal full: disk full"),
            "c": {**gone_summary("c"), "stopped": True},
            "d": {"library_id": "d", "alive": None, "error": "unreadable summary"},
        }
    )
    rows = [line.split()[:3] for line in table.splitlines()[1:5]]
    assert rows == [
        ["a", "draining", "0/0"],
        ["b", "journal", "fault"],
        ["c", "STOPPED", "-"],
        ["d", "GONE", "-"],
    ]
    assert "pools (writable/tapes, free native capacity):" in table
    assert "  a: -" in table.splitlines()


def test_the_pools_line_shows_writable_tapes_and_free_terabytes() -> None:
    summary = live("a")
    summary["pools"] = {"offline": {"tapes": 3, "writable": 2, "free_bytes": 25 * 10**12}}
    assert render({"a": summary}).splitlines()[-1] == "  a: offline 2/3 25.0TB"
