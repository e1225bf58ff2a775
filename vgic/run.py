"""A small VMM: guest code on the Unicorn CPU emulator, with this library
as its GICv3, ITS and arch timers (``vgic run IMAGE`` on the command line).

The machine is QEMU's ``virt`` board as a KVM guest sees it: RAM at
0x4000_0000 (the VM's ``memory``, shared with Unicorn without a copy), the
distributor, ITS and redistributors where :mod:`vgic.vm` puts them, a PL011
UART at 0x0900_0000, PSCI over HVC or SMC.  What goes where:

* **GIC and ITS frames**: Unicorn MMIO windows whose callbacks call
  ``vm.mmio_read``/``vm.mmio_write``.  In KVM a GIC access is a stage-2
  fault handled in the kernel: the vCPU leaves the guest (the vGIC folds its
  list registers) and enters again (it flushes them), so each access is
  wrapped in ``vcpu.exit()``/``vcpu.enter()`` here too.
* **The UART**: KVM_EXIT_MMIO to userspace, so KVM_RUN returns: the vCPU
  exits and is put, the VMM emulates the register, and it loads and enters
  again.
* **System registers**: Unicorn's MRS/MSR hooks.  The rows of
  :data:`vgic.sysregs.TABLE` owned by the vGICv3 (ICC_*) and the arch
  timers (CNT*_EL0) go to ``vcpu.sysreg_read``/``sysreg_write``; the ones
  KVM traps (``trap == "kvm"``: SGI generation, CNTP_*) also exit and enter
  as KVM's trap handling does; the hardware-served ones (ICC_IAR1_EL1,
  CNTV_*, CNTVCT_EL0, ...) do not.  MPIDR_EL1 (each Unicorn instance thinks
  it is CPU 0) and ID_AA64PFR0_EL1 (its GIC field says "GICv3 system
  registers", as KVM with a vGICv3 says) are answered by the VMM, as KVM's
  ``sys_regs.c`` answers them.  Everything else - SCTLR_EL1, VBAR_EL1,
  TCR/TTBR/MAIR, DAIF, SPSR/ELR/ESR, CPACR, FPCR/FPSR - is Unicorn's: they
  drive its translation, its MMU and its FP arithmetic, so they must be the
  values Unicorn computes with (the FP/SVE part's copy, ``vcpu.fp``, would
  be filled from Unicorn at a snapshot; not done yet).
* **Interrupts**: ``vcpu.pending_interrupt()`` is asked after every access
  that can change what the CPU interface signals (a GIC MMIO exit, an ICC_*
  write or acknowledge, a timer event); when it says ``"irq"`` (``"fiq"``)
  and PSTATE.I (F) is clear, the VMM takes the exception into the guest
  itself (Unicorn 2.1 has no way to raise one): ELR_EL1, SPSR_EL1, PSTATE,
  the SP banking and the vector VBAR_EL1 + offset, as the Arm ARM's
  AArch64.TakeException does.  An access inside a system-register hook
  takes it right after the instruction; otherwise at the next translation
  block boundary (a block hook), which is also where a DAIFClr or ERET that
  unmasks it is noticed (both end a block).  After an acknowledge, an EOI,
  a deactivation or a group enable, ICH_HCR_EL2.En with a non-zero
  ICH_MISR_EL2 is the maintenance interrupt KVM would take: an exit and an
  entry, so the LRs are folded and flushed again.
* **Time**: the counter moves with executed instructions (``ticks_per_insn``
  counter ticks per instruction, counted per translation block and
  corrected where a hook cuts a block short): at every ``quantum``
  instructions, and before every timer-register access.  WFI with nothing
  pending blocks the vCPU (``vcpu.block()``, which arms KVM's background
  timer) and, when every vCPU is blocked, the counter jumps to the next
  timer event.
* **Synchronous exceptions**: Unicorn hands every guest exception to the
  VMM instead of taking it; UNDEF, SVC and BRK are taken into the guest
  with their syndromes, HVC and SMC are PSCI calls (VERSION, FEATURES,
  CPU_ON, CPU_OFF, AFFINITY_INFO, MIGRATE_INFO_TYPE, SYSTEM_OFF,
  SYSTEM_RESET).  Aborts stop the run with :class:`RunError` (Unicorn does
  not report their syndrome or fault address).

Several vCPUs take turns (one Unicorn instance each, ``slice_insns``
instructions at a time); only the one executing is in the guest.

Unicorn is an optional dependency (the ``run`` extra): this module imports
without it and raises ImportError naming it when a machine is built.
"""
from __future__ import annotations

import ctypes
import importlib
import mmap
import os
import pathlib
import time
from dataclasses import dataclass, fields
from typing import Any, TextIO

import numpy as np

from vgic import fpregs, ich, regmap, sysregs, uapi
from vgic.errors import UndefinedInstruction, VgicError
from vgic.vm import DEFAULT_RAM_BASE, VM

_c_block_hook: Any
try:
    from vgic._core import blockhook as _c_block_hook
except ImportError:          # no compiled core (the pure-Python install)
    _c_block_hook = None

# ---------------------------------------------------------------- the board
#: QEMU virt's PL011 UART (hw/arm/virt.c: VIRT_UART).
UART_BASE = 0x0900_0000
UART_SIZE = 0x1000
#: QEMU virt's 32 virtio-mmio transports (VIRT_MMIO), here all empty.
VIRTIO_BASE = 0x0A00_0000
VIRTIO_SIZE = 0x4000
VIRTIO_MAGIC = 0x7472_6976          # "virt"
VIRTIO_VERSION = 2
DEFAULT_RAM_SIZE = 128 << 20
#: Where an image goes by default: 2 MiB into RAM (the start of RAM is
#: left to a device tree).
DEFAULT_LOAD_OFFSET = 0x20_0000

# ------------------------------------------------------ PSCI (DEN0022)
PSCI_VERSION = 0x8400_0000
PSCI_CPU_OFF = 0x8400_0002
PSCI_CPU_ON_32 = 0x8400_0003
PSCI_CPU_ON_64 = 0xC400_0003
PSCI_AFFINITY_INFO_32 = 0x8400_0004
PSCI_AFFINITY_INFO_64 = 0xC400_0004
PSCI_MIGRATE_INFO_TYPE = 0x8400_0006
PSCI_SYSTEM_OFF = 0x8400_0008
PSCI_SYSTEM_RESET = 0x8400_0009
PSCI_FEATURES = 0x8400_000A
PSCI_RET_SUCCESS = 0
PSCI_RET_NOT_SUPPORTED = -1
PSCI_RET_INVALID_PARAMS = -2
PSCI_RET_ALREADY_ON = -4
#: PSCI 1.1, the version KVM gives a new VM (KVM_ARM_PSCI_LATEST).
PSCI_VERSION_1_1 = 0x0001_0001
#: MIGRATE_INFO_TYPE: no Trusted OS to migrate.
PSCI_TOS_NOT_PRESENT_MP = 2
_PSCI_FUNCTIONS = frozenset({PSCI_VERSION, PSCI_CPU_OFF, PSCI_CPU_ON_32, PSCI_CPU_ON_64, PSCI_AFFINITY_INFO_32,
                             PSCI_AFFINITY_INFO_64, PSCI_MIGRATE_INFO_TYPE, PSCI_SYSTEM_OFF, PSCI_SYSTEM_RESET,
                             PSCI_FEATURES})

# ------------------------------------------------ the Arm ARM's AArch64 state
PSTATE_SP = 1 << 0            # SPSel: SP_ELx
PSTATE_EL_SHIFT = 2
PSTATE_F = 1 << 6
PSTATE_I = 1 << 7
PSTATE_A = 1 << 8
PSTATE_D = 1 << 9
PSTATE_NZCV = 0xF << 28
#: Reset and exception-entry state: EL1h, D, A, I, F masked.
PSTATE_EL1H_MASKED = PSTATE_D | PSTATE_A | PSTATE_I | PSTATE_F | (1 << PSTATE_EL_SHIFT) | PSTATE_SP
# Vector table offsets (Arm ARM D1.10.2): the source ...
VECTOR_CURRENT_SP0 = 0x000
VECTOR_CURRENT_SPX = 0x200
VECTOR_LOWER_A64 = 0x400
# ... and the kind.
VECTOR_SYNC = 0x000
VECTOR_IRQ = 0x080
VECTOR_FIQ = 0x100
# ESR_ELx (Arm ARM D17.2.37): exception class and IL (a 32-bit instruction).
ESR_EC_SHIFT = 26
ESR_IL = 1 << 25
EC_UNKNOWN = 0x00
EC_SVC64 = 0x15
EC_SYSREG = 0x18
EC_IABT_LOW = 0x20
EC_IABT_CUR = 0x21
EC_BRK64 = 0x3C
#: Instruction/data fault status code of a synchronous external abort, what
#: KVM's inject_abt64 reports for an access it cannot emulate.
FSC_EXTABT = 0x10
# CNTKCTL_EL1's EL0 access enables.
CNTKCTL_EL0PCTEN = 1 << 0
CNTKCTL_EL0VCTEN = 1 << 1
CNTKCTL_EL0VTEN = 1 << 8
CNTKCTL_EL0PTEN = 1 << 9
# Instruction encodings the VMM must recognise (Arm ARM C6): WFI, and HVC
# (exception generation) with its imm16 masked out.
INSN_WFI = 0xD503_207F
INSN_EXC_MASK = 0xFFE0_001F
INSN_HVC = 0xD400_0002
# MRS/MSR (register): 1101010100 L 1 op0<1> ...; the mask keeps bits 31-22 and 20.
INSN_SYSREG_MASK = 0xFFD0_0000
INSN_SYSREG = 0xD510_0000

# System registers as (op0, op1, CRn, CRm, op2).
SPSR_EL1 = (3, 0, 4, 0, 0)
SCTLR_EL1 = (3, 0, 1, 0, 0)
CNTKCTL_EL1 = (3, 0, 14, 1, 0)
FAR_EL1 = (3, 0, 6, 0, 0)
#: The EL1 system registers a migrated vCPU carries beside the snapshot
#: (KVM_REG_ARM64_SYSREG one-regs under KVM; Unicorn's here): translation,
#: exception, thread and timer-control state.
CPU_SYSREGS = {
    "SCTLR_EL1": SCTLR_EL1, "CPACR_EL1": (3, 0, 1, 0, 2), "TTBR0_EL1": (3, 0, 2, 0, 0),
    "TTBR1_EL1": (3, 0, 2, 0, 1), "TCR_EL1": (3, 0, 2, 0, 2), "SPSR_EL1": SPSR_EL1,
    "ELR_EL1": (3, 0, 4, 0, 1), "AFSR0_EL1": (3, 0, 5, 1, 0), "AFSR1_EL1": (3, 0, 5, 1, 1),
    "ESR_EL1": (3, 0, 5, 2, 0), "FAR_EL1": FAR_EL1, "PAR_EL1": (3, 0, 7, 4, 0),
    "MAIR_EL1": (3, 0, 10, 2, 0), "AMAIR_EL1": (3, 0, 10, 3, 0), "VBAR_EL1": (3, 0, 12, 0, 0),
    "CONTEXTIDR_EL1": (3, 0, 13, 0, 1), "TPIDR_EL1": (3, 0, 13, 0, 4), "TPIDR_EL0": (3, 3, 13, 0, 2),
    "TPIDRRO_EL0": (3, 3, 13, 0, 3), "CNTKCTL_EL1": CNTKCTL_EL1,
}
SCR_EL3 = (3, 6, 1, 1, 0)
HCR_EL2 = (3, 4, 1, 1, 0)
MPIDR_EL1 = (3, 0, 0, 0, 5)
ID_AA64PFR0_EL1 = (3, 0, 0, 4, 0)
ID_AA64PFR0_GIC_SHIFT = 24
SCR_NS, SCR_RW = 1 << 0, 1 << 10
HCR_RW = 1 << 31

# QEMU's exception numbers (target/arm/cpu.h EXCP_*), what UC_HOOK_INTR gets.
EXCP_UDEF = 1
EXCP_SWI = 2
EXCP_PREFETCH_ABORT = 3
EXCP_DATA_ABORT = 4
EXCP_BKPT = 7
EXCP_SMC = 13
_EXCP_NAMES = {EXCP_PREFETCH_ABORT: "a prefetch abort", EXCP_DATA_ABORT: "a data abort"}

#: Unicorn's UC_MEM_FETCH_UNMAPPED access type.
UC_MEM_FETCH_UNMAPPED = 21
#: An address the emulation never reaches (not 4-byte aligned): ``until``.
_NEVER = (1 << 64) - 1
_U64 = (1 << 64) - 1
# Where a vCPU's run stops (the reason run() returns for the machine).
STOP_SYSTEM_OFF = "system_off"
STOP_SYSTEM_RESET = "system_reset"
STOP_WFI = "wfi"            # every vCPU blocked in WFI and no timer armed to wake one
STOP_LIMIT = "limit"        # max_insns reached
STOP_HALTED = "halted"      # every vCPU powered off (PSCI CPU_OFF)
STOP_PAUSED = "paused"      # Machine.pause() from a device (the run can go on)


class RunError(VgicError):
    """The guest did something this VMM does not emulate (an abort, an
    access outside RAM and the devices, an exception above EL1)."""


def _unicorn() -> tuple[Any, Any]:
    """The unicorn package and its AArch64 constants, imported on first use
    so that ``import vgic.run`` works without them."""
    try:
        uc = importlib.import_module("unicorn")
        arm64 = importlib.import_module("unicorn.arm64_const")
    except ImportError as exc:
        raise ImportError("vgic.run needs the Unicorn CPU emulator (an optional dependency): "
                          "pip install 'vgic[run]' or pip install 'unicorn>=2.1'") from exc
    return uc, arm64


@dataclass
class RunStats:
    """What a :class:`Machine` did, summed over its vCPUs and runs."""

    #: Guest instructions executed.
    instructions: int = 0
    #: GIC/ITS MMIO accesses: each an exit and an entry of the vCPU (KVM's
    #: in-kernel MMIO emulation).
    mmio_exits: int = 0
    #: UART accesses: exits to the VMM (KVM_EXIT_MMIO; KVM_RUN returns).
    user_exits: int = 0
    #: MRS/MSR of registers the library serves (ICC_*, CNT*).
    sysreg_accesses: int = 0
    #: ... of which KVM traps and emulates (an exit and an entry each).
    sysreg_traps: int = 0
    #: Other MRS/MSR the VMM answered (MPIDR_EL1, ID_AA64PFR0_EL1).
    vmm_sysregs: int = 0
    #: Maintenance interrupts (ICH_HCR_EL2.En and ICH_MISR_EL2 non-zero
    #: after a CPU-interface access): an exit and an entry each.
    maintenance: int = 0
    #: IRQ and FIQ exceptions taken into the guest.
    irqs: int = 0
    fiqs: int = 0
    #: WFI executed (each an exit: KVM traps WFI), and of those the ones
    #: that blocked the vCPU.
    wfis: int = 0
    blocks: int = 0
    #: PSCI calls (HVC or SMC).
    psci_calls: int = 0
    #: UNDEF, SVC and BRK exceptions taken into the guest.
    sync_exceptions: int = 0
    #: Turns given up in a spin-wait (YIELD/WFE) while others could run.
    yields: int = 0
    #: Counter ticks added while every vCPU was blocked.
    idle_ticks: int = 0
    #: Wall-clock seconds spent in Machine.run.
    seconds: float = 0.0

    @property
    def exits(self) -> int:
        """Every exit a KVM guest would take for the same work."""
        return (self.mmio_exits + self.user_exits + self.sysreg_traps + self.maintenance + self.psci_calls
                + self.wfis)

    def summary(self) -> str:
        """A few lines for a terminal: counts and rates."""
        s = self.seconds or float("nan")
        return "\n".join([
            f"instructions {self.instructions:,} in {self.seconds:.3f} s: {self.instructions / s / 1e6:.2f} M/s",
            f"GIC MMIO exits {self.mmio_exits:,} ({self.mmio_exits / s:,.0f}/s), UART exits {self.user_exits:,}, "
            f"PSCI calls {self.psci_calls:,}",
            f"vGIC/timer sysreg accesses {self.sysreg_accesses:,} ({self.sysreg_accesses / s:,.0f}/s), "
            f"{self.sysreg_traps:,} trapped, {self.maintenance:,} maintenance interrupts; "
            f"VMM-served {self.vmm_sysregs:,}",
            f"IRQs {self.irqs:,}, FIQs {self.fiqs:,}, WFIs {self.wfis:,} ({self.blocks:,} blocked), "
            f"sync exceptions {self.sync_exceptions:,}, idle ticks {self.idle_ticks:,}, "
            f"spin-wait yields {self.yields:,}",
        ])

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Pl011:
    """The registers of an ARM PL011 UART (DDI 0183) a guest needs to print
    and read a key: DR writes go to ``output`` (and ``console``), DR reads
    take the next byte :meth:`feed` queued; FR says the transmit FIFO is
    empty and whether the receive FIFO is (RXFE); the control registers
    hold what is written; the ID registers read as a PL011's.  No
    interrupt.  ``on_line`` (if set) hears every line the guest completes."""

    DR, FR, IBRD, FBRD, LCR_H, CR, IFLS, IMSC, RIS, MIS, ICR, DMACR = (
        0x000, 0x018, 0x024, 0x028, 0x02C, 0x030, 0x034, 0x038, 0x03C, 0x040, 0x044, 0x048)
    FR_RXFE = 1 << 4
    FR_TXFE = 1 << 7
    #: UARTPeriphID0-3 and UARTPCellID0-3 at 0xFE0..0xFFC.
    ID = (0x11, 0x10, 0x14, 0x00, 0x0D, 0xF0, 0x05, 0xB1)
    _STORED = (IBRD, FBRD, LCR_H, CR, IFLS, IMSC, DMACR)

    def __init__(self, console: TextIO | None = None) -> None:
        self.output = bytearray()
        self.console = console
        self.regs = dict.fromkeys(self._STORED, 0)
        self.regs[self.CR] = 0x300          # TXE | RXE at reset
        #: Bytes waiting in the receive FIFO.
        self.input = bytearray()
        self._line_start = 0
        self.on_line: Any = None

    def feed(self, data: bytes) -> None:
        """Queue ``data`` for the guest to read (keys typed at the console)."""
        self.input.extend(data)

    def read(self, offset: int) -> int:
        if offset == self.FR:
            return self.FR_TXFE | (0 if self.input else self.FR_RXFE)
        if offset == self.DR:
            if not self.input:
                return 0
            byte = self.input[0]
            del self.input[0]
            return byte
        if offset in self.regs:
            return self.regs[offset]
        if 0xFE0 <= offset < 0x1000 and offset % 4 == 0:
            return self.ID[(offset - 0xFE0) // 4]
        return 0

    def write(self, offset: int, value: int) -> None:
        if offset == self.DR:
            byte = value & 0xFF
            self.output.append(byte)
            if self.console is not None:
                self.console.write(chr(byte))
                if byte == 0x0A:
                    self.console.flush()
            if byte == 0x0A:
                line = bytes(self.output[self._line_start:])
                self._line_start = len(self.output)
                if self.on_line is not None:
                    self.on_line(line)
        elif offset in self.regs:
            self.regs[offset] = value & 0xFFFF


class _CpReg(ctypes.Structure):
    """libunicorn's ``uc_arm64_cp_reg`` (include/unicorn/arm64.h)."""

    _fields_ = [("crn", ctypes.c_uint32), ("crm", ctypes.c_uint32), ("op0", ctypes.c_uint32),
                ("op1", ctypes.c_uint32), ("op2", ctypes.c_uint32), ("val", ctypes.c_uint64)]


class _Fast:
    """Cheaper ways into one Unicorn instance where the 2.1 binding allows.

    The binding's ``reg_read``/``reg_write`` pick a register class per call
    (about 2 us each); libunicorn's ``uc_reg_read``/``uc_reg_write`` called
    through ctypes take about 0.5 us.  Its hook wrappers add two Python
    frames per call; a block hook registered as a bare ctypes callback runs
    about 2.5 times as fast.  Both reach into the binding (``uclib``,
    ``_uch``, ``_Uc__do_hook_add``): when it lacks them this falls back to
    the public API, which behaves the same, slower."""

    def __init__(self, uc: Any, cp_reg_id: int) -> None:
        self.uc = uc
        #: An exception a bare callback caught (ctypes would print and drop it).
        self.error: BaseException | None = None
        self.read: Any = uc.reg_read
        self.write: Any = uc.reg_write
        self.read32: Any = uc.reg_read
        self.write32: Any = uc.reg_write

        def cp_read(enc: tuple[int, int, int, int, int]) -> int:
            op0, op1, crn, crm, op2 = enc
            return int(uc.reg_read(cp_reg_id, (crn, crm, op0, op1, op2)))

        def cp_write(enc: tuple[int, int, int, int, int], value: int) -> None:
            op0, op1, crn, crm, op2 = enc
            uc.reg_write(cp_reg_id, (crn, crm, op0, op1, op2, value))

        self.cp_read: Any = cp_read
        self.cp_write: Any = cp_write
        self.raw = False
        # The C hooks registered (vgic._core.blockhook), kept alive.
        self._c_hooks: list[Any] = []
        try:
            binding = importlib.import_module("unicorn.unicorn_py3.unicorn")
            lib, handle, self._add = binding.uclib, uc._uch, uc._Uc__do_hook_add
            self._lib, self._handle = lib, handle
            self._code_cfunc = binding.HOOK_CODE_CFUNC
        except (ImportError, AttributeError):
            return
        c_read, c_write, byref = lib.uc_reg_read, lib.uc_reg_write, ctypes.byref
        box64, box32 = ctypes.c_uint64(), ctypes.c_uint32()
        ref64, ref32 = byref(box64), byref(box32)
        u64, u32 = ctypes.c_uint64, ctypes.c_uint32

        def read(reg: int) -> int:
            c_read(handle, reg, ref64)
            return box64.value

        def write(reg: int, value: int) -> None:
            c_write(handle, reg, byref(u64(value)))

        def read32(reg: int) -> int:
            c_read(handle, reg, ref32)
            return box32.value

        def write32(reg: int, value: int) -> None:
            c_write(handle, reg, byref(u32(value)))

        cp = _CpReg()
        cp_ref = byref(cp)

        def fast_cp_read(enc: tuple[int, int, int, int, int]) -> int:
            cp.op0, cp.op1, cp.crn, cp.crm, cp.op2 = enc
            if c_read(handle, cp_reg_id, cp_ref):
                raise RunError(f"Unicorn has no system register {enc}")
            return int(cp.val)

        def fast_cp_write(enc: tuple[int, int, int, int, int], value: int) -> None:
            cp.op0, cp.op1, cp.crn, cp.crm, cp.op2 = enc
            cp.val = value
            if c_write(handle, cp_reg_id, cp_ref):
                raise RunError(f"Unicorn has no system register {enc}")

        self.read, self.write, self.read32, self.write32 = read, write, read32, write32
        self.cp_read, self.cp_write = fast_cp_read, fast_cp_write
        self.raw = True

    def hook_block(self, callback: Any, uc_mod: Any) -> None:
        """UC_HOOK_BLOCK calling ``callback(addr, size)``."""
        if not self.raw:
            self.uc.hook_add(uc_mod.UC_HOOK_BLOCK, lambda uc, addr, size, _: callback(addr, size))
            return
        uc = self.uc

        def bare(handle: Any, addr: int, size: int, _: Any) -> None:
            try:
                callback(addr, size)
            except BaseException as exc:     # re-raised after emu_start, as the binding does
                if self.error is None:
                    self.error = exc
                uc.emu_stop()

        self._bare = self._code_cfunc(bare)       # kept alive as long as the hook
        self._add(uc_mod.UC_HOOK_BLOCK, self._bare, 1, 0)

    def hook_c(self, hook: Any, uc_mod: Any, htype: int, *extra: Any) -> None:
        """Register ``hook`` (a ``vgic._core.blockhook`` hook: its C function
        and its user data) as a Unicorn hook of type ``htype`` over all
        addresses; ``extra`` is the instruction id of a UC_HOOK_INSN.  The
        hook object is kept: the C function's state must outlive the hook."""
        handle = ctypes.c_size_t()
        status = self._lib.uc_hook_add(self._handle, ctypes.byref(handle), htype,
                                       ctypes.c_void_p(hook.function), ctypes.c_void_p(hook.user_data),
                                       ctypes.c_uint64(1), ctypes.c_uint64(0), *(ctypes.c_int(x) for x in extra))
        if status:
            raise uc_mod.UcError(status)
        self._c_hooks.append(hook)

    def emu_start(self, pc: int) -> None:
        self.error = None
        for hook in self._c_hooks:
            hook.error = None
        try:
            self.uc.emu_start(pc, _NEVER)
        except BaseException:
            # A hook's error is the cause of what stopped Unicorn.
            self._raise_hook_error(self._c_hooks)
            raise
        self._raise_hook_error(self._c_hooks)

    def _raise_hook_error(self, hooks: list[Any]) -> None:
        for err in [h.error for h in hooks] + [self.error]:
            if err is not None:
                raise err


def _shared(name: str, doc: str) -> Any:
    # A _Cpu attribute kept in its block-hook state (``cpu.bs``).
    return property(lambda self: getattr(self.bs, name), lambda self, value: setattr(self.bs, name, value), doc=doc)


class _BlockState:
    """What the Python block hook counts (the C hook's state has the same
    fields: vgic._core.blockhook.BlockHook)."""

    def __init__(self) -> None:
        self.insns = 0
        self.check_at = 0
        self.blk_start = 0
        self.blk_end = 0
        self.irq = False
        self.irq_mask = 0
        self.may_yield = False
        self.spins = 0


def _sysreg_iss(insn: int) -> int:
    """ESR_ELx.ISS of a trapped MRS/MSR (EC 0x18, Arm ARM D17.2.37): Op0,
    Op2, Op1, CRn, Rt, CRm and Direction (1 for a read) from the instruction."""
    op0, op1, crn = (insn >> 19) & 3, (insn >> 16) & 7, (insn >> 12) & 0xF
    crm, op2, rt, read = (insn >> 8) & 0xF, (insn >> 5) & 7, insn & 0x1F, (insn >> 21) & 1
    return op0 << 20 | op2 << 17 | op1 << 14 | crn << 10 | rt << 5 | crm << 1 | read


def _xreg(a64: Any, n: int) -> Any:
    # Unicorn numbers X29 and X30 apart from X0-X28.
    return getattr(a64, f"UC_ARM64_REG_X{n}")


#: KVM's one-reg IDs of V0-V31, FPSR and FPCR (the FP part's core registers).
_FP_IDS = [fpregs.core_vreg(n) for n in range(32)] + [fpregs.KVM_REG_ARM_CORE_FPSR, fpregs.KVM_REG_ARM_CORE_FPCR]


class _Cpu:
    """One vCPU: its Unicorn instance, its hooks, its share of the counts."""

    def __init__(self, machine: Machine, index: int) -> None:
        uc_mod, a64 = machine._uc
        self.m = machine
        self.vm = machine.vm
        self.id = index
        self.vcpu = machine.vm.vcpus[index]
        self.a = a64
        self.uc = uc = uc_mod.Uc(uc_mod.UC_ARCH_ARM64, uc_mod.UC_MODE_ARM, machine.cpu_model)
        self.fast = fast = _Fast(uc, a64.UC_ARM64_REG_CP_REG)
        self.rd, self.wr, self.rd32, self.wr32 = fast.read, fast.write, fast.read32, fast.write32
        self._cp_read, self._cp_write = fast.cp_read, fast.cp_write
        vm = machine.vm
        uc.mem_map_ptr(vm.ram_base, vm.memory.size, uc_mod.UC_PROT_ALL, vm.memory.ctypes.data)
        windows = [(vm.dist_base, regmap.FRAME_SIZE), (vm.redist_base, vm.nr_vcpus * regmap.REDIST_STRIDE)]
        if vm.has_its:
            windows.append((vm.its_base, uapi.KVM_VGIC_V3_ITS_SIZE))
        for base, size in windows:
            uc.mmio_map(base, size, self._gic_read, base, self._gic_write, base)
        uc.mmio_map(UART_BASE, UART_SIZE, self._uart_read, None, self._uart_write, None)
        uc.mmio_map(VIRTIO_BASE, VIRTIO_SIZE, self._virtio_read, None, self._virtio_write, None)
        # Unicorn's CPU has EL2 and EL3 with SCR_EL3.RW and HCR_EL2.RW clear,
        # which makes an ERET to EL1 an illegal return: say EL1 is AArch64
        # and non-secure, as it is under KVM.  HCE stays clear, so HVC at
        # EL1 is UNDEFINED in Unicorn and reaches the VMM.
        self._cp_write(SCR_EL3, self._cp_read(SCR_EL3) | SCR_NS | SCR_RW)
        self._cp_write(HCR_EL2, self._cp_read(HCR_EL2) | HCR_RW)
        self.reset_sctlr = self._cp_read(SCTLR_EL1)
        pfr0 = self._cp_read(ID_AA64PFR0_EL1) & ~(0xF << ID_AA64PFR0_GIC_SHIFT)
        self.vmm_regs = {MPIDR_EL1: self.vcpu.mpidr | (1 << 31), ID_AA64PFR0_EL1: pfr0 | (1 << ID_AA64PFR0_GIC_SHIFT)}
        self.bs: Any = _BlockState()
        if machine.block_hook == "c" and fast.raw and _c_block_hook is not None:
            # The common case of a block (count it, go on) in C, without
            # the GIL; _on_block only when there is more to do.
            self.bs = _c_block_hook.BlockHook(self._on_block, vm.memory, vm.ram_base, uc.emu_stop)
            fast.hook_c(self.bs, uc_mod, uc_mod.UC_HOOK_BLOCK)
            self.bs.read_pstate_with_unicorn()
            # MRS/MSR: a C entry calling _sysreg straight, without the
            # binding's wrappers.
            for insn, read in ((a64.UC_ARM64_INS_MRS, True), (a64.UC_ARM64_INS_MSR, False)):
                fast.hook_c(_c_block_hook.SysHook(self._sysreg, read, uc.emu_stop), uc_mod, uc_mod.UC_HOOK_INSN, insn)
        else:
            fast.hook_block(self._on_block, uc_mod)
            uc.hook_add(uc_mod.UC_HOOK_INSN, self._on_mrs, None, 1, 0, a64.UC_ARM64_INS_MRS)
            uc.hook_add(uc_mod.UC_HOOK_INSN, self._on_msr, None, 1, 0, a64.UC_ARM64_INS_MSR)
        uc.hook_add(uc_mod.UC_HOOK_INTR, self._on_intr)
        uc.hook_add(uc_mod.UC_HOOK_MEM_UNMAPPED, self._on_unmapped)
        self.PC, self.PSTATE, self.SP = a64.UC_ARM64_REG_PC, a64.UC_ARM64_REG_PSTATE, a64.UC_ARM64_REG_SP
        self.XZR = a64.UC_ARM64_REG_XZR
        self.X = [a64.UC_ARM64_REG_X0 + n for n in range(4)]
        #: Powered on (PSCI), blocked in WFI.
        self.on = False
        self.blocked = False
        self.slice_end = 0
        self._irq_line: str | None = None
        self.stop: str | None = None
        self.fault: str | None = None
        self.iabt: int | None = None

    # ------------------------------------------- state the block hook shares
    # (in the C hook's state when it is used: vgic._core.blockhook)
    insns = _shared("insns", "Instructions this vCPU executed.")
    check_at = _shared("check_at", "The instruction count at which the block hook syncs time / ends the slice.")
    blk_start = _shared("blk_start", "The current block (instructions past a hook that redirects are uncounted).")
    blk_end = _shared("blk_end", "The end of the current block.")
    spins = _shared("spins", "Spin-wait blocks entered this slice.")
    may_yield = _shared("may_yield", "Others wait for a turn: a spin-wait gives this one up.")

    @property
    def irq_line(self) -> str | None:
        """What the CPU interface signals: "irq", "fiq" or None (while entered)."""
        return self._irq_line

    @irq_line.setter
    def irq_line(self, value: str | None) -> None:
        self._irq_line = value
        self.bs.irq = value is not None
        self.bs.irq_mask = PSTATE_F if value == "fiq" else PSTATE_I

    # ------------------------------------------------------------ helpers
    def _insn(self, pc: int) -> int:
        # The instruction at pc.  Unicorn reads guest-physical memory, so
        # this holds while code runs where VA == PA (the MMU off, or an
        # identity map as kvm-unit-tests builds).
        return int.from_bytes(bytes(self.uc.mem_read(pc, 4)), "little")

    def _el(self) -> int:
        return (self.rd32(self.PSTATE) >> PSTATE_EL_SHIFT) & 3

    def _uncount(self, resume: int) -> None:
        # A hook sends execution elsewhere: the rest of the current block
        # (from `resume` on), counted when the block started, never runs.
        if self.blk_start <= resume < self.blk_end:
            self.insns -= (self.blk_end - resume) >> 2
            self.blk_end = resume

    def refresh(self) -> None:
        """Ask the CPU interface what it signals now (one call): the vIRQ or
        vFIQ to take, and the maintenance interrupt.  The latter is the
        host's: ICH_HCR_EL2.En with a non-zero ICH_MISR_EL2 raises a PPI
        that KVM takes (IHI 0069 §12.4.7), so the vCPU exits and enters and
        its LRs are folded and flushed again (an EOI of a level interrupt to
        resample, a group just enabled, LRs to refill)."""
        v = self.vcpu
        sig = v.signals()
        if sig & ich.SIG_MAINT:
            self.m.stats.maintenance += 1
            v.exit()
            v.enter()
            sig = v.signals()
        self.irq_line = _LINES[sig & (ich.SIG_IRQ | ich.SIG_FIQ)]

    def power_on(self, pc: int, x0: int = 0) -> None:
        """Start the vCPU at ``pc`` with ``x0``, in the state KVM resets a
        vCPU to (EL1h, interrupts masked, MMU off)."""
        self.wr32(self.PSTATE, PSTATE_EL1H_MASKED)
        self._cp_write(SCTLR_EL1, self.reset_sctlr)      # also rebuilds Unicorn's cached EL state
        self.wr(self.X[0], x0 & _U64)
        self.wr(self.PC, pc)
        self.on = True
        self.blocked = False

    # ------------------------------------------------------ migration
    def save_cpu(self) -> dict[str, Any]:
        """What KVM_GET_ONE_REG would give of this vCPU beyond the library's
        parts: X0-X30, SP, PC, PSTATE, SP_EL0/SP_EL1 and the EL1 system
        registers of :data:`CPU_SYSREGS`, by name, plus the VMM's own
        ``on``/``blocked`` flags and instruction count.  V0-V31, FPSR and
        FPCR are not here: :meth:`Machine.save` puts them in the vCPU's
        FP part (``vcpu.fp``), whose one-regs a snapshot carries."""
        a, rd = self.a, self.rd
        out: dict[str, Any] = {f"X{n}": int(self.uc.reg_read(_xreg(a, n))) for n in range(31)}
        out.update(SP=rd(self.SP), PC=rd(self.PC), PSTATE=self.rd32(self.PSTATE),
                   SP_EL0=rd(a.UC_ARM64_REG_SP_EL0), SP_EL1=rd(a.UC_ARM64_REG_SP_EL1))
        out.update({name: self._cp_read(enc) for name, enc in CPU_SYSREGS.items()})
        out.update(on=self.on, blocked=self.blocked, insns=self.insns)
        return out

    def load_cpu(self, state: dict[str, Any]) -> None:
        """Put :meth:`save_cpu`'s registers into this vCPU's Unicorn
        instance (PSTATE first, as a CP write makes Unicorn rebuild its EL
        state; the live SP last, as PSTATE.SPSel picks which bank it is)."""
        a, wr = self.a, self.wr
        self.wr32(self.PSTATE, int(state["PSTATE"]))
        for name, enc in CPU_SYSREGS.items():
            self._cp_write(enc, int(state[name]))
        for n in range(31):
            self.uc.reg_write(_xreg(a, n), int(state[f"X{n}"]))
        wr(a.UC_ARM64_REG_SP_EL0, int(state["SP_EL0"]))
        wr(a.UC_ARM64_REG_SP_EL1, int(state["SP_EL1"]))
        wr(self.SP, int(state["SP"]))
        wr(self.PC, int(state["PC"]))
        self.on = bool(state["on"])
        self.insns = int(state["insns"])

    def fp_to_vcpu(self) -> None:
        """V0-V31, FPSR, FPCR from Unicorn into ``vcpu.fp`` (KVM_SET_ONE_REG
        of the core FP registers): Unicorn computes with them, the library
        holds them for a snapshot."""
        a = self.a
        data = bytearray()
        for n in range(32):
            data += int(self.uc.reg_read(a.UC_ARM64_REG_Q0 + n)).to_bytes(16, "little")
        data += int(self.uc.reg_read(a.UC_ARM64_REG_FPSR)).to_bytes(4, "little")
        data += int(self.uc.reg_read(a.UC_ARM64_REG_FPCR)).to_bytes(4, "little")
        self.vm.set_one_regs(_FP_IDS, np.frombuffer(bytes(data), dtype=np.uint8).reshape(1, -1), [self.id])

    def fp_from_vcpu(self) -> None:
        """The reverse of :meth:`fp_to_vcpu`, after a restore."""
        a = self.a
        data = self.vm.get_one_regs(_FP_IDS, [self.id])[0].tobytes()
        for n in range(32):
            self.uc.reg_write(a.UC_ARM64_REG_Q0 + n, int.from_bytes(data[16 * n:16 * n + 16], "little"))
        self.uc.reg_write(a.UC_ARM64_REG_FPSR, int.from_bytes(data[512:516], "little"))
        self.uc.reg_write(a.UC_ARM64_REG_FPCR, int.from_bytes(data[516:520], "little"))

    # -------------------------------------------------- exception entry
    def take_exception(self, pstate: int, elr: int, kind: int, esr: int | None = None) -> None:
        """AArch64.TakeException to EL1 (Arm ARM D1.10): SPSR_EL1 = PSTATE,
        ELR_EL1 = the preferred return address, PSTATE = EL1h with D, A, I,
        F set (NZCV kept), SP_EL1 selected, PC = VBAR_EL1 + the vector of
        the source (EL1 with SP0, EL1 with SPx, EL0) and kind."""
        a, rd, wr = self.a, self.rd, self.wr
        el = (pstate >> PSTATE_EL_SHIFT) & 3
        if el > 1:
            raise RunError(f"vCPU {self.id}: an exception at EL{el}: this VMM runs EL1 guests")
        if el == 0:
            source = VECTOR_LOWER_A64
        else:
            source = VECTOR_CURRENT_SPX if pstate & PSTATE_SP else VECTOR_CURRENT_SP0
        swap_sp = source != VECTOR_CURRENT_SPX
        sp0 = rd(self.SP) if swap_sp else 0
        self.wr32(self.PSTATE, (pstate & PSTATE_NZCV) | PSTATE_EL1H_MASKED)
        if swap_sp:
            # The live SP was SP_EL0; Unicorn keeps the other one banked.
            wr(a.UC_ARM64_REG_SP_EL0, sp0)
            wr(self.SP, rd(a.UC_ARM64_REG_SP_EL1))
        wr(a.UC_ARM64_REG_ELR_EL1, elr)
        if esr is not None:
            wr(a.UC_ARM64_REG_ESR_EL1, esr)
        # SPSR_EL1 has no register id of its own; a coprocessor-register
        # write is also what makes Unicorn recompute its cached EL state
        # (a PSTATE write alone leaves it at the old EL).
        self._cp_write(SPSR_EL1, pstate)
        wr(self.PC, rd(a.UC_ARM64_REG_VBAR_EL1) + source + kind)

    def _sync(self, elr: int, ec: int, iss: int = 0) -> None:
        self.m.stats.sync_exceptions += 1
        self.take_exception(self.rd32(self.PSTATE), elr, VECTOR_SYNC,
                            (ec << ESR_EC_SHIFT) | ESR_IL | (iss & 0x1FF_FFFF))

    def _deliver(self, pc: int) -> bool:
        # Take the signalled interrupt with return address pc, unless PSTATE masks it.
        pstate = self.rd32(self.PSTATE)
        if self.irq_line == "irq":
            if pstate & PSTATE_I:
                return False
            self.m.stats.irqs += 1
            self.take_exception(pstate, pc, VECTOR_IRQ)
        else:
            if pstate & PSTATE_F:
                return False
            self.m.stats.fiqs += 1
            self.take_exception(pstate, pc, VECTOR_FIQ)
        return True

    def _resume(self, pc: int) -> None:
        # Continue at pc, or in the interrupt vector if one is now taken.
        if self.irq_line is None or not self._deliver(pc):
            self.wr(self.PC, pc)

    # ------------------------------------------------------------- hooks
    def _on_block(self, addr: int, size: int) -> None:
        if self.insns >= self.check_at and self._checkpoint(addr):
            return
        if self.irq_line is not None and self._deliver(addr):
            return
        if self.may_yield and self._spins(addr, size):
            return
        self.insns += size >> 2
        self.blk_start, self.blk_end = addr, addr + size

    def _spins(self, addr: int, size: int) -> bool:
        # A block holding YIELD or WFE is a spin-wait (cpu_relax, a
        # spinlock): the second time this slice enters one, the vCPU gives
        # its turn to the others, as QEMU's round-robin TCG does on the
        # same hints - it waits for another vCPU, which must run first.
        spin = self.m._spin_blocks.get((addr, size))
        if spin is None:
            code = bytes(self.uc.mem_read(addr, size))
            words = {int.from_bytes(code[i:i + 4], "little") for i in range(0, size - size % 4, 4)}
            spin = bool(words & _SPIN_HINTS)
            self.m._spin_blocks[(addr, size)] = spin
        if not spin:
            return False
        self.spins += 1
        if self.spins < 2:
            return False
        self.m.stats.yields += 1
        self.wr(self.PC, addr)
        self.stop = "slice"
        self.uc.emu_stop()
        return True

    def _checkpoint(self, addr: int) -> bool:
        # Every `quantum` instructions: move the counter; at the slice's
        # end, stop before the block at addr (True).
        m = self.m
        fired = m._sync_time()
        if fired:
            self.refresh()
        # A timer that fired since the last look (here, or in a timer
        # register access) may have woken a blocked vCPU.
        fired, m._fired = fired or m._fired, False
        events = m.vm.irq_events
        if (fired or events != m._events_seen) and m._wakes_other(self):
            # Another vCPU waits in WFI for what just became pending (an
            # IPI, an SPI, its timer): KVM would kick it awake on its own
            # physical CPU; here it needs its turn, so the slice ends.
            self.slice_end = self.insns
        m._events_seen = events
        if m.pause_reason is not None:
            self.slice_end = self.insns
        if self.insns >= self.slice_end:
            self.wr(self.PC, addr)
            self.stop = "slice"
            self.uc.emu_stop()
            return True
        self.check_at = min(self.slice_end, self.insns + self.m.quantum)
        return False

    def _on_mrs(self, uc: Any, rt: int, cp: Any, _: Any) -> bool:
        return self._sys_guarded(rt, cp, True)

    def _on_msr(self, uc: Any, rt: int, cp: Any, _: Any) -> bool:
        return self._sys_guarded(rt, cp, False)

    def _sys_guarded(self, rt: int, cp: Any, read: bool) -> bool:
        # The binding's MRS/MSR hooks: an exception is kept for emu_start's
        # caller and the run stopped, as the C entry does (the binding would
        # hand ctypes a None it cannot convert).
        try:
            return self._sysreg(rt, (cp.op0, cp.op1, cp.crn, cp.crm, cp.op2), cp.val, read)
        except BaseException as exc:
            if self.fast.error is None:
                self.fast.error = exc
            self.uc.emu_stop()
            return False

    def _sysreg(self, rt: int, enc: tuple[int, int, int, int, int], value: int, read: bool) -> bool:
        # An MRS (read) or MSR of the register `enc` with Rt `rt` (Unicorn's
        # register id) and, for an MSR, the value written; True if handled.
        row = self.m._vgic_regs.get(enc)
        if row is None:
            if read and enc in self.vmm_regs:
                return self._vmm_sysreg(rt, enc)
            return False                      # Unicorn's own register
        # Unicorn defines the generic timer's registers (CNT*_EL0) and
        # translates their MRS/MSR inline: the rest of the translation
        # block runs after the hook, so the hook must not move PC (the block
        # would run again from there) and anything it takes into the guest
        # waits for the next block.  It defines no GICv3 CPU interface: an
        # ICC_* access ends the block where Unicorn would raise its UNDEF,
        # so PC is the hook's to set.
        inline = row.owner == sysregs.ARCH_TIMER
        pc = self.rd(self.PC)
        stats = self.m.stats
        if not self._el0_allowed(row):
            if inline:
                return False                   # Unicorn applies CNTKCTL_EL1 and UNDEFs it itself
            self._uncount(pc + 4)
            self._sync(pc, EC_UNKNOWN)
            return True
        fired = row.owner == sysregs.ARCH_TIMER and self.m._sync_time()
        v = self.vcpu
        trapped = row.trap == sysregs.KVM or (row.trap == sysregs.TDIR and self._hcr() & ich.HCR_TDIR)
        try:
            if read:
                value = v.sysreg_read(row.name)
                if rt != self.XZR:
                    self.wr(rt, value)
            else:
                v.sysreg_write(row.name, value)
        except UndefinedInstruction:
            if inline:
                return False                   # the architecture's rule, as Unicorn applies it
            # KVM injects an UNDEF (kvm_inject_undefined: EC 0x00).
            self._uncount(pc + 4)
            self._sync(pc, EC_UNKNOWN)
            return True
        stats.sysreg_accesses += 1
        changed = fired or not read or row.name in _ACKS
        if trapped:
            # Trapped to EL2 and emulated by KVM: the vCPU left the guest.
            stats.sysreg_traps += 1
            v.exit()
            v.enter()
        if changed or trapped or row.name in _MAINTENANCE_SOURCES:
            self.refresh()
        if not inline:
            self._uncount(pc + 4)
            self._resume(pc + 4)
        return True

    def _hcr(self) -> int:
        return int(self.vcpu.hyp.read("ICH_HCR_EL2"))

    def _el0_allowed(self, row: sysregs.SysReg) -> bool:
        # At EL0 only the CNT*_EL0 registers CNTKCTL_EL1 opens are accessible.
        if self._el() != 0:
            return True
        if row.owner != sysregs.ARCH_TIMER:
            return False
        kctl = self._cp_read(CNTKCTL_EL1)
        name = row.name
        if name == "CNTFRQ_EL0":
            return bool(kctl & (CNTKCTL_EL0PCTEN | CNTKCTL_EL0VCTEN))
        if name == "CNTPCT_EL0":
            return bool(kctl & CNTKCTL_EL0PCTEN)
        if name == "CNTVCT_EL0":
            return bool(kctl & CNTKCTL_EL0VCTEN)
        return bool(kctl & (CNTKCTL_EL0VTEN if name.startswith("CNTV_") else CNTKCTL_EL0PTEN))

    def _vmm_sysreg(self, rt: int, enc: tuple[int, int, int, int, int]) -> bool:
        # MPIDR_EL1 and ID_AA64PFR0_EL1 are Unicorn's too (translated
        # inline, see _sysreg): only the value changes, PC stays Unicorn's.
        if self._el() == 0:
            return False                       # Unicorn UNDEFs an EL1 register at EL0
        self.m.stats.vmm_sysregs += 1
        if rt != self.XZR:
            self.wr(rt, self.vmm_regs[enc])
        return True

    def _on_intr(self, uc: Any, intno: int, _: Any) -> None:
        pc = self.rd(self.PC)
        if intno == EXCP_UDEF:
            # The faulting instruction is at pc.  HVC is UNDEFINED in
            # Unicorn (SCR_EL3.HCE is clear): it is the guest's PSCI call.
            self._uncount(pc + 4)
            insn = self._insn(pc)
            if insn & INSN_EXC_MASK == INSN_HVC and self._el() == 1:
                self._psci(pc + 4)
            elif self._el() == 0 and self._timer_trap(insn):
                # CNTKCTL_EL1 closed the timer register to EL0: a trapped
                # system-register access (EC 0x18), not an UNDEF.
                self._sync(pc, EC_SYSREG, _sysreg_iss(insn))
            else:
                self._sync(pc, EC_UNKNOWN)     # HVC at EL0 is UNDEFINED too
        elif intno == EXCP_SMC:
            self._uncount(pc)                  # pc is already past the SMC
            if self._el() == 0:
                self._sync(pc - 4, EC_UNKNOWN)
            else:
                self._psci(pc)
        elif intno == EXCP_SWI:
            self._uncount(pc)
            # The preferred return address of an SVC is the next instruction.
            self._sync(pc, EC_SVC64, (self._insn(pc - 4) >> 5) & 0xFFFF)
        elif intno == EXCP_BKPT:
            self._uncount(pc + 4)
            self._sync(pc, EC_BRK64, (self._insn(pc) >> 5) & 0xFFFF)
        else:
            what = _EXCP_NAMES.get(intno, f"exception {intno}")
            raise RunError(f"vCPU {self.id}: {what} at pc {pc:#x}: Unicorn 2.1 reports no syndrome or "
                           f"fault address, so this VMM cannot take it into the guest")

    def _timer_trap(self, insn: int) -> bool:
        # An MRS/MSR (register form) of a generic timer register.
        if insn & INSN_SYSREG_MASK != INSN_SYSREG:
            return False
        enc = ((insn >> 19) & 3, (insn >> 16) & 7, (insn >> 12) & 0xF, (insn >> 8) & 0xF, (insn >> 5) & 7)
        row = self.m._vgic_regs.get(enc)
        return row is not None and row.owner == sysregs.ARCH_TIMER

    def _on_unmapped(self, uc: Any, access: int, addr: int, size: int, value: int, _: Any) -> bool:
        if access == UC_MEM_FETCH_UNMAPPED:
            # An instruction fetch from no memory: KVM cannot emulate it and
            # injects an external instruction abort (inject_abt64), FAR_EL1
            # the address.  Unicorn must stop first; run_slice takes it.
            self.iabt = addr
            return False
        self.fault = f"a {size}-byte access (Unicorn access type {access}) at {addr:#x}, outside RAM and the devices"
        return False

    def _take_iabt(self, addr: int) -> None:
        pstate = self.rd32(self.PSTATE)
        ec = EC_IABT_LOW if (pstate >> PSTATE_EL_SHIFT) & 3 == 0 else EC_IABT_CUR
        self._cp_write(FAR_EL1, addr)
        self.m.stats.sync_exceptions += 1
        self.take_exception(pstate, addr, VECTOR_SYNC, (ec << ESR_EC_SHIFT) | ESR_IL | FSC_EXTABT)
        if self.rd(self.PC) == addr:
            # The abort's own vector is where the fetch failed (VBAR_EL1
            # outside RAM): the guest would take it forever without running
            # an instruction, which no instruction limit can end.
            raise RunError(f"vCPU {self.id}: an instruction abort at its own exception vector {addr:#x} "
                           f"(VBAR_EL1 {self.rd(self.a.UC_ARM64_REG_VBAR_EL1):#x} is not in RAM)")

    # -------------------------------------------------------------- MMIO
    def _gic_read(self, uc: Any, offset: int, size: int, base: int) -> int:
        v = self.vcpu
        v.exit()
        try:
            value = self.vm.mmio_read(base + offset, size, self.id)
        finally:
            v.enter()
        self.m.stats.mmio_exits += 1
        self.refresh()
        return value

    def _gic_write(self, uc: Any, offset: int, size: int, value: int, base: int) -> None:
        v = self.vcpu
        v.exit()
        try:
            self.vm.mmio_write(base + offset, size, value & ((1 << (8 * size)) - 1), self.id)
        finally:
            v.enter()
        self.m.stats.mmio_exits += 1
        self.refresh()

    def _user_exit(self) -> None:
        # KVM_EXIT_MMIO: KVM_RUN returns to the VMM (exit, put) ...
        self.vcpu.exit()
        self.vcpu.put()
        self.m.stats.user_exits += 1

    def _user_entry(self) -> None:
        # ... and the next KVM_RUN loads and enters the vCPU again.
        self.vcpu.enter()
        self.refresh()

    def _uart_read(self, uc: Any, offset: int, size: int, _: Any) -> int:
        self._user_exit()
        try:
            return self.m.uart.read(offset)
        finally:
            self._user_entry()

    def _virtio_read(self, uc: Any, offset: int, size: int, _: Any) -> int:
        # An empty virtio-mmio transport (DeviceID 0): KVM_EXIT_MMIO to the VMM.
        self._user_exit()
        try:
            return {0x000: VIRTIO_MAGIC, 0x004: VIRTIO_VERSION}.get(offset & 0x1FF, 0)
        finally:
            self._user_entry()

    def _virtio_write(self, uc: Any, offset: int, size: int, value: int, _: Any) -> None:
        self._user_exit()
        self._user_entry()

    def _uart_write(self, uc: Any, offset: int, size: int, value: int, _: Any) -> None:
        self._user_exit()
        try:
            self.m.uart.write(offset, value)
        finally:
            self._user_entry()

    # -------------------------------------------------------------- PSCI
    def _psci(self, next_pc: int) -> None:
        """A PSCI call (SMC Calling Convention: function ID in W0, arguments
        in X1-X3, result in X0), handled as KVM's kvm_psci_call does."""
        m = self.m
        m.stats.psci_calls += 1
        # The HVC/SMC trap is a guest exit in KVM.
        self.vcpu.exit()
        self.vcpu.enter()
        x0, x1, x2, x3 = (self.rd(r) for r in self.X)
        fn = x0 & 0xFFFF_FFFF
        if fn in (PSCI_SYSTEM_OFF, PSCI_SYSTEM_RESET, PSCI_CPU_OFF):
            self.wr(self.PC, next_pc)
            if fn == PSCI_CPU_OFF:
                self.stop = "cpu_off"
            else:
                m.stop_reason = STOP_SYSTEM_OFF if fn == PSCI_SYSTEM_OFF else STOP_SYSTEM_RESET
                self.stop = m.stop_reason
            self.uc.emu_stop()
            return
        if fn == PSCI_VERSION:
            ret = PSCI_VERSION_1_1
        elif fn == PSCI_FEATURES:
            ret = PSCI_RET_SUCCESS if (x1 & 0xFFFF_FFFF) in _PSCI_FUNCTIONS else PSCI_RET_NOT_SUPPORTED
        elif fn == PSCI_MIGRATE_INFO_TYPE:
            ret = PSCI_TOS_NOT_PRESENT_MP
        elif fn in (PSCI_CPU_ON_32, PSCI_CPU_ON_64):
            ret = m._cpu_on(x1, x2, x3)
        elif fn in (PSCI_AFFINITY_INFO_32, PSCI_AFFINITY_INFO_64):
            target = self.vm.vcpu_by_mpidr(x1) if x2 == 0 else None
            ret = PSCI_RET_INVALID_PARAMS if target is None else (0 if m.cpus[target.id].on else 1)
        else:
            ret = PSCI_RET_NOT_SUPPORTED
        self.wr(self.X[0], ret & _U64)
        self.refresh()
        self._resume(next_pc)

    # --------------------------------------------------------------- run
    def run_slice(self, budget: int | None) -> str:
        """Enter the guest and run until a WFI, a stop, or ``budget``
        instructions; the reason: "wfi", "slice", "cpu_off" or the machine's."""
        v = self.vcpu
        if not v.running:
            v.enter()
        self.refresh()
        pc = self.rd(self.PC)
        if self.irq_line is not None and self._deliver(pc):
            pc = self.rd(self.PC)
        self.slice_end = self.insns + budget if budget is not None else 1 << 62
        self.may_yield = budget is not None and sum(1 for c in self.m.cpus if c.on and not c.blocked) > 1
        self.spins = 0
        self.check_at = min(self.slice_end, self.insns + self.m.quantum)
        self.stop = None
        self.fault = None
        self.iabt = None
        self.blk_start = self.blk_end = 0
        try:
            self.fast.emu_start(pc)
        except self.m._uc[0].UcError as exc:
            if self.iabt is not None:
                # Unicorn names the physical address; the abort reports the
                # virtual one, where PC stands (ELR and FAR alike).
                self._take_iabt(self.rd(self.PC))
                return "slice"
            what = self.fault if self.fault is not None else f"Unicorn stopped: {exc}"
            raise RunError(f"vCPU {self.id}: {what} (pc {self.rd(self.PC):#x})") from exc
        if self.stop is not None:
            return self.stop
        pc = self.rd(self.PC)
        if self._insn(pc - 4) == INSN_WFI:
            return STOP_WFI
        raise RunError(f"vCPU {self.id}: Unicorn stopped at pc {pc:#x} for no reason this VMM knows")

    def wfi(self) -> None:
        """The guest executed WFI: go on if the CPU interface signals an
        interrupt (masked by PSTATE or not, it ends a WFI), else block as
        KVM's kvm_vcpu_wfi does (the background timer is armed)."""
        self.m.stats.wfis += 1
        self.m._sync_time()
        # KVM traps WFI (HCR_EL2.TWI): an exit, which folds the LRs, then
        # kvm_vcpu_wfi puts the vCPU and halts it unless it is runnable
        # (kvm_vcpu_check_block: an interrupt pending for it, or the
        # background timer, armed by the put, already expired).
        v = self.vcpu
        v.exit()
        v.block()
        self.blocked = True
        self.m.stats.blocks += 1
        self.try_wake()

    def try_wake(self) -> bool:
        """A blocked vCPU: wake it if it is runnable (``vcpu.runnable()``,
        which loads nothing); it is then loaded and entered."""
        v = self.vcpu
        if not v.runnable():
            return False
        v.unblock()
        v.enter()
        self.refresh()
        self.blocked = False
        return True

    def leave(self, put: bool) -> None:
        """Out of the guest (exit, and put when KVM_RUN returns)."""
        if self.vcpu.running:
            self.vcpu.exit()
        if put and not self.blocked:
            self.vcpu.put()


#: YIELD and WFE (Arm ARM C6.2): the hints of a spin-wait.
_SPIN_HINTS = frozenset({0xD503_203F, 0xD503_205F})
#: Cpu.irq_line by the vIRQ/vFIQ bits of ``vcpu.signals()`` (one group at a time).
_LINES: tuple[str | None, ...] = (None, "irq", "fiq", "irq")
#: The acknowledges: reads that change what the CPU interface signals.
_ACKS = frozenset({"ICC_IAR0_EL1", "ICC_IAR1_EL1"})
#: The accesses after which ICH_MISR_EL2 can have become non-zero: an
#: acknowledge (NP), an EOI or deactivation (EOI, U, LRENP), a group
#: enable (VGrp0E/D, VGrp1E/D).
_MAINTENANCE_SOURCES = _ACKS | frozenset({"ICC_EOIR0_EL1", "ICC_EOIR1_EL1", "ICC_DIR_EL1",
                                          "ICC_IGRPEN0_EL1", "ICC_IGRPEN1_EL1"})


class Machine:
    """A QEMU-``virt``-shaped guest machine on Unicorn with a :class:`vgic.VM`
    as its interrupt controller and timers.

    ``smp`` vCPUs (one Unicorn instance each, ``slice_insns`` instructions
    per turn), ``ram_size`` bytes of RAM at ``ram_base`` shared between the
    VM (``vm.memory``) and Unicorn, an ITS unless ``its=False``; any other
    keyword goes to :class:`vgic.VM` (``backend``, ``timer_policy``,
    ``nr_lrs``, ...).  The counter advances ``ticks_per_insn`` ticks per
    executed instruction (``clock="insns"``, deterministic) or with the
    host's monotonic clock (``clock="host"``: what the guest times is wall
    time, as for kvm-unit-tests' micro-bench), synced every ``quantum``
    instructions.  UART output is kept in ``uart.output`` and echoed to
    ``console`` (None: not echoed).  ``cpu_model`` is a Unicorn
    ``UC_CPU_ARM64_*`` value (default: Unicorn's, a Cortex-A72).
    ``block_hook="c"`` (the default) runs the block hook's common case and
    the MRS/MSR hooks' entry in C (:mod:`vgic._core.blockhook`) when the core
    is built; ``"python"`` keeps them all in Python, the reference.
    ``options`` records these arguments: :func:`vgic.boot.restore` builds a
    machine's twin from them.
    """

    def __init__(self, smp: int = 1, *, ram_size: int = DEFAULT_RAM_SIZE, ram_base: int = DEFAULT_RAM_BASE,
                 nr_irqs: int = 256, its: bool = True, ticks_per_insn: int = 1, quantum: int = 1024,
                 slice_insns: int = 20_000, console: TextIO | None = None, cpu_model: int | None = None,
                 clock: str = "insns", block_hook: str = "c", **vm_options: Any) -> None:
        self._uc = _unicorn()
        if ram_size <= 0 or ram_size % mmap.PAGESIZE:
            raise ValueError(f"ram_size {ram_size:#x} must be a positive multiple of the page size")
        if block_hook not in ("c", "python"):
            raise ValueError(f"block_hook must be 'c' or 'python', not {block_hook!r}")
        #: "c": the block hook's common case in C (vgic._core.blockhook) when
        #: the core is built and the binding's internals are reachable;
        #: "python": the Python hook alone (the reference).
        self.block_hook = block_hook
        if clock not in ("insns", "host"):
            raise ValueError(f"clock must be 'insns' or 'host', not {clock!r}")
        #: "insns": the counter moves ticks_per_insn per instruction
        #: (deterministic); "host": with the host's monotonic clock.
        self.clock = clock
        self._clock0 = time.perf_counter()
        self._clock_ticks = 0
        for name, value in (("ticks_per_insn", ticks_per_insn), ("quantum", quantum), ("slice_insns", slice_insns)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        # Anonymous, page-aligned host memory: the VM's RAM and Unicorn's.
        #: What this machine was built with (a migration builds its twin).
        self.options: dict[str, Any] = dict(
            smp=smp, ram_size=ram_size, ram_base=ram_base, nr_irqs=nr_irqs, its=its, ticks_per_insn=ticks_per_insn,
            quantum=quantum, slice_insns=slice_insns, cpu_model=cpu_model, clock=clock, block_hook=block_hook,
            **vm_options)
        self._ram = mmap.mmap(-1, ram_size)
        self.vm = VM(nr_vcpus=smp, nr_irqs=nr_irqs, its=its, memory=self._ram, ram_base=ram_base, **vm_options)
        self.ticks_per_insn = ticks_per_insn
        self.quantum = quantum
        self.slice_insns = slice_insns
        self.cpu_model = cpu_model
        self.uart = Pl011(console)
        self.stats = RunStats()
        self.stop_reason: str | None = None
        #: Set by pause(): what run() returns, the vCPUs staying on.
        self.pause_reason: str | None = None
        self._current: _Cpu | None = None
        self._others_insns = 0
        # vm.irq_events when the running vCPU last looked for others to wake,
        # and whether a timer fired since.
        self._events_seen = 0
        self._fired = False
        # (address, size) of a translation block -> whether it spin-waits.
        self._spin_blocks: dict[tuple[int, int], bool] = {}
        #: What the last run() returned.
        self.last_reason: str | None = None
        # The system registers the library serves: the vGICv3's and the
        # timers' rows a guest can reach (the FP rows stay Unicorn's).
        self._vgic_regs: dict[tuple[int, int, int, int, int], sysregs.SysReg] = {
            r.encoding: r for r in sysregs.TABLE
            if r.owner in (sysregs.VGIC_V3, sysregs.ARCH_TIMER) and r.trap != sysregs.EL2}
        self._synced = 0
        self.cpus = [_Cpu(self, i) for i in range(smp)]

    # ------------------------------------------------------------ loading
    def load(self, image: bytes | bytearray | memoryview | str | os.PathLike[str], addr: int | None = None) -> int:
        """Copy ``image`` (bytes or a file path) into RAM at ``addr``
        (default RAM + 2 MiB); returns the address."""
        data = bytes(image) if isinstance(image, (bytes, bytearray, memoryview)) else pathlib.Path(image).read_bytes()
        vm = self.vm
        if addr is None:
            addr = vm.ram_base + DEFAULT_LOAD_OFFSET
        off = addr - vm.ram_base
        if off < 0 or off + len(data) > vm.memory.size:
            raise ValueError(f"{len(data)} bytes at {addr:#x} do not fit in RAM "
                             f"{vm.ram_base:#x}+{vm.memory.size:#x}")
        vm.memory[off:off + len(data)] = memoryview(data)
        for cpu in self.cpus:
            # Written behind Unicorn's back: drop what it translated there.
            cpu.uc.ctl_remove_cache(addr, addr + max(len(data), 1))
        return addr

    def start(self, pc: int, x0: int = 0, vcpu: int = 0) -> None:
        """Power on ``vcpu`` at ``pc`` with ``x0`` (a device tree's address,
        by the arm64 boot protocol); the others wait for PSCI CPU_ON."""
        self.cpus[vcpu].power_on(pc, x0)

    # ------------------------------------------------------- interrupts
    def set_irq_level(self, intid: int, level: bool, vcpu: int | None = None) -> None:
        """``vm.set_irq_level`` (KVM_IRQ_LINE) from a device of the VMM,
        with KVM's kick of a vCPU in the guest so its LRs see it."""
        seen = self.vm.irq_events
        self.vm.set_irq_level(intid, level, vcpu)
        self._kick(seen)

    def signal_msi(self, device_id: int, event_id: int) -> bool:
        """``vm.signal_msi`` (KVM_SIGNAL_MSI) from a device of the VMM, with the kick."""
        seen = self.vm.irq_events
        delivered = self.vm.signal_msi(device_id, event_id)
        self._kick(seen)
        return delivered

    def _kick(self, seen: int) -> None:
        # vgic_queue_irq_unlock kicks the target of an interrupt that became
        # deliverable (vm.irq_events moved): one in the guest exits and
        # enters; a blocked one is found runnable by the run loop.
        if self.vm.irq_events == seen:
            return
        for cpu in self.cpus:
            if cpu.vcpu.running:
                cpu.vcpu.kick()
                cpu.refresh()

    def _wakes_other(self, cur: _Cpu) -> bool:
        return any(c is not cur and c.on and c.blocked and c.vcpu.runnable() for c in self.cpus)

    def pause(self, reason: str = STOP_PAUSED) -> None:
        """From a device callback (the UART's ``on_line``, say): stop the
        executing vCPU at its next block boundary; :meth:`run` returns
        ``reason`` with every vCPU as it was, and a later run goes on."""
        self.pause_reason = reason
        cpu = self._current
        if cpu is not None:
            # Stopped at the next block boundary (the block hook's
            # checkpoint): Unicorn stopped inside an MMIO callback resumes
            # at the access, which would then run twice.
            cpu.check_at = 0

    def _cpu_on(self, mpidr: int, entry: int, context: int) -> int:
        target = self.vm.vcpu_by_mpidr(mpidr)
        if target is None:
            return PSCI_RET_INVALID_PARAMS
        cpu = self.cpus[target.id]
        if cpu.on:
            return PSCI_RET_ALREADY_ON
        cpu.power_on(entry, context)
        cur = self._current
        if cur is not None:
            # The caller ran alone, without a slice limit: from now on it
            # takes turns with the new vCPU.
            cur.slice_end = min(cur.slice_end, cur.insns + self.slice_insns)
            cur.check_at = min(cur.check_at, cur.slice_end)
        return PSCI_RET_SUCCESS

    # --------------------------------------------------------------- time
    def _sync_time(self) -> bool:
        """Move the counter to the instructions executed so far; True if a
        timer event fired on the way."""
        cur = self._current
        # While a vCPU runs only its count moves: the others' sum is kept.
        total = self._others_insns + cur.insns if cur is not None else sum(c.insns for c in self.cpus)
        delta = total - self._synced
        if delta <= 0:
            return False
        self._synced = total
        if self.clock == "host":
            # The host's clock: what a guest measures is wall-clock time.
            ticks = int((time.perf_counter() - self._clock0) * self.vm.cntfrq) - self._clock_ticks
            if ticks <= 0:
                return False
            self._clock_ticks += ticks
        else:
            ticks = delta * self.ticks_per_insn
        fired = bool(self.vm.advance(ticks))
        self._fired = self._fired or fired
        return fired

    def next_timer_event(self) -> int | None:
        """The counter value at which the next armed timer event (a blocked
        vCPU's background timer, an emulated physical timer) fires, or None."""
        return self.vm.next_timer_event()

    def _idle(self) -> bool:
        # Every powered-on vCPU is blocked: jump the counter to the next
        # timer event; False if there is none (only an outside event helps).
        at = self.next_timer_event()
        if at is None:
            return False
        ticks = max(at - self.vm.counter, 0)
        self.stats.idle_ticks += ticks
        self.vm.advance(ticks)
        return True

    # ---------------------------------------------------------------- run
    def run(self, max_insns: int | None = None) -> str:
        """Run the guest until it stops; the reason: ``"system_off"`` or
        ``"system_reset"`` (PSCI), ``"wfi"`` (every vCPU waits for an
        interrupt and no timer will raise one: inject one and run again),
        ``"halted"`` (every vCPU is off), ``"limit"`` (``max_insns`` more
        instructions ran).  The vCPUs are out of the guest and put when it
        returns, as after KVM_RUN."""
        if not any(c.on for c in self.cpus):
            raise RunError("no vCPU is powered on: call start() first")
        stats = self.stats
        limit = None if max_insns is None else stats.instructions + max_insns
        self.stop_reason = None
        t0 = time.perf_counter()
        reason: str | None = None
        current: _Cpu | None = None
        try:
            while reason is None:
                ran = False
                for cpu in self.cpus:
                    if not cpu.on or (cpu.blocked and not cpu.vcpu.runnable()):
                        continue
                    if current is not None and current is not cpu:
                        current.leave(put=True)          # preempted: vcpu_put at sched-out
                    current = cpu
                    if cpu.blocked:
                        cpu.try_wake()
                    runnable = sum(1 for c in self.cpus if c.on and not c.blocked)
                    budget = self.slice_insns if runnable > 1 else None
                    if limit is not None:
                        left = limit - stats.instructions
                        budget = left if budget is None else min(budget, left)
                    before = cpu.insns
                    self._current = cpu
                    self._others_insns = sum(c.insns for c in self.cpus if c is not cpu)
                    try:
                        why = cpu.run_slice(budget)
                    finally:
                        self._current = None
                    stats.instructions += cpu.insns - before
                    self._sync_time()
                    ran = True
                    if why == STOP_WFI:
                        cpu.wfi()
                    elif why == "cpu_off":
                        cpu.leave(put=True)
                        cpu.on = False
                    if self.stop_reason is not None:
                        reason = self.stop_reason
                        break
                    if self.pause_reason is not None:
                        reason, self.pause_reason = self.pause_reason, None
                        break
                    if limit is not None and stats.instructions >= limit:
                        reason = STOP_LIMIT
                        break
                if reason is None and not ran:
                    if not any(c.on for c in self.cpus):
                        reason = STOP_HALTED
                    elif not self._idle():
                        reason = STOP_WFI
        finally:
            for cpu in self.cpus:
                cpu.leave(put=True)
                if self.stop_reason is not None:
                    cpu.on = False           # the system is off (or to be reset): start() again
            stats.seconds += time.perf_counter() - t0
        self.last_reason = reason
        return reason

    def report(self) -> str:
        """The run's counts and rates (:meth:`RunStats.summary`)."""
        return self.stats.summary()


def run_image(path: str, *, smp: int = 1, load_addr: int | None = None, dtb: str | None = None,
              max_insns: int | None = None, console: TextIO | None = None, **options: Any) -> Machine:
    """Load a flat binary (and a device tree at the start of RAM, passed
    in X0), start vCPU 0 at its first byte and run it until it stops
    (``machine.last_reason``); UART output goes to ``console`` and
    ``machine.uart.output``.  Other keywords go to :class:`Machine`."""
    m = Machine(smp, console=console, **options)
    x0 = 0
    if dtb is not None:
        x0 = m.load(dtb, m.vm.ram_base)
    entry = m.load(path, load_addr)
    m.start(entry, x0)
    m.run(max_insns)
    return m


__all__ = ["Machine", "Pl011", "RunStats", "RunError", "run_image", "UART_BASE", "VIRTIO_BASE", "DEFAULT_LOAD_OFFSET",
           "CPU_SYSREGS", "STOP_SYSTEM_OFF", "STOP_SYSTEM_RESET", "STOP_WFI", "STOP_LIMIT", "STOP_HALTED",
           "STOP_PAUSED"]
