"""The two timer policies (``VM(timer_policy=...)``): "lazy" (KVM since
v4.15: the vtimer moves between KVM's copy and the hardware at vcpu_load /
vcpu_put) and "eager" (v4.14: at every entry and exit).  docs/timer-facts.md
§A (lazy flow), §E (eager flow and the v4.15 change), "Model decisions".

(a) The policies differ in cost only: for random guest/host histories the
    guest-visible trace (every value the guest reads, every INTID it acks,
    every unblock() result) is identical.  The counts are not compared.
(b) The backends are twins: the same history on the Cython core and the
    pure-Python twin under one policy gives identical traces and identical
    ``vm.state()`` (counts included).
(c) The counts of timer system-register accesses, derived from the flows
    (see the comments there).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timer_helpers import (
    BACKENDS,
    ENABLE,
    IMASK,
    POLICIES,
    SPURIOUS,
    guest_open,
    make_vm,
)

NR_VCPUS = 2
SETTINGS = settings(max_examples=100, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

CTL_REGS = ("CNTV_CTL_EL0", "CNTP_CTL_EL0")
CVAL_REGS = {"CNTV_CVAL_EL0": "CNTVCT_EL0", "CNTP_CVAL_EL0": "CNTPCT_EL0"}
TVAL_REGS = ("CNTV_TVAL_EL0", "CNTP_TVAL_EL0")
READ_REGS = ("CNTV_CTL_EL0", "CNTV_CVAL_EL0", "CNTV_TVAL_EL0", "CNTVCT_EL0",
             "CNTP_CTL_EL0", "CNTP_CVAL_EL0", "CNTP_TVAL_EL0", "CNTPCT_EL0", "CNTFRQ_EL0")
INTID_CTL = {27: "CNTV_CTL_EL0", 30: "CNTP_CTL_EL0"}

# ------------------------------------------------------------------ strategies
vcpu_st = st.integers(0, NR_VCPUS - 1)
ticks_st = st.one_of(st.integers(0, 300), st.sampled_from([0, 1, 1 << 20, (1 << 31) + 5]))
rel_st = st.one_of(st.integers(-300, 600), st.sampled_from([-(1 << 31), (1 << 31) - 1, 1 << 40]))

op_st = st.one_of(
    st.tuples(st.just("advance"), ticks_st),
    st.tuples(st.just("ctl"), vcpu_st, st.sampled_from(CTL_REGS), st.sampled_from([1, 1, 0, 2, 3, 5, 7])),
    st.tuples(st.just("arm"), vcpu_st, st.integers(0, 1), st.integers(-50, 300)),
    st.tuples(st.just("arm"), vcpu_st, st.integers(0, 1), st.integers(-50, 300)),
    st.tuples(st.just("cval"), vcpu_st, st.sampled_from(sorted(CVAL_REGS)), rel_st),
    st.tuples(st.just("tval"), vcpu_st, st.sampled_from(TVAL_REGS), rel_st),
    st.tuples(st.just("read"), vcpu_st, st.sampled_from(READ_REGS)),
    st.tuples(st.just("exit"), vcpu_st),
    st.tuples(st.just("reenter"), vcpu_st),
    st.tuples(st.just("put"), vcpu_st),
    st.tuples(st.just("load"), vcpu_st),
    st.tuples(st.just("block"), vcpu_st, ticks_st),
    st.tuples(st.just("ack"), vcpu_st, st.booleans(), st.booleans()),
    st.tuples(st.just("ack"), vcpu_st, st.booleans(), st.just(True)),
)
ops_st = st.lists(op_st, min_size=10, max_size=40)


# ------------------------------------------------------------------ the driver
def new_vm(backend: str, policy: str):
    """Two vCPUs with both timer PPIs enabled.  The PPIs get distinct
    priorities (GICR_IPRIORITYR: vtimer 0x80, ptimer 0x90): among pending
    interrupts of equal priority which one an IAR returns is IMPLEMENTATION
    DEFINED (IHI 0069 §4.8), and the two policies legitimately inject the
    two timers in a different order (lazy as each deadline passes on a
    loaded vCPU, eager both at the next entry, vtimer first)."""
    vm = make_vm(backend, policy, nr_vcpus=NR_VCPUS)
    for v in vm.vcpus:
        vm.mmio_write(v.sgi_base + 0x400 + 27, 1, 0x80, v.id)
        vm.mmio_write(v.sgi_base + 0x400 + 30, 1, 0x90, v.id)
        v.enter()
        guest_open(v)
        v.exit()
    return vm


def _running(v, trace) -> None:
    """Get ``v`` into the guest: a blocked vCPU is unblocked (the result is
    guest-visible: it woke or not), a stopped one entered."""
    if v.blocked:
        trace.append(("unblock", v.id, v.unblock()))
    if not v.running:
        v.enter()


def apply(vm, op, trace: list, kicks: bool = False) -> None:
    """One operation; everything the guest sees goes to ``trace``.  The VM
    kicks a running vCPU a timer raised its interrupt on by itself (exit and
    re-entry, as KVM's kvm_vcpu_kick); with ``kicks`` the harness adds one
    more of its own (:func:`kick`), which must change nothing the guest
    sees."""
    kind = op[0]
    if kind == "advance":
        before = _raised(vm)
        vm.advance(op[1])                        # the count fired is host-side: not traced
        if kicks:
            kick(vm, before)
        return
    v = vm.vcpus[op[1]]
    if kind in ("ctl", "arm", "cval", "tval", "read", "ack"):
        if kind == "ack" and op[3] and v.running:
            v.exit()                             # take the exit a pending interrupt causes
        _running(v, trace)
        before = _raised(vm)
        _guest_op(v, op, trace)
        if kicks:
            kick(vm, before)
        return
    _host_op(vm, v, op, trace)


def _guest_op(v, op, trace: list) -> None:
    kind = op[0]
    if kind == "arm":                        # TVAL then CTL = ENABLE, as a guest arms a timer
        v.sysreg_write(TVAL_REGS[op[2]], op[3] & 0xFFFFFFFF)
        v.sysreg_write(CTL_REGS[op[2]], ENABLE)
    elif kind == "ctl":
        v.sysreg_write(op[2], op[3])
    elif kind == "cval":
        now = v.sysreg_read(CVAL_REGS[op[2]])
        trace.append(("now", v.id, now))
        v.sysreg_write(op[2], (now + op[3]) & ((1 << 64) - 1))
    elif kind == "tval":
        v.sysreg_write(op[2], op[3] & 0xFFFFFFFF)
    elif kind == "read":
        trace.append(("read", v.id, op[2], v.sysreg_read(op[2])))
    else:
        intid = v.sysreg_read("ICC_IAR1_EL1")
        trace.append(("ack", v.id, intid))
        if intid != SPURIOUS:
            if op[2]:                        # the handler masks the timer first
                v.sysreg_write(INTID_CTL[intid], ENABLE | IMASK)
            v.sysreg_write("ICC_EOIR1_EL1", intid)


def _host_op(vm, v, op, trace: list) -> None:
    kind = op[0]
    if kind == "exit":
        if v.running:
            v.exit()
    elif kind == "reenter":
        if v.running:
            v.exit()
        _running(v, trace)
    elif kind == "put":
        if v.running:
            v.exit()
        if not v.blocked:
            v.put()
    elif kind == "load":
        if not v.blocked:
            v.load()
    elif kind == "block":
        if v.running:
            v.exit()
        if v.blocked:
            trace.append(("unblock", v.id, v.unblock()))
        v.load()                                  # KVM blocks from inside KVM_RUN: loaded
        v.block()
        vm.advance(op[2])
        trace.append(("unblock", v.id, v.unblock()))
    else:  # pragma: no cover
        raise AssertionError(op)


def final_readout(vm, trace: list) -> None:
    """Everything the guest can read at the end, on every vCPU."""
    for v in vm.vcpus:
        _running(v, trace)
        trace.append(("final", v.id, tuple(v.sysreg_read(r) for r in READ_REGS)))
        for _ in range(4):
            intid = v.sysreg_read("ICC_IAR1_EL1")
            trace.append(("final-ack", v.id, intid))
            if intid == SPURIOUS:
                break
            v.sysreg_write(INTID_CTL[intid], ENABLE | IMASK)
            v.sysreg_write("ICC_EOIR1_EL1", intid)
        v.exit()


def _raised(vm):
    return [(v.timer.host_irqs, v.timer.levels) for v in vm.vcpus]


def kick(vm, before) -> None:
    """kvm_vcpu_kick: an interrupt injected into a running vCPU (the host
    took the vtimer's PPI, or the ptimer's soft timer raised its line)
    makes KVM exit the guest and enter it again, flushing the new pending
    interrupt into an LR.  The VM does it itself; this second kick is the
    harness's, to check that an extra exit and entry is invisible."""
    for v, (irqs, levels) in zip(vm.vcpus, before):
        now_irqs, now_levels = v.timer.host_irqs, v.timer.levels
        rose = now_irqs != irqs or any(b and not a for a, b in zip(levels, now_levels))
        if v.running and rose:
            v.exit()
            v.enter()


def run(vm, ops, kicks: bool = False) -> list:
    trace: list = []
    for op in ops:
        apply(vm, op, trace, kicks)
    final_readout(vm, trace)
    return trace


# ====================================================================== (a)
@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(ops=ops_st)
def test_policies_give_the_same_guest_trace(backend, ops):
    """Lazy and eager save/restore move the same architectural state at
    different times (timer-facts §E.2: the v4.15 series is an optimisation;
    the guest must not notice): identical guest-visible traces."""
    lazy = run(new_vm(backend, "lazy"), ops)
    eager = run(new_vm(backend, "eager"), ops)
    assert lazy == eager
    assert run(new_vm(backend, "lazy"), ops, kicks=True) == lazy     # an extra kick is invisible


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("vcpu", [0, 1])
def test_policies_agree_without_kick(backend, vcpu):
    """A history hypothesis found (before the VM kicked by itself): the
    guest enables the vtimer with CVAL = 0 (met at once: the host takes the
    PPI while the guest runs), disables it before any exit, then exits; at
    the next entry nothing may be acknowledged under either policy.  In KVM
    the host PPI exits the guest (kvm_vcpu_kick), the interrupt goes into an
    HW LR and the fold's resample (get_input_level = should_fire,
    timer-facts §D) drops it once the guest disabled the timer; eager also
    recomputes the level at entry (§E.1)."""
    ops = [("ctl", vcpu, "CNTV_CTL_EL0", 1), ("exit", 1 - vcpu), ("advance", 0),
           ("ctl", vcpu, "CNTV_CTL_EL0", 0), ("exit", 1 - vcpu), ("exit", vcpu)]
    out = {}
    for policy in POLICIES:
        vm = new_vm(backend, policy)
        trace = run(vm, ops, kicks=False)
        out[policy] = trace
        assert ("final-ack", vcpu, 27) not in trace, policy
    assert out["lazy"] == out["eager"]


# ====================================================================== (b)
@pytest.mark.parametrize("policy", POLICIES)
@SETTINGS
@given(ops=ops_st)
def test_backends_give_the_same_state(policy, ops):
    """The Cython kernel _core/timer.pyx mirrors vgic/_pure/timer.py: the
    same history gives the same trace and the same vm.state() (the whole
    state, counts included), after every operation."""
    core, pure = new_vm("core", policy), new_vm("pure", policy)
    tc: list = []
    tp: list = []
    for op in ops:
        apply(core, op, tc)
        apply(pure, op, tp)
        assert tc == tp
        assert core.state() == pure.state()
    final_readout(core, tc)
    final_readout(pure, tp)
    assert tc == tp
    assert core.state() == pure.state()


# ====================================================================== (c)
def _counts(v):
    return v.timer.sysreg_reads, v.timer.sysreg_writes


def _delta(v, before):
    r, w = _counts(v)
    return r - before[0], w - before[1]


def _ready(backend, policy, firing=False):
    """A VM whose vCPU 0 has run once (the timer is enabled: kvm_timer_enable
    at the first run), is exited and still loaded, with the vtimer enabled
    and its deadline far away (or already met and unmasked, ``firing``)."""
    vm = make_vm(backend, policy)
    v = vm.vcpus[0]
    v.enter()
    guest_open(v)
    v.sysreg_write("CNTV_TVAL_EL0", 0 if firing else 1 << 30)
    v.sysreg_write("CNTV_CTL_EL0", ENABLE)
    v.sysreg_write("CNTP_TVAL_EL0", 1 << 30)
    v.sysreg_write("CNTP_CTL_EL0", ENABLE)
    v.exit()
    return vm, v


@pytest.mark.parametrize("backend", BACKENDS)
def test_counts_enter_exit_cycle(backend):
    """One enter/exit cycle on a loaded, enabled vCPU (nVHE host; timer-facts
    §A.8, §E.1, "Model decisions" table), from vgic/_pure/timer.py:

    lazy  enter = _set_traps(guest): CNTHCTL R + W        (__timer_enable_traps)
          exit  = _set_traps(host):  CNTHCTL R + W        (__timer_disable_traps)
          => 2 R + 2 W  (the table's "Lazy nVHE" enter 2 + exit 2).
    eager enter = should_fire(vtimer) from memory (not loaded: 0 R) +
                  _arm_ptimer (emulated: 0) + _set_traps (1 R + 1 W) +
                  _restore (CNTVOFF W, CVAL W, CTL W) + host_check (reads the
                  hardware CTL uncounted; a counted should_fire read only if
                  the timer asserts) => 1 R + 4 W  (table: "Eager nVHE" 5)
          exit  = _save (CTL R, CVAL R, CTL:=0 W, CNTVOFF:=0 W) + _set_traps
                  (1 R + 1 W) + should_fire from memory (0) => 3 R + 3 W (6)
          => 4 R + 7 W  (§E.1 nVHE round trip 11).
    The host-GIC active writes are counted apart (gic_active_writes)."""
    for policy, expect in (("lazy", (2, 2)), ("eager", (4, 7))):
        vm, v = _ready(backend, policy)
        for _ in range(3):                                 # steady state
            before = _counts(v)
            v.enter()
            v.exit()
            assert _delta(v, before) == expect, policy


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("policy", POLICIES)
def test_counts_cycle_with_vtimer_asserted(backend, policy):
    """An enter/exit cycle with the vtimer asserted (unmasked, met) and not
    acknowledged by the guest.  The timer's own hooks cost the same as in
    test_counts_enter_exit_cycle:
      * eager entry computes the level from memory first and writes the
        host PPI's active state from it (kvm_timer_flush_hwstate:
        phys_active = level || map_is_active, §E.1), so when the restored
        timer asserts, its PPI is already active and the host takes nothing
        (no extra should_fire read; host_irqs unchanged);
    plus exactly one read from the vGIC: at exit the fold finds the HW LR
    still Pending and resamples the line (timer-facts §D fold: LR.P =>
    line_level = get_input_level() = kvm_timer_should_fire(), and a loaded
    vtimer's should_fire reads CNTV_CTL: 1 R, §A.5).  The fold runs before
    the timer's exit hook (the timer enters early, exits late), so under
    eager the vtimer is still loaded then too.
    => lazy 3 R + 2 W, eager 5 R + 7 W; eager also writes the host-GIC
    active state once per entry (counted apart)."""
    vm, v = _ready(backend, policy, firing=True)
    expect = {"lazy": (3, 2), "eager": (5, 7)}[policy]
    for _ in range(3):
        before = _counts(v)
        gic = v.timer.gic_active_writes
        irqs = v.timer.host_irqs
        v.enter()
        v.exit()
        assert _delta(v, before) == expect
        assert v.timer.gic_active_writes == gic + (policy == "eager")
        assert v.timer.host_irqs == irqs
        assert v.timer.levels[0] is True


@pytest.mark.parametrize("backend", BACKENDS)
def test_counts_lazy_load_put(backend):
    """Lazy load / put (timer-facts §A.1/§A.2/§A.4, §E.2, "Model decisions"
    "Lazy nVHE" column), from vgic/_pure/timer.py:

    put  = _save: CTL R, CVAL R, CTL := 0 W, CNTVOFF := 0 W => 2 R + 2 W
           (the ptimer is emulated: its soft timer is cancelled, no sysreg).
    load = _load_timers: should_fire(vtimer) from memory (not loaded: 0 R),
           host-GIC active write (counted apart), _restore: CNTVOFF W,
           CVAL W, CTL W, _arm_ptimer (0), host_check: a counted should_fire
           read only when the restored vtimer asserts and the host PPI is
           inactive => 3 W (+1 R in that case).
    Eager: neither load nor put touches a timer register (4.14 did it all at
    entry/exit) => 0."""
    vm, v = _ready(backend, "lazy")
    for _ in range(2):
        before = _counts(v)
        v.put()
        assert _delta(v, before) == (2, 2)
        before = _counts(v)
        v.load()
        assert _delta(v, before) == (0, 3)
    # A vtimer that asserts at load, its host PPI inactive: + 1 R.
    vm, v = _ready(backend, "lazy")
    v.put()
    gic_before = v.timer.gic_active_writes
    vm.advance(1 << 30)
    assert v.timer.host_irqs == 0
    before = _counts(v)
    v.load()
    # load_gic sets the physical active state (the level is high), so
    # host_check sees the PPI active and takes nothing: 3 W, 0 R.
    assert _delta(v, before) == (0, 3)
    assert v.timer.gic_active_writes == gic_before + 1
    for policy in ("eager",):
        vm, v = _ready(backend, policy)
        before = _counts(v)
        v.put()
        v.load()
        assert _delta(v, before) == (0, 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_counts_lazy_block_unblock(backend):
    """Lazy block = put (+ the background timer, no sysreg) and unblock =
    load (timer-facts "Model decisions": block "= put", unblock "= load")."""
    vm, v = _ready(backend, "lazy")
    before = _counts(v)
    v.block()
    assert _delta(v, before) == (2, 2)
    vm.advance(10)
    before = _counts(v)
    assert v.unblock() is False
    assert _delta(v, before) == (0, 3)
