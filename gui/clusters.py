"""Clusters added by hand in the tray ("Add cluster…"): a server URL, a CA and a token that live in no kubeconfig.

Where each part goes: the name, server, CA and namespace to the tray's settings file (``tether.gui.settings``);
the token to the OS keychain through ``keyring`` (service "tether", username the cluster's name), never to
a file. To connect, ``kubeconfig_text`` builds a one-context kubeconfig in memory that the tray hands to the
helper as data (``build_connect_request(kubeconfig_text=...)``); it is never written to disk. Adding,
removing and listing them across both places is ``tether.gui.cluster_store``'s.

No Qt here. Tokens never appear in messages, logs or exceptions raised by this module.
"""

from __future__ import annotations

import base64
import re
import ssl
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import yaml

from tether.helper.api.validate import ValidationError

KEYRING_SERVICE = "tether"
MAX_TOKEN_BYTES = 16 * 1024
MAX_CA_BYTES = 256 * 1024

_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_PEM_CERT = "-----BEGIN CERTIFICATE-----"


class ClusterError(ValidationError):
    """A cluster that cannot be added or used; the message names the field and the value (never a token)."""


class VaultError(Exception):
    """The OS keychain could not be used; the message says so and why (never the token)."""


# --- the cluster ----------------------------------------------------------------------------------------


def _redacted_url(value: str) -> str:
    """The URL as it may be shown: a password in it (https://user:secret@host) is replaced by ***."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return value
    if parts.password is None:
        return value
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def check_name(value: str) -> str:
    if len(value) > 63 or not _NAME.fullmatch(value):
        shown = f'"{value}"' if value.isprintable() else repr(value)
        raise ClusterError(
            f"name: {shown} is not a valid cluster name (at most 63 lower-case letters, digits or '-', "
            "starting and ending with a letter or digit, e.g. staging-eu)"
        )
    return value


def check_server(value: str) -> str:
    shown = f'"{_redacted_url(value)}"' if value.isprintable() else repr(_redacted_url(value))
    example = "(expected e.g. https://k8s.example.com:6443)"
    if not value or value != value.strip():
        raise ClusterError(f"server: {shown} is not an https URL {example}")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ClusterError(f"server: {shown} is not a valid URL {example}") from None
    if parts.scheme != "https":
        raise ClusterError(f"server: {shown} must start with https:// (a token must never travel in clear text)")
    if not parts.hostname:
        raise ClusterError(f"server: {shown} has no host name {example}")
    if parts.username is not None or parts.password is not None:
        raise ClusterError(f"server: {shown} must not carry a user name or password; the token is given apart")
    if parts.query or parts.fragment:
        raise ClusterError(f"server: {shown} must not have a query or fragment {example}")
    if port == 0:
        raise ClusterError(f"server: {shown}: port 0 is not a port")
    return value


def check_ca(pem: str) -> int:
    """The number of certificates in ``pem``; ClusterError when it is not PEM certificate(s)."""
    if "PRIVATE KEY-----" in pem:
        raise ClusterError("CA: this is a private key, not a certificate; paste the cluster's CA certificate")
    if len(pem.encode()) > MAX_CA_BYTES:
        raise ClusterError(f"CA: {len(pem.encode())} bytes is too large for a CA bundle")
    if _PEM_CERT not in pem:
        raise ClusterError(f"CA: not a PEM certificate (expected a block starting with {_PEM_CERT})")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cadata=pem)
    except (ssl.SSLError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or str(exc)
        raise ClusterError(f"CA: the PEM does not parse as certificate(s): {reason}") from None
    # OpenSSL refuses the whole bundle if any block is broken, so a success means every block is a certificate.
    count = context.cert_store_stats().get("x509", 0)
    if count < 1:
        raise ClusterError("CA: the PEM holds no certificate")
    return count


def check_token(token: str) -> str:
    # Never show the token: say what is wrong with it, not what it is.
    if not token:
        raise ClusterError("token: empty; paste the service-account or user token")
    if len(token.encode()) > MAX_TOKEN_BYTES:
        raise ClusterError(f"token: longer than {MAX_TOKEN_BYTES} bytes")
    if any(c.isspace() or not c.isprintable() for c in token):
        raise ClusterError("token: contains spaces, line breaks or control characters (paste the token alone)")
    return token


def check_namespace(value: str) -> str:
    from tether.helper.api import validate

    try:
        return validate.namespace(value, "namespace")
    except ValidationError as exc:
        raise ClusterError(str(exc)) from None


@dataclass(frozen=True)
class AddedCluster:
    name: str
    server: str
    ca_pem: str
    namespace: str = ""

    def validate(self) -> None:
        """ClusterError naming the first bad field and value."""
        check_name(self.name)
        check_server(self.server)
        check_ca(self.ca_pem)
        check_namespace(self.namespace)

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "server": self.server, "ca_pem": self.ca_pem, "namespace": self.namespace}

    @classmethod
    def from_json(cls, data: Any) -> AddedCluster:
        if not isinstance(data, dict):
            raise ClusterError(f"expected an object with name, server and ca_pem, found {type(data).__name__}")
        values: dict[str, str] = {}
        for key in ("name", "server", "ca_pem", "namespace"):
            value = data.get(key, "" if key == "namespace" else None)
            if not isinstance(value, str):
                raise ClusterError(f"{key}: missing or not a string")
            values[key] = value
        return cls(**values)


def kubeconfig_text(cluster: AddedCluster, token: str) -> str:
    """A kubeconfig with one cluster, user and context, all named after the cluster, with the token inline.

    Only ever passed in memory (to the helper, or to the Kubernetes client): never write it to a file.
    """
    context: dict[str, str] = {"cluster": cluster.name, "user": cluster.name}
    if cluster.namespace:
        context["namespace"] = cluster.namespace
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": cluster.name,
        "clusters": [
            {
                "name": cluster.name,
                "cluster": {
                    "server": cluster.server,
                    "certificate-authority-data": base64.b64encode(cluster.ca_pem.encode()).decode(),
                },
            }
        ],
        "users": [{"name": cluster.name, "user": {"token": token}}],
        "contexts": [{"name": cluster.name, "context": context}],
        "preferences": {},
    }
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


# --- the keychain ---------------------------------------------------------------------------------------


class TokenVault(Protocol):
    """Where tokens live, keyed by cluster name. Every failure is a VaultError."""

    def get(self, name: str) -> str | None: ...

    def set(self, name: str, token: str) -> None: ...

    def delete(self, name: str) -> None: ...


def _vault_error(action: str, exc: BaseException, token: str = "") -> VaultError:
    reason = str(exc) or type(exc).__name__
    if token:
        reason = reason.replace(token, "***")  # a backend should never echo it; make sure
    return VaultError(f"the OS keychain is unavailable ({action}): {reason}")


class KeyringVault:
    """Tokens in the OS keychain (Secret Service, macOS Keychain, Windows Credential Locker) via keyring."""

    def __init__(self, service: str = KEYRING_SERVICE) -> None:
        self.service = service

    def get(self, name: str) -> str | None:
        import keyring
        import keyring.errors

        try:
            return keyring.get_password(self.service, name)
        except (keyring.errors.KeyringError, RuntimeError, OSError) as exc:
            raise _vault_error(f'reading the token of "{name}"', exc) from None

    def set(self, name: str, token: str) -> None:
        import keyring
        import keyring.errors

        try:
            keyring.set_password(self.service, name, token)
        except (keyring.errors.KeyringError, RuntimeError, OSError) as exc:
            raise _vault_error(f'storing the token of "{name}"', exc, token) from None

    def delete(self, name: str) -> None:
        import keyring
        import keyring.errors

        try:
            keyring.delete_password(self.service, name)
        except keyring.errors.PasswordDeleteError:
            return  # nothing stored under that name: already as wanted
        except (keyring.errors.KeyringError, RuntimeError, OSError) as exc:
            raise _vault_error(f'deleting the token of "{name}"', exc) from None
