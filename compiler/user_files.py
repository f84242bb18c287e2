"""Files the CLI reads and writes for the user: output paths checked before any work is done, and the
.npz inputs/outputs of `aotc run`. A path the user got wrong (a folder that does not exist or cannot be
written, a directory where a file should go, a .npy or truncated zip given as .npz) is an AotcError
with a message that says which, not an internal error; outputs are written whole or not at all."""
from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

from .errors import AotcError


def file_sha256(path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks (models are hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class OutputPathError(AotcError):
    """An output path cannot be written."""


class InputFileError(AotcError):
    """An input file cannot be read as what it should be."""


def _writable_folder(folder: Path, flag: str, path: str) -> None:
    probe = folder
    while not probe.exists():  # a folder that would be created: its nearest existing ancestor decides
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise OutputPathError(f"{flag} {path!r}: {str(probe)!r} is a file, not a folder.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputPathError(f"{flag} {path!r}: the folder {str(probe)!r} is not writable.")


def check_output_file(path: str, flag: str = "-o") -> None:
    """A file `path` can be created or replaced (checked before the command does any work)."""
    p = Path(path)
    if p.is_dir():
        raise OutputPathError(f"{flag} {path!r} is a directory; give a file name.")
    if p.exists() and not os.access(p, os.W_OK):
        raise OutputPathError(f"{flag} {path!r} exists and is not writable.")
    parent = p.parent if str(p.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise OutputPathError(f"{flag} {path!r}: {str(parent)!r} is a file, not a folder.")
    if not parent.exists():
        raise OutputPathError(f"{flag} {path!r}: the folder {str(parent)!r} does not exist.")
    _writable_folder(parent, flag, path)


def check_output_dir(path: str, flag: str = "-o") -> None:
    """A bundle directory `path` can be created (its parents too) or replaced."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"{flag} {path!r} exists and is a file; a bundle is a directory.")
    _writable_folder(p.parent if str(p.parent) else Path("."), flag, path)


@contextmanager
def writing(path: str, flag: str = "-o"):
    """Turns an OSError of writing `path` (a full disk, a folder that is not really writable) into a user error."""
    try:
        yield
    except OSError as e:
        raise OutputPathError(f"Cannot write {flag} {str(path)!r}: {e.strerror or e}.") from None


def make_staging_dir(out: Path) -> Path:
    """A new empty folder beside the bundle directory `out`, to assemble the bundle in before renaming it."""
    check_output_dir(str(out))
    with writing(str(out)):
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))


def write_file_atomically(path: str, write, flag: str = "-o") -> None:
    """Calls write(fileobj) on a temporary file beside `path`, then renames it into place."""
    check_output_file(path, flag)
    with writing(path, flag):
        fd, tmp = tempfile.mkstemp(prefix=f".{Path(path).name}.", suffix=".partial", dir=Path(path).parent)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def read_npz(path: str, flag: str = "-i") -> dict:
    """The arrays of the .npz file `path`, every one read (so a bad CRC shows here, not later)."""
    import numpy as np
    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"{flag} {path!r}: " + ("is a directory" if p.is_dir() else "no such file") + "; give an "
                             ".npz file with one array per model input (numpy.savez).")
    try:
        with open(p, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise InputFileError(f"Cannot read {flag} {path!r}: {e.strerror or e}.") from None
    if magic.startswith(b"\x93NUMPY"):
        raise InputFileError(f"{flag} {path!r} is a single .npy array; give an .npz with one array per input name, "
                             "e.g. numpy.savez('in.npz', x=array).")
    try:
        with np.load(p, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise InputFileError(f"{flag} {path!r} is not an .npz archive.")
            return {k: data[k] for k in data.files}
    except InputFileError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise InputFileError(f"Cannot read {flag} {path!r} as .npz ({type(e).__name__}: {e}); it may be truncated "
                             "or not written by numpy.savez.") from None


def write_npz(path: str, arrays: dict, flag: str = "-o") -> None:
    """Writes `arrays` to the .npz file `path` (exactly that name: numpy.savez would append .npz)."""
    import numpy as np

    def write(f):  # numpy.savez's format, without its keyword arguments (an output named 'file' breaks them)
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
            for name, arr in arrays.items():
                with z.open(f"{name}.npy", "w", force_zip64=True) as g:
                    np.lib.format.write_array(g, np.asanyarray(arr), allow_pickle=False)
    write_file_atomically(path, write, flag)
