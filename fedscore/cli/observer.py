"""`fedscore observer serve`, and the observer as `fedscore status` shows it: its chains, heads and alarms."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from fedscore.cli.exits import EXIT_ERROR, EXIT_OK, EXIT_UNVERIFIED
from fedscore.errors import ConfigError
from fedscore.plural import plural

if TYPE_CHECKING:
    from fedscore.transport.tls import TlsIdentity

TIMEOUT = 5.0
HEAD_DIGITS = 16   # of a head, as `fedscore status` shows it


def cmd_observer_serve(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from fedscore.daemons.observer.config import load_observer_config
    from fedscore.daemons.observer.daemon import serve_observer

    config = load_observer_config(args.config)
    if args.listen:
        config = replace(config, listen=args.listen)
    return serve_observer(config, args.ready_file, insecure=args.insecure, lifeline_fd=args.lifeline_fd)


OBSERVER_HEAD = """\
# The observer {name}: a replica of every chain the members below let it read. Start it with:
#   fedscore observer serve --config {config_hint}
# Each member admits it with observers = ["{name}"] in its own config (party.toml, the coordinator's).
"""
COMMENT_COLUMN = 32


def init_observer(name: str, folder: Path, listen: str, tls_dir: Path | None, members: list[str]) -> list[Path]:
    """A new observer's folder: its config (which `observer serve` takes as it is) and an empty state folder."""
    from fedscore.daemons.observer.config import load_observer_config

    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(f"{folder} already exists; refusing to overwrite it (choose another --dir, or remove it)")
    if not members:
        raise ConfigError("init observer: name at least one member to read, --member NAME=HOST:PORT")
    tls = json.dumps(str(tls_dir.resolve()) if tls_dir is not None else "tls")
    settings = [
        ("[observer]", ""),
        (f"name = {json.dumps(name)}", "the name in its certificate from the consortium CA"),
        (f"listen = {json.dumps(listen)}", "its status and health service"),
        (f"tls_dir = {tls}", f"cert.pem, key.pem, ca.pem from `fedscore certs init --members {name}`"),
        ('state_dir = "state"', "its replicas, one folder per job; relative to this file"),
        ("poll_seconds = 5.0", "how often it asks every member for new blocks"),
        ("", ""),
        ("[observer.members]", "every member it reads: name = \"host:port\""),
        *((f"{member} = {json.dumps(address)}", "") for member, address in map(observer_target, members)),
    ]
    config = folder / "observer.toml"
    lines = [f"{setting:<{COMMENT_COLUMN - 1}} # {comment}" if comment else setting for setting, comment in settings]
    made = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    config.write_text(OBSERVER_HEAD.format(name=name, config_hint=config) + "\n".join(lines) + "\n")
    try:
        load_observer_config(config)   # what serve will check: a bad name or address is said now, and nothing is left
    except ConfigError:
        config.unlink()
        if made:
            folder.rmdir()
        raise
    (folder / "state").mkdir()
    return [config, folder / "state"]


def cmd_init_observer(args: argparse.Namespace) -> int:
    folder = args.dir if args.dir is not None else Path(args.name)
    written = init_observer(args.name, folder, args.listen, args.tls_dir, args.member)
    if not args.quiet:
        print(f"observer {args.name!r} in {folder}:")
        for path in written:
            print(f"  {path}")
        print(f"next: each member adds observers = [\"{args.name}\"] to its config; then: "
              f"fedscore observer serve --config {written[0]}")
    return EXIT_OK


def observer_target(text: str) -> tuple[str, str]:
    """NAME=HOST:PORT, as `status --observer` takes it: the name its certificate gives, and its address."""
    name, _, address = text.partition("=")
    if not name or ":" not in address:
        raise ConfigError(f"--observer {text!r}: give the observer's name and address, e.g. regulator=127.0.0.1:50090")
    return name, address


def observer_status(name: str, address: str, tls: TlsIdentity | None) -> dict:
    """The observer's health, its chains (its head and each member's) and its alarms."""
    import grpc   # here, so that `fedscore --help` does not load gRPC
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from fedscore.daemons.health import SERVICES
    from fedscore.proto import fedscore_pb2 as pb
    from fedscore.proto import fedscore_pb2_grpc as pb_grpc
    from fedscore.transport.rpc import failure_reason, open_channel

    found: dict = {"observer": name, "address": address, "health": "DOWN", "chains": [], "alarms": [], "members": []}
    with open_channel(address, name, tls) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICES["observer"]), timeout=TIMEOUT)
            found["health"] = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
            reply = pb_grpc.ObserverStub(channel).Status(pb.PingRequest(), timeout=TIMEOUT)
        except grpc.RpcError as error:
            found["error"] = failure_reason(error.details() or error.code().name)
            return found
    found["version"] = reply.version
    found["members"] = [{"member": m.member, **({"error": m.error} if m.error else {})} for m in reply.members]
    for chain in reply.chains:
        members = {m.member: {"blocks": m.blocks, "head": m.head} for m in chain.members}
        agree = all(m["blocks"] == chain.blocks and m["head"] == chain.head for m in members.values())
        found["chains"].append({"job_id": chain.job_id, "chain": chain.chain, "blocks": chain.blocks, "head": chain.head,
                                "members": members, "agree": agree, **({"refused": chain.refused} if chain.refused else {})})
    found["alarms"] = [{"job_id": a.job_id, "chain": a.chain, "height": a.height, "held": a.held, "held_from": a.held_from,
                        "other": a.other, "other_from": a.other_from, "detail": a.detail} for a in reply.alarms]
    return found


def format_observer(found: dict) -> str:
    """The observer's lines in `fedscore status`: health, each chain against each member, then the alarms."""
    head = f"{found['observer']:<14} {found['address']:<22} {found['health']}  (observer)"
    lines = [head + (f"  ({found['error']})" if "error" in found else "")]
    for member in found["members"]:
        if "error" in member:
            lines.append(f"    cannot read {member['member']}: {member['error']}")
    for chain in found["chains"]:
        state = f"{plural(len(chain['members']), 'member')} agree" if chain["agree"] else "members: " + ", ".join(
            f"{name} {plural(m['blocks'], 'block')} {m['head'][:HEAD_DIGITS]}" for name, m in chain["members"].items())
        lines.append(f"    {chain['job_id']:<24} {chain['chain']:<9} {plural(chain['blocks'], 'block')}, head "
                     f"{chain['head'][:HEAD_DIGITS]}  {state}")
        if "refused" in chain:
            lines.append(f"        refused: {chain['refused']}")
    lines += [f"    ALARM: {alarm['detail']}" for alarm in found["alarms"]]
    return "\n".join(lines)


def observers_exit(observers: list[dict]) -> int:
    """3 when an observer recorded an alarm, else 2 when one does not serve, else 0."""
    if any(found["alarms"] for found in observers):
        return EXIT_UNVERIFIED
    return EXIT_OK if all(found["health"] == "SERVING" for found in observers) else EXIT_ERROR
