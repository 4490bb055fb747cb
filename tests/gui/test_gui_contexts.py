"""The clusters the tray lists: kubeconfig contexts (honouring KUBECONFIG) and clusters added in the app."""

from __future__ import annotations

import os

from tether.gui.contexts import Cluster, Source, load_clusters


def kubeconfig(path, contexts, current=""):
    entries = "".join(f"- name: {name}\n  context: {{cluster: c}}\n" for name in contexts)
    path.write_text(
        (f"current-context: {current}\n" if current else "")
        + "clusters:\n- name: c\n  cluster: {server: 'https://c:6443'}\n"
        + (f"contexts:\n{entries}" if contexts else "")
    )
    return path


class Named:
    def __init__(self, name):
        self.name = name


def test_kubeconfig_list_joined_with_pathsep_first_current_context_wins(tmp_path):
    first = kubeconfig(tmp_path / "a", ["dev", "shared"], current="dev")
    second = kubeconfig(tmp_path / "b", ["prod", "shared"], current="prod")
    listed = os.pathsep.join([str(first), str(tmp_path / "missing"), str(second)])
    clusters = load_clusters(environ={"KUBECONFIG": listed}, added=None)
    assert clusters.clusters == (Cluster("dev", current=True), Cluster("shared"), Cluster("prod"))
    assert clusters.current == Cluster("dev", current=True)
    assert clusters.problems == ()


def test_explicit_kubeconfig_beats_the_environment_and_home_is_the_default(tmp_path):
    explicit = kubeconfig(tmp_path / "explicit", ["only"])
    other = kubeconfig(tmp_path / "other", ["ignored"])
    assert load_clusters(explicit, {"KUBECONFIG": str(other)}, added=None).names() == ["only"]
    (tmp_path / ".kube").mkdir()
    kubeconfig(tmp_path / ".kube" / "config", ["home"], current="home")
    assert load_clusters(None, {"HOME": str(tmp_path)}, added=None).names() == ["home"]


def test_a_broken_or_missing_kubeconfig_is_a_problem_naming_the_file(tmp_path):
    broken = tmp_path / "broken"
    broken.write_text("contexts: [ {name: x\n")
    clusters = load_clusters(broken, {}, added=lambda: [Named("edge")])
    assert clusters.names() == ["edge"], "added clusters still show"
    assert len(clusters.problems) == 1 and str(broken) in clusters.problems[0]
    assert "not valid YAML" in clusters.problems[0]
    missing = load_clusters(tmp_path / "nope", {}, added=None)
    assert missing.clusters == () and f"kubeconfig {tmp_path / 'nope'} does not exist" in missing.problems[0]


def test_added_clusters_follow_and_a_name_clash_is_reported(tmp_path):
    path = kubeconfig(tmp_path / "k", ["lab"], current="lab")
    clusters = load_clusters(path, {}, added=lambda: [Named("edge"), Named("lab")])
    assert clusters.clusters == (Cluster("lab", current=True), Cluster("edge", Source.ADDED))
    assert 'the added cluster "lab" has the same name as a kubeconfig context' in clusters.problems[0]


def test_a_bad_settings_file_is_a_problem_too(tmp_path):
    path = kubeconfig(tmp_path / "k", ["lab"])

    def unreadable():
        raise ValueError(f'settings file {tmp_path}/tray.json: "clusters": must be a list')

    clusters = load_clusters(path, {}, added=unreadable)
    assert clusters.names() == ["lab"]
    assert clusters.problems == (f'settings file {tmp_path}/tray.json: "clusters": must be a list',)


def test_the_default_added_clusters_come_from_the_settings_file(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    path = kubeconfig(tmp_path / "k", ["lab"])
    assert load_clusters(path, {}).names() == ["lab"], "no settings file: no added clusters, no problem"
    settings = tmp_path / "config" / "tether" / "tray.json"
    settings.parent.mkdir(parents=True)
    settings.write_text('{"clusters": 3}')
    clusters = load_clusters(path, {})
    assert clusters.names() == ["lab"] and str(settings) in clusters.problems[0]
