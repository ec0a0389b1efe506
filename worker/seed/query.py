"""The index's query language, as the archive manager defines it: paging, sorting,
filters with operator prefixes. Pure: parsing and validation only; the journal
turns a parsed query into SQL with bound parameters.

Filters: `=` (the default), `!=`, `>`, `>=`, `<`, `<=`, `><` (in a `|`-separated
list), `!><` (not in it), `~` (pattern: `%` any characters, `_` one), `!~`.
Sorting: `sort_by=folder_id:desc|id`, each attribute `:asc` (default) or `:desc`,
applied in order; ties are broken by id so that pages never overlap or skip.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from worker.seed.error_details import detail

Operator = Literal["=", "!=", ">", ">=", "<", "<=", "in", "not in", "like", "not like"]

#: Prefix -> operator; longer prefixes first so that `>=` is not read as `>`.
_PREFIXES: tuple[tuple[str, Operator], ...] = (
    ("!><", "not in"),
    ("><", "in"),
    ("!=", "!="),
    (">=", ">="),
    ("<=", "<="),
    ("!~", "not like"),
    (">", ">"),
    ("<", "<"),
    ("~", "like"),
    ("=", "="),
)

#: Every scalar attribute of a task destination: what `sort_by` accepts.
SORTABLE = ("id", "folder_id", "folder_path", "tape_id", "tape_barcode", "pool_id", "pool_name")
#: The seed's filters; all of them are integer attributes.
FILTERABLE = ("id", "folder_id", "tape_id", "pool_id")
PAGING = ("limit", "offset", "sort_by")

#: SQLite's integer range: a value beyond it could match nothing anyway.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
#: Items of one `><` list: enough for any page of ids, and far below SQLite's limit
#: on bound parameters.
MAX_LIST = 1000
_INTEGER = re.compile(r"^[+-]?[0-9]{1,19}$")
_PATTERN = re.compile(r"^[0-9%_]{1,64}$")


@dataclass(frozen=True, slots=True)
class Filter:
    attribute: str
    operator: Operator
    #: One value, a list for `in`/`not in`, or a LIKE pattern.
    values: tuple[int | str, ...]


@dataclass(frozen=True, slots=True)
class SortKey:
    attribute: str
    descending: bool = False


@dataclass(frozen=True, slots=True)
class IndexQuery:
    filters: tuple[Filter, ...] = ()
    sort: tuple[SortKey, ...] = (SortKey("id"),)
    limit: int | None = None
    offset: int = 0


class QueryError(ValueError):
    """A query parameter that is not correctly formatted; `details` names each one."""

    def __init__(self, details: dict[str, list[dict[str, str]]]) -> None:
        super().__init__("; ".join(f"{name}: invalid value" for name in details))
        self.details = details


def parse_filter(attribute: str, text: str) -> Filter:
    """One filter parameter; ValueError says what is wrong with it."""
    operator: Operator = "="
    rest = text
    for prefix, candidate in _PREFIXES:
        if text.startswith(prefix):
            operator, rest = candidate, text[len(prefix) :]
            break
    if operator in ("like", "not like"):
        if not _PATTERN.fullmatch(rest):
            raise ValueError("a pattern of digits, % and _ (at most 64 characters)")
        return Filter(attribute, operator, (rest,))
    items = rest.split("|") if operator in ("in", "not in") else [rest]
    if len(items) > MAX_LIST:
        raise ValueError(f"at most {MAX_LIST} items")
    values: list[int | str] = []
    for item in items:
        if not _INTEGER.fullmatch(item) or not INT_MIN <= int(item) <= INT_MAX:
            raise ValueError("a whole number, after an optional operator")
        values.append(int(item))
    return Filter(attribute, operator, tuple(values))


def parse_sort(text: str) -> tuple[SortKey, ...]:
    keys: list[SortKey] = []
    # `|` as the seed says; `,` too, because the archive manager's Python SDK asks for
    # "pipe" where its client knows "pipes", and so joins a sort_by list with commas.
    for part in re.split(r"[|,]", text):
        attribute, _, direction = part.partition(":")
        if attribute not in SORTABLE:
            raise ValueError(f"unknown attribute {attribute!r}")
        if direction not in ("", "asc", "desc") or (not direction and part.endswith(":")):
            raise ValueError(f"unknown direction {direction!r}: asc or desc")
        # An attribute named again adds nothing to the order: its first place counts.
        if not any(k.attribute == attribute for k in keys):
            keys.append(SortKey(attribute, direction == "desc"))
    if not any(k.attribute == "id" for k in keys):
        keys.append(SortKey("id"))
    return tuple(keys)


def parse_index_query(
    params: Sequence[tuple[str, str]], *, limit: int | None = None, offset: int = 0
) -> IndexQuery:
    """The whole query string (pairs, repeated filters kept); QueryError names every
    parameter that is wrong. `limit` and `offset` come already checked as integers."""
    details: dict[str, list[dict[str, str]]] = {}
    filters: list[Filter] = []
    sort: tuple[SortKey, ...] = (SortKey("id"),)
    for name, value in params:
        if name in FILTERABLE:
            try:
                filters.append(parse_filter(name, value))
            except ValueError:
                details.setdefault(name, []).append(detail("invalid", value))
        elif name == "sort_by":
            try:
                sort = parse_sort(value)
            except ValueError:
                details.setdefault(name, []).append(detail("invalid", value))
        elif name not in PAGING:
            details.setdefault(name, []).append(detail("unknown_attribute", value))
    if details:
        raise QueryError(details)
    return IndexQuery(tuple(filters), sort, limit, offset)


def describe(details: Mapping[str, object]) -> list[str]:
    """One message per parameter in error."""
    return [f"{name}: invalid query parameter" for name in details]
