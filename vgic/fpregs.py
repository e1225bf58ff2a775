"""FPSIMD and SVE register state, declared once: the Linux ``sve_context``
payload layout, KVM's one-reg IDs and rules for it, the vector-length
arithmetic, and the records the fpsimd kernels work on.

Sources (``docs/sve-facts.md``; kvm-facts §8): arch/arm64/include/uapi/asm/
sve_context.h (the payload: Zn at 16*VQ*n, Pn at 512*VQ + 2*VQ*n, FFR at
544*VQ, 546*VQ bytes in all), arch/arm64/include/uapi/asm/kvm.h and
Documentation/virt/kvm/api.rst (KVM_REG_ARM64_SVE_ZREG/PREG/FFR, SVE_VLS,
KVM_ARM_VCPU_FINALIZE), and the Arm ARM's SVE chapter (ZCR_ELx.LEN, the
effective vector length).

This module imports nothing else of vgic (the build generates the
kernels' C constants from it).
"""
from __future__ import annotations

import numpy as np

U64 = (1 << 64) - 1
#: A vector quadword: the SVE vector length is VQ * 16 bytes.
VQ_BYTES = 16
#: KVM caps a guest at 2048-bit vectors (VL_ARCH_MAX: VQ 16).
SVE_VQ_MAX = 16
NR_ZREGS = 32
NR_PREGS = 16
FPSIMD_VREGS_BYTES = NR_ZREGS * 16      # V0..V31, 128 bits each


def zreg_offset(vq: int, n: int) -> int:
    """Offset of Zn in the payload at vector length ``vq``."""
    return 16 * vq * n


def preg_offset(vq: int, n: int) -> int:
    """Offset of Pn in the payload."""
    return 512 * vq + 2 * vq * n


def ffr_offset(vq: int) -> int:
    """Offset of FFR in the payload."""
    return 544 * vq


def regs_size(vq: int) -> int:
    """SVE_SIG_REGS_SIZE: the payload's size at vector length ``vq``."""
    return 546 * vq


#: The payload of the largest guest vector length.
SVE_STATE_MAX = 546 * SVE_VQ_MAX

# ZCR_ELx: LEN in [3:0] (the rest RAZ/WI here).
ZCR_LEN_MASK = 0xF

# KVM's vCPU feature and finalize argument.
KVM_ARM_VCPU_SVE = 4

# One-reg IDs (arch/arm64/include/uapi/asm/kvm.h).
KVM_REG_ARM64 = 0x6000000000000000
KVM_REG_SIZE_SHIFT = 52
KVM_REG_SIZE_MASK = 0x00F0000000000000
KVM_REG_SIZE_U32 = 0x0020000000000000
KVM_REG_SIZE_U64 = 0x0030000000000000
KVM_REG_SIZE_U128 = 0x0040000000000000
KVM_REG_SIZE_U256 = 0x0050000000000000
KVM_REG_SIZE_U512 = 0x0060000000000000
KVM_REG_SIZE_U2048 = 0x0080000000000000
KVM_REG_ARM_COPROC_MASK = 0x000000000FFF0000
KVM_REG_ARM_CORE = 0x0010 << 16
KVM_REG_ARM64_SVE = 0x0015 << 16
KVM_REG_ARM64_SVE_ZREG_BASE = 0
KVM_REG_ARM64_SVE_PREG_BASE = 0x400
KVM_REG_ARM64_SVE_FFR_BASE = 0x600
KVM_ARM64_SVE_NUM_SLICES = 1
KVM_ARM64_SVE_MAX_SLICES = 32
KVM_REG_ARM64_SVE_VLS = KVM_REG_ARM64 | KVM_REG_ARM64_SVE | KVM_REG_SIZE_U512 | 0xFFFF
#: Core register IDs of the FPSIMD state: struct kvm_regs.fp_regs at byte
#: 336 (after user_pt_regs, sp_el1, elr_el1, spsr[5], 16-byte aligned),
#: numbered in 32-bit units.
KVM_REG_ARM_CORE_VREG0 = KVM_REG_ARM64 | KVM_REG_SIZE_U128 | KVM_REG_ARM_CORE | (336 // 4)
KVM_REG_ARM_CORE_FPSR = KVM_REG_ARM64 | KVM_REG_SIZE_U32 | KVM_REG_ARM_CORE | ((336 + 512) // 4)
KVM_REG_ARM_CORE_FPCR = KVM_REG_ARM64 | KVM_REG_SIZE_U32 | KVM_REG_ARM_CORE | ((336 + 516) // 4)
#: ZCR_EL1 (3, 0, 1, 2, 0), a KVM sysreg one-reg for SVE vCPUs.
KVM_REG_ZCR_EL1 = KVM_REG_ARM64 | KVM_REG_SIZE_U64 | (0x0013 << 16) | (3 << 14) | (1 << 7) | (2 << 3)


def sve_zreg(n: int, i: int) -> int:
    """KVM_REG_ARM64_SVE_ZREG(n, i): slice ``i`` of Zn (2048 bits)."""
    return (KVM_REG_ARM64 | KVM_REG_ARM64_SVE | KVM_REG_SIZE_U2048 | KVM_REG_ARM64_SVE_ZREG_BASE
            | ((n & 31) << 5) | (i & 31))


def sve_preg(n: int, i: int) -> int:
    """KVM_REG_ARM64_SVE_PREG(n, i): slice ``i`` of Pn (256 bits)."""
    return (KVM_REG_ARM64 | KVM_REG_ARM64_SVE | KVM_REG_SIZE_U256 | KVM_REG_ARM64_SVE_PREG_BASE
            | ((n & 15) << 5) | (i & 31))


def sve_ffr(i: int) -> int:
    """KVM_REG_ARM64_SVE_FFR(i): slice ``i`` of FFR (256 bits)."""
    return KVM_REG_ARM64 | KVM_REG_ARM64_SVE | KVM_REG_SIZE_U256 | KVM_REG_ARM64_SVE_FFR_BASE | (i & 31)


def core_vreg(n: int) -> int:
    """The core-register ID of FPSIMD Vn (128 bits)."""
    return KVM_REG_ARM_CORE_VREG0 + 4 * n


def reg_size(reg_id: int) -> int:
    """A one-reg ID's size in bytes (KVM_REG_SIZE)."""
    return 1 << ((reg_id & KVM_REG_SIZE_MASK) >> KVM_REG_SIZE_SHIFT)


# Ownership of a vCPU's FP/SVE registers (KVM's fp_owner) and the views.
FP_STATE_FREE = 0
FP_STATE_HOST_OWNED = 1
FP_STATE_GUEST_OWNED = 2
FP_POLICY_LAZY = 0
FP_POLICY_EAGER = 1
FP_POLICIES = {"lazy": FP_POLICY_LAZY, "eager": FP_POLICY_EAGER}


def vls_words(vqs: object) -> np.ndarray:
    """KVM_REG_ARM64_SVE_VLS as 8 u64 words: bit (vq - 1) % 64 of word
    (vq - 1) // 64 for each supported ``vq``."""
    out = np.zeros(8, dtype=np.uint64)
    for vq in vqs:  # type: ignore[attr-defined]
        out[(vq - 1) // 64] |= np.uint64(1 << ((vq - 1) % 64))
    return out


def vls_set(words: object) -> list[int]:
    """The VQs of a VLS value (8 u64 words), ascending."""
    w = np.asarray(words, dtype=np.uint64).astype("<u8")
    return (np.flatnonzero(np.unpackbits(w.view(np.uint8), bitorder="little")) + 1).tolist()


def effective_vq(len_fields: list[int], supported: list[int]) -> int:
    """The effective vector length: the smallest (LEN + 1) of the ZCR_ELx
    that apply, rounded down to a supported VQ (the Arm ARM's rule; the
    smallest supported VQ if none is below)."""
    want = min(f + 1 for f in len_fields)
    below = [vq for vq in supported if vq <= want]
    return max(below) if below else min(supported)


#: One vCPU's FP/SVE bookkeeping (its registers live in the VM's arrays:
#: ``vregs`` for an FPSIMD-only vCPU, ``sve_state`` for an SVE one, the
#: modelled CPU's file and the host task's saved state per pCPU).
FP_VCPU = np.dtype([
    ("fpsr", "<u4"), ("fpcr", "<u4"), ("zcr_el1", "<u8"),
    ("hw_fpsr", "<u4"), ("hw_fpcr", "<u4"), ("hw_zcr_el1", "<u8"), ("hw_zcr_el2", "<u8"),
    ("host_fpsr", "<u4"), ("host_fpcr", "<u4"),
    ("vls", "<u8", (8,)),
    ("guest_bytes", "<u8"), ("host_bytes", "<u8"), ("traps", "<u8"), ("zcr_writes", "<u8"),
    ("max_vq", "<u2"), ("hw_vq", "<u2"),
    ("sve", "u1"), ("finalized", "u1"), ("owner", "u1"), ("loaded", "u1"), ("running", "u1"),
    ("pad", "u1", (7,)),
])
assert FP_VCPU.itemsize == 160

__all__ = [name for name in dir() if name.isupper()] + [
    "zreg_offset", "preg_offset", "ffr_offset", "regs_size", "sve_zreg", "sve_preg", "sve_ffr",
    "core_vreg", "reg_size", "vls_words", "vls_set", "effective_vq"]
