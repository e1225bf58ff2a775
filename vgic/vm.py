"""The VM: a GICv3 distributor, one redistributor per vCPU, and guest RAM."""
from __future__ import annotations

import errno
from typing import Any, NamedTuple

import numpy as np

from vgic import _backend, ich, kvm_device, regmap
from vgic.errors import KvmError, VgicError

# QEMU `virt` board layout, so traces recorded from real guests replay unchanged.
DEFAULT_DIST_BASE = 0x0800_0000
DEFAULT_REDIST_BASE = 0x080A_0000
DEFAULT_RAM_BASE = 0x4000_0000
DEFAULT_RAM_SIZE = 64 << 20
DEFAULT_NR_IRQS = 256          # KVM's default when userspace never sets NR_IRQS
MAX_IPA = 1 << 52              # the largest IPA space KVM/arm64 supports (52 bits)
FRAME_ALIGN = 0x10000          # GIC frames are 64 KiB aligned (KVM: -EINVAL otherwise)


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


def default_mpidr(vcpu_id: int) -> int:
    """KVM's reset MPIDR_EL1 for a vCPU id (reset_mpidr(), kvm-facts §1.5):
    Aff0 = id[3:0], Aff1 = id[11:4], Aff2 = id[19:12], bit 31 RES1."""
    return (1 << 31) | (vcpu_id & 0xF) | (((vcpu_id >> 4) & 0xFF) << 8) | (((vcpu_id >> 12) & 0xFF) << 16)


class CpuIf:
    """KVM's saved CPU-interface state of one vCPU (``struct vgic_v3_cpu_if``),
    as live views of the VM's record array."""

    def __init__(self, record: Any, nr_lrs: int, nr_aprs: int) -> None:
        self._rec = record
        #: List registers the modelled hardware has (ICH_VTR_EL2.ListRegs + 1).
        self.nr_lrs = nr_lrs
        #: Active-priority registers per group that the preemption bits imply.
        self.nr_aprs = nr_aprs

    vmcr = property(lambda self: int(self._rec["vgic_vmcr"]), doc="Saved ICH_VMCR_EL2.")
    hcr = property(lambda self: int(self._rec["vgic_hcr"]), doc="ICH_HCR_EL2 KVM restores on entry.")
    used_lrs = property(lambda self: int(self._rec["used_lrs"]), doc="LRs in use (vgic_v3_cpu_if.used_lrs).")

    @property
    def lr(self) -> np.ndarray:
        """The 16 saved LR slots in storage order (a view): slot i holds LR i
        (``lr_order="direct"``) or LR 15 - i (``"reverse"``)."""
        return self._rec["vgic_lr"]

    @property
    def ap0r(self) -> np.ndarray:
        """Saved ICH_AP0R<n>_EL2 (a view; the first ``nr_aprs`` are used)."""
        return self._rec["vgic_ap0r"]

    @property
    def ap1r(self) -> np.ndarray:
        """Saved ICH_AP1R<n>_EL2 (a view; the first ``nr_aprs`` are used)."""
        return self._rec["vgic_ap1r"]


class _Hooks:
    """What the guest's CPU interface hands to KVM: trapped SGI generation
    and DIR, and deactivations of HW-mapped interrupts."""

    def __init__(self, vcpu: "VCPU") -> None:
        self.vcpu = vcpu

    def sgi(self, name: str, value: int) -> None:
        self.vcpu.vm._vgic.dispatch_sgi(self.vcpu.id, name, value)

    def dir_trap(self, intid: int) -> None:
        self.vcpu.vm._vgic.deactivate_trap(self.vcpu.id, intid)

    def deactivate_physical(self, pintid: int) -> None:
        self.vcpu.vm._vgic.physical_deactivations.append(pintid)


class VCPU:
    """One vCPU of a :class:`VM`: its identity and its world switch."""

    def __init__(self, vm: "VM", vcpu_id: int) -> None:
        from vgic.cpuif import GuestCpuIf, HypRegs

        self.vm = vm
        #: vCPU index (KVM's vcpu_id; vCPUs are created in index order).
        self.id = vcpu_id
        #: MPIDR_EL1 as KVM resets it.
        self.mpidr = default_mpidr(vcpu_id)
        #: True between load() and put() (KVM's vcpu_load / vcpu_put).
        self.loaded = False
        #: True between enter() and exit(): the guest runs.
        self.running = False
        geo = (vm._cpu_if_records, vcpu_id, vm.nr_lrs, vm.pri_bits, vm.pre_bits)
        #: The modelled hardware ICH_*_EL2 registers, by name.
        self.hyp = HypRegs(*geo)
        #: KVM's saved CPU-interface state.
        self.cpu_if = CpuIf(vm._cpu_if_records[vcpu_id], vm.nr_lrs, ich.nr_aprs(vm.pre_bits))
        self._guest = GuestCpuIf(*geo, _Hooks(self), vm._icv)
        #: ICC_CTLR_EL1.PRIbits + 1 as userspace may lower it (CPU_SYSREGS).
        self.num_pri_bits = vm.pri_bits

    # ------------------------------------------------------------ world switch
    def load(self) -> None:
        """vcpu_load: restore ICH_VMCR_EL2 and the active-priority registers."""
        if not self.loaded:
            self.vm._hyp_if.restore_vmcr_aprs(self.id)
            self.loaded = True

    def put(self) -> None:
        """vcpu_put: save the active-priority registers."""
        if self.running:
            raise VgicError(f"vCPU {self.id} is running: exit() before put()")
        if self.loaded:
            self.vm._hyp_if.save_aprs(self.id)
            self.loaded = False

    def enter(self) -> None:
        """One guest entry: flush the ap_list into LRs (vgic_flush_lr_state)
        and restore them into the hardware (__vgic_v3_restore_state).  Loads
        the vCPU first if needed, as KVM_RUN does."""
        if self.running:
            raise VgicError(f"vCPU {self.id} is already running")
        self.load()
        self.vm._vgic.flush(self.id)
        self.vm._hyp_if.restore_state(self.id)
        self.running = True
        self.vm._running_changed(1)

    def exit(self) -> None:
        """One guest exit: save the hardware (__vgic_v3_save_state) and fold
        the LRs back into the interrupts' state (vgic_fold_lr_state)."""
        if not self.running:
            raise VgicError(f"vCPU {self.id} is not running")
        self.vm._hyp_if.save_state(self.id)
        self.vm._vgic.fold(self.id)
        self.running = False
        self.vm._running_changed(-1)

    # ------------------------------------------------------- the guest's view
    def sysreg_read(self, reg: Any) -> int:
        """A guest MRS of an ICC_*_EL1 register (name or (op0, op1, CRn, CRm,
        op2)), served by the virtual CPU interface while the vCPU runs."""
        if not self.running:
            raise VgicError(f"vCPU {self.id} is not running: enter() it first")
        return self._guest.read(reg)

    def sysreg_write(self, reg: Any, value: int) -> None:
        """A guest MSR of an ICC_*_EL1 register while the vCPU runs."""
        if not self.running:
            raise VgicError(f"vCPU {self.id} is not running: enter() it first")
        self._guest.write(reg, value)

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


def _check_int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    value = int(value)
    if not lo <= value <= hi:
        raise ValueError(f"{name} {value:#x} is outside {lo:#x}..{hi:#x}")
    return value


class VM:
    """A KVM/arm64 virtual machine's GICv3: distributor, redistributors, RAM.

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
        backend: str | None = None,
    ) -> None:
        nr_vcpus = _check_int("nr_vcpus", nr_vcpus, 1, regmap.MAX_VCPUS)
        nr_irqs = _check_int("nr_irqs", nr_irqs, 0, 1 << 32)
        if nr_irqs % 32 or not 64 <= nr_irqs <= 992:
            raise ValueError(f"nr_irqs {nr_irqs} is not a multiple of 32 in 64..992")
        self.nr_vcpus = nr_vcpus
        self.nr_irqs = nr_irqs
        self.dist_base = _check_int("dist_base", dist_base, 0, MAX_IPA)
        self.redist_base = _check_int("redist_base", redist_base, 0, MAX_IPA)
        self.ram_base = _check_int("ram_base", ram_base, 0, MAX_IPA)
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
        self._backend_name, impl = _backend.modules(backend)
        self._cpu_if_records = np.zeros(nr_vcpus, dtype=ich.VCPU_IF)
        self._hyp_if = impl.lr.HypIf(self._cpu_if_records, self.nr_lrs, self.pre_bits,
                                         lr_order == "reverse")
        mpidrs = np.array([default_mpidr(i) for i in range(nr_vcpus)], dtype=np.uint64)
        self._icv = impl.icv.Icv(self._cpu_if_records, self.nr_lrs, self.pri_bits, self.pre_bits)
        self._gic = impl.mmio.Gic(nr_vcpus, nr_irqs, self.dist_base, self.redist_base, mpidrs)
        self.vcpus: list[VCPU] = [VCPU(self, i) for i in range(nr_vcpus)]
        from vgic.vgic_v3 import VgicV3
        self._vgic = VgicV3(self, self._hyp_if, self._cpu_if_records, impl.aplist)
        self._nr_running = 0
        # The hot entry points are the backend's own methods, bound once, so a
        # call costs one method call and no Python frame of ours.
        self.mmio_read = self._gic.mmio_read  # type: ignore[method-assign]
        self.mmio_write = self._gic.mmio_write  # type: ignore[method-assign]
        self.mmio_replay = self._gic.mmio_replay  # type: ignore[method-assign]

    def _running_changed(self, delta: int) -> None:
        # While any vCPU runs, guest active-state MMIO halts them (KVM's
        # vgic_access_active_prepare); with none running it costs nothing.
        self._nr_running += delta
        self._gic.halt_hook = self._vgic.halted if self._nr_running else None

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
        for name in ("dist_base", "redist_base"):
            if getattr(self, name) % FRAME_ALIGN:
                raise ValueError(f"{name} {getattr(self, name):#x} is not 64 KiB aligned")
        spans = [
            ("distributor", self.dist_base, regmap.FRAME_SIZE),
            ("redistributors", self.redist_base, self.nr_vcpus * regmap.REDIST_STRIDE),
            ("RAM", self.ram_base, self.memory.size),
        ]
        for name, base, size in spans:
            if base + size > MAX_IPA:
                raise ValueError(f"{name} at {base:#x}+{size:#x} leaves the 52-bit IPA space")
        for i, (n1, b1, s1) in enumerate(spans):
            for n2, b2, s2 in spans[i + 1:]:
                if s1 and s2 and b1 < b2 + s2 and b2 < b1 + s1:
                    raise ValueError(f"{n1} at {b1:#x}+{s1:#x} overlaps {n2} at {b2:#x}+{s2:#x}")

    # ------------------------------------------------------------- guest MMIO
    # These three are replaced per instance by the backend's bound methods;
    # they are here for documentation and for help().
    def mmio_read(self, addr: int, size: int, vcpu: int = 0) -> int:  # type: ignore[no-redef]
        """A guest load of ``size`` bytes (1, 2, 4 or 8) at ``addr`` by vCPU ``vcpu``.

        Accesses inside a GIC frame behave as KVM emulates them, including
        RAZ/WI for unknown offsets, bad widths and misalignment.  Raises
        :class:`vgic.UnmappedAccess` outside every frame and ``ValueError`` for
        a bad size, a negative address or an unknown vCPU.
        """
        return self._gic.mmio_read(addr, size, vcpu)

    def mmio_write(self, addr: int, size: int, value: int, vcpu: int = 0) -> None:  # type: ignore[no-redef]
        """A guest store; as :meth:`mmio_read`, plus ``ValueError`` for a
        value that does not fit in ``size`` bytes."""
        self._gic.mmio_write(addr, size, value, vcpu)

    def mmio_replay(self, trace: np.ndarray) -> np.ndarray:  # type: ignore[no-redef]
        """Run a numpy array of :data:`vgic.MMIO_ACCESS` records in order and
        return the value each access read (writes give 0) as ``uint64``.

        The trace is validated whole before anything runs: a bad record raises
        (``TypeError`` for a wrong dtype, ``ValueError`` or
        :class:`vgic.UnmappedAccess` naming the record) and changes nothing.
        """
        return self._gic.mmio_replay(trace)

    # --------------------------------------------------------- interrupt lines
    def set_irq_level(self, intid: int, level: bool, vcpu: int | None = None) -> None:
        """Drive an interrupt line, as KVM_IRQ_LINE / kvm_vgic_inject_irq.

        An SPI (``32 <= intid < nr_irqs``) needs no ``vcpu``; a PPI
        (``16 <= intid < 32``) needs one; for an SPI ``vcpu`` is ignored, as
        KVM_IRQ_LINE ignores its vCPU field for SPIs.  For a level-triggered interrupt the
        line level follows ``level``; for an edge-triggered one a rising level
        latches it pending and a falling one does nothing.  Anything KVM would
        refuse (an SGI, an INTID outside the VM, a PPI without a vCPU, an
        unknown vCPU) raises :class:`vgic.KvmError` with ``EINVAL``.
        """
        if isinstance(intid, bool) or not isinstance(intid, (int, np.integer)):
            raise TypeError(f"intid must be an integer, not {type(intid).__name__}")
        intid = int(intid)
        if vcpu is not None and (isinstance(vcpu, bool) or not isinstance(vcpu, (int, np.integer))):
            raise TypeError(f"vcpu must be an integer or None, not {type(vcpu).__name__}")
        if regmap.NR_SGIS <= intid < regmap.NR_PRIVATE_IRQS:
            if vcpu is None:
                raise KvmError(errno.EINVAL, f"PPI {intid} needs a vcpu")
            if not 0 <= vcpu < self.nr_vcpus:
                raise KvmError(errno.EINVAL, f"vcpu {vcpu} does not exist (the VM has {self.nr_vcpus})")
            self._gic.set_irq_level(int(vcpu), intid, bool(level))
        elif regmap.NR_PRIVATE_IRQS <= intid < self.nr_irqs:
            self._gic.set_irq_level(0, intid, bool(level))
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
        self._gic.set_irq_level_batch(np.where(ppi, vc, 0), ids, lv)

    def irq(self, intid: int, vcpu: int | None = None) -> IrqState:
        """The state of one interrupt; private INTIDs (< 32) need ``vcpu``."""
        if intid < regmap.NR_PRIVATE_IRQS and vcpu is None:
            raise ValueError(f"intid {intid} is private: give a vcpu")
        if not 0 <= intid < self.nr_irqs:
            raise ValueError(f"intid {intid} is outside 0..{self.nr_irqs - 1}")
        en, pl, ll, act, grp, edge, prio, route, target = self._gic.irq_state(vcpu or 0, intid)
        return IrqState(intid, bool(en), bool(pl), bool(ll), bool(act), int(grp),
                        "edge" if edge else "level", int(prio), int(route), int(target))

    # ----------------------------------------------------- KVM device attributes
    def get_device_attr(self, group: int, attr: int) -> int:
        """KVM_GET_DEVICE_ATTR on the vGICv3 device (see :mod:`vgic.kvm_device`)."""
        return kvm_device.get_attr(self, group, attr)

    def set_device_attr(self, group: int, attr: int, value: int) -> None:
        """KVM_SET_DEVICE_ATTR on the vGICv3 device (see :mod:`vgic.kvm_device`)."""
        kvm_device.set_attr(self, group, attr, value)

    def has_device_attr(self, group: int, attr: int) -> bool:
        """KVM_HAS_DEVICE_ATTR on the vGICv3 device: True where KVM returns 0."""
        return kvm_device.has_attr(self, group, attr)

    # ----------------------------------------------------- batch world switch
    def _batch_ids(self, vcpus: Any, running: bool) -> list[int]:
        n = self.nr_vcpus
        if vcpus is None:
            out = list(range(n))
        else:
            ids = np.asarray(vcpus)
            if ids.size == 0 and ids.ndim == 1:
                ids = ids.astype(np.int64)          # [] arrives as float64
            if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
                raise TypeError("vcpus must be a 1-D array of vCPU indices or None")
            ids = ids.astype(np.int64)
            outside = (ids < 0) | (ids >= n)
            if outside.any():
                k = int(np.argmax(outside))
                raise ValueError(f"vcpus[{k}] = {int(ids[k])} is not a vCPU index (0..{n - 1})")
            if np.unique(ids).size != ids.size:
                raise ValueError("vcpus names a vCPU twice")
            out = ids.tolist()
        all_vcpus = self.vcpus
        wrong = [i for i in out if all_vcpus[i].running != running]
        if wrong:
            state = "already running" if not running else "not running"
            raise VgicError(f"vCPU {wrong[0]} is {state}")
        return out

    def enter_vcpus(self, vcpus: Any = None) -> None:
        """``enter()`` of many vCPUs (every vCPU, or the indices in ``vcpus``
        in that order), the same as entering them one by one, with one
        kernel call per phase (load, flush, hyp restore) for all.
        Everything is validated before anything runs."""
        ids = self._batch_ids(vcpus, running=False)
        to_load = [i for i in ids if not self.vcpus[i].loaded]
        self._hyp_if.load_batch(to_load)
        arr = np.array(ids, dtype=np.int64)
        self._vgic.lists.flush_batch(arr)
        self._hyp_if.restore_state_batch(arr)
        for i in ids:
            v = self.vcpus[i]
            v.loaded = v.running = True
        self._running_changed(len(ids))

    def exit_vcpus(self, vcpus: Any = None) -> None:
        """``exit()`` of many vCPUs: one hyp-save and one fold kernel call."""
        ids = self._batch_ids(vcpus, running=True)
        arr = np.array(ids, dtype=np.int64)
        self._hyp_if.save_state_batch(arr)
        self._vgic.lists.fold_batch(arr)
        for i in ids:
            self.vcpus[i].running = False
        self._running_changed(-len(ids))

    def put_vcpus(self, vcpus: Any = None) -> None:
        """``put()`` of many vCPUs (none may be running): one kernel call."""
        ids = self._batch_ids(vcpus, running=False)
        self._hyp_if.put_batch([i for i in ids if self.vcpus[i].loaded])
        for i in ids:
            self.vcpus[i].loaded = False

    # ------------------------------------------------------------ introspection
    @property
    def cpu_if_records(self) -> np.ndarray:
        """Every vCPU's CPU-interface record (:data:`vgic.ich.VCPU_IF`: the
        modelled ICH_* hardware and KVM's saved copy), one contiguous array
        indexed by vCPU: what the batch kernels work on.  A live view."""
        return self._cpu_if_records

    @property
    def backend(self) -> str:
        """``"core"`` (Cython) or ``"pure"`` (the pure-Python twin)."""
        return self._backend_name

    def vcpu_by_mpidr(self, mpidr: int) -> VCPU | None:
        """The vCPU whose MPIDR affinity (Aff3..Aff0) equals ``mpidr``'s, or None."""
        aff = mpidr & 0xFF00FFFFFF
        for v in self.vcpus:
            if v.mpidr & 0xFF00FFFFFF == aff:
                return v
        return None

    def __repr__(self) -> str:
        return (f"<vgic.VM {self.nr_vcpus} vCPUs, {self.nr_irqs} IRQs, "
                f"dist {self.dist_base:#x}, redist {self.redist_base:#x}, backend {self.backend}>")
