"""vgic.fdt and vgic.boot: the device tree a guest boots with, QEMU's -kernel
load convention, kvm-unit-tests' exit status and migration handshake - all
without the kvm-unit-tests images (their runs are tests/test_kvm_unit_tests.py)."""
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from vgic import fdt
from vgic import regmap as R

pytest.importorskip("unicorn", reason="vgic.run needs the Unicorn CPU emulator: pip install 'vgic[run]'")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_run import NE, Asm, ldr32, mov64, movz, str32, str64, system_off, tst_imm_bit

from vgic import boot, run

RAM = 0x4000_0000


# ---------------------------------------------------------------- fdt
def test_blob_header_follows_the_devicetree_specification():
    # Devicetree Specification v0.4 §5.2: big-endian header of ten u32s,
    # magic 0xd00dfeed, version 17, last compatible 16; the memory
    # reservation block 8-aligned, ended by a zero entry; §5.4 tokens.
    root = fdt.Node("", {"#address-cells": 2})
    root.add("chosen", {"bootargs": "ipi"})
    blob = fdt.build(root, reserve=[(0x4000_0000, 0x1000)])
    magic, total, off_struct, off_strings, off_rsv, version, last, boot_cpu, size_str, size_struct = \
        struct.unpack_from(">10I", blob)
    assert (magic, version, last, boot_cpu) == (0xD00DFEED, 17, 16, 0)
    assert total == len(blob) and off_rsv % 8 == 0 and off_struct % 4 == 0
    assert struct.unpack_from(">4Q", blob, off_rsv) == (0x4000_0000, 0x1000, 0, 0)
    assert struct.unpack_from(">I", blob, off_struct)[0] == fdt.FDT_BEGIN_NODE
    assert struct.unpack_from(">I", blob, off_struct + size_struct - 4)[0] == fdt.FDT_END
    assert blob[off_strings:off_strings + size_str] == b"#address-cells\0bootargs\0"


def test_property_values_encode_as_the_specification_types():
    # §2.2.4: <u32> cells big-endian, strings NUL-terminated, a stringlist
    # their concatenation, an empty property for a boolean.
    assert fdt.encode_value(0x8001) == b"\x00\x00\x80\x01"
    assert fdt.encode_value([1, 2]) == b"\x00\x00\x00\x01\x00\x00\x00\x02"
    assert fdt.encode_value("hvc") == b"hvc\0"
    assert fdt.encode_value(["arm,pl011", "arm,primecell"]) == b"arm,pl011\0arm,primecell\0"
    assert fdt.encode_value(True) == b""
    assert fdt.cells([0x4000_0000, 0x800_0000], [2, 2]) == [0, 0x4000_0000, 0, 0x800_0000]
    assert fdt.cells([0x80_0000_0003], [2]) == [0x80, 3]
    for bad in (False, 1 << 32, [-1], 1.5):
        with pytest.raises((TypeError, ValueError)):
            fdt.encode_value(bad)
    with pytest.raises(ValueError, match="does not fit"):
        fdt.cells([1 << 32], [1])


def test_a_built_tree_parses_back():
    root = fdt.Node("", {"model": "x"})
    cpus = root.add("cpus", {"#address-cells": 1, "#size-cells": 0})
    cpus.add("cpu@0", {"reg": 0, "device_type": "cpu"})
    root.add("empty", {"flag": True})
    back = fdt.parse(fdt.build(root))
    assert [p for p, _ in back.walk()] == ["/", "/cpus", "/cpus/cpu@0", "/empty"]
    assert fdt.strs(back.props["model"]) == ["x"]
    assert fdt.u32s(back.child("cpus").child("cpu@0").props["reg"]) == [0]
    assert back.child("empty").props["flag"] == b""
    with pytest.raises(KeyError):
        back.child("nope")


@pytest.mark.parametrize("mutate, match", [
    (lambda b: b[:20], "shorter than"),
    (lambda b: b"\0\0\0\0" + b[4:], "bad magic"),
    (lambda b: b[:-8], "totalsize"),
])
def test_malformed_blobs_are_refused(mutate, match):
    blob = fdt.build(fdt.Node("", {"a": 1}))
    with pytest.raises(fdt.FdtError, match=match):
        fdt.parse(mutate(blob))


def test_an_unknown_token_is_refused():
    blob = bytearray(fdt.build(fdt.Node("", {})))
    off_struct = struct.unpack_from(">I", blob, 8)[0]
    struct.pack_into(">I", blob, off_struct, 7)
    with pytest.raises(fdt.FdtError, match="unknown token"):
        fdt.parse(bytes(blob))


# -------------------------------------------------------- the board tree
def tree(smp=4, **kw):
    m = run.Machine(smp, console=None, **kw)
    return m, fdt.parse(fdt.build(boot.device_tree(m, "its-trigger", (RAM + (64 << 20), 6))))


def test_the_tree_describes_the_machine_as_qemu_virt_gic_version_3():
    # QEMU hw/arm/virt.c with gic-version=3, the nodes kvm-unit-tests reads
    # (lib/arm/setup.c, gic.c, io.c, psci.c, timer.c).
    m, root = tree()
    vm = m.vm
    assert fdt.u32s(root.props["#address-cells"]) == [2] and fdt.u32s(root.props["#size-cells"]) == [2]
    mem = root.child("memory@40000000")
    assert fdt.strs(mem.props["device_type"]) == ["memory"]
    assert fdt.u32s(mem.props["reg"]) == [0, RAM, 0, 128 << 20]
    # /cpus: reg = MPIDR_EL1's affinity, one node per vCPU in index order.
    cpus = root.child("cpus")
    regs = [fdt.u32s(c.props["reg"]) for c in cpus.children]
    assert regs == [[v.mpidr >> 32 & 0xFF, v.mpidr & 0xFF_FFFF] for v in vm.vcpus]
    assert all(fdt.strs(c.props["enable-method"]) == ["psci"] for c in cpus.children)
    psci = root.child("psci")
    assert "arm,psci-0.2" in fdt.strs(psci.props["compatible"]) and fdt.strs(psci.props["method"]) == ["hvc"]
    # The GIC: the distributor frame, then one redistributor region of
    # 128 KiB per vCPU; the ITS a child node (kvm-unit-tests looks there).
    gic = root.child(f"intc@{vm.dist_base:x}")
    assert fdt.strs(gic.props["compatible"]) == ["arm,gic-v3"]
    assert fdt.u32s(gic.props["reg"]) == [0, vm.dist_base, 0, R.FRAME_SIZE, 0, vm.redist_base, 0, 4 * 0x20000]
    assert fdt.u32s(gic.props["#interrupt-cells"]) == [3] and gic.props["interrupt-controller"] == b""
    its = gic.child(f"its@{vm.its_base:x}")
    assert fdt.strs(its.props["compatible"]) == ["arm,gic-v3-its"] and its.props["msi-controller"] == b""
    assert fdt.u32s(root.props["interrupt-parent"]) == fdt.u32s(gic.props["phandle"])
    # The arch timer binding: secure phys, phys, virt, hyp PPIs 13, 14, 11, 10
    # (INTIDs 29, 30, 27, 26), level-high.
    timer = root.child("timer")
    assert fdt.u32s(timer.props["interrupts"]) == [1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4]
    uart = root.child("pl011@9000000")
    assert fdt.u32s(uart.props["reg"]) == [0, 0x0900_0000, 0, 0x1000]
    chosen = root.child("chosen")
    assert fdt.strs(chosen.props["bootargs"]) == ["its-trigger"]
    assert fdt.strs(chosen.props["stdout-path"]) == ["/pl011@9000000"]
    assert fdt.u32s(chosen.props["linux,initrd-start"]) == [0, RAM + (64 << 20)]
    assert fdt.u32s(chosen.props["linux,initrd-end"]) == [0, RAM + (64 << 20) + 6]


def test_without_an_its_there_is_no_its_node():
    m, root = tree(smp=1, its=False)
    assert root.child(f"intc@{m.vm.dist_base:x}").children == []


@pytest.mark.skipif(shutil.which("dtc") is None, reason="dtc (Debian's device-tree-compiler) is not installed")
def test_dtc_reads_the_tree():
    m = run.Machine(2, console=None)
    out = subprocess.run(["dtc", "-I", "dtb", "-O", "dts", "-"], input=fdt.build(boot.device_tree(m, "x")),
                         capture_output=True, check=True).stdout.decode()
    assert 'compatible = "arm,gic-v3";' in out and 'bootargs = "x";' in out


# ------------------------------------------------------- the boot layout
def test_boot_puts_image_initrd_and_tree_where_qemu_kernel_does():
    # hw/arm/boot.c: an image without a Linux header at RAM + 0x80000, the
    # initrd at RAM + min(RAM / 2, 128 MiB), the DTB after it on a 2 MiB
    # boundary; X0 = the DTB, PC = the image, EL1h with DAIF masked.
    m = run.Machine(1, console=None)
    image = b"\x1f\x20\x03\xd5" * 4
    lay = boot.boot(m, image, append="a b", env={"ERRATA_X": "y", "K": "v"})
    assert lay.image == RAM + 0x8_0000
    assert lay.initrd == RAM + (64 << 20)
    assert lay.dtb == RAM + (66 << 20)
    mem = m.vm.memory
    assert bytes(mem[0x8_0000:0x8_0010]) == image
    assert bytes(mem[64 << 20:(64 << 20) + lay.initrd_size]) == b"ERRATA_X=y\nK=v\n"
    root = fdt.parse(bytes(mem[66 << 20:(66 << 20) + lay.dtb_size]))
    assert fdt.strs(root.child("chosen").props["bootargs"]) == ["a b"]
    cpu = m.cpus[0]
    assert cpu.rd(cpu.PC) == lay.image and cpu.rd(cpu.X[0]) == lay.dtb
    assert cpu.rd32(cpu.PSTATE) == run.PSTATE_EL1H_MASKED


def test_without_an_initrd_the_tree_follows_the_image():
    m = run.Machine(1, console=None)
    lay = boot.boot(m, b"\0" * 16)
    assert lay.initrd is None and lay.dtb == RAM + (2 << 20)


def test_exit_status_is_kvm_unit_tests_code():
    # lib/arm/io.c exit(): "EXIT: STATUS=%d" with (code << 1) | 1.
    assert boot.exit_status(b"PASS: x\n\nEXIT: STATUS=1\n") == 0
    assert boot.exit_status(b"EXIT: STATUS=3\n") == 1
    assert boot.exit_status(b"EXIT: STATUS=155\n") == 77
    assert boot.exit_status(b"no exit line") is None


# ----------------------------------------------------------- migration
DATA = RAM + 0x10_0000
FMOV_D3_X5 = 0x9E67_00A3       # FMOV (general) D3, X5: sf 1, type 01, rmode 00, opcode 111
FMOV_X6_D3 = 0x9E66_0066       # FMOV X6, D3: opcode 110


def migrating_guest():
    """Sets X5 and D3, asks to be migrated (lib/migrate.c's quiet prompt),
    polls UARTFR.RXFE for the key, then stores X5, D3 (through X6) and the
    key at DATA and powers off."""
    asm = Asm(RAM + boot.IMAGE_OFFSET)
    asm(mov64(5, 0x1234_5678_9ABC), FMOV_D3_X5, mov64(1, run.UART_BASE), mov64(4, DATA))
    for ch in b"Now migrate the VM (quiet)\n":
        asm(movz(2, ch), str32(2, 1, run.Pl011.DR))
    asm.label("poll")
    asm(ldr32(2, 1, run.Pl011.FR), tst_imm_bit(2, 4))
    asm.b("poll", NE)
    asm(ldr32(7, 1, run.Pl011.DR), FMOV_X6_D3, str64(5, 4, 0), str64(6, 4, 8), str64(7, 4, 16))
    asm(system_off())
    return asm.image()


@pytest.mark.parametrize("src, dst", [("core", "core"), ("core", "pure"), ("pure", "core")])
def test_run_guest_migrates_at_the_prompt_and_the_guest_goes_on(src, dst):
    # The guest's X5, its FP register and its place in the program survive
    # save -> bytes -> restore into a fresh machine (on the other backend),
    # and the key is typed on the new machine's UART.
    g = boot.run_guest(migrating_guest(), backend=src, migrate_to=dst)
    assert g.reason == run.STOP_SYSTEM_OFF and g.migrations == 1
    m = g.machine
    assert m.vm.backend == dst
    off = DATA - RAM
    x5, x6, key = struct.unpack("<3Q", bytes(m.vm.memory[off:off + 24]))
    assert (x5, x6, key) == (0x1234_5678_9ABC, 0x1234_5678_9ABC, 0x0A)
    assert m.uart.output.endswith(b"Now migrate the VM (quiet)\n")


def test_a_migration_carries_registers_the_fp_part_and_ram():
    m = run.Machine(2, console=None)
    boot.boot(m, migrating_guest())
    boot._watch(m)
    assert m.run() == boot.STOP_MIGRATE
    mig = boot.save(m)
    assert mig.cpus[0]["X5"] == 0x1234_5678_9ABC and mig.cpus[0]["on"] and not mig.cpus[1]["on"]
    new = boot.restore(mig, backend="pure")
    # V3 went through the snapshot's FP one-regs (KVM_REG_ARM_CORE V3).
    from vgic import fpregs
    assert int.from_bytes(new.vm.vcpus[0].get_one_reg(fpregs.core_vreg(3)), "little") == 0x1234_5678_9ABC
    assert bytes(new.vm.memory[:]) == bytes(m.vm.memory[:])
    assert new.cpus[0].rd(new.cpus[0].PC) == m.cpus[0].rd(m.cpus[0].PC)
    assert new.uart.output == m.uart.output


def test_a_node_name_that_is_not_utf8_does_not_shift_the_parse():
    # The parser advances by the name's bytes, not its decoded text: a
    # name of invalid UTF-8 (replacement characters when decoded) leaves the
    # properties after it intact.
    root = fdt.Node("")
    root.add("abcde", {"cd": [5, 6]})
    blob = bytearray(fdt.build(root))
    at = blob.index(b"abcde")
    blob[at:at + 5] = b"\xff\xfe\xfd\xfc\xfb"
    back = fdt.parse(bytes(blob))
    node = back.children[0]
    assert fdt.u32s(node.props["cd"]) == [5, 6]
    assert fdt.strs(b"\xff\0") == ["\ufffd"]


def test_walk_handles_a_deep_tree():
    root = n = fdt.Node("")
    for i in range(5000):
        n = n.add(f"n{i}")
    paths = [p for p, _ in root.walk()]
    assert len(paths) == 5001 and paths[2] == "/n0/n1"


def test_vgic_run_refuses_a_missing_image_and_env_with_initrd(tmp_path, capsys):
    from vgic import cli
    assert cli.main(["run", str(tmp_path / "missing.flat")]) == 2
    assert "missing.flat" in capsys.readouterr().err
    image = tmp_path / "x.flat"
    image.write_bytes(b"\0" * 16)
    rd = tmp_path / "rd"
    rd.write_bytes(b"K=v\n")
    assert cli.main(["run", str(image), "--env", "A=b", "-initrd", str(rd)]) == 2
    assert "not both" in capsys.readouterr().err
