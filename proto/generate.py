"""Generate the Python protobuf/gRPC modules of proto/*.proto into layotto_fast/_proto.

Run by setup.py on every build and by ``make proto``. The import path is mapped so
that generated modules import each other as ``layotto_fast._proto.x_pb2``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "layotto_fast/_proto"


def generate(root: Path = ROOT) -> list[Path]:
    import grpc_tools
    from grpc_tools import protoc

    sources = sorted((root / "proto").glob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PACKAGE}={root / 'proto'}",
        f"-I{well_known}",
        f"--python_out={root}",
        f"--pyi_out={root}",
        f"--grpc_python_out={root}",
        *[str(s) for s in sources],
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {', '.join(s.name for s in sources)}")
    return sources


if __name__ == "__main__":
    names = [s.name for s in generate()]
    print(f"generated {PACKAGE} from {', '.join(names)}", file=sys.stderr)
