"""KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS: userspace access to a vCPU's ICC_* state.

As Linux's vgic-sys-reg-v3.c (kvm-facts §6): the attribute carries the vCPU's
MPIDR in [63:32] and the register's (op0, op1, CRn, CRm, op2) in [15:0]; the
value is a u64.  Accesses act on KVM's saved copy of the vCPU's interface
(``vgic_vmcr`` and the saved APRs), which is what userspace sees while the
vCPU is not running.  Unknown encodings are -ENXIO; a value an accessor
refuses is -EINVAL.

Every accessor works on many vCPUs at once (one register, an array of
distinct vCPU indices): a single access is a batch of one, so the batch
form a snapshot uses and the single form are the same code.
"""
from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from vgic import ich, sysregs
from vgic.errors import KvmError

if TYPE_CHECKING:
    from vgic.vgic_v3 import VgicV3

_U64 = np.uint64


class _Vcpus:
    """Distinct vCPUs of the vGICv3: their saved records and num_pri_bits."""

    def __init__(self, part: VgicV3, ids: np.ndarray) -> None:
        self.part = part
        self.ids = ids
        self.recs = part.records

    @property
    def num_pri_bits(self) -> np.ndarray:
        return np.asarray(self.part.num_pri_bits, dtype=np.int64)[self.ids]

    def set_num_pri_bits(self, values: np.ndarray) -> None:
        for i, v in zip(self.ids.tolist(), values.tolist()):
            self.part.num_pri_bits[i] = v

    def get(self, mask: int, shift: int = 0) -> np.ndarray:
        return (self.recs["vgic_vmcr"][self.ids] & _U64(mask)) >> _U64(shift)

    def set(self, mask: int, shift: int, values: np.ndarray) -> None:
        vmcr = self.recs["vgic_vmcr"][self.ids] & ~_U64(mask)
        # KVM writes VMCR with VFIQEn set: with SRE = 1 it is RES1.
        vmcr |= ((values.astype(_U64) << _U64(shift)) & _U64(mask)) | _U64(ich.VMCR_FIQEN)
        self.recs["vgic_vmcr"][self.ids] = vmcr


#: What a write returns: the position of its first refused value (-1 if
#: none; the values before it took effect) and the refusal's text.
Refusal = tuple[int, str]
_NONE: Refusal = (-1, "")


def _refuse(vc: _Vcpus, bad: np.ndarray, why: Callable[[int, int], str], values: np.ndarray | None) -> Refusal:
    """The first refused access in ``bad`` with its message, or ``_NONE``."""
    if not bad.any():
        return _NONE
    k = int(np.argmax(bad))
    return k, why(int(vc.ids[k]), int(values[k]) if values is not None else 0)


def _max_apr_index(pri_bits: np.ndarray) -> np.ndarray:
    # vgic_v3_max_apr_idx(): 7 priority bits -> 3, 6 -> 1, 5 -> 0.
    return np.where(pri_bits == 7, 3, np.where(pri_bits == 6, 1, 0))


def _ctlr_read(vc: _Vcpus) -> np.ndarray:
    value = np.where(vc.get(ich.VMCR_CBPR) != 0, ich.CTLR_CBPR, 0) \
        | np.where(vc.get(ich.VMCR_EOIM) != 0, ich.CTLR_EOIMODE, 0)
    return (value.astype(_U64) | ((vc.num_pri_bits - 1).astype(_U64) << _U64(ich.CTLR_PRIBITS_SHIFT))
            | _U64((ich.ID_BITS << ich.CTLR_IDBITS_SHIFT) | ich.CTLR_A3V))


def _ctlr_write(vc: _Vcpus, values: np.ndarray) -> Refusal:
    # No more priority or ID bits than the vCPU currently has (a restore may
    # lower them, never raise them again), and the host's SEIS and A3V.
    pri = ((values >> _U64(ich.CTLR_PRIBITS_SHIFT)) & _U64(7)).astype(np.int64) + 1
    idb = ((values >> _U64(ich.CTLR_IDBITS_SHIFT)) & _U64(7)).astype(np.int64)
    bad = ((pri > vc.num_pri_bits) | (idb > ich.ID_BITS) | ((values & _U64(ich.CTLR_SEIS)) != 0)
           | ((values & _U64(ich.CTLR_A3V)) == 0))
    refusal = _refuse(vc, bad, lambda v, x: f"ICC_CTLR_EL1 {x:#x} does not match the host (vCPU {v})", values)
    ok = _take(vc, refusal[0])
    ok.set_num_pri_bits(pri[:len(ok.ids)])
    ok.set(ich.VMCR_CBPR, 4, (values[:len(ok.ids)] & _U64(ich.CTLR_CBPR)) != 0)
    ok.set(ich.VMCR_EOIM, 9, (values[:len(ok.ids)] & _U64(ich.CTLR_EOIMODE)) != 0)
    return refusal


def _take(vc: _Vcpus, k: int) -> _Vcpus:
    """The vCPUs before the first refused access (all if ``k`` is -1)."""
    return vc if k < 0 else _Vcpus(vc.part, vc.ids[:k])


def _bpr1_read(vc: _Vcpus) -> np.ndarray:
    bpr0 = vc.get(ich.VMCR_BPR0_MASK, ich.VMCR_BPR0_SHIFT)
    return np.where(vc.get(ich.VMCR_CBPR) != 0, np.minimum(bpr0 + _U64(1), _U64(7)),
                    vc.get(ich.VMCR_BPR1_MASK, ich.VMCR_BPR1_SHIFT)).astype(_U64)


def _bpr1_write(vc: _Vcpus, values: np.ndarray) -> Refusal:
    # With CBPR set the write is ignored (ICC_BPR1_EL1 aliases BPR0).
    keep = vc.get(ich.VMCR_CBPR) == 0
    _Vcpus(vc.part, vc.ids[keep]).set(ich.VMCR_BPR1_MASK, ich.VMCR_BPR1_SHIFT, values[keep] & _U64(7))
    return _NONE


def _sre_write(vc: _Vcpus, values: np.ndarray) -> Refusal:
    return _refuse(vc, (values & _U64(1)) == 0,
                   lambda v, x: f"ICC_SRE_EL1.SRE cannot be cleared for a GICv3 guest (vCPU {v})", values)


def _vmcr_field(mask: int, shift: int, width_mask: int) -> tuple[Callable, Callable]:
    def write(vc: _Vcpus, values: np.ndarray) -> Refusal:
        vc.set(mask, shift, values & _U64(width_mask))
        return _NONE
    return (lambda vc: vc.get(mask, shift), write)


def _apr(field: str, n: int) -> tuple[Callable, Callable]:
    name = f"ICC_AP{field[-2]}R{n}_EL1"

    def check(vc: _Vcpus) -> Refusal:
        pri = vc.num_pri_bits
        bad = n > _max_apr_index(pri)
        return _refuse(vc, bad, lambda v, x: f"{name} does not exist with {int(pri[bad][0])} priority "
                                             f"bits (vCPU {v})", None)

    def read(vc: _Vcpus) -> np.ndarray:
        k, why = check(vc)
        if k >= 0:
            raise KvmError(errno.EINVAL, why)
        return vc.recs[field][vc.ids, n].astype(_U64)

    def write(vc: _Vcpus, values: np.ndarray) -> Refusal:
        refusal = check(vc)
        ok = _take(vc, refusal[0])
        vc.recs[field][ok.ids, n] = (values[:len(ok.ids)] & _U64(0xFFFFFFFF)).astype(np.uint32)
        return refusal

    return read, write


#: name -> (read, write) over distinct vCPUs: one row per register of the
#: CPU_SYSREGS group.  A read returns the values (``uint64``) or raises; a
#: write applies the values up to the first refused one and returns a
#: :data:`Refusal`.
ACCESSORS: dict[str, tuple[Callable, Callable]] = {
    "ICC_PMR_EL1": _vmcr_field(ich.VMCR_PMR_MASK, ich.VMCR_PMR_SHIFT, 0xFF),
    "ICC_BPR0_EL1": _vmcr_field(ich.VMCR_BPR0_MASK, ich.VMCR_BPR0_SHIFT, 0x7),
    "ICC_BPR1_EL1": (_bpr1_read, _bpr1_write),
    "ICC_CTLR_EL1": (_ctlr_read, _ctlr_write),
    "ICC_SRE_EL1": (lambda vc: np.full(len(vc.ids), ich.ICC_SRE_VALUE, dtype=_U64), _sre_write),
    "ICC_IGRPEN0_EL1": _vmcr_field(ich.VMCR_ENG0, 0, 1),
    "ICC_IGRPEN1_EL1": _vmcr_field(ich.VMCR_ENG1, 1, 1),
    **{f"ICC_AP0R{n}_EL1": _apr("vgic_ap0r", n) for n in range(ich.MAX_APRS)},
    **{f"ICC_AP1R{n}_EL1": _apr("vgic_ap1r", n) for n in range(ich.MAX_APRS)},
}
#: The packed encoding -> (read, write), for the rows the sysreg table marks.
REGISTERS: dict[int, tuple[Callable, Callable]] = {
    attr: ACCESSORS[row.name] for attr, row in sysregs.CPU_SYSREGS.items()}
if set(ACCESSORS) != {row.name for row in sysregs.CPU_SYSREGS.values()}:  # pragma: no cover
    raise ImportError("vgic.cpu_sysregs and vgic.sysregs disagree on the CPU_SYSREGS registers")


def _row(encoding: int) -> tuple[Callable, Callable]:
    try:
        return REGISTERS[encoding]
    except KeyError:
        raise KvmError(errno.ENXIO, f"system register encoding {encoding:#x} is not a vGICv3 CPU register") from None


def read_many(part: VgicV3, vcpus: np.ndarray, encoding: int) -> np.ndarray:
    """Read one register of distinct vCPUs ``vcpus`` (int64 indices): ``uint64`` values."""
    return np.asarray(_row(encoding)[0](_Vcpus(part, vcpus)), dtype=_U64)


def write_many(part: VgicV3, vcpus: np.ndarray, encoding: int, values: np.ndarray) -> None:
    """Write one register of distinct vCPUs, in order: the values up to the
    first refused one take effect, which then raises :class:`vgic.KvmError`
    (EINVAL) naming its position."""
    k, why = _row(encoding)[1](_Vcpus(part, vcpus), np.asarray(values, dtype=_U64))
    if k >= 0:
        raise KvmError(errno.EINVAL, why, index=k)


def read(part: VgicV3, vcpu: int, encoding: int) -> int:
    """Read one register of vCPU ``vcpu``'s saved interface."""
    return int(read_many(part, np.array([vcpu], dtype=np.int64), encoding)[0])


def write(part: VgicV3, vcpu: int, encoding: int, value: int) -> None:
    """Write one register of vCPU ``vcpu``'s saved interface."""
    write_many(part, np.array([vcpu], dtype=np.int64), encoding, np.array([value], dtype=_U64))


def has(encoding: int) -> bool:
    """KVM_HAS_DEVICE_ATTR: every register in the table is advertised."""
    return encoding in REGISTERS
