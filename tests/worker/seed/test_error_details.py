"""Per-attribute error details: pydantic's errors in the archive manager's words."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from worker.seed.error_details import (
    VALUE_CHARS,
    detail,
    error_body,
    printable,
    shown_value,
    validation_details,
)
from worker.seed.models import TaskDestinationBody


def errors_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as raised:
        TaskDestinationBody.model_validate(body)
    return [dict(e) for e in raised.value.errors()]


def test_pydantic_kinds_become_the_seeds_kinds() -> None:
    details = validation_details(
        errors_of(
            {
                "folder_id": -1,
                "pool_id": 2**60,
                "pool_name": "p" * 300,
                "tape_barcode": "NOD 400",
                "colour": "blue",
            }
        )
    )
    assert details == {
        "folder_id": [{"error": "greater_than_or_equal_to", "value": "-1"}],
        "pool_id": [{"error": "less_than_or_equal_to", "value": str(2**60)}],
        "pool_name": [{"error": "too_long", "value": "p" * VALUE_CHARS + "..."}],
        # A kind the seed has no word for is "invalid".
        "tape_barcode": [{"error": "invalid", "value": "NOD 400"}],
        "colour": [{"error": "unknown_attribute", "value": "blue"}],
    }


def test_the_location_names_the_attribute_not_where_it_came_from() -> None:
    errors: list[dict[str, Any]] = [
        {"loc": ("query", "limit"), "type": "int_parsing", "input": "x"},
        {"loc": ("path", "task_id"), "type": "missing", "input": None},
        {"loc": ("body", "folder", "id"), "type": "greater_than", "input": 0},
        {"loc": ("body",), "type": "model_attributes_type", "input": "[]"},
        {"loc": (), "type": "too_short"},
    ]
    assert validation_details(errors) == {
        "limit": [{"error": "invalid", "value": "x"}],
        "task_id": [{"error": "blank", "value": "None"}],
        "folder.id": [{"error": "greater_than", "value": "0"}],
        "body": [
            {"error": "invalid", "value": "[]"},
            # No input at all: the value repeated back is empty.
            {"error": "too_short", "value": ""},
        ],
    }


def test_a_value_is_repeated_as_text_cut_to_a_readable_length() -> None:
    assert shown_value("NOD400L9") == "NOD400L9"
    assert shown_value(7) == "7"
    assert shown_value(None) == "None"
    assert shown_value(["a"]) == "['a']"
    assert shown_value("x" * VALUE_CHARS) == "x" * VALUE_CHARS
    assert shown_value("x" * (VALUE_CHARS + 1)) == "x" * VALUE_CHARS + "..."
    assert detail("blank", "") == {"error": "blank", "value": ""}


def test_lone_surrogates_are_escaped_so_the_answer_encodes() -> None:
    sent = "a\udcff"
    shown = printable(sent)
    assert shown == "a\\udcff"
    shown.encode("utf-8")  # would raise UnicodeEncodeError on the raw text
    assert detail("invalid", sent)["value"] == "a\\udcff"
    assert printable("tape ü") == "tape ü"


def test_the_one_error_body_lists_messages_and_details() -> None:
    assert error_body("Not found.") == {"messages": ["Not found."], "details": {}}
    body = error_body(
        ["bad \udcff", "worse"],
        {"tape_barcode\udcff": [{"error": "invalid", "value": "x\udcff"}]},
    )
    assert body == {
        "messages": ["bad \\udcff", "worse"],
        "details": {"tape_barcode\\udcff": [{"error": "invalid", "value": "x\\udcff"}]},
    }
