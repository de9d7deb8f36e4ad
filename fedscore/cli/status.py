"""`fedscore status`: every member of a job's consortium — answering or not, its jobs, their last step and
the head of its chain replica — read from the running daemons (health service, then Status)."""
from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedscore.job import JobSpec
from fedscore.crypto.certs import COORDINATOR
from fedscore.daemons.health import SERVICES
from fedscore.proto import fedscore_pb2 as pb
from fedscore.proto import fedscore_pb2_grpc as pb_grpc
from fedscore.transport.rpc import open_channel
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
            found["error"] = error.details() or error.code().name
            return found
    found["version"] = reply.version
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


def format_status(members: list[dict]) -> str:
    lines = []
    for member in members:
        head = f"{member['member']:<14} {member['address']:<22} {member['health']}"
        if "error" in member:
            head += f"  ({member['error']})"
        lines.append(head)
        for job in member["jobs"]:
            step = f"epoch {job['step'][0]} batch {job['step'][1]}" if job["step"] else "no step yet"
            chain = f"{job['chain']} chain {job['blocks']} blocks, head {job['head'][:12]}" if job["head"] else "no chain yet"
            detail = f"  {job['detail']}" if job.get("detail") else ""
            lines.append(f"    {job['job_id']:<24} {job['stage']:<9} {step:<20} {chain}{detail}")
    return "\n".join(lines)
