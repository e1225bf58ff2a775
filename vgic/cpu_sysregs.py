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
from typing import TYPE_CHECKING, Callable

from vgic import ich
from vgic.cpuif import SYSREGS
from vgic.errors import KvmError

if TYPE_CHECKING:
    from vgic.vm import VCPU


def _attr(name: str) -> int:
    # The attribute encoding of an ICC register, from the one sysreg table.
    return SYSREGS[name].attr


ICC_PMR_EL1 = _attr("ICC_PMR_EL1")          # 0xC230
ICC_BPR0_EL1 = _attr("ICC_BPR0_EL1")        # 0xC643
ICC_AP0R_EL1 = [_attr(f"ICC_AP0R{n}_EL1") for n in range(4)]   # 0xC644..7
ICC_AP1R_EL1 = [_attr(f"ICC_AP1R{n}_EL1") for n in range(4)]   # 0xC648..B
ICC_BPR1_EL1 = _attr("ICC_BPR1_EL1")        # 0xC663
ICC_CTLR_EL1 = _attr("ICC_CTLR_EL1")        # 0xC664
ICC_SRE_EL1 = _attr("ICC_SRE_EL1")          # 0xC665
ICC_IGRPEN0_EL1 = _attr("ICC_IGRPEN0_EL1")  # 0xC666
ICC_IGRPEN1_EL1 = _attr("ICC_IGRPEN1_EL1")  # 0xC667

CTLR_CBPR = 1 << 0
CTLR_EOIMODE = 1 << 1
CTLR_PRIBITS_SHIFT = 8
CTLR_IDBITS_SHIFT = 11
CTLR_SEIS = 1 << 14
CTLR_A3V = 1 << 15
SRE_VALUE = 0x7                 # SRE | DFB | DIB: system registers only
ID_BITS = 0                     # 16-bit INTIDs (ICH_VTR_EL2.IDbits = 0)


def _field(vmcr: int, mask: int, shift: int) -> int:
    return (vmcr & mask) >> shift


class _Vmcr:
    """Read-modify-write of the saved ICH_VMCR_EL2 of one vCPU."""

    def __init__(self, vcpu: "VCPU") -> None:
        self.rec = vcpu.vm._cpu_if_records[vcpu.id]

    def get(self, mask: int, shift: int = 0) -> int:
        return _field(int(self.rec["vgic_vmcr"]), mask, shift)

    def set(self, mask: int, shift: int, value: int) -> None:
        vmcr = int(self.rec["vgic_vmcr"]) & ~mask
        # KVM writes VMCR with VFIQEn set: with SRE = 1 it is RES1.
        self.rec["vgic_vmcr"] = vmcr | ((value << shift) & mask) | ich.VMCR_FIQEN


def _max_apr_index(vcpu: "VCPU") -> int:
    # vgic_v3_max_apr_idx(): 7 priority bits -> 3, 6 -> 1, 5 -> 0.
    return {7: 3, 6: 1}.get(vcpu.num_pri_bits, 0)


def _ctlr_read(vcpu: "VCPU") -> int:
    v = _Vmcr(vcpu)
    value = (v.get(ich.VMCR_CBPR) and CTLR_CBPR) | (v.get(ich.VMCR_EOIM) and CTLR_EOIMODE)
    return (value | ((vcpu.num_pri_bits - 1) << CTLR_PRIBITS_SHIFT)
            | (ID_BITS << CTLR_IDBITS_SHIFT) | CTLR_A3V)


def _ctlr_write(vcpu: "VCPU", value: int) -> None:
    # No more priority or ID bits than the vCPU currently has (a restore may
    # lower them, never raise them again), and the host's SEIS and A3V.
    pri = ((value >> CTLR_PRIBITS_SHIFT) & 7) + 1
    idb = (value >> CTLR_IDBITS_SHIFT) & 7
    if pri > vcpu.num_pri_bits or idb > ID_BITS or bool(value & CTLR_SEIS) or not value & CTLR_A3V:
        raise KvmError(errno.EINVAL, f"ICC_CTLR_EL1 {value:#x} does not match the host")
    vcpu.num_pri_bits = pri
    v = _Vmcr(vcpu)
    v.set(ich.VMCR_CBPR, 4, 1 if value & CTLR_CBPR else 0)
    v.set(ich.VMCR_EOIM, 9, 1 if value & CTLR_EOIMODE else 0)


def _bpr1_read(vcpu: "VCPU") -> int:
    v = _Vmcr(vcpu)
    if v.get(ich.VMCR_CBPR):
        return min(v.get(ich.VMCR_BPR0_MASK, ich.VMCR_BPR0_SHIFT) + 1, 7)
    return v.get(ich.VMCR_BPR1_MASK, ich.VMCR_BPR1_SHIFT)


def _bpr1_write(vcpu: "VCPU", value: int) -> None:
    v = _Vmcr(vcpu)
    if not v.get(ich.VMCR_CBPR):
        v.set(ich.VMCR_BPR1_MASK, ich.VMCR_BPR1_SHIFT, value & 7)


def _sre_write(vcpu: "VCPU", value: int) -> None:
    if not value & 1:
        raise KvmError(errno.EINVAL, "ICC_SRE_EL1.SRE cannot be cleared for a GICv3 guest")


def _vmcr_field(mask: int, shift: int, width_mask: int) -> tuple[Callable, Callable]:
    return (lambda vcpu: _Vmcr(vcpu).get(mask, shift),
            lambda vcpu, value: _Vmcr(vcpu).set(mask, shift, value & width_mask))


def _apr(field: str, n: int) -> tuple[Callable, Callable]:
    def check(vcpu: "VCPU") -> None:
        if n > _max_apr_index(vcpu):
            raise KvmError(errno.EINVAL, f"ICC_AP{field[-3]}R{n}_EL1 does not exist with "
                                         f"{vcpu.num_pri_bits} priority bits")

    def read(vcpu: "VCPU") -> int:
        check(vcpu)
        return int(vcpu.vm._cpu_if_records[vcpu.id][field][n])

    def write(vcpu: "VCPU", value: int) -> None:
        check(vcpu)
        vcpu.vm._cpu_if_records[vcpu.id][field][n] = value & 0xFFFFFFFF

    return read, write


#: encoding -> (read, write): one row per register KVM exposes.
REGISTERS: dict[int, tuple[Callable, Callable]] = {
    ICC_PMR_EL1: _vmcr_field(ich.VMCR_PMR_MASK, ich.VMCR_PMR_SHIFT, 0xFF),
    ICC_BPR0_EL1: _vmcr_field(ich.VMCR_BPR0_MASK, ich.VMCR_BPR0_SHIFT, 0x7),
    ICC_BPR1_EL1: (_bpr1_read, _bpr1_write),
    ICC_CTLR_EL1: (_ctlr_read, _ctlr_write),
    ICC_SRE_EL1: (lambda vcpu: SRE_VALUE, _sre_write),
    ICC_IGRPEN0_EL1: _vmcr_field(ich.VMCR_ENG0, 0, 1),
    ICC_IGRPEN1_EL1: _vmcr_field(ich.VMCR_ENG1, 1, 1),
    **{enc: _apr("vgic_ap0r", n) for n, enc in enumerate(ICC_AP0R_EL1)},
    **{enc: _apr("vgic_ap1r", n) for n, enc in enumerate(ICC_AP1R_EL1)},
}


def _row(encoding: int) -> tuple[Callable, Callable]:
    try:
        return REGISTERS[encoding]
    except KeyError:
        raise KvmError(errno.ENXIO, f"system register encoding {encoding:#x} is not a vGICv3 CPU register") from None


def get(vcpu: "VCPU", encoding: int) -> int:
    """Read one register of a vCPU's saved interface."""
    return _row(encoding)[0](vcpu)


def set(vcpu: "VCPU", encoding: int, value: int) -> None:  # noqa: A001 - KVM's verb
    """Write one register of a vCPU's saved interface."""
    _row(encoding)[1](vcpu, value)


def has(encoding: int) -> bool:
    """KVM_HAS_DEVICE_ATTR: every register in the table is advertised."""
    return encoding in REGISTERS
