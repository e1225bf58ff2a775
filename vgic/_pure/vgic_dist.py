"""Distributor-only handlers: GICD_CTLR/TYPER/IIDR/TYPER2 and GICD_IROUTER.

The twin of the distributor part of Linux ``vgic-mmio-v3.c``; handler
shapes are described in :mod:`.vgic_irq_ops`.
"""
from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ..regmap import (
    GICD_CTLR,
    GICD_CTLR_ARE,
    GICD_CTLR_DS,
    GICD_CTLR_ENABLE_G1,
    GICD_IIDR,
    GICD_TYPER,
    GICD_TYPER2,
    GICD_TYPER_IDBITS_SHIFT,
    GICD_TYPER_LPIS,
    IIDR_PRODUCT_ID_SHIFT,
    IIDR_REVISION_MASK,
    IIDR_REVISION_SHIFT,
    IMPLEMENTER_ARM,
    INTERRUPT_ID_BITS_ITS,
    INTERRUPT_ID_BITS_SPIS,
    IROUTER_AFF_MASK,
    KVM_VGIC_IMP_REV_2,
    KVM_VGIC_IMP_REV_3,
    PRODUCT_ID_KVM,
)

if TYPE_CHECKING:
    from .gic import Gic

# GICD_CTLR, TYPER, IIDR and TYPER2 share one 16-byte region; bits [3:2] of
# the offset pick the register (KVM's ``switch (addr & 0x0c)``).
_MISC_SELECT = 0xC



# ------------------------------------------- GICD_CTLR/TYPER/IIDR/TYPER2
def gicd_ctlr(gic: Gic) -> int:
    """ARE and DS always read 1; EnableGrp1 mirrors ``dist->enabled`` (kvm-facts §1.3)."""
    value = GICD_CTLR_ARE | GICD_CTLR_DS
    if gic._dist_enabled:
        value |= GICD_CTLR_ENABLE_G1
    return value


def gicd_typer(gic: Gic) -> int:
    """ITLinesNumber = nr_irqs/32 - 1 and IDbits = 9; with an ITS, IDbits =
    15 and LPIS (kvm-facts §1.3; its-facts-A §3.5)."""
    it_lines = (gic.nr_irqs >> 5) - 1
    if gic.nr_lpis:
        return it_lines | ((INTERRUPT_ID_BITS_ITS - 1) << GICD_TYPER_IDBITS_SHIFT) | GICD_TYPER_LPIS
    return it_lines | ((INTERRUPT_ID_BITS_SPIS - 1) << GICD_TYPER_IDBITS_SHIFT)


def gicd_iidr(gic: Gic) -> int:
    """ProductID 'K', the implementation revision, Implementer Arm (kvm-facts §1.3)."""
    return ((PRODUCT_ID_KVM << IIDR_PRODUCT_ID_SHIFT)
            | (gic._implementation_rev << IIDR_REVISION_SHIFT)
            | IMPLEMENTER_ARM)


def gicd_typer2(gic: Gic) -> int:
    """nASSGIcap needs GICv4.1 vSGIs, which the model has not: reads 0 (kvm-facts §1.3)."""
    return 0


_MISC_READERS = {
    GICD_CTLR: gicd_ctlr,
    GICD_TYPER: gicd_typer,
    GICD_IIDR: gicd_iidr,
    GICD_TYPER2: gicd_typer2,
}


def read_v3_misc(gic: Gic, vcpu: int, offset: int, intid: int, size: int) -> int:
    """Read whichever of CTLR/TYPER/IIDR/TYPER2 the offset selects."""
    return _MISC_READERS[offset & _MISC_SELECT](gic)


def write_v3_misc(gic: Gic, vcpu: int, offset: int, intid: int, size: int, value: int) -> None:
    """Only GICD_CTLR.EnableGrp1 is guest-writable; TYPER, IIDR and TYPER2 are
    read-only to the guest (kvm-facts §1.3).  nASSGIreq would need GICv4.1."""
    if offset & _MISC_SELECT == GICD_CTLR:
        if value & GICD_CTLR_ENABLE_G1 and not gic._dist_enabled:
            gic._seq_counter += 1       # KVM's vgic_kick_vcpus: an event of its own
        gic._dist_enabled = int(bool(value & GICD_CTLR_ENABLE_G1))


def uaccess_write_v3_misc(gic: Gic, vcpu: int, offset: int, intid: int, size: int,
                          value: int) -> int:
    """Userspace (restore) writes, kvm-facts §1.3 and §2.

    * CTLR: sets the enable directly (no vCPU kicks).
    * IIDR: only the Revision field may differ from the current value, and
      it must name a revision KVM implements (2 or 3).  The revision is
      taken from the *written* value: the April 2026 fix of a bug that
      re-used the current revision and so made the write a no-op.
    * TYPER2: accepted only if it matches what a read returns.
    * TYPER: ignored, success.
    """
    register = offset & _MISC_SELECT
    if register == GICD_CTLR:
        gic._dist_enabled = int(bool(value & GICD_CTLR_ENABLE_G1))
        return 0
    if register == GICD_IIDR:
        if (value ^ gicd_iidr(gic)) & ~IIDR_REVISION_MASK:
            return -errno.EINVAL
        revision = (value & IIDR_REVISION_MASK) >> IIDR_REVISION_SHIFT
        if revision not in (KVM_VGIC_IMP_REV_2, KVM_VGIC_IMP_REV_3):
            return -errno.EINVAL
        gic._implementation_rev = revision
        return 0
    if register == GICD_TYPER2:
        return 0 if value == gicd_typer2(gic) else -errno.EINVAL
    return 0    # GICD_TYPER


# ----------------------------------------------------------- GICD_IROUTER
_IROUTER_HIGH_WORD = 4      # offset bit 2 selects the upper 32 bits (Aff3)


def read_irouter(gic: Gic, vcpu: int, offset: int, intid: int, size: int) -> int:
    """The stored route is Aff2.Aff1.Aff0 only, so the upper word reads 0 and
    a 64-bit read equals the low word (kvm-facts §1.4)."""
    if offset & _IROUTER_HIGH_WORD:
        return 0
    (irq,) = gic._irqs(vcpu, intid, 1)
    return irq.mpidr


def write_irouter(gic: Gic, vcpu: int, offset: int, intid: int, size: int, value: int) -> None:
    """Store Aff2.Aff1.Aff0 of the low word and re-resolve the target vCPU.

    The upper word (Aff3) is write-ignored, IRM (bit 31) is dropped because
    1-of-N routing is not supported, and a route naming no vCPU leaves the
    SPI without a target (kvm-facts §1.4).
    """
    if offset & _IROUTER_HIGH_WORD:
        return
    (irq,) = gic._irqs(vcpu, intid, 1)
    irq.mpidr = value & IROUTER_AFF_MASK
    irq.target_vcpu = gic._vcpu_by_affinity(irq.mpidr)
