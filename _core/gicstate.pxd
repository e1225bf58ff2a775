# The C-level state of one VM's distributor and redistributors, and the
# region descriptor the MMIO framework dispatches through.
#
# Per-IRQ single-bit state lives in bitmaps of 32-bit "banks": bank w < 32
# holds SPIs 32w..32w+31 (bank 0 is unused: with ARE=1 the distributor has no
# private INTIDs), bank 32+v holds the private INTIDs 0..31 of vCPU v.  A
# 32-bit GICD_ISENABLER<n> access is then one word operation, and so is the
# GICR_ISENABLER0 access of a redistributor.  Byte-wide state (priority) uses
# the same bank numbering, 32 bytes per bank.
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int32_t

cdef enum:
    NR_SGIS = 16
    NR_PRIVATE = 32
    SPI_BANKS = 32          # INTIDs 0..1023
    INTID_SPACE = 1024

# Rows of the bitmap array (names follow KVM's struct vgic_irq fields).
cdef enum:
    BM_ENABLED = 0
    BM_PENDING_LATCH = 1
    BM_LINE_LEVEL = 2
    BM_ACTIVE = 3
    BM_GROUP = 4
    BM_EDGE = 5             # 1 = edge-triggered (KVM: config == VGIC_CONFIG_EDGE)
    NR_BITMAPS = 6

cdef enum:
    FRAME_GICD = 0
    FRAME_GICR_RD = 1
    FRAME_GICR_SGI = 2
    NR_FRAMES = 3

cdef enum:
    ACC_8 = 1
    ACC_32 = 2
    ACC_64 = 4

cdef struct GicState:
    uint64_t dist_base
    uint64_t redist_base
    uint32_t nr_irqs            # private + SPIs, a multiple of 32
    uint32_t nr_vcpus
    uint32_t nr_banks           # SPI_BANKS + nr_vcpus
    uint32_t dist_enabled       # GICD_CTLR.EnableGrp1
    uint32_t implementation_rev # GICD_IIDR.Revision (KVM_VGIC_IMP_REV_*)
    uint64_t propbaser          # GICR_PROPBASER, shared by every redistributor
    uint32_t *bm[NR_BITMAPS]    # row pointers, nr_banks words each
    uint8_t *priority           # nr_banks * 32, plus 8 bytes of padding
    uint32_t *route             # INTID_SPACE: GICD_IROUTER Aff2.Aff1.Aff0
    int32_t *target             # INTID_SPACE: routed vCPU, -1 for none
    uint64_t *mpidr             # nr_vcpus
    uint32_t mpidrs_default     # every mpidr[i] is KVM's default for vCPU i
    uint64_t *pendbaser         # nr_vcpus
    uint32_t *gicr_ctlr         # nr_vcpus
    uint64_t *seq               # nr_banks * 32: when each IRQ last became deliverable
    uint64_t seq_counter        # the last stamp handed out

# One signature for every guest handler, read or write (a read ignores `val`,
# a write returns 0), so dispatch is a single indirect call indexed by the
# access direction instead of a data-dependent branch and a call.
ctypedef uint64_t (*access_fn)(GicState *g, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil
ctypedef int (*uwrite_fn)(GicState *g, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil

# What a guest access needs, in 32 bytes (half a cache line): the replay
# loop reads one per access, so its size is its cache footprint.
cdef struct Region:
    uint32_t offset
    uint32_t length
    uint32_t first_intid
    uint8_t widths              # ACC_* flags
    uint8_t bpi                 # bits per IRQ, 0 for a plain register
    uint8_t bpi_shift           # log2(bpi)
    uint8_t halts               # a guest access halts every running vCPU (active state)
    access_fn guest[2]          # [0] guest read, [1] guest write

# The userspace handlers of the same region (cold: device attributes only).
cdef struct URegion:
    access_fn uread             # userspace read (KVM's uaccess_read)
    uwrite_fn uwrite            # userspace write, returns 0 or -errno

cdef inline uint32_t bank_of(const GicState *g, int vcpu, uint32_t intid) noexcept nogil:
    if intid >= NR_PRIVATE:
        return intid >> 5
    return SPI_BANKS + <uint32_t>vcpu

cdef inline uint32_t prio_index(const GicState *g, int vcpu, uint32_t intid) noexcept nogil:
    return (bank_of(g, vcpu, intid) << 5) | (intid & 31)

cdef inline uint64_t default_mpidr(uint32_t vcpu_id) noexcept nogil:
    # KVM's reset MPIDR_EL1: Aff0 = id[3:0], Aff1 = id[11:4], Aff2 = id[19:12],
    # bit 31 RES1 (kvm-facts §1.5, reset_mpidr()).
    return ((1ULL << 31) | (vcpu_id & 0xF) | (<uint64_t>((vcpu_id >> 4) & 0xFF) << 8)
            | (<uint64_t>((vcpu_id >> 12) & 0xFF) << 16))

cdef inline int32_t mpidr_to_vcpu(const GicState *g, uint64_t aff) noexcept nogil:
    # The vCPU whose MPIDR affinity (Aff3 at 39:32, Aff2..Aff0 at 23:0) equals
    # `aff`, or -1 (KVM's kvm_mpidr_to_vcpu()).  KVM's default MPIDR is a
    # bijection of the vCPU id, so with default MPIDRs its inverse decides.
    cdef uint64_t guess = (aff & 0xF) | (((aff >> 8) & 0xFF) << 4) | (((aff >> 16) & 0xFF) << 12)
    cdef uint32_t i
    if g.mpidrs_default:
        if guess < g.nr_vcpus and (aff & 0xF0) == 0 and (aff >> 24) == 0 and (g.mpidr[guess] & 0xFF00FFFFFFULL) == aff:
            return <int32_t>guess
        return -1
    # Otherwise the lowest matching vCPU index, as KVM's linear search.
    for i in range(g.nr_vcpus):
        if (g.mpidr[i] & 0xFF00FFFFFFULL) == aff:
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
        g.seq_counter += 1
        stamp = g.seq_counter
        row = g.seq + (b << 5)
        while fresh:
            row[gic_ctz(fresh)] = stamp
            fresh &= fresh - 1

cdef inline void stamp_new(GicState *g, uint32_t b, uint32_t before) noexcept nogil:
    # Stamp what became deliverable in bank b since `before` was read.
    stamp_fresh(g, b, deliverable(g, b) & ~before)
