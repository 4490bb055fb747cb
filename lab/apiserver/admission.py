"""Admission the way kube-apiserver does it where it matters to the lab: each object's type and name
checked, defaults filled in per kind, validation refused as 422 Invalid, and a last check that the strict
official models can read what is stored."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable

from tether.lab.apiserver.allocation import Network, assign_cluster_ip, assign_node_ports
from tether.lab.apiserver.errors import FieldError, bad_request, brief, invalid
from tether.lab.apiserver.kinds import Kind, Obj

_NAME_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NAME_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_NAME_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def check_type(kind: Kind, obj: Obj) -> None:
    """Fill in an object's apiVersion and kind, or refuse (400) ones that are not the URL's."""
    for field, expected in (("apiVersion", kind.api_version), ("kind", kind.kind)):
        if obj.get(field) in (None, ""):
            obj[field] = expected
        elif obj[field] != expected:
            raise bad_request(
                f"the {field} of the object ({obj[field]}) does not match the expected {field} ({expected})"
            )


def check_name(kind: Kind, name: str) -> None:
    """Refuse (422) a name the kind does not allow, as kube-apiserver words it."""
    if not name:
        raise invalid(kind, name, [FieldError.required("metadata.name", "name or generateName is required")])
    if kind.kind == "Service":
        ok, rule = bool(_NAME_1035.match(name)) and len(name) <= 63, "a DNS-1035 label"
    elif kind.kind == "Namespace":
        ok, rule = bool(_NAME_LABEL.match(name)) and len(name) <= 63, "a lowercase RFC 1123 label"
    else:
        ok, rule = bool(_NAME_SUBDOMAIN.match(name)) and len(name) <= 253, "a lowercase RFC 1123 subdomain"
    if not ok:
        raise invalid(kind, name, [FieldError.invalid("metadata.name", name, f"must be {rule}")])


@dataclasses.dataclass(frozen=True)
class Admission:
    """One cluster's admission: its service range and node port range, and the Services it already stores."""

    service_cidr: Network
    node_port_range: tuple[int, int]
    services: Callable[[], list[Obj]]  # every stored Service, asked for only when a Service is admitted

    def admit(self, kind: Kind, obj: Obj, old: Obj | None) -> None:
        """Fill defaults and validate ``obj`` (``old`` is the stored state on updates); raises 422."""
        for section in ("spec", "status"):  # the per-kind rules below may then rely on dicts
            if obj.get(section) is None:
                obj.pop(section, None)
            elif not isinstance(obj[section], dict):
                raise invalid(
                    kind,
                    obj["metadata"]["name"],
                    [FieldError.invalid(section, brief(obj[section]), "must be an object")],
                )
        errors: list[FieldError] = []
        admit = {
            "Namespace": _admit_namespace,
            "Pod": _admit_pod,
            "Service": self._admit_service,
            "Deployment": _admit_deployment,
            "EndpointSlice": _admit_endpoint_slice,
        }.get(kind.kind)
        if admit is not None:
            admit(obj, old, errors)
        if not errors:
            errors = check_model(kind, obj)
        if errors:
            raise invalid(kind, obj["metadata"]["name"], errors)

    def _admit_service(self, obj: Obj, old: Obj | None, errors: list[FieldError]) -> None:
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        obj.setdefault("status", {"loadBalancer": {}})
        ports = [port for port in spec.get("ports") or [] if isinstance(port, dict)]  # the model check sees the rest
        for port in ports:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
        types = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
        if spec["type"] not in types:
            supported = ", ".join(f'"{t}"' for t in types)
            errors.append(
                FieldError(
                    "spec.type",
                    f"Unsupported value: {json.dumps(spec['type'])}: supported values: {supported}",
                    "FieldValueNotSupported",
                )
            )
            return
        if spec["type"] == "ExternalName":
            return
        others = [svc for svc in self.services() if old is None or svc["metadata"]["uid"] != old["metadata"]["uid"]]
        assign_cluster_ip(spec, old, others, self.service_cidr, errors)
        if not ports and spec.get("clusterIP") != "None":
            errors.append(FieldError.required("spec.ports"))
        if spec["type"] in ("NodePort", "LoadBalancer"):
            assign_node_ports(ports, old, others, self.node_port_range, errors)


def check_model(kind: Kind, obj: Obj) -> list[FieldError]:
    """What the official client's model for ``kind`` finds wrong with ``obj``."""
    # The client validates every response strictly; refuse to store what it cannot read.
    try:
        kind.model().from_dict(obj)
    except ValueError as e:  # pydantic.ValidationError
        details = e.errors() if hasattr(e, "errors") else [{"loc": (), "msg": str(e)}]
        title = getattr(e, "title", kind.kind)
        return [
            FieldError.invalid(".".join([title, *map(str, d.get("loc", ()))]), brief(d.get("input")), d["msg"])
            for d in details
        ]
    return []


def _admit_namespace(obj: Obj, old: Obj | None, errors: list[FieldError]) -> None:
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    obj.setdefault("status", {}).setdefault("phase", "Active")


def _admit_pod(obj: Obj, old: Obj | None, errors: list[FieldError]) -> None:
    containers = obj.get("spec", {}).get("containers")
    if not containers:
        errors.append(FieldError.required("spec.containers"))
    for i, container in enumerate(containers if isinstance(containers, list) else []):
        if isinstance(container, dict) and not container.get("image"):
            errors.append(FieldError.required(f"spec.containers[{i}].image"))
    # The lab runs the pods itself and creates them with their status; keep it, but complete it.
    status = obj.setdefault("status", {})
    status.setdefault("phase", "Pending")
    for single, plural in (("podIP", "podIPs"), ("hostIP", "hostIPs")):
        ip = status.get(single)
        listed = status.get(plural)
        if ip and not (isinstance(listed, list) and listed and listed[0] == {"ip": ip}):
            status[plural] = [{"ip": ip}]


def _admit_deployment(obj: Obj, old: Obj | None, errors: list[FieldError]) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if not spec.get("selector"):
        errors.append(FieldError.required("spec.selector"))
    elif any(labels.get(k) != v for k, v in selector.items()):
        errors.append(
            FieldError.invalid("spec.template.metadata.labels", labels, "`selector` does not match template `labels`")
        )


_ADDRESS_TYPES = ("FQDN", "IPv4", "IPv6")


def _admit_endpoint_slice(obj: Obj, old: Obj | None, errors: list[FieldError]) -> None:
    address_type = obj.get("addressType")
    if address_type is None:
        errors.append(FieldError.required("addressType"))
    elif address_type not in _ADDRESS_TYPES:
        supported = ", ".join(f'"{t}"' for t in _ADDRESS_TYPES)
        errors.append(
            FieldError(
                "addressType",
                f"Unsupported value: {json.dumps(address_type)}: supported values: {supported}",
                "FieldValueNotSupported",
            )
        )
    elif old is not None and address_type != old.get("addressType"):
        # consumers group slices by address type, so kube-apiserver never lets it change
        errors.append(FieldError.invalid("addressType", address_type, "field is immutable"))
