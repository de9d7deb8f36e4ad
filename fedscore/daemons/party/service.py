"""The party daemon: runs next to a party's data and answers the protocol's RPCs.

It only moves bytes between gRPC and the party's session
(fedscore.protocol.partner / card_center), checks what arrives, and writes
the party's model to its own state folder. The card center's daemon also
dials the partners named in the job. Once a model is trained, the same
daemon serves it (fedscore.daemons.party.scoring).
"""
from __future__ import annotations

import base64
import json
import logging
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedscore import __version__
from fedscore.config import DaemonConfig, JobSpec, check_job_id, resolve_data_file
from fedscore.crypto import psi
from fedscore.crypto.paillier import PublicKey
from fedscore.crypto.pool import CryptoPool
from fedscore.daemons.access import COORDINATOR, require
from fedscore.daemons.party.scoring import ScoringHost
from fedscore.errors import (
    AccessError, ConfigError, ConsentError, DataError, FedscoreError, ProtocolError, UnknownJobError,
)
from fedscore.ledger import identity
from fedscore.ledger.block import decode_entry, encode_entry
from fedscore.ledger.entries import Facts
from fedscore.ledger.entries import digest as entry_digest
from fedscore.ledger.member import LedgerMember
from fedscore.ledger.store import LedgerStore
from fedscore.ledger.settlement import settlement_body, settlement_message
from fedscore.model.data import PartyTable, load_party_table
from fedscore.model.model_file import PartyModel, file_digest, write_atomically
from fedscore.proto import fedscore_pb2 as pb
from fedscore.proto import fedscore_pb2_grpc as pb_grpc
from fedscore.protocol.alignment import CardCenterAlignment, PartnerAlignment, PsiParty
from fedscore.protocol.card_center import CardCenterSession
from fedscore.protocol.audit import forget_steps_off_chain, last_step
from fedscore.protocol.party import PartySession, Step
from fedscore.protocol.partner import PartnerSession
from fedscore.transport import codec
from fedscore.transport.clients import PartyClient, PsiClient
from fedscore.transport.rpc import PARTNER_SHARE, servicer_errors
from fedscore.transport.tls import caller_name

log = logging.getLogger("fedscore.party")
CHECKPOINT_FILE = "checkpoint.json"        # the job's training state after its last step, rewritten each step
ALIGNED_ROWS_FILE = "aligned-rows.bin"     # this party's rows held by every party (little-endian int64)
MAX_PARTIAL_SCORES = 1024
REPORT_FILE = "report.html"   # a party's own page, beside its model.json
handles_errors = servicer_errors("label")


@dataclass
class PreparedJob:
    """A job on this party: its data, then its alignment, then its training session."""

    spec: JobSpec
    table: PartyTable
    public_key: PublicKey
    alignment: PsiParty | None                                        # None once restored from a checkpoint
    ledger: LedgerMember
    partners: dict[str, PartyClient] = field(default_factory=dict)   # the card center's only
    aligned_rows: np.ndarray | None = None                            # table rows held by every party
    session: PartySession | None = None
    data_sha256: str = ""                                             # of the data file, to resume only on the same data


class PartyService(pb_grpc.PartyServicer):
    def __init__(self, config: DaemonConfig, pool: CryptoPool):
        self.config = config
        self.name = config.name
        self.label = f"party {config.name!r}"
        self.pool = pool
        self._jobs: dict[str, PreparedJob] = {}
        self._lock = threading.Lock()
        self.key = identity.load_or_create(config.state_dir)   # this member's signing key, made at set-up
        self.scoring = ScoringHost(config, self.key)
        self._drop_settled_checkpoints()

    def _drop_settled_checkpoints(self) -> None:
        """At start: a checkpoint whose job is settled on this party's own chain will never be resumed (the
        daemon died before the coordinator's CloseJob reached it); its weights and row positions go."""
        for checkpoint in self.config.state_dir.glob(f"jobs/*/{CHECKPOINT_FILE}"):
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
                for name in (CHECKPOINT_FILE, ALIGNED_ROWS_FILE):
                    (checkpoint.parent / name).unlink(missing_ok=True)
                log.info("job %s is settled: its checkpoint is removed", checkpoint.parent.name)

    # -- helpers ------------------------------------------------------------

    def _allow(self, context, allowed: str, action: str) -> None:
        require(context, allowed, f"{self.label}: {action}")

    def _job(self, job_id: str, context, by: str) -> PreparedJob:
        """The job, if the caller plays role ``by`` in it ("coordinator" or "card_center")."""
        check_job_id(job_id, self.label)
        if by == COORDINATOR:
            self._allow(context, COORDINATOR, f"job {job_id}")
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise UnknownJobError(f"{self.label}: no job {job_id!r} here (never prepared, finished or aborted)")
        if by != COORDINATOR:
            self._allow(context, job.spec.card_center.name, f"job {job_id}")
        return job

    def _session(self, job_id: str, context, by: str, kind: type = PartySession) -> PartySession:
        session = self._job(job_id, context, by).session
        if session is None:
            raise ProtocolError(f"{self.label}: job {job_id!r} has not started training")
        if not isinstance(session, kind):
            raise ProtocolError(f"{self.label}: this call is not for a {session.role} in job {job_id!r}")
        return session

    def _alignment(self, job_id: str, context, by: str, kind: type) -> PsiParty:
        job = self._job(job_id, context, by)
        if not isinstance(job.alignment, kind) or job.aligned_rows is not None:
            raise ProtocolError(f"{self.label}: no alignment of this kind is open in job {job_id!r}")
        return job.alignment

    @handles_errors
    def StartTraining(self, request, context):
        job = self._job(request.job_id, context, COORDINATOR)
        if job.aligned_rows is None or job.session is not None:
            raise ProtocolError(f"{self.label}: job {request.job_id!r} is not aligned, or already training")
        rows = job.aligned_rows
        session = self._open_session(request.job_id, job)
        smallest = session.smallest_batch()
        if smallest < self.config.min_batch_rows:
            raise ConfigError(
                f"{self.label}: refuses batches of {smallest} rows (each step's gradient would describe too few "
                f"applicants); its policy asks for at least {self.config.min_batch_rows}"
            )
        seconds = session.prepare_obfuscators()
        job.session = session
        self._save_checkpoint(request.job_id, job)
        log.info("job %s training on %d aligned of %d rows", request.job_id, len(rows), job.table.rows)
        return pb.StartTrainingReply(obfuscation_seconds=seconds)

    def job_dir(self, job_id: str) -> Path:
        return self.config.state_dir / "jobs" / check_job_id(job_id, self.label)

    # -- every party --------------------------------------------------------

    @handles_errors
    def Ping(self, request, context):
        return pb.PingReply(name=self.name, role="party", version=__version__)

    @handles_errors
    def Status(self, request, context):
        """Each job here (its stage, last step and chain position) and each model open for scoring."""
        caller = caller_name(context)
        members = lambda spec: {COORDINATOR, *(p.name for p in spec.parties)}   # noqa: E731
        with self._lock:
            jobs = sorted((j, job) for j, job in self._jobs.items() if caller is None or caller in members(job.spec))
        statuses = []
        for job_id, job in jobs:
            done = job.session.last_step if job.session is not None else None
            stage = "training" if job.session is not None else "aligned" if job.aligned_rows is not None else "prepared"
            blocks, head = job.ledger.store.head_summary()
            statuses.append(pb.JobStatus(
                job_id=job_id, stage=stage, epoch=done.epoch + 1 if done else 0, batch=done.batch + 1 if done else 0,
                blocks=blocks, head=head.hex(), chain="training",
            ))
        for model in self.scoring.open_models():
            ledger = self.scoring.ledger(model["job_id"])
            if caller is not None and caller not in decode_entry(ledger.genesis.entries[0]).get("members", {}):
                continue
            blocks, head = ledger.store.head_summary()
            statuses.append(pb.JobStatus(job_id=model["job_id"], stage="serving", blocks=blocks, head=head.hex(),
                                         chain="scoring", detail=model["role"]))
        return pb.StatusReply(name=self.name, role="party", version=__version__, jobs=statuses)

    @handles_errors
    def PrepareJob(self, request, context):
        self._allow(context, COORDINATOR, "preparing a job")
        spec = codec.spec_from_proto(request.job)
        if request.party != self.name:
            raise ConfigError(
                f"{self.label}: the job addresses this daemon as {request.party!r}; check the job's party addresses"
            )
        with self._lock:
            if request.job_id in self._jobs:
                raise ProtocolError(f"{self.label}: job {request.job_id!r} is already prepared here")
        if self.config.card_centers and spec.card_center.name not in self.config.card_centers:
            raise AccessError(
                f"{self.label}: takes jobs only from card centers {', '.join(self.config.card_centers)}; "
                f"refused a job with card center {spec.card_center.name!r}"
            )
        if spec.key_bits < self.config.min_key_bits:
            raise ConfigError(
                f"{self.label}: refuses {spec.key_bits}-bit keys; its policy asks for at least {self.config.min_key_bits}"
            )
        me = spec.party(self.name)
        public_key = PublicKey.from_bytes(request.public_key)
        if public_key.bits != spec.key_bits:
            raise ProtocolError(f"{self.label}: public key has {public_key.bits} bits, the job says {spec.key_bits}")
        path = resolve_data_file(self.config.data_dir, me.data, self.name)
        table = load_party_table(path, list(me.id_columns), me.label, party=self.name)
        ledger = LedgerMember(self.name, self.key, self.job_dir(request.job_id) / "ledger.sqlite", self._facts(spec, public_key))
        if me.is_card_center:
            aligner: PsiParty = CardCenterAlignment(self.name, table, request.job_id, self.pool)
            partners = self._partner_clients(request.job_id, spec, public_key)
            job = PreparedJob(spec, table, public_key, aligner, ledger, partners, data_sha256=file_digest(path))
        else:
            aligner = PartnerAlignment(self.name, table, request.job_id, self.pool)
            job = PreparedJob(spec, table, public_key, aligner, ledger, data_sha256=file_digest(path))
        with self._lock:
            self._jobs[request.job_id] = job
        log.info("job %s prepared: %d rows, %d features from %s", request.job_id, table.rows, len(table.feature_names), path)
        return pb.PrepareJobReply(
            party=self.name, role="card_center" if me.is_card_center else "partner", rows=table.rows,
            features=len(table.feature_names), state_dir=str(self.config.state_dir),
            signing_key=bytes(self.key.verify_key),
        )

    def _facts(self, spec: JobSpec, public_key: PublicKey) -> Facts:
        """What this member knows first-hand of a job from the start, to check the chain's blocks against."""
        return Facts(
            self.name, identity.public_hex(self.key), role="card_center" if spec.party(self.name).is_card_center else "partner",
            members=frozenset({"coordinator", *(p.name for p in spec.parties)}), job_digest=spec.digest(),
            paillier_fingerprint=public_key.fingerprint(), fees=spec.fees.to_dict(),
        )

    def _partner_clients(self, job_id: str, spec: JobSpec, public_key: PublicKey) -> dict[str, PartyClient]:
        timeout = spec.rpc_timeout * PARTNER_SHARE
        partners = {p.name: PartyClient(p.name, p.address, timeout=timeout, tls=self.config.tls) for p in spec.partners}
        for client in partners.values():
            client.job_id, client.public_key = job_id, public_key
        return partners

    def _open_session(self, job_id: str, job: PreparedJob) -> PartySession:
        common = (job_id, job.spec, self.name, job.table.subset(job.aligned_rows), job.public_key, self.pool)
        if job.partners:
            session: PartySession = CardCenterSession(*common, partners=job.partners)
        else:
            session = PartnerSession(*common)
        session.facts = job.ledger.facts
        self.pool.warm(job.public_key, job.spec.obfuscation)
        return session

    # -- checkpoints: a daemon that dies mid-job resumes it -------------------

    def _checkpoint_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / CHECKPOINT_FILE

    def _save_checkpoint(self, job_id: str, job: PreparedJob) -> None:
        """Everything but the data needed to pick the job up again after a crash: written after every step."""
        folder = self.job_dir(job_id)
        rows_file = folder / ALIGNED_ROWS_FILE
        if not rows_file.exists():
            write_atomically(rows_file, job.aligned_rows.astype("<i8").tobytes(), mode=0o600)
        facts = job.ledger.facts
        document = {
            "job_id": job_id, "party": self.name, "spec": codec.spec_to_text(job.spec),
            "public_key": base64.b64encode(job.public_key.to_bytes()).decode(), "data_sha256": job.data_sha256,
            "aligned_rows": facts.aligned_rows, "overlaps": facts.overlaps, "training": job.session.checkpoint(),
        }
        write_atomically(self._checkpoint_path(job_id), json.dumps(document), mode=0o600)

    def _restore(self, job_id: str) -> PreparedJob:
        """A job this daemon was training before it restarted, from its checkpoint, on the same data."""
        folder = self.job_dir(job_id)
        try:
            document = json.loads(self._checkpoint_path(job_id).read_text())
            spec = codec.spec_from_text(document["spec"])
            public_key = PublicKey.from_bytes(base64.b64decode(document["public_key"]))
            rows = np.frombuffer((folder / ALIGNED_ROWS_FILE).read_bytes(), dtype="<i8").astype(np.int64)
            data_sha256, training = document["data_sha256"], document["training"]
            aligned, overlaps = document["aligned_rows"], document["overlaps"]
        except FileNotFoundError:
            raise UnknownJobError(f"{self.label}: no job {job_id!r} here, and no checkpoint to resume it from") from None
        except (ValueError, KeyError, TypeError, FedscoreError) as error:
            raise ProtocolError(f"{self.label}: the checkpoint of job {job_id!r} is not readable ({error})") from None
        me = spec.party(self.name)
        path = resolve_data_file(self.config.data_dir, me.data, self.name)
        if file_digest(path) != data_sha256:
            raise DataError(f"{self.label}: data file {me.data!r} changed since job {job_id!r} started; it cannot resume")
        table = load_party_table(path, list(me.id_columns), me.label, party=self.name)
        facts = self._facts(spec, public_key)
        facts.aligned_rows, facts.overlaps = aligned, overlaps
        model_file = folder / "model.json"
        if model_file.is_file():   # it had finished: the job's end must carry this model's digest
            facts.model_digest = entry_digest(model_file.read_bytes())
        ledger = LedgerMember(self.name, self.key, folder / "ledger.sqlite", facts)
        partners = self._partner_clients(job_id, spec, public_key) if me.is_card_center else {}
        job = PreparedJob(spec, table, public_key, None, ledger, partners, rows, data_sha256=data_sha256)
        try:
            job.session = self._open_session(job_id, job)
            job.session.restore(training)
        except (ValueError, KeyError, TypeError, FedscoreError) as error:
            for client in partners.values():
                client.close()
            ledger.close()
            raise ProtocolError(f"{self.label}: the checkpoint of job {job_id!r} does not fit the job ({error})") from None
        log.info("job %s restored from its checkpoint (last step here: %s)", job_id, job.session.checkpoint()["done"])
        return job

    @handles_errors
    def ResumeJob(self, request, context):
        """After a member died mid-job: rewind to the last step on the chain, restoring the job if this daemon restarted."""
        self._allow(context, COORDINATOR, f"job {request.job_id}")
        check_job_id(request.job_id, self.label)
        with self._lock:
            job = self._jobs.get(request.job_id)
        if job is None:
            restored = self._restore(request.job_id)
            with self._lock:
                job = self._jobs.setdefault(request.job_id, restored)
            if job is not restored:   # another resume got there first
                for client in restored.partners.values():
                    client.close()
                restored.ledger.close()
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
        forget_steps_off_chain(ledger.facts, ledger.seen.steps)
        job.session.resume_after(step)
        self._save_checkpoint(request.job_id, job)
        log.info("job %s resumes after %s", request.job_id, step or "its start")
        return pb.Empty()

    @handles_errors
    def MaskedGradient(self, request, context):
        session = self._session(request.job_id, context, COORDINATOR)
        values = session.masked_gradient(codec.step_from_proto(request))
        return codec.single_block(values, session.public_key.ciphertext_bytes, request)

    @handles_errors
    def ApplyGradient(self, request, context):
        session = self._session(request.step.job_id, context, COORDINATOR)
        _, values = codec.join_integer_blocks([request.values], session.public_key.plaintext_bytes)
        codec.check_residues(values, session.public_key)
        session.apply_gradient(codec.step_from_proto(request.step), [int(v) for v in values])
        self._save_checkpoint(request.step.job_id, self._job(request.step.job_id, context, COORDINATOR))
        return pb.Empty()

    @handles_errors
    def FinishJob(self, request, context):
        job = self._job(request.job_id, context, COORDINATOR)
        session = self._session(request.job_id, context, COORDINATOR)
        path = self.job_dir(request.job_id) / "model.json"
        model = session.model()
        text = model.to_json()
        write_atomically(path, text)
        job.ledger.facts.model_digest = entry_digest(text.encode("utf-8"))
        log.info("job %s finished: model written to %s", request.job_id, path)
        return pb.FinishJobReply(
            model_path=str(path), state_dir=str(self.config.state_dir),
            model_digest=job.ledger.facts.model_digest, ledger_path=str(job.ledger.path),
            report_path=self._write_page(request.job_id, session, model),
        )

    def _write_page(self, job_id: str, session: PartySession, model: PartyModel) -> str:
        """This party's own HTML page beside its model; a page that cannot be drawn is logged, not fatal:
        the trained model is what the job is for."""
        from fedscore.report_html import render_party_page   # matplotlib loads only when a job finishes

        path = self.job_dir(job_id) / REPORT_FILE
        evaluation = session.evaluation if isinstance(session, CardCenterSession) else None
        try:
            write_atomically(path, render_party_page(model, session.table.rows, len(session.train_rows), evaluation))
        except Exception:   # noqa: BLE001 - any drawing failure; the job's model stands
            log.exception("job %s: could not write this party's report page %s", job_id, path)
            return ""
        return str(path)

    @handles_errors
    def CloseJob(self, request, context):
        self._allow(context, COORDINATOR, f"job {request.job_id}")
        self._close(request.job_id)
        return pb.Empty()

    @handles_errors
    def AbortJob(self, request, context):
        """Drop the job and any model it wrote; its ledger stays as the record of what happened."""
        self._allow(context, COORDINATOR, f"job {request.job_id}")
        self._close(request.job_id)
        (self.job_dir(request.job_id) / "model.json").unlink(missing_ok=True)
        (self.job_dir(request.job_id) / REPORT_FILE).unlink(missing_ok=True)
        log.info("job %s aborted", request.job_id)
        return pb.Empty()

    def _close(self, job_id: str) -> None:
        """Forget a job: in memory, and its checkpoint (a closed or aborted job is never resumed)."""
        with self._lock:
            job = self._jobs.pop(job_id, None)
        for name in (CHECKPOINT_FILE, ALIGNED_ROWS_FILE):
            (self.job_dir(job_id) / name).unlink(missing_ok=True)
        if job is not None:
            if job.session is not None:
                job.session.reserve.stop()
                if job.session.reserve.made_in_background:
                    log.info("job %s: %d obfuscators made in the background", job_id, job.session.reserve.made_in_background)
            for client in job.partners.values():
                client.close()
            job.ledger.close()

    # -- coordinator -> every party: the audit chain --------------------------

    def _ledger(self, job_id: str, chain: str, context) -> LedgerMember:
        """A chain's replica here, if the caller proposes that chain's blocks (coordinator or card center)."""
        if chain == "scoring":
            self._allow(context, self.scoring.card_center_of(job_id), f"scoring chain of {job_id}")
            return self.scoring.ledger(job_id)
        if chain:
            raise ProtocolError(f"{self.label}: no chain {chain!r}")
        return self._job(job_id, context, COORDINATOR).ledger

    @handles_errors
    def ProposeBlock(self, request, context):
        block = codec.block_from_proto(request)
        return pb.Signature(signature=self._ledger(request.job_id, request.chain, context).sign(block))

    @handles_errors
    def CommitBlock(self, request, context):
        self._ledger(request.job_id, request.chain, context).commit(codec.block_from_proto(request))
        if request.chain == "scoring":
            self.scoring.committed(request.job_id)
        return pb.Empty()

    @handles_errors
    def SignSettlement(self, request, context):
        ledger = self._ledger(request.job_id, request.chain, context)
        if request.chain == "scoring":
            return pb.Signature(signature=self.scoring.sign_settlement(request.job_id, request.body))
        expected = settlement_body(ledger.entries())
        try:
            body = decode_entry(request.body)
        except ValueError:
            raise ProtocolError(f"{self.label}: the settlement to sign is not JSON") from None
        if request.body != encode_entry(expected):
            raise ProtocolError(
                f"{self.label}: refuses to sign a settlement that does not follow from its own replica "
                "(fee contract, recorded steps and overlaps)"
            )
        return pb.Signature(signature=self.key.sign(settlement_message(body)).signature)

    # -- coordinator -> card center: alignment --------------------------------

    @handles_errors
    def Align(self, request, context):
        job = self._job(request.job_id, context, COORDINATOR)
        aligner = self._alignment(request.job_id, context, COORDINATOR, CardCenterAlignment)
        handles = {name: PsiClient(client) for name, client in job.partners.items()}
        result = aligner.align(handles, int(request.min_overlap))
        job.aligned_rows = result.rows
        job.ledger.facts.aligned_rows, job.ledger.facts.overlaps = result.aligned_rows, dict(result.overlaps)
        return pb.AlignReply(
            aligned_rows=result.aligned_rows,
            overlaps=[pb.Overlap(party=name, rows=count) for name, count in result.overlaps.items()],
        )

    # -- card center -> partner: alignment -----------------------------------

    def PsiBlindedIds(self, request, context):
        yield from self._psi_blinded_ids(request, context)

    @handles_errors
    def _psi_blinded_ids(self, request, context):
        aligner = self._alignment(request.job_id, context, "card_center", PartnerAlignment)
        return list(codec.fixed_blocks(aligner.blinded_ids(), psi.POINT_BYTES, request.job_id))

    def PsiReblind(self, request_iterator, context):
        yield from self._psi_reblind(request_iterator, context)

    @handles_errors
    def _psi_reblind(self, request_iterator, context):
        first = next(request_iterator, None)
        if first is None:
            raise ProtocolError(f"{self.label}: empty re-blinding stream")
        aligner = self._alignment(first.job_id, context, "card_center", PartnerAlignment)

        def blocks():
            yield first
            yield from request_iterator

        points = codec.join_fixed_blocks(blocks(), psi.POINT_BYTES)
        return list(codec.fixed_blocks(aligner.reblind(points), psi.POINT_BYTES, first.job_id))

    @handles_errors
    def PsiAccept(self, request, context):
        job = self._job(request.job_id, context, "card_center")
        aligner = self._alignment(request.job_id, context, "card_center", PartnerAlignment)
        positions = codec.words(codec.join_fixed_blocks([request], 8)).astype(np.int64)
        job.aligned_rows = aligner.accept(positions)
        job.ledger.facts.aligned_rows = len(job.aligned_rows)
        return pb.Empty()

    # -- coordinator -> card center -----------------------------------------

    @handles_errors
    def ForwardStep(self, request, context):
        self._session(request.job_id, context, COORDINATOR, CardCenterSession).forward_step(codec.step_from_proto(request))
        return pb.Empty()

    @handles_errors
    def LossShare(self, request, context):
        session = self._session(request.job_id, context, COORDINATOR, CardCenterSession)
        value, digests = session.loss_share(codec.step_from_proto(request))
        return pb.LossShareReply(
            share=codec.single_block([value], session.public_key.ciphertext_bytes, request), digests=digests
        )

    @handles_errors
    def Evaluate(self, request, context):
        session = self._session(request.job_id, context, COORDINATOR, CardCenterSession)
        if len(request.mask_sum) % 8:
            raise ProtocolError(f"{self.label}: mask sum is not a whole number of 64-bit words")
        mask_sum = codec.words(request.mask_sum)
        return pb.EvaluateReply(metrics_json=json.dumps(session.evaluate(mask_sum)))

    # -- coordinator -> partner ---------------------------------------------

    @handles_errors
    def ScoreMaskSeed(self, request, context):
        return pb.Seed(seed=self._session(request.job_id, context, COORDINATOR, PartnerSession).score_mask_seed())

    # -- card center -> partner ---------------------------------------------

    def EncryptedPartial(self, request, context):
        blocks = self._encrypted_partial(request, context)
        yield from blocks

    @handles_errors
    def _encrypted_partial(self, request, context):
        session = self._session(request.job_id, context, "card_center", PartnerSession)
        values = session.encrypted_partial(codec.step_from_proto(request))
        return list(codec.integer_blocks(values, session.public_key.ciphertext_bytes, request))

    @handles_errors
    def PutResidual(self, request_iterator, context):
        first = next(request_iterator, None)
        if first is None or not first.HasField("step"):
            raise ProtocolError(f"{self.label}: residual stream without a step header")
        session = self._session(first.step.job_id, context, "card_center", PartnerSession)

        def blocks():
            yield first
            yield from request_iterator

        step, values = codec.join_integer_blocks(blocks(), session.public_key.ciphertext_bytes)
        codec.check_ciphertexts(values, session.public_key)
        session.receive_residual(codec.step_from_proto(step), values)
        return pb.Empty()

    @handles_errors
    def EncryptedLossTerm(self, request, context):
        session = self._session(request.job_id, context, "card_center", PartnerSession)
        value = session.encrypted_loss_term(codec.step_from_proto(request))
        return codec.single_block([value], session.public_key.ciphertext_bytes, request)

    def MaskedScores(self, request, context):
        yield from self._masked_scores(request, context)

    @handles_errors
    def _masked_scores(self, request, context):
        session = self._session(request.job_id, context, "card_center", PartnerSession)
        return list(codec.fixed_blocks(session.masked_scores().astype("<u8").tobytes(), 8, request.job_id))


    # -- scoring: approval system -> card center, card center -> partner ----------

    @handles_errors
    def OpenScoring(self, request, context):
        spec = codec.spec_from_proto(request.job)
        if spec.party(self.name).is_card_center:
            self._allow(context, self.name, "opening a model for scoring")   # its own approval system
        else:   # the card center the model was trained with, from this party's own records, not the request's
            self._allow(context, self.scoring.trained_card_center(request.job_id), "opening a model for scoring")
        served, features, basis = self.scoring.open(request.job_id, spec, request.settings_json, request.pair_key)
        return pb.OpenScoringReply(
            job_id=served.job_id, features=features, limit_basis=basis, blocks=served.member.height,
            ledger_path=str(served.member.path),
        )

    @handles_errors
    def Score(self, request, context):
        self._allow(context, self.name, "scoring")   # the card center's own approval system
        job_id, scored = self.scoring.score(request.job_id, request.applicant_id, dict(request.features), request.consent)
        result = scored.answer
        return pb.ScoreReply(
            request_id=scored.request_id, probability=result.probability, score=result.score,
            decision=result.decision, credit_limit=result.credit_limit, reasons=list(result.reasons),
            partners_missing=list(result.partners_missing), job_id=job_id,
        )

    @handles_errors
    def PartialScore(self, request, context):
        if len(request.items) > MAX_PARTIAL_SCORES:
            raise ProtocolError(f"{self.label}: at most {MAX_PARTIAL_SCORES} partial scores per call")
        self._allow(context, self.scoring.card_center_of(request.job_id), "partial scores")
        results = []
        for item in request.items:
            try:
                value = self.scoring.partial_score(request.job_id, item.tag, item.applicant, item.consent, item.deadline_ms)
            except (ConsentError, DataError) as error:   # this applicant only; the others in the call go on
                results.append(pb.PartialScoreResult(refused=str(error)))
                continue
            results.append(pb.PartialScoreResult(known=value is not None, partial_score=value or 0.0))
        return pb.PartialScoreReply(results=results)

    @handles_errors
    def SettleScoring(self, request, context):
        self._allow(context, self.name, "settling scoring fees")
        settlement = self.scoring.settle(request.job_id)
        member = self.scoring.ledger(request.job_id)
        return pb.SettleScoringReply(
            settlement_json=json.dumps(settlement), blocks=member.height, head=member.head.hash().hex()
        )

    @handles_errors
    def CloseScoring(self, request, context):
        try:
            owner = self.scoring.card_center_of(request.job_id)
        except ProtocolError:
            return pb.Empty()   # not open here: nothing to close
        self._allow(context, owner, "closing a model")
        self.scoring.close(request.job_id)
        return pb.Empty()


def add_to_server(service: PartyService, server) -> None:
    for name in ("Party", "Jobs", "Training", "Alignment", "Chain", "Scoring"):
        getattr(pb_grpc, f"add_{name}Servicer_to_server")(service, server)
