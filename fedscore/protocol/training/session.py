"""What every party does each step: its masked encrypted gradient, and applying it.

Notation (see fedscore.model.taylor): the residual of a batch is
d = u/4 + 1/2 − y with u the sum of every party's partial score. Under
encryption it travels as D = 4·d·2^P = ΣU + (U_C − Y), with U = round(u·2^P)
and Y = (4y − 2)·2^P, so it is an integer. Each party holds one part of D in
plaintext (its own U, or U_C − Y for the card center) and the rest encrypted,
and computes its encrypted gradient as X̂ᵀ[[rest]] + X̂ᵀ(own part), where X̂ is
its standardised training matrix quantised to 16-bit integers.

Before the gradient leaves, the party adds a uniform mask r ∈ Z_n under
encryption and re-randomises; the coordinator decrypts g + r, which tells it
nothing, and returns it; the party removes r and takes its step.
"""
from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass

import numpy as np
from gmpy2 import mpz

from fedscore.job import JobSpec, Step
from fedscore.crypto import paillier
from fedscore.crypto.fixedpoint import SCORE_BITS
from fedscore.crypto.masks import uniform_mask
from fedscore.crypto.obfuscation import STANDARD, standard_obfuscator
from fedscore.crypto.paillier import PublicKey
from fedscore.crypto.pool import CryptoPool, pack
from fedscore.crypto.reserve import ObfuscatorReserve
from fedscore.errors import DataError, ProtocolError
from fedscore.ledger.entries import Facts, step_key
from fedscore.model.binning import Binner
from fedscore.model.data import PartyTable
from fedscore.model.model_file import PartyModel
from fedscore.model.rows import batches, split_rows
from fedscore.model.scaling import Standardiser
from fedscore.protocol.training import batch_rule
from fedscore.protocol.training.encoding import Encoding, encode_table, integer_column_sums, integer_gradient


def one_message_at_a_time(method):
    """A session handles one protocol message at a time. The protocol never sends a party two at once; this
    keeps a message still running for a job the coordinator gave up on (a member died, the job resumed) from
    touching the step that replaced it: the resume waits for it, then rewinds."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._message_lock:
            return method(self, *args, **kwargs)

    return locked


@dataclass
class StepState:
    """What a party holds between the messages of one step."""

    step: Step
    rows: np.ndarray                       # positions within the training rows
    own_part: list[int]                    # this party's plaintext share of D, per row
    encrypted_rest: list[mpz] | None = None
    masks: list[int] | None = None
    loss_term: int | None = None


class PartySession:
    """One party's side of one job: its data, weights and the current step."""

    role = "party"
    has_intercept = False

    def __init__(
        self,
        job_id: str,
        spec: JobSpec,
        party: str,
        table: PartyTable,
        public_key: PublicKey,
        pool: CryptoPool,
    ):
        self.job_id = job_id
        self.spec = spec
        self.party = party
        self.table = table
        self.public_key = public_key
        self.pool = pool
        self.train_rows, self.test_rows = split_rows(table.rows, spec.validation, spec.seed)
        if len(self.train_rows) < 2:
            raise DataError(f"party {party!r}: {len(self.train_rows)} training rows is too few to train on")
        self.scaler: Standardiser | None = None
        self.binner: Binner | None = None
        self.encoding: Encoding | None = None
        self.encode(self.model_features())
        self._message_lock = threading.RLock()
        self._state: StepState | None = None
        self._last_done: Step | None = None
        # (last step, weights, velocity) before the last step: to rewind one step on resume
        self._before_last: tuple[Step | None, np.ndarray, np.ndarray] | None = None
        self._batches: tuple[int, list[np.ndarray]] | None = None
        self.facts: Facts | None = None   # when set, digests of every message sent or received go here
        self.reserve = ObfuscatorReserve(pool, public_key, spec.obfuscation)   # made in advance, each used once

    # -- the party's columns as a matrix --------------------------------------

    def model_features(self) -> list[str]:
        """The columns this party trains on (the card center leaves out its protected ones)."""
        return list(self.table.feature_names)

    def encode(self, features: list[str]) -> None:
        """Fit this party's encoding of ``features`` on its training rows and build its matrices
        (training.encoding). Called again with fewer features when feature selection drops some
        (before training starts).
        """
        current = self.encoding
        if current is not None and current.binned and set(features) <= set(current.features):
            encoding = current.keep(features)   # the same bins a refit would give; the table's values not needed
        else:
            encoding = encode_table(self.table, features, self.train_rows, self.spec.binning, self.has_intercept,
                                    self.party)
        self.encoding = encoding                    # builds blocks of the matrix on demand, never the whole
        self.features, self.scaler, self.binner = encoding.features, encoding.scaler, encoding.binner
        self.quantisation, self.penalised = encoding.quantisation, encoding.penalised
        self._quantised: np.ndarray | None = None   # X̂ given outright instead of the encoding's (tests of attacks)
        self.start = self.starting_weights()        # zero here; the card center's are secret (training.start)
        self.weights = self.start.copy()
        self.velocity = np.zeros(encoding.width)    # heavy-ball momentum: this party's own, like its weights

    # The whole matrices, built when asked for (tests, small tables); the protocol reads blocks instead.

    @property
    def matrix(self) -> np.ndarray:
        """Every row, encoded."""
        return self.encoding.block(np.arange(self.encoding.rows))

    @property
    def train_matrix(self) -> np.ndarray:
        """The training rows, encoded."""
        return self.encoding.block(self.train_rows)

    @property
    def quantised(self) -> np.ndarray:
        """X̂: the training matrix as integers."""
        return self.encoding.quantised(self.train_rows) if self._quantised is None else self._quantised

    @quantised.setter
    def quantised(self, value: np.ndarray) -> None:
        self._quantised = value

    @property
    def bin_columns(self) -> np.ndarray | None:
        """Per training row, its columns that are 1 (binning on)."""
        return self.encoding.bin_columns(self.train_rows) if self.encoding.binned else None

    def starting_weights(self) -> np.ndarray:
        """Where this party's weights start: zero (a partner's start hides nothing from itself)."""
        return np.zeros(self.encoding.width)

    @one_message_at_a_time
    def select_features(self, keep: list[str]) -> list[str]:
        """Train on ``keep`` only (feature selection by information value, before the first step);
        returns the features dropped."""
        if self._last_done is not None or self._state is not None:
            raise ProtocolError(f"{self.party}: features can only be selected before training starts")
        unknown = [f for f in keep if f not in self.features]
        if unknown:
            raise ProtocolError(f"{self.party}: asked to keep {unknown[0]!r}, which it does not train on")
        dropped = [f for f in self.features if f not in keep]
        if dropped:
            self.encode([f for f in self.features if f in keep])
        return dropped

    # -- randomness ---------------------------------------------------------

    def obfuscators_per_epoch(self) -> int:
        """Fresh obfuscators one epoch consumes here: one per row, plus masks and loss terms per step."""
        plan = batches(len(self.train_rows), self.spec.batch_size, self.spec.seed, 0)
        return sum(len(rows) for rows in plan) + len(plan) * (self.weights.size + 2)

    def precompute(self, epochs: int) -> float:
        """Make ``epochs`` epochs' worth of obfuscators now (on the worker pool); returns the seconds taken."""
        started = time.perf_counter()
        self.reserve.make(epochs * self.obfuscators_per_epoch())
        return time.perf_counter() - started

    def prepare_obfuscators(self) -> float:
        """What the job asks before training: obfuscators made now, and a background refill; returns the seconds."""
        seconds = self.precompute(self.spec.precompute_epochs) if self.spec.precompute_epochs else 0.0
        if self.spec.refill_obfuscators:
            self.reserve.refill_in_background(max(1, self.spec.precompute_epochs) * self.obfuscators_per_epoch())
        return seconds

    def fresh_obfuscators(self, count: int) -> list[mpz]:
        """``count`` never-used obfuscators: from the reserve first, the rest made now."""
        taken = self.reserve.take(count)
        missing = count - len(taken)
        if missing:
            taken += self.pool.obfuscators(self.public_key, missing, self.spec.obfuscation) if missing > 64 else [
                standard_obfuscator(self.public_key) if self.spec.obfuscation == STANDARD
                else self.pool.obfuscator(self.public_key).draw()
                for _ in range(missing)
            ]
        return taken

    def encrypt_vector(self, values: list[int]) -> list[mpz]:
        """[[v]] for each value, each with its own fresh obfuscator: from the reserve while it lasts, the rest made now."""
        key = self.public_key
        reserved = self.reserve.take(len(values))
        head = [paillier.encrypt(key, v, r) for v, r in zip(values, reserved)]
        return head + self.pool.encrypt(key, values[len(reserved):], self.spec.obfuscation)

    def record(self, step: Step, message: str, values: list, width: int) -> None:
        """Keep the digest of a message for the audit chain (the same bytes as on the wire)."""
        if self.facts is not None:
            self.facts.record(step.epoch, step.batch, message, pack(values, width))

    def step_digests(self, step: Step) -> dict[str, str]:
        return dict(self.facts.digests.get(step_key(step.epoch, step.batch), {})) if self.facts else {}

    # -- step bookkeeping ---------------------------------------------------

    def smallest_batch(self) -> int:
        """Rows in the job's smallest step (the same in every epoch)."""
        return batch_rule.smallest_batch(len(self.train_rows), self.spec.batch_size, self.spec.seed)

    def check_batch(self, min_batch_rows: int = 0, who: str | None = None) -> None:
        """Refuse the job if its smallest step is short for this party's columns (training.batch_rule)."""
        batch_rule.check_batch(who or f"party {self.party!r}", self.smallest_batch(), self.weights.size,
                               self.spec.min_rows_per_column, min_batch_rows)

    def step_rows(self, step: Step) -> np.ndarray:
        if self._batches is None or self._batches[0] != step.epoch:
            self._batches = (
                step.epoch,
                batches(len(self.train_rows), self.spec.batch_size, self.spec.seed, step.epoch),
            )
        plan = self._batches[1]
        if not 0 <= step.batch < len(plan) or not 0 <= step.epoch < self.spec.epochs:
            raise ProtocolError(f"{self.party}: there is no {step} in job {self.spec.name!r}")
        return plan[step.batch]

    def _begin(self, step: Step, own_part: list[int] | None = None) -> StepState:
        if self._state is not None and self._state.loss_term is None:
            raise ProtocolError(f"{self.party}: {step} started before {self._state.step} finished")
        if self._last_done is not None and step <= self._last_done:
            raise ProtocolError(f"{self.party}: {step} was already done (last done: {self._last_done})")
        rows = self.step_rows(step)
        self._state = StepState(step=step, rows=rows, own_part=own_part or [])
        return self._state

    def _current(self, step: Step, needs: str) -> StepState:
        state = self._state
        if state is None or state.step != step:
            current = state.step if state else "none"
            raise ProtocolError(f"{self.party}: message for {step}, but the current step is {current}")
        if needs == "residual" and state.encrypted_rest is None:
            raise ProtocolError(f"{self.party}: gradient asked for {step} before its residual arrived")
        if needs == "masks" and state.masks is None:
            raise ProtocolError(f"{self.party}: gradient values for {step} arrived before its gradient was sent")
        if needs == "applied" and state.loss_term is None:
            raise ProtocolError(f"{self.party}: loss asked for {step} before its gradient was applied")
        return state

    def partial_scores(self, rows: np.ndarray) -> np.ndarray:
        """u_p = X_p w_p for training rows ``rows``."""
        return self.encoding.scores(self.weights, self.train_rows[rows])

    # -- the gradient -------------------------------------------------------

    @one_message_at_a_time
    def masked_gradient(self, step: Step) -> list[mpz]:
        """[[X̂ᵀD + r]] per column, freshly randomised, r uniform in Z_n and kept here."""
        state = self._current(step, needs="residual")
        key = self.public_key
        encrypted, plain = self.gradient_sums(state.encrypted_rest, state.own_part, state.rows)
        masks = [uniform_mask(key.n) for _ in plain]
        state.masks = masks
        gradient = paillier.add_plains(key, encrypted, [p + r for p, r in zip(plain, masks)])
        masked = paillier.rerandomise_each(key, gradient, self.fresh_obfuscators(len(plain)))
        self.record(step, f"gradient/{self.party}", masked, key.ciphertext_bytes)
        return masked

    def gradient_sums(self, encrypted_rest: list[mpz], own_part: list[int], rows: np.ndarray) -> tuple[list[mpz], list[int]]:
        """([[X̂ᵀ rest]], X̂ᵀ own part) over training rows ``rows``, a block of rows at a time: products of
        ciphertexts and sums of integers, the same whichever way the rows are cut."""
        key, total, encoding = self.public_key, self.weights.size, self.encoding
        positions = self.train_rows[rows]
        encrypted: list[mpz] | None = None
        plain = [0] * total
        cells = encoding.codes.shape[1] + 1 if encoding.binned else None
        for a, b in encoding.spans(len(positions), cells) if len(positions) else [(0, 0)]:
            if self._quantised is not None:
                quantised = self._quantised[rows[a:b]]
                part = self.pool.weighted_sums(key, encrypted_rest[a:b], quantised)
                own = integer_gradient(quantised, own_part[a:b])
            elif encoding.binned:
                columns = encoding.bin_columns(positions[a:b])
                part = self.pool.column_sums(key, encrypted_rest[a:b], columns, total)
                own = integer_column_sums(columns, own_part[a:b], total)
            else:
                quantised = encoding.quantised(positions[a:b])
                part = self.pool.weighted_sums(key, encrypted_rest[a:b], quantised)
                own = integer_gradient(quantised, own_part[a:b])
            encrypted = part if encrypted is None else [x * y % key.nsquare for x, y in zip(encrypted, part)]
            plain = [x + y for x, y in zip(plain, own)]
        return encrypted or [], plain

    @one_message_at_a_time
    def apply_gradient(self, step: Step, masked_values: list[int]) -> None:
        """Remove the masks, take the gradient step, and keep this party's loss term."""
        state = self._current(step, needs="masks")
        if len(masked_values) != len(state.masks):
            raise ProtocolError(
                f"{self.party}: {len(masked_values)} gradient values for {step}, expected {len(state.masks)}"
            )
        n = self.public_key.n
        self.record(step, f"gradient_values/{self.party}", masked_values, self.public_key.plaintext_bytes)
        totals = [paillier.decode_signed((int(v) - r) % n, n) for v, r in zip(masked_values, state.masks)]
        # X̂ᵀD / (scale · 4 · 2^P) = Xᵀd summed over the batch.
        xtd = np.array([float(t) for t in totals]) / (self.quantisation * 4.0 * 2.0**SCORE_BITS)
        size = len(state.rows)
        penalised = self.weights * self.penalised
        gradient = xtd / size + self.spec.l2 * penalised
        # Σ_i d_i·u_p,i = w_p·(X_pᵀd); with the L2 term, this party's share of the batch loss.
        share = 2.0 * float(self.weights @ xtd) + 2.0 * size * self.spec.l2 * float(penalised @ penalised)
        state.loss_term = int(round(share * 2.0**SCORE_BITS))
        state.masks = None
        self._before_last = (self._last_done, self.weights, self.velocity)
        # heavy ball (momentum 0: plain gradient descent): each party steps its own weights, nothing is exchanged
        self.velocity = self.spec.momentum * self.velocity - self.spec.learning_rate * gradient
        self.weights = self.weights + self.velocity
        self._last_done = step

    @one_message_at_a_time
    def encrypted_loss_term(self, step: Step) -> mpz:
        """[[this party's loss share]], fresh randomness."""
        state = self._current(step, needs="applied")
        term = paillier.encrypt(self.public_key, state.loss_term, self.fresh_obfuscators(1)[0])
        self.record(step, f"loss_term/{self.party}", [term], self.public_key.ciphertext_bytes)
        return term

    @property
    def last_step(self) -> Step | None:
        return self._last_done

    # -- checkpoint and resume -----------------------------------------------

    @one_message_at_a_time
    def checkpoint(self) -> dict:
        """The training state after the last applied step, and before it (a step may be redone once)."""
        def point(done: Step | None, weights: np.ndarray, velocity: np.ndarray) -> dict:
            return {"done": None if done is None else [done.epoch, done.batch], "weights": [float(w) for w in weights],
                    "velocity": [float(v) for v in velocity]}

        state = point(self._last_done, self.weights, self.velocity)
        state["features"] = list(self.features)
        state["start"] = [float(w) for w in self.start]
        if self._before_last is not None:
            state["before"] = point(*self._before_last)
        return state

    @one_message_at_a_time
    def restore(self, checkpoint: dict) -> None:
        def point(entry: dict) -> tuple[Step | None, np.ndarray, np.ndarray]:
            weights = np.array(entry["weights"], dtype=float)
            if weights.shape != self.weights.shape:
                raise ProtocolError(f"{self.party}: checkpoint has {weights.size} weights, the job {self.weights.size}")
            velocity = np.array(entry.get("velocity", np.zeros(weights.size)), dtype=float)
            return (None if entry["done"] is None else Step(*entry["done"])), weights, velocity

        if "features" in checkpoint and list(checkpoint["features"]) != self.features:
            self._state, self._last_done = None, None
            self.select_features(list(checkpoint["features"]))
        self._last_done, self.weights, self.velocity = point(checkpoint)
        if "start" in checkpoint:
            start = np.array(checkpoint["start"], dtype=float)
            if start.shape != self.weights.shape:
                raise ProtocolError(f"{self.party}: checkpoint has {start.size} starting weights, the job {self.weights.size}")
            self.start = start
        self._before_last = point(checkpoint["before"]) if "before" in checkpoint else None
        self._state = None

    @one_message_at_a_time
    def resume_after(self, step: Step | None) -> None:
        """Continue as if ``step`` (the last on the chain; None: no step yet) were the last one taken here.

        A party is at most one step ahead of the chain (the coordinator records a step once every party
        has applied it), so it keeps the weights from before its last step to rewind to.
        """
        if self._last_done != step:
            if self._before_last is None or self._before_last[0] != step:
                raise ProtocolError(f"{self.party}: cannot resume after {step}: its last step is {self._last_done}")
            self._last_done, self.weights, self.velocity = self._before_last
            self._before_last = None
        self._state = None

    # -- the model ----------------------------------------------------------

    def model(self) -> PartyModel:
        features = self.features
        columns = self.weights.size - (1 if self.has_intercept else 0)
        weights = self.weights[:columns]
        return PartyModel(
            job_id=self.job_id,
            job_name=self.spec.name,
            party=self.party,
            role=self.role,
            id_columns=list(self.spec.party(self.party).id_columns),
            features=list(features),
            mean=[] if self.scaler is None else [float(v) for v in self.scaler.mean],
            scale=[] if self.scaler is None else [float(v) for v in self.scaler.scale],
            weights=[float(v) for v in weights],
            intercept=float(self.weights[-1]) if self.has_intercept else None,
            bins=None if self.binner is None else self.binner.to_json(),
        )

    def feature_parts(self, rows: np.ndarray | None = None) -> list[np.ndarray]:
        """Each feature's contribution to the log-odds on ``rows`` (all rows if None)."""
        positions = np.arange(self.encoding.rows) if rows is None else np.asarray(rows)
        return self.encoding.feature_parts(self.weights, positions)
