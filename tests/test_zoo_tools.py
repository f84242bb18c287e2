"""bench/cliffs.py's selection and classes, on profile rows written by hand (no compile, no timing)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from cliffs import MAX_OF_ROOFLINE, MIN_SHARE, classify, cliffs_of, rank_classes  # noqa: E402


def row(kernel, op, share, of_roofline, shapes=None, kind=""):
    return {"kernel": kernel, "op": op, "nodes": ["n"], "calls": 1, "us": 1000 * share, "share": share,
            "gflops": 1.0, "gbps": 1.0, "of_roofline": of_roofline, "shapes": shapes, "kind": kind}


def test_cliffs_are_slow_and_big():
    prof = {"kernels": [row("k0", "MatMul", 0.5, 0.004, [[64, 768], [768, 50257], [64, 50257]], "matmul|ta=False"),
                        row("k1", "Add", 0.5, MAX_OF_ROOFLINE + 0.01),       # fast enough
                        row("k2", "Softmax", MIN_SHARE / 2, 0.01),            # too small to matter
                        row("k3", "Softmax", 0.1, 0.05, [[9000, 1500], [9000, 1500]], "Softmax|axis=-1|")]}
    found = cliffs_of("m", prof)
    assert [c["kernel"] for c in found] == ["k0", "k3"]
    classes = rank_classes(found)
    assert classes[0]["class"] == "GEMM (unpacked B, ragged N, large N)" and classes[0]["models"] == ["m"]


def test_classes_name_what_a_fix_would_target():
    assert classify(row("k", "FusedMatMul", 0, 0, [[1, 1280], [80, 1280, 16], [1000], [1, 1000]],
                        "packed_gemm|1008|epi")) == "GEMM (packed weight, ragged N, small M)"
    assert classify(row("k", "Attention", 0, 0, [[1, 197, 2304], [1, 12, 64, 208], [1, 12, 197, 197]],
                        "attn_scores|h=12")) == "Attention attn_scores (ragged key count)"
    assert classify(row("k", "BlockedConv", 0, 0, [[1, 3, 224, 224], [1, 3, 3, 3, 16], [1, 16], [1, 1, 112, 112, 16]],
                        "blockedconv|direct|[3, 3],[2, 2],[1, 1],[1, 1]")) == "conv 3x3 stride 2x2 (stem)"
    assert classify(row("k", "LayerNormalization", 0, 0, [[197, 768], [768], [197, 768]])) == \
        "LayerNormalization (whole-vector rows of >= 64)"
    assert classify(row("k", "MaxPool", 0, 0)) == "elementwise/other (MaxPool)"
