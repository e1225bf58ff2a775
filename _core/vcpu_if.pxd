# One vCPU's GICv3 CPU-interface record, shared by the hyp save/restore
# kernels (lr.pyx), KVM's flush/fold (aplist.pyx) and the guest's ICV_*
# accesses (icv.pyx): the C view of vgic.ich.VCPU_IF, field for field (360
# bytes).  The field constants come from vgic.ich through consts.pxd.
from libc.stdint cimport uint32_t, uint64_t

from vgic._core.consts cimport (MAX_LRS, MAX_APRS, LR_PRIORITY_SHIFT, LR_PINTID_SHIFT, LR_VINTID_MASK,
    LR_EOI, LR_GROUP, LR_HW, LR_PENDING, LR_ACTIVE, LR_STATE_MASK, HCR_EOICOUNT_MASK, HCR_EOICOUNT_SHIFT,
    VMCR_WRITABLE, VMCR_BPR0_MASK, VMCR_BPR0_SHIFT, VMCR_BPR1_MASK, VMCR_BPR1_SHIFT, VMCR_PMR_MASK,
    VMCR_PMR_SHIFT)

cdef struct VcpuIf:
    uint64_t ich_lr[MAX_LRS]
    uint64_t ich_hcr
    uint64_t ich_vmcr
    uint32_t ich_ap0r[MAX_APRS]
    uint32_t ich_ap1r[MAX_APRS]
    uint64_t vgic_lr[MAX_LRS]
    uint64_t vgic_hcr
    uint64_t vgic_vmcr
    uint32_t vgic_ap0r[MAX_APRS]
    uint32_t vgic_ap1r[MAX_APRS]
    uint32_t used_lrs
    uint32_t pad


cdef inline uint32_t lr_slot(uint32_t n, bint reverse) noexcept nogil:
    # The saved slot holding ICH_LR<n>_EL2: n (direct, today's KVM) or
    # 15 - n (the 2015 reverse storage order).
    return MAX_LRS - 1 - n if reverse else n


cdef inline uint64_t lr_encode(uint32_t vintid, uint32_t priority, bint group, bint pending,
                               bint active, bint hw, uint32_t pintid, bint eoi) noexcept nogil:
    # ICH_LR<n>_EL2 from its fields (IHI 0069 §12.4.6); EOI exists only with
    # HW = 0, where bits [41:32] are otherwise RES0.
    cdef uint64_t v = vintid | (<uint64_t>(priority & 0xFF) << LR_PRIORITY_SHIFT)
    if group:
        v |= LR_GROUP
    if pending:
        v |= LR_PENDING
    if active:
        v |= LR_ACTIVE
    if hw:
        v |= LR_HW | (<uint64_t>(pintid & 0x3FF) << LR_PINTID_SHIFT)
    elif eoi:
        v |= LR_EOI
    return v


cdef inline uint64_t stored_vmcr(uint64_t value, uint32_t pri_bits, uint32_t pre_bits) noexcept nogil:
    # What ICH_VMCR_EL2 holds after a write of `value` (vgic.ich.stored_vmcr):
    # RES0 dropped, VBPR0/VBPR1 at least their minimum (7 - PREbits and one
    # more), VPMR's unimplemented low priority bits cleared.
    cdef uint64_t v = value & VMCR_WRITABLE
    cdef uint64_t b0 = (v & VMCR_BPR0_MASK) >> VMCR_BPR0_SHIFT
    cdef uint64_t b1 = (v & VMCR_BPR1_MASK) >> VMCR_BPR1_SHIFT
    cdef uint64_t pmr = ((v & VMCR_PMR_MASK) >> VMCR_PMR_SHIFT) & ((0xFF << (8 - pri_bits)) & 0xFF)
    if b0 < 7 - pre_bits:
        b0 = 7 - pre_bits
    if b1 < 8 - pre_bits:
        b1 = 8 - pre_bits
    v &= ~(VMCR_BPR0_MASK | VMCR_BPR1_MASK | VMCR_PMR_MASK)
    return v | (b0 << VMCR_BPR0_SHIFT) | (b1 << VMCR_BPR1_SHIFT) | (pmr << VMCR_PMR_SHIFT)
