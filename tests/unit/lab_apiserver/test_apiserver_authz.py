"""Who may do what in the emulator: the users file read into an Authorizer, admins, and its refusals."""

import json

import pytest
from kmock import KubernetesError

from tether.lab.apiserver import authz
from tether.lab.apiserver.kinds import DEPLOYMENTS, PODS

DOCUMENT = {
    "users": [
        {"name": "root", "token": "root-token", "admin": True},
        {"name": "alice", "token": "alice-token", "allowed": ["get deployments", "create pods/portforward"]},
    ]
}


def status_of(authorizer: authz.Authorizer, header: str, verb: str, kind=DEPLOYMENTS, sub=None) -> int:
    try:
        authorizer.check(header, verb, kind, "default", "web", sub)
    except KubernetesError as exc:
        return exc.status
    return 200


def test_the_document_gives_each_token_its_users_rights():
    authorizer = authz.from_document(DOCUMENT)
    assert status_of(authorizer, "", "delete") == 200  # no token: the lab's admin, as before
    assert status_of(authorizer, "Bearer root-token", "delete") == 200  # an admin user
    assert status_of(authorizer, "Bearer alice-token", "get") == 200
    assert status_of(authorizer, "Bearer alice-token", "create", PODS, "portforward") == 200
    assert status_of(authorizer, "Bearer alice-token", "patch") == 403
    assert status_of(authorizer, "Bearer alice-token", "create", PODS) == 403
    assert status_of(authorizer, "Bearer nobody", "get") == 401


def test_a_refusal_names_the_user_verb_resource_and_namespace():
    with pytest.raises(KubernetesError) as refused:
        authz.from_document(DOCUMENT).check("Bearer alice-token", "patch", DEPLOYMENTS, "default", "web", None)
    assert refused.value.message == (
        'deployments.apps "web" is forbidden: User "alice" cannot patch resource "deployments" '
        'in API group "apps" in the namespace "default"'
    )


@pytest.mark.parametrize(
    "document, named",
    [
        ([], 'must hold {"users": [...]}'),
        ({"users": [{"name": "a"}]}, "users[0]: needs a non-empty name and token"),
        ({"users": [{"name": "a", "token": "t", "allowed": ["get"]}]}, 'users[0] ("a"): allowed must be'),
        ({"users": [{"name": "a", "token": "t", "allowed": "get pods"}]}, 'users[0] ("a"): allowed must be'),
        ({"users": [{"name": "a", "token": "t"}, {"name": "b", "token": "t"}]}, 'users[1] ("b"): the name or'),
        ({"users": [{"name": "a", "token": "t"}, {"name": "a", "token": "u"}]}, 'users[1] ("a"): the name or'),
    ],
)
def test_a_bad_document_is_refused_naming_the_entry(document, named):
    with pytest.raises(ValueError) as refused:
        authz.from_document(document)
    assert named in str(refused.value)


def test_load_names_the_file(tmp_path):
    path = tmp_path / "users.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=f"{path}: not JSON"):
        authz.load(path)
    path.write_text(json.dumps({"users": [{"token": "t"}]}))
    with pytest.raises(ValueError, match=f"{path}: users\\[0\\]"):
        authz.load(path)
    path.write_text(json.dumps(DOCUMENT))
    assert authz.load(path) == authz.from_document(DOCUMENT)
