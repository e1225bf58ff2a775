"""Replay of the Linux GICv3 driver's initialisation on a 4-vCPU guest.

The accesses are those of drivers/irqchip/irq-gic-v3.c and
drivers/irqchip/irq-gic-common.c (public knowledge about what the driver
writes; the sequence below is written from that description, not copied):

probe (gic_init_bases):
  gic_validate_dist_version   read GICD_PIDR2, ArchRev must be 3 or 4
  gic_init_bases              read GICD_TYPER (-> GIC_LINE_NR), GICD_TYPER2
  gic_update_rdist_properties walk every redistributor's GICR_TYPER (readq)
gic_dist_init (boot CPU):
  GICD_CTLR = 0, then gic_dist_wait_for_rwp (poll GICD_CTLR.RWP, bit 31)
  GICD_IGROUPR<n> = ~0 for every SPI word (non-secure Group 1)
  gic_dist_config: GICD_ICFGR = 0 (level), GICD_IPRIORITYR = 0xa0a0a0a0
      (GICD_INT_DEF_PRI_X4), GICD_ICACTIVER / GICD_ICENABLER = ~0
  GICD_CTLR = ARE_NS | EnableGrp1A | EnableGrp1 (0x13), wait for RWP
  GICD_IROUTER<n> = boot CPU affinity (writeq) for every SPI
gic_cpu_init (every CPU, on itself):
  gic_populate_rdist   read GICR_PIDR2, then GICR_TYPER of each redistributor
                       until TYPER.Affinity matches this CPU (stop at Last)
  gic_enable_redist    read GICR_WAKER, clear ProcessorSleep, poll until
                       ChildrenAsleep reads 0
  GICR_IGROUPR0 = ~0
  gic_cpu_config: GICR_ICACTIVER0 / GICR_ICENABLER0 = ~0,
                  GICR_IPRIORITYR0..7 = 0xa0a0a0a0, gic_redist_wait_for_rwp
                  (poll GICR_CTLR.RWP, bit 3)
  SGIs enabled through GICR_ISENABLER0 (gic_unmask_irq -> gic_poke_irq for
  each IPI, each followed by an RWP wait; kernels before 5.10 wrote
  GICD_INT_EN_SET_SGI = 0x0000ffff from gic_cpu_config instead - same end
  state).
(Kernels since 6.10 may use other default priorities; the 0xa0 of
GICD_INT_DEF_PRI is the long-standing value and what is replayed here.)

Expected values of what the guest reads and of the final state come from
kvm-facts §1.2-§1.6 (GICD_CTLR 0x50/0x52, GICD_TYPER, GICR_TYPER, WAKER
RAZ/WI, priorities masked to 5 bits, IROUTER routing).
"""
from __future__ import annotations

import numpy as np
import pytest

import vgic
from vgic import regmap
from vgic.state import STAMPS, diff, drop

NR_CPUS = 4
NR_IRQS = 256

# Bits the driver uses (include/linux/irqchip/arm-gic-v3.h, IHI 0069 §12.9.4).
GICD_CTLR_RWP = 1 << 31
GICD_CTLR_ARE_NS = 1 << 4
GICD_CTLR_ENABLE_G1A = 1 << 1
GICD_CTLR_ENABLE_G1 = 1 << 0
GICR_CTLR_RWP = 1 << 3
GICR_WAKER_PROCESSOR_SLEEP = 1 << 1
GICR_WAKER_CHILDREN_ASLEEP = 1 << 2
GICR_TYPER_PLPIS = 1 << 0
GICR_TYPER_VLPIS = 1 << 1
GICR_TYPER_DIRECT_LPI = 1 << 3
GICR_TYPER_LAST = 1 << 4
GIC_PIDR2_ARCH_MASK = 0xF0
GICD_INT_DEF_PRI = 0xA0
GICD_INT_DEF_PRI_X4 = 0xA0A0A0A0
ALL_ONES = 0xFFFFFFFF
RWP_POLL_LIMIT = 100


def make_trace(records) -> np.ndarray:
    records = list(records)
    trace = np.zeros(len(records), dtype=vgic.MMIO_ACCESS)
    for i, (addr, size, write, value, vcpu) in enumerate(records):
        trace[i]["addr"] = addr
        trace[i]["size"] = size
        trace[i]["write"] = write
        trace[i]["value"] = value
        trace[i]["vcpu"] = vcpu
    return trace


class Guest:
    """The guest's MMIO, recorded as vgic.MMIO_ACCESS records and run with
    vm.mmio_replay.  Writes are queued; a read runs the queue (its value
    steers the driver, so it is needed at once)."""

    def __init__(self, vm: vgic.VM) -> None:
        self.vm = vm
        self.queue: list[tuple] = []
        self.log: list[tuple] = []
        self.results: list[int] = []
        self.reads: list[tuple[int, int, int]] = []     # (addr, cpu, value)

    def flush(self) -> np.ndarray:
        if not self.queue:
            return np.zeros(0, dtype=np.uint64)
        out = self.vm.mmio_replay(make_trace(self.queue))
        assert out.dtype == np.uint64 and out.shape == (len(self.queue),)
        self.log.extend(self.queue)
        self.results.extend(int(x) for x in out)
        self.queue = []
        return out

    def writel(self, addr: int, value: int, cpu: int) -> None:
        self.queue.append((addr, 4, 1, value, cpu))

    def writeq(self, addr: int, value: int, cpu: int) -> None:
        self.queue.append((addr, 8, 1, value, cpu))

    def _read(self, addr: int, size: int, cpu: int) -> int:
        self.queue.append((addr, size, 0, 0, cpu))
        value = int(self.flush()[-1])
        self.reads.append((addr, cpu, value))
        return value

    def readl(self, addr: int, cpu: int) -> int:
        return self._read(addr, 4, cpu)

    def readq(self, addr: int, cpu: int) -> int:
        return self._read(addr, 8, cpu)


# ------------------------------------------------------------ driver model
def cpu_affinity(vm: vgic.VM, cpu: int) -> int:
    """gic_cpu_to_affinity(): Aff3 << 32 | Aff2 << 16 | Aff1 << 8 | Aff0."""
    mpidr = vm.vcpus[cpu].mpidr
    return (((mpidr >> 32) & 0xFF) << 32) | (((mpidr >> 16) & 0xFF) << 16) \
        | (((mpidr >> 8) & 0xFF) << 8) | (mpidr & 0xFF)


def typer_affinity(vm: vgic.VM, cpu: int) -> int:
    """__gic_populate_rdist(): the value GICR_TYPER[63:32] must equal."""
    mpidr = vm.vcpus[cpu].mpidr
    return (((mpidr >> 32) & 0xFF) << 24) | (mpidr & 0xFFFFFF)


def gic_dist_wait_for_rwp(g: Guest, cpu: int) -> int:
    for _ in range(RWP_POLL_LIMIT):
        value = g.readl(g.vm.dist_base + regmap.GICD_CTLR, cpu)
        if not value & GICD_CTLR_RWP:
            return value
    raise AssertionError("GICD_CTLR.RWP never cleared")


def gic_redist_wait_for_rwp(g: Guest, rd_base: int, cpu: int) -> int:
    for _ in range(RWP_POLL_LIMIT):
        value = g.readl(rd_base + regmap.GICR_CTLR, cpu)
        if not value & GICR_CTLR_RWP:
            return value
    raise AssertionError("GICR_CTLR.RWP never cleared")


def gic_probe(g: Guest, cpu: int) -> dict:
    """gic_validate_dist_version + the reads of gic_init_bases."""
    d = g.vm.dist_base
    info = {"pidr2": g.readl(d + regmap.GICD_PIDR2, cpu)}
    assert info["pidr2"] & GIC_PIDR2_ARCH_MASK in (0x30, 0x40)
    info["typer"] = g.readl(d + regmap.GICD_TYPER, cpu)
    info["typer2"] = g.readl(d + regmap.GICD_TYPER2, cpu)
    # GIC_LINE_NR = min(GICD_TYPER_SPIS(typer), 1020)
    info["line_nr"] = min(((info["typer"] & 0x1F) + 1) * 32, 1020)
    # gic_update_rdist_properties: every redistributor of the region.
    rd = g.vm.redist_base
    info["rd_typers"] = []
    assert g.readl(rd + regmap.GICR_PIDR2, cpu) & GIC_PIDR2_ARCH_MASK in (0x30, 0x40)
    for _ in range(regmap.MAX_VCPUS):
        typer = g.readq(rd + regmap.GICR_TYPER, cpu)
        info["rd_typers"].append(typer)
        if typer & GICR_TYPER_LAST:
            break
        rd += 2 * 0x10000          # RD_base + SGI_base, no VLPI frames
    return info


def gic_dist_init(g: Guest, cpu: int, line_nr: int) -> dict:
    d = g.vm.dist_base
    seen = {}
    # Disable the distributor.
    g.writel(d + regmap.GICD_CTLR, 0, cpu)
    seen["ctlr_after_disable"] = gic_dist_wait_for_rwp(g, cpu)
    # Configure SPIs as non-secure Group-1.
    for i in range(32, line_nr, 32):
        g.writel(d + regmap.GICD_IGROUPR + i // 8, ALL_ONES, cpu)
    # gic_dist_config(base, GIC_LINE_NR, NULL)
    for i in range(32, line_nr, 16):
        g.writel(d + regmap.GICD_ICFGR + i // 4, 0, cpu)           # level, active low
    for i in range(32, line_nr, 4):
        g.writel(d + regmap.GICD_IPRIORITYR + i, GICD_INT_DEF_PRI_X4, cpu)
    for i in range(32, line_nr, 32):
        g.writel(d + regmap.GICD_ICACTIVER + i // 8, ALL_ONES, cpu)
        g.writel(d + regmap.GICD_ICENABLER + i // 8, ALL_ONES, cpu)
    # Enable with ARE, Group 1 (nASSGIcap is 0 in GICD_TYPER2).
    g.writel(d + regmap.GICD_CTLR, GICD_CTLR_ARE_NS | GICD_CTLR_ENABLE_G1A | GICD_CTLR_ENABLE_G1, cpu)
    seen["ctlr_after_enable"] = gic_dist_wait_for_rwp(g, cpu)
    # All SPIs to the boot CPU.
    affinity = cpu_affinity(g.vm, cpu)
    for i in range(32, line_nr):
        g.writeq(d + regmap.GICD_IROUTER + 8 * i, affinity, cpu)
    return seen


def gic_populate_rdist(g: Guest, cpu: int) -> dict:
    """gic_iterate_rdists(__gic_populate_rdist) for the calling CPU."""
    rd = g.vm.redist_base
    want = typer_affinity(g.vm, cpu)
    scanned = []
    assert g.readl(rd + regmap.GICR_PIDR2, cpu) & GIC_PIDR2_ARCH_MASK in (0x30, 0x40)
    for _ in range(regmap.MAX_VCPUS):
        typer = g.readq(rd + regmap.GICR_TYPER, cpu)        # gic_iterate_rdists
        if g.readq(rd + regmap.GICR_TYPER, cpu) >> 32 == want:    # __gic_populate_rdist
            return {"rd_base": rd, "scanned": scanned + [typer]}
        scanned.append(typer)
        if typer & GICR_TYPER_LAST:
            break
        rd += 2 * 0x10000
    return {"rd_base": None, "scanned": scanned}


def gic_enable_redist(g: Guest, rd_base: int, cpu: int) -> list[int]:
    val = g.readl(rd_base + regmap.GICR_WAKER, cpu)
    seen = [val]
    g.writel(rd_base + regmap.GICR_WAKER, val & ~GICR_WAKER_PROCESSOR_SLEEP, cpu)
    for _ in range(RWP_POLL_LIMIT):
        val = g.readl(rd_base + regmap.GICR_WAKER, cpu)
        seen.append(val)
        if not val & GICR_WAKER_CHILDREN_ASLEEP:
            return seen
    raise AssertionError("GICR_WAKER.ChildrenAsleep never cleared")


def gic_cpu_init(g: Guest, cpu: int) -> dict:
    found = gic_populate_rdist(g, cpu)
    rd_base = found["rd_base"]
    assert rd_base is not None, f"CPU{cpu} found no redistributor"
    found["waker"] = gic_enable_redist(g, rd_base, cpu)
    sgi = rd_base + 0x10000
    # Configure SGIs/PPIs as non-secure Group-1 (ppi_nr 16 + 16 SGIs: one word).
    g.writel(sgi + regmap.GICR_IGROUPR0, ALL_ONES, cpu)
    # gic_cpu_config(rbase, 32, gic_redist_wait_for_rwp)
    g.writel(sgi + regmap.GICR_ICACTIVER0, ALL_ONES, cpu)
    g.writel(sgi + regmap.GICR_ICENABLER0, ALL_ONES, cpu)
    for i in range(0, 32, 4):
        g.writel(sgi + regmap.GICR_IPRIORITYR0 + i, GICD_INT_DEF_PRI_X4, cpu)
    found["rwp"] = [gic_redist_wait_for_rwp(g, rd_base, cpu)]
    # IPIs: gic_unmask_irq -> gic_poke_irq(GICR_ISENABLER0) for each SGI.
    for sgi_nr in range(16):
        g.writel(sgi + regmap.GICR_ISENABLER0, 1 << sgi_nr, cpu)
        found["rwp"].append(gic_redist_wait_for_rwp(g, rd_base, cpu))
    return found


# ------------------------------------------------------- the "dirty" start
def dirty_records(vm: vgic.VM) -> list[tuple]:
    """State a previous kernel (kexec) or firmware may leave behind, so that
    every value the driver programs differs from what was there before:
    SPIs enabled, active, pending (32..63), edge, Group 0, priority 0x10,
    routed to vCPU 3, distributor enabled; private INTIDs: SGIs disabled,
    PPIs enabled, all active, Group 0, priority 0x08."""
    d = vm.dist_base
    recs = [(d + regmap.GICD_CTLR, 4, 1, 0x2, 0)]
    for i in range(32, NR_IRQS, 32):
        for reg in (regmap.GICD_ISENABLER, regmap.GICD_ISACTIVER):
            recs.append((d + reg + i // 8, 4, 1, ALL_ONES, 0))
        recs.append((d + regmap.GICD_IGROUPR + i // 8, 4, 1, 0, 0))
    recs.append((d + regmap.GICD_ISPENDR + 4, 4, 1, ALL_ONES, 0))
    for i in range(32, NR_IRQS, 16):
        recs.append((d + regmap.GICD_ICFGR + i // 4, 4, 1, 0xAAAAAAAA, 0))
    for i in range(32, NR_IRQS, 4):
        recs.append((d + regmap.GICD_IPRIORITYR + i, 4, 1, 0x10101010, 0))
    for i in range(32, NR_IRQS):
        recs.append((d + regmap.GICD_IROUTER + 8 * i, 8, 1, 3, 0))
    for v in range(NR_CPUS):
        sgi = vm.redist_base + v * 0x20000 + 0x10000
        recs += [
            (sgi + regmap.GICR_ICENABLER0, 4, 1, 0x0000FFFF, v),
            (sgi + regmap.GICR_ISENABLER0, 4, 1, 0xFFFF0000, v),
            (sgi + regmap.GICR_ISACTIVER0, 4, 1, ALL_ONES, v),
            (sgi + regmap.GICR_IGROUPR0, 4, 1, 0, v),
        ]
        for i in range(0, 32, 4):
            recs.append((sgi + regmap.GICR_IPRIORITYR0 + i, 4, 1, 0x08080808, v))
    return recs


def boot(boot_cpu: int = 0):
    vm = vgic.VM(nr_vcpus=NR_CPUS, nr_irqs=NR_IRQS)
    vm.mmio_replay(make_trace(dirty_records(vm)))
    g = Guest(vm)
    probe = gic_probe(g, boot_cpu)
    dist = gic_dist_init(g, boot_cpu, probe["line_nr"])
    cpus = {}
    for cpu in [boot_cpu] + [c for c in range(NR_CPUS) if c != boot_cpu]:
        cpus[cpu] = gic_cpu_init(g, cpu)
    g.flush()
    return vm, g, probe, dist, cpus


@pytest.fixture(scope="module", params=[0, 2], ids=["boot-cpu0", "boot-cpu2"])
def booted(request):
    return (request.param,) + boot(request.param)


# ================================================================== tests
def test_probe_reads(booted):
    """kvm-facts §1.2/§1.3/§1.5: PIDR2 = 0x3B; GICD_TYPER = 0x00480007 for
    256 IRQs without an ITS (so GIC_LINE_NR = 256); GICD_TYPER2 = 0;
    GICR_TYPER of redistributor i: Affinity i, Processor_Number i, Last
    only on the last one, no PLPIS/VLPIS/DirectLPI."""
    boot_cpu, vm, g, probe, dist, cpus = booted
    assert probe["pidr2"] == 0x3B
    assert probe["typer"] == 0x00480007
    assert probe["typer2"] == 0
    assert probe["line_nr"] == 256
    assert probe["rd_typers"] == [(i << 32) | (i << 8) | (GICR_TYPER_LAST if i == 3 else 0)
                                  for i in range(NR_CPUS)]
    for typer in probe["rd_typers"]:
        assert not typer & (GICR_TYPER_PLPIS | GICR_TYPER_VLPIS | GICR_TYPER_DIRECT_LPI)


def test_distributor_ctlr_during_init(booted):
    """kvm-facts §1.3: GICD_CTLR reads 0x50 when disabled and 0x52 after
    the driver writes ARE_NS|EnableGrp1A|EnableGrp1 (bit 0 is RAZ/WI with
    DS=1, ARE and DS always read 1, RWP always 0)."""
    boot_cpu, vm, g, probe, dist, cpus = booted
    assert dist["ctlr_after_disable"] == 0x50
    assert dist["ctlr_after_enable"] == 0x52
    assert vm.mmio_read(vm.dist_base + regmap.GICD_CTLR, 4) == 0x52
    assert vm.mmio_read(vm.dist_base + regmap.GICD_CTLR, 4, vcpu=3) == 0x52


def test_each_cpu_finds_its_redistributor(booted):
    """gic_populate_rdist walks GICR_TYPER until Affinity matches the CPU's
    MPIDR (kvm-facts §1.5: Affinity = Aff2.Aff1.Aff0, redistributors placed
    in vCPU order), reading any redistributor from any CPU."""
    boot_cpu, vm, g, probe, dist, cpus = booted
    for cpu, found in cpus.items():
        assert found["rd_base"] == vm.redist_base + cpu * 0x20000
        assert [t >> 32 for t in found["scanned"]] == list(range(cpu + 1))
        # WAKER is RAZ/WI (kvm-facts §1.5): reads 0, so the wait ends at once.
        assert found["waker"] == [0, 0]
        # GICR_CTLR: RWP clear; IR|CES advertised at IIDR revision 3.
        assert found["rwp"] == [0x6] * 17


def test_spi_state_after_init(booted):
    """After gic_dist_init every SPI is level (ICFGR 0), priority 0xa0,
    disabled, inactive, Group 1 and routed to the boot CPU (kvm-facts
    §1.2, §1.4); pending latches are untouched (no ICPENDR write)."""
    boot_cpu, vm, g, probe, dist, cpus = booted
    for intid in range(32, NR_IRQS):
        s = vm.irq(intid)
        assert s.config == "level", intid
        assert s.priority == GICD_INT_DEF_PRI, intid
        assert not s.enabled and not s.active, intid
        assert s.group == 1, intid
        assert s.route == boot_cpu and s.target_vcpu == boot_cpu, intid
        assert s.pending_latch == (intid < 64), intid
    d = vm.dist_base
    for i in range(32, NR_IRQS, 32):
        assert vm.mmio_read(d + regmap.GICD_ISENABLER + i // 8, 4) == 0
        assert vm.mmio_read(d + regmap.GICD_ISACTIVER + i // 8, 4) == 0
        assert vm.mmio_read(d + regmap.GICD_IGROUPR + i // 8, 4) == ALL_ONES
    for i in range(32, NR_IRQS, 16):
        assert vm.mmio_read(d + regmap.GICD_ICFGR + i // 4, 4) == 0
    for i in range(32, NR_IRQS, 4):
        assert vm.mmio_read(d + regmap.GICD_IPRIORITYR + i, 4) == GICD_INT_DEF_PRI_X4
    for i in (32, 100, 255):
        assert vm.mmio_read(d + regmap.GICD_IROUTER + 8 * i, 8) == boot_cpu


def test_private_state_after_init(booted):
    """After gic_cpu_init on every CPU: SGIs enabled, PPIs disabled, nothing
    active, all Group 1, priority 0xa0 - per vCPU (kvm-facts §1.6)."""
    boot_cpu, vm, g, probe, dist, cpus = booted
    for v in range(NR_CPUS):
        sgi = vm.redist_base + v * 0x20000 + 0x10000
        assert vm.mmio_read(sgi + regmap.GICR_ISENABLER0, 4) == 0x0000FFFF
        assert vm.mmio_read(sgi + regmap.GICR_ICENABLER0, 4) == 0x0000FFFF
        assert vm.mmio_read(sgi + regmap.GICR_ISACTIVER0, 4) == 0
        assert vm.mmio_read(sgi + regmap.GICR_IGROUPR0, 4) == ALL_ONES
        for i in range(0, 32, 4):
            assert vm.mmio_read(sgi + regmap.GICR_IPRIORITYR0 + i, 4) == GICD_INT_DEF_PRI_X4
        for intid in range(32):
            s = vm.irq(intid, vcpu=v)
            assert s.enabled == (intid < 16) and not s.active and s.group == 1
            assert s.priority == GICD_INT_DEF_PRI
            assert s.config == ("edge" if intid < 16 else "level")


def test_whole_init_as_one_trace(booted):
    """The recorded accesses replayed as a single vgic.MMIO_ACCESS trace on
    a fresh VM in the same starting state read the same values and end in
    the same state (mmio_replay runs records in order)."""
    boot_cpu, vm, g, probe, dist, cpus = booted
    vm2 = vgic.VM(nr_vcpus=NR_CPUS, nr_irqs=NR_IRQS)
    vm2.mmio_replay(make_trace(dirty_records(vm2)))
    trace = make_trace(g.log)
    out = vm2.mmio_replay(trace)
    assert out.tolist() == g.results
    assert not out[trace["write"] == 1].any()
    # (the queue-order stamps differ: vm2 ran more accesses)
    a, b = drop(vm.state(), STAMPS), drop(vm2.state(), STAMPS)
    assert not diff(a, b), diff(a, b)[:3]
    # The trace is the whole sequence.  Writes: distributor 1 + 7 IGROUPR +
    # 14 ICFGR + 56 IPRIORITYR + 2*7 ICACTIVER/ICENABLER + 1 CTLR + 224
    # IROUTER = 317; per CPU 1 WAKER + 1 IGROUPR0 + 2 + 8 IPRIORITYR + 16
    # ISENABLER0 = 28.  Reads: probe 3 + 1 + 4 TYPER, 2 RWP polls; per CPU
    # 1 PIDR2 + 2 per TYPER visited + 2 WAKER + 17 RWP polls.
    n_writes = int(trace["write"].sum())
    assert n_writes == 317 + NR_CPUS * 28
    assert len(trace) - n_writes == 8 + 2 + sum(1 + 2 * (c + 1) + 2 + 17 for c in range(NR_CPUS))
