"""The thin runtime as a CPU bundle carries it: libaotc_runtime.so built from runtime_stub/aotc_runtime.c by
the target's C compiler, its source and header, and a C example that runs the bundle through the C API.

With the library inside the bundle, running needs no C compiler: runtime_stub.load dlopens the bundle's own
library once its SHA-256 matches the manifest, and a C program links against it. The build is reproducible
(no build id, stripped, sources compiled under relative names in a scratch folder), so bundles stay
byte-identical from build to build."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

RUNTIME_DIR = Path(__file__).resolve().parent.parent / "runtime_stub"
RUNTIME_LIB = "libaotc_runtime.so"
RUNTIME_SOURCES = ("aotc_runtime.c", "aotc_runtime.h", "glibc_compat.h", "run_bundle_example.c")
# The libraries that defined dlopen and the pthread functions before glibc 2.34, named by file so they stay
# DT_NEEDED (they are empty on a new glibc): with glibc_compat.h's symbol versions the bundle loads on both.
OLD_GLIBC_LIBS = ("-Wl,--no-as-needed", "-l:libdl.so.2", "-l:libpthread.so.0")
# Drop what differs between two builds of the same sources (the build id) or names the build machine.
REPRODUCIBLE_LINK = ("-Wl,--build-id=none", "-Wl,--hash-style=gnu", "-Wl,-s")


def compile_c(cc: str, cflags, workdir: Path, args: list[str], what: str, error: type[Exception]) -> None:
    """Run `cc` in `workdir` reproducibly; `error` (an AotcError) names the command and the compiler's words."""
    cmd = [cc, *cflags, "-std=gnu11", *args, *REPRODUCIBLE_LINK, f"-ffile-prefix-map={workdir}=."]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if proc.returncode != 0:
        raise error(f"Building {what} failed ({' '.join(cmd)}): {proc.stderr.strip()[:2000]}")


def runtime_files(cc: str, cflags, workdir: Path, error: type[Exception]) -> dict[str, bytes]:
    """{file name: bytes} of libaotc_runtime.so, built with `cc` and `cflags` in `workdir`, and its sources."""
    workdir.mkdir(parents=True, exist_ok=True)
    for name in RUNTIME_SOURCES:
        shutil.copyfile(RUNTIME_DIR / name, workdir / name)
    compile_c(cc, cflags, workdir, ["-fPIC", "-shared", "-fvisibility=default", "-o", RUNTIME_LIB, "aotc_runtime.c",
                                    *OLD_GLIBC_LIBS], RUNTIME_LIB, error)
    return {name: (workdir / name).read_bytes() for name in (RUNTIME_LIB, *RUNTIME_SOURCES)}


def glibc_compat_source() -> str:
    """glibc_compat.h's text, pasted into each driver so model.so binds the same symbol versions."""
    return (RUNTIME_DIR / "glibc_compat.h").read_text()
