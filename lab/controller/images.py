"""Which local program a container's image runs: the lab's stand-in for pulling and unpacking images. Pure.

A table maps image repositories (any registry prefix, any tag or digest) to an :class:`Image`: its
entrypoint, its default arguments, and the commands on its PATH. The container's ``command`` and ``args``
then act as they do with a container runtime: ``command`` replaces the entrypoint (its first word looked up
among the image's commands), ``args`` replaces the default arguments. An image the table lacks is one no
registry has: the kubelet reports ``ImagePullBackOff``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tether.lab.specs import AGENT_BOOT, MANAGER_BOOT, WORKLOADS_MODULE
from tether.lab.topology import AGENT_IMAGE, POD_TEMPLATES

#: The manager's image ships both programs (the agent runs from it as a sidecar).
MANAGER_REPOSITORY = "tether-manager"


@dataclass(frozen=True)
class Image:
    #: the entrypoint, with "{python}" standing for the lab's interpreter
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...] = ()
    #: programs on the image's PATH, for a container ``command``
    commands: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


class ImageError(ValueError):
    """The container cannot start from its image as asked; the text names what is missing."""


def _boot(code: str) -> tuple[str, ...]:
    return ("{python}", "-c", code)


def repository(image: str) -> str:
    """The image's repository path: without registry host, tag and digest ("ghcr.io/a/b:1" -> "a/b")."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name = name[:colon]
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        name = rest
    return name


_MANAGER = Image(
    entrypoint=_boot(MANAGER_BOOT),
    commands={"tether-manager": _boot(MANAGER_BOOT), "tether-agent": _boot(AGENT_BOOT)},
)
_WORKLOADS = Image(entrypoint=("{python}", "-m", WORKLOADS_MODULE))

#: repository (without registry and tag) -> image
TABLE: dict[str, Image] = {
    MANAGER_REPOSITORY: _MANAGER,
    repository(AGENT_IMAGE): _MANAGER,  # the agent image the lab's own objects name
    **{f"tether-lab/{t.app}": _WORKLOADS for t in POD_TEMPLATES if t.kind == "workload"},
}


def lookup(image: str) -> Image | None:
    """The image a reference names, or None when no registry would have it. The manager's image may live
    under any registry path (``ghcr.io/org/tether-manager:1.2``)."""
    repo = repository(image)
    found = TABLE.get(repo)
    if found is None and repo.rsplit("/", 1)[-1] == MANAGER_REPOSITORY:
        found = TABLE[MANAGER_REPOSITORY]
    return found


def container_argv(image: Image, container: Mapping[str, Any], python: str) -> list[str]:
    """The process a container runs, as a container runtime composes it from the image and the container."""
    command: Sequence[str] = container.get("command") or ()
    args: Sequence[str] = container.get("args") or ()
    if command:
        program = image.commands.get(command[0])
        if program is None:
            known = ", ".join(sorted(image.commands)) or "none"
            raise ImageError(f"executable {command[0]!r} not found in the image (it has: {known})")
        argv = [*program, *command[1:], *args]
    else:
        argv = [*image.entrypoint, *(args or image.cmd)]
    return [python if word == "{python}" else str(word) for word in argv]
