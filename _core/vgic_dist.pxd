# Distributor-specific handlers (GICD_CTLR/TYPER/IIDR/TYPER2, GICD_IROUTER,
# ID registers), as Linux's vgic-mmio-v3.c.  Handlers take the Gic's
# GicState as `void *ctx`.  Sources: kvm-facts §1.3, §1.4, §2; IHI 0069 §12.9.
from libc.errno cimport EINVAL
from libc.stdint cimport uint32_t, uint64_t
from vgic._core.consts cimport (GICD_CTLR_ENABLE_G1, GICD_CTLR_ARE, GICD_CTLR_DS,
    GICD_TYPER_IDBITS_SHIFT, INTERRUPT_ID_BITS_SPIS, PRODUCT_ID_KVM, IMPLEMENTER_ARM,
    IIDR_PRODUCT_ID_SHIFT, IIDR_REVISION_SHIFT, IIDR_REVISION_MASK, KVM_VGIC_IMP_REV_2,
    KVM_VGIC_IMP_REV_3, GICD_PIDR2, PIDR2_GICV3, IROUTER_AFF_MASK, GICD_CTLR, GICD_TYPER,
    GICD_IIDR, GICD_TYPER2, GICD_TYPER_LPIS, INTERRUPT_ID_BITS_ITS)
from vgic._core.gicstate cimport GicState, mpidr_to_vcpu
from vgic._core.bitmap cimport extract_bytes

cdef enum:
    MISC_SELECT = 0xC       # CTLR, TYPER, IIDR and TYPER2 share a 16-byte region

cdef inline uint32_t gicd_iidr(const GicState *g) noexcept nogil:
    return ((PRODUCT_ID_KVM << IIDR_PRODUCT_ID_SHIFT) | (g.s.implementation_rev << IIDR_REVISION_SHIFT)
            | IMPLEMENTER_ARM)

cdef inline uint64_t read_v3_misc(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    cdef GicState *g = <GicState *>ctx
    cdef uint32_t reg = off & MISC_SELECT
    if reg == GICD_CTLR:    # ARE and DS read as one, RWP as zero
        return GICD_CTLR_ARE | GICD_CTLR_DS | (GICD_CTLR_ENABLE_G1 if g.s.dist_enabled else 0)
    if reg == GICD_TYPER:   # ITLinesNumber | IDbits; LPIs with an ITS; no MBIS/RSS
        if g.nr_lpis:
            return (((g.nr_irqs >> 5) - 1) | ((INTERRUPT_ID_BITS_ITS - 1) << GICD_TYPER_IDBITS_SHIFT)
                    | GICD_TYPER_LPIS)
        return ((g.nr_irqs >> 5) - 1) | ((INTERRUPT_ID_BITS_SPIS - 1) << GICD_TYPER_IDBITS_SHIFT)
    if reg == GICD_IIDR:
        return gicd_iidr(g)
    return 0                # GICD_TYPER2: no nASSGIcap without GICv4.1

cdef inline uint64_t write_v3_misc(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    # Only GICD_CTLR.EnableGrp1 is guest-writable; nASSGIreq needs GICv4.1.
    cdef GicState *g = <GicState *>ctx
    if (off & MISC_SELECT) == GICD_CTLR:
        if (val & GICD_CTLR_ENABLE_G1) and not g.s.dist_enabled:
            # KVM kicks every vCPU (vgic_kick_vcpus): an event of its own.
            g.s.seq_counter += 1
        g.s.dist_enabled = 1 if (val & GICD_CTLR_ENABLE_G1) else 0
    return 0

cdef inline int uwrite_v3_misc(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    cdef GicState *g = <GicState *>ctx
    cdef uint32_t reg = off & MISC_SELECT
    cdef uint32_t rev
    if reg == GICD_IIDR:
        # Userspace may pick the implementation revision, nothing else (the
        # written value's Revision field, as fixed upstream in 2026).
        if ((<uint32_t>val ^ gicd_iidr(g)) & ~(<uint32_t>IIDR_REVISION_MASK)) != 0:
            return -EINVAL
        rev = (<uint32_t>val & IIDR_REVISION_MASK) >> IIDR_REVISION_SHIFT
        if rev != KVM_VGIC_IMP_REV_2 and rev != KVM_VGIC_IMP_REV_3:
            return -EINVAL
        g.s.implementation_rev = rev
        return 0
    if reg == GICD_TYPER2:
        # Fixed for this host model: only its value is accepted.
        if <uint32_t>val != read_v3_misc(ctx, vcpu, off, intid, size, 0):
            return -EINVAL
        return 0
    if reg == GICD_CTLR:
        # The enable, set directly: a restore kicks no vCPU.
        g.s.dist_enabled = 1 if (val & GICD_CTLR_ENABLE_G1) else 0
    return 0

cdef inline uint64_t read_irouter(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    # Aff3 (upper word) is not implemented, so an access there reads zero.
    cdef GicState *g = <GicState *>ctx
    return extract_bytes(g.route[intid], off & 7, size)

cdef inline uint64_t write_irouter(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    cdef GicState *g = <GicState *>ctx
    if off & 4:
        return 0
    # IRM (1-of-N) is not supported: only Aff2.Aff1.Aff0 are kept.
    g.route[intid] = <uint32_t>(val & IROUTER_AFF_MASK)
    g.target[intid] = mpidr_to_vcpu(g, g.route[intid])
    return 0

cdef inline uint64_t read_idregs(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    # PIDR2.ArchRev = 3 reports a GICv3; every other ID register reads 0.
    # GICD_PIDR2 and GICR_PIDR2 sit at the same offset of their frames.
    return PIDR2_GICV3 if off == GICD_PIDR2 else 0
