# Redistributor RD_base handlers (GICR_CTLR, IIDR, TYPER, PROPBASER,
# PENDBASER, INVLPIR, INVALLR), as Linux's vgic-mmio-v3.c.  The SGI_base frame reuses the
# generic per-IRQ handlers of vgic_irq_ops.  Handlers take the Gic's
# GicState as `void *ctx`.  Sources: kvm-facts §1.5, §5.6; IHI 0069 §12.11.
from libc.stdint cimport uint32_t, uint64_t
from vgic._core.consts cimport (GICR_CTLR_CES, GICR_CTLR_IR, GICR_CTLR_ENABLE_LPIS, PRODUCT_ID_KVM,
    IMPLEMENTER_ARM, IIDR_PRODUCT_ID_SHIFT, GICR_TYPER_LAST, GICR_TYPER_PROCNUM_SHIFT,
    GICR_TYPER_AFFINITY_SHIFT, KVM_VGIC_IMP_REV_3, MPIDR_AFF210_MASK,
    BASER_SHAREABILITY_SHIFT, BASER_INNER_CACHE_SHIFT, BASER_OUTER_CACHE_SHIFT,
    BASER_SHAREABILITY_MASK, BASER_CACHE_MASK, GIC_BASER_INNER_SHAREABLE,
    GIC_BASER_OUTER_SHAREABLE, GIC_BASER_CACHE_NCNB, GIC_BASER_CACHE_NC, GIC_BASER_CACHE_RAWB,
    GIC_BASER_CACHE_SAME_AS_INNER, PROPBASER_RES0, PENDBASER_RES0, PENDBASER_PTZ, GICR_TYPER_PLPIS,
    LPI_BASE)
from vgic._core.gicstate cimport GicState, lpi_exists
from vgic._core.lpi cimport (lpis_enabled_on, lpi_load_pending_table, lpi_flush_pending, update_lpi_config,
    lpi_invall)
from vgic._core.bitmap cimport extract_bytes, update_64bit_reg

cdef inline uint64_t read_v3r_ctlr(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    # Revision 3 advertises that LPIs can be disabled (CES) and that
    # invalidation registers exist (IR).
    cdef GicState *g = <GicState *>ctx
    return g.gicr_ctlr[vcpu] | ((GICR_CTLR_CES | GICR_CTLR_IR) if g.s.implementation_rev >= KVM_VGIC_IMP_REV_3 else 0)

cdef inline uint64_t write_v3r_ctlr(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    # Only EnableLPIs is writable, and only with an ITS.  0 -> 1 loads the
    # pending table (unless PTZ was written); 1 -> 0 flushes this vCPU's
    # LPIs from its ap_list (RWP never shows: the flush completes here).
    cdef GicState *g = <GicState *>ctx
    if not g.nr_lpis:
        return 0
    if val & GICR_CTLR_ENABLE_LPIS:
        if g.gicr_ctlr[vcpu] == 0:
            g.gicr_ctlr[vcpu] = GICR_CTLR_ENABLE_LPIS
            if not (g.pendbaser[vcpu] & PENDBASER_PTZ):
                lpi_load_pending_table(g, vcpu)
    elif g.gicr_ctlr[vcpu] == GICR_CTLR_ENABLE_LPIS:
        lpi_flush_pending(g, vcpu)
        g.gicr_ctlr[vcpu] = 0
    return 0

cdef inline int uwrite_v3r_ctlr(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    # Userspace takes the guest's path (restoring EnableLPIs loads the table).
    write_v3r_ctlr(ctx, vcpu, off, intid, size, val)
    return 0

cdef inline uint64_t read_v3r_iidr(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    return (PRODUCT_ID_KVM << IIDR_PRODUCT_ID_SHIFT) | IMPLEMENTER_ARM

cdef inline uint64_t gicr_typer(const GicState *g, int vcpu) noexcept nogil:
    # Affinity holds Aff2.Aff1.Aff0 only: KVM reports Aff3 as 0.
    cdef uint64_t aff = g.mpidr[vcpu] & MPIDR_AFF210_MASK
    # Redistributors sit in vCPU creation order in one region: the last
    # vCPU's is the last one (KVM's Last-bit rule for a single region).
    cdef uint64_t last = GICR_TYPER_LAST if <uint32_t>vcpu == g.nr_vcpus - 1 else 0
    # PLPIS: physical LPIs, with an ITS.
    cdef uint64_t plpis = GICR_TYPER_PLPIS if g.nr_lpis else 0
    return ((aff << GICR_TYPER_AFFINITY_SHIFT) | ((<uint64_t>vcpu & 0xFFFF) << GICR_TYPER_PROCNUM_SHIFT)
            | last | plpis)

cdef inline uint64_t read_v3r_typer(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    return extract_bytes(gicr_typer(<GicState *>ctx, vcpu), off & 4, size)

cdef inline uint64_t sanitise_field(uint64_t reg, int shift, uint64_t fmask, uint64_t field) noexcept nogil:
    return (reg & ~(fmask << shift)) | (field << shift)

cdef inline uint64_t sanitise_cache_share(uint64_t reg, int inner_shift, int outer_shift,
                                          int share_shift) noexcept nogil:
    # KVM's vgic_sanitise_shareability/inner/outer_cacheability, wherever a
    # register keeps those fields (GICR_PROPBASER/PENDBASER, GITS_CBASER and
    # GITS_BASER<n>): outer-shareable becomes inner-shareable, inner nC/nCnB
    # become RaWb, outer attributes stay only when nC or same-as-inner.
    cdef uint64_t sh = (reg >> share_shift) & BASER_SHAREABILITY_MASK
    cdef uint64_t ic = (reg >> inner_shift) & BASER_CACHE_MASK
    cdef uint64_t oc = (reg >> outer_shift) & BASER_CACHE_MASK
    if sh == GIC_BASER_OUTER_SHAREABLE:
        sh = GIC_BASER_INNER_SHAREABLE
    if ic == GIC_BASER_CACHE_NCNB or ic == GIC_BASER_CACHE_NC:
        ic = GIC_BASER_CACHE_RAWB
    if oc != GIC_BASER_CACHE_SAME_AS_INNER and oc != GIC_BASER_CACHE_NC:
        oc = GIC_BASER_CACHE_SAME_AS_INNER
    reg = sanitise_field(reg, share_shift, BASER_SHAREABILITY_MASK, sh)
    reg = sanitise_field(reg, inner_shift, BASER_CACHE_MASK, ic)
    return sanitise_field(reg, outer_shift, BASER_CACHE_MASK, oc)

cdef inline uint64_t sanitise_baser(uint64_t reg, uint64_t res0) noexcept nogil:
    # GICR_PROPBASER / GICR_PENDBASER: cacheability and shareability, RES0 cleared.
    return sanitise_cache_share(reg, BASER_INNER_CACHE_SHIFT, BASER_OUTER_CACHE_SHIFT,
                                BASER_SHAREABILITY_SHIFT) & ~res0

cdef inline uint64_t read_propbase(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    cdef GicState *g = <GicState *>ctx
    return extract_bytes(g.s.propbaser, off & 4, size)

cdef inline uint64_t write_propbase(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    # Changing the table with LPIs enabled is UNPREDICTABLE; KVM ignores it.
    cdef GicState *g = <GicState *>ctx
    if lpis_enabled_on(g, vcpu):
        return 0
    g.s.propbaser = sanitise_baser(update_64bit_reg(g.s.propbaser, off, size, val), PROPBASER_RES0)
    return 0

cdef inline uint64_t read_pendbase(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    # PTZ is write-only in effect: it is consumed when LPIs are enabled.
    cdef GicState *g = <GicState *>ctx
    return extract_bytes(g.pendbaser[vcpu] & ~PENDBASER_PTZ, off & 4, size)

cdef inline uint64_t write_pendbase(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    cdef GicState *g = <GicState *>ctx
    if lpis_enabled_on(g, vcpu):
        return 0
    g.pendbaser[vcpu] = sanitise_baser(update_64bit_reg(g.pendbaser[vcpu], off, size, val), PENDBASER_RES0)
    return 0

cdef inline uint64_t write_invlpi(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    # GICR_INVLPIR: re-read one LPI's configuration byte, whatever its
    # target.  Ignored for the upper word, with this redistributor's LPIs
    # disabled, or for an INTID below 8192 (sanitised since Linux 6.13).
    cdef GicState *g = <GicState *>ctx
    cdef uint32_t n = <uint32_t>val
    if (off & 4) or not lpis_enabled_on(g, vcpu) or n < LPI_BASE:
        return 0
    if lpi_exists(g, n):
        update_lpi_config(g, n, -1)
    return 0

cdef inline uint64_t write_invall(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    # GICR_INVALLR: INVALL for this redistributor's vCPU (the value is ignored).
    cdef GicState *g = <GicState *>ctx
    if (off & 4) or not lpis_enabled_on(g, vcpu):
        return 0
    lpi_invall(g, vcpu)
    return 0
