"""Pure-Python twin of ``vgic._core.icv``: the guest's ICV_IAR/EOIR/DIR/
HPPIR/RPR accesses, applying the rule functions of :mod:`vgic.cpuif` one by
one (IHI 0069 §12.3, §6, §4.8).  Same contract as the core (see
``vgic/_core/icv.pyi``)."""
from __future__ import annotations

from typing import Any

import numpy as np

from vgic import ich

#: Return codes of eoi/deactivate besides a physical INTID.
NONE = -1
TRAP = -2
U64 = ich.U64


class Icv:
    """The guest's acknowledge / EOI / deactivate accesses on ``records``."""

    def __init__(self, records: np.ndarray, nr_lrs: int, pri_bits: int, pre_bits: int) -> None:
        records = ich.check_records(records)
        if records.shape[0] == 0:
            raise ValueError("records must hold at least one vCPU")
        self.nr_lrs, self.pri_bits, self.pre_bits = ich.check_geometry(nr_lrs, pri_bits, pre_bits)
        self.records = records
        self.nr_aprs = ich.nr_aprs(self.pre_bits)

    # ---- state of one vCPU
    def _rec(self, i: int) -> Any:
        return self.records[ich.check_int("vcpu", i, 0, len(self.records) - 1)]

    @staticmethod
    def _group(group: int) -> int:
        return ich.check_int("group", group, 0, 1)

    @staticmethod
    def _value(value: int) -> int:
        # One 64-bit X register (integers only: a float is a TypeError).
        return ich.check_int("value", value, 0, U64)

    def _rpr_of(self, rec: Any) -> int:
        return ich.running_priority(rec["ich_ap0r"], rec["ich_ap1r"], self.pre_bits)

    def _bump_eoicount(self, rec: Any) -> None:
        hcr = int(rec["ich_hcr"])
        count = (ich.eoicount(hcr) + 1) & 0x1F
        rec["ich_hcr"] = (hcr & ~ich.HCR_EOICOUNT_MASK) | (count << ich.HCR_EOICOUNT_SHIFT)

    @staticmethod
    def _deactivate_lr(rec: Any, n: int) -> int:
        lr = int(rec["ich_lr"][n])
        rec["ich_lr"][n] = lr & ~ich.LR_ACTIVE
        return ich.lr_pintid(lr) if lr & ich.LR_HW else NONE

    def _priority_drop(self, rec: Any, group: int) -> bool:
        idx = ich.highest_active(rec["ich_ap0r"], rec["ich_ap1r"], self.pre_bits)
        if idx < 0:
            return False
        reg, bit = divmod(idx, ich.APR_BITS)
        aprs = rec["ich_ap1r" if group else "ich_ap0r"]
        if not int(aprs[reg]) & (1 << bit):
            return False
        aprs[reg] = int(aprs[reg]) & ~(1 << bit)
        return True

    # ---- the accesses
    def acknowledge(self, i: int, group: int) -> int:
        """ICV_IAR<group>_EL1 read: the acknowledged INTID, or 1023."""
        group = self._group(group)
        rec = self._rec(i)
        lrs, vmcr = rec["ich_lr"], int(rec["ich_vmcr"])
        n = ich.hppi(lrs, self.nr_lrs, vmcr, self.pri_bits)
        if n < 0:
            return ich.INTID_SPURIOUS
        lr = int(lrs[n])
        if ich.lr_group(lr) != group:
            return ich.INTID_SPURIOUS
        prio = ich.lr_priority(lr, self.pri_bits)
        if prio >= ich.vpmr(vmcr, self.pri_bits):
            return ich.INTID_SPURIOUS
        gprio = ich.group_priority(prio, group, vmcr, self.pre_bits)
        if gprio >= self._rpr_of(rec):
            return ich.INTID_SPURIOUS
        lrs[n] = (lr & ~ich.LR_STATE_MASK) | ich.LR_ACTIVE
        reg, bit = divmod(ich.apr_index(gprio, self.pre_bits), ich.APR_BITS)
        aprs = rec["ich_ap1r" if group else "ich_ap0r"]
        aprs[reg] = int(aprs[reg]) | (1 << bit)
        return ich.lr_vintid(lr) & ich.INTID_FIELD

    def eoi(self, i: int, group: int, value: int) -> int:
        """ICV_EOIR<group>_EL1 write: a physical INTID to deactivate, or -1."""
        group = self._group(group)
        rec = self._rec(i)
        intid = self._value(value) & ich.INTID_FIELD
        if ich.SPECIAL_FIRST <= intid <= ich.SPECIAL_LAST:
            return NONE
        dropped = self._priority_drop(rec, group)
        lpi = intid >= ich.LPI_BASE
        if int(rec["ich_vmcr"]) & ich.VMCR_EOIM and not lpi:
            return NONE
        n = ich.find_active_lr(rec["ich_lr"], self.nr_lrs, intid)
        if n < 0:
            if dropped and not lpi:
                self._bump_eoicount(rec)
            return NONE
        if ich.lr_group(int(rec["ich_lr"][n])) != group:
            return NONE
        return self._deactivate_lr(rec, n)

    def deactivate(self, i: int, value: int) -> int:
        """ICV_DIR_EL1 write: a physical INTID to deactivate, -1, or -2 (trap)."""
        rec = self._rec(i)
        intid = self._value(value) & ich.INTID_FIELD
        if int(rec["ich_hcr"]) & ich.HCR_TDIR:
            return TRAP
        if not int(rec["ich_vmcr"]) & ich.VMCR_EOIM:
            return NONE
        if ich.SPECIAL_FIRST <= intid <= ich.SPECIAL_LAST or intid >= ich.LPI_BASE:
            return NONE
        n = ich.find_active_lr(rec["ich_lr"], self.nr_lrs, intid)
        if n < 0:
            self._bump_eoicount(rec)
            return NONE
        return self._deactivate_lr(rec, n)

    def hppir(self, i: int, group: int) -> int:
        """ICV_HPPIR<group>_EL1: the HPPI's INTID if of this group, else 1023."""
        group = self._group(group)
        rec = self._rec(i)
        n = ich.hppi(rec["ich_lr"], self.nr_lrs, int(rec["ich_vmcr"]), self.pri_bits)
        if n < 0:
            return ich.INTID_SPURIOUS
        lr = int(rec["ich_lr"][n])
        if ich.lr_group(lr) != group:
            return ich.INTID_SPURIOUS
        return ich.lr_vintid(lr) & ich.INTID_FIELD

    def rpr(self, i: int) -> int:
        """ICV_RPR_EL1: the running priority (0xFF when idle)."""
        return self._rpr_of(self._rec(i))

    def signalled(self, i: int) -> int:
        """The virtual interrupt signalled now: 1 (vIRQ), 0 (vFIQ) or -1."""
        rec = self._rec(i)
        lrs, vmcr = rec["ich_lr"], int(rec["ich_vmcr"])
        n = ich.hppi(lrs, self.nr_lrs, vmcr, self.pri_bits)
        if n < 0:
            return -1
        lr = int(lrs[n])
        prio = ich.lr_priority(lr, self.pri_bits)
        if prio >= ich.vpmr(vmcr, self.pri_bits):
            return -1
        group = ich.lr_group(lr)
        if ich.group_priority(prio, group, vmcr, self.pre_bits) >= self._rpr_of(rec):
            return -1
        return group

    def misr(self, i: int) -> int:
        """ICH_MISR_EL2 of the modelled hardware."""
        rec = self._rec(i)
        return ich.misr(rec["ich_lr"], self.nr_lrs, int(rec["ich_hcr"]), int(rec["ich_vmcr"]))

    def signals(self, i: int) -> int:
        """SIG_IRQ | SIG_FIQ | SIG_MAINT: what the interface asserts now."""
        group = self.signalled(i)
        out = {1: ich.SIG_IRQ, 0: ich.SIG_FIQ}.get(group, 0)
        if int(self._rec(i)["ich_hcr"]) & ich.HCR_EN and self.misr(i):
            out |= ich.SIG_MAINT
        return out

    def signals_batch(self, idx: Any) -> np.ndarray:
        """signals on the vCPUs in ``idx`` (uint8 results)."""
        return np.array([self.signals(i) for i in self._indices(idx)], dtype=np.uint8)

    # ---- many vCPUs
    def _indices(self, idx: Any) -> list[int]:
        return ich.vcpu_indices(idx, len(self.records)).tolist()

    def acknowledge_batch(self, idx: Any, group: int) -> np.ndarray:
        """acknowledge on the vCPUs in ``idx``, in order (uint32 INTIDs)."""
        self._group(group)
        return np.array([self.acknowledge(i, group) for i in self._indices(idx)], dtype=np.uint32)

    def eoi_batch(self, idx: Any, group: int, values: Any) -> np.ndarray:
        """eoi on the vCPUs in ``idx`` with ``values`` (int64 results)."""
        self._group(group)
        ids_list = self._indices(idx)
        vals = np.asarray(values, dtype=np.uint64)
        if vals.shape != (len(ids_list),):
            raise ValueError("idx and values must be one-dimensional and of one length")
        return np.array([self.eoi(i, group, int(v)) for i, v in zip(ids_list, vals.tolist())],
                        dtype=np.int64)
