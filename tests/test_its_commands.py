"""The emulated ITS (KVM vgic-its.c) and LPIs, on both backends.

Every expected value comes from the fact sheets docs/its-facts-A.md
(GITS registers §1, commands §2, LPIs and the redistributor §3,
KVM_SIGNAL_MSI §4, the virtual CPU interface §5) and its-facts-B.md (the
newest KVM's BASER rule §3.6, KVM_SIGNAL_MSI §3.9), which restate Linux's
vgic-its.c, vgic-mmio-v3.c, vgic-v3.c and vgic.c -- never from running the
model.  Each test runs on the Cython core ("core") and on the pure-Python
twin ("pure"); the last section checks that both give the same
``vm.state()`` after every step of a few scripted scenarios.

KVM's internal command results (the E_ITS_* codes, which no register
reports) are asserted through ``vm.its.its.command(dw0, dw1, dw2, dw3)``;
observable effects through the command queue (``Guest.send``), delivery to
the guest (``acknowledge``/``drain``), ``vm.irq``, ``vm.state()`` and guest
memory.
"""
from __future__ import annotations

import errno
import sys
from pathlib import Path

import numpy as np
import pytest

import vgic
from vgic import regmap as R

sys.path.insert(0, str(Path(__file__).resolve().parent))
from its_helpers import (
    VALID,
    Guest,
    acknowledge,
    clear,
    discard,
    drain,
    int_,
    inv,
    invall,
    its_vm,
    layout,
    mapc,
    mapd,
    mapi,
    mapti,
    movall,
    movi,
    pend_bit,
    rd_base,
    read64,
    set_pend_bit,
    set_prop,
    sync,
    write64,
)

NOT_MAPPED = 0xFFFFFFFF         # COLLECTION_NOT_MAPPED (its-facts-B §1.1)
POISON = 0xDEADBEEFDEADBEEF
ENODEV = -errno.ENODEV
EBUSY = -errno.EBUSY
SPURIOUS = 1023


# ICH_LR<n>_EL2 fields (IHI 0069 §12.4.6)
LR_STATE_SHIFT = 62
LR_PENDING, LR_ACTIVE = 1, 2
LR_GROUP = 1 << 60


@pytest.fixture(params=["core", "pure"])
def backend(request):
    """Both implementations; the core only where it is built."""
    if request.param == "core":
        pytest.importorskip("vgic._core.its")
    return request.param


# ------------------------------------------------------------------ helpers
def setup(backend, nr_vcpus=4, **kw):
    """A VM with an ITS programmed as Linux does (its_helpers.Guest)."""
    vm = its_vm(backend, nr_vcpus=nr_vcpus)
    return vm, Guest(vm, **kw)


def cmd(vm, c):
    """Run one command directly: KVM's internal result."""
    return vm.its.its.command(*c)


def its_state(vm):
    return vm.state()["its"]


def lpi_table(vm):
    """{INTID: {field: value}} of the LPIs that exist."""
    t = vm.state()["vgic_v3"]["lpi"]
    return {i: {k: t[k][n] for k in t} for n, i in enumerate(t["intid"])}


def lpi_exists(vm, intid):
    return intid in lpi_table(vm)


def devices(vm):
    """{DeviceID: {EventID: (pINTID, ICID, has collection)}}."""
    out = {}
    for d in its_state(vm)["devices"]:
        ites = d["ites"]
        out[d["DeviceID"]] = {e: (p, c, h) for e, p, c, h in
                              zip(ites["EventID"], ites["pINTID"], ites["ICID"], ites["collection"])}
    return out


def collections(vm):
    return {c["ICID"]: c["target"] for c in its_state(vm)["collections"]}


def gits(vm, offset, size=8):
    return vm.mmio_read(vm.its_base + offset, size)


def gits_w(vm, offset, value, size=8):
    vm.mmio_write(vm.its_base + offset, size, value)


def gicr(vm, v, offset, size=4):
    return vm.mmio_read(rd_base(vm, v) + offset, size, v)


def gicr_w(vm, v, offset, value, size=4):
    vm.mmio_write(rd_base(vm, v) + offset, size, value, v)


def disable_lpis(vm, v):
    gicr_w(vm, v, R.GICR_CTLR, 0)


def enable_lpis(vm, v):
    gicr_w(vm, v, R.GICR_CTLR, R.GICR_CTLR_ENABLE_LPIS)


def its_setup1(vm, g):
    """kvm-unit-tests its_setup1 (its-facts-B §5.1): devices 2 and 7 (8
    EventID bits), collection 3 -> vCPU 3, 2 -> vCPU 2, LPI 8195 = (2, 20)
    on collection 3, LPI 8196 = (7, 255) on collection 2, both 0xA3."""
    set_prop(vm, g.lay, 8195)
    set_prop(vm, g.lay, 8196)
    g.send(mapd(2, 8, g.itt(0)), mapd(7, 8, g.itt(1)), mapc(3, 3), mapc(2, 2), invall(2), invall(3),
           mapti(2, 20, 8195, 3), mapti(7, 255, 8196, 2))


def program_tables(vm, lay_cmdq, lay_dev, lay_coll, cbaser_size=15):
    """Valid CBASER, BASER0 and BASER1 (one 64 KiB page each), ITS still disabled."""
    gits_w(vm, R.GITS_CBASER, VALID | lay_cmdq | cbaser_size)
    gits_w(vm, R.GITS_BASER, VALID | lay_dev)
    gits_w(vm, R.GITS_BASER + 8, VALID | lay_coll)


def ram_end(vm):
    return vm.ram_base + int(vm.memory.size)


def plain(x):
    """vm.state() with numpy values turned into Python ones (for ==)."""
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return plain(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    return x


# ======================================================================
# 1. GITS registers (its-facts-A §1)
# ======================================================================
def test_ctlr_reset_value(backend):
    """its-facts-A §1.3 GITS_CTLR (vgic_mmio_read_its_ctlr): reset value
    0x80000000 -- Quiescent (CREADR == CWRITER) even while disabled,
    Enabled 0, every other bit 0."""
    vm = its_vm(backend)
    assert gits(vm, R.GITS_CTLR, 4) == 0x80000000


@pytest.mark.parametrize("missing", ["CBASER", "BASER0", "BASER1"])
def test_ctlr_enable_refused_without_valid_tables(backend, missing):
    """its-facts-A §1.3 GITS_CTLR (vgic_mmio_write_its_ctlr): enabling a
    disabled ITS while GITS_CBASER, GITS_BASER0 or GITS_BASER1 has Valid = 0
    ignores the whole write -- the ITS stays disabled and the queued
    commands do not run (§6 item 6: CTLR reads 0 with commands queued)."""
    vm = its_vm(backend)
    g = Guest(vm, enable_its=False)
    if missing == "CBASER":
        gits_w(vm, R.GITS_CBASER, g.lay.cmdq | 15)          # same queue, Valid = 0
    else:
        n = 0 if missing == "BASER0" else 1
        gits_w(vm, R.GITS_BASER + 8 * n, gits(vm, R.GITS_BASER + 8 * n) & ~VALID)
    g.send(mapd(2, 8, g.itt(0)), mapc(1, 1))               # queued: ITS disabled
    assert gits(vm, R.GITS_CWRITER) == 0x40 and gits(vm, R.GITS_CREADR) == 0
    gits_w(vm, R.GITS_CTLR, R.GITS_CTLR_ENABLED, 4)
    assert gits(vm, R.GITS_CTLR, 4) == 0                   # disabled, not quiescent
    assert gits(vm, R.GITS_CREADR) == 0
    assert its_state(vm)["devices"] == [] and its_state(vm)["collections"] == []
    if missing != "CBASER":
        # with the table made valid the same write is accepted and runs the queue
        n = 0 if missing == "BASER0" else 1
        gits_w(vm, R.GITS_BASER + 8 * n, gits(vm, R.GITS_BASER + 8 * n) | VALID)
        gits_w(vm, R.GITS_CTLR, R.GITS_CTLR_ENABLED, 4)
        assert gits(vm, R.GITS_CTLR, 4) == 0x80000001
        assert gits(vm, R.GITS_CREADR) == 0x40
        assert list(devices(vm)) == [2] and collections(vm) == {1: 1}


def test_ctlr_quiescent_and_enable_bits(backend):
    """its-facts-A §1.3 GITS_CTLR: Quiescent (bit 31) = CREADR == CWRITER
    whether or not enabled; only bit 0 of a write matters; enabled and idle
    reads 0x80000001; commands written while disabled wait (CTLR 0) and run
    when GITS_CTLR enables the ITS (§2.1)."""
    vm = its_vm(backend)
    g = Guest(vm, enable_its=False)
    assert gits(vm, R.GITS_CTLR, 4) == 0x80000000
    g.send(mapd(2, 8, g.itt(0)))
    assert gits(vm, R.GITS_CTLR, 4) == 0x00000000
    gits_w(vm, R.GITS_CTLR, 0xFFFFFFFF, 4)                 # every bit written: only Enabled sticks
    assert gits(vm, R.GITS_CTLR, 4) == 0x80000001
    assert gits(vm, R.GITS_CREADR) == 0x20 and list(devices(vm)) == [2]
    gits_w(vm, R.GITS_CTLR, R.GITS_CTLR_ENABLED, 4)        # already enabled: no re-check
    assert gits(vm, R.GITS_CTLR, 4) == 0x80000001


def test_ctlr_disable_keeps_tables_and_stops_processing(backend):
    """its-facts-A §1.3 GITS_CTLR: disabling frees no device, collection or
    LPI and leaves CREADR/CWRITER alone; a disabled ITS runs no command
    (§2.1) and refuses MSIs with -EBUSY (§4.1 step 3c); re-enabling runs
    what was queued meanwhile."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    before = its_state(vm)
    gits_w(vm, R.GITS_CTLR, 0, 4)
    assert gits(vm, R.GITS_CTLR, 4) == 0x80000000
    after = its_state(vm)
    assert after["devices"] == before["devices"] and after["collections"] == before["collections"]
    assert after["GITS_CREADR"] == before["GITS_CREADR"] == 0x100
    assert lpi_exists(vm, 8195) and lpi_exists(vm, 8196)
    with pytest.raises(vgic.KvmError) as e:
        vm.signal_msi(2, 20)
    assert e.value.errno == errno.EBUSY
    g.send(int_(2, 20))
    assert gits(vm, R.GITS_CREADR) == 0x100 and gits(vm, R.GITS_CWRITER) == 0x120
    assert not vm.irq(8195).pending_latch
    gits_w(vm, R.GITS_CTLR, 1, 4)
    assert gits(vm, R.GITS_CREADR) == 0x120
    assert vm.irq(8195).pending_latch
    assert drain(vm, 3) == [8195]


def test_iidr_value_and_guest_writes_ignored(backend):
    """its-facts-A §1.3 GITS_IIDR: 0x4B00043B (ProductID 0x4B, Revision 0,
    Implementer 0x43B); guest writes are ignored (kvm-unit-tests
    its-introspection, its-facts-B §5.2)."""
    vm = its_vm(backend)
    for v in (0xFFFFFFFF, 0xA5A55A5A, 0):
        gits_w(vm, R.GITS_IIDR, v, 4)
        assert gits(vm, R.GITS_IIDR, 4) == 0x4B00043B


def test_typer_whole_halves_and_read_only(backend):
    """its-facts-A §1.3 GITS_TYPER = 0x1EF71 (PLPIS, ITT entry 8 bytes, 16
    EventID and DeviceID bits, PTA 0, CIL 0): low word 0x0001EF71, high word
    0 (32-bit read at 0xC is allowed, §1.2); guest writes ignored."""
    vm = its_vm(backend)
    assert gits(vm, R.GITS_TYPER) == 0x1EF71
    assert gits(vm, R.GITS_TYPER, 4) == 0x0001EF71
    assert gits(vm, R.GITS_TYPER + 4, 4) == 0
    gits_w(vm, R.GITS_TYPER, 0xFFFFFFFFFFFFFFFF)
    gits_w(vm, R.GITS_TYPER, 0, 4)
    gits_w(vm, R.GITS_TYPER + 4, 0xFFFFFFFF, 4)
    assert gits(vm, R.GITS_TYPER) == 0x1EF71
    t = gits(vm, R.GITS_TYPER)
    assert t & 1 == 1 and (t >> 4) & 0xF == 7 and (t >> 8) & 0x1F == 15 and (t >> 13) & 0x1F == 15


def test_cbaser_sanitising(backend):
    """its-facts-A §1.3 GITS_CBASER: worked example 0x8000000040001000 ->
    0x9800000040000000 (InnerCache 0 -> RaWb, bits [15:12] cleared); Outer
    shareable -> Inner, OuterCache 2..7 -> 0, InnerCache 2..7 kept, and the
    RES0 bits (62, [58:56], 52, [9:8]) stored as written."""
    vm = its_vm(backend)
    gits_w(vm, R.GITS_CBASER, 0x8000000040001000)
    assert gits(vm, R.GITS_CBASER) == 0x9800000040000000
    value = (VALID | (1 << 62) | (5 << 59) | (2 << 56) | (6 << 53) | (1 << 52) | 0x40000000 | 0xF000
             | (2 << 10) | (3 << 8) | 0x0F)
    want = VALID | (1 << 62) | (5 << 59) | (2 << 56) | (0 << 53) | (1 << 52) | 0x40000000 | (1 << 10) | (3 << 8) | 0x0F
    gits_w(vm, R.GITS_CBASER, value)
    assert gits(vm, R.GITS_CBASER) == want
    gits_w(vm, R.GITS_CBASER, (1 << 59) | (1 << 53) | (3 << 10))   # nC inner -> RaWb; outer nC kept
    assert gits(vm, R.GITS_CBASER) == (3 << 59) | (1 << 53) | (3 << 10)


def test_cbaser_resets_creadr_cwriter_and_read_only_while_enabled(backend):
    """its-facts-A §1.3 GITS_CBASER: a write while disabled (either 32-bit
    half too, §1.2) sets CREADR = CWRITER = 0, dropping queued commands
    (§6 item 8); while enabled the write is ignored and CREADR/CWRITER kept."""
    vm, g = setup(backend)
    g.send(mapd(2, 8, g.itt(0)), mapc(1, 1))
    assert gits(vm, R.GITS_CREADR) == gits(vm, R.GITS_CWRITER) == 0x40
    cb = gits(vm, R.GITS_CBASER)
    gits_w(vm, R.GITS_CBASER, VALID | (g.lay.cmdq + 0x10000) | 3)     # enabled: ignored
    assert gits(vm, R.GITS_CBASER) == cb
    assert gits(vm, R.GITS_CREADR) == gits(vm, R.GITS_CWRITER) == 0x40
    gits_w(vm, R.GITS_CTLR, 0, 4)
    g.cwriter = 0x40
    g.send(mapc(2, 2))                                     # queued, not run
    assert gits(vm, R.GITS_CWRITER) == 0x60 and gits(vm, R.GITS_CREADR) == 0x40
    gits_w(vm, R.GITS_CBASER + 4, cb >> 32, 4)            # the upper half only, same value
    assert gits(vm, R.GITS_CBASER) == cb
    assert gits(vm, R.GITS_CREADR) == 0 and gits(vm, R.GITS_CWRITER) == 0
    gits_w(vm, R.GITS_CTLR, 1, 4)
    assert collections(vm) == {1: 1}                        # the queued MAPC was lost


def test_cwriter_mask_and_beyond_queue_ignored(backend):
    """its-facts-A §1.3 GITS_CWRITER: only bits [19:5] are kept (Retry bit
    0 dropped); a value >= the queue size ((Size + 1) * 4 KiB, whatever
    CBASER.Valid says) leaves CWRITER unchanged; a 32-bit write of the upper
    half changes nothing."""
    vm = its_vm(backend)
    g = Guest(vm, enable_its=False)
    gits_w(vm, R.GITS_CBASER, VALID | g.lay.cmdq | 0)     # 4 KiB queue: 128 commands
    gits_w(vm, R.GITS_CWRITER, 0x41)
    assert gits(vm, R.GITS_CWRITER) == 0x40
    gits_w(vm, R.GITS_CWRITER, 0xFFF)
    assert gits(vm, R.GITS_CWRITER) == 0xFE0
    gits_w(vm, R.GITS_CWRITER, 0x1000)                    # beyond the queue
    assert gits(vm, R.GITS_CWRITER) == 0xFE0
    gits_w(vm, R.GITS_CWRITER, 0xFFFFFFFFFFFFFFFF)        # masked to 0xFFFE0: beyond
    assert gits(vm, R.GITS_CWRITER) == 0xFE0
    gits_w(vm, R.GITS_CWRITER + 4, 0xFFFFFFFF, 4)
    assert gits(vm, R.GITS_CWRITER) == 0xFE0
    gits_w(vm, R.GITS_CWRITER, 0x1020, 4)                 # low half, beyond
    assert gits(vm, R.GITS_CWRITER) == 0xFE0
    gits_w(vm, R.GITS_CWRITER, 0x60, 4)
    assert gits(vm, R.GITS_CWRITER) == 0x60
    assert gits(vm, R.GITS_CREADR) == 0                   # disabled: nothing ran
    gits_w(vm, R.GITS_CBASER, g.lay.cmdq | 1)              # Valid = 0: Size still counts
    gits_w(vm, R.GITS_CWRITER, 0x1FE0)
    assert gits(vm, R.GITS_CWRITER) == 0x1FE0
    gits_w(vm, R.GITS_CWRITER, 0x2000)
    assert gits(vm, R.GITS_CWRITER) == 0x1FE0


def test_creadr_guest_write_ignored(backend):
    """its-facts-A §1.3 GITS_CREADR: guest writes are ignored (only
    userspace may write it); Stalled (bit 0) always reads 0."""
    vm, g = setup(backend)
    g.send(sync(), sync())
    gits_w(vm, R.GITS_CTLR, 0, 4)
    for size, off in ((8, 0), (4, 0), (4, 4)):
        gits_w(vm, R.GITS_CREADR + off, 0x1001, size)
        assert gits(vm, R.GITS_CREADR) == 0x40


def test_baser_sanitising(backend):
    """its-facts-A §1.3 GITS_BASER: worked example 0x8000000040000000 ->
    0x9907000040000200 for BASER0 (Type 1, Entry_Size 7, InnerCache RaWb,
    64 KiB pages); BASER1 gets Type 4 and loses Indirect (bit 62), BASER0
    keeps it; Page_Size is forced to 64K and Entry_Size/Type are read-only."""
    vm = its_vm(backend)
    gits_w(vm, R.GITS_BASER, 0x8000000040000000)
    assert gits(vm, R.GITS_BASER) == 0x9907000040000200
    gits_w(vm, R.GITS_BASER + 8, 0x8000000040000000)
    assert gits(vm, R.GITS_BASER + 8) == 0x9C07000040000200
    junk = VALID | (1 << 62) | (7 << 56) | (0x1F << 48) | (2 << 53) | 0x40010000 | (2 << 10) | (1 << 8) | 3
    gits_w(vm, R.GITS_BASER, junk)
    assert gits(vm, R.GITS_BASER) == VALID | (1 << 62) | (3 << 59) | (1 << 56) | (7 << 48) | 0x40010000 \
        | (1 << 10) | (2 << 8) | 3
    gits_w(vm, R.GITS_BASER + 8, junk)
    assert gits(vm, R.GITS_BASER + 8) == VALID | (3 << 59) | (4 << 56) | (7 << 48) | 0x40010000 \
        | (1 << 10) | (2 << 8) | 3


def test_baser_initial_values_and_baser2_7_raz_wi(backend):
    """its-facts-A §1.3/§1.5: BASER0 = 0x1907000000000600, BASER1 =
    0x1C07000000000600 at creation; GITS_BASER2..7 read 0 and ignore
    writes (64-bit or 32-bit)."""
    vm = its_vm(backend)
    assert gits(vm, R.GITS_BASER) == 0x1907000000000600
    assert gits(vm, R.GITS_BASER + 8) == 0x1C07000000000600
    for n in range(2, 8):
        gits_w(vm, R.GITS_BASER + 8 * n, 0x8000000040000000)
        gits_w(vm, R.GITS_BASER + 8 * n + 4, 0x80000000, 4)
        assert gits(vm, R.GITS_BASER + 8 * n) == 0
        assert gits(vm, R.GITS_BASER + 8 * n + 4, 4) == 0
    assert gits(vm, R.GITS_BASER) == 0x1907000000000600
    assert gits(vm, R.GITS_BASER + 8) == 0x1C07000000000600


def test_baser_ignored_while_enabled(backend):
    """its-facts-A §1.3 GITS_BASER rule 1: while the ITS is enabled a BASER
    write is ignored completely (and frees nothing)."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    b0, b1 = gits(vm, R.GITS_BASER), gits(vm, R.GITS_BASER + 8)
    gits_w(vm, R.GITS_BASER, 0)
    gits_w(vm, R.GITS_BASER + 8 + 4, 0, 4)
    assert gits(vm, R.GITS_BASER) == b0 and gits(vm, R.GITS_BASER + 8) == b1
    assert sorted(devices(vm)) == [2, 7] and collections(vm) == {3: 3, 2: 2}


def test_baser0_change_frees_every_device(backend):
    """its-facts-B §3.6 (newest KVM): a BASER0 write whose stored value
    differs from the old one frees every device with its ITEs (the LPIs
    they alone held are freed); the same value written again frees
    nothing; collections are kept."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    gits_w(vm, R.GITS_CTLR, 0, 4)
    b0 = gits(vm, R.GITS_BASER)
    gits_w(vm, R.GITS_BASER, b0)                          # unchanged
    assert sorted(devices(vm)) == [2, 7]
    gits_w(vm, R.GITS_BASER, b0 | 1)                      # Size 0 -> 1, still Valid
    assert devices(vm) == {}
    assert not lpi_exists(vm, 8195) and not lpi_exists(vm, 8196)
    assert collections(vm) == {3: 3, 2: 2}
    gits_w(vm, R.GITS_CTLR, 1, 4)
    assert vm.signal_msi(2, 20) is False


def test_baser1_change_frees_every_collection(backend):
    """its-facts-B §3.6 (newest KVM): a changed BASER1 frees every
    collection; the ITEs lose their collection (has_coll False) and their
    LPIs keep their target (vgic_its_free_collection_list, its-facts-A §1.3
    rule 8); devices are kept; MSIs are then blocked (0)."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    gits_w(vm, R.GITS_CTLR, 0, 4)
    b1 = gits(vm, R.GITS_BASER + 8)
    gits_w(vm, R.GITS_BASER + 8, b1)
    assert collections(vm) == {3: 3, 2: 2}
    gits_w(vm, R.GITS_BASER + 8, b1 & ~VALID)
    assert collections(vm) == {}
    assert devices(vm) == {2: {20: (8195, 3, False)}, 7: {255: (8196, 2, False)}}
    assert vm.irq(8195).target_vcpu == 3 and vm.irq(8196).target_vcpu == 2
    gits_w(vm, R.GITS_BASER + 8, b1)
    gits_w(vm, R.GITS_CTLR, 1, 4)
    assert vm.signal_msi(2, 20) is False


def test_id_registers(backend):
    """its-facts-A §1.3 ID registers (vgic_mmio_read_its_idregs): PIDR4
    0x40, PIDR0..2 0x92/0xB4/0x3B, CIDR0..3 0x0D/0xF0/0x05/0xB1, the rest 0;
    writes ignored."""
    vm = its_vm(backend)
    want = {0xFFD0: 0x40, 0xFFD4: 0, 0xFFD8: 0, 0xFFDC: 0, 0xFFE0: 0x92, 0xFFE4: 0xB4, 0xFFE8: 0x3B,
            0xFFEC: 0, 0xFFF0: 0x0D, 0xFFF4: 0xF0, 0xFFF8: 0x05, 0xFFFC: 0xB1}
    for off, v in want.items():
        gits_w(vm, off, 0xFFFFFFFF, 4)
        assert gits(vm, off, 4) == v, hex(off)


def test_translater_frame_and_holes_raz_wi(backend):
    """its-facts-A §1.1/§1.3: GITS_TRANSLATER (0x10040) has no region: a
    guest write is dropped (no MSI) and a read returns 0; GITS_MPIDR (0x18)
    and the gaps between registers are RAZ/WI too."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    before = plain(vm.state())
    for off in (R.GITS_TRANSLATER, 0x18, 0x10, 0x98, 0x140):
        vm.mmio_write(vm.its_base + off, 4, 20)
        assert vm.mmio_read(vm.its_base + off, 4) == 0
    assert plain(vm.state()) == before
    assert not vm.irq(8195).pending_latch


def test_access_widths(backend):
    """its-facts-A §1.2 (check_region): an access of a size the region does
    not allow, or misaligned, is RAZ/WI -- 8/16-bit accesses to any ITS
    register, a 64-bit access to GITS_CTLR, a 32-bit access not 4-byte
    aligned; a 32-bit access to either half of a 64-bit register works."""
    vm = its_vm(backend)
    g = Guest(vm, enable_its=False)
    cb = gits(vm, R.GITS_CBASER)
    assert cb >> 56 == 0x98
    assert gits(vm, R.GITS_CBASER + 7, 1) == 0
    assert gits(vm, R.GITS_CBASER + 6, 2) == 0
    assert gits(vm, R.GITS_CTLR + 3, 1) == 0                # CTLR byte 3 would be 0x80
    assert gits(vm, R.GITS_IIDR, 2) == 0
    assert gits(vm, R.GITS_CTLR, 8) == 0
    assert gits(vm, R.GITS_CBASER + 4, 4) == cb >> 32
    assert gits(vm, R.GITS_CBASER + 2, 4) == 0
    gits_w(vm, R.GITS_CTLR, 1, 1)
    gits_w(vm, R.GITS_CTLR, 1, 2)
    gits_w(vm, R.GITS_CTLR, 1, 8)
    assert gits(vm, R.GITS_CTLR, 4) == 0x80000000           # still disabled
    gits_w(vm, R.GITS_CBASER, 0, 1)
    gits_w(vm, R.GITS_CBASER, 0, 2)
    assert gits(vm, R.GITS_CBASER) == cb
    g.send(mapd(2, 8, g.itt(0)))
    gits_w(vm, R.GITS_CWRITER, 0, 2)                      # would move CWRITER back
    assert gits(vm, R.GITS_CWRITER) == 0x20
    gits_w(vm, R.GITS_CTLR, 1, 4)
    assert gits(vm, R.GITS_CTLR, 4) == 0x80000001


# ======================================================================
# 2. Commands (its-facts-A §2)
# ======================================================================
def test_mapd_device_oor(backend):
    """its-facts-A §2.3/§2.4 MAPD (vgic_its_check_id): with a flat one-page
    device table (64 KiB / 8 = 8192 entries) DeviceID >= 8192 is
    MAPD_DEVICE_OOR and nothing changes; 8191 maps."""
    vm, g = setup(backend)
    assert cmd(vm, mapd(8192, 8, g.itt(0))) == R.E_ITS_MAPD_DEVICE_OOR
    assert cmd(vm, mapd(8192, 8, g.itt(0), valid=False)) == R.E_ITS_MAPD_DEVICE_OOR
    assert devices(vm) == {}
    assert cmd(vm, mapd(8191, 8, g.itt(0))) == 0
    assert list(devices(vm)) == [8191]


def test_mapd_deviceid_above_16_bits(backend):
    """its-facts-A §2.3 step 1: a Device table accepts DeviceID <= 0xFFFF
    only (16 Devbits), even when the table is big enough: 0x10000 is
    MAPD_DEVICE_OOR with a 16-page table (131072 entries)."""
    vm, g = setup(backend)
    gits_w(vm, R.GITS_CTLR, 0, 4)
    gits_w(vm, R.GITS_BASER, VALID | g.lay.device_table | 15)
    gits_w(vm, R.GITS_CTLR, 1, 4)
    assert cmd(vm, mapd(0xFFFF, 8, g.itt(0))) == 0
    assert cmd(vm, mapd(0x10000, 8, g.itt(0))) == R.E_ITS_MAPD_DEVICE_OOR
    assert cmd(vm, mapd(0x1FFFF, 8, g.itt(0))) == R.E_ITS_MAPD_DEVICE_OOR
    assert list(devices(vm)) == [0xFFFF]


def test_table_slots_outside_ram(backend):
    """its-facts-A §2.3 step 5: vgic_its_check_id succeeds only if the entry
    lies in guest RAM -- a device or collection table outside RAM makes
    MAPD MAPD_DEVICE_OOR and MAPC MAPC_COLLECTION_OOR (the BASER Valid bit
    is not what is checked)."""
    vm, g = setup(backend)
    gits_w(vm, R.GITS_CTLR, 0, 4)
    gits_w(vm, R.GITS_BASER, VALID | 0x1000_0000)          # below RAM
    gits_w(vm, R.GITS_BASER + 8, VALID | 0x1001_0000)
    gits_w(vm, R.GITS_CTLR, 1, 4)
    assert cmd(vm, mapd(0, 8, g.itt(0))) == R.E_ITS_MAPD_DEVICE_OOR
    assert cmd(vm, mapc(0, 0)) == R.E_ITS_MAPC_COLLECTION_OOR
    assert devices(vm) == {} and collections(vm) == {}


def test_mapd_two_level_device_table(backend):
    """its-facts-A §2.3 step 4: with BASER0.Indirect the L1 entry for
    DeviceID / 8192 is read from guest memory; an invalid one (bit 63 clear)
    is MAPD_DEVICE_OOR; a valid one names a 64 KiB L2 page (bits [15:0]
    ignored) holding the DTE at (DeviceID % 8192) * 8, which MAPD V = 0
    zeroes."""
    vm, g = setup(backend)
    gits_w(vm, R.GITS_CTLR, 0, 4)
    gits_w(vm, R.GITS_BASER, VALID | (1 << 62) | g.lay.device_table)
    gits_w(vm, R.GITS_CTLR, 1, 4)
    l2 = vm.ram_base + 0x70_0000
    write64(vm, g.lay.device_table + 8, VALID | l2 | 0xFFFF)
    write64(vm, l2 + 5 * 8, POISON)
    write64(vm, l2 + 6 * 8, POISON)
    assert cmd(vm, mapd(5, 8, g.itt(0))) == R.E_ITS_MAPD_DEVICE_OOR          # L1[0] invalid
    assert cmd(vm, mapd(8192 + 5, 8, g.itt(0))) == 0
    assert cmd(vm, mapd(2 * 8192, 8, g.itt(0))) == R.E_ITS_MAPD_DEVICE_OOR   # L1[2] invalid
    assert list(devices(vm)) == [8197]
    assert read64(vm, l2 + 40) == POISON
    assert cmd(vm, mapd(8192 + 5, 8, 0, valid=False)) == 0
    assert read64(vm, l2 + 40) == 0 and read64(vm, l2 + 48) == POISON
    assert devices(vm) == {}


def test_mapd_itt_size(backend):
    """its-facts-A §2.4 MAPD step 2: with V = 1 a Size field >= 16 (more than
    16 EventID bits) is MAPD_ITTSIZE_OOR and nothing changes; Size 15 maps
    16 bits; with V = 0 the size is not checked."""
    vm, g = setup(backend)
    assert cmd(vm, mapd(3, 17, g.itt(0))) == R.E_ITS_MAPD_ITTSIZE_OOR
    assert cmd(vm, mapd(3, 32, g.itt(0))) == R.E_ITS_MAPD_ITTSIZE_OOR
    assert devices(vm) == {}
    assert cmd(vm, mapd(3, 16, g.itt(0))) == 0
    assert its_state(vm)["devices"][0]["num_eventid_bits"] == 16
    assert cmd(vm, mapd(3, 32, g.itt(0), valid=False)) == 0
    assert devices(vm) == {}


def test_mapd_v0_zeroes_dte_and_v1_does_not_write(backend):
    """its-facts-A §2.4 MAPD steps 4-5 (Linux 6.13, "Clear DTE when MAPD
    unmaps a device"): V = 0 writes 8 zero bytes at the DTE slot, even when
    no device was mapped; V = 1 does not write the DTE."""
    vm, g = setup(backend)
    dt = g.lay.device_table
    for n in (4, 5, 6):
        write64(vm, dt + 8 * n, POISON)
    g.send(mapd(5, 8, g.itt(0)))
    assert read64(vm, dt + 40) == POISON
    assert list(devices(vm)) == [5]
    g.send(mapd(5, 8, g.itt(0), valid=False))
    assert read64(vm, dt + 40) == 0
    assert read64(vm, dt + 32) == POISON and read64(vm, dt + 48) == POISON
    assert devices(vm) == {}
    g.send(mapd(4, 8, 0, valid=False))                    # no such device: still zeroed
    assert read64(vm, dt + 32) == 0 and read64(vm, dt + 48) == POISON


def test_remapd_frees_old_ites(backend):
    """its-facts-A §2.4 MAPD step 3: MAPD of a mapped device frees it with
    all its ITEs (each LPI reference dropped: an LPI no one else holds is
    freed), and the new device has no ITEs; an LPI another ITE shares
    survives with one reference less."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    g.send(mapti(7, 3, 8195, 2))                          # 8195 shared by (2, 20) and (7, 3)
    assert lpi_table(vm)[8195]["ite_count"] == 2
    g.send(mapd(2, 4, g.itt(2)))
    assert devices(vm)[2] == {}
    assert its_state(vm)["devices"][0]["num_eventid_bits"] == 4
    assert its_state(vm)["devices"][0]["ITT_addr"] == g.itt(2)
    assert lpi_table(vm)[8195]["ite_count"] == 1
    g.send(mapd(7, 8, g.itt(1)))
    assert not lpi_exists(vm, 8195) and not lpi_exists(vm, 8196)
    assert vm.signal_msi(2, 20) is False and vm.signal_msi(7, 255) is False


def test_mapc_procnum_and_collection_oor(backend):
    """its-facts-A §2.4 MAPC V = 1: a target that is no vCPU ID is
    MAPC_PROCNUM_OOR; an ICID beyond the one-page collection table (>= 8192)
    is MAPC_COLLECTION_OOR; nothing is created either way."""
    vm, g = setup(backend)
    assert cmd(vm, mapc(1, 4)) == R.E_ITS_MAPC_PROCNUM_OOR
    assert cmd(vm, mapc(1, 0xFFFFFFFF)) == R.E_ITS_MAPC_PROCNUM_OOR
    assert cmd(vm, mapc(8192, 0)) == R.E_ITS_MAPC_COLLECTION_OOR
    assert cmd(vm, mapc(0xFFFF, 0)) == R.E_ITS_MAPC_COLLECTION_OOR
    assert collections(vm) == {}
    assert cmd(vm, mapc(8191, 3)) == 0
    assert collections(vm) == {8191: 3}


def test_mapc_v0_frees_and_lpis_keep_target(backend):
    """its-facts-A §2.4 MAPC V = 0: the collection is deleted, its ITEs lose
    it, the LPIs keep their target_vcpu; MSIs and INT then resolve to the
    unmapped error (0 / INT_UNMAPPED_INTERRUPT); §6 item 10: an INV of an
    LPI that is already pending still queues it on the old vCPU."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    set_prop(vm, g.lay, 8195, 0xA2)                       # disabled
    g.send(inv(2, 20))
    assert vm.signal_msi(2, 20) is True                   # latched, not delivered
    assert drain(vm, 3) == []
    g.send(mapc(3, 0, valid=False))
    assert collections(vm) == {2: 2}
    assert devices(vm)[2] == {20: (8195, 3, False)}
    assert vm.irq(8195).target_vcpu == 3
    assert vm.signal_msi(2, 20) is False
    assert cmd(vm, int_(2, 20)) == R.E_ITS_INT_UNMAPPED_INTERRUPT
    assert cmd(vm, mapc(3, 0, valid=False)) == 0          # no such collection: fine
    set_prop(vm, g.lay, 8195)
    g.send(inv(2, 20))
    assert [drain(vm, v) for v in range(4)] == [[], [], [], [8195]]


def test_mapc_remap_retargets_lpis(backend):
    """its-facts-A §2.4 MAPC V = 1 on an existing collection: its target
    changes and every ITE's LPI is retargeted (update_affinity); the
    pending state is neither resynced from the new vCPU's pending table
    nor dropped."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    set_prop(vm, g.lay, 8195, 0xA2)
    g.send(inv(2, 20))
    assert vm.signal_msi(2, 20) is True                   # pending, disabled
    set_pend_bit(vm, g.lay, 1, 8196)
    g.send(mapc(3, 1), mapc(2, 1))
    assert collections(vm) == {3: 1, 2: 1}
    assert vm.irq(8195).target_vcpu == 1 and vm.irq(8196).target_vcpu == 1
    assert vm.irq(8195).pending_latch and not vm.irq(8196).pending_latch
    assert pend_bit(vm, g.lay, 1, 8196) == 1
    set_prop(vm, g.lay, 8195)
    g.send(inv(2, 20))
    assert [drain(vm, v) for v in range(4)] == [[], [8195], [], []]
    assert vm.signal_msi(7, 255) is True
    assert [drain(vm, v) for v in range(4)] == [[], [8196], [], []]


def test_mapti_errors(backend):
    """its-facts-A §2.4 MAPTI/MAPI checks in order: unmapped device ->
    MAPTI_UNMAPPED_DEVICE; EventID >= 2^bits, or the ITE slot outside guest
    RAM -> MAPTI_ID_OOR; pINTID < 8192 or >= 2^min(IDbits + 1, 16) ->
    MAPTI_PHYSICALID_OOR (MAPI uses the EventID as pINTID); nothing made."""
    vm, g = setup(backend, id_bits=14)                    # LPIs below 16384
    g.send(mapd(2, 8, g.itt(0)), mapd(3, 16, g.itt(1)), mapd(4, 8, 0x1000_0000), mapc(1, 1))
    assert cmd(vm, mapti(9, 0, 8192, 1)) == R.E_ITS_MAPTI_UNMAPPED_DEVICE
    assert cmd(vm, mapti(2, 256, 8192, 1)) == R.E_ITS_MAPTI_ID_OOR
    assert cmd(vm, mapti(4, 0, 8192, 1)) == R.E_ITS_MAPTI_ID_OOR      # ITT not in RAM
    assert cmd(vm, mapti(2, 0, 8191, 1)) == R.E_ITS_MAPTI_PHYSICALID_OOR
    assert cmd(vm, mapti(2, 0, 16384, 1)) == R.E_ITS_MAPTI_PHYSICALID_OOR
    assert cmd(vm, mapti(2, 0, 0x80000000, 1)) == R.E_ITS_MAPTI_PHYSICALID_OOR
    assert cmd(vm, mapi(3, 100, 1)) == R.E_ITS_MAPTI_PHYSICALID_OOR
    assert cmd(vm, mapi(3, 16384, 1)) == R.E_ITS_MAPTI_PHYSICALID_OOR
    assert devices(vm) == {2: {}, 3: {}, 4: {}} and lpi_table(vm) == {}
    assert cmd(vm, mapti(2, 255, 16383, 1)) == 0
    assert cmd(vm, mapi(3, 8192, 1)) == 0
    assert devices(vm) == {2: {255: (16383, 1, True)}, 3: {8192: (8192, 1, True)}, 4: {}}
    assert sorted(lpi_table(vm)) == [8192, 16383]


def test_mapti_with_initial_propbaser(backend):
    """its-facts-A §1.5 / §2.4 MAPTI step 3: creating the ITS sets
    GICR_PROPBASER to 0x580 (IDbits 0), so pINTIDs must be below 2^1 and
    every MAPTI is MAPTI_PHYSICALID_OOR until the guest programs IDbits."""
    vm = its_vm(backend)
    lay = layout(vm)                                      # tables only: PROPBASER untouched
    program_tables(vm, lay.cmdq, lay.device_table, lay.collection_table)
    gits_w(vm, R.GITS_CTLR, 1, 4)
    assert gicr(vm, 0, R.GICR_PROPBASER, 8) == 0x580
    assert cmd(vm, mapd(2, 8, lay.itt)) == 0
    assert cmd(vm, mapc(0, 0)) == 0
    for lpi in (8192, 8193, 0xFFFF):
        assert cmd(vm, mapti(2, 0, lpi, 0)) == R.E_ITS_MAPTI_PHYSICALID_OOR
    assert devices(vm) == {2: {}} and lpi_table(vm) == {}


def test_mapti_config_byte_outside_ram_makes_nothing(backend):
    """its-facts-A §2.4 MAPTI step 8 / §6 item 2: when the property byte at
    PROPBASER + INTID - 8192 is not guest memory vgic_add_lpi fails: the ITE
    is freed, and so is the collection MAPTI just auto-created -- the
    command is a no-op."""
    vm, g = setup(backend, enable_lpis=False)
    for v in range(4):
        gicr_w(vm, v, R.GICR_PROPBASER, (ram_end(vm) - 0x1000) | 15, 8)
    g.send(mapd(2, 8, g.itt(0)))
    assert cmd(vm, mapti(2, 0, 8192 + 0x1000, 5)) < 0
    assert devices(vm) == {2: {}} and collections(vm) == {} and lpi_table(vm) == {}
    g.send(mapti(2, 0, 8192 + 0xFFF, 5))                  # the last byte in RAM
    assert devices(vm) == {2: {0: (8192 + 0xFFF, 5, True)}} and collections(vm) == {5: NOT_MAPPED}


def test_mapti_existing_ite_is_a_noop(backend):
    """its-facts-A §2.4 MAPTI step 4: an ITE already existing for
    (DeviceID, EventID) makes MAPTI return 0 with no change at all, even with
    another pINTID or an unknown ICID (no collection auto-created); the
    range checks of steps 1-3 still come first."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    set_prop(vm, g.lay, 8200)
    assert cmd(vm, mapti(2, 20, 8200, 7)) == 0
    assert cmd(vm, mapti(2, 20, 8195, 2)) == 0
    assert cmd(vm, mapi(2, 20, 2)) == R.E_ITS_MAPTI_PHYSICALID_OOR     # step 3 comes first
    assert devices(vm)[2] == {20: (8195, 3, True)}
    assert not lpi_exists(vm, 8200)
    assert collections(vm) == {3: 3, 2: 2}
    assert lpi_table(vm)[8195]["ite_count"] == 1


def test_mapti_unknown_icid_creates_unmapped_collection(backend):
    """its-facts-A §2.4 MAPTI step 5 / §6 item 3: an unknown ICID
    auto-creates an unmapped collection (target 0xFFFFFFFF); the LPI has no
    target and no pending sync (its bit is neither read nor cleared), MSIs
    are blocked; a later MAPC V = 1 retargets it without syncing.  An ICID
    beyond the collection table is MAPC_COLLECTION_OOR and nothing is made."""
    vm, g = setup(backend)
    set_prop(vm, g.lay, 8200)
    for v in range(4):
        set_pend_bit(vm, g.lay, v, 8200)
    g.send(mapd(2, 8, g.itt(0)))
    assert cmd(vm, mapti(2, 1, 8201, 8192)) == R.E_ITS_MAPC_COLLECTION_OOR
    assert devices(vm) == {2: {}} and collections(vm) == {}
    g.send(mapti(2, 0, 8200, 7))
    assert collections(vm) == {7: NOT_MAPPED}
    assert devices(vm) == {2: {0: (8200, 7, True)}}
    assert vm.irq(8200).target_vcpu == -1 and not vm.irq(8200).pending_latch
    assert [pend_bit(vm, g.lay, v, 8200) for v in range(4)] == [1, 1, 1, 1]
    assert vm.signal_msi(2, 0) is False
    g.send(mapc(7, 2))
    assert collections(vm) == {7: 2}
    assert vm.irq(8200).target_vcpu == 2 and not vm.irq(8200).pending_latch
    assert pend_bit(vm, g.lay, 2, 8200) == 1
    assert vm.signal_msi(2, 0) is True
    assert [drain(vm, v) for v in range(4)] == [[], [], [8200], []]


def test_mapti_consumes_pending_bit_even_with_lpis_off(backend):
    """its-facts-A §3.3 vgic_v3_lpi_sync_pending_status / §6 item 5: a new
    LPI takes the bit of its target's pending table as its pending state
    and the bit is cleared in guest memory, even with the target's
    EnableLPIs = 0; a later EnableLPIs 0 -> 1 (PTZ = 0) re-reads the now 0
    bit and clears the pending state (its_sync_lpi_pending_table overwrites)."""
    vm, g = setup(backend, enable_lpis=False)
    set_prop(vm, g.lay, 8195)
    set_pend_bit(vm, g.lay, 1, 8195)
    set_pend_bit(vm, g.lay, 1, 8194)                      # same byte, no LPI: untouched
    g.send(mapd(2, 8, g.itt(0)), mapc(1, 1), mapti(2, 20, 8195, 1))
    assert vm.irq(8195).pending_latch
    assert pend_bit(vm, g.lay, 1, 8195) == 0 and pend_bit(vm, g.lay, 1, 8194) == 1
    enable_lpis(vm, 1)
    assert not vm.irq(8195).pending_latch
    assert drain(vm, 1) == []


def test_mapti_pending_lpi_delivered_with_lpis_off(backend):
    """its-facts-A §3.7: EnableLPIs of the target is not part of the oracle,
    so an LPI made pending by the MAPTI pending-table sync is delivered on a
    vCPU whose LPIs are disabled."""
    vm, g = setup(backend, enable_lpis=False)
    set_prop(vm, g.lay, 8195)
    set_pend_bit(vm, g.lay, 1, 8195)
    g.send(mapd(2, 8, g.itt(0)), mapc(1, 1), mapti(2, 20, 8195, 1))
    assert [drain(vm, v) for v in range(4)] == [[], [8195], [], []]


@pytest.mark.parametrize("prop, prio, enabled", [(0xA3, 0xA0, True), (0x53, 0x50, True),
                                                 (0xA2, 0xA0, False), (0xFD, 0xFC, True), (0x00, 0, False)])
def test_mapti_reads_config_byte(backend, prop, prio, enabled):
    """its-facts-A §3.1/§3.2 update_lpi_config at LPI creation: priority =
    byte & 0xFC, enabled = bit 0; bit 1 (Group1) is ignored -- LPIs are
    Group 1, edge."""
    vm, g = setup(backend)
    set_prop(vm, g.lay, 8300, prop)
    g.send(mapd(2, 8, g.itt(0)), mapc(0, 0), mapti(2, 1, 8300, 0))
    st = vm.irq(8300)
    assert (st.priority, st.enabled, st.group, st.config) == (prio, enabled, 1, "edge")


def test_mapti_of_existing_lpi_shares_it(backend):
    """its-facts-A §3.1 / §6 item 4: MAPTI of an INTID that already exists
    shares the vgic_irq: its target, config and pending state are kept (the
    new collection's vCPU and a changed property byte are ignored)."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    set_prop(vm, g.lay, 8195, 0x42)
    set_pend_bit(vm, g.lay, 1, 8195)
    g.send(mapc(1, 1), mapti(7, 0, 8195, 1))
    st = vm.irq(8195)
    assert (st.target_vcpu, st.priority, st.enabled, st.pending_latch) == (3, 0xA0, True, False)
    assert pend_bit(vm, g.lay, 1, 8195) == 1
    assert lpi_table(vm)[8195]["ite_count"] == 2
    assert vm.signal_msi(7, 0) is True
    assert [drain(vm, v) for v in range(4)] == [[], [], [], [8195]]


def test_movi(backend):
    """its-facts-A §2.4 MOVI: no ITE -> MOVI_UNMAPPED_INTERRUPT; the ITE's
    collection unmapped, or the new ICID missing or unmapped ->
    MOVI_UNMAPPED_COLLECTION; otherwise the ITE moves and the LPI's target
    becomes the new collection's vCPU, keeping its pending state."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    assert cmd(vm, movi(2, 21, 2)) == R.E_ITS_MOVI_UNMAPPED_INTERRUPT
    assert cmd(vm, movi(9, 20, 2)) == R.E_ITS_MOVI_UNMAPPED_INTERRUPT
    assert cmd(vm, movi(2, 20, 5)) == R.E_ITS_MOVI_UNMAPPED_COLLECTION
    g.send(mapd(3, 8, g.itt(2)), mapti(3, 0, 8197, 6))    # collection 6 auto-made, unmapped
    assert cmd(vm, movi(2, 20, 6)) == R.E_ITS_MOVI_UNMAPPED_COLLECTION
    assert cmd(vm, movi(3, 0, 2)) == R.E_ITS_MOVI_UNMAPPED_COLLECTION
    assert devices(vm)[2] == {20: (8195, 3, True)} and vm.irq(8195).target_vcpu == 3
    set_prop(vm, g.lay, 8195, 0xA2)
    g.send(inv(2, 20))
    assert vm.signal_msi(2, 20) is True
    g.send(movi(2, 20, 2))
    assert devices(vm)[2] == {20: (8195, 2, True)}
    assert vm.irq(8195).target_vcpu == 2 and vm.irq(8195).pending_latch
    set_prop(vm, g.lay, 8195)
    g.send(inv(2, 20))
    assert [drain(vm, v) for v in range(4)] == [[], [], [8195], []]


def test_discard(backend):
    """its-facts-A §2.4 DISCARD: no ITE, or its collection unmapped ->
    DISCARD_UNMAPPED_INTERRUPT (the ITE stays); otherwise the ITE is freed
    (its LPI with it, if no one else holds it) and the 8-byte ITT slot is
    zeroed in guest memory (Linux 6.13)."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    assert cmd(vm, discard(2, 21)) == R.E_ITS_DISCARD_UNMAPPED_INTERRUPT
    g.send(mapd(3, 8, g.itt(2)), mapti(3, 0, 8197, 6))
    assert cmd(vm, discard(3, 0)) == R.E_ITS_DISCARD_UNMAPPED_INTERRUPT
    assert devices(vm)[3] == {0: (8197, 6, True)}
    slot = g.itt(0) + 20 * 8
    write64(vm, slot, POISON)
    write64(vm, slot + 8, POISON)
    g.send(discard(2, 20))
    assert read64(vm, slot) == 0 and read64(vm, slot + 8) == POISON
    assert devices(vm)[2] == {}
    assert not lpi_exists(vm, 8195)
    assert vm.signal_msi(2, 20) is False


def test_discard_of_pending_lpi_still_delivered_once(backend):
    """its-facts-A §3.4 / §6 item 12: an LPI discarded while pending (on its
    target's ap_list) keeps its pending state and is delivered once; then
    it is freed."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    g.send(int_(2, 20), discard(2, 20))
    assert devices(vm)[2] == {}
    assert vm.irq(8195).pending_latch
    assert [drain(vm, v) for v in range(4)] == [[], [], [], [8195]]
    assert not lpi_exists(vm, 8195)


def test_discard_then_remap_inherits_pending(backend):
    """its-facts-A §3.4 / §6 item 12: a new MAPTI of a discarded INTID that
    is still pending reuses its vgic_irq, pending state and target included."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    g.send(int_(2, 20), discard(2, 20), mapti(7, 1, 8195, 2))
    st = vm.irq(8195)
    assert st.pending_latch and st.target_vcpu == 3
    assert lpi_table(vm)[8195]["ite_count"] == 1
    assert [drain(vm, v) for v in range(4)] == [[], [], [], [8195]]
    assert lpi_exists(vm, 8195)                            # (7, 1) still maps it


def test_clear(backend):
    """its-facts-A §2.4 CLEAR: no ITE -> CLEAR_UNMAPPED_INTERRUPT; otherwise
    pending_latch = 0; the collection is not checked."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    assert cmd(vm, clear(2, 21)) == R.E_ITS_CLEAR_UNMAPPED_INTERRUPT
    set_prop(vm, g.lay, 8195, 0xA2)
    g.send(inv(2, 20), int_(2, 20))
    assert vm.irq(8195).pending_latch
    g.send(clear(2, 20))
    assert not vm.irq(8195).pending_latch
    assert vm.signal_msi(2, 20) is True
    g.send(mapc(3, 0, valid=False))
    assert cmd(vm, clear(2, 20)) == 0
    assert not vm.irq(8195).pending_latch
    set_prop(vm, g.lay, 8195)
    g.send(inv(2, 20))
    assert [drain(vm, v) for v in range(4)] == [[], [], [], []]


def test_inv_rereads_config_only_then(backend):
    """its-facts-A §3.2: changing the property table has no effect until
    INV/INVALL; INV re-reads the byte (priority and enable) and queues a
    pending LPI it enables (kvm-unit-tests its-trigger step 4-5); no ITE ->
    INV_UNMAPPED_INTERRUPT; the collection is not checked."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    assert cmd(vm, inv(2, 21)) == R.E_ITS_INV_UNMAPPED_INTERRUPT
    set_prop(vm, g.lay, 8195, 0x42)
    assert vm.signal_msi(2, 20) is True
    assert (vm.irq(8195).priority, vm.irq(8195).enabled) == (0xA0, True)
    assert acknowledge(vm, 3) == 8195
    g.send(inv(2, 20))
    assert (vm.irq(8195).priority, vm.irq(8195).enabled) == (0x40, False)
    assert vm.signal_msi(2, 20) is True
    assert drain(vm, 3) == []
    set_prop(vm, g.lay, 8195, 0x61)
    assert drain(vm, 3) == []
    g.send(mapc(3, 0, valid=False))
    assert cmd(vm, inv(2, 20)) == 0
    assert (vm.irq(8195).priority, vm.irq(8195).enabled) == (0x60, True)
    assert drain(vm, 3) == [8195]


def test_invall(backend):
    """its-facts-A §2.4 INVALL: a missing or unmapped collection ->
    INVALL_UNMAPPED_COLLECTION; otherwise every LPI of the VM whose target
    is the collection's vCPU re-reads its byte (whatever ITE or collection
    maps it), and no other LPI does."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    assert cmd(vm, invall(9)) == R.E_ITS_INVALL_UNMAPPED_COLLECTION
    g.send(mapti(7, 1, 8197, 6))                           # collection 6: unmapped
    assert cmd(vm, invall(6)) == R.E_ITS_INVALL_UNMAPPED_COLLECTION
    g.send(mapc(5, 3), mapti(7, 2, 8198, 5))               # another collection on vCPU 3
    for lpi in (8195, 8196, 8198):
        set_prop(vm, g.lay, lpi, 0x31)
    g.send(invall(3))
    assert vm.irq(8195).priority == 0x30 and vm.irq(8198).priority == 0x30
    assert vm.irq(8196).priority == 0xA0                   # on vCPU 2
    g.send(invall(2))
    assert vm.irq(8196).priority == 0x30


def test_movall_moves_every_lpi(backend):
    """its-facts-A §2.4 MOVALL (Linux 6.10+, §7 item 1, §6 item 11): every LPI
    of the VM, whatever its target, is retargeted to the second vCPU; the
    ITEs keep their collections; missing vCPU -> MOVALL_PROCNUM_OOR; the same
    vCPU twice is a no-op."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    g.send(mapc(0, 0), mapti(7, 1, 8197, 0))
    assert [vm.irq(i).target_vcpu for i in (8195, 8196, 8197)] == [3, 2, 0]
    assert cmd(vm, movall(2, 4)) == R.E_ITS_MOVALL_PROCNUM_OOR
    assert cmd(vm, movall(4, 2)) == R.E_ITS_MOVALL_PROCNUM_OOR
    assert cmd(vm, movall(2, 2)) == 0
    assert [vm.irq(i).target_vcpu for i in (8195, 8196, 8197)] == [3, 2, 0]
    g.send(movall(2, 1))
    assert [vm.irq(i).target_vcpu for i in (8195, 8196, 8197)] == [1, 1, 1]
    assert devices(vm)[2] == {20: (8195, 3, True)} and collections(vm) == {3: 3, 2: 2, 0: 0}
    assert vm.signal_msi(2, 20) is True                    # EnableLPIs of vCPU 3 checked,
    assert [drain(vm, v) for v in range(4)] == [[], [8195], [], []]   # delivered on vCPU 1


def test_int(backend):
    """its-facts-A §4.3 INT: latches the LPI pending on its target (the
    guest takes it there); an unmapped (DeviceID, EventID) is
    INT_UNMAPPED_INTERRUPT; a target with EnableLPIs = 0 is -EBUSY and
    nothing is latched."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    assert cmd(vm, int_(2, 21)) == R.E_ITS_INT_UNMAPPED_INTERRUPT
    assert cmd(vm, int_(5, 20)) == R.E_ITS_INT_UNMAPPED_INTERRUPT
    g.send(int_(7, 255))
    assert [drain(vm, v) for v in range(4)] == [[], [], [8196], []]
    disable_lpis(vm, 3)
    assert cmd(vm, int_(2, 20)) == EBUSY
    g.send(int_(2, 20))
    assert not vm.irq(8195).pending_latch
    assert [drain(vm, v) for v in range(4)] == [[], [], [], []]
    assert cmd(vm, int_(7, 255)) == 0
    assert vm.irq(8196).pending_latch


def test_sync_is_a_noop(backend):
    """its-facts-A §2.4 SYNC: returns 0 and changes nothing."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    before = plain(vm.state())
    assert cmd(vm, sync(3)) == 0
    assert cmd(vm, sync(0xFFFF)) == 0
    assert plain(vm.state()) == before


@pytest.mark.parametrize("op", [0x00, 0x02, 0x06, 0x07, 0x10, 0x21, 0x22, 0x23, 0x25, 0x29, 0x2A, 0x2D,
                                0x2E, 0xFF])
def test_unknown_opcodes_ignored(backend, op):
    """its-facts-A §2.1: every opcode other than 0x01, 0x03-0x05, 0x08-0x0F
    (GICv4 V* commands included) returns -ENODEV internally and is ignored;
    CREADR still moves past it."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    c = [op | (2 << 32), 20 | (8195 << 32), VALID | (1 << 16) | 3, 1 << 16]
    before = plain(vm.state())
    assert cmd(vm, c) == ENODEV
    assert plain(vm.state()) == before
    g.send(c)
    assert gits(vm, R.GITS_CREADR) == 0x120
    after = plain(vm.state())
    before["its"]["GITS_CREADR"] = before["its"]["GITS_CWRITER"] = 0x120
    assert after == before


def test_command_outside_ram_skipped(backend):
    """its-facts-A §2.1: a command whose 32 bytes cannot be read (not guest
    RAM) is skipped -- nothing happens -- and processing goes on: CREADR
    advances past it and wraps at the queue end."""
    vm = its_vm(backend)
    g = Guest(vm, enable_its=False)
    q = ram_end(vm) - 0x10000                              # second half of the queue beyond RAM
    gits_w(vm, R.GITS_CBASER, VALID | q | 31)              # 128 KiB queue
    gits_w(vm, R.GITS_CTLR, 1, 4)
    for i, w in enumerate(mapd(2, 8, g.itt(0))):
        write64(vm, q + 8 * i, w)
    gits_w(vm, R.GITS_CWRITER, 0x10040)                   # 0x0 in RAM, 0x10000, 0x10020 not
    assert gits(vm, R.GITS_CREADR) == 0x10040
    assert list(devices(vm)) == [2]
    for i, w in enumerate(mapc(1, 1)):
        write64(vm, q + 0x20 + 8 * i, w)
    gits_w(vm, R.GITS_CWRITER, 0x40)                      # the rest beyond RAM, wrap, 0x20
    assert gits(vm, R.GITS_CREADR) == 0x40
    assert collections(vm) == {1: 1}
    assert gits(vm, R.GITS_CTLR, 4) == 0x80000001


def test_creadr_wraps_at_queue_end(backend):
    """its-facts-A §2.1 step 3 / §1.3 GITS_CBASER: with Size 0 the queue is
    4 KiB (128 commands); CREADR wraps to 0 after the last one and every
    command in between runs."""
    vm = its_vm(backend)
    g = Guest(vm, enable_its=False)
    gits_w(vm, R.GITS_CBASER, VALID | g.lay.cmdq | 0)
    gits_w(vm, R.GITS_CTLR, 1, 4)
    q = g.lay.cmdq
    for n in range(126):
        for i, w in enumerate(sync()):
            write64(vm, q + 32 * n + 8 * i, w)
    for i, w in enumerate(mapd(2, 8, g.itt(0))):
        write64(vm, q + 0xFC0 + 8 * i, w)
    for i, w in enumerate(mapd(3, 8, g.itt(1))):
        write64(vm, q + 0xFE0 + 8 * i, w)
    gits_w(vm, R.GITS_CWRITER, 0xFE0)
    assert gits(vm, R.GITS_CREADR) == 0xFE0 and list(devices(vm)) == [2]
    gits_w(vm, R.GITS_CWRITER, 0)                         # the last command, then wrap
    assert gits(vm, R.GITS_CREADR) == 0
    assert sorted(devices(vm)) == [2, 3]
    for i, w in enumerate(mapc(1, 1)):
        write64(vm, q + 8 * i, w)
    gits_w(vm, R.GITS_CWRITER, 0x20)
    assert gits(vm, R.GITS_CREADR) == 0x20 and collections(vm) == {1: 1}


def test_kvm_unit_tests_its_trigger(backend):
    """kvm-unit-tests its-trigger (its-facts-B §5.3): INT reaches only the
    collection's vCPU; a disabled LPI stays undelivered; a config change is
    picked up at INVALL and the earlier pending state plus a new INT give
    one delivery; after MAPD V = 0 INT delivers nothing."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    g.send(int_(2, 20))
    assert [drain(vm, v) for v in range(4)] == [[], [], [], [8195]]
    g.send(int_(7, 255))
    assert [drain(vm, v) for v in range(4)] == [[], [], [8196], []]
    set_prop(vm, g.lay, 8195, 0xA2)
    g.send(inv(2, 20), int_(2, 20))
    assert [drain(vm, v) for v in range(4)] == [[], [], [], []]
    set_prop(vm, g.lay, 8195, 0xA3)
    g.send(int_(2, 20), invall(3))
    assert [drain(vm, v) for v in range(4)] == [[], [], [], [8195]]
    g.send(int_(2, 20))
    assert [drain(vm, v) for v in range(4)] == [[], [], [], [8195]]
    g.send(mapd(2, 8, g.itt(0), valid=False), int_(2, 20))
    assert [drain(vm, v) for v in range(4)] == [[], [], [], []]
    assert read64(vm, g.lay.device_table + 16) == 0


def test_new_lpi_with_disabled_config_not_delivered(backend):
    """its-facts-A §3.1/§3.2 and §4.1: a new LPI whose property byte has
    Enable = 0 is disabled; an MSI to it returns 1 (latched) but the guest
    does not take it until the byte is enabled and re-read (INV)."""
    vm, g = setup(backend)
    set_prop(vm, g.lay, 8192, 0xA2)
    g.send(mapd(2, 8, g.itt(0)), mapc(1, 1), mapti(2, 0, 8192, 1))
    assert vm.signal_msi(2, 0) is True
    assert [drain(vm, v) for v in range(4)] == [[], [], [], []]
    assert not vm.irq(8192).enabled


# ======================================================================
# 3. LPIs on the redistributor (its-facts-A §3.5)
# ======================================================================
def test_gicr_ctlr_enable_lpis_needs_an_its(backend):
    """its-facts-A §3.5 GICR_CTLR: in a VM without an ITS a write is ignored
    completely (EnableLPIs never sets); with an ITS bit 0 reads back 1."""
    for its in (False, True):
        vm = vgic.VM(nr_vcpus=2, nr_irqs=64, its=its, backend=backend)
        before = gicr(vm, 1, R.GICR_CTLR)
        assert before & 1 == 0
        enable_lpis(vm, 1)
        assert gicr(vm, 1, R.GICR_CTLR) == (before | 1 if its else before)
        assert gicr(vm, 0, R.GICR_CTLR) == before


def test_enable_lpis_loads_pending_table(backend):
    """its-facts-A §3.3 its_sync_lpi_pending_table: EnableLPIs 0 -> 1 with
    PTZ = 0 sets each LPI aimed at this vCPU pending from its bit (memory is
    not changed); LPIs aimed elsewhere are untouched even if this table
    has their bit set; the guest then takes the loaded LPI."""
    vm, g = setup(backend, enable_lpis=False)
    its_setup1(vm, g)
    set_pend_bit(vm, g.lay, 3, 8195)
    set_pend_bit(vm, g.lay, 3, 8196)                      # 8196 targets vCPU 2
    enable_lpis(vm, 3)
    assert vm.irq(8195).pending_latch and not vm.irq(8196).pending_latch
    assert pend_bit(vm, g.lay, 3, 8195) == 1 and pend_bit(vm, g.lay, 3, 8196) == 1
    assert [drain(vm, v) for v in range(4)] == [[], [], [], [8195]]


def test_enable_lpis_with_ptz_skips_the_load(backend):
    """its-facts-A §3.5 GICR_PENDBASER: PTZ (bit 62) is stored but reads 0,
    and is consulted at EnableLPIs 0 -> 1: with PTZ = 1 the pending table
    is not loaded."""
    vm, g = setup(backend, enable_lpis=False)
    its_setup1(vm, g)
    set_pend_bit(vm, g.lay, 3, 8195)
    assert gicr(vm, 3, R.GICR_PENDBASER, 8) == g.lay.pend[3] | 0x180      # InnerCache 0 -> RaWb
    gicr_w(vm, 3, R.GICR_PENDBASER, (1 << 62) | g.lay.pend[3], 8)
    assert gicr(vm, 3, R.GICR_PENDBASER, 8) == g.lay.pend[3] | 0x180      # PTZ reads 0
    assert vm.state()["vgic_v3"]["vcpus"][3]["GICR_PENDBASER"] == (1 << 62) | g.lay.pend[3] | 0x180
    enable_lpis(vm, 3)
    assert not vm.irq(8195).pending_latch
    assert drain(vm, 3) == []


def test_enable_lpis_load_overwrites_and_only_on_transition(backend):
    """its-facts-A §3.5/§7 item 7: the load at 0 -> 1 overwrites
    pending_latch (a 0 bit clears a pending LPI); writing EnableLPIs = 1
    while already 1 is ignored (no load)."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    set_prop(vm, g.lay, 8195, 0xA2)
    g.send(inv(2, 20))
    assert vm.signal_msi(2, 20) is True
    enable_lpis(vm, 3)                                    # already enabled: ignored
    assert vm.irq(8195).pending_latch
    disable_lpis(vm, 3)                                   # 8195 disabled: not queued, kept
    assert vm.irq(8195).pending_latch
    enable_lpis(vm, 3)                                    # bit is 0: cleared
    assert not vm.irq(8195).pending_latch


def test_disable_lpis_flushes_queued_lpis(backend):
    """its-facts-A §3.5 GICR_CTLR 1 -> 0 (vgic_flush_pending_lpis, newest):
    every LPI on this vCPU's ap_list leaves it with pending_latch cleared,
    so it is not delivered; an LPI pending but not queued (disabled in the
    property table) keeps its pending state; nothing is written to memory."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    set_prop(vm, g.lay, 8197, 0xA2)
    g.send(mapti(2, 21, 8197, 3), inv(2, 21))
    assert vm.signal_msi(2, 20) is True and vm.signal_msi(2, 21) is True
    v = vm.vcpus[3]
    v.enter()                                             # 8195 is put in an LR (queued)
    v.exit()
    assert vm.irq(8195).pending_latch
    disable_lpis(vm, 3)
    assert gicr(vm, 3, R.GICR_CTLR) & 1 == 0
    assert not vm.irq(8195).pending_latch
    assert vm.irq(8197).pending_latch
    assert pend_bit(vm, g.lay, 3, 8195) == 0
    assert [drain(vm, v) for v in range(4)] == [[], [], [], []]


@pytest.mark.parametrize("source", ["msi", "int", "inv"])
def test_disable_lpis_flushes_lpi_queued_since_last_entry(backend, source):
    """its-facts-A §3.5 GICR_CTLR 1 -> 0 with §3.2/§4.1: KVM_SIGNAL_MSI, INT,
    and an INV that enables a pending LPI all queue it on its target's
    ap_list at once (vgic_queue_irq_unlock), so clearing EnableLPIs right
    after flushes it (vgic_flush_pending_lpis): pending_latch is cleared and
    the guest never takes it."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    if source == "msi":
        assert vm.signal_msi(2, 20) is True
    elif source == "int":
        g.send(int_(2, 20))
    else:
        set_prop(vm, g.lay, 8195, 0xA2)
        g.send(inv(2, 20), int_(2, 20))
        set_prop(vm, g.lay, 8195, 0xA3)
        g.send(inv(2, 20))
    assert vm.irq(8195).pending_latch and vm.irq(8195).enabled
    disable_lpis(vm, 3)
    assert not vm.irq(8195).pending_latch
    assert [drain(vm, v) for v in range(4)] == [[], [], [], []]


def test_disable_lpis_frees_discarded_lpi(backend):
    """its-facts-A §3.4: an LPI discarded while on an ap_list lives on by
    the ap_list reference and is freed when EnableLPIs is cleared on its
    redistributor."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    g.send(int_(2, 20))
    vm.vcpus[3].enter()
    vm.vcpus[3].exit()
    g.send(discard(2, 20))
    assert lpi_exists(vm, 8195)
    disable_lpis(vm, 3)
    assert not lpi_exists(vm, 8195)
    assert drain(vm, 3) == []


def test_gicr_typer_plpis(backend):
    """its-facts-A §3.5 GICR_TYPER: PLPIS (bit 0) = 1 iff the VM has an ITS,
    on every redistributor; VLPIS (bit 1) and DirectLPI (bit 3) are 0."""
    for its in (False, True):
        vm = vgic.VM(nr_vcpus=3, nr_irqs=64, its=its, backend=backend)
        for v in range(3):
            t = gicr(vm, v, R.GICR_TYPER, 8)
            assert t & 1 == int(its) and t & 0b1010 == 0
            assert gicr(vm, v, R.GICR_TYPER, 4) & 1 == int(its)


def test_gicd_typer_lpis_and_idbits(backend):
    """its-facts-A §3.5 GICD_TYPER: with an ITS IDbits [23:19] = 15 and LPIS
    (bit 17) = 1; without one IDbits = 9 and LPIS = 0; num_LPIs [15:11] = 0."""
    for its, idbits in ((True, 15), (False, 9)):
        vm = vgic.VM(nr_vcpus=1, nr_irqs=64, its=its, backend=backend)
        t = vm.mmio_read(vm.dist_base + R.GICD_TYPER, 4)
        assert (t >> 19) & 0x1F == idbits
        assert (t >> 17) & 1 == int(its)
        assert (t >> 11) & 0x1F == 0


def test_invlpir(backend):
    """its-facts-A §3.5 GICR_INVLPIR: re-reads one LPI's byte with no
    filter, so it works on an LPI targeting another redistributor; V and
    vPEID (upper bits) are ignored in a 64-bit write; a 32-bit write of the
    upper word is ignored; ignored while this redistributor's LPIs are
    disabled; an INTID with no LPI does nothing; reads are 0."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    set_prop(vm, g.lay, 8196, 0x51)                       # 8196 targets vCPU 2
    gicr_w(vm, 0, R.GICR_INVLPIR + 4, 8196, 4)
    assert vm.irq(8196).priority == 0xA0
    gicr_w(vm, 0, R.GICR_INVLPIR, (1 << 63) | (7 << 32) | 8196, 8)
    assert (vm.irq(8196).priority, vm.irq(8196).enabled) == (0x50, True)
    set_prop(vm, g.lay, 8196, 0x62)
    disable_lpis(vm, 1)
    gicr_w(vm, 1, R.GICR_INVLPIR, 8196, 4)
    assert vm.irq(8196).priority == 0x50
    gicr_w(vm, 0, R.GICR_INVLPIR, 8196, 4)
    assert (vm.irq(8196).priority, vm.irq(8196).enabled) == (0x60, False)
    before = plain(vm.state())
    gicr_w(vm, 0, R.GICR_INVLPIR, 8300, 4)                # no such LPI
    assert plain(vm.state()) == before
    assert gicr(vm, 0, R.GICR_INVLPIR, 8) == 0


def test_invlpir_ignores_intids_below_8192(backend):
    """its-facts-A §3.5 GICR_INVLPIR (Linux 6.13, "Sanitise guest writes to
    GICR_INVLPIR"): an INTID < 8192 is ignored -- an SPI's priority and
    enable are not overwritten from the byte at PROPBASER + INTID - 8192."""
    vm, g = setup(backend)
    vm.mmio_write(vm.dist_base + R.GICD_IPRIORITYR + 40, 1, 0xA0)
    vm.memory[g.lay.prop - vm.ram_base - 8192 + 40] = 0x41
    gicr_w(vm, 0, R.GICR_INVLPIR, 40, 4)
    st = vm.irq(40)
    assert (st.priority, st.enabled) == (0xA0, False)


def test_invallr(backend):
    """its-facts-A §3.5 GICR_INVALLR: re-reads every LPI whose target is
    this redistributor's vCPU (as INVALL) and no other; ignored for an
    upper-word write or while this redistributor's LPIs are disabled."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    set_prop(vm, g.lay, 8195, 0x21)
    set_prop(vm, g.lay, 8196, 0x21)
    gicr_w(vm, 3, R.GICR_INVALLR + 4, 0, 4)
    assert vm.irq(8195).priority == 0xA0
    gicr_w(vm, 3, R.GICR_INVALLR, 0, 8)
    assert vm.irq(8195).priority == 0x20 and vm.irq(8196).priority == 0xA0
    disable_lpis(vm, 2)
    gicr_w(vm, 2, R.GICR_INVALLR, 0, 4)
    assert vm.irq(8196).priority == 0xA0
    enable_lpis(vm, 2)
    gicr_w(vm, 2, R.GICR_INVALLR, 0, 4)
    assert vm.irq(8196).priority == 0x20
    assert gicr(vm, 2, R.GICR_INVALLR, 8) == 0 and gicr(vm, 2, R.GICR_SYNCR) == 0


def test_propbaser_with_its_and_sanitising(backend):
    """its-facts-A §1.5/§3.5 GICR_PROPBASER: 0x580 once the ITS exists, one
    value for the VM; writing 0x4000000F stores 0x4000018F. GICR_PENDBASER
    starts at 0x580; writing 0x4000000040010000 stores PTZ and reads back
    0x0000000040010180."""
    vm = its_vm(backend, nr_vcpus=2)
    assert [gicr(vm, v, R.GICR_PROPBASER, 8) for v in range(2)] == [0x580, 0x580]
    assert [gicr(vm, v, R.GICR_PENDBASER, 8) for v in range(2)] == [0x580, 0x580]
    gicr_w(vm, 1, R.GICR_PROPBASER, 0x4000000F, 8)
    assert [gicr(vm, v, R.GICR_PROPBASER, 8) for v in range(2)] == [0x4000018F, 0x4000018F]
    gicr_w(vm, 1, R.GICR_PENDBASER, 0x4000000040010000, 8)
    assert gicr(vm, 1, R.GICR_PENDBASER, 8) == 0x0000000040010180
    assert gicr(vm, 0, R.GICR_PENDBASER, 8) == 0x580


def test_propbaser_pendbaser_ignored_while_lpis_enabled(backend):
    """its-facts-A §3.5: a GICR_PROPBASER write is ignored if the accessed
    redistributor has LPIs enabled (another redistributor's write goes
    through, the value being VM-wide); a GICR_PENDBASER write is ignored
    while that redistributor's LPIs are enabled."""
    vm, g = setup(backend, nr_vcpus=2, enable_lpis=False)
    enable_lpis(vm, 0)
    prop = gicr(vm, 0, R.GICR_PROPBASER, 8)
    gicr_w(vm, 0, R.GICR_PROPBASER, g.lay.prop + 0x10000 | 12, 8)
    gicr_w(vm, 0, R.GICR_PROPBASER, 0, 4)
    assert gicr(vm, 1, R.GICR_PROPBASER, 8) == prop
    pend0 = gicr(vm, 0, R.GICR_PENDBASER, 8)
    assert pend0 == g.lay.pend[0] | 0x180
    gicr_w(vm, 0, R.GICR_PENDBASER, 0, 8)
    gicr_w(vm, 0, R.GICR_PENDBASER + 4, 0x10, 4)
    assert gicr(vm, 0, R.GICR_PENDBASER, 8) == pend0
    gicr_w(vm, 1, R.GICR_PROPBASER, g.lay.prop + 0x10000 | 12, 8)
    assert gicr(vm, 0, R.GICR_PROPBASER, 8) == (g.lay.prop + 0x10000) | 0x180 | 12
    gicr_w(vm, 1, R.GICR_PENDBASER, g.lay.pend[0], 8)
    assert gicr(vm, 1, R.GICR_PENDBASER, 8) == g.lay.pend[0] | 0x180


# ======================================================================
# 4. KVM_SIGNAL_MSI (its-facts-A §4, its-facts-B §3.9)
# ======================================================================
def test_signal_msi_results(backend):
    """its-facts-A §4.1: KVM_SIGNAL_MSI returns 1 (True) when the LPI is
    latched pending; 0 (False) when no ITE maps (DeviceID, EventID) or its
    collection is unmapped; -EBUSY when the ITS is disabled or the target
    redistributor's LPIs are disabled (nothing latched then)."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    assert vm.signal_msi(2, 20) is True
    assert vm.irq(8195).pending_latch
    assert vm.signal_msi(2, 21) is False
    assert vm.signal_msi(3, 20) is False
    assert vm.signal_msi(0xFFFFFFFF, 0xFFFFFFFF) is False
    g.send(mapti(7, 0, 8197, 9))                          # collection 9: unmapped
    assert vm.signal_msi(7, 0) is False
    disable_lpis(vm, 2)
    with pytest.raises(vgic.KvmError) as e:
        vm.signal_msi(7, 255)
    assert e.value.errno == errno.EBUSY
    assert not vm.irq(8196).pending_latch
    gits_w(vm, R.GITS_CTLR, 0, 4)
    for dev, ev in ((2, 20), (2, 21)):                    # ITS disabled is checked first
        with pytest.raises(vgic.KvmError) as e:
            vm.signal_msi(dev, ev)
        assert e.value.errno == errno.EBUSY
    assert [drain(vm, v) for v in range(4)] == [[], [], [], [8195]]


def test_signal_msi_without_its(backend):
    """its-facts-A §4.1 step 2 (kvm_set_msi): a VM without an ITS gets
    -ENODEV, for single and batched MSIs."""
    vm = vgic.VM(nr_vcpus=1, nr_irqs=64, backend=backend)
    with pytest.raises(vgic.KvmError) as e:
        vm.signal_msi(0, 0)
    assert e.value.errno == errno.ENODEV
    with pytest.raises(vgic.KvmError) as e:
        vm.signal_msis([0], [0])
    assert e.value.errno == errno.ENODEV


def test_msi_to_disabled_lpi_delivered_after_inv(backend):
    """its-facts-A §4.1 / §6 item 9: an MSI to an LPI disabled in the
    property table still returns 1; the pending state is latched and the
    LPI is delivered once INV picks up the enabled byte."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    set_prop(vm, g.lay, 8196, 0xA2)
    g.send(inv(7, 255))
    assert not vm.irq(8196).enabled
    assert vm.signal_msi(7, 255) is True
    assert vm.irq(8196).pending_latch
    assert [drain(vm, v) for v in range(4)] == [[], [], [], []]
    set_prop(vm, g.lay, 8196, 0xA3)
    assert [drain(vm, v) for v in range(4)] == [[], [], [], []]
    g.send(inv(7, 255))
    assert [drain(vm, v) for v in range(4)] == [[], [], [8196], []]


def test_msi_with_distributor_disabled(backend):
    """its-facts-A §4.1 / §3.6: with GICD_CTLR.EnableGrp1 clear an MSI still
    returns 1 and latches the pending state, but the oracle gives no target:
    the guest takes nothing."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    vm.mmio_write(vm.dist_base + R.GICD_CTLR, 4, 0)
    assert vm.signal_msi(2, 20) is True
    assert vm.irq(8195).pending_latch
    assert [drain(vm, v) for v in range(4)] == [[], [], [], []]


def test_msi_edge_coalesces(backend):
    """its-facts-A §3.7: LPIs are edge-triggered; several MSIs before the
    guest takes the LPI latch one pending state: one delivery."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    assert [vm.signal_msi(2, 20) for _ in range(3)] == [True, True, True]
    assert drain(vm, 3) == [8195]


def test_signal_msis_batch_agrees_with_single_calls(backend):
    """its-facts-A §4.1: vm.signal_msis gives, per MSI in order, KVM's
    result (1 delivered, 0 blocked, -EBUSY) as int32, without raising; the
    resulting state equals that of the same MSIs sent one at a time."""
    devs = [2, 7, 2, 9, 7, 2, 3, 2]
    evs = [20, 255, 21, 0, 0, 20, 20, 20]
    vms = []
    for _ in range(2):
        vm, g = setup(backend)
        its_setup1(vm, g)
        g.send(mapc(1, 1), mapti(7, 0, 8197, 1))
        set_prop(vm, g.lay, 8197)
        g.send(inv(7, 0))
        disable_lpis(vm, 1)
        vms.append(vm)
    single = []
    for d, e in zip(devs, evs):
        try:
            single.append(1 if vms[0].signal_msi(d, e) else 0)
        except vgic.KvmError as err:
            single.append(-err.errno)
    batch = vms[1].signal_msis(np.array(devs), np.array(evs))
    assert batch.dtype == np.int32
    assert single == [1, 1, 0, 0, EBUSY, 1, 0, 1]
    assert batch.tolist() == single
    assert plain(vms[0].state()) == plain(vms[1].state())
    gits_w(vms[1], R.GITS_CTLR, 0, 4)
    assert vms[1].signal_msis([2, 9], [20, 0]).tolist() == [EBUSY, EBUSY]


# ======================================================================
# 5. Virtual CPU interface with LPIs (its-facts-A §5)
# ======================================================================
def lr_state(v, n=0):
    return v.hyp.read(f"ICH_LR{n}_EL2") >> LR_STATE_SHIFT


def eoicount(v):
    return (v.hyp.read("ICH_HCR_EL2") >> 27) & 0x1F


def open_guest(v, eoimode=0):
    v.sysreg_write("ICC_PMR_EL1", 0xFF)
    v.sysreg_write("ICC_IGRPEN1_EL1", 1)
    v.sysreg_write("ICC_CTLR_EL1", eoimode << 1)


def test_lpi_lr_populated_and_ack_makes_it_active(backend):
    """its-facts-A §5.2 populate: an LPI's LR has vINTID = INTID, Group 1,
    priority = byte & 0xFC, HW = 0, EOI (bit 41) = 0, State Pending; §5.1:
    acknowledging it moves the LR Pending -> Active and sets the active
    priority bit of its group priority."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    assert vm.signal_msi(2, 20) is True
    v = vm.vcpus[3]
    v.enter()
    assert v.hyp.read("ICH_LR0_EL2") == (LR_PENDING << LR_STATE_SHIFT) | LR_GROUP | (0xA0 << 48) | 8195
    open_guest(v)
    assert v.sysreg_read("ICC_HPPIR1_EL1") == 8195
    assert v.sysreg_read("ICC_IAR1_EL1") == 8195
    assert v.hyp.read("ICH_LR0_EL2") == (LR_ACTIVE << LR_STATE_SHIFT) | LR_GROUP | (0xA0 << 48) | 8195
    assert v.hyp.read("ICH_AP1R0_EL2") == 1 << (0xA0 >> 3)
    assert v.sysreg_read("ICC_RPR_EL1") == 0xA0
    assert v.sysreg_read("ICC_HPPIR1_EL1") == SPURIOUS
    v.exit()


@pytest.mark.parametrize("eoimode", [0, 1])
def test_eoi_deactivates_lpi_whatever_eoimode(backend, eoimode):
    """its-facts-A §5.1 ICV_EOIR1 with an LPI INTID (VirtualWriteEOIR, QEMU
    82a65e3188ab, KVM __vgic_v3_write_eoir): the priority drops and the LR
    is deactivated regardless of ICV_CTLR.EOImode; KVM then sees it neither
    active nor pending."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    vm.signal_msi(2, 20)
    v = vm.vcpus[3]
    v.enter()
    open_guest(v, eoimode)
    assert v.sysreg_read("ICC_IAR1_EL1") == 8195
    v.sysreg_write("ICC_EOIR1_EL1", 8195)
    assert lr_state(v) == 0
    assert v.hyp.read("ICH_AP1R0_EL2") == 0
    assert eoicount(v) == 0
    v.exit()
    st = vm.irq(8195)
    assert not st.active and not st.pending_latch


def test_spi_under_eoimode1_stays_active_unlike_lpi(backend):
    """IHI 0069 §12.3 ICV_EOIR1 (contrast for the LPI rule of its-facts-A
    §5.1): with EOImode = 1 an SPI's EOI only drops the priority and its LR
    stays Active until ICV_DIR."""
    vm, g = setup(backend)
    vm.mmio_write(vm.dist_base + R.GICD_ISENABLER + 4, 4, 1 << (40 - 32))
    vm.mmio_write(vm.dist_base + R.GICD_IPRIORITYR + 40, 1, 0x20)
    vm.set_irq_level(40, 1)
    v = vm.vcpus[0]
    v.enter()
    open_guest(v, 1)
    assert v.sysreg_read("ICC_IAR1_EL1") == 40
    v.sysreg_write("ICC_EOIR1_EL1", 40)
    assert lr_state(v) == LR_ACTIVE
    v.sysreg_write("ICC_DIR_EL1", 40)
    assert lr_state(v) == 0
    v.exit()


def test_fold_drops_lpi_active_state(backend):
    """its-facts-A §5.2 fold (Linux 6.19, "GICv3: Drop LPI active state when
    folding LRs"): an LPI acknowledged but not EOI'd when the vCPU exits is
    inactive in KVM's state and not put back in an LR; a new MSI is injected
    Pending only; the guest's later EOI finds no LR: only the priority
    drops and EOIcount is not incremented (INTID >= 8192)."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    vm.signal_msi(2, 20)
    v = vm.vcpus[3]
    v.enter()
    open_guest(v)
    assert v.sysreg_read("ICC_IAR1_EL1") == 8195
    v.exit()
    st = vm.irq(8195)
    assert not st.active and not st.pending_latch
    v.enter()
    assert [lr_state(v, n) for n in range(4)] == [0, 0, 0, 0]
    assert v.hyp.read("ICH_AP1R0_EL2") == 1 << (0xA0 >> 3)
    v.sysreg_write("ICC_EOIR1_EL1", 8195)
    assert v.hyp.read("ICH_AP1R0_EL2") == 0
    assert eoicount(v) == 0
    v.exit()
    vm.signal_msi(2, 20)
    v.enter()
    assert v.hyp.read("ICH_LR0_EL2") == (LR_PENDING << LR_STATE_SHIFT) | LR_GROUP | (0xA0 << 48) | 8195
    v.exit()


def test_fold_active_lpi_then_new_msi(backend):
    """its-facts-A §5.2: the LR of an acknowledged LPI that became pending
    again (a second MSI before exit, Active+Pending after fold-in) folds to
    pending_latch = 1 and never active; the next entry injects it Pending."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    vm.signal_msi(2, 20)
    v = vm.vcpus[3]
    v.enter()
    open_guest(v)
    assert v.sysreg_read("ICC_IAR1_EL1") == 8195
    v.exit()
    vm.signal_msi(2, 20)
    st = vm.irq(8195)
    assert st.pending_latch and not st.active
    v.enter()
    assert lr_state(v) == LR_PENDING
    v.sysreg_write("ICC_EOIR1_EL1", 8195)                 # the old activation: no LR holds it active
    assert lr_state(v) == LR_PENDING
    assert v.sysreg_read("ICC_IAR1_EL1") == 8195
    v.sysreg_write("ICC_EOIR1_EL1", 8195)
    assert lr_state(v) == 0
    v.exit()


def test_dir_of_lpi_has_no_effect(backend):
    """its-facts-A §5.1 ICV_DIR with an LPI INTID: no effect (QEMU returns
    for INTID >= 1020, KVM __vgic_v3_write_dir for INTID >= 8192) -- the LR
    stays Active and EOIcount does not move; the EOI then deactivates it."""
    vm, g = setup(backend)
    its_setup1(vm, g)
    vm.signal_msi(2, 20)
    v = vm.vcpus[3]
    v.enter()
    open_guest(v, 1)
    assert v.sysreg_read("ICC_IAR1_EL1") == 8195
    v.sysreg_write("ICC_DIR_EL1", 8195)
    assert lr_state(v) == LR_ACTIVE and eoicount(v) == 0
    v.sysreg_write("ICC_DIR_EL1", 8196)                   # in no LR either
    assert lr_state(v) == LR_ACTIVE and eoicount(v) == 0
    v.sysreg_write("ICC_EOIR1_EL1", 8195)
    assert lr_state(v) == 0 and eoicount(v) == 0
    v.exit()
    assert not vm.irq(8195).active


# ======================================================================
# 6. Core and twin agree (vm.state() after every step)
# ======================================================================
TABLES_END = 0x100_0000      # every table its_helpers.layout places lies in RAM's first 16 MiB


def _scenario_commands(vm, g):
    yield its_setup1(vm, g)
    yield [set_prop(vm, g.lay, i, p) for i, p in ((8197, 0xA3), (8300, 0x63), (8210, 0x92))]
    yield g.send(mapc(0, 0), mapc(1, 1), mapti(7, 1, 8197, 1), mapti(2, 3, 8208, 0), mapi(7, 8300, 1))
    yield [vm.signal_msi(d, e) for d, e in ((2, 20), (7, 255), (7, 1), (2, 3))]
    yield [acknowledge(vm, v) for v in range(4)]
    yield set_prop(vm, g.lay, 8208, 0x13)
    yield g.send(inv(2, 3), int_(2, 3), movi(2, 20, 1), int_(2, 20))
    yield [drain(vm, v) for v in range(4)]
    yield g.send(int_(7, 1), discard(7, 1), mapti(7, 2, 8197, 0))
    yield g.send(movall(1, 2), invall(2))
    yield vm.signal_msis([7, 7, 2, 9], [2, 255, 20, 1])
    yield [drain(vm, v) for v in range(4)]
    yield g.send(mapc(2, 0, valid=False), clear(7, 255), mapd(2, 4, g.itt(3)))
    yield g.send(*[sync()] * 5, mapti(2, 1, 8210, 3), [0x2A, 0, 0, 0])


def _scenario_registers(vm, g):
    yield its_setup1(vm, g)
    yield gits_w(vm, R.GITS_CTLR, 0, 4)
    yield g.send(int_(2, 20), mapc(5, 1))
    yield gits_w(vm, R.GITS_BASER + 8, gits(vm, R.GITS_BASER + 8) | 1)
    yield gits_w(vm, R.GITS_CTLR, 1, 4)
    yield gits_w(vm, R.GITS_CTLR, 0, 4)
    yield gits_w(vm, R.GITS_BASER, (gits(vm, R.GITS_BASER) & 0xFFFFFFFF) | 1, 4)
    yield gits_w(vm, R.GITS_CBASER, VALID | g.lay.cmdq | 1)
    yield [gits(vm, o, 4) for o in range(0, 0x140, 4)]
    yield gits_w(vm, R.GITS_CTLR, 1, 4)
    g.cwriter = 0
    yield g.send(mapd(2, 8, g.itt(0)), mapc(3, 3), mapti(2, 20, 8195, 3))


def _scenario_redistributor(vm, g):
    yield its_setup1(vm, g)
    yield [set_pend_bit(vm, g.lay, v, i) for v in range(4) for i in (8195, 8196, 8200)]
    yield disable_lpis(vm, 3)
    yield set_prop(vm, g.lay, 8200)
    yield g.send(mapti(2, 5, 8200, 3))
    yield enable_lpis(vm, 3)
    yield [vm.vcpus[v].enter() for v in range(4)]
    yield [vm.vcpus[v].exit() for v in range(4)]
    yield disable_lpis(vm, 2)
    yield set_prop(vm, g.lay, 8200, 0x71)
    yield gicr_w(vm, 0, R.GICR_INVLPIR, 8200, 8)
    yield gicr_w(vm, 3, R.GICR_INVALLR, 0, 4)
    yield gicr_w(vm, 2, R.GICR_PENDBASER, (1 << 62) | g.lay.pend[2], 8)
    yield enable_lpis(vm, 2)
    yield [drain(vm, v) for v in range(4)]


def _scenario_disabled_lpis(vm, g):
    yield its_setup1(vm, g)
    yield set_prop(vm, g.lay, 8200, 0xA2)                 # Enable = 0 at creation
    yield g.send(mapc(1, 1), mapti(2, 8, 8200, 1), mapti(2, 9, 8201, 1))
    yield [vm.signal_msi(2, e) for e in (8, 9)]
    yield [drain(vm, v) for v in range(4)]
    yield set_prop(vm, g.lay, 8200, 0xA3)
    yield g.send(invall(1))
    yield [drain(vm, v) for v in range(4)]
    yield g.send(discard(2, 9), mapti(2, 10, 8201, 1))
    yield [drain(vm, v) for v in range(4)]


@pytest.mark.parametrize("scenario", [
    _scenario_commands, _scenario_registers, _scenario_redistributor,
    _scenario_disabled_lpis])
def test_core_and_twin_agree(scenario):
    """The Cython kernel (vgic._core.its, _core/lpi.pxd) and its pure-Python
    twin (vgic._pure.its, vgic._pure.lpi: "the twin of vgic._core.its")
    implement the same KVM rules (its-facts-A §1-§5): run step by step on
    one VM of each, every step's result, the whole vm.state() and the guest
    tables in memory are equal."""
    pytest.importorskip("vgic._core.its")
    vms = [its_vm(b) for b in ("core", "pure")]
    guests = [Guest(vm) for vm in vms]
    steps = [scenario(vm, g) for vm, g in zip(vms, guests)]
    n = 0
    for results in zip(*steps):
        n += 1
        assert plain(results[0]) == plain(results[1]), f"step {n}"
        assert plain(vms[0].state()) == plain(vms[1].state()), f"step {n}"
        assert bytes(vms[0].memory[:TABLES_END]) == bytes(vms[1].memory[:TABLES_END]), f"step {n}"
    assert n > 8
    assert lpi_table(vms[0])                               # the scenario left LPIs to compare
