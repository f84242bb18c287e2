"""Sensitivity fallback (`max_drop`): keep the layers the output is most
sensitive to in float until the output error on the calibration set is within
the budget.

Sensitivity of a layer = the output error (1 - cosine vs the float model) when
it alone is quantized. Layers are ranked by it; the fallback set is the
shortest prefix of that ranking whose removal brings the fully quantized
model's error to at most `max_drop`, found by bisection on the prefix length
(the error is taken to fall as more layers go back to float, which holds on
the models tested; the report shows the measured errors so a non-monotone case
is visible).
"""
from __future__ import annotations

from typing import Callable, Sequence


def choose_fallback(evaluate: Callable[[set[str]], float], names: Sequence[str], max_drop: float
                    ) -> tuple[list[str], dict]:
    """`evaluate(quantized_names)` -> output error. Returns (names kept float, report)."""
    all_q = set(names)
    full = evaluate(all_q)
    report = {"max_drop": max_drop, "metric": "1 - cosine(float, int8) on the calibration set",
              "error_all_int8": full, "per_node": {}, "fallback": [], "error_after": full, "evaluations": 1}
    if full <= max_drop:
        return [], report
    per_node = {n: evaluate({n}) for n in names}
    report["per_node"] = per_node
    order = sorted(names, key=lambda n: -per_node[n])
    errors: dict[int, float] = {0: full, len(order): 0.0}
    lo, hi = 0, len(order)  # error(lo) > max_drop >= error(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        errors[mid] = evaluate(all_q - set(order[:mid]))
        if errors[mid] <= max_drop:
            hi = mid
        else:
            lo = mid
    report.update(fallback=order[:hi], error_after=errors[hi], evaluations=1 + len(names) + len(errors) - 2,
                  errors_by_fallback_count={str(k): v for k, v in sorted(errors.items())})
    return order[:hi], report
