"""Reading numpy arrays from data files without running code and without raw tracebacks.

``.npy`` and ``.npz`` are read with ``allow_pickle=False``. A ``.pkl`` (OGM-GE writes AVE
spectrograms with ``pickle.dump``) goes through :class:`ArrayUnpickler`, whose allowlist is
exact: the handful of functions that rebuild a numeric array, looked up by (module, name)
without imports or attribute traversal (a dotted name such as ``numpy.dtypes`` +
``__builtins__.get`` reached ``eval`` through the former prefix rule). Anything else in the
file is refused before it is called. A file that does not parse is a one-line
:class:`DataError` naming it.
"""

from __future__ import annotations

import io
import pickle
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from trainers.data.contract import DataError

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct
    from numpy.core.numeric import _frombuffer

NUMERIC_KINDS = "biuf"  # bool, signed/unsigned int, float: what a modality can be made of
READ_ERRORS = (OSError, ValueError, EOFError, IndexError, KeyError, zipfile.BadZipFile,
               zlib.error, pickle.UnpicklingError)
TO_NPY = ("convert it once to .npy where you trust it: python -c \"import pickle, numpy; "
          "numpy.save('<id>.npy', pickle.load(open('<id>.pkl', 'rb')))\"")


def _latin1(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as numpy's protocol 0-2 pickles use it (array bytes as latin-1 text);
    any other codec is refused."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1")


# (module, name) as written by numpy 1.x and 2.x -> the object itself; nothing else resolves.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
}


class ArrayUnpickler(pickle.Unpickler):
    """Unpickles numeric numpy arrays and nothing else: a .pkl file cannot run code on load."""

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy "
                                         "arrays are read from .pkl files")
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing a persistent id: only numpy arrays")


def load_array(path: Path) -> np.ndarray:
    """A numeric numpy array from .npy (no pickles) or a pickled array (.pkl, see module doc)."""
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            with open(path, "rb") as f:
                arr = ArrayUnpickler(f).load()
    except READ_ERRORS as e:
        hint = TO_NPY if path.suffix.lower() == ".pkl" else "re-create the file"
        raise DataError(f"{path}: cannot read array ({e}); {hint}") from e
    if not isinstance(arr, np.ndarray):
        raise DataError(f"{path}: holds a {type(arr).__name__}, not a numpy array")
    if arr.dtype.kind not in NUMERIC_KINDS:
        raise DataError(f"{path}: array of dtype {arr.dtype}, expected numbers (bool, int or "
                        "float)")
    return arr


def load_npz(source: str | Path | bytes, where: str, hint: str) -> dict[str, np.ndarray]:
    """Every array of an .npz (from a path or its bytes), read in full so that a truncated or
    corrupt member fails here; errors name ``where`` and end with ``hint``."""
    data = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    if not zipfile.is_zipfile(data):
        raise DataError(f"{where}: not a complete .npz archive (no zip directory: truncated, "
                        f"or not an .npz at all); {hint}")
    if isinstance(data, io.BytesIO):
        data.seek(0)
    try:
        with np.load(data, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except READ_ERRORS as e:
        raise DataError(f"{where}: corrupt or truncated .npz ({e}); {hint}") from e
