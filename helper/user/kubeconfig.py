"""The user's kubeconfig, read on the client side and flattened for the helper.

The helper never reads a user's files, so the client sends the kubeconfig as data: one context, its
cluster and its user, with every file reference inlined (``certificate-authority``, ``client-certificate``,
``client-key`` become ``*-data``; ``tokenFile`` becomes ``token``; a relative ``exec.command`` that
contains a path separator becomes absolute).

Which files: kubeconfig text given in memory (``text=``: the tray's added clusters, whose token lives
in the OS keychain and must never be written to a file), else an explicit path, else ``$KUBECONFIG``
(a ``:``-separated list; ``;`` on Windows), else ``~/.kube/config``. Files from ``$KUBECONFIG`` are
merged the way kubectl does it: the first file that defines a cluster, user or context name wins, and
so does the first ``current-context``; listed files that do not exist are skipped. Relative paths are
resolved against the directory of the file that defined the entry; in-memory text has no directory, so
it may refer to files only by absolute path.
"""

from __future__ import annotations

import base64
import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tether.helper.api import kubeyaml
from tether.helper.api.validate import MAX_KUBECONFIG_BYTES

PATH_SEPARATOR = ";" if os.name == "nt" else ":"
SECTIONS = {"clusters": "cluster", "users": "user", "contexts": "context"}
# (field holding a path, field holding the same as base64 data)
CLUSTER_FILES = (("certificate-authority", "certificate-authority-data"),)
USER_FILES = (("client-certificate", "client-certificate-data"), ("client-key", "client-key-data"))
MAX_FILE_BYTES = 256 * 1024
# Stands for in-memory text wherever a file path would be shown or recorded.
IN_MEMORY = Path("<kubeconfig text>")


class KubeconfigError(Exception):
    """The kubeconfig cannot be used; the message names the file and what is wrong."""


@dataclass
class _Named:
    value: dict[str, Any]
    source: Path


@dataclass
class MergedKubeconfig:
    files: list[Path]
    current_context: str = ""
    clusters: dict[str, _Named] = field(default_factory=dict)
    users: dict[str, _Named] = field(default_factory=dict)
    contexts: dict[str, _Named] = field(default_factory=dict)

    def describe_files(self) -> str:
        return ", ".join(str(f) for f in self.files) or "(no file)"


@dataclass(frozen=True)
class FlatKubeconfig:
    text: str  # YAML for exactly one context, with no file references
    context: str
    cluster: str
    user: str
    server: str
    namespace: str
    sources: tuple[Path, ...]


def kubeconfig_paths(
    explicit: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[list[Path], bool]:
    """The files to read, and whether missing ones may be skipped (only for $KUBECONFIG lists)."""
    env = os.environ if environ is None else environ
    if explicit:
        return [Path(explicit).expanduser()], False
    listed = env.get("KUBECONFIG", "")
    if listed.strip():
        seen: list[Path] = []
        for entry in listed.split(PATH_SEPARATOR):
            if entry.strip():
                path = Path(entry).expanduser()
                if path not in seen:
                    seen.append(path)
        return seen, True
    home = env.get("HOME") or str(Path.home())
    return [Path(home) / ".kube" / "config"], False


def _load_file(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KubeconfigError(f"kubeconfig {path}: cannot read it: {exc.strerror or exc}") from None
    return _parse(data, path)


def _parse(data: bytes | str, path: Path) -> dict[str, Any]:
    size = len(data.encode() if isinstance(data, str) else data)
    if size > 4 * MAX_KUBECONFIG_BYTES:
        raise KubeconfigError(f"kubeconfig {path}: {size} bytes is too large for a kubeconfig")
    try:
        loaded = kubeyaml.load(data)
    except kubeyaml.YamlAliasError as exc:
        raise KubeconfigError(f"kubeconfig {path}: {exc}") from None
    except yaml.MarkedYAMLError as exc:
        # Only the problem and its position: the snippet PyYAML adds could show a token.
        where = (
            f" at line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1}" if exc.problem_mark else ""
        )
        raise KubeconfigError(f"kubeconfig {path}: not valid YAML{where}: {exc.problem or 'syntax error'}") from None
    except yaml.YAMLError as exc:
        raise KubeconfigError(f"kubeconfig {path}: not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise KubeconfigError(
            f"kubeconfig {path}: expected a mapping (apiVersion, clusters, ...), found a {type(loaded).__name__}"
        )
    return loaded


def _merge_file(merged: MergedKubeconfig, path: Path, data: dict[str, Any]) -> None:
    current = data.get("current-context")
    if current is not None and not isinstance(current, str):
        raise KubeconfigError(f"kubeconfig {path}: current-context must be a string")
    if current and not merged.current_context:
        merged.current_context = current
    for section, key in SECTIONS.items():
        entries = data.get(section)
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise KubeconfigError(f"kubeconfig {path}: '{section}' must be a list")
        table: dict[str, _Named] = getattr(merged, section)
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
                raise KubeconfigError(f"kubeconfig {path}: {section}[{index}] has no name")
            body = entry.get(key)
            if body is None:
                body = {}
            if not isinstance(body, dict):
                raise KubeconfigError(f'kubeconfig {path}: {key} "{entry["name"]}" must be a mapping')
            table.setdefault(entry["name"], _Named(body, path))


def load_merged(
    explicit: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    text: str | None = None,
) -> MergedKubeconfig:
    """The files (or the in-memory ``text``, exclusive with ``explicit``) merged the way kubectl does."""
    if text is not None:
        if explicit:
            raise ValueError("give either a kubeconfig path or kubeconfig text, not both")
        merged = MergedKubeconfig(files=[IN_MEMORY])
        _merge_file(merged, IN_MEMORY, _parse(text, IN_MEMORY))
        return merged
    paths, skip_missing = kubeconfig_paths(explicit, environ)
    merged = MergedKubeconfig(files=[])
    for path in paths:
        if skip_missing and not path.exists():
            continue
        if not path.exists():
            hint = "" if explicit else " (set KUBECONFIG or pass --kubeconfig to use another file)"
            raise KubeconfigError(f"kubeconfig {path} does not exist{hint}")
        merged.files.append(path)
        _merge_file(merged, path, _load_file(path))
    if not merged.files:
        raise KubeconfigError(f"none of the files in KUBECONFIG exist: {', '.join(str(p) for p in paths)}")
    return merged


def list_contexts(
    explicit: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[list[str], str]:
    """(context names in file order, the current context or "")."""
    merged = load_merged(explicit, environ)
    return list(merged.contexts), merged.current_context


def _resolve(path_text: Any, source: Path, what: str) -> Path:
    if not isinstance(path_text, str) or not path_text:
        raise KubeconfigError(f"kubeconfig {source}: {what} must be a file path")
    path = Path(path_text)
    if path.is_absolute():
        return path
    if source == IN_MEMORY:
        raise KubeconfigError(f"kubeconfig {source}: {what} {path_text} must be an absolute path (no directory here)")
    return source.parent / path


def _read_referenced(path: Path, source: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KubeconfigError(f"kubeconfig {source}: {what} {path} cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise KubeconfigError(f"kubeconfig {source}: {what} {path} is too large ({len(data)} bytes)")
    return data


def _inline(body: dict[str, Any], pairs: tuple[tuple[str, str], ...], source: Path, owner: str) -> None:
    for file_key, data_key in pairs:
        if file_key not in body:
            continue
        path_text = body.pop(file_key)
        if body.get(data_key):
            continue  # the data wins, as in kubectl
        path = _resolve(path_text, source, f"{owner} {file_key}")
        body[data_key] = base64.b64encode(_read_referenced(path, source, f"{owner} {file_key}")).decode()


def _flatten_user(user: dict[str, Any], source: Path, name: str) -> dict[str, Any]:
    user = copy.deepcopy(user)
    owner = f'user "{name}"'
    _inline(user, USER_FILES, source, owner)
    if "tokenFile" in user:
        path_text = user.pop("tokenFile")
        if not user.get("token"):
            path = _resolve(path_text, source, f"{owner} tokenFile")
            try:
                user["token"] = _read_referenced(path, source, f"{owner} tokenFile").decode().strip()
            except UnicodeDecodeError:
                raise KubeconfigError(f"kubeconfig {source}: {owner} tokenFile {path} is not text") from None
    exec_spec = user.get("exec")
    if exec_spec is not None:
        if not isinstance(exec_spec, dict) or not isinstance(exec_spec.get("command"), str):
            raise KubeconfigError(f"kubeconfig {source}: {owner} exec needs a command")
        command = exec_spec["command"]
        if ("/" in command or os.sep in command) and not Path(command).is_absolute():
            exec_spec["command"] = str(_resolve(command, source, f"{owner} exec command").resolve())
    provider = user.get("auth-provider")
    if isinstance(provider, dict) and isinstance(provider.get("config"), dict):
        _inline(provider["config"], (("idp-certificate-authority", "idp-certificate-authority-data"),), source, owner)
    return user


def flatten(
    context: str | None = None,
    *,
    kubeconfig: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    text: str | None = None,
) -> FlatKubeconfig:
    """The minified, self-contained kubeconfig for ``context`` (default: the current context).

    ``text``: kubeconfig YAML held in memory instead of files (exclusive with ``kubeconfig``).
    """
    merged = load_merged(kubeconfig, environ, text=text)
    files = merged.describe_files()
    available = ", ".join(merged.contexts) or "none"
    name = context or merged.current_context
    if not name:
        raise KubeconfigError(f"no context given and {files} set no current-context; available contexts: {available}")
    if name not in merged.contexts:
        raise KubeconfigError(f'context "{name}" not found in {files}; available contexts: {available}')
    ctx = merged.contexts[name]
    cluster_name = ctx.value.get("cluster")
    if not isinstance(cluster_name, str) or not cluster_name:
        raise KubeconfigError(f'kubeconfig {ctx.source}: context "{name}" names no cluster')
    if cluster_name not in merged.clusters:
        raise KubeconfigError(
            f'kubeconfig {ctx.source}: context "{name}" uses cluster "{cluster_name}", which {files} do not define'
        )
    cluster_entry = merged.clusters[cluster_name]
    cluster = copy.deepcopy(cluster_entry.value)
    _inline(cluster, CLUSTER_FILES, cluster_entry.source, f'cluster "{cluster_name}"')
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise KubeconfigError(f'kubeconfig {cluster_entry.source}: cluster "{cluster_name}" has no server')

    user_name = ctx.value.get("user") or ""
    users = []
    if user_name:
        if user_name not in merged.users:
            raise KubeconfigError(
                f'kubeconfig {ctx.source}: context "{name}" uses user "{user_name}", which {files} do not define'
            )
        user_entry = merged.users[user_name]
        users.append({"name": user_name, "user": _flatten_user(user_entry.value, user_entry.source, user_name)})

    context_body = {k: v for k, v in ctx.value.items() if k in ("cluster", "user", "namespace", "extensions")}
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": name,
        "clusters": [{"name": cluster_name, "cluster": cluster}],
        "users": users,
        "contexts": [{"name": name, "context": context_body}],
        "preferences": {},
    }
    text = yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
    if len(text.encode()) > MAX_KUBECONFIG_BYTES:
        raise KubeconfigError(f'context "{name}": the flattened kubeconfig is larger than 1 MiB')
    namespace = ctx.value.get("namespace")
    return FlatKubeconfig(
        text=text,
        context=name,
        cluster=cluster_name,
        user=user_name,
        server=server,
        namespace=namespace if isinstance(namespace, str) else "",
        sources=tuple(merged.files),
    )
