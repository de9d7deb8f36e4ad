"""`fedscore demo`: a three-party consortium on the bundled UCI credit data.

The UCI columns are split as a card center, a credit bureau and an e-commerce
company would hold them; each gets its own CSV, and a job file trains them
together with 2048-bit keys through real daemons on this machine.

Coverage is realistic: the card center holds 25 000 of the 30 000 applicants;
the bureau about 90% of those plus people the card center never saw, the
e-commerce partner about 70% plus its own others. Private set intersection
finds the applicants all three hold before training.

New applicants for scoring are people the card center has never seen: some
known to both partners, one to the bureau only, one to neither. The demo
identity provider certifies a key for each, and each applicant signs a
consent to the card center's check (fedscore.protocol.scoring.consent). Its
key ships with the package and is public on purpose, so the shipped configs
(parties/, examples/default_credit/job.toml) can trust it and accept every
demo's applicants. So does the demo identity verifier's key (`verifiers`),
whose record that it saw the disputed applicant the demo's dispute carries
(fedscore.cli.demo_consortium: the verification, the observer, the monitor).
"""
from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from nacl.signing import SigningKey

import numpy as np
import pandas as pd

from fedscore.cli.audit import HEAD_PREFIX_DIGITS
from fedscore.cli.demo_audience import AUDIENCE_EPOCHS, write_audience
from fedscore.errors import ConfigError
from fedscore.job import JobSpec
from fedscore.job_file import parse_job
from fedscore.plural import plural
from fedscore.protocol.scoring.consent import certify_applicant, give_consent

ID = "ID"
LABEL = "default.payment.next.month"
CARD_CENTER_ROWS = 25_000
COVERAGE = {"bureau": (0.90, 3_000), "ecommerce": (0.70, 2_500)}  # share of the card center's, strangers
ID_COLUMN = {"card_center": "id", "bureau": "customer_id", "ecommerce": "id"}
SPLIT = {
    "card_center": ["LIMIT_BAL", "SEX", "EDUCATION", "MARRIAGE", "AGE"],
    "bureau": ["PAY_0", "PAY_2", "PAY_3", "PAY_4", "PAY_5", "PAY_6"],
    "ecommerce": [f"BILL_AMT{i}" for i in range(1, 7)] + [f"PAY_AMT{i}" for i in range(1, 7)],
}

DEMO_ISSUER_FILE = "demo-consent-issuer.key"   # in fedscore/data: the demo identity provider's key, public on purpose
DEMO_VERIFIER_FILE = "demo-identity-verifier.key"   # in fedscore/data: the demo identity verifier's key, public on purpose
DEMO_VERIFIER = "demo-verifier"                  # its name in the job file's verifiers

PROTECTED = ("SEX", "MARRIAGE", "AGE")   # the card center's columns out of the model (job file: protected)

JOB = """\
# The demo consortium: a card center and two partners on the UCI default-of-credit-card data.
[job]
name = "default-credit"
epochs = {epochs}
batch_size = 0          # 0 = whole training set per step
learning_rate = 1.0     # gradient step on 0/1 attribute columns (one per bin)
momentum = 0.8          # heavy ball: each party's own steps keep 80% of their last move (fewer epochs to converge)
l2 = 0.0
validation = 0.3        # held-out fraction for test AUC / KS
seed = 42
key_bits = {key_bits}

[binning]               # each party bins its own columns on its own training rows: the scorecard's attributes
method = "quantile"     # or "none": raw standardised columns
max_bins = 10
min_bin_share = 0.05    # no bin holds fewer than 5% of the training rows
[binning.special_values]   # codes that are not amounts: bins of their own (UCI: -2 no consumption, -1 paid in full)
PAY_0 = [-2, -1]
PAY_2 = [-2, -1]
PAY_3 = [-2, -1]
PAY_4 = [-2, -1]
PAY_5 = [-2, -1]
PAY_6 = [-2, -1]

[fees]                  # what the card center pays each partner, in fen, settled on the audit chain
currency = "CNY"
per_step = 500          # per training step
per_overlap_row = 1     # per applicant the card center shares with the partner

per_request = 2         # per scoring request the partner answers

[scoring]               # the card center's scorecard: 600 points at odds 1:1, 20 points to double the odds
offset = 600
pdo = 20
approve_at = 620        # score >= 620 approve; 580..620 review; below decline
review_at = 580
limit_basis = "LIMIT_BAL"
limit_step = 1000
timeout_ms = 500        # a partner later than this is reported in partners_missing
consent_issuers = ["{issuer}"]   # the demo identity provider (its key is public on purpose: demo only)
verifiers = {{ {verifier_name} = "{verifier}" }}   # the demo identity verifier (its key is public too: demo only)
# credit limits: the default bands (from 700 points 1.2 x LIMIT_BAL, from 660 1.0 x, from 620 0.8 x, from 580 0.5 x)

[coordinator]
address = "127.0.0.1:50060"     # used without --local

[[parties]]
name = "card_center"
data = "card_center.csv"
id = "id"
label = "y"
protected = ["SEX", "MARRIAGE", "AGE"]   # out of the model, never a reason; the report's fairness table uses them
address = "127.0.0.1:50061"

[[parties]]
name = "bureau"
data = "bureau.csv"
id = "customer_id"
address = "127.0.0.1:50062"

[[parties]]
name = "ecommerce"
data = "ecommerce.csv"
id = "id"
address = "127.0.0.1:50063"
"""


BUNDLED_ROWS = 30_000   # applicants in the bundled UCI file


def check_arguments(epochs: int, key_bits: int, rows: int | None, workers: int) -> JobSpec:
    """The demo's job as its arguments make it, checked before anything is written: epochs and key bits by
    every job's rules (JobSpec.validate, through the job file's parser), rows against the job's min_overlap."""
    try:
        spec = parse_job(tomllib.loads(JOB.format(epochs=epochs, key_bits=key_bits, issuer="00" * 32,
                                                verifier_name=DEMO_VERIFIER, verifier="00" * 32)), "demo job")
    except ConfigError as error:
        raise ConfigError(f"demo --epochs {epochs} --key-bits {key_bits}: {error}") from None
    if rows is not None:
        if not 1 <= rows <= BUNDLED_ROWS:
            raise ConfigError(f"demo --rows {rows}: the bundled data has {BUNDLED_ROWS} applicants; give 1 to {BUNDLED_ROWS}")
        held = party_rows(rows)
        shared = len(set(held["card_center"].tolist()).intersection(held["bureau"].tolist(), held["ecommerce"].tolist()))
        if shared < spec.min_overlap:
            raise ConfigError(f"demo --rows {rows}: only {shared} applicants would be held by every party, fewer than the "
                              f"job's min_overlap of {spec.min_overlap}; give more rows")
    if workers < 0:
        raise ConfigError(f"demo --workers {workers}: give 0 (every core) or a positive number of processes")
    return spec


def bundled_data() -> pd.DataFrame:
    with resources.files("fedscore.data").joinpath("default_credit.csv").open("rb") as handle:
        return pd.read_csv(handle)


def party_rows(total: int, seed: int = 2009) -> dict[str, np.ndarray]:
    """Which of the ``total`` applicants each party holds (positions, sorted)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(total)
    center_count = total * CARD_CENTER_ROWS // 30_000
    center, outsiders = order[:center_count], order[center_count:]
    rows = {"card_center": np.sort(center)}
    for party, (share, strangers) in COVERAGE.items():
        known = center[rng.random(len(center)) < share]
        extra = rng.choice(outsiders, size=min(len(outsiders), strangers * total // 30_000), replace=False)
        rows[party] = np.sort(np.concatenate([known, extra]))
    return rows


def _shipped_key(name: str) -> SigningKey:
    text = resources.files("fedscore.data").joinpath(name).read_text()
    seed = next(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))
    return SigningKey(bytes.fromhex(seed))


def issuer_key() -> SigningKey:
    """The demo identity provider's key: shipped in the package and public on purpose (see the file), so the
    shipped configs can name its public half in consent_issuers. Not for anything but the demo."""
    return _shipped_key(DEMO_ISSUER_FILE)


def verifier_key() -> SigningKey:
    """The demo identity verifier's key (DEMO_VERIFIER): shipped and public on purpose like the issuer's, so the
    shipped card center's config can name its public half in verifiers. Not for anything but the demo."""
    return _shipped_key(DEMO_VERIFIER_FILE)


def sign_consent(issuer: SigningKey, applicant: str, card_center: str = "card_center") -> str:
    """A fresh consent token of ``applicant`` to ``card_center``'s check: a new key for the applicant (on their
    device), certified by ``issuer`` (the identity provider they enrolled with), signing the consent now."""
    key = SigningKey.generate()
    certificate = certify_applicant(issuer, applicant, bytes(key.verify_key))
    return give_consent(key, certificate, bytes(issuer.verify_key), applicant, card_center).to_text()


def new_applicants(data: pd.DataFrame, held: dict[str, np.ndarray], count: int) -> list[int]:
    """Positions of people the card center never saw: most known to both partners, one to the bureau only, one to neither."""
    outside = np.setdiff1d(np.arange(len(data)), held["card_center"])
    bureau, ecommerce = set(held["bureau"].tolist()), set(held["ecommerce"].tolist())
    both = [i for i in outside if i in bureau and i in ecommerce]
    bureau_only = [i for i in outside if i in bureau and i not in ecommerce]
    nobody = [i for i in outside if i not in bureau and i not in ecommerce]
    return both[: max(0, count - 2)] + bureau_only[:1] + nobody[:1]


def write_applicants(path: Path, data: pd.DataFrame, positions: list[int], issuer: SigningKey, card_center: str = "card_center") -> None:
    """The card center's application data for each new applicant, with the applicant's signed consent."""
    frame = data.iloc[positions][[ID, *SPLIT["card_center"]]].rename(columns={ID: ID_COLUMN["card_center"]})
    frame["consent"] = [sign_consent(issuer, applicant, card_center) for applicant in frame[ID_COLUMN["card_center"]].astype(str)]
    frame.to_csv(path, index=False)


def write_demo(folder: Path, epochs: int = 30, key_bits: int = 2048, rows: int | None = None, applicants: int = 10) -> Path:
    """Write each party's CSV, the new applicants and the job file into ``folder``, and beside them the audience
    model's files (fedscore.cli.demo_audience); returns the main job file."""
    folder.mkdir(parents=True, exist_ok=True)
    data = bundled_data()
    if rows is not None:
        data = data.head(rows)
    held = party_rows(len(data))
    issuer = issuer_key()
    write_applicants(folder / "applicants.csv", data, new_applicants(data, held, applicants), issuer)
    for party, held_rows in held.items():
        subset = data.iloc[held_rows]
        frame = subset[[ID, *SPLIT[party]]].rename(columns={ID: ID_COLUMN[party]})
        if party == "card_center":
            frame["y"] = subset[LABEL]
        frame.sample(frac=1.0, random_state=7).to_csv(folder / f"{party}.csv", index=False)
    job = folder / "job.toml"
    job.write_text(JOB.format(epochs=epochs, key_bits=key_bits, issuer=bytes(issuer.verify_key).hex(),
                              verifier_name=DEMO_VERIFIER, verifier=bytes(verifier_key().verify_key).hex()))
    write_audience(folder, data, held, job.read_text(), key_bits, SPLIT, ID, LABEL, BUNDLED_ROWS,
                   epochs=min(epochs, AUDIENCE_EPOCHS))   # the audience model's job
    return job


def calibration_lines(report: dict) -> list[str]:
    """The calibrated probability against what happened, and the features that carry the most information."""
    lines: list[str] = []
    if report.get("brier") is not None:
        lines += [
            "",
            f"probability of default on the held-out rows: mean {report['mean_pd']:.4f} vs observed default rate "
            f"{report['observed_default_rate']:.4f}; Brier {report['brier']:.4f}, log-loss {report['log_loss']:.4f}",
        ]
    iv = [(value, party, feature) for party, features in (report.get("iv") or {}).items() for feature, value in features.items()]
    if iv:
        top = ", ".join(f"{feature} ({party}) {value:.2f}" for value, party, feature in sorted(iv, reverse=True)[:5])
        lines.append(f"highest information value: {top}")
    return lines


def summary_table(report: dict) -> str:
    parties = len(report["parties"])
    rows = [
        ("card center alone", report.get("local_only_test_auc"), report.get("local_only_test_ks")),
        (f"federated ({plural(parties, 'party', 'parties')})", report.get("test_auc"), report.get("test_ks")),
    ]
    overlaps = ", ".join(f"{name} {count}" for name, count in report["overlaps"].items())
    lines = [
        f"aligned by private set intersection: {plural(report['aligned_rows'], 'applicant')} held by every party "
        f"(card center shares with {overlaps})",
        "",
        f"{'held-out rows: ' + str(report['test_rows']):<28}{'test AUC':>10}{'test KS':>10}",
    ]
    for name, auc, ks in rows:
        lines.append(f"{name:<28}{auc:>10.4f}{ks:>10.4f}")
    lines += calibration_lines(report)
    settlement = report["settlement"]
    owed = ", ".join(f"{line['payee']} {line['amount'] / 100:.2f}" for line in settlement["lines"])
    lines += [
        "",
        f"audit chain: {plural(report['ledger_blocks'], 'block')} co-signed by {plural(len(report['ledgers']), 'member')}, "
        f"head {report['ledger_head'][:HEAD_PREFIX_DIGITS]}…",   # `audit verify --head` takes it as printed
        f"settlement: {settlement['payer']} owes {owed} {settlement['currency']}",
    ]
    return "\n".join(lines)


def disputed_row(scored: pd.DataFrame) -> pd.Series | None:
    """The scored applicant the demo's dispute is about: the first answered one (None when none was)."""
    answered = scored[(scored["error"] == "") & (scored["request_id"] != "")]
    return None if answered.empty else answered.iloc[0]


def demo_dispute(folder: Path, scored: pd.DataFrame, evidence_dir: Path | None = None) -> dict | None:
    """The demo's last act: one scored applicant says they never applied; the card center writes the evidence
    from its own state (its daemon's config) and anyone checks it offline against the scoring chain's genesis.
    ``evidence_dir``: the applicant's identity verification goes in too, checked against the files handed over.
    None when no applicant was scored."""
    from fedscore.cli.dispute import check_evidence, open_dispute

    row = disputed_row(scored)
    if row is None:
        return None
    written = open_dispute(folder / "state" / "card_center" / "party.toml", str(row["id"]), str(row["request_id"]),
                           None, folder / "dispute.json", evidence_dir)
    genesis = written["genesis"][:HEAD_PREFIX_DIGITS]
    files = Path(written["evidence_files"]) if "evidence_files" in written else None
    checked = check_evidence(Path(written["bundle"]), genesis, str(row["id"]), files_dir=files)
    return {"applicant": str(row["id"]), "bundle": written["bundle"], "bytes": written["bytes"], "genesis": genesis,
            "verdict": checked["verdict"], **({"evidence_files": str(files)} if files is not None else {})}


def dispute_lines(dispute: dict | None) -> str:
    if dispute is None:
        return "no applicant was scored, so no dispute to show"
    files = f" --files {dispute['evidence_files']}" if "evidence_files" in dispute else ""
    return (f"a dispute: applicant {dispute['applicant']} says they never applied; the card center's evidence "
            f"({dispute['bundle']}, {dispute['bytes']} bytes{', with the identity verification' if files else ''}), "
            f"checked offline with\n"
            f"  fedscore audit check-evidence {dispute['bundle']} --genesis {dispute['genesis']} "
            f"--applicant {dispute['applicant']}{files}\nok: {dispute['verdict']}")
