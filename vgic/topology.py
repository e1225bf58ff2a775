"""A VM's shape, as KVM validates it: the number of interrupts and vCPUs,
the MPIDR of each vCPU and the MPIDR-to-vCPU lookup, written once.

The Cython core resolves GICD_IROUTER affinities in C (``gicstate.pxd``,
``mpidr_to_vcpu``) because a guest write does it; everything else - the VM,
the device attributes, SGI targets and the pure-Python twin - uses
:class:`MpidrIndex`.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from vgic import regmap, uapi
from vgic.ich import check_int


def check_nr_irqs(nr_irqs: Any) -> int:
    """KVM's rule for KVM_DEV_ARM_VGIC_GRP_NR_IRQS (kvm-facts §6): every
    INTID below the LPIs counted, private ones included, a multiple of 32,
    at least 64 and at most VGIC_MAX_RESERVED + 1 (so 992).  ``ValueError``
    naming the value otherwise (``TypeError`` for a non-integer)."""
    nr_irqs = check_int("nr_irqs", nr_irqs, -(1 << 63), (1 << 63) - 1)
    if (nr_irqs < regmap.NR_PRIVATE_IRQS + 32 or nr_irqs > regmap.VGIC_MAX_RESERVED
            or nr_irqs % 32):
        raise ValueError(f"nr_irqs {nr_irqs} is not a multiple of 32 in 64..992")
    return nr_irqs


def check_nr_vcpus(nr_vcpus: Any) -> int:
    """1..VGIC_V3_MAX_CPUS (512) vCPUs (kvm-facts §1.1), an integer."""
    return check_int("nr_vcpus", nr_vcpus, 1, regmap.MAX_VCPUS)


def default_mpidr(vcpu_id: int) -> int:
    """KVM's reset MPIDR_EL1 for a vCPU id (reset_mpidr(), kvm-facts §1.5):
    Aff0 = id[3:0], Aff1 = id[11:4], Aff2 = id[19:12], bit 31 RES1."""
    return (1 << 31) | (vcpu_id & 0xF) | (((vcpu_id >> 4) & 0xFF) << 8) | (((vcpu_id >> 12) & 0xFF) << 16)


class MpidrIndex:
    """KVM's kvm_mpidr_to_vcpu(): the vCPU whose MPIDR affinity (Aff3 and
    Aff2.Aff1.Aff0) equals an MPIDR's, the lowest index if several do."""

    __slots__ = ("_attr_bits", "_by_aff", "_keys", "_vals", "mpidrs")

    def __init__(self, mpidrs: Iterable[int]) -> None:
        self.mpidrs: tuple[int, ...] = tuple(int(m) for m in mpidrs)
        self._by_aff: dict[int, int] = {}
        for vcpu, mpidr in enumerate(self.mpidrs):
            self._by_aff.setdefault(mpidr & regmap.MPIDR_HWID_MASK, vcpu)
        # The same lookup as sorted arrays, for many MPIDRs at once.
        keys = sorted(self._by_aff)
        self._keys = np.array(keys, dtype=np.uint64)
        self._vals = np.array([self._by_aff[k] for k in keys], dtype=np.int64)
        self._attr_bits: np.ndarray | None = None

    @property
    def attr_bits(self) -> np.ndarray:
        """Each vCPU's affinity as KVM packs it in a device attribute's
        [63:32] (uapi.mpidr_to_attr), read-only: for building many
        attributes at once (made at the first use)."""
        if self._attr_bits is None:
            bits = np.array([uapi.mpidr_to_attr(m) for m in self.mpidrs], dtype=np.uint64)
            bits.setflags(write=False)
            self._attr_bits = bits
        return self._attr_bits

    def vcpu(self, mpidr: int) -> int:
        """The vCPU index, or -1 when no vCPU has that affinity."""
        return self._by_aff.get(mpidr & regmap.MPIDR_HWID_MASK, -1)

    def vcpus(self, mpidrs: np.ndarray) -> np.ndarray:
        """:meth:`vcpu` of every MPIDR in a ``uint64`` array (int64 indices, -1 for none)."""
        aff = np.asarray(mpidrs, dtype=np.uint64) & np.uint64(regmap.MPIDR_HWID_MASK)
        pos = np.minimum(np.searchsorted(self._keys, aff), len(self._keys) - 1)
        return np.where(self._keys[pos] == aff, self._vals[pos], -1)

    def all_default(self) -> bool:
        """True when every vCPU has KVM's default MPIDR for its index."""
        return all(m == default_mpidr(i) for i, m in enumerate(self.mpidrs))
