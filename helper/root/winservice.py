"""`python -m tether.helper.root.winservice`: the helper as the Windows service "tether-helper".

The Windows installer (packaging/windows/) registers the bundled ``python.exe`` running this module as an
auto-start service under LocalSystem. The module speaks the service control manager's (SCM) protocol with
ctypes: StartServiceCtrlDispatcherW hands it a thread for ServiceMain, which reports START_PENDING, runs
the helper exactly as ``tether-helper`` does (``daemon.run``) and reports RUNNING once it serves; a Stop or
Shutdown control asks the helper to stop, as SIGTERM does on Linux, and the exit status becomes the
service's (a non-zero one as a service-specific error, so the SCM's restart-on-failure applies).

Why not pywin32's service framework: its host, pythonservice.exe, finds pywintypes311.dll only through the
system DLL path, which its post-install step reaches by copying DLLs into System32, and nothing removes them;
and WinSW or nssm would be one more foreign executable to obtain, sign and keep up to date. The SCM protocol
needs four Win32 calls, which ctypes reaches from the interpreter the installer bundles anyway.

Output goes to ``%ProgramData%\\Tether\\logs\\helper.log`` (a service has no console); the journal and
state under ``%ProgramData%\\Tether``.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tether.helper.api.paths import DEFAULT_GROUP, runtime_dir

SERVICE_NAME = "tether-helper"
SERVICE_WIN32_OWN_PROCESS = 0x10
SERVICE_STOPPED, SERVICE_START_PENDING, SERVICE_STOP_PENDING, SERVICE_RUNNING = 1, 2, 3, 4
SERVICE_ACCEPT_STOP, SERVICE_ACCEPT_SHUTDOWN = 0x1, 0x4
SERVICE_CONTROL_STOP, SERVICE_CONTROL_INTERROGATE, SERVICE_CONTROL_SHUTDOWN = 1, 4, 5
NO_ERROR, ERROR_CALL_NOT_IMPLEMENTED, ERROR_SERVICE_SPECIFIC_ERROR = 0, 120, 1066
ERROR_FAILED_SERVICE_CONTROLLER_CONNECT = 1063
# How long the SCM should wait for the next report while starting or stopping: the helper's start-up
# cleanup and a session's teardown run PowerShell, which takes seconds on a cold machine.
PENDING_WAIT_MS = 60_000

StopHelper = Callable[[], None]
Started = Callable[[StopHelper], None]
RunHelper = Callable[[Started], int]


@dataclass(frozen=True)
class Status:
    """The fields of SERVICE_STATUS the service sets (the type is always SERVICE_WIN32_OWN_PROCESS)."""

    state: int
    accepted: int = 0
    win32_exit: int = NO_ERROR
    specific_exit: int = 0
    checkpoint: int = 0
    wait_hint_ms: int = 0


class Scm(Protocol):
    """The SCM calls the service makes; ``Win32Scm`` is the real one."""

    def dispatch(self, name: str, main: Callable[[], None]) -> None: ...

    def register(self, name: str, handler: Callable[[int], int]) -> Any: ...

    def set_status(self, handle: Any, status: Status) -> None: ...


def exit_status(code: int) -> tuple[int, int]:
    """(dwWin32ExitCode, dwServiceSpecificExitCode) for the helper's exit status."""
    return (NO_ERROR, 0) if code == 0 else (ERROR_SERVICE_SPECIFIC_ERROR, code)


class Service:
    """One run of the service: status reports to the SCM, and the SCM's stop request passed to the helper."""

    def __init__(self, scm: Scm, run_helper: RunHelper, name: str = SERVICE_NAME) -> None:
        self.scm = scm
        self.run_helper = run_helper
        self.name = name
        self._handle: Any = None
        self._stop: StopHelper | None = None
        self._checkpoint = 0

    def _report(self, state: int, accepted: int = 0, exit_code: int = 0) -> None:
        pending = state in (SERVICE_START_PENDING, SERVICE_STOP_PENDING)
        self._checkpoint = self._checkpoint + 1 if pending else 0
        win32_exit, specific = exit_status(exit_code)
        self.scm.set_status(
            self._handle,
            Status(state, accepted, win32_exit, specific, self._checkpoint, PENDING_WAIT_MS if pending else 0),
        )

    def main(self) -> None:
        """ServiceMain: runs on the thread the SCM's dispatcher gives it, until the helper has stopped."""
        self._handle = self.scm.register(self.name, self.control)
        self._report(SERVICE_START_PENDING)
        try:
            code = self.run_helper(self.started)
        except BaseException:
            self._report(SERVICE_STOPPED, exit_code=1)
            raise
        self._report(SERVICE_STOPPED, exit_code=code)

    def started(self, stop: StopHelper) -> None:
        """Called by the helper once it serves: from now on the SCM may stop it."""
        self._stop = stop
        self._report(SERVICE_RUNNING, SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN)

    def control(self, code: int) -> int:
        """The control handler (HandlerEx's result): Stop and Shutdown stop the helper."""
        if code in (SERVICE_CONTROL_STOP, SERVICE_CONTROL_SHUTDOWN):
            if self._stop is None:  # the SCM sends neither before RUNNING, which is when _stop is set
                return ERROR_CALL_NOT_IMPLEMENTED
            self._report(SERVICE_STOP_PENDING)
            self._stop()
            return NO_ERROR
        return NO_ERROR if code == SERVICE_CONTROL_INTERROGATE else ERROR_CALL_NOT_IMPLEMENTED


class Win32Scm:
    """The SCM through advapi32 (Windows only). Keeps the ctypes callbacks alive while the service runs."""

    def __init__(self) -> None:
        win_dll = getattr(ctypes, "WinDLL", None)
        if win_dll is None:
            raise OSError("the service control manager exists only on Windows")
        self._adv: Any = win_dll("advapi32", use_last_error=True)
        functype: Any = ctypes.WINFUNCTYPE  # type: ignore[attr-defined]
        self._main_type = functype(None, ctypes.c_uint32, ctypes.c_void_p)
        dword, pointer = ctypes.c_uint32, ctypes.c_void_p
        self._handler_type = functype(dword, dword, dword, pointer, pointer)
        self._keep: list[Any] = []

    def dispatch(self, name: str, main: Callable[[], None]) -> None:
        class Entry(ctypes.Structure):
            _fields_ = (("name", ctypes.c_wchar_p), ("proc", self._main_type))

        callback = self._main_type(lambda argc, argv: main())
        self._keep.append(callback)
        table = (Entry * 2)(Entry(name, callback), Entry(None, self._main_type()))
        if not self._adv.StartServiceCtrlDispatcherW(table):
            error = ctypes.get_last_error()  # type: ignore[attr-defined]
            if error == ERROR_FAILED_SERVICE_CONTROLLER_CONNECT:
                raise OSError(error, "not started by the service control manager")
            raise OSError(error, "StartServiceCtrlDispatcherW failed")

    def register(self, name: str, handler: Callable[[int], int]) -> Any:
        callback = self._handler_type(lambda control, event, data, context: handler(control))
        self._keep.append(callback)
        self._adv.RegisterServiceCtrlHandlerExW.restype = ctypes.c_void_p
        handle = self._adv.RegisterServiceCtrlHandlerExW(name, callback, None)
        if not handle:
            raise OSError(ctypes.get_last_error(), "RegisterServiceCtrlHandlerExW failed")  # type: ignore[attr-defined]
        return handle

    def set_status(self, handle: Any, status: Status) -> None:
        fields = (SERVICE_WIN32_OWN_PROCESS, status.state, status.accepted, status.win32_exit)
        fields += (status.specific_exit, status.checkpoint, status.wait_hint_ms)
        raw = (ctypes.c_uint32 * 7)(*fields)
        self._adv.SetServiceStatus(ctypes.c_void_p(handle), ctypes.byref(raw))


def helper_argv(base: Path) -> list[str]:
    """The helper's arguments under the service: the installer's group, JSON logs, state beside the journal."""
    return ["--group", DEFAULT_GROUP, "--log-format", "json", "--state-dir", str(base / "state")]


def log_file(base: Path) -> Path:
    return base / "logs" / "helper.log"


def run_helper(started: Started) -> int:
    """The helper as ``tether-helper`` runs it, its output appended to the service's log file."""
    from tether.helper.root import daemon  # here: the daemon brings in the server and grpc

    base = runtime_dir()
    log_file(base).parent.mkdir(parents=True, exist_ok=True)
    out = open(log_file(base), "a", encoding="utf-8", buffering=1)  # noqa: SIM115 (open for the process's life)
    sys.stdout = sys.stderr = out
    return daemon.run(daemon.build_parser().parse_args(helper_argv(base)), stop_ready=started)


def main() -> int:
    try:
        scm = Win32Scm()
        scm.dispatch(SERVICE_NAME, Service(scm, run_helper).main)
    except OSError as exc:
        print(
            f"tether-helper service: {exc.strerror or exc}; this is run by Windows' service manager "
            f"(`sc start {SERVICE_NAME}`); `tether helper start` runs the helper in the foreground",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
