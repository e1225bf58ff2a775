"""vgic.VM construction: validation like KVM's, layout defaults, shared RAM,
vCPU frame addresses and the exception hierarchy.

Sources: kvm-facts.md §1.1 (frame sizes, 512 vCPUs), §6 (NR_IRQS and ADDR
rules), /work/shared/API.md (defaults follow QEMU virt; `memory=` takes any
writable buffer; error classes).
"""
import errno

import numpy as np
import pytest

import vgic
from vgic import regmap as R


# ================================================================== nr_irqs
@pytest.mark.parametrize("nr_irqs", [64, 96, 128, 256, 960, 992])
def test_nr_irqs_accepted(nr_irqs):
    """kvm-facts §6: NR_IRQS must be >= 64, a multiple of 32 and <= 1023,
    so 64..992 in steps of 32 are valid."""
    vm = vgic.VM(nr_vcpus=1, nr_irqs=nr_irqs)
    assert vm.nr_irqs == nr_irqs
    # and the distributor agrees (kvm-facts §1.3 ITLinesNumber)
    assert vm.mmio_read(vm.dist_base + R.GICD_TYPER, 4) & 0x1F == nr_irqs // 32 - 1


@pytest.mark.parametrize("nr_irqs", [0, 32, 63, 65, 97, 100, 1000, 1023, 1024, 2048])
def test_nr_irqs_rejected(nr_irqs):
    """kvm-facts §6: anything else is refused (KVM: -EINVAL; here ValueError).
    Note 1024 is refused although the KVM doc says 1024."""
    with pytest.raises(ValueError):
        vgic.VM(nr_vcpus=1, nr_irqs=nr_irqs)


def test_default_nr_irqs_is_256():
    """kvm-facts §1.1: KVM's default when NR_IRQS is never set is 256."""
    vm = vgic.VM(nr_vcpus=1)
    assert vm.nr_irqs == 256
    assert vm.mmio_read(vm.dist_base + R.GICD_TYPER, 4) == 0x00480007


# ================================================================= nr_vcpus
@pytest.mark.parametrize("nr_vcpus", [1, 2, 8, 512])
def test_nr_vcpus_accepted(nr_vcpus):
    """kvm-facts §1.1: a vGICv3 supports up to 512 vCPUs (VGIC_V3_MAX_CPUS)."""
    vm = vgic.VM(nr_vcpus=nr_vcpus, nr_irqs=64)
    assert vm.nr_vcpus == nr_vcpus
    assert len(vm.vcpus) == nr_vcpus
    assert [v.id for v in vm.vcpus[:3]] == list(range(min(3, nr_vcpus)))


@pytest.mark.parametrize("nr_vcpus", [0, 513, 1024, -1])
def test_nr_vcpus_rejected(nr_vcpus):
    """kvm-facts §1.1: 0 and more than 512 vCPUs are refused (ValueError)."""
    with pytest.raises(ValueError):
        vgic.VM(nr_vcpus=nr_vcpus, nr_irqs=64)


def test_512_vcpus_last_redistributor():
    """kvm-facts §1.1/§1.5: with 512 vCPUs the last redistributor is vCPU 511:
    GICR_TYPER Processor_Number 0x1FF, Last set, Affinity 0x1F0F."""
    vm = vgic.VM(nr_vcpus=512, nr_irqs=64)
    typer = vm.mmio_read(vm.vcpus[511].rd_base + R.GICR_TYPER, 8, 511)
    assert typer == (0x1F0F << 32) | (0x1FF << 8) | 0x10


# ==================================================================== layout
def test_default_bases():
    """API.md: defaults follow QEMU virt (dist 0x08000000, redist 0x080A0000,
    RAM 0x40000000)."""
    vm = vgic.VM(nr_vcpus=2)
    assert vm.dist_base == 0x0800_0000
    assert vm.redist_base == 0x080A_0000
    assert vm.ram_base == 0x4000_0000


@pytest.mark.parametrize("i", [0, 1, 3])
def test_vcpu_frame_addresses(vm, i):
    """kvm-facts §1.1 / API.md: vCPU i's RD_base = redist_base + i * 0x20000,
    SGI_base = RD_base + 0x10000."""
    assert vm.vcpus[i].rd_base == 0x080A_0000 + i * 0x20000
    assert vm.vcpus[i].sgi_base == 0x080B_0000 + i * 0x20000


def test_vcpu_frames_custom_base():
    """API.md: every base is a keyword argument; the frames follow it."""
    vm = vgic.VM(nr_vcpus=3, dist_base=0x0100_0000, redist_base=0x0200_0000,
                 ram_base=0x8000_0000)
    assert (vm.dist_base, vm.redist_base, vm.ram_base) == (0x0100_0000, 0x0200_0000, 0x8000_0000)
    assert [v.rd_base for v in vm.vcpus] == [0x0200_0000, 0x0202_0000, 0x0204_0000]
    assert vm.vcpus[2].sgi_base == 0x0205_0000
    # the frames are really there: GICD_PIDR2 and vCPU 2's GICR_TYPER answer
    assert vm.mmio_read(0x0100_0000 + 0xFFE8, 4) == 0x3B
    assert vm.mmio_read(0x0204_0000 + R.GICR_TYPER, 4) == 0x210


@pytest.mark.parametrize("kw", [
    {"dist_base": 0x0800_1000},
    {"dist_base": 0x0800_8000},
    {"dist_base": 0x0800_0004},
    {"redist_base": 0x080A_8000},
    {"redist_base": 0x080A_0400},
])
def test_bases_must_be_64k_aligned(kw):
    """kvm-facts §1.1/§6: GIC frame bases must be 64 KiB aligned (-EINVAL)."""
    with pytest.raises(ValueError):
        vgic.VM(nr_vcpus=2, **kw)


@pytest.mark.parametrize("kw", [
    # distributor inside the redistributor region (4 x 128 KiB from 0x080A0000)
    {"dist_base": 0x080C_0000},
    {"dist_base": 0x0810_0000},
    # redistributors over the distributor
    {"redist_base": 0x07FE_0000},
    {"redist_base": 0x0800_0000},
    # RAM over the distributor / redistributors
    {"ram_base": 0x0800_0000},
    {"ram_base": 0x080F_0000},
    {"ram_base": 0x07FF_0000, "ram_size": 0x20000},
    # redistributors over RAM
    {"redist_base": 0x4000_0000},
    {"redist_base": 0x3FFF_0000},
])
def test_overlaps_rejected(kw):
    """kvm-facts §6 (frames must not overlap) / API.md: the distributor, the
    redistributor region (nr_vcpus x 128 KiB) and RAM may not overlap."""
    with pytest.raises(ValueError):
        vgic.VM(nr_vcpus=4, **kw)


def test_adjacent_frames_accepted():
    """kvm-facts §1.1: frames that touch without overlapping are fine:
    distributor 64 KiB, then 4 x 128 KiB of redistributors, then RAM."""
    vm = vgic.VM(nr_vcpus=4, dist_base=0x0, redist_base=0x10000,
                 ram_base=0x10000 + 4 * 0x20000, ram_size=0x10000)
    assert vm.vcpus[3].rd_base == 0x70000
    assert vm.mmio_read(0x0 + R.GICD_CTLR, 4) == 0x50
    assert vm.mmio_read(0x70000 + R.GICR_TYPER, 4) == 0x310


# ==================================================================== memory
def test_default_memory_is_writable_uint8(vm):
    """API.md: vm.memory is guest RAM as a writable uint8 numpy array."""
    assert isinstance(vm.memory, np.ndarray)
    assert vm.memory.dtype == np.uint8
    assert vm.memory.flags.writeable
    assert vm.memory.size > 0
    vm.memory[0] = 0x5A
    assert vm.memory[0] == 0x5A


def test_memory_bytearray_is_shared():
    """API.md: `memory=` takes any writable buffer and shares it without a copy."""
    buf = bytearray(0x10000)
    vm = vgic.VM(nr_vcpus=1, memory=buf)
    assert vm.memory.size == 0x10000
    vm.memory[5] = 0xAB
    assert buf[5] == 0xAB
    buf[0x1234] = 0x42
    assert vm.memory[0x1234] == 0x42


def test_memory_numpy_is_shared():
    """API.md: a numpy array works as the shared buffer too."""
    arr = np.zeros(0x2000, dtype=np.uint8)
    vm = vgic.VM(nr_vcpus=1, memory=arr)
    vm.memory[0x1FFF] = 7
    assert arr[0x1FFF] == 7


@pytest.mark.parametrize("buf", [bytes(0x1000), memoryview(bytes(0x1000))])
def test_memory_read_only_rejected(buf):
    """API.md: the buffer must be writable (guest RAM is written)."""
    with pytest.raises((TypeError, ValueError)):
        vgic.VM(nr_vcpus=1, memory=buf)


def test_memory_sets_ram_size_for_overlap_check():
    """API.md: the buffer's length is the RAM size: a 1 MiB buffer placed just
    below the distributor fits, one byte more would overlap it."""
    vgic.VM(nr_vcpus=1, ram_base=0x07F0_0000, memory=bytearray(0x10_0000))
    with pytest.raises(ValueError):
        vgic.VM(nr_vcpus=1, ram_base=0x07F0_0000, memory=bytearray(0x10_0001))


# ===================================================================== errors
def test_error_hierarchy():
    """API.md 'Errors': every library error derives from VgicError; KvmError
    also from OSError."""
    assert issubclass(vgic.UnmappedAccess, vgic.VgicError)
    assert issubclass(vgic.KvmError, vgic.VgicError)
    assert issubclass(vgic.KvmError, OSError)
    assert issubclass(vgic.VgicError, Exception)
    assert not issubclass(vgic.UnmappedAccess, OSError)


def test_kvm_error_carries_errno():
    """API.md: KvmError is an OSError whose errno is KVM's errno."""
    e = vgic.KvmError(errno.EBUSY, "busy")
    assert e.errno == errno.EBUSY
    assert isinstance(e, OSError) and isinstance(e, vgic.VgicError)


def test_real_kvm_error_from_api(vm):
    """kvm-facts §3.3: injecting an SGI is EINVAL; caught as OSError and as
    VgicError alike."""
    with pytest.raises(OSError) as ei:
        vm.set_irq_level(3, True, vcpu=0)
    assert ei.value.errno == errno.EINVAL
    assert isinstance(ei.value, vgic.VgicError)


@pytest.mark.parametrize("addr_of", [
    lambda vm: 0x0,
    lambda vm: vm.dist_base - 4,
    lambda vm: vm.dist_base + 0x10000,
    lambda vm: vm.redist_base + 4 * 0x20000,      # past the 4th redistributor
    lambda vm: vm.ram_base,                       # RAM is not a GIC frame
])
def test_unmapped_access_raises(vm, addr_of):
    """API.md 'Guest MMIO': an address outside every GIC frame raises
    UnmappedAccess (a VgicError), for reads and writes."""
    a = addr_of(vm)
    with pytest.raises(vgic.UnmappedAccess):
        vm.mmio_read(a, 4)
    with pytest.raises(vgic.VgicError):
        vm.mmio_write(a, 4, 0)
