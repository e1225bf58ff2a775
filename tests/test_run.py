"""vgic.run: small hand-assembled guests on the Unicorn CPU emulator with the
library as their GIC, ITS and timers (issue 12's integration test without
the kvm-unit-tests toolchain).

The guests are encoded here from the instruction fields of the Arm ARM
(DDI 0487, chapter C6, "A64 base instruction descriptions"); each encoder
cites its class and is checked against a known encoding below.
"""
import subprocess
import sys
import time

import numpy as np
import pytest

import vgic
from vgic import regmap as R
from vgic import run

pytest.importorskip("unicorn", reason="vgic.run needs the Unicorn CPU emulator: pip install 'vgic[run]'")

BACKENDS = ["core", "pure"]
RAM = 0x4000_0000
CODE = RAM + run.DEFAULT_LOAD_OFFSET
VECTORS = CODE + 0x800          # VBAR_EL1 is 2 KiB aligned (Arm ARM D1.10.2)
DATA = CODE + 0x1000
GICD = 0x0800_0000
GICR0 = 0x080A_0000
SGI0 = GICR0 + R.SGI_BASE_OFFSET

# ------------------------------------------------------------------ encoders
# System registers as (op0, op1, CRn, CRm, op2).
VBAR_EL1 = (3, 0, 12, 0, 0)
ESR_EL1 = (3, 0, 5, 2, 0)
ELR_EL1 = (3, 0, 4, 0, 1)
MPIDR_EL1 = (3, 0, 0, 0, 5)
ICC_PMR_EL1 = (3, 0, 4, 6, 0)
ICC_IAR1_EL1 = (3, 0, 12, 12, 0)
ICC_EOIR1_EL1 = (3, 0, 12, 12, 1)
ICC_IGRPEN1_EL1 = (3, 0, 12, 12, 7)
ICC_SGI1R_EL1 = (3, 0, 12, 11, 5)
ICH_HCR_EL2 = (3, 4, 12, 11, 0)
CNTVCT_EL0 = (3, 3, 14, 0, 2)
CNTV_TVAL_EL0 = (3, 3, 14, 3, 0)
CNTV_CTL_EL0 = (3, 3, 14, 3, 1)

XZR = 31


def _sys(l_bit, reg, rt):
    # System instruction class (C6.2.{MRS,MSR}): 1101010100 L op0 op1 CRn CRm op2 Rt;
    # op0 is two bits (MRS/MSR register forms have op0 = 2 or 3).
    op0, op1, crn, crm, op2 = reg
    return 0xD500_0000 | l_bit << 21 | op0 << 19 | op1 << 16 | crn << 12 | crm << 8 | op2 << 5 | rt


def mrs(rt, reg):
    return _sys(1, reg, rt)


def msr(reg, rt):
    return _sys(0, reg, rt)


def daifclr(imm4):
    # MSR (immediate), PSTATE field DAIFClr: op1 = 3, CRn = 4, CRm = imm, op2 = 7, Rt = 31.
    return _sys(0, (0, 3, 4, imm4, 7), XZR)


def movz(rd, imm16, hw=0):
    # Move wide (C6.2.191): sf 10 100101 hw imm16 Rd, 64-bit.
    return 0xD280_0000 | hw << 21 | (imm16 & 0xFFFF) << 5 | rd


def movk(rd, imm16, hw):
    # MOVK (C6.2.190): sf 11 100101 hw imm16 Rd.
    return 0xF280_0000 | hw << 21 | (imm16 & 0xFFFF) << 5 | rd


def mov64(rd, value):
    """MOVZ then MOVK for each other non-zero halfword."""
    words = [movz(rd, value & 0xFFFF)]
    for hw in range(1, 4):
        half = (value >> (16 * hw)) & 0xFFFF
        if half:
            words.append(movk(rd, half, hw))
    return words


def str32(rt, rn, offset=0):
    # STR (immediate, unsigned offset) (C6.2.321): size 10 111 0 01 00 imm12 Rn Rt; imm12 = offset / 4.
    return 0xB900_0000 | (offset // 4) << 10 | rn << 5 | rt


def str64(rt, rn, offset=0):
    return 0xF900_0000 | (offset // 8) << 10 | rn << 5 | rt


def ldr32(rt, rn, offset=0):
    # LDR (immediate, unsigned offset): opc 01.
    return 0xB940_0000 | (offset // 4) << 10 | rn << 5 | rt


def lsr_imm(rd, rn, shift):
    # LSR (immediate) is UBFM (C6.2.336) with immr = shift, imms = 63:
    # sf 10 100110 N=1 immr imms Rn Rd, 64-bit.
    return 0xD340_0000 | shift << 16 | 63 << 10 | rn << 5 | rd


def add_imm(rd, rn, imm12):
    # ADD (immediate) (C6.2.4): sf 0 0 100010 sh imm12 Rn Rd, 64-bit.
    return 0x9100_0000 | imm12 << 10 | rn << 5 | rd


def subs_imm(rd, rn, imm12):
    # SUBS (immediate): sf 1 1 100010 ...; CMP is SUBS with Rd = XZR.
    return 0xF100_0000 | imm12 << 10 | rn << 5 | rd


def tst_imm_bit(rn, bit):
    # TST (ANDS immediate, 32-bit) with a one-bit mask at `bit`: N = 0,
    # imms = 0 (one set bit), immr = (32 - bit) % 32 rotates it into place.
    return 0x7200_001F | ((32 - bit) % 32) << 16 | rn << 5


def b(offset):
    # B (C6.2.26): 000101 imm26, offset / 4.
    return 0x1400_0000 | (offset >> 2) & 0x3FF_FFFF


def b_cond(cond, offset):
    # B.cond (C6.2.27): 0101010 0 imm19 0 cond.
    return 0x5400_0000 | ((offset >> 2) & 0x7FFFF) << 5 | cond


EQ, NE = 0, 1

WFI = 0xD503_207F
NOP = 0xD503_201F
ISB = 0xD503_3FDF
ERET = 0xD69F_03E0


def hvc(imm16=0):
    # Exception generation (C6.2.110): 11010100 000 imm16 000 10.
    return 0xD400_0002 | imm16 << 5


def svc(imm16=0):
    return 0xD400_0001 | imm16 << 5


def test_encoders_match_known_encodings():
    # Encodings as binutils prints them (objdump of the same instructions).
    assert mrs(0, (3, 0, 4, 2, 2)) == 0xD538_4240               # mrs x0, CurrentEL
    assert msr(VBAR_EL1, 0) == 0xD518_C000                       # msr vbar_el1, x0
    assert mrs(3, ICC_IAR1_EL1) == 0xD538_CC03                   # mrs x3, icc_iar1_el1
    assert msr(ICC_EOIR1_EL1, 3) == 0xD518_CC23                  # msr icc_eoir1_el1, x3
    assert daifclr(2) == 0xD503_42FF                             # msr daifclr, #2
    assert movz(0, 0x1234) == 0xD282_4680                        # mov x0, #0x1234
    assert movk(1, 0x800, 1) == 0xF2A1_0001                      # movk x1, #0x800, lsl #16
    assert str32(2, 1, 0x104) == 0xB901_0422                     # str w2, [x1, #260]
    assert str64(5, 4, 8) == 0xF900_0485                         # str x5, [x4, #8]
    assert add_imm(1, 1, 1) == 0x9100_0421                      # add x1, x1, #1
    assert subs_imm(0, 0, 1) == 0xF100_0400                      # subs x0, x0, #1
    assert b(-4) == 0x17FF_FFFF                                  # b .-4
    assert b_cond(NE, -8) == 0x54FF_FFC1                         # b.ne .-8
    assert hvc(0) == 0xD400_0002 and svc(0x42) == 0xD400_0841
    assert tst_imm_bit(1, 5) == 0x721B_003F                      # tst w1, #0x20
    assert lsr_imm(5, 5, 26) == 0xD35A_FCA5                      # lsr x5, x5, #26


class Asm:
    """Words at consecutive addresses from ``base``, with labels and
    branches resolved when the image is built."""

    def __init__(self, base=CODE):
        self.base = base
        self.words = []
        self.labels = {}
        self.fixups = []

    @property
    def pc(self):
        return self.base + 4 * len(self.words)

    def __call__(self, *words):
        for w in words:
            if isinstance(w, list):
                self.words.extend(w)
            else:
                self.words.append(w)
        return self

    def label(self, name):
        self.labels[name] = self.pc
        return self

    def org(self, addr):
        """Pad with NOPs up to ``addr``."""
        assert addr >= self.pc
        self.words.extend([NOP] * ((addr - self.pc) // 4))
        return self

    def b(self, target, cond=None):
        self.fixups.append((len(self.words), target, cond))
        self.words.append(0)
        return self

    def addr(self, rd, target):
        """Rd = the address of a label (below 4 GiB): MOVZ, MOVK."""
        self.fixups.append((len(self.words), target, ("addr", rd)))
        self.words.extend([0, 0])
        return self

    def image(self):
        words = list(self.words)
        for index, target, how in self.fixups:
            where = self.labels[target]
            if isinstance(how, tuple):
                assert where < 1 << 32
                words[index:index + 2] = [movz(how[1], where & 0xFFFF), movk(how[1], where >> 16, 1)]
            else:
                offset = where - (self.base + 4 * index)
                words[index] = b(offset) if how is None else b_cond(how, offset)
        return np.array(words, dtype="<u4").tobytes()

    def count(self, start, end):
        """Instructions from label ``start`` up to (not including) ``end``."""
        return (self.labels[end] - self.labels[start]) // 4


def system_off():
    return mov64(0, run.PSCI_SYSTEM_OFF) + [hvc(0)]


def gic_setup(asm, spi=None, ppi=None):
    """VBAR_EL1, the distributor on (ARE, Group 1), the interrupt enabled,
    ICC_PMR_EL1 = 0xFF, ICC_IGRPEN1_EL1 = 1; X4 = DATA."""
    asm(mov64(0, VECTORS), msr(VBAR_EL1, 0), ISB)
    asm(mov64(1, GICD), movz(2, 0x12), str32(2, 1, R.GICD_CTLR))
    if spi is not None:
        # Edge-triggered (GICD_ICFGR<n>: Int_config[1] of the INTID's field),
        # then GICD_ISENABLER<n>.
        asm(mov64(2, 2 << (2 * (spi % 16))), str32(2, 1, R.GICD_ICFGR + 4 * (spi // 16)))
        asm(mov64(2, 1 << (spi % 32)), str32(2, 1, R.GICD_ISENABLER + 4 * (spi // 32)))
    if ppi is not None:
        asm(mov64(1, SGI0), mov64(2, 1 << ppi), str32(2, 1, R.GICR_ISENABLER0))
    asm(movz(2, 0xFF), msr(ICC_PMR_EL1, 2), movz(2, 1), msr(ICC_IGRPEN1_EL1, 2), ISB)
    asm(mov64(4, DATA))


def irq_handler(asm, extra=()):
    """At VBAR + 0x280 (IRQ, current EL with SP_ELx): acknowledge, store the
    INTID at [X4], (extra), EOI, then PSCI SYSTEM_OFF."""
    asm.org(VECTORS + 0x280).label("irq")
    asm(mrs(3, ICC_IAR1_EL1), str32(3, 4, 0), *extra, msr(ICC_EOIR1_EL1, 3))
    asm(system_off()).label("irq_end")
    asm(b(0))


def machine(backend, smp=1, **kw):
    return run.Machine(smp, backend=backend, console=None, **kw)


def data_word(m, offset=0, size=4):
    off = DATA - m.vm.ram_base + offset
    return int.from_bytes(m.vm.memory[off:off + size].tobytes(), "little")


def boot(m, asm):
    m.start(m.load(asm.image(), CODE))


# ------------------------------------------------------------------- tests
def test_without_unicorn_the_module_imports_and_a_machine_says_what_to_install():
    # unicorn is an optional dependency (the [run] extra): blocked here.
    code = ("import sys; sys.modules['unicorn'] = None\n"
            "import vgic.run as r\n"
            "try:\n    r.Machine()\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "needs the Unicorn CPU emulator" in out and "vgic[run]" in out


@pytest.mark.parametrize("backend", BACKENDS)
def test_spi_injected_while_the_guest_waits_is_taken_acknowledged_and_eoied(backend):
    """The issue's guest: SPI 40 enabled, PMR/IGRPEN1 set, IRQs unmasked, WFI;
    the VMM raises SPI 40 (KVM_IRQ_LINE); the vector acknowledges it through
    ICC_IAR1_EL1, stores the INTID, EOIs, and powers off (PSCI)."""
    asm = Asm()
    asm.label("start")
    gic_setup(asm, spi=40)
    asm(daifclr(2)).label("wait")
    asm(WFI).label("after_wfi")
    asm.b("wait")
    irq_handler(asm)
    m = machine(backend)
    boot(m, asm)

    # Nothing pending: the vCPU blocks in WFI, no timer can wake it.
    assert m.run(max_insns=100_000) == run.STOP_WFI
    st = m.vm.irq(40)
    assert st.enabled and st.config == "edge" and not st.pending
    assert m.stats.blocks == 1 and m.stats.irqs == 0

    m.vm.set_irq_level(40, True)                       # a rising edge latches it
    assert m.vm.irq(40).pending_latch
    assert m.run(max_insns=100_000) == run.STOP_SYSTEM_OFF

    assert data_word(m) == 40
    st = m.vm.irq(40)
    assert not st.pending and not st.active           # acknowledged and deactivated through the vGIC
    s = m.stats
    assert s.irqs == 1 and s.psci_calls == 1
    assert s.mmio_exits == 3                           # GICD_CTLR, ICFGR2, ISENABLER1
    assert s.sysreg_accesses == 4 and s.sysreg_traps == 0   # PMR, IGRPEN1, IAR1, EOIR1: served by "hardware"
    # Instructions are counted exactly: the setup, the WFI, the handler.
    assert s.instructions == asm.count("start", "after_wfi") + asm.count("irq", "irq_end")


@pytest.mark.parametrize("backend", BACKENDS)
def test_sgi_to_itself_traps_and_arrives(backend):
    """ICC_SGI1R_EL1 traps to KVM (kvm-facts §3.4): an exit and an entry,
    after which the SGI is in the vCPU's LRs and taken."""
    asm = Asm()
    gic_setup(asm, ppi=None)
    asm(mov64(1, SGI0), movz(2, 1 << 5), str32(2, 1, R.GICR_ISENABLER0))
    asm(daifclr(2))
    asm(mov64(2, 5 << 24 | 1), msr(ICC_SGI1R_EL1, 2))    # SGI 5 to Aff 0.0.0, target list bit 0
    asm.label("spin")
    asm.b("spin")
    irq_handler(asm)
    m = machine(backend)
    boot(m, asm)
    assert m.run(max_insns=100_000) == run.STOP_SYSTEM_OFF
    assert data_word(m) == 5
    assert m.stats.sysreg_traps == 1 and m.stats.irqs == 1 and m.stats.blocks == 0
    assert not m.vm.irq(5, vcpu=0).pending and not m.vm.irq(5, vcpu=0).active


# (counter, TVAL, CTL, PPI) of the EL1 virtual and physical timers.
TIMERS = {"virtual": ((3, 3, 14, 0, 2), (3, 3, 14, 3, 0), (3, 3, 14, 3, 1), 27),
          "physical": ((3, 3, 14, 0, 1), (3, 3, 14, 2, 0), (3, 3, 14, 2, 1), 30)}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("wait", ["wfi", "spin"])
@pytest.mark.parametrize("timer", ["virtual", "physical"])
def test_timer_fires_after_its_tval(backend, wait, timer):
    """CNTx_TVAL_EL0 = T, CNTx_CTL_EL0 = ENABLE; the timer's PPI (27, or
    30 for the physical timer, whose registers trap to KVM) arrives once the
    counter has moved T ticks: by jumping to the background timer while the
    vCPU is blocked in WFI, or with the instructions of a spinning guest.
    The handler masks the timer (CTL.IMASK) before the EOI."""
    cnt, tval_reg, ctl, ppi = TIMERS[timer]
    tval = 50_000
    asm = Asm()
    gic_setup(asm, ppi=ppi)
    asm(mrs(5, cnt), str64(5, 4, 8))
    asm(mov64(2, tval), msr(tval_reg, 2), movz(2, 1), msr(ctl, 2))
    asm(daifclr(2)).label("wait")
    asm(WFI if wait == "wfi" else NOP)
    asm.b("wait")
    irq_handler(asm, extra=[mrs(6, cnt), str64(6, 4, 16), movz(2, 3), msr(ctl, 2)])
    m = machine(backend)
    boot(m, asm)
    assert m.run(max_insns=1_000_000) == run.STOP_SYSTEM_OFF
    assert data_word(m) == ppi
    assert m.stats.sysreg_traps == (3 if timer == "physical" else 0)     # TVAL, CTL, CTL
    before, after = data_word(m, 8, 8), data_word(m, 16, 8)
    assert tval <= after - before < tval + 2 * m.quantum + 100
    s = m.stats
    assert s.irqs == 1
    if wait == "wfi":
        assert s.blocks == 1 and s.idle_ticks > tval // 2 and s.instructions < 200
    else:
        assert s.blocks == 0 and s.idle_ticks == 0 and s.instructions >= tval
    st = m.vm.irq(ppi, vcpu=0)
    assert not st.active
    v = m.vm.vcpus[0]
    assert not v.running and not v.loaded              # put at the end of the run, as after KVM_RUN


@pytest.mark.parametrize("backend", BACKENDS)
def test_group0_spi_is_a_fiq(backend):
    """SPI 41 in Group 0 (GICD_IGROUPR1 bit 9 clear, EnableGrp0, ICC_IGRPEN0_EL1):
    the CPU interface signals a vFIQ, taken at VBAR + 0x300 and acknowledged
    through ICC_IAR0_EL1 (a guest with one security state, IHI 0069 §4.6)."""
    ICC_IAR0_EL1, ICC_EOIR0_EL1, ICC_IGRPEN0_EL1 = (3, 0, 12, 8, 0), (3, 0, 12, 8, 1), (3, 0, 12, 12, 6)
    asm = Asm()
    asm(mov64(0, VECTORS), msr(VBAR_EL1, 0), mov64(1, GICD), movz(2, 0x13), str32(2, 1, R.GICD_CTLR))
    asm(mov64(2, 0xFFFF_FDFF), str32(2, 1, R.GICD_IGROUPR + 4))         # SPI 41 -> Group 0
    asm(mov64(2, 1 << 9), str32(2, 1, R.GICD_ISENABLER + 4))
    asm(movz(2, 0xFF), msr(ICC_PMR_EL1, 2), movz(2, 1), msr(ICC_IGRPEN0_EL1, 2), mov64(4, DATA))
    asm(daifclr(1)).label("wait")                                       # F only
    asm(WFI)
    asm.b("wait")
    asm.org(VECTORS + 0x300)
    asm(mrs(3, ICC_IAR0_EL1), str32(3, 4, 0), msr(ICC_EOIR0_EL1, 3), system_off())
    m = machine(backend)
    boot(m, asm)
    assert m.run(max_insns=100_000) == run.STOP_WFI
    m.vm.set_irq_level(41, True)
    assert m.run(max_insns=100_000) == run.STOP_SYSTEM_OFF
    assert data_word(m) == 41
    assert m.stats.fiqs == 1 and m.stats.irqs == 0
    m.vm.set_irq_level(41, False)
    assert not m.vm.irq(41).pending and not m.vm.irq(41).active


@pytest.mark.parametrize("backend", BACKENDS)
def test_lpi_through_the_its(backend):
    """An LPI: the ITS mapped (device 2, event 20 -> LPI 8195 on collection
    3 -> vCPU 0) by the VMM's side as in the README, the guest waiting in
    WFI; KVM_SIGNAL_MSI raises it and the guest acknowledges 8195."""
    asm = Asm()
    gic_setup(asm)
    asm(daifclr(2)).label("wait")
    asm(WFI)
    asm.b("wait")
    irq_handler(asm)
    m = machine(backend)
    vm = m.vm
    base = vm.ram_base + 0x100_0000
    prop, pend, cmdq, dt, ct, itt = (base + k * 0x10_0000 for k in range(6))
    v0 = vm.vcpus[0]
    vm.mmio_write(v0.rd_base + R.GICR_PROPBASER, 8, prop | 15, 0)
    vm.mmio_write(v0.rd_base + R.GICR_PENDBASER, 8, pend, 0)
    vm.mmio_write(v0.rd_base + R.GICR_CTLR, 4, R.GICR_CTLR_ENABLE_LPIS, 0)
    its = vm.its_base
    vm.mmio_write(its + R.GITS_CBASER, 8, (1 << 63) | cmdq)
    vm.mmio_write(its + R.GITS_BASER, 8, (1 << 63) | dt)
    vm.mmio_write(its + R.GITS_BASER + 8, 8, (1 << 63) | ct)
    vm.mmio_write(its + R.GITS_CTLR, 4, R.GITS_CTLR_ENABLED)
    vm.memory[prop - vm.ram_base + 8195 - 8192] = 0xA3          # priority 0xA0, enabled
    cmds = np.array([[R.GITS_CMD_MAPD | 2 << 32, 7, 1 << 63 | itt, 0],
                     [R.GITS_CMD_MAPC, 0, 1 << 63 | 0 << 16 | 3, 0],
                     [R.GITS_CMD_MAPTI | 2 << 32, 20 | 8195 << 32, 3, 0]], dtype=np.uint64)
    vm.memory[cmdq - vm.ram_base:][:cmds.nbytes] = cmds.reshape(-1).view(np.uint8)
    vm.mmio_write(its + R.GITS_CWRITER, 8, cmds.nbytes)
    boot(m, asm)
    assert m.run(max_insns=100_000) == run.STOP_WFI
    assert m.signal_msi(2, 20)
    assert m.run(max_insns=100_000) == run.STOP_SYSTEM_OFF
    assert data_word(m) == 8195
    assert m.stats.irqs == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_vcpus_cpu_on_and_an_ipi(backend):
    """PSCI CPU_ON starts vCPU 1 at its entry with the context ID in X0;
    vCPU 1 stores X0 and its MPIDR_EL1, sends SGI 3 to vCPU 0 and turns
    itself off (CPU_OFF); vCPU 0, waiting in WFI, takes SGI 3."""
    asm = Asm()
    gic_setup(asm)
    asm(mov64(0, run.PSCI_CPU_ON_64), mov64(1, 0x8000_0001), movz(3, 0x55)).addr(2, "secondary")
    asm(hvc(0), str32(0, 4, 32))                               # CPU_ON's result
    asm(daifclr(2)).label("wait")
    asm(WFI)
    asm.b("wait")
    asm.label("secondary")
    asm(mov64(4, DATA), str32(0, 4, 8), mrs(5, MPIDR_EL1), str64(5, 4, 16))
    asm(movz(2, 0xFF), msr(ICC_PMR_EL1, 2), movz(2, 1), msr(ICC_IGRPEN1_EL1, 2))
    asm(mov64(2, 3 << 24 | 1), msr(ICC_SGI1R_EL1, 2))          # SGI 3 to Aff 0.0.0, vCPU 0
    asm(mov64(0, run.PSCI_CPU_OFF), hvc(0), b(0))
    irq_handler(asm)
    m = machine(backend, smp=2)
    boot(m, asm)
    assert m.run(max_insns=200_000) == run.STOP_SYSTEM_OFF
    assert data_word(m, 32) == run.PSCI_RET_SUCCESS
    assert data_word(m, 8) == 0x55                             # the context ID
    assert data_word(m, 16, 8) == 0x8000_0001                  # its own MPIDR_EL1, not Unicorn's
    assert data_word(m) == 3
    assert m.stats.sysreg_traps == 1 and m.stats.psci_calls == 3
    assert not m.cpus[1].on


@pytest.mark.parametrize("backend", BACKENDS)
def test_undefined_accesses_and_svc_are_taken_into_the_guest(backend):
    """EL2 registers (ICH_HCR_EL2, unknown to Unicorn; SCTLR_EL2, known to
    it: kvm-unit-tests' selftest "und" case) and a read of a write-only ICC
    register UNDEF (EC 0x00, ELR at the instruction); an SVC is EC 0x15
    with its immediate and ELR after it (Arm ARM D1.10, ESR_EL1)."""
    m = machine(backend)
    # The handler records each exception's ESR and ELR at DATA + 16 * n.
    asm = Asm()
    asm(mov64(0, VECTORS), msr(VBAR_EL1, 0), ISB, mov64(4, DATA))
    asm.label("undef1")
    asm(mrs(1, ICH_HCR_EL2))
    asm.label("undef3")
    asm(mrs(0, (3, 4, 1, 0, 0)))                                # SCTLR_EL2
    asm.label("undef2")
    asm(mrs(1, ICC_EOIR1_EL1))
    asm.label("svc")
    asm(svc(0x42))
    asm(system_off())
    asm.org(VECTORS + 0x200)
    asm(mrs(5, ESR_EL1), mrs(6, ELR_EL1), str64(5, 4, 0), str64(6, 4, 8), add_imm(4, 4, 16))
    # Skip the faulting instruction unless the exception was an SVC (ELR already past it).
    asm(mrs(5, ESR_EL1), lsr_imm(5, 5, 26))                     # the EC
    asm(subs_imm(XZR, 5, 0x15))
    asm.b("ret", cond=EQ)
    asm(add_imm(6, 6, 4), msr(ELR_EL1, 6))
    asm.label("ret")
    asm(ERET)
    boot(m, asm)
    assert m.run(max_insns=100_000) == run.STOP_SYSTEM_OFF
    esr = [data_word(m, 16 * k, 8) for k in range(4)]
    elr = [data_word(m, 16 * k + 8, 8) for k in range(4)]
    assert [e >> 26 for e in esr] == [0x00, 0x00, 0x00, 0x15]
    assert all(e & run.ESR_IL for e in esr) and esr[3] & 0xFFFF == 0x42
    assert elr == [asm.labels["undef1"], asm.labels["undef3"], asm.labels["undef2"], asm.labels["svc"] + 4]
    assert m.stats.sync_exceptions == 4


@pytest.mark.parametrize("backend", BACKENDS)
def test_exceptions_from_el0_use_the_lower_el_vector_and_sp_el1(backend):
    """At EL0 (entered by ERET with SPSR_EL1 = EL0t), an ICC_* access is
    UNDEFINED (the GIC CPU interface registers are EL1's) and an SVC is
    EC 0x15; both are taken at VBAR + 0x400 on SP_EL1, while EL0 ran on
    SP_EL0 (Arm ARM D1.10: AArch64.TakeException, the SP banking)."""
    SPSR_EL1, SP_EL0 = (3, 0, 4, 0, 0), (3, 0, 4, 1, 0)
    stack_el1, stack_el0 = DATA + 0x800, DATA + 0x400
    asm = Asm()
    asm(mov64(0, VECTORS), msr(VBAR_EL1, 0), mov64(4, DATA))
    asm(mov64(0, stack_el1), add_imm(31, 0, 0), mov64(0, stack_el0), msr(SP_EL0, 0))
    asm(movz(0, 0), msr(SPSR_EL1, 0)).addr(0, "el0")
    asm(msr(ELR_EL1, 0), ERET)
    asm.label("el0")
    asm(add_imm(9, 31, 0), str64(9, 4, 0x40))                   # EL0's SP
    asm.label("undef")
    asm(mrs(1, ICC_IAR1_EL1))
    asm.label("svc")
    asm(svc(7), b(0))
    asm.org(VECTORS + 0x400)
    asm(mrs(5, ESR_EL1), mrs(6, ELR_EL1), add_imm(10, 31, 0))
    asm(str64(5, 4, 0), str64(6, 4, 8), str64(10, 4, 16), add_imm(4, 4, 24))
    asm(lsr_imm(5, 5, 26), subs_imm(XZR, 5, 0x15))
    asm.b("off", cond=EQ)
    asm(add_imm(6, 6, 4), msr(ELR_EL1, 6), ERET)
    asm.label("off")
    asm(system_off())
    m = machine(backend)
    boot(m, asm)
    assert m.run(max_insns=100_000) == run.STOP_SYSTEM_OFF
    assert data_word(m, 0x40, 8) == stack_el0
    esr, elr, sp = (data_word(m, off, 8) for off in (0, 8, 16))
    assert (esr >> 26, elr, sp) == (0x00, asm.labels["undef"], stack_el1)
    esr, elr, sp = (data_word(m, off, 8) for off in (24, 32, 40))
    assert (esr >> 26, esr & 0xFFFF, elr, sp) == (0x15, 7, asm.labels["svc"] + 4, stack_el1)
    assert m.stats.sysreg_accesses == 0                        # the ICC_* access never reached the vGIC


@pytest.mark.parametrize("backend", BACKENDS)
def test_uart_prints_and_psci_answers(backend):
    """The PL011: the guest polls UARTFR.TXFF and writes UARTDR; PSCI_VERSION
    says 1.1 and PSCI_FEATURES knows CPU_ON but not an unknown function."""
    asm = Asm()
    asm(mov64(4, DATA), mov64(1, run.UART_BASE))
    for ch in b"ok\n":
        asm.label(f"poll{ch}")
        asm(ldr32(2, 1, run.Pl011.FR), tst_imm_bit(2, 5))
        asm.b(f"poll{ch}", cond=NE)
        asm(movz(2, ch), str32(2, 1, run.Pl011.DR))
    asm(mov64(0, run.PSCI_VERSION), hvc(0), str32(0, 4, 0))
    asm(mov64(0, run.PSCI_FEATURES), mov64(1, run.PSCI_CPU_ON_64), hvc(0), str32(0, 4, 4))
    asm(mov64(0, run.PSCI_FEATURES), mov64(1, 0x8400_00FF), hvc(0), str32(0, 4, 8))
    asm(system_off())
    m = machine(backend)
    boot(m, asm)
    assert m.run(max_insns=100_000) == run.STOP_SYSTEM_OFF
    assert bytes(m.uart.output) == b"ok\n"
    assert m.stats.user_exits == 6                             # 3 x (FR read, DR write)
    assert data_word(m, 0) == run.PSCI_VERSION_1_1
    assert data_word(m, 4) == 0
    assert data_word(m, 8) == 0xFFFF_FFFF                      # NOT_SUPPORTED (-1) in W0


@pytest.mark.parametrize("backend", BACKENDS)
def test_limit_stops_a_spinning_guest_and_it_resumes(backend):
    asm = Asm()
    asm.label("loop")
    asm(add_imm(1, 1, 1))
    asm.b("loop")
    m = machine(backend)
    boot(m, asm)
    assert m.run(max_insns=10_000) == run.STOP_LIMIT
    first = m.stats.instructions
    assert 10_000 <= first < 10_000 + 4
    assert m.run(max_insns=10_000) == run.STOP_LIMIT
    assert m.vm.counter == m.stats.instructions          # one tick per instruction, nothing idle


def test_unmapped_access_is_a_clear_error():
    asm = Asm()
    asm(mov64(1, 0x1000_0000), ldr32(2, 1, 0))
    m = machine("core")
    boot(m, asm)
    with pytest.raises(run.RunError, match="0x10000000, outside RAM and the devices"):
        m.run(max_insns=1000)
    assert not m.vm.vcpus[0].running


def test_run_needs_a_started_vcpu():
    m = machine("core")
    with pytest.raises(run.RunError, match="start"):
        m.run()


def test_mmio_windows_are_the_vms_frames():
    m = machine("core")
    vm = m.vm
    assert (vm.dist_base, vm.redist_base, vm.its_base, vm.ram_base) == (GICD, GICR0, 0x0808_0000, RAM)
    assert isinstance(vm, vgic.VM)


# ------------------------------------------------------ micro-bench guests
# Loops named as kvm-unit-tests' arm/micro-bench.c names its tests, where
# they do the same thing, so the rates line up (docs/run.md).
def bench_guest(kind, n):
    """A guest that runs ``kind`` n times, then powers off; X4 = DATA."""
    asm = Asm()
    gic_setup(asm)
    asm(mov64(1, SGI0), movz(2, 1 << 1), str32(2, 1, R.GICR_ISENABLER0))   # SGI 1
    asm(mov64(1, GICD), mov64(0, n), movz(7, 0), daifclr(2))
    asm.label("loop")
    if kind == "alu":                     # plain instructions: 8 adds a turn
        asm(*[add_imm(9, 9, 1)] * 8)
    elif kind == "mmio_read_vgic":        # readl(GICD_IIDR)
        asm(ldr32(2, 1, R.GICD_IIDR))
    elif kind == "eoi":                   # an EOI of the spurious INTID
        asm(movz(2, 1023), msr(ICC_EOIR1_EL1, 2))
    elif kind == "ipi":                   # SGI 1 to itself, taken, acknowledged, EOId
        asm(mov64(2, 1 << 24 | 1), msr(ICC_SGI1R_EL1, 2))
    elif kind == "sysreg_read":           # a counter read (no exit in KVM)
        asm(mrs(2, CNTVCT_EL0))
    asm(subs_imm(0, 0, 1))
    asm.b("loop", cond=NE)
    asm(str64(7, 4, 8), system_off())
    # IRQ: count it at [X4 + 8] via X7, EOI, return.
    asm.org(VECTORS + 0x280)
    asm(mrs(3, ICC_IAR1_EL1), add_imm(7, 7, 1), msr(ICC_EOIR1_EL1, 3), ERET)
    return asm


BENCH_KINDS = ["alu", "mmio_read_vgic", "eoi", "ipi", "sysreg_read"]


def bench(kind, n, backend):
    m = machine(backend)
    boot(m, bench_guest(kind, n))
    t0 = time.perf_counter()
    assert m.run() == run.STOP_SYSTEM_OFF
    return m, time.perf_counter() - t0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", BENCH_KINDS)
def test_micro_bench_guests_count_what_they_do(kind, backend):
    n = 200
    m, _ = bench(kind, n, backend)
    s = m.stats
    setup_mmio = 2                                           # GICD_CTLR, GICR_ISENABLER0
    assert s.mmio_exits == (n if kind == "mmio_read_vgic" else 0) + setup_mmio
    assert s.irqs == (n if kind == "ipi" else 0) == data_word(m, 8, 8)
    assert s.sysreg_traps == (n if kind == "ipi" else 0)
    if kind == "alu":
        assert s.instructions > 10 * n


def rates(n=20_000, backend="core", repeat=5):
    """Measured rates of the micro-bench guests, the best of ``repeat`` runs
    (docs/run.md): cd tests; python -c 'import test_run as t; t.rates()'."""
    print(f"| guest ({backend}) | instructions/s | operations/s | us per operation |")
    print("|---|---:|---:|---:|")
    for kind in BENCH_KINDS:
        m, dt = min((bench(kind, n, backend) for _ in range(repeat)), key=lambda r: r[1])
        s = m.stats
        per = {"alu": s.instructions, "mmio_read_vgic": s.mmio_exits, "eoi": s.sysreg_accesses,
               "ipi": s.irqs, "sysreg_read": s.sysreg_accesses}[kind]
        print(f"| {kind} | {s.instructions / dt / 1e6:.2f} M | {per / dt:,.0f} | {dt / n * 1e6:.2f} |")


def test_cli_runs_an_image(tmp_path, capsys):
    """``vgic run IMAGE``: the UART output on stdout, the counts on stderr,
    exit status 0 after PSCI SYSTEM_OFF."""
    from vgic import cli
    asm = Asm()
    asm(mov64(1, run.UART_BASE))
    for ch in b"hi\n":
        asm(movz(2, ch), str32(2, 1, run.Pl011.DR))
    asm(system_off())
    image = tmp_path / "hi.flat"
    image.write_bytes(asm.image())
    assert cli.main(["run", str(image), "--backend", "core"]) == 0
    out, err = capsys.readouterr()
    assert out == "hi\n"
    assert "stopped: system_off" in err and "instructions" in err and "UART exits 3" in err


def test_the_public_binding_path_behaves_the_same(monkeypatch):
    """Without the binding's internals (another unicorn version), vgic.run
    falls back to the public reg_read/reg_write/hook_add: same guest, same counts."""
    real = run.importlib.import_module

    def no_internals(name, *args):
        if name == "unicorn.unicorn_py3.unicorn":
            raise ImportError(name)
        return real(name, *args)

    results = []
    for patch in (False, True):
        if patch:
            monkeypatch.setattr(run.importlib, "import_module", no_internals)
        asm = Asm()
        gic_setup(asm)
        asm(mov64(1, SGI0), movz(2, 1 << 5), str32(2, 1, R.GICR_ISENABLER0), daifclr(2))
        asm(mov64(2, 5 << 24 | 1), msr(ICC_SGI1R_EL1, 2))
        asm.label("spin")
        asm.b("spin")
        irq_handler(asm)
        m = machine("core")
        assert all(c.fast.raw is not patch for c in m.cpus)
        boot(m, asm)
        assert m.run(max_insns=100_000) == run.STOP_SYSTEM_OFF
        results.append((data_word(m), {k: v for k, v in m.stats.as_dict().items() if k != "seconds"}))
    assert results[0] == results[1]


# --------------------------------------------------- the C block hook
def spin_guest():
    """Two vCPUs: vCPU 1 (started by CPU_ON) spins in a YIELD loop until
    vCPU 0 has counted to 50,000 and set a flag; both then power off."""
    asm = Asm()
    asm(mov64(4, DATA), mov64(0, run.PSCI_CPU_ON_64), mov64(1, 0x8000_0001), movz(3, 0)).addr(2, "secondary")
    asm(hvc(0), mov64(0, 50_000)).label("count")
    asm(subs_imm(0, 0, 1))
    asm.b("count", cond=NE)
    asm(movz(2, 1), str32(2, 4, 0)).label("wait")
    asm(ldr32(2, 4, 4), subs_imm(2, 2, 1))
    asm.b("wait", cond=NE)
    asm(system_off())
    asm.label("secondary")
    asm(mov64(4, DATA)).label("spin")
    asm(0xD503_203F, ldr32(2, 4, 0), subs_imm(2, 2, 1))         # YIELD; wait for the flag
    asm.b("spin", cond=NE)
    asm(movz(2, 1), str32(2, 4, 4), b(0))
    return asm


def masked_guest():
    """SPI 40 pending (made so by the guest's own GICD_ISPENDR write) while
    PSTATE.I masks it for a loop of 2,000 turns, then DAIFClr: the IRQ is
    taken right after it, not before."""
    asm = Asm()
    gic_setup(asm, spi=40)
    asm(mov64(1, GICD), mov64(2, 1 << 8), str32(2, 1, R.GICD_ISPENDR + 4), mov64(0, 2_000)).label("loop")
    asm(add_imm(9, 9, 1), subs_imm(0, 0, 1))
    asm.b("loop", cond=NE)
    asm(str64(9, 4, 16), daifclr(2), b(0))
    irq_handler(asm)
    return asm


@pytest.mark.parametrize("kind", BENCH_KINDS + ["smp", "spin", "masked"])
def test_the_c_block_hook_counts_and_behaves_as_the_python_one(kind):
    """vgic._core.blockhook does the common case of the block hook in C and
    calls the Python hook for the rest: the same guest gives the same
    instruction count, exits, interrupts, yields and memory either way."""
    results = []
    for hook in ("c", "python"):
        m = machine("core", smp=2 if kind in ("smp", "spin") else 1, block_hook=hook)
        if run._c_block_hook is not None:
            assert isinstance(m.cpus[0].bs, run._BlockState) == (hook == "python")
        if kind == "spin":
            boot(m, spin_guest())
        elif kind == "masked":
            boot(m, masked_guest())
        elif kind == "smp":
            asm = Asm()
            gic_setup(asm)
            asm(mov64(0, run.PSCI_CPU_ON_64), mov64(1, 0x8000_0001), movz(3, 0x55)).addr(2, "secondary")
            asm(hvc(0), daifclr(2)).label("wait")
            asm(WFI)
            asm.b("wait")
            asm.label("secondary")
            asm(movz(2, 0xFF), msr(ICC_PMR_EL1, 2), movz(2, 1), msr(ICC_IGRPEN1_EL1, 2))
            asm(mov64(2, 3 << 24 | 1), msr(ICC_SGI1R_EL1, 2), mov64(0, run.PSCI_CPU_OFF), hvc(0), b(0))
            irq_handler(asm)
            boot(m, asm)
        else:
            boot(m, bench_guest(kind, 300))
        assert m.run(max_insns=2_000_000) == run.STOP_SYSTEM_OFF
        stats = {k: v for k, v in m.stats.as_dict().items() if k != "seconds"}
        results.append((stats, bytes(m.vm.memory[DATA - RAM:DATA - RAM + 64]), m.vm.counter))
    assert results[0] == results[1]
    if kind == "spin":
        assert results[0][0]["yields"] > 0          # the spin-wait gave its turns away
    if kind == "masked":
        # Taken once, after the 2,000 masked turns; the INTID and the count.
        assert results[0][0]["irqs"] == 1
        assert results[0][1][:4] == (40).to_bytes(4, "little")
        assert int.from_bytes(results[0][1][16:24], "little") == 2_000


def test_the_c_hook_reads_only_guest_ram():
    # The spin-wait test reads the block's words from guest RAM: anything
    # outside it, or running past its end, or wrapping, is not a spin-wait.
    from vgic._core.blockhook import BlockHook
    ram = bytearray(64)
    ram[8:12] = (0xD503_203F).to_bytes(4, "little")
    h = BlockHook(lambda a, s: None, ram, RAM)
    assert h.holds_hint(RAM, 16) and h.holds_hint(RAM + 8, 4)
    assert not h.holds_hint(RAM, 8) and not h.holds_hint(RAM + 12, 52)
    assert not h.holds_hint(RAM - 4, 16)                    # starts below RAM
    assert not h.holds_hint(RAM + 8, 64)                    # runs past its end
    assert not h.holds_hint((1 << 64) - 4, 8)               # wraps
    with pytest.raises(TypeError):
        BlockHook(None, ram, RAM)
    with pytest.raises(ValueError, match="ram_base"):
        BlockHook(lambda a, s: None, ram, -1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_el0_timer_access_closed_by_cntkctl_is_a_trapped_sysreg_access(backend):
    """CNTKCTL_EL1.EL0VCTEN = 0: an EL0 read of CNTVCT_EL0 is trapped to EL1
    as a system-register access, EC 0x18 with the instruction's Op0, Op2,
    Op1, CRn, Rt, CRm and Direction in ISS (Arm ARM D17.2.37, the
    CNTKCTL_EL1 controls in D11.8), not an UNDEF; opened, it reads the counter."""
    SPSR_EL1, SP_EL0, CNTKCTL = (3, 0, 4, 0, 0), (3, 0, 4, 1, 0), (3, 0, 14, 1, 0)
    results = []
    for kctl in (0, 1 << 1):
        asm = Asm()
        asm(mov64(0, VECTORS), msr(VBAR_EL1, 0), mov64(4, DATA), movz(0, kctl), msr(CNTKCTL, 0))
        asm(mov64(0, DATA + 0x800), add_imm(31, 0, 0), mov64(0, DATA + 0x400), msr(SP_EL0, 0))
        asm(movz(0, 0), msr(SPSR_EL1, 0)).addr(0, "el0")
        asm(msr(ELR_EL1, 0), ERET)
        asm.label("el0")
        asm(movz(2, 0), mrs(2, CNTVCT_EL0), str64(2, 4, 8), svc(0), b(0))
        asm.org(VECTORS + 0x400)
        asm(mrs(5, ESR_EL1), str64(5, 4, 0), system_off())
        m = machine(backend)
        boot(m, asm)
        assert m.run(max_insns=100_000) == run.STOP_SYSTEM_OFF
        results.append((data_word(m, 0, 8), data_word(m, 8, 8)))
    (esr_closed, _), (esr_open, value) = results
    iss = 3 << 20 | 2 << 17 | 3 << 14 | 14 << 10 | 2 << 5 | 0 << 1 | 1     # MRS X2, CNTVCT_EL0
    assert esr_closed >> 26 == 0x18 and esr_closed & 0x1FF_FFFF == iss
    assert esr_open >> 26 == 0x15 and value > 0                   # the SVC after a counter read


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_timer_fired_in_a_timer_register_access_wakes_the_blocked_vcpu(backend):
    """vCPU 1 arms its vtimer (its PPI not enabled in the GIC) and waits in
    WFI; vCPU 0, alone in the guest, polls a flag reading CNTVCT_EL0. The
    background timer fires inside one of those reads (the counter is synced
    before a timer register is read): vCPU 1 must still get its turn, wake
    (kvm_bg_timer_expire) and set the flag."""
    asm = Asm()
    asm(mov64(4, DATA), movz(3, 0), str32(3, 4, 0))
    asm(mov64(0, run.PSCI_CPU_ON_64), movz(1, 1)).addr(2, "secondary")
    asm(movz(3, 0), hvc(0)).label("poll")
    asm(mrs(5, CNTVCT_EL0), ldr32(3, 4, 0), subs_imm(3, 3, 1))
    asm.b("poll", cond=NE)
    asm(system_off())
    asm.label("secondary")
    asm(mov64(4, DATA), mov64(2, 20_000), msr(CNTV_TVAL_EL0, 2), movz(2, 1), msr(CNTV_CTL_EL0, 2))
    asm(WFI, movz(3, 1), str32(3, 4, 0)).label("spin")
    asm.b("spin")
    m = machine(backend, smp=2, ticks_per_insn=64)
    boot(m, asm)
    assert m.run(max_insns=3_000_000) == run.STOP_SYSTEM_OFF
    assert m.stats.instructions < 100_000


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_device_raising_a_line_at_a_user_exit_is_taken(backend):
    """A device of the VMM (here the UART, at the end of a line the guest
    printed) raises SPI 40 from inside the KVM_EXIT_MMIO that the UART write
    is: vm.irq_events moves, the next KVM_RUN entry flushes the SPI into an
    LR, and the guest, spinning with IRQs unmasked, takes it."""
    asm = Asm()
    gic_setup(asm, spi=40)
    asm(daifclr(2), mov64(1, run.UART_BASE), movz(2, 0x0A), str32(2, 1, run.Pl011.DR)).label("spin")
    asm.b("spin")
    irq_handler(asm)
    m = machine(backend)
    moved = []

    def on_line(line):
        seen = m.vm.irq_events
        m.set_irq_level(40, True)
        moved.append(m.vm.irq_events != seen)

    m.uart.on_line = on_line
    boot(m, asm)
    assert m.run(max_insns=100_000) == run.STOP_SYSTEM_OFF
    assert moved == [True] and data_word(m) == 40 and m.stats.irqs == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_machine_set_irq_level_kicks_a_vcpu_in_the_guest(backend):
    """Machine.set_irq_level while a vCPU is in the guest: KVM kicks it
    (vgic_queue_irq_unlock, kvm_vcpu_kick), it exits and enters, and the
    entry puts the SPI in an LR, so the CPU interface signals it at once;
    a line that makes nothing deliverable kicks nobody."""
    m = machine(backend)
    vm = m.vm
    d = vm.dist_base
    vm.mmio_write(d + R.GICD_CTLR, 4, 0x12)
    vm.mmio_write(d + R.GICD_ISENABLER + 4, 4, 1 << 8)             # SPI 40
    cpu, v = m.cpus[0], vm.vcpus[0]
    v.enter()
    v.sysreg_write("ICC_PMR_EL1", 0xFF)
    v.sysreg_write("ICC_IGRPEN1_EL1", 1)
    cpu.refresh()                                                # the group-enable maintenance exit
    assert cpu.irq_line is None
    m.set_irq_level(41, True)                                    # disabled: not deliverable, no kick
    assert v.pending_interrupt() is None and cpu.irq_line is None
    m.set_irq_level(40, True)
    assert v.running and v.pending_interrupt() == "irq" and cpu.irq_line == "irq"
    v.exit()


@pytest.mark.parametrize("hook", ["c", "python"])
def test_an_error_inside_a_hook_stops_the_run_and_is_raised(hook, monkeypatch):
    """A Python exception inside the MRS/MSR hook (or the block hook) cannot
    cross Unicorn: the hook records it, stops the emulation, and Machine.run
    raises it after emu_start returns - the guest does not run on."""
    asm = Asm()
    asm(mov64(1, DATA)).label("spin")
    asm(mrs(2, CNTVCT_EL0), str64(2, 1, 0))
    asm.b("spin")
    m = machine("core", block_hook=hook)
    boot(m, asm)

    def broken(self, reg):
        raise RuntimeError("boom in sysreg_read")

    monkeypatch.setattr(vgic.VCPU, "sysreg_read", broken)
    with pytest.raises(RuntimeError, match="boom in sysreg_read"):
        m.run(max_insns=1_000_000)
    assert m.stats.instructions < 1_000


def test_an_exception_vector_outside_ram_is_a_clear_error_not_a_hang():
    """VBAR_EL1 left at 0 (no RAM there) and an UNDEF: the exception's vector
    fetch aborts, and that abort's vector is the same address - the guest
    would take it forever without executing an instruction, which no
    instruction limit can end. The VMM stops with a RunError naming it."""
    asm = Asm()
    asm(0x0000_0000)                                # UDF #0
    m = machine("core")
    boot(m, asm)
    with pytest.raises(run.RunError, match="own exception vector 0x200"):
        m.run(max_insns=1_000)
