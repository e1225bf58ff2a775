"""Register fidelity of the GICv3 redistributors (RD_base and SGI_base frames).

Expected values come from kvm-facts.md §1.5, §1.6, §2, §5.6 (Linux
vgic-mmio-v3.c / vgic-its.c sanitisers) and the Arm GICv3 specification
IHI 0069 (GICR_PROPBASER / GICR_PENDBASER field layout) -- never from running
the model.
"""
import pytest

import vgic
from vgic import regmap as R

ALL = 0xFFFF_FFFF
ALL64 = (1 << 64) - 1


# ----------------------------------------------------------------- helpers
def rd_base(vm, c):
    return vm.redist_base + c * 0x20000


def r_rd(vm, c, off, size=4, vcpu=None):
    """Load from vCPU c's RD_base frame, by default performed by vCPU c."""
    return vm.mmio_read(rd_base(vm, c) + off, size, c if vcpu is None else vcpu)


def r_wr(vm, c, off, value, size=4, vcpu=None):
    vm.mmio_write(rd_base(vm, c) + off, size, value, c if vcpu is None else vcpu)


def s_rd(vm, c, off, size=4, vcpu=None):
    """Load from vCPU c's SGI_base frame."""
    return vm.mmio_read(rd_base(vm, c) + 0x10000 + off, size, c if vcpu is None else vcpu)


def s_wr(vm, c, off, value, size=4, vcpu=None):
    vm.mmio_write(rd_base(vm, c) + 0x10000 + off, size, value, c if vcpu is None else vcpu)


def private_state(vm, c):
    return [vm.irq(i, vcpu=c) for i in range(32)]


GICR_OFFSETS = [
    ("GICR_CTLR", 0x0000), ("GICR_IIDR", 0x0004), ("GICR_TYPER", 0x0008),
    ("GICR_STATUSR", 0x0010), ("GICR_WAKER", 0x0014), ("GICR_PROPBASER", 0x0070),
    ("GICR_PENDBASER", 0x0078), ("GICR_INVLPIR", 0x00A0), ("GICR_INVALLR", 0x00B0),
    ("GICR_SYNCR", 0x00C0),
    # SGI_base frame offsets (from SGI_base = RD_base + 0x10000)
    ("GICR_IGROUPR0", 0x0080), ("GICR_ISENABLER0", 0x0100), ("GICR_ICENABLER0", 0x0180),
    ("GICR_ISPENDR0", 0x0200), ("GICR_ICPENDR0", 0x0280), ("GICR_ISACTIVER0", 0x0300),
    ("GICR_ICACTIVER0", 0x0380), ("GICR_IPRIORITYR0", 0x0400), ("GICR_ICFGR0", 0x0C00),
    ("GICR_IGRPMODR0", 0x0D00), ("GICR_NSACR", 0x0E00),
]


@pytest.mark.parametrize("name, offset", GICR_OFFSETS)
def test_regmap_offsets(name, offset):
    """kvm-facts §1.5/§1.6 tables: the regmap constants used to address the
    redistributor registers here are the architectural offsets."""
    assert getattr(R, name) == offset


# ====================================================================== RD_base
@pytest.mark.parametrize("c", range(4))
def test_gicr_ctlr_reads_ces_ir(vm, c):
    """kvm-facts §1.5: GICR_CTLR reads its internal value (0 at reset) plus
    CES (bit 1) | IR (bit 2) at IIDR revision >= 3 -> 0x6."""
    assert r_rd(vm, c, R.GICR_CTLR) == 0x6


@pytest.mark.parametrize("value", [0x1, 0x0, 0x9, ALL])
def test_gicr_ctlr_writes_ignored_without_its(vm, value):
    """kvm-facts §1.5: GICR_CTLR writes are ignored if the VM has no ITS
    (EnableLPIs cannot be set)."""
    r_wr(vm, 1, R.GICR_CTLR, value)
    assert r_rd(vm, 1, R.GICR_CTLR) == 0x6


@pytest.mark.parametrize("value", [0, ALL, 0x4B00343B])
def test_gicr_iidr(vm, value):
    """kvm-facts §1.5: GICR_IIDR is RO 0x4B00043B (no revision field)."""
    assert r_rd(vm, 0, R.GICR_IIDR) == 0x4B00043B
    r_wr(vm, 0, R.GICR_IIDR, value)
    assert r_rd(vm, 0, R.GICR_IIDR) == 0x4B00043B


@pytest.mark.parametrize("c, low, high", [
    (0, 0x00000000, 0x0),
    (1, 0x00000100, 0x1),
    (2, 0x00000200, 0x2),
    (3, 0x00000310, 0x3),   # Last (bit 4) only on the last vCPU
])
def test_gicr_typer_4_vcpus(vm, c, low, high):
    """kvm-facts §1.5: GICR_TYPER: PLPIS 0 (no ITS), Processor_Number [23:8] =
    vCPU index, Last (bit 4) only for the last redistributor, Affinity
    [63:32] = MPIDR Aff2.Aff1.Aff0; 64-bit or 32-bit halves."""
    assert r_rd(vm, c, R.GICR_TYPER, 8) == (high << 32) | low
    assert r_rd(vm, c, R.GICR_TYPER, 4) == low
    assert r_rd(vm, c, R.GICR_TYPER + 4, 4) == high


def test_gicr_typer_plpis_clear(vm):
    """kvm-facts §1.5: PLPIS (bit 0) is 1 only with an ITS; VLPIS, DirectLPI,
    DPGS, CommonLPIAff are 0."""
    for c in range(4):
        assert r_rd(vm, c, R.GICR_TYPER) & 0x0300_003F == (0x10 if c == 3 else 0)


@pytest.mark.parametrize("value, size, off", [
    (ALL64, 8, 0), (ALL, 4, 0), (ALL, 4, 4), (0, 8, 0), (0x12345678, 4, 4),
])
def test_gicr_typer_read_only(vm, value, size, off):
    """kvm-facts §1.5: GICR_TYPER is read-only."""
    r_wr(vm, 2, R.GICR_TYPER + off, value, size)
    assert r_rd(vm, 2, R.GICR_TYPER, 8) == (0x2 << 32) | 0x200


def test_gicr_typer_single_vcpu_is_last(vm1):
    """kvm-facts §1.5: the only redistributor is the last one."""
    assert r_rd(vm1, 0, R.GICR_TYPER, 8) == 0x10


@pytest.fixture(scope="module")
def vm40():
    return vgic.VM(nr_vcpus=40, nr_irqs=64)


@pytest.mark.parametrize("c, low, high", [
    (0, 0x0000, 0x0000),
    (15, 0x0F00, 0x000F),
    (16, 0x1000, 0x0100),
    (17, 0x1100, 0x0101),
    (31, 0x1F00, 0x010F),
    (32, 0x2000, 0x0200),
    (38, 0x2600, 0x0206),
    (39, 0x2710, 0x0207),
])
def test_gicr_typer_40_vcpus(vm40, c, low, high):
    """kvm-facts §1.5: with 40 vCPUs, Affinity follows KVM's default MPIDR
    (Aff0 = id & 0xF, Aff1 = (id >> 4) & 0xFF) -- vCPU 17 -> 0x0101 --,
    Processor_Number = index, Last only on vCPU 39."""
    assert r_rd(vm40, c, R.GICR_TYPER + 4) == high
    assert r_rd(vm40, c, R.GICR_TYPER) == low
    assert r_rd(vm40, c, R.GICR_TYPER, 8) == (high << 32) | low


@pytest.mark.parametrize("c, mpidr", [
    (0, 0x80000000), (1, 0x80000001), (15, 0x8000000F), (16, 0x80000100),
    (17, 0x80000101), (35, 0x80000203), (39, 0x80000207),
])
def test_default_mpidr_40_vcpus(vm40, c, mpidr):
    """kvm-facts §1.5 (reset_mpidr): Aff0 = id & 0xF, Aff1 = (id >> 4) & 0xFF,
    Aff2 = (id >> 12) & 0xFF, bit 31 RES1."""
    assert vm40.vcpus[c].mpidr == mpidr


@pytest.mark.parametrize("vcpu_id, mpidr", [
    (0x1234, 0x80012304), (0xFFFFF, 0x80FFFF0F), (511, 0x80001F0F), (0x100000, 0x80000000),
])
def test_default_mpidr_formula(vcpu_id, mpidr):
    """kvm-facts §1.5: the same rule for large ids (Aff2 = id[19:12], higher
    bits dropped)."""
    assert vgic.default_mpidr(vcpu_id) == mpidr


@pytest.mark.parametrize("off", [R.GICR_STATUSR, R.GICR_WAKER])
@pytest.mark.parametrize("value", [ALL, 0x2, 0x6])
def test_statusr_waker_raz_wi(vm, off, value):
    """kvm-facts §1.5: GICR_STATUSR and GICR_WAKER are RAZ/WI (ProcessorSleep /
    ChildrenAsleep always 0)."""
    assert r_rd(vm, 0, off) == 0
    r_wr(vm, 0, off, value)
    assert r_rd(vm, 0, off) == 0


# -------------------------------------------------------------- PROPBASER
def test_propbaser_reset_zero_without_its(vm):
    """kvm-facts §5.1/§5.6: PROPBASER is only preset (0x580) by ITS creation;
    without an ITS it resets to 0."""
    for c in range(4):
        assert r_rd(vm, c, R.GICR_PROPBASER, 8) == 0


# IHI 0069 §12.11.29: IDbits [4:0], InnerCache [9:7], Shareability [11:10],
# PA [51:12], OuterCache [58:56].  Sanitising per kvm-facts §5.1 / §5.6.
@pytest.mark.parametrize("written, expected", [
    # already sane: RaWaWb inner, inner-shareable, IDbits 15
    (0x0000_0000_4000_078F, 0x0000_0000_4000_078F),
    # outer-shareable (2) -> inner-shareable (1)
    (0x0000_0000_4000_0B8F, 0x0000_0000_4000_078F),
    # non-shareable (0) is kept
    (0x0000_0000_4000_038F, 0x0000_0000_4000_038F),
    # inner nC (1) -> RaWb (3)
    (0x0000_0000_4000_048F, 0x0000_0000_4000_058F),
    # inner nCnB (0) -> RaWb (3)
    (0x0000_0000_4000_040F, 0x0000_0000_4000_058F),
    # inner RaWt (2), WaWb (5) kept
    (0x0000_0000_4000_050F, 0x0000_0000_4000_050F),
    (0x0000_0000_4000_068F, 0x0000_0000_4000_068F),
    # outer SameAsInner (0) and nC (1) kept; anything else -> 0
    (0x0100_0000_4000_078F, 0x0100_0000_4000_078F),
    (0x0200_0000_4000_078F, 0x0000_0000_4000_078F),
    (0x0300_0000_4000_078F, 0x0000_0000_4000_078F),
    (0x0700_0000_4000_078F, 0x0000_0000_4000_078F),
    # RES0: 63:59, 55:52, 6:5 cleared
    (0xF8F0_0000_4000_07EF, 0x0000_0000_4000_078F),
    # PA [51:12] fully kept
    (0x000F_FFFF_FFFF_F78F, 0x000F_FFFF_FFFF_F78F),
    # all ones: RES0 gone, outer 7 -> 0, shareability 3 kept, inner 7 kept
    (ALL64, 0x000F_FFFF_FFFF_FF9F),
    # all zeros: inner nCnB -> RaWb
    (0x0, 0x180),
])
def test_propbaser_sanitised(vm, written, expected):
    """kvm-facts §5.6 (same sanitising as GITS_BASER, §5.1): outer-shareable
    becomes inner-shareable; inner nCnB/nC become RaWb (3); outer other than
    SameAsInner/nC becomes SameAsInner; RES0 bits cleared."""
    r_wr(vm, 0, R.GICR_PROPBASER, written, 8)
    assert r_rd(vm, 0, R.GICR_PROPBASER, 8) == expected


def test_propbaser_32bit_halves(vm):
    """kvm-facts §5.6: 32-bit writes update one half; 32-bit reads give one half."""
    r_wr(vm, 0, R.GICR_PROPBASER, 0x4000_078F)
    assert r_rd(vm, 0, R.GICR_PROPBASER, 8) == 0x4000_078F
    r_wr(vm, 0, R.GICR_PROPBASER + 4, 0x0100_0012)   # outer nC, PA[51:32] = 0x12
    assert r_rd(vm, 0, R.GICR_PROPBASER, 8) == 0x0100_0012_4000_078F
    assert r_rd(vm, 0, R.GICR_PROPBASER + 4) == 0x0100_0012
    assert r_rd(vm, 0, R.GICR_PROPBASER) == 0x4000_078F
    # a high-half write is sanitised too (RES0 63:59 and 55:52, outer 7 -> 0)
    r_wr(vm, 0, R.GICR_PROPBASER + 4, ALL)
    assert r_rd(vm, 0, R.GICR_PROPBASER + 4) == 0x000F_FFFF
    # a low-half write keeps the high half
    r_wr(vm, 0, R.GICR_PROPBASER, 0x1234_5B8F)        # outer-shareable -> inner
    assert r_rd(vm, 0, R.GICR_PROPBASER, 8) == 0x000F_FFFF_1234_578F


def test_propbaser_shared_by_all_redistributors(vm):
    """kvm-facts §1.5/§5.6: PROPBASER is one per-VM value: a write through
    vCPU 2's redistributor is read back through every redistributor."""
    r_wr(vm, 2, R.GICR_PROPBASER, 0x4000_078F, 8)
    assert [r_rd(vm, c, R.GICR_PROPBASER, 8) for c in range(4)] == [0x4000_078F] * 4


# -------------------------------------------------------------- PENDBASER
def test_pendbaser_reset(vm):
    """kvm-facts §5.6: PENDBASER resets to 0x580 (RaWb inner, inner-shareable)."""
    for c in range(4):
        assert r_rd(vm, c, R.GICR_PENDBASER, 8) == 0x580
        assert r_rd(vm, c, R.GICR_PENDBASER) == 0x580
        assert r_rd(vm, c, R.GICR_PENDBASER + 4) == 0


# IHI 0069 §12.11.31: InnerCache [9:7], Shareability [11:10], PA [51:16],
# OuterCache [58:56], PTZ 62.  RES0 = 63, 61:59, 55:52, 15:12, 6:0.
@pytest.mark.parametrize("written, expected", [
    (0x0000_0000_4001_0780, 0x0000_0000_4001_0780),
    # PTZ (bit 62) is stored but reads 0
    (0x4000_0000_4001_0780, 0x0000_0000_4001_0780),
    # outer-shareable -> inner-shareable
    (0x0000_0000_4001_0B80, 0x0000_0000_4001_0780),
    # inner nC / nCnB -> RaWb
    (0x0000_0000_4001_0480, 0x0000_0000_4001_0580),
    (0x0000_0000_4001_0400, 0x0000_0000_4001_0580),
    # outer nC kept, outer WaWb -> SameAsInner
    (0x0100_0000_4001_0780, 0x0100_0000_4001_0780),
    (0x0500_0000_4001_0780, 0x0000_0000_4001_0780),
    # RES0 cleared: 63, 61:59, 55:52, 15:12, 6:0
    (0xB8F0_0000_4001_F7FF, 0x0000_0000_4001_0780),
    # PA [51:16] kept
    (0x000F_FFFF_FFFF_0580, 0x000F_FFFF_FFFF_0580),
    (ALL64, 0x000F_FFFF_FFFF_0F80),
    (0x0, 0x180),
])
def test_pendbaser_sanitised(vm, written, expected):
    """kvm-facts §5.6: PENDBASER gets the same sanitising as PROPBASER, its own
    RES0 mask, and PTZ always reads 0."""
    r_wr(vm, 1, R.GICR_PENDBASER, written, 8)
    assert r_rd(vm, 1, R.GICR_PENDBASER, 8) == expected


def test_pendbaser_32bit_halves(vm):
    """kvm-facts §5.6: 32-bit half writes update one half."""
    r_wr(vm, 0, R.GICR_PENDBASER, 0x4001_0780)
    r_wr(vm, 0, R.GICR_PENDBASER + 4, 0x4100_0003)    # PTZ, outer nC, PA[51:32] = 3
    assert r_rd(vm, 0, R.GICR_PENDBASER + 4) == 0x0100_0003
    assert r_rd(vm, 0, R.GICR_PENDBASER, 8) == 0x0100_0003_4001_0780
    r_wr(vm, 0, R.GICR_PENDBASER, 0x5555_0B80)
    assert r_rd(vm, 0, R.GICR_PENDBASER, 8) == 0x0100_0003_5555_0780


def test_pendbaser_per_vcpu(vm):
    """kvm-facts §1.5/§5.6: PENDBASER is per vCPU."""
    r_wr(vm, 1, R.GICR_PENDBASER, 0x4001_0780, 8)
    assert r_rd(vm, 1, R.GICR_PENDBASER, 8) == 0x4001_0780
    assert [r_rd(vm, c, R.GICR_PENDBASER, 8) for c in (0, 2, 3)] == [0x580] * 3


@pytest.mark.parametrize("off, size", [
    (R.GICR_INVLPIR, 8), (R.GICR_INVLPIR, 4), (R.GICR_INVLPIR + 4, 4),
    (R.GICR_INVALLR, 8), (R.GICR_INVALLR, 4), (R.GICR_INVALLR + 4, 4),
    (R.GICR_SYNCR, 4),
])
def test_invlpir_invallr_syncr_read_zero(vm, off, size):
    """kvm-facts §1.5: INVLPIR/INVALLR are RAZ; SYNCR reads 0 when no
    invalidation is in progress."""
    assert r_rd(vm, 0, off, size) == 0
    r_wr(vm, 0, off, 8192, size)
    assert r_rd(vm, 0, off, size) == 0
    assert r_rd(vm, 0, R.GICR_SYNCR) == 0


@pytest.mark.parametrize("off", range(0xFFD0, 0x10000, 4))
def test_gicr_id_registers(vm, off):
    """kvm-facts §1.5: GICR PIDR2 (0xFFE8) = 0x3B, other ID registers 0."""
    expected = 0x3B if off == 0xFFE8 else 0
    assert r_rd(vm, 3, off) == expected
    r_wr(vm, 3, off, ALL)
    assert r_rd(vm, 3, off) == expected


@pytest.mark.parametrize("off", [0x18, 0x20, 0x40, 0x48, 0x80, 0xC8, 0x100, 0x1000, 0x8000, 0xFFCC])
def test_rd_base_unknown_raz_wi(vm, off):
    """kvm-facts §2: offsets with no region read 0 and ignore writes."""
    r_wr(vm, 0, off, ALL)
    assert r_rd(vm, 0, off) == 0


@pytest.mark.parametrize("off, size", [
    (R.GICR_CTLR, 8), (R.GICR_CTLR, 2), (R.GICR_CTLR, 1), (R.GICR_IIDR, 1), (R.GICR_IIDR, 2),
    (R.GICR_TYPER, 1), (R.GICR_TYPER, 2), (R.GICR_TYPER + 2, 4), (R.GICR_TYPER + 4, 8),
    (R.GICR_PENDBASER, 2), (R.GICR_PENDBASER + 4, 8), (R.GICR_PENDBASER + 1, 1),
    (0xFFE8, 1), (0xFFE8, 8),
])
def test_rd_base_bad_width_reads_zero(vm, off, size):
    """kvm-facts §2: bad width or misalignment reads 0 (GICR_TYPER and
    PENDBASER allow 32/64 only; CTLR/IIDR/ID registers 32 only)."""
    assert r_rd(vm, 3, off, size) == 0


def test_rd_base_bad_width_writes_ignored(vm):
    """kvm-facts §2: bad-width or misaligned writes are ignored."""
    r_wr(vm, 0, R.GICR_PENDBASER, 0x0380, 2)
    r_wr(vm, 0, R.GICR_PENDBASER + 4, 0x4001_0780, 8)
    r_wr(vm, 0, R.GICR_PENDBASER + 2, 0x4001_0780, 4)
    r_wr(vm, 0, R.GICR_PENDBASER, 0x07, 1)
    assert r_rd(vm, 0, R.GICR_PENDBASER, 8) == 0x580
    r_wr(vm, 0, R.GICR_PROPBASER, 0x078F, 2)
    r_wr(vm, 0, R.GICR_PROPBASER, 0x8F, 1)
    r_wr(vm, 0, R.GICR_PROPBASER + 4, 0x4000_078F, 8)
    assert r_rd(vm, 0, R.GICR_PROPBASER, 8) == 0


# ===================================================================== SGI_base
def test_igroupr0(vm):
    """kvm-facts §1.6: GICR_IGROUPR0 R/W; private IRQs reset Group 1."""
    assert s_rd(vm, 0, R.GICR_IGROUPR0) == ALL
    s_wr(vm, 0, R.GICR_IGROUPR0, 0x0001_FFFE)
    assert s_rd(vm, 0, R.GICR_IGROUPR0) == 0x0001_FFFE
    assert [vm.irq(i, vcpu=0).group for i in (0, 1, 15, 16, 17, 31)] == [0, 1, 1, 1, 0, 0]


def test_isenabler0_reset(vm):
    """kvm-facts §1.6: SGIs reset enabled, PPIs disabled -> 0x0000FFFF."""
    for c in range(4):
        assert s_rd(vm, c, R.GICR_ISENABLER0) == 0x0000_FFFF
        assert s_rd(vm, c, R.GICR_ICENABLER0) == 0x0000_FFFF
        assert vm.irq(3, vcpu=c).enabled and not vm.irq(20, vcpu=c).enabled


def test_isenabler0_icenabler0(vm):
    """kvm-facts §1.6/§1.2: GICR_ISENABLER0 W1S, ICENABLER0 W1C, both read enabled."""
    s_wr(vm, 1, R.GICR_ISENABLER0, 0x0808_0000)       # PPIs 19, 27
    assert s_rd(vm, 1, R.GICR_ISENABLER0) == 0x0808_FFFF
    s_wr(vm, 1, R.GICR_ICENABLER0, 0x0800_0001)       # PPI 27, SGI 0
    assert s_rd(vm, 1, R.GICR_ICENABLER0) == 0x0008_FFFE
    assert vm.irq(19, vcpu=1).enabled and not vm.irq(27, vcpu=1).enabled
    assert not vm.irq(0, vcpu=1).enabled
    s_wr(vm, 1, R.GICR_ISENABLER0, 0)
    s_wr(vm, 1, R.GICR_ICENABLER0, 0)
    assert s_rd(vm, 1, R.GICR_ISENABLER0) == 0x0008_FFFE


def test_ispendr0_icpendr0(vm):
    """kvm-facts §1.6/§3.2: GICR_ISPENDR0 W1S on the latch, ICPENDR0 W1C."""
    assert s_rd(vm, 2, R.GICR_ISPENDR0) == 0
    s_wr(vm, 2, R.GICR_ISPENDR0, 0x0010_0022)         # SGIs 1, 5; PPI 20
    assert s_rd(vm, 2, R.GICR_ISPENDR0) == 0x0010_0022
    assert s_rd(vm, 2, R.GICR_ICPENDR0) == 0x0010_0022
    assert vm.irq(5, vcpu=2).pending_latch and vm.irq(20, vcpu=2).pending_latch
    s_wr(vm, 2, R.GICR_ICPENDR0, 0x0010_0002)
    assert s_rd(vm, 2, R.GICR_ISPENDR0) == 0x0000_0020


def test_ppi_pending_read_includes_line(vm):
    """kvm-facts §3.2/§1.6: PPIs are level; their pending read is latch OR
    line level, and ICPENDR0 leaves a high line pending."""
    vm.set_irq_level(23, True, vcpu=0)
    assert s_rd(vm, 0, R.GICR_ISPENDR0) == 1 << 23
    s_wr(vm, 0, R.GICR_ICPENDR0, 1 << 23)
    assert s_rd(vm, 0, R.GICR_ISPENDR0) == 1 << 23
    vm.set_irq_level(23, False, vcpu=0)
    assert s_rd(vm, 0, R.GICR_ISPENDR0) == 0


def test_isactiver0_icactiver0(vm):
    """kvm-facts §1.6: GICR_ISACTIVER0 W1S / ICACTIVER0 W1C on active."""
    s_wr(vm, 3, R.GICR_ISACTIVER0, 0x8000_0004)
    assert s_rd(vm, 3, R.GICR_ISACTIVER0) == 0x8000_0004
    assert s_rd(vm, 3, R.GICR_ICACTIVER0) == 0x8000_0004
    assert vm.irq(31, vcpu=3).active and vm.irq(2, vcpu=3).active
    s_wr(vm, 3, R.GICR_ICACTIVER0, 0x0000_0004)
    assert s_rd(vm, 3, R.GICR_ISACTIVER0) == 0x8000_0000
    assert not vm.irq(2, vcpu=3).active


def test_ipriorityr0_7(vm):
    """kvm-facts §1.6: GICR_IPRIORITYR0-7: one byte per INTID 0-31, 32- and
    8-bit access, little-endian lanes, masked to 0xF8; reset 0."""
    for k in range(8):
        assert s_rd(vm, 0, R.GICR_IPRIORITYR0 + 4 * k) == 0
    s_wr(vm, 0, R.GICR_IPRIORITYR0 + 4, 0x87654321)   # INTIDs 4..7
    assert [vm.irq(i, vcpu=0).priority for i in range(4, 8)] == [0x20, 0x40, 0x60, 0x80]
    assert s_rd(vm, 0, R.GICR_IPRIORITYR0 + 4) == 0x80604020
    s_wr(vm, 0, R.GICR_IPRIORITYR0 + 31, 0xFF, 1)     # PPI 31
    assert s_rd(vm, 0, R.GICR_IPRIORITYR0 + 28) == 0xF8000000
    assert s_rd(vm, 0, R.GICR_IPRIORITYR0 + 31, 1) == 0xF8
    assert vm.irq(31, vcpu=0).priority == 0xF8


def test_icfgr0_icfgr1_values(vm):
    """kvm-facts §1.6: SGIs read edge (ICFGR0 = 0xAAAAAAAA), PPIs read level
    (ICFGR1 = 0)."""
    for c in range(4):
        assert s_rd(vm, c, R.GICR_ICFGR0) == 0xAAAAAAAA
        assert s_rd(vm, c, R.GICR_ICFGR0 + 4) == 0
        assert vm.irq(0, vcpu=c).config == "edge"
        assert vm.irq(16, vcpu=c).config == "level"


@pytest.mark.parametrize("v0, v1", [(0, ALL), (0x55555555, 0xAAAAAAAA), (ALL, 0)])
def test_icfgr0_icfgr1_read_only(vm, v0, v1):
    """kvm-facts §1.6: ICFGR0/1 are read-only for all private IRQs."""
    s_wr(vm, 0, R.GICR_ICFGR0, v0)
    s_wr(vm, 0, R.GICR_ICFGR0 + 4, v1)
    assert s_rd(vm, 0, R.GICR_ICFGR0) == 0xAAAAAAAA
    assert s_rd(vm, 0, R.GICR_ICFGR0 + 4) == 0
    assert all(vm.irq(i, vcpu=0).config == "edge" for i in range(16))
    assert all(vm.irq(i, vcpu=0).config == "level" for i in range(16, 32))


@pytest.mark.parametrize("off", [R.GICR_IGRPMODR0, R.GICR_NSACR])
def test_igrpmodr0_nsacr_raz_wi(vm, off):
    """kvm-facts §1.6: GICR_IGRPMODR0 and GICR_NSACR are RAZ/WI."""
    s_wr(vm, 0, off, ALL)
    assert s_rd(vm, 0, off) == 0
    assert s_rd(vm, 0, R.GICR_IGROUPR0) == ALL


@pytest.mark.parametrize("off", [0x0, 0x84, 0x104, 0x204, 0x420, 0xC08, 0xD04, 0xE04, 0xF00,
                                 0x6000, 0xFFE8])
def test_sgi_base_unknown_raz_wi(vm, off):
    """kvm-facts §1.6/§2: SGI_base offsets outside the table (incl. SPI words
    and the PIDR2 slot, which SGI_base does not have) are RAZ/WI."""
    before = private_state(vm, 0)
    s_wr(vm, 0, off, ALL)
    assert s_rd(vm, 0, off) == 0
    assert private_state(vm, 0) == before


@pytest.mark.parametrize("off, size", [
    (R.GICR_ISENABLER0, 1), (R.GICR_ISENABLER0, 2), (R.GICR_ISENABLER0, 8),
    (R.GICR_IGROUPR0, 8), (R.GICR_IGROUPR0 + 1, 1), (R.GICR_ICFGR0, 8), (R.GICR_ICFGR0 + 1, 1),
    (R.GICR_IPRIORITYR0, 8), (R.GICR_IPRIORITYR0, 2), (R.GICR_IPRIORITYR0 + 2, 4),
])
def test_sgi_base_bad_width(vm, off, size):
    """kvm-facts §2: bad width / misaligned SGI_base accesses are RAZ/WI."""
    s_wr(vm, 0, R.GICR_IPRIORITYR0, 0x10203040)
    before = private_state(vm, 0)
    assert s_rd(vm, 0, off, size) == 0
    s_wr(vm, 0, off, (1 << (8 * size)) - 1, size)
    assert private_state(vm, 0) == before


# ========================================================== per-vCPU isolation
@pytest.mark.parametrize("off, value", [
    (R.GICR_IGROUPR0, 0), (R.GICR_ISENABLER0, ALL), (R.GICR_ICENABLER0, ALL),
    (R.GICR_ISPENDR0, ALL), (R.GICR_ISACTIVER0, ALL), (R.GICR_IPRIORITYR0 + 8, 0xF8F8F8F8),
])
def test_private_state_is_per_vcpu(vm, off, value):
    """kvm-facts §1.6/§2: private INTIDs live in each vCPU's own redistributor;
    writing vCPU 1's SGI_base never changes vCPU 0, 2 or 3."""
    others = {c: private_state(vm, c) for c in (0, 2, 3)}
    before1 = private_state(vm, 1)
    s_wr(vm, 1, off, value)
    assert private_state(vm, 1) != before1
    for c in (0, 2, 3):
        assert private_state(vm, c) == others[c]


def test_redistributor_acts_on_owner(vm):
    """kvm-facts §2: a redistributor access uses the vCPU owning that
    redistributor, whatever vCPU performs it."""
    s_wr(vm, 2, R.GICR_ISENABLER0, 1 << 20, vcpu=0)
    assert vm.irq(20, vcpu=2).enabled
    assert not vm.irq(20, vcpu=0).enabled
    assert s_rd(vm, 2, R.GICR_ISENABLER0, vcpu=3) == 0x0010_FFFF
    assert s_rd(vm, 0, R.GICR_ISENABLER0, vcpu=2) == 0x0000_FFFF
    # RD_base too: GICR_TYPER of vCPU 3 read by vCPU 0
    assert r_rd(vm, 3, R.GICR_TYPER, 8, vcpu=0) == (3 << 32) | 0x310
    r_wr(vm, 3, R.GICR_PENDBASER, 0x4001_0780, 8, vcpu=1)
    assert r_rd(vm, 3, R.GICR_PENDBASER, 8) == 0x4001_0780
    assert r_rd(vm, 1, R.GICR_PENDBASER, 8) == 0x580


def test_redistributor_does_not_touch_spis(vm):
    """kvm-facts §2: SPIs are reachable only through the distributor."""
    before = [vm.irq(i) for i in range(32, 64)]
    s_wr(vm, 0, R.GICR_ISENABLER0 + 4, ALL)
    s_wr(vm, 0, R.GICR_ISPENDR0 + 4, ALL)
    assert [vm.irq(i) for i in range(32, 64)] == before
