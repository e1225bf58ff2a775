# cython: language_level=3
"""Two ways to load LPI pending state from a redistributor's pending table.

The 2017 ITS save/restore thread asked what reading the pending bit of
each LPI separately costs against one scan of the whole table ("How many
LPIs are we restoring in a typical VM? 10? 1000?").  KVM settled on the
per-LPI read-test-clear (``vgic_v3_lpi_sync_pending_status`` at each
``vgic_add_lpi``; the model's ``lpi.pxd lpi_sync_pending``).  These two
kernels answer the question with numbers (``benchmarks/test_its_bench.py``):

* :func:`sync_per_lpi`: for each LPI, read its byte, test its bit, and
  clear the bit when set (KVM's rule: consumed state is not left behind);
* :func:`sync_scan`: one pass over the table's bytes from INTID 8192 on;
  each set bit whose INTID is mapped is taken and cleared.

Both leave the table and return the same pending set; ``vgic._pure.pending``
is the twin.  The table is the pending table's bytes (bit n of byte n/8 is
INTID n, the first 1 KiB covering INTIDs below 8192 is not looked at).
"""
import numpy as np

from libc.stdint cimport uint8_t, uint32_t, uint64_t

from vgic._core.consts cimport LPI_BASE

from vgic.guestmem import check_lpi_intids, check_memory

cdef extern from *:
    int pend_ctz "__builtin_ctz"(unsigned int x) nogil

# The largest table sync_scan takes (512 MiB): its last bit is INTID 2**32 - 1.
cdef Py_ssize_t MAX_TABLE_BYTES = 1 << 29


def sync_per_lpi(table, intids):
    """For each INTID of ``intids`` (LPIs, 8192 and up, each inside the
    table): its pending bit, cleared in ``table`` when set.  Returns a
    uint8 array of the bits, in the order of ``intids``."""
    cdef uint8_t[::1] t = _table(table)
    ids = check_lpi_intids(intids, t.shape[0])
    out = np.zeros(ids.shape[0], dtype=np.uint8)
    cdef const uint32_t[::1] iv = ids
    cdef uint8_t[::1] ov = out
    cdef Py_ssize_t k
    cdef uint32_t n
    cdef uint8_t byte, bit
    with nogil:
        for k in range(iv.shape[0]):
            n = iv[k]
            byte = t[n >> 3]
            bit = (byte >> (n & 7)) & 1
            if bit:
                t[n >> 3] = byte & ~(1u << (n & 7))
            ov[k] = bit
    return out


def sync_scan(table, mapped):
    """One scan of ``table`` from byte 1024 (INTID 8192): every set bit
    whose INTID is set in ``mapped`` (a uint64 bitmap by INTID, as long as
    the table) is taken and cleared.  Returns the pending INTIDs, increasing.
    A table over 512 MiB (INTIDs beyond 32 bits) is a ValueError."""
    cdef uint8_t[::1] t = _table(table)
    if t.shape[0] > MAX_TABLE_BYTES:
        raise ValueError(f"table holds {t.shape[0]} bytes: INTIDs must fit 32 bits "
                         f"(at most {MAX_TABLE_BYTES} bytes)")
    m = np.ascontiguousarray(mapped, dtype=np.uint64)
    if m.ndim != 1 or m.shape[0] * 8 < t.shape[0]:
        raise ValueError(f"mapped must be a 1-D uint64 bitmap of at least {t.shape[0] * 8} bits")
    cdef const uint64_t[::1] mv = m
    out = np.empty(max(t.shape[0] * 8 - LPI_BASE, 0), dtype=np.uint32)
    cdef uint32_t[::1] ov = out
    cdef Py_ssize_t i, count = 0
    cdef uint32_t bits, n
    with nogil:
        for i in range(LPI_BASE >> 3, t.shape[0]):
            bits = t[i]
            if not bits:
                continue
            while bits:
                n = <uint32_t>(i << 3) + <uint32_t>pend_ctz(bits)
                bits &= bits - 1
                if (mv[n >> 6] >> (n & 63)) & 1:
                    t[i] &= ~(1u << (n & 7))
                    ov[count] = n
                    count += 1
    return out[:count].copy()


cdef object _table(object table):
    try:
        return check_memory(table)
    except TypeError:
        raise TypeError("table must be a writable 1-D C-contiguous numpy uint8 array") from None
