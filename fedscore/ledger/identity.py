"""A member's Ed25519 signing key: made once at set-up, kept only in its own state folder."""
from __future__ import annotations

import os
from pathlib import Path

from nacl.signing import SigningKey

KEY_FILE = "identity/ed25519.key"


def load_or_create(state_dir: Path) -> SigningKey:
    """The member's key, created with owner-only permissions the first time."""
    path = state_dir / KEY_FILE
    if path.exists():
        return SigningKey(path.read_bytes())
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = SigningKey.generate()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(bytes(key))
    return key


def public_hex(key: SigningKey) -> str:
    return bytes(key.verify_key).hex()
