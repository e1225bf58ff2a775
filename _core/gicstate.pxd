# The C-level state of one VM's distributor and redistributors.
#
# Per-IRQ single-bit state lives in bitmaps of 32-bit "banks": bank w < 32
# holds SPIs 32w..32w+31 (bank 0 is unused: with ARE=1 the distributor has no
# private INTIDs), bank 32+v holds the private INTIDs 0..31 of vCPU v, and
# with LPIs (an ITS) bank lpi_bank0+k holds LPIs 8192+32k..8192+32k+31.  A
# 32-bit GICD_ISENABLER<n> access is then one word operation, and so is the
# GICR_ISENABLER0 access of a redistributor.  Byte-wide and word-wide
# per-IRQ state (priority, target, seq) uses the same numbering: the IRQ
# index (bank << 5) | (intid & 31), which for an SPI is its INTID.
#
# An LPI exists (KVM: its struct vgic_irq is allocated) while an ITE maps it
# (lpi_refs), while an ap_list holds it, or while it is pending and enabled
# towards a vCPU (KVM would hold it on that vCPU's ap_list by then; this
# model queues at the target's next entry).  A freed LPI's state is zero.
#
# Every mutable value - the scalars as much as the arrays - lives in the
# Gic's one state buffer (CState.buf), so replay rollback and snapshots copy
# it whole and no field can escape them.  The ap_lists (each vCPU's list
# threaded through per-IRQ next/prev links, and queued_on, KVM's irq->vcpu)
# sit outside it: only the world switch and the LPI paths change them.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t

from vgic._core.guestmem cimport GuestMem
from vgic._core.consts cimport (NR_PRIVATE_IRQS, MAX_INTID_SPACE, MPIDR_AFF210_MASK, MPIDR_HWID_MASK,
    LPI_BASE)

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
    uint32_t lpi_orphans        # 1: an LPI may exist that no ITE maps and no ap_list holds
    uint32_t pad

cdef struct LpiUndo:
    # What lpi_add did while a restore runs, so a failed restore can be
    # undone whole: the LPIs it made, and the pending-table bytes it
    # consumed (address and the value before).
    uint32_t *made
    size_t nmade, capmade
    uint64_t *at
    uint8_t *old
    size_t nat, capat

# irq->ops->get_input_level of KVM's HW-mapped interrupts: the line level
# of private INTID `intid` of vCPU `vcpu` as the device driving it sees it
# now (the arch timer's should_fire).
ctypedef uint32_t (*input_level_fn)(void *ctx, int vcpu, uint32_t intid) noexcept nogil

cdef struct GicState:
    uint32_t nr_irqs            # private + SPIs, a multiple of 32
    uint32_t nr_vcpus
    uint32_t nr_lpis            # 0 without an ITS, else NR_LPIS
    uint32_t lpi_bank0          # SPI_BANKS + nr_vcpus: the first LPI bank
    uint32_t nr_banks           # lpi_bank0 + nr_lpis / 32
    uint32_t mpidrs_default     # every mpidr[i] is KVM's default for vCPU i
    const uint64_t *mpidr       # nr_vcpus (immutable)
    GuestMem mem                # guest RAM (LPI property and pending tables)
    LpiUndo *undo               # non-NULL while a restore runs (lpi.pxd lpi_add logs into it)
    int32_t *queued_on          # nr_banks * 32: the vCPU whose ap_list holds the IRQ, or -1
    int32_t *ap_next            # nr_banks * 32 by IRQ index: the next on its list, -1 at the tail
    int32_t *ap_prev            # nr_banks * 32: the previous, -1 at the head
    int32_t *ap_head            # nr_vcpus
    int32_t *ap_tail            # nr_vcpus
    int32_t *ap_len             # nr_vcpus
    uint8_t *in_lr              # nr_banks * 32: 1 while the IRQ is in a list register
    # HW-mapped private interrupts (kvm_vgic_map_phys_irq: irq->hw,
    # irq->hwintid): set by the part that drives them (the arch timer), so
    # outside the state buffer like the ap_lists.  host_active is the
    # physical GIC's active state of the host PPIs (0..31) of the pCPU each
    # vCPU runs on: what an LR with HW = 1 deactivates.
    uint32_t *hw_mask           # nr_vcpus: the private INTIDs that are HW-mapped
    uint16_t *hw_pintid         # nr_vcpus * 32: their physical INTIDs
    uint32_t *host_active       # nr_vcpus (in the state buffer)
    input_level_fn input_level  # NULL: no mapped interrupt has a level source
    void *input_ctx
    # -- everything below points into the state buffer --
    GicScalars *s
    uint32_t *bm[NR_BITMAPS]    # row pointers, nr_banks words each
    uint8_t *priority           # nr_banks * 32, plus 8 bytes of padding
    uint32_t *route             # MAX_INTID_SPACE: GICD_IROUTER Aff2.Aff1.Aff0
    int32_t *target             # nr_banks * 32 by IRQ index: routed vCPU, -1 for none
    uint64_t *pendbaser         # nr_vcpus
    uint32_t *gicr_ctlr         # nr_vcpus
    uint64_t *seq               # nr_banks * 32: when each IRQ last became deliverable
    uint32_t *lpi_refs          # nr_lpis: the ITEs that map each LPI
    uint32_t *lpi_exists        # nr_lpis / 32 words: the LPIs that exist
    uint64_t *lpi_live          # a bit per LPI bank holding an LPI that exists

cdef inline uint32_t bank_of(const GicState *g, int vcpu, uint32_t intid) noexcept nogil:
    if intid >= NR_PRIVATE_IRQS:
        if intid >= LPI_BASE:
            return g.lpi_bank0 + ((intid - LPI_BASE) >> 5)
        return intid >> 5
    return SPI_BANKS + <uint32_t>vcpu

cdef inline uint32_t reg_bank(const GicState *g, int vcpu, uint32_t intid) noexcept nogil:
    # bank_of for an INTID a GICD/GICR per-IRQ register names: never an LPI
    # (no LPI test on the MMIO hot path).
    if intid >= NR_PRIVATE_IRQS:
        return intid >> 5
    return SPI_BANKS + <uint32_t>vcpu

cdef inline uint32_t irq_index(uint32_t bank, uint32_t intid) noexcept nogil:
    # An IRQ's (bank, bit) as one index: per-IRQ arrays are indexed by it.
    return (bank << 5) | (intid & 31)

cdef inline uint32_t index_intid(const GicState *g, uint32_t idx) noexcept nogil:
    # The INTID of an IRQ index (inverse of irq_index for its vCPU).
    cdef uint32_t b = idx >> 5
    if b < SPI_BANKS:
        return idx
    if b < g.lpi_bank0:
        return idx & 31
    return LPI_BASE + ((b - g.lpi_bank0) << 5) + (idx & 31)

cdef inline bint valid_intid(const GicState *g, uint32_t intid) noexcept nogil:
    # An INTID with state: private, an allocated SPI, or an LPI that exists.
    cdef uint32_t k
    if intid < g.nr_irqs:
        return True
    if intid < LPI_BASE:
        return False
    k = intid - LPI_BASE
    return k < g.nr_lpis and (g.lpi_exists[k >> 5] >> (k & 31)) & 1

cdef inline uint32_t prio_index(const GicState *g, int vcpu, uint32_t intid) noexcept nogil:
    # (SGIs, PPIs and SPIs: the registers' INTIDs)
    return (reg_bank(g, vcpu, intid) << 5) | (intid & 31)

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

cdef inline uint32_t hw_bits(const GicState *g, int vcpu, uint32_t b) noexcept nogil:
    # The HW-mapped IRQs of bank b (only private banks hold any).
    if b >= SPI_BANKS and b < g.lpi_bank0:
        return g.hw_mask[b - SPI_BANKS]
    return 0

cdef inline uint32_t phys_levels(const GicState *g, int vcpu, uint32_t mask) noexcept nogil:
    # vgic_get_phys_line_level() of each private INTID in `mask` of `vcpu`.
    cdef uint32_t out = 0, bit
    if g.input_level == NULL:
        return 0
    while mask:
        bit = <uint32_t>gic_ctz(mask)
        if g.input_level(g.input_ctx, vcpu, bit):
            out |= 1u << bit
        mask &= mask - 1
    return out

cdef inline void host_set_active(GicState *g, int vcpu, uint32_t pintid, bint active) noexcept nogil:
    # irq_set_irqchip_state(host_irq, IRQCHIP_STATE_ACTIVE, active) for a
    # host PPI; other physical INTIDs have no modelled state.
    if pintid < 32:
        if active:
            g.host_active[vcpu] |= 1u << pintid
        else:
            g.host_active[vcpu] &= ~(1u << pintid)

cdef inline void phys_change_active(GicState *g, int vcpu, uint32_t b, uint32_t mask, bint active) noexcept nogil:
    # A guest's GICR_ISACTIVER0/ICACTIVER0 write to HW-mapped IRQs moves the
    # physical interrupt's active state with the virtual one
    # (vgic_hw_irq_change_active, not for userspace accesses).
    cdef uint32_t bit
    mask &= hw_bits(g, vcpu, b)
    while mask:
        bit = <uint32_t>gic_ctz(mask)
        host_set_active(g, vcpu, g.hw_pintid[(b - SPI_BANKS) * 32 + bit], active)
        mask &= mask - 1

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


cdef inline void line_report(GicState *g, uint32_t b, uint32_t bit, bint level) noexcept nogil:
    # kvm_vgic_inject_irq: an edge interrupt latches on a rising report (a
    # falling one is no event); a level interrupt's line follows the report.
    cdef uint32_t before = deliverable(g, b)
    if g.bm[BM_EDGE][b] & bit:
        if level:
            g.bm[BM_PENDING_LATCH][b] |= bit
    elif level:
        g.bm[BM_LINE_LEVEL][b] |= bit
    else:
        g.bm[BM_LINE_LEVEL][b] &= ~bit
    stamp_new(g, b, before)


# ------------------------------------------------------------- the oracle
cdef inline int32_t target_of(const GicState *g, int vcpu, uint32_t intid) noexcept nogil:
    # irq->target_vcpu: the owner of a private INTID, else the routed vCPU.
    if intid < NR_PRIVATE_IRQS:
        return vcpu
    return g.target[irq_index(bank_of(g, vcpu, intid), intid)]

cdef inline int32_t oracle(const GicState *g, int vcpu, uint32_t intid) noexcept nogil:
    # vgic_target_oracle(): an active interrupt stays where it is queued; a
    # pending and enabled one goes to its target while the distributor is
    # enabled; anything else belongs nowhere (-1).
    cdef uint32_t b = bank_of(g, vcpu, intid)
    cdef uint32_t bit = 1u << (intid & 31)
    cdef int32_t q
    if g.bm[BM_ACTIVE][b] & bit:
        q = g.queued_on[irq_index(b, intid)]
        return q if q >= 0 else target_of(g, vcpu, intid)
    if (g.bm[BM_ENABLED][b] & bit) and (pending_word(g, b) & bit):
        return target_of(g, vcpu, intid) if g.s.dist_enabled else -1
    return -1


# -------------------------------------------------------------------- LPIs
cdef inline bint lpi_exists(const GicState *g, uint32_t intid) noexcept nogil:
    cdef uint32_t k = intid - LPI_BASE
    return intid >= LPI_BASE and k < g.nr_lpis and (g.lpi_exists[k >> 5] >> (k & 31)) & 1

cdef inline void lpi_set_exists(GicState *g, uint32_t intid, bint on) noexcept nogil:
    cdef uint32_t k = intid - LPI_BASE
    cdef uint32_t w = k >> 5
    if on:
        g.lpi_exists[w] |= 1u << (k & 31)
    else:
        g.lpi_exists[w] &= ~(1u << (k & 31))
    if g.lpi_exists[w]:
        g.lpi_live[w >> 6] |= (<uint64_t>1) << (w & 63)
    else:
        g.lpi_live[w >> 6] &= ~((<uint64_t>1) << (w & 63))

cdef inline void lpi_free(GicState *g, uint32_t intid) noexcept nogil:
    # The struct vgic_irq is gone: nothing of it may linger for a later
    # vgic_add_lpi of the same INTID to find.
    cdef uint32_t b = bank_of(g, 0, intid)
    cdef uint32_t bit = 1u << (intid & 31)
    cdef uint32_t idx = irq_index(b, intid)
    cdef int r
    for r in range(NR_BITMAPS):
        g.bm[r][b] &= ~bit
    g.priority[idx] = 0
    g.target[idx] = -1
    g.seq[idx] = 0
    g.in_lr[idx] = 0
    g.lpi_refs[intid - LPI_BASE] = 0
    lpi_set_exists(g, intid, False)

cdef inline bint lpi_release(GicState *g, uint32_t intid) noexcept nogil:
    # Free an LPI nothing holds any more: no ITE maps it, no ap_list holds
    # it, and it is not on its way to one (pending and enabled towards a
    # vCPU, where KVM would already have queued it).  True if freed.
    if not lpi_exists(g, intid) or g.lpi_refs[intid - LPI_BASE]:
        return False
    if g.queued_on[irq_index(bank_of(g, 0, intid), intid)] >= 0:
        return False
    if oracle(g, 0, intid) >= 0:
        # An orphan: KVM holds it on its target's ap_list, which drops it at
        # that vCPU's next exit if by then it is not deliverable
        # (lpi_sweep_orphans).
        g.s.lpi_orphans = 1
        return False
    lpi_free(g, intid)
    return True

cdef inline void lpi_sweep_orphans(GicState *g, int vcpu) noexcept nogil:
    # At vCPU `vcpu`'s prune: free the orphan LPIs (no ITE, on no ap_list)
    # KVM would have queued on its list that are no longer deliverable, as
    # vgic_prune_ap_list() drops them; the others stay orphans.
    cdef uint32_t w, k, bits, intid, idx, left = 0
    cdef int32_t t
    if not g.s.lpi_orphans:
        return
    for w in range(g.nr_lpis >> 5):
        bits = g.lpi_exists[w]
        while bits:
            k = (w << 5) + <uint32_t>gic_ctz(bits)
            bits &= bits - 1
            if g.lpi_refs[k]:
                continue
            intid = LPI_BASE + k
            idx = irq_index(bank_of(g, 0, intid), intid)
            if g.queued_on[idx] >= 0:
                continue
            t = g.target[idx]
            if oracle(g, 0, intid) < 0 and (t == vcpu or t < 0 or <uint32_t>t >= g.nr_vcpus):
                lpi_free(g, intid)
            else:
                left = 1
    g.s.lpi_orphans = left


# ---------------------------------------------------------------- ap_lists
cdef inline void ap_append(GicState *g, int v, uint32_t idx) noexcept nogil:
    # Queue IRQ index idx at the tail of vCPU v's ap_list.
    g.ap_next[idx] = -1
    g.ap_prev[idx] = g.ap_tail[v]
    if g.ap_tail[v] >= 0:
        g.ap_next[g.ap_tail[v]] = <int32_t>idx
    else:
        g.ap_head[v] = <int32_t>idx
    g.ap_tail[v] = <int32_t>idx
    g.ap_len[v] += 1
    g.queued_on[idx] = v

cdef inline void ap_remove(GicState *g, int v, uint32_t idx) noexcept nogil:
    cdef int32_t n = g.ap_next[idx], p = g.ap_prev[idx]
    if p >= 0:
        g.ap_next[p] = n
    else:
        g.ap_head[v] = n
    if n >= 0:
        g.ap_prev[n] = p
    else:
        g.ap_tail[v] = p
    g.ap_next[idx] = -1
    g.ap_prev[idx] = -1
    g.ap_len[v] -= 1
    g.queued_on[idx] = -1
