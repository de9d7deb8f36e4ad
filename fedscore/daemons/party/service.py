"""The party daemon's gRPC services, all on one port: each method hands its request to the domain object
of its concern (jobs, training, alignment, chain, scoring_calls, status) and nothing else.

The daemon runs next to a party's data; the card center's daemon also dials
the partners named in a job. Once a model is trained, the same daemon serves
it (fedscore.daemons.party.scoring).
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

from fedscore.config import DaemonConfig
from fedscore.crypto.pool import CryptoPool
from fedscore.daemons.party.alignment import Alignment
from fedscore.daemons.party.chain import Chains, ScoringChain, TrainingChain
from fedscore.daemons.party.jobs import Jobs
from fedscore.daemons.party.scoring import ScoringHost
from fedscore.daemons.party.scoring_calls import ScoringCalls
from fedscore.daemons.party.status import PartyStatus
from fedscore.daemons.party.training import Training
from fedscore.ledger import identity
from fedscore.proto import fedscore_pb2_grpc as pb_grpc
from fedscore.transport.rpc import servicer_errors


def translates_errors(cls: type) -> type:
    """Apply ``servicer_errors`` to every gRPC method of a servicer class (the ones named in CamelCase).

    A method that streams its answer is a generator: its whole answer is made first, so that an error
    becomes the call's status instead of a broken stream.
    """
    handles = servicer_errors("label")
    for name, method in list(vars(cls).items()):
        if name[:1].isupper() and callable(method):
            setattr(cls, name, _streamed(handles, method) if inspect.isgeneratorfunction(method) else handles(method))
    return cls


def _streamed(handles: Callable, method: Callable) -> Callable:
    """A streaming method whose whole answer is made under ``handles`` before its first message goes."""

    @handles
    @functools.wraps(method)
    def answer(self, request, context):
        return list(method(self, request, context))

    @functools.wraps(method)
    def stream(self, request, context):
        yield from answer(self, request, context)

    return stream


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
        return self.domain.prepare(request, context)

    def StartTraining(self, request, context):
        return self.domain.start(request, context)

    def FinishJob(self, request, context):
        return self.domain.finish(request, context)

    def AbortJob(self, request, context):
        return self.domain.abort(request, context)

    def CloseJob(self, request, context):
        return self.domain.close(request, context)

    def ResumeJob(self, request, context):
        return self.domain.resume(request, context)


@translates_errors
class TrainingServicer(_Servicer, pb_grpc.TrainingServicer):
    domain: Training

    def MaskedGradient(self, request, context):
        return self.domain.masked_gradient(request, context)

    def ApplyGradient(self, request, context):
        return self.domain.apply_gradient(request, context)

    def ForwardStep(self, request, context):
        return self.domain.forward_step(request, context)

    def LossShare(self, request, context):
        return self.domain.loss_share(request, context)

    def Evaluate(self, request, context):
        return self.domain.evaluate(request, context)

    def ScoreMaskSeed(self, request, context):
        return self.domain.score_mask_seed(request, context)

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
        return self.domain.align(request, context)

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
    domain: ScoringCalls

    def OpenScoring(self, request, context):
        return self.domain.open(request, context)

    def Score(self, request, context):
        return self.domain.score(request, context)

    def PartialScore(self, request, context):
        return self.domain.partial_score(request, context)

    def SettleScoring(self, request, context):
        return self.domain.settle(request, context)

    def CloseScoring(self, request, context):
        return self.domain.close(request, context)


class PartyService:
    """One party daemon: its domain objects, and a servicer for each of its gRPC services."""

    def __init__(self, config: DaemonConfig, pool: CryptoPool):
        label = f"party {config.name!r}"
        key = identity.load_or_create(config.state_dir)   # this member's signing key, made at set-up
        self.scoring = ScoringHost(config, key)
        self.jobs = Jobs(config, pool, key)
        chains = Chains(label, {"training": TrainingChain(self.jobs, key), "scoring": ScoringChain(self.scoring, label)})
        self.servicers = {
            "Party": PartyServicer(label, PartyStatus(config.name, self.jobs, self.scoring)),
            "Jobs": JobsServicer(label, self.jobs),
            "Training": TrainingServicer(label, Training(self.jobs)),
            "Alignment": AlignmentServicer(label, Alignment(self.jobs)),
            "Chain": ChainServicer(label, chains),
            "Scoring": ScoringServicer(label, ScoringCalls(self.scoring, config.name)),
        }


def add_to_server(service: PartyService, server) -> None:
    for name, servicer in service.servicers.items():
        getattr(pb_grpc, f"add_{name}Servicer_to_server")(servicer, server)
