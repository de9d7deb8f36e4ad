"""A party's checkpoint of a training job: everything but the data needed to pick the job up again after
the daemon died, rewritten after every step and removed once the job is closed, aborted or settled."""
from __future__ import annotations

import base64
import json
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedscore.config import JobSpec
from fedscore.crypto.paillier import PublicKey
from fedscore.errors import FedscoreError, ProtocolError, UnknownJobError
from fedscore.ledger.block import decode_entry
from fedscore.ledger.store import LedgerStore
from fedscore.model.model_file import write_atomically
from fedscore.transport import codec

log = logging.getLogger("fedscore.party")
CHECKPOINT_FILE = "checkpoint.json"        # the job's training state after its last step, rewritten each step
ALIGNED_ROWS_FILE = "aligned-rows.bin"     # this party's rows held by every party (little-endian int64)


@dataclass
class Checkpoint:
    """What a job's checkpoint holds."""

    spec: JobSpec
    public_key: PublicKey
    aligned_rows: np.ndarray              # table rows held by every party
    data_sha256: str                      # of the data file, to resume only on the same data
    training: dict                        # the session's own checkpoint
    aligned_count: int                    # the training chain's facts: rows aligned, and overlaps
    overlaps: dict


def save_checkpoint(folder: Path, job_id: str, party: str, checkpoint: Checkpoint) -> None:
    rows_file = folder / ALIGNED_ROWS_FILE
    if not rows_file.exists():
        write_atomically(rows_file, checkpoint.aligned_rows.astype("<i8").tobytes(), mode=0o600)
    document = {
        "job_id": job_id, "party": party, "spec": codec.spec_to_text(checkpoint.spec),
        "public_key": base64.b64encode(checkpoint.public_key.to_bytes()).decode(),
        "data_sha256": checkpoint.data_sha256, "aligned_rows": checkpoint.aligned_count, "overlaps": checkpoint.overlaps,
        "training": checkpoint.training,
    }
    write_atomically(folder / CHECKPOINT_FILE, json.dumps(document), mode=0o600)


def read_checkpoint(folder: Path, job_id: str, label: str) -> Checkpoint:
    try:
        document = json.loads((folder / CHECKPOINT_FILE).read_text())
        return Checkpoint(
            spec=codec.spec_from_text(document["spec"]),
            public_key=PublicKey.from_bytes(base64.b64decode(document["public_key"])),
            aligned_rows=np.frombuffer((folder / ALIGNED_ROWS_FILE).read_bytes(), dtype="<i8").astype(np.int64),
            data_sha256=document["data_sha256"], training=document["training"],
            aligned_count=document["aligned_rows"], overlaps=document["overlaps"],
        )
    except FileNotFoundError:
        raise UnknownJobError(f"{label}: no job {job_id!r} here, and no checkpoint to resume it from") from None
    except (ValueError, KeyError, TypeError, FedscoreError) as error:
        raise ProtocolError(f"{label}: the checkpoint of job {job_id!r} is not readable ({error})") from None


def drop_checkpoint(folder: Path) -> None:
    """A closed, aborted or settled job is never resumed: its weights and row positions go."""
    for name in (CHECKPOINT_FILE, ALIGNED_ROWS_FILE):
        (folder / name).unlink(missing_ok=True)


def drop_settled_checkpoints(state_dir: Path) -> None:
    """At start: a checkpoint whose job is settled on this party's own chain will never be resumed (the
    daemon died before the coordinator's CloseJob reached it)."""
    for checkpoint in state_dir.glob(f"jobs/*/{CHECKPOINT_FILE}"):
        replica = checkpoint.parent / "ledger.sqlite"
        if not replica.is_file():
            continue
        store = LedgerStore(replica, read_only=True)
        try:
            settled = any(decode_entry(e).get("kind") == "settlement" for b in store.blocks() for e in b.entries)
        except (sqlite3.Error, ValueError):
            settled = False
        finally:
            store.close()
        if settled:
            drop_checkpoint(checkpoint.parent)
            log.info("job %s is settled: its checkpoint is removed", checkpoint.parent.name)
