"""KVM's FPSIMD/SVE userspace ABI and the guest's view of its registers
(docs/sve-facts.md), on both backends (and both FP policies where the guest
runs: the ABI must not depend on when KVM moves the state).

§A  one-reg IDs and KVM_GET_REG_LIST order (kselftest get-reg-list.c's
    ``sve`` sublist, guest.c kvm_arm_copy_reg_indices);
§B  errnos (guest.c get/set_sve_reg, sve_reg_to_region, get/set_sve_vls,
    reset.c kvm_arm_vcpu_finalize, arm.c KVM_RUN / KVM_GET_REG_LIST);
§C  data rules (Z/P/FFR zero-padded reads, VQ-sized writes, V = Z[127:0]);
§E  ZCR_EL1 (LEN in [3:0], effective VL rounded down, reset value 0).
"""
from __future__ import annotations

import errno
import sys
from pathlib import Path

import pytest

import vgic

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sve_helpers import (
    BACKENDS,
    FFR,
    FFR_,
    FPCR,
    FPSR,
    HOST_VQS,
    KVM_ARM_VCPU_SVE,
    POLICIES,
    VLS,
    ZCR_EL1,
    P,
    V,
    Z,
    eff_vq,
    make_vm,
    pattern,
    vls_bytes,
)

params = pytest.mark.parametrize
backends = params("backend", BACKENDS)


def both(f):
    return params("policy", POLICIES)(params("backend", BACKENDS)(f))


def _errno(fn, *args) -> int:
    with pytest.raises(vgic.KvmError) as ei:
        fn(*args)
    return ei.value.errno


SVE_SUBLIST = ([VLS] + [0x6080000000150000 + 0x20 * n for n in range(32)]
               + [0x6050000000150400 + 0x20 * n for n in range(16)] + [0x6050000000150600])
VREGS = [0x6040000000100054 + 4 * n for n in range(32)]


# ====================================================================== §A reg list
@backends
@params("host_vqs", [HOST_VQS, tuple(range(1, 17))], ids=["gaps", "all"])
def test_reg_list_sve_sublist(backend, host_vqs):
    """get-reg-list.c, SVE configs (BASE + SVE, no VREGS sublist): a finalized
    SVE vCPU lists FPSR/FPCR among the core regs but no V0..V31 (KVM's
    core_reg_size_from_offset fails for vregs when vcpu_has_sve), then VLS
    first, Z0..Z31 slice 0, P0..P15, FFR (copy_sve_reg_indices: VLS first so
    that userspace can restore in list order), and ZCR_EL1 among the sysregs
    (sve-facts §A, §G)."""
    vm = make_vm(backend, host_vqs=host_vqs)
    ids = vm.vcpus[0].get_reg_list()
    assert len(ids) == len(set(ids))
    assert SVE_SUBLIST[0] == 0x606000000015FFFF and SVE_SUBLIST[1] == 0x6080000000150000
    assert SVE_SUBLIST[32] == 0x60800000001503E0 and SVE_SUBLIST[33] == 0x6050000000150400
    assert SVE_SUBLIST[48] == 0x60500000001505E0 and SVE_SUBLIST[49] == 0x6050000000150600
    assert 0x60200000001000D4 in ids and 0x60200000001000D5 in ids
    assert not set(VREGS) & set(ids)
    k = ids.index(VLS)
    assert ids[k:k + 50] == SVE_SUBLIST
    assert [r for r in ids if (r >> 16) & 0xFFF == 0x15] == SVE_SUBLIST   # nothing else in coproc SVE
    assert 0x603000000013C090 in ids
    # KVM's order: core registers, then the SVE block, ..., the sysregs.
    assert ids.index(FPSR) < k and ids.index(FPCR) < k
    assert ids.index(ZCR_EL1) > k + 49
    assert all(r in ids for r in SVE_SUBLIST + [ZCR_EL1])   # the kselftest's 51 IDs


@backends
def test_reg_list_fpsimd(backend):
    """get-reg-list.c's VREGS sublist (non-SVE configs): V0..V31 are the core
    IDs 0x6040000000100054 + 4n (V31 = ...D0), FPSR 0x60200000001000D4, FPCR
    ...D5 (kvm_regs layout, sve-facts §A); a non-SVE vCPU lists no SVE ID and
    no ZCR_EL1 (sve_visibility hides it)."""
    vm = make_vm(backend, sve=False)
    ids = vm.vcpus[0].get_reg_list()
    assert VREGS[31] == 0x60400000001000D0
    k = ids.index(VREGS[0])
    assert ids[k:k + 34] == VREGS + [0x60200000001000D4, 0x60200000001000D5]
    assert not [r for r in ids if (r >> 16) & 0xFFF == 0x15]
    assert ZCR_EL1 not in ids


@backends
def test_reg_list_before_finalize(backend):
    """arm.c KVM_GET_REG_LIST: -EPERM while an SVE vCPU is not finalized
    (sve-facts §B); fine once it is."""
    vm = make_vm(backend, finalize=False)
    v = vm.vcpus[0]
    assert _errno(v.get_reg_list) == errno.EPERM
    v.finalize(KVM_ARM_VCPU_SVE)
    assert VLS in v.get_reg_list()


# ====================================================================== §B VLS
@backends
@params("host_vqs", [HOST_VQS, tuple(range(1, 17)), (1,), (1, 3, 16)], ids=str)
def test_vls_readable_before_and_after_finalize(backend, host_vqs):
    """get_sve_vls has no finalize check: 64 bytes (8 LE u64), bit (vq-1) set
    for each VQ the host supports (the default VLS), before and after
    finalize (api.rst; sve-facts §A/§B)."""
    vm = make_vm(backend, host_vqs=host_vqs, finalize=False)
    v = vm.vcpus[0]
    want = vls_bytes(host_vqs)
    assert len(want) == 64
    assert v.get_one_reg(VLS) == want
    v.finalize(KVM_ARM_VCPU_SVE)
    assert v.get_one_reg(VLS) == want
    assert v.fp.max_vq == max(host_vqs)
    if host_vqs == HOST_VQS:
        assert want == (0x8B).to_bytes(8, "little") + bytes(56)


@backends
@params("vqs, err", [
    ((1, 2, 4), 0), ((1, 2, 4, 8), 0), ((1, 2), 0), ((1,), 0),
    ((1, 4), errno.EINVAL),            # VQ 2 is available below the max: must be set
    ((1, 2, 3), errno.EINVAL),         # VQ 3 is not available on the host
    ((2, 4), errno.EINVAL),            # VQ 1 missing
    ((1, 2, 4, 8, 16), errno.EINVAL),  # above the host's max
    ((), errno.EINVAL),                # no VQ at all
    ((1, 2, 4, 8, 17), errno.EINVAL),  # beyond SVE_VQ_MAX (16)
    ((1, 65), errno.EINVAL),           # a bit in word 1
], ids=str)
def test_vls_set_rules(backend, vqs, err):
    """set_sve_vls (sve-facts §B): every VQ from 1 to the highest one set must
    match the host's availability (sve_vq_available), no bits or a VQ past
    KVM's max is -EINVAL; a refused write leaves the VLS as it was."""
    vm = make_vm(backend, finalize=False)
    v = vm.vcpus[0]
    before = v.get_one_reg(VLS)
    if err:
        assert _errno(v.set_one_reg, VLS, vls_bytes(vqs)) == err
        assert v.get_one_reg(VLS) == before
    else:
        v.set_one_reg(VLS, vls_bytes(vqs))
        assert v.get_one_reg(VLS) == vls_bytes(vqs)
        v.finalize(KVM_ARM_VCPU_SVE)
        assert v.fp.max_vq == max(vqs)
        assert v.get_one_reg(VLS) == vls_bytes(vqs)


@backends
def test_vls_all_host_vqs_up_to_16(backend):
    """A host with every VQ 1..16: the full set is accepted, VQ 17 is not."""
    vm = make_vm(backend, host_vqs=range(1, 17), finalize=False)
    v = vm.vcpus[0]
    v.set_one_reg(VLS, vls_bytes(range(1, 17)))
    assert _errno(v.set_one_reg, VLS, vls_bytes(range(1, 18))) == errno.EINVAL
    v.set_one_reg(VLS, vls_bytes(range(1, 6)))
    v.finalize(KVM_ARM_VCPU_SVE)
    assert v.fp.max_vq == 5


@backends
def test_vls_set_after_finalize_eperm(backend):
    """get-reg-list.c sve_rejects_set = {VLS}: setting it after finalize is
    -EPERM (check_reject_set accepts only EPERM), even to its current value."""
    vm = make_vm(backend)
    v = vm.vcpus[0]
    cur = v.get_one_reg(VLS)
    assert _errno(v.set_one_reg, VLS, cur) == errno.EPERM
    assert _errno(v.set_one_reg, VLS, vls_bytes((1,))) == errno.EPERM
    assert v.get_one_reg(VLS) == cur


@backends
def test_vls_non_sve_and_bad_length(backend):
    """VLS on a non-SVE vCPU: -ENOENT for get and set (get/set_sve_vls); a
    value that is not 64 bytes: -EINVAL."""
    v = make_vm(backend, sve=False).vcpus[0]
    assert _errno(v.get_one_reg, VLS) == errno.ENOENT
    assert _errno(v.set_one_reg, VLS, vls_bytes((1,))) == errno.ENOENT
    w = make_vm(backend, finalize=False).vcpus[0]
    for bad in (vls_bytes((1,))[:63], vls_bytes((1,)) + b"\0", 1):
        assert _errno(w.set_one_reg, VLS, bad) == errno.EINVAL


@backends
@params("vqs", [(1,), (1, 2), (1, 2, 4), HOST_VQS], ids=str)
def test_finalize_sizes_max_vq(backend, vqs):
    """kvm_vcpu_finalize_sve sizes the state at the highest VQ of the VLS:
    a Z one-reg read has 16*max_vq live bytes (then zeros), P/FFR 2*max_vq,
    and the guest's VL tops out at max_vq whatever ZCR_EL1.LEN asks (15
    here, set before the run)."""
    vm = make_vm(backend, vls=vqs)
    v = vm.vcpus[0]
    mvq = max(vqs)
    assert v.fp.max_vq == mvq
    v.set_one_reg(Z(3), pattern(256, 3))
    v.set_one_reg(P(3), pattern(32, 4))
    assert v.get_one_reg(Z(3)) == pattern(256, 3)[:16 * mvq] + bytes(256 - 16 * mvq)
    assert v.get_one_reg(P(3)) == pattern(32, 4)[:2 * mvq] + bytes(32 - 2 * mvq)
    v.set_one_reg(ZCR_EL1, 15)      # before the run: ZCR_EL1 = 0 would narrow (and zero) first
    v.enter()
    assert v.fp.read_z(3) == pattern(256, 3)[:16 * mvq]
    assert v.fp.read_p(3) == pattern(32, 4)[:2 * mvq]
    v.exit()


# ====================================================================== §B finalize, KVM_RUN
@backends
def test_finalize_errnos(backend):
    """reset.c kvm_arm_vcpu_finalize: an unknown feature -EINVAL; SVE on a
    vCPU without it -EINVAL (the code, not the 2019 doc's EPERM: sve-facts
    §B [fix]); a second finalize -EPERM."""
    v = make_vm(backend, finalize=False).vcpus[0]
    for feature in (0, 1, 3, 5, 6, 0x7FFFFFFF, -1):
        assert _errno(v.finalize, feature) == errno.EINVAL
    v.finalize(KVM_ARM_VCPU_SVE)
    assert _errno(v.finalize, KVM_ARM_VCPU_SVE) == errno.EPERM
    assert _errno(v.finalize, 0) == errno.EINVAL
    w = make_vm(backend, sve=False).vcpus[0]
    assert _errno(w.finalize, KVM_ARM_VCPU_SVE) == errno.EINVAL
    assert _errno(w.finalize, 0) == errno.EINVAL


@backends
def test_run_before_finalize_eperm(backend):
    """arm.c kvm_arch_vcpu_run_pid_change: KVM_RUN of an SVE vCPU that is not
    finalized is -EPERM, and the vCPU has not run (nothing loaded, nothing
    entered); after finalize it runs."""
    vm = make_vm(backend, finalize=False)
    v = vm.vcpus[0]
    for _ in range(2):
        assert _errno(v.enter) == errno.EPERM
        assert not v.has_run and not v.running and not v.loaded
    v.finalize(KVM_ARM_VCPU_SVE)
    v.enter()
    assert v.has_run and v.running
    v.exit()


@backends
def test_batch_run_before_finalize_changes_nothing(backend):
    """The batch KVM_RUN (vm.enter_vcpus): refused with -EPERM when one SVE
    vCPU is not finalized, and - validated before anything runs - no vCPU
    is running, loaded or marked as having run."""
    vm = make_vm(backend, nr_vcpus=2, finalize=False)
    vm.vcpus[0].finalize(KVM_ARM_VCPU_SVE)
    assert _errno(vm.enter_vcpus) == errno.EPERM
    assert [(v.running, v.loaded) for v in vm.vcpus] == [(False, False)] * 2
    assert [v.has_run for v in vm.vcpus] == [False, False]


# ====================================================================== §B/§C one-reg slices
@backends
@params("vqs", [(1,), (1, 2, 4), HOST_VQS], ids=str)
def test_slice_sizes_and_padding(backend, vqs):
    """get_sve_reg copies the VQ-sized part (16*max_vq bytes of Z, 2*max_vq of
    P/FFR) and zero-fills the rest of the 256/32-byte user buffer;
    set_sve_reg copies only the VQ-sized part: user bytes above are never
    read (no -EINVAL) and read back as zeros (sve-facts §C)."""
    vm = make_vm(backend, vls=vqs)
    v = vm.vcpus[0]
    mvq = max(vqs)
    for n in range(32):
        assert v.get_one_reg(Z(n)) == bytes(256)          # zeroed at finalize
    for n in range(16):
        assert v.get_one_reg(P(n)) == bytes(32)
    assert v.get_one_reg(FFR) == bytes(32)
    for n in (0, 17, 31):
        v.set_one_reg(Z(n), pattern(256, n))
        got = v.get_one_reg(Z(n))
        assert len(got) == 256 and got == pattern(256, n)[:16 * mvq] + bytes(256 - 16 * mvq)
    for n in (0, 15):
        v.set_one_reg(P(n), pattern(32, 50 + n))
        assert v.get_one_reg(P(n)) == pattern(32, 50 + n)[:2 * mvq] + bytes(32 - 2 * mvq)
    v.set_one_reg(FFR, pattern(32, 99))
    assert v.get_one_reg(FFR) == pattern(32, 99)[:2 * mvq] + bytes(32 - 2 * mvq)
    # Other registers untouched.
    assert v.get_one_reg(Z(1)) == bytes(256) and v.get_one_reg(P(1)) == bytes(32)


@backends
def test_slice_errnos(backend):
    """sve_reg_to_region then the finalize check (sve-facts §B): slice >= 1 is
    -ENOENT, before finalize too (the region check runs first); slice 0
    before finalize -EPERM; Z/P/FFR on a non-SVE vCPU -ENOENT."""
    fresh = make_vm(backend, finalize=False).vcpus[0]
    done = make_vm(backend).vcpus[0]
    plain = make_vm(backend, sve=False).vcpus[0]
    sliced = [Z(0, 1), Z(31, 31), P(0, 1), P(15, 31), FFR_(1), FFR_(31)]
    slice0 = [Z(0), Z(31), P(0), P(15), FFR]
    for v in (fresh, done, plain):
        for rid in sliced:
            assert _errno(v.get_one_reg, rid) == errno.ENOENT, hex(rid)
            size = 256 if rid >> 52 & 0xF == 8 else 32
            assert _errno(v.set_one_reg, rid, bytes(size)) == errno.ENOENT, hex(rid)
    for rid in slice0:
        size = 256 if rid >> 52 & 0xF == 8 else 32
        assert _errno(fresh.get_one_reg, rid) == errno.EPERM, hex(rid)
        assert _errno(fresh.set_one_reg, rid, bytes(size)) == errno.EPERM, hex(rid)
        assert _errno(plain.get_one_reg, rid) == errno.ENOENT, hex(rid)
        assert _errno(plain.set_one_reg, rid, bytes(size)) == errno.ENOENT, hex(rid)
        done.get_one_reg(rid)


@backends
@params("rid", [
    0x6050000000150700,        # coproc SVE, past FFR(31): names nothing
    0x6050000000150620,        # one past FFR(31)
    0x6050000000150000,        # a Z index with a U256 size
    0x6080000000150400,        # a P index with a U2048 size
    0x6080000000150600,        # an FFR index with a U2048 size
    0x605000000015FFFF,        # VLS with a U256 size
    0x6030000000150000,        # a Z index with a U64 size
], ids=hex)
def test_sve_id_naming_nothing_einval(backend, rid):
    """sve_reg_to_region: an ID in coproc 0x15 outside both the Z range and
    the P+FFR range, and not exactly VLS, is -EINVAL - the size bits are part
    of the range comparison - on SVE (finalized or not) and non-SVE vCPUs
    alike (sve-facts §B)."""
    vms = (make_vm(backend), make_vm(backend, finalize=False), make_vm(backend, sve=False))
    for vm in vms:
        v = vm.vcpus[0]
        assert _errno(v.get_one_reg, rid) == errno.EINVAL
        size = 1 << (rid >> 52 & 0xF)
        assert _errno(v.set_one_reg, rid, bytes(size)) == errno.EINVAL


@backends
@params("finalized", [False, True])
def test_core_vregs_einval_on_sve(backend, finalized):
    """core_reg_size_from_offset returns -EINVAL for V0..V31 when the vCPU
    has SVE (finalized or not): KVM_GET/SET_ONE_REG of them is -EINVAL; FPSR
    and FPCR stay accessible (sve-facts §A, §B)."""
    v = make_vm(backend, finalize=finalized).vcpus[0]
    for n in (0, 1, 31):
        assert _errno(v.get_one_reg, V(n)) == errno.EINVAL
        assert _errno(v.set_one_reg, V(n), bytes(16)) == errno.EINVAL
    v.set_one_reg(FPSR, 0x08000010)
    v.set_one_reg(FPCR, 0x00400000)
    assert v.get_one_reg(FPSR) == 0x08000010 and v.get_one_reg(FPCR) == 0x00400000


@backends
def test_wrong_length_einval(backend):
    """A value of the wrong size for the ID's size field is -EINVAL (the
    model's form of a user buffer of the wrong size), and nothing changes."""
    v = make_vm(backend).vcpus[0]
    v.set_one_reg(Z(2), pattern(256, 1))
    for bad in (bytes(255), bytes(257), bytes(16), bytes(32), 0, None):
        assert _errno(v.set_one_reg, Z(2), bad) == errno.EINVAL
    for bad in (bytes(31), bytes(33), bytes(256), 0):
        assert _errno(v.set_one_reg, P(2), bad) == errno.EINVAL
        assert _errno(v.set_one_reg, FFR, bad) == errno.EINVAL
    assert v.get_one_reg(Z(2))[:16] == pattern(256, 1)[:16]
    w = make_vm(backend, sve=False).vcpus[0]
    for bad in (bytes(15), bytes(17), bytes(256), 0):
        assert _errno(w.set_one_reg, V(0), bad) == errno.EINVAL
    assert w.get_one_reg(V(0)) == bytes(16)


@backends
def test_zcr_el1_one_reg_sve_only(backend):
    """ZCR_EL1's sys_regs.c entry has sve_visibility: hidden on a non-SVE
    vCPU, so its one-reg access is -ENOENT (sve-facts §A); on an SVE vCPU it
    reads its reset value 0."""
    assert make_vm(backend).vcpus[0].get_one_reg(ZCR_EL1) == 0
    w = make_vm(backend, sve=False).vcpus[0]
    assert _errno(w.get_one_reg, ZCR_EL1) == errno.ENOENT
    assert _errno(w.set_one_reg, ZCR_EL1, 0) == errno.ENOENT


# ====================================================================== §C V <-> Z
@both
def test_v_is_low_bits_of_z(backend, policy):
    """api.rst footnote [1]: on an SVE vCPU V is bits [127:0] of Zn. A guest
    Z write then V read gives the low 16 bytes; an FPSIMD V write zeroes Zn
    above 128 bits (QEMU clear_vec_high; sve-facts §E), leaves P/FFR and the
    other Z alone; after exit and put, the Z one-reg shows what the guest
    wrote, zero-padded."""
    vm = make_vm(backend, policy, vls=(1, 2, 4))
    v = vm.vcpus[0]
    v.enter()
    v.sysreg_write("ZCR_EL1", 3)                        # VQ 4
    z5, z6, p0, ffr = pattern(64, 5), pattern(64, 6), pattern(8, 7), pattern(8, 8)
    v.fp.write_z(5, z5)
    v.fp.write_z(6, z6)
    v.fp.write_p(0, p0)
    v.fp.write_ffr(ffr)
    assert v.fp.read_v(5) == z5[:16]
    vnew = pattern(16, 9)
    v.fp.write_v(5, vnew)
    assert v.fp.read_z(5) == vnew + bytes(48)
    assert v.fp.read_v(5) == vnew
    assert v.fp.read_z(6) == z6 and v.fp.read_p(0) == p0 and v.fp.read_ffr() == ffr
    v.exit()
    assert v.get_one_reg(Z(5)) == vnew + bytes(240)     # exited, still loaded
    v.put()
    assert v.get_one_reg(Z(5)) == vnew + bytes(240)
    assert v.get_one_reg(Z(6)) == z6 + bytes(192)
    assert v.get_one_reg(P(0)) == p0 + bytes(24) and v.get_one_reg(FFR) == ffr + bytes(24)


@both
def test_one_reg_z_write_seen_as_v(backend, policy):
    """The reverse: a Z one-reg write is what the guest's V (its low 16
    bytes) and Z (at its VL) read at the next run."""
    vm = make_vm(backend, policy, vls=(1, 2))
    v = vm.vcpus[0]
    v.set_one_reg(ZCR_EL1, 1)
    v.set_one_reg(Z(9), pattern(256, 9))
    v.enter()
    assert v.fp.read_v(9) == pattern(256, 9)[:16]
    assert v.fp.read_z(9) == pattern(256, 9)[:32]
    v.exit()


@both
def test_fpsimd_vcpu(backend, policy):
    """A non-SVE vCPU: its guest's V/FPSR/FPCR go to the core one-regs; any
    SVE instruction or ZCR_EL1 access is UNDEFINED (CPTR_EL2.TZ stays set,
    kvm_hyp_handle_fpsimd refuses EC SVE, sve-facts §D1)."""
    vm = make_vm(backend, policy, sve=False)
    v = vm.vcpus[0]
    v.set_one_reg(V(3), pattern(16, 3))
    v.enter()
    assert v.fp.read_v(3) == pattern(16, 3)
    v.fp.write_v(4, pattern(16, 4))
    v.sysreg_write("FPSR", 0x08000001)
    v.sysreg_write("FPCR", 0x03000000)
    for call in (lambda: v.fp.read_z(0), lambda: v.fp.write_z(0, bytes(16)), lambda: v.fp.read_p(0),
                 lambda: v.fp.write_p(0, bytes(2)), lambda: v.fp.read_ffr(), lambda: v.fp.write_ffr(bytes(2)),
                 lambda: v.sysreg_read("ZCR_EL1"), lambda: v.sysreg_write("ZCR_EL1", 0)):
        with pytest.raises(vgic.UndefinedInstruction):
            call()
    assert v.fp.read_v(4) == pattern(16, 4)
    v.exit()
    v.put()
    assert v.get_one_reg(V(4)) == pattern(16, 4)
    assert v.get_one_reg(FPSR) == 0x08000001 and v.get_one_reg(FPCR) == 0x03000000


# ====================================================================== §E ZCR_EL1
@both
def test_fresh_vcpu_sees_vq1(backend, policy):
    """kvm_reset_sys_regs: ZCR_EL1 resets to 0, so a freshly finalized vCPU's
    guest runs at VQ 1 (128-bit Z, 16-bit P) until it writes ZCR_EL1, even
    though its max VQ (and ZCR_EL2) is 8 (sve-facts §C Reset, §E)."""
    vm = make_vm(backend, policy)
    v = vm.vcpus[0]
    assert v.fp.max_vq == 8
    v.enter()
    assert v.sysreg_read("ZCR_EL1") == 0
    assert len(v.fp.read_z(0)) == 16 and len(v.fp.read_p(0)) == 2 and len(v.fp.read_ffr()) == 2
    v.sysreg_write("ZCR_EL1", 7)
    assert len(v.fp.read_z(0)) == 128
    v.exit()


@both
@params("zlen", range(16))
def test_zcr_len_sets_vl(backend, policy, zlen):
    """Effective VL = min(ZCR_EL1.LEN+1, ZCR_EL2.LEN+1 = max_vq), rounded down
    to an implemented VQ (host 1, 2, 4, 8; sve-facts §E); it survives exit,
    put and the next run (ZCR_EL1 saved with the vCPU, read by one-reg)."""
    vm = make_vm(backend, policy)
    v = vm.vcpus[0]
    v.enter()
    v.sysreg_write("ZCR_EL1", zlen)
    vq = eff_vq(zlen, 8)
    assert v.sysreg_read("ZCR_EL1") == zlen
    assert len(v.fp.read_z(1)) == 16 * vq and len(v.fp.read_p(1)) == 2 * vq
    v.exit()
    v.put()
    assert v.get_one_reg(ZCR_EL1) == zlen
    v.enter()
    assert len(v.fp.read_z(1)) == 16 * vq
    v.exit()


@both
def test_zcr_len_capped_by_max_vq(backend, policy):
    """With VLS {1, 2, 4} ZCR_EL2.LEN = 3: LEN 15 gives VQ 4, LEN 2 gives 2."""
    vm = make_vm(backend, policy, vls=(1, 2, 4))
    v = vm.vcpus[0]
    v.enter()
    for zlen, vq in ((15, 4), (7, 4), (3, 4), (2, 2), (1, 2), (0, 1)):
        v.sysreg_write("ZCR_EL1", zlen)
        assert len(v.fp.read_z(0)) == 16 * vq, zlen
    v.exit()


@both
def test_zcr_only_len_kept(backend, policy):
    """ZCR_ELx.LEN is [3:0]; [8:4] are RAZ/WI and the rest RES0 (Mark
    Brown's f171f9e4; sve-facts §E): a write of all ones reads back 15."""
    vm = make_vm(backend, policy)
    v = vm.vcpus[0]
    v.enter()
    v.sysreg_write("ZCR_EL1", (1 << 64) - 1)
    assert v.sysreg_read("ZCR_EL1") == 15
    v.sysreg_write("ZCR_EL1", 0x1F3)
    assert v.sysreg_read("ZCR_EL1") == 3
    assert len(v.fp.read_z(0)) == 64
    v.exit()
    v.put()
    assert v.get_one_reg(ZCR_EL1) == 3


@both
def test_vl_shrink_zeroes(backend, policy):
    """Narrowing the effective VL: the inaccessible bits may be zeroed;
    widening again makes them UNKNOWN, which an implementation may zero
    (QEMU aarch64_sve_narrow_vq; sve-facts §E) - the model zeroes them, so
    they read zero when LEN grows back, in the guest and in KVM's copy."""
    vm = make_vm(backend, policy)
    v = vm.vcpus[0]
    v.enter()
    v.sysreg_write("ZCR_EL1", 7)                                  # VQ 8
    v.fp.write_z(2, pattern(128, 2))
    v.fp.write_p(2, pattern(16, 3))
    v.fp.write_ffr(pattern(16, 4))
    v.sysreg_write("ZCR_EL1", 1)                                  # VQ 2
    assert v.fp.read_z(2) == pattern(128, 2)[:32]
    assert v.fp.read_p(2) == pattern(16, 3)[:4]
    v.exit()
    v.enter()                                                     # across an exit too
    v.sysreg_write("ZCR_EL1", 7)
    assert v.fp.read_z(2) == pattern(128, 2)[:32] + bytes(96)
    assert v.fp.read_p(2) == pattern(16, 3)[:4] + bytes(12)
    assert v.fp.read_ffr() == pattern(16, 4)[:4] + bytes(12)
    v.exit()
    v.put()
    assert v.get_one_reg(Z(2)) == pattern(128, 2)[:32] + bytes(224)


@both
def test_zcr_el1_one_reg_set(backend, policy):
    """ZCR_EL1 is a guest sysreg in KVM's copy: a one-reg write before the
    run sets the guest's VL (restored as ZCR_EL1 after ZCR_EL2, §D1)."""
    vm = make_vm(backend, policy)
    v = vm.vcpus[0]
    v.set_one_reg(ZCR_EL1, 3)
    v.enter()
    assert v.sysreg_read("ZCR_EL1") == 3 and len(v.fp.read_z(0)) == 64
    v.exit()


# ====================================================================== §C reset
@both
@params("sve", [True, False])
def test_reset_zeroes_kvm_copy(backend, policy, sve):
    """kvm_reset_vcpu: kvm_vcpu_reset_sve zeroes the whole sve_state of a
    finalized vCPU, ctxt.fp_regs (V, FPSR, FPCR) are zeroed and ZCR_EL1
    resets to 0 (sve-facts §C Reset) - also when the guest's state was
    still in the registers; VLS and max_vq stay."""
    vm = make_vm(backend, policy, sve=sve, vls=(1, 2, 4) if sve else None)
    v = vm.vcpus[0]
    v.enter()
    v.sysreg_write("FPSR", 0x08000001)
    v.sysreg_write("FPCR", 0x03000000)
    if sve:
        v.sysreg_write("ZCR_EL1", 3)
        v.fp.write_z(0, pattern(64, 1))
        v.fp.write_p(1, pattern(8, 2))
        v.fp.write_ffr(pattern(8, 3))
    else:
        v.fp.write_v(0, pattern(16, 1))
    v.exit()                                   # still loaded: lazy keeps the guest's state live
    vm.fp.reset(0)
    assert v.get_one_reg(FPSR) == 0 and v.get_one_reg(FPCR) == 0
    if sve:
        assert v.get_one_reg(ZCR_EL1) == 0
        assert all(v.get_one_reg(Z(n)) == bytes(256) for n in range(32))
        assert all(v.get_one_reg(P(n)) == bytes(32) for n in range(16))
        assert v.get_one_reg(FFR) == bytes(32)
        assert v.get_one_reg(VLS) == vls_bytes((1, 2, 4)) and v.fp.max_vq == 4
    else:
        assert all(v.get_one_reg(V(n)) == bytes(16) for n in range(32))
    v.enter()
    assert v.sysreg_read("FPSR") == 0 and v.fp.read_v(0) == bytes(16)
    if sve:
        assert v.sysreg_read("ZCR_EL1") == 0
        assert v.fp.read_z(0) == bytes(16) and v.fp.read_p(1) == bytes(2)
    v.exit()
