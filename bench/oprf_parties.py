"""The two parties of a PSI library other than ours, run in an interpreter where that library is installed.

Started by psi_oprf.py as ``python -c "…; oprf_parties.main()" ARGS`` so that the library (spu pins its own
numpy and jax) never enters the project's environment. Only the standard library and the PSI library itself are
imported here. Two processes are forked, the card center (rank 0, the receiver: it learns the intersection) and
the partner (rank 1, the sender); each reads its ids from ``card_center.csv`` / ``partner.csv`` (one column,
"id") in ``--folder``. Prints one JSON line: seconds (the slower party, from both links being up to its result),
the intersection size the card center found, what the partner's side reported, and each party's peak memory.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import socket
import time
from pathlib import Path

PARTIES = ("card_center", "partner")     # rank 0 receives the intersection, rank 1 sends
SPU_PROTOCOLS = {"rr22": "PROTOCOL_RR22", "kkrt": "PROTOCOL_KKRT", "ecdh": "PROTOCOL_ECDH"}
OPENMINED_FPR = 1e-9                     # false-positive rate of the partner's compressed set


def peak_mib() -> float:
    """This process's peak resident memory, or a child's (spu sorts with `sort`) if larger."""
    own = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            own = int(line.split()[1]) / 1024
    return max(own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


def read_ids(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    assert lines[0].strip('"') == "id", f"{path}: the first line should be the header 'id'"
    return lines[1:]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def spu_party(rank: int, ports: list[int], protocol: str, folder: Path, tls: Path | None, results) -> None:
    """One party of spu's two-party PSI (psi_execute, "PSI v2") over spu's own brpc link."""
    from spu import link, psi

    desc = link.Desc()
    desc.id = "psi-oprf-bench"
    for name, port in zip(PARTIES, ports):
        desc.add_party(name, f"127.0.0.1:{port}")
    desc.recv_timeout_ms = 3_600_000
    desc.http_max_payload_size = 64 << 20
    if tls is not None:   # the consortium's certificates: each side presents its own and checks the other's
        member = tls / PARTIES[rank]
        desc.enable_ssl = True
        for options in (desc.server_ssl_opts, desc.client_ssl_opts):
            options.cert.certificate_path = str(member / "cert.pem")
            options.cert.private_key_path = str(member / "key.pem")
            options.verify.ca_file_path = str(member / "ca.pem")
            options.verify.verify_depth = 1
    config = psi.PsiExecuteConfig()
    config.protocol_conf.protocol = getattr(psi.PsiProtocol, SPU_PROTOCOLS[protocol])
    config.protocol_conf.receiver_rank = 0
    config.protocol_conf.broadcast_result = False          # the partner learns no intersection
    if protocol == "ecdh":
        config.protocol_conf.ecdh_params.curve = psi.EllipticCurveType.CURVE_25519
    config.input_params.path = str(folder / f"{PARTIES[rank]}.csv")
    config.input_params.selected_keys = ["id"]
    config.input_params.keys_unique = True
    config.output_params.path = str(folder / f"{PARTIES[rank]}.out.csv")
    config.output_params.disable_alignment = True          # the ids in the intersection, in no agreed order
    desc.connect_retry_interval_ms = 100
    context = link.create_brpc(desc, rank)
    context.barrier()     # both links up: what follows is the PSI itself, as our side's timing is
    started = time.perf_counter()
    report = psi.psi_execute(config, context)
    seconds = time.perf_counter() - started
    context.barrier()     # both done before either closes its link (closing first can crash the other's brpc)
    context.stop_link()
    results.put((rank, seconds, report.intersection_count, peak_mib()))


def openmined_party(rank: int, pipe, folder: Path, results) -> None:
    """OpenMined's ECDH PSI (P-256 and a Golomb-compressed set): the partner serves, the card center asks.

    The library has no link: its messages are bytes, carried here by a pipe.
    """
    import private_set_intersection.python as psi

    ids = read_ids(folder / f"{PARTIES[rank]}.csv")
    pipe.send(len(ids))
    their_count = pipe.recv()
    started = time.perf_counter()
    if rank == 1:
        server = psi.server.CreateWithNewKey(True)
        pipe.send_bytes(server.CreateSetupMessage(OPENMINED_FPR, their_count, ids, psi.DataStructure.GCS)
                        .SerializeToString())
        request = psi.Request()
        request.ParseFromString(pipe.recv_bytes())
        pipe.send_bytes(server.ProcessRequest(request).SerializeToString())
        found = -1
    else:
        client = psi.client.CreateWithNewKey(True)
        request = client.CreateRequest(ids).SerializeToString()    # while the partner makes its setup
        setup, response = psi.ServerSetup(), psi.Response()
        setup.ParseFromString(pipe.recv_bytes())                    # read before sending: a pipe holds little
        pipe.send_bytes(request)
        response.ParseFromString(pipe.recv_bytes())
        found = len(client.GetIntersection(setup, response))
    results.put((rank, time.perf_counter() - started, found, peak_mib()))


def run(library: str, protocol: str, folder: Path, tls: Path | None) -> dict:
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    if library == "spu":
        ports = free_ports(2)
        processes = [context.Process(target=spu_party, args=(rank, ports, protocol, folder, tls, results))
                     for rank in range(2)]
    elif library == "openmined":
        ends = context.Pipe()
        processes = [context.Process(target=openmined_party, args=(rank, ends[rank], folder, results))
                     for rank in range(2)]
    else:
        raise SystemExit(f"unknown library {library!r}: spu or openmined")
    for process in processes:
        process.start()
    answers = {}
    for _ in processes:
        rank, seconds, found, peak = results.get()
        answers[rank] = (seconds, found, peak)
    for process in processes:
        process.join()
        if process.exitcode:
            raise SystemExit(f"{library} {protocol}: a party exited with code {process.exitcode}")
    return {
        "seconds": max(seconds for seconds, _, _ in answers.values()),
        "intersection": answers[0][1],
        "partner_learned": answers[1][1],            # -1: the partner's side reports no intersection
        "peak_mib": [answers[rank][2] for rank in range(2)],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="two parties of a PSI library, on loopback")
    parser.add_argument("--library", required=True, choices=["spu", "openmined"])
    parser.add_argument("--protocol", default="ecdh", choices=sorted(SPU_PROTOCOLS), help="spu's protocol")
    parser.add_argument("--folder", type=Path, required=True, help="holds card_center.csv and partner.csv")
    parser.add_argument("--tls", type=Path, help="a consortium folder (CA and one folder per member): mutual TLS")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.library, args.protocol, args.folder, args.tls)), flush=True)
