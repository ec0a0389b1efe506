"""A library id is one MQTT topic level, from the configuration or the definition."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tests.worker.records import drive_record, tape_record
from worker.core.requests import RequestState
from worker.errors import ConfigError
from worker.fleet import gone_summary, library_summary, library_topic, resolve_library_id
from worker.fleet.status import render
from worker.settings import Settings
from worker.state.records import DriveRecord, TapeRecord


@pytest.mark.parametrize("library_id", ["demo", "lib-2", "CERN_A.1", "x" * 64])
def test_a_valid_library_id_is_taken_as_configured(library_id: str) -> None:
    assert Settings(library_id=library_id).library_id == library_id
    assert resolve_library_id(library_id, "other") == library_id


@pytest.mark.parametrize(
    "library_id", ["", "a/b", "lib+", "lib#", "$SYS", ".hidden", "-x", "with space", "x" * 65]
)
def test_a_library_id_that_is_not_one_topic_level_is_refused(library_id: str) -> None:
    with pytest.raises(ValidationError, match="library_id"):
        Settings(library_id=library_id)


def test_without_a_library_id_the_definition_name_is_used() -> None:
    assert resolve_library_id(None, "demo") == "demo"


def test_a_definition_name_that_cannot_be_a_topic_level_asks_for_a_library_id() -> None:
    with pytest.raises(ConfigError, match="set library_id"):
        resolve_library_id(None, "hall 3/left")


def test_each_library_publishes_under_its_own_topic() -> None:
    assert library_topic("tw", "a") != library_topic("tw", "b")
    assert library_topic("tw", "a") == "tw/libraries/a"


def test_a_summary_counts_the_queue_drives_and_what_each_pool_can_still_take() -> None:
    drives = [drive(0, up=True, barcode="NOD400L8"), drive(1, up=False, barcode=None)]
    tapes = [
        tape("NOD400L8", "offline", used=2 * 10**12),  # LTO-8: 12 TB native
        tape("NOD401L8", "offline", locked=True),
        tape("CLN001L1", None),
    ]
    queue = {RequestState.PENDING: 1, RequestState.READY: 1}
    summary = library_summary(
        "a",
        drives=drives,
        tapes=tapes,
        queue=queue,
        draining=True,
        journal_fault=None,
        pending_by_pool={"offline": 1, "elsewhere": 4},
    )
    assert summary["drives"] == {"total": 2, "up": 1, "loaded": 1}
    assert summary["queue"] == {"pending": 1, "mounting": 0, "ready": 1}
    assert summary["pools"] == {"offline": {"tapes": 2, "writable": 1, "free_bytes": 10 * 10**12}}
    # A pool waited on is not a pool held: the fleet routes on "pools" alone.
    assert summary["pending_by_pool"] == {"elsewhere": 4, "offline": 1}
    assert summary["health"] == {"journal": "ok", "draining": True}


def test_the_table_shows_a_gone_library_beside_the_live_ones() -> None:
    live = library_summary("a", drives=[], tapes=[], queue={}, draining=False, journal_fault=None)
    table = render({"a": live, "b": gone_summary("b")})
    assert [line.split()[:2] for line in table.splitlines()[1:3]] == [["a", "up"], ["b", "GONE"]]


def drive(index: int, *, up: bool, barcode: str | None) -> DriveRecord:
    return drive_record(index, up=up, barcode=barcode, generation=8)


def tape(barcode: str, pool: str | None, *, used: int = 0, locked: bool = False) -> TapeRecord:
    return tape_record(barcode, pool=pool, used_bytes=used, locked=locked)
