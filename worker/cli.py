"""The `tapeworker` command: run the daemon, look at its state, try things out."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import structlog

from drivers import open_library
from drivers.base import Inventory
from drivers.definition import load_definition
from drivers.errors import DefinitionError, DriverError
from worker.core.requests import ACTIVE, RequestState
from worker.errors import ConfigError, JournalDamagedError, JournalError, StartupError
from worker.fleet import status as fleet_status
from worker.logging import configure
from worker.ops import client as operator_commands
from worker.ops.health_file import read_health
from worker.ops.waits import why_waiting
from worker.seed.models import iso_time
from worker.settings import Settings, load_settings
from worker.state.journal import Journal, check_file, damaged_message, salvage

EXIT_CONFIG = 2
#: A read-only command found no daemon state to read.
EXIT_NO_STATE = 1
#: A damaged journal stops the daemon with the same status as a bad configuration:
#: restarting cannot help, an operator must act.
EXIT_DAMAGED = 2


class NoStateError(Exception):
    """Nothing to read: no journal or simulator state where the configuration points."""


def _version() -> str:
    try:
        return version("tapeworker")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def since_time(text: str) -> float:
    """`--since`: an ISO-8601 time (`2026-11-29T13:00:00Z`) or an age (`30s`, `10m`, `2h`, `1d`)."""
    duration = _DURATION.match(text)
    if duration:
        return time.time() - float(duration.group(1)) * _UNIT_S[duration.group(2)]
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an ISO-8601 time nor an age like 10m, 2h or 1d"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # a local time, as a person would type it
    return when.timestamp()


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="configuration file (TOML); default: $TAPEWORKER_CONFIG, "
        "/etc/tapeworker/tapeworker.toml, else the built-in demo",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tapeworker", description=__doc__)
    parser.add_argument("--version", action="version", version=f"tapeworker {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the daemon")
    _config_arg(run)
    status = commands.add_parser("status", help="drives, slots, pending and active destinations")
    _config_arg(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    inventory = commands.add_parser("inventory", help="the library as the changer reports it")
    _config_arg(inventory)
    inventory.add_argument("--json", action="store_true", help="machine-readable output")
    events = commands.add_parser("events", help="the journal's latest events (rejected ones too)")
    _config_arg(events)
    events.add_argument("--rejected", action="store_true", help="only rejected events")
    events.add_argument("--limit", type=int, default=20, help="at most this many (latest)")
    events.add_argument(
        "--since", type=since_time, default=None, help="received since: ISO time or age (10m, 2h)"
    )
    events.add_argument("--json", action="store_true", help="machine-readable output")
    check = commands.add_parser(
        "check-config",
        help="validate the configuration and the library definition, and check the hardware",
    )
    _config_arg(check)
    commands.add_parser(
        "simulate", help="compare the planner with simple policies (see `simulate --help`)"
    )
    journal = commands.add_parser("journal", help="check or salvage the journal file")
    journal_commands = journal.add_subparsers(dest="journal_command", required=True)
    journal_check = journal_commands.add_parser(
        "check", help="is the journal sound? (read-only; exit status 2 when damaged)"
    )
    _config_arg(journal_check)
    journal_check.add_argument(
        "--full", action="store_true", help="integrity_check instead of quick_check (slower)"
    )
    recover = journal_commands.add_parser(
        "recover",
        help="salvage what SQLite can read into a new file, keeping the damaged one",
    )
    _config_arg(recover)
    recover.add_argument(
        "--replace",
        action="store_true",
        help="then put the salvaged file in place (the damaged one is kept beside it); "
        "stop the daemon first",
    )
    operator_commands.add_commands(commands, _config_arg)
    fleet_status.add_command(commands, _config_arg)
    commands.add_parser(
        "sim",
        help="`sim exec --library FILE -- PROGRAM ...`: run a program (mtx, mt, a changer"
        " script) against the simulated library's emulated devices",
    )
    _api_key_parser(commands)
    return parser


def _api_key_parser(commands: Any) -> None:
    from worker.intake.http.auth import SCOPES  # noqa: PLC0415 - the HTTP stack only when asked

    api_key = commands.add_parser(
        "api-key", help="API keys of the HTTP API (Bearer), through the running daemon"
    )
    actions = api_key.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="make a key; it is printed once, never stored")
    _config_arg(create)
    operator_commands.credential_args(create)
    create.add_argument("--reason", help="why: journaled, logged, published")
    create.add_argument("--name", required=True, help="who the key is for, e.g. mover1")
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        choices=SCOPES,
        help="an operation the key may call (repeat for several)",
    )
    listing = actions.add_parser("list", help="keys: name, scopes, created, revoked")
    _config_arg(listing)
    operator_commands.credential_args(listing)
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    revoke = actions.add_parser("revoke", help="revoke a key at once")
    _config_arg(revoke)
    operator_commands.credential_args(revoke)
    revoke.add_argument("--name", required=True)
    revoke.add_argument("--reason", help="why: journaled, logged, published")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        # `tapeworker status | head`: the reader left; end quietly, as cat does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    return code


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simulate"]:
        # The simulator has its own options; argparse would reject them here.
        from worker.simulation.cli import main as simulate_main  # noqa: PLC0415

        return simulate_main(argv[1:])
    if argv[:1] == ["sim"]:
        if argv[1:2] != ["exec"]:
            print("usage: tapeworker sim exec --library FILE [options] -- PROGRAM ...")
            return 0 if argv[1:2] in (["-h"], ["--help"]) else 2
        from drivers.sim.scsi.cli import main as sim_exec_main  # noqa: PLC0415

        return sim_exec_main(argv[2:])
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
        definition = load_definition(settings.library)
    except (ConfigError, DefinitionError) as exc:
        print(f"tapeworker: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure(settings.log_level, settings.log_format)
    if args.command == "check-config":
        print(f"configuration ok: {len(definition.drives)} drives, {definition.slots} slots")
        problems = asyncio.run(_hardware_problems(settings))
        for problem in problems:
            print(f"tapeworker: {settings.backend} backend: {problem}", file=sys.stderr)
        return 1 if problems else 0
    try:
        if args.command == "run":
            return _run(settings, args.config)
        if args.command == "status":
            return asyncio.run(_status(settings, as_json=args.json))
        if args.command == "inventory":
            return asyncio.run(_inventory(settings, as_json=args.json))
        if args.command == "events":
            return asyncio.run(
                _events(
                    settings,
                    rejected=args.rejected,
                    limit=args.limit,
                    since=args.since,
                    as_json=args.json,
                )
            )
        if args.command == "fleet":
            return fleet_status.run(args, settings)
        if args.command in operator_commands.COMMANDS:
            return operator_commands.run(args, settings)
        if args.command == "journal" and args.journal_command == "check":
            return _journal_check(settings, full=args.full)
        if args.command == "journal" and args.journal_command == "recover":
            return _journal_recover(settings, replace=args.replace)
        if args.command == "api-key":
            return operator_commands.api_key(args, settings)
    except (NoStateError, JournalError) as exc:
        print(f"tapeworker: {exc}", file=sys.stderr)
        return EXIT_NO_STATE
    except ConfigError as exc:
        print(f"tapeworker: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except DriverError as exc:
        print(f"tapeworker: library error: {exc}", file=sys.stderr)
        return 1
    return 1


def _run(settings: Settings, config: Path | None) -> int:
    """The daemon; a start-up that cannot succeed ends with one line and a status."""
    from worker.runtime.service import Service  # noqa: PLC0415

    try:
        asyncio.run(Service(settings, config).run())
    except Exception as exc:
        problem = _innermost(exc)
        if isinstance(problem, ConfigError | JournalDamagedError):
            print(f"tapeworker: {problem}", file=sys.stderr)
            return EXIT_DAMAGED
        if isinstance(problem, StartupError | JournalError | DriverError):
            print(f"tapeworker: cannot start: {problem}", file=sys.stderr)
            return 1
        structlog.get_logger("tapeworker").error("stopped by an unexpected error", exc_info=problem)
        print(f"tapeworker: stopped by an unexpected error: {problem!r}", file=sys.stderr)
        return 1
    return 0


def _innermost(exc: BaseException) -> BaseException:
    """The one error inside the task groups' wrappers."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _journal_check(settings: Settings, *, full: bool) -> int:
    """Read-only: SQLite's check of the file, and what the running daemon says."""
    path = settings.journal_path
    if not path.exists():
        raise JournalError(f"{path}: no journal yet (has the daemon run?)")
    pragma = "integrity_check" if full else "quick_check"
    found = check_file(path, full=full)
    health = read_health(settings.state_dir)
    if health is not None and health.get("journal_fault"):
        print(f"the running daemon reports: {health['journal_fault']}")
    if not found:
        print(f"{path}: ok ({pragma})")
        return 0
    print(f"tapeworker: {damaged_message(path, found)}", file=sys.stderr)
    return EXIT_DAMAGED


def _journal_recover(settings: Settings, *, replace: bool) -> int:
    """Copy what SQLite can still read into a new file; the damaged one stays."""
    path = settings.journal_path
    if not path.exists():
        raise JournalError(f"{path}: no journal to recover")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    recovered = path.with_name(f"{path.name}.recovered-{stamp}")
    copied = salvage(path, recovered)
    # Opened as the daemon opens it: schema, migrations and the start-up check.
    asyncio.run(_verify(recovered))
    print(f"salvaged into {recovered}: " + ", ".join(f"{n} {t}" for t, n in copied.items()))
    if not replace:
        print(
            f"the damaged file is untouched. To use the salvaged one: stop the daemon, "
            f"move {path} (and its -wal and -shm files) aside and {recovered} to {path}; "
            "or run this command again with --replace"
        )
        return 0
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        old = Path(f"{path}{suffix}")
        if old.exists():
            old.rename(Path(f"{aside}{suffix}"))
    recovered.rename(path)
    print(f"{path} is now the salvaged journal; the damaged one is {aside}")
    return 0


async def _verify(path: Path) -> None:
    journal = await Journal.open(path)
    await journal.close()


async def _hardware_problems(settings: Settings) -> list[str]:
    """The backend's start-up check: missing devices, wrong tools, a silent changer."""
    definition = load_definition(settings.library)
    if settings.backend == "sim" and not settings.sim_state_path.is_file():
        # A check creates nothing: without the daemon's simulated library, check a
        # fresh one in memory rather than make its state file.
        library = open_library("sim", definition, speed=settings.sim_speed)
    else:
        library = settings.open_library(definition)
    async with library:
        return await library.check()


async def _read_inventory(settings: Settings) -> Inventory:
    definition = load_definition(settings.library)
    if settings.backend == "sim" and not settings.sim_state_path.is_file():
        # The simulated library is the daemon's state file: a fresh one would be a guess.
        raise NoStateError(
            f"{settings.sim_state_path}: no simulated library here (has the daemon run?)"
        )
    library = settings.open_library(definition)
    async with library:
        return await library.inventory()


def inventory_json(inventory: Inventory, settings: Settings) -> dict[str, Any]:
    """The stable `inventory --json` shape (documented in the README)."""
    definition = load_definition(settings.library)
    devices = {d.index: d.device for d in definition.drives}
    data = inventory.as_json()
    for drive in data["drives"]:
        drive["device"] = devices.get(drive["index"])
    return data


async def _inventory(settings: Settings, *, as_json: bool) -> int:
    data = inventory_json(await _read_inventory(settings), settings)
    if as_json:
        print(json.dumps(data, indent=2))
        return 0
    for drive in data["drives"]:
        what = f"{drive['barcode'] or '(no label)'} from slot {drive['source_slot']}"
        print(
            f"drive {drive['index']:>2} {drive['device'] or '-':<24} "
            f"{what if drive['full'] else 'empty'}"
        )
    for slot in data["slots"]:
        kind = " import/export" if slot["import_export"] else ""
        content = (slot["barcode"] or "(no label)") if slot["full"] else "empty"
        print(f"slot {slot['number']:>4}{kind}: {content}")
    return 0


async def _status(settings: Settings, *, as_json: bool) -> int:
    now = time.time()
    health = read_health(settings.state_dir)
    fault = health.get("journal_fault") if health is not None else None
    if fault and not as_json:
        # First, and also when the journal cannot be read below.
        print(f"journal: PAUSED ({fault}); intake waits and retries by itself")
    journal = await Journal.open_readonly(settings.journal_path)
    try:
        drives = await journal.drives()
        tapes = await journal.tapes()
        requests = await journal.requests(ACTIVE)
        recent = [r for r in await journal.requests() if r.state not in ACTIVE][-20:]
        destinations = {d.id: d for d in await journal.destinations()}
        surprises = await journal.surprises()
        draining = await journal.draining()
    finally:
        await journal.close()
    by_barcode = {t.barcode: t for t in tapes}
    waits = {
        r.id: why_waiting(
            r,
            drives,
            by_barcode,
            requests,
            pool_drive_cap=settings.planner.pool_drive_cap,
            draining=draining is not None,
        )
        for r in requests
        if r.state is RequestState.PENDING
    }
    data: dict[str, Any] = {
        "time": iso_time(now),
        "journal": {"ok": not fault, "fault": fault},
        "draining": None
        if draining is None
        else {
            "by": draining.get("by"),
            "reason": draining.get("reason"),
            "since": iso_time(float(draining.get("since", 0))),
        },
        "drives": [
            {
                "index": d.index,
                "generation": f"LTO-{d.generation}",
                "device": d.device,
                "barcode": d.barcode,
                "up": d.up,
                "reason": d.reason,
                "failures": d.failures,
            }
            for d in drives
        ],
        "slots": [
            {"slot": t.slot, "barcode": t.barcode, "pool": t.pool}
            for t in tapes
            if t.slot is not None
        ],
        "need_to_check": [t.barcode for t in tapes if t.need_to_check],
        # What inventories found that the journal did not expect (latest last).
        "surprises": [
            {"time": iso_time(item["time"]), "what": item["what"]} for item in surprises[-10:]
        ],
        "requests": [
            {
                "id": r.id,
                "destination": r.destination_id,
                "task": destinations[r.destination_id].task_id
                if r.destination_id in destinations
                else None,
                "state": r.state.value,
                "barcode": r.barcode,
                "pool": r.pool,
                "drive": r.drive,
                "reason": r.reason,
                "arrival": iso_time(r.arrival),
                "updated": iso_time(r.updated),
                "age_s": round(now - r.arrival, 1),
                "waiting": waits.get(r.id),
            }
            for r in [*requests, *recent]
        ],
    }
    if as_json:
        print(json.dumps(data, indent=2))
        return 0
    if data["draining"] is not None:
        drained = data["draining"]
        why = f": {drained['reason']}" if drained["reason"] else ""
        print(f"draining since {drained['since']} by {drained['by']}{why}; nothing new is mounted")
    print("drives:")
    for d in data["drives"]:
        state = "up" if d["up"] else f"DOWN ({d['reason']})"
        print(f"  {d['index']}: {d['generation']} {d['device']} {d['barcode'] or 'empty'} {state}")
    print(f"slots: {len(data['slots'])} cartridges in slots")
    if data["need_to_check"]:
        print(f"need_to_check: {', '.join(data['need_to_check'])}")
    if data["surprises"]:
        print("library surprises (latest last):")
        for item in data["surprises"]:
            print(f"  {item['time']} {item['what']}")
    print("requests:")
    for r in data["requests"]:
        where = f" drive {r['drive']}" if r["drive"] is not None else ""
        reason = f" ({r['reason']})" if r["reason"] else ""
        target = r["barcode"] or f"pool {r['pool']}"
        why = f", waiting {_age(r['age_s'])}: {r['waiting']}" if r["waiting"] else ""
        print(
            f"  #{r['id']} task {r['task']} destination {r['destination']}: "
            f"{r['state']} {target}{where}{reason}{why}"
        )
    return 0


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


async def _events(
    settings: Settings, *, rejected: bool, limit: int, since: float | None, as_json: bool
) -> int:
    journal = await Journal.open_readonly(settings.journal_path)
    try:
        events = await journal.events("rejected" if rejected else None, limit, since)
    finally:
        await journal.close()
    rows = [
        {
            "seq": e.seq,
            "received": iso_time(e.received),
            "source": e.source,
            "verb": e.verb,
            "task": e.task_id,
            "destination": e.destination_id,
            "topic": e.topic,
            "status": e.status,
            "reason": e.reason,
        }
        for e in reversed(events)  # oldest first, as a log reads
    ]
    if as_json:
        print(json.dumps({"events": rows}, indent=2))
        return 0
    for e in rows:
        reason = f": {e['reason']}" if e["reason"] else ""
        destination = "-" if e["destination"] is None else e["destination"]
        print(
            f"{e['received']} #{e['seq']} {e['source']} {e['verb'] or '-'} "
            f"task={e['task'] or '-'} destination={destination} {e['status']}{reason}"
        )
    return 0


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


if __name__ == "__main__":
    raise SystemExit(main())
