"""Label and field selectors: the parsers, and lists filtered by them."""

import pytest
from apiserver_support import pod
from kubernetes.client import ApiException

from tether.lab.apiserver.selectors import parse_field_selector, parse_label_selector


def test_label_and_field_selectors_on_list(v1, ns):
    v1.create_namespaced_pod(ns, pod("a", labels={"app": "web", "tier": "front"}, node="n1"))
    v1.create_namespaced_pod(ns, pod("b", labels={"app": "web"}, phase="Pending"))
    v1.create_namespaced_pod(ns, pod("c", labels={"app": "db"}, node="n1"))

    def names(**kwargs):
        return sorted(p.metadata.name for p in v1.list_namespaced_pod(ns, **kwargs).items)

    assert names(label_selector="app=web") == ["a", "b"]
    assert names(label_selector="app=web,tier!=front") == ["b"]
    assert names(label_selector="tier") == ["a"]
    assert names(label_selector="!tier") == ["b", "c"]
    assert names(label_selector="app in (db, web),app notin (web)") == ["c"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="status.phase=Running") == ["a", "c"]
    assert names(field_selector="spec.nodeName=n1,metadata.name!=a") == ["c"]
    assert names(field_selector="spec.nodeName=") == ["b"]
    everywhere = v1.list_pod_for_all_namespaces(field_selector=f"metadata.namespace={ns}", label_selector="app=db")
    assert [p.metadata.name for p in everywhere.items] == ["c"]
    with pytest.raises(ApiException) as exc:
        v1.list_namespaced_pod(ns, label_selector="app in web")
    assert exc.value.status == 400


def test_selector_parsers():
    match = parse_label_selector("a=1, b!=2, c, !d, e in (x,y)")
    assert match({"a": "1", "c": "", "e": "y"})
    assert not match({"a": "1", "c": "", "e": "z"})
    assert not match({"a": "1", "b": "2", "c": "", "e": "x"})
    assert not match({"a": "1", "c": "", "d": "", "e": "x"})
    assert parse_field_selector("metadata.name==x")({"metadata": {"name": "x"}})
    assert not parse_field_selector("status.phase!=Running")({"status": {"phase": "Running"}})
    with pytest.raises(ValueError):
        parse_label_selector("a b")
