"""Mutated documents against the loaders: kubeconfig flattening and credentials, the journal, the manager's config.

Each starts from a valid document and mutates its structure (values of another type, keys gone or unknown,
lists where mappings belong, nasty text, huge numbers) or its text (cut, bytes flipped). The loader returns
its result or raises its own error with a message; any other exception is a failure. No exec plugin runs:
the credentials loader gets a runner that refuses, as a missing plugin would.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import yaml
from fuzz_harness import nasty, run

from tether.helper.root.journal import JournalCorrupt, JournalState
from tether.helper.root.kube.credentials import CredentialsError, load_credentials
from tether.helper.root.server.caller import Caller
from tether.helper.user.kubeconfig import KubeconfigError, flatten
from tether.manager.config import ConfigError, load_config

KUBECONFIG: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Config",
    "current-context": "lab",
    "clusters": [{"name": "lab", "cluster": {"server": "https://10.0.0.1:6443", "certificate-authority-data": "QQ=="}}],
    "users": [
        {
            "name": "dev",
            "user": {
                "token": "abc",
                "exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "/bin/true", "args": ["x"]},
                "client-certificate": "/nonexistent/tether-fuzz/client.crt",
            },
        }
    ],
    "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "dev", "namespace": "default"}}],
}
JOURNAL: dict[str, Any] = {
    "version": 1,
    "pid": 4242,
    "start_time": 123456,
    "links": ["tether0"],
    "routes": [{"dst": "10.96.0.0/12", "dev": "tether0", "proto": 4, "table": 254}],
    "nft_tables": [{"family": "inet", "name": "tether"}],
    "records": [{"kind": "resolver", "key": "resolv.conf", "data": {"backup": "/run/x"}, "module": "m"}],
}
MANAGER_VALUES: dict[str, Any] = {
    "podCIDRStrategy": "environment",
    "podCIDRs": ["10.244.0.0/16"],
    "client": {"dns": {"includeSuffixes": [".corp.example"]}, "routing": {"alsoProxySubnets": ["10.1.0.0/16"]}},
}


def _odd_value(rng: random.Random) -> Any:
    return rng.choice(
        (None, True, 0, -1, 1 << 70, 1.5, float("nan"), "", nasty(rng), [], {}, [nasty(rng)], {"x": nasty(rng)})
    )


def _mutate(rng: random.Random, node: Any, depth: int = 0) -> Any:
    """A copy of ``node`` with a few structural mutations somewhere inside."""
    if rng.random() < 0.15 or depth > 6:
        return _odd_value(rng) if rng.random() < 0.5 else node
    if isinstance(node, dict):
        out = {key: _mutate(rng, value, depth + 1) if rng.random() < 0.5 else value for key, value in node.items()}
        if out and rng.random() < 0.2:
            del out[rng.choice(list(out))]
        if rng.random() < 0.1:
            out[rng.choice((nasty(rng), "exec", "tokenFile", "extensions"))] = _odd_value(rng)
        return out
    if isinstance(node, list):
        out_list = [_mutate(rng, item, depth + 1) for item in node]
        if rng.random() < 0.2:
            out_list.append(copy.deepcopy(out_list[0]) if out_list else _odd_value(rng))
        return out_list
    return node


def _text(rng: random.Random, document: Any, as_json: bool) -> str:
    if as_json:
        text = json.dumps(document, allow_nan=True)
    else:
        text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    if rng.random() < 0.2:  # damage the text itself
        position = rng.randint(0, len(text))
        text = text[:position] + rng.choice(("", nasty(rng), "\n  - ", ": ", "{", "\t")) + text[position + 1 :]
    return text


def _refuse_plugins(argv: list[str], *args: object, **kwargs: object) -> object:
    raise CredentialsError(f'exec plugin "{argv[0]}" was not found (plugins never run while fuzzing)')


def test_kubeconfig_flatten():
    def one(rng: random.Random) -> None:
        text = _text(rng, _mutate(rng, KUBECONFIG), as_json=rng.random() < 0.2)
        try:
            flat = flatten(rng.choice((None, "lab", nasty(rng))), text=text, environ={})
        except KubeconfigError as exc:
            assert str(exc)
            return
        yaml.safe_load(flat.text)  # what is sent on must be YAML again

    run("kubeconfig: flatten", one, cases=600)


def test_kubeconfig_credentials(tmp_path: Path):
    caller = Caller(uid=1000, gid=1000, pid=1)

    def one(rng: random.Random) -> None:
        text = _text(rng, _mutate(rng, KUBECONFIG), as_json=rng.random() < 0.2)
        environment = {"HOME": "/home/dev"} if rng.random() < 0.8 else {nasty(rng): nasty(rng)}
        try:
            credentials = load_credentials(text, caller, environment, runner=_refuse_plugins, temp_root=tmp_path)
        except CredentialsError as exc:
            assert str(exc)
            return
        credentials.close()

    run("kubeconfig: load_credentials", one, cases=1000)
    assert not list(tmp_path.iterdir()), "a temporary directory outlived its credentials"


def test_journal_loader():
    def one(rng: random.Random) -> None:
        text = _text(rng, _mutate(rng, JOURNAL), as_json=True)
        try:
            JournalState.loads(text)
        except JournalCorrupt as exc:
            assert str(exc)

    run("journal: loads", one, cases=3000)


def test_manager_config_loader():
    def one(rng: random.Random) -> None:
        values = _mutate(rng, MANAGER_VALUES)
        data: dict[str, str] = {}
        if rng.random() < 0.7:
            data["values.yaml"] = _text(rng, values, as_json=False)
        if rng.random() < 0.4:
            data[rng.choice(("podCIDRs", "podCIDRStrategy", "client.dns.includeSuffixes", nasty(rng)))] = nasty(rng)
        env = {rng.choice(("CLIENT_ROUTING_ALSO_PROXY_SUBNETS", "CLIENT_DNS_INCLUDE_SUFFIXES", "X")): nasty(rng)}
        try:
            load_config(env, data)
        except ConfigError as exc:
            assert str(exc)

    run("manager: load_config", one, cases=2000)
