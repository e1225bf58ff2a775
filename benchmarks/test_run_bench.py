"""Benchmarks of what an emulator calls on every guest step (issue #12): the
CPU interface's signals (vIRQ, vFIQ, maintenance) on the core and the twin,
the blocked-vCPU wake check, and a guest on vgic.run with the C block and
MRS/MSR hooks (vgic._core.blockhook) beside the Python ones, their reference.
No targets: the ratios go in the benchmark output."""
import sys
from pathlib import Path

import numpy as np
import pytest

import vgic
from vgic import regmap as R


def _signalling_vm(backend):
    # 64 vCPUs in the guest, each with an SPI in an LR and Group 1 enabled.
    vm = vgic.VM(nr_vcpus=64, nr_irqs=96, backend=backend)
    d = vm.dist_base
    vm.mmio_write(d + R.GICD_CTLR, 4, 0x12)
    vm.mmio_write(d + R.GICD_ISENABLER + 4, 4, 0xFFFF_FFFF)
    for v in vm.vcpus:
        vm.mmio_write(d + R.GICD_IROUTER + 8 * (32 + v.id % 32), 8, v.mpidr & 0xFF_00FF_FFFF)
        vm.set_irq_level(32 + v.id % 32, True)
        v.enter()
        v.sysreg_write("ICC_PMR_EL1", 0xFF)
        v.sysreg_write("ICC_IGRPEN1_EL1", 1)
        v.kick()            # the group-enable maintenance exit: now only the vIRQ
    return vm


@pytest.mark.parametrize("backend", ["core", "pure"], ids=["core", "twin"])
@pytest.mark.benchmark(group="run_signals")
def test_vcpu_signals(benchmark, backend):
    """vcpu.signals() on one running vCPU: what an emulator asks after every
    GIC access, ICC write and timer event."""
    vm = _signalling_vm(backend)
    benchmark(vm.vcpus[5].signals)


@pytest.mark.parametrize("backend", ["core", "pure"], ids=["core", "twin"])
@pytest.mark.benchmark(group="run_signals")
def test_icv_signals_batch(benchmark, backend):
    """Icv.signals_batch over all 64 vCPUs in one call."""
    vm = _signalling_vm(backend)
    idx = np.arange(64)
    benchmark(vm.gic.icv.signals_batch, idx)


@pytest.mark.parametrize("backend", ["core", "pure"], ids=["core", "twin"])
@pytest.mark.benchmark(group="run_wake")
def test_vcpu_runnable(benchmark, backend):
    """vcpu.runnable() of a blocked vCPU with nothing pending (the check an
    emulator makes for every vCPU in WFI when something happened)."""
    vm = vgic.VM(nr_vcpus=4, nr_irqs=256, its=True, backend=backend)
    v = vm.vcpus[1]
    v.enter()
    v.exit()
    v.block()
    benchmark(v.runnable)


@pytest.mark.parametrize("hook", ["c", "python"])
@pytest.mark.benchmark(group="run_guest")
def test_guest_block_hook(benchmark, hook):
    """A guest on vgic.run: 20,000 turns of a loop of eight ADDs (the block
    hook's common case) and of a CNTVCT_EL0 read (the MRS hook), with the
    hooks in C or in Python."""
    pytest.importorskip("unicorn", reason="vgic.run needs the Unicorn CPU emulator: pip install 'vgic[run]'")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from test_run import bench_guest, boot, machine

    from vgic import run

    def one():
        for kind in ("alu", "sysreg_read"):
            m = machine("core", block_hook=hook)
            boot(m, bench_guest(kind, 20_000))
            assert m.run() == run.STOP_SYSTEM_OFF

    benchmark.pedantic(one, rounds=3)
