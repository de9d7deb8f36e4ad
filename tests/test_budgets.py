"""A partner's defences against a dishonest card center: whose jobs it takes, how many, and how large a set it
intersects with. The attacks are run against the defaults, and shown to work once the defences are lifted."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedscore.cli.runner import run_job_file
from fedscore.daemons.config import DaemonConfig, load_party_config
from fedscore.daemons.party.budget import BudgetJournal
from fedscore.daemons.party.jobs import Jobs
from fedscore.errors import AccessError, ConfigError
from fedscore.job_file import load_job
from fedscore.ledger import identity
from fedscore.ledger.entries import Facts
from fedscore.ledger.store import LedgerStore
from fedscore.ledger.training_rules import Seen, alignment_entry, job_start_entry, objection
from fedscore.proto import fedscore_pb2 as pb
from fedscore.protocol.alignment import CardCenterAlignment, PartnerAlignment
from fedscore.protocol.budget import DAY_SECONDS, BudgetPolicy
from fedscore.protocol.training.simulation import build_consortium, load_tables, simulate
from fedscore.transport import codec

from conftest import DATA, TEST_KEY_BITS, write_job
from faults import attack

PARTNER_COLUMNS = 12    # as in the review: a 12-column partner
KNOWN = 20              # applicants whose partner values the card center knows
CENTER, PARTNER = "bank", "bureau"


def default_policy() -> BudgetPolicy:
    return BudgetPolicy(DaemonConfig.max_jobs, DaemonConfig.window_days)


# -- the reconstruction attack (one-partner jobs with labels of the card center's choosing) -------------------------

def attack_files(folder: Path) -> None:
    host = pd.read_csv(DATA / "breast_hetero_host.csv")
    host[["id"] + [f"x{i}" for i in range(PARTNER_COLUMNS)]].to_csv(folder / "partner.csv", index=False)


def one_job(folder: Path, round_: int, binning: dict, keypair, pool) -> tuple[np.ndarray, object]:
    """A job with random labels; what the card center's evaluation gives it: the partner's score per aligned row."""
    guest = pd.read_csv(DATA / "breast_hetero_guest.csv")[["id"]]
    # the card center's own column is noise: a column correlated with the partner's would explain part of the
    # partner's columns by itself (through the card center's secret start), which is not what the attack learns
    guest["x0"] = np.random.default_rng(7).normal(size=len(guest))
    guest["y"] = np.random.default_rng(100 + round_).integers(0, 2, len(guest))
    guest.to_csv(folder / "center.csv", index=False)
    job = write_job(folder, [{"name": CENTER, "data": "center.csv", "id": "id", "label": "y"},
                             {"name": PARTNER, "data": "partner.csv", "id": "id"}],
                    binning=binning, epochs=1, batch_size=0, validation=0.0, seed=round_, learning_rate=1.0)
    spec, base = load_job(job)
    consortium = build_consortium(spec, load_tables(spec, base), pool, keypair)
    seen: list[np.ndarray] = []
    own_metrics = consortium.card_center.metrics
    consortium.card_center.metrics = lambda own, partner: seen.append(partner) or own_metrics(own, partner)
    simulate(consortium)
    return seen[0], consortium


def run_attack(folder: Path, journal: BudgetJournal, rounds: int, binning: dict, keypair, pool):
    """Jobs until the partner refuses one or ``rounds`` ran: (scores, the last consortium, the refusal if any)."""
    attack_files(folder)
    scores, consortium = [], None
    for round_ in range(rounds):
        try:
            journal.admit(CENTER, f"probe-{round_:08x}", f"digest-{round_}")
        except AccessError as refused:
            return np.column_stack(scores), consortium, refused
        partner_scores, consortium = one_job(folder, round_, binning, keypair, pool)
        scores.append(partner_scores)
    return np.column_stack(scores), consortium, None


def reconstruction_r2(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The affine map from scores to each column, fitted on KNOWN applicants; R^2 on all the others."""
    rng = np.random.default_rng(9)
    known = rng.choice(len(truth), KNOWN, replace=False)
    others = np.setdiff1d(np.arange(len(truth)), known)
    design = np.column_stack([scores, np.ones(len(scores))])
    beta, *_ = np.linalg.lstsq(design[known], truth[known], rcond=None)
    residual = ((design[others] @ beta - truth[others]) ** 2).sum(axis=0)
    spread = ((truth[others] - truth[others].mean(axis=0)) ** 2).sum(axis=0)
    return 1 - residual / np.where(spread > 0, spread, 1.0)


def rank(scores: np.ndarray) -> int:
    return int(np.linalg.matrix_rank(scores, tol=1e-6 * np.abs(scores).max()))


def test_the_budget_stops_a_card_center_rebuilding_a_partners_columns(tmp_path, keypair, inline_pool):
    journal = BudgetJournal(tmp_path / "state", default_policy(), PARTNER)
    scores, consortium, refused = run_attack(tmp_path, journal, PARTNER_COLUMNS + 2, {"min_iv": 0.0}, keypair, inline_pool)
    partner = consortium.partners[PARTNER]

    assert refused is not None and scores.shape[1] == DaemonConfig.max_jobs
    assert f"card center {CENTER!r}" in str(refused) and f"{DaemonConfig.max_jobs} jobs" in str(refused)
    assert f"last {DaemonConfig.window_days} days" in str(refused) and "max_jobs" in str(refused)
    # binned: the partner's model columns are its bins' indicators, far more than the jobs it took
    columns = partner.weights.size
    assert columns > 5 * PARTNER_COLUMNS
    assert rank(scores) <= DaemonConfig.max_jobs < columns
    raw = reconstruction_r2(scores, partner.table.features)       # its raw values, in the aligned order
    indicators = reconstruction_r2(scores, partner.matrix)         # the columns the scores are linear in
    # four vectors cannot span twelve columns: what a chance fit explains stays far below the 0.999 of the
    # unbudgeted attack below (the card center's start is random, so this varies run to run, up to about 0.3)
    assert not attack(succeeded=bool(raw.max() > 0.5 or np.median(indicators) > 0.5))


def test_without_the_budget_and_binning_the_same_attack_rebuilds_every_column(tmp_path, keypair, inline_pool):
    """What the defences stop: the review's attack, reproduced (so the test above can fail)."""
    journal = BudgetJournal(tmp_path / "state", BudgetPolicy(max_jobs=100), PARTNER)
    scores, consortium, refused = run_attack(tmp_path, journal, PARTNER_COLUMNS, {"method": "none"}, keypair, inline_pool)
    partner = consortium.partners[PARTNER]
    assert refused is None and partner.weights.size == PARTNER_COLUMNS == rank(scores)
    raw = reconstruction_r2(scores, partner.table.features)
    assert raw.min() > 0.999   # every column an affine function of the scores: rebuilt from 20 known applicants


# -- whose jobs a partner takes ---------------------------------------------------------------------------------------

def partner_jobs(tmp_path: Path, inline_pool, clock=None, **settings) -> Jobs:
    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    host = pd.read_csv(DATA / "breast_hetero_host.csv")
    host[["id", "x0", "x1"]].to_csv(data / "partner.csv", index=False)
    pd.read_csv(DATA / "breast_hetero_guest.csv")[["id", "y", "x0"]].to_csv(data / "center.csv", index=False)
    config = DaemonConfig(PARTNER, "127.0.0.1:0", tmp_path / "state", data, min_key_bits=TEST_KEY_BITS, **settings)
    jobs = Jobs(config, inline_pool, identity.load_or_create(config.state_dir))
    if clock is not None:
        jobs.budget.clock = clock
    return jobs


def prepare_request(tmp_path: Path, keypair, job_id: str, card_center: str = CENTER) -> pb.PrepareJobRequest:
    job = write_job(tmp_path, [{"name": card_center, "data": "center.csv", "id": "id", "label": "y"},
                               {"name": PARTNER, "data": "partner.csv", "id": "id"}])
    spec, _ = load_job(job)
    return pb.PrepareJobRequest(job_id=job_id, job=codec.spec_to_proto(spec), party=PARTNER,
                                public_key=keypair[0].to_bytes())


def test_a_partner_naming_no_card_center_takes_no_job(tmp_path, keypair, inline_pool):
    jobs = partner_jobs(tmp_path, inline_pool)
    assert jobs.config.card_centers == ()   # the default
    with pytest.raises(AccessError) as refused:
        jobs.prepare(prepare_request(tmp_path, keypair, "probe-00000001"))
    assert f'card_centers = ["{CENTER}"]' in str(refused.value) and "[party]" in str(refused.value)
    named = partner_jobs(tmp_path / "other", inline_pool, card_centers=("cardco",))
    with pytest.raises(AccessError, match=r"only from card centers cardco; refused a job with card center 'bank' "
                                          r"\(add it to card_centers in \[party\]"):
        named.prepare(prepare_request(tmp_path, keypair, "probe-00000002"))
    assert not named.budget.records() and not jobs.budget.records()   # a refused job counts against nothing


def test_a_config_file_without_card_centers_names_none(tmp_path):
    path = tmp_path / "party.toml"
    path.write_text('[party]\nname = "bureau"\n')
    config = load_party_config(path)
    assert config.card_centers == () and (config.max_jobs, config.window_days, config.max_set_ratio) == (4, 30, 2.0)
    path.write_text('[party]\nname = "bureau"\nmax_jobs = 0\n')
    with pytest.raises(ConfigError, match="max_jobs must be between 1 and 10000, got 0"):
        load_party_config(path)
    path.write_text('[party]\nname = "bureau"\nmax_set_ratio = 0.5\n')
    with pytest.raises(ConfigError, match="max_set_ratio must be between 1 and 1000, got 0.5"):
        load_party_config(path)


# -- the budget on disk -----------------------------------------------------------------------------------------------

def test_the_budget_survives_a_restart_and_a_slot_frees_when_the_window_passes(tmp_path, keypair, inline_pool):
    now = [1_800_000_000.0]
    jobs = partner_jobs(tmp_path, inline_pool, clock=lambda: now[0], card_centers=(CENTER,))
    for n in range(1, 5):
        reply = jobs.prepare(prepare_request(tmp_path, keypair, f"job-{n:08x}"))
        assert (reply.budget.card_center, reply.budget.jobs, reply.budget.max_jobs, reply.budget.window_days) == (
            CENTER, n, 4, 30)
        jobs.close(pb.JobRef(job_id=f"job-{n:08x}"))
        now[0] += DAY_SECONDS
    restarted = partner_jobs(tmp_path, inline_pool, clock=lambda: now[0], card_centers=(CENTER,))
    with pytest.raises(AccessError, match="4 jobs over this party's rows in the last 30 days and max_jobs = 4"):
        restarted.prepare(prepare_request(tmp_path, keypair, "job-00000005"))
    assert len(restarted.budget.records()) == 4
    now[0] += 26 * DAY_SECONDS    # 30 days after the first job: its slot is free, the others still count
    reply = restarted.prepare(prepare_request(tmp_path, keypair, "job-00000006"))
    assert reply.budget.jobs == 4
    restarted.close(pb.JobRef(job_id="job-00000006"))
    assert json.loads((tmp_path / "state" / "budget.json").read_text())["jobs"][-1]["job_id"] == "job-00000006"


def test_another_card_centers_jobs_count_against_its_own_budget(tmp_path):
    journal = BudgetJournal(tmp_path, BudgetPolicy(max_jobs=1), PARTNER, clock=lambda: 1000.0)
    assert journal.admit(CENTER, "job-00000001", "d1").jobs == 1
    assert journal.admit("cardco", "job-00000002", "d2").jobs == 1
    with pytest.raises(AccessError, match="card center 'bank'"):
        journal.admit(CENTER, "job-00000003", "d3")


def test_the_same_rows_trained_on_other_labels_are_flagged(tmp_path, caplog):
    journal = BudgetJournal(tmp_path, BudgetPolicy(), PARTNER, clock=lambda: 1000.0)
    for job_id, labels in (("job-00000001", "l1"), ("job-00000002", "l1"), ("job-00000003", "l2")):
        journal.admit(CENTER, job_id, "digest")
        with caplog.at_level(logging.WARNING, logger="fedscore.party"):
            journal.note(job_id, rows_digest="rows")
            journal.note(job_id, label_digest=labels)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "job-00000003" in warnings[0] and "job-00000001, job-00000002" in warnings[0]
    assert [r.label_digest for r in journal.records()] == ["l1", "l1", "l2"]


# -- the genesis records each partner's budget, and the partner signs only its own count --------------------------

def test_a_partner_refuses_a_genesis_misstating_its_budget(tmp_path, keypair, inline_pool):
    jobs = partner_jobs(tmp_path, inline_pool, card_centers=(CENTER,))
    reply = jobs.prepare(prepare_request(tmp_path, keypair, "job-00000001"))
    job = jobs.get("job-00000001")
    own = {"card_center": CENTER, "jobs": 1, "max_jobs": 4, "window_days": 30}
    assert job.ledger.rules.facts.budget == own

    def genesis(budget: dict | None) -> dict:
        member = {"role": "partner", "key": reply.signing_key.hex(), **({"budget": budget} if budget else {})}
        members = {"coordinator": {"role": "coordinator", "key": "00" * 32}, CENTER: {"role": "card_center", "key": "11" * 32},
                   PARTNER: member}
        return job_start_entry("job-00000001", job.spec, members, keypair[0].fingerprint())

    assert job.ledger.rules.review().objection(genesis(own)) is None
    for wrong in ({**own, "jobs": 0}, {**own, "max_jobs": 40}, {**own, "card_center": "cardco"}, None):
        problem = job.ledger.rules.review().objection(genesis(wrong))
        assert problem is not None and "job budget" in problem
    jobs.close(pb.JobRef(job_id="job-00000001"))


def test_members_check_the_card_centers_set_size_and_label_digest():
    partner = Facts(PARTNER, "k", role="partner", aligned_rows=100, card_center_ids=300)
    center = Facts(CENTER, "k", role="card_center", aligned_rows=100, overlaps={PARTNER: 120}, card_center_ids=300,
                   label_digest="ab" * 32)
    chain = [{"kind": "job_start"}]
    honest = alignment_entry(100, {PARTNER: 120}, 300, "ab" * 32)
    assert objection(honest, partner, chain, Seen()) is None and objection(honest, center, chain, Seen()) is None
    smaller = alignment_entry(100, {PARTNER: 120}, 200, "ab" * 32)
    assert "recorded as 200 ids, where 300 were sent here" in objection(smaller, partner, chain, Seen())
    relabelled = alignment_entry(100, {PARTNER: 120}, 300, "cd" * 32)
    assert "label digest" in objection(relabelled, center, chain, Seen())


# -- the PSI probe: a card center padding its set with guessed ids --------------------------------------------------

def psi_tables(tmp_path: Path, guesses: int):
    """The partner's customers, and a card center holding some of them plus ``guesses`` guessed ids."""
    rng = np.random.default_rng(4)
    customers = [f"cust-{i}" for i in range(400)]
    applicants = customers[:300] + [f"guess-{i}" for i in range(guesses)]
    pd.DataFrame({"id": customers, "z": rng.normal(size=400)}).to_csv(tmp_path / "p.csv", index=False)
    pd.DataFrame({"id": applicants, "x": rng.normal(size=len(applicants)),
                  "y": rng.integers(0, 2, len(applicants))}).to_csv(tmp_path / "c.csv", index=False)
    job = write_job(tmp_path, [{"name": CENTER, "data": "c.csv", "id": "id", "label": "y"},
                               {"name": PARTNER, "data": "p.csv", "id": "id"}], min_overlap=0)
    spec, base = load_job(job)
    return load_tables(spec, base)


def test_a_card_center_padding_its_set_past_the_cap_is_refused(tmp_path, inline_pool):
    cap = DaemonConfig.max_set_ratio
    tables = psi_tables(tmp_path, guesses=1000)    # 1300 ids against the partner's 400: 3.25 times as many
    partner = PartnerAlignment(PARTNER, tables[PARTNER], "job-00000001", inline_pool)
    partner.max_set_ratio = cap
    center = CardCenterAlignment(CENTER, tables[CENTER], "job-00000001", inline_pool)
    with pytest.raises(ConfigError) as refused:
        center.align({PARTNER: partner}, 0)
    assert not attack(succeeded=partner.rows is not None or partner.card_center_ids is not None)
    assert ("sent 1300 ids to intersect with this party's 400" in str(refused.value)
            and "max_set_ratio = 2 " in str(refused.value) and "at most 800" in str(refused.value))


def test_within_the_cap_alignment_works_and_the_set_size_goes_on_the_chain(tmp_path):
    for name in ("breast_hetero_guest.csv", "breast_hetero_host.csv"):
        (tmp_path / name).write_bytes((DATA / name).read_bytes())
    job = write_job(tmp_path, [{"name": "guest", "data": "breast_hetero_guest.csv", "id": "id", "label": "y"},
                               {"name": "host", "data": "breast_hetero_host.csv", "id": "id"}])
    report = run_job_file(job, local=True, workers=1, align_only=True)
    assert report["aligned_rows"] == 569
    ledgers = {path.parts[-4]: path for path in (tmp_path / "state").rglob("ledger.sqlite")}
    assert set(ledgers) == {"coordinator", "guest", "host"}
    for member, path in ledgers.items():   # every replica holds the same entries
        store = LedgerStore(path, read_only=True)
        entries = [e for block in store.blocks() for e in block.decoded()]
        store.close()
        genesis, alignment = entries[0], entries[1]
        assert genesis["members"]["host"]["budget"]["card_center"] == "guest"
        assert genesis["members"]["host"]["budget"]["jobs"] == 1 and "budget" not in genesis["members"]["guest"]
        assert alignment["card_center_ids"] == 569 and len(alignment["label_digest"]) == 64
    journal = json.loads((tmp_path / "state" / "host" / "budget.json").read_text())["jobs"]
    assert [(r["card_center"], r["label_digest"]) for r in journal] == [("guest", alignment["label_digest"])]
    assert len(journal[0]["rows_digest"]) == 64


def test_init_party_writes_the_card_centers_it_takes_jobs_from(tmp_path):
    from fedscore.cli.scaffold import init_party

    init_party("acme", tmp_path / "named", card_centers=("bank",))
    init_party("acme", tmp_path / "unnamed")
    named, unnamed = (load_party_config(tmp_path / f / "party.toml") for f in ("named", "unnamed"))
    assert named.card_centers == ("bank",) and unnamed.card_centers == ()
    assert 'card_centers = []' in (tmp_path / "unnamed" / "party.toml").read_text()   # the line is there to fill in
    assert (named.max_jobs, named.window_days, named.max_set_ratio) == (4, 30, 2.0)
    with pytest.raises(ConfigError, match="party name 'two words'"):
        init_party("acme", tmp_path / "bad", card_centers=("two words",))
