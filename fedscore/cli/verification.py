"""`fedscore verification ...`: make a verifier's key, and sign and send a verification as a verifier would.

A card center's verification system normally calls RecordVerification (gRPC) or POST /v1/verifications
itself; these commands do the same for operators and tests: `keygen` makes a verifier's Ed25519 key and
prints the line the card center's config needs to trust it, `record` signs a record of the evidence files'
SHA-256 (the files are read here and stay here) and sends it to the card center, which puts it on the
model's scoring chain.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from nacl.signing import SigningKey

from fedscore.cli.exits import EXIT_OK
from fedscore.errors import ConfigError
from fedscore.files import write_secret
from fedscore.plural import plural


def verification_command(args: argparse.Namespace) -> int:
    return {"keygen": keygen, "record": record}[args.action](args)


def keygen(args: argparse.Namespace) -> int:
    path: Path = args.out
    if path.exists():
        raise ConfigError(f"{path} exists; a verifier's key is never overwritten (its records would no longer verify)")
    key = SigningKey.generate()
    public = bytes(key.verify_key).hex()
    write_secret(path, f"# Ed25519 seed of identity verifier {args.name}: keep it secret\n{bytes(key).hex()}\n".encode())
    if args.json:
        print(json.dumps({"key_file": str(path), "verifier": args.name, "public_key": public}, indent=2))
    elif not args.quiet:
        print(f"verifier {args.name!r}: key in {path} (owner-only); its public key: {public}")
        print(f'the card center trusts it with, in its party config: verifiers = {{ {args.name} = "{public}" }}')
    return EXIT_OK


def _check_where(args: argparse.Namespace) -> None:
    """Exactly one way to reach the card center, as `score` takes it."""
    if args.tls is not None and args.insecure:
        raise ConfigError("verification record: --tls and --insecure contradict each other; give one")
    if args.local and args.tls is not None:
        raise ConfigError("verification record: --tls is for daemons already running; --local makes its own identities")
    if not args.local and args.tls is None and not args.insecure:
        raise ConfigError("verification record against running daemons needs the card center's member folder "
                          "(--tls DIR), or --insecure for daemons started with --insecure; or add --local")
    if args.state is not None and not args.local:
        raise ConfigError("verification record: --state names the state of daemons --local starts; use it with --local")


def record(args: argparse.Namespace) -> int:
    from fedscore.cli.runner import client_identity
    from fedscore.daemons.launcher import LocalConsortium
    from fedscore.job_file import load_job, load_scoring
    from fedscore.protocol.scoring.verification import file_digests, make_record, read_verifier_key
    from fedscore.transport.clients.scoring import ScoringClient

    _check_where(args)
    spec, base = load_job(args.job)
    settings = load_scoring(args.job)
    signed = make_record(read_verifier_key(args.verifier_key), args.verifier, args.applicant, args.method,
                         file_digests(args.evidence))

    def send(job_spec, address: str, tls) -> dict:
        client = ScoringClient(address, job_spec.card_center.name, tls)
        try:
            opened = client.open_scoring(job_spec, settings.to_json(), args.job_id or "")
            reply = client.record_verification(args.applicant, signed, opened.job_id)
            if args.local:
                client.close_scoring(opened.job_id)   # the entry goes on the chain before the daemons stop
        finally:
            client.close()
        return {"verification_id": reply.verification_id, "job_id": reply.job_id, "record_digest": reply.record_digest,
                "time_ms": reply.time_ms, "applicant": signed.applicant.hex(), "method": signed.method,
                "verifier": signed.verifier, "evidence": signed.evidence, "ledger": opened.ledger_path}

    if args.local:
        with LocalConsortium(spec, base, args.state or base / "state", 1, settings.consent_issuers,
                             verifiers=dict(settings.verifiers)) as consortium:
            done = send(consortium.spec, consortium.spec.card_center.address,
                        consortium.identity(spec.card_center.name))
    else:
        if not spec.card_center.address:
            raise ConfigError(f"job file {args.job}: no address for the card center; add it, or use --local")
        done = send(spec, spec.card_center.address, client_identity(args.tls, args.insecure, spec.card_center.name))
    if args.json:
        print(json.dumps(done, indent=2))
    elif not args.quiet:
        print(f"verification {done['verification_id']} recorded on model {done['job_id']}'s scoring chain: applicant "
              f"{done['applicant'][:16]}… by {done['method']}, verifier {done['verifier']}, "
              f"{plural(len(done['evidence']), 'evidence file')} (their SHA-256 only; the files stay here)")
    return EXIT_OK
