"""Screenshots of the tray for the README: ``make screenshots`` (root), or
``python tests/integration/screenshots.py [DIRECTORY]`` (default ``docs/screenshots``).

It does what the end-to-end test does, against the same real parts: the sandbox cluster with its "VPN"
(``--vpn 10.0.0.0/8``), a real ``tether helper start`` in the workstation namespace, and the real
``tether-tray`` in trayer under Xvfb (see ``desktop.py``). The pictures are of the real thing: the
cluster's real subnets, the VPN's real route, the workloads the cluster really has. A fake helper would
need no root, but would show made-up data in the README.

1. Connect from the menu; the VPN conflict opens the dialog: ``conflict-dialog.png`` (once the workload
   list has loaded, with "Remap automatically" chosen).
2. Apply: connected, with the conflicting subnets remapped; the menu: ``tray-menu.png`` (the tray area
   of the screen, icon and menu).
3. Intercepts: the Intercepts submenu lists the namespace's workloads: ``tray-intercepts.png``; "Intercept
   web…" opens the dialog, filled in: ``intercept-dialog.png``; with a local server listening, Intercept: the
   submenu then offers Leave: ``tray-intercepts-active.png``.
4. "Open status window" (with the intercept in it): ``status-window.png``; then Leave, and web is put back
   as the lab made it.

Then it disconnects, quits the tray and the helper, and leaves the lab as it found it: down if it was
down, else with the VPN it had.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import tray_probe as probe
from conftest import InstalledLab
from desktop import Desktop, desktop
from helper_fixture import running_helper
from test_intercept import local_server
from test_vpn import VPN
from tray_driver import TrayApp
from web_restore import web_restored

from tether.gui import intercept_menu
from tether.helper.api import helper_pb2 as pb
from tether.helper.api import intercepts
from tether.helper.user.client import HelperClient
from tether.lab.journal import UP
from tether.lab.lab import Lab

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DIR = REPO / "docs" / "screenshots"
CONNECT_TIMEOUT = 60.0
MARGIN = 12  # pixels of desktop around the tray menu
INTERCEPT_TIMEOUT = 240.0  # the first intercept re-creates the web pods with the agent
WEB = intercept_menu.KEY_WORKLOAD_PREFIX + "default/web"


def wait_for_phase(socket: Path, phase: pb.State.Phase.ValueType, timeout: float = CONNECT_TIMEOUT) -> pb.State:
    deadline = time.monotonic() + timeout
    with HelperClient(socket) as client:
        while (state := client.status()).phase != phase:
            if time.monotonic() > deadline:
                raise SystemExit(f"screenshots: the helper is not {pb.State.Phase.Name(phase)}: {state}")
            time.sleep(0.2)
    return state


def widget_state(snap: dict, window: str, name: str) -> dict | None:
    entry = probe.window(snap, window)
    return probe.widget(entry, name) if entry else None


def text_of(snap: dict, window: str, name: str) -> str:
    widget = widget_state(snap, window, name)
    return (widget or {}).get("text") or ""


def conflict_dialog(tray: TrayApp, screen: Desktop, out: Path) -> None:
    tray.choose("tether-connect")
    tray.wait_window("conflictDialog", CONNECT_TIMEOUT)
    # The workload picker fills in the background; take the picture once it has (its status line stops
    # saying "loading…").
    tray.wait(lambda s: "loading" not in text_of(s, "conflictDialog", "workloadStatus"), "the workload list")
    tray.click_widget("conflictDialog", "autoRemapChoice", at_left=True)
    tray.wait(lambda s: (w := widget_state(s, "conflictDialog", "applyButton")) and w["enabled"], "Apply enabled")
    screen.screenshot(out / "conflict-dialog.png", window=tray.x_window(tray.wait_window("conflictDialog")))
    tray.click_widget("conflictDialog", "applyButton")


def tray_menu(tray: TrayApp, screen: Desktop, out: Path, name: str = "tray-menu.png", submenu: str = "") -> None:
    """The tray area with the menu open (and ``submenu`` opened from it, if given)."""
    assert tray.icon is not None
    # Clicked at the icon's lower edge, the menu opens below the panel instead of over it.
    at = (tray.icon.width // 2, tray.icon.height - 1)
    if submenu:
        tray.open_submenu(submenu, WEB, at=at)  # once the workloads are listed in it
    else:
        tray.open_menu(at)
    snap = tray.snapshot()
    panel = screen.tray_panel()
    assert panel is not None
    shown = [tuple(probe.window(snap, "tether-menu")["geometry"]), (panel.x, panel.y, panel.width, panel.height)]
    if submenu:
        shown.append(tuple(probe.window(snap, submenu)["geometry"]))
    time.sleep(0.3)  # let the menus paint (a picture, not an assertion)
    left = max(0, min(x for x, _, _, _ in shown) - MARGIN)
    right = max(x + w for x, _, w, _ in shown) + MARGIN
    bottom = max(y + h for _, y, _, h in shown) + MARGIN
    screen.screenshot(out / name, area=(left, 0, right - left, bottom))
    screen.key("Escape")
    if submenu:
        screen.key("Escape")
    tray.wait(lambda s: probe.window(s, "tether-menu") is None, "the menu to close")


def intercept_web(tray: TrayApp, screen: Desktop, socket: Path, out: Path, env_file: Path) -> None:
    """The Intercepts submenu, the dialog filled in, then the intercept made (a local server must listen)."""
    tray_menu(tray, screen, out, "tray-intercepts.png", submenu=intercept_menu.KEY_SECTION)
    tray.choose_in(intercept_menu.KEY_SECTION, WEB)
    dialog = tray.wait_window("interceptDialog")
    tray.type_into("interceptDialog", "interceptLocalPort", "8080")
    tray.type_into("interceptDialog", "interceptEnvFile", str(env_file))
    tray.wait(
        lambda s: (
            probe.window(s, "interceptDialog") and tray.widget_in(s, "interceptDialog", "interceptButton")["enabled"]
        ),
        "Intercept enabled",
    )
    time.sleep(0.3)
    screen.screenshot(out / "intercept-dialog.png", window=tray.x_window(dialog))
    tray.click_widget("interceptDialog", "interceptButton")
    deadline = time.monotonic() + INTERCEPT_TIMEOUT
    with HelperClient(socket) as client:
        while not any(i.workload == "web" and i.phase == intercepts.ACTIVE for i in client.status().intercepts):
            if time.monotonic() > deadline:
                raise SystemExit(f"screenshots: web was not intercepted within {INTERCEPT_TIMEOUT:.0f}s")
            time.sleep(0.5)
    tray_menu(tray, screen, out, "tray-intercepts-active.png", submenu=intercept_menu.KEY_SECTION)


def status_window(tray: TrayApp, screen: Desktop, out: Path) -> None:
    tray.choose("tether-status-window")
    window = tray.wait_window("statusWindow")
    time.sleep(0.5)  # let it paint the state it just received (a picture, not an assertion)
    screen.screenshot(out / "status-window.png", window=tray.x_window(window))


def take(out: Path, lab: Lab, workdir: Path) -> None:
    info = lab.info()
    with running_helper(info.ws_netns, info.kubeconfig, workdir, "screenshots") as helper:
        helper.start()
        with desktop(workdir / "desktop") as screen:
            tray = TrayApp(screen, helper.socket, info.kubeconfig, netns=info.ws_netns)
            try:
                tray.start()
                conflict_dialog(tray, screen, out)
                wait_for_phase(helper.socket, pb.State.CONNECTED)
                tray.wait(lambda s: probe.window(s, "conflictDialog") is None, "the dialog to close")
                # The tray lists the workloads once connected: a menu open when they arrive is rebuilt
                # under the camera, so wait for them first.
                tray.open_submenu(intercept_menu.KEY_SECTION, WEB, timeout=CONNECT_TIMEOUT)
                screen.key("Escape", "Escape")
                tray.wait(lambda s: probe.window(s, "tether-menu") is None, "the menu to close")
                tray_menu(tray, screen, out)
                with web_restored(info, helper), local_server(info.ws_netns, "http", 8080, workdir / "x"):
                    intercept_web(tray, screen, helper.socket, out, workdir / "web.env")
                    status_window(tray, screen, out)
                    tray.choose_in(intercept_menu.KEY_SECTION, WEB)  # Leave
                tray.choose("tether-disconnect")
                wait_for_phase(helper.socket, pb.State.DISCONNECTED)
                tray.choose("tether-quit", quits=True)
            except BaseException:
                print(tray.tail(), file=sys.stderr)
                raise
            finally:
                tray.stop()
        if helper.quit() != 0 or helper.leftovers():
            raise SystemExit(f"screenshots: the helper did not end cleanly\n{helper.tail()}")


SHOTS = (
    "tray-menu.png",
    "status-window.png",
    "conflict-dialog.png",
    "tray-intercepts.png",
    "intercept-dialog.png",
    "tray-intercepts-active.png",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Save screenshots of the tray (root; uses the sandbox cluster).")
    parser.add_argument("directory", nargs="?", type=Path, default=DEFAULT_DIR)
    out = parser.parse_args(argv).directory.resolve()
    if os.geteuid() != 0:
        print("screenshots: run as root (the sandbox cluster and the helper need it)", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    # With the traffic-manager installed whenever `up` builds the lab, as the tests have it.
    lab = InstalledLab(log=lambda msg: print(f"[lab] {msg}", file=sys.stderr))
    journal = lab.journal_file.load()
    was_up = journal is not None and journal.state == UP
    vpn_before = list(journal.options.get("vpn", [])) if was_up and journal is not None else []
    lab.up(vpn=[VPN])
    try:
        with tempfile.TemporaryDirectory(prefix="tether-shots-") as workdir:
            take(out, lab, Path(workdir))
    finally:
        if was_up:
            lab.up(vpn=vpn_before)
        elif leftovers := lab.down():
            print(f"screenshots: the lab left {leftovers}", file=sys.stderr)
    for name in SHOTS:
        print(out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
