"""The Replica service: an observer reads the chain replicas a member holds, and nothing else.

Every party and the coordinator keep their replicas in their state folder, one folder per job
(``jobs/<job id>/ledger.sqlite`` for the training chain, ``scoring.sqlite`` for the model's scoring chain), and
a party its audience chains one folder per other party (``audience/<party>/audience.sqlite``, listed by the
chain's own id).
An observer lists them and reads their stored blocks a page at a time, opened read-only; the role table
(fedscore.daemons.access) lets only the observers a member's config names (`observers`) call this service,
and them nothing else. A page holds only blocks committed before it was read: a block appended meanwhile is
left for the next page, never read half written.
"""
from __future__ import annotations

from pathlib import Path

from fedscore.errors import ProtocolError, UnknownJobError
from fedscore.job import JOB_ID_PATTERN, check_job_id
from fedscore.ledger.block import decode_entry
from fedscore.ledger.position import UNREADABLE
from fedscore.ledger.store import LedgerStore
from fedscore.proto import fedscore_pb2 as pb
from fedscore.proto import fedscore_pb2_grpc as pb_grpc
from fedscore.transport import codec
from fedscore.transport.rpc import servicer_errors

CHAIN_FILES = {"training": "ledger.sqlite", "scoring": "scoring.sqlite", "audience": "audience.sqlite"}
AUDIENCE_FOLDER = "audience"   # a party's audience chains: audience/<the other party>/audience.sqlite, by chain id
PAGE_BLOCKS = 500   # blocks per ChainBlocks call at most (the observer asks again from where it got to)


class ChainReads:
    """The replicas under ``state_dir``, read for an observer."""

    def __init__(self, state_dir: Path, label: str):
        self.state_dir = state_dir
        self.label = label

    def list_chains(self) -> pb.ChainList:
        """Every replica this member holds that can be read, with its height and head."""
        chains = []
        try:
            folders = sorted(path for path in (self.state_dir / "jobs").iterdir() if path.is_dir())
        except OSError:   # no job yet
            folders = []
        for folder in folders:
            for chain, name in CHAIN_FILES.items():
                if chain != "audience" and (folder / name).is_file():
                    chains += self._head(folder.name, chain, folder / name)
        for chain_id, path in sorted(self._audience_chains().items()):
            chains += self._head(chain_id, "audience", path)
        return pb.ChainList(chains=chains)

    @staticmethod
    def _head(job_id: str, chain: str, path: Path) -> list[pb.ChainHead]:
        """The replica's head, if it can be read and holds a block."""
        try:
            store = LedgerStore(path, read_only=True)
            try:
                blocks, head = store.head_summary()
            finally:
                store.close()
        except UNREADABLE:
            return []
        return [pb.ChainHead(job_id=job_id, chain=chain, blocks=blocks, head=head.hex())] if blocks else []

    def _audience_chains(self) -> dict[str, Path]:
        """This member's audience chains by their own id (their genesis says it), one folder per other party."""
        found = {}
        for path in sorted((self.state_dir / AUDIENCE_FOLDER).glob(f"*/{CHAIN_FILES['audience']}")):
            try:
                store = LedgerStore(path, read_only=True)
                try:
                    first = next(iter(store.blocks(0, 1)), None)
                finally:
                    store.close()
                chain_id = decode_entry(first.entries[0]).get("chain_id") if first is not None else None
            except (*UNREADABLE, IndexError):
                continue
            if isinstance(chain_id, str) and JOB_ID_PATTERN.fullmatch(chain_id):
                found[chain_id] = path
        return found

    def chain_blocks(self, request: pb.ChainBlocksRequest) -> list[pb.Block]:
        """The stored blocks of one chain from ``from_height`` on, at most ``limit`` (or a page) of them."""
        path = self._path(request.job_id, request.chain)
        limit = min(request.limit or PAGE_BLOCKS, PAGE_BLOCKS)
        store = LedgerStore(path, read_only=True)
        try:
            committed, _ = store.head_summary()
            stop = min(committed, request.from_height + limit)
            blocks = list(store.blocks(request.from_height, stop))
        finally:
            store.close()
        return [codec.block_to_proto(request.job_id, block, request.chain) for block in blocks]

    def _path(self, job_id: str, chain: str) -> Path:
        check_job_id(job_id, self.label)
        name = CHAIN_FILES.get(chain)
        if name is None:
            raise ProtocolError(f"{self.label}: no chain kind {chain!r} (training, scoring or audience)")
        if chain == "audience":
            path = self._audience_chains().get(job_id)
            if path is None:
                raise UnknownJobError(f"{self.label}: no audience chain {job_id} here")
            return path
        path = self.state_dir / "jobs" / job_id / name
        if not path.is_file():
            raise UnknownJobError(f"{self.label}: no {chain} chain of job {job_id} here")
        return path


class ReplicaServicer(pb_grpc.ReplicaServicer):
    """The Replica service, on every party's and the coordinator's port."""

    def __init__(self, label: str, domain: ChainReads):
        self.label = label
        self.domain = domain

    @servicer_errors("label")
    def ListChains(self, request, context):
        return self.domain.list_chains()

    @servicer_errors("label")
    def ChainBlocks(self, request, context):
        return iter(self.domain.chain_blocks(request))   # read whole before the first block goes: errors are the status


def add_replica_service(state_dir: Path, label: str, server) -> None:
    pb_grpc.add_ReplicaServicer_to_server(ReplicaServicer(label, ChainReads(state_dir, label)), server)
