"""Pure-Python twin of ``vgic._core.mmio``: the table-driven GICv3 MMIO model.

Same interface as ``_core/mmio.pyi``; this module is the readable reference
that the Cython core is checked against.

Structure, after Linux ``vgic-mmio.c`` / ``vgic-mmio-v3.c`` (kvm-facts §2):

1. **Region tables.**  Each frame of :data:`vgic.regmap.FRAMES` is sorted by
   offset and every row is bound to its four handlers through :data:`OPS`.
2. **Lookup.**  A frame offset finds its region either through a table
   indexed by ``offset >> 2`` (``"direct"``, the default; every region
   starts and ends on a 4-byte boundary) or by binary search over the
   region starts (``"bsearch"``, KVM's own method).  Both give the same row.
3. **Check.**  One rule for every region (KVM's ``check_region``): the size
   must be 1, 4 or 8 bytes, allowed by the region, and naturally aligned;
   for per-IRQ regions the first INTID of the access must be below
   ``nr_irqs``.  A failed lookup or check reads 0 and ignores writes: a
   guest never faults on a GIC frame.
4. **Handlers** (:mod:`.vgic_irq_ops`, :mod:`.vgic_dist`,
   :mod:`.vgic_redist`) act on the state held by :class:`Gic`.

``dump()`` layout (the canonical state form shared with the core):

* ``"enabled"``, ``"pending_latch"``, ``"line_level"``, ``"active"``,
  ``"group"``, ``"edge"``: ``np.uint32[32 + nr_vcpus]`` bitmaps.  Word
  ``w < 32`` holds SPIs ``32w .. 32w+31`` (bit ``intid % 32``; word 0 and
  INTIDs ``>= nr_irqs`` are 0); word ``32 + v`` holds INTIDs 0-31 of vCPU v.
* ``"priority"``: ``np.uint8[(32 + nr_vcpus) * 32]``; index ``intid`` for an
  SPI, ``(32 + v) * 32 + intid`` for a private INTID of vCPU v, 0 elsewhere.
* ``"route"``: ``np.uint32[1024]`` (0 where there is no SPI) and
  ``"target"``: ``np.int32[1024]`` (-1 where there is no SPI or no vCPU).
* ``"dist_enabled"``, ``"implementation_rev"``, ``"propbaser"``: int;
  ``"pendbaser"``: ``np.uint64[nr_vcpus]``; ``"gicr_ctlr"``: ``np.uint32[nr_vcpus]``.
* ``"seq"``: ``np.uint64[(32 + nr_vcpus) * 32]``, indexed as ``"priority"``:
  the stamp of the moment each interrupt last became deliverable (the order
  in which KVM would have queued it); ``"seq_counter"``: the last stamp.
"""
from __future__ import annotations

import operator
from bisect import bisect_right
from typing import Any, Callable, NamedTuple

import numpy as np
import numpy.typing as npt

from ..errors import UnmappedAccess
from ..regmap import (
    FRAME_GICD,
    FRAME_GICR_RD,
    FRAME_GICR_SGI,
    FRAME_NAMES,
    FRAME_SIZE,
    MAX_VCPUS,
    FRAMES,
    INITIAL_PENDBASER,
    KVM_VGIC_IMP_REV_LATEST,
    MAX_INTID_SPACE,
    NR_PRIVATE_IRQS,
    NR_SGIS,
    OPS_NAMES,
    REDIST_STRIDE,
    SGI_BASE_OFFSET,
    W8,
    W32,
    W64,
    Region,
)
from ..trace import MMIO_ACCESS
from . import vgic_dist as dist
from . import vgic_irq_ops as irq_ops
from . import vgic_redist as redist
from .irq import VgicIrq

__all__ = ["set_lookup", "get_lookup", "regions", "Noop", "Gic", "OPS", "Ops"]


# ====================================================================== ops
class Ops(NamedTuple):
    """The four handlers of one ops family (KVM's read/write/uaccess_read/uaccess_write)."""

    read: Callable[..., int]
    write: Callable[..., None]
    uaccess_read: Callable[..., int]
    uaccess_write: Callable[..., int]


def _guest_ops(read: Callable[..., int], write: Callable[..., None]) -> Ops:
    """A family whose userspace accesses behave as the guest's (no uaccess_* in KVM)."""
    return Ops(read, write, read, irq_ops.uaccess_via_guest(write))


#: Every ops name of :data:`vgic.regmap.OPS_NAMES` bound to its handlers.
OPS: dict[str, Ops] = {
    "raz_wi": Ops(irq_ops.read_raz, irq_ops.write_wi, irq_ops.read_raz, irq_ops.uaccess_write_wi),
    "rao_wi": Ops(irq_ops.read_rao, irq_ops.write_wi, irq_ops.read_rao, irq_ops.uaccess_write_wi),
    "idregs": Ops(irq_ops.read_idregs, irq_ops.write_wi, irq_ops.read_idregs,
                  irq_ops.uaccess_write_wi),
    # GICD_CTLR/TYPER/IIDR/TYPER2: userspace may restore CTLR and IIDR (kvm-facts §1.3).
    "v3_misc": Ops(dist.read_v3_misc, dist.write_v3_misc, dist.read_v3_misc,
                   dist.uaccess_write_v3_misc),
    "group": _guest_ops(irq_ops.read_group, irq_ops.write_group),
    "senable": _guest_ops(irq_ops.read_enable, irq_ops.write_senable),
    "cenable": _guest_ops(irq_ops.read_enable, irq_ops.write_cenable),
    # Userspace sees and assigns the raw latch (kvm-facts §2).
    "spending": Ops(irq_ops.read_pending, irq_ops.write_spending,
                    irq_ops.uaccess_read_pending, irq_ops.uaccess_write_spending),
    # ICPENDR is RAZ/WI to userspace: ISPENDR alone carries the latch (kvm-facts §2).
    "cpending": Ops(irq_ops.read_pending, irq_ops.write_cpending,
                    irq_ops.read_raz, irq_ops.uaccess_write_wi),
    "sactive": _guest_ops(irq_ops.read_active, irq_ops.write_sactive),
    "cactive": _guest_ops(irq_ops.read_active, irq_ops.write_cactive),
    "priority": _guest_ops(irq_ops.read_priority, irq_ops.write_priority),
    "config": _guest_ops(irq_ops.read_config, irq_ops.write_config),
    "irouter": _guest_ops(dist.read_irouter, dist.write_irouter),
    "v3r_ctlr": _guest_ops(redist.read_v3r_ctlr, redist.write_v3r_ctlr),
    "v3r_iidr": Ops(redist.read_v3r_iidr, irq_ops.write_wi, redist.read_v3r_iidr,
                    irq_ops.uaccess_write_wi),
    # GICR_TYPER is read-only to the guest and to userspace (kvm-facts §1.5).
    "v3r_typer": Ops(redist.read_v3r_typer, irq_ops.write_wi, redist.read_v3r_typer,
                     irq_ops.uaccess_write_wi),
    "propbase": _guest_ops(redist.read_propbase, redist.write_propbase),
    "pendbase": _guest_ops(redist.read_pendbase, redist.write_pendbase),
}

if set(OPS) != set(OPS_NAMES):      # pragma: no cover - a regmap/twin mismatch
    raise ImportError(f"vgic._pure.mmio binds {sorted(OPS)}, regmap names {sorted(OPS_NAMES)}")


# ============================================================ region tables
class _Bound(NamedTuple):
    """A region row with its handlers resolved."""

    region: Region
    ops: Ops


class _FrameTable:
    """The compiled table of one frame, with both lookup structures."""

    __slots__ = ("bound", "starts", "by_word")

    def __init__(self, rows: tuple[Region, ...]) -> None:
        ordered = sorted(rows, key=lambda r: r.offset)
        self.bound: tuple[_Bound, ...] = tuple(_Bound(r, OPS[r.ops]) for r in ordered)
        # bsearch: the sorted region starts.
        self.starts: list[int] = [r.offset for r in ordered]
        # direct: one slot per 32-bit word of the frame.
        self.by_word: list[_Bound | None] = [None] * (FRAME_SIZE // 4)
        end = 0
        for b in self.bound:
            r = b.region
            if r.offset % 4 or r.length % 4 or r.offset < end or r.offset + r.length > FRAME_SIZE:
                raise ValueError(f"region {r.name} is misplaced in its frame")
            end = r.offset + r.length
            for word in range(r.offset // 4, end // 4):
                self.by_word[word] = b

    def find_direct(self, offset: int) -> _Bound | None:
        """The region holding ``offset``, by index table."""
        if 0 <= offset < FRAME_SIZE:
            return self.by_word[offset >> 2]
        return None

    def find_bsearch(self, offset: int) -> _Bound | None:
        """The region holding ``offset``, by binary search (KVM's ``vgic_find_mmio_region``)."""
        i = bisect_right(self.starts, offset) - 1
        if i >= 0:
            b = self.bound[i]
            if offset < b.region.offset + b.region.length:
                return b
        return None


_TABLES: tuple[_FrameTable, ...] = tuple(_FrameTable(rows) for rows in FRAMES)
assert FRAME_NAMES[FRAME_GICD] == "GICD" and len(_TABLES) == len(FRAME_NAMES)

_LOOKUP_MODES = ("direct", "bsearch")
_lookup_mode = "direct"


def set_lookup(mode: str) -> None:
    """Choose region lookup: ``"direct"`` (index table, default) or ``"bsearch"``."""
    global _lookup_mode
    if mode not in _LOOKUP_MODES:
        raise ValueError(f"lookup mode {mode!r} is not one of 'direct', 'bsearch'")
    _lookup_mode = mode


def get_lookup() -> str:
    """The region lookup in use: ``"direct"`` or ``"bsearch"``."""
    return _lookup_mode


def _frame_index(frame: int) -> int:
    """Validate a frame identifier (FRAME_GICD, FRAME_GICR_RD or FRAME_GICR_SGI)."""
    frame = _as_int(frame, "frame")
    if not 0 <= frame < len(_TABLES):
        raise ValueError(f"frame {frame!r} is not one of 0 (GICD), 1 (GICR_RD), 2 (GICR_SGI)")
    return frame


def _find(frame: int, offset: int) -> _Bound | None:
    table = _TABLES[frame]
    if _lookup_mode == "direct":
        return table.find_direct(offset)
    return table.find_bsearch(offset)


def regions(frame: int) -> list[tuple[str, int, int, int, int, int, str]]:
    """The compiled region table of a frame.

    Rows are ``(name, offset, length, widths, bpi, first_intid, ops)`` sorted by
    offset, built from :data:`vgic.regmap.FRAMES`.
    """
    return [(r.name, r.offset, r.length, r.widths, r.bpi, r.first_intid, r.ops)
            for r in (b.region for b in _TABLES[_frame_index(frame)].bound)]


# Access size in bytes -> the width flag a region must allow.  Size 2 has no
# flag: KVM rejects halfword accesses to every GIC register (kvm-facts §2).
_WIDTH_FLAG = {1: W8, 4: W32, 8: W64}
_INVALID = -1


def _check(region: Region, offset: int, size: int, nr_irqs: int) -> int:
    """KVM's ``check_region``: the access's first INTID (0 for a plain
    register) if the access is valid, else ``_INVALID`` (kvm-facts §2)."""
    if not (region.widths & _WIDTH_FLAG.get(size, 0)) or offset % size:
        return _INVALID
    if not region.bpi:
        return 0
    intid = region.first_intid + (offset - region.offset) * 8 // region.bpi
    # An unallocated SPI: RAZ/WI.
    return intid if intid < nr_irqs else _INVALID


# ===================================================== argument validation
def _check_geometry(nr_vcpus: int, nr_irqs: int, dist_base: int, redist_base: int,
                    nr_mpidrs: int) -> None:
    """The constructor checks shared with the core (kvm-facts §1.1, §6)."""
    if not 1 <= nr_vcpus <= MAX_VCPUS:
        raise ValueError(f"nr_vcpus {nr_vcpus} is not in 1..{MAX_VCPUS}")
    if nr_irqs % 32 or not 64 <= nr_irqs <= 992:
        raise ValueError(f"nr_irqs {nr_irqs} is not a multiple of 32 in 64..992")
    if nr_mpidrs != nr_vcpus:
        raise ValueError(f"{nr_mpidrs} MPIDRs given for {nr_vcpus} vCPUs")
    if not 0 <= dist_base <= (1 << 64) - FRAME_SIZE:
        raise ValueError(f"dist_base {dist_base:#x} leaves the 64-bit address space")
    if not 0 <= redist_base <= (1 << 64) - nr_vcpus * REDIST_STRIDE:
        raise ValueError(f"redist_base {redist_base:#x} leaves the 64-bit address space")


def _check_u(value: Any, bits: int, name: str) -> int:
    """An unsigned C-typed argument: OverflowError outside 0..2**bits-1, as
    Cython's conversion raises in the core."""
    value = _as_int(value, name)
    if value < 0 or value >> bits:
        raise OverflowError(f"{name} {value} does not fit in {bits} unsigned bits")
    return value


def _as_int(value: Any, name: str) -> int:
    """Any integer (bool and numpy integers included) as a Python int."""
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, not {type(value).__name__}") from None


def _check_size(size: int, where: str = "") -> None:
    if size not in (1, 2, 4, 8):
        raise ValueError(f"{where}size {size!r} is not one of 1, 2, 4, 8")


def _check_addr(addr: int) -> None:
    if addr < 0:
        raise ValueError(f"address {addr} is negative")
    if addr >> 64:
        raise ValueError(f"address {addr:#x} does not fit in 64 bits")


def _check_value(value: int, size: int, where: str = "") -> None:
    if value < 0:
        raise ValueError(f"{where}value {value} does not fit in a {size}-byte access")
    if value >> (8 * size):
        raise ValueError(f"{where}value {value:#x} does not fit in a {size}-byte access")


# ====================================================================== Noop
class Noop:
    """A do-nothing object with the access methods: the per-call baseline of the benchmarks."""

    def __init__(self) -> None:
        pass

    def mmio_write(self, addr: int, size: int, value: int, vcpu: int = 0) -> None:
        """Do nothing."""

    def mmio_read(self, addr: int, size: int, vcpu: int = 0) -> int:
        """Do nothing; return 0."""
        return 0


# ======================================================================= Gic
class Gic:
    """Distributor and redistributor state of one VM with its MMIO dispatch.

    ``mpidrs[i]`` is vCPU *i*'s MPIDR_EL1; vCPU *i*'s redistributor sits at
    ``redist_base + i * 0x20000`` (KVM places redistributors in vCPU creation
    order). Arguments are assumed validated by :class:`vgic.VM`, except those
    of the per-access methods, which validate their own.

    The underscore attributes are the model state, the twin of KVM's
    ``struct vgic_dist`` / ``struct vgic_cpu``; the handler modules of this
    package read and write them directly.
    """

    __slots__ = (
        "_nr_vcpus", "_nr_irqs", "_dist_base", "_redist_base", "_mpidrs",
        "_affinity_to_vcpu", "_private", "_spis",
        "_dist_enabled", "_implementation_rev", "_propbaser", "_pendbaser", "_gicr_ctlr",
        "_halt_hook", "_seq_counter",
    )

    # MPIDR_EL1 affinity fields Aff3 [39:32] and Aff2.Aff1.Aff0 [23:0]
    # (Linux MPIDR_HWID_BITMASK).
    MPIDR_HWID_MASK = 0xFF00FFFFFF

    def __init__(self, nr_vcpus: int, nr_irqs: int, dist_base: int,
                 redist_base: int, mpidrs: npt.NDArray[np.uint64]) -> None:
        self._nr_vcpus = int(nr_vcpus)
        self._nr_irqs = int(nr_irqs)
        self._dist_base = int(dist_base)
        self._redist_base = int(redist_base)
        self._mpidrs: tuple[int, ...] = tuple(int(m) for m in np.asarray(mpidrs).reshape(-1))
        _check_geometry(self._nr_vcpus, self._nr_irqs, self._dist_base,
                        self._redist_base, len(self._mpidrs))
        # IROUTER resolution (KVM's kvm_mpidr_to_vcpu): affinity -> vCPU.
        # With duplicate affinities the lowest vCPU index wins.
        self._affinity_to_vcpu: dict[int, int] = {}
        for v, mpidr in enumerate(self._mpidrs):
            self._affinity_to_vcpu.setdefault(mpidr & self.MPIDR_HWID_MASK, v)

        # Reset state (kvm-facts §1.6, §1.3, §5.6).
        # Private: SGIs enabled and edge, PPIs disabled and level; Group 1; priority 0.
        self._private: list[list[VgicIrq]] = [
            [VgicIrq(intid, enabled=intid < NR_SGIS, config_edge=intid < NR_SGIS,
                     target_vcpu=v)
             for intid in range(NR_PRIVATE_IRQS)]
            for v in range(self._nr_vcpus)
        ]
        # SPIs: disabled, edge (KVM's zero config), Group 1, routed to affinity
        # 0 and targeting vCPU 0 as KVM's vgic_init leaves them.
        self._spis: list[VgicIrq] = [
            VgicIrq(intid, target_vcpu=0)
            for intid in range(NR_PRIVATE_IRQS, self._nr_irqs)
        ]
        self._dist_enabled = 0
        self._implementation_rev = KVM_VGIC_IMP_REV_LATEST
        self._propbaser = 0
        self._pendbaser: list[int] = [INITIAL_PENDBASER] * self._nr_vcpus
        self._gicr_ctlr: list[int] = [0] * self._nr_vcpus
        self._halt_hook: Callable[[], Any] | None = None
        self._seq_counter = 0           # the last deliverability stamp handed out

    # ---- geometry ---------------------------------------------------------
    @property
    def nr_irqs(self) -> int:
        """Number of INTIDs (32 private + SPIs)."""
        return self._nr_irqs

    @property
    def nr_vcpus(self) -> int:
        """Number of vCPUs, hence of redistributors."""
        return self._nr_vcpus

    @property
    def dist_base(self) -> int:
        """Guest physical base of the distributor frame."""
        return self._dist_base

    @property
    def redist_base(self) -> int:
        """Guest physical base of vCPU 0's redistributor."""
        return self._redist_base

    def __repr__(self) -> str:
        return (f"<vgic._pure.mmio.Gic nr_vcpus={self._nr_vcpus} nr_irqs={self._nr_irqs} "
                f"dist_base={self._dist_base:#x} redist_base={self._redist_base:#x}>")

    # ---- state access used by the handlers ---------------------------------
    def _irq(self, vcpu: int, intid: int) -> VgicIrq:
        """KVM's ``vgic_get_irq``: private INTIDs are per vCPU, SPIs VM-wide."""
        if intid < NR_PRIVATE_IRQS:
            return self._private[vcpu][intid]
        return self._spis[intid - NR_PRIVATE_IRQS]

    def _irqs(self, vcpu: int, intid: int, count: int) -> list[VgicIrq]:
        """The records of INTIDs ``intid .. intid+count-1`` (stopping at
        ``nr_irqs``).  A register never spans private and shared INTIDs."""
        if intid < NR_PRIVATE_IRQS:
            return self._private[vcpu][intid:intid + count]
        first = intid - NR_PRIVATE_IRQS
        return self._spis[first:first + count]

    def _vcpu_by_affinity(self, route: int) -> int:
        """The vCPU whose MPIDR affinity equals ``route``, or -1 (kvm-facts §1.4)."""
        return self._affinity_to_vcpu.get(route, -1)

    # ---- address decoding --------------------------------------------------
    def _decode(self, addr: int) -> tuple[int, int, int] | None:
        """``(frame, offset, owner)`` of a guest address, or None if unmapped.

        ``owner`` is the redistributor's vCPU, or -1 for the distributor
        (where the accessing vCPU acts).  kvm-facts §1.1, §2.
        """
        offset = addr - self._dist_base
        if 0 <= offset < FRAME_SIZE:
            return FRAME_GICD, offset, -1
        offset = addr - self._redist_base
        if 0 <= offset < self._nr_vcpus * REDIST_STRIDE:
            owner, offset = divmod(offset, REDIST_STRIDE)
            if offset < SGI_BASE_OFFSET:
                return FRAME_GICR_RD, offset, owner
            return FRAME_GICR_SGI, offset - SGI_BASE_OFFSET, owner
        return None

    def _check_line_args(self, vcpu: int, intid: int) -> None:
        self._check_vcpu(vcpu)
        if _check_u(intid, 32, "intid") % 32:
            raise ValueError(f"intid {intid} is not a multiple of 32")

    def _checked_irq(self, vcpu: int, intid: int) -> VgicIrq:
        intid = _check_u(intid, 32, "intid")
        if intid >= self._nr_irqs:
            raise ValueError(f"intid {intid} is not below nr_irqs {self._nr_irqs}")
        if intid < NR_PRIVATE_IRQS:
            self._check_vcpu(vcpu)
        return self._irq(vcpu, intid)

    def _check_vcpu(self, vcpu: int, where: str = "") -> None:
        if not 0 <= vcpu < self._nr_vcpus:
            raise ValueError(
                f"{where}vcpu {vcpu} out of range: the VM has {self._nr_vcpus} vCPUs")

    def _decode_or_raise(self, addr: int) -> tuple[int, int, int]:
        where = self._decode(addr)
        if where is None:
            raise UnmappedAccess(addr)
        return where

    # ---- the access path ---------------------------------------------------
    def _read(self, frame: int, offset: int, vcpu: int, size: int) -> int:
        bound = _find(frame, offset)
        if bound is None:
            return 0        # no register here: RAZ (kvm-facts §1.2 "not present")
        intid = _check(bound.region, offset, size, self._nr_irqs)
        if intid == _INVALID:
            return 0
        return bound.ops.read(self, vcpu, offset, intid, size)

    def _write(self, frame: int, offset: int, vcpu: int, size: int, value: int) -> None:
        bound = _find(frame, offset)
        if bound is None:
            return          # no register here: WI
        intid = _check(bound.region, offset, size, self._nr_irqs)
        if intid == _INVALID:
            return
        bound.ops.write(self, vcpu, offset, intid, size, value)

    # ---- guest MMIO --------------------------------------------------------
    @property
    def halt_hook(self) -> Callable[[], Any] | None:
        """None, or a callable returning a context manager that halts every
        running vCPU (kvm_arm_halt_guest / kvm_arm_resume_guest).  Guest
        ISACTIVER/ICACTIVER accesses run inside it (KVM's
        vgic_access_active_prepare, GICv3); a replay runs whole inside it."""
        return self._halt_hook

    @halt_hook.setter
    def halt_hook(self, hook: Callable[[], Any] | None) -> None:
        if hook is not None and not callable(hook):
            raise TypeError(f"halt_hook must be callable or None, not {type(hook).__name__}")
        self._halt_hook = hook

    def _halts_guest(self, frame: int, offset: int, size: int) -> bool:
        # A valid access to GICD_I[SC]ACTIVER<n> or GICR_I[SC]ACTIVER0: KVM's
        # active-state handlers halt every vCPU; a refused access never
        # reaches them.
        bound = _find(frame, offset)
        return (bound is not None and bound.region.ops in ("sactive", "cactive")
                and _check(bound.region, offset, size, self._nr_irqs) != _INVALID)

    def mmio_read(self, addr: int, size: int, vcpu: int = 0) -> int:
        """A guest load of ``size`` bytes at ``addr`` by vCPU ``vcpu``.

        Raises ``ValueError`` for a size outside (1, 2, 4, 8), a negative
        address or a vCPU index out of range, and :class:`vgic.UnmappedAccess`
        for an address outside every GIC frame.  RAZ/WI cases read 0.
        """
        # Each argument is converted and checked in turn: size, addr, vcpu
        # (the core's order, so both raise the same error for the same call).
        size = _as_int(size, "size")
        _check_size(size)
        addr = _as_int(addr, "addr")
        _check_addr(addr)
        vcpu = _as_int(vcpu, "vcpu")
        self._check_vcpu(vcpu)
        frame, offset, owner = self._decode_or_raise(addr)
        if self._halt_hook is not None and self._halts_guest(frame, offset, size):
            with self._halt_hook():
                return self._read(frame, offset, vcpu if owner < 0 else owner, size)
        return self._read(frame, offset, vcpu if owner < 0 else owner, size)

    def mmio_write(self, addr: int, size: int, value: int, vcpu: int = 0) -> None:
        """A guest store; as :meth:`mmio_read`, and ``ValueError`` when
        ``value`` does not fit in ``size`` bytes or is negative."""
        size = _as_int(size, "size")
        _check_size(size)
        addr = _as_int(addr, "addr")
        _check_addr(addr)
        value = _as_int(value, "value")
        _check_value(value, size)
        vcpu = _as_int(vcpu, "vcpu")
        self._check_vcpu(vcpu)
        frame, offset, owner = self._decode_or_raise(addr)
        if self._halt_hook is not None and self._halts_guest(frame, offset, size):
            with self._halt_hook():
                self._write(frame, offset, vcpu if owner < 0 else owner, size, value)
            return
        self._write(frame, offset, vcpu if owner < 0 else owner, size, value)

    def mmio_replay(self, trace: npt.NDArray[Any]) -> npt.NDArray[np.uint64]:
        """Run a trace of :data:`vgic.MMIO_ACCESS` records in order.

        Returns the value each access read (0 for writes).  The whole trace is
        validated first: a wrong dtype raises ``TypeError``; a bad size, value
        or vCPU raises ``ValueError`` and an unmapped address
        :class:`vgic.UnmappedAccess`, both naming the record index, and in
        either case no access is performed.
        """
        return self._replay(trace, self._halt_hook)

    def _replay(self, trace: npt.NDArray[Any], hook: Callable[[], Any] | None) -> npt.NDArray[np.uint64]:
        if not isinstance(trace, np.ndarray):
            raise TypeError("trace must be a 1-D numpy array of vgic.MMIO_ACCESS, "
                            f"not {type(trace).__name__}")
        if trace.dtype != MMIO_ACCESS or trace.ndim != 1:
            dtype = "vgic.MMIO_ACCESS" if trace.dtype == MMIO_ACCESS else str(trace.dtype)
            raise TypeError("trace must be a 1-D numpy array of vgic.MMIO_ACCESS, "
                            f"not a {trace.ndim}-D array of {dtype}")
        addrs = trace["addr"].tolist()
        values = trace["value"].tolist()
        vcpus = trace["vcpu"].tolist()
        sizes = trace["size"].tolist()
        writes = trace["write"].tolist()

        # Pass 1: validate every record and decode it; nothing runs on failure.
        decoded: list[tuple[int, int, int]] = []
        for i in range(len(addrs)):
            where = f"trace[{i}]: "
            size = sizes[i]
            _check_size(size, where)
            # addr is a u8 field: always a valid 64-bit address.
            if writes[i]:
                _check_value(values[i], size, where)
            self._check_vcpu(vcpus[i], where)
            frame_offset_owner = self._decode(addrs[i])
            if frame_offset_owner is None:
                addr = addrs[i]
                raise UnmappedAccess(addr, f"{where}address {addr:#x} is outside every GIC frame")
            frame, offset, owner = frame_offset_owner
            decoded.append((frame, offset, vcpus[i] if owner < 0 else owner))

        # Pass 2: run in order.
        out = [0] * len(decoded)
        for i, (frame, offset, vcpu) in enumerate(decoded):
            if hook is not None and self._halts_guest(frame, offset, sizes[i]):
                # Running vCPUs halt around each active-state access alone.
                with hook():
                    if writes[i]:
                        self._write(frame, offset, vcpu, sizes[i], values[i])
                    else:
                        out[i] = self._read(frame, offset, vcpu, sizes[i])
            elif writes[i]:
                self._write(frame, offset, vcpu, sizes[i], values[i])
            else:
                out[i] = self._read(frame, offset, vcpu, sizes[i])
        return np.array(out, dtype=np.uint64)

    # ---- userspace (KVM device attribute) access ---------------------------
    def _uaccess_region(self, frame: int, offset: int, vcpu: int = 0) -> tuple[_Bound, int] | None:
        """Region and INTID of a 32-bit userspace access, or None (KVM's
        ``vgic_get_mmio_region`` with ``len = 4``)."""
        frame = _frame_index(frame)
        self._check_vcpu(vcpu)
        offset = _check_u(offset, 64, "offset")
        if offset >= FRAME_SIZE:
            return None
        bound = _find(frame, offset)
        if bound is None:
            return None
        intid = _check(bound.region, offset, 4, self._nr_irqs)
        if intid == _INVALID:
            return None
        return bound, intid

    def has_region(self, frame: int, offset: int) -> bool:
        """True if a 32-bit access at ``offset`` of ``frame`` hits a region.

        KVM's ``vgic_v3_has_attr_regs``: 4-byte aligned, and the region
        lookup with its full check (width, alignment, allocated INTID) hits.
        """
        offset = _check_u(offset, 64, "offset")
        return offset % 4 == 0 and self._uaccess_region(frame, offset) is not None

    def uaccess_read(self, frame: int, vcpu: int, offset: int) -> int:
        """A 32-bit userspace read with KVM's uaccess semantics (0 if no region)."""
        found = self._uaccess_region(frame, offset, vcpu)
        if found is None:
            return 0
        bound, intid = found
        return bound.ops.uaccess_read(self, vcpu, offset, intid, 4)

    def uaccess_write(self, frame: int, vcpu: int, offset: int, value: int) -> int:
        """A 32-bit userspace write; returns 0 or a negative errno.

        With no region (or a failed check) the write is ignored and reports
        success, as KVM's ``vgic_uaccess_write`` does (kvm-facts §2).
        """
        value = _check_u(value, 32, "value")
        found = self._uaccess_region(frame, offset, vcpu)
        if found is None:
            return 0
        bound, intid = found
        return bound.ops.uaccess_write(self, vcpu, offset, intid, 4, value)

    def line_level_read(self, vcpu: int, intid: int) -> int:
        """KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO read of INTIDs ``intid..intid+31``.

        A bit is set only for a level-triggered INTID whose line is high;
        SGIs (no line) and INTIDs ``>= nr_irqs`` read 0 (kvm-facts §6).
        """
        self._check_line_args(vcpu, intid)
        value = 0
        for i in range(32):
            n = intid + i
            if n < NR_SGIS or n >= self._nr_irqs:
                continue
            irq = self._irq(vcpu, n)
            if not irq.config_edge and irq.line_level:
                value |= 1 << i
        return value

    def line_level_write(self, vcpu: int, intid: int, value: int) -> None:
        """KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO write of INTIDs ``intid..intid+31``.

        Sets ``line_level`` whatever the trigger mode, so a restore does not
        depend on ICFGR being restored first (kvm-facts §6).
        """
        self._check_line_args(vcpu, intid)
        value = _check_u(value, 32, "value")
        rows = [(self._irq(vcpu, intid + i), bool((value >> i) & 1)) for i in range(32)
                if NR_SGIS <= intid + i < self._nr_irqs]

        def change() -> None:
            for irq, level in rows:
                irq.line_level = level
        irq_ops.stamped(self, [irq for irq, _ in rows], change)

    # ---- interrupt lines ----------------------------------------------------
    def set_irq_level(self, vcpu: int, intid: int, level: bool) -> None:
        """kvm_vgic_inject_irq for a validated SPI (``vcpu`` ignored) or PPI.

        A level-triggered line follows ``level``; an edge-triggered one
        latches pending on a rising report and ignores 0 (kvm-facts §3.3).
        """
        irq = self._checked_irq(vcpu, intid)

        def change() -> None:
            if irq.config_edge:
                if level:
                    irq.pending_latch = True
            elif irq.line_level != bool(level):
                irq.line_level = bool(level)
        irq_ops.stamped(self, [irq], change)

    def set_irq_level_batch(self, vcpus: Any, intids: Any, levels: Any) -> None:
        """set_irq_level for each (vcpu, intid, level), all checked first."""
        v = np.asarray(vcpus, dtype=np.int64)
        n = np.asarray(intids, dtype=np.int64)
        lv = np.asarray(levels, dtype=np.uint8)
        if v.ndim != 1 or n.shape != v.shape or lv.shape != v.shape:
            raise ValueError("vcpus, intids and levels must be 1-D arrays of one length")
        rows = list(zip(v.tolist(), n.tolist(), lv.tolist()))
        for k, (vcpu, intid, _) in enumerate(rows):
            if not 0 <= intid < self._nr_irqs:
                raise ValueError(f"intids[{k}] = {intid} is not below nr_irqs {self._nr_irqs}")
            if intid < NR_PRIVATE_IRQS and not 0 <= vcpu < self._nr_vcpus:
                raise ValueError(f"vcpus[{k}] = {vcpu} is out of range: the VM has {self._nr_vcpus} vCPUs")
        for vcpu, intid, level in rows:
            self.set_irq_level(vcpu if intid < NR_PRIVATE_IRQS else 0, intid, bool(level))

    # ---- the KVM side's access -------------------------------------------------
    _FIELDS = ("enabled", "pending_latch", "line_level", "active", "group", "config_edge")

    def set_irq_bit(self, vcpu: int, intid: int, field: int, value: bool) -> None:
        """Set one single-bit field of an INTID's state: ``field`` 0 enabled,
        1 pending_latch, 2 line_level, 3 active, 4 group, 5 edge (the order
        of :meth:`irq_state`).  Used by the list-register flush and fold."""
        irq = self._checked_irq(vcpu, intid)
        if not 0 <= field < len(self._FIELDS):
            raise ValueError(f"field {field} is not one of 0..{len(self._FIELDS) - 1}")
        irq_ops.stamped(self, [irq], lambda: setattr(
            irq, self._FIELDS[field], int(bool(value)) if field == 4 else bool(value)))

    def irq_scan(self, vcpu: int) -> list[int]:
        """INTIDs that may need a list register: vCPU ``vcpu``'s private
        INTIDs, then every SPI, that are active or enabled and pending."""
        self._check_vcpu(vcpu)
        irqs = self._private[vcpu] + self._spis
        return [irq.intid for irq in irqs if irq.active or (irq.enabled and irq.pending())]

    @property
    def dist_enabled(self) -> bool:
        """GICD_CTLR.EnableGrp1: KVM's dist->enabled."""
        return bool(self._dist_enabled)

    # ---- introspection ------------------------------------------------------
    def irq_state(self, vcpu: int, intid: int) -> tuple[int, int, int, int, int, int, int, int, int]:
        """``(enabled, pending_latch, line_level, active, group, edge, priority,
        route, target)`` of one INTID; ``route``/``target`` are 0/-1 for
        private interrupts."""
        irq = self._checked_irq(vcpu, intid)
        private = intid < NR_PRIVATE_IRQS
        return (
            int(irq.enabled), int(irq.pending_latch), int(irq.line_level),
            int(irq.active), int(irq.group), int(irq.config_edge), irq.priority,
            0 if private else irq.mpidr,
            -1 if private else irq.target_vcpu,
        )

    _DUMP_BITS = (
        ("enabled", "enabled"),
        ("pending_latch", "pending_latch"),
        ("line_level", "line_level"),
        ("active", "active"),
        ("group", "group"),
        ("edge", "config_edge"),
    )

    def dump(self) -> dict[str, Any]:
        """Every piece of state in a canonical form (layout in the module docstring)."""
        nwords = MAX_INTID_SPACE // 32 + self._nr_vcpus
        words = {key: [0] * nwords for key, _ in self._DUMP_BITS}
        priority = np.zeros(nwords * 32, dtype=np.uint8)
        route = np.zeros(MAX_INTID_SPACE, dtype=np.uint32)
        target = np.full(MAX_INTID_SPACE, -1, dtype=np.int32)
        seq = np.zeros(nwords * 32, dtype=np.uint64)

        def record(irq: VgicIrq, slot: int) -> None:
            # ``slot`` is the flat bit/byte index: the SPI's INTID, or
            # (32 + v) * 32 + intid for vCPU v's private INTID.
            for key, attr in self._DUMP_BITS:
                if getattr(irq, attr):
                    words[key][slot >> 5] |= 1 << (slot & 31)
            priority[slot] = irq.priority
            seq[slot] = irq.seq

        for irq in self._spis:
            record(irq, irq.intid)
            route[irq.intid] = irq.mpidr
            target[irq.intid] = irq.target_vcpu
        for v, private in enumerate(self._private):
            for irq in private:
                record(irq, (MAX_INTID_SPACE // 32 + v) * 32 + irq.intid)

        state: dict[str, Any] = {key: np.array(w, dtype=np.uint32) for key, w in words.items()}
        state.update(
            priority=priority,
            route=route,
            target=target,
            dist_enabled=int(self._dist_enabled),
            implementation_rev=int(self._implementation_rev),
            propbaser=int(self._propbaser),
            pendbaser=np.array(self._pendbaser, dtype=np.uint64),
            gicr_ctlr=np.array(self._gicr_ctlr, dtype=np.uint32),
            seq=seq,
            seq_counter=int(self._seq_counter),
        )
        return state
