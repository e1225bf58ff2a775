"""KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS: userspace access to a vCPU's ICC_* state.

As Linux's vgic-sys-reg-v3.c (kvm-facts §6): the attribute carries the vCPU's
MPIDR in [63:32] and the register's (op0, op1, CRn, CRm, op2) in [15:0]; the
value is a u64.  Accesses act on KVM's saved copy of the vCPU's interface
(``vgic_vmcr`` and the saved APRs), which is what userspace sees while the
vCPU is not running.  Unknown encodings are -ENXIO; a value an accessor
refuses is -EINVAL.
"""
from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING

from vgic import ich, sysregs
from vgic.errors import KvmError

if TYPE_CHECKING:
    from vgic.vgic_v3 import VgicV3


def _field(vmcr: int, mask: int, shift: int) -> int:
    return (vmcr & mask) >> shift


class _Vcpu:
    """One vCPU of the vGICv3: its saved record and KVM's num_pri_bits."""

    def __init__(self, part: VgicV3, vcpu: int) -> None:
        self.part = part
        self.id = vcpu
        self.rec = part.records[vcpu]

    @property
    def num_pri_bits(self) -> int:
        return self.part.num_pri_bits[self.id]

    @num_pri_bits.setter
    def num_pri_bits(self, value: int) -> None:
        self.part.num_pri_bits[self.id] = value


class _Vmcr:
    """Read-modify-write of the saved ICH_VMCR_EL2 of one vCPU."""

    def __init__(self, vcpu: _Vcpu) -> None:
        self.rec = vcpu.rec

    def get(self, mask: int, shift: int = 0) -> int:
        return _field(int(self.rec["vgic_vmcr"]), mask, shift)

    def set(self, mask: int, shift: int, value: int) -> None:
        vmcr = int(self.rec["vgic_vmcr"]) & ~mask
        # KVM writes VMCR with VFIQEn set: with SRE = 1 it is RES1.
        self.rec["vgic_vmcr"] = vmcr | ((value << shift) & mask) | ich.VMCR_FIQEN


def _max_apr_index(vcpu: _Vcpu) -> int:
    # vgic_v3_max_apr_idx(): 7 priority bits -> 3, 6 -> 1, 5 -> 0.
    return {7: 3, 6: 1}.get(vcpu.num_pri_bits, 0)


def _ctlr_read(vcpu: _Vcpu) -> int:
    v = _Vmcr(vcpu)
    value = (v.get(ich.VMCR_CBPR) and ich.CTLR_CBPR) | (v.get(ich.VMCR_EOIM) and ich.CTLR_EOIMODE)
    return (value | ((vcpu.num_pri_bits - 1) << ich.CTLR_PRIBITS_SHIFT)
            | (ich.ID_BITS << ich.CTLR_IDBITS_SHIFT) | ich.CTLR_A3V)


def _ctlr_write(vcpu: _Vcpu, value: int) -> None:
    # No more priority or ID bits than the vCPU currently has (a restore may
    # lower them, never raise them again), and the host's SEIS and A3V.
    pri = ((value >> ich.CTLR_PRIBITS_SHIFT) & 7) + 1
    idb = (value >> ich.CTLR_IDBITS_SHIFT) & 7
    if pri > vcpu.num_pri_bits or idb > ich.ID_BITS or bool(value & ich.CTLR_SEIS) or not value & ich.CTLR_A3V:
        raise KvmError(errno.EINVAL, f"ICC_CTLR_EL1 {value:#x} does not match the host")
    vcpu.num_pri_bits = pri
    v = _Vmcr(vcpu)
    v.set(ich.VMCR_CBPR, 4, 1 if value & ich.CTLR_CBPR else 0)
    v.set(ich.VMCR_EOIM, 9, 1 if value & ich.CTLR_EOIMODE else 0)


def _bpr1_read(vcpu: _Vcpu) -> int:
    v = _Vmcr(vcpu)
    if v.get(ich.VMCR_CBPR):
        return min(v.get(ich.VMCR_BPR0_MASK, ich.VMCR_BPR0_SHIFT) + 1, 7)
    return v.get(ich.VMCR_BPR1_MASK, ich.VMCR_BPR1_SHIFT)


def _bpr1_write(vcpu: _Vcpu, value: int) -> None:
    v = _Vmcr(vcpu)
    if not v.get(ich.VMCR_CBPR):
        v.set(ich.VMCR_BPR1_MASK, ich.VMCR_BPR1_SHIFT, value & 7)


def _sre_write(vcpu: _Vcpu, value: int) -> None:
    if not value & 1:
        raise KvmError(errno.EINVAL, "ICC_SRE_EL1.SRE cannot be cleared for a GICv3 guest")


def _vmcr_field(mask: int, shift: int, width_mask: int) -> tuple[Callable, Callable]:
    return (lambda vcpu: _Vmcr(vcpu).get(mask, shift),
            lambda vcpu, value: _Vmcr(vcpu).set(mask, shift, value & width_mask))


def _apr(field: str, n: int) -> tuple[Callable, Callable]:
    def check(vcpu: _Vcpu) -> None:
        if n > _max_apr_index(vcpu):
            raise KvmError(errno.EINVAL, f"ICC_AP{field[-3]}R{n}_EL1 does not exist with "
                                         f"{vcpu.num_pri_bits} priority bits")

    def read(vcpu: _Vcpu) -> int:
        check(vcpu)
        return int(vcpu.rec[field][n])

    def write(vcpu: _Vcpu, value: int) -> None:
        check(vcpu)
        vcpu.rec[field][n] = value & 0xFFFFFFFF

    return read, write


#: name -> (read, write): one row per register of the CPU_SYSREGS group.
ACCESSORS: dict[str, tuple[Callable, Callable]] = {
    "ICC_PMR_EL1": _vmcr_field(ich.VMCR_PMR_MASK, ich.VMCR_PMR_SHIFT, 0xFF),
    "ICC_BPR0_EL1": _vmcr_field(ich.VMCR_BPR0_MASK, ich.VMCR_BPR0_SHIFT, 0x7),
    "ICC_BPR1_EL1": (_bpr1_read, _bpr1_write),
    "ICC_CTLR_EL1": (_ctlr_read, _ctlr_write),
    "ICC_SRE_EL1": (lambda vcpu: ich.ICC_SRE_VALUE, _sre_write),
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


def read(part: VgicV3, vcpu: int, encoding: int) -> int:
    """Read one register of vCPU ``vcpu``'s saved interface."""
    return _row(encoding)[0](_Vcpu(part, vcpu))


def write(part: VgicV3, vcpu: int, encoding: int, value: int) -> None:
    """Write one register of vCPU ``vcpu``'s saved interface."""
    _row(encoding)[1](_Vcpu(part, vcpu), value)


def has(encoding: int) -> bool:
    """KVM_HAS_DEVICE_ATTR: every register in the table is advertised."""
    return encoding in REGISTERS
