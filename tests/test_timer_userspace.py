"""The arch timers with no in-kernel irqchip (``VM(irqchip=False)``).

KVM (timer-facts §A.1, §A.6, §A.7; arch_timer.c kvm_timer_vcpu_load_nogic,
kvm_arch_timer_handler, kvm_timer_sync_user, kvm_timer_update_run): the
timers drive no vGIC; on a host GIC without active state the host vtimer PPI
is disabled while the vtimer's level is high (at load, and by the handler
when it fires) and enabled again at an exit once the level has fallen; the
levels reach userspace as kvm_run.s.regs.device_irq_level bits
(KVM_ARM_DEV_EL1_VTIMER, KVM_ARM_DEV_EL1_PTIMER), updated at each exit.
"""
from __future__ import annotations

import errno

import pytest

import vgic
from vgic import uapi


@pytest.fixture(params=[("core", "lazy"), ("core", "eager"), ("pure", "lazy"), ("pure", "eager")],
                ids=lambda p: "-".join(p))
def vm(request: pytest.FixtureRequest) -> vgic.VM:
    backend, policy = request.param
    return vgic.VM(nr_vcpus=1, irqchip=False, timer_policy=policy, backend=backend)


def test_no_vgic_frames_no_icc_registers_no_irq_line(vm):
    """No vGICv3: its MMIO frames are not mapped, the guest's ICC_* registers
    are UNDEFINED, KVM_IRQ_LINE for a PPI is -ENXIO, no device attributes."""
    v = vm.vcpus[0]
    assert vm.gic is None
    with pytest.raises(vgic.UnmappedAccess):
        vm.mmio_read(vm.dist_base, 4)
    v.enter()
    with pytest.raises(vgic.UndefinedInstruction):
        v.sysreg_read("ICC_IAR1_EL1")
    v.exit()
    with pytest.raises(vgic.KvmError) as e:
        vm.set_irq_level(27, 1, vcpu=0)
    assert e.value.errno == errno.ENXIO
    assert not vm.has_device_attr(uapi.KVM_DEV_ARM_VGIC_GRP_CTRL, uapi.KVM_DEV_ARM_VGIC_CTRL_INIT)
    with pytest.raises(vgic.KvmError) as e:
        v.set_device_attr(uapi.KVM_ARM_VCPU_TIMER_CTRL, uapi.KVM_ARM_VCPU_TIMER_IRQ_VTIMER, 20)
    assert e.value.errno == errno.EINVAL          # timer IRQs need the in-kernel irqchip


def test_its_needs_the_vgic():
    with pytest.raises(ValueError, match="ITS"):
        vgic.VM(irqchip=False, its=True)


def test_levels_are_published_and_the_host_ppi_masked(vm):
    """The vtimer fires while the guest runs: the host takes its PPI, which
    stays disabled; the exit publishes VTIMER in device_irq_level.  When the
    guest has masked the timer, the next exit lowers the level, enables the
    PPI again and publishes 0."""
    v = vm.vcpus[0]
    v.enter()
    v.sysreg_write("CNTV_TVAL_EL0", 100)
    v.sysreg_write("CNTV_CTL_EL0", 1)
    assert v.timer.device_irq_level == 0
    vm.advance(100)                                   # fires: the vCPU is kicked out and back
    rec = vm.timer.records[0]
    assert rec["host_irqs"] == 1 and rec["host_masked"]
    assert v.timer.device_irq_level == uapi.KVM_ARM_DEV_EL1_VTIMER
    vm.advance(1000)
    assert rec["host_irqs"] == 1                      # masked: not taken again
    v.sysreg_write("CNTV_CTL_EL0", 3)                 # the guest masks it (IMASK)
    v.exit()
    assert v.timer.device_irq_level == 0
    assert not rec["host_masked"]


def test_ptimer_level_published(vm):
    """The emulated ptimer's soft timer raises its level; the exit publishes
    KVM_ARM_DEV_EL1_PTIMER."""
    v = vm.vcpus[0]
    v.enter()
    v.sysreg_write("CNTP_TVAL_EL0", 50)
    v.sysreg_write("CNTP_CTL_EL0", 1)
    vm.advance(50)
    assert v.timer.device_irq_level == uapi.KVM_ARM_DEV_EL1_PTIMER
    v.sysreg_write("CNTP_CTL_EL0", 0)
    v.exit()
    assert v.timer.device_irq_level == 0


def test_backends_agree_without_irqchip():
    """core and twin give the same state for the same history."""
    states = []
    for backend in ("core", "pure"):
        vm = vgic.VM(nr_vcpus=2, irqchip=False, backend=backend)
        for v in vm.vcpus:
            v.enter()
            v.sysreg_write("CNTV_TVAL_EL0", 10 + v.id)
            v.sysreg_write("CNTV_CTL_EL0", 1)
        vm.advance(11)
        for v in vm.vcpus:
            v.exit()
        vm.vcpus[0].block()
        vm.advance(5)
        vm.vcpus[0].unblock()
        states.append(vm.state())
    assert states[0] == states[1]
