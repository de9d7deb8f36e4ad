"""gRPC clients: the coordinator's and the card center's view of a party daemon,
and a job submitter's view of the coordinator. Each method mirrors a protocol
step of fedscore.protocol and moves only bytes."""
from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future

import grpc
import numpy as np
from gmpy2 import mpz

from fedscore.config import JobSpec
from fedscore.crypto import psi
from fedscore.crypto.paillier import PublicKey
from fedscore.errors import ConsentError, FedscoreError, PeerError, ProtocolError
from fedscore.ledger.block import Block
from fedscore.proto import fedscore_pb2 as pb
from fedscore.proto import fedscore_pb2_grpc as pb_grpc
from fedscore.protocol.party import Step
from fedscore.protocol.training import Progress
from fedscore.transport import codec
from fedscore.crypto.certs import COORDINATOR
from fedscore.transport.rpc import PING_TIMEOUT, RELAYED, STEP_TIMEOUT, open_channel, peer_error
from fedscore.transport.tls import TlsIdentity


def _party_stubs(channel):
    """Every method of a party's services, by method name."""
    stubs = type("PartyStubs", (), {})()
    for name in ("Party", "Jobs", "Training", "Alignment", "Chain", "Scoring"):
        vars(stubs).update(vars(getattr(pb_grpc, f"{name}Stub")(channel)))
    return stubs


class PartyClient:
    """Talks to one party daemon on behalf of one job."""

    def __init__(self, name: str, address: str, timeout: float = STEP_TIMEOUT, tls: TlsIdentity | None = None):
        self.name = name
        self.address = address
        self.timeout = timeout
        self._channel = open_channel(address, name, tls)
        self._stub = _party_stubs(self._channel)
        self.job_id = ""
        self.public_key: PublicKey | None = None

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: str, request, timeout: float | None = None):
        timeout = timeout or self.timeout
        try:
            return getattr(self._stub, method)(request, timeout=timeout)
        except grpc.RpcError as error:
            raise peer_error(f"party {self.name!r}", self.address, error, timeout) from None

    def _step(self, step: Step) -> pb.StepRef:
        return codec.step_to_proto(self.job_id, step)

    @property
    def _width(self) -> int:
        return self.public_key.ciphertext_bytes

    # -- coordinator -> party ------------------------------------------------

    def ping(self) -> pb.PingReply:
        return self._call("Ping", pb.PingRequest(), timeout=PING_TIMEOUT)

    def prepare_job(self, job_id: str, spec: JobSpec, public_key: PublicKey) -> pb.PrepareJobReply:
        self.job_id, self.public_key = job_id, public_key
        request = pb.PrepareJobRequest(
            job_id=job_id, job=codec.spec_to_proto(spec), party=self.name, public_key=public_key.to_bytes()
        )
        return self._call("PrepareJob", request)

    def start_training(self) -> float:
        """Open the training session; returns the seconds spent making obfuscators in advance."""
        return self._call("StartTraining", pb.JobRef(job_id=self.job_id)).obfuscation_seconds

    def masked_gradient(self, step: Step) -> list[mpz]:
        block = self._call("MaskedGradient", self._step(step))
        _, values = codec.join_integer_blocks([block], self._width)
        return codec.check_ciphertexts(values, self.public_key)

    def apply_gradient(self, step: Step, values: list[int]) -> None:
        width = self.public_key.plaintext_bytes
        block = codec.single_block([mpz(v) for v in values], width)
        self._call("ApplyGradient", pb.MaskedGradientValues(step=self._step(step), values=block))

    def finish_job(self) -> pb.FinishJobReply:
        return self._call("FinishJob", pb.JobRef(job_id=self.job_id))

    def close_job(self) -> None:
        self._call("CloseJob", pb.JobRef(job_id=self.job_id), timeout=PING_TIMEOUT)

    def resume_job(self, after: Step | None, head: Block) -> None:
        request = pb.ResumeRequest(job_id=self.job_id, started=after is not None, head=codec.block_to_proto(self.job_id, head))
        if after is not None:
            request.epoch, request.batch = after.epoch, after.batch
        self._call("ResumeJob", request)

    # -- coordinator -> party: the audit chain -------------------------------

    def propose_block(self, block: Block) -> bytes:
        return self._call("ProposeBlock", codec.block_to_proto(self.job_id, block)).signature

    def commit_block(self, block: Block) -> None:
        self._call("CommitBlock", codec.block_to_proto(self.job_id, block))

    def sign_settlement(self, body: bytes) -> bytes:
        return self._call("SignSettlement", pb.SettlementRequest(job_id=self.job_id, body=body)).signature

    def abort_job(self) -> None:
        self._call("AbortJob", pb.JobRef(job_id=self.job_id), timeout=PING_TIMEOUT)

    # -- coordinator -> card center -----------------------------------------

    def align(self, min_overlap: int) -> pb.AlignReply:
        return self._call("Align", pb.AlignRequest(job_id=self.job_id, min_overlap=min_overlap))

    def forward_step(self, step: Step) -> None:
        self._call("ForwardStep", self._step(step))

    def loss_share(self, step: Step) -> tuple[mpz, dict[str, str]]:
        reply = self._call("LossShare", self._step(step))
        _, values = codec.join_integer_blocks([reply.share], self._width)
        return codec.check_ciphertexts(values, self.public_key)[0], dict(reply.digests)

    def evaluate(self, mask_sum: np.ndarray) -> dict:
        request = pb.EvaluateRequest(job_id=self.job_id, mask_sum=np.asarray(mask_sum, dtype="<u8").tobytes())
        return json.loads(self._call("Evaluate", request).metrics_json)

    # -- coordinator -> partner ---------------------------------------------

    def score_mask_seed(self) -> bytes:
        return self._call("ScoreMaskSeed", pb.JobRef(job_id=self.job_id)).seed

    # -- card center -> partner ---------------------------------------------

    def encrypted_partial(self, step: Step) -> list[mpz]:
        try:
            stream = self._stub.EncryptedPartial(self._step(step), timeout=self.timeout)
            _, values = codec.join_integer_blocks(stream, self._width)
        except grpc.RpcError as error:
            raise peer_error(f"partner {self.name!r}", self.address, error, self.timeout) from None
        return codec.check_ciphertexts(values, self.public_key)

    def receive_residual(self, step: Step, residual: list[mpz]) -> None:
        blocks = codec.integer_blocks(residual, self._width, self._step(step))
        try:
            self._stub.PutResidual(blocks, timeout=self.timeout)
        except grpc.RpcError as error:
            raise peer_error(f"partner {self.name!r}", self.address, error, self.timeout) from None

    def encrypted_loss_term(self, step: Step) -> mpz:
        _, values = codec.join_integer_blocks([self._call("EncryptedLossTerm", self._step(step))], self._width)
        return codec.check_ciphertexts(values, self.public_key)[0]

    def masked_scores(self) -> np.ndarray:
        return codec.words(self._stream("MaskedScores", pb.JobRef(job_id=self.job_id), 8))

    def _stream(self, method: str, request, width: int) -> bytes:
        """Call a streaming RPC (unary or streamed request) and join its FixedBlocks."""
        try:
            return codec.join_fixed_blocks(getattr(self._stub, method)(request, timeout=self.timeout), width)
        except grpc.RpcError as error:
            raise peer_error(f"partner {self.name!r}", self.address, error, self.timeout) from None


class PsiClient:
    """The card center's view of a partner's side of private set intersection."""

    def __init__(self, client: PartyClient):
        self.client = client

    def blinded_ids(self) -> bytes:
        return self.client._stream("PsiBlindedIds", pb.JobRef(job_id=self.client.job_id), psi.POINT_BYTES)

    def reblind(self, points: bytes) -> bytes:
        blocks = codec.fixed_blocks(points, psi.POINT_BYTES, self.client.job_id)
        return self.client._stream("PsiReblind", blocks, psi.POINT_BYTES)

    def accept(self, positions: np.ndarray) -> None:
        data = np.asarray(positions, dtype="<u8").tobytes()
        block = pb.FixedBlock(job_id=self.client.job_id, width=8, offset=0, total=len(positions), data=data)
        self.client._call("PsiAccept", block)


class CoordinatorClient:
    """Submits a job to a coordinator and follows its progress."""

    def __init__(self, address: str, tls: TlsIdentity | None = None):
        self.address = address
        self._channel = open_channel(address, COORDINATOR, tls)
        self._stub = pb_grpc.CoordinatorStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def ping(self) -> pb.PingReply:
        try:
            return self._stub.Ping(pb.PingRequest(), timeout=PING_TIMEOUT)
        except grpc.RpcError as error:
            raise peer_error("coordinator", self.address, error, PING_TIMEOUT) from None

    def run_job(self, spec: JobSpec, progress: Callable[[Progress], None], align_only: bool = False,
                follow_seconds: float = 0.0) -> str:
        """Run ``spec`` (or only its alignment); returns the report JSON.

        If the coordinator goes away mid-job, keep trying for ``follow_seconds`` to follow the job again: a
        restarted coordinator resumes it.
        """
        request = pb.RunJobRequest(job=codec.spec_to_proto(spec), align_only=align_only)
        events: Iterator[pb.JobEvent] = self._stub.RunJob(request)
        job_id, lost_at = "", None
        while True:
            try:
                for event in events:
                    job_id, lost_at = event.job_id or job_id, None
                    if event.HasField("report_json"):
                        return event.report_json
                    p = event.progress
                    progress(Progress(p.stage, p.epoch, p.epochs, p.loss, p.seconds, p.message, p.step, p.steps))
                raise PeerError(f"coordinator at {self.address} ended the job without a report")
            except grpc.RpcError as error:
                gone = error.code() == grpc.StatusCode.UNAVAILABLE and RELAYED not in (error.details() or "")
                if not gone or not job_id or follow_seconds <= 0:
                    raise peer_error("coordinator", self.address, error) from None
                now = time.monotonic()
                if lost_at is None:
                    lost_at = now
                    progress(Progress("recover", message=f"lost the coordinator; following job {job_id} when it is back"))
                elif now - lost_at > follow_seconds:
                    raise peer_error("coordinator", self.address, error, follow_seconds) from None
                time.sleep(0.5)
                events = self._stub.FollowJob(pb.JobRef(job_id=job_id))


class PartialScoreSender:
    """Sends a partner the partial-score requests that wait together as one call, from one thread.

    A request waits only while the previous call is on the wire: under light
    load every call carries one request, under heavy load many, so the
    per-call cost of gRPC is paid once for all of them. A request whose
    deadline passed while it waited is not sent at all.
    """

    MAX_ITEMS = 256

    def __init__(self, peer: "ScoringPeer"):
        self.peer = peer
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"partial-scores-{peer.name}", daemon=True)
        self._thread.start()

    def submit(self, item: pb.PartialScoreItem, timeout: float) -> Future:
        """Queue one request; its item carries the deadline, so a partner never answers after it."""
        future: Future = Future()
        item.deadline_ms = time.time_ns() // 1_000_000 + int(timeout * 1000)
        self._queue.put((item, time.monotonic() + timeout, future))
        return future

    def close(self) -> None:
        self._queue.put(None)

    def _take(self) -> list | None:
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        while len(batch) < self.MAX_ITEMS:
            try:
                waiting = self._queue.get_nowait()
            except queue.Empty:
                break
            if waiting is None:
                self._queue.put(None)
                break
            batch.append(waiting)
        return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            now = time.monotonic()
            late = [entry for entry in batch if entry[1] <= now]
            for _, _, future in late:
                future.set_exception(PeerError(f"partner {self.peer.name!r} at {self.peer.address} did not answer in time"))
            batch = [entry for entry in batch if entry[1] > now]
            if batch:
                self._send(batch, max(deadline for _, deadline, _ in batch) - now)

    def _send(self, batch: list, timeout: float) -> None:
        request = pb.PartialScoreRequest(job_id=self.peer.job_id, items=[item for item, _, _ in batch])
        try:
            results = self.peer._stub.PartialScore(request, timeout=timeout).results
            if len(results) != len(batch):
                raise ProtocolError(f"partner {self.peer.name!r} answered {len(results)} of {len(batch)} partial scores")
        except grpc.RpcError as error:
            failure: Exception = peer_error(f"partner {self.peer.name!r}", self.peer.address, error, timeout)
        except Exception as error:  # a closed channel, a short answer: these requests fail, the sender goes on
            failure = error if isinstance(error, FedscoreError) else PeerError(f"partner {self.peer.name!r}: {error}")
        else:
            for (_, _, future), result in zip(batch, results):
                if result.refused:
                    future.set_exception(ConsentError(result.refused))
                else:
                    future.set_result(result.partial_score if result.known else None)
            return
        for _, _, future in batch:
            future.set_exception(failure)


class ScoringPeer:
    """The card center's view of a partner while a model serves: partial scores and the scoring chain."""

    def __init__(self, name: str, address: str, job_id: str, timeout: float = STEP_TIMEOUT,
                 tls: TlsIdentity | None = None):
        self.name = name
        self.address = address
        self.job_id = job_id
        self.timeout = timeout
        self._channel = open_channel(address, name, tls)
        self._stub = _party_stubs(self._channel)
        self._sender = PartialScoreSender(self)

    def close(self) -> None:
        self._sender.close()
        self._channel.close()

    def _call(self, method: str, request, timeout: float | None = None):
        try:
            return getattr(self._stub, method)(request, timeout=timeout or self.timeout)
        except grpc.RpcError as error:
            raise peer_error(f"partner {self.name!r}", self.address, error, timeout or self.timeout) from None

    def open_scoring(self, spec: JobSpec, pair_key: bytes) -> pb.OpenScoringReply:
        request = pb.OpenScoringRequest(job_id=self.job_id, job=codec.spec_to_proto(spec), pair_key=pair_key)
        return self._call("OpenScoring", request)

    def close_scoring(self) -> None:
        self._call("CloseScoring", pb.JobRef(job_id=self.job_id), timeout=PING_TIMEOUT)

    def ask_partial_score(self, tag: str, digest: bytes, consent: str, timeout: float) -> Future:
        """A future of u_k, or None if the partner does not hold the applicant."""
        item = pb.PartialScoreItem(tag=tag, applicant=digest, consent=consent)
        return self._sender.submit(item, timeout)

    def propose_block(self, block: Block) -> bytes:
        return self._call("ProposeBlock", codec.block_to_proto(self.job_id, block, "scoring")).signature

    def commit_block(self, block: Block) -> None:
        self._call("CommitBlock", codec.block_to_proto(self.job_id, block, "scoring"))

    def sign_settlement(self, body: bytes) -> bytes:
        request = pb.SettlementRequest(job_id=self.job_id, body=body, chain="scoring")
        return self._call("SignSettlement", request).signature


class ScoringClient:
    """An approval system's (or `fedscore score`'s) view of the card center's scoring service."""

    def __init__(self, address: str, card_center: str, tls: TlsIdentity | None = None, timeout: float = 30.0):
        """``tls`` is the card center's own identity: only it may ask its daemon for scores."""
        self.address = address
        self.timeout = timeout
        self._channel = open_channel(address, card_center, tls)
        self._stub = _party_stubs(self._channel)

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: str, request, timeout: float | None = None):
        try:
            return getattr(self._stub, method)(request, timeout=timeout or self.timeout)
        except grpc.RpcError as error:
            raise peer_error("card center", self.address, error, timeout or self.timeout) from None

    def open_scoring(self, spec: JobSpec, settings_json: str, job_id: str = "") -> pb.OpenScoringReply:
        request = pb.OpenScoringRequest(job_id=job_id, job=codec.spec_to_proto(spec), settings_json=settings_json)
        return self._call("OpenScoring", request, timeout=max(self.timeout, 300.0))

    def score(self, applicant_id: str, features: dict[str, float], consent: str, job_id: str = "") -> pb.ScoreReply:
        request = pb.ScoreRequest(job_id=job_id, applicant_id=applicant_id, features=features, consent=consent)
        return self._call("Score", request)

    def settle(self, job_id: str) -> pb.SettleScoringReply:
        return self._call("SettleScoring", pb.JobRef(job_id=job_id), timeout=max(self.timeout, 120.0))

    def close_scoring(self, job_id: str) -> None:
        self._call("CloseScoring", pb.JobRef(job_id=job_id), timeout=max(self.timeout, 120.0))
