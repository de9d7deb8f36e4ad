"""Consent tokens: the applicant's own signature allowing one card center to ask about them.

An identity provider the partners trust (an issuer) certifies each
applicant's Ed25519 key for their applicant id; the applicant signs the
consent message: their id, the card center, the purpose and the time. A
partner verifies both signatures before it looks the applicant up, so
neither the card center nor anybody else can make a consent the applicant
did not give, and a later dispute can be settled from the token alone.

The applicant id never appears in the token: both signatures cover
`applicant_digest(id)`, the same digest the card center sends a partner to
look the applicant up with.

Token layout (then base64url, without padding, for CSV files and JSON):
version (1) | issuer key (32) | applicant key (32) | certificate (64) |
issued_at, unix seconds (8) | card center (1 + n) | purpose (1 + n) | signature (64)

A party accepts a consent under its `ConsentPolicy` (the issuers it trusts,
the purposes, how old) and acts on it at most `max_uses` times, whatever
model is asked: `ConsentUses` counts the uses on disk, so neither a restart
nor another model lets a consent be replayed.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import struct
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from fedscore.errors import ConsentError
from fedscore.model.data import normalise_id
from fedscore.protocol.scoring.journal import Journal

VERSION = 1
PURPOSE = "credit-card-application"
APPLICANT_DOMAIN = b"fedscore-applicant/1\n"
CERTIFICATE_DOMAIN = b"fedscore-consent-key/1\n"
CONSENT_DOMAIN = b"fedscore-consent/1\n"
MAX_CLOCK_SKEW = 300          # seconds a token may be dated in the future
DEFAULT_MAX_AGE = 30 * 86_400  # a consent for a credit check is good for 30 days unless a party says otherwise


def applicant_digest(applicant_id: str) -> bytes:
    """SHA-256 of the normalised id under a fixed domain: what crosses the wire instead of the id."""
    return hashlib.sha256(APPLICANT_DOMAIN + normalise_id(applicant_id).encode("utf-8")).digest()


@dataclass(frozen=True)
class ConsentToken:
    issuer: bytes           # issuer's public key
    applicant_key: bytes    # the applicant's public key, certified by the issuer
    certificate: bytes      # issuer's signature over the applicant's digest and key
    issued_at: int          # unix seconds
    card_center: str
    purpose: str
    signature: bytes        # the applicant's signature over the consent message

    def to_text(self) -> str:
        return _token_text(self)

    @classmethod
    def from_text(cls, text: str) -> "ConsentToken":
        try:
            raw = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
            if raw[0] != VERSION:
                raise ValueError(f"version {raw[0]}")
            issuer, applicant_key, certificate = raw[1:33], raw[33:65], raw[65:129]
            (issued_at,) = struct.unpack(">q", raw[129:137])
            at = 137
            card_center = raw[at + 1 : at + 1 + raw[at]].decode("utf-8")
            at += 1 + raw[at]
            purpose = raw[at + 1 : at + 1 + raw[at]].decode("utf-8")
            at += 1 + raw[at]
            signature = raw[at:]
            if len(signature) != 64 or len(certificate) != 64:
                raise ValueError("truncated")
        except (ValueError, IndexError, struct.error, UnicodeDecodeError) as error:
            raise ConsentError(f"the consent token is not one fedscore can read ({error})") from None
        return cls(issuer, applicant_key, certificate, issued_at, card_center, purpose, signature)

    def digest(self) -> str:
        """What the chain records of the token in clear: its SHA-256 (the token itself goes encrypted)."""
        return _token_digest(self)


# a request's token is written out and digested several times (its use count, its chain entry, its answer):
# once each per token is enough
@functools.lru_cache(maxsize=4096)
def _token_text(token: ConsentToken) -> str:
    card_center, purpose = token.card_center.encode(), token.purpose.encode()
    raw = (
        bytes([VERSION]) + token.issuer + token.applicant_key + token.certificate + struct.pack(">q", token.issued_at)
        + bytes([len(card_center)]) + card_center + bytes([len(purpose)]) + purpose + token.signature
    )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@functools.lru_cache(maxsize=4096)
def _token_digest(token: ConsentToken) -> str:
    return hashlib.sha256(_token_text(token).encode("ascii")).hexdigest()


def certificate_message(digest: bytes, applicant_key: bytes) -> bytes:
    return CERTIFICATE_DOMAIN + digest + applicant_key


def consent_message(digest: bytes, card_center: str, purpose: str, issued_at: int) -> bytes:
    card, why = card_center.encode(), purpose.encode()
    return CONSENT_DOMAIN + digest + bytes([len(card)]) + card + bytes([len(why)]) + why + struct.pack(">q", issued_at)


def certify_applicant(issuer: SigningKey, applicant_id: str, applicant_key: bytes) -> bytes:
    """The issuer's certificate binding an applicant's public key to their id (done once, at enrolment)."""
    return issuer.sign(certificate_message(applicant_digest(applicant_id), applicant_key)).signature


def give_consent(
    applicant: SigningKey, certificate: bytes, issuer: bytes, applicant_id: str, card_center: str,
    purpose: str = PURPOSE, issued_at: int | None = None,
) -> ConsentToken:
    """What an applicant's device does when they agree to the check."""
    issued_at = int(time.time()) if issued_at is None else issued_at
    message = consent_message(applicant_digest(applicant_id), card_center, purpose, issued_at)
    return ConsentToken(
        issuer, bytes(applicant.verify_key), certificate, issued_at, card_center, purpose,
        applicant.sign(message).signature,
    )


def check_consent(
    token: ConsentToken,
    digest: bytes,
    card_center: str,
    trusted_issuers: Collection[bytes],
    purposes: Collection[str] = (PURPOSE,),
    max_age: int = DEFAULT_MAX_AGE,
    now: float | None = None,
) -> None:
    """Raise ConsentError saying why ``token`` does not let ``card_center`` ask about the applicant ``digest``."""
    now = time.time() if now is None else now
    if token.issuer not in trusted_issuers:
        raise ConsentError(f"the consent's key was certified by an issuer this party does not trust ({token.issuer.hex()[:16]}…)")
    if token.card_center != card_center:
        raise ConsentError(f"the consent was given to {token.card_center!r}, not to {card_center!r}")
    if token.purpose not in purposes:
        raise ConsentError(f"the consent is for {token.purpose!r}, not for {', '.join(sorted(purposes))}")
    if token.issued_at > now + MAX_CLOCK_SKEW:
        raise ConsentError("the consent is dated in the future")
    if token.issued_at < now - max_age:
        raise ConsentError(f"the consent is {int((now - token.issued_at) // 86_400)} days old; this party accepts at most {max_age // 86_400} days")
    try:
        VerifyKey(token.issuer).verify(certificate_message(digest, token.applicant_key), token.certificate)
    except (BadSignatureError, ValueError):
        raise ConsentError("the consent's key is not certified for this applicant") from None
    try:
        VerifyKey(token.applicant_key).verify(
            consent_message(digest, token.card_center, token.purpose, token.issued_at), token.signature
        )
    except (BadSignatureError, ValueError):
        raise ConsentError("the applicant's signature on the consent does not verify") from None


@dataclass(frozen=True)
class ConsentPolicy:
    """Which consents a party accepts, and how often each."""

    trusted_issuers: frozenset[bytes]
    purposes: frozenset[str] = frozenset({PURPOSE})
    max_age: int = DEFAULT_MAX_AGE
    max_uses: int = 3          # one application, and a retry or two

    def check(self, token: ConsentToken, digest: bytes, card_center: str) -> None:
        check_consent(token, digest, card_center, self.trusted_issuers, self.purposes, self.max_age)


def _recent_use(use: dict, cutoff: float) -> bool:
    """A use recorded whole, of a consent that may still be valid."""
    issued_at = use.get("issued_at")
    return isinstance(use.get("digest"), str) and isinstance(issued_at, (int, float)) and issued_at >= cutoff


class ConsentUses:
    """How often this party has acted on each consent, so a consent cannot be replayed for more checks
    than the applicant agreed to. One per party, whatever model is asked (a daemon keeps it in its state
    folder), journalled (digest and date of each use) for as long as a consent can be valid, so
    neither a restart nor another model resets it."""

    def __init__(self, path: Path, policy: ConsentPolicy):
        self.path, self.policy = path, policy
        self._counts: dict[str, int] = {}
        self._journal = Journal(path)
        cutoff = time.time() - policy.max_age - 86_400
        for use in self._journal.keep_only(lambda use: _recent_use(use, cutoff)):
            self._counts[use["digest"]] = self._counts.get(use["digest"], 0) + 1

    def admit(self, token: ConsentToken, where: str) -> None:
        """Count one use of ``token``, or refuse it if it has been used up."""
        digest = token.digest()

        def count() -> None:   # under the journal's lock, so two requests cannot both take the last use
            used = self._counts.get(digest, 0)
            if used >= self.policy.max_uses:
                raise ConsentError(f"{where}: this consent has been used {used} times; it allows {self.policy.max_uses}")
            self._counts[digest] = used + 1

        self._journal.append({"digest": digest, "issued_at": token.issued_at}, before=count)

    def close(self) -> None:
        self._journal.close()
