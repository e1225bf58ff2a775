# One vCPU's GICv3 CPU-interface record, shared by the hyp save/restore
# kernels (lr.pyx) and KVM's flush/fold (aplist.pyx): the C view of
# vgic.ich.VCPU_IF, field for field (360 bytes), and the ICH_LR<n>_EL2,
# ICH_HCR_EL2 and ICH_VMCR_EL2 fields they use (IHI 0069 §12.4).
from libc.stdint cimport uint32_t, uint64_t

cdef enum:
    MAX_LRS = 16
    MAX_APRS = 4

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

# ICH_LR<n>_EL2.  The 64-bit masks do not fit a C enum, so they are macros.
cdef enum:
    LR_PINTID_SHIFT = 32
    LR_PRIORITY_SHIFT = 48
cdef extern from *:
    """
    #define VGIC_LR_VINTID_MASK 0xFFFFFFFFULL
    #define VGIC_LR_EOI (1ULL << 41)
    #define VGIC_LR_GROUP (1ULL << 60)
    #define VGIC_LR_HW (1ULL << 61)
    #define VGIC_LR_PENDING (1ULL << 62)
    #define VGIC_LR_ACTIVE (1ULL << 63)
    #define VGIC_LR_STATE (VGIC_LR_PENDING | VGIC_LR_ACTIVE)
    #define VGIC_HCR_EOICOUNT (0x1FULL << 27)
    """
    const uint64_t LR_VINTID_MASK "VGIC_LR_VINTID_MASK"
    const uint64_t LR_EOI "VGIC_LR_EOI"
    const uint64_t LR_GROUP "VGIC_LR_GROUP"
    const uint64_t LR_HW "VGIC_LR_HW"
    const uint64_t LR_PENDING "VGIC_LR_PENDING"
    const uint64_t LR_ACTIVE "VGIC_LR_ACTIVE"
    const uint64_t LR_STATE "VGIC_LR_STATE"
    const uint64_t HCR_EOICOUNT "VGIC_HCR_EOICOUNT"

# ICH_HCR_EL2
cdef enum:
    HCR_EN = 1 << 0
    HCR_UIE = 1 << 1
    HCR_LRENPIE = 1 << 2
    HCR_NPIE = 1 << 3
    HCR_VGRP0EIE = 1 << 4
    HCR_VGRP0DIE = 1 << 5
    HCR_VGRP1EIE = 1 << 6
    HCR_VGRP1DIE = 1 << 7
    HCR_VSGIEOICOUNT = 1 << 8
    HCR_TDIR = 1 << 14
    HCR_EOICOUNT_SHIFT = 27

# ICH_VMCR_EL2
cdef enum:
    VMCR_ENG0 = 1 << 0
    VMCR_ENG1 = 1 << 1
    VMCR_EOIM = 1 << 9


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
