"""Shared helpers of the arch-timer tests: a guest that sets up its GIC the
way kvm-unit-tests / the KVM selftests do, and the two EL1 timers named by
their registers and INTIDs (docs/timer-facts.md §C.5: KVM's default PPIs
are 27 for the virtual timer and 30 for the physical one).

GIC facts used (kvm-facts.md §1-§3, IHI 0069): GICD_CTLR = 0x12 enables
Group 1 with affinity routing; GICR_ISENABLER0 / ICENABLER0 at SGI_base +
0x100 / 0x180; GICR_ISPENDR0 / ISACTIVER0 at SGI_base + 0x200 / 0x300 read
the pending (latch OR line level for a level interrupt) and active states;
the guest acknowledges with ICC_IAR1_EL1 (1023 = nothing pending) and ends
with ICC_EOIR1_EL1 (EOImode 0: priority drop and deactivation).
"""
from __future__ import annotations

from dataclasses import dataclass

import vgic
from vgic import regmap as R
from vgic import uapi

SPURIOUS = 1023
ENABLE, IMASK, ISTATUS = 1, 2, 4
U64 = (1 << 64) - 1
TVAL_MAX = (1 << 31) - 1          # EDGE: TVAL is a signed 32-bit value
TVAL_MIN = -(1 << 31)
DEF_CNT = (1 << 63) - 1           # EDGE: the counter value the selftest starts from
CVAL_MAX = U64

GICR_ISENABLER0 = 0x100
GICR_ICENABLER0 = 0x180
GICR_ISPENDR0 = 0x200
GICR_ISACTIVER0 = 0x300

BACKENDS = ("core", "pure")
POLICIES = ("lazy", "eager")


@dataclass(frozen=True)
class Tmr:
    """One EL1 timer as the guest sees it."""

    name: str
    ctl: str
    cval: str
    tval: str
    cnt: str
    intid: int
    onereg_ctl: int
    onereg_cval: int
    onereg_cnt: int


VTIMER = Tmr("vtimer", "CNTV_CTL_EL0", "CNTV_CVAL_EL0", "CNTV_TVAL_EL0", "CNTVCT_EL0", 27,
             uapi.KVM_REG_ARM_TIMER_CTL, uapi.KVM_REG_ARM_TIMER_CVAL, uapi.KVM_REG_ARM_TIMER_CNT)
PTIMER = Tmr("ptimer", "CNTP_CTL_EL0", "CNTP_CVAL_EL0", "CNTP_TVAL_EL0", "CNTPCT_EL0", 30,
             uapi.KVM_REG_ARM_PTIMER_CTL, uapi.KVM_REG_ARM_PTIMER_CVAL, uapi.KVM_REG_ARM_PTIMER_CNT)
TIMERS = (VTIMER, PTIMER)


def s32(value: int) -> int:
    """A 32-bit register value read as a signed 32-bit int (TVAL)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def make_vm(backend: str, policy: str, nr_vcpus: int = 1, enable=(27, 30)) -> vgic.VM:
    """A VM whose distributor has Group 1 enabled with ARE, and whose
    redistributors enable the PPIs in ``enable`` (priority 0)."""
    vm = vgic.VM(nr_vcpus=nr_vcpus, nr_irqs=64, timer_policy=policy, backend=backend)
    vm.mmio_write(vm.dist_base + R.GICD_CTLR, 4, 0x12)
    mask = 0
    for intid in enable:
        mask |= 1 << intid
    if mask:
        for v in vm.vcpus:
            vm.mmio_write(v.sgi_base + GICR_ISENABLER0, 4, mask, v.id)
    return vm


def guest_open(vcpu) -> None:
    """The guest's boot: priority mask open, Group 1 enabled."""
    vcpu.sysreg_write("ICC_PMR_EL1", 0xFF)
    vcpu.sysreg_write("ICC_IGRPEN1_EL1", 1)


def boot(backend: str, policy: str, nr_vcpus: int = 1, **kw):
    """make_vm + the first entry of vCPU 0 + guest_open; returns (vm, vcpu0), running."""
    vm = make_vm(backend, policy, nr_vcpus, **kw)
    v = vm.vcpus[0]
    v.enter()
    guest_open(v)
    return vm, v


def sgi_rd(vm, vcpu, off: int) -> int:
    return vm.mmio_read(vm.vcpus[vcpu].sgi_base + off, 4, vcpu)


def sgi_wr(vm, vcpu, off: int, value: int) -> None:
    vm.mmio_write(vm.vcpus[vcpu].sgi_base + off, 4, value, vcpu)


def gic_pending(vm, vcpu: int, intid: int) -> bool:
    """GICR_ISPENDR0 bit ``intid``."""
    return bool(sgi_rd(vm, vcpu, GICR_ISPENDR0) >> intid & 1)


def gic_active(vm, vcpu: int, intid: int) -> bool:
    """GICR_ISACTIVER0 bit ``intid``."""
    return bool(sgi_rd(vm, vcpu, GICR_ISACTIVER0) >> intid & 1)


def ack(vcpu) -> int:
    return vcpu.sysreg_read("ICC_IAR1_EL1")


def eoi(vcpu, intid: int) -> None:
    vcpu.sysreg_write("ICC_EOIR1_EL1", intid)


def handle(vcpu, t: Tmr) -> int:
    """kvm-unit-tests' timer IRQ handler: IAR, mask the timer (CTL =
    ENABLE|IMASK), EOIR.  Returns the acknowledged INTID."""
    intid = ack(vcpu)
    if intid != SPURIOUS:
        vcpu.sysreg_write(t.ctl, ENABLE | IMASK)
        eoi(vcpu, intid)
    return intid


def reenter(vcpu) -> None:
    """Exit and enter again (the LRs are folded and refilled)."""
    vcpu.exit()
    vcpu.enter()
