"""Type stubs for ``vgic._core.timer`` (twin: ``vgic._pure.timer``): the arch
timers of a VM, KVM's arch_timer.c on an nVHE host (docs/timer-facts.md)."""
from typing import Any

import numpy as np
import numpy.typing as npt

class Timers:
    """Every vCPU's EL1 virtual and physical timers (``records``, one
    ``vgic.gtimer.TIMER_VCPU`` each) and the VM's counter (``vm``, one
    ``vgic.gtimer.TIMER_VM``)."""

    records: npt.NDArray[np.void]
    vm: npt.NDArray[np.void]
    def __init__(self, nr_vcpus: int, gic: Any = None, policy: int = 0, cntfrq: int = ...) -> None: ...
    def first_run(self, vcpu: int) -> None:
        """kvm_timer_enable(): PPIs checked (KvmError EINVAL), the vtimer HW-mapped."""
    def load(self, vcpu: int) -> None:
        """vcpu_load (lazy: kvm_timer_vcpu_load)."""
    def put(self, vcpu: int) -> None:
        """vcpu_put (lazy: save, ptimer cancelled, background timer if blocking)."""
    def enter(self, vcpu: int) -> None:
        """Guest entry, before the vGIC's flush (eager: levels, restore)."""
    def exit(self, vcpu: int) -> None:
        """Guest exit, after the vGIC's fold (eager: save, levels)."""
    def block(self, vcpu: int) -> None:
        """The vCPU blocks (before its put)."""
    def unblock(self, vcpu: int) -> bool:
        """The vCPU wakes (after its load); True if its background timer fired."""
    def woken(self, vcpu: int) -> bool:
        """True once the background timer of the blocked vCPU fired."""
    def host_check(self, vcpu: int) -> bool:
        """The host takes the vtimer's physical PPI if asserted and inactive."""
    def deactivated(self, vcpu: int) -> None:
        """The guest deactivated the forwarded vtimer interrupt."""
    def read(self, vcpu: int, reg: int) -> int:
        """A guest MRS of a ``TREG_*`` timer register."""
    def write(self, vcpu: int, reg: int, value: int) -> None:
        """A guest MSR of a ``TREG_*`` timer register."""
    def take_kicks(self) -> list[int]:
        """The vCPUs a timer raised its interrupt on while they ran (cleared)."""
    def advance(self, ticks: int) -> int:
        """Move the counter on, firing due events in order; how many fired."""
    def get_reg(self, vcpu: int, which: int) -> int:
        """KVM_GET_ONE_REG of a ``ONEREG_*`` timer register."""
    def get_reg_batch(self, vcpus: npt.ArrayLike, which: int) -> npt.NDArray[np.uint64]:
        """:meth:`get_reg` of one register on many vCPUs: the values."""
    def set_reg_batch(self, vcpus: npt.ArrayLike, which: int, values: npt.ArrayLike) -> None:
        """:meth:`set_reg` of one register on many vCPUs, in order."""
    def set_reg(self, vcpu: int, which: int, value: int) -> None:
        """KVM_SET_ONE_REG of a ``ONEREG_*`` timer register."""
    def set_counter_offset(self, offset: int) -> None:
        """KVM_ARM_SET_COUNTER_OFFSET."""
    def reset(self, vcpu: int) -> None:
        """kvm_timer_vcpu_reset()."""
    def load_batch(self, ids: npt.ArrayLike) -> None: ...
    def put_batch(self, ids: npt.ArrayLike) -> None: ...
    def enter_batch(self, ids: npt.ArrayLike) -> None: ...
    def exit_batch(self, ids: npt.ArrayLike) -> None: ...
    def save_batch(self, ids: npt.ArrayLike) -> None:
        """timer_save_state of the vtimer of every vCPU in ``ids``."""
    def restore_batch(self, ids: npt.ArrayLike) -> None:
        """timer_restore_state of the vtimer of every vCPU in ``ids``."""
    def expiry_batch(self, ids: npt.ArrayLike) -> npt.NDArray[np.uint64]:
        """kvm_timer_earliest_exp of each vCPU as a counter deadline."""

def plain_timer_loop(records: npt.NDArray[np.void], ids: npt.ArrayLike, counter: int,
                     voffset: int) -> npt.NDArray[np.uint64]:
    """The benchmark's baseline: the same record work in a plain C loop."""
