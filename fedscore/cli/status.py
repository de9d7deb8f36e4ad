"""`fedscore status`: every member of a job's consortium — answering or not, its jobs (finished ones
included), their last step and the head of each chain replica — read from the running daemons (health
service, then Status); then, for each job and chain, the members' heads compared."""
from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedscore.cli.audit import HEAD_PREFIX_DIGITS
from fedscore.job import JobSpec
from fedscore.plural import plural
from fedscore.cli.exits import EXIT_ERROR, EXIT_OK, EXIT_UNVERIFIED
from fedscore.crypto.certs import COORDINATOR
from fedscore.daemons.health import SERVICES
from fedscore.proto import fedscore_pb2 as pb
from fedscore.proto import fedscore_pb2_grpc as pb_grpc
from fedscore.transport.rpc import failure_reason, open_channel
from fedscore.transport.tls import TlsIdentity

TIMEOUT = 5.0


def member_status(name: str, address: str, role: str, tls: TlsIdentity | None) -> dict:
    """One daemon's health and state; ``health`` is SERVING, NOT_SERVING or DOWN (with why)."""
    found: dict = {"member": name, "address": address, "role": role, "health": "DOWN", "jobs": []}
    with open_channel(address, name, tls) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICES[role]), timeout=TIMEOUT)
            found["health"] = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
            stub = pb_grpc.CoordinatorStub(channel) if role == "coordinator" else pb_grpc.PartyStub(channel)
            reply = stub.Status(pb.PingRequest(), timeout=TIMEOUT)
        except grpc.RpcError as error:
            found["error"] = failure_reason(error.details() or error.code().name)
            return found
    found["version"] = reply.version
    found["jobs_left_off"] = reply.jobs_left_off
    found["jobs"] = [
        {"job_id": j.job_id, "stage": j.stage, "step": [j.epoch, j.batch] if j.epoch else None, "chain": j.chain,
         "blocks": j.blocks, "head": j.head, **({"detail": j.detail} if j.detail else {})}
        for j in reply.jobs
    ]
    return found


def consortium_status(spec: JobSpec, tls: TlsIdentity | None) -> list[dict]:
    """The coordinator, then each party, at the addresses the job file gives."""
    members = [(COORDINATOR, spec.coordinator_address, "coordinator")] if spec.coordinator_address else []
    members += [(p.name, p.address, "party") for p in spec.parties if p.address]
    return [member_status(name, address, role, tls) for name, address, role in members]


def compare_heads(members: list[dict]) -> list[dict]:
    """For each job and chain some member lists, every member's position on it and a verdict: "agree" (one
    head, one height), "behind" (a member holds fewer blocks than another) or "fork" (two members hold
    different blocks at the same height, which the chain's own checks cannot show and a dishonest proposer
    could cause). Each member's ``state`` is "same", "behind" or "differs"."""
    chains: dict[tuple[str, str], dict[str, dict]] = {}
    for member in members:
        for job in member["jobs"]:
            if job["head"]:
                chains.setdefault((job["job_id"], job["chain"]), {})[member["member"]] = job
    comparison = []
    for (job_id, chain), held in chains.items():
        tip = max(job["blocks"] for job in held.values())
        forked = len({job["head"] for job in held.values() if job["blocks"] == tip}) > 1
        heads = {
            name: {"blocks": job["blocks"], "head": job["head"],
                   "state": "behind" if job["blocks"] < tip else "differs" if forked else "same"}
            for name, job in held.items()
        }
        verdict = "fork" if forked else "behind" if any(h["state"] == "behind" for h in heads.values()) else "agree"
        entry = {"job_id": job_id, "chain": chain, "verdict": verdict, "blocks": tip, "members": heads}
        comparison.append({**entry, "summary": _summary(entry)})
    return comparison


def _summary(entry: dict) -> str:
    """One line naming who holds what, e.g. "heads agree (3 members): 24 blocks, head 8266310e10f78b9e"."""
    heads = entry["members"]
    if entry["verdict"] == "agree":
        head = next(iter(heads.values()))
        members = f"{len(heads)} member{'s' * (len(heads) > 1)}"
        return f"heads agree ({members}): {plural(head['blocks'], 'block')}, head {head['head'][:HEAD_PREFIX_DIGITS]}"
    at_tip: dict[str, list[str]] = {}
    for name, head in heads.items():
        if head["state"] != "behind":
            at_tip.setdefault(head["head"], []).append(name)
    forked = entry["verdict"] == "fork"
    height = "" if forked else f" at {plural(entry['blocks'], 'block')}"   # a fork's opening says it
    parts = [f"{', '.join(names)} hold{'s' * (len(names) == 1)} {head[:HEAD_PREFIX_DIGITS]}{height}" for head, names in at_tip.items()]
    parts += [f"{name} is behind at {plural(head['blocks'], 'block')}, head {head['head'][:HEAD_PREFIX_DIGITS]}"
              for name, head in heads.items() if head["state"] == "behind"]
    opening = f"heads DIFFER at {plural(entry['blocks'], 'block')} (a fork)" if forked else "heads differ (a member is behind)"
    return f"{opening}: {'; '.join(parts)}"


def status_document(members: list[dict]) -> dict:
    """What `fedscore status --json` prints: each member's answer, and the heads compared."""
    return {"members": members, "heads": compare_heads(members)}


def status_exit(members: list[dict]) -> int:
    """3 when two members hold different blocks at one height of a chain, else 2 when a member does not
    serve, else 0 (a member behind is not an error: a block may be on its way)."""
    if any(entry["verdict"] == "fork" for entry in compare_heads(members)):
        return EXIT_UNVERIFIED
    return EXIT_OK if all(m["health"] == "SERVING" for m in members) else EXIT_ERROR


def format_status(members: list[dict]) -> str:
    """Each member and its jobs, then the heads compared, one line per job and chain."""
    lines = []
    for member in members:
        head = f"{member['member']:<14} {member['address']:<22} {member['health']}"
        if "error" in member:
            head += f"  ({member['error']})"
        lines.append(head)
        for job in member["jobs"]:
            step = f"epoch {job['step'][0]} batch {job['step'][1]}" if job["step"] else \
                "" if job["chain"] == "scoring" else "no step yet"
            chain = f"{job['chain']} chain {plural(job['blocks'], 'block')}, head {job['head'][:HEAD_PREFIX_DIGITS]}" if job["head"] \
                else "no chain yet"
            detail = f"  {job['detail']}" if job.get("detail") else ""
            lines.append(f"    {job['job_id']:<24} {job['stage']:<11} {step:<20} {chain}{detail}")
        if member.get("jobs_left_off"):
            lines.append(f"    ({member['jobs_left_off']} older jobs not listed)")
    comparison = compare_heads(members)
    if comparison:
        lines.append("heads")
        lines += [f"    {entry['job_id']:<24} {entry['chain']:<9} {entry['summary']}" for entry in comparison]
    return "\n".join(lines)
