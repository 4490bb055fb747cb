"""The ConnectRequest the tray sends: the chosen cluster, the user's settings and a conflict resolution (no Qt).

It blocks (it reads kubeconfig files and may ask the OS keychain for an added cluster's token), so the
controller calls it off the GUI thread. Every way it can fail becomes a ``RequestError`` whose message
names the file, key or value at fault, ready to show.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from tether.gui.contexts import Cluster, Source
from tether.helper.api import helper_pb2 as pb
from tether.helper.api.validate import ValidationError
from tether.helper.user.client import build_connect_request
from tether.helper.user.kubeconfig import KubeconfigError
from tether.helper.user.resolutions import Resolution

CLIENT_NAME = "tether-tray"


class RequestError(Exception):
    """The request cannot be built; the message says why."""


class ConnectSettings(Protocol):
    """The settings that go into every connect (``tether.gui.settings.Settings`` has these)."""

    @property
    def also_proxy(self) -> Sequence[str]: ...

    @property
    def never_proxy(self) -> Sequence[str]: ...

    @property
    def virtual_subnet(self) -> str: ...

    @property
    def dns_include_suffixes(self) -> Sequence[str]: ...

    @property
    def dns_exclude_suffixes(self) -> Sequence[str]: ...


SettingsSource = Callable[[], ConnectSettings]
KubeconfigTextFor = Callable[[str], str]  # an added cluster's name -> its in-memory kubeconfig


def default_settings() -> ConnectSettings:
    from tether.gui.settings import SettingsStore

    return SettingsStore().load()


def default_kubeconfig_text(name: str) -> str:
    from tether.gui.cluster_store import kubeconfig_for
    from tether.gui.clusters import KeyringVault

    return kubeconfig_for(name, None, KeyringVault())


def _settings_error_types() -> tuple[type[Exception], ...]:
    from tether.gui.clusters import VaultError
    from tether.gui.settings import SettingsError

    return (SettingsError, VaultError, OSError)


def build_request(
    cluster: Cluster,
    resolution: Resolution | None = None,
    *,
    settings: SettingsSource = default_settings,
    kubeconfig: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    kubeconfig_text_for: KubeconfigTextFor = default_kubeconfig_text,
) -> pb.ConnectRequest:
    chosen = resolution or Resolution()
    try:
        options = settings()
        text = kubeconfig_text_for(cluster.name) if cluster.source is Source.ADDED else None
        return build_connect_request(
            context=cluster.name,
            kubeconfig=kubeconfig if text is None else None,
            kubeconfig_text=text,
            also_proxy=options.also_proxy,
            never_proxy=options.never_proxy,
            virtual_subnet=options.virtual_subnet,
            dns_include_suffixes=options.dns_include_suffixes,
            dns_exclude_suffixes=options.dns_exclude_suffixes,
            allow_conflicting_subnets=chosen.allow_conflicting_subnets,
            proxy_via=chosen.proxy_via,
            auto_resolve=chosen.auto_resolve,
            environment=environ,
            client_name=CLIENT_NAME,
        )
    except (ValidationError, KubeconfigError) as exc:
        raise RequestError(str(exc)) from None
    except _settings_error_types() as exc:
        raise RequestError(str(exc) or type(exc).__name__) from None
