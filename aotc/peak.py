"""This machine's two roofline ceilings, measured: float32 FMA throughput (a small C program with 12
independent vector FMA chains per thread, built with the host C compiler for the host CPU) and copy
bandwidth (a 256 MB numpy copy: read + write). Best of a few short runs; measured each time, since a
machine's speed drifts (and a busy machine gives lower ceilings: the report says what was measured)."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

FMA_SOURCE = r"""
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
typedef float v16 __attribute__((vector_size(64)));
static long iters;
static float sink[64];
static void* work(void* arg) {
  v16 a[12], b, c;
  for (int j = 0; j < 16; j++) { b[j] = 1.0000001f; c[j] = 1e-7f; }
  for (int i = 0; i < 12; i++) for (int j = 0; j < 16; j++) a[i][j] = (float)(i + j);
  for (long n = 0; n < iters; n++)
    _Pragma("GCC unroll 12") for (int i = 0; i < 12; i++) a[i] = a[i] * b + c;
  v16 s = a[0];
  for (int i = 1; i < 12; i++) s += a[i];
  sink[(long)arg % 64] = s[0];
  return NULL;
}
int main(int argc, char** argv) {
  int threads = atoi(argv[1]);
  iters = atol(argv[2]);
  pthread_t t[256];
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (long i = 0; i < threads; i++) pthread_create(&t[i], NULL, work, (void*)i);
  for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  printf("%.3f\n", threads * (double)iters * 12 * 16 * 2 / s / 1e9);
  return sink[0] == 12345.f;
}
"""


def fma_gflops(threads: int) -> tuple[float, str]:
    """Peak float32 GFLOP/s over `threads` threads, and how it was measured."""
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        return _sgemm_gflops(threads), "numpy sgemm 2048x2048 (no C compiler for the FMA kernel)"
    with tempfile.TemporaryDirectory(prefix="aotc-peak-") as tmp:
        src, exe = Path(tmp) / "fma.c", Path(tmp) / "fma"
        src.write_text(FMA_SOURCE)
        flags = ["-O3", "-march=native", "-pthread"] + (["-mprefer-vector-width=512"] if _x86() else [])
        if subprocess.run([cc, *flags, str(src), "-o", str(exe)], capture_output=True).returncode != 0:
            return _sgemm_gflops(threads), "numpy sgemm 2048x2048 (the FMA kernel did not build)"
        # One core's best of 5, times the threads: FMA throughput scales with cores, and one short run is
        # less disturbed by other processes than all cores at once.
        best = max(float(subprocess.run([str(exe), "1", "10000000"], capture_output=True, text=True,
                                        check=True).stdout) for _ in range(5))
    return best * threads, f"{threads} x one core's 12 independent 16-lane FMA chains ({cc} -march=native)"


def _x86() -> bool:
    import platform
    return platform.machine() in ("x86_64", "AMD64")


def _sgemm_gflops(threads: int) -> float:
    from threadpoolctl import threadpool_limits
    a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
    with threadpool_limits(threads):
        a @ a
        return 2 * 2048 ** 3 / min(_timed(lambda: a @ a) for _ in range(3)) / 1e9


def copy_gbps() -> float:
    src = np.ones(64 << 20, np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    return 2 * src.nbytes / min(_timed(lambda: np.copyto(dst, src)) for _ in range(5)) / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def machine_peak(threads: int) -> dict:
    n = threads or os.cpu_count() or 1
    gflops, how = fma_gflops(n)
    return {"threads": n, "gflops": gflops, "gbps": copy_gbps(), "how": f"{how}; a 256 MB numpy copy"}
