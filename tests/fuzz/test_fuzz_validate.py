"""ConnectRequests with mutated fields against the helper's request validation (helper/api/validate.py).

A request is either accepted, and then what the session reads from it parses (subnets, the manager's
address), or refused with a ValidationError whose message names the field; never another exception.
"""

from __future__ import annotations

import ipaddress
import random

from fuzz_harness import nasty, run

from tether.helper.api import helper_pb2 as pb
from tether.helper.api import validate

KUBECONFIG = "apiVersion: v1\nkind: Config\n"
# Digits that str.isdigit() takes and int() refuses, or that int() takes though they are no ASCII digit.
ODD_DIGITS = ("\u00b3", "\u00b2", "\u0663", "\u0966", "\U0001d7e0", "\u2177", "\uff11")
CIDR_SHAPES = (
    "10.0.0.0/8", "10.1.2.3/16", "::/0", "0.0.0.0/0", "fd00::/8", "1.2.3.4/33", "1.2.3.4", "10.0.0.0/",
    "/8", "10.0.0.0/08", " 10.0.0.0/8", "10.0.0.0/8 ", "10.0.0.0/+8", "10.0.0.0/-1", "256.0.0.0/8",
    "::ffff:1.2.3.4/128",
)  # fmt: skip


def _odd(rng: random.Random, text: str) -> str:
    """``text`` with one character replaced or inserted: an odd digit, or anything nasty."""
    position = rng.randint(0, len(text))
    extra = rng.choice(ODD_DIGITS) if rng.random() < 0.5 else nasty(rng, 3)
    return text[:position] + extra + text[position + rng.randint(0, 1) :]


def _value(rng: random.Random, valid: str) -> str:
    roll = rng.random()
    if roll < 0.3:
        return valid
    if roll < 0.7:
        return _odd(rng, valid)
    if roll < 0.8:
        return valid * rng.randint(2, 80)  # too long
    return nasty(rng, 20)


def _cidrs(rng: random.Random) -> list[str]:
    return [_value(rng, rng.choice(CIDR_SHAPES)) for _ in range(rng.choice((0, 0, 1, 3)))]


def _request(rng: random.Random) -> pb.ConnectRequest:
    port = rng.choice(("8081", "1", "65535", "0", "65536", "08081", *ODD_DIGITS, "8\u00b3", "\u0668\u0660"))
    host = rng.choice(("tether-manager.tether", "10.0.0.1", "[fd00::1]", "fd00::1", "[::1", "a..b", "-x", ""))
    request = pb.ConnectRequest(
        kubeconfig=_value(rng, KUBECONFIG) if rng.random() < 0.9 else rng.choice(("", " \n")),
        context=_value(rng, "kind-lab"),
        namespace=_value(rng, "default"),
        manager_namespace=_value(rng, "tether"),
        manager_address=_value(rng, f"{host}:{port}") if rng.random() < 0.8 else "",
        client_name=_value(rng, "tether-cli"),
        virtual_subnet=_value(rng, rng.choice(CIDR_SHAPES)) if rng.random() < 0.3 else "",
        auto_resolve=rng.random() < 0.5,
    )
    request.also_proxy.extend(_cidrs(rng))
    request.never_proxy.extend(_cidrs(rng))
    request.allow_conflicting_subnets.extend(_cidrs(rng))
    workloads = ("web", "default/web", "a/b/c", "", "Web")
    request.proxy_via.extend(
        _value(rng, f"{rng.choice((*CIDR_SHAPES, 'all', 'service', 'ALSO'))}={rng.choice(workloads)}")
        for _ in range(rng.choice((0, 0, 1, 2)))
    )
    request.mapped_namespaces.extend(_value(rng, "default") for _ in range(rng.choice((0, 1, 2))))
    request.dns_include_suffixes.extend(_value(rng, ".corp.example") for _ in range(rng.choice((0, 1, 2))))
    request.dns_exclude_suffixes.extend(_value(rng, "local") for _ in range(rng.choice((0, 1))))
    for _ in range(rng.choice((0, 1, 3))):
        name = _value(rng, "HOME")
        request.environment[name] = _value(rng, "/home/dev")
    return request


def _one(rng: random.Random) -> None:
    request = _request(rng)
    try:
        validate.connect_request(request)
    except validate.ValidationError as exc:
        assert str(exc), "a refusal without a message"
        return
    # Accepted: what the session and planner read from it must parse as they read it.
    for value in (*request.also_proxy, *request.never_proxy, *request.allow_conflicting_subnets):
        ipaddress.ip_network(value)
    if request.virtual_subnet:
        ipaddress.ip_network(request.virtual_subnet)
    if request.manager_address:
        host, port = validate.manager_address(request.manager_address)
        assert host and 1 <= port <= 65535
        assert request.manager_address.rpartition(":")[2].isascii(), request.manager_address


def test_connect_requests():
    run("validate: ConnectRequest", _one, cases=4000)
