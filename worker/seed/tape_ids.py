"""Tape ids that are unique in a fleet: each library numbers its tapes in its own block.

The archive manager knows a tape by `tape_id` and its library by `tape_library_id`.
Library n (its definition's `tape_library_id`) gives its tapes the ids
(n-1)*TAPE_IDS_PER_LIBRARY + 1 to n*TAPE_IDS_PER_LIBRARY, in the order it first sees
them: library 1 numbers from 1 as a lone library always did, and any library can tell
from a tape id alone which library's tape it is.
"""

from __future__ import annotations

#: How many tape ids each library's block holds.
TAPE_IDS_PER_LIBRARY = 1_000_000


def tape_id_block(tape_library_id: int) -> range:
    """The tape ids of one library's tapes."""
    if tape_library_id < 1:
        raise ValueError(f"tape_library_id {tape_library_id} is not 1 or more")
    start = (tape_library_id - 1) * TAPE_IDS_PER_LIBRARY + 1
    return range(start, start + TAPE_IDS_PER_LIBRARY)


def library_of_tape_id(tape_id: int) -> int | None:
    """The `tape_library_id` of the library whose block holds `tape_id` (None below 1)."""
    if tape_id < 1:
        return None
    return (tape_id - 1) // TAPE_IDS_PER_LIBRARY + 1
