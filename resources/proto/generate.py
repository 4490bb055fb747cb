"""Regenerate the Python gRPC stubs from the .proto files beside this script.

The stubs are committed; tests/unit/test_proto_stubs.py fails when they are stale.
Usage: python resources/proto/generate.py [OUTPUT_ROOT]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PROTO_ROOT.parent.parent
# proto package folder -> the repository folder that holds that import path
TARGETS = {
    "tether/manager/api": "manager/api",
    "tether/helper/api": "helper/api",
}


def generate(output_root: Path) -> list[Path]:
    """Write the stubs under output_root (mirroring the repository layout); return the files written."""
    from grpc_tools import protoc

    written: list[Path] = []
    with tempfile.TemporaryDirectory() as scratch:
        for proto_dir, repo_dir in TARGETS.items():
            protos = sorted((PROTO_ROOT / proto_dir).glob("*.proto"))
            if not protos:
                continue
            args = [
                "protoc",
                f"-I{PROTO_ROOT}",
                f"--python_out={scratch}",
                f"--pyi_out={scratch}",
                f"--grpc_python_out={scratch}",
                *(str(p) for p in protos),
            ]
            if protoc.main(args) != 0:
                raise SystemExit(f"protoc failed for {proto_dir}")
            destination = output_root / repo_dir
            destination.mkdir(parents=True, exist_ok=True)
            for produced in sorted((Path(scratch) / proto_dir).iterdir()):
                target = destination / produced.name
                shutil.copyfile(produced, target)
                written.append(target)
    return written


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO_ROOT
    for path in generate(root):
        print(path)
