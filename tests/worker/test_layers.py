"""The tree shows the layers: each package of worker/ imports only its own layer and
those below it, and the drivers import nothing of the worker. Read from the source
(every import, at the top of a module or inside a function, typing-only ones too),
nothing is imported."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORKER = REPO / "worker"

#: From the ground up; a package may import its own layer and the ones below.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("seed", "errors", "logging", "callbacks"),
    ("core",),
    ("state", "settings"),
    ("ops", "fleet", "simulation"),
    ("intake",),
    ("runtime",),
    ("cli",),
)
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}

#: Known imports that run back up, each with why it is still there and where it belongs.
EXCEPTIONS = {
    ("worker/settings.py", "worker.fleet"): (
        "the configuration checks a library id with the fleet's pattern; the pattern "
        "belongs below both (in the settings, or a module of library identity)"
    ),
}


def imported(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every absolute import in a file."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "worker":
                for alias in node.names:
                    yield node.lineno, f"worker.{alias.name}"
            else:
                yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name


def package_of(path: Path) -> str:
    return path.relative_to(WORKER).with_suffix("").parts[0]


def sources(folder: Path) -> list[Path]:
    """Every module below a folder (for worker/, not its own package face)."""
    return sorted(p for p in folder.rglob("*.py") if p != WORKER / "__init__.py")


def test_every_package_of_the_worker_has_a_layer() -> None:
    packages = {package_of(path) for path in sources(WORKER)}
    assert {"core", "runtime", "cli"} <= packages, f"no worker package found in {WORKER}"
    assert packages - set(LEVEL) == set(), (
        "a new package or top-level module of worker/: give it its place in LAYERS"
    )


def test_no_import_runs_back_up_a_layer() -> None:
    upward = []
    for path in sources(WORKER):
        source = package_of(path)
        for line, module in imported(path):
            parts = module.split(".")
            if parts[0] != "worker" or len(parts) < 2 or parts[1] not in LEVEL:
                continue
            target = parts[1]
            shown = str(path.relative_to(REPO))
            known = (shown, f"worker.{target}") in EXCEPTIONS
            if LEVEL[target] > LEVEL[source] and not known:
                upward.append(f"{shown}:{line} ({source}) imports {module} ({target})")
    assert upward == [], (
        "imports that run back up (move the module to the layer it belongs to, or the "
        "shared part down to where both can import it):\n" + "\n".join(upward)
    )


def test_the_known_exceptions_still_exist() -> None:
    """An exception that was fixed is taken off the list, so it cannot come back."""
    for shown, module in EXCEPTIONS:
        modules = {m for _, m in imported(REPO / shown)}
        assert any(m == module or m.startswith(module + ".") for m in modules), (shown, module)


def test_the_drivers_import_nothing_of_the_worker() -> None:
    found = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in sources(REPO / "drivers")
        for line, module in imported(path)
        if module == "worker" or module.startswith("worker.")
    ]
    assert found == []
