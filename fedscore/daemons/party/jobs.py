"""A party's training jobs: the table of the jobs it holds, and each job's life at this party.

The coordinator prepares a job (its data is loaded and checked against this
party's policy), starts it once aligned (the training session opens),
finishes it (the model and this party's page are written), and closes or
aborts it. A job whose daemon died mid-training is restored from its
checkpoint and resumed at the chain's last step.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
from nacl.signing import SigningKey

from fedscore.crypto.paillier import PublicKey
from fedscore.crypto.pool import CryptoPool
from fedscore.daemons.access import require
from fedscore.daemons.config import DaemonConfig, resolve_data_file
from fedscore.daemons.party.budget import BudgetJournal
from fedscore.daemons.party.checkpoint import (
    Checkpoint, drop_checkpoint, drop_settled_checkpoints, read_checkpoint, save_checkpoint,
)
from fedscore.errors import AccessError, ConfigError, DataError, FedscoreError, ProtocolError, UnknownJobError
from fedscore.files import file_digest, write_atomically
from fedscore.job import JobSpec, Step, check_job_id
from fedscore.ledger import identity
from fedscore.ledger.entries import Facts
from fedscore.ledger.entries import digest as entry_digest
from fedscore.ledger.member import LedgerMember
from fedscore.ledger.training_rules import TrainingRules, last_step
from fedscore.model.data import PartyTable, load_party_table
from fedscore.model.model_file import PartyModel
from fedscore.monitoring.baseline import BASELINE_FILE, write_baseline
from fedscore.proto import fedscore_pb2 as pb
from fedscore.protocol.alignment import CardCenterAlignment, PartnerAlignment, PsiParty
from fedscore.protocol.budget import BudgetPolicy
from fedscore.protocol.training.card_center import CardCenterSession
from fedscore.protocol.training.partner import PartnerSession
from fedscore.protocol.training.session import PartySession
from fedscore.transport import codec
from fedscore.transport.clients.party import PartyJobClient
from fedscore.transport.rpc import PARTNER_SHARE

log = logging.getLogger("fedscore.party")
MODEL_FILE = "model.json"
REPORT_FILE = "report.html"   # a party's own page, beside its model.json


@dataclass
class PreparedJob:
    """A job on this party: its data, then its alignment, then its training session."""

    job_id: str
    spec: JobSpec
    table: PartyTable
    public_key: PublicKey | None                                         # None: prepared to align only
    alignment: PsiParty | None                                           # None once restored from a checkpoint
    ledger: LedgerMember
    partners: dict[str, PartyJobClient] = field(default_factory=dict)   # the card center's only
    aligned_rows: np.ndarray | None = None                               # table rows held by every party
    session: PartySession | None = None
    data_sha256: str = ""                                                # of the data file, to resume only on the same data

    def release(self) -> None:
        """Its connections and its replica; the session's background work stops."""
        if self.session is not None:
            self.session.reserve.stop()
            if self.session.reserve.made_in_background:
                log.info("job %s: %d obfuscators made in the background", self.job_id, self.session.reserve.made_in_background)
        for client in self.partners.values():
            client.close()
        self.ledger.close()


def require_card_center(context: grpc.ServicerContext, job: PreparedJob, label: str) -> None:
    """The caller must be THIS job's card center: known only once the request named the job."""
    require(context, job.spec.card_center.name, f"{label}: job {job.job_id}")


class Jobs:
    """The jobs this party holds, and their life from PrepareJob to CloseJob."""

    def __init__(self, config: DaemonConfig, pool: CryptoPool, key: SigningKey):
        self.config = config
        self.name = config.name
        self.label = f"party {config.name!r}"
        self.pool = pool
        self.key = key
        self._jobs: dict[str, PreparedJob] = {}
        self._lock = threading.Lock()
        self.budget = BudgetJournal(config.state_dir, BudgetPolicy(config.max_jobs, config.window_days), config.name)
        drop_settled_checkpoints(config.state_dir)

    def job_dir(self, job_id: str) -> Path:
        return self.config.state_dir / "jobs" / check_job_id(job_id, self.label)

    def get(self, job_id: str) -> PreparedJob:
        check_job_id(job_id, self.label)
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise UnknownJobError(f"{self.label}: no job {job_id!r} here (never prepared, finished or aborted)")
        return job

    def listed(self) -> list[PreparedJob]:
        with self._lock:
            return [job for _, job in sorted(self._jobs.items())]

    def session(self, job: PreparedJob, kind: type = PartySession) -> PartySession:
        """The job's training session, which must be of ``kind`` (a call for the other role is refused)."""
        if job.session is None:
            raise ProtocolError(f"{self.label}: job {job.job_id!r} has not started training")
        if not isinstance(job.session, kind):
            raise ProtocolError(f"{self.label}: this call is not for a {job.session.role} in job {job.job_id!r}")
        return job.session

    def checkpoint(self, job: PreparedJob) -> None:
        """Written after every step: everything but the data needed to pick the job up after a crash."""
        facts = job.ledger.rules.facts
        state = Checkpoint(job.spec, job.public_key, job.aligned_rows, job.data_sha256, job.session.checkpoint(),
                           facts.aligned_rows, facts.overlaps)
        save_checkpoint(self.job_dir(job.job_id), job.job_id, self.name, state)

    # -- PrepareJob ------------------------------------------------------------

    def prepare(self, request: pb.PrepareJobRequest) -> pb.PrepareJobReply:
        spec = codec.spec_from_proto(request.job)
        self._check_policy(request, spec)
        me = spec.party(self.name)
        public_key = PublicKey.from_bytes(request.public_key) if request.public_key else None   # none: align only
        if public_key is not None and public_key.bits != spec.key_bits:
            raise ProtocolError(f"{self.label}: public key has {public_key.bits} bits, the job says {spec.key_bits}")
        path = resolve_data_file(self.config.data_dir, me.data, self.name)
        table = load_party_table(path, list(me.id_columns), me.label, party=self.name, lenient=spec.binning.enabled,
                                 shown=me.data, memory_mib=self.config.memory_mib)
        # a partner counts the job against the card center's budget once it takes it (align-only jobs too)
        budget = None if me.is_card_center else self.budget.admit(spec.card_center.name, request.job_id, spec.digest())
        facts = self._facts(spec, public_key)
        facts.budget = None if budget is None else budget.to_dict()
        ledger = LedgerMember(self.name, self.key, self.job_dir(request.job_id) / "ledger.sqlite", TrainingRules(facts))
        job = PreparedJob(
            request.job_id, spec, table, public_key, self._aligner(me.is_card_center, table, request.job_id), ledger,
            self._partner_clients(request.job_id, spec, public_key), data_sha256=file_digest(path),
        )
        with self._lock:
            self._jobs[request.job_id] = job
        log.info("job %s prepared: %d rows, %d features from %s", request.job_id, table.rows, len(table.feature_names), path)
        return pb.PrepareJobReply(
            party=self.name, role="card_center" if me.is_card_center else "partner", rows=table.rows,
            features=len(table.feature_names), state_dir=str(self.config.state_dir),
            signing_key=bytes(self.key.verify_key), budget=None if budget is None else pb.BudgetUse(**budget.to_dict()),
        )

    def _aligner(self, is_card_center: bool, table: PartyTable, job_id: str) -> PsiParty:
        """This party's side of the job's private set intersection; a partner's bounds the card center's set."""
        if is_card_center:
            return CardCenterAlignment(self.name, table, job_id, self.pool)
        aligner = PartnerAlignment(self.name, table, job_id, self.pool)
        aligner.max_set_ratio = self.config.max_set_ratio
        return aligner

    def _check_policy(self, request: pb.PrepareJobRequest, spec: JobSpec) -> None:
        """This party's own rules for the jobs it takes: addressed to it, once, from a card center it names,
        with keys long enough."""
        if request.party != self.name:
            raise ConfigError(
                f"{self.label}: the job addresses this daemon as {request.party!r}; check the job's party addresses"
            )
        with self._lock:
            if request.job_id in self._jobs:
                raise ProtocolError(f"{self.label}: job {request.job_id!r} is already prepared here")
        center = spec.card_center.name
        if center != self.name and center not in self.config.card_centers:
            if not self.config.card_centers:
                raise AccessError(
                    f"{self.label}: takes jobs from no card center, its config names none; refused a job with card "
                    f'center {center!r}. To take its jobs, add card_centers = ["{center}"] to [party]'
                )
            raise AccessError(
                f"{self.label}: takes jobs only from card centers {', '.join(self.config.card_centers)}; "
                f"refused a job with card center {center!r} (add it to card_centers in [party] to take its jobs)"
            )
        if spec.key_bits < self.config.min_key_bits:
            raise ConfigError(
                f"{self.label}: refuses {spec.key_bits}-bit keys; its policy asks for at least {self.config.min_key_bits}"
            )

    def _facts(self, spec: JobSpec, public_key: PublicKey | None) -> Facts:
        """What this member knows first-hand of a job from the start, to check the chain's blocks against."""
        return Facts(
            self.name, identity.public_hex(self.key), role="card_center" if spec.party(self.name).is_card_center else "partner",
            members=frozenset({"coordinator", *(p.name for p in spec.parties)}), job_digest=spec.digest(),
            paillier_fingerprint="" if public_key is None else public_key.fingerprint(), fees=spec.fees.to_dict(),
        )

    def _partner_clients(self, job_id: str, spec: JobSpec, public_key: PublicKey | None) -> dict[str, PartyJobClient]:
        """The card center dials each partner of the job (a partner dials nobody)."""
        if not spec.party(self.name).is_card_center:
            return {}
        timeout = spec.rpc_timeout * PARTNER_SHARE
        return {
            p.name: PartyJobClient(p.name, p.address, job_id, public_key, timeout, self.config.tls, f"partner {p.name!r}")
            for p in spec.partners
        }

    def committed(self, job_id: str) -> None:
        """A block joined the job's chain: a partner keeps the card center's label digest from the alignment entry
        in its journal, beside its own aligned rows' digest."""
        job = self.get(job_id)
        if job.spec.party(self.name).is_card_center or job.ledger.rules.seen.steps:   # alignment comes before steps
            return
        entries = job.ledger.entries()
        if entries and entries[-1].get("kind") == "alignment" and entries[-1].get("label_digest"):
            self.budget.note(job_id, label_digest=str(entries[-1]["label_digest"]))

    # -- StartTraining ---------------------------------------------------------

    def start(self, request: pb.JobRef) -> pb.StartTrainingReply:
        job = self.get(request.job_id)
        if job.public_key is None:
            raise ProtocolError(f"{self.label}: job {request.job_id!r} was prepared to align only (no Paillier key); it cannot train")
        if job.aligned_rows is None or job.session is not None:
            raise ProtocolError(f"{self.label}: job {request.job_id!r} is not aligned, or already training")
        session = self._open_session(job)
        session.check_batch(self.config.min_batch_rows, self.label)   # max(min_batch_rows, min_rows_per_column × columns)
        seconds = session.prepare_obfuscators()
        job.session = session
        if isinstance(session, PartnerSession) and session.encoding.binned:
            # its bin codes are all it reads from now on: the values' 8 bytes each go (once the session stands,
            # so a start refused above can be asked again)
            job.table.release_features()
            session.table.release_features()   # the aligned rows' copy, when not every row aligned
        self.checkpoint(job)
        log.info("job %s training on %d aligned of %d rows", request.job_id, len(job.aligned_rows), job.table.rows)
        return pb.StartTrainingReply(obfuscation_seconds=seconds, columns=session.weights.size)

    def _open_session(self, job: PreparedJob) -> PartySession:
        common = (job.job_id, job.spec, self.name, job.table.subset(job.aligned_rows), job.public_key, self.pool)
        if job.partners:
            partners = {name: client.training for name, client in job.partners.items()}
            session: PartySession = CardCenterSession(*common, partners=partners)
        else:
            session = PartnerSession(*common, feature_names=self.config.feature_names)
        session.facts = job.ledger.rules.facts
        self.pool.warm(job.public_key, job.spec.obfuscation)
        return session

    # -- FinishJob, CloseJob, AbortJob -------------------------------------------

    def finish(self, request: pb.JobRef) -> pb.FinishJobReply:
        job = self.get(request.job_id)
        session = self.session(job)
        path = self.job_dir(request.job_id) / MODEL_FILE
        model = session.model()
        text = model.to_json()
        write_atomically(path, text)
        job.ledger.rules.facts.model_digest = entry_digest(text.encode("utf-8"))
        log.info("job %s finished: model written to %s", request.job_id, path)
        if isinstance(session, CardCenterSession):
            self._write_baseline(job, session)
        return pb.FinishJobReply(
            model_path=str(path), state_dir=str(self.config.state_dir),
            model_digest=job.ledger.rules.facts.model_digest, ledger_path=str(job.ledger.path),
            report_path=self._write_page(request.job_id, session, model),
        )

    def _write_baseline(self, job: PreparedJob, session: CardCenterSession) -> None:
        """The card center's monitoring baseline beside its model (fedscore.monitoring.baseline); the expected
        answer rate of each partner is the share of the card center's applicants it held at alignment."""
        rates = {name: count / job.table.rows for name, count in job.ledger.rules.facts.overlaps.items()}
        try:
            baseline = session.monitoring_baseline(rates)
        except Exception:   # noqa: BLE001 - as the page: the trained model is what the job is for
            log.exception("job %s: could not compute the monitoring baseline", job.job_id)
            return
        if baseline is None:   # evaluated before a restart: the scores are gone
            log.warning("job %s: no monitoring baseline (the evaluation was before a restart); "
                        "`fedscore monitor` needs one: train the job again to have it", job.job_id)
            return
        write_baseline(self.job_dir(job.job_id), baseline)

    def _write_page(self, job_id: str, session: PartySession, model: PartyModel) -> str:
        """This party's own HTML page beside its model; a page that cannot be drawn is logged, not fatal:
        the trained model is what the job is for."""
        from fedscore.report.html import render_party_page   # matplotlib loads only when a job finishes

        path = self.job_dir(job_id) / REPORT_FILE
        evaluation = session.evaluation if isinstance(session, CardCenterSession) else None
        try:
            write_atomically(path, render_party_page(model, session.table.rows, len(session.train_rows), evaluation))
        except Exception:   # noqa: BLE001 - any drawing failure; the job's model stands
            log.exception("job %s: could not write this party's report page %s", job_id, path)
            return ""
        return str(path)

    def close(self, request: pb.JobRef) -> pb.Empty:
        self._forget(request.job_id)
        return pb.Empty()

    def abort(self, request: pb.JobRef) -> pb.Empty:
        """Drop the job and any model it wrote; its ledger stays as the record of what happened."""
        self._forget(request.job_id)
        for name in (MODEL_FILE, REPORT_FILE, BASELINE_FILE):
            (self.job_dir(request.job_id) / name).unlink(missing_ok=True)
        log.info("job %s aborted", request.job_id)
        return pb.Empty()

    def _forget(self, job_id: str) -> None:
        """In memory, and its checkpoint (a closed or aborted job is never resumed)."""
        with self._lock:
            job = self._jobs.pop(job_id, None)
        drop_checkpoint(self.job_dir(job_id))
        if job is not None:
            job.release()

    # -- ResumeJob ---------------------------------------------------------------

    def resume(self, request: pb.ResumeRequest) -> pb.Empty:
        """After a member died mid-job: rewind to the last step on the chain, restoring the job if this daemon restarted."""
        job = self._held_or_restored(request.job_id)
        if job.session is None:
            raise ProtocolError(f"{self.label}: job {request.job_id!r} had not started training; it cannot resume")
        step = Step(request.epoch, request.batch) if request.started else None
        ledger = job.ledger
        ledger.abandon_uncommitted()
        ledger.commit(codec.block_from_proto(request.head))   # the coordinator's head: committed already, or the next
        if last_step(ledger.entries()) != step:
            raise ProtocolError(
                f"{self.label}: its chain of job {request.job_id!r} ends after {last_step(ledger.entries())}, "
                f"not after {step}; it cannot resume there"
            )
        ledger.rules.forget_steps_off_chain()
        job.session.resume_after(step)
        self.checkpoint(job)
        log.info("job %s resumes after %s", request.job_id, step or "its start")
        return pb.Empty()

    def _held_or_restored(self, job_id: str) -> PreparedJob:
        check_job_id(job_id, self.label)
        with self._lock:
            job = self._jobs.get(job_id)
        if job is not None:
            return job
        restored = self._restore(job_id)
        with self._lock:
            job = self._jobs.setdefault(job_id, restored)
        if job is not restored:   # another resume got there first
            restored.release()
        return job

    def _restore(self, job_id: str) -> PreparedJob:
        """A job this daemon was training before it restarted, from its checkpoint, on the same data."""
        folder = self.job_dir(job_id)
        saved = read_checkpoint(folder, job_id, self.label)
        me = saved.spec.party(self.name)
        path = resolve_data_file(self.config.data_dir, me.data, self.name)
        if file_digest(path) != saved.data_sha256:
            raise DataError(f"{self.label}: data file {me.data!r} changed since job {job_id!r} started; it cannot resume")
        table = load_party_table(path, list(me.id_columns), me.label, party=self.name,
                                 lenient=saved.spec.binning.enabled, shown=me.data, memory_mib=self.config.memory_mib)
        facts = self._facts(saved.spec, saved.public_key)
        facts.aligned_rows, facts.overlaps = saved.aligned_count, saved.overlaps
        model_file = folder / MODEL_FILE
        if model_file.is_file():   # it had finished: the job's end must carry this model's digest
            facts.model_digest = entry_digest(model_file.read_bytes())
        ledger = LedgerMember(self.name, self.key, folder / "ledger.sqlite", TrainingRules(facts))
        partners = self._partner_clients(job_id, saved.spec, saved.public_key)
        job = PreparedJob(job_id, saved.spec, table, saved.public_key, None, ledger, partners, saved.aligned_rows,
                          data_sha256=saved.data_sha256)
        try:
            job.session = self._open_session(job)
            job.session.restore(saved.training)
        except (ValueError, KeyError, TypeError, FedscoreError) as error:
            job.session = None
            job.release()
            raise ProtocolError(f"{self.label}: the checkpoint of job {job_id!r} does not fit the job ({error})") from None
        log.info("job %s restored from its checkpoint (last step here: %s)", job_id, job.session.checkpoint()["done"])
        return job
