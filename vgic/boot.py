"""Booting real guest images on :mod:`vgic.run`: the device tree, the load
convention, kvm-unit-tests' arguments and environment, their exit status
and their migration handshake.

* **The device tree** (:func:`device_tree`) describes the machine as QEMU's
  ``virt`` board with ``gic-version=3`` does (hw/arm/virt.c, the node names
  and properties a Linux or kvm-unit-tests guest reads): ``/memory``,
  ``/cpus`` with each vCPU's MPIDR as ``reg``, ``/psci`` (method ``hvc``),
  the GICv3 node ``intc@8000000`` with the distributor and one
  redistributor region and the ITS as its child ``its@8080000``
  (``msi-controller``), the arch timer's four PPIs (secure and non-secure
  physical 13 and 14, virtual 11, hypervisor 10, level-high: INTIDs 29,
  30, 27, 26), the PL011 at 0x0900_0000 with SPI 1, and ``/chosen`` with
  ``bootargs`` (``-append``), ``stdout-path`` and the initrd range.
* **The load convention** (:func:`boot`) is QEMU's ``-kernel`` for an
  image without a Linux header: the image at RAM + 0x8_0000 (kvm-unit-tests'
  ``.flat`` files relocate themselves wherever they are), the initrd at RAM
  + min(RAM / 2, 128 MiB), the device tree after it on a 2 MiB boundary,
  vCPU 0 entered at the image's first byte with X0 = the tree's address,
  EL1h, interrupts masked, MMU off.  kvm-unit-tests reads its environment
  (``KEY=VALUE`` lines, errata flags for instance) from the initrd.
* **kvm-unit-tests' protocol**: a test ends by printing ``EXIT: STATUS=n``
  (n = code << 1 | 1) and calling PSCI SYSTEM_OFF; :func:`exit_status`
  reads it.  A migration test prints one of :data:`MIGRATE_PROMPTS` and waits for a
  key on the UART; :func:`run_guest` then takes ``vm.save()`` and the
  vCPUs' registers, serialises the snapshot, restores it into a fresh
  :class:`~vgic.run.Machine` (optionally on the other backend), types the
  key there and resumes the guest - what kvm-unit-tests' run script does
  with QEMU's ``migrate`` and ``-incoming``.  ``Skipped VM migration``
  gets its key at once.
"""
from __future__ import annotations

import os
import pathlib
import re
from dataclasses import dataclass, field
from typing import Any, TextIO

from vgic import fdt, regmap, uapi
from vgic.run import DEFAULT_RAM_SIZE, UART_BASE, UART_SIZE, Machine
from vgic.snapshot import Snapshot

#: Where QEMU's -kernel puts an image without a Linux arm64 header.
IMAGE_OFFSET = 0x8_0000
#: The initrd at RAM + min(RAM / 2, this) (hw/arm/boot.c).
INITRD_MAX_OFFSET = 128 << 20
DTB_ALIGN = 2 << 20
#: kvm-unit-tests' lib/migrate.c prompts (migrate, migrate_quiet) and its skip.
MIGRATE_PROMPTS = (b"Now migrate the VM, then press a key to continue...", b"Now migrate the VM (quiet)")
MIGRATE_SKIP = b"Skipped VM migration"
#: What run_guest returns when the guest asked to be migrated (Machine.run).
STOP_MIGRATE = "migrate"
_EXIT_RE = re.compile(rb"EXIT: STATUS=(\d+)")

# Phandles (QEMU's are allocated from 0x8000; any unique non-zero value does).
PHANDLE_GIC = 0x8001
PHANDLE_ITS = 0x8002
# GIC interrupt specifiers: type (0 SPI, 1 PPI), number within the type, flags.
GIC_SPI, GIC_PPI = 0, 1
IRQ_TYPE_LEVEL_HIGH = 4
#: The arch timer's PPIs in the order of the binding: secure physical,
#: non-secure physical, virtual, hypervisor (INTIDs 29, 30, 27, 26).
TIMER_PPIS = (13, 14, 11, 10)
UART_SPI = 1


def _reg(base: int, size: int) -> list[int]:
    # One reg entry with #address-cells = #size-cells = 2.
    return fdt.cells([base, size], [2, 2])


def device_tree(m: Machine, bootargs: str = "", initrd: tuple[int, int] | None = None) -> fdt.Node:
    """The machine's device tree (see the module docstring)."""
    vm = m.vm
    root = fdt.Node("", {"#address-cells": 2, "#size-cells": 2, "compatible": "linux,dummy-virt",
                         "model": "linux,dummy-virt", "interrupt-parent": PHANDLE_GIC})
    root.add("psci", {"compatible": ["arm,psci-1.0", "arm,psci-0.2", "arm,psci"], "method": "hvc",
                      "cpu_on": 0xC400_0003, "cpu_off": 0x8400_0002})
    root.add(f"memory@{vm.ram_base:x}", {"device_type": "memory", "reg": _reg(vm.ram_base, vm.memory.size)})
    cpus = root.add("cpus", {"#address-cells": 2, "#size-cells": 0})
    for v in vm.vcpus:
        # reg: MPIDR_EL1's affinity fields (Aff3 in the upper cell).
        aff = v.mpidr & 0xFF_00FF_FFFF
        cpus.add(f"cpu@{aff:x}", {"device_type": "cpu", "compatible": "arm,cortex-a57",
                                  "reg": fdt.cells([aff], [2]), "enable-method": "psci"})
    gic_regs = _reg(vm.dist_base, regmap.FRAME_SIZE) + _reg(vm.redist_base, vm.nr_vcpus * regmap.REDIST_STRIDE)
    gic = root.add(f"intc@{vm.dist_base:x}", {
        "compatible": "arm,gic-v3", "#interrupt-cells": 3, "interrupt-controller": True, "#address-cells": 2,
        "#size-cells": 2, "ranges": True, "#redistributor-regions": 1, "reg": gic_regs, "phandle": PHANDLE_GIC})
    if vm.has_its:
        gic.add(f"its@{vm.its_base:x}", {"compatible": "arm,gic-v3-its", "msi-controller": True, "#msi-cells": 1,
                                         "reg": _reg(vm.its_base, uapi.KVM_VGIC_V3_ITS_SIZE), "phandle": PHANDLE_ITS})
    timer_irqs: list[int] = []
    for ppi in TIMER_PPIS:
        timer_irqs += [GIC_PPI, ppi, IRQ_TYPE_LEVEL_HIGH]
    root.add("timer", {"compatible": ["arm,armv8-timer", "arm,armv7-timer"], "interrupts": timer_irqs,
                       "always-on": True})
    uart = f"pl011@{UART_BASE:x}"
    root.add(uart, {"compatible": ["arm,pl011", "arm,primecell"], "reg": _reg(UART_BASE, UART_SIZE),
                    "interrupts": [GIC_SPI, UART_SPI, IRQ_TYPE_LEVEL_HIGH]})
    chosen = root.add("chosen", {"bootargs": bootargs, "stdout-path": f"/{uart}"})
    if initrd is not None:
        chosen.props["linux,initrd-start"] = fdt.cells([initrd[0]], [2])
        chosen.props["linux,initrd-end"] = fdt.cells([initrd[0] + initrd[1]], [2])
    return root


def env_text(env: dict[str, str] | None) -> bytes:
    """kvm-unit-tests' environment file: ``KEY=VALUE`` lines."""
    return b"".join(f"{k}={v}\n".encode() for k, v in (env or {}).items())


@dataclass
class Layout:
    """Where :func:`boot` put things (guest physical addresses)."""

    image: int
    image_size: int
    dtb: int
    dtb_size: int
    initrd: int | None = None
    initrd_size: int = 0


def boot(m: Machine, image: bytes | str | os.PathLike[str], *, append: str = "",
         initrd: bytes | None = None, env: dict[str, str] | None = None) -> Layout:
    """Load ``image`` (bytes or a path), an initrd (``initrd`` bytes, or
    kvm-unit-tests' environment from ``env``) and the device tree as QEMU's
    -kernel does, and make vCPU 0 ready to start at the image."""
    data = bytes(image) if isinstance(image, (bytes, bytearray)) else pathlib.Path(image).read_bytes()
    vm = m.vm
    size = vm.memory.size
    img = m.load(data, vm.ram_base + IMAGE_OFFSET)
    if initrd is None and env:
        initrd = env_text(env)
    rd_at = rd_size = None
    dtb_floor = img + len(data)
    if initrd:
        rd_at = vm.ram_base + min(size // 2, INITRD_MAX_OFFSET)
        if rd_at < dtb_floor:
            raise ValueError(f"the {len(data)}-byte image runs into the initrd at {rd_at:#x}: give more RAM")
        m.load(initrd, rd_at)
        rd_size = len(initrd)
        dtb_floor = rd_at + rd_size
    dtb_at = -(-dtb_floor // DTB_ALIGN) * DTB_ALIGN
    blob = fdt.build(device_tree(m, append, None if rd_at is None else (rd_at, rd_size or 0)))
    m.load(blob, dtb_at)
    m.start(img, dtb_at)
    return Layout(img, len(data), dtb_at, len(blob), rd_at, rd_size or 0)


def exit_status(output: bytes) -> int | None:
    """kvm-unit-tests' exit code from the ``EXIT: STATUS=n`` line (n >> 1:
    0 all passed, 1 a failure, 77 all skipped, 63 an abort), or None."""
    found = _EXIT_RE.findall(output)
    return None if not found else int(found[-1]) >> 1


# ---------------------------------------------------------------- migration
@dataclass
class Migration:
    """A paused machine in transit: its snapshot's bytes (GIC, ITS, timers,
    FP/SVE registers, RAM), its vCPUs' other registers, and what the VMM
    itself carries (the UART)."""

    snapshot: bytes
    cpus: list[dict[str, Any]]
    machine: dict[str, Any] = field(default_factory=dict)


def save(m: Machine) -> Migration:
    """Take a paused machine's state: the FP registers go into each vCPU's
    FP part first (so the snapshot's one-regs carry them), then
    ``vm.save()`` with RAM, then each vCPU's Unicorn registers."""
    for cpu in m.cpus:
        if cpu.blocked:
            # The VMM stops every vCPU thread: one halted in WFI leaves
            # KVM_RUN (kvm_vcpu_block ends on the signal) and its WFI
            # completes, which the architecture allows at any time.
            cpu.vcpu.unblock()
            cpu.vcpu.put()
            cpu.blocked = False
        cpu.fp_to_vcpu()
    snap = m.vm.save(ram=True)
    uart = m.uart
    return Migration(snap.to_bytes(), [cpu.save_cpu() for cpu in m.cpus],
                     {"options": dict(m.options), "uart_output": bytes(uart.output),
                      "uart_input": bytes(uart.input), "uart_regs": dict(uart.regs),
                      "stats": m.stats.as_dict()})


def restore(mig: Migration, *, backend: str | None = None, console: TextIO | None = None) -> Machine:
    """A new machine of the same geometry (on ``backend`` if given) with the
    migrated state: ``VM.restore`` of the snapshot (RAM included), then the
    vCPUs' registers."""
    options = dict(mig.machine["options"])
    if backend is not None:
        options["backend"] = backend
    m = Machine(console=console, **options)
    m.vm.restore(Snapshot.from_bytes(mig.snapshot))
    for cpu, state in zip(m.cpus, mig.cpus):
        cpu.load_cpu(state)
        cpu.fp_from_vcpu()
    m._synced = sum(c.insns for c in m.cpus)
    m.uart.output[:] = mig.machine["uart_output"]
    m.uart._line_start = len(m.uart.output)
    m.uart.input[:] = mig.machine["uart_input"]
    m.uart.regs.update(mig.machine["uart_regs"])
    for k, v in mig.machine["stats"].items():
        setattr(m.stats, k, v)
    return m


@dataclass
class GuestRun:
    """What :func:`run_guest` did."""

    machine: Machine
    reason: str
    status: int | None
    migrations: int = 0


#: The counter ticks per instruction run_guest uses unless told: at 62.5 MHz
#: one instruction is then about 1 us of guest time, so kvm-unit-tests'
#: mdelay() polling loops (each poll a hooked CNTVCT_EL0 read) stay short.
GUEST_TICKS_PER_INSN = 64


def run_guest(image: bytes | str | os.PathLike[str], *, smp: int = 1, append: str = "",
              env: dict[str, str] | None = None, initrd: bytes | None = None, migrate_to: str | None = None,
              max_insns: int | None = None, console: TextIO | None = None, **options: Any) -> GuestRun:
    """Boot ``image`` on a new :class:`~vgic.run.Machine` (``smp`` vCPUs,
    ``options`` for it and its VM; ``ticks_per_insn`` defaults to
    :data:`GUEST_TICKS_PER_INSN`) and run it to the end, migrating it
    whenever it asks (into a machine on the ``migrate_to`` backend, or on
    the same one); returns the machine it ended on, the last stop reason
    and kvm-unit-tests' exit code."""
    options.setdefault("ram_size", DEFAULT_RAM_SIZE)
    options.setdefault("ticks_per_insn", GUEST_TICKS_PER_INSN)
    m = Machine(smp, console=console, **options)
    boot(m, image, append=append, env=env, initrd=initrd)
    migrations = 0
    left = max_insns
    while True:
        _watch(m)
        before = m.stats.instructions
        reason = m.run(left)
        if left is not None:
            left -= m.stats.instructions - before
        if reason != STOP_MIGRATE:
            break
        mig = save(m)
        m = restore(mig, backend=migrate_to, console=console)
        migrations += 1
        m.uart.feed(b"\n")
    return GuestRun(m, reason, exit_status(bytes(m.uart.output)), migrations)


def _watch(m: Machine) -> None:
    # The UART hears kvm-unit-tests' migration prompts.
    def on_line(line: bytes) -> None:
        if any(p in line for p in MIGRATE_PROMPTS):
            m.pause(STOP_MIGRATE)
        elif MIGRATE_SKIP in line:
            m.uart.feed(b"\n")

    m.uart.on_line = on_line


__all__ = ["GuestRun", "Layout", "Migration", "boot", "device_tree", "env_text", "exit_status", "restore", "run_guest",
           "save", "IMAGE_OFFSET", "MIGRATE_PROMPTS", "MIGRATE_SKIP", "STOP_MIGRATE", "GUEST_TICKS_PER_INSN"]
