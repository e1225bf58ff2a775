# Distributor-specific handlers (GICD_CTLR/TYPER/IIDR/TYPER2, GICD_IROUTER,
# ID registers), as Linux's vgic-mmio-v3.c.  Sources: kvm-facts §1.3, §1.4,
# §2; IHI 0069 §12.9.
from libc.stdint cimport uint32_t, uint64_t, int32_t
from vgic._core.gicstate cimport GicState, mpidr_to_vcpu
from vgic._core.bitmap cimport extract_bytes

cdef enum:
    GICD_CTLR_ENABLE_G1 = 1 << 1
    GICD_CTLR_ARE = 1 << 4
    GICD_CTLR_DS = 1 << 6
    GICD_TYPER_IDBITS_SHIFT = 19
    IDBITS_NO_ITS = 9              # 10 INTID bits without LPIs
    PRODUCT_ID_KVM = 0x4B
    IMPLEMENTER_ARM = 0x43B
    IIDR_REV_SHIFT = 12
    IIDR_REV_MASK = 0xF << 12
    KVM_VGIC_IMP_REV_2 = 2
    KVM_VGIC_IMP_REV_3 = 3
    PIDR2_OFFSET = 0xFFE8
    PIDR2_GICV3 = 0x3B
    IROUTER_AFF_MASK = 0xFFFFFF
    EINVAL = 22

cdef inline uint32_t gicd_iidr(const GicState *g) noexcept nogil:
    return (PRODUCT_ID_KVM << 24) | (g.implementation_rev << IIDR_REV_SHIFT) | IMPLEMENTER_ARM

cdef inline uint64_t read_v3_misc(GicState *g, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    cdef uint32_t reg = off & 0xC
    if reg == 0x0:      # GICD_CTLR: ARE and DS read as one, RWP as zero
        return GICD_CTLR_ARE | GICD_CTLR_DS | (GICD_CTLR_ENABLE_G1 if g.dist_enabled else 0)
    if reg == 0x4:      # GICD_TYPER: ITLinesNumber | IDbits, no LPIs/MBIS/RSS
        return ((g.nr_irqs >> 5) - 1) | (IDBITS_NO_ITS << GICD_TYPER_IDBITS_SHIFT)
    if reg == 0x8:      # GICD_IIDR
        return gicd_iidr(g)
    return 0            # GICD_TYPER2: no nASSGIcap without GICv4.1

cdef inline uint64_t write_v3_misc(GicState *g, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    # Only GICD_CTLR.EnableGrp1 is guest-writable; nASSGIreq needs GICv4.1.
    if (off & 0xC) == 0x0:
        g.dist_enabled = 1 if (val & GICD_CTLR_ENABLE_G1) else 0
    return 0

cdef inline int uwrite_v3_misc(GicState *g, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    cdef uint32_t reg = off & 0xC
    cdef uint32_t rev
    if reg == 0x8:
        # GICD_IIDR: userspace may pick the implementation revision, nothing
        # else (written value's Revision field, as fixed upstream in 2026).
        if ((<uint32_t>val ^ gicd_iidr(g)) & ~(<uint32_t>IIDR_REV_MASK)) != 0:
            return -EINVAL
        rev = (<uint32_t>val & IIDR_REV_MASK) >> IIDR_REV_SHIFT
        if rev != KVM_VGIC_IMP_REV_2 and rev != KVM_VGIC_IMP_REV_3:
            return -EINVAL
        g.implementation_rev = rev
        return 0
    if reg == 0xC:
        # GICD_TYPER2 is fixed for this host model: only its value is accepted.
        if <uint32_t>val != read_v3_misc(g, vcpu, off, intid, size, 0):
            return -EINVAL
        return 0
    write_v3_misc(g, vcpu, off, intid, size, val)
    return 0

cdef inline uint64_t read_irouter(GicState *g, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    # Aff3 (upper word) is not implemented, so an access there reads zero.
    return extract_bytes(g.route[intid], off & 7, size)

cdef inline uint64_t write_irouter(GicState *g, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    if off & 4:
        return 0
    # IRM (1-of-N) is not supported: only Aff2.Aff1.Aff0 are kept.
    g.route[intid] = <uint32_t>(val & IROUTER_AFF_MASK)
    g.target[intid] = mpidr_to_vcpu(g, g.route[intid])
    return 0

cdef inline uint64_t read_idregs(GicState *g, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    # PIDR2.ArchRev = 3 reports a GICv3; every other ID register reads 0.
    return PIDR2_GICV3 if off == PIDR2_OFFSET else 0
