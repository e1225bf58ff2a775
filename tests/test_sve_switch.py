"""The FPSIMD/SVE context switch (``VM(fp_policy=...)``; docs/sve-facts.md §D
and "Model decisions"), both policies x both backends x SVE/FPSIMD guests
x FPSIMD/SVE host tasks.

(a) kselftest host_sve.c's idea: the host task's FP/SVE state
    (``vcpu.fp.host_task_state()``) is the same before and after any number
    of guest runs, whatever the guest does to its FP/SVE registers.
(b) The policies differ in cost only: random histories (world switch,
    guest register reads and writes, one-reg reads and writes between runs)
    give identical guest-visible values under lazy and eager.  What is
    compared is what the architecture defines: Z/P/FFR bits above the
    guest's effective VL are UNKNOWN after it ran at a smaller VL (§E), so
    one-reg reads are cut at that VL and the history never widens the VL
    from userspace (a one-reg ZCR_EL1 write to a larger LEN is skipped).
(c) The backends are twins: the same history gives identical
    ``vm.state()`` (byte blobs and counts included) on core and pure.
(d) The counts (bytes moved, traps, ZCR writes), derived from the flows of
    vgic/_pure/fpsimd.py (see each test's docstring), which follow §D1.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vgic

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sve_helpers import (
    BACKENDS,
    F_BYTES,
    FFR,
    FPCR,
    FPSR,
    HOST_VQS,
    POLICIES,
    S_BYTES,
    VLS,
    ZCR_EL1,
    P,
    V,
    Z,
    counts,
    delta,
    eff_vq,
    make_vm,
    pattern,
)

params = pytest.mark.parametrize
SETTINGS = settings(max_examples=40, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
HVQ = max(HOST_VQS)

#: (name, sve, vls, host_sve): the guest/host combinations of (a)-(c).
CONFIGS = [
    ("fpsimd-guest/fpsimd-host", False, None, False),
    ("fpsimd-guest/sve-host", False, None, True),
    ("sve-max4/fpsimd-host", True, (1, 2, 4), False),
    ("sve-max8/sve-host", True, None, True),
    ("sve-max4/sve-host", True, (1, 2, 4), True),
]
configs = params("cfg", CONFIGS, ids=[c[0] for c in CONFIGS])


def host_bytes(host_sve: bool) -> int:
    """One save or restore of the host task's state (_pure FpState._host_bytes):
    V0..V31 + FPSR/FPCR for an FPSIMD host, the whole payload at the host's
    VQ + FPSR/FPCR for an SVE one."""
    return S_BYTES(HVQ) if host_sve else F_BYTES


def guest_bytes(sve: bool, max_vq: int) -> int:
    """One save or restore of the guest's state (_guest_bytes): S(max_vq)
    for an SVE vCPU (saved and loaded at its max VL, §D1), F otherwise."""
    return S_BYTES(max_vq) if sve else F_BYTES


# ====================================================================== the driver
NR_VCPUS = 2
vcpu_st = st.integers(0, NR_VCPUS - 1)
seed_st = st.integers(0, 254)
zn_st = st.sampled_from([0, 1, 31])
pn_st = st.sampled_from([0, 15])
sys_val_st = st.one_of(st.integers(0, 15), st.integers(0, (1 << 32) - 1), st.just((1 << 64) - 1))

op_st = st.one_of(
    st.tuples(st.just("enter"), vcpu_st),
    st.tuples(st.just("enter"), vcpu_st),
    st.tuples(st.just("exit"), vcpu_st),
    st.tuples(st.just("exit"), vcpu_st),
    st.tuples(st.just("load"), vcpu_st),
    st.tuples(st.just("put"), vcpu_st),
    st.tuples(st.just("rv"), vcpu_st, zn_st),
    st.tuples(st.just("wv"), vcpu_st, zn_st, seed_st),
    st.tuples(st.just("rz"), vcpu_st, zn_st),
    st.tuples(st.just("wz"), vcpu_st, zn_st, seed_st),
    st.tuples(st.just("rp"), vcpu_st, pn_st),
    st.tuples(st.just("wp"), vcpu_st, pn_st, seed_st),
    st.tuples(st.just("rffr"), vcpu_st),
    st.tuples(st.just("wffr"), vcpu_st, seed_st),
    st.tuples(st.just("rsys"), vcpu_st, st.sampled_from(["FPSR", "FPCR", "ZCR_EL1"])),
    st.tuples(st.just("wsys"), vcpu_st, st.sampled_from(["FPSR", "FPCR", "ZCR_EL1", "ZCR_EL1"]), sys_val_st),
    st.tuples(st.just("get"), vcpu_st, st.integers(0, 9)),
    st.tuples(st.just("set"), vcpu_st, st.integers(0, 9), seed_st),
)
ops_st = st.lists(op_st, min_size=5, max_size=40)


def one_regs(sve: bool) -> list[int]:
    if sve:
        return [Z(0), Z(1), Z(31), P(0), P(15), FFR, FPSR, FPCR, ZCR_EL1, VLS]
    return [V(0), V(1), V(31), FPSR, FPCR]


def _set_value(rid: int, seed: int):
    if rid in (FPSR, FPCR):
        return seed * 0x01010101
    if rid == ZCR_EL1:
        return seed & 0xF
    return pattern(1 << (rid >> 52 & 0xF), seed)


def _vq(v, zlen: int) -> int:
    return eff_vq(zlen, v.fp.max_vq)


def _defined(v, rid: int, value):
    """The architecturally defined part of a one-reg value: for Z/P/FFR of
    an SVE vCPU, the bytes within the guest's effective VL (from KVM's
    ZCR_EL1).  The bytes above it are UNKNOWN once the guest has run at a
    smaller VL (sve-facts §E: narrowing may zero them) and the policies
    legitimately differ there: eager narrows (and the model zeroes) at every
    entry, lazy only once the guest uses its registers."""
    if not isinstance(value, bytes) or rid in (VLS,) or (rid >> 16) & 0xFFF != 0x15:
        return value
    vq = _vq(v, v.get_one_reg(ZCR_EL1))
    return value[:(16 if len(value) == 256 else 2) * vq]


def apply(vm, op, trace: list) -> None:
    """One step; everything the guest or userspace sees goes into ``trace``.
    A step that is not possible in the vCPU's state is skipped (the same in
    every VM, since running/loaded do not depend on the policy)."""
    kind, i = op[0], op[1]
    v = vm.vcpus[i]
    if kind == "enter":
        if not v.running:
            v.enter()
        return
    if kind == "exit":
        if v.running:
            v.exit()
        return
    if kind == "load":
        if not v.running:
            v.load()
        return
    if kind == "put":
        if not v.running:
            v.put()
        return
    if kind in ("get", "set"):
        if v.running:
            return
        ids = one_regs(vm.sve)
        rid = ids[op[2] % len(ids)]
        try:
            if kind == "get":
                trace.append(("get", i, hex(rid), _defined(v, rid, v.get_one_reg(rid))))
            else:
                value = _set_value(rid, op[3])
                if rid == ZCR_EL1 and _vq(v, value) > _vq(v, v.get_one_reg(ZCR_EL1)):
                    trace.append(("set", i, "widen skipped"))
                    return
                v.set_one_reg(rid, value)
                trace.append(("set", i, hex(rid)))
        except vgic.KvmError as e:
            trace.append((kind, i, hex(rid), "errno", e.errno))
        return
    if not v.running:
        return
    fp = v.fp
    try:
        if kind == "rv":
            trace.append((kind, i, op[2], fp.read_v(op[2])))
        elif kind == "wv":
            fp.write_v(op[2], pattern(16, op[3]))
        elif kind == "rz":
            trace.append((kind, i, op[2], fp.read_z(op[2])))
        elif kind == "wz":
            vl = len(fp.read_z(op[2]))          # the guest knows its VL (RDVL)
            trace.append(("vl", i, vl))
            fp.write_z(op[2], pattern(vl, op[3]))
        elif kind == "rp":
            trace.append((kind, i, op[2], fp.read_p(op[2])))
        elif kind == "wp":
            pl = len(fp.read_p(op[2]))
            trace.append(("pl", i, pl))
            fp.write_p(op[2], pattern(pl, op[3]))
        elif kind == "rffr":
            trace.append((kind, i, fp.read_ffr()))
        elif kind == "wffr":
            pl = len(fp.read_ffr())
            fp.write_ffr(pattern(pl, op[2]))
        elif kind == "rsys":
            trace.append((kind, i, op[2], v.sysreg_read(op[2])))
        elif kind == "wsys":
            v.sysreg_write(op[2], op[3])
    except vgic.UndefinedInstruction:
        trace.append((kind, i, "undef"))


def final_readout(vm, trace: list) -> None:
    """Every vCPU exited, its registers read by one-reg while loaded and
    after put (KVM's copy must hold the guest's last values either way)."""
    for v in vm.vcpus:
        if v.running:
            v.exit()
        for phase in ("loaded", "put"):
            if phase == "put":
                v.put()
            for rid in one_regs(vm.sve):
                trace.append((phase, v.id, hex(rid), _defined(v, rid, v.get_one_reg(rid))))


def new_vm(backend, policy, cfg):
    _, sve, vls, host_sve = cfg
    return make_vm(backend, policy, sve=sve, vls=vls, host_sve=host_sve, nr_vcpus=NR_VCPUS)


def host_states(vm) -> list:
    return [v.fp.host_task_state() for v in vm.vcpus]


def run(vm, ops) -> list:
    """The history on ``vm``; (a) on the way: the host task's state never
    changes, at any step."""
    trace: list = []
    host0 = host_states(vm)
    for op in ops:
        apply(vm, op, trace)
        assert host_states(vm) == host0, op
    final_readout(vm, trace)
    assert host_states(vm) == host0
    return trace


# ====================================================================== (a)
@params("backend", BACKENDS)
@params("policy", POLICIES)
@configs
def test_host_state_survives_guest_runs(backend, policy, cfg):
    """host_sve.c (sve-facts §G): the host task's FP/SVE state - live in the
    registers or saved by KVM at vcpu_load / entry - is what it was before
    KVM_RUN, after any number of runs in which the guest rewrites every
    FP/SVE register, FPSR, FPCR and ZCR_EL1 (D1: host state is saved, never
    discarded, and comes back on the return to userspace)."""
    vm = new_vm(backend, policy, cfg)
    _, sve, _, host_sve = cfg
    regs, fpsr, fpcr = host0 = vm.vcpus[0].fp.host_task_state()
    assert len(regs) == (546 * HVQ if host_sve else 512) and any(regs)       # not a vacuous check
    if host_sve:
        assert any(regs[544 * HVQ - 32 * HVQ:546 * HVQ])                     # the host's P/FFR are live
    both0 = host_states(vm)
    for rnd in range(4):
        for v in vm.vcpus:
            v.enter()
            v.sysreg_write("FPSR", 0xF800009F)
            v.sysreg_write("FPCR", 0x07FF9F00)
            for n in range(32):
                v.fp.write_v(n, pattern(16, n + rnd))
            if sve:
                v.sysreg_write("ZCR_EL1", (7, 0, 1, 3)[rnd])
                vl = len(v.fp.read_z(0))
                for n in range(32):
                    v.fp.write_z(n, pattern(vl, n + rnd + 1))
                for n in range(16):
                    v.fp.write_p(n, pattern(vl // 8, n))
                v.fp.write_ffr(pattern(vl // 8, 77))
            v.exit()
            assert host_states(vm) == both0
            if rnd % 2:
                v.enter()          # a run with no FP use
                v.exit()
                v.put()
            assert host_states(vm) == both0
        vm.vcpus[0].get_one_reg(FPSR)
    for v in vm.vcpus:
        v.put()
    assert host_states(vm) == both0
    assert vm.vcpus[0].fp.host_task_state() == host0 == (regs, fpsr, fpcr)


@params("backend", BACKENDS)
@params("policy", POLICIES)
@configs
@SETTINGS
@given(ops=ops_st)
def test_host_state_random_histories(backend, policy, cfg, ops):
    """(a) over random histories: at every step the host task's state is the
    one it had before the first run."""
    run(new_vm(backend, policy, cfg), ops)


# ====================================================================== (b)
@params("backend", BACKENDS)
@configs
@SETTINGS
@given(ops=ops_st)
def test_policies_give_the_same_guest_values(backend, cfg, ops):
    """Lazy (§D1: load at the first use, keep until vcpu_put) and eager (at
    every entry and exit) move the same architectural state at different
    times; the guest (its V/Z/P/FFR/FPSR/FPCR/ZCR_EL1 reads, its VL) and
    userspace (one-reg reads between runs, final KVM copy) see the same."""
    assert run(new_vm(backend, "lazy", cfg), ops) == run(new_vm(backend, "eager", cfg), ops)


# ====================================================================== (c)
@params("policy", POLICIES)
@configs
@SETTINGS
@given(ops=ops_st)
def test_backends_give_the_same_state(policy, cfg, ops):
    """_core/fpsimd.pyx mirrors vgic/_pure/fpsimd.py: the same history gives
    the same trace and the same vm.state() - the byte blobs (KVM's copy, the
    modelled CPU's file, the host's saved state) and the counts included -
    after every step."""
    core, pure = new_vm("core", policy, cfg), new_vm("pure", policy, cfg)
    tc: list = []
    tp: list = []
    assert core.state() == pure.state()
    for op in ops:
        apply(core, op, tc)
        apply(pure, op, tp)
        assert tc == tp
        assert core.state() == pure.state(), op
    final_readout(core, tc)
    final_readout(pure, tp)
    assert tc == tp
    assert core.state() == pure.state()


# ====================================================================== (d) counts
def _use(v, sve: bool, what: str) -> None:
    """One guest FP/SVE access of kind ``what``."""
    if what == "v":
        v.fp.write_v(1, pattern(16, 1))
    elif what == "fpsr":
        v.sysreg_read("FPSR")
    elif what == "z":
        v.fp.read_z(2) if sve else v.fp.read_v(2)
    elif what == "zcr":
        v.sysreg_write("ZCR_EL1", 1) if sve else v.sysreg_write("FPCR", 0)


SVE_CASES = [(False, None), (True, (1,)), (True, (1, 2)), (True, (1, 2, 4)), (True, HOST_VQS)]
sve_cases = params("sve, vls", SVE_CASES, ids=["fpsimd", "sve-vq1", "sve-vq2", "sve-vq4", "sve-vq8"])


@params("backend", BACKENDS)
@params("host_sve", [False, True], ids=["fpsimd-host", "sve-host"])
@sve_cases
def test_lazy_no_fp_use_moves_only_host(backend, host_sve, sve, vls):
    """Lazy, a load..put period without FP/SVE use (§D1; _pure load/put):
    vcpu_load saves the host's state (_host_save: H bytes), the entries and
    exits move nothing and trap nothing (the guest never touches the
    registers), vcpu_put finds the registers free (_guest_save does nothing)
    and restores the host's (_host_restore: H).  H = 520 (V0..V31 + FPSR +
    FPCR) for an FPSIMD host, 546*8 + 8 for the SVE host (VQ 8)."""
    vm = make_vm(backend, "lazy", sve=sve, vls=vls, host_sve=host_sve)
    v = vm.vcpus[0]
    H = host_bytes(host_sve)
    if not host_sve:
        assert H == 520
    b = counts(v)
    v.load()
    assert delta(v, b) == (0, H, 0, 0)
    for _ in range(5):
        v.enter()
        v.exit()
    assert delta(v, b) == (0, H, 0, 0)
    v.put()
    assert delta(v, b) == (0, 2 * H, 0, 0)
    v.enter()                                  # KVM_RUN loads it again
    v.exit()
    v.put()
    assert delta(v, b) == (0, 4 * H, 0, 0)


@params("backend", BACKENDS)
@params("host_sve", [False, True], ids=["fpsimd-host", "sve-host"])
@params("what", ["v", "z", "fpsr", "zcr"])
@sve_cases
def test_lazy_with_use_one_trap(backend, host_sve, what, sve, vls):
    """Lazy, a load..put period with FP/SVE use (§D1; _pure _use): the first
    use traps (traps 1), the host's state is already out (saved at load:
    H), the guest's comes in (_guest_restore: G); further uses, exits and
    entries move nothing (the state stays bound); vcpu_put saves the guest's
    (G) and restores the host's (H).  G = 546*max_vq + 8 (SVE vCPU, at its
    max VL) or 520 (FPSIMD vCPU)."""
    vm = make_vm(backend, "lazy", sve=sve, vls=vls, host_sve=host_sve)
    v = vm.vcpus[0]
    mvq = max(vls) if sve else 1
    G, H = guest_bytes(sve, mvq), host_bytes(host_sve)
    assert G == (546 * mvq + 8 if sve else 520)
    b = counts(v)
    v.enter()
    assert delta(v, b)[:3] == (0, H, 0)
    _use(v, sve, what)
    assert delta(v, b)[:3] == (G, H, 1)
    for _ in range(3):
        _use(v, sve, "v")
        _use(v, sve, "fpsr")
        v.exit()
        v.enter()
        _use(v, sve, what)
    v.exit()
    assert delta(v, b)[:3] == (G, H, 1)
    v.put()
    assert delta(v, b)[:3] == (2 * G, 2 * H, 1)


@params("backend", BACKENDS)
@params("host_sve", [False, True], ids=["fpsimd-host", "sve-host"])
@params("use", [False, True], ids=["idle", "use"])
@sve_cases
def test_eager_moves_everything_every_time(backend, host_sve, use, sve, vls):
    """Eager (_pure enter/exit; the "truly eager" D4 design): every entry
    saves the host's state (H) and loads the guest's (G); every exit saves
    the guest's (G) and restores the host's (H), used or not; no trap (the
    guest owns the registers whenever it runs); load and put move nothing.
    N runs: 2NG guest bytes, 2NH host bytes."""
    vm = make_vm(backend, "eager", sve=sve, vls=vls, host_sve=host_sve)
    v = vm.vcpus[0]
    mvq = max(vls) if sve else 1
    G, H = guest_bytes(sve, mvq), host_bytes(host_sve)
    b = counts(v)
    N = 4
    for k in range(N):
        v.enter()
        assert delta(v, b)[:3] == ((2 * k + 1) * G, (2 * k + 1) * H, 0)
        if use:
            _use(v, sve, "z")
            _use(v, sve, "v")
        v.exit()
        assert delta(v, b)[:3] == (2 * (k + 1) * G, 2 * (k + 1) * H, 0)
        if k % 2:
            v.put()
            v.load()
            assert delta(v, b)[:3] == (2 * (k + 1) * G, 2 * (k + 1) * H, 0)
    assert delta(v, b)[:3] == (2 * N * G, 2 * N * H, 0)


@params("backend", BACKENDS)
@params("policy", POLICIES)
@params("host_sve", [False, True], ids=["fpsimd-host", "sve-host"])
def test_fpsimd_guest_makes_no_zcr_write(backend, policy, host_sve):
    """A non-SVE vCPU: KVM writes ZCR_ELx only for SVE vCPUs (§D1
    fpsimd_lazy_switch_*, __hyp_sve_restore_guest)."""
    vm = make_vm(backend, policy, sve=False, host_sve=host_sve)
    v = vm.vcpus[0]
    for _ in range(3):
        v.enter()
        _use(v, False, "v")
        v.exit()
        v.put()
    assert v.fp.zcr_writes == 0


@params("backend", BACKENDS)
@params("policy", POLICIES)
@params("vls, zlen", [((1, 2, 4), 0), ((1, 2, 4), 3), (HOST_VQS, 0), (HOST_VQS, 7), (HOST_VQS, 15)], ids=str)
def test_zcr_writes_per_restore(backend, policy, vls, zlen):
    """sve_cond_update_zcr_vq (§E): a ZCR write only when LEN changes.  After
    the host's state is back (_host_restore leaves ZCR_EL2.LEN = ZCR_EL1.LEN
    = host max - 1 = 7), each guest restore writes ZCR_EL2 iff max_vq - 1 != 7
    and ZCR_EL1 iff the guest's LEN != 7; the save's ZCR_EL2 = max_vq - 1 is
    already there.  One restore per load..put under lazy, per entry under
    eager."""
    vm = make_vm(backend, policy, vls=vls)
    v = vm.vcpus[0]
    mvq = max(vls)
    v.set_one_reg(ZCR_EL1, zlen)
    per = int(mvq - 1 != HVQ - 1) + int(zlen != HVQ - 1)
    b = v.fp.zcr_writes
    for k in range(3):
        v.enter()
        _use(v, True, "z")
        v.exit()
        v.enter()
        _use(v, True, "v")
        v.exit()
        v.put()
        restores = (k + 1) * (1 if policy == "lazy" else 2)
        assert v.fp.zcr_writes - b == restores * per


@params("backend", BACKENDS)
@params("vls, zlen", [((1, 2, 4), 0), (HOST_VQS, 2)], ids=str)
def test_second_identical_restore_writes_no_zcr(backend, vls, zlen):
    """Lazy: a one-reg access between runs saves the guest-owned state out
    (the vCPU is exited, its registers free, the modelled CPU still holds
    the guest's ZCR values); the next use traps and restores it again - a
    second restore with the same LENs: one more trap, G more guest bytes,
    and no ZCR write (§E: writes are skipped when LEN does not change)."""
    vm = make_vm(backend, "lazy", vls=vls)
    v = vm.vcpus[0]
    G = guest_bytes(True, max(vls))
    v.set_one_reg(ZCR_EL1, zlen)
    v.enter()
    _use(v, True, "z")
    v.exit()
    b = counts(v)
    assert v.get_one_reg(ZCR_EL1) == zlen      # the state saved: G bytes out
    assert delta(v, b) == (G, 0, 0, 0)
    v.enter()
    _use(v, True, "z")
    assert delta(v, b) == (2 * G, 0, 1, 0)
    v.exit()
    v.put()
    assert delta(v, b) == (3 * G, host_bytes(False), 1, 0)


@params("backend", BACKENDS)
@params("policy", POLICIES)
def test_guest_zcr_write_is_not_a_kvm_write(backend, policy):
    """zcr_writes counts KVM's writes (FpView docstring); a guest MSR
    ZCR_EL1 - with the registers already owned - is not one."""
    vm = make_vm(backend, policy)
    v = vm.vcpus[0]
    v.enter()
    _use(v, True, "z")
    b = v.fp.zcr_writes
    v.sysreg_write("ZCR_EL1", 5)
    v.sysreg_write("ZCR_EL1", 2)
    assert v.fp.zcr_writes == b
    v.exit()
