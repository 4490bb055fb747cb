"""packaging/linux: the pure parts of build.py (nfpm configuration, venv relocation, architectures) and
shelldocs.py (man page, completions) against the real CLI parser; the maintainer scripts with `sh -n` and the
pre-install refusal run for real on a machine name it does not know."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tether.helper.user.cli.main import build_parser

HERE = Path(__file__).resolve().parents[2] / "packaging" / "linux"


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
SPEC = build.Spec(version="1.2.3", epoch=1_700_000_000)


def config(fmt: str, machine: str = "x86_64") -> dict:
    return build.nfpm_config(SPEC, fmt, machine, Path("/stage"), Path("/extras"))


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
    script = "#!/tmp/w/stage/opt/tether/bin/python\nimport sys\n"
    assert build.rewrite_shebang(script, "/tmp/w/stage/opt/tether/bin/python") == (
        "#!/opt/tether/bin/python\nimport sys\n"
    )
    assert build.rewrite_shebang("#!/bin/sh\n", "/tmp/w/stage/opt/tether/bin/python") == "#!/bin/sh\n"
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
