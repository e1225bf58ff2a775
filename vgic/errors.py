"""Exception types raised by vgic.

Every library error derives from :class:`VgicError`.  Guest-visible faults are
*not* exceptions: a guest access that KVM treats as RAZ/WI reads 0 and is
ignored, exactly as on a real host.  Exceptions are for the caller of the
library: an address no GIC frame decodes, a malformed argument, or a request
KVM's userspace ABI would refuse.
"""
from __future__ import annotations

import errno as _errno
import os as _os


class VgicError(Exception):
    """Base class of every exception vgic raises on purpose."""


class UnmappedAccess(VgicError):
    """An MMIO address that no GIC frame decodes.

    KVM would exit to userspace (KVM_EXIT_MMIO) for such an access; an emulator
    using vgic as a backend should route it to its other devices.
    """

    def __init__(self, addr: int, message: str | None = None) -> None:
        self.addr = addr
        super().__init__(message or f"address {addr:#x} is outside every GIC frame")


class KvmError(VgicError, OSError):
    """A call that KVM's userspace ABI would fail; ``errno`` is KVM's errno.
    In a batch call (``get_device_attrs``, ``set_one_regs``, ...) ``index``
    is the position of the refused access (the ones before it took effect)."""

    def __init__(self, err: int, message: str, index: int | None = None) -> None:
        OSError.__init__(self, err, message)
        #: The refused access's position in a batch, else None.
        self.index = index

    def __str__(self) -> str:
        code = self.errno if self.errno is not None else 0
        name = _errno.errorcode.get(code, str(code))
        return f"[{name}] {self.strerror}"


class UndefinedInstruction(VgicError):
    """A system-register access the modelled CPU would UNDEF: an unknown
    register, a read of a write-only one (or the reverse), or a register
    the configured hardware does not implement (an ICH_LR<n>_EL2 beyond
    ICH_VTR_EL2.ListRegs, an APR beyond what the preemption bits imply)."""

    def __init__(self, reg: object, message: str | None = None) -> None:
        self.reg = reg
        super().__init__(message or f"{reg!r} is UNDEFINED here")


class StateError(VgicError, ValueError):
    """A state (``load_state``) the model cannot hold: a missing or unknown
    name, a value outside its field, or an inconsistency between fields.
    The message names the first offending field; nothing was changed."""


class SnapshotError(VgicError, ValueError):
    """A snapshot that cannot be read or restored: bad bytes (magic,
    checksum, truncation, a newer major format version), a geometry the
    target VM does not have, or a register KVM's ABI refused on restore
    (the :class:`KvmError` is chained as ``__cause__``).  The target VM is
    unchanged."""


__all__ = ["VgicError", "UnmappedAccess", "KvmError", "UndefinedInstruction", "StateError", "SnapshotError"]
del _os
