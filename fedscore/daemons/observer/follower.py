"""The observer's follower: ask every member for the chains it holds, catch each up, compare what each serves.

Every poll, each member's list of chains (height and head) is read; for each chain the observer fetches
the member's blocks from one below where both stand, so that a member whose block at a height the observer
already holds differs is seen (an equivocation, fedscore.ledger.observation) as well as a member ahead. A
member that served a conflicting block is not read on that chain again (its later blocks follow its own
version); one that served a bad block is read again at the next poll. What each member reported, the last
block refused on each chain and every alarm are kept for the observer's status, which shows a member only the
chains whose genesis names it (the observer's own name, its operator, sees all).

A chain's replica file is made only once a member of it serves a genesis the observer accepts (of the job id
listed, naming that member, signed by every member it names), and, when members serve different ones, the one
most of them serve (as many each: none yet): a member listing made-up job ids leaves no file behind, and one
member alone cannot pass off a genesis of its own for a job others serve. A page of blocks must
start where it was asked and go up one by one, else it is refused as that member's; the catch-up ends when
the observer stops.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

import grpc

from fedscore import __version__
from fedscore.daemons.chain_reads import CHAIN_FILES
from fedscore.job import JOB_ID_PATTERN
from fedscore.ledger.block import Block
from fedscore.ledger.observation import BlockRefused, ObserverReplica
from fedscore.proto import fedscore_pb2 as pb
from fedscore.proto import fedscore_pb2_grpc as pb_grpc
from fedscore.transport import codec
from fedscore.transport.rpc import failure_reason, open_channel
from fedscore.transport.tls import TlsIdentity

log = logging.getLogger("fedscore.observer")
CALL_SECONDS = 60.0
Server = tuple[str, pb_grpc.ReplicaStub, pb.ChainHead]   # a member, its stub, and the head it reported of a chain
Candidate = tuple[list[Block], list[Server]]   # a genesis' first page (as its first server sent it), and its servers


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
        self.refused: dict[tuple[str, str], str] = {}   # (job id, chain) -> the last refusal, naming member and why
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

    def held(self, job_id: str, chain: str) -> ObserverReplica | None:
        with self._lock:
            return self.replicas.get((job_id, chain))

    def run(self, stop: threading.Event, poll_seconds: float) -> None:
        """Poll until ``stop`` is set."""
        while not stop.is_set():
            try:
                self.poll(stop)
            except Exception:   # a bug must not stop the observer watching; said, and tried again next round
                log.exception("a poll failed")
            stop.wait(poll_seconds)

    def poll(self, stop: threading.Event | None = None) -> None:
        """One round: every member, every chain it lets this observer read; cut short once ``stop`` is set.
        Chains new to the observer are adopted once every member has been asked (``_adopt``)."""
        found: dict[tuple[str, str], dict[bytes, Candidate]] = {}
        for member, channel in self._channels.items():
            stub = pb_grpc.ReplicaStub(channel)
            try:
                chains = stub.ListChains(pb.Empty(), timeout=CALL_SECONDS).chains
                for head in chains:
                    if stop is not None and stop.is_set():
                        return
                    if not JOB_ID_PATTERN.fullmatch(head.job_id) or head.chain not in CHAIN_FILES:
                        continue
                    if self.held(head.job_id, head.chain) is None:
                        self._propose((member, stub, head), found)
                    else:
                        self._catch_up(member, stub, head, stop)
            except grpc.RpcError as error:
                self._cannot_read(member, error)
                continue
            self.member_errors.pop(member, None)
        self._adopt(found, stop)

    def _cannot_read(self, member: str, error: grpc.RpcError) -> None:
        reason = failure_reason(error.details() or error.code().name)
        if self.member_errors.get(member) != reason:
            log.warning("member %r (%s) cannot be read: %s", member, self.members[member], reason)
        self.member_errors[member] = reason

    def _note_refusal(self, key: tuple[str, str], reason: str) -> None:
        if self.refused.get(key) != reason:
            log.warning("refused: %s", reason)
        self.refused[key] = reason

    def _propose(self, server: Server, found: dict) -> None:
        """The genesis ``server`` serves for a chain the observer holds none of, if it checks out, among ``found``."""
        member, stub, head = server
        key = (head.job_id, head.chain)
        page = list(stub.ChainBlocks(pb.ChainBlocksRequest(job_id=head.job_id, chain=head.chain, from_height=0),
                                     timeout=CALL_SECONDS))
        if not page:
            return
        try:
            self._check_page(page, 0, member, key)
            blocks = [codec.block_from_proto(message) for message in page]
            ObserverReplica.check_genesis(blocks[0], *key, member)
        except BlockRefused as error:
            self._note_refusal(key, str(error))
            return
        found.setdefault(key, {}).setdefault(blocks[0].hash(), (blocks, []))[1].append(server)

    def _adopt(self, found: dict[tuple[str, str], dict[bytes, Candidate]],
               stop: threading.Event | None) -> None:
        """A chain new to the observer gets a file and the genesis that most members serve (each a member that
        genesis names); different geneses served by as many members each: none yet, said, asked again next poll.
        The others' servers are then read against the genesis kept, and refused as another chain."""
        for key, candidates in sorted(found.items()):
            if stop is not None and stop.is_set():
                return
            ranked = sorted(candidates.values(), key=lambda candidate: len(candidate[1]), reverse=True)
            if len(ranked) > 1 and len(ranked[0][1]) == len(ranked[1][1]):
                served = "; ".join(", ".join(repr(member) for member, _, _ in servers) for _, servers in ranked)
                self._note_refusal(key, f"block 0: {key[1]} chain of job {key[0]}: different geneses, each served by as "
                                        f"many members ({served}): none kept until more of their members serve one")
                continue
            replica = self.replica(*key)
            first, servers = ranked[0]
            self._received(replica, first, servers[0][0], key)   # the page already read, not asked for again
            for _, servers in ranked:
                for member, stub, head in servers:
                    try:
                        self._catch_up(member, stub, head, stop)
                    except grpc.RpcError as error:
                        self._cannot_read(member, error)

    def _catch_up(self, member: str, stub: pb_grpc.ReplicaStub, head: pb.ChainHead,
                  stop: threading.Event | None = None) -> None:
        key = (head.job_id, head.chain)
        if (member, *key) in self.diverged:
            return
        replica = self.replica(*key)
        with self._lock:
            self.reported.setdefault(key, {})[member] = head
        if replica.head is not None and head.blocks == replica.height and head.head == replica.head.hash().hex():
            return   # where the observer stands
        start = max(0, min(replica.height, head.blocks) - 1)
        while start < head.blocks and not (stop is not None and stop.is_set()):
            request = pb.ChainBlocksRequest(job_id=head.job_id, chain=head.chain, from_height=start)
            page = list(stub.ChainBlocks(request, timeout=CALL_SECONDS))
            if not page:
                return
            try:
                self._check_page(page, start, member, key)
            except BlockRefused as error:
                self._note_refusal(key, str(error))
                return
            if not self._received(replica, [codec.block_from_proto(message) for message in page], member, key):
                return
            start = page[-1].height + 1

    def _received(self, replica: ObserverReplica, blocks: list[Block], member: str, key: tuple[str, str]) -> bool:
        """``blocks`` from ``member`` into ``replica``; False when one is refused (noted for the status) or conflicts
        with one held (an alarm: that member is not read on this chain again)."""
        try:
            alarm = replica.receive_all(blocks, member)
        except BlockRefused as error:
            self._note_refusal(key, str(error))
            return False
        if alarm is not None:
            self.diverged.add((member, *key))
            return False
        return True

    @staticmethod
    def _check_page(page: list[pb.Block], start: int, member: str, key: tuple[str, str]) -> None:
        """BlockRefused unless ``page`` holds blocks ``start``, ``start`` + 1, … as asked."""
        heights = [message.height for message in page]
        if heights != list(range(start, start + len(page))):
            shown = ", ".join(map(str, heights[:5])) + ("…" if len(heights) > 5 else "")
            raise BlockRefused(heights[0], *key, member,
                               f"a page asked from block {start} holds blocks {shown}, not one by one from there")

    def _shown_to(self, caller: str | None, replica: ObserverReplica) -> bool:
        """A member sees a chain only if its genesis names it; the observer's operator (and a plaintext caller, whom
        nobody checked, as a debugging run has) sees them all."""
        return caller is None or caller == self.name or (replica.head is not None and caller in replica.members)

    def status(self, caller: str | None) -> pb.ObserverStatusReply:
        """The chains (and their alarms) whose genesis names ``caller``, the name in its certificate."""
        with self._lock:
            replicas = dict(self.replicas)
            reported = {key: dict(heads) for key, heads in self.reported.items()}
        chains, alarms = [], []
        for key, replica in sorted(replicas.items()):
            if not self._shown_to(caller, replica):
                continue
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
