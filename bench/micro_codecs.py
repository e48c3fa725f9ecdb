"""Micro-benchmarks of the mesh's codecs and route table (pytest-benchmark; ``make bench``
runs them, ``make test`` does not): decode and encode of one Bolt and one Dubbo frame,
the splitter over a 64 KiB read of small frames, a route lookup at 10 and 10 000 routes.
Each goes through the Python surface, so each figure includes one call into Rust.

    .venv/bin/python -m pytest bench/micro_codecs.py -o addopts="" --benchmark-only
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import layotto_fast_native as native
import pytest

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "mesh" / "golden" / "vectors.json"
VECTORS = json.loads(GOLDEN.read_text())
BOLT_REQUEST = bytes.fromhex(VECTORS["bolt_request_echo"]["hex"])
DUBBO_RESPONSE = bytes.fromhex(VECTORS["dubbo_response_echo"]["hex"])
HEADER = {"service": "com.example.EchoService:1.0", "sofa_head_method_name": "echo"}


def test_bolt_decode(benchmark: Any) -> None:
    assert benchmark(native.decode_bolt_request, BOLT_REQUEST)[0] >= 0


def test_bolt_encode(benchmark: Any) -> None:
    frame = benchmark(native.encode_bolt_request, 7, 11, 3000, "com.alipay.sofa.rpc.core.request.SofaRequest",
                      HEADER, b"payload")  # fmt: skip
    assert frame[:2] == b"\x01\x01"


def test_dubbo_encode(benchmark: Any) -> None:
    frame = benchmark(native.encode_dubbo_request, 7, "com.example.EchoService", "1.0", "echo",
                      "Ljava/lang/String;", ["hello"])  # fmt: skip
    assert frame[:2] == b"\xda\xbb"


def test_dubbo_decode(benchmark: Any) -> None:
    assert benchmark(native.decode_dubbo_response, DUBBO_RESPONSE)[2] == "hello"


def test_splitter_over_64k_of_small_frames(benchmark: Any) -> None:
    frames = BOLT_REQUEST * (65536 // len(BOLT_REQUEST))

    def split() -> int:
        return len(native.FrameSplitter("bolt").feed(frames))

    assert benchmark(split) == 65536 // len(BOLT_REQUEST)


@pytest.mark.parametrize("routes", [10, 10_000])
def test_route_lookup(benchmark: Any, routes: int) -> None:
    if not hasattr(native, "BenchRouteTable"):
        pytest.skip("needs the crate built with --features bench (make bench does)")
    table = native.BenchRouteTable([f"com.example.Service{i}:1.0" for i in range(routes)])
    assert benchmark(table.lookup, f"com.example.Service{routes - 1}:1.0") == routes - 1
