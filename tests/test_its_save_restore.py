"""The emulated ITS's save/restore ABI (revision 0), its KVM device API,
SAVE_PENDING_TABLES, the kvm-unit-tests / selftest scenarios, and migration
through named state.

Every expected value is computed from the fact sheets (docs/
its-facts-A.md, its-facts-B.md: KVM's vgic-its.c, vgic-v3.c,
vgic-kvm-device.c, kvm-unit-tests arm/gic.c, selftest vgic_its_save.c), not
read back from the implementation.  Both backends run every test.
"""
from __future__ import annotations

import copy
import errno
import sys
from pathlib import Path

import numpy as np
import pytest

import vgic
from vgic import regmap as R
from vgic import uapi

sys.path.insert(0, str(Path(__file__).resolve().parent))
from its_helpers import (
    LPI_PROP_DEFAULT,
    VALID,
    Guest,
    acknowledge,
    drain,
    int_,
    inv,
    invall,
    its_vm,
    layout,
    mapc,
    mapd,
    mapti,
    pend_bit,
    rd_base,
    read64,
    set_pend_bit,
    set_prop,
    write64,
)

G_ADDR = uapi.KVM_DEV_ARM_VGIC_GRP_ADDR
G_CTRL = uapi.KVM_DEV_ARM_VGIC_GRP_CTRL
G_REGS = uapi.KVM_DEV_ARM_VGIC_GRP_ITS_REGS
G_DIST = uapi.KVM_DEV_ARM_VGIC_GRP_DIST_REGS
G_REDIST = uapi.KVM_DEV_ARM_VGIC_GRP_REDIST_REGS
CTRL_INIT = uapi.KVM_DEV_ARM_VGIC_CTRL_INIT
SAVE = uapi.KVM_DEV_ARM_ITS_SAVE_TABLES
RESTORE = uapi.KVM_DEV_ARM_ITS_RESTORE_TABLES
SAVE_PENDING = uapi.KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES
RESET = uapi.KVM_DEV_ARM_ITS_CTRL_RESET

POISON = 0xDEADBEEFDEADBEEF         # vgic_its_save.c's POISON
PAGE = 0x1_0000
BASER0 = R.GITS_BASER
BASER1 = R.GITS_BASER + 8
INDIRECT = 1 << 62
OUTSIDE = 0x1_0000_0000              # far above the 64 MiB of RAM at 0x4000_0000
IIDR = 0x4B00043B                    # its-facts-A §1.3
TYPER = 0x1EF71                      # its-facts-A §1.3
COLLECTION_NOT_MAPPED = 0xFFFFFFFF


@pytest.fixture(params=["core", "pure"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "core":
        pytest.importorskip("vgic._core.its")
    return request.param


# ------------------------------------------------------------------ helpers
def errno_of(fn, *args) -> int:
    """The errno of the KvmError ``fn(*args)`` raises (it must raise one)."""
    with pytest.raises(vgic.KvmError) as ei:
        fn(*args)
    return ei.value.errno


def ram_end(vm: vgic.VM) -> int:
    return vm.ram_base + vm.memory.size


def fill(vm: vgic.VM, gpa: int, nbytes: int, value: int = POISON) -> None:
    """Fill ``nbytes`` at ``gpa`` with the 64-bit little-endian ``value``."""
    o = gpa - vm.ram_base
    vm.memory[o:o + nbytes] = np.frombuffer(value.to_bytes(8, "little") * (nbytes // 8), dtype=np.uint8)


def unpoison(vm: vgic.VM, gpa: int, nbytes: int) -> None:
    """Zero every word still holding POISON (so a restore reads only what was saved)."""
    w = words(vm, gpa, nbytes // 8)
    w[w == POISON] = 0
    o = gpa - vm.ram_base
    vm.memory[o:o + nbytes] = w.view(np.uint8)


def words(vm: vgic.VM, gpa: int, n: int) -> np.ndarray:
    o = gpa - vm.ram_base
    return vm.memory[o:o + 8 * n].copy().view("<u8")


def expect_words(vm: vgic.VM, gpa: int, n: int, entries: dict[int, int], background: int = POISON) -> None:
    """The ``n`` words at ``gpa`` are ``background`` except ``entries`` (index -> value)."""
    got = words(vm, gpa, n)
    exp = np.full(n, background, dtype=np.uint64)
    for i, v in entries.items():
        exp[i] = v
    bad = np.nonzero(got != exp)[0]
    assert bad.size == 0, {int(i): (hex(int(got[i])), hex(int(exp[i]))) for i in bad[:8]}


def dte(itt: int, bits: int, nxt: int = 0) -> int:
    """its-facts-B §1.2: V | next<<49 | ITT_addr>>8 at bit 5 | Size (bits - 1)."""
    return VALID | (nxt << 49) | ((itt >> 8) << 5) | ((bits - 1) & 0x1F)


def ite(lpi: int, icid: int, nxt: int = 0) -> int:
    """its-facts-B §1.2: next<<48 | pINTID<<16 | ICID."""
    return (nxt << 48) | (lpi << 16) | icid


def cte(icid: int, target: int) -> int:
    """its-facts-B §1.2: V | target<<16 | ICID."""
    return VALID | (target << 16) | icid


def its_reg(vm: vgic.VM, off: int) -> int:
    return vm.its.get_device_attr(G_REGS, off)


def set_its_reg(vm: vgic.VM, off: int, value: int) -> None:
    vm.its.set_device_attr(G_REGS, off, value)


def guest_its_write(vm: vgic.VM, off: int, value: int, size: int = 8) -> None:
    vm.mmio_write(vm.its_base + off, size, value)


def devices(vm: vgic.VM) -> dict[int, tuple[int, int, dict[int, tuple[int, int, bool]]]]:
    """{DeviceID: (ITT_addr, bits, {EventID: (pINTID, ICID, has collection)})} from the named state."""
    out = {}
    for d in vm.its.state()["devices"]:
        t = d["ites"]
        out[d["DeviceID"]] = (d["ITT_addr"], d["num_eventid_bits"],
                              {e: (p, i, c) for e, p, i, c in zip(t["EventID"], t["pINTID"], t["ICID"],
                                                                    t["collection"])})
    return out


def collections(vm: vgic.VM) -> list[tuple[int, int]]:
    return [(c["ICID"], c["target"]) for c in vm.its.state()["collections"]]


def lpis(vm: vgic.VM) -> dict[int, dict[str, int]]:
    """{INTID: {field: value}} of the VM's LPIs (vgic_v3 named state, without ``seq``)."""
    lp = vm.state()["vgic_v3"]["lpi"]
    keys = [k for k in lp if k not in ("intid", "seq")]
    return {intid: {k: lp[k][n] for k in keys} for n, intid in enumerate(lp["intid"])}


def acks(vm: vgic.VM, limit: int = 300) -> list[list[int]]:
    """What every vCPU takes until nothing is left (kvm-unit-tests check_acked)."""
    return [drain(vm, v, limit) for v in range(vm.nr_vcpus)]


def attach(vm: vgic.VM, cwriter: int) -> Guest:
    """A Guest driving an already programmed ITS (after a migration)."""
    g = Guest.__new__(Guest)
    g.vm, g.lay, g.its, g.cwriter = vm, layout(vm), vm.its_base, cwriter
    return g


def setup1(vm: vgic.VM) -> Guest:
    """kvm-unit-tests its_setup1 (its-facts-B §5.1): devices 2 and 7 (8 EventID
    bits), collection 3 -> PE3 then 2 -> PE2, (2, 20) -> 8195 col 3,
    (7, 255) -> 8196 col 2."""
    g = Guest(vm)
    set_prop(vm, g.lay, 8195)
    set_prop(vm, g.lay, 8196)
    g.send(mapd(2, 8, g.itt(0)), mapd(7, 8, g.itt(1)), mapc(3, 3), mapc(2, 2), invall(2), invall(3),
           mapti(2, 20, 8195, 3), mapti(7, 255, 8196, 2))
    return g


def blank(backend: str, **kw: object) -> tuple[vgic.VM, Guest]:
    """A VM whose redistributors and ITS registers are programmed (BASER0,
    BASER1 and CBASER valid, one 64 KiB page each) but whose ITS is disabled
    and empty: tables written by hand are then restored."""
    vm = its_vm(backend, **kw)
    return vm, Guest(vm, enable_its=False)


def redist_regs(vm: vgic.VM, v: int) -> list[tuple[int, int]]:
    a = uapi.mpidr_to_attr(vm.vcpus[v].mpidr)
    return [(a | off, vm.get_device_attr(G_REDIST, a | off))
            for off in (R.GICR_PROPBASER, R.GICR_PROPBASER + 4, R.GICR_PENDBASER, R.GICR_PENDBASER + 4,
                        R.GICR_CTLR)]


ITS_REG_ORDER = [R.GITS_IIDR, R.GITS_CBASER, R.GITS_CREADR, R.GITS_CWRITER] + [R.GITS_BASER + 8 * i for i in range(8)]


def migrate(src: vgic.VM, backend: str | None = None, save_pending: bool = True) -> vgic.VM:
    """QEMU's migration of a stopped VM in the documented order (its-facts-B
    §4): source SAVE_PENDING_TABLES and ITS SAVE_TABLES, then the
    destination gets a) RAM, b) the redistributors (GICD_CTLR, PROPBASER,
    PENDBASER, GICR_CTLR through the device API), d) the ITS registers but
    GITS_CTLR (IIDR, CBASER, CREADR, CWRITER, BASER0..7), RESTORE_TABLES,
    GITS_CTLR last."""
    assert not any(v.running for v in src.vcpus)
    if save_pending:
        src.set_device_attr(G_CTRL, SAVE_PENDING, 0)
    src.its.save_tables()
    regs = {off: its_reg(src, off) for off in ITS_REG_ORDER + [R.GITS_CTLR]}
    dst = its_vm(backend or src.backend, nr_vcpus=src.nr_vcpus)
    dst.memory[:] = src.memory
    dst.set_device_attr(G_DIST, R.GICD_CTLR, src.get_device_attr(G_DIST, R.GICD_CTLR))
    for v in range(src.nr_vcpus):
        for attr, value in redist_regs(src, v):
            dst.set_device_attr(G_REDIST, attr, value)
    for off in ITS_REG_ORDER:
        set_its_reg(dst, off, regs[off])
    dst.its.restore_tables()
    set_its_reg(dst, R.GITS_CTLR, regs[R.GITS_CTLR])
    return dst


def reset_and_restore(vm: vgic.VM) -> None:
    """vgic_its_save.c reset_and_restore_tables: read BASER0..7, CTRL_RESET,
    write them back, RESTORE_TABLES (each must succeed)."""
    basers = [its_reg(vm, R.GITS_BASER + 8 * i) for i in range(8)]
    vm.its.reset()
    for i, b in enumerate(basers):
        set_its_reg(vm, R.GITS_BASER + 8 * i, b)
    vm.its.restore_tables()


def set_baser(vm: vgic.VM, idx: int, value: int, enable_after: bool = False) -> None:
    """A guest rewriting BASER<idx>: disable the ITS, write, optionally re-enable."""
    guest_its_write(vm, R.GITS_CTLR, 0, 4)
    guest_its_write(vm, R.GITS_BASER + 8 * idx, value)
    if enable_after:
        guest_its_write(vm, R.GITS_CTLR, R.GITS_CTLR_ENABLED, 4)


# =================================================================== 1. SAVE_TABLES
def test_setup1_programs_what_kvm_unit_tests_expects(backend):
    """its-facts-B §5.1: its_setup1 leaves devices 2 and 7 with 8 EventID bits,
    collections [3 -> 3, 2 -> 2] in creation order and two ITEs; the ITS is
    enabled and idle (GITS_CTLR 0x80000001, its-facts-A §1.3)."""
    vm = its_vm(backend)
    g = setup1(vm)
    assert devices(vm) == {2: (g.itt(0), 8, {20: (8195, 3, True)}), 7: (g.itt(1), 8, {255: (8196, 2, True)})}
    assert collections(vm) == [(3, 3), (2, 2)]
    assert its_reg(vm, R.GITS_CTLR) == 0x80000001


def test_save_its_migration_bytes_exact(backend):
    """its-facts-B §5.4 / §1.5 (vgic_its_save_tables_v0): after its_setup1,
    DTE(2) = 0x800A000000000007 | A2>>3, DTE(7) = 0x8000000000000007 | A7>>3,
    ITE(2,20) = 0x20030003, ITE(7,255) = 0x20040002, CTEs 0x8000000000030003,
    0x8000000000020002 then a zero terminator; every other byte of the
    device table, collection table and both ITTs is left untouched."""
    vm = its_vm(backend)
    g = setup1(vm)
    D, C, A2, A7 = g.lay.device_table, g.lay.collection_table, g.itt(0), g.itt(1)
    for base in (D, C, A2, A7):
        fill(vm, base, PAGE)
    vm.its.save_tables()
    expect_words(vm, D, 8192, {2: 0x800A000000000007 | (A2 >> 3), 7: 0x8000000000000007 | (A7 >> 3)})
    expect_words(vm, A2, 8192, {20: 0x0000000020030003})
    expect_words(vm, A7, 8192, {255: 0x0000000020040002})
    expect_words(vm, C, 8192, {0: 0x8000000000030003, 1: 0x8000000000020002, 2: 0})


def test_save_changes_no_state(backend):
    """its-facts-B §1.5: SAVE_TABLES only writes guest memory; the ITS and
    LPI state (vm.state()) is the same afterwards, and saving twice writes
    the same bytes."""
    vm = its_vm(backend)
    g = setup1(vm)
    g.send(int_(2, 20))
    before = vm.state()
    vm.its.save_tables()
    first = vm.memory.copy()
    assert vm.state() == before
    vm.its.save_tables()
    assert np.array_equal(vm.memory, first)


def test_save_dte_next_capped_and_restored_by_stepping(backend):
    """its-facts-B §1.3: a DTE's next is the DeviceID delta to the next saved
    device, capped at VITS_DTE_MAX_DEVID_OFFSET = 16383, 0 for the last;
    §2.2/§1.3: restore lands on the capped slot (invalid) and steps one slot
    at a time to the real next device.  Flat device table of 3 pages (24576
    slots, BASER0.Size = 2)."""
    vm = its_vm(backend)
    g = Guest(vm, enable_its=False)
    D = g.lay.device_table
    guest_its_write(vm, BASER0, VALID | D | 2)
    guest_its_write(vm, R.GITS_CTLR, R.GITS_CTLR_ENABLED, 4)
    g.send(mapd(1, 4, g.itt(0)), mapd(5, 16, g.itt(1)), mapd(20000, 1, g.itt(20)))
    assert sorted(devices(vm)) == [1, 5, 20000]
    fill(vm, D, 3 * PAGE, 0)
    vm.its.save_tables()
    expect_words(vm, D, 3 * 8192, {1: VALID | (4 << 49) | (g.itt(0) >> 3) | 3,
                                   5: VALID | (16383 << 49) | (g.itt(1) >> 3) | 15,
                                   20000: VALID | (g.itt(20) >> 3) | 0}, background=0)
    saved = vm.its.state()
    reset_and_restore(vm)
    assert vm.its.state()["devices"] == saved["devices"]


def test_save_collection_table_creation_order(backend):
    """its-facts-B §1.5 (vgic_its_save_collection_table): CTEs are packed from
    index 0 in list order -- creation order, not ICID order: MAPC, MAPTI's
    auto-created unmapped collection (target 0xFFFFFFFF), a re-MAPC keeps its
    place with the new target, MAPC V=0 then V=1 moves it to the end -- then
    one zero terminator; nothing after it is written."""
    vm = its_vm(backend)
    g = Guest(vm)
    C = g.lay.collection_table
    g.send(mapc(5, 0), mapd(1, 4, g.itt(0)), mapti(1, 0, 8192, 9), mapc(1, 1), mapc(7, 2),
           mapc(5, 3), mapc(1, 0, valid=False), mapc(1, 2))
    assert collections(vm) == [(5, 3), (9, COLLECTION_NOT_MAPPED), (7, 2), (1, 2)]
    fill(vm, C, PAGE)
    vm.its.save_tables()
    expect_words(vm, C, 8192, {0: 0x8000000000030005, 1: 0x8000FFFFFFFF0009, 2: 0x8000000000020007,
                               3: 0x8000000000020001, 4: 0})


def test_save_full_collection_table_has_no_terminator(backend):
    """its-facts-B §1.5: when the CTEs fill the table exactly (8192
    collections in one 64 KiB page) no terminator is written -- the word
    after the table stays untouched; §2.3: restore of a full table ends at
    the table's end and succeeds with all 8192 collections in order."""
    vm = its_vm(backend)
    g = Guest(vm)
    C = g.lay.collection_table
    order = [(i * 37) % 8192 for i in range(8192)]          # a permutation, not ICID order
    for k in range(0, 8192, 1024):
        g.send(*[mapc(icid, icid % 4) for icid in order[k:k + 1024]])
    fill(vm, C, PAGE + 8)
    vm.its.save_tables()
    got = words(vm, C, 8193)
    assert [int(x) for x in got[:8192]] == [cte(icid, icid % 4) for icid in order]
    assert int(got[8192]) == POISON
    reset_and_restore(vm)
    assert collections(vm) == [(icid, icid % 4) for icid in order]


def test_save_ite_of_freed_collection_is_zero_and_skipped(backend):
    """its-facts-B §1.5 b / §1.3 ([ITS-new] vgic_its_save_ite,
    compute_next_eventid_offset): an ITE whose collection was freed by MAPC
    V=0 is written as 0 and the previous ITE's next skips it; a trailing one
    makes its predecessor the last (next 0).  After restore the slot is free:
    a new MAPTI there succeeds."""
    vm = its_vm(backend)
    g = Guest(vm)
    A = g.itt(0)
    g.send(mapc(1, 1), mapc(2, 2), mapd(3, 8, A),
           mapti(3, 1, 8200, 1), mapti(3, 5, 8201, 2), mapti(3, 9, 8202, 1), mapti(3, 12, 8203, 2),
           mapc(2, 0, valid=False))
    assert devices(vm)[3][2] == {1: (8200, 1, True), 5: (8201, 2, False), 9: (8202, 1, True),
                                 12: (8203, 2, False)}
    fill(vm, A, 256 * 8)
    vm.its.save_tables()
    expect_words(vm, A, 256, {1: 0x0008000020080001, 5: 0, 9: 0x00000000200A0001, 12: 0})
    unpoison(vm, A, 256 * 8)
    reset_and_restore(vm)
    assert devices(vm)[3][2] == {1: (8200, 1, True), 9: (8202, 1, True)}
    assert collections(vm) == [(1, 1)]
    guest_its_write(vm, R.GITS_CBASER, VALID | g.lay.cmdq | 15)
    guest_its_write(vm, R.GITS_CTLR, R.GITS_CTLR_ENABLED, 4)
    g.cwriter = 0
    g.send(mapti(3, 5, 8210, 1))
    assert devices(vm)[3][2][5] == (8210, 1, True)


def _two_level(vm: vgic.VM, g: Guest, l2s: list[int]) -> int:
    """Make the device table indirect (its-facts-B §1.4.3): BASER0 | Indirect,
    L1[i] = Valid | l2s[i] (each L2 zeroed).  Returns the L1 address."""
    L1 = g.lay.device_table
    set_baser(vm, 0, VALID | INDIRECT | L1, enable_after=True)
    for i, l2 in enumerate(l2s):
        fill(vm, l2, PAGE, 0)
        write64(vm, L1 + 8 * i, VALID | l2)
    return L1


def test_save_skips_unreachable_device_and_caps_next(backend):
    """its-facts-B §1.5 a / §1.3 ([ITS-new]): with a two-level device table, a
    device whose L1 entry was cleared after MAPD is skipped (nothing written
    for it, its ITT neither) and the previous DTE's next points at the next
    *reachable* device, min(16384, 16383) = 16383 here; §2.4: restore crosses
    the end of L2[0] and continues with the next valid L1 entry."""
    vm = its_vm(backend)
    g = Guest(vm)
    r = vm.ram_base
    l2 = [r + 0xA0_0000, r + 0xB0_0000, r + 0xC0_0000]
    L1 = _two_level(vm, g, l2)
    A, B, Cc = g.itt(0), g.itt(1), g.itt(2)
    g.send(mapc(0, 0), mapd(0, 4, A), mapd(8192, 4, B), mapd(16384, 4, Cc),
           mapti(0, 1, 8192, 0), mapti(8192, 1, 8193, 0), mapti(16384, 1, 8194, 0))
    assert sorted(devices(vm)) == [0, 8192, 16384]
    write64(vm, L1 + 8, 0)
    for a in l2 + [A, B, Cc]:
        fill(vm, a, PAGE)
    vm.its.save_tables()
    expect_words(vm, l2[0], 8192, {0: VALID | (16383 << 49) | (A >> 3) | 3})
    expect_words(vm, l2[1], 8192, {})
    expect_words(vm, l2[2], 8192, {0: VALID | (Cc >> 3) | 3})
    expect_words(vm, B, 16, {})
    expect_words(vm, A, 16, {1: ite(8192, 0)})
    for a in l2 + [A, Cc]:
        unpoison(vm, a, PAGE)
    reset_and_restore(vm)
    assert sorted(devices(vm)) == [0, 16384]


def test_save_reads_l1_entry_at_save_time(backend):
    """its-facts-B §1.4.3: the L1 entry is read from guest memory when the
    table is saved, so a guest that re-points L1[1] after MAPD gets device
    8192's DTE written into the new L2 table, not the old one."""
    vm = its_vm(backend)
    g = Guest(vm)
    r = vm.ram_base
    old, new = r + 0xA0_0000, r + 0xB0_0000
    L1 = _two_level(vm, g, [r + 0x90_0000, old])
    g.send(mapd(8192, 2, g.itt(0)))
    fill(vm, old, PAGE)
    fill(vm, new, PAGE)
    write64(vm, L1 + 8, VALID | new)
    vm.its.save_tables()
    expect_words(vm, old, 8192, {})
    expect_words(vm, new, 8192, {0: VALID | (g.itt(0) >> 3) | 1})


def test_save_with_tables_not_valid_writes_nothing(backend):
    """its-facts-B §1.5: BASER0/BASER1 not Valid -> nothing is written for
    that table (not even the collection terminator); with Valid set the
    empty collection list still writes a zero at index 0.  After CTRL_RESET
    (Valid cleared, everything freed) a save writes nothing at all."""
    vm = its_vm(backend)
    g = Guest(vm, enable_its=False)
    C = g.lay.collection_table
    fill(vm, C, PAGE)
    vm.its.save_tables()
    expect_words(vm, C, 8192, {0: 0})
    fill(vm, C, PAGE)
    guest_its_write(vm, BASER1, C)                        # Valid clear, address kept
    vm.its.save_tables()
    expect_words(vm, C, 8192, {})

    vm2 = its_vm(backend)
    g2 = setup1(vm2)
    vm2.its.reset()
    for base in (g2.lay.device_table, g2.lay.collection_table, g2.itt(0), g2.itt(1)):
        fill(vm2, base, PAGE)
    vm2.its.save_tables()
    for base in (g2.lay.device_table, g2.lay.collection_table, g2.itt(0), g2.itt(1)):
        expect_words(vm2, base, 8192, {})


def test_save_collection_table_outside_ram_efault(backend):
    """its-facts-B §1.5: a guest write outside the memslots fails the save
    with -EFAULT (KvmError EFAULT), after the device tables were written
    (devices first, no rollback)."""
    vm = its_vm(backend)
    g = setup1(vm)
    D = g.lay.device_table
    fill(vm, D, PAGE)
    set_baser(vm, 1, VALID | OUTSIDE)
    assert errno_of(vm.its.save_tables) == errno.EFAULT
    expect_words(vm, D, 8192, {2: 0x800A000000000007 | (g.itt(0) >> 3), 7: 0x8000000000000007 | (g.itt(1) >> 3)})


def test_save_and_restore_ebusy_while_a_vcpu_runs(backend):
    """its-facts-B §1.5 / §2.1 (vgic_its_ctrl, kvm_trylock_all_vcpus): SAVE,
    RESTORE and RESET fail with -EBUSY while a vCPU is inside KVM_RUN, before
    anything is written or freed."""
    vm = its_vm(backend)
    g = setup1(vm)
    fill(vm, g.lay.collection_table, PAGE)
    before = vm.its.state()
    vm.vcpus[0].load()
    vm.vcpus[0].enter()
    for attr in (SAVE, RESTORE, RESET):
        assert errno_of(vm.its.set_device_attr, G_CTRL, attr, 0) == errno.EBUSY
    vm.vcpus[0].exit()
    expect_words(vm, g.lay.collection_table, 8192, {})
    assert vm.its.state() == before


# ================================================================ 2. RESTORE_TABLES
def test_restore_into_fresh_vm_reproduces_translations(backend):
    """its-facts-B §2 and §5.4 (its-migration): a destination built in the
    documented order (§4) has vm.state()["its"] equal to the source's and
    the same LPIs; INT (2, 20) reaches PE3 as 8195 and INT (7, 255) PE2 as
    8196, once each, and nothing else is delivered."""
    vm = its_vm(backend)
    g = setup1(vm)
    dst = migrate(vm)
    assert dst.state()["its"] == vm.state()["its"]
    assert lpis(dst) == lpis(vm)
    g2 = attach(dst, g.cwriter)
    g2.send(int_(2, 20))
    assert acks(dst) == [[], [], [], [8195]]
    g2.send(int_(7, 255))
    assert acks(dst) == [[], [], [8196], []]


def test_restore_pending_lpi_survives_and_bit_is_consumed(backend):
    """its-facts-B §2.7 / §3.8: SAVE_PENDING_TABLES sets the bit of a pending
    LPI in its target's pending table; RESTORE_TABLES makes it pending again
    and clears ("consumes") the bit in guest memory -- that bit only, by
    read-modify-write of its byte; it is delivered once."""
    vm = its_vm(backend)
    g = setup1(vm)
    g.send(int_(2, 20))
    set_pend_bit(vm, g.lay, 3, 8197)                      # no LPI: never touched
    assert pend_bit(vm, g.lay, 3, 8195) == 0
    dst = migrate(vm)
    assert pend_bit(vm, g.lay, 3, 8195) == 1
    assert pend_bit(dst, g.lay, 3, 8195) == 0
    assert pend_bit(dst, g.lay, 3, 8197) == 1
    assert dst.irq(8195).pending_latch and dst.irq(8195).target_vcpu == 3
    assert not dst.irq(8196).pending_latch
    assert acks(dst) == [[], [], [], [8195]]


ERROR_CASES = {
    # name: (collection table entries, bad device's DTE (None: no device), its ITT entries, errno)
    "cte_target_not_a_vcpu": ([cte(1, 0), cte(2, 4)], None, {}, errno.EINVAL),
    "cte_icid_beyond_table": ([cte(1, 0), cte(8192, 0)], None, {}, errno.EINVAL),
    "cte_duplicate_icid": ([cte(1, 0), cte(1, 1)], None, {}, errno.EEXIST),
    "dte_size_above_15": ([cte(1, 1)], lambda a: VALID | (a >> 3) | 16, {}, errno.EINVAL),
    "ite_pintid_below_8192": ([cte(1, 1)], lambda a: dte(a, 8), {0: ite(8191, 1)}, errno.EINVAL),
    "ite_event_plus_next_beyond_itt": ([cte(1, 1)], lambda a: dte(a, 2), {2: ite(8192, 1, nxt=2)}, errno.EINVAL),
    "ite_unknown_icid": ([cte(1, 1)], lambda a: dte(a, 8), {0: ite(8192, 5)}, errno.EINVAL),
    "itt_outside_ram": ([cte(1, 1)], lambda a: dte(OUTSIDE, 8), {}, errno.EFAULT),
    "cte_target_checked_before_duplicate": ([cte(1, 0), cte(1, 7)], None, {}, errno.EINVAL),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_restore_errors_and_all_or_nothing(backend, case):
    """its-facts-B §2.3 (vgic_its_restore_cte: target not a vCPU -EINVAL,
    duplicate ICID -EEXIST, ICID beyond the table -EINVAL), §2.5 (DTE Size >
    15 -EINVAL), §2.6 (pINTID < 8192, EventID + next >= 2^bits, unknown
    ICID: -EINVAL), §2.2 (unreadable ITT -EFAULT); on any error the ITS,
    restored into empty, is left empty - no device, no collection, no LPI
    the restore had made (§2.1; vgic undoes the call whole, KVM frees
    everything: the same here).  Good entries come before the bad one: a first
    collection, and device 0 (EventID 3 -> LPI 8300) before bad device 5."""
    vm, g = blank(backend)
    C, D, A, B = g.lay.collection_table, g.lay.device_table, g.itt(0), g.itt(1)
    ctes, bad_dte, itt, err = ERROR_CASES[case]
    for i, v in enumerate(ctes):
        write64(vm, C + 8 * i, v)
    if bad_dte is not None:
        write64(vm, D, dte(B, 4, nxt=5))
        write64(vm, B + 3 * 8, ite(8300, 1))
        write64(vm, D + 5 * 8, bad_dte(A))
        for event, v in itt.items():
            write64(vm, A + 8 * event, v)
    assert errno_of(vm.its.restore_tables) == err
    assert devices(vm) == {}
    assert collections(vm) == []
    assert lpis(vm) == {}


def test_restore_good_tables_for_error_cases_succeed(backend):
    """Control for the error cases (its-facts-B §2.3, §2.5, §2.6): the same
    layout with legal values -- target 0xFFFFFFFF (unmapped), ICID 8191 (last
    slot), Size 15 (16 bits), pINTID 8192, EventID + next = 2^bits - 1 --
    restores; CTE target bits [51:48] are ignored (only [47:16] is read)."""
    vm, g = blank(backend)
    C, D, A = g.lay.collection_table, g.lay.device_table, g.itt(0)
    write64(vm, C, cte(1, COLLECTION_NOT_MAPPED))
    write64(vm, C + 8, cte(8191, 0))
    write64(vm, C + 16, VALID | (0xF << 48) | (2 << 16) | 2)
    write64(vm, D, dte(A, 2, nxt=3))
    write64(vm, A + 8, ite(8192, 8191, nxt=2))
    write64(vm, A + 24, ite(8193, 2))
    write64(vm, D + 24, dte(g.itt(1), 16))
    vm.its.restore_tables()
    assert collections(vm) == [(1, COLLECTION_NOT_MAPPED), (8191, 0), (2, 2)]
    assert devices(vm) == {0: (A, 2, {1: (8192, 8191, True), 3: (8193, 2, True)}), 3: (g.itt(1), 16, {})}
    assert lpis(vm)[8192]["target_vcpu"] == 0 and lpis(vm)[8193]["target_vcpu"] == 2


def test_restore_error_changes_nothing(backend):
    """The project's rule for a rejected restore (the issue's "all or
    nothing"), where KVM differs (its-facts-B §2.1: KVM frees the whole
    device and collection lists, those made before the call too, and leaves
    a consumed pending bit cleared): after a failing RESTORE the devices,
    collections, LPIs and guest memory are exactly as before - the object
    made before the call stays, the device restored ahead of the error and
    its new LPI are gone, and the pending bit its vgic_add_lpi consumed (§2.7)
    is set again."""
    vm, g = blank(backend)
    C, D, A, B = g.lay.collection_table, g.lay.device_table, g.itt(0), g.itt(1)
    guest_its_write(vm, R.GITS_CTLR, R.GITS_CTLR_ENABLED, 4)
    g.send(mapc(7, 0), mapd(30, 2, g.itt(30)), mapti(30, 0, 8300, 7))
    guest_its_write(vm, R.GITS_CTLR, 0, 4)
    write64(vm, C, cte(1, 1))
    write64(vm, D, dte(A, 8, nxt=5))
    write64(vm, A + 3 * 8, ite(8216, 1))               # config byte 0: a disabled LPI
    write64(vm, D + 5 * 8, dte(B, 8))
    write64(vm, B, ite(8217, 9))                       # collection 9 does not exist
    set_pend_bit(vm, g.lay, 1, 8216)
    before, memory = vm.state(), vm.memory.copy()
    assert collections(vm) == [(7, 0)] and sorted(devices(vm)) == [30] and sorted(lpis(vm)) == [8300]
    assert errno_of(vm.its.restore_tables) == errno.EINVAL
    assert vm.state() == before
    assert (vm.memory == memory).all() and pend_bit(vm, g.lay, 1, 8216) == 1


def test_restore_adds_to_existing_lists(backend):
    """its-facts-B §2.1: RESTORE does not clear the lists first: a collection
    and device made before it stay next to the restored ones, the restored
    collection appended after the existing one."""
    vm, g = blank(backend)
    C, D, A = g.lay.collection_table, g.lay.device_table, g.itt(0)
    guest_its_write(vm, R.GITS_CTLR, R.GITS_CTLR_ENABLED, 4)
    g.send(mapc(7, 0), mapd(30, 2, g.itt(30)), mapti(30, 0, 8300, 7))
    guest_its_write(vm, R.GITS_CTLR, 0, 4)
    write64(vm, C, cte(1, 1))
    write64(vm, D, dte(A, 8))
    write64(vm, A, ite(8200, 1))
    vm.its.restore_tables()
    assert collections(vm) == [(7, 0), (1, 1)]
    assert devices(vm) == {0: (A, 8, {0: (8200, 1, True)}), 30: (g.itt(30), 2, {0: (8300, 7, True)})}


def test_second_restore_eexist_changes_nothing(backend):
    """its-facts-B §2.1 / §2.3: RESTORE is not idempotent: a second one hits
    -EEXIST on the first CTE (its ICID exists).  KVM then frees the whole
    collection list; vgic, whose rejected restore changes nothing, keeps
    the ITS as the first restore left it."""
    vm = its_vm(backend)
    setup1(vm)
    vm.its.save_tables()
    reset_and_restore(vm)
    assert collections(vm) == [(3, 3), (2, 2)]
    before = vm.state()
    assert errno_of(vm.its.restore_tables) == errno.EEXIST
    assert vm.state() == before


@pytest.mark.parametrize("case", ["next0_ends_everything", "next_crossing_l2_does_not_carry", "aliased_l2"])
def test_restore_two_level_device_table(backend, case):
    """its-facts-B §2.4 (handle_l1_dte): a DTE with next = 0 inside an L2
    table ends the whole device-table restore (later L1 entries unread); a
    next that crosses the end of an L2 table ends that L2 only and the next
    valid L1 entry is scanned from its first slot (no carry); two L1 entries
    naming one L2 table restore its DTEs under both DeviceID ranges, the
    shared ITT's LPI then held by two ITEs (§2.8)."""
    vm, g = blank(backend)
    r = vm.ram_base
    L1, L2a, L2b = g.lay.device_table, r + 0xA0_0000, r + 0xB0_0000
    A, B = g.itt(0), g.itt(1)
    guest_its_write(vm, BASER0, VALID | INDIRECT | L1)
    write64(vm, g.lay.collection_table, cte(1, 1))
    write64(vm, A, ite(8192, 1))
    write64(vm, B, ite(8193, 1))
    write64(vm, L1, VALID | L2a)
    write64(vm, L1 + 8, VALID | L2b)
    if case == "next0_ends_everything":
        write64(vm, L2a + 3 * 8, dte(A, 8))
        write64(vm, L2b, dte(B, 8))
        expect = {3: (A, 8, {0: (8192, 1, True)})}
    elif case == "next_crossing_l2_does_not_carry":
        write64(vm, L2a + 3 * 8, dte(A, 8, nxt=8190))          # 3 + 8190 = 8193 if carried
        write64(vm, L2b, dte(B, 8))
        write64(vm, L2b + 8, dte(A, 4))
        expect = {3: (A, 8, {0: (8192, 1, True)}), 8192: (B, 8, {0: (8193, 1, True)})}
    else:
        write64(vm, L1 + 8, VALID | L2a)
        write64(vm, L2a, dte(A, 8, nxt=8191))
        expect = {0: (A, 8, {0: (8192, 1, True)}), 8192: (A, 8, {0: (8192, 1, True)})}
    vm.its.restore_tables()
    assert devices(vm) == expect
    if case == "aliased_l2":
        assert lpis(vm)[8192]["ite_count"] == 2


def test_restore_dte_devid_above_0xffff_einval(backend):
    """its-facts-B §2.5 step 4 / §1.4: L1[7] and L1[8] name one L2 table whose
    last slot holds a DTE: under L1[7] it is device 65535 (restored), under
    L1[8] DeviceID 73727 > 0xFFFF fails vgic_its_check_id -> -EINVAL, and the
    device restored before it is freed (§2.1)."""
    vm, g = blank(backend)
    r = vm.ram_base
    L1, L2 = g.lay.device_table, r + 0xA0_0000
    guest_its_write(vm, BASER0, VALID | INDIRECT | L1)
    write64(vm, L1 + 8 * 7, VALID | L2)
    write64(vm, L1 + 8 * 8, VALID | L2)
    write64(vm, L2 + 8 * 8191, dte(g.itt(0), 2, nxt=1))     # devid 65535 (fine), then 65536 + 8191
    assert errno_of(vm.its.restore_tables) == errno.EINVAL
    assert devices(vm) == {}


@pytest.mark.parametrize("case", ["collection_table", "device_table", "l2_table", "table_runs_off_ram",
                                  "itt_straddles_ram_end"])
def test_restore_tables_outside_ram_efault(backend, case):
    """its-facts-B §2.2-§2.4: any table read outside guest RAM fails the
    restore with -EFAULT: the collection table, the device table, an L2
    table named by a valid L1 entry (no address check), a 256-page device
    table whose DTE next steps past RAM's end, an ITT running past RAM's
    end.  Nothing is left restored."""
    vm, g = blank(backend)
    end = ram_end(vm)
    write64(vm, g.lay.collection_table, cte(1, 1))
    if case == "collection_table":
        guest_its_write(vm, BASER1, VALID | OUTSIDE)
    elif case == "device_table":
        guest_its_write(vm, BASER0, VALID | OUTSIDE)
    elif case == "l2_table":
        guest_its_write(vm, BASER0, VALID | INDIRECT | g.lay.device_table)
        write64(vm, g.lay.device_table, VALID | OUTSIDE)
    elif case == "table_runs_off_ram":
        D = end - PAGE
        guest_its_write(vm, BASER0, VALID | D | 0xFF)
        write64(vm, D, dte(g.itt(0), 2, nxt=8192))
    else:
        write64(vm, g.lay.device_table, dte(end - 256, 8))     # 256 slots, 32 of them in RAM
        fill(vm, end - 256, 256, 0)
    assert errno_of(vm.its.restore_tables) == errno.EFAULT
    assert devices(vm) == {} and collections(vm) == []


def test_restore_itt_straddling_ram_end_restores_what_it_reaches(backend):
    """its-facts-B §2.2 (scan_its_table reads entry by entry): an ITT whose
    256 slots run past RAM's end restores when its chain ends inside RAM -
    only the entries walked are read.  (The core walks an ITT wholly in RAM
    in place and any other ITT entry by entry; this is the second path.)"""
    vm, g = blank(backend)
    end = ram_end(vm)
    write64(vm, g.lay.collection_table, cte(1, 1))
    write64(vm, g.lay.device_table, dte(end - 256, 8))      # 256 slots, 32 of them in RAM
    fill(vm, end - 256, 256, 0)
    write64(vm, end - 256, ite(8192, 1, nxt=31))            # event 0, then event 31: the last slot in RAM
    write64(vm, end - 8, ite(8193, 1))
    assert vm.its.restore_tables() is None
    assert devices(vm) == {0: (end - 256, 8, {0: (8192, 1, True), 31: (8193, 1, True)})}


@pytest.mark.parametrize("case", ["dte_next_past_end", "dte_next_to_last_slot", "ite_next_to_last_event",
                                  "full_16bit_itt_of_zeros", "cte_after_invalid_ignored", "l1_junk_bits",
                                  "dte_size_31"])
def test_restore_hostile_tables_terminate(backend, case):
    """its-facts-B §2.2 (scan_its_table): walks only move forward and end at
    the table's end -- a DTE next past the end just ends the table
    (success); a next landing exactly on the last slot reads it; an ITE next
    to the last EventID of a 16-bit ITT is legal; a 16-bit ITT of zeros is
    walked to its end; CTEs after the first invalid one are ignored (§2.3);
    L1 bits other than 63 and [51:16] are ignored (§1.2); DTE Size 31 is
    -EINVAL (§2.5, the May 2026 fix).  Each ends at once."""
    vm, g = blank(backend)
    C, D, A = g.lay.collection_table, g.lay.device_table, vm.ram_base + 0x100_0000
    write64(vm, C, cte(1, 1))
    expect_err = None
    if case == "dte_next_past_end":
        write64(vm, D, dte(A, 4, nxt=16383))
        expect = {0: (A, 4, {})}
    elif case == "dte_next_to_last_slot":
        write64(vm, D, dte(A, 4, nxt=8191))
        write64(vm, D + 8 * 8191, dte(A, 4, nxt=16383))
        write64(vm, A + 8, ite(8192, 1))
        expect = {0: (A, 4, {1: (8192, 1, True)}), 8191: (A, 4, {1: (8192, 1, True)})}
    elif case == "ite_next_to_last_event":
        write64(vm, D, dte(A, 16))
        write64(vm, A, ite(8192, 1, nxt=65535))
        write64(vm, A + 8 * 65535, ite(8193, 1))
        expect = {0: (A, 16, {0: (8192, 1, True), 65535: (8193, 1, True)})}
    elif case == "full_16bit_itt_of_zeros":
        write64(vm, D, dte(A, 16, nxt=1))
        write64(vm, D + 8, dte(A, 1))
        expect = {0: (A, 16, {}), 1: (A, 1, {})}
    elif case == "cte_after_invalid_ignored":
        write64(vm, C + 16, cte(2, 2))
        expect = {}
    elif case == "l1_junk_bits":
        L2 = vm.ram_base + 0xA0_0000
        guest_its_write(vm, BASER0, VALID | INDIRECT | D)
        write64(vm, D + 8, VALID | (0x7FF << 52) | L2 | 0xFFFF)
        write64(vm, L2 + 16, dte(A, 2))
        expect = {8194: (A, 2, {})}
    else:
        write64(vm, D, VALID | (A >> 3) | 31)
        expect, expect_err = {}, errno.EINVAL
    if expect_err is None:
        vm.its.restore_tables()
        assert collections(vm) == [(1, 1)]
    else:
        assert errno_of(vm.its.restore_tables) == expect_err
    assert devices(vm) == expect


@pytest.mark.parametrize("table", ["propbaser", "pendbaser"])
def test_restore_lpi_tables_outside_ram_efault(backend, table):
    """its-facts-B §2.6 step 8 / §2.7: vgic_add_lpi reads the LPI's
    configuration byte (VM PROPBASER) and its bit in the target's pending
    table; a read outside RAM fails the restore (-EFAULT) and, as every
    device-table error, frees everything (§2.1)."""
    vm = its_vm(backend)
    g = Guest(vm, enable_lpis=False, enable_its=False)
    if table == "propbaser":
        vm.mmio_write(rd_base(vm, 0) + R.GICR_PROPBASER, 8, OUTSIDE | 15, 0)
    else:
        vm.mmio_write(rd_base(vm, 1) + R.GICR_PENDBASER, 8, OUTSIDE, 1)
    C, D, A = g.lay.collection_table, g.lay.device_table, g.itt(0)
    write64(vm, C, cte(1, 1))
    write64(vm, D, dte(A, 8))
    write64(vm, A, ite(8192, 1))
    assert errno_of(vm.its.restore_tables) == errno.EFAULT
    assert devices(vm) == {} and collections(vm) == [] and lpis(vm) == {}


def test_restore_enomem_beyond_max_ites(backend):
    """its-facts-B §2.6 step 6 (ITE allocation -ENOMEM) with the model's
    its_max_ites bound standing in for KVM running out of memory (vgic/its.py):
    the third ITE of an ITS holding at most two fails the restore with
    -ENOMEM and everything is freed (§2.1)."""
    vm, g = blank(backend, its_max_ites=2)
    C, D, A = g.lay.collection_table, g.lay.device_table, g.itt(0)
    write64(vm, C, cte(1, 1))
    write64(vm, D, dte(A, 2))
    for e in range(3):
        write64(vm, A + 8 * e, ite(8192 + e, 1, nxt=1 if e < 2 else 0))
    assert errno_of(vm.its.restore_tables) == errno.ENOMEM
    assert devices(vm) == {} and collections(vm) == [] and lpis(vm) == {}
    write64(vm, A + 16, 0)
    write64(vm, A + 8, ite(8193, 1))
    vm.its.restore_tables()
    assert devices(vm) == {0: (A, 2, {0: (8192, 1, True), 1: (8193, 1, True)})}


def test_restore_model_deviations(backend):
    """The model's documented departures from KVM (vgic/its.py docstring;
    its-facts-B §2.1 / §2.6 describe KVM): a DTE for a DeviceID that already
    exists is refused with -EEXIST (KVM appends a second device), and an ITE
    whose pINTID is 65536 or more is -EINVAL (KVM makes an LPI no guest can
    map).  Either error changes nothing, as any rejected restore."""
    vm, g = blank(backend)
    C, D, A = g.lay.collection_table, g.lay.device_table, g.itt(0)
    write64(vm, D, dte(A, 2))
    vm.its.restore_tables()
    assert devices(vm) == {0: (A, 2, {})}
    assert errno_of(vm.its.restore_tables) == errno.EEXIST
    assert devices(vm) == {0: (A, 2, {})}
    vm.its.reset()
    guest_its_write(vm, BASER0, VALID | D)
    guest_its_write(vm, BASER1, VALID | C)
    write64(vm, C, cte(1, 1))
    write64(vm, A, ite(1 << 16, 1))
    assert errno_of(vm.its.restore_tables) == errno.EINVAL
    assert devices(vm) == {} and collections(vm) == []
    write64(vm, A, ite((1 << 16) - 1, 1))
    vm.its.restore_tables()
    assert devices(vm) == {0: (A, 2, {0: (65535, 1, True)})}


@pytest.mark.parametrize("path", ["mapti", "restore"])
def test_new_lpi_takes_enable_and_priority_from_config_byte(backend, path):
    """its-facts-A §3.1 / §3.2, its-facts-B §2.7 step 1 (vgic_add_lpi ->
    update_lpi_config): a newly made LPI is disabled until its configuration
    byte says otherwise -- priority = byte & 0xFC, enabled = byte bit 0 --
    whatever its INTID.  With byte 0xA2 (Enable 0) no LPI is enabled and an
    INT delivers nothing; byte 0xA3 enables it."""
    intids = [8192, 8200, 8207, 8208, 8223, 9000, 20000]
    vm = its_vm(backend)
    g = Guest(vm, enable_its=path == "mapti")
    for i in intids:
        set_prop(vm, g.lay, i, 0xA2)
    set_prop(vm, g.lay, 8224, 0xA3)
    events = {**{i: n for n, i in enumerate(intids)}, 8224: len(intids)}
    if path == "mapti":
        g.send(mapc(1, 1), mapd(0, 4, g.itt(0)), *[mapti(0, e, i, 1) for i, e in events.items()])
    else:
        write64(vm, g.lay.collection_table, cte(1, 1))
        write64(vm, g.lay.device_table, dte(g.itt(0), 4))
        for i, e in events.items():
            write64(vm, g.itt(0) + 8 * e, ite(i, 1, nxt=1 if e < len(intids) else 0))
        vm.its.restore_tables()
        guest_its_write(vm, R.GITS_CTLR, 1, 4)
    got = {i: (vm.irq(i).enabled, vm.irq(i).priority) for i in events}
    assert got == {**{i: (False, 0xA0) for i in intids}, 8224: (True, 0xA0)}
    g.send(*[int_(0, e) for e in events.values()])
    assert acks(vm) == [[], [8224], [], []]


def test_save_overlapping_tables_later_write_wins(backend):
    """its-facts-B §1.5 write order (device by device: its ITEs, then its
    DTE) and §2.8 (no overlap checks): device 1's ITT placed on the device
    table makes its ITE for EventID 0 overwrite device 0's DTE slot, and
    device 1's own DTE follows in slot 1."""
    vm = its_vm(backend)
    g = Guest(vm)
    D = g.lay.device_table
    g.send(mapc(1, 1), mapd(0, 2, g.itt(0)), mapd(1, 2, D), mapti(1, 0, 8192, 1))
    fill(vm, D, 64)
    vm.its.save_tables()
    expect_words(vm, D, 8, {0: ite(8192, 1), 1: VALID | (D >> 3) | 1})


def test_restore_cte_slot_outside_ram_einval(backend):
    """its-facts-B §2.3 step 5 / §1.4.2: a CTE whose ICID's slot in the
    collection table is not in guest memory fails vgic_its_check_id ->
    -EINVAL (the table's second page lies past RAM's end; ICID 8191 in the
    first page is fine), and the collections restored so far are freed."""
    vm, g = blank(backend)
    T = ram_end(vm) - PAGE
    guest_its_write(vm, BASER1, VALID | T | 1)
    write64(vm, T, cte(8191, 0))
    write64(vm, T + 8, cte(8192, 0))
    assert errno_of(vm.its.restore_tables) == errno.EINVAL
    assert collections(vm) == []
    write64(vm, T + 8, 0)
    vm.its.restore_tables()
    assert collections(vm) == [(8191, 0)]


def test_restore_shared_lpi_keeps_first_target_and_pending(backend):
    """its-facts-B §2.7 (vgic_add_lpi): an LPI that already exists gains a
    reference and nothing else -- no configuration re-read, no pending
    sync -- so when two restored ITEs map LPI 8192 through collections on
    vCPU 1 then vCPU 2, it stays aimed at vCPU 1, vCPU 1's bit is consumed
    and vCPU 2's bit is left set; it is delivered once, on vCPU 1."""
    vm, g = blank(backend)
    C, D, A, B = g.lay.collection_table, g.lay.device_table, g.itt(0), g.itt(1)
    set_prop(vm, g.lay, 8192)
    write64(vm, C, cte(1, 1))
    write64(vm, C + 8, cte(2, 2))
    write64(vm, D, dte(A, 2, nxt=1))
    write64(vm, D + 8, dte(B, 2))
    write64(vm, A, ite(8192, 1))
    write64(vm, B + 8, ite(8192, 2))
    set_pend_bit(vm, g.lay, 1, 8192)
    set_pend_bit(vm, g.lay, 2, 8192)
    vm.its.restore_tables()
    assert lpis(vm)[8192] == {"enabled": True, "pending_latch": True, "active": False, "priority": 0xA0,
                              "target_vcpu": 1, "ite_count": 2}
    assert [pend_bit(vm, g.lay, v, 8192) for v in (1, 2)] == [0, 1]
    assert acks(vm) == [[], [8192], [], []]


def test_restore_with_tables_not_valid_restores_nothing(backend):
    """its-facts-B §2.3 / §2.4: a table whose BASER is not Valid is skipped
    (0 objects, success) whatever its memory holds."""
    vm, g = blank(backend)
    write64(vm, g.lay.collection_table, cte(1, 1))
    write64(vm, g.lay.device_table, dte(g.itt(0), 4))
    guest_its_write(vm, BASER0, g.lay.device_table)
    guest_its_write(vm, BASER1, g.lay.collection_table)
    vm.its.restore_tables()
    assert devices(vm) == {} and collections(vm) == []
    guest_its_write(vm, BASER1, VALID | g.lay.collection_table)
    vm.its.restore_tables()
    assert devices(vm) == {} and collections(vm) == [(1, 1)]


# =========================================================== 3. the ITS device API
def test_has_device_attr_table(backend):
    """its-facts-B §3.3 (vgic_its_has_attr): GRP_ADDR only attr 4; GRP_CTRL
    0, 1, 2, 4 (not 3 nor 5); GRP_ITS_REGS every register offset, not the
    gaps nor GITS_TRANSLATER; misaligned offsets -EINVAL; other groups
    -ENXIO (False).  Never -EBUSY, even while a vCPU runs."""
    vm = its_vm(backend)
    has = vm.its.has_device_attr
    vm.vcpus[1].load()
    vm.vcpus[1].enter()
    assert [a for a in range(8) if has(G_ADDR, a)] == [uapi.KVM_VGIC_ITS_ADDR_TYPE]
    assert [a for a in range(8) if has(G_CTRL, a)] == [0, 1, 2, 4]
    good = [0x0, 0x4, 0x8, 0x80, 0x88, 0x90] + [0x100 + 8 * i for i in range(8)] + list(range(0xFFD0, 0x10000, 4))
    assert all(has(G_REGS, off) for off in good)
    assert not any(has(G_REGS, off) for off in (0x10, 0x18, 0x78, 0x98, 0xF8, 0x140, 0xFFC8, 0x10040, 0x20000))
    for off in (0x2, 0xC, 0x84, 0x104, 0xFFD2):
        assert errno_of(has, G_REGS, off) == errno.EINVAL
    assert not any(has(grp, 0) for grp in (1, 2, 3, 5, 6, 7, 9))
    vm.vcpus[1].exit()


def test_grp_addr(backend):
    """its-facts-B §3.4: get returns the ITS base; set with attr 4 is -EEXIST
    whatever the value (the base is already set, checked first), any other
    attr -ENODEV (get and set).  No vCPU lock is taken (fine while one runs)."""
    vm = its_vm(backend)
    assert vm.its.get_device_attr(G_ADDR, uapi.KVM_VGIC_ITS_ADDR_TYPE) == vm.its_base == 0x0808_0000
    for value in (0x400000, 0x401000, vm.its_base, (1 << 52) - 0x10000):
        assert errno_of(vm.its.set_device_attr, G_ADDR, uapi.KVM_VGIC_ITS_ADDR_TYPE, value) == errno.EEXIST
    for attr in (0, 2, 3, 5):
        assert errno_of(vm.its.get_device_attr, G_ADDR, attr) == errno.ENODEV
        assert errno_of(vm.its.set_device_attr, G_ADDR, attr, 0x400000) == errno.ENODEV
    vm.vcpus[0].load()
    vm.vcpus[0].enter()
    assert vm.its.get_device_attr(G_ADDR, uapi.KVM_VGIC_ITS_ADDR_TYPE) == 0x0808_0000
    assert errno_of(vm.its.set_device_attr, G_ADDR, uapi.KVM_VGIC_ITS_ADDR_TYPE, 0x400000) == errno.EEXIST
    vm.vcpus[0].exit()


def test_grp_ctrl(backend):
    """its-facts-B §3.5: CTRL_INIT returns 0 at once (no lock: fine while a
    vCPU runs) and changes nothing; any other attr takes the vCPU locks first
    (-EBUSY while one runs, even for an unknown attr), then an unknown attr
    is -ENXIO; get on GRP_CTRL is -ENXIO; unknown groups -ENXIO."""
    vm = its_vm(backend)
    setup1(vm)
    before = vm.state()
    vm.its.set_device_attr(G_CTRL, CTRL_INIT, 0)
    vm.vcpus[0].load()
    vm.vcpus[0].enter()
    vm.its.set_device_attr(G_CTRL, CTRL_INIT, 0)
    for attr in (3, 5, 99):
        assert errno_of(vm.its.set_device_attr, G_CTRL, attr, 0) == errno.EBUSY
    vm.vcpus[0].exit()
    for attr in (3, 5, 99):
        assert errno_of(vm.its.set_device_attr, G_CTRL, attr, 0) == errno.ENXIO
    assert errno_of(vm.its.get_device_attr, G_CTRL, SAVE) == errno.ENXIO
    assert errno_of(vm.its.get_device_attr, 1, 0) == errno.ENXIO
    assert errno_of(vm.its.set_device_attr, 1, 0, 0) == errno.ENXIO
    assert vm.its.state() == before["its"]


def test_its_regs_alignment_offsets_and_busy(backend):
    """its-facts-B §3.6 steps 1-4: misaligned offsets (0xC, 0x84, 0x2, 0x104,
    0xFFD2) -EINVAL, checked before the vCPU locks; gaps and
    GITS_TRANSLATER (0x10, 0x98, 0x140, 0x10040) -ENXIO; while a vCPU runs an
    aligned offset is -EBUSY (even a gap: the lock comes before the region)."""
    vm = its_vm(backend)
    for off in (0xC, 0x84, 0x2, 0x104, 0xFFD2):
        assert errno_of(vm.its.get_device_attr, G_REGS, off) == errno.EINVAL
        assert errno_of(vm.its.set_device_attr, G_REGS, off, 0) == errno.EINVAL
    for off in (0x10, 0x98, 0x140, 0x10040):
        assert errno_of(vm.its.get_device_attr, G_REGS, off) == errno.ENXIO
        assert errno_of(vm.its.set_device_attr, G_REGS, off, 0) == errno.ENXIO
    vm.vcpus[2].load()
    vm.vcpus[2].enter()
    assert errno_of(vm.its.get_device_attr, G_REGS, 0xC) == errno.EINVAL
    for off in (R.GITS_CTLR, R.GITS_BASER, 0x10):
        assert errno_of(vm.its.get_device_attr, G_REGS, off) == errno.EBUSY
        assert errno_of(vm.its.set_device_attr, G_REGS, off, 0) == errno.EBUSY
    vm.vcpus[2].exit()


def test_its_regs_read_values(backend):
    """its-facts-A §1.3 / §1.5, its-facts-B §3.2: a new ITS reads CTLR
    0x80000000, IIDR 0x4B00043B, TYPER 0x1EF71 (whole 64 bits), CBASER,
    CREADR, CWRITER 0, BASER0 0x1907000000000600, BASER1
    0x1C07000000000600, BASER2..7 0, and the ID registers PIDR4 0x40, PIDR0
    0x92, PIDR1 0xB4, PIDR2 0x3B, CIDR0..3 0x0D 0xF0 0x05 0xB1, others 0;
    writes to TYPER and the ID registers are ignored (return 0)."""
    vm = its_vm(backend)
    exp = {0x0: 0x80000000, 0x4: IIDR, 0x8: TYPER, 0x80: 0, 0x88: 0, 0x90: 0,
           0x100: 0x1907000000000600, 0x108: 0x1C07000000000600}
    exp.update({0x110 + 8 * i: 0 for i in range(6)})
    ids = {0xFFD0: 0x40, 0xFFE0: 0x92, 0xFFE4: 0xB4, 0xFFE8: 0x3B, 0xFFF0: 0x0D, 0xFFF4: 0xF0,
           0xFFF8: 0x05, 0xFFFC: 0xB1}
    exp.update({off: ids.get(off, 0) for off in range(0xFFD0, 0x10000, 4)})
    assert {off: its_reg(vm, off) for off in exp} == exp
    set_its_reg(vm, R.GITS_TYPER, (1 << 64) - 1)
    set_its_reg(vm, 0xFFE8, 0)
    assert its_reg(vm, R.GITS_TYPER) == TYPER and its_reg(vm, 0xFFE8) == 0x3B


def test_its_regs_iidr_write(backend):
    """its-facts-B §3.6 (vgic_mmio_uaccess_write_its_iidr): revision bits
    [15:12] >= 1 -> -EINVAL; revision 0 is accepted whatever the other bits
    are, and IIDR still reads 0x4B00043B; a guest IIDR write is ignored."""
    vm = its_vm(backend)
    for rev in (1, 2, 15):
        assert errno_of(set_its_reg, vm, R.GITS_IIDR, IIDR | (rev << 12)) == errno.EINVAL
    set_its_reg(vm, R.GITS_IIDR, 0xFFFF0FFF)
    set_its_reg(vm, R.GITS_IIDR, 0)
    guest_its_write(vm, R.GITS_IIDR, 0x1000, 4)
    assert its_reg(vm, R.GITS_IIDR) == IIDR


def test_its_regs_creadr_write(backend):
    """its-facts-B §3.6 (vgic_mmio_uaccess_write_its_creadr): -EBUSY while the
    ITS is enabled; offset = value & 0xFFFE0; offset >= the queue size (from
    the current CBASER) -> -EINVAL; else stored without running commands. A
    guest CREADR write is ignored."""
    vm = its_vm(backend)
    g = Guest(vm)                                          # 64 KiB queue, enabled
    assert errno_of(set_its_reg, vm, R.GITS_CREADR, 0x40) == errno.EBUSY
    guest_its_write(vm, R.GITS_CTLR, 0, 4)
    assert errno_of(set_its_reg, vm, R.GITS_CREADR, 0x10000) == errno.EINVAL
    set_its_reg(vm, R.GITS_CREADR, 0xFFE0)
    assert its_reg(vm, R.GITS_CREADR) == 0xFFE0
    set_its_reg(vm, R.GITS_CREADR, 0x1F | 0x40 | (1 << 40))
    assert its_reg(vm, R.GITS_CREADR) == 0x40
    guest_its_write(vm, R.GITS_CREADR, 0x80)
    assert its_reg(vm, R.GITS_CREADR) == 0x40
    guest_its_write(vm, R.GITS_CBASER, VALID | g.lay.cmdq | 0)       # a 4 KiB queue
    assert errno_of(set_its_reg, vm, R.GITS_CREADR, 0x1000) == errno.EINVAL
    set_its_reg(vm, R.GITS_CREADR, 0xFE0)
    # Disabled, CREADR != CWRITER: neither Enabled nor Quiescent.
    assert its_reg(vm, R.GITS_CREADR) == 0xFE0 and its_reg(vm, R.GITS_CTLR) == 0


def _reg_steps(vm: vgic.VM) -> list[tuple[int, int]]:
    lay = layout(vm)
    return [
        (R.GITS_CBASER, 0x8000000040001000),
        (R.GITS_CWRITER, 0x1000),                                 # beyond the 4 KiB queue: ignored
        (R.GITS_CWRITER, 0x61),
        (R.GITS_CBASER, VALID | lay.cmdq | 15),                  # zeroes CREADR and CWRITER
        (BASER0, 0x8000000040000000),
        (BASER1, VALID | INDIRECT | lay.collection_table | (1 << 56) | 0x7FF),
        (R.GITS_BASER + 16, 0x1234),                              # BASER2: ignored
        (R.GITS_CTLR, 1),
        (R.GITS_CBASER, VALID | lay.cmdq),                        # enabled: ignored
        (BASER0, 0),                                              # enabled: ignored
    ]


def _reg_sequence(vm: vgic.VM, write) -> list[tuple[int, ...]]:
    """Apply :func:`_reg_steps` with ``write(offset, value)``; what userspace
    reads (CTLR, CBASER, CREADR, CWRITER, BASER0, BASER1, BASER2) after each."""
    seen = []
    for off, value in _reg_steps(vm):
        write(off, value)
        seen.append(tuple(its_reg(vm, o) for o in (R.GITS_CTLR, R.GITS_CBASER, R.GITS_CREADR, R.GITS_CWRITER,
                                                   BASER0, BASER1, R.GITS_BASER + 16)))
    return seen


def test_its_regs_cbaser_cwriter_baser_like_the_guest(backend):
    """its-facts-B §3.6 / its-facts-A §1.3: userspace CBASER, CWRITER and
    BASER writes take the guest's handlers: CBASER 0x8000000040001000 stores
    0x9800000040000000 (4 KiB queue) and zeroes CREADR/CWRITER; CWRITER keeps
    bits [19:5] and ignores offsets beyond the queue; BASER0
    0x8000000040000000 stores 0x9907000040000200; BASER1 loses Indirect and
    gets Type 4 / Entry_Size 7; BASER2 reads 0; once enabled CBASER and
    BASER writes are ignored.  Same readings through MMIO and the API."""
    vm_u, vm_g = its_vm(backend), its_vm(backend)
    by_api = _reg_sequence(vm_u, lambda off, v: set_its_reg(vm_u, off, v))
    by_guest = _reg_sequence(vm_g, lambda off, v: guest_its_write(vm_g, off, v, 4 if off == 0 else 8))
    assert by_api == by_guest
    lay = layout(vm_u)
    assert by_api[0] == (0x80000000, 0x9800000040000000, 0, 0, 0x1907000000000600, 0x1C07000000000600, 0)
    assert by_api[1] == by_api[0]
    assert by_api[2][2:4] == (0, 0x60) and by_api[2][0] == 0
    assert by_api[3][1:4] == (0x9800000000000000 | lay.cmdq | 15, 0, 0)
    assert by_api[4][4] == 0x9907000040000200
    assert by_api[5][5] == 0x9C07000000000600 | lay.collection_table | 0xFF
    assert by_api[6] == by_api[5]
    assert by_api[7][0] == 0x80000001
    assert by_api[9] == by_api[7]


def test_its_regs_cwriter_runs_commands_when_enabled(backend):
    """its-facts-B §3.6: a userspace CWRITER write is the guest's: with the
    ITS enabled it runs the queued commands (CREADR follows); disabled, it
    only stores CWRITER and GITS_CTLR reads 0 (not quiescent) until the
    userspace GITS_CTLR enable runs them (its-facts-A §1.3)."""
    vm = its_vm(backend)
    g = setup1(vm)
    base = g.lay.cmdq + g.cwriter
    for i, w in enumerate(int_(2, 20)):
        write64(vm, base + 8 * i, w)
    guest_its_write(vm, R.GITS_CTLR, 0, 4)
    set_its_reg(vm, R.GITS_CWRITER, g.cwriter + 32)
    assert its_reg(vm, R.GITS_CTLR) == 0 and its_reg(vm, R.GITS_CREADR) == g.cwriter
    assert not vm.irq(8195).pending_latch
    set_its_reg(vm, R.GITS_CTLR, 1)
    assert its_reg(vm, R.GITS_CTLR) == 0x80000001 and its_reg(vm, R.GITS_CREADR) == g.cwriter + 32
    for i, w in enumerate(int_(7, 255)):
        write64(vm, base + 32 + 8 * i, w)
    set_its_reg(vm, R.GITS_CWRITER, g.cwriter + 64)
    assert its_reg(vm, R.GITS_CREADR) == g.cwriter + 64
    assert acks(vm) == [[], [], [8196], [8195]]


def test_its_regs_ctlr_enable_refused_without_valid_tables(backend):
    """its-facts-A §1.3 / its-facts-B §3.6: enabling through GITS_CTLR
    (userspace too) is silently ignored unless BASER0, BASER1 and CBASER are
    all Valid; no error is returned."""
    vm = its_vm(backend)
    set_its_reg(vm, R.GITS_CTLR, 1)
    assert its_reg(vm, R.GITS_CTLR) == 0x80000000
    lay = layout(vm)
    set_its_reg(vm, R.GITS_CBASER, VALID | lay.cmdq | 15)
    set_its_reg(vm, BASER0, VALID | lay.device_table)
    set_its_reg(vm, R.GITS_CTLR, 1)
    assert its_reg(vm, R.GITS_CTLR) == 0x80000000
    set_its_reg(vm, BASER1, VALID | lay.collection_table)
    set_its_reg(vm, R.GITS_CTLR, 1)
    assert its_reg(vm, R.GITS_CTLR) == 0x80000001


def test_baser_change_frees_list(backend):
    """its-facts-B §3.6 [ITS-new]: a BASER0/BASER1 write whose stored value
    differs frees the whole device / collection list (even with Valid kept
    set); rewriting the identical value frees nothing."""
    vm = its_vm(backend)
    g = setup1(vm)
    guest_its_write(vm, R.GITS_CTLR, 0, 4)
    b0, b1 = its_reg(vm, BASER0), its_reg(vm, BASER1)
    set_its_reg(vm, BASER0, b0)
    set_its_reg(vm, BASER1, b1)
    assert sorted(devices(vm)) == [2, 7] and collections(vm) == [(3, 3), (2, 2)]
    set_its_reg(vm, BASER1, b1 | 1)
    assert collections(vm) == [] and sorted(devices(vm)) == [2, 7]
    assert devices(vm)[2][2] == {20: (8195, 3, False)}
    set_its_reg(vm, BASER0, VALID | g.lay.device_table | 1)
    assert devices(vm) == {} and lpis(vm) == {}


def test_its_reset(backend):
    """its-facts-B §3.7 (vgic_its_reset): CTRL_RESET clears only the Valid bit
    of BASER0/1 (address, Size, Indirect kept), zeroes CBASER, CREADR and
    CWRITER, disables the ITS (CTLR reads 0x80000000), frees every device,
    ITE and collection (their LPIs go), keeps the ABI revision (IIDR) and the
    VM's PROPBASER/redistributor state."""
    vm = its_vm(backend)
    g = setup1(vm)
    set_baser(vm, 0, VALID | INDIRECT | g.lay.device_table | 3)
    guest_its_write(vm, BASER1, VALID | g.lay.collection_table | 2)
    guest_its_write(vm, R.GITS_CTLR, 1, 4)
    r = vm.ram_base
    write64(vm, g.lay.device_table, VALID | (r + 0xA0_0000))
    g.send(mapc(1, 1), mapd(4, 4, g.itt(4)), mapti(4, 0, 8195, 1))
    assert devices(vm) and collections(vm) and lpis(vm)
    v3_before = vm.state()["vgic_v3"]["GICR_PROPBASER"]
    vm.its.reset()
    assert its_reg(vm, BASER0) == 0x5907000000000200 | g.lay.device_table | 3
    assert its_reg(vm, BASER1) == 0x1C07000000000200 | g.lay.collection_table | 2
    assert [its_reg(vm, o) for o in (R.GITS_CBASER, R.GITS_CREADR, R.GITS_CWRITER)] == [0, 0, 0]
    assert its_reg(vm, R.GITS_CTLR) == 0x80000000 and its_reg(vm, R.GITS_IIDR) == IIDR
    assert devices(vm) == {} and collections(vm) == [] and lpis(vm) == {}
    assert vm.state()["vgic_v3"]["GICR_PROPBASER"] == v3_before == g.lay.prop | 0x180 | 15
    assert vm.its.get_device_attr(G_ADDR, uapi.KVM_VGIC_ITS_ADDR_TYPE) == vm.its_base


# ==================================================== 4. SAVE_PENDING_TABLES
def test_save_pending_tables_bits(backend):
    """its-facts-B §3.8 (vgic_v3_save_pending_tables): for every LPI with a
    target, its bit in the target's pending table becomes its pending state
    -- set for pending LPIs, cleared for stale 1-bits of non-pending ones --
    by read-modify-write of that byte only (other bits and bytes, and the
    first 1 KiB, untouched); two LPIs sharing a byte offset on different
    vCPUs use each vCPU's own table; an LPI without a target (unmapped
    collection) is skipped, its stale bits left set."""
    vm = its_vm(backend)
    g = Guest(vm)
    for v in range(4):
        set_prop(vm, g.lay, 8192 + v)
    g.send(mapc(0, 0), mapc(1, 1), mapd(1, 8, g.itt(0)),
           mapti(1, 0, 8192, 0), mapti(1, 1, 8193, 1), mapti(1, 2, 8194, 0), mapti(1, 3, 8195, 1),
           mapti(1, 4, 8203, 9))                          # collection 9: made unmapped, no target
    g.send(int_(1, 0), int_(1, 1))
    assert lpis(vm)[8203]["target_vcpu"] == -1
    P0, P1, P2 = g.lay.pend[0], g.lay.pend[1], g.lay.pend[2]
    for p in (P0, P1, P2):
        fill(vm, p, 0x2000, 0)
        fill(vm, p, 0x400, POISON)                        # the first 1 KiB (INTIDs < 8192)
    o0 = P0 - vm.ram_base
    vm.memory[o0 + 1024] = 0xF0 | 0x04                    # stale 8194, unrelated 8196..8199
    vm.memory[o0 + 1025] = 0x08                           # stale bit of 8203 (no target)
    vm.memory[P1 - vm.ram_base + 1025] = 0x08
    vm.set_device_attr(G_CTRL, SAVE_PENDING, 0)
    assert int(vm.memory[o0 + 1024]) == 0xF0 | 0x01       # 8192 set, 8194 cleared
    assert int(vm.memory[o0 + 1025]) == 0x08
    o1 = P1 - vm.ram_base
    assert int(vm.memory[o1 + 1024]) == 0x02 and int(vm.memory[o1 + 1025]) == 0x08
    for p in (P0, P1, P2):
        expect_words(vm, p, 128, {})
    assert not np.any(vm.memory[P2 - vm.ram_base + 0x400:P2 - vm.ram_base + 0x2000])
    assert lpis(vm)[8192]["pending_latch"] and lpis(vm)[8193]["pending_latch"]


def test_save_pending_tables_efault_and_ebusy(backend):
    """its-facts-B §3.8: the vGICv3 device has CTRL attrs 0 and 3 only; with
    a vCPU running -> -EBUSY (all vCPU locks taken); an LPI whose target's pending table lies outside RAM -> -EFAULT.
    (The target's EnableLPIs is cleared to rewrite its PENDBASER; the LPI
    keeps its target, its-facts-A §3.5.)"""
    vm = its_vm(backend)
    g = Guest(vm)
    g.send(mapc(0, 0), mapc(2, 2), mapd(1, 4, g.itt(0)), mapti(1, 0, 8192, 0), mapti(1, 1, 8193, 2))
    vm.vcpus[3].load()
    vm.vcpus[3].enter()
    assert errno_of(vm.set_device_attr, G_CTRL, SAVE_PENDING, 0) == errno.EBUSY
    vm.vcpus[3].exit()
    assert [a for a in range(6) if vm.has_device_attr(G_CTRL, a)] == [CTRL_INIT, SAVE_PENDING]
    vm.set_device_attr(G_CTRL, SAVE_PENDING, 0)
    vm.mmio_write(rd_base(vm, 2) + R.GICR_CTLR, 4, 0, 2)
    vm.mmio_write(rd_base(vm, 2) + R.GICR_PENDBASER, 8, OUTSIDE, 2)
    assert vm.irq(8193).target_vcpu == 2
    assert errno_of(vm.set_device_attr, G_CTRL, SAVE_PENDING, 0) == errno.EFAULT


# ========================================================== 5. scenarios
def test_kut_its_trigger(backend):
    """its-facts-B §5.3 (kvm-unit-tests its-trigger): INT reaches only the
    collection's PE; a disabled LPI (config 0xA2 + INV) is not delivered
    but stays pending; re-enabled in memory, a second INT and INVALL give
    exactly one delivery; then once more; after MAPD V=0 INT delivers
    nothing and KVM zeroes the device's DTE slot."""
    vm = its_vm(backend)
    g = setup1(vm)
    g.send(int_(2, 20))
    assert acks(vm) == [[], [], [], [8195]]
    g.send(int_(7, 255))
    assert acks(vm) == [[], [], [8196], []]
    set_prop(vm, g.lay, 8195, 0xA2)
    g.send(inv(2, 20), int_(2, 20))
    assert acks(vm) == [[], [], [], []]
    assert vm.irq(8195).pending_latch and not vm.irq(8195).enabled
    set_prop(vm, g.lay, 8195, LPI_PROP_DEFAULT)
    g.send(int_(2, 20), invall(3))
    assert acks(vm) == [[], [], [], [8195]]
    g.send(int_(2, 20))
    assert acks(vm) == [[], [], [], [8195]]
    write64(vm, g.lay.device_table + 16, POISON)
    g.send(mapd(2, 8, g.itt(0), valid=False), int_(2, 20))
    assert acks(vm) == [[], [], [], []]
    assert read64(vm, g.lay.device_table + 16) == 0
    assert sorted(devices(vm)) == [7]


def test_kut_its_migration(backend):
    """its-facts-B §5.4 (kvm-unit-tests its-migration): after its_setup1 and a
    migration, INT (2, 20) -> PE3 acks 8195 once, INT (7, 255) -> PE2 acks
    8196 once; the restored CREADR/CWRITER replay nothing (no extra acks)."""
    vm = its_vm(backend)
    g = setup1(vm)
    dst = migrate(vm)
    assert its_reg(dst, R.GITS_CREADR) == its_reg(dst, R.GITS_CWRITER) == g.cwriter
    assert acks(dst) == [[], [], [], []]
    g2 = attach(dst, g.cwriter)
    g2.send(int_(2, 20))
    g2.send(int_(7, 255))
    assert acks(dst) == [[], [], [8196], [8195]]


def test_kut_its_migrate_unmapped_collection(backend):
    """its-facts-B §5.5 (kvm-unit-tests its-migrate-unmapped-collection):
    MAPTI to unmapped collection 0 auto-creates it (target 0xFFFFFFFF);
    saved CTEs 0x8000000000030003, 0x8000000000020002, 0x8000FFFFFFFF0000, 0;
    ITE (2, 0) = 0x0014000020000000, DTE 2 next 5; restore accepts the
    unmapped target; then MAPC col0 -> PE0 + INVALL, INT (7, 255) -> PE2
    8196, the config byte of 8192 is still 0xA3, INT (2, 0) -> PE0 8192.
    The untargeted LPI's pending bits are neither saved, read nor consumed
    (§2.7, §3.8)."""
    vm = its_vm(backend)
    g = setup1(vm)
    g.send(mapti(2, 0, 8192, 0))
    set_prop(vm, g.lay, 8192)
    C, A2 = g.lay.collection_table, g.itt(0)
    fill(vm, C, PAGE)
    fill(vm, A2, 256 * 8)
    for v in range(4):
        set_pend_bit(vm, g.lay, v, 8192)                  # stale: 8192 has no target
    dst = migrate(vm)
    assert [pend_bit(dst, g.lay, v, 8192) for v in range(4)] == [1, 1, 1, 1]
    assert not dst.irq(8192).pending_latch
    expect_words(vm, C, 8192, {0: 0x8000000000030003, 1: 0x8000000000020002, 2: 0x8000FFFFFFFF0000, 3: 0})
    expect_words(vm, A2, 256, {0: 0x0014000020000000, 20: 0x0000000020030003})
    assert read64(vm, g.lay.device_table + 16) == 0x800A000000000007 | (A2 >> 3)
    assert collections(dst) == [(3, 3), (2, 2), (0, COLLECTION_NOT_MAPPED)]
    g2 = attach(dst, g.cwriter)
    g2.send(mapc(0, 0), invall(0))
    g2.send(int_(7, 255))
    assert acks(dst) == [[], [], [8196], []]
    assert int(dst.memory[g.lay.prop - dst.ram_base + 0]) == 0xA3
    g2.send(int_(2, 0))
    assert acks(dst) == [[8192], [], [], []]


@pytest.mark.parametrize("before", [(0, 0), (50, 17)], ids=["none_before", "some_before"])
def test_kut_its_pending_migration(backend, before):
    """its-facts-B §5.6 (kvm-unit-tests its-pending-migration): 256 LPIs, odd
    to pe0 = 3, even to pe1 = 2, pending through the pending tables and
    EnableLPIs 0->1; some may be taken before migration.  Across SAVE_PENDING
    + SAVE_TABLES and a restore in the §4 order every LPI is acknowledged
    exactly once: 128 on each PE, none elsewhere (stale bits cleared at
    save, consumed bits cleared at restore)."""
    vm = its_vm(backend)
    g = Guest(vm)
    pe0, pe1 = 3, 2
    g.send(mapd(2, 8, g.itt(0)), mapc(pe0, pe0), mapc(pe1, pe1))
    for pe in (pe0, pe1):
        vm.mmio_write(rd_base(vm, pe) + R.GICR_CTLR, 4, 0, pe)
    for i in range(256):
        pe = pe0 if i % 2 else pe1
        g.send(mapti(2, i, 8192 + i, pe))
        set_prop(vm, g.lay, 8192 + i)
        set_pend_bit(vm, g.lay, pe, 8192 + i)
    g.send(invall(pe0), invall(pe1))
    for pe in (pe0, pe1):
        vm.mmio_write(rd_base(vm, pe) + R.GICR_PENDBASER, 8, g.lay.pend[pe], pe)
        vm.mmio_write(rd_base(vm, pe) + R.GICR_CTLR, 4, R.GICR_CTLR_ENABLE_LPIS, pe)
    taken = {pe0: [acknowledge(vm, pe0) for _ in range(before[0])],
             pe1: [acknowledge(vm, pe1) for _ in range(before[1])]}
    dst = migrate(vm)
    after = acks(dst)
    total = {v: taken.get(v, []) + after[v] for v in range(4)}
    assert sorted(total[pe0]) == [8192 + i for i in range(1, 256, 2)]
    assert sorted(total[pe1]) == [8192 + i for i in range(0, 256, 2)]
    assert total[0] == [] and total[1] == []
    pend = [int(x) for x in dst.memory[g.lay.pend[pe0] - dst.ram_base + 1024:][:32]]
    assert pend == [0] * 32


def test_selftest_baser_change_drops_collections(backend):
    """its-facts-B §5.7 case A (vgic_its_save.c test_baser_change_drops_
    collections): 8193 collections in a 2-page table; shrinking BASER1 to
    one page (Valid kept) drops them all; SAVE writes only CTE[0] = 0 and
    CTE[1..16383] keep the poison; reset + restore succeeds with nothing."""
    vm = its_vm(backend)
    g = Guest(vm, enable_its=False)
    C = g.lay.collection_table
    guest_its_write(vm, BASER1, VALID | C | 1)
    guest_its_write(vm, R.GITS_CTLR, R.GITS_CTLR_ENABLED, 4)
    for k in range(0, 8193, 1024):
        g.send(*[mapc(i, 0) for i in range(k, min(k + 1024, 8193))])
    assert len(collections(vm)) == 8193
    guest_its_write(vm, R.GITS_CTLR, 0, 4)
    b1 = vm.mmio_read(vm.its_base + BASER1, 8)
    guest_its_write(vm, BASER1, b1 & ~0xFF)
    assert collections(vm) == []
    fill(vm, C, 2 * PAGE)
    vm.its.save_tables()
    expect_words(vm, C, 16384, {0: 0})
    reset_and_restore(vm)
    assert collections(vm) == [] and devices(vm) == {}


def test_selftest_unreachable_device_skipped(backend):
    """its-facts-B §5.7 case B (vgic_its_save.c test_unreachable_device_
    skipped): indirect device table, device 0 (14 EventID bits) under L1[0]
    and 8192 under L1[1]; the guest clears L1[1]; SAVE succeeds, device 0's
    DTE = 2^63 | ITT_A>>3 | 13 with next 0, L2 block 1 keeps its poison;
    reset + restore gives device 0 only (the poisoned slots are never read)."""
    vm = its_vm(backend)
    g = Guest(vm)
    r = vm.ram_base
    l2 = [r + 0xA0_0000, r + 0xB0_0000]
    ITT_A, ITT_B = r + 0xC0_0000, r + 0xE0_0000
    L1 = _two_level(vm, g, l2)
    g.send(mapd(0, 14, ITT_A), mapd(8192, 14, ITT_B))
    assert sorted(devices(vm)) == [0, 8192]
    write64(vm, L1 + 8, 0)
    fill(vm, l2[0], PAGE)
    fill(vm, l2[1], PAGE)
    vm.its.save_tables()
    expect_words(vm, l2[0], 8192, {0: 0x8000000000000000 | (ITT_A >> 3) | 13})
    expect_words(vm, l2[1], 8192, {})
    reset_and_restore(vm)
    assert devices(vm) == {0: (ITT_A, 14, {})}


# ============================================== 6. migration through named state
@pytest.mark.parametrize("dst_backend", ["same", "other"])
def test_named_state_migration(backend, dst_backend):
    """vgic/its_state.py, its-facts-B §5.4: vm2.load_state(vm.state()) plus a
    copy of RAM makes an identical machine (either backend): same named
    state, a pending LPI still delivered, the same INT results, and
    SAVE_TABLES writes the same bytes on both."""
    other = "pure" if backend == "core" else "core"
    b2 = backend if dst_backend == "same" else other
    if b2 == "core":
        pytest.importorskip("vgic._core.its")
    vm = its_vm(backend)
    g = setup1(vm)
    set_prop(vm, g.lay, 8192)
    g.send(mapti(2, 0, 8192, 0), int_(2, 20))
    vm2 = its_vm(b2)
    vm2.load_state(vm.state())
    vm2.memory[:] = vm.memory
    assert vm2.state() == vm.state()
    g2 = attach(vm2, g.cwriter)
    for guest in (g, g2):
        guest.send(int_(7, 255), int_(2, 0), mapc(0, 1), int_(2, 0))
    assert acks(vm2) == acks(vm) == [[], [8192], [8196], [8195]]
    vm.its.save_tables()
    vm2.its.save_tables()
    assert np.array_equal(vm.memory, vm2.memory)
    assert vm2.state()["its"] == vm.state()["its"]


def _lpi_column(st: dict, column: str, intid: int, value: int) -> None:
    lp = st["vgic_v3"]["lpi"]
    lp[column][lp["intid"].index(intid)] = value


MUTATIONS = {
    "ctlr_without_quiescent": lambda st: st["its"].__setitem__("GITS_CTLR", 0x1),
    "ctlr_unknown_bit": lambda st: st["its"].__setitem__("GITS_CTLR", 0x80000003),
    "ctlr_enabled_baser0_invalid": lambda st: st["its"]["GITS_BASER"].__setitem__(
        0, st["its"]["GITS_BASER"][0] & ~VALID),
    "baser0_collection_type": lambda st: st["its"]["GITS_BASER"].__setitem__(
        0, (st["its"]["GITS_BASER"][0] & ~(7 << 56)) | (4 << 56)),
    "baser1_indirect": lambda st: st["its"]["GITS_BASER"].__setitem__(1, st["its"]["GITS_BASER"][1] | INDIRECT),
    "baser2_nonzero": lambda st: st["its"]["GITS_BASER"].__setitem__(2, 1),
    "iidr_revision_1": lambda st: st["its"].__setitem__("GITS_IIDR", IIDR | 0x1000),
    "cwriter_beyond_queue": lambda st: st["its"].__setitem__("GITS_CWRITER", 0x10000),
    "ite_names_missing_collection": lambda st: st["its"]["devices"][0]["ites"]["ICID"].__setitem__(0, 9),
    "duplicate_collection": lambda st: st["its"]["collections"].append({"ICID": 3, "target": 0}),
    "ite_count_mismatch": lambda st: _lpi_column(st, "ite_count", 8195, 2),
    "ite_maps_lpi_not_in_lpi_section": lambda st: st["its"]["devices"][1]["ites"]["pINTID"].__setitem__(0, 8197),
    "ite_event_beyond_itt": lambda st: st["its"]["devices"][1].__setitem__("num_eventid_bits", 7),
    "eventid_bits_17": lambda st: st["its"]["devices"][1].__setitem__("num_eventid_bits", 17),
    "itt_addr_unaligned": lambda st: st["its"]["devices"][0].__setitem__(
        "ITT_addr", st["its"]["devices"][0]["ITT_addr"] | 0x80),
    "collection_target_not_a_vcpu": lambda st: st["its"]["collections"][0].__setitem__("target", 4),
    "enabled_with_queued_commands": lambda st: st["its"].update(
        GITS_CWRITER=st["its"]["GITS_CREADR"] + 32, GITS_CTLR=0x1),
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_hostile_its_named_state_refused(backend, mutation):
    """vgic/its_state.py from_dict / Its.check_links and VM.load_state: an ITS
    section KVM could never hold (GITS_CTLR not as Quiescent/Enabled imply,
    enabled without valid tables or with commands still queued, BASER values
    KVM's write rule would not keep, IIDR revision 1, CWRITER beyond the
    queue, an ITE naming a missing collection or an EventID beyond its ITT,
    more than 16 EventID bits, an ITT address not 256-byte aligned, a
    duplicate collection or one aimed at no vCPU, ite_count disagreeing with
    the ITEs)
    raises vgic.StateError, and the target VM's state is unchanged."""
    vm = its_vm(backend)
    g = setup1(vm)
    g.send(int_(2, 20))
    good = vm.state()
    vm2 = its_vm(backend)
    g2 = Guest(vm2)
    g2.send(mapc(1, 1))
    before = vm2.state()
    bad = copy.deepcopy(good)
    MUTATIONS[mutation](bad)
    assert bad != good
    with pytest.raises(vgic.StateError):
        vm2.load_state(bad)
    assert vm2.state() == before
    vm2.load_state(good)
    assert vm2.state() == good


def _objects_beyond_tables(st: dict, case: str) -> None:
    its = st["its"]
    if case == "collections_overflow_collection_table":
        its["collections"] = [{"ICID": i, "target": 0} for i in range(8193)]
    elif case == "icid_beyond_collection_table":
        its["collections"] = [{"ICID": 9000, "target": 0}]
    elif case == "device_beyond_flat_device_table":
        its["devices"][0]["DeviceID"] = 9000
    elif case == "devices_with_baser0_invalid":
        its["GITS_CTLR"] = 0x80000000
        its["GITS_BASER"][0] &= ~VALID
    else:
        its["GITS_CTLR"] = 0x80000000
        its["GITS_BASER"][1] &= ~VALID


@pytest.mark.parametrize("case", ["collections_overflow_collection_table", "icid_beyond_collection_table",
                                  "device_beyond_flat_device_table", "devices_with_baser0_invalid",
                                  "collections_with_baser1_invalid"])
def test_named_state_objects_must_fit_their_tables(backend, case):
    """its-facts-B §3.6 ([ITS-new]: any change of a BASER frees its list), §1.4
    (vgic_its_check_id on a Valid table whenever MAPD, MAPC, MAPTI or RESTORE
    make an object) and §1.5 ("the list can never exceed the table"): in KVM
    every device and collection fits its table, under a Valid BASER.  A
    named ITS state breaking that is a state KVM cannot hold: load_state
    must raise vgic.StateError and change nothing."""
    vm = its_vm(backend)
    g = Guest(vm)
    g.send(mapc(1, 1), mapd(2, 8, g.itt(0)))
    bad = vm.state()
    _objects_beyond_tables(bad, case)
    vm2 = its_vm(backend)
    before = vm2.state()
    with pytest.raises(vgic.StateError):
        vm2.load_state(bad)
    assert vm2.state() == before


def test_save_restore_52bit_addresses(backend):
    """its-facts-B §1.1 (table base = BASER[47:16] | BASER[15:12] << 48) and
    §1.2 (DTE ITT_addr holds ITT bits [51:8]): with RAM at 2^48 the tables
    are found through BASER bits [15:12], the DTE of device 2 is
    0x8000200000100007 (ITT 2^48 + 0x800000), and a reset + restore gives
    back the same device and collection."""
    vm = its_vm(backend, ram_base=1 << 48)
    g = Guest(vm, enable_its=False)
    D, C = g.lay.device_table, g.lay.collection_table

    def enc(a: int) -> int:
        return (a & 0x0000FFFFFFFF0000) | ((a >> 48) << 12)
    guest_its_write(vm, BASER0, VALID | enc(D))
    guest_its_write(vm, BASER1, VALID | enc(C))
    assert its_reg(vm, BASER0) == 0x9907000000501200
    guest_its_write(vm, R.GITS_CTLR, 1, 4)
    set_prop(vm, g.lay, 8195)
    g.send(mapd(2, 8, g.itt(0)), mapc(3, 3), mapti(2, 20, 8195, 3), int_(2, 20))
    assert acks(vm) == [[], [], [], [8195]]
    vm.its.save_tables()
    assert g.itt(0) == (1 << 48) + 0x80_0000
    assert read64(vm, D + 16) == 0x8000200000100007
    assert read64(vm, C) == 0x8000000000030003 and read64(vm, C + 8) == 0
    assert read64(vm, g.itt(0) + 160) == 0x20030003
    saved = vm.its.state()
    reset_and_restore(vm)
    assert vm.its.state()["devices"] == saved["devices"]
    assert vm.its.state()["collections"] == saved["collections"]


def test_reset_keeps_lpi_held_by_an_ap_list(backend):
    """its-facts-B §3.7 / its-facts-A §3.4: CTRL_RESET frees the ITEs, but an
    LPI pending on a vCPU's ap_list keeps the list's reference: it survives
    (pending, its target kept) and is delivered once, after which it is
    gone."""
    vm = its_vm(backend)
    g = setup1(vm)
    g.send(int_(2, 20))
    vm.its.reset()
    assert devices(vm) == {} and collections(vm) == []
    assert lpis(vm) == {8195: {"enabled": True, "pending_latch": True, "active": False, "priority": 0xA0,
                               "target_vcpu": 3, "ite_count": 0}}
    assert acks(vm) == [[], [], [], [8195]]
    assert lpis(vm) == {}


def test_part_load_state_checks_links_to_the_lpis(backend):
    """The ITS part's state loaded alone (vm.its.load_state) is checked
    against the LPIs the vGICv3 part holds now, as vm.load_state checks the
    two together: an ITE naming an LPI the distributor does not hold (KVM's
    ITE always holds a reference to its vgic_irq, its-facts-A §3.4) is a
    vgic.StateError and changes nothing; the same state on its own VM loads."""
    vm = its_vm(backend)
    g = Guest(vm)
    set_prop(vm, g.lay, 8195)
    g.send(mapd(2, 8, g.itt(0)), mapc(3, 3), mapti(2, 20, 8195, 3))
    st = vm.its.state()
    other = its_vm(backend)
    before = other.state()
    with pytest.raises(vgic.StateError, match="8195"):
        other.its.load_state(st)
    assert other.state() == before
    vm.its.load_state(st)
    assert vm.its.state() == st
