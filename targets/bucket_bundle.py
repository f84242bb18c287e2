"""The layout of a bundle of shape buckets (aotc compile --bucket).

    manifest.json         format 2: the buckets, their sizes, pad values, and every file's SHA-256
    weights.bin           one file for every bucket (targets share the packed weights; see memory_plan)
    libaotc_runtime.so    ... and every other file whose bytes are the same in every bucket
    b1_s16/manifest.json  a complete format-1 bundle per bucket: its own manifest and model.so, and
    b1_s16/model.so       symbolic links (../weights.bin) to the shared files
    b1_s16/weights.bin -> ../weights.bin

Each bucket folder is an ordinary single-shape bundle, so the C runtime (aotc_load), the arm64 runner and
every check of docs/reliability.md apply to it unchanged; the runtime (runtime_stub/buckets.py) picks the
folder. The top-level manifest lists the SHA-256 of each bucket's manifest.json, so a signature over it
covers every bucket.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from .bundle import manifest_bytes


def bucket_files(variants: Sequence[tuple[str, Mapping[str, bytes], Mapping[str, Any]]]
                 ) -> tuple[dict[str, bytes], dict[str, str]]:
    """The files and links of a bucketed bundle from each bucket's (folder name, files, manifest): a file whose
    bytes are the same in every bucket is stored once at the top and linked from each folder."""
    first = variants[0][1]
    shared = sorted(n for n, data in first.items() if all(v[1].get(n) == data for v in variants[1:]))
    files = {n: first[n] for n in shared}
    links: dict[str, str] = {}
    for folder, vfiles, vmanifest in variants:
        for name, data in vfiles.items():
            if name in files and name in shared:
                links[f"{folder}/{name}"] = os.path.relpath(name, os.path.dirname(f"{folder}/{name}"))
            else:
                files[f"{folder}/{name}"] = data
        files[f"{folder}/manifest.json"] = manifest_bytes(vmanifest, vfiles)
    return files, links
