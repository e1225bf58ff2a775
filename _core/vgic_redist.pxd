# Redistributor RD_base handlers (GICR_CTLR, IIDR, TYPER, PROPBASER,
# PENDBASER), as Linux's vgic-mmio-v3.c.  The SGI_base frame reuses the
# generic per-IRQ handlers of vgic_irq_ops.  Sources: kvm-facts §1.5, §5.6;
# IHI 0069 §12.11.
from libc.stdint cimport uint32_t, uint64_t
from vgic._core.gicstate cimport GicState
from vgic._core.bitmap cimport extract_bytes, update_64bit_reg

cdef enum:
    GICR_CTLR_CES = 1 << 1
    GICR_CTLR_IR = 1 << 2
    GICR_IIDR_VALUE = (0x4B << 24) | 0x43B
    GICR_TYPER_LAST = 1 << 4
    SHAREABILITY_SHIFT = 10
    INNER_CACHE_SHIFT = 7
    OUTER_CACHE_SHIFT = 56
    SH_INNER = 1
    SH_OUTER = 2
    CACHE_NCNB = 0
    CACHE_NC = 1
    CACHE_RAWB = 3
    CACHE_SAME_AS_INNER = 0

# RES0 fields of GICR_PROPBASER / GICR_PENDBASER (IHI 0069 §12.11.29, §12.11.31).
cdef inline uint64_t propbaser_res0() noexcept nogil:
    return (0x1FULL << 59) | (0xFULL << 52) | (0x3ULL << 5)

cdef inline uint64_t pendbaser_res0() noexcept nogil:
    return (1ULL << 63) | (0x7ULL << 59) | (0xFULL << 52) | (0xFULL << 12) | 0x7FULL

cdef inline uint64_t pendbaser_ptz() noexcept nogil:
    return 1ULL << 62

cdef inline uint64_t read_v3r_ctlr(GicState *g, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    # Revision 3 advertises that LPIs can be disabled (CES) and that
    # invalidation registers exist (IR).
    return g.gicr_ctlr[vcpu] | ((GICR_CTLR_CES | GICR_CTLR_IR) if g.implementation_rev >= 3 else 0)

cdef inline uint64_t read_v3r_iidr(GicState *g, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    return GICR_IIDR_VALUE

cdef inline uint64_t gicr_typer(const GicState *g, int vcpu) noexcept nogil:
    # Affinity holds Aff2.Aff1.Aff0 only: KVM reports Aff3 as 0.
    cdef uint64_t aff = g.mpidr[vcpu] & 0xFFFFFF
    # Redistributors sit in vCPU creation order in one region: the last
    # vCPU's is the last one (KVM's Last-bit rule for a single region).
    cdef uint64_t last = GICR_TYPER_LAST if <uint32_t>vcpu == g.nr_vcpus - 1 else 0
    return (aff << 32) | ((<uint64_t>vcpu & 0xFFFF) << 8) | last

cdef inline uint64_t read_v3r_typer(GicState *g, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    return extract_bytes(gicr_typer(g, vcpu), off & 4, size)

cdef inline uint64_t sanitise_field(uint64_t reg, int shift, uint64_t fmask, uint64_t field) noexcept nogil:
    return (reg & ~(fmask << shift)) | (field << shift)

cdef inline uint64_t sanitise_baser(uint64_t reg, uint64_t res0) noexcept nogil:
    # KVM refuses outer-shareable and inner non-cacheable mappings, and keeps
    # outer attributes only when non-cacheable or same-as-inner.
    cdef uint64_t sh = (reg >> SHAREABILITY_SHIFT) & 3
    cdef uint64_t ic = (reg >> INNER_CACHE_SHIFT) & 7
    cdef uint64_t oc = (reg >> OUTER_CACHE_SHIFT) & 7
    if sh == SH_OUTER:
        sh = SH_INNER
    if ic == CACHE_NCNB or ic == CACHE_NC:
        ic = CACHE_RAWB
    if oc != CACHE_SAME_AS_INNER and oc != CACHE_NC:
        oc = CACHE_SAME_AS_INNER
    reg = sanitise_field(reg, SHAREABILITY_SHIFT, 3, sh)
    reg = sanitise_field(reg, INNER_CACHE_SHIFT, 7, ic)
    reg = sanitise_field(reg, OUTER_CACHE_SHIFT, 7, oc)
    return reg & ~res0

cdef inline bint lpis_enabled(const GicState *g, int vcpu) noexcept nogil:
    return g.gicr_ctlr[vcpu] == 1

cdef inline uint64_t read_propbase(GicState *g, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    return extract_bytes(g.propbaser, off & 4, size)

cdef inline uint64_t write_propbase(GicState *g, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    # Changing the table with LPIs enabled is UNPREDICTABLE; KVM ignores it.
    if lpis_enabled(g, vcpu):
        return 0
    g.propbaser = sanitise_baser(update_64bit_reg(g.propbaser, off, size, val), propbaser_res0())
    return 0

cdef inline uint64_t read_pendbase(GicState *g, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    # PTZ is write-only in effect: it is consumed when LPIs are enabled.
    return extract_bytes(g.pendbaser[vcpu] & ~pendbaser_ptz(), off & 4, size)

cdef inline uint64_t write_pendbase(GicState *g, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    if lpis_enabled(g, vcpu):
        return 0
    g.pendbaser[vcpu] = sanitise_baser(update_64bit_reg(g.pendbaser[vcpu], off, size, val), pendbaser_res0())
    return 0
