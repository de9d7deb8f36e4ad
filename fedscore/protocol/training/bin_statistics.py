"""Bin statistics before training: every partner bin's bad count, learnt by the card center alone, and feature
selection by information value.

With binning, a feature's information value (IV) needs each bin's row and bad counts. The card center holds
the labels and its own bins; a partner holds only its own bins. One round, before the first step:

1. card center: [[y_i]] for its training rows, each freshly encrypted (``encrypted_labels``);
2. partner k: the rows of each of its bins in plaintext, and [[Σ_{i in b} y_i]] per bin, a product of
   label ciphertexts, re-randomised (``encrypted_bin_sums``): it sees ciphertexts only;
3. card center: [[s_b + r_b]], r_b uniform in Z_n, re-randomised (``mask_bin_sums``); the coordinator
   decrypts s_b + r_b, uniform whatever s_b is (``CoordinatorSession.decrypt_masked_bin_sums``); the card
   center removes r_b (``unmask_bin_sums``): the exact bad count of every partner bin;
4. card center: WOE and IV per feature, the partners' from those counts (``partner_statistics``), its own
   from its labels (``own_statistics``); then each party keeps its features whose IV reaches ``min_iv``, at
   most ``max_features`` of them by IV (``features_to_keep``).

The card center learns each partner bin's row and bad counts and nothing else: a partner's features appear
under the names it chooses (``shown_names``: real, or opaque "<party>:f1", "<party>:f2"...), its bins by
position only, never a cut point or a category.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from gmpy2 import mpz

from fedscore.crypto import paillier
from fedscore.crypto.masks import uniform_mask
from fedscore.crypto.paillier import PublicKey
from fedscore.errors import ProtocolError
from fedscore.model.woe import bin_counts, woe_iv

if TYPE_CHECKING:
    from fedscore.protocol.training.card_center import CardCenterSession
    from fedscore.protocol.training.session import PartySession

REAL, OPAQUE = "real", "opaque"
FEATURE_NAMINGS = (REAL, OPAQUE)


@dataclass(frozen=True)
class BinSums:
    """A partner's answer: its features as it shows them, each one's bin count, the training rows of each bin
    (plaintext) and [[bads]] of each bin, bins of all features back to back."""

    features: list[str]
    bins: list[int]
    rows: list[int]
    sums: list[mpz]


@dataclass(frozen=True)
class FeatureStatistics:
    """One feature's bins as the card center knows them: rows, bads and WOE per bin, and the feature's IV."""

    feature: str
    rows: np.ndarray
    bads: np.ndarray
    woe: np.ndarray
    iv: float
    labels: tuple[str, ...] | None = None   # the card center's own bins only; a partner's bins are positions

    def to_rows(self) -> list[dict]:
        """One entry per bin, for the report."""
        return [
            {"feature": self.feature, "bin": b, "label": None if self.labels is None else self.labels[b],
             "rows": int(self.rows[b]), "bads": int(self.bads[b]), "woe": float(self.woe[b])}
            for b in range(len(self.rows))
        ]


# -- names a partner shows ------------------------------------------------------


def shown_names(party: str, features: Sequence[str], every_feature: Sequence[str], naming: str) -> list[str]:
    """How ``features`` appear to the other parties: as they are, or "<party>:f<k>" with k the feature's place
    among ``every_feature`` (the party's columns before any was dropped, so a name never changes meaning)."""
    if naming == REAL:
        return list(features)
    if naming != OPAQUE:
        raise ValueError(f"feature naming must be one of {', '.join(FEATURE_NAMINGS)}, got {naming!r}")
    place = {name: k + 1 for k, name in enumerate(every_feature)}
    return [f"{party}:f{place[name]}" for name in features]


def real_names(party: str, features: Sequence[str], shown: Sequence[str], keep: Sequence[str]) -> list[str]:
    """The features ``keep`` names, from the names shown for ``features``; an unknown name is refused."""
    lookup = dict(zip(shown, features))
    unknown = [name for name in keep if name not in lookup]
    if unknown:
        raise ProtocolError(f"{party}: asked to keep a feature it does not show ({len(unknown)} unknown name(s))")
    return [lookup[name] for name in keep]


# -- the round ----------------------------------------------------------------------


def encrypted_labels(session: "CardCenterSession") -> list[mpz]:
    """[[y_i]] for the card center's training rows, in training-row order, each with a fresh obfuscator."""
    return session.encrypt_vector([int(y) for y in session.train_labels.tolist()])


def encrypted_bin_sums(session: "PartySession", shown: list[str], labels: Sequence[mpz]) -> BinSums:
    """Rows per bin and [[Σ_{i in bin} y_i]] per bin over all of the party's features, re-randomised."""
    if session.binner is None or not session.encoding.binned:
        raise ProtocolError(f"{session.party}: bin sums asked for, but the job does not bin")
    if len(labels) != len(session.train_rows):
        raise ProtocolError(
            f"{session.party}: {len(labels)} encrypted labels, it has {len(session.train_rows)} training rows"
        )
    key, total = session.public_key, session.weights.size
    rows, _ = session.encoding.bin_counts()
    sums, _ = session.gradient_sums(list(labels), [], np.arange(len(session.train_rows)))
    fresh = paillier.rerandomise_each(key, sums, session.fresh_obfuscators(total))
    bins = [f.size for f in session.binner.features]
    return BinSums(features=list(shown), bins=bins, rows=[int(r) for r in rows], sums=fresh)


def check_bin_sums(party: str, sums: BinSums, train_rows: int) -> None:
    """A partner's answer must describe its training rows: one bin per row and feature."""
    if len(sums.features) != len(sums.bins) or len(set(sums.features)) != len(sums.features):
        raise ProtocolError(f"partner {party!r}: {len(sums.features)} feature names for {len(sums.bins)} features")
    if len(sums.rows) != sum(sums.bins) or len(sums.sums) != sum(sums.bins) or min(sums.bins, default=1) < 1:
        raise ProtocolError(
            f"partner {party!r}: {len(sums.rows)} row counts and {len(sums.sums)} bin sums for {sum(sums.bins)} bins"
        )
    start = 0
    for feature, size in zip(sums.features, sums.bins):
        counts = sums.rows[start:start + size]
        start += size
        if min(counts) < 0 or sum(counts) != train_rows:
            raise ProtocolError(
                f"partner {party!r}: the bins of feature {feature!r} hold {sum(counts)} rows, not the {train_rows} "
                f"training rows"
            )


def mask_bin_sums(public_key: PublicKey, sums: Sequence[mpz], obfuscators: Sequence[mpz]) -> tuple[list[mpz], list[int]]:
    """[[s_b + r_b]] with r_b uniform in Z_n, re-randomised; the masks stay with the card center."""
    masks = [uniform_mask(public_key.n) for _ in sums]
    masked = paillier.add_plains(public_key, list(sums), masks)
    return paillier.rerandomise_each(public_key, masked, list(obfuscators)), masks


def unmask_bin_sums(party: str, values: Sequence[int], masks: Sequence[int], n: int) -> list[int]:
    """s_b from the coordinator's s_b + r_b (mod n)."""
    if len(values) != len(masks):
        raise ProtocolError(f"{len(values)} bin sum values for partner {party!r}, expected {len(masks)}")
    return [(int(v) - r) % int(n) for v, r in zip(values, masks)]


# -- statistics and selection ----------------------------------------------------------


def partner_statistics(party: str, sums: BinSums, bads: Sequence[int], total_bads: int) -> list[FeatureStatistics]:
    """WOE and IV of every feature of a partner, from its bins' row counts and their bad counts (the card
    center checks each count is possible: 0 ≤ bads ≤ rows per bin, and every feature sees every bad row)."""
    statistics, start = [], 0
    for feature, size in zip(sums.features, sums.bins):
        rows = np.asarray(sums.rows[start:start + size], dtype=np.int64)
        counted = bads[start:start + size]
        start += size
        if any(b < 0 or b > r for b, r in zip(counted, rows.tolist())) or sum(counted) != total_bads:
            raise ProtocolError(f"partner {party!r}: the bin sums of feature {feature!r} are not counts of its rows")
        statistics.append(feature_statistics(feature, rows, np.asarray(counted, dtype=np.int64)))
    return statistics


def own_statistics(session: "CardCenterSession") -> list[FeatureStatistics]:
    """WOE and IV of every binned feature of the card center, on its training rows."""
    binner = session.binner
    if binner is None or not binner.features:
        return []
    indices = session.encoding.codes[session.train_rows]
    return [
        feature_statistics(bins.feature, *bin_counts(indices[:, j], session.train_labels, bins.size), bins.labels)
        for j, bins in enumerate(binner.features)
    ]


def feature_statistics(feature: str, rows: np.ndarray, bads: np.ndarray,
                       labels: Sequence[str] | None = None) -> FeatureStatistics:
    woe, iv = woe_iv(rows, bads)
    return FeatureStatistics(feature, rows, bads, woe, iv, None if labels is None else tuple(labels))


def features_to_keep(iv: Mapping[str, float], min_iv: float, max_features: int) -> list[str]:
    """The features whose IV reaches ``min_iv``, at most ``max_features`` of them (0: all) by IV, in their
    own order. A party keeps at least its best feature: with none it would have no part in the model."""
    ranked = sorted(iv, key=lambda name: -iv[name])   # stable: ties keep the party's order
    kept = [name for name in ranked if iv[name] >= min_iv] or ranked[:1]
    if max_features > 0:
        kept = kept[:max_features]
    chosen = set(kept)
    return [name for name in iv if name in chosen]
