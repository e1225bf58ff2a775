"""Type stubs for ``vgic._core.aplist`` (twin: ``vgic._pure.aplist``)."""
from typing import Any

import numpy as np
import numpy.typing as npt

from .gic import Gic

class ApLists:
    """KVM's ap_lists of every vCPU of a VM, with the LR flush and fold
    (vgic_flush_lr_state / vgic_fold_lr_state, Linux v6.19)."""

    #: KVM 6.19's count of SPIs in flight (kvm->arch.vgic.active_spis).
    active_spis: int

    def __init__(self, gic: Gic, records: npt.NDArray[np.void], nr_lrs: int, reverse: bool) -> None: ...
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
    def pending_irq(self, vcpu: int, pmr: int) -> bool:
        """kvm_vgic_vcpu_pending_irq()'s walk: an interrupt on the ap_list
        pending, enabled, not active, of a priority below ``pmr``, with the
        distributor enabled."""
    def queued_on(self, vcpu: int, intid: int) -> int:
        """The vCPU whose ap_list holds the INTID, or -1 (KVM's irq->vcpu)."""
    def in_lr(self, vcpu: int, intid: int) -> bool:
        """True while the INTID is held in a list register."""
    def oracle(self, vcpu: int, intid: int) -> int:
        """vgic_target_oracle(): the vCPU that should hold it, or -1."""
    def deactivate(self, vcpu: int, intid: int) -> None:
        """Fold the synthesised LR, Active cleared, of an interrupt in no LR."""
    def state(self) -> dict[str, Any]:
        """``{"ap_list", "in_lr", "active_spis"}`` (see :mod:`vgic.gic_state`)."""
    def load_state(self, state: Any) -> None:
        """Replace every ap_list, checked first."""

class Noop:
    """A do-nothing extension type with ``flush``/``fold`` signatures."""

    def flush(self, vcpu: int) -> None: ...
    def fold(self, vcpu: int) -> None: ...
