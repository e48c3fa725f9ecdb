"""Generate the Python protobuf/gRPC modules of proto/*.proto into layotto_fast/_proto.

Run by setup.py on every build and by ``make proto``. The import path is mapped so
that generated modules import each other as ``layotto_fast._proto.x_pb2``: the files
import their siblings by bare name (``import "appcallback.proto"``, which every other
generator and proto-loader resolves next to the file), and are compiled from a copy
whose sibling imports carry the package path.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "layotto_fast/_proto"


def generate(root: Path = ROOT) -> list[Path]:
    import grpc_tools

    sources = sorted((root / "proto").glob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    names = {s.name for s in sources}
    with tempfile.TemporaryDirectory() as copy:
        for source in sources:
            text = re.sub(
                r'^import "([^"/]+\.proto)";',
                lambda m: f'import "{PACKAGE}/{m[1]}";' if m[1] in names else m[0],
                source.read_text(encoding="utf-8"),
                flags=re.MULTILINE,
            )
            (Path(copy) / source.name).write_text(text, encoding="utf-8")
        _protoc(root, Path(copy), well_known, sources)
    return sources


def _protoc(root: Path, folder: Path, well_known: Path, sources: list[Path]) -> None:
    from grpc_tools import protoc

    args = [
        "protoc",
        f"-I{PACKAGE}={folder}",
        f"-I{well_known}",
        f"--python_out={root}",
        f"--pyi_out={root}",
        f"--grpc_python_out={root}",
        *[str(folder / s.name) for s in sources],
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {', '.join(s.name for s in sources)}")


if __name__ == "__main__":
    names = [s.name for s in generate()]
    print(f"generated {PACKAGE} from {', '.join(names)}", file=sys.stderr)
