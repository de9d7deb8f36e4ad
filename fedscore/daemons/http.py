"""The card center's HTTP/JSON scoring endpoint, for approval systems that do not speak gRPC.

    POST /v1/score   {"applicant_id": "...", "features": {"LIMIT_BAL": 50000, ...},
                      "consent": "<token>", "job_id": "<optional>"}
      200 {"request_id", "job_id", "probability", "score", "decision", "credit_limit",
           "reasons": [...], "partners_missing": [...]}
      4xx/5xx {"error": "...", "error_class": "..."}: the status and class fedscore.errors gives the failure
      (e.g. 400 a malformed request, 403 a consent refused, 404 no such open model, 500 a bug)
    POST /v1/score/batch   {"applicants": [{"applicant_id", "features", "consent"}, ...], "job_id": "<optional>"}
      200 {"job_id", "results": [...]}: one result per applicant, in order: its answer as from /v1/score, or
      {"error", "error_class", "status"} for that applicant alone (a consent refused, a malformed item);
      4xx for the whole batch: too many applicants (max_batch_applicants, 300 unless set), none, not JSON
    POST /v1/verifications   {"applicant_id": "...", "method": "face-match", "time": <unix seconds>,
                              "verifier": "<name>", "signature": "<128 hex>", "evidence": {"<file>": "<sha-256 hex>"},
                              "job_id": "<optional>"}
      200 {"verification_id", "job_id", "record_digest", "time_ms"}: journalled, on the scoring chain with the
      next block (fedscore.protocol.scoring.verification); 403 an untrusted verifier or a signature that fails
    GET  /v1/health  200 {"status": "ok", "models": [...]}

It calls the same scoring host as the gRPC Score, ScoreBatch and RecordVerification methods; nothing else.
Served over HTTPS with client certificates, like the gRPC port: a client
must present the card center's own certificate to score (403 otherwise),
any consortium certificate to read the health page. A connection gets a
thread only while its request is served; the TLS handshake and the wait for a
request happen on the gate (fedscore.daemons.http_gate), with short deadlines
and a share per client address, so slow or silent clients cannot take the
threads the approval system needs.
"""
from __future__ import annotations

import json
import logging
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from fedscore.daemons.http_gate import ConnectionGate, Link
from fedscore.daemons.party.scoring import ScoringHost
from fedscore.errors import AccessError, ConfigError, DataError, FedscoreError, InternalError
from fedscore.protocol.scoring.card_center import Applicant
from fedscore.transport.tls import TlsIdentity, certificate_subject_name

log = logging.getLogger("fedscore.http")
MAX_BODY = 64 * 1024
MAX_BATCH_BODY = 4 * 1024 * 1024   # a batch of 1 000 applicants (the most max_batch_applicants allows) fits
SOCKET_TIMEOUT = 10.0     # a client that stops sending mid-request is dropped after this


def error_document(error: FedscoreError) -> tuple[int, dict]:
    """The HTTP status ``error``'s class owns, and a body naming that class beside the message."""
    return error.http_status, {"error": str(error), "error_class": type(error).__name__}


def answer_document(job_id: str, scored) -> dict:
    result = scored.answer
    return {
        "request_id": scored.request_id, "job_id": job_id, "probability": result.probability, "score": result.score,
        "decision": result.decision, "credit_limit": result.credit_limit, "reasons": list(result.reasons),
        "partners_missing": list(result.partners_missing),
    }


def score_document(host: ScoringHost, document: object) -> dict:
    """Check a JSON request's shape, then score it."""
    job_id, applicant = read_request(document)
    job_id, scored = host.score(job_id, applicant.applicant_id, applicant.features, applicant.consent)
    return answer_document(job_id, scored)


def read_request(document: object) -> tuple[str, Applicant]:
    """One applicant's JSON request, its shape checked: the model named (or "") and the applicant."""
    if not isinstance(document, dict):
        raise DataError("the request must be a JSON object")
    unknown = sorted(set(document) - {"applicant_id", "features", "consent", "job_id"})
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        raise DataError(f"unknown field{'s' if len(unknown) > 1 else ''} {names} (expected applicant_id, features, consent, job_id)")
    applicant, features, consent = document.get("applicant_id"), document.get("features"), document.get("consent")
    if not isinstance(applicant, (str, int)) or isinstance(applicant, bool):
        raise DataError("applicant_id must be a string")
    if not isinstance(features, dict):
        raise DataError("features must be an object of feature name to number")
    if not isinstance(consent, str):
        raise DataError("consent must be the applicant's consent token (a string)")
    job_id = document.get("job_id", "")
    if not isinstance(job_id, str):
        raise DataError("job_id must be a string")
    return job_id, Applicant(str(applicant), features, consent)


def batch_document(host: ScoringHost, document: object) -> dict:
    """Check a JSON batch's shape, then score each applicant; a malformed applicant is refused alone."""
    if not isinstance(document, dict) or not isinstance(document.get("applicants"), list):
        raise DataError('the batch must be a JSON object with "applicants", a list of requests as for /v1/score')
    unknown = sorted(set(document) - {"applicants", "job_id"})
    if unknown:
        raise DataError(f"unknown field {unknown[0]!r} in the batch (expected applicants, job_id)")
    job_id = document.get("job_id", "")
    if not isinstance(job_id, str):
        raise DataError("job_id must be a string")
    batch: list[Applicant | FedscoreError] = []
    for position, item in enumerate(document["applicants"], 1):
        try:
            named, applicant = read_request(item)
            if named and named != job_id:
                raise DataError(f"it names model {named!r}; a batch is scored with the batch's job_id alone")
            batch.append(applicant)
        except DataError as error:
            batch.append(DataError(f"applicant {position} of the batch: {error}"))
    job_id, results = host.score_batch(job_id, batch)
    return {"job_id": job_id, "results": [
        {**error_document(result)[1], "status": result.http_status} if isinstance(result, FedscoreError)
        else answer_document(job_id, result)
        for result in results
    ]}


VERIFICATION_FIELDS = ("applicant_id", "method", "time", "verifier", "signature", "evidence", "job_id")


def verification_document(host: ScoringHost, document: object) -> dict:
    """Check a JSON verification's shape, then record it."""
    if not isinstance(document, dict):
        raise DataError("the verification must be a JSON object")
    unknown = sorted(set(document) - set(VERIFICATION_FIELDS))
    missing = [name for name in VERIFICATION_FIELDS[:-1] if name not in document]
    if unknown or missing:
        wrong = ", ".join(repr(name) for name in unknown or missing)
        raise DataError(f"{'unknown' if unknown else 'missing'} field{'s' if len(unknown or missing) > 1 else ''} "
                        f"{wrong} (expected {', '.join(VERIFICATION_FIELDS)}; job_id optional)")
    applicant, at, signature, evidence = (document[k] for k in ("applicant_id", "time", "signature", "evidence"))
    job_id = document.get("job_id", "")
    if not isinstance(applicant, str) or not all(isinstance(document[k], str) for k in ("method", "verifier")):
        raise DataError("applicant_id, method and verifier must be strings")
    if isinstance(at, bool) or not isinstance(at, int):
        raise DataError("time must be an integer of unix seconds")
    try:
        signature = bytes.fromhex(signature) if isinstance(signature, str) else None
    except ValueError:
        signature = None
    if signature is None:
        raise DataError("signature must be the verifier's Ed25519 signature in hex")
    if not isinstance(evidence, dict) or not isinstance(job_id, str):
        raise DataError("evidence must be an object of file name to SHA-256 hex, job_id a string")
    job_id, entry = host.record_verification(job_id, applicant, document["method"], at, document["verifier"],
                                             signature, evidence)
    return {"verification_id": entry["verification_id"], "job_id": job_id, "record_digest": entry["record_digest"],
            "time_ms": entry["time_ms"]}


ENDPOINTS = {"/v1/score": score_document, "/v1/score/batch": batch_document, "/v1/verifications": verification_document}
BODY_LIMITS = {"/v1/score/batch": MAX_BATCH_BODY}   # every other endpoint: MAX_BODY


class _Handler(BaseHTTPRequestHandler):
    """Serves one request on a link; the gate waits for the next one without holding a thread."""

    host: ScoringHost
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        link: Link = self.request
        self.connection = link.sock
        self.connection.settimeout(SOCKET_TIMEOUT)
        self.rfile, self.wfile = link.rfile, link.wfile

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()

    def finish(self) -> None:
        self.wfile.flush()

    def _send(self, status: int, document: dict) -> None:
        try:
            body = json.dumps(document, allow_nan=False).encode("utf-8")
        except ValueError:
            status, body = 500, b'{"error": "the answer is not a finite number"}'
        if status >= 400:
            self.close_connection = True   # whatever the client sent after a bad request is not read as a request
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _caller(self) -> str | None:
        """The verified client certificate's member name ("" if it names none); None on a plaintext endpoint."""
        if not isinstance(self.connection, ssl.SSLSocket):
            return None
        return certificate_subject_name(self.connection.getpeercert()) or ""

    def _check_caller(self) -> None:
        caller = self._caller()
        if caller is not None and caller != self.host.name:
            what = "recording a verification" if self.path.rstrip("/") == "/v1/verifications" else "scoring"
            raise AccessError(f"{what} is for {self.host.name!r} only; refused {caller!r}")

    def _read_json(self) -> object:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        limit = BODY_LIMITS.get(self.path.rstrip("/"), MAX_BODY)
        if not 0 < length <= limit:
            raise DataError(f"the body must be 1 to {limit} bytes of JSON, with its Content-Length")
        try:
            body = self.rfile.read(length)
            self.request.request_read()
            return json.loads(body)
        except (ValueError, RecursionError) as error:
            raise DataError(f"the body is not JSON: {type(error).__name__}") from None

    def do_GET(self) -> None:
        self.request.request_read()
        if self.path.rstrip("/") == "/v1/health":
            self._send(200, {"status": "ok", "models": self.host.open_models()})
        else:
            self._send(404, {"error": f"no such endpoint {self.path!r}; POST /v1/score or GET /v1/health"})

    def do_POST(self) -> None:
        answer = ENDPOINTS.get(self.path.rstrip("/"))
        if answer is None:
            self._send(404, {"error": f"no such endpoint {self.path!r}; POST /v1/score, /v1/score/batch or /v1/verifications"})
            return
        try:
            self._check_caller()
            self._send(200, answer(self.host, self._read_json()))
        except FedscoreError as error:
            self._send(*error_document(error))
        except Exception as error:  # a bug must not kill the endpoint
            log.exception("scoring over HTTP failed")
            self._send(*error_document(InternalError(f"{self.host.name}: internal error ({type(error).__name__})")))

    def log_message(self, format: str, *args) -> None:  # requests are on the chain; keep the log quiet
        pass


class _GatedServer(HTTPServer):
    """Accepts connections and hands them to the gate (fedscore.daemons.http_gate), which does the TLS
    handshake and waits for each request without a thread; a worker thread then serves that one request."""

    request_queue_size = 128   # the kernel's queue of connections not yet accepted; 5 would drop them in a flood

    def __init__(self, *args, tls: ssl.SSLContext | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate = ConnectionGate(tls, self._serve)

    def process_request(self, request, client_address) -> None:
        self.gate.admit(request, client_address)

    def handle_error(self, request, client_address) -> None:
        log.info("HTTP connection from %s dropped: %s", client_address[0], sys.exc_info()[1])

    def _serve(self, link: Link) -> bool:
        return not self.RequestHandlerClass(link, link.address, self).close_connection

    def shutdown(self) -> None:
        super().shutdown()
        self.gate.stop()


def start_http(host: ScoringHost, listen: str, tls: TlsIdentity | None) -> tuple[HTTPServer, str]:
    """Serve in a background thread; returns the server and the host:port it got."""
    address, _, port = listen.rpartition(":")
    handler = type("Handler", (_Handler,), {"host": host})
    try:
        server = _GatedServer(
            (address or "127.0.0.1", int(port or 0)), handler, tls=tls.ssl_context(server=True) if tls else None
        )
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot serve HTTP on {listen}: {error}") from None
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server, f"{server.server_address[0]}:{server.server_address[1]}"
