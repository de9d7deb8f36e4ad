"""The observer's follower: ask every member for the chains it holds, catch each up, compare what each serves.

Every poll, each member's list of chains (height and head) is read; for each chain the observer fetches
the member's blocks from one below where both stand, so that a member whose block at a height the observer
already holds differs is seen (an equivocation, fedscore.ledger.observation) as well as a member ahead. A
member that served a conflicting block is not read on that chain again (its later blocks follow its own
version); one that served a bad block is read again at the next poll. What each member reported, the last
block refused on each chain and every alarm are kept for the observer's status.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

import grpc

from fedscore import __version__
from fedscore.daemons.chain_reads import CHAIN_FILES
from fedscore.job import JOB_ID_PATTERN
from fedscore.ledger.observation import BlockRefused, ObserverReplica
from fedscore.proto import fedscore_pb2 as pb
from fedscore.proto import fedscore_pb2_grpc as pb_grpc
from fedscore.transport import codec
from fedscore.transport.rpc import failure_reason, open_channel
from fedscore.transport.tls import TlsIdentity

log = logging.getLogger("fedscore.observer")
CALL_SECONDS = 60.0


class Follower:
    """The observer ``name``'s replicas under ``state_dir``, kept up with ``members`` (name -> host:port)."""

    def __init__(self, name: str, state_dir: Path, members: dict[str, str], tls: TlsIdentity | None):
        self.name = name
        self.state_dir = state_dir
        self.members = dict(members)
        self.tls = tls
        self._lock = threading.Lock()
        self.replicas: dict[tuple[str, str], ObserverReplica] = {}
        self.reported: dict[tuple[str, str], dict[str, pb.ChainHead]] = {}
        self.member_errors: dict[str, str] = {}
        self.refused: dict[tuple[str, str], str] = {}
        self.diverged: set[tuple[str, str, str]] = set()   # (member, job id, chain) that served a conflicting block
        self._channels = {member: open_channel(address, member, tls) for member, address in self.members.items()}
        self._open_existing()

    def _open_existing(self) -> None:
        try:
            folders = [p for p in (self.state_dir / "jobs").iterdir() if JOB_ID_PATTERN.fullmatch(p.name)]
        except OSError:
            return
        for folder in sorted(folders):
            for chain, file in CHAIN_FILES.items():
                if (folder / file).is_file():
                    self.replica(folder.name, chain)

    def replica(self, job_id: str, chain: str) -> ObserverReplica:
        with self._lock:
            key = (job_id, chain)
            if key not in self.replicas:
                folder = self.state_dir / "jobs" / job_id
                folder.mkdir(parents=True, exist_ok=True)
                self.replicas[key] = ObserverReplica(folder / CHAIN_FILES[chain], job_id, chain)
            return self.replicas[key]

    def run(self, stop: threading.Event, poll_seconds: float) -> None:
        """Poll until ``stop`` is set."""
        while not stop.is_set():
            try:
                self.poll()
            except Exception:   # a bug must not stop the observer watching; said, and tried again next round
                log.exception("a poll failed")
            stop.wait(poll_seconds)

    def poll(self) -> None:
        """One round: every member, every chain it lets this observer read."""
        for member, channel in self._channels.items():
            stub = pb_grpc.ReplicaStub(channel)
            try:
                chains = stub.ListChains(pb.Empty(), timeout=CALL_SECONDS).chains
                for head in chains:
                    if not JOB_ID_PATTERN.fullmatch(head.job_id) or head.chain not in CHAIN_FILES:
                        continue
                    with self._lock:
                        self.reported.setdefault((head.job_id, head.chain), {})[member] = head
                    self._catch_up(member, stub, head)
            except grpc.RpcError as error:
                reason = failure_reason(error.details() or error.code().name)
                if self.member_errors.get(member) != reason:
                    log.warning("member %r (%s) cannot be read: %s", member, self.members[member], reason)
                self.member_errors[member] = reason
                continue
            self.member_errors.pop(member, None)

    def _catch_up(self, member: str, stub: pb_grpc.ReplicaStub, head: pb.ChainHead) -> None:
        key = (head.job_id, head.chain)
        if (member, *key) in self.diverged:
            return
        replica = self.replica(*key)
        if replica.head is not None and head.blocks == replica.height and head.head == replica.head.hash().hex():
            return   # where the observer stands
        start = max(0, min(replica.height, head.blocks) - 1)
        while start < head.blocks:
            request = pb.ChainBlocksRequest(job_id=head.job_id, chain=head.chain, from_height=start)
            page = list(stub.ChainBlocks(request, timeout=CALL_SECONDS))
            if not page:
                return
            try:
                alarm = replica.receive_all([codec.block_from_proto(message) for message in page], member)
            except BlockRefused as error:
                log.warning("refused: %s", error)
                self.refused[key] = str(error)
                return
            if alarm is not None:
                self.diverged.add((member, *key))
                return
            start = page[-1].height + 1

    def status(self) -> pb.ObserverStatusReply:
        with self._lock:
            replicas = dict(self.replicas)
            reported = {key: dict(heads) for key, heads in self.reported.items()}
        chains, alarms = [], []
        for key, replica in sorted(replicas.items()):
            heads = [pb.MemberHead(member=m, blocks=h.blocks, head=h.head) for m, h in sorted(reported.get(key, {}).items())]
            head = replica.head.hash().hex() if replica.head is not None else ""
            chains.append(pb.ObservedChain(job_id=key[0], chain=key[1], blocks=replica.height, head=head, members=heads,
                                           refused=self.refused.get(key, "")))
            alarms += [pb.Alarm(job_id=a.job_id, chain=a.chain, height=a.height, held=a.held.hex(), held_from=a.held_from,
                                other=a.other.hex(), other_from=a.other_from, detail=a.line()) for a in replica.alarms()]
        members = [pb.MemberHead(member=m, error=self.member_errors.get(m, "")) for m in sorted(self.members)]
        return pb.ObserverStatusReply(name=self.name, version=__version__, chains=chains, alarms=alarms, members=members)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        for replica in self.replicas.values():
            replica.close()
