"""packaging/image/build.py's pure parts, and its pinned requirements against what the manager imports.

The pins are checked against the source (every third-party import of tether.manager and tether.runtime,
deferred ones too, is a direct pin, and nothing else is) and against the packages' declared requirements, read
from this environment's installed metadata (every requirement of a pin, for bookworm's CPython 3.11 on Linux,
is pinned or left out on purpose with a reason), so that neither a new import nor a new requirement of
kubernetes can slip past the image.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

from tests.image_build import image_build

build = image_build()
ROOT = Path(__file__).resolve().parents[2]
IMAGE_FOLDERS = ("manager", "runtime")  # tether.manager, tether.runtime: all the image keeps of Tether
PINS = build.read_pins(build.REQUIREMENTS.read_text())
PINNED = {pin.key: pin for pin in PINS}
# What the pins' markers are evaluated against: the image's interpreter, not this one.
IMAGE_ENVIRONMENT = {
    **default_environment(),
    "python_version": build.PYTHON_VERSION,
    "python_full_version": f"{build.PYTHON_VERSION}.2",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}


def third_party_imports() -> dict[str, set[str]]:
    """Every non-stdlib, non-Tether module the image's Tether code imports -> the files importing it."""
    found: dict[str, set[str]] = {}
    for folder in IMAGE_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.partition(".")[0]
                    if top not in sys.stdlib_module_names and top not in ("tether", "__future__"):
                        found.setdefault(module, set()).add(str(path.relative_to(ROOT)))
    return found


def distribution_of(module: str) -> str:
    """The installed distribution providing `module` (a namespace package such as google.* has several)."""
    parts = module.split(".")
    candidates = metadata.packages_distributions().get(parts[0], [])
    if len(set(candidates)) > 1:
        prefix = "/".join(parts[:2])
        candidates = [
            name
            for name in set(candidates)
            if any(str(f).startswith(prefix) for f in metadata.distribution(name).files or ())
        ]
    assert len(set(candidates)) == 1, f"{module} comes from {sorted(set(candidates)) or 'no installed distribution'}"
    return build.canonical(candidates[0])


def declared_requirements(name: str) -> set[str]:
    """What the installed `name` requires on the image's platform, without extras."""
    required = set()
    for line in metadata.distribution(name).requires or ():
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(IMAGE_ENVIRONMENT):
            required.add(build.canonical(requirement.name))
    return required


def test_the_direct_pins_are_exactly_what_the_manager_imports():
    imports = third_party_imports()
    imported = {distribution_of(module) for module in imports}
    direct = {pin.key for pin in PINS if not pin.via}
    assert imported, "the walk found no imports"
    assert imported - direct == set(), f"imported but not pinned in {build.REQUIREMENTS.name}: {imported - direct}"
    assert direct - imported == set(), f"pinned as direct but imported by nothing: {direct - imported}"


def test_every_requirement_of_a_pin_is_pinned_or_left_out_on_purpose():
    unused = {build.canonical(name) for name in build.UNUSED_DECLARED}
    missing = {}
    for pin in PINS:
        for required in declared_requirements(pin.name) - set(PINNED) - unused:
            missing.setdefault(required, []).append(pin.name)
    assert not missing, f"required but neither pinned nor in UNUSED_DECLARED: {missing}"


def test_every_indirect_pin_is_required_by_what_its_comment_names():
    for pin in PINS:
        for parent in pin.via:
            assert build.canonical(parent) in PINNED, f"{pin.name} is via {parent}, which is not pinned"
            assert pin.key in declared_requirements(parent), f"{parent} does not require {pin.name}"


def test_what_is_left_out_is_really_declared_and_never_imported():
    declared = set().union(*(declared_requirements(pin.name) for pin in PINS))
    imported = {module.partition(".")[0] for module in third_party_imports()}
    for name in build.UNUSED_DECLARED:
        assert build.canonical(name) in declared, f"{name} is left out, but no pin requires it any more"
        assert build.canonical(name) not in PINNED
        assert name.replace("-", "_") not in imported
    for part in build.UNUSED_PARTS:
        module = part.replace("/", ".")
        users = [m for m in third_party_imports() if m == module or m.startswith(module + ".")]
        assert not users, f"{part} is removed from the image but imported: {users}"


def test_the_direct_pins_satisfy_pyproject():
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = {build.canonical(r.name): r for r in map(Requirement, dependencies)}
    for pin in PINS:
        if pin.via:
            continue
        assert pin.key in wanted, f"{pin.name} is imported by the manager but not a dependency in pyproject"
        assert wanted[pin.key].specifier.contains(pin.version), f"{pin.name}=={pin.version} vs {wanted[pin.key]}"


def test_no_qt_no_lab_in_the_pins():
    assert not {"pyside6", "pyside6-essentials", "shiboken6", "kmock", "aiohttp"} & set(PINNED)


@pytest.mark.parametrize(
    ("line", "problem"),
    [("grpcio>=1.0", "'grpcio>=1.0'"), ("grpcio", "'grpcio'"), ("grpcio==1.0 # from x", "'grpcio==1.0 # from x'")],
)
def test_a_pin_that_is_not_exact_is_refused_naming_its_line(line, problem):
    with pytest.raises(ValueError) as caught:
        build.read_pins(f"# header\n\n{line}\n")
    assert "line 3" in str(caught.value) and problem in str(caught.value)


def test_pins_read_with_their_parents_and_twice_is_an_error():
    assert build.read_pins("a==1\nB_c==2.0.post1  # via a, d\n") == [
        build.Pin("a", "1", ()),
        build.Pin("B_c", "2.0.post1", ("a", "d")),
    ]
    with pytest.raises(ValueError, match="'PyYAML' is listed twice"):
        build.read_pins("pyyaml==6\nPyYAML==6\n")


def test_wheel_platforms_are_bookworms_glibc_and_older():
    tags = build.wheel_platforms("x86_64")
    assert tags[0] == "manylinux_2_36_x86_64"
    assert {"manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"} <= set(tags)
    assert all(int(t.split("_")[2]) <= 36 for t in tags if t.startswith("manylinux_"))


def test_the_config_runs_tether_manager_as_a_user_that_is_not_root():
    spec = build.ImageSpec(version="1.2.3+local", revision="abc", source="https://example.invalid/t.git", epoch=0)
    args = build.image_config_args(spec)
    assert f"--config.user={build.UID}:{build.UID}" in args and build.UID != 0
    assert "--config.entrypoint=tether-manager" in args
    assert "--created=1970-01-01T00:00:00Z" in args
    assert "--config.label=org.opencontainers.image.version=1.2.3+local" in args
    assert "--manifest.annotation=org.opencontainers.image.revision=abc" in args
    assert spec.reference == "tether-manager:1.2.3_local"
    passwd, group = build.account_lines()
    assert passwd.split(":")[2:4] == [str(build.UID), str(build.UID)] and group.split(":")[2] == str(build.UID)
