"""Shared helpers of the ITS tests: a guest that programs an ITS the way
Linux and kvm-unit-tests do, command encoders, and guest-memory access.

Command encodings: IHI 0069 §5.3 / its-facts-A §2.2 (DW0[7:0] opcode,
DW0[63:32] DeviceID, DW1[31:0] EventID, DW1[63:32] pINTID, DW1[4:0] Size,
DW2[15:0] ICID, DW2[51:8] ITT address, DW2[47:16] target, DW2[63] V,
DW3[47:16] MOVALL's second target).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import vgic
from vgic import regmap as R

VALID = 1 << 63
LPI_PROP_DEFAULT = 0xA3         # priority 0xA0, Group1, Enable (kvm-unit-tests' LPI_PROP_DEFAULT)


# ------------------------------------------------------------ commands
def mapd(dev: int, size_bits: int, itt: int, valid: bool = True) -> list[int]:
    """MAPD: ``size_bits`` EventID bits (the Size field is bits - 1)."""
    return [R.GITS_CMD_MAPD | (dev << 32), (size_bits - 1) & 0x1F, (VALID if valid else 0) | itt, 0]


def mapc(icid: int, target: int, valid: bool = True) -> list[int]:
    return [R.GITS_CMD_MAPC, 0, (VALID if valid else 0) | (target << 16) | icid, 0]


def mapti(dev: int, event: int, lpi: int, icid: int) -> list[int]:
    return [R.GITS_CMD_MAPTI | (dev << 32), event | (lpi << 32), icid, 0]


def mapi(dev: int, event: int, icid: int) -> list[int]:
    return [R.GITS_CMD_MAPI | (dev << 32), event, icid, 0]


def movi(dev: int, event: int, icid: int) -> list[int]:
    return [R.GITS_CMD_MOVI | (dev << 32), event, icid, 0]


def discard(dev: int, event: int) -> list[int]:
    return [R.GITS_CMD_DISCARD | (dev << 32), event, 0, 0]


def int_(dev: int, event: int) -> list[int]:
    return [R.GITS_CMD_INT | (dev << 32), event, 0, 0]


def clear(dev: int, event: int) -> list[int]:
    return [R.GITS_CMD_CLEAR | (dev << 32), event, 0, 0]


def inv(dev: int, event: int) -> list[int]:
    return [R.GITS_CMD_INV | (dev << 32), event, 0, 0]


def invall(icid: int) -> list[int]:
    return [R.GITS_CMD_INVALL, 0, icid, 0]


def movall(t1: int, t2: int) -> list[int]:
    return [R.GITS_CMD_MOVALL, 0, t1 << 16, t2 << 16]


def sync(target: int = 0) -> list[int]:
    return [R.GITS_CMD_SYNC, 0, target << 16, 0]


# ------------------------------------------------------------ the guest
@dataclass
class Layout:
    """Guest-physical addresses of the tables (64 KiB aligned, in RAM)."""

    prop: int
    pend: list[int]
    cmdq: int
    device_table: int
    collection_table: int
    itt: int            # ITTs: itt + n * 0x10000 for device slot n


def layout(vm: vgic.VM) -> Layout:
    r = vm.ram_base
    return Layout(prop=r + 0x10_0000, pend=[r + 0x20_0000 + v * 0x1_0000 for v in range(vm.nr_vcpus)],
                  cmdq=r + 0x40_0000, device_table=r + 0x50_0000, collection_table=r + 0x60_0000,
                  itt=r + 0x80_0000)


def rd_base(vm: vgic.VM, v: int) -> int:
    return vm.redist_base + v * R.REDIST_STRIDE


def read64(vm: vgic.VM, gpa: int) -> int:
    o = gpa - vm.ram_base
    return int.from_bytes(vm.memory[o:o + 8].tobytes(), "little")


def write64(vm: vgic.VM, gpa: int, value: int) -> None:
    o = gpa - vm.ram_base
    vm.memory[o:o + 8] = np.frombuffer(int(value).to_bytes(8, "little"), dtype=np.uint8)


def set_prop(vm: vgic.VM, lay: Layout, intid: int, value: int = LPI_PROP_DEFAULT) -> None:
    vm.memory[lay.prop - vm.ram_base + intid - R.LPI_BASE] = value


def pend_bit(vm: vgic.VM, lay: Layout, vcpu: int, intid: int) -> int:
    return (int(vm.memory[lay.pend[vcpu] - vm.ram_base + intid // 8]) >> (intid % 8)) & 1


def set_pend_bit(vm: vgic.VM, lay: Layout, vcpu: int, intid: int, on: bool = True) -> None:
    o = lay.pend[vcpu] - vm.ram_base + intid // 8
    if on:
        vm.memory[o] |= 1 << (intid % 8)
    else:
        vm.memory[o] &= ~(1 << (intid % 8)) & 0xFF


class Guest:
    """Drives one VM's ITS as a guest does: command queue at ``layout.cmdq``
    (64 KiB), flat device and collection tables of one 64 KiB page each."""

    def __init__(self, vm: vgic.VM, id_bits: int = 16, enable_lpis: bool = True, enable_its: bool = True) -> None:
        self.vm = vm
        self.lay = layout(vm)
        self.its = vm.its_base
        self.cwriter = 0
        vm.mmio_write(vm.dist_base + R.GICD_CTLR, 4, R.GICD_CTLR_ENABLE_G1)
        for v in range(vm.nr_vcpus):
            vm.mmio_write(rd_base(vm, v) + R.GICR_PROPBASER, 8, self.lay.prop | (id_bits - 1), v)
            vm.mmio_write(rd_base(vm, v) + R.GICR_PENDBASER, 8, self.lay.pend[v], v)
            if enable_lpis:
                vm.mmio_write(rd_base(vm, v) + R.GICR_CTLR, 4, R.GICR_CTLR_ENABLE_LPIS, v)
        vm.mmio_write(self.its + R.GITS_CBASER, 8, VALID | self.lay.cmdq | 15)   # 16 pages: 64 KiB
        vm.mmio_write(self.its + R.GITS_BASER, 8, VALID | self.lay.device_table)
        vm.mmio_write(self.its + R.GITS_BASER + 8, 8, VALID | self.lay.collection_table)
        if enable_its:
            vm.mmio_write(self.its + R.GITS_CTLR, 4, R.GITS_CTLR_ENABLED)

    def itt(self, n: int) -> int:
        return self.lay.itt + n * 0x1_0000

    def send(self, *cmds: list[int]) -> None:
        """Write the commands at CWRITER (wrapping in the 64 KiB queue) and
        move CWRITER past them (the ITS runs them at once)."""
        for c in cmds:
            base = self.lay.cmdq + self.cwriter
            for i, w in enumerate(c):
                write64(self.vm, base + 8 * i, w)
            self.cwriter = (self.cwriter + 32) % 0x1_0000
        self.vm.mmio_write(self.its + R.GITS_CWRITER, 8, self.cwriter)

    def reg(self, offset: int, size: int = 8) -> int:
        return self.vm.mmio_read(self.its + offset, size)


def its_vm(backend: str, nr_vcpus: int = 4, **kw: object) -> vgic.VM:
    """A VM with an ITS (its=True) on ``backend``."""
    return vgic.VM(nr_vcpus=nr_vcpus, nr_irqs=64, its=True, backend=backend, **kw)  # type: ignore[arg-type]


def acknowledge(vm: vgic.VM, vcpu: int) -> int:
    """Enter ``vcpu``, let the guest take one Group 1 interrupt (1023 if
    none), EOI it, exit: the INTID taken."""
    v = vm.vcpus[vcpu]
    if not v.loaded:
        v.load()
    v.enter()
    v.sysreg_write("ICC_PMR_EL1", 0xFF)
    v.sysreg_write("ICC_IGRPEN1_EL1", 1)
    intid = v.sysreg_read("ICC_IAR1_EL1")
    if intid != 1023:
        v.sysreg_write("ICC_EOIR1_EL1", intid)
    v.exit()
    return intid


def drain(vm: vgic.VM, vcpu: int, limit: int = 64) -> list[int]:
    """Every interrupt ``vcpu`` takes, one entry each, until none is left."""
    out = []
    for _ in range(limit):
        i = acknowledge(vm, vcpu)
        if i == 1023:
            break
        out.append(i)
    return out
