"""Prototype a feature split in Python before deploying any daemon.

Trains the demo consortium (examples/default_credit) in one process with
fedscore.FederatedLogisticRegression, first with the bureau alone as partner,
then with the bureau and the e-commerce partner, and prints each model's AUC
on applicants held out of training. A 512-bit key and a sample of the card
center's applicants keep it quick: the key size changes timings, not results,
and in one process it protects nothing anyway; deployed daemons use 2048 bits.

    python examples/notebook_api.py        (from the repository root)
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from fedscore import FederatedLogisticRegression, Party

DATA = Path(__file__).resolve().parent / "default_credit"


def main() -> None:
    card_center = pd.read_csv(DATA / "card_center.csv").sample(n=4000, random_state=0)
    bureau = Party(pd.read_csv(DATA / "bureau.csv"), id_columns="customer_id")   # its own id column name
    ecommerce = pd.read_csv(DATA / "ecommerce.csv")
    train = card_center.sample(frac=0.7, random_state=1)
    test = card_center.drop(train.index)
    # both models are compared on the same applicants: those every partner holds (scoring leaves out
    # the rows some party lacks, with a warning)
    test = test[test["id"].isin(bureau.frame["customer_id"]) & test["id"].isin(ecommerce["id"])]

    splits = {
        "card center + bureau": {"card_center": train, "bureau": bureau},
        "card center + bureau + ecommerce": {"card_center": train, "bureau": bureau, "ecommerce": ecommerce},
    }
    print(f"{'partners':36} {'aligned':>8} {'test rows':>9} {'test AUC':>9}")
    for title, parties in splits.items():
        model = FederatedLogisticRegression(epochs=10, key_bits=512)   # fit trains on all of train (validation 0)
        model.fit(parties, card_center="card_center", label="y")
        held_out = {**parties, "card_center": test}
        proba = model.predict_proba(held_out)
        auc = model.score(held_out)
        print(f"{title:36} {model.aligned_rows_:>8} {len(proba):>9} {auc:>9.4f}")

    print("\nbureau's weights (standardised columns):")
    print(model.coef_["bureau"].round(3).to_string())
    print("\nfirst held-out applicants:")
    print(proba.head().round(3).to_string())


if __name__ == "__main__":
    main()
