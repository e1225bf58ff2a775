"""The GICv3 virtual CPU interface: the guest's ICC_*_EL1 view and the
hypervisor's ICH_*_EL2 view of the same modelled hardware state.

While a vCPU runs with ICC_SRE_EL2.Enable clear and ICH_HCR_EL2.En set, every
guest access to an ICC_*_EL1 register is served by the virtual CPU interface
(the ICV_*_EL1 registers of IHI 0069 §12.3) from the hypervisor-owned list
registers, ICH_VMCR_EL2 and the active-priority registers (IHI 0069 §12.4).
This module models that hardware:

* :data:`SYSREGS` -- the ICC_*_EL1 (and ICH_*_EL2) names, encodings and access
  rights, declared once; :func:`encode` packs an encoding the way KVM's
  ``KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS`` attribute does (kvm-facts §6) and
  :func:`resolve` turns a name or an ``(op0, op1, CRn, CRm, op2)`` tuple into
  the canonical name.
* Module-level functions holding the architectural rules once: priority
  masking, group priority (binary point), running priority, the highest
  priority pending list register, and the EISR/ELRSR/MISR summaries.
* :class:`GuestCpuIf` -- ``read``/``write`` of the guest's ICC_*_EL1 registers.
* :class:`HypRegs` -- ``read``/``write`` of the hypervisor's ICH_*_EL2
  registers.

Both classes act on the ``ich_*`` fields of one :data:`vgic.ich.VCPU_IF`
record (the modelled hardware registers) and never on KVM's saved ``vgic_*``
copy.

Citations: "IHI 0069" is the Arm GICv3/GICv4 architecture specification.
Section numbers are those of its issue H (chapter 4 physical prioritisation,
chapter 6 virtualisation, §12.3 ICV_* and §12.4 ICH_* register descriptions);
the register or pseudocode function is always named too, so a citation
survives renumbering between issues.

Choices made where the architecture leaves room (each repeated at the code
that implements it):

* Reads of ICC_BPR0_EL1/ICC_BPR1_EL1 return ``max(stored, minimum)``: a VMCR
  field below the implemented minimum (the reset value 0, or a hypervisor
  write) behaves as the minimum, both when read and in preemption.
* ICC_PMR_EL1 reads and the PMR check compare only the implemented priority
  bits of VPMR (unimplemented bits are RAZ in ICV_PMR_EL1), even if the
  hypervisor wrote other bits into ICH_VMCR_EL2.VPMR.  Consequence: the
  lowest implemented priority (0xF8 with 5 bits) is never higher than the
  most open mask, so an LR at that priority is never acknowledged.
* The active-priority bit set on acknowledge is that of the interrupt's
  *group* priority (its priority with the binary point applied), as the
  running priority is defined in terms of group priorities (IHI 0069 §4.8).
* An EOI write increments ICH_HCR_EL2.EOIcount only when it performed a
  priority drop and its INTID is not an LPI (ICH_HCR_EL2.EOIcount, §12.4.5:
  "EOIs that do not clear a bit in the Active Priorities registers do not
  cause an increment"; LPIs are never counted).
* An EOI whose INTID is active in a list register of the *other* group does
  not deactivate it and does not count (the interrupt is in the list
  registers, so it is not an EOIcount event).
* LPIs (INTID >= 8192): an EOI always deactivates, whatever VEOIM (LPIs have
  no separate deactivation step); a DIR naming an LPI is ignored.
* An EOI deactivates (EOImode 0) even when it dropped no priority because the
  highest active priority belonged to the other group; only EOIcount is
  gated on the drop.
* Equal significant priorities among pending LRs: the lowest LR index wins.
* ICH_LR<n>_EL2 writes also clear bits [59:56] (RES0 without FEAT_GICv3_NMI);
  :mod:`vgic.ich`'s RES0 masks cover only [47:32].
* ICH_HCR_EL2.En, TALL0, TALL1 and TC are not consulted: with them set, KVM
  traps and emulates the same registers with the same results; only the TDIR
  trap is visible (it hands the deactivation to KVM through ``dir_trap``).
"""
from __future__ import annotations

import operator
import re
from typing import Any, NamedTuple, Protocol, Sequence

import numpy as np

from vgic import ich
from vgic.errors import UndefinedInstruction

# --------------------------------------------------------------------------- constants

INTID_SPURIOUS = 1023            # "no interrupt" (IHI 0069 §2.2.1, special INTIDs 1020..1023)
SPECIAL_FIRST = 1020
SPECIAL_LAST = 1023
LPI_BASE = 8192                  # first LPI INTID (IHI 0069 §2.2.1)
IDLE_PRIORITY = 0xFF             # running priority with no active priority (ICV_RPR_EL1)
INTID_FIELD = 0xFFFFFF           # INTID, bits [23:0] of ICV_IAR/EOIR/DIR/HPPIR (§12.3)
APR_BITS = 32                    # each ICH_AP{0,1}R<n>_EL2 holds 32 active-priority bits
U64 = (1 << 64) - 1

# ICC_SRE_EL1 as the virtual interface presents it: SRE | DFB | DIB, fixed (kvm-facts §6).
SRE_VALUE = 0x7

# ICV_CTLR_EL1 fields (IHI 0069 §12.3, ICV_CTLR_EL1).
CTLR_CBPR = 1 << 0
CTLR_EOIMODE = 1 << 1
CTLR_PRIBITS_SHIFT = 8
CTLR_IDBITS_SHIFT = 11
CTLR_SEIS = 1 << 14
CTLR_A3V = 1 << 15


RO, WO, RW = "RO", "WO", "RW"


# --------------------------------------------------------------------------- sysreg table


class SysReg(NamedTuple):
    """One system register: its architectural name, encoding and access."""

    name: str
    op0: int
    op1: int
    crn: int
    crm: int
    op2: int
    access: str          # RO, WO or RW

    @property
    def encoding(self) -> tuple[int, int, int, int, int]:
        return (self.op0, self.op1, self.crn, self.crm, self.op2)

    @property
    def attr(self) -> int:
        """The packed CPU_SYSREGS attribute value (kvm-facts §6)."""
        return encode(*self.encoding)


def _icc_table() -> list[SysReg]:
    # The guest-visible GICv3 CPU-interface registers (IHI 0069 §12.2/§12.3;
    # encodings as in kvm-facts §3.4 and §6).
    regs = [
        SysReg("ICC_PMR_EL1", 3, 0, 4, 6, 0, RW),
        SysReg("ICC_IAR0_EL1", 3, 0, 12, 8, 0, RO),
        SysReg("ICC_EOIR0_EL1", 3, 0, 12, 8, 1, WO),
        SysReg("ICC_HPPIR0_EL1", 3, 0, 12, 8, 2, RO),
        SysReg("ICC_BPR0_EL1", 3, 0, 12, 8, 3, RW),
    ]
    regs += [SysReg(f"ICC_AP0R{n}_EL1", 3, 0, 12, 8, 4 + n, RW) for n in range(ich.MAX_APRS)]
    regs += [SysReg(f"ICC_AP1R{n}_EL1", 3, 0, 12, 9, n, RW) for n in range(ich.MAX_APRS)]
    regs += [
        SysReg("ICC_DIR_EL1", 3, 0, 12, 11, 1, WO),
        SysReg("ICC_RPR_EL1", 3, 0, 12, 11, 3, RO),
        SysReg("ICC_SGI1R_EL1", 3, 0, 12, 11, 5, WO),
        SysReg("ICC_ASGI1R_EL1", 3, 0, 12, 11, 6, WO),
        SysReg("ICC_SGI0R_EL1", 3, 0, 12, 11, 7, WO),
        SysReg("ICC_IAR1_EL1", 3, 0, 12, 12, 0, RO),
        SysReg("ICC_EOIR1_EL1", 3, 0, 12, 12, 1, WO),
        SysReg("ICC_HPPIR1_EL1", 3, 0, 12, 12, 2, RO),
        SysReg("ICC_BPR1_EL1", 3, 0, 12, 12, 3, RW),
        SysReg("ICC_CTLR_EL1", 3, 0, 12, 12, 4, RW),
        SysReg("ICC_SRE_EL1", 3, 0, 12, 12, 5, RW),
        SysReg("ICC_IGRPEN0_EL1", 3, 0, 12, 12, 6, RW),
        SysReg("ICC_IGRPEN1_EL1", 3, 0, 12, 12, 7, RW),
    ]
    return regs


def _ich_table() -> list[SysReg]:
    # The hypervisor's virtualisation control registers (IHI 0069 §12.4).
    regs = [SysReg(f"ICH_AP0R{n}_EL2", 3, 4, 12, 8, n, RW) for n in range(ich.MAX_APRS)]
    regs += [SysReg(f"ICH_AP1R{n}_EL2", 3, 4, 12, 9, n, RW) for n in range(ich.MAX_APRS)]
    regs += [
        SysReg("ICH_HCR_EL2", 3, 4, 12, 11, 0, RW),
        SysReg("ICH_VTR_EL2", 3, 4, 12, 11, 1, RO),
        SysReg("ICH_MISR_EL2", 3, 4, 12, 11, 2, RO),
        SysReg("ICH_EISR_EL2", 3, 4, 12, 11, 3, RO),
        SysReg("ICH_ELRSR_EL2", 3, 4, 12, 11, 5, RO),
        SysReg("ICH_VMCR_EL2", 3, 4, 12, 11, 7, RW),
    ]
    regs += [SysReg(f"ICH_LR{n}_EL2", 3, 4, 12, 12 + n // 8, n % 8, RW) for n in range(ich.MAX_LRS)]
    return regs


#: The guest's ICC_*_EL1 registers by name.
SYSREGS: dict[str, SysReg] = {r.name: r for r in _icc_table()}
#: The same registers by ``(op0, op1, CRn, CRm, op2)``.
SYSREGS_BY_ENCODING: dict[tuple[int, int, int, int, int], SysReg] = {r.encoding: r for r in SYSREGS.values()}
#: The hypervisor's ICH_*_EL2 registers by name (all 16 LRs / 4 APRs; what
#: a given geometry implements is decided by :class:`HypRegs`).
ICH_SYSREGS: dict[str, SysReg] = {r.name: r for r in _ich_table()}
ICH_SYSREGS_BY_ENCODING: dict[tuple[int, int, int, int, int], SysReg] = {
    r.encoding: r for r in ICH_SYSREGS.values()}

assert len(SYSREGS_BY_ENCODING) == len(SYSREGS)
assert len(ICH_SYSREGS_BY_ENCODING) == len(ICH_SYSREGS)


def encode(op0: int, op1: int, crn: int, crm: int, op2: int) -> int:
    """Pack a system-register encoding as KVM's CPU_SYSREGS attribute does:
    [15:14] Op0, [13:11] Op1, [10:7] CRn, [6:3] CRm, [2:0] Op2 (kvm-facts §6).

    >>> hex(encode(3, 0, 4, 6, 0))     # ICC_PMR_EL1
    '0xc230'
    """
    fields = (("op0", op0, 3), ("op1", op1, 7), ("CRn", crn, 15), ("CRm", crm, 15), ("op2", op2, 7))
    for label, value, hi in fields:
        _check_int(label, value, 0, hi)
    return (op0 << 14) | (op1 << 11) | (crn << 7) | (crm << 3) | op2


def _lookup(reg: Any, by_name: dict[str, SysReg],
            by_encoding: dict[tuple[int, int, int, int, int], SysReg]) -> SysReg:
    found: SysReg | None = None
    if isinstance(reg, str):
        found = by_name.get(reg)
    elif isinstance(reg, tuple) and len(reg) == 5:
        try:
            op0, op1, crn, crm, op2 = (operator.index(x) for x in reg)
        except TypeError:
            pass
        else:
            found = by_encoding.get((op0, op1, crn, crm, op2))
    if found is None:
        raise UndefinedInstruction(reg)
    return found


def resolve(reg: Any) -> str:
    """The canonical ICC_*_EL1 name of ``reg`` (a name or an
    ``(op0, op1, CRn, CRm, op2)`` tuple).  Anything else is an encoding the
    CPU interface does not decode: :class:`UndefinedInstruction`."""
    return _lookup(reg, SYSREGS, SYSREGS_BY_ENCODING).name


def resolve_ich(reg: Any) -> str:
    """As :func:`resolve`, for the ICH_*_EL2 registers."""
    return _lookup(reg, ICH_SYSREGS, ICH_SYSREGS_BY_ENCODING).name


# --------------------------------------------------------------------------- argument checks


def _check_int(label: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{label} must be an integer, not {type(value).__name__}")
    value = int(value)
    if not lo <= value <= hi:
        raise ValueError(f"{label} {value:#x} is outside {lo:#x}..{hi:#x}")
    return value


def _check_value(value: Any) -> int:
    """A system-register transfer is one 64-bit X register."""
    return _check_int("value", value, 0, U64)


def check_geometry(nr_lrs: int, pri_bits: int, pre_bits: int) -> None:
    """ICH_VTR_EL2 limits (IHI 0069 §12.4.9): 1..16 list registers, 5..7
    priority bits, 5..7 preemption bits, and PREbits <= PRIbits (a group
    priority cannot have more bits than the priority)."""
    _check_int("nr_lrs", nr_lrs, 1, ich.MAX_LRS)
    _check_int("pri_bits", pri_bits, 5, 7)
    _check_int("pre_bits", pre_bits, 5, pri_bits)


# --------------------------------------------------------------------------- architectural rules


def priority_mask(pri_bits: int) -> int:
    """The implemented bits of an 8-bit priority: the top ``pri_bits``
    (IHI 0069 §4.8, "Interrupt prioritization"; unimplemented low bits RAZ)."""
    return (0xFF << (8 - pri_bits)) & 0xFF


def vpmr(vmcr: int, pri_bits: int) -> int:
    """ICV_PMR_EL1 (IHI 0069 §12.3): ICH_VMCR_EL2.VPMR with the unimplemented
    low priority bits reading as zero."""
    return ((vmcr & ich.VMCR_PMR_MASK) >> ich.VMCR_PMR_SHIFT) & priority_mask(pri_bits)


def lr_state(lr: int) -> int:
    """ICH_LR<n>_EL2.State: 0 invalid, 1 pending, 2 active, 3 pending+active."""
    return (lr >> 62) & 3


def lr_group(lr: int) -> int:
    return (lr >> 60) & 1


def lr_priority(lr: int, pri_bits: int) -> int:
    """The significant part of ICH_LR<n>_EL2.Priority."""
    return (lr >> ich.LR_PRIORITY_SHIFT) & priority_mask(pri_bits)


def lr_vintid(lr: int) -> int:
    return lr & ich.LR_VINTID_MASK


def lr_pintid(lr: int) -> int:
    return (lr & ich.LR_PINTID_MASK) >> ich.LR_PINTID_SHIFT


def group_enabled(vmcr: int, group: int) -> bool:
    """ICH_VMCR_EL2.VENG0 / VENG1 (ICV_IGRPEN0_EL1 / ICV_IGRPEN1_EL1)."""
    return bool(vmcr & (ich.VMCR_ENG1 if group else ich.VMCR_ENG0))


def min_bpr0(pre_bits: int) -> int:
    """The smallest binary point a Group 0 BPR holds: 7 - PREbits, so the
    group priority keeps exactly the implemented preemption bits
    (IHI 0069 §4.8, "Priority grouping"; 5 preemption bits -> 2)."""
    return 7 - pre_bits


def min_bpr1(pre_bits: int) -> int:
    """The smallest Group 1 binary point: one more than the Group 0 minimum
    (IHI 0069 §12.3, ICV_BPR1_EL1)."""
    return min_bpr0(pre_bits) + 1


def bpr0(vmcr: int, pre_bits: int) -> int:
    """Effective VBPR0.  Choice: a stored value below the minimum (the reset
    VMCR is 0) behaves, and reads, as the minimum."""
    return max((vmcr & ich.VMCR_BPR0_MASK) >> ich.VMCR_BPR0_SHIFT, min_bpr0(pre_bits))


def bpr1(vmcr: int, pre_bits: int) -> int:
    """Effective ICV_BPR1_EL1 as read: with VCBPR set it is min(VBPR0 + 1, 7)
    (IHI 0069 §12.3, ICV_BPR1_EL1; kvm-facts §6), else the stored VBPR1
    clamped up to its minimum as for :func:`bpr0`."""
    if vmcr & ich.VMCR_CBPR:
        return min(bpr0(vmcr, pre_bits) + 1, 7)
    return max((vmcr & ich.VMCR_BPR1_MASK) >> ich.VMCR_BPR1_SHIFT, min_bpr1(pre_bits))


def group_priority(priority: int, group: int, vmcr: int, pre_bits: int) -> int:
    """The group (preemption) priority of an interrupt (IHI 0069 §4.8,
    "Priority grouping"; ICV_BPR0_EL1/ICV_BPR1_EL1 in §12.3).

    Group 0, or Group 1 with VCBPR=1: binary point N = VBPR0 and the group
    priority is bits [7:N+1].  Group 1 with VCBPR=0: the Group 1 binary point
    is offset by one, N = VBPR1 - 1, so the group priority is bits [7:VBPR1].
    """
    if group and not vmcr & ich.VMCR_CBPR:
        point = bpr1(vmcr, pre_bits) - 1
    else:
        point = bpr0(vmcr, pre_bits)
    return priority & (0xFF << (point + 1)) & 0xFF


def apr_index(group_prio: int, pre_bits: int) -> int:
    """The active-priority bit of a group priority: one bit per preemption
    level, priority >> (8 - PREbits) (IHI 0069 §12.4.1, ICH_AP0R<n>_EL2)."""
    return group_prio >> (8 - pre_bits)


def highest_active(ap0: Sequence[int], ap1: Sequence[int], pre_bits: int) -> int:
    """Index of the lowest set bit over both groups' active-priority
    registers (the highest active priority), or -1 with none set."""
    for n in range(ich.nr_aprs(pre_bits)):
        bits = int(ap0[n]) | int(ap1[n])
        if bits:
            return n * APR_BITS + ((bits & -bits).bit_length() - 1)
    return -1


def running_priority(ap0: Sequence[int], ap1: Sequence[int], pre_bits: int) -> int:
    """ICV_RPR_EL1: the highest active group priority, or 0xFF (idle) with no
    active-priority bit set (IHI 0069 §12.3, ICV_RPR_EL1; the physical
    running priority of §4.8 is defined the same way)."""
    idx = highest_active(ap0, ap1, pre_bits)
    return IDLE_PRIORITY if idx < 0 else idx << (8 - pre_bits)


def hppi(lrs: Sequence[int], nr_lrs: int, vmcr: int, pri_bits: int) -> int:
    """The list register holding the highest priority pending virtual
    interrupt, or -1.

    Candidates are implemented LRs in the Pending state exactly (State 01; a
    pending+active interrupt is not signalled while active) whose group is
    enabled in ICH_VMCR_EL2; the lowest significant priority wins and a tie
    goes to the lowest LR index (IHI 0069 §6, virtual interrupt signalling;
    the spec leaves ties IMPLEMENTATION DEFINED -- choice: lowest index)."""
    best, best_prio = -1, 0x100
    for n in range(nr_lrs):
        lr = int(lrs[n])
        if lr_state(lr) != 1 or not group_enabled(vmcr, lr_group(lr)):
            continue
        prio = lr_priority(lr, pri_bits)
        if prio < best_prio:
            best, best_prio = n, prio
    return best


def find_active_lr(lrs: Sequence[int], nr_lrs: int, vintid: int) -> int:
    """The lowest implemented LR whose vINTID is ``vintid`` and whose State
    has Active set (10 or 11), or -1 (IHI 0069 pseudocode
    FindActiveVirtualInterrupt)."""
    for n in range(nr_lrs):
        lr = int(lrs[n])
        if lr & ich.LR_ACTIVE and lr_vintid(lr) == vintid:
            return n
    return -1


def eisr(lrs: Sequence[int], nr_lrs: int) -> int:
    """ICH_EISR_EL2 (IHI 0069 §12.4.3): bit n when LR n has State 00, HW 0
    and EOI 1 -- a deactivation that asks for an EOI maintenance interrupt."""
    out = 0
    for n in range(nr_lrs):
        lr = int(lrs[n])
        if not lr & (ich.LR_STATE_MASK | ich.LR_HW) and lr & ich.LR_EOI:
            out |= 1 << n
    return out


def elrsr(lrs: Sequence[int], nr_lrs: int) -> int:
    """ICH_ELRSR_EL2 (IHI 0069 §12.4.4): bit n when LR n is free -- State 00
    and not holding an EOI maintenance request (HW 0 and EOI 1)."""
    out = 0
    for n in range(nr_lrs):
        lr = int(lrs[n])
        if lr & ich.LR_STATE_MASK:
            continue
        if not lr & ich.LR_HW and lr & ich.LR_EOI:
            continue
        out |= 1 << n
    return out


def eoicount(hcr: int) -> int:
    return (hcr & ich.HCR_EOICOUNT_MASK) >> ich.HCR_EOICOUNT_SHIFT


def misr(lrs: Sequence[int], nr_lrs: int, hcr: int, vmcr: int) -> int:
    """ICH_MISR_EL2 (IHI 0069 §12.4.7; kvm-facts §4.2).  Choice: the
    conditions are reported whatever ICH_HCR_EL2.En is (En only gates the
    maintenance interrupt itself)."""
    states = [lr_state(int(lrs[n])) for n in range(nr_lrs)]
    out = 0
    if eisr(lrs, nr_lrs):
        out |= ich.MISR_EOI
    if hcr & ich.HCR_UIE and sum(1 for s in states if s != 0) <= 1:
        out |= ich.MISR_U
    if hcr & ich.HCR_LRENPIE and eoicount(hcr):
        out |= ich.MISR_LRENP
    if hcr & ich.HCR_NPIE and 1 not in states:
        out |= ich.MISR_NP
    eng0, eng1 = bool(vmcr & ich.VMCR_ENG0), bool(vmcr & ich.VMCR_ENG1)
    if hcr & ich.HCR_VGRP0EIE and eng0:
        out |= ich.MISR_VGRP0E
    if hcr & ich.HCR_VGRP0DIE and not eng0:
        out |= ich.MISR_VGRP0D
    if hcr & ich.HCR_VGRP1EIE and eng1:
        out |= ich.MISR_VGRP1E
    if hcr & ich.HCR_VGRP1DIE and not eng1:
        out |= ich.MISR_VGRP1D
    return out


# --------------------------------------------------------------------------- hooks


class CpuIfHooks(Protocol):
    """What the virtual CPU interface hands to the hypervisor / host GIC."""

    def sgi(self, name: str, value: int) -> None:
        """A write to ICC_SGI1R_EL1 / ICC_ASGI1R_EL1 / ICC_SGI0R_EL1: KVM
        traps SGI generation and emulates it (kvm-facts §3.4)."""

    def dir_trap(self, intid: int) -> None:
        """ICC_DIR_EL1 written while ICH_HCR_EL2.TDIR is set (trapped to EL2)."""

    def deactivate_physical(self, pintid: int) -> None:
        """A list register with HW=1 was deactivated: the hardware
        deactivates physical INTID ``pintid`` on the host GIC."""


# --------------------------------------------------------------------------- shared state access


class _VcpuIfState:
    """The ``ich_*`` fields of one VCPU_IF record and the hardware geometry."""

    def __init__(self, records: np.ndarray, index: int, nr_lrs: int, pri_bits: int, pre_bits: int) -> None:
        if not isinstance(records, np.ndarray) or records.dtype != ich.VCPU_IF or records.ndim != 1:
            raise TypeError("records must be a 1-D numpy array of vgic.ich.VCPU_IF")
        _check_int("index", index, 0, len(records) - 1)
        check_geometry(nr_lrs, pri_bits, pre_bits)
        self.index = int(index)
        self.nr_lrs = int(nr_lrs)
        self.pri_bits = int(pri_bits)
        self.pre_bits = int(pre_bits)
        self.nr_aprs = ich.nr_aprs(self.pre_bits)
        self._records = records
        # Views into the record: writes through them land in `records`.
        self._lrs = records["ich_lr"][self.index]
        self._aprs = (records["ich_ap0r"][self.index], records["ich_ap1r"][self.index])

    # ---- scalar registers
    @property
    def hcr(self) -> int:
        return int(self._records["ich_hcr"][self.index])

    @hcr.setter
    def hcr(self, value: int) -> None:
        self._records["ich_hcr"][self.index] = value

    @property
    def vmcr(self) -> int:
        return int(self._records["ich_vmcr"][self.index])

    @vmcr.setter
    def vmcr(self, value: int) -> None:
        self._records["ich_vmcr"][self.index] = value

    def _set_vmcr_field(self, mask: int, shift: int, value: int) -> None:
        self.vmcr = (self.vmcr & ~mask) | ((value << shift) & mask)

    def lr(self, n: int) -> int:
        return int(self._lrs[n])

    def set_lr(self, n: int, value: int) -> None:
        self._lrs[n] = value


# --------------------------------------------------------------------------- guest view


_APR_NAME = re.compile(r"^ICC_AP([01])R([0-3])_EL1$")
ICV_TRAP = -2           # vgic._core.icv / vgic._pure.icv: DIR trapped by TDIR
# Names served straight from the dispatch tables: every readable or writable
# register but the APRs (whose index is checked against PREbits).
_PLAIN_READS = frozenset(
    s.name for s in SYSREGS.values() if s.access != WO and not _APR_NAME.match(s.name))
_PLAIN_WRITES = frozenset(
    s.name for s in SYSREGS.values() if s.access != RO and not _APR_NAME.match(s.name))


class GuestCpuIf(_VcpuIfState):
    """The guest's ICC_*_EL1 accesses, served by the virtual CPU interface
    (the ICV_*_EL1 registers, IHI 0069 §12.3) from the ``ich_*`` state of
    vCPU ``index`` in ``records`` (writable and C-contiguous: the ``icv``
    kernel works on it in place; a VM passes its own kernel as ``icv``)."""

    def __init__(self, records: np.ndarray, index: int, nr_lrs: int, pri_bits: int, pre_bits: int,
                 hooks: CpuIfHooks, icv: Any = None) -> None:
        super().__init__(records, index, nr_lrs, pri_bits, pre_bits)
        self.hooks = hooks
        if icv is None:
            from vgic import _backend
            icv = _backend.icv.Icv(records, nr_lrs, pri_bits, pre_bits)
        #: The acknowledge/EOI/DIR kernel (``vgic._core.icv`` or its twin).
        self.icv = icv
        i = self.index
        self._readers: dict[str, Any] = {
            "ICC_PMR_EL1": self._read_pmr,
            "ICC_IAR0_EL1": lambda: icv.acknowledge(i, 0),
            "ICC_IAR1_EL1": lambda: icv.acknowledge(i, 1),
            "ICC_HPPIR0_EL1": lambda: icv.hppir(i, 0),
            "ICC_HPPIR1_EL1": lambda: icv.hppir(i, 1),
            "ICC_BPR0_EL1": lambda: bpr0(self.vmcr, self.pre_bits),
            "ICC_BPR1_EL1": lambda: bpr1(self.vmcr, self.pre_bits),
            "ICC_RPR_EL1": lambda: icv.rpr(i),
            "ICC_CTLR_EL1": self._read_ctlr,
            "ICC_SRE_EL1": lambda: SRE_VALUE,
            "ICC_IGRPEN0_EL1": lambda: int(group_enabled(self.vmcr, 0)),
            "ICC_IGRPEN1_EL1": lambda: int(group_enabled(self.vmcr, 1)),
        }
        self._writers: dict[str, Any] = {
            "ICC_PMR_EL1": self._write_pmr,
            "ICC_EOIR0_EL1": lambda v: self._after(icv.eoi(i, 0, v), v),
            "ICC_EOIR1_EL1": lambda v: self._after(icv.eoi(i, 1, v), v),
            "ICC_DIR_EL1": lambda v: self._after(icv.deactivate(i, v), v),
            "ICC_BPR0_EL1": self._write_bpr0,
            "ICC_BPR1_EL1": self._write_bpr1,
            "ICC_CTLR_EL1": self._write_ctlr,
            "ICC_SRE_EL1": lambda v: None,
            "ICC_IGRPEN0_EL1": lambda v: self._set_vmcr_field(ich.VMCR_ENG0, 0, v & 1),
            "ICC_IGRPEN1_EL1": lambda v: self._set_vmcr_field(ich.VMCR_ENG1, 1, v & 1),
            "ICC_SGI1R_EL1": lambda v: self.hooks.sgi("ICC_SGI1R_EL1", v),
            "ICC_ASGI1R_EL1": lambda v: self.hooks.sgi("ICC_ASGI1R_EL1", v),
            "ICC_SGI0R_EL1": lambda v: self.hooks.sgi("ICC_SGI0R_EL1", v),
        }

    # ---- public entry points
    def _after(self, ret: int, value: int) -> None:
        # What the kernel hands back: a physical INTID an LR with HW = 1
        # deactivates, or the TDIR trap of a DIR write (kvm-facts §4.5).
        if ret >= 0:
            self.hooks.deactivate_physical(ret)
        elif ret == ICV_TRAP:
            self.hooks.dir_trap(value & INTID_FIELD)

    def read(self, reg: Any) -> int:
        """An MRS of ``reg`` (name or encoding tuple) by the guest."""
        fast = self._readers.get(reg) if isinstance(reg, str) and reg in _PLAIN_READS else None
        if fast is not None:
            return int(fast())
        sysreg = SYSREGS[resolve(reg)]
        if sysreg.access == WO:
            # Reads of EOIR/DIR/SGI registers UNDEF (IHI 0069 §12.3; kvm-facts §3.4).
            raise UndefinedInstruction(reg, f"{sysreg.name} is write-only")
        apr = self._apr(sysreg.name, reg)
        if apr is not None:
            group, n = apr
            return int(self._aprs[group][n])
        return int(self._readers[sysreg.name]())

    def write(self, reg: Any, value: int) -> None:
        """An MSR of ``value`` to ``reg`` (name or encoding tuple) by the guest."""
        if isinstance(reg, str) and reg in _PLAIN_WRITES:
            self._writers[reg](_check_value(value))
            return
        sysreg = SYSREGS[resolve(reg)]
        if sysreg.access == RO:
            raise UndefinedInstruction(reg, f"{sysreg.name} is read-only")
        apr = self._apr(sysreg.name, reg)
        value = _check_value(value)
        if apr is not None:
            group, n = apr
            # ICV_AP{0,1}R<n>_EL1 alias ICH_AP{0,1}R<n>_EL2 (IHI 0069 §12.3); [63:32] RES0.
            self._aprs[group][n] = value & 0xFFFFFFFF
            return
        self._writers[sysreg.name](value)

    # ---- active priorities
    def _apr(self, name: str, reg: Any) -> tuple[int, int] | None:
        """(group, n) for ICC_AP{0,1}R<n>_EL1; an n the preemption bits do
        not imply is not implemented and UNDEFs (IHI 0069 §12.3, ICV_AP0R<n>_EL1)."""
        m = _APR_NAME.match(name)
        if m is None:
            return None
        group, n = int(m.group(1)), int(m.group(2))
        if n >= self.nr_aprs:
            raise UndefinedInstruction(reg, f"{name} is not implemented with {self.pre_bits} preemption bits")
        return group, n

    # ---- PMR, BPRs, CTLR
    def _read_pmr(self) -> int:
        return vpmr(self.vmcr, self.pri_bits)

    def _write_pmr(self, value: int) -> None:
        # Unimplemented bits are WI; [63:8] RES0.
        self._set_vmcr_field(ich.VMCR_PMR_MASK, ich.VMCR_PMR_SHIFT, value & priority_mask(self.pri_bits))

    def _write_bpr0(self, value: int) -> None:
        # ICV_BPR0_EL1 (§12.3): a value below the minimum is stored as the minimum.
        self._set_vmcr_field(ich.VMCR_BPR0_MASK, ich.VMCR_BPR0_SHIFT, max(value & 7, min_bpr0(self.pre_bits)))

    def _write_bpr1(self, value: int) -> None:
        # ICV_BPR1_EL1 (§12.3): with VCBPR set the register is an alias of
        # BPR0 + 1 and writes are ignored; else clamp up to the minimum.
        if self.vmcr & ich.VMCR_CBPR:
            return
        self._set_vmcr_field(ich.VMCR_BPR1_MASK, ich.VMCR_BPR1_SHIFT, max(value & 7, min_bpr1(self.pre_bits)))

    def _read_ctlr(self) -> int:
        # ICV_CTLR_EL1 (§12.3): CBPR and EOImode from ICH_VMCR_EL2; PRIbits,
        # IDbits (0: 16-bit), SEIS (0) and A3V (1) as ICH_VTR_EL2 reports them.
        vmcr = self.vmcr
        value = CTLR_A3V | ((self.pri_bits - 1) << CTLR_PRIBITS_SHIFT) | (0 << CTLR_IDBITS_SHIFT)
        if vmcr & ich.VMCR_CBPR:
            value |= CTLR_CBPR
        if vmcr & ich.VMCR_EOIM:
            value |= CTLR_EOIMODE
        return value

    def _write_ctlr(self, value: int) -> None:
        # Only CBPR and EOImode are writable; the rest is RO or RES0.
        vmcr = self.vmcr & ~(ich.VMCR_CBPR | ich.VMCR_EOIM)
        if value & CTLR_CBPR:
            vmcr |= ich.VMCR_CBPR
        if value & CTLR_EOIMODE:
            vmcr |= ich.VMCR_EOIM
        self.vmcr = vmcr

    # Acknowledge, EOI, DIR, HPPIR and RPR are the ``icv`` kernel's
    # (vgic._core.icv, twin vgic._pure.icv), built on the rules above.


# --------------------------------------------------------------------------- hypervisor view


_ICH_INDEXED = re.compile(r"^ICH_(LR|AP0R|AP1R)(\d+)_EL2$")


class HypRegs(_VcpuIfState):
    """The hypervisor's ICH_*_EL2 registers (IHI 0069 §12.4) of vCPU
    ``index`` in ``records``."""

    def __init__(self, records: np.ndarray, index: int, nr_lrs: int, pri_bits: int, pre_bits: int) -> None:
        super().__init__(records, index, nr_lrs, pri_bits, pre_bits)
        self.vtr = ich.vtr(self.nr_lrs, self.pri_bits, self.pre_bits)

    def _indexed(self, name: str, reg: Any) -> tuple[str, int] | None:
        m = _ICH_INDEXED.match(name)
        if m is None:
            return None
        kind, n = m.group(1), int(m.group(2))
        limit = self.nr_lrs if kind == "LR" else self.nr_aprs
        if n >= limit:
            # ICH_LR<n>_EL2 beyond ICH_VTR_EL2.ListRegs and APRs beyond those
            # PREbits implies are UNDEFINED (§12.4.1, §12.4.2, §12.4.6).
            raise UndefinedInstruction(reg, f"{name} is not implemented here")
        return kind, n

    def read(self, reg: Any) -> int:
        sysreg = ICH_SYSREGS[resolve_ich(reg)]
        idx = self._indexed(sysreg.name, reg)
        if idx is not None:
            kind, n = idx
            if kind == "LR":
                return self.lr(n)
            return int(self._aprs[0 if kind == "AP0R" else 1][n])
        name = sysreg.name
        if name == "ICH_HCR_EL2":
            return self.hcr
        if name == "ICH_VMCR_EL2":
            return self.vmcr
        if name == "ICH_VTR_EL2":
            return self.vtr
        if name == "ICH_EISR_EL2":
            return eisr(self._lrs, self.nr_lrs)
        if name == "ICH_ELRSR_EL2":
            return elrsr(self._lrs, self.nr_lrs)
        if name == "ICH_MISR_EL2":
            return misr(self._lrs, self.nr_lrs, self.hcr, self.vmcr)
        raise AssertionError(name)  # pragma: no cover - every table entry is handled

    def write(self, reg: Any, value: int) -> None:
        sysreg = ICH_SYSREGS[resolve_ich(reg)]
        if sysreg.access == RO:
            raise UndefinedInstruction(reg, f"{sysreg.name} is read-only")
        idx = self._indexed(sysreg.name, reg)
        value = _check_value(value)
        if idx is not None:
            kind, n = idx
            if kind == "LR":
                # RES0 bits depend on the HW bit being written (§12.4.6);
                # unimplemented low priority bits are not stored.
                res0 = ich.LR_RES0_HW if value & ich.LR_HW else ich.LR_RES0_SW
                unimpl = (~priority_mask(self.pri_bits) & 0xFF) << ich.LR_PRIORITY_SHIFT
                self.set_lr(n, value & ~(res0 | unimpl))
            else:
                self._aprs[0 if kind == "AP0R" else 1][n] = value & 0xFFFFFFFF
            return
        if sysreg.name == "ICH_HCR_EL2":
            self.hcr = value & ich.HCR_WRITABLE
        elif sysreg.name == "ICH_VMCR_EL2":
            self.vmcr = value & ich.VMCR_WRITABLE
        else:  # pragma: no cover - every RW table entry is handled
            raise AssertionError(sysreg.name)


__all__ = [
    "GuestCpuIf", "HypRegs", "CpuIfHooks", "SysReg", "SYSREGS", "SYSREGS_BY_ENCODING", "ICH_SYSREGS",
    "ICH_SYSREGS_BY_ENCODING", "encode", "resolve", "resolve_ich", "priority_mask", "group_priority",
    "running_priority", "highest_active", "vpmr", "hppi", "find_active_lr", "eisr", "elrsr", "misr",
    "bpr0", "bpr1", "min_bpr0", "min_bpr1", "apr_index", "check_geometry", "INTID_SPURIOUS",
]
