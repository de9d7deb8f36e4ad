"""A federated training job: its parties, its settings and their defaults, and the ids it goes by.

Exactly one party carries the label (the card center); every other party is
a partner. The field defaults of ``JobSpec`` are the job's only defaults: the
job file, the wire codec and the notebook estimator all take theirs from it.
Reading a job file is fedscore.job_file's concern.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass

from fedscore.crypto.obfuscation import SHORT_EXPONENT, VARIANTS
from fedscore.errors import ConfigError, DataError
from fedscore.ledger.settlement import FeeContract

NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")   # a DNS label: names go into certificates
JOB_ID_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}-[0-9a-f]{8}$")   # a job name, then 8 random hex digits


def check_job_id(job_id: str, where: str) -> str:
    """A job id as fedscore makes them; anything else (a path, a very long string) is refused before use."""
    if not isinstance(job_id, str) or not JOB_ID_PATTERN.fullmatch(job_id):
        shown = job_id if not isinstance(job_id, str) or len(job_id) <= 80 else job_id[:77] + "..."
        raise DataError(f"{where}: {shown!r} is not a job id (a job name, '-', then 8 hex digits)")
    return job_id


KEY_BITS = (512, 768, 1024, 1536, 2048, 3072, 4096)   # Paillier key sizes a job may ask for


@dataclass(frozen=True, order=True)
class Step:
    """One training step: a batch of an epoch (both counted from 0)."""

    epoch: int
    batch: int

    def __str__(self) -> str:
        return f"epoch {self.epoch + 1} batch {self.batch + 1}"


@dataclass(frozen=True)
class PartySpec:
    """One party of a job: its data file (inside its own data folder), id columns, label if it is the card center."""

    name: str
    data: str
    id_columns: tuple[str, ...]
    label: str | None = None
    address: str = ""   # where its daemon listens

    @property
    def is_card_center(self) -> bool:
        return self.label is not None


BINNING_METHODS = ("quantile", "none")


@dataclass(frozen=True)
class Binning:
    """How every party turns its own columns into attributes (fedscore.model.binning), on its own training rows.

    ``method`` "none" keeps today's raw standardised columns. ``special_values`` names, per column, codes
    that mean something else than their number (the UCI PAY_x codes -2 and -1: "no consumption", "paid in
    full") and get bins of their own.
    """

    method: str = "quantile"
    max_bins: int = 10
    min_bin_share: float = 0.05      # no bin holds fewer than this share of training rows
    min_iv: float = 0.0              # features with a lower information value are dropped (0: keep all)
    max_features: int = 0            # keep at most this many features per party, by IV (0: all)
    monotonic: bool = True           # the card center merges its own bins until bad rates are monotonic
    special_values: tuple[tuple[str, tuple[float, ...]], ...] = ()

    @property
    def enabled(self) -> bool:
        return self.method != "none"

    def specials(self, column: str) -> tuple[float, ...]:
        return next((values for name, values in self.special_values if name == column), ())

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "Binning":
        document = json.loads(text) if text else {}
        specials = tuple((str(name), tuple(float(v) for v in values)) for name, values in document.pop("special_values", []))
        return cls(**document, special_values=specials)

    def validate(self, where: str) -> None:
        if self.method not in BINNING_METHODS:
            raise ConfigError(f"{where} [binning]: method must be one of {', '.join(BINNING_METHODS)}, got {self.method!r}")
        if not 2 <= self.max_bins <= 100:
            raise ConfigError(f"{where} [binning]: max_bins must be between 2 and 100, got {self.max_bins}")
        if not (math.isfinite(self.min_bin_share) and 0 < self.min_bin_share <= 0.5):
            raise ConfigError(f"{where} [binning]: min_bin_share must be in (0, 0.5], got {self.min_bin_share}")
        if not (math.isfinite(self.min_iv) and self.min_iv >= 0):
            raise ConfigError(f"{where} [binning]: min_iv must be zero or positive, got {self.min_iv}")
        if self.max_features < 0:
            raise ConfigError(f"{where} [binning]: max_features must be zero (all) or positive, got {self.max_features}")
        for name, values in self.special_values:
            if not all(math.isfinite(v) for v in values):
                raise ConfigError(f"{where} [binning.special_values]: {name!r} must list finite numbers")


@dataclass(frozen=True)
class JobSpec:
    """A job's settings; the field defaults are every job's defaults (job file, wire, estimator)."""

    name: str
    parties: tuple[PartySpec, ...]
    epochs: int = 40                  # at learning_rate 1.0 and momentum 0.8, converged on binned and standardised columns
    batch_size: int = 0
    learning_rate: float = 1.0
    momentum: float = 0.8             # heavy-ball momentum of every party's own steps; 0 = plain gradient descent
    l2: float = 0.0
    validation: float = 0.3
    seed: int = 42
    key_bits: int = 2048
    early_stop_tol: float = 0.0
    min_overlap: int = 500            # fewest applicants shared: a small overlap reveals too much to train on
    min_rows_per_column: int = 4      # every step covers at least this many rows per column of each party (0: off)
    fees: FeeContract = FeeContract()
    rpc_timeout: float = 1800.0       # seconds a party may take to answer one call before the job stops
    obfuscation: str = SHORT_EXPONENT # or STANDARD: r^n with a full exponent, no extra assumption
    precompute_epochs: int = 0        # obfuscators each party makes before training, in epochs' worth
    refill_obfuscators: bool = False  # keep making them in the background while training (max(1, precompute) epochs ahead)
    restart_timeout: float = 120.0    # seconds a member may stay down mid-job (restarting) before the job fails
    binning: Binning = Binning()
    protected: tuple[str, ...] = ()   # the card center's columns never used as reasons; out of the model unless kept
    keep_protected: bool = False      # True: protected columns stay in the model (still never a reason)
    calibrate: bool = True            # a 1-D logistic recalibration of the total score at the card center
    coordinator_address: str = ""

    @property
    def card_center(self) -> PartySpec:
        return next(p for p in self.parties if p.is_card_center)

    @property
    def partners(self) -> tuple[PartySpec, ...]:
        return tuple(p for p in self.parties if not p.is_card_center)

    def digest(self) -> str:
        """SHA-256 of the job's content (not of where its daemons happen to listen)."""
        content = asdict(self)
        content["fees"] = self.fees.to_dict()   # prices added later count only when set: older jobs keep their digest
        content.pop("coordinator_address")
        content.pop("rpc_timeout")
        content.pop("precompute_epochs")
        content.pop("refill_obfuscators")
        content.pop("restart_timeout")
        for party in content["parties"]:
            party.pop("address")
        return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def party(self, name: str) -> PartySpec:
        for spec in self.parties:
            if spec.name == name:
                return spec
        raise ConfigError(f"job {self.name!r} has no party named {name!r}")

    def validate(self) -> "JobSpec":
        where = f"job {self.name!r}"
        if not NAME_PATTERN.fullmatch(self.name):
            raise ConfigError(f"job name {self.name!r}: use letters, digits, '-' and '_' (at most 63)")
        if not 1 <= self.epochs <= 100_000:
            raise ConfigError(f"{where}: epochs must be between 1 and 100000, got {self.epochs}")
        if self.batch_size < 0:
            raise ConfigError(f"{where}: batch_size must be 0 (whole set) or positive, got {self.batch_size}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"{where}: learning_rate must be a positive number, got {self.learning_rate}")
        if not (math.isfinite(self.momentum) and 0 <= self.momentum < 1):
            raise ConfigError(f"{where}: momentum must be in [0, 1), got {self.momentum}")
        if not (math.isfinite(self.l2) and self.l2 >= 0):
            raise ConfigError(f"{where}: l2 must be zero or positive, got {self.l2}")
        if not (math.isfinite(self.validation) and 0 <= self.validation < 1):
            raise ConfigError(f"{where}: validation must be in [0, 1), got {self.validation}")
        if not (math.isfinite(self.early_stop_tol) and self.early_stop_tol >= 0):
            raise ConfigError(f"{where}: early_stop_tol must be zero (off) or positive, got {self.early_stop_tol}")
        if self.key_bits not in KEY_BITS:
            raise ConfigError(f"{where}: key_bits must be one of {', '.join(map(str, KEY_BITS))}, got {self.key_bits}")
        if not (math.isfinite(self.rpc_timeout) and 1 <= self.rpc_timeout <= 86_400):
            raise ConfigError(f"{where}: rpc_timeout must be between 1 and 86400 seconds, got {self.rpc_timeout}")
        if not (math.isfinite(self.restart_timeout) and 1 <= self.restart_timeout <= 86_400):
            raise ConfigError(f"{where}: restart_timeout must be between 1 and 86400 seconds, got {self.restart_timeout}")
        if self.obfuscation not in VARIANTS:
            raise ConfigError(f"{where}: obfuscation must be one of {', '.join(VARIANTS)}, got {self.obfuscation!r}")
        if not 0 <= self.precompute_epochs <= 1000:
            raise ConfigError(f"{where}: precompute_epochs must be between 0 and 1000, got {self.precompute_epochs}")
        if self.min_overlap < 0:
            raise ConfigError(f"{where}: min_overlap must be zero or positive, got {self.min_overlap}")
        if not 0 <= self.min_rows_per_column <= 1000:
            raise ConfigError(f"{where}: min_rows_per_column must be between 0 and 1000, got {self.min_rows_per_column}")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"{where}: seed must be a non-negative integer below 2^63, got {self.seed}")
        self.binning.validate(where)
        if not all(isinstance(c, str) and c for c in self.protected):
            raise ConfigError(f"{where}: protected must list column names")
        names = [p.name for p in self.parties]
        for name in names:
            if not NAME_PATTERN.fullmatch(name):
                raise ConfigError(f"{where}: party name {name!r}: use letters, digits, '-' and '_' (at most 63)")
            if name == "coordinator":
                raise ConfigError(f"{where}: a party cannot be named 'coordinator' (the coordinator's member name)")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"{where}: party {duplicates[0]!r} is listed twice")
        labelled = [p.name for p in self.parties if p.is_card_center]
        if len(labelled) != 1:
            detail = f"{len(labelled)} do ({', '.join(labelled)})" if labelled else "none does"
            raise ConfigError(f"{where}: exactly one party must carry the label; {detail}")
        if not self.partners:
            raise ConfigError(f"{where}: at least one partner (a party without a label) is needed")
        for p in self.parties:
            if not p.data:
                raise ConfigError(f"{where}: party {p.name!r} has no data file")
            if not p.id_columns or any(not c for c in p.id_columns):
                raise ConfigError(f"{where}: party {p.name!r} needs an id column")
            if p.label is not None and p.label in p.id_columns:
                raise ConfigError(f"{where}: party {p.name!r} uses {p.label!r} as both id and label")
        return self
