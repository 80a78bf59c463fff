"""Deterministic array files: numpy ``.npz`` archives written byte for byte the same for the same arrays.

``numpy.savez`` stamps each member with the current time, so two saves of the same weights differ. Here the
members are ``.npy`` files (numpy's own format, written by :func:`numpy.lib.format.write_array`) stored
uncompressed in a zip with a fixed timestamp and in sorted order; :func:`numpy.load` reads the result like any
``.npz``. Strings (the model specification as JSON) are stored as 0-d unicode arrays, so loading never needs
pickle.
"""

import io
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["FileFormatError", "load_arrays", "save_arrays"]

_EPOCH = (1980, 1, 1, 0, 0, 0)


class FileFormatError(ValueError):
    """A file is missing, unreadable or not of the expected kind (the message names the file)."""


def save_arrays(path, arrays):
    """Write ``arrays`` (a dict of name -> array or str) to ``path`` as a deterministic ``.npz``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            value = arrays[name]
            array = np.asarray(value) if not isinstance(value, str) else np.array(value)
            if array.dtype == object:
                raise TypeError(f"array {name!r} has dtype object; store numbers or a str")
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, array if array.flags.c_contiguous else array.copy(), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue())
    tmp.replace(path)
    return path


def load_arrays(path, *, kind, required=()):
    """Read an archive written by :func:`save_arrays` into a dict (strings come back as ``str``).

    Raises
    ------
    FileFormatError
        If the file is missing, is not an ``.npz`` archive, or lacks a ``required`` member; ``kind`` names what
        the file should have been ("weights file", ...) in the message.
    """
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"{path}: no such {kind}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            out = {}
            for name in archive.files:
                value = archive[name]
                out[name] = str(value) if value.dtype.kind == "U" and value.ndim == 0 else value
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise FileFormatError(f"{path}: not a {kind} ({error})") from None
    missing = [name for name in required if name not in out]
    if missing:
        raise FileFormatError(f"{path}: not a {kind} (missing {', '.join(missing)})")
    return out
