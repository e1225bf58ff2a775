"""Differential tests of the world switch: a VM on the Cython core against
the same VM on the pure-Python twin, driven by random scenarios (hypothesis).

Issue #3 asks for "core == twin over random scenarios".  Both VMs are built
with the same geometry (``vgic.VM(..., backend=...)``) and receive the same
operations: guest MMIO to the enable, pending, active, priority, config and
routing registers and GICD_CTLR; interrupt lines; enter and exit of either
vCPU; and the guest's ICC_* accesses (acknowledge, EOI, DIR, PMR, group
enables, EOImode, SGIs) while a vCPU runs.  Every result and every exception
type must match, and after every exit the distributor/redistributor state
(``dump()``), every vCPU's CPU-interface record (hardware ICH_* and KVM's
saved copy, in storage order) and every ap_list must be identical.

The flush, fold, sort and hyp save/restore are the kernels under test (the
``aplist`` and ``lr`` modules of each backend); the guest's CPU interface
(vgic.cpuif) is shared Python code acting on the records.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vgic
from vgic import regmap as R
from vgic.state import diff

pytest.importorskip("vgic._core.aplist")

NR_VCPUS = 2
NR_IRQS = 64

SETTINGS = settings(max_examples=120, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Word registers of the SPI bank 1 (INTIDs 32..63) and of a redistributor's
# SGI frame, with the values a scenario writes to them.
DIST_WORDS = [R.GICD_ISENABLER, R.GICD_ICENABLER, R.GICD_ISPENDR, R.GICD_ICPENDR,
              R.GICD_ISACTIVER, R.GICD_ICACTIVER]
REDIST_WORDS = [R.GICR_ISENABLER0, R.GICR_ICENABLER0, R.GICR_ISPENDR0, R.GICR_ICPENDR0,
                R.GICR_ISACTIVER0, R.GICR_ICACTIVER0]

bitmask = st.one_of(st.integers(0, 2**32 - 1),
                    st.sampled_from([1 << b for b in range(32)]),
                    st.just(0))
prio = st.sampled_from([0x00, 0x10, 0x40, 0x80, 0xA0, 0xF0, 0xF8, 0xFF])

op = st.one_of(
    st.tuples(st.just("dist_word"), st.sampled_from(DIST_WORDS), bitmask, st.integers(0, 1)),
    st.tuples(st.just("redist_word"), st.sampled_from(REDIST_WORDS), bitmask, st.integers(0, 1)),
    st.tuples(st.just("dist_prio"), st.integers(32, NR_IRQS - 1), prio),
    st.tuples(st.just("redist_prio"), st.integers(0, 31), prio, st.integers(0, 1)),
    st.tuples(st.just("icfgr"), st.integers(2, 3), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("irouter"), st.integers(32, NR_IRQS - 1), st.sampled_from([0, 1, 2, 1 << 31])),
    st.tuples(st.just("ctlr"), st.sampled_from([0, 2, 3])),
    st.tuples(st.just("level"), st.integers(16, NR_IRQS - 1), st.booleans(), st.integers(0, 1)),
    st.tuples(st.just("enter"), st.integers(0, 1)),
    st.tuples(st.just("exit"), st.integers(0, 1)),
    st.tuples(st.just("read"), st.integers(0, 1),
              st.sampled_from(["ICC_IAR1_EL1", "ICC_IAR0_EL1", "ICC_HPPIR1_EL1", "ICC_RPR_EL1"])),
    st.tuples(st.just("write"), st.integers(0, 1),
              st.sampled_from(["ICC_EOIR1_EL1", "ICC_EOIR0_EL1", "ICC_DIR_EL1"]),
              st.integers(0, NR_IRQS - 1)),
    st.tuples(st.just("write"), st.integers(0, 1),
              st.sampled_from(["ICC_PMR_EL1", "ICC_IGRPEN1_EL1", "ICC_IGRPEN0_EL1", "ICC_CTLR_EL1"]),
              st.sampled_from([0, 1, 2, 0x80, 0xF0, 0xFF])),
    st.tuples(st.just("write"), st.integers(0, 1), st.sampled_from(["ICC_SGI1R_EL1", "ICC_SGI0R_EL1"]),
              st.builds(lambda sgi, tl, irm: (sgi << 24) | tl | (irm << 40),
                        st.integers(0, 15), st.integers(0, 3), st.integers(0, 1))),
)


def apply(vm: vgic.VM, o: tuple):
    """Run one operation; its result, or the type of what it raised."""
    kind = o[0]
    try:
        if kind == "dist_word":
            _, reg, value, is_read = o
            addr = vm.dist_base + reg + 4
            return vm.mmio_read(addr, 4) if is_read else vm.mmio_write(addr, 4, value)
        if kind == "redist_word":
            _, reg, value, cpu = o
            addr = vm.vcpus[cpu].sgi_base + reg
            return vm.mmio_write(addr, 4, value, cpu)
        if kind == "dist_prio":
            return vm.mmio_write(vm.dist_base + R.GICD_IPRIORITYR + o[1], 1, o[2])
        if kind == "redist_prio":
            return vm.mmio_write(vm.vcpus[o[3]].sgi_base + R.GICR_IPRIORITYR0 + o[1], 1, o[2], o[3])
        if kind == "icfgr":
            return vm.mmio_write(vm.dist_base + R.GICD_ICFGR + 4 * o[1], 4, o[2])
        if kind == "irouter":
            return vm.mmio_write(vm.dist_base + R.GICD_IROUTER + 8 * o[1], 8, o[2])
        if kind == "ctlr":
            return vm.mmio_write(vm.dist_base + R.GICD_CTLR, 4, o[1])
        if kind == "level":
            _, intid, level, cpu = o
            return vm.set_irq_level(intid, level, vcpu=cpu)
        if kind == "enter":
            return vm.vcpus[o[1]].enter()
        if kind == "exit":
            return vm.vcpus[o[1]].exit()
        if kind == "read":
            return vm.vcpus[o[1]].sysreg_read(o[2])
        if kind == "write":
            return vm.vcpus[o[1]].sysreg_write(o[2], o[3])
    except (vgic.VgicError, ValueError) as exc:
        return type(exc)
    raise AssertionError(kind)


def assert_same(a: vgic.VM, b: vgic.VM, where: str) -> None:
    d = diff(a.state(), b.state(), limit=3)
    assert not d, f"{where}: " + "; ".join(d)
    ra, rb = a.cpu_if_records, b.cpu_if_records
    for name in ra.dtype.names:
        assert np.array_equal(ra[name], rb[name]), f"{where}: VCPU_IF.{name}\n{ra[name]}\n{rb[name]}"
    for v in range(a.nr_vcpus):
        assert a.gic.lists.ap_list(v) == b.gic.lists.ap_list(v), f"{where}: ap_list {v}"
    assert a.gic.lists.active_spis == b.gic.lists.active_spis, where


@SETTINGS
@given(nr_lrs=st.sampled_from([1, 2, 4, 16]), order=st.sampled_from(["direct", "reverse"]),
       ops=st.lists(op, min_size=1, max_size=60))
def test_world_switch_core_equals_twin(nr_lrs, order, ops):
    vms = [vgic.VM(nr_vcpus=NR_VCPUS, nr_irqs=NR_IRQS, nr_lrs=nr_lrs, lr_order=order, backend=b)
           for b in ("core", "pure")]
    for vm in vms:
        # Start from a guest that has its distributor on and SPIs enabled
        # at a spread of priorities, so most scenarios deliver something.
        vm.mmio_write(vm.dist_base + R.GICD_CTLR, 4, 2)
        vm.mmio_write(vm.dist_base + R.GICD_ISENABLER + 4, 4, 0xFFFFFFFF)
        for i in range(32):
            vm.mmio_write(vm.dist_base + R.GICD_IPRIORITYR + 32 + i, 1, (i * 8) & 0xF8)
    for i, o in enumerate(ops):
        ra, rb = apply(vms[0], o), apply(vms[1], o)
        assert ra == rb, f"op {i} {o}: core {ra!r} vs twin {rb!r}"
        if o[0] == "exit":
            assert_same(*vms, f"after op {i} {o}")
    for vm in vms:
        for v in vm.vcpus:
            if v.running:
                v.exit()
    assert_same(*vms, "at the end")


@SETTINGS
@given(nr_lrs=st.sampled_from([1, 4]), order=st.sampled_from(["direct", "reverse"]),
       ops=st.lists(op, min_size=1, max_size=30),
       guest=st.lists(st.lists(st.integers(0, 3), min_size=16, max_size=16), min_size=1, max_size=3))
def test_batch_kernels_core_equal_twin_per_vcpu(nr_lrs, order, ops, guest):
    """The core's batch kernels (flush_batch, restore_state_batch,
    save_state_batch, fold_batch over every vCPU) leave the state the twin's
    per-vCPU calls leave, round after round, with the "guest" setting each
    LR's State field to a random value between entry and exit (acknowledge,
    complete, or leave pending) so that the fold sees every case."""
    vms = [vgic.VM(nr_vcpus=NR_VCPUS, nr_irqs=NR_IRQS, nr_lrs=nr_lrs, lr_order=order, backend=b)
           for b in ("core", "pure")]
    for vm in vms:
        vm.mmio_write(vm.dist_base + R.GICD_CTLR, 4, 2)
        vm.mmio_write(vm.dist_base + R.GICD_ISENABLER + 4, 4, 0xFFFFFFFF)
        for o in ops:
            if o[0] not in ("enter", "exit", "read", "write"):
                apply(vm, o)
    core_vm, twin_vm = vms
    for states in guest:
        core_vm.gic.lists.flush_batch()
        core_vm.gic.hyp_if.restore_state_batch()
        for v in range(NR_VCPUS):
            twin_vm.gic.lists.flush(v)
            twin_vm.gic.hyp_if.restore_state(v)
        for vm in vms:
            lrs = vm.cpu_if_records["ich_lr"]
            for n in range(nr_lrs):
                for v in range(NR_VCPUS):
                    lr = int(lrs[v, n])
                    if lr >> 62:                      # a used LR: the guest moves its State
                        lrs[v, n] = (lr & ~(3 << 62)) | (states[n] << 62)
        core_vm.gic.hyp_if.save_state_batch()
        core_vm.gic.lists.fold_batch(np.arange(NR_VCPUS))
        for v in range(NR_VCPUS):
            twin_vm.gic.hyp_if.save_state(v)
            twin_vm.gic.lists.fold(v)
        assert_same(core_vm, twin_vm, "after a round")


@pytest.mark.parametrize("backend", ["core", "pure"])
@pytest.mark.parametrize("order", ["direct", "reverse"])
def test_enter_exit_vcpus_equal_one_by_one(backend, order):
    """vm.enter_vcpus / vm.exit_vcpus (the batch world switch) leave exactly
    the state of enter() / exit() called per vCPU in the same order: same
    LRs, HCR, ap_lists and per-IRQ state, over three rounds with SPIs routed
    across vCPUs, PPIs, more pending interrupts than LRs and a guest
    acknowledging on vCPU 2."""
    vms = [vgic.VM(nr_vcpus=4, nr_irqs=64, nr_lrs=2, lr_order=order, backend=backend) for _ in range(2)]
    for vm in vms:
        vm.mmio_write(vm.dist_base + R.GICD_CTLR, 4, 2)
        vm.mmio_write(vm.dist_base + R.GICD_ISENABLER + 4, 4, 0xFFFFFFFF)
        for intid in range(32, 48):
            vm.mmio_write(vm.dist_base + R.GICD_IROUTER + 8 * intid, 8, intid % 4)
            vm.mmio_write(vm.dist_base + R.GICD_IPRIORITYR + intid, 1, (intid * 24) & 0xF8)
        for v in vm.vcpus:
            vm.mmio_write(v.sgi_base + R.GICR_ISENABLER0, 4, 1 << 23, v.id)
    order_ids = [3, 0, 2, 1]
    for rnd in range(3):
        for vm in vms:
            for intid in range(32 + rnd, 48, 2):
                vm.set_irq_level(intid, True)
            vm.set_irq_level(23, True, vcpu=rnd)
        vms[0].enter_vcpus(np.array(order_ids))
        for i in order_ids:
            vms[1].vcpus[i].enter()
        assert_same(*vms, f"round {rnd} after entry")
        for vm in vms:
            v = vm.vcpus[2]
            v.sysreg_write("ICC_PMR_EL1", 0xFF)
            v.sysreg_write("ICC_IGRPEN1_EL1", 1)
            intid = v.sysreg_read("ICC_IAR1_EL1")
            if intid != 1023:
                v.sysreg_write("ICC_EOIR1_EL1", intid)
        vms[0].exit_vcpus()
        for v in vms[1].vcpus:
            v.exit()
        assert_same(*vms, f"round {rnd} after exit")
    assert any(vms[0].cpu_if_records["vgic_hcr"])       # the flushes did run


def test_enter_exit_vcpus_validate_first():
    vm = vgic.VM(nr_vcpus=2, nr_irqs=64)
    vm.vcpus[1].enter()
    with pytest.raises(vgic.VgicError, match="vCPU 1 is already running"):
        vm.enter_vcpus()
    assert not vm.vcpus[0].running                       # nothing ran
    with pytest.raises(ValueError, match=r"vcpus\[1\] = 7"):
        vm.enter_vcpus([0, 7])
    with pytest.raises(ValueError, match="twice"):
        vm.exit_vcpus([1, 1])
    with pytest.raises(vgic.VgicError, match="vCPU 0 is not running"):
        vm.exit_vcpus([0, 1])
    with pytest.raises(TypeError, match="1-D"):
        vm.enter_vcpus([[0]])
    vm.exit_vcpus([1])
    assert not any(v.running for v in vm.vcpus) and vm.bus.halt_hook is None


def test_enter_vcpus_of_none():
    vm = vgic.VM(nr_vcpus=2, nr_irqs=64)
    vm.enter_vcpus([])
    vm.exit_vcpus(np.array([], dtype=np.int64))
    assert not any(v.running for v in vm.vcpus)


def test_uninitialised_aplists_refused():
    from vgic._core.aplist import ApLists
    lists = ApLists.__new__(ApLists)
    with pytest.raises(TypeError, match="not initialised"):
        lists.flush(0)
    with pytest.raises(TypeError, match="not initialised"):
        lists.fold_batch()


@pytest.mark.parametrize("backend", ["core", "pure"])
def test_put_vcpus_equals_put_one_by_one(backend):
    """vm.put_vcpus saves the active-priority registers of every loaded vCPU
    as put() does (vcpu_put, kvm-facts §4.3), and refuses a running vCPU."""
    vms = [vgic.VM(nr_vcpus=3, nr_irqs=64, pre_bits=7, pri_bits=7, backend=backend) for _ in range(2)]
    for vm in vms:
        vm.enter_vcpus()
        for v in vm.vcpus:
            v.sysreg_write("ICC_AP1R2_EL1", 0x100 << v.id)     # a guest's saved context
        vm.exit_vcpus()
    vms[0].put_vcpus()
    for v in vms[1].vcpus:
        v.put()
    assert_same(*vms, "after put")
    assert vms[0].cpu_if_records["vgic_ap1r"][:, 2].tolist() == [0x100, 0x200, 0x400]
    assert not any(v.loaded for v in vms[0].vcpus)
    vms[0].vcpus[1].enter()
    with pytest.raises(vgic.VgicError, match="vCPU 1 is already running"):
        vms[0].put_vcpus()
