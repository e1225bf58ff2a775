"""``vgic.report``: the experiments behind ``vgic report``.

One quick run (module-scoped, on the process's backend) is checked for
what it writes: a CSV per experiment with its header and sensible numbers,
``summary.md`` with a section per experiment, PNGs exactly when matplotlib
imports, progress as the CLI's bar needs it.  The answers are checked to be
derived from the data: synthetic rows with a known crossing, ratio or
count law go through the answer functions (and through ``run`` itself)
and the known figure must come back.  The per-register bus of the 2016
experiment must replay exactly as the VM's own replay does, or its time
would mean nothing.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import vgic
from vgic import regmap
from vgic import report as R
from vgic.trace import mixed_trace

HAVE_MPL = importlib.util.find_spec("matplotlib") is not None

#: Columns that hold a category (a word), per experiment, and their values.
CATEGORIES = {
    "lr_order": {"lr_order": {"direct", "reverse"}},
    "mmio_dispatch": {"backend": {"core", "pure"}, "design": {"direct", "bsearch", "per_register"}},
    "timer_policy": {"workload": {"load_put", "timer_10ms"}, "policy": {"lazy", "eager"}},
    "its_pending_sync": {},
    "sve_switch": {"policy": {"lazy", "eager"}},
    "snapshot": {"sweep": {"vcpus", "irqs", "lpis", "vq", "target"}},
}
#: Columns that may be zero (counts of things a cell may not do at all).
MAY_BE_ZERO = {"traps_per_entry", "fp_use_pct", "lpis", "vector_bits"}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    calls: list[tuple[str, int, int]] = []
    result = R.run(out, quick=True, progress=lambda name, step, total: calls.append((name, step, total)))
    return out, result, calls


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


# ------------------------------------------------------------ what run writes
def test_table_has_the_five_experiments():
    assert [e.name for e in R.EXPERIMENTS][:5] == ["lr_order", "mmio_dispatch", "timer_policy",
                                                   "its_pending_sync", "sve_switch"]
    for e in R.EXPERIMENTS:
        assert e.thread_file.startswith(("2015-", "2016-", "2017-")) and e.thread_file.endswith(".txt")
        assert e.question and e.method and e.columns


@pytest.mark.parametrize("name", [e.name for e in R.EXPERIMENTS])
def test_csv_header_and_numbers(quick, name):
    out, result, _ = quick
    exp = next(e for e in R.EXPERIMENTS if e.name == name)
    header, rows = read_csv(out / f"{name}.csv")
    assert tuple(header) == exp.columns
    assert len(rows) == len(result["experiments"][name]["rows"]) > 0
    cats = CATEGORIES.get(name, {})
    for row in rows:
        assert len(row) == len(header)
        for col, cell in zip(header, row):
            if col in cats:
                assert cell in cats[col], (col, cell)
                continue
            v = float(cell)            # plain numbers: no units, no separators
            assert "," not in cell and math.isfinite(v), (col, cell)
            assert v >= 0 if col in MAY_BE_ZERO else v > 0, (col, cell)


def test_csv_counts_are_the_models(quick):
    """The timer counts are exact (docs/timer-facts.md §E): lazy 7 + 4k,
    eager 11k per load..put with k entries."""
    out, _, _ = quick
    header, rows = read_csv(out / "timer_policy.csv")
    col = {c: i for i, c in enumerate(header)}
    for row in rows:
        if row[col["workload"]] == "load_put":
            k = int(row[col["entries_per_load"]])
            want = 7 + 4 * k if row[col["policy"]] == "lazy" else 11 * k
            assert float(row[col["accesses"]]) == want


def test_mmio_rows_cover_the_backend(quick):
    _, result, _ = quick
    rows = result["experiments"]["mmio_dispatch"]["rows"]
    designs = {(r["backend"], r["design"]) for r in rows}
    assert {("pure", "direct"), ("pure", "bsearch"), ("pure", "per_register")} <= designs
    assert (("core", "direct") in designs) == (result["backend"] == "core")


def test_summary_has_a_section_per_experiment(quick):
    out, result, _ = quick
    text = (out / "summary.md").read_text(encoding="utf-8")
    assert result["summary"] == str(out / "summary.md")
    for i, e in enumerate(R.EXPERIMENTS, 1):
        assert f"## {i}. `{e.name}`: {e.title}" in text
        assert e.question in text
        assert result["experiments"][e.name]["answer"]["text"] in text
        assert f"[`{e.name}.csv`]({e.name}.csv)" in text
        assert (f"![{e.name}]({e.name}.png)" in text) == HAVE_MPL
    assert ("Plots: skipped" in text) != HAVE_MPL
    assert result["backend"] in ("core", "pure") and ("Cython core" in text) == (result["backend"] == "core")


def test_pngs_exist_iff_matplotlib(quick):
    out, result, _ = quick
    for e in R.EXPERIMENTS:
        assert (out / f"{e.name}.png").exists() == HAVE_MPL
    assert result["plots"] == HAVE_MPL


def test_pngs_are_small_images(quick):
    pytest.importorskip("matplotlib")
    out, _, _ = quick
    for e in R.EXPERIMENTS:
        data = (out / f"{e.name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert (width, height) == (600, 400)        # figsize 6x4 at 100 dpi
        assert len(data) < 200_000


def test_result_lists_what_was_written(quick):
    out, result, _ = quick
    assert {Path(p).name for p in result["paths"]} == (
        {f"{e.name}.csv" for e in R.EXPERIMENTS} | {"summary.md"}
        | ({f"{e.name}.png" for e in R.EXPERIMENTS} if HAVE_MPL else set()))
    assert all(Path(p).exists() for p in result["paths"])
    json.dumps(result)                  # plain data, for a CLI's --json


def test_progress_per_experiment(quick):
    _, _, calls = quick
    for e in R.EXPERIMENTS:
        mine = [(s, t) for n, s, t in calls if n == e.name]
        assert mine[0][0] == 0 and mine[-1][0] == mine[-1][1] > 0
        assert all(t == mine[0][1] for _, t in mine)
        assert [s for s, _ in mine] == sorted(s for s, _ in mine)
    assert [n for n, _, _ in calls] == sorted((n for n, _, _ in calls),
                                               key=[e.name for e in R.EXPERIMENTS].index)


def test_without_matplotlib(tmp_path, monkeypatch):
    """matplotlib is optional: without it the CSVs and the summary are
    written, no PNG, and the summary says the plots were skipped."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = R.run(tmp_path, quick=True, only=["timer_policy", "its_pending_sync"])
    assert not result["plots"] and "matplotlib" in result["plots_skipped"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["its_pending_sync.csv", "summary.md", "timer_policy.csv"]
    text = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert "Plots: skipped" in text and "*Plot skipped: matplotlib is not importable.*" in text
    assert "timer_policy" in text and "its_pending_sync" in text and ".png" not in text


def test_only_selects_and_checks_names(tmp_path):
    result = R.run(tmp_path / "new" / "dir", quick=True, only=["its_pending_sync"])
    assert list(result["experiments"]) == ["its_pending_sync"]
    with pytest.raises(ValueError, match="unknown experiment"):
        R.run(tmp_path, quick=True, only=["lr_order", "nope"])


# ------------------------------------------------- the answers are derived
def test_crossover_finds_the_crossing_of_lines():
    xs = [1, 2, 5, 8, 12, 20, 50]
    a = [5 + 1.0 * x for x in xs]       # meets b at x = 10
    b = [10 + 0.5 * x for x in xs]
    assert R.crossover(xs, a, b) == pytest.approx(10)
    assert R.fit_crossover(xs, a, b) == pytest.approx(10)
    # Order of the points does not matter.
    assert R.crossover(xs[::-1], a[::-1], b[::-1]) == pytest.approx(10)


def test_crossover_is_for_good():
    """An early noisy point above does not count: the crossing is the one
    after which ``a`` stays above."""
    xs = [1, 2, 3, 4, 5]
    assert R.crossover(xs, [9, 1, 1, 6, 7], [5, 5, 5, 5, 5]) == pytest.approx(3 + 4 / 5)
    assert R.crossover(xs, [6, 6, 6, 6, 6], [5, 5, 5, 5, 5]) == 1          # above everywhere
    assert R.crossover(xs, [6, 6, 6, 6, 4], [5, 5, 5, 5, 5]) is None       # not above at the end
    assert R.crossover(xs, [1, 1, 1, 1, 1], [5, 5, 5, 5, 5]) is None


def test_affine_fit():
    xs = [10, 100, 1_000, 10_000]
    c0, c1 = R.affine_fit(xs, [3 + 0.002 * x for x in xs])
    assert c0 == pytest.approx(3) and c1 == pytest.approx(0.002)
    with pytest.raises(ValueError):
        R.affine_fit([1], [1])


def test_fastest_keeps_each_points_best_round():
    rows = [{"n": 1, "kind": "a", "t": 5.0, "u": 1.0}, {"n": 2, "kind": "a", "t": 3.0, "u": 2.0},
            {"n": 1, "kind": "a", "t": 4.0, "u": 9.0}, {"n": 1, "kind": "b", "t": 1.0, "u": 1.0}]
    assert R.fastest(rows, ("t", "u")) == [{"n": 1, "kind": "a", "t": 4.0, "u": 1.0},
                                          {"n": 2, "kind": "a", "t": 3.0, "u": 2.0},
                                          {"n": 1, "kind": "b", "t": 1.0, "u": 1.0}]


def test_steps_rounds_and_progress():
    calls = []
    ctx = R.Context(True, "core", lambda step, total: calls.append((step, total)))
    assert list(ctx.steps("abc", rounds=2)) == list("abcabc")
    assert calls == [(i, 6) for i in range(7)]


def answer_of(name):
    return next(e for e in R.EXPERIMENTS if e.name == name).answer


def test_its_answer_comes_from_the_data():
    """Synthetic per-LPI 2 + 0.002 n µs against scan 9 + 0.001 n µs cross at
    n = 7,000: the answer must find it, and say which is cheaper at 10 and
    1,000 LPIs (the thread's "10? 1000?")."""
    ns = [10, 100, 1_000, 5_000, 10_000, 40_000, 100_000]
    rows = [{"lpis": n, "per_lpi_us": 2 + 0.002 * n, "scan_us": 9 + 0.001 * n} for n in ns]
    ans = answer_of("its_pending_sync")(rows)
    assert ans.values["crossover_lpis"] == pytest.approx(7_000)
    assert ans.values["fit_crossover_lpis"] == pytest.approx(7_000)
    assert ans.values["per_lpi_cheaper_at_10_and_1000"]
    assert "7,000 LPIs" in ans.text and len(ans.table) == len(ns)
    # Moved crossing, moved answer.
    rows = [{"lpis": n, "per_lpi_us": 2 + 0.002 * n, "scan_us": 22 + 0.001 * n} for n in ns]
    assert answer_of("its_pending_sync")(rows).values["crossover_lpis"] == pytest.approx(20_000)
    # A scan that never wins.
    rows = [{"lpis": n, "per_lpi_us": 1 + 0.001 * n, "scan_us": 9 + 0.002 * n} for n in ns]
    ans = answer_of("its_pending_sync")(rows)
    assert ans.values["crossover_lpis"] is None and "never" in ans.text


def test_timer_answer_comes_from_the_data():
    def rows(lazy, eager):
        return [{"workload": "load_put", "policy": p, "entries_per_load": k, "reads": 1, "writes": f(k) - 1,
                 "accesses": f(k), "us_per_cycle": 1.0 + k}
                for k in range(1, 9) for p, f in (("lazy", lazy), ("eager", eager))]
    ans = answer_of("timer_policy")(rows(lambda k: 3 + 5 * k, lambda k: 1 + 6 * k))
    assert ans.values["equal_at"] == [2] and ans.values["lazy_fewer_from"] == 3
    assert ans.values["lazy_more_at"] == [1]
    assert ans.values["lazy_fit"] == pytest.approx((3, 5)) and ans.values["eager_fit"] == pytest.approx((1, 6))
    assert "3 + 5·k" in ans.text and "equal at k = 2" in ans.text


def test_lr_order_answer_comes_from_the_data():
    def rows(factor):
        return [{"vcpus": 512, "lr_order": o, "used_lrs": u, "ns_per_vcpu": (4 + u) * (factor if o == "reverse" else 1)}
                for u in range(1, 17) for o in ("direct", "reverse")]
    slow = answer_of("lr_order")(rows(1.2))
    assert not slow.values["same_within_noise"]
    assert slow.values["batches"]["512"]["reverse_over_direct"] == pytest.approx(1.2)
    assert "20 % slower" in slow.text
    same = answer_of("lr_order")(rows(1.01))
    assert same.values["same_within_noise"] and "within the noise" in same.text


def test_mmio_answer_comes_from_the_data():
    """A replay of 12 ns per access plus 3 µs per call; a binary search
    1.5x the direct index on long traces: both must come back, and the
    per-register device count follows the register tables."""
    rows = []
    for n in (1_000, 10_000, 100_000, 1_000_000):
        direct = 12 + 3_000 / n
        rows += [{"backend": "core", "design": "direct", "trace_len": n, "ns_per_access": direct},
                 {"backend": "core", "design": "bsearch", "trace_len": n, "ns_per_access": 1.5 * direct}]
    for n in (1_000, 10_000):
        rows += [{"backend": "pure", "design": d, "trace_len": n, "ns_per_access": f * 4_000.0}
                 for d, f in (("direct", 1.0), ("bsearch", 1.1), ("per_register", 0.5))]
    ans = answer_of("mmio_dispatch")(rows)
    assert ans.values["replay_ns_per_access"] == pytest.approx(12)
    assert ans.values["replay_ns_per_call"] == pytest.approx(3_000)
    assert ans.values["linear"]
    assert ans.values["core_bsearch_over_direct"] == pytest.approx(1.5)
    assert ans.values["per_register_over_twin_direct"] == pytest.approx(0.5)
    assert ans.values["devices"] == R.per_register_devices(4)
    assert ans.values["vcpus_over_iobus_limit"] == min(
        v for v in range(1, 513) if R.per_register_devices(v) > R.NR_IOBUS_DEVS)
    assert "1.50× the direct index" in ans.text and "0.50× the twin's direct-index replay" in ans.text


def test_sve_answer_counts_cells():
    rows = []
    for bits in (128, 2048):
        for use in (0, 100):
            for policy in ("lazy", "eager"):
                eager_ns = 200.0 if (bits, use) != (128, 100) else 90.0     # eager wins one cell
                rows.append({"vector_bits": bits, "fp_use_pct": use, "policy": policy,
                             "ns_per_entry": 100.0 if policy == "lazy" else eager_ns,
                             "bytes_per_entry": 100.0 if policy == "lazy" else 400.0, "traps_per_entry": 0.25})
    ans = answer_of("sve_switch")(rows)
    assert ans.values["lazy_faster_cells"] == 3 and ans.values["eager_faster_cells"] == 1
    assert "128 bits at 100 %" in ans.text


def test_run_uses_what_measure_returns(tmp_path, monkeypatch):
    """Through run itself: synthetic rows in, their CSV and their derived
    answer out (the extension point a sixth experiment uses)."""
    ns = [10, 1_000, 10_000, 100_000]
    fake = R.Experiment(
        name="fake", title="Fake", thread="none", thread_file="none.txt", question="Where do they cross?",
        method="Made up.", columns=("lpis", "per_lpi_us", "scan_us"),
        measure=lambda ctx: [{"lpis": n, "per_lpi_us": 2 + 0.002 * n, "scan_us": 9 + 0.001 * n}
                             for n in ctx.steps(ns)],
        answer=answer_of("its_pending_sync"),
        plot=R.PlotSpec("fake", (R.Panel("lpis", ("per_lpi_us", "scan_us"), "LPIs", "µs", logx=True),)))
    monkeypatch.setattr(R, "EXPERIMENTS", (fake,))
    result = R.run(tmp_path, quick=True)
    header, rows = read_csv(tmp_path / "fake.csv")
    assert header == ["lpis", "per_lpi_us", "scan_us"]
    assert [float(r[0]) for r in rows] == ns and float(rows[1][1]) == pytest.approx(4)
    assert result["experiments"]["fake"]["answer"]["values"]["crossover_lpis"] == pytest.approx(7_000)
    assert "Where do they cross?" in (tmp_path / "summary.md").read_text(encoding="utf-8")


def test_register(monkeypatch):
    monkeypatch.setattr(R, "EXPERIMENTS", R.EXPERIMENTS)
    extra = R.Experiment(name="extra_experiment", title="t", thread="t", thread_file="t", question="q", method="m",
                         columns=("x",), measure=lambda ctx: [{"x": 1}],
                         answer=lambda rows: R.Answer(("x",), (("1",),), "a", {}),
                         plot=R.PlotSpec("t", (R.Panel("x", ("x",), "x", "x"),)))
    R.register(extra)
    assert R.EXPERIMENTS[-1] is extra
    with pytest.raises(ValueError, match="exists"):
        R.register(extra)


# ------------------------------------- the 2016 experiment's per-register bus
def test_per_register_devices_follow_the_tables():
    per_vcpu = len(regmap.FRAMES[regmap.FRAME_GICR_RD].regions) + len(regmap.FRAMES[regmap.FRAME_GICR_SGI].regions)
    assert R.per_register_devices(1) + per_vcpu == R.per_register_devices(2)
    bus = R.PerRegisterBus(vgic.VM(nr_vcpus=3, nr_irqs=64, backend="pure"))
    assert len(bus.devices) == R.per_register_devices(3)
    starts = [d.start for d in bus.devices]
    assert starts == sorted(starts)
    assert all(a.end <= b.start for a, b in zip(bus.devices, bus.devices[1:]))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_per_register_bus_replays_as_the_vm(seed):
    """Same reads and same named state as ``vm.mmio_replay`` (kvm-facts §2:
    one check for every region; a width the region refuses, a misaligned
    access or an INTID beyond nr_irqs is RAZ/WI)."""
    trace = mixed_trace(1_500, nr_vcpus=4, nr_irqs=128, seed=seed)
    rng = np.random.default_rng(seed)
    odd = rng.choice(len(trace), 200, replace=False)
    trace["size"][odd[:100]] = 2                                   # halfword: refused everywhere
    trace["addr"][odd[100:]] += np.uint64(1)                       # misaligned
    trace["value"][odd] = 0
    ref = vgic.VM(nr_vcpus=4, nr_irqs=128, backend="pure")
    model = vgic.VM(nr_vcpus=4, nr_irqs=128, backend="pure")
    assert np.array_equal(R.PerRegisterBus(model).replay(trace), ref.mmio_replay(trace))
    assert model.state() == ref.state()


def test_per_register_bus_checks_first():
    vm = vgic.VM(nr_vcpus=2, nr_irqs=64, backend="pure")
    bus = R.PerRegisterBus(vm)
    trace = mixed_trace(10, nr_vcpus=2, nr_irqs=64)
    before = vm.state()
    bad = trace.copy()
    bad["vcpu"][7] = 2
    with pytest.raises(ValueError, match=r"trace\[7\]"):
        bus.replay(bad)
    bad = trace.copy()
    bad["size"][3] = 3
    with pytest.raises(ValueError, match=r"trace\[3\]"):
        bus.replay(bad)
    assert vm.state() == before
    with pytest.raises(ValueError, match="pure"):
        R.PerRegisterBus(SimpleNamespace(backend="core"))      # the core's handlers are C, out of reach
