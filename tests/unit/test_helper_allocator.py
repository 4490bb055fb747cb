"""The helper's choice of allocator: when `tether helper start` re-executes itself under mimalloc (asked for with
TETHER_HELPER_ALLOCATOR=mimalloc), and that it does so for real here (the Makefile installs libmimalloc2.0)."""

import json
import os
import subprocess
import sys

import pytest

from tether.helper.root import allocator
from tether.helper.root.allocator import MARKER, ExecPlan, find_library, plan_exec, restore_environment

LIB = "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2"
ARGV = ["/venv/bin/python", "-m", "tether.helper.user.cli.main", "helper", "start", "--socket", "/run/t.sock"]


def test_asked_for_and_installed_the_same_command_runs_again_preloading_it():
    environ = {"PATH": "/bin", "LD_PRELOAD": "/opt/other.so", allocator.ENV: "mimalloc"}
    plan = plan_exec(environ, ARGV, "/venv/bin/python3.11", LIB, False)
    assert plan == ExecPlan(
        ["/venv/bin/python3.11", *ARGV[1:]],
        {**environ, "LD_PRELOAD": f"{LIB} /opt/other.so", "PYTHONMALLOC": "malloc", MARKER: LIB},
    )


@pytest.mark.parametrize(
    ("environ", "library", "loaded"),
    [
        ({}, LIB, False),  # not asked for (the default: see the module docstring)
        ({allocator.ENV: "pymalloc"}, LIB, False),
        ({allocator.ENV: "mimalloc"}, None, False),  # not installed
        ({allocator.ENV: "mimalloc"}, LIB, True),  # already in the process
        ({allocator.ENV: "mimalloc", MARKER: LIB}, LIB, False),  # re-executed, yet it did not load: never loop
    ],
)
def test_the_helper_runs_on_as_it_is(environ, library, loaded):
    assert plan_exec(environ, ARGV, "/venv/bin/python", library, loaded) is None


def test_an_unknown_choice_is_refused_by_name():
    with pytest.raises(ValueError, match="TETHER_HELPER_ALLOCATOR='jemalloc'"):
        plan_exec({allocator.ENV: "jemalloc"}, ARGV, "/venv/bin/python", LIB, False)


def test_the_re_executed_helper_takes_out_what_was_added_and_keeps_the_rest():
    environ = {"LD_PRELOAD": f"{LIB} /opt/other.so", "PYTHONMALLOC": "malloc", MARKER: LIB, "PATH": "/bin"}
    restore_environment(environ)
    assert environ == {"LD_PRELOAD": "/opt/other.so", "PATH": "/bin"}
    environ = {"LD_PRELOAD": LIB, "PYTHONMALLOC": "malloc", MARKER: LIB}
    restore_environment(environ)
    assert environ == {}
    untouched = {"LD_PRELOAD": "/opt/other.so", "PYTHONMALLOC": "debug"}
    restore_environment(untouched)
    assert untouched == {"LD_PRELOAD": "/opt/other.so", "PYTHONMALLOC": "debug"}


def test_the_library_is_looked_for_in_the_given_directories_in_order(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (second / "libmimalloc.so.2").write_bytes(b"")
    assert find_library([str(first), str(second)]) == str(second / "libmimalloc.so.2")
    (first / "libmimalloc.so").write_bytes(b"")
    assert find_library([str(first), str(second)]) == str(first / "libmimalloc.so")
    assert find_library([str(tmp_path / "none")]) is None


PROBE = """
import json, os, sys
from tether.helper.root import allocator
from tether.helper.root.vif.memreport import debug_mallocstats
from tether.helper.root.vif.memtrim import release_to_os
allocator.adopt()
print(json.dumps({"pid": os.getpid(), "loaded": allocator.mimalloc_loaded(), "trimmed": release_to_os(),
                  "env": sorted(k for k in os.environ if k in ("LD_PRELOAD", "PYTHONMALLOC", allocator.MARKER)),
                  "pymalloc": "arenas allocated" in debug_mallocstats()}))
"""


def _probe(**env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "PYTHONMALLOC", allocator.ENV)}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], env={**environ, **env}, capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(proc.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD: Linux")
def test_a_helper_asked_to_runs_under_mimalloc_with_a_clean_environment():
    assert find_library() is not None, "libmimalloc2.0 is not installed (make deps installs it)"
    state = _probe(TETHER_HELPER_ALLOCATOR="mimalloc")
    assert state["loaded"] is True
    assert state["pymalloc"] is False
    assert state["env"] == []  # the commands the helper runs inherit neither variable
    assert state["trimmed"] is True
    assert _probe() | {"pid": 0} == {
        "pid": 0, "loaded": False, "trimmed": True, "env": [], "pymalloc": True,
    }  # fmt: skip


def test_helper_start_with_an_unknown_allocator_exits_2_naming_it(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tether.helper.user.cli.main", "helper", "start", "--socket", str(tmp_path / "s")],
        env={**os.environ, allocator.ENV: "tcmalloc"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "TETHER_HELPER_ALLOCATOR='tcmalloc': expected one of pymalloc, mimalloc" in proc.stderr
    assert not (tmp_path / "s").exists()  # nothing started
