"""How long the real tools take through the SCSI emulation, against the stand-ins.

    python -m drivers.sim.scsi.bench [--rounds 20]

Runs `mtx status` and a load/offline/unload cycle (`mtx load`, `mt offline`,
`mtx unload`) with Debian's tools against the emulated library and with the
stand-in executables against the same kind of state, in the same run, and prints
the medians and their ratio. The simulated library runs a million times faster
than a real one, so the figures are the tools' and the emulation's own cost.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from drivers.definition import DriveDefinition, LibraryDefinition, TapeDefinition
from drivers.sim.library import SimulatedLibrary
from drivers.sim.scsi.emulator import EmulatedDevices
from drivers.sim.standins import install_standins

SPEED = 1_000_000.0
DEFINITION = LibraryDefinition(
    changer="/dev/sg3",
    slots=48,
    import_export=4,
    drives=(
        DriveDefinition(index=0, device="/dev/nst0", generation=8),
        DriveDefinition(index=1, device="/dev/nst1", generation=9),
    ),
    tapes=tuple(TapeDefinition(barcode=f"B{n:05d}L8", slot=n) for n in range(1, 41)),
)


def _run(argv: Sequence[str], env: Mapping[str, str]) -> None:
    subprocess.run(argv, env=dict(env), capture_output=True, check=True, timeout=120)


def _median_s(action: Callable[[], None], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(rounds: int) -> dict[str, tuple[float, float]]:
    """{figure: (real tools through the emulation, stand-ins)} medians in seconds."""
    results: dict[str, tuple[float, float]] = {}
    base = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
    with tempfile.TemporaryDirectory(prefix="tapeworker-scsi-bench-") as scratch:
        folder = Path(scratch)
        emulated_state = folder / "emulated.json"
        standin_state = folder / "standin.json"
        for state in (emulated_state, standin_state):
            SimulatedLibrary.open(DEFINITION, state_file=state, speed=SPEED)
        install_standins(folder / "bin", standin_state)
        standin = {"mtx": str(folder / "bin" / "mtx"), "mt": str(folder / "bin" / "mt")}
        real = {"mtx": "/usr/sbin/mtx", "mt": "/bin/mt"}
        with EmulatedDevices(emulated_state) as devices:
            envs = {"real": devices.env(base), "standin": base}
            tools = {"real": real, "standin": standin}

            def status(kind: str) -> Callable[[], None]:
                return lambda: _run([tools[kind]["mtx"], "-f", "/dev/sg3", "status"], envs[kind])

            def cycle(kind: str) -> Callable[[], None]:
                mtx, mt, env = tools[kind]["mtx"], tools[kind]["mt"], envs[kind]

                def run() -> None:
                    _run([mtx, "-f", "/dev/sg3", "load", "1", "0"], env)
                    _run([mt, "-f", "/dev/nst0", "offline"], env)
                    _run([mtx, "-f", "/dev/sg3", "unload", "1", "0"], env)

                return run

            results["mtx status"] = (
                _median_s(status("real"), rounds),
                _median_s(status("standin"), rounds),
            )
            results["load + offline + unload"] = (
                _median_s(cycle("real"), rounds),
                _median_s(cycle("standin"), rounds),
            )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drivers.sim.scsi.bench")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    print(f"medians of {args.rounds} rounds; library of 52 slots, 2 drives")
    print(f"{'':26}{'Debian tools + emulation':>26}{'stand-ins':>12}{'ratio':>8}")
    for name, (real, standin) in measure(args.rounds).items():
        print(f"{name:26}{real * 1000:>23.1f} ms{standin * 1000:>9.1f} ms{real / standin:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
