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
from fedscore.protocol.scoring.verification_evidence import bundle_section, check_bundle_section, evidence_names

def section_checks(files: Mapping[str, bytes]) -> dict[str, SectionCheck]:
    """The optional bundle sections `check-evidence` reads, by name, with the evidence files handed over."""
    return {"verification": lambda section, chain, bundle: check_bundle_section(section, chain, bundle, files)}

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


def evidence_files(folder: Path, names: list[str]) -> dict[str, bytes]:
    """The named evidence files from ``folder`` (only those: nothing else in it is read or handed over)."""
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder of evidence files")
    return {name: (folder / name).read_bytes() for name in names if (folder / name).is_file()}


def verification_sections(secrets: ScoringSecrets, applicant_id: str, evidence_dir: Path | None,
                          output: Path) -> tuple[dict[str, SectionBuilder], Path | None]:
    """The builder of the applicant's verification section, and where its evidence files are copied to (beside
    the bundle, for the card center to hand over with it); none without --with-verification."""
    if evidence_dir is None:
        return {}, None
    return {"verification": lambda excerpt: bundle_section(excerpt, secrets, applicant_id)}, output.with_name(
        output.stem + "-evidence")


def hand_over(bundle: dict, evidence_dir: Path, folder: Path) -> dict[str, bytes]:
    """Copy the files the bundle's verification names from the card center's ``evidence_dir`` to ``folder``."""
    names = evidence_names(bundle["sections"]["verification"])
    files = evidence_files(evidence_dir, names)
    missing = [name for name in names if name not in files]
    if missing:
        raise ConfigError(f"{evidence_dir} lacks evidence file {missing[0]!r}, which the verification names")
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        write_atomically(folder / name, content, mode=0o600)
    return files


def open_dispute(config_path: Path, applicant_id: str, request_id: str | None, job_id: str | None, output: Path | None,
                 evidence_dir: Path | None = None) -> dict:
    """Write the consent bundle of an applicant's request, check it, and say where it is and what it shows.
    ``evidence_dir``: add the applicant's identity verification, with its evidence files from that folder."""
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
    output = output or Path(f"dispute-{request}.json")
    sections, files_folder = verification_sections(secrets, applicant_id, evidence_dir, output)
    bundle = consent_bundle(blocks, request, token, applicant_digest(applicant_id), consent_policy(config), sections)
    files = hand_over(bundle, evidence_dir, files_folder) if files_folder is not None else {}
    found = _checked(bundle, output, blocks, lambda genesis: consent_verdict(
        check_consent_bundle(bundle, genesis, applicant_id, section_checks(files))), job)
    if files_folder is not None:
        found["evidence_files"] = str(files_folder)
        found["check"] += f" --files {files_folder}"
    return found


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
                   replica_path: Path | None = None, sections: Mapping[str, SectionCheck] | None = None,
                   files_dir: Path | None = None) -> dict:
    """What the bundle at ``path`` proves; EvidenceError (exit 3) naming the first check that fails.
    ``sections``: the checks of optional sections (default: `section_checks` with the files in ``files_dir``)."""
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
    optional = bundle.get("sections") if kind == "consent" else None
    verification = optional.get("verification") if isinstance(optional, dict) else None
    if (verification is not None) != (files_dir is not None):
        raise ConfigError("--files is for a bundle with an identity verification: give the folder of the evidence "
                          "files the card center handed over with it" if verification is not None else
                          "--files: this bundle holds no identity verification")
    files = evidence_files(files_dir, evidence_names(verification)) if files_dir is not None else {}
    try:
        if kind == "fee":
            key, replica = _partner_state(party_config, bundle) if party_config else (None, replica)
            found = check_fee_bundle(bundle, genesis, key, replica)
            return {**found, "verdict": fee_verdict(found)}
        found = check_consent_bundle(bundle, genesis, applicant_id, section_checks(files) if sections is None else sections,
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
    if fees and args.with_verification is not None:
        raise ConfigError("audit dispute: --with-verification adds an applicant's identity verification to a consent "
                          "dispute, not to a fee dispute")
    if fees and args.settlement < 1:
        raise ConfigError(f"audit dispute: --settlement {args.settlement}: settlements are numbered from 1")


def dispute_command(args: argparse.Namespace) -> int:
    check_dispute_arguments(args)
    if args.applicant is not None:
        found = open_dispute(args.config, args.applicant, args.request, args.job_id, args.output,
                             args.with_verification)
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
        found = check_evidence(args.bundle, args.genesis, args.applicant, args.party_config, args.replica,
                               files_dir=args.files)
    except EvidenceError as error:
        if args.json:
            print(json.dumps({"ok": False, "error": str(error)}, indent=2))
        raise   # main names it and exits EXIT_UNVERIFIED
    if args.json:
        print(json.dumps(found, indent=2))
    elif not args.quiet:
        print(f"ok: {found['verdict']}")
    return EXIT_OK
