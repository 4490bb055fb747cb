"""The image table: references to local programs, and a container's command and args as a runtime composes them."""

import pytest

from tether.lab.controller.images import ImageError, container_argv, lookup, repository


@pytest.mark.parametrize(
    ("image", "repo"),
    [
        ("tether-manager", "tether-manager"),
        ("tether-manager:0.1.0", "tether-manager"),
        ("ghcr.io/acme/tether-manager:1.2@sha256:abc", "acme/tether-manager"),
        ("localhost:5000/tether-lab/web:latest", "tether-lab/web"),
        ("tether-lab/echo", "tether-lab/echo"),
    ],
)
def test_repository_drops_registry_tag_and_digest(image, repo):
    assert repository(image) == repo


def test_the_manager_image_is_found_under_any_registry_path_and_tag():
    for image in ("tether-manager:0.1.0", "ghcr.io/acme/tether-manager:9", "tether-lab/tether-agent:latest"):
        found = lookup(image)
        assert found is not None and set(found.commands) == {"tether-manager", "tether-agent"}
    assert lookup("tether-lab/web:latest") is not None
    for unknown in ("nginx:1.27", "tether-managerx:1", "acme/web:latest", "tether-lab/nosuch:latest"):
        assert lookup(unknown) is None, unknown


def test_command_replaces_the_entrypoint_and_args_the_default_arguments():
    manager = lookup("tether-manager:1")
    default = container_argv(manager, {}, "/py")
    assert default[:2] == ["/py", "-c"] and "tether.manager.main" in default[2] and default[3:] == []
    agent = container_argv(manager, {"command": ["tether-agent"], "args": ["--manager", "m:8081"]}, "/py")
    assert "tether.manager.agent.main" in agent[2] and agent[3:] == ["--manager", "m:8081"]
    web = container_argv(lookup("tether-lab/web"), {"args": ["http", "--port", "8080"]}, "/py")
    assert web == ["/py", "-m", "tether.lab.workloads", "http", "--port", "8080"]


def test_a_command_the_image_lacks_is_an_error_naming_it():
    with pytest.raises(ImageError, match="'sh' not found in the image"):
        container_argv(lookup("tether-manager"), {"command": ["sh", "-c", "true"]}, "/py")
