"""The partner's side of audience queries: models it holds, queries it answers, campaigns it materialises.

One `AudiencePartner` serves one card center, with its state in a folder the
daemon gives it: ``models/<digest>.json`` (the assembled models),
``queries.jsonl`` (every answer, written before it is returned; which of them
the chain holds; every campaign and which of them the chain holds) and
``campaigns/<campaign id>.csv`` (an audience's user ids: the partner's own
data, never sent, readable by its owner only).

Answering a query checks, in order: no earlier answer is still missing from
the chain (the card center records each before asking again, so the chain's
spend and its cut-off rule see every answer), the segment columns are
exposed, the model is held, the ε fits the budget (the larger of the chain's
spend in the window and that of this partner's own record, by its own answer
times) and the cut-off is not near an earlier one's on the same model
(`differencing`). Each refusal depends only on the queries, never on the
users, so it reveals nothing about them; the noise and the budget bound what
pairs of answers reveal. Only then are the users scored, counted per cell,
noised and suppressed. Queries are answered one at a time, so each sees every
earlier one.

The cells of an answer are every combination of the segment values some user
has (sorted), whether or not the audience reaches it: a cell left out would
say its count is exactly 0. Only the segment values themselves (which the
partner chose to expose) and the noisy counts leave the partner. Refusals are
DeniedError (nothing was counted, nothing spent), except a model the partner
does not hold (ProtocolError).
"""
from __future__ import annotations

import csv
import datetime
import io
import logging
import math
import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedscore.errors import DataError, DeniedError, ProtocolError
from fedscore.files import write_atomically
from fedscore.model.model_file import PartyModel
from fedscore.protocol.audience.budget import DAY_MS, budget_refusal, spent
from fedscore.protocol.audience.differencing import nearby_cutoff
from fedscore.protocol.audience.fields import HEX64
from fedscore.protocol.audience.model import AudienceModel, CardCenterPart, assemble
from fedscore.protocol.audience.noise import discrete_laplace, noise_bound
from fedscore.protocol.audience.policy import AudiencePolicy
from fedscore.protocol.audience.query import CAMPAIGN_ID, AudienceAnswer, AudienceQuery, Cell, new_campaign_id
from fedscore.protocol.audience.users import UserBase
from fedscore.protocol.scoring.journal import Journal

log = logging.getLogger("fedscore.audience")

MAX_CELLS = 10_000   # an answer's cells at most: segment columns of more values are not segments


@dataclass(frozen=True)
class Campaign:
    campaign_id: str
    query_id: str
    model: str
    members: int               # members billed: the query's noisy total
    audience_file: Path        # the partner's own file of its user ids


@dataclass(frozen=True)
class _Answered:
    query: AudienceQuery
    answer: AudienceAnswer
    time_ms: int


@dataclass
class _Scored:
    """One model's evaluation of the users, kept for one request."""

    users: UserBase
    points: np.ndarray
    seen: np.ndarray           # bool per user: aligned with the card center in the model's job


class AudiencePartner:
    def __init__(self, party: str, card_center: str, policy: AudiencePolicy, folder: Path,
                 users: Callable[[AudienceModel], UserBase], seen_ids: Callable[[AudienceModel], set[str]],
                 rng: random.Random | None = None):
        """``users``: the partner's user base with a model's features; ``seen_ids``: the (normalised) ids it aligned
        with the card center in a model's job; ``rng``: the noise's randomness (default: the operating system's)."""
        policy.validate(f"party {party!r} [party.audience]")
        self.party, self.card_center, self.policy, self.folder = party, card_center, policy, Path(folder)
        self._users, self._seen_ids, self._rng = users, seen_ids, rng
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.RLock()
        self._models: dict[str, AudienceModel] = {}
        self._answers: dict[str, _Answered] = {}
        self._recorded: set[str] = set()
        self._campaigns: dict[str, Campaign] = {}
        self._campaign_times: dict[str, int] = {}
        self._campaigns_recorded: set[str] = set()
        self._journal = Journal(self.folder / "queries.jsonl")
        for number, record in enumerate(self._journal.load(), start=1):
            self._replay(record, f"{self._journal.path.name} record {number}")

    # -- models -------------------------------------------------------------------------------

    def accept_model(self, part: CardCenterPart, partner_model: PartyModel) -> AudienceModel:
        """Assemble the whole model from the card center's part and this partner's own model file, and keep it."""
        if part.card_center != self.card_center or part.partner != self.party:
            raise ProtocolError(f"party {self.party!r}: the part is from {part.card_center!r} for {part.partner!r}; "
                                f"this is {self.party!r} serving {self.card_center!r}")
        model = assemble(partner_model, part)
        with self._lock:
            write_atomically(self._model_path(model.digest()), model.to_json())
            self._models[model.digest()] = model
        return model

    def _model_path(self, digest: str) -> Path:
        return self.folder / "models" / f"{digest}.json"

    def model(self, digest: str) -> AudienceModel:
        """The model with this digest; ProtocolError when this partner does not hold it."""
        if not isinstance(digest, str) or not HEX64.fullmatch(digest):
            raise ProtocolError(f"party {self.party!r} does not hold model {str(digest)[:70]!r}: not a model digest")
        with self._lock:
            if digest in self._models:
                return self._models[digest]
            if not self._model_path(digest).is_file():
                raise ProtocolError(f"party {self.party!r} does not hold model {digest}")
            try:
                model = AudienceModel.from_json(self._model_path(digest).read_text(encoding="utf-8"))
            except (DataError, OSError) as error:
                raise ProtocolError(f"party {self.party!r}: its copy of model {digest} is not readable ({error})") from None
            if model.digest() != digest or model.part.card_center != self.card_center:
                raise ProtocolError(f"party {self.party!r}: its copy of model {digest} is not that model")
            self._models[digest] = model
            return model

    # -- queries ------------------------------------------------------------------------------

    def answered(self, query_id: str) -> AudienceAnswer | None:
        with self._lock:
            found = self._answers.get(query_id)
            return None if found is None else found.answer

    def answered_at(self, query_id: str) -> int | None:
        """When this partner answered the query (unix ms, its own clock); None: it never did."""
        with self._lock:
            found = self._answers.get(query_id)
            return None if found is None else found.time_ms

    def pending_spent(self, now_ms: int) -> float:
        """ε of the queries answered here in the window that the chain does not hold yet."""
        with self._lock:
            pending = [(a.time_ms, a.query.epsilon) for q, a in self._answers.items() if q not in self._recorded]
        return spent(pending, now_ms, self.policy.window_days)

    def _own_spent(self, now_ms: int) -> float:
        """ε of every answer in this partner's record dated in the window by its own answer time, recorded or not:
        its record is complete (an answer is journalled before it leaves), whatever the chain's entries say."""
        return spent([(a.time_ms, a.query.epsilon) for a in self._answers.values()], now_ms, self.policy.window_days)

    def _in_window(self, now_ms: int) -> list[_Answered]:
        start = now_ms - self.policy.window_days * DAY_MS
        return [a for a in self._answers.values() if a.time_ms > start]

    def answer(self, query: AudienceQuery, chain_spent: float, now_ms: int,
               chain_queries: Iterable[tuple[str, str, bool, float]] = ()) -> AudienceAnswer:
        """Count the query's audience per cell, noised and suppressed, or refuse it (DeniedError: an earlier answer
        not on the chain yet, a segment column not exposed, too many, over budget, a nearby cut-off; ProtocolError: a
        model not held). ``chain_queries``: the chain's queries in the window, (id, model, unseen_only, min_points),
        those dated ahead included: the cut-off rule reads them with its own answers, as the chain will. The answer
        is recorded before it is returned; the same query asked again (a retry) gets the same answer at no new cost."""
        if isinstance(chain_spent, bool) or not isinstance(chain_spent, (int, float)) or not math.isfinite(chain_spent) \
                or chain_spent < 0:
            raise ValueError(f"chain_spent must be a non-negative number, got {chain_spent!r}")
        with self._lock:
            earlier = self._answers.get(query.query_id)
            if earlier is not None:
                if earlier.query != query:
                    raise ProtocolError(f"query id {query.query_id} was already used for another query")
                return earlier.answer
            self._check_all_recorded(query)
            self._check_segments(query)
            model = self.model(query.model)
            so_far = max(float(chain_spent), self._own_spent(now_ms))
            refusal = budget_refusal(so_far, query.epsilon, self.policy) or nearby_cutoff(
                query.model, query.unseen_only, query.min_points,
                [*((a.query.query_id, a.query.model, a.query.unseen_only, a.query.min_points)
                   for a in self._in_window(now_ms)), *chain_queries],
                self.policy.min_points_gap)
            if refusal:
                raise DeniedError(f"party {self.party!r} refuses query {query.query_id}: {refusal}")
            now = self._scored(model)
            keys, codes = _segment_cells(now.users, query.segments)
            member = _members(now, query)
            counts = np.bincount(codes[member], minlength=len(keys))
            noisy = counts + discrete_laplace(query.epsilon, len(keys), self._rng)
            min_cell = self.policy.min_cell
            cells = tuple(Cell(key, int(c) if c >= min_cell else None) for key, c in zip(keys, noisy.tolist()))
            answer = AudienceAnswer(
                query_id=query.query_id, model=query.model, cells=cells, total=sum(c.count or 0 for c in cells),
                min_cell=min_cell, epsilon=float(query.epsilon), noise_bound=noise_bound(query.epsilon),
                spent=math.fsum([so_far, query.epsilon]), budget=float(self.policy.budget),
                window_days=self.policy.window_days,
            )
            record = {"event": "answer", "time_ms": int(now_ms), "query": query.to_dict(), "answer": answer.to_dict()}
            self._journal.append(record)
            self._answers[query.query_id] = _Answered(query, answer, int(now_ms))
            return answer

    def _check_all_recorded(self, query: AudienceQuery) -> None:
        """A new query waits until the chain holds every earlier answer: the card center records it first, so the
        chain's budget and cut-off rules see every answer the card center has."""
        waiting = next((a for q, a in self._answers.items() if q not in self._recorded), None)
        if waiting is not None:
            raise DeniedError(f"party {self.party!r} refuses query {query.query_id}: query {waiting.query.query_id} "
                              f"answered at {_iso_ms(waiting.time_ms)} is not on the audience chain yet; "
                              "the card center records it first")

    def _check_segments(self, query: AudienceQuery) -> None:
        if len(set(query.segments)) != len(query.segments):
            raise DeniedError(f"party {self.party!r} refuses query {query.query_id}: it names a segment column twice")
        for column in query.segments:
            if column not in self.policy.segments:
                exposed = ", ".join(self.policy.segments) or "none"
                raise DeniedError(f"party {self.party!r} refuses query {query.query_id}: {column!r} is not a segment "
                                  f"column it exposes (it exposes: {exposed})")
        if len(query.segments) > self.policy.max_segments:
            raise DeniedError(f"party {self.party!r} refuses query {query.query_id}: {len(query.segments)} segment "
                              f"columns, at most {self.policy.max_segments} in one query")

    def _scored(self, model: AudienceModel) -> _Scored:
        users = self._users(model)
        seen = self._seen_ids(model)
        return _Scored(users, model.points(users), np.fromiter((i in seen for i in users.ids), dtype=bool,
                                                               count=users.rows))

    def recorded(self, query_id: str) -> None:
        """The chain holds this query: its ε is in the chain's spend, no longer pending here. Unknown ids are ignored
        (the chain's own rules judge them)."""
        with self._lock:
            if query_id in self._answers and query_id not in self._recorded:
                self._journal.append({"event": "recorded", "query_id": query_id})
                self._recorded.add(query_id)

    # -- campaigns ----------------------------------------------------------------------------

    def campaign(self, query_id: str, now_ms: int) -> Campaign:
        """Write the audience of an answered query to a file of this partner's user ids (as its users file writes
        them, in the order of their normalised ids); the card center gets the
        campaign id and the members billed (the answer's total, so billing reveals nothing new). Asked again
        before the chain holds the campaign (a retry), the same campaign; once it holds it, a refusal."""
        with self._lock:
            answered = self._answers.get(query_id)
            if answered is None:
                raise ProtocolError(f"party {self.party!r} never answered query {query_id}; "
                                    "a campaign needs an answered query")
            made = next((c for c in self._campaigns.values() if c.query_id == query_id), None)
            if made is not None:
                if made.campaign_id not in self._campaigns_recorded:
                    return made
                raise ProtocolError(f"query {query_id} already has campaign {made.campaign_id}")
            if answered.answer.total == 0:
                raise DeniedError(f"party {self.party!r}: every cell of query {query_id} was below the minimum cell size; "
                                  "there is no audience to run a campaign on")
            now = self._scored(self.model(answered.query.model))
            ids = now.users.own_ids[_members(now, answered.query)]
            campaign_id = new_campaign_id()
            path = self.folder / "campaigns" / f"{campaign_id}.csv"
            write_atomically(path, _id_file(ids), 0o600)
            campaign = Campaign(campaign_id, query_id, answered.query.model, answered.answer.total, path)
            self._journal.append({"event": "campaign", "campaign_id": campaign_id, "query_id": query_id,
                                  "model": campaign.model, "members": campaign.members, "time_ms": int(now_ms)})
            self._campaigns[campaign_id] = campaign
            self._campaign_times[campaign_id] = int(now_ms)
            return campaign

    def campaign_recorded(self, campaign_id: str) -> None:
        """The chain holds this campaign: asking for the query's campaign again is refused from now on. Unknown ids
        are ignored (the chain's own rules judge them)."""
        with self._lock:
            if campaign_id in self._campaigns and campaign_id not in self._campaigns_recorded:
                self._journal.append({"event": "campaign_recorded", "campaign_id": campaign_id})
                self._campaigns_recorded.add(campaign_id)

    def unrecorded(self) -> tuple[list[dict], list[dict]]:
        """What this partner gave that the chain does not hold yet, in the order given: the answers ({"query",
        "answer", "time_ms": its answer time}) and the campaigns ({"campaign_id", "query_id", "members", "time_ms"}),
        so the card center can record them."""
        with self._lock:
            answers = [{"query": a.query.to_dict(), "answer": a.answer.to_dict(), "time_ms": a.time_ms}
                       for q, a in self._answers.items() if q not in self._recorded]
            campaigns = [{"campaign_id": c.campaign_id, "query_id": c.query_id, "members": c.members,
                          "time_ms": self._campaign_times[c.campaign_id]}
                         for c in self._campaigns.values() if c.campaign_id not in self._campaigns_recorded]
            return answers, campaigns

    def campaigns(self) -> list[Campaign]:
        with self._lock:
            return list(self._campaigns.values())

    def close(self) -> None:
        self._journal.close()

    # -- the record ---------------------------------------------------------------------------

    def _replay(self, record: dict, where: str) -> None:
        event = record.get("event")
        try:
            if event == "answer":
                query = AudienceQuery.from_dict(record["query"], f"{where} query")
                answer = AudienceAnswer.from_dict(record["answer"], f"{where} answer")
                self._answers[query.query_id] = _Answered(query, answer, int(record["time_ms"]))
            elif event == "recorded":
                self._recorded.add(str(record["query_id"]))
            elif event == "campaign":
                campaign_id = record["campaign_id"]
                if not isinstance(campaign_id, str) or not CAMPAIGN_ID.fullmatch(campaign_id):
                    raise ValueError("not a campaign id")
                self._campaigns[campaign_id] = Campaign(
                    campaign_id, str(record["query_id"]), str(record["model"]), int(record["members"]),
                    self.folder / "campaigns" / f"{campaign_id}.csv")
                self._campaign_times[campaign_id] = int(record["time_ms"])
            elif event == "campaign_recorded":
                self._campaigns_recorded.add(str(record["campaign_id"]))
            else:
                raise ValueError(f"unknown event {event!r}")
        except (KeyError, TypeError, ValueError, DataError) as error:
            raise DataError(f"party {self.party!r}: {where} is not an audience record ({error})") from None


def _segment_cells(users: UserBase, segments: tuple[str, ...]) -> tuple[list[tuple[str, ...]], np.ndarray]:
    """The cells (each combination of segment values some user has, in sorted order) and each user's cell index."""
    if not segments:
        return [()], np.zeros(users.rows, dtype=np.int64)
    frame = pd.DataFrame({name: users.segments[name] for name in segments})
    codes, uniques = pd.factorize(pd.MultiIndex.from_frame(frame), sort=True)
    if len(uniques) > MAX_CELLS:
        raise DeniedError(f"the segment columns {', '.join(segments)} split the users into more than {MAX_CELLS} cells")
    return [tuple(str(v) for v in key) for key in uniques], codes.astype(np.int64)


def _members(scored: _Scored, query: AudienceQuery) -> np.ndarray:
    """Who is in a query's audience: points at or above the cut-off (a user that cannot be scored never is), less
    the users the card center already knows when the query asks for unseen users only."""
    member = np.nan_to_num(scored.points, nan=-np.inf) >= query.min_points
    return member & ~scored.seen if query.unseen_only else member


def _iso_ms(time_ms: int) -> str:
    """Unix milliseconds as ISO 8601 in UTC, to the millisecond."""
    moment = datetime.datetime.fromtimestamp(time_ms / 1000, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{time_ms % 1000:03d}Z"


def _id_file(ids: np.ndarray) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id"])
    writer.writerows([i] for i in ids.tolist())
    return out.getvalue()
