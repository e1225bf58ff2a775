"""The arch timers of a VM: the pure-Python twin of ``vgic._core.timer``.

KVM's ``arch_timer.c`` on an nVHE host with a GICv3 (``docs/timer-facts.md``
§A; :mod:`vgic.gtimer`): the EL1 virtual timer is direct - its registers
live on the modelled hardware while ``loaded`` and its interrupt is
forwarded through an LR with HW = 1 - and the EL1 physical timer is
emulated by a soft timer.  Two policies move the vtimer between KVM's copy
and the hardware: ``lazy`` at vcpu_load / vcpu_put (Linux >= v4.15) and
``eager`` at every entry and exit (v4.14).  Each counts the timer system
registers it reads and writes and the host-GIC active-state writes it makes.

Time is the VM's physical counter (``vm["counter"]``); soft timers are
deadlines on it, fired in order by :meth:`Timers.advance`.  KVM's hrtimers
run in nanoseconds and re-arm when they fire early; deadlines in counter
ticks make that rounding vanish, and the re-arm check is kept for a
deadline that saturates at 2**64 - 1.
"""
from __future__ import annotations

import errno
import heapq
from typing import Any

import numpy as np

from .. import gtimer as T
from ..batchargs import value_array
from ..errors import KvmError
from ..ich import check_int, vcpu_indices
from ._batch import BatchSteps

_HOST_BIT = 1 << T.HOST_VTIMER_PINTID


class Timers(BatchSteps):
    """Every vCPU's EL1 virtual and physical timers (``records``, one
    :data:`vgic.gtimer.TIMER_VCPU` each) and the VM's counter (``vm``, one
    :data:`vgic.gtimer.TIMER_VM`).  ``gic`` is the VM's ``Gic`` (the timer
    interrupts are injected into it and the vtimer is HW-mapped there), or
    None for timers with no in-kernel irqchip."""

    def __init__(self, nr_vcpus: int, gic: Any = None, policy: int = T.TIMER_POLICY_LAZY,
                 cntfrq: int = T.DEFAULT_CNTFRQ) -> None:
        n = check_int("nr_vcpus", nr_vcpus, 1, 1 << 24)
        self.records = np.zeros(n, dtype=T.TIMER_VCPU)
        self.vm = np.zeros(1, dtype=T.TIMER_VM)
        self.records["hw_cnthctl"] = T.CNTHCTL_HOST
        v = self.vm[0]
        v["cntfrq"] = check_int("cntfrq", cntfrq, 1, T.U64)
        v["policy"] = check_int("policy", policy, 0, 1)
        v["vppi"] = T.DEFAULT_VTIMER_PPI
        v["pppi"] = T.DEFAULT_PTIMER_PPI
        v["irqchip"] = gic is not None
        if gic is not None:
            from .gic import Gic
            if not isinstance(gic, Gic):
                raise TypeError(f"gic must be a vgic._pure.gic.Gic or None, not {type(gic).__name__}")
            if gic.nr_vcpus != n:
                raise ValueError(f"the Gic has {gic.nr_vcpus} vCPUs, the timers {n}")
        self.gic = gic
        if gic is not None:
            gic._input_level = self._input_level

    # ------------------------------------------------------------ helpers
    def _i(self, vcpu: Any) -> int:
        return check_int("vcpu", vcpu, 0, len(self.records) - 1)

    @property
    def _now(self) -> int:
        return int(self.vm[0]["counter"])

    def _hw_read(self, r: Any, field: str) -> int:
        r["sysreg_reads"] += 1
        return int(r[field])

    def _hw_write(self, r: Any, field: str, value: int) -> None:
        r["sysreg_writes"] += 1
        r[field] = value

    def _hw_vnow(self, r: Any) -> int:
        return (self._now - int(r["hw_cntvoff"])) & T.U64

    def _hw_vctl(self, r: Any) -> int:
        """CNTV_CTL_EL0 as the hardware reads: ISTATUS while enabled and met."""
        ctl = int(r["hw_cntv_ctl"])
        if ctl & T.CTL_ENABLE and self._hw_vnow(r) >= int(r["hw_cntv_cval"]):
            ctl |= T.CTL_ISTATUS
        return ctl

    def _vnow(self) -> int:
        v = self.vm[0]
        return (int(v["counter"]) - int(v["voffset"])) & T.U64

    def _pnow(self) -> int:
        v = self.vm[0]
        return (int(v["counter"]) - int(v["poffset"])) & T.U64

    def _should_fire(self, i: int, virtual: bool) -> bool:
        """kvm_timer_should_fire(): a loaded (direct) vtimer reads the
        hardware CTL; otherwise KVM's copy against the counter."""
        r = self.records[i]
        if virtual:
            if r["loaded"]:
                r["sysreg_reads"] += 1
                ctl = self._hw_vctl(r)
                return bool(ctl & T.CTL_ENABLE and ctl & T.CTL_ISTATUS and not ctl & T.CTL_IMASK)
            return T.can_fire(int(r["cntv_ctl"])) and self._vnow() >= int(r["cntv_cval"])
        return T.can_fire(int(r["cntp_ctl"])) and self._pnow() >= int(r["cntp_cval"])

    def _input_level(self, vcpu: int, intid: int) -> bool:
        """kvm_arch_timer_get_input_level(): the vGIC resamples a mapped line."""
        v = self.vm[0]
        if intid == int(v["vppi"]):
            return self._should_fire(vcpu, True)
        if intid == int(v["pppi"]):
            return self._should_fire(vcpu, False)
        return False

    def _update_irq(self, i: int, virtual: bool, level: bool) -> None:
        """kvm_timer_update_irq(): the context's level, told to the vGIC."""
        r = self.records[i]
        r["vlevel" if virtual else "plevel"] = level
        if level and r["running"] and not r["kick"]:
            r["kick"] = True
            self.vm[0]["kicks"] += 1
        if self.gic is not None:
            v = self.vm[0]
            self.gic.set_irq_level(i, int(v["vppi"] if virtual else v["pppi"]), level)

    def _set_phys_active(self, i: int, active: bool) -> None:
        """set_timer_irq_phys_active() on the host GIC (counted)."""
        r = self.records[i]
        r["gic_active_writes"] += 1
        if self.gic is not None:
            mask = self.gic.host_active(i)
            self.gic.set_host_active(i, (mask | _HOST_BIT) if active else (mask & ~_HOST_BIT))

    def _host_active(self, i: int) -> bool:
        return self.gic is not None and bool(self.gic.host_active(i) & _HOST_BIT)

    # ------------------------------------------- moving the direct vtimer
    def _restore(self, i: int) -> None:
        """timer_restore_state(vtimer): CNTVOFF, CVAL, then CTL."""
        r = self.records[i]
        if r["loaded"]:
            return
        self._hw_write(r, "hw_cntvoff", int(self.vm[0]["voffset"]))
        self._hw_write(r, "hw_cntv_cval", int(r["cntv_cval"]))
        self._hw_write(r, "hw_cntv_ctl", int(r["cntv_ctl"]) & (T.CTL_ENABLE | T.CTL_IMASK))
        r["loaded"] = True

    def _save(self, i: int) -> None:
        """timer_save_state(vtimer): CTL (raw, ISTATUS included) and CVAL
        read, CTL zeroed, CNTVOFF zeroed."""
        r = self.records[i]
        if not r["loaded"]:
            return
        r["sysreg_reads"] += 1
        r["cntv_ctl"] = self._hw_vctl(r)
        r["cntv_cval"] = self._hw_read(r, "hw_cntv_cval")
        self._hw_write(r, "hw_cntv_ctl", 0)
        self._hw_write(r, "hw_cntvoff", 0)
        r["loaded"] = False

    def _set_traps(self, i: int, guest: bool) -> None:
        """__timer_enable_traps / __timer_disable_traps (nVHE): CNTHCTL_EL2
        read, then written with the guest's or the host's access bits."""
        r = self.records[i]
        self._hw_read(r, "hw_cnthctl")
        self._hw_write(r, "hw_cnthctl", T.CNTHCTL_GUEST if guest else T.CNTHCTL_HOST)

    # ------------------------------------------------ the emulated ptimer
    def _arm_ptimer(self, i: int) -> None:
        """timer_emulate(ptimer)."""
        r = self.records[i]
        fire = self._should_fire(i, False)
        if fire != bool(r["plevel"]):
            self._update_irq(i, False, fire)
        if fire or not T.can_fire(int(r["cntp_ctl"])):
            return
        r["ptimer_at"] = self._deadline(T.delta(self._pnow(), int(r["cntp_cval"])))
        r["ptimer_armed"] = True

    def _deadline(self, ticks: int) -> int:
        return min(self._now + ticks, T.U64)

    def _earliest(self, i: int) -> int:
        """kvm_timer_earliest_exp() in ticks, or NO_DEADLINE when no timer
        can fire (KVM's copy: the vCPU is put)."""
        r = self.records[i]
        best = T.NO_DEADLINE
        if T.can_fire(int(r["cntv_ctl"])):
            best = T.delta(self._vnow(), int(r["cntv_cval"]))
        if T.can_fire(int(r["cntp_ctl"])):
            best = min(best, T.delta(self._pnow(), int(r["cntp_cval"])))
        return best

    def _arm_bg(self, i: int) -> None:
        """kvm_timer_blocking(): the background timer at the earliest expiry."""
        ticks = self._earliest(i)
        if ticks != T.NO_DEADLINE:
            r = self.records[i]
            r["bg_at"] = self._deadline(ticks)
            r["bg_armed"] = True

    def host_check(self, vcpu: Any) -> bool:
        """The host takes the direct vtimer's physical PPI if the hardware
        asserts it and it is not active (kvm_arch_timer_handler); True if it
        did.  The PPI then stays active until the guest deactivates the
        forwarded interrupt."""
        i = self._i(vcpu)
        r = self.records[i]
        if not self._host_can_take(i):
            return False
        ctl = self._hw_vctl(r)
        if not (ctl & T.CTL_ISTATUS and not ctl & T.CTL_IMASK):
            return False
        if self.gic is not None:
            self.gic.set_host_active(i, self.gic.host_active(i) | _HOST_BIT)
        r["host_irqs"] += 1
        if self._should_fire(i, True):
            self._update_irq(i, True, True)
        if self.gic is None:
            # No active state to hold it off: the handler disables the PPI
            # until the line falls (kvm_arch_timer_handler, userspace irqchip).
            r["host_masked"] = True
        return True

    def _host_can_take(self, i: int) -> bool:
        """The direct vtimer is on the hardware and its physical PPI can
        reach the host: not active (in-kernel vGIC) or not disabled
        (userspace irqchip)."""
        r = self.records[i]
        if not r["loaded"]:
            return False
        if self.gic is None:
            return not r["host_masked"]
        return not self._host_active(i)

    def _mask_host(self, i: int, masked: bool) -> None:
        """disable_percpu_irq / enable_percpu_irq of the host vtimer PPI
        (userspace irqchip; counted with the host-GIC writes)."""
        r = self.records[i]
        r["gic_active_writes"] += 1
        r["host_masked"] = masked

    def _sync_user(self, i: int) -> None:
        """kvm_timer_sync_user() and kvm_timer_update_run() at an exit with
        no in-kernel irqchip: a vtimer no longer firing has its level
        lowered and its host PPI enabled again; the levels are published as
        device_irq_level bits."""
        r = self.records[i]
        if not self._should_fire(i, True):
            self._update_irq(i, True, False)
            self._mask_host(i, False)
        r["user_levels"] = int(bool(r["vlevel"])) | (int(bool(r["plevel"])) << 1)

    # ----------------------------------------------------- the lifecycle
    def first_run(self, vcpu: Any) -> None:
        """kvm_timer_enable() at a vCPU's first KVM_RUN: the PPIs must be
        distinct (-EINVAL otherwise), the vtimer's is mapped to the host's
        virtual-timer PPI, and the PPIs are frozen VM-wide."""
        i = self._i(vcpu)
        r = self.records[i]
        if r["enabled"]:
            return
        v = self.vm[0]
        if self.gic is not None:
            if int(v["vppi"]) == int(v["pppi"]):
                raise KvmError(errno.EINVAL, f"KVM_RUN: the timers share PPI {int(v['vppi'])}")
            self.gic.map_phys_irq(i, int(v["vppi"]), T.HOST_VTIMER_PINTID)
            v["ppis_frozen"] = True
        r["enabled"] = True
        if r["vcpu_loaded"]:
            self._load_timers(i)

    def _load_timers(self, i: int) -> None:
        """kvm_timer_vcpu_load() (lazy): the vtimer's level and the physical
        active state, the background timer cancelled, the vtimer restored,
        the ptimer emulated."""
        r = self.records[i]
        self._update_irq(i, True, self._should_fire(i, True))
        self._hold_host(i)
        r["bg_armed"] = False
        self._restore(i)
        self._arm_ptimer(i)
        self.host_check(i)

    def _hold_host(self, i: int) -> None:
        """kvm_timer_vcpu_load_gic(): the host PPI active while the guest
        owns the interrupt (its level, or the virtual IRQ active); with no
        in-kernel irqchip, kvm_timer_vcpu_load_nogic(): disabled while the
        level is high."""
        r = self.records[i]
        if self.gic is None:
            self._mask_host(i, bool(r["vlevel"]))
            return
        active = bool(r["vlevel"]) or bool(self.gic.map_is_active(i, int(self.vm[0]["vppi"])))
        self._set_phys_active(i, active)

    def load(self, vcpu: Any) -> None:
        """vcpu_load."""
        i = self._i(vcpu)
        r = self.records[i]
        r["vcpu_loaded"] = True
        if r["enabled"] and self.vm[0]["policy"] == T.TIMER_POLICY_LAZY:
            self._load_timers(i)

    def put(self, vcpu: Any) -> None:
        """vcpu_put: (lazy) the vtimer saved, the ptimer's soft timer
        cancelled, and for a blocking vCPU the background timer armed."""
        i = self._i(vcpu)
        r = self.records[i]
        r["vcpu_loaded"] = False
        if not r["enabled"] or self.vm[0]["policy"] != T.TIMER_POLICY_LAZY:
            return
        self._save(i)
        r["ptimer_armed"] = False
        if r["blocking"]:
            self._arm_bg(i)

    def enter(self, vcpu: Any) -> None:
        """Guest entry, before the vGIC's flush.  Lazy: the trap toggle only.
        Eager (kvm_timer_flush_hwstate and the hyp restore of v4.14): the
        levels, the physical active state, the ptimer's soft timer, the
        traps and the vtimer restored."""
        i = self._i(vcpu)
        r = self.records[i]
        if not r["enabled"]:
            r["running"] = True
            return
        if self.vm[0]["policy"] == T.TIMER_POLICY_LAZY:
            self._set_traps(i, True)
            r["running"] = True
            return
        fire = self._should_fire(i, True)
        if fire != bool(r["vlevel"]):
            self._update_irq(i, True, fire)
        self._arm_ptimer(i)
        self._hold_host(i)
        self._set_traps(i, True)
        self._restore(i)
        self.host_check(i)
        r["running"] = True

    def exit(self, vcpu: Any) -> None:
        """Guest exit, after the vGIC's fold.  Lazy: the trap toggle only.
        Eager: the vtimer saved, the traps, the ptimer's soft timer
        cancelled and the vtimer's level updated (kvm_timer_sync_hwstate)."""
        i = self._i(vcpu)
        r = self.records[i]
        r["running"] = False
        if not r["enabled"]:
            return
        if self.vm[0]["policy"] == T.TIMER_POLICY_LAZY:
            self._set_traps(i, False)
        else:
            self._save(i)
            self._set_traps(i, False)
            r["ptimer_armed"] = False
            fire = self._should_fire(i, True)
            if fire != bool(r["vlevel"]):
                self._update_irq(i, True, fire)
        if self.gic is None:
            self._sync_user(i)

    def block(self, vcpu: Any) -> None:
        """The vCPU blocks in WFI: marked blocking before it is put (lazy:
        the put arms the background timer); eager arms it here
        (kvm_timer_schedule)."""
        i = self._i(vcpu)
        r = self.records[i]
        r["blocking"] = True
        r["woken"] = False
        if r["enabled"] and self.vm[0]["policy"] == T.TIMER_POLICY_EAGER:
            self._arm_bg(i)

    def woken(self, vcpu: Any) -> bool:
        """True once the background timer of the blocked vCPU fired."""
        return bool(self.records[self._i(vcpu)]["woken"])

    def unblock(self, vcpu: Any) -> bool:
        """After the vCPU is loaded again: the background timer cancelled
        (lazy: already by the load); True if it fired while blocked."""
        i = self._i(vcpu)
        r = self.records[i]
        woken = bool(r["woken"])
        r["blocking"] = False
        r["woken"] = False
        r["bg_armed"] = False
        return woken

    # -------------------------------------------------- the guest's view
    def read(self, vcpu: Any, reg: Any) -> int:
        """A guest MRS of timer register ``reg`` (a ``TREG_*`` code) on a
        running vCPU: CNTV_* from the hardware, CNTP_* emulated (trapped)."""
        i = self._i(vcpu)
        reg = check_int("reg", reg, 0, T.NR_TREGS - 1)
        r = self.records[i]
        if reg == T.TREG_CNTFRQ:
            return int(self.vm[0]["cntfrq"])
        if reg == T.TREG_CNTPCT:
            return self._pnow()
        if reg <= T.TREG_CNTVCT:
            if not r["loaded"]:
                raise ValueError(f"vcpu {i}: the vtimer is not on the hardware (not running)")
            if reg == T.TREG_CNTV_CTL:
                return self._hw_vctl(r)
            if reg == T.TREG_CNTV_CVAL:
                return int(r["hw_cntv_cval"])
            if reg == T.TREG_CNTV_TVAL:
                return T.tval(self._hw_vnow(r), int(r["hw_cntv_cval"]))
            return self._hw_vnow(r)
        # kvm_arm_timer_read() of the emulated ptimer.
        if reg == T.TREG_CNTP_CTL:
            ctl = int(r["cntp_ctl"])
            return ctl | (T.CTL_ISTATUS if self._pnow() >= int(r["cntp_cval"]) else 0)
        if reg == T.TREG_CNTP_CVAL:
            return int(r["cntp_cval"])
        return T.tval(self._pnow(), int(r["cntp_cval"]))

    def write(self, vcpu: Any, reg: Any, value: Any) -> None:
        """A guest MSR of timer register ``reg`` on a running vCPU."""
        i = self._i(vcpu)
        reg = check_int("reg", reg, 0, T.NR_TREGS - 1)
        value = check_int("value", value, 0, T.U64)
        r = self.records[i]
        if reg in (T.TREG_CNTVCT, T.TREG_CNTPCT, T.TREG_CNTFRQ):
            return                                  # read-only at EL1: ignored
        if reg <= T.TREG_CNTV_TVAL:
            if not r["loaded"]:
                raise ValueError(f"vcpu {i}: the vtimer is not on the hardware (not running)")
            if reg == T.TREG_CNTV_CTL:
                r["hw_cntv_ctl"] = value & (T.CTL_ENABLE | T.CTL_IMASK)
            elif reg == T.TREG_CNTV_CVAL:
                r["hw_cntv_cval"] = value
            else:
                r["hw_cntv_cval"] = T.cval_from_tval(self._hw_vnow(r), value)
            self.host_check(i)
            return
        # kvm_arm_timer_write_sysreg() of the emulated ptimer: the soft
        # timer cancelled, the register written, the timer emulated again.
        r["ptimer_armed"] = False
        if reg == T.TREG_CNTP_CTL:
            r["cntp_ctl"] = value & ~T.CTL_ISTATUS & T.U64
        elif reg == T.TREG_CNTP_CVAL:
            r["cntp_cval"] = value
        else:
            r["cntp_cval"] = T.cval_from_tval(self._pnow(), value)
        self._arm_ptimer(i)

    def deactivated(self, vcpu: Any) -> None:
        """The guest deactivated the forwarded vtimer interrupt (an LR with
        HW = 1): the physical PPI is inactive, so a still-asserted timer
        fires into the host again."""
        self.host_check(vcpu)

    def take_kicks(self) -> list[int]:
        """The vCPUs a timer raised its interrupt on while they ran, in
        index order, their kick requests cleared."""
        if not self.vm[0]["kicks"]:
            return []
        ids = [int(i) for i in np.flatnonzero(self.records["kick"])]
        self.records["kick"] = 0
        self.vm[0]["kicks"] = 0
        return ids

    # ----------------------------------------------------------- time
    def _events(self, i: int, limit: int) -> list[tuple[int, int, int]]:
        r = self.records[i]
        out = []
        if self._host_can_take(i):
            ctl = int(r["hw_cntv_ctl"])
            if T.can_fire(ctl):
                t = self._deadline(T.delta(self._hw_vnow(r), int(r["hw_cntv_cval"])))
                if t <= limit:
                    out.append((t, i, T.TIMER_EV_HOST_VTIMER))
        if r["ptimer_armed"] and int(r["ptimer_at"]) <= limit:
            out.append((int(r["ptimer_at"]), i, T.TIMER_EV_PTIMER))
        if r["bg_armed"] and int(r["bg_at"]) <= limit:
            out.append((int(r["bg_at"]), i, T.TIMER_EV_BG))
        return out

    def advance(self, ticks: Any) -> int:
        """Move the physical counter on by ``ticks``, firing every timer
        event on the way in (time, vCPU, kind) order; the number fired."""
        ticks = check_int("ticks", ticks, 0, T.U64)
        v = self.vm[0]
        target = int(v["counter"]) + ticks
        if target > T.U64:
            raise ValueError(f"advancing by {ticks} would wrap the 64-bit counter")
        heap: list[tuple[int, int, int]] = []
        for i in range(len(self.records)):
            heap.extend(self._events(i, target))
        heapq.heapify(heap)
        fired = 0
        while heap:
            event = heapq.heappop(heap)
            t, i, kind = event
            if event not in self._events(i, target):
                continue                            # no longer armed as it was
            v["counter"] = max(t, int(v["counter"]))
            if self._fire(i, kind):
                fired += 1
            for e in self._events(i, target):
                if e[2] == kind and e[0] > t:       # re-armed later (fired early)
                    heapq.heappush(heap, e)
        v["counter"] = target
        return fired

    def _fire(self, i: int, kind: int) -> bool:
        r = self.records[i]
        if kind == T.TIMER_EV_HOST_VTIMER:
            return self.host_check(i)
        if kind == T.TIMER_EV_PTIMER:
            # kvm_hrtimer_expire(): early (a saturated deadline) re-arms.
            ticks = T.delta(self._pnow(), int(r["cntp_cval"]))
            if ticks:
                r["ptimer_at"] = self._deadline(ticks)
                if int(r["ptimer_at"]) == self._now:
                    r["ptimer_armed"] = False
                return False
            r["ptimer_armed"] = False
            self._update_irq(i, False, True)
            return True
        ticks = self._earliest(i)                   # kvm_bg_timer_expire()
        if ticks and ticks != T.NO_DEADLINE:
            r["bg_at"] = self._deadline(ticks)
            if int(r["bg_at"]) == self._now:
                r["bg_armed"] = False
            return False
        r["bg_armed"] = False
        r["woken"] = True
        return True

    # ------------------------------------------------------ userspace
    def get_reg(self, vcpu: Any, which: Any) -> int:
        """KVM_GET_ONE_REG of a timer register (a ``ONEREG_*`` code), as
        kvm_arm_timer_get_reg(): CTL with ISTATUS when the condition holds,
        CNT as the counter minus the offset."""
        i = self._i(vcpu)
        which = check_int("which", which, 0, T.ONEREG_PTIMER_CNT)
        moved = self._sync_out(i)
        r = self.records[i]
        out = self._get(r, which)
        self._sync_in(i, moved)
        return out

    def _get(self, r: Any, which: int) -> int:
        if which == T.ONEREG_TIMER_CTL:
            return int(r["cntv_ctl"]) | (T.CTL_ISTATUS if self._vnow() >= int(r["cntv_cval"]) else 0)
        if which == T.ONEREG_TIMER_CVAL:
            return int(r["cntv_cval"])
        if which == T.ONEREG_TIMER_CNT:
            return self._vnow()
        if which == T.ONEREG_PTIMER_CTL:
            return int(r["cntp_ctl"]) | (T.CTL_ISTATUS if self._pnow() >= int(r["cntp_cval"]) else 0)
        if which == T.ONEREG_PTIMER_CVAL:
            return int(r["cntp_cval"])
        return self._pnow()

    def get_reg_batch(self, vcpus: Any, which: Any) -> np.ndarray:
        """:meth:`get_reg` of one register on many vCPUs (checked first):
        the values as ``uint64``."""
        ids = vcpu_indices(vcpus, len(self.records))
        which = check_int("which", which, 0, T.ONEREG_PTIMER_CNT)
        return np.array([self.get_reg(i, which) for i in ids.tolist()], dtype=np.uint64)

    def set_reg_batch(self, vcpus: Any, which: Any, values: Any) -> None:
        """:meth:`set_reg` of one register on many vCPUs, in order (checked first)."""
        ids = vcpu_indices(vcpus, len(self.records))
        which = check_int("which", which, 0, T.ONEREG_PTIMER_CNT)
        vals = value_array("values", values, T.U64)
        if vals.shape[0] != ids.shape[0]:
            raise ValueError(f"values has {vals.shape[0]} entries, vcpus {ids.shape[0]}")
        for i, x in zip(ids.tolist(), vals.tolist()):
            self.set_reg(i, which, x)

    def set_reg(self, vcpu: Any, which: Any, value: Any) -> None:
        """KVM_SET_ONE_REG of a timer register: CTL stored without ISTATUS,
        CNT moves the VM's offset (ignored once KVM_ARM_SET_COUNTER_OFFSET
        was used)."""
        i = self._i(vcpu)
        which = check_int("which", which, 0, T.ONEREG_PTIMER_CNT)
        value = check_int("value", value, 0, T.U64)
        moved = self._sync_out(i)
        r = self.records[i]
        v = self.vm[0]
        if which == T.ONEREG_TIMER_CTL:
            r["cntv_ctl"] = value & ~T.CTL_ISTATUS & T.U64
        elif which == T.ONEREG_TIMER_CVAL:
            r["cntv_cval"] = value
        elif which == T.ONEREG_PTIMER_CTL:
            r["cntp_ctl"] = value & ~T.CTL_ISTATUS & T.U64
        elif which == T.ONEREG_PTIMER_CVAL:
            r["cntp_cval"] = value
        elif not v["counter_offset_set"]:
            field = "voffset" if which == T.ONEREG_TIMER_CNT else "poffset"
            v[field] = (self._now - value) & T.U64
        self._sync_in(i, moved)

    def _sync_out(self, i: int) -> bool:
        # Userspace reaches KVM's copy: a vtimer on the hardware (a loaded
        # vCPU, lazy) is saved first and restored after, as KVM's accessors
        # of a direct timer do (save, access, restore).
        if self.records[i]["loaded"]:
            self._save(i)
            return True
        return False

    def _sync_in(self, i: int, moved: bool) -> None:
        # KVM's ioctls find the vCPU put, and its next KVM_RUN loads it: a
        # vtimer saved for the access is loaded again in full (levels,
        # physical state, restore, ptimer), a put vCPU's ptimer re-emulated.
        r = self.records[i]
        if moved:
            r["ptimer_armed"] = False
            self._load_timers(i)
        elif r["ptimer_armed"]:
            r["ptimer_armed"] = False
            self._arm_ptimer(i)

    def set_counter_offset(self, offset: Any) -> None:
        """KVM_ARM_SET_COUNTER_OFFSET: both offsets, and CNT one-reg writes
        ignored from then on."""
        offset = check_int("counter_offset", offset, 0, T.U64)
        v = self.vm[0]
        v["voffset"] = offset
        v["poffset"] = offset
        v["counter_offset_set"] = True

    def reset(self, vcpu: Any) -> None:
        """kvm_timer_vcpu_reset(): CTL zeroed for both timers, levels low,
        the mapped interrupt's state cleared, soft timers cancelled."""
        i = self._i(vcpu)
        r = self.records[i]
        moved = self._sync_out(i)
        r["cntv_ctl"] = 0
        r["cntp_ctl"] = 0
        r["ptimer_armed"] = False
        if r["enabled"]:
            self._update_irq(i, True, False)
            self._update_irq(i, False, False)
        self._sync_in(i, moved)

    # ------------------------------------------------------ batch forms

    def save_batch(self, ids: Any) -> None:
        """timer_save_state of the vtimer of every vCPU in ``ids``."""
        for i in self._ids(ids):
            self._save(i)

    def restore_batch(self, ids: Any) -> None:
        """timer_restore_state of the vtimer of every vCPU in ``ids``."""
        for i in self._ids(ids):
            self._restore(i)

    def expiry_batch(self, ids: Any) -> np.ndarray:
        """kvm_timer_earliest_exp of every vCPU in ``ids`` as a deadline on
        the physical counter (``NO_DEADLINE`` when no timer can fire)."""
        out = [self._earliest(i) for i in self._ids(ids)]
        return np.array([x if x == T.NO_DEADLINE else self._deadline(x) for x in out], dtype=np.uint64)


def plain_timer_loop(records: np.ndarray, ids: Any, counter: int, voffset: int) -> np.ndarray:
    """The batch benchmark's baseline (twin of the core's): the record work
    of save_batch, restore_batch and expiry_batch with no model around it."""
    if isinstance(records, np.ndarray):
        records = np.asarray(records)
    if (not isinstance(records, np.ndarray) or records.dtype != T.TIMER_VCPU or records.ndim != 1
            or not records.flags.c_contiguous):
        raise TypeError("records must be a 1-D C-contiguous array of vgic.gtimer.TIMER_VCPU")
    if not records.flags.writeable:
        raise ValueError("records is read-only")
    counter = check_int("counter", counter, 0, T.U64)
    voffset = check_int("voffset", voffset, 0, T.U64)
    idx = vcpu_indices(ids, records.shape[0]).tolist()
    for i in idx:
        r = records[i]
        ctl = int(r["hw_cntv_ctl"])
        if ctl & T.CTL_ENABLE and (counter - int(r["hw_cntvoff"])) & T.U64 >= int(r["hw_cntv_cval"]):
            ctl |= T.CTL_ISTATUS
        r["cntv_ctl"], r["cntv_cval"] = ctl, r["hw_cntv_cval"]
        r["hw_cntv_ctl"], r["hw_cntvoff"], r["loaded"] = 0, 0, 0
        r["sysreg_reads"] += 2
        r["sysreg_writes"] += 2
    for i in idx:
        r = records[i]
        r["hw_cntvoff"], r["hw_cntv_cval"] = voffset, r["cntv_cval"]
        r["hw_cntv_ctl"] = int(r["cntv_ctl"]) & (T.CTL_ENABLE | T.CTL_IMASK)
        r["sysreg_writes"] += 3
        r["loaded"] = 1
    now_v = (counter - voffset) & T.U64
    out = []
    for i in idx:
        r = records[i]
        best = T.NO_DEADLINE
        if T.can_fire(int(r["cntv_ctl"])):
            best = T.delta(now_v, int(r["cntv_cval"]))
        if T.can_fire(int(r["cntp_ctl"])):
            best = min(best, T.delta(counter, int(r["cntp_cval"])))
        out.append(best if best == T.NO_DEADLINE else min(counter + best, T.U64))
    return np.array(out, dtype=np.uint64)
