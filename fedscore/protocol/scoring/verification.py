"""Identity verifications: a verifier's signed record that it saw an applicant, sealed on the scoring chain.

Before a card is activated the issuer must have seen the applicant, in person
or remotely (a face match against the national ID system, a bank-account
check). That check is an outside service; what fedscore keeps is the
evidence: the card center's verification system (a verifier it trusts, by
name and Ed25519 key, in its config's `verifiers`) signs a record of the
applicant's digest (consent.applicant_digest, never the id), the method, the
time, its own name and key, and the SHA-256 of each evidence file (the files
themselves stay with the card center).

The card center checks the signature and the verifier, then puts a
`verification` entry on the model's scoring chain: the applicant salted as a
scoring entry's is (only the card center can link it to a person), the
record sealed under the card center's own key (as a consent token is), the
record's SHA-256, an id and the time. Nothing in it is readable by anyone
else, and nothing in it is billed. For a dispute the card center opens the
record and hands it over with the files and the entry's inclusion proof
(fedscore.protocol.scoring.verification_evidence).
"""
from __future__ import annotations

import hashlib
import json
import re
import struct
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from fedscore.errors import DataError, DeniedError
from fedscore.job import NAME_PATTERN
from fedscore.ledger.scoring_rules import verification_entry
from fedscore.protocol.scoring.consent import applicant_digest
from fedscore.protocol.scoring.secrets import ScoringSecrets

DOMAIN = b"fedscore-verification/1\n"
METHOD = re.compile(r"^[a-z0-9][a-z0-9._-]{0,39}$")          # "face-match", "bank-account"
EVIDENCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")   # a file's base name
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
MAX_EVIDENCE_FILES = 16
MAX_CLOCK_SKEW = 300      # seconds a verification may be dated in the future
FIELDS = ("applicant", "method", "time", "verifier", "verifier_key", "evidence", "signature")   # of a record
VERIFICATION_ID_PREFIX = "v"   # "v" + 31 hex digits: never a request id (32 hex digits), so the two cannot collide


class VerificationRefused(DeniedError):
    """A verification the card center will not record: an untrusted verifier, or a signature that does not verify."""


@dataclass(frozen=True)
class VerificationRecord:
    """What a verifier signs: who (as a digest) was verified, how, when, by whom, on which evidence."""

    applicant: bytes                 # consent.applicant_digest of the applicant's id
    method: str
    time: int                        # unix seconds, when the verifier checked
    verifier: str                    # its name, as the card center's config lists it
    verifier_key: bytes              # its Ed25519 public key
    evidence: dict[str, str] = field(default_factory=dict)   # file name -> SHA-256 hex
    signature: bytes = b""

    def message(self) -> bytes:
        """The signed bytes: a domain tag, then every field, each length-prefixed, files in name order."""
        parts = [DOMAIN, self.applicant, _short(self.method), _short(self.verifier), self.verifier_key,
                 struct.pack(">qH", self.time, len(self.evidence))]
        for name, digest in sorted(self.evidence.items()):
            parts += [_short(name), bytes.fromhex(digest)]
        return b"".join(parts)

    def signed(self, key: SigningKey) -> "VerificationRecord":
        return VerificationRecord(self.applicant, self.method, self.time, self.verifier, bytes(key.verify_key),
                                  dict(self.evidence), key.sign(self.message()).signature)

    def to_dict(self) -> dict:
        return {
            "applicant": self.applicant.hex(), "method": self.method, "time": self.time, "verifier": self.verifier,
            "verifier_key": self.verifier_key.hex(), "evidence": dict(sorted(self.evidence.items())),
            "signature": self.signature.hex(),
        }

    def to_text(self) -> str:
        """Canonical JSON (ASCII, sorted keys): what is sealed, and what the chain's SHA-256 is of."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    def digest(self) -> str:
        return hashlib.sha256(self.to_text().encode("ascii")).hexdigest()

    @classmethod
    def from_dict(cls, document: object) -> "VerificationRecord":
        """A record read back (from a bundle, or unsealed); DataError naming the field that is not one."""
        if not isinstance(document, dict) or set(document) != set(FIELDS):
            raise DataError(f"a verification record has exactly the fields {', '.join(FIELDS)}")
        try:
            record = cls(bytes.fromhex(document["applicant"]), document["method"], document["time"],
                         document["verifier"], bytes.fromhex(document["verifier_key"]), dict(document["evidence"]),
                         bytes.fromhex(document["signature"]))
        except (TypeError, ValueError, AttributeError) as error:
            raise DataError(f"a verification record field is not of its type ({error})") from None
        check_shape(record)
        if len(record.verifier_key) != 32 or len(record.signature) != 64:
            raise DataError("a verification record's key must be 32 bytes and its signature 64")
        return record

    @classmethod
    def from_text(cls, text: str) -> "VerificationRecord":
        try:
            document = json.loads(text)
        except ValueError:
            raise DataError("the verification record is not JSON") from None
        return cls.from_dict(document)


def _short(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack(">H", len(raw)) + raw


def check_shape(record: VerificationRecord) -> None:
    """DataError naming the first field a verification record may not have as it is."""
    if len(record.applicant) != 32:
        raise DataError("the applicant must be a 32-byte digest")
    if not isinstance(record.method, str) or not METHOD.match(record.method):
        raise DataError(f"method {record.method!r}: lower-case letters, digits, '.', '_' and '-' (at most 40), "
                        "e.g. face-match or bank-account")
    if isinstance(record.time, bool) or not isinstance(record.time, int) or record.time <= 0:
        raise DataError("time must be a positive integer of unix seconds")
    if not isinstance(record.verifier, str) or not NAME_PATTERN.fullmatch(record.verifier):
        raise DataError(f"verifier {record.verifier!r} is not a name (letters, digits, '-' and '_')")
    if not isinstance(record.evidence, dict) or not 0 < len(record.evidence) <= MAX_EVIDENCE_FILES:
        raise DataError(f"evidence must name 1 to {MAX_EVIDENCE_FILES} files, each with its SHA-256")
    for name, digest in record.evidence.items():
        if not isinstance(name, str) or not EVIDENCE_NAME.match(name):
            raise DataError(f"evidence file name {name!r}: a base name of letters, digits, '.', '_' and '-'")
        if not isinstance(digest, str) or not SHA256_HEX.match(digest):
            raise DataError(f"evidence file {name!r}: its digest must be 64 lower-case hex digits (SHA-256)")


def signature_valid(record: VerificationRecord) -> bool:
    try:
        VerifyKey(record.verifier_key).verify(record.message(), record.signature)
        return True
    except (BadSignatureError, ValueError, TypeError):
        return False


def received_record(applicant_id: str, method: str, at: int, verifier: str, signature: bytes,
                    evidence: dict[str, str], trusted: dict[str, bytes]) -> VerificationRecord:
    """The record a verification system sent (its fields, the verifier by name), with the verifier's key from
    ``trusted``, checked (check_record): what the card center puts on its chain."""
    _check_trusted(verifier, trusted)
    if len(signature) != 64:
        raise VerificationRefused(f"the signature of verifier {verifier!r} is not an Ed25519 signature (64 bytes)")
    record = VerificationRecord(applicant_digest(applicant_id), method, at, verifier, trusted[verifier],
                                dict(evidence), signature)
    check_record(record, trusted)
    return record


def _check_trusted(verifier: str, trusted: dict[str, bytes]) -> None:
    if verifier not in trusted:
        names = ", ".join(sorted(trusted)) or "none"
        raise VerificationRefused(f"verifier {verifier!r} is not one this card center trusts "
                                  f"(verifiers in its config: {names})")


def check_record(record: VerificationRecord, trusted: dict[str, bytes], now: float | None = None) -> None:
    """Refuse (VerificationRefused, DataError) a record the card center must not put on its chain, saying why."""
    check_shape(record)
    _check_trusted(record.verifier, trusted)
    if record.verifier_key != trusted[record.verifier]:
        raise VerificationRefused(f"verifier {record.verifier!r} signed with a key this card center does not "
                                  "list for it")
    if record.time > (time.time() if now is None else now) + MAX_CLOCK_SKEW:
        raise DataError("the verification is dated in the future")
    if not signature_valid(record):
        raise VerificationRefused(f"the signature of verifier {record.verifier!r} does not verify over this "
                                  "record (applicant, method, time, verifier and evidence digests)")


def new_verification_id() -> str:
    return VERIFICATION_ID_PREFIX + uuid.uuid4().hex[:31]


def chain_entry(record: VerificationRecord, applicant_id: str, secrets: ScoringSecrets, time_ms: int,
                verification_id: str | None = None) -> dict:
    """The scoring chain's `verification` entry for ``record``: nothing personal in clear."""
    if record.applicant != applicant_digest(applicant_id):
        raise DataError("the record's applicant digest is not that of the applicant id sent with it")
    return verification_entry(
        verification_id or new_verification_id(), time_ms, secrets.salted_applicant(applicant_id),
        seal(record, secrets), record.digest(),
    )


def seal(record: VerificationRecord, secrets: ScoringSecrets) -> str:
    """Sealed under the card center's own key, the one consent tokens are sealed with (only it opens either)."""
    return secrets.seal_consent(record.to_text())


def unseal(sealed: str, secrets: ScoringSecrets) -> VerificationRecord:
    return VerificationRecord.from_text(secrets.open_consent(sealed))


def file_digests(paths: list[Path]) -> dict[str, str]:
    """{base name: SHA-256 hex} of evidence files, as a verifier signs them; DataError on two of one name."""
    digests: dict[str, str] = {}
    for path in paths:
        if path.name in digests:
            raise DataError(f"two evidence files are named {path.name!r}; the record names files by base name")
        digests[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def make_record(key: SigningKey, verifier: str, applicant_id: str, method: str, evidence: dict[str, str],
                at: int | None = None) -> VerificationRecord:
    """What a verification system does once its check passed: sign the record (the files stay where they are)."""
    record = VerificationRecord(applicant_digest(applicant_id), method, int(time.time()) if at is None else at,
                                verifier, bytes(key.verify_key), dict(evidence))
    check_shape(record)
    return record.signed(key)


def read_verifier_key(path: Path) -> SigningKey:
    """A verifier's signing key from its file: 64 hex digits of seed (lines starting with # are comments)."""
    try:
        text = path.read_text()
        seed = next(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))
        return SigningKey(bytes.fromhex(seed))
    except (StopIteration, ValueError, UnicodeDecodeError):
        raise DataError(f"verifier key {path}: expected 64 hex digits (an Ed25519 seed)") from None
