"""The Intercept dialog's fields as a request (pure: no Qt, no I/O).

``intercept_choice(...)`` checks what the user typed the way ``tether intercept`` checks its options (the
same port syntax and messages) and gives the ``InterceptRequest`` with where to write the pod's
environment. Empty fields mean the CLI's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tether.helper.api import helper_pb2 as pb
from tether.helper.api import intercepts


class FormError(ValueError):
    """A field is wrong; the message names it and its value."""


@dataclass(frozen=True)
class InterceptChoice:
    request: pb.InterceptRequest
    env_file: Path | None
    env_json: Path | None


def _path(label: str, text: str) -> Path | None:
    text = text.strip()
    if not text:
        return None
    path = Path(text).expanduser()
    if not path.is_absolute():
        raise FormError(f'{label} "{text}" is not an absolute path')
    return path


def intercept_choice(
    namespace: str,
    name: str,
    *,
    local_port: str = "",
    service_port: str = "",
    service: str = "",
    env_file: str = "",
    env_json: str = "",
    mount: bool = True,
    mount_dir: str = "",
) -> InterceptChoice:
    local, remote = local_port.strip(), service_port.strip()
    spec = f"{local}:{remote}" if remote else local
    try:
        port = intercepts.parse_port(spec)
    except intercepts.PortSpecError as exc:
        raise FormError(str(exc).replace("--port", "port", 1)) from None
    mount_path = _path("mount point", mount_dir) if mount else None
    request = pb.InterceptRequest(
        name=name,
        namespace=namespace,
        local_port=port.local,
        port=port.service_port,
        service=service.strip(),
        mount=str(mount_path) if mount_path is not None else ("" if mount else "false"),
    )
    return InterceptChoice(request, _path("env file", env_file), _path("env JSON file", env_json))
