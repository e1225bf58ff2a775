"""The VM: guest RAM, an MMIO bus, vCPUs, and the parts that make the
machine (:data:`PARTS`, in KVM's order).

Thread safety: a VM and everything reachable from it (its vCPUs, parts,
kernels and records) is for one thread at a time, as a KVM VM's ioctls on
one vCPU are.  The kernels hold the GIL while they read Python-visible
arrays, so sharing a VM between threads cannot crash the process, but
interleaved calls have no defined order; use one thread per VM or a lock.
"""
from __future__ import annotations

import errno
import functools
import operator
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np

from vgic import _backend, fpregs, gtimer, ich, regmap, snapshot, sysregs, topology, uapi
from vgic.batchargs import value_array
from vgic.errors import KvmError, StateError, UndefinedInstruction, VgicError
from vgic.fpsimd import FpSimd
from vgic.ich import U64
from vgic.its import Its
from vgic.part import Part, reg_size
from vgic.snapshot import Snapshot
from vgic.timer import ArchTimer
from vgic.topology import default_mpidr
from vgic.vgic_v3 import VgicV3

#: The parts of every VM, in KVM's order (kvm_arch_vcpu_load(): the vgic,
#: then the timers, then the FP/SVE state).  A new device or CPU feature is
#: a new row here and a new module (see :mod:`vgic.part`).
PARTS: tuple[type[Part], ...] = (VgicV3, Its, ArchTimer, FpSimd)

# QEMU `virt` board layout, so traces recorded from real guests replay unchanged.
DEFAULT_DIST_BASE = 0x0800_0000
DEFAULT_ITS_BASE = 0x0808_0000
DEFAULT_REDIST_BASE = 0x080A_0000
DEFAULT_RAM_BASE = 0x4000_0000
DEFAULT_RAM_SIZE = 64 << 20
DEFAULT_NR_IRQS = 256          # KVM's default when userspace never sets NR_IRQS
MAX_IPA = 1 << 52              # the largest IPA space KVM/arm64 supports (52 bits)


class IrqState(NamedTuple):
    """One interrupt's state, named as KVM's ``struct vgic_irq`` fields."""

    intid: int
    enabled: bool
    pending_latch: bool
    line_level: bool
    active: bool
    group: int
    config: str          # "edge" or "level"
    priority: int
    route: int           # GICD_IROUTER affinity (SPIs), else 0
    target_vcpu: int     # routed vCPU index (SPIs), -1 for none or private

    @property
    def pending(self) -> bool:
        """The pending state a guest reads: the latch, or for a level
        interrupt the latch OR the line level (KVM irq_is_pending())."""
        return self.pending_latch or (self.config == "level" and self.line_level)


class VCPU:
    """One vCPU of a :class:`VM`: its identity and its world switch.  The
    parts add their per-vCPU views as attributes (``hyp``, ``cpu_if``)."""

    def __init__(self, vm: VM, vcpu_id: int) -> None:
        self.vm = vm
        #: vCPU index (KVM's vcpu_id; vCPUs are created in index order).
        self.id = vcpu_id
        #: MPIDR_EL1 as KVM resets it.
        self.mpidr = vm._mpidrs.mpidrs[vcpu_id]
        self._loaded = False
        #: True between enter() and exit(): the guest runs.
        self.running = False
        #: True once the vCPU has entered the guest (KVM's has_run_once).
        self.has_run = False
        #: True between block() and unblock().
        self.blocked = False
        # Name -> the part accessor serving the guest's access to it, filled
        # a part at a time at the first access (a VM of 512 vCPUs builds
        # no per-vCPU object it does not use).
        self._sysregs: dict[str, Any] = {}

    @property
    def loaded(self) -> bool:
        """True between load() and put() (KVM's vcpu_load / vcpu_put)."""
        return self._loaded

    @loaded.setter
    def loaded(self, value: bool) -> None:
        # The VM counts loaded vCPUs, so lock_all_vcpus costs nothing when
        # none is loaded (a snapshot's hundreds of attribute accesses).
        value = bool(value)
        if value != self._loaded:
            self._loaded = value
            self.vm._nr_loaded += 1 if value else -1

    def __getattr__(self, name: str) -> Any:
        # The parts' per-vCPU views (vcpu.hyp, vcpu.cpu_if, vcpu.timer,
        # vcpu.fp), built at their first use and kept as attributes.
        part = self.vm._vcpu_attr_parts.get(name) if name != "vm" else None
        if part is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        for key, obj in part.vcpu_attrs(self).items():
            setattr(self, key, obj)
        return self.__dict__[name]

    # ------------------------------------------------------------ world switch
    def load(self) -> None:
        """vcpu_load: every part loads its state (the vGICv3 restores
        ICH_VMCR_EL2 and the active-priority registers)."""
        if not self.loaded:
            for hook in self.vm._load:
                hook(self.id)
            self.loaded = True

    def put(self) -> None:
        """vcpu_put: every part saves its state, in reverse order."""
        if self.running:
            raise VgicError(f"vCPU {self.id} is running: exit() before put()")
        if self.loaded:
            for hook in self.vm._put:
                hook(self.id)
            self.loaded = False

    def enter(self) -> None:
        """One guest entry (the vGICv3 flushes the ap_list into LRs and
        restores them into the hardware).  Loads the vCPU first if needed,
        as KVM_RUN does."""
        if self.running:
            raise VgicError(f"vCPU {self.id} is already running")
        if not self.has_run:
            self.vm._first_run(self)
        self.load()
        for hook in self.vm._enter:
            hook(self.id)
        self.vm._set_running(self, True)

    def exit(self) -> None:
        """One guest exit (the vGICv3 saves the hardware and folds the LRs
        back into the interrupts' state), parts in reverse order."""
        if not self.running:
            raise VgicError(f"vCPU {self.id} is not running")
        for hook in self.vm._exit:
            hook(self.id)
        self.vm._set_running(self, False)

    def block(self) -> None:
        """The vCPU blocks in WFI (it must have exited): every part hears
        of it, then the vCPU is put - the arch timer arms its background
        timer at the earliest expiry of an enabled, unmasked timer."""
        if self.running:
            raise VgicError(f"vCPU {self.id} is running: exit() before block()")
        if self.blocked:
            raise VgicError(f"vCPU {self.id} is already blocked")
        for part in self.vm.parts:
            part.vcpu_block(self.id)
        self.blocked = True
        self.put()

    def unblock(self) -> bool:
        """The vCPU wakes: it is loaded again (the background timer is
        cancelled); True if a part (its background timer) woke it, that is
        if the timer expired while it was blocked."""
        if not self.blocked:
            raise VgicError(f"vCPU {self.id} is not blocked")
        self.load()
        self.blocked = False
        woken = False
        for part in self.vm.parts:
            woken = bool(part.vcpu_unblock(self.id)) or woken
        return woken

    # ------------------------------------------------------------ KVM's ABI
    def _one_reg_part(self, reg_id: Any) -> tuple[Part, int]:
        reg_id = _index("reg_id", reg_id)
        part = self.vm._one_regs.get(reg_id)
        if part is None:
            part = next((p for p in self.vm.parts if p.claims_one_reg(reg_id)), None)
        if part is None:
            raise KvmError(errno.ENOENT, f"one-reg {reg_id:#x} is not a register of this vCPU")
        if self.running:
            raise KvmError(errno.EBUSY, f"vCPU {self.id} is running")
        return part, reg_id

    def get_one_reg(self, reg_id: int) -> int | bytes:
        """KVM_GET_ONE_REG (``vgic.uapi`` IDs: KVM_REG_ARM_TIMER_CTL, ...): an
        int for a register of up to 64 bits, bytes for a wider one."""
        part, reg_id = self._one_reg_part(reg_id)
        return part.get_one_reg(self.id, reg_id)

    def set_one_reg(self, reg_id: int, value: Any) -> None:
        """KVM_SET_ONE_REG; :class:`vgic.KvmError` as KVM refuses."""
        part, reg_id = self._one_reg_part(reg_id)
        part.set_one_reg(self.id, reg_id, value)

    def get_reg_list(self) -> list[int]:
        """KVM_GET_REG_LIST: this vCPU's one-reg IDs in KVM's order (core
        registers, SVE, the timers, system registers); :class:`vgic.KvmError`
        EPERM for an SVE vCPU before finalize."""
        ids = [r for p in self.vm.parts for r in p.vcpu_one_regs(self.id)]
        coproc = [(r & fpregs.KVM_REG_ARM_COPROC_MASK) >> 16 for r in ids]
        timers = set(self.vm.timer.one_regs())
        rank = {0x10: 0, 0x15: 1}

        def key(k: int) -> int:
            return rank.get(coproc[k], 2 if ids[k] in timers else 3)
        return [ids[k] for k in sorted(range(len(ids)), key=key)]

    def reset(self) -> None:
        """KVM_ARM_VCPU_INIT on an initialised vCPU (kvm_reset_vcpu): each
        part resets its share - the timers' CTL zeroed and levels lowered,
        the FP/SVE state zeroed (and, before finalize, the vector lengths
        back to the host's).  The vCPU must not be running."""
        if self.running:
            raise KvmError(errno.EBUSY, f"vCPU {self.id} is running")
        for part in self.vm.parts:
            part.vcpu_reset(self.id)

    def finalize(self, feature: int) -> None:
        """KVM_ARM_VCPU_FINALIZE(feature): for KVM_ARM_VCPU_SVE, sizes the
        vCPU's SVE state by its VLS; :class:`vgic.KvmError` EINVAL (unknown
        feature or no SVE), EPERM (already finalized)."""
        if self.running:
            raise KvmError(errno.EBUSY, f"vCPU {self.id} is running")
        self.vm.fp.finalize(self.id, feature)

    def _attr_part(self, group: Any, attr: Any) -> Part | None:
        group, attr = _index("group", group), _index("attr", attr)
        for part in self.vm.parts:
            if part.has_vcpu_attr(group, attr):
                return part
        return None

    def has_device_attr(self, group: int, attr: int) -> bool:
        """KVM_HAS_DEVICE_ATTR on the vCPU (the timer's KVM_ARM_VCPU_TIMER_CTRL)."""
        return self._attr_part(group, attr) is not None

    def get_device_attr(self, group: int, attr: int) -> int:
        """KVM_GET_DEVICE_ATTR on the vCPU; ENXIO for an unknown attribute."""
        part = self._attr_part(group, attr)
        if part is None:
            raise KvmError(errno.ENXIO, f"vCPU attribute ({group}, {attr}) does not exist")
        return part.get_vcpu_attr(self.id, group, attr)

    def set_device_attr(self, group: int, attr: int, value: Any) -> None:
        """KVM_SET_DEVICE_ATTR on the vCPU, with KVM's errnos."""
        g = _index("group", group)
        for part in self.vm.parts:
            if part.has_vcpu_attr(g, 0) or part.has_vcpu_attr(g, _index("attr", attr)):
                part.set_vcpu_attr(self.id, g, _index("attr", attr), value)
                return
        raise KvmError(errno.ENXIO, f"vCPU attribute group {group} does not exist")

    # ------------------------------------------------------- the guest's view
    def _accessor(self, reg: Any) -> tuple[Any, Any]:
        acc = self._sysregs.get(reg) if type(reg) is str else None
        if acc is not None:
            return acc, reg
        row = sysregs.lookup(reg)               # UndefinedInstruction if unknown
        acc = self._sysregs.get(row.name)
        if acc is None:
            part = self.vm._sysreg_parts.get(row.name)
            acc = part.vcpu_sysregs(self) if part is not None else None
            if part is None or acc is None:      # an EL2 register, or no part serves it
                raise UndefinedInstruction(reg, f"{row.name} is not accessible to the guest")
            for name in _guest_sysregs(part.name):
                self._sysregs[name] = acc
        return acc, reg

    def sysreg_read(self, reg: Any) -> int:
        """A guest MRS of a system register (architectural name or
        ``(op0, op1, CRn, CRm, op2)``), served by the part that owns it
        (:data:`vgic.sysregs.TABLE`) while the vCPU runs."""
        if not self.running:
            raise VgicError(f"vCPU {self.id} is not running: enter() it first")
        acc, reg = self._accessor(reg)
        return acc.read(reg)

    def sysreg_write(self, reg: Any, value: int) -> None:
        """A guest MSR of a system register while the vCPU runs."""
        if not self.running:
            raise VgicError(f"vCPU {self.id} is not running: enter() it first")
        acc, reg = self._accessor(reg)
        acc.write(reg, value)
        self.vm._service_kicks()

    def pending_interrupt(self) -> str | None:
        """The exception the vCPU's virtual CPU interface signals while it
        runs: ``"irq"`` (a Group 1 vIRQ), ``"fiq"`` (a Group 0 vFIQ) or
        None - what an emulator checks to take the interrupt into the guest
        (PSTATE.I/F masking is the emulator's).  ``VgicError`` unless the
        vCPU is running."""
        return _SIGNALLED.get(self.signals() & (ich.SIG_IRQ | ich.SIG_FIQ))

    def signals(self) -> int:
        """What the vCPU's virtual CPU interface asserts towards the PE while
        it runs, in one call: ``vgic.ich.SIG_IRQ`` (a Group 1 vIRQ),
        ``SIG_FIQ`` (a Group 0 vFIQ) and ``SIG_MAINT`` (the maintenance
        interrupt: ICH_HCR_EL2.En with a non-zero ICH_MISR_EL2, which makes
        KVM exit and enter again), or-ed; 0 for none.  An emulator asks
        after every access that can change it.  ``VgicError`` unless the
        vCPU is running."""
        if not self.running:
            raise VgicError(f"vCPU {self.id} is not running: enter() it first")
        gic = self.vm.gic
        return 0 if gic is None else int(gic.icv.signals(self.id))

    def has_pending_irq(self) -> bool:
        """kvm_vgic_vcpu_pending_irq(): an interrupt queued for this vCPU is
        pending, enabled, not active and above its priority mask, with the
        distributor enabled (what ends its WFI)."""
        gic = self.vm.gic
        return gic is not None and gic.vcpu_wakes(self.id)

    def runnable(self) -> bool:
        """Whether a blocked (or exited) vCPU should run again: an interrupt
        pending for it in the vGIC, or its background timer fired - KVM's
        kvm_vcpu_check_block wake-ups.  Cheap: nothing is loaded."""
        return any(part.vcpu_wakes(self.id) for part in self.vm.parts)

    def kick(self) -> None:
        """kvm_vcpu_kick() of a vCPU in the guest: it exits and enters again,
        so the entry flushes what became pending for it.  Nothing for a
        vCPU that is not running (its next entry flushes anyway)."""
        if self.running:
            self.exit()
            self.enter()

    @property
    def rd_base(self) -> int:
        """Guest physical address of this vCPU's redistributor RD_base frame."""
        return self.vm.redist_base + self.id * regmap.REDIST_STRIDE

    @property
    def sgi_base(self) -> int:
        """Guest physical address of this vCPU's SGI_base frame."""
        return self.rd_base + regmap.SGI_BASE_OFFSET

    def __repr__(self) -> str:
        return f"<vgic.VCPU {self.id} mpidr={self.mpidr:#x}>"


@contextmanager
def _rebased(start: int) -> Iterator[None]:
    """A part's refusal of a register at ``index`` within its run of IDs,
    named at its place in the whole batch (``start`` + index)."""
    try:
        yield
    except KvmError as exc:
        if exc.index is None or not start:
            raise
        k = exc.index + start
        raise KvmError(exc.errno or 0, str(exc.strerror).replace(f"reg_ids[{exc.index}]", f"reg_ids[{k}]", 1),
                       index=k) from exc


_SIGNALLED = {ich.SIG_IRQ: "irq", ich.SIG_FIQ: "fiq"}


@functools.cache
def _guest_sysregs(owner: str) -> tuple[str, ...]:
    """The system registers a part serves to the guest (its rows of the
    table that do not trap to EL2), looked up once per part."""
    return tuple(row.name for row in sysregs.TABLE if row.owner == owner and row.trap != sysregs.EL2)


def _check_int(name: str, value: Any, lo: int, hi: int) -> int:
    return ich.check_int(name, value, lo, hi)


class snapshot_restore:
    """A method callable on the class (with the class) and on an instance
    (with the instance), as ``VM.restore`` is."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.__doc__ = fn.__doc__

    def __get__(self, obj: Any, cls: Any) -> Any:
        target = cls if obj is None else obj
        return functools.partial(self.fn, target)


class VM:
    """A KVM/arm64 virtual machine: guest RAM, vCPUs and the parts of
    :data:`PARTS` (today the vGICv3: distributor, redistributors, CPU
    interface).

    ``vgic.VM(nr_vcpus=4, nr_irqs=256)`` builds what KVM builds after
    KVM_CREATE_DEVICE(VGIC_V3), setting NR_IRQS and the frame addresses, and
    KVM_DEV_ARM_VGIC_CTRL_INIT: the device is initialised and ready to run.

    ``nr_irqs`` counts all INTIDs below the first LPI, private ones included,
    and is validated as KVM validates KVM_DEV_ARM_VGIC_GRP_NR_IRQS: a multiple
    of 32 in 64..992.  ``nr_vcpus`` is 1..512 (VGIC_V3_MAX_CPUS).  Frame bases
    must be 64 KiB aligned and no two of the distributor, the redistributor
    region (``nr_vcpus`` x 128 KiB) and RAM may overlap.  ``memory`` may be any
    writable buffer to share guest RAM with an emulator without copies; its
    length then sets the RAM size.  ``backend`` picks the implementation of
    this VM: ``"core"`` (Cython), ``"pure"`` (the twin) or None for the
    process default (``VGIC_PUREPYTHON``).

    ``its=True`` adds an ITS (KVM_CREATE_DEVICE(VGIC_ITS) with its address
    set, ``vm.its``) at ``its_base`` (128 KiB, which must not overlap the
    other frames or RAM): the distributor then has LPIs (GICD_TYPER.LPIS,
    16 ID bits), the redistributors report PLPIS and GICR_PROPBASER starts
    at 0x580 as creating the ITS leaves it.  ``its_max_ites`` bounds the
    ITEs the ITS holds (the model's stand-in for KVM running out of memory).
    """

    def __init__(
        self,
        nr_vcpus: int = 1,
        nr_irqs: int = DEFAULT_NR_IRQS,
        *,
        dist_base: int = DEFAULT_DIST_BASE,
        redist_base: int = DEFAULT_REDIST_BASE,
        ram_base: int = DEFAULT_RAM_BASE,
        ram_size: int | None = None,
        memory: Any = None,
        nr_lrs: int = 4,
        pri_bits: int = 5,
        pre_bits: int = 5,
        lr_order: str = "direct",
        its: bool = False,
        its_base: int = DEFAULT_ITS_BASE,
        its_max_ites: int = 1 << 20,
        irqchip: bool = True,
        timer_policy: str = "lazy",
        cntfrq: int = gtimer.DEFAULT_CNTFRQ,
        sve: bool = False,
        sve_vqs: Any = None,
        fp_policy: str = "lazy",
        host_sve: bool = False,
        backend: str | None = None,
    ) -> None:
        nr_vcpus = _check_int("nr_vcpus", nr_vcpus, 1, regmap.MAX_VCPUS)
        nr_irqs = _check_int("nr_irqs", nr_irqs, 0, 1 << 32)
        topology.check_nr_irqs(nr_irqs)
        self.nr_vcpus = nr_vcpus
        self.nr_irqs = nr_irqs
        self.dist_base = _check_int("dist_base", dist_base, 0, MAX_IPA)
        self.redist_base = _check_int("redist_base", redist_base, 0, MAX_IPA)
        self.ram_base = _check_int("ram_base", ram_base, 0, MAX_IPA)
        if not isinstance(its, (bool, np.bool_)):
            raise TypeError(f"its must be a bool, not {type(its).__name__}")
        if not isinstance(irqchip, (bool, np.bool_)):
            raise TypeError(f"irqchip must be a bool, not {type(irqchip).__name__}")
        #: The VM has the in-kernel vGICv3 (KVM_CREATE_DEVICE(VGIC_V3)); without
        #: it userspace emulates the interrupt controller and the timers
        #: publish their levels (vcpu.timer.device_irq_level).
        self.irqchip = bool(irqchip)
        if its and not irqchip:
            raise ValueError("an ITS needs the in-kernel vGICv3 (irqchip=True)")
        #: An ITS is part of the VM.
        self.has_its = bool(its)
        self.its_base = _check_int("its_base", its_base, 0, MAX_IPA)
        self.its_max_ites = _check_int("its_max_ites", its_max_ites, 1, 1 << 32)
        self.memory = self._make_memory(memory, ram_size)
        self._check_layout()
        # The modelled CPU interface: ICH_VTR_EL2.ListRegs + 1, PRIbits + 1,
        # PREbits + 1 (PREbits <= PRIbits, IHI 0069 §12.4.8) and KVM's LR
        # storage order.
        self.nr_lrs = _check_int("nr_lrs", nr_lrs, 1, ich.MAX_LRS)
        self.pri_bits = _check_int("pri_bits", pri_bits, 5, 7)
        self.pre_bits = _check_int("pre_bits", pre_bits, 5, 7)
        if self.pre_bits > self.pri_bits:
            raise ValueError(f"pre_bits {pre_bits} exceeds pri_bits {pri_bits}")
        if lr_order not in ("direct", "reverse"):
            raise ValueError(f"lr_order {lr_order!r} is not 'direct' or 'reverse'")
        self.lr_order = lr_order
        if timer_policy not in gtimer.POLICIES:
            raise ValueError(f"timer_policy {timer_policy!r} is not one of {sorted(gtimer.POLICIES)}")
        #: How the arch timers move between KVM and the hardware: "lazy"
        #: (at vcpu_load/vcpu_put, KVM since v4.15) or "eager" (every entry
        #: and exit, v4.14).
        self.timer_policy = timer_policy
        #: CNTFRQ_EL0, the counter's frequency in Hz.
        self.cntfrq = _check_int("cntfrq", cntfrq, 1, (1 << 64) - 1)
        for name, flag in (("sve", sve), ("host_sve", host_sve)):
            if not isinstance(flag, (bool, np.bool_)):
                raise TypeError(f"{name} must be a bool, not {type(flag).__name__}")
        #: Every vCPU has the SVE feature (KVM_ARM_VCPU_SVE at KVM_ARM_VCPU_INIT).
        self.sve = bool(sve)
        #: The host task's own FP state is SVE (else FPSIMD).
        self.host_sve = bool(host_sve)
        vqs = range(1, fpregs.SVE_VQ_MAX + 1) if sve_vqs is None else sve_vqs
        try:
            self.sve_vqs: list[int] = sorted({_check_int("sve_vqs[]", v, 1, fpregs.SVE_VQ_MAX) for v in vqs})
        except TypeError:
            raise TypeError("sve_vqs must be an iterable of VQs (1..16)") from None
        if not self.sve_vqs:
            raise ValueError("sve_vqs must name at least one VQ")
        if fp_policy not in fpregs.FP_POLICIES:
            raise ValueError(f"fp_policy {fp_policy!r} is not one of {sorted(fpregs.FP_POLICIES)}")
        #: How FP/SVE state moves: "lazy" (KVM's) or "eager" (every entry and exit).
        self.fp_policy = fp_policy
        self._backend_name, impl = _backend.modules(backend)
        # KVM's reset MPIDRs and kvm_mpidr_to_vcpu().
        self._mpidrs = topology.MpidrIndex(default_mpidr(i) for i in range(nr_vcpus))
        #: The guest-physical MMIO space: every part's frames.
        self.bus = impl.mmio.Bus(nr_vcpus)
        #: The parts, in KVM's order.
        self.parts: list[Part] = []
        self._parts_by_name: dict[str, Part] = {}
        #: The vGICv3 part (the KVM_DEV_TYPE_ARM_VGIC_V3 device), or None
        #: without an in-kernel irqchip.
        self.gic: VgicV3 | None = None
        for cls in PARTS:
            if not cls.present(self):
                continue
            part = cls(self, impl)
            part.map_frames(self.bus)
            self.parts.append(part)
            self._parts_by_name[part.name] = part
            if cls is VgicV3:
                self.gic = part  # type: ignore[assignment]
        #: The ITS part (the KVM_DEV_TYPE_ARM_VGIC_ITS device), or None.
        self.its: Its | None = self._parts_by_name.get(Its.name)  # type: ignore[assignment]
        #: The arch timers and the counter.
        self.timer: ArchTimer = self._parts_by_name[ArchTimer.name]  # type: ignore[assignment]
        #: Every vCPU's FPSIMD/SVE state.
        self.fp: FpSimd = self._parts_by_name[FpSimd.name]  # type: ignore[assignment]
        self._take_kicks = self.timer.timers.take_kicks
        # Per-vCPU world-switch steps: load in table order and put in reverse
        # (kvm_arch_vcpu_load/put); enter with the early parts first (the
        # timer before the vGIC's flush) and exit in the reverse of that.
        steps = [p.world_switch() for p in self.parts]
        self._load = tuple(s[0] for s in steps if s[0] is not None)
        self._put = tuple(s[1] for s in reversed(steps) if s[1] is not None)
        self._enter_parts = ([p for p in self.parts if p.enter_early]
                             + [p for p in self.parts if not p.enter_early])
        enter_steps = [p.world_switch() for p in self._enter_parts]
        self._enter = tuple(s[2] for s in enter_steps if s[2] is not None)
        self._exit = tuple(s[3] for s in reversed(enter_steps) if s[3] is not None)
        self._one_regs: dict[int, Part] = {r: p for p in self.parts for r in p.one_regs()}
        # Which part builds each per-vCPU view and serves each guest system
        # register (the VCPU asks at first use).
        self._vcpu_attr_parts: dict[str, Part] = {n: p for p in self.parts for n in p.vcpu_attr_names}
        self._sysreg_parts: dict[str, Part] = {n: p for p in self.parts for n in _guest_sysregs(p.name)}
        self._nr_loaded = 0
        self.vcpus: list[VCPU] = [VCPU(self, i) for i in range(nr_vcpus)]
        self._nr_running = 0
        # The hot entry points are the bus's own methods, bound once, so a
        # call costs one extension-method call and no Python frame of ours.
        self.mmio_read = self.bus.mmio_read  # type: ignore[method-assign]
        self.mmio_write = self.bus.mmio_write  # type: ignore[method-assign]
        self.mmio_replay = self.bus.mmio_replay  # type: ignore[method-assign]

    # -------------------------------------------------------------- running
    def _set_running(self, vcpu: VCPU, running: bool) -> None:
        # The one place a vCPU's running flag and the running count change.
        # While any vCPU runs, guest active-state MMIO halts them (KVM's
        # vgic_access_active_prepare); with none running it costs nothing.
        if vcpu.running != running:
            vcpu.running = running
            self._nr_running += 1 if running else -1
            self.bus.halt_hook = self._halted if self._nr_running else None

    def _set_running_many(self, vcpus: list[VCPU], running: bool) -> None:
        # _set_running for a batch, the halt hook set once.
        changed = 0
        for v in vcpus:
            if v.running != running:
                v.running = running
                changed += 1
        self._nr_running += changed if running else -changed
        self.bus.halt_hook = self._halted if self._nr_running else None

    @contextmanager
    def _halted(self, keep: int = -1) -> Iterator[None]:
        """kvm_arm_halt_guest() / kvm_arm_resume_guest(): every running vCPU
        but ``keep`` exits (its LRs are saved and folded) for the duration,
        then enters again (its ap_list is flushed anew)."""
        stopped = []
        try:
            for v in self.vcpus:
                if v.running and v.id != keep:
                    v.exit()
                    stopped.append(v)
            yield
        finally:
            for v in stopped:
                if not v.running:
                    v.enter()

    def _vgic(self, what: str) -> VgicV3:
        if self.gic is None:
            raise KvmError(errno.ENXIO, f"{what}: this VM has no in-kernel irqchip")
        return self.gic

    def _service_kicks(self) -> None:
        # A timer raised its interrupt on a running vCPU: KVM kicks it out of
        # the guest and the next entry flushes the new level into its LRs.
        # (The kernel's own method: one C call when there is nothing to do.)
        for i in self._take_kicks():
            v = self.vcpus[i]
            if v.running:
                v.exit()
                v.enter()

    def _first_run(self, vcpu: VCPU) -> None:
        # kvm_arch_vcpu_run_pid_change(): every part's first-run work (the
        # timer checks and maps its PPIs); a refusal leaves the vCPU unrun.
        self._first_run_many([vcpu])

    def _first_run_many(self, vcpus: list[VCPU]) -> None:
        # Every check of every vCPU before any first-run work: a refused
        # batch changes nothing.
        fresh = [v for v in vcpus if not v.has_run]
        for v in fresh:
            for part in self.parts:
                part.check_first_run(v.id)
        for v in fresh:
            for part in self.parts:
                part.first_run(v.id)
            v.has_run = True

    # ----------------------------------------------------------------- time
    @property
    def counter(self) -> int:
        """The physical counter, CNTPCT_EL0 of the host, in ticks."""
        return self.timer.counter

    def advance(self, ticks: int) -> int:
        """Move the counter on by ``ticks``: every timer event due on the way
        (a direct vtimer asserting its physical PPI, the emulated ptimer's
        soft timer, a blocked vCPU's background timer) fires in (time,
        vCPU) order; returns how many fired.  ``ValueError`` if the 64-bit
        counter would wrap."""
        fired = self.timer.advance(ticks)
        self._service_kicks()
        return fired

    @property
    def irq_events(self) -> int:
        """A count that moves whenever an interrupt becomes deliverable
        (enabled and pending, or active) or the guest enables the
        distributor: where KVM queues it and kicks its target
        (vgic_queue_irq_unlock, vgic_kick_vcpus).  An emulator compares it
        across a call into the VM to know when to ``kick()`` running vCPUs
        and re-check blocked ones (``runnable()``)."""
        return 0 if self.gic is None else int(self.gic.gic.seq_counter)

    def next_timer_event(self) -> int | None:
        """The counter value at which the next timer event is due (a blocked
        vCPU's background timer, an emulated physical timer), or None.  An
        emulator whose vCPUs all wait in WFI may ``advance`` to it."""
        return self.timer.next_event()

    def set_counter_offset(self, counter_offset: int, reserved: int = 0) -> None:
        """KVM_ARM_SET_COUNTER_OFFSET: the VM's virtual and physical counter
        offsets; from then on TIMER_CNT/PTIMER_CNT one-reg writes are
        ignored.  :class:`vgic.KvmError`: EINVAL for a non-zero ``reserved``,
        EBUSY while a vCPU runs."""
        self.timer.set_counter_offset(counter_offset, reserved)

    # ------------------------------------------------------------------ setup
    def _make_memory(self, memory: Any, ram_size: int | None) -> np.ndarray:
        if memory is None:
            size = DEFAULT_RAM_SIZE if ram_size is None else _check_int("ram_size", ram_size, 0, MAX_IPA)
            return np.zeros(size, dtype=np.uint8)
        try:
            view = memoryview(memory)
        except TypeError:
            raise TypeError(f"memory must support the buffer protocol, not {type(memory).__name__}") from None
        if view.readonly:
            raise ValueError("memory must be a writable buffer")
        if not view.c_contiguous:
            raise ValueError("memory must be a contiguous buffer")
        arr = np.frombuffer(view.cast("B"), dtype=np.uint8)
        if ram_size is not None and ram_size != arr.size:
            raise ValueError(f"ram_size {ram_size:#x} differs from the memory buffer's {arr.size:#x} bytes")
        return arr

    def _check_layout(self) -> None:
        for name in ("dist_base", "redist_base", "its_base"):
            # GIC frames are 64 KiB aligned (KVM: -EINVAL otherwise).
            if getattr(self, name) % regmap.FRAME_SIZE:
                raise ValueError(f"{name} {getattr(self, name):#x} is not 64 KiB aligned")
        spans = [
            ("distributor", self.dist_base, regmap.FRAME_SIZE),
            ("redistributors", self.redist_base, self.nr_vcpus * regmap.REDIST_STRIDE),
            ("RAM", self.ram_base, self.memory.size),
        ]
        if self.has_its:
            spans.append(("ITS", self.its_base, uapi.KVM_VGIC_V3_ITS_SIZE))
        for name, base, size in spans:
            if base + size > MAX_IPA:
                raise ValueError(f"{name} at {base:#x}+{size:#x} leaves the 52-bit IPA space")
        for i, (n1, b1, s1) in enumerate(spans):
            for n2, b2, s2 in spans[i + 1:]:
                if s1 and s2 and b1 < b2 + s2 and b2 < b1 + s1:
                    raise ValueError(f"{n1} at {b1:#x}+{s1:#x} overlaps {n2} at {b2:#x}+{s2:#x}")

    # ------------------------------------------------------------- guest MMIO
    # These three are replaced per instance by the bus's bound methods;
    # they are here for documentation and for help().
    def mmio_read(self, addr: int, size: int, vcpu: int = 0) -> int:
        """A guest load of ``size`` bytes (1, 2, 4 or 8) at ``addr`` by vCPU ``vcpu``.

        Accesses inside a frame behave as KVM emulates them, including
        RAZ/WI for unknown offsets, bad widths and misalignment.  Raises
        :class:`vgic.UnmappedAccess` outside every frame and ``ValueError`` for
        a bad size, a negative address or an unknown vCPU.
        """
        return self.bus.mmio_read(addr, size, vcpu)

    def mmio_write(self, addr: int, size: int, value: int, vcpu: int = 0) -> None:
        """A guest store; as :meth:`mmio_read`, plus ``ValueError`` for a
        value that does not fit in ``size`` bytes."""
        self.bus.mmio_write(addr, size, value, vcpu)

    def mmio_replay(self, trace: np.ndarray) -> np.ndarray:
        """Run a numpy array of :data:`vgic.MMIO_ACCESS` records in order and
        return the value each access read (writes give 0) as ``uint64``.

        The trace is validated whole before anything runs: a bad record raises
        (``TypeError`` for a wrong dtype, ``ValueError`` or
        :class:`vgic.UnmappedAccess` naming the record) and changes nothing.
        """
        return self.bus.mmio_replay(trace)

    # --------------------------------------------------------- interrupt lines
    def set_irq_level(self, intid: int, level: bool, vcpu: int | None = None) -> None:
        """Drive an interrupt line, as KVM_IRQ_LINE / kvm_vgic_inject_irq.

        An SPI (``32 <= intid < nr_irqs``) needs no ``vcpu``; a PPI
        (``16 <= intid < 32``) needs one; for an SPI ``vcpu`` is ignored, as
        KVM_IRQ_LINE ignores its vCPU field for SPIs.  For a level-triggered interrupt the
        line level follows ``level``; for an edge-triggered one a rising level
        latches it pending and a falling one does nothing.  Anything KVM would
        refuse (an SGI, an INTID outside the VM, a PPI without a vCPU, an
        unknown vCPU) raises :class:`vgic.KvmError` with ``EINVAL``.  A
        timer PPI of a vCPU that has run belongs to the arch timer
        (kvm_vgic_set_owner): KVM ignores the injection, and so does this.
        """
        intid = _index("intid", intid)
        if vcpu is not None:
            vcpu = _index("vcpu", vcpu)
        gic = self._vgic("KVM_IRQ_LINE")
        if regmap.NR_SGIS <= intid < regmap.NR_PRIVATE_IRQS:
            if vcpu is None:
                raise KvmError(errno.EINVAL, f"PPI {intid} needs a vcpu")
            if not 0 <= vcpu < self.nr_vcpus:
                raise KvmError(errno.EINVAL, f"vcpu {vcpu} does not exist (the VM has {self.nr_vcpus})")
            if self.timer.owns(vcpu, intid):
                return      # the timer's line: KVM ignores another owner's injection
            gic.gic.set_irq_level(vcpu, intid, bool(level))
        elif regmap.NR_PRIVATE_IRQS <= intid < self.nr_irqs:
            gic.gic.set_irq_level(0, intid, bool(level))
        else:
            raise KvmError(errno.EINVAL, f"intid {intid} is not a PPI or an SPI of this VM "
                                         f"(16..{self.nr_irqs - 1})")

    def set_irq_levels(self, intids: Any, levels: Any, vcpus: Any = None) -> None:
        """:meth:`set_irq_level` for many lines in one call, in order: 1-D
        integer ``intids``, ``levels`` (booleans) and, when PPIs are among
        them, ``vcpus`` (ignored for SPIs).  Every entry is checked with
        KVM's rules first; a refused one raises :class:`vgic.KvmError`
        (``EINVAL``) naming its index, and then nothing is applied."""
        ids = np.asarray(intids)
        if ids.size == 0 and ids.ndim == 1:
            ids = ids.astype(np.int64)
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise TypeError("intids must be a 1-D integer array")
        lv = np.asarray(levels)
        if lv.shape != ids.shape:
            raise ValueError(f"levels has shape {lv.shape}, intids {ids.shape}")
        lv = lv.astype(bool)
        if vcpus is None:
            vc = np.full(ids.shape, -1, dtype=np.int64)
        else:
            vc = np.asarray(vcpus)
            if vc.shape != ids.shape or not (vc.size == 0 or np.issubdtype(vc.dtype, np.integer)):
                raise TypeError("vcpus must be None or a 1-D integer array like intids")
            vc = vc.astype(np.int64)
        ids = ids.astype(np.int64)
        ppi = (ids >= regmap.NR_SGIS) & (ids < regmap.NR_PRIVATE_IRQS)
        bad = ~(ppi | ((ids >= regmap.NR_PRIVATE_IRQS) & (ids < self.nr_irqs)))
        bad |= ppi & ((vc < 0) | (vc >= self.nr_vcpus))
        if bad.any():
            k = int(np.argmax(bad))
            raise KvmError(errno.EINVAL, f"intids[{k}] = {int(ids[k])} (vcpu {int(vc[k])}) is refused: "
                                         f"not a PPI with an existing vCPU or an SPI of this VM")
        owned = ppi & self.timer.owned_mask(vc, ids)
        if owned.any():
            keep = ~owned
            ids, lv, vc, ppi = ids[keep], lv[keep], vc[keep], ppi[keep]
        self._vgic("KVM_IRQ_LINE").gic.set_irq_level_batch(np.where(ppi, vc, 0), ids, lv)

    def signal_msi(self, device_id: int, event_id: int) -> bool:
        """KVM_SIGNAL_MSI through the ITS (with KVM_MSI_VALID_DEVID): True if
        the MSI was delivered (its LPI latched pending), False if the guest
        blocked it (no translation).  :class:`vgic.KvmError`: ENODEV without
        an ITS, EBUSY with the ITS disabled or the target's LPIs disabled."""
        if self.its is None:
            raise KvmError(errno.ENODEV, "KVM_SIGNAL_MSI: this VM has no ITS")
        return self.its.signal_msi(device_id, event_id)

    def signal_msis(self, device_ids: Any, event_ids: Any) -> np.ndarray:
        """:meth:`signal_msi` for many MSIs in one call, in order: KVM's
        result for each (1 delivered, 0 blocked, -EBUSY) as an int32 array;
        nothing raises for a single MSI's -EBUSY."""
        if self.its is None:
            raise KvmError(errno.ENODEV, "KVM_SIGNAL_MSI: this VM has no ITS")
        return self.its.its.signal_msi_batch(device_ids, event_ids)

    def irq(self, intid: int, vcpu: int | None = None) -> IrqState:
        """The state of one interrupt; private INTIDs (< 32) need ``vcpu``;
        an LPI must exist (an ITE maps it, or it is on its way to a vCPU)."""
        intid = _index("intid", intid)
        gic = self._vgic("irq")
        if intid >= regmap.LPI_BASE:
            if intid not in gic.gic.lpis():
                raise ValueError(f"intid {intid} is not an LPI that exists")
        elif not 0 <= intid < self.nr_irqs:
            raise ValueError(f"intid {intid} is outside 0..{self.nr_irqs - 1}")
        if intid < regmap.NR_PRIVATE_IRQS:
            if vcpu is None:
                raise ValueError(f"intid {intid} is private: give a vcpu")
            vcpu = _index("vcpu", vcpu)
            if not 0 <= vcpu < self.nr_vcpus:
                raise ValueError(f"vcpu {vcpu} out of range: the VM has {self.nr_vcpus} vCPUs")
        en, pl, ll, act, grp, edge, prio, route, target = gic.gic.irq_state(
            vcpu if intid < regmap.NR_PRIVATE_IRQS else 0, intid)
        return IrqState(intid, bool(en), bool(pl), bool(ll), bool(act), int(grp),
                        "edge" if edge else "level", int(prio), int(route), int(target))

    # ----------------------------------------------------- KVM device attributes
    def get_device_attr(self, group: int, attr: int) -> int:
        """KVM_GET_DEVICE_ATTR on the vGICv3 device (``vm.gic``; see :mod:`vgic.kvm_device`)."""
        return self._vgic("KVM_GET_DEVICE_ATTR").get_device_attr(group, attr)

    def set_device_attr(self, group: int, attr: int, value: int) -> None:
        """KVM_SET_DEVICE_ATTR on the vGICv3 device (see :mod:`vgic.kvm_device`)."""
        self._vgic("KVM_SET_DEVICE_ATTR").set_device_attr(group, attr, value)

    def has_device_attr(self, group: int, attr: int) -> bool:
        """KVM_HAS_DEVICE_ATTR on the vGICv3 device: True where KVM returns 0."""
        return self.gic is not None and self.gic.has_device_attr(group, attr)

    def get_device_attrs(self, group: int, attrs: Any) -> np.ndarray:
        """:meth:`get_device_attr` of many attributes of one register group
        (DIST_REGS, REDIST_REGS, CPU_SYSREGS, LEVEL_INFO) in one call: a
        1-D integer array in, the values (``uint64``) out.  Each access is
        the one KVM_GET_DEVICE_ATTR makes; every attribute is parsed before
        any runs (:class:`vgic.KvmError` with ``index`` naming a bad one)."""
        return self._vgic("KVM_GET_DEVICE_ATTR").get_device_attrs(group, attrs)

    def set_device_attrs(self, group: int, attrs: Any, values: Any) -> None:
        """:meth:`set_device_attr` of many attributes of one register group,
        in order, as that many KVM_SET_DEVICE_ATTR calls: at the first value
        KVM refuses the batch stops and raises :class:`vgic.KvmError` whose
        ``index`` names it (the writes before it took effect)."""
        self._vgic("KVM_SET_DEVICE_ATTR").set_device_attrs(group, attrs, values)

    @property
    def devices(self) -> dict[int, Part]:
        """The VM's KVM devices by KVM_CREATE_DEVICE type."""
        return {p.device_type: p for p in self.parts if p.device_type is not None}

    # ----------------------------------------------------- one-reg batches
    def _one_reg_batch(self, reg_ids: Any, vcpus: Any) -> tuple[np.ndarray, list[int], list[tuple[Part, int, int]]]:
        """Checked vCPUs, IDs, and the runs of IDs one part serves: (part, start, end)."""
        ids = value_array("reg_ids", reg_ids, U64).tolist()
        vc = self._batch_ids(vcpus, running=None)
        runs: list[tuple[Part, int, int]] = []
        for k, r in enumerate(ids):
            part = self._one_regs.get(r)
            if part is None:
                part = next((p for p in self.parts if p.claims_one_reg(r)), None)
            if part is None:
                raise KvmError(errno.ENOENT, f"reg_ids[{k}] = {r:#x} is not a register of this VM's vCPUs", index=k)
            if runs and runs[-1][0] is part:
                runs[-1] = (part, runs[-1][1], k + 1)
            else:
                runs.append((part, k, k + 1))
        running = [i for i in vc.tolist() if self.vcpus[i].running]
        if running:
            raise KvmError(errno.EBUSY, f"vCPU {running[0]} is running")
        return vc, ids, runs

    def get_one_regs(self, reg_ids: Any, vcpus: Any = None) -> np.ndarray:
        """KVM_GET_ONE_REG of many registers on many vCPUs in one call: every
        ID of ``reg_ids`` on every vCPU (all, or the distinct indices in
        ``vcpus``).  Returns ``uint8`` of shape (vCPUs, bytes): per vCPU the
        registers' values in ``reg_ids`` order, each little-endian in its
        KVM_REG_SIZE, as KVM_GET_ONE_REG writes them.  A refused register
        raises :class:`vgic.KvmError` (``index``: its position in ``reg_ids``)."""
        vc, ids, runs = self._one_reg_batch(reg_ids, vcpus)
        cols = [np.zeros((len(vc), 0), dtype=np.uint8)]
        for p, a, b in runs:
            with _rebased(a):
                cols.append(p.get_one_regs(vc, ids[a:b]))
        if len(cols) == 2:
            return cols[1]              # one part served them all: its array, not a copy
        return np.concatenate(cols, axis=1)

    def set_one_regs(self, reg_ids: Any, data: Any, vcpus: Any = None) -> None:
        """KVM_SET_ONE_REG of many registers on many vCPUs from ``data``
        (``uint8``, laid out as :meth:`get_one_regs` returns it).  Where a
        part can, the whole batch is checked before anything is written;
        otherwise the writes run vCPU by vCPU and stop at the refused one,
        raising :class:`vgic.KvmError` with its ``index``."""
        vc, ids, runs = self._one_reg_batch(reg_ids, vcpus)
        arr = np.asarray(data)
        sizes = [reg_size(r) for r in ids]
        if arr.dtype != np.uint8 or arr.shape != (len(vc), sum(sizes)):
            raise ValueError(f"data must be uint8 of shape ({len(vc)}, {sum(sizes)}), "
                             f"not {arr.dtype} {arr.shape}")
        col = [0]
        for size in sizes:
            col.append(col[-1] + size)
        for p, a, b in runs:
            with _rebased(a):
                p.set_one_regs(vc, ids[a:b], np.ascontiguousarray(arr[:, col[a]:col[b]]))

    def finalize_vcpus(self, feature: int, vcpus: Any = None) -> None:
        """``vcpu.finalize(feature)`` of many vCPUs (all, or the distinct
        indices in ``vcpus``) in order; a refusal raises
        :class:`vgic.KvmError` whose ``index`` names the vCPU's position
        (the ones before it are finalized)."""
        vc = self._batch_ids(vcpus, running=None)
        running = [i for i in vc.tolist() if self.vcpus[i].running]
        if running:
            raise KvmError(errno.EBUSY, f"vCPU {running[0]} is running")
        self.fp.finalize_many(vc, feature)

    # ----------------------------------------------------- batch world switch
    def _batch_ids(self, vcpus: Any, running: bool | None) -> np.ndarray:
        n = self.nr_vcpus
        if vcpus is None:
            ids = np.arange(n, dtype=np.int64)
        else:
            arr = np.asarray(vcpus)
            if arr.size == 0 and arr.ndim == 1:
                arr = arr.astype(np.int64)          # [] arrives as float64
            if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
                raise TypeError("vcpus must be a 1-D array of vCPU indices or None")
            ids = np.array(arr, dtype=np.int64, copy=True)
            outside = (ids < 0) | (ids >= n)
            if outside.any():
                k = int(np.argmax(outside))
                raise ValueError(f"vcpus[{k}] = {int(ids[k])} is not a vCPU index (0..{n - 1})")
            if np.unique(ids).size != ids.size:
                raise ValueError("vcpus names a vCPU twice")
        all_vcpus = self.vcpus
        for i in ids.tolist() if running is not None else ():
            if all_vcpus[i].running != running:
                state = "already running" if not running else "not running"
                raise VgicError(f"vCPU {i} is {state}")
        return ids

    def enter_vcpus(self, vcpus: Any = None) -> None:
        """``enter()`` of many vCPUs (every vCPU, or the indices in ``vcpus``
        in that order), the same as entering them one by one, with one
        kernel call per part and phase (load, enter) for all.  Everything is
        validated before anything runs."""
        ids = self._batch_ids(vcpus, running=False)
        chosen = [self.vcpus[i] for i in ids.tolist()]
        self._first_run_many(chosen)
        to_load = np.array([v.id for v in chosen if not v.loaded], dtype=np.int64)
        for part in self.parts:
            part.load_batch(to_load)
        for part in self._enter_parts:
            part.enter_batch(ids)
        for v in chosen:
            v.loaded = True
        self._set_running_many(chosen, True)

    def exit_vcpus(self, vcpus: Any = None) -> None:
        """``exit()`` of many vCPUs: one kernel call per part."""
        ids = self._batch_ids(vcpus, running=True)
        for part in reversed(self._enter_parts):
            part.exit_batch(ids)
        self._set_running_many([self.vcpus[i] for i in ids.tolist()], False)

    def put_vcpus(self, vcpus: Any = None) -> None:
        """``put()`` of many vCPUs (none may be running): one kernel call per part."""
        ids = self._batch_ids(vcpus, running=False)
        loaded = np.array([i for i in ids.tolist() if self.vcpus[i].loaded], dtype=np.int64)
        for part in reversed(self.parts):
            part.put_batch(loaded)
        for i in ids.tolist():
            self.vcpus[i].loaded = False

    # -------------------------------------------------------------- snapshots
    def save(self, ram: bool = True) -> Snapshot:
        """A :class:`vgic.Snapshot` of the VM, taken through KVM's userspace
        ABI in the order VMMs use (see :mod:`vgic.snapshot`).  As in KVM,
        loaded vCPUs are put, and the ITS and LPI pending tables are written
        to guest RAM (SAVE_TABLES, SAVE_PENDING_TABLES) before RAM is
        copied; ``ram=False`` leaves RAM out (the caller saves it after this
        call).  :class:`vgic.SnapshotError` if a vCPU is running or blocked."""
        return snapshot.take(self, ram)

    @snapshot_restore
    def restore(cls_or_self: Any, snap: Snapshot, **options: Any) -> Any:
        """Restore a snapshot through KVM's ABI, in its documented order.

        ``vgic.VM.restore(snap)`` builds a new VM from the snapshot's options
        (host choices - ``backend``, ``nr_lrs``, ``lr_order``,
        ``timer_policy``, ``fp_policy``, ``host_sve``, ``sve_vqs``,
        ``its_max_ites``, and ``memory`` to restore into a caller's RAM
        buffer - may be given) and returns it; its host counter starts where
        the snapshot's was.  ``vm.restore(snap)`` restores onto this VM,
        which must have the snapshot's guest geometry; it becomes what a
        fresh VM restored from ``snap`` would be (its host counter keeps
        running) and returns None.  Either way everything is checked first
        and a refusal raises :class:`vgic.SnapshotError` (a refusal of
        KVM's ABI chained as its cause), changing nothing."""
        if isinstance(cls_or_self, VM):
            if options:
                raise TypeError(f"vm.restore(snap) takes no options, got {sorted(options)}")
            snapshot.restore_onto(cls_or_self, snap)
            return None
        return snapshot.restore_new(cls_or_self, snap, options)

    def _adopt(self, other: VM) -> None:
        """Take ``other``'s whole state (a VM with this one's options; its
        RAM into this VM's buffer).  Nothing here can fail."""
        states = [(mine, theirs.checkpoint()) for mine, theirs in zip(self.parts, other.parts)]
        for v in self.vcpus:
            if v.loaded:
                v.put()
        for mine, cp in states:
            mine.apply_state(cp)
        for mine_v, theirs_v in zip(self.vcpus, other.vcpus):
            mine_v.loaded, mine_v.has_run, mine_v.blocked = theirs_v.loaded, theirs_v.has_run, theirs_v.blocked
        self.memory[:] = other.memory

    # ------------------------------------------------------------ named state
    def _vm_state(self) -> dict[str, Any]:
        return {
            "nr_vcpus": self.nr_vcpus, "nr_irqs": self.nr_irqs, "nr_lrs": self.nr_lrs,
            "pri_bits": self.pri_bits, "pre_bits": self.pre_bits, "lr_order": self.lr_order,
            "dist_base": self.dist_base, "redist_base": self.redist_base,
            "ram_base": self.ram_base, "ram_size": int(self.memory.size), "its_base": self.its_base,
            "irqchip": self.irqchip, "sve": self.sve,
            "vcpus": [{"MPIDR_EL1": v.mpidr, "loaded": v.loaded, "running": v.running, "has_run": v.has_run,
                       "blocked": v.blocked} for v in self.vcpus],
        }

    def state(self) -> dict[str, Any]:
        """Everything the VM holds but its RAM (``vm.memory``), by part:
        ``{"vm": geometry and each vCPU's MPIDR_EL1/loaded/running,
        part name: part.state()}``, under architectural or KVM names.  Both
        backends produce the same state for the same history."""
        out: dict[str, Any] = {"vm": self._vm_state()}
        for part in self.parts:
            out[part.name] = part.state()
        return out

    def load_state(self, state: Any) -> None:
        """Make the VM's state ``state`` (as :meth:`state` returns it, from a
        VM of the same geometry and either backend).  Everything is checked
        first; a bad field raises :class:`vgic.StateError` naming it and
        nothing changes."""
        if not isinstance(state, dict):
            raise StateError(f"state: expected a dict, got {type(state).__name__}")
        names = ["vm"] + [p.name for p in self.parts]
        if set(state) != set(names):
            raise StateError(f"state: expected the parts {names}, got {sorted(map(repr, state))}")
        vm_st = state["vm"]
        mine = self._vm_state()
        if not isinstance(vm_st, dict) or set(vm_st) != set(mine):
            raise StateError(f"vm: expected the keys {sorted(mine)}")
        for key in mine:
            if key != "vcpus" and not _same_scalar(vm_st[key], mine[key]):
                raise StateError(f"vm.{key}: {vm_st[key]!r} differs from this VM's {mine[key]!r}")
        vcpus = vm_st["vcpus"]
        if not isinstance(vcpus, (list, tuple)) or len(vcpus) != self.nr_vcpus:
            raise StateError(f"vm.vcpus: expected {self.nr_vcpus} entries")
        flags = []
        for v, vd in enumerate(vcpus):
            flag_names = ("loaded", "running", "has_run", "blocked")
            if not isinstance(vd, dict) or set(vd) != {"MPIDR_EL1", *flag_names}:
                raise StateError(f"vm.vcpus[{v}]: expected MPIDR_EL1, loaded, running, has_run and blocked")
            if not _same_scalar(vd["MPIDR_EL1"], self.vcpus[v].mpidr):
                raise StateError(f"vm.vcpus[{v}].MPIDR_EL1: {vd['MPIDR_EL1']!r} is not {self.vcpus[v].mpidr:#x}")
            if not all(isinstance(vd[k], (bool, np.bool_)) for k in flag_names):
                raise StateError(f"vm.vcpus[{v}]: {', '.join(flag_names)} must be bools")
            if vd["running"] and not vd["loaded"]:
                raise StateError(f"vm.vcpus[{v}]: running but not loaded")
            if vd["running"] and vd["blocked"]:
                raise StateError(f"vm.vcpus[{v}]: running and blocked")
            flags.append(tuple(bool(vd[k]) for k in flag_names))
        checked = [(part, part.check_state(state[part.name])) for part in self.parts]
        by_name = {part.name: c for part, c in checked}
        for part, _ in checked:
            part.check_links(by_name)
        # Everything is checked: from here on nothing can fail.
        for part, c in checked:
            part.apply_state(c)
        for vcpu, (loaded, running, has_run, blocked) in zip(self.vcpus, flags):
            vcpu.loaded = loaded
            vcpu.has_run = has_run
            vcpu.blocked = blocked
            self._set_running(vcpu, running)

    # ------------------------------------------------------------ introspection
    @property
    def cpu_if_records(self) -> np.ndarray:
        """Every vCPU's CPU-interface record (:data:`vgic.ich.VCPU_IF`: the
        modelled ICH_* hardware and KVM's saved copy), one contiguous array
        indexed by vCPU: what the batch kernels work on.  A live view."""
        return self._vgic("cpu_if_records").records

    @property
    def backend(self) -> str:
        """``"core"`` (Cython) or ``"pure"`` (the pure-Python twin)."""
        return self._backend_name

    def vcpu_by_mpidr(self, mpidr: int) -> VCPU | None:
        """The vCPU whose MPIDR affinity (Aff3..Aff0) equals ``mpidr``'s, or
        None (KVM's kvm_mpidr_to_vcpu())."""
        i = self._mpidrs.vcpu(_index("mpidr", mpidr))
        return None if i < 0 else self.vcpus[i]

    def __repr__(self) -> str:
        return (f"<vgic.VM {self.nr_vcpus} vCPUs, {self.nr_irqs} IRQs, "
                f"dist {self.dist_base:#x}, redist {self.redist_base:#x}, backend {self.backend}>")


def _same_scalar(value: Any, mine: int | str | bool) -> bool:
    """``value`` is the integer, string or bool ``mine`` (a numpy integer
    counts for an integer; a float or an array never does: no ambiguous
    comparisons)."""
    if isinstance(mine, bool):
        return isinstance(value, (bool, np.bool_)) and bool(value) == mine
    if isinstance(mine, str):
        return isinstance(value, str) and value == mine
    return (isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
            and int(value) == mine)


def _index(name: str, value: Any) -> int:
    """An integer argument (Python or numpy int, or any ``__index__`` type;
    not a bool or a float): ``TypeError`` otherwise."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}") from None


__all__ = ["VM", "VCPU", "IrqState", "PARTS", "default_mpidr"]
