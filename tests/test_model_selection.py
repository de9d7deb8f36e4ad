"""Cross-validation across parties: folds each party derives alone, per-fold scores against plaintext maths."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from fedscore import FederatedKFold, FederatedLogisticRegression, Party, cross_validate
from fedscore.cli.demo import bundled_data
from fedscore.errors import ConfigError, DataError
from fedscore.model import metrics

from conftest import TEST_KEY_BITS

LABEL = "default.payment.next.month"


def consortium(rows: int = 1200) -> dict[str, pd.DataFrame]:
    """A sample of the bundled data: a bank with three columns and the label, a bureau with three others,
    rows in another order, its id column named differently and written in another case and spacing; the bank
    holds 60 applicants the bureau lacks."""
    data = bundled_data().sample(n=rows, random_state=3)
    bank = data[["ID", "LIMIT_BAL", "AGE", "PAY_AMT1"]].rename(columns={"ID": "id"}).assign(y=data[LABEL])
    bank["id"] = "A" + bank["id"].astype(str)
    bureau = data[["ID", "PAY_0", "PAY_2", "BILL_AMT1"]].iloc[60:].sample(frac=1.0, random_state=4)
    bureau = bureau.assign(ID=" a" + bureau["ID"].astype(str) + " ").rename(columns={"ID": "customer"})
    return {"bank": bank, "bureau": bureau}


def test_folds_partition_the_ids_whatever_their_order_and_depend_on_the_seed():
    ids = [f"C{i:05d}" for i in range(1000)]
    split = FederatedKFold(n_splits=4, seed=11)
    folds = split.folds(ids)
    assert sorted(np.bincount(folds).tolist()) == [250, 250, 250, 250]
    pieces = [test for _, test in split.split(ids)]
    assert np.array_equal(np.sort(np.concatenate(pieces)), np.arange(1000))   # every row held out exactly once
    for train, test in split.split(ids):
        assert not set(train) & set(test) and len(train) + len(test) == 1000

    # another party: its rows in another order, its ids in another case and spacing; same fold for every id
    order = np.random.default_rng(5).permutation(1000)
    other = [f"  c{i:05d} " for i in order]
    np.testing.assert_array_equal(split.folds(other), folds[order])
    # a fold is not a run of consecutive ids, and another seed draws other folds
    assert len(set(folds[:20].tolist())) > 1
    assert (FederatedKFold(4, seed=12).folds(ids) != folds).mean() > 0.5
    np.testing.assert_array_equal(FederatedKFold(4, seed=11).folds(ids), folds)   # a function of seed and ids only

    with pytest.raises(DataError, match="an id appears twice"):
        split.folds(["a", "b", " A", "c"])
    with pytest.raises(DataError, match="3 applicants cannot make 4 folds"):
        split.folds(["a", "b", "c"])
    with pytest.raises(ConfigError, match="n_splits must be an integer of at least 2"):
        FederatedKFold(1)


def taylor_optimum_auc(x_train, y_train, x_test, y_test) -> float:
    """The protocol minimises the Taylor loss log 2 + u/2 + u²/8 − y·u, whose optimum is the least-squares fit
    of u = 4·(y − ½) on the standardised columns and an intercept."""
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    design = np.column_stack([np.ones(len(x_train)), (x_train - mean) / std])
    w, *_ = np.linalg.lstsq(design, 4 * (y_train - 0.5), rcond=None)
    return metrics.auc(y_test, np.column_stack([np.ones(len(x_test)), (x_test - mean) / std]) @ w)


def test_cross_validate_trains_and_scores_each_fold_as_plaintext_maths_would():
    parties = consortium()
    model = FederatedLogisticRegression(key_bits=TEST_KEY_BITS, binning="none", epochs=40, min_overlap=0)
    split = FederatedKFold(3, seed=7)
    result = cross_validate(model, {"bank": parties["bank"], "bureau": Party(parties["bureau"], id_columns="customer")},
                            cv=split, card_center="bank", label="y", scoring=("roc_auc", "ks", "neg_log_loss"),
                            return_estimator=True)
    assert set(result) == {"fit_time", "score_time", "test_roc_auc", "test_ks", "test_neg_log_loss", "estimator"}
    assert all(len(values) == 3 for values in result.values())

    # the same applicants in plaintext: those both hold, folds from their ids alone
    bureau = parties["bureau"].assign(id="A" + parties["bureau"]["customer"].str.strip().str[1:]).drop(columns="customer")
    joined = parties["bank"].merge(bureau, on="id")
    assert len(joined) == 1140
    folds = split.folds(joined["id"])
    x, y = joined.drop(columns=["id", "y"]).to_numpy(dtype=float), joined["y"].to_numpy()
    for fold, fitted in enumerate(result["estimator"]):
        train, test = folds != fold, folds == fold
        assert fitted.aligned_rows_ == fitted.report_["train_rows"] == train.sum()   # all of the fold's training rows
        assert fitted.report_["warnings"] == []                                     # 40 epochs: converged
        # the federated model is exact gradient descent on the Taylor loss, run to its optimum (the last epochs'
        # losses agree to 1e-4): its held-out AUC is the Taylor optimum's, up to the 16-bit quantised gradient
        assert result["test_roc_auc"][fold] == pytest.approx(taylor_optimum_auc(x[train], y[train], x[test], y[test]),
                                                             abs=2e-3)
        # and exact logistic regression's up to the Taylor approximation: on these folds' 380 held-out rows the
        # Taylor optimum's AUC is up to 0.009 from the exact fit's (fold 0: 0.7479 against 0.7570), plus the 2e-3 above
        exact = LogisticRegression(C=np.inf, max_iter=1000).fit(x[train], y[train])
        assert result["test_roc_auc"][fold] == pytest.approx(roc_auc_score(y[test], exact.decision_function(x[test])),
                                                             abs=0.012)
        # scored on exactly the fold's held-out applicants: the fitted model's own AUC and KS on them
        held = {"bank": parties["bank"][parties["bank"]["id"].isin(joined["id"][test])],
                "bureau": Party(parties["bureau"], id_columns="customer")}
        assert fitted.score(held) == pytest.approx(result["test_roc_auc"][fold], abs=1e-12)
        u = fitted.decision_function(held)
        labels = parties["bank"].set_index("id")["y"].loc[u.index]
        assert result["test_ks"][fold] == pytest.approx(metrics.ks(labels, u), abs=1e-12)
        assert 0.6 < result["test_roc_auc"][fold] < 0.85 and -0.6 < result["test_neg_log_loss"][fold] < -0.3


def test_cross_validate_takes_a_fold_count_seeded_by_the_estimator_and_refuses_what_it_cannot_do(monkeypatch):
    from fedscore.protocol.training import card_center
    from fedscore.protocol.training.start import secret_start

    # the card center's start drawn from a fixed seed (it is secret and new in every job), so two runs compare
    monkeypatch.setattr(card_center, "secret_start", lambda matrix: secret_start(matrix, rng=np.random.default_rng(0)))
    parties = consortium(rows=700)
    parties = {"bank": Party(parties["bank"], label="y"), "bureau": Party(parties["bureau"], id_columns="customer")}
    model = FederatedLogisticRegression(key_bits=TEST_KEY_BITS, binning="none", epochs=2, min_overlap=0, seed=5)
    counted = cross_validate(model, parties, cv=2, scoring="roc_auc")
    explicit = cross_validate(model, parties, cv=FederatedKFold(2, seed=5), scoring="roc_auc")
    assert set(counted) == {"fit_time", "score_time", "test_roc_auc"}
    np.testing.assert_array_equal(counted["test_roc_auc"], explicit["test_roc_auc"])
    other_seed = cross_validate(model, parties, cv=FederatedKFold(2, seed=6), scoring="roc_auc")
    assert not np.array_equal(other_seed["test_roc_auc"], explicit["test_roc_auc"])
    with pytest.raises(ConfigError, match="unknown scoring 'accuracy'"):
        cross_validate(model, parties, scoring=("roc_auc", "accuracy"))
    with pytest.raises(ConfigError, match="cv must be a FederatedKFold or a number of folds"):
        cross_validate(model, parties, cv="5")
    with pytest.raises(DataError, match="no applicant is held by every party"):
        strangers = parties["bureau"].frame.assign(customer="z" + parties["bureau"].frame["customer"])
        cross_validate(model, {"bank": parties["bank"], "bureau": Party(strangers, id_columns="customer")})
