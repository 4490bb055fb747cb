"""Helper-side credentials: exec plugins run as the caller (here: as ourselves), files stay private."""

import asyncio
import base64
import datetime as dt
import json
import os
import stat
from pathlib import Path

import pytest
import yaml

from tether.helper.api.proxies import ProxyEnvironment
from tether.helper.root.kube import credentials
from tether.helper.root.kube.credentials import CredentialsError, PluginResult, load_credentials, parse_exec_credential
from tether.helper.root.server.caller import Caller

V1 = "client.authentication.k8s.io/v1"
ME = Caller(uid=os.geteuid(), gid=os.getegid(), pid=os.getpid(), groups=tuple(os.getgroups()), username="me")
CA = b"-----BEGIN CERTIFICATE-----\nnot really\n-----END CERTIFICATE-----\n"


def kubeconfig(user: dict, cluster: dict | None = None) -> str:
    cluster = cluster or {
        "server": "https://k.example:6443",
        "certificate-authority-data": base64.b64encode(CA).decode(),
    }
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "c",
            "clusters": [{"name": "k", "cluster": cluster}],
            "users": [{"name": "u", "user": user}],
            "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u", "namespace": "apps"}}],
        }
    )


def plugin(tmp_path: Path, body: str) -> str:
    script = tmp_path / "plugin.sh"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return str(script)


def exec_user(command: str, **extra) -> dict:
    return {"exec": {"apiVersion": V1, "command": command, "interactiveMode": "Never", **extra}}


def credential_json(status: dict) -> str:
    return json.dumps({"apiVersion": V1, "kind": "ExecCredential", "status": status})


UID_PLUGIN = """printf '{"apiVersion":"%s","kind":"ExecCredential","status":{"token":"uid-%s-%s"}}' \\
  "client.authentication.k8s.io/v1" "$(id -u)" "$GREETING"
"""


def test_exec_plugin_runs_as_the_caller_with_its_environment(tmp_path):
    text = kubeconfig(exec_user(plugin(tmp_path, UID_PLUGIN)))
    with load_credentials(text, ME, {"PATH": os.environ["PATH"], "GREETING": "hi"}) as creds:
        assert creds.configuration.api_key["BearerToken"] == f"Bearer uid-{os.geteuid()}-hi"
        assert creds.configuration.get_api_key_with_prefix("authorization") == f"Bearer uid-{os.geteuid()}-hi"
        assert creds.configuration.host == "https://k.example:6443"
        assert (creds.context, creds.namespace, creds.server) == ("c", "apps", "https://k.example:6443")
        ca = Path(creds.configuration.ssl_ca_cert)
        assert ca.read_bytes() == CA
        assert ca.parent == creds.directory
        assert stat.S_IMODE(creds.directory.stat().st_mode) == 0o700
        assert stat.S_IMODE(ca.stat().st_mode) == 0o600
        directory = creds.directory
    assert not directory.exists()


EXEC_INFO_PLUGIN = """printf '%s' "$KUBERNETES_EXEC_INFO" > "$OUT"
printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"t-%s"}}' "$FROM_SPEC"
"""


def test_exec_info_and_plugin_env_reach_the_plugin(tmp_path):
    out = tmp_path / "exec-info.json"
    user = exec_user(
        plugin(tmp_path, EXEC_INFO_PLUGIN), provideClusterInfo=True, env=[{"name": "FROM_SPEC", "value": "spec"}]
    )
    with load_credentials(kubeconfig(user), ME, {"PATH": os.environ["PATH"], "OUT": str(out)}) as creds:
        assert creds.configuration.api_key["BearerToken"] == "Bearer t-spec"
    info = json.loads(out.read_text())
    assert info["kind"] == "ExecCredential" and info["apiVersion"] == V1
    assert info["spec"]["interactive"] is False
    assert info["spec"]["cluster"]["server"] == "https://k.example:6443"
    assert base64.b64decode(info["spec"]["cluster"]["certificate-authority-data"]) == CA


def counting_plugin(tmp_path: Path, expires: str, later: str | None = None) -> str:
    """A plugin whose token counts its runs; the first credential expires at ``expires``, later ones at ``later``."""
    counter = tmp_path / "count"
    status = '{"token":"tok-%s","expirationTimestamp":"%s"}'
    body = (
        f'n=$(( $(cat "{counter}" 2>/dev/null || echo 0) + 1 )); echo $n > "{counter}"\n'
        f'exp="{later or expires}"; [ $n = 1 ] && exp="{expires}"\n'
        f'printf \'{{"apiVersion":"{V1}","kind":"ExecCredential","status":{status}}}\' $n "$exp"\n'
    )
    return plugin(tmp_path, body)


def test_refresh_before_expiry_with_an_injected_clock(tmp_path):
    now = [dt.datetime(2030, 1, 1, 0, 0, tzinfo=dt.UTC)]
    text = kubeconfig(exec_user(counting_plugin(tmp_path, "2030-01-01T01:00:00Z")))
    with load_credentials(text, ME, {"PATH": os.environ["PATH"]}, clock=lambda: now[0]) as creds:
        cfg = creds.configuration
        assert cfg.get_api_key_with_prefix("BearerToken") == "Bearer tok-1"
        assert creds.expires_at == dt.datetime(2030, 1, 1, 1, 0, tzinfo=dt.UTC)
        assert creds.refresh_at == dt.datetime(2030, 1, 1, 0, 55, tzinfo=dt.UTC)  # 5 minutes early
        now[0] = dt.datetime(2030, 1, 1, 0, 54, tzinfo=dt.UTC)
        assert cfg.get_api_key_with_prefix("BearerToken") == "Bearer tok-1"
        now[0] = dt.datetime(2030, 1, 1, 0, 56, tzinfo=dt.UTC)
        assert cfg.get_api_key_with_prefix("BearerToken") == "Bearer tok-2"  # the refresh hook ran the plugin
        assert creds.refresh(force=True)
        assert cfg.api_key["authorization"] == "Bearer tok-3"


def test_background_refresh(tmp_path):
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    text = kubeconfig(exec_user(counting_plugin(tmp_path, soon, later="2099-01-01T00:00:00Z")))

    async def scenario() -> str:
        with load_credentials(text, ME, {"PATH": os.environ["PATH"]}) as creds:
            creds.start_auto_refresh()
            for _ in range(100):
                if creds.configuration.api_key["BearerToken"] != "Bearer tok-1":
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # no further runs: the new credential is good until 2099
            return creds.configuration.api_key["BearerToken"]

    assert asyncio.run(scenario()) == "Bearer tok-2"


def test_client_certificate_from_the_plugin_goes_to_private_files(tmp_path):
    body = f"printf '%s' '{credential_json({'clientCertificateData': 'CERT', 'clientKeyData': 'KEY'})}'\n"
    with load_credentials(kubeconfig(exec_user(plugin(tmp_path, body))), ME, {"PATH": os.environ["PATH"]}) as creds:
        cert, key = Path(creds.configuration.cert_file), Path(creds.configuration.key_file)
        assert (cert.read_text(), key.read_text()) == ("CERT", "KEY")
        assert cert.parent == creds.directory and stat.S_IMODE(key.stat().st_mode) == 0o600
        assert "BearerToken" not in creds.configuration.api_key


def test_static_credentials():
    user = {
        "client-certificate-data": base64.b64encode(b"C").decode(),
        "client-key-data": base64.b64encode(b"K").decode(),
    }
    with load_credentials(kubeconfig(user), ME) as creds:
        assert Path(creds.configuration.cert_file).read_bytes() == b"C"
        assert Path(creds.configuration.key_file).read_bytes() == b"K"
    with load_credentials(kubeconfig({"token": "abc"}), ME) as creds:
        assert creds.configuration.get_api_key_with_prefix("authorization") == "Bearer abc"


def _server(proxy_url: str = "") -> dict:
    cluster = {"server": "https://k.example:6443"}
    return {**cluster, "proxy-url": proxy_url} if proxy_url else cluster


@pytest.mark.parametrize(
    ("proxy_url", "env", "expected"),
    [
        ("socks5://kp:1080", ProxyEnvironment(https_proxy="http://ep:3128"), "socks5://kp:1080"),
        ("", ProxyEnvironment(https_proxy="http://u:pw@ep:3128"), "http://u:pw@ep:3128"),
        ("", ProxyEnvironment(https_proxy="http://ep:3128", no_proxy=".example"), None),
        ("", ProxyEnvironment(), None),
    ],
)
def test_the_proxy_is_chosen_as_kubectl_does(proxy_url, env, expected):
    with load_credentials(kubeconfig({"token": "t"}, _server(proxy_url)), ME, proxy_environment=env) as creds:
        assert creds.configuration.proxy == expected
        assert creds.configuration.no_proxy is None  # decided here; the client library only follows
        assert (creds.proxy.url if creds.proxy else None) == expected


@pytest.mark.parametrize(
    ("proxy_url", "env", "message"),
    [
        (
            "ftp://u:pw@kp:21",
            ProxyEnvironment(),
            r'cluster "k": the kubeconfig\'s proxy-url "ftp://\*\*\*@kp:21".*"ftp"',
        ),
        ("http://kp:99999", ProxyEnvironment(), r'proxy-url "http://kp:99999" has port "99999"'),
        ("", ProxyEnvironment(https_proxy="gopher://ep:1"), r'HTTPS_PROXY "gopher://ep:1"'),
    ],
)
def test_a_bad_proxy_is_refused_naming_it_and_nothing_is_left(proxy_url, env, message, tmp_path):
    with pytest.raises(CredentialsError, match=message) as caught:
        load_credentials(kubeconfig({"token": "t"}, _server(proxy_url)), ME, proxy_environment=env, temp_root=tmp_path)
    assert "pw" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("user", "cluster", "message"),
    [
        ({"tokenFile": "/etc/shadow"}, None, r'refers to files.*user "u" tokenFile'),
        ({"client-key": "/root/key"}, None, r'user "u" client-key'),
        ({}, {"server": "https://k", "certificate-authority": "/etc/ca"}, r"cluster certificate-authority"),
        ({"auth-provider": {"name": "gcp", "config": {}}}, None, r"gcp auth-provider is not supported"),
    ],
)
def test_file_references_are_refused(user, cluster, message):
    with pytest.raises(CredentialsError, match=message):
        load_credentials(kubeconfig(user, cluster), ME)


@pytest.mark.parametrize("sections", ["contexts: 5", "contexts: lab", "clusters: {lab: {}}"])
def test_sections_that_are_no_list_are_refused_clearly(sections):
    # `contexts: 5` raised TypeError (not iterable) out of the loader, past the session's CredentialsError handler.
    text = "current-context: lab\ncontexts: [{name: lab, context: {cluster: lab}}]\n" + sections + "\n"
    with pytest.raises(CredentialsError, match=r"must be a list"):
        load_credentials(text.replace("contexts: [", "x: [") if sections.startswith("contexts") else text, ME)


def test_plugin_failures_are_explained(tmp_path):
    failing = plugin(tmp_path, "echo 'token expired, run login' >&2; exit 3\n")
    with pytest.raises(CredentialsError, match=r"failed with exit code 3: token expired, run login"):
        load_credentials(kubeconfig(exec_user(failing)), ME, {"PATH": os.environ["PATH"]})
    with pytest.raises(CredentialsError, match=r'exec plugin "no-such-plugin-xyz" was not found.*brew install it'):
        load_credentials(
            kubeconfig(exec_user("no-such-plugin-xyz", installHint="brew install it")), ME, {"PATH": "/nonexistent"}
        )
    with pytest.raises(CredentialsError, match=r"needs an interactive terminal"):
        load_credentials(kubeconfig(exec_user(failing, interactiveMode="Always")), ME)
    with pytest.raises(CredentialsError, match=r"apiVersion 'v0' is not supported"):
        load_credentials(kubeconfig({"exec": {"command": failing, "apiVersion": "v0"}}), ME)
    slow = plugin(tmp_path, "sleep 30\n")
    with pytest.raises(CredentialsError, match=r"did not finish within 0.5 s"):
        load_credentials(kubeconfig(exec_user(slow)), ME, {"PATH": os.environ["PATH"]}, exec_timeout=0.5)


def test_runner_gets_caller_home_and_cwd():
    seen = {}

    def runner(argv, caller, env, cwd, timeout):
        seen.update(argv=argv, caller=caller, env=env, cwd=cwd)
        return PluginResult(0, credential_json({"token": "x"}).encode(), b"")

    user = exec_user("get-token", args=["--cluster", "k"])
    with load_credentials(kubeconfig(user), ME, {"LANG": "C"}, runner=runner):
        pass
    assert seen["argv"] == ["get-token", "--cluster", "k"]
    assert seen["caller"] == ME
    assert seen["env"]["LANG"] == "C"
    assert seen["env"]["HOME"] == (ME.home() or "/")
    assert seen["cwd"] in (ME.home(), "/")


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("not json", "invalid JSON"),
        ('{"kind": "Other"}', 'kind is not "ExecCredential"'),
        ('{"kind": "ExecCredential", "apiVersion": "client.authentication.k8s.io/v1beta1"}', "the plugin returned"),
        (json.dumps({"kind": "ExecCredential", "apiVersion": V1}), "has no status"),
        (credential_json({}), "neither a token nor"),
        (credential_json({"clientKeyData": "k"}), "only one of"),
        (credential_json({"token": "t", "expirationTimestamp": "soon"}), "not an RFC 3339 time"),
    ],
)
def test_parse_exec_credential_errors(output, message):
    with pytest.raises(CredentialsError, match=message):
        parse_exec_credential(output, V1)


def test_parse_exec_credential():
    cred = parse_exec_credential(credential_json({"token": "t", "expirationTimestamp": "2030-01-01T00:00:00Z"}), V1)
    assert cred.token == "t"
    assert cred.expires_at == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def test_cannot_run_as_someone_else_without_root(monkeypatch):
    monkeypatch.setattr(credentials.os, "geteuid", lambda: 1000)
    other = Caller(uid=1001, gid=1001, pid=1)
    with pytest.raises(
        CredentialsError, match="cannot run the exec plugin as uid 1001: the helper is not running as root"
    ):
        credentials.run_as_caller(["true"], other, {}, "/", 5)
