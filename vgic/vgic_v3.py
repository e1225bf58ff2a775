"""KVM's side of the GICv3 world switch: ap_lists, flush, fold, SGIs.

Follows Linux v6.19 (the list-register overflow rework, kvm-facts §4.3-§4.6):
on entry ``flush`` moves the interrupts queued for a vCPU into list registers
(sorting them with KVM's comparator when there are more than LRs) and
computes ICH_HCR_EL2; the hyp code then restores the LRs into the modelled
hardware.  On exit the hyp code saves them back, ``fold`` returns their state
to the per-IRQ state, interrupts the guest completed outside the LRs are
deactivated by replaying ICH_HCR_EL2.EOIcount, and the ap_list is pruned.

One documented simplification: KVM appends an interrupt to its target's
ap_list the moment it becomes pending (vgic_queue_irq_unlock).  Here an
interrupt is appended when its target next enters, in INTID order, so two
interrupts that became pending between the same two entries keep INTID order
rather than event order.  The order only matters when they tie on KVM's
comparator; everything KVM would deliver is delivered.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from vgic import ich, regmap

if TYPE_CHECKING:
    from vgic.vm import VM

# irq_state() / set_irq_bit() field indices
F_ENABLED, F_PENDING_LATCH, F_LINE_LEVEL, F_ACTIVE, F_GROUP, F_EDGE = range(6)

Key = tuple[int, int]   # (owner vCPU or -1 for an SPI, INTID)


class VgicV3:
    """The KVM-side vGICv3 state of one VM: ap_lists and the LR machinery."""

    def __init__(self, vm: "VM", hyp_if: Any, records: np.ndarray) -> None:
        self.vm = vm
        self.gic = vm._gic
        self.hyp_if = hyp_if
        self.records = records
        self.nr_lrs = hyp_if.nr_lrs
        #: KVM's per-vCPU ap_list: interrupts queued for the vCPU, in order.
        self.ap_list: list[list[Key]] = [[] for _ in range(vm.nr_vcpus)]
        #: irq->vcpu: the vCPU whose ap_list holds an interrupt.
        self.queued_on: dict[Key, int] = {}
        #: The interrupts each vCPU's LRs hold between entry and exit.
        self.in_lrs: list[list[Key]] = [[] for _ in range(vm.nr_vcpus)]
        #: Physical INTIDs deactivated through LRs with HW = 1, in order.
        self.physical_deactivations: list[int] = []

    # ------------------------------------------------------------ IRQ access
    @staticmethod
    def key(vcpu: int, intid: int) -> Key:
        return (vcpu if intid < regmap.NR_PRIVATE_IRQS else -1, intid)

    def state(self, key: Key) -> tuple[int, ...]:
        return self.gic.irq_state(max(key[0], 0), key[1])

    def set_bit(self, key: Key, field: int, value: bool) -> None:
        self.gic.set_irq_bit(max(key[0], 0), key[1], field, value)

    @staticmethod
    def pending(st: tuple[int, ...]) -> bool:
        # irq_is_pending(): latch, or line level for a level interrupt.
        return bool(st[F_PENDING_LATCH] or (not st[F_EDGE] and st[F_LINE_LEVEL]))

    def target(self, key: Key, st: tuple[int, ...]) -> int:
        return key[0] if key[0] >= 0 else st[8]

    def oracle(self, key: Key) -> int:
        """vgic_target_oracle(): the vCPU that should hold the interrupt, -1
        for none.  An active interrupt stays where it is queued; a pending
        and enabled one goes to its target while the distributor is enabled."""
        st = self.state(key)
        if st[F_ACTIVE]:
            where = self.queued_on.get(key, -1)
            return where if where >= 0 else self.target(key, st)
        if st[F_ENABLED] and self.pending(st):
            return self.target(key, st) if self.gic.dist_enabled else -1
        return -1

    # ----------------------------------------------------------- ap_list
    def queue_new(self, vcpu: int) -> None:
        """Append to ``vcpu``'s ap_list what is deliverable to it and queued nowhere."""
        for intid in self.gic.irq_scan(vcpu):
            key = self.key(vcpu, intid)
            if key not in self.queued_on and self.oracle(key) == vcpu:
                self.ap_list[vcpu].append(key)
                self.queued_on[key] = vcpu

    def prune(self, vcpu: int) -> None:
        """vgic_prune_ap_list(): keep what still belongs to this vCPU; an
        interrupt that belongs elsewhere is dropped here and queued by its
        new target at that vCPU's next entry."""
        keep = []
        for key in self.ap_list[vcpu]:
            if self.oracle(key) == vcpu:
                keep.append(key)
            else:
                del self.queued_on[key]
        self.ap_list[vcpu] = keep

    def sort_key(self, vcpu: int, vmcr: int):
        """KVM 6.19's ap_list comparator as a sort key (kvm-facts §4.6):
        deliverable here first, then enabled groups, then enabled and
        pending and not active, then priority, then HW before SW."""
        def k(key: Key) -> tuple[int, ...]:
            st = self.state(key)
            group_on = vmcr & (ich.VMCR_ENG1 if st[F_GROUP] else ich.VMCR_ENG0)
            ready = st[F_ENABLED] and self.pending(st) and not st[F_ACTIVE]
            return (self.oracle(key) != vcpu, not group_on, not ready, st[6], 1)
        return k

    # ------------------------------------------------------------ flush
    def compute_lr(self, key: Key) -> int:
        """vgic_v3_populate_lr(): the LR for an interrupt, consuming an edge
        interrupt's latch when the LR carries its pending state."""
        st = self.state(key)
        active, edge = bool(st[F_ACTIVE]), bool(st[F_EDGE])
        lr = ich.lr_value(key[1], st[6], group=st[F_GROUP], active=active)
        if not edge:
            # Level: ask for an EOI maintenance interrupt so the line can be
            # resampled; an active level interrupt is not also pending.
            lr |= ich.LR_EOI
            if self.pending(st) and not active:
                lr |= ich.LR_PENDING
        elif self.pending(st):
            lr |= ich.LR_PENDING
            self.set_bit(key, F_PENDING_LATCH, False)
        return lr

    def flush(self, vcpu: int) -> None:
        """vgic_flush_lr_state() for one vCPU, before its hyp restore."""
        self.queue_new(vcpu)
        rec = self.records[vcpu]
        vmcr = int(rec["vgic_vmcr"])
        mine = [key for key in self.ap_list[vcpu] if self.oracle(key) == vcpu]
        states = [self.state(key) for key in mine]
        nr_pend = sum(1 for st in states if self.pending(st) and not st[F_ACTIVE])
        nr_act = sum(1 for st in states if st[F_ACTIVE])
        nr_sgi = sum(1 for key in mine if key[1] < regmap.NR_SGIS)
        total = nr_pend + nr_act
        if total > self.nr_lrs:
            self.ap_list[vcpu].sort(key=self.sort_key(vcpu, vmcr))
            mine = [key for key in self.ap_list[vcpu] if self.oracle(key) == vcpu]
        chosen = mine[: self.nr_lrs]
        for i, key in enumerate(chosen):
            rec["vgic_lr"][self.hyp_if.slot(i)] = self.compute_lr(key)
        for i in range(len(chosen), self.nr_lrs):
            rec["vgic_lr"][self.hyp_if.slot(i)] = 0
        rec["used_lrs"] = len(chosen)
        self.in_lrs[vcpu] = chosen
        left_active = any(self.state(key)[F_ACTIVE] for key in mine[self.nr_lrs:])
        spi_in_flight = any(key[0] < 0 for key in self.queued_on)
        hcr = ich.HCR_EN
        hcr |= ich.HCR_NPIE if nr_pend > self.nr_lrs else 0
        hcr |= ich.HCR_LRENPIE if nr_act and total > self.nr_lrs else 0
        hcr |= ich.HCR_UIE if total > self.nr_lrs else 0
        hcr |= ich.HCR_VSGIEOICOUNT if nr_sgi == 0 else 0
        hcr |= ich.HCR_VGRP0DIE if vmcr & ich.VMCR_ENG0 else ich.HCR_VGRP0EIE
        hcr |= ich.HCR_VGRP1DIE if vmcr & ich.VMCR_ENG1 else ich.HCR_VGRP1EIE
        hcr |= ich.HCR_TDIR if left_active or spi_in_flight else 0
        rec["vgic_hcr"] = hcr

    # ------------------------------------------------------------- fold
    def fold_lr(self, vcpu: int, lr: int) -> None:
        """vgic_v3_fold_lr(): one saved LR back into its interrupt's state."""
        key = self.key(vcpu, lr & ich.LR_VINTID_MASK)
        if key[1] >= self.vm.nr_irqs:
            return
        st = self.state(key)
        self.set_bit(key, F_ACTIVE, bool(lr & ich.LR_ACTIVE))
        if st[F_EDGE] and lr & ich.LR_PENDING:
            # The guest never took it: the pending state returns to the latch.
            self.set_bit(key, F_PENDING_LATCH, True)
        if not st[F_EDGE] and not lr & ich.LR_STATE_MASK:
            # Completed: only a line still high can make it pending again.
            self.set_bit(key, F_PENDING_LATCH, False)

    def fold(self, vcpu: int) -> None:
        """vgic_v3_fold_lr_state() plus the EOIcount replay and the prune,
        after the hyp save of one vCPU."""
        rec = self.records[vcpu]
        for i in range(int(rec["used_lrs"])):
            self.fold_lr(vcpu, int(rec["vgic_lr"][self.hyp_if.slot(i)]))
        hcr = int(rec["vgic_hcr"])
        eoicount = (hcr & ich.HCR_EOICOUNT_MASK) >> ich.HCR_EOICOUNT_SHIFT
        if eoicount and not int(rec["vgic_vmcr"]) & ich.VMCR_EOIM:
            # The guest completed interrupts that had no LR: deactivate the
            # active ones outside the LRs, in ap_list order.
            in_lrs = set(self.in_lrs[vcpu])
            for key in self.ap_list[vcpu]:
                if eoicount == 0:
                    break
                if key not in in_lrs and self.state(key)[F_ACTIVE]:
                    self.set_bit(key, F_ACTIVE, False)
                    eoicount -= 1
            rec["vgic_hcr"] = hcr & ~ich.HCR_EOICOUNT_MASK
        rec["used_lrs"] = 0
        self.in_lrs[vcpu] = []
        self.prune(vcpu)

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
        """vgic_v3_deactivate(): ICC_DIR_EL1 trapped by ICH_HCR_EL2.TDIR."""
        rec = self.records[vcpu]
        if intid >= self.vm.nr_irqs or not int(rec["ich_vmcr"]) & ich.VMCR_EOIM:
            return
        key = self.key(vcpu, intid)
        if key not in self.queued_on:
            return
        # In this vCPU's LRs: deactivate there (KVM handles it as an
        # ICACTIVER write, which folds the LR and clears its active state).
        for n in range(self.nr_lrs):
            lr = int(rec["ich_lr"][n])
            if lr & ich.LR_STATE_MASK and (lr & ich.LR_VINTID_MASK) == intid and key in self.in_lrs[vcpu]:
                rec["ich_lr"][n] = lr & ~ich.LR_ACTIVE
                return
        if self.state(key)[F_ACTIVE]:
            self.set_bit(key, F_ACTIVE, False)
