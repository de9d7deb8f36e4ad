"""Calls of a party's Scoring service: an approval system's (or `fedscore score`'s) calls of the card
center, and the card center's calls of a partner while a model serves."""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future

from fedscore.job import JobSpec
from fedscore.errors import ConsentError, FedscoreError, PeerError, ProtocolError
from fedscore.proto import fedscore_pb2 as pb
from fedscore.proto import fedscore_pb2_grpc as pb_grpc
from fedscore.protocol.scoring.journal import answer_deadline_ms
from fedscore.transport import codec
from fedscore.transport.clients.base import Peer, ServiceClient
from fedscore.transport.clients.chain import ChainClient, ChainMember
from fedscore.transport.rpc import PING_TIMEOUT, STEP_TIMEOUT
from fedscore.transport.tls import TlsIdentity


class ScoringClient(ServiceClient):
    """An approval system's (or `fedscore score`'s) view of the card center's scoring service."""

    stub_class = pb_grpc.ScoringStub

    def __init__(self, address: str, card_center: str, tls: TlsIdentity | None = None, timeout: float = 30.0):
        """``tls`` is the card center's own identity: only it may ask its daemon for scores."""
        super().__init__(Peer(card_center, address, tls, timeout, label="card center"))

    def open_scoring(self, spec: JobSpec, settings_json: str, job_id: str = "") -> pb.OpenScoringReply:
        request = pb.OpenScoringRequest(job_id=job_id, job=codec.spec_to_proto(spec), settings_json=settings_json)
        return self._call("OpenScoring", request, timeout=max(self.peer.timeout, 300.0))

    def score(self, applicant_id: str, features: dict[str, float | str | None], consent: str, job_id: str = "") -> pb.ScoreReply:
        request = codec.score_request(job_id, applicant_id, features, consent)
        return self._call("Score", request)

    def score_batch(self, applicants: list[tuple[str, dict[str, float | str | None], str]],
                    job_id: str = "") -> pb.ScoreBatchReply:
        """(applicant id, features, consent) each; the reply has one result per applicant, in order: its answer,
        or the error that kept it from being scored."""
        request = pb.ScoreBatchRequest(job_id=job_id, applicants=[
            codec.score_request("", applicant, features, consent) for applicant, features, consent in applicants])
        return self._call("ScoreBatch", request)

    def settle(self, job_id: str) -> pb.SettleScoringReply:
        return self._call("SettleScoring", pb.JobRef(job_id=job_id), timeout=max(self.peer.timeout, 120.0))

    def close_scoring(self, job_id: str) -> None:
        self._call("CloseScoring", pb.JobRef(job_id=job_id), timeout=max(self.peer.timeout, 120.0))

    def record_verification(self, applicant_id: str, record, job_id: str = "") -> pb.RecordVerificationReply:
        """Send a verifier's signed record (fedscore.protocol.scoring.verification.VerificationRecord): its
        fields and the evidence digests, never the files."""
        request = pb.RecordVerificationRequest(
            job_id=job_id, applicant_id=applicant_id, method=record.method, time=record.time,
            verifier=record.verifier, signature=record.signature, evidence=record.evidence,
        )
        return self._call("RecordVerification", request)


class PartnerScoringClient(ServiceClient):
    """The card center's calls of a partner's Scoring service for one model."""

    stub_class = pb_grpc.ScoringStub

    def __init__(self, peer: Peer, job_id: str):
        super().__init__(peer)
        self.job_id = job_id

    def open_scoring(self, spec: JobSpec, pair_key: bytes) -> pb.OpenScoringReply:
        request = pb.OpenScoringRequest(job_id=self.job_id, job=codec.spec_to_proto(spec), pair_key=pair_key)
        return self._call("OpenScoring", request)

    def partial_scores(self, items: list[pb.PartialScoreItem], timeout: float) -> list[pb.PartialScoreResult]:
        """One result per item, in order."""
        results = self._call("PartialScore", pb.PartialScoreRequest(job_id=self.job_id, items=items), timeout).results
        if len(results) != len(items):
            raise ProtocolError(f"{self.peer.label} answered {len(results)} of {len(items)} partial scores")
        return list(results)

    def close_scoring(self) -> None:
        self._call("CloseScoring", pb.JobRef(job_id=self.job_id), timeout=PING_TIMEOUT)


class PartialScoreSender:
    """Sends a partner the partial-score requests that wait together as one call, from one thread.

    A request waits only while the previous call is on the wire: under light
    load every call carries one request, under heavy load many, so the
    per-call cost of gRPC is paid once for all of them. A batch's requests
    are queued as one unit and always travel in the same call (alone, if the
    batch is larger than MAX_ITEMS). A request whose deadline passed while it
    waited is not sent at all.
    """

    MAX_ITEMS = 512   # requests merged into one call; the partner takes up to 1 024

    def __init__(self, client: PartnerScoringClient):
        self.client = client
        self._queue: queue.SimpleQueue = queue.SimpleQueue()   # units: lists of requests that travel together
        self._held: list | None = None   # a unit that did not fit in the last call: first in the next
        self._thread = threading.Thread(target=self._run, name=f"partial-scores-{client.peer.name}", daemon=True)
        self._thread.start()

    def submit(self, item: pb.PartialScoreItem, timeout: float) -> Future:
        """Queue one request; its item carries the deadline, so a partner never answers after it."""
        return self.submit_many([item], timeout)[0]

    def submit_many(self, items: list[pb.PartialScoreItem], timeout: float) -> list[Future]:
        """Queue a batch's requests to travel in one call, each with the same deadline; a future for each."""
        deadline_ms, until = answer_deadline_ms(timeout), time.monotonic() + timeout
        unit = []
        for item in items:
            item.deadline_ms = deadline_ms
            unit.append((item, until, Future()))
        self._queue.put(unit)
        return [future for _, _, future in unit]

    def close(self) -> None:
        self._queue.put(None)

    def _take(self) -> list | None:
        first, self._held = self._held or self._queue.get(), None
        if first is None:
            return None
        batch = list(first)
        while len(batch) < self.MAX_ITEMS:
            try:
                waiting = self._queue.get_nowait()
            except queue.Empty:
                break
            if waiting is None:
                self._queue.put(None)
                break
            if len(batch) + len(waiting) > self.MAX_ITEMS:
                self._held = waiting
                break
            batch.extend(waiting)
        return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            now = time.monotonic()
            late = [entry for entry in batch if entry[1] <= now]
            peer = self.client.peer
            for _, _, future in late:
                future.set_exception(PeerError(f"{peer.label} at {peer.address} did not answer in time"))
            batch = [entry for entry in batch if entry[1] > now]
            if batch:
                self._send(batch, max(deadline for _, deadline, _ in batch) - now)

    def _send(self, batch: list, timeout: float) -> None:
        try:
            results = self.client.partial_scores([item for item, _, _ in batch], timeout)
        except Exception as error:  # a closed channel, a short answer: these requests fail, the sender goes on
            failure = error if isinstance(error, FedscoreError) else PeerError(f"{self.client.peer.label}: {error}")
            for _, _, future in batch:
                future.set_exception(failure)
            return
        for (_, _, future), result in zip(batch, results):
            if result.refused:
                future.set_exception(ConsentError(result.refused))
            else:
                future.set_result(result.partial_score if result.known else None)


class ScoringPeer(ChainMember):
    """The card center's view of a partner while a model serves: partial scores (PartnerHandle of
    fedscore.protocol.scoring.card_center) and the model's scoring chain (LedgerHandle, SettlementSigner)."""

    def __init__(self, name: str, address: str, job_id: str, timeout: float = STEP_TIMEOUT,
                 tls: TlsIdentity | None = None):
        self.peer = Peer(name, address, tls, timeout, label=f"partner {name!r}")
        self.scoring = PartnerScoringClient(self.peer, job_id)
        self.chain = ChainClient(self.peer, job_id, "scoring")
        self._sender = PartialScoreSender(self.scoring)

    def close(self) -> None:
        self._sender.close()
        self.peer.close()

    def open_scoring(self, spec: JobSpec, pair_key: bytes) -> pb.OpenScoringReply:
        return self.scoring.open_scoring(spec, pair_key)

    def close_scoring(self) -> None:
        self.scoring.close_scoring()

    def ask_partial_score(self, tag: str, digest: bytes, consent: str, timeout: float) -> Future:
        """A future of u_k, or None if the partner does not hold the applicant."""
        return self._sender.submit(pb.PartialScoreItem(tag=tag, applicant=digest, consent=consent), timeout)

    def ask_partial_scores(self, items: list[tuple[str, bytes, str]], timeout: float) -> list[Future]:
        """A batch's (tag, digest, consent) items, asked in one call: a future of u_k (or None) for each."""
        return self._sender.submit_many(
            [pb.PartialScoreItem(tag=tag, applicant=digest, consent=consent) for tag, digest, consent in items], timeout)
