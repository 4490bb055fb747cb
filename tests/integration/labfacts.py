"""What the lab's network holds (the router's neighbours and kube-proxy table, the bridge's ports, each pod's
addresses, the controller's last log lines), for the message of a failed integration test."""

from __future__ import annotations

import subprocess

from tether.lab.topology import POD_NS_PREFIX, StatePaths


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    return f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}"


def network_facts() -> str:
    """The facts, as text; whatever cannot be read says so instead."""
    out = [
        _run("ip", "-n", "tether-lab-router", "neigh", "show"),
        _run("ip", "netns", "exec", "tether-lab-router", "nft", "list", "table", "ip", "tether_lab_kubeproxy"),
        _run("ip", "-n", "tether-lab-router", "-br", "link", "show", "master", "cbr0"),
    ]
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    for line in namespaces.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(POD_NS_PREFIX):
            out.append(_run("ip", "-n", name, "-br", "addr"))
    log = StatePaths().logs / "controller.log"
    try:
        out.append("controller.log (end):\n" + "\n".join(log.read_text().splitlines()[-40:]))
    except OSError as exc:
        out.append(f"controller.log: {exc}")
    return "\n".join(out)
