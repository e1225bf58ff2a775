"""The Arm generic timer and KVM's arch-timer model, declared once: register
fields, the architecture's counter/compare rules, the codes the timer
kernels use, and the per-vCPU and per-VM records they work on.

Sources (see ``docs/timer-facts.md``): the Arm ARM's generic-timer chapter
(CNTV_CTL_EL0 and CNTP_CTL_EL0: ENABLE, IMASK, ISTATUS; TimerConditionMet is
``CVAL <= counter - offset`` as an unsigned 64-bit compare; TVAL is the low
32 bits of ``CVAL - counter`` read, and a write sets ``CVAL = counter +
SignExtend(TVAL)``), and Linux ``arch/arm64/kvm/arch_timer.c``.

The modelled host is an nVHE one with a GICv3 (the configuration of the
2017 lazy save/restore series): the EL1 virtual timer is *direct* (its
registers live on the hardware while loaded, its interrupt is forwarded to
the guest through an LR with HW = 1) and the EL1 physical timer is
*emulated* (the guest's CNTP_* accesses trap, a soft timer stands for its
hrtimer).

This module imports nothing else of vgic (the build generates the
kernels' C constants from it).
"""
from __future__ import annotations

import numpy as np

U64 = (1 << 64) - 1

# CNT{V,P}_CTL_EL0
CTL_ENABLE = 1 << 0
CTL_IMASK = 1 << 1
CTL_ISTATUS = 1 << 2          # read-only: the timer condition is met

# CNTHCTL_EL2 (E2H = 0 layout): EL1 access to the physical counter and timer.
CNTHCTL_EL1PCTEN = 1 << 0
CNTHCTL_EL1PCEN = 1 << 1
#: CNTHCTL_EL2 while the host runs (both allowed) and while the guest runs
#: (counter allowed, physical timer trapped: KVM emulates the guest's CNTP_*).
CNTHCTL_HOST = CNTHCTL_EL1PCTEN | CNTHCTL_EL1PCEN
CNTHCTL_GUEST = CNTHCTL_EL1PCTEN

# KVM's default PPIs (arch_timer.c default_ppi) and the host's virtual-timer PPI.
DEFAULT_VTIMER_PPI = 27
DEFAULT_PTIMER_PPI = 30
DEFAULT_HVTIMER_PPI = 28
DEFAULT_HPTIMER_PPI = 26
HOST_VTIMER_PINTID = 27
#: QEMU virt's counter frequency before 9.0 (62.5 MHz); a VM parameter.
DEFAULT_CNTFRQ = 62_500_000

# The policies (issue #9): KVM's lazy design since v4.15 and the eager one
# it replaced (Linux v4.14).
TIMER_POLICY_LAZY = 0
TIMER_POLICY_EAGER = 1
POLICIES = {"lazy": TIMER_POLICY_LAZY, "eager": TIMER_POLICY_EAGER}

# The guest's timer registers, as the kernels number them.
TREG_CNTV_CTL = 0
TREG_CNTV_CVAL = 1
TREG_CNTV_TVAL = 2
TREG_CNTVCT = 3
TREG_CNTP_CTL = 4
TREG_CNTP_CVAL = 5
TREG_CNTP_TVAL = 6
TREG_CNTPCT = 7
TREG_CNTFRQ = 8
NR_TREGS = 9
#: Architectural name -> kernel code.
TREGS = {
    "CNTV_CTL_EL0": TREG_CNTV_CTL, "CNTV_CVAL_EL0": TREG_CNTV_CVAL, "CNTV_TVAL_EL0": TREG_CNTV_TVAL,
    "CNTVCT_EL0": TREG_CNTVCT, "CNTP_CTL_EL0": TREG_CNTP_CTL, "CNTP_CVAL_EL0": TREG_CNTP_CVAL,
    "CNTP_TVAL_EL0": TREG_CNTP_TVAL, "CNTPCT_EL0": TREG_CNTPCT, "CNTFRQ_EL0": TREG_CNTFRQ,
}

# One-reg registers, as the kernels number them (vgic.uapi has the IDs).
ONEREG_TIMER_CTL = 0
ONEREG_TIMER_CVAL = 1
ONEREG_TIMER_CNT = 2
ONEREG_PTIMER_CTL = 3
ONEREG_PTIMER_CVAL = 4
ONEREG_PTIMER_CNT = 5

# The events of `advance`, in tie-break order at one instant.
TIMER_EV_HOST_VTIMER = 0      # the host takes the direct vtimer's physical PPI
TIMER_EV_PTIMER = 1           # the emulated ptimer's soft timer (hrtimer)
TIMER_EV_BG = 2               # a blocked vCPU's background timer
NO_DEADLINE = U64

#: One vCPU's timers: KVM's saved contexts (``cntv_*``, ``cntp_*``: the
#: vCPU's sysreg file), the modelled hardware under it (``hw_*``), the soft
#: timers' deadlines on the physical counter, KVM's per-context output
#: levels and flags, and the counts of what KVM did to the hardware.  With
#: no in-kernel irqchip, ``host_masked`` is the host vtimer PPI disabled
#: (disable_percpu_irq) and ``user_levels`` the device_irq_level bits last
#: published to userspace.  ``kick`` asks the VM to exit and re-enter a
#: running vCPU a timer raised its interrupt on (KVM kicks it: the physical
#: timer interrupt or the soft timer takes it out of the guest, and the new
#: level reaches its LRs at the next entry).
TIMER_VCPU = np.dtype([
    ("cntv_ctl", "<u8"), ("cntv_cval", "<u8"), ("cntp_ctl", "<u8"), ("cntp_cval", "<u8"),
    ("hw_cntv_ctl", "<u8"), ("hw_cntv_cval", "<u8"), ("hw_cntvoff", "<u8"), ("hw_cnthctl", "<u8"),
    ("ptimer_at", "<u8"), ("bg_at", "<u8"),
    ("sysreg_reads", "<u8"), ("sysreg_writes", "<u8"), ("gic_active_writes", "<u8"), ("host_irqs", "<u8"),
    ("enabled", "u1"), ("vcpu_loaded", "u1"), ("loaded", "u1"), ("vlevel", "u1"), ("plevel", "u1"),
    ("ptimer_armed", "u1"), ("bg_armed", "u1"), ("blocking", "u1"), ("woken", "u1"),
    ("host_masked", "u1"), ("user_levels", "u1"), ("running", "u1"), ("kick", "u1"),
    ("pad", "u1", (3,)),
])
#: The VM's timer state: the physical counter, its frequency, KVM's VM-wide
#: offsets and PPIs, and its flags.
TIMER_VM = np.dtype([
    ("counter", "<u8"), ("cntfrq", "<u8"), ("voffset", "<u8"), ("poffset", "<u8"),
    ("vppi", "<u4"), ("pppi", "<u4"),
    ("policy", "u1"), ("counter_offset_set", "u1"), ("ppis_frozen", "u1"), ("irqchip", "u1"),
    ("kicks", "<u4"),
])
assert TIMER_VCPU.itemsize == 128 and TIMER_VM.itemsize == 48


def sext32(value: int) -> int:
    """A 32-bit value sign-extended to 64 bits, as an unsigned 64-bit int."""
    value &= 0xFFFFFFFF
    return (value | (U64 ^ 0xFFFFFFFF)) if value & 0x80000000 else value


def condition_met(now: int, cval: int) -> bool:
    """TimerConditionMet: ``now >= CVAL``, unsigned 64-bit."""
    return now >= cval


def tval(now: int, cval: int) -> int:
    """A TVAL read: the low 32 bits of ``CVAL - now``."""
    return (cval - now) & 0xFFFFFFFF


def cval_from_tval(now: int, value: int) -> int:
    """The CVAL a TVAL write sets: ``now + SignExtend(value[31:0])``."""
    return (now + sext32(value)) & U64


def can_fire(ctl: int) -> bool:
    """kvm_timer_irq_can_fire(): enabled and not masked."""
    return ctl & (CTL_ENABLE | CTL_IMASK) == CTL_ENABLE


def delta(now: int, cval: int) -> int:
    """kvm_timer_compute_delta() in counter ticks: 0 once the condition
    holds, else ``CVAL - now``."""
    return 0 if now >= cval else cval - now


__all__ = [name for name in dir() if name.isupper()] + [
    "sext32", "condition_met", "tval", "cval_from_tval", "can_fire", "delta"]
