"""``vgic-bench``: throughput of the Cython core against the pure-Python twin.

With no arguments it runs the default workload on a 4-vCPU, 256-IRQ VM and
prints operations per second for both implementations and their ratio:

* ``mmio_read_vgic``: a guest read of GICD_IIDR from Python, one call per access
  (named after kvm-unit-tests' micro-bench test of the same access);
* ``mmio_write_isenabler``: a guest write of GICD_ISENABLER1 from Python, with
  the cost of a no-op extension-type method taking the same arguments;
* ``mmio_replay``: :meth:`vgic.VM.mmio_replay` of the mixed trace of
  :func:`vgic.trace.mixed_trace` at 10^4, 10^5 and 10^6 accesses (the twin at
  2x10^4), which shows whether replay is linear in trace length;
* ``lookup``: the same 10^6-access replay with binary-search region lookup
  instead of the direct index;
* the world switch: the hyp save + restore of one vCPU with 16 used LRs (per
  call, with the no-op baseline), the fused batch save + restore over
  100,000 vCPUs in both LR storage orders (with one memcpy of the same
  records as the baseline), KVM's flush + fold of one vCPU with 8 pending
  SPIs on 4 LRs (the sort path), and a whole guest cycle (enter, ICC_IAR1,
  ICC_EOIR1, exit) through :class:`vgic.VM` of each backend, and the batch
  world switch of 256 vCPUs (``set_irq_levels``, ``enter_vcpus``,
  ``exit_vcpus``), per vCPU.

Timings are the best of several repeats of ``time.perf_counter`` around a
batch, so they are a per-operation minimum, as pytest-benchmark's ``min``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from vgic import _backend, regmap
from vgic.trace import mixed_trace
from vgic.vm import DEFAULT_DIST_BASE

NR_VCPUS = 4
NR_IRQS = 256


def _modules() -> tuple[Any, Any]:
    from vgic._pure import mmio as pure
    core: Any
    try:
        from vgic._core import mmio as core
    except ImportError:  # pragma: no cover - only without a compiled build
        core = None
    return core, pure


def make_vm(backend: str) -> Any:
    """A VM of ``backend`` ("core" or "pure") shaped as the default workload's."""
    from vgic import VM
    return VM(nr_vcpus=NR_VCPUS, nr_irqs=NR_IRQS, backend=backend)


def best_time(fn: Callable[[], Any], repeat: int) -> float:
    """The smallest wall time of ``repeat`` runs of ``fn``."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def per_call(method: Callable[..., Any], args: tuple, calls: int, repeat: int) -> float:
    """Seconds per call of ``method(*args)`` from a Python loop, with the
    cost of the empty loop itself taken out."""
    def loop() -> None:
        for _ in range(calls):
            method(*args)

    def empty() -> None:
        for _ in range(calls):
            pass

    return max(best_time(loop, repeat) - best_time(empty, repeat), 1e-12) / calls


def per_access(vm: Any, trace: np.ndarray, repeat: int) -> float:
    """Seconds per access of replaying ``trace`` on ``vm``."""
    return best_time(lambda: vm.mmio_replay(trace), repeat) / len(trace)


def run(quick: bool = False) -> dict[str, Any]:
    """Run the default workload; returns rows and the headline ratios."""
    core, pure = _modules()
    calls, twin_calls = (20_000, 2_000) if quick else (200_000, 20_000)
    repeat = 3 if quick else 7
    sizes = (10_000, 100_000) if quick else (10_000, 100_000, 1_000_000)
    twin_trace_len = 2_000 if quick else 20_000
    iidr = DEFAULT_DIST_BASE + regmap.GICD_IIDR
    isenabler1 = DEFAULT_DIST_BASE + regmap.GICD_ISENABLER + 4

    rows: list[dict[str, Any]] = []

    def row(name: str, core_s: float | None, twin_s: float | None, unit: str) -> None:
        rows.append({
            "workload": name, "unit": unit,
            "core_per_s": None if core_s is None else 1.0 / core_s,
            "twin_per_s": None if twin_s is None else 1.0 / twin_s,
            "ratio": None if core_s is None or twin_s is None else twin_s / core_s,
        })

    tg = make_vm("pure")
    cg = make_vm("core") if core else None
    twin_read = per_call(tg.mmio_read, (iidr, 4, 0), twin_calls, repeat)
    twin_write = per_call(tg.mmio_write, (isenabler1, 4, 0xFFFF, 0), twin_calls, repeat)
    core_read = per_call(cg.mmio_read, (iidr, 4, 0), calls, repeat) if cg else None
    core_write = per_call(cg.mmio_write, (isenabler1, 4, 0xFFFF, 0), calls, repeat) if cg else None
    row("mmio_read_vgic (GICD_IIDR, per call)", core_read, twin_read, "calls")
    row("mmio_write_isenabler (per call)", core_write, twin_write, "calls")
    noop = None
    if core:
        noop = per_call(core.Noop().mmio_write, (isenabler1, 4, 0xFFFF, 0), calls, repeat)
        row("no-op extension method (baseline)", noop, None, "calls")

    twin_trace = mixed_trace(twin_trace_len, nr_vcpus=NR_VCPUS, nr_irqs=NR_IRQS)
    twin_acc = per_access(make_vm("pure"), twin_trace, max(1, repeat // 2))
    core_acc: dict[int, float] = {}
    for n in sizes:
        trace = mixed_trace(n, nr_vcpus=NR_VCPUS, nr_irqs=NR_IRQS, seed=n)
        if core:
            core_acc[n] = per_access(make_vm("core"), trace, repeat)
        row(f"mmio_replay {n:,} accesses", core_acc.get(n), twin_acc, "accesses")
    bsearch = None
    if core:
        trace = mixed_trace(sizes[-1], nr_vcpus=NR_VCPUS, nr_irqs=NR_IRQS, seed=sizes[-1])
        core.set_lookup("bsearch")
        try:
            bsearch = per_access(make_vm("core"), trace, repeat)
        finally:
            core.set_lookup("direct")
        row(f"mmio_replay {sizes[-1]:,}, bsearch lookup", bsearch, twin_acc, "accesses")

    ws = _world_switch(rows, row, quick, repeat)
    ws.update(_its(rows, row, quick, repeat))
    ws["timers"] = _timers(rows, row, quick, repeat)
    ws["fp"] = _fp(rows, row, quick, repeat)
    ws["snapshots"] = _snapshots(rows, row, quick, repeat)

    summary: dict[str, Any] = {}
    if core:
        assert core_write is not None and noop is not None and bsearch is not None
        summary = {
            **ws,
            "mmio_write_over_noop": core_write / noop,
            "replay_accesses_per_s": 1.0 / core_acc[sizes[-1]],
            "replay_over_twin": twin_acc / core_acc[sizes[-1]],
            "replay_ns_per_access": {n: core_acc[n] * 1e9 for n in sizes},
            "direct_over_bsearch": bsearch / core_acc[sizes[-1]],
        }
    return {"vcpus": NR_VCPUS, "irqs": NR_IRQS, "rows": rows, "summary": summary}


def running_vm(backend: str | None = None, nr_lrs: int = 4) -> Any:
    """A 2-vCPU VM whose guest has opened its CPU interface, SPIs 32..63 on
    (the world-switch workloads, here and in ``benchmarks/``)."""
    from vgic import VM
    vm = VM(nr_vcpus=2, nr_irqs=64, nr_lrs=nr_lrs, backend=backend)
    vm.mmio_write(vm.dist_base + regmap.GICD_CTLR, 4, regmap.GICD_CTLR_ENABLE_G1)
    vm.mmio_write(vm.dist_base + regmap.GICD_ISENABLER + 4, 4, 0xFFFFFFFF)
    for v in vm.vcpus:
        v.enter()
        v.sysreg_write("ICC_PMR_EL1", 0xFF)
        v.sysreg_write("ICC_IGRPEN1_EL1", 1)
        v.exit()
    return vm


def lr_records(n: int, used: int) -> np.ndarray:
    """``n`` VCPU_IF records with ``used`` LRs in use and none empty in
    hardware, so every used LR is read back on save (the most work)."""
    from vgic import ich
    r = np.zeros(n, ich.VCPU_IF)
    r["used_lrs"] = used
    r["ich_lr"] = ich.lr_value(40, 0xA0, pending=True)
    r["vgic_lr"] = ich.lr_value(41, 0xA0, pending=True)
    return r


# ------------------------------------------------------------------- ITS
class ItsWorkload:
    """A VM whose guest set an ITS up as Linux does - LPIs enabled on every
    redistributor with 16 ID bits, every LPI enabled in the property table,
    flat device and collection tables, a 1 MiB command queue, collection v
    on vCPU v - and mapped ``nr_ites`` ITEs: ``events`` per device, LPI
    8192 + (k mod 57344) for the k-th, collection k mod nr_vcpus."""

    RAM = 64 << 20

    def __init__(self, backend: str | None, nr_ites: int, nr_vcpus: int = 4, events: int = 1024,
                 nr_irqs: int = 64, **options: Any) -> None:
        from vgic import VM
        # Up to 16 vCPUs the pending tables sit below the command queue;
        # more get a region of their own above the ITTs (64 KiB each).
        many = nr_vcpus > 16
        ram = self.RAM + (nr_vcpus << 16 if many else 0)
        self.vm = vm = VM(nr_vcpus=nr_vcpus, nr_irqs=nr_irqs, its=True, backend=backend, ram_size=ram, **options)
        r = vm.ram_base
        self.prop, self.cmdq = r + 0x10_0000, r + 0x40_0000
        self.pend = r + (self.RAM if many else 0x20_0000)
        self.device_table, self.collection_table, self.itt = r + 0x80_0000, r + 0x90_0000, r + 0x100_0000
        self.events = events
        self.bits = max(1, (events - 1).bit_length())
        self.cwriter = 0
        w = vm.mmio_write
        w(vm.dist_base + regmap.GICD_CTLR, 4, regmap.GICD_CTLR_ENABLE_G1)
        vm.memory[self.prop - r:self.prop - r + regmap.NR_LPIS] = 0xA3
        for v in range(nr_vcpus):
            rd = vm.redist_base + v * regmap.REDIST_STRIDE
            w(rd + regmap.GICR_PROPBASER, 8, self.prop | (regmap.INTERRUPT_ID_BITS_ITS - 1), v)
            w(rd + regmap.GICR_PENDBASER, 8, self.pend + v * 0x1_0000, v)
            w(rd + regmap.GICR_CTLR, 4, regmap.GICR_CTLR_ENABLE_LPIS, v)
        its = vm.its_base
        w(its + regmap.GITS_CBASER, 8, (1 << 63) | self.cmdq | 0xFF)        # 256 pages: 1 MiB
        w(its + regmap.GITS_BASER, 8, (1 << 63) | self.device_table)
        w(its + regmap.GITS_BASER + 8, 8, (1 << 63) | self.collection_table)
        w(its + regmap.GITS_CTLR, 4, regmap.GITS_CTLR_ENABLED)
        assert vm.its is not None
        #: The backend's ITS kernel.
        self.kernel: Any = vm.its.its
        cmds = [self.mapc(v, v) for v in range(nr_vcpus)]
        ndev = -(-nr_ites // events)
        for d in range(ndev):
            cmds.append(self.mapd(d))
        k = np.arange(nr_ites, dtype=np.uint64)
        mapti = np.zeros((nr_ites, 4), dtype=np.uint64)
        mapti[:, 0] = regmap.GITS_CMD_MAPTI | ((k // np.uint64(events)) << np.uint64(32))
        mapti[:, 1] = (k % np.uint64(events)) | ((np.uint64(regmap.LPI_BASE) + k % np.uint64(regmap.NR_LPIS))
                                                 << np.uint64(32))
        mapti[:, 2] = k % np.uint64(nr_vcpus)
        self.send(np.concatenate([np.array(cmds, dtype=np.uint64).reshape(-1, 4), mapti]))

    def mapd(self, dev: int, valid: bool = True) -> list[int]:
        return [regmap.GITS_CMD_MAPD | (dev << 32), self.bits - 1,
                ((1 << 63) if valid else 0) | (self.itt + dev * (8 << self.bits)), 0]

    @staticmethod
    def mapc(icid: int, vcpu: int) -> list[int]:
        return [regmap.GITS_CMD_MAPC, 0, (1 << 63) | (vcpu << 16) | icid, 0]

    QUEUE = (1 << 20) // 32

    def queue(self, cmds: np.ndarray) -> int:
        """Write up to QUEUE - 1 commands at CWRITER (wrapping); the CWRITER
        value that runs them."""
        n = cmds.shape[0]
        if n >= self.QUEUE:
            raise ValueError(f"{n} commands do not fit the queue")
        words = np.ascontiguousarray(cmds, dtype=np.uint64).reshape(-1).view(np.uint8)
        mem, o = self.vm.memory, self.cmdq - self.vm.ram_base
        start = self.cwriter
        first = min(n, self.QUEUE - start // 32) * 32
        mem[o + start:o + start + first] = words[:first]
        mem[o:o + n * 32 - first] = words[first:]
        self.cwriter = (start + n * 32) % (1 << 20)
        return self.cwriter

    def send(self, cmds: np.ndarray) -> None:
        """Run any number of commands, a queue-full at a time."""
        for i in range(0, cmds.shape[0], self.QUEUE - 1):
            self.vm.mmio_write(self.vm.its_base + regmap.GITS_CWRITER, 8, self.queue(cmds[i:i + self.QUEUE - 1]))

    def stream(self, dev: int, n: int) -> np.ndarray:
        """The command-stream workload: MAPD ``dev`` again (dropping its
        ITEs), then ``n`` MAPTI and ``n`` INT on it - the same effect every
        time it runs."""
        k = np.arange(n, dtype=np.uint64)
        out = np.zeros((2 * n + 1, 4), dtype=np.uint64)
        out[0] = self.mapd(dev)
        out[1:n + 1, 0] = regmap.GITS_CMD_MAPTI | (dev << 32)
        out[1:n + 1, 1] = k | ((np.uint64(regmap.LPI_BASE) + k) << np.uint64(32))
        out[1:n + 1, 2] = k % np.uint64(self.vm.nr_vcpus)
        out[n + 1:, 0] = regmap.GITS_CMD_INT | (dev << 32)
        out[n + 1:, 1] = k
        return out

    def table_image(self) -> tuple[np.ndarray, np.ndarray]:
        """(byte offsets in RAM, values) of the entries SAVE_TABLES writes:
        the slots it changes when the tables start zeroed."""
        r, mem = self.vm.ram_base, self.vm.memory
        spans = [(self.device_table, 0x1_0000), (self.collection_table, 0x1_0000),
                 (self.itt, (8 << self.bits) * 4096)]
        for base, size in spans:
            mem[base - r:base - r + size] = 0
        self.kernel.save_tables()
        offs, vals = [], []
        for base, size in spans:
            words = mem[base - r:base - r + size].view(np.uint64)
            nz = np.flatnonzero(words)
            offs.append(nz.astype(np.uint64) * np.uint64(8) + np.uint64(base - r))
            vals.append(words[nz])
        return np.concatenate(offs), np.concatenate(vals)

    def stripped_inputs(self) -> dict[str, Any]:
        """Keyword arguments of ``stripped_table_save`` and
        ``stripped_table_restore`` (the floor beside SAVE_TABLES and
        RESTORE_TABLES) over this ITS's ITEs: their ITT slots, each ITE's
        (pINTID, ICID) as SAVE_TABLES wrote it, empty LPI arrays for INTIDs
        8192 on, and the property table."""
        r = self.vm.ram_base
        offsets, values = self.table_image()
        itt = offsets >= np.uint64(self.itt - r)       # the device and collection tables lie below the ITTs
        offsets, values = offsets[itt], values[itt]
        ites = np.stack([(values >> np.uint64(regmap.KVM_ITS_ITE_PINTID_SHIFT)) & np.uint64(0xFFFFFFFF),
                         values & np.uint64(regmap.KVM_ITS_ITE_ICID_MASK)], axis=1).astype(np.uint32)
        n = regmap.NR_LPIS
        return {"memory": self.vm.memory, "offsets": offsets, "ites": ites,
                "lpi_bitmap": np.zeros((n + 31) // 32, dtype=np.uint32), "lpi_target": np.zeros(n, dtype=np.int32),
                "lpi_priority": np.zeros(n, dtype=np.uint8), "prop_offset": self.prop - r}

    def restore_fresh(self) -> int:
        """RESET, the BASERs back, RESTORE_TABLES: the restore of a migration."""
        vm, its = self.vm, self.vm.its_base
        b0, b1 = (vm.mmio_read(its + regmap.GITS_BASER + 8 * i, 8) for i in (0, 1))
        self.kernel.reset()
        vm.mmio_write(its + regmap.GITS_BASER, 8, b0 | (1 << 63))
        vm.mmio_write(its + regmap.GITS_BASER + 8, 8, b1 | (1 << 63))
        return int(self.kernel.restore_tables())


def _world_switch(rows: list, row: Callable, quick: bool, repeat: int) -> dict[str, Any]:
    """The world-switch rows; returns their headline ratios (core only)."""
    from vgic._pure import lr as pure_lr
    core_lr: Any
    try:
        from vgic._core import lr as core_lr
    except ImportError:  # pragma: no cover
        core_lr = None
    calls, twin_calls = (20_000, 2_000) if quick else (200_000, 20_000)
    n_batch, twin_batch = (10_000, 1_000) if quick else (100_000, 5_000)

    def pair(h: Any) -> Callable[[], None]:
        def run() -> None:
            h.save_state(1)
            h.restore_state(1)
        return run
    sr_twin = per_call(pair(pure_lr.HypIf(lr_records(4, 16), 16, 5, 5, False)), (), twin_calls // 4, repeat)
    sr_core = per_call(pair(core_lr.HypIf(lr_records(4, 16), 16, 5, 5, False)), (), calls, repeat) if core_lr else None
    row("lr save+restore, 16 LRs (per call)", sr_core, sr_twin, "vCPUs")
    out: dict[str, Any] = {}
    if core_lr and sr_core is not None:
        out["save_restore_over_noop"] = sr_core / per_call(pair(core_lr.Noop()), (), calls, repeat)
    twin_b = best_time(pure_lr.HypIf(lr_records(twin_batch, 16), 16, 5, 5, False).save_restore_batch,
                       max(1, repeat // 2)) / twin_batch
    for order in ("direct", "reverse"):
        core_b = None
        if core_lr:
            r = lr_records(n_batch, 16)
            core_b = best_time(core_lr.HypIf(r, 16, 5, 5, order == "reverse").save_restore_batch,
                               repeat) / n_batch
            out[f"batch_{order}_s"] = core_b
        row(f"lr batch save+restore, {order} (16 LRs)", core_b,
            twin_b if order == "direct" else None, "vCPUs")
    if core_lr:
        src, dst = lr_records(n_batch, 16), lr_records(n_batch, 16)
        memcpy = best_time(lambda: core_lr.copy_records(dst, src), repeat) / n_batch
        plain = best_time(core_lr.HypIf(lr_records(n_batch, 16), 16, 5, 5, False).plain_copy_batch,
                          repeat) / n_batch
        row("plain C loop of the same copies (baseline)", plain, None, "vCPUs")
        out["batch_over_memcpy"] = out["batch_direct_s"] / memcpy
        out["batch_over_plain_loop"] = out["batch_direct_s"] / plain
        out["reverse_over_direct"] = out.pop("batch_reverse_s") / out.pop("batch_direct_s")

    def flush_fold(vm: Any) -> Callable[[], None]:
        lists, gic = vm.gic.lists, vm.gic.gic

        def run() -> None:
            for intid in range(40, 48):
                gic.set_irq_bit(0, intid, 1, True)      # pending latch
            lists.flush(0)
            lists.fold(0)
        return run
    ff = {b: best_time(flush_fold(running_vm(b)), repeat) for b in ("core", "pure") if b != "core" or core_lr}
    row("flush+fold, 8 pending on 4 LRs (per call)", ff.get("core"), ff["pure"], "vCPUs")

    def cycle(vm: Any) -> Callable[[], None]:
        v = vm.vcpus[0]

        def run() -> None:
            for _ in range(200):
                vm.set_irq_level(40, True)
                v.enter()
                v.sysreg_write("ICC_EOIR1_EL1", v.sysreg_read("ICC_IAR1_EL1"))
                v.exit()
        return run
    cyc = {b: best_time(cycle(running_vm(b)), repeat) / 200 for b in ("core", "pure") if b != "core" or core_lr}
    row("guest cycle: enter, IAR1, EOIR1, exit", cyc.get("core"), cyc["pure"], "cycles")

    def many(backend: str) -> float:
        # 256 vCPUs, each with a pending PPI: one batch injection of a
        # report per vCPU, enter_vcpus and exit_vcpus, per vCPU.
        from vgic import VM
        vm = VM(nr_vcpus=256, nr_irqs=64, backend=backend)
        vm.mmio_write(vm.dist_base + regmap.GICD_CTLR, 4, regmap.GICD_CTLR_ENABLE_G1)
        for v in vm.vcpus:
            vm.mmio_write(v.sgi_base + regmap.GICR_ISENABLER0, 4, 1 << 20, v.id)
        ids, ones, vcpus = np.full(256, 20), np.ones(256, bool), np.arange(256)

        def run() -> None:
            vm.set_irq_levels(ids, ones, vcpus)
            vm.enter_vcpus()
            vm.exit_vcpus()
        return best_time(run, repeat) / 256
    bw = {b: many(b) for b in ("core", "pure") if b != "core" or core_lr}
    row("batch: inject + enter_vcpus + exit_vcpus", bw.get("core"), bw["pure"], "vCPUs")
    if core_lr:
        out["cycle_us"] = cyc["core"] * 1e6
    return out


def its_stream_seconds(backend: str, n: int, repeat: int) -> float:
    """Seconds per command of the MAPTI + INT stream (:meth:`ItsWorkload.stream`
    of ``n`` + ``n`` + 1 commands), timing only the GITS_CWRITER write that
    runs them."""
    w = ItsWorkload(backend, 0)
    cmds = w.stream(0, n)
    cwriter = w.vm.its_base + regmap.GITS_CWRITER
    best = float("inf")
    for _ in range(repeat):
        value = w.queue(cmds)
        t0 = time.perf_counter()
        w.vm.mmio_write(cwriter, 8, value)
        best = min(best, time.perf_counter() - t0)
    return best / cmds.shape[0]


def its_save_restore_seconds(nr_ites: int, repeat: int) -> tuple[float, float, float]:
    """(SAVE_TABLES, RESTORE_TABLES into an emptied ITS, the plain C loop
    writing and reading back the same table entries) in seconds, core only."""
    from vgic._core import its as core_its
    w = ItsWorkload("core", nr_ites)
    offsets, values = w.table_image()
    kernel = w.kernel
    save = best_time(kernel.save_tables, repeat)
    restore = float("inf")
    for _ in range(repeat):
        vm, base = w.vm, w.vm.its_base
        b0, b1 = (vm.mmio_read(base + regmap.GITS_BASER + 8 * i, 8) for i in (0, 1))
        kernel.reset()
        vm.mmio_write(base + regmap.GITS_BASER, 8, b0 | (1 << 63))
        vm.mmio_write(base + regmap.GITS_BASER + 8, 8, b1 | (1 << 63))
        t0 = time.perf_counter()
        if kernel.restore_tables():
            raise RuntimeError("RESTORE_TABLES failed on the benchmark's own tables")
        restore = min(restore, time.perf_counter() - t0)
    plain = best_time(lambda: core_its.plain_table_loop(w.vm.memory, offsets, values), repeat)
    return save, restore, plain


def its_stripped_seconds(nr_ites: int, repeat: int) -> tuple[float, float, float]:
    """(the stripped ITE save, the stripped restore, the plain C loop) in
    seconds at ``nr_ites`` ITEs, core only, measured in rounds (one of each
    per round) so a slow phase of the machine spreads over all three: the
    floor under SAVE_TABLES + RESTORE_TABLES that issue #8's 2x target is
    compared with."""
    from vgic._core import its as core_its
    w = ItsWorkload("core", nr_ites)
    args = w.stripped_inputs()
    offsets, values = w.table_image()
    restore_args = {**args, "ites": np.zeros_like(args["ites"])}

    def restore() -> None:
        restore_args["lpi_bitmap"][:] = 0
        core_its.stripped_table_restore(**restore_args)
    best = [float("inf")] * 3
    for _ in range(repeat):
        for k, fn in enumerate((lambda: core_its.stripped_table_save(**args), restore,
                                lambda: core_its.plain_table_loop(w.vm.memory, offsets, values))):
            best[k] = min(best[k], best_time(fn, 3))
    return best[0], best[1], best[2]


def pending_sync_seconds(nr_lpis: int, repeat: int, id_bits: int = 17) -> tuple[float, float]:
    """(per-LPI read-test-clear, one scan of the table) in seconds, on a
    pending table of 2**id_bits INTIDs with ``nr_lpis`` mapped LPIs spread
    over it, half of them pending (core only)."""
    from vgic._core import pending
    rng = np.random.default_rng(nr_lpis)
    space = (1 << id_bits) - regmap.LPI_BASE
    intids = np.sort(rng.choice(space, size=nr_lpis, replace=False)).astype(np.uint32) + regmap.LPI_BASE
    table = np.zeros((1 << id_bits) // 8, dtype=np.uint8)
    mapped = np.zeros((1 << id_bits) // 64, dtype=np.uint64)
    np.bitwise_or.at(mapped, intids >> 6, np.uint64(1) << (intids & 63).astype(np.uint64))
    filled = table.copy()
    hot = intids[::2]
    np.bitwise_or.at(filled, hot >> 3, (1 << (hot & 7)).astype(np.uint8))

    def timed(fn: Callable[[np.ndarray], Any]) -> float:
        best = float("inf")
        for _ in range(repeat):
            t = filled.copy()
            t0 = time.perf_counter()
            fn(t)
            best = min(best, time.perf_counter() - t0)
        return best
    return (timed(lambda t: pending.sync_per_lpi(t, intids)), timed(lambda t: pending.sync_scan(t, mapped)))


def _timer_vm(backend: str, policy: str) -> Any:
    """One vCPU that has run once, its vtimer's PPI enabled in the GIC and
    the guest's CPU interface open, exited and put."""
    import vgic
    vm = vgic.VM(nr_vcpus=1, timer_policy=policy, backend=backend)
    v = vm.vcpus[0]
    vm.mmio_write(vm.dist_base + regmap.GICD_CTLR, 4, 0x12)
    vm.mmio_write(v.sgi_base + regmap.GICR_ISENABLER0, 4, 1 << 27)
    v.enter()
    v.sysreg_write("ICC_PMR_EL1", 0xFF)
    v.sysreg_write("ICC_IGRPEN1_EL1", 1)
    v.exit()
    v.put()
    return vm


def timer_cycle_costs(backend: str, policy: str, kind: str, cycles: int, repeat: int) -> tuple[float, float, float]:
    """(seconds, timer sysreg reads, writes) per cycle of ``kind``:
    ``"enter_exit"`` (guest entry and exit of a loaded vCPU, its vtimer
    enabled and far from expiry), ``"load_put"`` (vcpu_load, entry, exit,
    vcpu_put) or ``"timer_10ms"`` (kvm-unit-tests micro-bench: the guest
    arms its vtimer 10 ms ahead and waits in WFI; the host blocks the
    vCPU, 10 ms pass, it wakes, enters, the guest takes the interrupt,
    masks the timer, EOIs, exits)."""
    vm = _timer_vm(backend, policy)
    v = vm.vcpus[0]
    ten_ms = vm.cntfrq // 100
    v.enter()
    v.sysreg_write("CNTV_CVAL_EL0", (1 << 63))
    v.sysreg_write("CNTV_CTL_EL0", 1)
    v.exit()
    if kind == "load_put":
        v.put()

    def enter_exit() -> None:
        for _ in range(cycles):
            v.enter()
            v.exit()

    def load_put() -> None:
        for _ in range(cycles):
            v.load()
            v.enter()
            v.exit()
            v.put()

    def timer_10ms() -> None:
        for _ in range(cycles):
            v.enter()
            v.sysreg_write("CNTV_TVAL_EL0", ten_ms)
            v.sysreg_write("CNTV_CTL_EL0", 1)
            v.exit()
            v.block()
            vm.advance(ten_ms)
            v.unblock()
            v.enter()
            intid = v.sysreg_read("ICC_IAR1_EL1")
            v.sysreg_write("CNTV_CTL_EL0", 3)
            v.sysreg_write("ICC_EOIR1_EL1", intid)
            v.exit()

    fn = {"enter_exit": enter_exit, "load_put": load_put, "timer_10ms": timer_10ms}[kind]
    r0, w0 = v.timer.sysreg_reads, v.timer.sysreg_writes
    fn()
    reads, writes = v.timer.sysreg_reads - r0, v.timer.sysreg_writes - w0
    return best_time(fn, repeat) / cycles, reads / cycles, writes / cycles


def timer_batch_seconds(n: int, repeat: int) -> tuple[float, float]:
    """(the model's save_batch + restore_batch + expiry_batch, the plain C
    loop doing the same record work) in seconds over ``n`` vCPUs, core only."""
    from vgic._core import timer as core_timer
    t = core_timer.Timers(n)
    rng = np.random.default_rng(n)
    recs = t.records
    recs["cntv_ctl"] = rng.integers(0, 4, n)
    recs["cntp_ctl"] = rng.integers(0, 4, n)
    recs["cntv_cval"] = rng.integers(0, 1 << 40, n, dtype=np.uint64)
    recs["cntp_cval"] = rng.integers(0, 1 << 40, n, dtype=np.uint64)
    ids = np.arange(n, dtype=np.int64)
    t.restore_batch(ids)

    def model() -> None:
        t.save_batch(ids)
        t.restore_batch(ids)
        t.expiry_batch(ids)

    plain_recs = recs.copy()
    model_t = best_time(model, repeat)
    plain_t = best_time(lambda: core_timer.plain_timer_loop(plain_recs, ids, 0, 0), repeat)
    return model_t, plain_t


def _timers(rows: list, row: Callable, quick: bool, repeat: int) -> dict[str, Any]:
    """Issue #9's figures: per cycle time and timer sysreg accesses for each
    policy, and the batch kernels over 100,000 vCPUs beside the plain loop."""
    out: dict[str, Any] = {}
    cycles = 200 if quick else 2000
    for kind in ("enter_exit", "load_put", "timer_10ms"):
        for policy in ("lazy", "eager"):
            core, reads, writes = timer_cycle_costs("core", policy, kind, cycles, repeat)
            twin, _, _ = timer_cycle_costs("pure", policy, kind, max(cycles // 20, 10), 1)
            out[f"{kind}_{policy}"] = {"seconds": core, "reads": reads, "writes": writes}
            row(f"timer {kind}, {policy} ({reads:g} R + {writes:g} W per cycle)", core, twin, "cycles")
    n = 10_000 if quick else 100_000
    model_t, plain_t = timer_batch_seconds(n, repeat)
    out["batch"] = {"n": n, "model": model_t, "plain": plain_t, "ratio": model_t / plain_t}
    row(f"timer save+restore+expiry, {n:,} vCPUs", model_t / n, None, "vCPUs")
    row(f"plain C loop, same record work, {n:,} vCPUs", plain_t / n, None, "vCPUs")
    return out


def _snapshots(rows: list, row: Callable, quick: bool, repeat: int) -> dict[str, Any]:
    """Issue #11's figures: vm.save() and the restore into a fresh VM through
    KVM's ABI, core against twin on a mid-size VM, and the core on the
    brief's VM (512 vCPUs, 992 IRQs, 100,000 LPIs, 2048-bit SVE) beside one
    copy of the snapshot's bytes."""
    from vgic.snapbench import save_restore_seconds, snapshot_vm
    out: dict[str, Any] = {}
    mid = {"nr_vcpus": 16, "nr_irqs": 256, "nr_lpis": 1_000, "vq": 4}
    m = {be: save_restore_seconds(snapshot_vm(be, **mid), max(1, repeat // 2)) for be in ("core", "pure")}
    row("snapshot save, 16 vCPUs (1k LPIs, SVE 512)", m["core"]["save"], m["pure"]["save"], "snapshots")
    row("snapshot restore, same VM", m["core"]["restore"], m["pure"]["restore"], "snapshots")
    out["mid"] = m
    if not quick:
        big = save_restore_seconds(snapshot_vm("core", nr_vcpus=512, nr_irqs=992, nr_lpis=100_000, vq=16), repeat)
        row("snapshot save, 512 vCPUs (target VM)", big["save"], None, "snapshots")
        row("snapshot restore + VM build, target VM", big["restore"] + big["build"], None, "snapshots")
        row(f"one copy of its {big['nbytes'] / 1e6:.1f} MB (baseline)", big["copy_bytes"], None, "copies")
        out["target"] = big
    return out


def sve_copy_seconds(n: int, vq: int, repeat: int) -> tuple[float, float]:
    """(the batch register-file copy of ``n`` vCPUs' SVE state at ``vq``,
    one memcpy of the same bytes) in seconds, core only."""
    from vgic import fpregs
    from vgic._core import fpsimd as core_fp
    size = fpregs.regs_size(vq)
    src = np.random.default_rng(vq).integers(0, 256, (n, size), dtype=np.uint8)
    dst = np.zeros_like(src)
    ids = np.arange(n, dtype=np.int64)
    flat = np.zeros(n * size, dtype=np.uint8)
    copy = best_time(lambda: core_fp.copy_batch(dst, vq, src, vq, vq, ids), repeat)
    plain = best_time(lambda: core_fp.memcpy_baseline(flat, src), repeat)
    return copy, plain


def fp_switch_costs(backend: str, policy: str, vq: int, use: float, loads: int, repeat: int,
                    entries_per_load: int = 4) -> dict[str, float]:
    """Eager against lazy FP/SVE switching (the 2017 SVE thread's question):
    an SVE guest at ``vq`` entered ``entries_per_load`` times per
    vcpu_load..vcpu_put (the in-kernel exits of one KVM_RUN), using FP/SVE
    (a Z register written) on a fraction ``use`` of its entries.  Per entry:
    seconds, guest and host bytes moved, traps."""
    from vgic import fpregs
    _, impl = _backend.modules(backend)
    k = impl.fpsimd.FpState(1, range(1, vq + 1), fpregs.FP_POLICIES[policy], True, False)
    k.set_vls(0, fpregs.vls_words(range(1, vq + 1)))
    k.finalize(0, fpregs.KVM_ARM_VCPU_SVE)
    pattern = np.random.default_rng(int(use * 1000)).random(loads * entries_per_load) < use
    data = bytes(16)                    # the guest's VL is 128 bits until it writes ZCR_EL1

    def cycle() -> None:
        e = 0
        for _ in range(loads):
            k.load(0)
            for _ in range(entries_per_load):
                k.enter(0)
                if pattern[e]:
                    k.guest_write(0, 1, 3, data)
                k.exit(0)
                e += 1
            k.put(0)

    rec = k.records
    g0, h0, t0 = int(rec[0]["guest_bytes"]), int(rec[0]["host_bytes"]), int(rec[0]["traps"])
    cycle()
    entries = loads * entries_per_load
    out = {"guest_bytes": (int(rec[0]["guest_bytes"]) - g0) / entries,
           "host_bytes": (int(rec[0]["host_bytes"]) - h0) / entries,
           "traps": (int(rec[0]["traps"]) - t0) / entries}
    out["seconds"] = best_time(cycle, repeat) / entries
    return out


def _fp(rows: list, row: Callable, quick: bool, repeat: int) -> dict[str, Any]:
    """Issue #10's figures: the batch copy against memcpy, and eager against
    lazy by vector length and FP-use fraction."""
    out: dict[str, Any] = {}
    n = 2_000 if quick else 10_000
    copy, plain = sve_copy_seconds(n, 16, repeat)
    out["copy"] = {"n": n, "copy": copy, "memcpy": plain, "ratio": copy / plain}
    row(f"sve copy_batch, {n:,} vCPUs at 2048 bits", copy / n, None, "vCPUs")
    row(f"one memcpy of the same bytes ({n:,} x 8,736 B)", plain / n, None, "vCPUs")
    loads = 20 if quick else 200
    grid: dict[str, Any] = {}
    for vq in (1, 2, 4, 8, 16):
        for use in (0.0, 0.1, 0.5, 1.0):
            for policy in ("lazy", "eager"):
                grid[f"{vq * 128}b_{int(use * 100)}%_{policy}"] = fp_switch_costs("core", policy, vq, use, loads,
                                                                                 max(1, repeat // 2))
    out["switch"] = grid
    for vq in (1, 16):
        for use in (0.1, 1.0):
            for policy in ("lazy", "eager"):
                g = grid[f"{vq * 128}b_{int(use * 100)}%_{policy}"]
                row(f"fp switch {vq * 128}b, use {int(use * 100)}%, {policy} "
                    f"({g['guest_bytes'] + g['host_bytes']:,.0f} B/entry)", g["seconds"], None, "entries")
    return out


def _its(rows: list, row: Callable, quick: bool, repeat: int) -> dict[str, Any]:
    """The ITS rows (issue #8): the command stream, save/restore, pending sync."""
    try:
        import vgic._core.its  # noqa: F401
        have_core = True
    except ImportError:  # pragma: no cover
        have_core = False
    n, twin_n = (4_000, 500) if quick else (16_000, 2_000)
    core_s = its_stream_seconds("core", n, repeat) if have_core else None
    twin_s = its_stream_seconds("pure", twin_n, max(1, repeat // 2))
    row("its: MAPTI + INT command stream", core_s, twin_s, "commands")
    out: dict[str, Any] = {}
    if core_s is None:
        return out
    out["its_commands_per_s"] = 1.0 / core_s
    out["its_stream_over_twin"] = twin_s / core_s
    out["its_save_restore"] = {}
    for k in (10, 1_000, 100_000):
        save, restore, plain = its_save_restore_seconds(k, repeat)
        row(f"its: SAVE_TABLES, {k:,} ITEs", save / k, None, "ITEs")
        row(f"its: RESTORE_TABLES, {k:,} ITEs", restore / k, None, "ITEs")
        out["its_save_restore"][k] = {"save_us": save * 1e6, "restore_us": restore * 1e6,
                                      "plain_us": plain * 1e6, "ratio": (save + restore) / plain}
    s_save, s_restore, s_plain = its_stripped_seconds(100_000, repeat)
    out["its_stripped_pair"] = {"save_us": s_save * 1e6, "restore_us": s_restore * 1e6, "plain_us": s_plain * 1e6,
                                "ratio": (s_save + s_restore) / s_plain}
    out["pending_sync"] = {}
    for k in (10, 1_000, 100_000):
        per_lpi, scan = pending_sync_seconds(k, repeat)
        out["pending_sync"][k] = {"per_lpi_us": per_lpi * 1e6, "scan_us": scan * 1e6}
    return out


def _fmt_rate(v: float | None) -> str:
    if v is None:
        return "-"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= scale:
            return f"{v / scale:7.2f} {suffix}"
    return f"{v:7.1f}  "


def format_report(result: dict[str, Any]) -> str:
    """The human-readable table ``vgic-bench`` prints."""
    lines = [f"vgic-bench: Cython core vs pure-Python twin, {result['vcpus']} vCPUs, "
             f"{result['irqs']} IRQs (ops/s, best of repeats)", ""]
    lines.append(f"{'workload':44} {'core ops/s':>12} {'twin ops/s':>12} {'core/twin':>10}")
    for r in result["rows"]:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:9.0f}x"
        lines.append(f"{r['workload']:44} {_fmt_rate(r['core_per_s']):>12} "
                     f"{_fmt_rate(r['twin_per_s']):>12} {ratio:>10}")
    s = result["summary"]
    if s:
        lines += [
            "",
            f"mmio_write / no-op method call:   {s['mmio_write_over_noop']:.2f}x   (target <= 2x)",
            f"replay throughput:                {s['replay_accesses_per_s'] / 1e6:.1f} M accesses/s "
            f"(target >= 30 M), {s['replay_over_twin']:.0f}x the twin (target >= 100x)",
            "replay ns/access by trace length: " + ", ".join(
                f"{n:,}: {ns:.1f}" for n, ns in s["replay_ns_per_access"].items()),
            f"direct index vs binary search:    {s['direct_over_bsearch']:.2f}x faster",
            f"save+restore / two no-op calls:   {s['save_restore_over_noop']:.2f}x   (target <= 2x)",
            f"batch save+restore / plain loop:  {s['batch_over_plain_loop']:.2f}x   (target <= 1.5x)",
            f"batch save+restore / memcpy:      {s['batch_over_memcpy']:.2f}x",
            f"reverse / direct LR order:        {s['reverse_over_direct']:.2f}x   (16 used LRs)",
            f"guest cycle:                      {s['cycle_us']:.1f} us",
            f"its command stream:               {s['its_commands_per_s'] / 1e6:.1f} M commands/s "
            f"(target >= 5 M), {s['its_stream_over_twin']:.0f}x the twin (target >= 100x)",
        ]
        for k, v in s["its_save_restore"].items():
            lines.append(f"its save+restore, {k:>7,} ITEs:   {v['save_us']:9.1f} + {v['restore_us']:9.1f} us, "
                         f"plain loop {v['plain_us']:8.1f} us: {v['ratio']:.1f}x")
        v = s["its_stripped_pair"]
        lines.append(f"its stripped pair (the floor), 100,000 ITEs: {v['save_us']:.1f} + {v['restore_us']:.1f} us, "
                     f"plain loop {v['plain_us']:.1f} us: {v['ratio']:.1f}x")
        for k, v in s["pending_sync"].items():
            lines.append(f"pending sync, {k:>7,} LPIs:       per-LPI {v['per_lpi_us']:9.1f} us, "
                         f"one table scan {v['scan_us']:7.1f} us")
        t = s["timers"]
        for kind in ("enter_exit", "load_put", "timer_10ms"):
            lz, eg = t[f"{kind}_lazy"], t[f"{kind}_eager"]
            us = f"{lz['seconds'] * 1e6:5.2f} / {eg['seconds'] * 1e6:5.2f} us"
            lines.append(f"timer {kind + ',':<11} lazy/eager:  {us}, "
                         f"sysreg accesses {lz['reads'] + lz['writes']:g} / {eg['reads'] + eg['writes']:g} per cycle")
        b = t["batch"]
        lines.append(f"timer batch save+restore+expiry / plain loop: {b['ratio']:.2f}x   "
                     f"(target <= 1.5x, {b['n']:,} vCPUs)")
        fp = s["fp"]
        lines.append(f"sve batch copy / one memcpy:       {fp['copy']['ratio']:.2f}x   "
                     f"(target <= 1.2x, {fp['copy']['n']:,} vCPUs at 2048 bits)")
        lines.append("fp switch, bytes per entry (lazy / eager), 4 entries per load, by FP use:")
        for vq in (1, 2, 4, 8, 16):
            cells = []
            for use in (0, 10, 50, 100):
                lz, eg = (fp["switch"][f"{vq * 128}b_{use}%_{p}"] for p in ("lazy", "eager"))
                cells.append(f"{use:>3}%: {lz['guest_bytes'] + lz['host_bytes']:>6,.0f} / "
                             f"{eg['guest_bytes'] + eg['host_bytes']:>6,.0f}")
            lines.append(f"  {vq * 128:>4} bits  " + "   ".join(cells))
        snap = s.get("snapshots", {})
        big = snap.get("target")
        if big:
            lines.append(f"snapshot, 512 vCPUs/992 IRQs/100k LPIs/2048-bit SVE: save {big['save'] * 1e3:.1f} ms, "
                         f"restore {big['restore'] * 1e3:.1f} ms + VM build {big['build'] * 1e3:.1f} ms "
                         f"(target < 50 ms each)")
            lines.append(f"  vs one copy of its {big['nbytes'] / 1e6:.1f} MB ({big['copy_bytes'] * 1e3:.2f} ms): "
                         f"save {big['save'] / big['copy_bytes']:.0f}x, restore "
                         f"{big['restore'] / big['copy_bytes']:.0f}x (target <= 3x); file / payload "
                         f"{big['nbytes'] / big['payload']:.4f} (target <= 1.2)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vgic-bench`` console script."""
    parser = argparse.ArgumentParser(prog="vgic-bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller batches (a smoke run)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    result = run(quick=args.quick)
    print(format_report(result))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


# ------------------------------------------------------------ vgic report
# Measurements the experiments of vgic/report.py need beside the ones above.

def lr_order_vm(backend: str | None, order: str, nr_vcpus: int = 512) -> tuple[Any, Any, np.ndarray]:
    """A VM of ``nr_vcpus`` vCPUs with 16 LRs each in LR storage ``order``
    (``VM(lr_order=...)``), every vCPU's record filled as :func:`lr_records`
    fills them: ``(vm, its hyp save/restore kernel, the live records)``.
    Set ``records["used_lrs"]`` before timing."""
    from vgic import VM, ich
    vm = VM(nr_vcpus=nr_vcpus, nr_irqs=64, nr_lrs=16, lr_order=order, backend=backend)
    records = vm.cpu_if_records
    records["used_lrs"] = 16
    records["ich_lr"] = ich.lr_value(40, 0xA0, pending=True)
    records["vgic_lr"] = ich.lr_value(41, 0xA0, pending=True)
    assert vm.gic is not None
    return vm, vm.gic.hyp_if, records


def lr_stream_hyp_if(backend: str | None, order: str, n: int) -> tuple[Any, np.ndarray]:
    """The hyp save/restore kernel the VM builds for ``order``, over ``n``
    records of :func:`lr_records` - more vCPUs than a VM may have, so the
    batch streams through memory instead of staying in cache."""
    _, impl = _backend.modules(backend)
    records = lr_records(n, 16)
    return impl.lr.HypIf(records, 16, 5, 5, order == "reverse"), records


def lr_save_restore_seconds(hyp_if: Any, records: np.ndarray, used: int, calls: int, repeat: int) -> float:
    """Seconds per vCPU of the batch hyp save + restore
    (``save_restore_batch``) of every record, ``used`` LRs in use."""
    records["used_lrs"] = used
    n = records.shape[0]

    def batch() -> None:
        for _ in range(calls):
            hyp_if.save_restore_batch()
    return best_time(batch, repeat) / (calls * n)


def timer_load_cycle_costs(backend: str | None, policy: str, entries: int, cycles: int,
                           repeat: int) -> tuple[float, float, float]:
    """(seconds, timer sysreg reads, writes) per vcpu_load..vcpu_put period
    in which the guest runs ``entries`` times (KVM_RUN with ``entries`` - 1
    exits handled in the kernel), its vtimer enabled and far from expiry.
    ``entries=1`` is :func:`timer_cycle_costs`' ``"load_put"``."""
    name, _ = _backend.modules(backend)
    vm = _timer_vm(name, policy)
    v = vm.vcpus[0]
    v.enter()
    v.sysreg_write("CNTV_CVAL_EL0", (1 << 63))
    v.sysreg_write("CNTV_CTL_EL0", 1)
    v.exit()
    v.put()

    def period() -> None:
        for _ in range(cycles):
            v.load()
            for _ in range(entries):
                v.enter()
                v.exit()
            v.put()

    r0, w0 = v.timer.sysreg_reads, v.timer.sysreg_writes
    period()
    reads, writes = v.timer.sysreg_reads - r0, v.timer.sysreg_writes - w0
    return best_time(period, repeat) / cycles, reads / cycles, writes / cycles


def pending_sync_seconds_on(backend: str | None, nr_lpis: int, repeat: int,
                            id_bits: int = 17) -> tuple[float, float]:
    """:func:`pending_sync_seconds` on either implementation's kernels
    (``backend`` "core", "pure" or None for the process default): (per-LPI
    read-test-clear, one scan of the table) in seconds, ``nr_lpis`` mapped
    LPIs spread over a pending table of 2**id_bits INTIDs, every other one
    pending."""
    _, impl = _backend.modules(backend)
    kernel = impl.pending
    rng = np.random.default_rng(nr_lpis)
    nr_ids = 1 << id_bits
    lpis = rng.choice(nr_ids - regmap.LPI_BASE, size=nr_lpis, replace=False) + regmap.LPI_BASE
    lpis = np.sort(lpis).astype(np.uint32)
    bits = np.zeros(nr_ids, dtype=bool)
    bits[lpis[::2]] = True
    pending_table = np.packbits(bits, bitorder="little")
    in_map = np.zeros(nr_ids, dtype=bool)
    in_map[lpis] = True
    mapped = np.packbits(in_map, bitorder="little").view("<u8").astype(np.uint64)

    def best(fn: Callable[[np.ndarray], Any]) -> float:
        out = float("inf")
        for _ in range(repeat):
            table = pending_table.copy()        # each run consumes the bits it finds
            t0 = time.perf_counter()
            fn(table)
            out = min(out, time.perf_counter() - t0)
        return out
    return (best(lambda t: kernel.sync_per_lpi(t, lpis)), best(lambda t: kernel.sync_scan(t, mapped)))
