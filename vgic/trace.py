"""MMIO traces: the record dtype and the built-in workloads.

A trace is a one-dimensional numpy array of :data:`MMIO_ACCESS` records that
:meth:`vgic.VM.mmio_replay` runs in order.  The record is laid out with every
field naturally aligned (24 bytes), so the compiled core reads it in place.
"""
from __future__ import annotations

import numpy as np

#: One guest MMIO access: ``addr`` (guest physical), ``value`` (written value,
#: ignored for reads), ``vcpu`` (the accessing vCPU), ``size`` in bytes, and
#: ``write`` (0 = read, 1 = write).
MMIO_ACCESS = np.dtype(
    {
        "names": ["addr", "value", "vcpu", "size", "write"],
        "formats": ["<u8", "<u8", "<u2", "u1", "u1"],
        "offsets": [0, 8, 16, 18, 19],
        "itemsize": 24,
    }
)

__all__ = ["MMIO_ACCESS"]


def check_trace(trace: object) -> np.ndarray:
    """``trace`` as the plain 1-D :data:`MMIO_ACCESS` array it really is:
    the kernels read that array, so an ndarray subclass cannot fake its
    dtype or shape.  ``TypeError`` for anything else."""
    if not isinstance(trace, np.ndarray):
        raise TypeError(f"trace must be a 1-D numpy array of vgic.MMIO_ACCESS, not {type(trace).__name__}")
    arr = np.asarray(trace)
    if arr.dtype != MMIO_ACCESS or arr.ndim != 1:
        raise TypeError(f"trace must be a 1-D numpy array of vgic.MMIO_ACCESS, not a {arr.ndim}-D "
                        f"array of {arr.dtype}")
    return arr


def make_trace(n: int) -> np.ndarray:
    """An all-zero trace of ``n`` records, to fill in."""
    return np.zeros(n, dtype=MMIO_ACCESS)


def mixed_trace(n: int, *, nr_vcpus: int = 4, nr_irqs: int = 256,
                dist_base: int = 0x0800_0000, redist_base: int = 0x080A_0000,
                seed: int = 0) -> np.ndarray:
    """The default replay workload: ``n`` random guest accesses to the
    registers a running guest touches - enable, pending, priority, config,
    routing and control, reads and writes, distributor and redistributors.

    Every access is valid for a VM built with the same geometry (so the mix
    measures emulation, not RAZ/WI short-cuts), and the trace is a pure
    function of its arguments.
    """
    from vgic import regmap as R

    rng = np.random.default_rng(seed)
    nr_spi_words = nr_irqs // 32 - 1
    # (frame, offset of word 0, stride, how many, size): register families.
    families = [
        ("d", R.GICD_ISENABLER + 4, 4, nr_spi_words, 4),
        ("d", R.GICD_ICENABLER + 4, 4, nr_spi_words, 4),
        ("d", R.GICD_ISPENDR + 4, 4, nr_spi_words, 4),
        ("d", R.GICD_ICPENDR + 4, 4, nr_spi_words, 4),
        ("d", R.GICD_IPRIORITYR + 32, 1, nr_irqs - 32, 1),
        ("d", R.GICD_IPRIORITYR + 32, 4, (nr_irqs - 32) // 4, 4),
        ("d", R.GICD_ICFGR + 8, 4, (nr_irqs - 32) // 16, 4),
        ("d", R.GICD_IROUTER + 8 * 32, 8, nr_irqs - 32, 8),
        ("d", R.GICD_CTLR, 4, 1, 4),
        ("s", R.GICR_ISENABLER0, 4, 1, 4),
        ("s", R.GICR_ISPENDR0, 4, 1, 4),
        ("s", R.GICR_IPRIORITYR0, 4, 8, 4),
    ]
    fam = rng.integers(0, len(families), n)
    pick = rng.random(n)
    write = rng.integers(0, 2, n).astype(np.uint8)
    vcpu = rng.integers(0, nr_vcpus, n).astype(np.uint16)
    value = rng.integers(0, 1 << 63, n, dtype=np.uint64, endpoint=True)
    t = make_trace(n)
    addr = np.empty(n, dtype=np.uint64)
    size = np.empty(n, dtype=np.uint8)
    for k, (frame, base, stride, count, sz) in enumerate(families):
        sel = fam == k
        idx = (pick[sel] * count).astype(np.uint64)
        off = np.uint64(base) + idx * np.uint64(stride)
        if frame == "d":
            addr[sel] = np.uint64(dist_base) + off
        else:
            owner = vcpu[sel].astype(np.uint64)
            addr[sel] = (np.uint64(redist_base) + owner * np.uint64(R.REDIST_STRIDE)
                         + np.uint64(R.SGI_BASE_OFFSET) + off)
        size[sel] = sz
    # Half of the IROUTER writes name an existing vCPU, so routing resolves.
    route = (fam == 7) & (pick < 0.5)
    value[route] = vcpu[route].astype(np.uint64) & np.uint64(0xF)
    mask = np.where(size == 8, np.uint64(0xFFFFFFFFFFFFFFFF),
                    (np.uint64(1) << (size.astype(np.uint64) * np.uint64(8))) - np.uint64(1))
    t["addr"] = addr
    t["size"] = size
    t["write"] = write
    t["vcpu"] = vcpu
    t["value"] = np.where(write == 1, value & mask, np.uint64(0))
    return t


__all__ += ["make_trace", "mixed_trace"]
