"""The ``vgic`` command: benchmarks, snapshots, trace replay and the report.

    vgic bench [--quick] [--json PATH]        the throughput suite (= vgic-bench)
    vgic snapshot take OUT [options]           save a sample VM (the benchmark's workload)
    vgic snapshot show FILE [--vcpu N] [...]   its registers, by name, per vCPU
    vgic snapshot diff A B                     which registers differ (exit 1 if any)
    vgic replay TRACE.npy [options]            replay an MMIO trace, report throughput
    vgic report [--quick] OUTDIR               the threads' experiments: CSV, PNG, Markdown
    vgic run IMAGE [-smp N]                    an aarch64 image on Unicorn with vgic as its GIC ([run] extra)

Each subcommand has ``--help``.  Anything that runs for more than a second
or two shows a progress bar on stderr (``--no-progress`` turns them off).
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

import numpy as np

_EPILOG = "Set VGIC_PUREPYTHON=1 to run everything on the pure-Python twin."


@contextmanager
def _bar(enabled: bool, total: int, desc: str) -> Iterator[Callable[[int], None]]:
    """A tqdm bar (or nothing); yields ``update(n)``."""
    if not enabled:
        yield lambda n: None
        return
    from tqdm import tqdm
    # delay: only work that lasts shows a bar.
    with tqdm(total=total, desc=desc, unit="", leave=False, file=sys.stderr, dynamic_ncols=True, delay=1.0) as bar:
        yield bar.update


# ------------------------------------------------------------------- bench
def _cmd_bench(args: argparse.Namespace) -> int:
    from vgic import bench
    argv = (["--quick"] if args.quick else []) + (["--json", args.json] if args.json else [])
    return bench.main(argv)


# ---------------------------------------------------------------- snapshot
def _cmd_snapshot_take(args: argparse.Namespace) -> int:
    from vgic import snapbench
    t0 = time.perf_counter()
    with _bar(args.progress, 2, "snapshot") as step:
        vm = snapbench.snapshot_vm(args.backend, nr_vcpus=args.vcpus, nr_irqs=args.irqs, nr_lpis=args.lpis,
                                   vq=args.vq, pending=min(args.lpis, 1000))
        step(1)
        snap = vm.save(ram=not args.no_ram)
        snap.save(args.out, compress="zstd" if args.zstd else None)
        step(1)
    print(f"{args.out}: {snap!r} in {time.perf_counter() - t0:.2f} s")
    return 0


def _load(path: str) -> Any:
    from vgic import Snapshot
    return Snapshot.load(path)


def _fmt_value(value: int | bytes, wide: bool) -> str:
    if isinstance(value, bytes):
        text = value.hex()
        return text if wide or len(text) <= 32 else f"{text[:32]}... ({len(value)} bytes)"
    return f"{value:#x}"


def _cmd_snapshot_show(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = sys.stdout if out is None else out
    snap = _load(args.file)
    g = snap.geometry
    print(f"{args.file}: vgic snapshot format {'.'.join(map(str, snap.format_version))}, "
          f"taken by vgic {snap.meta.get('vgic')} ({snap.meta.get('backend')})", file=out)
    print("geometry: " + ", ".join(f"{k}={v:#x}" if type(v) is int and v >= 0x10000 else f"{k}={v}"
                                   for k, v in g.items()), file=out)
    print(f"{snap.payload_bytes()} register bytes in {len(snap.sections)} sections; RAM: "
          f"{'none' if snap.ram is None else f'{snap.ram.nbytes} bytes'}", file=out)
    scopes = None if args.vcpu is None else {"vm", *(f"vcpu{v}" for v in args.vcpu)}
    groups = None if not args.section else set(args.section)
    names = None if not args.register else {n.upper() for n in args.register}
    width = 24
    shown = 0
    for name, sec in snap.sections.items():
        if groups is not None and name not in groups:
            continue
        rows = [(scope, reg, value) for scope, reg, value in _section_registers(snap, name)
                if (scopes is None or scope in scopes) and (names is None or reg.upper() in names)]
        if not rows:
            continue
        print(f"\n[{name}] {sec.group}" + (" per vCPU" if sec.per_vcpu else ""), file=out)
        last = None
        for scope, reg, value in rows:
            if scope != last and sec.per_vcpu:
                print(f"  {scope}:", file=out)
                last = scope
            indent = "    " if sec.per_vcpu else "  "
            print(f"{indent}{reg:<{width}} {_fmt_value(value, args.wide)}", file=out)
            shown += 1
            if args.limit and shown >= args.limit:
                print(f"... (stopped at --limit {args.limit})", file=out)
                return 0
    return 0


def _section_registers(snap: Any, name: str) -> Iterator[tuple[str, str, int | bytes]]:
    from vgic.snapshot import Snapshot
    sec = snap.sections[name]
    one = Snapshot(snap.meta, [sec], None)
    return one.registers()


def _cmd_snapshot_diff(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = sys.stdout if out is None else out
    a, b = _load(args.a), _load(args.b)
    lines = a.diff(b)
    for line in lines[:args.limit] if args.limit else lines:
        print(line, file=out)
    if args.limit and len(lines) > args.limit:
        print(f"... {len(lines) - args.limit} more", file=out)
    if not lines:
        print("the snapshots hold the same registers", file=out)
    return 1 if lines else 0


# ------------------------------------------------------------------ replay
def _cmd_replay(args: argparse.Namespace) -> int:
    import vgic
    from vgic.trace import MMIO_ACCESS
    try:
        trace = np.load(args.trace, allow_pickle=False)
    except (OSError, ValueError) as exc:
        print(f"vgic replay: cannot read {args.trace}: {exc}", file=sys.stderr)
        return 2
    if trace.dtype != MMIO_ACCESS or trace.ndim != 1:
        print(f"vgic replay: {args.trace} holds {trace.dtype} {trace.shape}, not a 1-D vgic.MMIO_ACCESS array",
              file=sys.stderr)
        return 2
    vcpus = args.vcpus if args.vcpus is not None else max(1, int(trace["vcpu"].max(initial=0)) + 1)
    kw: dict[str, Any] = {"nr_vcpus": vcpus, "nr_irqs": args.irqs, "its": args.its, "backend": args.backend}
    if args.snapshot:
        vm = vgic.VM.restore(_load(args.snapshot), backend=args.backend)
    else:
        vm = vgic.VM(**kw)
    chunk = max(1, min(len(trace), args.chunk))
    best = float("inf")
    values = np.zeros(len(trace), dtype=np.uint64)
    state0 = None if args.repeat == 1 else vm.state()
    for r in range(args.repeat):
        if state0 is not None and r:
            vm.load_state(state0)
        t0 = time.perf_counter()
        with _bar(args.progress and len(trace) > chunk, len(trace), "replay") as step:
            for start in range(0, len(trace), chunk):
                part = trace[start:start + chunk]
                values[start:start + len(part)] = vm.mmio_replay(part)
                step(len(part))
        best = min(best, time.perf_counter() - t0)
    rate = len(trace) / best if best > 0 else float("inf")
    print(f"{args.trace}: {len(trace)} accesses ({int(trace['write'].sum())} writes) on {vm!r}")
    print(f"best of {args.repeat}: {best * 1e3:.3f} ms, {rate / 1e6:.2f} M accesses/s, "
          f"{best / max(len(trace), 1) * 1e9:.1f} ns per access")
    if args.output:
        np.save(args.output, values)
        print(f"read values -> {args.output}")
    return 0


# ------------------------------------------------------------------ report
def _cmd_report(args: argparse.Namespace) -> int:
    from vgic import report
    bars: dict[str, Any] = {}

    def progress(name: str, step: int, total: int) -> None:
        if not args.progress:
            return
        from tqdm import tqdm
        bar = bars.get(name)
        if bar is None:
            bar = bars[name] = tqdm(total=total, desc=name, leave=False, file=sys.stderr, dynamic_ncols=True,
                                    delay=1.0)
        bar.total = total
        bar.n = step
        bar.refresh()

    try:
        result = report.run(args.outdir, quick=args.quick, progress=progress, only=args.only or None)
    finally:
        for bar in bars.values():
            bar.close()
    for name, exp in result["experiments"].items():
        print(f"{name}: {exp['answer']['text'].splitlines()[0] if exp['answer']['text'] else ''}")
    if result.get("plots_skipped"):
        print(f"plots skipped: {result['plots_skipped']}")
    print(f"wrote {len(result['paths'])} files to {result['outdir']} (summary: {result['summary']})")
    return 0


# --------------------------------------------------------------------- run
def _env_pairs(items: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--env wants KEY=VALUE, not {item!r}")
        env[key] = value
    return env


def _cmd_run(args: argparse.Namespace) -> int:
    try:
        from vgic import boot, run
        options = dict(ram_size=args.ram << 20, backend=args.backend, ticks_per_insn=args.ticks_per_insn,
                       clock=args.clock)
        if args.raw:
            m = run.run_image(args.image, smp=args.smp, load_addr=args.load_addr, dtb=args.dtb,
                              max_insns=args.max_insns, console=sys.stdout, **options)
            reason, status, migrations = m.last_reason, None, 0
        else:
            if args.initrd is not None and args.env:
                raise ValueError("give --env or -initrd, not both (the environment is the initrd)")
            initrd = None if args.initrd is None else open(args.initrd, "rb").read()
            g = boot.run_guest(args.image, smp=args.smp, append=args.append, env=_env_pairs(args.env),
                               initrd=initrd, migrate_to=args.migrate_to, max_insns=args.max_insns,
                               console=sys.stdout, **options)
            m, reason, status, migrations = g.machine, g.reason, g.status, g.migrations
    except ImportError as exc:
        print(f"vgic run: {exc}", file=sys.stderr)
        return 2
    except (run.RunError, ValueError, OSError) as exc:
        print(f"vgic run: {exc}", file=sys.stderr)
        return 2
    sys.stdout.flush()
    print(f"vgic run: stopped: {reason}" + (f" after {migrations} migration(s)" if migrations else ""),
          file=sys.stderr)
    print(m.report(), file=sys.stderr)
    if status is not None:
        return status                  # kvm-unit-tests' own: 0 pass, 1 fail, 77 skip
    return 0 if reason == run.STOP_SYSTEM_OFF else 1


# -------------------------------------------------------------------- main
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vgic", description=__doc__.split("\n\n")[0], epilog=_EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    b = sub.add_parser("bench", help="the throughput suite (the same as vgic-bench)",
                       description="Run the default throughput suite: the Cython core against the "
                                   "pure-Python twin, operations per second and their ratio.")
    b.add_argument("--quick", action="store_true", help="smaller batches (a smoke run)")
    b.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    b.set_defaults(func=_cmd_bench)

    s = sub.add_parser("snapshot", help="take, show and compare snapshots",
                       description="Whole-VM snapshots taken through KVM's userspace ABI.")
    ssub = s.add_subparsers(dest="snapshot_command", metavar="ACTION", required=True)
    t = ssub.add_parser("take", help="save a sample VM (the benchmark's workload) to a file",
                        description="Build a VM as a guest left it (ITS with mapped LPIs, SPIs, armed timers, "
                                    "SVE state), save it through the ABI and write the snapshot file.")
    t.add_argument("out", metavar="OUT", help="the snapshot file to write")
    t.add_argument("--vcpus", type=int, default=4, help="vCPUs (default 4)")
    t.add_argument("--irqs", type=int, default=256, help="IRQs below the LPIs (default 256)")
    t.add_argument("--lpis", type=int, default=1000, help="mapped LPIs; 0 for no ITS (default 1000)")
    t.add_argument("--vq", type=int, default=4, help="SVE vector length in quadwords; 0 for no SVE (default 4)")
    t.add_argument("--no-ram", action="store_true", help="leave guest RAM out of the snapshot")
    t.add_argument("--zstd", action="store_true", help="compress the payload (needs the [zstd] extra)")
    t.add_argument("--backend", choices=("core", "pure"), default=None, help="the VM's backend")
    t.set_defaults(func=_cmd_snapshot_take)

    sh = ssub.add_parser("show", help="the registers of a snapshot, by name, per vCPU",
                         description="Print a snapshot's geometry and every register it holds under its "
                                     "architectural or uapi name (VM-wide sections, then per vCPU).")
    sh.add_argument("file", metavar="FILE")
    sh.add_argument("--vcpu", type=int, action="append", help="only this vCPU (repeatable)")
    sh.add_argument("--section", action="append", help="only this section, e.g. vgic.cpu_sysregs (repeatable)")
    sh.add_argument("--register", action="append", help="only this register name, e.g. ICC_PMR_EL1 (repeatable)")
    sh.add_argument("--limit", type=int, default=0, help="stop after this many registers")
    sh.add_argument("--wide", action="store_true", help="print wide registers (Z, P) in full")
    sh.set_defaults(func=_cmd_snapshot_show)

    d = ssub.add_parser("diff", help="which registers differ between two snapshots",
                        description="Compare two snapshots register by register; exit status 1 if they differ.")
    d.add_argument("a", metavar="A")
    d.add_argument("b", metavar="B")
    d.add_argument("--limit", type=int, default=0, help="print at most this many differences")
    d.set_defaults(func=_cmd_snapshot_diff)

    r = sub.add_parser("replay", help="replay a recorded MMIO trace and report throughput",
                       description="Replay a .npy array of vgic.MMIO_ACCESS records against a VM "
                                   "(fresh, or restored from --snapshot) and report accesses per second.")
    r.add_argument("trace", metavar="TRACE.npy")
    r.add_argument("--vcpus", type=int, default=None, help="vCPUs (default: the trace's highest vCPU + 1)")
    r.add_argument("--irqs", type=int, default=256, help="IRQs below the LPIs (default 256)")
    r.add_argument("--its", action="store_true", help="give the VM an ITS")
    r.add_argument("--snapshot", metavar="FILE", help="replay against the VM restored from this snapshot")
    r.add_argument("--repeat", type=int, default=1, help="replays, from the same state; the best is reported")
    r.add_argument("--chunk", type=int, default=1 << 16, help="accesses per kernel call (default 65536)")
    r.add_argument("--output", metavar="VALUES.npy", help="write the value each access read")
    r.add_argument("--backend", choices=("core", "pure"), default=None, help="the VM's backend")
    r.set_defaults(func=_cmd_replay)

    rp = sub.add_parser("report", help="run the threads' experiments: CSV, PNG plots, Markdown",
                        description="Run the experiments behind docs/report.md and write one CSV and one PNG "
                                    "(with the [plots] extra) per experiment and summary.md into OUTDIR.")
    rp.add_argument("outdir", metavar="OUTDIR")
    rp.add_argument("--quick", action="store_true", help="small sizes and few repeats (seconds, not minutes)")
    rp.add_argument("--only", action="append", metavar="NAME", help="run only this experiment (repeatable)")
    rp.set_defaults(func=_cmd_report)

    ru = sub.add_parser("run", help="boot an aarch64 image (kvm-unit-tests .flat) on Unicorn, this library its GIC",
                        description="Boot IMAGE on a QEMU-virt-shaped machine (vgic.run: Unicorn CPUs, this "
                                    "library's GICv3/ITS/timers, a PL011 UART) as QEMU's -kernel does: the image "
                                    "at RAM + 512 KiB, a generated device tree in X0, -append as its bootargs, "
                                    "--env lines as its initrd; run it until PSCI SYSTEM_OFF, migrating it through "
                                    "a snapshot whenever kvm-unit-tests asks.  The UART goes to stdout, the counts "
                                    "and rates to stderr; the exit status is kvm-unit-tests' (0 pass, 1 fail, 77 "
                                    "skip) when it prints one.  Needs the [run] extra (unicorn).")
    ru.add_argument("image", metavar="IMAGE")
    ru.add_argument("-smp", "--smp", type=int, default=1, help="vCPUs (default 1; the others start with CPU_ON)")
    ru.add_argument("-append", "--append", default="", metavar="ARGS", help="the guest's command line")
    ru.add_argument("-m", "--ram", type=int, default=128, metavar="MIB", help="RAM in MiB at 0x40000000 (default 128)")
    ru.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="a line of kvm-unit-tests' environment (its initrd), e.g. ERRATA_8c58be34494b=y")
    ru.add_argument("-initrd", "--initrd", metavar="FILE", help="an initrd file (instead of --env)")
    ru.add_argument("--migrate-to", choices=("core", "pure"), default=None,
                    help="the backend a migration restores into (default: the same)")
    ru.add_argument("--clock", choices=("insns", "host"), default="insns",
                    help="counter: ticks per instruction (deterministic, default) or the host's clock")
    ru.add_argument("--ticks-per-insn", type=int, default=64,
                    help="counter ticks per instruction with --clock insns (default 64)")
    ru.add_argument("--max-insns", type=int, default=None, help="stop after this many instructions")
    ru.add_argument("--backend", choices=("core", "pure"), default=None, help="the VM's backend")
    ru.add_argument("--raw", action="store_true",
                    help="a bare binary instead: loaded at --load-addr (default RAM + 2 MiB) and started there, "
                         "--dtb (if given) at the start of RAM in X0")
    ru.add_argument("--load-addr", type=lambda x: int(x, 0), default=None, help="with --raw: where IMAGE goes")
    ru.add_argument("--dtb", metavar="FILE", help="with --raw: a device tree blob put at the start of RAM")
    ru.set_defaults(func=_cmd_run)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vgic`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    from vgic.errors import SnapshotError
    try:
        return int(args.func(args))
    except (SnapshotError, OSError) as exc:
        print(f"vgic: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":      # pragma: no cover
    sys.exit(main())
