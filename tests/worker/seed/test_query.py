"""The index's query language on its own: every operator prefix, sorting, and errors
that name the parameter they are about."""

from __future__ import annotations

import pytest

from worker.seed.query import (
    INT_MAX,
    INT_MIN,
    MAX_LIST,
    SORTABLE,
    Filter,
    IndexQuery,
    Operator,
    QueryError,
    SortKey,
    describe,
    parse_filter,
    parse_index_query,
    parse_sort,
)


@pytest.mark.parametrize(
    ("text", "operator", "values"),
    [
        ("6", "=", (6,)),
        ("=6", "=", (6,)),
        ("!=6", "!=", (6,)),
        (">6", ">", (6,)),
        (">=6", ">=", (6,)),
        ("<6", "<", (6,)),
        ("<=6", "<=", (6,)),
        ("><6|7|8", "in", (6, 7, 8)),
        ("!><6|7", "not in", (6, 7)),
        ("~1%", "like", ("1%",)),
        ("!~_2", "not like", ("_2",)),
        ("-3", "=", (-3,)),
        ("+4", "=", (4,)),
        ("><5", "in", (5,)),
    ],
)
def test_every_operator_prefix(
    text: str, operator: Operator, values: tuple[int | str, ...]
) -> None:
    assert parse_filter("pool_id", text) == Filter("pool_id", operator, values)


def test_the_longest_prefix_wins() -> None:
    # `>=` is not `>` followed by "=5", and `!><` is not `!=` followed by "<...".
    assert parse_filter("id", ">=5").operator == ">="
    assert parse_filter("id", "<=5").operator == "<="
    assert parse_filter("id", "!><5|6").operator == "not in"
    assert parse_filter("id", "!~5").operator == "not like"


def test_sqlite_integer_range_is_the_limit() -> None:
    assert parse_filter("id", str(INT_MAX)).values == (INT_MAX,)
    assert parse_filter("id", str(INT_MIN)).values == (INT_MIN,)
    with pytest.raises(ValueError, match="whole number"):
        parse_filter("id", str(INT_MAX + 1))
    with pytest.raises(ValueError, match="whole number"):
        parse_filter("id", str(INT_MIN - 1))


def test_an_in_list_is_bounded() -> None:
    at_most = "><" + "|".join(str(i) for i in range(MAX_LIST))
    assert len(parse_filter("id", at_most).values) == MAX_LIST
    with pytest.raises(ValueError, match=f"at most {MAX_LIST}"):
        parse_filter("id", at_most + "|0")


@pytest.mark.parametrize(
    "text",
    ["", "=", "abc", "1.5", "6|7", "><", "><1|", "><1||2", ">=>=1", "1 ", " 1", "0x10", "1e3"],
)
def test_values_that_are_not_whole_numbers_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="whole number"):
        parse_filter("folder_id", text)


@pytest.mark.parametrize("text", ["~", "~a%", "!~1'", "~" + "1" * 65, "~1 %"])
def test_patterns_take_only_digits_and_wildcards(text: str) -> None:
    with pytest.raises(ValueError, match="pattern"):
        parse_filter("folder_id", text)


def test_sort_keys_in_order_with_id_last_as_the_tie_breaker() -> None:
    assert parse_sort("folder_id:desc|pool_name") == (
        SortKey("folder_id", descending=True),
        SortKey("pool_name"),
        SortKey("id"),
    )
    assert parse_sort("id:desc|folder_id") == (SortKey("id", True), SortKey("folder_id"))


def test_commas_separate_sort_keys_as_the_sdk_joins_them() -> None:
    assert parse_sort("tape_barcode,folder_path:asc") == parse_sort("tape_barcode|folder_path")


def test_an_attribute_named_twice_keeps_its_first_place() -> None:
    assert parse_sort("pool_id:desc|folder_id|pool_id") == (
        SortKey("pool_id", True),
        SortKey("folder_id"),
        SortKey("id"),
    )


def test_every_scalar_attribute_sorts() -> None:
    for attribute in SORTABLE:
        assert parse_sort(attribute)[0] == SortKey(attribute)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("folder", "unknown attribute 'folder'"),
        ("", "unknown attribute ''"),
        ("id|", "unknown attribute ''"),
        ("id:down", "unknown direction 'down'"),
        ("id:", "unknown direction ''"),
        ("id:DESC", "unknown direction 'DESC'"),
    ],
)
def test_a_bad_sort_says_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_sort(text)


def test_a_whole_query_keeps_repeated_filters_and_paging() -> None:
    query = parse_index_query(
        [("pool_id", ">5"), ("pool_id", "<8"), ("sort_by", "folder_id"), ("limit", "2")],
        limit=2,
        offset=4,
    )
    assert query == IndexQuery(
        filters=(Filter("pool_id", ">", (5,)), Filter("pool_id", "<", (8,))),
        sort=(SortKey("folder_id"), SortKey("id")),
        limit=2,
        offset=4,
    )


def test_an_empty_query_sorts_by_id() -> None:
    assert parse_index_query([]) == IndexQuery()
    assert IndexQuery().sort == (SortKey("id"),)


def test_every_wrong_parameter_is_named_with_its_kind_and_value() -> None:
    with pytest.raises(QueryError) as raised:
        parse_index_query(
            [
                ("id", "x"),
                ("id", "1"),
                ("id", "~y"),
                ("sort_by", "nope"),
                ("pool", "6"),
                ("tape_barcode", "NOD400L9"),
            ]
        )
    details = raised.value.details
    assert details == {
        "id": [{"error": "invalid", "value": "x"}, {"error": "invalid", "value": "~y"}],
        "sort_by": [{"error": "invalid", "value": "nope"}],
        "pool": [{"error": "unknown_attribute", "value": "6"}],
        # Sortable is not filterable: the seed filters integer attributes only.
        "tape_barcode": [{"error": "unknown_attribute", "value": "NOD400L9"}],
    }
    assert str(raised.value) == (
        "id: invalid value; sort_by: invalid value; pool: invalid value; "
        "tape_barcode: invalid value"
    )
    assert describe(details) == [
        "id: invalid query parameter",
        "sort_by: invalid query parameter",
        "pool: invalid query parameter",
        "tape_barcode: invalid query parameter",
    ]


def test_a_long_bad_value_is_repeated_cut_short() -> None:
    with pytest.raises(QueryError) as raised:
        parse_index_query([("folder_id", "9" * 500)])
    value = raised.value.details["folder_id"][0]["value"]
    assert value.endswith("...")
    assert len(value) < 500
