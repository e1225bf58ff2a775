"""Register fidelity of the GICv3 distributor (GICD_*) as a guest sees it.

Every expected value here comes from kvm-facts.md (sections 1.2-1.4, 2, 3.1,
3.2), i.e. from Linux arch/arm64/kvm/vgic/vgic-mmio-v3.c / vgic-mmio.c, or
from the Arm GICv3 architecture specification (IHI 0069).  Nothing was taken
from running the model.
"""
import pytest

import vgic
from vgic import regmap as R

ALL = 0xFFFF_FFFF


# ----------------------------------------------------------------- helpers
def rd(vm, off, size=4, vcpu=0):
    """Guest load from the distributor frame."""
    return vm.mmio_read(vm.dist_base + off, size, vcpu)


def wr(vm, off, value, size=4, vcpu=0):
    """Guest store to the distributor frame."""
    vm.mmio_write(vm.dist_base + off, size, value, vcpu)


def sgi_rd(vm, vcpu, off, size=4):
    """Guest load from vCPU `vcpu`'s SGI_base frame."""
    return vm.mmio_read(vm.redist_base + vcpu * 0x20000 + 0x10000 + off, size, vcpu)


def bit_reg(base, intid):
    """Offset of the 1-bit-per-IRQ register word holding `intid`, and its bit."""
    return base + (intid // 32) * 4, 1 << (intid % 32)


def private_snapshot(vm):
    """Every private interrupt of every vCPU, as IrqState tuples."""
    return [vm.irq(i, vcpu=c) for c in range(vm.nr_vcpus) for i in range(32)]


def spi_snapshot(vm):
    return [vm.irq(i) for i in range(32, vm.nr_irqs)]


# ================================================================ GICD_CTLR
def test_ctlr_reset_value(vm):
    """kvm-facts §1.3: a guest reads GICD_CTLR = 0x50 (ARE bit 4 | DS bit 6)
    while the distributor is disabled."""
    assert rd(vm, R.GICD_CTLR) == 0x50


def test_ctlr_enable_grp1(vm):
    """kvm-facts §1.3: EnableGrp1 (bit 1) is R/W (dist->enabled) -> 0x52;
    clearing it goes back to 0x50."""
    wr(vm, R.GICD_CTLR, 0x2)
    assert rd(vm, R.GICD_CTLR) == 0x52
    wr(vm, R.GICD_CTLR, 0x0)
    assert rd(vm, R.GICD_CTLR) == 0x50


@pytest.mark.parametrize("written, expected", [
    (0x00000000, 0x50),   # ARE and DS stick at 1 when written 0
    (0x00000001, 0x50),   # EnableGrp0 RAZ/WI
    (0x00000003, 0x52),   # EnableGrp0 dropped, EnableGrp1 kept
    (0x80000002, 0x52),   # RWP always reads 0
    (0x00000102, 0x52),   # nASSGIreq needs GICv4.1 vSGIs (TYPER2.nASSGIcap = 0)
    (0xFFFFFFFF, 0x52),   # every other bit RAZ/WI
    (0xFFFFFFFD, 0x50),
])
def test_ctlr_fixed_bits(vm, written, expected):
    """kvm-facts §1.3 GICD_CTLR table: bit 0 RAZ/WI, bit 1 R/W, ARE (4) and DS
    (6) always 1, RWP (31) always 0, nASSGIreq (8) only with GICv4.1."""
    wr(vm, R.GICD_CTLR, written)
    assert rd(vm, R.GICD_CTLR) == expected


def test_ctlr_is_per_vm(vm):
    """kvm-facts §1.3: EnableGrp1 is the one dist->enabled; any vCPU's write is
    seen by every vCPU."""
    wr(vm, R.GICD_CTLR, 0x2, vcpu=3)
    assert [rd(vm, R.GICD_CTLR, vcpu=c) for c in range(4)] == [0x52] * 4


# =============================================================== GICD_TYPER
@pytest.mark.parametrize("nr_irqs, typer", [
    (64, 0x00480001),
    (96, 0x00480002),
    (256, 0x00480007),
    (512, 0x0048000F),
    (992, 0x0048001E),
])
def test_typer_value(nr_irqs, typer):
    """kvm-facts §1.3: GICD_TYPER = ITLinesNumber | IDbits<<19 with
    ITLinesNumber = (nr_irqs >> 5) - 1 and IDbits = 9 without an ITS."""
    vm = vgic.VM(nr_vcpus=1, nr_irqs=nr_irqs)
    assert rd(vm, R.GICD_TYPER) == typer


@pytest.mark.parametrize("pattern", [0xFFFFFFFF, 0xA5A55A5A, 0x00000000])
def test_typer_read_only(vm, pattern):
    """kvm-facts §1.2 (GICD_TYPER RO), as kvm-unit-tests arm/gic.c checks on
    GICv2: pattern writes must not stick."""
    wr(vm, R.GICD_TYPER, pattern)
    assert rd(vm, R.GICD_TYPER) == 0x00480007


# ======================================================== IIDR / TYPER2 / STATUSR
@pytest.mark.parametrize("pattern", [0x4B00243B, 0x00000000, 0xFFFFFFFF])
def test_iidr_read_only_to_guest(vm, pattern):
    """kvm-facts §1.3: GICD_IIDR = 0x4B00343B (ProductID 'K', revision 3,
    implementer 0x43B); guest writes are ignored."""
    assert rd(vm, R.GICD_IIDR) == 0x4B00343B
    wr(vm, R.GICD_IIDR, pattern)
    assert rd(vm, R.GICD_IIDR) == 0x4B00343B


def test_typer2_zero_and_read_only(vm):
    """kvm-facts §1.3: GICD_TYPER2 reads 0 without GICv4.1 vSGIs; RO to the guest."""
    assert rd(vm, R.GICD_TYPER2) == 0
    wr(vm, R.GICD_TYPER2, ALL)
    assert rd(vm, R.GICD_TYPER2) == 0


@pytest.mark.parametrize("pattern", [0x0, 0xFFFFFFFF, 0x12345678])
def test_statusr_rao_wi(vm, pattern):
    """kvm-facts §1.2: GICD_STATUSR is RAO/WI (reads 0xFFFFFFFF)."""
    wr(vm, R.GICD_STATUSR, pattern)
    assert rd(vm, R.GICD_STATUSR) == 0xFFFFFFFF


# ============================================================== GICD_IGROUPR
@pytest.mark.parametrize("n", range(1, 8))
def test_igroupr_reset_all_group1(vm, n):
    """kvm-facts §1.2 / §1.6: SPIs reset to Group 1, so every IGROUPR<n>
    covering SPIs reads all ones."""
    assert rd(vm, R.GICD_IGROUPR + 4 * n) == 0xFFFFFFFF


def test_igroupr_writable(vm):
    """kvm-facts §1.2: IGROUPR is R/W, one group bit per SPI (1 = Group 1)."""
    wr(vm, R.GICD_IGROUPR + 4, 0x0000FFFF)          # INTIDs 32..63
    assert rd(vm, R.GICD_IGROUPR + 4) == 0x0000FFFF
    assert vm.irq(32).group == 1
    assert vm.irq(47).group == 1
    assert vm.irq(48).group == 0
    assert vm.irq(63).group == 0
    # the neighbouring register is untouched
    assert rd(vm, R.GICD_IGROUPR + 8) == 0xFFFFFFFF
    wr(vm, R.GICD_IGROUPR + 4, 0xA0000001)
    assert rd(vm, R.GICD_IGROUPR + 4) == 0xA0000001
    assert [vm.irq(i).group for i in (32, 33, 61, 62, 63)] == [1, 0, 1, 0, 1]


# ===================================================== ISENABLER / ICENABLER
def test_enable_reset_disabled(vm):
    """kvm-facts §1.6: SPIs reset disabled."""
    for n in range(1, 8):
        assert rd(vm, R.GICD_ISENABLER + 4 * n) == 0
        assert rd(vm, R.GICD_ICENABLER + 4 * n) == 0
    assert not any(s.enabled for s in spi_snapshot(vm))


@pytest.mark.parametrize("intid", [32, 33, 63, 64, 100, 255])
def test_isenabler_w1s_icenabler_w1c(vm, intid):
    """kvm-facts §1.2: ISENABLER write-1-to-set, ICENABLER write-1-to-clear,
    both read the enable state; 0 bits are ignored."""
    off_s, bit = bit_reg(R.GICD_ISENABLER, intid)
    off_c, _ = bit_reg(R.GICD_ICENABLER, intid)
    wr(vm, off_s, bit)
    assert vm.irq(intid).enabled is True
    assert rd(vm, off_s) == bit
    assert rd(vm, off_c) == bit
    wr(vm, off_s, 0)                    # writing zeros changes nothing
    wr(vm, off_c, 0)
    assert rd(vm, off_s) == bit
    wr(vm, off_c, bit)
    assert vm.irq(intid).enabled is False
    assert rd(vm, off_s) == 0
    assert rd(vm, off_c) == 0


def test_enable_set_and_clear_patterns(vm):
    """kvm-facts §1.2: W1S / W1C only touch the written 1 bits."""
    wr(vm, R.GICD_ISENABLER + 8, 0xF0F0F0F0)        # INTIDs 64..95
    wr(vm, R.GICD_ISENABLER + 8, 0x0000000F)
    assert rd(vm, R.GICD_ISENABLER + 8) == 0xF0F0F0FF
    wr(vm, R.GICD_ICENABLER + 8, 0xFF00000F)
    assert rd(vm, R.GICD_ICENABLER + 8) == 0x00F0F0F0
    assert vm.irq(64 + 4).enabled and not vm.irq(64).enabled
    # no other word moved
    assert rd(vm, R.GICD_ISENABLER + 4) == 0
    assert rd(vm, R.GICD_ISENABLER + 12) == 0


# ======================================================= ISPENDR / ICPENDR
def test_pending_reset_clear(vm):
    """kvm-facts §1.6: SPIs reset not pending."""
    for n in range(1, 8):
        assert rd(vm, R.GICD_ISPENDR + 4 * n) == 0
        assert rd(vm, R.GICD_ICPENDR + 4 * n) == 0


@pytest.mark.parametrize("intid", [32, 45, 191, 255])
def test_ispendr_icpendr_edge(vm, intid):
    """kvm-facts §1.2 / §3.2: ISPENDR W1S sets pending_latch, ICPENDR W1C
    clears it; both read the pending state (= latch for an edge IRQ)."""
    off_s, bit = bit_reg(R.GICD_ISPENDR, intid)
    off_c, _ = bit_reg(R.GICD_ICPENDR, intid)
    wr(vm, off_s, bit)
    st = vm.irq(intid)
    assert st.pending_latch is True and st.config == "edge"
    assert rd(vm, off_s) == bit
    assert rd(vm, off_c) == bit
    wr(vm, off_c, bit)
    assert vm.irq(intid).pending_latch is False
    assert rd(vm, off_s) == 0
    assert rd(vm, off_c) == 0


def test_pending_read_includes_level_line(vm):
    """kvm-facts §3.2: for a level IRQ the pending state read through
    ISPENDR/ICPENDR is pending_latch OR line_level."""
    wr(vm, R.GICD_ICFGR + 8, 0)                     # INTIDs 32..47 level
    vm.set_irq_level(40, True)
    st = vm.irq(40)
    assert st.line_level is True and st.pending_latch is False
    assert rd(vm, R.GICD_ISPENDR + 4) == 1 << 8
    assert rd(vm, R.GICD_ICPENDR + 4) == 1 << 8


def test_icpendr_does_not_clear_high_level_line(vm):
    """kvm-facts §3.2: ICPENDR clears only pending_latch; a level IRQ whose
    line is high stays pending."""
    wr(vm, R.GICD_ICFGR + 8, 0)
    vm.set_irq_level(40, True)
    wr(vm, R.GICD_ISPENDR + 4, 1 << 8)
    assert vm.irq(40).pending_latch is True
    wr(vm, R.GICD_ICPENDR + 4, 1 << 8)
    st = vm.irq(40)
    assert st.pending_latch is False and st.line_level is True
    assert rd(vm, R.GICD_ISPENDR + 4) == 1 << 8
    vm.set_irq_level(40, False)
    assert rd(vm, R.GICD_ISPENDR + 4) == 0


def test_ispendr_latch_survives_line_drop(vm):
    """kvm-facts §3.2: an ISPENDR write sets the latch, which keeps a level
    IRQ pending after its line drops."""
    wr(vm, R.GICD_ICFGR + 8, 0)
    vm.set_irq_level(41, True)
    wr(vm, R.GICD_ISPENDR + 4, 1 << 9)
    vm.set_irq_level(41, False)
    st = vm.irq(41)
    assert st.line_level is False and st.pending_latch is True and st.pending
    assert rd(vm, R.GICD_ISPENDR + 4) == 1 << 9


def test_edge_irq_ignores_line_level_in_pending_read(vm):
    """kvm-facts §3.2: for an edge IRQ pending = latch only.  Make 42 level,
    raise its line, switch it back to edge and clear the latch: not pending."""
    wr(vm, R.GICD_ICFGR + 8, 0)
    vm.set_irq_level(42, True)
    wr(vm, R.GICD_ICFGR + 8, 0xAAAAAAAA)             # back to edge
    wr(vm, R.GICD_ICPENDR + 4, 1 << 10)
    assert vm.irq(42).config == "edge"
    assert rd(vm, R.GICD_ISPENDR + 4) & (1 << 10) == 0


# ===================================================== ISACTIVER / ICACTIVER
@pytest.mark.parametrize("intid", [32, 63, 128, 255])
def test_isactiver_icactiver(vm, intid):
    """kvm-facts §1.2: ISACTIVER W1S / ICACTIVER W1C on `active`; both read it."""
    off_s, bit = bit_reg(R.GICD_ISACTIVER, intid)
    off_c, _ = bit_reg(R.GICD_ICACTIVER, intid)
    assert rd(vm, off_s) == 0
    wr(vm, off_s, bit)
    assert vm.irq(intid).active is True
    assert rd(vm, off_s) == bit
    assert rd(vm, off_c) == bit
    wr(vm, off_c, 0)
    assert rd(vm, off_s) == bit
    wr(vm, off_c, bit)
    assert vm.irq(intid).active is False
    assert rd(vm, off_s) == 0


def test_active_does_not_touch_pending(vm):
    """kvm-facts §3.1: active and pending_latch are separate fields."""
    wr(vm, R.GICD_ISACTIVER + 4, 0xFFFFFFFF)
    assert rd(vm, R.GICD_ISPENDR + 4) == 0
    assert rd(vm, R.GICD_ISENABLER + 4) == 0
    wr(vm, R.GICD_ISPENDR + 4, 0x1)
    wr(vm, R.GICD_ICACTIVER + 4, 0xFFFFFFFF)
    assert rd(vm, R.GICD_ISPENDR + 4) == 0x1


# ============================================================ IPRIORITYR
def test_priority_reset_zero(vm):
    """kvm-facts §1.6: SPIs reset with priority 0."""
    for off in range(0x20, 0x100, 4):
        assert rd(vm, R.GICD_IPRIORITYR + off) == 0


def test_priority_word_byte_lanes(vm):
    """kvm-facts §1.1/§1.2: one byte per IRQ, MMIO little-endian: byte k of
    the word at 0x400 + 4m is INTID 4m + k."""
    wr(vm, R.GICD_IPRIORITYR + 32, 0x40302010)      # INTIDs 32..35
    assert [vm.irq(32 + k).priority for k in range(4)] == [0x10, 0x20, 0x30, 0x40]
    assert [rd(vm, R.GICD_IPRIORITYR + 32 + k, 1) for k in range(4)] == [0x10, 0x20, 0x30, 0x40]
    assert rd(vm, R.GICD_IPRIORITYR + 32) == 0x40302010


def test_priority_byte_write(vm):
    """kvm-facts §1.2: IPRIORITYR accepts 8-bit accesses; a byte write changes
    one IRQ only."""
    wr(vm, R.GICD_IPRIORITYR + 32, 0x40302010)
    wr(vm, R.GICD_IPRIORITYR + 33, 0xA8, size=1)
    assert rd(vm, R.GICD_IPRIORITYR + 32) == 0x4030A810
    assert vm.irq(33).priority == 0xA8
    assert vm.irq(32).priority == 0x10 and vm.irq(34).priority == 0x30


@pytest.mark.parametrize("written, stored", [
    (0xFF, 0xF8), (0x07, 0x00), (0x0F, 0x08), (0x81, 0x80), (0xF8, 0xF8), (0x5C, 0x58),
])
def test_priority_masked_to_5_bits(vm, written, stored):
    """kvm-facts §1.2: the stored priority is `val & 0xF8` (VGIC_PRI_BITS = 5)."""
    wr(vm, R.GICD_IPRIORITYR + 255, written, size=1)
    assert vm.irq(255).priority == stored
    assert rd(vm, R.GICD_IPRIORITYR + 255, 1) == stored
    wr(vm, R.GICD_IPRIORITYR + 100, written * 0x01010101)
    assert rd(vm, R.GICD_IPRIORITYR + 100) == stored * 0x01010101


# ============================================================= ITARGETSR
@pytest.mark.parametrize("off", [0x800, 0x81C, 0x820, 0x8FC, 0x900, 0xBFC])
def test_itargetsr_raz_wi(vm, off):
    """kvm-facts §1.2: GICD_ITARGETSR is RAZ/WI entirely (ARE = 1)."""
    before = spi_snapshot(vm) + private_snapshot(vm)
    for value in (0x01010101, 0xF8F8F8F8, ALL):
        wr(vm, off, value)
        assert rd(vm, off) == 0
    wr(vm, off + 1, 0xFF, size=1)
    assert rd(vm, off + 1, 1) == 0
    assert spi_snapshot(vm) + private_snapshot(vm) == before


# ================================================================= ICFGR
@pytest.mark.parametrize("n", range(2, 16))
def test_icfgr_spis_reset_edge(vm, n):
    """kvm-facts §1.2/§1.6: SPIs reset edge; ICFGR reads edge as 0b10 per IRQ."""
    assert rd(vm, R.GICD_ICFGR + 4 * n) == 0xAAAAAAAA


def test_icfgr_write_zero_makes_level(vm):
    """kvm-facts §1.2: bit 2n+1 = 0 selects level."""
    wr(vm, R.GICD_ICFGR + 12, 0)                    # INTIDs 48..63
    assert rd(vm, R.GICD_ICFGR + 12) == 0
    assert all(vm.irq(i).config == "level" for i in range(48, 64))
    assert vm.irq(47).config == "edge" and vm.irq(64).config == "edge"


@pytest.mark.parametrize("written, read", [
    (0x55555555, 0x00000000),   # bit 2n ignored: all level
    (0xFFFFFFFF, 0xAAAAAAAA),   # bit 2n ignored: all edge
    (0x0000000A, 0x0000000A),   # INTIDs 32, 33 edge, rest level
    (0x80000002, 0x80000002),
    (0x00000001, 0x00000000),
])
def test_icfgr_bit_2n_ignored(vm, written, read):
    """kvm-facts §1.2: ICFGR bit 2n+1 = 1 edge / 0 level, bit 2n ignored."""
    wr(vm, R.GICD_ICFGR + 8, written)               # INTIDs 32..47
    assert rd(vm, R.GICD_ICFGR + 8) == read
    for k in range(16):
        expect = "edge" if (read >> (2 * k + 1)) & 1 else "level"
        assert vm.irq(32 + k).config == expect


# ============================================================== IGRPMODR
@pytest.mark.parametrize("off", [0xD00, 0xD04, 0xD1C, 0xD7C])
def test_igrpmodr_raz_wi(vm, off):
    """kvm-facts §1.2: GICD_IGRPMODR is RAZ/WI."""
    wr(vm, off, ALL)
    assert rd(vm, off) == 0
    assert rd(vm, R.GICD_IGROUPR + 4) == 0xFFFFFFFF


# ============================================================== IROUTER
def irouter(intid):
    return R.GICD_IROUTER + 8 * intid


def test_irouter_reset(vm):
    """kvm-facts §1.4/§1.6: reset IROUTER = 0 -> vCPU with affinity 0.0.0."""
    for intid in (32, 100, 255):
        assert rd(vm, irouter(intid), 8) == 0
        st = vm.irq(intid)
        assert st.route == 0 and st.target_vcpu == 0


@pytest.mark.parametrize("value, stored, target", [
    (0x0000000000000001, 0x1, 1),
    (0x0000000000000003, 0x3, 3),
    (0x0000000080000002, 0x2, 2),      # IRM (bit 31) not stored
    (0x000000AB00000001, 0x1, 1),      # Aff3 (bits 39:32) dropped
    (0xFFFFFFFF00000002, 0x2, 2),      # whole upper word dropped
    (0x0000000000000004, 0x4, -1),     # no vCPU with Aff0 = 4 in a 4-vCPU VM
    (0x0000000000000100, 0x100, -1),   # Aff1 = 1: none
    (0x0000000000010000, 0x10000, -1),  # Aff2 = 1: none
    (0x0000000000FFFFFF, 0xFFFFFF, -1),
    (0x000000007F000000, 0x0, 0),      # bits 30:24 are not affinity
])
def test_irouter_64bit(vm, value, stored, target):
    """kvm-facts §1.4: only Aff2.Aff1.Aff0 (val & 0xFFFFFF) is stored; IRM and
    Aff3 are not; target_vcpu = vCPU with that affinity, or none (-1)."""
    wr(vm, irouter(50), 0x3)            # start from a non-reset route
    wr(vm, irouter(50), value, size=8)
    assert rd(vm, irouter(50), 8) == stored
    st = vm.irq(50)
    assert st.route == stored
    assert st.target_vcpu == target


def test_irouter_32bit_halves(vm):
    """kvm-facts §1.4: IROUTER is accessible as two 32-bit halves; the upper
    word (Aff3) is RAZ/WI and writing it leaves the lower word alone."""
    wr(vm, irouter(33), 0x00000002)
    assert rd(vm, irouter(33), 4) == 0x2
    assert rd(vm, irouter(33) + 4, 4) == 0
    assert vm.irq(33).target_vcpu == 2
    wr(vm, irouter(33) + 4, 0xFFFFFFFF)
    assert rd(vm, irouter(33) + 4, 4) == 0
    assert rd(vm, irouter(33), 8) == 0x2
    assert vm.irq(33).target_vcpu == 2
    wr(vm, irouter(33), 0x80000001)
    assert rd(vm, irouter(33), 4) == 0x1
    assert vm.irq(33).target_vcpu == 1


def test_irouter_independent_per_spi(vm):
    """kvm-facts §1.4: one IROUTER<n> per SPI at 0x6000 + 8n."""
    for i, intid in enumerate(range(32, 36)):
        wr(vm, irouter(intid), i, size=8)
    assert [vm.irq(i).target_vcpu for i in range(32, 37)] == [0, 1, 2, 3, 0]
    assert [rd(vm, irouter(i), 8) for i in range(32, 37)] == [0, 1, 2, 3, 0]


def test_irouter_target_large_vm():
    """kvm-facts §1.4/§1.5: routing compares against the default MPIDRs
    (Aff0 = id & 0xF, Aff1 = (id >> 4) & 0xFF): 0x0101 is vCPU 17,
    0x0207 vCPU 39, 0x0208 nobody in a 40-vCPU VM."""
    vm = vgic.VM(nr_vcpus=40, nr_irqs=64)
    for aff, target in ((0x0101, 17), (0x0207, 39), (0x000F, 15), (0x0100, 16), (0x0208, -1),
                        (0x0010, -1)):
        wr(vm, irouter(40), aff, size=8)
        assert vm.irq(40).target_vcpu == target, hex(aff)
        assert rd(vm, irouter(40), 8) == aff


def test_irouter_misaligned_64bit_ignored(vm):
    """kvm-facts §2: accesses must be naturally aligned, else RAZ/WI."""
    wr(vm, irouter(40), 0x1, size=8)
    wr(vm, irouter(41), 0x2, size=8)
    assert rd(vm, irouter(40) + 4, 8) == 0
    wr(vm, irouter(40) + 4, 0x3, size=8)
    assert rd(vm, irouter(40), 8) == 1
    assert rd(vm, irouter(41), 8) == 2


# ============================================================== ID registers
@pytest.mark.parametrize("off", range(0xFFD0, 0x10000, 4))
def test_id_registers(vm, off):
    """kvm-facts §1.2: GICD_PIDR2 (0xFFE8) reads 0x3B (ArchRev 3); every other
    ID register in 0xFFD0-0xFFFF reads 0; all are read-only."""
    expected = 0x3B if off == R.GICD_PIDR2 else 0
    assert rd(vm, off) == expected
    wr(vm, off, ALL)
    assert rd(vm, off) == expected


GICD_OFFSETS = [
    ("GICD_CTLR", 0x0000), ("GICD_TYPER", 0x0004), ("GICD_IIDR", 0x0008),
    ("GICD_TYPER2", 0x000C), ("GICD_STATUSR", 0x0010), ("GICD_IGROUPR", 0x0080),
    ("GICD_ISENABLER", 0x0100), ("GICD_ICENABLER", 0x0180), ("GICD_ISPENDR", 0x0200),
    ("GICD_ICPENDR", 0x0280), ("GICD_ISACTIVER", 0x0300), ("GICD_ICACTIVER", 0x0380),
    ("GICD_IPRIORITYR", 0x0400), ("GICD_ITARGETSR", 0x0800), ("GICD_ICFGR", 0x0C00),
    ("GICD_IGRPMODR", 0x0D00), ("GICD_IROUTER", 0x6000), ("GICD_PIDR2", 0xFFE8),
]


@pytest.mark.parametrize("name, offset", GICD_OFFSETS)
def test_regmap_offsets(name, offset):
    """kvm-facts §1.2 table (IHI 0069 §12.8): the regmap constants these tests
    address registers with must be the architectural offsets, or every other
    test here would follow a wrong map."""
    assert getattr(R, name) == offset


# ====================================== private halves: RAZ/WI in the distributor
PRIVATE_HALVES = (
    [(R.GICD_IGROUPR, 4)]
    + [(base, 4) for base in (R.GICD_ISENABLER, R.GICD_ICENABLER, R.GICD_ISPENDR,
                              R.GICD_ICPENDR, R.GICD_ISACTIVER, R.GICD_ICACTIVER)]
    + [(R.GICD_IPRIORITYR + 4 * k, 4) for k in range(8)]
    + [(R.GICD_IPRIORITYR + k, 1) for k in (0, 15, 16, 31)]
    + [(R.GICD_ICFGR, 4), (R.GICD_ICFGR + 4, 4)]
    + [(R.GICD_IROUTER + 8 * k, 8) for k in (0, 15, 16, 31)]
    + [(R.GICD_IROUTER + 8 * k, 4) for k in (1, 27)]
)


@pytest.mark.parametrize("off, size", PRIVATE_HALVES,
                         ids=[f"{o:#x}/{s}" for o, s in PRIVATE_HALVES])
@pytest.mark.parametrize("vcpu", [0, 2])
def test_private_half_raz_wi(vm, off, size, vcpu):
    """kvm-facts §1.2/§2 (v3 SHARED regions): the bytes for INTIDs 0-31 of
    every per-IRQ distributor register are RAZ/WI (SGIs and PPIs live in the
    redistributor when ARE = 1).  Reads 0 although SGIs reset enabled and all
    private IRQs reset Group 1; writes change no vCPU's private state."""
    before = private_snapshot(vm)
    ones = (1 << (8 * size)) - 1
    assert rd(vm, off, size, vcpu) == 0
    wr(vm, off, ones, size, vcpu)
    assert rd(vm, off, size, vcpu) == 0
    wr(vm, off, 0, size, vcpu)
    assert rd(vm, off, size, vcpu) == 0
    assert private_snapshot(vm) == before
    # the redistributor view still shows the reset state (SGIs enabled)
    assert sgi_rd(vm, vcpu, R.GICR_ISENABLER0) == 0x0000FFFF
    assert sgi_rd(vm, vcpu, R.GICR_IGROUPR0) == 0xFFFFFFFF


# ============================================== INTIDs >= nr_irqs: RAZ/WI
def beyond(nr_irqs):
    """(offset, size) of the first register word describing INTID nr_irqs."""
    return [
        (R.GICD_IGROUPR + nr_irqs // 8, 4),
        (R.GICD_ISENABLER + nr_irqs // 8, 4),
        (R.GICD_ICENABLER + nr_irqs // 8, 4),
        (R.GICD_ISPENDR + nr_irqs // 8, 4),
        (R.GICD_ICPENDR + nr_irqs // 8, 4),
        (R.GICD_ISACTIVER + nr_irqs // 8, 4),
        (R.GICD_ICACTIVER + nr_irqs // 8, 4),
        (R.GICD_IPRIORITYR + nr_irqs, 4),
        (R.GICD_IPRIORITYR + nr_irqs, 1),
        (R.GICD_ICFGR + nr_irqs // 4, 4),
        (R.GICD_IROUTER + 8 * nr_irqs, 8),
        (R.GICD_IROUTER + 8 * nr_irqs, 4),
    ]


@pytest.mark.parametrize("off, size", beyond(256), ids=[f"{o:#x}/{s}" for o, s in beyond(256)])
def test_intid_beyond_nr_irqs_raz_wi(vm, off, size):
    """kvm-facts §2 (check_region step 3): a per-IRQ access whose first INTID
    is >= nr_irqs reads 0 and ignores writes, and does not alias any SPI."""
    before = spi_snapshot(vm) + private_snapshot(vm)
    ones = (1 << (8 * size)) - 1
    assert rd(vm, off, size) == 0
    wr(vm, off, ones, size)
    assert rd(vm, off, size) == 0
    assert spi_snapshot(vm) + private_snapshot(vm) == before


@pytest.mark.parametrize("off, size", beyond(64), ids=[f"{o:#x}/{s}" for o, s in beyond(64)])
def test_intid_beyond_nr_irqs_small_vm(vm1, off, size):
    """kvm-facts §2: same rule for a 64-IRQ VM (INTIDs 64.. do not exist)."""
    ones = (1 << (8 * size)) - 1
    wr(vm1, off, ones, size)
    assert rd(vm1, off, size) == 0


def test_last_valid_intid_boundary(vm):
    """kvm-facts §2: INTID nr_irqs-1 (255) is still real, 256 is RAZ/WI."""
    assert rd(vm, R.GICD_IGROUPR + 0x1C) == 0xFFFFFFFF     # INTIDs 224..255
    assert rd(vm, R.GICD_IGROUPR + 0x20) == 0              # INTIDs 256..287
    wr(vm, R.GICD_IPRIORITYR + 255, 0x80, size=1)
    assert rd(vm, R.GICD_IPRIORITYR + 255, 1) == 0x80
    assert rd(vm, R.GICD_ICFGR + 0x3C) == 0xAAAAAAAA       # INTIDs 240..255
    assert rd(vm, R.GICD_ICFGR + 0x40) == 0


def test_intid_1020_range_raz_with_992_irqs():
    """kvm-facts §1.1/§2: with the maximum 992 IRQs, the word for INTIDs
    992..1023 is beyond nr_irqs and reads 0; 960..991 are real."""
    vm = vgic.VM(nr_vcpus=1, nr_irqs=992)
    assert rd(vm, R.GICD_IGROUPR + 4 * 30) == 0xFFFFFFFF
    assert rd(vm, R.GICD_IGROUPR + 4 * 31) == 0
    wr(vm, R.GICD_ISENABLER + 4 * 31, ALL)
    assert rd(vm, R.GICD_ISENABLER + 4 * 31) == 0


# =============================================== unknown offsets: RAZ/WI
UNKNOWN = [
    0x0014, 0x0040, 0x0044, 0x0048, 0x0050, 0x0058, 0x007C,
    0x0E00, 0x0E04, 0x0F00, 0x0F10, 0x0F20, 0x0F2C,
    0x1000, 0x1200, 0x2000, 0x3000, 0x5FFC, 0x8000, 0xC000, 0xFFCC,
]


@pytest.mark.parametrize("off", UNKNOWN, ids=[hex(o) for o in UNKNOWN])
def test_unknown_offset_raz_wi(vm, off):
    """kvm-facts §1.2: offsets not in KVM's table (SETSPI/CLRSPI, NSACR,
    SGIR, CPENDSGIR/SPENDSGIR, the ...nE extended-SPI ranges, gaps) are RAZ/WI,
    never a fault."""
    before = spi_snapshot(vm) + private_snapshot(vm)
    assert rd(vm, off) == 0
    wr(vm, off, ALL)
    wr(vm, off, 40)
    assert rd(vm, off) == 0
    assert spi_snapshot(vm) + private_snapshot(vm) == before


def test_setspi_nsr_does_not_pend(vm):
    """kvm-facts §1.2: GICD_SETSPI_NSR (0x40) is not emulated: writing an SPI
    number leaves it not pending."""
    wr(vm, 0x40, 40)
    assert vm.irq(40).pending_latch is False
    assert rd(vm, R.GICD_ISPENDR + 4) == 0


def test_sgir_generates_nothing(vm):
    """kvm-facts §1.2/§3.4: GICD_SGIR (0xF00) does not exist for GICv3: a
    GICv2-style 'all but self, SGI 3' write pends nothing anywhere."""
    wr(vm, 0xF00, (1 << 24) | 3)
    wr(vm, 0xF00, (0xF << 16) | 5)
    for c in range(4):
        assert sgi_rd(vm, c, R.GICR_ISPENDR0) == 0


def test_spendsgir_generates_nothing(vm):
    """kvm-facts §1.2: GICD_SPENDSGIR (0xF20) is RAZ/WI for GICv3."""
    wr(vm, 0xF20, ALL)
    assert sgi_rd(vm, 0, R.GICR_ISPENDR0) == 0


# ============================================== bad widths / misalignment
def _setup_values(vm):
    wr(vm, R.GICD_CTLR, 0x2)
    wr(vm, R.GICD_ISENABLER + 4, ALL)
    wr(vm, R.GICD_IPRIORITYR + 32, 0x40302010)


BAD_READS = [
    (R.GICD_CTLR, 2), (R.GICD_CTLR, 8), (R.GICD_CTLR, 1), (R.GICD_TYPER, 1), (R.GICD_TYPER, 2),
    (R.GICD_STATUSR, 2), (R.GICD_STATUSR, 1), (R.GICD_STATUSR, 8),
    (R.GICD_IGROUPR + 4, 1), (R.GICD_IGROUPR + 4, 2), (R.GICD_IGROUPR + 8, 8),
    (R.GICD_ISENABLER + 4, 1), (R.GICD_ISENABLER + 4, 2), (R.GICD_ISENABLER + 8, 8),
    (R.GICD_ISENABLER + 6, 2), (R.GICD_ISENABLER + 5, 1),
    (R.GICD_IPRIORITYR + 32, 2), (R.GICD_IPRIORITYR + 32, 8),
    (R.GICD_ICFGR + 8, 1), (R.GICD_ICFGR + 8, 8),
    (R.GICD_PIDR2, 1), (R.GICD_PIDR2, 2), (R.GICD_PIDR2 - 8, 8),
    # misaligned
    (R.GICD_TYPER + 1, 4), (R.GICD_ISENABLER + 6, 4), (R.GICD_IPRIORITYR + 33, 4),
    (R.GICD_IPRIORITYR + 34, 4), (R.GICD_IROUTER + 8 * 40 + 2, 4), (R.GICD_STATUSR + 2, 4),
]


@pytest.mark.parametrize("off, size", BAD_READS, ids=[f"{o:#x}/{s}" for o, s in BAD_READS])
def test_bad_width_or_alignment_reads_zero(vm, off, size):
    """kvm-facts §2 (check_region): length must be 1, 4 or 8, allowed by the
    region's access flags, and naturally aligned; otherwise the read gives 0."""
    _setup_values(vm)
    wr(vm, R.GICD_IROUTER + 8 * 40, 0x3)
    assert rd(vm, off, size) == 0


def test_bad_width_writes_ignored(vm):
    """kvm-facts §2: invalid-width or misaligned writes are ignored."""
    wr(vm, R.GICD_CTLR, 0x2, size=2)                 # 2-byte
    wr(vm, R.GICD_CTLR, 0x2, size=8)                 # 8-byte to a 32-bit register
    wr(vm, R.GICD_CTLR, 0x2, size=1)                 # 1-byte to a 32-bit register
    assert rd(vm, R.GICD_CTLR) == 0x50
    wr(vm, R.GICD_ISENABLER + 4, 0xFF, size=1)       # 1-byte to ISENABLER
    wr(vm, R.GICD_ISENABLER + 4, 0xFFFF, size=2)
    wr(vm, R.GICD_ISENABLER + 8, ALL | (ALL << 32), size=8)
    wr(vm, R.GICD_ISENABLER + 6, 0xFFFF, size=2)
    wr(vm, R.GICD_ISENABLER + 6, ALL)                # misaligned word
    assert [rd(vm, R.GICD_ISENABLER + 4 * n) for n in range(1, 8)] == [0] * 7
    wr(vm, R.GICD_IPRIORITYR + 32, 0x8080, size=2)
    wr(vm, R.GICD_IPRIORITYR + 32, 0x8080808080808080, size=8)
    wr(vm, R.GICD_IPRIORITYR + 33, 0x80808080)       # misaligned word
    assert [vm.irq(i).priority for i in range(32, 44)] == [0] * 12
    wr(vm, R.GICD_ICFGR + 8, 0, size=1)
    wr(vm, R.GICD_ICFGR + 8, 0, size=8)
    assert rd(vm, R.GICD_ICFGR + 8) == 0xAAAAAAAA
    wr(vm, R.GICD_IGROUPR + 4, 0, size=2)
    assert rd(vm, R.GICD_IGROUPR + 4) == 0xFFFFFFFF
    wr(vm, R.GICD_IROUTER + 8 * 40 + 2, 0x1, size=4)
    wr(vm, R.GICD_IROUTER + 8 * 40, 0x1, size=2)
    wr(vm, R.GICD_IROUTER + 8 * 40, 0x1, size=1)
    assert vm.irq(40).route == 0


def test_valid_widths_still_work(vm):
    """kvm-facts §1.2: the widths a region does allow (32 everywhere, 8 for
    IPRIORITYR, 64 for IROUTER) act normally -- guards the RAZ/WI tests above."""
    _setup_values(vm)
    assert rd(vm, R.GICD_CTLR) == 0x52
    assert rd(vm, R.GICD_ISENABLER + 4) == ALL
    assert rd(vm, R.GICD_IPRIORITYR + 34, 1) == 0x30
    wr(vm, R.GICD_IROUTER + 8 * 40, 0x3, size=8)
    assert rd(vm, R.GICD_IROUTER + 8 * 40, 8) == 0x3


def test_distributor_ignores_accessing_vcpu_for_spis(vm):
    """kvm-facts §2: SPI state is per VM; the accessing vCPU does not matter."""
    wr(vm, R.GICD_ISENABLER + 4, 0x10, vcpu=3)
    assert rd(vm, R.GICD_ISENABLER + 4, vcpu=0) == 0x10
    assert vm.irq(36).enabled
