"""The vGICv3 part: distributor, redistributors and CPU interface, as KVM
v6.19 runs them (kvm-facts §1-§4, §6).

What it owns:

* the distributor and redistributor state (the backend's ``gic.Gic``) and
  its frames GICD, GICR_RD and GICR_SGI (:data:`vgic.regmap.FRAMES`);
* every vCPU's CPU-interface record (:data:`vgic.ich.VCPU_IF`: the modelled
  ICH_*_EL2 hardware and KVM's saved ``struct vgic_v3_cpu_if``), with the
  hyp save/restore (``lr.HypIf``), the guest's ICV_* accesses (``icv.Icv``)
  and KVM's ap_lists with the LR flush and fold (``aplist.ApLists``);
* the ICC_*_EL1 and ICH_*_EL2 rows of :data:`vgic.sysregs.TABLE`;
* the KVM device KVM_DEV_TYPE_ARM_VGIC_V3 (:mod:`vgic.kvm_device`).

Its world switch: ``vcpu_load`` restores ICH_VMCR_EL2 and the APRs,
``vcpu_enter`` flushes the ap_list into the LRs (``vgic_flush_lr_state``)
and restores them into the hardware (``__vgic_v3_restore_state``),
``vcpu_exit`` saves them (``__vgic_v3_save_state``) and folds them back
(``vgic_fold_lr_state``), ``vcpu_put`` saves the APRs.  On the KVM side it
also emulates the trapped SGI registers and, with ICH_HCR_EL2.TDIR,
ICC_DIR_EL1.

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

TDIR: KVM v6.19 sets ICH_HCR_EL2.TDIR when interrupts are active outside
the LRs (the count test of ``irqs_active_outside_lrs``) or while its
VM-wide count of in-flight SPIs (``active_spis``) is non-zero.  The model
keeps that count as KVM does (``ApLists.active_spis``): +1 each time an SPI
is queued, -1 (never below 0) when a fold sees a level SPI deactivated in an
LR that asks for an EOI maintenance interrupt; an SPI moved by the prune to
its new target's list is not counted again.  As in KVM the count leaks
(edge SPIs, and level ones acknowledged and completed within one run, are
never counted out), so TDIR stays set once SPIs have flowed.  Where the
model still differs: it counts an SPI when its target next enters, where
KVM counts it at injection and kicks every vCPU on the count's 0 -> 1 step,
so a vCPU entering between the two has TDIR clear in the model and set in
KVM.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from vgic import gic_state, ich, kvm_device, regmap, sysregs, uapi
from vgic.cpuif import GuestCpuIf, HypRegs
from vgic.errors import StateError
from vgic.part import Part

if TYPE_CHECKING:
    from vgic.vm import VCPU, VM

# irq_state() / set_irq_bit() field indices
F_ENABLED, F_PENDING_LATCH, F_LINE_LEVEL, F_ACTIVE, F_GROUP, F_EDGE = range(6)
U32, U64 = ich.U32, ich.U64


class CpuIf:
    """KVM's saved CPU-interface state of one vCPU (``struct vgic_v3_cpu_if``),
    as live views of the VM's record array."""

    def __init__(self, record: Any, nr_lrs: int, nr_aprs: int) -> None:
        self._rec = record
        #: List registers the modelled hardware has (ICH_VTR_EL2.ListRegs + 1).
        self.nr_lrs = nr_lrs
        #: Active-priority registers per group that the preemption bits imply.
        self.nr_aprs = nr_aprs

    vmcr = property(lambda self: int(self._rec["vgic_vmcr"]), doc="Saved ICH_VMCR_EL2.")
    hcr = property(lambda self: int(self._rec["vgic_hcr"]), doc="ICH_HCR_EL2 KVM restores on entry.")
    used_lrs = property(lambda self: int(self._rec["used_lrs"]), doc="LRs in use (vgic_v3_cpu_if.used_lrs).")

    @property
    def lr(self) -> np.ndarray:
        """The 16 saved LR slots in storage order (a view): slot i holds LR i
        (``lr_order="direct"``) or LR 15 - i (``"reverse"``)."""
        return self._rec["vgic_lr"]

    @property
    def ap0r(self) -> np.ndarray:
        """Saved ICH_AP0R<n>_EL2 (a view; the first ``nr_aprs`` are used)."""
        return self._rec["vgic_ap0r"]

    @property
    def ap1r(self) -> np.ndarray:
        """Saved ICH_AP1R<n>_EL2 (a view; the first ``nr_aprs`` are used)."""
        return self._rec["vgic_ap1r"]


class _Hooks:
    """What the guest's CPU interface hands to KVM: trapped SGI generation
    and DIR, and deactivations of HW-mapped interrupts."""

    def __init__(self, part: VgicV3, vcpu: int) -> None:
        self.part = part
        self.vcpu = vcpu

    def sgi(self, name: str, value: int) -> None:
        self.part.dispatch_sgi(self.vcpu, name, value)

    def dir_trap(self, intid: int) -> None:
        self.part.deactivate_trap(self.vcpu, intid)

    def deactivate_physical(self, pintid: int) -> None:
        # The hardware deactivates the physical interrupt; whoever drives it
        # (the arch timer) hears of it.
        self.part.physical_deactivations.append(pintid)
        self.part.gic.host_deactivate(self.vcpu, pintid)
        for listener in self.part.deactivation_listeners:
            listener(self.vcpu, pintid)


class VgicV3(Part):
    """The vGICv3 of a VM (``vm.gic``): the KVM_DEV_TYPE_ARM_VGIC_V3 device."""

    name = sysregs.VGIC_V3
    vcpu_attr_names = ("hyp", "cpu_if")
    device_type = uapi.KVM_DEV_TYPE_ARM_VGIC_V3

    @classmethod
    def present(cls, vm: VM) -> bool:
        return bool(vm.irqchip)

    def __init__(self, vm: VM, impl: Any) -> None:
        super().__init__(vm, impl)
        n = vm.nr_vcpus
        self.nr_lrs, self.pri_bits, self.pre_bits = vm.nr_lrs, vm.pri_bits, vm.pre_bits
        self.nr_aprs = ich.nr_aprs(self.pre_bits)
        self.reverse = vm.lr_order == "reverse"
        #: Every vCPU's CPU-interface record, contiguous (the kernels' input).
        self.records = np.zeros(n, dtype=ich.VCPU_IF)
        # The hardware ICH_VMCR_EL2 resets to an UNKNOWN value it can hold;
        # the model's is what a write of 0 leaves (KVM's reset VMCR is 0).
        self.records["ich_vmcr"] = ich.stored_vmcr(0, self.pri_bits, self.pre_bits)
        #: The distributor and redistributors (the backend's ``gic.Gic``).
        self.gic = impl.gic.Gic(n, vm.nr_irqs, np.array(vm._mpidrs.mpidrs, dtype=np.uint64), lpis=vm.has_its)
        # Guest RAM for the LPI property and pending tables.
        self.gic.attach_memory(vm.memory, vm.ram_base)
        self.hyp_if = impl.lr.HypIf(self.records, self.nr_lrs, self.pri_bits, self.pre_bits, self.reverse)
        self.icv = impl.icv.Icv(self.records, self.nr_lrs, self.pri_bits, self.pre_bits)
        #: KVM's ap_lists with the flush and fold kernels.
        self.lists = impl.aplist.ApLists(self.gic, self.records, self.nr_lrs, self.reverse)
        #: Physical INTIDs deactivated through LRs with HW = 1, in order.
        self.physical_deactivations: list[int] = []
        #: Called with (vcpu, pINTID) after each such deactivation.
        self.deactivation_listeners: list[Callable[[int, int], None]] = []
        #: ICC_CTLR_EL1.PRIbits + 1 per vCPU, as userspace may lower it
        #: (CPU_SYSREGS; KVM's vgic_cpu->num_pri_bits).
        self.num_pri_bits: list[int] = [self.pri_bits] * n
        # Each vCPU's guest CPU interface, built at its first access.
        self._guest: list[GuestCpuIf | None] = [None] * n

    # ------------------------------------------------------------------ MMIO
    def map_frames(self, bus: Any) -> None:
        bus.attach([regmap.FRAME_GICD, regmap.FRAME_GICR_RD, regmap.FRAME_GICR_SGI], self.gic)
        bus.map(self.vm.dist_base, [regmap.FRAME_GICD])
        bus.map(self.vm.redist_base, [regmap.FRAME_GICR_RD, regmap.FRAME_GICR_SGI], self.vm.nr_vcpus,
                per_vcpu=True)

    # -------------------------------------------------------------- per vCPU
    def vcpu_attrs(self, vcpu: VCPU) -> dict[str, Any]:
        return {
            # The modelled hardware ICH_*_EL2 registers, by name.
            "hyp": HypRegs(self.records, vcpu.id, self.nr_lrs, self.pri_bits, self.pre_bits),
            # KVM's saved CPU-interface state.
            "cpu_if": CpuIf(self.records[vcpu.id], self.nr_lrs, self.nr_aprs),
        }

    def vcpu_sysregs(self, vcpu: VCPU) -> GuestCpuIf:
        g = self._guest[vcpu.id]
        if g is None:
            i = vcpu.id
            g = self._guest[i] = GuestCpuIf(self.records, i, self.nr_lrs, self.pri_bits, self.pre_bits,
                                            _Hooks(self, i), self.icv)
        return g

    def world_switch(self) -> tuple[Any, Any, Any, Any]:
        # load and put are one kernel call each: hand the kernels over.
        return (self.hyp_if.restore_vmcr_aprs, self.hyp_if.save_aprs, self.vcpu_enter, self.vcpu_exit)

    def vcpu_load(self, vcpu: int) -> None:
        self.hyp_if.restore_vmcr_aprs(vcpu)

    def vcpu_put(self, vcpu: int) -> None:
        self.hyp_if.save_aprs(vcpu)

    def vcpu_enter(self, vcpu: int) -> None:
        self.lists.flush(vcpu)
        self.hyp_if.restore_state(vcpu)

    def vcpu_exit(self, vcpu: int) -> None:
        self.hyp_if.save_state(vcpu)
        self.lists.fold(vcpu)

    def load_batch(self, ids: np.ndarray) -> None:
        self.hyp_if.load_batch(ids)

    def put_batch(self, ids: np.ndarray) -> None:
        self.hyp_if.put_batch(ids)

    def enter_batch(self, ids: np.ndarray) -> None:
        self.lists.flush_batch(ids)
        self.hyp_if.restore_state_batch(ids)

    def exit_batch(self, ids: np.ndarray) -> None:
        self.hyp_if.save_state_batch(ids)
        self.lists.fold_batch(ids)

    def vcpu_wakes(self, vcpu: int) -> bool:
        # kvm_vgic_vcpu_pending_irq(): against the priority mask of the
        # vCPU's VMCR, live in the hardware while it is loaded.
        rec = self.records[vcpu]
        vmcr = int(rec["ich_vmcr"] if self.vm.vcpus[vcpu].loaded else rec["vgic_vmcr"])
        return bool(self.lists.pending_irq(vcpu, (vmcr >> ich.VMCR_PMR_SHIFT) & 0xFF))

    # --------------------------------------------------------- KVM's traps
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
                    target = self.vm._mpidrs.vcpu(aff | bit)
                    if target >= 0:
                        targets.append(target)
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
            with self.vm._halted(keep=vcpu):
                self.gic.set_irq_bit(vcpu, intid, F_ACTIVE, False)
            return
        # Queued but in no LR: fold a synthesised LR without Active, so a
        # level interrupt's latch is consumed as by a guest deactivation
        # (and a level SPI counted out of flight).
        if self.gic.irq_state(vcpu, intid)[F_ACTIVE]:
            self.lists.deactivate(vcpu, intid)

    # ---------------------------------------------------------- KVM device
    def get_device_attr(self, group: int, attr: int) -> int:
        """KVM_GET_DEVICE_ATTR on the vGICv3 device (see :mod:`vgic.kvm_device`)."""
        return kvm_device.get_attr(self, group, attr)

    def set_device_attr(self, group: int, attr: int, value: int) -> None:
        """KVM_SET_DEVICE_ATTR on the vGICv3 device (see :mod:`vgic.kvm_device`)."""
        kvm_device.set_attr(self, group, attr, value)

    def has_device_attr(self, group: int, attr: int) -> bool:
        """KVM_HAS_DEVICE_ATTR on the vGICv3 device: True where KVM returns 0."""
        return kvm_device.has_attr(self, group, attr)

    def get_device_attrs(self, group: int, attrs: Any) -> np.ndarray:
        """KVM_GET_DEVICE_ATTR of many attributes of one register group
        (DIST_REGS, REDIST_REGS, CPU_SYSREGS, LEVEL_INFO), as ``uint64``."""
        return kvm_device.get_attrs(self, group, attrs)

    def set_device_attrs(self, group: int, attrs: Any, values: Any) -> None:
        """KVM_SET_DEVICE_ATTR of many attributes of one register group, in
        order; a refusal raises :class:`vgic.KvmError` with its ``index``."""
        kvm_device.set_attrs(self, group, attrs, values)

    # ---------------------------------------------------------------- state
    _CPU_IF_LISTS = (("vgic_lr", ich.MAX_LRS, U64), ("vgic_ap0r", ich.MAX_APRS, U32),
                     ("vgic_ap1r", ich.MAX_APRS, U32))

    def _hw_names(self) -> list[tuple[str, str, int | None]]:
        """(state name, record field, index) of the implemented ICH_* registers."""
        names: list[tuple[str, str, int | None]] = [
            (f"ICH_LR{n}_EL2", "ich_lr", n) for n in range(self.nr_lrs)]
        names += [("ICH_HCR_EL2", "ich_hcr", None), ("ICH_VMCR_EL2", "ich_vmcr", None)]
        names += [(f"ICH_AP0R{n}_EL2", "ich_ap0r", n) for n in range(self.nr_aprs)]
        names += [(f"ICH_AP1R{n}_EL2", "ich_ap1r", n) for n in range(self.nr_aprs)]
        return names

    def state(self) -> dict[str, Any]:
        """The distributor, the redistributors and every vCPU's CPU
        interface, named (layout: :mod:`vgic.gic_state`, plus per vCPU its
        ``ap_list`` and ``in_lr``, ``num_pri_bits``, the implemented ICH_*_EL2
        registers by name and KVM's saved ``vgic_v3`` copy; and KVM's
        ``active_spis`` and the physical INTIDs deactivated through HW LRs)."""
        st = self.gic.state()
        lists = self.lists.state()
        for v, vd in enumerate(st["vcpus"]):
            rec = self.records[v]
            vd["ap_list"] = lists["ap_list"][v]
            vd["in_lr"] = lists["in_lr"][v]
            vd["num_pri_bits"] = self.num_pri_bits[v]
            for name, field, n in self._hw_names():
                vd[name] = int(rec[field]) if n is None else int(rec[field][n])
            vd["vgic_v3"] = {
                "vgic_lr": [int(x) for x in rec["vgic_lr"]],
                "vgic_hcr": int(rec["vgic_hcr"]),
                "vgic_vmcr": int(rec["vgic_vmcr"]),
                "vgic_ap0r": [int(x) for x in rec["vgic_ap0r"]],
                "vgic_ap1r": [int(x) for x in rec["vgic_ap1r"]],
                "used_lrs": int(rec["used_lrs"]),
            }
        st["active_spis"] = lists["active_spis"]
        st["physical_deactivations"] = list(self.physical_deactivations)
        return st

    def check_state(self, state: Any) -> Any:
        where = self.name
        if not isinstance(state, dict):
            raise StateError(f"{where}: expected a dict, got {type(state).__name__}")
        keys = ("GICD_CTLR", "GICD_IIDR", "GICR_PROPBASER", "seq_counter", "spi", "lpi", "vcpus",
                "active_spis", "physical_deactivations")
        gic_state._keys(where, state, keys)
        vcpus = gic_state._list(f"{where}.vcpus", state["vcpus"], self.vm.nr_vcpus)
        hw = self._hw_names()
        per_vcpu_keys = ("GICR_CTLR", "GICR_PENDBASER", "private", "ap_list", "in_lr", "num_pri_bits",
                         *(name for name, _, _ in hw), "vgic_v3")
        gic_part: dict[str, Any] = {k: state[k] for k in keys[:6]}
        gic_part["vcpus"] = []
        records = np.zeros_like(self.records)
        num_pri_bits = []
        for v, vd in enumerate(vcpus):
            w = f"{where}.vcpus[{v}]"
            gic_state._keys(w, vd, per_vcpu_keys)
            gic_part["vcpus"].append({k: vd[k] for k in ("GICR_CTLR", "GICR_PENDBASER", "private")})
            num_pri_bits.append(gic_state._int(f"{w}.num_pri_bits", vd["num_pri_bits"], 1, self.pri_bits))
            rec = records[v]
            for name, field, n in hw:
                value = gic_state._int(f"{w}.{name}", vd[name], 0, U32 if "AP" in name else U64)
                if field == "ich_lr":
                    stored = HypRegs.stored_lr(value, self.pri_bits)
                elif field == "ich_vmcr":
                    stored = ich.stored_vmcr(value, self.pri_bits, self.pre_bits)
                elif field == "ich_hcr":
                    stored = value & ich.HCR_WRITABLE
                else:
                    stored = value
                if stored != value:
                    raise StateError(f"{w}.{name}: {value:#x} is not a value the register holds "
                                     f"(it would read {stored:#x})")
                if n is None:
                    rec[field] = value
                else:
                    rec[field][n] = value
            saved = vd["vgic_v3"]
            gic_state._keys(f"{w}.vgic_v3", saved, ("vgic_lr", "vgic_hcr", "vgic_vmcr", "vgic_ap0r",
                                                     "vgic_ap1r", "used_lrs"))
            for field, count, hi in self._CPU_IF_LISTS:
                values = gic_state._list(f"{w}.vgic_v3.{field}", saved[field], count)
                rec[field] = [gic_state._int(f"{w}.vgic_v3.{field}[{k}]", x, 0, hi) for k, x in enumerate(values)]
            rec["vgic_hcr"] = gic_state._int(f"{w}.vgic_v3.vgic_hcr", saved["vgic_hcr"], 0, U64)
            rec["vgic_vmcr"] = gic_state._int(f"{w}.vgic_v3.vgic_vmcr", saved["vgic_vmcr"], 0, U64)
            rec["used_lrs"] = gic_state._int(f"{w}.vgic_v3.used_lrs", saved["used_lrs"], 0, self.nr_lrs)
        arrays = gic_state.from_dict(gic_part, self.vm.nr_vcpus, self.vm.nr_irqs, self.vm._mpidrs, where,
                                     self.gic.nr_lpis)
        lists = {"ap_list": [vd["ap_list"] for vd in vcpus], "in_lr": [vd["in_lr"] for vd in vcpus],
                 "active_spis": state["active_spis"]}
        ap, _, _ = gic_state.check_ap_lists(lists, self.vm.nr_vcpus, self.vm.nr_irqs,
                                            arrays.lpi["intid"].tolist(), where)
        gic_state.check_lpis_held(arrays, ap, f"{where}.lpi")
        deact = state["physical_deactivations"]
        if not isinstance(deact, (list, tuple)):
            raise StateError(f"{where}.physical_deactivations: expected a list, got {type(deact).__name__}")
        deact = [gic_state._int(f"{where}.physical_deactivations[{k}]", x, 0, 0x3FF) for k, x in enumerate(deact)]
        return arrays, lists, records, num_pri_bits, deact

    def load_state(self, state: Any) -> None:
        """This part's state alone: checked, with the links the ITS's ITEs
        have to its LPIs (an ITE's LPI must stay), before anything changes."""
        checked = self.check_state(state)
        if self.vm.its is not None:
            its = self.vm.its
            its.check_links({its.name: its.its.arrays(), self.name: checked})
        self.apply_state(checked)

    def checkpoint(self) -> Any:
        """What :meth:`check_state` of :meth:`state` returns, read directly."""
        return (self.gic.arrays(), self.lists.state(), self.records.copy(), list(self.num_pri_bits),
                list(self.physical_deactivations))

    def apply_state(self, checked: Any) -> None:
        arrays, lists, records, num_pri_bits, deact = checked
        self.gic.apply_arrays(arrays)
        self.lists.load_state(lists)
        self.records[:] = records
        self.num_pri_bits[:] = num_pri_bits
        self.physical_deactivations[:] = deact
