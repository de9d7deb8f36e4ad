"""What mutual TLS costs a gRPC call between two members, measured side by side in one run.

One server serves the same trivial method on a plaintext port and on a mutual-TLS port (certificates
from a fresh consortium CA); a client calls each in turn, and the server times the caller check every
fedscore method makes (reading the member name from the verified certificate).

    python bench/tls.py [--calls 3000] [--rounds 5] [--smoke]

Last line (see figures.py): the mutual-TLS call time beside the plaintext one, and the caller check.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from fedscore.crypto.certs import init_consortium
from fedscore.proto import fedscore_pb2 as pb
from fedscore.proto import fedscore_pb2_grpc as pb_grpc
from fedscore.transport.rpc import open_channel
from fedscore.transport.tls import TlsIdentity, caller_name

from common import parse_with_smoke
from figures import Figure, print_figures


class Timed(pb_grpc.PartyServicer):
    def Ping(self, request, context):
        return pb.PingReply(name="ok")

    def Status(self, request, context):
        started = time.perf_counter()
        for _ in range(1000):
            caller_name(context)
        return pb.StatusReply(version=f"{(time.perf_counter() - started) * 1000:.2f}")   # µs per check


def per_call_us(stub, calls: int) -> float:
    stub.Ping(pb.PingRequest())
    started = time.perf_counter()
    for _ in range(calls):
        stub.Ping(pb.PingRequest())
    return (time.perf_counter() - started) / calls * 1e6


def measure(folders: dict[str, Path], calls: int, rounds_wanted: int) -> tuple[dict[str, list[float]], float]:
    """({"plaintext": [µs a call, each round], "mutual TLS": [...]}, µs a caller check) from one server."""
    server_id, client_id = TlsIdentity.load(folders["card_center"]), TlsIdentity.load(folders["coordinator"])
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_PartyServicer_to_server(Timed(), server)
    plain_port = server.add_insecure_port("127.0.0.1:0")
    tls_port = server.add_secure_port("127.0.0.1:0", server_id.server_credentials())
    server.start()
    plain = pb_grpc.PartyStub(open_channel(f"127.0.0.1:{plain_port}", "card_center", None))
    secure = pb_grpc.PartyStub(open_channel(f"127.0.0.1:{tls_port}", "card_center", client_id))
    rounds: dict[str, list[float]] = {"plaintext": [], "mutual TLS": []}
    for _ in range(rounds_wanted):   # alternated, so both see the same machine
        rounds["plaintext"].append(per_call_us(plain, calls))
        rounds["mutual TLS"].append(per_call_us(secure, calls))
    check = float(secure.Status(pb.PingRequest()).version)
    server.stop(0)
    return rounds, check


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parse_with_smoke(parser, "a few hundred calls, one round: seconds", calls=200, rounds=1)
    with tempfile.TemporaryDirectory(prefix="fedscore-bench-tls-") as tmp:
        rounds, check = measure(init_consortium(Path(tmp), ["card_center"]), args.calls, args.rounds)
    for name, values in rounds.items():
        print(f"{name:<11} unary call on loopback: median {statistics.median(values):.0f} µs "
              f"({', '.join(f'{v:.0f}' for v in values)})")
    print_figures([
        Figure("tls_call_us", statistics.median(rounds["mutual TLS"]), statistics.median(rounds["plaintext"]), "plaintext"),
        Figure("tls_caller_check_us", check),   # the member name read from the verified certificate
    ])


if __name__ == "__main__":
    main()
