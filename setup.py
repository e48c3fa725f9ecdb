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

# Only .pyx sources are compiled: a .py module is always what runs, so an edit to one
# takes effect without a rebuild and no compiled copy can shadow it.
setup(
    ext_modules=cythonize(
        ["layotto_fast/**/*.pyx"],
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
    ),
)
