"""The ITS part: KVM's emulated GICv3 ITS (KVM_DEV_TYPE_ARM_VGIC_ITS), a KVM
device of its own (``vm.its``).

What it owns: the ITS registers in the GITS frames at ``vm.its_base`` (the
translation frame after it is not emulated: KVM leaves GITS_TRANSLATER
RAZ/WI and delivers MSIs through KVM_SIGNAL_MSI, here :meth:`Its.signal_msi`
and ``vm.signal_msi``), the command queue, the device, ITE and collection
tables KVM keeps, and the save/restore table ABI (revision 0) in guest
memory.  The LPIs it maps live in the vGICv3 part (``vm.gic``), as KVM's
``struct vgic_irq`` live in the distributor.

The device API (its-facts-B §3; Documentation/virt/kvm/devices/
arm-vgic-its.rst): groups KVM_DEV_ARM_VGIC_GRP_ADDR (KVM_VGIC_ITS_ADDR_TYPE),
KVM_DEV_ARM_VGIC_GRP_CTRL (CTRL_INIT, ITS_SAVE_TABLES, ITS_RESTORE_TABLES,
ITS_CTRL_RESET) and KVM_DEV_ARM_VGIC_GRP_ITS_REGS (the attribute is the
register offset; the value is 64 bits), with KVM's errnos as
:class:`vgic.KvmError`.

Where the model differs from KVM, deliberately: a failed RESTORE_TABLES
changes nothing (the project's rule for any rejected restore: what the call
made is freed and the pending-table bits it consumed are written back),
where KVM frees every device and collection of the ITS and leaves those bits
cleared - restoring into an empty ITS, the documented use, both end empty;
no translation cache (it is
invisible but for one quirk: KVM_SIGNAL_MSI without KVM_MSI_VALID_DEVID
succeeds on a cached translation; ``signal_msi`` always passes a DeviceID);
RESTORE_TABLES refuses (-EEXIST) a device that already exists, where KVM
would add a second one; LPI INTIDs are below 2**16 (KVM's ID bits with an
ITS), so a restored ITE naming a larger pINTID is -EINVAL where KVM would
make an LPI no guest could map; an ITS holds at most ``max_ites`` ITEs
(MAPTI beyond fails as an allocation would in KVM).
"""
from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

from vgic import its_state, regmap, uapi
from vgic.errors import KvmError
from vgic.ich import U32, U64
from vgic.kvm_device import _check_u, _lock_all_vcpus
from vgic.part import Part

if TYPE_CHECKING:
    from vgic.vm import VM

#: The ITS control frame's registers: offset -> (length, access bytes).
_REGS = {r.offset: (r.length, 8 if r.widths & regmap.W64 else 4) for r in regmap.GITS_REGIONS}


class Its(Part):
    """The emulated ITS of a VM (``vm.its``): the KVM_DEV_TYPE_ARM_VGIC_ITS device."""

    name = "its"
    device_type = uapi.KVM_DEV_TYPE_ARM_VGIC_ITS

    @classmethod
    def present(cls, vm: VM) -> bool:
        return bool(vm.has_its)

    def __init__(self, vm: VM, impl: Any) -> None:
        super().__init__(vm, impl)
        #: The backend's ``its.Its`` kernel.
        self.its = impl.its.Its(vm._vgic("the ITS").gic, vm.its_max_ites)

    # ------------------------------------------------------------------ MMIO
    def map_frames(self, bus: Any) -> None:
        frames = [regmap.FRAME_GITS, regmap.FRAME_GITS_TRANSLATER]
        bus.attach(frames, self.its)
        bus.map(self.vm.its_base, frames)

    # ------------------------------------------------------------ KVM's side
    def signal_msi(self, device_id: int, event_id: int) -> bool:
        """KVM_SIGNAL_MSI at this ITS's doorbell with KVM_MSI_VALID_DEVID:
        True if delivered (the LPI latched pending), False if the guest
        blocked it (no mapping); -EBUSY (ITS disabled, or the target
        redistributor's LPIs off) raises :class:`vgic.KvmError`."""
        r = self.its.signal_msi(device_id, event_id)
        if r < 0:
            raise KvmError(-r, f"KVM_SIGNAL_MSI (device {device_id}, event {event_id})")
        return r == 1

    def save_tables(self) -> None:
        """KVM_DEV_ARM_ITS_SAVE_TABLES (vCPUs must not be running)."""
        self.set_device_attr(uapi.KVM_DEV_ARM_VGIC_GRP_CTRL, uapi.KVM_DEV_ARM_ITS_SAVE_TABLES, 0)

    def restore_tables(self) -> None:
        """KVM_DEV_ARM_ITS_RESTORE_TABLES (vCPUs must not be running)."""
        self.set_device_attr(uapi.KVM_DEV_ARM_VGIC_GRP_CTRL, uapi.KVM_DEV_ARM_ITS_RESTORE_TABLES, 0)

    def reset(self) -> None:
        """KVM_DEV_ARM_ITS_CTRL_RESET (vCPUs must not be running)."""
        self.set_device_attr(uapi.KVM_DEV_ARM_VGIC_GRP_CTRL, uapi.KVM_DEV_ARM_ITS_CTRL_RESET, 0)

    # ---------------------------------------------------------- KVM device
    def _regs_offset(self, attr: int) -> tuple[int, int]:
        # vgic_its_attr_regs_access: 4-byte aligned below GITS_TYPER and from
        # the ID registers on, 8-byte aligned elsewhere (-EINVAL).
        align = 4 if attr < regmap.GITS_TYPER or attr >= regmap.GITS_IDREGS else 8
        if attr % align:
            raise KvmError(errno.EINVAL, f"ITS register offset {attr:#x} is not {align}-byte aligned")
        return attr, align

    def _region(self, offset: int) -> int | None:
        # The access size of the register at `offset`, or None (-ENXIO).
        for start, (length, size) in _REGS.items():
            if start <= offset < start + length:
                return size
        return None

    def has_device_attr(self, group: int, attr: int) -> bool:
        """KVM_HAS_DEVICE_ATTR: True where KVM returns 0, False for -ENXIO;
        a misaligned ITS_REGS offset raises -EINVAL."""
        group = _check_u("group", group, U32)
        attr = _check_u("attr", attr, U64)
        if group == uapi.KVM_DEV_ARM_VGIC_GRP_ADDR:
            return attr == uapi.KVM_VGIC_ITS_ADDR_TYPE
        if group == uapi.KVM_DEV_ARM_VGIC_GRP_CTRL:
            return attr in (uapi.KVM_DEV_ARM_VGIC_CTRL_INIT, uapi.KVM_DEV_ARM_ITS_SAVE_TABLES,
                            uapi.KVM_DEV_ARM_ITS_RESTORE_TABLES, uapi.KVM_DEV_ARM_ITS_CTRL_RESET)
        if group == uapi.KVM_DEV_ARM_VGIC_GRP_ITS_REGS:
            offset, _ = self._regs_offset(attr)
            return self._region(offset) is not None
        return False

    def get_device_attr(self, group: int, attr: int) -> int:
        """KVM_GET_DEVICE_ATTR on the ITS device."""
        group = _check_u("group", group, U32)
        attr = _check_u("attr", attr, U64)
        if group == uapi.KVM_DEV_ARM_VGIC_GRP_ADDR:
            if attr != uapi.KVM_VGIC_ITS_ADDR_TYPE:
                raise KvmError(errno.ENODEV, f"address type {attr} is not KVM_VGIC_ITS_ADDR_TYPE")
            return self.vm.its_base
        if group == uapi.KVM_DEV_ARM_VGIC_GRP_ITS_REGS:
            offset, size = self._regs_access(attr)
            return int(self.vm.bus.uaccess_read(regmap.FRAME_GITS, 0, offset, size))
        raise KvmError(errno.ENXIO, f"group {group} cannot be read on the ITS device")

    def _regs_access(self, attr: int) -> tuple[int, int]:
        offset, _ = self._regs_offset(attr)
        _lock_all_vcpus(self.vm)
        size = self._region(offset)
        if size is None:
            raise KvmError(errno.ENXIO, f"no ITS register at offset {offset:#x}")
        return offset, size

    def set_device_attr(self, group: int, attr: int, value: int) -> None:
        """KVM_SET_DEVICE_ATTR on the ITS device."""
        group = _check_u("group", group, U32)
        attr = _check_u("attr", attr, U64)
        if group == uapi.KVM_DEV_ARM_VGIC_GRP_ADDR:
            if attr != uapi.KVM_VGIC_ITS_ADDR_TYPE:
                raise KvmError(errno.ENODEV, f"address type {attr} is not KVM_VGIC_ITS_ADDR_TYPE")
            _check_u("value", value, U64)
            raise KvmError(errno.EEXIST, "the ITS base address is already set")
        if group == uapi.KVM_DEV_ARM_VGIC_GRP_CTRL:
            if attr == uapi.KVM_DEV_ARM_VGIC_CTRL_INIT:
                return                      # a no-op for the ITS
            _lock_all_vcpus(self.vm)        # (before the attribute is looked at, as in KVM)
            if attr == uapi.KVM_DEV_ARM_ITS_CTRL_RESET:
                self.its.reset()
                return
            if attr == uapi.KVM_DEV_ARM_ITS_SAVE_TABLES:
                r = self.its.save_tables()
            elif attr == uapi.KVM_DEV_ARM_ITS_RESTORE_TABLES:
                r = self.its.restore_tables()
            else:
                raise KvmError(errno.ENXIO, f"CTRL attribute {attr} is not an ITS control")
            if r < 0:
                what = ("KVM_DEV_ARM_ITS_SAVE_TABLES" if attr == uapi.KVM_DEV_ARM_ITS_SAVE_TABLES
                        else "KVM_DEV_ARM_ITS_RESTORE_TABLES")
                raise KvmError(-r, f"{what} refused")
            return
        if group == uapi.KVM_DEV_ARM_VGIC_GRP_ITS_REGS:
            value = _check_u("value", value, U64)
            offset, size = self._regs_access(attr)
            if size == 4:
                value &= U32                # the u64 is truncated to a 32-bit register
            r = self.vm.bus.uaccess_write(regmap.FRAME_GITS, 0, offset, value, size)
            if r < 0:
                raise KvmError(-r, f"GITS register {offset:#x} refuses {value:#x}")
            return
        raise KvmError(errno.ENXIO, f"group {group} cannot be written on the ITS device")

    # ---------------------------------------------------------------- state
    def state(self) -> dict[str, Any]:
        """Registers, devices with their ITEs, and collections, named
        (layout: :mod:`vgic.its_state`)."""
        return self.its.state()

    def check_state(self, state: Any) -> Any:
        return its_state.from_dict(state, self.vm.nr_vcpus, self.its.max_ites, self.name)

    def check_links(self, checked: dict[str, Any]) -> None:
        """Every ITE's LPI exists in the vGICv3 part, and each LPI's
        ``ite_count`` is the number of ITEs mapping it."""
        gic_lpi = checked["vgic_v3"][0].lpi
        its_state.check_lpi_links(checked[self.name], gic_lpi["intid"], gic_lpi["ite_count"], self.name)

    def checkpoint(self) -> Any:
        """What :meth:`check_state` of :meth:`state` returns, read directly."""
        return self.its.arrays()

    def apply_state(self, checked: Any) -> None:
        self.its.apply_arrays(checked)

    def load_state(self, state: Any) -> None:
        """This part's state alone: checked, with its links to the LPIs the
        vGICv3 part holds now, before anything changes."""
        checked = self.check_state(state)
        self.check_links({self.name: checked, "vgic_v3": (self.vm._vgic("the ITS").gic.arrays(),)})
        self.apply_state(checked)
