# cython: language_level=3
"""The guest's hot ICV_* accesses in C: acknowledge, EOI, deactivate.

What the GICv3 virtual CPU interface does for ICV_IAR0/1_EL1,
ICV_EOIR0/1_EL1, ICV_DIR_EL1, ICV_HPPIR0/1_EL1 and ICV_RPR_EL1 (IHI 0069
§12.3, the signalling rules of §6 and the preemption rules of §4.8) on the
modelled ICH_* hardware of :data:`vgic.ich.VCPU_IF` records.  The rules are
those of the shared Python functions in :mod:`vgic.cpuif`, which
``vgic._pure.icv`` (the twin) applies one by one.

What the interface hands back to the hypervisor is a return code, so that no
Python callback runs inside the kernels: ``eoi``/``deactivate`` return the
physical INTID to deactivate (an LR with HW = 1), ``NONE`` (-1) for nothing
more to do, and ``deactivate`` returns ``TRAP`` (-2) when ICH_HCR_EL2.TDIR
traps the write to EL2.
"""
import numpy as np

from libc.stdint cimport uint8_t, uint32_t, uint64_t

from vgic._core.args cimport index_arg, int_arg
from vgic._core.vcpu_if cimport VcpuIf
from vgic._core.consts cimport (LR_VINTID_MASK, LR_PINTID_SHIFT, LR_PRIORITY_SHIFT, LR_GROUP, LR_HW, LR_PENDING, LR_ACTIVE,
    LR_STATE_MASK, LR_EOI, HCR_TDIR, HCR_EOICOUNT_MASK, HCR_EOICOUNT_SHIFT, VMCR_ENG0, VMCR_ENG1, VMCR_EOIM,
    HCR_EN, HCR_UIE, HCR_LRENPIE, HCR_NPIE, HCR_VGRP0EIE, HCR_VGRP0DIE, HCR_VGRP1EIE, HCR_VGRP1DIE,
    SIG_IRQ, SIG_FIQ, SIG_MAINT, MISR_EOI, MISR_U, MISR_LRENP, MISR_NP, MISR_VGRP0E, MISR_VGRP0D, MISR_VGRP1E, MISR_VGRP1D,
    VMCR_CBPR, VMCR_BPR1_SHIFT, VMCR_BPR0_SHIFT, VMCR_PMR_SHIFT, INTID_SPURIOUS, SPECIAL_FIRST,
    SPECIAL_LAST, LPI_BASE, INTID_FIELD, IDLE_PRIORITY)

from vgic import ich

cdef extern from *:
    int count_trailing_zeros "__builtin_ctz"(unsigned int x) nogil

# Return codes of eoi/deactivate besides a physical INTID.
cdef enum:
    RET_NONE = -1
    RET_TRAP = -2

NONE = RET_NONE
TRAP = RET_TRAP

cdef struct Geometry:
    uint32_t nr_lrs
    uint32_t nr_aprs
    uint32_t pri_mask       # implemented bits of an 8-bit priority
    uint32_t pre_bits


# ------------------------------------------------------------- priorities
cdef inline uint32_t bpr0(uint64_t vmcr, uint32_t pre_bits) noexcept nogil:
    # VBPR0, a stored value below the minimum 7 - PREbits acting as the minimum.
    cdef uint32_t v = (vmcr >> VMCR_BPR0_SHIFT) & 7
    return v if v > 7 - pre_bits else 7 - pre_bits


cdef inline uint32_t bpr1(uint64_t vmcr, uint32_t pre_bits) noexcept nogil:
    # ICV_BPR1_EL1: min(VBPR0 + 1, 7) with VCBPR, else VBPR1 clamped up to 8 - PREbits.
    cdef uint32_t v
    if vmcr & VMCR_CBPR:
        v = bpr0(vmcr, pre_bits) + 1
        return v if v < 7 else 7
    v = (vmcr >> VMCR_BPR1_SHIFT) & 7
    return v if v > 8 - pre_bits else 8 - pre_bits


cdef inline uint32_t group_priority(uint32_t prio, int group, uint64_t vmcr, uint32_t pre_bits) noexcept nogil:
    # IHI 0069 §4.8 priority grouping: bits [7:N+1] with N = VBPR0 for Group 0
    # (or Group 1 with VCBPR), N = VBPR1 - 1 for Group 1 otherwise.
    cdef uint32_t point
    if group and not (vmcr & VMCR_CBPR):
        point = bpr1(vmcr, pre_bits) - 1
    else:
        point = bpr0(vmcr, pre_bits)
    return prio & (<uint32_t>0xFF << (point + 1)) & 0xFF


cdef inline int highest_active(const VcpuIf *r, uint32_t nr_aprs) noexcept nogil:
    # The lowest set active-priority bit over both groups, or -1.
    cdef uint32_t n, bits
    for n in range(nr_aprs):
        bits = r.ich_ap0r[n] | r.ich_ap1r[n]
        if bits:
            return <int>(n * 32 + <uint32_t>count_trailing_zeros(bits))
    return -1


cdef inline uint32_t running_priority(const VcpuIf *r, const Geometry *geo) noexcept nogil:
    cdef int idx = highest_active(r, geo.nr_aprs)
    return IDLE_PRIORITY if idx < 0 else <uint32_t>idx << (8 - geo.pre_bits)


cdef inline uint32_t pmr(const VcpuIf *r, const Geometry *geo) noexcept nogil:
    return (r.ich_vmcr >> VMCR_PMR_SHIFT) & geo.pri_mask


# ------------------------------------------------------------- list registers
cdef inline int hppi(const VcpuIf *r, const Geometry *geo) noexcept nogil:
    # The LR of the highest-priority pending interrupt of an enabled group:
    # State 01 exactly, lowest significant priority, ties to the lowest index.
    cdef uint32_t n, prio, best_prio = 0x100
    cdef int best = -1
    cdef uint64_t lr, enabled
    for n in range(geo.nr_lrs):
        lr = r.ich_lr[n]
        if (lr & LR_STATE_MASK) != LR_PENDING:
            continue
        enabled = r.ich_vmcr & (VMCR_ENG1 if lr & LR_GROUP else VMCR_ENG0)
        if not enabled:
            continue
        prio = (lr >> LR_PRIORITY_SHIFT) & geo.pri_mask
        if prio < best_prio:
            best = <int>n
            best_prio = prio
    return best


cdef inline int find_active_lr(const VcpuIf *r, uint32_t nr_lrs, uint32_t intid) noexcept nogil:
    # FindActiveVirtualInterrupt: the lowest LR with Active set and this vINTID.
    cdef uint32_t n
    for n in range(nr_lrs):
        if (r.ich_lr[n] & LR_ACTIVE) and (r.ich_lr[n] & LR_VINTID_MASK) == intid:
            return <int>n
    return -1


cdef inline void bump_eoicount(VcpuIf *r) noexcept nogil:
    # ICH_HCR_EL2.EOIcount: 5 bits, wrapping.
    cdef uint64_t count = (((r.ich_hcr & HCR_EOICOUNT_MASK) >> HCR_EOICOUNT_SHIFT) + 1) & 0x1F
    r.ich_hcr = (r.ich_hcr & ~HCR_EOICOUNT_MASK) | (count << HCR_EOICOUNT_SHIFT)


cdef inline long deactivate_lr(VcpuIf *r, int n) noexcept nogil:
    # Active cleared (11 -> 01, 10 -> 00); an LR with HW = 1 names the
    # physical INTID the hardware deactivates as well.
    cdef uint64_t lr = r.ich_lr[n]
    r.ich_lr[n] = lr & ~LR_ACTIVE
    if lr & LR_HW:
        return <long>((lr >> LR_PINTID_SHIFT) & 0x3FF)
    return RET_NONE


cdef inline bint priority_drop(VcpuIf *r, uint32_t nr_aprs, int group) noexcept nogil:
    # VPriorityDrop: clear the highest active priority if it is this group's.
    cdef int idx = highest_active(r, nr_aprs)
    cdef uint32_t *aprs
    cdef uint32_t bit
    if idx < 0:
        return False
    if group:
        aprs = &r.ich_ap1r[0]
    else:
        aprs = &r.ich_ap0r[0]
    bit = 1u << (idx & 31)
    if not (aprs[idx >> 5] & bit):
        return False
    aprs[idx >> 5] &= ~bit
    return True


# ------------------------------------------------------------- the accesses
cdef int signalled(const VcpuIf *r, const Geometry *geo) noexcept nogil:
    # The group of the vIRQ (1) / vFIQ (0) the interface signals, or -1: the
    # HPPI, below the priority mask, its group priority above the running
    # priority (IHI 0069 §4.8 and the ICV_IAR<n>_EL1 pseudocode).
    cdef int n = hppi(r, geo)
    cdef uint64_t lr
    cdef uint32_t prio
    cdef int group
    if n < 0:
        return -1
    lr = r.ich_lr[n]
    prio = (lr >> LR_PRIORITY_SHIFT) & geo.pri_mask
    if prio >= pmr(r, geo):
        return -1
    group = 1 if lr & LR_GROUP else 0
    if group_priority(prio, group, r.ich_vmcr, geo.pre_bits) >= running_priority(r, geo):
        return -1
    return group


cdef uint32_t misr(const VcpuIf *r, uint32_t nr_lrs) noexcept nogil:
    # ICH_MISR_EL2 (IHI 0069 §12.4.7), reported whatever ICH_HCR_EL2.En is,
    # as vgic.ich.misr reports it.
    cdef uint64_t hcr = r.ich_hcr, vmcr = r.ich_vmcr, lr
    cdef uint32_t n, out = 0, valid = 0
    cdef bint any_pending = False
    for n in range(nr_lrs):
        lr = r.ich_lr[n]
        if lr & LR_STATE_MASK:
            valid += 1
            if (lr & LR_STATE_MASK) == LR_PENDING:
                any_pending = True
        elif not (lr & LR_HW) and (lr & LR_EOI):
            out |= MISR_EOI
    if (hcr & HCR_UIE) and valid <= 1:
        out |= MISR_U
    if (hcr & HCR_LRENPIE) and (hcr & HCR_EOICOUNT_MASK):
        out |= MISR_LRENP
    if (hcr & HCR_NPIE) and not any_pending:
        out |= MISR_NP
    if vmcr & VMCR_ENG0:
        if hcr & HCR_VGRP0EIE:
            out |= MISR_VGRP0E
    elif hcr & HCR_VGRP0DIE:
        out |= MISR_VGRP0D
    if vmcr & VMCR_ENG1:
        if hcr & HCR_VGRP1EIE:
            out |= MISR_VGRP1E
    elif hcr & HCR_VGRP1DIE:
        out |= MISR_VGRP1D
    return out


cdef inline uint32_t signals(const VcpuIf *r, const Geometry *geo) noexcept nogil:
    cdef int g = signalled(r, geo)
    cdef uint32_t out = 0
    if g == 1:
        out = SIG_IRQ
    elif g == 0:
        out = SIG_FIQ
    if (r.ich_hcr & HCR_EN) and misr(r, geo.nr_lrs):
        out |= SIG_MAINT
    return out


cdef uint32_t acknowledge(VcpuIf *r, const Geometry *geo, int group) noexcept nogil:
    # ICV_IAR0/1_EL1: the HPPI if it is of this group, beats VPMR and beats
    # the running priority; its LR goes Active and its group priority's bit
    # is set in this group's APRs.  Otherwise 1023.
    cdef int n = hppi(r, geo)
    cdef uint64_t lr
    cdef uint32_t prio, gprio, idx
    if n < 0:
        return INTID_SPURIOUS
    lr = r.ich_lr[n]
    if ((lr & LR_GROUP) != 0) != (group != 0):
        return INTID_SPURIOUS
    prio = (lr >> LR_PRIORITY_SHIFT) & geo.pri_mask
    if prio >= pmr(r, geo):
        return INTID_SPURIOUS
    gprio = group_priority(prio, group, r.ich_vmcr, geo.pre_bits)
    if gprio >= running_priority(r, geo):
        return INTID_SPURIOUS
    r.ich_lr[n] = (lr & ~LR_STATE_MASK) | LR_ACTIVE
    idx = gprio >> (8 - geo.pre_bits)
    if group:
        r.ich_ap1r[idx >> 5] |= 1u << (idx & 31)
    else:
        r.ich_ap0r[idx >> 5] |= 1u << (idx & 31)
    return <uint32_t>(lr & LR_VINTID_MASK) & INTID_FIELD


cdef long end_of_interrupt(VcpuIf *r, const Geometry *geo, int group, uint64_t value) noexcept nogil:
    # ICV_EOIR0/1_EL1: priority drop, then (EOImode 0, or an LPI) deactivation
    # of the active LR; no LR: EOIcount, for an EOI that dropped a priority.
    cdef uint32_t intid = <uint32_t>(value & INTID_FIELD)
    cdef bint dropped, lpi
    cdef int n
    if SPECIAL_FIRST <= intid <= SPECIAL_LAST:
        return RET_NONE
    dropped = priority_drop(r, geo.nr_aprs, group)
    lpi = intid >= LPI_BASE
    if (r.ich_vmcr & VMCR_EOIM) and not lpi:
        return RET_NONE
    n = find_active_lr(r, geo.nr_lrs, intid)
    if n < 0:
        if dropped and not lpi:
            bump_eoicount(r)
        return RET_NONE
    if ((r.ich_lr[n] & LR_GROUP) != 0) != (group != 0):
        return RET_NONE                 # active in the other group's LR: untouched
    return deactivate_lr(r, n)


cdef long deactivate(VcpuIf *r, const Geometry *geo, uint64_t value) noexcept nogil:
    # ICV_DIR_EL1: trapped with TDIR; effective only with EOImode 1.
    cdef uint32_t intid = <uint32_t>(value & INTID_FIELD)
    cdef int n
    if r.ich_hcr & HCR_TDIR:
        return RET_TRAP
    if not (r.ich_vmcr & VMCR_EOIM):
        return RET_NONE
    if SPECIAL_FIRST <= intid <= SPECIAL_LAST or intid >= LPI_BASE:
        return RET_NONE
    n = find_active_lr(r, geo.nr_lrs, intid)
    if n < 0:
        bump_eoicount(r)
        return RET_NONE
    return deactivate_lr(r, n)


cdef class Icv:
    """The guest's acknowledge / EOI / deactivate accesses of every vCPU of a
    VM, on its ``VCPU_IF`` records (a writable 1-D C-contiguous array, kept
    alive), for an interface with ``nr_lrs`` LRs and the given priority and
    preemption bits."""
    cdef VcpuIf *rec
    cdef Py_ssize_t n
    cdef Geometry geo
    cdef object _records

    def __init__(self, records, nr_lrs, pri_bits, pre_bits):
        cdef uint8_t[::1] raw
        records = ich.check_records(records)
        if records.shape[0] == 0:
            raise ValueError("records must hold at least one vCPU")
        nr_lrs, pri_bits, pre_bits = ich.check_geometry(nr_lrs, pri_bits, pre_bits)
        raw = records.view(np.uint8)
        self._records = records
        self.rec = <VcpuIf *>&raw[0]
        self.n = records.shape[0]
        self.geo.nr_lrs = nr_lrs
        self.geo.nr_aprs = 1u << (pre_bits - 5)
        self.geo.pri_mask = (0xFFu << (8 - pri_bits)) & 0xFF
        self.geo.pre_bits = pre_bits

    cdef inline VcpuIf *_at(self, i) except NULL:
        if self.rec == NULL:
            raise TypeError("this Icv was not initialised")
        return &self.rec[index_arg(i, "vcpu", self.n)]

    cdef inline uint64_t _value(self, value) except? 0xFFFFFFFFFFFFFFFF:
        # One 64-bit X register (integers only: a float is a TypeError).
        return int_arg(value, "value", 0, 0xFFFFFFFFFFFFFFFF)

    cdef inline int _group(self, group) except -1:
        return int_arg(group, "group", 0, 1)

    def acknowledge(self, i, group):
        """ICV_IAR<group>_EL1 read: the acknowledged INTID, or 1023."""
        cdef int g = self._group(group)
        return acknowledge(self._at(i), &self.geo, g)

    def eoi(self, i, group, value):
        """ICV_EOIR<group>_EL1 write: a physical INTID to deactivate, or -1."""
        cdef int g = self._group(group)
        return end_of_interrupt(self._at(i), &self.geo, g, self._value(value))

    def deactivate(self, i, value):
        """ICV_DIR_EL1 write: a physical INTID to deactivate, -1, or -2 (trap)."""
        return deactivate(self._at(i), &self.geo, self._value(value))

    def hppir(self, i, group):
        """ICV_HPPIR<group>_EL1: the HPPI's INTID if of this group, else 1023."""
        cdef int g = self._group(group)
        cdef VcpuIf *r = self._at(i)
        cdef int n = hppi(r, &self.geo)
        if n < 0 or ((r.ich_lr[n] & LR_GROUP) != 0) != (g != 0):
            return INTID_SPURIOUS
        return <uint32_t>(r.ich_lr[n] & LR_VINTID_MASK) & INTID_FIELD

    def rpr(self, i):
        """ICV_RPR_EL1: the running priority (0xFF when idle)."""
        return running_priority(self._at(i), &self.geo)

    def signalled(self, i):
        """The virtual interrupt the interface signals now: 1 for a vIRQ
        (Group 1), 0 for a vFIQ (Group 0), -1 for none."""
        return signalled(self._at(i), &self.geo)

    def misr(self, i):
        """ICH_MISR_EL2 of the modelled hardware."""
        return misr(self._at(i), self.geo.nr_lrs)

    def signals(self, i):
        """What the CPU interface asserts towards the PE, in one call:
        ``SIG_IRQ`` (a vIRQ), ``SIG_FIQ`` (a vFIQ), ``SIG_MAINT`` (the
        maintenance interrupt: ICH_HCR_EL2.En and a non-zero ICH_MISR_EL2),
        or-ed; 0 for nothing."""
        return signals(self._at(i), &self.geo)

    def signals_batch(self, idx):
        """signals on the vCPUs in ``idx`` (an integer array, validated whole
        first); returns a uint8 array."""
        arr = ich.vcpu_indices(idx, self.n)
        cdef const long long[::1] ix = arr
        cdef Py_ssize_t k, m = arr.shape[0]
        out = np.zeros(m, dtype=np.uint8)
        cdef uint8_t[::1] o = out
        for k in range(m):
            o[k] = <uint8_t>signals(&self.rec[ix[k]], &self.geo)
        return out

    def acknowledge_batch(self, idx, group):
        """acknowledge on the vCPUs in ``idx`` (an integer array, validated
        whole first), in order; returns the INTIDs as a uint32 array."""
        cdef int g = self._group(group)
        arr = ich.vcpu_indices(idx, self.n)
        cdef const long long[::1] ix = arr
        cdef Py_ssize_t k, m = arr.shape[0]
        out = np.zeros(m, dtype=np.uint32)
        cdef uint32_t[::1] o = out
        for k in range(m):
            o[k] = acknowledge(&self.rec[ix[k]], &self.geo, g)
        return out

    def eoi_batch(self, idx, group, values):
        """eoi on the vCPUs in ``idx`` with the matching ``values``; returns
        the physical INTIDs to deactivate (-1 for none) as an int64 array."""
        cdef int g = self._group(group)
        arr = ich.vcpu_indices(idx, self.n)
        vals = np.array(values, dtype=np.uint64, copy=True)
        if vals.shape != arr.shape:
            raise ValueError("idx and values must be one-dimensional and of one length")
        cdef const long long[::1] ix = arr
        cdef const uint64_t[::1] v = vals
        cdef Py_ssize_t k, m = arr.shape[0]
        out = np.zeros(m, dtype=np.int64)
        cdef long long[::1] o = out
        for k in range(m):
            o[k] = end_of_interrupt(&self.rec[ix[k]], &self.geo, g, v[k])
        return out
