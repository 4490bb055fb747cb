"""A kubeconfig that is a YAML bomb ("billion laughs") is refused on both sides of the helper socket.

Nested anchors and aliases make a few hundred bytes a graph of millions of leaves; the helper turned the
cluster's exec extension into ``KUBERNETES_EXEC_INFO`` JSON, leaf by leaf (an 889-byte kubeconfig cost it
460 MB). The root side never gets that far now, and ``KUBERNETES_EXEC_INFO`` is capped as well.
"""

from __future__ import annotations

import os
import tracemalloc

import pytest
import yaml

from tether.helper.api import kubeyaml, validate
from tether.helper.root.kube.credentials import (
    MAX_EXEC_INFO_BYTES,
    CredentialsError,
    PluginResult,
    load_credentials,
)
from tether.helper.root.server.caller import Caller
from tether.helper.user.kubeconfig import KubeconfigError, load_merged

ME = Caller(uid=os.geteuid(), gid=os.getegid(), pid=os.getpid(), groups=tuple(os.getgroups()), username="me")
TOKEN = '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"t"}}'


def bomb(levels: int) -> str:
    """A kubeconfig whose cluster exec extension expands to 10**levels leaves, and whose plugin asks for it."""
    lines = ["laughs:", '  l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        refs = ", ".join([f"*l{level - 1}"] * 10)
        lines.append(f"  l{level}: &l{level} [{refs}]")
    lines += [
        "apiVersion: v1",
        "kind: Config",
        "current-context: c",
        "clusters:",
        "- name: k",
        "  cluster:",
        "    server: https://k.example:6443",
        "    extensions:",
        "    - name: client.authentication.k8s.io/exec",
        f"      extension: *l{levels - 1}",
        "users:",
        "- name: u",
        "  user:",
        "    exec:",
        "      apiVersion: client.authentication.k8s.io/v1",
        "      command: /bin/true",
        "      interactiveMode: Never",
        "      provideClusterInfo: true",
        "contexts:",
        "- name: c",
        "  context: {cluster: k, user: u}",
    ]
    return "\n".join(lines) + "\n"


def runner(argv: list[str], caller: Caller, env: dict[str, str], cwd: str, timeout: float) -> PluginResult:
    return PluginResult(0, TOKEN.encode(), b"")


def _peak_while(work: object) -> tuple[int, BaseException | None]:
    tracemalloc.start()
    error: BaseException | None = None
    try:
        work()  # type: ignore[operator]
    except Exception as exc:
        error = exc
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, error


def test_the_helper_refuses_a_yaml_bomb_naming_the_alias():
    text = bomb(6)  # a million leaves; the real attack had nine levels (a thousand million)
    assert len(text) < 1024
    peak, error = _peak_while(lambda: load_credentials(text, ME, {}, runner=runner).close())
    print({"kubeconfig_bytes": len(text), "peak_bytes": peak})
    assert isinstance(error, CredentialsError)
    assert 'YAML alias "*l0" at line 3' in str(error) and "not accepted in a kubeconfig" in str(error)
    assert peak < 2 * 1024 * 1024


def test_the_client_refuses_a_yaml_bomb_too():
    with pytest.raises(KubeconfigError, match=r'kubeconfig <kubeconfig text>: YAML alias "\*l0" at line 3, column'):
        load_merged(text=bomb(9))


def test_a_merge_key_is_an_alias_too():
    with pytest.raises(kubeyaml.YamlAliasError, match=r'YAML alias "\*base"'):
        kubeyaml.load("base: &base {a: 1}\nother:\n  <<: *base\n")


def test_anchors_without_aliases_and_plain_kubeconfigs_load_as_safe_load_does():
    text = "a: &x 1\nb: [1, 2, {c: d}]\nwhen: 2024-01-01\n"
    assert kubeyaml.load(text) == yaml.safe_load(text)
    with pytest.raises(yaml.constructor.ConstructorError):
        kubeyaml.load("!!python/object:os.system {}\n")


def test_kubernetes_exec_info_is_capped_naming_its_size_and_the_limit():
    extension = {"name": "client.authentication.k8s.io/exec", "extension": {"big": "x" * MAX_EXEC_INFO_BYTES}}
    exec_user = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "command": "/bin/true",
        "interactiveMode": "Never",
        "provideClusterInfo": True,
    }
    text = yaml.safe_dump(
        {
            "apiVersion": "v1",
            "current-context": "c",
            "clusters": [{"name": "k", "cluster": {"server": "https://k.example:6443", "extensions": [extension]}}],
            "users": [{"name": "u", "user": {"exec": exec_user}}],
            "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        }
    )
    assert len(text) < validate.MAX_KUBECONFIG_BYTES
    seen: list[dict[str, str]] = []

    def recording(argv: list[str], caller: Caller, env: dict[str, str], cwd: str, timeout: float) -> PluginResult:
        seen.append(env)
        return runner(argv, caller, env, cwd, timeout)

    limit = rf"KUBERNETES_EXEC_INFO .* would be \d+ bytes, more than the limit of {MAX_EXEC_INFO_BYTES}"
    with pytest.raises(CredentialsError, match=limit):
        load_credentials(text, ME, {}, runner=recording)
    assert not seen  # the plugin was never started
