"""An install outside the checkout: the wheel in a fresh venv, run from another directory.

The wheel is built from a copy of the sources and installed into a new venv. Its
dependencies come from the test venv through a .pth file, so that the test needs no
network; a .pth line adds a directory to sys.path without processing the .pth files
inside it, so the checkout's own editable install stays invisible.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.integration.broker import free_port, wait_for_port
from tests.integration.daemon import wait_until
from worker.settings import SYSTEM_CONFIG

REPO = Path(__file__).resolve().parents[2]
# Building and installing a wheel takes minutes on a busy machine.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def run(*args: str | Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed; returns the venv's bin directory."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("worker", "drivers"):
        shutil.copytree(REPO / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    built = run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
        "--wheel-dir", root / "dist", source,
        cwd=root, env=env,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = (root / "dist").glob("tapeworker-*.whl")

    venv = root / "venv"
    made = run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=root, env=env)
    assert made.returncode == 0, made.stderr
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    fresh_site = Path(run(venv / "bin" / "python", "-c", purelib, cwd=root, env=env).stdout.strip())
    dependencies = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (fresh_site / "test-dependencies.pth").write_text("\n".join(sorted(dependencies)) + "\n")
    done = run(
        sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install",
        "--no-deps", "--no-index", wheel,
        cwd=root, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return venv / "bin"


@pytest.fixture
def elsewhere(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Another directory and an environment with no tapeworker settings in it."""
    if SYSTEM_CONFIG.exists():
        pytest.skip(f"{SYSTEM_CONFIG} exists: this machine is configured, the demo is not used")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAPEWORKER_", "PYTHON"))}
    env |= {"HOME": str(tmp_path / "home"), "XDG_STATE_HOME": str(tmp_path / "xdg-state")}
    cwd = tmp_path / "somewhere"
    cwd.mkdir()
    return cwd, env


def test_the_installed_package_is_the_wheel(installed: Path, tmp_path: Path) -> None:
    located = run(
        installed / "python", "-c", "import worker; print(worker.__file__)",
        cwd=tmp_path, env={"PATH": os.environ["PATH"]},
    )  # fmt: skip
    assert located.returncode == 0, located.stderr
    assert located.stdout.startswith(str(installed.parent)), located.stdout


def test_check_config_run_status_inventory_from_another_directory(
    installed: Path, elsewhere: tuple[Path, dict[str, str]]
) -> None:
    cwd, env = elsewhere
    tapeworker = installed / "tapeworker"
    checked = run(tapeworker, "check-config", cwd=cwd, env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "configuration ok: 4 drives, 48 slots" in checked.stdout

    port = free_port()
    env["TAPEWORKER_HTTP__PORT"] = str(port)
    log = (cwd.parent / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        [tapeworker, "run"], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    try:

        def ready() -> bool:
            assert daemon.poll() is None, (cwd.parent / "daemon.log").read_text()
            try:
                wait_for_port(port, timeout=0.05)
            except TimeoutError:
                return False
            return True

        # The bound of the integration tests' daemon: a start takes 10-20 s on a busy
        # machine, and one three times slower must still pass.
        wait_until(ready, timeout=120, what="the installed daemon to listen")
        state = Path(env["XDG_STATE_HOME"]) / "tapeworker"
        assert (state / "journal.sqlite3").is_file()

        status = run(tapeworker, "status", cwd=cwd, env=env)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "drives:" in status.stdout

        inventory = run(tapeworker, "inventory", "--json", cwd=cwd, env=env)
        assert inventory.returncode == 0, inventory.stdout + inventory.stderr
        assert '"drives"' in inventory.stdout
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=60)
    assert code == 0, (cwd.parent / "daemon.log").read_text()
    assert list(cwd.iterdir()) == [], "nothing may be written to the working directory"
