"""Where the pod's volumes go: re-rooted for the agent by the injector, and made real in the lab's container
views (bind mounts in each container's mount namespace, paths rewritten to the view)."""

from pathlib import Path

import pytest

from tether.lab.controller.podspec import Bind, launch_argv, processes
from tether.manager.api.sidecar import (
    SIDECAR_NAME,
    TOKEN_VOLUME,
    SidecarConfig,
    Workload,
    inject_patch,
    sidecar_container,
    token_volume,
)
from tether.manager.api.volumes import VolumeMountError, agent_volume_mounts, reroot

APP = {
    "name": "app",
    "image": "tether-lab/web:latest",
    "args": ["http", "--port", "8080", "--write-file", "/data/out.txt"],
    "volumeMounts": [
        {"name": "data", "mountPath": "/data"},
        {"name": "conf", "mountPath": "/etc/app/", "readOnly": True, "subPath": "app"},
    ],
}


def test_mount_paths_are_rerooted_under_the_agents_volumes_directory():
    assert reroot("/data") == "/tether/volumes/data"
    assert reroot("/etc/app/") == "/tether/volumes/etc/app"
    for bad in ("data", "/", "/a/../b", ""):
        with pytest.raises(VolumeMountError, match=f'"{bad}"'):
            reroot(bad)


def test_the_agent_gets_every_app_mount_once_keeping_subpath_and_readonly_but_not_its_own():
    agent = {"name": SIDECAR_NAME, "volumeMounts": [{"name": TOKEN_VOLUME, "mountPath": "/var/run/secrets/tether"}]}
    other = {
        "name": "sidecar",
        "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "x", "mountPath": "/x"}],
    }
    mounts = agent_volume_mounts([APP, agent, other], skip_volumes=[TOKEN_VOLUME], skip_containers=[SIDECAR_NAME])
    assert mounts == [
        {"name": "data", "mountPath": "/tether/volumes/data"},
        {"name": "conf", "mountPath": "/tether/volumes/etc/app", "subPath": "app", "readOnly": True},
        {"name": "x", "mountPath": "/tether/volumes/x"},
    ]


def _deployment(containers):
    template = {"spec": {"containers": containers, "volumes": [{"name": "data", "emptyDir": {}}]}}
    return Workload(
        "Deployment", "default", "web", {"metadata": {"resourceVersion": "7"}, "spec": {"template": template}}
    )


def test_injection_gives_the_sidecar_the_apps_volumes_and_is_idempotent_with_them():
    config = SidecarConfig(image="tether-manager:1", manager="m:8081")
    patch = inject_patch(_deployment([APP]), config)
    [sidecar] = patch["spec"]["template"]["spec"]["containers"]
    paths = [m["mountPath"] for m in sidecar["volumeMounts"]]
    assert paths == ["/var/run/secrets/tether", "/tether/volumes/data", "/tether/volumes/etc/app"]
    assert sidecar["args"][sidecar["args"].index("--volumes") + 1] == "/tether/volumes"
    # the template as the patch leaves it needs no second patch
    injected = _deployment([APP, sidecar])
    injected.obj["spec"]["template"]["metadata"] = patch["spec"]["template"]["metadata"]
    injected.obj["spec"]["template"]["spec"]["volumes"].append(token_volume(config))
    assert injected.has_sidecar(config)
    # an app that mounts another volume later needs the sidecar brought up to date
    app2 = {**APP, "volumeMounts": [*APP["volumeMounts"], {"name": "cache", "mountPath": "/cache"}]}
    assert not _deployment([app2, sidecar]).has_sidecar(config)


def _pod(containers):
    return {
        "metadata": {"name": "web-0", "namespace": "default", "uid": "u"},
        "spec": {"nodeName": "n", "containers": containers},
        "status": {"podIP": "10.244.1.11"},
    }


def test_lab_containers_see_their_volumes_in_a_view_of_their_own():
    agent = sidecar_container("Deployment", "web", SidecarConfig(image="tether-manager:1", manager="m:8081"),
                              volume_mounts=agent_volume_mounts([APP]))  # fmt: skip
    volumes = {"data": Path("/st/vol/data"), "conf": Path("/st/vol/conf"), TOKEN_VOLUME: Path("/st/vol/tok")}
    app_proc, agent_proc = processes(_pod([APP, agent]), "/py", "10.0.0.1", volumes, {}, Path("/st/views"))
    # the app's /data is its view's /data, where the volume is bound
    assert "/st/views/app/data/out.txt" in app_proc.argv
    assert app_proc.binds == (
        Bind("/st/vol/data", "/st/views/app/data"),
        Bind("/st/vol/conf/app", "/st/views/app/etc/app", read_only=True),
    )
    # the agent's --volumes names a directory that holds mounts: the view has it, with both volumes inside
    args = list(agent_proc.argv)
    assert args[args.index("--volumes") + 1] == "/st/views/tether-agent/tether/volumes"
    assert {b.target for b in agent_proc.binds} == {
        "/st/views/tether-agent/var/run/secrets/tether",
        "/st/views/tether-agent/tether/volumes/data",
        "/st/views/tether-agent/tether/volumes/etc/app",
    }
    # a path outside every mount and not leading to one is left alone
    assert args[args.index("--manager") + 1] == "m:8081"


def test_a_process_with_binds_mounts_them_then_execs_its_argv():
    argv = launch_argv(processes(_pod([APP]), "/py", "", {"data": Path("/v d"), "conf": Path("/c")}, {}, Path("/w"))[0])
    assert argv[:2] == ["sh", "-c"]
    script = argv[2]
    assert script.startswith("mount --bind '/v d' /w/app/data && mount --bind /c/app /w/app/etc/app && ")
    assert "mount -o remount,bind,ro /w/app/etc/app" in script and script.endswith('exec "$@"')
    assert argv[3:6] == ["sh", "/py", "-m"]
    # without views (or mounts) nothing is wrapped, and paths go to the volume directories as before
    [plain] = processes(_pod([APP]), "/py", "", {"data": Path("/v")}, {})
    assert launch_argv(plain) == list(plain.argv) and "/v/out.txt" in plain.argv
