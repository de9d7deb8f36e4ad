"""The audience core: the partner-side model scores as the offline reference, noise follows its law, answers are the
plaintext counts plus that noise, and each protection refuses what it should."""
from __future__ import annotations

import dataclasses
import json
import math
import random
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedscore.errors import ConfigError, DataError, DeniedError, ProtocolError
from fedscore.job_file import load_job
from fedscore.model.model_file import PartyModel
from fedscore.protocol.audience.budget import DAY_MS, budget_refusal, spent
from fedscore.protocol.audience.differencing import nearby_cutoff
from fedscore.protocol.audience.model import AudienceModel, CardCenterPart, assemble, card_center_part
from fedscore.protocol.audience.noise import discrete_laplace, noise_bound
from fedscore.protocol.audience.partner import AudiencePartner
from fedscore.protocol.audience.policy import AudiencePolicy
from fedscore.protocol.audience.query import (
    CAMPAIGN_ID, QUERY_ID, AudienceAnswer, AudienceQuery, new_campaign_id, new_query_id,
)
from fedscore.protocol.audience.users import UserBase, load_user_base
from fedscore.protocol.scoring import offline
from fedscore.protocol.scoring.scorecard import ScoringPolicy, points
from fedscore.protocol.training.simulation import build_consortium, load_tables, simulate

from conftest import DATA, write_job
from faults import attack, count

SEGMENTS = ("interest", "region")
POLICY = AudiencePolicy(segments=SEGMENTS, min_cell=10, budget=3.0, window_days=30, max_epsilon=1.0, max_segments=2)
NOW = 1_800_000_000_000


# -- a real audience model: the card center brings only id and label ------------------------------------------

def train(folder: Path, binning: dict | None, keypair, pool) -> tuple[PartyModel, PartyModel]:
    pd.read_csv(DATA / "breast_hetero_guest.csv")[["id", "y"]].to_csv(folder / "center.csv", index=False)
    (folder / "host.csv").write_bytes((DATA / "breast_hetero_host.csv").read_bytes())
    parties = [{"name": "center", "data": "center.csv", "id": "id", "label": "y"},
               {"name": "host", "data": "host.csv", "id": "id"}]
    spec, base = load_job(write_job(folder, parties, binning=binning, epochs=2, validation=0.2))
    consortium = build_consortium(spec, load_tables(spec, base), pool, keypair)
    simulate(consortium)
    return consortium.card_center.model(), consortium.partners["host"].model()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, keypair, inline_pool) -> dict[str, tuple[PartyModel, PartyModel]]:
    """(card center's model, partner's model) of a binned and a standardised audience model."""
    return {kind: train(tmp_path_factory.mktemp(kind), binning, keypair, inline_pool)
            for kind, binning in (("binned", None), ("standardised", {"method": "none"}))}


@pytest.fixture(scope="module")
def users_file(tmp_path_factory) -> Path:
    """The partner's users: the 569 it shares with the card center and 600 the card center has never seen, with an
    interest (three large segments) and a region (three large, one of 3 users, 4 empty cells)."""
    host = pd.read_csv(DATA / "breast_hetero_host.csv")
    draw = np.random.default_rng(11)
    unseen = host.sample(n=600, replace=True, random_state=4).reset_index(drop=True)
    features = [c for c in host.columns if c != "id"]
    unseen[features] = unseen[features] + draw.normal(0, 0.3, size=(600, len(features)))
    unseen["id"] = [f"U{100000 + i}" for i in range(600)]
    users = pd.concat([host, unseen], ignore_index=True)
    users["interest"] = draw.choice(["shopping", "sport", "music"], size=len(users))
    region = draw.choice(["north", "south", "east"], size=len(users)).astype(object)
    region[[5, 400, 900]] = "island"
    region[[7, 8, 700, 1000]] = ""
    users["region"] = region
    path = tmp_path_factory.mktemp("users") / "users.csv"
    users.to_csv(path, index=False)
    return path


def seen_ids() -> set[str]:
    return {str(i) for i in pd.read_csv(DATA / "breast_hetero_guest.csv")["id"]}


def reference_points(center: PartyModel, partner: PartyModel, path: Path) -> tuple[np.ndarray, pd.DataFrame]:
    """Scorecard points the plain way: the offline reference's log-odds and calibration, scorecard.points per row."""
    frame = pd.read_csv(path, dtype={"id": str, "interest": str, "region": str}, keep_default_na=False)
    matrix = frame[partner.features].to_numpy(dtype=np.float64)
    if partner.binned:
        matrix = matrix.astype(object)
    u = offline.log_odds(center, np.empty((len(frame), 0)), {partner.party: (partner, matrix)})
    policy = ScoringPolicy()
    return np.array([points(z, policy) for z in offline.calibrated(center, u)]), frame


def audience_model(trained, kind: str = "binned") -> AudienceModel:
    center, host = trained[kind]
    return assemble(host, card_center_part(center, ScoringPolicy(), "host"))


def partner_for(folder: Path, trained, users_file: Path, seed: int = 5, policy: AudiencePolicy = POLICY,
                ) -> tuple[AudiencePartner, AudienceModel]:
    center, host = trained["binned"]
    partner = AudiencePartner(
        "host", "center", policy, folder,
        users=lambda model: load_user_base(users_file, "id", model.partner_model.features, list(policy.segments), "host"),
        seen_ids=lambda model: seen_ids(), rng=random.Random(seed),
    )
    model = partner.accept_model(card_center_part(center, ScoringPolicy(), "host"), host)
    return partner, model


def query(model: AudienceModel, min_points: float, segments=(), epsilon=0.5, unseen_only=False) -> AudienceQuery:
    return AudienceQuery(new_query_id(), model.digest(), float(min_points), tuple(segments), epsilon, unseen_only)


# -- the model ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["binned", "standardised"])
def test_points_equal_the_offline_reference_row_by_row(trained, users_file, kind):
    center, host = trained[kind]
    assert center.features == [] and center.intercept is not None and center.calibration is not None
    model = audience_model(trained, kind)
    users = load_user_base(users_file, "id", host.features, [], "host")
    expected, frame = reference_points(center, host, users_file)
    by_id = dict(zip(frame["id"].str.strip().str.casefold(), expected))
    ours = model.points(users)
    np.testing.assert_array_equal(ours, np.array([by_id[i] for i in users.ids]))   # to the bit
    assert len(np.unique(ours)) > 1000 and 300 <= ours.min() < ours.max() <= 850


def test_a_user_whose_values_cannot_be_scored_is_nan_for_a_standardised_model(trained, tmp_path):
    center, host = trained["standardised"]
    frame = pd.read_csv(DATA / "breast_hetero_host.csv").head(20)
    frame["x3"] = frame["x3"].astype(object)
    frame.loc[4, "x3"] = ""
    frame.to_csv(tmp_path / "u.csv", index=False)
    scores = audience_model(trained, "standardised").points(load_user_base(tmp_path / "u.csv", "id", host.features, [], "h"))
    assert np.isnan(scores).sum() == 1 and np.isfinite(scores).sum() == 19


def hand_model(**changes) -> PartyModel:
    base = PartyModel(job_id="audience-0a1b2c3d", job_name="audience", party="shop", role="partner",
                      id_columns=["id"], features=["a", "b"], mean=[1.0, 2.0], scale=[2.0, 4.0], weights=[0.5, -0.25])
    return dataclasses.replace(base, **changes)


def hand_part(**changes) -> CardCenterPart:
    base = CardCenterPart(job_id="audience-0a1b2c3d", job_name="audience", card_center="bank", partner="shop",
                          intercept=-1.5, calibration={"slope": 0.9, "intercept": 0.1}, offset=600.0, pdo=20.0,
                          min_score=300.0, max_score=850.0)
    return dataclasses.replace(base, **changes)


def test_the_digest_changes_with_any_weight_the_intercept_or_the_scale():
    digest = assemble(hand_model(), hand_part()).digest()
    assert digest == assemble(hand_model(), hand_part()).digest()
    variants = [
        (hand_model(weights=[0.5, -0.2500001]), hand_part()),
        (hand_model(weights=[0.6, -0.25]), hand_part()),
        (hand_model(mean=[1.0, 2.5]), hand_part()),
        (hand_model(), hand_part(intercept=-1.4999999)),
        (hand_model(), hand_part(calibration={"slope": 0.9, "intercept": 0.2})),
        (hand_model(), hand_part(pdo=21.0)),
    ]
    assert len({assemble(m, p).digest() for m, p in variants} | {digest}) == len(variants) + 1


def test_a_stored_model_reads_back_to_the_same_digest_and_points(trained, users_file):
    model = audience_model(trained)
    again = AudienceModel.from_json(model.to_json())
    assert again.digest() == model.digest()
    users = load_user_base(users_file, "id", model.partner_model.features, [], "host")
    np.testing.assert_array_equal(again.points(users), model.points(users))
    document = json.loads(model.to_json())
    document["part"]["intercept"] = "0.1"
    with pytest.raises(DataError, match="intercept"):
        AudienceModel.from_json(json.dumps(document))


def test_points_follow_the_hand_computed_scorecard():
    model = assemble(hand_model(), hand_part())
    values = np.array([[3.0, 2.0], [1.0, 10.0], [-7.0, 0.0]], dtype=object)
    users = UserBase(ids=np.array(["1", "2", "3"], dtype=object), features=values, segments={})
    u = -1.5 + 0.5 * (values[:, 0].astype(float) - 1) / 2 - 0.25 * (values[:, 1].astype(float) - 2) / 4
    expected = np.clip(600 - 20 * (0.9 * u + 0.1) / math.log(2), 300, 850)
    np.testing.assert_allclose(model.points(users), expected, rtol=0, atol=1e-9)


def test_assemble_refuses_halves_of_different_models():
    with pytest.raises(ProtocolError, match="job"):
        assemble(hand_model(job_id="other-0a1b2c3d"), hand_part())
    with pytest.raises(ProtocolError, match="for partner 'shop'"):
        assemble(hand_model(party="bureau"), hand_part())
    with pytest.raises(ProtocolError, match="not a partner's"):
        assemble(hand_model(role="card_center"), hand_part())
    with pytest.raises(ProtocolError, match="no features"):
        assemble(hand_model(features=[], mean=[], scale=[], weights=[]), hand_part())


def test_card_center_part_refuses_a_model_with_features_of_its_own(trained):
    center, host = trained["binned"]
    part = card_center_part(center, ScoringPolicy(offset=500, pdo=30), "host")
    assert (part.card_center, part.partner, part.intercept) == ("center", "host", center.intercept)
    assert (part.offset, part.pdo, part.min_score, part.max_score) == (500, 30, 300, 850)
    assert part.calibration == center.calibration and part.job_id == center.job_id
    with_features = dataclasses.replace(center, features=["x0"], mean=[0.0], scale=[1.0], weights=[0.1], bins=None)
    with pytest.raises(ProtocolError, match="features of its own.*could not evaluate it alone"):
        card_center_part(with_features, ScoringPolicy(), "host")
    with pytest.raises(ProtocolError, match="partner's"):
        card_center_part(host, ScoringPolicy(), "host")


def test_card_center_part_from_dict_refuses_malformed_fields():
    good = hand_part().to_dict()
    assert CardCenterPart.from_dict(json.loads(json.dumps(good)), "part") == hand_part()
    assert CardCenterPart.from_dict({**good, "calibration": None}, "part").calibration is None
    cases = [
        ({**good, "extra": 1}, "unknown field 'extra'"),
        ({k: v for k, v in good.items() if k != "pdo"}, "field 'pdo' is missing"),
        ({**good, "job_id": "../etc"}, "field 'job_id'"),
        ({**good, "partner": "a b"}, "field 'partner'"),
        ({**good, "intercept": "1.0"}, "field 'intercept'"),
        ({**good, "intercept": True}, "field 'intercept'"),
        ({**good, "offset": float("nan")}, "field 'offset'"),
        ({**good, "pdo": 0}, "field 'pdo'"),
        ({**good, "min_score": 900.0}, "field 'min_score'"),
        ({**good, "calibration": {"slope": 1.0}}, "calibration: field 'intercept' is missing"),
        ({**good, "calibration": {"slope": 1.0, "intercept": 0.0, "x": 1}}, "calibration: unknown field 'x'"),
        ({**good, "partner": "bank"}, "field 'partner'"),
        ([1, 2], "must be an object"),
    ]
    count("malformed messages tried", len(cases))
    for document, message in cases:
        with pytest.raises(DataError, match=message):
            CardCenterPart.from_dict(document, "part")


# -- the policy ---------------------------------------------------------------------------------------------

def test_policy_to_and_from_the_chain_and_its_checks():
    assert AudiencePolicy.from_dict(POLICY.to_dict(), "chain") == dataclasses.replace(POLICY, users="", id_column="id")
    assert set(POLICY.to_dict()) == {"segments", "min_cell", "budget", "window_days", "max_epsilon", "max_segments",
                                     "min_epsilon", "min_points_gap"}
    stated = dataclasses.replace(POLICY, min_epsilon=1, min_points_gap=0).to_dict()
    assert (stated["min_epsilon"], stated["min_points_gap"]) == (1.0, 0.0)
    assert type(stated["min_epsilon"]) is float and type(stated["min_points_gap"]) is float
    assert (POLICY.min_epsilon, POLICY.min_points_gap) == (0.1, 10.0)
    for changes, key in [({"min_cell": 0}, "min_cell"), ({"budget": -1.0}, "budget"), ({"window_days": 1.5}, "window_days"),
                         ({"max_epsilon": float("inf")}, "max_epsilon"), ({"segments": ("id",)}, "id column"),
                         ({"segments": ("a", "a")}, "twice"), ({"max_segments": True}, "max_segments"),
                         ({"min_epsilon": 0.0}, "min_epsilon"), ({"min_epsilon": -0.1}, "min_epsilon"),
                         ({"min_epsilon": 1.5}, "min_epsilon must be .* at most max_epsilon"),
                         ({"min_epsilon": float("nan")}, "min_epsilon"), ({"min_epsilon": True}, "min_epsilon"),
                         ({"min_points_gap": -1.0}, "min_points_gap"), ({"min_points_gap": float("inf")}, "min_points_gap"),
                         ({"min_points_gap": "10"}, "min_points_gap")]:
        with pytest.raises(ConfigError, match=f"party 'shop'.*{key}"):
            dataclasses.replace(POLICY, **changes).validate("party 'shop' [party.audience]")
    dataclasses.replace(POLICY, min_epsilon=1.0, min_points_gap=0.0).validate("edges")   # both bounds are allowed
    with pytest.raises(ConfigError, match="exactly the keys"):
        AudiencePolicy.from_dict({**POLICY.to_dict(), "users": "x.csv"}, "chain")
    with pytest.raises(ConfigError, match="exactly the keys"):
        AudiencePolicy.from_dict({k: v for k, v in POLICY.to_dict().items() if k != "min_points_gap"}, "chain")
    with pytest.raises(ConfigError, match="chain: min_epsilon"):
        AudiencePolicy.from_dict({**POLICY.to_dict(), "min_epsilon": 2.0}, "chain")


# -- the users ----------------------------------------------------------------------------------------------

def test_load_user_base_reads_ids_features_and_segments_in_id_order(tmp_path):
    (tmp_path / "u.csv").write_text("id,b,seg,a\n Z9 ,2.5,north,x\n10,,,y\nab,3,south ,x\n")
    users = load_user_base(tmp_path / "u.csv", "id", ["a", "b"], ["seg"], "shop")
    assert users.ids.tolist() == ["10", "ab", "z9"] and users.own_ids.tolist() == ["10", "ab", "Z9"]
    assert users.segments["seg"].tolist() == ["(missing)", "south", "north"]
    assert users.features[:, 0].tolist() == ["y", "x", "x"]
    assert users.features[0, 1] != users.features[0, 1] and users.features[1:, 1].tolist() == [3.0, 2.5]


@pytest.mark.parametrize("text, segments, message", [
    ("key,a,seg\n1,2,x\n", ["seg"], r"u\.csv: id column 'id' not found"),
    ("id,a,seg\n1,2,x\n2,3,y\n 1 ,4,z\n", ["seg"], r"u\.csv: 2 rows share an id.*lines 2 and 4"),
    ("id,a,seg\n1,2,x\n,3,y\n", ["seg"], r"u\.csv: id column 'id' is empty on 1 row.*line 3"),
    ("id,a\n1,2\n", ["seg"], r"u\.csv: segment column 'seg' not found"),
    ("id,seg\n1,x\n", ["seg"], r"u\.csv: feature column 'a' not found"),
    ("id,a\n1,2\n", ["id"], r"u\.csv: the id column 'id' cannot be a segment column"),
])
def test_load_user_base_names_the_file_column_and_line(tmp_path, text, segments, message):
    count("bad files tried")
    (tmp_path / "u.csv").write_text(text)
    with pytest.raises(DataError, match=message) as refused:
        load_user_base(tmp_path / "u.csv", "id", ["a"], segments, "shop")
    assert str(tmp_path) not in str(refused.value) and "party 'shop'" in str(refused.value)


def test_load_user_base_refuses_a_missing_file(tmp_path):
    with pytest.raises(DataError, match="nothing.csv: file does not exist"):
        load_user_base(tmp_path / "nothing.csv", "id", ["a"], [], "shop")


# -- the noise ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("epsilon", [0.3, 1.0])
def test_discrete_laplace_follows_its_law(epsilon):
    draws = discrete_laplace(epsilon, 200_000, random.Random(1234))
    assert draws.dtype == np.int64
    q = math.exp(-epsilon)
    variance = 2 * q / (1 - q) ** 2
    assert abs(draws.mean()) < 4 * math.sqrt(variance / draws.size)
    assert draws.var() == pytest.approx(variance, rel=0.03)
    for k in range(-3, 4):   # P(k) = (1 − q)/(1 + q)·q^|k|, each within 4 standard errors
        p = (1 - q) / (1 + q) * q ** abs(k)
        assert abs(np.mean(draws == k) - p) < 4 * math.sqrt(p * (1 - p) / draws.size)


def test_discrete_laplace_is_seeded_by_the_generator_given_and_the_system_otherwise():
    assert discrete_laplace(0.5, 50, random.Random(3)).tolist() == discrete_laplace(0.5, 50, random.Random(3)).tolist()
    assert len(set(discrete_laplace(0.5, 50).tolist())) > 3
    with pytest.raises(ValueError, match="ε"):
        discrete_laplace(0.0, 5)


@pytest.mark.parametrize("epsilon", [0.05, 0.3, 0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_noise_bound_is_the_smallest_t_of_the_tail(epsilon, confidence):
    q = math.exp(-epsilon)

    def beyond(t: int) -> float:   # P(|X| > t), summed from the probabilities themselves
        return 1 - sum((1 - q) / (1 + q) * q ** abs(k) for k in range(-t, t + 1))

    t = noise_bound(epsilon, confidence)
    assert beyond(t) <= 1 - confidence + 1e-12
    assert t == 0 or beyond(t - 1) > 1 - confidence


# -- queries and answers on the wire ------------------------------------------------------------------------

def test_ids_have_their_shapes():
    assert QUERY_ID.fullmatch(new_query_id()) and CAMPAIGN_ID.fullmatch(new_campaign_id())
    assert new_query_id() != new_query_id()


def test_audience_query_from_dict_refuses_malformed_fields():
    good = AudienceQuery(new_query_id(), "ab" * 32, 620.0, ("interest",), 0.5, True).to_dict()
    assert AudienceQuery.from_dict(json.loads(json.dumps(good)), "query").to_dict() == good
    cases = [
        ({**good, "extra": 1}, "unknown field 'extra'"),
        ({k: v for k, v in good.items() if k != "epsilon"}, "field 'epsilon' is missing"),
        ({**good, "query_id": "q123"}, "field 'query_id'"),
        ({**good, "model": "AB" * 32}, "field 'model'"),
        ({**good, "model": "../" * 20}, "field 'model'"),
        ({**good, "min_points": "620"}, "field 'min_points'"),
        ({**good, "min_points": True}, "field 'min_points'"),
        ({**good, "segments": "interest"}, "field 'segments'"),
        ({**good, "segments": ["a", "a"]}, "field 'segments'"),
        ({**good, "segments": [1]}, "field 'segments'"),
        ({**good, "epsilon": 0}, "field 'epsilon'"),
        ({**good, "epsilon": float("inf")}, "field 'epsilon'"),
        ({**good, "unseen_only": 1}, "field 'unseen_only'"),
        ("query", "must be an object"),
    ]
    count("malformed messages tried", len(cases))
    for document, message in cases:
        with pytest.raises(DataError, match=message):
            AudienceQuery.from_dict(document, "query")


def answer_dict() -> dict:
    return {"query_id": new_query_id(), "model": "cd" * 32,
            "cells": [{"segment": ["music"], "count": 40}, {"segment": ["sport"], "count": None}],
            "total": 40, "min_cell": 10, "epsilon": 0.5, "noise_bound": 6, "spent": 1.5, "budget": 3.0, "window_days": 30}


def test_audience_answer_from_dict_refuses_malformed_fields():
    good = answer_dict()
    answer = AudienceAnswer.from_dict(json.loads(json.dumps(good)), "answer")
    assert answer.to_dict() == good and answer.cells[1].count is None and answer.digest() != ""
    cases = [
        ({**good, "x": 1}, "unknown field 'x'"),
        ({**good, "total": 41}, "field 'total'"),
        ({**good, "total": "40"}, "field 'total'"),
        ({**good, "cells": "none"}, "field 'cells'"),
        ({**good, "cells": [{"segment": ["music"], "count": 4}]}, r"cells\[0\]: field 'count'"),
        ({**good, "cells": [{"segment": ["music"], "count": 40.0}]}, r"cells\[0\]: field 'count'"),
        ({**good, "cells": [{"segment": ["music"], "count": 40, "ids": []}]}, r"cells\[0\]: unknown field 'ids'"),
        ({**good, "cells": [{"segment": ["music"], "count": 40}, {"segment": ["a", "b"], "count": None}]},
         r"cells\[1\]: field 'segment'"),
        ({**good, "cells": [{"segment": ["music"], "count": 40}, {"segment": ["music"], "count": None}]}, "twice"),
        ({**good, "query_id": 7}, "field 'query_id'"),
        ({**good, "noise_bound": -1}, "field 'noise_bound'"),
        ({**good, "spent": 0.1}, "field 'spent'"),
        ({**good, "window_days": 0}, "field 'window_days'"),
    ]
    count("malformed messages tried", len(cases))
    for document, message in cases:
        with pytest.raises(DataError, match=message):
            AudienceAnswer.from_dict(document, "answer")


# -- budget and cut-offs, alone -------------------------------------------------------------------------------

def test_spent_counts_the_queries_in_the_window_only():
    queries = [(NOW - 30 * DAY_MS, 1.0), (NOW - 30 * DAY_MS + 1, 0.5), (NOW - DAY_MS, 0.25), (NOW + 5, 0.125)]
    assert spent(queries, NOW, 30) == 0.875
    assert spent(queries, NOW, 31) == 1.875
    assert spent([(NOW, 0.1)] * 30, NOW, 30) == pytest.approx(3.0)
    assert budget_refusal(spent([(NOW, 0.1)] * 29, NOW, 30), 0.1, AudiencePolicy(budget=3.0)) is None


def test_budget_refusal_names_what_is_over():
    policy = AudiencePolicy(budget=3.0, max_epsilon=1.0, window_days=30)
    assert budget_refusal(2.0, 1.0, policy) is None
    assert "over the budget of 3" in budget_refusal(2.5, 0.6, policy)
    assert "more than the 1 one query may spend" in budget_refusal(0.0, 1.5, policy)
    assert budget_refusal(0.0, 0.0, policy) and budget_refusal(0.0, -1.0, policy) and budget_refusal(0.0, True, policy)


def test_budget_refusal_refuses_an_epsilon_below_the_minimum():
    policy = AudiencePolicy(budget=3.0, max_epsilon=1.0, min_epsilon=0.1)
    assert budget_refusal(0.0, 0.1, policy) is None                               # exactly the minimum
    assert "ε 0.09 is less than the 0.1 one query must spend" in budget_refusal(0.0, 0.09, policy)
    assert "less than the 0.1" in budget_refusal(0.0, 1e-5, policy)               # a tiny ε buys nothing
    assert budget_refusal(0.0, 0.01, dataclasses.replace(policy, min_epsilon=0.01)) is None


def test_nearby_cutoff_is_decided_on_the_queries_alone():
    model, other = "ab" * 32, "cd" * 32
    earlier = [("qa", model, False, 600.0), ("qb", other, False, 640.0), ("qc", model, True, 700.0)]
    assert nearby_cutoff(model, False, 600.0, earlier, 10.0) is None             # the same cut-off: a repeat
    assert nearby_cutoff(model, False, 610.0, earlier, 10.0) is None             # exactly the gap away
    assert nearby_cutoff(model, False, 590.0, earlier, 10.0) is None
    refusal = nearby_cutoff(model, False, 609.5, earlier, 10.0)
    assert refusal == ("its cut-off 609.5 is within 10 points of query qa's (600) on the same model: the users between "
                       "the two would be counted by subtraction; ask for the same cut-off or one at least 10 points away")
    assert "query qa's" in nearby_cutoff(model, False, 600.001, earlier, 10.0)
    assert nearby_cutoff(model, False, 641.0, earlier, 10.0) is None             # 640 was on another model
    assert nearby_cutoff(model, False, 701.0, earlier, 10.0) is None             # 700 counted unseen users only
    assert "query qc's (700)" in nearby_cutoff(model, True, 701.0, earlier, 10.0)
    assert nearby_cutoff(model, False, 601.0, earlier, 0.0) is None              # a gap of 0: no cut-off refused
    assert nearby_cutoff(model, False, 601.0, [], 10.0) is None
    assert nearby_cutoff(model, False, 601.0, iter(earlier), 10.0) is not None   # any iterable of earlier queries


# -- the partner's answers ----------------------------------------------------------------------------------

def plain_counts(trained, users_file: Path, min_points: float, column: str | None, unseen_only: bool = False) -> dict:
    center, host = trained["binned"]
    scores, frame = reference_points(center, host, users_file)
    member = scores >= min_points
    if unseen_only:
        member &= ~frame["id"].isin(seen_ids()).to_numpy()
    if column is None:
        return {(): int(member.sum())}
    values = frame[column].str.strip().replace("", "(missing)")
    return {(k,): int(v) for k, v in values[member].value_counts().items()}


@pytest.mark.parametrize("column, unseen_only", [(None, False), ("interest", False), ("region", False), ("region", True)])
def test_answer_is_the_plaintext_count_plus_the_noise_drawn(trained, users_file, tmp_path, column, unseen_only):
    partner, model = partner_for(tmp_path, trained, users_file, seed=21)
    asked = query(model, 560, [column] if column else [], epsilon=1.0, unseen_only=unseen_only)
    answer = partner.answer(asked, chain_spent=0.0, now_ms=NOW)
    plain = plain_counts(trained, users_file, 560, column, unseen_only)
    all_values = plain_counts(trained, users_file, -1e9, column)   # every cell some user has, in sorted order
    keys = sorted(all_values)
    assert [c.segment for c in answer.cells] == keys
    noise = discrete_laplace(1.0, len(keys), random.Random(21))                 # the same draws, replayed
    for cell, drawn in zip(answer.cells, noise.tolist()):
        noisy = plain.get(cell.segment, 0) + drawn
        assert cell.count == (noisy if noisy >= 10 else None)
        if cell.count is not None:
            assert abs(cell.count - plain.get(cell.segment, 0)) <= answer.noise_bound
    assert answer.noise_bound == noise_bound(1.0) and answer.total == sum(c.count or 0 for c in answer.cells)
    assert (answer.spent, answer.budget, answer.min_cell, answer.window_days) == (1.0, 3.0, 10, 30)
    if column == "region":
        assert next(c for c in answer.cells if c.segment == ("island",)).count is None   # 3 users: suppressed
    if unseen_only:
        assert sum(plain.values()) < sum(plain_counts(trained, users_file, 560, column).values())
    assert partner.answered(asked.query_id) == answer


def test_a_segment_column_not_exposed_is_refused(trained, users_file, tmp_path):
    partner, model = partner_for(tmp_path, trained, users_file)
    with pytest.raises(DeniedError, match="'x0' is not a segment column it exposes"):
        partner.answer(query(model, 560, ["x0"]), 0.0, NOW)
    narrow, _ = partner_for(tmp_path / "narrow", trained, users_file, policy=dataclasses.replace(POLICY, max_segments=1))
    with pytest.raises(DeniedError, match="2 segment columns, at most 1"):
        narrow.answer(query(model, 560, ["interest", "region"]), 0.0, NOW)
    assert partner.pending_spent(NOW) == 0


def test_a_model_not_held_is_refused(trained, users_file, tmp_path):
    partner, model = partner_for(tmp_path, trained, users_file)
    other = assemble(model.partner_model, dataclasses.replace(model.part, intercept=model.part.intercept + 1))
    with pytest.raises(ProtocolError, match=f"does not hold model {other.digest()}"):
        partner.answer(query(other, 560), 0.0, NOW)
    with pytest.raises(ProtocolError, match="does not hold model"):
        partner.model("../../etc/passwd")


def ask(partner: AudiencePartner, asked: AudienceQuery, chain_spent: float, now_ms: int) -> AudienceAnswer:
    """Answered, then recorded on the chain, as the card center does before its next query."""
    answer = partner.answer(asked, chain_spent, now_ms)
    partner.recorded(asked.query_id)
    return answer


def test_the_budget_refuses_what_the_chain_or_the_partners_own_record_has_spent(trained, users_file, tmp_path):
    partner, model = partner_for(tmp_path, trained, users_file)
    with pytest.raises(DeniedError, match="over the budget of 3"):
        partner.answer(query(model, 560, epsilon=0.5), chain_spent=2.6, now_ms=NOW)
    first = ask(partner, query(model, 560, epsilon=1.0), chain_spent=1.0, now_ms=NOW)
    assert first.spent == 2.0                                       # the chain's 1.0 is more than its own 0: 1.0 + 1.0
    # the chain says nothing was spent (its entries dated out of the window): the partner's own record still counts
    assert ask(partner, query(model, 560, epsilon=1.0), chain_spent=0.0, now_ms=NOW + 1).spent == 2.0
    assert ask(partner, query(model, 560, epsilon=0.5), chain_spent=0.0, now_ms=NOW + 1).spent == 2.5
    refused = query(model, 560, epsilon=1.0)
    assert not attack(_answers(partner, refused, chain_spent=0.0, now_ms=NOW + 2))   # 2.5 in its record + 1.0 > 3
    assert not attack(_answers(partner, refused, chain_spent=2.5, now_ms=NOW + 2))   # the chain's 2.5 + 1.0 > 3
    assert partner.pending_spent(NOW + 2) == 0
    assert ask(partner, query(model, 560, epsilon=0.5), chain_spent=2.5, now_ms=NOW + 3).spent == 3.0   # exactly
    later = NOW + 31 * DAY_MS                                       # the window has moved past all of them
    assert partner.answer(refused, chain_spent=0.0, now_ms=later).spent == 1.0


def test_the_partners_own_record_counts_by_its_own_answer_times(trained, users_file, tmp_path):
    partner, model = partner_for(tmp_path, trained, users_file)
    ask(partner, query(model, 560, epsilon=1.0), 0.0, NOW + DAY_MS)                  # answered a day "ahead"
    assert ask(partner, query(model, 600, epsilon=1.0), 0.0, NOW).spent == 2.0      # a clock set back still counts it
    assert ask(partner, query(model, 640, epsilon=1.0), 0.0, NOW + 30 * DAY_MS).spent == 2.0   # NOW has left the window
    last = NOW + 31 * DAY_MS - 1                                                     # NOW + DAY is still in the window
    assert ask(partner, query(model, 680, epsilon=1.0), 0.0, last).spent == 3.0
    with pytest.raises(DeniedError, match=r"bring the spend of the last 30 days to 3\.1"):
        partner.answer(query(model, 720, epsilon=0.1), 0.0, last)
    assert ask(partner, query(model, 720, epsilon=1.0), 0.0, last + 1).spent == 3.0   # NOW + DAY has left it


def _answers(partner: AudiencePartner, asked: AudienceQuery, chain_spent: float, now_ms: int) -> bool:
    try:
        partner.answer(asked, chain_spent, now_ms)
        return True
    except DeniedError:
        return False


def test_an_epsilon_above_the_maximum_or_below_the_minimum_is_refused(trained, users_file, tmp_path):
    partner, model = partner_for(tmp_path, trained, users_file)
    with pytest.raises(DeniedError, match="more than the 1 one query may spend"):
        partner.answer(query(model, 560, epsilon=1.5), 0.0, NOW)
    with pytest.raises(DeniedError, match="ε 0.001 is less than the 0.1 one query must spend"):
        partner.answer(query(model, 560, epsilon=0.001), 0.0, NOW)
    assert partner.unrecorded() == ([], [])                                    # refused: nothing answered


def test_a_new_query_waits_until_the_chain_holds_every_earlier_answer(trained, users_file, tmp_path):
    partner, model = partner_for(tmp_path, trained, users_file)
    asked = query(model, 600, ["interest"])
    first = partner.answer(asked, 0.0, NOW)
    assert partner.answered_at(asked.query_id) == NOW and partner.answered_at(new_query_id()) is None
    waiting = query(model, 700)
    with pytest.raises(DeniedError, match=f"refuses query {waiting.query_id}: query {asked.query_id} answered at "
                                          r"2027-01-15T08:00:00\.000Z is not on the audience chain yet; "
                                          "the card center records it first"):
        partner.answer(waiting, 0.0, NOW + 1)
    assert partner.answer(asked, 0.0, NOW + 2) == first                        # a retry is still the same answer
    assert partner.answered(waiting.query_id) is None
    assert partner.unrecorded() == ([{"query": asked.to_dict(), "answer": first.to_dict(), "time_ms": NOW}], [])
    partner.recorded(asked.query_id)
    assert partner.unrecorded() == ([], [])
    assert partner.answer(waiting, 0.0, NOW + 3).query_id == waiting.query_id
    assert [a["query"]["query_id"] for a in partner.unrecorded()[0]] == [waiting.query_id]


def test_a_cut_off_near_an_earlier_ones_is_refused_naming_it(trained, users_file, tmp_path):
    partner, model = partner_for(tmp_path / "a", trained, users_file)
    first = ask(partner, query(model, 600), 0.0, NOW)
    second = query(model, 603)
    with pytest.raises(DeniedError, match=f"cut-off 603 is within 10 points of query {first.query_id}'s \\(600\\)"):
        partner.answer(second, 0.0, NOW + 1)
    assert not attack(partner.answered(second.query_id) is not None)
    assert partner.pending_spent(NOW + 1) == 0 and partner.unrecorded() == ([], [])   # a refusal spends nothing
    with pytest.raises(DeniedError, match=f"query {first.query_id}'s"):       # other segment columns: still near
        partner.answer(query(model, 603, ["region"]), 0.0, NOW + 2)
    assert ask(partner, query(model, 600, ["interest"]), 0.0, NOW + 3).total > 0     # the same cut-off: a repeat
    assert ask(partner, query(model, 603, unseen_only=True), 0.0, NOW + 4).total > 0  # other users: unseen only
    assert ask(partner, query(model, 610), 0.0, NOW + 5).total > 0             # the gap away: allowed
    other = assemble(model.partner_model, dataclasses.replace(model.part, intercept=model.part.intercept + 0.5))
    assert partner.accept_model(other.part, other.partner_model).digest() != model.digest()
    assert ask(partner, query(other, 603), 0.0, NOW + 6).model == other.digest()   # another model: allowed
    assert partner.answer(second, 0.0, NOW + 31 * DAY_MS).total > 0            # the earlier ones have left the window


def test_refusals_do_not_depend_on_the_users(trained, users_file, tmp_path):
    """The oracle: bisecting a cut-off with tiny ε, a refusal that looked at the users would say whether anyone
    scores between two cut-offs. Two user bases that differ in one user (alone at their score) get the same
    refusals, word for word, and tiny ε is refused outright."""
    center, host = trained["binned"]
    scores, frame = reference_points(center, host, users_file)
    values, counts = np.unique(scores, return_counts=True)
    alone = next(i for i in range(len(values) // 2, len(values)) if counts[i] == 1)
    target, above = float(values[alone]), float(values[alone + 1])             # one user scores target, none between
    without = tmp_path / "without.csv"
    frame[scores != target].to_csv(without, index=False)
    partners = [partner_for(tmp_path / "with", trained, users_file)[0],
                partner_for(tmp_path / "without", trained, without)[0]]
    model = audience_model(trained)
    schedule = [(target - 40, 0.0001), (target - 40, 0.1), (target + 40, 0.1), (target, 0.1), (above, 0.1),
                (target + 5, 0.1), (target - 20, 0.1), (target - 15, 0.1), (target, 1e-6), (target, 0.1)]
    schedule += [(target + 60 + 10 * k, 0.1) for k in range(30)]              # the budget buys 30 queries of 0.1
    outcomes = []
    for number, (cut_off, epsilon) in enumerate(schedule):
        asked = AudienceQuery(f"q{number:031x}", model.digest(), cut_off, (), epsilon, False)
        seen = []
        for partner in partners:
            try:
                ask(partner, asked, 0.0, NOW + number)
                seen.append("answered")
            except DeniedError as refusal:
                seen.append(str(refusal))
        assert seen[0] == seen[1], f"query {number} at {cut_off}: {seen}"
        outcomes.append(seen[0])
    assert "less than the 0.1" in outcomes[0] and "less than the 0.1" in outcomes[8]
    assert outcomes[1:4] == ["answered"] * 3
    assert "within 10 points of query" in outcomes[4]                          # above - target < 10: refused for both
    assert "within 10 points" in outcomes[5] and "within 10 points" in outcomes[7]
    assert outcomes[6] == outcomes[9] == "answered"
    assert outcomes.count("answered") == 30 and "over the budget of 3" in outcomes[-1]
    count("oracle queries tried", len(schedule))


def test_an_identical_query_is_answered_again_and_pays_again(trained, users_file, tmp_path):
    partner, model = partner_for(tmp_path, trained, users_file)
    first = ask(partner, query(model, 600, ["interest"]), 0.0, NOW)
    again = ask(partner, query(model, 600, ["interest"]), 0.0, NOW + 1)
    assert (first.spent, again.spent) == (0.5, 1.0) and first.query_id != again.query_id
    assert [c.segment for c in first.cells] == [c.segment for c in again.cells]
    assert [c.count for c in first.cells] != [c.count for c in again.cells]    # fresh noise each time
    retry = partner.answered(first.query_id)
    asked = AudienceQuery(first.query_id, model.digest(), 600.0, ("interest",), 0.5, False)
    assert partner.answer(asked, 0.0, NOW + 2) == retry == first                # a retry: the same answer, no new cost
    assert partner.answer(query(model, 600), 0.0, NOW + 3).spent == 1.5
    with pytest.raises(ProtocolError, match="already used for another query"):
        partner.answer(dataclasses.replace(asked, min_points=601.0), 0.0, NOW + 3)


# -- campaigns ------------------------------------------------------------------------------------------------

def test_a_campaign_writes_exactly_the_audience_into_an_owner_only_file(trained, users_file, tmp_path):
    partner, model = partner_for(tmp_path, trained, users_file)
    with pytest.raises(ProtocolError, match="never answered query"):
        partner.campaign(new_query_id(), NOW)
    answer = partner.answer(query(model, 600, ["interest"], unseen_only=True), 0.0, NOW)
    campaign = partner.campaign(answer.query_id, NOW + 1)
    assert CAMPAIGN_ID.fullmatch(campaign.campaign_id) and campaign.members == answer.total > 0
    assert campaign.audience_file == tmp_path / "campaigns" / f"{campaign.campaign_id}.csv"
    assert stat.S_IMODE(campaign.audience_file.stat().st_mode) == 0o600
    center, host = trained["binned"]
    scores, frame = reference_points(center, host, users_file)
    expected = frame["id"][(scores >= 600) & ~frame["id"].isin(seen_ids()).to_numpy()]
    written = pd.read_csv(campaign.audience_file, dtype=str, keep_default_na=False)
    assert list(written.columns) == ["id"] and written["id"].tolist() == sorted(expected, key=str.casefold)
    assert any(i.startswith("U") for i in written["id"])          # as the partner's file writes them
    assert len(written) > 100 and not set(written["id"]) & seen_ids()


def test_a_campaign_is_retried_until_the_chain_holds_it(trained, users_file, tmp_path):
    partner, model = partner_for(tmp_path, trained, users_file)
    answer = ask(partner, query(model, 600, ["interest"]), 0.0, NOW)
    campaign = partner.campaign(answer.query_id, NOW + 1)
    written = campaign.audience_file.read_bytes()
    assert partner.unrecorded() == ([], [{"campaign_id": campaign.campaign_id, "query_id": answer.query_id,
                                          "members": answer.total, "time_ms": NOW + 1}])
    assert partner.campaign(answer.query_id, NOW + 2) == campaign               # a retry: the same campaign
    assert partner.campaigns() == [campaign] and campaign.audience_file.read_bytes() == written
    assert partner.unrecorded()[1][0]["time_ms"] == NOW + 1                     # made once, at its first time
    partner.campaign_recorded("c" + "0" * 31)                                   # unknown: ignored
    partner.campaign_recorded(campaign.campaign_id)
    assert partner.unrecorded() == ([], [])
    with pytest.raises(ProtocolError, match=f"query {answer.query_id} already has campaign {campaign.campaign_id}"):
        partner.campaign(answer.query_id, NOW + 3)


def test_a_campaign_of_an_audience_below_the_minimum_cell_is_refused(trained, users_file, tmp_path):
    partner, model = partner_for(tmp_path, trained, users_file)
    answer = partner.answer(query(model, 849.0), 0.0, NOW)   # nobody scores that high
    assert answer.cells[0].count is None and answer.total == 0
    with pytest.raises(DeniedError, match="no audience"):
        partner.campaign(answer.query_id, NOW + 1)


def test_the_record_survives_a_restart(trained, users_file, tmp_path):
    partner, model = partner_for(tmp_path, trained, users_file)
    answer = ask(partner, query(model, 600), 0.0, NOW)
    kept = partner.answer(query(model, 600), 0.0, NOW + 1)                     # not on the chain yet
    recorded = partner.campaign(answer.query_id, NOW + 2)
    partner.campaign_recorded(recorded.campaign_id)
    pending = partner.campaign(kept.query_id, NOW + 3)                          # not on the chain yet
    before = partner.unrecorded()
    partner.close()
    again, _ = partner_for(tmp_path, trained, users_file)
    assert again.answered(answer.query_id) == answer and again.model(model.digest()).digest() == model.digest()
    assert again.answered_at(answer.query_id) == NOW and again.answered_at(kept.query_id) == NOW + 1
    assert again.pending_spent(NOW + 3) == 0.5                      # the recorded one is the chain's to count
    assert again.unrecorded() == before and [a["query"]["query_id"] for a in before[0]] == [kept.query_id]
    assert [c["campaign_id"] for c in before[1]] == [pending.campaign_id]
    assert again.campaigns() == [recorded, pending]
    with pytest.raises(ProtocolError, match=f"already has campaign {recorded.campaign_id}"):
        again.campaign(answer.query_id, NOW + 4)
    assert again.campaign(kept.query_id, NOW + 4) == pending                    # still a retry after the restart
    with pytest.raises(DeniedError, match=f"query {kept.query_id} answered at .* is not on the audience chain yet"):
        again.answer(query(model, 700), 0.0, NOW + 5)
    again.recorded(kept.query_id)
    assert again.answer(query(model, 700), 0.0, NOW + 5).spent == 1.5          # its own record: 0.5 + 0.5 + 0.5
    (tmp_path / "models" / f"{model.digest()}.json").write_text(
        model.to_json().replace(repr(model.part.intercept), repr(model.part.intercept + 1)))
    fresh = AudiencePartner("host", "center", POLICY, tmp_path, users=lambda m: None, seen_ids=lambda m: set())
    with pytest.raises(ProtocolError, match="is not that model"):
        fresh.model(model.digest())


def test_a_part_for_another_pair_is_refused(trained, users_file, tmp_path):
    partner, model = partner_for(tmp_path, trained, users_file)
    center, host = trained["binned"]
    with pytest.raises(ProtocolError, match="serving 'center'"):
        partner.accept_model(dataclasses.replace(model.part, card_center="other"), host)
