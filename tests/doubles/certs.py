"""Self-signed certificates for tests: TLS servers on loopback (an API server, a proxy) and the tray's CA fields."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import pytest


def certificate_pem(common_name: str, lifetime: datetime.timedelta, ip: str | None = None) -> tuple[bytes, bytes]:
    """(certificate, key) in PEM of a self-signed CA certificate for ``common_name`` (and ``ip`` as its
    subject alternative name)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + lifetime)
    )
    if ip is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), False)
    cert = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True).sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """(certificate file, key file) of a self-signed CA certificate for 127.0.0.1, in ``tmp_path``."""
    pytest.importorskip("cryptography.x509")
    cert, key = certificate_pem("test-apiserver", datetime.timedelta(hours=1), "127.0.0.1")
    cert_file, key_file = tmp_path / "server.crt", tmp_path / "server.key"
    cert_file.write_bytes(cert)
    key_file.write_bytes(key)
    return cert_file, key_file
