"""The experiments behind ``vgic report``: five design questions from the
KVM/arm64 mailing lists, measured on this model.

Each experiment is one row of :data:`EXPERIMENTS`: its name, a title, the
thread whose question it answers, the question, how it is measured, the CSV
columns, a function that measures and returns one row per measured point, a
function that derives the answer from those rows (a table of key figures,
a paragraph, the derived values) and a plot specification.  :func:`run`
walks the table and writes, into one directory:

* ``<name>.csv`` per experiment: a header row, then one row per measured
  point, plain numbers (the category columns are words);
* ``<name>.png`` per experiment, only if matplotlib imports (the optional
  ``plots`` extra; drawn with the Agg canvas, nothing global is touched);
* ``summary.md``: per experiment the thread's question, the key figures,
  the answer computed from the data and the plot, if there is one.

The experiments measure the process's default implementation (the Cython
core, or the pure-Python twin with ``VGIC_PUREPYTHON=1``) unless ``run`` is
given ``backend=``; the threads ask about the cost of compiled code, so
only a run on the core speaks to them in time (counts of register
accesses, bytes and traps are the same on both).

Adding an experiment (the ``snapshot`` one is next): write its measuring
function ``(ctx: Context) -> list[Row]`` (time one thing per row with
:mod:`vgic.bench`'s helpers, sizes from ``ctx.pick``, iterate with
``ctx.steps`` so progress is reported) and its answer function
``(rows) -> Answer``, then add one :class:`Experiment` row at the marked
place at the end of :data:`EXPERIMENTS`.  Code outside this module can call
:func:`register` instead.

Run it as ``vgic report [--quick] OUTDIR`` or
``python -c "import vgic.report as r; r.run('out')"``.
"""
from __future__ import annotations

import csv
import datetime
import math
import os
import platform
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np

from vgic import _backend, bench, ich, regmap
from vgic.trace import check_trace, mixed_trace

__all__ = [
    "EXPERIMENTS", "Experiment", "Context", "Answer", "Panel", "PlotSpec", "Row",
    "run", "register", "summary_markdown", "crossover", "affine_fit", "fit_crossover", "fastest",
    "PerRegisterBus", "per_register_devices", "NR_IOBUS_DEVS", "NOISE",
]

#: One measured point: column name -> a number (or a word for a category).
Row = dict[str, float | int | str]

T = TypeVar("T")

#: The relative difference below which two times are called the same: this
#: project's machine is shared, and its times move by about this much
#: between neighbouring runs.
NOISE = 0.05


# ================================================================ the table
@dataclass(frozen=True)
class Panel:
    """One axes of a plot: ``y`` column(s) against ``x``, one line per value
    of the ``series`` columns (and of ``dash``, drawn dashed/dotted), over
    the rows whose columns equal ``where``."""

    x: str
    y: tuple[str, ...]
    xlabel: str
    ylabel: str
    series: tuple[str, ...] = ()
    dash: str | None = None
    where: tuple[tuple[str, float | int | str], ...] = ()
    logx: bool = False
    logy: bool = False
    xbase: int = 10
    #: A line's legend: a format string over the series and dash columns and
    #: ``y`` (the y column's name in ``ynames``); None joins the values.
    label: str | None = None
    ynames: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlotSpec:
    """A figure: a title and its panels side by side; ``vline`` names an
    :attr:`Answer.values` entry drawn as a vertical line on every panel."""

    title: str
    panels: tuple[Panel, ...]
    vline: str | None = None
    vline_label: str = ""


@dataclass(frozen=True)
class Answer:
    """What an experiment's data says: a table of key figures, the answer as
    a Markdown paragraph, and the derived values (plain JSON data)."""

    headers: tuple[str, ...]
    table: tuple[tuple[str, ...], ...]
    text: str
    values: dict[str, Any]


@dataclass(frozen=True)
class Context:
    """What a measuring function gets: the mode, the backend it measures
    ("core" or "pure") and the progress callback of its experiment."""

    quick: bool
    backend: str
    tick: Callable[[int, int], None]

    @property
    def core(self) -> bool:
        """True when the compiled core is measured."""
        return self.backend == "core"

    def pick(self, quick: T, full: T, pure_quick: T | None = None, pure_full: T | None = None) -> T:
        """A size for this run: ``quick`` or ``full``, or the twin's own
        (smaller) ones when the twin is measured and they are given."""
        if not self.core:
            twin = pure_quick if self.quick else pure_full
            if twin is not None:
                return twin
        return quick if self.quick else full

    def steps(self, items: Sequence[T], rounds: int = 1) -> Iterator[T]:
        """Iterate ``items``, ``rounds`` times over, reporting progress
        before the first and after each.  Several rounds of every point,
        rather than more repeats of one point at a time, spread a slow phase
        of a shared machine over all the points (keep each point's fastest
        with :func:`fastest`)."""
        total = len(items) * rounds
        self.tick(0, total)
        done = 0
        for _ in range(rounds):
            for item in items:
                yield item
                done += 1
                self.tick(done, total)


def fastest(rows: list[Row], times: tuple[str, ...]) -> list[Row]:
    """One row per measured point (rows equal but for the ``times``
    columns), each time column its smallest over the rounds; in the order
    the points were first measured."""
    best: dict[tuple[Any, ...], Row] = {}
    for r in rows:
        key = tuple((k, v) for k, v in r.items() if k not in times)
        have = best.setdefault(key, dict(r))
        for t in times:
            have[t] = min(_f(have, t), _f(r, t))
    return list(best.values())


@dataclass(frozen=True)
class Experiment:
    """One row of :data:`EXPERIMENTS`."""

    #: File stem of the CSV and PNG, and the key in :func:`run`'s result.
    name: str
    title: str
    #: The mailing-list thread whose question this answers (subject, list, date).
    thread: str
    #: Its file under ``/work/shared/threads/`` in this project.
    thread_file: str
    #: The question the thread asked, in a few sentences.
    question: str
    #: How it is measured here (Markdown).
    method: str
    #: The CSV header, in order; every row has these keys.
    columns: tuple[str, ...]
    #: Measures; one row per point.
    measure: Callable[[Context], list[Row]]
    #: Derives the answer from the rows (never from constants).
    answer: Callable[[list[Row]], Answer]
    plot: PlotSpec


# ====================================================== derived quantities
def _pairs(xs: Sequence[float], *series: Sequence[float]) -> list[tuple[float, ...]]:
    if any(len(s) != len(xs) for s in series):
        raise ValueError("every series needs one value per x")
    return sorted(zip(map(float, xs), *(map(float, s) for s in series)))


def crossover(xs: Sequence[float], a: Sequence[float], b: Sequence[float]) -> float | None:
    """The x from which series ``a`` stays above series ``b``.

    Interpolated linearly between the last measured x where ``a <= b`` and
    the next one, so one noisy point before the real crossing cannot move
    it; ``xs[0]`` (the smallest x) if ``a > b`` everywhere, None if
    ``a <= b`` at the largest x (no crossing for good in the data)."""
    pts = _pairs(xs, a, b)
    if not pts:
        return None
    d = [pa - pb for _, pa, pb in pts]
    if d[-1] <= 0:
        return None
    last = max((i for i, v in enumerate(d) if v <= 0), default=-1)
    if last < 0:
        return pts[0][0]
    x0, x1 = pts[last][0], pts[last + 1][0]
    d0, d1 = d[last], d[last + 1]
    return x0 + (x1 - x0) * (0.0 - d0) / (d1 - d0)


def affine_fit(xs: Sequence[float], ys: Sequence[float], relative: bool = True) -> tuple[float, float]:
    """``(c0, c1)`` of the line ``y = c0 + c1 * x`` fitted by least squares;
    with ``relative`` each point's error is taken relative to its y, so
    points spanning decades weigh alike (the small ones fix c0)."""
    pts = _pairs(xs, ys)
    if len(pts) < 2:
        raise ValueError("a line needs two points")
    x = np.array([p[0] for p in pts])
    y = np.array([p[1] for p in pts])
    w = 1.0 / np.abs(y) if relative and np.all(y != 0) else np.ones_like(y)
    design = np.stack([w, x * w], axis=1)
    (c0, c1), *_ = np.linalg.lstsq(design, y * w, rcond=None)
    return float(c0), float(c1)


def fit_crossover(xs: Sequence[float], a: Sequence[float], b: Sequence[float]) -> float | None:
    """The positive x where the lines fitted to ``a`` and ``b``
    (:func:`affine_fit`) meet, or None if they do not meet there."""
    a0, a1 = affine_fit(xs, a)
    b0, b1 = affine_fit(xs, b)
    if a1 == b1:
        return None
    x = (b0 - a0) / (a1 - b1)
    return x if x > 0 else None


def _geomean(values: Iterable[float]) -> float:
    v = [float(x) for x in values]
    return math.exp(sum(math.log(x) for x in v) / len(v))


def _fmt(v: float, sig: int = 3) -> str:
    """``v`` to ``sig`` significant digits, thousands separated, no exponent."""
    if v == 0 or not math.isfinite(v):
        return f"{v:g}"
    digits = sig - 1 - math.floor(math.log10(abs(v)))
    if digits < 0:
        return f"{round(v, digits):,.0f}"
    return f"{v:,.{digits}f}"


def _count(v: float) -> str:
    """A count: an integer when it is one (a fitted 7.0000001 too), else two decimals."""
    if abs(v - round(v)) < 1e-6:
        return f"{round(v):,}"
    return f"{v:,.2f}"


def _f(row: Row, key: str) -> float:
    return float(row[key])


def _same(ratio: float) -> bool:
    return abs(ratio - 1.0) <= NOISE


# ============================================== 1. LR storage order (2015)
ORDERS = ("direct", "reverse")


def _lr_order_rows(ctx: Context) -> list[Row]:
    repeat = ctx.pick(3, 9, 1, 2)
    vm_vcpus = ctx.pick(regmap.MAX_VCPUS, regmap.MAX_VCPUS, 16, 64)
    # Each timing runs about this many vCPU save+restores, whatever the batch.
    per_timing = ctx.pick(10_000, 100_000, 1, 1)
    kernels: dict[tuple[int, str], tuple[Any, np.ndarray]] = {}
    keep: list[Any] = []          # the VMs own the records their kernels work on
    for order in ORDERS:
        vm, hyp_if, records = bench.lr_order_vm(ctx.backend, order, vm_vcpus)
        keep.append(vm)
        kernels[vm_vcpus, order] = (hyp_if, records)
    batches = [vm_vcpus]
    if ctx.core:
        # More vCPUs than a VM may have: the records stream through memory,
        # which is what the thread's prefetcher argument is about.
        stream = ctx.pick(20_000, 100_000)
        batches.append(stream)
        for order in ORDERS:
            kernels[stream, order] = bench.lr_stream_hyp_if(ctx.backend, order, stream)
    # The two orders alternate at each point, so a slow phase of a shared
    # machine hits both alike.
    points = [(n, used, order) for n in batches for used in range(1, 17) for order in ORDERS]
    rows: list[Row] = []
    for n, used, order in ctx.steps(points, ctx.pick(1, 3, 1, 1)):
        hyp_if, records = kernels[n, order]
        # A batch streamed from memory is one call per timing: more repeats.
        calls = per_timing // n
        seconds = bench.lr_save_restore_seconds(hyp_if, records, used, max(1, calls),
                                                repeat if calls else 2 * repeat)
        rows.append({"vcpus": n, "lr_order": order, "used_lrs": used, "ns_per_vcpu": seconds * 1e9})
    return fastest(rows, ("ns_per_vcpu",))


def _lr_order_answer(rows: list[Row]) -> Answer:
    table: list[tuple[str, ...]] = []
    per: dict[str, Any] = {}
    sentences = []
    # Does the cost drop (by more than the noise) at a multiple of four used LRs?
    steps: dict[int, list[bool]] = {}
    for n in sorted({int(r["vcpus"]) for r in rows}):
        cost = {(str(r["lr_order"]), int(r["used_lrs"])): _f(r, "ns_per_vcpu") for r in rows if int(r["vcpus"]) == n}
        used = sorted({u for _, u in cost})
        ratios = [cost["reverse", u] / cost["direct", u] for u in used]
        gm = _geomean(ratios)
        slope = {o: affine_fit(used, [cost[o, u] for u in used])[1] for o in ORDERS}
        steps[n] = [cost[o, u] < cost[o, u - 1] * (1 - 2 * NOISE)
                    for o in ORDERS for u in used if u % 4 == 0 and u - 1 in used]
        size = n * ich.VCPU_IF.itemsize
        where = (f"one VM's records, {size / 1024:,.0f} KiB" if n <= regmap.MAX_VCPUS else
                 f"more records than a VM has, {size / 1e6:,.0f} MB")
        # Flat: the fitted line moves less than the noise from the fewest to the most used LRs.
        flat = all(abs(slope[o]) * (used[-1] - used[0]) < 2 * NOISE * cost[o, used[0]] for o in ORDERS)
        per[str(n)] = {"reverse_over_direct": gm, "min": min(ratios), "max": max(ratios),
                       "at_16": ratios[-1], "ns_per_lr": slope, "where": where, "flat": flat}
        table.append((f"{n:,} ({where})", _fmt(cost["direct", used[0]]), _fmt(cost["direct", used[-1]]),
                      _fmt(cost["reverse", used[-1]]), f"{gm:.2f}×", f"{min(ratios):.2f}–{max(ratios):.2f}×",
                      f"{slope['direct']:.2f} / {slope['reverse']:.2f}"))
        if _same(gm):
            verdict = "the same within the noise"
        elif gm > 1:
            verdict = f"{(gm - 1) * 100:.0f} % slower"
        else:
            verdict = f"{(1 - gm) * 100:.0f} % faster"
        sentences.append(f"with {n:,} vCPUs ({where}) the reverse order is {verdict} "
                         f"({gm:.2f}× the direct order's time, geometric mean over 1–{used[-1]} used LRs, "
                         f"{ratios[-1]:.2f}× at {used[-1]})")
    all_same = all(_same(v["reverse_over_direct"]) for v in per.values())
    text = ("Measured, not assumed: " + "; ".join(sentences) + ". ")
    if all_same:
        text += ("So storing ICH_LR<n>_EL2 in slot 15 − n buys nothing here, and costs nothing either: "
                 "the plain order (slot n, what KVM stores today) is as fast, and the thread's worry "
                 "that writing the array backwards defeats the prefetcher does not show. ")
    else:
        text += ("So the storage order does matter in this model, by the amounts above; "
                 "see the plot for where along the used-LR axis. ")
    text += ("Each used LR adds about " + ", ".join(
        f"{v['ns_per_lr']['direct']:.2f} ns (direct) and {v['ns_per_lr']['reverse']:.2f} ns (reverse) "
        f"at {int(k):,} vCPUs" for k, v in per.items())
        + " to a save + restore on average")
    stepped = [n for n, s in steps.items() if s and sum(s) >= 0.75 * len(s)]
    if stepped:
        text += (f", but not smoothly at {', '.join(f'{n:,}' for n in stepped)} vCPUs: there the cost drops at "
                 f"a multiple of four used LRs in {sum(sum(steps[n]) for n in stepped)} of "
                 f"{sum(len(steps[n]) for n in stepped)} cases (the kernel moves four LRs per vector operation), "
                 "a pattern far larger than any difference between the orders")
    text += ". "
    for k, v in per.items():
        if v["flat"]:
            text += (f"At {int(k):,} vCPUs the time hardly depends on how many LRs are used: the batch is bound "
                     "by moving the records through memory, and the order of the stores inside a record does not "
                     "change that. ")
    text += ("The model copies the saved array in C on this machine; on arm64 the LRs "
          "themselves are system registers (MRS/MSR), so only the memory side of the argument is modelled.")
    return Answer(("vCPUs in the batch", "direct, 1 LR (ns)", "direct, 16 LRs (ns)", "reverse, 16 LRs (ns)",
                   "reverse / direct", "range", "ns per extra LR (direct / reverse)"),
                  tuple(table), text, {"batches": per, "same_within_noise": all_same, "steps_of_four": stepped})


# ============================================== 2. MMIO dispatch (2016)
class _Device(NamedTuple):
    start: int
    end: int
    frame_base: int
    region: regmap.Region
    ops: Any
    vcpu: int                   # the redistributor's vCPU, or -1: the accessor


_WIDTH_FLAG = {1: regmap.W8, 4: regmap.W32, 8: regmap.W64}


class PerRegisterBus:
    """The design the 2016 RFC started from: every register region of the
    distributor and of each redistributor registered as a device of its own
    on one bus, and an access handed straight to the handler of the device
    it hits.

    The bus finds the device as ``kvm_io_bus`` finds one (since 2011): an
    array of address ranges sorted by start and a binary search over all of
    them, so its cost grows with the number of devices, i.e. with the
    number of vCPUs; the framework it is compared with decodes the frame
    first and looks the region up inside it.  It runs on a twin VM
    (``backend="pure"``) and calls that VM's own handlers with KVM's region
    check, so it changes the VM exactly as :meth:`vgic.VM.mmio_replay` does
    (checked by the experiment); a guest access in no device reads 0 and
    ignores writes (with the framework, a hole in a frame does the same).
    Guest active-state accesses are not run halted (no vCPU runs here)."""

    def __init__(self, vm: Any) -> None:
        if vm.backend != "pure":
            raise ValueError("PerRegisterBus calls the twin's handlers: build the VM with backend='pure'")
        if vm.gic is None:
            raise ValueError("the VM has no vGICv3")
        self._state: Any = vm.gic.gic
        self._nr_vcpus: int = vm.nr_vcpus
        ops = type(self._state).ops
        devices: list[_Device] = []

        def register(frame_base: int, frame: int, vcpu: int) -> None:
            for r in regmap.FRAMES[frame].regions:
                if r.length:
                    devices.append(_Device(frame_base + r.offset, frame_base + r.offset + r.length, frame_base,
                                           r, ops[r.ops], vcpu))

        register(vm.dist_base, regmap.FRAME_GICD, -1)
        for v in vm.vcpus:
            register(v.rd_base, regmap.FRAME_GICR_RD, v.id)
            register(v.sgi_base, regmap.FRAME_GICR_SGI, v.id)
        devices.sort(key=lambda d: d.start)
        #: The devices, sorted by address.
        self.devices: tuple[_Device, ...] = tuple(devices)
        self._starts = [d.start for d in devices]

    def replay(self, trace: np.ndarray) -> np.ndarray:
        """Run a trace of :data:`vgic.MMIO_ACCESS` records as
        :meth:`vgic.VM.mmio_replay` does: every record is checked and its
        device found first (``ValueError`` naming a bad record, nothing
        run), then the accesses run in order; the values read, 0 for writes."""
        arr = check_trace(trace)
        addrs, values = arr["addr"].tolist(), arr["value"].tolist()
        vcpus, sizes, writes = arr["vcpu"].tolist(), arr["size"].tolist(), arr["write"].tolist()
        starts, devices = self._starts, self.devices
        found: list[_Device | None] = []
        for i, addr in enumerate(addrs):
            size = sizes[i]
            if size not in (1, 2, 4, 8):
                raise ValueError(f"trace[{i}]: size {size} is not one of 1, 2, 4, 8")
            if writes[i] and values[i] >> (8 * size):
                raise ValueError(f"trace[{i}]: value {values[i]:#x} does not fit in a {size}-byte access")
            if vcpus[i] >= self._nr_vcpus:
                raise ValueError(f"trace[{i}]: vcpu {vcpus[i]} out of range: the VM has {self._nr_vcpus} vCPUs")
            k = bisect_right(starts, addr) - 1
            dev = devices[k] if k >= 0 else None
            found.append(dev if dev is not None and addr < dev.end else None)
        out = [0] * len(found)
        state = self._state
        nr_intids = state.nr_intids
        for i, dev in enumerate(found):
            if dev is None:
                continue
            region, size = dev.region, sizes[i]
            offset = addrs[i] - dev.frame_base
            # KVM's check_region: a width the region takes, naturally aligned,
            # and for a per-IRQ register an INTID the VM has.
            if not region.widths & _WIDTH_FLAG.get(size, 0) or offset % size:
                continue
            intid = 0
            if region.bpi:
                intid = region.first_intid + (offset - region.offset) * 8 // region.bpi
                if intid >= nr_intids:
                    continue
            vcpu = dev.vcpu if dev.vcpu >= 0 else vcpus[i]
            if writes[i]:
                dev.ops.write(state, vcpu, offset, intid, size, values[i])
            else:
                out[i] = dev.ops.read(state, vcpu, offset, intid, size)
        return np.array(out, dtype=np.uint64)


def per_register_devices(nr_vcpus: int) -> int:
    """How many devices the per-register design puts on the bus for a VM of
    ``nr_vcpus``: every region of the distributor's table, and of both
    redistributor frames per vCPU (from :data:`vgic.regmap.FRAMES`)."""
    count = [sum(1 for r in regmap.FRAMES[f].regions if r.length)
             for f in (regmap.FRAME_GICD, regmap.FRAME_GICR_RD, regmap.FRAME_GICR_SGI)]
    return count[0] + nr_vcpus * (count[1] + count[2])


#: kvm_io_bus's limit on devices per bus when the thread was written
#: (NR_IOBUS_DEVS; ioeventfds aside).
NR_IOBUS_DEVS = 1000

_MMIO_VCPUS, _MMIO_IRQS = bench.NR_VCPUS, bench.NR_IRQS


def _mmio_trace(n: int) -> np.ndarray:
    return mixed_trace(n, nr_vcpus=_MMIO_VCPUS, nr_irqs=_MMIO_IRQS, seed=n)


def _check_per_register() -> None:
    """The per-register bus must do what the VM's own replay does."""
    from vgic import VM
    trace = mixed_trace(2_000, nr_vcpus=_MMIO_VCPUS, nr_irqs=_MMIO_IRQS, seed=1)
    ref = VM(nr_vcpus=_MMIO_VCPUS, nr_irqs=_MMIO_IRQS, backend="pure")
    model = VM(nr_vcpus=_MMIO_VCPUS, nr_irqs=_MMIO_IRQS, backend="pure")
    if not (np.array_equal(ref.mmio_replay(trace), PerRegisterBus(model).replay(trace))
            and ref.state() == model.state()):
        raise RuntimeError("the per-register bus does not replay as the VM does: its figures would mean nothing")


def _lookup_seconds(backend: str, lookup: str, n: int, repeat: int) -> float:
    mmio = _backend.modules(backend)[1].mmio
    before = mmio.get_lookup()
    mmio.set_lookup(lookup)
    try:
        return bench.per_access(bench.make_vm(backend), _mmio_trace(n), repeat)
    finally:
        mmio.set_lookup(before)


def _per_register_seconds(n: int, repeat: int) -> float:
    bus = PerRegisterBus(bench.make_vm("pure"))
    trace = _mmio_trace(n)
    return bench.best_time(lambda: bus.replay(trace), repeat) / n


def _mmio_rows(ctx: Context) -> list[Row]:
    core_lengths = ctx.pick((1_000, 10_000, 100_000), (1_000, 10_000, 100_000, 1_000_000))
    twin_lengths = ctx.pick((1_000, 3_000), (1_000, 10_000, 100_000), (1_000, 3_000), (1_000, 10_000, 30_000))
    core_repeat, twin_repeat = ctx.pick(3, 5), 1
    points: list[tuple[str, str, int]] = []
    if ctx.core:
        points += [("core", design, n) for n in core_lengths for design in ("direct", "bsearch")]
    points += [("pure", design, n) for n in twin_lengths for design in ("direct", "bsearch", "per_register")]
    rows: list[Row] = []
    _check_per_register()
    for backend, design, n in ctx.steps(points, ctx.pick(1, 2, 1, 1)):
        if design == "per_register":
            rows.append({"backend": backend, "design": design, "trace_len": n,
                         "ns_per_access": _per_register_seconds(n, twin_repeat) * 1e9})
        else:
            repeat = core_repeat if backend == "core" else twin_repeat
            rows.append({"backend": backend, "design": design, "trace_len": n,
                         "ns_per_access": _lookup_seconds(backend, design, n, repeat) * 1e9})
    return fastest(rows, ("ns_per_access",))


_DESIGN_NAMES = {"direct": "frame map + direct index", "bsearch": "frame map + binary search",
                 "per_register": "per-register devices (kvm_io_bus search)"}


def _mmio_answer(rows: list[Row]) -> Answer:
    series: dict[tuple[str, str], dict[int, float]] = {}
    for r in rows:
        series.setdefault((str(r["backend"]), str(r["design"])), {})[int(r["trace_len"])] = _f(r, "ns_per_access")
    table = []
    flat: dict[str, Any] = {}
    for (backend, design), pts in series.items():
        lens = sorted(pts)
        spread = max(pts.values()) / min(pts.values())
        flat[f"{backend}_{design}"] = {"ns_per_access": {str(k): pts[k] for k in lens}, "spread": spread}
        table.append((backend, _DESIGN_NAMES[design], ", ".join(f"{k:,}" for k in lens),
                      _fmt(pts[lens[-1]]), f"{1e3 / pts[lens[-1]]:.3g}", f"{spread:.2f}×"))

    def ratios(num: tuple[str, str], den: tuple[str, str]) -> dict[int, float]:
        if num not in series or den not in series:
            return {}
        return {k: series[num][k] / series[den][k] for k in sorted(set(series[num]) & set(series[den]))}

    def ratio(num: tuple[str, str], den: tuple[str, str]) -> float | None:
        r = ratios(num, den)
        return _geomean(r.values()) if r else None

    # The core's binary search at the longest trace: a short trace replayed
    # again and again can be learnt by the branch predictor, a long one not.
    core_bs_by_len = ratios(("core", "bsearch"), ("core", "direct"))
    core_bs = core_bs_by_len[max(core_bs_by_len)] if core_bs_by_len else None
    twin_bs = ratio(("pure", "bsearch"), ("pure", "direct"))
    per_reg = ratio(("pure", "per_register"), ("pure", "direct"))
    per_reg_bs = ratio(("pure", "per_register"), ("pure", "bsearch"))
    devices = per_register_devices(_MMIO_VCPUS)
    most = per_register_devices(regmap.MAX_VCPUS)
    limit_at = next((v for v in range(1, regmap.MAX_VCPUS + 1) if per_register_devices(v) > NR_IOBUS_DEVS), None)
    frame_regions = max(len(regmap.FRAMES[f].regions)
                        for f in (regmap.FRAME_GICD, regmap.FRAME_GICR_RD, regmap.FRAME_GICR_SGI))
    # Linear in trace length: the whole replay's time is a fixed cost per
    # call plus a cost per access, at every length (the direct index, on the
    # compiled core if it was measured).
    lin_key = ("core", "direct") if ("core", "direct") in series else ("pure", "direct")
    linear, per_access, per_call, worst = False, None, None, None
    if lin_key in series and len(series[lin_key]) >= 2:
        pts = series[lin_key]
        totals = [k * pts[k] for k in pts]
        per_call, per_access = affine_fit(list(pts), totals)
        worst = max(abs(per_call + per_access * k - t) / t for k, t in zip(pts, totals))
        linear = worst <= 2 * NOISE
    parts = []
    if core_bs is not None:
        longest, shortest = max(core_bs_by_len), min(core_bs_by_len)
        parts.append(f"in the compiled core the binary search over a frame's regions costs {core_bs:.2f}× the "
                     f"direct index per access on the longest trace ({longest:,} accesses)")
        if core_bs_by_len[shortest] < core_bs - 2 * NOISE:
            parts.append(f"on the shortest ({shortest:,}), replayed again and again, only "
                         f"{core_bs_by_len[shortest]:.2f}× - most likely the branch predictor learns a short "
                         "trace's searches, which a guest's real accesses would not allow")
    if twin_bs is not None:
        parts.append(f"in the Python twin {twin_bs:.2f}×"
                     + (" (the interpreter's own overhead hides the lookup)" if _same(twin_bs) else ""))
    text = "; ".join(parts) + ". " if parts else ""
    text = text[:1].upper() + text[1:]
    if per_reg is not None and per_reg_bs is not None:
        cheaper = per_reg < 1 - NOISE
        text += (f"The per-register design, modelled on the twin's handlers (the only place it can be, "
                 f"without a C build of it), costs {per_reg:.2f}× the twin's direct-index replay and "
                 f"{per_reg_bs:.2f}× its binary search: "
                 + ("cheaper per access, because one search of the whole bus replaces the twin's walk over "
                    "its windows and then its frame lookup. " if cheaper else
                    "no cheaper per access than the region framework. "))
    if per_reg is not None and 0.5 <= per_reg <= 2:
        text += "Per access, then, the designs are within 2× of each other; what separates them is the bus. "
    text += (f"The per-register design puts {devices} devices on it for this {_MMIO_VCPUS}-vCPU VM (a search of "
             f"{math.ceil(math.log2(devices))} probes), {most:,} for {regmap.MAX_VCPUS} vCPUs "
             f"({math.ceil(math.log2(most))} probes), and passes kvm_io_bus's limit of {NR_IOBUS_DEVS:,} "
             f"devices at {limit_at} vCPUs, against one device per frame and at most {frame_regions} regions "
             f"searched inside a frame (none with the direct index). "
             "This model takes the register-list design as a binary search over a sorted array because that is "
             "how kvm_io_bus has found a device since 2011 (a hashed dict would model a bus KVM never had, a "
             "linear list the one it replaced). The device count, not the time per access, is the argument for "
             "what KVM did: one device per frame, the register found inside the vgic (the thread's option 3, "
             "today's vgic-mmio). ")
    if per_access is not None and per_call is not None and worst is not None:
        fixed = (f"plus {_fmt(per_call / 1e3)} µs per call"
                 if per_call > 0.05 * per_access * min(series[lin_key]) else "and no fixed cost per call to speak of")
        text += (f"Replay ({lin_key[0]}, direct index) costs {_fmt(per_access)} ns per access {fixed} (a line "
                 "fitted to the whole replay's time); ")
        text += (f"it fits every length within {worst * 100:.0f} %, so replay is linear in trace length."
                 if linear else
                 f"it misses one length by {worst * 100:.0f} %, so replay is not quite linear here (or the "
                 "machine was noisy).")
    values = {"series": flat, "core_bsearch_over_direct": core_bs,
              "core_bsearch_over_direct_by_len": {str(k): v for k, v in core_bs_by_len.items()},
              "twin_bsearch_over_direct": twin_bs,
              "per_register_over_twin_direct": per_reg, "per_register_over_twin_bsearch": per_reg_bs,
              "devices": devices, "devices_max_vcpus": most, "vcpus_over_iobus_limit": limit_at,
              "linear": linear, "replay_ns_per_access": per_access, "replay_ns_per_call": per_call}
    return Answer(("backend", "dispatch", "trace lengths", "ns per access (longest)", "M accesses/s",
                   "spread over lengths"), tuple(table), text, values)


# ============================================ 3. timer lazy vs eager (2017)
def _timer_rows(ctx: Context) -> list[Row]:
    cycles = ctx.pick(100, 2_000, 10, 100)
    repeat = ctx.pick(2, 5, 1, 2)
    points = ([("load_put", policy, k) for k in range(1, 9) for policy in ("lazy", "eager")]
              + [("timer_10ms", policy, 2) for policy in ("lazy", "eager")])
    rows: list[Row] = []
    for workload, policy, k in ctx.steps(points, ctx.pick(1, 3, 1, 1)):
        if workload == "load_put":
            s, reads, writes = bench.timer_load_cycle_costs(ctx.backend, policy, k, cycles, repeat)
        else:
            s, reads, writes = bench.timer_cycle_costs(ctx.backend, policy, "timer_10ms", max(cycles // 4, 5),
                                                       repeat)
        rows.append({"workload": workload, "policy": policy, "entries_per_load": k, "reads": reads,
                     "writes": writes, "accesses": reads + writes, "us_per_cycle": s * 1e6})
    return fastest(rows, ("us_per_cycle",))


def _timer_answer(rows: list[Row]) -> Answer:
    lp = {(str(r["policy"]), int(r["entries_per_load"])): r for r in rows if r["workload"] == "load_put"}
    ks = sorted({k for _, k in lp})
    acc = {p: [_f(lp[p, k], "accesses") for k in ks] for p in ("lazy", "eager")}
    us = {p: [_f(lp[p, k], "us_per_cycle") for k in ks] for p in ("lazy", "eager")}
    fit = {p: affine_fit(ks, acc[p], relative=False) for p in ("lazy", "eager")}
    equal_at = [k for k, a, b in zip(ks, acc["lazy"], acc["eager"]) if a == b]
    fewer = [a < b for a, b in zip(acc["lazy"], acc["eager"])]
    fewer_from = next((k for i, k in enumerate(ks) if all(fewer[i:])), None)
    more_at = [k for k, a, b in zip(ks, acc["lazy"], acc["eager"]) if a > b]
    tm = {str(r["policy"]): r for r in rows if r["workload"] == "timer_10ms"}
    time_ratio = _geomean(a / b for a, b in zip(us["lazy"], us["eager"]))
    table = [(f"load..put, {k} entr{'y' if k == 1 else 'ies'}",
              f"{_count(_f(lp['lazy', k], 'reads'))} R + {_count(_f(lp['lazy', k], 'writes'))} W",
              f"{_count(_f(lp['eager', k], 'reads'))} R + {_count(_f(lp['eager', k], 'writes'))} W",
              _fmt(_f(lp["lazy", k], "us_per_cycle")), _fmt(_f(lp["eager", k], "us_per_cycle")))
             for k in ks if k in (1, 2, 4, 8) or k == ks[-1]]
    if {"lazy", "eager"} <= set(tm):
        table.append(("timer_10ms (WFI, 10 ms, wake, IRQ)",
                      f"{_count(_f(tm['lazy'], 'reads'))} R + {_count(_f(tm['lazy'], 'writes'))} W",
                      f"{_count(_f(tm['eager'], 'reads'))} R + {_count(_f(tm['eager'], 'writes'))} W",
                      _fmt(_f(tm["lazy"], "us_per_cycle")), _fmt(_f(tm["eager"], "us_per_cycle"))))
    (l0, l1), (e0, e1) = fit["lazy"], fit["eager"]
    text = (f"Per vcpu_load..vcpu_put with k guest entries, lazy makes {_count(l0)} + {_count(l1)}·k timer "
            f"system-register accesses and eager {_count(e0)} + {_count(e1)}·k (lines fitted to the counts at "
            f"k = {ks[0]}..{ks[-1]}; the counts are exact, not timed). ")
    if equal_at:
        text += f"They are equal at k = {', '.join(map(str, equal_at))}"
    if fewer_from is not None:
        text += (("; l" if equal_at else "L") + f"azy makes fewer from k = {fewer_from} on: every further "
                 f"in-kernel exit costs eager {_count(e1)} accesses and lazy {_count(l1)}, "
                 f"{(1 - l1 / e1) * 100:.0f} % fewer. ")
    else:
        text += ". "
    if more_at:
        text += f"Lazy makes more at k = {', '.join(map(str, more_at))}. "
    if {"lazy", "eager"} <= set(tm):
        text += (f"In kvm-unit-tests' timer_10ms cycle, where WFI blocks (and puts) the vCPU, lazy makes "
                 f"{_count(_f(tm['lazy'], 'accesses'))} against {_count(_f(tm['eager'], 'accesses'))}. ")
    if fewer_from is not None and not more_at:
        text += "So the series saves timer register traffic on every exit handled in the kernel"
        if {"lazy", "eager"} <= set(tm):
            blocking_ok = _f(tm["lazy"], "accesses") <= _f(tm["eager"], "accesses")
            text += (" and the blocking path does not pay for it" if blocking_ok else
                     ", but the blocking path pays for it")
        text += ". "
    text += (f"The model's own time per period is {time_ratio:.2f}× lazy/eager "
             "(geometric mean over k): its cost is Python frames, not the modelled accesses, which on hardware "
             "are MSR/MRS at EL2 (with an ISB after the CVAL write).")
    values = {"lazy_fit": fit["lazy"], "eager_fit": fit["eager"], "equal_at": equal_at, "lazy_fewer_from": fewer_from,
              "lazy_more_at": more_at, "time_lazy_over_eager": time_ratio,
              "timer_10ms": {p: _f(r, "accesses") for p, r in tm.items()}}
    return Answer(("workload", "lazy accesses", "eager accesses", "lazy µs", "eager µs"), tuple(table), text,
                  values)


# ============================================ 4. ITS pending sync (2017)
def _its_rows(ctx: Context) -> list[Row]:
    counts = ctx.pick((10, 100, 1_000, 10_000, 40_000, 100_000),
                      (10, 100, 1_000, 2_000, 5_000, 10_000, 20_000, 40_000, 70_000, 100_000),
                      (10, 100, 1_000, 10_000, 40_000), (10, 100, 1_000, 5_000, 10_000, 40_000, 100_000))
    repeat = ctx.pick(5, 21, 1, 3)
    rows: list[Row] = []
    for n in ctx.steps(counts, ctx.pick(1, 3, 1, 1)):
        per_lpi, scan = bench.pending_sync_seconds_on(ctx.backend, n, repeat)
        rows.append({"lpis": n, "per_lpi_us": per_lpi * 1e6, "scan_us": scan * 1e6})
    return fastest(rows, ("per_lpi_us", "scan_us"))


def _nearest(rows: list[Row], key: str, x: float) -> Row:
    return min(rows, key=lambda r: abs(math.log(_f(r, key)) - math.log(x)))


def _its_answer(rows: list[Row]) -> Answer:
    xs = [_f(r, "lpis") for r in rows]
    per = [_f(r, "per_lpi_us") for r in rows]
    scan = [_f(r, "scan_us") for r in rows]
    measured = crossover(xs, per, scan)
    fitted = fit_crossover(xs, per, scan)
    p0, p1 = affine_fit(xs, per)
    s0, s1 = affine_fit(xs, scan)
    table = [(f"{int(_f(r, 'lpis')):,}", _fmt(_f(r, "per_lpi_us")), _fmt(_f(r, "scan_us")),
              f"{_f(r, 'per_lpi_us') / _f(r, 'scan_us'):.2f}×") for r in sorted(rows, key=lambda r: _f(r, "lpis"))]
    asked = [_nearest(rows, "lpis", n) for n in (10, 1_000)]
    gain = max(((p - s), x) for x, p, s in zip(xs, per, scan))
    text = (f"Per-LPI sync costs about {_fmt(p1 * 1e3)} ns per LPI on top of {_fmt(p0)} µs; one scan costs "
            f"{_fmt(s0)} µs for the table plus {_fmt(s1 * 1e3)} ns per mapped LPI (lines fitted to the data). ")
    text += "For the VMs the thread asked about: " + "; ".join(
        f"at {int(_f(r, 'lpis')):,} LPIs the per-LPI sync takes {_fmt(_f(r, 'per_lpi_us'))} µs and the scan "
        f"{_fmt(_f(r, 'scan_us'))} µs" for r in asked) + ". "
    small_cheaper = all(_f(r, "per_lpi_us") < _f(r, "scan_us") for r in asked)
    if small_cheaper:
        text += "The per-LPI sync is the cheaper one there. "
    if measured is None:
        text += "The scan never becomes cheaper for good in the measured range. "
    elif measured == min(xs):
        text += "The scan is cheaper at every measured count. "
    else:
        text += f"The scan is the cheaper one from about {_fmt(measured, 2)} LPIs on (measured"
        text += (f"; the fitted lines, which smooth over cache effects, cross at {_fmt(fitted, 2)})"
                 if fitted is not None else ")")
        text += ". "
    if gain[0] > 0:
        rare = gain[0] < 1_000
        text += (f"The most the scan saves in this range is {_fmt(gain[0])} µs, at {int(gain[1]):,} LPIs, "
                 + ("once per restore: the thread's judgement, that a few extra microseconds on so rare an event "
                    "do not matter, holds." if rare else
                    "once per restore - more than a millisecond, enough to matter for a large VM."))
    values = {"crossover_lpis": measured, "fit_crossover_lpis": fitted, "per_lpi_fit_us": (p0, p1),
              "scan_fit_us": (s0, s1), "per_lpi_cheaper_at_10_and_1000": small_cheaper,
              "max_scan_saving_us": gain[0], "max_scan_saving_at": gain[1]}
    return Answer(("LPIs", "per-LPI sync (µs)", "one table scan (µs)", "per-LPI / scan"), tuple(table), text,
                  values)


# ============================================== 5. SVE eager vs lazy (2017)
_SVE_VQS = (1, 2, 4, 8, 16)
_FP_USE = (0.0, 0.1, 0.5, 1.0)
_ENTRIES_PER_LOAD = 4


def _sve_rows(ctx: Context) -> list[Row]:
    loads = ctx.pick(50, 250, 5, 20)
    repeat = ctx.pick(3, 3, 1, 1)
    points = [(vq, use, policy) for vq in _SVE_VQS for use in _FP_USE for policy in ("lazy", "eager")]
    rows: list[Row] = []
    for vq, use, policy in ctx.steps(points, ctx.pick(1, 5, 1, 1)):
        c = bench.fp_switch_costs(ctx.backend, policy, vq, use, loads, repeat, _ENTRIES_PER_LOAD)
        rows.append({"vector_bits": vq * 128, "fp_use_pct": round(use * 100), "policy": policy,
                     "ns_per_entry": c["seconds"] * 1e9, "bytes_per_entry": c["guest_bytes"] + c["host_bytes"],
                     "traps_per_entry": c["traps"]})
    return fastest(rows, ("ns_per_entry",))


def _sve_answer(rows: list[Row]) -> Answer:
    cell = {(int(r["vector_bits"]), int(r["fp_use_pct"]), str(r["policy"])): r for r in rows}
    bits = sorted({b for b, _, _ in cell})
    uses = sorted({u for _, u, _ in cell})
    speed: dict[tuple[int, int], float] = {}
    fewer: dict[tuple[int, int], float] = {}
    for b in bits:
        for u in uses:
            lz, eg = cell[b, u, "lazy"], cell[b, u, "eager"]
            speed[b, u] = _f(eg, "ns_per_entry") / _f(lz, "ns_per_entry")
            fewer[b, u] = _f(eg, "bytes_per_entry") / _f(lz, "bytes_per_entry")
    table = tuple((f"{b:,}",) + tuple(f"{speed[b, u]:.2f}× / {fewer[b, u]:.1f}×" for u in uses) for b in bits)
    lazy_wins = [k for k, v in speed.items() if v > 1 + NOISE]
    eager_wins = [k for k, v in speed.items() if v < 1 - NOISE]
    ties = [k for k, v in speed.items() if _same(v)]
    best = max(speed, key=lambda k: speed[k])
    by_bits = {b: _geomean(speed[b, u] for u in uses) for b in bits}
    traps = max(_f(r, "traps_per_entry") for r in rows if r["policy"] == "lazy")

    def cells(keys: list[tuple[int, int]]) -> str:
        return ", ".join(f"{b} bits at {u} %" for b, u in sorted(keys))

    all_fewer = min(fewer.values()) > 1
    text = (f"With the guest entered {_ENTRIES_PER_LOAD} times per vcpu_load (three exits handled in the kernel), "
            f"eager moves {min(fewer.values()):.1f}× to {max(fewer.values()):.1f}× the bytes lazy moves"
            + (" (lazy moves fewer in every cell)" if all_fewer else "")
            + f", and lazy takes at most {traps:.2f} traps per entry. In time lazy is faster in "
            f"{len(lazy_wins)} of {len(speed)} cells, by up to {speed[best]:.2f}× ({best[0]} bits, {best[1]} % use)")
    text += f"; eager is faster in {len(eager_wins)} ({cells(eager_wins)})" if eager_wins else "; eager is never faster"
    text += f", and {len(ties)} are within the noise ({cells(ties)}). " if ties else ". "
    grows = by_bits[bits[-1]] > by_bits[bits[0]]
    text += (f"Averaged over the FP-use fractions the speed-up is {by_bits[bits[0]]:.2f}× at {bits[0]} bits (the "
             f"FPSIMD-sized state the thread proposed to measure first) and {by_bits[bits[-1]]:.2f}× at "
             f"{bits[-1]} bits: " + ("the win grows with the vector length. " if grows else
                                     "it does not grow with the vector length here. "))
    if not eager_wins:
        text += f"So with {_ENTRIES_PER_LOAD} entries per load lazy wins or ties in every measured cell; "
    else:
        text += f"So with {_ENTRIES_PER_LOAD} entries per load lazy wins except in the cells named above; "
    text += ("the case it cannot win - one entry per load with FP/SVE used every time, where both move the "
             "same bytes and lazy adds a trap - is outside this grid, and the trap's real price (an exception "
             "round trip to EL2) is not modelled.")
    values = {"eager_over_lazy_time": {f"{b}_{u}": v for (b, u), v in speed.items()},
              "eager_over_lazy_bytes": {f"{b}_{u}": v for (b, u), v in fewer.items()},
              "lazy_faster_cells": len(lazy_wins), "eager_faster_cells": len(eager_wins), "tie_cells": len(ties),
              "speedup_by_bits": {str(b): v for b, v in by_bits.items()}, "max_lazy_traps_per_entry": traps}
    return Answer(("vector bits",) + tuple(f"{u} % FP use: time / bytes, eager ÷ lazy" for u in uses), table, text,
                  values)


# ======================================= 6. whole-VM snapshots (issue #11)
# One dimension at a time around a base VM; the brief's target VM last.
_SNAP_BASE = {"vcpus": 64, "irqs": 256, "lpis": 1_000, "vq": 4}
_SNAP_SWEEPS = {"vcpus": (1, 8, 64, 512), "irqs": (64, 256, 992), "lpis": (0, 1_000, 10_000, 100_000),
                "vq": (0, 1, 4, 16)}


def _snapshot_rows(ctx: Context) -> list[Row]:
    from vgic import snapbench
    sweeps = {k: ctx.pick(v[:3], v, v[:2], v[:3]) for k, v in _SNAP_SWEEPS.items()}
    points = [(k, {**_SNAP_BASE, k: x}) for k, xs in sweeps.items() for x in xs]
    if not ctx.quick and ctx.core:
        points.append(("target", {"vcpus": 512, "irqs": 992, "lpis": 100_000, "vq": 16}))
    repeat = ctx.pick(2, 5, 1, 2)
    rows: list[Row] = []
    for sweep, p in ctx.steps(points):
        vm = snapbench.snapshot_vm(ctx.backend, nr_vcpus=p["vcpus"], nr_irqs=p["irqs"], nr_lpis=p["lpis"],
                                   vq=p["vq"], pending=min(p["lpis"], 1000))
        m = snapbench.save_restore_seconds(vm, repeat)
        rows.append({"sweep": sweep, "vcpus": p["vcpus"], "irqs": p["irqs"], "lpis": p["lpis"],
                     "vector_bits": p["vq"] * 128, "save_ms": m["save"] * 1e3, "restore_ms": m["restore"] * 1e3,
                     "build_ms": m["build"] * 1e3, "copy_ms": m["copy_bytes"] * 1e3,
                     "payload_kib": m["payload"] / 1024, "bytes_ratio": m["nbytes"] / m["payload"]})
    return rows


def _snapshot_answer(rows: list[Row]) -> Answer:
    def sweep(name: str) -> list[Row]:
        return sorted((r for r in rows if r["sweep"] == name), key=lambda r: _f(r, name if name != "vq"
                                                                              else "vector_bits"))
    table = [(str(r["sweep"]), f"{int(_f(r, 'vcpus'))}", f"{int(_f(r, 'irqs'))}", f"{int(_f(r, 'lpis')):,}",
              f"{int(_f(r, 'vector_bits'))}", _fmt(_f(r, "save_ms")), _fmt(_f(r, "restore_ms")),
              _fmt(_f(r, "build_ms")), _fmt(_f(r, "copy_ms")), f"{_f(r, 'payload_kib'):,.0f}",
              f"{_f(r, 'bytes_ratio'):.3f}") for r in rows]
    parts = []
    values: dict[str, Any] = {}
    for name, unit, key in (("vcpus", "vCPU", "vcpus"), ("lpis", "LPI", "lpis"), ("irqs", "IRQ", "irqs")):
        rs = sweep(name)
        if len(rs) >= 2:
            xs = [_f(r, key) for r in rs]
            s0, s1 = affine_fit(xs, [_f(r, "save_ms") for r in rs])
            r0, r1 = affine_fit(xs, [_f(r, "restore_ms") for r in rs])
            values[f"per_{unit.lower()}_us"] = {"save": s1 * 1e3, "restore": r1 * 1e3}
            parts.append(f"each {unit} adds about {_fmt(s1 * 1e3)} µs to a save and {_fmt(r1 * 1e3)} µs to a "
                         f"restore")
    text = "Fitted over each sweep (the others at the base VM), " + "; ".join(parts) + ". "
    vs = sweep("vq")
    sve = [r for r in vs if _f(r, "vector_bits") > 0]
    none = [r for r in vs if _f(r, "vector_bits") == 0]
    if len(sve) >= 2:
        lo, hi = sve[0], sve[-1]
        same = abs(_f(hi, "payload_kib") - _f(lo, "payload_kib")) < 1e-6 * _f(hi, "payload_kib")
        values["sve_payload_independent_of_vl"] = same
        if same:
            text += (f"Vector length does not move the bytes: KVM's one-reg ABI carries each Z register as "
                     f"2048 bits (slice 0) and each P register and FFR as 256, zero-padded above the vCPU's "
                     f"length, so the payload is {_f(hi, 'payload_kib'):,.0f} KiB from "
                     f"{int(_f(lo, 'vector_bits'))} to {int(_f(hi, 'vector_bits'))} bits")
            if none:
                text += f" (against {_f(none[0], 'payload_kib'):,.0f} KiB without SVE)"
            text += (f" and a save takes {_fmt(_f(lo, 'save_ms'))} to {_fmt(_f(hi, 'save_ms'))} ms; the padding "
                     "is what zstd compression (`to_bytes(compress=\"zstd\")`) removes. ")
        else:
            text += (f"From {int(_f(lo, 'vector_bits'))} to {int(_f(hi, 'vector_bits'))} bits the payload "
                     f"grows from {_f(lo, 'payload_kib'):,.0f} to {_f(hi, 'payload_kib'):,.0f} KiB. ")
    worst = max(_f(r, "bytes_ratio") for r in rows)
    text += f"The file is at most {worst:.3f}× the raw register payload (target: 1.2×). "
    target = [r for r in rows if r["sweep"] == "target"]
    if target:
        t = target[0]
        values["target"] = dict(t)
        text += (f"The brief's VM (512 vCPUs, 992 IRQs, 100,000 LPIs, 2048-bit SVE): save "
                 f"{_fmt(_f(t, 'save_ms'))} ms, restore {_fmt(_f(t, 'restore_ms'))} ms into a VM built in "
                 f"{_fmt(_f(t, 'build_ms'))} ms (target: under 50 ms each), against "
                 f"{_fmt(_f(t, 'copy_ms'))} ms to copy the snapshot's bytes once: "
                 f"{_f(t, 'save_ms') / _f(t, 'copy_ms'):.0f}× and {_f(t, 'restore_ms') / _f(t, 'copy_ms'):.0f}× "
                 f"(target: 3×). What a copy does not do is the ABI's work: SAVE_TABLES and "
                 f"SAVE_PENDING_TABLES write guest RAM, RESTORE_TABLES validates every entry and creates every "
                 f"LPI, and each register goes through its KVM accessor.")
    values["max_bytes_ratio"] = worst
    return Answer(("sweep", "vCPUs", "IRQs", "LPIs", "vector bits", "save (ms)", "restore (ms)",
                   "build VM (ms)", "copy bytes (ms)", "payload (KiB)", "file / payload"), tuple(table), text,
                  values)


# ================================================================ the rows
EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment(
        name="lr_order",
        title="LR storage order: direct against reverse",
        thread="[PATCH v2 04/21] arm64: KVM: Implement vgic-v3 save/restore (linux-arm-kernel, December 2015)",
        thread_file="2015-vgic-v3-save-restore.txt",
        question=("The hyp code saved ICH_LR<n>_EL2 into slot 15 − n of the vCPU's array, so that the stores run "
                  "in the order the registers are read, on the grounds that CPUs prefetch forwards only and "
                  "writing backwards is slow. Christoffer Dall asked why not simply store LR n in slot n, and "
                  "whether anybody had measured the difference or only expected it."),
        method=("`VM(lr_order=\"direct\" | \"reverse\", nr_lrs=16)`: the batch hyp save + restore "
                "(`save_restore_batch`) of every vCPU with 1..16 LRs in use and none empty, so each used LR is "
                "read back; per vCPU, best of several repeats, the two orders alternating. Once over one VM's "
                "512 vCPUs (records that fit in cache) and once, with the kernel the VM builds, over more records "
                "than a VM may have (20,000 in a quick run, 100,000 in a full one), streamed through memory."),
        columns=("vcpus", "lr_order", "used_lrs", "ns_per_vcpu"),
        measure=_lr_order_rows,
        answer=_lr_order_answer,
        plot=PlotSpec("Hyp save + restore by used LRs", (
            Panel("used_lrs", ("ns_per_vcpu",), "used LRs", "ns per vCPU (save + restore)",
                  series=("vcpus",), dash="lr_order", label="{vcpus:,} vCPUs, {lr_order}"),)),
    ),
    Experiment(
        name="mmio_dispatch",
        title="MMIO dispatch: direct index, binary search, or a device per register",
        thread="[RFC PATCH 12/45] KVM: arm/arm64: vgic-new: Add MMIO handling framework "
               "(linux-arm-kernel, April 2016)",
        thread_file="2016-vgic-mmio-framework.txt",
        question=("The new vgic registered every register group of the distributor and redistributors as a "
                  "kvm_io_bus device of its own, so that an access goes straight to its handler - many more "
                  "devices than the bus was built for (one per device, not per register). The thread weighed "
                  "extending the bus, a generic per-register layer on top of it, or keeping the register "
                  "lookup inside the vgic: what does one bus lookup per register cost against one device per "
                  "frame with its own region table?"),
        method=("`vm.mmio_replay` of `vgic.trace.mixed_trace` (random guest accesses to enable, pending, "
                "priority, config, routing and control registers, 4 vCPUs, 256 IRQs) at several lengths: on the "
                "core with the direct index and with binary search (`vgic._core.mmio.set_lookup`), on the twin "
                "the same two and `PerRegisterBus` (every region of every frame a device; kvm_io_bus's sorted "
                "array and binary search; the twin's handlers and KVM's region check), checked first to leave "
                "the VM exactly as the VM's own replay does. Per access, best of repeats."),
        columns=("backend", "design", "trace_len", "ns_per_access"),
        measure=_mmio_rows,
        answer=_mmio_answer,
        plot=PlotSpec("MMIO replay: time per access by trace length", (
            Panel("trace_len", ("ns_per_access",), "trace length (accesses)", "ns per access",
                  series=("backend", "design"), logx=True, logy=True, label="{backend}: {design}"),)),
    ),
    Experiment(
        name="timer_policy",
        title="Arch timer: lazy (vcpu_load/put) against eager (every entry and exit)",
        thread="[PATCH v3 14/20] KVM: arm/arm64: Avoid timer save/restore in vcpu entry/exit "
               "(linux-arm-kernel, October 2017)",
        thread_file="2017-timer-lazy-save-restore.txt",
        question=("The series stops saving and restoring the virtual timer at every guest entry and exit: the "
                  "timer hardware signals expiry by itself, so its state need only move at vcpu_load and "
                  "vcpu_put, with care when a vCPU blocks in WFI. What does that save per exit, and does the "
                  "blocking path pay for it?"),
        method=("`VM(timer_policy=\"lazy\" | \"eager\")`, one vCPU with its vtimer enabled: vcpu_load, k guest "
                "entries and exits, vcpu_put, for k = 1..8 (`bench.timer_load_cycle_costs`), and kvm-unit-tests' "
                "`timer_10ms` cycle (`bench.timer_cycle_costs`). KVM's timer system-register reads and writes "
                "are counted; time per period is the model's, best of repeats."),
        columns=("workload", "policy", "entries_per_load", "reads", "writes", "accesses", "us_per_cycle"),
        measure=_timer_rows,
        answer=_timer_answer,
        plot=PlotSpec("Timer sysreg accesses and time per vcpu_load..put", (
            Panel("entries_per_load", ("accesses",), "guest entries per load", "timer sysreg accesses",
                  series=("policy",), where=(("workload", "load_put"),)),
            Panel("entries_per_load", ("us_per_cycle",), "guest entries per load", "µs per period (model)",
                  series=("policy",), where=(("workload", "load_put"),)),
        )),
    ),
    Experiment(
        name="its_pending_sync",
        title="ITS restore: pending sync per LPI against one scan of the pending table",
        thread="[PATCH v5 01/22] KVM: arm/arm64: Add ITS save/restore API documentation (kvmarm, May 2017)",
        thread_file="2017-its-save-restore-abi.txt",
        question=("Christoffer Dall proposed reading (and clearing) each LPI's pending bit in guest memory when "
                  "the LPI is made at restore, instead of syncing the whole pending table; Eric Auger noted "
                  "that this gives up the byte-wise scan. Marc Zyngier asked how many LPIs a typical VM "
                  "restores - 10? 1000? - and judged a few extra microseconds on so rare an event unimportant."),
        method=("`bench.pending_sync_seconds_on`: a pending table of 2¹⁷ INTIDs (16 KiB) with N mapped LPIs "
                "spread over it, half of them pending; KVM's per-LPI read-test-clear (`sync_per_lpi`) against "
                "one byte-wise scan that takes the mapped bits (`sync_scan`), each on a fresh copy of the "
                "table, best of repeats. The crossover is where the per-LPI time rises above the scan's for "
                "good, interpolated between the measured counts."),
        columns=("lpis", "per_lpi_us", "scan_us"),
        measure=_its_rows,
        answer=_its_answer,
        plot=PlotSpec("Pending-table sync at restore", (
            Panel("lpis", ("per_lpi_us", "scan_us"), "mapped LPIs", "µs", logx=True, logy=True,
                  ynames=("per-LPI sync", "one table scan")),),
            vline="crossover_lpis", vline_label="crossover"),
    ),
    Experiment(
        name="sve_switch",
        title="FP/SVE context switch: eager against lazy, by vector length and FP use",
        thread="[RFC PATCH 4/4] arm64/sve: KVM: Basic SVE support (linux-arm-kernel, November 2017)",
        thread_file="2017-kvm-sve-support.txt",
        question=("Christoffer Dall's series was to leave the guest's FP state in the CPU until the vCPU is "
                  "scheduled out or returns to userspace (lazy), which would simplify SVE support; Dave Martin "
                  "preferred not to refactor in the first SVE series. Both agreed the two approaches should be "
                  "measured - with plain FPSIMD first - before deciding, SVE state being far larger."),
        method=("`bench.fp_switch_costs`: an SVE vCPU at 128..2048-bit vectors entered 4 times per "
                "vcpu_load..vcpu_put, writing a Z register on 0, 10, 50 or 100 % of its entries, under "
                "`fp_policy=\"lazy\"` (host state saved at load, guest state loaded at its first use - a trap - "
                "and kept until put) and `\"eager\"` (saved and restored at every entry and exit). Per guest "
                "entry: time (best of repeats), bytes moved (guest and host state) and traps."),
        columns=("vector_bits", "fp_use_pct", "policy", "ns_per_entry", "bytes_per_entry", "traps_per_entry"),
        measure=_sve_rows,
        answer=_sve_answer,
        plot=PlotSpec("FP/SVE switch per guest entry (4 entries per load)", (
            Panel("vector_bits", ("ns_per_entry",), "vector length (bits)", "ns per entry",
                  series=("fp_use_pct",), dash="policy", logx=True, xbase=2, label="{fp_use_pct} %, {policy}"),
            Panel("vector_bits", ("bytes_per_entry",), "vector length (bits)", "bytes per entry",
                  series=("fp_use_pct",), dash="policy", logx=True, logy=True, xbase=2,
                  label="{fp_use_pct} %, {policy}"),
        )),
    ),
    Experiment(
        name="snapshot",
        title="Whole-VM snapshots through KVM's ABI: save and restore by vCPUs, IRQs, LPIs and vector length",
        thread="[RFC PATCH 4/4] arm64/sve: KVM: Basic SVE support (kvmarm, November 2017)",
        thread_file="2017-kvm-sve-support.txt",
        question=("The SVE RFC notes that migrating across a cluster whose nodes differ in vector length means "
                  "limiting a guest's vector length, and the ITS and vgic threads made every piece of interrupt "
                  "state saveable through the userspace ABI. What does moving a whole VM's state that way cost, "
                  "and how does it grow with vCPUs, interrupts, LPIs and vector length?"),
        method=("`snapbench.snapshot_vm` builds a VM as a guest left it (ITS with N mapped LPIs, the first "
                "1,000 pending; SPIs configured and some pending; armed timers; random SVE state) and "
                "`snapbench.save_restore_seconds` times `vm.save(ram=False)` (DIST/REDIST/CPU_SYSREGS, "
                "LEVEL_INFO, SAVE_PENDING_TABLES, ITS registers and SAVE_TABLES, timer and FP/SVE one-regs, "
                "batched) and the restore into a freshly built VM in KVM's documented order (building the VM "
                "timed apart), best of repeats, beside one copy of the snapshot's bytes. One dimension moves "
                "at a time around 64 vCPUs, 256 IRQs, 1,000 LPIs and 512-bit vectors."),
        columns=("sweep", "vcpus", "irqs", "lpis", "vector_bits", "save_ms", "restore_ms", "build_ms", "copy_ms",
                 "payload_kib", "bytes_ratio"),
        measure=_snapshot_rows,
        answer=_snapshot_answer,
        plot=PlotSpec("Snapshot save and restore (ms)", (
            Panel("vcpus", ("save_ms", "restore_ms", "copy_ms"), "vCPUs", "ms", where=(("sweep", "vcpus"),),
                  logx=True, logy=True, xbase=2, ynames=("save", "restore", "copy bytes")),
            Panel("lpis", ("save_ms", "restore_ms", "copy_ms"), "mapped LPIs", "ms", where=(("sweep", "lpis"),),
                  logy=True, ynames=("save", "restore", "copy bytes")),
            Panel("vector_bits", ("save_ms", "restore_ms", "copy_ms"), "vector bits", "ms",
                  where=(("sweep", "vq"),), logy=True, ynames=("save", "restore", "copy bytes")),
        )),
    ),
    # New experiments: one more row here, with its rows and answer
    # functions written above like the others (or register() from outside).
)


def register(experiment: Experiment) -> None:
    """Append ``experiment`` to :data:`EXPERIMENTS` (for code outside this
    module; in-tree experiments are rows of the table).  ``ValueError`` if
    an experiment of that name exists."""
    global EXPERIMENTS
    if any(e.name == experiment.name for e in EXPERIMENTS):
        raise ValueError(f"an experiment named {experiment.name!r} exists")
    EXPERIMENTS = (*EXPERIMENTS, experiment)


# ================================================================= output
def _cell(v: float | int | str) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[Row]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        for r in rows:
            w.writerow([_cell(r[c]) for c in columns])


def _plotting() -> tuple[Any, str]:
    """(the draw function, matplotlib's version), or (None, why not)."""
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        return None, f"matplotlib is not importable ({exc})"

    def draw(path: Path, spec: PlotSpec, rows: list[Row], values: dict[str, Any]) -> None:
        fig = Figure(figsize=(6, 4), dpi=100)
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, len(spec.panels), squeeze=False)[0]
        styles = ("-", "--", ":", "-.")
        for ax, panel in zip(axes, spec.panels):
            sel = [r for r in rows if all(r.get(k) == v for k, v in panel.where)]
            dashes = sorted({r[panel.dash] for r in sel}, key=str) if panel.dash else [None]
            keys = sorted({tuple(r[c] for c in panel.series) for r in sel}, key=_order)
            colour = 0
            for key in keys:
                for y_i, y in enumerate(panel.y):
                    for d_i, d in enumerate(dashes):
                        pts = sorted((_f(r, panel.x), _f(r, y)) for r in sel
                                     if tuple(r[c] for c in panel.series) == key
                                     and (panel.dash is None or r[panel.dash] == d))
                        if not pts:
                            continue
                        yname = panel.ynames[y_i] if y_i < len(panel.ynames) else y
                        if panel.label is not None:
                            fields = dict(zip(panel.series, key), y=yname)
                            if panel.dash is not None:
                                fields[panel.dash] = d if d is not None else ""
                            label = panel.label.format(**fields)
                        else:
                            label = ", ".join([str(k) for k in key] + ([yname] if len(panel.y) > 1 else [])
                                              + ([str(d)] if d is not None else []))
                        ax.plot([p[0] for p in pts], [p[1] for p in pts], styles[d_i % len(styles)],
                                color=f"C{colour % 10}", marker="o", markersize=3, linewidth=1.2, label=label)
                    colour += 1
            if panel.logx:
                ax.set_xscale("log", base=panel.xbase)
            if panel.logy:
                ax.set_yscale("log")
            if spec.vline and isinstance(values.get(spec.vline), (int, float)):
                ax.axvline(values[spec.vline], color="grey", linestyle="--", linewidth=1, label=spec.vline_label)
            ax.set_xlabel(panel.xlabel, fontsize=8)
            ax.set_ylabel(panel.ylabel, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=6)
        fig.suptitle(spec.title, fontsize=9)
        fig.tight_layout()
        fig.savefig(path)

    return draw, str(matplotlib.__version__)


def _order(key: tuple[Any, ...]) -> tuple[tuple[int, float, str], ...]:
    """Sort key of a series: numbers by value, before words."""
    return tuple((0, float(v), "") if isinstance(v, (int, float)) else (1, 0.0, str(v)) for v in key)


def _md_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
    return "\n".join([line(headers), line(["---"] * len(headers))] + [line(r) for r in rows])


def summary_markdown(result: dict[str, Any], link_prefix: str = "") -> str:
    """The Markdown summary of a :func:`run` result: a header (mode,
    backend, machine, plots), then per experiment its thread and question,
    the method, the key figures, the answer and the plot.  Links to the
    CSVs and PNGs start with ``link_prefix`` (``""``: beside the summary)."""
    lines = ["# vgic report", ""]
    mode = ("quick run (small sizes, few repeats: a smoke test, not for conclusions)" if result["quick"]
            else "full run")
    backend = ("the Cython core" if result["backend"] == "core" else
               "the pure-Python twin (times are the Python model's; the counts are the same as the core's)")
    m = result["machine"]
    lines += [f"Generated {result['generated']} by `vgic.report.run`: {mode}, measuring {backend}.", "",
              f"Machine: {m['system']} {m['machine']}, {m['cpus']} CPUs, Python {m['python']}, numpy {m['numpy']}. "
              "All numbers come from this one run; on a shared machine times move by 5-30 % between runs "
              "(the counts of register accesses, bytes and traps are exact).", ""]
    if result["plots"]:
        lines.append(f"Plots: drawn with matplotlib {result['matplotlib']} (Agg).")
    else:
        lines.append(f"Plots: skipped - {result['plots_skipped']}. The CSVs and this summary are complete "
                     "without them; install matplotlib (the `plots` extra) to get the PNGs.")
    lines.append("")
    for i, (name, ex) in enumerate(result["experiments"].items(), 1):
        lines.append(f"{i}. `{name}`: {ex['title']}")
    for i, (name, ex) in enumerate(result["experiments"].items(), 1):
        ans = ex["answer"]
        lines += ["", f"## {i}. `{name}`: {ex['title']}", "",
                  f"**Thread.** {ex['thread']}.", "",
                  f"**Question.** {ex['question']}", "",
                  f"**Method.** {ex['method']}", "",
                  _md_table(ans["headers"], ans["table"]), "",
                  f"**Answer.** {ans['text']}", ""]
        if ex["png"]:
            lines.append(f"![{name}]({link_prefix}{name}.png)")
        else:
            lines.append("*Plot skipped: matplotlib is not importable.*")
        lines += ["", f"Data: [`{name}.csv`]({link_prefix}{name}.csv), {len(ex['rows'])} rows, "
                      f"measured in {ex['seconds']:.1f} s."]
    return "\n".join(lines) + "\n"


def _select(only: Iterable[str] | None) -> list[Experiment]:
    if only is None:
        return list(EXPERIMENTS)
    wanted = [only] if isinstance(only, str) else list(only)
    known = {e.name for e in EXPERIMENTS}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ValueError(f"unknown experiment(s) {', '.join(unknown)}: choose from {', '.join(sorted(known))}")
    return [e for e in EXPERIMENTS if e.name in wanted]


def run(outdir: str | os.PathLike[str], quick: bool = False,
        progress: Callable[[str, int, int], None] | None = None,
        only: Iterable[str] | None = None, *, backend: str | None = None) -> dict[str, Any]:
    """Run the experiments and write their CSVs, PNGs and ``summary.md``
    into ``outdir`` (created if needed).

    ``quick`` uses small sizes and few repeats (the whole run takes a few
    seconds); ``progress(name, step, total)`` is called as each experiment
    advances; ``only`` names the experiments to run (in table order;
    ``ValueError`` for an unknown name); ``backend`` is "core", "pure" or
    None for the process default.  Returns the mode, backend, machine,
    whether plots were drawn (and why not), per experiment its rows, answer
    (``headers``, ``table``, ``text``, ``values``), seconds and paths, and
    every path written (``paths``)."""
    chosen = _select(only)
    backend_name, _ = _backend.modules(backend)
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    draw, plot_note = _plotting()
    result: dict[str, Any] = {
        "outdir": str(out), "quick": bool(quick), "backend": backend_name,
        "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"system": platform.system(), "machine": platform.machine(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "numpy": np.__version__},
        "plots": draw is not None,
        "matplotlib": plot_note if draw is not None else None,
        "plots_skipped": None if draw is not None else plot_note,
        "experiments": {}, "paths": [],
    }
    for exp in chosen:
        def tick(step: int, total: int, name: str = exp.name) -> None:
            if progress is not None:
                progress(name, step, total)
        ctx = Context(bool(quick), backend_name, tick)
        t0 = time.perf_counter()
        rows = exp.measure(ctx)
        seconds = time.perf_counter() - t0
        missing = [c for c in exp.columns if any(c not in r for r in rows)]
        if missing or not rows:
            raise RuntimeError(f"experiment {exp.name} measured no rows or rows without {missing}")
        answer = exp.answer(rows)
        csv_path = out / f"{exp.name}.csv"
        _write_csv(csv_path, exp.columns, rows)
        result["paths"].append(str(csv_path))
        png: str | None = None
        if draw is not None:
            png_path = out / f"{exp.name}.png"
            draw(png_path, exp.plot, rows, answer.values)
            png = str(png_path)
            result["paths"].append(png)
        result["experiments"][exp.name] = {
            "title": exp.title, "thread": exp.thread, "thread_file": exp.thread_file, "question": exp.question,
            "method": exp.method, "columns": list(exp.columns), "rows": rows, "seconds": seconds,
            "answer": {"headers": list(answer.headers), "table": [list(r) for r in answer.table],
                       "text": answer.text, "values": answer.values},
            "csv": str(csv_path), "png": png,
        }
    summary = out / "summary.md"
    summary.write_text(summary_markdown(result), encoding="utf-8")
    result["summary"] = str(summary)
    result["paths"].append(str(summary))
    return result

