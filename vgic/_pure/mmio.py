"""Pure-Python twin of ``vgic._core.mmio``: the table-driven MMIO framework.

Same interface as ``vgic/_core/mmio.pyi``; this module is the readable
reference that the Cython core is checked against.

Structure, after Linux ``vgic-mmio.c`` / ``vgic-mmio-v3.c`` (kvm-facts §2):

1. **Frames.**  Each row of :data:`vgic.regmap.FRAMES` is sorted by offset
   and, when its part attaches to a :class:`Bus`, every region is bound to
   the four handlers the part's ``ops`` mapping gives its ops name.
2. **Windows.**  A bus maps guest physical ranges onto groups of frames:
   the distributor is one frame, each vCPU's redistributor a group of two
   (RD_base, SGI_base) that acts for that vCPU.
3. **Lookup.**  A frame offset finds its region either through a table
   indexed by ``offset >> 2`` (``"direct"``, the default; every region
   starts and ends on a 4-byte boundary) or by binary search over the
   region starts (``"bsearch"``, KVM's own method).  Both give the same row.
4. **Check.**  One rule for every region (KVM's ``check_region``): the size
   must be 1, 4 or 8 bytes, allowed by the region, and naturally aligned;
   for per-IRQ regions the INTID of the access must be one the part has.  A
   failed lookup or check reads 0 and ignores writes: a guest never faults
   on a frame.
5. **Handlers** get the attached part's state as their first argument.
"""
from __future__ import annotations

import operator
from bisect import bisect_right
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from ..batchargs import index_array, value_array
from ..errors import UnmappedAccess
from ..ich import U32, U64, check_int
from ..regmap import FRAME_NAMES, FRAME_SHIFT, FRAME_SIZE, FRAMES, HALTING_OPS, MAX_VCPUS, W8, W32, W64, Region
from ..trace import check_trace

__all__ = ["set_lookup", "get_lookup", "regions", "Noop", "Bus", "Ops"]


class Ops(NamedTuple):
    """The four handlers of one ops family (KVM's read/write/uaccess_read/uaccess_write)."""

    read: Callable[..., int]
    write: Callable[..., None]
    uaccess_read: Callable[..., int]
    uaccess_write: Callable[..., int]


# ============================================================ region tables
class _Bound(NamedTuple):
    """A region row with its handlers resolved."""

    region: Region
    ops: Ops


class _FrameTable:
    """The compiled table of one frame, with both lookup structures."""

    __slots__ = ("bound", "by_word", "starts")

    def __init__(self, rows: tuple[Region, ...], ops: dict[str, Ops]) -> None:
        ordered = sorted(rows, key=lambda r: r.offset)
        missing = sorted({r.ops for r in ordered} - set(ops))
        if missing:
            raise ValueError(f"ops {missing} are not bound by the part")
        self.bound: tuple[_Bound, ...] = tuple(_Bound(r, ops[r.ops]) for r in ordered)
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


# One compiled table per (frame, ops mapping): the tables are the same for
# every VM whose part binds the same handlers.
_TABLES: dict[tuple[int, int], _FrameTable] = {}
_LOOKUP_MODES = ("direct", "bsearch")
_lookup_mode = "direct"


def _table(frame: int, ops: dict[str, Ops]) -> _FrameTable:
    key = (frame, id(ops))
    table = _TABLES.get(key)
    if table is None:
        table = _TABLES[key] = _FrameTable(FRAMES[frame].regions, ops)
    return table


def set_lookup(mode: str) -> None:
    """Choose region lookup: ``"direct"`` (index table, default) or ``"bsearch"``."""
    global _lookup_mode
    if mode not in _LOOKUP_MODES:
        raise ValueError(f"lookup mode {mode!r} is not one of 'direct', 'bsearch'")
    _lookup_mode = mode


def get_lookup() -> str:
    """The region lookup in use: ``"direct"`` or ``"bsearch"``."""
    return _lookup_mode


def _frame_index(frame: Any) -> int:
    """Validate a frame identifier (an index of :data:`vgic.regmap.FRAMES`)."""
    return check_int("frame", frame, 0, len(FRAMES) - 1)


def regions(frame: int) -> list[tuple[str, int, int, int, int, int, str]]:
    """The region table of a frame: ``(name, offset, length, widths, bpi,
    first_intid, ops)`` rows sorted by offset, from :data:`vgic.regmap.FRAMES`."""
    rows = sorted(FRAMES[_frame_index(frame)].regions, key=lambda r: r.offset)
    return [(r.name, r.offset, r.length, r.widths, r.bpi, r.first_intid, r.ops) for r in rows]


# Access size in bytes -> the width flag a region must allow.  Size 2 has no
# flag: KVM rejects halfword accesses to every GIC register (kvm-facts §2).
_WIDTH_FLAG = {1: W8, 4: W32, 8: W64}
_INVALID = -1


def _check(region: Region, offset: int, size: int, nr_intids: int) -> int:
    """KVM's ``check_region``: the access's first INTID (0 for a plain
    register) if the access is valid, else ``_INVALID`` (kvm-facts §2)."""
    if not (region.widths & _WIDTH_FLAG.get(size, 0)) or offset % size:
        return _INVALID
    if not region.bpi:
        return 0
    intid = region.first_intid + (offset - region.offset) * 8 // region.bpi
    # An INTID the part does not have: RAZ/WI.
    return intid if intid < nr_intids else _INVALID


# ===================================================== argument validation
def _as_int(value: Any, name: str) -> int:
    """Any integer (bool and numpy integers included) as a Python int."""
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, not {type(value).__name__}") from None


def _uaccess_size(size: Any) -> int:
    """Userspace accesses are 32-bit (GICD/GICR) or 64-bit (ITS registers)."""
    s = check_int("size", size, 0, 8)
    if s not in (4, 8):
        raise ValueError(f"size {s} is not 4 or 8")
    return s


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


# ======================================================================= Bus
class _Window(NamedTuple):
    base: int
    frames: tuple[int, ...]
    instances: int
    per_vcpu: bool

    @property
    def size(self) -> int:
        return self.instances * len(self.frames) * FRAME_SIZE


class Bus:
    """The guest-physical MMIO space of one VM: windows mapped onto frames,
    each frame served by the part attached to it (its ``ops`` and state)."""

    def __init__(self, nr_vcpus: int) -> None:
        self._nr_vcpus = check_int("nr_vcpus", nr_vcpus, 1, MAX_VCPUS)
        self._states: list[Any] = [None] * len(FRAMES)
        self._tables: list[_FrameTable | None] = [None] * len(FRAMES)
        self._windows: list[_Window] = []
        self._halt_hook: Callable[[], Any] | None = None

    @property
    def nr_vcpus(self) -> int:
        return self._nr_vcpus

    @property
    def windows(self) -> list[tuple[int, tuple[int, ...], int, bool]]:
        """The mapped windows as (base, frames, instances, per_vcpu) tuples."""
        return [tuple(w) for w in self._windows]  # type: ignore[misc]

    def attach(self, frames: Any, state: Any) -> None:
        """Serve ``frames`` with ``state``'s handler families (``state.ops``) and state."""
        ids = [_frame_index(f) for f in frames]
        if state is None or not isinstance(getattr(type(state), "ops", None), dict):
            raise TypeError(f"state must be a part's state with handler families, not {type(state).__name__}")
        tables = []
        for f in ids:
            if self._states[f] is not None:
                raise ValueError(f"frame {FRAME_NAMES[f]} is already attached")
            tables.append(_table(f, type(state).ops))
        for f, table in zip(ids, tables):
            self._states[f] = state
            self._tables[f] = table

    def map(self, base: int, frames: Any, instances: int = 1, per_vcpu: bool = False) -> None:
        """Map ``instances`` groups of the attached ``frames`` at ``base``
        (see the core's docstring); windows may not overlap."""
        base = check_int("base", base, 0, U64)
        instances = check_int("instances", instances, -(1 << 63), (1 << 63) - 1)
        ids = [_frame_index(f) for f in frames]
        if not ids or ids != list(range(ids[0], ids[0] + len(ids))):
            raise ValueError(f"frames {frames!r} are not consecutive frame indices")
        if len(ids) & (len(ids) - 1):
            raise ValueError(f"{len(ids)} is not a power of two")
        for f in ids:
            if self._states[f] is None:
                raise ValueError(f"frame {FRAME_NAMES[f]} is not attached")
        if not 1 <= instances <= (self._nr_vcpus if per_vcpu else 1 << 20):
            raise ValueError(f"{instances} instances: a per-vCPU window has one per vCPU at most")
        if base % FRAME_SIZE:
            raise ValueError(f"base {base:#x} is not 64 KiB aligned")
        w = _Window(base, tuple(ids), instances, bool(per_vcpu))
        if base + w.size > 1 << 64:
            raise ValueError(f"window {base:#x}+{w.size:#x} leaves the 64-bit address space")
        for other in self._windows:
            if base < other.base + other.size and other.base < base + w.size:
                raise ValueError(f"window {base:#x}+{w.size:#x} overlaps {other.base:#x}+{other.size:#x}")
        self._windows.append(w)

    # ---- decoding -----------------------------------------------------------
    def _decode(self, addr: int, accessor: int) -> tuple[int, int, int] | None:
        """``(frame, offset, acting vCPU)`` of a guest address, or None if
        unmapped: a per-vCPU group acts for its owner, anything else for the
        accessor (kvm-facts §1.1, §2)."""
        for w in self._windows:
            d = addr - w.base
            if 0 <= d < w.size:
                group, rest = divmod(d, len(w.frames) * FRAME_SIZE)
                return w.frames[rest >> FRAME_SHIFT], rest % FRAME_SIZE, group if w.per_vcpu else accessor
        return None

    def _find(self, frame: int, offset: int) -> _Bound | None:
        table = self._tables[frame]
        assert table is not None
        if _lookup_mode == "direct":
            return table.find_direct(offset)
        return table.find_bsearch(offset)

    def _check_vcpu(self, vcpu: int, where: str = "") -> None:
        if not 0 <= vcpu < self._nr_vcpus:
            raise ValueError(f"{where}vcpu {vcpu} out of range: the VM has {self._nr_vcpus} vCPUs")

    # ---- the access path ----------------------------------------------------
    def _access(self, frame: int, offset: int, vcpu: int, size: int, write: bool, value: int) -> int:
        bound = self._find(frame, offset)
        if bound is None:
            return 0        # no register here: RAZ/WI (kvm-facts §1.2 "not present")
        state = self._states[frame]
        intid = _check(bound.region, offset, size, state.nr_intids)
        if intid == _INVALID:
            return 0
        if write:
            bound.ops.write(state, vcpu, offset, intid, size, value)
            return 0
        return bound.ops.read(state, vcpu, offset, intid, size)

    def _halts_guest(self, frame: int, offset: int, size: int) -> bool:
        # A valid access to a halting region (KVM's active-state accessors);
        # a refused access never reaches them.
        bound = self._find(frame, offset)
        return (bound is not None and bound.region.ops in HALTING_OPS
                and _check(bound.region, offset, size, self._states[frame].nr_intids) != _INVALID)

    @property
    def halt_hook(self) -> Callable[[], Any] | None:
        """None, or a callable returning a context manager that halts every
        running vCPU (kvm_arm_halt_guest / kvm_arm_resume_guest).  Guest
        accesses to the regions of :data:`vgic.regmap.HALTING_OPS` run inside
        it, one by one, also inside a replay."""
        return self._halt_hook

    @halt_hook.setter
    def halt_hook(self, hook: Callable[[], Any] | None) -> None:
        if hook is not None and not callable(hook):
            raise TypeError(f"halt_hook must be callable or None, not {type(hook).__name__}")
        self._halt_hook = hook

    def _guest(self, addr: Any, size: Any, vcpu: Any, write: bool, value: Any = 0) -> int:
        # Each argument is converted and checked in turn: size, addr, value,
        # vcpu (the core's order, so both raise the same error for one call).
        size = _as_int(size, "size")
        _check_size(size)
        addr = _as_int(addr, "addr")
        _check_addr(addr)
        if write:
            value = _as_int(value, "value")
            _check_value(value, size)
        vcpu = _as_int(vcpu, "vcpu")
        self._check_vcpu(vcpu)
        where = self._decode(addr, vcpu)
        if where is None:
            raise UnmappedAccess(addr)
        frame, offset, acting = where
        hook = self._halt_hook
        if hook is not None and self._halts_guest(frame, offset, size):
            with hook():
                return self._access(frame, offset, acting, size, write, value)
        return self._access(frame, offset, acting, size, write, value)

    def mmio_read(self, addr: int, size: int, vcpu: int = 0) -> int:
        """A guest load of ``size`` bytes at ``addr`` by vCPU ``vcpu``.

        Raises ``ValueError`` for a size outside (1, 2, 4, 8), a negative
        address or a vCPU index out of range, and :class:`vgic.UnmappedAccess`
        for an address outside every window.  RAZ/WI cases read 0.
        """
        return self._guest(addr, size, vcpu, False)

    def mmio_write(self, addr: int, size: int, value: int, vcpu: int = 0) -> None:
        """A guest store; as :meth:`mmio_read`, and ``ValueError`` when
        ``value`` does not fit in ``size`` bytes or is negative."""
        self._guest(addr, size, vcpu, True, value)

    def mmio_replay(self, trace: npt.NDArray[Any]) -> npt.NDArray[np.uint64]:
        """Run a trace of :data:`vgic.MMIO_ACCESS` records in order.

        Returns the value each access read (0 for writes).  The whole trace is
        validated first: a wrong dtype raises ``TypeError``; a bad size, value
        or vCPU raises ``ValueError`` and an unmapped address
        :class:`vgic.UnmappedAccess`, both naming the record index, and in
        either case no access is performed.
        """
        arr = check_trace(trace)
        hook = self._halt_hook      # read once: another thread's change does not reach this replay
        addrs = arr["addr"].tolist()
        values = arr["value"].tolist()
        vcpus = arr["vcpu"].tolist()
        sizes = arr["size"].tolist()
        writes = arr["write"].tolist()

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
            found = self._decode(addrs[i], vcpus[i])
            if found is None:
                addr = addrs[i]
                raise UnmappedAccess(addr, f"{where}address {addr:#x} is outside every mapped frame")
            decoded.append(found)

        # Pass 2: run in order.
        out = [0] * len(decoded)
        for i, (frame, offset, vcpu) in enumerate(decoded):
            if hook is not None and self._halts_guest(frame, offset, sizes[i]):
                # Running vCPUs halt around each active-state access alone.
                with hook():
                    out[i] = self._access(frame, offset, vcpu, sizes[i], bool(writes[i]), values[i])
            else:
                out[i] = self._access(frame, offset, vcpu, sizes[i], bool(writes[i]), values[i])
        return np.array(out, dtype=np.uint64)

    # ---- userspace (KVM device attribute) access ---------------------------
    def _uaccess_region(self, frame: Any, vcpu: Any, offset: Any,
                        size: int = 4) -> tuple[_Bound, int, int, int, int] | None:
        """Region, INTID, frame, vCPU and offset of a userspace access of
        ``size`` bytes, or None (KVM's ``vgic_get_mmio_region``); bad
        arguments raise.  Each argument is converted once."""
        f = _frame_index(frame)
        if self._states[f] is None:
            raise ValueError(f"frame {FRAME_NAMES[f]} is not attached")
        v = check_int("vcpu", vcpu, 0, self._nr_vcpus - 1)
        off = check_int("offset", offset, 0, U64)
        if off >= FRAME_SIZE:
            return None
        bound = self._find(f, off)
        if bound is None:
            return None
        intid = _check(bound.region, off, size, self._states[f].nr_intids)
        if intid == _INVALID:
            return None
        return bound, intid, f, v, off

    def has_region(self, frame: int, offset: int) -> bool:
        """True if a 32-bit access at ``offset`` of ``frame`` hits a region.

        KVM's ``vgic_v3_has_attr_regs``: 4-byte aligned, and the region
        lookup with its full check (width, alignment, INTID) hits.
        """
        found = self._uaccess_region(frame, 0, offset)
        return found is not None and not found[4] & 3

    def uaccess_read(self, frame: int, vcpu: int, offset: int, size: int = 4) -> int:
        """A userspace read of ``size`` bytes (4, or 8 for a 64-bit ITS
        register) with KVM's uaccess semantics (0 if no region)."""
        sz = _uaccess_size(size)
        found = self._uaccess_region(frame, vcpu, offset, sz)
        if found is None:
            return 0
        bound, intid, f, v, off = found
        return bound.ops.uaccess_read(self._states[f], v, off, intid, sz)

    def uaccess_write(self, frame: int, vcpu: int, offset: int, value: int, size: int = 4) -> int:
        """A userspace write of ``size`` bytes (4 or 8); returns 0 or a
        negative errno.

        With no region (or a failed check) the write is ignored and reports
        success, as KVM's ``vgic_uaccess_write`` does (kvm-facts §2).
        """
        sz = _uaccess_size(size)
        value = check_int("value", value, 0, U32 if sz == 4 else U64)
        found = self._uaccess_region(frame, vcpu, offset, sz)
        if found is None:
            return 0
        bound, intid, f, v, off = found
        return bound.ops.uaccess_write(self._states[f], v, off, intid, sz, value)

    def _ubatch_args(self, frame: Any, vcpus: Any, offsets: Any) -> tuple[int, np.ndarray, np.ndarray]:
        # Every vCPU index and offset of a batch, checked before any access.
        f = _frame_index(frame)
        if self._states[f] is None:
            raise ValueError(f"frame {FRAME_NAMES[f]} is not attached")
        vc = index_array("vcpus", vcpus)
        off = index_array("offsets", offsets)
        if vc.shape[0] != off.shape[0]:
            raise ValueError(f"vcpus has {vc.shape[0]} entries, offsets {off.shape[0]}")
        if vc.size:
            bad = (vc < 0) | (vc >= self._nr_vcpus)
            if bad.any():
                k = int(np.argmax(bad))
                raise ValueError(f"vcpus[{k}] = {int(vc[k])} is not a vCPU index (0..{self._nr_vcpus - 1})")
            if off.min() < 0:
                k = int(np.argmax(off < 0))
                raise ValueError(f"offsets[{k}] = {int(off[k])} is negative")
        return f, vc, off

    def uaccess_read_batch(self, frame: int, vcpus: Any, offsets: Any, size: int = 4) -> np.ndarray:
        """:meth:`uaccess_read` of many registers of one frame, in order:
        ``vcpus`` and ``offsets`` are 1-D integer arrays of one length (all
        checked before any access); returns the values as ``uint64``."""
        sz = _uaccess_size(size)
        f, vc, off = self._ubatch_args(frame, vcpus, offsets)
        out = np.zeros(vc.shape[0], dtype=np.uint64)
        for k, (v, o) in enumerate(zip(vc.tolist(), off.tolist())):
            out[k] = self.uaccess_read(f, v, o, sz)
        return out

    def uaccess_write_batch(self, frame: int, vcpus: Any, offsets: Any, values: Any,
                            size: int = 4) -> tuple[int, int]:
        """:meth:`uaccess_write` of many registers of one frame, in order, as
        that many single writes stopping at the first refused one: returns
        ``(index, errno)`` of that write (its errno positive), or ``(-1, 0)``
        when every write succeeded.  Arguments are checked before anything
        is written."""
        sz = _uaccess_size(size)
        f, vc, off = self._ubatch_args(frame, vcpus, offsets)
        vals = value_array("values", values, U32 if sz == 4 else U64)
        if vals.shape[0] != vc.shape[0]:
            raise ValueError(f"values has {vals.shape[0]} entries, offsets {vc.shape[0]}")
        for k, (v, o, x) in enumerate(zip(vc.tolist(), off.tolist(), vals.tolist())):
            ret = self.uaccess_write(f, v, o, x, sz)
            if ret:
                return k, -ret
        return -1, 0
