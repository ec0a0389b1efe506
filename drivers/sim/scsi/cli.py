"""`tapeworker sim exec`: run any program against the emulated library.

    tapeworker sim exec --library config/demo-library.toml -- mtx -f /dev/sg4 status
    tapeworker sim exec --library lib.toml --changer /dev/sg-sim -- ./mtx-changer ...

The library's changer and drive nodes exist for the program and everything it
starts (umockdev's preload library is in its environment); the program's exit
status is the command's. Without `--state` the library starts as the definition
describes it and is thrown away afterwards; with `--state` the simulator's state
file is used (created from the definition when missing) and keeps what moved.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from drivers.definition import load_definition, validate_device
from drivers.errors import DefinitionError, InvalidArgumentError
from drivers.sim.library import SimulatedLibrary
from drivers.sim.scsi.emulator import EmulatedDevices, EmulatorError

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tapeworker sim exec",
        description="Run a program against the simulated library's emulated SCSI devices.",
    )
    parser.add_argument("--library", type=Path, required=True, help="library definition (TOML)")
    parser.add_argument(
        "--state",
        type=Path,
        default=None,
        help="simulator state file to use and keep (default: a fresh library, discarded)",
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=10.0,
        help="the library runs this many times faster than a real one (default 10)",
    )
    parser.add_argument(
        "--changer", default=None, help="the changer's device node (default: the definition's)"
    )
    parser.add_argument("--verbose", action="store_true", help="log every SCSI command on stderr")
    parser.add_argument("program", nargs=argparse.REMAINDER, help="-- PROGRAM [ARGUMENTS]")
    return parser


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    program = args.program[1:] if args.program[:1] == ["--"] else args.program
    if not program:
        print("tapeworker sim exec: give the program after --", file=sys.stderr)
        return EXIT_USAGE
    if args.speed <= 0:
        print("tapeworker sim exec: --speed must be positive", file=sys.stderr)
        return EXIT_USAGE
    try:
        definition = load_definition(args.library)
        if args.changer is not None:
            definition = definition.model_copy(update={"changer": validate_device(args.changer)})
    except (DefinitionError, InvalidArgumentError) as exc:
        print(f"tapeworker sim exec: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with tempfile.TemporaryDirectory(prefix="tapeworker-sim-") as scratch:
        state_file = args.state or Path(scratch) / "library.json"
        SimulatedLibrary.open(definition, state_file=state_file, speed=args.speed)
        try:
            with EmulatedDevices(state_file, verbose=args.verbose) as devices:
                try:
                    return subprocess.run(program, env=devices.env(), check=False).returncode
                except OSError as exc:
                    print(f"tapeworker sim exec: cannot run {program[0]}: {exc}", file=sys.stderr)
                    return 127
        except EmulatorError as exc:
            print(f"tapeworker sim exec: {exc}", file=sys.stderr)
            return 1
