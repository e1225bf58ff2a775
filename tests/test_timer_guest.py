"""kvm-unit-tests ``arm/timer.c`` (docs/timer-facts.md §F.1, "KUT") as
guest-side scenarios, for the virtual timer (INTID 27) and the physical
timer (INTID 30), each under both timer policies (lazy: KVM >= v4.15,
eager: v4.14) and both backends (Cython core, pure twin).

KUT runs ``test_timer_cval``, ``test_timer_pending``, ``test_timer_tval``
per timer; their handler acks with ICC_IAR1_EL1, masks the timer
(CTL = ENABLE|IMASK) and EOIs.  Time is the model's counter: ``vm.advance``
stands for the guest spinning/WFI-ing.  Each scenario interleaves the world
switch (exit/enter, put/load, block/unblock), since the property under test
is that the timer's architectural behaviour survives KVM moving its state
(timer-facts §A.1-§A.4, §E).

Architecture rules (Arm ARM, The Generic Timer; timer-facts §B.2):
  * condition met <=> CVAL <= now (unsigned 64-bit); ISTATUS shows it while
    ENABLE is set;
  * the output (the PPI) is asserted <=> ENABLE && ISTATUS && !IMASK, and is
    level-sensitive;
  * TVAL reads the low 32 bits of CVAL - now (signed for the guest), a TVAL
    write sets CVAL = now + SignExtend(TVAL).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timer_helpers import (
    BACKENDS,
    ENABLE,
    GICR_ICENABLER0,
    GICR_ISENABLER0,
    IMASK,
    ISTATUS,
    POLICIES,
    SPURIOUS,
    TIMERS,
    ack,
    boot,
    gic_active,
    gic_pending,
    handle,
    reenter,
    s32,
    sgi_wr,
)

N = 1000            # the deadline distance, in counter ticks (KUT: 10 ms)

params = pytest.mark.parametrize
all_cases = [
    params("backend", BACKENDS),
    params("policy", POLICIES),
    params("t", TIMERS, ids=lambda t: t.name),
]


def _cases(f):
    for m in reversed(all_cases):
        f = m(f)
    return f


def _istatus(v, t) -> bool:
    return bool(v.sysreg_read(t.ctl) & ISTATUS)


# ============================================================= test_timer_cval
@_cases
@params("wait", ["spin", "block"])
def test_timer_cval(backend, policy, t, wait):
    """KUT test_timer_cval (test_cval_10msec): CVAL = now + N, CTL = ENABLE;
    ISTATUS must not be set before N ticks (KUT: "diff >= 0", never early)
    and must be set at N (condition met <=> CVAL <= now, Arm ARM generic
    timer, timer-facts §B.2); the interrupt reaches the guest (KUT:
    "interrupt received"): after exit/enter the guest acks INTID 27 / 30,
    its handler masks the timer (ENABLE|IMASK) and EOIs, after which the
    interrupt is neither pending nor active (level-sensitive output dropped
    by IMASK).

    ``spin``: the guest polls; the vCPU is exited and put/loaded while the
    timer is armed (timer-facts §A.1/§A.4: the state moves between the
    hardware and KVM's copy).  ``block``: the guest WFIs: exit, block (the
    background timer is armed at the earliest expiry, §A.4
    kvm_timer_blocking), advance short of the deadline (no wake-up),
    then to it (kvm_bg_timer_expire wakes the vCPU: unblock() is True).
    """
    vm, v = boot(backend, policy)
    now = v.sysreg_read(t.cnt)
    v.sysreg_write(t.cval, now + N)
    v.sysreg_write(t.ctl, ENABLE)
    assert v.sysreg_read(t.cval) == now + N
    assert not _istatus(v, t)
    if wait == "spin":
        vm.advance(N // 2)
        v.exit()
        v.put()
        vm.advance(N // 4)
        v.load()
        v.enter()
        assert v.sysreg_read(t.cnt) == now + N // 2 + N // 4
        assert not _istatus(v, t)
        vm.advance(N - N // 2 - N // 4 - 1)
        assert v.sysreg_read(t.cnt) == now + N - 1
        assert not _istatus(v, t), "ISTATUS set before CVAL (early)"
        assert not gic_pending(vm, 0, t.intid)
        vm.advance(1)
        assert v.sysreg_read(t.cnt) == now + N
        assert _istatus(v, t), "ISTATUS not set at CVAL"
        # The output is asserted: the GIC shows the PPI pending.
        assert gic_pending(vm, 0, t.intid)
        reenter(v)
    else:
        v.exit()
        v.block()
        vm.advance(N - 1)
        assert v.unblock() is False, "woken before the deadline"
        v.enter()
        assert not _istatus(v, t)
        assert ack(v) == SPURIOUS
        v.exit()
        v.block()
        vm.advance(1)
        assert v.unblock() is True, "the background timer did not wake the vCPU at CVAL"
        v.enter()
        assert v.sysreg_read(t.cnt) == now + N
        assert _istatus(v, t)
    assert handle(v, t) == t.intid
    assert v.sysreg_read(t.ctl) == ENABLE | IMASK | ISTATUS
    assert not gic_pending(vm, 0, t.intid)
    assert not gic_active(vm, 0, t.intid)
    assert ack(v) == SPURIOUS
    reenter(v)
    assert ack(v) == SPURIOUS, "a masked timer's interrupt came back"
    v.exit()
    v.put()
    v.enter()
    assert ack(v) == SPURIOUS
    v.exit()


# ============================================================= test_timer_tval
@_cases
def test_timer_tval(backend, policy, t):
    """KUT test_timer_tval: TVAL = N, ENABLE; TVAL counts down with the
    counter (TVAL read = low 32 bits of CVAL - now, Arm ARM generic timer,
    timer-facts §B.1/§B.2); the interrupt is received; after expiry TVAL
    keeps counting and reads negative as a signed 32-bit value (KUT "TVAL
    <= 0"; EDGE "TVAL=0 then wait => TVAL<0").  The countdown must survive
    put/load and block/unblock (timer-facts §A.2/§A.4)."""
    vm, v = boot(backend, policy)
    now = v.sysreg_read(t.cnt)
    v.sysreg_write(t.tval, N)
    v.sysreg_write(t.ctl, ENABLE)
    assert v.sysreg_read(t.cval) == now + N          # CVAL = now + SignExtend(TVAL)
    assert s32(v.sysreg_read(t.tval)) == N
    vm.advance(100)
    assert s32(v.sysreg_read(t.tval)) == N - 100
    v.exit()
    v.put()
    vm.advance(100)
    v.load()
    v.enter()
    assert s32(v.sysreg_read(t.tval)) == N - 200
    assert not _istatus(v, t)
    # WFI until the interrupt: exit, block, the deadline passes, woken.
    v.exit()
    v.block()
    vm.advance(N - 200 + 7)
    assert v.unblock() is True
    v.enter()
    assert s32(v.sysreg_read(t.tval)) == -7
    assert _istatus(v, t)
    assert handle(v, t) == t.intid
    vm.advance(5)
    assert s32(v.sysreg_read(t.tval)) == -12
    # TVAL = 0: fires at once, then keeps counting down below 0.
    v.sysreg_write(t.tval, 0)
    v.sysreg_write(t.ctl, ENABLE)
    assert s32(v.sysreg_read(t.tval)) == 0
    assert _istatus(v, t)
    vm.advance(3)
    assert s32(v.sysreg_read(t.tval)) == -3
    reenter(v)
    assert handle(v, t) == t.intid
    v.exit()


# ========================================================== test_timer_pending
@_cases
def test_timer_pending(backend, policy, t):
    """KUT test_timer_pending: ISTATUS and the GIC's pending state (read
    through GICR_ISPENDR0) agree, with the PPI disabled in the GIC so that
    nothing is taken:
      * a disabled timer (CTL = 0) raises nothing (output = ENABLE && ISTATUS
        && !IMASK; Arm ARM generic timer);
      * CVAL far in the future, ENABLE: ISTATUS clear, not pending, inactive;
      * CVAL in the past, ENABLE: ISTATUS set and pending in the GIC; this
        survives exit/put/load/enter (the level is recomputed at load,
        kvm_timer_vcpu_load_gic, timer-facts §A.1);
      * CTL = 0 then the PPI enabled again (GICR_ISENABLER0 resamples a
        mapped level interrupt, timer-facts §D "ISENABLER on mapped level"):
        not pending, no interrupt taken;
      * IMASK: ISTATUS set but the GIC shows it neither pending nor active,
        and a blocked vCPU is not woken (kvm_timer_blocking: nothing can
        fire, no background timer, timer-facts §A.4).
    """
    vm, v = boot(backend, policy)
    sgi_wr(vm, 0, GICR_ICENABLER0, 1 << t.intid)
    now = v.sysreg_read(t.cnt)
    # Disabled timer with a CVAL in the past: nothing raised.
    v.sysreg_write(t.cval, 0)
    v.sysreg_write(t.ctl, 0)
    vm.advance(10)
    assert not gic_pending(vm, 0, t.intid)
    assert not gic_active(vm, 0, t.intid)
    # CVAL far in the future.
    now = v.sysreg_read(t.cnt)
    v.sysreg_write(t.cval, now + 10 * 62_500_000)
    v.sysreg_write(t.ctl, ENABLE)
    assert not _istatus(v, t)
    assert not gic_pending(vm, 0, t.intid)
    assert not gic_active(vm, 0, t.intid)
    # CVAL in the past: ISTATUS and GIC pending.
    now = v.sysreg_read(t.cnt)
    v.sysreg_write(t.cval, now - 1)
    assert _istatus(v, t)
    assert gic_pending(vm, 0, t.intid)
    assert not gic_active(vm, 0, t.intid)
    v.exit()
    v.put()
    vm.advance(50)
    v.load()
    v.enter()
    assert _istatus(v, t)
    assert gic_pending(vm, 0, t.intid)
    assert ack(v) == SPURIOUS                    # disabled in the GIC: not taken
    # Disable the timer, enable the PPI: not pending, nothing taken.
    v.sysreg_write(t.ctl, 0)
    sgi_wr(vm, 0, GICR_ISENABLER0, 1 << t.intid)
    assert not gic_pending(vm, 0, t.intid)
    assert not gic_active(vm, 0, t.intid)
    reenter(v)
    assert ack(v) == SPURIOUS
    assert not gic_pending(vm, 0, t.intid)
    # IMASK: ISTATUS set, GIC not pending and inactive.
    v.sysreg_write(t.ctl, ENABLE | IMASK)
    assert v.sysreg_read(t.ctl) == ENABLE | IMASK | ISTATUS
    assert not gic_pending(vm, 0, t.intid)
    assert not gic_active(vm, 0, t.intid)
    v.exit()
    v.block()
    vm.advance(1000)
    assert v.unblock() is False, "a masked timer woke the vCPU"
    v.enter()
    assert v.sysreg_read(t.ctl) == ENABLE | IMASK | ISTATUS
    assert ack(v) == SPURIOUS
    assert not gic_pending(vm, 0, t.intid)
    assert not gic_active(vm, 0, t.intid)
    # Unmask: now it is delivered.
    v.sysreg_write(t.ctl, ENABLE)
    assert gic_pending(vm, 0, t.intid)
    reenter(v)
    assert handle(v, t) == t.intid
    v.exit()


@_cases
def test_timer_both_fire_independently(backend, policy, t):
    """Both timers armed at different deadlines: each INTID arrives at its
    own deadline (KUT runs the two timers through the same checks; KVM keeps
    one context per timer, timer-facts §A.0).  ``t`` fires first."""
    from timer_helpers import PTIMER, VTIMER
    other = PTIMER if t is VTIMER else VTIMER
    vm, v = boot(backend, policy)
    v.sysreg_write(t.tval, 100)
    v.sysreg_write(t.ctl, ENABLE)
    v.sysreg_write(other.tval, 300)
    v.sysreg_write(other.ctl, ENABLE)
    v.exit()
    v.block()
    vm.advance(100)
    assert v.unblock() is True
    v.enter()
    assert handle(v, t) == t.intid
    assert ack(v) == SPURIOUS
    v.exit()
    v.block()
    vm.advance(199)
    assert v.unblock() is False
    v.block()
    vm.advance(1)
    assert v.unblock() is True
    v.enter()
    assert handle(v, other) == other.intid
    assert ack(v) == SPURIOUS
    v.exit()
