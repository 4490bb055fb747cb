"""Discovery and /version, as the official client reads them."""

from kubernetes import client


def test_version_via_official_client(api_client):
    info = client.VersionApi(api_client).get_code()  # GET /version/
    assert info.major == "1"
    assert info.git_version.startswith("v1.")
    assert info.platform and info.go_version and info.build_date


def test_discovery(api_client):
    assert client.CoreApi(api_client).get_api_versions().versions == ["v1"]
    core = {r.name: r for r in client.CoreV1Api(api_client).get_api_resources().resources}
    assert core["pods"].kind == "Pod" and core["pods"].namespaced is True
    assert core["nodes"].namespaced is False
    assert {"pods/portforward", "services", "configmaps", "endpoints", "namespaces"} <= set(core)
    assert "apps" in [g.name for g in client.ApisApi(api_client).get_api_versions().groups]
    apps = {r.name: r for r in client.AppsV1Api(api_client).get_api_resources().resources}
    assert apps["deployments"].kind == "Deployment"
    assert client.AppsApi(api_client).get_api_group().preferred_version.group_version == "apps/v1"
