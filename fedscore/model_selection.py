"""Cross-validation across parties: folds every party derives alone, and a model trained and scored on each.

scikit-learn's KFold splits one array by position; a consortium's rows sit in
several frames, each party's in its own order, and only the applicants every
party holds can train. ``FederatedKFold`` draws folds from a seed and the
aligned ids alone: a seeded permutation of the sorted ids (the way a job draws
its held-out rows, fedscore.model.rows), cut into near-equal parts. Every party
knows the aligned ids after private set intersection, so each computes the
same folds on its own, whatever order its rows come in, without exchanging
anything. ``cross_validate`` trains the notebook estimator on each fold's
training rows, in one process as the estimator does, and scores its held-out rows.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import clone

from fedscore.errors import ConfigError, DataError
from fedscore.estimator import FederatedLogisticRegression
from fedscore.estimator_inputs import Party, training_parties
from fedscore.job import JobSpec
from fedscore.model import metrics
from fedscore.model.data import frame_ids, normalise_id, table_from_frame
from fedscore.model.validation import brier, log_loss
from fedscore.protocol.scoring.offline import probabilities

# name → score of (labels, calibrated log-odds); larger is better, as in scikit-learn's scorers
SCORERS = {
    "roc_auc": lambda labels, u: metrics.auc(labels, u),
    "ks": lambda labels, u: metrics.ks(labels, u),
    "neg_log_loss": lambda labels, u: -log_loss(labels, probabilities(u)),
    "neg_brier_score": lambda labels, u: -brier(labels, probabilities(u)),
}


@dataclass(frozen=True)
class FederatedKFold:
    """``n_splits`` folds of the aligned applicants, drawn from ``seed`` and their ids only.

    Not stratified: partners do not hold the labels, and every party must be
    able to derive the folds. Ids follow the data files' rule (text, stripped,
    case-folded), so a party may pass its ids as read or as normalised.
    """

    n_splits: int = 5
    seed: int = JobSpec.seed

    def __post_init__(self) -> None:
        if isinstance(self.n_splits, bool) or not isinstance(self.n_splits, int) or self.n_splits < 2:
            raise ConfigError(f"FederatedKFold: n_splits must be an integer of at least 2, got {self.n_splits!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise ConfigError(f"FederatedKFold: seed must be a non-negative integer below 2^63, got {self.seed!r}")

    def get_n_splits(self, ids: object = None) -> int:
        return self.n_splits

    def folds(self, ids: Sequence[object]) -> np.ndarray:
        """The fold (0 … n_splits − 1) of each id, in the order given."""
        given = np.array([normalise_id(i) for i in ids], dtype=object)
        ordered = np.sort(given)
        if len(ordered) > 1 and (ordered[1:] == ordered[:-1]).any():
            raise DataError("FederatedKFold: an id appears twice (after stripping and case-folding)")
        if len(ordered) < self.n_splits:
            raise DataError(f"FederatedKFold: {len(ordered)} applicants cannot make {self.n_splits} folds")
        fold_of_sorted = np.empty(len(ordered), dtype=np.int64)
        permutation = np.random.default_rng(self.seed).permutation(len(ordered))
        for fold, positions in enumerate(np.array_split(permutation, self.n_splits)):
            fold_of_sorted[positions] = fold
        return fold_of_sorted[np.searchsorted(ordered, given)]

    def split(self, ids: Sequence[object]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(training positions, held-out positions) into ``ids`` for each fold, as scikit-learn's splitters yield."""
        folds = self.folds(ids)
        for fold in range(self.n_splits):
            yield np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)


def aligned_ids(parties: Mapping[str, Party]) -> np.ndarray:
    """The normalised ids every party holds, sorted: what private set intersection finds. Each frame's ids are
    checked as fit checks them (present, unique)."""
    held = [
        table_from_frame(party.frame, list(party.id_columns), None, party=name, lenient=True).ids
        for name, party in parties.items()
    ]
    common = held[0]
    for ids in held[1:]:
        common = np.intersect1d(common, ids)
    if len(common) == 0:
        raise DataError("cross_validate: no applicant is held by every party")
    return common


def cross_validate(
    estimator: FederatedLogisticRegression,
    parties: Mapping[str, Party | pd.DataFrame],
    *,
    cv: int | FederatedKFold = 5,
    card_center: str | None = None,
    id_columns: str | Sequence[str] = "id",
    label: str | None = None,
    scoring: str | Sequence[str] = ("roc_auc", "ks"),
    return_estimator: bool = False,
) -> dict[str, np.ndarray | list]:
    """Train a clone of ``estimator`` on each fold's training applicants and score it on the fold's others.

    ``parties``, ``card_center``, ``id_columns`` and ``label`` are fit's. ``cv``
    is a FederatedKFold or a fold count (seeded with the estimator's ``seed``).
    Returns, as scikit-learn's cross_validate does, one value per fold under
    ``test_<scorer>`` (``scoring``: roc_auc, ks, neg_log_loss, neg_brier_score),
    ``fit_time`` and ``score_time``, and the fitted models under ``estimator``
    if asked. The estimator's own ``validation`` still holds out part of each
    fold's training rows; leave it at 0 to train on all of them.
    """
    names = [scoring] if isinstance(scoring, str) else list(scoring)
    unknown = [name for name in names if name not in SCORERS]
    if not names or unknown:
        raise ConfigError(f"cross_validate: unknown scoring {unknown[0] if unknown else names!r} "
                          f"(one of {', '.join(SCORERS)})")
    if isinstance(cv, bool) or not isinstance(cv, (int, FederatedKFold)):
        raise ConfigError(f"cross_validate: cv must be a FederatedKFold or a number of folds, got {cv!r}")
    splitter = cv if isinstance(cv, FederatedKFold) else FederatedKFold(cv, estimator.seed)
    named, center = training_parties(parties, card_center, id_columns, label)
    common = aligned_ids(named)
    folds = splitter.folds(common)
    own_ids = {name: frame_ids(party.frame, list(party.id_columns))[1] for name, party in named.items()}

    def rows_of(ids: np.ndarray) -> dict[str, Party]:
        return {name: Party(party.frame.iloc[np.flatnonzero(np.isin(own_ids[name], ids))], party.id_columns, party.label)
                for name, party in named.items()}

    results: dict[str, list] = {"fit_time": [], "score_time": [], **{f"test_{name}": [] for name in names}}
    fitted = []
    for fold in range(splitter.n_splits):
        started = time.perf_counter()
        model = clone(estimator).fit(rows_of(common[folds != fold]), card_center=center)
        results["fit_time"].append(time.perf_counter() - started)
        started = time.perf_counter()
        _, u, labels = model._log_odds(rows_of(common[folds == fold]), with_labels=True)
        if len(set(labels.tolist())) < 2:
            raise DataError(f"cross_validate: the held-out applicants of fold {fold + 1} hold only {int(labels[0])}s; "
                            "use fewer folds or another seed")
        for name in names:
            results[f"test_{name}"].append(SCORERS[name](labels, u))
        results["score_time"].append(time.perf_counter() - started)
        fitted.append(model)
    out: dict[str, np.ndarray | list] = {key: np.array(values) for key, values in results.items()}
    if return_estimator:
        out["estimator"] = fitted
    return out
