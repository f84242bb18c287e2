"""The AscendCL driver sources of a bundle (folder driver/): aotc_ascend.cpp, rendered with the model's
inputs and outputs compiled in; the CMakeLists.txt that builds it against CANN; aotc_runtime.h, the C API it
implements (the thin runtime's own header, so an application switches bundles without a code change); and
the .npy runner the arm64 bundles ship, which needs nothing but that API."""
from __future__ import annotations

from pathlib import Path

import jinja2
import numpy as np

from aotc.targets.runtime_library import RUNTIME_DIR, glibc_compat_source

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
RUNTIME_HEADER = RUNTIME_DIR / "aotc_runtime.h"
RUNNER = HERE.parent / "arm64" / "templates" / "runner.c"


def c_string(text: str) -> str:
    """`text` as the inside of a C string literal (UTF-8; quotes, backslashes and non-printables escaped;
    octal escapes are always three digits, so a following digit cannot extend them)."""
    out = []
    for b in text.encode():
        out.append("\\" + chr(b) if b in (0x22, 0x5C) else chr(b) if 32 <= b < 127 and b != 0x3F else f"\\{b:03o}")
    return "".join(out)


def _spec(io: dict) -> dict:
    shape = [int(d) for d in io["shape"]]
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(io["dtype"]).itemsize
    return {"name_c": c_string(io["name"]), "dtype": io["dtype"], "ndim": len(shape),
            "shape_c": ", ".join(str(d) for d in shape) or "0", "nbytes": nbytes}


def driver_files(inputs: list[dict], outputs: list[dict], model_id: str) -> dict[str, bytes]:
    """inputs/outputs: the manifest's [{"name", "dtype", "shape"}], in model order."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    max_rank = max([1] + [len(io["shape"]) for io in [*inputs, *outputs]])
    source = env.get_template("aotc_ascend.cpp.j2").render(
        model_id=model_id, max_rank=max_rank, inputs=[_spec(i) for i in inputs], outputs=[_spec(o) for o in outputs])
    return {"driver/aotc_ascend.cpp": source.encode(),
            "driver/CMakeLists.txt": (TEMPLATES / "CMakeLists.txt").read_bytes(),
            "driver/aotc_runtime.h": RUNTIME_HEADER.read_bytes(),
            "driver/aotc_runner.c": RUNNER.read_bytes(),
            "driver/glibc_compat.h": glibc_compat_source().encode()}  # the runner includes it
