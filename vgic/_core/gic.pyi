"""Type stubs for ``vgic._core.gic`` (twin: ``vgic._pure.gic``): the vGICv3
distributor and redistributors' state and the handler families of their frames."""
from typing import Any

import numpy.typing as npt

from vgic.gic_state import GicArrays

from .cstate import CState

class Gic(CState):
    """Distributor and redistributor state of one VM: ``nr_vcpus``
    redistributors, ``nr_irqs`` INTIDs below the LPIs (checked as KVM checks
    NR_IRQS), ``mpidrs[i]`` the MPIDR_EL1 of vCPU *i*.  Its frames (GICD,
    GICR_RD, GICR_SGI) are served once it is attached to a ``mmio.Bus``."""

    nr_irqs: int
    nr_vcpus: int
    #: LPI INTIDs the state can hold: NR_LPIS (57344) with ``lpis``, else 0.
    nr_lpis: int
    #: GICD_CTLR.EnableGrp1 (KVM's dist->enabled).
    dist_enabled: bool
    #: Moves whenever an interrupt becomes deliverable or the guest enables
    #: the distributor (where KVM kicks vCPUs).
    seq_counter: int

    def __init__(self, nr_vcpus: int, nr_irqs: int, mpidrs: npt.ArrayLike, lpis: bool = False) -> None: ...
    def lpis(self) -> list[int]:
        """The LPIs that exist (KVM: have a struct vgic_irq), in INTID order."""
    def clear_queued(self) -> None:
        """Empty every ap_list (a new ApLists starts empty)."""
    def attach_memory(self, memory: npt.NDArray[Any], gpa: int) -> None:
        """Guest RAM (a writable 1-D uint8 array at guest-physical ``gpa``)
        for the LPI property and pending tables."""
    def map_phys_irq(self, vcpu: int, intid: int, pintid: int) -> None:
        """kvm_vgic_map_phys_irq(): private INTID 16..31 forwarded from host PPI ``pintid``."""
    def unmap_phys_irq(self, vcpu: int, intid: int) -> None:
        """kvm_vgic_unmap_phys_irq()."""
    def phys_irq(self, vcpu: int, intid: int) -> int:
        """The host PPI a private INTID is mapped to, or -1."""
    def map_is_active(self, vcpu: int, intid: int) -> bool:
        """kvm_vgic_map_is_active(): mapped and virtually active."""
    def host_active(self, vcpu: int) -> int:
        """Active bits of the host PPIs (0..31) of the physical CPU under ``vcpu``."""
    def set_host_active(self, vcpu: int, mask: int) -> None:
        """Set those bits (irq_set_irqchip_state(IRQCHIP_STATE_ACTIVE))."""
    def host_deactivate(self, vcpu: int, pintid: int) -> None:
        """A guest deactivation through an LR with HW = 1."""
    def save_pending_tables(self) -> int:
        """KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES: 0 or -EFAULT."""
    def mpidr_to_vcpu(self, mpidr: int) -> int:
        """The vCPU whose MPIDR affinity equals ``mpidr``'s, or -1."""

    # ---- device-attribute access -------------------------------------------
    def line_level_read(self, vcpu: int, intid: int) -> int:
        """KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO read of INTIDs ``intid..intid+31``."""
    def line_level_write(self, vcpu: int, intid: int, value: int) -> None:
        """KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO write of INTIDs ``intid..intid+31``."""

    # ---- interrupt lines ----------------------------------------------------
    def set_irq_level(self, vcpu: int, intid: int, level: bool) -> None:
        """kvm_vgic_inject_irq for an SPI (``vcpu`` ignored) or a PPI."""
    def set_irq_level_batch(self, vcpus: npt.ArrayLike, intids: npt.ArrayLike, levels: npt.ArrayLike) -> None:
        """set_irq_level for each entry of three 1-D arrays, in order, all checked first."""

    # ---- the KVM side's access ----------------------------------------------
    def set_irq_bit(self, vcpu: int, intid: int, field: int, value: bool) -> None:
        """Set one single-bit field (0 enabled, 1 pending_latch, 2 line_level,
        3 active, 4 group, 5 edge) of an INTID's state."""
    def irq_scan(self, vcpu: int) -> list[int]:
        """INTIDs that may need a list register (active, or enabled and
        pending), vCPU ``vcpu``'s private ones, then the SPIs, then the LPIs."""

    # ---- introspection and named state --------------------------------------
    def irq_state(self, vcpu: int, intid: int) -> tuple[int, int, int, int, int, int, int, int, int]:
        """``(enabled, pending_latch, line_level, active, group, edge, priority,
        route, target)`` of one INTID; ``route``/``target`` are 0/-1 for
        private interrupts."""
    def arrays(self) -> GicArrays:
        """The state as :class:`vgic.gic_state.GicArrays` (copies)."""
    def state(self) -> dict[str, Any]:
        """The named state (:mod:`vgic.gic_state` layout)."""
    def load_state(self, state: Any) -> None:
        """Replace the whole state, checked first (``vgic.StateError``, nothing changed)."""
    def apply_arrays(self, a: GicArrays) -> None:
        """Write checked arrays into the state."""
