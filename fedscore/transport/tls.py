"""Mutual TLS between members: a daemon's identity, its credentials, and who is calling.

Every member holds a key and a certificate from the consortium CA
(fedscore.crypto.certs). A daemon serves only clients presenting such a
certificate, and dials a peer expecting the peer's certificate to name the
member it meant to reach; the server then reads the caller's member name
from the verified certificate to decide what it may do
(fedscore.daemons.access).
"""
from __future__ import annotations

import datetime
import ssl
import stat
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography import x509

from fedscore.crypto.certs import CA_CERT, MEMBER_CERT, MEMBER_KEY, certificate_name
from fedscore.errors import ConfigError

INSECURE_WARNING = (
    "running WITHOUT TLS (--insecure): peers are not authenticated and traffic is readable; for debugging only"
)


@dataclass(frozen=True)
class TlsIdentity:
    """A member's certificate, key and the consortium CA, read from its folder."""

    name: str
    folder: Path
    ca: bytes = field(repr=False)
    cert: bytes = field(repr=False)
    key: bytes = field(repr=False)   # never printed or logged


    @classmethod
    def load(cls, folder: Path) -> "TlsIdentity":
        paths = {what: folder / what for what in (CA_CERT, MEMBER_CERT, MEMBER_KEY)}
        for what, path in paths.items():
            if not path.is_file():
                raise ConfigError(f"TLS folder {folder}: {what} is missing (make it with `fedscore certs init`)")
        mode = paths[MEMBER_KEY].stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"TLS folder {folder}: {MEMBER_KEY} is readable by others (chmod 600 it)")
        ca, cert = paths[CA_CERT].read_bytes(), paths[MEMBER_CERT].read_bytes()
        _check_issued(folder, ca, cert)
        return cls(certificate_name(cert), folder, ca, cert, paths[MEMBER_KEY].read_bytes())

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.key, self.cert)], root_certificates=self.ca, require_client_auth=True)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert)

    def ssl_context(self, server: bool) -> ssl.SSLContext:
        """The same identity for HTTPS (the scoring endpoint and its clients): peers must show a CA certificate."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.folder / MEMBER_CERT, self.folder / MEMBER_KEY)
        context.load_verify_locations(cadata=self.ca.decode("ascii"))
        context.verify_mode = ssl.CERT_REQUIRED
        return context


def certificate_subject_name(peer_certificate: dict | None) -> str | None:
    """The common name in a certificate as Python's ssl module reports a verified peer's."""
    for entry in (peer_certificate or {}).get("subject", ()):
        for key, value in entry:
            if key == "commonName":
                return value
    return None


def _check_issued(folder: Path, ca_pem: bytes, cert_pem: bytes) -> None:
    """Refuse at start a certificate the peers would refuse at every call."""
    try:
        ca, cert = x509.load_pem_x509_certificate(ca_pem), x509.load_pem_x509_certificate(cert_pem)
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"TLS folder {folder}: {MEMBER_CERT} is not signed by {CA_CERT} ({error})") from None
    except Exception as error:   # cryptography's InvalidSignature carries no message
        raise ConfigError(f"TLS folder {folder}: {MEMBER_CERT} is not signed by {CA_CERT} ({type(error).__name__})") from None
    now = datetime.datetime.now(datetime.timezone.utc)
    if cert.not_valid_after_utc < now:
        raise ConfigError(f"TLS folder {folder}: {MEMBER_CERT} expired on {cert.not_valid_after_utc:%Y-%m-%d}")


def caller_name(context: grpc.ServicerContext) -> str | None:
    """The member name in the caller's verified certificate; None on a plaintext (--insecure) server."""
    names = context.auth_context().get("x509_common_name")
    return names[0].decode("utf-8", "replace") if names else None
