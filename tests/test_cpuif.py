"""The GICv3 virtual CPU interface (vgic.cpuif): the guest's ICC_*_EL1 view
served from the modelled ICH_*_EL2 hardware state, and the hypervisor's
ICH_*_EL2 view.

Expected values come from the Arm GICv3 specification IHI 0069 (§4.8
prioritisation and preemption, §6 virtualisation, §12.3 ICV_* and §12.4
ICH_* register descriptions) and kvm-facts.md §3.4, §4.1, §4.2 and §6 --
never from running the model.  The classes are built directly on a
``VCPU_IF`` record array with a hooks object that records what the
interface hands to the hypervisor.
"""
import numpy as np
import pytest

from vgic import _backend, ich, sysregs
from vgic.cpuif import GuestCpuIf, HypRegs
from vgic.errors import UndefinedInstruction
from vgic.sysregs import encode

# The guest's ICC_*_EL1 rows of the one sysreg table, by name.
SYSREGS = {r.name: r for r in sysregs.TABLE if r.name.startswith("ICC_")}


def resolve(reg):
    """The name of a guest register (UndefinedInstruction for an EL2 one)."""
    row = sysregs.lookup(reg)
    if row.trap == sysregs.EL2:
        raise UndefinedInstruction(reg)
    return row.name


def resolve_ich(reg):
    return sysregs.lookup(reg).name
ALL64 = (1 << 64) - 1
SPURIOUS = 1023


# ----------------------------------------------------------------- helpers
class Hooks:
    """Records every call the CPU interface makes to the hypervisor."""

    def __init__(self):
        self.calls = []

    def sgi(self, name, value):
        self.calls.append(("sgi", name, value))

    def dir_trap(self, intid):
        self.calls.append(("dir_trap", intid))

    def deactivate_physical(self, pintid):
        self.calls.append(("deactivate_physical", pintid))


class Env:
    def __init__(self, nr_lrs=4, pri_bits=5, pre_bits=5, nr_vcpus=2, index=0):
        self.records = np.zeros(nr_vcpus, ich.VCPU_IF)
        self.index = index
        self.hooks = Hooks()
        icv = _backend.icv.Icv(self.records, nr_lrs, pri_bits, pre_bits)
        self.cpu = GuestCpuIf(self.records, index, nr_lrs, pri_bits, pre_bits, self.hooks, icv)
        self.hyp = HypRegs(self.records, index, nr_lrs, pri_bits, pre_bits)

    # guest shorthands
    def r(self, reg):
        return self.cpu.read(reg)

    def w(self, reg, value):
        self.cpu.write(reg, value)

    # hypervisor shorthands
    def lr(self, n):
        return self.hyp.read(f"ICH_LR{n}_EL2")

    def set_lr(self, n, *args, **kw):
        self.hyp.write(f"ICH_LR{n}_EL2", ich.lr_value(*args, **kw))

    def state(self, n):
        return self.lr(n) >> 62

    def eoicount(self):
        return (self.hyp.read("ICH_HCR_EL2") >> 27) & 0x1F

    def enable(self, pmr=0xFF):
        """What a Linux guest does at boot: open the priority mask and
        enable both groups."""
        self.w("ICC_PMR_EL1", pmr)
        self.w("ICC_IGRPEN0_EL1", 1)
        self.w("ICC_IGRPEN1_EL1", 1)


def same_records(a, b):
    """Field-by-field equality (the record has padding bytes, which numpy
    does not promise to copy, so whole-buffer comparisons are unreliable)."""
    return all(np.array_equal(a[f], b[f]) for f in ich.VCPU_IF.names)


@pytest.fixture
def env():
    e = Env()
    e.enable()
    return e


# ----------------------------------------------------------------- sysreg table and encode()
ICC_TABLE = [
    # (name, encoding, access) -- IHI 0069 §12.2 encodings; kvm-facts §3.4, §6
    ("ICC_PMR_EL1", (3, 0, 4, 6, 0), "RW"),
    ("ICC_IAR0_EL1", (3, 0, 12, 8, 0), "RO"),
    ("ICC_EOIR0_EL1", (3, 0, 12, 8, 1), "WO"),
    ("ICC_HPPIR0_EL1", (3, 0, 12, 8, 2), "RO"),
    ("ICC_BPR0_EL1", (3, 0, 12, 8, 3), "RW"),
    ("ICC_AP0R0_EL1", (3, 0, 12, 8, 4), "RW"),
    ("ICC_AP0R1_EL1", (3, 0, 12, 8, 5), "RW"),
    ("ICC_AP0R2_EL1", (3, 0, 12, 8, 6), "RW"),
    ("ICC_AP0R3_EL1", (3, 0, 12, 8, 7), "RW"),
    ("ICC_AP1R0_EL1", (3, 0, 12, 9, 0), "RW"),
    ("ICC_AP1R1_EL1", (3, 0, 12, 9, 1), "RW"),
    ("ICC_AP1R2_EL1", (3, 0, 12, 9, 2), "RW"),
    ("ICC_AP1R3_EL1", (3, 0, 12, 9, 3), "RW"),
    ("ICC_DIR_EL1", (3, 0, 12, 11, 1), "WO"),
    ("ICC_RPR_EL1", (3, 0, 12, 11, 3), "RO"),
    ("ICC_SGI1R_EL1", (3, 0, 12, 11, 5), "WO"),
    ("ICC_ASGI1R_EL1", (3, 0, 12, 11, 6), "WO"),
    ("ICC_SGI0R_EL1", (3, 0, 12, 11, 7), "WO"),
    ("ICC_IAR1_EL1", (3, 0, 12, 12, 0), "RO"),
    ("ICC_EOIR1_EL1", (3, 0, 12, 12, 1), "WO"),
    ("ICC_HPPIR1_EL1", (3, 0, 12, 12, 2), "RO"),
    ("ICC_BPR1_EL1", (3, 0, 12, 12, 3), "RW"),
    ("ICC_CTLR_EL1", (3, 0, 12, 12, 4), "RW"),
    ("ICC_SRE_EL1", (3, 0, 12, 12, 5), "RW"),
    ("ICC_IGRPEN0_EL1", (3, 0, 12, 12, 6), "RW"),
    ("ICC_IGRPEN1_EL1", (3, 0, 12, 12, 7), "RW"),
]


def test_table_is_exactly_the_icc_registers():
    # IHI 0069 §12.2: these 26 encodings are the ICC_*_EL1 registers a
    # non-secure EL1 guest can name (the EL3/EL2 ones are not EL1-accessible).
    assert sorted(SYSREGS) == sorted(name for name, _, _ in ICC_TABLE)


@pytest.mark.parametrize("name, enc, access", ICC_TABLE)
def test_table_entry(name, enc, access):
    # IHI 0069 §12.2 / kvm-facts §3.4 and §6: encoding and access of each register.
    reg = SYSREGS[name]
    assert reg.encoding == enc
    assert reg.access == access
    assert resolve(enc) == name
    assert resolve(name) == name
    assert reg.attr == encode(*enc)


@pytest.mark.parametrize("enc, packed", [
    # kvm-facts §6: packed CPU_SYSREGS attrs KVM documents.
    ((3, 0, 4, 6, 0), 0xC230),      # ICC_PMR_EL1
    ((3, 0, 12, 8, 3), 0xC643),     # ICC_BPR0_EL1
    ((3, 0, 12, 8, 4), 0xC644),     # ICC_AP0R0_EL1
    ((3, 0, 12, 8, 7), 0xC647),     # ICC_AP0R3_EL1
    ((3, 0, 12, 9, 0), 0xC648),     # ICC_AP1R0_EL1
    ((3, 0, 12, 9, 3), 0xC64B),     # ICC_AP1R3_EL1
    ((3, 0, 12, 12, 3), 0xC663),    # ICC_BPR1_EL1
    ((3, 0, 12, 12, 4), 0xC664),    # ICC_CTLR_EL1
    ((3, 0, 12, 12, 5), 0xC665),    # ICC_SRE_EL1
    ((3, 0, 12, 12, 6), 0xC666),    # ICC_IGRPEN0_EL1
    ((3, 0, 12, 12, 7), 0xC667),    # ICC_IGRPEN1_EL1
])
def test_encode(enc, packed):
    assert encode(*enc) == packed


def test_encode_field_limits():
    # kvm-facts §6: Op0 is 2 bits, Op1/Op2 3 bits, CRn/CRm 4 bits.
    assert encode(3, 7, 15, 15, 7) == 0xFFFF
    assert encode(0, 0, 0, 0, 0) == 0
    for bad in [(4, 0, 0, 0, 0), (0, 8, 0, 0, 0), (0, 0, 16, 0, 0), (0, 0, 0, 16, 0), (0, 0, 0, 0, 8),
                (-1, 0, 0, 0, 0)]:
        with pytest.raises(ValueError):
            encode(*bad)


@pytest.mark.parametrize("reg", [
    "ICC_FOO_EL1", "icc_pmr_el1", "ICC_PMR_EL2", "ICC_AP0R4_EL1", "ICC_SRE_EL2", "ICH_LR0_EL2", "",
    (3, 0, 12, 12, 8), (3, 0, 12, 10, 0), (3, 0, 4, 6, 1), (3, 4, 12, 9, 5), (3, 0, 12, 8), (3, 0, 12, 8, 0, 0),
    0xC230, None, [3, 0, 4, 6, 0], ("3", 0, 4, 6, 0),
])
def test_unknown_register_undefined(env, reg):
    # IHI 0069 §12.2: an encoding the CPU interface does not decode UNDEFs.
    with pytest.raises(UndefinedInstruction) as exc:
        resolve(reg)
    assert exc.value.reg == reg
    with pytest.raises(UndefinedInstruction):
        env.cpu.read(reg)
    with pytest.raises(UndefinedInstruction):
        env.cpu.write(reg, 0)


def test_numpy_integers_in_tuple(env):
    assert resolve((np.uint8(3), 0, 4, np.int64(6), 0)) == "ICC_PMR_EL1"
    assert env.r((3, 0, 4, 6, 0)) == 0xF8


# ----------------------------------------------------------------- access rights and value range
@pytest.mark.parametrize("name", [n for n, _, a in ICC_TABLE if a == "WO"])
def test_read_of_write_only_undefined(env, name):
    # IHI 0069 §12.3 (ICV_EOIR0/1, ICV_DIR) and kvm-facts §3.4 (SGI registers): reads UNDEF.
    with pytest.raises(UndefinedInstruction):
        env.r(name)
    with pytest.raises(UndefinedInstruction):
        env.r(SYSREGS[name].encoding)
    assert env.hooks.calls == []


@pytest.mark.parametrize("name", [n for n, _, a in ICC_TABLE if a == "RO"])
def test_write_of_read_only_undefined(env, name):
    # IHI 0069 §12.3 (ICV_IAR0/1, ICV_HPPIR0/1, ICV_RPR): writes UNDEF and change nothing.
    env.set_lr(0, 40, 0x80, pending=True)
    before = env.records.copy()
    with pytest.raises(UndefinedInstruction):
        env.w(name, 0)
    assert same_records(env.records, before)


@pytest.mark.parametrize("value", [-1, 1 << 64, 1 << 70])
def test_value_must_fit_64_bits(env, value):
    # An MSR transfers one X register.
    with pytest.raises(ValueError):
        env.w("ICC_PMR_EL1", value)
    with pytest.raises(ValueError):
        env.hyp.write("ICH_HCR_EL2", value)
    with pytest.raises(ValueError):
        env.hyp.write("ICH_LR0_EL2", value)


def test_value_type(env):
    with pytest.raises(TypeError):
        env.w("ICC_PMR_EL1", 1.0)
    env.w("ICC_PMR_EL1", ALL64)           # the full 64-bit range is accepted
    assert env.r("ICC_PMR_EL1") == 0xF8


# ----------------------------------------------------------------- geometry checks
@pytest.mark.parametrize("nr_lrs, pri_bits, pre_bits", [
    (0, 5, 5), (17, 5, 5), (4, 4, 4), (4, 8, 5), (4, 5, 6), (4, 6, 7), (4, 7, 8)])
def test_bad_geometry(nr_lrs, pri_bits, pre_bits):
    # ICH_VTR_EL2 (§12.4.9): 1..16 LRs, 5..7 priority and preemption bits, PREbits <= PRIbits.
    records = np.zeros(1, ich.VCPU_IF)
    with pytest.raises(ValueError):
        GuestCpuIf(records, 0, nr_lrs, pri_bits, pre_bits, Hooks(), None)
    with pytest.raises(ValueError):
        HypRegs(records, 0, nr_lrs, pri_bits, pre_bits)


def test_bad_records_or_index():
    with pytest.raises(TypeError):
        HypRegs(np.zeros(2, np.uint64), 0, 4, 5, 5)
    with pytest.raises(ValueError):
        HypRegs(np.zeros(2, ich.VCPU_IF), 2, 4, 5, 5)


def test_acts_only_on_its_own_hardware_record():
    # ich.py: the ich_* fields are the modelled hardware; vgic_* is KVM's saved
    # copy, which the CPU interface never touches; other vCPUs are untouched.
    e = Env(nr_vcpus=3, index=1)
    e.enable()
    e.set_lr(0, 44, 0x40, pending=True)
    assert e.r("ICC_IAR1_EL1") == 44
    e.w("ICC_EOIR1_EL1", 44)
    e.w("ICC_BPR0_EL1", 4)
    e.hyp.write("ICH_HCR_EL2", ich.HCR_EN)
    zero = np.zeros(1, ich.VCPU_IF)[0]
    for field in ("vgic_lr", "vgic_hcr", "vgic_vmcr", "vgic_ap0r", "vgic_ap1r", "used_lrs"):
        assert np.all(e.records[field] == zero[field]), field
    for other in (0, 2):
        assert same_records(e.records[other:other + 1], np.zeros(1, ich.VCPU_IF))
    assert e.records["ich_vmcr"][1] != 0
    assert e.records["ich_hcr"][1] == ich.HCR_EN


# ----------------------------------------------------------------- PMR
def test_pmr_reset_and_implemented_bits():
    # ICV_PMR_EL1 (§12.3) is ICH_VMCR_EL2.VPMR (§12.4.8, [31:24]); reset VMCR is 0
    # (kvm-facts §4.2); priority bits below the top PRIbits are RAZ/WI (§4.8).
    for pri_bits, expect in [(5, 0xF8), (6, 0xFC), (7, 0xFE)]:
        e = Env(pri_bits=pri_bits, pre_bits=5)
        assert e.r("ICC_PMR_EL1") == 0
        e.w("ICC_PMR_EL1", 0xFF)
        assert e.r("ICC_PMR_EL1") == expect
        assert e.hyp.read("ICH_VMCR_EL2") == expect << 24
    e = Env()
    e.w("ICC_PMR_EL1", 0x1_0000_00A5)     # [63:8] RES0
    assert e.r("ICC_PMR_EL1") == 0xA0


def test_pmr_write_preserves_other_vmcr_fields():
    e = Env()
    e.hyp.write("ICH_VMCR_EL2", ich.VMCR_ENG1 | ich.VMCR_EOIM | (5 << 21) | (6 << 18))
    e.w("ICC_PMR_EL1", 0x80)
    assert e.hyp.read("ICH_VMCR_EL2") == ich.VMCR_ENG1 | ich.VMCR_EOIM | (5 << 21) | (6 << 18) | (0x80 << 24)


def test_pmr_masks_acknowledge(env):
    # ICV_IAR1_EL1 (§12.3): only an interrupt with priority higher (lower value)
    # than VPMR is acknowledged; HPPIR does not apply the mask.
    env.set_lr(0, 50, 0x80, pending=True)
    env.w("ICC_PMR_EL1", 0x80)
    assert env.r("ICC_IAR1_EL1") == SPURIOUS
    assert env.state(0) == 0b01
    assert env.r("ICC_HPPIR1_EL1") == 50
    env.w("ICC_PMR_EL1", 0x88)
    assert env.r("ICC_IAR1_EL1") == 50
    assert env.state(0) == 0b10


def test_pmr_zero_masks_everything(env):
    env.set_lr(0, 51, 0x00, pending=True)
    env.w("ICC_PMR_EL1", 0)
    assert env.r("ICC_IAR1_EL1") == SPURIOUS
    assert env.r("ICC_IAR0_EL1") == SPURIOUS


def test_pmr_compares_only_significant_priority_bits(env):
    # §4.8: with 5 priority bits, priority 0x87 behaves as 0x80.  A hypervisor
    # writing 0x87 into an LR directly (bypassing ICH_LR masking) is covered too.
    env.records["ich_lr"][0][0] = ich.lr_value(52, 0x87, pending=True)
    env.w("ICC_PMR_EL1", 0x80)
    assert env.r("ICC_IAR1_EL1") == SPURIOUS
    env.w("ICC_PMR_EL1", 0x88)
    assert env.r("ICC_IAR1_EL1") == 52


def test_pmr_unimplemented_vpmr_bits_from_hypervisor():
    # Choice (documented in cpuif): VPMR bits below PRIbits are ignored, so a
    # hypervisor VPMR of 0xF9 with 5 priority bits masks like 0xF8.
    e = Env()
    e.hyp.write("ICH_VMCR_EL2", (0xF9 << 24) | ich.VMCR_ENG1)
    assert e.r("ICC_PMR_EL1") == 0xF8
    e.set_lr(0, 53, 0xF8, pending=True)
    assert e.r("ICC_IAR1_EL1") == SPURIOUS
    e.set_lr(0, 53, 0xF0, pending=True)
    assert e.r("ICC_IAR1_EL1") == 53


# ----------------------------------------------------------------- acknowledge order
def test_acknowledge_32_levels_in_priority_order():
    # §4.8 / ICV_IAR1_EL1 (§12.3): with 5 priority bits there are 32 levels
    # 0x00, 0x08, ..., 0xF8; each IAR returns the highest priority pending
    # interrupt, and RPR follows the acknowledged priority until the EOI.
    # ICV_PMR_EL1 (§12.3) has the same 5 bits, so the most open mask is 0xF8
    # and the lowest level 0xF8 is never higher than the mask: it stays
    # pending (HPPIR still reports it) -- 31 levels are acknowledged.
    e = Env(nr_lrs=16, pri_bits=5, pre_bits=5)
    e.enable()
    assert e.r("ICC_PMR_EL1") == 0xF8
    levels = list(range(0, 256, 8))
    assert len(levels) == 32
    acked = []
    for batch in (levels[16:], levels[:16]):          # low-priority half first
        order = batch[::2] + batch[1::2][::-1]         # LRs not in priority order
        for n, prio in enumerate(order):
            e.set_lr(n, 100 + prio // 8, prio, pending=True)
        for prio in sorted(batch):
            if prio == 0xF8:
                assert e.r("ICC_HPPIR1_EL1") == 100 + 31
                assert e.r("ICC_IAR1_EL1") == SPURIOUS
                assert e.state(order.index(0xF8)) == 0b01
                continue
            intid = e.r("ICC_IAR1_EL1")
            assert intid == 100 + prio // 8
            assert e.r("ICC_RPR_EL1") == prio
            assert e.hyp.read("ICH_AP1R0_EL2") == 1 << (prio >> 3)
            acked.append(prio)
            e.w("ICC_EOIR1_EL1", intid)
            assert e.r("ICC_RPR_EL1") == 0xFF
        assert e.r("ICC_IAR1_EL1") == SPURIOUS
        assert all(e.state(n) == 0 for n in range(16) if order[n] != 0xF8)
        e.hyp.write(f"ICH_LR{order.index(0xF8)}_EL2", 0) if 0xF8 in order else None
    assert acked == sorted(levels[16:])[:-1] + sorted(levels[:16])
    assert e.hyp.read("ICH_AP1R0_EL2") == 0 and e.hyp.read("ICH_AP0R0_EL2") == 0
    assert e.eoicount() == 0


def test_tie_goes_to_lowest_lr(env):
    # Equal (significant) priorities: choice -- the lowest LR index wins.
    env.set_lr(0, 60, 0x47, pending=True)     # 0x47 & 0xF8 == 0x40
    env.set_lr(1, 61, 0x40, pending=True)
    env.set_lr(2, 62, 0x40, pending=True)
    assert env.lr(0) >> 48 & 0xFF == 0x40     # ICH_LR write drops unimplemented bits
    env.records["ich_lr"][0][0] = ich.lr_value(60, 0x47, pending=True)
    assert env.r("ICC_HPPIR1_EL1") == 60
    assert env.r("ICC_IAR1_EL1") == 60


def test_tie_with_seven_priority_bits():
    e = Env(pri_bits=7, pre_bits=7)
    e.enable()
    e.records["ich_lr"][0][0] = ich.lr_value(70, 0x43, pending=True)   # significant 0x42
    e.set_lr(1, 71, 0x40, pending=True)
    assert e.r("ICC_HPPIR1_EL1") == 71
    e.records["ich_lr"][0][1] = ich.lr_value(71, 0x42, pending=True)
    assert e.r("ICC_HPPIR1_EL1") == 70


def test_only_pending_state_is_a_candidate(env):
    # §6 / ICH_LR<n>_EL2.State (§12.4.6): only State 01 is signalled; an
    # active, pending+active or invalid LR is not the HPPI.
    env.set_lr(0, 80, 0x00, pending=True, active=True)
    env.set_lr(1, 81, 0x00, active=True)
    env.set_lr(2, 82, 0x00)
    env.set_lr(3, 83, 0xF0, pending=True)
    assert env.r("ICC_HPPIR1_EL1") == 83


def test_lrs_beyond_nr_lrs_are_not_considered():
    # ICH_VTR_EL2.ListRegs (§12.4.9): only LRs 0..nr_lrs-1 exist.
    e = Env(nr_lrs=2)
    e.enable()
    e.records["ich_lr"][0][2] = ich.lr_value(90, 0x00, pending=True)
    assert e.r("ICC_HPPIR1_EL1") == SPURIOUS
    assert e.r("ICC_IAR1_EL1") == SPURIOUS
    e.records["ich_lr"][0][2] = ich.lr_value(90, 0x00, active=True)
    e.w("ICC_AP1R0_EL1", 1)
    e.w("ICC_EOIR1_EL1", 90)                  # not found in the 2 LRs -> counted
    assert e.eoicount() == 1
    assert e.records["ich_lr"][0][2] >> 62 == 0b10


def test_disabled_group_is_not_signalled(env):
    # ICV_IGRPEN0/1_EL1 (§12.3): an interrupt of a disabled group is not the HPPI.
    env.set_lr(0, 91, 0x10, group=1, pending=True)
    env.set_lr(1, 92, 0x40, group=0, pending=True)
    env.w("ICC_IGRPEN1_EL1", 0)
    assert env.r("ICC_HPPIR1_EL1") == SPURIOUS
    assert env.r("ICC_IAR1_EL1") == SPURIOUS
    assert env.r("ICC_HPPIR0_EL1") == 92
    env.w("ICC_IGRPEN0_EL1", 0)
    assert env.r("ICC_HPPIR0_EL1") == SPURIOUS
    assert env.r("ICC_IAR0_EL1") == SPURIOUS
    env.w("ICC_IGRPEN1_EL1", 1)
    assert env.r("ICC_IAR1_EL1") == 91


def test_iar_of_other_group_returns_spurious(env):
    # ICV_IAR1_EL1 (§12.3): when the HPPI is Group 0, IAR1 returns 1023 even if
    # a lower-priority Group 1 interrupt is pending; HPPIR1 likewise.
    env.set_lr(0, 93, 0x10, group=0, pending=True)
    env.set_lr(1, 94, 0x20, group=1, pending=True)
    assert env.r("ICC_IAR1_EL1") == SPURIOUS
    assert env.r("ICC_HPPIR1_EL1") == SPURIOUS
    assert env.r("ICC_HPPIR0_EL1") == 93
    assert env.state(1) == 0b01
    assert env.r("ICC_IAR0_EL1") == 93
    assert env.hyp.read("ICH_AP0R0_EL2") == 1 << 2          # 0x10 >> 3
    assert env.hyp.read("ICH_AP1R0_EL2") == 0
    assert env.r("ICC_IAR1_EL1") == SPURIOUS                # 0x20 does not preempt 0x10


def test_hppir_ignores_running_priority(env):
    # ICV_HPPIR1_EL1 (§12.3): reports the HPPI whatever the running priority.
    env.set_lr(0, 95, 0x10, pending=True)
    assert env.r("ICC_IAR1_EL1") == 95
    env.set_lr(1, 96, 0x80, pending=True)
    assert env.r("ICC_IAR1_EL1") == SPURIOUS
    assert env.r("ICC_HPPIR1_EL1") == 96
    assert env.r("ICC_HPPIR0_EL1") == SPURIOUS


def test_empty_interface(env):
    assert env.r("ICC_IAR0_EL1") == SPURIOUS
    assert env.r("ICC_IAR1_EL1") == SPURIOUS
    assert env.r("ICC_HPPIR0_EL1") == SPURIOUS
    assert env.r("ICC_HPPIR1_EL1") == SPURIOUS
    assert env.r("ICC_RPR_EL1") == 0xFF


def test_acknowledge_returns_24_bit_intid(env):
    # ICV_IAR1_EL1.INTID is [23:0] (§12.3).
    env.set_lr(0, 0x2345, 0x10, pending=True)
    assert env.r("ICC_IAR1_EL1") == 0x2345


# ----------------------------------------------------------------- preemption
def test_nested_preemption_and_apr_cleanup():
    # §4.8 "Preemption": each more urgent interrupt preempts the running one;
    # APRs record every level; EOIs in reverse order drop them one by one and
    # leave the APRs at 0 and the running priority idle.
    e = Env(nr_lrs=16)
    e.enable()
    prios = [0x78 - 8 * k for k in range(16)]          # 0x78, 0x70, ..., 0x00
    for k, prio in enumerate(prios):
        e.set_lr(k, 200 + k, prio, pending=True)
        assert e.r("ICC_IAR1_EL1") == 200 + k
        assert e.r("ICC_RPR_EL1") == prio
    assert e.r("ICC_AP1R0_EL1") == 0xFFFF
    for k in reversed(range(16)):
        e.w("ICC_EOIR1_EL1", 200 + k)
        assert e.state(k) == 0
        assert e.r("ICC_RPR_EL1") == (prios[k - 1] if k else 0xFF)
    assert e.r("ICC_AP1R0_EL1") == 0
    assert e.r("ICC_AP0R0_EL1") == 0
    assert e.r("ICC_RPR_EL1") == 0xFF
    assert e.eoicount() == 0


def test_preemption_needs_strictly_higher_group_priority(env):
    # §4.8: a pending interrupt preempts only if its group priority is higher
    # (numerically lower) than the running priority.
    env.set_lr(0, 300, 0x40, pending=True)
    assert env.r("ICC_IAR1_EL1") == 300
    env.set_lr(1, 301, 0x40, pending=True)
    assert env.r("ICC_IAR1_EL1") == SPURIOUS
    env.set_lr(1, 301, 0x48, pending=True)
    assert env.r("ICC_IAR1_EL1") == SPURIOUS
    env.set_lr(1, 301, 0x38, pending=True)
    assert env.r("ICC_IAR1_EL1") == 301
    assert env.r("ICC_AP1R0_EL1") == (1 << 8) | (1 << 7)


def test_group0_and_group1_share_the_running_priority(env):
    # §4.8: running priority is the highest active priority over both groups.
    env.set_lr(0, 310, 0x40, group=0, pending=True)
    env.set_lr(1, 311, 0x20, group=1, pending=True)
    assert env.r("ICC_IAR0_EL1") == SPURIOUS     # HPPI is group 1
    assert env.r("ICC_IAR1_EL1") == 311
    assert env.r("ICC_RPR_EL1") == 0x20
    assert env.r("ICC_IAR0_EL1") == SPURIOUS     # 0x40 cannot preempt 0x20
    env.w("ICC_EOIR1_EL1", 311)
    assert env.r("ICC_IAR0_EL1") == 310
    assert env.r("ICC_RPR_EL1") == 0x40
    env.set_lr(1, 312, 0x08, group=1, pending=True)
    assert env.r("ICC_IAR1_EL1") == 312            # group 1 preempts group 0
    assert env.r("ICC_AP0R0_EL1") == 1 << 8
    assert env.r("ICC_AP1R0_EL1") == 1 << 1
    assert env.r("ICC_RPR_EL1") == 0x08
    env.w("ICC_EOIR1_EL1", 312)
    env.w("ICC_EOIR0_EL1", 310)
    assert env.r("ICC_AP0R0_EL1") == 0 and env.r("ICC_AP1R0_EL1") == 0
    assert env.r("ICC_RPR_EL1") == 0xFF


def test_bpr0_groups_priorities(env):
    # §4.8 "Priority grouping" / ICV_BPR0_EL1 (§12.3): BPR0 = 4 -> the group
    # priority is bits [7:5].  0x30 runs at group priority 0x20 (APR bit 4);
    # 0x20 (group priority 0x20) does not preempt, 0x18 (0x00) does.
    env.w("ICC_BPR0_EL1", 4)
    env.set_lr(0, 400, 0x30, group=0, pending=True)
    assert env.r("ICC_IAR0_EL1") == 400
    assert env.r("ICC_RPR_EL1") == 0x20
    assert env.r("ICC_AP0R0_EL1") == 1 << 4
    env.set_lr(1, 401, 0x20, group=0, pending=True)
    assert env.r("ICC_IAR0_EL1") == SPURIOUS
    env.set_lr(1, 401, 0x18, group=0, pending=True)
    assert env.r("ICC_IAR0_EL1") == 401
    assert env.r("ICC_AP0R0_EL1") == (1 << 4) | (1 << 0)
    env.w("ICC_EOIR0_EL1", 401)
    env.w("ICC_EOIR0_EL1", 400)
    assert env.r("ICC_AP0R0_EL1") == 0
    assert env.state(0) == 0 and env.state(1) == 0


def test_bpr1_groups_priorities_without_cbpr(env):
    # ICV_BPR1_EL1 (§12.3): with VCBPR=0 the Group 1 group priority is bits
    # [7:VBPR1]; VBPR1 = 4 -> [7:4]: 0x30 runs at 0x30, 0x28 (-> 0x20) preempts.
    env.w("ICC_BPR1_EL1", 4)
    env.w("ICC_BPR0_EL1", 7)          # no effect on Group 1 while VCBPR=0
    env.set_lr(0, 410, 0x30, pending=True)
    assert env.r("ICC_IAR1_EL1") == 410
    assert env.r("ICC_RPR_EL1") == 0x30
    env.set_lr(1, 411, 0x28, pending=True)
    assert env.r("ICC_IAR1_EL1") == 411
    assert env.r("ICC_RPR_EL1") == 0x20


def test_cbpr_makes_group1_use_bpr0(env):
    # ICV_CTLR_EL1.CBPR (§12.3): Group 1 uses BPR0 for preemption.  BPR0 = 4 ->
    # [7:5]: 0x30 runs at 0x20 and 0x28 (-> 0x20) no longer preempts.
    env.w("ICC_BPR1_EL1", 4)
    env.w("ICC_BPR0_EL1", 4)
    env.w("ICC_CTLR_EL1", 1)
    env.set_lr(0, 420, 0x30, pending=True)
    assert env.r("ICC_IAR1_EL1") == 420
    assert env.r("ICC_RPR_EL1") == 0x20
    assert env.r("ICC_AP1R0_EL1") == 1 << 4
    env.set_lr(1, 421, 0x28, pending=True)
    assert env.r("ICC_IAR1_EL1") == SPURIOUS
    env.set_lr(1, 421, 0x18, pending=True)
    assert env.r("ICC_IAR1_EL1") == 421


def test_fewer_preemption_than_priority_bits():
    # §4.8: with 7 priority bits but 5 preemption bits, 0x42 and 0x44 are
    # distinct priorities (0x42 is signalled first) but the same preemption
    # level 0x40, so 0x42 cannot preempt an active 0x44.
    e = Env(pri_bits=7, pre_bits=5)
    e.enable()
    assert e.r("ICC_BPR0_EL1") == 2
    e.set_lr(0, 430, 0x44, pending=True)
    e.set_lr(1, 431, 0x42, pending=True)
    assert e.r("ICC_HPPIR1_EL1") == 431
    e.set_lr(1, 431, 0x42)                       # not pending yet
    assert e.r("ICC_IAR1_EL1") == 430
    assert e.r("ICC_RPR_EL1") == 0x40
    e.set_lr(1, 431, 0x42, pending=True)
    assert e.r("ICC_IAR1_EL1") == SPURIOUS


@pytest.mark.parametrize("pri_bits, pre_bits, prio, reg, bit", [
    # ICH_AP1R<n>_EL2 (§12.4.2): bit index = group priority >> (8 - PREbits),
    # 32 bits per register.  The lowest level (0xF8/0xFC/0xFE) is never above
    # the most open PMR, so the lowest acknowledgeable one is one step up.
    (5, 5, 0xF0, 0, 30),
    (6, 6, 0xF8, 1, 30),
    (6, 6, 0x80, 1, 0),
    (7, 7, 0xFC, 3, 30),
    (7, 7, 0x82, 2, 1),
])
def test_apr_bit_for_lowest_priorities(pri_bits, pre_bits, prio, reg, bit):
    e = Env(pri_bits=pri_bits, pre_bits=pre_bits)
    e.enable()
    e.set_lr(0, 440, prio, pending=True)
    assert e.r("ICC_IAR1_EL1") == 440
    assert e.r(f"ICC_AP1R{reg}_EL1") == 1 << bit
    assert e.r("ICC_RPR_EL1") == prio
    e.w("ICC_EOIR1_EL1", 440)
    assert all(e.hyp.read(f"ICH_AP1R{n}_EL2") == 0 for n in range(ich.nr_aprs(pre_bits)))
    assert e.r("ICC_RPR_EL1") == 0xFF


def test_running_priority_from_hypervisor_aprs():
    # ICV_RPR_EL1 (§12.3): the lowest set bit across both groups' APRs.
    e = Env(pri_bits=7, pre_bits=7)
    e.hyp.write("ICH_AP0R3_EL2", 1 << 5)      # index 101 -> 0xCA
    assert e.r("ICC_RPR_EL1") == 101 << 1
    e.hyp.write("ICH_AP1R1_EL2", 1 << 2)      # index 34 -> 0x44
    assert e.r("ICC_RPR_EL1") == 0x44
    e.hyp.write("ICH_AP0R0_EL2", 1 << 31)     # index 31 -> 0x3E
    assert e.r("ICC_RPR_EL1") == 0x3E


# ----------------------------------------------------------------- EOI and deactivation
def test_eoi_mode0_deactivates_and_drops(env):
    # ICV_EOIR1_EL1 (§12.3), EOImode 0: priority drop and deactivation.
    env.set_lr(0, 500, 0x50, pending=True)
    assert env.r("ICC_IAR1_EL1") == 500
    assert env.state(0) == 0b10
    env.w("ICC_EOIR1_EL1", 500)
    assert env.state(0) == 0
    assert env.r("ICC_AP1R0_EL1") == 0
    assert env.eoicount() == 0
    assert env.hooks.calls == []


def test_eoi_intid_field_is_24_bits(env):
    env.set_lr(0, 501, 0x50, pending=True)
    env.r("ICC_IAR1_EL1")
    env.w("ICC_EOIR1_EL1", (0xAB << 24) | 501)     # bits [63:24] RES0
    assert env.state(0) == 0


def test_eoi_pending_and_active_becomes_pending(env):
    # ICH_LR<n>_EL2.State (§12.4.6): deactivating 11 leaves 01, which is then
    # signalled again.
    env.set_lr(0, 502, 0x50, pending=True)
    assert env.r("ICC_IAR1_EL1") == 502
    env.set_lr(0, 502, 0x50, pending=True, active=True)   # re-asserted while active
    assert env.r("ICC_IAR1_EL1") == SPURIOUS
    env.w("ICC_EOIR1_EL1", 502)
    assert env.state(0) == 0b01
    assert env.r("ICC_IAR1_EL1") == 502


@pytest.mark.parametrize("intid", [1020, 1021, 1022, 1023])
def test_eoi_special_intids_ignored(env, intid):
    # §2.2.1: INTIDs 1020..1023 are special; an EOI of one has no effect.
    env.set_lr(0, 503, 0x50, pending=True)
    env.r("ICC_IAR1_EL1")
    env.w("ICC_EOIR1_EL1", intid)
    env.w("ICC_EOIR0_EL1", intid)
    assert env.r("ICC_AP1R0_EL1") == 1 << 10
    assert env.state(0) == 0b10
    assert env.eoicount() == 0


def test_eoi_group_must_match_highest_active(env):
    # ICV_EOIR0_EL1 (§12.3): the priority drop applies only if the highest
    # active priority belongs to the register's group.  Here it is Group 1,
    # so EOIR0 drops nothing.  Choice (brief): the Group 0 LR is still
    # deactivated (EOImode 0), and since nothing was dropped nothing is counted.
    env.set_lr(0, 504, 0x60, group=0, pending=True)
    assert env.r("ICC_IAR0_EL1") == 504
    env.set_lr(1, 505, 0x20, group=1, pending=True)
    assert env.r("ICC_IAR1_EL1") == 505
    env.w("ICC_EOIR0_EL1", 504)
    assert env.r("ICC_AP0R0_EL1") == 1 << 12
    assert env.r("ICC_AP1R0_EL1") == 1 << 4
    assert env.state(0) == 0
    assert env.eoicount() == 0


def test_eoi_of_other_groups_lr_does_not_deactivate(env):
    # Choice: EOIR0 naming an interrupt active in a Group 1 LR drops the Group 0
    # priority but neither deactivates the Group 1 LR nor counts (it is in the LRs).
    env.set_lr(0, 506, 0x60, group=1, active=True)
    env.w("ICC_AP0R0_EL1", 1 << 12)
    env.w("ICC_EOIR0_EL1", 506)
    assert env.r("ICC_AP0R0_EL1") == 0
    assert env.state(0) == 0b10
    assert env.eoicount() == 0


def test_eoicount_for_eoi_not_in_lrs(env):
    # ICH_HCR_EL2.EOIcount (§12.4.5; kvm-facts §4.5): an EOImode 0 EOI that
    # drops a priority for an INTID no LR holds active is counted for the
    # hypervisor to replay.
    env.set_lr(0, 510, 0x50, pending=True)
    assert env.r("ICC_IAR1_EL1") == 510
    env.hyp.write("ICH_LR0_EL2", 0)                  # KVM moved it out of the LRs
    env.w("ICC_EOIR1_EL1", 510)
    assert env.eoicount() == 1
    assert env.r("ICC_AP1R0_EL1") == 0
    env.w("ICC_AP1R0_EL1", 1)
    env.w("ICC_EOIR1_EL1", 511)
    assert env.eoicount() == 2


def test_eoicount_wraps_and_preserves_hcr(env):
    # ICH_HCR_EL2.EOIcount is 5 bits [31:27] (§12.4.5).
    env.hyp.write("ICH_HCR_EL2", ich.HCR_EN | ich.HCR_LRENPIE | (31 << 27))
    env.w("ICC_AP1R0_EL1", 1)
    env.w("ICC_EOIR1_EL1", 512)
    assert env.hyp.read("ICH_HCR_EL2") == ich.HCR_EN | ich.HCR_LRENPIE
    env.w("ICC_AP1R0_EL1", 1)
    env.w("ICC_EOIR1_EL1", 512)
    assert env.hyp.read("ICH_HCR_EL2") == ich.HCR_EN | ich.HCR_LRENPIE | (1 << 27)


def test_eoicount_not_for_eoi_without_drop(env):
    # §12.4.5: EOIs that do not clear an active-priority bit are not counted.
    env.w("ICC_EOIR1_EL1", 513)
    assert env.eoicount() == 0
    env.w("ICC_AP0R0_EL1", 1)                        # highest active is Group 0
    env.w("ICC_EOIR1_EL1", 513)
    assert env.eoicount() == 0
    assert env.r("ICC_AP0R0_EL1") == 1


def test_eoicount_not_for_lpis(env):
    # §12.4.5: an EOI of an LPI not in the LRs is not counted.
    env.w("ICC_AP1R0_EL1", 1)
    env.w("ICC_EOIR1_EL1", 8192)
    assert env.r("ICC_AP1R0_EL1") == 0
    assert env.eoicount() == 0


def test_eoimode1_then_dir(env):
    # ICV_CTLR_EL1.EOImode = 1 (§12.3): EOIR only drops the priority; the
    # interrupt stays active until ICV_DIR_EL1 deactivates it.
    env.w("ICC_CTLR_EL1", 2)
    assert env.hyp.read("ICH_VMCR_EL2") & ich.VMCR_EOIM
    env.set_lr(0, 520, 0x50, pending=True)
    assert env.r("ICC_IAR1_EL1") == 520
    env.w("ICC_EOIR1_EL1", 520)
    assert env.r("ICC_AP1R0_EL1") == 0
    assert env.r("ICC_RPR_EL1") == 0xFF
    assert env.state(0) == 0b10
    assert env.eoicount() == 0                       # no deactivation, no count
    env.w("ICC_DIR_EL1", 520)
    assert env.state(0) == 0
    assert env.eoicount() == 0
    assert env.hooks.calls == []


def test_dir_ignores_group(env):
    # ICV_DIR_EL1 (§12.3) deactivates an interrupt of either group.
    env.w("ICC_CTLR_EL1", 2)
    env.set_lr(0, 521, 0x50, group=0, active=True)
    env.w("ICC_DIR_EL1", 521)
    assert env.state(0) == 0


def test_dir_with_eoimode0_ignored(env):
    # ICV_DIR_EL1 (§12.3): with EOImode 0 a DIR write has no effect.
    env.set_lr(0, 522, 0x50, pending=True)
    env.r("ICC_IAR1_EL1")
    env.w("ICC_DIR_EL1", 522)
    assert env.state(0) == 0b10
    env.w("ICC_DIR_EL1", 999)
    assert env.eoicount() == 0


def test_dir_not_in_lrs_counts(env):
    # ICH_HCR_EL2.EOIcount (§12.4.5): a DIR of an INTID not in the LRs counts.
    env.w("ICC_CTLR_EL1", 2)
    env.w("ICC_DIR_EL1", 530)
    assert env.eoicount() == 1
    env.w("ICC_DIR_EL1", 1023)                       # special: ignored
    env.w("ICC_DIR_EL1", 8200)                       # LPI: ignored
    assert env.eoicount() == 1


def test_lpi_eoi_deactivates_even_in_eoimode1(env):
    # §12.3 ICV_EOIR1_EL1: LPIs have no separate deactivation, so an EOI of a
    # vLPI deactivates it whatever EOImode; a DIR of an LPI does nothing.
    env.w("ICC_CTLR_EL1", 2)
    env.set_lr(0, 8192, 0xA0, pending=True)
    assert env.r("ICC_IAR1_EL1") == 8192
    env.w("ICC_DIR_EL1", 8192)
    assert env.state(0) == 0b10
    env.w("ICC_EOIR1_EL1", 8192)
    assert env.state(0) == 0
    assert env.r("ICC_RPR_EL1") == 0xFF


def test_tdir_traps_dir(env):
    # ICH_HCR_EL2.TDIR (§12.4.5; kvm-facts §4.5): DIR traps to EL2 and the
    # interface itself does nothing -- in either EOImode.
    env.hyp.write("ICH_HCR_EL2", ich.HCR_EN | ich.HCR_TDIR)
    env.w("ICC_CTLR_EL1", 2)
    env.set_lr(0, 540, 0x50, pending=True)
    env.r("ICC_IAR1_EL1")
    env.w("ICC_EOIR1_EL1", 540)
    env.w("ICC_DIR_EL1", (1 << 40) | 540)
    assert env.hooks.calls == [("dir_trap", 540)]
    assert env.state(0) == 0b10
    env.w("ICC_DIR_EL1", 541)
    env.w("ICC_CTLR_EL1", 0)
    env.w("ICC_DIR_EL1", 1023)
    assert env.hooks.calls == [("dir_trap", 540), ("dir_trap", 541), ("dir_trap", 1023)]
    assert env.eoicount() == 0


def test_hw_lr_deactivation_deactivates_physical(env):
    # ICH_LR<n>_EL2.HW (§12.4.6; §6 hardware interrupts): deactivating an LR
    # with HW=1 deactivates its pINTID on the physical interface.
    env.set_lr(0, 27, 0x40, pending=True, hw=True, pintid=30)
    env.set_lr(1, 28, 0x48, pending=True)
    assert env.r("ICC_IAR1_EL1") == 27
    env.w("ICC_EOIR1_EL1", 27)
    assert env.hooks.calls == [("deactivate_physical", 30)]
    assert env.state(0) == 0
    assert env.r("ICC_IAR1_EL1") == 28
    env.w("ICC_EOIR1_EL1", 28)                        # HW=0: no physical deactivation
    assert env.hooks.calls == [("deactivate_physical", 30)]


def test_hw_lr_eoimode1_dir(env):
    env.w("ICC_CTLR_EL1", 2)
    env.set_lr(2, 26, 0x40, pending=True, hw=True, pintid=0x3FF - 2)
    assert env.r("ICC_IAR1_EL1") == 26
    env.w("ICC_EOIR1_EL1", 26)
    assert env.hooks.calls == []
    env.w("ICC_DIR_EL1", 26)
    assert env.hooks.calls == [("deactivate_physical", 0x3FD)]
    assert env.state(2) == 0


# ----------------------------------------------------------------- BPR, CTLR, IGRPEN, SRE, APRs
@pytest.mark.parametrize("pri_bits, pre_bits, min0", [(5, 5, 2), (6, 6, 1), (7, 7, 0), (7, 5, 2), (7, 6, 1)])
def test_bpr_minimums(pri_bits, pre_bits, min0):
    # ICV_BPR0_EL1 minimum is 7 - PREbits; ICV_BPR1_EL1 minimum is one more
    # (§12.3).  Choice: a stored value below the minimum (the reset VMCR of 0)
    # reads as the minimum.
    e = Env(pri_bits=pri_bits, pre_bits=pre_bits)
    assert e.r("ICC_BPR0_EL1") == min0
    assert e.r("ICC_BPR1_EL1") == min0 + 1
    e.w("ICC_BPR0_EL1", 0)
    e.w("ICC_BPR1_EL1", 0)
    assert e.r("ICC_BPR0_EL1") == min0
    assert e.r("ICC_BPR1_EL1") == min0 + 1
    vmcr = e.hyp.read("ICH_VMCR_EL2")
    assert (vmcr >> 21) & 7 == min0 and (vmcr >> 18) & 7 == min0 + 1
    e.w("ICC_BPR0_EL1", 7)
    e.w("ICC_BPR1_EL1", 7)
    assert e.r("ICC_BPR0_EL1") == 7 and e.r("ICC_BPR1_EL1") == 7


def test_bpr_write_stores_field(env):
    env.w("ICC_BPR0_EL1", 0xF5)                      # [63:3] RES0
    env.w("ICC_BPR1_EL1", 6)
    assert env.r("ICC_BPR0_EL1") == 5
    assert env.r("ICC_BPR1_EL1") == 6
    vmcr = env.hyp.read("ICH_VMCR_EL2")
    assert (vmcr >> 21) & 7 == 5 and (vmcr >> 18) & 7 == 6
    assert vmcr >> 24 == 0xF8 and vmcr & 3 == 3      # other fields intact


def test_bpr1_with_cbpr(env):
    # ICV_BPR1_EL1 (§12.3; kvm-facts §6): with CBPR set, reads return
    # min(BPR0 + 1, 7) and writes are ignored.
    env.w("ICC_BPR0_EL1", 5)
    env.w("ICC_BPR1_EL1", 3)
    env.w("ICC_CTLR_EL1", 1)
    assert env.r("ICC_BPR1_EL1") == 6
    env.w("ICC_BPR1_EL1", 4)
    assert (env.hyp.read("ICH_VMCR_EL2") >> 18) & 7 == 3
    env.w("ICC_BPR0_EL1", 7)
    assert env.r("ICC_BPR1_EL1") == 7
    env.w("ICC_CTLR_EL1", 0)
    assert env.r("ICC_BPR1_EL1") == 3


@pytest.mark.parametrize("pri_bits, reset", [(5, 0x8400), (6, 0x8500), (7, 0x8600)])
def test_ctlr(pri_bits, reset):
    # ICV_CTLR_EL1 (§12.3; kvm-facts §6): CBPR [0], EOImode [1] from VMCR;
    # PRIbits [10:8] = bits - 1; IDbits [13:11] = 0 (16-bit); SEIS [14] = 0;
    # A3V [15] = 1 (as ICH_VTR_EL2 reports).
    e = Env(pri_bits=pri_bits, pre_bits=5)
    assert e.r("ICC_CTLR_EL1") == reset
    e.w("ICC_CTLR_EL1", 3)
    assert e.r("ICC_CTLR_EL1") == reset | 3
    assert e.hyp.read("ICH_VMCR_EL2") == ich.VMCR_CBPR | ich.VMCR_EOIM
    e.w("ICC_CTLR_EL1", ALL64 & ~3)                  # only bits 0 and 1 are stored
    assert e.r("ICC_CTLR_EL1") == reset
    assert e.hyp.read("ICH_VMCR_EL2") == 0
    e.w("ICC_CTLR_EL1", 1)
    assert e.hyp.read("ICH_VMCR_EL2") == ich.VMCR_CBPR


def test_ctlr_write_keeps_other_vmcr_fields(env):
    before = env.hyp.read("ICH_VMCR_EL2")
    env.w("ICC_CTLR_EL1", 2)
    assert env.hyp.read("ICH_VMCR_EL2") == before | ich.VMCR_EOIM


def test_igrpen():
    # ICV_IGRPEN0/1_EL1.Enable [0] (§12.3) are ICH_VMCR_EL2.VENG0/VENG1 (§12.4.8).
    e = Env()
    assert e.r("ICC_IGRPEN0_EL1") == 0 and e.r("ICC_IGRPEN1_EL1") == 0
    e.w("ICC_IGRPEN1_EL1", 1)
    assert e.hyp.read("ICH_VMCR_EL2") == ich.VMCR_ENG1
    assert e.r("ICC_IGRPEN1_EL1") == 1 and e.r("ICC_IGRPEN0_EL1") == 0
    e.w("ICC_IGRPEN0_EL1", 0xFFFF_FFFF)
    assert e.hyp.read("ICH_VMCR_EL2") == ich.VMCR_ENG0 | ich.VMCR_ENG1
    e.w("ICC_IGRPEN1_EL1", 0xFE)                     # bit 0 clear: disable
    assert e.hyp.read("ICH_VMCR_EL2") == ich.VMCR_ENG0
    e.hyp.write("ICH_VMCR_EL2", ich.VMCR_ENG1)
    assert e.r("ICC_IGRPEN1_EL1") == 1 and e.r("ICC_IGRPEN0_EL1") == 0


def test_sre(env):
    # kvm-facts §6: ICC_SRE_EL1 reads SRE|DFB|DIB = 0x7 and is not writable by the guest.
    assert env.r("ICC_SRE_EL1") == 0x7
    env.w("ICC_SRE_EL1", 0)
    assert env.r("ICC_SRE_EL1") == 0x7


@pytest.mark.parametrize("name", ["ICC_SGI1R_EL1", "ICC_ASGI1R_EL1", "ICC_SGI0R_EL1"])
def test_sgi_generation_goes_to_hypervisor(env, name):
    # kvm-facts §3.4: SGI generation traps and KVM emulates it.
    value = (1 << 40) | (5 << 24) | (2 << 16) | 0b1010
    before = env.records.copy()
    env.w(name, value)
    env.w(SYSREGS[name].encoding, 0)
    assert env.hooks.calls == [("sgi", name, value), ("sgi", name, 0)]
    assert same_records(env.records, before)


@pytest.mark.parametrize("pri_bits, pre_bits, nr", [(5, 5, 1), (6, 6, 2), (7, 7, 4), (7, 6, 2)])
def test_apr_count_and_undef(pri_bits, pre_bits, nr):
    # ICH_AP0R<n>/AP1R<n> (§12.4.1, §12.4.2; kvm-facts §4.2): 2^(PREbits-5)
    # registers per group; ICC/ICH APRs beyond them UNDEF.  The guest's
    # ICC_AP{0,1}R<n>_EL1 are the same registers (§12.3).
    e = Env(pri_bits=pri_bits, pre_bits=pre_bits)
    assert e.cpu.nr_aprs == nr and e.hyp.nr_aprs == nr
    for g in (0, 1):
        for n in range(4):
            icc, ichn = f"ICC_AP{g}R{n}_EL1", f"ICH_AP{g}R{n}_EL2"
            if n < nr:
                val = 0x8000_0001 ^ (g << 4) ^ (n << 8)
                e.w(icc, (0xDEAD << 32) | val)             # [63:32] RES0
                assert e.hyp.read(ichn) == val
                assert e.records[f"ich_ap{g}r"][0][n] == val
                e.hyp.write(ichn, val ^ 0xF0F0)
                assert e.r(icc) == val ^ 0xF0F0
            else:
                for op, args in ((e.r, (icc,)), (e.w, (icc, 0)), (e.hyp.read, (ichn,)),
                                 (e.hyp.write, (ichn, 0))):
                    with pytest.raises(UndefinedInstruction):
                        op(*args)
                with pytest.raises(UndefinedInstruction):
                    e.r(SYSREGS[icc].encoding)
                assert e.records[f"ich_ap{g}r"][0][n] == 0


# ----------------------------------------------------------------- ICH_*_EL2
def test_lr_index_beyond_nr_lrs_undefined():
    # ICH_LR<n>_EL2 (§12.4.6): only n <= ICH_VTR_EL2.ListRegs exist.
    e = Env(nr_lrs=4)
    e.hyp.write("ICH_LR3_EL2", 1)
    assert e.hyp.read("ICH_LR3_EL2") == 1
    for n in (4, 15):
        with pytest.raises(UndefinedInstruction):
            e.hyp.read(f"ICH_LR{n}_EL2")
        with pytest.raises(UndefinedInstruction):
            e.hyp.write(f"ICH_LR{n}_EL2", 0)
    for name in ("ICH_LR16_EL2", "ICH_LR01_EL2", "ICH_LR_EL2"):
        with pytest.raises(UndefinedInstruction):
            e.hyp.read(name)
    full = Env(nr_lrs=16)
    full.hyp.write("ICH_LR15_EL2", 7)
    assert full.hyp.read((3, 4, 12, 13, 7)) == 7
    assert full.records["ich_lr"][0][15] == 7


def test_ich_encodings():
    # IHI 0069 §12.4 encodings of the ICH_*_EL2 registers.
    assert resolve_ich((3, 4, 12, 11, 0)) == "ICH_HCR_EL2"
    assert resolve_ich((3, 4, 12, 11, 1)) == "ICH_VTR_EL2"
    assert resolve_ich((3, 4, 12, 11, 2)) == "ICH_MISR_EL2"
    assert resolve_ich((3, 4, 12, 11, 3)) == "ICH_EISR_EL2"
    assert resolve_ich((3, 4, 12, 11, 5)) == "ICH_ELRSR_EL2"
    assert resolve_ich((3, 4, 12, 11, 7)) == "ICH_VMCR_EL2"
    assert resolve_ich((3, 4, 12, 8, 2)) == "ICH_AP0R2_EL2"
    assert resolve_ich((3, 4, 12, 9, 3)) == "ICH_AP1R3_EL2"
    assert resolve_ich((3, 4, 12, 12, 0)) == "ICH_LR0_EL2"
    assert resolve_ich((3, 4, 12, 13, 0)) == "ICH_LR8_EL2"


@pytest.mark.parametrize("reg", ["ICH_FOO_EL2", "ICC_PMR_EL1", "ich_hcr_el2", "ICH_AP0R4_EL2",
                                 (3, 4, 12, 11, 4), (3, 4, 12, 11, 6), (3, 4, 12, 14, 0), (3, 0, 4, 6, 0), 7])
def test_unknown_ich_undefined(reg):
    e = Env()
    with pytest.raises(UndefinedInstruction):
        e.hyp.read(reg)
    with pytest.raises(UndefinedInstruction):
        e.hyp.write(reg, 0)


def test_lr_write_clears_res0_and_unimplemented_priority():
    # ICH_LR<n>_EL2 (§12.4.6; kvm-facts §4.1): with HW=0, [40:32] and [47:42]
    # are RES0 (bit 41 is EOI); with HW=1, [47:42] are RES0 ([41:32] pINTID).
    # [59:56] are RES0 too (bit 59 is NMI only with FEAT_GICv3_NMI, which the
    # modelled hardware lacks).  Priority bits below PRIbits are not implemented.
    e = Env(pri_bits=5)
    e.hyp.write("ICH_LR0_EL2", ALL64 & ~ich.LR_HW)
    assert e.hyp.read("ICH_LR0_EL2") == 0xD0F8_0200_FFFF_FFFF
    e.hyp.write("ICH_LR1_EL2", ALL64)
    assert e.hyp.read("ICH_LR1_EL2") == 0xF0F8_03FF_FFFF_FFFF
    e7 = Env(pri_bits=7, pre_bits=7)
    e7.hyp.write("ICH_LR0_EL2", ALL64)
    assert e7.hyp.read("ICH_LR0_EL2") == 0xF0FE_03FF_FFFF_FFFF
    e7.hyp.write("ICH_LR1_EL2", ich.lr_value(0x1234, 0xA2, group=1, pending=True, hw=True, pintid=0x3FF))
    assert e7.hyp.read("ICH_LR1_EL2") == ich.lr_value(0x1234, 0xA2, group=1, pending=True, hw=True,
                                                      pintid=0x3FF)


def test_hcr_and_vmcr_writable_bits():
    # ICH_HCR_EL2 (§12.4.5) and ICH_VMCR_EL2 (§12.4.8): RES0 bits read 0.
    e = Env()
    e.hyp.write("ICH_HCR_EL2", ALL64)
    assert e.hyp.read("ICH_HCR_EL2") == 0xF800_FDFF
    e.hyp.write("ICH_VMCR_EL2", ALL64)
    # VPMR keeps its 5 implemented priority bits (0xFF -> 0xF8).
    assert e.hyp.read("ICH_VMCR_EL2") == 0xF8FC_021F
    assert e.records["ich_vmcr"][0] == 0xF8FC_021F


@pytest.mark.parametrize("pri_bits, pre_bits, bpr0_min, bpr1_min, pmr", [
    (5, 5, 2, 3, 0xF8), (6, 5, 2, 3, 0xFC), (6, 6, 1, 2, 0xFC), (7, 7, 0, 1, 0xFE)])
def test_vmcr_stores_what_the_hardware_holds(pri_bits, pre_bits, bpr0_min, bpr1_min, pmr):
    # ICH_VMCR_EL2 (IHI 0069 §12.4.10): VBPR0/VBPR1 alias ICV_BPR0/1_EL1, where a
    # binary point below the minimum is stored as the minimum (§12.3
    # ICV_BPR0_EL1: minimum 7 - PREbits; ICV_BPR1_EL1: one more); VPMR aliases
    # ICV_PMR_EL1, whose unimplemented low priority bits are RAZ/WI.  A
    # hypervisor write of 0 (KVM's reset VMCR) therefore reads back the minima.
    e = Env(pri_bits=pri_bits, pre_bits=pre_bits)
    e.hyp.write("ICH_VMCR_EL2", 0)
    vmcr = e.hyp.read("ICH_VMCR_EL2")
    assert (vmcr & ich.VMCR_BPR0_MASK) >> ich.VMCR_BPR0_SHIFT == bpr0_min
    assert (vmcr & ich.VMCR_BPR1_MASK) >> ich.VMCR_BPR1_SHIFT == bpr1_min
    e.hyp.write("ICH_VMCR_EL2", 0xFF << ich.VMCR_PMR_SHIFT | 7 << ich.VMCR_BPR0_SHIFT)
    vmcr = e.hyp.read("ICH_VMCR_EL2")
    assert (vmcr & ich.VMCR_PMR_MASK) >> ich.VMCR_PMR_SHIFT == pmr
    assert (vmcr & ich.VMCR_BPR0_MASK) >> ich.VMCR_BPR0_SHIFT == 7     # at or above the minimum: kept
    # The guest's view agrees with the stored value.
    assert e.r("ICC_BPR0_EL1") == 7
    assert e.r("ICC_BPR1_EL1") == bpr1_min
    assert e.r("ICC_PMR_EL1") == pmr


@pytest.mark.parametrize("nr_lrs, pri_bits, pre_bits", [(4, 5, 5), (16, 7, 7), (1, 6, 5)])
def test_vtr(nr_lrs, pri_bits, pre_bits):
    # ICH_VTR_EL2 (§12.4.9; kvm-facts §4.2): ListRegs [4:0] = count - 1,
    # PREbits [28:26] and PRIbits [31:29] = bits - 1, IDbits [25:23] = 0.
    e = Env(nr_lrs=nr_lrs, pri_bits=pri_bits, pre_bits=pre_bits)
    vtr = e.hyp.read("ICH_VTR_EL2")
    assert vtr == ich.vtr(nr_lrs, pri_bits, pre_bits)
    assert vtr & 0x1F == nr_lrs - 1
    assert (vtr >> 26) & 7 == pre_bits - 1
    assert (vtr >> 29) & 7 == pri_bits - 1
    assert (vtr >> 23) & 7 == 0
    assert vtr & (1 << 21)                           # A3V, matching ICC_CTLR_EL1.A3V


@pytest.mark.parametrize("name", ["ICH_VTR_EL2", "ICH_EISR_EL2", "ICH_ELRSR_EL2", "ICH_MISR_EL2"])
def test_ich_read_only(name):
    e = Env()
    with pytest.raises(UndefinedInstruction):
        e.hyp.write(name, 0)


def build_summary_lrs(e):
    """LR0: State 00, HW 0, EOI 1 (EOI maintenance); LR1: empty; LR2: pending;
    LR3: active; plus an LR beyond nr_lrs that must be ignored."""
    e.set_lr(0, 600, 0x10, eoi=True)
    e.set_lr(1, 601, 0x10)
    e.set_lr(2, 602, 0x10, pending=True)
    e.set_lr(3, 603, 0x10, active=True)
    e.records["ich_lr"][0][5] = ich.lr_value(605, 0x10, eoi=True)


def test_eisr_elrsr():
    # ICH_EISR_EL2 (§12.4.3): State 00, HW 0, EOI 1.  ICH_ELRSR_EL2 (§12.4.4):
    # State 00 and no pending EOI maintenance.
    e = Env(nr_lrs=4)
    build_summary_lrs(e)
    assert e.hyp.read("ICH_EISR_EL2") == 0b0001
    assert e.hyp.read("ICH_ELRSR_EL2") == 0b0010
    # HW=1 with pINTID bit 41 set is not an EOI request: the LR is free.
    e.set_lr(0, 600, 0x10, hw=True, pintid=0x200)
    assert e.lr(0) & ich.LR_EOI
    assert e.hyp.read("ICH_EISR_EL2") == 0
    assert e.hyp.read("ICH_ELRSR_EL2") == 0b0011
    e.hyp.write("ICH_LR0_EL2", 0)
    e.hyp.write("ICH_LR2_EL2", 0)
    e.hyp.write("ICH_LR3_EL2", 0)
    assert e.hyp.read("ICH_ELRSR_EL2") == 0b1111


def test_eoi_maintenance_after_guest_eoi():
    # §12.4.6 EOI bit: an LR with HW=0, EOI=1 that the guest deactivates
    # becomes an EISR entry and raises MISR.EOI.
    e = Env()
    e.enable()
    e.set_lr(1, 610, 0x30, pending=True, eoi=True)
    assert e.hyp.read("ICH_EISR_EL2") == 0
    assert e.r("ICC_IAR1_EL1") == 610
    assert e.hyp.read("ICH_MISR_EL2") & ich.MISR_EOI == 0
    e.w("ICC_EOIR1_EL1", 610)
    assert e.hyp.read("ICH_EISR_EL2") == 0b10
    assert e.hyp.read("ICH_ELRSR_EL2") == 0b1101
    assert e.hyp.read("ICH_MISR_EL2") == ich.MISR_EOI


def test_misr():
    # ICH_MISR_EL2 (§12.4.7; kvm-facts §4.2).
    e = Env(nr_lrs=4)
    build_summary_lrs(e)
    enables = (ich.HCR_EN | ich.HCR_UIE | ich.HCR_LRENPIE | ich.HCR_NPIE | ich.HCR_VGRP0EIE
               | ich.HCR_VGRP0DIE | ich.HCR_VGRP1EIE | ich.HCR_VGRP1DIE)
    e.hyp.write("ICH_HCR_EL2", enables)
    e.hyp.write("ICH_VMCR_EL2", ich.VMCR_ENG0)
    # EOI (EISR != 0); U no (2 valid LRs); LRENP no (EOIcount 0); NP no (LR2
    # pending); VGrp0E (VENG0); VGrp1D (!VENG1).
    assert e.hyp.read("ICH_MISR_EL2") == ich.MISR_EOI | ich.MISR_VGRP0E | ich.MISR_VGRP1D
    e.hyp.write("ICH_LR2_EL2", 0)
    # One valid LR left (LR3 active): U, and no pending LR: NP.
    e.hyp.write("ICH_HCR_EL2", enables | (3 << 27))
    e.hyp.write("ICH_VMCR_EL2", ich.VMCR_ENG1)
    assert e.hyp.read("ICH_MISR_EL2") == (ich.MISR_EOI | ich.MISR_U | ich.MISR_LRENP | ich.MISR_NP
                                          | ich.MISR_VGRP0D | ich.MISR_VGRP1E)
    # Without the enables only EOI (which has none) remains.
    e.hyp.write("ICH_HCR_EL2", ich.HCR_EN | (3 << 27))
    assert e.hyp.read("ICH_MISR_EL2") == ich.MISR_EOI
    e.hyp.write("ICH_LR0_EL2", 0)
    assert e.hyp.read("ICH_MISR_EL2") == 0


def test_misr_u_counts_pending_and_active():
    # U: at most one LR with State != 00 (pending, active or both count).
    e = Env(nr_lrs=2)
    e.hyp.write("ICH_HCR_EL2", ich.HCR_UIE)
    assert e.hyp.read("ICH_MISR_EL2") == ich.MISR_U            # zero valid
    e.set_lr(0, 620, 0x10, pending=True, active=True)
    assert e.hyp.read("ICH_MISR_EL2") == ich.MISR_U            # one valid
    e.set_lr(1, 621, 0x10, active=True)
    assert e.hyp.read("ICH_MISR_EL2") == 0                     # two valid
    e.records["ich_lr"][0][3] = ich.lr_value(623, 0x10, pending=True)
    e.hyp.write("ICH_LR1_EL2", 0)
    assert e.hyp.read("ICH_MISR_EL2") == ich.MISR_U            # LR3 not implemented


def test_guest_and_hypervisor_share_state():
    # ICV_* registers are views of ICH_* state (§12.3 / §12.4).
    e = Env()
    e.hyp.write("ICH_VMCR_EL2", (0xA0 << 24) | (4 << 21) | (5 << 18) | ich.VMCR_ENG1 | ich.VMCR_EOIM)
    assert e.r("ICC_PMR_EL1") == 0xA0
    assert e.r("ICC_BPR0_EL1") == 4
    assert e.r("ICC_BPR1_EL1") == 5
    assert e.r("ICC_IGRPEN1_EL1") == 1
    assert e.r("ICC_CTLR_EL1") == 0x8402
    e.set_lr(0, 700, 0x20, pending=True)
    assert e.r("ICC_IAR1_EL1") == 700
    assert e.hyp.read("ICH_LR0_EL2") == ich.lr_value(700, 0x20, active=True)
    assert e.hyp.read("ICH_AP1R0_EL2") == 1 << 4
