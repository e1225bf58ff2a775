"""KVM's device-attribute API of the vGICv3 device.

Sources: Documentation/virt/kvm/devices/arm-vgic-v3.rst (the KVM doc),
kvm-facts §6 (groups, attribute layouts, errnos) and §2 (the uaccess path:
always 32-bit, uaccess_read/uaccess_write where KVM defines them, offsets
without a region read 0 / ignore writes / succeed), §1.3 (GICD_CTLR, IIDR,
TYPER2 userspace writes), §1.5 (GICR_TYPER).  The VM of vgic.VM is a device
that has been created, had NR_IRQS and both addresses set, and CTRL_INIT
done, so "already set" errors apply.

Expected values come from those documents, never from running the code.
"""
from __future__ import annotations

import errno

import pytest

import vgic
from vgic import regmap, uapi
from vgic.state import STAMPS, diff, drop

ADDR = uapi.KVM_DEV_ARM_VGIC_GRP_ADDR
DIST = uapi.KVM_DEV_ARM_VGIC_GRP_DIST_REGS
NR_IRQS = uapi.KVM_DEV_ARM_VGIC_GRP_NR_IRQS
CTRL = uapi.KVM_DEV_ARM_VGIC_GRP_CTRL
REDIST = uapi.KVM_DEV_ARM_VGIC_GRP_REDIST_REGS
LEVEL = uapi.KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO

SGI = 0x10000           # REDIST_REGS offsets of the SGI_base frame (KVM doc)


def mpidr_attr(mpidr: int) -> int:
    """attr[63:32] as the KVM doc packs an MPIDR: Aff3 [63:56], Aff2
    [55:48], Aff1 [47:40], Aff0 [39:32] (kvm-facts §6)."""
    aff0 = mpidr & 0xFF
    aff1 = (mpidr >> 8) & 0xFF
    aff2 = (mpidr >> 16) & 0xFF
    aff3 = (mpidr >> 32) & 0xFF
    return (aff3 << 56) | (aff2 << 48) | (aff1 << 40) | (aff0 << 32)


def level_attr(mpidr: int, intid: int, info: int = 0) -> int:
    """LEVEL_INFO attr: [63:32] MPIDR, [31:10] info, [9:0] vINTID (kvm-facts §6)."""
    return mpidr_attr(mpidr) | (info << 10) | intid


def kvm_errno(fn, *args) -> int:
    with pytest.raises(vgic.KvmError) as exc:
        fn(*args)
    assert isinstance(exc.value, OSError) and isinstance(exc.value, vgic.VgicError)
    return exc.value.errno


def assert_same_state(a: dict, b: dict) -> None:
    d = diff(a, b, limit=1)
    assert not d, d[0]


@pytest.fixture
def vm():
    return vgic.VM(nr_vcpus=4, nr_irqs=256)


def sgi_base(vm, v):
    return vm.redist_base + v * 0x20000 + 0x10000


def rd_base(vm, v):
    return vm.redist_base + v * 0x20000


# ================================================================ uapi
def test_uapi_constants():
    """kvm-facts §6 / arch/arm64/include/uapi/asm/kvm.h values."""
    assert (uapi.KVM_DEV_ARM_VGIC_GRP_ADDR, uapi.KVM_DEV_ARM_VGIC_GRP_DIST_REGS,
            uapi.KVM_DEV_ARM_VGIC_GRP_CPU_REGS, uapi.KVM_DEV_ARM_VGIC_GRP_NR_IRQS,
            uapi.KVM_DEV_ARM_VGIC_GRP_CTRL, uapi.KVM_DEV_ARM_VGIC_GRP_REDIST_REGS,
            uapi.KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS, uapi.KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO,
            uapi.KVM_DEV_ARM_VGIC_GRP_ITS_REGS) == tuple(range(9))
    assert (uapi.KVM_DEV_ARM_VGIC_CTRL_INIT, uapi.KVM_DEV_ARM_ITS_SAVE_TABLES,
            uapi.KVM_DEV_ARM_ITS_RESTORE_TABLES, uapi.KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES,
            uapi.KVM_DEV_ARM_ITS_CTRL_RESET) == (0, 1, 2, 3, 4)
    assert (uapi.KVM_VGIC_V3_ADDR_TYPE_DIST, uapi.KVM_VGIC_V3_ADDR_TYPE_REDIST,
            uapi.KVM_VGIC_ITS_ADDR_TYPE, uapi.KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION) == (2, 3, 4, 5)
    assert uapi.VGIC_LEVEL_INFO_LINE_LEVEL == 0


@pytest.mark.parametrize("mpidr", [0x80000000, 0x80000003, 0x8000_0F0A, 0x80FE_0102,
                                   0x12_8000_0304, 0xFF_80FF_FFFF])
def test_mpidr_to_attr_packing(mpidr):
    """KVM doc: MPIDR packed as Aff3.Aff2.Aff1.Aff0 in attr[63:32]."""
    assert uapi.mpidr_to_attr(mpidr) == mpidr_attr(mpidr)
    assert uapi.attr_to_mpidr(mpidr_attr(mpidr)) == mpidr & 0xFF00FFFFFF


# ================================================================ GRP_ADDR
def test_addr_get_returns_bases():
    """KVM doc, KVM_DEV_ARM_VGIC_GRP_ADDR: reading type DIST (2) / REDIST (3)
    returns the base addresses."""
    vm = vgic.VM(nr_vcpus=2, nr_irqs=64, dist_base=0x0900_0000, redist_base=0x0A00_0000)
    assert vm.get_device_attr(ADDR, uapi.KVM_VGIC_V3_ADDR_TYPE_DIST) == 0x0900_0000
    assert vm.get_device_attr(ADDR, uapi.KVM_VGIC_V3_ADDR_TYPE_REDIST) == 0x0A00_0000


def test_addr_set_again_is_eexist(vm):
    """kvm-facts §6: an address can be set only once (-EEXIST), whatever the
    new value - even the same one."""
    for attr, value in ((uapi.KVM_VGIC_V3_ADDR_TYPE_DIST, vm.dist_base),
                        (uapi.KVM_VGIC_V3_ADDR_TYPE_DIST, 0x1000_0000),
                        (uapi.KVM_VGIC_V3_ADDR_TYPE_REDIST, vm.redist_base),
                        (uapi.KVM_VGIC_V3_ADDR_TYPE_REDIST, 0x1000_0000)):
        assert kvm_errno(vm.set_device_attr, ADDR, attr, value) == errno.EEXIST
    assert vm.get_device_attr(ADDR, uapi.KVM_VGIC_V3_ADDR_TYPE_DIST) == 0x0800_0000
    assert vm.get_device_attr(ADDR, uapi.KVM_VGIC_V3_ADDR_TYPE_REDIST) == 0x080A_0000
    assert vm.mmio_read(0x0800_0000 + regmap.GICD_PIDR2, 4) == 0x3B


def test_addr_set_redist_region_is_einval(vm):
    """kvm-facts §6: mixing the legacy REDIST address with REDIST_REGION is
    -EINVAL; region index 0 after a region already exists is -EINVAL too
    (regions must be added with consecutive indices)."""
    value = (1 << 52) | 0x0B00_0000 | 0      # count 1, base, flags 0, index 0
    assert kvm_errno(vm.set_device_attr, ADDR, uapi.KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION,
                     value) == errno.EINVAL


@pytest.mark.parametrize("attr", [uapi.KVM_VGIC_V2_ADDR_TYPE_DIST, uapi.KVM_VGIC_V2_ADDR_TYPE_CPU,
                                  uapi.KVM_VGIC_ITS_ADDR_TYPE, 6, 0xFFFF])
def test_addr_unknown_type_is_enxio(vm, attr):
    """kvm-facts §6: an address type the vGICv3 device does not have
    (GICv2 types, the ITS's own type, anything else) is -ENXIO."""
    assert kvm_errno(vm.get_device_attr, ADDR, attr) == errno.ENXIO
    assert kvm_errno(vm.set_device_attr, ADDR, attr, 0x1000_0000) == errno.ENXIO


# ================================================================ NR_IRQS
@pytest.mark.parametrize("nr", [64, 96, 256, 992])
def test_nr_irqs_get(nr):
    """KVM doc: GRP_NR_IRQS reads the number of IRQs (SGIs+PPIs+SPIs)."""
    vm = vgic.VM(nr_vcpus=1, nr_irqs=nr)
    assert vm.get_device_attr(NR_IRQS, 0) == nr


@pytest.mark.parametrize("value", [64, 128, 256, 992])
def test_nr_irqs_set_valid_is_ebusy(vm, value):
    """kvm-facts §6: a valid value once the vgic is ready is -EBUSY."""
    assert kvm_errno(vm.set_device_attr, NR_IRQS, 0, value) == errno.EBUSY
    assert vm.get_device_attr(NR_IRQS, 0) == 256


@pytest.mark.parametrize("value", [0, 32, 63, 100, 1000, 1023, 1024, 2048])
def test_nr_irqs_set_invalid_is_einval(vm, value):
    """kvm-facts §6: < 64, not a multiple of 32, or > 1023 (so 1024 too) is
    -EINVAL, checked before -EBUSY."""
    assert kvm_errno(vm.set_device_attr, NR_IRQS, 0, value) == errno.EINVAL


# ================================================================ CTRL
def test_ctrl(vm):
    """kvm-facts §6: CTRL_INIT and SAVE_PENDING_TABLES can be set (INIT of an
    initialised vgic succeeds); CTRL has nothing to read (-ENXIO); the ITS
    controls do not belong to this device (-ENXIO)."""
    vm.set_device_attr(CTRL, uapi.KVM_DEV_ARM_VGIC_CTRL_INIT, 0)
    vm.set_device_attr(CTRL, uapi.KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES, 0)
    assert kvm_errno(vm.get_device_attr, CTRL, uapi.KVM_DEV_ARM_VGIC_CTRL_INIT) == errno.ENXIO
    assert kvm_errno(vm.get_device_attr, CTRL,
                     uapi.KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES) == errno.ENXIO
    assert kvm_errno(vm.set_device_attr, CTRL, uapi.KVM_DEV_ARM_ITS_SAVE_TABLES, 0) == errno.ENXIO
    # CTRL_INIT did not reset anything.
    assert vm.get_device_attr(NR_IRQS, 0) == 256


# ================================================================ DIST_REGS
def test_dist_ctlr_uaccess_write(vm):
    """kvm-facts §1.3: a userspace GICD_CTLR write sets the enable directly;
    ARE and DS always read 1.  The MPIDR field of a DIST_REGS attr is
    ignored (kvm-facts §6)."""
    assert vm.get_device_attr(DIST, regmap.GICD_CTLR) == 0x50
    vm.set_device_attr(DIST, regmap.GICD_CTLR, 0x2)
    assert vm.mmio_read(vm.dist_base + regmap.GICD_CTLR, 4) == 0x52
    assert vm.get_device_attr(DIST, regmap.GICD_CTLR) == 0x52
    # A made-up MPIDR (no such vCPU) in attr[63:32] changes nothing.
    bogus = mpidr_attr(0x7F_0000_7F7F) | regmap.GICD_CTLR
    assert vm.get_device_attr(DIST, bogus) == 0x52
    vm.set_device_attr(DIST, bogus, 0x0)
    assert vm.mmio_read(vm.dist_base + regmap.GICD_CTLR, 4) == 0x50


def test_dist_iidr(vm):
    """kvm-facts §1.3: GICD_IIDR = 0x4B00343B (rev 3) by default; userspace
    may write Revision 2 (0x4B00243B) or 3; any other revision or a change
    of any other field is -EINVAL.  GICR_CTLR advertises IR|CES only from
    revision 3 on (kvm-facts §1.5)."""
    assert vm.get_device_attr(DIST, regmap.GICD_IIDR) == 0x4B00343B
    assert vm.mmio_read(rd_base(vm, 0) + regmap.GICR_CTLR, 4) == 0x6
    vm.set_device_attr(DIST, regmap.GICD_IIDR, 0x4B00243B)
    assert vm.get_device_attr(DIST, regmap.GICD_IIDR) == 0x4B00243B
    assert vm.mmio_read(vm.dist_base + regmap.GICD_IIDR, 4) == 0x4B00243B
    assert vm.mmio_read(rd_base(vm, 2) + regmap.GICR_CTLR, 4) == 0x0
    assert vm.state()["vgic_v3"]["GICD_IIDR"] == 0x4B00243B
    vm.set_device_attr(DIST, regmap.GICD_IIDR, 0x4B00343B)
    assert vm.get_device_attr(DIST, regmap.GICD_IIDR) == 0x4B00343B
    assert vm.mmio_read(rd_base(vm, 2) + regmap.GICR_CTLR, 4) == 0x6


@pytest.mark.parametrize("value", [
    0x4B00143B,        # revision 1 (only a proposal, not merged)
    0x4B00443B,        # revision 4 does not exist
    0x4B00043B,        # revision 0
    0x4B00F43B,        # revision 15
    0x4C00343B,        # ProductID changed
    0x4B00343C,        # Implementer changed
    0x4B01343B,        # Variant changed
    0x0B00343B,        # ProductID cleared
    0xFFFFFFFF,
])
def test_dist_iidr_bad_write_is_einval(vm, value):
    """kvm-facts §1.3: IIDR write rules (-EINVAL, value unchanged)."""
    vm.set_device_attr(DIST, regmap.GICD_IIDR, 0x4B00243B)
    assert kvm_errno(vm.set_device_attr, DIST, regmap.GICD_IIDR, value) == errno.EINVAL
    assert vm.get_device_attr(DIST, regmap.GICD_IIDR) == 0x4B00243B


def test_dist_iidr_guest_write_ignored(vm):
    """kvm-facts §1.3: guest writes of IIDR are ignored."""
    vm.mmio_write(vm.dist_base + regmap.GICD_IIDR, 4, 0x4B00243B)
    assert vm.get_device_attr(DIST, regmap.GICD_IIDR) == 0x4B00343B


def test_dist_typer2(vm):
    """kvm-facts §1.3: GICD_TYPER2 reads 0 without GICv4.1; after init a
    userspace write that differs from it is -EINVAL, an equal one succeeds."""
    assert vm.get_device_attr(DIST, regmap.GICD_TYPER2) == 0
    vm.set_device_attr(DIST, regmap.GICD_TYPER2, 0)
    for value in (1 << 8, 1, 0xFFFFFFFF):
        assert kvm_errno(vm.set_device_attr, DIST, regmap.GICD_TYPER2, value) == errno.EINVAL
    assert vm.get_device_attr(DIST, regmap.GICD_TYPER2) == 0


def test_dist_typer_write_ignored(vm):
    """kvm-facts §2 / §1.3: GICD_TYPER is read-only; a userspace write
    returns success and changes nothing (256 IRQs, no ITS: 0x00480007)."""
    vm.set_device_attr(DIST, regmap.GICD_TYPER, 0x12345678)
    vm.set_device_attr(DIST, regmap.GICD_TYPER, 0)
    assert vm.get_device_attr(DIST, regmap.GICD_TYPER) == 0x00480007
    assert vm.mmio_read(vm.dist_base + regmap.GICD_TYPER, 4) == 0x00480007


def _make_level(vm, first_intid: int) -> None:
    """Guest: ICFGR word covering first_intid..+15 all level (0)."""
    vm.mmio_write(vm.dist_base + regmap.GICD_ICFGR + first_intid // 4, 4, 0)


def test_ispendr_uaccess_read_is_raw_latch(vm):
    """kvm-facts §2: userspace ISPENDR reads the raw pending_latch, not OR'ed
    with the line level; a guest read of a level interrupt reports
    latch | line (kvm-facts §3.2)."""
    _make_level(vm, 32)
    vm.set_irq_level(40, True)
    state = vm.irq(40)
    assert state.config == "level" and state.line_level and not state.pending_latch
    assert vm.mmio_read(vm.dist_base + regmap.GICD_ISPENDR + 4, 4) == 1 << 8
    assert vm.get_device_attr(DIST, regmap.GICD_ISPENDR + 4) == 0
    # Latch it through userspace: now both views see it.
    vm.set_device_attr(DIST, regmap.GICD_ISPENDR + 4, 1 << 8)
    assert vm.irq(40).pending_latch
    assert vm.get_device_attr(DIST, regmap.GICD_ISPENDR + 4) == 1 << 8
    # A 0 bit clears the latch; the guest still sees the high line.
    vm.set_device_attr(DIST, regmap.GICD_ISPENDR + 4, 0)
    assert not vm.irq(40).pending_latch and vm.irq(40).line_level
    assert vm.get_device_attr(DIST, regmap.GICD_ISPENDR + 4) == 0
    assert vm.mmio_read(vm.dist_base + regmap.GICD_ISPENDR + 4, 4) == 1 << 8


def test_ispendr_uaccess_write_assigns(vm):
    """kvm-facts §2: a userspace ISPENDR write assigns the latch for every
    bit: 1 sets, 0 CLEARS (unlike the guest's write-1-to-set), whatever
    the trigger mode."""
    d = vm.dist_base
    vm.mmio_write(d + regmap.GICD_ISPENDR + 4, 4, 1 << 9)       # SPI 41 (edge)
    vm.set_irq_level(42, True)                                   # SPI 42 edge: latches
    assert vm.irq(41).pending_latch and vm.irq(42).pending_latch
    vm.set_device_attr(DIST, regmap.GICD_ISPENDR + 4, (1 << 10) | (1 << 11))
    assert [vm.irq(i).pending_latch for i in (41, 42, 43)] == [False, True, True]
    assert vm.mmio_read(d + regmap.GICD_ISPENDR + 4, 4) == (1 << 10) | (1 << 11)
    # Private interrupts through REDIST_REGS behave the same (GICR_ISPENDR0).
    v2 = vm.vcpus[2]
    vm.mmio_write(sgi_base(vm, 2) + regmap.GICR_ISPENDR0, 4, 1 << 3)
    assert vm.irq(3, vcpu=2).pending_latch
    attr = mpidr_attr(v2.mpidr) | (SGI + regmap.GICR_ISPENDR0)
    assert vm.get_device_attr(REDIST, attr) == 1 << 3
    vm.set_device_attr(REDIST, attr, 1 << 5)
    assert not vm.irq(3, vcpu=2).pending_latch
    assert vm.irq(5, vcpu=2).pending_latch
    assert not vm.irq(5, vcpu=1).pending_latch
    assert vm.mmio_read(sgi_base(vm, 2) + regmap.GICR_ISPENDR0, 4) == 1 << 5


def test_icpendr_uaccess_is_raz_wi(vm):
    """kvm-facts §2: userspace ICPENDR (and GICR_ICPENDR0) is RAZ/WI - the
    latch is carried by ISPENDR alone."""
    d = vm.dist_base
    vm.mmio_write(d + regmap.GICD_ISPENDR + 4, 4, 1 << 9)
    assert vm.mmio_read(d + regmap.GICD_ICPENDR + 4, 4) == 1 << 9   # guest view
    assert vm.get_device_attr(DIST, regmap.GICD_ICPENDR + 4) == 0
    vm.set_device_attr(DIST, regmap.GICD_ICPENDR + 4, 0xFFFFFFFF)
    assert vm.irq(41).pending_latch
    vm.mmio_write(sgi_base(vm, 1) + regmap.GICR_ISPENDR0, 4, 1 << 7)
    attr = mpidr_attr(vm.vcpus[1].mpidr) | (SGI + regmap.GICR_ICPENDR0)
    assert vm.get_device_attr(REDIST, attr) == 0
    vm.set_device_attr(REDIST, attr, 0xFFFFFFFF)
    assert vm.irq(7, vcpu=1).pending_latch


def test_enable_and_active_uaccess(vm):
    """kvm-facts §2: userspace ISENABLER/ICENABLER set/clear `enabled` for
    1 bits, ISACTIVER/ICACTIVER set/clear `active` for 1 bits."""
    d_off = 4      # INTIDs 32..63
    vm.set_device_attr(DIST, regmap.GICD_ISENABLER + d_off, 0b1011)
    assert vm.get_device_attr(DIST, regmap.GICD_ICENABLER + d_off) == 0b1011
    vm.set_device_attr(DIST, regmap.GICD_ICENABLER + d_off, 0b0010)
    assert vm.mmio_read(vm.dist_base + regmap.GICD_ISENABLER + d_off, 4) == 0b1001
    vm.set_device_attr(DIST, regmap.GICD_ISACTIVER + d_off, 0b110)
    vm.set_device_attr(DIST, regmap.GICD_ICACTIVER + d_off, 0b010)
    assert vm.get_device_attr(DIST, regmap.GICD_ISACTIVER + d_off) == 0b100
    assert [vm.irq(32 + i).active for i in range(3)] == [False, False, True]


def test_dist_offset_without_region(vm):
    """kvm-facts §2: a userspace access to an offset without a region (or
    one that fails the 32-bit check: misaligned, unallocated INTID) reads
    0, ignores the write and succeeds."""
    d = vm.dist_base
    vm.mmio_write(d + regmap.GICD_ISENABLER + 4, 4, 0xFFFFFFFF)
    vm.mmio_write(d + regmap.GICD_CTLR, 4, 2)
    before = vm.state()
    for off in (0x14, 0x40, 0xF00, 0xF10, 0x1000, 0x8000, 0xFFCC,
                regmap.GICD_ISENABLER + 4 + 2,       # misaligned
                regmap.GICD_ISENABLER + 256 // 8,    # INTIDs 256.. not allocated
                regmap.GICD_IROUTER + 8 * 256):
        assert vm.get_device_attr(DIST, off) == 0, hex(off)
        assert vm.set_device_attr(DIST, off, 0xFFFFFFFF) is None
        assert vm.set_device_attr(DIST, off, 0) is None
    assert_same_state(before, vm.state())


# ================================================================ REDIST_REGS
def test_redist_typer_halves(vm):
    """kvm-facts §1.5: GICR_TYPER low word = Processor_Number << 8 | Last
    (last redistributor of the legacy region), high word = Aff2.Aff1.Aff0;
    userspace writes are ignored (kvm-facts §2)."""
    for v in vm.vcpus:
        a = mpidr_attr(v.mpidr)
        low = (v.id << 8) | (0x10 if v.id == 3 else 0)
        assert vm.get_device_attr(REDIST, a | regmap.GICR_TYPER) == low
        assert vm.get_device_attr(REDIST, a | (regmap.GICR_TYPER + 4)) == v.id
        vm.set_device_attr(REDIST, a | regmap.GICR_TYPER, 0xFFFFFFFF)
        vm.set_device_attr(REDIST, a | (regmap.GICR_TYPER + 4), 0xFFFFFFFF)
        assert vm.get_device_attr(REDIST, a | regmap.GICR_TYPER) == low
        assert vm.mmio_read(rd_base(vm, v.id) + regmap.GICR_TYPER, 8) == (v.id << 32) | low
        assert vm.get_device_attr(REDIST, a | regmap.GICR_IIDR) == 0x4B00043B
        assert vm.get_device_attr(REDIST, a | regmap.GICR_PIDR2) == 0x3B


def test_redist_sgi_frame(vm):
    """KVM doc: REDIST_REGS offsets 0x10000+ address the SGI_base frame of
    the vCPU named by the MPIDR."""
    v2 = vm.vcpus[2]
    a = mpidr_attr(v2.mpidr)
    vm.set_device_attr(REDIST, a | (SGI + regmap.GICR_IPRIORITYR0 + 4), 0xA0A0A0A0)
    assert vm.mmio_read(sgi_base(vm, 2) + regmap.GICR_IPRIORITYR0 + 4, 4) == 0xA0A0A0A0
    assert vm.mmio_read(sgi_base(vm, 1) + regmap.GICR_IPRIORITYR0 + 4, 4) == 0
    assert vm.irq(5, vcpu=2).priority == 0xA0
    vm.set_device_attr(REDIST, a | (SGI + regmap.GICR_IGROUPR0), 0xFFFF0000)
    assert vm.irq(5, vcpu=2).group == 0 and vm.irq(20, vcpu=2).group == 1
    assert vm.irq(5, vcpu=0).group == 1
    # ICFGR0/1: SGIs edge, PPIs level (kvm-facts §1.6).
    assert vm.get_device_attr(REDIST, a | (SGI + regmap.GICR_ICFGR0)) == 0xAAAAAAAA
    assert vm.get_device_attr(REDIST, a | (SGI + regmap.GICR_ICFGR0 + 4)) == 0
    # ... and read-only, for userspace too (KVM keeps private configs fixed).
    vm.set_device_attr(REDIST, a | (SGI + regmap.GICR_ICFGR0), 0)
    vm.set_device_attr(REDIST, a | (SGI + regmap.GICR_ICFGR0 + 4), 0xAAAAAAAA)
    assert vm.get_device_attr(REDIST, a | (SGI + regmap.GICR_ICFGR0)) == 0xAAAAAAAA
    assert vm.get_device_attr(REDIST, a | (SGI + regmap.GICR_ICFGR0 + 4)) == 0
    assert vm.irq(3, vcpu=2).config == "edge" and vm.irq(20, vcpu=2).config == "level"
    # SGIs reset enabled (kvm-facts §1.6).
    assert vm.get_device_attr(REDIST, a | (SGI + regmap.GICR_ISENABLER0)) == 0x0000FFFF


def test_redist_offset_without_region(vm):
    """kvm-facts §2: no region -> read 0, write ignored, success."""
    a = mpidr_attr(vm.vcpus[1].mpidr)
    before = vm.state()
    for off in (0x18, 0x40, 0x100, SGI + 0x0, SGI + 0x84, SGI + 0xF00, 0x20000):
        assert vm.get_device_attr(REDIST, a | off) == 0, hex(off)
        vm.set_device_attr(REDIST, a | off, 0xFFFFFFFF)
    assert_same_state(before, vm.state())


@pytest.mark.parametrize("mpidr", [0x4, 0x10, 0x0100, 0x01_0000_0000, 0x8000_0104])
def test_unknown_mpidr_is_einval(vm, mpidr):
    """kvm-facts §6: an MPIDR no vCPU has is -EINVAL (REDIST_REGS and
    LEVEL_INFO)."""
    a = mpidr_attr(mpidr)
    assert kvm_errno(vm.get_device_attr, REDIST, a | regmap.GICR_TYPER) == errno.EINVAL
    assert kvm_errno(vm.set_device_attr, REDIST, a | (SGI + regmap.GICR_ISENABLER0), 1) == errno.EINVAL
    assert kvm_errno(vm.get_device_attr, LEVEL, a | 32) == errno.EINVAL
    assert kvm_errno(vm.set_device_attr, LEVEL, a | 32, 1) == errno.EINVAL


# ================================================================ LEVEL_INFO
def test_level_info_reads_level_irqs_only(vm):
    """kvm-facts §6: LEVEL_INFO reads line_level only for level-configured
    IRQs; a write sets line_level regardless of the configuration."""
    _make_level(vm, 32)                       # 32..47 level, 48..63 edge
    vm.set_irq_level(33, True)                # level: line high
    vm.set_irq_level(50, True)                # edge: latches, no line level
    a0 = vm.vcpus[0].mpidr
    assert vm.get_device_attr(LEVEL, level_attr(a0, 32)) == 1 << 1
    vm.set_device_attr(LEVEL, level_attr(a0, 32), (1 << 2) | (1 << 19))
    assert not vm.irq(33).line_level
    assert vm.irq(34).line_level and vm.irq(51).line_level       # 51 is edge
    assert vm.get_device_attr(LEVEL, level_attr(a0, 32)) == 1 << 2
    # A high level line makes the interrupt pending to the guest (§3.2).
    assert vm.mmio_read(vm.dist_base + regmap.GICD_ISPENDR + 4, 4) & (1 << 2)
    # SPIs are shared: any vCPU's MPIDR sees the same block.
    assert vm.get_device_attr(LEVEL, level_attr(vm.vcpus[3].mpidr, 32)) == 1 << 2


def test_level_info_private(vm):
    """kvm-facts §6: SGIs have no line (RAZ/WI); PPIs are level-configured
    (kvm-facts §1.6) and per vCPU."""
    v1 = vm.vcpus[1]
    vm.set_device_attr(LEVEL, level_attr(v1.mpidr, 0), 0xFFFFFFFF)
    assert vm.get_device_attr(LEVEL, level_attr(v1.mpidr, 0)) == 0xFFFF0000
    assert not vm.irq(3, vcpu=1).line_level
    assert vm.irq(20, vcpu=1).line_level
    assert not vm.irq(20, vcpu=0).line_level
    assert vm.get_device_attr(LEVEL, level_attr(vm.vcpus[0].mpidr, 0)) == 0
    vm.set_irq_level(27, True, vcpu=2)
    assert vm.get_device_attr(LEVEL, level_attr(vm.vcpus[2].mpidr, 0)) == 1 << 27


def test_level_info_unallocated_intids(vm):
    """kvm-facts §6: INTIDs >= nr_irqs are RAZ/WI in LEVEL_INFO."""
    a0 = vm.vcpus[0].mpidr
    before = vm.state()
    for intid in (256, 512, 992):
        vm.set_device_attr(LEVEL, level_attr(a0, intid), 0xFFFFFFFF)
        assert vm.get_device_attr(LEVEL, level_attr(a0, intid)) == 0
    assert_same_state(before, vm.state())


@pytest.mark.parametrize("intid", [1, 16, 33, 47, 255, 1023])
def test_level_info_unaligned_intid_is_einval(vm, intid):
    """kvm-facts §6: vINTID must be a multiple of 32, else -EINVAL."""
    a = level_attr(vm.vcpus[0].mpidr, intid)
    assert kvm_errno(vm.get_device_attr, LEVEL, a) == errno.EINVAL
    assert kvm_errno(vm.set_device_attr, LEVEL, a, 0xFFFFFFFF) == errno.EINVAL


@pytest.mark.parametrize("info", [1, 2, 0x3FFFFF])
def test_level_info_other_info_is_einval(vm, info):
    """kvm-facts §6: only info 0 (VGIC_LEVEL_INFO_LINE_LEVEL) exists."""
    a = level_attr(vm.vcpus[0].mpidr, 32, info)
    assert kvm_errno(vm.get_device_attr, LEVEL, a) == errno.EINVAL
    assert kvm_errno(vm.set_device_attr, LEVEL, a, 1) == errno.EINVAL
    assert not vm.irq(32).line_level


# ================================================================ has_attr
@pytest.mark.parametrize("offset", [0x0, 0x4, 0x8, 0xC, 0x10, 0x80, 0x84, 0x100, 0x104, 0x200,
                                    0x400, 0x420, 0x800, 0xC08, 0xD00, 0x6100, 0x6104, 0x67F8,
                                    0xFFD0, 0xFFE8, 0xFFFC])
def test_has_attr_dist_regs_true(vm, offset):
    """kvm-facts §2: has_attr is 0 (True) for a 4-byte aligned offset that
    resolves to a region."""
    assert vm.has_device_attr(DIST, offset) is True


@pytest.mark.parametrize("offset", [0x1, 0x2, 0x3, 0x102, 0x6102, 0xFFEA,    # misaligned
                                    0x14, 0x40, 0xE00, 0xF00, 0x1000, 0x8000, 0xFFCC,
                                    0x10000, 0x12345678])
def test_has_attr_dist_regs_false(vm, offset):
    """kvm-facts §2: misaligned or no region -> -ENXIO (False)."""
    assert vm.has_device_attr(DIST, offset) is False


@pytest.mark.parametrize("offset", [regmap.GICD_ISENABLER + 256 // 8,
                                    regmap.GICD_IPRIORITYR + 256,
                                    regmap.GICD_IROUTER + 8 * 256,
                                    regmap.GICD_ICFGR + 2 * 256 // 8,
                                    regmap.GICD_ITARGETSR + 256,        # bpi 8 (§1.2)
                                    regmap.GICD_IGRPMODR + 256 // 8],   # bpi 1 (§1.2)
                         ids=["ISENABLER", "IPRIORITYR", "IROUTER", "ICFGR", "ITARGETSR",
                              "IGRPMODR"])
def test_has_attr_dist_regs_unallocated_intid_false(vm, offset):
    """KVM vgic_v3_has_attr_regs() looks the offset up with
    vgic_get_mmio_region(), which applies check_region() - including the
    "first INTID < nr_irqs" test of kvm-facts §2 step 3 - so the register
    of an unallocated INTID is -ENXIO (False).  kvm-facts §2 only says
    "resolve to a region"; the kernel source decides."""
    assert vm.has_device_attr(DIST, offset) is False


def test_has_attr_other_groups(vm):
    """kvm-facts §6 / KVM doc: which attributes exist."""
    a1 = mpidr_attr(vm.vcpus[1].mpidr)
    assert vm.has_device_attr(REDIST, a1 | regmap.GICR_TYPER) is True
    assert vm.has_device_attr(REDIST, a1 | (SGI + regmap.GICR_ISENABLER0)) is True
    assert vm.has_device_attr(REDIST, a1 | (SGI + regmap.GICR_ICFGR0 + 4)) is True
    for off in (0x18, 0x2, SGI + 0x0, SGI + 0x102, 0x20000):
        assert vm.has_device_attr(REDIST, a1 | off) is False, hex(off)
    assert vm.has_device_attr(NR_IRQS, 0) is True
    assert vm.has_device_attr(CTRL, uapi.KVM_DEV_ARM_VGIC_CTRL_INIT) is True
    assert vm.has_device_attr(CTRL, uapi.KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES) is True
    assert vm.has_device_attr(CTRL, uapi.KVM_DEV_ARM_ITS_SAVE_TABLES) is False
    for attr in (uapi.KVM_VGIC_V3_ADDR_TYPE_DIST, uapi.KVM_VGIC_V3_ADDR_TYPE_REDIST,
                 uapi.KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION):
        assert vm.has_device_attr(ADDR, attr) is True
    for attr in (uapi.KVM_VGIC_V2_ADDR_TYPE_DIST, uapi.KVM_VGIC_ITS_ADDR_TYPE):
        assert vm.has_device_attr(ADDR, attr) is False
    assert vm.has_device_attr(LEVEL, level_attr(vm.vcpus[0].mpidr, 32)) is True
    assert vm.has_device_attr(LEVEL, level_attr(vm.vcpus[0].mpidr, 32, 1)) is False


@pytest.mark.parametrize("group", [uapi.KVM_DEV_ARM_VGIC_GRP_CPU_REGS,
                                   uapi.KVM_DEV_ARM_VGIC_GRP_ITS_REGS, 0x40, 0x1234])
def test_unknown_group(vm, group):
    """kvm-facts §6: a group the vGICv3 device does not have (CPU_REGS is
    GICv2-only, ITS_REGS belongs to the ITS device) is -ENXIO on get and
    set, and has_attr says no."""
    assert kvm_errno(vm.get_device_attr, group, 0) == errno.ENXIO
    assert kvm_errno(vm.set_device_attr, group, 0, 0) == errno.ENXIO
    assert vm.has_device_attr(group, 0) is False


# ================================================================ save/restore
def scramble(vm: vgic.VM) -> None:
    """Give every kind of state a non-reset value through guest MMIO and
    the interrupt lines (kvm-facts §1.2-§1.6, §3.3)."""
    d = vm.dist_base
    w = vm.mmio_write
    w(d + regmap.GICD_CTLR, 4, 0x2)
    # SPIs 32..63 level, 64..95 edge except a few, the rest default (edge).
    w(d + regmap.GICD_ICFGR + 8, 4, 0)
    w(d + regmap.GICD_ICFGR + 12, 4, 0)
    w(d + regmap.GICD_ICFGR + 16, 4, 0xA0A0A0A0)
    w(d + regmap.GICD_ISENABLER + 4, 4, 0xF0F0F0F0)
    w(d + regmap.GICD_ISENABLER + 12, 4, 0x12345678)
    w(d + regmap.GICD_ISPENDR + 8, 4, 0x0000FFFF)
    w(d + regmap.GICD_ISPENDR + 4, 4, 0x00000003)     # latch on level SPIs 32, 33
    w(d + regmap.GICD_ISACTIVER + 8, 4, 0x00FF00FF)
    w(d + regmap.GICD_ISACTIVER + 28, 4, 0x80000001)
    w(d + regmap.GICD_IGROUPR + 4, 4, 0x0F0F0F0F)
    w(d + regmap.GICD_IGROUPR + 24, 4, 0)
    for intid in range(32, 256):
        w(d + regmap.GICD_IPRIORITYR + intid, 1, (intid * 37) & 0xFF)
        if intid % 3 == 0:
            # vCPUs 1..3 and a non-existent affinity (1.0.5) in turn.
            route = (1, 2, 3, 0x010005)[(intid // 3) % 4]
            w(d + regmap.GICD_IROUTER + 8 * intid, 8, route)
    # Line levels only on level-configured interrupts (LEVEL_INFO cannot
    # save the line of an edge interrupt, kvm-facts §6).
    for intid in (33, 40, 47, 60):
        vm.set_irq_level(intid, True)
    for v in vm.vcpus:
        sgi = sgi_base(vm, v.id)
        rd = rd_base(vm, v.id)
        w(sgi + regmap.GICR_ICENABLER0, 4, 0x00000F00 << v.id)
        w(sgi + regmap.GICR_ISENABLER0, 4, 0x00F00000 << v.id)
        w(sgi + regmap.GICR_ISPENDR0, 4, 0x00010001 << (2 * v.id))
        w(sgi + regmap.GICR_ISACTIVER0, 4, 0x80000040 >> v.id)
        w(sgi + regmap.GICR_IGROUPR0, 4, 0xFFFFFFFF ^ (0x3 << (4 * v.id)))
        for i in range(32):
            w(sgi + regmap.GICR_IPRIORITYR0 + i, 1, (i * 8 + v.id * 40) & 0xFF)
        vm.set_irq_level(20 + v.id, True, vcpu=v.id)
        vm.set_irq_level(27, True, vcpu=v.id)
        # PENDBASER: PA and cacheability, PTZ clear (PTZ is write-only,
        # kvm-facts §5.6, so a save cannot see it).
        w(rd + regmap.GICR_PENDBASER, 8, 0x0000_0000_4000_0000 | (0x10000 * (v.id + 1)) | 0x380)
    w(rd_base(vm, 0) + regmap.GICR_PROPBASER, 8, 0x0000_0000_4100_0000 | 0x380 | 0xF)
    vm.set_device_attr(DIST, regmap.GICD_IIDR, 0x4B00243B)


CLEAR_REGISTERS = {"GICD_ICENABLER", "GICD_ICACTIVER", "GICD_ICPENDR",
                   "GICR_ICENABLER0", "GICR_ICACTIVER0", "GICR_ICPENDR0"}


def save_registers(vm: vgic.VM):
    """Read every 32-bit register of every region (vgic.regmap tables)."""
    regs = []     # (group, attr, region name, value)
    for region in regmap.GICD_REGIONS:
        for off in range(region.offset, region.offset + region.length, 4):
            regs.append((DIST, off, region.name, vm.get_device_attr(DIST, off)))
    for v in vm.vcpus:
        a = mpidr_attr(v.mpidr)
        for base, table in ((0, regmap.GICR_RD_REGIONS), (SGI, regmap.GICR_SGI_REGIONS)):
            for region in table:
                for off in range(region.offset, region.offset + region.length, 4):
                    attr = a | (base + off)
                    regs.append((REDIST, attr, region.name, vm.get_device_attr(REDIST, attr)))
    levels = []
    for v in vm.vcpus:
        attr = level_attr(v.mpidr, 0)
        levels.append((attr, vm.get_device_attr(LEVEL, attr)))
    for intid in range(32, 1024, 32):
        attr = level_attr(vm.vcpus[0].mpidr, intid)
        levels.append((attr, vm.get_device_attr(LEVEL, attr)))
    return regs, levels


def restore_registers(vm: vgic.VM, regs, levels) -> None:
    """KVM's recommended order (kvm-facts §6): GICD_IIDR first; then, as
    QEMU does, every clear-register written all-ones so the set-registers
    can restore zero bits; then every other register; then line levels
    (KVM accepts line levels and pending latches in either order)."""
    (iidr,) = [value for group, attr, name, value in regs
               if group == DIST and attr == regmap.GICD_IIDR]
    vm.set_device_attr(DIST, regmap.GICD_IIDR, iidr)
    for group, attr, name, _ in regs:
        if name in CLEAR_REGISTERS:
            vm.set_device_attr(group, attr, 0xFFFFFFFF)
    for group, attr, name, value in regs:
        if name not in CLEAR_REGISTERS:
            vm.set_device_attr(group, attr, value)
    for attr, value in levels:
        vm.set_device_attr(LEVEL, attr, value)


def test_save_restore_round_trip():
    """KVM doc (save/restore via DIST_REGS, REDIST_REGS, LEVEL_INFO): what
    userspace reads from one VM, written into a fresh one in the
    recommended order, reproduces the whole distributor/redistributor
    state."""
    src = vgic.VM(nr_vcpus=4, nr_irqs=256)
    scramble(src)
    regs, levels = save_registers(src)

    # Spot checks that the saved values are the documented ones.
    saved = {(g, a): v for g, a, _n, v in regs}
    assert saved[(DIST, regmap.GICD_CTLR)] == 0x52
    assert saved[(DIST, regmap.GICD_IIDR)] == 0x4B00243B
    assert saved[(DIST, regmap.GICD_TYPER)] == 0x00480007
    assert saved[(DIST, regmap.GICD_STATUSR)] == 0xFFFFFFFF
    assert saved[(DIST, regmap.GICD_ISPENDR + 4)] == 0x3           # raw latch only
    a3 = mpidr_attr(src.vcpus[3].mpidr)
    assert saved[(REDIST, a3 | regmap.GICR_TYPER)] == 0x310
    assert saved[(REDIST, a3 | regmap.GICR_CTLR)] == 0x0           # rev 2: no IR/CES
    assert dict(levels)[level_attr(src.vcpus[0].mpidr, 32)] == (1 << 1) | (1 << 8) | (1 << 15) | (1 << 28)
    assert dict(levels)[level_attr(src.vcpus[2].mpidr, 0)] == (1 << 22) | (1 << 27)

    dst = vgic.VM(nr_vcpus=4, nr_irqs=256)
    fresh = dst.state()
    restore_registers(dst, regs, levels)
    # The queue-order stamps are KVM's ap_list positions, which the device
    # ABI does not carry (nor does KVM's): they are not part of a restore.
    a, b = drop(src.state(), STAMPS), drop(dst.state(), STAMPS)
    assert_same_state(a, b)
    # Non-vacuous: the restored state is far from reset.
    g, g0 = b["vgic_v3"], fresh["vgic_v3"]
    assert g["spi"]["enabled"] != g0["spi"]["enabled"]
    assert g["spi"]["priority"] != g0["spi"]["priority"]
    assert g["spi"]["target_vcpu"] != g0["spi"]["target_vcpu"]
    assert g["GICD_IIDR"] >> regmap.IIDR_REVISION_SHIFT & 0xF == 2
    assert g["GICD_CTLR"] & regmap.GICD_CTLR_ENABLE_G1
    # And the guest sees the same registers in both VMs.
    for off in (regmap.GICD_CTLR, regmap.GICD_ISENABLER + 4, regmap.GICD_ISPENDR + 4,
                regmap.GICD_ICFGR + 16, regmap.GICD_IROUTER + 8 * 33, regmap.GICD_IPRIORITYR + 100):
        assert src.mmio_read(src.dist_base + off, 4) == dst.mmio_read(dst.dist_base + off, 4)


def test_has_attr_redist_unknown_mpidr_is_einval(vm):
    """vgic_v3_has_attr_regs parses the attribute first: an MPIDR no vCPU
    has is -EINVAL, not -ENXIO (kvm-facts §6, vgic_v3_parse_attr)."""
    import errno

    import pytest

    import vgic
    from vgic import uapi
    with pytest.raises(vgic.KvmError) as exc:
        vm.has_device_attr(uapi.KVM_DEV_ARM_VGIC_GRP_REDIST_REGS, (0x77 << 32) | 0x10100)
    assert exc.value.errno == errno.EINVAL
    attr = uapi.mpidr_to_attr(vm.vcpus[1].mpidr) | 0x10100
    assert vm.has_device_attr(uapi.KVM_DEV_ARM_VGIC_GRP_REDIST_REGS, attr) is True
