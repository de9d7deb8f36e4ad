"""A party's trained model on disk: its own columns, scaling and weights, nothing else."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

FORMAT = "fedscore.party-model/1"


@dataclass(frozen=True)
class PartyModel:
    job_id: str
    job_name: str
    party: str
    role: str
    id_columns: list[str]
    features: list[str]
    mean: list[float]
    scale: list[float]
    weights: list[float]
    intercept: float | None = None   # the card center's only

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **asdict(self)}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "PartyModel":
        document = json.loads(text)
        if document.pop("format", None) != FORMAT:
            raise ValueError(f"not a {FORMAT} model file")
        return cls(**document)


def write_atomically(path: Path, text: str | bytes, mode: int = 0o644) -> None:
    """Write to a temporary file beside ``path`` and rename: a reader sees all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb" if isinstance(text, bytes) else "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read in blocks (data files can be large)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
