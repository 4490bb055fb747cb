"""The router's filter between the workstation and the cluster, and NAT towards the "internet". Pure.

From the workstation link (`ws0`) the router accepts only TCP to the API server and traffic to the
"internet" namespace (the upstream DNS server and a web host); everything else from or to the
workstation is rejected at once (so a leak shows up as a refusal, never as a success).
Traffic leaving for the internet is masqueraded, as a node would.
"""

from __future__ import annotations

from tether.lab.topology import API_IP, API_PORT, ROUTER_INET_IF, ROUTER_WS_IF

TABLE = "tether_lab_filter"


def ruleset() -> str:
    ws, inet = ROUTER_WS_IF, ROUTER_INET_IF
    lines = [
        f"table inet {TABLE} {{}}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
        "\tchain input {",
        "\t\ttype filter hook input priority filter; policy accept;",
        f'\t\tiifname "{ws}" ct state established,related accept',
        f'\t\tiifname "{ws}" ip daddr {API_IP} tcp dport {API_PORT} accept',
        f'\t\tiifname "{ws}" meta l4proto tcp reject with tcp reset',
        f'\t\tiifname "{ws}" reject with icmpx type admin-prohibited',
        "\t}",
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter; policy accept;",
        "\t\tct state established,related accept",
        f'\t\tiifname "{ws}" oifname "{inet}" accept',
        f'\t\tiifname "{ws}" reject with icmpx type admin-prohibited',
        f'\t\toifname "{ws}" reject with icmpx type admin-prohibited',
        "\t}",
        "\tchain postrouting {",
        "\t\ttype nat hook postrouting priority srcnat; policy accept;",
        f'\t\toifname "{inet}" masquerade',
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"
