"""FPSIMD/SVE state and its context switch: the pure-Python twin of
``vgic._core.fpsimd``.

Every vCPU has KVM's copy of its registers - ``vregs`` (V0-V31) for an
FPSIMD-only vCPU, ``sve_state`` (the ``sve_context`` payload at the vCPU's
maximum VQ) for an SVE one - plus FPSR, FPCR and ZCR_EL1 in its record.
Under each vCPU is a modelled physical CPU: ``hw`` is its register file (the
payload layout at the host's largest VQ; Vn is the low 128 bits of Zn) with
FPSR, FPCR, ZCR_EL1 and ZCR_EL2, and ``host_state`` the host task's own FP
state saved in memory while KVM has the registers.

Policies (``docs/sve-facts.md``): ``lazy`` (KVM since v4.17, with the 2025
fixes): vcpu_load saves the host's state and frees the registers; the
guest's first FP/SVE use after that traps and loads the guest's state, which
stays bound across entries until vcpu_put saves it and the host's comes back.
``eager``: the host's state out and the guest's in at every entry, the reverse
at every exit.  Both count the bytes they move (guest and host) and the traps.

Architectural zeroing: an FPSIMD view written into the SVE file zeroes each
Zn above 128 bits and the P registers and FFR; loading a vector length's
state zeroes what lies above it; shrinking the effective vector length
(ZCR_EL1.LEN) zeroes what becomes inaccessible, so it reads as zero when the
length grows back.
"""
from __future__ import annotations

import errno
from typing import Any

import numpy as np

from .. import fpregs as F
from ..ich import check_int, vcpu_indices
from ._batch import BatchSteps

# Guest register kinds of guest_read / guest_write.
FPREG_V, FPREG_Z, FPREG_P, FPREG_FFR, FPREG_FPSR, FPREG_FPCR, FPREG_ZCR = range(7)


def _layout(vq: int) -> tuple[list[slice], list[slice], slice]:
    z = [slice(F.zreg_offset(vq, n), F.zreg_offset(vq, n) + 16 * vq) for n in range(F.NR_ZREGS)]
    p = [slice(F.preg_offset(vq, n), F.preg_offset(vq, n) + 2 * vq) for n in range(F.NR_PREGS)]
    return z, p, slice(F.ffr_offset(vq), F.ffr_offset(vq) + 2 * vq)


def copy_regs(dst: np.ndarray, dst_vq: int, src: np.ndarray, src_vq: int, vq: int) -> None:
    """Copy the register file at vector length ``vq`` from ``src`` (payload
    at ``src_vq``) to ``dst`` (payload at ``dst_vq``), zeroing what lies in
    ``dst`` above ``vq`` in each register."""
    if dst_vq == src_vq == vq:
        dst[:F.regs_size(vq)] = src[:F.regs_size(vq)]
        return
    dz, dp, dffr = _layout(dst_vq)
    sz, sp, sffr = _layout(src_vq)
    for d, s in zip(dz, sz):
        dst[d.start:d.start + 16 * vq] = src[s.start:s.start + 16 * vq]
        dst[d.start + 16 * vq:d.stop] = 0
    for d, s in zip(dp + [dffr], sp + [sffr]):
        dst[d.start:d.start + 2 * vq] = src[s.start:s.start + 2 * vq]
        dst[d.start + 2 * vq:d.stop] = 0


def fpsimd_to_sve(dst: np.ndarray, vq: int, vregs: np.ndarray) -> None:
    """The FPSIMD view into a payload at ``vq``: Zn = Vn zero-extended, P and
    FFR zero (Linux's sve_sync_from_fpsimd_zeropad)."""
    dst[:F.regs_size(vq)] = 0
    for n in range(F.NR_ZREGS):
        o = F.zreg_offset(vq, n)
        dst[o:o + 16] = vregs[16 * n:16 * n + 16]


def sve_to_fpsimd(vregs: np.ndarray, src: np.ndarray, vq: int) -> None:
    """Vn = the low 128 bits of Zn."""
    for n in range(F.NR_ZREGS):
        o = F.zreg_offset(vq, n)
        vregs[16 * n:16 * n + 16] = src[o:o + 16]


class FpState(BatchSteps):
    """Every vCPU's FPSIMD/SVE state and the modelled CPUs under them."""

    def __init__(self, nr_vcpus: int, host_vqs: Any, policy: int = F.FP_POLICY_LAZY, sve: bool = False,
                 host_sve: bool = False) -> None:
        n = check_int("nr_vcpus", nr_vcpus, 1, 1 << 24)
        vqs = sorted({check_int("host_vqs[]", v, 1, F.SVE_VQ_MAX) for v in host_vqs})
        if not vqs:
            raise ValueError("host_vqs must name at least one VQ")
        self.host_vqs = vqs
        self.hvq = vqs[-1]
        self.policy = check_int("policy", policy, 0, 1)
        self.host_sve = bool(host_sve)
        self.records = np.zeros(n, dtype=F.FP_VCPU)
        self.vregs = np.zeros((n, F.FPSIMD_VREGS_BYTES), dtype=np.uint8)
        self.sve_state = np.zeros((n, F.SVE_STATE_MAX), dtype=np.uint8)
        self.hw = np.zeros((n, F.regs_size(self.hvq)), dtype=np.uint8)
        self.host_state = np.zeros((n, F.regs_size(self.hvq)), dtype=np.uint8)
        r = self.records
        r["sve"] = bool(sve)
        r["vls"] = F.vls_words(vqs)
        r["max_vq"] = vqs[-1] if sve else 1
        r["hw_vq"] = self.hvq
        r["hw_zcr_el2"] = self.hvq - 1
        r["hw_zcr_el1"] = self.hvq - 1
        r["owner"] = F.FP_STATE_HOST_OWNED
        # The host task's state, live in the registers: a recognisable pattern.
        pattern = (np.arange(self.hw.shape[1]) * 7 + 3) & 0xFF
        for i in range(n):
            self.hw[i] = (pattern + i) & 0xFF
            if not self.host_sve:
                self._zero_fpsimd_view(i)
        r["hw_fpsr"] = 0x08000000
        r["hw_fpcr"] = 0x03000000

    # ------------------------------------------------------------ helpers
    def _i(self, vcpu: Any) -> int:
        return check_int("vcpu", vcpu, 0, len(self.records) - 1)

    def _zero_above(self, i: int, vq: int) -> None:
        """What lies above ``vq`` in each register of CPU ``i`` reads zero."""
        vq = min(vq, self.hvq)
        z, p, ffr = _layout(self.hvq)
        hw = self.hw[i]
        for s in z:
            hw[s.start + 16 * vq:s.stop] = 0
        for s in p + [ffr]:
            hw[s.start + 2 * vq:s.stop] = 0

    def _zero_fpsimd_view(self, i: int) -> None:
        """FPSIMD registers loaded: Zn above 128 bits, P and FFR zero."""
        self._zero_above(i, 1)
        _, p, ffr = _layout(self.hvq)
        for s in p + [ffr]:
            self.hw[i][s] = 0

    def _write_zcr(self, i: int, field: str, value: int) -> None:
        """sve_cond_update_zcr_vq: written (and counted) only if it changes."""
        r = self.records[i]
        if int(r[field]) != value:
            r[field] = value
            r["zcr_writes"] += 1
        self._apply_vl(i)

    def _vq(self, i: int) -> int:
        r = self.records[i]
        return F.effective_vq([int(r["hw_zcr_el2"]) & F.ZCR_LEN_MASK, int(r["hw_zcr_el1"]) & F.ZCR_LEN_MASK],
                              self.host_vqs)

    def _apply_vl(self, i: int) -> None:
        r = self.records[i]
        vq = self._vq(i)
        if vq < min(int(r["hw_vq"]), self.hvq):
            self._zero_above(i, vq)
        r["hw_vq"] = vq

    # ------------------------------------------------------- state moves
    def _host_bytes(self) -> int:
        return (F.regs_size(self.hvq) if self.host_sve else F.FPSIMD_VREGS_BYTES) + 8

    def _guest_bytes(self, i: int) -> int:
        r = self.records[i]
        return (F.regs_size(self._mvq(r)) if r["sve"] else F.FPSIMD_VREGS_BYTES) + 8

    def _host_save(self, i: int) -> None:
        """fpsimd_save_and_flush_cpu_state() of the host task's state."""
        r = self.records[i]
        if r["owner"] != F.FP_STATE_HOST_OWNED:
            return
        if self.host_sve:
            self.host_state[i] = self.hw[i]
        else:
            sve_to_fpsimd(self.host_state[i][:F.FPSIMD_VREGS_BYTES], self.hw[i], self.hvq)
        r["host_fpsr"], r["host_fpcr"] = r["hw_fpsr"], r["hw_fpcr"]
        r["host_bytes"] += self._host_bytes()
        r["owner"] = F.FP_STATE_FREE

    def _host_restore(self, i: int) -> None:
        """The host task's state back in the registers (its return to
        userspace, TIF_FOREIGN_FPSTATE)."""
        r = self.records[i]
        if r["owner"] == F.FP_STATE_HOST_OWNED:
            return
        self.records[i]["hw_zcr_el2"] = self.hvq - 1
        self.records[i]["hw_zcr_el1"] = self.hvq - 1
        r["hw_vq"] = self.hvq
        if self.host_sve:
            self.hw[i] = self.host_state[i]
        else:
            fpsimd_to_sve(self.hw[i], self.hvq, self.host_state[i][:F.FPSIMD_VREGS_BYTES])
        r["hw_fpsr"], r["hw_fpcr"] = r["host_fpsr"], r["host_fpcr"]
        r["host_bytes"] += self._host_bytes()
        r["owner"] = F.FP_STATE_HOST_OWNED

    def _guest_restore(self, i: int) -> None:
        """The guest's state into the registers (kvm_hyp_handle_fpsimd):
        SVE at the vCPU's maximum VL under ZCR_EL2, then its ZCR_EL1; or
        the FPSIMD registers."""
        r = self.records[i]
        if r["sve"]:
            mvq = self._mvq(r)
            self._write_zcr(i, "hw_zcr_el2", mvq - 1)
            copy_regs(self.hw[i], self.hvq, self.sve_state[i], mvq, mvq)
            self._write_zcr(i, "hw_zcr_el1", int(r["zcr_el1"]) & F.ZCR_LEN_MASK)
        else:
            fpsimd_to_sve(self.hw[i], self.hvq, self.vregs[i])
        r["hw_fpsr"], r["hw_fpcr"] = r["fpsr"], r["fpcr"]
        r["guest_bytes"] += self._guest_bytes(i)
        r["owner"] = F.FP_STATE_GUEST_OWNED

    def _guest_save(self, i: int) -> None:
        """The guest's registers into KVM's copy: ZCR_EL1 read, ZCR_EL2 at
        the vCPU's maximum VL, the payload at that VL; or the V registers."""
        r = self.records[i]
        if r["owner"] != F.FP_STATE_GUEST_OWNED:
            return
        if r["sve"]:
            mvq = self._mvq(r)
            r["zcr_el1"] = r["hw_zcr_el1"]
            self._write_zcr(i, "hw_zcr_el2", mvq - 1)
            copy_regs(self.sve_state[i], mvq, self.hw[i], self.hvq, mvq)
        else:
            sve_to_fpsimd(self.vregs[i], self.hw[i], self.hvq)
        r["fpsr"], r["fpcr"] = r["hw_fpsr"], r["hw_fpcr"]
        r["guest_bytes"] += self._guest_bytes(i)
        r["owner"] = F.FP_STATE_FREE

    # ----------------------------------------------------- the lifecycle
    def load(self, vcpu: Any) -> None:
        """vcpu_load: (lazy) the host's state saved, the registers free."""
        i = self._i(vcpu)
        self.records[i]["loaded"] = True
        if self.policy == F.FP_POLICY_LAZY:
            self._host_save(i)

    def put(self, vcpu: Any) -> None:
        """vcpu_put: (lazy) a guest-owned state saved; the host's comes back."""
        i = self._i(vcpu)
        self.records[i]["loaded"] = False
        if self.policy == F.FP_POLICY_LAZY:
            self._guest_save(i)
            self._host_restore(i)

    def enter(self, vcpu: Any) -> None:
        """Guest entry: (eager) the host's state out, the guest's in; (lazy)
        nothing moves - a guest that does not own the registers traps on
        its first FP/SVE use."""
        i = self._i(vcpu)
        if self.policy == F.FP_POLICY_EAGER:
            self._host_save(i)
            self._guest_restore(i)
        self.records[i]["running"] = True

    def exit(self, vcpu: Any) -> None:
        """Guest exit: (eager) the guest's state out, the host's in."""
        i = self._i(vcpu)
        self.records[i]["running"] = False
        if self.policy == F.FP_POLICY_EAGER:
            self._guest_save(i)
            self._host_restore(i)

    def _mvq(self, r: Any) -> int:
        # The vCPU's maximum VQ as the kernels use it: within 1..the host's
        # (the record is a public array; a bad value must not reach a copy).
        return min(max(int(r["max_vq"]), 1), self.hvq)

    def _guest_vq(self, i: int) -> int:
        """The effective VQ the guest will see at its next access (after
        the trap that loads its state, if it does not own the registers)."""
        r = self.records[i]
        if r["owner"] == F.FP_STATE_GUEST_OWNED or not r["sve"]:
            return int(r["hw_vq"])
        return F.effective_vq([self._mvq(r) - 1, int(r["zcr_el1"]) & F.ZCR_LEN_MASK], self.host_vqs)

    def _check_access(self, i: int, kind: int, n: Any, value: Any, write: bool) -> tuple[int, Any]:
        """Every argument of a guest access checked before anything moves."""
        if not self.records[i]["running"]:
            raise ValueError(f"vcpu {i} is not running")
        if kind in (FPREG_V, FPREG_Z):
            n = check_int("n", n, 0, 31)
        elif kind == FPREG_P:
            n = check_int("n", n, 0, 15)
        if not write:
            return n, None
        if kind in (FPREG_FPSR, FPREG_FPCR, FPREG_ZCR):
            return n, check_int("value", value, 0, F.U64)
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"register data must be bytes, not {type(value).__name__}")
        data = np.frombuffer(bytes(value), dtype=np.uint8)
        if kind == FPREG_V:
            size = 16
        elif self.records[i]["sve"]:
            size = (16 if kind == FPREG_Z else 2) * self._guest_vq(i)
        else:
            size = data.size                    # UNDEFINED anyway
        if data.size != size:
            raise ValueError(f"the register takes {size} bytes, not {data.size}")
        return n, data

    def _use(self, i: int, sve_only: bool) -> int:
        r = self.records[i]
        if not r["running"]:
            raise ValueError(f"vcpu {i} is not running")
        if sve_only and not r["sve"]:
            return -errno.EPERM                 # UNDEF: no SVE for this vCPU
        if r["owner"] != F.FP_STATE_GUEST_OWNED:
            # The FP/SVE trap (CPTR_EL2): the host's state is out since
            # vcpu_load (lazy); the guest's comes in.
            r["traps"] += 1
            self._host_save(i)
            self._guest_restore(i)
        return 0

    # -------------------------------------------------- the guest's view
    def guest_read(self, vcpu: Any, kind: Any, n: Any = 0) -> Any:
        """A guest read of a register (``FPREG_*`` kind, number ``n``) on a
        running vCPU: bytes for V (16), Z (VL), P and FFR (VL / 8); an int
        for FPSR, FPCR, ZCR_EL1.  None: UNDEFINED (SVE on a non-SVE vCPU)."""
        i = self._i(vcpu)
        kind = check_int("kind", kind, 0, FPREG_ZCR)
        n, _ = self._check_access(i, kind, n, None, False)
        if self._use(i, kind in (FPREG_Z, FPREG_P, FPREG_FFR, FPREG_ZCR)):
            return None
        r = self.records[i]
        if kind == FPREG_FPSR:
            return int(r["hw_fpsr"])
        if kind == FPREG_FPCR:
            return int(r["hw_fpcr"])
        if kind == FPREG_ZCR:
            return int(r["hw_zcr_el1"])
        vq = int(r["hw_vq"])
        z, p, ffr = _layout(self.hvq)
        if kind == FPREG_V:
            return bytes(self.hw[i][z[n].start:z[n].start + 16])
        if kind == FPREG_Z:
            return bytes(self.hw[i][z[n].start:z[n].start + 16 * vq])
        s = p[n] if kind == FPREG_P else ffr
        return bytes(self.hw[i][s.start:s.start + 2 * vq])

    def guest_write(self, vcpu: Any, kind: Any, n: Any, value: Any) -> int:
        """A guest write; 0, or -EPERM for an UNDEFINED SVE access.  V
        writes zero the rest of Zn (an FPSIMD write); Z/P/FFR values are
        the effective VL's bytes; ZCR_EL1 keeps LEN."""
        i = self._i(vcpu)
        kind = check_int("kind", kind, 0, FPREG_ZCR)
        r = self.records[i]
        n, value = self._check_access(i, kind, n, value, True)
        err = self._use(i, kind in (FPREG_Z, FPREG_P, FPREG_FFR, FPREG_ZCR))
        if err:
            return err
        if kind == FPREG_FPSR:
            r["hw_fpsr"] = value & 0xFFFFFFFF
            return 0
        if kind == FPREG_FPCR:
            r["hw_fpcr"] = value & 0xFFFFFFFF
            return 0
        if kind == FPREG_ZCR:
            # The guest's own write: not one of KVM's (zcr_writes).
            r["hw_zcr_el1"] = value & F.ZCR_LEN_MASK
            self._apply_vl(i)
            return 0
        vq = int(r["hw_vq"])
        z, p, ffr = _layout(self.hvq)
        data = value
        if kind == FPREG_V:
            self.hw[i][z[n]] = 0
            self.hw[i][z[n].start:z[n].start + 16] = data
            return 0
        if kind == FPREG_Z:
            s, size = z[n], 16 * vq
        else:
            s, size = (p[n] if kind == FPREG_P else ffr), 2 * vq
        self.hw[i][s.start:s.start + size] = data
        return 0

    def host_task_state(self, vcpu: Any) -> tuple[bytes, int, int]:
        """The host task's FP state as the host would see it now (the live
        registers if it owns them, else its saved copy): the payload at the
        host's VQ (SVE host) or V0..V31, and FPSR, FPCR."""
        i = self._i(vcpu)
        r = self.records[i]
        if r["owner"] == F.FP_STATE_HOST_OWNED:
            if self.host_sve:
                regs = bytes(self.hw[i])
            else:
                v = np.zeros(F.FPSIMD_VREGS_BYTES, dtype=np.uint8)
                sve_to_fpsimd(v, self.hw[i], self.hvq)
                regs = bytes(v)
            return regs, int(r["hw_fpsr"]), int(r["hw_fpcr"])
        saved = self.host_state[i] if self.host_sve else self.host_state[i][:F.FPSIMD_VREGS_BYTES]
        return bytes(saved), int(r["host_fpsr"]), int(r["host_fpcr"])

    # ------------------------------------------------------- userspace
    def sync_out(self, vcpu: Any) -> None:
        """Userspace reaches KVM's copy: a guest-owned state is saved first
        (KVM's ioctls find the vCPU put); the next use traps it back in."""
        i = self._i(vcpu)
        if self.records[i]["owner"] == F.FP_STATE_GUEST_OWNED and not self.records[i]["running"]:
            self._guest_save(i)

    def finalize(self, vcpu: Any, feature: Any) -> int:
        """KVM_ARM_VCPU_FINALIZE: 0 or -errno."""
        i = self._i(vcpu)
        r = self.records[i]
        if check_int("feature", feature, -(1 << 31), (1 << 31) - 1) != F.KVM_ARM_VCPU_SVE or not r["sve"]:
            return -errno.EINVAL
        if r["finalized"]:
            return -errno.EPERM
        vqs = F.vls_set(r["vls"])
        if not vqs or max(vqs) > self.hvq:
            return -errno.EINVAL
        r["max_vq"] = max(vqs)
        self.sve_state[i] = 0
        r["finalized"] = True
        return 0

    def set_vls(self, vcpu: Any, words: Any) -> int:
        """KVM_SET_ONE_REG of KVM_REG_ARM64_SVE_VLS: 0 or -errno."""
        i = self._i(vcpu)
        r = self.records[i]
        if not r["sve"]:
            return -errno.ENOENT
        if r["finalized"]:
            return -errno.EPERM
        vqs = F.vls_set(_vls_words_arg(words))
        if not vqs or vqs[-1] > F.SVE_VQ_MAX:
            return -errno.EINVAL
        host = set(self.host_vqs)
        if any((vq in vqs) != (vq in host) for vq in range(1, vqs[-1] + 1)):
            return -errno.EINVAL
        r["vls"] = F.vls_words(vqs)
        return 0

    def reset(self, vcpu: Any) -> None:
        """vCPU reset: KVM's copy zeroed (registers, FPSR, FPCR, ZCR_EL1)."""
        i = self._i(vcpu)
        self.sync_out(i)
        r = self.records[i]
        self.vregs[i] = 0
        self.sve_state[i] = 0
        r["fpsr"] = r["fpcr"] = 0
        r["zcr_el1"] = 0

    # ------------------------------------------------------ batch forms


def _vls_words_arg(words: Any) -> np.ndarray:
    """SVE_VLS as 8 unsigned 64-bit words (TypeError/ValueError otherwise)."""
    w = np.asarray(words)
    if w.shape != (8,) or (w.dtype.kind not in "iu" and w.dtype.kind != "O"):
        raise TypeError("the VLS is 8 integer words")
    vals = [check_int(f"vls[{k}]", x, 0, F.U64) for k, x in enumerate(w.tolist())]
    return np.array(vals, dtype=np.uint64)


def copy_batch(dst: np.ndarray, dst_vq: int, src: np.ndarray, src_vq: int, vq: int, ids: Any) -> None:
    """:func:`copy_regs` for rows ``ids`` of two 2-D uint8 arrays of payloads."""
    dst, src = _real(dst), _real(src)
    dst_vq, src_vq, vq = _check_batch(dst, dst_vq, src, src_vq, vq)
    for i in vcpu_indices(ids, min(dst.shape[0], src.shape[0])).tolist():
        copy_regs(dst[i], dst_vq, src[i], src_vq, vq)


def fpsimd_to_sve_batch(dst: np.ndarray, vq: int, vregs: np.ndarray, ids: Any) -> None:
    """:func:`fpsimd_to_sve` for rows ``ids``."""
    vq = check_int("vq", vq, 1, F.SVE_VQ_MAX)
    dst, vregs = _real(dst), _real(vregs)
    _check_rows(dst, F.regs_size(vq), "dst", True)
    _check_rows(vregs, F.FPSIMD_VREGS_BYTES, "vregs")
    for i in vcpu_indices(ids, min(dst.shape[0], vregs.shape[0])).tolist():
        fpsimd_to_sve(dst[i], vq, vregs[i])


def sve_to_fpsimd_batch(vregs: np.ndarray, src: np.ndarray, vq: int, ids: Any) -> None:
    """:func:`sve_to_fpsimd` for rows ``ids``."""
    vq = check_int("vq", vq, 1, F.SVE_VQ_MAX)
    vregs, src = _real(vregs), _real(src)
    _check_rows(vregs, F.FPSIMD_VREGS_BYTES, "vregs", True)
    _check_rows(src, F.regs_size(vq), "src")
    for i in vcpu_indices(ids, min(src.shape[0], vregs.shape[0])).tolist():
        sve_to_fpsimd(vregs[i], src[i], vq)


def _real(a: Any) -> Any:
    """The real array behind an ndarray subclass; anything else as it is."""
    return np.asarray(a) if isinstance(a, np.ndarray) else a


def _check_rows(a: Any, need: int, name: str, write: bool = False) -> None:
    if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.ndim != 2 or not a.flags.c_contiguous:
        raise TypeError(f"{name} must be a C-contiguous 2-D uint8 array")
    if a.shape[1] < need:
        raise ValueError(f"{name} rows hold {a.shape[1]} bytes, {need} needed")
    if write and not a.flags.writeable:
        raise ValueError(f"{name} is read-only")


def _check_batch(dst: Any, dst_vq: Any, src: Any, src_vq: Any, vq: Any) -> tuple[int, int, int]:
    dst_vq, src_vq, vq = (check_int(name, v, 1, F.SVE_VQ_MAX)
                          for name, v in (("dst_vq", dst_vq), ("src_vq", src_vq), ("vq", vq)))
    if vq > min(dst_vq, src_vq):
        raise ValueError(f"vq {vq} exceeds a payload's VQ ({dst_vq}, {src_vq})")
    _check_rows(dst, F.regs_size(dst_vq), "dst", True)
    _check_rows(src, F.regs_size(src_vq), "src")
    return dst_vq, src_vq, vq


def memcpy_baseline(dst: np.ndarray, src: np.ndarray) -> None:
    """One copy of ``src``'s bytes into ``dst`` (the batch benchmark's baseline)."""
    dst, src = _real(dst), _real(src)
    for name, a in (("dst", dst), ("src", src)):
        if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or not a.flags.c_contiguous:
            raise TypeError(f"{name} must be a C-contiguous uint8 array")
    if not dst.flags.writeable:
        raise ValueError("dst is read-only")
    if dst.size < src.size:
        raise ValueError("dst is smaller than src")
    dst.reshape(-1)[:src.size] = src.reshape(-1)
