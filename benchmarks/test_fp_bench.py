"""FPSIMD/SVE benchmarks (issue #10): the batch register-file copy against
one memcpy of the same bytes, and the 2017 SVE thread's question - eager
against lazy switching by vector length and by how often the guest uses
FP/SVE (bytes moved, traps and time per guest entry).  Targets are ratios
measured in the same run."""
import numpy as np
import pytest

from vgic import fpregs
from vgic.bench import fp_switch_costs, sve_copy_seconds


@pytest.fixture(scope="module")
def fp_core():
    return pytest.importorskip("vgic._core.fpsimd")


@pytest.mark.parametrize("how", ["copy_batch", "memcpy"])
@pytest.mark.benchmark(group="sve_copy")
def test_sve_copy(benchmark, how, fp_core):
    """10,000 vCPUs' SVE register files at 2048 bits (8,736 bytes each):
    the batch copy kernel, or one memcpy of the same bytes."""
    n, vq = 10_000, 16
    src = np.random.default_rng(0).integers(0, 256, (n, fpregs.regs_size(vq)), dtype=np.uint8)
    if how == "copy_batch":
        dst = np.zeros_like(src)
        ids = np.arange(n, dtype=np.int64)
        benchmark(fp_core.copy_batch, dst, vq, src, vq, vq, ids)
    else:
        flat = np.zeros(src.size, dtype=np.uint8)
        benchmark(fp_core.memcpy_baseline, flat, src)


@pytest.mark.parametrize("policy", ["lazy", "eager"])
@pytest.mark.parametrize("use", [0.0, 0.1, 0.5, 1.0], ids=lambda u: f"use{int(u * 100)}")
@pytest.mark.parametrize("vq", [1, 2, 4, 8, 16], ids=lambda q: f"{q * 128}b")
@pytest.mark.benchmark(group="fp_switch")
def test_fp_switch(benchmark, vq, use, policy, fp_core):
    """200 vcpu_load..vcpu_put periods of 4 guest entries each; bytes and
    traps per entry in extra_info."""
    costs = fp_switch_costs("core", policy, vq, use, 50, 1)
    benchmark.extra_info.update({k: v for k, v in costs.items() if k != "seconds"})
    benchmark.pedantic(fp_switch_costs, args=("core", policy, vq, use, 50, 1), rounds=3)


# ---------------------------------------------------------------- the targets
def test_target_sve_copy_vs_memcpy(fp_core):
    """Issue #10: the batch copy of 10,000 vCPUs' register files at a
    2048-bit vector length within 1.2x of one memcpy of the same bytes,
    measured beside it (best of three measurements: the machine is shared)."""
    ratio = min(c / p for c, p in (sve_copy_seconds(10_000, 16, 5) for _ in range(3)))
    assert ratio <= 1.2, f"{ratio:.2f}x one memcpy"


def test_lazy_moves_no_more_than_eager(fp_core):
    """The thread's question, in bytes: with several entries per vcpu_load,
    lazy switching moves fewer bytes than eager at every vector length and
    use fraction (sve-facts, model decisions: eager moves guest and host
    state at every entry and exit; lazy the host's once per load and the
    guest's once per load in which it used FP/SVE)."""
    for vq in (1, 4, 16):
        for use in (0.0, 0.5, 1.0):
            lz = fp_switch_costs("core", "lazy", vq, use, 20, 1)
            eg = fp_switch_costs("core", "eager", vq, use, 20, 1)
            assert lz["guest_bytes"] + lz["host_bytes"] < eg["guest_bytes"] + eg["host_bytes"], (vq, use)
            assert eg["traps"] == 0 and lz["traps"] <= 0.25
