"""The audience model: the partner's trained part plus what the card center holds of it, scored at the partner alone.

An audience model is trained with the card center bringing only labels, so
every feature is the partner's; the card center's model file then holds just
the intercept and the calibration. It sends those, with its scorecard scale,
as a `CardCenterPart`; the partner `assemble`s the whole model and evaluates
it on any of its users, exactly as the offline reference scores
(fedscore.protocol.scoring.offline): intercept + the partner's partial score,
calibrated, then scorecard points. Both digests go on the audience chain, so
either side can show which model a query named.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedscore.errors import DataError, ProtocolError
from fedscore.job import JOB_ID_PATTERN, NAME_PATTERN
from fedscore.ledger.block import encode_entry
from fedscore.model.calibration import Calibration
from fedscore.model.model_file import PartyModel
from fedscore.protocol.audience import fields
from fedscore.protocol.audience.users import UserBase
from fedscore.protocol.scoring.offline import partial_scores
from fedscore.protocol.scoring.scorecard import LN2, ScoringPolicy

FORMAT = "fedscore.audience-model/1"
PART_FIELDS = ("job_id", "job_name", "card_center", "partner", "intercept", "calibration", "offset", "pdo",
               "min_score", "max_score")


@dataclass(frozen=True)
class CardCenterPart:
    """What the card center holds of an audience model: its intercept, calibration and scorecard scale."""

    job_id: str
    job_name: str
    card_center: str
    partner: str
    intercept: float
    calibration: dict | None     # {slope, intercept}, or None: the identity
    offset: float
    pdo: float
    min_score: float
    max_score: float

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in PART_FIELDS}

    @classmethod
    def from_dict(cls, document: object, where: str) -> "CardCenterPart":
        """A part received from a peer, checked field by field (DataError naming the field)."""
        document = fields.exact_keys(document, PART_FIELDS, where)
        job_id = fields.text(document, "job_id", where, JOB_ID_PATTERN, "a job id (a job name, '-', then 8 hex digits)")
        job_name = fields.text(document, "job_name", where, NAME_PATTERN, "a job name")
        card_center = fields.text(document, "card_center", where, NAME_PATTERN, "a party name")
        partner = fields.text(document, "partner", where, NAME_PATTERN, "a party name")
        calibration = document["calibration"]
        if calibration is not None:
            at = f"{where} calibration"
            calibration = fields.exact_keys(calibration, ("slope", "intercept"), at)
            calibration = {"slope": fields.number(calibration, "slope", at),
                           "intercept": fields.number(calibration, "intercept", at)}
        part = cls(
            job_id=job_id, job_name=job_name, card_center=card_center, partner=partner,
            intercept=fields.number(document, "intercept", where), calibration=calibration,
            offset=fields.number(document, "offset", where), pdo=fields.number(document, "pdo", where, positive=True),
            min_score=fields.number(document, "min_score", where), max_score=fields.number(document, "max_score", where),
        )
        if not part.min_score < part.max_score:
            raise DataError(f"{where}: field 'min_score' must be below 'max_score'")
        if part.card_center == part.partner:
            raise DataError(f"{where}: field 'partner' names the card center itself")
        return part

    def digest(self) -> str:
        return hashlib.sha256(encode_entry(self.to_dict())).hexdigest()

    @property
    def policy(self) -> ScoringPolicy:
        """The scorecard scale the points follow (its cut-offs and limits play no part in an audience)."""
        return ScoringPolicy(offset=self.offset, pdo=self.pdo, min_score=self.min_score, max_score=self.max_score)


def card_center_part(model: PartyModel, policy: ScoringPolicy, partner: str) -> CardCenterPart:
    """The part of its audience model the card center sends the partner; ProtocolError for a model that is not
    the card center's, or one with features of its own (the partner could not evaluate it alone)."""
    where = f"job {model.job_id}"
    if model.role != "card_center":
        raise ProtocolError(f"{where}: the model of {model.party!r} is a {model.role}'s; only the card center's part is sent")
    if model.features:
        raise ProtocolError(
            f"{where}: the card center's model has features of its own ({', '.join(model.features[:5])}), so the partner "
            "could not evaluate it alone; train the audience model with the card center bringing only id and label"
        )
    if model.intercept is None:
        raise ProtocolError(f"{where}: the card center's model has no intercept")
    if partner == model.party:
        raise ProtocolError(f"{where}: the partner may not be the card center itself")
    calibration = None if model.calibration is None else model.calibrated.to_json()
    return CardCenterPart(
        job_id=model.job_id, job_name=model.job_name, card_center=model.party, partner=partner,
        intercept=float(model.intercept), calibration=calibration, offset=float(policy.offset), pdo=float(policy.pdo),
        min_score=float(policy.min_score), max_score=float(policy.max_score),
    )


@dataclass(frozen=True)
class AudienceModel:
    partner_model: PartyModel
    part: CardCenterPart

    def _document(self) -> dict:
        return {"partner": json.loads(self.partner_model.to_json()), "part": self.part.to_dict()}

    @functools.cached_property
    def _digest(self) -> str:
        return hashlib.sha256(encode_entry(self._document())).hexdigest()

    def digest(self) -> str:
        """SHA-256 of the whole model (the partner's file and the card center's part): what a query names."""
        return self._digest

    def log_odds(self, users: UserBase) -> np.ndarray:
        """The model's log-odds u per user, added as the offline reference adds them: the intercept, then the
        partner's partial score (NaN for a standardised model's user whose values are not all numbers)."""
        model = self.partner_model
        if users.features.ndim != 2 or users.features.shape[1] != len(model.features):
            raise DataError(f"party {model.party!r}: the users need the model's {len(model.features)} columns "
                            f"({', '.join(model.features)})")
        matrix = users.features if model.binned else _numbers(users.features)
        return self.part.intercept + partial_scores(model, matrix)

    def points(self, users: UserBase) -> np.ndarray:
        """Scorecard points per user: the calibrated log-odds a·u + c, then offset − pdo·log2-odds, clipped to the
        scale; each equal to fedscore.protocol.scoring.scorecard.points of the same row. NaN: not scorable."""
        calibration = Calibration.from_json(self.part.calibration)
        calibrated = calibration.slope * self.log_odds(users) + calibration.intercept
        policy = self.part.policy
        raw = policy.offset - policy.pdo * calibrated / LN2
        return np.minimum(policy.max_score, np.maximum(policy.min_score, raw))   # NaN stays NaN

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **self._document()}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "AudienceModel":
        """A stored model read back and checked as when it was assembled (DataError if it is not one)."""
        try:
            document = json.loads(text)
        except ValueError:
            raise DataError("an audience model file is not JSON") from None
        document = fields.exact_keys(document, ("format", "partner", "part"), "audience model")
        if document["format"] != FORMAT:
            raise DataError(f"audience model: not a {FORMAT} file")
        try:
            partner = PartyModel.from_json(json.dumps(document["partner"]))
        except (TypeError, ValueError) as error:
            raise DataError(f"audience model: its partner model is not one ({error})") from None
        part = CardCenterPart.from_dict(document["part"], "audience model part")
        try:
            return assemble(partner, part)
        except ProtocolError as error:
            raise DataError(f"audience model: {error}") from None


def assemble(partner_model: PartyModel, part: CardCenterPart) -> AudienceModel:
    """The whole model from the partner's own file and the card center's part; ProtocolError when they are not
    two halves of one audience model."""
    where = f"job {part.job_id}"
    if partner_model.role != "partner":
        raise ProtocolError(f"{where}: the model of {partner_model.party!r} is a {partner_model.role}'s, not a partner's")
    if partner_model.job_id != part.job_id or partner_model.job_name != part.job_name:
        raise ProtocolError(f"{where}: the card center's part is of job {part.job_id}, the partner's model of job "
                            f"{partner_model.job_id}")
    if partner_model.party != part.partner:
        raise ProtocolError(f"{where}: the card center's part is for partner {part.partner!r}, the model is "
                            f"{partner_model.party!r}'s")
    if not partner_model.features:
        raise ProtocolError(f"{where}: the partner's model has no features; it cannot tell users apart")
    if partner_model.binned and partner_model.binner.names != list(partner_model.features):
        raise ProtocolError(f"{where}: the partner's model's bins do not follow its feature list")
    return AudienceModel(partner_model, part)


def _numbers(matrix: np.ndarray) -> np.ndarray:
    """A standardised model's values as float64: a cell that is not a finite number becomes NaN."""
    matrix = np.asarray(matrix)
    if matrix.dtype.kind in "fiu":
        numbers = matrix.astype(np.float64)
    else:
        numbers = np.column_stack(
            [pd.to_numeric(pd.Series(matrix[:, j]), errors="coerce").to_numpy(dtype=np.float64)
             for j in range(matrix.shape[1])]
        ) if matrix.shape[1] else np.empty(matrix.shape, dtype=np.float64)
    return np.where(np.isfinite(numbers), numbers, np.nan)
