"""The card center's HTTP/JSON scoring endpoint, for approval systems that do not speak gRPC.

    POST /v1/score   {"applicant_id": "...", "features": {"LIMIT_BAL": 50000, ...},
                      "consent": "<token>", "job_id": "<optional>"}
      200 {"request_id", "job_id", "probability", "score", "decision", "credit_limit",
           "reasons": [...], "partners_missing": [...]}
      400 a malformed request, 403 a consent refused, 409 no such open model; {"error": "..."} says why
    GET  /v1/health  200 {"status": "ok", "models": [...]}

It calls the same scoring host as the gRPC Score method; nothing else.
Served over HTTPS with client certificates, like the gRPC port: a client
must present the card center's own certificate to score (403 otherwise),
any consortium certificate to read the health page.
"""
from __future__ import annotations

import json
import logging
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fedscore.daemons.party.scoring import ScoringHost
from fedscore.errors import ConfigError, DataError, DeniedError, FedscoreError, ProtocolError
from fedscore.transport.tls import TlsIdentity, certificate_subject_name

log = logging.getLogger("fedscore.http")
MAX_BODY = 64 * 1024
MAX_CONNECTIONS = 64      # more at once get 503: a flood of slow clients cannot take every thread
SOCKET_TIMEOUT = 10.0     # a client that stops sending mid-request is dropped after this


def status_of(error: FedscoreError) -> int:
    if isinstance(error, DeniedError):
        return 403
    if isinstance(error, (DataError, ConfigError)):
        return 400
    if isinstance(error, ProtocolError):
        return 409
    return 503


def answer_document(job_id: str, scored) -> dict:
    result = scored.answer
    return {
        "request_id": scored.request_id, "job_id": job_id, "probability": result.probability, "score": result.score,
        "decision": result.decision, "credit_limit": result.credit_limit, "reasons": list(result.reasons),
        "partners_missing": list(result.partners_missing),
    }


def score_document(host: ScoringHost, document: object) -> dict:
    """Check a JSON request's shape, then score it."""
    if not isinstance(document, dict):
        raise DataError("the request must be a JSON object")
    unknown = sorted(set(document) - {"applicant_id", "features", "consent", "job_id"})
    if unknown:
        raise DataError(f"unknown field {unknown[0]!r} (expected applicant_id, features, consent, job_id)")
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
    job_id, scored = host.score(job_id, str(applicant), features, consent)
    return answer_document(job_id, scored)


class _Handler(BaseHTTPRequestHandler):
    host: ScoringHost
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT

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

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/health":
            self._send(200, {"status": "ok", "models": self.host.open_models()})
        else:
            self._send(404, {"error": f"no such endpoint {self.path!r}; POST /v1/score or GET /v1/health"})

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/score":
            self._send(404, {"error": f"no such endpoint {self.path!r}; POST /v1/score"})
            return
        caller = self._caller()
        if caller is not None and caller != self.host.name:
            self._send(403, {"error": f"scoring is for {self.host.name!r} only; refused {caller!r}"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY:
            self._send(400, {"error": f"the body must be 1 to {MAX_BODY} bytes of JSON, with its Content-Length"})
            return
        try:
            document = json.loads(self.rfile.read(length))
        except (ValueError, RecursionError) as error:
            self._send(400, {"error": f"the body is not JSON: {type(error).__name__}"})
            return
        try:
            self._send(200, score_document(self.host, document))
        except FedscoreError as error:
            self._send(status_of(error), {"error": str(error)})
        except Exception as error:  # a bug must not kill the endpoint
            log.exception("scoring over HTTP failed")
            self._send(500, {"error": f"internal error ({type(error).__name__})"})

    def log_message(self, format: str, *args) -> None:  # requests are on the chain; keep the log quiet
        pass


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most MAX_CONNECTIONS at once."""

    daemon_threads = True

    def __init__(self, *args, tls: ssl.SSLContext | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._tls = tls

    def handle_error(self, request, client_address) -> None:
        log.info("HTTP connection from %s dropped: %s", client_address[0], sys.exc_info()[1])

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            try:
                if self._tls is None:   # a TLS client is just closed on: no handshake on the accepting thread
                    request.settimeout(1.0)
                    request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            finally:
                self.shutdown_request(request)
            return
        if self._tls is not None:   # the handshake happens on the connection's own thread, at its first read
            request = self._tls.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def start_http(host: ScoringHost, listen: str, tls: TlsIdentity | None) -> tuple[ThreadingHTTPServer, str]:
    """Serve in a background thread; returns the server and the host:port it got."""
    address, _, port = listen.rpartition(":")
    handler = type("Handler", (_Handler,), {"host": host})
    try:
        server = _BoundedServer(
            (address or "127.0.0.1", int(port or 0)), handler, tls=tls.ssl_context(server=True) if tls else None
        )
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot serve HTTP on {listen}: {error}") from None
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server, f"{server.server_address[0]}:{server.server_address[1]}"
