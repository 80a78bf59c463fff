"""Deterministic array files: numpy ``.npz`` archives written byte for byte the same for the same arrays.

``numpy.savez`` stamps each member with the current time, so two saves of the same weights differ. Here the
members are ``.npy`` files (numpy's own format, written by :func:`numpy.lib.format.write_array`) stored
uncompressed in a zip with a fixed timestamp and in sorted order; :func:`numpy.load` reads the result like any
``.npz``. Strings (the model specification as JSON) are stored as 0-d unicode arrays, so loading never needs
pickle.

Every writer here goes through :func:`replacing`: the data is written to a temporary file in the destination's
folder and renamed over the destination only when it is complete, so a failed or interrupted write leaves
neither a partial file nor a changed old one.
"""

import io
import os
import secrets
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

__all__ = ["FileFormatError", "load_arrays", "replacing", "save_arrays"]

_EPOCH = (1980, 1, 1, 0, 0, 0)


class FileFormatError(ValueError):
    """A file is missing, unreadable or not of the expected kind (the message names the file)."""


@contextmanager
def replacing(path):
    """Write a file all at once: yield a temporary path next to ``path`` and rename it to ``path`` on success.

    The temporary file (``.NAME.RANDOM.part`` in ``path``'s folder, created by the caller's writer, so it gets
    the usual permissions) is removed if the ``with`` block raises, and ``path`` keeps its old content. Missing
    parent folders are created.

    Examples
    --------
    >>> with replacing("out/table.txt") as tmp:  # doctest: +SKIP
    ...     tmp.write_text("complete")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_arrays(path, arrays):
    """Write ``arrays`` (a dict of name -> array or str) to ``path`` as a deterministic ``.npz``."""
    path = Path(path)
    with replacing(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
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
    if path.is_dir():
        raise FileFormatError(f"{path}: is a folder, not a {kind}")
    if not path.is_file():
        raise FileFormatError(f"{path}: no such {kind}")
    if path.stat().st_size == 0:
        raise FileFormatError(f"{path}: not a {kind} (the file is empty)")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("a single array, not an .npz archive")
        with archive:
            out = {}
            for name in archive.files:
                value = archive[name]
                if not isinstance(value, np.ndarray):
                    raise ValueError(f"member {name!r} is not a numpy array")
                out[name] = str(value) if value.dtype.kind == "U" and value.ndim == 0 else value
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
        raise FileFormatError(f"{path}: not a {kind} ({error})") from None
    missing = [name for name in required if name not in out]
    if missing:
        raise FileFormatError(f"{path}: not a {kind} (missing {', '.join(missing)})")
    return out
