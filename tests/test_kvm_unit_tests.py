"""kvm-unit-tests' arm64 images booted on vgic.run with this library as their
GIC, ITS and timers, on the Cython core and on the twin, migrations
included (issue 12's targets).

The images are not part of this project: build kvm-unit-tests for arm64
(``./configure --arch=arm64 --cross-prefix=aarch64-linux-gnu-; make``, the
cross compiler is Debian's gcc-aarch64-linux-gnu) and point
``VGIC_KUT_DIR`` at its ``arm/`` folder (default:
``~/.cache/vgic/kvm-unit-tests/arm``).  Without them every test here skips
and says so.  Each case is an entry of kvm-unit-tests' arm/unittests.cfg:
the image, ``-smp`` and the ``-append`` arguments; the migration tests run
with kvm-unit-tests' migration handshake, restored into the other backend.
"""
import os
from pathlib import Path

import pytest

pytest.importorskip("unicorn", reason="vgic.run needs the Unicorn CPU emulator: pip install 'vgic[run]'")

from vgic import boot

if os.environ.get("VGIC_PUREPYTHON"):
    # Every case here names its backend (and migrates to the other one): the
    # run with the twin as default backend would repeat them unchanged.
    pytest.skip("these cases run both backends explicitly, in the default run", allow_module_level=True)

KUT_DIR = Path(os.environ.get("VGIC_KUT_DIR", Path.home() / ".cache" / "vgic" / "kvm-unit-tests" / "arm"))
#: arm/unittests.cfg's errata flag that its-migrate-unmapped-collection needs
#: (the fix of KVM commit 8c58be34494b is in every kernel we model).
ENV = {"ERRATA_8c58be34494b": "y"}

# (image, smp, append, migrates)
CASES = [
    ("selftest", 2, "setup smp=2 mem=128", False),
    ("selftest", 1, "vectors-kernel", False),
    ("selftest", 1, "vectors-user", False),
    ("selftest", 4, "smp", False),
    ("gic", 4, "ipi", False),
    ("gic", 4, "active", False),
    ("gic", 4, "its-introspection", False),
    ("gic", 4, "its-trigger", False),
    ("gic", 4, "its-migration", True),
    ("gic", 4, "its-pending-migration", True),
    ("gic", 4, "its-migrate-unmapped-collection", True),
    ("timer", 1, "", False),
    ("psci", 4, "", False),
]


def image(name):
    path = KUT_DIR / f"{name}.flat"
    if not path.is_file():
        pytest.skip(f"kvm-unit-tests image {path} not found: build kvm-unit-tests for arm64 and set VGIC_KUT_DIR "
                    f"to its arm/ folder")
    return path


@pytest.mark.parametrize("backend", ["core", "pure"])
@pytest.mark.parametrize("name, smp, append, migrates", CASES,
                         ids=[f"{c[0]}-{c[2].split()[0] if c[2] else 'all'}" for c in CASES])
def test_kvm_unit_tests_pass(name, smp, append, migrates, backend):
    other = "pure" if backend == "core" else "core"
    g = boot.run_guest(image(name), smp=smp, append=append, env=ENV, backend=backend, migrate_to=other,
                       max_insns=200_000_000)
    out = bytes(g.machine.uart.output).decode(errors="replace")
    assert g.reason == "system_off", out[-2000:]
    assert "FAIL" not in out, out[-2000:]
    assert "PASS" in out and g.status == 0, out[-2000:]
    assert g.migrations == (1 if migrates else 0)
    if migrates:
        assert g.machine.vm.backend == other
        assert "Migration complete" in out


def test_gicv3_mmio_group_is_not_implemented_by_kvm_unit_tests():
    # arm/gic.c: "GICv3 MMIO tests NYI" - the mmio group exists for GICv2
    # only; on a GICv3 machine the test aborts by design.
    g = boot.run_guest(image("gic"), smp=4, append="mmio", env=ENV, backend="core", max_insns=50_000_000)
    out = bytes(g.machine.uart.output)
    assert b"GICv3 MMIO tests NYI" in out


def test_micro_bench_runs_to_the_end():
    # The figures it prints are in docs/report.md; here: every test it
    # knows runs and the run passes (ipi_hw skips without GICv4.1).
    g = boot.run_guest(image("micro-bench"), smp=2, backend="core", clock="host")
    out = bytes(g.machine.uart.output).decode(errors="replace")
    assert g.status == 0, out[-2000:]
    for test in ("mmio_read_vgic", "eoi", "ipi", "lpi", "timer_10ms"):
        assert f"\n{test} " in out, out
    assert "ipi_hw test skipped" in out
