"""The arch-timer part: every vCPU's EL1 virtual and physical timers and the
VM's counter (``vm.counter``, ``vm.advance``), as Linux
``arch/arm64/kvm/arch_timer.c`` runs them on an nVHE host with a GICv3
(``docs/timer-facts.md``; :mod:`vgic.gtimer`).

What it owns: the CNT*_EL0 rows of :data:`vgic.sysregs.TABLE` (the guest's
CNTV_* and counter reads go to the modelled hardware, its CNTP_* trap and
are emulated), its load/put/enter/exit hooks under one of two policies
(``VM(timer_policy=...)``: ``"lazy"``, KVM's since v4.15, or ``"eager"``,
v4.14's save/restore at every entry and exit; guest-visible behaviour is
the same, the timer system-register accesses each makes are counted), the
background timer of a blocked vCPU, the vtimer's HW mapping into the vGIC
(made at a vCPU's first run), the one-reg registers KVM_REG_ARM_TIMER_* and
KVM_REG_ARM_PTIMER_*, the vCPU attribute group KVM_ARM_VCPU_TIMER_CTRL and
KVM_ARM_SET_COUNTER_OFFSET.

With no in-kernel irqchip (``VM(irqchip=False)``) the timers drive no
vGIC: the host vtimer PPI is disabled while the level is high and enabled
again at an exit once it falls, and the levels are published at each exit
as ``vcpu.timer.device_irq_level`` (KVM_ARM_DEV_EL1_VTIMER/PTIMER bits).

Not modelled: the NV EL2 timers (their PPI attributes are accepted and read back, as KVM
does without NV), WFIT, the ECV/CNTPOFF and broken-CNTVOFF variants.
"""
from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

import numpy as np

from vgic import gtimer as T
from vgic import sysregs, uapi
from vgic.errors import KvmError, StateError, VgicError
from vgic.gic_state import _int, _keys, _list
from vgic.ich import U32, U64, check_int
from vgic.part import KernelPart

if TYPE_CHECKING:
    from vgic.vm import VCPU, VM

#: one-reg ID -> the kernels' code.
ONE_REGS = {
    uapi.KVM_REG_ARM_TIMER_CTL: T.ONEREG_TIMER_CTL,
    uapi.KVM_REG_ARM_TIMER_CVAL: T.ONEREG_TIMER_CVAL,
    uapi.KVM_REG_ARM_TIMER_CNT: T.ONEREG_TIMER_CNT,
    uapi.KVM_REG_ARM_PTIMER_CTL: T.ONEREG_PTIMER_CTL,
    uapi.KVM_REG_ARM_PTIMER_CVAL: T.ONEREG_PTIMER_CVAL,
    uapi.KVM_REG_ARM_PTIMER_CNT: T.ONEREG_PTIMER_CNT,
}
_TIMER_IRQ_ATTRS = (uapi.KVM_ARM_VCPU_TIMER_IRQ_VTIMER, uapi.KVM_ARM_VCPU_TIMER_IRQ_PTIMER,
                    uapi.KVM_ARM_VCPU_TIMER_IRQ_HVTIMER, uapi.KVM_ARM_VCPU_TIMER_IRQ_HPTIMER)

# state() names: per vCPU, record field -> name (KVM's copy, then the hardware).
_VCPU_REGS = (("cntv_ctl", "CNTV_CTL_EL0"), ("cntv_cval", "CNTV_CVAL_EL0"),
              ("cntp_ctl", "CNTP_CTL_EL0"), ("cntp_cval", "CNTP_CVAL_EL0"))
_HW_REGS = (("hw_cntv_ctl", "CNTV_CTL_EL0"), ("hw_cntv_cval", "CNTV_CVAL_EL0"),
            ("hw_cntvoff", "CNTVOFF_EL2"), ("hw_cnthctl", "CNTHCTL_EL2"))
_FLAGS = ("enabled", "vcpu_loaded", "loaded", "vlevel", "plevel", "ptimer_armed", "bg_armed",
          "blocking", "woken", "host_masked", "running", "kick")
_TIMES = ("ptimer_at", "bg_at")
_COUNTS = ("sysreg_reads", "sysreg_writes", "gic_active_writes", "host_irqs")


class _GuestTimer:
    """The guest's CNT*_EL0 accesses of one vCPU (the sysreg accessor)."""

    def __init__(self, part: ArchTimer, vcpu: int) -> None:
        self.part = part
        self.vcpu = vcpu

    def read(self, reg: Any) -> int:
        return self.part.read_sysreg(self.vcpu, reg)

    def write(self, reg: Any, value: int) -> None:
        self.part.write_sysreg(self.vcpu, reg, value)


class TimerView:
    """``vcpu.timer``: one vCPU's timers, KVM's copy and the hardware's, and
    the counts of what KVM did to the hardware timer registers."""

    def __init__(self, part: ArchTimer, vcpu: int) -> None:
        self._part = part
        self._i = vcpu

    @property
    def _rec(self) -> Any:
        return self._part.records[self._i]

    @property
    def sysreg_reads(self) -> int:
        """Timer system-register reads KVM made on this vCPU's behalf."""
        return int(self._rec["sysreg_reads"])

    @property
    def sysreg_writes(self) -> int:
        """Timer system-register writes KVM made on this vCPU's behalf."""
        return int(self._rec["sysreg_writes"])

    @property
    def gic_active_writes(self) -> int:
        """Writes of the host vtimer PPI's active state on the host GIC."""
        return int(self._rec["gic_active_writes"])

    @property
    def host_irqs(self) -> int:
        """Times the host took the vtimer's physical PPI."""
        return int(self._rec["host_irqs"])

    @property
    def loaded(self) -> bool:
        """The vtimer's state is on the hardware (KVM's ``loaded``)."""
        return bool(self._rec["loaded"])

    @property
    def levels(self) -> tuple[bool, bool]:
        """(vtimer, ptimer) output levels as KVM last told the vGIC."""
        return bool(self._rec["vlevel"]), bool(self._rec["plevel"])

    @property
    def device_irq_level(self) -> int:
        """kvm_run.s.regs.device_irq_level as last published with no in-kernel
        irqchip (KVM_ARM_DEV_EL1_VTIMER, KVM_ARM_DEV_EL1_PTIMER); 0 otherwise."""
        return int(self._rec["user_levels"])

    def state(self) -> dict[str, Any]:
        """This vCPU's timer state, named (as in ``vm.timer.state()``)."""
        return self._part.vcpu_state(self._i)


class ArchTimer(KernelPart):
    """The arch timers of a VM (``vm.timer``)."""

    name = sysregs.ARCH_TIMER
    vcpu_attr_names = ("timer",)
    enter_early = True

    def __init__(self, vm: VM, impl: Any) -> None:
        super().__init__(vm, impl)
        policy = vm.timer_policy
        #: The kernel (the backend's ``timer.Timers``).
        gic = vm.gic.gic if vm.gic is not None else None
        self.timers = impl.timer.Timers(vm.nr_vcpus, gic, T.POLICIES[policy], vm.cntfrq)
        self.kernel = self.timers
        #: Every vCPU's timer record (:data:`vgic.gtimer.TIMER_VCPU`) and the VM's (:data:`TIMER_VM`).
        self.records = self.timers.records
        self.vm_rec = self.timers.vm
        # A new vCPU sets the virtual offset to the counter (kvm_timer_vcpu_init): 0 here.
        if vm.gic is not None:
            vm.gic.deactivation_listeners.append(self._deactivated)
        self._guest = [_GuestTimer(self, i) for i in range(vm.nr_vcpus)]

    def _vcpu(self, vcpu: Any) -> int:
        """A vCPU index of this VM (the part's methods are public too)."""
        return check_int("vcpu", vcpu, 0, len(self.records) - 1)

    # ------------------------------------------------------------ per vCPU
    def vcpu_attrs(self, vcpu: VCPU) -> dict[str, Any]:
        return {"timer": TimerView(self, vcpu.id)}

    def vcpu_sysregs(self, vcpu: VCPU) -> _GuestTimer:
        return self._guest[vcpu.id]

    def check_first_run(self, vcpu: int) -> None:
        vcpu = self._vcpu(vcpu)
        v = self.vm_rec[0]
        if self.vm.gic is not None and not self.records[vcpu]["enabled"] and int(v["vppi"]) == int(v["pppi"]):
            raise KvmError(errno.EINVAL, f"KVM_RUN: the timers share PPI {int(v['vppi'])}")

    def first_run(self, vcpu: int) -> None:
        vcpu = self._vcpu(vcpu)
        self.timers.first_run(vcpu)

    def vcpu_reset(self, vcpu: int) -> None:
        vcpu = self._vcpu(vcpu)
        self.timers.reset(vcpu)

    def vcpu_block(self, vcpu: int) -> None:
        vcpu = self._vcpu(vcpu)
        self.timers.block(vcpu)

    def vcpu_unblock(self, vcpu: int) -> bool:
        vcpu = self._vcpu(vcpu)
        return bool(self.timers.unblock(vcpu))

    def vcpu_wakes(self, vcpu: int) -> bool:
        # kvm_bg_timer_expire woke the blocked vCPU.
        return bool(self.timers.woken(self._vcpu(vcpu)))

    def take_kicks(self) -> list[int]:
        """The running vCPUs a timer raised its interrupt on (to kick)."""
        return list(self.timers.take_kicks())

    def owns(self, vcpu: int, intid: int) -> bool:
        """Whether the timers own PPI ``intid`` of ``vcpu`` (kvm_vgic_set_owner
        at the vCPU's first run): another injection there is ignored."""
        vcpu = self._vcpu(vcpu)
        v = self.vm_rec[0]
        return bool(self.records[vcpu]["enabled"]) and intid in (int(v["vppi"]), int(v["pppi"]))

    def owned_mask(self, vcpus: np.ndarray, intids: np.ndarray) -> np.ndarray:
        """:meth:`owns` over arrays (``vcpus`` may hold -1 where the INTID is
        not private: those are never owned)."""
        v = self.vm_rec[0]
        enabled = self.records["enabled"].astype(bool)
        ok = (vcpus >= 0) & (vcpus < len(enabled))
        mine = np.zeros(vcpus.shape, dtype=bool)
        mine[ok] = enabled[vcpus[ok]]
        return mine & ((intids == int(v["vppi"])) | (intids == int(v["pppi"])))

    def _deactivated(self, vcpu: int, pintid: int) -> None:
        if pintid == T.HOST_VTIMER_PINTID:
            self.timers.deactivated(vcpu)

    # ----------------------------------------------------- the guest's view
    @staticmethod
    def _treg(reg: Any) -> int:
        # A register named as the table names it maps straight; any other
        # spelling (an encoding) goes through the table's lookup.
        t = T.TREGS.get(reg) if type(reg) is str else None
        return t if t is not None else T.TREGS[sysregs.lookup(reg).name]

    def read_sysreg(self, vcpu: int, reg: Any) -> int:
        return int(self.timers.read(vcpu, self._treg(reg)))

    def write_sysreg(self, vcpu: int, reg: Any, value: int) -> None:
        self.timers.write(vcpu, self._treg(reg), check_int("value", value, 0, U64))

    # ---------------------------------------------------------------- time
    @property
    def counter(self) -> int:
        return int(self.vm_rec[0]["counter"])

    def set_clock(self, counter: Any) -> None:
        """Start the model's host counter (CNTPCT_EL0) at ``counter``: for a
        VM none of whose vCPUs has run and no timer is armed (a VM being
        restored), so no event can be skipped or replayed."""
        counter = check_int("counter", counter, 0, U64)
        if any(v.has_run for v in self.vm.vcpus) or self.records["ptimer_armed"].any() \
                or self.records["bg_armed"].any():
            raise VgicError("set_clock: only a VM that has not run can have its clock set")
        self.vm_rec[0]["counter"] = counter

    def next_event(self) -> int | None:
        """The counter value at which the next armed host timer fires (a
        blocked vCPU's background timer, an emulated physical timer), or
        None: how far an idle emulator may move the counter."""
        rec = self.records
        times = [int(t) for t in rec["bg_at"][rec["bg_armed"].astype(bool)]]
        times += [int(t) for t in rec["ptimer_at"][rec["ptimer_armed"].astype(bool)]]
        return min(times) if times else None

    def advance(self, ticks: Any) -> int:
        return int(self.timers.advance(check_int("ticks", ticks, 0, U64)))

    # ---------------------------------------------------------- userspace
    def get_one_reg(self, vcpu: int, reg_id: int) -> int:
        vcpu = self._vcpu(vcpu)
        return int(self.timers.get_reg(vcpu, ONE_REGS[reg_id]))

    def set_one_reg(self, vcpu: int, reg_id: int, value: Any) -> None:
        vcpu = self._vcpu(vcpu)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= int(value) <= U64:
            raise KvmError(errno.EINVAL, f"one-reg {reg_id:#x}: {value!r} is not a 64-bit value")
        self.timers.set_reg(vcpu, ONE_REGS[reg_id], int(value))

    def one_regs(self) -> list[int]:
        return list(ONE_REGS)

    def get_one_regs(self, vcpus: np.ndarray, reg_ids: list[int]) -> np.ndarray:
        """The batch form: one kernel call per register over all ``vcpus``."""
        cols = [self.timers.get_reg_batch(vcpus, ONE_REGS[r]).astype("<u8")[:, None] for r in reg_ids]
        return np.ascontiguousarray(np.hstack(cols or [np.zeros((len(vcpus), 0), "<u8")])).view(np.uint8)

    def set_one_regs(self, vcpus: np.ndarray, reg_ids: list[int], data: np.ndarray) -> None:
        """The batch form (every 64-bit value is accepted: nothing to refuse).
        Register by register over the vCPUs, which equals vCPU by vCPU
        while none is loaded; a loaded vCPU's timer is reloaded after each
        write (TIMER_CNT moves the VM's offset), so then vCPU by vCPU."""
        if self.records["vcpu_loaded"][vcpus].any():
            super().set_one_regs(vcpus, reg_ids, data)
            return
        words = np.ascontiguousarray(data).view("<u8")
        for k, r in enumerate(reg_ids):
            self.timers.set_reg_batch(vcpus, ONE_REGS[r], words[:, k])

    def set_counter_offset(self, offset: Any, reserved: Any = 0) -> None:
        """KVM_ARM_SET_COUNTER_OFFSET (``struct kvm_arm_counter_offset``)."""
        for name, value in (("counter_offset", offset), ("reserved", reserved)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= int(value) <= U64:
                raise KvmError(errno.EINVAL, f"KVM_ARM_SET_COUNTER_OFFSET: {name} {value!r} is not a u64")
        if int(reserved):
            raise KvmError(errno.EINVAL, f"KVM_ARM_SET_COUNTER_OFFSET: reserved is {int(reserved):#x}, not 0")
        running = [v.id for v in self.vm.vcpus if v.running]
        if running:
            raise KvmError(errno.EBUSY, f"KVM_ARM_SET_COUNTER_OFFSET: vCPU {running[0]} is running")
        self.timers.set_counter_offset(int(offset))

    # The vCPU attribute group KVM_ARM_VCPU_TIMER_CTRL (vcpu.rst; timer-facts §C.5).
    def has_vcpu_attr(self, group: int, attr: int) -> bool:
        return group == uapi.KVM_ARM_VCPU_TIMER_CTRL and attr in _TIMER_IRQ_ATTRS

    def get_vcpu_attr(self, vcpu: int, group: int, attr: int) -> int:
        vcpu = self._vcpu(vcpu)
        if not self.has_vcpu_attr(group, attr):
            raise KvmError(errno.ENXIO, f"vCPU attribute ({group}, {attr}) does not exist")
        v = self.vm_rec[0]
        return {uapi.KVM_ARM_VCPU_TIMER_IRQ_VTIMER: int(v["vppi"]), uapi.KVM_ARM_VCPU_TIMER_IRQ_PTIMER: int(v["pppi"]),
                uapi.KVM_ARM_VCPU_TIMER_IRQ_HVTIMER: T.DEFAULT_HVTIMER_PPI,
                uapi.KVM_ARM_VCPU_TIMER_IRQ_HPTIMER: T.DEFAULT_HPTIMER_PPI}[attr]

    def set_vcpu_attr(self, vcpu: int, group: int, attr: int, value: Any) -> None:
        vcpu = self._vcpu(vcpu)
        if group != uapi.KVM_ARM_VCPU_TIMER_CTRL:
            raise KvmError(errno.ENXIO, f"vCPU attribute group {group} does not exist")
        if self.vm.gic is None:
            raise KvmError(errno.EINVAL, "timer IRQs need an in-kernel irqchip")
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 16 <= int(value) <= 31:
            raise KvmError(errno.EINVAL, f"timer IRQ {value!r} is not a PPI (16..31)")
        v = self.vm_rec[0]
        if v["ppis_frozen"]:
            raise KvmError(errno.EBUSY, "timer PPIs are fixed once a vCPU has run")
        if attr == uapi.KVM_ARM_VCPU_TIMER_IRQ_VTIMER:
            v["vppi"] = int(value)
        elif attr == uapi.KVM_ARM_VCPU_TIMER_IRQ_PTIMER:
            v["pppi"] = int(value)
        elif attr not in _TIMER_IRQ_ATTRS:
            raise KvmError(errno.ENXIO, f"timer attribute {attr} does not exist")
        # (HVTIMER/HPTIMER: accepted, as KVM without NV accepts them.)

    # ---------------------------------------------------------------- state
    def vcpu_state(self, i: int) -> dict[str, Any]:
        i = self._vcpu(i)
        r = self.records[i]
        out: dict[str, Any] = {name: int(r[f]) for f, name in _VCPU_REGS}
        out["hw"] = {name: int(r[f]) for f, name in _HW_REGS}
        out["host_active"] = self.vm.gic.gic.host_active(i) if self.vm.gic is not None else 0
        out.update({f: bool(r[f]) for f in _FLAGS})
        out.update({f: int(r[f]) for f in _TIMES + _COUNTS})
        out["device_irq_level"] = int(r["user_levels"])
        return out

    def state(self) -> dict[str, Any]:
        """The counter (CNTPCT_EL0), CNTFRQ_EL0, KVM's VM-wide offsets, PPIs
        and flags, and per vCPU :meth:`vcpu_state`."""
        v = self.vm_rec[0]
        return {
            "CNTPCT_EL0": int(v["counter"]), "CNTFRQ_EL0": int(v["cntfrq"]),
            "voffset": int(v["voffset"]), "poffset": int(v["poffset"]),
            "vtimer_ppi": int(v["vppi"]), "ptimer_ppi": int(v["pppi"]),
            "policy": next(k for k, p in T.POLICIES.items() if p == int(v["policy"])),
            "counter_offset_set": bool(v["counter_offset_set"]), "ppis_frozen": bool(v["ppis_frozen"]),
            "vcpus": [self.vcpu_state(i) for i in range(len(self.records))],
        }

    def check_state(self, state: Any) -> Any:
        w = self.name
        if not isinstance(state, dict):
            raise StateError(f"{w}: expected a dict, got {type(state).__name__}")
        keys = ("CNTPCT_EL0", "CNTFRQ_EL0", "voffset", "poffset", "vtimer_ppi", "ptimer_ppi", "policy",
                "counter_offset_set", "ppis_frozen", "vcpus")
        _keys(w, state, keys)
        vm_rec = self.vm_rec.copy()
        v = vm_rec[0]
        v["counter"] = _int(f"{w}.CNTPCT_EL0", state["CNTPCT_EL0"], 0, U64)
        v["cntfrq"] = _int(f"{w}.CNTFRQ_EL0", state["CNTFRQ_EL0"], 1, U64)
        v["voffset"] = _int(f"{w}.voffset", state["voffset"], 0, U64)
        v["poffset"] = _int(f"{w}.poffset", state["poffset"], 0, U64)
        v["vppi"] = _int(f"{w}.vtimer_ppi", state["vtimer_ppi"], 16, 31)
        v["pppi"] = _int(f"{w}.ptimer_ppi", state["ptimer_ppi"], 16, 31)
        if not isinstance(state["policy"], str) or state["policy"] not in T.POLICIES:
            raise StateError(f"{w}.policy: {state['policy']!r} is not one of {sorted(T.POLICIES)}")
        v["policy"] = T.POLICIES[state["policy"]]
        for f in ("counter_offset_set", "ppis_frozen"):
            if not isinstance(state[f], (bool, np.bool_)):
                raise StateError(f"{w}.{f}: expected a bool")
            v[f] = bool(state[f])
        vcpus = _list(f"{w}.vcpus", state["vcpus"], len(self.records))
        recs = self.records.copy()
        host = []
        vkeys = tuple(n for _, n in _VCPU_REGS) + ("hw", "host_active", "device_irq_level") + _FLAGS + _TIMES + _COUNTS
        for i, vd in enumerate(vcpus):
            wi = f"{w}.vcpus[{i}]"
            _keys(wi, vd, vkeys)
            r = recs[i]
            for f, name in _VCPU_REGS:
                r[f] = _int(f"{wi}.{name}", vd[name], 0, U64)
            _keys(f"{wi}.hw", vd["hw"], tuple(n for _, n in _HW_REGS))
            for f, name in _HW_REGS:
                r[f] = _int(f"{wi}.hw.{name}", vd["hw"][name], 0, U64)
            for f in _FLAGS:
                if not isinstance(vd[f], (bool, np.bool_)):
                    raise StateError(f"{wi}.{f}: expected a bool")
                r[f] = bool(vd[f])
            for f in _TIMES + _COUNTS:
                r[f] = _int(f"{wi}.{f}", vd[f], 0, U64)
            r["user_levels"] = _int(f"{wi}.device_irq_level", vd["device_irq_level"], 0, 3)
            host.append(_int(f"{wi}.host_active", vd["host_active"], 0, U32))
        v["kicks"] = int(np.count_nonzero(recs["kick"]))
        return vm_rec, recs, host

    def checkpoint(self) -> Any:
        """What :meth:`check_state` of :meth:`state` returns, read directly."""
        recs = self.records.copy()
        vm_rec = self.vm_rec.copy()
        vm_rec[0]["kicks"] = int(np.count_nonzero(recs["kick"]))
        gic = self.vm.gic
        host = [gic.gic.host_active(i) if gic is not None else 0 for i in range(len(recs))]
        return vm_rec, recs, host

    def apply_state(self, checked: Any) -> None:
        vm_rec, recs, host = checked
        self.vm_rec[:] = vm_rec
        self.records[:] = recs
        if self.vm.gic is None:
            return
        gic = self.vm.gic.gic
        vppi = int(vm_rec[0]["vppi"])
        for i in range(len(recs)):
            gic.set_host_active(i, host[i])
            for intid in range(16, 32):
                gic.unmap_phys_irq(i, intid)
            if recs[i]["enabled"]:
                gic.map_phys_irq(i, vppi, T.HOST_VTIMER_PINTID)
