"""Every JSON example of the seed round-trips through the models unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from worker.seed.models import (
    FOLDER_LIST_FIELDS,
    FOLDER_UNKNOWN_FIELDS,
    Folder,
    TaskDestination,
    TaskDestinationBody,
    TaskDestinationIndex,
)


def seed_examples(shared: Path) -> list[dict[str, Any]]:
    text = (shared / "seeds" / "000_9f48fd950b3d1d87.txt").read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    found: list[dict[str, Any]] = []
    pos = 0
    while (start := text.find("{", pos)) != -1:
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            pos = start + 1
            continue
        found.append(value)
        pos = end
    return found


def model_for(
    example: dict[str, Any],
) -> type[TaskDestination | TaskDestinationBody | TaskDestinationIndex]:
    if "count" in example:
        return TaskDestinationIndex
    if "id" in example:
        return TaskDestination
    return TaskDestinationBody


def test_seed_has_the_expected_examples(shared_dir: Path) -> None:
    examples = seed_examples(shared_dir)
    kinds = [model_for(e).__name__ for e in examples]
    # index, create body + response, show, update body + response
    assert kinds == [
        "TaskDestinationIndex",
        "TaskDestinationBody",
        "TaskDestination",
        "TaskDestination",
        "TaskDestinationBody",
        "TaskDestination",
    ]


def test_every_seed_example_round_trips(shared_dir: Path) -> None:
    for example in seed_examples(shared_dir):
        model = model_for(example)
        parsed = model.model_validate(example)
        dumped = parsed.to_json() if hasattr(parsed, "to_json") else parsed.model_dump(mode="json")
        assert json.dumps(dumped, sort_keys=True) == json.dumps(example, sort_keys=True)


def test_dates_keep_millisecond_z_form(shared_dir: Path) -> None:
    destination = next(e for e in seed_examples(shared_dir) if model_for(e) is TaskDestination)
    parsed = TaskDestination.model_validate(destination)
    assert parsed.tape is not None
    assert parsed.to_json()["tape"]["date_in"] == "2025-11-05T15:53:28.911Z"
    assert isinstance(parsed.to_json()["tape"]["locked"], int)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"tape_barcode": 12}, "tape_barcode"),
        ({"tape_id": -1}, "tape_id"),
        ({"folder_id": 1, "surprise": 1}, "surprise"),
        ({"pool_name": "a\x00b"}, "pool_name"),
    ],
)
def test_bad_bodies_name_the_field(body: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError) as caught:
        TaskDestinationBody.model_validate(body, strict=False)
    assert problem in str(caught.value)


@pytest.mark.parametrize("field", ["folder_path", "tape_barcode", "pool_name"])
@pytest.mark.parametrize("control", [*map(chr, range(32)), "\x7f"])
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_no_control_character_passes_a_text_field_in_either_parse(
    field: str, control: str, where: str
) -> None:
    value = {"start": control + "N00001L9", "middle": "N0000" + control + "1L9"}.get(
        where, "N00001L9" + control
    )
    with pytest.raises(ValidationError) as caught:
        TaskDestinationBody.model_validate({field: value})
    assert field in str(caught.value)
    with pytest.raises(ValidationError):
        TaskDestinationBody.model_validate_json(json.dumps({field: value}))


def test_the_fields_of_a_folder_known_by_id_alone_are_the_seeds_in_its_order() -> None:
    """The journal's listing and the published views build such a folder from these."""
    assert list(Folder.model_fields) == [
        "id",
        "name",
        *FOLDER_UNKNOWN_FIELDS,
        *FOLDER_LIST_FIELDS,
        "file_path",
    ]
