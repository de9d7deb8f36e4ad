"""The party daemon's gRPC services, all on one port: each method hands its request to the domain object
of its concern (jobs, training, alignment, chain, status) and nothing else; the Scoring service also
translates between the wire and ScoringHost (fedscore.daemons.party.scoring), which speaks plain values.

Which role may call which method is the role table's (fedscore.daemons.access), enforced before a request
is read; what needs the request (this job's card center, the chain's proposer, the model's card center) is
checked here and in the domain objects, through ``require``.

The daemon runs next to a party's data; the card center's daemon also dials
the partners named in a job. Once a model is trained, the same daemon serves
it (fedscore.daemons.party.scoring).
"""
from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable

from fedscore.crypto.pool import CryptoPool
from fedscore.daemons.access import require
from fedscore.daemons.config import DaemonConfig
from fedscore.daemons.chain_reads import ChainReads, ReplicaServicer
from fedscore.daemons.party.alignment import Alignment
from fedscore.daemons.party.audience import AudienceHost
from fedscore.daemons.party.chain import AudienceChainKind, Chains, ScoringChain, TrainingChain
from fedscore.daemons.party.jobs import Jobs
from fedscore.daemons.party.scoring import ScoringHost
from fedscore.daemons.party.status import PartyStatus
from fedscore.daemons.party.training import Training
from fedscore.errors import ConsentError, DataError, ProtocolError
from fedscore.ledger import identity
from fedscore.proto import fedscore_pb2 as pb
from fedscore.proto import fedscore_pb2_grpc as pb_grpc
from fedscore.transport import codec, scoring_batch
from fedscore.transport.rpc import servicer_errors


def translates_errors(cls: type) -> type:
    """Apply ``servicer_errors`` to every gRPC method of a servicer class (the ones named in CamelCase).

    A method that streams its answer is a generator: its messages go as they are made (gRPC's flow control
    paces them), and an error before or during the stream becomes the call's status.
    """
    handles = servicer_errors("label")
    for name, method in list(vars(cls).items()):
        if name[:1].isupper() and callable(method):
            setattr(cls, name, _streamed(handles, method) if inspect.isgeneratorfunction(method) else handles(method))
    return cls


_END = object()


def _streamed(handles: Callable, method: Callable) -> Callable:
    """A streaming method sent message by message, each made under ``handles``.

    The first message is made before any goes, so a refusal (a job not found, a second request) is the
    call's plain status; a later error ends the stream with its status, after what was already sent.
    """

    @handles
    @functools.wraps(method)
    def first(self, request, context):
        messages = method(self, request, context)
        return messages, next(messages, _END)

    @handles
    @functools.wraps(method)
    def following(self, messages, context):
        return next(messages, _END)

    @functools.wraps(method)
    def stream(self, request, context):
        messages, message = first(self, request, context)
        while message is not _END:
            yield message
            message = following(self, messages, context)

    return stream


MAX_PARTIAL_SCORES = 1024


class _Servicer:
    """A servicer hands each call to its domain object."""

    def __init__(self, label: str, domain):
        self.label = label   # names this party in the status of a call that failed
        self.domain = domain


@translates_errors
class PartyServicer(_Servicer, pb_grpc.PartyServicer):
    domain: PartyStatus

    def Ping(self, request, context):
        return self.domain.ping(request, context)

    def Status(self, request, context):
        return self.domain.status(request, context)


@translates_errors
class JobsServicer(_Servicer, pb_grpc.JobsServicer):
    domain: Jobs

    def PrepareJob(self, request, context):
        return self.domain.prepare(request)

    def StartTraining(self, request, context):
        return self.domain.start(request)

    def FinishJob(self, request, context):
        return self.domain.finish(request)

    def AbortJob(self, request, context):
        return self.domain.abort(request)

    def CloseJob(self, request, context):
        return self.domain.close(request)

    def ResumeJob(self, request, context):
        return self.domain.resume(request)


@translates_errors
class TrainingServicer(_Servicer, pb_grpc.TrainingServicer):
    domain: Training

    def MaskedGradient(self, request, context):
        return self.domain.masked_gradient(request)

    def ApplyGradient(self, request, context):
        return self.domain.apply_gradient(request)

    def MaskedBinSums(self, request, context):
        return self.domain.masked_bin_sums(request)

    def ApplyBinSums(self, request, context):
        return self.domain.apply_bin_sums(request)

    def ForwardStep(self, request, context):
        return self.domain.forward_step(request)

    def LossShare(self, request, context):
        return self.domain.loss_share(request)

    def Evaluate(self, request, context):
        return self.domain.evaluate(request)

    def ScoreMaskSeed(self, request, context):
        return self.domain.score_mask_seed(request)

    def EncryptedBinSums(self, request_iterator, context):
        return self.domain.encrypted_bin_sums(request_iterator, context)

    def KeepFeatures(self, request, context):
        return self.domain.keep_features(request, context)

    def EncryptedPartial(self, request, context):
        yield from self.domain.encrypted_partial(request, context)

    def PutResidual(self, request_iterator, context):
        return self.domain.put_residual(request_iterator, context)

    def EncryptedLossTerm(self, request, context):
        return self.domain.encrypted_loss_term(request, context)

    def MaskedScores(self, request, context):
        yield from self.domain.masked_scores(request, context)


@translates_errors
class AlignmentServicer(_Servicer, pb_grpc.AlignmentServicer):
    domain: Alignment

    def Align(self, request, context):
        return self.domain.align(request)

    def PsiBlindedIds(self, request, context):
        yield from self.domain.blinded_ids(request, context)

    def PsiReblind(self, request_iterator, context):
        yield from self.domain.reblind(request_iterator, context)

    def PsiAccept(self, request, context):
        return self.domain.accept(request, context)


@translates_errors
class ChainServicer(_Servicer, pb_grpc.ChainServicer):
    domain: Chains

    def ProposeBlock(self, request, context):
        return self.domain.propose(request, context)

    def CommitBlock(self, request, context):
        return self.domain.commit(request, context)

    def SignSettlement(self, request, context):
        return self.domain.sign_settlement(request, context)


@translates_errors
class ScoringServicer(_Servicer, pb_grpc.ScoringServicer):
    """The Scoring service: each call in ScoringHost's own terms, and the reply. The role table lets the card
    center's approval system (calling with the card center's certificate) score and settle; opening, partial
    scores and closing also need the model, to know which card center it answers."""

    domain: ScoringHost

    def OpenScoring(self, request, context):
        spec = codec.spec_from_proto(request.job)
        # the card center's own approval system; at a partner, the card center the model was trained with, from
        # this party's own records, not the request's
        host = self.domain
        opener = host.name if spec.party(host.name).is_card_center else host.trained_card_center(request.job_id)
        require(context, opener, f"{self.label}: opening a model for scoring")
        served, features, basis = host.open(request.job_id, spec, request.settings_json, request.pair_key)
        return pb.OpenScoringReply(
            job_id=served.job_id, features=features, limit_basis=basis, blocks=served.member.height,
            ledger_path=str(served.member.path), reason=host.reason if served.role == "partner" else "",
        )

    def Score(self, request, context):
        job_id, scored = self.domain.score(request.job_id, request.applicant_id, codec.request_features(request), request.consent)
        return scoring_batch.score_reply(job_id, scored)

    def ScoreBatch(self, request, context):
        return scoring_batch.batch_reply(*self.domain.score_batch(request.job_id, scoring_batch.batch_applicants(request)))

    def PartialScore(self, request, context):
        if len(request.items) > MAX_PARTIAL_SCORES:
            raise ProtocolError(f"{self.label}: at most {MAX_PARTIAL_SCORES} partial scores per call")
        require(context, self.domain.card_center_of(request.job_id), f"{self.label}: partial scores")
        return pb.PartialScoreReply(results=[self._partial_score(request.job_id, item) for item in request.items])

    def _partial_score(self, job_id: str, item: pb.PartialScoreItem) -> pb.PartialScoreResult:
        try:
            value = self.domain.partial_score(job_id, item.tag, item.applicant, item.consent, item.deadline_ms)
        except (ConsentError, DataError) as error:   # this applicant only; the others in the call go on
            return pb.PartialScoreResult(refused=str(error))
        return pb.PartialScoreResult(known=value is not None, partial_score=value or 0.0)

    def SettleScoring(self, request, context):
        settlement = self.domain.settle(request.job_id)
        member = self.domain.ledger(request.job_id)
        return pb.SettleScoringReply(
            settlement_json=json.dumps(settlement), blocks=member.height, head=member.head.hash().hex()
        )

    def RecordVerification(self, request, context):
        job_id, entry = self.domain.record_verification(request.job_id, request.applicant_id, request.method, request.time,
                                                        request.verifier, request.signature, dict(request.evidence))
        return pb.RecordVerificationReply(verification_id=entry["verification_id"], job_id=job_id,
                                          record_digest=entry["record_digest"], time_ms=entry["time_ms"])

    def CloseScoring(self, request, context):
        try:
            owner = self.domain.card_center_of(request.job_id)   # at a card center: itself
        except ProtocolError:
            return pb.Empty()   # not open here: nothing to close
        require(context, owner, f"{self.label}: closing a model")
        self.domain.close(request.job_id)
        return pb.Empty()


@translates_errors
class AudienceServicer(_Servicer, pb_grpc.AudienceServicer):
    """The Audience service: the card center's own calls (the role table: SELF) name the audience job; a
    partner's calls name the card center, which must be the caller (require)."""

    domain: AudienceHost

    def Handover(self, request, context):
        return audience_reply(*self.domain.handover(codec.spec_from_proto(request.job), request.job_id, request.settings_json))

    def Query(self, request, context):
        return audience_reply(*self.domain.query(codec.spec_from_proto(request.job), audience_body(request)))

    def Campaign(self, request, context):
        return audience_reply(*self.domain.campaign(codec.spec_from_proto(request.job), audience_body(request)))

    def Conversion(self, request, context):
        return audience_reply(*self.domain.conversion(codec.spec_from_proto(request.job), audience_body(request)))

    def Settle(self, request, context):
        return audience_reply(*self.domain.settle(codec.spec_from_proto(request.job)))

    def AcceptModel(self, request, context):
        return audience_reply(*self.domain.accept_model(asking_card_center(request, context, self.label), audience_body(request)))

    def AnswerQuery(self, request, context):
        return audience_reply(*self.domain.answer_query(asking_card_center(request, context, self.label), audience_body(request)))

    def StartCampaign(self, request, context):
        return audience_reply(*self.domain.start_campaign(asking_card_center(request, context, self.label), audience_body(request)))

    def Unrecorded(self, request, context):
        return audience_reply(*self.domain.unrecorded(asking_card_center(request, context, self.label), audience_body(request)))


def audience_body(request: pb.AudienceRequest) -> dict:
    try:
        body = json.loads(request.body_json or "{}")
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise DataError("an audience call's body must be a JSON object")
    return body


def asking_card_center(request: pb.AudienceRequest, context, label: str) -> str:
    """The card center a partner's audience call names, which must be the caller (its certificate)."""
    require(context, request.card_center, f"{label}: audience calls of card center {request.card_center!r}")
    return request.card_center


def audience_reply(document: dict, chain) -> pb.AudienceReply:
    state = chain.reply
    return pb.AudienceReply(body_json=json.dumps(document), blocks=state["blocks"], head=state["head"],
                            chain_id=state["chain_id"])


class PartyService:
    """One party daemon: its domain objects, and a servicer for each of its gRPC services."""

    def __init__(self, config: DaemonConfig, pool: CryptoPool):
        label = f"party {config.name!r}"
        key = identity.load_or_create(config.state_dir)   # this member's signing key, made at set-up
        self.scoring = ScoringHost(config, key)
        self.audience = AudienceHost(config, key, self.scoring)
        self.jobs = Jobs(config, pool, key)
        chains = Chains(label, {"training": TrainingChain(self.jobs), "scoring": ScoringChain(self.scoring),
                                "audience": AudienceChainKind(self.audience)})
        self.servicers = {
            "Party": PartyServicer(label, PartyStatus(config.name, self.jobs, self.scoring)),
            "Jobs": JobsServicer(label, self.jobs),
            "Training": TrainingServicer(label, Training(self.jobs)),
            "Alignment": AlignmentServicer(label, Alignment(self.jobs)),
            "Chain": ChainServicer(label, chains),
            "Scoring": ScoringServicer(label, self.scoring),
            "Audience": AudienceServicer(label, self.audience),
            "Replica": ReplicaServicer(label, ChainReads(config.state_dir, label)),   # an admitted observer's reads
        }


def add_to_server(service: PartyService, server) -> None:
    for name, servicer in service.servicers.items():
        getattr(pb_grpc, f"add_{name}Servicer_to_server")(servicer, server)
