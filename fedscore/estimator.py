"""A scikit-learn-style estimator: the federated protocol with every party in one process.

For a data scientist trying feature splits in a notebook before any daemon is
deployed. ``fit`` runs what a deployed job runs (fedscore.protocol.training.simulation):
private set intersection, then the card center's, the partners' and the
coordinator's sessions exchanging the same Paillier-encrypted and masked
messages, minus gRPC, the audit chain and the fees. So the same DataFrames and
settings give the weights a daemon run gives, and predictions use the model
files' maths (fedscore.protocol.scoring.offline for raw columns; each party's
bins and bin weights for a binned scorecard), recalibrated as the card
center's model file says, so they equal what the scoring service would answer.

It protects nothing: every party's rows and the private key sit in this one
process. Use it on data you may hold together; deploy daemons for the rest.
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from fedscore.crypto.paillier import generate_keypair
from fedscore.crypto.pool import CryptoPool
from fedscore.errors import ConfigError, DataError
from fedscore.estimator_inputs import Party, as_binning, as_party, column_list, training_parties
from fedscore.estimator_tables import information_values, party_weights, scorecard_frame
from fedscore.job import JobSpec, PartySpec
from fedscore.model import metrics
from fedscore.model.calibration import Calibration
from fedscore.model.data import PartyTable, frame_ids, table_from_frame
from fedscore.model.model_file import PartyModel
from fedscore.protocol.scoring.offline import log_odds, probabilities
from fedscore.protocol.training.simulation import build_consortium, simulate
from fedscore.protocol.training.driver import Progress
from fedscore.report.build import build_report

JOB_NAME = "notebook"
VALIDATION = 0.0   # fit trains on every row it is given; a job file holds out JobSpec.validation by default
PROBABILITY_COLUMNS = ["p_good", "p_bad"]   # label 0, label 1 (default): scikit-learn's column order


def partial_log_odds(model: PartyModel, table: PartyTable, rows: np.ndarray) -> np.ndarray:
    """A binned party's part of the log-odds on ``rows`` of its table: the weight of each row's bin, added
    feature by feature in the model's order (any value scores: missing and unseen ones have their bin)."""
    columns = [values[rows] for values in table.columns(model.features)]
    parts = model.binner.contributions(model.weights, columns)
    total = np.zeros(len(rows))
    for j in range(parts.shape[1]):
        total = total + parts[:, j]
    return total


class FederatedLogisticRegression(BaseEstimator):
    """Vertical logistic regression across a card center and its partners, simulated in one process.

    The parameters are the job file's [job] settings, with the same names and
    defaults but one: ``validation`` is 0, so ``fit`` trains on every row it is
    given, as a scikit-learn estimator does (a job file holds out 30% by
    default). Hold rows out by splitting the card center's frame yourself, with
    ``validation=0.3`` (the report's test_* keys then describe those rows), or
    with fedscore.model_selection.cross_validate. ``n_jobs`` is how many
    processes do the Paillier work (None: this process only; -1: every core)
    and changes timings, never results.

    ``binning`` is the job file's [binning] table: a ``fedscore.job.Binning``,
    a dict of its settings, or "none" for raw standardised columns (one
    weight per column). Binned (the default), each party cuts its own columns
    into bins on its own training rows and trains one weight per bin; text
    columns are categories and missing values have a bin of their own.
    ``protected`` names card-center columns kept out of the model (unless
    ``keep_protected``) and never used as reasons; ``calibrate`` refits the
    total score's level on the training rows (σ(slope·u + intercept)).

    ``fit(parties)`` takes a mapping from party name to a DataFrame (or a
    ``Party`` naming its id and label columns); labels are 0/1 or True/False
    (numpy, pandas or Python booleans, read as 1/0).
    Fitted attributes: ``coef_`` (party → weights by attribute "FEATURE: bin",
    or by feature on standardised raw columns), ``intercept_`` (before
    calibration), ``calibration_`` (slope, intercept), ``losses_`` (per
    epoch), ``aligned_rows_`` (applicants every party holds), ``overlaps_``,
    ``models_`` (each party's model file, as its daemon would write it),
    ``scorecard_`` (the card center's attributes: characteristic, bin,
    weight, points), ``iv_`` (information value by party and feature) and
    ``report_`` (the job report, built as a daemon run's is and with the
    same keys: AUC and KS on the training and held-out rows, the
    card-center-only baseline, timings, ``warnings``; the audit chain's and
    settlement's keys are None, as there is no chain).

    A deployed party refuses keys under 2048 bits and batches under 256 rows
    by default (its daemon's ``min_key_bits``, ``min_batch_rows``); small keys
    here are for speed while prototyping. Every step must cover
    ``min_rows_per_column`` rows per column of each party (binned: per bin),
    here as in a deployed job.
    """

    def __init__(
        self,
        *,
        epochs: int = JobSpec.epochs,
        batch_size: int = JobSpec.batch_size,
        learning_rate: float = JobSpec.learning_rate,
        momentum: float = JobSpec.momentum,
        l2: float = JobSpec.l2,
        validation: float = VALIDATION,
        seed: int = JobSpec.seed,
        key_bits: int = JobSpec.key_bits,
        early_stop_tol: float = JobSpec.early_stop_tol,
        min_overlap: int = JobSpec.min_overlap,
        min_rows_per_column: int = JobSpec.min_rows_per_column,
        obfuscation: str = JobSpec.obfuscation,
        binning: Binning | Mapping | str = JobSpec.binning,
        protected: Sequence[str] = JobSpec.protected,
        keep_protected: bool = JobSpec.keep_protected,
        calibrate: bool = JobSpec.calibrate,
        n_jobs: int | None = None,
        verbose: bool = False,
    ):
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.l2 = l2
        self.validation = validation
        self.seed = seed
        self.key_bits = key_bits
        self.early_stop_tol = early_stop_tol
        self.min_overlap = min_overlap
        self.min_rows_per_column = min_rows_per_column
        self.obfuscation = obfuscation
        self.binning = binning
        self.protected = protected
        self.keep_protected = keep_protected
        self.calibrate = calibrate
        self.n_jobs = n_jobs
        self.verbose = verbose

    # -- training -----------------------------------------------------------

    def fit(
        self,
        parties: Mapping[str, Party | pd.DataFrame],
        *,
        card_center: str | None = None,
        id_columns: str | Sequence[str] = "id",
        label: str | None = None,
    ) -> "FederatedLogisticRegression":
        """Align the parties privately and train, exactly as a deployed job with these settings would.

        ``card_center`` names the party holding the labels, in column ``label``;
        or give that party as ``Party(frame, label=...)``. Every column of a
        party's frame but its ids and label is a feature, checked as its CSV file
        would be (missing ids or duplicates: a DataError naming the party, column
        and row). Binned, empty cells and text are data; with raw columns
        (binning "none") text, NaN or inf are errors too.
        """
        named, center = training_parties(parties, card_center, id_columns, label)
        self._warned: set[str] = set()
        spec = self._spec(named, center)
        lenient = spec.binning.enabled
        tables = {
            name: table_from_frame(
                party.frame, list(spec.party(name).id_columns), spec.party(name).label, party=name, lenient=lenient,
            )
            for name, party in named.items()
        }
        keys = generate_keypair(spec.key_bits)
        pool = self._pool()
        started = time.perf_counter()
        try:
            consortium = build_consortium(spec, tables, pool, keys)
            alignment_seconds = time.perf_counter() - started
            result = simulate(consortium, self._progress)
        finally:
            pool.close()

        center_session = consortium.card_center
        sessions = {center: center_session, **consortium.partners}
        self.models_: dict[str, PartyModel] = {name: session.model() for name, session in sessions.items()}
        self.coef_: dict[str, pd.Series] = {name: party_weights(model) for name, model in self.models_.items()}
        self.intercept_: float = float(self.models_[center].intercept)
        self.calibration_: Calibration = self.models_[center].calibrated
        self.scorecard_: pd.DataFrame = scorecard_frame(self.models_[center])
        self.iv_: pd.Series = information_values(center_session)
        self.losses_: list[float] = list(result.losses)
        self.aligned_rows_: int = consortium.alignment.aligned_rows
        self.overlaps_: dict[str, int] = dict(consortium.alignment.overlaps)
        self.card_center_: str = center
        self.label_: str = spec.card_center.label or ""
        self.id_columns_: dict[str, list[str]] = {p.name: list(p.id_columns) for p in spec.parties}
        self.classes_ = np.array([0, 1])
        self.job_id_: str = consortium.coordinator.job_id
        self.report_: dict = build_report(
            spec, self.job_id_, consortium.coordinator.public_key, self.aligned_rows_, len(center_session.train_rows),
            result,
            parties={
                name: {"role": session.role, "features": len(session.table.feature_names), "rows": tables[name].rows}
                for name, session in sessions.items()
            },
            alignment={
                "aligned_rows": self.aligned_rows_, "overlaps": self.overlaps_, "alignment_seconds": alignment_seconds,
                "obfuscation": spec.obfuscation, "obfuscation_seconds": 0.0,   # precompute_epochs is 0: all inline
            },
            seconds=time.perf_counter() - started,
        )
        return self

    def _spec(self, parties: Mapping[str, Party], center: str) -> JobSpec:
        """The job a deployed consortium would run: card center first, then the partners in the given order."""
        order = [center, *(name for name in parties if name != center)]
        party_specs = tuple(
            PartySpec(name=name, data="DataFrame", id_columns=tuple(parties[name].id_columns), label=parties[name].label)
            for name in order
        )
        return JobSpec(
            name=JOB_NAME, parties=party_specs, epochs=self.epochs, batch_size=self.batch_size,
            learning_rate=float(self.learning_rate), momentum=float(self.momentum), l2=float(self.l2),
            validation=float(self.validation), seed=self.seed,
            key_bits=self.key_bits, early_stop_tol=float(self.early_stop_tol), min_overlap=self.min_overlap,
            min_rows_per_column=self.min_rows_per_column, obfuscation=self.obfuscation,
            binning=as_binning(self.binning), protected=self._protected(),
            keep_protected=bool(self.keep_protected), calibrate=bool(self.calibrate),
        ).validate()

    def _protected(self) -> tuple[str, ...]:
        listed = (self.protected,) if isinstance(self.protected, str) else tuple(self.protected or ())
        if not all(isinstance(c, str) and c for c in listed):
            raise ConfigError(f"protected must list column names, got {self.protected!r}")
        return listed

    def _pool(self) -> CryptoPool:
        if self.n_jobs is None:
            return CryptoPool(0)
        if self.n_jobs == -1:
            return CryptoPool(None)
        if isinstance(self.n_jobs, int) and self.n_jobs > 0:
            return CryptoPool(self.n_jobs)
        raise ConfigError(f"n_jobs must be None (this process), -1 (every core) or a positive count, got {self.n_jobs!r}")

    def _progress(self, event: Progress) -> None:
        if self.verbose and event.stage == "epoch":
            print(f"epoch {event.epoch}/{event.epochs}: loss {event.loss:.6f} ({event.seconds:.1f} s)", flush=True)

    # -- scoring ------------------------------------------------------------

    def decision_function(self, parties: Mapping[str, Party | pd.DataFrame]) -> pd.Series:
        """The (calibrated) log-odds of default, indexed by the card center's ids, for applicants every party holds.

        slope·u + intercept with the card center's calibration, u the model's
        own log-odds: what every probability, score and decision uses. Rows some party lacks are left out
        with a warning (once per fitted model and cause, not at every call): the scoring service
        would still score them, counting a missing partner as an average
        applicant (see fedscore.protocol.scoring.offline.offline_answer), but a
        prototype's metrics should not mix the two.
        """
        index, u, _ = self._log_odds(parties, with_labels=False)
        return pd.Series(u, index=index, name="log_odds")

    def predict_proba(self, parties: Mapping[str, Party | pd.DataFrame]) -> pd.DataFrame:
        """P(label 0) and P(label 1, default) as columns p_good, p_bad, indexed by the card center's ids.

        Only applicants every party holds, in the card center's row order (others
        left out with a warning, as in decision_function). p_bad is the
        calibrated probability σ(slope·u + intercept) the scoring service answers.
        """
        index, u, _ = self._log_odds(parties, with_labels=False)
        bad = probabilities(u)
        return pd.DataFrame({PROBABILITY_COLUMNS[0]: 1.0 - bad, PROBABILITY_COLUMNS[1]: bad}, index=index)

    def predict(self, parties: Mapping[str, Party | pd.DataFrame]) -> pd.Series:
        """1 (default) where the calibrated log-odds are positive (p_bad > 0.5), else 0; rows as in predict_proba."""
        index, u, _ = self._log_odds(parties, with_labels=False)
        return pd.Series((u > 0).astype(np.int64), index=index, name=self.label_)

    def score(self, parties: Mapping[str, Party | pd.DataFrame]) -> float:
        """AUC on the given rows; the card center's frame must hold the label column.

        AUC, not scikit-learn's default accuracy: defaults are rare, so
        "approve everybody" is accurate yet useless, and a scorecard is used
        through its ranking (cut-offs are set afterwards), which AUC measures.
        The job report's auc and test_auc are the same statistic.
        """
        _, u, labels = self._log_odds(parties, with_labels=True)
        if labels is None or len(set(labels.tolist())) < 2:
            raise DataError("score: the applicants every party holds need both labels (0 and 1) for an AUC")
        return metrics.auc(labels, u)

    def _log_odds(
        self, parties: Mapping[str, Party | pd.DataFrame], with_labels: bool
    ) -> tuple[pd.Index, np.ndarray, np.ndarray | None]:
        """(the card center's ids, calibrated log-odds, labels) for the applicants every party holds, in its row order."""
        check_is_fitted(self)
        if not isinstance(parties, Mapping):
            raise ConfigError("parties must be a mapping from party name to DataFrame")
        expected, named = set(self.models_), set(parties)
        if named != expected:
            missing, extra = sorted(expected - named), sorted(map(str, named - expected))
            problem = f"party {missing[0]!r} is missing" if missing else f"party {extra[0]!r} is not in the model"
            raise ConfigError(f"{problem}: the model was trained with {', '.join(sorted(expected))}")
        center = self.card_center_
        given = {name: as_party(parties[name], name) for name in self.models_}
        ids = {
            name: self.id_columns_[name] if party.id_columns is None else column_list(party.id_columns, f"party {name!r}")
            for name, party in given.items()
        }
        tables: dict[str, PartyTable] = {
            name: table_from_frame(
                party.frame, ids[name], (party.label or self.label_) if with_labels and name == center else None,
                party=name, features=self.models_[name].features, lenient=self.models_[name].binned,
            )
            for name, party in given.items()
        }
        center_ids = ids[center]
        given_ids, normalised = frame_ids(given[center].frame, center_ids)
        center_rows = np.searchsorted(tables[center].ids, normalised)   # ids are unique, all present
        rows = {center: center_rows}
        held = np.ones(len(normalised), dtype=bool)
        lacking = {}
        for name, table in tables.items():
            if name == center:
                continue
            found = pd.Index(table.ids).get_indexer(normalised)
            rows[name] = found
            lacking[name] = int((found < 0).sum())
            held &= found >= 0
        if not held.any():
            raise DataError("no applicant of the card center's frame is held by every party")
        if not held.all():
            detail = ", ".join(f"{name} lacks {count}" for name, count in lacking.items() if count)
            self._warn_once(
                f"{int((~held).sum())} of {len(held)} card center rows are not held by every party ({detail}); "
                "they are left out"
            )
        kept_rows = {name: (center_rows if name == center else rows[name])[held] for name in tables}
        u = self.calibration_.log_odds(self._model_log_odds(tables, kept_rows))
        kept = given_ids.iloc[np.flatnonzero(held)]
        index = pd.Index(kept.iloc[:, 0], name=center_ids[0]) if len(center_ids) == 1 else pd.MultiIndex.from_frame(kept)
        labels = tables[center].labels
        return index, u, None if labels is None else labels[center_rows[held]].astype(np.int64)

    def _warn_once(self, message: str) -> None:
        """Warn once per fitted model and message: predict_proba, predict and score on the same frames
        would otherwise repeat the same warning at every call (a new fit warns afresh)."""
        seen = self.__dict__.setdefault("_warned", set())
        if message not in seen:
            seen.add(message)
            warnings.warn(message, UserWarning, stacklevel=4)   # at the caller of predict_proba, score, ...

    def _model_log_odds(self, tables: Mapping[str, PartyTable], rows: Mapping[str, np.ndarray]) -> np.ndarray:
        """u before calibration: the intercept, the card center's part, then the partners' in name order
        (the order the scoring service adds them in)."""
        center = self.card_center_
        partners = sorted(name for name in tables if name != center)
        if not self.models_[center].binned:
            return log_odds(
                self.models_[center], tables[center].features[rows[center]],
                {name: (self.models_[name], tables[name].features[rows[name]]) for name in partners},
            )
        own = partial_log_odds(self.models_[center], tables[center], rows[center])
        rest = np.zeros(len(own))
        for name in partners:
            rest = rest + partial_log_odds(self.models_[name], tables[name], rows[name])
        return self.models_[center].intercept + own + rest
