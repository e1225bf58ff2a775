"""The system-register table, declared once.

Every system register the model knows is one :class:`SysReg` row: its
architectural name, its ``(op0, op1, CRn, CRm, op2)`` encoding, which
accesses exist (RO, WO, RW), the part of the VM that owns it, what happens
when the guest touches it (``trap``), and whether KVM's userspace ABI
exposes it (the vGICv3 device's CPU_SYSREGS group; later, one-reg IDs).

``vcpu.sysreg_read``/``sysreg_write`` resolve a name or an encoding here and
hand the row to its owning part; the CPU_SYSREGS attribute group takes its
encodings and its list of registers from here; a part adding registers (the
timers' CNT*_EL0, SVE's ZCR_EL1) adds rows.

Trap behaviour of a guest (EL1) access, as the modelled hardware and KVM
arrange it:

* ``HW``: served by the hardware without leaving the guest (the virtual CPU
  interface's ICV_* registers, IHI 0069 §12.3).
* ``KVM``: always traps to KVM, which emulates it (SGI generation: with
  HCR_EL2.IMO set, EL1 writes of ICC_SGI*R_EL1 trap to EL2; kvm-facts §3.4).
* ``TDIR``: traps to KVM only while ICH_HCR_EL2.TDIR is set (ICC_DIR_EL1,
  kvm-facts §4.5); the hardware serves it otherwise.
* ``EL2``: an EL2 register; a guest access is UNDEFINED.
"""
from __future__ import annotations

import operator
from typing import Any, NamedTuple

from vgic import ich
from vgic.errors import UndefinedInstruction

RO, WO, RW = "RO", "WO", "RW"
HW, KVM, TDIR, EL2 = "hw", "kvm", "tdir", "el2"

#: The part names that own system registers (see :mod:`vgic.part`).
VGIC_V3 = "vgic_v3"
ARCH_TIMER = "arch_timer"
FPSIMD = "fpsimd"

Encoding = tuple[int, int, int, int, int]


class SysReg(NamedTuple):
    """One system register."""

    name: str
    op0: int
    op1: int
    crn: int
    crm: int
    op2: int
    access: str          # RO, WO or RW
    owner: str           # the part that implements it
    trap: str            # HW, KVM, TDIR or EL2 (guest access, see the module docstring)
    cpu_sysregs: bool = False   # in the vGICv3 device's CPU_SYSREGS group (kvm-facts §6)

    @property
    def encoding(self) -> Encoding:
        return (self.op0, self.op1, self.crn, self.crm, self.op2)

    @property
    def attr(self) -> int:
        """The packed encoding KVM's CPU_SYSREGS attribute carries in [15:0]."""
        return encode(*self.encoding)


def encode(op0: int, op1: int, crn: int, crm: int, op2: int) -> int:
    """Pack a system-register encoding as KVM's CPU_SYSREGS attribute does:
    [15:14] Op0, [13:11] Op1, [10:7] CRn, [6:3] CRm, [2:0] Op2 (kvm-facts §6).

    >>> hex(encode(3, 0, 4, 6, 0))     # ICC_PMR_EL1
    '0xc230'
    """
    for label, value, hi in (("op0", op0, 3), ("op1", op1, 7), ("CRn", crn, 15), ("CRm", crm, 15), ("op2", op2, 7)):
        ich.check_int(label, value, 0, hi)
    return (op0 << 14) | (op1 << 11) | (crn << 7) | (crm << 3) | op2


def _icc(name: str, crn: int, crm: int, op2: int, access: str, trap: str = HW, uaccess: bool = False) -> SysReg:
    return SysReg(name, 3, 0, crn, crm, op2, access, VGIC_V3, trap, uaccess)


def _ich(name: str, crm: int, op2: int, access: str) -> SysReg:
    return SysReg(name, 3, 4, 12, crm, op2, access, VGIC_V3, EL2)


def _gicv3_rows() -> list[SysReg]:
    # The guest's GICv3 CPU-interface registers (IHI 0069 §12.2/§12.3;
    # encodings as in kvm-facts §3.4 and §6), then the hypervisor's
    # virtualisation controls (IHI 0069 §12.4).
    rows = [
        _icc("ICC_PMR_EL1", 4, 6, 0, RW, uaccess=True),
        _icc("ICC_IAR0_EL1", 12, 8, 0, RO),
        _icc("ICC_EOIR0_EL1", 12, 8, 1, WO),
        _icc("ICC_HPPIR0_EL1", 12, 8, 2, RO),
        _icc("ICC_BPR0_EL1", 12, 8, 3, RW, uaccess=True),
        *(_icc(f"ICC_AP0R{n}_EL1", 12, 8, 4 + n, RW, uaccess=True) for n in range(ich.MAX_APRS)),
        *(_icc(f"ICC_AP1R{n}_EL1", 12, 9, n, RW, uaccess=True) for n in range(ich.MAX_APRS)),
        _icc("ICC_DIR_EL1", 12, 11, 1, WO, TDIR),
        _icc("ICC_RPR_EL1", 12, 11, 3, RO),
        _icc("ICC_SGI1R_EL1", 12, 11, 5, WO, KVM),
        _icc("ICC_ASGI1R_EL1", 12, 11, 6, WO, KVM),
        _icc("ICC_SGI0R_EL1", 12, 11, 7, WO, KVM),
        _icc("ICC_IAR1_EL1", 12, 12, 0, RO),
        _icc("ICC_EOIR1_EL1", 12, 12, 1, WO),
        _icc("ICC_HPPIR1_EL1", 12, 12, 2, RO),
        _icc("ICC_BPR1_EL1", 12, 12, 3, RW, uaccess=True),
        _icc("ICC_CTLR_EL1", 12, 12, 4, RW, uaccess=True),
        _icc("ICC_SRE_EL1", 12, 12, 5, RW, uaccess=True),
        _icc("ICC_IGRPEN0_EL1", 12, 12, 6, RW, uaccess=True),
        _icc("ICC_IGRPEN1_EL1", 12, 12, 7, RW, uaccess=True),
    ]
    rows += [_ich(f"ICH_AP0R{n}_EL2", 8, n, RW) for n in range(ich.MAX_APRS)]
    rows += [_ich(f"ICH_AP1R{n}_EL2", 9, n, RW) for n in range(ich.MAX_APRS)]
    rows += [
        _ich("ICH_HCR_EL2", 11, 0, RW),
        _ich("ICH_VTR_EL2", 11, 1, RO),
        _ich("ICH_MISR_EL2", 11, 2, RO),
        _ich("ICH_EISR_EL2", 11, 3, RO),
        _ich("ICH_ELRSR_EL2", 11, 5, RO),
        _ich("ICH_VMCR_EL2", 11, 7, RW),
    ]
    rows += [_ich(f"ICH_LR{n}_EL2", 12 + n // 8, n % 8, RW) for n in range(ich.MAX_LRS)]
    return rows


def _timer_rows() -> list[SysReg]:
    # The generic timer's EL0 registers (Arm ARM, generic timer chapter;
    # timer-facts §B.3): on the modelled nVHE host the virtual timer and
    # the counters are the hardware's, the physical timer traps to KVM
    # (CNTHCTL_EL2.EL1PCEN clear while the guest runs).
    def row(name: str, crm: int, op2: int, access: str, trap: str) -> SysReg:
        return SysReg(name, 3, 3, 14, crm, op2, access, ARCH_TIMER, trap)
    return [
        row("CNTFRQ_EL0", 0, 0, RW, HW),
        row("CNTPCT_EL0", 0, 1, RO, HW),
        row("CNTVCT_EL0", 0, 2, RO, HW),
        row("CNTP_TVAL_EL0", 2, 0, RW, KVM),
        row("CNTP_CTL_EL0", 2, 1, RW, KVM),
        row("CNTP_CVAL_EL0", 2, 2, RW, KVM),
        row("CNTV_TVAL_EL0", 3, 0, RW, HW),
        row("CNTV_CTL_EL0", 3, 1, RW, HW),
        row("CNTV_CVAL_EL0", 3, 2, RW, HW),
    ]


def _fp_rows() -> list[SysReg]:
    # FPCR/FPSR and SVE's ZCR_EL1 (Arm ARM; sve-facts §A, §E): served by the
    # hardware once the guest owns the FP registers, trapped (CPTR_EL2)
    # until then - the fpsimd part models the trap.
    return [
        SysReg("ZCR_EL1", 3, 0, 1, 2, 0, RW, FPSIMD, HW),
        SysReg("FPCR", 3, 3, 4, 4, 0, RW, FPSIMD, HW),
        SysReg("FPSR", 3, 3, 4, 4, 1, RW, FPSIMD, HW),
    ]


#: Every system register, in table order.
TABLE: tuple[SysReg, ...] = tuple(_gicv3_rows() + _timer_rows() + _fp_rows())
#: The same rows by name and by encoding.
BY_NAME: dict[str, SysReg] = {r.name: r for r in TABLE}
BY_ENCODING: dict[Encoding, SysReg] = {r.encoding: r for r in TABLE}
#: The packed CPU_SYSREGS attribute encodings KVM exposes, to their rows.
CPU_SYSREGS: dict[int, SysReg] = {r.attr: r for r in TABLE if r.cpu_sysregs}

if len(BY_NAME) != len(TABLE) or len(BY_ENCODING) != len(TABLE):   # pragma: no cover - a table typo
    raise ImportError("vgic.sysregs: two rows share a name or an encoding")


def lookup(reg: Any) -> SysReg:
    """The row of ``reg``: an architectural name or an ``(op0, op1, CRn, CRm,
    op2)`` tuple.  Anything else, or an encoding no row has, is an access
    the modelled CPU does not decode: :class:`vgic.UndefinedInstruction`."""
    found: SysReg | None = None
    if isinstance(reg, str):
        found = BY_NAME.get(reg)
    elif isinstance(reg, tuple) and len(reg) == 5:
        try:
            key = tuple(operator.index(x) for x in reg)
        except TypeError:
            pass
        else:
            found = BY_ENCODING.get(key)  # type: ignore[arg-type]
    if found is None:
        raise UndefinedInstruction(reg)
    return found


__all__ = ["SysReg", "TABLE", "BY_NAME", "BY_ENCODING", "CPU_SYSREGS", "lookup", "encode",
           "RO", "WO", "RW", "HW", "KVM", "TDIR", "EL2"]
