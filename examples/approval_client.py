"""Score an applicant at the card center's scoring service, as an approval system does.

Two clients, both presenting the card center's own client certificate (its
daemon answers scoring requests from no other identity):

- score_https: POST /v1/score on the daemon's HTTPS endpoint (its config's
  http_listen), with the standard library only;
- score_grpc: Scoring.Score on the daemon's gRPC port, with the stubs generated
  from protos/fedscore.proto (shipped as fedscore.proto).

Against a running card center whose model is open for scoring:

    python examples/approval_client.py --grpc 10.0.0.5:50061 --https 10.0.0.5:8443 \\
        --tls consortium-certs/card_center --applicant 24017 \\
        --features '{"LIMIT_BAL": 50000, "SEX": 2, "EDUCATION": 2, "MARRIAGE": 1, "AGE": 31}' --consent TOKEN

With no arguments it first makes a small consortium of its own in a temporary
folder (the demo's data, 3 000 applicants, 512-bit keys, 2 epochs), opens the
trained model for scoring as `fedscore score` does, and scores one new
applicant both ways, then once with a consent that is not the applicant's
(about 30 s).
"""
from __future__ import annotations

import argparse
import http.client
import json
import socket
import ssl
import sys
import tempfile
from pathlib import Path

import grpc

from fedscore.proto import fedscore_pb2 as pb
from fedscore.proto import fedscore_pb2_grpc as pb_grpc

CARD_CENTER = "card_center"   # the member name the card center's certificate carries


def https_context(tls_dir: Path) -> ssl.SSLContext:
    """Trust only the consortium CA, and present the card center's certificate."""
    context = ssl.create_default_context(cafile=str(tls_dir / "ca.pem"))
    context.load_cert_chain(tls_dir / "cert.pem", tls_dir / "key.pem")
    return context


def score_https(address: str, context: ssl.SSLContext, applicant_id: str, features: dict[str, float],
                consent: str, timeout: float = 2.0, member: str = CARD_CENTER) -> tuple[int, dict]:
    """(HTTP status, JSON body). The server's certificate must name ``member``, whatever the host is called."""
    host, port = address.rsplit(":", 1)
    body = json.dumps({"applicant_id": applicant_id, "features": features, "consent": consent})
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    connection.sock = context.wrap_socket(socket.create_connection((host, int(port)), timeout), server_hostname=member)
    try:
        connection.request("POST", "/v1/score", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def grpc_channel(address: str, tls_dir: Path, member: str = CARD_CENTER) -> grpc.Channel:
    """One channel for the whole process: mutual TLS, the server's certificate must name ``member``."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(tls_dir / "ca.pem").read_bytes(),
        private_key=(tls_dir / "key.pem").read_bytes(),
        certificate_chain=(tls_dir / "cert.pem").read_bytes(),
    )
    return grpc.secure_channel(address, credentials, options=[("grpc.ssl_target_name_override", member)])


def score_grpc(channel: grpc.Channel, applicant_id: str, features: dict[str, float], consent: str,
               timeout: float = 2.0) -> dict:
    """The answer as a dict; a refusal raises grpc.RpcError (its code() and details() say why)."""
    request = pb.ScoreRequest(applicant_id=applicant_id, features=features, consent=consent)
    reply = pb_grpc.ScoringStub(channel).Score(request, timeout=timeout)
    return {
        "request_id": reply.request_id, "job_id": reply.job_id, "probability": reply.probability,
        "score": reply.score, "decision": reply.decision, "credit_limit": reply.credit_limit,
        "reasons": list(reply.reasons), "partners_missing": list(reply.partners_missing),
    }


def score_both_ways(grpc_address: str, https_address: str, tls_dir: Path, applicant_id: str,
                    features: dict[str, float], consent: str) -> None:
    """One request over each transport; prints one JSON line per answer."""
    if https_address:
        status, answer = score_https(https_address, https_context(tls_dir), applicant_id, features, consent)
        print(json.dumps({"via": "https", "status": status, **answer}))
    if grpc_address:
        with grpc_channel(grpc_address, tls_dir) as channel:
            try:
                print(json.dumps({"via": "grpc", "status": "OK", **score_grpc(channel, applicant_id, features, consent)}))
            except grpc.RpcError as error:
                print(json.dumps({"via": "grpc", "status": error.code().name, "error": error.details()}))


def demo() -> None:
    """A consortium of our own, trained and serving, to run the clients against."""
    import pandas as pd

    from fedscore.job_file import load_job, load_scoring
    from fedscore.daemons.launcher import LocalConsortium
    from fedscore.cli.demo import write_demo
    from fedscore.cli.runner import run_job_file
    from fedscore.transport.clients.scoring import ScoringClient

    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        job = write_demo(folder, epochs=2, key_bits=512, rows=3000)
        print("training the demo consortium (512-bit keys, 2 epochs) ...", file=sys.stderr, flush=True)
        run_job_file(job, local=True, workers=1)
        spec, base = load_job(job)
        settings = load_scoring(job)
        with LocalConsortium(spec, base, folder / "state", 1, settings.consent_issuers) as consortium:
            # What `fedscore score` does before its first request: open the trained model at the card center.
            opener = ScoringClient(consortium.spec.card_center.address, CARD_CENTER, consortium.card_center_identity)
            opened = opener.open_scoring(consortium.spec, settings.to_json())
            opener.close()
            applicants = pd.read_csv(folder / "applicants.csv", dtype=str)   # written by the demo, consents included
            first, other = applicants.iloc[0], applicants.iloc[1]
            features = {name: float(first[name]) for name in opened.features}
            tls_dir = consortium.certs_dir / CARD_CENTER
            grpc_address, https_address = consortium.spec.card_center.address, consortium.http_addresses[CARD_CENTER]
            score_both_ways(grpc_address, https_address, tls_dir, first["id"], features, first["consent"])
            # someone else's consent: refused before any partner is asked
            score_both_ways(grpc_address, https_address, tls_dir, first["id"], features, other["consent"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grpc", default="", help="the card center's gRPC address, host:port")
    parser.add_argument("--https", default="", help="the card center's HTTPS scoring endpoint, host:port")
    parser.add_argument("--tls", type=Path, help="the card center's member folder (ca.pem, cert.pem, key.pem)")
    parser.add_argument("--applicant", help="the applicant's id")
    parser.add_argument("--features", help="the card center's feature values, as a JSON object")
    parser.add_argument("--consent", help="the applicant's consent token")
    args = parser.parse_args()
    if not (args.grpc or args.https):
        demo()
        return
    if not (args.tls and args.applicant and args.features and args.consent):
        parser.error("--tls, --applicant, --features and --consent are needed with --grpc or --https")
    score_both_ways(args.grpc, args.https, args.tls, args.applicant, json.loads(args.features), args.consent)


if __name__ == "__main__":
    main()
