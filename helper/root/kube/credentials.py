"""Kubernetes credentials on the helper side (root), from the flattened kubeconfig a client sent.

``load_credentials(text, caller, environment)`` returns ``KubeCredentials`` whose ``configuration`` is a
``kubernetes.client.Configuration`` for the official client (and the port-forward). Rules:

* The helper never reads a user's files: a kubeconfig that still refers to files (``certificate-authority``,
  ``client-certificate``, ``client-key``, ``tokenFile``) is refused; clients inline them
  (``tether.helper.user.kubeconfig.flatten``). Certificate data is written to a private 0700 directory
  owned by root, removed by ``close()``.
* A user ``exec`` credential plugin runs as the caller, never as root: uid, gid and supplementary groups
  of the caller, the environment the client sent (plus the plugin's ``env`` and ``KUBERNETES_EXEC_INFO``),
  stdin from /dev/null, cwd the caller's home (or /). Its ``ExecCredential`` (``status.token`` or
  ``clientCertificateData``/``clientKeyData``, ``expirationTimestamp``) is parsed here and refreshed before
  it expires: on use (the Configuration's refresh hook) and, if started, by a background task.
* ``auth-provider: gcp`` (which would run commands and read root's Google credentials) is refused.
* The proxy (``configuration.proxy``, also the port-forward's) is chosen as kubectl chooses it: the cluster's
  ``proxy-url``, else the caller's proxy variables as the client sent them (``tether.helper.api.proxies``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime as dt
import json
import logging
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import yaml
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.kube_config import KubeConfigLoader

from tether.helper.api import kubeyaml, validate
from tether.helper.api.proxies import ProxyEnvironment, ProxyError, ProxyURL, choose_proxy
from tether.helper.root.server.caller import Caller
from tether.runtime.atomicfile import write_atomic

log = logging.getLogger("tether.helper.kube")

EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
EXEC_INFO_ENV = "KUBERNETES_EXEC_INFO"
# Linux takes no single environment string over 128 KiB (MAX_ARG_STRLEN): beyond this the plugin would not even
# start, and a cluster entry this large is not a cluster's.
MAX_EXEC_INFO_BYTES = 120 * 1024
EXEC_CLUSTER_EXTENSION = "client.authentication.k8s.io/exec"
DEFAULT_EXEC_TIMEOUT = 60.0
MAX_PLUGIN_OUTPUT = 1024 * 1024
REFRESH_MARGIN = dt.timedelta(minutes=5)
RETRY_AFTER = 30.0

Clock = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CredentialsError(Exception):
    """The kubeconfig or its credential plugin cannot be used; the message says which and why."""


# --- ExecCredential ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExecCredential:
    token: str | None = None
    client_certificate_data: str | None = None
    client_key_data: str | None = None
    expires_at: dt.datetime | None = None


def parse_timestamp(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def parse_exec_credential(output: bytes | str, api_version: str, command: str = "exec plugin") -> ExecCredential:
    """The credential in a plugin's stdout (an ``ExecCredential`` JSON object)."""
    text = output.decode(errors="replace") if isinstance(output, bytes) else output
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CredentialsError(f"{command}: its output is not an ExecCredential (invalid JSON: {exc.msg})") from None
    if not isinstance(document, dict) or document.get("kind") != "ExecCredential":
        raise CredentialsError(f'{command}: its output is not an ExecCredential (kind is not "ExecCredential")')
    if document.get("apiVersion") != api_version:
        raise CredentialsError(
            f"{command}: the kubeconfig asks for {api_version} but the plugin returned {document.get('apiVersion')!r}"
        )
    status = document.get("status")
    if not isinstance(status, dict):
        raise CredentialsError(f"{command}: the ExecCredential has no status")
    token = status.get("token") or None
    cert, key = status.get("clientCertificateData") or None, status.get("clientKeyData") or None
    for name, value in (("token", token), ("clientCertificateData", cert), ("clientKeyData", key)):
        if value is not None and not isinstance(value, str):
            raise CredentialsError(f"{command}: status.{name} must be a string")
    if bool(cert) != bool(key):
        raise CredentialsError(f"{command}: the ExecCredential has only one of clientCertificateData and clientKeyData")
    if not token and not cert:
        raise CredentialsError(f"{command}: the ExecCredential has neither a token nor a client certificate")
    expires_at = None
    stamp = status.get("expirationTimestamp")
    if stamp:
        try:
            expires_at = parse_timestamp(str(stamp))
        except ValueError:
            raise CredentialsError(f"{command}: expirationTimestamp {stamp!r} is not an RFC 3339 time") from None
    return ExecCredential(token=token, client_certificate_data=cert, client_key_data=key, expires_at=expires_at)


# --- running a plugin as the caller ------------------------------------------------------------------


@dataclass(frozen=True)
class PluginResult:
    returncode: int
    stdout: bytes
    stderr: bytes


Runner = Callable[[list[str], Caller, dict[str, str], str, float], PluginResult]


def _bounded_communicate(proc: subprocess.Popen[bytes], timeout: float, limit: int) -> tuple[bytes, bytes]:
    assert proc.stdout is not None and proc.stderr is not None
    buffers = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        for stream in buffers:
            selector.register(stream, selectors.EVENT_READ)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise subprocess.TimeoutExpired(proc.args, timeout)
            for key, _ in selector.select(remaining):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                buffer = buffers[key.fileobj]  # type: ignore[index]
                buffer += chunk
                if len(buffer) > limit:
                    raise OverflowError
    return bytes(buffers[proc.stdout]), bytes(buffers[proc.stderr])


# The launcher becomes the plugin: it reads its instructions from stdin (never argv, which every user can
# read in /proc), puts /dev/null on stdin, takes the caller's groups, gid and uid, changes directory as the
# caller and execs the plugin with the caller's environment. It is started with an empty environment
# (so nothing the caller sent, e.g. LD_PRELOAD, reaches a root process) in Python's isolated mode.
#
# Why not subprocess's user=/group=/extra_groups=: those force fork() (no vfork/posix_spawn), and fork()
# in a process with busy gRPC threads runs gRPC's fork handlers, which can crash the child before exec.
#
# Everything it imports comes before the switch: after it the interpreter may not be able to read its own
# standard library (one under /root, or any mode 0700 prefix). os.execvpe imports warnings (through
# os.get_exec_path) and errno when it searches PATH, so those are imported up front.
LAUNCHER = r"""
import errno, json, os, sys, warnings
spec = json.loads(sys.stdin.buffer.read())
null = os.open(os.devnull, os.O_RDONLY)
os.dup2(null, 0)
os.close(null)
def fail(code, message):
    os.write(2, ("tether-exec: " + message + "\n").encode())
    os._exit(code)
try:
    if spec["switch"]:
        os.setgroups(spec["groups"])
        os.setgid(spec["gid"])
        os.setuid(spec["uid"])
        if os.getuid() != spec["uid"] or os.geteuid() != spec["uid"] or os.getegid() != spec["gid"]:
            fail(125, "could not switch to the caller's uid")
except OSError as exc:
    fail(125, "could not switch to the caller's uid: " + str(exc))
os.umask(0o077)
try:
    os.chdir(spec["cwd"])
except OSError:
    os.chdir("/")
argv = spec["argv"]
try:
    os.execvpe(argv[0], argv, spec["env"])
except FileNotFoundError:
    fail(127, "not found")
except PermissionError:
    fail(126, "permission denied")
except OSError as exc:
    fail(125, "cannot start: " + str(exc))
"""
LAUNCHER_FAILURES = {125: "could not be started", 126: "cannot be run", 127: "was not found"}


def run_as_caller(argv: list[str], caller: Caller, env: dict[str, str], cwd: str, timeout: float) -> PluginResult:
    """Run ``argv`` with the caller's uid, gid and groups (when we are root; else only as ourselves)."""
    switch = os.geteuid() == 0
    if not switch and caller.uid != os.geteuid():
        raise CredentialsError(f"cannot run the exec plugin as uid {caller.uid}: the helper is not running as root")
    spec = {
        "switch": switch,
        "uid": caller.uid,
        "gid": caller.gid,
        "groups": list(caller.groups),
        "cwd": cwd,
        "argv": argv,
        "env": env,
    }
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", LAUNCHER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={},
            cwd="/",
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        raise CredentialsError(f'exec plugin "{argv[0]}" could not be started: {exc.strerror or exc}') from None
    try:
        assert proc.stdin is not None
        try:
            proc.stdin.write(json.dumps(spec).encode())
        finally:
            proc.stdin.close()
        deadline = time.monotonic() + timeout
        stdout, stderr = _bounded_communicate(proc, timeout, MAX_PLUGIN_OUTPUT)
        _await_exit(proc, deadline - time.monotonic())
        returncode = _end_group(proc)
    except subprocess.TimeoutExpired:
        _end_group(proc)
        raise CredentialsError(f'exec plugin "{argv[0]}" did not finish within {timeout:g} s') from None
    except OverflowError:
        _end_group(proc)
        raise CredentialsError(f'exec plugin "{argv[0]}" wrote more than {MAX_PLUGIN_OUTPUT} bytes') from None
    except BrokenPipeError:
        _end_group(proc)
        raise CredentialsError(f'exec plugin "{argv[0]}" could not be started') from None
    finally:
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    log_plugin_stderr(argv[0], caller.uid, stderr)
    failure = LAUNCHER_FAILURES.get(returncode)
    if failure and stderr.startswith(b"tether-exec: "):
        detail = stderr.decode(errors="replace").strip().removeprefix("tether-exec: ")
        where = f" (PATH={env.get('PATH', '')!r})" if returncode == 127 else f" by uid {caller.uid}: {detail}"
        raise CredentialsError(f'exec plugin "{argv[0]}" {failure}{where}')
    return PluginResult(returncode, stdout, stderr)


def _await_exit(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until the plugin has exited, leaving it unreaped (a zombie keeps its pid, and so its process
    group id, from being reused until _end_group has signalled the group)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is not None:
            return
        if time.monotonic() >= deadline:
            raise subprocess.TimeoutExpired(proc.args, timeout)
        time.sleep(0.01)


def _end_group(proc: subprocess.Popen[bytes]) -> int:
    """Kill whatever is left of the plugin's process group (it runs in a session of its own, so the group is
    the plugin and every child it did not move out), then reap the plugin; its exit status.

    Nothing a plugin started outlives the call in the helper's cgroup; a child that made a session of its
    own (setsid) has left the group and is not found this way."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        return proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return -signal.SIGKILL


# What of a plugin's stderr goes to the helper's log: plugins can be chatty, and it is the caller's text.
MAX_LOGGED_STDERR = 4096
MAX_LOGGED_LINES = 20


def log_plugin_stderr(command: str, uid: int, stderr: bytes) -> None:
    """Each line of the plugin's stderr in the log, labelled with the plugin and the caller, control
    characters escaped (a line cannot forge another log record), at most MAX_LOGGED_LINES lines and
    MAX_LOGGED_STDERR bytes."""
    lines = stderr[:MAX_LOGGED_STDERR].decode(errors="replace").splitlines()
    for line in lines[:MAX_LOGGED_LINES]:
        shown = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in line)
        log.info("exec plugin %r (uid %d) stderr: %s", command, uid, shown, extra={"uid": uid, "command": command})
    if len(stderr) > MAX_LOGGED_STDERR or len(lines) > MAX_LOGGED_LINES:
        log.info(
            "exec plugin %r (uid %d) stderr: %d bytes in all, the rest not logged",
            command,
            uid,
            len(stderr),
            extra={"uid": uid, "command": command},
        )


@dataclass(frozen=True)
class ExecSpec:
    command: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    api_version: str
    interactive_mode: str
    provide_cluster_info: bool
    install_hint: str

    @classmethod
    def parse(cls, spec: Any, user: str) -> ExecSpec:
        where = f'user "{user}": exec'
        if not isinstance(spec, dict):
            raise CredentialsError(f"{where} must be a mapping")
        command = spec.get("command")
        if not isinstance(command, str) or not command:
            raise CredentialsError(f"{where} has no command")
        args = spec.get("args") or []
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise CredentialsError(f"{where}: args must be a list of strings")
        env: list[tuple[str, str]] = []
        for entry in spec.get("env") or []:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise CredentialsError(f"{where}: env entries need a name and a value")
            name, value = entry["name"], entry.get("value", "")
            try:
                validate.env_name(name, f"{where} env")
            except validate.ValidationError as exc:
                raise CredentialsError(str(exc)) from None
            if not isinstance(value, str) or "\0" in value:
                raise CredentialsError(f"{where}: env {name} must be a string")
            env.append((name, value))
        api_version = spec.get("apiVersion")
        if api_version not in EXEC_API_VERSIONS:
            raise CredentialsError(
                f"{where}: apiVersion {api_version!r} is not supported (use {' or '.join(EXEC_API_VERSIONS)})"
            )
        mode = spec.get("interactiveMode") or "IfAvailable"
        if mode not in ("Never", "IfAvailable", "Always"):
            raise CredentialsError(f"{where}: interactiveMode {mode!r} is not Never, IfAvailable or Always")
        hint = spec.get("installHint")
        return cls(
            command=command,
            args=tuple(args),
            env=tuple(env),
            api_version=api_version,
            interactive_mode=mode,
            provide_cluster_info=bool(spec.get("provideClusterInfo")),
            install_hint=hint if isinstance(hint, str) else "",
        )


def _cluster_exec_info(cluster: Mapping[str, Any]) -> dict[str, Any]:
    info: dict[str, Any] = {"server": cluster.get("server", "")}
    for key in ("tls-server-name", "insecure-skip-tls-verify", "certificate-authority-data", "proxy-url"):
        if key in cluster:
            info[key] = cluster[key]
    for extension in cluster.get("extensions") or []:
        if isinstance(extension, dict) and extension.get("name") == EXEC_CLUSTER_EXTENSION:
            info["config"] = extension.get("extension")
    return info


class ExecPlugin:
    """One ``exec`` credential plugin of one caller."""

    def __init__(
        self,
        spec: ExecSpec,
        caller: Caller,
        environment: Mapping[str, str],
        cluster: Mapping[str, Any] | None,
        *,
        runner: Runner = run_as_caller,
        timeout: float = DEFAULT_EXEC_TIMEOUT,
    ) -> None:
        self.spec = spec
        self.caller = caller
        self.environment = dict(environment)
        self.cluster = dict(cluster or {})
        self.runner = runner
        self.timeout = timeout

    def _env(self) -> dict[str, str]:
        env = dict(self.environment)
        env.setdefault("HOME", self.caller.home() or "/")
        env.update(self.spec.env)
        request: dict[str, Any] = {"interactive": False}
        if self.spec.provide_cluster_info:
            request["cluster"] = _cluster_exec_info(self.cluster)
        info = {"apiVersion": self.spec.api_version, "kind": "ExecCredential", "spec": request}
        text = json.dumps(info)
        if len(text.encode()) > MAX_EXEC_INFO_BYTES:
            raise CredentialsError(
                f'{EXEC_INFO_ENV} for exec plugin "{self.spec.command}" would be {len(text.encode())} bytes, '
                f"more than the limit of {MAX_EXEC_INFO_BYTES}: the cluster entry (provideClusterInfo) is too large"
            )
        env[EXEC_INFO_ENV] = text
        return env

    def _cwd(self) -> str:
        home = self.caller.home()
        return home if home and os.path.isdir(home) else "/"

    def run(self) -> ExecCredential:
        name = f'exec plugin "{self.spec.command}"'
        if self.spec.interactive_mode == "Always":
            raise CredentialsError(
                f"{name} needs an interactive terminal (interactiveMode: Always), which the helper cannot give it; "
                "log in once in a terminal (e.g. with kubectl) or use a plugin that can run non-interactively"
            )
        try:
            result = self.runner(
                [self.spec.command, *self.spec.args], self.caller, self._env(), self._cwd(), self.timeout
            )
        except CredentialsError as exc:
            if self.spec.install_hint and "not found" in str(exc):
                raise CredentialsError(f"{exc}; {self.spec.install_hint.strip()}") from None
            raise
        if result.returncode != 0:
            detail = result.stderr.decode(errors="replace").strip()[-2000:] or "(no output on stderr)"
            raise CredentialsError(
                f"{name} (run as uid {self.caller.uid}) failed with exit code {result.returncode}: {detail}"
            )
        credential = parse_exec_credential(result.stdout, self.spec.api_version, name)
        log.info(
            "exec credential obtained",
            extra={
                "uid": self.caller.uid,
                "command": self.spec.command,
                "expires": credential.expires_at.isoformat() if credential.expires_at else None,
            },
        )
        return credential


# --- the configuration -------------------------------------------------------------------------------


def _find(entries: Any, name: str, section: str) -> dict[str, Any]:
    if entries is not None and not isinstance(entries, list):
        raise CredentialsError(f"kubeconfig: '{section}' must be a list, not {type(entries).__name__}")
    for entry in entries or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            body = entry.get(section[:-1])
            return body if isinstance(body, dict) else {}
    raise CredentialsError(f'kubeconfig: {section[:-1]} "{name}" is not defined')


def _refuse_file_references(cluster: Mapping[str, Any], user: Mapping[str, Any], user_name: str) -> None:
    refs = [f"cluster {key}" for key in ("certificate-authority",) if cluster.get(key)]
    refs += [f'user "{user_name}" {key}' for key in ("client-certificate", "client-key", "tokenFile") if user.get(key)]
    provider = user.get("auth-provider")
    if isinstance(provider, dict):
        if provider.get("name") == "gcp":
            raise CredentialsError(
                f'user "{user_name}": the gcp auth-provider is not supported; '
                "use gke-gcloud-auth-plugin (an exec plugin)"
            )
        config = provider.get("config")
        if isinstance(config, dict) and (config.get("cmd-path") or config.get("idp-certificate-authority")):
            refs.append(f'user "{user_name}" auth-provider cmd-path / idp-certificate-authority')
    if refs:
        raise CredentialsError(
            "the kubeconfig refers to files, which the helper does not read: "
            + ", ".join(refs)
            + "; the client must send a flattened kubeconfig with the data inlined"
        )


def _write_private(path: Path, data: bytes) -> None:
    # Refreshed exec credentials replace files the Kubernetes client may be reading; they die with the
    # session, so there is nothing to make durable.
    write_atomic(path, data, mode=0o600, fsync=False)


def _b64(data: str, what: str) -> bytes:
    try:
        return base64.b64decode("".join(str(data).split()), validate=True)
    except (ValueError, TypeError):
        raise CredentialsError(f"kubeconfig: {what} is not valid base64") from None


def _refuse_google(*args: object, **kwargs: object) -> None:
    raise CredentialsError("google application-default credentials are not used by the helper")


class KubeCredentials:
    """A Configuration for one context, with exec credentials kept fresh. ``close()`` removes its files."""

    def __init__(
        self,
        configuration: kubernetes.client.Configuration,
        *,
        context: str,
        server: str,
        namespace: str,
        directory: Path,
        plugin: ExecPlugin | None,
        credential: ExecCredential | None,
        clock: Clock = utcnow,
        proxy: ProxyURL | None = None,
    ) -> None:
        self.configuration = configuration
        self.proxy = proxy
        self.context = context
        self.server = server
        self.namespace = namespace
        self.directory = directory
        self.plugin = plugin
        self._clock = clock
        self._lock = threading.Lock()
        self._credential: ExecCredential | None = None
        self._refresh_at: dt.datetime | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        if plugin is not None and credential is not None:
            self._apply(credential)
            configuration.refresh_api_key_hook = self._hook

    @property
    def credential(self) -> ExecCredential | None:
        return self._credential

    @property
    def expires_at(self) -> dt.datetime | None:
        return self._credential.expires_at if self._credential else None

    @property
    def refresh_at(self) -> dt.datetime | None:
        return self._refresh_at

    def _apply(self, credential: ExecCredential) -> None:
        cfg = self.configuration
        if credential.token:
            bearer = f"Bearer {credential.token}"
            cfg.api_key["BearerToken"] = bearer
            cfg.api_key["authorization"] = bearer  # the spelling some callers look up
        if credential.client_certificate_data and credential.client_key_data:
            cert, key = self.directory / "exec-client.crt", self.directory / "exec-client.key"
            _write_private(cert, credential.client_certificate_data.encode())
            _write_private(key, credential.client_key_data.encode())
            cfg.cert_file, cfg.key_file = str(cert), str(key)
        self._credential = credential
        self._refresh_at = None
        if credential.expires_at is not None:
            now = self._clock()
            lifetime = max(dt.timedelta(0), credential.expires_at - now)
            self._refresh_at = credential.expires_at - min(REFRESH_MARGIN, lifetime / 5)

    def needs_refresh(self) -> bool:
        return self._refresh_at is not None and self._clock() >= self._refresh_at

    def refresh(self, force: bool = False) -> bool:
        """Run the exec plugin again if the credential is about to expire (or ``force``); True if it ran."""
        if self.plugin is None or self._closed:
            return False
        with self._lock:
            if not force and not self.needs_refresh():
                return False
            self._apply(self.plugin.run())
            return True

    async def arefresh(self, force: bool = False) -> bool:
        return await asyncio.to_thread(self.refresh, force)

    def _hook(self, configuration: kubernetes.client.Configuration) -> None:
        try:
            self.refresh()
        except CredentialsError as exc:
            expired = self.expires_at is not None and self._clock() >= self.expires_at
            log.warning("exec credential refresh failed", extra={"error": str(exc), "expired": expired})
            if expired:
                raise

    def start_auto_refresh(self) -> asyncio.Task[None] | None:
        """Refresh in the background (in the running loop) shortly before each expiry; cancelled by close()."""
        if self.plugin is None or self._task is not None:
            return self._task
        self._task = asyncio.get_running_loop().create_task(self._auto_refresh())
        return self._task

    async def _auto_refresh(self) -> None:
        while not self._closed and self._refresh_at is not None:
            delay = (self._refresh_at - self._clock()).total_seconds()
            await asyncio.sleep(max(0.0, delay))
            try:
                await self.arefresh()
            except CredentialsError as exc:
                log.warning("exec credential refresh failed; retrying", extra={"error": str(exc)})
                await asyncio.sleep(RETRY_AFTER)
                continue
            if self._refresh_at is not None and self._refresh_at <= self._clock():
                log.warning("the exec plugin returned a credential that is already due for refresh")
                await asyncio.sleep(RETRY_AFTER)

    def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.configuration.refresh_api_key_hook = None
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> KubeCredentials:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_credentials(
    kubeconfig_text: str,
    caller: Caller,
    environment: Mapping[str, str] | None = None,
    context: str | None = None,
    *,
    runner: Runner = run_as_caller,
    clock: Clock = utcnow,
    exec_timeout: float = DEFAULT_EXEC_TIMEOUT,
    temp_root: str | os.PathLike[str] | None = None,
    proxy_environment: ProxyEnvironment | None = None,
) -> KubeCredentials:
    """Build the Configuration for ``context`` (default: the kubeconfig's current context). Blocking:
    it may run an exec plugin, so call it through ``asyncio.to_thread`` (or use ``aload_credentials``).

    ``proxy_environment``: the caller's proxy variables, used when the cluster names no proxy-url."""
    try:
        validate.kubeconfig_text(kubeconfig_text)
        env = validate.environment(environment or {})
    except validate.ValidationError as exc:
        raise CredentialsError(str(exc)) from None
    try:
        document = kubeyaml.load(kubeconfig_text)
    except kubeyaml.YamlAliasError as exc:
        raise CredentialsError(f"kubeconfig: {exc}") from None
    except yaml.YAMLError as exc:
        raise CredentialsError(f"kubeconfig: not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise CredentialsError("kubeconfig: expected a mapping")
    document = copy.deepcopy(document)
    name = context or document.get("current-context") or ""
    if not isinstance(name, str) or not name:
        raise CredentialsError("kubeconfig: no context given and no current-context")
    ctx = _find(document.get("contexts"), name, "contexts")
    cluster_name, user_name = ctx.get("cluster"), ctx.get("user") or ""
    if not isinstance(cluster_name, str):
        raise CredentialsError(f'kubeconfig: context "{name}" names no cluster')
    cluster = _find(document.get("clusters"), cluster_name, "clusters")
    user = _find(document.get("users"), user_name, "users") if user_name else {}
    _refuse_file_references(cluster, user, user_name)
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise CredentialsError(f'kubeconfig: cluster "{cluster_name}" has no server')
    proxy = _choose_proxy(server, cluster, cluster_name, proxy_environment or ProxyEnvironment())

    cluster_info = copy.deepcopy(cluster)  # as the plugin should see it (provideClusterInfo)
    directory = Path(tempfile.mkdtemp(prefix="tether-kube-", dir=temp_root))
    os.chmod(directory, 0o700)
    try:
        if cluster.get("certificate-authority-data"):
            ca = directory / "ca.crt"
            _write_private(ca, _b64(cluster["certificate-authority-data"], f'cluster "{cluster_name}" CA data'))
            cluster["certificate-authority"] = str(ca)
            del cluster["certificate-authority-data"]
        for data_key, file_key, file_name in (
            ("client-certificate-data", "client-certificate", "client.crt"),
            ("client-key-data", "client-key", "client.key"),
        ):
            if user.get(data_key):
                path = directory / file_name
                _write_private(path, _b64(user[data_key], f'user "{user_name}" {data_key}'))
                user[file_key] = str(path)
                del user[data_key]

        plugin = credential = None
        if "exec" in user and not user.get("token"):
            spec = ExecSpec.parse(user.pop("exec"), user_name)
            plugin = ExecPlugin(spec, caller, env, cluster_info, runner=runner, timeout=exec_timeout)
            credential = plugin.run()
            if credential.token:
                user["token"] = credential.token
        user.pop("exec", None)  # never let the kubernetes library run it (as root)

        minimal = {
            "current-context": name,
            "contexts": [{"name": name, "context": ctx}],
            "clusters": [{"name": cluster_name, "cluster": cluster}],
            "users": [{"name": user_name, "user": user}] if user_name else [],
        }
        configuration = kubernetes.client.Configuration()
        try:
            loader = KubeConfigLoader(
                config_dict=minimal,
                active_context=name,
                get_google_credentials=_refuse_google,
                config_base_path=str(directory),
                temp_file_path=str(directory),
            )
            loader.load_and_set(configuration)
        except (ConfigException, KeyError, ValueError, TypeError) as exc:
            raise CredentialsError(f'kubeconfig: context "{name}" cannot be used: {exc}') from None
        if "BearerToken" in configuration.api_key:
            configuration.api_key["authorization"] = configuration.api_key["BearerToken"]
        # The choice is made above, NO_PROXY included: the client library gets only its outcome.
        configuration.proxy = proxy.url if proxy else None
        configuration.no_proxy = None
        namespace = ctx.get("namespace")
        return KubeCredentials(
            configuration,
            context=name,
            server=server,
            namespace=namespace if isinstance(namespace, str) else "",
            directory=directory,
            plugin=plugin,
            credential=credential,
            clock=clock,
            proxy=proxy,
        )
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def _choose_proxy(server: str, cluster: Mapping[str, Any], name: str, env: ProxyEnvironment) -> ProxyURL | None:
    url = cluster.get("proxy-url") or ""
    if not isinstance(url, str):
        raise CredentialsError(f'kubeconfig: cluster "{name}": proxy-url must be a string')
    try:
        proxy = choose_proxy(server, url, env.check())
    except ProxyError as exc:
        raise CredentialsError(f'cluster "{name}": {exc}') from None
    if proxy is not None:
        log.info("reaching the API server through a proxy", extra={"server": server, "proxy": proxy.masked})
    return proxy


async def aload_credentials(
    kubeconfig_text: str,
    caller: Caller,
    environment: Mapping[str, str] | None = None,
    context: str | None = None,
    **kwargs: Any,
) -> KubeCredentials:
    return await asyncio.to_thread(load_credentials, kubeconfig_text, caller, environment, context, **kwargs)
