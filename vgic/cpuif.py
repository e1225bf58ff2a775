"""The GICv3 virtual CPU interface: the guest's ICC_*_EL1 view and the
hypervisor's ICH_*_EL2 view of the same modelled hardware state.

While a vCPU runs with ICC_SRE_EL2.Enable clear and ICH_HCR_EL2.En set, every
guest access to an ICC_*_EL1 register is served by the virtual CPU interface
(the ICV_*_EL1 registers of IHI 0069 §12.3) from the hypervisor-owned list
registers, ICH_VMCR_EL2 and the active-priority registers (IHI 0069 §12.4).

* :class:`GuestCpuIf` -- ``read``/``write`` of the guest's ICC_*_EL1 registers.
* :class:`HypRegs` -- ``read``/``write`` of the hypervisor's ICH_*_EL2
  registers.

Both act on the ``ich_*`` fields of one :data:`vgic.ich.VCPU_IF` record (the
modelled hardware registers) and never on KVM's saved ``vgic_*`` copy.  The
registers, their encodings and access rights are rows of
:mod:`vgic.sysregs`; the architecture's rules are the functions of
:mod:`vgic.ich`.

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

import re
from typing import Any, Protocol

import numpy as np

from vgic import ich, sysregs
from vgic.errors import UndefinedInstruction
from vgic.sysregs import RO, WO

ICV_TRAP = -2           # vgic._core.icv / vgic._pure.icv: DIR trapped by TDIR


def _check_value(value: Any) -> int:
    """A system-register transfer is one 64-bit X register."""
    return ich.check_int("value", value, 0, ich.U64)


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
        records = ich.check_records(records)
        ich.check_int("index", index, 0, len(records) - 1)
        ich.check_geometry(nr_lrs, pri_bits, pre_bits)
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
_ICC_ROWS = [r for r in sysregs.TABLE if r.owner == sysregs.VGIC_V3 and r.trap != sysregs.EL2]
# Names served straight from the dispatch tables: every readable or writable
# register but the APRs (whose index is checked against PREbits).
_PLAIN_READS = frozenset(
    s.name for s in _ICC_ROWS if s.access != WO and not _APR_NAME.match(s.name))
_PLAIN_WRITES = frozenset(
    s.name for s in _ICC_ROWS if s.access != RO and not _APR_NAME.match(s.name))



def _guest_row(reg: Any) -> sysregs.SysReg:
    """The ICC_*_EL1 row of a guest access; an EL2 register UNDEFs at EL1."""
    row = sysregs.lookup(reg)
    if row.owner != sysregs.VGIC_V3 or row.trap == sysregs.EL2:
        raise UndefinedInstruction(reg, f"{row.name} is not a GICv3 CPU-interface register of the guest")
    return row


def _hyp_row(reg: Any) -> sysregs.SysReg:
    """The ICH_*_EL2 row of a hypervisor access."""
    row = sysregs.lookup(reg)
    if row.owner != sysregs.VGIC_V3 or row.trap != sysregs.EL2:
        raise UndefinedInstruction(reg, f"{row.name} is not an ICH_*_EL2 register")
    return row


class GuestCpuIf(_VcpuIfState):
    """The guest's ICC_*_EL1 accesses, served by the virtual CPU interface
    (the ICV_*_EL1 registers, IHI 0069 §12.3) from the ``ich_*`` state of
    vCPU ``index`` in ``records`` (writable and C-contiguous: the ``icv``
    kernel works on it in place; a VM passes its own kernel as ``icv``)."""

    def __init__(self, records: np.ndarray, index: int, nr_lrs: int, pri_bits: int, pre_bits: int,
                 hooks: CpuIfHooks, icv: Any) -> None:
        super().__init__(records, index, nr_lrs, pri_bits, pre_bits)
        self.hooks = hooks
        #: The acknowledge/EOI/DIR kernel (``vgic._core.icv`` or its twin).
        self.icv = icv
        i = self.index
        self._readers: dict[str, Any] = {
            "ICC_PMR_EL1": self._read_pmr,
            "ICC_IAR0_EL1": lambda: icv.acknowledge(i, 0),
            "ICC_IAR1_EL1": lambda: icv.acknowledge(i, 1),
            "ICC_HPPIR0_EL1": lambda: icv.hppir(i, 0),
            "ICC_HPPIR1_EL1": lambda: icv.hppir(i, 1),
            "ICC_BPR0_EL1": lambda: ich.bpr0(self.vmcr, self.pre_bits),
            "ICC_BPR1_EL1": lambda: ich.bpr1(self.vmcr, self.pre_bits),
            "ICC_RPR_EL1": lambda: icv.rpr(i),
            "ICC_CTLR_EL1": self._read_ctlr,
            "ICC_SRE_EL1": lambda: ich.ICC_SRE_VALUE,
            "ICC_IGRPEN0_EL1": lambda: int(ich.group_enabled(self.vmcr, 0)),
            "ICC_IGRPEN1_EL1": lambda: int(ich.group_enabled(self.vmcr, 1)),
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
            self.hooks.dir_trap(value & ich.INTID_FIELD)

    def read(self, reg: Any) -> int:
        """An MRS of ``reg`` (name or encoding tuple) by the guest."""
        fast = self._readers.get(reg) if isinstance(reg, str) and reg in _PLAIN_READS else None
        if fast is not None:
            return int(fast())
        sysreg = _guest_row(reg)
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
        sysreg = _guest_row(reg)
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
        return ich.vpmr(self.vmcr, self.pri_bits)

    def _write_pmr(self, value: int) -> None:
        # Unimplemented bits are WI; [63:8] RES0.
        self._set_vmcr_field(ich.VMCR_PMR_MASK, ich.VMCR_PMR_SHIFT, value & ich.priority_mask(self.pri_bits))

    def _write_bpr0(self, value: int) -> None:
        # ICV_BPR0_EL1 (§12.3): a value below the minimum is stored as the minimum.
        self._set_vmcr_field(ich.VMCR_BPR0_MASK, ich.VMCR_BPR0_SHIFT, max(value & 7, ich.min_bpr0(self.pre_bits)))

    def _write_bpr1(self, value: int) -> None:
        # ICV_BPR1_EL1 (§12.3): with VCBPR set the register is an alias of
        # BPR0 + 1 and writes are ignored; else clamp up to the minimum.
        if self.vmcr & ich.VMCR_CBPR:
            return
        self._set_vmcr_field(ich.VMCR_BPR1_MASK, ich.VMCR_BPR1_SHIFT, max(value & 7, ich.min_bpr1(self.pre_bits)))

    def _read_ctlr(self) -> int:
        # ICV_CTLR_EL1 (§12.3): CBPR and EOImode from ICH_VMCR_EL2; PRIbits,
        # IDbits (0: 16-bit), SEIS (0) and A3V (1) as ICH_VTR_EL2 reports them.
        vmcr = self.vmcr
        value = ich.CTLR_A3V | ((self.pri_bits - 1) << ich.CTLR_PRIBITS_SHIFT) | (ich.ID_BITS << ich.CTLR_IDBITS_SHIFT)
        if vmcr & ich.VMCR_CBPR:
            value |= ich.CTLR_CBPR
        if vmcr & ich.VMCR_EOIM:
            value |= ich.CTLR_EOIMODE
        return value

    def _write_ctlr(self, value: int) -> None:
        # Only CBPR and EOImode are writable; the rest is RO or RES0.
        vmcr = self.vmcr & ~(ich.VMCR_CBPR | ich.VMCR_EOIM)
        if value & ich.CTLR_CBPR:
            vmcr |= ich.VMCR_CBPR
        if value & ich.CTLR_EOIMODE:
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

    @staticmethod
    def stored_lr(value: int, pri_bits: int) -> int:
        """What ICH_LR<n>_EL2 holds after a write of ``value``: the RES0 bits
        the HW bit selects dropped (§12.4.6), and the unimplemented low
        priority bits not stored."""
        res0 = ich.LR_RES0_HW if value & ich.LR_HW else ich.LR_RES0_SW
        unimpl = (~ich.priority_mask(pri_bits) & 0xFF) << ich.LR_PRIORITY_SHIFT
        return value & ~(res0 | unimpl)

    def read(self, reg: Any) -> int:
        sysreg = _hyp_row(reg)
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
            return ich.eisr(self._lrs, self.nr_lrs)
        if name == "ICH_ELRSR_EL2":
            return ich.elrsr(self._lrs, self.nr_lrs)
        if name == "ICH_MISR_EL2":
            return ich.misr(self._lrs, self.nr_lrs, self.hcr, self.vmcr)
        raise AssertionError(name)  # pragma: no cover - every table entry is handled

    def write(self, reg: Any, value: int) -> None:
        sysreg = _hyp_row(reg)
        if sysreg.access == RO:
            raise UndefinedInstruction(reg, f"{sysreg.name} is read-only")
        idx = self._indexed(sysreg.name, reg)
        value = _check_value(value)
        if idx is not None:
            kind, n = idx
            if kind == "LR":
                self.set_lr(n, self.stored_lr(value, self.pri_bits))
            else:
                self._aprs[0 if kind == "AP0R" else 1][n] = value & 0xFFFFFFFF
            return
        if sysreg.name == "ICH_HCR_EL2":
            self.hcr = value & ich.HCR_WRITABLE
        elif sysreg.name == "ICH_VMCR_EL2":
            # The hardware stores what its fields can hold (VBPR0/VBPR1 at
            # least their minimum, VPMR's implemented bits only).
            self.vmcr = ich.stored_vmcr(value, self.pri_bits, self.pre_bits)
        else:  # pragma: no cover - every RW table entry is handled
            raise AssertionError(sysreg.name)


__all__ = ["GuestCpuIf", "HypRegs", "CpuIfHooks", "ICV_TRAP"]
