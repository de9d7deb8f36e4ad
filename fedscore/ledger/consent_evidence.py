"""Consent bundles: the answer to "I never applied", from the request's entry on the scoring chain.

The card center opens the consent token sealed in the request's entry and
hands it over with the entry and the chain excerpt (fedscore.ledger.evidence).
Anyone checks, against the genesis they trust: the entry is in a block every
member co-signed; the token is the one the entry recorded (its SHA-256); the
issuer certified the token's key for this applicant and the applicant signed
the consent; and the consent allowed this request: this chain's card center,
a purpose and an issuer the card center's policy accepts, and an age within
the policy's when the request was made (a dispute comes weeks later). An
optional section (an identity verification, say) is checked by the check
registered for its name.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from fedscore.ledger.block import Block
from fedscore.ledger.evidence import (
    FORMAT, MIN_GENESIS_DIGITS, UNMATCHED, AnchoredChain, EvidenceError, Excerpt, anchored_chain, check_format,
    check_replica_blocks, entries_of, iso_ms,
)
from fedscore.ledger.scoring_rules import entry_problem
from fedscore.protocol.scoring.consent import (
    MAX_CLOCK_SKEW, ConsentPolicy, ConsentToken, applicant_digest, certificate_message, consent_message,
)

# -- checking ------------------------------------------------------------------

SectionCheck = Callable[[dict, AnchoredChain, dict], str]
"""Checks an optional section of a bundle (section, its chain, the whole bundle); returns a verdict clause."""


MAX_POLICY_DAYS = 3650   # a consent older than ten years settles nothing


def read_policy(bundle: dict) -> ConsentPolicy:
    try:
        policy = bundle["policy"]
        issuers, purposes, days = policy["issuers"], policy["purposes"], policy["max_age_days"]
        if not (isinstance(issuers, list) and all(isinstance(i, str) for i in issuers)
                and isinstance(purposes, list) and all(isinstance(p, str) for p in purposes)):
            raise TypeError("issuers and purposes must be lists of text")
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_POLICY_DAYS:
            raise ValueError(f"max_age_days must be a whole number of days from 1 to {MAX_POLICY_DAYS}")
        return ConsentPolicy(frozenset(bytes.fromhex(i) for i in issuers), frozenset(purposes), days * 86_400)
    except (KeyError, TypeError, ValueError) as error:
        raise EvidenceError(f"the bundle's consent policy is not readable ({type(error).__name__}: {error})") from None


def policy_document(policy: ConsentPolicy) -> dict:
    return {"issuers": sorted(i.hex() for i in policy.trusted_issuers), "purposes": sorted(policy.purposes),
            "max_age_days": policy.max_age // 86_400}


def check_request_entry(entry: dict, chain: AnchoredChain, request_id: str) -> None:
    """The cited entry is the scoring entry of the disputed request, in the protocol's shape."""
    if entry.get("kind") != "scoring":
        raise EvidenceError(f"the cited entry is a {entry.get('kind')!r} entry, not a scoring request's")
    if entry.get("request_id") != request_id:
        raise EvidenceError(f"the cited entry records request {entry.get('request_id')}, not {request_id}")
    problem = entry_problem(entry, chain.partners)
    if problem:
        raise EvidenceError(f"the entry of request {request_id} is not a scoring entry: {problem}")


def check_token_digest(text: str, entry: dict) -> ConsentToken:
    """The token is the one the chain recorded: its SHA-256 is the entry's consent digest."""
    try:
        token = ConsentToken.from_text(text)
    except Exception as error:   # a ConsentError saying why, or no text at all
        raise EvidenceError(f"the bundle's consent token is not readable: {error}") from None
    if token.digest() != entry["consent_digest"]:
        raise EvidenceError(f"the consent token's SHA-256 is {token.digest()}, not the consent digest "
                            f"{entry['consent_digest']} request {entry['request_id']} recorded: another token")
    return token


def check_issuer(token: ConsentToken, policy: ConsentPolicy) -> None:
    if token.issuer not in policy.trusted_issuers:
        raise EvidenceError(f"the token's key was certified by issuer {token.issuer.hex()}, whom the card center's "
                            "policy does not trust")


def check_certificate(token: ConsentToken, applicant: bytes) -> None:
    """The issuer certified the token's key for this applicant."""
    try:
        VerifyKey(token.issuer).verify(certificate_message(applicant, token.applicant_key), token.certificate)
    except (BadSignatureError, ValueError):
        raise EvidenceError(f"the issuer's certificate does not certify the token's key for applicant "
                            f"{applicant.hex()}: the token is another applicant's") from None


def check_applicant_signature(token: ConsentToken, applicant: bytes) -> None:
    """The applicant's key signed this consent: its card center, purpose and time."""
    try:
        VerifyKey(token.applicant_key).verify(
            consent_message(applicant, token.card_center, token.purpose, token.issued_at), token.signature)
    except (BadSignatureError, ValueError):
        raise EvidenceError(f"the applicant's signature on the consent does not verify for applicant {applicant.hex()}") from None


def check_card_center(token: ConsentToken, chain: AnchoredChain) -> None:
    if token.card_center != chain.card_center:
        raise EvidenceError(f"the consent was given to card center {token.card_center!r}, not to {chain.card_center!r}, "
                            "the card center of this chain")


def check_purpose(token: ConsentToken, policy: ConsentPolicy) -> None:
    if token.purpose not in policy.purposes:
        raise EvidenceError(f"the consent is for purpose {token.purpose!r}, not {', '.join(sorted(policy.purposes))}")


def check_age(token: ConsentToken, entry: dict, policy: ConsentPolicy) -> None:
    """The consent was valid when the request was made (the entry's time), not now: a dispute comes weeks later."""
    at = entry["time_ms"] / 1000
    if token.issued_at > at + MAX_CLOCK_SKEW:
        raise EvidenceError(f"the consent is dated {iso_ms(token.issued_at * 1000)}, after request "
                            f"{entry['request_id']} was made ({iso_ms(entry['time_ms'])})")
    if token.issued_at < at - policy.max_age:
        days = int((at - token.issued_at) // 86_400)
        raise EvidenceError(f"the consent was {days} days old when request {entry['request_id']} was made "
                            f"({iso_ms(entry['time_ms'])}); the card center's policy accepts at most "
                            f"{policy.max_age // 86_400} days")


def check_sections(bundle: dict, chain: AnchoredChain, checks: Mapping[str, SectionCheck]) -> list[str]:
    """Each optional section (e.g. an identity verification) by its own check; one without a check fails."""
    clauses = []
    sections = bundle.get("sections") or {}
    if not isinstance(sections, dict):
        raise EvidenceError("the bundle's sections are not an object of named sections")
    for name, section in sorted(sections.items()):
        if name not in checks:
            raise EvidenceError(f"the bundle has a {name!r} section this check cannot read")
        clauses.append(checks[name](section, chain, bundle))
    return clauses


def check_consent_bundle(bundle: dict, expected_genesis: str, applicant_id: str | None = None,
                         sections: Mapping[str, SectionCheck] | None = None, replica: list[Block] | None = None) -> dict:
    """What a consent bundle proves, once every check passed; EvidenceError naming the first that fails.
    ``applicant_id``: the id of the person disputing, whose digest the bundle must name; ``replica``: any
    member's replica of the chain, whose blocks the cited ones must be."""
    check_format(bundle, "consent")
    chain = anchored_chain(bundle, expected_genesis)
    try:
        request_id, applicant, text = bundle["request_id"], bytes.fromhex(bundle["applicant_digest"]), bundle["token"]
        record = bundle["record"]
    except (KeyError, TypeError, ValueError) as error:
        raise EvidenceError(f"the consent bundle is not readable ({type(error).__name__}: {error})") from None
    if applicant_id is not None and applicant_digest(applicant_id) != applicant:
        raise EvidenceError(f"the bundle is about applicant {applicant.hex()}, not {applicant_id!r} "
                            f"(whose digest is {applicant_digest(applicant_id).hex()})")
    policy = read_policy(bundle)
    entry = chain.entry(record, f"the entry of request {request_id}")
    if replica is not None:
        check_replica_blocks(chain, replica, "the replica given")
    check_request_entry(entry, chain, request_id)
    token = check_token_digest(text, entry)
    check_issuer(token, policy)
    check_certificate(token, applicant)
    check_applicant_signature(token, applicant)
    check_card_center(token, chain)
    check_purpose(token, policy)
    check_age(token, entry, policy)
    clauses = check_sections(bundle, chain, sections or {})
    height = int(record["height"])
    return {
        "ok": True, "kind": "consent", "request_id": request_id, "applicant_digest": applicant.hex(),
        "card_center": token.card_center, "purpose": token.purpose, "consented_at": iso_ms(token.issued_at * 1000),
        "requested_at": iso_ms(entry["time_ms"]), "issuer": token.issuer.hex(), "block": height,
        "block_hash": chain.headers[height].hash().hex(), "co_signed_by": sorted(chain.members),
        "genesis": chain.genesis_hash, "job_id": chain.genesis.get("job_id"), "sections": clauses,
        "replica_checked": replica is not None, "max_age_days": policy.max_age // 86_400,
    }


def consent_verdict(found: dict) -> str:
    """The line a person reads."""
    extra = "; the block is the replica's at its height" if found["replica_checked"] else UNMATCHED
    extra += "".join(f"; {clause}" for clause in found["sections"])
    return (f"applicant {found['applicant_digest']} consented to {found['card_center']} for {found['purpose']} at "
            f"{found['consented_at']}; recorded as request {found['request_id']} at {found['requested_at']} in block "
            f"{found['block']} co-signed by {', '.join(found['co_signed_by'])} (scoring chain of model "
            f"{found['job_id']}, genesis {found['genesis'][:MIN_GENESIS_DIGITS]}…); key certified by issuer "
            f"{found['issuer'][:MIN_GENESIS_DIGITS]}…, within the bundle's policy of at most {found['max_age_days']} "
            f"days{extra}")


# -- building -------------------------------------------------------------------

def find_request(blocks: list[Block], request_id: str) -> tuple[int, int, dict]:
    """(height, index, entry) of request ``request_id``'s scoring entry."""
    for height, index, entry in entries_of(blocks, "scoring"):
        if entry["request_id"] == request_id:
            return height, index, entry
    raise LookupError(f"request {request_id} is not on this scoring chain")


def consent_bundle(blocks: list[Block], request_id: str, token: str, applicant: bytes, policy: ConsentPolicy,
                   sections: Mapping[str, Callable[[Excerpt], dict]] | None = None) -> dict:
    """The consent bundle of request ``request_id`` on ``blocks`` (a chain the caller verified), with the token
    the card center opened from the entry's sealed copy; ``sections``: optional parts, each built on the excerpt."""
    height, index, _ = find_request(blocks, request_id)
    excerpt = Excerpt(blocks)
    bundle = {
        "format": FORMAT, "kind": "consent", "request_id": request_id, "applicant_digest": applicant.hex(),
        "token": token, "policy": policy_document(policy), "record": excerpt.record(height, index),
    }
    built = {name: build(excerpt) for name, build in sorted((sections or {}).items())}
    if built:
        bundle["sections"] = built
    return {**bundle, "chain": excerpt.document()}
