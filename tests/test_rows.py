"""Row splits and batches: every party derives the same ones from the seed alone."""
from __future__ import annotations

import numpy as np

from fedscore.model.rows import batches, split_rows


def test_split_is_seeded_disjoint_and_complete():
    train, test = split_rows(1000, 0.3, seed=5)
    assert len(test) == 300 and len(train) == 700
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(1000))
    again_train, _ = split_rows(1000, 0.3, seed=5)
    other_train, _ = split_rows(1000, 0.3, seed=6)
    assert np.array_equal(train, again_train) and not np.array_equal(train, other_train)


def test_batches_cover_every_row_once_and_change_by_epoch():
    plan = batches(1000, 300, seed=1, epoch=0)
    assert [len(b) for b in plan] == [300, 300, 400]  # the remainder of 100 joins the last batch
    assert np.array_equal(np.sort(np.concatenate(plan)), np.arange(1000))
    assert not np.array_equal(plan[0], batches(1000, 300, seed=1, epoch=1)[0])


def test_a_half_batch_remainder_stands_alone():
    assert [len(b) for b in batches(1000, 400, seed=1, epoch=0)] == [400, 400, 200]
    assert [len(b) for b in batches(10, 0, seed=1, epoch=3)] == [10]
