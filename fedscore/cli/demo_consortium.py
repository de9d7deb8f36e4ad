"""What `fedscore demo` shows of its consortium after scoring: an identity verification, the observer, the monitor.

While the scoring daemons still run, the demo identity verifier (its key
ships with the package, public on purpose) records that it saw the applicant
the demo's dispute is about, a face match on two synthetic evidence files
kept in the demo folder; then the observer, which has followed every chain
from the start, is waited for until its replica holds every member's head.
After the daemons stop, the card center's monitor reviews its scoring log as
`fedscore monitor --job` does. Each act returns a small document for
`demo --json` and a line or two for the terminal.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from fedscore.plural import plural

if TYPE_CHECKING:
    from fedscore.daemons.launcher import LocalConsortium

VERIFICATIONS = "verifications"          # in the demo folder: <applicant>/<evidence files>, the card center's copies
EVIDENCE = ("selfie.jpg", "id-card.jpg")  # synthetic stand-ins for what a face match keeps
METHOD = "face-match"
OBSERVER_WAIT = 60.0                     # seconds the observer may take to reach every member's head
POLL = 0.1
CHAINS = (("training", "ledger.sqlite"), ("scoring", "scoring.sqlite"))


def write_evidence(folder: Path, applicant: str) -> Path:
    """The applicant's evidence files in ``folder``/verifications/<applicant>: synthetic bytes shaped as JPEGs."""
    evidence = folder / VERIFICATIONS / applicant
    evidence.mkdir(parents=True, exist_ok=True)
    for name in EVIDENCE:
        (evidence / name).write_bytes(b"\xff\xd8\xff\xe0" + f"synthetic demo evidence: {name} of applicant "
                                      f"{applicant}\n".encode() + b"\xff\xd9")
    return evidence


def record_verification(consortium: LocalConsortium, job: Path, job_id: str, applicant: str, folder: Path) -> dict:
    """The demo verifier's signed record of ``applicant``, sent to the running card center (as `fedscore
    verification record` does), which puts it on the model's scoring chain; closing the model seals it."""
    from fedscore.cli.demo import DEMO_VERIFIER, verifier_key
    from fedscore.job_file import load_scoring
    from fedscore.protocol.scoring.verification import file_digests, make_record
    from fedscore.transport.clients.scoring import ScoringClient

    started = time.perf_counter()
    evidence = write_evidence(folder, applicant)
    signed = make_record(verifier_key(), DEMO_VERIFIER, applicant, METHOD, file_digests([evidence / n for n in EVIDENCE]))
    center = consortium.spec.card_center
    client = ScoringClient(center.address, center.name, consortium.card_center_identity)
    try:
        client.open_scoring(consortium.spec, load_scoring(job).to_json(), job_id)
        reply = client.record_verification(applicant, signed, job_id)
        client.close_scoring(job_id)   # the entry goes on the chain before the daemons stop
    finally:
        client.close()
    return {"applicant": applicant, "verification_id": reply.verification_id, "method": METHOD,
            "verifier": DEMO_VERIFIER, "evidence_dir": str(evidence), "evidence": signed.evidence,
            "seconds": round(time.perf_counter() - started, 3)}


def member_heads(state_root: Path, job_id: str) -> dict[str, dict[str, str]]:
    """chain -> member -> head (hex) of each member's replica file in the run's state."""
    from fedscore.ledger.position import read_position_file

    heads: dict[str, dict[str, str]] = {}
    for member in sorted(p.parent.name for p in state_root.glob("*/party.toml")) + ["coordinator"]:
        for chain, name in CHAINS:
            path = state_root / member / "jobs" / job_id / name
            if path.is_file():
                heads.setdefault(chain, {})[member] = read_position_file(path).head.hex()
    return heads


def observer_caught_up(consortium: LocalConsortium, job_id: str, wait: float = OBSERVER_WAIT) -> dict:
    """Poll the observer's status until its replica of each of the job's chains holds the head every member's
    replica file holds (read from the members' state) and every member reports it; at most ``wait`` seconds.
    The model is closed by then, so the members' files reach their final heads."""
    from fedscore.cli.observer import observer_status

    started = time.perf_counter()
    identity = consortium.card_center_identity
    while True:
        heads = member_heads(consortium.state_root, job_id)
        found = observer_status(consortium.observer, consortium.observer_address, identity)
        chains = {c["chain"]: c for c in found["chains"] if c["job_id"] == job_id}
        caught_up = all(kind in chains and chains[kind]["agree"] and chains[kind]["head"] == want
                        and set(chains[kind]["members"]) == set(members)
                        for kind, members in heads.items() for want in set(members.values()))
        if caught_up or found["alarms"] or time.perf_counter() - started > wait:
            break
        time.sleep(POLL)
    return {
        "observer": consortium.observer, "caught_up": caught_up, "health": found["health"],
        "chains": {kind: {"blocks": chains[kind]["blocks"], "head": chains[kind]["head"],
                          "members": sorted(chains[kind]["members"])} for kind in heads if kind in chains},
        "member_heads": heads, "alarms": found["alarms"], "seconds": round(time.perf_counter() - started, 3),
    }


def observer_line(observed: dict | None) -> str:
    if observed is None:
        return "no observer ran"
    chains = ", ".join(f"{kind} {plural(c['blocks'], 'block')}" for kind, c in observed["chains"].items())
    agreement = ("heads agree with every member" if observed["caught_up"] else
                 f"not yet at every member's head after {observed['seconds']:.0f} s")
    alarm = "; ".join(a["detail"] for a in observed["alarms"]) or "no alarm"
    return (f"observer {observed['observer']}: follows {plural(len(observed['chains']), 'chain')} ({chains}), "
            f"{agreement}, {'ALARM: ' if observed['alarms'] else ''}{alarm}")


def while_scoring_runs(job: Path, folder: Path) -> Callable[[LocalConsortium, dict], dict]:
    """What the demo does once its applicants are scored, before the daemons stop (score_file's while_running):
    the disputed applicant's verification recorded, the marketing campaign at ecommerce
    (fedscore.cli.demo_audience), then the observer waited for."""
    def act(consortium: LocalConsortium, result: dict) -> dict:
        from fedscore.cli.demo import disputed_row
        from fedscore.cli.demo_audience import run_campaign
        from fedscore.job_file import load_scoring

        row = disputed_row(result["table"])
        verification = None if row is None else record_verification(consortium, job, result["job_id"], str(row["id"]),
                                                                     folder)
        converted = str(result["table"]["id"].iloc[0])   # an applicant who came with the campaign's id
        audience = run_campaign(consortium, folder, load_scoring(job).policy.approve_at, converted)
        return {"verification": verification, "audience": audience,
                "observer": observer_caught_up(consortium, result["job_id"])}
    return act


def verification_line(verification: dict | None) -> str:
    if verification is None:
        return "no applicant was scored, so no identity verification to record"
    return (f"identity verification {verification['verification_id']}: {verification['verifier']} saw applicant "
            f"{verification['applicant']} ({verification['method']}, "
            f"{plural(len(verification['evidence']), 'evidence file')} kept in {verification['evidence_dir']}); "
            "on the scoring chain, sealed")


def monitor_review(job: Path) -> dict:
    """The card center's first review of the model in service, as `fedscore monitor --job` runs it."""
    from fedscore.cli.monitor import run_monitor
    from fedscore.job_file import load_monitoring

    started = time.perf_counter()
    document = run_monitor(job)
    latest = document["periods"][-1] if document["periods"] else None
    return {"job": str(job), "requests": document["requests"], "period": latest and latest["period"],
            "psi": latest and latest["psi"], "psi_reading": latest and latest["psi_reading"],
            "judged": bool(latest and latest["judged"]), "min_requests": load_monitoring(job).min_requests,
            "alerts": [a["message"] for a in document["alerts"]], "seconds": round(time.perf_counter() - started, 3)}


def monitor_lines(review: dict) -> str:
    if review["period"] is None:
        return f"monitor: no request logged yet; run `fedscore monitor --job {review['job']}` once the model serves"
    psi = f"score PSI {review['psi']:.3f} against training"
    judged = (f"{psi} ({review['psi_reading']}), " + ("; ".join(f"ALERT: {a}" for a in review["alerts"]) or "no alert")
              if review["judged"] else
              f"fewer than the {review['min_requests']} a period needs before its PSI means anything, so not judged yet")
    return (f"monitor: {plural(review['requests'], 'request')} scored on {review['period']}: {judged}\n"
            f"  fedscore monitor --job {review['job']}")
