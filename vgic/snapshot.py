"""Whole-VM snapshots taken and restored through KVM's userspace ABI.

``vm.save()`` reads a VM the way a VMM does before migration (QEMU's
``kvm_arm_gicv3``/``kvm_arm_its`` save, Firecracker's vGIC and vCPU
snapshot): the vGICv3's DIST_REGS, REDIST_REGS and CPU_SYSREGS for every
vCPU, LEVEL_INFO, SAVE_PENDING_TABLES, the ITS's registers and SAVE_TABLES,
then the timer and FP/SVE one-regs of every vCPU and guest RAM.  Each step
is a batch of the same accesses KVM_GET_DEVICE_ATTR / KVM_GET_ONE_REG make
(:meth:`vgic.VM.get_device_attrs`, :meth:`vgic.VM.get_one_regs`).

Restoring replays them into a fresh VM in the order KVM documents
(``arm-vgic-v3.rst``, ``arm-vgic-its.rst``, kvm-facts §5.7): guest RAM
first, the distributor (GICD_IIDR first, configuration before line levels
before pending/active/enable), the redistributors (PROPBASER/PENDBASER
before GICR_CTLR.EnableLPIs), the CPU interfaces (APRs before ICC_CTLR_EL1,
which may lower PRIbits), then the ITS (CBASER, the other GITS_* registers,
RESTORE_TABLES, GITS_CTLR last), and the vCPUs' registers last (SVE_VLS,
finalize, then the rest), as a VMM writes them when it resumes the vCPUs.

A snapshot stores each register by its ABI identity (the attribute or the
one-reg ID) with its value; :mod:`vgic.regnames` names them.  The format
(:meth:`Snapshot.to_bytes`) is documented in ``docs/snapshot-format.md``.

What the ABI does not carry is not in a snapshot: the model's statistics
(timer access counts, FP bytes moved), the order of ap_lists, list
registers of a vCPU in the guest (KVM puts every vCPU first), and values
KVM cannot read back (ICC_BPR1_EL1's own field while CBPR is set).
"""
from __future__ import annotations

import errno
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vgic import fpregs, regmap, regnames, uapi
from vgic._version import __version__
from vgic.errors import KvmError, SnapshotError
from vgic.part import reg_size

if TYPE_CHECKING:
    from vgic.vm import VM

#: The format this library writes: (major, minor).  A reader refuses a newer
#: major version; a newer minor one only adds keys a reader may ignore.
FORMAT_VERSION = (1, 0)
MAGIC = b"VGICSNAP"
#: The fixed header: magic, major, minor, flags, header length, payload
#: length, CRC-32 (of the fixed header with this field zero, the header
#: and the payload), padding.
_FIXED = struct.Struct("<8sHHIQQI4x")
FLAG_ZSTD = 1
_ALIGN = 16
# Bounds a hostile header cannot exceed (the largest real VM is far below).
_MAX_IDS = 1 << 20
_MAX_SECTIONS = 64
_DTYPES: dict[str, np.dtype[Any]] = {"u1": np.dtype(np.uint8), "u4": np.dtype("<u4"), "u8": np.dtype("<u8")}

# The ABI groups a section's registers belong to.
DIST_REGS, REDIST_REGS, CPU_SYSREGS, LEVEL_INFO = "DIST_REGS", "REDIST_REGS", "CPU_SYSREGS", "LEVEL_INFO"
ITS_REGS, TIMER_CTRL, ONE_REG = "ITS_REGS", "KVM_ARM_VCPU_TIMER_CTRL", "ONE_REG"
_GROUP_IDS = {DIST_REGS: uapi.KVM_DEV_ARM_VGIC_GRP_DIST_REGS, REDIST_REGS: uapi.KVM_DEV_ARM_VGIC_GRP_REDIST_REGS,
              CPU_SYSREGS: uapi.KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS, LEVEL_INFO: uapi.KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO}
_NAMERS = {DIST_REGS: regnames.dist_name, REDIST_REGS: regnames.redist_name,
           CPU_SYSREGS: regnames.cpu_sysreg_name, LEVEL_INFO: regnames.level_info_name,
           ITS_REGS: regnames.its_name, TIMER_CTRL: regnames.timer_attr_name, ONE_REG: regnames.one_reg_name}


@dataclass(frozen=True)
class Section:
    """One step's registers: their ABI group, their IDs (the attribute
    without its MPIDR, or the one-reg ID) and values.  ``values`` is 1-D for
    a VM-wide section, (vCPUs, registers) for a per-vCPU one, and for
    ``ONE_REG`` (vCPUs, bytes): each register little-endian in its
    KVM_REG_SIZE, as KVM_GET_ONE_REG writes it."""

    name: str
    group: str
    per_vcpu: bool
    ids: np.ndarray
    values: np.ndarray

    def names(self) -> list[str]:
        """The registers' names, in ``ids`` order."""
        namer = _NAMERS[self.group]
        return [namer(int(i)) for i in self.ids]

    def columns(self) -> list[tuple[int, int]]:
        """[start, end) of each register in a row of ``values``."""
        if self.group != ONE_REG:
            return [(k, k + 1) for k in range(len(self.ids))]
        out, col = [], 0
        for r in self.ids.tolist():
            out.append((col, col + reg_size(r)))
            col += reg_size(r)
        return out


# ------------------------------------------------------------ the register lists
def _spi_words(nr_irqs: int) -> range:
    return range(1, nr_irqs // 32)


def dist_config_ids(nr_irqs: int) -> list[int]:
    """DIST_REGS restored before the line levels: GICD_IIDR first (it
    selects KVM's behaviour), GICD_CTLR, then per SPI group, configuration,
    priority and routing (both halves of each GICD_IROUTER)."""
    ids = [regmap.GICD_IIDR, regmap.GICD_CTLR]
    ids += [regmap.GICD_IGROUPR + 4 * w for w in _spi_words(nr_irqs)]
    ids += [regmap.GICD_ICFGR + 4 * w for w in range(2, nr_irqs // 16)]
    ids += [regmap.GICD_IPRIORITYR + 4 * w for w in range(8, nr_irqs // 4)]
    for intid in range(regmap.NR_PRIVATE_IRQS, nr_irqs):
        ids += [regmap.GICD_IROUTER + 8 * intid, regmap.GICD_IROUTER + 8 * intid + 4]
    return ids


def dist_state_ids(nr_irqs: int) -> list[int]:
    """DIST_REGS restored after the line levels: pending, active, enable."""
    return [base + 4 * w for base in (regmap.GICD_ISPENDR, regmap.GICD_ISACTIVER, regmap.GICD_ISENABLER)
            for w in _spi_words(nr_irqs)]


_SGI = regmap.SGI_BASE_OFFSET
_LPI_TABLES = [regmap.GICR_PROPBASER, regmap.GICR_PROPBASER + 4, regmap.GICR_PENDBASER, regmap.GICR_PENDBASER + 4]
_SGI_CONFIG = [_SGI + regmap.GICR_IGROUPR0, _SGI + regmap.GICR_ICFGR0, _SGI + regmap.GICR_ICFGR0 + 4,
               *(_SGI + regmap.GICR_IPRIORITYR0 + 4 * n for n in range(8))]


def redist_config_ids(lpis: bool) -> list[int]:
    """REDIST_REGS before the line levels: the LPI tables (only where the
    redistributors have LPIs, GICR_TYPER.PLPIS: without them KVM sanitises a
    written 0, and QEMU moves them only with PLPIS), then the SGI/PPI
    configuration and priorities."""
    return (_LPI_TABLES if lpis else []) + _SGI_CONFIG


#: REDIST_REGS after them: pending, active, enable, and GICR_CTLR last (its
#: EnableLPIs reads the pending table RAM now holds).
REDIST_STATE_IDS = [_SGI + regmap.GICR_ISPENDR0, _SGI + regmap.GICR_ISACTIVER0, _SGI + regmap.GICR_ISENABLER0,
                    regmap.GICR_CTLR]


def cpu_sysreg_ids(pri_bits: int) -> list[int]:
    """CPU_SYSREGS in restore order: ICC_SRE_EL1, the APRs the priority
    bits give (before ICC_CTLR_EL1, which may lower them), ICC_CTLR_EL1 (its
    CBPR before ICC_BPR1_EL1), then PMR, BPR0, BPR1 and the group enables."""
    from vgic import sysregs
    n = {7: 4, 6: 2}.get(pri_bits, 1)
    names = (["ICC_SRE_EL1"] + [f"ICC_AP{g}R{i}_EL1" for g in (0, 1) for i in range(n)]
             + ["ICC_CTLR_EL1", "ICC_PMR_EL1", "ICC_BPR0_EL1", "ICC_BPR1_EL1", "ICC_IGRPEN0_EL1", "ICC_IGRPEN1_EL1"])
    by_name = {row.name: attr for attr, row in sysregs.CPU_SYSREGS.items()}
    return [by_name[n] for n in names]


def fp_reg_ids(sve: bool) -> list[int]:
    """The FP/SVE one-regs of a vCPU in KVM_GET_REG_LIST's order, SVE_VLS
    (its own section, before finalize) left out: FPSR and FPCR with the
    core registers, then Z0-Z31, P0-P15, FFR and ZCR_EL1 for an SVE vCPU;
    V0-V31, FPSR, FPCR otherwise (kvm-facts §8)."""
    core = [fpregs.KVM_REG_ARM_CORE_FPSR, fpregs.KVM_REG_ARM_CORE_FPCR]
    if not sve:
        return [fpregs.core_vreg(n) for n in range(fpregs.NR_ZREGS)] + core
    return (core + [fpregs.sve_zreg(n, 0) for n in range(fpregs.NR_ZREGS)]
            + [fpregs.sve_preg(n, 0) for n in range(fpregs.NR_PREGS)] + [fpregs.sve_ffr(0), fpregs.KVM_REG_ZCR_EL1])


def timer_reg_ids() -> list[int]:
    """The timer one-regs of a vCPU, in the arch timer part's order."""
    from vgic.timer import ONE_REGS
    return list(ONE_REGS)


#: ITS_REGS in restore order (kvm-facts §5.7): GITS_CBASER first, the other
#: registers (GITS_IIDR before RESTORE_TABLES, GITS_CREADR after CBASER),
#: and GITS_CTLR after RESTORE_TABLES (its own step).
ITS_IDS = [regmap.GITS_CBASER, regmap.GITS_IIDR, *(regmap.GITS_BASER + 8 * n for n in range(8)),
           regmap.GITS_CREADR, regmap.GITS_CWRITER]
TIMER_PPI_IDS = [uapi.KVM_ARM_VCPU_TIMER_IRQ_VTIMER, uapi.KVM_ARM_VCPU_TIMER_IRQ_PTIMER]

#: The VM options a restore target must share with the snapshot (what the
#: guest can see); the others are the host's choices and may differ.
GUEST_GEOMETRY = ("nr_vcpus", "nr_irqs", "dist_base", "redist_base", "ram_base", "ram_size", "its", "its_base",
                  "irqchip", "pri_bits", "pre_bits", "cntfrq", "sve")
HOST_OPTIONS = ("nr_lrs", "lr_order", "its_max_ites", "timer_policy", "fp_policy", "host_sve", "sve_vqs")


def geometry(vm: VM) -> dict[str, Any]:
    """The options that rebuild ``vm``: its guest geometry and host choices."""
    return {
        "nr_vcpus": vm.nr_vcpus, "nr_irqs": vm.nr_irqs, "dist_base": vm.dist_base,
        "redist_base": vm.redist_base, "ram_base": vm.ram_base, "ram_size": int(vm.memory.size),
        "its": bool(vm.has_its), "its_base": vm.its_base, "irqchip": vm.irqchip, "pri_bits": vm.pri_bits,
        "pre_bits": vm.pre_bits, "cntfrq": vm.cntfrq, "sve": vm.sve,
        "nr_lrs": vm.nr_lrs, "lr_order": vm.lr_order, "its_max_ites": vm.its_max_ites,
        "timer_policy": vm.timer_policy, "fp_policy": vm.fp_policy, "host_sve": vm.host_sve,
        "sve_vqs": list(vm.sve_vqs),
    }


# -------------------------------------------------------------------- the snapshot
class Snapshot:
    """A VM's state as KVM's userspace ABI gives it: named registers by
    section, the VM's geometry, a format version, and guest RAM (or None).

    ``Snapshot`` objects are immutable in spirit: the arrays they hold are
    not changed by this library once taken.  Build one with
    :meth:`vgic.VM.save` or :meth:`from_bytes`."""

    def __init__(self, meta: dict[str, Any], sections: list[Section], ram: np.ndarray | None) -> None:
        self.meta = meta
        self.sections = {s.name: s for s in sections}
        self.ram = ram

    # ---------------------------------------------------------------- reading
    @property
    def format_version(self) -> tuple[int, int]:
        major, minor = self.meta["format"]
        return int(major), int(minor)

    @property
    def geometry(self) -> dict[str, Any]:
        """The VM options the snapshot was taken with (``vgic.VM(**geometry)``)."""
        return dict(self.meta["vm"])

    def registers(self) -> Iterator[tuple[str, str, int | bytes]]:
        """Every register: ``(scope, name, value)`` with scope ``"vm"`` or
        ``"vcpu<N>"``; values up to 8 bytes are ints, wider ones bytes."""
        for sec in self.sections.values():
            names = sec.names()
            cols = sec.columns()
            rows = sec.values if sec.per_vcpu else sec.values[None, :]
            for v, row in enumerate(rows):
                scope = f"vcpu{v}" if sec.per_vcpu else "vm"
                for name, (a, b) in zip(names, cols):
                    if sec.group == ONE_REG:
                        raw = row[a:b].tobytes()
                        yield scope, name, int.from_bytes(raw, "little") if b - a <= 8 else raw
                    else:
                        yield scope, name, int(row[a])

    def payload_bytes(self) -> int:
        """The raw register payload: every value in its ABI size (32-bit
        device-attribute registers 4 bytes, ITS registers 8, one-regs their
        KVM_REG_SIZE), RAM not counted."""
        return sum(int(s.values.nbytes) for s in self.sections.values())

    def diff(self, other: Snapshot) -> list[str]:
        """Where two snapshots differ: geometry keys and registers, as
        ``"scope name: a vs b"`` lines (RAM as one line)."""
        out = [f"vm.{k}: {self.meta['vm'].get(k)!r} vs {other.meta['vm'].get(k)!r}"
               for k in sorted(set(self.meta["vm"]) | set(other.meta["vm"]))
               if self.meta["vm"].get(k) != other.meta["vm"].get(k)]
        mine = {(s, n): v for s, n, v in self.registers()}
        theirs = {(s, n): v for s, n, v in other.registers()}
        for key in sorted(set(mine) | set(theirs), key=_scope_key):
            a, b = mine.get(key), theirs.get(key)
            if a != b:
                out.append(f"{key[0]} {key[1]}: {_fmt(a)} vs {_fmt(b)}")
        ra, rb = self.ram, other.ram
        if (ra is None) != (rb is None) or (ra is not None and rb is not None and not np.array_equal(ra, rb)):
            out.append("ram: differs")
        return out

    # ---------------------------------------------------------- serialising
    def to_bytes(self, compress: str | None = None) -> bytes:
        """The snapshot in the vgic snapshot format (``docs/snapshot-format.md``):
        a fixed header, a msgpack header naming each section, and the raw
        little-endian arrays.  ``compress="zstd"`` compresses the payload
        (needs the ``zstandard`` package, the ``[zstd]`` extra)."""
        import msgpack
        specs: list[dict[str, Any]] = []
        chunks: list[Any] = []
        offset = 0
        arrays = [(s, s.values) for s in self.sections.values()]
        for sec, arr in arrays:
            arr = np.ascontiguousarray(arr)
            pad = -offset % _ALIGN
            if pad:
                chunks.append(b"\0" * pad)
                offset += pad
            specs.append({"name": sec.name, "group": sec.group, "per_vcpu": sec.per_vcpu,
                          "ids": _runs(sec.ids), "dtype": arr.dtype.str[1:], "shape": list(arr.shape),
                          "offset": offset, "nbytes": int(arr.nbytes)})
            chunks.append(arr.reshape(-1).view(np.uint8).data)
            offset += int(arr.nbytes)
        ram_spec = None
        if self.ram is not None:
            pad = -offset % _ALIGN
            if pad:
                chunks.append(b"\0" * pad)
                offset += pad
            ram_spec = {"offset": offset, "nbytes": int(self.ram.nbytes)}
            chunks.append(np.ascontiguousarray(self.ram).reshape(-1).view(np.uint8).data)
            offset += int(self.ram.nbytes)
        header = msgpack.packb({"meta": self.meta, "sections": specs, "ram": ram_spec}, use_bin_type=True)
        flags = 0
        if compress is not None:
            if compress != "zstd":
                raise ValueError(f"compress must be None or 'zstd', not {compress!r}")
            import zstandard
            payload: Any = zstandard.ZstdCompressor(level=3).compress(b"".join(chunks))
            chunks = [payload]
            offset = len(payload)
            flags |= FLAG_ZSTD
        major, minor = self.format_version
        fixed = _FIXED.pack(MAGIC, major, minor, flags, len(header), offset, 0)
        crc = zlib.crc32(fixed)
        crc = zlib.crc32(header, crc)
        for c in chunks:
            crc = zlib.crc32(c, crc)
        fixed = _FIXED.pack(MAGIC, major, minor, flags, len(header), offset, crc)
        return b"".join([fixed, header, *chunks])

    @classmethod
    def from_bytes(cls, data: Any) -> Snapshot:
        """Read a snapshot written by :meth:`to_bytes` (any buffer: bytes,
        bytearray, memoryview, mmap, numpy array).  Its arrays, RAM included,
        are read-only views into ``data`` where it is uncompressed: no
        copies.  Anything malformed raises :class:`vgic.SnapshotError`."""
        try:
            return _decode(data)
        except SnapshotError:
            raise
        except Exception as exc:     # a hostile header must end in our error, whatever it trips
            raise SnapshotError(f"snapshot: malformed ({type(exc).__name__}: {exc})") from exc

    def save(self, path: Any, compress: str | None = None) -> None:
        """Write :meth:`to_bytes` to a file."""
        with open(path, "wb") as f:
            f.write(self.to_bytes(compress))

    @classmethod
    def load(cls, path: Any) -> Snapshot:
        """Read a snapshot file, memory-mapped: its arrays and RAM are views
        of the file's pages, read as they are used (the CRC reads them once)."""
        import mmap
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise SnapshotError(f"{path}: an empty file is not a snapshot")
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return cls.from_bytes(data)

    def __repr__(self) -> str:
        g = self.meta["vm"]
        ram = "no RAM" if self.ram is None else f"{self.ram.nbytes >> 20} MiB RAM"
        return (f"<vgic.Snapshot format {self.format_version[0]}.{self.format_version[1]}: "
                f"{g['nr_vcpus']} vCPUs, {g['nr_irqs']} IRQs, {len(self.sections)} sections, "
                f"{self.payload_bytes()} register bytes, {ram}>")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bytes):
        return v.hex() if len(v) <= 16 else v[:16].hex() + f"... ({len(v)} bytes)"
    return f"{v:#x}"


def _scope_key(key: tuple[str, str]) -> tuple[int, str]:
    scope = key[0]
    return (-1 if scope == "vm" else int(scope[4:]), key[1])


def _runs(ids: np.ndarray) -> list[list[int]]:
    """IDs as [first, count, step] runs (a register list is a few ranges)."""
    vals = [int(x) for x in ids.tolist()]
    out: list[list[int]] = []
    k = 0
    while k < len(vals):
        if k + 1 < len(vals) and vals[k + 1] > vals[k]:
            step = vals[k + 1] - vals[k]
            e = k + 1
            while e + 1 < len(vals) and vals[e + 1] - vals[e] == step:
                e += 1
            out.append([vals[k], e - k + 1, step])
            k = e + 1
        else:
            out.append([vals[k], 1, 0])
            k += 1
    return out


def _expand(runs: Any, where: str) -> np.ndarray:
    if not isinstance(runs, list) or len(runs) > _MAX_IDS:
        raise SnapshotError(f"{where}.ids: expected a list of runs")
    total = 0
    parts = []
    for r in runs:
        if (not isinstance(r, list) or len(r) != 3 or not all(type(x) is int for x in r)
                or not 0 <= r[0] < 1 << 64 or not 1 <= r[1] <= _MAX_IDS or not 0 <= r[2] < 1 << 32
                or r[0] + (r[1] - 1) * r[2] >= 1 << 64):
            raise SnapshotError(f"{where}.ids: {r!r} is not a [first, count, step] run of 64-bit IDs")
        total += r[1]
        if total > _MAX_IDS:
            raise SnapshotError(f"{where}.ids: more than {_MAX_IDS} registers")
        parts.append(np.uint64(r[0]) + np.arange(r[1], dtype=np.uint64) * np.uint64(r[2]))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)


def _need(cond: bool, message: str) -> None:
    if not cond:
        raise SnapshotError(message)


def _decode(data: Any) -> Snapshot:
    import msgpack
    try:
        view = memoryview(data)
    except TypeError:
        raise SnapshotError(f"snapshot: expected bytes or a buffer, not {type(data).__name__}") from None
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    _need(len(view) >= _FIXED.size, f"snapshot: {len(view)} bytes is shorter than its header")
    magic, major, minor, flags, hlen, plen, crc = _FIXED.unpack_from(view, 0)
    _need(magic == MAGIC, "snapshot: not a vgic snapshot (bad magic)")
    _need(major <= FORMAT_VERSION[0], f"snapshot: format {major}.{minor} is newer than this vgic reads "
                                      f"({FORMAT_VERSION[0]}.x); upgrade vgic")
    _need(major >= 1, f"snapshot: format {major}.{minor} does not exist")
    _need(flags & ~FLAG_ZSTD == 0, f"snapshot: unknown flags {flags:#x}")
    _need(_FIXED.size + hlen + plen == len(view),
          f"snapshot: header says {_FIXED.size + hlen + plen} bytes, got {len(view)} (truncated or padded)")
    check = zlib.crc32(_FIXED.pack(magic, major, minor, flags, hlen, plen, 0))
    check = zlib.crc32(view[_FIXED.size:], check)
    _need(check == crc, f"snapshot: checksum {check:#010x} does not match the stored {crc:#010x} (corrupt)")
    header = msgpack.unpackb(view[_FIXED.size:_FIXED.size + hlen], raw=False, strict_map_key=True,
                             use_list=True)
    payload = view[_FIXED.size + hlen:]
    _need(isinstance(header, dict) and set(header) >= {"meta", "sections", "ram"}, "snapshot: bad header")
    if flags & FLAG_ZSTD:
        payload = _decompress(payload, header)
    meta = header["meta"]
    _check_meta(meta)
    specs = header["sections"]
    _need(isinstance(specs, list) and len(specs) <= _MAX_SECTIONS, "snapshot: bad section list")
    sections = []
    for k, spec in enumerate(specs):
        where = f"sections[{k}]"
        _need(isinstance(spec, dict) and set(spec) >= {"name", "group", "per_vcpu", "ids", "dtype", "shape",
                                                       "offset", "nbytes"}, f"{where}: bad section")
        name, group, per_vcpu = spec["name"], spec["group"], spec["per_vcpu"]
        _need(isinstance(name, str) and group in _NAMERS and isinstance(per_vcpu, bool), f"{where}: bad name or group")
        arr = _array(payload, spec, where)
        ids = _expand(spec["ids"], where)
        nv = meta["vm"]["nr_vcpus"]
        if per_vcpu:
            _need(arr.ndim == 2 and arr.shape[0] == nv, f"{where}: expected {nv} rows")
        else:
            _need(arr.ndim == 1 or group == ONE_REG, f"{where}: expected a 1-D array")
        width = sum(reg_size(int(i)) for i in ids.tolist()) if group == ONE_REG else len(ids)
        _need(arr.shape[-1] == width, f"{where}: {arr.shape[-1]} values for {len(ids)} registers")
        _need((group == ONE_REG) == (arr.dtype == np.uint8), f"{where}: dtype {arr.dtype} does not fit {group}")
        sections.append(Section(name, group, per_vcpu, ids, arr))
    _need(len({s.name for s in sections}) == len(sections), "snapshot: a section name repeats")
    ram = None
    if header["ram"] is not None:
        rs = header["ram"]
        _need(isinstance(rs, dict), "snapshot: bad ram entry")
        ram = _array(payload, {**rs, "dtype": "u1", "shape": [rs.get("nbytes")]}, "ram")
        _need(ram.size == meta["vm"]["ram_size"], f"ram: {ram.size} bytes, geometry says {meta['vm']['ram_size']}")
    return Snapshot(meta, sections, ram)


def _decompress(payload: memoryview, header: dict[str, Any]) -> memoryview:
    """The zstd payload, decompressed to exactly the size the header's
    arrays end at: a frame that would grow larger is refused before it
    is inflated, whatever it declares."""
    try:
        import zstandard
    except ImportError:
        raise SnapshotError("snapshot: compressed with zstd; install the zstandard package") from None
    specs = header["sections"] if isinstance(header["sections"], list) else []
    ends = [0]
    for spec in [*specs, header["ram"]]:
        if isinstance(spec, dict):
            off, nbytes = spec.get("offset"), spec.get("nbytes")
            if not (isinstance(off, int) and isinstance(nbytes, int) and off >= 0 and nbytes >= 0):
                raise SnapshotError("snapshot: bad offset/nbytes")
            ends.append(off + nbytes)
    need = max(ends)
    try:
        declared = zstandard.frame_content_size(bytes(payload[:18]))
    except zstandard.ZstdError as exc:
        raise SnapshotError(f"snapshot: the payload is not a zstd frame: {exc}") from None
    _need(declared in (-1, need), f"snapshot: the zstd frame holds {declared} bytes, the header {need}")
    try:
        out = zstandard.ZstdDecompressor().decompress(bytes(payload), max_output_size=need)
    except zstandard.ZstdError as exc:
        raise SnapshotError(f"snapshot: the zstd payload does not decompress to {need} bytes: {exc}") from None
    _need(len(out) == need, f"snapshot: the zstd payload holds {len(out)} bytes, the header {need}")
    return memoryview(out)


def _array(payload: memoryview, spec: dict[str, Any], where: str) -> np.ndarray:
    dtype = _DTYPES.get(spec.get("dtype"))  # type: ignore[arg-type]
    shape, off, nbytes = spec.get("shape"), spec.get("offset"), spec.get("nbytes")
    if dtype is None:
        raise SnapshotError(f"{where}: dtype {spec.get('dtype')!r} is not u1, u4 or u8")
    if not (isinstance(shape, list) and 1 <= len(shape) <= 2
            and all(type(x) is int and 0 <= x < 1 << 40 for x in shape)):
        raise SnapshotError(f"{where}: bad shape")
    if not (type(off) is int and type(nbytes) is int and 0 <= off and 0 <= nbytes and off + nbytes <= len(payload)):
        raise SnapshotError(f"{where}: offset/nbytes outside the payload")
    _need(int(np.prod(shape, dtype=object)) * dtype.itemsize == nbytes, f"{where}: shape does not match nbytes")
    _need(off % dtype.itemsize == 0, f"{where}: misaligned")
    arr = np.frombuffer(payload, dtype=dtype, count=nbytes // dtype.itemsize, offset=off).reshape(shape)
    arr.flags.writeable = False
    return arr


_META_INTS = ("nr_vcpus", "nr_irqs", "dist_base", "redist_base", "ram_base", "ram_size", "its_base", "pri_bits",
              "pre_bits", "cntfrq", "nr_lrs", "its_max_ites")


def _check_meta(meta: Any) -> None:
    _need(isinstance(meta, dict) and isinstance(meta.get("vm"), dict) and isinstance(meta.get("host"), dict),
          "snapshot: bad meta")
    fmt = meta.get("format")
    _need(isinstance(fmt, list) and len(fmt) == 2 and all(type(x) is int for x in fmt), "snapshot: bad meta.format")
    g = meta["vm"]
    for key in _META_INTS:
        _need(type(g.get(key)) is int and 0 <= g[key] < 1 << 64, f"snapshot: meta.vm.{key} is not an integer")
    _need(1 <= g["nr_vcpus"] <= regmap.MAX_VCPUS, f"snapshot: meta.vm.nr_vcpus {g['nr_vcpus']} is out of range")
    for key in ("its", "irqchip", "sve", "host_sve"):
        _need(isinstance(g.get(key), bool), f"snapshot: meta.vm.{key} is not a bool")
    for key in ("lr_order", "timer_policy", "fp_policy"):
        _need(isinstance(g.get(key), str), f"snapshot: meta.vm.{key} is not a string")
    _need(isinstance(g.get("sve_vqs"), list) and all(type(x) is int for x in g["sve_vqs"]),
          "snapshot: meta.vm.sve_vqs is not a list of integers")
    h = meta["host"]
    _need({"CNTPCT_EL0", "counter_offset"} <= set(h), "snapshot: meta.host needs CNTPCT_EL0 and counter_offset")
    _need(type(h.get("CNTPCT_EL0")) is int and 0 <= h["CNTPCT_EL0"] < 1 << 64, "snapshot: meta.host.CNTPCT_EL0")
    off = h.get("counter_offset")
    _need(off is None or (type(off) is int and 0 <= off < 1 << 64), "snapshot: meta.host.counter_offset")


# ------------------------------------------------------------------------ taking
def _per_vcpu_attrs(vm: VM, ids: list[int]) -> np.ndarray:
    """Register-major attributes: every vCPU's copy of ids[0], then ids[1]...
    (each vCPU's registers keep their order; a batch runs one register
    over all vCPUs at a time)."""
    mp = vm._mpidrs.attr_bits
    return (np.asarray(ids, dtype=np.uint64)[:, None] | mp[None, :]).ravel()


def _quiesced(vm: VM, what: str) -> None:
    for v in vm.vcpus:
        if v.running or v.blocked:
            raise SnapshotError(f"{what}: vCPU {v.id} is {'running' if v.running else 'blocked'} "
                                f"(inside KVM_RUN, where KVM's ABI answers EBUSY): exit or unblock it first")


def take(vm: VM, ram: bool = True) -> Snapshot:
    """:meth:`vgic.VM.save`: the VM through KVM's ABI, in the VMM's order."""
    _quiesced(vm, "save")
    try:
        return _take(vm, ram)
    except KvmError as exc:
        raise SnapshotError(f"save: KVM refused it: {exc}") from exc


def _take(vm: VM, ram: bool) -> Snapshot:
    # Refusals known in advance come before anything writes guest RAM.
    if vm.sve:
        for v in vm.vcpus:
            if not vm.fp.records[v.id]["finalized"]:
                raise SnapshotError(f"save: vCPU {v.id} has SVE and is not finalized "
                                    f"(KVM_GET_REG_LIST would fail with EPERM)")
    got: dict[str, Section] = {}
    nv = vm.nr_vcpus

    def per_vcpu(name: str, group: str, ids: list[int]) -> None:
        vals = vm.get_device_attrs(_GROUP_IDS[group], _per_vcpu_attrs(vm, ids))
        dtype = "<u8" if group == CPU_SYSREGS else "<u4"
        got[name] = Section(name, group, True, np.array(ids, dtype=np.uint64),
                            np.ascontiguousarray(vals.reshape(len(ids), nv).T).astype(dtype))

    if vm.gic is not None:
        # The save order of VMMs: distributor, redistributors, CPU
        # interfaces, line levels, then the pending tables into RAM.
        cfg, st = dist_config_ids(vm.nr_irqs), dist_state_ids(vm.nr_irqs)
        vals = vm.get_device_attrs(uapi.KVM_DEV_ARM_VGIC_GRP_DIST_REGS, cfg + st).astype("<u4")
        got["vgic.dist_config"] = Section("vgic.dist_config", DIST_REGS, False, np.array(cfg, dtype=np.uint64),
                                          vals[:len(cfg)])
        got["vgic.dist_state"] = Section("vgic.dist_state", DIST_REGS, False, np.array(st, dtype=np.uint64),
                                         vals[len(cfg):])
        per_vcpu("vgic.redist_config", REDIST_REGS, redist_config_ids(vm.has_its))
        per_vcpu("vgic.redist_state", REDIST_REGS, REDIST_STATE_IDS)
        per_vcpu("vgic.cpu_sysregs", CPU_SYSREGS, cpu_sysreg_ids(vm.pri_bits))
        spis = np.arange(32, vm.nr_irqs, 32, dtype=np.uint64)
        lv = vm.get_device_attrs(uapi.KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO,
                                 spis | np.uint64(uapi.mpidr_to_attr(vm.vcpus[0].mpidr))).astype("<u4")
        got["vgic.spi_levels"] = Section("vgic.spi_levels", LEVEL_INFO, False, spis, lv)
        per_vcpu("vgic.ppi_levels", LEVEL_INFO, [0])
        if vm.its is not None:
            vm.set_device_attr(uapi.KVM_DEV_ARM_VGIC_GRP_CTRL, uapi.KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES, 0)
    if vm.its is not None:
        its = vm.its
        ids = ITS_IDS + [regmap.GITS_CTLR]
        vals64 = np.array([its.get_device_attr(uapi.KVM_DEV_ARM_VGIC_GRP_ITS_REGS, o) for o in ids], dtype="<u8")
        its.save_tables()
        got["its.regs"] = Section("its.regs", ITS_REGS, False, np.array(ids[:-1], dtype=np.uint64), vals64[:-1])
        got["its.ctlr"] = Section("its.ctlr", ITS_REGS, False, np.array(ids[-1:], dtype=np.uint64), vals64[-1:])
    # The vCPUs' own registers: the timer PPIs (VM-wide in KVM, set through
    # any vCPU), then the one-regs KVM_GET_REG_LIST lists.
    if vm.gic is not None:
        ppis = [vm.vcpus[0].get_device_attr(uapi.KVM_ARM_VCPU_TIMER_CTRL, a) for a in TIMER_PPI_IDS]
        got["timer.ppis"] = Section("timer.ppis", TIMER_CTRL, False, np.array(TIMER_PPI_IDS, dtype=np.uint64),
                                    np.array(ppis, dtype="<u8"))
    if vm.sve:
        vls = [fpregs.KVM_REG_ARM64_SVE_VLS]
        got["fpsimd.vls"] = Section("fpsimd.vls", ONE_REG, True, np.array(vls, dtype=np.uint64), vm.get_one_regs(vls))
    fp_ids, timer_ids = fp_reg_ids(vm.sve), timer_reg_ids()
    got["fpsimd.regs"] = Section("fpsimd.regs", ONE_REG, True, np.array(fp_ids, dtype=np.uint64),
                                 vm.get_one_regs(fp_ids))
    got["timer.regs"] = Section("timer.regs", ONE_REG, True, np.array(timer_ids, dtype=np.uint64),
                                vm.get_one_regs(timer_ids))
    trec = vm.timer.vm_rec[0]
    meta = {
        "format": list(FORMAT_VERSION), "vgic": __version__, "backend": vm.backend,
        "vm": geometry(vm),
        # The model's host clock when taken, and the VM's counter offset if
        # userspace chose it with KVM_ARM_SET_COUNTER_OFFSET (a VMM that
        # uses that ioctl keeps its own offset).
        "host": {"CNTPCT_EL0": int(trec["counter"]),
                 "counter_offset": int(trec["voffset"]) if trec["counter_offset_set"] else None},
    }
    # Stored in restore order (the order of RESTORE_ORDER), so a reader of
    # the file sees the steps a restore takes.
    sections = [got[n] for n in RESTORE_ORDER if n in got]
    return Snapshot(meta, sections, vm.memory.copy() if ram else None)


# ----------------------------------------------------------------------- restoring
#: The value type of each group's arrays.
_GROUP_DTYPES: dict[str, np.dtype[Any]] = {
    DIST_REGS: np.dtype("<u4"), REDIST_REGS: np.dtype("<u4"), LEVEL_INFO: np.dtype("<u4"),
    CPU_SYSREGS: np.dtype("<u8"), ITS_REGS: np.dtype("<u8"), TIMER_CTRL: np.dtype("<u8"), ONE_REG: np.dtype(np.uint8)}
#: Each section's ABI group.
_SECTION_GROUPS = {
    "timer.ppis": TIMER_CTRL, "vgic.dist_config": DIST_REGS, "vgic.redist_config": REDIST_REGS,
    "vgic.spi_levels": LEVEL_INFO, "vgic.ppi_levels": LEVEL_INFO, "vgic.dist_state": DIST_REGS,
    "vgic.redist_state": REDIST_REGS, "vgic.cpu_sysregs": CPU_SYSREGS, "its.regs": ITS_REGS, "its.ctlr": ITS_REGS,
    "fpsimd.vls": ONE_REG, "fpsimd.regs": ONE_REG, "timer.regs": ONE_REG}
#: The VM-wide sections (the others have one row per vCPU).
_VM_WIDE = frozenset({"timer.ppis", "vgic.dist_config", "vgic.dist_state", "vgic.spi_levels", "its.regs",
                      "its.ctlr"})

#: The sections in the order a restore applies them.
RESTORE_ORDER = ("timer.ppis", "vgic.dist_config", "vgic.redist_config", "vgic.spi_levels", "vgic.ppi_levels",
                 "vgic.dist_state", "vgic.redist_state", "vgic.cpu_sysregs", "its.regs", "its.ctlr", "fpsimd.vls",
                 "fpsimd.regs", "timer.regs")


def check_geometry(snap: Snapshot, options: dict[str, Any]) -> None:
    """The guest-visible geometry of ``snap`` equals ``options`` (SnapshotError)."""
    _check_meta(snap.meta)
    g = snap.meta["vm"]
    for key in GUEST_GEOMETRY:
        if g.get(key) != options.get(key) and not (key == "its_base" and not g.get("its")):
            raise SnapshotError(f"restore: the snapshot's {key} is {g.get(key)!r}, this VM's {options.get(key)!r}")


def _check_sections(snap: Snapshot, vm: VM) -> None:
    """The sections a VM of this geometry needs are there, with the
    register lists this library writes for it (no more, no fewer)."""
    want: dict[str, list[int]] = {}
    if vm.gic is not None:
        want.update({"vgic.dist_config": dist_config_ids(vm.nr_irqs), "vgic.dist_state": dist_state_ids(vm.nr_irqs),
                     "vgic.redist_config": redist_config_ids(vm.has_its), "vgic.redist_state": REDIST_STATE_IDS,
                     "vgic.cpu_sysregs": cpu_sysreg_ids(vm.pri_bits),
                     "vgic.spi_levels": list(range(32, vm.nr_irqs, 32)), "vgic.ppi_levels": [0],
                     "timer.ppis": TIMER_PPI_IDS})
    if vm.its is not None:
        want.update({"its.regs": ITS_IDS, "its.ctlr": [regmap.GITS_CTLR]})
    if vm.sve:
        want["fpsimd.vls"] = [fpregs.KVM_REG_ARM64_SVE_VLS]
    _check_meta(snap.meta)
    want["fpsimd.regs"] = fp_reg_ids(vm.sve)
    want["timer.regs"] = timer_reg_ids()
    missing = set(want) - set(snap.sections)
    extra = set(snap.sections) - set(want)
    _need(not missing and not extra, f"restore: sections {sorted(missing | extra)} do not fit this VM "
                                     f"({'missing' if missing else 'not expected'})")
    # The arrays themselves (a Snapshot may be built by hand, not read):
    # each group's value type, one row per vCPU, one value per register.
    nv = vm.nr_vcpus
    for name, sec in snap.sections.items():
        where = f"restore: section {name}"
        _need(isinstance(sec, Section) and sec.name == name, f"{where}: not a Section of that name")
        sids, vals = sec.ids, sec.values
        _need(sec.group == _SECTION_GROUPS.get(name), f"{where}: its group is {_SECTION_GROUPS.get(name)}, "
                                                        f"not {sec.group!r}")
        _need(isinstance(sids, np.ndarray) and sids.ndim == 1 and sids.dtype == np.uint64,
              f"{where}: ids must be uint64")
        _need(isinstance(vals, np.ndarray) and vals.dtype == _GROUP_DTYPES[sec.group], f"{where}: values must be "
              f"{_GROUP_DTYPES[sec.group]} for {sec.group}")
        per = name not in _VM_WIDE
        _need(sec.per_vcpu == per, f"{where}: per_vcpu must be {per}")
        width = sum(reg_size(int(i)) for i in sids.tolist()) if sec.group == ONE_REG else len(sids)
        shape = (nv, width) if per else (width,)
        _need(vals.shape == shape, f"{where}: values have shape {vals.shape}, expected {shape}")
    for name, ids in want.items():
        _need(snap.sections[name].ids.tolist() == ids, f"restore: section {name} holds other registers")
    if snap.ram is not None:
        ram = snap.ram
        _need(isinstance(ram, np.ndarray) and ram.dtype == np.uint8 and ram.ndim == 1 and ram.size == vm.memory.size,
              f"restore: RAM must be {vm.memory.size} uint8 bytes")


def apply(vm: VM, snap: Snapshot, counter: int | None) -> None:
    """Replay ``snap`` into ``vm``, a VM fresh from its constructor with the
    snapshot's guest geometry, in KVM's documented restore order.  Raises
    :class:`vgic.KvmError` where the ABI refuses a value (``vm`` is then
    half-restored: callers discard it)."""
    _check_sections(snap, vm)
    S = snap.sections
    if snap.ram is not None:
        vm.memory[:] = snap.ram                 # (a) guest memory first
    host = snap.meta["host"]
    vm.timer.set_clock(host["CNTPCT_EL0"] if counter is None else counter)
    if host["counter_offset"] is not None:
        vm.set_counter_offset(host["counter_offset"])

    def put_vcpus(sec: Section) -> None:
        vm.set_device_attrs(_GROUP_IDS[sec.group], _per_vcpu_attrs(vm, sec.ids.tolist()),
                            np.ascontiguousarray(sec.values.T).ravel())

    if vm.gic is not None:
        ppis = S["timer.ppis"]
        for attr, value in zip(ppis.ids.tolist(), ppis.values.tolist()):
            vm.vcpus[0].set_device_attr(uapi.KVM_ARM_VCPU_TIMER_CTRL, attr, value)
        dist = S["vgic.dist_config"]
        vm.set_device_attrs(uapi.KVM_DEV_ARM_VGIC_GRP_DIST_REGS, dist.ids, dist.values)
        put_vcpus(S["vgic.redist_config"])      # (b) the redistributors
        vcpu0 = np.uint64(uapi.mpidr_to_attr(vm.vcpus[0].mpidr))
        vm.set_device_attrs(uapi.KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO, S["vgic.spi_levels"].ids | vcpu0,
                            S["vgic.spi_levels"].values)
        put_vcpus(S["vgic.ppi_levels"])
        vm.set_device_attrs(uapi.KVM_DEV_ARM_VGIC_GRP_DIST_REGS, S["vgic.dist_state"].ids, S["vgic.dist_state"].values)
        put_vcpus(S["vgic.redist_state"])
        put_vcpus(S["vgic.cpu_sysregs"])
    if vm.its is not None:                      # (c), (d): the ITS, GITS_CTLR last
        its = vm.its
        for o, value in zip(S["its.regs"].ids.tolist(), S["its.regs"].values.tolist()):
            its.set_device_attr(uapi.KVM_DEV_ARM_VGIC_GRP_ITS_REGS, o, value)
        its.restore_tables()
        its.set_device_attr(uapi.KVM_DEV_ARM_VGIC_GRP_ITS_REGS, regmap.GITS_CTLR, int(S["its.ctlr"].values[0]))
    if vm.sve:                                  # the vCPUs: SVE_VLS, finalize, the registers
        vls = S["fpsimd.vls"]
        vm.set_one_regs(vls.ids, vls.values)
        vm.finalize_vcpus(fpregs.KVM_ARM_VCPU_SVE)
    for name in ("fpsimd.regs", "timer.regs"):
        vm.set_one_regs(S[name].ids, S[name].values)


def restore_new(cls: type[VM], snap: Snapshot, options: dict[str, Any]) -> VM:
    """:meth:`vgic.VM.restore` called on the class: a new VM."""
    if not isinstance(snap, Snapshot):
        raise TypeError(f"restore: expected a vgic.Snapshot, not {type(snap).__name__}")
    _check_meta(snap.meta)
    kwargs = {k: snap.meta["vm"][k] for k in (*GUEST_GEOMETRY, *HOST_OPTIONS) if k in snap.meta["vm"]}
    bad = set(options) - set(HOST_OPTIONS) - {"backend", "memory"}
    if bad:
        raise TypeError(f"restore: {sorted(bad)} are not host options ({', '.join(HOST_OPTIONS)}, backend, memory)")
    kwargs.update(options)
    if kwargs.get("memory") is not None:
        kwargs.pop("ram_size")
    try:
        vm = cls(**kwargs)
    except (ValueError, TypeError, MemoryError, OverflowError) as exc:
        raise SnapshotError(f"restore: the snapshot's VM cannot be built: {exc}") from exc
    if kwargs.get("memory") is not None and vm.memory.size != snap.meta["vm"]["ram_size"]:
        raise SnapshotError(f"restore: memory has {vm.memory.size} bytes, "
                            f"the snapshot's RAM {snap.meta['vm']['ram_size']}")
    try:
        apply(vm, snap, None)
    except KvmError as exc:
        raise SnapshotError(f"restore: KVM refused it: {exc}") from exc
    return vm


def restore_onto(vm: VM, snap: Snapshot) -> None:
    """:meth:`vgic.VM.restore` called on a VM: the VM becomes what a fresh
    VM of its own options restored from ``snap`` would be, or, if anything
    is refused, stays exactly as it was.  Its host clock keeps running."""
    if not isinstance(snap, Snapshot):
        raise TypeError(f"restore: expected a vgic.Snapshot, not {type(snap).__name__}")
    _quiesced(vm, "restore")
    mine = geometry(vm)
    check_geometry(snap, mine)
    # The restore runs on a fresh VM with a private copy of RAM; only a
    # complete success is moved into this one, with steps that cannot fail.
    scratch = np.array(snap.ram if snap.ram is not None else vm.memory, dtype=np.uint8, copy=True)
    fresh = type(vm)(**{**mine, "ram_size": None}, memory=scratch, backend=vm.backend)
    try:
        apply(fresh, snap, vm.counter)
    except KvmError as exc:
        raise SnapshotError(f"restore: KVM refused it: {exc}") from exc
    vm._adopt(fresh)


# ------------------------------------------------------------ what a restore keeps
# What KVM's ABI does not carry, by part: the host's side and the model's
# history.  Everything else a restore reproduces exactly.
_NOT_CARRIED = {
    # A vCPU that ran has done its first-run work; a restored one has not yet.
    "vm": ("has_run",),
    # The timers' first-run mapping, the hardware timer registers, the
    # emulated ptimer's and the background timer's host timers (armed at
    # the next put or block), and the access counts.
    "arch_timer": ("ppis_frozen", "enabled", "hw", "host_active", "ptimer_at", "bg_at", "sysreg_reads",
                   "sysreg_writes", "gic_active_writes", "host_irqs"),
    # The host task's FP state, the modelled CPU's register file and what
    # KVM moved.
    "fpsimd": ("host_fpsr", "host_fpcr", "host_state", "hw", "hw_fpsr", "hw_fpcr", "hw_zcr_el1", "hw_zcr_el2",
               "hw_vq", "owner", "guest_bytes", "host_bytes", "traps", "zcr_writes"),
    # The ap_lists (rebuilt from the interrupts' state as KVM's uaccess
    # writes queue them), KVM's saved list registers and the hardware's.
    "vgic_v3": ("ap_list", "in_lr", "vgic_lr", "vgic_hcr", "used_lrs", "physical_deactivations",
                "active_spis"),
}


def _sanitised_cbaser(value: int) -> int:
    """GITS_CBASER as KVM stores a write of ``value`` (vgic_sanitise_its_cbaser,
    docs/its-facts-A.md): InnerCache nCnB/nC become RaWb, Outer Shareable
    becomes Inner, OuterCache other than SameAsInner/nC becomes
    SameAsInner, address bits [15:12] cleared.  Idempotent."""
    inner = (value >> 59) & 7
    if inner in (0, 1):
        value = (value & ~(7 << 59)) | (3 << 59)
    if (value >> 10) & 3 == 2:
        value = (value & ~(3 << 10)) | (1 << 10)
    if (value >> 53) & 7 >= 2:
        value &= ~(7 << 53)
    return value & ~(0xF << 12)


def comparable(state: dict[str, Any]) -> dict[str, Any]:
    """``vm.state()`` restricted to what a snapshot carries: what two VMs
    share after one is restored from a snapshot of the other (see
    ``_NOT_CARRIED``, and the host options a restore may change), with
    what KVM changes on every userspace write applied to both sides:
    ICH_VMCR_EL2.VFIQEn masked, GITS_CBASER sanitised (a CBASER the guest
    never wrote, 0, reads back with InnerCache RaWb after a restore, as it
    does after KVM's).  For tests and tools."""
    from vgic import ich
    from vgic.state import STAMPS, drop
    out: dict[str, Any] = drop(state, STAMPS)

    def strip(d: Any, keys: tuple[str, ...]) -> None:
        for k in keys:
            d.pop(k, None)

    for v in out["vm"]["vcpus"]:
        strip(v, _NOT_CARRIED["vm"])
    # The host's choices a restore may change (HOST_OPTIONS).
    strip(out["vm"], ("nr_lrs", "lr_order"))
    strip(out.get("arch_timer", {}), ("policy",))
    strip(out.get("fpsimd", {}), ("policy", "host_sve", "host_vqs"))
    its = out.get("its")
    if its is not None and "GITS_CBASER" in its:
        its["GITS_CBASER"] = _sanitised_cbaser(its["GITS_CBASER"])
    for name in ("arch_timer", "fpsimd", "vgic_v3"):
        part = out.get(name)
        if part is None:
            continue
        strip(part, _NOT_CARRIED[name])
        for v in part["vcpus"]:
            strip(v, _NOT_CARRIED[name])
            if name == "vgic_v3":
                for k in [k for k in v if k.startswith("ICH_")]:
                    del v[k]
                saved = v.get("vgic_v3", {})
                strip(saved, _NOT_CARRIED[name])
                if "vgic_vmcr" in saved:
                    saved["vgic_vmcr"] &= ~ich.VMCR_FIQEN
    return out


__all__ = ["Snapshot", "Section", "FORMAT_VERSION", "SnapshotError", "take", "restore_new", "restore_onto",
           "geometry", "check_geometry", "comparable", "GUEST_GEOMETRY", "HOST_OPTIONS", "fp_reg_ids",
           "timer_reg_ids", "redist_config_ids"]
del errno
