"""A job's files in the coordinator's state folder: its checkpoint and key, its report or failure, its chain.

Once training starts the coordinator checkpoints the job (its spec, what the
parties and the alignment answered, and once evaluated the training result;
the steps themselves are on the chain) and keeps the Paillier private key
beside it, owner-only, so that a restarted coordinator resumes the job. Both
go when the job ends, however it ends; what stays is the report, or why the
job failed, for whoever follows it later.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from fedscore.job import JOB_ID_PATTERN, JobSpec, check_job_id
from fedscore.crypto.paillier import PrivateKey
from fedscore.files import write_atomically
from fedscore.protocol.training.driver import TrainingResult
from fedscore.transport import codec

CHECKPOINT_FILE = "coordinator.json"
KEY_FILE = "paillier.key"
FAILED_FILE = "failed.json"
REPORT_FILE = "job.json"
LEDGER_FILE = "ledger.sqlite"


@dataclass
class Checkpoint:
    """What the coordinator keeps of a job once training starts; the chain holds every step after that."""

    job_id: str
    spec: JobSpec
    replies: dict[str, dict]           # party -> role, features, rows
    summary: dict                      # what alignment found
    obfuscation_seconds: float
    started: float                     # wall-clock seconds since the epoch
    restarts: int = 0                  # times the coordinator restarted during this job
    result: TrainingResult | None = None   # once trained and evaluated

    def to_json(self) -> str:
        return json.dumps({
            "job_id": self.job_id, "spec": codec.spec_to_text(self.spec),
            "replies": self.replies, "summary": self.summary, "obfuscation_seconds": self.obfuscation_seconds,
            "started": self.started, "restarts": self.restarts,
            "result": dataclasses.asdict(self.result) if self.result is not None else None,
        }, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Checkpoint":
        document = json.loads(text)
        return cls(
            document["job_id"], codec.spec_from_text(document["spec"]), document["replies"], document["summary"],
            document["obfuscation_seconds"], document["started"], document["restarts"],
            TrainingResult(**document["result"]) if document.get("result") else None,
        )


class JobFolder:
    """The folder of one job under the coordinator's state folder."""

    def __init__(self, state_dir: Path, job_id: str):
        self.state_dir = state_dir
        self.job_id = job_id
        self.path = state_dir / "jobs" / check_job_id(job_id, "coordinator")

    @property
    def ledger_path(self) -> Path:
        return self.path / LEDGER_FILE

    # -- while the job runs ---------------------------------------------------

    def save(self, checkpoint: Checkpoint, private_key_json: str) -> None:
        """The checkpoint, and the key once (owner-only: it decrypts everything this job sends)."""
        if not (self.path / KEY_FILE).exists():
            write_atomically(self.path / KEY_FILE, private_key_json, mode=0o600)
        write_atomically(self.path / CHECKPOINT_FILE, checkpoint.to_json())

    def load(self) -> tuple[Checkpoint, PrivateKey]:
        checkpoint = Checkpoint.from_json((self.path / CHECKPOINT_FILE).read_text())
        return checkpoint, PrivateKey.from_json((self.path / KEY_FILE).read_text())

    def spec(self) -> JobSpec:
        """The spec of the checkpointed job, without reading the rest."""
        return codec.spec_from_text(json.loads((self.path / CHECKPOINT_FILE).read_text())["spec"])

    def drop_checkpoint(self) -> None:
        """A finished or failed job is never resumed; its key goes with it."""
        for name in (CHECKPOINT_FILE, KEY_FILE):
            (self.path / name).unlink(missing_ok=True)

    # -- once it ended --------------------------------------------------------

    def write_report(self, report: dict) -> None:
        write_atomically(self.path / REPORT_FILE, json.dumps(report, indent=2) + "\n")

    def record_failure(self, card_center: str, error: BaseException) -> None:
        """Why the job failed, for whoever follows it later (its card center only)."""
        write_atomically(self.path / FAILED_FILE, json.dumps(
            {"card_center": card_center, "error": f"{type(error).__name__}: {error}"}))

    def ended(self) -> tuple[str, str | None, str | None] | None:
        """(card center, report JSON, None) of a finished job, (card center, None, why) of a failed one, else None."""
        report = self.path / REPORT_FILE
        if report.is_file():
            text = report.read_text()
            center = next(p["name"] for p in json.loads(text)["parties"] if p["role"] == "card_center")
            return center, text, None
        try:
            failure = json.loads((self.path / FAILED_FILE).read_text())
        except (OSError, ValueError):
            return None
        return failure.get("card_center", ""), None, failure.get("error")


def checkpointed_jobs(state_dir: Path) -> list[JobFolder]:
    """The folders of the jobs that were training when the coordinator stopped."""
    return [JobFolder(state_dir, path.parent.name) for path in sorted((state_dir / "jobs").glob(f"*/{CHECKPOINT_FILE}"))
            if JOB_ID_PATTERN.fullmatch(path.parent.name)]
