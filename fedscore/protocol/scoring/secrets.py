"""The card center's scoring secrets: two random keys kept in its state folder, never sent.

The applicant salt keys what links a request to people and partners: the
chain records an applicant as an HMAC of their id under it, a partner is
asked under a tag derived from it, and the key the card center shares with
each partner for the marks is derived from it; without it, the chain names
nobody and one partner's tags cannot be matched to another's. The consent key
seals the consent tokens the chain carries, so only the card center can open
one, for a dispute.
"""
from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from nacl.secret import SecretBox

from fedscore.errors import ProtocolError
from fedscore.files import write_secret
from fedscore.ledger.scoring_rules import pair_key, partner_tag
from fedscore.model.data import normalise_id

SECRET_BYTES = 32


def _secret_file(path: Path) -> bytes:
    """The random secret kept in ``path``, made the first time."""
    if not path.exists():
        try:
            write_secret(path, os.urandom(SECRET_BYTES))
        except FileExistsError:   # another process made it first: both use that one
            pass
    value = path.read_bytes()
    if len(value) != SECRET_BYTES:
        raise ProtocolError(f"{path} is damaged: a {SECRET_BYTES}-byte secret was expected, it holds {len(value)} bytes")
    return value


class ScoringSecrets:
    """The card center's scoring secrets: the salt of applicant digests and request tags, and the consent key."""

    def __init__(self, salt: bytes, consent_key: bytes):
        self.salt = salt
        self._box = SecretBox(consent_key)

    @classmethod
    def load_or_create(cls, folder: Path) -> "ScoringSecrets":
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return cls(_secret_file(folder / "applicant-salt.key"), _secret_file(folder / "consent.key"))

    def salted_applicant(self, applicant_id: str) -> str:
        return hmac.new(self.salt, normalise_id(applicant_id).encode("utf-8"), hashlib.sha256).hexdigest()

    def tag(self, request_id: str, partner: str) -> str:
        return partner_tag(self.salt, request_id, partner)

    def pair_key(self, job_id: str, partner: str) -> bytes:
        return pair_key(self.salt, job_id, partner)

    def seal_consent(self, token: str) -> str:
        return self._box.encrypt(token.encode("ascii")).hex()

    def open_consent(self, sealed: str) -> str:
        """For a dispute: the token behind a chain entry (only the card center can do this)."""
        return self._box.decrypt(bytes.fromhex(sealed)).decode("ascii")
