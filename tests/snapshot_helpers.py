"""Shared helpers of the snapshot tests: small VMs a guest has used (an ITS
with mapped and pending LPIs, configured and pending SPIs, armed timers, a
programmed CPU interface, FP/SVE registers), the guest's view of them, and
the comparisons a restore must pass.

Sizes stay small (2-4 vCPUs, 64-256 IRQs, a few hundred LPIs, VQ <= 4) so
the file runs in seconds on either backend.  The guest follows the ITS
helpers' layout (its_helpers.layout: property table at RAM + 1 MiB,
pending tables at + 2 MiB, command queue at + 4 MiB, device table at
+ 5 MiB, collection table at + 6 MiB, ITTs from + 8 MiB).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

import vgic
from vgic import regmap as R
from vgic import uapi
from vgic.snapshot import comparable
from vgic.state import diff

sys.path.insert(0, str(Path(__file__).resolve().parent))
from its_helpers import Guest, mapti, set_prop
from sve_helpers import FPCR, FPSR, ZCR_EL1

BACKENDS = ("core", "pure")
SPURIOUS = 1023
VTIMER_PPI, PTIMER_PPI = 27, 30            # KVM's default timer PPIs (kvm-facts §7)
ENABLE = 1                                 # CNT{V,P}_CTL_EL0.ENABLE
#: RAM: enough for the ITS layout (ITTs from + 8 MiB, 64 KiB per device).
RAM_ITS = 10 << 20
RAM_SMALL = 256 << 10
#: The host counter when the guest starts.
START = 1_000_000
#: The virtual counter the VMM gives the guest at START.
GUEST_VCOUNT = 4_000
EVENT_BITS = 8                             # EventID bits of every mapped device
#: When the guest arms its timers: this many ticks after the virtual
#: (vtimer) and physical (ptimer) counters it reads.
VTIMER_DELAY, PTIMER_DELAY = 5_000, 7_000
#: The SPIs a guest leaves pending: two level lines held high and one edge
#: one latched through GICD_ISPENDR.
LEVEL_SPIS, EDGE_SPI = (33, 70), 65
#: ICC_* values a guest programs on each vCPU: ICC_PMR_EL1 (pmr(v)) and
#: ICC_BPR1_EL1.
BPR1 = 3

G_DIST = uapi.KVM_DEV_ARM_VGIC_GRP_DIST_REGS
G_REDIST = uapi.KVM_DEV_ARM_VGIC_GRP_REDIST_REGS
G_SYSREGS = uapi.KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS
G_ITS = uapi.KVM_DEV_ARM_VGIC_GRP_ITS_REGS
ICC_PMR, ICC_BPR0, ICC_BPR1, ICC_CTLR, ICC_SRE, ICC_IGRPEN1 = 0xC230, 0xC643, 0xC663, 0xC664, 0xC665, 0xC667


def pmr(vcpu: int) -> int:
    """The ICC_PMR_EL1 the guest writes on ``vcpu``: a multiple of 8, so
    every priority width (5..7 bits) keeps it whole."""
    return 0xF0 - 8 * (vcpu % 8)


def lpi_of(k: int) -> int:
    """The LPI the k-th mapped event gets."""
    return R.LPI_BASE + k


def event_of(k: int) -> tuple[int, int]:
    """(DeviceID, EventID) of the k-th mapped event."""
    return k // (1 << EVENT_BITS), k % (1 << EVENT_BITS)


def build(backend: str, nr_vcpus: int = 2, nr_irqs: int = 128, *, its: bool = False, lpis: int = 0,
          pending_lpis: int = 0, sve: bool = False, vqs: tuple[int, ...] = (1, 2, 4), pri_bits: int = 5,
          irqchip: bool = True, seed: int = 1, ram_size: int | None = None, finalize: bool = True,
          **host: Any) -> vgic.VM:
    """A VM as a guest left it (every vCPU exited and put).

    With the vGIC: Group 1 enabled, every SPI Group 1 and enabled with a
    priority, SPI 40 routed to the last vCPU, SPI 65 edge-triggered and
    pending, the level lines of LEVEL_SPIS high; each vCPU's timer PPIs
    enabled.  With ``its``: LPIs on, ``lpis`` events mapped (LPI 8192 + k,
    collection k mod vCPUs), the first ``pending_lpis`` of them pending.
    Each vCPU: vtimer and ptimer armed VTIMER_DELAY / PTIMER_DELAY ticks
    ahead, ICC_PMR_EL1 / ICC_BPR1_EL1 / ICC_IGRPEN1_EL1 programmed (with the
    vGIC), FP/SVE registers filled with a pattern from ``seed``."""
    if ram_size is None:
        ram_size = RAM_ITS if its else RAM_SMALL
    opts: dict[str, Any] = dict(nr_vcpus=nr_vcpus, nr_irqs=nr_irqs, its=its, pri_bits=pri_bits, irqchip=irqchip,
                                ram_size=ram_size, backend=backend, sve=sve)
    if sve:
        opts["sve_vqs"] = list(vqs)
    opts.update(host)
    vm = vgic.VM(**opts)
    vm.advance(START)
    # The VMM sets the guest's virtual counter (KVM_REG_ARM_TIMER_CNT:
    # CNTVOFF = CNTPCT - value, kvm-facts §7), so CNTVOFF is not zero.
    for v in vm.vcpus:
        v.set_one_reg(uapi.KVM_REG_ARM_TIMER_CNT, GUEST_VCOUNT)
    if irqchip:
        program_gic(vm)
    if its:
        program_its(vm, lpis, pending_lpis)
    if sve and finalize:
        vm.finalize_vcpus(4)                       # KVM_ARM_VCPU_SVE
    if not sve or finalize:                        # (KVM_RUN needs a finalized SVE vCPU)
        fill_fp(vm, seed)
        if sve:
            # The guest's vector length: ZCR_EL1.LEN = its largest VQ - 1,
            # as Linux sets it (a one-reg, so it travels in the snapshot).
            for v in vm.vcpus:
                v.set_one_reg(ZCR_EL1, max(vqs) - 1)
        program_vcpus(vm)
    return vm


def program_gic(vm: vgic.VM) -> None:
    d = vm.dist_base
    w = vm.mmio_write
    w(d + R.GICD_CTLR, 4, R.GICD_CTLR_ENABLE_G1)
    for n in range(1, vm.nr_irqs // 32):
        w(d + R.GICD_IGROUPR + 4 * n, 4, 0xFFFFFFFF)
        w(d + R.GICD_ISENABLER + 4 * n, 4, 0xFFFFFFFF)
    for intid in range(32, vm.nr_irqs, 4):
        w(d + R.GICD_IPRIORITYR + intid, 4, 0x80808080 | (intid & 0x38) * 0x01010101)
    # GICD_ICFGR: every SPI edge-triggered (0b10) but the LEVEL_SPIS (0b00).
    for n in range(2, vm.nr_irqs // 16):
        cfg = 0xAAAAAAAA
        for intid in LEVEL_SPIS:
            if intid // 16 == n:
                cfg &= ~(3 << 2 * (intid % 16))
        w(d + R.GICD_ICFGR + 4 * n, 4, cfg)
    w(d + R.GICD_IROUTER + 8 * 40, 8, vm.vcpus[-1].mpidr & 0xFFFFFF)
    w(d + R.GICD_ISPENDR + 4 * (EDGE_SPI // 32), 4, 1 << (EDGE_SPI % 32))
    for intid in LEVEL_SPIS:
        if intid < vm.nr_irqs:
            vm.set_irq_level(intid, True)
    for v in vm.vcpus:
        w(v.sgi_base + R.GICR_ISENABLER0, 4, (1 << VTIMER_PPI) | (1 << PTIMER_PPI), v.id)
        w(v.sgi_base + R.GICR_IPRIORITYR0 + 24, 4, 0x40404040, v.id)   # PPIs 24..27
        w(v.sgi_base + R.GICR_IPRIORITYR0 + 28, 4, 0x48484848, v.id)   # PPIs 28..31


def program_its(vm: vgic.VM, lpis: int, pending: int) -> Guest:
    """its_helpers.Guest's set-up, then MAPD/MAPC/MAPTI for ``lpis`` events
    and MSIs for the first ``pending`` of them."""
    g = Guest(vm)
    ndev = -(-lpis // (1 << EVENT_BITS))
    cmds = [[R.GITS_CMD_MAPC, 0, (1 << 63) | (v << 16) | v, 0] for v in range(vm.nr_vcpus)]
    cmds += [[R.GITS_CMD_MAPD | (d << 32), EVENT_BITS - 1, (1 << 63) | g.itt(d), 0] for d in range(ndev)]
    for k in range(lpis):
        set_prop(vm, g.lay, lpi_of(k))
        dev, ev = event_of(k)
        cmds.append(mapti(dev, ev, lpi_of(k), k % vm.nr_vcpus))
    for i in range(0, len(cmds), 256):
        g.send(*cmds[i:i + 256])
    for k in range(pending):
        assert vm.signal_msi(*event_of(k))
    return g


def fill_fp(vm: vgic.VM, seed: int) -> None:
    """Every FP/SVE one-reg of every vCPU (but SVE_VLS) from a seeded
    pattern; FPSR and FPCR get values with only their defined fields set."""
    rng = np.random.default_rng(seed)
    ids = [r for r in vm.vcpus[0].get_reg_list() if (r >> 16) & 0xFFF in (0x10, 0x15) and r != 0x606000000015FFFF]
    data = vm.get_one_regs(ids)
    col = 0
    for r in ids:
        size = 1 << ((r >> 52) & 0xF)
        if r == FPSR:
            data[:, col:col + size] = np.frombuffer((0x0800009F).to_bytes(4, "little"), dtype=np.uint8)
        elif r == FPCR:
            data[:, col:col + size] = np.frombuffer((0x03C00000).to_bytes(4, "little"), dtype=np.uint8)
        else:
            data[:, col:col + size] = rng.integers(0, 256, (vm.nr_vcpus, size), dtype=np.uint8)
        col += size
    vm.set_one_regs(ids, data)


def program_vcpus(vm: vgic.VM) -> None:
    """Each vCPU runs once: arms both timers relative to the counters it
    reads, programs its CPU interface, and exits; then every vCPU is put."""
    for v in vm.vcpus:
        v.enter()
        v.sysreg_write("CNTV_CVAL_EL0", v.sysreg_read("CNTVCT_EL0") + VTIMER_DELAY)
        v.sysreg_write("CNTV_CTL_EL0", ENABLE)
        v.sysreg_write("CNTP_CVAL_EL0", v.sysreg_read("CNTPCT_EL0") + PTIMER_DELAY)
        v.sysreg_write("CNTP_CTL_EL0", ENABLE)
        if vm.irqchip:
            v.sysreg_write("ICC_PMR_EL1", pmr(v.id))
            v.sysreg_write("ICC_BPR1_EL1", BPR1)
            v.sysreg_write("ICC_IGRPEN1_EL1", 1)
        v.exit()
    vm.put_vcpus()


# ------------------------------------------------------------ comparisons
def state_diff(a: vgic.VM, b: vgic.VM, limit: int = 20) -> list[str]:
    """Where two VMs' states differ in what a snapshot carries."""
    return diff(comparable(a.state()), comparable(b.state()), limit=limit)


def roundtrip(vm: vgic.VM, **options: Any) -> tuple[vgic.Snapshot, vgic.VM]:
    """save -> to_bytes -> from_bytes -> VM.restore: (snapshot read back,
    new VM on ``vm``'s backend unless ``options`` name another)."""
    snap = vgic.Snapshot.from_bytes(vm.save().to_bytes())
    return snap, vgic.VM.restore(snap, **{"backend": vm.backend, **options})


def everything(vm: vgic.VM) -> tuple[dict[str, Any], bytes]:
    """The whole VM as a refused operation must leave it: state and RAM."""
    return vm.state(), vm.memory.tobytes()


def rebuild(snap: vgic.Snapshot, *, meta: dict[str, Any] | None = None, sections: Any = None,
            ram: Any = "same") -> vgic.Snapshot:
    """A snapshot like ``snap`` with its meta, sections or RAM replaced."""
    return vgic.Snapshot(snap.meta if meta is None else meta,
                         list(snap.sections.values()) if sections is None else sections,
                         snap.ram if isinstance(ram, str) else ram)


def with_value(snap: vgic.Snapshot, section: str, name: str, value: int, vcpu: int | None = None) -> vgic.Snapshot:
    """``snap`` with the register ``name`` of ``section`` set to ``value``
    (on ``vcpu`` for a per-vCPU section, on all when None)."""
    sec = snap.sections[section]
    col = sec.names().index(name)
    vals = np.array(sec.values, copy=True)
    if sec.per_vcpu:
        vals[slice(None) if vcpu is None else vcpu, col] = value
    else:
        vals[col] = value
    new = vgic.snapshot.Section(sec.name, sec.group, sec.per_vcpu, sec.ids, vals)
    return rebuild(snap, sections=[new if s.name == section else s for s in snap.sections.values()])


# ------------------------------------------------------------ the guest's view
def take_one(vm: vgic.VM, vcpu: int) -> int:
    """One guest entry of ``vcpu``: priority mask open, Group 1 on, take one
    interrupt through ICC_IAR1_EL1 (1023: none), let the device drop the
    line if it is a level SPI of LEVEL_SPIS, ICC_EOIR1_EL1 it, exit."""
    v = vm.vcpus[vcpu]
    v.enter()
    v.sysreg_write("ICC_PMR_EL1", 0xFF)
    v.sysreg_write("ICC_IGRPEN1_EL1", 1)
    intid = v.sysreg_read("ICC_IAR1_EL1")
    if intid != SPURIOUS:
        if intid in LEVEL_SPIS:
            vm.set_irq_level(intid, False)
        v.sysreg_write("ICC_EOIR1_EL1", intid)
    v.exit()
    return intid


def take_all(vm: vgic.VM, vcpu: int, limit: int = 600) -> list[int]:
    """Every interrupt ``vcpu`` takes, one entry each, until none is left."""
    out = []
    for _ in range(limit):
        intid = take_one(vm, vcpu)
        if intid == SPURIOUS:
            return out
        out.append(intid)
    raise AssertionError(f"vCPU {vcpu} still takes interrupts after {limit}")


def guest_fp(vm: vgic.VM, vcpu: int, vq: int | None) -> dict[str, bytes | int]:
    """What the guest reads of its FP/SVE registers on ``vcpu`` (running it
    once): Z0..Z31, P0..P15 and FFR at VQ ``vq`` (after setting ZCR_EL1.LEN)
    or V0..V31, and FPSR/FPCR."""
    v = vm.vcpus[vcpu]
    v.enter()
    out: dict[str, bytes | int] = {}
    if vq is not None:
        v.sysreg_write("ZCR_EL1", vq - 1)
        out.update({f"Z{n}": v.fp.read_z(n) for n in range(32)})
        out.update({f"P{n}": v.fp.read_p(n) for n in range(16)})
        out["FFR"] = v.fp.read_ffr()
    else:
        out.update({f"V{n}": v.fp.read_v(n) for n in range(32)})
    out["FPSR"] = v.sysreg_read("FPSR")
    out["FPCR"] = v.sysreg_read("FPCR")
    v.exit()
    return out


def one_regs(vm: vgic.VM, vcpu: int) -> dict[int, int]:
    """KVM_GET_ONE_REG of every FP/SVE register KVM_GET_REG_LIST names."""
    v = vm.vcpus[vcpu]
    return {r: v.get_one_reg(r) for r in v.get_reg_list() if (r >> 16) & 0xFFF in (0x10, 0x15)}


def cpu_sysreg(vm: vgic.VM, vcpu: int, enc: int) -> int:
    """KVM_GET_DEVICE_ATTR(CPU_SYSREGS) of ``enc`` on ``vcpu``."""
    return vm.get_device_attr(G_SYSREGS, uapi.mpidr_to_attr(vm.vcpus[vcpu].mpidr) | enc)

