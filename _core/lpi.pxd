# KVM's LPI operations on the Gic state and guest memory: the property
# and pending tables, creation and release, configuration re-reads, the
# pending-table load at EnableLPIs and the flush at its disable.  Shared by
# the redistributor handlers (gic.pyx) and the ITS (its.pyx); the twin is
# vgic/_pure/lpi.py.  Sources: docs/its-facts-A.md §3 (vgic-its.c
# vgic_add_lpi, update_lpi_config, its_sync_lpi_pending_table; vgic-v3.c
# vgic_v3_lpi_sync_pending_status; vgic-mmio-v3.c GICR_CTLR, INVLPIR,
# INVALLR; vgic-init.c / vgic.c vgic_flush_pending_lpis).
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int32_t

from vgic._core.consts cimport LPI_BASE, INTERRUPT_ID_BITS_ITS, GICR_CTLR_ENABLE_LPIS, PENDBASER_PTZ
from vgic._core.guestmem cimport GuestMem, gm_read8, gm_write8
from libc.stdlib cimport realloc

from vgic._core.gicstate cimport (LpiUndo, GicState, bank_of, irq_index, lpi_exists, lpi_set_exists, lpi_free,
    lpi_release, deliverable, stamp_new, ap_remove, index_intid, oracle,
    BM_ENABLED, BM_PENDING_LATCH, BM_GROUP, BM_EDGE)

cdef enum:
    LPI_EFAULT = -14        # -EFAULT: a table byte outside guest RAM
    LPI_ENOMEM = -12        # -ENOMEM: no room to log a restore's change
    LPI_PROP_ENABLE = 0x01
    LPI_PROP_PRIORITY = 0xFC

cdef extern from *:
    int lpi_ctzll "__builtin_ctzll"(unsigned long long x) nogil
    int lpi_ctz "__builtin_ctz"(unsigned int x) nogil


cdef inline uint64_t propbase_pa(const GicState *g) noexcept nogil:
    # GICR_PROPBASER.PA, bits [51:12].
    return g.s.propbaser & 0x000FFFFFFFFFF000ULL

cdef inline uint64_t pendbase_pa(const GicState *g, int vcpu) noexcept nogil:
    # GICR_PENDBASER.PA, bits [51:16].
    return g.pendbaser[vcpu] & 0x000FFFFFFFFF0000ULL

cdef inline uint64_t lpi_intid_limit(const GicState *g) noexcept nogil:
    # max_lpis_propbaser: an LPI INTID is below 2**min(IDbits + 1, 16).
    cdef uint32_t bits = (g.s.propbaser & 0x1F) + 1
    if bits > INTERRUPT_ID_BITS_ITS:
        bits = INTERRUPT_ID_BITS_ITS
    return (<uint64_t>1) << bits

cdef inline bint lpis_enabled_on(const GicState *g, int vcpu) noexcept nogil:
    # KVM's vgic_lpis_enabled: GICR_CTLR is exactly EnableLPIs.
    return g.gicr_ctlr[vcpu] == GICR_CTLR_ENABLE_LPIS

cdef inline uint32_t lpi_index(const GicState *g, uint32_t intid) noexcept nogil:
    return irq_index(bank_of(g, 0, intid), intid)


# ------------------------------------------------------------ state changes
cdef inline void lpi_set_bit(GicState *g, uint32_t intid, int row, bint on) noexcept nogil:
    # One single-bit field of an existing LPI, stamping what becomes deliverable.
    cdef uint32_t b = bank_of(g, 0, intid)
    cdef uint32_t bit = 1u << (intid & 31)
    cdef uint32_t before = deliverable(g, b)
    if on:
        g.bm[row][b] |= bit
    else:
        g.bm[row][b] &= ~bit
    stamp_new(g, b, before)

cdef inline void lpi_apply_config(GicState *g, uint32_t intid, uint8_t prop) noexcept nogil:
    # The configuration byte: priority bits 7:2, Enable bit 0 (Group1, bit
    # 1, is ignored: LPIs stay Group 1).
    g.priority[lpi_index(g, intid)] = prop & LPI_PROP_PRIORITY
    lpi_set_bit(g, intid, BM_ENABLED, prop & LPI_PROP_ENABLE)

cdef inline int update_lpi_config(GicState *g, uint32_t intid, int filter_vcpu) noexcept nogil:
    # Re-read an LPI's configuration byte; apply it unless `filter_vcpu`
    # (>= 0) is not its target.  0, or LPI_EFAULT with nothing changed.
    cdef uint8_t prop
    if gm_read8(&g.mem, propbase_pa(g) + intid - LPI_BASE, &prop) < 0:
        return LPI_EFAULT
    if filter_vcpu < 0 or g.target[lpi_index(g, intid)] == filter_vcpu:
        lpi_apply_config(g, intid, prop)
    return 0

cdef inline int lpi_sync_pending(GicState *g, uint32_t intid) noexcept nogil:
    # vgic_v3_lpi_sync_pending_status, for a new LPI: its bit in its target's
    # pending table becomes its pending state and is cleared in memory
    # ("consumed").  No target: nothing.  EnableLPIs and PTZ are not looked at.
    cdef int32_t t = g.target[lpi_index(g, intid)]
    cdef uint64_t at
    cdef uint8_t byte
    cdef bint bit
    if t < 0:
        return 0
    at = pendbase_pa(g, t) + (intid >> 3)
    if gm_read8(&g.mem, at, &byte) < 0:
        return LPI_EFAULT
    bit = (byte >> (intid & 7)) & 1
    lpi_set_bit(g, intid, BM_PENDING_LATCH, bit)
    if bit and gm_write8(&g.mem, at, byte & ~(1u << (intid & 7))) < 0:
        return LPI_EFAULT
    return 0

cdef inline int undo_reserve(LpiUndo *u) noexcept nogil:
    # Room for one more made LPI and one more consumed byte; -1 if none.
    cdef size_t cap
    cdef void *p
    if u.nmade == u.capmade:
        cap = 64 if u.capmade == 0 else u.capmade * 2
        p = realloc(u.made, cap * sizeof(uint32_t))
        if p == NULL:
            return -1
        u.made = <uint32_t *>p
        u.capmade = cap
    if u.nat == u.capat:
        cap = 64 if u.capat == 0 else u.capat * 2
        p = realloc(u.at, cap * sizeof(uint64_t))
        if p == NULL:
            return -1
        u.at = <uint64_t *>p
        p = realloc(u.old, cap * sizeof(uint8_t))
        if p == NULL:
            return -1
        u.old = <uint8_t *>p
        u.capat = cap
    return 0


cdef inline int lpi_add(GicState *g, uint32_t intid, int32_t target) noexcept nogil:
    # vgic_add_lpi: an LPI that exists gains a reference and nothing else
    # (its target, configuration and pending state are kept); a new one is
    # made by lpi_make.  The common case of a restore or a MAPTI stream
    # (many ITEs on few LPIs) stays inline.
    cdef uint32_t k = intid - LPI_BASE
    if intid >= LPI_BASE and k < g.nr_lpis and (g.lpi_exists[k >> 5] >> (k & 31)) & 1:
        g.lpi_refs[k] += 1
        return 0
    return lpi_make(g, intid, target)

cdef inline int lpi_make(GicState *g, uint32_t intid, int32_t target) noexcept nogil:
    # A new LPI: Group 1, edge, aimed at `target` (-1: none), with its
    # configuration byte read (update_lpi_config) and then its pending bit
    # consumed from its target's pending table
    # (vgic_v3_lpi_sync_pending_status).  0, or -EFAULT with no LPI made:
    # KVM drops the half-made LPI, and with its pending state still clear
    # nothing has queued it.
    cdef uint32_t k = intid - LPI_BASE
    cdef uint32_t b, bit, idx, before
    cdef uint64_t at = 0
    cdef uint8_t prop, byte = 0
    cdef bint pending = False
    if gm_read8(&g.mem, propbase_pa(g) + k, &prop) < 0:
        return LPI_EFAULT
    if target >= 0:
        at = pendbase_pa(g, target) + (intid >> 3)
        if gm_read8(&g.mem, at, &byte) < 0:
            return LPI_EFAULT
        pending = (byte >> (intid & 7)) & 1
    if g.undo != NULL and undo_reserve(g.undo) < 0:
        return LPI_ENOMEM
    b = g.lpi_bank0 + (k >> 5)
    bit = 1u << (intid & 31)
    idx = (b << 5) | (intid & 31)
    # Only this bit changes, and it can only become deliverable when it is
    # made enabled and pending: the bank's stamp is taken then alone.
    before = deliverable(g, b) if pending and prop & LPI_PROP_ENABLE else 0
    lpi_set_exists(g, intid, True)
    g.lpi_refs[k] = 1
    g.target[idx] = target
    g.priority[idx] = prop & LPI_PROP_PRIORITY
    g.bm[BM_GROUP][b] |= bit
    g.bm[BM_EDGE][b] |= bit
    if prop & LPI_PROP_ENABLE:
        g.bm[BM_ENABLED][b] |= bit
    if g.undo != NULL:
        g.undo.made[g.undo.nmade] = intid
        g.undo.nmade += 1
    if pending:
        g.bm[BM_PENDING_LATCH][b] |= bit
        if g.undo != NULL:
            g.undo.at[g.undo.nat] = at
            g.undo.old[g.undo.nat] = byte
            g.undo.nat += 1
        # consumed: the same byte was just read, so the write cannot fail
        gm_write8(&g.mem, at, byte & ~(1u << (intid & 7)))
        if prop & LPI_PROP_ENABLE:
            stamp_new(g, b, before)
    return 0

cdef inline void lpi_put(GicState *g, uint32_t intid) noexcept nogil:
    # An ITE's reference dropped: free the LPI if nothing else holds it -
    # unless a failed restore is undoing its own ITEs (g.undo set), which
    # frees the LPIs it made itself and leaves the others as they were.
    cdef uint32_t k = intid - LPI_BASE
    if lpi_exists(g, intid) and g.lpi_refs[k]:
        g.lpi_refs[k] -= 1
        if g.lpi_refs[k] == 0 and g.undo == NULL:
            lpi_release(g, intid)


# --------------------------------------------------------- walks over LPIs
cdef inline uint32_t next_lpi(const GicState *g, uint32_t k) noexcept nogil:
    # The first existing LPI at or after LPI number k (INTID - 8192), or
    # nr_lpis: the summary bitmap skips 64 empty banks at a time.
    cdef uint32_t nw = g.nr_lpis >> 5, w, bits, sw
    cdef uint64_t live
    if k >= g.nr_lpis:
        return g.nr_lpis
    w = k >> 5
    bits = g.lpi_exists[w] & (0xFFFFFFFFu << (k & 31))
    if bits:
        return (w << 5) | <uint32_t>lpi_ctz(bits)
    w += 1
    while w < nw:
        sw = w >> 6
        live = g.lpi_live[sw] & (0xFFFFFFFFFFFFFFFFULL << (w & 63))
        if live:
            w = (sw << 6) | <uint32_t>lpi_ctzll(live)
            return (w << 5) | <uint32_t>lpi_ctz(g.lpi_exists[w])
        w = (sw + 1) << 6
    return g.nr_lpis


cdef inline void lpi_invall(GicState *g, int vcpu) noexcept nogil:
    # vgic_its_invall (INVALL, GICR_INVALLR): every LPI's byte is re-read;
    # those aimed at `vcpu` take it.  A byte outside RAM skips that LPI.
    cdef uint32_t k = next_lpi(g, 0)
    while k < g.nr_lpis:
        update_lpi_config(g, LPI_BASE + k, vcpu)
        k = next_lpi(g, k + 1)

cdef inline void lpi_load_pending_table(GicState *g, int vcpu) noexcept nogil:
    # its_sync_lpi_pending_table, at EnableLPIs 0 -> 1 with PTZ clear: each
    # LPI aimed at `vcpu` takes its bit as its pending state (overwriting);
    # memory is not changed.  A byte outside RAM ends the walk.
    cdef uint64_t base = pendbase_pa(g, vcpu), at, last = 0xFFFFFFFFFFFFFFFFULL
    cdef uint8_t byte = 0
    cdef uint32_t k = next_lpi(g, 0), intid
    while k < g.nr_lpis:
        intid = LPI_BASE + k
        at = base + (intid >> 3)
        if at != last:
            if gm_read8(&g.mem, at, &byte) < 0:
                return
            last = at
        if g.target[lpi_index(g, intid)] == vcpu:
            lpi_set_bit(g, intid, BM_PENDING_LATCH, (byte >> (intid & 7)) & 1)
        k = next_lpi(g, k + 1)

cdef inline void lpi_flush_pending(GicState *g, int vcpu) noexcept nogil:
    # vgic_flush_pending_lpis, at EnableLPIs 1 -> 0: every LPI on this
    # vCPU's ap_list leaves it with its pending state cleared (KVM's newest
    # code), and is freed if nothing else holds it.  KVM queues an LPI the
    # moment it becomes deliverable; this model queues at the target's next
    # entry, so an LPI pending and enabled towards this vCPU but not queued
    # yet is one KVM holds on the list, and is flushed too.
    cdef int32_t idx = g.ap_head[vcpu], nxt
    cdef uint32_t intid, k
    while idx >= 0:
        nxt = g.ap_next[idx]
        intid = index_intid(g, <uint32_t>idx)
        if intid >= LPI_BASE:
            ap_remove(g, vcpu, <uint32_t>idx)
            g.in_lr[idx] = 0
            lpi_set_bit(g, intid, BM_PENDING_LATCH, False)
            lpi_release(g, intid)
        idx = nxt
    k = next_lpi(g, 0)
    while k < g.nr_lpis:
        intid = LPI_BASE + k
        if g.queued_on[lpi_index(g, intid)] < 0 and oracle(g, vcpu, intid) == vcpu:
            lpi_set_bit(g, intid, BM_PENDING_LATCH, False)
            lpi_release(g, intid)
        k = next_lpi(g, k + 1)


cdef inline int lpi_save_pending_tables(GicState *g) noexcept nogil:
    # KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES (vgic_v3_save_pending_tables):
    # each LPI with a target vCPU has its bit in that vCPU's pending table
    # set to its pending state; only bytes whose bit must change are
    # written.  0, or LPI_EFAULT at the first byte outside RAM.
    cdef uint64_t at, last = 0xFFFFFFFFFFFFFFFFULL
    cdef uint8_t byte = 0
    cdef uint32_t k = next_lpi(g, 0), intid, b, bit
    cdef int32_t t
    cdef bint stored, pending
    while k < g.nr_lpis:
        intid = LPI_BASE + k
        t = g.target[lpi_index(g, intid)]
        if t >= 0:
            at = pendbase_pa(g, t) + (intid >> 3)
            if at != last:
                if gm_read8(&g.mem, at, &byte) < 0:
                    return LPI_EFAULT
                last = at
            b = bank_of(g, 0, intid)
            bit = 1u << (intid & 31)
            stored = (byte >> (intid & 7)) & 1
            pending = (g.bm[BM_PENDING_LATCH][b] & bit) != 0
            if stored != pending:
                if pending:
                    byte |= <uint8_t>(1u << (intid & 7))
                else:
                    byte &= <uint8_t>~(1u << (intid & 7))
                if gm_write8(&g.mem, at, byte) < 0:
                    return LPI_EFAULT
        k = next_lpi(g, k + 1)
    return 0
