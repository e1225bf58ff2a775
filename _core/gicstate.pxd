# The C-level state of one VM's distributor and redistributors.
#
# Per-IRQ single-bit state lives in bitmaps of 32-bit "banks": bank w < 32
# holds SPIs 32w..32w+31 (bank 0 is unused: with ARE=1 the distributor has no
# private INTIDs), bank 32+v holds the private INTIDs 0..31 of vCPU v.  A
# 32-bit GICD_ISENABLER<n> access is then one word operation, and so is the
# GICR_ISENABLER0 access of a redistributor.  Byte-wide state (priority) uses
# the same bank numbering, 32 bytes per bank.
#
# Every mutable value - the scalars as much as the arrays - lives in the
# Gic's one state buffer (CState.buf), so replay rollback and snapshots copy
# it whole and no field can escape them.
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int32_t

from vgic._core.consts cimport NR_PRIVATE_IRQS, MAX_INTID_SPACE, MPIDR_AFF210_MASK, MPIDR_HWID_MASK

cdef enum:
    SPI_BANKS = MAX_INTID_SPACE // 32      # INTIDs 0..1023 in 32-bit banks

# Rows of the bitmap array (names follow KVM's struct vgic_irq fields).
cdef enum:
    BM_ENABLED = 0
    BM_PENDING_LATCH = 1
    BM_LINE_LEVEL = 2
    BM_ACTIVE = 3
    BM_GROUP = 4
    BM_EDGE = 5             # 1 = edge-triggered (KVM: config == VGIC_CONFIG_EDGE)
    NR_BITMAPS = 6

# The scalar registers, at the start of the state buffer.
cdef struct GicScalars:
    uint64_t propbaser          # GICR_PROPBASER, shared by every redistributor
    uint64_t seq_counter        # the last queue stamp handed out
    uint32_t dist_enabled       # GICD_CTLR.EnableGrp1
    uint32_t implementation_rev  # GICD_IIDR.Revision (KVM_VGIC_IMP_REV_*)

cdef struct GicState:
    uint32_t nr_irqs            # private + SPIs, a multiple of 32
    uint32_t nr_vcpus
    uint32_t nr_banks           # SPI_BANKS + nr_vcpus
    uint32_t mpidrs_default     # every mpidr[i] is KVM's default for vCPU i
    const uint64_t *mpidr       # nr_vcpus (immutable)
    # -- everything below points into the state buffer --
    GicScalars *s
    uint32_t *bm[NR_BITMAPS]    # row pointers, nr_banks words each
    uint8_t *priority           # nr_banks * 32, plus 8 bytes of padding
    uint32_t *route             # MAX_INTID_SPACE: GICD_IROUTER Aff2.Aff1.Aff0
    int32_t *target             # MAX_INTID_SPACE: routed vCPU, -1 for none
    uint64_t *pendbaser         # nr_vcpus
    uint32_t *gicr_ctlr         # nr_vcpus
    uint64_t *seq               # nr_banks * 32: when each IRQ last became deliverable

cdef inline uint32_t bank_of(const GicState *g, int vcpu, uint32_t intid) noexcept nogil:
    if intid >= NR_PRIVATE_IRQS:
        return intid >> 5
    return SPI_BANKS + <uint32_t>vcpu

cdef inline uint32_t prio_index(const GicState *g, int vcpu, uint32_t intid) noexcept nogil:
    return (bank_of(g, vcpu, intid) << 5) | (intid & 31)

cdef inline int32_t mpidr_to_vcpu(const GicState *g, uint64_t aff) noexcept nogil:
    # The vCPU whose MPIDR affinity (Aff3 at 39:32, Aff2..Aff0 at 23:0) equals
    # `aff`, or -1 (KVM's kvm_mpidr_to_vcpu(); vgic.topology.MpidrIndex is the
    # Python form).  KVM's default MPIDR is a bijection of the vCPU id, so
    # with default MPIDRs its inverse names the only candidate.
    cdef uint64_t guess = (aff & 0xF) | (((aff >> 8) & 0xFF) << 4) | (((aff >> 16) & 0xFF) << 12)
    cdef uint32_t i
    aff &= MPIDR_HWID_MASK
    if g.mpidrs_default:
        if guess < g.nr_vcpus and (aff & 0xF0) == 0 and (aff >> 24) == 0 \
                and (g.mpidr[guess] & MPIDR_HWID_MASK) == aff:
            return <int32_t>guess
        return -1
    # Otherwise the lowest matching vCPU index, as KVM's linear search.
    for i in range(g.nr_vcpus):
        if (g.mpidr[i] & MPIDR_HWID_MASK) == aff:
            return <int32_t>i
    return -1


cdef extern from *:
    int gic_ctz "__builtin_ctz"(unsigned int x) nogil

cdef inline uint32_t pending_word(const GicState *g, uint32_t b) noexcept nogil:
    # KVM's irq_is_pending() for bank b: the latch, or the line of a level
    # interrupt.
    return g.bm[BM_PENDING_LATCH][b] | (g.bm[BM_LINE_LEVEL][b] & ~g.bm[BM_EDGE][b])

cdef inline uint32_t deliverable(const GicState *g, uint32_t b) noexcept nogil:
    # The IRQs of bank b that KVM's oracle could queue: active, or enabled
    # and pending.
    return g.bm[BM_ACTIVE][b] | (g.bm[BM_ENABLED][b] & pending_word(g, b))

cdef inline void stamp_fresh(GicState *g, uint32_t b, uint32_t fresh) noexcept nogil:
    # KVM queues an interrupt on its target's ap_list when it becomes
    # deliverable (vgic_queue_irq_unlock).  The model queues at the target's
    # next entry, in the order of these stamps (then INTID), so the ap_list
    # keeps event order.  The IRQs one event makes deliverable share a stamp:
    # with the INTID as tie-break they queue in INTID order, as KVM's
    # for_each_set_bit loops queue them.
    cdef uint64_t stamp
    cdef uint64_t *row
    if fresh:
        g.s.seq_counter += 1
        stamp = g.s.seq_counter
        row = g.seq + (b << 5)
        while fresh:
            row[gic_ctz(fresh)] = stamp
            fresh &= fresh - 1

cdef inline void stamp_new(GicState *g, uint32_t b, uint32_t before) noexcept nogil:
    # Stamp what became deliverable in bank b since `before` was read.
    stamp_fresh(g, b, deliverable(g, b) & ~before)
