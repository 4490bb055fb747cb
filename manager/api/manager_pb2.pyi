from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Protocol(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROTOCOL_UNSPECIFIED: _ClassVar[Protocol]
    TCP: _ClassVar[Protocol]
    UDP: _ClassVar[Protocol]
PROTOCOL_UNSPECIFIED: Protocol
TCP: Protocol
UDP: Protocol

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VersionInfo(_message.Message):
    __slots__ = ("name", "version", "api_level", "tunnel_mux_port", "min_client_api_level")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    API_LEVEL_FIELD_NUMBER: _ClassVar[int]
    TUNNEL_MUX_PORT_FIELD_NUMBER: _ClassVar[int]
    MIN_CLIENT_API_LEVEL_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    api_level: int
    tunnel_mux_port: int
    min_client_api_level: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., api_level: _Optional[int] = ..., tunnel_mux_port: _Optional[int] = ..., min_client_api_level: _Optional[int] = ...) -> None: ...

class ClientInfo(_message.Message):
    __slots__ = ("name", "namespace", "version", "api_level")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    API_LEVEL_FIELD_NUMBER: _ClassVar[int]
    name: str
    namespace: str
    version: str
    api_level: int
    def __init__(self, name: _Optional[str] = ..., namespace: _Optional[str] = ..., version: _Optional[str] = ..., api_level: _Optional[int] = ...) -> None: ...

class SessionInfo(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class RemainRequest(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: SessionInfo
    def __init__(self, session: _Optional[_Union[SessionInfo, _Mapping]] = ...) -> None: ...

class Subnet(_message.Message):
    __slots__ = ("ip", "prefix_len")
    IP_FIELD_NUMBER: _ClassVar[int]
    PREFIX_LEN_FIELD_NUMBER: _ClassVar[int]
    ip: bytes
    prefix_len: int
    def __init__(self, ip: _Optional[bytes] = ..., prefix_len: _Optional[int] = ...) -> None: ...

class DNSConfig(_message.Message):
    __slots__ = ("cluster_domain", "include_suffixes", "exclude_suffixes")
    CLUSTER_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SUFFIXES_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_SUFFIXES_FIELD_NUMBER: _ClassVar[int]
    cluster_domain: str
    include_suffixes: _containers.RepeatedScalarFieldContainer[str]
    exclude_suffixes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, cluster_domain: _Optional[str] = ..., include_suffixes: _Optional[_Iterable[str]] = ..., exclude_suffixes: _Optional[_Iterable[str]] = ...) -> None: ...

class RoutingConfig(_message.Message):
    __slots__ = ("also_proxy_subnets", "never_proxy_subnets", "allow_conflicting_subnets")
    ALSO_PROXY_SUBNETS_FIELD_NUMBER: _ClassVar[int]
    NEVER_PROXY_SUBNETS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_CONFLICTING_SUBNETS_FIELD_NUMBER: _ClassVar[int]
    also_proxy_subnets: _containers.RepeatedCompositeFieldContainer[Subnet]
    never_proxy_subnets: _containers.RepeatedCompositeFieldContainer[Subnet]
    allow_conflicting_subnets: _containers.RepeatedCompositeFieldContainer[Subnet]
    def __init__(self, also_proxy_subnets: _Optional[_Iterable[_Union[Subnet, _Mapping]]] = ..., never_proxy_subnets: _Optional[_Iterable[_Union[Subnet, _Mapping]]] = ..., allow_conflicting_subnets: _Optional[_Iterable[_Union[Subnet, _Mapping]]] = ...) -> None: ...

class ClusterInfo(_message.Message):
    __slots__ = ("service_subnet", "pod_subnets", "manager_pod_ip", "manager_port", "dns", "routing", "service_subnets", "agent_sidecar")
    SERVICE_SUBNET_FIELD_NUMBER: _ClassVar[int]
    POD_SUBNETS_FIELD_NUMBER: _ClassVar[int]
    MANAGER_POD_IP_FIELD_NUMBER: _ClassVar[int]
    MANAGER_PORT_FIELD_NUMBER: _ClassVar[int]
    DNS_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    SERVICE_SUBNETS_FIELD_NUMBER: _ClassVar[int]
    AGENT_SIDECAR_FIELD_NUMBER: _ClassVar[int]
    service_subnet: Subnet
    pod_subnets: _containers.RepeatedCompositeFieldContainer[Subnet]
    manager_pod_ip: bytes
    manager_port: int
    dns: DNSConfig
    routing: RoutingConfig
    service_subnets: _containers.RepeatedCompositeFieldContainer[Subnet]
    agent_sidecar: AgentSidecar
    def __init__(self, service_subnet: _Optional[_Union[Subnet, _Mapping]] = ..., pod_subnets: _Optional[_Iterable[_Union[Subnet, _Mapping]]] = ..., manager_pod_ip: _Optional[bytes] = ..., manager_port: _Optional[int] = ..., dns: _Optional[_Union[DNSConfig, _Mapping]] = ..., routing: _Optional[_Union[RoutingConfig, _Mapping]] = ..., service_subnets: _Optional[_Iterable[_Union[Subnet, _Mapping]]] = ..., agent_sidecar: _Optional[_Union[AgentSidecar, _Mapping]] = ...) -> None: ...

class AgentSidecar(_message.Message):
    __slots__ = ("image", "manager_address")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MANAGER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    image: str
    manager_address: str
    def __init__(self, image: _Optional[str] = ..., manager_address: _Optional[str] = ...) -> None: ...

class DNSRequest(_message.Message):
    __slots__ = ("session_id", "name", "qtype", "via")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    QTYPE_FIELD_NUMBER: _ClassVar[int]
    VIA_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    name: str
    qtype: int
    via: WorkloadRef
    def __init__(self, session_id: _Optional[str] = ..., name: _Optional[str] = ..., qtype: _Optional[int] = ..., via: _Optional[_Union[WorkloadRef, _Mapping]] = ...) -> None: ...

class DNSResponse(_message.Message):
    __slots__ = ("rcode", "answers")
    RCODE_FIELD_NUMBER: _ClassVar[int]
    ANSWERS_FIELD_NUMBER: _ClassVar[int]
    rcode: int
    answers: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, rcode: _Optional[int] = ..., answers: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("ip", "port")
    IP_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    ip: bytes
    port: int
    def __init__(self, ip: _Optional[bytes] = ..., port: _Optional[int] = ...) -> None: ...

class TunnelOpen(_message.Message):
    __slots__ = ("session_id", "protocol", "destination", "source", "dial_timeout_ms", "idle_timeout_ms", "via")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DIAL_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    VIA_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    protocol: Protocol
    destination: Endpoint
    source: Endpoint
    dial_timeout_ms: int
    idle_timeout_ms: int
    via: WorkloadRef
    def __init__(self, session_id: _Optional[str] = ..., protocol: _Optional[_Union[Protocol, str]] = ..., destination: _Optional[_Union[Endpoint, _Mapping]] = ..., source: _Optional[_Union[Endpoint, _Mapping]] = ..., dial_timeout_ms: _Optional[int] = ..., idle_timeout_ms: _Optional[int] = ..., via: _Optional[_Union[WorkloadRef, _Mapping]] = ...) -> None: ...

class WorkloadRef(_message.Message):
    __slots__ = ("namespace", "name", "kind")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    kind: str
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ..., kind: _Optional[str] = ...) -> None: ...

class DialResult(_message.Message):
    __slots__ = ("ok", "error", "reason")
    class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        NONE: _ClassVar[DialResult.Reason]
        REFUSED: _ClassVar[DialResult.Reason]
        UNREACHABLE: _ClassVar[DialResult.Reason]
        TIMEOUT: _ClassVar[DialResult.Reason]
        INVALID: _ClassVar[DialResult.Reason]
    NONE: DialResult.Reason
    REFUSED: DialResult.Reason
    UNREACHABLE: DialResult.Reason
    TIMEOUT: DialResult.Reason
    INVALID: DialResult.Reason
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    error: str
    reason: DialResult.Reason
    def __init__(self, ok: _Optional[bool] = ..., error: _Optional[str] = ..., reason: _Optional[_Union[DialResult.Reason, str]] = ...) -> None: ...

class TunnelMessage(_message.Message):
    __slots__ = ("open", "data", "dial", "eof", "abort", "agent_flow", "intercepted")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    DIAL_FIELD_NUMBER: _ClassVar[int]
    EOF_FIELD_NUMBER: _ClassVar[int]
    ABORT_FIELD_NUMBER: _ClassVar[int]
    AGENT_FLOW_FIELD_NUMBER: _ClassVar[int]
    INTERCEPTED_FIELD_NUMBER: _ClassVar[int]
    open: TunnelOpen
    data: bytes
    dial: DialResult
    eof: Empty
    abort: str
    agent_flow: AgentFlow
    intercepted: InterceptedFlow
    def __init__(self, open: _Optional[_Union[TunnelOpen, _Mapping]] = ..., data: _Optional[bytes] = ..., dial: _Optional[_Union[DialResult, _Mapping]] = ..., eof: _Optional[_Union[Empty, _Mapping]] = ..., abort: _Optional[str] = ..., agent_flow: _Optional[_Union[AgentFlow, _Mapping]] = ..., intercepted: _Optional[_Union[InterceptedFlow, _Mapping]] = ...) -> None: ...

class InterceptedFlow(_message.Message):
    __slots__ = ("agent_id", "port", "source")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    port: int
    source: Endpoint
    def __init__(self, agent_id: _Optional[str] = ..., port: _Optional[int] = ..., source: _Optional[_Union[Endpoint, _Mapping]] = ...) -> None: ...

class InterceptSpec(_message.Message):
    __slots__ = ("workload", "port", "service", "service_port", "port_name", "local_port")
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_PORT_FIELD_NUMBER: _ClassVar[int]
    PORT_NAME_FIELD_NUMBER: _ClassVar[int]
    LOCAL_PORT_FIELD_NUMBER: _ClassVar[int]
    workload: WorkloadRef
    port: int
    service: str
    service_port: int
    port_name: str
    local_port: int
    def __init__(self, workload: _Optional[_Union[WorkloadRef, _Mapping]] = ..., port: _Optional[int] = ..., service: _Optional[str] = ..., service_port: _Optional[int] = ..., port_name: _Optional[str] = ..., local_port: _Optional[int] = ...) -> None: ...

class InterceptRequest(_message.Message):
    __slots__ = ("session_id", "spec")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    spec: InterceptSpec
    def __init__(self, session_id: _Optional[str] = ..., spec: _Optional[_Union[InterceptSpec, _Mapping]] = ...) -> None: ...

class InterceptInfo(_message.Message):
    __slots__ = ("spec", "client", "since_unix_ms", "agents_intercepting", "agents_live", "environment")
    class EnvironmentEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    SINCE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    AGENTS_INTERCEPTING_FIELD_NUMBER: _ClassVar[int]
    AGENTS_LIVE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    spec: InterceptSpec
    client: str
    since_unix_ms: int
    agents_intercepting: int
    agents_live: int
    environment: _containers.ScalarMap[str, str]
    def __init__(self, spec: _Optional[_Union[InterceptSpec, _Mapping]] = ..., client: _Optional[str] = ..., since_unix_ms: _Optional[int] = ..., agents_intercepting: _Optional[int] = ..., agents_live: _Optional[int] = ..., environment: _Optional[_Mapping[str, str]] = ...) -> None: ...

class InterceptList(_message.Message):
    __slots__ = ("intercepts", "agents")
    INTERCEPTS_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    intercepts: _containers.RepeatedCompositeFieldContainer[InterceptInfo]
    agents: _containers.RepeatedCompositeFieldContainer[AgentReport]
    def __init__(self, intercepts: _Optional[_Iterable[_Union[InterceptInfo, _Mapping]]] = ..., agents: _Optional[_Iterable[_Union[AgentReport, _Mapping]]] = ...) -> None: ...

class PortState(_message.Message):
    __slots__ = ("port", "agent_port", "intercepted_by")
    PORT_FIELD_NUMBER: _ClassVar[int]
    AGENT_PORT_FIELD_NUMBER: _ClassVar[int]
    INTERCEPTED_BY_FIELD_NUMBER: _ClassVar[int]
    port: int
    agent_port: int
    intercepted_by: str
    def __init__(self, port: _Optional[int] = ..., agent_port: _Optional[int] = ..., intercepted_by: _Optional[str] = ...) -> None: ...

class AgentReport(_message.Message):
    __slots__ = ("agent_id", "ports", "environment", "workload", "pod_name")
    class EnvironmentEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    POD_NAME_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    ports: _containers.RepeatedCompositeFieldContainer[PortState]
    environment: _containers.ScalarMap[str, str]
    workload: WorkloadRef
    pod_name: str
    def __init__(self, agent_id: _Optional[str] = ..., ports: _Optional[_Iterable[_Union[PortState, _Mapping]]] = ..., environment: _Optional[_Mapping[str, str]] = ..., workload: _Optional[_Union[WorkloadRef, _Mapping]] = ..., pod_name: _Optional[str] = ...) -> None: ...

class AgentInfo(_message.Message):
    __slots__ = ("workload", "pod_name", "pod_ip", "version")
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    POD_NAME_FIELD_NUMBER: _ClassVar[int]
    POD_IP_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    workload: WorkloadRef
    pod_name: str
    pod_ip: bytes
    version: str
    def __init__(self, workload: _Optional[_Union[WorkloadRef, _Mapping]] = ..., pod_name: _Optional[str] = ..., pod_ip: _Optional[bytes] = ..., version: _Optional[str] = ...) -> None: ...

class AgentSession(_message.Message):
    __slots__ = ("agent_id",)
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    def __init__(self, agent_id: _Optional[str] = ...) -> None: ...

class DialRequest(_message.Message):
    __slots__ = ("flow_id", "open", "intercepts", "dns")
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    OPEN_FIELD_NUMBER: _ClassVar[int]
    INTERCEPTS_FIELD_NUMBER: _ClassVar[int]
    DNS_FIELD_NUMBER: _ClassVar[int]
    flow_id: str
    open: TunnelOpen
    intercepts: AgentIntercepts
    dns: DNSRequest
    def __init__(self, flow_id: _Optional[str] = ..., open: _Optional[_Union[TunnelOpen, _Mapping]] = ..., intercepts: _Optional[_Union[AgentIntercepts, _Mapping]] = ..., dns: _Optional[_Union[DNSRequest, _Mapping]] = ...) -> None: ...

class AgentDNSAnswer(_message.Message):
    __slots__ = ("agent_id", "flow_id", "response", "error")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    flow_id: str
    response: DNSResponse
    error: str
    def __init__(self, agent_id: _Optional[str] = ..., flow_id: _Optional[str] = ..., response: _Optional[_Union[DNSResponse, _Mapping]] = ..., error: _Optional[str] = ...) -> None: ...

class AgentIntercepts(_message.Message):
    __slots__ = ("ports",)
    PORTS_FIELD_NUMBER: _ClassVar[int]
    ports: _containers.RepeatedCompositeFieldContainer[PortState]
    def __init__(self, ports: _Optional[_Iterable[_Union[PortState, _Mapping]]] = ...) -> None: ...

class AgentFlow(_message.Message):
    __slots__ = ("agent_id", "flow_id")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    flow_id: str
    def __init__(self, agent_id: _Optional[str] = ..., flow_id: _Optional[str] = ...) -> None: ...
