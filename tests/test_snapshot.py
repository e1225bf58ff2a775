"""Whole-VM snapshots (vgic.snapshot): ``vm.save()``, ``vgic.VM.restore``,
``vm.restore`` and the snapshot format, checked against what KVM's
userspace ABI does when a VMM saves and restores a VM.

Sources, cited per test: Documentation/virt/kvm/api.rst (KVM_GET/SET_ONE_REG,
KVM_GET_REG_LIST, KVM_ARM_VCPU_FINALIZE), Documentation/virt/kvm/devices/
arm-vgic-v3.rst and arm-vgic-its.rst (the device attributes and the ITS
restore order), and their digest /work/shared/reference/kvm-facts.md (§1.3
GICD_IIDR/GICD_CTLR, §5.6-§5.7 LPI tables and the ITS save/restore ABI,
§6 the vGICv3 device API, §7 the arch timer, §8 SVE); the format's own
contract is the docstring of vgic/snapshot.py (FORMAT_VERSION, _FIXED).

The guest is the one of tests/snapshot_helpers.py: it programs the GIC and
the ITS by MMIO and ITS commands, arms its timers and writes its CPU
interface by system-register accesses while its vCPUs run.  Expected values
come from what that guest wrote and from the rules cited, never from the
snapshot code itself.
"""
from __future__ import annotations

import errno
import struct
import sys
import zlib
from pathlib import Path

import msgpack
import numpy as np
import pytest

import vgic
from vgic import regmap as R
from vgic.snapbench import snapshot_vm
from vgic.snapshot import Section, comparable
from vgic.state import diff

sys.path.insert(0, str(Path(__file__).resolve().parent))
from its_helpers import Guest, layout, mapti, read64, set_prop, write64
from snapshot_helpers import (
    BPR1,
    EDGE_SPI,
    GUEST_VCOUNT,
    ICC_BPR0,
    ICC_BPR1,
    ICC_CTLR,
    ICC_IGRPEN1,
    ICC_PMR,
    ICC_SRE,
    LEVEL_SPIS,
    PTIMER_DELAY,
    PTIMER_PPI,
    RAM_ITS,
    SPURIOUS,
    START,
    VTIMER_DELAY,
    VTIMER_PPI,
    build,
    cpu_sysreg,
    event_of,
    everything,
    guest_fp,
    lpi_of,
    one_regs,
    pmr,
    rebuild,
    roundtrip,
    state_diff,
    take_all,
    take_one,
    with_value,
)
from sve_helpers import FFR_, FPCR, FPSR, VLS, P, V, Z, vls_bytes

FIXED = struct.Struct("<8sHHIQQI4x")    # the fixed header (vgic/snapshot.py _FIXED)
OTHER = {"core": "pure", "pure": "core"}


@pytest.fixture(params=["core", "pure"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "core":
        pytest.importorskip("vgic._core.its")
    return request.param


# -------------------------------------------------------------------- helpers
def assert_restored(vm: vgic.VM, vm2: vgic.VM, snap: vgic.Snapshot, expect_state: set[str] = frozenset(),
                    expect_snap: set[str] = frozenset()) -> None:
    """``vm2`` restored from ``snap`` of ``vm``: the same state as far as
    KVM's ABI carries it (but for ``expect_state``, lines that may differ:
    the host's own settings), and saving it again gives the snapshot back
    (the fixed point) but for exactly the lines ``expect_snap``."""
    got = set(state_diff(vm, vm2, limit=None))
    assert got - set(expect_state) == set(), sorted(got)[:20]
    again = set(vm2.save().diff(snap))
    assert again == set(expect_snap), sorted(again)[:20]


def unchanged(vm: vgic.VM, before: tuple[dict, bytes]) -> None:
    """A refused operation left ``vm`` exactly as it was: state and RAM."""
    state, ram = before
    assert diff(state, vm.state(), limit=10) == []
    assert vm.memory.tobytes() == ram


def regs_of(snap: vgic.Snapshot) -> dict[tuple[str, str], int | bytes]:
    return {(scope, name): value for scope, name, value in snap.registers()}


def patched(data: bytes, **fields: int) -> bytes:
    """``data`` with fields of its fixed header replaced and the CRC-32
    recomputed as the format defines it (over the fixed header with the
    CRC field 0, then every following byte)."""
    magic, major, minor, flags, hlen, plen, _ = FIXED.unpack_from(data)
    f = {"magic": magic, "major": major, "minor": minor, "flags": flags, "hlen": hlen, "plen": plen, **fields}
    head = FIXED.pack(f["magic"], f["major"], f["minor"], f["flags"], f["hlen"], f["plen"], 0)
    crc = zlib.crc32(data[FIXED.size:], zlib.crc32(head))
    return FIXED.pack(f["magic"], f["major"], f["minor"], f["flags"], f["hlen"], f["plen"], crc) + data[FIXED.size:]


def with_header(data: bytes, minor: int, edit) -> bytes:
    """``data`` written as a newer minor version would write it: its msgpack
    header edited by ``edit``, the fixed header's minor, length and CRC
    updated (section offsets are relative to the payload, which stays)."""
    magic, major, _, flags, hlen, plen, _ = FIXED.unpack_from(data)
    header = msgpack.unpackb(data[FIXED.size:FIXED.size + hlen], raw=False)
    edit(header)
    packed = msgpack.packb(header, use_bin_type=True)
    return patched(data[:FIXED.size] + packed + data[FIXED.size + hlen:], minor=minor, hlen=len(packed))


def guest_counters(vm: vgic.VM, vcpu: int) -> tuple[int, int, int, int]:
    """(CNTVCT_EL0, CNTV_CVAL_EL0, CNTPCT_EL0, CNTP_CVAL_EL0) as the guest reads them."""
    v = vm.vcpus[vcpu]
    v.enter()
    out = tuple(v.sysreg_read(r) for r in ("CNTVCT_EL0", "CNTV_CVAL_EL0", "CNTPCT_EL0", "CNTP_CVAL_EL0"))
    v.exit()
    return out  # type: ignore[return-value]


def drop_register(snap: vgic.Snapshot, section: str, name: str) -> vgic.Snapshot:
    """``snap`` with register ``name`` (its ID and its value columns) cut out of ``section``."""
    sec = snap.sections[section]
    k = sec.names().index(name)
    a, b = sec.columns()[k]
    values = np.delete(np.asarray(sec.values), np.s_[a:b], axis=-1)
    new = Section(sec.name, sec.group, sec.per_vcpu, np.delete(sec.ids, k), values)
    return rebuild(snap, sections=[new if s.name == section else s for s in snap.sections.values()])


# The configurations the round trips cover: (id, build() options, the
# sections the snapshot must hold, in restore order).
VGIC_SECTIONS = ["timer.ppis", "vgic.dist_config", "vgic.redist_config", "vgic.spi_levels", "vgic.ppi_levels",
                 "vgic.dist_state", "vgic.redist_state", "vgic.cpu_sysregs"]
CONFIGS = [
    ("gic", dict(nr_vcpus=2, nr_irqs=128), VGIC_SECTIONS + ["fpsimd.regs", "timer.regs"]),
    ("its", dict(nr_vcpus=3, nr_irqs=96, its=True, lpis=300, pending_lpis=40),
     VGIC_SECTIONS + ["its.regs", "its.ctlr", "fpsimd.regs", "timer.regs"]),
    ("its-sve", dict(nr_vcpus=2, nr_irqs=64, its=True, lpis=200, pending_lpis=25, sve=True, vqs=(1, 2, 4)),
     VGIC_SECTIONS + ["its.regs", "its.ctlr", "fpsimd.vls", "fpsimd.regs", "timer.regs"]),
    ("sve-1-2", dict(nr_vcpus=2, nr_irqs=256, sve=True, vqs=(1, 2)),
     VGIC_SECTIONS + ["fpsimd.vls", "fpsimd.regs", "timer.regs"]),
    ("no-irqchip", dict(nr_vcpus=2, irqchip=False), ["fpsimd.regs", "timer.regs"]),
    ("no-irqchip-sve", dict(nr_vcpus=2, irqchip=False, sve=True, vqs=(1, 2, 3)),
     ["fpsimd.vls", "fpsimd.regs", "timer.regs"]),
    ("pri6", dict(nr_vcpus=2, nr_irqs=64, pri_bits=6, pre_bits=6), VGIC_SECTIONS + ["fpsimd.regs", "timer.regs"]),
    ("pri7", dict(nr_vcpus=4, nr_irqs=64, its=True, lpis=64, pending_lpis=8, pri_bits=7, pre_bits=7),
     VGIC_SECTIONS + ["its.regs", "its.ctlr", "fpsimd.regs", "timer.regs"]),
]


# ========================================================= 1. round trips
@pytest.mark.parametrize("name,options,sections", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_round_trip_through_bytes(backend: str, name: str, options: dict, sections: list[str]) -> None:
    # A VMM saves every register group KVM's ABI exposes (arm-vgic-v3.rst
    # DIST_REGS/REDIST_REGS/CPU_SYSREGS/LEVEL_INFO, arm-vgic-its.rst
    # ITS_REGS + SAVE_TABLES, api.rst KVM_GET_REG_LIST one-regs; kvm-facts
    # §5.7, §6, §7, §8) and restores them into a new VM in the documented
    # order: the new VM then holds the same state, and saving it again
    # gives back the same snapshot.
    vm = build(backend, **options)
    snap, vm2 = roundtrip(vm)
    assert list(snap.sections) == sections
    assert vm2.backend == backend and vm2.nr_vcpus == vm.nr_vcpus and vm2.nr_irqs == vm.nr_irqs
    assert snap.geometry["pri_bits"] == options.get("pri_bits", 5)
    assert_restored(vm, vm2, snap)
    if not vm.has_its:          # (with an ITS the restore consumes pending bits: see test_restore_onto_a_used_vm)
        assert np.array_equal(vm2.memory, vm.memory)


@pytest.mark.parametrize("name,options,sections", [CONFIGS[2], CONFIGS[4]], ids=["its-sve", "no-irqchip"])
def test_round_trip_across_backends(backend: str, name: str, options: dict, sections: list[str]) -> None:
    # The ABI is the backends' common language: a snapshot taken on one
    # restores on the other (backend is a host option) to the same state
    # (kvm-facts §6: register values, not an implementation's layout).
    vm = build(backend, **options)
    snap, vm2 = roundtrip(vm, backend=OTHER[backend])
    assert vm2.backend == OTHER[backend]
    assert_restored(vm, vm2, snap)
    if vm.irqchip:
        assert [take_all(vm, v) for v in range(vm.nr_vcpus)] == [take_all(vm2, v) for v in range(vm.nr_vcpus)]
    else:
        # Without the vGIC the timers publish their levels to userspace
        # (kvm_run device_irq_level bit 0: the vtimer; kvm-facts §7).
        for m in (vm, vm2):
            v = m.vcpus[1]
            v.enter()
            m.advance(VTIMER_DELAY - 1)
            assert v.timer.device_irq_level & 1 == 0
            m.advance(1)
            assert v.timer.device_irq_level & 1 == 1
            v.exit()


@pytest.mark.parametrize("pri_bits", [5, 6, 7])
def test_active_priorities_cover_the_priority_bits(backend: str, pri_bits: int) -> None:
    # CPU_SYSREGS carries ICC_AP0R<n>/ICC_AP1R<n> up to the index the
    # priority bits allow (KVM: 7 bits -> n <= 3, 6 -> n <= 1, else 0;
    # kvm-facts §6); an interrupt active at save time keeps its active
    # priority bit (IHI 0069: bit priority >> (8 - PREbits) of the APRs), so
    # the restored guest's running priority and priority drop match.
    vm = build(backend, nr_vcpus=2, nr_irqs=64, pri_bits=pri_bits, pre_bits=pri_bits)
    v = vm.vcpus[0]
    v.enter()
    v.sysreg_write("ICC_PMR_EL1", 0xFF)
    intid = v.sysreg_read("ICC_IAR1_EL1")
    v.exit()
    assert intid == 33                              # the level SPI at priority 0xA0 (0x80 | 33 & 0x38)
    snap, vm2 = roundtrip(vm)
    n = {5: 1, 6: 2, 7: 4}[pri_bits]
    aprs = [name for name in snap.sections["vgic.cpu_sysregs"].names() if "AP" in name]
    assert aprs == [f"ICC_AP{g}R{i}_EL1" for g in (0, 1) for i in range(n)]
    bit = 0xA0 >> (8 - pri_bits)
    regs = regs_of(snap)
    active = {k: x for k, x in regs.items() if "_AP" in k[1] and x}
    assert active == {("vcpu0", f"ICC_AP1R{bit // 32}_EL1"): 1 << bit % 32}
    assert_restored(vm, vm2, snap)
    for m in (vm, vm2):
        v = m.vcpus[0]
        v.enter()
        assert v.sysreg_read("ICC_RPR_EL1") == 0xA0
        v.sysreg_write("ICC_EOIR1_EL1", intid)
        assert v.sysreg_read("ICC_RPR_EL1") == 0xFF
        v.exit()


HOST_OPTIONS = [
    (dict(nr_lrs=8), ["state.vm.nr_lrs: 4 vs 8"], ["vm.nr_lrs: 8 vs 4"]),
    (dict(lr_order="reverse"), ["state.vm.lr_order: 'direct' vs 'reverse'"], ["vm.lr_order: 'reverse' vs 'direct'"]),
    (dict(timer_policy="eager"), ["state.arch_timer.policy: 'lazy' vs 'eager'"],
     ["vm.timer_policy: 'eager' vs 'lazy'"]),
    (dict(fp_policy="eager"), ["state.fpsimd.policy: 'lazy' vs 'eager'"], ["vm.fp_policy: 'eager' vs 'lazy'"]),
    (dict(host_sve=True), ["state.fpsimd.host_sve: False vs True"], ["vm.host_sve: True vs False"]),
    (dict(sve_vqs=[1, 2, 4, 8]), ["state.fpsimd.host_vqs: 3 entries vs 4"], ["vm.sve_vqs: [1, 2, 4, 8] vs [1, 2, 4]"]),
    (dict(its_max_ites=1000), [], ["vm.its_max_ites: 1000 vs 1048576"]),
]


@pytest.mark.parametrize("options,state_lines,snap_lines", HOST_OPTIONS,
                         ids=[next(iter(o[0])) for o in HOST_OPTIONS])
def test_restore_with_other_host_options(backend: str, options: dict, state_lines: list[str],
                                         snap_lines: list[str]) -> None:
    # Host choices are not guest-visible and may differ on the destination
    # (vgic.snapshot.HOST_OPTIONS): the LR count and order, the timer and
    # FP switch policies, the host's SVE VQs as long as every VQ up to the
    # guest's largest matches (api.rst KVM_REG_ARM64_SVE_VLS; kvm-facts §8),
    # the ITS's memory.  Only those settings differ, and the guest takes
    # the same interrupts.
    vm = build(backend, nr_vcpus=2, nr_irqs=64, its=True, lpis=40, pending_lpis=10, sve=True, vqs=(1, 2, 4))
    snap, vm2 = roundtrip(vm, **options)
    assert_restored(vm, vm2, snap, set(state_lines), set(snap_lines))
    for key, value in options.items():
        assert getattr(vm2, key) == value
    assert [take_all(vm, v) for v in range(2)] == [take_all(vm2, v) for v in range(2)]


def test_many_vcpus_round_trip_across_backends(backend: str) -> None:
    # The realistic workload of vgic.snapbench (ITS with mapped and pending
    # LPIs, SVE at VQ 4, armed timers) at 16 vCPUs, saved without RAM and
    # restored into the caller's copy of RAM (memory=) on the other
    # backend: same state, and every vCPU takes the same interrupts.
    vm = snapshot_vm(backend, nr_vcpus=16, nr_irqs=256, nr_lpis=500, vq=4, pending=100)
    snap = vgic.Snapshot.from_bytes(vm.save(ram=False).to_bytes())
    vm2 = vgic.VM.restore(snap, backend=OTHER[backend], memory=vm.memory.copy())
    assert state_diff(vm, vm2) == []
    taken = [take_all(vm, v) for v in range(16)]
    assert taken == [take_all(vm2, v) for v in range(16)]
    assert sorted(i for t in taken for i in t if i >= R.LPI_BASE) == list(range(R.LPI_BASE, R.LPI_BASE + 100))


@pytest.mark.regression("the snapshot wrote GICR_PROPBASER without PLPIS: KVM sanitised 0 to 0x180")
def test_round_trip_without_lpis_keeps_gicr_propbaser(backend: str) -> None:
    # Without an ITS GICR_TYPER.PLPIS is 0 and KVM leaves dist->propbaser
    # at 0; a guest never writes it (and IHI 0069 makes the register RES0
    # without LPIs).  KVM sanitises every REDIST_REGS write of it
    # (vgic_mmio_write_propbase -> vgic_sanitise_propbaser: inner
    # cacheability nCnB becomes RaWb, 0 -> 0x180; kvm-facts §5.6), which is
    # why QEMU's kvm_arm_gicv3_get/put move GICR_PROPBASER/PENDBASER only
    # when GICR_TYPER.PLPIS is set.  A restore must reproduce what the
    # guest reads, here 0.
    vm = build(backend, nr_vcpus=2, nr_irqs=64)
    snap, vm2 = roundtrip(vm)
    for m in (vm, vm2):
        assert m.mmio_read(m.vcpus[0].rd_base + R.GICR_PROPBASER, 8) == 0
    assert state_diff(vm, vm2) == []
    assert vm2.save().diff(snap) == []


# ============================================ 2. the guest after a restore
def test_pending_lpis_and_spis_are_delivered(backend: str) -> None:
    # Pending LPIs travel in the pending tables (SAVE_PENDING_TABLES, then
    # GICR_CTLR.EnableLPIs / RESTORE_TABLES read them back; kvm-facts §5.6,
    # §5.7), pending SPIs in GICD_ISPENDR and LEVEL_INFO (arm-vgic-v3.rst):
    # after the restore each vCPU acknowledges (ICC_IAR1_EL1) the same
    # INTIDs as the source, each then EOIed.
    vm = build(backend, nr_vcpus=2, nr_irqs=128, its=True, lpis=300, pending_lpis=30)
    snap, vm2 = roundtrip(vm)
    for v in range(2):
        src, dst = take_all(vm, v), take_all(vm2, v)
        assert src == dst
        lpis = [lpi_of(k) for k in range(30) if k % 2 == v]         # collection k mod 2 -> vCPU k mod 2
        spis = sorted([EDGE_SPI, *LEVEL_SPIS]) if v == 0 else []    # routed to vCPU 0 (IROUTER 0)
        assert sorted(dst) == sorted(spis + lpis)
        assert take_one(vm2, v) == SPURIOUS


@pytest.mark.parametrize("timer", ["vtimer", "ptimer"])
def test_armed_timer_fires_at_the_same_virtual_time(backend: str, timer: str) -> None:
    # The timers travel as one-regs (KVM_REG_ARM_TIMER_CTL/CVAL/CNT and the
    # PTIMER ones, api.rst; kvm-facts §7): the guest's counters read the
    # same after the restore (TIMER_CNT sets CNTVOFF), and the timer
    # condition CVAL <= counter - offset becomes true at the same tick:
    # the PPI (27 direct vtimer, 30 emulated ptimer) is not pending one
    # tick before CVAL, pending at CVAL, and the guest acknowledges it.
    vm = build(backend, nr_vcpus=2, nr_irqs=64)
    vm.advance(1234)
    snap, vm2 = roundtrip(vm)
    ppi = VTIMER_PPI if timer == "vtimer" else PTIMER_PPI
    expect = (GUEST_VCOUNT + 1234, GUEST_VCOUNT + VTIMER_DELAY, START + 1234, START + PTIMER_DELAY)
    for m in (vm, vm2):
        cnt = guest_counters(m, 1)
        assert cnt == expect
        now, cval = (cnt[0], cnt[1]) if timer == "vtimer" else (cnt[2], cnt[3])
        v = m.vcpus[1]
        v.enter()
        if timer == "ptimer":
            v.sysreg_write("CNTV_CTL_EL0", 0)           # the vtimer (earlier, higher priority) off
        m.advance(cval - now - 1)
        assert m.mmio_read(v.sgi_base + R.GICR_ISPENDR0, 4, 1) >> ppi & 1 == 0
        m.advance(1)
        assert m.mmio_read(v.sgi_base + R.GICR_ISPENDR0, 4, 1) >> ppi & 1 == 1
        v.sysreg_write("ICC_PMR_EL1", 0xFF)
        assert v.sysreg_read("ICC_IAR1_EL1") == ppi
        v.exit()


def test_blocked_vcpu_wakes_at_the_same_time(backend: str) -> None:
    # A vCPU blocked in WFI is woken by the background timer KVM arms at
    # the earliest expiry of its enabled, unmasked timers (kvm-facts §7
    # kvm_timer_vcpu_put): after a restore that is still the vtimer's CVAL.
    # (The guest runs into its WFI: KVM_RUN, exit, block.)
    vm = build(backend, nr_vcpus=2, nr_irqs=64)
    snap, vm2 = roundtrip(vm)
    for m in (vm, vm2):
        v = m.vcpus[0]
        v.enter()
        v.exit()
        v.block()
        m.advance(VTIMER_DELAY - 1)
        assert v.unblock() is False
        v.block()
        m.advance(1)
        assert v.unblock() is True


@pytest.mark.parametrize("sve", [True, False], ids=["sve", "fpsimd"])
def test_fp_and_sve_registers_read_back(backend: str, sve: bool) -> None:
    # FP/SVE state travels as one-regs: Z0-Z31/P0-P15/FFR (slice 0, at
    # KVM_REG_SIZE 256/32/32 bytes) on an SVE vCPU, V0-V31 otherwise, and
    # FPSR/FPCR (api.rst; kvm-facts §8).  KVM_GET_ONE_REG and the guest
    # (at its ZCR_EL1 vector length) read back what was saved.
    vm = build(backend, nr_vcpus=2, nr_irqs=64, sve=sve, vqs=(1, 2, 4), seed=7)
    snap, vm2 = roundtrip(vm)
    for v in range(2):
        regs = one_regs(vm, v)
        assert one_regs(vm2, v) == regs
        assert regs[FPSR] == 0x0800009F and regs[FPCR] == 0x03C00000
        if sve:
            assert vm2.vcpus[v].get_one_reg(VLS) == vls_bytes((1, 2, 4))
        # VQ 4 first: lowering ZCR_EL1.LEN loses the bits above the new
        # length (they read as zero when it grows again), identically in both.
        for vq in ((4, 1) if sve else (None,)):
            seen = guest_fp(vm2, v, vq)
            assert seen == guest_fp(vm, v, vq)
            if vq is not None:
                assert seen["Z31"] == regs[Z(31)][:16 * vq]          # one-regs: KVM_REG_SIZE, zero-padded
                assert seen["P15"] == regs[P(15)][:2 * vq]
                assert seen["FFR"] == regs[FFR_()][:2 * vq]
                assert regs[Z(31)][16 * 4:] == bytes(256 - 16 * 4)   # above the vCPU's largest VQ (4)
            else:
                assert seen["V9"] == regs[V(9)] and len(regs[V(9)]) == 16
            assert (seen["FPSR"], seen["FPCR"]) == (0x0800009F, 0x03C00000)


def test_cpu_interface_registers_read_back(backend: str) -> None:
    # ICC_* state travels through CPU_SYSREGS (arm-vgic-v3.rst; kvm-facts
    # §6): KVM_GET_DEVICE_ATTR of ICC_PMR_EL1, ICC_BPR0/1_EL1,
    # ICC_CTLR_EL1, ICC_SRE_EL1 (reads 0x7) and ICC_IGRPEN1_EL1 gives the
    # same values after the restore, and they are what the guest wrote.
    vm = build(backend, nr_vcpus=3, nr_irqs=64, pri_bits=6, pre_bits=6)
    snap, vm2 = roundtrip(vm)
    for v in range(3):
        got = {enc: cpu_sysreg(vm2, v, enc) for enc in (ICC_PMR, ICC_BPR0, ICC_BPR1, ICC_CTLR, ICC_SRE, ICC_IGRPEN1)}
        assert got == {enc: cpu_sysreg(vm, v, enc) for enc in got}
        assert got[ICC_PMR] == pmr(v) and got[ICC_BPR1] == BPR1 and got[ICC_IGRPEN1] == 1 and got[ICC_SRE] == 0x7
        assert (got[ICC_CTLR] >> 8) & 7 == 6 - 1                     # PRIbits: 6 bits


def test_its_translation_and_command_queue_after_restore(backend: str) -> None:
    # The ITS's tables come back through RESTORE_TABLES and its registers
    # in the documented order (CBASER, the others, CREADR after CBASER,
    # GITS_CTLR last; arm-vgic-its.rst, kvm-facts §5.7): KVM_SIGNAL_MSI of
    # a mapped event delivers its LPI to its collection's vCPU, and the
    # guest can go on using the command queue where it left it (CWRITER ==
    # CREADR): a new MAPTI runs and its event translates.
    vm = build(backend, nr_vcpus=2, nr_irqs=64, its=True, lpis=300)
    snap, vm2 = roundtrip(vm)
    regs = regs_of(snap)
    cwriter = regs[("vm", "GITS_CWRITER")]
    assert cwriter == regs[("vm", "GITS_CREADR")] == (2 + 2 + 300) * 32   # MAPC x2, MAPD x2, MAPTI x300
    for m in (vm, vm2):
        assert take_all(m, 1) == [] and take_all(m, 0) == sorted([EDGE_SPI, *LEVEL_SPIS])[:1]
        assert m.signal_msi(*event_of(201)) is True                  # LPI 8393 on collection 1
        assert take_all(m, 1) == [lpi_of(201)] and take_all(m, 0) == []
        assert m.mmio_read(m.its_base + R.GITS_CREADR, 8) == cwriter
        g = Guest.__new__(Guest)
        g.vm, g.lay, g.its, g.cwriter = m, layout(m), m.its_base, cwriter
        set_prop(m, g.lay, 9000)
        g.send(mapti(1, 250, 9000, 0))                               # device 1 maps events 0..255
        assert m.mmio_read(m.its_base + R.GITS_CREADR, 8) == cwriter + 32
        assert m.signal_msi(1, 250) is True
        assert take_all(m, 0) == [9000]
        assert m.signal_msi(5, 0) is False                           # unmapped device: no translation


# ======================================== 3. restore onto an existing VM
def test_restore_onto_a_used_vm(backend: str) -> None:
    # vm.restore(snap) makes the VM what VM.restore(snap) builds, except
    # its host clock, which keeps running (vgic/snapshot.py restore_onto):
    # CNTPCT_EL0 stays the VM's own and KVM's offsets absorb the difference
    # (TIMER_CNT / PTIMER_CNT writes set CNTVOFF / the ptimer offset to
    # counter - value; kvm-facts §7), so the guest reads the same counters.
    # Guest RAM is the snapshot's, less the pending bits RESTORE_TABLES
    # consumed (vgic_v3_lpi_sync_pending_status clears each bit it reads
    # set; kvm-facts §5.8), exactly as in the fresh VM.
    vm = build(backend, nr_vcpus=2, nr_irqs=128, its=True, lpis=200, pending_lpis=20, sve=True)
    snap = vm.save()
    other = build(backend, nr_vcpus=2, nr_irqs=128, its=True, lpis=50, pending_lpis=40, sve=True, seed=9)
    other.advance(777_777)
    other.vcpus[1].enter()
    other.vcpus[1].exit()                               # vCPU 1 left loaded
    buffer, counter = other.memory, other.counter
    assert other.restore(snap) is None
    fresh = vgic.VM.restore(snap, backend=backend)
    a, b = comparable(other.state()), comparable(fresh.state())
    moved = counter - START
    assert (a["arch_timer"].pop("CNTPCT_EL0"), b["arch_timer"].pop("CNTPCT_EL0")) == (counter, START)
    assert a["arch_timer"].pop("voffset") == b["arch_timer"].pop("voffset") + moved
    assert a["arch_timer"].pop("poffset") == b["arch_timer"].pop("poffset") + moved
    assert diff(a, b, limit=10) == []
    assert other.memory is buffer and np.array_equal(other.memory, fresh.memory)
    expect = np.array(snap.ram, copy=True)
    lay = layout(vm)
    for k in range(20):
        o = lay.pend[k % 2] - vm.ram_base + lpi_of(k) // 8
        expect[o] &= ~(1 << lpi_of(k) % 8) & 0xFF
    assert np.array_equal(other.memory, expect)
    assert guest_counters(other, 0) == guest_counters(fresh, 0) == (GUEST_VCOUNT, GUEST_VCOUNT + VTIMER_DELAY,
                                                                       START, START + PTIMER_DELAY)
    assert [take_all(other, v) for v in range(2)] == [take_all(fresh, v) for v in range(2)]


def test_restore_onto_the_source_rolls_it_back(backend: str) -> None:
    # A VMM rolling a VM back to its own snapshot: the interrupts taken
    # since come back pending, the registers written since revert.
    vm = build(backend, nr_vcpus=2, nr_irqs=64, its=True, lpis=30, pending_lpis=6)
    snap = vm.save()
    first = [take_all(vm, v) for v in range(2)]
    vm.mmio_write(vm.dist_base + R.GICD_ICENABLER + 4, 4, 0xFFFFFFFF)
    vm.restore(snap)
    assert vm.save().diff(snap) == []
    assert [take_all(vm, v) for v in range(2)] == first


# ============================================================ 4. refusals
GEOMETRY = [
    ("nr_vcpus", dict(nr_vcpus=3), "2", "3"),
    ("nr_irqs", dict(nr_irqs=96), "128", "96"),
    ("its", dict(its=False, ram_size=RAM_ITS), "True", "False"),
    ("sve", dict(sve=False), "True", "False"),
    ("pri_bits", dict(pri_bits=6), "5", "6"),
    ("ram_size", dict(ram_size=2 * RAM_ITS), str(RAM_ITS), str(2 * RAM_ITS)),
    ("cntfrq", dict(cntfrq=1_000_000), "62500000", "1000000"),
]


@pytest.mark.parametrize("key,target,mine,theirs", GEOMETRY, ids=[g[0] for g in GEOMETRY])
def test_restore_onto_other_geometry_is_refused(backend: str, key: str, target: dict, mine: str,
                                                theirs: str) -> None:
    # The guest-visible geometry (vgic.snapshot.GUEST_GEOMETRY) must match:
    # KVM fixes it at creation (KVM_CREATE_VCPU count, NR_IRQS, the ITS
    # device, the SVE feature, ICH_VTR_EL2.PRIbits, memslots; kvm-facts §6),
    # so a VMM cannot restore into another.  Refused before anything runs.
    opts = dict(nr_vcpus=2, nr_irqs=128, its=True, lpis=20, pending_lpis=4, sve=True)
    snap = build(backend, **opts).save()
    opts.update(target)
    if not opts["its"]:
        opts["lpis"] = opts["pending_lpis"] = 0
    vm = build(backend, **opts)
    before = everything(vm)
    with pytest.raises(vgic.SnapshotError) as ei:
        vm.restore(snap)
    assert key in str(ei.value) and mine in str(ei.value) and theirs in str(ei.value)
    unchanged(vm, before)


def test_restore_onto_a_vm_without_irqchip_is_refused(backend: str) -> None:
    # irqchip (KVM_CREATE_DEVICE(VGIC_V3) or not) is guest geometry too.
    snap = build(backend, nr_vcpus=2, nr_irqs=64).save()
    vm = build(backend, nr_vcpus=2, nr_irqs=64, irqchip=False)
    before = everything(vm)
    with pytest.raises(vgic.SnapshotError, match="irqchip"):
        vm.restore(snap)
    unchanged(vm, before)


@pytest.mark.parametrize("how", ["running", "blocked"])
def test_save_and_restore_refuse_a_vcpu_inside_kvm_run(backend: str, how: str) -> None:
    # While a vCPU is in KVM_RUN (running, or blocked in WFI inside it) the
    # vGIC's device attributes answer EBUSY and the one-regs cannot be
    # read (arm-vgic-v3.rst "-EBUSY: one or more VCPUs are running";
    # kvm-facts §5.7, §6): both directions refuse, naming the vCPU.
    vm = build(backend, nr_vcpus=2, nr_irqs=64, its=True, lpis=10, pending_lpis=2)
    snap = vm.save()
    v = vm.vcpus[1]
    v.enter()
    if how == "blocked":
        v.exit()
        v.block()
    before = everything(vm)
    for call in (vm.save, lambda: vm.restore(snap)):
        with pytest.raises(vgic.SnapshotError) as ei:
            call()
        assert f"vCPU 1 is {how}" in str(ei.value)
        unchanged(vm, before)


@pytest.mark.parametrize("its", [False, True], ids=["no-its", "its"])
def test_save_refuses_an_unfinalized_sve_vcpu(backend: str, its: bool) -> None:
    # An SVE vCPU before KVM_ARM_VCPU_FINALIZE has no register list
    # (KVM_GET_REG_LIST -> EPERM; api.rst, kvm-facts §8): no snapshot.
    vm = build(backend, nr_vcpus=2, nr_irqs=64, its=its, lpis=20 if its else 0, pending_lpis=5 if its else 0,
               sve=True, finalize=False)
    state, _ = everything(vm)
    with pytest.raises(vgic.SnapshotError, match="vCPU 0 has SVE and is not finalized"):
        vm.save()
    assert diff(state, vm.state(), limit=10) == []


@pytest.mark.regression("save wrote the pending and ITS tables before refusing an unfinalized SVE vCPU")
def test_refused_save_leaves_guest_ram_alone(backend: str) -> None:
    # The save cannot succeed (KVM_GET_REG_LIST is EPERM for an unfinalized
    # SVE vCPU; kvm-facts §8), and that is known before anything is done:
    # a refused save should not have rewritten guest RAM (pending tables,
    # device/collection tables, ITTs) on its way to the refusal.
    vm = build(backend, nr_vcpus=2, nr_irqs=64, its=True, lpis=20, pending_lpis=5, sve=True, finalize=False)
    before = everything(vm)
    with pytest.raises(vgic.SnapshotError):
        vm.save()
    unchanged(vm, before)


def put64(ram: np.ndarray, offset: int, value: int) -> None:
    ram[offset:offset + 8] = np.frombuffer(value.to_bytes(8, "little"), dtype=np.uint8)


# Hostile ITS tables (kvm-facts §5.7 RESTORE_TABLES checks): (what, RAM
# offset in the ITS helpers' layout, the 64-bit entry written there, the
# errno KVM answers).  DTE 0 sits at + 5 MiB, its ITT at + 8 MiB, the
# collection table at + 6 MiB, the property table at + 1 MiB.
PROP_GPA = 0x4000_0000 + 0x10_0000          # vgic.VM's default ram_base + 1 MiB


def dte(itt: int, bits: int = 8, nxt: int = 1) -> int:
    """kvm-facts §5.7: V | next << 49 | ITT_addr[51:8] << 5 | Size (bits - 1)."""
    return (1 << 63) | (nxt << 49) | ((itt >> 8) << 5) | (bits - 1)


HOSTILE = [
    ("ITE pINTID below 8192", 0x80_0000, (1 << 48) | (100 << 16) | 0, errno.EINVAL),
    ("ITE of an unmapped collection", 0x80_0000, (1 << 48) | (R.LPI_BASE << 16) | 77, errno.EINVAL),
    ("ITE next beyond the EventID space", 0x80_0000 + 255 * 8, (5 << 48) | ((R.LPI_BASE + 255) << 16) | 1,
     errno.EINVAL),
    ("CTE targeting no vCPU", 0x60_0000, (1 << 63) | (9 << 16) | 0, errno.EINVAL),
    # A DTE whose ITT is the property table: its "ITEs" (0xA3 bytes) name
    # collection 0xA3A3, which does not exist.
    ("DTE with a garbage ITT", 0x50_0000, dte(PROP_GPA), errno.EINVAL),
    # A DTE whose ITT lies outside guest memory: the read fails (-EFAULT).
    ("DTE with an ITT outside RAM", 0x50_0000, dte(1 << 40), errno.EFAULT),
]


@pytest.mark.parametrize("what,offset,entry,code", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_its_tables_are_refused(backend: str, what: str, offset: int, entry: int, code: int) -> None:
    # RESTORE_TABLES validates every entry it reads from guest RAM (ITE:
    # pINTID >= 8192, EventID + next inside the device's EventID bits, the
    # collection exists; CTE: the target is a vCPU; -EINVAL otherwise; a
    # table KVM cannot read: -EFAULT; kvm-facts §5.7).  VM.restore raises
    # SnapshotError chaining KVM's refusal; vm.restore leaves the VM as it
    # was (docs/snapshot-format.md: "leaves the target VM unchanged").
    snap = build(backend, nr_vcpus=2, nr_irqs=64, its=True, lpis=300, pending_lpis=10).save()
    ram = np.array(snap.ram, copy=True)
    put64(ram, offset, entry)
    bad = rebuild(snap, ram=ram)
    with pytest.raises(vgic.SnapshotError) as ei:
        vgic.VM.restore(bad, backend=backend)
    assert "KVM refused" in str(ei.value) and "ITS" in str(ei.value)
    assert isinstance(ei.value.__cause__, vgic.KvmError) and ei.value.__cause__.errno == code
    vm = build(backend, nr_vcpus=2, nr_irqs=64, its=True, lpis=20, pending_lpis=3, seed=4)
    before = everything(vm)
    with pytest.raises(vgic.SnapshotError):
        vm.restore(bad)
    unchanged(vm, before)


def _ctlr_with_seis(snap: vgic.Snapshot) -> vgic.Snapshot:
    sec = snap.sections["vgic.cpu_sysregs"]
    ctlr = int(sec.values[0, sec.names().index("ICC_CTLR_EL1")])
    return with_value(snap, "vgic.cpu_sysregs", "ICC_CTLR_EL1", ctlr | 1 << 14, vcpu=1)


# Values KVM refuses: (what, edit of the snapshot, host options of the
# restore, text the message carries).
REFUSED = [
    # ICC_CTLR_EL1.SEIS must equal the host's (0 here; kvm-facts §6).
    ("ICC_CTLR_EL1.SEIS", _ctlr_with_seis, {}, "ICC_CTLR_EL1"),
    # GICD_IIDR: only Revision may differ, and it must be 2 or 3 (kvm-facts §1.3).
    ("GICD_IIDR revision 5", lambda s: with_value(s, "vgic.dist_config", "GICD_IIDR", 0x4B00543B), {},
     "0x4b00543b"),
    ("GICD_IIDR revision 1", lambda s: with_value(s, "vgic.dist_config", "GICD_IIDR", 0x4B00143B), {},
     "0x4b00143b"),
    ("GICD_IIDR implementer", lambda s: with_value(s, "vgic.dist_config", "GICD_IIDR", 0x4B00343C), {},
     "0x4b00343c"),
    # SVE_VLS: the largest VQ must be the host's and every VQ up to it must
    # match the host exactly (api.rst; kvm-facts §8): a host without VQ 4,
    # and a host with a VQ 3 the guest does not have.
    ("SVE_VLS, host lacks VQ 4", lambda s: s, {"sve_vqs": [1, 2]}, "KVM_REG_ARM64_SVE_VLS"),
    ("SVE_VLS, host has VQ 3", lambda s: s, {"sve_vqs": [1, 2, 3, 4]}, "KVM_REG_ARM64_SVE_VLS"),
]


@pytest.mark.parametrize("what,edit,host,text", REFUSED, ids=[r[0] for r in REFUSED])
def test_register_values_kvm_refuses(backend: str, what: str, edit, host: dict, text: str) -> None:
    # A value KVM_SET_DEVICE_ATTR / KVM_SET_ONE_REG refuses (EINVAL) makes
    # the restore fail: VM.restore raises SnapshotError whose __cause__ is
    # the KvmError; vm.restore onto a VM leaves it unchanged.
    vm = build(backend, nr_vcpus=2, nr_irqs=64, its=True, lpis=20, pending_lpis=4, sve=True, vqs=(1, 2, 4))
    bad = edit(vm.save())
    with pytest.raises(vgic.SnapshotError) as ei:
        vgic.VM.restore(bad, backend=backend, **host)
    assert text in str(ei.value) and "KVM refused" in str(ei.value)
    assert isinstance(ei.value.__cause__, vgic.KvmError) and ei.value.__cause__.errno == errno.EINVAL
    # The same refusal onto a VM of this host (sve_vqs is the host's).
    target = build(backend, nr_vcpus=2, nr_irqs=64, its=True, lpis=5, sve=True,
                   vqs=tuple(host.get("sve_vqs", (1, 2, 4))), seed=3)
    before = everything(target)
    with pytest.raises(vgic.SnapshotError, match=text):
        target.restore(bad)
    unchanged(target, before)


def test_too_small_its_memory_is_refused(backend: str) -> None:
    # The destination ITS cannot hold the saved ITEs (KVM: RESTORE_TABLES
    # -ENOMEM; kvm-facts §5.7): refused, KVM's error chained.
    snap = build(backend, nr_vcpus=2, nr_irqs=64, its=True, lpis=40).save()
    with pytest.raises(vgic.SnapshotError) as ei:
        vgic.VM.restore(snap, backend=backend, its_max_ites=10)
    assert ei.value.__cause__.errno == errno.ENOMEM


def _without(snap: vgic.Snapshot, name: str) -> vgic.Snapshot:
    return rebuild(snap, sections=[s for s in snap.sections.values() if s.name != name])


BOGUS = Section("bogus", "DIST_REGS", False, np.array([R.GICD_CTLR], dtype=np.uint64), np.array([0], dtype="<u4"))
MALFORMED = [
    ("missing its.ctlr", lambda s: _without(s, "its.ctlr"), "its.ctlr"),
    ("missing timer.regs", lambda s: _without(s, "timer.regs"), "timer.regs"),
    ("missing vgic.cpu_sysregs", lambda s: _without(s, "vgic.cpu_sysregs"), "vgic.cpu_sysregs"),
    ("extra section", lambda s: rebuild(s, sections=[*s.sections.values(), BOGUS]), "bogus"),
    ("its.regs without GITS_BASER1", lambda s: drop_register(s, "its.regs", "GITS_BASER1"), "its.regs"),
    ("cpu_sysregs without ICC_PMR_EL1", lambda s: drop_register(s, "vgic.cpu_sysregs", "ICC_PMR_EL1"),
     "vgic.cpu_sysregs"),
    ("dist_state without GICD_ISPENDR1", lambda s: drop_register(s, "vgic.dist_state", "GICD_ISPENDR1"),
     "vgic.dist_state"),
]


@pytest.mark.parametrize("what,edit,text", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_sections_that_do_not_fit_are_refused(backend: str, what: str, edit, text: str) -> None:
    # "A restore checks the sections against the VM it goes into: exactly
    # the sections that VM needs, each holding exactly the register list
    # this library writes for it" (docs/snapshot-format.md): a missing or
    # extra section, or one with other registers, is refused before
    # anything changes.
    vm = build(backend, nr_vcpus=2, nr_irqs=64, its=True, lpis=20, pending_lpis=4)
    bad = edit(vm.save())
    with pytest.raises(vgic.SnapshotError, match=text):
        vgic.VM.restore(bad, backend=backend)
    target = build(backend, nr_vcpus=2, nr_irqs=64, its=True, lpis=5, seed=3)
    before = everything(target)
    with pytest.raises(vgic.SnapshotError, match=text):
        target.restore(bad)
    unchanged(target, before)


@pytest.mark.regression("fpsimd.regs and timer.regs were replayed without checking their register lists")
@pytest.mark.parametrize("section,name", [("fpsimd.regs", "Z5"), ("timer.regs", "KVM_REG_ARM_TIMER_CVAL")])
def test_vcpu_register_lists_are_checked(backend: str, section: str, name: str) -> None:
    # KVM_GET_REG_LIST names every one-reg of the vCPU (api.rst); a
    # snapshot that lacks one cannot reproduce the vCPU, and the format
    # promises each section holds "exactly the register list this library
    # writes for it" (docs/snapshot-format.md; _check_sections' docstring:
    # "no more, no fewer").  Today the vCPU's register comes back at its
    # reset value (Z5 zero, the vtimer's CVAL 0) and nothing is refused.
    vm = build(backend, nr_vcpus=2, nr_irqs=64, sve=True, vqs=(1, 2))
    bad = drop_register(vm.save(), section, name)
    with pytest.raises(vgic.SnapshotError, match=section):
        vgic.VM.restore(bad, backend=backend)


def test_bad_arguments_are_type_errors(backend: str) -> None:
    # The Python API's own checks: a restore takes a Snapshot; only host
    # options may be given to VM.restore, none to vm.restore.
    vm = build(backend, nr_vcpus=2, nr_irqs=64)
    snap = vm.save()
    data = snap.to_bytes()
    before = everything(vm)
    with pytest.raises(TypeError, match=r"expected a vgic\.Snapshot, not bytes"):
        vgic.VM.restore(data)
    with pytest.raises(TypeError, match=r"expected a vgic\.Snapshot, not dict"):
        vm.restore({})
    with pytest.raises(TypeError, match="nr_lrs"):
        vm.restore(snap, nr_lrs=4)
    with pytest.raises(TypeError, match="nr_vcpus"):
        vgic.VM.restore(snap, nr_vcpus=4)
    unchanged(vm, before)


def test_memory_of_the_wrong_size_is_refused(backend: str) -> None:
    # memory= gives the RAM of a ram=False snapshot: its size is the
    # snapshot's ram_size (a memslot of another size is another VM).
    vm = build(backend, nr_vcpus=2, nr_irqs=64, its=True, lpis=20)
    snap = vm.save(ram=False)
    with pytest.raises(vgic.SnapshotError, match=f"the snapshot's RAM {RAM_ITS}"):
        vgic.VM.restore(snap, backend=backend, memory=np.zeros(RAM_ITS // 2, dtype=np.uint8))


# ================================================================ 5. format
@pytest.fixture
def saved(backend: str) -> tuple[vgic.VM, vgic.Snapshot, bytes]:
    vm = build(backend, nr_vcpus=2, nr_irqs=64, its=True, lpis=50, pending_lpis=5, sve=True, vqs=(1, 2))
    snap = vm.save()
    return vm, snap, snap.to_bytes()


def test_fixed_header(saved) -> None:
    # The fixed header (vgic/snapshot.py _FIXED): magic, version 1.0, no
    # flags, the header and payload lengths that add up to the file, and a
    # CRC-32 over the header with its CRC field 0, then everything after.
    vm, snap, data = saved
    magic, major, minor, flags, hlen, plen, crc = FIXED.unpack_from(data)
    assert (magic, major, minor, flags) == (b"VGICSNAP", 1, 0, 0)
    assert FIXED.size + hlen + plen == len(data)
    assert crc == zlib.crc32(data[FIXED.size:], zlib.crc32(data[:FIXED.size - 8] + b"\0" * 8))
    assert snap.format_version == (1, 0)


FORMAT_ERRORS = [
    ("magic", lambda d: b"XGICSNAP" + d[8:], "bad magic"),
    ("major 2", lambda d: patched(d, major=2), "format 2.0 is newer than this vgic reads"),
    ("major 0", lambda d: patched(d, major=0), "format 0.0 does not exist"),
    ("unknown flag", lambda d: patched(d, flags=4), "unknown flags 0x4"),
    ("payload bit flip", lambda d: d[:-100] + bytes([d[-100] ^ 1]) + d[-99:], "checksum"),
    ("header bit flip", lambda d: d[:FIXED.size + 5] + bytes([d[FIXED.size + 5] ^ 0x20]) + d[FIXED.size + 6:],
     "checksum"),
    ("truncated", lambda d: d[:-1], "truncated or padded"),
    ("trailing garbage", lambda d: d + b"\0", "truncated or padded"),
    ("shorter than the header", lambda d: d[:20], "shorter than its header"),
]


@pytest.mark.parametrize("what,edit,text", FORMAT_ERRORS, ids=[f[0] for f in FORMAT_ERRORS])
def test_malformed_bytes_are_refused(saved, what: str, edit, text: str) -> None:
    # A reader refuses a newer major version (the FORMAT_VERSION
    # contract), a file that is not a snapshot, a wrong CRC-32, and a
    # length other than the header's, with a message naming the problem.
    _, _, data = saved
    with pytest.raises(vgic.SnapshotError, match=text):
        vgic.Snapshot.from_bytes(edit(data))


def test_newer_minor_version_is_read(saved) -> None:
    # "A newer minor one only adds keys a reader may ignore"
    # (FORMAT_VERSION): a 1.3 file with new keys at the top, in meta, in
    # meta.host and in a section is read and restores.
    vm, snap, data = saved

    def edit(h: dict) -> None:
        h["meta"]["format"] = [1, 3]
        h["future"] = {"x": 1}
        h["meta"]["future"] = [1, 2]
        h["meta"]["host"]["future"] = 0
        h["sections"][0]["future"] = "yes"

    newer = vgic.Snapshot.from_bytes(with_header(data, 3, edit))
    assert newer.format_version == (1, 3)
    assert newer.diff(snap) == []
    assert_restored(vm, vgic.VM.restore(newer, backend=vm.backend), snap)
    # The fixed header's minor alone newer is read as well.
    assert vgic.Snapshot.from_bytes(patched(data, minor=9)).diff(snap) == []


def test_newer_minor_vm_key_is_ignored_by_vm_restore(saved) -> None:
    # The same contract for a key added to meta.vm (the VM's options): a
    # reader of 1.0 ignores it ("a reader ignores keys it does not know",
    # docs/snapshot-format.md), VM.restore as well as vm.restore.
    vm, snap, data = saved

    def edit(h: dict) -> None:
        h["meta"]["format"] = [1, 1]
        h["meta"]["vm"]["future_option"] = 1

    newer = vgic.Snapshot.from_bytes(with_header(data, 1, edit))
    target = build(vm.backend, nr_vcpus=2, nr_irqs=64, its=True, lpis=5, sve=True, vqs=(1, 2), seed=2)
    target.restore(newer)
    assert_restored(vm, target, snap)
    assert_restored(vm, vgic.VM.restore(newer, backend=vm.backend), snap)


def test_zstd_round_trip(saved) -> None:
    # compress="zstd" compresses the payload (FLAG_ZSTD); reading it back
    # gives the same snapshot, which restores.
    pytest.importorskip("zstandard", reason="the zstandard package (the [zstd] extra) is not installed")
    vm, snap, data = saved
    packed = snap.to_bytes("zstd")
    assert FIXED.unpack_from(packed)[3] == 1 and len(packed) < len(data) // 10   # mostly-zero RAM
    back = vgic.Snapshot.from_bytes(packed)
    assert back.diff(snap) == []
    assert_restored(vm, vgic.VM.restore(back, backend=vm.backend), snap)
    with pytest.raises(ValueError, match="gzip"):
        snap.to_bytes("gzip")


def test_from_bytes_is_zero_copy_and_read_only(saved) -> None:
    # from_bytes reads arrays, RAM included, as read-only views into the
    # caller's buffer (its docstring): no copy of guest RAM, and no way to
    # change the snapshot through them.
    vm, snap, data = saved
    back = vgic.Snapshot.from_bytes(data)
    flat = np.frombuffer(data, dtype=np.uint8)
    assert np.shares_memory(back.ram, flat) and not back.ram.flags.writeable
    assert all(np.shares_memory(s.values, flat) and not s.values.flags.writeable for s in back.sections.values())
    assert np.array_equal(back.ram, vm.memory)
    buf = bytearray(data)
    assert np.shares_memory(vgic.Snapshot.from_bytes(memoryview(buf)).ram, np.frombuffer(buf, dtype=np.uint8))


def test_snapshot_without_ram_restores_into_given_memory(backend: str) -> None:
    # ram=False leaves RAM to the VMM (vm.save docstring), which restores
    # it into its own buffer (memory=): the VM uses that buffer itself.
    vm = build(backend, nr_vcpus=2, nr_irqs=64, its=True, lpis=60, pending_lpis=12)
    snap = vm.save(ram=False)
    assert snap.ram is None
    back = vgic.Snapshot.from_bytes(snap.to_bytes())
    assert back.ram is None
    memory = vm.memory.copy()                       # RAM after the save wrote the tables
    vm2 = vgic.VM.restore(back, backend=backend, memory=memory)
    assert np.shares_memory(vm2.memory, memory)
    assert state_diff(vm, vm2) == []
    assert [take_all(vm, v) for v in range(2)] == [take_all(vm2, v) for v in range(2)]


def test_file_save_and_load(saved, tmp_path: Path) -> None:
    vm, snap, data = saved
    path = tmp_path / "vm.vgicsnap"
    snap.save(path)
    assert path.read_bytes() == data
    assert vgic.Snapshot.load(path).diff(snap) == []


def test_bytes_are_deterministic(saved) -> None:
    # Saving the same VM twice gives the same bytes (no timestamps, no
    # ordering by hash): snapshots can be compared and deduplicated.
    vm, snap, data = saved
    assert vm.save().to_bytes() == data
    assert vgic.Snapshot.from_bytes(data).to_bytes() == data


def test_payload_size(backend: str) -> None:
    # payload_bytes() is every register in its ABI size: 4 bytes per
    # DIST/REDIST/LEVEL_INFO attribute, 8 per CPU_SYSREGS, ITS and timer
    # attribute, one-regs in KVM_REG_SIZE (Z 256, P/FFR 32, SVE_VLS 64,
    # FPSR/FPCR 4, ZCR_EL1 and the timer regs 8); the file adds little.
    nv, ni = 16, 256
    vm = snapshot_vm(backend, nr_vcpus=nv, nr_irqs=ni, nr_lpis=200, vq=4, pending=20)
    snap = vm.save(ram=False)
    spi_words = ni // 32 - 1
    dist = 2 + spi_words + (ni // 16 - 2) + (ni // 4 - 8) + 2 * (ni - 32) + 3 * spi_words
    redist = nv * (15 + 4)
    cpu = nv * (1 + 2 + 6) * 8                                       # 5 priority bits: one APR per group
    levels = spi_words + nv
    its = 13 * 8
    timer = 2 * 8 + nv * 6 * 8
    fp = nv * (64 + 4 + 4 + 32 * 256 + 16 * 32 + 32 + 8)
    assert snap.payload_bytes() == 4 * (dist + redist + levels) + cpu + its + timer + fp
    assert snap.payload_bytes() <= len(snap.to_bytes()) <= 1.2 * snap.payload_bytes()


# ================================================================= 6. naming
def test_registers_have_architectural_names_and_values(backend: str) -> None:
    # A snapshot names every register by the architecture or the uapi
    # (STYLE "Snapshots that name their registers"; regnames): the values
    # are what the guest wrote, as KVM's ABI reads them back.
    vm = build(backend, nr_vcpus=2, nr_irqs=64, its=True, lpis=20, sve=True, vqs=(1, 2, 4))
    d = vm.dist_base
    vm.mmio_write(d + R.GICD_ICENABLER + 4, 4, 0xFFFFFFFF)
    vm.mmio_write(d + R.GICD_ISENABLER + 4, 4, 0x0F0F00F0)
    vm.mmio_write(d + R.GICD_IROUTER + 8 * 32, 8, vm.vcpus[1].mpidr & 0xFFFFFF)
    vm.mmio_write(vm.vcpus[1].sgi_base + R.GICR_ISPENDR0, 4, 1 << 20, 1)
    snap = vm.save()
    regs = regs_of(snap)
    rd = vm.vcpus[0].rd_base
    propbaser = vm.mmio_read(rd + R.GICR_PROPBASER, 8)
    assert regs[("vm", "GICD_CTLR")] == 0x52                             # EnableGrp1 | ARE | DS (kvm-facts §1.3)
    assert regs[("vm", "GICD_IIDR")] == 0x4B00343B                       # revision 3 (kvm-facts §1.3)
    assert regs[("vm", "GICD_ISENABLER1")] == 0x0F0F00F0
    assert regs[("vm", "GICD_IROUTER32[31:0]")] == 1 and regs[("vm", "GICD_IROUTER32[63:32]")] == 0
    assert regs[("vm", "GICD_IROUTER40[31:0]")] == 1                    # the last vCPU (snapshot_helpers)
    assert regs[("vcpu0", "GICR_PROPBASER[31:0]")] == propbaser & 0xFFFFFFFF
    assert regs[("vcpu1", "GICR_PROPBASER[63:32]")] == propbaser >> 32
    assert propbaser & ~0xFFF & ((1 << 52) - 1) == layout(vm).prop
    assert regs[("vcpu1", "GICR_ISPENDR0")] == 1 << 20 and regs[("vcpu0", "GICR_ISPENDR0")] == 0
    assert regs[("vcpu0", "GICR_CTLR")] & R.GICR_CTLR_ENABLE_LPIS
    assert (regs[("vcpu0", "ICC_PMR_EL1")], regs[("vcpu1", "ICC_PMR_EL1")]) == (pmr(0), pmr(1))
    assert regs[("vm", "LINE_LEVEL32-63")] == 1 << (LEVEL_SPIS[0] - 32)
    assert regs[("vm", "GITS_CBASER")] == vm.mmio_read(vm.its_base + R.GITS_CBASER, 8)
    assert regs[("vm", "GITS_CBASER")] & ((1 << 52) - 1) & ~0xFFF == layout(vm).cmdq
    assert regs[("vm", "GITS_BASER0")] == vm.mmio_read(vm.its_base + R.GITS_BASER, 8)
    assert regs[("vm", "GITS_CTLR")] & R.GITS_CTLR_ENABLED
    assert regs[("vm", "KVM_ARM_VCPU_TIMER_IRQ_VTIMER")] == VTIMER_PPI
    assert regs[("vm", "KVM_ARM_VCPU_TIMER_IRQ_PTIMER")] == PTIMER_PPI
    assert regs[("vcpu1", "KVM_REG_ARM_TIMER_CVAL")] == GUEST_VCOUNT + VTIMER_DELAY
    assert regs[("vcpu1", "KVM_REG_ARM_TIMER_CTL")] & 1 == 1
    assert regs[("vcpu1", "KVM_REG_ARM_PTIMER_CVAL")] == START + PTIMER_DELAY
    assert regs[("vcpu0", "KVM_REG_ARM64_SVE_VLS")] == vls_bytes((1, 2, 4))
    v0 = vm.vcpus[0]
    assert regs[("vcpu0", "Z0")] == v0.get_one_reg(Z(0)) and len(regs[("vcpu0", "Z0")]) == 256
    assert regs[("vcpu0", "P15")] == v0.get_one_reg(P(15)) and len(regs[("vcpu0", "P15")]) == 32
    assert regs[("vcpu0", "FFR")] == v0.get_one_reg(FFR_()) and len(regs[("vcpu0", "FFR")]) == 32
    assert (regs[("vcpu0", "FPSR")], regs[("vcpu0", "FPCR")]) == (0x0800009F, 0x03C00000)
    assert regs[("vcpu1", "ZCR_EL1")] == 4 - 1                           # LEN: VQ 4 (snapshot_helpers.build)
    assert ("vcpu0", "V0") not in regs              # no V one-regs on an SVE vCPU (kvm-facts §8)
    plain = build(backend, nr_vcpus=1, nr_irqs=64)
    assert regs_of(plain.save())[("vcpu0", "V0")] == plain.vcpus[0].get_one_reg(V(0))
    assert read64(vm, layout(vm).device_table) >> 63 == 1               # SAVE_TABLES wrote DTE 0 (valid)


def test_diff_names_exactly_the_register_the_guest_changed(backend: str) -> None:
    # Between two saves with one guest MMIO write in between, Snapshot.diff
    # reports that register alone, by name and scope, old value first.
    vm = build(backend, nr_vcpus=2, nr_irqs=64, its=True, lpis=20, pending_lpis=2)
    first = vm.save()
    assert vm.save().diff(first) == []
    vm.mmio_write(vm.dist_base + R.GICD_IPRIORITYR + 44, 1, 0x10)
    second = vm.save()
    old = regs_of(first)[("vm", "GICD_IPRIORITYR11")]
    new = (old & ~0xFF) | 0x10
    assert first.diff(second) == [f"vm GICD_IPRIORITYR11: {old:#x} vs {new:#x}"]
    vm.mmio_write(vm.vcpus[1].sgi_base + R.GICR_ICENABLER0, 4, 1 << PTIMER_PPI, 1)
    third = vm.save()
    enabled = regs_of(second)[("vcpu1", "GICR_ISENABLER0")]
    assert second.diff(third) == [f"vcpu1 GICR_ISENABLER0: {enabled:#x} vs {enabled & ~(1 << PTIMER_PPI):#x}"]
    write64(vm, vm.ram_base + 0x3000, 0x1234)
    assert third.diff(vm.save()) == ["ram: differs"]
