"""Which network namespace the emulator's port-forward enters: the lab's netns:// container IDs."""

from tether.lab.apiserver.podnet import pod_netns


def test_the_netns_comes_from_a_lab_container_id():
    pod = {"status": {"containerStatuses": [{"containerID": "netns://tether-lab-tether-manager-0/manager"}]}}
    assert pod_netns(pod) == "tether-lab-tether-manager-0"


def test_pods_without_a_lab_container_id_have_none():
    assert pod_netns({"status": {"containerStatuses": [{"containerID": "containerd://abc"}]}}) is None
    assert pod_netns({"status": {}}) is None
    assert pod_netns({}) is None
