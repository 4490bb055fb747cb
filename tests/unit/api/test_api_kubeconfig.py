"""Flattening the user's kubeconfig on the client side: merging, inlining, errors that name the file."""

import base64
from pathlib import Path

import pytest
import yaml

from tether.helper.user.kubeconfig import KubeconfigError, flatten, kubeconfig_paths, list_contexts


def write(path: Path, document: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document))
    return path


def config(current: str | None, clusters=(), users=(), contexts=()) -> dict:
    doc: dict = {"apiVersion": "v1", "kind": "Config"}
    if current is not None:
        doc["current-context"] = current
    doc["clusters"] = [{"name": n, "cluster": c} for n, c in clusters]
    doc["users"] = [{"name": n, "user": u} for n, u in users]
    doc["contexts"] = [{"name": n, "context": c} for n, c in contexts]
    return doc


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def two_files(tmp_path):
    a = tmp_path / "a" / "config"
    b = tmp_path / "b" / "config"
    (tmp_path / "a" / "certs").mkdir(parents=True)
    (tmp_path / "a" / "certs" / "ca.crt").write_bytes(b"CA-A")
    (tmp_path / "a" / "certs" / "me.crt").write_bytes(b"CERT-A")
    (tmp_path / "a" / "certs" / "me.key").write_bytes(b"KEY-A")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "token").write_text("tok-b\n")
    write(
        a,
        config(
            "lab",
            clusters=[("lab", {"server": "https://lab:6443", "certificate-authority": "certs/ca.crt"})],
            users=[("me", {"client-certificate": "certs/me.crt", "client-key": str(tmp_path / "a/certs/me.key")})],
            contexts=[("lab", {"cluster": "lab", "user": "me", "namespace": "apps"}), ("shared", {"cluster": "lab"})],
        ),
    )
    write(
        b,
        config(
            "prod",
            clusters=[("prod", {"server": "https://prod:443"}), ("lab", {"server": "https://WRONG"})],
            users=[
                ("ci", {"tokenFile": "token"}),
                ("plugin", {"exec": {"command": "./bin/get-token", "apiVersion": "x"}}),
            ],
            contexts=[
                ("prod", {"cluster": "prod", "user": "ci"}),
                ("shared", {"cluster": "prod"}),
                ("exec", {"cluster": "prod", "user": "plugin"}),
            ],
        ),
    )
    return a, b


def test_paths_from_kubeconfig_env_and_home(tmp_path):
    env = {"KUBECONFIG": f"{tmp_path}/a::{tmp_path}/b:{tmp_path}/a", "HOME": "/home/x"}
    assert kubeconfig_paths(environ=env) == ([tmp_path / "a", tmp_path / "b"], True)
    assert kubeconfig_paths(environ={"HOME": "/home/x"}) == ([Path("/home/x/.kube/config")], False)
    assert kubeconfig_paths("/etc/k.yaml", environ=env) == ([Path("/etc/k.yaml")], False)


def test_merge_first_file_wins(two_files, tmp_path):
    a, b = two_files
    env = {"KUBECONFIG": f"{tmp_path}/missing:{a}:{b}"}
    names, current = list_contexts(environ=env)
    assert names == ["lab", "shared", "prod", "exec"]
    assert current == "lab"  # the first current-context wins
    flat = flatten("shared", environ=env)
    assert flat.server == "https://lab:6443"  # "shared" and cluster "lab" come from the first file
    reversed_env = {"KUBECONFIG": f"{b}:{a}"}
    assert list_contexts(environ=reversed_env)[1] == "prod"
    assert flatten("lab", environ=reversed_env).server == "https://WRONG"


def test_flatten_inlines_files_relative_to_their_kubeconfig(two_files):
    a, b = two_files
    flat = flatten(environ={"KUBECONFIG": f"{a}:{b}"})
    assert (flat.context, flat.cluster, flat.user, flat.namespace) == ("lab", "lab", "me", "apps")
    doc = yaml.safe_load(flat.text)
    assert doc["current-context"] == "lab"
    assert [c["name"] for c in doc["contexts"]] == ["lab"]
    assert [c["name"] for c in doc["clusters"]] == ["lab"]
    cluster = doc["clusters"][0]["cluster"]
    assert cluster == {"server": "https://lab:6443", "certificate-authority-data": b64(b"CA-A")}
    user = doc["users"][0]["user"]
    assert user == {"client-certificate-data": b64(b"CERT-A"), "client-key-data": b64(b"KEY-A")}
    assert "certificate-authority:" not in flat.text and "client-key:" not in flat.text


def test_flatten_token_file_and_exec_command(two_files):
    a, b = two_files
    env = {"KUBECONFIG": f"{a}:{b}"}
    user = yaml.safe_load(flatten("prod", environ=env).text)["users"][0]["user"]
    assert user == {"token": "tok-b"}
    user = yaml.safe_load(flatten("exec", environ=env).text)["users"][0]["user"]
    assert user["exec"]["command"] == str((b.parent / "bin" / "get-token").resolve())


def test_data_wins_over_file(tmp_path):
    path = write(
        tmp_path / "config",
        config(
            "c",
            clusters=[
                (
                    "k",
                    {
                        "server": "https://k",
                        "certificate-authority": "/nonexistent",
                        "certificate-authority-data": "QQ==",
                    },
                )
            ],
            contexts=[("c", {"cluster": "k"})],
        ),
    )
    cluster = yaml.safe_load(flatten(kubeconfig=path).text)["clusters"][0]["cluster"]
    assert cluster == {"server": "https://k", "certificate-authority-data": "QQ=="}


def test_unknown_context_lists_the_available_ones(two_files):
    a, b = two_files
    with pytest.raises(KubeconfigError) as info:
        flatten("nope", environ={"KUBECONFIG": f"{a}:{b}"})
    message = str(info.value)
    assert 'context "nope" not found in' in message
    assert str(a) in message and str(b) in message
    assert "available contexts: lab, shared, prod, exec" in message


def test_no_current_context(tmp_path):
    path = write(
        tmp_path / "config", config(None, clusters=[("k", {"server": "https://k"})], contexts=[("c", {"cluster": "k"})])
    )
    with pytest.raises(KubeconfigError, match=r"no context given and .* set no current-context; available contexts: c"):
        flatten(kubeconfig=path)


def test_broken_yaml_names_the_file_and_line(tmp_path):
    path = tmp_path / "config"
    path.write_text("apiVersion: v1\nclusters:\n  - name: x\n    cluster: {server: [unclosed\n")
    with pytest.raises(KubeconfigError, match=rf"kubeconfig {path}: not valid YAML at line \d+, column \d+"):
        flatten(kubeconfig=path)


def test_wrong_shapes_name_the_file(tmp_path):
    path = tmp_path / "config"
    path.write_text("- just\n- a list\n")
    with pytest.raises(KubeconfigError, match=rf"kubeconfig {path}: expected a mapping"):
        flatten(kubeconfig=path)
    path.write_text("clusters: {a: b}\n")
    with pytest.raises(KubeconfigError, match=rf"kubeconfig {path}: 'clusters' must be a list"):
        flatten(kubeconfig=path)
    path.write_text("contexts:\n- context: {cluster: a}\n")
    with pytest.raises(KubeconfigError, match=r"contexts\[0\] has no name"):
        flatten(kubeconfig=path)


def test_missing_referenced_file(tmp_path):
    path = write(
        tmp_path / "config",
        config(
            "c",
            clusters=[("k", {"server": "https://k", "certificate-authority": "ca.pem"})],
            contexts=[("c", {"cluster": "k"})],
        ),
    )
    with pytest.raises(
        KubeconfigError, match=rf'kubeconfig {path}: cluster "k" certificate-authority {tmp_path}/ca.pem cannot be read'
    ):
        flatten(kubeconfig=path)


def test_dangling_references(tmp_path):
    path = write(tmp_path / "config", config("c", contexts=[("c", {"cluster": "k", "user": "u"})]))
    with pytest.raises(KubeconfigError, match=r'context "c" uses cluster "k", which .* do not define'):
        flatten(kubeconfig=path)
    path = write(
        tmp_path / "config",
        config("c", clusters=[("k", {"server": "https://k"})], contexts=[("c", {"cluster": "k", "user": "u"})]),
    )
    with pytest.raises(KubeconfigError, match=r'context "c" uses user "u", which'):
        flatten(kubeconfig=path)


def test_missing_files(tmp_path):
    with pytest.raises(KubeconfigError, match=rf"kubeconfig {tmp_path}/nope does not exist$"):
        flatten(kubeconfig=tmp_path / "nope")
    with pytest.raises(KubeconfigError, match=r"does not exist \(set KUBECONFIG or pass --kubeconfig"):
        flatten(environ={"HOME": str(tmp_path)})
    with pytest.raises(KubeconfigError, match="none of the files in KUBECONFIG exist"):
        flatten(environ={"KUBECONFIG": f"{tmp_path}/x:{tmp_path}/y"})


def test_empty_file_in_a_list_is_fine(two_files, tmp_path):
    a, _ = two_files
    empty = tmp_path / "empty"
    empty.write_text("")
    assert flatten(environ={"KUBECONFIG": f"{empty}:{a}"}).context == "lab"


def test_flatten_in_memory_text(tmp_path):
    ca = tmp_path / "ca.crt"
    ca.write_bytes(b"CA-ABS")
    text = yaml.safe_dump(
        config(
            "mem",
            clusters=[("mem", {"server": "https://mem:6443", "certificate-authority": str(ca)})],
            users=[("u", {"token": "tok-mem"})],
            contexts=[("mem", {"cluster": "mem", "user": "u", "namespace": "team"})],
        )
    )
    flat = flatten(text=text, environ={"KUBECONFIG": str(tmp_path / "nothing-here")})
    doc = yaml.safe_load(flat.text)
    assert (flat.context, flat.server, flat.namespace) == ("mem", "https://mem:6443", "team")
    assert doc["clusters"][0]["cluster"]["certificate-authority-data"] == b64(b"CA-ABS")
    assert doc["users"][0]["user"]["token"] == "tok-mem"
    assert [str(p) for p in flat.sources] == ["<kubeconfig text>"]


def test_flatten_in_memory_text_refuses_relative_files_and_paths_together(tmp_path):
    text = yaml.safe_dump(
        config(
            "mem",
            clusters=[("mem", {"server": "https://mem", "certificate-authority": "ca.crt"})],
            contexts=[("mem", {"cluster": "mem"})],
        )
    )
    with pytest.raises(KubeconfigError, match=r"certificate-authority ca\.crt must be an absolute path"):
        flatten(text=text)
    with pytest.raises(ValueError, match="not both"):
        flatten(text=text, kubeconfig=tmp_path / "config")


def test_yaml_errors_in_memory_do_not_quote_the_text():
    with pytest.raises(KubeconfigError) as caught:
        flatten(text="users:\n- name: u\n  user: {token: top-secret\n  bad: [")
    assert "top-secret" not in str(caught.value)
    assert "<kubeconfig text>: not valid YAML at line" in str(caught.value)
