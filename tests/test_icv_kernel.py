"""The guest's acknowledge / EOI / deactivate kernel: ``vgic._core.icv``
against its twin ``vgic._pure.icv``, which applies the rule functions of
vgic.cpuif (IHI 0069 §12.3 ICV_IAR/EOIR/DIR/HPPIR/RPR, §6 signalling, §4.8
preemption) that tests/test_cpuif.py checks register by register.

Random records (LRs in every state, with HW and EOI bits, random VMCR
fields, APRs and EOIcount) and random access sequences must give identical
results and identical records on both.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vgic import ich
from vgic._pure import icv as pure

core = pytest.importorskip("vgic._core.icv")

SETTINGS = settings(max_examples=300, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

lr_value = st.builds(
    lambda intid, prio, group, state, hw, pintid, eoi: ich.lr_value(
        intid, prio, group=group, pending=bool(state & 1), active=bool(state & 2),
        hw=bool(hw), pintid=pintid, eoi=bool(eoi)),
    st.sampled_from([0, 1, 15, 27, 32, 40, 41, 1020, 1023, 8192, 2**24 + 40]),
    st.integers(0, 255), st.integers(0, 1), st.integers(0, 3), st.integers(0, 1),
    st.integers(0, 0x3FF), st.integers(0, 1))
apr = st.sampled_from([0, 1, 2, 0x80000000, 0xFFFFFFFF]) | st.integers(0, 2**32 - 1)
record = st.fixed_dictionaries({
    "ich_lr": st.lists(lr_value, min_size=16, max_size=16),
    "ich_vmcr": st.integers(0, 2**32 - 1).map(lambda v: v & ich.VMCR_WRITABLE),
    "ich_hcr": st.integers(0, 2**32 - 1).map(lambda v: v & ich.HCR_WRITABLE),
    "ich_ap0r": st.lists(apr, min_size=4, max_size=4),
    "ich_ap1r": st.lists(apr, min_size=4, max_size=4),
})
intid_value = st.sampled_from([0, 1, 27, 40, 41, 1020, 1023, 8192, 2**24 + 40, 2**64 - 1]) \
    | st.integers(0, 2**64 - 1)
op = st.one_of(
    st.tuples(st.just("acknowledge"), st.integers(0, 1)),
    st.tuples(st.just("eoi"), st.integers(0, 1), intid_value),
    st.tuples(st.just("deactivate"), intid_value),
    st.tuples(st.just("hppir"), st.integers(0, 1)),
    st.tuples(st.just("rpr"),),
)


def same(a, b):
    """Equal in every field (a structured copy need not copy padding bytes)."""
    return all(np.array_equal(a[name], b[name]) for name in a.dtype.names)


def build(rec, nr_lrs):
    r = np.zeros(2, ich.VCPU_IF)
    for key, value in rec.items():
        r[key][1] = value
    return r


@SETTINGS
@given(rec=record, ops=st.lists(op, min_size=1, max_size=12),
       geo=st.sampled_from([(4, 5, 5), (16, 5, 5), (1, 6, 6), (8, 7, 6), (16, 7, 7)]))
def test_core_equals_twin(rec, ops, geo):
    nr_lrs, pri_bits, pre_bits = geo
    a, b = build(rec, nr_lrs), build(rec, nr_lrs)
    ka, kb = core.Icv(a, *geo), pure.Icv(b, *geo)
    for o in ops:
        name, args = o[0], o[1:]
        ra, rb = getattr(ka, name)(1, *args), getattr(kb, name)(1, *args)
        assert ra == rb, f"{o}: core {ra} vs twin {rb}"
        assert same(a, b), f"{o}: records differ"
    assert a[0].tobytes() == bytes(ich.VCPU_IF.itemsize)       # other vCPU untouched


@settings(SETTINGS, max_examples=100)
@given(recs=st.lists(record, min_size=1, max_size=6), group=st.integers(0, 1),
       values=st.lists(intid_value, min_size=6, max_size=6))
def test_batches_equal_single_calls(recs, group, values):
    for mod in (core, pure):
        a = np.zeros(len(recs), ich.VCPU_IF)
        for i, rec in enumerate(recs):
            for key, value in rec.items():
                a[key][i] = value
        b = a.copy()
        ka, kb = mod.Icv(a, 16, 5, 5), mod.Icv(b, 16, 5, 5)
        idx = np.arange(len(recs))[::-1]
        got = ka.acknowledge_batch(idx, group)
        assert got.dtype == np.uint32
        assert got.tolist() == [kb.acknowledge(int(i), group) for i in idx]
        vals = np.array(values[:len(recs)], dtype=np.uint64)
        res = ka.eoi_batch(idx, group, vals)
        assert res.tolist() == [kb.eoi(int(i), group, int(v)) for i, v in zip(idx, vals)]
        assert same(a, b)


@pytest.mark.parametrize("mod", [core, pure], ids=["core", "twin"])
def test_known_sequence(mod):
    """IHI 0069 §12.3: IAR1 takes the pending Group 1 LR (priority 0x40
    beats PMR 0xF0), marks it Active and sets APR1 bit 0x40 >> 3 = 8 (5
    preemption bits); RPR is then 0x40; EOIR1 drops the priority and (EOImode
    0) deactivates; an HW LR's EOI names its physical INTID; DIR with TDIR
    traps (-2)."""
    r = np.zeros(1, ich.VCPU_IF)
    r["ich_vmcr"] = ich.VMCR_ENG1 | (0xF0 << ich.VMCR_PMR_SHIFT)
    r["ich_lr"][0, 0] = ich.lr_value(40, 0x40, pending=True, hw=True, pintid=27)
    k = mod.Icv(r, 4, 5, 5)
    assert k.hppir(0, 1) == 40 and k.hppir(0, 0) == 1023
    assert k.acknowledge(0, 0) == 1023                  # wrong group
    assert k.acknowledge(0, 1) == 40
    assert int(r["ich_lr"][0, 0]) >> 62 == 2            # Active
    assert int(r["ich_ap1r"][0, 0]) == 1 << 8
    assert k.rpr(0) == 0x40
    assert k.eoi(0, 1, 40) == 27                        # HW = 1: physical deactivation
    assert int(r["ich_lr"][0, 0]) >> 62 == 0 and int(r["ich_ap1r"][0, 0]) == 0
    assert k.rpr(0) == 0xFF
    r["ich_hcr"] = ich.HCR_TDIR
    assert k.deactivate(0, 40) == -2 == mod.TRAP


@pytest.mark.parametrize("mod", [core, pure], ids=["core", "twin"])
def test_bad_input(mod):
    r = np.zeros(2, ich.VCPU_IF)
    with pytest.raises(TypeError, match="records"):
        mod.Icv(np.zeros(2, np.uint64), 4, 5, 5)
    with pytest.raises(ValueError, match="nr_lrs 0"):
        mod.Icv(r, 0, 5, 5)
    with pytest.raises(ValueError, match="pre_bits 7"):
        mod.Icv(r, 4, 5, 7)
    k = mod.Icv(r, 4, 5, 5)
    with pytest.raises(ValueError, match="vcpu 2"):
        k.acknowledge(2, 1)
    with pytest.raises(ValueError, match="vcpu -1"):
        k.rpr(-1)
    with pytest.raises((ValueError, OverflowError)):
        k.eoi(0, 1, -1)
    with pytest.raises((ValueError, OverflowError)):
        k.deactivate(0, 2**64)
    with pytest.raises(ValueError, match=r"idx\[0\] = 5"):
        k.acknowledge_batch([5], 1)
    with pytest.raises(ValueError, match="one length"):
        k.eoi_batch([0, 1], 1, [40])
    assert r.tobytes() == bytes(r.nbytes)                 # nothing ran


@pytest.mark.parametrize("mod", [core, pure], ids=["core", "twin"])
def test_argument_types_agree(mod):
    """Both implementations take the same arguments: a group of 0 or 1 and
    integer values (a float is a TypeError, as for every register value in
    vgic), vCPU indices that are integers (numpy's too, but not bools)."""
    r = np.zeros(2, ich.VCPU_IF)
    k = mod.Icv(r, 4, 5, 5)
    for bad in (0.5, 2, -1):
        with pytest.raises((ValueError, TypeError)):
            k.acknowledge(0, bad)
    with pytest.raises(TypeError):
        k.eoi(0, 1, 41.7)
    with pytest.raises(TypeError):
        k.deactivate(0, 41.0)
    with pytest.raises(TypeError):
        k.rpr(1.0)
    with pytest.raises(TypeError):                 # an index is an integer, never a bool (ich.check_int)
        k.acknowledge(True, 1)
    assert k.hppir(np.int64(1), np.uint8(1)) == 1023
