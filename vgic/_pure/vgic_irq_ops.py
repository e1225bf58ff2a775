"""Generic register handlers: per-IRQ bit/byte fields and the fixed patterns.

The twin of the generic part of Linux ``vgic-mmio.c``.  Every handler has
one of these shapes (shared with :mod:`.vgic_dist` and :mod:`.vgic_redist`)::

    read(gic, vcpu, offset, intid, size) -> int
    write(gic, vcpu, offset, intid, size, value) -> None
    uaccess_read(gic, vcpu, offset, intid, size) -> int
    uaccess_write(gic, vcpu, offset, intid, size, value) -> int   # 0 or -errno

``vcpu`` is the acting vCPU (the accessor for the distributor, the owner for
a redistributor), ``offset`` the offset within the frame, ``intid`` the
first INTID of the access for per-IRQ regions (0 otherwise) and ``size`` the
access width in bytes.  The framework (:mod:`.mmio`) has already checked
width, alignment and that ``intid < nr_irqs`` (kvm-facts §2), so handlers
never see an invalid access.

A per-IRQ access of ``size`` bytes covers ``size * 8 // bpi`` consecutive
INTIDs; ``gic._irqs(vcpu, intid, count)`` returns their state records.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from ..regmap import GICD_PIDR2, NR_PRIVATE_IRQS, PIDR2_GICV3, PRIORITY_MASK
from .irq import VgicIrq

if TYPE_CHECKING:
    from .gic import Gic

ReadFn = Callable[["Gic", int, int, int, int], int]
WriteFn = Callable[["Gic", int, int, int, int, int], None]
UaccessWriteFn = Callable[["Gic", int, int, int, int, int], int]


# ------------------------------------------------------------ small helpers
def _bit_irqs(gic: Gic, vcpu: int, intid: int, size: int) -> list[VgicIrq]:
    """The INTIDs of a 1-bit-per-IRQ access: one per bit of the access."""
    return gic._irqs(vcpu, intid, size * 8)


def _pack(irqs: list[VgicIrq], bit: Callable[[VgicIrq], bool]) -> int:
    """Bit i of the result is ``bit(irqs[i])``."""
    value = 0
    for i, irq in enumerate(irqs):
        if bit(irq):
            value |= 1 << i
    return value


def _ones(irqs: list[VgicIrq], value: int) -> Iterator[VgicIrq]:
    """The IRQs whose bit is 1 in ``value``: the targets of a W1S/W1C write."""
    for i, irq in enumerate(irqs):
        if (value >> i) & 1:
            yield irq


def stamped(gic: Gic, irqs: list[VgicIrq], change: Callable[[], None]) -> None:
    """Run ``change`` (one event) and give each of ``irqs`` that it made
    deliverable the event's stamp: with the INTID as tie-break, the order in
    which KVM's vgic_queue_irq_unlock would have queued them (the twin of
    gicstate.pxd's stamp_fresh)."""
    before = [irq.deliverable() for irq in irqs]
    change()
    fresh = [irq for irq, was in zip(irqs, before) if not was and irq.deliverable()]
    if fresh:
        gic._seq_counter += 1
        for irq in fresh:
            irq.seq = gic._seq_counter


def uaccess_via_guest(write: WriteFn) -> UaccessWriteFn:
    """A userspace write that behaves as the guest write and always succeeds.

    KVM uses the guest handler when a region has no ``uaccess_write``
    (kvm-facts §2, "uses uaccess_read/uaccess_write when defined, else the
    guest handlers").
    """

    def uaccess_write(gic: Gic, vcpu: int, offset: int, intid: int, size: int,
                      value: int) -> int:
        write(gic, vcpu, offset, intid, size, value)
        return 0

    uaccess_write.__name__ = f"uaccess_{write.__name__}"
    uaccess_write.__qualname__ = uaccess_write.__name__
    uaccess_write.__doc__ = f"Userspace write through the guest handler {write.__name__}."
    return uaccess_write


# -------------------------------------------------------- fixed patterns
def read_raz(gic: Gic, vcpu: int, offset: int, intid: int, size: int) -> int:
    """Read-as-zero."""
    return 0


def write_wi(gic: Gic, vcpu: int, offset: int, intid: int, size: int, value: int) -> None:
    """Write-ignored."""


def uaccess_write_wi(gic: Gic, vcpu: int, offset: int, intid: int, size: int,
                     value: int) -> int:
    """Userspace write-ignored that reports success (KVM's ``vgic_mmio_uaccess_write_wi``)."""
    return 0


def read_rao(gic: Gic, vcpu: int, offset: int, intid: int, size: int) -> int:
    """Read-as-ones over the whole access (GICD_STATUSR, kvm-facts §1.2)."""
    return (1 << (8 * size)) - 1


def read_idregs(gic: Gic, vcpu: int, offset: int, intid: int, size: int) -> int:
    """ID registers: only PIDR2 is non-zero, reporting ArchRev 3 (kvm-facts §1.2, §1.5).

    GICD_PIDR2 and GICR_PIDR2 sit at the same frame offset (IHI 0069 §12.1).
    """
    return PIDR2_GICV3 if offset == GICD_PIDR2 else 0


# ------------------------------------------- GICD_IGROUPR / GICR_IGROUPR0
def read_group(gic: Gic, vcpu: int, offset: int, intid: int, size: int) -> int:
    """One group bit per IRQ, 1 = Group 1 (kvm-facts §1.2)."""
    return _pack(_bit_irqs(gic, vcpu, intid, size), lambda irq: bool(irq.group))


def write_group(gic: Gic, vcpu: int, offset: int, intid: int, size: int, value: int) -> None:
    """Every bit is assigned: the register is plain read/write."""
    for i, irq in enumerate(_bit_irqs(gic, vcpu, intid, size)):
        irq.group = (value >> i) & 1


# ------------------------------------- GICD_ISENABLER / GICD_ICENABLER
def read_enable(gic: Gic, vcpu: int, offset: int, intid: int, size: int) -> int:
    """Both ISENABLER and ICENABLER read the enable bits (IHI 0069 §12.9.14)."""
    return _pack(_bit_irqs(gic, vcpu, intid, size), lambda irq: irq.enabled)


def write_senable(gic: Gic, vcpu: int, offset: int, intid: int, size: int, value: int) -> None:
    """Write-1-to-set on ``enabled``.  A HW-mapped level interrupt has its
    line resampled from its device, and one whose line fell while not
    active gets its physical interrupt deactivated (vgic_mmio_write_senable)."""
    irqs = _bit_irqs(gic, vcpu, intid, size)

    def change() -> None:
        for irq in _ones(irqs, value):
            if irq.hw and not irq.config_edge:
                was_high = irq.line_level
                irq.line_level = gic._phys_level(irq)
                if not irq.active and was_high and not irq.line_level:
                    gic._set_phys_active(irq, False)
            irq.enabled = True
    stamped(gic, irqs, change)


def write_cenable(gic: Gic, vcpu: int, offset: int, intid: int, size: int, value: int) -> None:
    """Write-1-to-clear on ``enabled``."""
    for irq in _ones(_bit_irqs(gic, vcpu, intid, size), value):
        irq.enabled = False


# ---------------------------------------- GICD_ISPENDR / GICD_ICPENDR
def read_pending(gic: Gic, vcpu: int, offset: int, intid: int, size: int) -> int:
    """The guest's pending view: latch, or line level if level-triggered
    (kvm-facts §3.2); a HW-mapped level interrupt reads as its device's
    line now (vgic_get_phys_line_level)."""
    return _pack(_bit_irqs(gic, vcpu, intid, size),
                 lambda irq: gic._phys_level(irq) if irq.hw and not irq.config_edge else irq.pending())


def write_spending(gic: Gic, vcpu: int, offset: int, intid: int, size: int, value: int) -> None:
    """Write-1-to-set on the latch; the line level is never touched (kvm-facts §3.2)."""
    irqs = _bit_irqs(gic, vcpu, intid, size)

    def change() -> None:
        for irq in _ones(irqs, value):
            irq.pending_latch = True
            if irq.hw:
                gic._set_phys_active(irq, True)     # vgic_hw_irq_spending
    stamped(gic, irqs, change)


def write_cpending(gic: Gic, vcpu: int, offset: int, intid: int, size: int, value: int) -> None:
    """Write-1-to-clear on the latch; a level IRQ whose line is high stays pending."""
    for irq in _ones(_bit_irqs(gic, vcpu, intid, size), value):
        irq.pending_latch = False
        if irq.hw and not irq.active:
            gic._set_phys_active(irq, False)        # vgic_hw_irq_cpending


def uaccess_read_pending(gic: Gic, vcpu: int, offset: int, intid: int, size: int) -> int:
    """Userspace sees the raw latch: the line level is saved separately through
    KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO (kvm-facts §2, §6)."""
    return _pack(_bit_irqs(gic, vcpu, intid, size), lambda irq: irq.pending_latch)


def uaccess_write_spending(gic: Gic, vcpu: int, offset: int, intid: int, size: int,
                           value: int) -> int:
    """Userspace assigns the latch for every bit, 0 included, whatever the
    trigger mode, so a restore does not depend on ICFGR being restored first
    (kvm-facts §2, KVM's ``vgic_v3_uaccess_write_pending``)."""
    irqs = _bit_irqs(gic, vcpu, intid, size)

    def change() -> None:
        for i, irq in enumerate(irqs):
            irq.pending_latch = bool((value >> i) & 1)
    stamped(gic, irqs, change)
    return 0


# -------------------------------------- GICD_ISACTIVER / GICD_ICACTIVER
def read_active(gic: Gic, vcpu: int, offset: int, intid: int, size: int) -> int:
    """Both ISACTIVER and ICACTIVER read the active bits."""
    return _pack(_bit_irqs(gic, vcpu, intid, size), lambda irq: irq.active)


def write_sactive(gic: Gic, vcpu: int, offset: int, intid: int, size: int, value: int) -> None:
    """Write-1-to-set on ``active``.  (KVM halts every vCPU around this; the
    model has no running vCPUs, so there is nothing to halt.)"""
    irqs = _bit_irqs(gic, vcpu, intid, size)

    def change() -> None:
        for irq in _ones(irqs, value):
            irq.active = True
            if irq.hw:
                gic._set_phys_active(irq, True)     # vgic_hw_irq_change_active
    stamped(gic, irqs, change)


def write_cactive(gic: Gic, vcpu: int, offset: int, intid: int, size: int, value: int) -> None:
    """Write-1-to-clear on ``active``."""
    for irq in _ones(_bit_irqs(gic, vcpu, intid, size), value):
        irq.active = False
        if irq.hw:
            gic._set_phys_active(irq, False)


def uaccess_write_sactive(gic: Gic, vcpu: int, offset: int, intid: int, size: int, value: int) -> int:
    """Userspace leaves a HW-mapped IRQ's active state alone, virtual and
    physical (vgic_hw_irq_change_active returns early for is_uaccess)."""
    irqs = _bit_irqs(gic, vcpu, intid, size)

    def change() -> None:
        for irq in _ones(irqs, value):
            if not irq.hw:
                irq.active = True
    stamped(gic, irqs, change)
    return 0


def uaccess_write_cactive(gic: Gic, vcpu: int, offset: int, intid: int, size: int, value: int) -> int:
    """As :func:`uaccess_write_sactive`, clearing."""
    for irq in _ones(_bit_irqs(gic, vcpu, intid, size), value):
        if not irq.hw:
            irq.active = False
    return 0


# ---------------------------------------------------- GICD_IPRIORITYR
def read_priority(gic: Gic, vcpu: int, offset: int, intid: int, size: int) -> int:
    """One byte per IRQ, little-endian: byte i is INTID ``intid + i``."""
    value = 0
    for i, irq in enumerate(gic._irqs(vcpu, intid, size)):
        value |= irq.priority << (8 * i)
    return value


def write_priority(gic: Gic, vcpu: int, offset: int, intid: int, size: int, value: int) -> None:
    """KVM implements 5 priority bits (VGIC_PRI_BITS): the low 3 bits of each
    byte are dropped (kvm-facts §1.2)."""
    for i, irq in enumerate(gic._irqs(vcpu, intid, size)):
        irq.priority = (value >> (8 * i)) & PRIORITY_MASK


# -------------------------------------------------------- GICD_ICFGR
_ICFGR_EDGE = 0b10      # Int_config[1] = 1: edge-triggered (IHI 0069 §12.9.9)


def read_config(gic: Gic, vcpu: int, offset: int, intid: int, size: int) -> int:
    """Two bits per IRQ: 0b10 for edge, 0b00 for level."""
    value = 0
    for i, irq in enumerate(gic._irqs(vcpu, intid, size * 4)):
        if irq.config_edge:
            value |= _ICFGR_EDGE << (2 * i)
    return value


def write_config(gic: Gic, vcpu: int, offset: int, intid: int, size: int, value: int) -> None:
    """Only bit 2n+1 matters.  Private INTIDs are skipped: SGIs are always
    edge, and KVM keeps PPIs level because the arch timer relies on it, so
    GICR_ICFGR0/1 are read-only (kvm-facts §1.6)."""
    for i, irq in enumerate(gic._irqs(vcpu, intid, size * 4)):
        if irq.intid < NR_PRIVATE_IRQS:
            continue
        irq.config_edge = bool((value >> (2 * i + 1)) & 1)
