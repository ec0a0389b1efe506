"""`EmulatedDevices`: the simulated library's device nodes, for unmodified programs.

Starts the umockdev shell (`shell.py`) under Debian's python3 for a state file
and hands out the environment under which a program sees `/dev/sgN` and
`/dev/nstN` of the library: umockdev's preload library and the testbed folder.

    with EmulatedDevices(state_file) as devices:
        subprocess.run(["mtx", "-f", "/dev/sg4", "status"], env=devices.env())
"""

from __future__ import annotations

import contextlib
import os
import selectors
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

#: The interpreter whose python3-gi has the UMockdev bindings.
SYSTEM_PYTHON = "/usr/bin/python3"
PRELOAD = "libumockdev-preload.so.0"
#: The folder that holds the `drivers` package.
_ROOT = Path(__file__).resolve().parents[3]


class EmulatorError(RuntimeError):
    """The shell did not start (umockdev or python3-gi missing, a bad state file)."""


class EmulatedDevices:
    """The shell process for one state file; a context manager."""

    def __init__(
        self,
        state_file: Path,
        *,
        python: str = SYSTEM_PYTHON,
        start_timeout_s: float = 60.0,
        verbose: bool = False,
    ) -> None:
        self.state_file = state_file
        self._python = python
        self._start_timeout_s = start_timeout_s
        self._verbose = verbose
        self._proc: subprocess.Popen[bytes] | None = None
        self.root: str | None = None

    def start(self) -> None:
        argv = [self._python, "-m", "drivers.sim.scsi.shell", "--state", str(self.state_file)]
        if self._verbose:
            argv.append("--verbose")
        env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "UMOCKDEV_DIR")}
        # Debian's interpreter, with this checkout first on its path and nothing
        # of the venv's site-packages.
        env["PYTHONPATH"] = str(_ROOT)
        env.pop("PYTHONHOME", None)
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=None,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            raise EmulatorError(f"cannot run {self._python}: {exc}") from exc
        line = self._first_line()
        if not line.startswith("ready "):
            self.stop()
            raise EmulatorError(
                f"the SCSI shell did not start (is umockdev with gir1.2-umockdev-1.0 and"
                f" python3-gi installed?): {line or 'no output'}"
            )
        self.root = line.removeprefix("ready ").strip()

    def _first_line(self) -> str:
        assert self._proc is not None
        assert self._proc.stdout is not None
        stdout = self._proc.stdout
        deadline = time.monotonic() + self._start_timeout_s
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            while b"\n" not in buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    return buffer.decode(errors="replace")
                chunk = os.read(stdout.fileno(), 4096)
                if not chunk:
                    break
                buffer += chunk
        return buffer.split(b"\n", 1)[0].decode(errors="replace")

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """`base` (default: this process's environment) with the devices visible."""
        if self.root is None:
            raise EmulatorError("the emulated devices are not running")
        env = dict(os.environ if base is None else base)
        preload = env.get("LD_PRELOAD", "")
        env["LD_PRELOAD"] = f"{PRELOAD}:{preload}" if preload else PRELOAD
        env["UMOCKDEV_DIR"] = self.root
        return env

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        self.root = None
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> EmulatedDevices:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
