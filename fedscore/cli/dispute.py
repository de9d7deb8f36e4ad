"""`fedscore audit dispute` (the card center's dispute desk) and `fedscore audit check-evidence` (anyone).

The dispute desk works from the card center's own state, as its daemon's config
names it (`--config party.toml`, the file `fedscore party serve` takes; a demo's
is state/card_center/party.toml): the model's scoring chain
(state/jobs/<job_id>/scoring.sqlite), the scoring secrets that open a sealed
consent and read the partners' marks (state/scoring-secrets), and the consent
policy (consent_issuers, consent_max_age_days). It writes one JSON bundle, then
checks it as a reader would, so it never hands over one that fails.

`check-evidence` needs no fedscore state: the bundle and the genesis hash the
reader trusts. Whoever holds a replica of the chain (a member, an observer)
may add it (`--replica`): each cited block must be that replica's. A partner
checking a fee bundle adds its own config instead, and the check reads its
mark key and replica from its state.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from pathlib import Path

from fedscore.cli.audit import read_ledger
from fedscore.cli.exits import EXIT_OK
from fedscore.daemons.config import DaemonConfig, load_party_config
from fedscore.daemons.job_folders import newest_job_folders
from fedscore.daemons.party.scoring import PAIR_KEY_FILE
from fedscore.errors import ConfigError, FedscoreError
from fedscore.files import write_atomically
from fedscore.job import check_job_id
from fedscore.ledger.block import Block
from fedscore.ledger.consent_evidence import SectionCheck, check_consent_bundle, consent_bundle, consent_verdict
from fedscore.ledger.evidence import MIN_GENESIS_DIGITS, EvidenceError, Excerpt, entries_of
from fedscore.ledger.fee_evidence import check_fee_bundle, fee_bundle, fee_verdict
from fedscore.ledger.verify import verify_chain
from fedscore.plural import plural
from fedscore.protocol.scoring.consent import ConsentPolicy, applicant_digest
from fedscore.protocol.scoring.secrets import ScoringSecrets

SECTION_CHECKS: dict[str, SectionCheck] = {}
"""The optional bundle sections `check-evidence` reads, by name (an identity verification adds "verification")."""

SectionBuilder = Callable[[Excerpt], dict]


# -- the card center's state ---------------------------------------------------------------------

def scoring_chain(config: DaemonConfig, job_id: str | None) -> tuple[str, list[Block]]:
    """The model's id and its scoring chain as this member holds it (the newest model's, unless named), verified."""
    if job_id:
        folder = config.state_dir / "jobs" / check_job_id(job_id, f"party {config.name!r}")
    else:
        folder = next((f for f in newest_job_folders(config.state_dir)[0] if (f / "scoring.sqlite").is_file()), None)
        if folder is None:
            raise ConfigError(f"party {config.name!r} holds no scoring chain in {config.state_dir / 'jobs'}; "
                              "has a model served?")
    path = folder / "scoring.sqlite"
    if not path.is_file():
        raise ConfigError(f"party {config.name!r} holds no scoring chain for model {folder.name!r} ({path})")
    blocks = read_ledger(path)
    verify_chain(blocks)   # LedgerError (exit 3) names the first bad block: no evidence from a broken chain
    return folder.name, blocks


def card_center_secrets(config: DaemonConfig) -> ScoringSecrets:
    """The card center's scoring secrets, read only (never made: a dispute needs the ones the chain was made with)."""
    folder = config.state_dir / "scoring-secrets"
    try:
        return ScoringSecrets((folder / "applicant-salt.key").read_bytes(), (folder / "consent.key").read_bytes())
    except OSError:
        raise ConfigError(f"party {config.name!r} has no scoring secrets in {folder}: only the card center that "
                          "made the chain can open its consents") from None


def consent_policy(config: DaemonConfig) -> ConsentPolicy:
    if not config.consent_issuers:
        raise ConfigError(f"party {config.name!r} trusts no consent issuer (consent_issuers in its config)")
    return ConsentPolicy(frozenset(bytes.fromhex(i) for i in config.consent_issuers),
                         max_age=config.consent_max_age_days * 86_400)


def _card_center(config: DaemonConfig, blocks: list[Block]) -> None:
    start = entries_of(blocks[:1], "scoring_start")[0][2]
    center = next(n for n, m in start["members"].items() if m["role"] == "card_center")
    if center != config.name:
        raise ConfigError(f"this config is party {config.name!r}'s, and the chain's card center is {center!r}: "
                          "disputes are opened by the card center")


def choose_request(blocks: list[Block], secrets: ScoringSecrets, applicant_id: str, request_id: str | None) -> str:
    """The disputed request: the one named, which must be this applicant's; else the applicant's only one."""
    salted = secrets.salted_applicant(applicant_id)
    scored = [entry for _, _, entry in entries_of(blocks, "scoring")]
    requests = [entry for entry in scored if entry["applicant"] == salted]
    if request_id:
        if request_id not in {entry["request_id"] for entry in scored}:
            raise FedscoreError(f"request {request_id} is not on this scoring chain")
        if request_id not in {e["request_id"] for e in requests}:
            raise FedscoreError(f"request {request_id} is not applicant {applicant_id!r}'s (the chain records "
                                "another applicant for it)")
        return request_id
    if not requests:
        raise FedscoreError(f"applicant {applicant_id!r} has no request on this scoring chain")
    if len(requests) > 1:
        listed = ", ".join(e["request_id"] for e in requests[:5])
        raise FedscoreError(f"applicant {applicant_id!r} has {plural(len(requests), 'request')} on this scoring chain "
                            f"({listed}{', ...' if len(requests) > 5 else ''}); name one with --request")
    return requests[0]["request_id"]


def _write(bundle: dict, output: Path) -> int:
    text = json.dumps(bundle, indent=1, sort_keys=True) + "\n"
    write_atomically(output, text, mode=0o600)   # it holds an applicant's consent
    return len(text.encode("utf-8"))


def open_dispute(config_path: Path, applicant_id: str, request_id: str | None, job_id: str | None, output: Path | None,
                 sections: Mapping[str, SectionBuilder] | None = None) -> dict:
    """Write the consent bundle of an applicant's request, check it, and say where it is and what it shows."""
    config = load_party_config(config_path)
    job, blocks = scoring_chain(config, job_id)
    _card_center(config, blocks)
    secrets = card_center_secrets(config)
    request = choose_request(blocks, secrets, applicant_id, request_id)
    entry = next(e for _, _, e in entries_of(blocks, "scoring") if e["request_id"] == request)
    try:
        token = secrets.open_consent(entry["consent"])
    except Exception:   # a wrong key, or a damaged copy
        raise FedscoreError(f"request {request}: the sealed consent does not open with this card center's "
                            "consent key") from None
    bundle = consent_bundle(blocks, request, token, applicant_digest(applicant_id), consent_policy(config), sections)
    output = output or Path(f"dispute-{request}.json")
    return _checked(bundle, output, blocks, lambda genesis: consent_verdict(
        check_consent_bundle(bundle, genesis, applicant_id, SECTION_CHECKS)), job)


def open_fee_dispute(config_path: Path, number: int, partner: str, job_id: str | None, output: Path | None) -> dict:
    """Write the fee bundle of settlement ``number`` for ``partner``, check it, and say what it shows."""
    config = load_party_config(config_path)
    job, blocks = scoring_chain(config, job_id)
    _card_center(config, blocks)
    start = entries_of(blocks[:1], "scoring_start")[0][2]
    if start["members"].get(partner, {}).get("role") != "partner":
        raise ConfigError(f"{partner!r} is not a partner of model {job}")
    try:
        bundle = fee_bundle(blocks, partner, number, card_center_secrets(config).pair_key(job, partner))
    except LookupError as error:
        raise FedscoreError(str(error).strip("'\"")) from None
    output = output or Path(f"fees-{job}-{number}-{partner}.json")
    return _checked(bundle, output, blocks, lambda genesis: fee_verdict(check_fee_bundle(bundle, genesis)), job)


def _checked(bundle: dict, output: Path, blocks: list[Block], check: Callable[[str], str], job: str) -> dict:
    size = _write(bundle, output)
    genesis = blocks[0].hash().hex()
    try:
        verdict = check(genesis)
    except EvidenceError as error:
        raise EvidenceError(f"{output} was written, but it does not verify: {error}") from None
    return {"ok": True, "bundle": str(output), "bytes": size, "job_id": job, "genesis": genesis, "verdict": verdict,
            "check": f"fedscore audit check-evidence {output} --genesis {genesis[:MIN_GENESIS_DIGITS]}"}


# -- anyone: checking a bundle -------------------------------------------------------------------

def _partner_state(config_path: Path, bundle: dict) -> tuple[bytes, list[Block]]:
    """A partner's mark key and replica of the bundle's chain, from its own state."""
    config = load_party_config(config_path)
    if config.name != bundle.get("partner"):
        raise ConfigError(f"{config_path} is the config of party {config.name!r}; the bundle bills {bundle.get('partner')!r}")
    try:
        job = json.loads(bundle["chain"]["genesis"]["entry"])["job_id"]
    except (KeyError, TypeError, ValueError):
        raise EvidenceError("the bundle's genesis entry names no model") from None
    folder = config.state_dir / "jobs" / check_job_id(job, f"party {config.name!r}")
    key_path = folder / PAIR_KEY_FILE
    if not key_path.is_file():
        raise ConfigError(f"party {config.name!r} holds no mark key for model {job!r} ({key_path}; a partner keeps "
                          "it once the model is open for scoring)")
    return key_path.read_bytes(), read_ledger(folder / "scoring.sqlite")


def check_evidence(path: Path, genesis: str, applicant_id: str | None = None, party_config: Path | None = None,
                   replica_path: Path | None = None, sections: Mapping[str, SectionCheck] | None = None) -> dict:
    """What the bundle at ``path`` proves; EvidenceError (exit 3) naming the first check that fails.
    ``sections``: the checks of optional sections (default: SECTION_CHECKS)."""
    try:
        bundle = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise FedscoreError(f"bundle {path} is not readable: {error}") from None
    kind = bundle.get("kind") if isinstance(bundle, dict) else None
    if party_config is not None and (kind != "fee" or replica_path is not None):
        raise ConfigError("--party-config is for a partner checking a fee bundle (its replica comes from its state)")
    if applicant_id is not None and kind == "fee":
        raise ConfigError("--applicant is for a consent bundle; this one is a fee bundle")
    replica = read_ledger(replica_path) if replica_path is not None else None
    try:
        if kind == "fee":
            key, replica = _partner_state(party_config, bundle) if party_config else (None, replica)
            found = check_fee_bundle(bundle, genesis, key, replica)
            return {**found, "verdict": fee_verdict(found)}
        found = check_consent_bundle(bundle, genesis, applicant_id, SECTION_CHECKS if sections is None else sections,
                                     replica)
        return {**found, "verdict": consent_verdict(found)}
    except EvidenceError as error:
        raise EvidenceError(f"bundle {path} does not verify: {error}") from None


# -- the commands --------------------------------------------------------------------------------

def check_dispute_arguments(args: argparse.Namespace) -> None:
    """One dispute at a time: an applicant's (--applicant, maybe --request), or a partner's fees (--settlement, --partner)."""
    consent = args.applicant is not None or args.request is not None
    fees = args.settlement is not None or args.partner is not None
    if consent == fees:
        raise ConfigError("audit dispute: give --applicant (and --request) for a consent dispute, or --settlement "
                          "and --partner for a fee dispute")
    if consent and args.applicant is None:
        raise ConfigError("audit dispute: --request needs --applicant, the id of the applicant disputing it")
    if fees and (args.settlement is None or args.partner is None):
        raise ConfigError("audit dispute: a fee dispute needs both --settlement N and --partner NAME")
    if fees and args.settlement < 1:
        raise ConfigError(f"audit dispute: --settlement {args.settlement}: settlements are numbered from 1")


def dispute_command(args: argparse.Namespace) -> int:
    check_dispute_arguments(args)
    if args.applicant is not None:
        found = open_dispute(args.config, args.applicant, args.request, args.job_id, args.output)
    else:
        found = open_fee_dispute(args.config, args.settlement, args.partner, args.job_id, args.output)
    if args.json:
        print(json.dumps(found, indent=2))
    elif not args.quiet:
        print(f"evidence bundle: {found['bundle']} ({found['bytes']} bytes)\nit shows: {found['verdict']}\n"
              f"anyone checks it with: {found['check']}")
    return EXIT_OK


def check_evidence_command(args: argparse.Namespace) -> int:
    try:
        found = check_evidence(args.bundle, args.genesis, args.applicant, args.party_config, args.replica)
    except EvidenceError as error:
        if args.json:
            print(json.dumps({"ok": False, "error": str(error)}, indent=2))
        raise   # main names it and exits EXIT_UNVERIFIED
    if args.json:
        print(json.dumps(found, indent=2))
    elif not args.quiet:
        print(f"ok: {found['verdict']}")
    return EXIT_OK
