"""The traffic-manager's configuration, set the way a Helm chart sets it.

Sources, later overriding earlier: built-in defaults < the manager's ConfigMap
< environment variables. Keys are the chart's dotted value names
(``client.routing.alsoProxySubnets``); each has one environment variable
(``CLIENT_ROUTING_ALSO_PROXY_SUBNETS``).

:func:`load_config` is pure; :func:`read_configmap` is the only I/O here.
"""

from __future__ import annotations

import difflib
import enum
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import yaml

from .api.skew import MIN_CLIENT_API_LEVEL, Side
from .api.version import API_LEVEL, __version__
from .limits import (
    DEFAULT_FLOWS_PER_SESSION,
    DEFAULT_MAX_UDP_IDLE_TIMEOUT,
    DEFAULT_SESSIONS_PER_ADDRESS,
    ManagerLimits,
)
from .subnets import InvalidCIDR, IPNetwork, parse_cidr

__all__ = [
    "DEFAULT_CLUSTER_DOMAIN",
    "DEFAULT_EXCLUDE_SUFFIXES",
    "DEFAULT_TUNNEL_MUX_PORT",
    "ENV_VARS",
    "HELM_KEYS",
    "TEST_HOOK_KEYS",
    "VALUES_YAML_KEY",
    "ConfigError",
    "ManagerConfig",
    "PodCIDRStrategy",
    "load_config",
    "read_configmap",
]

log = logging.getLogger("tether.manager.config")

DEFAULT_CLUSTER_DOMAIN = "cluster.local"
# The manager pod's tunnel mux port (one TCP connection per client carrying all its flows); 0 turns it off.
DEFAULT_TUNNEL_MUX_PORT = 8082
# Names under these suffixes go to the workstation's own resolver unless an
# include-suffix says otherwise: a lookup of github.com must not depend on the cluster.
DEFAULT_EXCLUDE_SUFFIXES: tuple[str, ...] = (".com", ".io", ".net", ".org", ".ru")
# A ConfigMap key holding a nested Helm-style values document.
VALUES_YAML_KEY = "values.yaml"


class PodCIDRStrategy(enum.StrEnum):
    """How the manager finds the pod subnets (the chart's ``podCIDRStrategy``)."""

    AUTO = "auto"
    NODE_POD_CIDRS = "nodePodCIDRs"
    COVER_POD_IPS = "coverPodIPs"
    ENVIRONMENT = "environment"


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key, its source and the value."""

    def __init__(self, message: str, *, key: str = "", source: str = "") -> None:
        super().__init__(message)
        self.key = key
        self.source = source


@dataclass(frozen=True)
class ManagerConfig:
    """The manager's settings after defaults, ConfigMap and environment are merged and validated."""

    allow_conflicting_subnets: tuple[IPNetwork, ...] = ()
    also_proxy_subnets: tuple[IPNetwork, ...] = ()
    never_proxy_subnets: tuple[IPNetwork, ...] = ()
    # Normalized: lowercase with a leading dot (".example.com").
    dns_include_suffixes: tuple[str, ...] = ()
    dns_exclude_suffixes: tuple[str, ...] = DEFAULT_EXCLUDE_SUFFIXES
    pod_cidr_strategy: PodCIDRStrategy = PodCIDRStrategy.AUTO
    # Only used (and then required) with the "environment" strategy.
    pod_cidrs: tuple[IPNetwork, ...] = ()
    # Overrides service-CIDR discovery, because the API server's wording may change.
    service_cidr: IPNetwork | None = None
    # Lowercase, without leading or trailing dot; the RPC layer adds the root dot if it wants one.
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN
    # Where clients open the tunnel mux (advertised in VersionInfo); 0: no mux, flows use the gRPC Tunnel.
    tunnel_mux_port: int = DEFAULT_TUNNEL_MUX_PORT
    # Loopback, link-local or own-pod-IP destinations the manager may dial anyway (refused unless listed).
    tunnel_allow_destinations: tuple[IPNetwork, ...] = ()
    # What one client may hold at once (``limits``): flows per session, sessions per client address, and the
    # longest idle time of a UDP flow whatever the client asks.
    flows_per_session: int = DEFAULT_FLOWS_PER_SESSION
    sessions_per_address: int = DEFAULT_SESSIONS_PER_ADDRESS
    max_udp_idle_timeout: float = DEFAULT_MAX_UDP_IDLE_TIMEOUT
    # Test hooks (``testHooks.*``), for version-skew tests against one build: the version and API level the
    # manager reports instead of its own (empty / None: its own), and the oldest client API level it serves
    # (None: tether.manager.api.skew.MIN_CLIENT_API_LEVEL). Not for production: they lie to clients.
    report_version: str = ""
    report_api_level: int | None = None
    min_client_api_level: int | None = None
    # Helm key -> where its value came from ("default", "env X", "ConfigMap m key k"); for logs.
    sources: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), compare=False, repr=False)

    def limits(self) -> ManagerLimits:
        return ManagerLimits(
            flows_per_session=self.flows_per_session,
            sessions_per_address=self.sessions_per_address,
            max_udp_idle_timeout=self.max_udp_idle_timeout,
        )

    def identity(self) -> Side:
        """The version and API level the manager reports: its own, unless a test hook says otherwise."""
        level = API_LEVEL if self.report_api_level is None else self.report_api_level
        return Side(self.report_version or __version__, level)

    def min_client_level(self) -> int:
        return MIN_CLIENT_API_LEVEL if self.min_client_api_level is None else self.min_client_api_level


class _BadValue(Exception):
    """Raised by a value parser; the caller adds key and source to the message."""


# ---------------------------------------------------------------------------
# Value parsers. Each takes what a source gave (a string from env or a flat
# ConfigMap key; any YAML value from values.yaml) and returns the field value.
# ---------------------------------------------------------------------------


def _split_list(raw: Any) -> list[Any]:
    """A list from a YAML list, a JSON/YAML flow list ``[a, b]``, or ``a, b`` / ``a b``."""
    if raw is None:
        return []
    if isinstance(raw, list | tuple):
        return list(raw)
    if not isinstance(raw, str):
        raise _BadValue(f"expected a list, got {_show(raw)}")
    text = raw.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError:
                raise _BadValue(f"{_show(raw)} is neither a JSON/YAML list nor a comma-separated list") from None
        if not isinstance(value, list):
            raise _BadValue(f"expected a list, got {_show(raw)}")
        return value
    return [item for item in re.split(r"[,\s]+", text) if item]


def _show(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def _parse_cidr_list(raw: Any) -> tuple[IPNetwork, ...]:
    nets: list[IPNetwork] = []
    for item in _split_list(raw):
        if not isinstance(item, str):
            raise _BadValue(f"invalid CIDR {_show(item)}: expected a string like 10.0.0.0/16")
        try:
            net = parse_cidr(item, what="")
        except InvalidCIDR as exc:
            raise _BadValue(exc.detail) from None
        if net not in nets:
            nets.append(net)
    return tuple(nets)


def _parse_optional_cidr(raw: Any) -> IPNetwork | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if not isinstance(raw, str):
        raise _BadValue(f"invalid CIDR {_show(raw)}: expected a string like 10.96.0.0/12")
    try:
        return parse_cidr(raw, what="")
    except InvalidCIDR as exc:
        raise _BadValue(exc.detail) from None


_DNS_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")


def _dns_name_problem(name: str) -> str | None:
    """Why ``name`` (lowercase, no outer dots) is not a DNS name, or None if it is."""
    if not name:
        return "empty name"
    if len(name) > 253:
        return "longer than 253 characters"
    if not name.isascii():
        return "not ASCII (write internationalized names in their xn-- form)"
    for label in name.split("."):
        if not label:
            return "empty label (two dots in a row)"
        if len(label) > 63:
            return f'label "{label}" is longer than 63 characters'
        if not _DNS_LABEL.fullmatch(label):
            return f'label "{label}" may only hold letters, digits, "-" and "_", and not start or end with "-"'
    return None


def _parse_suffix_list(raw: Any) -> tuple[str, ...]:
    suffixes: list[str] = []
    for item in _split_list(raw):
        if not isinstance(item, str):
            raise _BadValue(f"invalid DNS suffix {_show(item)}: expected a string like .example.com")
        name = item.strip().lower().rstrip(".")
        name = name[1:] if name.startswith(".") else name
        problem = _dns_name_problem(name)
        if problem:
            raise _BadValue(f"invalid DNS suffix {_show(item)}: {problem}")
        suffix = "." + name
        if suffix not in suffixes:
            suffixes.append(suffix)
    return tuple(suffixes)


def _parse_strategy(raw: Any) -> PodCIDRStrategy:
    valid = ", ".join(s.value for s in PodCIDRStrategy)
    if isinstance(raw, str):
        wanted = raw.strip().lower()
        for strategy in PodCIDRStrategy:
            if strategy.value.lower() == wanted:
                return strategy
    raise _BadValue(f"unknown pod CIDR strategy {_show(raw)}; valid strategies: {valid}")


def _parse_domain(raw: Any) -> str:
    if not isinstance(raw, str):
        raise _BadValue(f"invalid cluster domain {_show(raw)}: expected a string like cluster.local")
    name = raw.strip().lower()
    name = name[:-1] if name.endswith(".") else name
    problem = "starts with a dot" if name.startswith(".") else _dns_name_problem(name)
    if problem:
        raise _BadValue(f"invalid cluster domain {_show(raw)}: {problem}")
    return name


def _parse_port(raw: Any) -> int:
    text = str(raw).strip() if isinstance(raw, str | int) and not isinstance(raw, bool) else ""
    if not (text.isascii() and text.isdigit()) or int(text) > 65535:  # "³".isdigit() is True
        raise _BadValue(f"invalid port {_show(raw)}: expected a number from 1 to 65535, or 0 for none")
    return int(text)


def _parse_count(raw: Any) -> int:
    text = str(raw).strip() if isinstance(raw, str | int) and not isinstance(raw, bool) else ""
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise _BadValue(f"invalid count {_show(raw)}: expected a whole number of at least 1")
    return int(text)


def _parse_seconds(raw: Any) -> float:
    try:
        value = float(raw) if isinstance(raw, str | int | float) and not isinstance(raw, bool) else float("nan")
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise _BadValue(f"invalid duration {_show(raw)}: expected a positive number of seconds")
    return value


def _parse_level(raw: Any) -> int:
    text = str(raw).strip() if isinstance(raw, str | int) and not isinstance(raw, bool) else ""
    if not (text.isascii() and text.isdigit()) or int(text) > 0xFFFFFFFF:
        raise _BadValue(f"invalid API level {_show(raw)}: expected a whole number from 0")
    return int(text)


_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}")


def _parse_version(raw: Any) -> str:
    text = str(raw).strip() if isinstance(raw, str | int | float) and not isinstance(raw, bool) else ""
    if not _VERSION.fullmatch(text):
        raise _BadValue(f"invalid version {_show(raw)}: expected something like 1.2.3 (letters, digits, . + _ -)")
    return text


@dataclass(frozen=True)
class _Key:
    helm: str
    env: str
    attr: str
    parse: Callable[[Any], Any]


_KEYS: tuple[_Key, ...] = (
    _Key(
        "client.routing.allowConflictingSubnets",
        "CLIENT_ROUTING_ALLOW_CONFLICTING_SUBNETS",
        "allow_conflicting_subnets",
        _parse_cidr_list,
    ),
    _Key(
        "client.routing.alsoProxySubnets", "CLIENT_ROUTING_ALSO_PROXY_SUBNETS", "also_proxy_subnets", _parse_cidr_list
    ),
    _Key(
        "client.routing.neverProxySubnets",
        "CLIENT_ROUTING_NEVER_PROXY_SUBNETS",
        "never_proxy_subnets",
        _parse_cidr_list,
    ),
    _Key("client.dns.includeSuffixes", "CLIENT_DNS_INCLUDE_SUFFIXES", "dns_include_suffixes", _parse_suffix_list),
    _Key("client.dns.excludeSuffixes", "CLIENT_DNS_EXCLUDE_SUFFIXES", "dns_exclude_suffixes", _parse_suffix_list),
    _Key("podCIDRStrategy", "POD_CIDR_STRATEGY", "pod_cidr_strategy", _parse_strategy),
    _Key("podCIDRs", "POD_CIDRS", "pod_cidrs", _parse_cidr_list),
    _Key("serviceCIDR", "SERVICE_CIDR", "service_cidr", _parse_optional_cidr),
    _Key("clusterDomain", "CLUSTER_DOMAIN", "cluster_domain", _parse_domain),
    _Key("tunnelMuxPort", "TUNNEL_MUX_PORT", "tunnel_mux_port", _parse_port),
    _Key("tunnel.allowDestinations", "TUNNEL_ALLOW_DESTINATIONS", "tunnel_allow_destinations", _parse_cidr_list),
    _Key("limits.flowsPerSession", "LIMITS_FLOWS_PER_SESSION", "flows_per_session", _parse_count),
    _Key("limits.sessionsPerAddress", "LIMITS_SESSIONS_PER_ADDRESS", "sessions_per_address", _parse_count),
    _Key("limits.udpIdleTimeoutMax", "LIMITS_UDP_IDLE_TIMEOUT_MAX", "max_udp_idle_timeout", _parse_seconds),
    _Key("testHooks.reportVersion", "TETHER_MANAGER_REPORT_VERSION", "report_version", _parse_version),
    _Key("testHooks.reportAPILevel", "TETHER_MANAGER_REPORT_API_LEVEL", "report_api_level", _parse_level),
    _Key("testHooks.minClientAPILevel", "TETHER_MANAGER_MIN_CLIENT_API_LEVEL", "min_client_api_level", _parse_level),
)
_BY_HELM = {k.helm: k for k in _KEYS}
HELM_KEYS: tuple[str, ...] = tuple(_BY_HELM)
#: Settings for tests only, which the Helm chart does not offer (a lab test writes them into the ConfigMap).
TEST_HOOK_KEYS: tuple[str, ...] = tuple(k for k in HELM_KEYS if k.startswith("testHooks."))
ENV_VARS: Mapping[str, str] = MappingProxyType({k.helm: k.env for k in _KEYS})


# ---------------------------------------------------------------------------
# ConfigMap layout: a values.yaml document and/or flat dotted keys.
# ---------------------------------------------------------------------------


def _configmap_source(configmap_name: str, data_key: str) -> str:
    return f"ConfigMap {configmap_name} key {data_key}"


def _flatten_values(doc: Any, source: str, unknown: list[str], prefix: str = "") -> dict[str, Any]:
    """Map a nested values document onto Helm keys, collecting keys we do not know."""
    if not isinstance(doc, Mapping):
        section = prefix.rstrip(".")
        where = section or "the document"
        raise ConfigError(f"{where} (from {source}): expected a mapping, got {_show(doc)}", key=section, source=source)
    found: dict[str, Any] = {}
    for raw_key, value in doc.items():
        path = f"{prefix}{raw_key}"
        if path in _BY_HELM:
            found[path] = value
        elif any(k.startswith(path + ".") for k in _BY_HELM):
            if value is None:
                continue  # an empty section ("client:" with nothing under it) sets nothing
            found.update(_flatten_values(value, source, unknown, path + "."))
        else:
            unknown.append(path)
    return found


def _unknown_keys_error(configmap_name: str, unknown: Iterable[str]) -> ConfigError:
    # Suggest sections too, so a typo in "client.routin" points at "client.routing".
    candidates = sorted({k.rsplit(".", i)[0] for k in HELM_KEYS for i in range(k.count(".") + 1)})
    parts = []
    for key in sorted(set(unknown)):
        close = difflib.get_close_matches(key, candidates, n=1)
        parts.append(f"{key} (did you mean {close[0]}?)" if close else key)
    return ConfigError(
        f"ConfigMap {configmap_name} has unknown keys: {', '.join(parts)}; valid keys: "
        f"{', '.join(HELM_KEYS)}, or a {VALUES_YAML_KEY} document holding them",
        source=f"ConfigMap {configmap_name}",
    )


def _yaml_problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def _configmap_values(data: Mapping[str, Any], configmap_name: str) -> dict[str, tuple[Any, str]]:
    """Helm key -> (raw value, source description) from a ConfigMap's ``data``."""
    values: dict[str, tuple[Any, str]] = {}
    unknown: list[str] = []
    if VALUES_YAML_KEY in data:
        source = _configmap_source(configmap_name, VALUES_YAML_KEY)
        text = data[VALUES_YAML_KEY]
        try:
            doc = yaml.safe_load(text) if text else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {_yaml_problem(exc)}", source=source) from None
        if doc is not None:
            for key, value in _flatten_values(doc, source, unknown).items():
                values[key] = (value, source)
    for data_key, value in data.items():
        if data_key == VALUES_YAML_KEY:
            continue
        if data_key not in _BY_HELM:
            unknown.append(data_key)
            continue
        source = _configmap_source(configmap_name, data_key)
        if data_key in values:
            # Two places in one ConfigMap disagreeing is a mistake; refuse rather than pick one.
            raise ConfigError(
                f"{data_key} is set both in {values[data_key][1]} and in {source}; keep one",
                key=data_key,
                source=source,
            )
        values[data_key] = (value, source)
    if unknown:
        raise _unknown_keys_error(configmap_name, unknown)
    return values


def _env_values(env: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    values: dict[str, tuple[Any, str]] = {}
    for key in _KEYS:
        raw = env.get(key.env)
        # Charts often render every variable, empty when unset; an empty value
        # therefore means "not set here". Write [] to clear a list explicitly.
        if raw is None or not raw.strip():
            continue
        values[key.helm] = (raw, f"env {key.env}")
    return values


def load_config(
    env: Mapping[str, str],
    configmap_data: Mapping[str, str] | None,
    *,
    configmap_name: str = "tether-manager",
) -> ManagerConfig:
    """Merge defaults, the ConfigMap's ``data`` and the environment into a validated config.

    Raises :class:`ConfigError` naming the key, where the value came from and
    the value itself. ``configmap_name`` is only used in messages.
    """
    layered: dict[str, tuple[Any, str]] = {}
    if configmap_data:
        layered.update(_configmap_values(configmap_data, configmap_name))
    layered.update(_env_values(env))

    fields: dict[str, Any] = {}
    sources = {key: "default" for key in HELM_KEYS}
    for helm_key, (raw, source) in layered.items():
        key = _BY_HELM[helm_key]
        try:
            fields[key.attr] = key.parse(raw)
        except _BadValue as exc:
            raise ConfigError(f"{helm_key} (from {source}): {exc}", key=helm_key, source=source) from None
        sources[helm_key] = source
    config = ManagerConfig(**fields, sources=MappingProxyType(sources))
    _check_combination(config)
    return config


def _check_combination(config: ManagerConfig) -> None:
    strategy_source = config.sources.get("podCIDRStrategy", "default")
    if config.pod_cidr_strategy is PodCIDRStrategy.ENVIRONMENT and not config.pod_cidrs:
        source = config.sources.get("podCIDRs", "default")
        state = "is not set" if source == "default" else f"(from {source}) is empty"
        raise ConfigError(
            f'podCIDRs {state}, but podCIDRStrategy is "environment" (from {strategy_source}), '
            "which needs at least one CIDR, e.g. podCIDRs: [10.244.0.0/16]",
            key="podCIDRs",
            source=source,
        )
    if config.pod_cidrs and config.pod_cidr_strategy is not PodCIDRStrategy.ENVIRONMENT:
        log.warning(
            "podCIDRs is ignored unless podCIDRStrategy is environment",
            extra={"pod_cidr_strategy": config.pod_cidr_strategy.value, "from": strategy_source},
        )


def read_configmap(core_v1_api: Any, namespace: str, name: str) -> dict[str, str] | None:
    """The ``data`` of ConfigMap ``namespace/name`` (empty dict if it has none), or None if it does not exist.

    ``core_v1_api`` is a ``kubernetes.client.CoreV1Api``. Other API errors propagate.
    """
    from kubernetes.client.exceptions import ApiException  # kept local: the pure part needs no client

    try:
        # Raw JSON rather than the V1ConfigMap model: only `data` matters, and
        # the strict model would refuse a response that lacks unrelated fields.
        response = core_v1_api.read_namespaced_config_map(name, namespace, _preload_content=False)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    try:
        body = json.loads(response.data)
    finally:
        response.release_conn()
    data = body.get("data") if isinstance(body, dict) else None
    return {str(k): str(v) for k, v in (data or {}).items()}
