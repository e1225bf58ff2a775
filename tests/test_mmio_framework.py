"""The MMIO framework rules shared by every GIC frame.

Rules under test (kvm-facts §2 "MMIO framework", from Linux vgic-mmio.c
check_region / vgic_find_mmio_region / dispatch_mmio_*; register maps from
kvm-facts §1.2, §1.5, §1.6 and IHI 0069 chapter 12):

* a region only accepts the access widths of its access_flags; any other
  width reads as zero and ignores writes (never a fault);
* accesses must be naturally aligned, else RAZ/WI;
* 2-byte accesses are never valid;
* a per-IRQ access whose first INTID is not allocated (>= nr_irqs) is RAZ/WI;
* an offset that no region covers is RAZ/WI;
* the region tables are sorted and non-overlapping (KVM bsearches them).

Plus the library's own contract for the per-access entry points
(/work/shared/API.md "Guest MMIO", _core/mmio.pyi): argument validation,
vgic.UnmappedAccess outside every frame, and mmio_replay's
validate-everything-first behaviour.

Expected values are taken from the facts, never from running the code.
"""
from __future__ import annotations

import importlib

import numpy as np
import pytest

import vgic
from vgic import _backend, regmap
from vgic.state import diff

# ----------------------------------------------------------------- helpers
SIZE_FLAG = {1: regmap.W8, 4: regmap.W32, 8: regmap.W64}

# Regions that KVM implements as RAZ/WI (kvm-facts §1.2, §1.5, §1.6), so a
# read of them is 0 whatever the width; every other region must read
# non-zero somewhere once the state has been scrambled.
RAZ_REGION_NAMES = {
    "GICD_ITARGETSR", "GICD_IGRPMODR",
    "GICR_STATUSR", "GICR_WAKER", "GICR_INVLPIR", "GICR_INVALLR", "GICR_SYNCR",
    "GICR_IGRPMODR0", "GICR_NSACR",
}


def is_raz_region(region: regmap.Region) -> bool:
    # The distributor copies of private INTIDs are RAZ/WI with ARE=1
    # (kvm-facts §1.2, the "SHARED" split).
    return region.name in RAZ_REGION_NAMES or region.name.endswith("_PRIVATE")


def frame_base(vm: vgic.VM, frame: int, rd: int = 1) -> int:
    """Guest physical base of a frame; redistributor frames of vCPU `rd`
    (kvm-facts §1.1: RD_base at redist_base + rd*0x20000, SGI_base +0x10000);
    the ITS frames at its_base (+0x10000 for the translation frame)."""
    if frame == regmap.FRAME_GICD:
        return vm.dist_base
    if frame in (regmap.FRAME_GITS, regmap.FRAME_GITS_TRANSLATER):
        return vm.its_base + (0x10000 if frame == regmap.FRAME_GITS_TRANSLATER else 0)
    base = vm.redist_base + rd * 0x20000
    return base + (0x10000 if frame == regmap.FRAME_GICR_SGI else 0)


def assert_same_state(a: dict, b: dict) -> None:
    d = diff(a, b, limit=1)
    assert not d, d[0]


def make_trace(records) -> np.ndarray:
    """records: iterable of (addr, size, write, value, vcpu)."""
    records = list(records)
    trace = np.zeros(len(records), dtype=vgic.MMIO_ACCESS)
    for i, (addr, size, write, value, vcpu) in enumerate(records):
        trace[i]["addr"] = addr
        trace[i]["size"] = size
        trace[i]["write"] = int(write)
        trace[i]["value"] = value
        trace[i]["vcpu"] = vcpu
    return trace


def scrambled_vm(nr_vcpus: int = 4, nr_irqs: int = 992) -> vgic.VM:
    """A VM where every stateful register reads non-zero somewhere.

    Everything is done by guest MMIO with the semantics of kvm-facts §1.2,
    §1.5, §1.6: SPIs enabled, pending, active, priority 0xF8, routed to
    vCPU 1 (Aff0 = 1), distributor enabled; per vCPU all private INTIDs
    enabled, pending, active, priority 0xF8; PROPBASER non-zero; an ITS
    with valid tables and command queue, enabled, one (empty) command run
    (its-facts-A §1.3).
    """
    vm = vgic.VM(nr_vcpus=nr_vcpus, nr_irqs=nr_irqs, its=True)
    d = vm.dist_base
    recs = []
    for intid in range(32, nr_irqs, 32):
        for reg in (regmap.GICD_ISENABLER, regmap.GICD_ISPENDR, regmap.GICD_ISACTIVER):
            recs.append((d + reg + intid // 8, 4, 1, 0xFFFFFFFF, 0))
    for intid in range(32, nr_irqs, 4):
        recs.append((d + regmap.GICD_IPRIORITYR + intid, 4, 1, 0xF8F8F8F8, 0))
    for intid in range(32, nr_irqs):
        recs.append((d + regmap.GICD_IROUTER + 8 * intid, 8, 1, 1, 0))
    recs.append((d + regmap.GICD_CTLR, 4, 1, regmap.GICD_CTLR_ENABLE_G1, 0))
    for v in range(nr_vcpus):
        sgi = frame_base(vm, regmap.FRAME_GICR_SGI, v)
        rd = frame_base(vm, regmap.FRAME_GICR_RD, v)
        for reg in (regmap.GICR_ISENABLER0, regmap.GICR_ISPENDR0, regmap.GICR_ISACTIVER0):
            recs.append((sgi + reg, 4, 1, 0xFFFFFFFF, v))
        for i in range(0, 32, 4):
            recs.append((sgi + regmap.GICR_IPRIORITYR0 + i, 4, 1, 0xF8F8F8F8, v))
        # PA bits of PROPBASER survive sanitising (IHI 0069 §12.11.29).
        recs.append((rd + regmap.GICR_PROPBASER, 8, 1, 0x12345000, v))
    its = vm.its_base
    valid = 1 << 63
    recs.append((its + regmap.GITS_CBASER, 8, 1, valid | (vm.ram_base + 0x10000), 0))
    recs.append((its + regmap.GITS_BASER, 8, 1, valid | (vm.ram_base + 0x20000), 0))
    recs.append((its + regmap.GITS_BASER + 8, 8, 1, valid | (vm.ram_base + 0x30000), 0))
    recs.append((its + regmap.GITS_CTLR, 4, 1, regmap.GITS_CTLR_ENABLED, 0))
    recs.append((its + regmap.GITS_CWRITER, 8, 1, 0x20, 0))    # one all-zero command: ignored
    vm.mmio_replay(make_trace(recs))
    return vm


ALL_REGIONS = [(frame, region) for frame, f in enumerate(regmap.FRAMES) for region in f.regions]


def region_id(param) -> str:
    if isinstance(param, regmap.Region):
        return param.name
    return regmap.FRAME_NAMES[param]


# ===================================================== access-width rules
@pytest.mark.parametrize("frame,region", ALL_REGIONS, ids=[r.name for _, r in ALL_REGIONS])
def test_disallowed_width_is_raz_wi(frame, region):
    """kvm-facts §2 (check_region): an access whose width is not in the
    region's access_flags reads 0 and its write is ignored; 2-byte
    accesses are never allowed.  Widths per region: kvm-facts §1.2/§1.5/§1.6."""
    vm = scrambled_vm()
    base = frame_base(vm, frame)
    allowed = [s for s in (1, 4, 8) if region.widths & SIZE_FLAG[s]]
    disallowed = [s for s in (1, 2, 4, 8) if s not in allowed]
    assert 2 in disallowed and allowed
    mid = region.offset + ((region.length // 2) & ~7)
    slots = sorted({region.offset, mid})

    # The state behind this region is visible: an allowed-width read of one
    # of the slots is non-zero, so a RAZ result below means something.
    if not is_raz_region(region):
        seen = [vm.mmio_read(base + s, size) for s in slots for size in allowed if s % size == 0]
        assert any(seen), f"{region.name}: no visible state at {slots}"

    before = vm.state()
    tried = 0
    for slot in slots:
        for size in disallowed:
            off = slot - slot % size
            if off < region.offset:
                continue
            tried += 1
            assert vm.mmio_read(base + off, size) == 0, (region.name, hex(off), size)
            for value in (0, (1 << (8 * size)) - 1):
                vm.mmio_write(base + off, size, value)
    assert tried
    assert_same_state(before, vm.state())


def test_allowed_widths_work_positive_control():
    """The counterpart of the width rule (kvm-facts §1.2, §1.4): IPRIORITYR
    takes byte and word accesses, IROUTER word and doubleword ones."""
    vm = vgic.VM(nr_vcpus=2, nr_irqs=64)
    d = vm.dist_base
    vm.mmio_write(d + regmap.GICD_IPRIORITYR + 33, 1, 0x48)
    assert vm.mmio_read(d + regmap.GICD_IPRIORITYR + 32, 4) == 0x4800
    assert vm.mmio_read(d + regmap.GICD_IPRIORITYR + 33, 1) == 0x48
    vm.mmio_write(d + regmap.GICD_IROUTER + 8 * 40, 8, 1)
    assert vm.mmio_read(d + regmap.GICD_IROUTER + 8 * 40, 8) == 1
    assert vm.mmio_read(d + regmap.GICD_IROUTER + 8 * 40, 4) == 1
    assert vm.irq(40).target_vcpu == 1


# ========================================================= alignment rule
MISALIGNED = [
    # (frame, offset, size): each is a valid width for its region but not
    # naturally aligned (kvm-facts §2 step 2: IS_ALIGNED(addr, len)).
    (regmap.FRAME_GICD, regmap.GICD_ISENABLER + 4 + 1, 4),
    (regmap.FRAME_GICD, regmap.GICD_ISENABLER + 4 + 2, 4),
    (regmap.FRAME_GICD, regmap.GICD_IPRIORITYR + 32 + 2, 4),
    (regmap.FRAME_GICD, regmap.GICD_IROUTER + 8 * 32 + 4, 8),
    (regmap.FRAME_GICD, regmap.GICD_CTLR + 1, 4),
    (regmap.FRAME_GICD, regmap.GICD_PIDR2 + 2, 4),
    (regmap.FRAME_GICR_RD, regmap.GICR_TYPER + 4, 8),
    (regmap.FRAME_GICR_RD, regmap.GICR_PROPBASER + 2, 4),
    (regmap.FRAME_GICR_RD, regmap.GICR_PENDBASER + 4, 8),
    (regmap.FRAME_GICR_SGI, regmap.GICR_ISENABLER0 + 1, 4),
    (regmap.FRAME_GICR_SGI, regmap.GICR_IPRIORITYR0 + 6, 4),
]


@pytest.mark.parametrize("frame,offset,size", MISALIGNED,
                         ids=[f"{regmap.FRAME_NAMES[f]}+{o:#x}/{s}" for f, o, s in MISALIGNED])
def test_misaligned_access_is_raz_wi(frame, offset, size):
    """kvm-facts §2: an access not naturally aligned to its length is
    invalid: it reads 0 and writes are ignored."""
    vm = scrambled_vm(nr_irqs=256)
    base = frame_base(vm, frame)
    # The aligned word around it is non-zero in the scrambled state ...
    aligned = offset & ~3
    assert vm.mmio_read(base + aligned, 4) != 0 or vm.mmio_read(base + (offset & ~7), 4) != 0
    before = vm.state()
    # ... but the misaligned access sees nothing and changes nothing.
    assert vm.mmio_read(base + offset, size) == 0
    vm.mmio_write(base + offset, size, (1 << (8 * size)) - 1)
    vm.mmio_write(base + offset, size, 0)
    assert_same_state(before, vm.state())


def test_byte_access_is_always_aligned_for_priority():
    """IPRIORITYR accepts byte accesses at any offset (kvm-facts §1.2: widths
    32, 8), so every byte of a word addresses its own INTID."""
    vm = vgic.VM(nr_vcpus=1, nr_irqs=64)
    base = vm.dist_base + regmap.GICD_IPRIORITYR + 36
    for i, prio in enumerate((0x10, 0x28, 0x30, 0xF8)):
        vm.mmio_write(base + i, 1, prio)
    assert vm.mmio_read(base, 4) == 0xF8302810
    assert [vm.irq(36 + i).priority for i in range(4)] == [0x10, 0x28, 0x30, 0xF8]


# ================================================== 2-byte accesses
def test_halfword_access_is_raz_wi_everywhere():
    """kvm-facts §2 step 2: the access length must be 1, 4 or 8 - a 2-byte
    access is invalid in every region of every frame (read 0, write
    ignored).  Every 2-aligned offset of every region is tried."""
    vm = scrambled_vm(nr_irqs=256)
    reads, writes = [], []
    for frame, rows in enumerate(f.regions for f in regmap.FRAMES):
        base = frame_base(vm, frame)
        for region in rows:
            for off in range(region.offset, region.offset + region.length, 2):
                reads.append((base + off, 2, 0, 0, 0))
                writes.append((base + off, 2, 1, 0xFFFF, 0))
                writes.append((base + off, 2, 1, 0x0000, 0))
    before = vm.state()
    out = vm.mmio_replay(make_trace(reads))
    assert len(out) == len(reads)
    assert not out.any(), f"{np.count_nonzero(out)} halfword reads returned data"
    vm.mmio_replay(make_trace(writes))
    assert_same_state(before, vm.state())
    # Positive control: the same registers are visible with word accesses.
    assert vm.mmio_read(vm.dist_base + regmap.GICD_ISENABLER + 4, 4) == 0xFFFFFFFF


def test_halfword_single_calls():
    """Same rule through mmio_read/mmio_write (kvm-facts §2)."""
    vm = vgic.VM(nr_vcpus=1, nr_irqs=64)
    d = vm.dist_base
    vm.mmio_write(d + regmap.GICD_ISENABLER + 4, 2, 0xFFFF)
    assert vm.mmio_read(d + regmap.GICD_ISENABLER + 4, 4) == 0
    vm.mmio_write(d + regmap.GICD_CTLR, 2, regmap.GICD_CTLR_ENABLE_G1)
    assert vm.mmio_read(d + regmap.GICD_CTLR, 4) == 0x50
    assert vm.mmio_read(d + regmap.GICD_CTLR, 2) == 0
    assert vm.mmio_read(d + regmap.GICD_TYPER, 2) == 0


# ============================================ unallocated INTIDs are RAZ/WI
# Register bases and bits per IRQ of the distributor's per-IRQ registers
# (kvm-facts §1.2).  INTID of an offset: (offset - base) * 8 / bpi.
PER_IRQ_REGS = [
    ("GICD_IGROUPR", regmap.GICD_IGROUPR, 1, 4),
    ("GICD_ISENABLER", regmap.GICD_ISENABLER, 1, 4),
    ("GICD_ICENABLER", regmap.GICD_ICENABLER, 1, 4),
    ("GICD_ISPENDR", regmap.GICD_ISPENDR, 1, 4),
    ("GICD_ICPENDR", regmap.GICD_ICPENDR, 1, 4),
    ("GICD_ISACTIVER", regmap.GICD_ISACTIVER, 1, 4),
    ("GICD_ICACTIVER", regmap.GICD_ICACTIVER, 1, 4),
    ("GICD_IPRIORITYR", regmap.GICD_IPRIORITYR, 8, 4),
    ("GICD_IPRIORITYR/8", regmap.GICD_IPRIORITYR, 8, 1),
    ("GICD_ICFGR", regmap.GICD_ICFGR, 2, 4),
    ("GICD_IROUTER", regmap.GICD_IROUTER, 64, 8),
    ("GICD_IROUTER/32", regmap.GICD_IROUTER, 64, 4),
]


@pytest.mark.parametrize("name,reg,bpi,size", PER_IRQ_REGS, ids=[p[0] for p in PER_IRQ_REGS])
def test_unallocated_intids_are_raz_wi(name, reg, bpi, size):
    """kvm-facts §2 step 3: for per-IRQ regions the first INTID of the
    access must be < nr_irqs (nr_spis + 32); otherwise RAZ/WI.  With
    nr_irqs = 64 every access describing INTIDs 64..1023 is tried."""
    vm = vgic.VM(nr_vcpus=2, nr_irqs=64)
    d = vm.dist_base
    # Give the allocated SPIs visible state with non-default values.
    for r in (regmap.GICD_ISENABLER, regmap.GICD_ISPENDR, regmap.GICD_ISACTIVER):
        vm.mmio_write(d + r + 4, 4, 0xFFFFFFFF)
    for intid in range(32, 64, 4):
        vm.mmio_write(d + regmap.GICD_IPRIORITYR + intid, 4, 0x80808080)
    for intid in range(32, 64):
        vm.mmio_write(d + regmap.GICD_IROUTER + 8 * intid, 8, 1)
    # Positive control: the last allocated INTID (63) is visible.
    last_off = reg + (63 * bpi // 8) // size * size
    assert vm.mmio_read(d + last_off, size) != 0, hex(last_off)

    first_unallocated = reg + 64 * bpi // 8
    end = reg + 1024 * bpi // 8
    offsets = list(range(first_unallocated, end, size))
    reads = [(d + off, size, 0, 0, 0) for off in offsets]
    ones = (1 << (8 * size)) - 1
    writes = [(d + off, size, 1, v, 0) for off in offsets for v in (ones, 0x01)]
    before = vm.state()
    out = vm.mmio_replay(make_trace(reads))
    assert not out.any(), f"{name}: unallocated INTIDs read {out[out != 0][:4]}"
    vm.mmio_replay(make_trace(writes))
    assert_same_state(before, vm.state())
    # GICD_TYPER.ITLinesNumber still says 64 INTIDs (kvm-facts §1.3).
    assert vm.mmio_read(d + regmap.GICD_TYPER, 4) == 0x00480001


# ===================================================== unknown offsets
UNKNOWN_OFFSETS = [
    # Distributor registers KVM does not register (kvm-facts §1.2 "Not present").
    (regmap.FRAME_GICD, 0x0014, "gap after GICD_STATUSR"),
    (regmap.FRAME_GICD, 0x0040, "GICD_SETSPI_NSR"),
    (regmap.FRAME_GICD, 0x0048, "GICD_CLRSPI_NSR"),
    (regmap.FRAME_GICD, 0x0050, "GICD_SETSPI_SR"),
    (regmap.FRAME_GICD, 0x0058, "GICD_CLRSPI_SR"),
    (regmap.FRAME_GICD, 0x0E00, "GICD_NSACR"),
    (regmap.FRAME_GICD, 0x0F00, "GICD_SGIR"),
    (regmap.FRAME_GICD, 0x0F10, "GICD_CPENDSGIR"),
    (regmap.FRAME_GICD, 0x0F20, "GICD_SPENDSGIR"),
    (regmap.FRAME_GICD, 0x1000, "GICD_IGROUPRnE"),
    (regmap.FRAME_GICD, 0x1200, "GICD_ISENABLERnE"),
    (regmap.FRAME_GICD, 0x2000, "GICD_IPRIORITYRnE"),
    (regmap.FRAME_GICD, 0x3000, "GICD_ICFGRnE"),
    (regmap.FRAME_GICD, 0x8000, "GICD_IROUTERnE"),
    (regmap.FRAME_GICD, 0xFFCC, "below GICD_IDREGS"),
    # Redistributor RD_base (kvm-facts §1.5 lists every register there is).
    (regmap.FRAME_GICR_RD, 0x0018, "gap after GICR_WAKER"),
    (regmap.FRAME_GICR_RD, 0x0040, "GICR_SETLPIR"),
    (regmap.FRAME_GICR_RD, 0x0048, "GICR_CLRLPIR"),
    (regmap.FRAME_GICR_RD, 0x00C4, "after GICR_SYNCR"),
    (regmap.FRAME_GICR_RD, 0x0100, "gap"),
    (regmap.FRAME_GICR_RD, 0xFFCC, "below GICR_IDREGS"),
    # SGI_base (kvm-facts §1.6).
    (regmap.FRAME_GICR_SGI, 0x0000, "SGI_base + 0"),
    (regmap.FRAME_GICR_SGI, 0x0084, "GICR_IGROUPR1 (extended PPI)"),
    (regmap.FRAME_GICR_SGI, 0x0104, "GICR_ISENABLER1 (extended PPI)"),
    (regmap.FRAME_GICR_SGI, 0x0420, "after GICR_IPRIORITYR7"),
    (regmap.FRAME_GICR_SGI, 0x0C08, "GICR_ICFGR2 (extended PPI)"),
    (regmap.FRAME_GICR_SGI, 0x0E04, "after GICR_NSACR"),
    (regmap.FRAME_GICR_SGI, 0x0F00, "gap"),
    (regmap.FRAME_GICR_SGI, 0xFFE8, "no ID registers in SGI_base"),
]


@pytest.mark.parametrize("frame,offset,what", UNKNOWN_OFFSETS, ids=[u[2] for u in UNKNOWN_OFFSETS])
def test_unknown_offset_is_raz_wi(frame, offset, what):
    """kvm-facts §1.2 / §2: an offset no region covers is read as zero and
    write-ignored, never a fault (e.g. GICD_SGIR does not exist for v3)."""
    vm = scrambled_vm(nr_irqs=256)
    base = frame_base(vm, frame)
    before = vm.state()
    for size in (1, 4, 8):
        if offset % size == 0:
            assert vm.mmio_read(base + offset, size) == 0
    # Values that would do something if the register existed: SPI 40 for
    # SETSPI, "SGI 5 to vCPU 0" for GICD_SGIR, all-ones otherwise.
    for value in (40, 0x00050001, 0xFFFFFFFF, 0):
        vm.mmio_write(base + offset, 4, value)
    if offset % 8 == 0:
        vm.mmio_write(base + offset, 8, (1 << 64) - 1)
    assert_same_state(before, vm.state())


def test_setspi_does_not_pend_an_spi():
    """GICD_SETSPI_NSR is not emulated (kvm-facts §1.2), so writing an SPI
    number there leaves the SPI idle."""
    vm = vgic.VM(nr_vcpus=1, nr_irqs=64)
    vm.mmio_write(vm.dist_base + 0x40, 4, 40)
    assert not vm.irq(40).pending_latch
    assert vm.mmio_read(vm.dist_base + regmap.GICD_ISPENDR + 4, 4) == 0


# ===================================================== region tables
def _module(name):
    return importlib.import_module(name)


def test_regions_sorted_and_disjoint():
    """kvm-facts §2: the region table must be sorted by offset (binary
    search) and regions must not overlap; they fit in the 64 KiB frame
    (kvm-facts §1.1)."""
    mod = _backend.mmio
    for frame in range(len(regmap.FRAMES)):
        rows = mod.regions(frame)
        if frame == regmap.FRAME_GITS_TRANSLATER:
            # KVM registers no region in the ITS translation frame (its-facts-A §1.1).
            assert rows == []
            continue
        assert rows, frame
        offsets = [r[1] for r in rows]
        assert offsets == sorted(offsets)
        for (n1, o1, l1, *_), (n2, o2, *_rest) in zip(rows, rows[1:]):
            assert o1 + l1 <= o2, f"{n1} overlaps {n2}"
        assert rows[-1][1] + rows[-1][2] <= 0x10000
        assert all(r[1] % 4 == 0 and r[2] % 4 == 0 and r[2] > 0 for r in rows)


def test_regions_match_regmap_tables():
    """regions(frame) is the compiled form of vgic.regmap.FRAMES (mmio.pyi)."""
    mod = _backend.mmio
    for frame, table in enumerate(f.regions for f in regmap.FRAMES):
        expected = sorted(((r.name, r.offset, r.length, r.widths, r.bpi, r.first_intid, r.ops)
                           for r in table), key=lambda row: row[1])
        assert [tuple(row) for row in mod.regions(frame)] == expected


def test_regions_identical_between_core_and_pure():
    """The Cython core and the pure-Python twin share one interface and one
    register map (_core/mmio.pyi)."""
    core = pytest.importorskip("vgic._core.mmio")
    pure = _module("vgic._pure.mmio")
    for frame in range(len(regmap.FRAMES)):
        assert [tuple(r) for r in core.regions(frame)] == [tuple(r) for r in pure.regions(frame)]


@pytest.mark.parametrize("frame", [-1, len(regmap.FRAMES), 100])
def test_regions_bad_frame(frame):
    """mmio.pyi: frames are the indices of vgic.regmap.FRAMES (GICD, GICR_RD,
    GICR_SGI, GITS, GITS_TRANSLATER); others are a ValueError."""
    with pytest.raises(ValueError):
        _backend.mmio.regions(frame)


def test_region_table_facts():
    """Spot checks of the tables against kvm-facts §1.2/§1.5/§1.6."""
    def find(frame, name):
        (row,) = [r for r in _backend.mmio.regions(frame) if r[0] == name]
        return row
    # GICD_CTLR region covers CTLR/TYPER/IIDR/TYPER2: 16 bytes, 32-bit only.
    assert find(regmap.FRAME_GICD, "GICD_CTLR")[1:4] == (0x0, 16, regmap.W32)
    # IPRIORITYR: byte and word; real part starts after the 32 private bytes.
    assert find(regmap.FRAME_GICD, "GICD_IPRIORITYR")[1:4] == (0x420, 0x3E0, regmap.W32 | regmap.W8)
    # IROUTER: 64- and 32-bit, real part from INTID 32 (0x6100).
    assert find(regmap.FRAME_GICD, "GICD_IROUTER")[1:4] == (0x6100, 0x1F00, regmap.W64 | regmap.W32)
    # ICFGR: 2 bits per IRQ, 32-bit only, INTIDs 0-31 (8 bytes) RAZ/WI.
    assert find(regmap.FRAME_GICD, "GICD_ICFGR")[1:4] == (0xC08, 0xF8, regmap.W32)
    assert find(regmap.FRAME_GICD, "GICD_IDREGS")[1:4] == (0xFFD0, 0x30, regmap.W32)
    assert find(regmap.FRAME_GICR_RD, "GICR_TYPER")[1:4] == (0x8, 8, regmap.W64 | regmap.W32)
    assert find(regmap.FRAME_GICR_SGI, "GICR_IPRIORITYR0")[1:4] == (0x400, 32, regmap.W32 | regmap.W8)
    assert find(regmap.FRAME_GICR_SGI, "GICR_ICFGR0")[1:4] == (0xC00, 8, regmap.W32)


# ===================================================== lookup modes
@pytest.fixture
def restore_lookup():
    mod = _backend.mmio
    saved = mod.get_lookup()
    yield mod
    mod.set_lookup(saved)


def test_lookup_mode_switch(restore_lookup):
    """mmio.pyi: set_lookup takes "direct" or "bsearch" (else ValueError,
    mode unchanged) and get_lookup reports the mode in use."""
    mod = restore_lookup
    mod.set_lookup("bsearch")
    assert mod.get_lookup() == "bsearch"
    mod.set_lookup("direct")
    assert mod.get_lookup() == "direct"
    with pytest.raises(ValueError):
        mod.set_lookup("linear")
    assert mod.get_lookup() == "direct"


def _sweep(vm: vgic.VM) -> dict:
    """Every 4-byte offset of every frame, read at widths 1, 4 and 8, then
    written with a pattern; returns what was read and the state after."""
    out = {}
    frames = [(regmap.FRAME_GICD, 0), (regmap.FRAME_GICR_RD, 0), (regmap.FRAME_GICR_SGI, 0),
              (regmap.FRAME_GICR_RD, 3), (regmap.FRAME_GICR_SGI, 3)]
    for frame, rd in frames:
        base = frame_base(vm, frame, rd)
        reads = [(base + off, size, 0, 0, 0) for off in range(0, 0x10000, 4) for size in (1, 4, 8)]
        out[("read", frame, rd)] = vm.mmio_replay(make_trace(reads))
        uread = [vm.bus.uaccess_read(frame, rd, off) for off in range(0, 0x10000, 4)]
        out[("uread", frame, rd)] = uread
        out[("has", frame, rd)] = [vm.bus.has_region(frame, off) for off in range(0, 0x10000, 2)]
    for frame, rd in frames:
        base = frame_base(vm, frame, rd)
        writes = [(base + off, 4, 1, (off * 0x9E3779B1) & 0xFFFFFFFF, 1)
                  for off in range(0, 0x10000, 4) if not (frame == 0 and off == 0)]
        vm.mmio_replay(make_trace(writes))
    out["state"] = vm.state()
    return out


def test_bsearch_and_direct_lookup_agree(restore_lookup):
    """Both lookups must find the same region for every offset (kvm-facts §2:
    KVM's binary search over the sorted table is the reference)."""
    mod = restore_lookup
    results = {}
    for mode in ("direct", "bsearch"):
        mod.set_lookup(mode)
        assert mod.get_lookup() == mode
        results[mode] = _sweep(scrambled_vm(nr_irqs=256))
    a, b = results["direct"], results["bsearch"]
    assert a.keys() == b.keys()
    for key in a:
        if key == "state":
            assert_same_state(a[key], b[key])
        elif isinstance(a[key], np.ndarray):
            diff = np.nonzero(a[key] != b[key])[0]
            assert diff.size == 0, f"{key}: first difference at record {diff[:3]}"
        else:
            assert a[key] == b[key], key
    # Non-vacuous: the sweep saw real registers (GICD_TYPER at offset 4,
    # read as record 1*3+1): ITLinesNumber 7, and with the ITS IDbits 15 and
    # LPIS (its-facts-A §3.5).
    assert a[("read", regmap.FRAME_GICD, 0)][4] == 0x007A0007


# ===================================================== argument validation
@pytest.fixture
def vm4():
    return vgic.VM(nr_vcpus=4, nr_irqs=256)


@pytest.mark.parametrize("size", [0, 3, 5, 16, -1, 2**64 + 4])
def test_bad_size_is_value_error(vm4, size):
    """API.md: a size outside (1, 2, 4, 8) raises ValueError."""
    with pytest.raises(ValueError):
        vm4.mmio_read(vm4.dist_base, size)
    with pytest.raises(ValueError):
        vm4.mmio_write(vm4.dist_base, size, 0)


@pytest.mark.parametrize("addr", [-1, -8, -(2**63)])
def test_negative_address_is_value_error(vm4, addr):
    """mmio.pyi: a negative address raises ValueError naming it."""
    with pytest.raises(ValueError, match=str(addr)):
        vm4.mmio_read(addr, 4)
    with pytest.raises(ValueError, match=str(addr)):
        vm4.mmio_write(addr, 4, 0)


@pytest.mark.parametrize("size,value", [(1, 0x100), (2, 0x10000), (4, 1 << 32),
                                        (8, 1 << 64), (4, -1), (1, -0x80)])
def test_value_wider_than_access_is_value_error(vm4, size, value):
    """mmio.pyi: a value that does not fit in `size` bytes (or is negative)
    raises ValueError, and nothing is written."""
    before = vm4.state()
    with pytest.raises(ValueError):
        vm4.mmio_write(vm4.dist_base + regmap.GICD_ISENABLER + 4, size, value)
    assert_same_state(before, vm4.state())


@pytest.mark.parametrize("vcpu", [4, 5, 512, -1, 2**64])
def test_vcpu_out_of_range_is_value_error(vm4, vcpu):
    """mmio.pyi: a vCPU index out of range raises ValueError."""
    with pytest.raises(ValueError):
        vm4.mmio_read(vm4.dist_base, 4, vcpu)
    with pytest.raises(ValueError):
        vm4.mmio_write(vm4.dist_base + regmap.GICD_CTLR, 4, 2, vcpu)
    assert vm4.mmio_read(vm4.dist_base, 4) == 0x50


def _unmapped(vm):
    return [
        0,
        vm.dist_base - 4,
        vm.dist_base + 0x10000,                   # nothing mapped after the distributor
        vm.redist_base - 4,
        vm.redist_base + vm.nr_vcpus * 0x20000,   # past the last redistributor
        vm.redist_base + vm.nr_vcpus * 0x20000 + 0x10000,
        vm.ram_base,                              # RAM is not a GIC frame
        2**64 - 8,
    ]


def test_unmapped_address_raises(vm4):
    """API.md: an address outside every frame raises vgic.UnmappedAccess (a
    VgicError) carrying .addr; the frame edges themselves are mapped."""
    for addr in _unmapped(vm4):
        with pytest.raises(vgic.UnmappedAccess) as exc:
            vm4.mmio_read(addr, 4)
        assert exc.value.addr == addr
        assert isinstance(exc.value, vgic.VgicError)
        with pytest.raises(vgic.UnmappedAccess) as exc:
            vm4.mmio_write(addr, 4, 0)
        assert exc.value.addr == addr
    # Edges that are inside frames: GICD last word (IDREGS, PIDR... reads 0),
    # the last redistributor's last SGI_base word.
    assert vm4.mmio_read(vm4.dist_base + 0xFFFC, 4) == 0
    assert vm4.mmio_read(vm4.redist_base + 4 * 0x20000 - 4, 4) == 0
    # vCPU 3's RD_base PIDR2 reads 0x3B (kvm-facts §1.5).
    assert vm4.mmio_read(vm4.redist_base + 3 * 0x20000 + regmap.GICR_PIDR2, 4) == 0x3B


NON_INT_CASES = [
    # (argument, bad value)
    ("addr", 134217728.0), ("addr", "0x8000000"), ("addr", None), ("addr", b"\x00"),
    ("size", 4.0), ("size", "4"), ("size", None), ("size", [4]),
    ("value", 2.0), ("value", "2"), ("value", None),
    ("vcpu", 0.0), ("vcpu", "0"), ("vcpu", None),
]


@pytest.mark.parametrize("arg,bad", NON_INT_CASES, ids=[f"{a}={b!r}" for a, b in NON_INT_CASES])
def test_non_int_arguments_are_type_error(vm4, arg, bad):
    """mmio.pyi / API.md: addresses, sizes, values and vCPUs are integers;
    anything else - a float with an integral value included - raises
    TypeError and does nothing."""
    args = {"addr": vm4.dist_base + regmap.GICD_CTLR, "size": 4, "value": 2, "vcpu": 0}
    args[arg] = bad
    if arg != "value":
        with pytest.raises(TypeError):
            vm4.mmio_read(args["addr"], args["size"], args["vcpu"])
    with pytest.raises(TypeError):
        vm4.mmio_write(args["addr"], args["size"], args["value"], args["vcpu"])
    # The write (GICD_CTLR.EnableGrp1) did not happen.
    assert vm4.mmio_read(vm4.dist_base + regmap.GICD_CTLR, 4) == 0x50


# ===================================================== mmio_replay
def test_replay_wrong_container_types(vm4):
    """API.md / mmio.pyi: the trace must be a 1-D numpy array of
    vgic.MMIO_ACCESS; anything else is TypeError."""
    good = make_trace([(vm4.dist_base, 4, 0, 0, 0)])
    with pytest.raises(TypeError):
        vm4.mmio_replay(good.tolist())
    with pytest.raises(TypeError):
        vm4.mmio_replay([(vm4.dist_base, 0, 0, 4, 0)])
    with pytest.raises(TypeError):
        vm4.mmio_replay(np.zeros(3, dtype=np.uint64))
    with pytest.raises(TypeError):
        vm4.mmio_replay(np.zeros(24, dtype=np.uint8))
    # Same field names, different (packed) layout: still the wrong dtype.
    packed = np.dtype([("addr", "<u8"), ("value", "<u8"), ("vcpu", "<u2"), ("size", "u1"),
                       ("write", "u1")])
    assert packed != vgic.MMIO_ACCESS
    with pytest.raises(TypeError):
        vm4.mmio_replay(np.zeros(2, dtype=packed))
    with pytest.raises(TypeError):
        vm4.mmio_replay(np.zeros((2, 2), dtype=vgic.MMIO_ACCESS))
    with pytest.raises(TypeError):
        vm4.mmio_replay(np.zeros((), dtype=vgic.MMIO_ACCESS))
    with pytest.raises(TypeError):
        vm4.mmio_replay(None)


def test_replay_empty_trace(vm4):
    """API.md: replay returns one uint64 per record - none for an empty trace."""
    out = vm4.mmio_replay(np.zeros(0, dtype=vgic.MMIO_ACCESS))
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.uint64
    assert out.shape == (0,)


def test_replay_returns_reads_and_zero_for_writes(vm4):
    """API.md: replay returns the value each access read; writes give 0.
    Expected values: kvm-facts §1.2-§1.6."""
    d, rd1 = vm4.dist_base, vm4.redist_base + 0x20000
    sgi2 = vm4.redist_base + 2 * 0x20000 + 0x10000
    trace = make_trace([
        (d + regmap.GICD_TYPER, 4, 0, 0, 0),                   # 256 IRQs, no ITS
        (d + regmap.GICD_ISENABLER + 4, 4, 1, 1 << 8, 0),      # enable SPI 40
        (d + regmap.GICD_ISENABLER + 4, 4, 0, 0xDEAD, 0),      # value ignored on a read
        (d + regmap.GICD_IPRIORITYR + 40, 1, 1, 0xFF, 0),      # stored & 0xF8
        (d + regmap.GICD_IPRIORITYR + 40, 1, 0, 0, 0),
        (d + regmap.GICD_CTLR, 4, 1, 0x2, 0),
        (d + regmap.GICD_CTLR, 4, 0, 0, 3),
        (rd1 + regmap.GICR_TYPER, 8, 0, 0, 0),                 # vCPU 1: aff 1, proc 1
        (sgi2 + regmap.GICR_ICFGR0, 4, 0, 0, 0),               # SGIs read edge
        (d + regmap.GICD_PIDR2, 4, 0, 0, 0),
        (d + regmap.GICD_STATUSR, 4, 0, 0, 0),
        (d + regmap.GICD_STATUSR, 4, 1, 0xFFFFFFFF, 0),
    ])
    out = vm4.mmio_replay(trace)
    assert out.dtype == np.uint64
    assert out.tolist() == [0x00480007, 0, 1 << 8, 0, 0xF8, 0, 0x52,
                            (1 << 32) | (1 << 8), 0xAAAAAAAA, 0x3B, 0xFFFFFFFF, 0]
    assert vm4.irq(40).enabled and vm4.irq(40).priority == 0xF8


def test_replay_read_value_field_is_ignored(vm4):
    """trace.py: `value` is ignored for reads, so an over-wide value in a
    read record is not an error."""
    trace = make_trace([(vm4.dist_base + regmap.GICD_CTLR, 1, 0, 2**64 - 1, 0)])
    assert vm4.mmio_replay(trace).tolist() == [0]


def _prefix_records(vm):
    """Two writes that would visibly change the state if they ran."""
    d = vm.dist_base
    return [
        (d + regmap.GICD_ISENABLER + 4, 4, 1, 0xFFFFFFFF, 0),
        (d + regmap.GICD_CTLR, 4, 1, 0x2, 1),
        (vm.redist_base + 0x10000 + regmap.GICR_IPRIORITYR0, 4, 1, 0x80808080, 0),
    ]


BAD_RECORDS = {
    "size3": lambda vm: ((vm.dist_base, 3, 0, 0, 0), ValueError),
    "size0": lambda vm: ((vm.dist_base, 0, 1, 0, 0), ValueError),
    "size16": lambda vm: ((vm.dist_base, 16, 0, 0, 0), ValueError),
    "unmapped": lambda vm: ((vm.dist_base + 0x10000, 4, 0, 0, 0), vgic.UnmappedAccess),
    "unmapped_past_redist": lambda vm: ((vm.redist_base + 4 * 0x20000, 4, 1, 0, 0), vgic.UnmappedAccess),
    "value_too_wide": lambda vm: ((vm.dist_base + 0x100, 1, 1, 0x100, 0), ValueError),
    "value_too_wide4": lambda vm: ((vm.dist_base + 0x104, 4, 1, 1 << 32, 0), ValueError),
    "bad_vcpu": lambda vm: ((vm.dist_base, 4, 0, 0, 4), ValueError),
    "bad_vcpu_max": lambda vm: ((vm.dist_base, 4, 1, 0, 0xFFFF), ValueError),
}


@pytest.mark.parametrize("kind", sorted(BAD_RECORDS))
@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_replay_bad_record_rejects_whole_trace(vm4, kind, position):
    """mmio.pyi: the whole trace is validated first; a bad record raises an
    error naming it ("trace[i]") and no access of the trace is performed."""
    bad, exc_type = BAD_RECORDS[kind](vm4)
    good = _prefix_records(vm4)
    if position == "first":
        records, index = [bad] + good, 0
    elif position == "middle":
        records, index = good[:2] + [bad] + good[2:], 2
    else:
        records, index = good + [bad], len(good)
    before = vm4.state()
    with pytest.raises(exc_type) as exc:
        vm4.mmio_replay(make_trace(records))
    assert f"trace[{index}]" in str(exc.value)
    if exc_type is vgic.UnmappedAccess:
        assert exc.value.addr == bad[0]
    assert_same_state(before, vm4.state())
    assert vm4.mmio_read(vm4.dist_base + regmap.GICD_CTLR, 4) == 0x50
    # The same trace without the bad record does run (the test can fail).
    vm4.mmio_replay(make_trace(good))
    assert vm4.mmio_read(vm4.dist_base + regmap.GICD_CTLR, 4) == 0x52


def test_replay_strided_trace():
    """A non-contiguous view of a trace replays exactly its own records
    (numpy strides honoured); the skipped records are unmapped and would
    raise if they were read."""
    vm = vgic.VM(nr_vcpus=2, nr_irqs=64)
    d = vm.dist_base
    real = [
        (d + regmap.GICD_ISENABLER + 4, 4, 1, 0x5, 0),
        (d + regmap.GICD_ISENABLER + 4, 4, 0, 0, 0),
        (d + regmap.GICD_TYPER, 4, 0, 0, 1),
        (vm.redist_base + 0x20000 + regmap.GICR_TYPER, 4, 0, 0, 0),
    ]
    junk = (0x10, 4, 1, 0, 0)     # no frame at 0x10
    interleaved = []
    for rec in real:
        interleaved += [rec, junk]
    big = make_trace(interleaved)
    view = big[::2]
    assert not view.flags["C_CONTIGUOUS"]
    out = vm.mmio_replay(view)
    assert out.tolist() == [0, 0x5, 0x00480001, (1 << 8) | (1 << 4)]
    # Reversed view: the reads now come first.
    vm2 = vgic.VM(nr_vcpus=2, nr_irqs=64)
    out2 = vm2.mmio_replay(make_trace(real)[::-1])
    assert out2.tolist() == [(1 << 8) | (1 << 4), 0x00480001, 0, 0]
    assert vm2.irq(32).enabled and vm2.irq(34).enabled


def test_replay_field_view_of_larger_array():
    """A trace that is a field of a bigger structured array (so its records
    are not adjacent in memory) replays too."""
    vm = vgic.VM(nr_vcpus=1, nr_irqs=64)
    outer = np.zeros(3, dtype=[("tag", "u4"), ("acc", vgic.MMIO_ACCESS)])
    outer["acc"]["addr"] = vm.dist_base + regmap.GICD_PIDR2
    outer["acc"]["size"] = 4
    out = vm.mmio_replay(outer["acc"])
    assert out.tolist() == [0x3B, 0x3B, 0x3B]


def test_replay_random_garbage_never_crashes():
    """Random records (fields anywhere in their ranges) either raise one of
    the documented exceptions or replay; the process never dies."""
    rng = np.random.default_rng(20240611)
    vm = vgic.VM(nr_vcpus=4, nr_irqs=256)
    raised = ran = 0
    for _ in range(40):
        n = int(rng.integers(1, 2000))
        raw = rng.integers(0, 256, size=n * vgic.MMIO_ACCESS.itemsize, dtype=np.uint8)
        trace = raw.view(vgic.MMIO_ACCESS)
        try:
            out = vm.mmio_replay(trace)
        except (ValueError, vgic.VgicError):
            raised += 1
        else:
            ran += 1
            assert out.shape == (n,)
    assert raised > 0

    # Plausible garbage: every record valid, addresses anywhere in the
    # frames, values random within the access size.
    d, r = vm.dist_base, vm.redist_base
    for _ in range(20):
        n = 3000
        trace = np.zeros(n, dtype=vgic.MMIO_ACCESS)
        which = rng.integers(0, 2, size=n)
        offs = rng.integers(0, 0x10000, size=n)
        rds = rng.integers(0, 4 * 0x20000, size=n)
        trace["addr"] = np.where(which == 0, d + offs, r + rds).astype(np.uint64)
        size_idx = rng.integers(0, 4, size=n)
        trace["size"] = np.array([1, 2, 4, 8], dtype=np.uint8)[size_idx]
        trace["write"] = rng.integers(0, 2, size=n)
        masks = np.array([0xFF, 0xFFFF, 0xFFFFFFFF, 2**64 - 1], dtype=np.uint64)[size_idx]
        trace["value"] = rng.integers(0, 2**64, size=n, dtype=np.uint64, endpoint=False) & masks
        trace["vcpu"] = rng.integers(0, 4, size=n)
        out = vm.mmio_replay(trace)
        assert out.shape == (n,)
        assert not out[trace["write"] == 1].any()
        ran += 1
    # GICD_TYPER is read-only and still reads the same.
    assert vm.mmio_read(d + regmap.GICD_TYPER, 4) == 0x00480007


@pytest.mark.parametrize("bad_at", [0, 63, 64, 20_000, 39_999])   # 64-record blocks
@pytest.mark.parametrize("kind", ["size", "unmapped", "value", "vcpu"])
def test_long_trace_rejected_whole(vm, bad_at, kind):
    """A long trace (checked while it runs, then rolled back) is as
    all-or-nothing as a short one: a bad record anywhere raises, names its
    index, and leaves every piece of state as it was before the trace
    (API.md: "a rejected restore leaves the previous state untouched";
    mmio.pyi: "in either case no access is performed")."""
    import vgic
    from vgic.trace import mixed_trace
    trace = mixed_trace(40_000, nr_vcpus=4, nr_irqs=256, seed=7)
    trace["write"] = 1          # every good record changes state
    if kind == "size":
        trace[bad_at]["size"] = 3
    elif kind == "unmapped":
        trace[bad_at]["addr"] = 0
    elif kind == "value":
        trace[bad_at]["size"] = 1
        trace[bad_at]["value"] = 0x1FF
    else:
        trace[bad_at]["vcpu"] = 4
    before = vm.state()
    with pytest.raises((ValueError, vgic.UnmappedAccess), match=rf"trace\[{bad_at}\]"):
        vm.mmio_replay(trace)
    assert_same_state(before, vm.state())


def test_long_replay_equals_twin():
    """The block replay of a long trace (>= 16384 records: checked as it
    runs, 64 records prepared ahead of their dispatch) gives the same reads
    and the same final state as the pure-Python twin running the trace one
    access at a time (issue #2: the twin is the differential oracle)."""
    pytest.importorskip("vgic._core.mmio")
    from vgic.trace import mixed_trace
    trace = mixed_trace(20_000, nr_vcpus=4, nr_irqs=256, seed=11)
    a, b = (vgic.VM(nr_vcpus=4, nr_irqs=256, backend=x) for x in ("core", "pure"))
    assert np.array_equal(a.mmio_replay(trace), b.mmio_replay(trace))
    assert_same_state(a.state(), b.state())
