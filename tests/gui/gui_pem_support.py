"""Real certificates for the tray's tests: made with ``cryptography`` when it is installed, else with openssl."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

from tests.doubles.certs import certificate_pem


def _with_cryptography(common_name: str) -> str:
    return certificate_pem(common_name, dt.timedelta(days=30))[0].decode()


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
