"""Shared fixtures.  The suite runs once per implementation: as is (Cython
core) and with VGIC_PUREPYTHON=1 (pure-Python twin); `vgic.BACKEND` says which."""
import pytest

import vgic

DIST = 0x0800_0000
REDIST = 0x080A_0000


@pytest.fixture
def vm():
    """A 4-vCPU VM with KVM's default 256 IRQs at the QEMU virt addresses."""
    return vgic.VM(nr_vcpus=4, nr_irqs=256)


@pytest.fixture
def vm1():
    """The smallest VM: 1 vCPU, 64 IRQs."""
    return vgic.VM(nr_vcpus=1, nr_irqs=64)


def gicd(vm, offset):
    """Guest physical address of a distributor register."""
    return vm.dist_base + offset


def gicr(vm, vcpu, offset):
    """Guest physical address of a register in vCPU `vcpu`'s RD_base frame."""
    return vm.redist_base + vcpu * 0x20000 + offset


def gicr_sgi(vm, vcpu, offset):
    """Guest physical address of a register in vCPU `vcpu`'s SGI_base frame."""
    return vm.redist_base + vcpu * 0x20000 + 0x10000 + offset


@pytest.fixture
def addr():
    """Helpers turning register offsets into guest physical addresses."""
    class A:
        pass
    a = A()
    a.gicd, a.gicr, a.gicr_sgi = gicd, gicr, gicr_sgi
    return a


