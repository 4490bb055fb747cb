"""The intercepts' volume mounts: what --mount asks for, a failed mount kept on an intercept that holds, and
how the CLI and `tether status` say where the volumes are or why they are not."""

from __future__ import annotations

import asyncio

from tether.helper.api import helper_pb2 as pb
from tether.helper.api import intercepts
from tether.helper.root.intercept.pod_volumes import PodVolumes, mount_target
from tether.helper.root.intercept.service import InterceptService
from tether.helper.root.intercept.volumes import VolumesNotMounted
from tether.helper.root.volumes.sshfs import Owner
from tether.manager.api.sidecar import SidecarConfig

STATE = pb.InterceptState(namespace="default", workload="web", kind="Deployment", port=8080, ours=True)


class NoStreams:
    """An opener that must not be used (the mount is refused before any stream)."""

    def open_via(self, *args: object) -> None:
        raise AssertionError("no stream expected")


def test_mount_target_reads_false_as_none_and_empty_as_a_temporary_directory():
    assert mount_target("false") is None
    assert mount_target("FALSE") is None
    assert mount_target("") == ""
    assert mount_target("/tmp/x") == "/tmp/x"


def test_no_mount_asked_mounts_nothing():
    volumes = PodVolumes(NoStreams(), Owner(1000, 1000), lambda: None)  # type: ignore[arg-type]
    assert asyncio.run(volumes.mount(STATE, "false")) == ""
    asyncio.run(volumes.unmount(STATE))  # nothing mounted: nothing to do


def test_an_unusable_mount_point_is_refused_naming_it():
    volumes = PodVolumes(NoStreams(), Owner(1000, 1000), lambda: None)  # type: ignore[arg-type]
    try:
        asyncio.run(volumes.mount(STATE, "relative/dir"))
    except VolumesNotMounted as exc:
        assert "relative/dir" in str(exc)
    else:
        raise AssertionError("a relative mount point was accepted")


class Failing:
    async def mount(self, intercept: pb.InterceptState, mount: str) -> str:
        raise VolumesNotMounted("the agent of default/web cannot reach its SFTP service")

    async def unmount(self, intercept: pb.InterceptState) -> None:
        return None


class Mounting:
    async def mount(self, intercept: pb.InterceptState, mount: str) -> str:
        return mount or "/tmp/tether-volumes-x"

    async def unmount(self, intercept: pb.InterceptState) -> None:
        return None


def _service(volumes: object) -> InterceptService:
    return InterceptService(None, None, SidecarConfig(), "default", "me@here", lambda: None, volumes=volumes)  # type: ignore[arg-type]


def test_a_failed_mount_leaves_the_intercept_with_the_reason():
    state = pb.InterceptState()
    state.CopyFrom(STATE)
    asyncio.run(_service(Failing())._mount(state, "/mnt/web"))
    assert state.mount == ""
    assert state.mount_error == "the agent of default/web cannot reach its SFTP service"
    assert intercepts.describe(state)["mount_error"] == state.mount_error
    assert "volumes not mounted: the agent of default/web" in intercepts.line(state)
    assert intercepts.volumes_line(state, "/mnt/web").startswith("volumes not mounted: the agent of default/web")


def test_a_mount_shows_where_in_the_cli_and_the_status():
    state = pb.InterceptState()
    state.CopyFrom(STATE)
    asyncio.run(_service(Mounting())._mount(state, "/mnt/web"))
    assert (state.mount, state.mount_error) == ("/mnt/web", "")
    assert intercepts.describe(state)["mount"] == "/mnt/web"
    assert intercepts.line(state).endswith("; volumes at /mnt/web")
    assert intercepts.volumes_line(state, "/mnt/web") == "volumes mounted at /mnt/web"
    assert intercepts.volumes_line(pb.InterceptState(), "false") == "volumes: not mounted (--mount false)"
