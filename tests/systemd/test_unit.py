"""The systemd unit: hardened (systemd's own exposure score) and limited to tape devices."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "tapeworker.service"
MAX_EXPOSURE = 1.5


def directives(unit: Path) -> list[tuple[str, str]]:
    """(key, value) of every directive, comments left out."""
    pairs = []
    for line in unit.read_text().splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, value = line.split("=", 1)
            pairs.append((key.strip(), value.strip()))
    return pairs


def test_exposure_is_at_most_the_limit() -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail(
            "systemd-analyze is not installed: `make test` installs it "
            "(scripts/ensure-system-deps systemd)"
        )
    result = subprocess.run(
        [analyze, "security", "--offline=true", f"--threshold={int(MAX_EXPOSURE * 10)}", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


def test_devices_are_the_changer_and_the_drives_only() -> None:
    pairs = directives(UNIT)
    assert ("DevicePolicy", "closed") in pairs
    assert sorted(v for k, v in pairs if k == "DeviceAllow") == ["char-sg rw", "char-st rw"]
    assert ("PrivateDevices", "yes") not in pairs
    # DeviceAllow=char-* resolves majors at start: the modules must be loaded first.
    for key in ("Wants", "After"):
        units = {u for k, v in pairs if k == key for u in v.split()}
        assert {"modprobe@sg.service", "modprobe@st.service"} <= units
    assert any(k == "LimitNOFILE" for k, _ in pairs)


def test_every_relaxation_says_why() -> None:
    lines = UNIT.read_text().splitlines()
    relaxed = ("SupplementaryGroups", "UMask", "RestrictAddressFamilies", "IPAddressDeny")
    for key in relaxed:
        [index] = [i for i, line in enumerate(lines) if line.startswith(key + "=")]
        assert lines[index - 1].startswith("#"), f"{key} has no comment above it"
