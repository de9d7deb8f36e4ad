"""The estimator's fitted tables: ``coef_`` weights, the ``scorecard_`` frame and ``iv_`` series.

Kept apart from fedscore.estimator: they only read what training left (a
party's model file, the card center's session) to describe the fitted model,
and take no part in training or scoring.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from fedscore.job import Binning
from fedscore.model.binning import fit_binner
from fedscore.model.woe import bin_counts, woe_iv
from fedscore.model.model_file import PartyModel
from fedscore.protocol.scoring.scorecard import LN2, ScoringPolicy
from fedscore.protocol.training.card_center import CardCenterSession

SCORECARD_COLUMNS = ["characteristic", "bin", "weight", "points"]
RAW_BIN = "per standard deviation"          # a raw column's one "attribute": its standardised value


def scorecard_frame(model: PartyModel, pdo: float = ScoringPolicy.pdo) -> pd.DataFrame:
    """The card center's attributes with their weights and points (fedscore.model.attributes when present).

    Points follow the served score, offset + pdo·log2(odds of good), so an attribute's points are
    −slope·w·pdo/ln 2 with the calibration's slope; a raw column's row gives its points per standard deviation.
    """
    try:
        from fedscore.model.attributes import scorecard_rows
    except ImportError:
        scorecard_rows = None
    if scorecard_rows is not None:
        try:
            frame = pd.DataFrame(list(scorecard_rows(model)))
        except (TypeError, ValueError):
            frame = None
        if frame is not None and set(SCORECARD_COLUMNS) <= set(frame.columns):
            return frame
    slope = model.calibrated.slope
    if model.binned:
        binner = model.binner
        rows = [
            (bins.feature, label, float(weight))
            for bins, block in zip(binner.features, binner.weight_blocks(model.weights))
            for label, weight in zip(bins.labels, block)
        ]
    else:
        rows = [(feature, RAW_BIN, float(weight)) for feature, weight in zip(model.features, model.weights)]
    frame = pd.DataFrame(rows, columns=SCORECARD_COLUMNS[:3])
    frame["points"] = -slope * frame["weight"].to_numpy() * pdo / LN2
    return frame


def information_values(session: CardCenterSession) -> pd.Series:
    """IV by (party, feature): the card center's federated bin statistics when it has them, else its own
    columns' IV on its own training rows (on the job's bins, or default quantile bins for raw columns)."""
    federated = getattr(session, "iv", None)
    if federated:
        pairs = {(party, feature): float(value) for party, values in federated.items() for feature, value in values.items()}
    else:
        train = session.train_rows
        labels = session.labels[train]
        binner = session.binner
        if binner is None:
            columns = [c[train] for c in session.table.columns(session.features)]
            binner = fit_binner(columns, session.features, Binning(), labels)
        indices = binner.bin_indices([c[train] for c in session.table.columns(binner.names)])
        pairs = {}
        for j, bins in enumerate(binner.features):
            rows, bads = bin_counts(indices[:, j], labels, bins.size)
            pairs[(session.party, bins.feature)] = woe_iv(rows, bads)[1]
    index = pd.MultiIndex.from_tuples(list(pairs), names=["party", "feature"]) if pairs else \
        pd.MultiIndex.from_arrays([[], []], names=["party", "feature"])
    return pd.Series(list(pairs.values()), index=index, name="iv", dtype=np.float64)


def party_weights(model: PartyModel) -> pd.Series:
    """A party's weights indexed by attribute ("FEATURE: bin") when binned, else by feature."""
    if model.binned:
        index = pd.Index(model.binner.columns, name="attribute")
    else:
        index = pd.Index(model.features, name="feature")
    return pd.Series(model.weights, index=index, name=model.party, dtype=np.float64)
