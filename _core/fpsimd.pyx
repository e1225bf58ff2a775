# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""FPSIMD/SVE state and its context switch in C: the kernels of
vgic/_pure/fpsimd.py (the twin states every rule in the same order; see it
and docs/sve-facts.md), over the same arrays: KVM's copy per vCPU (vregs,
sve_state at the vCPU's maximum VQ), the modelled CPU's register file (hw,
the sve_context payload at the host's largest VQ) and the host task's saved
state, with one vgic.fpregs.FP_VCPU record per vCPU.  The register-file
copies are memcpy/memset over the payload layout."""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from libc.string cimport memcpy, memset

import errno

import numpy as np

from vgic._core.consts cimport (SVE_VQ_MAX, NR_ZREGS, NR_PREGS, FPSIMD_VREGS_BYTES, SVE_STATE_MAX,
    ZCR_LEN_MASK, KVM_ARM_VCPU_SVE, FP_STATE_FREE, FP_STATE_HOST_OWNED, FP_STATE_GUEST_OWNED,
    FP_POLICY_LAZY, FP_POLICY_EAGER)
from vgic._core.args cimport int_arg
from vgic._core.batch cimport run_steps

from vgic import fpregs
from vgic.ich import vcpu_indices

cdef enum:
    FPREG_V = 0
    FPREG_Z = 1
    FPREG_P = 2
    FPREG_FFR = 3
    FPREG_FPSR = 4
    FPREG_FPCR = 5
    FPREG_ZCR = 6


cdef struct FpVcpu:
    uint32_t fpsr, fpcr
    uint64_t zcr_el1
    uint32_t hw_fpsr, hw_fpcr
    uint64_t hw_zcr_el1, hw_zcr_el2
    uint32_t host_fpsr, host_fpcr
    uint64_t vls[8]
    uint64_t guest_bytes, host_bytes, traps, zcr_writes
    uint16_t max_vq, hw_vq
    uint8_t sve, finalized, owner, loaded, running
    uint8_t pad[7]

if sizeof(FpVcpu) != fpregs.FP_VCPU.itemsize:
    raise ImportError("vgic._core.fpsimd: FpVcpu disagrees with vgic.fpregs.FP_VCPU")


# ------------------------------------------------------------ the layout
cdef inline size_t zoff(uint32_t vq, uint32_t n) noexcept nogil:
    return 16 * vq * n

cdef inline size_t poff(uint32_t vq, uint32_t n) noexcept nogil:
    return 512 * vq + 2 * vq * n

cdef inline size_t ffroff(uint32_t vq) noexcept nogil:
    return 544 * vq

cdef inline size_t regs_size(uint32_t vq) noexcept nogil:
    return 546 * vq

cdef extern from *:
    int fp_clzll "__builtin_clzll"(unsigned long long x) nogil

cdef inline uint32_t vls_max_vq(const uint64_t *vls) noexcept nogil:
    # The largest VQ a KVM_REG_ARM64_SVE_VLS value names (bit vq - 1), or 0.
    cdef int k = 8
    while k > 0:
        k -= 1
        if vls[k]:
            return <uint32_t>(64 * k + 64 - fp_clzll(vls[k]))
    return 0

cdef void copy_regs(uint8_t *dst, uint32_t dvq, const uint8_t *src, uint32_t svq, uint32_t vq) noexcept nogil:
    # The register file at vector length vq from a payload at svq to one at
    # dvq, zeroing what lies in dst above vq in each register.
    cdef uint32_t n
    if dvq == svq and svq == vq:
        memcpy(dst, src, regs_size(vq))
        return
    for n in range(NR_ZREGS):
        memcpy(dst + zoff(dvq, n), src + zoff(svq, n), 16 * vq)
        memset(dst + zoff(dvq, n) + 16 * vq, 0, 16 * (dvq - vq))
    for n in range(NR_PREGS):
        memcpy(dst + poff(dvq, n), src + poff(svq, n), 2 * vq)
        memset(dst + poff(dvq, n) + 2 * vq, 0, 2 * (dvq - vq))
    memcpy(dst + ffroff(dvq), src + ffroff(svq), 2 * vq)
    memset(dst + ffroff(dvq) + 2 * vq, 0, 2 * (dvq - vq))

cdef void fpsimd_to_sve(uint8_t *dst, uint32_t vq, const uint8_t *vregs) noexcept nogil:
    # Zn = Vn zero-extended, P and FFR zero (sve_sync_from_fpsimd_zeropad).
    cdef uint32_t n
    memset(dst, 0, regs_size(vq))
    for n in range(NR_ZREGS):
        memcpy(dst + zoff(vq, n), vregs + 16 * n, 16)

cdef void sve_to_fpsimd(uint8_t *vregs, const uint8_t *src, uint32_t vq) noexcept nogil:
    cdef uint32_t n
    for n in range(NR_ZREGS):
        memcpy(vregs + 16 * n, src + zoff(vq, n), 16)

cdef void zero_above(uint8_t *hw, uint32_t hvq, uint32_t vq) noexcept nogil:
    cdef uint32_t n
    if vq > hvq:
        vq = hvq
    for n in range(NR_ZREGS):
        memset(hw + zoff(hvq, n) + 16 * vq, 0, 16 * (hvq - vq))
    for n in range(NR_PREGS):
        memset(hw + poff(hvq, n) + 2 * vq, 0, 2 * (hvq - vq))
    memset(hw + ffroff(hvq) + 2 * vq, 0, 2 * (hvq - vq))


cdef void zero_fpsimd_view(uint8_t *hw, uint32_t hvq) noexcept nogil:
    # FPSIMD registers live: Zn above 128 bits, P and FFR zero.
    cdef uint32_t n
    zero_above(hw, hvq, 1)
    for n in range(NR_PREGS):
        memset(hw + poff(hvq, n), 0, 2 * hvq)
    memset(hw + ffroff(hvq), 0, 2 * hvq)


cdef struct Ctx:
    FpVcpu *r
    uint8_t *vregs          # n * 512
    uint8_t *sve_state      # n * SVE_STATE_MAX
    uint8_t *hw             # n * 546 * hvq
    uint8_t *host_state     # n * 546 * hvq
    uint32_t hvq
    uint32_t policy
    uint32_t host_sve
    uint32_t supported      # bit vq - 1: a VQ the host implements
    Py_ssize_t n

cdef inline uint8_t *hw_of(const Ctx *c, Py_ssize_t i) noexcept nogil:
    return c.hw + <size_t>i * regs_size(c.hvq)

cdef inline uint8_t *host_of(const Ctx *c, Py_ssize_t i) noexcept nogil:
    return c.host_state + <size_t>i * regs_size(c.hvq)

cdef inline uint32_t eff_vq(const Ctx *c, const FpVcpu *r) noexcept nogil:
    # The smallest (LEN + 1) of ZCR_EL2 and ZCR_EL1, rounded down to a VQ
    # the host implements (the smallest one if none is below).
    cdef uint32_t want = <uint32_t>(r.hw_zcr_el2 & ZCR_LEN_MASK) + 1
    cdef uint32_t el1 = <uint32_t>(r.hw_zcr_el1 & ZCR_LEN_MASK) + 1
    cdef uint32_t vq
    if el1 < want:
        want = el1
    vq = want
    while vq >= 1:
        if (c.supported >> (vq - 1)) & 1:
            return vq
        vq -= 1
    vq = 1
    while not ((c.supported >> (vq - 1)) & 1):
        vq += 1
    return vq

cdef inline uint32_t mvq_of(const Ctx *c, const FpVcpu *r) noexcept nogil:
    # The vCPU's maximum VQ within 1..the host's (the record is a public
    # array: a bad value must not reach a copy).
    if r.max_vq < 1:
        return 1
    return r.max_vq if r.max_vq < c.hvq else c.hvq

cdef void apply_vl(Ctx *c, Py_ssize_t i) noexcept nogil:
    cdef FpVcpu *r = &c.r[i]
    cdef uint32_t vq = eff_vq(c, r)
    if vq < r.hw_vq and vq < c.hvq:
        zero_above(hw_of(c, i), c.hvq, vq)
    r.hw_vq = <uint16_t>vq

cdef void write_zcr(Ctx *c, Py_ssize_t i, bint el2, uint64_t value) noexcept nogil:
    # sve_cond_update_zcr_vq: written (and counted) only if it changes.
    cdef FpVcpu *r = &c.r[i]
    cdef uint64_t *reg = &r.hw_zcr_el2 if el2 else &r.hw_zcr_el1
    if reg[0] != value:
        reg[0] = value
        r.zcr_writes += 1
    apply_vl(c, i)

cdef inline uint64_t host_bytes(const Ctx *c) noexcept nogil:
    return (regs_size(c.hvq) if c.host_sve else FPSIMD_VREGS_BYTES) + 8

cdef inline uint64_t guest_bytes(const Ctx *c, const FpVcpu *r) noexcept nogil:
    return (regs_size(mvq_of(c, r)) if r.sve else FPSIMD_VREGS_BYTES) + 8

cdef void host_save(Ctx *c, Py_ssize_t i) noexcept nogil:
    cdef FpVcpu *r = &c.r[i]
    if r.owner != FP_STATE_HOST_OWNED:
        return
    if c.host_sve:
        memcpy(host_of(c, i), hw_of(c, i), regs_size(c.hvq))
    else:
        sve_to_fpsimd(host_of(c, i), hw_of(c, i), c.hvq)
    r.host_fpsr = r.hw_fpsr
    r.host_fpcr = r.hw_fpcr
    r.host_bytes += host_bytes(c)
    r.owner = FP_STATE_FREE

cdef void host_restore(Ctx *c, Py_ssize_t i) noexcept nogil:
    cdef FpVcpu *r = &c.r[i]
    if r.owner == FP_STATE_HOST_OWNED:
        return
    r.hw_zcr_el2 = c.hvq - 1
    r.hw_zcr_el1 = c.hvq - 1
    r.hw_vq = <uint16_t>c.hvq
    if c.host_sve:
        memcpy(hw_of(c, i), host_of(c, i), regs_size(c.hvq))
    else:
        fpsimd_to_sve(hw_of(c, i), c.hvq, host_of(c, i))
    r.hw_fpsr = r.host_fpsr
    r.hw_fpcr = r.host_fpcr
    r.host_bytes += host_bytes(c)
    r.owner = FP_STATE_HOST_OWNED

cdef void guest_restore(Ctx *c, Py_ssize_t i) noexcept nogil:
    cdef FpVcpu *r = &c.r[i]
    cdef uint32_t mvq = mvq_of(c, r)
    if r.sve:
        write_zcr(c, i, True, mvq - 1)
        copy_regs(hw_of(c, i), c.hvq, c.sve_state + <size_t>i * SVE_STATE_MAX, mvq, mvq)
        write_zcr(c, i, False, r.zcr_el1 & ZCR_LEN_MASK)
    else:
        fpsimd_to_sve(hw_of(c, i), c.hvq, c.vregs + <size_t>i * FPSIMD_VREGS_BYTES)
    r.hw_fpsr = r.fpsr
    r.hw_fpcr = r.fpcr
    r.guest_bytes += guest_bytes(c, r)
    r.owner = FP_STATE_GUEST_OWNED

cdef void guest_save(Ctx *c, Py_ssize_t i) noexcept nogil:
    cdef FpVcpu *r = &c.r[i]
    cdef uint32_t mvq = mvq_of(c, r)
    if r.owner != FP_STATE_GUEST_OWNED:
        return
    if r.sve:
        r.zcr_el1 = r.hw_zcr_el1
        write_zcr(c, i, True, mvq - 1)
        copy_regs(c.sve_state + <size_t>i * SVE_STATE_MAX, mvq, hw_of(c, i), c.hvq, mvq)
    else:
        sve_to_fpsimd(c.vregs + <size_t>i * FPSIMD_VREGS_BYTES, hw_of(c, i), c.hvq)
    r.fpsr = r.hw_fpsr
    r.fpcr = r.hw_fpcr
    r.guest_bytes += guest_bytes(c, r)
    r.owner = FP_STATE_FREE

cdef void do_load(void *ctx, Py_ssize_t i) noexcept nogil:
    cdef Ctx *c = <Ctx *>ctx
    c.r[i].loaded = 1
    if c.policy == FP_POLICY_LAZY:
        host_save(c, i)

cdef void do_put(void *ctx, Py_ssize_t i) noexcept nogil:
    cdef Ctx *c = <Ctx *>ctx
    c.r[i].loaded = 0
    if c.policy == FP_POLICY_LAZY:
        guest_save(c, i)
        host_restore(c, i)

cdef void do_enter(void *ctx, Py_ssize_t i) noexcept nogil:
    cdef Ctx *c = <Ctx *>ctx
    if c.policy == FP_POLICY_EAGER:
        host_save(c, i)
        guest_restore(c, i)
    c.r[i].running = 1

cdef void do_exit(void *ctx, Py_ssize_t i) noexcept nogil:
    cdef Ctx *c = <Ctx *>ctx
    c.r[i].running = 0
    if c.policy == FP_POLICY_EAGER:
        guest_save(c, i)
        host_restore(c, i)


cdef class FpState:
    """Every vCPU's FPSIMD/SVE state and the modelled CPUs under them (see
    vgic/_pure/fpsimd.py for each method's rule)."""

    cdef Ctx c
    cdef readonly object records, vregs, sve_state, hw, host_state, host_vqs
    cdef readonly int hvq, policy
    cdef readonly bint host_sve

    def __init__(self, nr_vcpus, host_vqs, policy=FP_POLICY_LAZY, sve=False, host_sve=False):
        cdef Py_ssize_t n = int_arg(nr_vcpus, "nr_vcpus", 1, 1 << 24), i
        if self.c.n:
            raise TypeError("FpState is initialised once")
        vqs = sorted({int_arg(v, "host_vqs[]", 1, SVE_VQ_MAX) for v in host_vqs})
        if not vqs:
            raise ValueError("host_vqs must name at least one VQ")
        self.host_vqs = vqs
        self.hvq = max(vqs)
        self.policy = int_arg(policy, "policy", 0, 1)
        self.host_sve = bool(host_sve)
        recs = np.zeros(n, dtype=fpregs.FP_VCPU)
        self.vregs = np.zeros((n, FPSIMD_VREGS_BYTES), dtype=np.uint8)
        self.sve_state = np.zeros((n, SVE_STATE_MAX), dtype=np.uint8)
        self.hw = np.zeros((n, 546 * self.hvq), dtype=np.uint8)
        self.host_state = np.zeros((n, 546 * self.hvq), dtype=np.uint8)
        recs["sve"] = bool(sve)
        recs["vls"] = fpregs.vls_words(vqs)
        recs["max_vq"] = max(vqs) if sve else 1
        recs["hw_vq"] = self.hvq
        recs["hw_zcr_el2"] = self.hvq - 1
        recs["hw_zcr_el1"] = self.hvq - 1
        recs["owner"] = FP_STATE_HOST_OWNED
        recs["hw_fpsr"] = 0x08000000
        recs["hw_fpcr"] = 0x03000000
        pattern = (np.arange(self.hw.shape[1]) * 7 + 3) & 0xFF
        for i in range(n):
            self.hw[i] = (pattern + i) & 0xFF
        self.records = recs
        self.c.r = <FpVcpu *><size_t>recs.ctypes.data
        self.c.vregs = <uint8_t *><size_t>self.vregs.ctypes.data
        self.c.sve_state = <uint8_t *><size_t>self.sve_state.ctypes.data
        self.c.hw = <uint8_t *><size_t>self.hw.ctypes.data
        self.c.host_state = <uint8_t *><size_t>self.host_state.ctypes.data
        self.c.hvq = self.hvq
        self.c.policy = self.policy
        self.c.host_sve = self.host_sve
        self.c.supported = 0
        for v in vqs:
            self.c.supported |= 1u << (v - 1)
        self.c.n = n
        if not self.host_sve:
            for i in range(n):
                zero_fpsimd_view(hw_of(&self.c, i), self.c.hvq)

    cdef Py_ssize_t _i(self, object vcpu) except -1:
        return int_arg(vcpu, "vcpu", 0, self.c.n - 1)

    # ------------------------------------------------------- lifecycle
    def load(self, vcpu):
        do_load(&self.c, self._i(vcpu))

    def put(self, vcpu):
        do_put(&self.c, self._i(vcpu))

    def enter(self, vcpu):
        do_enter(&self.c, self._i(vcpu))

    def exit(self, vcpu):
        do_exit(&self.c, self._i(vcpu))

    cdef int _use(self, Py_ssize_t i, bint sve_only) except? -1:
        cdef FpVcpu *r = &self.c.r[i]
        if not r.running:
            raise ValueError(f"vcpu {i} is not running")
        if sve_only and not r.sve:
            return -errno.EPERM
        if r.owner != FP_STATE_GUEST_OWNED:
            r.traps += 1
            host_save(&self.c, i)
            guest_restore(&self.c, i)
        return 0

    cdef uint32_t _guest_vq(self, Py_ssize_t i):
        # The effective VQ the guest sees at its next access (after the trap
        # that loads its state, if it does not own the registers).
        cdef FpVcpu *r = &self.c.r[i]
        cdef FpVcpu probe
        if r.owner == FP_STATE_GUEST_OWNED or not r.sve:
            return r.hw_vq
        probe = r[0]
        probe.hw_zcr_el2 = mvq_of(&self.c, r) - 1
        probe.hw_zcr_el1 = r.zcr_el1 & ZCR_LEN_MASK
        return eff_vq(&self.c, &probe)

    cdef object _check_access(self, Py_ssize_t i, int k, object n, object value, bint write):
        # Every argument of a guest access checked before anything moves:
        # (n, value as an int or a uint8 array).
        cdef FpVcpu *r = &self.c.r[i]
        cdef Py_ssize_t size
        if not r.running:
            raise ValueError(f"vcpu {i} is not running")
        if k == FPREG_V or k == FPREG_Z:
            n = int_arg(n, "n", 0, 31)
        elif k == FPREG_P:
            n = int_arg(n, "n", 0, 15)
        if not write:
            return n, None
        if k == FPREG_FPSR or k == FPREG_FPCR or k == FPREG_ZCR:
            return n, int_arg(value, "value", 0, 0xFFFFFFFFFFFFFFFF)
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"register data must be bytes, not {type(value).__name__}")
        data = np.frombuffer(bytes(value), dtype=np.uint8)
        if k == FPREG_V:
            size = 16
        elif r.sve:
            size = (16 if k == FPREG_Z else 2) * self._guest_vq(i)
        else:
            size = data.shape[0]
        if data.shape[0] != size:
            raise ValueError(f"the register takes {size} bytes, not {data.shape[0]}")
        return n, data

    def host_task_state(self, vcpu):
        cdef Py_ssize_t i = self._i(vcpu)
        cdef FpVcpu *r = &self.c.r[i]
        cdef uint8_t[::1] v
        if r.owner == FP_STATE_HOST_OWNED:
            if self.c.host_sve:
                regs = bytes(self.hw[i])
            else:
                out = np.zeros(FPSIMD_VREGS_BYTES, dtype=np.uint8)
                v = out
                sve_to_fpsimd(&v[0], hw_of(&self.c, i), self.c.hvq)
                regs = bytes(out)
            return regs, r.hw_fpsr, r.hw_fpcr
        saved = self.host_state[i] if self.c.host_sve else self.host_state[i][:FPSIMD_VREGS_BYTES]
        return bytes(saved), r.host_fpsr, r.host_fpcr

    # -------------------------------------------------- the guest's view
    def guest_read(self, vcpu, kind, n=0):
        cdef Py_ssize_t i = self._i(vcpu)
        cdef int k = int_arg(kind, "kind", 0, FPREG_ZCR)
        cdef FpVcpu *r = &self.c.r[i]
        cdef uint8_t *hw
        cdef uint32_t vq, m = 0
        n, _ = self._check_access(i, k, n, None, False)
        if k == FPREG_V or k == FPREG_Z or k == FPREG_P:
            m = n
        if self._use(i, k == FPREG_Z or k == FPREG_P or k == FPREG_FFR or k == FPREG_ZCR):
            return None
        if k == FPREG_FPSR:
            return r.hw_fpsr
        if k == FPREG_FPCR:
            return r.hw_fpcr
        if k == FPREG_ZCR:
            return r.hw_zcr_el1
        hw = hw_of(&self.c, i)
        vq = r.hw_vq if r.hw_vq <= self.c.hvq else self.c.hvq
        if k == FPREG_V:
            return (<char *>hw + zoff(self.c.hvq, m))[:16]
        if k == FPREG_Z:
            return (<char *>hw + zoff(self.c.hvq, m))[:16 * vq]
        if k == FPREG_P:
            return (<char *>hw + poff(self.c.hvq, m))[:2 * vq]
        return (<char *>hw + ffroff(self.c.hvq))[:2 * vq]

    def guest_write(self, vcpu, kind, n, value):
        cdef Py_ssize_t i = self._i(vcpu)
        cdef int k = int_arg(kind, "kind", 0, FPREG_ZCR)
        cdef FpVcpu *r = &self.c.r[i]
        cdef uint64_t x = 0
        cdef uint8_t *hw
        cdef uint32_t vq, m = 0, size
        cdef const uint8_t[::1] data
        cdef int err
        n, checked = self._check_access(i, k, n, value, True)
        if k == FPREG_FPSR or k == FPREG_FPCR or k == FPREG_ZCR:
            x = checked
        else:
            data = checked
        if k == FPREG_V or k == FPREG_Z or k == FPREG_P:
            m = n
        err = self._use(i, k == FPREG_Z or k == FPREG_P or k == FPREG_FFR or k == FPREG_ZCR)
        if err:
            return err
        if k == FPREG_FPSR:
            r.hw_fpsr = <uint32_t>x
            return 0
        if k == FPREG_FPCR:
            r.hw_fpcr = <uint32_t>x
            return 0
        if k == FPREG_ZCR:
            r.hw_zcr_el1 = x & ZCR_LEN_MASK         # the guest's own write: not counted
            apply_vl(&self.c, i)
            return 0
        hw = hw_of(&self.c, i)
        vq = r.hw_vq if r.hw_vq <= self.c.hvq else self.c.hvq
        if k == FPREG_V:
            memset(hw + zoff(self.c.hvq, m), 0, 16 * self.c.hvq)
            memcpy(hw + zoff(self.c.hvq, m), &data[0], 16)
            return 0
        if k == FPREG_Z:
            hw = hw + zoff(self.c.hvq, m)
            size = 16 * vq
        else:
            if k == FPREG_P:
                hw = hw + poff(self.c.hvq, m)
            else:
                hw = hw + ffroff(self.c.hvq)
            size = 2 * vq
        if <uint32_t>data.shape[0] != size:        # (checked above; the VL cannot have moved)
            raise ValueError(f"the register takes {size} bytes at VQ {vq}, not {data.shape[0]}")
        if size:
            memcpy(hw, &data[0], size)
        return 0

    # ------------------------------------------------------- userspace
    def sync_out(self, vcpu):
        cdef Py_ssize_t i = self._i(vcpu)
        if self.c.r[i].owner == FP_STATE_GUEST_OWNED and not self.c.r[i].running:
            guest_save(&self.c, i)

    def finalize(self, vcpu, feature):
        cdef Py_ssize_t i = self._i(vcpu)
        cdef FpVcpu *r = &self.c.r[i]
        cdef uint32_t mx
        if int_arg(feature, "feature", -(1 << 31), (1 << 31) - 1) != KVM_ARM_VCPU_SVE or not r.sve:
            return -errno.EINVAL
        if r.finalized:
            return -errno.EPERM
        mx = vls_max_vq(r.vls)
        if mx == 0 or mx > self.c.hvq:
            return -errno.EINVAL
        r.max_vq = <uint16_t>mx
        memset(self.c.sve_state + <size_t>i * SVE_STATE_MAX, 0, SVE_STATE_MAX)
        r.finalized = 1
        return 0

    def set_vls(self, vcpu, words):
        cdef Py_ssize_t i = self._i(vcpu)
        cdef FpVcpu *r = &self.c.r[i]
        cdef int k
        if not r.sve:
            return -errno.ENOENT
        if r.finalized:
            return -errno.EPERM
        w = np.asarray(words)
        if w.shape != (8,) or (w.dtype.kind not in "iu" and w.dtype.kind != "O"):
            raise TypeError("the VLS is 8 integer words")
        vqs = fpregs.vls_set(np.array([int_arg(x, f"vls[{k}]", 0, 0xFFFFFFFFFFFFFFFF)
                                       for k, x in enumerate(w.tolist())], dtype=np.uint64))
        if not vqs or max(vqs) > SVE_VQ_MAX:
            return -errno.EINVAL
        host = set(self.host_vqs)
        for vq in range(1, max(vqs) + 1):
            if (vq in vqs) != (vq in host):
                return -errno.EINVAL
        w = fpregs.vls_words(vqs)
        for k in range(8):
            r.vls[k] = int(w[k])
        return 0

    def reset(self, vcpu):
        cdef Py_ssize_t i = self._i(vcpu)
        cdef FpVcpu *r = &self.c.r[i]
        self.sync_out(i)
        memset(self.c.vregs + <size_t>i * FPSIMD_VREGS_BYTES, 0, FPSIMD_VREGS_BYTES)
        memset(self.c.sve_state + <size_t>i * SVE_STATE_MAX, 0, SVE_STATE_MAX)
        r.fpsr = 0
        r.fpcr = 0
        r.zcr_el1 = 0

    # ------------------------------------------------------ batch forms
    def load_batch(self, ids):
        cdef const int64_t[::1] v = vcpu_indices(ids, self.c.n)
        with nogil:
            run_steps(do_load, &self.c, v)

    def put_batch(self, ids):
        cdef const int64_t[::1] v = vcpu_indices(ids, self.c.n)
        with nogil:
            run_steps(do_put, &self.c, v)

    def enter_batch(self, ids):
        cdef const int64_t[::1] v = vcpu_indices(ids, self.c.n)
        with nogil:
            run_steps(do_enter, &self.c, v)

    def exit_batch(self, ids):
        cdef const int64_t[::1] v = vcpu_indices(ids, self.c.n)
        with nogil:
            run_steps(do_exit, &self.c, v)


# ------------------------------------------------------- batch kernels
cdef object real(object a):
    # The real array behind an ndarray subclass (which could fake its
    # dtype, shape or flags); anything else as it is, to be refused.
    return np.asarray(a) if isinstance(a, np.ndarray) else a


cdef uint8_t *rows(object a, Py_ssize_t need, str name, bint write) except NULL:
    if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.ndim != 2 or not a.flags.c_contiguous:
        raise TypeError(f"{name} must be a C-contiguous 2-D uint8 array")
    if a.shape[1] < need:
        raise ValueError(f"{name} rows hold {a.shape[1]} bytes, {need} needed")
    if write and not a.flags.writeable:
        raise ValueError(f"{name} is read-only")
    return <uint8_t *><size_t>a.ctypes.data


def copy_batch(dst, dst_vq, src, src_vq, vq, ids):
    """Copy the register file at vector length ``vq`` from rows of ``src``
    (payloads at ``src_vq``) to the same rows of ``dst`` (payloads at
    ``dst_vq``), for each row index in ``ids``, zeroing what lies above vq."""
    cdef uint32_t dvq = int_arg(dst_vq, "dst_vq", 1, SVE_VQ_MAX)
    cdef uint32_t svq = int_arg(src_vq, "src_vq", 1, SVE_VQ_MAX)
    cdef uint32_t q = int_arg(vq, "vq", 1, SVE_VQ_MAX)
    if q > dvq or q > svq:
        raise ValueError(f"vq {q} exceeds a payload's VQ ({dvq}, {svq})")
    dst, src = real(dst), real(src)
    cdef uint8_t *d = rows(dst, 546 * dvq, "dst", True)
    cdef uint8_t *s = rows(src, 546 * svq, "src", False)
    cdef size_t dstride = dst.shape[1], sstride = src.shape[1]
    cdef const int64_t[::1] v = vcpu_indices(ids, min(dst.shape[0], src.shape[0]))
    cdef Py_ssize_t k
    with nogil:
        for k in range(v.shape[0]):
            copy_regs(d + v[k] * dstride, dvq, s + v[k] * sstride, svq, q)


def fpsimd_to_sve_batch(dst, vq, vregs, ids):
    """Zn = Vn zero-extended, P and FFR zero, for each row in ``ids``."""
    cdef uint32_t q = int_arg(vq, "vq", 1, SVE_VQ_MAX)
    dst, vregs = real(dst), real(vregs)
    cdef uint8_t *d = rows(dst, 546 * q, "dst", True)
    cdef uint8_t *s = rows(vregs, FPSIMD_VREGS_BYTES, "vregs", False)
    cdef size_t dstride = dst.shape[1], sstride = vregs.shape[1]
    cdef const int64_t[::1] v = vcpu_indices(ids, min(dst.shape[0], vregs.shape[0]))
    cdef Py_ssize_t k
    with nogil:
        for k in range(v.shape[0]):
            fpsimd_to_sve(d + v[k] * dstride, q, s + v[k] * sstride)


def sve_to_fpsimd_batch(vregs, src, vq, ids):
    """Vn = the low 128 bits of Zn, for each row in ``ids``."""
    cdef uint32_t q = int_arg(vq, "vq", 1, SVE_VQ_MAX)
    vregs, src = real(vregs), real(src)
    cdef uint8_t *d = rows(vregs, FPSIMD_VREGS_BYTES, "vregs", True)
    cdef uint8_t *s = rows(src, 546 * q, "src", False)
    cdef size_t dstride = vregs.shape[1], sstride = src.shape[1]
    cdef const int64_t[::1] v = vcpu_indices(ids, min(vregs.shape[0], src.shape[0]))
    cdef Py_ssize_t k
    with nogil:
        for k in range(v.shape[0]):
            sve_to_fpsimd(d + v[k] * dstride, s + v[k] * sstride, q)


def memcpy_baseline(dst, src):
    """One memcpy of ``src``'s bytes into ``dst`` (the batch benchmark's
    baseline)."""
    dst, src = real(dst), real(src)
    for name, a in (("dst", dst), ("src", src)):
        if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or not a.flags.c_contiguous:
            raise TypeError(f"{name} must be a C-contiguous uint8 array")
    if not dst.flags.writeable:
        raise ValueError("dst is read-only")
    if dst.size < src.size:
        raise ValueError("dst is smaller than src")
    if src.size == 0:
        return
    cdef const uint8_t[::1] s = src.reshape(-1)
    cdef uint8_t[::1] d = dst.reshape(-1)
    with nogil:
        memcpy(&d[0], &s[0], s.shape[0])
