"""Run a job file, or score applicants with its trained model: against running daemons, or (--local)
on a consortium started here."""
from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import pandas as pd

from fedscore.job_file import load_job, load_scoring
from fedscore.daemons.launcher import LocalConsortium
from fedscore.errors import ConfigError, DataError, FedscoreError
from fedscore.model.csv_file import found_columns, read_csv_header
from fedscore.model.data import ID_SEPARATOR, MISSING, normalise_id
from fedscore.files import write_atomically
from fedscore.protocol.training.driver import Progress
from fedscore.report.build import write_report
from fedscore.transport.clients.coordinator import CoordinatorClient
from fedscore.transport.clients.scoring import ScoringClient
from fedscore.transport.tls import TlsIdentity


def submit(spec, address: str, progress: Callable[[Progress], None], align_only: bool = False,
           tls: TlsIdentity | None = None) -> dict:
    client = CoordinatorClient(address, tls)
    try:
        client.ping()
        return json.loads(client.run_job(spec, progress, align_only, follow_seconds=spec.restart_timeout))
    finally:
        client.close()


def run_job_file(
    job_path: Path,
    *,
    local: bool,
    report_path: Path | None = None,
    state_dir: Path | None = None,
    workers: int = 0,
    progress: Callable[[Progress], None] = lambda event: None,
    align_only: bool = False,
    tls_dir: Path | None = None,
    insecure: bool = False,
    observer: bool = False,
) -> dict:
    """``tls_dir``: the card center's member folder to submit with (not needed with --local or --insecure);
    ``observer``: with --local, also run an observer reading every chain (the demo's)."""
    spec, base = load_job(job_path)
    if local:
        progress(Progress("start", message="starting the coordinator and one daemon per party"))
        with LocalConsortium(spec, base, state_dir or base / "state", workers, insecure=insecure,
                             observer=observer) as consortium:
            consortium.supervise()
            tls = consortium.identity(spec.card_center.name)
            report = submit(consortium.spec, consortium.coordinator_address, progress, align_only, tls)
    else:
        missing = [p.name for p in spec.parties if not p.address]
        if not spec.coordinator_address or missing:
            what = "the coordinator" if not spec.coordinator_address else f"party {missing[0]!r}"
            raise ConfigError(f"job file {job_path}: no address for {what}; add it, or use --local")
        tls = client_identity(tls_dir, insecure, spec.card_center.name)
        report = submit(spec, spec.coordinator_address, progress, align_only, tls)
    if report_path is not None:
        write_report(report_path, report)
        if not align_only:
            from fedscore.report.html import write_html_report   # matplotlib loads only when a page is drawn

            write_html_report(report_path, report)
    return report


def client_identity(tls_dir: Path | None, insecure: bool, card_center: str) -> TlsIdentity | None:
    """The card center's identity for talking to running daemons: jobs and scores are its requests."""
    if insecure:
        return None
    if tls_dir is None:
        raise ConfigError(
            "no TLS identity: pass --tls with the card center's member folder (made by `fedscore certs init`), "
            "or --insecure against daemons started with --insecure"
        )
    identity = TlsIdentity.load(tls_dir)
    if identity.name != card_center:
        raise ConfigError(f"--tls {tls_dir}: the certificate names {identity.name!r}; jobs and scores are "
                          f"requested by the job's card center {card_center!r}")
    return identity


OUTPUT_COLUMNS = ["id", "probability", "score", "decision", "credit_limit", "reasons", "partners_missing", "request_id", "error"]
TEXT_COLUMNS = ["id", "decision", "reasons", "partners_missing", "request_id", "error"]
CONSENT_COLUMN = "consent"


def load_applicants(path: Path, id_columns: tuple[str, ...]) -> pd.DataFrame:
    """The applicants file as text (ids exactly as written), its id and consent columns checked: all that is
    known before the model is open, so a wrong file is named before any daemon starts."""
    where = f"applicants file {path}"
    text, header, delimiter = read_csv_header(path, where)
    needed = [*id_columns, CONSENT_COLUMN]
    missing = [c for c in needed if c not in header]
    if missing:
        raise DataError(f"{where} lacks column {missing[0]!r} (needs {', '.join(needed)} and the model's features; "
                        f"{found_columns(header, delimiter)})")
    frame = pd.read_csv(io.StringIO(text), sep=delimiter, dtype=str, keep_default_na=False, skip_blank_lines=True)
    frame.columns = header
    return frame


def applicant_features(path: Path, frame: pd.DataFrame, features: list[str], limit_basis: str) -> list[str]:
    """The columns to send for each applicant, once the model names its features: each must be in the file."""
    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise DataError(f"applicants file {path} lacks the model's feature column {missing[0]!r} "
                        f"(needs {', '.join(features)})")
    return features + ([limit_basis] if limit_basis in frame.columns and limit_basis not in features else [])


def read_applicants(path: Path, id_columns: tuple[str, ...], features: list[str], limit_basis: str) -> tuple[pd.DataFrame, list[str]]:
    """The applicants file as text (ids exactly as written), with its columns checked; and the feature columns to send."""
    frame = load_applicants(path, id_columns)
    return frame, applicant_features(path, frame, features, limit_basis)


def _request(row: dict, id_columns: tuple[str, ...], send: list[str]) -> tuple[str, dict[str, float | str | None]]:
    """The id and the features of one row: numbers as numbers, an empty cell as missing (None), other text as
    text (a binned model puts each in its bin; a model without bins refuses what is not a number, naming it)."""
    applicant = ID_SEPARATOR.join(normalise_id(row[c]) for c in id_columns)
    features: dict[str, float | str | None] = {}
    for name in send:
        text = str(row[name]).strip()
        try:
            features[name] = float(text)
        except ValueError:
            features[name] = None if text in MISSING else text
    return applicant, features


def score_rows(client: ScoringClient, job_id: str, frame: pd.DataFrame, id_columns: tuple[str, ...], send: list[str],
               concurrency: int = 8, progress: Callable[[int, int], None] = lambda done, total: None) -> pd.DataFrame:
    """Every row through the card center's Score method; a row that fails keeps its error, the others go on.

    ``progress(done, total)`` follows each answered row (from this thread; rows finish in any order).
    """

    def one(row: dict) -> dict:
        shown = row[id_columns[0]] if len(id_columns) == 1 else ID_SEPARATOR.join(row[c] for c in id_columns)
        try:
            applicant, features = _request(row, id_columns, send)
            reply = client.score(applicant, features, row[CONSENT_COLUMN], job_id)
        except FedscoreError as error:
            return {"id": shown, "error": str(error)}
        return {
            "id": shown, "probability": reply.probability, "score": reply.score, "decision": reply.decision,
            "credit_limit": reply.credit_limit, "reasons": "; ".join(reply.reasons),
            "partners_missing": ";".join(reply.partners_missing), "request_id": reply.request_id, "error": "",
        }

    rows = frame.to_dict("records")
    progress(0, len(rows))
    pool = ThreadPoolExecutor(max_workers=max(1, concurrency))
    try:
        futures = [pool.submit(one, row) for row in rows]
        for done, _ in enumerate(as_completed(futures), start=1):
            progress(done, len(rows))
        results = [future.result() for future in futures]
    finally:
        pool.shutdown(cancel_futures=True)   # on Ctrl-C, rows not yet sent are dropped, not waited for
    return output_table(results)


def output_table(results: list[dict]) -> pd.DataFrame:
    """The answers, each column of one type whether or not some row failed: a failed row's credit limit is
    missing (an empty cell), not a reason to write every other limit as a float; its text cells are empty."""
    table = pd.DataFrame(results, columns=OUTPUT_COLUMNS)
    table["credit_limit"] = table["credit_limit"].astype("Int64")
    table[["probability", "score"]] = table[["probability", "score"]].astype("float64")
    table[TEXT_COLUMNS] = table[TEXT_COLUMNS].fillna("").astype(str)
    return table


def score_file(
    job_path: Path,
    input_path: Path,
    output_path: Path,
    *,
    local: bool,
    state_dir: Path | None = None,
    job_id: str = "",
    settle: bool = False,
    workers: int = 1,
    concurrency: int = 8,
    progress: Callable[[int, int], None] = lambda done, total: None,
    tls_dir: Path | None = None,
    insecure: bool = False,
    observer: bool = False,
    while_running: Callable[[LocalConsortium, dict], dict] | None = None,
    audience: dict[str, dict] | None = None,
) -> dict:
    """Score an applicants file through the running services (or, --local, services started from the job's state).

    ``progress(done, total)`` follows each answered applicant. With --local (the demo's): ``observer`` also runs
    an observer; ``while_running(consortium, result)``, once scoring is closed and before the daemons stop, adds
    its keys to the result; ``audience``: party -> its [party.audience] settings (a partner answering audience
    queries meanwhile).
    """
    spec, base = load_job(job_path)
    settings = load_scoring(job_path)
    started = time.perf_counter()
    frame = load_applicants(input_path, spec.card_center.id_columns)   # before any daemon starts or model opens

    def run(job_spec, address: str, tls: TlsIdentity | None) -> dict:
        client = ScoringClient(address, job_spec.card_center.name, tls)
        try:
            opened = client.open_scoring(job_spec, settings.to_json(), job_id)
            send = applicant_features(input_path, frame, list(opened.features), opened.limit_basis)
            scored = score_rows(client, opened.job_id, frame, job_spec.card_center.id_columns, send, concurrency, progress)
            settlement = json.loads(client.settle(opened.job_id).settlement_json) if settle else None
            if local:
                client.close_scoring(opened.job_id)
        finally:
            client.close()
        write_atomically(output_path, scored.to_csv(index=False))
        failed = scored[scored["error"] != ""]
        return {
            "job_id": opened.job_id, "rows": len(scored), "scored": len(scored) - len(failed), "failed": len(failed),
            "first_error": "" if failed.empty else f"row {failed.index[0] + 2} ({failed['id'].iloc[0]}): {failed['error'].iloc[0]}",
            "ledger": opened.ledger_path, "settlement": settlement, "table": scored,
            "seconds": time.perf_counter() - started,
        }

    if local:
        with LocalConsortium(spec, base, state_dir or base / "state", workers, settings.consent_issuers,
                             verifiers=dict(settings.verifiers),
                             insecure=insecure, observer=observer, audience=audience) as consortium:
            result = run(consortium.spec, consortium.spec.card_center.address, consortium.identity(spec.card_center.name))
            return {**result, **while_running(consortium, result)} if while_running is not None else result
    if not spec.card_center.address:
        raise ConfigError(f"job file {job_path}: no address for the card center; add it, or use --local")
    return run(spec, spec.card_center.address, client_identity(tls_dir, insecure, spec.card_center.name))
