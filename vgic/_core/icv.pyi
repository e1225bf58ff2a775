"""Type stubs for ``vgic._core.icv`` (twin: ``vgic._pure.icv``)."""
import numpy as np
import numpy.typing as npt

#: eoi/deactivate: nothing more for the hypervisor to do.
NONE: int
#: deactivate: ICH_HCR_EL2.TDIR trapped the ICV_DIR_EL1 write to EL2.
TRAP: int

class Icv:
    """The guest's ICV_IAR/EOIR/DIR/HPPIR/RPR accesses of every vCPU of a VM
    on its ``VCPU_IF`` records (IHI 0069 §12.3)."""

    def __init__(self, records: npt.NDArray[np.void], nr_lrs: int, pri_bits: int, pre_bits: int) -> None: ...
    def acknowledge(self, i: int, group: int) -> int:
        """ICV_IAR<group>_EL1 read: the acknowledged INTID, or 1023."""
    def eoi(self, i: int, group: int, value: int) -> int:
        """ICV_EOIR<group>_EL1 write: a physical INTID to deactivate, or NONE."""
    def deactivate(self, i: int, value: int) -> int:
        """ICV_DIR_EL1 write: a physical INTID to deactivate, NONE, or TRAP."""
    def hppir(self, i: int, group: int) -> int:
        """ICV_HPPIR<group>_EL1: the HPPI's INTID if of this group, else 1023."""
    def rpr(self, i: int) -> int:
        """ICV_RPR_EL1: the running priority (0xFF when idle)."""
    def signalled(self, i: int) -> int:
        """The virtual interrupt signalled now: 1 (vIRQ), 0 (vFIQ) or -1."""
    def misr(self, i: int) -> int:
        """ICH_MISR_EL2 of the modelled hardware (IHI 0069 §12.4.7)."""
    def signals(self, i: int) -> int:
        """``vgic.ich.SIG_IRQ | SIG_FIQ | SIG_MAINT``: what the interface
        asserts towards the PE now (the maintenance interrupt: ICH_HCR_EL2.En
        and a non-zero ICH_MISR_EL2); 0 for nothing."""
    def signals_batch(self, idx: npt.ArrayLike) -> npt.NDArray[np.uint8]:
        """signals on the vCPUs in ``idx``."""
    def acknowledge_batch(self, idx: npt.ArrayLike, group: int) -> npt.NDArray[np.uint32]:
        """acknowledge on the vCPUs in ``idx``, in order."""
    def eoi_batch(self, idx: npt.ArrayLike, group: int, values: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """eoi on the vCPUs in ``idx`` with the matching ``values``."""
