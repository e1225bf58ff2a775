"""Named state (issue #7): vm.state() names everything a VM holds under
architectural or KVM names, both backends produce the same state, and
vm.load_state() puts all of it back: a VM loaded with another's state then
behaves exactly as the other does.  Replay rollback covers the whole state
mechanically.

Sources for the values checked: kvm-facts §1.3 (GICD_CTLR, GICD_IIDR),
§1.4 (IROUTER), §1.2 (priority bits), §3.1 (struct vgic_irq fields), §4.3
(the saved struct vgic_v3_cpu_if), IHI 0069 §12.4 (ICH_* registers).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vgic
from vgic import ich
from vgic import regmap as R
from vgic.state import diff
from vgic.trace import mixed_trace

BACKENDS = ["core", "pure"]
SETTINGS = settings(max_examples=40, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "core":
        pytest.importorskip("vgic._core.mmio")
    return request.param


def busy_vm(backend: str, nr_lrs: int = 2) -> vgic.VM:
    """A 2-vCPU VM with history: SPIs on, routed, pending and active, a
    guest that acknowledged one, a vCPU left running."""
    vm = vgic.VM(nr_vcpus=2, nr_irqs=64, nr_lrs=nr_lrs, backend=backend)
    d = vm.dist_base
    vm.mmio_write(d + R.GICD_CTLR, 4, R.GICD_CTLR_ENABLE_G1)
    vm.mmio_write(d + R.GICD_ISENABLER + 4, 4, 0xFFFF)
    vm.mmio_write(d + R.GICD_IPRIORITYR + 40, 4, 0x80808047)    # 40 stored as 0x40, 41-43 at 0x80
    vm.mmio_write(d + R.GICD_IROUTER + 8 * 41, 8, vm.vcpus[1].mpidr & 0xFFFFFF)
    for v in vm.vcpus:
        v.enter()
        v.sysreg_write("ICC_PMR_EL1", 0xF0)
        v.sysreg_write("ICC_IGRPEN1_EL1", 1)
        v.exit()
    for intid in (40, 41, 42, 43):
        vm.set_irq_level(intid, True)
    v0 = vm.vcpus[0]
    v0.enter()
    assert v0.sysreg_read("ICC_IAR1_EL1") == 40
    v0.exit()
    vm.vcpus[1].enter()
    return vm


def test_state_names_registers_and_fields(backend):
    vm = busy_vm(backend)
    st = vm.state()
    assert sorted(st) == ["arch_timer", "fpsimd", "vgic_v3", "vm"]
    g = st["vgic_v3"]
    assert g["GICD_CTLR"] == R.GICD_CTLR_ARE | R.GICD_CTLR_DS | R.GICD_CTLR_ENABLE_G1
    assert g["GICD_IIDR"] == 0x4B00343B                          # revision 3
    spi = g["spi"]
    assert set(spi) == {"enabled", "pending_latch", "line_level", "active", "group", "config",
                        "priority", "seq", "mpidr", "target_vcpu"}
    k = 40 - 32
    assert spi["priority"][k] == 0x40 and spi["active"][k] is True and spi["config"][k] == "edge"
    assert spi["mpidr"][41 - 32] == vm.vcpus[1].mpidr & 0xFFFFFF and spi["target_vcpu"][41 - 32] == 1
    v0, v1 = g["vcpus"]
    assert v0["private"]["enabled"][:16] == [True] * 16            # SGIs enabled at reset
    assert v0["private"]["config"][16:] == ["level"] * 16          # PPIs level
    assert 40 in v0["ap_list"] and v0["in_lr"] == []               # exited: nothing in an LR
    assert v1["in_lr"] and set(v1["in_lr"]) <= set(v1["ap_list"])  # running: held in LRs
    assert {"ICH_LR0_EL2", "ICH_LR1_EL2", "ICH_HCR_EL2", "ICH_VMCR_EL2", "ICH_AP0R0_EL2"} <= set(v0)
    assert "ICH_LR2_EL2" not in v0                                  # 2 LRs implemented
    assert v1["ICH_HCR_EL2"] & ich.HCR_EN                           # running: the hardware is live
    assert (v1["ICH_VMCR_EL2"] >> ich.VMCR_PMR_SHIFT) & 0xFF == 0xF0
    assert set(v0["vgic_v3"]) == {"vgic_lr", "vgic_hcr", "vgic_vmcr", "vgic_ap0r", "vgic_ap1r", "used_lrs"}
    assert st["vm"]["vcpus"][1] == {"MPIDR_EL1": vm.vcpus[1].mpidr, "loaded": True, "running": True,
                                   "has_run": True, "blocked": False}
    assert g["active_spis"] >= 1


def test_both_backends_produce_the_same_state():
    pytest.importorskip("vgic._core.mmio")
    a, b = busy_vm("core"), busy_vm("pure")
    assert not diff(a.state(), b.state())


@pytest.mark.parametrize("src, dst", [("core", "pure"), ("pure", "core"), ("core", "core")])
def test_load_state_across_backends_round_trips(src, dst):
    pytest.importorskip("vgic._core.mmio")
    a = busy_vm(src)
    b = vgic.VM(nr_vcpus=2, nr_irqs=64, nr_lrs=2, backend=dst)
    b.load_state(a.state())
    assert b.state() == a.state()
    assert b.vcpus[1].running and b.bus.halt_hook is not None      # the running vCPU came along
    assert b.irq(40) == a.irq(40)


# Operations both VMs run after one took the other's state: if anything a VM
# holds were missing from the state, the two would part.
OPS = st.lists(st.one_of(
    st.tuples(st.just("mmio"), st.integers(0, 9999)),
    st.tuples(st.just("line"), st.sampled_from([20, 33, 40, 41, 42, 43, 50]), st.booleans(), st.integers(0, 1)),
    st.tuples(st.just("switch"), st.integers(0, 1)),
    st.tuples(st.just("ack"), st.integers(0, 1)),
    st.tuples(st.just("eoimode"), st.integers(0, 1), st.booleans()),
), min_size=1, max_size=25)
TRACE = mixed_trace(10_000, nr_vcpus=2, nr_irqs=64, seed=3)


def run(vm: vgic.VM, op: tuple) -> object:
    kind = op[0]
    try:
        if kind == "mmio":
            return int(vm.mmio_replay(TRACE[op[1]:op[1] + 1])[0])
        if kind == "line":
            return vm.set_irq_level(op[1], op[2], vcpu=op[3])
        v = vm.vcpus[op[1]]
        if kind == "switch":
            return v.exit() if v.running else v.enter()
        if not v.running:
            return "idle"
        if kind == "ack":
            intid = v.sysreg_read("ICC_IAR1_EL1")
            if intid != 1023:
                v.sysreg_write("ICC_EOIR1_EL1", intid)
            return intid
        v.sysreg_write("ICC_CTLR_EL1", ich.CTLR_EOIMODE if op[2] else 0)
        return None
    except vgic.VgicError as exc:
        return type(exc)


@SETTINGS
@given(ops=OPS, dst=st.sampled_from(BACKENDS))
def test_a_loaded_vm_behaves_as_its_source(ops, dst):
    pytest.importorskip("vgic._core.mmio")
    src = busy_vm("core")
    copy = vgic.VM(nr_vcpus=2, nr_irqs=64, nr_lrs=2, backend=dst)
    copy.load_state(src.state())
    for i, op in enumerate(ops):
        assert run(src, op) == run(copy, op), f"op {i} {op}"
        d = diff(src.state(), copy.state(), limit=2)
        assert not d, f"after op {i} {op}: {d}"


def test_rejected_long_replay_rolls_back_everything(backend):
    """A long trace (checked while it runs) that meets a bad record puts back
    every attached part's whole state buffer: all of vm.state() is as before,
    scalars (GICD_CTLR, GICD_IIDR, GICR_PROPBASER, the queue stamp) included."""
    vm = busy_vm(backend)
    vm.vcpus[1].exit()
    vm.set_device_attr(vgic.uapi.KVM_DEV_ARM_VGIC_GRP_DIST_REGS, R.GICD_IIDR, 0x4B00243B)
    vm.mmio_write(vm.vcpus[0].rd_base + R.GICR_PROPBASER, 8, 0x1234_5000)
    before = vm.state()
    trace = mixed_trace(40_000, nr_vcpus=2, nr_irqs=64, seed=9)
    # Every scalar the trace could change, changed early in the trace.
    trace[0] = (vm.dist_base + R.GICD_CTLR, 0, 0, 4, 1)
    trace[1] = (vm.vcpus[1].rd_base + R.GICR_PROPBASER, 0x7777_0000, 0, 8, 1)
    trace[2] = (vm.dist_base + R.GICD_ISPENDR + 4, 0xFFFFFFFF, 0, 4, 1)
    trace[-1]["size"] = 3
    with pytest.raises(ValueError, match=r"trace\[39999\]"):
        vm.mmio_replay(trace)
    assert not diff(before, vm.state())
    # The same trace without the bad record does change those scalars.
    trace[-1]["size"] = 4
    trace[-1]["value"] = 0
    vm.mmio_replay(trace)
    after = vm.state()["vgic_v3"]
    assert after["GICR_PROPBASER"] != before["vgic_v3"]["GICR_PROPBASER"]
    assert after["seq_counter"] > before["vgic_v3"]["seq_counter"]


def test_kernel_gic_state_round_trips(backend):
    _, impl = vgic._backend.modules(backend)
    mp = np.array([vgic.default_mpidr(i) for i in range(3)], dtype=np.uint64)
    g = impl.gic.Gic(3, 96, mp)
    g.set_irq_level(0, 40, True)
    g.set_irq_bit(2, 20, 3, True)          # PPI 20 of vCPU 2 active
    st0 = g.state()
    fresh = impl.gic.Gic(3, 96, mp)
    fresh.load_state(st0)
    assert fresh.state() == st0
    assert fresh.irq_state(2, 20)[3] == 1 and fresh.irq_state(0, 40)[1] == 1
