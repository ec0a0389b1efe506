"""Task ids and names, as the archive manager's API takes them in a path.

A numeric id is canonical: `07` and `7` are the same task. A name is resolved through
the configured task catalog (`[[tasks]]` with `id` and `name`); the archive manager
warns that names are not unique, so a name of several tasks is refused with their ids.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_NUMERIC = re.compile(r"^[0-9]{1,19}$")
#: Ids as the models bound them.
MAX_ID = 2**53


@dataclass(frozen=True, slots=True)
class UnknownTaskError(Exception):
    name: str


@dataclass(frozen=True, slots=True)
class AmbiguousTaskError(Exception):
    name: str
    ids: tuple[int, ...]


def canonical_task_id(task_id: str) -> str | None:
    """The canonical form of a numeric task id, or None when it is not one."""
    if _NUMERIC.fullmatch(task_id) and int(task_id) <= MAX_ID:
        return str(int(task_id))
    return None


def resolve_task(task_id: str, catalog: Sequence[tuple[int, str]]) -> str:
    """A path's task id or name as the journal keys it (the canonical numeric id).

    A value that is neither numeric nor a catalogued name is kept as it is when the
    catalog is empty (tasks then go by whatever the client calls them), and is
    unknown otherwise.
    """
    canonical = canonical_task_id(task_id)
    if canonical is not None:
        return canonical
    if not catalog:
        return task_id
    ids = tuple(sorted({task for task, name in catalog if name == task_id}))
    if not ids:
        raise UnknownTaskError(task_id)
    if len(ids) > 1:
        raise AmbiguousTaskError(task_id, ids)
    return str(ids[0])
