"""Fleet-unique tape ids: one block per library, and the library read back from an id."""

from __future__ import annotations

import pytest

from worker.seed.tape_ids import TAPE_IDS_PER_LIBRARY, library_of_tape_id, tape_id_block


def test_library_one_numbers_from_one_and_the_blocks_do_not_overlap() -> None:
    assert tape_id_block(1)[0] == 1
    assert tape_id_block(1)[-1] == TAPE_IDS_PER_LIBRARY
    assert tape_id_block(2)[0] == TAPE_IDS_PER_LIBRARY + 1
    assert tape_id_block(3)[0] == 2 * TAPE_IDS_PER_LIBRARY + 1


@pytest.mark.parametrize("library", [1, 2, 3, 4096, 2**31 - 1])
def test_every_id_of_a_block_names_its_library(library: int) -> None:
    block = tape_id_block(library)
    assert library_of_tape_id(block[0]) == library
    assert library_of_tape_id(block[-1]) == library
    assert library_of_tape_id(block[-1] + 1) == library + 1


def test_no_library_below_one() -> None:
    assert library_of_tape_id(0) is None
    assert library_of_tape_id(-5) is None
    with pytest.raises(ValueError, match="not 1 or more"):
        tape_id_block(0)
