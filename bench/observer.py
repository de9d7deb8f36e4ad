"""An observer catching up a chain over gRPC: N blocks co-signed by 3 members, read from a real coordinator daemon.

    python bench/observer.py [--blocks 3000] [--repeat 3] [--smoke]

A training chain of N blocks (each one step entry, signed with Ed25519 by the coordinator and two parties) is
written to a coordinator's state folder; the coordinator daemon serves it with mutual TLS to an observer it
admits (`observers`). The observer (in this process) starts from nothing and follows until it holds the
coordinator's head: every block fetched a page at a time, checked (link, Merkle root, every signature, every
entry) and stored in its own SQLite replica. Prints the blocks per second, the median of --repeat catch-ups,
each into a fresh replica. Last line (see figures.py): observer_catchup_blocks_per_second=...
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nacl.signing import SigningKey

from fedscore.crypto.certs import init_consortium
from fedscore.daemons.observer.follower import Follower
from fedscore.ledger.block import make_block, sign
from fedscore.ledger.identity import KEY_FILE
from fedscore.ledger.store import LedgerStore
from fedscore.transport.rpc import open_channel
from fedscore.transport.tls import TlsIdentity

from common import parse_with_smoke
from figures import Figure, print_figures

MEMBERS = {"coordinator": "coordinator", "card_center": "card_center", "bureau": "partner"}
OBSERVER = "regulator"
JOB_ID = "bench-0123abcd"
STARTUP_SECONDS = 60.0


def write_chain(path: Path, blocks: int, keys: dict[str, SigningKey]) -> bytes:
    """A training chain of ``blocks`` blocks signed by every member; returns its head hash."""
    start = {
        "kind": "job_start", "job_id": JOB_ID, "job_name": "bench", "job_digest": "00" * 32,
        "paillier_fingerprint": "00" * 32, "fees": {"currency": "CNY", "per_step": 1, "per_overlap_row": 0},
        "members": {n: {"role": r, "key": bytes(keys[n].verify_key).hex()} for n, r in MEMBERS.items()},
    }
    store, block = LedgerStore(path), None
    for height in range(blocks):
        entry = start if height == 0 else {
            "kind": "step", "epoch": height, "batch": 0, "rows": 21000, "loss": 0.5, "seconds": 1.0,
            "digests": {f"message/{i}": f"{height * 8 + i:064x}" for i in range(8)},
        }
        block = make_block(block, [entry])
        block = block.with_signatures({name: sign(block, key) for name, key in keys.items()})
        store.append(block)
    store.close()
    return block.hash()


def start_coordinator(folder: Path, certs: Path) -> tuple[subprocess.Popen, str]:
    """The coordinator daemon serving ``folder`` as its state, admitting the observer; (process, address)."""
    config = folder / "coordinator.toml"
    config.write_text(f'[coordinator]\nlisten = "127.0.0.1:0"\nstate_dir = "."\ntls_dir = "{certs / "coordinator"}"\n'
                      f'observers = ["{OBSERVER}"]\n')
    ready = folder / "ready"
    process = subprocess.Popen([sys.executable, "-m", "fedscore", "coordinator", "serve", "--config", str(config),
                                "--ready-file", str(ready)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + STARTUP_SECONDS
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the coordinator daemon did not start")
        time.sleep(0.05)
    address = ready.read_text().split()[0]
    with open_channel(address, "coordinator", TlsIdentity.load(certs / OBSERVER)) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        while True:
            try:
                if check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING:
                    return process, address
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the coordinator daemon did not answer its health check")
            time.sleep(0.05)


def catch_up(state: Path, address: str, tls: TlsIdentity, head: bytes) -> float:
    """Seconds for a fresh observer to hold ``head``."""
    follower = Follower(OBSERVER, state, {"coordinator": address}, tls)
    try:
        started = time.perf_counter()
        follower.poll()
        seconds = time.perf_counter() - started
        replica = follower.replica(JOB_ID, "training")
        if replica.head is None or replica.head.hash() != head:
            raise SystemExit(f"the observer did not reach the head: {follower.refused or follower.member_errors}")
        return seconds
    finally:
        follower.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parse_with_smoke(parser, "a few hundred blocks, once: seconds", blocks=300, repeat=1)
    keys = {name: SigningKey.generate() for name in MEMBERS}
    with tempfile.TemporaryDirectory(prefix="fedscore-observer-") as tmp:
        root = Path(tmp)
        certs = root / "certs"
        init_consortium(certs, [*MEMBERS, OBSERVER])
        member = root / "coordinator"
        (member / "jobs" / JOB_ID).mkdir(parents=True)
        (member / KEY_FILE).parent.mkdir(parents=True)
        (member / KEY_FILE).write_bytes(bytes(keys["coordinator"]))
        head = write_chain(member / "jobs" / JOB_ID / "ledger.sqlite", args.blocks, keys)
        process, address = start_coordinator(member, certs)
        try:
            tls = TlsIdentity.load(certs / OBSERVER)
            runs = [catch_up(root / f"observer-{run}", address, tls, head) for run in range(args.repeat)]
        finally:
            process.terminate()
            process.wait()
    seconds = statistics.median(runs)
    print(f"an observer caught up {args.blocks} blocks (each signed by 3 members) from a coordinator daemon over "
          f"mutual TLS in {seconds:.2f} s (median of {args.repeat}), every block checked and stored")
    print_figures([Figure("observer_catchup_blocks_per_second", args.blocks / seconds)])


if __name__ == "__main__":
    main()
