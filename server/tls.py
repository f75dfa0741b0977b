"""HTTPS for LAN mode: browsers give a page the microphone only over https (or on localhost).

On the first LAN start Melange makes a self-signed certificate for this machine's names and addresses
(``cryptography``) and keeps it in the data folder; later starts reuse it, so colleagues accept its warning
once. A new one is made only when the machine gained a name or address the old one does not cover.
Colleagues check it by its SHA-256 fingerprint, shown beside the QR code.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

VALID_DAYS = 825  # the longest validity browsers accept for a leaf certificate


@dataclass(frozen=True)
class Certificate:
    certfile: Path
    keyfile: Path
    fingerprint: str  # SHA-256, colon-separated hex, as browsers show it
    made_now: bool = False


def fingerprint(certfile: Path) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    cert = x509.load_pem_x509_certificate(certfile.read_bytes())
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def _covers(certfile: Path, names: list[str]) -> bool:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(certfile.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound, OSError):
        return False
    now = datetime.datetime.now(datetime.timezone.utc)
    if cert.not_valid_after_utc <= now + datetime.timedelta(days=7):
        return False
    have = {n.lower() for n in sans.get_values_for_type(x509.DNSName)}
    have |= {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    return all(n.lower() in have for n in names)


def _write_private(path: Path, data: bytes) -> None:
    """Atomically, readable by this user only: a private key never sits half-written or world-readable."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    partial.replace(path)


def self_signed(folder: Path, names: list[str]) -> Certificate:
    """The kept certificate for ``names`` (host names and IP addresses), made when missing or outgrown."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    certfile, keyfile = folder / "melange-cert.pem", folder / "melange-key.pem"
    names = list(dict.fromkeys(n for n in names if n))
    if certfile.exists() and keyfile.exists() and _covers(certfile, names):
        return Certificate(certfile, keyfile, fingerprint(certfile))

    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Melange on {names[0] if names else 'localhost'}")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(
        keyfile,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    _write_private(certfile, cert.public_bytes(serialization.Encoding.PEM))
    return Certificate(certfile, keyfile, fingerprint(certfile), made_now=True)
