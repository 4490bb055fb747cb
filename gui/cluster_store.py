"""The clusters added in the tray, kept in two places: the settings file and the OS keychain.

A cluster's name, server, CA and namespace live in the settings (``tether.gui.settings``), its token in a
``TokenVault`` (``tether.gui.clusters``). ``add_cluster`` is all-or-nothing: the token goes to the vault
first, and only when that worked is the settings file changed; if saving the settings then fails, the
token is taken out again.

``store`` None means the user's own settings file. No Qt here; tokens never appear in messages.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace

from tether.gui.clusters import (
    KEYRING_SERVICE,
    AddedCluster,
    ClusterError,
    TokenVault,
    VaultError,
    check_token,
    kubeconfig_text,
)
from tether.gui.settings import SettingsStore


def _store(store: SettingsStore | None) -> SettingsStore:
    return store if store is not None else SettingsStore()


def added_clusters(store: SettingsStore | None = None) -> list[AddedCluster]:
    """The added clusters in the order they were added. SettingsError when the settings file is bad."""
    return list(_store(store).load().clusters)


def add_cluster(cluster: AddedCluster, token: str, store: SettingsStore | None, vault: TokenVault) -> None:
    """Token to the vault, the rest to the settings; on any failure neither is changed.

    ClusterError for a bad field or a name already in use, VaultError when the keychain fails,
    SettingsError/OSError when the settings file cannot be read or written.
    """
    store = _store(store)
    cluster.validate()
    check_token(token)
    settings = store.load()
    if any(c.name == cluster.name for c in settings.clusters):
        raise ClusterError(f'name: a cluster named "{cluster.name}" is already added; remove it first or pick another')
    vault.set(cluster.name, token)
    try:
        store.save(replace(settings, clusters=(*settings.clusters, cluster)))
    except BaseException:
        # The save error is the one to report; a token left behind is harmless without its cluster.
        with contextlib.suppress(VaultError):
            vault.delete(cluster.name)
        raise


def remove_cluster(name: str, store: SettingsStore | None, vault: TokenVault) -> None:
    """Forget the cluster, then its token. VaultError (after the settings changed) if the token stays behind."""
    store = _store(store)
    settings = store.load()
    remaining = tuple(c for c in settings.clusters if c.name != name)
    if len(remaining) == len(settings.clusters):
        raise ClusterError(f'no added cluster is named "{name}"')
    store.save(replace(settings, clusters=remaining))
    try:
        vault.delete(name)
    except VaultError as exc:
        raise VaultError(
            f'"{name}" was removed, but its token is still in the keychain (service "{KEYRING_SERVICE}"): {exc}'
        ) from None


def kubeconfig_for(name: str, store: SettingsStore | None, vault: TokenVault) -> str:
    """The in-memory kubeconfig of an added cluster, token from the vault; ClusterError/VaultError otherwise."""
    for cluster in added_clusters(store):
        if cluster.name == name:
            token = vault.get(name)
            if not token:
                raise ClusterError(f'no token for "{name}" in the keychain; remove the cluster and add it again')
            return kubeconfig_text(cluster, token)
    raise ClusterError(f'no added cluster is named "{name}"')
