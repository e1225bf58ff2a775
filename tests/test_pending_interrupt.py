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
