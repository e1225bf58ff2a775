# cython: language_level=3
"""KVM's per-vCPU ap_lists and the list-register flush and fold, in C.

The kernels of ``vgic_flush_lr_state`` (queue, sort with KVM 6.19's
comparator when there are more interrupts than list registers, populate,
ICH_HCR_EL2) and ``vgic_fold_lr_state`` (fold, EOIcount replay, prune) over
the distributor/redistributor state of a :class:`vgic._core.mmio.Gic` and the
:data:`vgic.ich.VCPU_IF` records of the hyp save/restore (kvm-facts §4.4-§4.6,
Linux v6.19).  ``vgic._pure.aplist`` is the pure-Python twin.

State (in the Gic, gicstate.pxd): each vCPU's ap_list is a list linked
through per-IRQ next/prev indices (a private INTID on vCPU v's list is v's
own; an SPI or an LPI is on one list at most), ``queued_on`` maps every IRQ
to the vCPU whose list holds it (KVM's ``irq->vcpu``), and ``in_lr`` marks
what the current LRs hold.

Queueing: an interrupt is appended to its target's ap_list when that vCPU
next enters, ordered by the stamp the C state gave it when it became
deliverable (then by INTID), which is the order KVM's vgic_queue_irq_unlock
appends in (see :mod:`vgic.vgic_v3` for what still differs).
"""
import numpy as np

from libc.stdint cimport uint8_t, uint32_t, uint64_t, int32_t, int64_t
from libc.stdlib cimport qsort

from vgic._core.consts cimport NR_PRIVATE_IRQS, NR_SGIS, LPI_BASE
from vgic._core.args cimport index_arg, int_arg
from vgic._core.gic cimport Gic
from vgic._core.gicstate cimport (GicState, hw_bits, phys_levels, host_set_active, bank_of, irq_index,
    index_intid, valid_intid, oracle,
    lpi_release, lpi_sweep_orphans, pending_word, deliverable, ap_append, ap_remove, SPI_BANKS,
    BM_ENABLED, BM_PENDING_LATCH, BM_LINE_LEVEL, BM_ACTIVE, BM_GROUP, BM_EDGE)
from vgic._core.vcpu_if cimport VcpuIf, lr_slot, lr_encode
from vgic._core.consts cimport (MAX_LRS, LR_VINTID_MASK, LR_EOI, LR_HW, LR_PENDING, LR_ACTIVE, LR_STATE_MASK, HCR_EN, HCR_UIE,
    HCR_LRENPIE, HCR_NPIE, HCR_VGRP0EIE, HCR_VGRP0DIE, HCR_VGRP1EIE, HCR_VGRP1DIE, HCR_VSGIEOICOUNT,
    HCR_TDIR, HCR_EOICOUNT_MASK, HCR_EOICOUNT_SHIFT, VMCR_ENG0, VMCR_ENG1)

from vgic import gic_state, ich

cdef extern from *:
    int count_trailing_zeros "__builtin_ctz"(unsigned int x) nogil
    int count_trailing_zeros_64 "__builtin_ctzll"(unsigned long long x) nogil


# -------------------------------------------------------------- per-IRQ view
cdef inline bint is_pending(const GicState *g, uint32_t b, uint32_t bit) noexcept nogil:
    return (pending_word(g, b) & bit) != 0


# Stamps are compared in 47 bits (with the INTID below them): after 2**47
# events they saturate and ties fall back to INTID order.
cdef uint64_t STAMP_MAX = (<uint64_t>1 << 47) - 1


cdef int cmp_u64(const void *a, const void *b) noexcept nogil:
    cdef uint64_t x = (<const uint64_t *>a)[0], y = (<const uint64_t *>b)[0]
    return (x > y) - (x < y)


# Each vCPU's ap_list is a doubly linked list threaded through the Gic's
# per-IRQ links (gicstate.pxd ap_append/ap_remove): an IRQ is on one list at
# most (KVM's irq->ap_list), so the lists take space in proportion to the
# IRQs, not to vCPUs x IRQs.
cdef struct Lists:
    GicState *g
    VcpuIf *rec
    uint64_t *keys          # nr_banks * 32 sort keys (scratch)
    uint32_t nr_lrs
    uint32_t active_spis    # KVM's in-flight SPI count (TDIR while non-zero; see fold_lr)
    bint reverse


cdef inline uint32_t node_of(const GicState *g, int vcpu, uint32_t intid) noexcept nogil:
    return irq_index(bank_of(g, vcpu, intid), intid)


# ----------------------------------------------------------------- ap_list
cdef uint32_t scan_bank(Lists *s, int vcpu, uint32_t b, uint32_t n) noexcept nogil:
    # Collect the IRQs of bank b that are deliverable to this vCPU and
    # queued nowhere, as sort keys (stamp, then INTID).
    cdef GicState *g = s.g
    cdef uint32_t bits = deliverable(g, b), idx, intid
    cdef uint64_t stamp
    while bits:
        idx = (b << 5) | <uint32_t>count_trailing_zeros(bits)
        bits &= bits - 1
        if g.queued_on[idx] >= 0:
            continue
        intid = index_intid(g, idx)
        if oracle(g, vcpu, intid) != vcpu:
            continue
        stamp = g.seq[idx]
        if stamp > STAMP_MAX:
            stamp = STAMP_MAX
        s.keys[n] = (stamp << 16) | intid
        n += 1
    return n


cdef void queue_new(Lists *s, int vcpu) noexcept nogil:
    # Append to the list what is deliverable to this vCPU and queued
    # nowhere, in the order it became deliverable (the stamps of
    # gicstate.stamp_new), which is where KVM's vgic_queue_irq_unlock would
    # have appended it.
    cdef GicState *g = s.g
    cdef uint32_t w, n = 0, k, intid
    cdef uint64_t live
    n = scan_bank(s, vcpu, SPI_BANKS + <uint32_t>vcpu, n)
    for w in range(1, g.nr_irqs >> 5):
        n = scan_bank(s, vcpu, w, n)
    # LPI banks: only those holding an LPI that exists.
    for w in range((g.nr_lpis + 2047) >> 11):
        live = g.lpi_live[w]
        while live:
            k = (w << 6) | <uint32_t>count_trailing_zeros_64(live)
            live &= live - 1
            n = scan_bank(s, vcpu, g.lpi_bank0 + k, n)
    if n > 1:
        qsort(s.keys, n, sizeof(uint64_t), cmp_u64)
    for k in range(n):
        intid = <uint32_t>(s.keys[k] & 0xFFFF)
        ap_append(s.g, vcpu, node_of(g, vcpu, intid))
        if intid >= NR_PRIVATE_IRQS and intid < LPI_BASE:
            # vgic_queue_irq_unlock counts every SPI it queues, a re-queue too.
            s.active_spis += 1


cdef void prune(Lists *s, int vcpu) noexcept nogil:
    # vgic_prune_ap_list(): keep what still belongs to this vCPU, move what
    # belongs to another to the tail of that vCPU's list (an SPI whose
    # IROUTER changed, an LPI moved to another collection), and drop what
    # belongs nowhere (an LPI then nothing holds is freed).  Neither counts
    # as queueing (active_spis is not touched).
    cdef GicState *g = s.g
    cdef int32_t idx = s.g.ap_head[vcpu], nxt, o
    cdef uint32_t intid
    while idx >= 0:
        nxt = s.g.ap_next[idx]
        intid = index_intid(g, <uint32_t>idx)
        o = oracle(g, vcpu, intid)
        if o != vcpu:
            ap_remove(s.g, vcpu, <uint32_t>idx)
            if o >= 0:
                ap_append(s.g, o, <uint32_t>idx)
            elif intid >= LPI_BASE:
                lpi_release(g, intid)
        idx = nxt
    lpi_sweep_orphans(g, vcpu)


cdef void sort_ap_list(Lists *s, int vcpu, uint64_t vmcr) noexcept nogil:
    # KVM 6.19's ap_list comparator (kvm-facts §4.6), as one 64-bit key per
    # entry: deliverable here first, then enabled group, then enabled and
    # pending and not active, then priority, then HW before SW.  The list
    # position in the middle bits makes qsort stable, as KVM's list_sort is.
    cdef GicState *g = s.g
    cdef int32_t idx = s.g.ap_head[vcpu]
    cdef uint32_t intid, b, bit, i = 0, n
    cdef uint64_t group_off, not_ready, k
    while idx >= 0:
        intid = index_intid(g, <uint32_t>idx)
        b = <uint32_t>idx >> 5
        bit = 1u << (intid & 31)
        if g.bm[BM_GROUP][b] & bit:
            group_off = (vmcr & VMCR_ENG1) == 0
        else:
            group_off = (vmcr & VMCR_ENG0) == 0
        not_ready = not ((g.bm[BM_ENABLED][b] & bit) and is_pending(g, b, bit)
                         and not (g.bm[BM_ACTIVE][b] & bit))
        k = (<uint64_t>(oracle(g, vcpu, intid) != vcpu) << 63) | (group_off << 62) \
            | (not_ready << 61) | (<uint64_t>g.priority[idx] << 52) \
            | (<uint64_t>((hw_bits(g, vcpu, b) & bit) == 0) << 51) | (<uint64_t>i << 16) | intid
        s.keys[i] = k
        i += 1
        idx = s.g.ap_next[idx]
    n = i
    qsort(s.keys, n, sizeof(uint64_t), cmp_u64)
    # Relink in key order.
    s.g.ap_head[vcpu] = -1
    s.g.ap_tail[vcpu] = -1
    s.g.ap_len[vcpu] = 0
    for i in range(n):
        ap_append(s.g, vcpu, node_of(g, vcpu, <uint32_t>(s.keys[i] & 0xFFFF)))


# ------------------------------------------------------------------- flush
cdef uint64_t populate_lr(Lists *s, int vcpu, uint32_t idx, uint32_t intid) noexcept nogil:
    # vgic_v3_populate_lr(): the LR of one interrupt; an edge interrupt's
    # latch is consumed when the LR carries its pending state; a level
    # interrupt asks for an EOI maintenance interrupt so its line is
    # resampled, and is not also pending while active.  A HW-mapped one
    # names its physical INTID instead, is never pending and active, and
    # (level) drops its line once the LR carries it: KVM only sees rising
    # edges of a mapped level interrupt.
    cdef GicState *g = s.g
    cdef uint32_t b = idx >> 5
    cdef uint32_t bit = 1u << (intid & 31)
    cdef bint active = (g.bm[BM_ACTIVE][b] & bit) != 0
    cdef bint edge = (g.bm[BM_EDGE][b] & bit) != 0
    cdef bint pending = is_pending(g, b, bit)
    cdef bint hw = (hw_bits(g, vcpu, b) & bit) != 0
    cdef uint64_t lr = lr_encode(intid, g.priority[idx], (g.bm[BM_GROUP][b] & bit) != 0, False, active,
                                 hw, g.hw_pintid[(b - SPI_BANKS) * 32 + (intid & 31)] if hw else 0,
                                 not edge and not hw)
    if not edge or hw:
        if pending and not active:
            lr |= LR_PENDING
            if edge:
                g.bm[BM_PENDING_LATCH][b] &= ~bit
            elif hw:
                g.bm[BM_LINE_LEVEL][b] &= ~bit
    elif pending:
        lr |= LR_PENDING
        g.bm[BM_PENDING_LATCH][b] &= ~bit
    return lr


cdef void flush_one(Lists *s, int vcpu) noexcept nogil:
    # vgic_flush_lr_state() for one vCPU, before its hyp restore.
    cdef GicState *g = s.g
    cdef VcpuIf *r = &s.rec[vcpu]
    cdef int32_t idx
    cdef uint64_t vmcr = r.vgic_vmcr, hcr
    cdef uint32_t i, intid, b, bit, nr_pend = 0, nr_act = 0, nr_sgi = 0, total, used = 0
    queue_new(s, vcpu)
    idx = s.g.ap_head[vcpu]
    while idx >= 0:
        intid = index_intid(g, <uint32_t>idx)
        if oracle(g, vcpu, intid) == vcpu:
            b = <uint32_t>idx >> 5
            bit = 1u << (intid & 31)
            if g.bm[BM_ACTIVE][b] & bit:
                nr_act += 1
            elif is_pending(g, b, bit):
                nr_pend += 1
            if intid < NR_SGIS:
                nr_sgi += 1
        idx = s.g.ap_next[idx]
    total = nr_pend + nr_act
    if total > s.nr_lrs:
        sort_ap_list(s, vcpu, vmcr)
    idx = s.g.ap_head[vcpu]
    while idx >= 0 and used < s.nr_lrs:
        intid = index_intid(g, <uint32_t>idx)
        if oracle(g, vcpu, intid) == vcpu:
            r.vgic_lr[lr_slot(used, s.reverse)] = populate_lr(s, vcpu, <uint32_t>idx, intid)
            s.g.in_lr[idx] = 1
            used += 1
        idx = s.g.ap_next[idx]
    for i in range(used, s.nr_lrs):
        r.vgic_lr[lr_slot(i, s.reverse)] = 0
    r.used_lrs = used
    # ICH_HCR_EL2 as vgic_v3_configure_hcr() leaves it (kvm-facts §4.6).
    hcr = HCR_EN
    if nr_pend > s.nr_lrs:
        hcr |= HCR_NPIE
    if nr_act and total > s.nr_lrs:
        hcr |= HCR_LRENPIE
    if total > s.nr_lrs:
        hcr |= HCR_UIE
    if nr_sgi == 0:
        hcr |= HCR_VSGIEOICOUNT
    hcr |= HCR_VGRP0DIE if vmcr & VMCR_ENG0 else HCR_VGRP0EIE
    hcr |= HCR_VGRP1DIE if vmcr & VMCR_ENG1 else HCR_VGRP1EIE
    # TDIR: irqs_active_outside_lrs() is KVM's count test (the LRENPIE one),
    # or any SPI in flight VM-wide.
    if (nr_act and total > s.nr_lrs) or s.active_spis:
        hcr |= HCR_TDIR
    r.vgic_hcr = hcr


# -------------------------------------------------------------------- fold
cdef void fold_lr(Lists *s, int vcpu, uint64_t lr) noexcept nogil:
    # vgic_v3_fold_lr(): one saved LR back into its interrupt's state.
    cdef GicState *g = s.g
    cdef uint64_t intid = lr & LR_VINTID_MASK
    cdef uint32_t b, bit
    cdef bint was_active
    if not valid_intid(g, <uint32_t>intid):       # (vINTID is 32 bits)
        return
    if intid >= LPI_BASE:
        # KVM 6.19 drops an LPI's Active state when it folds the LR: a guest
        # EOI of an LPI outside the LRs does not count in EOIcount, so it
        # would otherwise stay active for good (its-facts-A §5.2).
        lr &= ~LR_ACTIVE
    b = bank_of(g, vcpu, <uint32_t>intid)
    bit = 1u << (intid & 31)
    was_active = (g.bm[BM_ACTIVE][b] & bit) != 0
    if lr & LR_ACTIVE:
        g.bm[BM_ACTIVE][b] |= bit
    else:
        g.bm[BM_ACTIVE][b] &= ~bit
    # KVM 6.19 counts an SPI out of flight when it sees it deactivated in an
    # LR that asks for an EOI maintenance interrupt (State 00, EOI 1, HW 0:
    # a level interrupt), never below zero.  Edge SPIs, and level ones
    # acknowledged and completed within one run, are never counted out, so
    # the count (and TDIR) can stay up for good, as in KVM.
    if (was_active and not (lr & LR_ACTIVE) and intid >= NR_PRIVATE_IRQS and intid < LPI_BASE
            and (lr & (LR_STATE_MASK | LR_HW | LR_EOI)) == LR_EOI and s.active_spis):
        s.active_spis -= 1
    if g.bm[BM_EDGE][b] & bit:
        if lr & LR_PENDING:
            # The guest never took it: the pending state returns to the latch.
            g.bm[BM_PENDING_LATCH][b] |= bit
    elif not (lr & LR_STATE_MASK):
        # Completed: only a line still high can make it pending again.
        g.bm[BM_PENDING_LATCH][b] &= ~bit
    if hw_bits(g, vcpu, b) & bit & ~g.bm[BM_EDGE][b]:
        # vgic_irq_handle_resampling(): a mapped level interrupt the guest
        # did not take, or just deactivated with its line high, has its
        # line resampled from the device; a line found low releases the
        # physical interrupt (its active state kept it from firing again).
        if (lr & LR_PENDING) or (was_active and not (lr & LR_ACTIVE) and (g.bm[BM_LINE_LEVEL][b] & bit)):
            if phys_levels(g, vcpu, bit):
                g.bm[BM_LINE_LEVEL][b] |= bit
            else:
                g.bm[BM_LINE_LEVEL][b] &= ~bit
                host_set_active(g, vcpu, g.hw_pintid[(b - SPI_BANKS) * 32 + (intid & 31)], False)


cdef void fold_synthetic(Lists *s, int vcpu, uint32_t intid) noexcept nogil:
    # The fold of an LR KVM synthesises for an interrupt that is in no LR
    # (vgic_v3_compute_lr), with Active cleared: the EOIcount replay and
    # the trapped DIR do this.  Such an interrupt is active, so a level one's
    # LR carries no pending state and asks for an EOI maintenance interrupt.
    cdef GicState *g = s.g
    cdef uint32_t b = bank_of(g, vcpu, intid)
    cdef uint32_t bit = 1u << (intid & 31)
    cdef uint64_t lr = intid
    cdef uint32_t pintid
    if hw_bits(g, vcpu, b) & bit:
        # HW: the LR names the physical interrupt, which KVM deactivates
        # itself here (no guest deactivation reaches it through an LR).
        pintid = g.hw_pintid[(b - SPI_BANKS) * 32 + (intid & 31)]
        lr |= LR_HW | (<uint64_t>pintid << 32)
        host_set_active(g, vcpu, pintid, False)
    elif g.bm[BM_EDGE][b] & bit:
        if pending_word(g, b) & bit:
            lr |= LR_PENDING
    else:
        lr |= LR_EOI
    fold_lr(s, vcpu, lr)


cdef void fold_one(Lists *s, int vcpu) noexcept nogil:
    # vgic_v3_fold_lr_state(), the EOIcount replay and the prune, after the
    # hyp save of one vCPU.
    cdef GicState *g = s.g
    cdef VcpuIf *r = &s.rec[vcpu]
    cdef int32_t idx
    cdef uint32_t i, intid, used = r.used_lrs if r.used_lrs < s.nr_lrs else s.nr_lrs
    cdef uint32_t eoicount = <uint32_t>((r.vgic_hcr & HCR_EOICOUNT_MASK) >> HCR_EOICOUNT_SHIFT)
    for i in range(used):
        fold_lr(s, vcpu, r.vgic_lr[lr_slot(i, s.reverse)])
    if eoicount:
        # The guest completed interrupts that had no LR: KVM folds a
        # synthesised LR without Active for each active one outside the LRs,
        # in ap_list order, which also consumes a level interrupt's latch.
        # Whatever EOImode is now: the guest may have changed it after
        # those EOIs, and KVM replays regardless (vgic_v3_fold_lr_state).
        idx = s.g.ap_head[vcpu]
        while idx >= 0 and eoicount:
            intid = index_intid(g, <uint32_t>idx)
            if not s.g.in_lr[idx] and g.bm[BM_ACTIVE][<uint32_t>idx >> 5] & (1u << (intid & 31)):
                fold_synthetic(s, vcpu, intid)
                eoicount -= 1
            idx = s.g.ap_next[idx]
        r.vgic_hcr &= ~HCR_EOICOUNT_MASK
    r.used_lrs = 0
    idx = s.g.ap_head[vcpu]
    while idx >= 0:
        s.g.in_lr[idx] = 0
        idx = s.g.ap_next[idx]
    prune(s, vcpu)


cdef class ApLists:
    """KVM's ap_lists of every vCPU of a VM, with the LR flush and fold.

    ``gic`` is the VM's :class:`vgic._core.gic.Gic`; ``records`` the 1-D
    :data:`vgic.ich.VCPU_IF` array (one per vCPU) that the hyp save/restore
    works on; ``nr_lrs`` and ``reverse`` its LR count and storage order.
    The lists start empty; one ApLists serves a Gic (KVM's irq->vcpu, the
    Gic's ``queued_on``, is theirs).
    """
    cdef Lists s
    cdef object _gic, _records, _keys

    def __init__(self, Gic gic not None, records, nr_lrs, bint reverse):
        cdef GicState *g
        cdef uint8_t[::1] raw
        cdef uint64_t[::1] keys
        if self._gic is not None:
            raise TypeError("an ApLists is initialised once")
        if gic.st.nr_vcpus == 0:
            raise TypeError("gic is not an initialised vgic._core.gic.Gic")
        # The Gic is held for as long as this object lives: its state is
        # what the kernels below work on.
        g = &gic.st
        records = ich.check_records(records)
        if records.shape[0] != g.nr_vcpus:
            raise ValueError(f"{records.shape[0]} records for {g.nr_vcpus} vCPUs")
        nr_lrs = int_arg(nr_lrs, "nr_lrs", 1, MAX_LRS)
        nodes = g.nr_banks * 32
        self._gic = gic
        self._records = records
        self._keys = np.zeros(nodes, dtype=np.uint64)
        gic.clear_queued()
        raw = records.view(np.uint8)
        keys = self._keys
        self.s.g = g
        self.s.rec = <VcpuIf *>&raw[0]
        self.s.keys = &keys[0]
        self.s.nr_lrs = nr_lrs
        self.s.active_spis = 0
        self.s.reverse = reverse

    cdef int _ready(self) except -1:
        if self.s.g == NULL:
            raise TypeError("this ApLists was not initialised (call ApLists(gic, records, nr_lrs, reverse))")
        return 0

    cdef int _vcpu(self, vcpu) except -1:
        self._ready()
        return index_arg(vcpu, "vcpu", self.s.g.nr_vcpus)

    cdef uint32_t _intid(self, intid) except? 0xFFFFFFFF:
        # An INTID with state: below nr_irqs, or an LPI that exists.
        cdef uint32_t i = int_arg(intid, "intid", 0, 0xFFFFFFFF)
        if not valid_intid(self.s.g, i):
            if i >= LPI_BASE:
                raise ValueError(f"intid {i} is not an LPI that exists")
            raise ValueError(f"intid {i} is not below nr_irqs {self.s.g.nr_irqs}")
        return i

    # ---- one vCPU ------------------------------------------------------------
    def flush(self, vcpu):
        """vgic_flush_lr_state(): queue, sort if needed, fill vCPU ``vcpu``'s
        saved LRs, used_lrs and ICH_HCR_EL2 (before the hyp restore)."""
        flush_one(&self.s, self._vcpu(vcpu))

    def fold(self, vcpu):
        """vgic_fold_lr_state(), the EOIcount replay and the prune (after the
        hyp save)."""
        fold_one(&self.s, self._vcpu(vcpu))

    # ---- many vCPUs ----------------------------------------------------------
    def flush_batch(self, idx=None):
        """flush for every vCPU in index order, or for the vCPU indices in
        ``idx`` (an integer array, validated whole before anything runs)."""
        self._batch(idx, True)

    def fold_batch(self, idx=None):
        """fold for every vCPU in index order, or for the indices in ``idx``."""
        self._batch(idx, False)

    cdef _batch(self, idx, bint flush):
        cdef Py_ssize_t i, k, m
        cdef const int64_t[::1] ix
        cdef int n
        self._ready()
        n = <int>self.s.g.nr_vcpus
        if idx is None:
            for i in range(n):
                if flush:
                    flush_one(&self.s, <int>i)
                else:
                    fold_one(&self.s, <int>i)
            return
        arr = ich.vcpu_indices(idx, n)
        m = arr.shape[0]
        if m == 0:
            return
        ix = arr
        for k in range(m):
            if flush:
                flush_one(&self.s, <int>ix[k])
            else:
                fold_one(&self.s, <int>ix[k])

    # ---- introspection -------------------------------------------------------
    cdef list _row(self, int v):
        cdef int32_t idx = self.s.g.ap_head[v]
        out = []
        while idx >= 0:
            out.append(index_intid(self.s.g, <uint32_t>idx))
            idx = self.s.g.ap_next[idx]
        return out

    def ap_list(self, vcpu):
        """vCPU ``vcpu``'s ap_list, as a list of INTIDs in list order."""
        return self._row(self._vcpu(vcpu))

    def pending_irq(self, vcpu, pmr):
        """kvm_vgic_vcpu_pending_irq()'s walk of vCPU ``vcpu``'s ap_list: True
        if an interrupt on it is pending, enabled, not active and of a
        priority below ``pmr`` (ICH_VMCR_EL2.VPMR), and the distributor is
        enabled - what makes a blocked vCPU runnable.  What became
        deliverable to it since its last entry is queued first, where KVM's
        vgic_queue_irq_unlock had put it the moment it became deliverable."""
        cdef int v = self._vcpu(vcpu)
        cdef uint32_t mask = <uint32_t>int_arg(pmr, "pmr", 0, 0xFF)
        cdef GicState *g = self.s.g
        cdef int32_t idx
        cdef uint32_t intid, b, bit
        if not g.s.dist_enabled:
            return False
        queue_new(&self.s, v)
        idx = g.ap_head[v]
        while idx >= 0:
            intid = index_intid(g, <uint32_t>idx)
            b = <uint32_t>idx >> 5
            bit = 1u << (intid & 31)
            if ((g.bm[BM_ENABLED][b] & bit) and is_pending(g, b, bit) and not (g.bm[BM_ACTIVE][b] & bit)
                    and g.priority[idx] < mask):
                return True
            idx = g.ap_next[idx]
        return False

    def queued_on(self, vcpu, intid):
        """The vCPU whose ap_list holds INTID ``intid`` (private INTIDs are
        vCPU ``vcpu``'s), or -1 (KVM's ``irq->vcpu``)."""
        cdef int v = self._vcpu(vcpu)
        cdef uint32_t i = self._intid(intid)
        return self.s.g.queued_on[node_of(self.s.g, v, i)]

    def in_lr(self, vcpu, intid):
        """True while INTID ``intid`` (of vCPU ``vcpu`` if private) is held in
        a list register between flush and fold."""
        cdef int v = self._vcpu(vcpu)
        cdef uint32_t i = self._intid(intid)
        return bool(self.s.g.in_lr[node_of(self.s.g, v, i)])

    def oracle(self, vcpu, intid):
        """vgic_target_oracle(): the vCPU that should hold the interrupt, or -1."""
        cdef int v = self._vcpu(vcpu)
        cdef uint32_t i = self._intid(intid)
        return oracle(self.s.g, v, i)

    def state(self):
        """``{"ap_list": [INTIDs in list order, per vCPU], "in_lr": [sorted
        INTIDs held in an LR, per vCPU], "active_spis": KVM's in-flight SPI
        count}`` (see :mod:`vgic.gic_state`)."""
        cdef int v
        self._ready()
        lists, held = [], []
        for v in range(<int>self.s.g.nr_vcpus):
            row = self._row(v)
            lists.append(row)
            held.append(sorted(i for i in row if self.s.g.in_lr[node_of(self.s.g, v, i)]))
        return {"ap_list": lists, "in_lr": held, "active_spis": int(self.s.active_spis)}

    def load_state(self, state):
        """Replace every ap_list by ``state`` (as :meth:`state` returns it),
        checked first by :func:`vgic.gic_state.check_ap_lists` (nothing
        changes on a bad field)."""
        cdef int v
        cdef uint32_t intid
        self._ready()
        lists, held, active_spis = gic_state.check_ap_lists(state, self.s.g.nr_vcpus, self.s.g.nr_irqs,
                                                            self._gic.lpis())
        self._gic.clear_queued()
        self.s.active_spis = active_spis
        for v in range(<int>self.s.g.nr_vcpus):
            for intid in lists[v]:
                ap_append(self.s.g, v, node_of(self.s.g, v, intid))
            for intid in held[v]:
                self.s.g.in_lr[node_of(self.s.g, v, intid)] = 1

    def deactivate(self, vcpu, intid):
        """Fold the LR KVM synthesises, Active cleared, for an interrupt held
        in no LR (the trapped DIR of vgic_v3_deactivate): the interrupt is
        deactivated, a level one's latch consumed, a level SPI counted out
        of flight."""
        cdef int v = self._vcpu(vcpu)
        cdef uint32_t i = self._intid(intid)
        fold_synthetic(&self.s, v, i)

    @property
    def active_spis(self):
        """KVM 6.19's count of SPIs in flight (``kvm->arch.vgic.active_spis``):
        +1 each time an SPI is queued, -1 (never below 0) when a fold sees a
        level SPI deactivated; non-zero sets ICH_HCR_EL2.TDIR on every entry."""
        return self.s.active_spis


cdef class Noop:
    """A do-nothing extension type with ``flush``/``fold`` signatures."""

    def flush(self, vcpu):
        pass

    def fold(self, vcpu):
        pass
