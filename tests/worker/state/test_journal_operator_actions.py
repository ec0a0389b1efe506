"""Operator actions in the journal: journaled with who and why; locks outlive a restart."""

from __future__ import annotations

from pathlib import Path

from drivers.definition import load_definition
from worker.settings import DEFAULTS
from worker.state.journal import Journal

DEFINITION = load_definition(DEFAULTS / "demo-library.toml")


async def test_a_lock_lasts_across_a_restart_until_unlocked(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    journal = await Journal.open(path)
    try:
        await journal.sync_catalog(DEFINITION, 1.0)
        locked = await journal.operator_action(
            "tape lock", who="ops (ann)", reason="suspect media", now=2.0,
            target="tape NOD400L8", barcode="NOD400L8", tape_fields={"locked": True},
        )  # fmt: skip
        assert locked
        assert not await journal.operator_action(
            "tape lock", who="ops", reason=None, now=2.0, target="tape NOPE00L8",
            barcode="NOPE00L8", tape_fields={"locked": True},
        )  # fmt: skip
    finally:
        await journal.close()

    journal = await Journal.open(path)  # a restart reads the definition again
    try:
        await journal.sync_catalog(DEFINITION, 3.0)
        tape = await journal.tape("NOD400L8")
        assert tape is not None
        assert tape.locked
        [event] = [e for e in await journal.events() if e.source == "operator"]
        assert (event.verb, event.topic, event.reason) == (
            "tape lock",
            "tape NOD400L8",
            "ops (ann): suspect media",
        )
        await journal.operator_action(
            "tape unlock", who="ops", reason=None, now=4.0, target="tape NOD400L8",
            barcode="NOD400L8", tape_fields={"locked": False},
        )  # fmt: skip
        await journal.sync_catalog(DEFINITION, 5.0)
        tape = await journal.tape("NOD400L8")
        assert tape is not None
        assert not tape.locked
    finally:
        await journal.close()
