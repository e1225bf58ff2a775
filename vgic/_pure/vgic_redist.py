"""Redistributor RD_base handlers: GICR_CTLR, IIDR, TYPER, PROPBASER, PENDBASER,
INVLPIR, INVALLR.

The twin of the redistributor part of Linux ``vgic-mmio-v3.c``; handler
shapes are described in :mod:`.vgic_irq_ops`.  ``vcpu`` is always the
redistributor's owner.  The SGI_base frame reuses the generic per-IRQ
handlers of :mod:`.vgic_irq_ops`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..baser import sanitise_baser
from ..regmap import (
    GICR_CTLR_CES,
    GICR_CTLR_ENABLE_LPIS,
    GICR_CTLR_IR,
    GICR_TYPER_AFFINITY_SHIFT,
    GICR_TYPER_LAST,
    GICR_TYPER_PLPIS,
    GICR_TYPER_PROCNUM_SHIFT,
    IIDR_PRODUCT_ID_SHIFT,
    IMPLEMENTER_ARM,
    KVM_VGIC_IMP_REV_3,
    LPI_BASE,
    MPIDR_AFF210_MASK,
    PENDBASER_PTZ,
    PENDBASER_RES0,
    PRODUCT_ID_KVM,
    PROPBASER_RES0,
)
from . import lpi

if TYPE_CHECKING:
    from .gic import Gic

def _read_half_or_whole(value: int, offset: int, size: int) -> int:
    """KVM's ``extract_bytes(value, addr & 7, len)``: a 64-bit register read
    whole or as the 32-bit half that offset bit 2 selects."""
    return (value >> (8 * (offset & 7))) & ((1 << (8 * size)) - 1)


def _update_half_or_whole(reg: int, offset: int, size: int, value: int) -> int:
    """KVM's ``update_64bit_reg``: replace the half (or the whole) written."""
    lower = 8 * (offset & 4)
    field = ((1 << (8 * size)) - 1) << lower
    return (reg & ~field) | ((value << lower) & field)


def _lpis_enabled(gic: Gic, vcpu: int) -> bool:
    """KVM's ``vgic_lpis_enabled``: GICR_CTLR is exactly EnableLPIs (no RWP)."""
    return gic._gicr_ctlr[vcpu] == GICR_CTLR_ENABLE_LPIS


# --------------------------------------------------------------- GICR_CTLR
def read_v3r_ctlr(gic: Gic, vcpu: int, offset: int, intid: int, size: int) -> int:
    """The stored EnableLPIs/RWP state plus CES|IR from revision 3 on (kvm-facts §1.5)."""
    value = gic._gicr_ctlr[vcpu]
    if gic._implementation_rev >= KVM_VGIC_IMP_REV_3:
        value |= GICR_CTLR_IR | GICR_CTLR_CES
    return value


def write_v3r_ctlr(gic: Gic, vcpu: int, offset: int, intid: int, size: int, value: int) -> None:
    """Only EnableLPIs is writable, and only with an ITS (kvm-facts §1.5):
    0 -> 1 loads the pending table unless PTZ was written, 1 -> 0 flushes
    this vCPU's LPIs from its ap_list (its-facts-A §3.5)."""
    if not gic.nr_lpis:
        return
    if value & GICR_CTLR_ENABLE_LPIS:
        if gic._gicr_ctlr[vcpu] == 0:
            gic._gicr_ctlr[vcpu] = GICR_CTLR_ENABLE_LPIS
            if not gic._pendbaser[vcpu] & PENDBASER_PTZ:
                lpi.lpi_load_pending_table(gic, vcpu)
    elif gic._gicr_ctlr[vcpu] == GICR_CTLR_ENABLE_LPIS:
        lpi.lpi_flush_pending(gic, vcpu)
        gic._gicr_ctlr[vcpu] = 0


# --------------------------------------------------------------- GICR_IIDR
def read_v3r_iidr(gic: Gic, vcpu: int, offset: int, intid: int, size: int) -> int:
    """ProductID 'K', Implementer Arm, no revision field (kvm-facts §1.5)."""
    return (PRODUCT_ID_KVM << IIDR_PRODUCT_ID_SHIFT) | IMPLEMENTER_ARM


# -------------------------------------------------------------- GICR_TYPER
def gicr_typer_affinity(mpidr: int) -> int:
    """GICR_TYPER.Affinity of a vCPU: KVM reports ``mpidr & GENMASK(23, 0)``,
    i.e. Aff2.Aff1.Aff0 with Aff3 (bits [63:56] of TYPER) always 0
    (kvm-facts §1.5 table; Linux ``vgic_mmio_read_v3r_typer``)."""
    return mpidr & MPIDR_AFF210_MASK


def gicr_typer(gic: Gic, vcpu: int) -> int:
    """The 64-bit GICR_TYPER of ``vcpu``'s redistributor (kvm-facts §1.5).

    Redistributors sit in one contiguous region in vCPU order, so the last
    vCPU's is the one with Last set.  PLPIS is set with an ITS.
    """
    value = gicr_typer_affinity(gic._mpidrs.mpidrs[vcpu]) << GICR_TYPER_AFFINITY_SHIFT
    if gic.nr_lpis:
        value |= GICR_TYPER_PLPIS
    value |= (vcpu & 0xFFFF) << GICR_TYPER_PROCNUM_SHIFT
    if vcpu == gic.nr_vcpus - 1:
        value |= GICR_TYPER_LAST
    return value


def read_v3r_typer(gic: Gic, vcpu: int, offset: int, intid: int, size: int) -> int:
    """GICR_TYPER, whole or by halves; writes (guest and userspace) are ignored."""
    return _read_half_or_whole(gicr_typer(gic, vcpu), offset, size)


# ------------------------------------------------ GICR_PROPBASER/PENDBASER
# (KVM's sanitising rule: vgic.baser)


def read_propbase(gic: Gic, vcpu: int, offset: int, intid: int, size: int) -> int:
    """GICR_PROPBASER: one value shared by every redistributor of the VM."""
    return _read_half_or_whole(gic._propbaser, offset, size)


def write_propbase(gic: Gic, vcpu: int, offset: int, intid: int, size: int, value: int) -> None:
    """Ignored while the owner's LPIs are enabled (UNPREDICTABLE per IHI 0069;
    KVM drops it), else merge the written half and sanitise (kvm-facts §5.6)."""
    if _lpis_enabled(gic, vcpu):
        return
    reg = _update_half_or_whole(gic._propbaser, offset, size, value)
    gic._propbaser = sanitise_baser(reg, PROPBASER_RES0)


def read_pendbase(gic: Gic, vcpu: int, offset: int, intid: int, size: int) -> int:
    """GICR_PENDBASER of the owner; PTZ is stored but always reads 0 (kvm-facts §5.6)."""
    return _read_half_or_whole(gic._pendbaser[vcpu] & ~PENDBASER_PTZ, offset, size)


def write_pendbase(gic: Gic, vcpu: int, offset: int, intid: int, size: int, value: int) -> None:
    """As GICR_PROPBASER, but per vCPU."""
    if _lpis_enabled(gic, vcpu):
        return
    reg = _update_half_or_whole(gic._pendbaser[vcpu], offset, size, value)
    gic._pendbaser[vcpu] = sanitise_baser(reg, PENDBASER_RES0)


# ------------------------------------------------ GICR_INVLPIR / INVALLR
def write_invlpi(gic: Gic, vcpu: int, offset: int, intid: int, size: int, value: int) -> None:
    """Re-read one LPI's configuration byte, whatever its target; ignored
    for the upper word, with this redistributor's LPIs disabled, or for an
    INTID below 8192 (its-facts-A §3.5)."""
    n = value & 0xFFFFFFFF
    if offset & 4 or not _lpis_enabled(gic, vcpu) or n < LPI_BASE:
        return
    if n in gic._lpis:
        lpi.update_lpi_config(gic, n, -1)


def write_invall(gic: Gic, vcpu: int, offset: int, intid: int, size: int, value: int) -> None:
    """INVALL for this redistributor's vCPU (its-facts-A §3.5)."""
    if offset & 4 or not _lpis_enabled(gic, vcpu):
        return
    lpi.lpi_invall(gic, vcpu)
