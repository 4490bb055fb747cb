"""packaging/linux: the pure parts of build.py (nfpm configuration, venv relocation, architectures) and
shelldocs.py (man page, completions) against the real CLI parser; the maintainer scripts with `sh -n` and the
pre-install refusal run for real on a machine name it does not know."""

from __future__ import annotations

import configparser
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from types import ModuleType

import pytest

from tether.gui import autostart
from tether.helper.root import daemon
from tether.helper.user.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "packaging" / "linux"


def load(name: str) -> ModuleType:
    key = f"tether_linux_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, HERE / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


build = load("build")
shelldocs = load("shelldocs")
SPEC = build.Spec(version="1.2.3", epoch=1_700_000_000, license="Apache-2.0")


def config(fmt: str, machine: str = "x86_64") -> dict:
    return build.nfpm_config(SPEC, fmt, machine, Path("/stage"), Path("/extras"), build.payload.payload(ROOT))


def test_architecture_is_named_per_format_and_unknown_machines_are_refused() -> None:
    assert build.architecture("x86_64", "deb") == "amd64"
    assert build.architecture("x86_64", "rpm") == "x86_64"
    with pytest.raises(ValueError, match="machine 'riscv64' is not supported"):
        build.architecture("riscv64", "deb")


def test_nfpm_config_puts_the_venv_in_opt_and_the_commands_on_path() -> None:
    deb = config("deb")
    by_dst = {entry["dst"]: entry for entry in deb["contents"]}
    assert by_dst["/opt/tether"] == {"src": "/stage/opt/tether", "dst": "/opt/tether", "type": "tree"}
    assert by_dst["/usr/bin/tether"]["src"] == "/opt/tether/bin/tether"
    assert by_dst["/usr/bin/tether-tray"]["type"] == "symlink"
    assert by_dst["/usr/lib/systemd/system/tether-helper.service"]["file_info"]["mode"] == 0o644
    assert "/usr/share/doc/tether/changelog.Debian.gz" in by_dst
    assert deb["arch"] == "amd64" and deb["version"] == "1.2.3"
    assert "python3.11" in deb["depends"] and "libc6 (>= 2.34)" in deb["depends"]
    assert set(deb["scripts"]) == {"preinstall", "postinstall", "preremove", "postremove"}


def test_rpm_config_marks_docs_and_leaves_out_debian_files() -> None:
    rpm = config("rpm")
    by_dst = {entry["dst"]: entry for entry in rpm["contents"]}
    assert by_dst["/usr/share/man/man1/tether.1.gz"]["type"] == "doc"
    assert "/usr/share/lintian/overrides/tether" not in by_dst
    assert rpm["arch"] == "x86_64" and "glibc >= 2.34" in rpm["depends"]


def test_staged_paths_become_the_installed_ones() -> None:
    cfg = "home = /usr/bin\ncommand = /usr/bin/python3.11 -m venv /tmp/w/stage/opt/tether\n"
    assert build.pyvenv_cfg(cfg, "/tmp/w/stage/opt/tether").endswith("-m venv /opt/tether\n")


def test_man_page_covers_every_command_path() -> None:
    tree = shelldocs.command_tree(build_parser())
    page = shelldocs.man_page(tree, "1.2.3", "2026-01-01")
    assert page.startswith('.TH TETHER 1 "2026-01-01" "tether 1.2.3"')
    for path in ("tether connect", "tether helper cleanup", "tether manager install"):
        assert f".SS {path}\n" in page
    assert "\\-\\-kubeconfig" in page  # options spelt with minus signs, searchable as --kubeconfig


def test_completions_offer_subcommands_and_options() -> None:
    tree = shelldocs.command_tree(build_parser())
    bash = shelldocs.bash_completion(tree)
    assert "complete -o default -F _tether tether" in bash
    top = next(line for line in bash.splitlines() if line.strip().startswith('"")'))
    assert "connect" in top and "helper" in top and "manager" in top
    helper = next(line for line in bash.splitlines() if line.strip().startswith('"helper")'))
    assert "start" in helper and "cleanup" in helper
    zsh = shelldocs.zsh_completion(tree)
    assert zsh.startswith("#compdef tether")
    assert "'cleanup:undo what a crashed helper left behind\\: devices" in zsh


def test_bash_completion_completes_in_a_real_bash(tmp_path: Path) -> None:
    script = tmp_path / "tether.bash"
    script.write_text(shelldocs.bash_completion(shelldocs.command_tree(build_parser())))
    probe = f'source {script}; COMP_WORDS=(tether helper cl); COMP_CWORD=2; _tether; echo "${{COMPREPLY[@]}}"'
    done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["cleanup"]


def test_maintainer_scripts_parse() -> None:
    for script in sorted((HERE / "scripts").glob("*.sh")):
        done = subprocess.run(["sh", "-n", script], capture_output=True, text=True)
        assert done.returncode == 0, f"{script.name}: {done.stderr}"


def test_preinstall_refuses_another_architecture(tmp_path: Path) -> None:
    script = tmp_path / "preinst"
    script.write_text(build.preinstall_script("s390x"))
    done = subprocess.run(["sh", script, "install"], capture_output=True, text=True)
    assert done.returncode == 1
    assert "this package is for s390x machines; this one is" in done.stderr
    script.write_text(
        build.preinstall_script(subprocess.run(["uname", "-m"], capture_output=True, text=True).stdout.strip())
    )
    assert subprocess.run(["sh", script, "install"], capture_output=True, text=True).returncode == 0


def unit_settings(text: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit's settings by section; a key given twice (SystemCallFilter=) keeps every value."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            current.setdefault(key, []).append(value)
    return sections


def seconds(span: str) -> float:
    """A systemd time span of one unit (200ms, 1s, 2): seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|)", span)
    assert match is not None, f"time span {span!r} is not <number>[ms|s]"
    return float(match[1]) / (1000 if match[2] == "ms" else 1)


def test_unit_restarts_a_killed_helper_within_a_second_after_cleaning_up() -> None:
    """Crash safety (issue 16): SIGKILL or the OOM killer end the helper; systemd undoes what it left and starts
    a new one, whose start-up cleanup runs before it listens, and keeps the journal for it."""
    service = unit_settings((HERE / "tether-helper.service").read_text())["Service"]
    # on-failure restarts after any unclean signal, SIGKILL included; `always` would also undo a `tether quit`.
    assert service["Restart"] in (["on-failure"], ["always"])
    assert seconds(service["RestartSec"][0]) <= 1
    assert [command.split()[1:] for command in service["ExecStopPost"]] == [["helper", "cleanup"]]
    (exec_start,) = service["ExecStart"]
    program, *argv = exec_start.split()
    assert program == f"{build.PREFIX}/bin/{build.payload.SERVICE_COMMAND}"
    args = daemon.build_parser().parse_args(argv)
    assert args.no_cleanup is False  # the start-up cleanup runs before the sockets are made
    # The journal the cleanup reads is in the sockets' directory (as serve() lays it out), which is the unit's
    # RuntimeDirectory, kept by systemd across a restart.
    sockets = (args.socket or daemon.default_socket()).parent
    assert sockets == Path("/run", *service["RuntimeDirectory"])
    journal = daemon.journal_path(daemon.SessionConfig(runtime_dir=sockets, state_dir=args.state_dir))
    assert journal.parent == sockets
    assert service["RuntimeDirectoryPreserve"] in (["restart"], ["yes"])


def test_opt_tether_holds_the_shared_payload_with_launchers_on_the_installed_venv(tmp_path: Path) -> None:
    """The Linux package ships what packaging/payload.py lists, as the macOS one does."""
    build.stage_payload(tmp_path, ROOT)
    items = build.payload.payload(ROOT)
    staged = {PurePosixPath(p.relative_to(tmp_path).as_posix()) for p in tmp_path.rglob("*") if p.is_file()}
    assert staged == {item.destination for item in items}
    kinds = {item.kind for item in items}
    assert kinds == {"command", "chart", "icon", "completion"}
    for item in items:
        data = (tmp_path / item.destination).read_bytes()
        if item.kind == "command":
            assert data.decode() == build.payload.launcher(item.source, PurePosixPath("/opt/tether/bin/python"))
            assert (tmp_path / item.destination).stat().st_mode & 0o777 == 0o755
        else:
            assert data == (ROOT / item.source).read_bytes()


def test_system_links_point_into_the_payload() -> None:
    links = build.system_links(build.payload.payload(ROOT))
    assert links == {
        "/usr/bin/tether": "/opt/tether/bin/tether",
        "/usr/bin/tether-tray": "/opt/tether/bin/tether-tray",
        "/usr/share/bash-completion/completions/tether": "/opt/tether/share/completions/bash/tether",
        "/usr/share/zsh/vendor-completions/_tether": "/opt/tether/share/completions/zsh/_tether",
        "/usr/share/icons/hicolor/scalable/apps/tether.svg": "/opt/tether/share/icons/connected.svg",
    }
    by_dst = {entry["dst"]: entry for entry in config("deb")["contents"]}
    for link, target in links.items():
        assert by_dst[link] == {"src": target, "dst": link, "type": "symlink"}


def test_a_completion_for_an_unknown_shell_is_refused() -> None:
    items = [
        *build.payload.payload(ROOT),
        build.payload.Item(PurePosixPath("share/completions/fish/t"), "completion", "x"),
    ]
    with pytest.raises(ValueError, match="no place known for shell 'fish'"):
        build.system_links(items)


def test_the_checkouts_completions_are_those_of_the_current_cli() -> None:
    """packaging/completions is written by shelldocs.py from the parser; a changed CLI needs them rewritten."""
    written = shelldocs.completions(shelldocs.command_tree(build_parser()))
    folder = ROOT / "packaging" / "completions"
    kept = {PurePosixPath(p.relative_to(folder).as_posix()): p.read_text() for p in folder.rglob("*") if p.is_file()}
    assert kept == written, "the CLI changed: run `python3 packaging/linux/shelldocs.py` and commit the result"


def test_the_pins_cover_the_shared_requirements_on_linux() -> None:
    """requirements.txt is the closure of packaging/payload.py's requirements, each within its pyproject range."""
    required = build.payload.requirements((ROOT / "pyproject.toml").read_text())
    assert build.unpinned(build.REQUIREMENTS.read_text(), required) == []
    assert any(req.startswith("helm-python-sdk") for req in required)  # the chart extra: manager install works


def test_a_missing_or_stale_pin_is_named_and_windows_only_ones_are_not_asked_for() -> None:
    required = ["grpcio>=1.85.1", "uvloop>=0.21; sys_platform != 'win32'", "pywin32-ctypes; sys_platform == 'win32'"]
    assert build.unpinned("grpcio==1.85.4\nuvloop==0.22.1  # a comment\n", required) == []
    assert build.unpinned("# header\ngrpcio==1.80.0\n", required) == [
        "grpcio==1.80.0 is outside >=1.85.1 (pyproject: 'grpcio>=1.85.1')",
        "uvloop is not pinned (pyproject: \"uvloop>=0.21; sys_platform != 'win32'\")",
    ]


def test_the_menu_entry_starts_the_tray_on_path_with_the_packaged_icon(tmp_path: Path) -> None:
    """The menu's entry is the tray's autostart entry (tether.gui.autostart) minus autostart, plus search words."""
    entry = tmp_path / "tether-tray.desktop"
    entry.write_text(build.menu_entry())
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(entry)
    fields = dict(parser["Desktop Entry"])
    assert fields["Exec"] == "tether-tray" and "tether-tray" in build.payload.ON_PATH
    assert build.ICON_LINK.endswith(f"/{fields['Icon']}.svg")
    assert fields["Name"] == autostart.DISPLAY_NAME and fields["Type"] == "Application"
    assert "X-GNOME-Autostart-enabled" not in fields  # in the menu; autostart only when the user turns it on
    validate = shutil.which("desktop-file-validate")
    if validate:
        done = subprocess.run([validate, entry], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
