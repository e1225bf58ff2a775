"""Type stubs for ``vgic._core.mmio``: the table-driven GICv3 MMIO core.

``vgic._pure.mmio`` is its pure-Python twin with exactly this interface; the
package picks one of the two (``VGIC_PUREPYTHON=1`` selects the twin).
"""
from collections.abc import Callable
from typing import Any, ContextManager

import numpy as np
import numpy.typing as npt

def set_lookup(mode: str) -> None:
    """Choose region lookup: ``"direct"`` (index table, default) or ``"bsearch"``."""

def get_lookup() -> str:
    """The region lookup in use: ``"direct"`` or ``"bsearch"``."""

def regions(frame: int) -> list[tuple[str, int, int, int, int, int, str]]:
    """The compiled region table of a frame.

    Rows are ``(name, offset, length, widths, bpi, first_intid, ops)`` sorted by
    offset, built from :data:`vgic.regmap.FRAMES`.
    """

class Noop:
    """A do-nothing extension type: the per-call baseline of the benchmarks."""

    def __init__(self) -> None: ...
    def mmio_write(self, addr: int, size: int, value: int, vcpu: int = 0) -> None: ...
    def mmio_read(self, addr: int, size: int, vcpu: int = 0) -> int: ...

class Gic:
    """Distributor and redistributor state of one VM with its MMIO dispatch.

    ``mpidrs[i]`` is vCPU *i*'s MPIDR_EL1; vCPU *i*'s redistributor sits at
    ``redist_base + i * 0x20000`` (KVM places redistributors in vCPU creation
    order). Arguments are assumed validated by :class:`vgic.VM`, except those
    of the per-access methods, which validate their own.
    """

    nr_irqs: int
    nr_vcpus: int
    dist_base: int
    redist_base: int
    #: GICD_CTLR.EnableGrp1 (KVM's dist->enabled).
    dist_enabled: bool
    #: None, or a callable returning a context manager that halts every
    #: running vCPU; guest I[SC]ACTIVER accesses (and whole replays) run in it.
    halt_hook: Callable[[], ContextManager[Any]] | None

    def __init__(self, nr_vcpus: int, nr_irqs: int, dist_base: int,
                 redist_base: int, mpidrs: npt.NDArray[np.uint64]) -> None: ...

    # ---- guest MMIO -------------------------------------------------------
    def mmio_read(self, addr: int, size: int, vcpu: int = 0) -> int:
        """A guest load of ``size`` bytes at ``addr`` by vCPU ``vcpu``.

        Raises ``ValueError`` for a size outside (1, 2, 4, 8), a negative
        address or a vCPU index out of range, and :class:`vgic.UnmappedAccess`
        for an address outside every GIC frame.  RAZ/WI cases read 0.
        """
    def mmio_write(self, addr: int, size: int, value: int, vcpu: int = 0) -> None:
        """A guest store; as :meth:`mmio_read`, and ``ValueError`` when
        ``value`` does not fit in ``size`` bytes or is negative."""
    def mmio_replay(self, trace: npt.NDArray[Any]) -> npt.NDArray[np.uint64]:
        """Run a trace of :data:`vgic.MMIO_ACCESS` records in order.

        Returns the value each access read (0 for writes).  The whole trace is
        validated first: a wrong dtype raises ``TypeError``; a bad size, value
        or vCPU raises ``ValueError`` and an unmapped address
        :class:`vgic.UnmappedAccess`, both naming the record index, and in
        either case no access is performed.
        """

    # ---- userspace (KVM device attribute) access ---------------------------
    def has_region(self, frame: int, offset: int) -> bool:
        """True if a 32-bit access at ``offset`` of ``frame`` hits a region."""
    def uaccess_read(self, frame: int, vcpu: int, offset: int) -> int:
        """A 32-bit userspace read with KVM's uaccess semantics (0 if no region)."""
    def uaccess_write(self, frame: int, vcpu: int, offset: int, value: int) -> int:
        """A 32-bit userspace write; returns 0 or a negative errno."""
    def line_level_read(self, vcpu: int, intid: int) -> int:
        """KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO read of INTIDs ``intid..intid+31``."""
    def line_level_write(self, vcpu: int, intid: int, value: int) -> None:
        """KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO write of INTIDs ``intid..intid+31``."""

    # ---- interrupt lines ----------------------------------------------------
    def set_irq_level(self, vcpu: int, intid: int, level: bool) -> None:
        """kvm_vgic_inject_irq for a validated SPI (``vcpu`` ignored) or PPI."""
    def set_irq_level_batch(self, vcpus: npt.ArrayLike, intids: npt.ArrayLike, levels: npt.ArrayLike) -> None:
        """set_irq_level for each entry of three 1-D arrays, in order, all checked first."""

    # ---- the KVM side's access ----------------------------------------------
    def set_irq_bit(self, vcpu: int, intid: int, field: int, value: bool) -> None:
        """Set one single-bit field (0 enabled, 1 pending_latch, 2 line_level,
        3 active, 4 group, 5 edge) of an INTID's state."""
    def irq_scan(self, vcpu: int) -> list[int]:
        """INTIDs that may need a list register (active, or enabled and
        pending), vCPU ``vcpu``'s private ones then the SPIs."""
    def state_capsule(self) -> Any:
        """Core only: a PyCapsule ``"vgic._core.GicState"`` of the C state,
        for the other ``vgic._core`` kernels."""

    # ---- introspection ------------------------------------------------------
    def irq_state(self, vcpu: int, intid: int) -> tuple[int, int, int, int, int, int, int, int, int]:
        """``(enabled, pending_latch, line_level, active, group, edge, priority,
        route, target)`` of one INTID; ``route``/``target`` are 0/-1 for
        private interrupts."""
    def dump(self) -> dict[str, Any]:
        """Every piece of state in a canonical form (see ``vgic._pure.mmio``)."""
