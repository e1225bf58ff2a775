"""The KVM selftest ``arch_timer_edge_cases.c`` (docs/timer-facts.md §F.2,
"EDGE") properties, for the virtual and the physical timer, under both
policies and both backends, and the timer's userspace ABI (timer-facts §C).

EDGE moves the guest's counter from userspace through the one-reg
KVM_REG_ARM_TIMER_CNT / KVM_REG_ARM_PTIMER_CNT (``kvm_set_cntxct``), starting
from DEF_CNT = 2**63 - 1; its handler checks ``(cnt >= cval) == (ISTATUS &&
ENABLE)`` and masks the timer.  Rules (Arm ARM generic timer, timer-facts
§B.2): condition met <=> CVAL <= now as an unsigned 64-bit compare; TVAL
reads low32(CVAL - now), signed for the guest; a TVAL write sets CVAL =
now + SignExtend64(TVAL); CVAL is a full 64-bit compare, not emulated
through TVAL; the output is a level (nothing latched while it was briefly
true).

KVM, like the model, only lets userspace touch a vCPU between runs: each
one-reg ioctl does vcpu_load/vcpu_put around it, so counter moves below are
made on a put vCPU and the next entry loads it (kvm_timer_vcpu_load
recomputes the level, timer-facts §A.1).
"""
from __future__ import annotations

import errno
import sys
from pathlib import Path

import pytest

import vgic
from vgic import uapi

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timer_helpers import (
    BACKENDS,
    CVAL_MAX,
    DEF_CNT,
    ENABLE,
    IMASK,
    ISTATUS,
    POLICIES,
    PTIMER,
    SPURIOUS,
    TIMERS,
    TVAL_MAX,
    TVAL_MIN,
    U64,
    VTIMER,
    ack,
    boot,
    gic_pending,
    guest_open,
    handle,
    make_vm,
    reenter,
    s32,
)

params = pytest.mark.parametrize
DELTA = 1000


def _cases(f):
    f = params("t", TIMERS, ids=lambda t: t.name)(f)
    f = params("policy", POLICIES)(f)
    return params("backend", BACKENDS)(f)


def _setup(backend, policy, t, cnt=DEF_CNT):
    """EDGE's test_init_timer_irq + kvm_set_cntxct: the guest's view of the
    counter set to ``cnt`` through the one-reg before the first run, then
    the guest boots (GIC open, timer PPIs enabled).  Returns (vm, vcpu),
    running."""
    vm = make_vm(backend, policy)
    v = vm.vcpus[0]
    v.set_one_reg(t.onereg_cnt, cnt)
    assert v.get_one_reg(t.onereg_cnt) == cnt
    v.enter()
    guest_open(v)
    assert v.sysreg_read(t.cnt) == cnt
    return vm, v


def _set_cnt(v, t, cnt):
    """kvm_set_cntxct between runs: exit, put, one-reg write, enter."""
    v.exit()
    v.put()
    v.set_one_reg(t.onereg_cnt, cnt)
    v.enter()


def _no_irq(vm, v, t):
    """Nothing pending in the GIC and nothing to acknowledge after a round trip."""
    assert not gic_pending(vm, 0, t.intid)
    reenter(v)
    assert ack(v) == SPURIOUS


def _fires(v, t):
    """The handler of EDGE: the INTID arrives; at that point cnt >= cval and
    ISTATUS && ENABLE agree."""
    reenter(v)
    cnt, cval, ctl = v.sysreg_read(t.cnt), v.sysreg_read(t.cval), v.sysreg_read(t.ctl)
    assert (cnt >= cval) == bool(ctl & ISTATUS and ctl & ENABLE)
    assert handle(v, t) == t.intid
    assert ack(v) == SPURIOUS


# ============================================================ CVAL/TVAL views
@_cases
def test_timers_sanity_checks(backend, policy, t):
    """EDGE timers_sanity_checks: the CVAL/TVAL views of one comparator, and
    that they survive save/restore (EDGE repeats them with migration; here
    put/load and block/unblock)."""
    vm, v = _setup(backend, policy, t)
    v.sysreg_write(t.ctl, IMASK)                 # EDGE runs them masked
    # CVAL in the past => TVAL < 0.
    v.sysreg_write(t.cval, DEF_CNT - 1)
    assert s32(v.sysreg_read(t.tval)) < 0
    # TVAL = -1 => CVAL < CNT.
    v.sysreg_write(t.tval, (-1) & 0xFFFFFFFF)
    assert v.sysreg_read(t.cval) < v.sysreg_read(t.cnt)
    v.exit()
    v.put()
    v.load()
    v.enter()
    assert v.sysreg_read(t.cval) < v.sysreg_read(t.cnt)
    # CVAL = now + TVAL_MAX + d => TVAL <= 0 (wrapped).
    now = v.sysreg_read(t.cnt)
    v.sysreg_write(t.cval, now + TVAL_MAX + DELTA)
    assert s32(v.sysreg_read(t.tval)) <= 0
    v.exit()
    v.block()
    vm.advance(10)
    v.unblock()
    v.enter()
    assert s32(v.sysreg_read(t.tval)) <= 0
    # CVAL = now + 2 * TVAL_MAX + d => TVAL <= d.
    now = v.sysreg_read(t.cnt)
    v.sysreg_write(t.cval, now + 2 * TVAL_MAX + DELTA)
    assert s32(v.sysreg_read(t.tval)) <= DELTA
    # TVAL = 0 then wait => TVAL < 0 (keeps counting down).
    v.sysreg_write(t.tval, 0)
    vm.advance(1)
    assert s32(v.sysreg_read(t.tval)) < 0
    v.exit()


@_cases
def test_negative_tval_rollover(backend, policy, t):
    """EDGE timers_sanity_checks / timers_in_the_past: counter = 1 ms, TVAL =
    -10 ms => CVAL = now + SignExtend64(TVAL) wraps to >= 2**64 - 10 ms and
    (unsigned compare) must not fire."""
    ms = 62_500
    vm, v = _setup(backend, policy, t, cnt=ms)
    v.sysreg_write(t.tval, (-10 * ms) & 0xFFFFFFFF)
    assert v.sysreg_read(t.cval) >= (1 << 64) - 10 * ms
    assert v.sysreg_read(t.cval) == (ms - 10 * ms) & U64
    v.sysreg_write(t.ctl, ENABLE)
    assert not v.sysreg_read(t.ctl) & ISTATUS
    vm.advance(ms)
    _no_irq(vm, v, t)
    v.exit()
    v.block()
    vm.advance(ms)
    assert v.unblock() is False
    v.enter()
    assert ack(v) == SPURIOUS
    v.exit()


# ============================================================ above TVAL max
@_cases
def test_timers_above_tval_max(backend, policy, t):
    """EDGE timers_above_tval_max: CVAL = now + TVAL_MAX + d must not fire
    within the distance (CVAL is a 64-bit compare, not emulated through
    TVAL), fires at it; then CVAL = TVAL_MAX + d/2 with the counter moved to
    TVAL_MAX (one-reg) fires after d/2."""
    vm, v = _setup(backend, policy, t)
    now = v.sysreg_read(t.cnt)
    v.sysreg_write(t.cval, now + TVAL_MAX + DELTA)
    v.sysreg_write(t.ctl, ENABLE)
    vm.advance(TVAL_MAX)
    _no_irq(vm, v, t)
    v.exit()
    v.block()
    vm.advance(DELTA - 1)
    assert v.unblock() is False
    v.enter()
    assert ack(v) == SPURIOUS
    vm.advance(1)
    _fires(v, t)
    # CVAL = TVAL_MAX + d/2, counter = TVAL_MAX.
    v.sysreg_write(t.cval, TVAL_MAX + DELTA // 2)
    v.sysreg_write(t.ctl, ENABLE)
    _set_cnt(v, t, TVAL_MAX)
    assert ack(v) == SPURIOUS
    vm.advance(DELTA // 2 - 1)
    _no_irq(vm, v, t)
    vm.advance(1)
    _fires(v, t)
    v.exit()


# ============================================================ in the past
@_cases
@params("how", ["cval_past", "tval_neg", "cval_0", "tval_0", "tval_min"])
def test_timers_in_the_past(backend, policy, t, how):
    """EDGE timers_in_the_past: CVAL in the past, TVAL negative, CVAL = 0,
    TVAL = 0, TVAL = INT32_MIN all fire immediately (condition already met;
    advance(0) is "no time passes")."""
    vm, v = _setup(backend, policy, t)
    now = v.sysreg_read(t.cnt)
    reg, value = {"cval_past": (t.cval, now - DELTA), "tval_neg": (t.tval, (-DELTA) & 0xFFFFFFFF),
                  "cval_0": (t.cval, 0), "tval_0": (t.tval, 0),
                  "tval_min": (t.tval, TVAL_MIN & 0xFFFFFFFF)}[how]
    v.sysreg_write(reg, value)
    v.sysreg_write(t.ctl, ENABLE)
    vm.advance(0)
    assert v.sysreg_read(t.ctl) & ISTATUS
    assert gic_pending(vm, 0, t.intid)
    _fires(v, t)
    v.exit()


@_cases
def test_timer_in_the_past_fires_at_entry(backend, policy, t):
    """A timer programmed in the past from userspace (one-reg CTL/CVAL on a
    vCPU between runs) is pending at the next entry: kvm_timer_vcpu_load
    recomputes the level from KVM's copy (timer-facts §A.1, §C.2)."""
    vm, v = _setup(backend, policy, t)
    v.exit()
    v.put()
    v.set_one_reg(t.onereg_cval, DEF_CNT - 5)
    v.set_one_reg(t.onereg_ctl, ENABLE)
    assert v.get_one_reg(t.onereg_ctl) == ENABLE | ISTATUS     # read_timer_ctl synthesises ISTATUS
    v.enter()
    assert handle(v, t) == t.intid
    v.exit()


# ============================================================ reprogramming
@_cases
@params("order", ["longer_then_shorter", "shorter_then_longer"])
def test_reprogram_timers(backend, policy, t, order):
    """EDGE reprogram_timers: TVAL 2d then d, and d then 2d; only the second
    deadline counts (one comparator per timer)."""
    vm, v = _setup(backend, policy, t)
    first, second = (2 * DELTA, DELTA) if order == "longer_then_shorter" else (DELTA, 2 * DELTA)
    v.sysreg_write(t.tval, first)
    v.sysreg_write(t.ctl, ENABLE)
    v.sysreg_write(t.tval, second)
    v.exit()
    v.block()
    vm.advance(second - 1)
    assert v.unblock() is False
    v.enter()
    # (shorter_then_longer: second - 1 is already past the abandoned first deadline.)
    assert ack(v) == SPURIOUS
    assert not gic_pending(vm, 0, t.intid)
    v.exit()
    v.block()
    vm.advance(1)
    assert v.unblock() is True
    v.enter()
    assert handle(v, t) == t.intid
    v.exit()


@_cases
def test_timers_fired_multiple_times(backend, policy, t):
    """EDGE timers_fired_multiple_times: TVAL = 0 and re-enable after each
    IRQ, 10 times: the interrupt arrives every time."""
    vm, v = _setup(backend, policy, t)
    for k in range(10):
        v.sysreg_write(t.tval, 0)
        v.sysreg_write(t.ctl, ENABLE)
        if k % 2:
            v.exit()
            v.put()
            v.enter()
        _fires(v, t)
    v.exit()


# ============================================================ IMASK
@_cases
def test_timer_control_mask_then_unmask(backend, policy, t):
    """EDGE timer_control_mask_then_unmask / timer_control_masks: TVAL = -1
    with ENABLE|IMASK raises nothing (output needs !IMASK), not even across
    block/unblock; clearing IMASK delivers it."""
    vm, v = _setup(backend, policy, t)
    v.sysreg_write(t.tval, (-1) & 0xFFFFFFFF)
    v.sysreg_write(t.ctl, ENABLE | IMASK)
    assert v.sysreg_read(t.ctl) & ISTATUS
    vm.advance(50)
    _no_irq(vm, v, t)
    v.exit()
    v.block()
    vm.advance(50)
    assert v.unblock() is False
    v.enter()
    assert ack(v) == SPURIOUS
    v.sysreg_write(t.ctl, ENABLE)
    _fires(v, t)
    v.exit()


# ============================================================ moving the counter
@_cases
@params("how", ["cval", "tval_neg1", "tval_max", "cval_max_cnt"])
def test_move_counters_ahead_of_timers(backend, policy, t, how):
    """EDGE move_counters_ahead_of_timers: a timer set in the future fires
    once the counter is moved past it from userspace (one-reg TIMER_CNT /
    PTIMER_CNT, a VM offset change, timer-facts §C.2)."""
    vm, v = _setup(backend, policy, t)
    now = v.sysreg_read(t.cnt)
    if how == "cval":
        v.sysreg_write(t.cval, DEF_CNT + DELTA)
        target = DEF_CNT + DELTA
    elif how == "tval_neg1":
        v.sysreg_write(t.tval, (-1) & 0xFFFFFFFF)   # fires at once; moved further ahead
        target = now + DELTA
    elif how == "tval_max":
        v.sysreg_write(t.tval, TVAL_MAX)
        target = now + TVAL_MAX + 1
    else:                                          # CNT = CVAL_MAX, CVAL = 1, CNT = 2
        v.sysreg_write(t.cval, 1)
        target = 2
    v.sysreg_write(t.ctl, ENABLE | IMASK)          # EDGE programs with IRQs masked
    _set_cnt(v, t, target if how != "cval_max_cnt" else CVAL_MAX)
    if how == "cval_max_cnt":
        _set_cnt(v, t, 2)
    assert v.sysreg_read(t.cnt) == target
    v.sysreg_write(t.ctl, ENABLE)
    _fires(v, t)
    v.exit()


@_cases
@params("how", ["cval", "tval"])
def test_move_counters_behind_timers(backend, policy, t, how):
    """EDGE move_counters_behind_timers: CVAL = DEF_CNT - 1 or TVAL = -1 at
    CNT = DEF_CNT (condition met while the guest's IRQs are masked), then
    CNT := 0 => no IRQ: the output is a level that is recomputed, nothing
    was latched (timer-facts §F.2)."""
    vm, v = _setup(backend, policy, t)
    v.sysreg_write(t.ctl, 0)
    if how == "cval":
        v.sysreg_write(t.cval, DEF_CNT - 1)
    else:
        v.sysreg_write(t.tval, (-1) & 0xFFFFFFFF)
    v.sysreg_write(t.ctl, ENABLE)
    assert v.sysreg_read(t.ctl) & ISTATUS
    _set_cnt(v, t, 0)
    assert not v.sysreg_read(t.ctl) & ISTATUS
    _no_irq(vm, v, t)
    vm.advance(100)
    _no_irq(vm, v, t)
    v.exit()


# =================================================================== the ABI
@pytest.fixture(params=[(b, p) for b in BACKENDS for p in POLICIES], ids=lambda x: f"{x[0]}-{x[1]}")
def bp(request):
    return request.param


def _errno(exc_info):
    return exc_info.value.errno


def test_onereg_swapped_encodings(bp):
    """timer-facts §C.1/§C.2: KVM_REG_ARM_TIMER_CVAL (built from CNTVCT_EL0's
    encoding) reads the vtimer's CVAL and KVM_REG_ARM_TIMER_CNT (built from
    CNTV_CVAL_EL0's) reads the counter minus the VM's virtual offset."""
    backend, policy = bp
    assert uapi.KVM_REG_ARM_TIMER_CVAL & 0xFFFF == 0xDF02          # CNTVCT_EL0 (3,3,14,0,2)
    assert uapi.KVM_REG_ARM_TIMER_CNT & 0xFFFF == 0xDF1A           # CNTV_CVAL_EL0 (3,3,14,3,2)
    vm, v = boot(backend, policy)
    vm.advance(12345)
    v.sysreg_write("CNTV_CVAL_EL0", 0xABCDEF)
    v.sysreg_write("CNTP_CVAL_EL0", 0x123456)
    guest_vcnt = v.sysreg_read("CNTVCT_EL0")
    v.exit()
    v.put()
    assert v.get_one_reg(uapi.KVM_REG_ARM_TIMER_CVAL) == 0xABCDEF
    assert v.get_one_reg(uapi.KVM_REG_ARM_PTIMER_CVAL) == 0x123456
    voff = vm.timer.state()["voffset"]
    assert v.get_one_reg(uapi.KVM_REG_ARM_TIMER_CNT) == (vm.counter - voff) & U64 == guest_vcnt
    # Swapped the other way round: writing TIMER_CVAL sets the CVAL.
    v.set_one_reg(uapi.KVM_REG_ARM_TIMER_CVAL, 77)
    v.enter()
    assert v.sysreg_read("CNTV_CVAL_EL0") == 77
    v.exit()


def test_timer_cnt_moves_vm_offset_for_all_vcpus(bp):
    """timer-facts §C.2: writing TIMER_CNT on one vCPU moves the VM's virtual
    offset (one VM field since 6.4; all vCPUs' CNTVOFF before), so every
    vCPU's virtual counter moves."""
    backend, policy = bp
    vm = make_vm(backend, policy, nr_vcpus=2)
    vm.advance(1000)
    vm.vcpus[0].set_one_reg(uapi.KVM_REG_ARM_TIMER_CNT, 5_000_000)
    assert vm.vcpus[1].get_one_reg(uapi.KVM_REG_ARM_TIMER_CNT) == 5_000_000
    vm.advance(10)
    for v in vm.vcpus:
        v.enter()
        assert v.sysreg_read("CNTVCT_EL0") == 5_000_010
        v.exit()
        v.put()
    assert vm.vcpus[1].get_one_reg(uapi.KVM_REG_ARM_TIMER_CNT) == 5_000_010
    # And PTIMER_CNT moves the physical offset the same way.
    vm.vcpus[1].set_one_reg(uapi.KVM_REG_ARM_PTIMER_CNT, 42)
    assert vm.vcpus[0].get_one_reg(uapi.KVM_REG_ARM_PTIMER_CNT) == 42
    vm.vcpus[0].enter()
    assert vm.vcpus[0].sysreg_read("CNTPCT_EL0") == 42
    vm.vcpus[0].exit()


def test_set_counter_offset(bp):
    """timer-facts §C.4: KVM_ARM_SET_COUNTER_OFFSET sets both offsets and
    makes later TIMER_CNT/PTIMER_CNT writes silently ignored; reserved != 0
    is EINVAL; with a vCPU in KVM_RUN (here: running) it is EBUSY; between
    runs it succeeds."""
    backend, policy = bp
    vm = make_vm(backend, policy, nr_vcpus=2)
    v = vm.vcpus[0]
    with pytest.raises(vgic.KvmError) as e:
        vm.set_counter_offset(0, reserved=1)
    assert _errno(e) == errno.EINVAL
    v.enter()
    with pytest.raises(vgic.KvmError) as e:
        vm.set_counter_offset(100)
    assert _errno(e) == errno.EBUSY
    v.exit()
    vm.advance(5000)
    vm.set_counter_offset(1000)                   # between runs: fine
    assert v.get_one_reg(uapi.KVM_REG_ARM_TIMER_CNT) == vm.counter - 1000
    assert v.get_one_reg(uapi.KVM_REG_ARM_PTIMER_CNT) == vm.counter - 1000
    v.put()
    v.set_one_reg(uapi.KVM_REG_ARM_TIMER_CNT, 7)  # ignored
    v.set_one_reg(uapi.KVM_REG_ARM_PTIMER_CNT, 7)
    assert v.get_one_reg(uapi.KVM_REG_ARM_TIMER_CNT) == vm.counter - 1000
    assert vm.vcpus[1].get_one_reg(uapi.KVM_REG_ARM_PTIMER_CNT) == vm.counter - 1000
    v.enter()
    assert v.sysreg_read("CNTVCT_EL0") == vm.counter - 1000
    assert v.sysreg_read("CNTPCT_EL0") == vm.counter - 1000
    v.exit()


def test_vcpu_timer_ctrl_attrs(bp):
    """timer-facts §C.5, group KVM_ARM_VCPU_TIMER_CTRL: defaults V 27, P 30
    (HV 28, HP 26 accepted without NV); set 16..31 works (per VM), outside is
    EINVAL, an unknown attr ENXIO (a bad attr with a bad IRQ: EINVAL, the
    range check comes first); once a vCPU ran, EBUSY.  The new PPIs are the
    ones the guest takes."""
    backend, policy = bp
    vm = make_vm(backend, policy, nr_vcpus=2, enable=(20, 21))
    v0, v1 = vm.vcpus
    G = uapi.KVM_ARM_VCPU_TIMER_CTRL
    V, P = uapi.KVM_ARM_VCPU_TIMER_IRQ_VTIMER, uapi.KVM_ARM_VCPU_TIMER_IRQ_PTIMER
    assert v0.get_device_attr(G, V) == 27
    assert v0.get_device_attr(G, P) == 30
    assert v0.get_device_attr(G, uapi.KVM_ARM_VCPU_TIMER_IRQ_HVTIMER) == 28
    assert v0.get_device_attr(G, uapi.KVM_ARM_VCPU_TIMER_IRQ_HPTIMER) == 26
    for a in (V, P, uapi.KVM_ARM_VCPU_TIMER_IRQ_HVTIMER, uapi.KVM_ARM_VCPU_TIMER_IRQ_HPTIMER):
        assert v0.has_device_attr(G, a)
    assert not v0.has_device_attr(G, 4)
    with pytest.raises(vgic.KvmError) as e:
        v0.get_device_attr(G, 4)
    assert _errno(e) == errno.ENXIO
    for bad in (15, 32, 0, 1024):
        with pytest.raises(vgic.KvmError) as e:
            v0.set_device_attr(G, V, bad)
        assert _errno(e) == errno.EINVAL
    with pytest.raises(vgic.KvmError) as e:
        v0.set_device_attr(G, 4, 20)
    assert _errno(e) == errno.ENXIO
    with pytest.raises(vgic.KvmError) as e:
        v0.set_device_attr(G, 4, 99)
    assert _errno(e) == errno.EINVAL
    for irq in (16, 31):
        v0.set_device_attr(G, V, irq)
        assert v0.get_device_attr(G, V) == irq
    v0.set_device_attr(G, V, 20)
    v1.set_device_attr(G, P, 21)                  # per VM: visible on vCPU 0
    assert v0.get_device_attr(G, P) == 21
    assert v1.get_device_attr(G, V) == 20
    v0.enter()
    guest_open(v0)
    v0.sysreg_write("CNTV_TVAL_EL0", 0)
    v0.sysreg_write("CNTV_CTL_EL0", ENABLE)
    v0.sysreg_write("CNTP_TVAL_EL0", 0)
    v0.sysreg_write("CNTP_CTL_EL0", ENABLE)
    reenter(v0)
    got = set()
    for _ in range(2):
        intid = ack(v0)
        got.add(intid)
        v0.sysreg_write("CNTV_CTL_EL0" if intid == 20 else "CNTP_CTL_EL0", ENABLE | IMASK)
        v0.sysreg_write("ICC_EOIR1_EL1", intid)
    assert got == {20, 21}
    v0.exit()
    for v in (v0, v1):                            # frozen VM-wide once a vCPU ran
        with pytest.raises(vgic.KvmError) as e:
            v.set_device_attr(G, V, 22)
        assert _errno(e) == errno.EBUSY
    assert v1.get_device_attr(G, V) == 20


def test_duplicate_ppis_refused_at_first_run(bp):
    """timer-facts §C.5: duplicate PPIs are accepted at set time ("take it at
    face value"); kvm_timer_enable at the first KVM_RUN finds them
    (timer_irqs_are_valid) and KVM_RUN fails with EINVAL, the vCPU not run.
    Fixing the PPIs then lets it run."""
    backend, policy = bp
    vm = make_vm(backend, policy)
    v = vm.vcpus[0]
    G = uapi.KVM_ARM_VCPU_TIMER_CTRL
    v.set_device_attr(G, uapi.KVM_ARM_VCPU_TIMER_IRQ_VTIMER, 25)
    v.set_device_attr(G, uapi.KVM_ARM_VCPU_TIMER_IRQ_PTIMER, 25)
    with pytest.raises(vgic.KvmError) as e:
        v.enter()
    assert _errno(e) == errno.EINVAL
    assert not v.has_run
    assert not v.running
    v.set_device_attr(G, uapi.KVM_ARM_VCPU_TIMER_IRQ_PTIMER, 26)   # not frozen: still settable
    v.enter()
    assert v.has_run
    v.exit()


def test_unknown_onereg(bp):
    """An ID that is no register of the vCPU: KVM_{GET,SET}_ONE_REG fail with
    ENOENT (kvm_arm_get_reg / set_reg)."""
    backend, policy = bp
    vm = make_vm(backend, policy)
    v = vm.vcpus[0]
    bogus = uapi.KVM_REG_ARM_TIMER_CTL + 0x100
    for call in (lambda: v.get_one_reg(bogus), lambda: v.set_one_reg(bogus, 0)):
        with pytest.raises(vgic.KvmError) as e:
            call()
        assert _errno(e) == errno.ENOENT
    ids = set(v.get_reg_list())
    for r in (uapi.KVM_REG_ARM_TIMER_CTL, uapi.KVM_REG_ARM_TIMER_CVAL, uapi.KVM_REG_ARM_TIMER_CNT,
              uapi.KVM_REG_ARM_PTIMER_CTL, uapi.KVM_REG_ARM_PTIMER_CVAL, uapi.KVM_REG_ARM_PTIMER_CNT):
        assert r in ids


@pytest.mark.parametrize("t", [VTIMER, PTIMER], ids=lambda t: t.name)
def test_onereg_ctl_istatus(bp, t):
    """timer-facts §C.2: a one-reg CTL write stores it without ISTATUS
    (kvm_arm_timer_write: ctl = v & ~ISTATUS); the GET (<= 6.18
    read_timer_ctl) synthesises ISTATUS when now >= CVAL."""
    backend, policy = bp
    vm = make_vm(backend, policy)
    v = vm.vcpus[0]
    v.set_one_reg(t.onereg_cnt, 1000)
    v.set_one_reg(t.onereg_cval, 2000)
    v.set_one_reg(t.onereg_ctl, ENABLE | IMASK | ISTATUS)
    assert v.get_one_reg(t.onereg_ctl) == ENABLE | IMASK
    v.set_one_reg(t.onereg_cnt, 2000)
    assert v.get_one_reg(t.onereg_ctl) == ENABLE | IMASK | ISTATUS


@params("backend", BACKENDS)
@params("policy", ["lazy", "eager"])
@params("t", TIMERS, ids=lambda t: t.name)
def test_move_counter_behind_while_loaded(backend, policy, t):
    """As test_move_counters_behind_timers, but the counter is moved while
    the exited vCPU is still loaded (the model allows a one-reg access
    then; KVM recomputes the level at the next vcpu_load either way): no
    interrupt may reach the guest, and lazy and eager must agree (the timer
    policies differ in cost only, vgic/timer.py)."""
    vm, v = _setup(backend, policy, t)
    v.sysreg_write(t.tval, (-1) & 0xFFFFFFFF)
    v.sysreg_write(t.ctl, ENABLE)
    v.exit()
    v.set_one_reg(t.onereg_cnt, 0)
    v.enter()
    assert not v.sysreg_read(t.ctl) & ISTATUS
    assert ack(v) == SPURIOUS
    v.exit()


def test_next_timer_event_is_the_earliest_armed_host_timer():
    """vm.next_timer_event(): the earliest of the armed host timers - the
    emulated ptimer's soft timer and a blocked vCPU's background timer (KVM
    arms both as hrtimers, timer-facts §B) - or None with nothing armed."""
    import vgic
    vm = vgic.VM(nr_vcpus=2)
    assert vm.next_timer_event() is None
    a, b = vm.vcpus
    a.enter()
    a.sysreg_write("CNTV_CVAL_EL0", 5000)
    a.sysreg_write("CNTV_CTL_EL0", 1)
    a.exit()
    a.block()                                   # background timer at the vtimer's expiry
    assert vm.next_timer_event() == 5000
    b.enter()
    b.sysreg_write("CNTP_CVAL_EL0", 3000)       # the emulated ptimer arms its soft timer
    b.sysreg_write("CNTP_CTL_EL0", 1)
    b.exit()
    assert vm.next_timer_event() == 3000        # (while b is loaded)
    b.put()                                     # kvm_timer_vcpu_put cancels the emulated timer
    assert vm.next_timer_event() == 5000
    vm.advance(5000)
    assert vm.next_timer_event() is None        # the background timer fired
