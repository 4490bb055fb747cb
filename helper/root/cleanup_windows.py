"""Crash cleanup of the Windows TUN: a Wintun adapter that the journal names and that outlived its helper.

Wintun (0.14 and later) makes each adapter a software device tied to the handle that created it:
``WintunCloseAdapter`` on that handle, or the process's exit (a crash included), removes it. So after a
crash the adapter is normally gone already, and this only confirms it. Opening the adapter again from
here and closing it would not remove it (Wintun documents that ``WintunCloseAdapter`` removes only an
adapter created through that handle; ``tun_windows`` relies on exactly that to probe names). One that
is still there is removed as the device it is: ``pnputil /remove-device <instance id>`` with the id
``Get-NetAdapter`` reports, and only when its description says it is a Tether Wintun adapter.

The routes are journal records with their own registered step (``apply_windows``), and the NRPT rules
carry ownership markers (``windows_nrpt``); ``cleanup.run`` runs those before this.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from tether.helper.root.oscommand import CommandFailed, CommandRunner, run_command
from tether.helper.root.powershell import Command, PowerShell, PowerShellError, PowerShellRunner, json_rows

if TYPE_CHECKING:
    from tether.helper.root.cleanup import CleanupReport
    from tether.helper.root.journal import JournalState

# tun_windows.TUNNEL_TYPE: Windows describes a Wintun adapter by the tunnel type it was created with.
TUNNEL_TYPE = "Tether"
SHELL: Callable[[], PowerShell] = PowerShellRunner
RUN: CommandRunner = run_command


def adapter_query(name: str) -> Command:
    return Command(
        "Get-NetAdapter",
        (("Name", name), ("ErrorAction", "SilentlyContinue")),
        json=True,
        select=("Name", "InterfaceDescription", "PnPDeviceID"),
    )


def remove_device(instance_id: str) -> list[str]:
    return ["pnputil.exe", "/remove-device", instance_id]


def clean_links(
    state: JournalState | None,
    sweep: bool,
    force: bool,
    report: CleanupReport,
    nft: str = "",
    *,
    shell: PowerShell | None = None,
    run: CommandRunner | None = None,
) -> None:
    """Remove the journal's Wintun adapters that are still there (see the module docstring)."""
    names = state.links if state is not None else ()
    if not names:
        return
    shell = shell or SHELL()
    run = run or RUN
    for name in names:
        try:
            rows = json_rows(shell.run(adapter_query(name)))
        except PowerShellError as exc:
            report.errors.append(f"cannot look for adapter {name}: {exc}")
            continue
        if not rows:
            report.notes.append(f"adapter {name} is gone (Wintun removed it with its process)")
            continue
        description, instance = str(rows[0].get("InterfaceDescription") or ""), str(rows[0].get("PnPDeviceID") or "")
        if not description.startswith(TUNNEL_TYPE) or not instance:
            report.skipped.append(f"adapter {name} ({description or 'no description'}: not a Tether Wintun adapter)")
            continue
        try:
            run(remove_device(instance))
        except CommandFailed as exc:
            report.errors.append(f"cannot remove adapter {name}: {exc}")
            continue
        report.removed.append(f"adapter {name}")
