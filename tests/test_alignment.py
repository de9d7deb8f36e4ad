"""Private set intersection: the right rows, in one agreed order, and nothing recomputable on the wire."""
from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest

from fedscore.crypto import psi
from fedscore.errors import DataError, ProtocolError
from fedscore.model.data import PartyTable
from fedscore.protocol.alignment import CardCenterAlignment, PartnerAlignment, psi_domain


def table(ids: list) -> PartyTable:
    """A partner's table as load_party_table leaves it: normalised ids, sorted."""
    normalised = np.array(sorted(str(i).strip().casefold() for i in ids), dtype=object)
    return PartyTable(ids=normalised, features=np.zeros((len(ids), 1)), feature_names=["x"], labels=None)


class Wire:
    """A partner handle that keeps every byte each side sends."""

    def __init__(self, partner: PartnerAlignment, sent: dict[str, list[bytes]]):
        self.partner, self.sent = partner, sent

    def blinded_ids(self):
        for chunk in self.partner.blinded_ids():
            self.sent["partner"].append(chunk)
            yield chunk

    def reblind(self, points, count):
        def recorded(chunks):
            for chunk in chunks:
                self.sent["card_center"].append(chunk)
                yield chunk

        for chunk in self.partner.reblind(recorded(points), count):
            self.sent["partner"].append(chunk)
            yield chunk

    def accept(self, positions):
        self.sent["card_center"].append(np.asarray(positions, dtype="<u8").tobytes())
        return self.partner.accept(positions)


def align(center_ids, partner_ids: dict[str, list], pool, min_overlap=0, sent=None):
    sent = sent if sent is not None else {"partner": [], "card_center": []}
    center = CardCenterAlignment("card_center", table(center_ids), "job-1", pool)
    partners = {name: PartnerAlignment(name, table(ids), "job-1", pool) for name, ids in partner_ids.items()}
    result = center.align({name: Wire(p, sent) for name, p in partners.items()}, min_overlap)
    return center, partners, result


@pytest.mark.parametrize("case", ["partial", "empty", "full", "strings-and-ints"])
def test_intersection_equals_the_plain_set_intersection(case, inline_pool):
    rng = random.Random(case)
    universe = [f"cust-{i:06d}" for i in range(3000)] if case != "strings-and-ints" else list(range(3000))
    center_ids = rng.sample(universe, 1200)
    if case == "empty":
        partners = {"bureau": [u for u in universe if u not in set(center_ids)][:900]}
    elif case == "full":
        partners = {"bureau": list(reversed(center_ids))}
    else:
        partners = {
            "bureau": rng.sample(center_ids, 1000) + rng.sample(universe, 300),
            "ecommerce": rng.sample(center_ids, 800) + rng.sample(universe, 200),
        }
        partners = {name: list(dict.fromkeys(ids)) for name, ids in partners.items()}  # no duplicates
        if case == "strings-and-ints":  # the bureau keys by int, the others by padded, upper-case strings
            center_ids = [f"  {i} " for i in center_ids]
            partners["ecommerce"] = [str(i).upper() for i in partners["ecommerce"]]
    center, aligners, result = align(center_ids, partners, inline_pool)

    def norm(ids):
        return {str(i).strip().casefold() for i in ids}

    expected = norm(center_ids).intersection(*(norm(ids) for ids in partners.values()))
    aligned = center.table.ids[result.rows].tolist()
    assert set(aligned) == expected and len(aligned) == len(expected)
    for name, aligner in aligners.items():
        assert aligner.table.ids[aligner.rows].tolist() == aligned  # same rows, same order
        assert result.overlaps[name] == len(norm(center_ids) & norm(partners[name]))


def test_no_id_or_plain_hash_crosses_the_wire(inline_pool):
    center_ids = [f"applicant-{i:08d}" for i in range(400)]
    partner_ids = [f"applicant-{i:08d}" for i in range(200, 700)]
    sent = {"partner": [], "card_center": []}
    align(center_ids, {"bureau": partner_ids}, inline_pool, sent=sent)
    wire = {side: b"".join(chunks) for side, chunks in sent.items()}
    assert all(len(w) > 10_000 for w in wire.values())
    domain = psi_domain("job-1")
    for identifier in set(center_ids) | set(partner_ids):
        raw = identifier.encode()
        recomputable = [
            raw,
            hashlib.sha256(raw).digest(),
            hashlib.sha512(raw).digest()[:32],
            hashlib.md5(raw).digest(),
            psi.hash_to_curve(identifier, domain),          # what a party blinds: never sent
            psi.hash_to_curve(identifier, b""),
        ]
        for side, data in wire.items():
            for value in recomputable:
                assert value not in data, f"{side} sent something recomputable from {identifier!r}"


def test_small_overlaps_stop_the_job(inline_pool):
    center_ids = [f"c{i}" for i in range(500)]
    with pytest.raises(DataError, match="'card_center' and partner 'bureau' share 50 applicants, fewer than the job's min_overlap of 100"):
        align(center_ids, {"bureau": center_ids[:50] + [f"x{i}" for i in range(400)]}, inline_pool, min_overlap=100)
    with pytest.raises(DataError, match="only 40 applicants are held by every party"):
        align(center_ids, {"a": center_ids[:300], "b": center_ids[260:]}, inline_pool, min_overlap=100)


def test_hash_to_curve_lands_on_the_curve_and_differs_by_domain():
    p = psi.FIELD_PRIME
    for identifier in ["1", "applicant 7", "ÄÖ"]:
        u = int.from_bytes(psi.hash_to_curve(identifier, b"d1"), "little")
        assert 0 < u < p and pow((u**3 + psi.CURVE_A * u * u + u) % p, (p - 1) // 2, p) == 1
        assert psi.hash_to_curve(identifier, b"d1") != psi.hash_to_curve(identifier, b"d2")


def test_blinding_commutes_and_low_order_points_are_refused():
    a, b = psi.new_secret(), psi.new_secret()
    point = psi.hash_to_curve("x", b"d")
    assert psi.blind_all(a, psi.blind_all(b, point)) == psi.blind_all(b, psi.blind_all(a, point))
    assert psi.blind_all(a, point) != psi.blind_all(b, point)
    with pytest.raises(ProtocolError, match="low order"):
        psi.blind_all(a, bytes(32))  # u = 0: a point of order 2
    with pytest.raises(ProtocolError, match="whole number"):
        psi.blind_all(a, bytes(33))


def test_a_partner_answers_once_so_it_cannot_be_queried_for_guesses(inline_pool):
    partner = PartnerAlignment("bureau", table(["a", "b", "c"]), "job-1", inline_pool)
    partner.blinded_ids()
    guess = psi.hash_to_curve("a", psi_domain("job-1"))
    partner.reblind(guess)
    with pytest.raises(ProtocolError, match="already answered"):
        partner.blinded_ids()
    with pytest.raises(ProtocolError, match="already answered"):
        partner.reblind(guess)
    with pytest.raises(ProtocolError, match="whole number"):
        inline_pool.blind(psi.new_secret(), bytes(33))
