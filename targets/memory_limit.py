"""`aotc compile --max-memory`: a bundle whose arena and weights would not fit in memory is refused at
compile time, naming the tensors that need the memory, instead of compiling and then failing at load
(an 800 GB arena once compiled without a word and died in the runtime with MemoryError)."""
from __future__ import annotations

import re

from aotc.compiler.errors import AotcError

# Larger than any model aotc compiles for a CPU today (MiniLM: 3 MB arena), smaller than what makes a
# typo in --input-shape (1x1000000x768) an allocation a deployment machine cannot make.
DEFAULT_MAX_MEMORY = 16 << 30
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MB": 1 << 20, "MIB": 1 << 20,
          "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30, "T": 1 << 40, "TB": 1 << 40, "TIB": 1 << 40}


class MemoryLimitError(AotcError):
    """The compiled model would need more memory than --max-memory allows."""


def parse_memory_size(text: str) -> int:
    """'16G', '512MiB', '1e9' or a number of bytes (units are powers of 1024)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).upper() if m else ""
    if not m or unit not in _UNITS:
        raise AotcError(f"--max-memory {text!r} is not a size; write e.g. --max-memory 16G or --max-memory 512M.")
    size = int(float(m.group(1)) * _UNITS[unit])
    if size <= 0:
        raise AotcError(f"--max-memory {text!r} must be more than 0 bytes.")
    return size


def human_bytes(n: int) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def check_memory_limit(plan, max_memory: int | None) -> None:
    """Refuses a memory plan (targets/cpu/memory_plan.MemoryPlan) whose arena + weights exceed max_memory."""
    limit = DEFAULT_MAX_MEMORY if max_memory is None else max_memory
    total = plan.arena_bytes + plan.weight_bytes
    if total <= limit:
        return
    biggest = sorted(plan.storages, key=lambda s: (-s.nbytes, s.name))[:5]
    named = ", ".join(f"{s.name!r} {human_bytes(s.nbytes)}{' (constant)' if s.const else ''}" for s in biggest)
    raise MemoryLimitError(
        f"The compiled model would need {human_bytes(total)} at run time (arena {human_bytes(plan.arena_bytes)}, "
        f"weights {human_bytes(plan.weight_bytes)}), more than the limit of {human_bytes(limit)}. The largest "
        f"tensors: {named}. Check the input shapes (--input-shape), or raise the limit with --max-memory.")
