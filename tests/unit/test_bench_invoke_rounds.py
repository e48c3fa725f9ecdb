"""make bench's InvokeService lines: each round's added p99, paired with the same round's direct call, and the
invoke's p50 split into the two hops it is made of."""

from __future__ import annotations

import pytest

from bench.mesh import Run, added_by_round, hops_note


def run(p99_us: float, p50_us: float = 1.0) -> Run:
    return Run(ok=1, errors=0, per_second=1.0, p50_us=p50_us, p99_us=p99_us, proxy_cpu_us=0.0, load_cpu_share=0.0)


def test_each_round_is_set_against_its_own_direct_call_in_run_order() -> None:
    through = [run(300), run(450), run(260)]
    direct = [run(120), run(140), run(110)]
    assert added_by_round(through, direct) == "180, 310, 150"


def test_rounds_that_do_not_pair_up_are_an_error() -> None:
    with pytest.raises(ValueError):
        added_by_round([run(300)], [run(120), run(130)])


def test_the_time_between_the_hops_is_the_invoke_less_both_hops() -> None:
    note = hops_note(invoke=run(400, p50_us=250), hop=run(150, p50_us=80), direct=run(100, p50_us=58))
    assert "p50 250 µs = gRPC hop 80 + bolt round trip 58 + 112 between them" in note
