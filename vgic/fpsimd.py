"""The FPSIMD/SVE part: every vCPU's floating-point and SVE registers, KVM's
one-reg and finalize ABI for them, and their context switch against a
modelled physical CPU (``docs/sve-facts.md``; :mod:`vgic.fpregs`).

A VM's vCPUs have the SVE feature when it is built with ``sve=True``
(KVM_ARM_VCPU_INIT with KVM_ARM_VCPU_SVE); ``sve_vqs`` is the host's set of
supported vector lengths (VQs, default 1..16).  An SVE vCPU's vector lengths
(KVM_REG_ARM64_SVE_VLS) may be chosen until ``vcpu.finalize(KVM_ARM_VCPU_SVE)``
sizes its state; before that its Z/P/FFR registers, KVM_RUN and
KVM_GET_REG_LIST are -EPERM.  The guest's FP/SVE use goes through
``vcpu.fp`` (V, Z, P, FFR reads and writes) and the ZCR_EL1/FPSR/FPCR rows of
the system-register table.

``VM(fp_policy=...)``: ``"lazy"`` (KVM's: the host's state saved at
vcpu_load, the guest's loaded at its first FP/SVE use, kept until vcpu_put)
or ``"eager"`` (saved and restored at every entry and exit).  Both count the
bytes they move and the traps; the host task's own state (``host_sve`` for
an SVE host task) survives either.
"""
from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

import numpy as np

from vgic import fpregs as F
from vgic import sysregs
from vgic.errors import KvmError, StateError, UndefinedInstruction
from vgic.gic_state import _int, _keys, _list
from vgic.ich import U32, U64, check_int
from vgic.part import KernelPart

if TYPE_CHECKING:
    from vgic.vm import VCPU, VM

# The kernels' guest register kinds (vgic._pure.fpsimd / _core.fpsimd).
FPREG_V, FPREG_Z, FPREG_P, FPREG_FFR, FPREG_FPSR, FPREG_FPCR, FPREG_ZCR = range(7)
_SYSREG_KIND = {"ZCR_EL1": FPREG_ZCR, "FPSR": FPREG_FPSR, "FPCR": FPREG_FPCR}

_CORE_V = {F.core_vreg(n): n for n in range(F.NR_ZREGS)}
_ZREGS = {F.sve_zreg(n, 0): n for n in range(F.NR_ZREGS)}
_PREGS = {F.sve_preg(n, 0): n for n in range(F.NR_PREGS)}
_FFR = F.sve_ffr(0)
_SVE_LIST = [F.KVM_REG_ARM64_SVE_VLS, *_ZREGS, *_PREGS, _FFR]
#: Slice-0 SVE register ID -> (kind, number).
_SVE_REGS = {**{k: ("z", n) for k, n in _ZREGS.items()}, **{k: ("p", n) for k, n in _PREGS.items()},
             _FFR: ("ffr", 0)}


def _u(value: Any, bits: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= int(value) < (1 << bits):
        raise KvmError(errno.EINVAL, f"{what}: {value!r} is not a {bits}-bit value")
    return int(value)


def _raw(value: Any, size: int, what: str) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)) and len(bytes(value)) == size:
        return bytes(value)
    raise KvmError(errno.EINVAL, f"{what}: expected {size} bytes")


class _GuestFp:
    """The guest's ZCR_EL1, FPSR and FPCR accesses (the sysreg accessor)."""

    def __init__(self, part: FpSimd, vcpu: int) -> None:
        self.part = part
        self.vcpu = vcpu

    def read(self, reg: Any) -> int:
        return int(self.part.guest(self.vcpu, "read", _SYSREG_KIND[sysregs.lookup(reg).name], 0))

    def write(self, reg: Any, value: int) -> None:
        self.part.guest(self.vcpu, "write", _SYSREG_KIND[sysregs.lookup(reg).name], 0, value)


def _record_int(field: str, doc: str) -> property:
    """A read-only int property of the view's record field ``field``."""
    return property(lambda self: int(self._rec[field]), doc=doc)


class FpView:
    """``vcpu.fp``: the guest's FP/SVE registers while it runs (each access
    is an FP/SVE use: the first after vcpu_load traps under ``lazy``), and
    the counts of what KVM moved."""

    def __init__(self, part: FpSimd, vcpu: int) -> None:
        self._part = part
        self._i = vcpu

    def _get(self, kind: int, n: int = 0) -> bytes:
        return bytes(self._part.guest(self._i, "read", kind, n))

    def _set(self, kind: int, n: int, data: Any) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"register data must be bytes, not {type(data).__name__}")
        self._part.guest(self._i, "write", kind, n, bytes(data))

    def read_v(self, n: int) -> bytes:
        """Vn (16 bytes)."""
        return self._get(FPREG_V, n)

    def write_v(self, n: int, data: bytes) -> None:
        """Vn (16 bytes): an FPSIMD write zeroes the rest of Zn."""
        self._set(FPREG_V, n, data)

    def read_z(self, n: int) -> bytes:
        """Zn at the effective vector length (SVE vCPUs)."""
        return self._get(FPREG_Z, n)

    def write_z(self, n: int, data: bytes) -> None:
        self._set(FPREG_Z, n, data)

    def read_p(self, n: int) -> bytes:
        """Pn (VL / 8 bytes)."""
        return self._get(FPREG_P, n)

    def write_p(self, n: int, data: bytes) -> None:
        self._set(FPREG_P, n, data)

    def read_ffr(self) -> bytes:
        return self._get(FPREG_FFR)

    def write_ffr(self, data: bytes) -> None:
        self._set(FPREG_FFR, 0, data)

    @property
    def _rec(self) -> Any:
        return self._part.records[self._i]

    vq = _record_int("hw_vq", "The modelled CPU's effective vector length (in quadwords).")
    max_vq = _record_int("max_vq", "The vCPU's maximum vector length (set at finalize).")
    guest_bytes = _record_int("guest_bytes", "Bytes of guest state KVM moved between memory and the CPU.")
    host_bytes = _record_int("host_bytes", "Bytes of the host task's state saved and restored around guests.")
    traps = _record_int("traps", "FP/SVE traps taken (a guest use of registers it did not own).")
    zcr_writes = _record_int("zcr_writes", "ZCR_EL1/ZCR_EL2 writes KVM made (unchanged values are skipped; "
                             "the guest's own ZCR_EL1 writes are not KVM's).")

    @property
    def owner(self) -> str:
        """Who owns the CPU's FP registers: "free", "host" or "guest"."""
        return ("free", "host", "guest")[int(self._rec["owner"])]

    def host_task_state(self) -> tuple[bytes, int, int]:
        """The host task's FP state as it would see it now."""
        out: tuple[bytes, int, int] = self._part.kernel.host_task_state(self._i)
        return out

    def state(self) -> dict[str, Any]:
        return self._part.vcpu_state(self._i)


class FpSimd(KernelPart):
    """Every vCPU's FPSIMD/SVE state (``vm.fp``)."""

    name = sysregs.FPSIMD
    vcpu_attr_names = ("fp",)

    def __init__(self, vm: VM, impl: Any) -> None:
        super().__init__(vm, impl)
        #: The kernel (the backend's ``fpsimd.FpState``).
        self.kernel = impl.fpsimd.FpState(vm.nr_vcpus, vm.sve_vqs, F.FP_POLICIES[vm.fp_policy], vm.sve, vm.host_sve)
        self.records = self.kernel.records
        self._guest = [_GuestFp(self, i) for i in range(vm.nr_vcpus)]

    def _vcpu(self, vcpu: Any) -> int:
        """A vCPU index of this VM (the part's methods are public too)."""
        return check_int("vcpu", vcpu, 0, len(self.records) - 1)

    # ------------------------------------------------------------ per vCPU
    def vcpu_attrs(self, vcpu: VCPU) -> dict[str, Any]:
        return {"fp": FpView(self, vcpu.id)}

    def vcpu_sysregs(self, vcpu: VCPU) -> _GuestFp:
        return self._guest[vcpu.id]

    def check_first_run(self, vcpu: int) -> None:
        vcpu = self._vcpu(vcpu)
        r = self.records[vcpu]
        if r["sve"] and not r["finalized"]:
            raise KvmError(errno.EPERM, f"KVM_RUN: vCPU {vcpu} has SVE and is not finalized")

    def finalize(self, vcpu: int, feature: Any) -> None:
        vcpu = self._vcpu(vcpu)
        r = self.kernel.finalize(vcpu, feature)
        if r:
            raise KvmError(-r, f"KVM_ARM_VCPU_FINALIZE({feature!r}) on vCPU {vcpu}")

    def guest(self, vcpu: int, how: str, kind: int, n: Any, value: Any = None) -> Any:
        """A guest access; an SVE access on a non-SVE vCPU is UNDEFINED."""
        vcpu = self._vcpu(vcpu)
        if how == "read":
            out = self.kernel.guest_read(vcpu, kind, n)
            if out is None:
                raise UndefinedInstruction(kind, f"vCPU {vcpu} has no SVE")
            return out
        if self.kernel.guest_write(vcpu, kind, n, value):
            raise UndefinedInstruction(kind, f"vCPU {vcpu} has no SVE")
        return None

    # ------------------------------------------------------------- one-reg
    def one_regs(self) -> list[int]:
        core = [*_CORE_V, F.KVM_REG_ARM_CORE_FPSR, F.KVM_REG_ARM_CORE_FPCR]
        return core + _SVE_LIST + [F.KVM_REG_ZCR_EL1]

    def vcpu_one_regs(self, vcpu: int) -> list[int]:
        """KVM_GET_REG_LIST's share of this part, in KVM's order: the core
        FP registers (no V registers on an SVE vCPU), then the SVE ones."""
        vcpu = self._vcpu(vcpu)
        r = self.records[vcpu]
        if r["sve"]:
            if not r["finalized"]:
                raise KvmError(errno.EPERM, f"KVM_GET_REG_LIST: vCPU {vcpu} is not finalized")
            return [F.KVM_REG_ARM_CORE_FPSR, F.KVM_REG_ARM_CORE_FPCR, *_SVE_LIST, F.KVM_REG_ZCR_EL1]
        return [*_CORE_V, F.KVM_REG_ARM_CORE_FPSR, F.KVM_REG_ARM_CORE_FPCR]

    def claims_one_reg(self, reg_id: int) -> bool:
        return (reg_id & F.KVM_REG_ARM_COPROC_MASK) == F.KVM_REG_ARM64_SVE

    def _sve_reg(self, vcpu: int, reg_id: int) -> tuple[str, int]:
        """sve_reg_to_region(): ENOENT for a slice >= 1 or a non-SVE vCPU,
        EINVAL for an ID naming nothing, then EPERM before finalize."""
        r = self.records[vcpu]
        found = _SVE_REGS.get(reg_id & ~0x1F)           # (the slice-0 IDs end in 5 zero bits)
        if found is None:
            raise KvmError(errno.EINVAL, f"one-reg {reg_id:#x} names no SVE register")
        if reg_id & 0x1F:
            raise KvmError(errno.ENOENT, f"one-reg {reg_id:#x}: slice {reg_id & 0x1F} does not exist")
        if not r["sve"]:
            raise KvmError(errno.ENOENT, f"one-reg {reg_id:#x}: vCPU {vcpu} has no SVE")
        if not r["finalized"]:
            raise KvmError(errno.EPERM, f"one-reg {reg_id:#x}: vCPU {vcpu} is not finalized")
        return found

    def _region(self, vcpu: int, kind: str, n: int) -> tuple[np.ndarray, int]:
        mvq = int(self.records[vcpu]["max_vq"])
        state = self.kernel.sve_state[vcpu]
        if kind == "z":
            return state[F.zreg_offset(mvq, n):F.zreg_offset(mvq, n) + 16 * mvq], 256
        if kind == "p":
            return state[F.preg_offset(mvq, n):F.preg_offset(mvq, n) + 2 * mvq], 32
        return state[F.ffr_offset(mvq):F.ffr_offset(mvq) + 2 * mvq], 32

    def _checked_id(self, vcpu: int, reg_id: int) -> tuple[str, int] | None:
        """KVM's refusals of this ID on this vCPU, before anything moves; the
        SVE register it names, or None for the others."""
        r = self.records[vcpu]
        if reg_id in _CORE_V and r["sve"]:
            raise KvmError(errno.EINVAL, f"one-reg {reg_id:#x}: V registers are not accessible on an SVE vCPU")
        if reg_id in (F.KVM_REG_ZCR_EL1, F.KVM_REG_ARM64_SVE_VLS) and not r["sve"]:
            raise KvmError(errno.ENOENT, f"one-reg {reg_id:#x}: vCPU {vcpu} has no SVE")
        if reg_id in _CORE_V or reg_id in (F.KVM_REG_ARM_CORE_FPSR, F.KVM_REG_ARM_CORE_FPCR, F.KVM_REG_ZCR_EL1,
                                           F.KVM_REG_ARM64_SVE_VLS):
            return None
        return self._sve_reg(vcpu, reg_id)

    def get_one_reg(self, vcpu: int, reg_id: int) -> Any:
        vcpu = self._vcpu(vcpu)
        r = self.records[vcpu]
        sve_reg = self._checked_id(vcpu, reg_id)
        self.kernel.sync_out(vcpu)
        if reg_id in _CORE_V:
            n = _CORE_V[reg_id]
            return bytes(self.kernel.vregs[vcpu][16 * n:16 * n + 16])
        if reg_id == F.KVM_REG_ARM_CORE_FPSR:
            return int(r["fpsr"])
        if reg_id == F.KVM_REG_ARM_CORE_FPCR:
            return int(r["fpcr"])
        if reg_id == F.KVM_REG_ZCR_EL1:
            return int(r["zcr_el1"])
        if reg_id == F.KVM_REG_ARM64_SVE_VLS:
            return np.asarray(r["vls"], dtype="<u8").tobytes()
        assert sve_reg is not None
        data, size = self._region(vcpu, *sve_reg)
        return bytes(data) + bytes(size - data.size)          # zero padded

    def set_one_reg(self, vcpu: int, reg_id: int, value: Any) -> None:
        vcpu = self._vcpu(vcpu)
        r = self.records[vcpu]
        sve_reg = self._checked_id(vcpu, reg_id)
        # The value is checked before anything moves, too.
        if reg_id in _CORE_V:
            raw = _raw(value, 16, "V")
        elif reg_id in (F.KVM_REG_ARM_CORE_FPSR, F.KVM_REG_ARM_CORE_FPCR):
            word = _u(value, 32, "FPSR/FPCR")
        elif reg_id == F.KVM_REG_ZCR_EL1:
            word = _u(value, 64, "ZCR_EL1")
        elif reg_id == F.KVM_REG_ARM64_SVE_VLS:
            raw = _raw(value, 64, "SVE_VLS")
        else:
            assert sve_reg is not None
            raw = _raw(value, self._region(vcpu, *sve_reg)[1], f"one-reg {reg_id:#x}")
        if reg_id == F.KVM_REG_ARM64_SVE_VLS:
            err = self.kernel.set_vls(vcpu, np.frombuffer(raw, dtype="<u8"))
            if err:
                raise KvmError(-err, f"KVM_REG_ARM64_SVE_VLS refused on vCPU {vcpu}")
            return
        self.kernel.sync_out(vcpu)
        if reg_id in _CORE_V:
            n = _CORE_V[reg_id]
            self.kernel.vregs[vcpu][16 * n:16 * n + 16] = np.frombuffer(raw, dtype=np.uint8)
        elif reg_id in (F.KVM_REG_ARM_CORE_FPSR, F.KVM_REG_ARM_CORE_FPCR):
            r["fpsr" if reg_id == F.KVM_REG_ARM_CORE_FPSR else "fpcr"] = word
        elif reg_id == F.KVM_REG_ZCR_EL1:
            r["zcr_el1"] = word & F.ZCR_LEN_MASK
        else:
            assert sve_reg is not None
            data, _ = self._region(vcpu, *sve_reg)
            data[:] = np.frombuffer(raw[:data.size], dtype=np.uint8)      # the VQ-sized part only

    # The batch forms: every register of ``reg_ids`` on every vCPU of
    # ``vcpus``, checked first for all of them (KVM's refusals, in KVM's
    # order, named by position), then moved as whole columns.
    def _batch_plan(self, vcpus: np.ndarray, reg_ids: list[int]) -> list[tuple[int, str, int, int]]:
        """Per register: (size, kind, number, first column); every refusal
        raised before anything moves.  The vCPUs' SVE flags are the VM's,
        so one vCPU per (finalized) kind stands for the others."""
        recs = self.records[vcpus]
        reps = {bool(f): int(v) for v, f in zip(vcpus.tolist(), recs["finalized"].tolist())}
        plan, col = [], 0
        for k, r in enumerate(reg_ids):
            for v in reps.values():
                try:
                    found = self._checked_id(v, r)
                except KvmError as exc:
                    raise KvmError(exc.errno or 0, f"reg_ids[{k}] on vCPU {v}: {exc.strerror}", index=k) from exc
            size = F.reg_size(r)
            if found is not None:
                plan.append((size, found[0], found[1], col))
            elif r in _CORE_V:
                plan.append((size, "v", _CORE_V[r], col))
            else:
                plan.append((size, {F.KVM_REG_ARM_CORE_FPSR: "fpsr", F.KVM_REG_ARM_CORE_FPCR: "fpcr",
                                    F.KVM_REG_ZCR_EL1: "zcr_el1", F.KVM_REG_ARM64_SVE_VLS: "vls"}[r], 0, col))
            col += size
        return plan

    def _spans(self, plan: list[tuple[int, str, int, int]], mvq: int) -> list[tuple[int, int, int]]:
        """(state offset, column, bytes) of the Z/P/FFR registers at max VQ
        ``mvq``, neighbours merged where both sides are contiguous (at VQ 16
        the whole payload is one span)."""
        # A padded register (a VQ below 16) leaves a gap in the columns, so
        # the column check alone stops a merge across it.
        spans: list[list[int]] = []
        for _size, kind, n, col in plan:
            if kind not in ("z", "p", "ffr"):
                continue
            if kind == "z":
                off, length = F.zreg_offset(mvq, n), 16 * mvq
            elif kind == "p":
                off, length = F.preg_offset(mvq, n), 2 * mvq
            else:
                off, length = F.ffr_offset(mvq), 2 * mvq
            last = spans[-1] if spans else None
            if last is not None and last[0] + last[2] == off and last[1] + last[2] == col:
                last[2] += length
            else:
                spans.append([off, col, length])
        return [(o, c, n) for o, c, n in spans]

    def _groups(self, vcpus: np.ndarray) -> list[tuple[int, np.ndarray, Any]]:
        """(max VQ, rows of the batch, rows of the state: a slice when they
        are consecutive vCPUs) for each max VQ among ``vcpus``."""
        out = []
        mvqs = self.records["max_vq"][vcpus]
        for mvq in np.unique(mvqs).tolist():
            rows = np.flatnonzero(mvqs == mvq)
            ids = vcpus[rows]
            src: Any = ids
            if len(ids) and int(ids[-1]) - int(ids[0]) == len(ids) - 1 and bool((np.diff(ids) == 1).all()):
                src = slice(int(ids[0]), int(ids[-1]) + 1)
            out.append((int(mvq), rows, src))
        return out

    def get_one_regs(self, vcpus: np.ndarray, reg_ids: list[int]) -> np.ndarray:
        plan = self._batch_plan(vcpus, reg_ids)
        for v in vcpus.tolist():
            self.kernel.sync_out(v)
        out = np.zeros((len(vcpus), sum(p[0] for p in plan)), dtype=np.uint8)
        recs, vregs = self.records, self.kernel.vregs
        for size, kind, n, col in plan:
            if kind == "v":
                out[:, col:col + 16] = vregs[vcpus, 16 * n:16 * n + 16]
            elif kind == "vls":
                out[:, col:col + 64] = recs["vls"][vcpus].astype("<u8").view(np.uint8)
            elif kind in ("fpsr", "fpcr", "zcr_el1"):
                out[:, col:col + size] = recs[kind][vcpus].astype(f"<u{size}")[:, None].view(np.uint8)
        state = self.kernel.sve_state
        for mvq, rows, src in self._groups(vcpus):
            spans = self._spans(plan, mvq)
            whole = len(rows) == len(vcpus)
            for off, col, length in spans:
                block = state[src, off:off + length]
                if whole:
                    out[:, col:col + length] = block
                else:
                    out[rows, col:col + length] = block
        return out

    def set_one_regs(self, vcpus: np.ndarray, reg_ids: list[int], data: np.ndarray) -> None:
        plan = self._batch_plan(vcpus, reg_ids)
        if any(kind == "vls" for _, kind, _, _ in plan):
            if len(reg_ids) == 1:
                self._set_vls_many(vcpus, data)
            else:
                # SVE_VLS among others: register by register, vCPU by vCPU.
                super().set_one_regs(vcpus, reg_ids, data)
            return
        for v in vcpus.tolist():
            self.kernel.sync_out(v)
        recs, vregs = self.records, self.kernel.vregs
        for size, kind, n, col in plan:
            if kind not in ("v", "fpsr", "fpcr", "zcr_el1"):
                continue                # Z, P and FFR move below, span by span
            raw = np.ascontiguousarray(data[:, col:col + size])
            if kind == "v":
                vregs[vcpus, 16 * n:16 * n + 16] = raw
            elif kind in ("fpsr", "fpcr"):
                recs[kind][vcpus] = raw.view("<u4")[:, 0]
            elif kind == "zcr_el1":
                recs[kind][vcpus] = raw.view("<u8")[:, 0] & np.uint64(F.ZCR_LEN_MASK)
        state = self.kernel.sve_state
        for mvq, rows, src in self._groups(vcpus):
            whole = len(rows) == len(vcpus)
            for off, col, length in self._spans(plan, mvq):
                # The VQ-sized part of each register only, as set_one_reg.
                state[src, off:off + length] = data[:, col:col + length] if whole else data[rows, col:col + length]

    def _vls_refusal(self, vcpu: int, words: np.ndarray) -> int:
        """The errno KVM_SET_ONE_REG(SVE_VLS) gives ``vcpu`` for ``words``,
        or 0, in the kernel's order (its ``set_vls``): ENOENT without SVE,
        EPERM once finalized, EINVAL for a set the host cannot give
        (empty, beyond VQ 16, or not the host's set up to its largest VQ)."""
        r = self.records[vcpu]
        if not r["sve"]:
            return errno.ENOENT
        if r["finalized"]:
            return errno.EPERM
        vqs = F.vls_set(words)
        if not vqs or max(vqs) > F.SVE_VQ_MAX:
            return errno.EINVAL
        host = set(self.kernel.host_vqs)
        if any((vq in vqs) != (vq in host) for vq in range(1, max(vqs) + 1)):
            return errno.EINVAL
        return 0

    def _set_vls_many(self, vcpus: np.ndarray, data: np.ndarray) -> None:
        """KVM_REG_ARM64_SVE_VLS on many vCPUs, as that many single writes in
        order: the vCPUs before the first refused one get their value."""
        words = np.ascontiguousarray(data).view("<u8")
        verdict: dict[tuple[bytes, bool, bool], int] = {}
        recs = self.records
        for row, v in enumerate(vcpus.tolist()):
            key = (data[row].tobytes(), bool(recs["sve"][v]), bool(recs["finalized"][v]))
            err = verdict.get(key)
            if err is None:
                err = verdict[key] = self._vls_refusal(v, words[row])
            if err:
                recs["vls"][vcpus[:row]] = words[:row]
                raise KvmError(err, f"reg_ids[0] on vCPU {v}: KVM_REG_ARM64_SVE_VLS refused", index=0)
        recs["vls"][vcpus] = words

    def finalize_many(self, vcpus: np.ndarray, feature: Any) -> None:
        """KVM_ARM_VCPU_FINALIZE on many vCPUs, in order, stopping at the
        first refusal (:class:`vgic.KvmError` with its ``index``)."""
        for k, v in enumerate(vcpus.tolist()):
            r = self.kernel.finalize(v, feature)
            if r:
                raise KvmError(-r, f"KVM_ARM_VCPU_FINALIZE({feature!r}) on vCPU {v}", index=k)

    def reset(self, vcpu: int) -> None:
        """KVM's copy of the vCPU's FP/SVE state zeroed (kvm_reset_vcpu);
        before finalize the vector lengths go back to the host's set."""
        vcpu = self._vcpu(vcpu)
        self.kernel.reset(vcpu)
        r = self.records[vcpu]
        if r["sve"] and not r["finalized"]:
            r["vls"] = F.vls_words(self.kernel.host_vqs)

    def vcpu_reset(self, vcpu: int) -> None:
        vcpu = self._vcpu(vcpu)
        self.reset(vcpu)

    # ---------------------------------------------------------------- state
    _SCALARS = ("fpsr", "fpcr", "zcr_el1", "hw_fpsr", "hw_fpcr", "hw_zcr_el1", "hw_zcr_el2", "host_fpsr",
                "host_fpcr", "guest_bytes", "host_bytes", "traps", "zcr_writes", "max_vq", "hw_vq")
    _FLAGS = ("sve", "finalized", "loaded", "running")
    _BLOBS = ("vregs", "sve_state", "hw", "host_state")

    def vcpu_state(self, i: int) -> dict[str, Any]:
        i = self._vcpu(i)
        r = self.records[i]
        out: dict[str, Any] = {f: int(r[f]) for f in self._SCALARS}
        out.update({f: bool(r[f]) for f in self._FLAGS})
        out["owner"] = ("free", "host", "guest")[int(r["owner"])]
        out["vls"] = F.vls_set(r["vls"])
        out.update({b: bytes(getattr(self.kernel, b)[i]) for b in self._BLOBS})
        return out

    def state(self) -> dict[str, Any]:
        """Per vCPU: KVM's copy (FPSR, FPCR, ZCR_EL1, the V registers or the
        SVE payload), the modelled CPU's registers and the host task's saved
        state as byte strings, the VLS, ownership and the counts."""
        k = self.kernel
        return {"host_vqs": list(k.host_vqs), "policy": self.vm.fp_policy, "host_sve": bool(k.host_sve),
                "vcpus": [self.vcpu_state(i) for i in range(len(self.records))]}

    def check_state(self, state: Any) -> Any:
        w = self.name
        if not isinstance(state, dict):
            raise StateError(f"{w}: expected a dict, got {type(state).__name__}")
        _keys(w, state, ("host_vqs", "policy", "host_sve", "vcpus"))
        k = self.kernel
        hv, pol, hs = state["host_vqs"], state["policy"], state["host_sve"]
        if not (isinstance(hv, list) and all(type(x) is int for x in hv) and hv == list(k.host_vqs)
                and isinstance(pol, str)
                and pol == self.vm.fp_policy and isinstance(hs, bool) and hs == bool(k.host_sve)):
            raise StateError(f"{w}: host_vqs, policy and host_sve must be this VM's")
        vcpus = _list(f"{w}.vcpus", state["vcpus"], len(self.records))
        recs = self.records.copy()
        blobs = {b: getattr(k, b).copy() for b in self._BLOBS}
        keys = self._SCALARS + self._FLAGS + ("owner", "vls") + self._BLOBS
        for i, vd in enumerate(vcpus):
            wi = f"{w}.vcpus[{i}]"
            _keys(wi, vd, keys)
            r = recs[i]
            for f in self._SCALARS:
                hi = U32 if f in ("fpsr", "fpcr", "hw_fpsr", "hw_fpcr", "host_fpsr", "host_fpcr") else U64
                if f in ("max_vq", "hw_vq"):
                    hi = F.SVE_VQ_MAX
                r[f] = _int(f"{wi}.{f}", vd[f], 1 if f in ("max_vq", "hw_vq") else 0, hi)
            for f in self._FLAGS:
                if not isinstance(vd[f], (bool, np.bool_)):
                    raise StateError(f"{wi}.{f}: expected a bool")
                r[f] = bool(vd[f])
            if not isinstance(vd["owner"], str) or vd["owner"] not in ("free", "host", "guest"):
                raise StateError(f"{wi}.owner: {vd['owner']!r} is not free, host or guest")
            r["owner"] = ("free", "host", "guest").index(vd["owner"])
            vls = vd["vls"]
            if not isinstance(vls, list) or not vls or any(
                    isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= F.SVE_VQ_MAX for v in vls):
                raise StateError(f"{wi}.vls: expected a list of VQs in 1..{F.SVE_VQ_MAX}")
            host = set(k.host_vqs)
            if any((vq in vls) != (vq in host) for vq in range(1, max(vls) + 1)):
                raise StateError(f"{wi}.vls: {vls} does not match the host's vector lengths {sorted(host)}")
            r["vls"] = F.vls_words(vls)
            if bool(r["sve"]) != bool(self.vm.sve) or int(r["max_vq"]) > k.hvq or int(r["hw_vq"]) > k.hvq:
                raise StateError(f"{wi}: sve, max_vq or hw_vq does not fit this VM")
            if r["finalized"] and int(r["max_vq"]) != max(vls):
                raise StateError(f"{wi}.max_vq: {int(r['max_vq'])} is not the largest VQ of vls")
            for b in self._BLOBS:
                raw = vd[b]
                if not isinstance(raw, bytes) or len(raw) != blobs[b].shape[1]:
                    raise StateError(f"{wi}.{b}: expected {blobs[b].shape[1]} bytes")
                blobs[b][i] = np.frombuffer(raw, dtype=np.uint8)
        return recs, blobs

    def checkpoint(self) -> Any:
        """What :meth:`check_state` of :meth:`state` returns, read directly."""
        return self.records.copy(), {b: getattr(self.kernel, b).copy() for b in self._BLOBS}

    def apply_state(self, checked: Any) -> None:
        recs, blobs = checked
        self.records[:] = recs
        for b, arr in blobs.items():
            getattr(self.kernel, b)[:] = arr
