"""A library id is one MQTT topic level, from the configuration or the definition."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from worker.errors import ConfigError
from worker.fleet import library_topic, resolve_library_id
from worker.settings import Settings


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
