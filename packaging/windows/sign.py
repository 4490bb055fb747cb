"""Authenticode signing of the installer and its uninstaller with osslsigncode, when a certificate is configured.

Off unless ``TETHER_SIGN_PKCS12`` names a PKCS#12 file (certificate, chain and key). Its password is read from
the file ``TETHER_SIGN_PASSWORD_FILE`` (never passed on a command line); ``TETHER_SIGN_TIMESTAMP_URL`` adds an
RFC 3161 timestamp so the signature outlives the certificate. makensis runs this script on each file it writes
(``!finalize`` and ``!uninstfinalize`` in tether.nsi), which signs the file in place:

    python3 packaging/windows/sign.py FILE
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PKCS12_ENV = "TETHER_SIGN_PKCS12"
PASSWORD_ENV = "TETHER_SIGN_PASSWORD_FILE"
TIMESTAMP_ENV = "TETHER_SIGN_TIMESTAMP_URL"
DESCRIPTION = "Tether"


@dataclass(frozen=True)
class SigningConfig:
    pkcs12: Path
    password_file: Path | None = None
    timestamp_url: str | None = None


def config_from(environ: Mapping[str, str]) -> SigningConfig | None:
    """The signing settings in ``environ``; None (signing off) without a certificate. Refuses missing files."""
    pkcs12 = environ.get(PKCS12_ENV, "")
    if not pkcs12:
        return None
    password = environ.get(PASSWORD_ENV, "")
    for variable, value in ((PKCS12_ENV, pkcs12), (PASSWORD_ENV, password)):
        if value and not Path(value).is_file():
            raise ValueError(f"{variable}={value}: no such file")
    return SigningConfig(Path(pkcs12), Path(password) if password else None, environ.get(TIMESTAMP_ENV) or None)


def sign_command(config: SigningConfig, unsigned: Path, signed: Path) -> list[str]:
    """osslsigncode's command line: SHA-256 and the product's name, optionally a password and a timestamp."""
    command = ["osslsigncode", "sign", "-pkcs12", str(config.pkcs12)]
    if config.password_file is not None:
        command += ["-readpass", str(config.password_file)]
    command += ["-h", "sha256", "-n", DESCRIPTION]
    if config.timestamp_url:
        command += ["-ts", config.timestamp_url]
    return [*command, "-in", str(unsigned), "-out", str(signed)]


def sign_in_place(config: SigningConfig, path: Path) -> None:
    signed = path.with_name(path.name + ".signed")
    signed.unlink(missing_ok=True)
    result = subprocess.run(sign_command(config, path, signed), capture_output=True, text=True)
    if result.returncode != 0:
        signed.unlink(missing_ok=True)
        raise RuntimeError(f"osslsigncode could not sign {path}: {result.stdout}{result.stderr}".strip())
    os.replace(signed, path)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: sign.py FILE", file=sys.stderr)
        return 2
    try:
        config = config_from(os.environ)
        if config is None:
            print(f"sign.py: {PKCS12_ENV} is not set: {argv[0]} stays unsigned", file=sys.stderr)
            return 0
        sign_in_place(config, Path(argv[0]))
    except (ValueError, RuntimeError) as exc:
        print(f"sign.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
