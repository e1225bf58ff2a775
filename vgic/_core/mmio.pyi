"""Type stubs for ``vgic._core.mmio`` (twin: ``vgic._pure.mmio``): the
table-driven MMIO framework and the bus of one VM."""
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import numpy.typing as npt

def set_lookup(mode: str) -> None:
    """Choose region lookup: ``"direct"`` (index table, default) or ``"bsearch"``."""

def get_lookup() -> str:
    """The region lookup in use: ``"direct"`` or ``"bsearch"``."""

def regions(frame: int) -> list[tuple[str, int, int, int, int, int, str]]:
    """The region table of a frame: ``(name, offset, length, widths, bpi,
    first_intid, ops)`` rows sorted by offset, from :data:`vgic.regmap.FRAMES`."""

class Noop:
    """A do-nothing extension type: the per-call baseline of the benchmarks."""

    def __init__(self) -> None: ...
    def mmio_write(self, addr: int, size: int, value: int, vcpu: int = 0) -> None: ...
    def mmio_read(self, addr: int, size: int, vcpu: int = 0) -> int: ...

class Bus:
    """The guest-physical MMIO space of one VM: windows of guest physical
    addresses mapped onto the frames of :data:`vgic.regmap.FRAMES`, each
    frame served by the part attached to it."""

    nr_vcpus: int
    #: The mapped windows as (base, frames, instances, per_vcpu) tuples.
    windows: list[tuple[int, tuple[int, ...], int, bool]]
    #: None, or a callable returning a context manager that halts every
    #: running vCPU; guest accesses to halting regions run inside it.
    halt_hook: Callable[[], AbstractContextManager[Any]] | None

    def __init__(self, nr_vcpus: int) -> None: ...
    def attach(self, frames: Iterable[int], state: Any) -> None:
        """Serve ``frames`` with ``state``'s handlers and state (kept alive)."""
    def map(self, base: int, frames: Iterable[int], instances: int = 1, per_vcpu: bool = False) -> None:
        """Map ``instances`` groups of the attached ``frames`` (a power-of-two
        count of 64 KiB frames per group) at ``base``; with ``per_vcpu`` group
        *i* acts for vCPU *i*, else for the accessing vCPU.  Windows may not overlap."""

    # ---- guest MMIO -------------------------------------------------------
    def mmio_read(self, addr: int, size: int, vcpu: int = 0) -> int:
        """A guest load of ``size`` bytes at ``addr`` by vCPU ``vcpu``.

        Raises ``ValueError`` for a size outside (1, 2, 4, 8), a negative
        address or a vCPU index out of range, and :class:`vgic.UnmappedAccess`
        for an address outside every window.  RAZ/WI cases read 0.
        """
    def mmio_write(self, addr: int, size: int, value: int, vcpu: int = 0) -> None:
        """A guest store; as :meth:`mmio_read`, and ``ValueError`` when
        ``value`` does not fit in ``size`` bytes or is negative."""
    def mmio_replay(self, trace: npt.NDArray[Any]) -> npt.NDArray[np.uint64]:
        """Run a trace of :data:`vgic.MMIO_ACCESS` records in order; returns
        the value each access read (0 for writes).  The whole trace is
        validated first: a wrong dtype raises ``TypeError``; a bad size, value
        or vCPU ``ValueError`` and an unmapped address
        :class:`vgic.UnmappedAccess`, both naming the record, and nothing runs."""

    # ---- userspace (KVM device attribute) access ---------------------------
    def has_region(self, frame: int, offset: int) -> bool:
        """True if a 32-bit access at ``offset`` of ``frame`` hits a region."""
    def uaccess_read(self, frame: int, vcpu: int, offset: int, size: int = 4) -> int:
        """A userspace read of ``size`` bytes (4, or 8 for a 64-bit ITS
        register) with KVM's uaccess semantics (0 if no region)."""
    def uaccess_write(self, frame: int, vcpu: int, offset: int, value: int, size: int = 4) -> int:
        """A userspace write of ``size`` bytes (4 or 8); returns 0 or a negative errno."""
    def uaccess_read_batch(self, frame: int, vcpus: npt.ArrayLike, offsets: npt.ArrayLike,
                           size: int = 4) -> npt.NDArray[np.uint64]:
        """:meth:`uaccess_read` of many registers of one frame, in order
        (arguments checked first); the values as ``uint64``."""
    def uaccess_write_batch(self, frame: int, vcpus: npt.ArrayLike, offsets: npt.ArrayLike,
                            values: npt.ArrayLike, size: int = 4) -> tuple[int, int]:
        """:meth:`uaccess_write` of many registers, in order, stopping at the
        first refused one: its ``(index, errno)``, or ``(-1, 0)``."""
