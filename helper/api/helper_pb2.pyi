from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VersionInfo(_message.Message):
    __slots__ = ("name", "version", "api_level")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    API_LEVEL_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    api_level: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., api_level: _Optional[int] = ...) -> None: ...

class ConnectRequest(_message.Message):
    __slots__ = ("kubeconfig", "context", "namespace", "manager_namespace", "manager_address", "also_proxy", "never_proxy", "allow_conflicting_subnets", "mapped_namespaces", "environment", "client_name", "proxy_via", "auto_resolve", "virtual_subnet", "dns_include_suffixes", "dns_exclude_suffixes", "proxy_environment", "dns_mode")
    class EnvironmentEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KUBECONFIG_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    MANAGER_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    MANAGER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ALSO_PROXY_FIELD_NUMBER: _ClassVar[int]
    NEVER_PROXY_FIELD_NUMBER: _ClassVar[int]
    ALLOW_CONFLICTING_SUBNETS_FIELD_NUMBER: _ClassVar[int]
    MAPPED_NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    CLIENT_NAME_FIELD_NUMBER: _ClassVar[int]
    PROXY_VIA_FIELD_NUMBER: _ClassVar[int]
    AUTO_RESOLVE_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_SUBNET_FIELD_NUMBER: _ClassVar[int]
    DNS_INCLUDE_SUFFIXES_FIELD_NUMBER: _ClassVar[int]
    DNS_EXCLUDE_SUFFIXES_FIELD_NUMBER: _ClassVar[int]
    PROXY_ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    DNS_MODE_FIELD_NUMBER: _ClassVar[int]
    kubeconfig: str
    context: str
    namespace: str
    manager_namespace: str
    manager_address: str
    also_proxy: _containers.RepeatedScalarFieldContainer[str]
    never_proxy: _containers.RepeatedScalarFieldContainer[str]
    allow_conflicting_subnets: _containers.RepeatedScalarFieldContainer[str]
    mapped_namespaces: _containers.RepeatedScalarFieldContainer[str]
    environment: _containers.ScalarMap[str, str]
    client_name: str
    proxy_via: _containers.RepeatedScalarFieldContainer[str]
    auto_resolve: bool
    virtual_subnet: str
    dns_include_suffixes: _containers.RepeatedScalarFieldContainer[str]
    dns_exclude_suffixes: _containers.RepeatedScalarFieldContainer[str]
    proxy_environment: ProxyEnvironment
    dns_mode: str
    def __init__(self, kubeconfig: _Optional[str] = ..., context: _Optional[str] = ..., namespace: _Optional[str] = ..., manager_namespace: _Optional[str] = ..., manager_address: _Optional[str] = ..., also_proxy: _Optional[_Iterable[str]] = ..., never_proxy: _Optional[_Iterable[str]] = ..., allow_conflicting_subnets: _Optional[_Iterable[str]] = ..., mapped_namespaces: _Optional[_Iterable[str]] = ..., environment: _Optional[_Mapping[str, str]] = ..., client_name: _Optional[str] = ..., proxy_via: _Optional[_Iterable[str]] = ..., auto_resolve: _Optional[bool] = ..., virtual_subnet: _Optional[str] = ..., dns_include_suffixes: _Optional[_Iterable[str]] = ..., dns_exclude_suffixes: _Optional[_Iterable[str]] = ..., proxy_environment: _Optional[_Union[ProxyEnvironment, _Mapping]] = ..., dns_mode: _Optional[str] = ...) -> None: ...

class ProxyEnvironment(_message.Message):
    __slots__ = ("https_proxy", "http_proxy", "no_proxy")
    HTTPS_PROXY_FIELD_NUMBER: _ClassVar[int]
    HTTP_PROXY_FIELD_NUMBER: _ClassVar[int]
    NO_PROXY_FIELD_NUMBER: _ClassVar[int]
    https_proxy: str
    http_proxy: str
    no_proxy: str
    def __init__(self, https_proxy: _Optional[str] = ..., http_proxy: _Optional[str] = ..., no_proxy: _Optional[str] = ...) -> None: ...

class ConnectProgress(_message.Message):
    __slots__ = ("step", "state")
    STEP_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    step: str
    state: State
    def __init__(self, step: _Optional[str] = ..., state: _Optional[_Union[State, _Mapping]] = ...) -> None: ...

class Subnet(_message.Message):
    __slots__ = ("cidr", "via")
    CIDR_FIELD_NUMBER: _ClassVar[int]
    VIA_FIELD_NUMBER: _ClassVar[int]
    cidr: str
    via: str
    def __init__(self, cidr: _Optional[str] = ..., via: _Optional[str] = ...) -> None: ...

class Conflict(_message.Message):
    __slots__ = ("subnet", "route", "device", "gateway", "description")
    SUBNET_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    subnet: str
    route: str
    device: str
    gateway: str
    description: str
    def __init__(self, subnet: _Optional[str] = ..., route: _Optional[str] = ..., device: _Optional[str] = ..., gateway: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class State(_message.Message):
    __slots__ = ("phase", "cluster", "server", "namespace", "manager_version", "routed_subnets", "dns_mode", "dns_server", "conflicts", "last_error", "tun_device", "owner_uid", "cluster_domain", "connected_since_unix", "never_proxy", "remapped", "virtual_subnet", "dns_include_suffixes", "dns_exclude_suffixes", "policy_notes", "manager_api_level", "client_version", "client_api_level", "dns_mode_reason", "dns_probes", "dns_mode_forced", "dns_recursion", "connect_recursion", "direct_subnets", "refused_sources", "intercepts", "intercept_error", "dns_crash_safety", "previous_session", "origin")
    class Phase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        DISCONNECTED: _ClassVar[State.Phase]
        CONNECTING: _ClassVar[State.Phase]
        CONNECTED: _ClassVar[State.Phase]
        ERROR: _ClassVar[State.Phase]
        RECONNECTING: _ClassVar[State.Phase]
    DISCONNECTED: State.Phase
    CONNECTING: State.Phase
    CONNECTED: State.Phase
    ERROR: State.Phase
    RECONNECTING: State.Phase
    PHASE_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    MANAGER_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROUTED_SUBNETS_FIELD_NUMBER: _ClassVar[int]
    DNS_MODE_FIELD_NUMBER: _ClassVar[int]
    DNS_SERVER_FIELD_NUMBER: _ClassVar[int]
    CONFLICTS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    TUN_DEVICE_FIELD_NUMBER: _ClassVar[int]
    OWNER_UID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_SINCE_UNIX_FIELD_NUMBER: _ClassVar[int]
    NEVER_PROXY_FIELD_NUMBER: _ClassVar[int]
    REMAPPED_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_SUBNET_FIELD_NUMBER: _ClassVar[int]
    DNS_INCLUDE_SUFFIXES_FIELD_NUMBER: _ClassVar[int]
    DNS_EXCLUDE_SUFFIXES_FIELD_NUMBER: _ClassVar[int]
    POLICY_NOTES_FIELD_NUMBER: _ClassVar[int]
    MANAGER_API_LEVEL_FIELD_NUMBER: _ClassVar[int]
    CLIENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    CLIENT_API_LEVEL_FIELD_NUMBER: _ClassVar[int]
    DNS_MODE_REASON_FIELD_NUMBER: _ClassVar[int]
    DNS_PROBES_FIELD_NUMBER: _ClassVar[int]
    DNS_MODE_FORCED_FIELD_NUMBER: _ClassVar[int]
    DNS_RECURSION_FIELD_NUMBER: _ClassVar[int]
    CONNECT_RECURSION_FIELD_NUMBER: _ClassVar[int]
    DIRECT_SUBNETS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_SOURCES_FIELD_NUMBER: _ClassVar[int]
    INTERCEPTS_FIELD_NUMBER: _ClassVar[int]
    INTERCEPT_ERROR_FIELD_NUMBER: _ClassVar[int]
    DNS_CRASH_SAFETY_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_SESSION_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    phase: State.Phase
    cluster: str
    server: str
    namespace: str
    manager_version: str
    routed_subnets: _containers.RepeatedCompositeFieldContainer[Subnet]
    dns_mode: str
    dns_server: str
    conflicts: _containers.RepeatedCompositeFieldContainer[Conflict]
    last_error: str
    tun_device: str
    owner_uid: int
    cluster_domain: str
    connected_since_unix: int
    never_proxy: _containers.RepeatedScalarFieldContainer[str]
    remapped: _containers.RepeatedCompositeFieldContainer[Remap]
    virtual_subnet: str
    dns_include_suffixes: _containers.RepeatedScalarFieldContainer[str]
    dns_exclude_suffixes: _containers.RepeatedScalarFieldContainer[str]
    policy_notes: _containers.RepeatedScalarFieldContainer[str]
    manager_api_level: int
    client_version: str
    client_api_level: int
    dns_mode_reason: str
    dns_probes: _containers.RepeatedScalarFieldContainer[str]
    dns_mode_forced: bool
    dns_recursion: str
    connect_recursion: str
    direct_subnets: _containers.RepeatedScalarFieldContainer[str]
    refused_sources: _containers.RepeatedScalarFieldContainer[str]
    intercepts: _containers.RepeatedCompositeFieldContainer[InterceptState]
    intercept_error: str
    dns_crash_safety: str
    previous_session: str
    origin: str
    def __init__(self, phase: _Optional[_Union[State.Phase, str]] = ..., cluster: _Optional[str] = ..., server: _Optional[str] = ..., namespace: _Optional[str] = ..., manager_version: _Optional[str] = ..., routed_subnets: _Optional[_Iterable[_Union[Subnet, _Mapping]]] = ..., dns_mode: _Optional[str] = ..., dns_server: _Optional[str] = ..., conflicts: _Optional[_Iterable[_Union[Conflict, _Mapping]]] = ..., last_error: _Optional[str] = ..., tun_device: _Optional[str] = ..., owner_uid: _Optional[int] = ..., cluster_domain: _Optional[str] = ..., connected_since_unix: _Optional[int] = ..., never_proxy: _Optional[_Iterable[str]] = ..., remapped: _Optional[_Iterable[_Union[Remap, _Mapping]]] = ..., virtual_subnet: _Optional[str] = ..., dns_include_suffixes: _Optional[_Iterable[str]] = ..., dns_exclude_suffixes: _Optional[_Iterable[str]] = ..., policy_notes: _Optional[_Iterable[str]] = ..., manager_api_level: _Optional[int] = ..., client_version: _Optional[str] = ..., client_api_level: _Optional[int] = ..., dns_mode_reason: _Optional[str] = ..., dns_probes: _Optional[_Iterable[str]] = ..., dns_mode_forced: _Optional[bool] = ..., dns_recursion: _Optional[str] = ..., connect_recursion: _Optional[str] = ..., direct_subnets: _Optional[_Iterable[str]] = ..., refused_sources: _Optional[_Iterable[str]] = ..., intercepts: _Optional[_Iterable[_Union[InterceptState, _Mapping]]] = ..., intercept_error: _Optional[str] = ..., dns_crash_safety: _Optional[str] = ..., previous_session: _Optional[str] = ..., origin: _Optional[str] = ...) -> None: ...

class InterceptRequest(_message.Message):
    __slots__ = ("name", "namespace", "local_port", "port", "service", "mount")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    LOCAL_PORT_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    MOUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    namespace: str
    local_port: int
    port: str
    service: str
    mount: str
    def __init__(self, name: _Optional[str] = ..., namespace: _Optional[str] = ..., local_port: _Optional[int] = ..., port: _Optional[str] = ..., service: _Optional[str] = ..., mount: _Optional[str] = ...) -> None: ...

class InterceptState(_message.Message):
    __slots__ = ("namespace", "workload", "kind", "service", "service_port", "port_name", "port", "local_port", "client", "since_unix_ms", "phase", "error", "agents_intercepting", "agents_live", "ours", "mount", "mount_error")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_PORT_FIELD_NUMBER: _ClassVar[int]
    PORT_NAME_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    LOCAL_PORT_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    SINCE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    AGENTS_INTERCEPTING_FIELD_NUMBER: _ClassVar[int]
    AGENTS_LIVE_FIELD_NUMBER: _ClassVar[int]
    OURS_FIELD_NUMBER: _ClassVar[int]
    MOUNT_FIELD_NUMBER: _ClassVar[int]
    MOUNT_ERROR_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    workload: str
    kind: str
    service: str
    service_port: int
    port_name: str
    port: int
    local_port: int
    client: str
    since_unix_ms: int
    phase: str
    error: str
    agents_intercepting: int
    agents_live: int
    ours: bool
    mount: str
    mount_error: str
    def __init__(self, namespace: _Optional[str] = ..., workload: _Optional[str] = ..., kind: _Optional[str] = ..., service: _Optional[str] = ..., service_port: _Optional[int] = ..., port_name: _Optional[str] = ..., port: _Optional[int] = ..., local_port: _Optional[int] = ..., client: _Optional[str] = ..., since_unix_ms: _Optional[int] = ..., phase: _Optional[str] = ..., error: _Optional[str] = ..., agents_intercepting: _Optional[int] = ..., agents_live: _Optional[int] = ..., ours: _Optional[bool] = ..., mount: _Optional[str] = ..., mount_error: _Optional[str] = ...) -> None: ...

class InterceptReply(_message.Message):
    __slots__ = ("intercept", "environment")
    class EnvironmentEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    INTERCEPT_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    intercept: InterceptState
    environment: _containers.ScalarMap[str, str]
    def __init__(self, intercept: _Optional[_Union[InterceptState, _Mapping]] = ..., environment: _Optional[_Mapping[str, str]] = ...) -> None: ...

class LeaveRequest(_message.Message):
    __slots__ = ("name", "namespace")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    name: str
    namespace: str
    def __init__(self, name: _Optional[str] = ..., namespace: _Optional[str] = ...) -> None: ...

class ListWorkloadsRequest(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ...) -> None: ...

class WorkloadInfo(_message.Message):
    __slots__ = ("namespace", "name", "kind", "agent", "intercepts")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    INTERCEPTS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    kind: str
    agent: bool
    intercepts: _containers.RepeatedCompositeFieldContainer[InterceptState]
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ..., kind: _Optional[str] = ..., agent: _Optional[bool] = ..., intercepts: _Optional[_Iterable[_Union[InterceptState, _Mapping]]] = ...) -> None: ...

class WorkloadList(_message.Message):
    __slots__ = ("workloads",)
    WORKLOADS_FIELD_NUMBER: _ClassVar[int]
    workloads: _containers.RepeatedCompositeFieldContainer[WorkloadInfo]
    def __init__(self, workloads: _Optional[_Iterable[_Union[WorkloadInfo, _Mapping]]] = ...) -> None: ...

class UninstallAgentsRequest(_message.Message):
    __slots__ = ("names", "namespace", "all")
    NAMES_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    namespace: str
    all: bool
    def __init__(self, names: _Optional[_Iterable[str]] = ..., namespace: _Optional[str] = ..., all: _Optional[bool] = ...) -> None: ...

class UninstallAgentsReply(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, removed: _Optional[_Iterable[str]] = ...) -> None: ...

class Remap(_message.Message):
    __slots__ = ("subnet", "workload", "reason")
    SUBNET_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    subnet: str
    workload: str
    reason: str
    def __init__(self, subnet: _Optional[str] = ..., workload: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
