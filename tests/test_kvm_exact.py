"""KVM-exact behaviour found by an independent KVM conformance run (issue #7),
on both backends: what ICH_VMCR_EL2 holds, the EOIcount replay whatever
EOImode says at exit, and ICH_HCR_EL2.TDIR from KVM v6.19's in-flight SPI
count (with the prune's move of an SPI to its new target).

Sources: IHI 0069 §12.4.10 (ICH_VMCR_EL2) and §12.3 (ICV_BPR0/1_EL1,
ICV_PMR_EL1); kvm-facts §4.3 (VMCR loaded at vcpu_load, saved at every exit),
§4.5 (fold, EOIcount replay), §4.6 (TDIR), §3.3 (prune), §6 (CPU_SYSREGS).
"""
from __future__ import annotations

import pytest

import vgic
from vgic import ich, sysregs, uapi
from vgic import regmap as R

BACKENDS = ["core", "pure"]
SYSREGS = uapi.KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "core":
        pytest.importorskip("vgic._core.mmio")
    return request.param


def guest_ready(vm: vgic.VM) -> None:
    """Distributor on; every vCPU's guest opens its PMR and Group 1."""
    vm.mmio_write(vm.dist_base + R.GICD_CTLR, 4, R.GICD_CTLR_ENABLE_G1)
    for v in vm.vcpus:
        v.enter()
        v.sysreg_write("ICC_PMR_EL1", 0xFF)
        v.sysreg_write("ICC_IGRPEN1_EL1", 1)
        v.exit()


def cpu_sysreg(vm: vgic.VM, vcpu: int, name: str, value: int | None = None) -> int | None:
    attr = uapi.mpidr_to_attr(vm.vcpus[vcpu].mpidr) | sysregs.BY_NAME[name].attr
    if value is None:
        return vm.get_device_attr(SYSREGS, attr)
    vm.set_device_attr(SYSREGS, attr, value)
    return None


def enable_spi(vm: vgic.VM, intid: int, *, level: bool = False, priority: int = 0xA0, vcpu: int = 0) -> None:
    vm.mmio_write(vm.dist_base + R.GICD_ISENABLER + 4 * (intid // 32), 4, 1 << (intid % 32))
    vm.mmio_write(vm.dist_base + R.GICD_IPRIORITYR + intid, 1, priority)
    vm.mmio_write(vm.dist_base + R.GICD_IROUTER + 8 * intid, 8, vm.vcpus[vcpu].mpidr & 0xFFFFFF)
    if level:
        cfg = vm.dist_base + R.GICD_ICFGR + 4 * (intid // 16)
        vm.mmio_write(cfg, 4, vm.mmio_read(cfg, 4) & ~(2 << 2 * (intid % 16)))


# ------------------------------------------------------------- ICH_VMCR_EL2
def test_reset_vmcr_reads_back_the_minimum_binary_points_after_a_run(backend):
    """KVM resets the saved VMCR to 0 and writes it into ICH_VMCR_EL2 at
    vcpu_load; the hardware stores VBPR0/VBPR1 at their minimum (2 and 3 with
    5 preemption bits, IHI 0069 §12.4.10 / §12.3 ICV_BPR0_EL1), and the exit
    saves that back (kvm-facts §4.3).  So after one run the guest's
    ICC_BPR0_EL1 and the CPU_SYSREGS view agree: 2 and 3, not 0."""
    vm = vgic.VM(nr_vcpus=1, nr_irqs=64, backend=backend)
    assert cpu_sysreg(vm, 0, "ICC_BPR0_EL1") == 0          # nothing ran: KVM's raw copy
    v = vm.vcpus[0]
    v.enter()
    assert v.sysreg_read("ICC_BPR0_EL1") == 2
    assert v.sysreg_read("ICC_BPR1_EL1") == 3
    v.exit()
    v.put()
    assert cpu_sysreg(vm, 0, "ICC_BPR0_EL1") == 2
    assert cpu_sysreg(vm, 0, "ICC_BPR1_EL1") == 3
    vmcr = v.cpu_if.vmcr
    assert (vmcr & ich.VMCR_BPR0_MASK) >> ich.VMCR_BPR0_SHIFT == 2


def test_cpu_sysregs_write_below_minimum_is_stored_by_the_next_load(backend):
    """CPU_SYSREGS writes KVM's saved copy as given (vgic_v3_set_vmcr packs
    the fields, kvm-facts §6); the hardware clamps it when vcpu_load writes
    ICH_VMCR_EL2, and the exit saves the clamped value.  VPMR keeps only its
    implemented bits: 0xFF -> 0xF8 with 5 priority bits (ICV_PMR_EL1)."""
    vm = vgic.VM(nr_vcpus=1, nr_irqs=64, backend=backend)
    cpu_sysreg(vm, 0, "ICC_BPR0_EL1", 0)
    cpu_sysreg(vm, 0, "ICC_PMR_EL1", 0xFF)
    assert cpu_sysreg(vm, 0, "ICC_PMR_EL1") == 0xFF        # raw until it runs
    v = vm.vcpus[0]
    v.load()
    assert (v.hyp.read("ICH_VMCR_EL2") >> ich.VMCR_PMR_SHIFT) & 0xFF == 0xF8
    assert (v.hyp.read("ICH_VMCR_EL2") & ich.VMCR_BPR0_MASK) >> ich.VMCR_BPR0_SHIFT == 2
    v.enter()
    v.exit()
    v.put()
    assert cpu_sysreg(vm, 0, "ICC_PMR_EL1") == 0xF8
    assert cpu_sysreg(vm, 0, "ICC_BPR0_EL1") == 2


@pytest.mark.parametrize("pri_bits, pre_bits, pmr, bpr0, bpr1", [(7, 7, 0xFE, 0, 1), (6, 5, 0xFC, 2, 3)])
def test_vmcr_minimum_follows_the_geometry(backend, pri_bits, pre_bits, pmr, bpr0, bpr1):
    # Minimum VBPR0 = 7 - PREbits, VBPR1 one more; VPMR keeps PRIbits bits.
    vm = vgic.VM(nr_vcpus=1, nr_irqs=64, pri_bits=pri_bits, pre_bits=pre_bits, backend=backend)
    cpu_sysreg(vm, 0, "ICC_PMR_EL1", 0xFF)
    v = vm.vcpus[0]
    v.enter()
    assert (v.sysreg_read("ICC_PMR_EL1"), v.sysreg_read("ICC_BPR0_EL1"), v.sysreg_read("ICC_BPR1_EL1")) == \
        (pmr, bpr0, bpr1)
    vmcr = v.hyp.read("ICH_VMCR_EL2")
    assert (vmcr >> ich.VMCR_PMR_SHIFT) & 0xFF == pmr
    assert (vmcr & ich.VMCR_BPR1_MASK) >> ich.VMCR_BPR1_SHIFT == bpr1


# ----------------------------------------------------------- EOIcount replay
def test_eoicount_replay_ignores_eoimode_at_exit(backend):
    """KVM's vgic_v3_fold_lr_state replays ICH_HCR_EL2.EOIcount whatever
    VMCR.EOIM says at exit, because the guest can change EOImode behind
    KVM's back (kvm-facts §4.5).  Here SPI 40 is active outside the only
    LR; the guest EOIs it in EOImode 0 (a priority drop with no LR: EOIcount
    1), then switches to EOImode 1 before the exit.  The replay must still
    deactivate 40; skipping it left 40 active for good."""
    vm = vgic.VM(nr_vcpus=1, nr_irqs=64, nr_lrs=1, backend=backend)
    guest_ready(vm)
    enable_spi(vm, 40, priority=0x80)
    enable_spi(vm, 41, priority=0x40)
    v = vm.vcpus[0]
    vm.set_irq_level(40, True)
    v.enter()
    assert v.sysreg_read("ICC_IAR1_EL1") == 40
    v.exit()
    vm.set_irq_level(41, True)
    v.enter()               # 41 (pending) takes the LR, 40 (active) is outside it
    assert v.cpu_if.hcr & ich.HCR_LRENPIE
    v.sysreg_write("ICC_EOIR1_EL1", 40)
    assert ich.eoicount(v.hyp.read("ICH_HCR_EL2")) == 1
    v.sysreg_write("ICC_CTLR_EL1", ich.CTLR_EOIMODE)
    v.exit()
    assert not vm.irq(40).active
    assert ich.eoicount(v.cpu_if.hcr) == 0


# -------------------------------------------------- TDIR and active_spis
def test_edge_spi_stays_in_flight_and_keeps_tdir(backend):
    """KVM 6.19 counts an SPI into flight each time it is queued and out only
    when a fold sees a level SPI deactivated (its LR asks for an EOI
    maintenance interrupt): an edge SPI taken and completed is never counted
    out, so every later entry of every vCPU sets TDIR (kvm-facts §4.6)."""
    vm = vgic.VM(nr_vcpus=2, nr_irqs=64, backend=backend)
    guest_ready(vm)
    enable_spi(vm, 40)
    v0, v1 = vm.vcpus
    vm.set_irq_level(40, True)
    v0.enter()
    assert vm.gic.lists.active_spis == 1
    v0.sysreg_write("ICC_EOIR1_EL1", v0.sysreg_read("ICC_IAR1_EL1"))
    v0.exit()
    assert not vm.irq(40).active and vm.gic.lists.ap_list(0) == []
    assert vm.gic.lists.active_spis == 1
    v1.enter()
    assert v1.cpu_if.hcr & ich.HCR_TDIR
    v1.exit()


def test_level_spi_deactivated_in_a_later_run_leaves_flight(backend):
    """A level SPI acknowledged in one run and completed in the next folds
    from an LR that was Active and now asks for an EOI maintenance interrupt:
    KVM counts it out, and with nothing else in flight TDIR clears."""
    vm = vgic.VM(nr_vcpus=2, nr_irqs=64, backend=backend)
    guest_ready(vm)
    enable_spi(vm, 41, level=True)
    v0, v1 = vm.vcpus
    vm.set_irq_level(41, True)
    v0.enter()
    assert v0.sysreg_read("ICC_IAR1_EL1") == 41
    v0.exit()
    vm.set_irq_level(41, False)
    v0.enter()
    assert v0.cpu_if.hcr & ich.HCR_TDIR
    v0.sysreg_write("ICC_EOIR1_EL1", 41)
    v0.exit()
    assert vm.gic.lists.active_spis == 0
    v1.enter()
    assert not v1.cpu_if.hcr & ich.HCR_TDIR
    v1.exit()


def test_level_spi_taken_and_completed_in_one_run_stays_in_flight(backend):
    # The fold sees an LR that was Pending when flushed: the interrupt was
    # never active to KVM, so it is not counted out (KVM's `deactivated`).
    vm = vgic.VM(nr_vcpus=1, nr_irqs=64, backend=backend)
    guest_ready(vm)
    enable_spi(vm, 41, level=True)
    v = vm.vcpus[0]
    vm.set_irq_level(41, True)
    v.enter()
    v.sysreg_write("ICC_EOIR1_EL1", v.sysreg_read("ICC_IAR1_EL1"))
    vm.set_irq_level(41, False)
    v.exit()
    assert vm.gic.lists.active_spis == 1


def test_prune_moves_an_spi_to_its_new_target_without_counting_it_again(backend):
    """vgic_prune_ap_list moves an SPI whose IROUTER changed to the tail of
    its new target's ap_list (kvm-facts §3.3); that is not a queueing, so
    active_spis does not grow, and the new target takes it at its entry."""
    vm = vgic.VM(nr_vcpus=2, nr_irqs=64, backend=backend)
    guest_ready(vm)
    enable_spi(vm, 40, vcpu=0)
    v0, v1 = vm.vcpus
    lists = vm.gic.lists
    vm.set_irq_level(40, True)
    v0.enter()
    v0.exit()                                   # not acknowledged: still on vCPU 0's list
    assert lists.ap_list(0) == [40] and lists.active_spis == 1
    vm.mmio_write(vm.dist_base + R.GICD_IROUTER + 8 * 40, 8, v1.mpidr & 0xFFFFFF)
    v0.enter()
    v0.exit()                                   # the prune moves it
    assert lists.ap_list(0) == [] and lists.ap_list(1) == [40]
    assert lists.queued_on(0, 40) == 1 and lists.active_spis == 1
    v1.enter()
    assert v1.sysreg_read("ICC_IAR1_EL1") == 40
    assert lists.active_spis == 1
    v1.exit()


def test_trapped_dir_counts_a_level_spi_out(backend):
    """vgic_v3_deactivate for an SPI in no LR folds a synthesised LR with
    Active cleared (kvm-facts §4.5): a level SPI's latch is consumed and it
    leaves flight."""
    vm = vgic.VM(nr_vcpus=1, nr_irqs=64, nr_lrs=1, backend=backend)
    guest_ready(vm)
    enable_spi(vm, 41, level=True, priority=0x80)
    enable_spi(vm, 40, priority=0x40)
    v = vm.vcpus[0]
    v.enter()
    v.sysreg_write("ICC_CTLR_EL1", ich.CTLR_EOIMODE)
    v.exit()
    vm.set_irq_level(41, True)
    v.enter()
    assert v.sysreg_read("ICC_IAR1_EL1") == 41
    v.exit()
    vm.set_irq_level(41, False)
    vm.set_irq_level(40, True)
    v.enter()                                   # 40 takes the LR; 41 is active outside it
    assert vm.gic.lists.active_spis == 2 and v.hyp.read("ICH_HCR_EL2") & ich.HCR_TDIR
    v.sysreg_write("ICC_EOIR1_EL1", 41)         # EOImode 1: a priority drop only
    v.sysreg_write("ICC_DIR_EL1", 41)           # trapped: KVM deactivates it
    assert not vm.irq(41).active
    assert vm.gic.lists.active_spis == 1
    v.exit()
