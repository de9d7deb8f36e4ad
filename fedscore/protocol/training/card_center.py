"""The card center's steps: it holds the labels and assembles the encrypted residual.

Per step it encrypts its own part U_C − Y with fresh randomness, gathers every
partner's [[U_k]], and sends partner k the product of its own ciphertext and
the other partners' ciphertexts, i.e. [[D − U_k]]. Nobody receives a
ciphertext built on their own, so nobody can divide their own randomness out
and read what is left. The card center keeps [[ΣU]] for its own gradient.

It also computes [[T]] with T = Σ(1 − 2y)·D, its share of the loss, using
only multiplications of ciphertexts, and at the end adds up the masked
partner scores for evaluation.
"""
from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from gmpy2 import mpz
from scipy import sparse
from sklearn.linear_model import LogisticRegression

from fedscore.crypto import paillier
from fedscore.crypto.fixedpoint import EVAL_SCORE_BITS, SCORE_BITS, encode_scores
from fedscore.errors import ProtocolError
from fedscore.model import curves, metrics
from fedscore.model.calibration import IDENTITY, Calibration, fit_calibration, sigmoid
from fedscore.model.validation import points_histogram, validation_summary
from fedscore.model.attributes import scorecard_rows
from fedscore.model.model_file import PartyModel
from fedscore.monitoring import baseline as monitoring
from fedscore.protocol.ports import PartnerTrainingHandle
from fedscore.protocol.scoring.scorecard import ScoringPolicy, credit_limit, points
from fedscore.protocol.training import batch_rule
from fedscore.protocol.training import bin_statistics as binstats
from fedscore.protocol.training.bin_statistics import BinSums
from fedscore.protocol.training.fanout import call_each
from fedscore.protocol.training.session import PartySession, one_message_at_a_time
from fedscore.protocol.training.start import secret_start
from fedscore.job import Step

log = logging.getLogger("fedscore.training")


class CardCenterSession(PartySession):
    role = "card_center"
    has_intercept = True

    def __init__(self, *args, partners: Mapping[str, PartnerTrainingHandle], **kwargs):
        super().__init__(*args, **kwargs)
        self.partners = dict(partners)
        labels = self.table.labels
        if labels is None:
            raise ProtocolError(f"{self.party}: the card center's table has no labels")
        self.labels = labels.astype(np.float64)
        self.train_labels = self.labels[self.train_rows]
        self._loss_part: mpz | None = None
        self.evaluation: dict | None = None   # the last evaluate()'s metrics and curves, for this party's own page
        self.training_scores: np.ndarray | None = None   # the training rows' log-odds at evaluation: the monitoring baseline
        self.calibration: Calibration | None = None   # fitted at evaluation, when the job calibrates
        self.policy = ScoringPolicy()   # decisions and limits in the report: the scoring policy (the default unless set)

    def check_batch(self, min_batch_rows: int = 0, who: str | None = None) -> None:
        """The rule every party applies, and, with no columns of its own (labels only), whole-set steps only
        (fedscore.protocol.training.batch_rule.check_labels_only)."""
        super().check_batch(min_batch_rows, who)
        if self.weights.size == 1:   # the intercept alone
            batch_rule.check_labels_only(who or f"party {self.party!r}", self.smallest_batch(), len(self.train_rows))

    def model_features(self) -> list[str]:
        """Its columns without the protected ones, unless the job keeps them (never as reasons)."""
        if self.spec.keep_protected:
            return list(self.table.feature_names)
        return [name for name in self.table.feature_names if name not in self.spec.protected]

    def starting_weights(self) -> np.ndarray:
        """Secret random weights and intercept (fedscore.protocol.training.start): at zero, a partner's first
        gradient would give it the labels of the batch."""
        return secret_start(self.encoding.training_rows())

    def protected_columns(self) -> dict[str, np.ndarray]:
        """The protected columns it holds, for the fairness table (its own data; never sent)."""
        return {name: self.table.column(name) for name in self.spec.protected if name in self.table.feature_names}

    def own_residual_part(self, rows: np.ndarray) -> list[int]:
        """U_C − Y for the rows: the card center's plaintext share of D."""
        labels = self.train_labels[rows]
        scores = encode_scores(self.partial_scores(rows))
        return [int(u) - (int(4 * y - 2) << SCORE_BITS) for u, y in zip(scores.tolist(), labels.tolist())]

    @one_message_at_a_time
    def forward_step(self, step: Step) -> None:
        """Gather [[U_k]], send each partner [[D − U_k]], keep [[ΣU]] and [[T]]."""
        rows = self.step_rows(step)
        own = self.own_residual_part(rows)
        state = self._begin(step, own_part=own)
        key = self.public_key
        with ThreadPoolExecutor(max_workers=1) as executor:
            partial_calls = executor.submit(
                call_each, self.partners, lambda name, p: p.encrypted_partial(step), "partner"
            )
            encrypted_own = self.encrypt_vector(own)
            partials: dict[str, list[mpz]] = partial_calls.result()
        for name, values in partials.items():
            if len(values) != len(rows):
                raise ProtocolError(f"partner {name!r}: sent {len(values)} partial scores for {step}, the batch has {len(rows)} rows")
        shares = self.residual_shares(encrypted_own, partials)
        width = key.ciphertext_bytes
        for name in partials:
            self.record(step, f"partial/{name}", partials[name], width)
            self.record(step, f"residual/{name}", shares[name], width)
        call_each(self.partners, lambda name, p: p.receive_residual(step, shares[name]), "partner")
        combined = paillier.add_elementwise(self.public_key, list(partials.values()))
        state.encrypted_rest = combined
        self._loss_part = self.encrypted_label_term(combined, own, rows)

    def residual_shares(self, encrypted_own: list[mpz], partials: Mapping[str, list[mpz]]) -> dict[str, list[mpz]]:
        """For each partner k: [[U_C − Y]]·Π_{j≠k}[[U_j]] = [[D − U_k]]."""
        key = self.public_key
        return {
            name: paillier.add_elementwise(key, [encrypted_own, *(v for other, v in partials.items() if other != name)])
            for name in partials
        }

    def encrypted_label_term(self, encrypted_sum: list[mpz], own: list[int], rows: np.ndarray) -> mpz:
        """[[T]], T = Σ(1 − 2y)·D: Π_{y=0}[[ΣU]]·(Π_{y=1}[[ΣU]])⁻¹ times the plaintext part."""
        key = self.public_key
        labels = self.train_labels[rows]
        goods = paillier.add_all(key, (c for c, y in zip(encrypted_sum, labels) if y == 0))
        bads = paillier.add_all(key, (c for c, y in zip(encrypted_sum, labels) if y == 1))
        plain = sum(o if y == 0 else -o for o, y in zip(own, labels))
        return paillier.add_plain(key, paillier.add(key, goods, paillier.negate(key, bads)), plain)

    @one_message_at_a_time
    def loss_share(self, step: Step) -> tuple[mpz, dict[str, str]]:
        """[[Z]] = [[T + Σ_p loss share_p]], re-randomised: the coordinator decrypts only the sum.

        Also returns this step's message digests as the card center saw them, for the audit chain.
        """
        state = self._current(step, needs="applied")
        terms = call_each(self.partners, lambda name, p: p.encrypted_loss_term(step), "partner")
        key = self.public_key
        for name, term in terms.items():
            self.record(step, f"loss_term/{name}", [term], key.ciphertext_bytes)
        total = paillier.add_plain(key, paillier.add_all(key, [self._loss_part, *terms.values()]), state.loss_term)
        share = paillier.rerandomise(key, total, self.fresh_obfuscators(1)[0])
        self.record(step, "loss_share", [share], key.ciphertext_bytes)
        return share, self.step_digests(step)

    @one_message_at_a_time
    def evaluate(self, mask_sum: np.ndarray) -> dict:
        """Metrics and curves of the federated model and of a card-center-only model; kept for this party's page."""
        masked = call_each(self.partners, lambda name, p: p.masked_scores(), "partner")
        total = np.zeros(self.table.rows, dtype=np.uint64)
        for name, values in masked.items():
            if len(values) != self.table.rows:
                raise ProtocolError(f"partner {name!r}: sent {len(values)} scores, expected {self.table.rows}")
            total += np.asarray(values, dtype=np.uint64)
        if len(mask_sum) != self.table.rows:
            raise ProtocolError(f"mask sum has {len(mask_sum)} words, expected {self.table.rows}")
        total -= np.asarray(mask_sum, dtype=np.uint64)
        partner_scores = total.view(np.int64) / 2.0**EVAL_SCORE_BITS
        own_scores = self.encoding.scores(self.weights)
        scores = own_scores + partner_scores
        labels = self.labels[self.train_rows]
        self.calibration = fit_calibration(scores[self.train_rows], labels) if self.spec.calibrate else IDENTITY
        self.evaluation = self.metrics(own_scores, partner_scores)
        self.training_scores = scores[self.train_rows]
        return self.evaluation

    def monitoring_baseline(self, answer_rates: Mapping[str, float]) -> dict | None:
        """The training population as the monitor compares served applicants with (fedscore.monitoring.baseline):
        calibrated scores, own features' bin shares, partners' expected answer rates. None before evaluation."""
        if self.training_scores is None:
            return None
        log_odds = (self.calibration or IDENTITY).log_odds(self.training_scores)
        if self.binner is not None:
            counts, _ = self.own_bin_counts()
            features = {bins.feature: monitoring.binned_feature(bins.labels, counts[offset: offset + bins.size])
                        for bins, offset in zip(self.binner.features, self.binner.offsets)}
        else:
            features = {name: monitoring.valued_feature(self.table.column(name)[self.train_rows]) for name in self.features}
        return monitoring.training_baseline(self.job_id, log_odds, features, answer_rates)

    def model(self) -> PartyModel:
        """Its model file's content, with the recalibration and the protected columns."""
        model = super().model()
        return dataclasses.replace(
            model,
            calibration=None if self.calibration is None else self.calibration.to_json(),
            protected=list(self.spec.protected),
            start=[float(w) for w in self.start],
        )

    def metrics(self, own_scores: np.ndarray, partner_scores: np.ndarray) -> dict:
        """AUC and KS of the federated model and of a card-center-only model, train and held out, and the
        report's curves (fedscore.model.curves: aggregates only)."""
        scores = own_scores + partner_scores
        train, test, labels = self.train_rows, self.test_rows, self.labels
        result = {
            "auc": metrics.auc(labels[train], scores[train]),
            "ks": metrics.ks(labels[train], scores[train]),
        }
        local_scores = self.own_model_scores(train)
        result["local_only_auc"] = metrics.auc(labels[train], local_scores[train])
        result["local_only_ks"] = metrics.ks(labels[train], local_scores[train])
        held_out = len(test) > 0 and len(set(labels[test].tolist())) == 2
        if held_out:
            result["test_auc"] = metrics.auc(labels[test], scores[test])
            result["test_ks"] = metrics.ks(labels[test], scores[test])
            result["local_only_test_auc"] = metrics.auc(labels[test], local_scores[test])
            result["local_only_test_ks"] = metrics.ks(labels[test], local_scores[test])
        result["curves"] = self.curves(scores, local_scores, partner_scores, held_out)
        result.update(self.validation(scores, test if held_out else train))
        result["curves"]["points_histogram"] = result.pop("points_histogram")
        return result

    def own_model_scores(self, train: np.ndarray) -> np.ndarray:
        """The baseline "card center alone": a plaintext logistic regression on its own columns; with none (it
        brings labels only, as for an audience model) the base rate's log-odds, the same for every row."""
        own = self.own_columns()
        if own.shape[1] == 0:
            rate = float(np.clip(self.labels[train].mean(), 1e-6, 1 - 1e-6))
            return np.full(len(self.labels), np.log(rate / (1 - rate)))
        return LogisticRegression(max_iter=1000).fit(own[train], self.labels[train]).decision_function(own)

    def own_columns(self):
        """Its matrix without the intercept column, for the plaintext baseline: with bins a sparse 0/1 matrix
        (a byte per value kept, not 8 per bin), else its standardised columns."""
        encoding = self.encoding
        if not encoding.binned or encoding.codes.shape[1] == 0:
            return self.matrix[:, :-1]
        rows, features = encoding.codes.shape
        columns = (encoding.codes.astype(np.int32) + encoding.offsets.astype(np.int32)[None, :]).ravel()
        starts = np.arange(0, rows * features + 1, features, dtype=np.int64)
        return sparse.csr_matrix((np.ones(rows * features), columns, starts), shape=(rows, encoding.width - 1))

    def validation(self, scores: np.ndarray, rows: np.ndarray) -> dict:
        """What a bank's model validation reads, on ``rows`` (the held-out rows when there are any): the
        calibrated probabilities' Brier, log-loss, mean against the observed rate and calibration table; gains;
        the decisions and limits the scoring policy would give; fairness by protected attribute (its own
        columns); the attributes' points and information value."""
        calibration = self.calibration or IDENTITY
        policy = self.policy
        log_odds = calibration.log_odds(scores[rows])
        pd = sigmoid(log_odds)
        score_points = np.array([points(u, policy) for u in log_odds.tolist()])
        base = self._limit_base()[rows]
        limits = np.array([credit_limit(p, b, policy) for p, b in zip(score_points.tolist(), base.tolist())])
        groups = {name: values[rows] for name, values in self.protected_columns().items()}
        labels = self.labels[rows]
        result = validation_summary(labels, pd, score_points, limits, policy.approve_at, policy.review_at, groups)
        result["calibration_fit"] = calibration.to_json() if self.spec.calibrate else None
        result["points_histogram"] = points_histogram(labels, score_points)
        result["scorecard"] = self.scorecard() if self.binner is not None else None
        result["iv"] = self.iv
        return result

    def own_bin_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(training rows, bad rows) per bin of its own attributes, in its weights' order."""
        rows, bads = self.encoding.bin_counts(self.train_labels)
        return rows[:-1], np.rint(bads[:-1]).astype(np.int64)   # without the intercept

    def scorecard(self) -> list[dict]:
        """Its own scorecard table: each attribute's training count, bad rate, WOE, weight and points."""
        rows, bads = self.own_bin_counts()
        return scorecard_rows(self.model(), self.policy, rows, bads)

    def _limit_base(self) -> np.ndarray:
        """The policy's limit basis per row (e.g. LIMIT_BAL), zero when it holds none: no limit suggested."""
        name = self.policy.limit_basis
        if name not in self.table.feature_names or name in self.table.text:
            return np.zeros(self.table.rows)
        values = self.table.column(name)
        return np.where(np.isfinite(values), values, 0.0)

    def feature_weights(self) -> list[float]:
        """One number per feature for the report's bar chart: its weight, or with bins the spread of its bin weights."""
        if self.binner is None:
            return [float(w) for w in self.weights[: len(self.features)]]
        return [float(block.max() - block.min()) for block in self.binner.weight_blocks(self.weights[:-1])]

    def curves(self, scores: np.ndarray, local_scores: np.ndarray, partner_scores: np.ndarray, held_out: bool) -> dict:
        """What the HTML report draws, as counts and shares over groups of rows: the curves describe the
        held-out rows when there are any, else the training rows. Partners appear only as one total."""
        train, test = self.train_rows, self.test_rows
        rows = test if held_out else train
        labels = self.labels[rows]
        features = list(self.features)
        own_parts = self.feature_parts(train)
        shares = curves.variance_shares([*own_parts, partner_scores[train]])
        psi = None
        if len(test) and len(train) >= curves.PSI_BINS:
            stability = curves.population_stability(scores[train], scores[test])
            psi = {
                "edges": [round(float(e), 3) for e in curves.probability(stability["edges"])],   # as P(default), rounded
                "training": [round(float(v), 6) for v in stability["expected"]],
                "held_out": [round(float(v), 6) for v in stability["actual"]],
                "terms": [round(float(v), 6) for v in stability["terms"]],
                "total": round(stability["total"], 6),
            }
        return {
            "rows": "held-out" if held_out else "training",
            "row_count": int(len(rows)),
            "bads": int(labels.sum()),
            "federated": curves.rank_curve(labels, scores[rows]).to_json(),
            "local_only": curves.rank_curve(labels, local_scores[rows]).to_json(),
            "score_histogram": curves.score_histogram(labels, scores[rows]),
            "psi": psi,
            "card_center": {
                "party": self.party,
                "features": features,
                # binned: each feature's spread of bin weights (how far it can move the log-odds)
                "weights": self.feature_weights(),
                "intercept": float(self.weights[-1]),
            },
            "variance_shares": {
                "features": [round(s, 6) for s in shares[:-1]],   # in the order of card_center.features
                "partners": round(shares[-1], 6),
                "partner_count": len(self.partners),
            },
        }

    # -- bin statistics and feature selection, before the first step (fedscore.protocol.training.bin_statistics)

    iv: dict[str, dict[str, float]] | None = None          # party -> feature -> information value, every feature binned
    bin_statistics: dict[str, list[dict]] | None = None    # party -> [{feature, bin, label, rows, bads, woe}]
    dropped_by_iv: dict[str, list[str]] | None = None      # party -> features the selection dropped
    _bin_sums: tuple[dict[str, BinSums], dict[str, list[int]]] | None = None   # answers and masks until applied

    @one_message_at_a_time
    def encrypted_labels(self) -> list[mpz]:
        """[[y_i]] for the training rows, in their order, each freshly encrypted (partners sum them per bin)."""
        return binstats.encrypted_labels(self)

    @one_message_at_a_time
    def masked_bin_sums(self) -> dict[str, list[mpz]]:
        """Every partner's [[bads per bin + r]], r uniform in Z_n and kept here, for the coordinator to decrypt."""
        if self._last_done is not None or self._state is not None:
            raise ProtocolError(f"{self.party}: bin statistics are gathered before training starts")
        labels = self.encrypted_labels()
        answers: dict[str, BinSums] = call_each(self.partners, lambda name, p: p.encrypted_bin_sums(labels), "partner")
        masked, masks = {}, {}
        for name, sums in answers.items():
            binstats.check_bin_sums(name, sums, len(self.train_rows))
            masked[name], masks[name] = binstats.mask_bin_sums(
                self.public_key, sums.sums, self.fresh_obfuscators(len(sums.sums))
            )
        self._bin_sums = (answers, masks)
        return masked

    @one_message_at_a_time
    def apply_bin_sums(self, values: Mapping[str, list[int]]) -> dict[str, int]:
        """Remove the masks from the decrypted bin sums, compute every party's WOE and IV, keep each party's
        features by IV (partners are told theirs) and return each party's column count from now on."""
        if self._bin_sums is None:
            raise ProtocolError(f"{self.party}: bin sum values arrived before the bin sums were gathered")
        answers, masks = self._bin_sums
        if set(values) != set(answers):
            raise ProtocolError(f"{self.party}: bin sum values for {len(values)} partners, expected {len(answers)}")
        total_bads = int(self.train_labels.sum())
        statistics = {self.party: binstats.own_statistics(self)}
        for name, sums in answers.items():
            bads = binstats.unmask_bin_sums(name, values[name], masks[name], self.public_key.n)
            statistics[name] = binstats.partner_statistics(name, sums, bads, total_bads)
        self._bin_sums = None
        self.iv = {party: {s.feature: s.iv for s in stats} for party, stats in statistics.items()}
        self.bin_statistics = {party: [row for s in stats for row in s.to_rows()] for party, stats in statistics.items()}
        settings = self.spec.binning
        keep = {party: binstats.features_to_keep(iv, settings.min_iv, settings.max_features)
                for party, iv in self.iv.items()}
        self.dropped_by_iv = {party: [f for f in self.iv[party] if f not in keep[party]] for party in self.iv}
        columns = call_each(self.partners, lambda name, p: p.keep_features(keep[name]), "partner")
        dropped = self.select_features(keep[self.party])
        if dropped:
            log.warning("party %s: dropped by information value below %g or beyond the %d best: %s", self.party,
                        settings.min_iv, settings.max_features, ", ".join(dropped))
        return {self.party: int(self.weights.size), **{name: int(count) for name, count in columns.items()}}

    def checkpoint(self) -> dict:
        """The training state, and the bin statistics once gathered (a restarted card center still reports them)."""
        state = super().checkpoint()
        if self.iv is not None:
            state["bin_statistics"] = {"iv": self.iv, "bins": self.bin_statistics, "dropped": self.dropped_by_iv}
        return state

    def restore(self, checkpoint: dict) -> None:
        super().restore(checkpoint)
        saved = checkpoint.get("bin_statistics")
        if saved is not None:
            self.iv, self.bin_statistics, self.dropped_by_iv = saved["iv"], saved["bins"], saved["dropped"]
