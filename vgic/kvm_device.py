"""KVM's userspace device-attribute API of the vGICv3 device.

``get_attr``/``set_attr``/``has_attr`` behave as KVM_GET/SET/HAS_DEVICE_ATTR
on a KVM_DEV_TYPE_ARM_VGIC_V3 device that has been initialised
(KVM_DEV_ARM_VGIC_CTRL_INIT done, addresses set), with KVM's attribute
encodings and errnos (raised as :class:`vgic.KvmError`).  Register accesses go
through the same region tables as guest MMIO, using each region's userspace
handlers where KVM's differ from a guest's (kvm-facts §2, §6;
Documentation/virt/kvm/devices/arm-vgic-v3.rst).

Register groups (DIST_REGS, REDIST_REGS, CPU_SYSREGS, LEVEL_INFO) and
CTRL SAVE_PENDING_TABLES take every vCPU's lock as KVM does (after parsing the
attribute, so a bad MPIDR is still -EINVAL): with a vCPU between
``enter()`` and ``exit()`` (inside KVM_RUN) they fail with -EBUSY, and a vCPU
that is loaded but not running is put first, as KVM_RUN puts it before
returning to userspace, so its APRs are saved and a written ICH_VMCR/APR
value is loaded at its next entry.

Not modelled: an uninitialised device (-EBUSY).
"""
from __future__ import annotations

import errno
from typing import TYPE_CHECKING

import numpy as np

from vgic import cpu_sysregs, ich, regmap, regnames, topology, uapi
from vgic.batchargs import value_array
from vgic.errors import KvmError

if TYPE_CHECKING:
    from vgic.vgic_v3 import VgicV3
    from vgic.vm import VM

U32, U64 = ich.U32, ich.U64


def _check_u(name: str, value: int, limit: int) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    value = value.__index__()
    if not 0 <= value <= limit:
        raise ValueError(f"{name} {value:#x} does not fit in {limit.bit_length()} bits")
    return value


def _vcpu_from_attr(vm: VM, attr: int) -> int:
    # KVM: kvm_mpidr_to_vcpu(VGIC_TO_MPIDR(attr[63:32])), -EINVAL if none.
    vcpu = vm._mpidrs.vcpu(uapi.attr_to_mpidr(attr))
    if vcpu < 0:
        raise KvmError(errno.EINVAL, f"no vCPU has the affinity in attr {attr:#x}")
    return vcpu


def _redist_frame(offset: int) -> tuple[int, int]:
    # REDIST_REGS offsets span RD_base and SGI_base (0..0x1FFFF).
    if offset >= regmap.SGI_BASE_OFFSET:
        return regmap.FRAME_GICR_SGI, offset - regmap.SGI_BASE_OFFSET
    return regmap.FRAME_GICR_RD, offset


def _regs_target(vm: VM, group: int, attr: int) -> tuple[int, int, int]:
    """(frame, vcpu, offset) of a DIST_REGS / REDIST_REGS attribute."""
    offset = attr & uapi.KVM_DEV_ARM_VGIC_OFFSET_MASK
    if group == uapi.KVM_DEV_ARM_VGIC_GRP_DIST_REGS:
        # The MPIDR field is ignored for the distributor: KVM uses vCPU 0.
        return regmap.FRAME_GICD, 0, offset
    frame, offset = _redist_frame(offset)
    return frame, _vcpu_from_attr(vm, attr), offset


def _level_info(vm: VM, attr: int) -> tuple[int, int]:
    vcpu = _vcpu_from_attr(vm, attr)
    info = (attr & uapi.KVM_DEV_ARM_VGIC_LINE_LEVEL_INFO_MASK) >> uapi.KVM_DEV_ARM_VGIC_LINE_LEVEL_INFO_SHIFT
    if info != uapi.VGIC_LEVEL_INFO_LINE_LEVEL:
        raise KvmError(errno.EINVAL, f"LEVEL_INFO type {info} is not VGIC_LEVEL_INFO_LINE_LEVEL")
    intid = attr & uapi.KVM_DEV_ARM_VGIC_LINE_LEVEL_INTID_MASK
    if intid % 32:
        raise KvmError(errno.EINVAL, f"LEVEL_INFO vINTID {intid} is not a multiple of 32")
    return vcpu, intid


def _addr_value(vm: VM, attr: int) -> int:
    if attr == uapi.KVM_VGIC_V3_ADDR_TYPE_DIST:
        return vm.dist_base
    if attr == uapi.KVM_VGIC_V3_ADDR_TYPE_REDIST:
        return vm.redist_base
    if attr == uapi.KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION:
        # The VM's redistributors form KVM's legacy region, which KVM keeps
        # as region 0 with a count of 0.
        return vm.redist_base
    raise KvmError(errno.ENXIO, f"address type {attr} is not a vGICv3 address type")


def _lock_all_vcpus(vm: VM) -> None:
    """lock_all_vcpus(), taken after the attribute is parsed as in KVM's
    vgic_v3_attr_regs_access: -EBUSY while any vCPU runs; loaded vCPUs are put.
    (The VM's counts skip both walks in the common case: nothing runs or is loaded.)"""
    if vm._nr_running:
        for v in vm.vcpus:
            if v.running:
                raise KvmError(errno.EBUSY, f"vCPU {v.id} is running")
    if vm._nr_loaded:
        for v in vm.vcpus:
            v.put()


def get_attr(part: VgicV3, group: int, attr: int) -> int:
    """KVM_GET_DEVICE_ATTR."""
    group = _check_u("group", group, U32)
    attr = _check_u("attr", attr, U64)
    vm = part.vm
    if group == uapi.KVM_DEV_ARM_VGIC_GRP_ADDR:
        return _addr_value(vm, attr)
    if group in (uapi.KVM_DEV_ARM_VGIC_GRP_DIST_REGS, uapi.KVM_DEV_ARM_VGIC_GRP_REDIST_REGS):
        frame, vcpu, offset = _regs_target(vm, group, attr)
        _lock_all_vcpus(vm)
        return vm.bus.uaccess_read(frame, vcpu, offset)
    if group == uapi.KVM_DEV_ARM_VGIC_GRP_NR_IRQS:
        return vm.nr_irqs
    if group == uapi.KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS:
        target = _vcpu_from_attr(vm, attr)
        _lock_all_vcpus(vm)
        return cpu_sysregs.read(part, target, attr & uapi.KVM_DEV_ARM_VGIC_SYSREG_INSTR_MASK)
    if group == uapi.KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO:
        vcpu, intid = _level_info(vm, attr)
        _lock_all_vcpus(vm)
        return part.gic.line_level_read(vcpu, intid)
    raise KvmError(errno.ENXIO, f"group {group} cannot be read on the vGICv3 device")


def set_attr(part: VgicV3, group: int, attr: int, value: int) -> None:
    """KVM_SET_DEVICE_ATTR."""
    group = _check_u("group", group, U32)
    attr = _check_u("attr", attr, U64)
    vm = part.vm
    if group == uapi.KVM_DEV_ARM_VGIC_GRP_ADDR:
        value = _check_u("value", value, U64)
        if attr == uapi.KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION:
            # Mixing the legacy REDIST address with regions is refused.
            raise KvmError(errno.EINVAL, "the redistributors already form a legacy region")
        _addr_value(vm, attr)
        raise KvmError(errno.EEXIST, f"address type {attr} is already set")
    if group in (uapi.KVM_DEV_ARM_VGIC_GRP_DIST_REGS, uapi.KVM_DEV_ARM_VGIC_GRP_REDIST_REGS):
        value = _check_u("value", value, U32)
        frame, vcpu, offset = _regs_target(vm, group, attr)
        _lock_all_vcpus(vm)
        ret = vm.bus.uaccess_write(frame, vcpu, offset, value)
        if ret:
            raise KvmError(-ret, f"{regmap.FRAME_NAMES[frame]} offset {offset:#x} refuses {value:#x}")
        return
    if group == uapi.KVM_DEV_ARM_VGIC_GRP_NR_IRQS:
        value = _check_u("value", value, U32)
        try:
            topology.check_nr_irqs(value)
        except ValueError as exc:
            raise KvmError(errno.EINVAL, str(exc)) from None
        raise KvmError(errno.EBUSY, "the number of IRQs is already set")
    if group == uapi.KVM_DEV_ARM_VGIC_GRP_CTRL:
        if attr == uapi.KVM_DEV_ARM_VGIC_CTRL_INIT:
            return  # already initialised: KVM's vgic_init() returns 0
        if attr == uapi.KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES:
            _lock_all_vcpus(vm)   # kvm-facts §5.6: all vCPUs locked (EBUSY if one runs)
            r = part.gic.save_pending_tables()
            if r < 0:
                raise KvmError(-r, "KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES: a pending table outside guest RAM")
            return
        raise KvmError(errno.ENXIO, f"CTRL attribute {attr} is not a vGICv3 control")
    if group == uapi.KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS:
        value = _check_u("value", value, U64)
        target = _vcpu_from_attr(vm, attr)
        _lock_all_vcpus(vm)
        cpu_sysregs.write(part, target, attr & uapi.KVM_DEV_ARM_VGIC_SYSREG_INSTR_MASK, value)
        return
    if group == uapi.KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO:
        value = _check_u("value", value, U32)
        vcpu, intid = _level_info(vm, attr)
        _lock_all_vcpus(vm)
        part.gic.line_level_write(vcpu, intid, value)
        return
    raise KvmError(errno.ENXIO, f"group {group} cannot be written on the vGICv3 device")


def has_attr(part: VgicV3, group: int, attr: int) -> bool:
    """KVM_HAS_DEVICE_ATTR: True where KVM returns 0, False where -ENXIO;
    other errnos (an unknown MPIDR: EINVAL) raise :class:`vgic.KvmError`."""
    group = _check_u("group", group, U32)
    attr = _check_u("attr", attr, U64)
    vm = part.vm
    if group == uapi.KVM_DEV_ARM_VGIC_GRP_ADDR:
        return attr in (uapi.KVM_VGIC_V3_ADDR_TYPE_DIST, uapi.KVM_VGIC_V3_ADDR_TYPE_REDIST,
                        uapi.KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION)
    if group in (uapi.KVM_DEV_ARM_VGIC_GRP_DIST_REGS, uapi.KVM_DEV_ARM_VGIC_GRP_REDIST_REGS):
        offset = attr & uapi.KVM_DEV_ARM_VGIC_OFFSET_MASK
        if group == uapi.KVM_DEV_ARM_VGIC_GRP_DIST_REGS:
            frame = regmap.FRAME_GICD
        else:
            # KVM parses the attribute first: an unknown MPIDR is -EINVAL,
            # not "no such register".
            _vcpu_from_attr(vm, attr)
            if offset >= regmap.REDIST_STRIDE:
                return False
            frame, offset = _redist_frame(offset)
        return offset < regmap.FRAME_SIZE and vm.bus.has_region(frame, offset)
    if group == uapi.KVM_DEV_ARM_VGIC_GRP_NR_IRQS:
        return True
    if group == uapi.KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS:
        _vcpu_from_attr(vm, attr)
        return cpu_sysregs.has(attr & uapi.KVM_DEV_ARM_VGIC_SYSREG_INSTR_MASK)
    if group == uapi.KVM_DEV_ARM_VGIC_GRP_CTRL:
        return attr in (uapi.KVM_DEV_ARM_VGIC_CTRL_INIT, uapi.KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES)
    if group == uapi.KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO:
        info = (attr & uapi.KVM_DEV_ARM_VGIC_LINE_LEVEL_INFO_MASK) >> uapi.KVM_DEV_ARM_VGIC_LINE_LEVEL_INFO_SHIFT
        return info == uapi.VGIC_LEVEL_INFO_LINE_LEVEL
    return False


# ------------------------------------------------------------------ batches
# The register groups as batches: many attributes of one group in one call,
# each access exactly as its KVM_GET/SET_DEVICE_ATTR (same handlers, same
# errnos).  Every attribute is parsed first (a bad MPIDR, an unknown
# encoding or LEVEL_INFO type raises before anything runs, naming its
# position); the accesses then run in order, and a write batch stops at the
# first refused value, raising KvmError with its ``index`` (the writes
# before it took effect, as a VMM's loop of ioctls would leave them).
_BATCH_GROUPS = (uapi.KVM_DEV_ARM_VGIC_GRP_DIST_REGS, uapi.KVM_DEV_ARM_VGIC_GRP_REDIST_REGS,
                 uapi.KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS, uapi.KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO)


def _attr_vcpus(vm: VM, attrs: np.ndarray, strict: bool = True) -> np.ndarray:
    """kvm_mpidr_to_vcpu(VGIC_TO_MPIDR(attr)) of every attribute: EINVAL
    naming the first without a vCPU, or (``strict=False``) -1 there."""
    aff = attrs >> np.uint64(uapi.KVM_DEV_ARM_VGIC_V3_MPIDR_SHIFT)
    mpidr = (((aff >> np.uint64(24)) & np.uint64(0xFF)) << np.uint64(32)) | (aff & np.uint64(0xFFFFFF))
    vcpus = vm._mpidrs.vcpus(mpidr)
    if strict and vcpus.size and vcpus.min() < 0:
        k = int(np.argmax(vcpus < 0))
        raise _no_vcpu(attrs, k)
    return vcpus


def _no_vcpu(attrs: np.ndarray, k: int) -> KvmError:
    return KvmError(errno.EINVAL, f"attrs[{k}] = {int(attrs[k]):#x}: no vCPU has its affinity", index=k)


def _runs(keys: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of equal consecutive ``keys``."""
    if keys.size == 0:
        return []
    cuts = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    edges = [0, *cuts.tolist(), int(keys.size)]
    return list(zip(edges[:-1], edges[1:]))


def _distinct_runs(keys: np.ndarray, vcpus: np.ndarray) -> list[tuple[int, int]]:
    """Runs of one key whose vCPUs are distinct (a vCPU seen again starts a
    new run, so a run's vectorised accesses equal the sequential ones)."""
    out = []
    for a, b in _runs(keys):
        if np.unique(vcpus[a:b]).size == b - a:
            out.append((a, b))          # the usual case: each vCPU once
            continue
        start, seen = a, set[int]()
        for k, v in enumerate(vcpus[a:b].tolist(), a):
            if v in seen:
                out.append((start, k))
                start, seen = k, set[int]()
            seen.add(v)
        out.append((start, b))
    return out


def _regs_batch(vm: VM, group: int, attrs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frame, vcpu, offset) arrays of DIST_REGS / REDIST_REGS attributes."""
    offsets = (attrs & np.uint64(uapi.KVM_DEV_ARM_VGIC_OFFSET_MASK)).astype(np.int64)
    if group == uapi.KVM_DEV_ARM_VGIC_GRP_DIST_REGS:
        return np.full(attrs.shape, regmap.FRAME_GICD), np.zeros(attrs.shape, dtype=np.int64), offsets
    vcpus = _attr_vcpus(vm, attrs)
    sgi = offsets >= regmap.SGI_BASE_OFFSET
    frames = np.where(sgi, regmap.FRAME_GICR_SGI, regmap.FRAME_GICR_RD)
    return frames, vcpus, np.where(sgi, offsets - regmap.SGI_BASE_OFFSET, offsets)


def _sysregs_batch(vm: VM, attrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Attribute by attribute as KVM parses each: its MPIDR (EINVAL), then
    # its encoding (ENXIO); the first bad attribute is the one named.
    vcpus = _attr_vcpus(vm, attrs, strict=False)
    enc = (attrs & np.uint64(uapi.KVM_DEV_ARM_VGIC_SYSREG_INSTR_MASK)).astype(np.int64)
    bad = np.flatnonzero((vcpus < 0) | ~np.isin(enc, _SYSREG_ENCODINGS))
    if bad.size:
        k = int(bad[0])
        if vcpus[k] < 0:
            raise _no_vcpu(attrs, k)
        raise KvmError(errno.ENXIO, f"attrs[{k}]: system register encoding {int(enc[k]):#x} is not a vGICv3 "
                                    f"CPU register", index=k)
    return vcpus, enc


#: The CPU_SYSREGS encodings KVM advertises (cpu_sysregs.has), as an array.
_SYSREG_ENCODINGS = np.array(sorted(cpu_sysregs.REGISTERS), dtype=np.int64)


def _level_batch(vm: VM, attrs: np.ndarray) -> list[tuple[int, int]]:
    # _level_info of every attribute, checked vectorised; the first refused
    # one is parsed again alone for KVM's error, named by its position.
    vcpus = _attr_vcpus(vm, attrs, strict=False)
    info = (attrs & np.uint64(uapi.KVM_DEV_ARM_VGIC_LINE_LEVEL_INFO_MASK)) >> np.uint64(
        uapi.KVM_DEV_ARM_VGIC_LINE_LEVEL_INFO_SHIFT)
    intids = attrs & np.uint64(uapi.KVM_DEV_ARM_VGIC_LINE_LEVEL_INTID_MASK)
    bad = np.flatnonzero((vcpus < 0) | (info != uapi.VGIC_LEVEL_INFO_LINE_LEVEL) | (intids % np.uint64(32) != 0))
    if bad.size:
        k = int(bad[0])
        try:
            _level_info(vm, int(attrs[k]))
        except KvmError as exc:
            raise KvmError(exc.errno or errno.EINVAL, f"attrs[{k}]: {exc.strerror}", index=k) from None
        raise AssertionError(f"attrs[{k}] passed _level_info")     # pragma: no cover
    return list(zip(vcpus.tolist(), intids.tolist()))


def get_attrs(part: VgicV3, group: int, attrs: object) -> np.ndarray:
    """KVM_GET_DEVICE_ATTR of many attributes of one register group
    (DIST_REGS, REDIST_REGS, CPU_SYSREGS or LEVEL_INFO): the values as
    ``uint64``, in order."""
    group = _check_u("group", group, U32)
    a = value_array("attrs", attrs, U64)
    vm = part.vm
    if group not in _BATCH_GROUPS:
        raise KvmError(errno.ENXIO, f"group {group} has no batch form")
    out = np.zeros(a.shape, dtype=np.uint64)
    if group in (uapi.KVM_DEV_ARM_VGIC_GRP_DIST_REGS, uapi.KVM_DEV_ARM_VGIC_GRP_REDIST_REGS):
        frames, vcpus, offsets = _regs_batch(vm, group, a)
        _lock_all_vcpus(vm)
        for f in np.unique(frames).tolist():         # reads have no side effects: one batch per frame
            sel = frames == f
            out[sel] = vm.bus.uaccess_read_batch(f, vcpus[sel], offsets[sel])
        return out
    if group == uapi.KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS:
        vcpus, enc = _sysregs_batch(vm, a)
        _lock_all_vcpus(vm)
        for s, e in _distinct_runs(enc, vcpus):
            try:
                out[s:e] = cpu_sysregs.read_many(part, vcpus[s:e], int(enc[s]))
            except KvmError as exc:
                # Find the refused one: the reads before it are fine.
                for k in range(s, e):
                    try:
                        cpu_sysregs.read(part, int(vcpus[k]), int(enc[k]))
                    except KvmError:
                        raise KvmError(exc.errno or errno.EINVAL, f"attrs[{k}]: {exc.strerror}", index=k) from exc
                raise               # pragma: no cover - a batch refusal is some entry's
        return out
    levels = _level_batch(vm, a)
    _lock_all_vcpus(vm)
    for k, (vcpu, intid) in enumerate(levels):
        out[k] = part.gic.line_level_read(vcpu, intid)
    return out


def set_attrs(part: VgicV3, group: int, attrs: object, values: object) -> None:
    """KVM_SET_DEVICE_ATTR of many attributes of one register group, in
    order (see the batch rules above)."""
    group = _check_u("group", group, U32)
    a = value_array("attrs", attrs, U64)
    hi = U64 if group == uapi.KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS else U32
    v = value_array("values", values, hi)
    if v.shape != a.shape:
        raise ValueError(f"values has {v.shape[0]} entries, attrs {a.shape[0]}")
    vm = part.vm
    if group not in _BATCH_GROUPS:
        raise KvmError(errno.ENXIO, f"group {group} has no batch form")
    if group in (uapi.KVM_DEV_ARM_VGIC_GRP_DIST_REGS, uapi.KVM_DEV_ARM_VGIC_GRP_REDIST_REGS):
        frames, vcpus, offsets = _regs_batch(vm, group, a)
        _lock_all_vcpus(vm)
        for s, e in _runs(frames):                   # writes keep their order across frames
            k, err = vm.bus.uaccess_write_batch(int(frames[s]), vcpus[s:e], offsets[s:e], v[s:e])
            if k >= 0:
                k += s
                name = (regnames.dist_name(int(offsets[k])) if group == uapi.KVM_DEV_ARM_VGIC_GRP_DIST_REGS
                        else regnames.redist_name(int(a[k] & np.uint64(uapi.KVM_DEV_ARM_VGIC_OFFSET_MASK))))
                raise KvmError(err, f"attrs[{k}]: {name} refuses {int(v[k]):#x}", index=k)
        return
    if group == uapi.KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS:
        vcpus, enc = _sysregs_batch(vm, a)
        _lock_all_vcpus(vm)
        for s, e in _distinct_runs(enc, vcpus):
            try:
                cpu_sysregs.write_many(part, vcpus[s:e], int(enc[s]), v[s:e])
            except KvmError as exc:
                k = s + (exc.index or 0)
                raise KvmError(exc.errno or errno.EINVAL, f"attrs[{k}]: {exc.strerror}", index=k) from None
        return
    levels = _level_batch(vm, a)
    _lock_all_vcpus(vm)
    for (vcpu, intid), word in zip(levels, v.tolist()):
        part.gic.line_level_write(vcpu, intid, word)
