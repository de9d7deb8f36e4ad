"""A consortium's certificate authority and one TLS identity per member.

`fedscore certs init` makes them: the CA signs one certificate per member
naming the member (common name and DNS name), which every daemon checks on
each connection, both ways. Private keys are written owner-only and never
leave the folder they were made in; the CA's key stays with whoever admits
members (it is needed again only to add one).

Layout of a consortium folder::

    ca/ca.pem  ca/ca.key          the consortium CA
    <member>/ca.pem               a copy of the CA certificate, to check peers
    <member>/cert.pem             the member's certificate, signed by the CA
    <member>/key.pem              the member's private key (0600)

A member's folder is all its daemon needs (`tls_dir` in its config).
"""
from __future__ import annotations

import datetime
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedscore.errors import ConfigError
from fedscore.files import write_secret

CA_DIR = "ca"
CA_CERT, CA_KEY = "ca.pem", "ca.key"
MEMBER_CERT, MEMBER_KEY = "cert.pem", "key.pem"
COORDINATOR = "coordinator"
DEFAULT_DAYS = 825
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,62}")


def check_member_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"member name {name!r}: use a letter, then letters, digits, '_' or '-' (at most 63 characters)"
        )
    return name


def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` readable by its owner only; an existing file is never overwritten."""
    try:
        write_secret(path, data)
    except FileExistsError:
        raise ConfigError(f"{path} already exists; not overwriting a private key") from None


def _private_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _certificate(subject: str, public_key, issuer: x509.Name, signing_key, days: int, is_ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedscore consortium"),
                      x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer if issuer is not None else name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))   # tolerate small clock differences
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = (
            builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
            # every member both serves and dials
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(
                x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                              encipher_only=False, decipher_only=False), critical=True)
        )
    return builder.sign(signing_key, hashes.SHA256())


def _load_ca(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate((folder / CA_CERT).read_bytes())
    key = serialization.load_pem_private_key((folder / CA_KEY).read_bytes(), password=None)
    return cert, key


def init_consortium(consortium: Path, members: list[str], days: int = DEFAULT_DAYS) -> dict[str, Path]:
    """Make the CA if the folder has none, and a certificate for every member that lacks one.

    The coordinator is always a member. Returns each member's folder; folders
    that already exist are left as they are, so the command can admit new
    members later without touching anyone's key.
    """
    names = [check_member_name(m) for m in dict.fromkeys([COORDINATOR, *members])]
    if CA_DIR in names:
        raise ConfigError(f"member name {CA_DIR!r} is the CA's folder; choose another")
    ca_dir = consortium / CA_DIR
    if (ca_dir / CA_KEY).exists():
        ca_cert, ca_key = _load_ca(ca_dir)
    elif (ca_dir / CA_CERT).exists():
        raise ConfigError(
            f"{ca_dir / CA_KEY} is missing: admitting members needs the consortium CA's key (bring it back); "
            "a new CA would give certificates no member trusts"
        )
    else:
        ca_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _certificate("fedscore consortium CA", ca_key.public_key(), None, ca_key, days, is_ca=True)
        write_private(ca_dir / CA_KEY, _private_bytes(ca_key))
        (ca_dir / CA_CERT).write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    folders = {}
    for name in names:
        folder = consortium / name
        folders[name] = folder
        if (folder / MEMBER_KEY).exists():
            continue
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(name, key.public_key(), ca_cert.subject, ca_key, days, is_ca=False)
        write_private(folder / MEMBER_KEY, _private_bytes(key))
        (folder / MEMBER_CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (folder / CA_CERT).write_bytes(ca_pem)
    return folders


def certificate_name(pem: bytes) -> str:
    """The member a certificate names (its common name)."""
    cert = x509.load_pem_x509_certificate(pem)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise ConfigError("certificate has no common name")
    return str(names[0].value)
