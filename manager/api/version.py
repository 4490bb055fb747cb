"""The build version, and the API level the manager and its clients speak."""

from importlib import metadata

try:
    __version__ = metadata.version("tether")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

# Raised when a change to the manager's API would break older clients.
API_LEVEL = 1
