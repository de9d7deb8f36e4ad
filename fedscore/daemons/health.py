"""The standard gRPC health service (grpc.health.v1) on every daemon, for load balancers, systemd probes
and `fedscore status`: SERVING while the daemon answers, NOT_SERVING once it is stopping."""
from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVICES = {"party": "fedscore.v1.Party", "coordinator": "fedscore.v1.Coordinator", "observer": "fedscore.v1.Observer"}


def add_health(server: grpc.Server, role: str) -> health.HealthServicer:
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    for name in ("", SERVICES[role]):
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return servicer


def stopping(servicer: health.HealthServicer) -> None:
    servicer.enter_graceful_shutdown()   # every service NOT_SERVING from now on
