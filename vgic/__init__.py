"""vgic: a register-level model of the KVM/arm64 GICv3 world switch.

>>> import vgic
>>> vm = vgic.VM(nr_vcpus=4, nr_irqs=256)
>>> hex(vm.mmio_read(vm.dist_base + 0x4, 4))     # GICD_TYPER
'0x480007'

The hot paths run in the Cython core (``vgic._core``); setting the environment
variable ``VGIC_PUREPYTHON=1`` before import selects the pure-Python twin
(``vgic._pure``) everywhere.
"""
from vgic import regmap, uapi
from vgic._backend import NAME as BACKEND
from vgic._version import __version__
from vgic.errors import KvmError, SnapshotError, StateError, UndefinedInstruction, UnmappedAccess, VgicError
from vgic.snapshot import Snapshot
from vgic.trace import MMIO_ACCESS
from vgic.vm import PARTS, VCPU, VM, IrqState, default_mpidr

__all__ = [
    "BACKEND", "IrqState", "KvmError", "MMIO_ACCESS", "PARTS", "Snapshot", "SnapshotError", "StateError",
    "UndefinedInstruction",
    "UnmappedAccess", "VCPU", "VM", "VgicError", "default_mpidr", "regmap", "uapi", "__version__",
]
