"""make bench's InvokeService line shows each round's added p99, paired with the same round's direct call."""

from __future__ import annotations

import pytest

from bench.mesh import Run, added_by_round


def run(p99_us: float) -> Run:
    return Run(ok=1, errors=0, per_second=1.0, p50_us=1.0, p99_us=p99_us, proxy_cpu_us=0.0, load_cpu_share=0.0)


def test_each_round_is_set_against_its_own_direct_call_in_run_order() -> None:
    through = [run(300), run(450), run(260)]
    direct = [run(120), run(140), run(110)]
    assert added_by_round(through, direct) == "180, 310, 150"


def test_rounds_that_do_not_pair_up_are_an_error() -> None:
    with pytest.raises(ValueError):
        added_by_round([run(300)], [run(120), run(130)])
