"""Nothing compiled shadows its source: every extension module is built from a .pyx,
has no .py twin, and is not older than the source it was built from."""

from __future__ import annotations

from pathlib import Path

import layotto_fast

PACKAGE = Path(layotto_fast.__file__).parent


def test_every_compiled_module_is_built_from_a_current_pyx() -> None:
    compiled = sorted(PACKAGE.rglob("*.so"))
    assert compiled, "no compiled modules: run make install"
    for module in compiled:
        stem = module.name.split(".", 1)[0]
        source = module.with_name(f"{stem}.pyx")
        assert source.exists(), f"{module} has no .pyx source: only .pyx files may be compiled"
        assert not module.with_name(f"{stem}.py").exists(), f"{module} shadows {stem}.py"
        assert module.stat().st_mtime >= source.stat().st_mtime, f"{module} is older than {source}: make install"


def test_the_per_call_python_modules_run_as_their_source() -> None:
    from layotto_fast.api import layotto
    from layotto_fast.components.state import memory

    for module in (layotto, memory):
        assert module.__file__ is not None and module.__file__.endswith(".py"), module.__file__
