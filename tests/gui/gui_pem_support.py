"""Real certificates for the tray's tests: made with ``cryptography`` when it is installed, else with openssl."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path


def _with_cryptography(common_name: str) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _with_openssl(common_name: str) -> str:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("neither the cryptography package nor the openssl command is available")
    with tempfile.TemporaryDirectory() as directory:
        key, cert = Path(directory) / "ca.key", Path(directory) / "ca.crt"
        subprocess.run(
            [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", "30", "-subj", f"/CN={common_name}"],
            check=True, capture_output=True,
        )  # fmt: skip
        return cert.read_text()


@cache
def ca_pem(common_name: str = "tether-test-ca") -> str:
    """A self-signed CA certificate in PEM."""
    try:
        return _with_cryptography(common_name)
    except ImportError:
        return _with_openssl(common_name)
