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
