"""Build steps that pyproject.toml cannot declare: protobuf generation, the embedded
component set, and the Cython extensions."""

from __future__ import annotations

import runpy
import shutil
from pathlib import Path

from Cython.Build import cythonize
from setuptools import setup

ROOT = Path(__file__).resolve().parent


def embed_default_components() -> None:
    """The repo's components/ folder is the embedded default set; ship a copy in the package."""
    target = ROOT / "layotto_fast" / "defaults"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    for source in (ROOT / "components").iterdir():
        if source.is_file():
            shutil.copy2(source, target / source.name)


runpy.run_path(str(ROOT / "proto" / "generate.py"))["generate"](ROOT)
embed_default_components()

# Plain Python modules on the per-call path, compiled as they are: their handlers and
# the in-memory store run as C, not bytecode. Type hints stay hints (no C typing).
COMPILED_PYTHON = ["layotto_fast/api/layotto.py", "layotto_fast/components/state_memory.py"]

setup(
    ext_modules=cythonize(
        ["layotto_fast/**/*.pyx"],
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
    )
    + cythonize(COMPILED_PYTHON, compiler_directives={"language_level": "3", "annotation_typing": False}),
)
