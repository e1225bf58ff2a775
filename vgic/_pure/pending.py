"""Two ways to load LPI pending state from a pending table: the twin of
``vgic._core.pending`` (see there for why both exist)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..guestmem import check_lpi_intids, check_memory
from ..regmap import LPI_BASE

# The largest table sync_scan takes (512 MiB): its last bit is INTID 2**32 - 1.
_MAX_TABLE_BYTES = 1 << 29


def sync_per_lpi(table: Any, intids: Any) -> np.ndarray:
    """For each INTID: its pending bit, cleared in ``table`` when set."""
    try:
        t = check_memory(table)
    except TypeError:
        raise TypeError("table must be a writable 1-D C-contiguous numpy uint8 array") from None
    ids = check_lpi_intids(intids, t.shape[0]).astype(np.int64)
    out = np.zeros(ids.shape[0], dtype=np.uint8)
    for k, n in enumerate(ids.tolist()):
        byte = int(t[n >> 3])
        bit = (byte >> (n & 7)) & 1
        if bit:
            t[n >> 3] = byte & ~(1 << (n & 7))
        out[k] = bit
    return out


def sync_scan(table: Any, mapped: Any) -> np.ndarray:
    """One scan from byte 1024: each set bit whose INTID is in ``mapped``
    (a uint64 bitmap by INTID) is taken and cleared; the INTIDs, increasing."""
    try:
        t = check_memory(table)
    except TypeError:
        raise TypeError("table must be a writable 1-D C-contiguous numpy uint8 array") from None
    if t.shape[0] > _MAX_TABLE_BYTES:
        raise ValueError(f"table holds {t.shape[0]} bytes: INTIDs must fit 32 bits "
                         f"(at most {_MAX_TABLE_BYTES} bytes)")
    m = np.ascontiguousarray(mapped, dtype=np.uint64)
    if m.ndim != 1 or m.shape[0] * 8 < t.shape[0]:
        raise ValueError(f"mapped must be a 1-D uint64 bitmap of at least {t.shape[0] * 8} bits")
    words = m.tolist()
    out = []
    for i in range(LPI_BASE >> 3, t.shape[0]):
        byte = int(t[i])
        for b in range(8):
            if byte >> b & 1:
                n = i * 8 + b
                if words[n >> 6] >> (n & 63) & 1:
                    t[i] &= ~(1 << b) & 0xFF
                    out.append(n)
    return np.array(out, dtype=np.uint32)
