"""Install the stand-in `mtx` and `mt` executables for one simulated library.

`install_standins(bin_dir, state_file)` writes two small scripts that run the
stand-ins with this interpreter against `state_file`; put `bin_dir` first on PATH
(or pass its files as `MtxLibrary(mtx=..., mt=...)`) and the mtx backend drives
the simulator exactly as it drives a real library.
"""

from __future__ import annotations

import stat
import sys
from pathlib import Path

#: The folder that holds the `drivers` package, so the scripts import this checkout.
_ROOT = Path(__file__).resolve().parents[2]

_SCRIPT = """#!{python}
# Stand-in {tool} for the simulated library in {state}; written by
# drivers.sim.standins.install_standins.
import sys
from pathlib import Path

sys.path.insert(0, {root!r})

from drivers.sim.{module} import main  # noqa: E402

sys.exit(main(sys.argv[1:], state_file=Path({state!r})))
"""


def install_standins(bin_dir: Path, state_file: Path) -> None:
    """Write executable `mtx` and `mt` into `bin_dir` for the state in `state_file`."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for tool, module in (("mtx", "standin_mtx"), ("mt", "standin_mt")):
        script = bin_dir / tool
        script.write_text(
            _SCRIPT.format(
                python=sys.executable,
                tool=tool,
                state=str(state_file.resolve()),
                root=str(_ROOT),
                module=module,
            ),
            encoding="utf-8",
        )
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
