"""nvcc: the bundle's CUDA source -> one fatbin (SASS for each arch, PTX for the newest so later GPUs can JIT
it), plus each kernel's resource usage as ptxas reports it (`-Xptxas -v`: registers, shared memory, spills),
which the bundle records and the tests check against each arch's limits without a GPU or cuobjdump."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from aotc.compiler.errors import AotcError

# Shared memory one block may use (static + dynamic), CUDA C Programming Guide table 21 (compute capability
# 8.0: 163 KB, 9.0: 227 KB), and the registers one thread may use.
ARCH_LIMITS = {"sm_80": {"smem_per_block": 163 * 1024, "regs_per_thread": 255},
               "sm_90": {"smem_per_block": 227 * 1024, "regs_per_thread": 255}}


class NvccError(AotcError):
    """nvcc is missing or failed on the generated kernels."""


def nvcc_path() -> str | None:
    return os.environ.get("AOTC_NVCC") or shutil.which("nvcc") or (
        "/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").is_file() else None)


def gencode_flags(archs: tuple[str, ...]) -> list[str]:
    """SASS for every arch, PTX of the newest (a later GPU JIT-compiles it; an sm_80 cubin alone is refused
    on sm_90)."""
    flags = []
    for a in archs:
        n = a.split("_")[1]
        code = f"[sm_{n},compute_{n}]" if a == archs[-1] else f"sm_{n}"
        flags += ["-gencode", f"arch=compute_{n},code={code}"]
    return flags


_PTXAS_FN = re.compile(r"Compiling entry function '(\w+)' for '(sm_\d+)'")
_PTXAS_STACK = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def parse_ptxas(log: str) -> list[dict]:
    """ptxas -v lines -> one record per (kernel, arch)."""
    out, cur = [], None
    for line in log.splitlines():
        m = _PTXAS_FN.search(line)
        if m:
            cur = {"kernel": m.group(1), "arch": m.group(2), "registers": 0, "smem": 0, "stack": 0,
                   "spill_stores": 0, "spill_loads": 0}
            out.append(cur)
            continue
        if cur is None:
            continue
        m = _PTXAS_STACK.search(line)
        if m:
            cur["stack"], cur["spill_stores"], cur["spill_loads"] = map(int, m.groups())
        m = re.search(r"Used (\d+) registers", line)
        if m:
            cur["registers"] = int(m.group(1))
            s = re.search(r"(\d+) bytes smem", line)
            cur["smem"] = int(s.group(1)) if s else 0
    return sorted(out, key=lambda r: (r["kernel"], r["arch"]))


def build_fatbin(source: str, archs: tuple[str, ...], workdir: Path) -> tuple[bytes, list[dict]]:
    nvcc = nvcc_path()
    if nvcc is None:
        raise NvccError("The CUDA targets compile kernels with nvcc (CUDA 12.x or 13.x toolkit), which is not on "
                        "PATH or in /usr/local/cuda/bin; install the CUDA toolkit or set AOTC_NVCC to nvcc.")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "kernels.cu").write_text(source)
    # Relative names in a fixed folder: nvcc embeds no path, so rebuilds are byte-identical.
    cmd = [nvcc, "-fatbin", "-O3", "-std=c++17", "-Xptxas", "-v", *gencode_flags(archs), "-o", "model.fatbin",
           "kernels.cu"]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if proc.returncode != 0:
        raise NvccError(f"nvcc failed on the generated kernels ({' '.join(cmd)}): "
                        f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
    return (workdir / "model.fatbin").read_bytes(), parse_ptxas(proc.stderr + proc.stdout)
