"""Type stubs for ``vgic._core.fpsimd`` (twin: ``vgic._pure.fpsimd``): FPSIMD
and SVE state in Linux's sve_context payload layout, and its context switch
against a modelled physical CPU (docs/sve-facts.md)."""
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

class FpState:
    """Every vCPU's FPSIMD/SVE state (``records``: vgic.fpregs.FP_VCPU;
    ``vregs``, ``sve_state``; the CPUs' ``hw`` files and the host task's
    saved ``host_state``)."""

    records: npt.NDArray[np.void]
    vregs: npt.NDArray[np.uint8]
    sve_state: npt.NDArray[np.uint8]
    hw: npt.NDArray[np.uint8]
    host_state: npt.NDArray[np.uint8]
    host_vqs: list[int]
    hvq: int
    policy: int
    host_sve: bool
    def __init__(self, nr_vcpus: int, host_vqs: Iterable[int], policy: int = 0, sve: bool = False,
                 host_sve: bool = False) -> None: ...
    def load(self, vcpu: int) -> None:
        """vcpu_load (lazy: the host's state saved, the registers free)."""
    def put(self, vcpu: int) -> None:
        """vcpu_put (lazy: a guest-owned state saved, the host's back)."""
    def enter(self, vcpu: int) -> None:
        """Guest entry (eager: host out, guest in)."""
    def exit(self, vcpu: int) -> None:
        """Guest exit (eager: guest out, host in)."""
    def guest_read(self, vcpu: int, kind: int, n: int = 0) -> Any:
        """A guest read (bytes or int); None for an UNDEFINED SVE access."""
    def guest_write(self, vcpu: int, kind: int, n: int, value: Any) -> int:
        """A guest write: 0, or -EPERM for an UNDEFINED SVE access."""
    def host_task_state(self, vcpu: int) -> tuple[bytes, int, int]:
        """The host task's FP state as it would see it now."""
    def sync_out(self, vcpu: int) -> None:
        """Save a guest-owned state (userspace is about to read KVM's copy)."""
    def finalize(self, vcpu: int, feature: int) -> int:
        """KVM_ARM_VCPU_FINALIZE: 0 or -errno."""
    def set_vls(self, vcpu: int, words: Any) -> int:
        """KVM_REG_ARM64_SVE_VLS write: 0 or -errno."""
    def reset(self, vcpu: int) -> None:
        """KVM's copy zeroed."""
    def load_batch(self, ids: npt.ArrayLike) -> None: ...
    def put_batch(self, ids: npt.ArrayLike) -> None: ...
    def enter_batch(self, ids: npt.ArrayLike) -> None: ...
    def exit_batch(self, ids: npt.ArrayLike) -> None: ...

def copy_batch(dst: npt.NDArray[np.uint8], dst_vq: int, src: npt.NDArray[np.uint8], src_vq: int, vq: int,
               ids: npt.ArrayLike) -> None:
    """The register file at ``vq`` from rows of ``src`` to rows of ``dst``."""
def fpsimd_to_sve_batch(dst: npt.NDArray[np.uint8], vq: int, vregs: npt.NDArray[np.uint8],
                        ids: npt.ArrayLike) -> None:
    """Zn = Vn zero-extended, P and FFR zero."""
def sve_to_fpsimd_batch(vregs: npt.NDArray[np.uint8], src: npt.NDArray[np.uint8], vq: int,
                        ids: npt.ArrayLike) -> None:
    """Vn = the low 128 bits of Zn."""
def memcpy_baseline(dst: npt.NDArray[np.uint8], src: npt.NDArray[np.uint8]) -> None:
    """One memcpy of ``src`` into ``dst``."""
