"""The argument checks of the batch APIs: integer arrays in, checked
``int64``/``uint64`` copies out, so a kernel never sees a float, a negative
value where none belongs, or an array that changes under it.  Errors name
the argument and the first offending index."""
from __future__ import annotations

from typing import Any

import numpy as np

_I64_MAX = (1 << 63) - 1


def _integers(name: str, arr: Any) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != 1:
        raise TypeError(f"{name} must be a 1-D integer array")
    if a.size and a.dtype.kind not in "ui":
        raise TypeError(f"{name} must hold integers, not {a.dtype}")
    return a


def index_array(name: str, arr: Any) -> np.ndarray:
    """A 1-D ``int64`` copy of an integer array (values must fit in int64)."""
    a = _integers(name, arr)
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    if a.dtype == np.uint64 and int(a.max()) > _I64_MAX:
        k = int(np.argmax(a > _I64_MAX))
        raise ValueError(f"{name}[{k}] = {int(a[k])} is out of range")
    return np.array(a, dtype=np.int64, copy=True)


def value_array(name: str, arr: Any, hi: int) -> np.ndarray:
    """A 1-D ``uint64`` copy of an integer array of values in 0..``hi``."""
    a = _integers(name, arr)
    if a.size == 0:
        return np.zeros(0, dtype=np.uint64)
    if a.dtype.kind == "i" and int(a.min()) < 0:
        k = int(np.argmax(a < 0))
        raise ValueError(f"{name}[{k}] = {int(a[k])} is negative")
    if int(a.max()) > hi:
        k = int(np.argmax(a.astype(np.uint64) > np.uint64(hi)))
        raise ValueError(f"{name}[{k}] = {int(a[k])} does not fit in {int(hi).bit_length()} bits")
    return np.array(a, dtype=np.uint64, copy=True)


__all__ = ["index_array", "value_array"]
