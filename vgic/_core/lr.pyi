"""Type stubs for ``vgic._core.lr`` (twin: ``vgic._pure.lr``)."""
import numpy as np
import numpy.typing as npt

class HypIf:
    """The hyp save/restore of every vCPU of a VM over its ``VCPU_IF`` records."""

    nr_lrs: int
    nr_aprs: int
    reverse: bool
    records: npt.NDArray[np.void]

    def __init__(self, records: npt.NDArray[np.void], nr_lrs: int, pri_bits: int, pre_bits: int,
                 reverse: bool) -> None: ...
    def slot(self, n: int) -> int:
        """The saved slot that holds ICH_LR<n>_EL2 in this storage order."""
    def save_state(self, i: int) -> None:
        """__vgic_v3_save_state for vCPU ``i`` (every exit)."""
    def restore_state(self, i: int) -> None:
        """__vgic_v3_restore_state for vCPU ``i`` (every entry)."""
    def save_aprs(self, i: int) -> None:
        """vcpu_put: save the active-priority registers the PREbits imply."""
    def restore_vmcr_aprs(self, i: int) -> None:
        """vcpu_load: restore ICH_VMCR_EL2 and the active-priority registers."""
    def elrsr(self, i: int) -> int:
        """ICH_ELRSR_EL2 of vCPU ``i``'s modelled hardware."""
    def eisr(self, i: int) -> int:
        """ICH_EISR_EL2 of vCPU ``i``'s modelled hardware."""
    def save_state_batch(self, idx: npt.ArrayLike | None = None) -> None:
        """save_state for every vCPU, or for the vCPU indices in ``idx``."""
    def restore_state_batch(self, idx: npt.ArrayLike | None = None) -> None:
        """restore_state for every vCPU, or for the vCPU indices in ``idx``."""
    def save_restore_batch(self, idx: npt.ArrayLike | None = None) -> None:
        """save_state then restore_state of each vCPU in one pass."""
    def load_batch(self, idx: npt.ArrayLike | None = None) -> None:
        """restore_vmcr_aprs (vcpu_load) for every vCPU, or those in ``idx``."""
    def put_batch(self, idx: npt.ArrayLike | None = None) -> None:
        """save_aprs (vcpu_put) for every vCPU, or those in ``idx``."""
    def plain_copy_batch(self) -> None:
        """The copies of save_restore_batch in a plain loop: the benchmarks' baseline."""

def lr_encode_batch(fields: npt.NDArray[np.void]) -> npt.NDArray[np.uint64]:
    """ICH_LR<n>_EL2 values (same shape) from ``vgic.ich.LR_FIELDS`` records;
    ``ValueError`` names a record with a field outside its width."""
def lr_decode_batch(lrs: npt.ArrayLike) -> npt.NDArray[np.void]:
    """``vgic.ich.LR_FIELDS`` records (same shape) from ICH_LR<n>_EL2 values."""

def copy_records(dst: npt.NDArray[np.void], src: npt.NDArray[np.void]) -> None:
    """memcpy of one record array into another: the benchmarks' baseline."""

class Noop:
    """A do-nothing extension type: the per-call baseline of the benchmarks."""

    def save_state(self, i: int) -> None: ...
    def restore_state(self, i: int) -> None: ...
