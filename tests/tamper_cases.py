"""The manifest-tamper matrix: every field of a bundle's manifest removed, given a wrong type, made
negative, huge, or off by one. Shared by tests/test_bundle_trust.py (the Python runtime) and
tests/sanitize/run_sanitizers.py (the C runtime under ASan/UBSan), which must refuse every case."""
from __future__ import annotations

import copy
import json

WRONG_TYPES = (None, True, "1", [], {}, 1.5)


def field_paths(man: dict) -> list[tuple]:
    """Every field the runtime reads, as a path of keys and list indices."""
    paths = [(k,) for k in ("format_version", "abi_version", "model_id", "arena_bytes", "weight_bytes", "files",
                            "inputs", "outputs")]
    paths += [("files", name) for name in ("model.so", "weights.bin")]
    for key in ("inputs", "outputs"):
        for i, item in enumerate(man[key]):
            paths += [(key, i), (key, i, "name"), (key, i, "dtype"), (key, i, "shape")]
            paths += [(key, i, "shape", k) for k in range(len(item["shape"]))]
    return paths


def _get(man, path):
    for p in path:
        man = man[p]
    return man


def mutations(value) -> list[tuple[str, object]]:
    """(label, new value) for one field; `...` means "remove it"."""
    out = [("removed", ...)] + [(f"type {json.dumps(v)}", v) for v in WRONG_TYPES if type(v) is not type(value)]
    if isinstance(value, int) and not isinstance(value, bool):
        out += [("negative", -1), ("huge", 2 ** 63), ("huge float", 1e300), ("plus one", value + 1)]
        if value > 0:
            out.append(("minus one", value - 1))
    if isinstance(value, str):
        out += [("empty", ""), ("changed", value[:-1] + ("0" if value[-1:] != "0" else "1"))]
    if isinstance(value, list):
        out += [("one more", value + value[:1] if value else [1]), ("one less", value[:-1])] if value else []
    return out


def tamper_cases(man: dict) -> list[tuple[str, dict]]:
    """(description, tampered manifest) for every field and mutation; none of them may load."""
    cases = []
    for path in field_paths(man):
        for label, new in mutations(_get(man, path)):
            m = copy.deepcopy(man)
            parent = _get(m, path[:-1])
            if new is ...:
                del parent[path[-1]]
            else:
                parent[path[-1]] = new
            cases.append((f"{'.'.join(map(str, path))} {label}", m))
    return cases
