"""The ICH_LR<n>_EL2 encode/decode kernels (``lr_encode_batch`` /
``lr_decode_batch``) of both backends, and the ap_list kernel's argument
checks.

Field layout of ICH_LR<n>_EL2, IHI 0069 §12.4.6 (kvm-facts §4.1): vINTID
[31:0], pINTID [41:32] with HW = 1, EOI [41] with HW = 0, Priority [55:48],
Group [60], HW [61], State [63:62] (01 pending, 10 active, 11 both).
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vgic
from vgic import ich
from vgic._pure import aplist as pure_aplist
from vgic._pure import lr as pure_lr

core_lr = pytest.importorskip("vgic._core.lr")
core_aplist = pytest.importorskip("vgic._core.aplist")

BACKENDS = [pytest.param(core_lr, id="core"), pytest.param(pure_lr, id="twin")]


def fields(*rows):
    return np.array(list(rows), dtype=ich.LR_FIELDS)


@pytest.mark.parametrize("mod", BACKENDS)
def test_encode_known_values(mod):
    f = fields(
        # Group 1 SPI 40 at priority 0xA0, pending, level (EOI maintenance)
        (40, 0, 0xA0, 1, 1, 0, 1),
        # HW-mapped PPI 27 (the virtual timer) active, pINTID 27
        (27, 27, 0x20, 1, 2, 1, 0),
        # Group 0 SGI 5, pending and active
        (5, 0, 0x00, 0, 3, 0, 0),
    )
    lrs = mod.lr_encode_batch(f)
    assert lrs.dtype == np.uint64
    assert lrs.tolist() == [
        (1 << 62) | (1 << 60) | (0xA0 << 48) | (1 << 41) | 40,
        (1 << 63) | (1 << 61) | (1 << 60) | (0x20 << 48) | (27 << 32) | 27,
        (3 << 62) | 5,
    ]


@pytest.mark.parametrize("mod", BACKENDS)
def test_decode_ignores_res0_and_splits_eoi_from_pintid(mod):
    # With HW = 0, bit 41 is EOI and [40:32] are RES0; with HW = 1, [41:32]
    # is the pINTID (IHI 0069 §12.4.6).
    sw = (1 << 62) | (1 << 41) | (0x1FF << 32) | (0xF << 56) | 77
    hw = (1 << 61) | (0x3FF << 32) | 31
    d = mod.lr_decode_batch(np.array([sw, hw], dtype=np.uint64))
    assert d[0].tolist() == (77, 0, 0, 0, 1, 0, 1)        # [59:56] is not priority
    assert d[1].tolist() == (31, 0x3FF, 0, 0, 0, 1, 0)


@pytest.mark.parametrize("mod", BACKENDS)
def test_encode_rejects_fields_outside_their_width(mod):
    for bad in [(1, 0x400, 0, 0, 0, 1, 0), (1, 0, 0, 0, 4, 0, 0), (1, 0, 0, 2, 0, 0, 0),
                (1, 0, 0, 0, 0, 0, 2)]:
        f = fields((1, 0, 0, 0, 0, 0, 0), bad)
        with pytest.raises(ValueError, match=r"fields\[1\]"):
            mod.lr_encode_batch(f)


@pytest.mark.parametrize("mod", BACKENDS)
def test_codec_bad_types(mod):
    with pytest.raises(TypeError, match="LR_FIELDS"):
        mod.lr_encode_batch(np.zeros(3, dtype=np.uint64))
    with pytest.raises(TypeError, match="LR_FIELDS"):
        mod.lr_encode_batch([1, 2, 3])


@pytest.mark.parametrize("mod", BACKENDS)
def test_codec_shapes(mod):
    empty = mod.lr_encode_batch(np.zeros(0, dtype=ich.LR_FIELDS))
    assert empty.shape == (0,)
    grid = mod.lr_decode_batch(np.zeros((2, 3), dtype=np.uint64))
    assert grid.shape == (2, 3) and grid.dtype == ich.LR_FIELDS


lr_row = st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 0x3FF), st.integers(0, 255),
                   st.integers(0, 1), st.integers(0, 3), st.integers(0, 1), st.integers(0, 1))


@settings(max_examples=200, deadline=None, database=None)
@given(rows=st.lists(lr_row, max_size=20), raw=st.lists(st.integers(0, 2**64 - 1), max_size=20))
def test_codec_core_equals_twin_and_round_trips(rows, raw):
    f = fields(*rows) if rows else np.zeros(0, dtype=ich.LR_FIELDS)
    a, b = core_lr.lr_encode_batch(f), pure_lr.lr_encode_batch(f)
    assert np.array_equal(a, b)
    # Each value equals vgic.ich.lr_value of the same fields.
    for row, v in zip(rows, a.tolist()):
        vintid, pintid, priority, group, state, hw, eoi = row
        assert v == ich.lr_value(vintid, priority, group=group, pending=bool(state & 1),
                                 active=bool(state & 2), hw=bool(hw), pintid=pintid, eoi=bool(eoi))
    # Decoding gives the fields back, less what the layout cannot hold
    # (pINTID without HW, EOI with HW).
    back = core_lr.lr_decode_batch(a)
    for row, got in zip(rows, back.tolist()):
        vintid, pintid, priority, group, state, hw, eoi = row
        assert got == (vintid, pintid if hw else 0, priority, group, state, hw, 0 if hw else eoi)
    r = np.array(raw, dtype=np.uint64)
    assert core_lr.lr_decode_batch(r).tobytes() == pure_lr.lr_decode_batch(r).tobytes()


# ------------------------------------------------------------ ap_list kernel
@pytest.mark.parametrize("mod,backend", [(core_aplist, "core"), (pure_aplist, "pure")])
def test_aplists_bad_input(mod, backend):
    vm = vgic.VM(nr_vcpus=2, nr_irqs=64, backend=backend)
    recs = vm.cpu_if_records
    with pytest.raises(TypeError, match="records"):
        mod.ApLists(vm.gic.gic, np.zeros(2, dtype=np.uint64), 4, False)
    with pytest.raises(ValueError, match="3 records for 2 vCPUs"):
        mod.ApLists(vm.gic.gic, np.zeros(3, dtype=ich.VCPU_IF), 4, False)
    with pytest.raises(ValueError, match="nr_lrs 17"):
        mod.ApLists(vm.gic.gic, recs, 17, False)
    with pytest.raises(TypeError, match="gic"):
        mod.ApLists(object(), recs, 4, False)
    lists = vm.gic.lists
    with pytest.raises(ValueError, match="vcpu 2"):
        lists.flush(2)
    with pytest.raises(ValueError, match="vcpu -1"):
        lists.fold(-1)
    with pytest.raises(ValueError, match="intid 64"):
        lists.queued_on(0, 64)
    with pytest.raises(ValueError, match=r"idx\[1\] = 5"):
        lists.flush_batch(np.array([0, 5]))
    with pytest.raises(ValueError, match="one-dimensional"):
        lists.fold_batch(np.zeros((1, 1), dtype=np.int64))


def test_core_aplists_refuses_the_twin_gic():
    # Issue #7: ApLists takes the Gic type itself (and holds it), never an
    # object that merely looks like one.
    vm = vgic.VM(nr_vcpus=1, backend="pure")
    with pytest.raises(TypeError, match=r"vgic\._core\.gic\.Gic"):
        core_aplist.ApLists(vm.gic.gic, vm.cpu_if_records, 4, False)


def test_core_aplists_refuses_a_look_alike_gic():
    # Issue #7 reproducer: an object with a state_capsule() of another Gic
    # was accepted and could outlive it (a use-after-free).
    vm = vgic.VM(nr_vcpus=1, backend="core")

    class LookAlike:
        nr_vcpus, nr_irqs = 1, 256

        def state_capsule(self):
            return vgic.VM(nr_vcpus=1, backend="core").gic.gic

    with pytest.raises(TypeError):
        core_aplist.ApLists(LookAlike(), vm.cpu_if_records, 4, False)


@pytest.mark.parametrize("backend", ["core", "pure"])
def test_aplists_introspection_follows_kvm(backend):
    """kvm-facts §3.3/§4.6: a pending, enabled SPI routed to vCPU 1 is queued
    on vCPU 1's ap_list at its entry (irq->vcpu = 1), held in an LR until the
    exit, and an SPI in flight sets TDIR on every vCPU's next entry."""
    from vgic import regmap as R
    vm = vgic.VM(nr_vcpus=2, backend=backend)
    vm.mmio_write(vm.dist_base + R.GICD_CTLR, 4, 2)
    vm.mmio_write(vm.dist_base + R.GICD_IROUTER + 8 * 40, 8, 1)
    vm.mmio_write(vm.dist_base + R.GICD_ISENABLER + 4, 4, 1 << 8)
    vm.set_irq_level(40, 1)
    lists = vm.gic.lists
    assert lists.oracle(0, 40) == 1 and lists.queued_on(0, 40) == -1
    vm.vcpus[1].enter()
    assert lists.ap_list(1) == [40] and lists.queued_on(0, 40) == 1 and lists.in_lr(1, 40)
    assert lists.active_spis == 1
    vm.vcpus[0].enter()
    assert vm.vcpus[0].cpu_if.hcr & ich.HCR_TDIR
    vm.vcpus[1].exit()
    # Never acknowledged: the fold returns the LR's pending state to the
    # latch (§4.5), so the oracle still names vCPU 1 and the prune keeps it.
    assert not lists.in_lr(1, 40)
    assert lists.ap_list(1) == [40] and vm.irq(40).pending
