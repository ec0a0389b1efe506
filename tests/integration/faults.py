"""Real faults for the journal's file system: a full disk (a small tmpfs), a
read-only file (the immutable attribute), a damaged page. Each helper checks that
the fault really bites (root ignores permission bits) and skips with the reason
where this machine cannot make it."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_filesystem(where: Path, size: str = "8m") -> Iterator[Path]:
    """A tmpfs of `size` mounted on `where` (needs root or CAP_SYS_ADMIN)."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(folder: Path) -> Path:
    """Write a file until the file system is full; delete it to give the room back."""
    filler = folder / "filler"
    chunk = b"\0" * 65536
    with contextlib.suppress(OSError), filler.open("wb") as out:
        while True:
            out.write(chunk)
            out.flush()
    with contextlib.suppress(OSError), filler.open("ab") as out:
        while True:
            out.write(b"\0" * 512)
            out.flush()
    return filler


@contextlib.contextmanager
def immutable(*paths: Path) -> Iterator[None]:
    """The files refuse writes, to root too (chattr +i); skipped where unsupported."""
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("chattr (e2fsprogs) is not installed")
    done = subprocess.run([chattr, "+i", *map(str, paths)], capture_output=True, check=False)
    try:
        if done.returncode != 0:
            pytest.skip(f"cannot make files immutable here: {done.stderr.decode().strip()}")
        for path in paths:
            probe = path / "write-test" if path.is_dir() else path
            try:
                with probe.open("ab"):
                    pass
            except PermissionError:
                continue
            pytest.skip(f"{path} still takes writes after chattr +i")
        yield
    finally:
        subprocess.run([chattr, "-i", *map(str, paths)], capture_output=True, check=False)


def damage_page(path: Path, page: int, page_size: int = 4096) -> None:
    """Overwrite one page of a closed database file with garbage."""
    with path.open("r+b") as raw:
        raw.seek((page - 1) * page_size)
        raw.write(b"\xa5" * page_size)
