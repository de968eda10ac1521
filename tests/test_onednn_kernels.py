"""The oneDNN verbose tally counts only the last pass's convolution calls, by kernel, direction and shape."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from onednn_kernels import MARK, tally  # noqa: E402


def _line(impl: str, prop: str, shape: str, ms: float, kind: str = "convolution") -> str:
    return f"onednn_verbose,v1,primitive,exec,cpu,{kind},{impl},{prop},src:f32::blocked:acdb::f0,,{shape},{ms}"


def test_tally_sums_the_last_pass_by_kernel_and_ignores_other_primitives() -> None:
    lines = [
        _line("x64:gemm:jit", "backward_weights", "g32mb64_k5", 99.0),  # an earlier pass: not counted
        MARK,
        _line("x64:gemm:jit", "backward_weights", "g32mb64_k5", 20.0),
        _line("x64:gemm:jit", "backward_weights", "g32mb64_k5", 21.0),
        _line("jit_dw:avx2", "forward_training", "g32mb64_k5", 0.1),
        _line("jit:uni", "undef", "48x3x3x3", 5.0, kind="reorder"),
        "onednn_verbose,v1,info,cpu,isa:AVX2",
    ]
    rows, total = tally(lines)
    assert [(r["impl"], r["calls"]) for r in rows] == [("x64:gemm:jit", 2), ("jit_dw:avx2", 1)]
    assert rows[0]["ms"] == 41.0 and abs(total - 41.1) < 1e-9


def test_tally_of_output_without_convolutions_is_empty() -> None:
    assert tally(["nothing here", MARK]) == ([], 0)
