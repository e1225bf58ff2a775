"""Shared helpers of the FPSIMD/SVE tests: one-reg IDs written out from the
uapi formulas (docs/sve-facts.md §A, not taken from vgic.fpregs, so the
model's constants are checked against them), VM builders, byte patterns,
and the guest's vector-length arithmetic (§E).

ID formulas (arch/arm64/include/uapi/asm/kvm.h; sve-facts §A):
  ZREG(n, i) = 0x6080000000150000 | n << 5 | i      (U2048, 256 bytes)
  PREG(n, i) = 0x6050000000150400 | n << 5 | i      (U256, 32 bytes)
  FFR(i)     = 0x6050000000150600 | i               (U256)
  SVE_VLS    = 0x606000000015FFFF                   (U512, 8 x u64)
  core Vn    = 0x6040000000100054 + 4n, FPSR ...D4, FPCR ...D5
  ZCR_EL1    = ARM64_SYS_REG(3, 0, 1, 2, 0) = 0x603000000013C090
"""
from __future__ import annotations

import vgic

BACKENDS = ("core", "pure")
POLICIES = ("lazy", "eager")
KVM_ARM_VCPU_SVE = 4

VLS = 0x606000000015FFFF
ZCR_EL1 = 0x603000000013C090
FPSR = 0x60200000001000D4
FPCR = 0x60200000001000D5
FFR = 0x6050000000150600

#: A host whose SVE implementation has gaps: VQs 1, 2, 4, 8 (128..1024 bits).
HOST_VQS = (1, 2, 4, 8)

#: Bytes of one FPSIMD context: V0..V31 + FPSR + FPCR (sve-facts "Model decisions": F).
F_BYTES = 32 * 16 + 4 + 4


def Z(n: int, i: int = 0) -> int:
    return 0x6080000000150000 | n << 5 | i


def P(n: int, i: int = 0) -> int:
    return 0x6050000000150400 | n << 5 | i


def FFR_(i: int = 0) -> int:
    return FFR | i


def V(n: int) -> int:
    return 0x6040000000100054 + 4 * n


def S_BYTES(vq: int) -> int:
    """One SVE context at ``vq``: Z/P/FFR in the sve_context payload (546*VQ)
    plus FPSR/FPCR (sve-facts "Model decisions": S(VQ))."""
    return 546 * vq + 8


def vls_bytes(vqs) -> bytes:
    """KVM_REG_ARM64_SVE_VLS as userspace passes it: 8 little-endian u64,
    bit (vq-1) % 64 of word (vq-1) // 64 per VQ (api.rst)."""
    words = [0] * 8
    for vq in vqs:
        words[(vq - 1) // 64] |= 1 << ((vq - 1) % 64)
    return b"".join(w.to_bytes(8, "little") for w in words)


def pattern(size: int, seed: int) -> bytes:
    """``size`` bytes, no zero byte, different per seed."""
    return bytes(((k * 37 + seed * 101 + 11) % 255) + 1 for k in range(size))


def eff_vq(zcr_len: int, max_vq: int, host=HOST_VQS) -> int:
    """The guest's effective VQ: min(ZCR_EL1.LEN + 1, ZCR_EL2.LEN + 1 = max_vq),
    rounded down to an implemented VQ (sve-facts §E)."""
    want = min((zcr_len & 0xF) + 1, max_vq)
    return max(v for v in host if v <= want)


def make_vm(backend: str, policy: str = "lazy", sve: bool = True, host_vqs=HOST_VQS, host_sve: bool = False,
            nr_vcpus: int = 1, vls=None, finalize: bool = True) -> vgic.VM:
    """A VM whose vCPUs have SVE (``sve``) on a host with ``host_vqs``; each
    SVE vCPU gets the VLS ``vls`` (if given) and is finalized (``finalize``)."""
    vm = vgic.VM(nr_vcpus=nr_vcpus, nr_irqs=64, sve=sve, sve_vqs=list(host_vqs), fp_policy=policy,
                 host_sve=host_sve, backend=backend)
    if sve:
        for v in vm.vcpus:
            if vls is not None:
                v.set_one_reg(VLS, vls_bytes(vls))
            if finalize:
                v.finalize(KVM_ARM_VCPU_SVE)
    return vm


def counts(v) -> tuple[int, int, int, int]:
    f = v.fp
    return f.guest_bytes, f.host_bytes, f.traps, f.zcr_writes


def delta(v, before) -> tuple[int, int, int, int]:
    return tuple(a - b for a, b in zip(counts(v), before))  # type: ignore[return-value]
