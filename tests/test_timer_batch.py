"""The timer kernels' batch forms on a standalone ``Timers(n)`` (no GIC):
``save_batch`` (timer_save_state of the vtimer), ``restore_batch``
(timer_restore_state) and ``expiry_batch`` (kvm_timer_earliest_exp as a
counter deadline), on both backends (docs/timer-facts.md §A.2, §A.4, §A.5;
vgic/_pure/timer.py is the reference, _core/timer.pyx its mirror).

Properties: core and pure agree on random records (records, VM record and
results identical); expiry matches ``plain_timer_loop`` (the benchmark's
baseline doing the same record work with no model around it); bad ids are
refused with ValueError naming the index and nothing changes; records
outside ``ids`` are never touched.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vgic import _backend
from vgic import gtimer as T

SETTINGS = settings(max_examples=80, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
U64 = T.U64


def impl(name):
    return _backend.modules(name)[1]


# ------------------------------------------------------------------ strategies
u64_st = st.one_of(st.integers(0, U64), st.integers(0, 5000), st.sampled_from([0, 1, U64, U64 - 1, 1 << 63]))
rec_st = st.fixed_dictionaries({
    "cntv_ctl": st.integers(0, 7), "cntv_cval": u64_st, "cntp_ctl": st.integers(0, 7), "cntp_cval": u64_st,
    "hw_cntv_ctl": st.integers(0, 7), "hw_cntv_cval": u64_st, "hw_cntvoff": u64_st,
    "loaded": st.booleans(), "sysreg_reads": st.integers(0, 1000), "sysreg_writes": st.integers(0, 1000),
})


@st.composite
def world(draw):
    n = draw(st.integers(1, 12))
    recs = draw(st.lists(rec_st, min_size=n, max_size=n))
    counter = draw(u64_st)
    voffset = draw(u64_st)
    poffset = draw(st.one_of(st.just(0), u64_st))
    ids = draw(st.lists(st.integers(0, n - 1), max_size=2 * n))
    return n, recs, counter, voffset, poffset, ids


def build(name, n, recs, counter, voffset, poffset):
    t = impl(name).timer.Timers(n)
    for i, rec in enumerate(recs):
        for k, val in rec.items():
            t.records[i][k] = val
    v = t.vm[0]
    v["counter"], v["voffset"], v["poffset"] = counter, voffset, poffset
    return t


def snapshot(t):
    return t.records.copy(), t.vm.copy()


# ====================================================================== agree
@pytest.mark.parametrize("op", ["save", "restore", "expiry", "all"])
@SETTINGS
@given(w=world())
def test_core_and_pure_agree(op, w):
    """The same batch call on the same records gives the same records, VM
    record and results on the Cython core and the pure twin (ids may repeat:
    a second save/restore of one vCPU is a no-op, §A.2/§A.4 'no-op if
    loaded / not loaded')."""
    n, recs, counter, voffset, poffset, ids = w
    ids_arr = np.array(ids, dtype=np.int64)
    out = {}
    for name in ("core", "pure"):
        t = build(name, n, recs, counter, voffset, poffset)
        res = None
        if op in ("save", "all"):
            t.save_batch(ids_arr)
        if op in ("restore", "all"):
            t.restore_batch(ids_arr)
        if op in ("expiry", "all"):
            res = t.expiry_batch(ids_arr).tolist()
        out[name] = (t.records.tobytes(), t.vm.tobytes(), res)
    assert out["core"] == out["pure"]


# ============================================================== plain loop
def _reference_ticks(rec, counter, voffset):
    vnow = (counter - voffset) & U64
    best = T.NO_DEADLINE
    if T.can_fire(rec["hw_cntv_ctl"]):
        best = T.delta(vnow, rec["hw_cntv_cval"])
    if T.can_fire(rec["cntp_ctl"]):
        best = min(best, T.delta(counter, rec["cntp_cval"]))
    return best


def _reference_deadline(rec, counter, voffset):
    """kvm_timer_earliest_exp (§A.5) from a record whose vtimer is on the
    hardware fields, as a deadline on the physical counter: min over the
    timers that can fire (ENABLE && !IMASK) of the ticks to CVAL (0 once
    met), added to the counter and saturated at 2**64 - 1; NO_DEADLINE when
    none can fire.  The ptimer's offset is 0 here."""
    best = _reference_ticks(rec, counter, voffset)
    return best if best == T.NO_DEADLINE else min(counter + best, U64)


@pytest.mark.parametrize("backend", ["core", "pure"])
@SETTINGS
@given(w=world())
def test_expiry_matches_plain_timer_loop(backend, w):
    """save_batch + restore_batch + expiry_batch on loaded vCPUs does the
    record work plain_timer_loop does (the benchmark's baseline): the same
    records afterwards and the same expiry deadlines, both equal to the
    reference rule.  plain_timer_loop takes the physical offset as 0, so
    poffset = 0 here; ids are distinct (the plain loop saves
    unconditionally, the model only a loaded timer).  A deadline past
    2**64 - 1 is compared in test_plain_timer_loop_saturates (plain_timer_loop
    gets it wrong)."""
    n, recs, counter, voffset, _, ids = w
    ids = sorted(set(ids))
    for r in recs:
        r["loaded"] = True
    mod = impl(backend).timer
    t = build(backend, n, recs, counter, voffset, 0)
    plain_recs = t.records.copy()
    t.save_batch(ids)
    t.restore_batch(ids)
    got = t.expiry_batch(ids)
    plain = mod.plain_timer_loop(plain_recs, np.array(ids, dtype=np.int64), counter, voffset)
    assert got.dtype == np.uint64 and plain.dtype == np.uint64
    want = [_reference_deadline(recs[i], counter, voffset) for i in ids]
    assert got.tolist() == want
    assert t.records.tobytes() == plain_recs.tobytes()
    for k, i in enumerate(ids):
        ticks = _reference_ticks(recs[i], counter, voffset)
        if ticks == T.NO_DEADLINE or ticks <= U64 - counter:    # no saturation involved
            assert int(plain[k]) == want[k]
    # The vtimer's state went round trip: KVM's copy and the hardware agree.
    for i in ids:
        rec = t.records[i]
        assert int(rec["cntv_cval"]) == int(rec["hw_cntv_cval"]) == recs[i]["hw_cntv_cval"]
        assert int(rec["hw_cntvoff"]) == voffset
        assert bool(rec["loaded"])


@pytest.mark.parametrize("backend", ["core", "pure"])
def test_plain_timer_loop_saturates(backend):
    """A vtimer whose deadline lies beyond the 64-bit counter's range: both
    expiry_batch and plain_timer_loop give 2**64 - 1."""
    mod = impl(backend).timer
    counter, voffset = (1 << 63) + 5, 1 << 63
    t = build(backend, 1, [{"loaded": True, "hw_cntv_ctl": T.CTL_ENABLE, "hw_cntv_cval": U64,
                            "hw_cntvoff": voffset}], counter, voffset, 0)
    plain_recs = t.records.copy()
    t.save_batch([0])
    t.restore_batch([0])
    assert t.expiry_batch([0]).tolist() == [U64]
    assert mod.plain_timer_loop(plain_recs, [0], counter, voffset).tolist() == [U64]


@pytest.mark.parametrize("backend", ["core", "pure"])
def test_plain_loop_matches_both_backends(backend):
    """The core's and the pure twin's plain_timer_loop agree on one fixed
    case (records and deadlines)."""
    recs = np.zeros(3, dtype=T.TIMER_VCPU)
    recs["hw_cntv_ctl"] = [1, 3, 1]
    recs["hw_cntv_cval"] = [100, 50, 10]
    recs["cntp_ctl"] = [1, 0, 1]
    recs["cntp_cval"] = [200, 0, 5]
    a, b = recs.copy(), recs.copy()
    ra = impl("core").timer.plain_timer_loop(a, [0, 1, 2], 20, 0)
    rb = impl("pure").timer.plain_timer_loop(b, [0, 1, 2], 20, 0)
    assert ra.tolist() == rb.tolist() == [100, T.NO_DEADLINE, 20]
    assert a.tobytes() == b.tobytes()


# ================================================================== bad ids
@pytest.mark.parametrize("backend", ["core", "pure"])
@pytest.mark.parametrize("method", ["save_batch", "restore_batch", "expiry_batch"])
@pytest.mark.parametrize("ids,bad_k", [([0, 1, 4], 2), ([-1], 0), ([2, 3, 0, 99, 1], 3)])
def test_bad_ids_refused(backend, method, ids, bad_k):
    """An id outside 0..n-1 raises ValueError naming its index (vgic.ich
    vcpu_indices: "idx[k] = v is not a vCPU index") and nothing changes,
    even for the valid ids before it (everything is checked first)."""
    n = 4
    recs = [{"loaded": bool(i % 2), "hw_cntv_ctl": 1, "hw_cntv_cval": 10 + i, "cntv_ctl": 1,
             "cntv_cval": 20 + i} for i in range(n)]
    t = build(backend, n, recs, 7, 3, 0)
    before = snapshot(t)
    with pytest.raises(ValueError, match=rf"idx\[{bad_k}\] = {ids[bad_k]}"):
        getattr(t, method)(np.array(ids, dtype=np.int64))
    assert t.records.tobytes() == before[0].tobytes()
    assert t.vm.tobytes() == before[1].tobytes()


@pytest.mark.parametrize("backend", ["core", "pure"])
@pytest.mark.parametrize("method", ["save_batch", "restore_batch", "expiry_batch"])
def test_bad_ids_shape(backend, method):
    """ids must be one-dimensional (ValueError)."""
    t = impl(backend).timer.Timers(3)
    with pytest.raises(ValueError):
        getattr(t, method)(np.zeros((2, 2), dtype=np.int64))


@pytest.mark.parametrize("backend", ["core", "pure"])
def test_empty_ids(backend):
    t = impl(backend).timer.Timers(3)
    before = snapshot(t)
    t.save_batch([])
    t.restore_batch(np.array([], dtype=np.int64))
    out = t.expiry_batch(np.array([], dtype=np.int64))
    assert out.dtype == np.uint64 and out.size == 0
    assert t.records.tobytes() == before[0].tobytes()


# ================================================================ outside ids
@pytest.mark.parametrize("backend", ["core", "pure"])
@SETTINGS
@given(w=world())
def test_records_outside_ids_untouched(backend, w):
    """save_batch / restore_batch / expiry_batch change only the records in
    ids (and never the VM record)."""
    n, recs, counter, voffset, poffset, ids = w
    t = build(backend, n, recs, counter, voffset, poffset)
    before = snapshot(t)
    t.save_batch(ids)
    t.restore_batch(ids)
    t.expiry_batch(ids)
    t.save_batch(ids)
    outside = sorted(set(range(n)) - set(ids))
    for i in outside:
        assert t.records[i].tobytes() == before[0][i].tobytes(), i
    assert t.vm.tobytes() == before[1].tobytes()


@pytest.mark.parametrize("backend", ["core", "pure"])
def test_save_restore_semantics(backend):
    """timer_save_state (§A.4): CTL read raw - ISTATUS included when the
    condition holds -, CVAL read, CTL := 0, CNTVOFF := 0, loaded = False:
    2 R + 2 W; a second save is a no-op.  timer_restore_state (§A.2):
    CNTVOFF := voffset, CVAL, CTL (without ISTATUS), loaded = True: 3 W; a
    second restore is a no-op."""
    t = impl(backend).timer.Timers(2)
    v = t.vm[0]
    v["counter"], v["voffset"] = 1000, 100
    r = t.records
    r[0]["loaded"] = True
    r[0]["hw_cntv_ctl"] = T.CTL_ENABLE
    r[0]["hw_cntv_cval"] = 900                     # vnow = 900: met
    r[0]["hw_cntvoff"] = 100
    t.save_batch([0, 0])
    assert int(r[0]["cntv_ctl"]) == T.CTL_ENABLE | T.CTL_ISTATUS
    assert int(r[0]["cntv_cval"]) == 900
    assert int(r[0]["hw_cntv_ctl"]) == 0 and int(r[0]["hw_cntvoff"]) == 0
    assert not r[0]["loaded"]
    assert (int(r[0]["sysreg_reads"]), int(r[0]["sysreg_writes"])) == (2, 2)
    t.restore_batch([0, 0])
    assert int(r[0]["hw_cntv_ctl"]) == T.CTL_ENABLE
    assert int(r[0]["hw_cntv_cval"]) == 900 and int(r[0]["hw_cntvoff"]) == 100
    assert r[0]["loaded"]
    assert (int(r[0]["sysreg_reads"]), int(r[0]["sysreg_writes"])) == (2, 5)
    # expiry: met => deadline now; vCPU 1 can fire nothing => NO_DEADLINE.
    assert t.expiry_batch([0, 1]).tolist() == [1000, T.NO_DEADLINE]
    r[1]["cntp_ctl"] = T.CTL_ENABLE
    r[1]["cntp_cval"] = U64                        # far: deadline saturates at 2**64 - 1
    v["poffset"] = 0
    assert t.expiry_batch([1]).tolist() == [U64]
