"""The tray's settings and the file they live in (no Qt here).

One JSON file in the user's config directory (``platformdirs.user_config_path("tether") / "tray.json"``)
holds the connect options the tray sends with every connect (DNS suffixes, also-proxy and never-proxy
ranges, the virtual subnet), whether to start at login, and the clusters added by hand (server, CA,
namespace; their tokens live in the OS keychain, never here; see ``tether.gui.clusters``).

Loading: a missing file gives the defaults. A file that is not JSON, or holds a value of the wrong type
or an invalid value, makes ``load()`` raise ``SettingsError`` naming the file and the key: silently
falling back would let the next save overwrite what the user wrote. ``load_or_defaults()`` is for the
app's start: it returns the defaults together with that error so the tray can show it and still run
(and, as long as the user does not save, leaves the file as it is).

Saving writes a temporary file beside the real one (mode 0600) and renames it over, so a crash never
leaves half a file. Keys this version does not know are ignored on load and dropped on save.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from tether.gui.clusters import AddedCluster, ClusterError
from tether.helper.api import validate as checks
from tether.helper.api.validate import ValidationError
from tether.runtime.atomicfile import write_atomic

FILE_NAME = "tray.json"
FORMAT_VERSION = 1
MAX_FILE_BYTES = 4 * 1024 * 1024


class SettingsError(Exception):
    """The settings file cannot be used; the message names the file and the key."""

    def __init__(self, path: Path, key: str, reason: str) -> None:
        where = f'{path}: "{key}"' if key else str(path)
        super().__init__(f"settings file {where}: {reason}")
        self.path = path
        self.key = key
        self.reason = reason


@dataclass(frozen=True)
class Settings:
    dns_include_suffixes: tuple[str, ...] = ()
    dns_exclude_suffixes: tuple[str, ...] = ()
    also_proxy: tuple[str, ...] = ()
    never_proxy: tuple[str, ...] = ()
    virtual_subnet: str = ""  # empty: the helper's platform default
    start_at_login: bool = False
    clusters: tuple[AddedCluster, ...] = field(default=())


def default_path() -> Path:
    return platformdirs.user_config_path("tether") / FILE_NAME


# --- checks ---------------------------------------------------------------------------------------------


# (settings attribute = key in the file, the check for its values, the name used in messages)
_LIST_FIELDS: tuple[tuple[str, Callable[[Iterable[str], str], object], str], ...] = (
    ("dns_include_suffixes", checks.dns_suffixes, "include DNS suffixes"),
    ("dns_exclude_suffixes", checks.dns_suffixes, "exclude DNS suffixes"),
    ("also_proxy", checks.cidrs, "also-proxy"),
    ("never_proxy", checks.cidrs, "never-proxy"),
)


def validate(settings: Settings) -> None:
    """Raise ValidationError naming the first bad value (its field and the value itself)."""
    for attribute, check, label in _LIST_FIELDS:
        check(getattr(settings, attribute), label)
    if settings.virtual_subnet:
        checks.cidr(settings.virtual_subnet, "virtual subnet")
    seen: set[str] = set()
    for cluster in settings.clusters:
        try:
            cluster.validate()
        except ClusterError as exc:
            raise ValidationError(str(exc)) from None
        if cluster.name in seen:
            raise ValidationError(f'clusters: the name "{cluster.name}" is used twice')
        seen.add(cluster.name)


# --- the file -------------------------------------------------------------------------------------------


def to_json(settings: Settings) -> dict[str, Any]:
    return {
        "version": FORMAT_VERSION,
        "dns_include_suffixes": list(settings.dns_include_suffixes),
        "dns_exclude_suffixes": list(settings.dns_exclude_suffixes),
        "also_proxy": list(settings.also_proxy),
        "never_proxy": list(settings.never_proxy),
        "virtual_subnet": settings.virtual_subnet,
        "start_at_login": settings.start_at_login,
        "clusters": [cluster.to_json() for cluster in settings.clusters],
    }


def _strings(data: dict[str, Any], key: str, path: Path) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise SettingsError(path, key, "must be a list of strings")
    return tuple(value)


def from_json(data: object, path: Path) -> Settings:
    """Settings from a parsed file; SettingsError naming the key for any wrong type or bad value."""
    if not isinstance(data, dict):
        raise SettingsError(path, "", f"expected a JSON object, found {type(data).__name__}")
    version = data.get("version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise SettingsError(path, "version", f"format {version!r} is not one this Tether reads ({FORMAT_VERSION})")
    lists = {attribute: _strings(data, attribute, path) for attribute, _, _ in _LIST_FIELDS}
    for attribute, check, label in _LIST_FIELDS:
        try:
            check(lists[attribute], label)
        except ValidationError as exc:
            raise SettingsError(path, attribute, str(exc)) from None
    virtual_subnet = data.get("virtual_subnet", "")
    if not isinstance(virtual_subnet, str):
        raise SettingsError(path, "virtual_subnet", "must be a string (a CIDR, or empty for the default)")
    if virtual_subnet:
        try:
            checks.cidr(virtual_subnet, "virtual subnet")
        except ValidationError as exc:
            raise SettingsError(path, "virtual_subnet", str(exc)) from None
    start_at_login = data.get("start_at_login", False)
    if not isinstance(start_at_login, bool):
        raise SettingsError(path, "start_at_login", "must be true or false")
    raw_clusters = data.get("clusters", [])
    if not isinstance(raw_clusters, list):
        raise SettingsError(path, "clusters", "must be a list")
    clusters: list[AddedCluster] = []
    for index, item in enumerate(raw_clusters):
        key = f"clusters[{index}]"
        try:
            cluster = AddedCluster.from_json(item)
            cluster.validate()
        except ClusterError as exc:
            raise SettingsError(path, key, str(exc)) from None
        if any(c.name == cluster.name for c in clusters):
            raise SettingsError(path, key, f'the cluster name "{cluster.name}" is used twice')
        clusters.append(cluster)
    return Settings(
        dns_include_suffixes=lists["dns_include_suffixes"],
        dns_exclude_suffixes=lists["dns_exclude_suffixes"],
        also_proxy=lists["also_proxy"],
        never_proxy=lists["never_proxy"],
        virtual_subnet=virtual_subnet,
        start_at_login=start_at_login,
        clusters=tuple(clusters),
    )


class SettingsStore:
    """Reads and writes the settings file; see the module docstring for what a bad file does."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()

    def load(self) -> Settings:
        try:
            with self.path.open("rb") as stream:
                raw = stream.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return Settings()
        except OSError as exc:
            raise SettingsError(self.path, "", f"cannot read it: {exc.strerror or exc}") from None
        if len(raw) > MAX_FILE_BYTES:
            raise SettingsError(self.path, "", f"larger than {MAX_FILE_BYTES} bytes; is this the right file?")
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise SettingsError(self.path, "", f"not valid JSON at line {exc.lineno}, column {exc.colno}") from None
        except UnicodeDecodeError:
            raise SettingsError(self.path, "", "not UTF-8 text") from None
        return from_json(data, self.path)

    def load_or_defaults(self) -> tuple[Settings, SettingsError | None]:
        """The settings, or the defaults and the reason the file could not be used."""
        try:
            return self.load(), None
        except SettingsError as exc:
            return Settings(), exc

    def save(self, settings: Settings) -> None:
        """Check, then replace the file atomically (mode 0600). ValidationError leaves the file alone."""
        validate(settings)
        write_atomic(self.path, json.dumps(to_json(settings), indent=2) + "\n", mode=0o600, make_parents=True)
