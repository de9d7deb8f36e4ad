"""Calls of a party's Audience service: the card center's marketing system (or `fedscore audience`) calling
its own daemon, and the card center calling the partner that holds an audience, whose audience chain it
proposes (fedscore.daemons.party.audience). Every document is small JSON: a query, noisy counts, an id."""
from __future__ import annotations

import json

from fedscore.errors import ProtocolError
from fedscore.job import JobSpec
from fedscore.proto import fedscore_pb2 as pb
from fedscore.proto import fedscore_pb2_grpc as pb_grpc
from fedscore.transport import codec
from fedscore.transport.clients.base import Peer, ServiceClient
from fedscore.transport.clients.chain import ChainClient, ChainMember
from fedscore.transport.rpc import STEP_TIMEOUT
from fedscore.transport.tls import TlsIdentity

AUDIENCE_CALL_TIMEOUT = 600.0   # a query evaluates the partner's whole user base; a handover loads its model


def reply_document(reply: pb.AudienceReply, who: str) -> dict:
    """The JSON object an Audience call answered (ProtocolError naming ``who`` if it is not one)."""
    try:
        document = json.loads(reply.body_json)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise ProtocolError(f"{who} answered an audience call with something that is not a JSON object")
    return document


class AudienceClient(ServiceClient):
    """The card center's marketing system's view of its own daemon (`fedscore audience ...`)."""

    stub_class = pb_grpc.AudienceStub

    def __init__(self, address: str, card_center: str, tls: TlsIdentity | None = None, timeout: float = AUDIENCE_CALL_TIMEOUT):
        super().__init__(Peer(card_center, address, tls, timeout, label="card center"))

    def _ask(self, method: str, spec: JobSpec, body: dict, job_id: str = "", settings_json: str = "") -> tuple[dict, pb.AudienceReply]:
        request = pb.AudienceRequest(job=codec.spec_to_proto(spec), job_id=job_id, body_json=json.dumps(body),
                                     settings_json=settings_json)
        reply = self._call(method, request)
        return reply_document(reply, self.peer.label), reply

    def handover(self, spec: JobSpec, job_id: str, settings_json: str) -> tuple[dict, pb.AudienceReply]:
        return self._ask("Handover", spec, {}, job_id, settings_json)

    def query(self, spec: JobSpec, query: dict) -> tuple[dict, pb.AudienceReply]:
        return self._ask("Query", spec, query)

    def campaign(self, spec: JobSpec, query_id: str) -> tuple[dict, pb.AudienceReply]:
        return self._ask("Campaign", spec, {"query_id": query_id})

    def conversion(self, spec: JobSpec, campaign_id: str, applicant_id: str) -> tuple[dict, pb.AudienceReply]:
        return self._ask("Conversion", spec, {"campaign_id": campaign_id, "applicant_id": applicant_id})

    def settle(self, spec: JobSpec) -> tuple[dict, pb.AudienceReply]:
        return self._ask("Settle", spec, {})


class PartnerAudienceClient(ServiceClient):
    """The card center's Audience calls of one partner: each names the card center, which the partner checks
    against the caller's certificate."""

    stub_class = pb_grpc.AudienceStub

    def __init__(self, peer: Peer, card_center: str):
        super().__init__(peer)
        self.card_center = card_center

    def ask(self, method: str, body: dict) -> tuple[dict, int]:
        """The partner's answer and the height of its replica of the audience chain."""
        request = pb.AudienceRequest(card_center=self.card_center, body_json=json.dumps(body))
        reply = self._call(method, request, timeout=AUDIENCE_CALL_TIMEOUT)
        return reply_document(reply, self.peer.label), int(reply.blocks)


class AudiencePeer(ChainMember):
    """The card center's view of the partner holding an audience: its Audience calls and its replica of the
    pair's audience chain (LedgerHandle and SettlementSigner of fedscore.ledger.cosign)."""

    def __init__(self, name: str, address: str, chain_id: str, card_center: str, tls: TlsIdentity | None = None,
                 timeout: float = STEP_TIMEOUT):
        self.peer = Peer(name, address, tls, timeout, label=f"partner {name!r}")
        self.audience = PartnerAudienceClient(self.peer, card_center)
        self.chain = ChainClient(self.peer, chain_id, "audience")

    def close(self) -> None:
        self.peer.close()

    def accept_model(self, part: dict) -> tuple[dict, int]:
        return self.audience.ask("AcceptModel", part)

    def answer_query(self, query: dict) -> tuple[dict, int]:
        return self.audience.ask("AnswerQuery", query)

    def start_campaign(self, query_id: str) -> tuple[dict, int]:
        return self.audience.ask("StartCampaign", {"query_id": query_id})

    def unrecorded(self) -> tuple[dict, int]:
        """The partner's answers and campaigns that no block of the chain holds yet."""
        return self.audience.ask("Unrecorded", {})
