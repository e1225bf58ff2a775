"""KVM's side of the GICv3 world switch: ap_lists, flush, fold, SGIs.

Follows Linux v6.19 (the list-register overflow rework, kvm-facts §4.3-§4.6):
on entry ``flush`` moves the interrupts queued for a vCPU into list registers
(sorting them with KVM's comparator when there are more than LRs) and
computes ICH_HCR_EL2; the hyp code then restores the LRs into the modelled
hardware.  On exit the hyp code saves them back, ``fold`` returns their state
to the per-IRQ state, interrupts the guest completed outside the LRs are
deactivated by replaying ICH_HCR_EL2.EOIcount, and the ap_list is pruned.

Queueing: KVM appends an interrupt to its target's ap_list the moment it
becomes deliverable (vgic_queue_irq_unlock).  The model appends it when its
target next enters, but in the order the interrupts became deliverable: the
C state stamps each interrupt when a write, a line report or an SGI makes it
active or enabled-and-pending (gicstate.pxd ``stamp_new``; the twin stamps
the same events), and the entry queues by stamp.  So ap_lists, LR order and
the order in which equal-priority interrupts are acknowledged follow event
order as in KVM.  What remains different: an SPI whose IROUTER moves while
it is pending is taken by its new target at that vCPU's next entry, where
KVM would first migrate it at the old target's next exit; and an interrupt
made deliverable while the distributor is disabled is queued once the
distributor is enabled, where KVM queues it only at its next event.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from vgic import ich

if TYPE_CHECKING:
    from vgic.vm import VM

# irq_state() / set_irq_bit() field indices
F_ENABLED, F_PENDING_LATCH, F_LINE_LEVEL, F_ACTIVE, F_GROUP, F_EDGE = range(6)


class VgicV3:
    """The KVM-side vGICv3 state of one VM: its ap_lists with the LR flush
    and fold (the backend's ``aplist`` kernel), SGI dispatch and traps."""

    def __init__(self, vm: "VM", hyp_if: Any, records: np.ndarray, aplist: Any) -> None:
        self.vm = vm
        self.gic = vm._gic
        self.hyp_if = hyp_if
        self.records = records
        self.nr_lrs = hyp_if.nr_lrs
        #: KVM's ap_lists and the flush/fold kernels.
        self.lists = aplist.ApLists(self.gic, records, hyp_if.nr_lrs, hyp_if.reverse)
        self.flush = self.lists.flush
        self.fold = self.lists.fold
        #: Physical INTIDs deactivated through LRs with HW = 1, in order.
        self.physical_deactivations: list[int] = []

    @contextmanager
    def halted(self, keep: int = -1) -> Iterator[None]:
        """kvm_arm_halt_guest() / kvm_arm_resume_guest(): every running vCPU
        but ``keep`` exits (its LRs are saved and folded) for the duration,
        then enters again (its ap_list is flushed anew)."""
        stopped = []
        try:
            for v in self.vm.vcpus:
                if v.running and v.id != keep:
                    v.exit()
                    stopped.append(v)
            yield
        finally:
            for v in stopped:
                if not v.running:
                    v.enter()

    # ------------------------------------------------------------ traps
    def dispatch_sgi(self, vcpu: int, reg: str, value: int) -> None:
        """vgic_v3_dispatch_sgi(): an ICC_SGI1R/ASGI1R/SGI0R_EL1 write
        (kvm-facts §3.4).  RS is ignored; IRM = 1 targets every other vCPU."""
        sgi = (value >> 24) & 0xF
        allow_group1 = reg == "ICC_SGI1R_EL1"
        if (value >> 40) & 1:
            targets = [v for v in range(self.vm.nr_vcpus) if v != vcpu]
        else:
            aff = (((value >> 48) & 0xFF) << 32) | (((value >> 32) & 0xFF) << 16) | (((value >> 16) & 0xFF) << 8)
            targets = []
            for bit in range(16):
                if value & (1 << bit):
                    target = self.vm.vcpu_by_mpidr(aff | bit)
                    if target is not None:
                        targets.append(target.id)
        for t in targets:
            st = self.gic.irq_state(t, sgi)
            if st[F_GROUP] and not allow_group1:
                continue        # SGI0R/ASGI1R only raise Group 0 SGIs
            self.gic.set_irq_bit(t, sgi, F_PENDING_LATCH, True)

    def deactivate_trap(self, vcpu: int, intid: int) -> None:
        """vgic_v3_deactivate(): ICC_DIR_EL1 trapped by ICH_HCR_EL2.TDIR
        (kvm-facts §4.5)."""
        rec = self.records[vcpu]
        if intid >= self.vm.nr_irqs or not int(rec["ich_vmcr"]) & ich.VMCR_EOIM:
            return
        owner = self.lists.queued_on(vcpu, intid)
        if owner < 0:
            return                      # not queued anywhere: nothing to do
        if self.lists.in_lr(vcpu, intid):
            if owner == vcpu:
                # In this vCPU's own LRs: deactivate there.
                for n in range(self.nr_lrs):
                    lr = int(rec["ich_lr"][n])
                    if lr & ich.LR_STATE_MASK and (lr & ich.LR_VINTID_MASK) == intid:
                        rec["ich_lr"][n] = lr & ~ich.LR_ACTIVE
                        return
                return
            # In another vCPU's LRs: a GICD_ICACTIVER write, which halts
            # every vCPU so the owner's LR is folded first.
            with self.halted(keep=vcpu):
                self.gic.set_irq_bit(vcpu, intid, F_ACTIVE, False)
            return
        # Queued but in no LR: fold a synthesised LR without Active, so a
        # level interrupt's latch is consumed as by a guest deactivation.
        st = self.gic.irq_state(vcpu, intid)
        if st[F_ACTIVE]:
            self.gic.set_irq_bit(vcpu, intid, F_ACTIVE, False)
            if not st[F_EDGE]:
                self.gic.set_irq_bit(vcpu, intid, F_PENDING_LATCH, False)
