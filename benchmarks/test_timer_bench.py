"""Arch-timer benchmarks (issue #9): kvm-unit-tests' timer_10ms and the
world-switch loops under the lazy and eager policies (time and timer
system-register accesses per cycle), and the batch timer save/restore and
expiry kernels over 100,000 vCPUs beside a plain C loop doing the same
record work.  Targets are ratios measured in the same run."""
import numpy as np
import pytest

from vgic.bench import timer_batch_seconds, timer_cycle_costs

KINDS = ["enter_exit", "load_put", "timer_10ms"]
POLICIES = ["lazy", "eager"]


@pytest.fixture(scope="module")
def timer_core():
    return pytest.importorskip("vgic._core.timer")


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.benchmark(group="timer_cycle")
def test_timer_cycle(benchmark, kind, policy, timer_core):
    """One cycle of ``kind`` (see vgic.bench.timer_cycle_costs); the timer
    sysreg reads and writes per cycle go in extra_info."""
    seconds, reads, writes = timer_cycle_costs("core", policy, kind, 200, 1)
    benchmark.extra_info.update(reads_per_cycle=reads, writes_per_cycle=writes)
    benchmark.pedantic(timer_cycle_costs, args=("core", policy, kind, 200, 1), rounds=5)


@pytest.mark.parametrize("how", ["model", "plain"])
@pytest.mark.benchmark(group="timer_batch")
def test_timer_batch(benchmark, how, timer_core):
    """save_batch + restore_batch + expiry_batch over 100,000 vCPUs, or the
    plain C loop doing the same record work."""
    n = 100_000
    t = timer_core.Timers(n)
    rng = np.random.default_rng(1)
    t.records["cntv_ctl"] = rng.integers(0, 4, n)
    t.records["cntv_cval"] = rng.integers(0, 1 << 40, n, dtype=np.uint64)
    ids = np.arange(n, dtype=np.int64)
    t.restore_batch(ids)
    if how == "model":
        def work():
            t.save_batch(ids)
            t.restore_batch(ids)
            return t.expiry_batch(ids)
        benchmark(work)
    else:
        recs = t.records.copy()
        benchmark(timer_core.plain_timer_loop, recs, ids, 0, 0)


# ---------------------------------------------------------------- the targets
def test_target_timer_batch_vs_plain_loop(timer_core):
    """Issue #9: batch timer save/restore and expiry over 100,000 vCPUs
    within 1.5x of a plain C loop doing the same work, measured beside it
    (best of three measurements of seven runs each: the machine is shared)."""
    ratio = min(m / p for m, p in (timer_batch_seconds(100_000, 7) for _ in range(3)))
    assert ratio <= 1.5, f"{ratio:.2f}x the plain loop"


def test_lazy_saves_the_per_entry_accesses(timer_core):
    """The 2017 series' point, measured: with the vCPU loaded across
    entries, lazy costs only nVHE's CNTHCTL_EL2 toggles per entry and exit
    (1 read + 1 write each way) where eager also saves and restores the
    vtimer (CNTVOFF, CVAL, CTL written at entry; CTL, CVAL read and CTL,
    CNTVOFF written at exit): 4 + 7 against 2 + 2 (timer-facts §E, §A.8)."""
    _, lr, lw = timer_cycle_costs("core", "lazy", "enter_exit", 50, 1)
    _, er, ew = timer_cycle_costs("core", "eager", "enter_exit", 50, 1)
    assert (lr, lw) == (2, 2)
    assert (er, ew) == (4, 7)
