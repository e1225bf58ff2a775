# cython: language_level=3
"""Hyp save/restore of the GICv3 virtual CPU interface, in both LR storage orders.

The kernels of ``__vgic_v3_save_state`` / ``__vgic_v3_restore_state`` and of
the APR save/restore at vcpu_put/vcpu_load (Linux arch/arm64/kvm/hyp/
vgic-v3-sr.c, v6.19; kvm-facts §4.3) over an array of :data:`vgic.ich.VCPU_IF`
records, one per vCPU.  ``reverse`` selects the v4.5-era storage order in
which KVM's saved slot 15 - n holds ICH_LR<n>_EL2; the default (direct) is
today's, slot n holds LR n.  Guest-visible behaviour is the same in both.
"""
import numpy as np

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from libc.string cimport memcpy

from vgic import ich

from vgic._core.vcpu_if cimport (VcpuIf, MAX_LRS, MAX_APRS, LR_STATE, LR_HW, LR_EOI,
    LR_GROUP, LR_PENDING, LR_ACTIVE, LR_VINTID_MASK, HCR_LRENPIE, HCR_EOICOUNT,
    lr_encode)

cdef packed struct LrFields:
    # vgic.ich.LR_FIELDS (12 bytes)
    uint32_t vintid
    uint16_t pintid
    uint8_t priority
    uint8_t group
    uint8_t state
    uint8_t hw
    uint8_t eoi
    uint8_t pad

assert sizeof(VcpuIf) == ich.VCPU_IF.itemsize
assert sizeof(LrFields) == ich.LR_FIELDS.itemsize


cdef inline uint32_t lr_elrsr(const uint64_t *lr, uint32_t nr_lrs) noexcept nogil:
    # ICH_ELRSR_EL2: LR n is empty when its State is 00 and it is not waiting
    # for an EOI maintenance interrupt (IHI 0069 §12.4.7).
    cdef uint32_t n, m = 0
    for n in range(nr_lrs):
        if (lr[n] & LR_STATE) == 0 and ((lr[n] & LR_HW) or not (lr[n] & LR_EOI)):
            m |= 1u << n
    return m


cdef inline uint32_t lr_eisr(const uint64_t *lr, uint32_t nr_lrs) noexcept nogil:
    # ICH_EISR_EL2: State 00, HW 0 and EOI 1: an EOI maintenance request.
    cdef uint32_t n, m = 0
    for n in range(nr_lrs):
        if (lr[n] & (LR_STATE | LR_HW | LR_EOI)) == LR_EOI:
            m |= 1u << n
    return m


cdef inline uint64_t saved_lr(uint64_t hw, uint64_t cached) noexcept nogil:
    # One LR of __vgic_v3_save_state: an LR the hardware reports empty in
    # ICH_ELRSR_EL2 keeps KVM's cached value with its State cleared instead
    # of being read back (written branch-free so the loop vectorises).
    cdef uint64_t empty = ((hw & LR_STATE) == 0) & (((hw & LR_HW) != 0) | ((hw & LR_EOI) == 0))
    cdef uint64_t keep = <uint64_t>0 - empty          # all ones if empty
    return (keep & (cached & ~LR_STATE)) | (~keep & hw)


cdef inline void save_one(VcpuIf *r, uint32_t nr_lrs, bint reverse) noexcept nogil:
    # __vgic_v3_save_state: only the used LRs are touched, each is read back
    # (or kept, if empty) and then zeroed in the hardware.
    cdef uint32_t i, used = r.used_lrs if r.used_lrs < nr_lrs else nr_lrs
    if reverse:
        for i in range(used):
            r.vgic_lr[MAX_LRS - 1 - i] = saved_lr(r.ich_lr[i], r.vgic_lr[MAX_LRS - 1 - i])
            r.ich_lr[i] = 0
    else:
        for i in range(used):
            r.vgic_lr[i] = saved_lr(r.ich_lr[i], r.vgic_lr[i])
            r.ich_lr[i] = 0
    r.vgic_vmcr = r.ich_vmcr                     # eager since 6.19
    if r.vgic_hcr & HCR_LRENPIE:                 # EOIs of IRQs outside the LRs
        r.vgic_hcr = (r.vgic_hcr & ~HCR_EOICOUNT) | (r.ich_hcr & HCR_EOICOUNT)
    r.ich_hcr = 0                                # traps off, including TDIR


cdef inline void restore_one(VcpuIf *r, uint32_t nr_lrs, bint reverse) noexcept nogil:
    # __vgic_v3_restore_state: ICH_HCR_EL2 always, then the used LRs.
    cdef uint32_t i, used = r.used_lrs if r.used_lrs < nr_lrs else nr_lrs
    r.ich_hcr = r.vgic_hcr
    if reverse:
        for i in range(used):
            r.ich_lr[i] = r.vgic_lr[MAX_LRS - 1 - i]
    else:
        memcpy(r.ich_lr, r.vgic_lr, used * sizeof(uint64_t))


cdef inline void load_one(VcpuIf *r, uint32_t nr_aprs) noexcept nogil:
    # vcpu_load: ICH_VMCR_EL2 and the active-priority registers.
    cdef uint32_t k
    r.ich_vmcr = r.vgic_vmcr
    for k in range(nr_aprs):
        r.ich_ap0r[k] = r.vgic_ap0r[k]
        r.ich_ap1r[k] = r.vgic_ap1r[k]


cdef inline void put_one(VcpuIf *r, uint32_t nr_aprs) noexcept nogil:
    # vcpu_put: the active-priority registers (VMCR is saved at every exit).
    cdef uint32_t k
    for k in range(nr_aprs):
        r.vgic_ap0r[k] = r.ich_ap0r[k]
        r.vgic_ap1r[k] = r.ich_ap1r[k]


cdef inline void apply_one(VcpuIf *r, uint32_t nr_lrs, bint reverse, int what, uint32_t nr_aprs) noexcept nogil:
    # what: 0 restore, 1 save, 2 save then restore, 3 load, 4 put.
    if what == 3:
        load_one(r, nr_aprs)
        return
    if what == 4:
        put_one(r, nr_aprs)
        return
    if what:
        save_one(r, nr_lrs, reverse)
    if what != 1:
        restore_one(r, nr_lrs, reverse)


cdef class HypIf:
    """The hyp save/restore of every vCPU of a VM over its ``VCPU_IF`` records.

    ``records`` is a 1-D numpy array of :data:`vgic.ich.VCPU_IF` that this
    object works on in place (it is kept alive and cannot be resized).
    """
    cdef VcpuIf *rec
    cdef Py_ssize_t n
    cdef uint32_t _nr_lrs, _nr_aprs
    cdef bint _reverse
    cdef object _records
    cdef object _view

    def __init__(self, records, int nr_lrs, int pre_bits, bint reverse):
        ich.check_records(records)
        if records.shape[0] == 0:
            raise ValueError("records must hold at least one vCPU")
        if not 1 <= nr_lrs <= MAX_LRS:
            raise ValueError(f"nr_lrs {nr_lrs} is not in 1..{MAX_LRS}")
        if not 5 <= pre_bits <= 7:
            raise ValueError(f"pre_bits {pre_bits} is not in 5..7")
        cdef uint8_t[::1] raw = records.view(np.uint8)
        self._records = records
        self._view = raw
        self.rec = <VcpuIf *> &raw[0]
        self.n = records.shape[0]
        self._nr_lrs = nr_lrs
        self._nr_aprs = 1u << (pre_bits - 5)
        self._reverse = reverse

    @property
    def nr_lrs(self):
        return self._nr_lrs

    @property
    def nr_aprs(self):
        return self._nr_aprs

    @property
    def reverse(self):
        return self._reverse

    @property
    def records(self):
        return self._records

    cdef inline VcpuIf *_at(self, Py_ssize_t i) except NULL:
        if not 0 <= i < self.n:
            raise ValueError(f"vcpu {i} out of range: {self.n} vCPUs")
        return &self.rec[i]

    def slot(self, int n):
        """The saved slot that holds ICH_LR<n>_EL2 in this storage order."""
        if not 0 <= n < MAX_LRS:
            raise ValueError(f"LR {n} is not in 0..15")
        return MAX_LRS - 1 - n if self._reverse else n

    # ---- one vCPU ------------------------------------------------------------
    def save_state(self, Py_ssize_t i):
        """__vgic_v3_save_state for vCPU ``i`` (every exit)."""
        save_one(self._at(i), self._nr_lrs, self._reverse)

    def restore_state(self, Py_ssize_t i):
        """__vgic_v3_restore_state for vCPU ``i`` (every entry)."""
        restore_one(self._at(i), self._nr_lrs, self._reverse)

    def save_aprs(self, Py_ssize_t i):
        """vcpu_put: save the active-priority registers the PREbits imply."""
        put_one(self._at(i), self._nr_aprs)

    def restore_vmcr_aprs(self, Py_ssize_t i):
        """vcpu_load: restore ICH_VMCR_EL2 and the active-priority registers."""
        load_one(self._at(i), self._nr_aprs)

    def load_batch(self, idx):
        """restore_vmcr_aprs for the vCPU indices in ``idx`` (vcpu_load of many)."""
        self._batch(idx, 3)

    def put_batch(self, idx):
        """save_aprs for the vCPU indices in ``idx`` (vcpu_put of many)."""
        self._batch(idx, 4)

    def elrsr(self, Py_ssize_t i):
        """ICH_ELRSR_EL2 of vCPU ``i``'s modelled hardware."""
        return lr_elrsr(self._at(i).ich_lr, self._nr_lrs)

    def eisr(self, Py_ssize_t i):
        """ICH_EISR_EL2 of vCPU ``i``'s modelled hardware."""
        return lr_eisr(self._at(i).ich_lr, self._nr_lrs)

    # ---- many vCPUs ----------------------------------------------------------
    def save_state_batch(self, idx=None):
        """save_state for every vCPU, or for the vCPU indices in ``idx``
        (an integer numpy array, validated whole before anything runs)."""
        self._batch(idx, True)

    def restore_state_batch(self, idx=None):
        """restore_state for every vCPU, or for the indices in ``idx``."""
        self._batch(idx, False)

    def save_restore_batch(self, idx=None):
        """save_state then restore_state of each vCPU (every vCPU, or the
        indices in ``idx``) in one pass: one exit and re-entry per vCPU,
        touching each record once."""
        self._batch(idx, 2)

    cdef _batch(self, idx, int save):
        # save: 0 restore, 1 save, 2 both, 3 load, 4 put (see apply_one)
        cdef Py_ssize_t i, k, m
        cdef const int64_t[::1] ix
        if idx is None:
            with nogil:
                for i in range(self.n):
                    apply_one(&self.rec[i], self._nr_lrs, self._reverse, save, self._nr_aprs)
            return
        arr = ich.vcpu_indices(idx, self.n)     # private, checked: safe without the GIL
        m = arr.shape[0]
        if m == 0:
            return
        ix = arr
        with nogil:
            for k in range(m):
                apply_one(&self.rec[ix[k]], self._nr_lrs, self._reverse, save, self._nr_aprs)


# ------------------------------------------------------------ LR codec
cdef inline LrFields lr_unpack(uint64_t lr) noexcept nogil:
    cdef LrFields f
    f.vintid = <uint32_t>(lr & LR_VINTID_MASK)
    f.hw = (lr & LR_HW) != 0
    f.pintid = <uint16_t>((lr >> 32) & 0x3FF) if f.hw else 0
    f.eoi = 0 if f.hw else (lr & LR_EOI) != 0
    f.priority = <uint8_t>(lr >> 48)
    f.group = (lr & LR_GROUP) != 0
    f.state = <uint8_t>(lr >> 62)
    f.pad = 0
    return f


cdef object fields_array(fields):
    if not isinstance(fields, np.ndarray) or fields.dtype != ich.LR_FIELDS:
        raise TypeError("fields must be a numpy array of vgic.ich.LR_FIELDS, not "
                        f"{type(fields).__name__} {getattr(fields, 'dtype', '')}")
    return np.ascontiguousarray(fields).reshape(-1)


def lr_encode_batch(fields):
    """ICH_LR<n>_EL2 values (uint64, same shape) from an array of
    :data:`vgic.ich.LR_FIELDS` records.  A field outside its width (pINTID
    > 0x3FF, State > 3, a flag > 1) is a ``ValueError`` naming the record."""
    arr = fields_array(fields)
    cdef Py_ssize_t i, n = arr.shape[0]
    out = np.zeros(n, dtype=np.uint64)
    if n == 0:
        return out.reshape(fields.shape)
    cdef const uint8_t[::1] raw = arr.view(np.uint8)
    cdef const LrFields *f = <const LrFields *>&raw[0]
    cdef uint64_t[::1] o = out
    for i in range(n):
        if f[i].pintid > 0x3FF or f[i].state > 3 or (f[i].group | f[i].hw | f[i].eoi) > 1:
            raise ValueError(f"fields[{i}] = {arr[i]} has a field outside its width "
                             "(pintid <= 0x3FF, state <= 3, flags 0/1)")
    with nogil:
        for i in range(n):
            o[i] = lr_encode(f[i].vintid, f[i].priority, f[i].group, f[i].state & 1,
                             f[i].state >> 1, f[i].hw, f[i].pintid, f[i].eoi)
    return out.reshape(fields.shape)


def lr_decode_batch(lrs):
    """An array of :data:`vgic.ich.LR_FIELDS` (same shape) from ICH_LR<n>_EL2
    values; RES0 bits are ignored, as the architecture lets hardware do."""
    arr = np.ascontiguousarray(lrs, dtype=np.uint64)
    shape = arr.shape
    arr = arr.reshape(-1)
    cdef Py_ssize_t i, n = arr.shape[0]
    out = np.zeros(n, dtype=ich.LR_FIELDS)
    if n == 0:
        return out.reshape(shape)
    cdef const uint64_t[::1] src = arr
    cdef uint8_t[::1] raw = out.view(np.uint8)
    cdef LrFields *f = <LrFields *>&raw[0]
    with nogil:
        for i in range(n):
            f[i] = lr_unpack(src[i])
    return out.reshape(shape)


def copy_records(dst, src):
    """memcpy of one record array into another of the same shape: the
    baseline that the batch save/restore benchmarks compare against."""
    cdef uint8_t[::1] d = dst.view(np.uint8)
    cdef const uint8_t[::1] s = src.view(np.uint8)
    if d.shape[0] != s.shape[0]:
        raise ValueError("dst and src differ in size")
    if d.shape[0]:
        with nogil:
            memcpy(&d[0], &s[0], d.shape[0])


cdef class Noop:
    """A do-nothing extension type with the per-vCPU methods' signatures:
    the baseline of the per-call save/restore benchmark."""

    def save_state(self, Py_ssize_t i):
        pass

    def restore_state(self, Py_ssize_t i):
        pass
