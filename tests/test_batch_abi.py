"""The batch forms of KVM's userspace ABI equal the single forms exactly:
the same values, the same errnos (with ``KvmError.index`` naming the
refused position) and the same resulting ``vm.state()``, on both backends.

What a batch is (vgic/kvm_device.py, vgic/vm.py): many KVM_GET/SET_DEVICE_ATTR
calls of one register group, or many KVM_GET/SET_ONE_REG calls over many
vCPUs, made in one call.  The reference for every batch here is a plain loop
of the single calls on a twin VM with the same history, so the expected
values come from the single form, whose own rules other test files check
against the sources:

* Documentation/virt/kvm/devices/arm-vgic-v3.rst (DIST_REGS, REDIST_REGS,
  CPU_SYSREGS, LEVEL_INFO; their errnos) and /work/shared/reference/
  kvm-facts.md §6 (attribute layouts, ICC_CTLR_EL1 and APR rules) and §2
  (the uaccess path);
* Documentation/virt/kvm/api.rst, KVM_SET_ONE_REG / KVM_GET_ONE_REG and
  KVM_ARM_VCPU_FINALIZE, and kvm-facts §8 (SVE registers: zero padding on
  read, the VQ-sized part on write, SVE_VLS rules, EPERM after finalize)
  and §7 (timer one-regs).

Batch-only rules come from the batch docstrings: every attribute is parsed
before any access runs (a bad MPIDR, an unknown CPU_SYSREGS encoding or a
bad LEVEL_INFO attribute raises with ``index`` and nothing changes); a write
batch stops at the first refused value (the writes before it took effect,
as the loop of ioctls leaves them); groups without a batch form are ENXIO;
bad arrays are TypeError/ValueError naming the argument.

Where the batch and the loop disagreed, a strict xfail showed the input
and what happened; the ones fixed since (1c37e1f) stay as regression tests,
each with a "Was a bug" comment.
"""
from __future__ import annotations

import errno

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vgic
from vgic import regmap as R
from vgic.state import diff

BACKENDS = ("core", "pure")
backends = pytest.mark.parametrize("backend", BACKENDS)
SETTINGS = settings(max_examples=15, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# ------------------------------------------------------------ the ABI, from the docs
# Device-attribute groups (arm-vgic-v3.rst; kvm-facts §6).
GRP_ADDR, GRP_DIST, GRP_CPU_REGS, GRP_NR_IRQS, GRP_CTRL = 0, 1, 2, 3, 4
GRP_REDIST, GRP_SYSREGS, GRP_LEVEL, GRP_ITS_REGS = 5, 6, 7, 8
SGI = 0x10000                       # REDIST_REGS offsets of the SGI_base frame

# CPU_SYSREGS packed encodings (kvm-facts §6).
ICC_PMR, ICC_BPR0, ICC_BPR1, ICC_CTLR, ICC_SRE = 0xC230, 0xC643, 0xC663, 0xC664, 0xC665
ICC_IGRPEN0, ICC_IGRPEN1 = 0xC666, 0xC667
ICC_AP0R = [0xC644 + n for n in range(4)]
ICC_AP1R = [0xC648 + n for n in range(4)]
SYSREGS = [ICC_PMR, ICC_BPR0, *ICC_AP0R, *ICC_AP1R, ICC_BPR1, ICC_CTLR, ICC_SRE, ICC_IGRPEN0, ICC_IGRPEN1]
CTLR_PRIBITS_SHIFT = 8              # ICC_CTLR_EL1.PRIbits [10:8] = priority bits - 1
MAX_APR_INDEX = {5: 0, 6: 1, 7: 3}  # APnR index beyond this is EINVAL (kvm-facts §6)

# One-reg IDs (api.rst; kvm-facts §7, §8).
TIMER_CTL, TIMER_CNT, TIMER_CVAL = 0x603000000013DF19, 0x603000000013DF1A, 0x603000000013DF02
PTIMER_CTL, PTIMER_CVAL, PTIMER_CNT = 0x603000000013DF11, 0x603000000013DF12, 0x603000000013DF01
TIMER_IDS = [TIMER_CTL, TIMER_CNT, TIMER_CVAL, PTIMER_CTL, PTIMER_CVAL, PTIMER_CNT]
FPSR, FPCR = 0x60200000001000D4, 0x60200000001000D5
SVE_VLS = 0x606000000015FFFF
ZCR_EL1 = 0x603000000013C090
KVM_ARM_VCPU_SVE = 4


def V(n: int) -> int:
    return 0x6040000000100054 + 4 * n


def Z(n: int, i: int = 0) -> int:
    return 0x6080000000150000 | n << 5 | i


def P(n: int, i: int = 0) -> int:
    return 0x6050000000150400 | n << 5 | i


def FFR(i: int = 0) -> int:
    return 0x6050000000150600 | i


def reg_size(reg_id: int) -> int:
    """KVM_REG_SIZE: bits [55:52] of the ID are log2 of the size in bytes (api.rst)."""
    return 1 << ((reg_id >> 52) & 0xF)


def mpidr_attr(mpidr: int) -> int:
    """attr[63:32] as arm-vgic-v3.rst packs an MPIDR: Aff3 [63:56], Aff2
    [55:48], Aff1 [47:40], Aff0 [39:32]."""
    return ((((mpidr >> 32) & 0xFF) << 24) | (mpidr & 0xFFFFFF)) << 32


BAD_MPIDR = mpidr_attr(0x7F_00_7F_7F)     # an affinity no vCPU of these VMs has


def vls_bytes(vqs) -> bytes:
    """KVM_REG_ARM64_SVE_VLS: bit (vq - 1) % 64 of u64 word (vq - 1) // 64 (api.rst)."""
    words = [0] * 8
    for vq in vqs:
        words[(vq - 1) // 64] |= 1 << ((vq - 1) % 64)
    return b"".join(w.to_bytes(8, "little") for w in words)


# ------------------------------------------------------------ VMs with a history
RAM_SIZE = 1 << 20


def busy_vm(backend: str, seed: int = 1, nr_vcpus: int = 4, nr_irqs: int = 128, pri_bits: int = 5,
            its: bool = False, **kw) -> vgic.VM:
    """A VM a guest has used (a deterministic function of its arguments):
    the distributor enabled, SPIs and the vCPUs' SGIs/PPIs with random
    groups, enables, priorities, configuration, routing, pending and active
    bits, some line levels high, and each vCPU's CPU interface programmed
    through CPU_SYSREGS."""
    rng = np.random.default_rng(seed)
    vm = vgic.VM(nr_vcpus=nr_vcpus, nr_irqs=nr_irqs, pri_bits=pri_bits, pre_bits=pri_bits, its=its,
                 ram_size=RAM_SIZE, backend=backend, **kw)
    d = vm.dist_base

    def r32() -> int:
        return int(rng.integers(0, 1 << 32))

    vm.mmio_write(d + R.GICD_CTLR, 4, R.GICD_CTLR_ENABLE_G1)
    for w in range(1, nr_irqs // 32):
        for reg in (R.GICD_IGROUPR, R.GICD_ISENABLER, R.GICD_ISPENDR, R.GICD_ISACTIVER):
            vm.mmio_write(d + reg + 4 * w, 4, r32() & r32() if reg != R.GICD_IGROUPR else r32())
    for w in range(2, nr_irqs // 16):
        vm.mmio_write(d + R.GICD_ICFGR + 4 * w, 4, r32())
    for w in range(8, nr_irqs // 4):
        vm.mmio_write(d + R.GICD_IPRIORITYR + 4 * w, 4, r32())
    for intid in range(32, nr_irqs, 3):
        v = vm.vcpus[int(rng.integers(0, nr_vcpus))]
        vm.mmio_write(d + R.GICD_IROUTER + 8 * intid, 8, v.mpidr & 0xFFFFFF)
    for v in vm.vcpus:
        sgi = v.sgi_base
        vm.mmio_write(sgi + R.GICR_IGROUPR0, 4, r32(), v.id)
        vm.mmio_write(sgi + R.GICR_ISENABLER0, 4, r32(), v.id)
        vm.mmio_write(sgi + R.GICR_ISPENDR0, 4, r32() & r32(), v.id)
        vm.mmio_write(sgi + R.GICR_ISACTIVER0, 4, r32() & r32() & r32(), v.id)
        for n in range(8):
            vm.mmio_write(sgi + R.GICR_IPRIORITYR0 + 4 * n, 4, r32(), v.id)
        for intid in (17, 20, 23):
            vm.set_irq_level(intid, bool(rng.integers(0, 2)), v.id)
    for intid in range(32, nr_irqs, 5):
        vm.set_irq_level(intid, bool(rng.integers(0, 2)))
    max_apr = MAX_APR_INDEX[pri_bits]
    for v in vm.vcpus:
        a = mpidr_attr(v.mpidr)
        for reg, value in ((ICC_PMR, int(rng.integers(0, 256))), (ICC_BPR0, int(rng.integers(0, 8))),
                           (ICC_BPR1, int(rng.integers(0, 8))), (ICC_IGRPEN0, int(rng.integers(0, 2))),
                           (ICC_IGRPEN1, 1)):
            vm.set_device_attr(GRP_SYSREGS, a | reg, value)
        for n in range(max_apr + 1):
            vm.set_device_attr(GRP_SYSREGS, a | ICC_AP0R[n], r32())
            vm.set_device_attr(GRP_SYSREGS, a | ICC_AP1R[n], r32())
    return vm


def twins(backend: str, seed: int = 1, **kw) -> tuple[vgic.VM, vgic.VM]:
    """Two VMs with one history: one takes the batch, the other the loop."""
    a, b = busy_vm(backend, seed, **kw), busy_vm(backend, seed, **kw)
    assert_same(a, b)
    return a, b


def assert_same(a: vgic.VM, b: vgic.VM, what: str = "batch vs loop") -> None:
    d = diff(a.state(), b.state(), limit=4)
    assert not d, f"{what}: " + "; ".join(d)


def attr(vm: vgic.VM, vcpu: int, low: int) -> int:
    return mpidr_attr(vm.vcpus[vcpu].mpidr) | low


def u64(xs) -> np.ndarray:
    return np.array([int(x) for x in xs], dtype=np.uint64)


# The two ways of making the same calls, each returning what happened.
def batch_get(vm: vgic.VM, group: int, attrs) -> tuple:
    try:
        return ("ok", vm.get_device_attrs(group, u64(attrs)).tolist())
    except vgic.KvmError as exc:
        return ("KvmError", exc.errno, exc.index)


def loop_get(vm: vgic.VM, group: int, attrs) -> tuple:
    out = []
    for k, a in enumerate(attrs):
        try:
            out.append(vm.get_device_attr(group, int(a)))
        except vgic.KvmError as exc:
            return ("KvmError", exc.errno, k)
    return ("ok", out)


def batch_set(vm: vgic.VM, group: int, attrs, values) -> tuple:
    try:
        vm.set_device_attrs(group, u64(attrs), u64(values))
    except vgic.KvmError as exc:
        return ("KvmError", exc.errno, exc.index)
    return ("ok",)


def loop_set(vm: vgic.VM, group: int, attrs, values) -> tuple:
    for k, (a, x) in enumerate(zip(attrs, values)):
        try:
            vm.set_device_attr(group, int(a), int(x))
        except vgic.KvmError as exc:
            return ("KvmError", exc.errno, k)
    return ("ok",)


def check_set(a: vgic.VM, b: vgic.VM, group: int, attrs, values) -> tuple:
    """The batch on ``a``, the loop on ``b``: same outcome, same state."""
    got, want = batch_set(a, group, attrs, values), loop_set(b, group, attrs, values)
    assert got == want
    assert_same(a, b)
    return got


def check_get(vm: vgic.VM, group: int, attrs) -> tuple:
    got, want = batch_get(vm, group, attrs), loop_get(vm, group, attrs)
    assert got == want
    return got


# ====================================================== DIST_REGS / REDIST_REGS
def dist_offsets(nr_irqs: int) -> list[int]:
    """Every 32-bit distributor offset (registers, RAZ/WI holes, ID
    registers), some unaligned ones and some past the frame."""
    return list(range(0, 0x10000, 4)) + [1, 2, 0x101, 0x6003, 0x10000, 0x10004, 0xFFFF_FFFC]


@backends
def test_dist_regs_reads_equal_single(backend):
    # KVM rule: DIST_REGS reads are 32-bit uaccess reads at attr[31:0]; the
    # MPIDR field is ignored (vCPU 0 is used); an offset without a region
    # reads 0 (arm-vgic-v3.rst; kvm-facts §2, §6).  The batch equals the loop.
    vm = busy_vm(backend, 2)
    rng = np.random.default_rng(5)
    offs = dist_offsets(vm.nr_irqs)
    noise = [int(x) << 32 for x in rng.integers(0, 1 << 32, len(offs))]
    attrs = [o | (n if k % 3 else 0) for k, (o, n) in enumerate(zip(offs, noise))]
    got = check_get(vm, GRP_DIST, attrs)
    assert got[0] == "ok" and any(got[1])


def redist_offsets() -> list[int]:
    """REDIST_REGS offsets across RD_base (0..0xFFFF) and SGI_base
    (0x10000..0x1FFFF): the register pages, the ID registers, holes,
    unaligned ones and offsets past both frames."""
    low = list(range(0, 0x1000, 4)) + list(range(0xFFD0, 0x10000, 4))
    return (low + [SGI + o for o in low] + [0x3, 0x1000A, 0x20000, 0x20004, 0x3_0000, 0xFFFF_FFFC])


@backends
def test_redist_regs_reads_mixed_frames_equal_single(backend):
    # KVM rule: REDIST_REGS attr[63:32] selects the vCPU by MPIDR and
    # attr[31:0] is the offset within its RD_base + SGI_base pair (0x10000
    # and up is SGI_base); reads are uaccess reads (arm-vgic-v3.rst,
    # kvm-facts §1.5, §1.6, §2).  One batch over every vCPU with RD and SGI
    # offsets shuffled together keeps its order: the batch equals the loop.
    vm = busy_vm(backend, 3)
    rng = np.random.default_rng(6)
    attrs = [attr(vm, v, o) for v in range(vm.nr_vcpus) for o in redist_offsets()]
    attrs = [attrs[k] for k in rng.permutation(len(attrs))]
    got = check_get(vm, GRP_REDIST, attrs)
    assert got[0] == "ok" and any(got[1])


def dist_writes(vm: vgic.VM, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Random values for every writable distributor register (GICD_IIDR
    with a revision KVM implements, GICD_TYPER2 as it reads), in a random order."""
    n = vm.nr_irqs
    offs = [R.GICD_CTLR, R.GICD_TYPER, R.GICD_STATUSR]
    for base in (R.GICD_IGROUPR, R.GICD_ISENABLER, R.GICD_ICENABLER, R.GICD_ISPENDR, R.GICD_ICPENDR,
                 R.GICD_ISACTIVER, R.GICD_ICACTIVER, R.GICD_IGRPMODR):
        offs += [base + 4 * w for w in range(n // 32)]
    offs += [R.GICD_ICFGR + 4 * w for w in range(n // 16)]
    offs += [R.GICD_IPRIORITYR + 4 * w for w in range(n // 4)] + [R.GICD_ITARGETSR + 4 * w for w in range(n // 4)]
    offs += [R.GICD_IROUTER + 4 * w for w in range(2 * n)] + [0x40, 0xF00, 0xFFE8, 0x8000]
    values = [int(x) for x in rng.integers(0, 1 << 32, len(offs))]
    iidr, typer2 = vm.get_device_attr(GRP_DIST, R.GICD_IIDR), vm.get_device_attr(GRP_DIST, R.GICD_TYPER2)
    offs += [R.GICD_IIDR, R.GICD_TYPER2, R.GICD_IIDR]
    values += [(iidr & ~0xF000) | 0x2000, typer2, (iidr & ~0xF000) | 0x3000]
    order = rng.permutation(len(offs))
    return [offs[k] for k in order], [values[k] for k in order]


@backends
def test_dist_regs_writes_equal_single(backend):
    # KVM rule: DIST_REGS writes are 32-bit uaccess writes with KVM's
    # userspace semantics (ISPENDR sets and clears the latch, ICPENDR is
    # WI, IIDR takes revision 2 or 3, TYPER2 must match; holes are ignored
    # and succeed) (kvm-facts §1.3, §2).  A batch of every writable register
    # in a random order leaves the state a loop of single writes leaves.
    a, b = twins(backend, 4)
    offs, values = dist_writes(a, np.random.default_rng(7))
    assert check_set(a, b, GRP_DIST, offs, values) == ("ok",)


def redist_writable() -> list[int]:
    rd = [R.GICR_CTLR, R.GICR_TYPER, R.GICR_TYPER + 4, R.GICR_WAKER, R.GICR_STATUSR, R.GICR_PROPBASER,
          R.GICR_PROPBASER + 4, R.GICR_PENDBASER, R.GICR_PENDBASER + 4, R.GICR_INVALLR, 0x400]
    sgi = [R.GICR_IGROUPR0, R.GICR_ISENABLER0, R.GICR_ICENABLER0, R.GICR_ISPENDR0, R.GICR_ICPENDR0,
           R.GICR_ISACTIVER0, R.GICR_ICACTIVER0, R.GICR_ICFGR0, R.GICR_ICFGR0 + 4, R.GICR_IGRPMODR0,
           R.GICR_NSACR, *(R.GICR_IPRIORITYR0 + 4 * n for n in range(8))]
    return rd + [SGI + o for o in sgi]


@backends
def test_redist_regs_writes_mixed_frames_order_kept(backend):
    # KVM rule: REDIST_REGS writes run as that many KVM_SET_DEVICE_ATTR calls
    # (arm-vgic-v3.rst; kvm-facts §2).  RD_base and SGI_base writes of all
    # vCPUs interleaved, each register written several times with different
    # values (so only the last write of each may survive): the batch keeps
    # the order across frames and equals the loop.
    a, b = twins(backend, 8)
    rng = np.random.default_rng(9)
    offs = redist_writable() * 3
    attrs = [attr(a, v, o) for v in range(a.nr_vcpus) for o in offs]
    attrs = [attrs[k] for k in rng.permutation(len(attrs))]
    values = [int(x) for x in rng.integers(0, 1 << 32, len(attrs))]
    assert check_set(a, b, GRP_REDIST, attrs, values) == ("ok",)


@backends
def test_dist_refused_value_stops_the_batch(backend):
    # KVM rule: a userspace GICD_IIDR write changing anything but the
    # Revision, or naming a revision other than 2 or 3, is -EINVAL
    # (kvm-facts §1.3).  Batch rule: the batch stops there with that index;
    # the writes before it took effect, the ones after it did not - what
    # the loop of ioctls leaves.
    a, b = twins(backend, 10)
    offs, values = dist_writes(a, np.random.default_rng(11))
    k = len(offs) // 2
    offs.insert(k, R.GICD_IIDR)
    values.insert(k, 0x4B00_743B)             # revision 7: refused
    assert check_set(a, b, GRP_DIST, offs, values) == ("KvmError", errno.EINVAL, k)
    fresh = busy_vm(backend, 10)
    assert diff(a.state(), fresh.state(), limit=1), "the writes before the refused one took effect"


# ================================================================= CPU_SYSREGS
@backends
@pytest.mark.parametrize("pri_bits", [5, 6, 7])
def test_cpu_sysregs_reads_equal_single(backend, pri_bits):
    # KVM rule: CPU_SYSREGS reads every ICC_* register the vGICv3 advertises;
    # ICC_AP{0,1}R<n>_EL1 with n beyond what the priority bits give (5 -> 0,
    # 6 -> 1, 7 -> 3) is -EINVAL although advertised (kvm-facts §6,
    # vgic-sys-reg-v3.c).  The batch of every readable register on every
    # vCPU equals the loop; each refused APR fails the same way with its index.
    vm = busy_vm(backend, 12, pri_bits=pri_bits)
    ok_regs = [r for r in SYSREGS if r not in ICC_AP0R + ICC_AP1R] + \
        [regs[n] for regs in (ICC_AP0R, ICC_AP1R) for n in range(MAX_APR_INDEX[pri_bits] + 1)]
    attrs = [attr(vm, v, r) for r in ok_regs for v in range(vm.nr_vcpus)]
    got = check_get(vm, GRP_SYSREGS, attrs)
    assert got[0] == "ok"
    for regs in (ICC_AP0R, ICC_AP1R):
        for n in range(MAX_APR_INDEX[pri_bits] + 1, 4):
            bad = attrs[:5] + [attr(vm, 1, regs[n])] + attrs[5:9]
            assert check_get(vm, GRP_SYSREGS, bad) == ("KvmError", errno.EINVAL, 5)


def sysreg_values(vm: vgic.VM, rng: np.random.Generator, regs) -> list[int]:
    """Values KVM accepts for ``regs`` (ICC_CTLR_EL1 as it reads with CBPR
    and EOImode random; ICC_SRE_EL1 with SRE set)."""
    out = []
    for v, r in regs:
        x = int(rng.integers(0, 1 << 63))
        if r == ICC_CTLR:
            x = (vm.get_device_attr(GRP_SYSREGS, attr(vm, v, ICC_CTLR)) & ~3) | int(rng.integers(0, 4))
        elif r == ICC_SRE:
            x |= 1
        out.append(x)
    return out


@backends
@pytest.mark.parametrize("pri_bits", [5, 6, 7])
def test_cpu_sysregs_writes_equal_single(backend, pri_bits):
    # KVM rule: CPU_SYSREGS writes go to the vCPU's saved interface
    # (ICH_VMCR_EL2 fields, the APRs): PMR, BPR0, BPR1 (ignored while CBPR
    # is set), IGRPEN0/1, ICC_CTLR_EL1's CBPR and EOImode, SRE with SRE=1,
    # the APRs the priority bits give (kvm-facts §6).  Every register on
    # every vCPU, registers in a random order: the batch equals the loop.
    a, b = twins(backend, 13, pri_bits=pri_bits)
    rng = np.random.default_rng(14)
    regs = [r for r in SYSREGS if r not in ICC_AP0R + ICC_AP1R] + \
        [regs[n] for regs in (ICC_AP0R, ICC_AP1R) for n in range(MAX_APR_INDEX[pri_bits] + 1)]
    pairs = [(v, r) for r in regs for v in range(a.nr_vcpus)]
    pairs = [pairs[k] for k in rng.permutation(len(pairs))]
    values = sysreg_values(a, rng, pairs)
    assert check_set(a, b, GRP_SYSREGS, [attr(a, v, r) for v, r in pairs], values) == ("ok",)


@backends
@pytest.mark.parametrize("pri_bits", [6, 7])
def test_ctlr_lowering_pribits_then_apr_refused(backend, pri_bits):
    # KVM rule: an ICC_CTLR_EL1 write may lower PRIbits (never raise them);
    # the APRs beyond the new count are then -EINVAL (kvm-facts §6:
    # "APnR index > max -> -EINVAL").  In one batch: CTLR lowers vCPU 1 to
    # 5 priority bits, then its ICC_AP0R1_EL1 write is refused with that
    # index; vCPU 2's AP0R1 before it was written; the same as the loop.
    a, b = twins(backend, 15, pri_bits=pri_bits)
    ctlr = a.get_device_attr(GRP_SYSREGS, attr(a, 1, ICC_CTLR))
    assert (ctlr >> CTLR_PRIBITS_SHIFT) & 7 == pri_bits - 1
    lowered = ctlr & ~(7 << CTLR_PRIBITS_SHIFT) | (4 << CTLR_PRIBITS_SHIFT)
    attrs = [attr(a, 2, ICC_AP0R[1]), attr(a, 1, ICC_CTLR), attr(a, 1, ICC_PMR), attr(a, 1, ICC_AP0R[1]),
             attr(a, 0, ICC_PMR)]
    values = [0x1234, lowered, 0x40, 0x5678, 0x80]
    assert check_set(a, b, GRP_SYSREGS, attrs, values) == ("KvmError", errno.EINVAL, 3)
    assert a.get_device_attr(GRP_SYSREGS, attr(a, 2, ICC_AP0R[1])) == 0x1234
    assert a.get_device_attr(GRP_SYSREGS, attr(a, 1, ICC_PMR)) == 0x40
    # Reading it is refused as well, in a batch and alone; raising PRIbits
    # back is refused (the count may only go down).
    assert check_get(a, GRP_SYSREGS, [attr(a, 0, ICC_AP0R[1]), attr(a, 1, ICC_AP0R[1])]) == \
        ("KvmError", errno.EINVAL, 1)
    assert check_set(a, b, GRP_SYSREGS, [attr(a, 1, ICC_PMR), attr(a, 1, ICC_CTLR)], [0x50, ctlr]) == \
        ("KvmError", errno.EINVAL, 1)


@backends
def test_repeated_vcpu_in_one_batch_is_sequential(backend):
    # Batch rule: a batch is that many ioctls in order, so a vCPU named twice
    # sees its first write before its second: ICC_BPR1_EL1 writes are ignored
    # while ICC_CTLR_EL1.CBPR is set (kvm-facts §6), PMR takes the last
    # value, and a second CTLR on the same vCPU sees the first's PRIbits.
    a, b = twins(backend, 16, pri_bits=7)
    ctlr = [a.get_device_attr(GRP_SYSREGS, attr(a, v, ICC_CTLR)) for v in range(4)]
    cbpr = [c | 1 for c in ctlr]
    plain = [c & ~1 for c in ctlr]
    low = ctlr[0] & ~(7 << CTLR_PRIBITS_SHIFT) | (5 << CTLR_PRIBITS_SHIFT)
    seq = [(0, ICC_CTLR, cbpr[0]), (1, ICC_CTLR, cbpr[1]), (0, ICC_BPR1, 5), (0, ICC_CTLR, plain[0]),
           (0, ICC_BPR1, 3), (1, ICC_BPR1, 6), (0, ICC_PMR, 0x10), (2, ICC_PMR, 0x20), (0, ICC_PMR, 0x30),
           (3, ICC_CTLR, low), (3, ICC_AP1R[3], 0x99), (3, ICC_CTLR, ctlr[3])]
    got = check_set(a, b, GRP_SYSREGS, [attr(a, v, r) for v, r, _ in seq], [x for _, _, x in seq])
    # vCPU 3: 6 priority bits after the first CTLR, so AP1R3 is refused.
    assert got == ("KvmError", errno.EINVAL, 10)
    assert a.get_device_attr(GRP_SYSREGS, attr(a, 0, ICC_PMR)) == 0x30
    assert a.get_device_attr(GRP_SYSREGS, attr(a, 0, ICC_BPR1)) == 3
    seq = seq[:10] + [(3, ICC_AP1R[1], 0x77), (3, ICC_PMR, 0x60)]
    a, b = twins(backend, 16, pri_bits=7)
    assert check_set(a, b, GRP_SYSREGS, [attr(a, v, r) for v, r, _ in seq], [x for _, _, x in seq]) == ("ok",)


@backends
def test_cpu_sysregs_refused_values_stop_the_batch(backend):
    # KVM rule: ICC_SRE_EL1 with SRE = 0 is -EINVAL; ICC_CTLR_EL1 with more
    # PRIbits than the vCPU has, SEIS set or A3V clear is -EINVAL (kvm-facts
    # §6).  Batch rule: the batch stops at the first refused value with its
    # index, the writes before it done.
    for k_bad, (reg, value_of) in enumerate([
            (ICC_SRE, lambda c: 0x6),
            (ICC_CTLR, lambda c: c | (7 << CTLR_PRIBITS_SHIFT)),
            (ICC_CTLR, lambda c: c | (1 << 14)),
            (ICC_CTLR, lambda c: c & ~(1 << 15))]):
        a, b = twins(backend, 17)
        ctlr = a.get_device_attr(GRP_SYSREGS, attr(a, 2, ICC_CTLR))
        attrs = [attr(a, v, ICC_PMR) for v in range(4)] + [attr(a, 2, reg)] + [attr(a, 3, ICC_BPR0)]
        values = [0x11 * (k_bad + 1)] * 4 + [value_of(ctlr), 2]
        assert check_set(a, b, GRP_SYSREGS, attrs, values) == ("KvmError", errno.EINVAL, 4)


# ================================================================== LEVEL_INFO
def level_attr(vm: vgic.VM, vcpu: int, intid: int, info: int = 0) -> int:
    """LEVEL_INFO attr: [63:32] MPIDR, [31:10] info (0 = VGIC_LEVEL_INFO_LINE_LEVEL), [9:0] vINTID."""
    return mpidr_attr(vm.vcpus[vcpu].mpidr) | (info << 10) | intid


@backends
def test_level_info_equal_single(backend):
    # KVM rule: LEVEL_INFO reads and writes the line levels of the 32 INTIDs
    # from vINTID (a multiple of 32): SGIs and INTIDs beyond nr_irqs RAZ/WI,
    # a read reports level-configured IRQs only, a write sets line_level
    # and queues a high level (kvm-facts §6, arm-vgic-v3.rst).  Reads and
    # writes over every vCPU and every word (and past nr_irqs): batch == loop.
    a, b = twins(backend, 18)
    words = range(0, a.nr_irqs + 96, 32)
    attrs = [level_attr(a, v, w) for v in range(a.nr_vcpus) for w in words]
    assert check_get(a, GRP_LEVEL, attrs)[0] == "ok"
    rng = np.random.default_rng(19)
    order = rng.permutation(len(attrs))
    attrs = [attrs[k] for k in order] * 2
    values = [int(x) for x in rng.integers(0, 1 << 32, len(attrs))]
    assert check_set(a, b, GRP_LEVEL, attrs, values) == ("ok",)
    assert check_get(a, GRP_LEVEL, attrs)[0] == "ok"


# ================================================================ random batches
def _dist_offset():
    regs = [R.GICD_CTLR, R.GICD_TYPER, R.GICD_IIDR, R.GICD_TYPER2, R.GICD_STATUSR, 0xFFE8, 0xF00]
    per_irq = st.sampled_from([R.GICD_IGROUPR, R.GICD_ISENABLER, R.GICD_ICENABLER, R.GICD_ISPENDR,
                               R.GICD_ICPENDR, R.GICD_ISACTIVER, R.GICD_ICACTIVER, R.GICD_IPRIORITYR,
                               R.GICD_ICFGR, R.GICD_IROUTER, R.GICD_ITARGETSR, R.GICD_IGRPMODR])
    return st.one_of(st.sampled_from(regs), st.builds(lambda b, w: b + 4 * w, per_irq, st.integers(0, 40)),
                     st.integers(0, 0x10010))


def _value32():
    return st.one_of(st.integers(0, (1 << 32) - 1), st.sampled_from([0, 0xFFFFFFFF, 0x4B00243B, 0x4B00343B,
                                                                      0x4B00443B, 0x52, 0x3]))


@st.composite
def random_batch(draw, group: int, nr_vcpus: int = 4):
    """(vCPU, low attribute bits, value) triples of one group, parseable."""
    n = draw(st.integers(0, 40))
    out = []
    for _ in range(n):
        v = draw(st.integers(0, nr_vcpus - 1))
        if group == GRP_DIST:
            out.append((v, draw(_dist_offset()), draw(_value32())))
        elif group == GRP_REDIST:
            off = draw(st.one_of(st.sampled_from(redist_writable()), st.integers(0, 0x20010)))
            out.append((v, off, draw(_value32())))
        elif group == GRP_SYSREGS:
            reg = draw(st.sampled_from(SYSREGS))
            if reg == ICC_CTLR:
                value = draw(st.one_of(st.sampled_from([0x8400, 0x8401, 0x8402, 0x8403, 0x8500, 0x8600,
                                                        0x8703, 0x4401, 0x0401, 0x8000]),
                                       st.integers(0, (1 << 16) - 1)))
            else:
                value = draw(st.one_of(st.integers(0, (1 << 64) - 1), st.integers(0, 0xFF)))
            out.append((v, reg, value))
        else:
            out.append((v, 32 * draw(st.integers(0, 6)), draw(_value32())))
    return out


@backends
@pytest.mark.parametrize("group", [GRP_DIST, GRP_REDIST, GRP_SYSREGS, GRP_LEVEL])
@SETTINGS
@given(data=st.data())
def test_random_batches_equal_single(backend, group, data):
    # KVM rule: each attribute is one KVM_GET/SET_DEVICE_ATTR of its group
    # (arm-vgic-v3.rst; kvm-facts §2, §6, including the refusals: GICD_IIDR
    # and GICD_TYPER2 values, ICC_SRE_EL1.SRE = 0, ICC_CTLR_EL1 fields, APRs
    # beyond the priority bits).  Random batches of one group, refused values
    # included, against the loop on a twin VM: same values read, same
    # outcome (a refusal stops both at the same index), same state.
    pri_bits = data.draw(st.sampled_from([5, 6, 7]), label="pri_bits")
    a, b = twins(backend, data.draw(st.integers(0, 3), label="seed"), pri_bits=pri_bits)
    batch = data.draw(random_batch(group), label="batch")
    attrs = [attr(a, v, low) for v, low, _ in batch]
    check_get(a, group, attrs)
    check_set(a, b, group, attrs, [x for _, _, x in batch])
    check_get(a, group, attrs)


# ============================================================== error semantics
def _bad_attr(vm: vgic.VM, group: int, kind: str) -> tuple[int, int]:
    """An attribute the batch must refuse at parse time, and its errno."""
    if kind == "mpidr":
        return BAD_MPIDR | (ICC_PMR if group == GRP_SYSREGS else 0x100 if group == GRP_REDIST else 32), errno.EINVAL
    if kind == "encoding":
        return attr(vm, 1, 0xC231), errno.ENXIO                  # not a vGICv3 CPU register
    if kind == "info":
        return level_attr(vm, 1, 32, info=1), errno.EINVAL        # not VGIC_LEVEL_INFO_LINE_LEVEL
    return level_attr(vm, 1, 40), errno.EINVAL                    # vINTID not a multiple of 32


PARSE_ERRORS = [(GRP_REDIST, "mpidr"), (GRP_SYSREGS, "mpidr"), (GRP_SYSREGS, "encoding"),
                (GRP_LEVEL, "mpidr"), (GRP_LEVEL, "info"), (GRP_LEVEL, "intid")]


@backends
@pytest.mark.parametrize("group,kind", PARSE_ERRORS)
@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_parse_error_raises_before_anything_changes(backend, group, kind, position):
    # KVM rule: an attribute naming no vCPU's MPIDR is -EINVAL, an unknown
    # CPU_SYSREGS encoding -ENXIO, a LEVEL_INFO type other than LINE_LEVEL or
    # a vINTID not a multiple of 32 -EINVAL (arm-vgic-v3.rst, kvm-facts §6).
    # Batch rule: every attribute is parsed first, so the batch raises with
    # the bad one's index and changes nothing - not even the valid writes
    # before it - for reads and writes alike.
    vm = busy_vm(backend, 20)
    before = vm.state()
    good = [attr(vm, v, ICC_PMR if group == GRP_SYSREGS else 0x100 if group == GRP_REDIST else 32)
            for v in (0, 1, 2, 3, 0, 2)]
    bad, err = _bad_attr(vm, group, kind)
    k = {"first": 0, "middle": 3, "last": len(good)}[position]
    attrs = good[:k] + [bad] + good[k:]
    assert batch_get(vm, group, attrs) == ("KvmError", err, k)
    assert batch_set(vm, group, attrs, [0x5A] * len(attrs)) == ("KvmError", err, k)
    d = diff(before, vm.state(), limit=2)
    assert not d, d
    # The single form refuses that attribute with the same errno.
    assert loop_get(vm, group, [bad]) == ("KvmError", err, 0)


@backends
@pytest.mark.parametrize("group", [GRP_ADDR, GRP_CPU_REGS, GRP_NR_IRQS, GRP_CTRL, GRP_ITS_REGS, 9, 1 << 20])
def test_groups_without_batch_form_are_enxio(backend, group):
    # Batch rule: only DIST_REGS, REDIST_REGS, CPU_SYSREGS and LEVEL_INFO
    # have a batch form; any other group is -ENXIO (the errno KVM gives a
    # group a device does not handle, arm-vgic-v3.rst) and changes nothing.
    vm = busy_vm(backend, 21, its=True)
    before = vm.state()
    assert batch_get(vm, group, [0]) == ("KvmError", errno.ENXIO, None)
    assert batch_set(vm, group, [0], [0]) == ("KvmError", errno.ENXIO, None)
    assert batch_get(vm, group, []) == ("KvmError", errno.ENXIO, None)
    assert not diff(before, vm.state(), limit=1)


@backends
@pytest.mark.parametrize("group", [GRP_DIST, GRP_REDIST, GRP_SYSREGS, GRP_LEVEL])
def test_running_vcpu_is_ebusy(backend, group):
    # KVM rule: the register groups take every vCPU's lock; with a vCPU
    # inside KVM_RUN they fail with -EBUSY (arm-vgic-v3.rst "-EBUSY: one or
    # more VCPUs are running"), whichever vCPU the attributes name.  The
    # batch and the single call give the same errno and change nothing.
    vm = busy_vm(backend, 22)
    vm.vcpus[3].enter()
    before = vm.state()
    low = {GRP_DIST: R.GICD_ISENABLER + 4, GRP_REDIST: SGI + R.GICR_ISENABLER0, GRP_SYSREGS: ICC_PMR,
           GRP_LEVEL: 32}[group]
    attrs = [attr(vm, 0, low), attr(vm, 1, low)]
    assert batch_get(vm, group, attrs) == ("KvmError", errno.EBUSY, None)
    assert loop_get(vm, group, attrs) == ("KvmError", errno.EBUSY, 0)
    assert batch_set(vm, group, attrs, [1, 1]) == ("KvmError", errno.EBUSY, None)
    assert loop_set(vm, group, attrs, [1, 1]) == ("KvmError", errno.EBUSY, 0)
    assert not diff(before, vm.state(), limit=1)
    vm.vcpus[3].exit()
    assert batch_get(vm, group, attrs) == loop_get(vm, group, attrs)


@backends
def test_no_irqchip_is_enxio(backend):
    # arm-vgic-v3.rst: the groups belong to the KVM_DEV_TYPE_ARM_VGIC_V3
    # device; a VM without the in-kernel irqchip has none (ENXIO here, as
    # the single calls answer).
    vm = vgic.VM(nr_vcpus=2, nr_irqs=64, irqchip=False, ram_size=RAM_SIZE, backend=backend)
    for group in (GRP_DIST, GRP_REDIST, GRP_SYSREGS, GRP_LEVEL):
        a = [attr(vm, 0, 32)]
        assert batch_get(vm, group, a) == ("KvmError", errno.ENXIO, None)
        assert loop_get(vm, group, a) == ("KvmError", errno.ENXIO, 0)
        assert batch_set(vm, group, a, [1]) == ("KvmError", errno.ENXIO, None)
        assert loop_set(vm, group, a, [1]) == ("KvmError", errno.ENXIO, 0)


@backends
def test_bad_arrays_name_the_argument(backend):
    # Batch rule (vgic/batchargs.py): attrs and values are 1-D integer
    # arrays; a float array, a 2-D array, a negative entry or a value wider
    # than the group's register (32 bits but for CPU_SYSREGS' 64) is a
    # TypeError or ValueError naming the argument, raised before anything
    # runs; the two arrays must have one length.
    vm = busy_vm(backend, 23)
    before = vm.state()
    good = u64([attr(vm, 0, R.GICD_ISENABLER + 4)] * 2)
    cases = [
        (TypeError, "attrs", lambda: vm.get_device_attrs(GRP_DIST, np.array([1.0, 2.0]))),
        (TypeError, "attrs", lambda: vm.get_device_attrs(GRP_DIST, np.zeros((2, 2), dtype=np.uint64))),
        (ValueError, "attrs", lambda: vm.get_device_attrs(GRP_DIST, np.array([4, -4]))),
        (TypeError, "attrs", lambda: vm.set_device_attrs(GRP_DIST, np.array([4.0]), np.array([1]))),
        (TypeError, "attrs", lambda: vm.set_device_attrs(GRP_DIST, np.array([[4]]), np.array([1]))),
        (ValueError, "attrs", lambda: vm.set_device_attrs(GRP_DIST, np.array([-4]), np.array([1]))),
        (TypeError, "values", lambda: vm.set_device_attrs(GRP_DIST, good, np.array([1.5, 2.5]))),
        (TypeError, "values", lambda: vm.set_device_attrs(GRP_DIST, good, np.ones((1, 2), dtype=np.int64))),
        (ValueError, "values", lambda: vm.set_device_attrs(GRP_DIST, good, np.array([1, -1]))),
        (ValueError, "values", lambda: vm.set_device_attrs(GRP_DIST, good, np.array([1, 1 << 32]))),
        (ValueError, "values", lambda: vm.set_device_attrs(GRP_REDIST, good, np.array([1 << 32, 1]))),
        (ValueError, "values", lambda: vm.set_device_attrs(GRP_LEVEL, good, np.array([1, 1 << 40]))),
        (TypeError, "values", lambda: vm.set_device_attrs(GRP_SYSREGS, good, [1, 1 << 64])),
        (ValueError, "values", lambda: vm.set_device_attrs(GRP_DIST, good, np.array([1]))),
    ]
    for exc, name, call in cases:
        with pytest.raises(exc, match=name):
            call()
    assert not diff(before, vm.state(), limit=1)
    # Empty batches are fine and do nothing.
    assert vm.get_device_attrs(GRP_REDIST, []).shape == (0,)
    vm.set_device_attrs(GRP_SYSREGS, [], [])
    assert not diff(before, vm.state(), limit=1)


# Was a bug (a strict xfail until 1c37e1f fixed it): kvm_device._sysregs_batch checks every attribute's MPIDR
# before any attribute's encoding, so a batch whose first bad attribute has an unknown encoding and a later
# one a bad MPIDR names the later one (EINVAL), not the first (ENXIO)
@backends
def test_first_bad_attribute_is_named(backend):
    # Batch rule ("every attribute is parsed first ... naming its position"),
    # read as the loop of single calls reads it: the attribute reported is the
    # first one KVM_GET_DEVICE_ATTR would refuse.
    vm = busy_vm(backend, 24)
    attrs = [attr(vm, 0, ICC_PMR), attr(vm, 1, 0xC231), BAD_MPIDR | ICC_PMR]
    assert loop_get(vm, GRP_SYSREGS, attrs) == ("KvmError", errno.ENXIO, 1)
    assert batch_get(vm, GRP_SYSREGS, attrs) == ("KvmError", errno.ENXIO, 1)


# ====================================================================== one-regs
def as_bytes(value, size: int) -> bytes:
    return bytes(value) if isinstance(value, (bytes, bytearray)) else int(value).to_bytes(size, "little")


def loop_get_one(vm: vgic.VM, ids, vcpus) -> tuple:
    """KVM_GET_ONE_REG vCPU by vCPU, ID by ID, laid out as get_one_regs lays it out."""
    rows = []
    for v in vcpus:
        row = b""
        for k, r in enumerate(ids):
            try:
                row += as_bytes(vm.vcpus[v].get_one_reg(r), reg_size(r))
            except vgic.KvmError as exc:
                return ("KvmError", exc.errno, k)
        rows.append(np.frombuffer(row, dtype=np.uint8))
    return ("ok", np.array(rows, dtype=np.uint8).reshape(len(vcpus), -1).tolist())


def batch_get_one(vm: vgic.VM, ids, vcpus=None) -> tuple:
    try:
        out = vm.get_one_regs(u64(ids), None if vcpus is None else np.array(vcpus, dtype=np.int64))
    except vgic.KvmError as exc:
        return ("KvmError", exc.errno, exc.index)
    assert out.dtype == np.uint8
    return ("ok", out.tolist())


def loop_set_one(vm: vgic.VM, ids, data: np.ndarray, vcpus) -> tuple:
    for row, v in enumerate(vcpus):
        col = 0
        for k, r in enumerate(ids):
            size = reg_size(r)
            raw = data[row, col:col + size].tobytes()
            col += size
            try:
                vm.vcpus[v].set_one_reg(r, int.from_bytes(raw, "little") if size <= 8 else raw)
            except vgic.KvmError as exc:
                return ("KvmError", exc.errno, k)
    return ("ok",)


def batch_set_one(vm: vgic.VM, ids, data: np.ndarray, vcpus=None) -> tuple:
    try:
        vm.set_one_regs(u64(ids), data, None if vcpus is None else np.array(vcpus, dtype=np.int64))
    except vgic.KvmError as exc:
        return ("KvmError", exc.errno, exc.index)
    return ("ok",)


def sve_vm(backend: str, host, vls_per_vcpu, seed: int = 0, finalize: bool = True) -> vgic.VM:
    """A VM whose vCPUs have SVE on a host with VQs ``host``, vCPU i with the
    vector lengths ``vls_per_vcpu[i]`` (None: the host's), finalized."""
    vm = busy_vm(backend, seed, nr_vcpus=len(vls_per_vcpu), sve=True, sve_vqs=list(host))
    for v, vls in zip(vm.vcpus, vls_per_vcpu):
        if vls is not None:
            v.set_one_reg(SVE_VLS, vls_bytes(vls))
        if finalize:
            v.finalize(KVM_ARM_VCPU_SVE)
    return vm


def random_rows(rng: np.random.Generator, ids, n: int) -> np.ndarray:
    width = sum(reg_size(r) for r in ids)
    return rng.integers(0, 256, (n, width), dtype=np.uint8)


# (host VQs, per-vCPU VLS): max VQs 1/2/4 side by side, one max VQ of 16
# (the whole SVE payload one contiguous block), the host's own set.
SVE_SHAPES = [((1, 2, 4), [(1,), (1, 2), (1, 2, 4)]),
              (tuple(range(1, 17)), [tuple(range(1, 17)), tuple(range(1, 17))]),
              ((1, 2, 3), [None, (1,)]),
              ((1, 2, 4, 8), [(1, 2, 4, 8), (1, 2), (1, 2, 4, 8), (1,)])]


def one_reg_vm(backend: str, shape, seed: int) -> vgic.VM:
    if shape is None:
        return busy_vm(backend, seed, nr_vcpus=3)
    host, vls = shape
    return sve_vm(backend, host, vls, seed)


def writable_ids(vm: vgic.VM) -> list[int]:
    return [r for r in vm.vcpus[0].get_reg_list() if r != SVE_VLS]


@backends
@pytest.mark.parametrize("shape", [None, *SVE_SHAPES], ids=["fpsimd", "vq1-2-4", "vq16", "host", "vq8-2-1"])
def test_one_regs_equal_single(backend, shape):
    # api.rst KVM_SET_ONE_REG / KVM_GET_ONE_REG: each register in its
    # KVM_REG_SIZE, little-endian.  For every ID of KVM_GET_REG_LIST (core
    # FP registers or SVE Z/P/FFR, ZCR_EL1, the timers) on every vCPU,
    # random data written by set_one_regs leaves the state a loop of
    # set_one_reg leaves, and get_one_regs reads what the loop reads, on
    # vCPUs of different max VQs side by side (kvm-facts §7, §8).
    a, b = one_reg_vm(backend, shape, 30), one_reg_vm(backend, shape, 30)
    assert_same(a, b)
    ids = writable_ids(a)
    assert TIMER_CTL in ids and FPSR in ids
    rng = np.random.default_rng(31)
    data = random_rows(rng, ids, a.nr_vcpus)
    vcpus = list(range(a.nr_vcpus))
    assert batch_set_one(a, ids, data) == loop_set_one(b, ids, data, vcpus) == ("ok",)
    assert_same(a, b)
    full = a.vcpus[0].get_reg_list()
    got = batch_get_one(a, full)
    assert got[0] == "ok"
    assert got == loop_get_one(a, full, vcpus) == loop_get_one(b, full, vcpus)
    # Register order is the caller's: reversed IDs give the reversed columns.
    assert batch_get_one(a, full[::-1]) == loop_get_one(a, full[::-1], vcpus)


@backends
@pytest.mark.parametrize("shape", [None, SVE_SHAPES[0]], ids=["fpsimd", "vq1-2-4"])
def test_one_regs_of_vcpus_the_guest_used(backend, shape):
    # api.rst KVM_GET/SET_ONE_REG read and write KVM's copy of the vCPU's
    # registers: registers a guest wrote on the CPU (lazy FP switch: still
    # in the modelled CPU after exit, the vCPU not put) are saved first
    # (kvm-facts §8 "vcpu_put saves guest ZCR_EL1 and saves+flushes the
    # registers").  Batch and loop on vCPUs that ran, touched FP/SVE and
    # were left loaded; then the same after a write.
    def used(seed: int) -> vgic.VM:
        vm = one_reg_vm(backend, shape, seed)
        for v in vm.vcpus:
            v.enter()
            if shape is None:
                v.fp.write_v(3, bytes(range(16 * v.id, 16 * v.id + 16)))
            else:
                v.sysreg_write("ZCR_EL1", 0xF)            # the vCPU's largest vector length
                z = len(v.fp.read_z(3))
                v.fp.write_z(3, bytes((7 * k + v.id) & 0xFF for k in range(z)))
                v.fp.write_p(1, bytes([0x5A + v.id]) * (z // 8))
            v.sysreg_write("FPSR", 0x0800_0000 | v.id)
            v.exit()
        return vm

    a, b = used(44), used(44)
    assert_same(a, b)
    full = a.vcpus[0].get_reg_list()
    vcpus = list(range(a.nr_vcpus))
    assert batch_get_one(a, full) == loop_get_one(b, full, vcpus)
    assert_same(a, b)
    ids = writable_ids(a)
    data = random_rows(np.random.default_rng(45), ids, a.nr_vcpus)
    assert batch_set_one(a, ids, data) == loop_set_one(b, ids, data, vcpus) == ("ok",)
    assert_same(a, b)
    for vm in (a, b):
        for v in vm.vcpus:
            v.enter()
            v.exit()
    assert_same(a, b)


@backends
@pytest.mark.parametrize("shape", [None, SVE_SHAPES[0], SVE_SHAPES[3]], ids=["fpsimd", "vq1-2-4", "vq8-2-1"])
def test_one_regs_vcpu_subset_unordered(backend, shape):
    # Batch rule: ``vcpus`` names distinct vCPUs in any order; row i is
    # vcpus[i]; the vCPUs not named are not touched.  Equal to the loop over
    # those vCPUs in that order.
    a, b = one_reg_vm(backend, shape, 32), one_reg_vm(backend, shape, 32)
    ids = writable_ids(a)
    rng = np.random.default_rng(33)
    n = a.nr_vcpus
    for vcpus in ([n - 1, 0], [1], list(range(n))[::-1], [0, n - 1, 1]):
        vcpus = list(dict.fromkeys(vcpus))
        data = random_rows(rng, ids, len(vcpus))
        assert batch_set_one(a, ids, data, vcpus) == loop_set_one(b, ids, data, vcpus) == ("ok",)
        assert_same(a, b)
        sub = ids[::3] + ids[1::3]
        assert batch_get_one(a, sub, vcpus) == loop_get_one(a, sub, vcpus)
    # A vCPU named twice, or out of range, is refused before anything runs.
    before = a.state()
    with pytest.raises(ValueError, match="vcpus"):
        a.get_one_regs(u64(ids), np.array([0, 0]))
    with pytest.raises(ValueError, match="vcpus"):
        a.set_one_regs(u64(ids[:1]), np.zeros((1, reg_size(ids[0])), dtype=np.uint8), np.array([n]))
    assert not diff(before, a.state(), limit=1)


@backends
def test_sve_zero_padding_and_vq_sized_writes(backend):
    # kvm-facts §8 / api.rst: "reads copy min(regsize, VQ-derived size) and
    # zero-pad the rest; writes store only the VQ-derived part" - a Z slice
    # is 256 bytes, a P/FFR slice 32, whatever the vCPU's VQ.  Batch and
    # loop alike, per vCPU at its own max VQ.
    host, vls = (1, 2, 4), [(1,), (1, 2), (1, 2, 4)]
    a, b = sve_vm(backend, host, vls, 34), sve_vm(backend, host, vls, 34)
    ids = [Z(0), Z(31), P(0), P(15), FFR()]
    data = np.full((3, sum(reg_size(r) for r in ids)), 0xA5, dtype=np.uint8)
    assert batch_set_one(a, ids, data) == loop_set_one(b, ids, data, [0, 1, 2]) == ("ok",)
    assert_same(a, b)
    got = np.array(batch_get_one(a, ids)[1], dtype=np.uint8)
    assert got.tolist() == loop_get_one(b, ids, [0, 1, 2])[1]
    for v, vqs in enumerate(vls):
        vq = max(vqs)
        col = 0
        for r in ids:
            size = reg_size(r)
            used = 16 * vq if size == 256 else 2 * vq
            assert (got[v, col:col + used] == 0xA5).all()
            assert (got[v, col + used:col + size] == 0).all()
            col += size


@backends
@pytest.mark.parametrize("shape", [None, SVE_SHAPES[0]], ids=["fpsimd", "sve"])
def test_one_regs_errors_name_the_position(backend, shape):
    # api.rst: an ID that is no register of the vCPU is -ENOENT; kvm-facts
    # §8: an SVE slice other than 0 is -ENOENT, another ID in the SVE range
    # -EINVAL, a V register on an SVE vCPU -EINVAL, ZCR_EL1 or SVE_VLS on a
    # non-SVE vCPU -ENOENT.  Batch rule: KvmError.index is the position in
    # reg_ids and the errno the single call's; a part's registers are all
    # checked before any of them is written.
    vm = one_reg_vm(backend, shape, 35)
    ids = writable_ids(vm)
    sve = shape is not None
    bad = [(0x6030000000139999, errno.ENOENT), (0x6030_0000_0015_0000 | 0x7777, None)]
    bad += [(Z(3, 1), errno.ENOENT), (V(2), errno.EINVAL)] if sve else [(ZCR_EL1, errno.ENOENT),
                                                                        (SVE_VLS, errno.ENOENT), (Z(0), None)]
    before = vm.state()
    for reg, err in bad:
        single = loop_get_one(vm, [reg], [0])
        assert single[0] == "KvmError" and single[1] == (err or single[1])
        err = single[1]
        for k in (0, len(ids) // 2, len(ids)):
            mixed = ids[:k] + [reg] + ids[k:]
            assert batch_get_one(vm, mixed) == ("KvmError", err, k)
        for k in (0, len(ids) // 2, len(ids)):
            mixed = ids[:k] + [reg] + ids[k:]
            fp_only = [r for r in mixed if r not in TIMER_IDS]
            kk = fp_only.index(reg)
            data = np.zeros((vm.nr_vcpus, sum(reg_size(r) for r in fp_only)), dtype=np.uint8)
            assert batch_set_one(vm, fp_only, data) == ("KvmError", err, kk)
            data = np.zeros((vm.nr_vcpus, sum(reg_size(r) for r in mixed)), dtype=np.uint8)
            got = batch_set_one(vm, mixed, data)
            assert got == ("KvmError", err, k)
    # (Zeros written where zeros were: a refused batch left the state as it was.)
    assert not diff(before, vm.state(), limit=1)


# Was a bug (a strict xfail until 1c37e1f fixed it): VM.get_one_regs (vgic/vm.py) does not rebase a part's
# KvmError.index by the start of that part's run of IDs (set_one_regs does): an ID refused after a run of
# another part's IDs is reported at its position within its own run
@backends
def test_get_one_regs_index_after_another_parts_run(backend):
    # Batch rule: KvmError.index is the position in reg_ids.  Two FP
    # registers, a timer register, then an ID in the SVE range that names
    # nothing (refused by the FP/SVE part): index 3.
    vm = busy_vm(backend, 40, nr_vcpus=2)
    ids = [FPSR, FPCR, TIMER_CTL, Z(0)]
    assert loop_get_one(vm, ids, [0, 1])[:2] == ("KvmError", errno.ENOENT)
    assert batch_get_one(vm, ids) == loop_get_one(vm, ids, [0, 1]) == ("KvmError", errno.ENOENT, 3)


@backends
def test_one_regs_before_finalize_are_eperm(backend):
    # kvm-facts §8 / api.rst: an SVE vCPU's Z/P/FFR registers are -EPERM
    # until KVM_ARM_VCPU_FINALIZE; FPSR/FPCR and the timers are not.
    vm = sve_vm(backend, (1, 2), [None, None], finalize=False)
    ids = [FPSR, FPCR, Z(0), FFR(), TIMER_CTL]
    assert batch_get_one(vm, ids) == loop_get_one(vm, ids, [0, 1]) == ("KvmError", errno.EPERM, 2)
    ids = [FPSR, TIMER_CTL, FFR()]
    assert batch_get_one(vm, ids) == loop_get_one(vm, ids, [0, 1]) == ("KvmError", errno.EPERM, 2)
    before = vm.state()
    data = np.zeros((2, sum(reg_size(r) for r in ids[1:4])), dtype=np.uint8)
    assert batch_set_one(vm, ids[1:4], data) == ("KvmError", errno.EPERM, 1)
    assert not diff(before, vm.state(), limit=1)


@backends
def test_one_regs_bad_data_and_running(backend):
    # Batch rule: data is uint8 of shape (vCPUs, sum of the registers'
    # sizes), else ValueError; api.rst: a vCPU inside KVM_RUN refuses
    # KVM_GET/SET_ONE_REG (-EBUSY), batch and single alike.
    vm = busy_vm(backend, 36, nr_vcpus=2)
    ids = [FPSR, TIMER_CVAL, V(0)]
    width = 4 + 8 + 16
    before = vm.state()
    for data in (np.zeros((2, width + 1), dtype=np.uint8), np.zeros((1, width), dtype=np.uint8),
                 np.zeros((2, width), dtype=np.uint16), np.zeros((2, width), dtype=np.float64),
                 np.zeros(2 * width, dtype=np.uint8), [[0] * width] * 2):
        with pytest.raises(ValueError, match="data"):
            vm.set_one_regs(u64(ids), data)
    with pytest.raises(TypeError, match="reg_ids"):
        vm.get_one_regs(np.array([1.0]))
    with pytest.raises(ValueError, match="reg_ids"):
        vm.get_one_regs(np.array([-1]))
    assert not diff(before, vm.state(), limit=1)
    vm.vcpus[1].enter()
    assert batch_get_one(vm, ids) == ("KvmError", errno.EBUSY, None)
    assert loop_get_one(vm, ids, [1]) == ("KvmError", errno.EBUSY, 0)
    assert batch_set_one(vm, ids, np.zeros((2, width), dtype=np.uint8)) == ("KvmError", errno.EBUSY, None)
    # Only the vCPUs a batch names must be out of the guest.
    assert batch_get_one(vm, ids, [0]) == loop_get_one(vm, ids, [0])
    vm.vcpus[1].exit()


# ======================================================== SVE_VLS and finalize
def vls_rows(sets) -> np.ndarray:
    return np.frombuffer(b"".join(vls_bytes(s) for s in sets), dtype=np.uint8).reshape(len(sets), 64)


def check_vls(backend: str, host, sets, vcpus=None, finalized=()) -> tuple:
    a = sve_vm(backend, host, [None] * 3, finalize=False)
    b = sve_vm(backend, host, [None] * 3, finalize=False)
    for vm in (a, b):
        if finalized:
            vm.finalize_vcpus(KVM_ARM_VCPU_SVE, np.array(finalized))
    order = list(range(3)) if vcpus is None else vcpus
    data = vls_rows(sets)
    got = batch_set_one(a, [SVE_VLS], data, vcpus)
    assert got == loop_set_one(b, [SVE_VLS], data, order)
    assert_same(a, b)
    assert batch_get_one(a, [SVE_VLS]) == loop_get_one(a, [SVE_VLS], [0, 1, 2])
    return got


@backends
def test_sve_vls_batch_equal_single(backend):
    # kvm-facts §8: SVE_VLS may be written before finalize; its highest VQ
    # must not exceed KVM's maximum and every VQ up to it must match the
    # host exactly, else -EINVAL (an empty set too).  Same and differing
    # values per vCPU, valid ones: the batch equals the loop.
    host = (1, 2, 4, 8)
    assert check_vls(backend, host, [(1, 2, 4)] * 3) == ("ok",)
    assert check_vls(backend, host, [(1,), (1, 2, 4, 8), (1, 2)]) == ("ok",)
    assert check_vls(backend, host, [(1, 2), (1,)], vcpus=[2, 0]) == ("ok",)


@backends
@pytest.mark.parametrize("bad", [(2,), (1, 4), (), (1, 2, 4, 8, 16), (1, 2, 3)], ids=str)
def test_sve_vls_refused_is_einval(backend, bad):
    # kvm-facts §8: a VLS with a gap the host does not have, with a VQ the
    # host lacks, or empty is -EINVAL; index 0 (SVE_VLS's position in
    # reg_ids), the vCPUs before the refused one written.
    host = (1, 2, 4, 8)
    assert check_vls(backend, host, [bad, bad, bad]) == ("KvmError", errno.EINVAL, 0)
    assert check_vls(backend, host, [(1, 2), (1,), bad]) == ("KvmError", errno.EINVAL, 0)


@backends
def test_sve_vls_after_finalize_is_eperm(backend):
    # kvm-facts §8: "Write only before finalize (else -EPERM)".
    assert check_vls(backend, (1, 2), [(1,)] * 3, finalized=(0, 1, 2)) == ("KvmError", errno.EPERM, 0)
    assert check_vls(backend, (1, 2), [(1,), (1, 2), (1,)], finalized=(1,)) == ("KvmError", errno.EPERM, 0)


# Was a bug (a strict xfail until 1c37e1f fixed it): FpSimd._set_vls_many (vgic/fpsimd.py) runs the kernel's
# check only on the first vCPU of each distinct value and copies the result to the others only after every
# distinct value passed: vCPU 1 (same VLS as vCPU 0) is left unwritten when vCPU 2's VLS is refused, where the
# loop of KVM_SET_ONE_REG wrote it
@backends
def test_sve_vls_refusal_keeps_earlier_equal_values(backend):
    # Batch rule: a refused value stops the batch; the writes before it took
    # effect, as the loop leaves them (api.rst KVM_SET_ONE_REG, one vCPU at
    # a time).
    check_vls(backend, (1, 2, 4), [(1,), (1,), (2,)])


# Was a bug (a strict xfail until 1c37e1f fixed it): FpSimd._set_vls_many (vgic/fpsimd.py) never asks the
# kernel about a vCPU whose VLS equals an earlier vCPU's: a finalized vCPU 1 gets vCPU 0's VLS copied over its
# own (no EPERM; its VLS then disagrees with its max VQ)
@backends
def test_sve_vls_equal_value_on_finalized_vcpu_is_eperm(backend):
    # kvm-facts §8: SVE_VLS on a finalized vCPU is -EPERM, whatever another
    # vCPU's state; the loop writes vCPU 0 and stops at vCPU 1.
    check_vls(backend, (1, 2, 4), [(1,), (1,), (1,)], finalized=(1,))


@backends
def test_finalize_vcpus_equal_single(backend):
    # api.rst KVM_ARM_VCPU_FINALIZE(KVM_ARM_VCPU_SVE): a second finalize is
    # -EPERM, finalize on a vCPU without SVE (or of another feature) -EINVAL.
    # Batch rule: vCPUs in the given order, stopping at the first refusal
    # whose index is the vCPU's position; the ones before it finalized.
    for vcpus, feature, want in (([2, 0], KVM_ARM_VCPU_SVE, ("ok",)),
                                 ([1, 2], KVM_ARM_VCPU_SVE, ("KvmError", errno.EPERM, 1)),
                                 ([0, 1, 2], 5, ("KvmError", errno.EINVAL, 0))):
        a = sve_vm(backend, (1, 2), [(1,), None, (1, 2)], finalize=False)
        b = sve_vm(backend, (1, 2), [(1,), None, (1, 2)], finalize=False)
        for vm in (a, b):
            vm.vcpus[2].finalize(KVM_ARM_VCPU_SVE) if vcpus == [1, 2] else None
        try:
            a.finalize_vcpus(feature, np.array(vcpus))
            got = ("ok",)
        except vgic.KvmError as exc:
            got = ("KvmError", exc.errno, exc.index)
        loop = ("ok",)
        for k, v in enumerate(vcpus):
            try:
                b.vcpus[v].finalize(feature)
            except vgic.KvmError as exc:
                loop = ("KvmError", exc.errno, k)
                break
        assert got == loop == want
        assert_same(a, b)
    a = sve_vm(backend, (1, 2), [None] * 3, finalize=False)
    a.finalize_vcpus(KVM_ARM_VCPU_SVE)
    with pytest.raises(vgic.KvmError) as ei:
        a.finalize_vcpus(KVM_ARM_VCPU_SVE)
    assert (ei.value.errno, ei.value.index) == (errno.EPERM, 0)
    a = sve_vm(backend, (1, 2), [None] * 3, finalize=False)
    a.vcpus[1].set_one_reg(SVE_VLS, vls_bytes([1]))
    with pytest.raises(vgic.KvmError) as ei:
        a.vcpus[1].enter()                        # api.rst: KVM_RUN before finalize is EPERM
    assert ei.value.errno == errno.EPERM
    plain = busy_vm(backend, 37, nr_vcpus=2)
    with pytest.raises(vgic.KvmError) as ei:
        plain.finalize_vcpus(KVM_ARM_VCPU_SVE)
    assert (ei.value.errno, ei.value.index) == (errno.EINVAL, 0)
    with pytest.raises(vgic.KvmError) as ei:
        plain.vcpus[0].finalize(KVM_ARM_VCPU_SVE)
    assert ei.value.errno == errno.EINVAL


# Was a bug (a strict xfail until 1c37e1f fixed it): ArchTimer.set_one_regs (vgic/timer.py) writes register by
# register over all vCPUs while the loop goes vCPU by vCPU; TIMER_CNT moves the VM-wide virtual offset and a
# loaded vCPU's timer is reloaded after each write (_sync_in), so vCPU 0's hardware CNTVOFF and timer level
# come out with vCPU 1's offset in the batch and its own in the loop
@backends
def test_timer_one_regs_on_loaded_vcpus_equal_single(backend):
    # api.rst KVM_SET_ONE_REG: the batch is that many ioctls; kvm-facts §7:
    # writing TIMER_CNT sets the VM's virtual offset to (counter - value).
    # vCPUs that ran and were not put (their timers on the modelled
    # hardware), different TIMER_CNT values per vCPU.
    a, b = busy_vm(backend, 38, nr_vcpus=2), busy_vm(backend, 38, nr_vcpus=2)
    for vm in (a, b):
        vm.advance(1000)
        for v in vm.vcpus:
            v.enter()
            v.exit()
    ids = [TIMER_CNT, TIMER_CVAL, TIMER_CTL]
    data = np.array([[900, 500, 1], [100, 500, 1]], dtype="<u8").view(np.uint8)
    assert batch_set_one(a, ids, data) == loop_set_one(b, ids, data, [0, 1]) == ("ok",)
    assert_same(a, b)


@backends
def test_timer_one_regs_on_put_vcpus_equal_single(backend):
    # The same batch on vCPUs that ran and were put (as KVM_RUN leaves them
    # when it returns to userspace): register order no longer matters.
    a, b = busy_vm(backend, 39, nr_vcpus=2), busy_vm(backend, 39, nr_vcpus=2)
    for vm in (a, b):
        vm.advance(1000)
        for v in vm.vcpus:
            v.enter()
            v.exit()
            v.put()
    ids = [TIMER_CNT, TIMER_CVAL, TIMER_CTL, PTIMER_CNT, PTIMER_CVAL, PTIMER_CTL]
    data = np.array([[900, 500, 1, 800, 300, 1], [100, 500, 1, 50, 2000, 1]], dtype="<u8").view(np.uint8)
    assert batch_set_one(a, ids, data) == loop_set_one(b, ids, data, [0, 1]) == ("ok",)
    assert_same(a, b)
    assert batch_get_one(a, ids) == loop_get_one(b, ids, [0, 1])


# ======================================================== the bus's uaccess batches
FRAMES = [R.FRAME_GICD, R.FRAME_GICR_RD, R.FRAME_GICR_SGI, R.FRAME_GITS, R.FRAME_GITS_TRANSLATER]


@st.composite
def uaccess_batch(draw, nr_vcpus: int):
    """(frame, size, vCPUs, offsets, values) of one bus batch: offsets near
    the frame's registers (and unaligned, in holes, past the frame)."""
    frame = draw(st.sampled_from(FRAMES))
    size = draw(st.sampled_from([4, 4, 8]))
    starts = [r.offset for r in R.FRAMES[frame].regions] or [0x40]
    near = st.builds(lambda s, d: max(0, s + d), st.sampled_from(starts), st.integers(-8, 40))
    n = draw(st.integers(0, 30))
    offs = draw(st.lists(st.one_of(near, near, st.integers(0, 0x10100)), min_size=n, max_size=n))
    vcpus = draw(st.lists(st.integers(0, nr_vcpus - 1), min_size=n, max_size=n))
    top = (1 << (8 * size)) - 1
    values = draw(st.lists(st.one_of(st.integers(0, top), st.sampled_from([0, top, 1, 0x80000001])),
                           min_size=n, max_size=n))
    return frame, size, vcpus, offs, values


def its_pair_vm(backend: str) -> vgic.VM:
    """A busy VM with an ITS whose command queue and tables sit in RAM."""
    vm = busy_vm(backend, 41, its=True)
    ram = vm.ram_base
    its = vm.its_base
    vm.mmio_write(its + R.GITS_CBASER, 8, (1 << 63) | (ram + 0x10000))
    vm.mmio_write(its + R.GITS_BASER, 8, (1 << 63) | (ram + 0x20000))
    vm.mmio_write(its + R.GITS_BASER + 8, 8, (1 << 63) | (ram + 0x30000))
    return vm


def ubatch_write(vm: vgic.VM, frame, size, vcpus, offs, values) -> tuple:
    k, err = vm.bus.uaccess_write_batch(frame, np.array(vcpus, dtype=np.int64), np.array(offs, dtype=np.int64),
                                        np.array(values, dtype=np.uint64), size)
    return int(k), int(err)


def uloop_write(vm: vgic.VM, frame, size, vcpus, offs, values) -> tuple:
    for k, (v, o, x) in enumerate(zip(vcpus, offs, values)):
        ret = vm.bus.uaccess_write(frame, v, o, x, size)
        if ret:
            return k, -ret
    return -1, 0


@SETTINGS
@given(data=st.data())
def test_uaccess_batches_core_equal_twin_and_single(data):
    # kvm-facts §2: a userspace access uses the region's uaccess handlers (or
    # the guest's), an offset without a region reads 0 and a write there is
    # ignored and succeeds; a refused write returns its errno.  Batch rule
    # (Bus.uaccess_write_batch): that many single writes, stopping at the
    # first refused one and returning (its index, its errno), or (-1, 0).
    # On random batches of every frame and both widths: the Cython core's
    # bus and its twin's return the same values and leave the same state,
    # and each equals its own loop of single accesses.
    vms = {(be, way): its_pair_vm(be) for be in BACKENDS for way in ("batch", "loop")}
    nv = vms["core", "batch"].nr_vcpus
    for _ in range(data.draw(st.integers(1, 4), label="rounds")):
        frame, size, vcpus, offs, values = data.draw(uaccess_batch(nv), label="batch")
        reads = {}
        for (be, way), vm in vms.items():
            if way == "batch":
                reads[be, way] = vm.bus.uaccess_read_batch(frame, np.array(vcpus, dtype=np.int64),
                                                           np.array(offs, dtype=np.int64), size).tolist()
            else:
                reads[be, way] = [vm.bus.uaccess_read(frame, v, o, size) for v, o in zip(vcpus, offs)]
        assert len({tuple(r) for r in reads.values()}) == 1, reads
        outs = {(be, way): (ubatch_write if way == "batch" else uloop_write)(vm, frame, size, vcpus, offs, values)
                for (be, way), vm in vms.items()}
        assert len(set(outs.values())) == 1, outs
        k, err = outs["core", "batch"]
        assert (k, err) == (-1, 0) or (0 <= k < len(offs) and err > 0)
        ref = vms["core", "batch"]
        for key, vm in vms.items():
            assert_same(ref, vm, f"core batch vs {key}")


@backends
def test_uaccess_write_batch_stops_at_refusal(backend):
    # kvm-facts §5.1/§5.7: a userspace GITS_CREADR write while the ITS is
    # enabled is -EBUSY, one at or past the queue's end -EINVAL; GITS_IIDR
    # naming an ABI revision KVM lacks is -EINVAL.  Batch rule: (index,
    # errno) of the first refused write; the ones before it done, none after.
    for bad_off, bad_val, err, enable, size in ((R.GITS_CREADR, 0x20, errno.EBUSY, True, 8),
                                                (R.GITS_CREADR, 1 << 19, errno.EINVAL, False, 8),
                                                (R.GITS_IIDR, 0xF000, errno.EINVAL, False, 4)):
        a, b = its_pair_vm(backend), its_pair_vm(backend)
        for vm in (a, b):
            if enable:
                vm.mmio_write(vm.its_base + R.GITS_CTLR, 4, R.GITS_CTLR_ENABLED)
        offs = [R.GITS_BASER + 16, R.GITS_BASER + 8, bad_off, R.GITS_BASER + 24]
        top = (1 << (8 * size)) - 1
        values = [((1 << 63) | 0x4005_0000) & top, 0x4004_0000, bad_val, 0x1234]
        vcpus = [0, 1, 2, 3]
        got = ubatch_write(a, R.FRAME_GITS, size, vcpus, offs, values)
        assert got == uloop_write(b, R.FRAME_GITS, size, vcpus, offs, values) == (2, err)
        assert_same(a, b)
        assert diff(a.state(), its_pair_vm(backend).state(), limit=1), "the writes before it took effect"


@backends
def test_uaccess_batch_bad_arguments(backend):
    # Batch rule: vCPUs and offsets are 1-D integer arrays of one length,
    # every vCPU index in range and no offset negative, values fit the
    # access width; all checked before any access runs.
    vm = its_pair_vm(backend)
    before = vm.state()
    bus = vm.bus
    ok = np.array([0, 1])
    for call, exc in ((lambda: bus.uaccess_read_batch(R.FRAME_GICD, ok, np.array([0])), ValueError),
                      (lambda: bus.uaccess_read_batch(R.FRAME_GICD, np.array([0, 9]), ok), ValueError),
                      (lambda: bus.uaccess_read_batch(R.FRAME_GICD, ok, np.array([0, -4])), ValueError),
                      (lambda: bus.uaccess_read_batch(R.FRAME_GICD, ok, np.array([0.0, 4.0])), TypeError),
                      (lambda: bus.uaccess_read_batch(R.FRAME_GICD, ok, ok, 2), ValueError),
                      (lambda: bus.uaccess_write_batch(R.FRAME_GICD, ok, ok, np.array([1, 1 << 32])), ValueError),
                      (lambda: bus.uaccess_write_batch(R.FRAME_GICD, ok, np.array([0x100, 0x104]),
                                                       np.array([1])), ValueError),
                      (lambda: bus.uaccess_write_batch(R.FRAME_GICD, ok, np.array([0x100, -1]),
                                                       np.array([1, 1])), ValueError)):
        with pytest.raises(exc):
            call()
    assert not diff(before, vm.state(), limit=1)


# ================================================================ timers' batches
@backends
@SETTINGS
@given(data=st.data())
def test_timer_reg_batches_equal_single(backend, data):
    # kvm-facts §7: a one-reg read of CTL reports ISTATUS when the condition
    # holds, CNT reads the counter minus the offset, a CNT write moves the
    # VM's offset; userspace reaches KVM's copy of a loaded timer (saved,
    # accessed, restored).  Timers.get_reg_batch / set_reg_batch over
    # random vCPUs (repeats allowed: in order) equal get_reg / set_reg
    # loops, on vCPUs loaded, put, running ptimers and not.
    def setup() -> vgic.VM:
        vm = busy_vm(backend, 42)
        vm.advance(5000)
        for v in vm.vcpus:
            v.set_one_reg(PTIMER_CTL, 1)
            v.set_one_reg(PTIMER_CVAL, 6000 + 100 * v.id)
            v.set_one_reg(TIMER_CTL, 1)
        for i in (0, 1, 2):
            vm.vcpus[i].enter()
            vm.vcpus[i].exit()
        vm.vcpus[2].put()
        return vm

    a, b = setup(), setup()
    assert_same(a, b)
    ta, tb = a.timer.timers, b.timer.timers
    for _ in range(data.draw(st.integers(1, 6), label="rounds")):
        which = data.draw(st.integers(0, 5), label="which")
        vcpus = data.draw(st.lists(st.integers(0, 3), max_size=8), label="vcpus")
        ids = np.array(vcpus, dtype=np.int64)
        assert ta.get_reg_batch(ids, which).tolist() == [tb.get_reg(v, which) for v in vcpus]
        assert_same(a, b)
        values = data.draw(st.lists(st.one_of(st.integers(0, (1 << 64) - 1), st.integers(0, 10000)),
                                    min_size=len(vcpus), max_size=len(vcpus)), label="values")
        ta.set_reg_batch(ids, which, np.array(values, dtype=np.uint64))
        for v, x in zip(vcpus, values):
            tb.set_reg(v, which, x)
        assert_same(a, b)
        ticks = data.draw(st.integers(0, 3000), label="ticks")
        for vm in (a, b):
            vm.advance(ticks)
        assert_same(a, b)


@backends
def test_timer_reg_batches_bad_arguments(backend):
    # Batch rule: every vCPU index and value is checked before any access;
    # ``which`` names one of the six timer one-regs.
    vm = busy_vm(backend, 43)
    t = vm.timer.timers
    before = vm.state()
    for call in (lambda: t.get_reg_batch(np.array([0, 4]), 0),
                 lambda: t.get_reg_batch(np.array([0]), 6),
                 lambda: t.set_reg_batch(np.array([0, 1]), 1, np.array([5])),
                 lambda: t.set_reg_batch(np.array([0, -1]), 1, np.array([5, 5])),
                 lambda: t.set_reg_batch(np.array([0, 1]), 1, np.array([5, -5]))):
        with pytest.raises(ValueError):
            call()
    with pytest.raises(TypeError):
        t.set_reg_batch(np.array([0]), 1, np.array([1.5]))
    assert not diff(before, vm.state(), limit=1)
