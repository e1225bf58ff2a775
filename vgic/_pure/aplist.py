"""Pure-Python twin of ``vgic._core.aplist``: KVM's ap_lists and the LR flush
and fold, written the way KVM writes them, over ``struct vgic_irq`` records.

Each vCPU's ap_list is a list of :class:`vgic._pure.irq.VgicIrq`; an
interrupt's ``ap_vcpu`` is KVM's ``irq->vcpu``.  Same contract as the core
(see ``vgic/_core/aplist.pyi``); kvm-facts §4.4-§4.6, Linux v6.19.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from vgic import gic_state, ich
from vgic._pure.gic import Gic
from vgic._pure.irq import VgicIrq
from vgic.ich import U32
from vgic.regmap import LPI_BASE, NR_PRIVATE_IRQS, NR_SGIS

STAMP_MAX = (1 << 47) - 1       # stamps saturate here, as in the core


class ApLists:
    """KVM's ap_lists of every vCPU of a VM, with the LR flush and fold."""

    def __init__(self, gic: Gic, records: np.ndarray, nr_lrs: int, reverse: bool) -> None:
        if not isinstance(gic, Gic):
            raise TypeError(f"gic must be a vgic._pure.gic.Gic, not {type(gic).__name__}")
        if getattr(gic, "_nr_vcpus", None) is None:     # Gic.__new__ without __init__
            raise TypeError("gic is not initialised")
        records = ich.check_records(records)
        if records.shape[0] != gic.nr_vcpus:
            raise ValueError(f"{records.shape[0]} records for {gic.nr_vcpus} vCPUs")
        self.nr_lrs = ich.check_int("nr_lrs", nr_lrs, 1, ich.MAX_LRS)
        self.gic = gic
        self.records = records
        self.reverse = bool(reverse)
        gic.clear_queued()
        #: Each vCPU's ap_list: the Gic's, which the LPI paths change too.
        self.lists: list[list[VgicIrq]] = gic._ap_lists
        #: KVM 6.19's count of SPIs in flight (kvm->arch.vgic.active_spis).
        self.active_spis = 0

    def _slot(self, n: int) -> int:
        return ich.MAX_LRS - 1 - n if self.reverse else n

    def _vcpu(self, vcpu: Any) -> int:
        return ich.check_int("vcpu", vcpu, 0, self.gic.nr_vcpus - 1)

    def _checked(self, vcpu: Any, intid: Any) -> tuple[int, VgicIrq]:
        v = self._vcpu(vcpu)
        i = ich.check_int("intid", intid, 0, U32)
        if not self.gic._valid(i):
            if i >= LPI_BASE:
                raise ValueError(f"intid {i} is not an LPI that exists")
            raise ValueError(f"intid {i} is not below nr_irqs {self.gic.nr_irqs}")
        return v, self.gic._irq(v, i)

    # ---------------------------------------------------------------- oracle
    def _oracle(self, irq: VgicIrq) -> int:
        """vgic_target_oracle()."""
        if irq.active:
            return irq.ap_vcpu if irq.ap_vcpu >= 0 else irq.target_vcpu
        if irq.enabled and irq.pending():
            return irq.target_vcpu if self.gic._dist_enabled else -1
        return -1

    # --------------------------------------------------------------- ap_list
    def _queue_new(self, vcpu: int) -> None:
        """Append what is deliverable here and queued nowhere, in the order it
        became deliverable (its stamp, then INTID): where KVM's
        vgic_queue_irq_unlock would have appended it."""
        fresh = []
        for intid in self.gic.irq_scan(vcpu):
            irq = self.gic._irq(vcpu, intid)
            if irq.ap_vcpu < 0 and self._oracle(irq) == vcpu:
                fresh.append(irq)
        fresh.sort(key=lambda irq: (min(irq.seq, STAMP_MAX), irq.intid))
        for irq in fresh:
            self.lists[vcpu].append(irq)
            irq.ap_vcpu = vcpu
            if NR_PRIVATE_IRQS <= irq.intid < LPI_BASE:
                self.active_spis += 1       # every SPI queued counts, a re-queue too

    def _prune(self, vcpu: int) -> None:
        """vgic_prune_ap_list(): keep what is still this vCPU's, move to the
        tail of its new vCPU's list what belongs elsewhere, drop the rest."""
        keep = []
        for irq in self.lists[vcpu]:
            target = self._oracle(irq)
            if target == vcpu:
                keep.append(irq)
            elif target >= 0:
                self.lists[target].append(irq)
                irq.ap_vcpu = target
            else:
                irq.ap_vcpu = -1
                if irq.intid >= LPI_BASE:
                    self.gic.lpi_release(irq.intid)
        self.lists[vcpu] = keep
        self.gic.lpi_sweep_orphans(vcpu)

    def _sort(self, vcpu: int, vmcr: int) -> None:
        """KVM 6.19's comparator (kvm-facts §4.6) as a stable sort key."""
        def key(irq: VgicIrq) -> tuple[bool, bool, bool, int, int]:
            group_on = vmcr & (ich.VMCR_ENG1 if irq.group else ich.VMCR_ENG0)
            ready = irq.enabled and irq.pending() and not irq.active
            return (self._oracle(irq) != vcpu, not group_on, not ready, irq.priority, not irq.hw)
        self.lists[vcpu].sort(key=key)

    # ----------------------------------------------------------------- flush
    @staticmethod
    def _populate_lr(irq: VgicIrq) -> int:
        """vgic_v3_populate_lr(); a HW-mapped interrupt names its physical
        INTID, is never pending and active, and (level) drops its line once
        the LR carries it (KVM sees only rising edges of a mapped level IRQ)."""
        edge = irq.config_edge
        lr = ich.lr_value(irq.intid, irq.priority, group=irq.group, active=irq.active,
                          hw=irq.hw, pintid=irq.hwintid, eoi=not edge and not irq.hw)
        if not edge or irq.hw:
            if irq.pending() and not irq.active:
                lr |= ich.LR_PENDING
                if edge:
                    irq.pending_latch = False
                elif irq.hw:
                    irq.line_level = False
        elif irq.pending():
            lr |= ich.LR_PENDING
            irq.pending_latch = False
        return lr

    def flush(self, vcpu: int) -> None:
        """vgic_flush_lr_state() for one vCPU, before its hyp restore."""
        vcpu = self._vcpu(vcpu)
        self._queue_new(vcpu)
        rec = self.records[vcpu]
        vmcr = int(rec["vgic_vmcr"])
        mine = [irq for irq in self.lists[vcpu] if self._oracle(irq) == vcpu]
        nr_act = sum(1 for irq in mine if irq.active)
        nr_pend = sum(1 for irq in mine if not irq.active and irq.pending())
        nr_sgi = sum(1 for irq in mine if irq.intid < NR_SGIS)
        total = nr_pend + nr_act
        if total > self.nr_lrs:
            self._sort(vcpu, vmcr)
            mine = [irq for irq in self.lists[vcpu] if self._oracle(irq) == vcpu]
        chosen = mine[:self.nr_lrs]
        for i, irq in enumerate(chosen):
            rec["vgic_lr"][self._slot(i)] = self._populate_lr(irq)
            irq.in_lr = True
        for i in range(len(chosen), self.nr_lrs):
            rec["vgic_lr"][self._slot(i)] = 0
        rec["used_lrs"] = len(chosen)
        hcr = ich.HCR_EN
        hcr |= ich.HCR_NPIE if nr_pend > self.nr_lrs else 0
        hcr |= ich.HCR_LRENPIE if nr_act and total > self.nr_lrs else 0
        hcr |= ich.HCR_UIE if total > self.nr_lrs else 0
        hcr |= ich.HCR_VSGIEOICOUNT if nr_sgi == 0 else 0
        hcr |= ich.HCR_VGRP0DIE if vmcr & ich.VMCR_ENG0 else ich.HCR_VGRP0EIE
        hcr |= ich.HCR_VGRP1DIE if vmcr & ich.VMCR_ENG1 else ich.HCR_VGRP1EIE
        # irqs_active_outside_lrs(): a count test, as for LRENPIE.
        if (nr_act and total > self.nr_lrs) or self.active_spis:
            hcr |= ich.HCR_TDIR
        rec["vgic_hcr"] = hcr

    # ------------------------------------------------------------------ fold
    def _fold_lr(self, vcpu: int, lr: int) -> None:
        """vgic_v3_fold_lr()."""
        intid = lr & ich.LR_VINTID_MASK
        if not self.gic._valid(intid):
            return
        if intid >= LPI_BASE:
            lr &= ~ich.LR_ACTIVE    # KVM 6.19 drops an LPI's Active state at the fold
        irq = self.gic._irq(vcpu, intid)
        deactivated = irq.active and not lr & ich.LR_ACTIVE
        irq.active = bool(lr & ich.LR_ACTIVE)
        # KVM 6.19: an SPI leaves flight when a fold sees it deactivated in
        # an LR asking for an EOI maintenance interrupt (a level one).
        eoi_mi = lr & (ich.LR_STATE_MASK | ich.LR_HW | ich.LR_EOI) == ich.LR_EOI
        if deactivated and eoi_mi and NR_PRIVATE_IRQS <= intid < LPI_BASE and self.active_spis:
            self.active_spis -= 1
        if irq.config_edge:
            if lr & ich.LR_PENDING:
                irq.pending_latch = True
        elif not lr & ich.LR_STATE_MASK:
            irq.pending_latch = False
        if irq.hw and not irq.config_edge and (lr & ich.LR_PENDING or (deactivated and irq.line_level)):
            # vgic_irq_handle_resampling(): the line is resampled from the
            # device; a low one releases the physical interrupt.
            irq.line_level = self.gic._phys_level(irq)
            if not irq.line_level:
                self.gic._set_phys_active(irq, False)

    def _fold_synthetic(self, vcpu: int, irq: VgicIrq) -> None:
        """The fold of the LR KVM synthesises (vgic_v3_compute_lr) for an
        interrupt in no LR, Active cleared (EOIcount replay, trapped DIR)."""
        lr = irq.intid
        if irq.hw:
            # KVM deactivates the physical interrupt itself here.
            lr |= ich.LR_HW | (irq.hwintid << ich.LR_PINTID_SHIFT)
            self.gic._set_phys_active(irq, False)
        elif irq.config_edge:
            lr |= ich.LR_PENDING if irq.pending() else 0
        else:
            lr |= ich.LR_EOI        # active: a level LR carries no pending state
        self._fold_lr(vcpu, lr)

    def fold(self, vcpu: int) -> None:
        """vgic_fold_lr_state(), the EOIcount replay and the prune."""
        vcpu = self._vcpu(vcpu)
        rec = self.records[vcpu]
        for i in range(min(int(rec["used_lrs"]), self.nr_lrs)):
            self._fold_lr(vcpu, int(rec["vgic_lr"][self._slot(i)]))
        hcr = int(rec["vgic_hcr"])
        eoicount = (hcr & ich.HCR_EOICOUNT_MASK) >> ich.HCR_EOICOUNT_SHIFT
        if eoicount:
            # Whatever EOImode is now: the guest may have changed it after
            # those EOIs, and KVM replays regardless (vgic_v3_fold_lr_state).
            for irq in self.lists[vcpu]:
                if eoicount == 0:
                    break
                if not irq.in_lr and irq.active:
                    # fold of a synthesised LR without Active (kvm-facts §4.5)
                    self._fold_synthetic(vcpu, irq)
                    eoicount -= 1
            rec["vgic_hcr"] = hcr & ~ich.HCR_EOICOUNT_MASK
        rec["used_lrs"] = 0
        for irq in self.lists[vcpu]:
            irq.in_lr = False
        self._prune(vcpu)

    # ----------------------------------------------------------- many vCPUs
    def _indices(self, idx: Any) -> list[int]:
        if idx is None:
            return list(range(self.gic.nr_vcpus))
        return ich.vcpu_indices(idx, self.gic.nr_vcpus).tolist()

    def flush_batch(self, idx: Any = None) -> None:
        """flush for every vCPU in index order, or for the indices in ``idx``."""
        for v in self._indices(idx):
            self.flush(v)

    def fold_batch(self, idx: Any = None) -> None:
        """fold for every vCPU in index order, or for the indices in ``idx``."""
        for v in self._indices(idx):
            self.fold(v)

    # ---------------------------------------------------------- introspection
    def ap_list(self, vcpu: int) -> list[int]:
        """vCPU ``vcpu``'s ap_list, as a list of INTIDs in list order."""
        return [irq.intid for irq in self.lists[self._vcpu(vcpu)]]

    def pending_irq(self, vcpu: int, pmr: int) -> bool:
        """kvm_vgic_vcpu_pending_irq()'s walk: an interrupt on the ap_list
        pending, enabled, not active, of a priority below ``pmr``, with the
        distributor enabled.  What became deliverable since the last entry
        is queued first (KVM queued it at that moment)."""
        v = self._vcpu(vcpu)
        pmr = ich.check_int("pmr", pmr, 0, 0xFF)
        if not self.gic._dist_enabled:
            return False
        self._queue_new(v)
        mine = self.lists[v]
        return any(irq.pending() and irq.enabled and not irq.active and irq.priority < pmr for irq in mine)

    def queued_on(self, vcpu: int, intid: int) -> int:
        """The vCPU whose ap_list holds the INTID, or -1 (``irq->vcpu``)."""
        return self._checked(vcpu, intid)[1].ap_vcpu

    def in_lr(self, vcpu: int, intid: int) -> bool:
        """True while the INTID is held in a list register."""
        return self._checked(vcpu, intid)[1].in_lr

    def oracle(self, vcpu: int, intid: int) -> int:
        """vgic_target_oracle(): the vCPU that should hold it, or -1."""
        return self._oracle(self._checked(vcpu, intid)[1])

    def state(self) -> dict[str, Any]:
        """``{"ap_list": [...], "in_lr": [...]}`` per vCPU (see :mod:`vgic.gic_state`)."""
        return {"ap_list": [[irq.intid for irq in row] for row in self.lists],
                "in_lr": [sorted(irq.intid for irq in row if irq.in_lr) for row in self.lists],
                "active_spis": self.active_spis}

    def load_state(self, state: Any) -> None:
        """Replace every ap_list by ``state``, checked first (nothing changes on a bad field)."""
        lists, held, active_spis = gic_state.check_ap_lists(state, self.gic.nr_vcpus, self.gic.nr_irqs,
                                                            self.gic.lpis())
        self.gic.clear_queued()
        self.lists[:] = [[self.gic._irq(v, intid) for intid in row] for v, row in enumerate(lists)]
        for v, row in enumerate(self.lists):
            for irq in row:
                irq.ap_vcpu = v
                irq.in_lr = irq.intid in held[v]
        self.active_spis = active_spis

    def deactivate(self, vcpu: int, intid: int) -> None:
        """Fold the synthesised LR, Active cleared, of an interrupt held in
        no LR (the trapped DIR of vgic_v3_deactivate)."""
        self._fold_synthetic(*self._checked(vcpu, intid))


class Noop:
    """A do-nothing class with ``flush``/``fold`` signatures."""

    def flush(self, vcpu: int) -> None:
        pass

    def fold(self, vcpu: int) -> None:
        pass
