"""A verification as dispute evidence: the unsealed record, its chain entry, the entry's signed inclusion proof.

The card center builds the part (`verification_part`) from its replica of
the scoring chain and its secrets: only it can find an applicant's entries
(their digests are salted) and open the sealed record. Anyone checks it
offline (`check_verification_part`) with the evidence files the card center
hands over beside it: the record is the one the chain holds (its SHA-256), the
verifier signed it, each file is the one the verifier signed the digest of,
and the entry is in a block every member of the chain signed
(fedscore.ledger.proofs). The salted applicant digest in the entry cannot be
checked without the card center's salt, and need not be: the record, fixed by
its SHA-256 on the chain, carries the applicant's own digest
(consent.applicant_digest), which a reader compares with the applicant's.
"""
from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Mapping

from fedscore.errors import DataError, FedscoreError
from fedscore.ledger.block import Block, decode_entry, encode_entry
from fedscore.ledger.evidence import AnchoredChain, EvidenceError, Excerpt
from fedscore.ledger.proofs import check_proof, prove
from fedscore.ledger.scoring_rules import verification_problem
from fedscore.plural import plural
from fedscore.protocol.scoring.secrets import ScoringSecrets
from fedscore.protocol.scoring.verification import VerificationRecord, signature_valid, unseal

FORMAT = "fedscore.verification-evidence/1"


class VerificationEvidenceError(EvidenceError):
    """A verification part that does not check out: the message names the first thing that fails."""


def _located(blocks: list[Block], secrets: ScoringSecrets, applicant_id: str | None, verification_id: str | None,
             method: str | None) -> tuple[int, int, dict]:
    """(height, index, entry) of the verification asked for: by id, or the applicant's newest (of ``method``)."""
    salted = secrets.salted_applicant(applicant_id) if applicant_id is not None else None
    found = None
    for block in blocks:
        for index, raw in enumerate(block.entries):
            entry = decode_entry(raw)
            if entry.get("kind") != "verification":
                continue
            if verification_id is not None and entry["verification_id"] != verification_id:
                continue
            if salted is not None and entry["applicant"] != salted:
                continue
            if method is not None and unseal(entry["record"], secrets).method != method:
                continue
            found = (block.height, index, entry)
    if found is None:
        wanted = f"verification {verification_id}" if verification_id else "verification of this applicant"
        raise FedscoreError(f"the scoring chain holds no {wanted}{f' by {method}' if method else ''}")
    return found


def verification_part(blocks: list[Block], secrets: ScoringSecrets, applicant_id: str | None = None,
                      verification_id: str | None = None, method: str | None = None) -> dict:
    """The dispute bundle's verification section: by ``verification_id``, or the applicant's newest verification
    (of ``method``, if given). ``blocks``: the card center's scoring chain; ``secrets``: its scoring secrets."""
    if applicant_id is None and verification_id is None:
        raise FedscoreError("name the applicant or the verification to put in the evidence")
    height, index, entry = _located(blocks, secrets, applicant_id, verification_id, method)
    record = unseal(entry["record"], secrets)
    if record.digest() != entry["record_digest"]:   # the card center's own chain must agree with its own record
        raise FedscoreError(f"verification {entry['verification_id']}: the sealed record does not match its digest")
    return {"format": FORMAT, "record": record.to_dict(), "entry": entry, "proof": prove(blocks, height, index)}


def _member_keys(members: Mapping[str, object]) -> dict[str, bytes]:
    """{name: key bytes} from keys as bytes, hex, or a genesis table's {"role", "key"}."""
    keys = {}
    for name, value in members.items():
        value = value.get("key") if isinstance(value, Mapping) else value
        keys[name] = value if isinstance(value, bytes) else bytes.fromhex(str(value))
    return keys


def _when(unix_seconds: int) -> str:
    return datetime.datetime.fromtimestamp(unix_seconds, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_verification_part(part: dict, members: Mapping[str, object], evidence_files: Mapping[str, bytes],
                            applicant_digest: bytes | None = None, genesis_hash: str | None = None) -> str:
    """Check a verification part offline; a verdict line a person can read, or VerificationEvidenceError
    naming the first failure.

    ``members``: the scoring chain's members the reader trusts, {name: Ed25519 key} (bytes, hex or a genesis
    table's {"role", "key"}); ``evidence_files``: {file name: contents}, as the card center handed them over;
    ``applicant_digest``: the disputed applicant's (consent.applicant_digest), or None to accept any;
    ``genesis_hash``: the scoring chain's genesis the reader trusts (hex), or None."""
    try:
        return _check(part, _member_keys(members), evidence_files, applicant_digest, genesis_hash)
    except VerificationEvidenceError:
        raise
    except (DataError, FedscoreError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise VerificationEvidenceError(f"the verification evidence is not readable: {error}") from None


def _fail(reason: str) -> VerificationEvidenceError:
    return VerificationEvidenceError(f"verification evidence: {reason}")


def check_record(document: object, entry: object, files: Mapping[str, bytes],
                 applicant: bytes | None) -> VerificationRecord:
    """The record against the chain entry that holds its digest, the disputed applicant, the verifier's
    signature and the evidence files; used alone and inside a dispute bundle."""
    record = VerificationRecord.from_dict(document)
    problem = verification_problem(entry) if isinstance(entry, dict) else "the entry is not an object"
    if problem or entry.get("kind") != "verification":
        raise _fail(f"the chain entry is not a verification entry ({problem or 'its kind'})")
    if record.digest() != entry["record_digest"]:
        raise _fail(f"the record's SHA-256 {record.digest()} is not the chain entry's record digest "
                    f"{entry['record_digest']}: the record is not the one recorded")
    if applicant is not None and record.applicant != applicant:
        raise _fail(f"the record is of applicant {record.applicant.hex()}, not of the disputed applicant "
                    f"{applicant.hex()}")
    if not signature_valid(record):
        raise _fail(f"the signature of verifier {record.verifier!r} on the record does not verify")
    for name, digest in sorted(record.evidence.items()):
        if name not in files:
            raise _fail(f"evidence file {name!r} is missing (the record names it, with SHA-256 {digest})")
        found = hashlib.sha256(files[name]).hexdigest()
        if found != digest:
            raise _fail(f"evidence file {name!r} is altered: its SHA-256 is {found}, the verifier signed {digest}")
    return record


def _verified(record: VerificationRecord) -> str:
    return (f"verified by {record.verifier} (key {record.verifier_key.hex()[:16]}…) by {record.method} at "
            f"{_when(record.time)}, with {plural(len(record.evidence), 'evidence file')} matching")


def _check(part: dict, members: dict[str, bytes], files: Mapping[str, bytes], applicant: bytes | None,
           genesis_hash: str | None) -> str:
    if not isinstance(part, dict) or part.get("format") != FORMAT:
        raise _fail(f"not a {FORMAT} part")
    entry, proof = part["entry"], part["proof"]
    if not isinstance(entry, dict) or encode_entry(entry) != proof["entry"].encode("utf-8"):
        raise _fail("the chain entry is not the entry the inclusion proof includes")
    record = check_record(part["record"], entry, files, applicant)
    try:
        check_proof(proof)
    except FedscoreError as error:
        raise _fail(f"the inclusion proof does not verify: {error}") from None
    if genesis_hash is not None and proof["genesis_hash"] != genesis_hash.lower():
        raise _fail(f"the proof is on the chain with genesis {proof['genesis_hash']}, not {genesis_hash.lower()}")
    start = json.loads(proof["genesis"]["entry"])
    chain_members = {name: bytes.fromhex(info["key"]) for name, info in start["members"].items()}
    if start.get("kind") != "scoring_start" or chain_members != members:
        raise _fail("the proof's chain is not a scoring chain of the members given (names and keys)")
    height = proof["block"]["height"]
    return (f"applicant {record.applicant.hex()} {_verified(record)}; recorded in block {height} of scoring chain "
            f"{start['job_id']} co-signed by {', '.join(sorted(members))}")


# -- as a section of a dispute bundle (fedscore.ledger.consent_evidence) ---------------------------

def bundle_section(excerpt: Excerpt, secrets: ScoringSecrets, applicant_id: str, method: str | None = None) -> dict:
    """The applicant's newest verification (of ``method``) as a dispute bundle's section: the unsealed record
    and its entry cited in the bundle's excerpt, so one set of headers and signatures proves both."""
    height, index, entry = _located(excerpt.blocks, secrets, applicant_id, None, method)
    record = unseal(entry["record"], secrets)
    if record.digest() != entry["record_digest"]:
        raise FedscoreError(f"verification {entry['verification_id']}: the sealed record does not match its digest")
    return {"format": FORMAT, "record": record.to_dict(), "cited": excerpt.record(height, index)}


def check_bundle_section(section: dict, chain: AnchoredChain, bundle: dict, files: Mapping[str, bytes]) -> str:
    """A dispute bundle's verification section: the entry is in a block every member co-signed (``chain``
    checks it), and the record passes `check_record` for the bundle's applicant; a verdict clause."""
    try:
        if not isinstance(section, dict) or section.get("format") != FORMAT:
            raise _fail(f"not a {FORMAT} section")
        entry = chain.entry(section["cited"], "the verification entry")
        record = check_record(section["record"], entry, files, bytes.fromhex(bundle["applicant_digest"]))
    except EvidenceError:
        raise
    except (DataError, FedscoreError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise VerificationEvidenceError(f"the verification evidence is not readable: {error}") from None
    return f"the applicant was {_verified(record)}, recorded in block {int(section['cited']['height'])}"


def evidence_names(section: object) -> list[str]:
    """The evidence files a bundle's verification section names (what the card center hands over beside it)."""
    try:
        return sorted(VerificationRecord.from_dict(section["record"]).evidence)
    except (DataError, KeyError, TypeError, ValueError):
        return []
