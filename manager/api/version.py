"""The build version, the API level the manager and its clients speak, and the manager image's tag."""

import re
from importlib import metadata

try:
    __version__ = metadata.version("tether")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

# Raised when a change to the manager's API would break older clients.
API_LEVEL = 1

#: The traffic-manager's image (it ships tether-agent too): `make image` builds it, the injector names it.
MANAGER_IMAGE = "tether-manager"

# What an OCI/Docker tag may hold (the distribution spec's grammar); PEP 440's local-version '+' is not in it.
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def image_tag(version: str) -> str:
    """The image tag for a Tether version: '+' (a local version, such as "0.0.0+source") becomes '_', as
    Helm and most registries spell semver build metadata; anything else a tag cannot hold is an error."""
    tag = version.replace("+", "_")
    if not _TAG.fullmatch(tag):
        raise ValueError(f"version {version!r} cannot be an image tag (letters, digits, '_', '.', '-'; at most 128)")
    return tag
