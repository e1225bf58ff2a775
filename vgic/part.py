"""The seam every device and CPU feature of a VM plugs into.

A VM is a list of parts in KVM's order (:data:`vgic.vm.PARTS`): today the
vGICv3; the ITS, the arch timers and FPSIMD/SVE follow.  A part is one
module (plus its kernels and their twins) that declares:

* **its MMIO frames**: the rows of :data:`vgic.regmap.FRAMES` whose ``part``
  is its :attr:`Part.name`, and where they sit (:meth:`Part.map_frames`
  attaches its C state to them and maps their windows on the VM's bus; its
  handlers get that state as their first argument);
* **its system registers**: the rows of :data:`vgic.sysregs.TABLE` whose
  ``owner`` is its name, served by the accessor :meth:`Part.vcpu_sysregs`
  returns per vCPU;
* **its per-vCPU hooks**: ``vcpu_load``, ``vcpu_put``, ``vcpu_enter`` and
  ``vcpu_exit`` and their batch forms over an array of vCPU indices.  The VM
  calls load and enter in table order and put and exit in reverse, as
  ``kvm_arch_vcpu_load()`` loads the vgic before the timer and the FP state
  and ``kvm_arch_vcpu_put()`` puts them in the opposite order, and as the run
  loop flushes the vgic first before entry and syncs it last after exit;
* **its per-vCPU views** (:meth:`Part.vcpu_attrs`): attributes set on each
  :class:`vgic.VCPU` (the vGICv3's ``hyp`` and ``cpu_if``; later
  ``vcpu.timer``);
* **its KVM device**, if it is one (``device_type`` is the
  KVM_CREATE_DEVICE type): ``get_device_attr``/``set_device_attr``/
  ``has_device_attr`` with KVM's encodings and errnos;
* **its state**: :meth:`Part.state` names everything it holds and
  :meth:`Part.check_state` / :meth:`Part.apply_state` load it back, checking
  all of it before anything changes.

Nothing else in the VM changes when a part is added (see
``docs/architecture.md``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    from vgic.vm import VCPU, VM


class Part:
    """Base class of a VM's parts; every hook does nothing by default."""

    #: The part's name: its key in ``vm.state()``, the ``part`` of its
    #: frames in :data:`vgic.regmap.FRAMES`, the ``owner`` of its system
    #: registers in :data:`vgic.sysregs.TABLE`.
    name: ClassVar[str] = ""
    #: KVM_CREATE_DEVICE type when the part is a KVM device, else None.
    device_type: ClassVar[int | None] = None

    #: The names of the per-vCPU views :meth:`vcpu_attrs` returns (the VCPU
    #: builds them at their first use).
    vcpu_attr_names: ClassVar[tuple[str, ...]] = ()

    #: True for a part whose entry work precedes the other parts' (the
    #: timer's levels must reach the vGIC before its flush); exits run in
    #: the reverse of the entry order.
    enter_early: ClassVar[bool] = False

    @classmethod
    def present(cls, vm: VM) -> bool:
        """Whether ``vm`` has this part (an optional device, as the ITS)."""
        return True

    def __init__(self, vm: VM, impl: Any) -> None:
        self.vm = vm
        self.impl = impl

    # ------------------------------------------------------------- MMIO
    def map_frames(self, bus: Any) -> None:
        """Attach this part's state to its frames and map their windows."""

    # -------------------------------------------------------- per vCPU
    def vcpu_attrs(self, vcpu: VCPU) -> dict[str, Any]:
        """Attributes to set on ``vcpu`` (views of this part's per-vCPU state)."""
        return {}

    def vcpu_sysregs(self, vcpu: VCPU) -> Any:
        """The object whose ``read(name)``/``write(name, value)`` serve the
        guest's accesses to this part's system registers on ``vcpu``."""
        return None

    def vcpu_load(self, vcpu: int) -> None:
        """kvm_arch_vcpu_load() for this part."""

    def vcpu_put(self, vcpu: int) -> None:
        """kvm_arch_vcpu_put() for this part."""

    def vcpu_enter(self, vcpu: int) -> None:
        """What the run loop does for this part before entering the guest."""

    def vcpu_exit(self, vcpu: int) -> None:
        """What the run loop does for this part after the guest exits."""

    def check_first_run(self, vcpu: int) -> None:
        """What this part refuses a vCPU's first KVM_RUN for
        (:class:`vgic.KvmError`); changes nothing.  Every part is checked
        before any part's :meth:`first_run` runs."""

    def first_run(self, vcpu: int) -> None:
        """kvm_arch_vcpu_run_pid_change() for this part, at a vCPU's first
        KVM_RUN before anything loads (after every part's check passed)."""

    def vcpu_reset(self, vcpu: int) -> None:
        """A vCPU reset (KVM_ARM_VCPU_INIT again, kvm_reset_vcpu) for this part."""

    def vcpu_block(self, vcpu: int) -> None:
        """The vCPU blocks (WFI), before it is put."""

    def vcpu_unblock(self, vcpu: int) -> bool | None:
        """The vCPU wakes, after it is loaded again; True if this part woke it."""
        return None

    def vcpu_wakes(self, vcpu: int) -> bool:
        """Whether this part would make the (blocked or exited) vCPU
        runnable now: KVM's kvm_arch_vcpu_runnable and the wake-ups of
        kvm_vcpu_check_block, for this part."""
        return False

    # ----------------------------------------------------------- one-reg
    def one_regs(self) -> list[int]:
        """The KVM one-reg IDs this part serves (KVM_GET_REG_LIST order)."""
        return []

    def vcpu_one_regs(self, vcpu: int) -> list[int]:
        """The one-reg IDs vCPU ``vcpu`` has (KVM_GET_REG_LIST)."""
        return self.one_regs()

    def claims_one_reg(self, reg_id: int) -> bool:
        """Whether an ID outside :meth:`one_regs` is still this part's to
        refuse with its own errno (KVM's range checks)."""
        return False

    def get_one_reg(self, vcpu: int, reg_id: int) -> int:
        """KVM_GET_ONE_REG of one of :meth:`one_regs`."""
        raise NotImplementedError

    def set_one_reg(self, vcpu: int, reg_id: int, value: Any) -> None:
        """KVM_SET_ONE_REG of one of :meth:`one_regs`."""
        raise NotImplementedError

    def get_one_regs(self, vcpus: np.ndarray, reg_ids: list[int]) -> np.ndarray:
        """KVM_GET_ONE_REG of each of ``reg_ids`` (this part's) on each of the
        distinct vCPUs ``vcpus``: a new ``uint8`` array of shape (vCPUs,
        bytes) that the caller owns (never a view of the part's state), each
        register little-endian in its KVM_REG_SIZE, in ``reg_ids`` order.
        By default one :meth:`get_one_reg` per value; a part may vectorise
        it."""
        sizes = [reg_size(r) for r in reg_ids]
        out = np.zeros((len(vcpus), sum(sizes)), dtype=np.uint8)
        for row, v in enumerate(vcpus.tolist()):
            col = 0
            for k, (r, size) in enumerate(zip(reg_ids, sizes)):
                value = _reg_error(k, v, self.get_one_reg, v, r)
                out[row, col:col + size] = np.frombuffer(_reg_bytes(value, size), dtype=np.uint8)
                col += size
        return out

    def set_one_regs(self, vcpus: np.ndarray, reg_ids: list[int], data: np.ndarray) -> None:
        """KVM_SET_ONE_REG of each of ``reg_ids`` on each of ``vcpus`` from
        ``data`` (laid out as :meth:`get_one_regs` returns it), vCPU by
        vCPU in order; by default one :meth:`set_one_reg` per value,
        stopping at the first refused one."""
        sizes = [reg_size(r) for r in reg_ids]
        for row, v in enumerate(vcpus.tolist()):
            col = 0
            for k, (r, size) in enumerate(zip(reg_ids, sizes)):
                raw = data[row, col:col + size].tobytes()
                value: Any = int.from_bytes(raw, "little") if size <= 8 else raw
                _reg_error(k, v, self.set_one_reg, v, r, value)
                col += size

    # ------------------------------------------------- vCPU device attributes
    def has_vcpu_attr(self, group: int, attr: int) -> bool:
        """KVM_HAS_DEVICE_ATTR on a vCPU fd: True where this part serves it."""
        return False

    def get_vcpu_attr(self, vcpu: int, group: int, attr: int) -> int:
        raise NotImplementedError

    def set_vcpu_attr(self, vcpu: int, group: int, attr: int, value: Any) -> None:
        raise NotImplementedError

    def world_switch(self) -> tuple[Any, Any, Any, Any]:
        """The callables the VM runs for (load, put, enter, exit) of one vCPU
        (each takes the vCPU index), or None for a step this part has
        nothing to do in.  By default the methods below; a part may hand
        its kernels' own methods, so a step costs no Python frame of its."""
        return (self.vcpu_load, self.vcpu_put, self.vcpu_enter, self.vcpu_exit)

    # Batch forms: ``ids`` is a checked int64 array of distinct vCPU indices.
    def load_batch(self, ids: np.ndarray) -> None:
        for i in ids.tolist():
            self.vcpu_load(i)

    def put_batch(self, ids: np.ndarray) -> None:
        for i in ids.tolist():
            self.vcpu_put(i)

    def enter_batch(self, ids: np.ndarray) -> None:
        for i in ids.tolist():
            self.vcpu_enter(i)

    def exit_batch(self, ids: np.ndarray) -> None:
        for i in ids.tolist():
            self.vcpu_exit(i)

    # ------------------------------------------------------------- state
    def state(self) -> dict[str, Any]:
        """Everything this part holds, under architectural or KVM names."""
        return {}

    def check_state(self, state: Any) -> Any:
        """Check ``state`` (as :meth:`state` returns it) and return what
        :meth:`apply_state` needs; raise :class:`vgic.StateError` naming the
        first bad field.  Changes nothing."""
        if state != {}:
            from vgic.gic_state import StateError
            raise StateError(f"{self.name}: expected an empty dict")
        return None

    def check_links(self, checked: dict[str, Any]) -> None:
        """Check what ties this part's state to other parts' (``checked``:
        every part's :meth:`check_state` result by name); raise
        :class:`vgic.StateError`.  Changes nothing."""

    def apply_state(self, checked: Any) -> None:
        """Make the state what :meth:`check_state` checked; cannot fail."""

    def load_state(self, state: Any) -> None:
        """:meth:`check_state` then :meth:`apply_state`: all or nothing."""
        self.apply_state(self.check_state(state))

    def checkpoint(self) -> Any:
        """This part's state now, in the form :meth:`apply_state` takes (what
        :meth:`check_state` of :meth:`state` returns), so another part of a
        VM with the same options can adopt it.  A part may make this cheaper
        than the round trip through names."""
        return self.check_state(self.state())


def reg_size(reg_id: int) -> int:
    """A one-reg ID's size in bytes (KVM_REG_SIZE, bits [55:52])."""
    return 1 << ((reg_id >> 52) & 0xF)


def _reg_bytes(value: Any, size: int) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return int(value).to_bytes(size, "little")


def _reg_error(k: int, vcpu: int, fn: Any, *args: Any) -> Any:
    """``fn(*args)``, a refusal re-raised with the register's position ``k``."""
    from vgic.errors import KvmError
    try:
        return fn(*args)
    except KvmError as exc:
        raise KvmError(exc.errno or 0, f"reg_ids[{k}] on vCPU {vcpu}: {exc.strerror}", index=k) from exc


class KernelPart(Part):
    """A part whose world switch is its kernel's: ``self.kernel`` has
    ``load``/``put``/``enter``/``exit`` of one vCPU and their ``*_batch``
    forms (the arch timers, FPSIMD/SVE)."""

    kernel: Any

    def world_switch(self) -> tuple[Any, Any, Any, Any]:
        k = self.kernel
        return (k.load, k.put, k.enter, k.exit)

    def vcpu_load(self, vcpu: int) -> None:
        self.kernel.load(vcpu)

    def vcpu_put(self, vcpu: int) -> None:
        self.kernel.put(vcpu)

    def vcpu_enter(self, vcpu: int) -> None:
        self.kernel.enter(vcpu)

    def vcpu_exit(self, vcpu: int) -> None:
        self.kernel.exit(vcpu)

    def load_batch(self, ids: np.ndarray) -> None:
        self.kernel.load_batch(ids)

    def put_batch(self, ids: np.ndarray) -> None:
        self.kernel.put_batch(ids)

    def enter_batch(self, ids: np.ndarray) -> None:
        self.kernel.enter_batch(ids)

    def exit_batch(self, ids: np.ndarray) -> None:
        self.kernel.exit_batch(ids)
