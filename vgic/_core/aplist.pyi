"""Type stubs for ``vgic._core.aplist`` (twin: ``vgic._pure.aplist``)."""
from typing import Any

import numpy as np
import numpy.typing as npt

class ApLists:
    """KVM's ap_lists of every vCPU of a VM, with the LR flush and fold
    (vgic_flush_lr_state / vgic_fold_lr_state, Linux v6.19)."""

    spis_queued: int

    def __init__(self, gic: Any, records: npt.NDArray[np.void], nr_lrs: int, reverse: bool) -> None: ...
    def flush(self, vcpu: int) -> None:
        """Queue, sort if needed, fill the saved LRs, used_lrs and ICH_HCR_EL2."""
    def fold(self, vcpu: int) -> None:
        """Fold the saved LRs, replay EOIcount, prune the ap_list."""
    def flush_batch(self, idx: npt.ArrayLike | None = None) -> None:
        """flush for every vCPU, or for the vCPU indices in ``idx``."""
    def fold_batch(self, idx: npt.ArrayLike | None = None) -> None:
        """fold for every vCPU, or for the vCPU indices in ``idx``."""
    def ap_list(self, vcpu: int) -> list[int]:
        """The vCPU's ap_list as INTIDs, in list order."""
    def queued_on(self, vcpu: int, intid: int) -> int:
        """The vCPU whose ap_list holds the INTID, or -1 (KVM's irq->vcpu)."""
    def in_lr(self, vcpu: int, intid: int) -> bool:
        """True while the INTID is held in a list register."""
    def oracle(self, vcpu: int, intid: int) -> int:
        """vgic_target_oracle(): the vCPU that should hold it, or -1."""

class Noop:
    """A do-nothing extension type with ``flush``/``fold`` signatures."""

    def flush(self, vcpu: int) -> None: ...
    def fold(self, vcpu: int) -> None: ...
