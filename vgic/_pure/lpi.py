"""KVM's LPI operations on the Gic and guest memory: the twin of
``_core/lpi.pxd`` (see there for the sources).  Functions return 0 or a
negative errno (``-EFAULT``: a table byte outside guest RAM), as the core's."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..regmap import GICR_CTLR_ENABLE_LPIS, INTERRUPT_ID_BITS_ITS, LPI_BASE
from . import vgic_irq_ops as irq_ops
from .irq import VgicIrq

if TYPE_CHECKING:
    from .gic import Gic

EFAULT = 14
LPI_PROP_ENABLE = 0x01
LPI_PROP_PRIORITY = 0xFC


def propbase_pa(gic: Gic) -> int:
    """GICR_PROPBASER.PA, bits [51:12]."""
    return gic._propbaser & 0x000FFFFFFFFFF000


def pendbase_pa(gic: Gic, vcpu: int) -> int:
    """GICR_PENDBASER.PA of a redistributor, bits [51:16]."""
    return gic._pendbaser[vcpu] & 0x000FFFFFFFFF0000


def lpi_intid_limit(gic: Gic) -> int:
    """max_lpis_propbaser: LPI INTIDs are below 2**min(IDbits + 1, 16)."""
    return 1 << min((gic._propbaser & 0x1F) + 1, INTERRUPT_ID_BITS_ITS)


def lpis_enabled_on(gic: Gic, vcpu: int) -> bool:
    """KVM's vgic_lpis_enabled: GICR_CTLR is exactly EnableLPIs."""
    return gic._gicr_ctlr[vcpu] == GICR_CTLR_ENABLE_LPIS


def _set(gic: Gic, irq: VgicIrq, field: str, value: bool) -> None:
    irq_ops.stamped(gic, [irq], lambda: setattr(irq, field, bool(value)))


def apply_config(gic: Gic, irq: VgicIrq, prop: int) -> None:
    """Priority bits 7:2 and Enable bit 0 of the configuration byte."""
    irq.priority = prop & LPI_PROP_PRIORITY
    _set(gic, irq, "enabled", bool(prop & LPI_PROP_ENABLE))


def update_lpi_config(gic: Gic, intid: int, filter_vcpu: int) -> int:
    """Re-read an LPI's configuration byte; apply it unless ``filter_vcpu``
    (>= 0) is not its target."""
    prop = gic._mem.read8(propbase_pa(gic) + intid - LPI_BASE)
    if prop is None:
        return -EFAULT
    irq = gic._lpis[intid]
    if filter_vcpu < 0 or irq.target_vcpu == filter_vcpu:
        apply_config(gic, irq, prop)
    return 0


def lpi_sync_pending(gic: Gic, intid: int, consumed: list[tuple[int, int]] | None = None) -> int:
    """vgic_v3_lpi_sync_pending_status for a new LPI: its bit in its target's
    pending table becomes its pending state and is cleared in memory."""
    irq = gic._lpis[intid]
    if irq.target_vcpu < 0:
        return 0
    at = pendbase_pa(gic, irq.target_vcpu) + (intid >> 3)
    byte = gic._mem.read8(at)
    if byte is None:
        return -EFAULT
    bit = bool((byte >> (intid & 7)) & 1)
    _set(gic, irq, "pending_latch", bit)
    if bit:
        if consumed is not None:
            consumed.append((at, byte))
        if not gic._mem.write8(at, byte & ~(1 << (intid & 7))):
            return -EFAULT
    return 0


def lpi_add(gic: Gic, intid: int, target: int) -> int:
    """vgic_add_lpi: an existing LPI gains a reference (nothing else
    changes); a new one is Group 1, edge, aimed at ``target``, with its
    configuration read and its pending bit consumed."""
    irq = gic._lpis.get(intid)
    if irq is not None:
        irq.ite_count += 1
        return 0
    irq = VgicIrq(intid, target_vcpu=target)
    irq.ite_count = 1
    gic._lpis[intid] = irq
    consumed: list[tuple[int, int]] = []
    r = update_lpi_config(gic, intid, -1)
    if r == 0:
        r = lpi_sync_pending(gic, intid, consumed)
    if r < 0:
        del gic._lpis[intid]
        return r
    if gic._undo is not None:
        gic._undo[0].append(intid)
        gic._undo[1].extend(consumed)
    return r


def lpi_put(gic: Gic, intid: int) -> None:
    """An ITE's reference dropped: free the LPI if nothing else holds it."""
    irq = gic._lpis.get(intid)
    if irq is not None and irq.ite_count:
        irq.ite_count -= 1
        if irq.ite_count == 0 and gic._undo is None:     # (a failed restore undoes itself)
            gic.lpi_release(intid)


def lpi_invall(gic: Gic, vcpu: int) -> None:
    """vgic_its_invall: every LPI's byte re-read, applied to those aimed at ``vcpu``."""
    for intid in sorted(gic._lpis):
        update_lpi_config(gic, intid, vcpu)


def lpi_load_pending_table(gic: Gic, vcpu: int) -> None:
    """its_sync_lpi_pending_table: each LPI aimed at ``vcpu`` takes its bit
    (overwriting); a byte outside RAM ends the walk; memory is unchanged."""
    base = pendbase_pa(gic, vcpu)
    for intid in sorted(gic._lpis):
        byte = gic._mem.read8(base + (intid >> 3))
        if byte is None:
            return
        irq = gic._lpis[intid]
        if irq.target_vcpu == vcpu:
            _set(gic, irq, "pending_latch", bool((byte >> (intid & 7)) & 1))


def lpi_flush_pending(gic: Gic, vcpu: int) -> None:
    """vgic_flush_pending_lpis: every LPI on this vCPU's ap_list leaves it,
    its pending state cleared, and is freed if nothing else holds it."""
    row = gic._ap_lists[vcpu]
    lpis = [irq for irq in row if irq.intid >= LPI_BASE]
    row[:] = [irq for irq in row if irq.intid < LPI_BASE]
    for irq in lpis:
        irq.ap_vcpu = -1
        irq.in_lr = False
        _set(gic, irq, "pending_latch", False)
        gic.lpi_release(irq.intid)
    # LPIs KVM would hold on the list already: pending and enabled towards
    # this vCPU, not queued yet in this model (see the core).
    for intid in sorted(gic._lpis):
        held = gic._lpis.get(intid)
        if (held is not None and held.ap_vcpu < 0 and held.target_vcpu == vcpu and not held.active
                and held.enabled and held.pending() and gic._dist_enabled):
            _set(gic, held, "pending_latch", False)
            gic.lpi_release(intid)


def lpi_save_pending_tables(gic: Gic) -> int:
    """KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES: each LPI with a target has its
    bit in that vCPU's pending table set to its pending state; only bytes
    whose bit must change are written.  0, or -EFAULT."""
    last_at, byte = -1, 0
    for intid in sorted(gic._lpis):
        irq = gic._lpis[intid]
        if irq.target_vcpu < 0:
            continue
        at = pendbase_pa(gic, irq.target_vcpu) + (intid >> 3)
        if at != last_at:
            b = gic._mem.read8(at)
            if b is None:
                return -EFAULT
            byte, last_at = b, at
        stored = bool((byte >> (intid & 7)) & 1)
        if stored != irq.pending_latch:
            byte ^= 1 << (intid & 7)
            if not gic._mem.write8(at, byte):
                return -EFAULT
    return 0
