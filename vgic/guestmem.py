"""Guest RAM as the kernels see it (the twin of ``_core/guestmem.pxd``).

One contiguous host buffer (a writable 1-D ``uint8`` numpy array) stands for
the guest-physical range ``gpa .. gpa + size - 1``.  Every access is checked
against that range first: a guest-supplied address outside RAM is a failed
access (``None``/``False`` here, -1 in the core) that the caller turns into
what KVM does - a skipped ITS command, ``-EFAULT`` on the userspace path -
and never a host access outside the buffer.  Table entries are
little-endian, as the KVM ITS ABI lays them out.
"""
from __future__ import annotations

import numpy as np


def check_memory(memory: object) -> np.ndarray:
    """``memory`` as the plain writable, C-contiguous, 1-D ``uint8`` array it
    must be (``TypeError`` otherwise): the kernels keep a pointer into it."""
    if not isinstance(memory, np.ndarray):
        raise TypeError(f"memory must be a numpy uint8 array, not {type(memory).__name__}")
    base = np.asarray(memory)
    if base.dtype != np.uint8 or base.ndim != 1 or not base.flags.c_contiguous or not base.flags.writeable:
        raise TypeError("memory must be a writable 1-D C-contiguous numpy uint8 array")
    return base


def check_lpi_intids(intids: object, nbytes: int) -> np.ndarray:
    """``intids`` as a C-contiguous uint32 array of LPIs (8192 and up) whose
    bits lie in a pending table of ``nbytes`` bytes (``TypeError`` for a
    non-integer array, ``ValueError`` naming an INTID outside)."""
    from vgic.ich import LPI_BASE
    ids = np.asarray(intids)
    if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
        raise TypeError("intids must be a 1-D integer array")
    if ids.size:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < LPI_BASE or hi >= nbytes * 8:
            raise ValueError(f"intids must be LPIs inside the table ({LPI_BASE}..{nbytes * 8 - 1}), "
                             f"got {lo if lo < LPI_BASE else hi}")
    return np.ascontiguousarray(ids, dtype=np.uint32)


def check_entry_offsets(memory: object, offsets: object, what: str = "offsets") -> tuple[np.ndarray, np.ndarray]:
    """(memory, offsets) for a kernel that moves 8-byte entries at byte
    offsets into ``memory``: the memory as :func:`check_memory` wants it,
    the offsets as a C-contiguous 1-D ``uint64`` array, each with its 8
    bytes inside the memory (``ValueError`` otherwise)."""
    m = check_memory(memory)
    off = np.asarray(offsets)
    if off.ndim != 1 or (off.size and off.dtype.kind not in "iu"):
        raise TypeError(f"{what} must be a 1-D integer array")
    if off.size and (int(off.min()) < 0 or int(off.max()) > m.shape[0] - 8):
        raise ValueError(f"{what}: an offset lies beyond the memory's {m.shape[0]} bytes")
    return m, np.ascontiguousarray(off, dtype=np.uint64)


def check_stripped_pair(memory: object, offsets: object, ites: object, lpi_bitmap: object, lpi_target: object,
                        lpi_priority: object, prop_offset: int) -> tuple[np.ndarray, ...]:
    """The arguments of the stripped ITE save/restore pair (the ITS
    benchmark's floor, ``vgic._core.its.stripped_table_save`` and
    ``stripped_table_restore``), checked alike for the core and the twin:
    ``ites`` a writable C-contiguous ``uint32`` array of shape (entries, 2)
    (pINTID, ICID), one row per offset; ``lpi_target`` (``int32``) and
    ``lpi_priority`` (``uint8``) one element per LPI from INTID 8192 on,
    ``lpi_bitmap`` (``uint32``) a bit per LPI; the property table's bytes
    for those LPIs inside the memory from ``prop_offset``."""
    m, off = check_entry_offsets(memory, offsets)
    arrays = {"ites": (ites, np.uint32), "lpi_bitmap": (lpi_bitmap, np.uint32),
              "lpi_target": (lpi_target, np.int32), "lpi_priority": (lpi_priority, np.uint8)}
    out = []
    for name, (a, dtype) in arrays.items():
        if not isinstance(a, np.ndarray) or a.dtype != dtype or not a.flags.c_contiguous or not a.flags.writeable:
            raise TypeError(f"{name} must be a writable C-contiguous {np.dtype(dtype).name} numpy array")
        out.append(np.asarray(a))
    it, ex, tg, pr = out
    if it.shape != (off.shape[0], 2):
        raise ValueError(f"ites must have shape ({off.shape[0]}, 2), not {it.shape}")
    n = pr.shape[0] if pr.ndim == 1 else -1
    if n < 0 or tg.shape != (n,) or ex.shape != ((n + 31) // 32,):
        raise ValueError("lpi_priority and lpi_target must be 1-D of one length n, lpi_bitmap of (n + 31) // 32")
    if isinstance(prop_offset, bool) or not isinstance(prop_offset, (int, np.integer)) or not (
            0 <= int(prop_offset) <= m.shape[0] - n):
        raise ValueError(f"prop_offset {prop_offset!r}: the property table's {n} bytes must lie in the memory")
    return m, off, it, ex, tg, pr


class GuestMem:
    """Checked little-endian access to guest RAM (no RAM: every access fails)."""

    __slots__ = ("mem", "gpa", "size")

    def __init__(self, memory: np.ndarray | None = None, gpa: int = 0) -> None:
        self.mem = memory
        self.gpa = gpa
        self.size = 0 if memory is None else int(memory.shape[0])

    def ok(self, gpa: int, n: int) -> bool:
        """``gpa .. gpa + n - 1`` lies inside RAM."""
        return self.mem is not None and self.size > 0 and self.gpa <= gpa and gpa + n <= self.gpa + self.size

    def read64(self, gpa: int) -> int | None:
        if not self.ok(gpa, 8):
            return None
        o = gpa - self.gpa
        assert self.mem is not None
        return int.from_bytes(self.mem[o:o + 8].tobytes(), "little")

    def write64(self, gpa: int, value: int) -> bool:
        if not self.ok(gpa, 8):
            return False
        o = gpa - self.gpa
        assert self.mem is not None
        self.mem[o:o + 8] = np.frombuffer(int(value).to_bytes(8, "little"), dtype=np.uint8)
        return True

    def read8(self, gpa: int) -> int | None:
        if not self.ok(gpa, 1):
            return None
        assert self.mem is not None
        return int(self.mem[gpa - self.gpa])

    def write8(self, gpa: int, value: int) -> bool:
        if not self.ok(gpa, 1):
            return False
        assert self.mem is not None
        self.mem[gpa - self.gpa] = value
        return True
