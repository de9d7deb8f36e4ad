"""The protocol driven in one process (same sessions and messages as the daemons, no network),
compared with plaintext numpy on the same data."""
from __future__ import annotations

import json
from pathlib import Path

import gmpy2
import numpy as np
import pytest

from fedscore.job_file import load_job
from fedscore.crypto.fixedpoint import SCORE_BITS
from fedscore.errors import ProtocolError
from fedscore.model import metrics
from fedscore.model.model_file import PartyModel
from fedscore.model.taylor import fit_gradient_descent
from fedscore.job import Step
from fedscore.protocol.training.simulation import build_consortium, load_tables, simulate
from fedscore.protocol.training.driver import run_training

from conftest import breast_parties, split_three_ways, write_job
from faults import attack


def consortium_for(folder: Path, parties: list[dict], keypair, pool, **job):
    spec, base = load_job(write_job(folder, parties, **job))
    return build_consortium(spec, load_tables(spec, base), pool, keypair)


def reference(consortium, *, quantised: bool):
    """Numpy gradient descent on the parties' own standardised training matrices, from the parties' own start
    (the card center's secret random weights, the partners' zeros)."""
    spec = consortium.coordinator.spec
    sessions = [consortium.card_center, *consortium.partners.values()]
    return fit_gradient_descent(
        [s.train_matrix for s in sessions],
        consortium.card_center.train_labels,
        epochs=spec.epochs, learning_rate=spec.learning_rate, l2=spec.l2, momentum=spec.momentum,
        batch_size=spec.batch_size, seed=spec.seed,
        unpenalised=[s.penalised == 0 for s in sessions],
        gradient_blocks=[s.quantised / s.quantisation for s in sessions] if quantised else None,
        start=[s.start for s in sessions],
    )


FAST_PATHS = [
    {},
    {"precompute_epochs": 2},                                   # obfuscators made in advance, then inline
    {"obfuscation": "standard", "precompute_epochs": 1},        # r^n with a full exponent
    {"refill_obfuscators": True},                               # made in the background while training
]


@pytest.mark.parametrize("fast_path", [*FAST_PATHS, {"momentum": 0.7}],
                         ids=["inline", "precomputed", "standard", "refilled", "momentum"])
def test_three_parties_match_numpy_gradient_descent(breast_folder, keypair, inline_pool, fast_path):
    consortium = consortium_for(
        breast_folder, split_three_ways(breast_folder), keypair, inline_pool,
        epochs=4, batch_size=100, l2=0.05, learning_rate=0.3, validation=0.25, **fast_path,
    )
    result = simulate(consortium)
    sessions = [consortium.card_center, *consortium.partners.values()]
    federated = [s.weights for s in sessions]

    exact, exact_losses = reference(consortium, quantised=True)
    for ours, theirs in zip(federated, exact):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)
    np.testing.assert_allclose(result.losses, exact_losses, rtol=0, atol=1e-6)

    floating, _ = reference(consortium, quantised=False)  # the 16-bit feature quantisation is all that differs
    for ours, theirs in zip(federated, floating):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-3 * np.max(np.abs(theirs)))
    # 427 training rows in batches of 100: 100, 100, 100 and 127 (the short remainder joins the last batch)
    assert result.steps == 4 * 4 and consortium.card_center.smallest_batch() == 100


def test_evaluation_equals_plaintext_scores(breast_folder, keypair, inline_pool):
    consortium = consortium_for(breast_folder, breast_parties(), keypair, inline_pool, epochs=3, validation=0.3)
    result = simulate(consortium)
    center, host = consortium.card_center, consortium.partners["host"]
    scores = center.matrix @ center.weights + host.matrix @ host.weights
    labels = center.labels
    assert result.metrics["auc"] == pytest.approx(metrics.auc(labels[center.train_rows], scores[center.train_rows]), abs=1e-9)
    assert result.metrics["test_auc"] == pytest.approx(metrics.auc(labels[center.test_rows], scores[center.test_rows]), abs=1e-9)
    assert result.metrics["test_ks"] == pytest.approx(metrics.ks(labels[center.test_rows], scores[center.test_rows]), abs=1e-9)
    assert 0.5 < result.metrics["local_only_test_auc"] < 1.0


def test_early_stopping_on_loss_change(breast_folder, keypair, inline_pool):
    consortium = consortium_for(breast_folder, breast_parties(), keypair, inline_pool, epochs=20, early_stop_tol=0.5)
    result = simulate(consortium)
    assert result.stopped_early and len(result.losses) == 2


class Recorder:
    """Stands in for a party handle and keeps every ciphertext that crosses it, by sender."""

    def __init__(self, name: str, target, sent: dict[str, list]):
        self.name, self.target, self.sent = name, target, sent

    def __getattr__(self, attribute):
        method = getattr(self.target, attribute)

        def call(*args):
            if attribute == "receive_residual":           # card center -> partner
                self.sent.setdefault("card_center", []).extend(args[1])
            result = method(*args)
            if attribute in ("encrypted_partial", "masked_gradient"):
                self.sent.setdefault(self.name, []).extend(result)
            elif attribute == "encrypted_loss_term":
                self.sent.setdefault(self.name, []).append(result)
            elif attribute == "loss_share":
                self.sent.setdefault(self.name, []).append(result[0])
            return result

        return call


@pytest.mark.parametrize("fast_path", FAST_PATHS, ids=["inline", "precomputed", "standard", "refilled"])
def test_every_ciphertext_that_leaves_a_party_is_fresh(breast_folder, keypair, inline_pool, fast_path):
    consortium = consortium_for(
        breast_folder, split_three_ways(breast_folder), keypair, inline_pool, epochs=2, batch_size=150, **fast_path
    )
    sent: dict[str, list] = {}
    center = consortium.card_center
    center.partners = {name: Recorder(name, p, sent) for name, p in consortium.partners.items()}
    for session in (center, *consortium.partners.values()):
        session.prepare_obfuscators()
    run_training(
        consortium.coordinator,
        ("card_center", Recorder("card_center", center, sent)),
        {name: Recorder(name, p, sent) for name, p in consortium.partners.items()},
        train_rows=len(center.train_rows), total_rows=center.table.rows,
    )
    n = keypair[0].n
    assert set(sent) == {"card_center", "partner_a", "partner_b"}
    for sender, ciphertexts in sent.items():
        assert len(ciphertexts) > 500
        assert len(set(ciphertexts)) == len(ciphertexts), f"{sender} sent a ciphertext twice"
        # (1 + m·n) mod n² is a ciphertext without randomness: anyone reads m = (c − 1)/n
        assert not any(c % n == 1 for c in ciphertexts), f"{sender} sent a ciphertext without randomness"
    sessions = (center, *consortium.partners.values())
    for session in sessions:
        session.reserve.stop()
    if fast_path.get("refill_obfuscators"):   # the background did make some of what was sent
        assert all(session.reserve.made_in_background > 0 for session in sessions)


def test_partner_cannot_strip_its_own_part_from_the_residual(breast_folder, keypair, inline_pool):
    """FATE's leak: the residual built on a partner's own ciphertext, not re-randomised, lets the
    partner divide its ciphertext out and read the label-holder's part. Here it reads nothing."""
    consortium = consortium_for(breast_folder, breast_parties(), keypair, inline_pool, epochs=1)
    center, host = consortium.card_center, consortium.partners["host"]
    public = keypair[0]
    n, nsquare = public.n, public.nsquare
    step = Step(0, 0)

    center.partners = {}  # drive the exchange by hand to keep the partner's own ciphertexts
    own_ciphertexts = host.encrypted_partial(step)
    rows = center.step_rows(step)
    own_part = center.own_residual_part(rows)
    received = center.residual_shares(center.pool.encrypt(public, own_part), {"host": own_ciphertexts})["host"]

    labels = center.train_labels[rows]

    def stripped(residual):
        """What the partner gets by removing its own ciphertext: (c − 1)/n if it is readable."""
        leaked = []
        for c, mine in zip(residual, own_ciphertexts):
            q = c * gmpy2.invert(mine, nsquare) % nsquare
            leaked.append(int((q - 1) // n) if q % n == 1 else None)
        return leaked

    assert not attack(succeeded=any(value is not None for value in stripped(received)))

    # Control: the same residual built FATE-style, the card center's part added without randomness.
    naive = [c * (1 + (part % n) * n) % nsquare for c, part in zip(own_ciphertexts, own_part)]
    leaked = stripped(naive)
    recovered = [v - (n if v > n // 2 else 0) for v in leaked]   # = U_C − (4y − 2)·2^P, the card center's part
    assert recovered == own_part                                 # the attack reads it exactly from the naive form
    u_center = center.partial_scores(rows)                       # U_C alone (secret start): the rest is the labels
    guessed_labels = [1 if v / 2**SCORE_BITS - u < 0 else 0 for v, u in zip(recovered, u_center)]
    assert guessed_labels == labels.tolist()


def test_messages_out_of_order_are_refused(breast_folder, keypair, inline_pool):
    consortium = consortium_for(breast_folder, breast_parties(), keypair, inline_pool, epochs=2)
    host = consortium.partners["host"]
    with pytest.raises(ProtocolError, match="current step is none"):
        host.masked_gradient(Step(0, 0))
    host.encrypted_partial(Step(0, 0))
    with pytest.raises(ProtocolError, match="before its residual arrived"):
        host.masked_gradient(Step(0, 0))
    with pytest.raises(ProtocolError, match="residual for epoch 1 batch 1 has 3 values"):
        host.receive_residual(Step(0, 0), host.encrypted_partial.__self__.pool.encrypt(keypair[0], [1, 2, 3]))
    with pytest.raises(ProtocolError, match="no epoch 9 batch 1"):
        host.encrypted_partial(Step(8, 0))
    with pytest.raises(ProtocolError, match="started before epoch 1 batch 1 finished"):
        host.encrypted_partial(Step(1, 0))


def test_coordinator_refuses_a_gradient_of_the_wrong_length(breast_folder, keypair, inline_pool):
    consortium = consortium_for(breast_folder, breast_parties(), keypair, inline_pool)
    columns = consortium.partners["host"].weights.size
    too_many = inline_pool.encrypt(keypair[0], [0] * (columns + 1))
    with pytest.raises(ProtocolError, match=f"party 'host' sent {columns + 1} gradient values; it has {columns} columns"):
        consortium.coordinator.decrypt_masked_gradient("host", too_many, Step(0, 0))


def test_coordinator_refuses_a_loss_below_the_taylor_minimum(breast_folder, keypair, inline_pool):
    """A card center sending another ciphertext as [[Z]] (here, a partner's negative partial score) has it
    refused, not decrypted onto the chain; an offset substitute would pass (docs/privacy.md says so)."""
    consortium = consortium_for(breast_folder, breast_parties(), keypair, inline_pool)
    coordinator = consortium.coordinator
    partial = -3 * 2**SCORE_BITS   # one applicant's partial score of −3, scaled as the protocol scales it
    with pytest.raises(ProtocolError, match="below the Taylor loss's minimum"):
        coordinator.decrypt_loss(inline_pool.encrypt(keypair[0], [partial])[0], 64, Step(0, 0))
    honest = coordinator.decrypt_loss(inline_pool.encrypt(keypair[0], [4 * 64 * 2**SCORE_BITS])[0], 64, Step(0, 1))
    assert honest == pytest.approx(np.log(2) - 0.5 + 1.0)


def test_the_card_center_starts_at_a_secret_random_point_that_its_checkpoint_and_model_keep(breast_folder, keypair, inline_pool):
    """Its start is drawn from the operating system per job (not from the job spec every party sees), and a
    restarted card center resumes from the start it drew: its checkpoint and its model file hold it."""
    first = consortium_for(breast_folder, breast_parties(), keypair, inline_pool, epochs=1)
    again = consortium_for(breast_folder, breast_parties(), keypair, inline_pool, epochs=1)
    center, host = first.card_center, first.partners["host"]
    assert not np.array_equal(center.start, again.card_center.start)          # same job, another start
    assert np.std(center.train_matrix @ center.start) == pytest.approx(1.0)   # one logit over the training rows
    assert not np.any(host.start) and not np.any(host.weights)

    saved = json.loads(json.dumps(center.checkpoint()))   # as the checkpoint file holds it
    again.card_center.restore(saved)
    np.testing.assert_array_equal(again.card_center.start, center.start)
    np.testing.assert_array_equal(again.card_center.weights, center.start)
    simulate(first)
    model = center.model()
    assert model.start == center.start.tolist() and model.start[-1] != 0       # the intercept's start, last
    assert PartyModel.from_json(model.to_json()).start == model.start
    assert host.model().start is None
