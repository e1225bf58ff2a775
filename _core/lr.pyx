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
from libc.string cimport memcpy, memset

from vgic import ich

from vgic._core.args cimport index_arg
from vgic._core.vcpu_if cimport VcpuIf, stored_vmcr, lr_encode
from vgic._core.consts cimport (MAX_LRS, LR_STATE_MASK, LR_HW, LR_EOI, LR_GROUP, LR_VINTID_MASK,
    HCR_LRENPIE, HCR_EOICOUNT_MASK)

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
        if (lr[n] & LR_STATE_MASK) == 0 and ((lr[n] & LR_HW) or not (lr[n] & LR_EOI)):
            m |= 1u << n
    return m


cdef inline uint32_t lr_eisr(const uint64_t *lr, uint32_t nr_lrs) noexcept nogil:
    # ICH_EISR_EL2: State 00, HW 0 and EOI 1: an EOI maintenance request.
    cdef uint32_t n, m = 0
    for n in range(nr_lrs):
        if (lr[n] & (LR_STATE_MASK | LR_HW | LR_EOI)) == LR_EOI:
            m |= 1u << n
    return m


# ------------------------------------------------------- the hyp kernels
cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>

    /* One LR of __vgic_v3_save_state: an LR the hardware reports empty in
       ICH_ELRSR_EL2 (State 00, and HW set or EOI clear) keeps KVM's cached
       value with its State cleared instead of being read back.  Written
       with shifts, ands and a negate only, so it is one formula for a
       scalar and for a vector of LRs. */
    #define VGIC_SAVED_LR(T, hw, cached, one, zero) ({                         \
        T s_ = (hw) >> 62;                                                     \
        T empty_ = ~(s_ | (s_ >> 1)) & (((hw) >> 61) | ~((hw) >> 41)) & (one); \
        T keep_ = (zero) - empty_;                                             \
        (keep_ & (cached) & ~((one) << 62) & ~((one) << 63)) | (~keep_ & (hw)); })

    static inline uint64_t vgic_saved_lr(uint64_t hw, uint64_t cached) {
        return VGIC_SAVED_LR(uint64_t, hw, cached, 1ULL, 0ULL);
    }

    /* Four LRs per vector operation: one AVX2 instruction where the host has
       AVX2 (the kernel is cloned for it), two SSE2 or NEON ones elsewhere. */
    typedef uint64_t vgic_v4u64 __attribute__((vector_size(32)));

    /* Where the fields of a VCPU_IF record are (taken from the Cython struct
       at import, so the layout is written once), and the ICH_HCR_EL2 bits
       the save needs. */
    typedef struct {
        size_t size, ich_lr, ich_hcr, ich_vmcr, vgic_lr, vgic_hcr, vgic_vmcr, used;
        uint64_t lrenpie, eoicount;
    } vgic_record_layout;

    enum { VGIC_RESTORE = 0, VGIC_SAVE = 1, VGIC_SAVE_RESTORE = 2 };

    static inline vgic_v4u64 vgic_rev4(vgic_v4u64 v) {
        const vgic_v4u64 order = {3, 2, 1, 0};
        return __builtin_shuffle(v, order);
    }

    /* The used LRs of one vCPU.  save: each is read back (or kept, if empty)
       into KVM's slot and the hardware LR zeroed; restore: KVM's slot is
       written to the hardware; save then restore: both, the hardware LR
       ending as the value saved.  Slot i holds LR i, or LR 15 - i reversed. */
    static inline __attribute__((always_inline))
    void vgic_lrs(uint64_t *hw, uint64_t *slot, uint32_t used, int what, int reverse) {
        const vgic_v4u64 one = {1, 1, 1, 1}, zero = {0, 0, 0, 0};
        uint32_t i = 0;
        if (what == VGIC_RESTORE && !reverse) {
            memcpy(hw, slot, used * sizeof(uint64_t));
            return;
        }
        for (; i + 4 <= used; i += 4) {
            vgic_v4u64 h, c, v;
            uint64_t *s = reverse ? slot + 16 - 4 - i : slot + i;
            memcpy(&c, s, 32);
            if (reverse) c = vgic_rev4(c);
            if (what == VGIC_RESTORE) {
                memcpy(hw + i, &c, 32);
                continue;
            }
            memcpy(&h, hw + i, 32);
            v = VGIC_SAVED_LR(vgic_v4u64, h, c, one, zero);
            memcpy(hw + i, what == VGIC_SAVE ? &zero : &v, 32);
            if (reverse) v = vgic_rev4(v);
            memcpy(s, &v, 32);
        }
        for (; i < used; i++) {
            uint64_t *s = reverse ? slot + 15 - i : slot + i;
            if (what == VGIC_RESTORE) {
                hw[i] = *s;
                continue;
            }
            *s = vgic_saved_lr(hw[i], *s);
            hw[i] = what == VGIC_SAVE ? 0 : *s;
        }
    }

    /* __vgic_v3_save_state / __vgic_v3_restore_state (or one then the
       other) of the records base[idx[k]] (idx NULL: every record). */
    static inline __attribute__((always_inline))
    void vgic_hyp_body(char *base, const int64_t *idx, size_t n, uint32_t nr_lrs,
                       int reverse, int what, const vgic_record_layout *L) {
        for (size_t k = 0; k < n; k++) {
            char *r = base + (size_t)(idx ? idx[k] : (int64_t)k) * L->size;
            uint32_t used;
            uint64_t hcr, ich_hcr;
            /* The records stream through the cache: ask for one a few ahead. */
            if (k + 4 < n) {
                const char *p = base + (size_t)(idx ? idx[k + 4] : (int64_t)(k + 4)) * L->size;
                for (size_t off = 0; off < L->size; off += 64) __builtin_prefetch(p + off, 1, 3);
            }
            memcpy(&used, r + L->used, 4);
            if (used > nr_lrs) used = nr_lrs;
            vgic_lrs((uint64_t *)(r + L->ich_lr), (uint64_t *)(r + L->vgic_lr), used, what, reverse);
            memcpy(&hcr, r + L->vgic_hcr, 8);
            if (what != VGIC_RESTORE) {
                /* VMCR is saved at every exit (eager since 6.19); with
                   LRENPIE the EOIs of IRQs outside the LRs are kept. */
                memcpy(r + L->vgic_vmcr, r + L->ich_vmcr, 8);
                memcpy(&ich_hcr, r + L->ich_hcr, 8);
                if (hcr & L->lrenpie) {
                    hcr = (hcr & ~L->eoicount) | (ich_hcr & L->eoicount);
                    memcpy(r + L->vgic_hcr, &hcr, 8);
                }
            }
            /* The save writes 0 (traps off, TDIR included); the restore,
               KVM's copy. */
            if (what == VGIC_SAVE)
                hcr = 0;
            memcpy(r + L->ich_hcr, &hcr, 8);
        }
    }
    #if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
    __attribute__((target_clones("avx2", "default")))
    #endif
    static void vgic_hyp_batch(char *base, const int64_t *idx, size_t n, uint32_t nr_lrs,
                               int reverse, int what, const vgic_record_layout *L) {
        /* One specialised loop per step and order (constants inline). */
        #define VGIC_HYP(rev, step) vgic_hyp_body(base, idx, n, nr_lrs, rev, step, L)
        if (!reverse) {
            if (what == VGIC_SAVE_RESTORE) VGIC_HYP(0, VGIC_SAVE_RESTORE);
            else if (what == VGIC_SAVE) VGIC_HYP(0, VGIC_SAVE);
            else VGIC_HYP(0, VGIC_RESTORE);
        } else {
            if (what == VGIC_SAVE_RESTORE) VGIC_HYP(1, VGIC_SAVE_RESTORE);
            else if (what == VGIC_SAVE) VGIC_HYP(1, VGIC_SAVE);
            else VGIC_HYP(1, VGIC_RESTORE);
        }
        #undef VGIC_HYP
    }
    """
    ctypedef struct RecordLayout "vgic_record_layout":
        size_t size, ich_lr, ich_hcr, ich_vmcr, vgic_lr, vgic_hcr, vgic_vmcr, used
        uint64_t lrenpie, eoicount
    enum:
        DO_RESTORE "VGIC_RESTORE"
        DO_SAVE "VGIC_SAVE"
        DO_SAVE_RESTORE "VGIC_SAVE_RESTORE"
    void hyp_batch "vgic_hyp_batch"(char *base, const int64_t *idx, size_t n, uint32_t nr_lrs,
                                    int reverse, int what, const RecordLayout *layout) noexcept nogil

cdef RecordLayout LAYOUT
cdef VcpuIf _probe
LAYOUT.size = sizeof(VcpuIf)
LAYOUT.ich_lr = <char *>&_probe.ich_lr[0] - <char *>&_probe
LAYOUT.ich_hcr = <char *>&_probe.ich_hcr - <char *>&_probe
LAYOUT.ich_vmcr = <char *>&_probe.ich_vmcr - <char *>&_probe
LAYOUT.vgic_lr = <char *>&_probe.vgic_lr[0] - <char *>&_probe
LAYOUT.vgic_hcr = <char *>&_probe.vgic_hcr - <char *>&_probe
LAYOUT.vgic_vmcr = <char *>&_probe.vgic_vmcr - <char *>&_probe
LAYOUT.used = <char *>&_probe.used_lrs - <char *>&_probe
LAYOUT.lrenpie = HCR_LRENPIE
LAYOUT.eoicount = HCR_EOICOUNT_MASK

# Steps of a batch besides DO_RESTORE / DO_SAVE / DO_SAVE_RESTORE.
cdef enum:
    DO_LOAD = 3
    DO_PUT = 4


cdef struct Geo:
    # The modelled hardware: ICH_VTR_EL2's counts and KVM's LR storage order.
    uint32_t nr_lrs
    uint32_t nr_aprs
    uint32_t pri_bits
    uint32_t pre_bits
    bint reverse


cdef inline void load_one(VcpuIf *r, const Geo *g) noexcept nogil:
    # vcpu_load: ICH_VMCR_EL2 (the hardware stores what its fields can hold)
    # and the active-priority registers.
    cdef uint32_t k
    r.ich_vmcr = stored_vmcr(r.vgic_vmcr, g.pri_bits, g.pre_bits)
    for k in range(g.nr_aprs):
        r.ich_ap0r[k] = r.vgic_ap0r[k]
        r.ich_ap1r[k] = r.vgic_ap1r[k]


cdef inline void put_one(VcpuIf *r, const Geo *g) noexcept nogil:
    # vcpu_put: the active-priority registers (VMCR is saved at every exit).
    cdef uint32_t k
    for k in range(g.nr_aprs):
        r.vgic_ap0r[k] = r.ich_ap0r[k]
        r.vgic_ap1r[k] = r.ich_ap1r[k]


cdef inline void plain_one(VcpuIf *r, uint32_t nr_lrs) noexcept nogil:
    # The copies of one save + restore and nothing else (no ELRSR test, no
    # storage order, no EOIcount): the benchmarks' "plain C loop" baseline.
    cdef uint32_t used = r.used_lrs if r.used_lrs < nr_lrs else nr_lrs
    memcpy(r.vgic_lr, r.ich_lr, used * sizeof(uint64_t))
    memset(r.ich_lr, 0, used * sizeof(uint64_t))
    r.vgic_vmcr = r.ich_vmcr
    r.ich_hcr = r.vgic_hcr
    memcpy(r.ich_lr, r.vgic_lr, used * sizeof(uint64_t))


cdef class HypIf:
    """The hyp save/restore of every vCPU of a VM over its ``VCPU_IF`` records.

    ``records`` is a 1-D numpy array of :data:`vgic.ich.VCPU_IF` that this
    object works on in place (it is kept alive and cannot be resized);
    ``nr_lrs``, ``pri_bits`` and ``pre_bits`` describe the modelled hardware
    (ICH_VTR_EL2), ``reverse`` KVM's LR storage order.
    """
    cdef VcpuIf *rec
    cdef Py_ssize_t n
    cdef Geo g
    cdef object _records
    cdef object _view

    def __init__(self, records, nr_lrs, pri_bits, pre_bits, bint reverse):
        records = ich.check_records(records)
        if records.shape[0] == 0:
            raise ValueError("records must hold at least one vCPU")
        nr_lrs, pri_bits, pre_bits = ich.check_geometry(nr_lrs, pri_bits, pre_bits)
        cdef uint8_t[::1] raw = records.view(np.uint8)
        self._records = records
        self._view = raw
        self.rec = <VcpuIf *> &raw[0]
        self.n = records.shape[0]
        self.g.nr_lrs = nr_lrs
        self.g.nr_aprs = 1u << (pre_bits - 5)
        self.g.pri_bits = pri_bits
        self.g.pre_bits = pre_bits
        self.g.reverse = reverse

    cdef int _ready(self) except -1:
        if self.rec == NULL:
            raise TypeError("this HypIf was not initialised")
        return 0

    @property
    def nr_lrs(self):
        return self.g.nr_lrs

    @property
    def nr_aprs(self):
        return self.g.nr_aprs

    @property
    def reverse(self):
        return self.g.reverse

    @property
    def records(self):
        return self._records

    cdef inline VcpuIf *_at(self, i) except NULL:
        self._ready()
        return &self.rec[index_arg(i, "vcpu", self.n)]

    def slot(self, n):
        """The saved slot that holds ICH_LR<n>_EL2 in this storage order."""
        cdef Py_ssize_t lr = index_arg(n, "LR", MAX_LRS)
        return MAX_LRS - 1 - lr if self.g.reverse else lr

    # ---- one vCPU ------------------------------------------------------------
    def save_state(self, i):
        """__vgic_v3_save_state for vCPU ``i`` (every exit)."""
        hyp_batch(<char *>self._at(i), NULL, 1, self.g.nr_lrs, self.g.reverse, DO_SAVE, &LAYOUT)

    def restore_state(self, i):
        """__vgic_v3_restore_state for vCPU ``i`` (every entry)."""
        hyp_batch(<char *>self._at(i), NULL, 1, self.g.nr_lrs, self.g.reverse, DO_RESTORE, &LAYOUT)

    def save_aprs(self, i):
        """vcpu_put: save the active-priority registers the PREbits imply."""
        put_one(self._at(i), &self.g)

    def restore_vmcr_aprs(self, i):
        """vcpu_load: restore ICH_VMCR_EL2 and the active-priority registers."""
        load_one(self._at(i), &self.g)

    def load_batch(self, idx=None):
        """restore_vmcr_aprs for every vCPU, or the indices in ``idx`` (vcpu_load of many)."""
        self._batch(idx, DO_LOAD)

    def put_batch(self, idx=None):
        """save_aprs for every vCPU, or the indices in ``idx`` (vcpu_put of many)."""
        self._batch(idx, DO_PUT)

    def elrsr(self, i):
        """ICH_ELRSR_EL2 of vCPU ``i``'s modelled hardware."""
        return lr_elrsr(self._at(i).ich_lr, self.g.nr_lrs)

    def eisr(self, i):
        """ICH_EISR_EL2 of vCPU ``i``'s modelled hardware."""
        return lr_eisr(self._at(i).ich_lr, self.g.nr_lrs)

    # ---- many vCPUs ----------------------------------------------------------
    def save_state_batch(self, idx=None):
        """save_state for every vCPU, or for the vCPU indices in ``idx``
        (an integer numpy array, validated whole before anything runs)."""
        self._batch(idx, DO_SAVE)

    def restore_state_batch(self, idx=None):
        """restore_state for every vCPU, or for the indices in ``idx``."""
        self._batch(idx, DO_RESTORE)

    def save_restore_batch(self, idx=None):
        """save_state then restore_state of each vCPU (every vCPU, or the
        indices in ``idx``) in one pass: one exit and re-entry per vCPU,
        touching each record once."""
        self._batch(idx, DO_SAVE_RESTORE)

    def plain_copy_batch(self):
        """The copies of save_restore_batch over every vCPU in a plain C loop
        (memcpy of the used LRs there and back, VMCR, HCR; no ELRSR test,
        storage order or EOIcount): the baseline its benchmark compares with."""
        cdef Py_ssize_t i
        self._ready()
        with nogil:
            for i in range(self.n):
                plain_one(&self.rec[i], self.g.nr_lrs)

    cdef _batch(self, idx, int what):
        cdef Py_ssize_t i, k, m
        cdef const int64_t[::1] ix
        cdef const int64_t *ids = NULL
        self._ready()
        if idx is None:
            m = self.n
        else:
            arr = ich.vcpu_indices(idx, self.n)     # private, checked: safe without the GIL
            m = arr.shape[0]
            if m == 0:
                return
            ix = arr
            ids = &ix[0]
        with nogil:
            if what == DO_LOAD or what == DO_PUT:
                for k in range(m):
                    i = ids[k] if ids != NULL else k
                    if what == DO_LOAD:
                        load_one(&self.rec[i], &self.g)
                    else:
                        put_one(&self.rec[i], &self.g)
            else:
                hyp_batch(<char *>self.rec, ids, m, self.g.nr_lrs, self.g.reverse, what, &LAYOUT)


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
    # The real array (a subclass cannot fake its dtype), flattened.
    arr = np.asarray(fields) if isinstance(fields, np.ndarray) else None
    if arr is None or arr.dtype != ich.LR_FIELDS:
        raise TypeError("fields must be a numpy array of vgic.ich.LR_FIELDS, not "
                        f"{type(fields).__name__} {'' if arr is None else arr.dtype}")
    return np.ascontiguousarray(arr).reshape(-1)


def lr_encode_batch(fields):
    """ICH_LR<n>_EL2 values (uint64, same shape) from an array of
    :data:`vgic.ich.LR_FIELDS` records.  A field outside its width (pINTID
    > 0x3FF, State > 3, a flag > 1) is a ``ValueError`` naming the record."""
    arr = fields_array(fields)
    shape = np.asarray(fields).shape
    cdef Py_ssize_t i, n = arr.shape[0]
    out = np.zeros(n, dtype=np.uint64)
    if n == 0:
        return out.reshape(shape)
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
    return out.reshape(shape)


def lr_decode_batch(lrs):
    """An array of :data:`vgic.ich.LR_FIELDS` (same shape) from ICH_LR<n>_EL2
    values; RES0 bits are ignored, as the architecture lets hardware do."""
    arr = ich.lr_values(lrs)
    shape = arr.shape
    arr = np.ascontiguousarray(arr).reshape(-1)
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
    cdef uint8_t[::1] d = ich.check_records(dst).view(np.uint8)
    cdef const uint8_t[::1] s = ich.check_records(src).view(np.uint8)
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
