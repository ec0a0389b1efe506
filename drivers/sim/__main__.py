"""`python -m drivers.sim`: create a simulated library, install its stand-in tools,
inject faults into it from another process, run the stand-ins.

    python -m drivers.sim init --definition config/demo-library.toml --state S --speed 1000
    python -m drivers.sim install --state S --bin DIR
    python -m drivers.sim fault --state S inject load hardware --drive 0
    python -m drivers.sim fault --state S open-door
    python -m drivers.sim mtx --state S -f /dev/sg4 status
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import cast, get_args

from drivers.definition import DriveDefinition, LibraryDefinition, load_definition
from drivers.errors import DriverError
from drivers.sim import standin_mt, standin_mtx
from drivers.sim.library import SimulatedLibrary
from drivers.sim.standins import install_standins
from drivers.sim.state import FaultError, Operation, StateStore

OPERATIONS = get_args(Operation)
ERRORS = get_args(FaultError)


def definition_of(store: StateStore) -> LibraryDefinition:
    """The definition a state file was made from, as far as the fault API needs it."""
    state = store.read()
    return LibraryDefinition(
        changer=state.changer,
        slots=sum(1 for s in state.slots if not s.import_export),
        import_export=sum(1 for s in state.slots if s.import_export),
        drives=tuple(
            DriveDefinition(index=d.index, device=d.device, generation=d.generation)
            for d in state.drives
        ),
        offline_before_unload=state.offline_before_unload,
    )


def _fault_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fault = sub.add_parser("fault", help="inject a fault into a simulated library")
    fault.add_argument("--state", type=Path, required=True, help="the library's state file")
    kinds = fault.add_subparsers(dest="kind", required=True)

    inject = kinds.add_parser("inject", help="the next COUNT matching operations fail")
    inject.add_argument("op", choices=OPERATIONS)
    inject.add_argument("error", choices=ERRORS)
    inject.add_argument("--drive", type=int)
    inject.add_argument("--slot", type=int)
    inject.add_argument("--count", type=int, default=1)

    rate = kinds.add_parser("inject-rate", help="matching operations fail with a probability")
    rate.add_argument("op", choices=OPERATIONS)
    rate.add_argument("error", choices=ERRORS)
    rate.add_argument("probability", type=float)
    rate.add_argument("--seed", type=int, default=0)

    kinds.add_parser("open-door", help="the next changer command gets a unit attention")
    imported = kinds.add_parser(
        "import", help="an operator puts a cartridge into an empty import/export slot"
    )
    imported.add_argument("barcode")
    imported.add_argument("slot", type=int)
    delay = kinds.add_parser("delay-ready", help="the drive's next load takes longer to ready")
    delay.add_argument("drive", type=int)
    delay.add_argument("seconds", type=float, help="unscaled seconds")
    kill = kinds.add_parser("kill-drive", help="the drive fails until faults are cleared")
    kill.add_argument("drive", type=int)
    kill.add_argument("--reason", default="drive hardware failure")
    stick = kinds.add_parser("stick", help="the cartridge cannot be unloaded")
    stick.add_argument("barcode")
    label = kinds.add_parser("unreadable-label", help="the slot's label cannot be read")
    label.add_argument("slot", type=int)
    slow = kinds.add_parser("slow-inventory", help="every inventory takes longer")
    slow.add_argument("seconds", type=float, help="unscaled seconds")
    clean = kinds.add_parser("need-cleaning", help="the drive asks for cleaning")
    clean.add_argument("drive", type=int)
    kinds.add_parser("clear", help="remove every fault and revive dead drives")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m drivers.sim", description=__doc__.split("\n")[0])
    sub = top.add_subparsers(dest="command", required=True)

    init = sub.add_parser("init", help="create a state file from a library definition")
    init.add_argument("--definition", type=Path, required=True)
    init.add_argument("--state", type=Path, required=True)
    init.add_argument("--speed", type=float, default=1.0)

    install = sub.add_parser("install", help="write stand-in mtx and mt scripts")
    install.add_argument("--state", type=Path, required=True)
    install.add_argument("--bin", type=Path, required=True)

    _fault_parser(sub)

    for tool in ("mtx", "mt"):
        # Parsed by hand in main(): argparse would take the tool's own options.
        sub.add_parser(tool, help=f"run the stand-in {tool}: {tool} --state FILE ARGS...")
    return top


def apply_fault(library: SimulatedLibrary, args: argparse.Namespace) -> None:
    kind: str = args.kind
    if kind == "inject":
        library.inject(
            cast(Operation, args.op),
            cast(FaultError, args.error),
            drive=args.drive,
            slot=args.slot,
            count=args.count,
        )
    elif kind == "inject-rate":
        library.inject_rate(
            cast(Operation, args.op), cast(FaultError, args.error), args.probability, args.seed
        )
    elif kind == "open-door":
        library.open_door()
    elif kind == "import":
        library.import_cartridge(args.barcode, args.slot)
    elif kind == "delay-ready":
        library.delay_ready(args.drive, args.seconds)
    elif kind == "kill-drive":
        library.kill_drive(args.drive, args.reason)
    elif kind == "stick":
        library.stick(args.barcode)
    elif kind == "unreadable-label":
        library.unreadable_label(args.slot)
    elif kind == "slow-inventory":
        library.slow_inventory(args.seconds)
    elif kind == "need-cleaning":
        library.need_cleaning(args.drive)
    else:
        library.clear_faults()


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if len(words) >= 3 and words[0] in ("mtx", "mt") and words[1] == "--state":
        run = standin_mtx.main if words[0] == "mtx" else standin_mt.main
        return run(words[3:], state_file=Path(words[2]))
    args = parser().parse_args(words)
    if args.command == "init":
        SimulatedLibrary.open(
            load_definition(args.definition), state_file=args.state, speed=args.speed
        )
        return 0
    if args.command == "install":
        install_standins(args.bin, args.state)
        return 0
    if args.command in ("mtx", "mt"):
        print(f"usage: python -m drivers.sim {args.command} --state FILE ARGS...", file=sys.stderr)
        return 2
    if not args.state.exists():
        print(f"{args.state}: no simulated library state", file=sys.stderr)
        return 1
    store = StateStore(args.state)
    try:
        apply_fault(SimulatedLibrary(definition_of(store), store), args)
    except (DriverError, ValueError) as exc:
        print(f"python -m drivers.sim fault: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
