"""The oldest glibc a bundle's native code loads on: the newest GLIBC_x.y symbol version its ELF files
require (their version-needs section). Linked as they are on a new glibc, dlopen and the pthread functions
would ask for GLIBC_2.34 (they moved into libc.so.6 then); runtime_stub/glibc_compat.h binds them to the
architecture's first version, so a bundle's files need 2.17 (tests/test_bundle_glibc.py runs bundles under
Debian 11's glibc 2.31, x86-64 and arm64). The manifest records the figure, `aotc inspect` prints it and the Python
runtime refuses an older glibc with that sentence instead of the dynamic linker's "version `GLIBC_x' not
found"."""
from __future__ import annotations

import re
import struct
from collections.abc import Mapping

SHT_GNU_VERNEED = 0x6FFFFFFE
_GLIBC = re.compile(rb"GLIBC_(\d+)\.(\d+)(?:\.(\d+))?$")


def _version_needs(data: bytes) -> list[bytes]:
    """The version names a 64-bit little-endian ELF file requires (empty for anything else)."""
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return []
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    if shentsize < 64 or shoff + shnum * shentsize > len(data):
        return []
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names = []
    for _name, kind, _flags, _addr, offset, size, link, info, _align, _entsize in sections:
        if kind != SHT_GNU_VERNEED or link >= shnum:
            continue
        strtab = sections[link][4]
        pos, end = offset, offset + size
        for _ in range(info):  # sh_info: the number of Verneed entries
            if pos + 16 > end:
                break
            _ver, count, _file, aux, nxt = struct.unpack_from("<HHIII", data, pos)
            apos = pos + aux
            for _ in range(count):
                if apos + 16 > end:
                    break
                _hash, _flags, _other, name, anext = struct.unpack_from("<IHHII", data, apos)
                names.append(data[strtab + name:data.index(b"\0", strtab + name)])
                if not anext:
                    break
                apos += anext
            if not nxt:
                break
            pos += nxt
    return names


def glibc_needed(data: bytes) -> tuple[int, ...] | None:
    """The newest GLIBC_ version one ELF file requires, as a tuple ((2, 34)), or None."""
    found = [tuple(int(g) for g in m.groups() if g is not None) for n in _version_needs(data)
             if (m := _GLIBC.match(n))]
    return max(found) if found else None


def bundle_glibc(files: Mapping[str, bytes]) -> str | None:
    """The newest GLIBC_ version any of a bundle's files requires ("2.34"), or None."""
    found = [v for data in files.values() if (v := glibc_needed(data)) is not None]
    return ".".join(map(str, max(found))) if found else None
