"""A member's Ed25519 signing key: made once at set-up, kept only in its own state folder."""
from __future__ import annotations

from pathlib import Path

from nacl.signing import SigningKey

from fedscore.files import write_secret

KEY_FILE = "identity/ed25519.key"


def load_or_create(state_dir: Path) -> SigningKey:
    """The member's key, created with owner-only permissions the first time."""
    path = state_dir / KEY_FILE
    if path.exists():
        return SigningKey(path.read_bytes())
    key = SigningKey.generate()
    write_secret(path, bytes(key))
    return key


def public_hex(key: SigningKey) -> str:
    return bytes(key.verify_key).hex()
