"""``vcpu.pending_interrupt()``: the exception the virtual CPU interface
signals to a running vCPU, what an emulator takes into the guest.  The rule
is the acknowledge rule without the acknowledge (IHI 0069 §4.8 and the
ICV_IAR<n>_EL1 pseudocode): the highest priority pending LR of an enabled
group, below the priority mask, above the running priority; Group 1 is a
vIRQ and Group 0 a vFIQ for a guest with one security state."""
import pytest

import vgic
from vgic import VgicError
from vgic import regmap as R


def vm_with_spis(backend, prios, group=1):
    vm = vgic.VM(nr_vcpus=1, nr_irqs=64, backend=backend)
    d = vm.dist_base
    vm.mmio_write(d + R.GICD_CTLR, 4, 0x13)                  # ARE, EnableGrp0, EnableGrp1
    vm.mmio_write(d + R.GICD_IGROUPR + 4, 4, 0xFFFFFFFF if group else 0)
    for intid, prio in prios.items():
        vm.mmio_write(d + R.GICD_IPRIORITYR + intid, 1, prio)
        vm.mmio_write(d + R.GICD_ISENABLER + 4, 4, 1 << (intid - 32))
    return vm


@pytest.mark.parametrize("backend", ["core", "pure"])
def test_masked_until_group_enabled_and_pmr_above(backend):
    vm = vm_with_spis(backend, {40: 0x80})
    v = vm.vcpus[0]
    vm.set_irq_level(40, True)
    v.enter()
    assert v.pending_interrupt() is None                      # ICV_IGRPEN1_EL1 = 0
    v.sysreg_write("ICC_IGRPEN1_EL1", 1)
    assert v.pending_interrupt() is None                      # PMR 0 masks everything
    v.sysreg_write("ICC_PMR_EL1", 0x80)
    assert v.pending_interrupt() is None                      # priority must be below PMR, not equal
    v.sysreg_write("ICC_PMR_EL1", 0x88)
    assert v.pending_interrupt() == "irq"
    assert v.sysreg_read("ICC_IAR1_EL1") == 40                # the one signalled is the one acknowledged
    assert v.pending_interrupt() is None                      # active now, nothing else pending


@pytest.mark.parametrize("backend", ["core", "pure"])
def test_preemption_needs_a_higher_group_priority(backend):
    # 5 preemption bits (BPR1 minimum 2 with 5 bits): priorities 0x80 and
    # 0x78 are different groups, 0x80 and 0x80 the same.
    vm = vm_with_spis(backend, {40: 0x80, 41: 0x78, 42: 0x80})
    v = vm.vcpus[0]
    vm.set_irq_level(40, True)
    v.enter()
    v.sysreg_write("ICC_PMR_EL1", 0xF8)
    v.sysreg_write("ICC_IGRPEN1_EL1", 1)
    assert v.sysreg_read("ICC_IAR1_EL1") == 40                # running priority 0x80 now
    v.exit()
    vm.set_irq_level(42, True)                                # same priority: no preemption
    v.enter()
    assert v.pending_interrupt() is None
    v.exit()
    vm.set_irq_level(41, True)                                # higher priority: preempts
    v.enter()
    assert v.pending_interrupt() == "irq"
    assert v.sysreg_read("ICC_IAR1_EL1") == 41


@pytest.mark.parametrize("backend", ["core", "pure"])
def test_group0_is_a_vfiq(backend):
    vm = vm_with_spis(backend, {40: 0x40}, group=0)
    v = vm.vcpus[0]
    vm.set_irq_level(40, True)
    v.enter()
    v.sysreg_write("ICC_PMR_EL1", 0xF8)
    v.sysreg_write("ICC_IGRPEN0_EL1", 1)
    assert v.pending_interrupt() == "fiq"
    assert v.sysreg_read("ICC_IAR0_EL1") == 40


def test_only_while_running():
    vm = vgic.VM(nr_vcpus=1)
    with pytest.raises(VgicError, match="not running"):
        vm.vcpus[0].pending_interrupt()


# ---------------------------------------------------------------- signals()
def _random_if(rng, records, i, nr_lrs):
    # Random but architecturally shaped ICH_* state: LR states, groups,
    # priorities, HW/EOI bits, an HCR with every maintenance enable, a VMCR.
    from vgic import ich
    rec = records[i]
    for n in range(nr_lrs):
        state = int(rng.integers(0, 4))
        hw = bool(rng.integers(0, 4) == 0)
        lr = ich.lr_value(32 + n, int(rng.integers(0, 256)) & 0xF8, group=int(rng.integers(0, 2)),
                          pending=bool(state & 1), active=bool(state & 2), hw=hw,
                          pintid=40 + n if hw else 0, eoi=not hw and bool(rng.integers(0, 2)))
        rec["ich_lr"][n] = lr
    rec["ich_hcr"] = int(rng.integers(0, 256)) | (int(rng.integers(0, 32)) << ich.HCR_EOICOUNT_SHIFT)
    rec["ich_vmcr"] = (int(rng.integers(0, 256)) << ich.VMCR_PMR_SHIFT) | int(rng.integers(0, 4)) \
        | (int(rng.integers(0, 8)) << ich.VMCR_BPR0_SHIFT) | (int(rng.integers(0, 8)) << ich.VMCR_BPR1_SHIFT) \
        | (ich.VMCR_CBPR if rng.integers(0, 4) == 0 else 0)
    rec["ich_ap0r"][0] = int(rng.integers(0, 2)) << int(rng.integers(0, 32))
    rec["ich_ap1r"][0] = int(rng.integers(0, 2)) << int(rng.integers(0, 32))


@pytest.mark.parametrize("backend", ["core", "pure"])
def test_signals_is_the_acknowledge_rule_and_the_misr_rule_in_one_call(backend):
    # SIG_IRQ / SIG_FIQ: the group the twin computes with the Python rule
    # functions (IHI 0069 §4.8, ICV_IAR<n>_EL1 pseudocode);
    # SIG_MAINT: ICH_HCR_EL2.En with ICH_MISR_EL2 != 0 (IHI 0069 §12.4.7),
    # MISR as vgic.ich.misr computes it.  2,000 random interface states.
    import numpy as np

    from vgic import ich
    from vgic._pure.icv import Icv as PureIcv
    rng = np.random.default_rng(7)
    vm = vgic.VM(nr_vcpus=4, nr_irqs=64, backend=backend, nr_lrs=8)
    gic = vm.gic
    # The twin's rule, applying the Python rule functions of vgic.ich one by one.
    oracle = PureIcv(gic.records, gic.nr_lrs, gic.pri_bits, gic.pre_bits)
    for v in vm.vcpus:
        v.enter()
    for k in range(2000):
        i = k % 4
        _random_if(rng, gic.records, i, gic.nr_lrs)
        rec = gic.records[i]
        want_misr = ich.misr(rec["ich_lr"], gic.nr_lrs, int(rec["ich_hcr"]), int(rec["ich_vmcr"]))
        group = oracle.signalled(i)
        want = {1: ich.SIG_IRQ, 0: ich.SIG_FIQ}.get(group, 0)
        if int(rec["ich_hcr"]) & ich.HCR_EN and want_misr:
            want |= ich.SIG_MAINT
        assert gic.icv.misr(i) == want_misr
        assert gic.icv.signalled(i) == group
        assert vm.vcpus[i].signals() == want
        assert vm.vcpus[i].pending_interrupt() == {1: "irq", 0: "fiq"}.get(group)
    assert list(gic.icv.signals_batch([0, 1, 2, 3])) == [vm.vcpus[i].signals() for i in range(4)]
    with pytest.raises(ValueError, match="vcpu"):
        gic.icv.signals(4)
    with pytest.raises(ValueError, match=r"idx\[1\] = 9"):
        gic.icv.signals_batch([0, 9])


@pytest.mark.parametrize("backend", ["core", "pure"])
def test_signals_reports_the_maintenance_interrupt_of_a_group_enable(backend):
    # KVM sets ICH_HCR_EL2.VGrp1EIE while Group 1 is disabled in the VMCR
    # with interrupts queued (kvm-facts §4.2): enabling it raises MISR.VGrp1E.
    from vgic import ich
    vm = vm_with_spis(backend, {40: 0x80})
    v = vm.vcpus[0]
    vm.set_irq_level(40, True)
    v.enter()
    assert v.signals() == 0
    v.sysreg_write("ICC_PMR_EL1", 0xF0)
    v.sysreg_write("ICC_IGRPEN1_EL1", 1)
    sig = v.signals()
    assert sig & ich.SIG_MAINT
    assert v.hyp.read("ICH_MISR_EL2") & ich.MISR_VGRP1E
    v.exit()
    v.enter()
    assert v.signals() == ich.SIG_IRQ                           # refolded, flushed: the SPI is signalled


@pytest.mark.parametrize("backend", ["core", "pure"])
def test_signals_needs_a_running_vcpu(backend):
    vm = vgic.VM(nr_vcpus=1, nr_irqs=64, backend=backend)
    with pytest.raises(VgicError, match="not running"):
        vm.vcpus[0].signals()


# ------------------------------------------------- runnable / has_pending_irq
@pytest.mark.parametrize("backend", ["core", "pure"])
def test_a_blocked_vcpu_is_runnable_once_an_spi_is_pending_for_it(backend):
    # kvm_vgic_vcpu_pending_irq(): pending, enabled, not active, priority
    # below VMCR.VPMR, distributor enabled; checked without loading it.
    vm = vm_with_spis(backend, {40: 0x80})
    vm.mmio_write(vm.dist_base + R.GICD_ICFGR + 8, 4, 0)        # SPIs 32-47 level (KVM's default is edge)
    v = vm.vcpus[0]
    v.enter()
    v.sysreg_write("ICC_PMR_EL1", 0x90)
    v.exit()
    v.block()
    assert not v.has_pending_irq() and not v.runnable()
    vm.set_irq_level(40, True)
    assert v.has_pending_irq() and v.runnable()
    assert not v.loaded                                         # the check loaded nothing
    assert vm.gic.lists.ap_list(0) == [40]                      # queued where KVM queued it
    vm.set_irq_level(40, False)
    assert not v.has_pending_irq()                              # a level SPI whose line dropped


@pytest.mark.parametrize("backend", ["core", "pure"])
def test_pending_irq_respects_pmr_enable_active_and_the_distributor(backend):
    vm = vm_with_spis(backend, {40: 0x80})
    v = vm.vcpus[0]
    d = vm.dist_base
    v.enter()
    v.sysreg_write("ICC_PMR_EL1", 0x80)                         # equal to the priority: masked
    v.exit()
    v.block()
    vm.set_irq_level(40, True)
    assert not v.has_pending_irq()
    v.unblock()
    v.enter()
    v.sysreg_write("ICC_PMR_EL1", 0x88)
    v.exit()
    v.block()
    assert v.has_pending_irq()
    vm.mmio_write(d + R.GICD_ICENABLER + 4, 4, 1 << 8)           # disabled
    assert not v.has_pending_irq()
    vm.mmio_write(d + R.GICD_ISENABLER + 4, 4, 1 << 8)
    vm.mmio_write(d + R.GICD_CTLR, 4, 0x10)                      # distributor off
    assert not v.has_pending_irq()
    vm.mmio_write(d + R.GICD_CTLR, 4, 0x13)
    assert v.has_pending_irq()
    vm.mmio_write(d + R.GICD_ISACTIVER + 4, 4, 1 << 8)           # active: not a wake-up
    assert not v.has_pending_irq()
    with pytest.raises(ValueError, match="pmr"):
        vm.gic.lists.pending_irq(0, 256)


@pytest.mark.parametrize("backend", ["core", "pure"])
def test_a_blocked_vcpu_is_runnable_when_its_background_timer_fires(backend):
    # kvm_bg_timer_expire wakes the vCPU (kvm-facts, arch timer §7).
    vm = vgic.VM(nr_vcpus=1, nr_irqs=64, backend=backend)
    v = vm.vcpus[0]
    v.enter()
    v.sysreg_write("CNTV_TVAL_EL0", 1000)
    v.sysreg_write("CNTV_CTL_EL0", 1)
    v.exit()
    v.block()
    assert not v.runnable()
    vm.advance(999)
    assert not v.runnable()
    vm.advance(1)
    assert v.runnable()
    assert not v.has_pending_irq()                              # the timer's, not (yet) the vGIC's
    assert v.unblock() is True


@pytest.mark.parametrize("backend", ["core", "pure"])
def test_irq_events_moves_where_kvm_kicks(backend):
    # vgic_queue_irq_unlock kicks the target when an interrupt becomes
    # deliverable; vgic_mmio_write_v3_misc kicks every vCPU when the guest
    # enables the distributor.  Nothing else moves the count.
    vm = vgic.VM(nr_vcpus=2, nr_irqs=64, backend=backend)
    d = vm.dist_base
    seen = vm.irq_events
    vm.mmio_write(d + R.GICD_CTLR, 4, 0x12)
    assert vm.irq_events > seen
    seen = vm.irq_events
    vm.mmio_write(d + R.GICD_CTLR, 4, 0x12)                      # already enabled: no kick
    vm.mmio_write(d + R.GICD_IPRIORITYR + 40, 1, 0x40)
    vm.set_irq_level(40, True)                                  # pending but disabled
    assert vm.irq_events == seen
    vm.mmio_write(d + R.GICD_ISENABLER + 4, 4, 1 << 8)           # now deliverable
    assert vm.irq_events > seen
    seen = vm.irq_events
    vm.vcpus[0].enter()
    vm.vcpus[0].sysreg_write("ICC_SGI1R_EL1", (1 << 1) | (3 << 24))   # SGI 3 to vCPU 1
    vm.vcpus[0].exit()
    assert vm.irq_events > seen


@pytest.mark.parametrize("backend", ["core", "pure"])
def test_kick_flushes_what_became_pending_for_a_running_vcpu(backend):
    vm = vm_with_spis(backend, {40: 0x80})
    v = vm.vcpus[0]
    v.enter()
    v.sysreg_write("ICC_PMR_EL1", 0xF0)
    v.sysreg_write("ICC_IGRPEN1_EL1", 1)
    v.kick()                                                    # the group-enable maintenance exit
    vm.set_irq_level(40, True)
    assert v.pending_interrupt() is None                        # not in an LR yet
    v.kick()
    assert v.pending_interrupt() == "irq"
    v.exit()
    v.kick()                                                    # not running: nothing
    assert not v.running
