"""ITS benchmarks (issue #8): the MAPTI + INT command stream, SAVE_TABLES /
RESTORE_TABLES beside a plain C loop moving the same table entries, and the
2017 thread's question - per-LPI pending-bit sync against one scan of the
pending table.  Targets are ratios measured in the same run."""
import numpy as np
import pytest

from vgic import regmap
from vgic.bench import (
    ItsWorkload,
    its_save_restore_seconds,
    its_stream_seconds,
    its_stripped_seconds,
    pending_sync_seconds,
)

SIZES = [10, 1_000, 100_000]


@pytest.fixture(scope="module")
def its_core():
    return pytest.importorskip("vgic._core.its")


@pytest.mark.parametrize("backend", ["core", "pure"], ids=["core", "twin"])
@pytest.mark.benchmark(group="its_stream")
def test_its_command_stream(benchmark, backend, its_core):
    """One queue of MAPD + n MAPTI + n INT (n = 16,000 on the core, 1,000 on
    the twin), run by the GITS_CWRITER write; pytest-benchmark's time is
    per queue."""
    n = 16_000 if backend == "core" else 1_000
    w = ItsWorkload(backend, 0)
    cmds = w.stream(0, n)
    cwriter = w.vm.its_base + regmap.GITS_CWRITER
    benchmark.extra_info["commands"] = int(cmds.shape[0])
    benchmark.pedantic(w.vm.mmio_write, setup=lambda: ((cwriter, 8, w.queue(cmds)), {}), rounds=10)


@pytest.mark.parametrize("nr_ites", SIZES)
@pytest.mark.benchmark(group="its_save")
def test_its_save_tables(benchmark, nr_ites, its_core):
    """KVM_DEV_ARM_ITS_SAVE_TABLES of an ITS mapping ``nr_ites`` ITEs."""
    w = ItsWorkload("core", nr_ites)
    benchmark(w.vm.its.its.save_tables)


@pytest.mark.parametrize("nr_ites", SIZES)
@pytest.mark.benchmark(group="its_restore")
def test_its_restore_tables(benchmark, nr_ites, its_core):
    """KVM_DEV_ARM_ITS_RESTORE_TABLES into an emptied ITS (RESET and the
    BASERs written back are setup, not timed)."""
    w = ItsWorkload("core", nr_ites)
    w.vm.its.its.save_tables()
    vm, base = w.vm, w.vm.its_base
    b0, b1 = (vm.mmio_read(base + regmap.GITS_BASER + 8 * i, 8) for i in (0, 1))

    def setup():
        vm.its.its.reset()
        vm.mmio_write(base + regmap.GITS_BASER, 8, b0 | (1 << 63))
        vm.mmio_write(base + regmap.GITS_BASER + 8, 8, b1 | (1 << 63))
    benchmark.pedantic(vm.its.its.restore_tables, setup=setup, rounds=10)


@pytest.mark.parametrize("nr_ites", SIZES)
@pytest.mark.benchmark(group="its_restore")
def test_plain_table_loop(benchmark, nr_ites, its_core):
    """The baseline: a plain C loop writing, then reading back, the table
    entries SAVE_TABLES writes for the same ITS."""
    w = ItsWorkload("core", nr_ites)
    offsets, values = w.table_image()
    benchmark(its_core.plain_table_loop, w.vm.memory, offsets, values)


@pytest.mark.parametrize("nr_ites", SIZES)
@pytest.mark.parametrize("half", ["save", "restore"])
@pytest.mark.benchmark(group="its_restore")
def test_stripped_table_pair(benchmark, half, nr_ites, its_core):
    """The floor under SAVE_TABLES + RESTORE_TABLES: the stripped pair
    (encode each ITE; decode it and make its LPI with its property byte -
    no validation, pending bits, references or undo log).  The restore's
    time includes clearing its LPI bitmap (7 KiB)."""
    w = ItsWorkload("core", nr_ites)
    args = w.stripped_inputs()
    if half == "save":
        benchmark(its_core.stripped_table_save, **args)
    else:
        out = {**args, "ites": np.zeros_like(args["ites"])}

        def restore():
            out["lpi_bitmap"][:] = 0
            return its_core.stripped_table_restore(**out)
        benchmark(restore)


@pytest.mark.parametrize("nr_lpis", SIZES)
@pytest.mark.parametrize("how", ["per_lpi", "scan"])
@pytest.mark.benchmark(group="pending_sync")
def test_pending_sync(benchmark, how, nr_lpis, its_core):
    """Loading pending state for ``nr_lpis`` mapped LPIs (half pending) from
    a 2**17-INTID pending table: per-LPI read-test-clear (KVM's way) or one
    byte-wise scan of the table."""
    per_lpi, scan = pending_sync_seconds(nr_lpis, 5)
    benchmark.extra_info["per_lpi_us"] = per_lpi * 1e6
    benchmark.extra_info["scan_us"] = scan * 1e6
    from vgic._core import pending
    rng = np.random.default_rng(nr_lpis)
    intids = np.sort(rng.choice((1 << 17) - 8192, size=nr_lpis, replace=False)).astype(np.uint32) + 8192
    table = np.zeros((1 << 17) // 8, dtype=np.uint8)
    mapped = np.zeros((1 << 17) // 64, dtype=np.uint64)
    np.bitwise_or.at(mapped, intids >> 6, np.uint64(1) << (intids & 63).astype(np.uint64))
    if how == "per_lpi":
        benchmark(pending.sync_per_lpi, table, intids)
    else:
        benchmark(pending.sync_scan, table, mapped)


# ---------------------------------------------------------------- the targets
def test_target_its_command_stream(its_core):
    """Issue #8: a MAPTI + INT command stream runs at 5 million commands per
    second or more, and at least 100x the twin, measured in one run."""
    core = min(its_stream_seconds("core", 16_000, 5) for _ in range(2))
    twin = its_stream_seconds("pure", 1_000, 2)
    assert 1.0 / core >= 5e6, f"{1.0 / core / 1e6:.1f} M commands/s"
    assert twin / core >= 100, f"{twin / core:.0f}x the twin"


@pytest.mark.xfail(strict=True, reason=(
    "missed: at 100,000 ITEs SAVE + RESTORE is 7.5-11x the plain loop (about 0.2 + 0.8 ms against "
    "0.1 ms): RESTORE_TABLES does what the loop does not - it validates every entry, builds the "
    "per-device ITE arrays and makes 57,344 LPIs, each with its configuration byte and pending bit "
    "read from guest memory (vgic_add_lpi): about 164 instructions per ITE against the loop's 15. "
    "Even the stripped pair (test_stripped_table_pair), which skips all of that, is 2.6-3.3x the loop"))
def test_target_its_save_restore_vs_plain_loop(its_core):
    """Issue #8: SAVE_TABLES then RESTORE_TABLES with 100,000 mapped ITEs
    within 2x of a plain C loop that writes and reads back the same table
    bytes, measured beside it."""
    save, restore, plain = its_save_restore_seconds(100_000, 5)
    assert (save + restore) / plain <= 2.0, f"{(save + restore) / plain:.1f}x the plain loop"


def test_stripped_pair_is_a_floor(its_core):
    """The stripped pair does less than SAVE_TABLES + RESTORE_TABLES (a
    subset of their work), so it must not be slower than them at 100,000
    ITEs, measured in one run - else it is no floor to compare with."""
    save, restore, _ = its_save_restore_seconds(100_000, 5)
    s_save, s_restore, _ = its_stripped_seconds(100_000, 5)
    assert s_save + s_restore < save + restore, (s_save, s_restore, save, restore)


def test_pending_sync_crossover(its_core):
    """The 2017 thread's question, answered with this machine's numbers:
    for a typical VM (10 or 1,000 LPIs) the per-LPI sync KVM chose costs
    less than scanning the whole pending table once; the scan only wins
    with tens of thousands of LPIs."""
    few = [pending_sync_seconds(n, 7) for n in (10, 1_000)]
    many = pending_sync_seconds(100_000, 7)
    assert all(per_lpi < scan for per_lpi, scan in few), few
    assert many[1] < many[0], many
