"""The pure parts of intercepts: the --port syntax, the environment files, the session's table, the manager's
table (conflicts name who and since when), the agent's options, and the injector's patches."""

from __future__ import annotations

import json
import subprocess

import pytest

from tether.helper.api import helper_pb2 as hpb
from tether.helper.api import intercepts
from tether.manager.agent.intercept import app_environment, parse_port_pairs
from tether.manager.agents import AgentError
from tether.manager.api import manager_pb2 as pb
from tether.manager.api import sidecar
from tether.manager.api.sidecar import SidecarConfig, Workload
from tether.manager.intercepts import InterceptConflictError, InterceptTable, UnknownInterceptError


@pytest.mark.parametrize(
    ("value", "local", "port"),
    [("", 0, ""), ("8080", 8080, ""), ("8080:80", 8080, "80"), ("3000:http", 3000, "http"), (":http", 0, "http")],
)
def test_port_spec(value: str, local: int, port: str) -> None:
    assert intercepts.parse_port(value) == intercepts.PortSpec(local, port)


@pytest.mark.parametrize(
    ("value", "named"),
    [("x", 'local port "x"'), ("0", 'local port "0"'), ("80:", 'nothing after ":"'), ("80:70000", '"70000"'),
     ("80:Http", 'port name "Http"')],
)  # fmt: skip
def test_bad_port_spec_is_named(value: str, named: str) -> None:
    with pytest.raises(intercepts.PortSpecError, match=named):
        intercepts.parse_port(value)


def test_env_file_reads_back_exactly_in_a_shell(tmp_path) -> None:
    environment = {"PLAIN": "v", "QUOTES": 'it\'s "q" $HOME `x`', "LINES": "a\nb", "EMPTY": "", "bad-name": "z"}
    path = tmp_path / "env"
    path.write_text(intercepts.env_file_text(environment))
    script = f"set -a; . {path}; " + "; ".join(
        f'printf "%s\\0" "${name}"' for name in ("PLAIN", "QUOTES", "LINES", "EMPTY")
    )
    out = subprocess.run(["sh", "-c", script], capture_output=True, check=True, env={}).stdout
    assert out.split(b"\0")[:-1] == [environment[n].encode() for n in ("PLAIN", "QUOTES", "LINES", "EMPTY")]
    assert "# 'bad-name' left out" in path.read_text()
    assert json.loads(intercepts.env_json_text(environment)) == environment


def test_session_table_dials_only_what_it_holds() -> None:
    table = intercepts.InterceptTable()
    table.put(hpb.InterceptState(namespace="default", workload="web", port=8080, local_port=3000, phase="active"))
    assert table.local_port("default", "web", 8080) == 3000
    assert table.local_port("default", "web", 9090) is None  # another port of the workload
    assert table.local_port("other", "web", 8080) is None
    table.get("default", "web").phase = intercepts.FAILED
    assert table.local_port("default", "web", 8080) is None
    assert [s.workload for s in table.clear()] == ["web"] and len(table) == 0


def test_describe_and_line_say_who_and_what() -> None:
    state = hpb.InterceptState(
        namespace="default", workload="web", service="web", service_port=80, port=8080, local_port=3000,
        client="bob@laptop", since_unix_ms=1_700_000_000_000, phase="active", ours=False,
    )  # fmt: skip
    assert intercepts.describe(state)["since"] == "2023-11-14T22:13:20+00:00"
    assert "intercepted by bob@laptop since 2023-11-14T22:13:20+00:00" in intercepts.line(state)


def spec(port: int = 8080, name: str = "web") -> pb.InterceptSpec:
    return pb.InterceptSpec(workload=pb.WorkloadRef(namespace="default", name=name, kind="Deployment"), port=port)


def test_manager_table_refuses_another_client_naming_who_and_since() -> None:
    table = InterceptTable(clock=lambda: 1_700_000_000.0)
    table.create(spec(), "s1", "alice@a")
    assert table.create(spec(), "s1", "alice@a")[1] is False  # the same client again: its own intercept
    with pytest.raises(InterceptConflictError, match="default/web port 8080 is already intercepted by alice@a since "
                       "2023-11-14 22:13:20 UTC"):  # fmt: skip
        table.create(spec(), "s2", "bob@b")
    table.create(spec(9090), "s2", "bob@b")  # another port is free
    assert [(p.port, p.intercepted_by) for p in table.ports_of("default", "web").ports] == [
        (8080, "alice@a"), (9090, "bob@b")
    ]  # fmt: skip
    with pytest.raises(UnknownInterceptError):
        table.remove(("default", "web", 8080), "s2")
    assert [i.describe() for i in table.drop_session("s1")] == ["default/web port 8080"]
    with pytest.raises(AgentError, match="port 0"):
        table.create(spec(0), "s1", "alice@a")


def test_agent_options() -> None:
    assert parse_port_pairs(["9900:8080", "9901:9090,", ""]) == ((9900, 8080), (9901, 9090))
    for bad in ("9900", "9900:9900", "a:1", "9900:8080,9900:7"):
        with pytest.raises(ValueError, match="--intercept-port"):
            parse_port_pairs([bad])
    environ = {"GREETING": "hi", "WEB_SERVICE_HOST": "10.0.0.1", "WEB_PORT_80_TCP": "tcp://x", "SECRET_OF_AGENT": "x"}
    assert app_environment(environ, '["GREETING"]') == {
        k: environ[k] for k in ("GREETING", "WEB_PORT_80_TCP", "WEB_SERVICE_HOST")
    }


def web(extra_env: list | None = None, sidecar_args: list | None = None) -> Workload:
    containers = [{"name": "app", "ports": [{"name": "http", "containerPort": 8080}, {"containerPort": 9900}],
                   "env": extra_env or []}]  # fmt: skip
    if sidecar_args is not None:
        containers.append({"name": sidecar.SIDECAR_NAME, "args": sidecar_args})
    template = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": containers}}
    return Workload(
        "Deployment", "default", "web", {"metadata": {"resourceVersion": "7"}, "spec": {"template": template}}
    )


def test_injector_takes_a_free_agent_port_once_and_copies_the_apps_env() -> None:
    workload = web(extra_env=[{"name": "GREETING", "value": "hi"}, {"name": "POD_NAME", "value": "clash"}])
    pairs = sidecar.with_intercept_port(workload, 8080)
    assert pairs == ((9901, 8080),)  # 9900 is a container port of the app
    patch = sidecar.intercept_patch(workload, SidecarConfig(), pairs)
    [container] = patch["spec"]["template"]["spec"]["containers"]
    assert container["args"][-2:] == ["--intercept-port", "9901:8080"]
    names = [e["name"] for e in container["env"]]
    assert names.count("POD_NAME") == 1 and "GREETING" in names
    assert {"name": "TETHER_APP_ENV", "value": '["GREETING"]'} in container["env"]
    injected = web(sidecar_args=container["args"])
    assert injected.intercept_ports == pairs and sidecar.with_intercept_port(injected, 8080) == pairs
    assert injected.container_port("http") == 8080 and injected.container_port("nope") is None


def test_service_target_port_is_pointed_at_the_agent_and_given_back() -> None:
    ports = [{"name": "http", "port": 80, "targetPort": "http"}]
    service = {
        "metadata": {"name": "web", "resourceVersion": "3"},
        "spec": {"selector": {"app": "web"}, "ports": ports},
    }
    assert sidecar.selects(service, web())
    patch = sidecar.target_port_patch(service, 80, 9901)
    assert patch is not None and patch["spec"]["ports"][0]["targetPort"] == 9901
    service["metadata"]["annotations"] = patch["metadata"]["annotations"]
    service["spec"]["ports"] = patch["spec"]["ports"]
    assert sidecar.original_target_ports(service) == {"80": "http"}
    assert sidecar.target_port_patch(service, 80, 9901) is None  # already there
    restore = sidecar.restore_target_ports_patch(service)
    assert restore is not None and restore["spec"]["ports"][0]["targetPort"] == "http"
    assert restore["metadata"]["annotations"] == {sidecar.INTERCEPT_ANNOTATION: None}
    assert sidecar.restore_target_ports_patch({"metadata": {}, "spec": {"ports": []}}) is None
