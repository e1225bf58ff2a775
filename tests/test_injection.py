"""Interrupt-line injection: vm.set_irq_level as KVM_IRQ_LINE / kvm_vgic_inject_irq.

Rules from kvm-facts.md §3.2 (pending = latch, or latch | line for level),
§3.3 (injection) and §1.6 (reset configuration), and the bad-INTID cases of
the KVM selftest tools/testing/selftests/kvm/arm64/vgic_irq.c.
"""
import errno

import pytest

import vgic
from vgic import regmap as R


def rd(vm, off, size=4):
    return vm.mmio_read(vm.dist_base + off, size, 0)


def wr(vm, off, value, size=4):
    vm.mmio_write(vm.dist_base + off, size, value, 0)


def sgi_rd(vm, c, off):
    return vm.mmio_read(vm.redist_base + c * 0x20000 + 0x10000 + off, 4, c)


def sgi_wr(vm, c, off, value):
    vm.mmio_write(vm.redist_base + c * 0x20000 + 0x10000 + off, 4, value, c)


def ispendr_bit(vm, intid):
    return (rd(vm, R.GICD_ISPENDR + (intid // 32) * 4) >> (intid % 32)) & 1


def make_level(vm, intid):
    """Configure an SPI level-triggered through GICD_ICFGR (bit 2n+1 = 0)."""
    off = R.GICD_ICFGR + (intid // 16) * 4
    cur = rd(vm, off)
    wr(vm, off, cur & ~(2 << (2 * (intid % 16))))
    assert vm.irq(intid).config == "level"


# ================================================================== SPI, edge
@pytest.mark.parametrize("intid", [32, 77, 255])
def test_spi_edge_rising_latches(vm, intid):
    """kvm-facts §3.3 step 4: edge IRQ, level 1 -> pending_latch = 1 (SPIs
    reset edge, §1.6); line_level is not used for edge IRQs."""
    assert vm.irq(intid).config == "edge"
    vm.set_irq_level(intid, True)
    st = vm.irq(intid)
    assert st.pending_latch is True and st.pending is True
    assert st.line_level is False
    assert ispendr_bit(vm, intid) == 1


def test_spi_edge_falling_does_nothing(vm):
    """kvm-facts §3.3 step 3: edge IRQs only act on level == 1; a falling
    level neither clears nor sets anything."""
    vm.set_irq_level(40, False)
    assert vm.irq(40).pending is False
    vm.set_irq_level(40, True)
    vm.set_irq_level(40, False)
    st = vm.irq(40)
    assert st.pending_latch is True
    assert ispendr_bit(vm, 40) == 1


def test_spi_edge_second_rise_stays_pending(vm):
    """kvm-facts §3.3: a second rising edge while pending leaves it pending
    (the latch is a single bit)."""
    vm.set_irq_level(40, True)
    vm.set_irq_level(40, False)
    vm.set_irq_level(40, True)
    assert vm.irq(40).pending_latch is True
    wr(vm, R.GICD_ICPENDR + 4, 1 << 8)               # one clear empties it
    assert vm.irq(40).pending is False


def test_spi_edge_level_1_again_relatches(vm):
    """kvm-facts §3.3 step 3: for edge IRQs every injection with level 1 acts,
    even without an intervening 0 (only level IRQs compare with the line)."""
    vm.set_irq_level(50, True)
    wr(vm, R.GICD_ICPENDR + 4, 1 << 18)
    assert vm.irq(50).pending is False
    vm.set_irq_level(50, True)
    assert vm.irq(50).pending_latch is True


def test_spi_injection_does_not_enable_or_activate(vm):
    """kvm-facts §3.3: injection only changes line_level / pending_latch."""
    vm.set_irq_level(60, True)
    st = vm.irq(60)
    assert st.enabled is False and st.active is False
    assert [vm.irq(i).pending for i in (59, 61)] == [False, False]


# ================================================================= SPI, level
def test_spi_level_pending_follows_line(vm):
    """kvm-facts §3.2/§3.3: level IRQ: line_level = level; pending = latch |
    line_level, so pending follows the line."""
    make_level(vm, 45)
    vm.set_irq_level(45, True)
    st = vm.irq(45)
    assert st.line_level is True and st.pending_latch is False and st.pending is True
    assert ispendr_bit(vm, 45) == 1
    vm.set_irq_level(45, False)
    st = vm.irq(45)
    assert st.line_level is False and st.pending is False
    assert ispendr_bit(vm, 45) == 0


def test_spi_level_repeated_high_is_idempotent(vm):
    """kvm-facts §3.3 step 3: a level IRQ only acts when the level changes;
    raising a high line again does not latch it."""
    make_level(vm, 46)
    vm.set_irq_level(46, True)
    vm.set_irq_level(46, True)
    assert vm.irq(46).pending_latch is False
    vm.set_irq_level(46, False)
    assert vm.irq(46).pending is False


def test_spi_level_icpendr_clears_only_latch(vm):
    """kvm-facts §3.2: ICPENDR clears pending_latch; a high line keeps the
    level IRQ pending."""
    make_level(vm, 47)
    vm.set_irq_level(47, True)
    wr(vm, R.GICD_ISPENDR + 4, 1 << 15)
    wr(vm, R.GICD_ICPENDR + 4, 1 << 15)
    st = vm.irq(47)
    assert st.pending_latch is False and st.line_level is True and st.pending is True
    assert ispendr_bit(vm, 47) == 1


def test_spi_level_ispendr_latch_persists(vm):
    """kvm-facts §3.2: the ISPENDR latch keeps the IRQ pending after the line
    drops, until ICPENDR."""
    make_level(vm, 100)
    vm.set_irq_level(100, True)
    wr(vm, R.GICD_ISPENDR + 12, 1 << 4)
    vm.set_irq_level(100, False)
    st = vm.irq(100)
    assert st.line_level is False and st.pending_latch is True
    assert ispendr_bit(vm, 100) == 1
    wr(vm, R.GICD_ICPENDR + 12, 1 << 4)
    assert ispendr_bit(vm, 100) == 0


# ========================================================================= PPIs
def test_ppis_reset_level(vm):
    """kvm-facts §1.6: PPIs reset level-triggered, SGIs edge."""
    for c in range(4):
        assert [vm.irq(i, vcpu=c).config for i in range(16, 32)] == ["level"] * 16
        assert [vm.irq(i, vcpu=c).config for i in range(16)] == ["edge"] * 16


@pytest.mark.parametrize("intid", [16, 23, 27, 31])
def test_ppi_is_per_vcpu(vm, intid):
    """kvm-facts §3.3: a PPI is injected into the given vCPU only; as a level
    IRQ its pending state follows the line."""
    vm.set_irq_level(intid, True, vcpu=1)
    st = vm.irq(intid, vcpu=1)
    assert st.line_level is True and st.pending is True
    for c in (0, 2, 3):
        s = vm.irq(intid, vcpu=c)
        assert s.line_level is False and s.pending is False
    assert sgi_rd(vm, 1, R.GICR_ISPENDR0) == 1 << intid
    assert sgi_rd(vm, 0, R.GICR_ISPENDR0) == 0
    vm.set_irq_level(intid, False, vcpu=1)
    assert vm.irq(intid, vcpu=1).pending is False
    assert sgi_rd(vm, 1, R.GICR_ISPENDR0) == 0


def test_ppi_latch_and_line_independent(vm):
    """kvm-facts §3.2: for a (level) PPI, ISPENDR0 sets the latch, which
    outlives the line; ICPENDR0 does not clear a high line."""
    vm.set_irq_level(27, True, vcpu=3)
    sgi_wr(vm, 3, R.GICR_ICPENDR0, 1 << 27)
    assert vm.irq(27, vcpu=3).pending is True
    sgi_wr(vm, 3, R.GICR_ISPENDR0, 1 << 27)
    vm.set_irq_level(27, False, vcpu=3)
    st = vm.irq(27, vcpu=3)
    assert st.pending_latch is True and st.line_level is False
    assert sgi_rd(vm, 3, R.GICR_ISPENDR0) == 1 << 27


# =============================================================== rejections
BAD_INTIDS = [0, 1, 15, 256, 257, 1019, 1020, 1022, 1023, 1024, 8192, 0xFFFF, 0xFFFFFFFF, -1, -32]


@pytest.mark.parametrize("intid", BAD_INTIDS)
@pytest.mark.parametrize("vcpu", [None, 0])
def test_bad_intid_rejected(vm, intid, vcpu):
    """kvm-facts §3.3 step 2 and KVM selftest vgic_irq.c: SGIs (0-15), INTIDs
    >= nr_irqs, the special 1020-1023, 1024, ~0 and negatives are refused
    with EINVAL (for any level), and change nothing."""
    before = [vm.irq(i) for i in range(32, 256)]
    for level in (True, False):
        with pytest.raises(vgic.KvmError) as ei:
            vm.set_irq_level(intid, level, vcpu=vcpu)
        assert ei.value.errno == errno.EINVAL
        assert isinstance(ei.value, OSError)
    assert [vm.irq(i) for i in range(32, 256)] == before
    assert all(not vm.irq(i, vcpu=0).pending for i in range(32))


@pytest.mark.parametrize("nr_irqs, first_bad", [(64, 64), (96, 96), (992, 992)])
def test_first_intid_past_nr_irqs(nr_irqs, first_bad):
    """kvm-facts §3.3: the last SPI of the VM (nr_irqs - 1) is accepted, the
    next INTID is EINVAL."""
    vm = vgic.VM(nr_vcpus=1, nr_irqs=nr_irqs)
    vm.set_irq_level(first_bad - 1, True)
    assert vm.irq(first_bad - 1).pending_latch is True
    with pytest.raises(vgic.KvmError) as ei:
        vm.set_irq_level(first_bad, True)
    assert ei.value.errno == errno.EINVAL


@pytest.mark.parametrize("intid", [16, 20, 31])
def test_ppi_without_vcpu(vm, intid):
    """kvm-facts §3.3 step 2: a private INTID without a vCPU is EINVAL."""
    with pytest.raises(vgic.KvmError) as ei:
        vm.set_irq_level(intid, True)
    assert ei.value.errno == errno.EINVAL
    assert all(not vm.irq(intid, vcpu=c).pending for c in range(4))


@pytest.mark.parametrize("vcpu", [4, 5, 511, 512, -1])
def test_ppi_unknown_vcpu(vm, vcpu):
    """kvm-facts §3.3 (KVM_IRQ_LINE: no such vCPU) -> EINVAL."""
    with pytest.raises(vgic.KvmError) as ei:
        vm.set_irq_level(20, True, vcpu=vcpu)
    assert ei.value.errno == errno.EINVAL
    assert all(not vm.irq(20, vcpu=c).pending for c in range(4))


def test_spi_ignores_vcpu_argument(vm):
    """KVM_IRQ_LINE passes no vCPU for an SPI (kvm_vgic_inject_irq(kvm, NULL,
    ...), kvm-facts §3.3): a vcpu given with an SPI, even one that does not
    exist, is ignored and the SPI is injected."""
    vm.set_irq_level(40, True, vcpu=9)
    assert vm.irq(40).pending_latch is True



# ------------------------------------------------------------ batch injection
@pytest.mark.parametrize("backend", ["core", "pure"])
def test_set_irq_levels_equals_calls_in_order(backend):
    """vm.set_irq_levels applies KVM_IRQ_LINE's rules (kvm-facts §3.3) entry
    by entry, in order: an edge SPI latches on a rising report and keeps the
    latch through a later 0; a level SPI's line ends at its last report; a
    PPI acts on its vCPU only."""
    if backend == "core":
        pytest.importorskip("vgic._core.mmio")
    vms = [vgic.VM(nr_vcpus=2, nr_irqs=64, backend=backend) for _ in range(2)]
    for vm in vms:
        make_level(vm, 41)
    intids = [40, 40, 41, 41, 41, 20, 20, 33]
    levels = [1, 0, 1, 0, 1, 1, 0, 1]
    vcpus = [0, 0, 0, 0, 0, 1, 0, 0]
    vms[0].set_irq_levels(intids, levels, vcpus)
    for i, lvl, c in zip(intids, levels, vcpus):
        vms[1].set_irq_level(i, lvl, vcpu=c)
    assert vms[0].state() == vms[1].state()
    assert vms[0].irq(40).pending_latch                  # edge: latched, 0 ignored
    assert vms[0].irq(41).line_level                     # level: last report 1
    assert vms[0].irq(20, vcpu=1).line_level and not vms[0].irq(20, vcpu=0).line_level


@pytest.mark.parametrize("backend", ["core", "pure"])
@pytest.mark.parametrize("intids,vcpus,index", [
    ([40, 5, 41], None, 1),                # an SGI: KVM_IRQ_LINE refuses it
    ([40, 41, 64], None, 2),               # beyond nr_irqs
    ([40, 20], None, 1),                   # a PPI needs a vCPU
    ([40, 20], [0, 2], 1),                 # a vCPU that does not exist
])
def test_set_irq_levels_refused_entry_changes_nothing(backend, intids, vcpus, index):
    """kvm-facts §3.3: what KVM_IRQ_LINE refuses is EINVAL; the batch form
    checks every entry first, names the refused one, and applies none."""
    if backend == "core":
        pytest.importorskip("vgic._core.mmio")
    vm = vgic.VM(nr_vcpus=2, nr_irqs=64, backend=backend)
    before = vm.state()
    with pytest.raises(vgic.KvmError, match=rf"intids\[{index}\]") as exc:
        vm.set_irq_levels(intids, [1] * len(intids), vcpus)
    assert exc.value.errno == errno.EINVAL
    assert vm.state() == before


def test_set_irq_levels_shapes():
    vm = vgic.VM(nr_vcpus=1, nr_irqs=64)
    vm.set_irq_levels([], [])
    with pytest.raises(ValueError, match="levels"):
        vm.set_irq_levels([40, 41], [1])
    with pytest.raises(TypeError, match="intids"):
        vm.set_irq_levels([40.0], [1])
    with pytest.raises(TypeError, match="vcpus"):
        vm.set_irq_levels([40], [1], [[0]])


@pytest.mark.parametrize("mod_name", ["vgic._core.mmio", "vgic._pure.mmio"])
def test_gic_batch_checks_bounds(mod_name):
    """The Gic kernel checks its own bounds too (it is public and runs with
    bounds checking off): an INTID at or above nr_irqs or a private INTID
    with a vCPU out of range is a ValueError naming the entry."""
    pytest.importorskip(mod_name)
    gic = vgic.VM(nr_vcpus=2, nr_irqs=64, backend="core" if "_core" in mod_name else "pure").gic.gic
    with pytest.raises(ValueError, match=r"intids\[1\]"):
        gic.set_irq_level_batch([0, 0], [40, 99], [1, 1])
    with pytest.raises(ValueError, match=r"vcpus\[0\]"):
        gic.set_irq_level_batch([7], [20], [1])
    with pytest.raises(ValueError, match=r"intids\[0\]"):
        gic.set_irq_level_batch([0], [-1], [1])
