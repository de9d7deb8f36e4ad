"""Bin statistics and feature selection before training, in one process: the card center's federated per-bin
counts and information values equal plaintext ones on the same rows, the selection drops the right features at
every party, training then equals numpy gradient descent, and a partner sees only ciphertexts."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedscore.crypto.paillier import PublicKey
from fedscore.errors import ProtocolError
from fedscore.job import Binning
from fedscore.job_file import load_job
from fedscore.model.taylor import fit_gradient_descent
from fedscore.model.woe import bin_counts, woe_iv
from fedscore.protocol.training.bin_statistics import features_to_keep, shown_names
from fedscore.protocol.training.driver import select_features_by_iv
from fedscore.protocol.training.simulation import build_consortium, load_tables, simulate

from conftest import write_job

ROWS = 360


def synthetic_parties(folder: Path) -> list[dict]:
    """A card center and two partners on the same applicants (ids shuffled apart), with text categories,
    missing values and columns that carry no signal."""
    rng = np.random.default_rng(11)
    ids = [f"a{i:04d}" for i in range(ROWS)]
    income = rng.normal(50, 15, ROWS)
    region = rng.choice(["north", "south", "east", "west"], ROWS)
    debt = rng.gamma(2.0, 10.0, ROWS)
    job = rng.choice(["clerk", "driver", "nurse", "farmer", "teacher"], ROWS)
    score = -0.06 * (income - 50) + 0.08 * (debt - 20) + (job == "driver") * 1.2 + (region == "south") * 0.7
    labels = (rng.random(ROWS) < 1 / (1 + np.exp(-(score - 0.5)))).astype(int)
    center = pd.DataFrame({"id": ids, "income": income.round(1), "region": region,
                           "noise_c": rng.normal(0, 1, ROWS).round(3), "y": labels})
    center.loc[rng.random(ROWS) < 0.1, "income"] = np.nan
    center.to_csv(folder / "center.csv", index=False)
    partner_a = pd.DataFrame({"pid": ids, "debt": debt.round(2), "job": job, "noise_a": rng.normal(0, 1, ROWS).round(3)})
    partner_a.loc[rng.random(ROWS) < 0.12, "job"] = ""
    partner_a.loc[rng.random(ROWS) < 0.08, "debt"] = np.nan
    partner_a.sample(frac=1.0, random_state=1).to_csv(folder / "partner_a.csv", index=False)
    partner_b = pd.DataFrame({"cid": ids, "tenure": rng.integers(0, 30, ROWS),
                              "channel": rng.choice(["web", "branch", "phone"], ROWS)})
    partner_b.sample(frac=1.0, random_state=2).to_csv(folder / "partner_b.csv", index=False)
    return [
        {"name": "center", "data": "center.csv", "id": "id", "label": "y"},
        {"name": "partner_a", "data": "partner_a.csv", "id": "pid"},
        {"name": "partner_b", "data": "partner_b.csv", "id": "cid"},
    ]


def consortium_for(folder: Path, keypair, pool, binning: Binning = Binning(), **job):
    spec, base = load_job(write_job(folder, synthetic_parties(folder), **{"validation": 0.25, **job}))
    spec = dataclasses.replace(spec, binning=binning)
    return build_consortium(spec, load_tables(spec, base), pool, keypair)


def plaintext_statistics(session, labels: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """(rows, bads, IV) per feature, from the party's own bins and the labels, in plaintext."""
    indices = session.binner.bin_indices(session.table.columns(session.features))[session.train_rows]
    result = {}
    for j, bins in enumerate(session.binner.features):
        rows, bads = bin_counts(indices[:, j], labels, bins.size)
        result[bins.feature] = (rows, bads, woe_iv(rows, bads)[1])
    return result


def by_feature(rows: list[dict]) -> dict[str, tuple[list[int], list[int], list[float]]]:
    grouped: dict[str, tuple[list[int], list[int], list[float]]] = {}
    for row in rows:
        counts, bads, woe = grouped.setdefault(row["feature"], ([], [], []))
        assert row["bin"] == len(counts)
        counts.append(row["rows"])
        bads.append(row["bads"])
        woe.append(row["woe"])
    return grouped


def test_federated_bin_counts_and_iv_equal_plaintext(tmp_path, keypair, inline_pool):
    consortium = consortium_for(tmp_path, keypair, inline_pool)
    center, coordinator = consortium.card_center, consortium.coordinator
    labels = center.train_labels
    sessions = {center.party: center, **consortium.partners}
    expected = {name: plaintext_statistics(s, labels) for name, s in sessions.items()}   # before any selection

    columns = select_features_by_iv(coordinator, center)

    assert set(center.iv) == set(sessions) == set(center.bin_statistics)
    for party, features in expected.items():
        federated = by_feature(center.bin_statistics[party])
        assert list(federated) == list(features) == list(center.iv[party])
        for feature, (rows, bads, iv) in features.items():
            got_rows, got_bads, got_woe = federated[feature]
            assert got_rows == rows.tolist() and got_bads == bads.tolist()   # exact counts
            assert center.iv[party][feature] == pytest.approx(iv, rel=1e-12, abs=1e-15)
            np.testing.assert_allclose(got_woe, woe_iv(rows, bads)[0], rtol=1e-12)
    assert sum(expected["partner_a"]["job"][1]) == labels.sum()
    # min_iv 0: every feature kept, and the coordinator expects each party's columns
    assert columns == {name: s.weights.size for name, s in sessions.items()}
    assert coordinator._columns == columns
    assert center.dropped_by_iv == {name: [] for name in sessions}


@pytest.mark.parametrize("binning", [Binning(min_iv=0.1), Binning(min_iv=0.05, max_features=1)],
                         ids=["min_iv", "max_features"])
def test_selection_by_iv_then_training_equals_numpy(tmp_path, keypair, inline_pool, binning):
    consortium = consortium_for(tmp_path, keypair, inline_pool, binning, epochs=3, batch_size=90, learning_rate=0.3)
    center = consortium.card_center
    sessions = {center.party: center, **consortium.partners}
    before = {name: plaintext_statistics(s, center.train_labels) for name, s in sessions.items()}
    wanted = {}
    for name, features in before.items():
        ranked = sorted(features, key=lambda f: -features[f][2])
        passing = [f for f in ranked if features[f][2] >= binning.min_iv] or ranked[:1]
        wanted[name] = [f for f in features if f in passing[:binning.max_features or None]]
    assert all(len(wanted[name]) < len(features) for name, features in before.items())   # each party drops some

    result = simulate(consortium)

    for name, session in sessions.items():
        assert session.features == wanted[name]
        assert center.dropped_by_iv[name] == [f for f in before[name] if f not in wanted[name]]
        assert session.weights.size == session.binner.offsets[-1] + session.binner.features[-1].size + session.has_intercept
    # the kept indicator matrices are what the rows fall in, fitted again on the kept features
    reference, losses = fit_gradient_descent(
        [s.train_matrix for s in sessions.values()], center.train_labels,
        epochs=3, learning_rate=0.3, batch_size=90, seed=consortium.coordinator.spec.seed,
        unpenalised=[s.penalised == 0 for s in sessions.values()], start=[s.start for s in sessions.values()],
    )
    assert np.any(center.start != 0) and not any(np.any(p.start) for p in consortium.partners.values())
    for session, weights in zip(sessions.values(), reference):
        np.testing.assert_allclose(session.weights, weights, rtol=0, atol=1e-9)
    np.testing.assert_allclose(result.losses, losses, rtol=0, atol=1e-6)


def test_a_partner_sees_only_ciphertexts_and_shows_opaque_names(tmp_path, keypair, inline_pool):
    consortium = consortium_for(tmp_path, keypair, inline_pool, Binning(min_iv=0.02))
    center = consortium.card_center
    partner = consortium.partners["partner_a"]
    partner.feature_names = "opaque"
    received: list = []
    asked: list = []
    answer_bin_sums, keep = partner.encrypted_bin_sums, partner.keep_features
    partner.encrypted_bin_sums = lambda labels: (received.append(list(labels)), answer_bin_sums(labels))[1]
    partner.keep_features = lambda names: (asked.append(list(names)), keep(names))[1]
    features = list(partner.features)

    select_features_by_iv(consortium.coordinator, center)

    [labels] = received
    plain = center.train_labels.astype(int).tolist()
    assert len(labels) == len(plain) and len(set(labels)) == len(labels)   # each label freshly encrypted
    key: PublicKey = center.public_key
    assert all(1 < int(c) < key.nsquare for c in labels) and [int(c) for c in labels] != plain
    assert [keypair[1].decrypt(c) for c in labels] == plain
    opaque = shown_names("partner_a", features, partner.model_features(), "opaque")
    assert opaque == [f"partner_a:f{partner.model_features().index(f) + 1}" for f in features]
    assert list(center.iv["partner_a"]) == opaque and not set(features) & set(center.iv["partner_a"])
    [kept] = asked
    assert kept == [name for name in opaque if center.iv["partner_a"][name] >= 0.02] or kept == opaque[:1]
    assert partner.features == [f for f, name in zip(features, opaque) if name in kept]


def test_features_to_keep_by_threshold_and_count():
    iv = {"a": 0.01, "b": 0.30, "c": 0.10, "d": 0.10, "e": 0.0}
    assert features_to_keep(iv, 0.0, 0) == ["a", "b", "c", "d", "e"]
    assert features_to_keep(iv, 0.05, 0) == ["b", "c", "d"]
    assert features_to_keep(iv, 0.05, 2) == ["b", "c"]          # ties keep the party's order
    assert features_to_keep(iv, 0.5, 0) == ["b"]                # never none: the best one stays
    assert features_to_keep({}, 0.5, 3) == []


def test_bin_statistics_out_of_order_and_forged_are_refused(tmp_path, keypair, inline_pool):
    consortium = consortium_for(tmp_path, keypair, inline_pool)
    center, coordinator = consortium.card_center, consortium.coordinator
    with pytest.raises(ProtocolError, match="before the bin sums were gathered"):
        center.apply_bin_sums({})
    masked = center.masked_bin_sums()
    values = {name: coordinator.decrypt_masked_bin_sums(name, c) for name, c in masked.items()}
    forged = dict(values, partner_b=[v + 1 for v in values["partner_b"]])   # one bad more in every bin
    with pytest.raises(ProtocolError, match="partner 'partner_b'.*not counts"):
        center.apply_bin_sums(forged)
    with pytest.raises(ProtocolError, match="asked to keep none of its features"):
        consortium.partners["partner_a"].keep_features([])
    with pytest.raises(ProtocolError, match="asked to keep a feature it does not show"):
        consortium.partners["partner_a"].keep_features(["nothing"])
    with pytest.raises(ProtocolError, match="encrypted labels"):
        consortium.partners["partner_a"].encrypted_bin_sums(center.encrypted_labels()[:-1])


def test_daemons_select_the_same_features_and_train_the_same_model(tmp_path, keypair, inline_pool):
    from fedscore.cli.runner import run_job_file
    from fedscore.model.model_file import PartyModel

    settings = dict(epochs=2, batch_size=90, learning_rate=0.3, validation=0.25)
    job = write_job(tmp_path, synthetic_parties(tmp_path), **settings)
    job.write_text(job.read_text() + "\n[binning]\nmin_iv = 0.1\n")
    report = run_job_file(job, local=True, workers=1)

    consortium = consortium_for(tmp_path, keypair, inline_pool, Binning(min_iv=0.1), **settings)
    simulate(consortium)
    sessions = {consortium.card_center.party: consortium.card_center, **consortium.partners}
    models = {p["name"]: PartyModel.from_json(Path(p["model"]).read_text()) for p in report["parties"]}
    # the card center's start is secret and drawn afresh per job: the daemons' model is plaintext gradient
    # descent from the start its model file records, on the same attributes
    starts = [np.array(models[name].start) if models[name].start is not None else np.zeros(s.weights.size)
              for name, s in sessions.items()]
    assert np.any(starts[0] != 0) and not any(np.any(start) for start in starts[1:])
    reference, _ = fit_gradient_descent(
        [s.train_matrix for s in sessions.values()], consortium.card_center.train_labels,
        epochs=2, learning_rate=0.3, batch_size=90, seed=consortium.coordinator.spec.seed,
        unpenalised=[s.penalised == 0 for s in sessions.values()], start=starts,
    )
    for (name, session), expected in zip(sessions.items(), reference):
        assert models[name].features == session.features and len(session.features) < len(session.model_features())
        weights = models[name].weights + ([] if models[name].intercept is None else [models[name].intercept])
        np.testing.assert_allclose(weights, expected, rtol=0, atol=1e-9)


def test_the_card_center_keeps_its_bin_statistics_across_a_restart(tmp_path, keypair, inline_pool):
    consortium = consortium_for(tmp_path, keypair, inline_pool, Binning(min_iv=0.1))
    center = consortium.card_center
    select_features_by_iv(consortium.coordinator, center)
    saved = json.loads(json.dumps(center.checkpoint()))   # as the checkpoint file holds it
    again = consortium_for(tmp_path, keypair, inline_pool, Binning(min_iv=0.1)).card_center
    again.restore(saved)
    assert (again.iv, again.bin_statistics, again.dropped_by_iv) == (center.iv, center.bin_statistics, center.dropped_by_iv)
    assert again.features == center.features and again.weights.size == center.weights.size


def test_a_partner_names_its_features_as_its_config_says(tmp_path):
    from fedscore.daemons.config import load_party_config
    from fedscore.errors import ConfigError

    path = tmp_path / "party.toml"
    path.write_text('[party]\nname = "bureau"\n')
    assert load_party_config(path).feature_names == "opaque"     # the default: its column names stay home
    path.write_text('[party]\nname = "bureau"\nfeature_names = "real"\n')
    assert load_party_config(path).feature_names == "real"
    path.write_text('[party]\nname = "bureau"\nfeature_names = "hidden"\n')
    with pytest.raises(ConfigError, match="feature_names must be one of real, opaque, got 'hidden'"):
        load_party_config(path)


def test_the_coordinator_decrypts_only_one_value_per_partner_bin(tmp_path, keypair, inline_pool):
    consortium = consortium_for(tmp_path, keypair, inline_pool)
    coordinator, partner = consortium.coordinator, consortium.partners["partner_a"]
    bins = partner.weights.size
    with pytest.raises(ProtocolError, match=f"{bins + 1} bin sums for partner 'partner_a'; it has {bins} bins"):
        coordinator.decrypt_masked_bin_sums("partner_a", inline_pool.encrypt(keypair[0], [0] * (bins + 1)))
    with pytest.raises(ProtocolError, match="'center', which is not a partner"):
        coordinator.decrypt_masked_bin_sums("center", inline_pool.encrypt(keypair[0], [0]))
    assert coordinator.decrypt_masked_bin_sums("partner_a", inline_pool.encrypt(keypair[0], list(range(bins)))) == list(range(bins))


def test_a_partner_lost_during_the_round_is_waited_for_and_the_round_runs_again(tmp_path, keypair, inline_pool):
    from fedscore.errors import PeerError
    from fedscore.protocol.training.driver import run_training

    consortium = consortium_for(tmp_path, keypair, inline_pool, Binning(min_iv=0.1), epochs=1)
    center, partner = consortium.card_center, consortium.partners["partner_b"]
    answer = partner.encrypted_bin_sums
    calls: list[int] = []

    def flaky(labels):
        calls.append(len(labels))
        if len(calls) == 1:
            raise PeerError("partner 'partner_b' did not answer")
        return answer(labels)

    partner.encrypted_bin_sums = flaky
    recovered: list[Exception] = []
    selected: list[dict] = []
    run_training(consortium.coordinator, (center.party, center), consortium.partners,
                 train_rows=len(center.train_rows), total_rows=center.table.rows,
                 recover=lambda error: recovered.append(error) or {}, on_columns=selected.append)

    assert len(calls) == 2 and len(recovered) == 1
    assert selected == [{name: s.weights.size for name, s in {center.party: center, **consortium.partners}.items()}]
    assert center.dropped_by_iv["partner_a"] and partner.features == ["tenure"]


def test_messy_files_train_calibrate_and_score_offline_as_trained(tmp_path, keypair, inline_pool):
    """Text categories, empty cells and a special value in every party's file: the job trains, calibrates,
    and scoring each applicant from the model files and the raw files gives the model's own scores."""
    from fedscore.model.data import load_party_table
    from fedscore.model.calibration import sigmoid
    from fedscore.protocol.scoring.offline import log_odds, probabilities

    binning = Binning(special_values=(("tenure", (0.0,)), ("income", (-1.0,)), ("debt", (-1.0,))))
    parties = synthetic_parties(tmp_path)
    center_file = pd.read_csv(tmp_path / "center.csv")
    center_file.loc[center_file.index % 9 == 0, "income"] = -1      # "not declared": a code, not an amount
    center_file.to_csv(tmp_path / "center.csv", index=False)
    spec, base = load_job(write_job(tmp_path, parties, validation=0.25, epochs=4, learning_rate=0.5))
    spec = dataclasses.replace(spec, binning=binning)
    consortium = build_consortium(spec, load_tables(spec, base), inline_pool, keypair)
    result = simulate(consortium)
    center = consortium.card_center
    sessions = {center.party: center, **consortium.partners}
    models = {name: s.model() for name, s in sessions.items()}
    assert models["center"].calibration is not None and result.metrics["mean_pd"] is not None
    assert "= -1" in models["center"].binner.features[models["center"].features.index("income")].labels

    tables = {name: load_party_table(tmp_path / p["data"], [p["id"]], p.get("label"), party=name, lenient=True)
              for name, p in zip(sessions, parties)}
    aligned = center.table.ids
    rows = {name: np.searchsorted(t.ids, aligned) for name, t in tables.items()}
    raw = {name: tables[name].raw_rows(models[name].features)[rows[name]] for name in sessions}
    served = log_odds(models["center"], raw["center"], {n: (models[n], raw[n]) for n in consortium.partners})
    trained = sum(s.matrix @ s.weights for s in sessions.values())
    np.testing.assert_allclose(served, trained, rtol=0, atol=1e-9)
    slope, intercept = center.calibration.slope, center.calibration.intercept
    np.testing.assert_allclose(probabilities(served, models["center"].calibrated), sigmoid(slope * trained + intercept),
                               rtol=0, atol=1e-12)

    # values no training row had: an unseen job, a blank, text where a number belongs — each lands in a bin
    model_a = models["partner_a"]
    strange = np.array([[np.nan, "pilot", 1.0], ["lots", "", -2.0]], dtype=object)
    columns = [strange[:, model_a.features.index(f)] if f in ("debt", "job") else np.array([0.0, 0.0])
               for f in model_a.features]
    contributions = model_a.binner.contributions(model_a.weights, columns)
    job_bins = model_a.binner.features[model_a.features.index("job")]
    assert job_bins.assign(["pilot", ""]).tolist() == [job_bins.other, job_bins.missing]
    assert np.isfinite(contributions).all()
