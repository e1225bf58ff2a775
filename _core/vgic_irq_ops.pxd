# Generic per-IRQ register handlers shared by the distributor (SPIs) and the
# redistributors' SGI_base frames (private INTIDs), as Linux's vgic-mmio.c.
# Every 1-bit-per-IRQ register is 32-bit only, so an access covers exactly one
# 32-INTID bank and each handler is a single word operation.
# Sources: kvm-facts §1.2, §1.6, §2, §3.2; IHI 0069 §12.9.
#
# Handlers take the part's state as `void *ctx` (the signature of
# cstate.pxd's access_fn); for these it is the Gic's GicState.
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from vgic._core.consts cimport NR_PRIVATE_IRQS, PRIORITY_MASK
from vgic._core.gicstate cimport (GicState, reg_bank, prio_index, deliverable, stamp_new,
    stamp_fresh, pending_word, hw_bits, phys_levels, phys_change_active,
    BM_ENABLED, BM_PENDING_LATCH, BM_LINE_LEVEL, BM_ACTIVE, BM_GROUP, BM_EDGE)
from vgic._core.bitmap cimport (read_bytes, write_priority, icfgr_from_edge,
    edge_from_icfgr, size_mask)

cdef inline uint64_t raz(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    return 0

cdef inline uint64_t rao(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    return size_mask(size)

cdef inline uint64_t wi(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    return 0

cdef inline int uwi(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    return 0

# ---- IGROUPR: 1 = Group 1 (KVM keeps groups guest-configurable, IIDR rev >= 2)
cdef inline uint64_t read_group(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    cdef GicState *g = <GicState *>ctx
    return g.bm[BM_GROUP][reg_bank(g, vcpu, intid)]

cdef inline uint64_t write_group(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    cdef GicState *g = <GicState *>ctx
    g.bm[BM_GROUP][reg_bank(g, vcpu, intid)] = <uint32_t>val
    return 0

# ---- ISENABLER / ICENABLER: read the enable bits, write 1 to set / clear
cdef inline uint64_t read_enable(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    cdef GicState *g = <GicState *>ctx
    return g.bm[BM_ENABLED][reg_bank(g, vcpu, intid)]

cdef inline uint64_t write_senable(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    cdef GicState *g = <GicState *>ctx
    # Newly enabled, pending and not active: deliverable from now on.  A
    # write that enables nothing new (the common repeat) stops early.
    cdef uint32_t b = reg_bank(g, vcpu, intid)
    cdef uint32_t en = g.bm[BM_ENABLED][b]
    cdef uint32_t newly = <uint32_t>val & ~en
    cdef uint32_t m = hw_bits(g, vcpu, b) & ~g.bm[BM_EDGE][b] & <uint32_t>val
    cdef uint32_t before, high, low
    if m:
        # A HW-mapped level interrupt's line is resampled from its device;
        # one that fell while not active has its physical interrupt
        # deactivated (vgic_mmio_write_senable).
        before = deliverable(g, b)
        high = g.bm[BM_LINE_LEVEL][b] & m
        g.bm[BM_LINE_LEVEL][b] = (g.bm[BM_LINE_LEVEL][b] & ~m) | phys_levels(g, vcpu, m)
        low = high & ~g.bm[BM_LINE_LEVEL][b] & ~g.bm[BM_ACTIVE][b]
        phys_change_active(g, vcpu, b, low, False)
        g.bm[BM_ENABLED][b] = en | <uint32_t>val
        stamp_new(g, b, before)
        return 0
    g.bm[BM_ENABLED][b] = en | <uint32_t>val
    if newly:
        stamp_fresh(g, b, newly & ~g.bm[BM_ACTIVE][b] & pending_word(g, b))
    return 0

cdef inline uint64_t write_cenable(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    cdef GicState *g = <GicState *>ctx
    g.bm[BM_ENABLED][reg_bank(g, vcpu, intid)] &= ~<uint32_t>val
    return 0

# ---- ISPENDR / ICPENDR
cdef inline uint64_t read_pending(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    cdef GicState *g = <GicState *>ctx
    # A guest sees pending = latch for edge, latch OR line level for level
    # (KVM irq_is_pending()).
    # A HW-mapped level interrupt reads as its device's line now
    # (vgic_mmio_read_pending: vgic_get_phys_line_level, guest reads only).
    cdef uint32_t b = reg_bank(g, vcpu, intid)
    cdef uint32_t m = hw_bits(g, vcpu, b) & ~g.bm[BM_EDGE][b]
    if m:
        return (pending_word(g, b) & ~m) | phys_levels(g, vcpu, m)
    return pending_word(g, b)

cdef inline uint64_t write_spending(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    cdef GicState *g = <GicState *>ctx
    # Newly pending, enabled and not active: deliverable from now on.  Only a
    # newly set latch can make an interrupt newly pending.
    cdef uint32_t b = reg_bank(g, vcpu, intid)
    cdef uint32_t latch = g.bm[BM_PENDING_LATCH][b]
    cdef uint32_t newly = <uint32_t>val & ~latch
    g.bm[BM_PENDING_LATCH][b] = latch | <uint32_t>val
    # A HW-mapped one gets its physical interrupt activated, so the guest's
    # deactivation has something to deactivate (vgic_hw_irq_spending).
    phys_change_active(g, vcpu, b, <uint32_t>val, True)
    if newly:
        stamp_fresh(g, b, newly & ~(g.bm[BM_LINE_LEVEL][b] & ~g.bm[BM_EDGE][b])
                    & g.bm[BM_ENABLED][b] & ~g.bm[BM_ACTIVE][b])
    return 0

cdef inline uint64_t write_cpending(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    cdef GicState *g = <GicState *>ctx
    # Clears the latch only: a level interrupt whose line is high stays
    # pending.  A HW-mapped one that is not active also has its physical
    # interrupt deactivated (vgic_hw_irq_cpending).
    cdef uint32_t b = reg_bank(g, vcpu, intid)
    g.bm[BM_PENDING_LATCH][b] &= ~<uint32_t>val
    phys_change_active(g, vcpu, b, <uint32_t>val & ~g.bm[BM_ACTIVE][b], False)
    return 0

cdef inline uint64_t uread_spending(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    cdef GicState *g = <GicState *>ctx
    # Userspace saves the latch alone; the line level travels via LEVEL_INFO.
    return g.bm[BM_PENDING_LATCH][reg_bank(g, vcpu, intid)]

cdef inline int uwrite_spending(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    cdef GicState *g = <GicState *>ctx
    # A restore assigns the latch whatever the trigger mode, so that the
    # order of restoring ICFGR and ISPENDR does not matter.
    cdef uint32_t b = reg_bank(g, vcpu, intid)
    cdef uint32_t before = deliverable(g, b)
    g.bm[BM_PENDING_LATCH][b] = <uint32_t>val
    stamp_new(g, b, before)
    return 0

# ---- ISACTIVER / ICACTIVER
cdef inline uint64_t read_active(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    cdef GicState *g = <GicState *>ctx
    return g.bm[BM_ACTIVE][reg_bank(g, vcpu, intid)]

cdef inline uint64_t write_sactive(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    cdef GicState *g = <GicState *>ctx
    cdef uint32_t b = reg_bank(g, vcpu, intid)
    cdef uint32_t before = deliverable(g, b)
    g.bm[BM_ACTIVE][b] |= <uint32_t>val
    stamp_new(g, b, before)
    phys_change_active(g, vcpu, b, <uint32_t>val, True)
    return 0

cdef inline uint64_t write_cactive(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    cdef GicState *g = <GicState *>ctx
    cdef uint32_t b = reg_bank(g, vcpu, intid)
    g.bm[BM_ACTIVE][b] &= ~<uint32_t>val
    phys_change_active(g, vcpu, b, <uint32_t>val, False)
    return 0

cdef inline int uwrite_sactive(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    # Userspace leaves a HW-mapped IRQ's active state alone, virtual and
    # physical (vgic_hw_irq_change_active returns early for is_uaccess).
    cdef GicState *g = <GicState *>ctx
    cdef uint32_t b = reg_bank(g, vcpu, intid)
    cdef uint32_t before = deliverable(g, b)
    g.bm[BM_ACTIVE][b] |= <uint32_t>val & ~hw_bits(g, vcpu, b)
    stamp_new(g, b, before)
    return 0

cdef inline int uwrite_cactive(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    cdef GicState *g = <GicState *>ctx
    cdef uint32_t b = reg_bank(g, vcpu, intid)
    g.bm[BM_ACTIVE][b] &= ~(<uint32_t>val & ~hw_bits(g, vcpu, b))
    return 0

# ---- IPRIORITYR: one byte per INTID, byte or word access
cdef inline uint64_t read_priority(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    cdef GicState *g = <GicState *>ctx
    return read_bytes(&g.priority[prio_index(g, vcpu, intid)], size)

cdef inline uint64_t write_prio(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    cdef GicState *g = <GicState *>ctx
    write_priority(&g.priority[prio_index(g, vcpu, intid)], size, val, PRIORITY_MASK)
    return 0

# ---- ICFGR: two bits per INTID, 16 INTIDs per word
cdef inline uint64_t read_config(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    cdef GicState *g = <GicState *>ctx
    return icfgr_from_edge(g.bm[BM_EDGE][reg_bank(g, vcpu, intid)] >> (intid & 16))

cdef inline uint64_t write_config(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    cdef GicState *g = <GicState *>ctx
    # SGIs are always edge and KVM keeps PPIs as configured by the kernel,
    # so private INTIDs ignore the write: GICR_ICFGR0/1 are read-only.
    if intid < NR_PRIVATE_IRQS:
        return 0
    cdef uint32_t b = reg_bank(g, vcpu, intid)
    cdef uint32_t shift = intid & 16
    g.bm[BM_EDGE][b] = (g.bm[BM_EDGE][b] & ~(<uint32_t>0xFFFF << shift)) | (edge_from_icfgr(<uint32_t>val) << shift)
    return 0
