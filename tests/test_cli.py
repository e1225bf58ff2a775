"""The ``vgic`` command (issue #11): its subcommands run, read real files and
say what they found.  Run in-process through ``vgic.cli.main`` (the console
script is that function)."""
import csv
import subprocess
import sys

import numpy as np
import pytest

import vgic
from vgic import cli, regmap
from vgic.trace import mixed_trace


def run(capsys, *argv):
    code = cli.main(["--no-progress", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def snap_files(tmp_path_factory):
    """Two snapshots of one small VM, between which the guest enabled SPI 40."""
    d = tmp_path_factory.mktemp("snaps")
    vm = vgic.VM(nr_vcpus=2, nr_irqs=128, ram_size=1 << 20)
    a = d / "a.vgs"
    vm.save().save(a)
    vm.mmio_write(vm.dist_base + regmap.GICD_ISENABLER + 4, 4, 1 << 8)
    b = d / "b.vgs"
    vm.save().save(b)
    return a, b


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("bench", "snapshot", "replay", "report"):
        assert command in out


def test_snapshot_show_names_registers(capsys, snap_files):
    a, _ = snap_files
    code, out, _ = run(capsys, "snapshot", "show", str(a))
    assert code == 0
    # The geometry, then registers under their architectural names: the
    # distributor's CTLR with ARE and DS (always set for KVM's GICv3, kvm-facts
    # §1.3) and every vCPU's ICC_SRE_EL1 = 0x7 (SRE|DFB|DIB, kvm-facts §6).
    assert "nr_vcpus=2" in out and "nr_irqs=128" in out
    assert "GICD_CTLR" in out and "GICD_IROUTER32[31:0]" in out
    assert "vcpu0:" in out and "vcpu1:" in out
    sre = [line for line in out.splitlines() if line.strip().startswith("ICC_SRE_EL1")]
    assert len(sre) == 2 and all(line.split()[-1] == "0x7" for line in sre)


def test_snapshot_show_filters(capsys, snap_files):
    a, _ = snap_files
    code, out, _ = run(capsys, "snapshot", "show", str(a), "--vcpu", "1", "--register", "ICC_PMR_EL1")
    assert code == 0
    regs = [line.split() for line in out.splitlines() if line.startswith("    ")]
    assert regs == [["ICC_PMR_EL1", "0x0"]]
    assert "vcpu0:" not in out


def test_snapshot_diff_names_the_changed_register(capsys, snap_files):
    a, b = snap_files
    code, out, _ = run(capsys, "snapshot", "diff", str(a), str(b))
    # GICD_ISENABLER1 bit 8 is SPI 40 (IHI 0069 §12.9.15); RAM is the same.
    assert code == 1
    assert out.strip().splitlines() == ["vm GICD_ISENABLER1: 0x0 vs 0x100"]
    code, out, _ = run(capsys, "snapshot", "diff", str(a), str(a))
    assert code == 0 and "same registers" in out


def test_snapshot_take_then_show(capsys, tmp_path):
    out_file = tmp_path / "t.vgs"
    code, out, _ = run(capsys, "snapshot", "take", str(out_file), "--vcpus", "2", "--irqs", "64", "--lpis", "50",
                       "--vq", "2", "--no-ram")
    assert code == 0 and out_file.exists()
    snap = vgic.Snapshot.load(out_file)
    assert snap.ram is None and snap.geometry["nr_vcpus"] == 2 and snap.geometry["its"]
    code, out, _ = run(capsys, "snapshot", "show", str(out_file), "--section", "its.regs")
    assert code == 0 and "GITS_CBASER" in out and "GITS_BASER0" in out


def test_show_refuses_a_corrupt_file(capsys, tmp_path, snap_files):
    a, _ = snap_files
    data = bytearray(a.read_bytes())
    data[-1] ^= 0xFF
    bad = tmp_path / "bad.vgs"
    bad.write_bytes(bytes(data))
    code, _, err = run(capsys, "snapshot", "show", str(bad))
    assert code == 2 and "checksum" in err


def test_replay_reports_throughput_and_values(capsys, tmp_path):
    trace = mixed_trace(2000, nr_vcpus=2, nr_irqs=128)
    path = tmp_path / "trace.npy"
    np.save(path, trace)
    values = tmp_path / "values.npy"
    code, out, _ = run(capsys, "replay", str(path), "--irqs", "128", "--output", str(values), "--chunk", "500")
    assert code == 0 and "2000 accesses" in out and "accesses/s" in out
    # The values are what a VM of the same geometry reads replaying the trace whole.
    expect = vgic.VM(nr_vcpus=2, nr_irqs=128).mmio_replay(trace)
    assert np.array_equal(np.load(values), expect)


def test_replay_refuses_a_wrong_array(capsys, tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros(4))
    code, _, err = run(capsys, "replay", str(path))
    assert code == 2 and "MMIO_ACCESS" in err


def test_report_quick_writes_csvs(capsys, tmp_path):
    code, out, _ = run(capsys, "report", "--quick", str(tmp_path), "--only", "timer_policy", "--only", "snapshot")
    assert code == 0
    for name in ("timer_policy", "snapshot"):
        with open(tmp_path / f"{name}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert rows, name
    assert (tmp_path / "summary.md").read_text().count("##") >= 2
    assert "snapshot:" in out


def test_console_script_entry_point():
    """``python -m vgic.cli`` is the same program as the ``vgic`` script."""
    r = subprocess.run([sys.executable, "-m", "vgic.cli", "snapshot", "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "show" in r.stdout and "diff" in r.stdout
