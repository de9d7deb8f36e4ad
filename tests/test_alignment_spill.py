"""PSI in bounded memory: doubly-blinded lists spilled to sorted runs on disk and intersected by a merge give
the same positions as an in-memory intersection, refuse repeats across runs, leave no file behind, and the card
center's memory does not grow with the partner's list."""
from __future__ import annotations

import random
import tracemalloc

import numpy as np
import pytest

from fedscore.crypto import psi
from fedscore.errors import ProtocolError
from fedscore.protocol import spill
from fedscore.protocol.alignment import CardCenterAlignment, PartnerAlignment, psi_domain
from fedscore.protocol.spill import MINE, THEIRS, RunWriter, intersect_runs
from fedscore.transport import codec

from test_alignment import align, table


def packed_values(count: int, seed: int) -> np.ndarray:
    return np.frombuffer(np.random.default_rng(seed).bytes(psi.POINT_BYTES * count), dtype=f"S{psi.POINT_BYTES}")


def spilled(folder, side: int, values: np.ndarray, run_rows: int, piece: int = 37) -> list:
    """``values`` through a RunWriter in uneven pieces: the runs written."""
    writer = RunWriter(folder, side, run_rows)
    for start in range(0, len(values), piece):
        writer.add(values[start : start + piece].tobytes())
    return writer.close()


@pytest.mark.parametrize("run_rows", [1, 5, 64, 10_000])
def test_the_merge_of_many_runs_equals_an_in_memory_intersection(tmp_path, run_rows):
    shared, mine_only, theirs_only = packed_values(700, 1), packed_values(300, 2), packed_values(900, 3)
    rng = np.random.default_rng(run_rows)
    mine = rng.permutation(np.concatenate([shared, mine_only]))
    theirs = rng.permutation(np.concatenate([shared[:500], theirs_only]))
    runs = spilled(tmp_path, MINE, mine, run_rows) + spilled(tmp_path, THEIRS, theirs, run_rows)
    assert len(runs) == -(-1000 // run_rows) + -(-1400 // run_rows)   # whole runs of run_rows, the last shorter

    found = intersect_runs(runs, tmp_path, len(mine), buffer_rows=run_rows)

    _, at_mine, at_theirs = np.intersect1d(mine, theirs, assume_unique=True, return_indices=True)
    expected = np.full(len(mine), -1)
    expected[at_mine] = at_theirs
    assert np.array_equal(found, expected) and np.count_nonzero(found >= 0) == 500


@pytest.mark.parametrize("side", [MINE, THEIRS])
@pytest.mark.parametrize("where", ["same run", "across runs", "three times"])
def test_a_value_repeated_in_one_list_is_refused(tmp_path, side, where):
    values = packed_values(400, 4).copy()
    if where == "same run":
        values[3] = values[1]
    elif where == "across runs":
        values[390] = values[2]      # 7-row runs: far apart
    else:
        values[200] = values[390] = values[5]
    other = packed_values(300, 5).copy()
    other[:100] = values[:100]        # both sides hold the first 100: matches next to the repeat
    lists = {side: values, 1 - side: other}
    with pytest.raises(ProtocolError, match="a blinded id repeats"):
        runs = spilled(tmp_path, MINE, lists[MINE], 7) + spilled(tmp_path, THEIRS, lists[THEIRS], 7)
        intersect_runs(runs, tmp_path, len(lists[MINE]), buffer_rows=7)


@pytest.mark.parametrize("run_rows", [1, 100])
def test_a_repeat_merged_around_a_match_is_refused(tmp_path, run_rows):
    """Runs merged in passes hold both sides: a value of mine, the same of theirs, then mine again."""
    values = packed_values(40, 7)
    first = spilled(tmp_path, MINE, values[:20], run_rows)
    theirs = spilled(tmp_path, THEIRS, values[10:30], run_rows)
    again = spilled(tmp_path, MINE, values[19:21], run_rows)     # my value 19 a second time
    with pytest.raises(ProtocolError, match="a blinded id repeats"):
        intersect_runs(first + theirs + again, tmp_path, 22, buffer_rows=run_rows)


def test_a_value_both_lists_hold_once_each_is_no_repeat(tmp_path):
    values = packed_values(50, 6)
    runs = spilled(tmp_path, MINE, values, 3) + spilled(tmp_path, THEIRS, values[::-1].copy(), 3)
    assert np.array_equal(intersect_runs(runs, tmp_path, 50, buffer_rows=1), np.arange(50)[::-1])


def small_runs(aligner: CardCenterAlignment, run_rows: int = 9, chunk_rows: int = 16) -> CardCenterAlignment:
    aligner.run_rows, aligner.chunk_rows = run_rows, chunk_rows
    return aligner


def test_alignment_over_many_runs_gives_the_rows_of_one_run_and_leaves_no_file(tmp_path, inline_pool, monkeypatch):
    rng = random.Random(7)
    universe = [f"cust-{i:05d}" for i in range(2000)]
    center_ids = rng.sample(universe, 700)
    partner_ids = {"bureau": rng.sample(center_ids, 500) + rng.sample(universe, 200),
                   "ecommerce": rng.sample(center_ids, 400) + rng.sample(universe, 100)}
    partner_ids = {name: list(dict.fromkeys(ids)) for name, ids in partner_ids.items()}
    runs_merged = []
    merge_passes = spill.merge_passes
    monkeypatch.setattr(spill, "merge_passes",
                        lambda runs, *rest: runs_merged.append(len(runs)) or merge_passes(runs, *rest))
    job_folder = tmp_path / "job"
    spilling = CardCenterAlignment.__init__

    def spilling_init(self, *args):
        spilling(self, *args)
        small_runs(self).spill_parent = job_folder

    monkeypatch.setattr(CardCenterAlignment, "__init__", spilling_init)
    center, partners, result = align(center_ids, partner_ids, inline_pool)
    monkeypatch.undo()
    _, _, in_memory = align(center_ids, partner_ids, inline_pool)

    assert runs_merged and min(runs_merged) > spill.FAN_IN   # many runs, merged in passes
    assert np.array_equal(result.rows, in_memory.rows) and result.overlaps == in_memory.overlaps
    expected = set(center_ids).intersection(*partner_ids.values())
    assert set(center.table.ids[result.rows]) == expected
    for partner in partners.values():
        assert partner.table.ids[partner.rows].tolist() == center.table.ids[result.rows].tolist()
    assert job_folder.is_dir() and not any(job_folder.iterdir())


class FailingPartner:
    """A partner whose blinded list breaks off after a few chunks, or repeats a value."""

    def __init__(self, partner: PartnerAlignment, fault: str):
        self.partner, self.fault = partner, fault

    def blinded_ids(self):
        for number, chunk in enumerate(self.partner.blinded_ids()):
            if number == 3 and self.fault == "breaks off":
                raise ProtocolError("partner 'bureau': the connection broke")
            yield chunk + chunk[: psi.POINT_BYTES] if self.fault == "repeats" else chunk

    def reblind(self, points, count):
        return self.partner.reblind(points, count)

    def accept(self, positions):
        return self.partner.accept(positions)


@pytest.mark.parametrize("fault", ["breaks off", "repeats"])
def test_the_spill_folder_is_removed_after_an_error(tmp_path, inline_pool, fault):
    ids = [f"c{i}" for i in range(300)]
    center = small_runs(CardCenterAlignment("card_center", table(ids), "job-1", inline_pool))
    center.spill_parent = tmp_path
    partner = small_runs(PartnerAlignment("bureau", table(ids[100:]), "job-1", inline_pool))
    with pytest.raises(ProtocolError, match="broke" if fault == "breaks off" else "a blinded id repeats"):
        center.align({"bureau": FailingPartner(partner, fault)}, 0)
    assert not any(tmp_path.iterdir())


def test_a_partner_refuses_a_stream_other_than_the_count_announced(inline_pool):
    partner = PartnerAlignment("bureau", table(["a", "b", "c"]), "job-1", inline_pool)
    point = psi.hash_to_curve("a", psi_domain("job-1"))
    with pytest.raises(ProtocolError, match="sent 1 of the 2 ids it announced"):
        list(partner.reblind([point], 2))


class StreamedPartner:
    """A partner that blinds ids made up as it streams them and keeps nothing: its own memory is a chunk, so
    what grows with its list in the process is the card center's alone."""

    def __init__(self, rows: int, shared: list[str], job_id: str):
        self.rows, self.shared, self.domain = rows, shared, psi_domain(job_id)
        self.secret = psi.new_secret()

    def blinded_ids(self):
        for start in range(0, self.rows, 256):
            numbers = range(start, min(start + 256, self.rows))
            ids = [self.shared[i] if i < len(self.shared) else f"p{i}" for i in numbers]
            yield psi.hash_and_blind_all(self.secret, self.domain, ids)

    def reblind(self, points, count):
        for chunk in points:
            yield psi.blind_all(self.secret, chunk)

    def accept(self, positions):
        self.positions = positions


def card_center_peak(tmp_path, inline_pool, partner_rows: int) -> tuple[int, int]:
    """(the card center's traced peak in bytes, its overlap) against a partner of ``partner_rows`` ids."""
    ids = [f"c{i}" for i in range(1000)]
    center = CardCenterAlignment("card_center", table(ids), "job-1", inline_pool)
    small_runs(center, run_rows=200, chunk_rows=256)
    center.spill_parent = tmp_path
    partner = StreamedPartner(partner_rows, ids[:600], "job-1")
    tracemalloc.start()
    try:
        result = center.align({"bureau": partner}, 0)
        return tracemalloc.get_traced_memory()[1], result.overlaps["bureau"]
    finally:
        tracemalloc.stop()


def test_the_card_centers_memory_does_not_grow_with_the_partners_list(tmp_path, inline_pool):
    smaller_peak, smaller_overlap = card_center_peak(tmp_path, inline_pool, 14_000)   # 75 runs: merged in passes
    larger_peak, larger_overlap = card_center_peak(tmp_path, inline_pool, 38_000)
    assert smaller_overlap == larger_overlap == 600
    # holding the 24 000 more blinded ids would take 768 kB; only a file name per run of 200 is kept
    assert larger_peak - smaller_peak < 0.1 * 24_000 * psi.POINT_BYTES, (smaller_peak, larger_peak)
    assert not any(tmp_path.iterdir())


def test_streamed_blocks_carry_uneven_chunks_and_a_gap_or_short_stream_is_refused():
    chunks = [bytes([n]) * psi.POINT_BYTES * rows for n, rows in enumerate([3, 70_000, 0, 5])]
    blocks = list(codec.stream_fixed_blocks(iter(chunks), psi.POINT_BYTES, 70_008, "job-1"))
    assert all(len(b.data) <= codec.BLOCK_BYTES and b.total == 70_008 for b in blocks) and len(blocks) == 4
    count, data = codec.read_fixed_blocks(iter(blocks), psi.POINT_BYTES)
    assert count == 70_008 and b"".join(data) == b"".join(chunks)
    with pytest.raises(ProtocolError, match="malformed block stream"):
        b"".join(codec.read_fixed_blocks(iter([blocks[0], blocks[2]]), psi.POINT_BYTES)[1])
    with pytest.raises(ProtocolError, match="stream ended after 65539 of 70008 values"):
        b"".join(codec.read_fixed_blocks(iter(blocks[:2]), psi.POINT_BYTES)[1])
    with pytest.raises(ProtocolError, match="an empty stream"):
        codec.read_fixed_blocks(iter([]), psi.POINT_BYTES)
