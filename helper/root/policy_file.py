"""Reading the admin's policy file (``/etc/tether/policy.toml``) into a ``policy.Policy``.

A missing file means the built-in defaults. A file that cannot be read or holds an unknown key or a
bad value is an error naming the file and the key: the admin meant something, and guessing could
loosen a limit they set. Example::

    min_prefix_v4 = 12
    min_prefix_v6 = 48
    never_route = ["192.168.50.0/24"]
    allow_conflicting_subnets = ["10.8.0.0/16"]
    allow_manager_address = false
"""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Any

from tether.helper.root.policy import Policy, PolicyError
from tether.helper.root.routing.table import IPNetwork

MAX_POLICY_BYTES = 64 * 1024


def load_policy(path: str | Path) -> Policy:
    """The policy in ``path``, or the defaults when there is no such file; PolicyError names what is wrong."""
    where = Path(path)
    try:
        raw = where.read_bytes()
    except FileNotFoundError:
        return Policy()
    except OSError as exc:
        raise PolicyError(f"cannot read the policy file {where}: {exc.strerror}") from None
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError(f"policy file {where}: {len(raw)} bytes, at most {MAX_POLICY_BYTES} are allowed")
    try:
        data = tomllib.loads(raw.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"policy file {where} is not valid TOML: {exc}") from None
    return parse_policy(data, str(where))


def parse_policy(data: dict[str, Any], source: str) -> Policy:
    known = {"min_prefix_v4", "min_prefix_v6", "never_route", "allow_conflicting_subnets", "allow_manager_address"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise PolicyError(f"policy file {source}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    defaults = Policy()
    return Policy(
        min_prefix_v4=_prefix(data, "min_prefix_v4", defaults.min_prefix_v4, 32, source),
        min_prefix_v6=_prefix(data, "min_prefix_v6", defaults.min_prefix_v6, 128, source),
        never_route=_networks(data, "never_route", source),
        allow_conflicting_subnets=_networks(data, "allow_conflicting_subnets", source),
        allow_manager_address=_flag(data, "allow_manager_address", source),
        source=source,
    )


def _prefix(data: dict[str, Any], key: str, default: int, most: int, source: str) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
        raise PolicyError(f"policy file {source}: {key} = {value!r} is not a prefix length between 0 and {most}")
    return value


def _networks(data: dict[str, Any], key: str, source: str) -> tuple[IPNetwork, ...]:
    values = data.get(key, [])
    if not isinstance(values, list):
        raise PolicyError(f"policy file {source}: {key} must be a list of CIDRs, got {values!r}")
    found = []
    for value in values:
        try:
            found.append(ipaddress.ip_network(value, strict=True))
        except (TypeError, ValueError):
            raise PolicyError(f"policy file {source}: {key}: {value!r} is not a CIDR (e.g. 10.0.0.0/8)") from None
    return tuple(found)


def _flag(data: dict[str, Any], key: str, source: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise PolicyError(f"policy file {source}: {key} = {value!r} must be true or false")
    return value
