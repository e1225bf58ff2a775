"""End-to-end tests of a vCPU's world switch: guest MMIO set-up, injection,
enter (flush + hyp restore), the guest's ICC_*_EL1 accesses, exit (hyp save
+ fold), and what KVM's saved state and the GIC registers show afterwards.

The scenarios follow the KVM selftest tools/testing/selftests/kvm/arm64/
vgic_irq.c (guest_inject, test_inject_preemption, guest_restore_active,
level/edge and EOI-split variants) and kvm-unit-tests arm/gic.c (IPIs to a
target list and to "all but self", active-state checks through the
distributor).  Every expected value comes from kvm-facts.md (§3.2-§3.4 IRQ
state / injection / SGIs, §4 list registers and the 6.19 world switch, §6
the CPU_SYSREGS device group) or from the GICv3 architecture specification
IHI 0069 (§4.8 priorities and preemption, §12.3 ICV_* and §12.4 ICH_*
registers) -- never from running the model.
"""
import errno

import numpy as np
import pytest

import vgic
from vgic import ich, uapi
from vgic import regmap as R

SPURIOUS = 1023                       # IHI 0069 §2.2.1 special INTID "no pending interrupt"
GRP_SYSREGS = uapi.KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS

# ICH_HCR_EL2 bits (kvm-facts §4.2)
EN, UIE, LRENPIE, NPIE = 1 << 0, 1 << 1, 1 << 2, 1 << 3
VGRP0EIE, VGRP0DIE, VGRP1EIE, VGRP1DIE = 1 << 4, 1 << 5, 1 << 6, 1 << 7
VSGIEOICOUNT, TDIR = 1 << 8, 1 << 14

# ICH_LR<n>_EL2 fields (kvm-facts §4.1)
LR_EOI, LR_GROUP, LR_PENDING, LR_ACTIVE = 1 << 41, 1 << 60, 1 << 62, 1 << 63


# ======================================================================= helpers
def make_vm(nr_vcpus=2, nr_irqs=64, **kw):
    """A VM whose guest has enabled the distributor (GICD_CTLR.EnableGrp1,
    kvm-facts §1.3), as every guest in vgic_irq.c / gic.c does first."""
    vm = vgic.VM(nr_vcpus=nr_vcpus, nr_irqs=nr_irqs, **kw)
    vm.mmio_write(vm.dist_base + R.GICD_CTLR, 4, 2)
    assert vm.mmio_read(vm.dist_base + R.GICD_CTLR, 4) == 0x52
    return vm


def dist_rd(vm, off):
    return vm.mmio_read(vm.dist_base + off, 4)


def dist_bit(vm, base, intid):
    """Bit ``intid`` of a 1-bit-per-IRQ distributor register (GICD_IS*R)."""
    return (dist_rd(vm, base + (intid // 32) * 4) >> (intid % 32)) & 1


def sgi_frame_rd(vm, cpu, off):
    return vm.mmio_read(vm.vcpus[cpu].sgi_base + off, 4, cpu)


def sgi_frame_wr(vm, cpu, off, value):
    vm.mmio_write(vm.vcpus[cpu].sgi_base + off, 4, value, cpu)


def enable_spi(vm, intid, prio):
    """GICD_IPRIORITYR byte + GICD_ISENABLER bit (kvm-facts §1.2)."""
    vm.mmio_write(vm.dist_base + R.GICD_IPRIORITYR + intid, 1, prio)
    vm.mmio_write(vm.dist_base + R.GICD_ISENABLER + (intid // 32) * 4, 4, 1 << (intid % 32))


def make_level(vm, intid):
    """GICD_ICFGR: bit 2n+1 = 0 selects level (kvm-facts §1.2)."""
    off = R.GICD_ICFGR + (intid // 16) * 4
    vm.mmio_write(vm.dist_base + off, 4, dist_rd(vm, off) & ~(2 << (2 * (intid % 16))))
    assert vm.irq(intid).config == "level"


def set_private_prio(vm, cpu, intid, prio):
    vm.mmio_write(vm.vcpus[cpu].sgi_base + R.GICR_IPRIORITYR0 + intid, 1, prio, cpu)


def guest_open(vcpu, pmr=0xFF, grp0=False):
    """What a guest does at boot: open the priority mask, enable Group 1
    (and optionally Group 0)."""
    vcpu.sysreg_write("ICC_PMR_EL1", pmr)
    vcpu.sysreg_write("ICC_IGRPEN1_EL1", 1)
    if grp0:
        vcpu.sysreg_write("ICC_IGRPEN0_EL1", 1)


def ack(vcpu):
    return vcpu.sysreg_read("ICC_IAR1_EL1")


def eoi(vcpu, intid):
    vcpu.sysreg_write("ICC_EOIR1_EL1", intid)


def rpr(vcpu):
    return vcpu.sysreg_read("ICC_RPR_EL1")


def hyp_lrs(vcpu, nr_lrs):
    return [vcpu.hyp.read(f"ICH_LR{n}_EL2") for n in range(nr_lrs)]


def lr_pending_prios(vcpu, nr_lrs):
    """(priority, vINTID) of every LR in the Pending state (State 01)."""
    out = []
    for lr in hyp_lrs(vcpu, nr_lrs):
        if (lr >> 62) == 1:
            out.append(((lr >> 48) & 0xFF, lr & 0xFFFFFFFF))
    return out


def sysreg_attr(vcpu, enc):
    """CPU_SYSREGS attribute: MPIDR in [63:32], encoding in [15:0] (kvm-facts §6)."""
    return uapi.mpidr_to_attr(vcpu.mpidr) | enc


def assert_hw_clean_after_exit(vcpu, nr_lrs):
    """kvm-facts §4.3 save steps 2 and 5: every used LR is written 0 and
    ICH_HCR_EL2 is written 0 on exit."""
    assert hyp_lrs(vcpu, nr_lrs) == [0] * nr_lrs
    assert vcpu.hyp.read("ICH_HCR_EL2") == 0


# ============================================ acknowledgement in priority order
def _priority_rounds(nr_lrs, pri_bits, lr_order="direct"):
    """vgic_irq.c guest_inject: 32 SPIs, one per priority level (INTID 32+i
    has priority (31-i)*8, so INTID order is the reverse of priority order),
    all injected at once; the guest acks and EOIs everything it can see in
    each run.  Returns the per-round lists of acknowledged INTIDs."""
    vm = make_vm(nr_irqs=64, nr_lrs=nr_lrs, pri_bits=pri_bits, lr_order=lr_order)
    for i in range(32):
        enable_spi(vm, 32 + i, (31 - i) * 8)
    # GICD_IPRIORITYR keeps 5 bits (& 0xF8, kvm-facts §1.2): all 32 levels distinct.
    assert [vm.irq(32 + i).priority for i in range(32)] == [(31 - i) * 8 for i in range(32)]
    for i in range(32):
        vm.set_irq_level(32 + i, 1)
    v = vm.vcpus[0]
    rounds = []
    for rnd in range(40):
        v.enter()
        if rnd == 0:
            guest_open(v)
        else:
            # ICH_VMCR_EL2 is saved at exit and restored at load (kvm-facts
            # §4.3 step 3): the guest's PMR and IGRPEN1 persist.
            assert v.sysreg_read("ICC_IGRPEN1_EL1") == 1
        got = []
        while True:
            pend = lr_pending_prios(v, nr_lrs)
            intid = ack(v)
            if intid == SPURIOUS:
                break
            # IHI 0069 §4.8 / §6: the highest-priority pending LR is the one
            # acknowledged.
            assert vm.irq(intid).priority == min(p for p, _ in pend)
            got.append(intid)
            eoi(v, intid)
        v.exit()
        assert_hw_clean_after_exit(v, nr_lrs)
        if not got:
            break
        assert len(got) <= nr_lrs
        rounds.append(got)
    return vm, rounds


@pytest.mark.parametrize("lr_order", ["direct", "reverse"])
@pytest.mark.parametrize("nr_lrs", [16, 4])
def test_priority_order_31_levels_and_lowest_masked(nr_lrs, lr_order):
    """pri_bits=5: ICC_PMR_EL1 written 0xFF keeps 5 bits and reads 0xF8
    (IHI 0069 §12.3 ICV_PMR_EL1: unimplemented bits RAZ/WI); an interrupt is
    signalled only if its priority is numerically below the mask (IHI 0069
    §4.8), so priority 0xF8 is never acknowledged -- which is why vgic_irq.c
    cycles over only KVM_NUM_PRIOS - 1 = 31 levels with PMR 0xF8.

    With more pending than LRs KVM 6.19 sorts the ap_list by priority before
    filling the LRs (kvm-facts §4.6 step 2(d)), so the 31 deliverable
    interrupts arrive in global priority order, nr_lrs per run, each once."""
    vm, rounds = _priority_rounds(nr_lrs, pri_bits=5, lr_order=lr_order)
    delivered = [i for r in rounds for i in r]
    # priorities 0, 8, .., 240 = INTIDs 63, 62, .., 33
    assert delivered == list(range(63, 32, -1))
    assert len(set(delivered)) == 31
    expected_rounds = [list(range(63, 32, -1))[k:k + nr_lrs] for k in range(0, 31, nr_lrs)]
    assert rounds == expected_rounds
    # Priority 0xF8 stays pending (edge latch restored by the fold of its
    # still-pending LR, kvm-facts §4.5), visible in GICD_ISPENDR (§3.2).
    assert vm.irq(32).pending and not vm.irq(32).active
    assert dist_bit(vm, R.GICD_ISPENDR, 32) == 1
    assert all(not vm.irq(i).pending and not vm.irq(i).active for i in range(33, 64))
    v = vm.vcpus[0]
    v.enter()
    assert v.sysreg_read("ICC_PMR_EL1") == 0xF8
    assert ack(v) == SPURIOUS
    v.exit()


@pytest.mark.parametrize("nr_lrs", [16, 4])
def test_priority_order_all_32_levels_with_7_priority_bits(nr_lrs):
    """pri_bits=7: PMR 0xFF reads 0xFE (IHI 0069 §12.3), above the lowest
    distributor priority 0xF8, so all 32 levels 0, 8, .., 248 are delivered,
    in priority order (kvm-facts §4.6 step 2(d)), each exactly once."""
    vm, rounds = _priority_rounds(nr_lrs, pri_bits=7)
    delivered = [i for r in rounds for i in r]
    assert delivered == list(range(63, 31, -1))
    assert sorted(delivered) == list(range(32, 64))
    assert [len(r) for r in rounds] == [nr_lrs] * (32 // nr_lrs)
    assert all(not vm.irq(i).pending and not vm.irq(i).active for i in range(32, 64))
    v = vm.vcpus[0]
    v.enter()
    assert v.sysreg_read("ICC_PMR_EL1") == 0xFE
    assert ack(v) == SPURIOUS
    v.exit()


def test_lrs_hold_the_highest_priorities_when_overflowing():
    """kvm-facts §4.6 steps 2-3: with 32 pending and 4 LRs the first entry
    fills the LRs with the 4 highest priorities (0, 8, 16, 24), each as a
    pending Group 1 LR carrying the interrupt's priority (§4.4)."""
    vm = make_vm(nr_irqs=64, nr_lrs=4)
    for i in range(32):
        enable_spi(vm, 32 + i, (31 - i) * 8)
        vm.set_irq_level(32 + i, 1)
    v = vm.vcpus[0]
    v.enter()
    assert v.cpu_if.used_lrs == 4
    lrs = hyp_lrs(v, 4)
    assert sorted(lrs) == sorted(LR_PENDING | LR_GROUP | (p << 48) | (63 - p // 8)
                                 for p in (0, 8, 16, 24))
    # The LR carrying Pending consumed the edge latch (kvm-facts §4.4).
    assert not vm.irq(63).pending_latch
    v.exit()
    # ...and the fold puts it back while the guest has not taken it (§4.5).
    assert vm.irq(63).pending_latch


# ==================================================================== PMR masking
def test_pmr_masking_lower_and_raise():
    """IHI 0069 §4.8 / §12.3 ICV_IAR1_EL1: an interrupt whose priority is not
    strictly higher (numerically lower) than ICC_PMR_EL1 is not acknowledged
    (IAR1 reads 1023).  kvm-unit-tests gic.c / vgic_irq.c program the mask
    through ICC_PMR_EL1."""
    vm = make_vm()
    enable_spi(vm, 40, 0x80)
    vm.set_irq_level(40, 1)
    v = vm.vcpus[0]
    v.enter()
    guest_open(v, pmr=0x80)                  # priority == mask: masked
    assert v.sysreg_read("ICC_PMR_EL1") == 0x80
    assert ack(v) == SPURIOUS
    v.sysreg_write("ICC_PMR_EL1", 0x40)      # lower mask: still masked
    assert ack(v) == SPURIOUS
    v.sysreg_write("ICC_PMR_EL1", 0x00)      # 0 masks everything
    assert ack(v) == SPURIOUS
    v.exit()
    # Not taken: still pending in the distributor (kvm-facts §3.2, §4.5).
    assert vm.irq(40).pending and not vm.irq(40).active
    assert dist_bit(vm, R.GICD_ISPENDR, 40) == 1
    v.enter()
    assert v.sysreg_read("ICC_PMR_EL1") == 0x00   # VMCR persisted (§4.3)
    assert ack(v) == SPURIOUS
    v.sysreg_write("ICC_PMR_EL1", 0x87)      # 5 bits: reads 0x80, still masked
    assert v.sysreg_read("ICC_PMR_EL1") == 0x80
    assert ack(v) == SPURIOUS
    v.sysreg_write("ICC_PMR_EL1", 0x88)      # raise above 0x80: delivered
    assert ack(v) == 40
    eoi(v, 40)
    assert ack(v) == SPURIOUS
    v.exit()
    assert not vm.irq(40).pending and not vm.irq(40).active


def test_group1_disabled_is_not_acknowledged():
    """IHI 0069 §12.3 ICV_IGRPEN1_EL1: with Group 1 disabled (VMCR.VENG1=0,
    the reset VMCR is 0 -- kvm-facts §4.2) nothing of Group 1 is signalled."""
    vm = make_vm()
    enable_spi(vm, 40, 0x10)
    vm.set_irq_level(40, 1)
    v = vm.vcpus[0]
    v.enter()
    v.sysreg_write("ICC_PMR_EL1", 0xFF)
    assert v.sysreg_read("ICC_IGRPEN1_EL1") == 0
    assert ack(v) == SPURIOUS
    v.sysreg_write("ICC_IGRPEN1_EL1", 1)
    assert ack(v) == 40
    eoi(v, 40)
    v.exit()


# ===================================================================== preemption
def test_preemption_and_running_priority():
    """IHI 0069 §4.8 (preemption) and §12.3 ICV_RPR_EL1: while an interrupt is
    active the running priority is its group priority; only a strictly higher
    priority pending interrupt is acknowledged; after its EOI the running
    priority returns.  pre_bits=5, BPR1 at its minimum 3: group priority =
    priority for multiples of 8, and the active-priority bit is priority >> 3
    (IHI 0069 §12.4.1 ICH_AP1R0_EL2)."""
    vm = make_vm(nr_lrs=4)
    for intid, prio in ((40, 0x80), (41, 0x40), (42, 0xA0), (43, 0x80)):
        enable_spi(vm, intid, prio)
    v = vm.vcpus[0]
    vm.set_irq_level(40, 1)
    v.enter()
    guest_open(v)
    assert rpr(v) == 0xFF                     # idle
    assert ack(v) == 40
    assert rpr(v) == 0x80
    assert v.hyp.read("ICH_AP1R0_EL2") == 1 << (0x80 >> 3)
    v.exit()
    # 40 active across the exit (folded Active, kvm-facts §4.5).
    assert vm.irq(40).active
    for intid in (41, 42, 43):
        vm.set_irq_level(intid, 1)
    v.enter()
    assert rpr(v) == 0x80                     # APRs live in hardware until put
    assert ack(v) == 41                       # 0x40 < 0x80: preempts
    assert rpr(v) == 0x40
    assert v.hyp.read("ICH_AP1R0_EL2") == (1 << 16) | (1 << 8)
    assert ack(v) == SPURIOUS                 # 0x80 and 0xA0 cannot preempt 0x40
    eoi(v, 41)
    assert rpr(v) == 0x80
    assert v.hyp.read("ICH_AP1R0_EL2") == 1 << 16
    assert ack(v) == SPURIOUS                 # 43 has EQUAL priority 0x80: no preemption
    eoi(v, 40)
    assert rpr(v) == 0xFF
    assert v.hyp.read("ICH_AP1R0_EL2") == 0
    assert ack(v) == 43                       # now 0x80 before 0xA0
    assert rpr(v) == 0x80
    assert ack(v) == SPURIOUS                 # 0xA0 lower than running 0x80
    eoi(v, 43)
    assert ack(v) == 42
    assert rpr(v) == 0xA0
    eoi(v, 42)
    assert rpr(v) == 0xFF
    assert v.hyp.read("ICH_AP1R0_EL2") == 0
    assert ack(v) == SPURIOUS
    v.exit()
    for intid in (40, 41, 42, 43):
        st = vm.irq(intid)
        assert not st.active and not st.pending
    v.put()
    assert int(v.cpu_if.ap1r[0]) == 0         # saved at vcpu_put (kvm-facts §4.3)


@pytest.mark.parametrize("lr_order", ["direct", "reverse"])
def test_inject_preemption_like_vgic_irq(lr_order):
    """vgic_irq.c test_inject_preemption: 4 SPIs with descending priorities
    (INTID 32+i has priority (3-i)*8) injected one at a time; each preempts
    the previous one; then EOI from the highest priority down.  Afterwards
    nothing is active and ICV_AP1R0_EL1 reads 0."""
    vm = make_vm(nr_lrs=4, lr_order=lr_order)
    for i in range(4):
        enable_spi(vm, 32 + i, (3 - i) * 8)
    v = vm.vcpus[0]
    for i in range(4):
        vm.set_irq_level(32 + i, 1)
        v.enter()
        if i == 0:
            guest_open(v)
        assert ack(v) == 32 + i
        assert rpr(v) == (3 - i) * 8
        v.exit()
    assert all(vm.irq(32 + i).active for i in range(4))
    v.enter()
    # Running priority 0 (INTID 35): bits 3, 2, 1, 0 set for priorities 24..0.
    assert v.sysreg_read("ICC_AP1R0_EL1") == 0xF
    for i in reversed(range(4)):
        eoi(v, 32 + i)
    assert v.sysreg_read("ICC_AP1R0_EL1") == 0
    assert v.hyp.read("ICH_AP1R0_EL2") == 0
    assert ack(v) == SPURIOUS
    v.exit()
    assert all(not vm.irq(32 + i).active for i in range(4))
    for i in range(4):
        assert dist_bit(vm, R.GICD_ISACTIVER, 32 + i) == 0


def test_preemption_deeper_than_the_list_registers():
    """KVM 6.19 allows more active interrupts than LRs (kvm-facts header and
    §4.5-§4.6): 8 nested preemptions with 4 LRs.  The LR holding the new
    pending interrupt is filled first (comparator (c)); EOIs of interrupts
    outside the LRs still drop the priority and are counted in
    ICH_HCR_EL2.EOIcount (IHI 0069 §12.4.5), which KVM copies out because
    LRENPIE was set (nr_act > 0 and total > nr_lr, §4.6 step 4; §4.3 save
    step 4) and replays to deactivate them (§4.5)."""
    vm = make_vm(nr_lrs=4)
    n = 8
    for i in range(n):
        enable_spi(vm, 32 + i, (n - 1 - i) * 8)
    v = vm.vcpus[0]
    for i in range(n):
        vm.set_irq_level(32 + i, 1)
        v.enter()
        if i == 0:
            guest_open(v)
        if i >= 4:
            # i active + 1 pending > 4 LRs (kvm-facts §4.6 step 4).
            assert v.cpu_if.hcr & (LRENPIE | UIE) == LRENPIE | UIE
        assert ack(v) == 32 + i
        v.exit()
    assert all(vm.irq(32 + i).active for i in range(n))
    v.enter()
    assert v.cpu_if.used_lrs == 4
    assert v.cpu_if.hcr & LRENPIE
    assert rpr(v) == 0
    assert v.hyp.read("ICH_AP1R0_EL2") == 0xFF     # priorities 0..56 active
    for i in reversed(range(n)):
        eoi(v, 32 + i)
    assert v.hyp.read("ICH_AP1R0_EL2") == 0
    assert rpr(v) == 0xFF
    # 4 EOIs hit interrupts that were not in an LR.
    assert (v.hyp.read("ICH_HCR_EL2") >> 27) & 0x1F == 4
    v.exit()
    assert [vm.irq(32 + i).active for i in range(n)] == [False] * n
    assert dist_rd(vm, R.GICD_ISACTIVER + 4) == 0
    v.enter()
    assert ack(v) == SPURIOUS
    v.exit()


# ======================================================================= APRs
def test_restore_active_like_vgic_irq():
    """vgic_irq.c guest_restore_active (KVM_WRITE_ISACTIVER): userspace
    restores 4 active SPIs through GICD_ISACTIVER and their active
    priorities through the CPU_SYSREGS ICC_AP1R0_EL1 attribute (kvm-facts
    §6); after vcpu_load they are in ICH_AP1R0_EL2 (§4.3), the guest EOIs
    them highest priority first, and afterwards nothing is active and the
    APR reads 0."""
    vm = make_vm(nr_lrs=4)
    v = vm.vcpus[0]
    prios = [(3 - i) * 8 for i in range(4)]     # 24, 16, 8, 0
    for i in range(4):
        enable_spi(vm, 32 + i, prios[i])
    vm.mmio_write(vm.dist_base + R.GICD_ISACTIVER + 4, 4, 0xF)
    ap1r = sum(1 << (p >> 3) for p in prios)
    vm.set_device_attr(GRP_SYSREGS, sysreg_attr(v, 0xC648), ap1r)
    vm.set_device_attr(GRP_SYSREGS, sysreg_attr(v, 0xC230), 0xF8)
    vm.set_device_attr(GRP_SYSREGS, sysreg_attr(v, 0xC667), 1)
    v.enter()
    assert v.hyp.read("ICH_AP1R0_EL2") == 0xF
    assert rpr(v) == 0
    for i in reversed(range(4)):
        eoi(v, 32 + i)
    assert v.sysreg_read("ICC_AP1R0_EL1") == 0
    assert ack(v) == SPURIOUS
    v.exit()
    assert all(not vm.irq(32 + i).active for i in range(4))
    v.put()
    assert vm.get_device_attr(GRP_SYSREGS, sysreg_attr(v, 0xC648)) == 0


def test_aprs_saved_at_put_and_restored_at_load():
    """kvm-facts §4.3: the APRs are saved at vcpu_put and restored (with
    VMCR) at vcpu_load.  An acknowledged-not-EOI'd interrupt leaves its
    active-priority bit set across put/load; EOI then clears it."""
    vm = make_vm(pri_bits=6, pre_bits=6)
    enable_spi(vm, 40, 0x60)
    vm.set_irq_level(40, 1)
    v = vm.vcpus[0]
    v.enter()
    guest_open(v)
    assert ack(v) == 40
    # 6 preemption bits: bit index = group priority >> 2 (IHI 0069 §12.4.1),
    # BPR1 minimum 2 keeps bits [7:2].
    assert v.hyp.read("ICH_AP1R0_EL2") == 1 << (0x60 >> 2)
    assert v.hyp.read("ICH_AP1R1_EL2") == 0
    v.exit()
    v.put()
    assert int(v.cpu_if.ap1r[0]) == 1 << 24 and int(v.cpu_if.ap1r[1]) == 0
    v.load()
    assert v.hyp.read("ICH_AP1R0_EL2") == 1 << 24
    v.enter()
    assert rpr(v) == 0x60
    eoi(v, 40)
    assert v.hyp.read("ICH_AP1R0_EL2") == 0
    v.exit()
    v.put()
    assert int(v.cpu_if.ap1r[0]) == 0
    assert not vm.irq(40).active


# ====================================================================== level / edge
def test_level_repends_while_line_high():
    """kvm-facts §3.2 / §4.5: a level interrupt acked and EOI'd has its latch
    cleared at fold, but stays pending while its line is high, so it is
    delivered again on the next entry.  Its LR asks for an EOI maintenance
    interrupt (EOI bit, §4.4)."""
    vm = make_vm()
    make_level(vm, 40)
    enable_spi(vm, 40, 0x20)
    vm.set_irq_level(40, 1)
    v = vm.vcpus[0]
    v.enter()
    guest_open(v)
    assert v.hyp.read("ICH_LR0_EL2") == LR_PENDING | LR_GROUP | LR_EOI | (0x20 << 48) | 40
    assert ack(v) == 40
    eoi(v, 40)
    # The LR is invalid now: nothing else within this run (IHI 0069 §12.3).
    assert ack(v) == SPURIOUS
    v.exit()
    st = vm.irq(40)
    assert st.line_level and not st.pending_latch and st.pending and not st.active
    assert dist_bit(vm, R.GICD_ISPENDR, 40) == 1
    v.enter()
    assert ack(v) == 40                        # re-pended: delivered again
    v.exit()
    # Acked with the line high: active, and (level) still reads pending (§3.2).
    assert vm.irq(40).active
    assert dist_bit(vm, R.GICD_ISACTIVER, 40) == 1
    assert dist_bit(vm, R.GICD_ISPENDR, 40) == 1
    vm.set_irq_level(40, 0)                    # the device drops the line
    v.enter()
    eoi(v, 40)
    v.exit()
    st = vm.irq(40)
    assert not st.pending and not st.active
    v.enter()
    assert ack(v) == SPURIOUS                  # not re-pended
    v.exit()


def test_edge_does_not_repend():
    """kvm-facts §4.4: an edge interrupt's latch is consumed when its LR
    carries Pending; once acked and EOI'd it is gone (vgic_irq.c
    guest_irq_generic_handler asserts !pending after the ack of an edge IRQ)."""
    vm = make_vm()
    enable_spi(vm, 40, 0x20)
    vm.set_irq_level(40, 1)
    v = vm.vcpus[0]
    v.enter()
    guest_open(v)
    assert v.hyp.read("ICH_LR0_EL2") == LR_PENDING | LR_GROUP | (0x20 << 48) | 40
    assert ack(v) == 40
    eoi(v, 40)
    v.exit()
    assert not vm.irq(40).pending and not vm.irq(40).active
    assert dist_bit(vm, R.GICD_ISPENDR, 40) == 0
    v.enter()
    assert ack(v) == SPURIOUS
    v.exit()


def test_edge_reinjected_while_active_is_delivered_again():
    """kvm-facts §4.4 / §4.5: an edge interrupt raised again while active is
    put in its LR as pending+active; the EOI leaves it pending (IHI 0069
    §12.3 ICV_EOIR1_EL1: deactivation of 11 gives 01) and it is acknowledged
    once more."""
    vm = make_vm()
    enable_spi(vm, 40, 0x20)
    vm.set_irq_level(40, 1)
    v = vm.vcpus[0]
    v.enter()
    guest_open(v)
    assert ack(v) == 40
    v.exit()
    vm.set_irq_level(40, 1)                    # new edge while active
    st = vm.irq(40)
    assert st.active and st.pending_latch
    v.enter()
    assert v.hyp.read("ICH_LR0_EL2") >> 62 == 3
    assert ack(v) == SPURIOUS                  # pending+active is not signalled
    eoi(v, 40)
    assert ack(v) == 40
    eoi(v, 40)
    v.exit()
    assert not vm.irq(40).pending and not vm.irq(40).active


def test_ppi_level_line():
    """A level PPI (vm.set_irq_level with a vCPU, kvm-facts §3.3; PPIs reset
    level and disabled, §1.6) on vCPU 1 is delivered there only.  (PPI 23:
    27 and 30 belong to the arch timers once a vCPU runs.)"""
    vm = make_vm()
    sgi_frame_wr(vm, 1, R.GICR_ISENABLER0, 1 << 23)
    set_private_prio(vm, 1, 23, 0x30)
    vm.set_irq_level(23, 1, vcpu=1)
    v0, v1 = vm.vcpus
    v0.enter()
    guest_open(v0)
    assert ack(v0) == SPURIOUS
    v0.exit()
    v1.enter()
    guest_open(v1)
    assert ack(v1) == 23
    vm.set_irq_level(23, 0, vcpu=1)
    eoi(v1, 23)
    v1.exit()
    assert not vm.irq(23, 1).pending and not vm.irq(23, 1).active


# ========================================================================= EOImode 1
@pytest.mark.parametrize("dir_in_next_run", [False, True])
def test_eoimode1_dir(dir_in_next_run):
    """IHI 0069 §12.3 ICV_EOIR1_EL1 / ICV_DIR_EL1: with ICC_CTLR_EL1.EOImode
    (bit 1) set, EOIR only drops the priority; the interrupt stays active
    (visible after exit, kvm-facts §4.5) until ICC_DIR_EL1 deactivates it
    (trapped by TDIR when an SPI is in flight and handled by KVM, §4.5)."""
    vm = make_vm()
    enable_spi(vm, 40, 0x20)
    vm.set_irq_level(40, 1)
    v = vm.vcpus[0]
    v.enter()
    guest_open(v)
    v.sysreg_write("ICC_CTLR_EL1", 2)
    assert v.sysreg_read("ICC_CTLR_EL1") & 3 == 2
    assert ack(v) == 40
    eoi(v, 40)
    assert rpr(v) == 0xFF                      # priority dropped
    assert v.hyp.read("ICH_AP1R0_EL2") == 0
    assert ack(v) == SPURIOUS
    v.exit()
    assert vm.irq(40).active
    assert dist_bit(vm, R.GICD_ISACTIVER, 40) == 1
    assert v.cpu_if.vmcr & ich.VMCR_EOIM      # saved VMCR carries VEOIM
    v.enter()
    if not dir_in_next_run:
        assert v.sysreg_read("ICC_CTLR_EL1") & 2  # persisted through VMCR
    v.sysreg_write("ICC_DIR_EL1", 40)
    v.exit()
    assert not vm.irq(40).active
    assert dist_bit(vm, R.GICD_ISACTIVER, 40) == 0
    v.enter()
    assert ack(v) == SPURIOUS
    v.exit()


def test_eoimode1_dir_in_same_run():
    """As above, DIR issued in the same run as the EOI (vgic_irq.c with
    eoi_split: EOIR then DIR in the handler)."""
    vm = make_vm()
    make_level(vm, 41)
    enable_spi(vm, 41, 0x20)
    vm.set_irq_level(41, 1)
    v = vm.vcpus[0]
    v.enter()
    guest_open(v)
    v.sysreg_write("ICC_CTLR_EL1", 2)
    assert ack(v) == 41
    vm.set_irq_level(41, 0)
    eoi(v, 41)
    v.sysreg_write("ICC_DIR_EL1", 41)
    v.exit()
    st = vm.irq(41)
    assert not st.active and not st.pending


# ============================================================================ SGIs
def sgi1r(intid, targets=0, aff1=0, irm=False):
    """ICC_SGI1R_EL1 value (kvm-facts §3.4): TargetList [15:0], Aff1 [23:16],
    INTID [27:24], IRM bit 40."""
    return targets | (aff1 << 16) | (intid << 24) | ((1 << 40) if irm else 0)


def pending_sgis(vm, intid):
    return [vm.irq(intid, c).pending for c in range(vm.nr_vcpus)]


def test_sgi_to_target_list():
    """kvm-unit-tests gic.c ipi test / kvm-facts §3.4: IRM=0, for each set bit
    b of TargetList the vCPU with MPIDR 0.0.0.b gets the SGI pending; it is
    acknowledged there with the SGI's INTID (GICv3: no source field)."""
    vm = make_vm(nr_vcpus=4)
    v0 = vm.vcpus[0]
    v0.enter()
    guest_open(v0)
    v0.sysreg_write("ICC_SGI1R_EL1", sgi1r(3, targets=0b0110))
    assert ack(v0) == SPURIOUS
    v0.exit()
    assert pending_sgis(vm, 3) == [False, True, True, False]
    assert (sgi_frame_rd(vm, 1, R.GICR_ISPENDR0) >> 3) & 1 == 1
    for c, want in ((1, 3), (2, 3), (3, SPURIOUS)):
        v = vm.vcpus[c]
        v.enter()
        guest_open(v)
        got = ack(v)
        assert got == want
        if got != SPURIOUS:
            eoi(v, got)
        v.exit()
    assert pending_sgis(vm, 3) == [False] * 4


def test_sgi_to_self():
    """gic.c ipi "self": TargetList bit of the sender's own Aff0 pends the SGI
    on the sender; it arrives at its next entry (kvm-facts §3.4, §4.6)."""
    vm = make_vm(nr_vcpus=2)
    v0 = vm.vcpus[0]
    v0.enter()
    guest_open(v0)
    v0.sysreg_write("ICC_SGI1R_EL1", sgi1r(9, targets=0b1))
    v0.exit()
    assert pending_sgis(vm, 9) == [True, False]
    v0.enter()
    assert ack(v0) == 9
    eoi(v0, 9)
    v0.exit()


def test_sgi_broadcast_irm():
    """kvm-unit-tests gic.c ipi "broadcast" / kvm-facts §3.4: IRM=1 sends to
    every vCPU except the sender; TargetList is then ignored."""
    vm = make_vm(nr_vcpus=4)
    v1 = vm.vcpus[1]
    v1.enter()
    guest_open(v1)
    v1.sysreg_write("ICC_SGI1R_EL1", sgi1r(5, targets=0b10, irm=True))
    v1.exit()
    assert pending_sgis(vm, 5) == [True, False, True, True]
    for c in (0, 2, 3):
        v = vm.vcpus[c]
        v.enter()
        guest_open(v)
        assert ack(v) == 5
        eoi(v, 5)
        assert ack(v) == SPURIOUS
        v.exit()
    v1.enter()
    assert ack(v1) == SPURIOUS
    v1.exit()


def test_sgi_nonexistent_targets_skipped():
    """kvm-facts §3.4: a TargetList bit naming no vCPU is skipped; so is an
    Aff1 value no vCPU has."""
    vm = make_vm(nr_vcpus=2)
    v0 = vm.vcpus[0]
    v0.enter()
    guest_open(v0)
    v0.sysreg_write("ICC_SGI1R_EL1", sgi1r(7, targets=0xFFFC))   # Aff0 2..15: none exist
    v0.sysreg_write("ICC_SGI1R_EL1", sgi1r(8, targets=0x0003, aff1=1))  # 0.0.1.x: none
    v0.sysreg_write("ICC_SGI1R_EL1", sgi1r(6, targets=0xFFFF))   # only 0 and 1 exist
    v0.exit()
    assert pending_sgis(vm, 7) == [False, False]
    assert pending_sgis(vm, 8) == [False, False]
    assert pending_sgis(vm, 6) == [True, True]


def test_sgi_aff1_routing():
    """kvm-facts §1.5 default MPIDR (Aff0 = id[3:0], Aff1 = id[11:4]) and §3.4:
    SGI1R with Aff1=1, TargetList bit 1 reaches vCPU 17 (MPIDR 0.0.1.1) only."""
    vm = make_vm(nr_vcpus=18)
    assert vm.vcpus[17].mpidr & 0xFFFF == 0x0101
    v0 = vm.vcpus[0]
    v0.enter()
    guest_open(v0)
    v0.sysreg_write("ICC_SGI1R_EL1", sgi1r(4, targets=0b10, aff1=1))
    v0.exit()
    assert [c for c in range(18) if vm.irq(4, c).pending] == [17]


def test_sgi0r_only_group0():
    """kvm-facts §3.4: ICC_SGI0R_EL1 (and ICC_ASGI1R_EL1) only raise SGIs
    configured Group 0 (GICR_IGROUPR0 bit clear); a Group 1 SGI is silently
    dropped.  ICC_SGI1R_EL1 may raise either group.  The Group 0 SGI is
    acknowledged through ICC_IAR0_EL1 (IHI 0069 §12.3) and not IAR1."""
    vm = make_vm(nr_vcpus=2)
    # SGI 2 on vCPU 1 becomes Group 0 (reset: all Group 1, kvm-facts §1.6).
    sgi_frame_wr(vm, 1, R.GICR_IGROUPR0, 0xFFFFFFFF & ~(1 << 2))
    assert vm.irq(2, 1).group == 0 and vm.irq(4, 1).group == 1
    v0 = vm.vcpus[0]
    v0.enter()
    guest_open(v0)
    v0.sysreg_write("ICC_SGI0R_EL1", sgi1r(4, targets=0b10))     # Group 1: dropped
    v0.sysreg_write("ICC_ASGI1R_EL1", sgi1r(4, targets=0b10))    # Group 1: dropped
    v0.exit()
    assert pending_sgis(vm, 4) == [False, False]
    v0.enter()
    v0.sysreg_write("ICC_SGI0R_EL1", sgi1r(2, targets=0b10))     # Group 0: raised
    v0.exit()
    assert pending_sgis(vm, 2) == [False, True]
    v1 = vm.vcpus[1]
    v1.enter()
    guest_open(v1, grp0=True)
    assert ack(v1) == SPURIOUS                 # IAR1 does not ack Group 0
    assert v1.sysreg_read("ICC_IAR0_EL1") == 2
    v1.sysreg_write("ICC_EOIR0_EL1", 2)
    v1.exit()
    assert not vm.irq(2, 1).pending and not vm.irq(2, 1).active
    # SGI1R raises the Group 0 SGI too (allow_group1 covers both groups).
    v0.enter()
    v0.sysreg_write("ICC_SGI1R_EL1", sgi1r(2, targets=0b10))
    v0.exit()
    assert pending_sgis(vm, 2) == [False, True]


def test_sgi_registers_are_write_only():
    """kvm-facts §3.4: reads of the SGI generation registers UNDEF."""
    vm = make_vm()
    v = vm.vcpus[0]
    v.enter()
    for name in ("ICC_SGI1R_EL1", "ICC_ASGI1R_EL1", "ICC_SGI0R_EL1"):
        with pytest.raises(vgic.UndefinedInstruction):
            v.sysreg_read(name)
    v.exit()


def test_sgi_vsgieoicount_in_hcr():
    """kvm-facts §4.6 step 4: vSGIEOICount is set only when no SGI is queued
    for the vCPU."""
    vm = make_vm(nr_vcpus=2)
    v0, v1 = vm.vcpus
    v0.enter()
    guest_open(v0)
    assert v0.cpu_if.hcr & VSGIEOICOUNT
    v0.sysreg_write("ICC_SGI1R_EL1", sgi1r(1, targets=0b10))
    v0.exit()
    v1.enter()
    assert not v1.cpu_if.hcr & VSGIEOICOUNT
    v1.exit()


# ======================================================== GICD/GICR after exit
def test_distributor_agrees_with_folded_lrs():
    """kvm-unit-tests gic.c active-state checks / kvm-facts §4.5 + §3.2: after
    exit GICD_ISACTIVER shows an acked-not-EOI'd SPI active (and, edge, not
    pending); GICD_ISPENDR shows a not-acked one pending."""
    vm = make_vm(nr_lrs=4)
    enable_spi(vm, 40, 0x10)
    enable_spi(vm, 41, 0x20)
    vm.set_irq_level(40, 1)
    vm.set_irq_level(41, 1)
    v = vm.vcpus[0]
    v.enter()
    guest_open(v)
    assert ack(v) == 40
    v.exit()
    isact = dist_rd(vm, R.GICD_ISACTIVER + 4)
    ispend = dist_rd(vm, R.GICD_ISPENDR + 4)
    assert isact == 1 << (40 - 32)
    assert ispend == 1 << (41 - 32)
    assert dist_rd(vm, R.GICD_ICACTIVER + 4) == isact      # IC* read the same state
    assert dist_rd(vm, R.GICD_ICPENDR + 4) == ispend
    # The saved LRs carry exactly that (kvm-facts §4.3 save step 2).
    saved = {int(x) & 0xFFFFFFFF: int(x) >> 62 for x in v.cpu_if.lr if int(x)}
    assert saved == {40: 2, 41: 1}
    assert v.cpu_if.used_lrs == 0
    # The guest finishes in the next run; the distributor follows.
    v.enter()
    eoi(v, 40)
    assert ack(v) == 41
    v.exit()
    assert dist_rd(vm, R.GICD_ISACTIVER + 4) == 1 << (41 - 32)
    assert dist_rd(vm, R.GICD_ISPENDR + 4) == 0
    v.enter()
    eoi(v, 41)
    v.exit()
    assert dist_rd(vm, R.GICD_ISACTIVER + 4) == 0


def test_redistributor_agrees_with_folded_lrs():
    """As above for an SGI in the redistributor's SGI_base frame
    (GICR_ISPENDR0 / GICR_ISACTIVER0, kvm-facts §1.6)."""
    vm = make_vm(nr_vcpus=2)
    v0 = vm.vcpus[0]
    v0.enter()
    guest_open(v0)
    v0.sysreg_write("ICC_SGI1R_EL1", sgi1r(1, targets=0b1))
    v0.exit()
    assert sgi_frame_rd(vm, 0, R.GICR_ISPENDR0) & 0xFFFF == 1 << 1
    assert sgi_frame_rd(vm, 0, R.GICR_ISACTIVER0) & 0xFFFF == 0
    v0.enter()
    assert ack(v0) == 1
    v0.exit()
    assert sgi_frame_rd(vm, 0, R.GICR_ISPENDR0) & 0xFFFF == 0
    assert sgi_frame_rd(vm, 0, R.GICR_ISACTIVER0) & 0xFFFF == 1 << 1
    assert sgi_frame_rd(vm, 1, R.GICR_ISACTIVER0) == 0
    v0.enter()
    eoi(v0, 1)
    v0.exit()
    assert sgi_frame_rd(vm, 0, R.GICR_ISACTIVER0) == 0


def test_icpendr_after_exit_withdraws_interrupt():
    """kvm-facts §3.2: a guest GICD_ICPENDR write clears the latch; an SPI
    that was pending but not acknowledged is then not delivered at the next
    entry (the prune drops it, §3.3)."""
    vm = make_vm()
    enable_spi(vm, 45, 0x10)
    vm.set_irq_level(45, 1)
    v = vm.vcpus[0]
    v.enter()
    guest_open(v, pmr=0x00)                   # masked: not taken
    v.exit()
    assert dist_bit(vm, R.GICD_ISPENDR, 45) == 1
    vm.mmio_write(vm.dist_base + R.GICD_ICPENDR + 4, 4, 1 << (45 - 32))
    v.enter()
    v.sysreg_write("ICC_PMR_EL1", 0xFF)
    assert ack(v) == SPURIOUS
    v.exit()


def test_spi_routed_by_irouter():
    """kvm-facts §1.4: GICD_IROUTER<n> = vCPU 1's affinity routes the SPI to
    vCPU 1; vCPU 0 never sees it."""
    vm = make_vm(nr_vcpus=2)
    enable_spi(vm, 50, 0x10)
    vm.mmio_write(vm.dist_base + R.GICD_IROUTER + 8 * 50, 8, vm.vcpus[1].mpidr & 0xFFFFFF)
    vm.set_irq_level(50, 1)
    v0, v1 = vm.vcpus
    v0.enter()
    guest_open(v0)
    assert ack(v0) == SPURIOUS
    v0.exit()
    v1.enter()
    guest_open(v1)
    assert ack(v1) == 50
    eoi(v1, 50)
    v1.exit()


# =================================================== save/restore and LR order
def _scenario(lr_order):
    """One guest scenario; returns everything guest-visible plus KVM's saved
    LR slots at the interesting moments.  SPIs 40 (0x30), 41 (0x10), 42
    (0x50) edge and 44 (0x20) level, injected in that order; 4 LRs."""
    vm = make_vm(nr_lrs=4, lr_order=lr_order)
    v = vm.vcpus[0]
    make_level(vm, 44)
    for intid, prio in ((40, 0x30), (41, 0x10), (42, 0x50), (44, 0x20)):
        enable_spi(vm, intid, prio)
        vm.set_irq_level(intid, 1)
    out = {}
    seen = []

    def look(intid):
        seen.append((intid, rpr(v), v.sysreg_read("ICC_HPPIR1_EL1"), v.hyp.read("ICH_AP1R0_EL2")))

    v.enter()
    guest_open(v)
    out["slots_entry"] = [int(x) for x in v.cpu_if.lr]
    out["hyp_entry"] = hyp_lrs(v, 4)
    out["used"] = v.cpu_if.used_lrs
    out["hcr"] = v.cpu_if.hcr
    look(ack(v))
    eoi(v, 41)
    look(ack(v))
    out["hyp_before_exit"] = hyp_lrs(v, 4)
    v.exit()
    out["slots_exit"] = [int(x) for x in v.cpu_if.lr]
    out["dist_exit"] = (dist_rd(vm, R.GICD_ISPENDR + 4), dist_rd(vm, R.GICD_ISACTIVER + 4))
    vm.set_irq_level(44, 0)
    v.enter()
    look(ack(v))
    eoi(v, 44)
    for _ in range(3):
        intid = ack(v)
        look(intid)
        if intid != SPURIOUS:
            eoi(v, intid)
    v.exit()
    out["seen"] = seen
    out["final"] = [vm.irq(i) for i in (40, 41, 42, 44)]
    out["vmcr"] = v.cpu_if.vmcr
    return vm, v, out


def test_lr_storage_order_and_round_trip():
    """kvm-facts §4.1 and API.md: KVM's saved LR i lives in slot i
    ("direct", current kernels) or slot 15-i ("reverse", v4.5 hyp code);
    restore writes ICH_LR<i> from it, save writes it back from ICH_LR<i>
    (§4.3).  Both orders give the same guest-visible results, bit-identical
    LR contents (just mirrored), zeroed hardware LRs and ICH_HCR_EL2 = 0
    after exit."""
    vm_d, v_d, d = _scenario("direct")
    vm_r, v_r, r = _scenario("reverse")
    # Guest-visible results are identical.
    assert d["seen"] == r["seen"]
    assert d["final"] == r["final"]
    assert d["dist_exit"] == r["dist_exit"]
    assert d["hyp_entry"] == r["hyp_entry"] and d["hyp_before_exit"] == r["hyp_before_exit"]
    assert d["hcr"] == r["hcr"] and d["vmcr"] == r["vmcr"] and d["used"] == r["used"] == 4
    # Concrete values (IHI 0069 §4.8 priority order and preemption; §12.3
    # ICV_RPR_EL1 / ICV_HPPIR1_EL1, which ignores the running priority;
    # §12.4.1 AP1R0 bit = priority >> 3 with 5 preemption bits).
    assert d["seen"] == [
        (41, 0x10, 44, 1 << 2),         # run 1: highest first
        (44, 0x20, 40, 1 << 4),         # after EOI 41
        (SPURIOUS, 0x20, 40, 1 << 4),   # run 2: 40 (0x30) cannot preempt 44 (0x20)
        (40, 0x30, 42, 1 << 6),         # after EOI 44
        (42, 0x50, SPURIOUS, 1 << 10),
        (SPURIOUS, 0xFF, SPURIOUS, 0),
    ]
    # Entry LRs: ap_list order = injection order, no sort with 4 <= 4 LRs
    # (kvm-facts §3.3, §4.6 steps 2-3); pending, Group 1, priority in
    # [55:48], the level one with the EOI maintenance bit (§4.4).
    assert d["hyp_entry"] == [
        LR_PENDING | LR_GROUP | (0x30 << 48) | 40,
        LR_PENDING | LR_GROUP | (0x10 << 48) | 41,
        LR_PENDING | LR_GROUP | (0x50 << 48) | 42,
        LR_PENDING | LR_GROUP | LR_EOI | (0x20 << 48) | 44,
    ]
    # Storage order: LR n at slot n (direct) or 15-n (reverse).
    for n in range(4):
        assert d["slots_entry"][n] == d["hyp_entry"][n]
        assert r["slots_entry"][15 - n] == r["hyp_entry"][n]
    assert d["slots_entry"][4:] == [0] * 12
    assert r["slots_entry"][:12] == [0] * 12
    assert d["slots_entry"] == r["slots_entry"][::-1]
    assert d["slots_exit"] == r["slots_exit"][::-1]
    # Save copied the hardware LRs bit for bit.
    for n in range(4):
        assert d["slots_exit"][n] == d["hyp_before_exit"][n]
        assert r["slots_exit"][15 - n] == r["hyp_before_exit"][n]
    # ...which were: 40 and 42 still pending, 41 done, 44 active (a level
    # interrupt's LR is not pending while active, §4.4).
    assert [x >> 62 for x in d["hyp_before_exit"]] == [1, 0, 1, 2]
    # Distributor after run 1: pending 40, 42 and 44 (level, line high:
    # §3.2), active 44.
    assert d["dist_exit"] == ((1 << 8) | (1 << 10) | (1 << 12), 1 << 12)
    # After exit: the hardware is clean (kvm-facts §4.3 save steps 2, 5).
    for v in (v_d, v_r):
        assert_hw_clean_after_exit(v, 4)
        assert v.cpu_if.used_lrs == 0
    for st in d["final"]:
        assert not st.active and not st.pending


def test_enter_exit_without_guest_action_is_a_bit_identical_round_trip():
    """kvm-facts §4.3: with no guest activity, what save stores equals what
    restore loaded, in both orders; ICH_VMCR_EL2 round-trips through the
    saved copy too."""
    for order in ("direct", "reverse"):
        vm = make_vm(nr_lrs=2, lr_order=order)
        for intid, prio in ((33, 0x40), (34, 0x48), (35, 0x50)):
            enable_spi(vm, intid, prio)
            vm.set_irq_level(intid, 1)
        v = vm.vcpus[0]
        v.enter()
        guest_open(v, pmr=0xA0)
        loaded = hyp_lrs(v, 2)
        vmcr = v.hyp.read("ICH_VMCR_EL2")
        v.exit()
        slots = [int(x) for x in v.cpu_if.lr]
        got = [slots[n] if order == "direct" else slots[15 - n] for n in range(2)]
        assert got == loaded
        assert v.cpu_if.vmcr == vmcr
        # VPMR [31:24] = 0xA0, VENG1 (kvm-facts §4.2).
        assert (vmcr >> 24) & 0xFF == 0xA0 and vmcr & ich.VMCR_ENG1
        assert_hw_clean_after_exit(v, 2)
        v.put()
        v.load()
        assert v.hyp.read("ICH_VMCR_EL2") == vmcr


# ===================================================================== vcpu.hyp
@pytest.mark.parametrize("nr_lrs,pri_bits,pre_bits", [
    (1, 5, 5), (4, 5, 5), (2, 6, 5), (8, 7, 6), (16, 7, 7), (16, 6, 6)])
def test_ich_vtr_and_lr_count(nr_lrs, pri_bits, pre_bits):
    """kvm-facts §4.2 ICH_VTR_EL2: ListRegs [4:0] = count-1, PREbits [28:26]
    and PRIbits [31:29] = count-1.  ICH_LR<n> for n >= count is UNDEFINED
    (IHI 0069 §12.4.6)."""
    vm = make_vm(nr_lrs=nr_lrs, pri_bits=pri_bits, pre_bits=pre_bits)
    v = vm.vcpus[0]
    vtr = v.hyp.read("ICH_VTR_EL2")
    assert vtr & 0x1F == nr_lrs - 1
    assert (vtr >> 26) & 7 == pre_bits - 1
    assert (vtr >> 29) & 7 == pri_bits - 1
    assert v.cpu_if.nr_lrs == nr_lrs
    assert v.hyp.read(f"ICH_LR{nr_lrs - 1}_EL2") == 0
    if nr_lrs < 16:
        with pytest.raises(vgic.UndefinedInstruction):
            v.hyp.read(f"ICH_LR{nr_lrs}_EL2")
        with pytest.raises(vgic.UndefinedInstruction):
            v.hyp.write("ICH_LR15_EL2", 0)


@pytest.mark.parametrize("pre_bits,nr_aprs", [(5, 1), (6, 2), (7, 4)])
def test_apr_count(pre_bits, nr_aprs):
    """kvm-facts §4.2: APRs per group = 2^(PREbits+1-5): 1, 2, 4 for 5, 6, 7
    preemption bits; the rest are UNDEFINED (IHI 0069 §12.4.1/§12.4.2), for
    the guest's ICC_AP1R<n>_EL1 as well (§12.3)."""
    vm = make_vm(pri_bits=7, pre_bits=pre_bits)
    v = vm.vcpus[0]
    assert v.cpu_if.nr_aprs == nr_aprs
    v.enter()
    for n in range(4):
        for grp in (0, 1):
            name = f"ICH_AP{grp}R{n}_EL2"
            icc = f"ICC_AP{grp}R{n}_EL1"
            if n < nr_aprs:
                assert v.hyp.read(name) == 0
                assert v.sysreg_read(icc) == 0
            else:
                with pytest.raises(vgic.UndefinedInstruction):
                    v.hyp.read(name)
                with pytest.raises(vgic.UndefinedInstruction):
                    v.sysreg_read(icc)
    v.exit()


def test_ich_ap1r1_undef_with_5_preemption_bits():
    """kvm-facts §4.2: with 5 preemption bits only ICH_AP1R0_EL2 exists; with
    6, ICH_AP1R1_EL2 exists."""
    v5 = make_vm(pre_bits=5).vcpus[0]
    with pytest.raises(vgic.UndefinedInstruction):
        v5.hyp.read("ICH_AP1R1_EL2")
    v6 = make_vm(pri_bits=6, pre_bits=6).vcpus[0]
    assert v6.hyp.read("ICH_AP1R1_EL2") == 0


# ==================================================================== misuse
def test_sysreg_access_requires_running_vcpu():
    """API.md: sysreg_read/write are the guest's view while entered."""
    vm = make_vm()
    v = vm.vcpus[0]
    with pytest.raises(vgic.VgicError):
        v.sysreg_read("ICC_PMR_EL1")
    with pytest.raises(vgic.VgicError):
        v.sysreg_write("ICC_PMR_EL1", 0xFF)
    v.load()
    with pytest.raises(vgic.VgicError):
        v.sysreg_read("ICC_IAR1_EL1")
    v.enter()
    assert v.sysreg_read("ICC_PMR_EL1") == 0   # reset VMCR = 0 (kvm-facts §4.2)
    v.exit()
    with pytest.raises(vgic.VgicError):
        v.sysreg_read("ICC_RPR_EL1")


def test_unknown_sysreg_is_undefined():
    """API.md: a name the model does not know raises UndefinedInstruction
    (a subclass of VgicError)."""
    vm = make_vm()
    v = vm.vcpus[0]
    v.enter()
    for reg in ("ICC_NOPE_EL1", "ICH_LR0_EL2", (3, 0, 12, 13, 0)):
        with pytest.raises(vgic.UndefinedInstruction):
            v.sysreg_read(reg)
        with pytest.raises(vgic.UndefinedInstruction):
            v.sysreg_write(reg, 0)
    with pytest.raises(vgic.UndefinedInstruction):
        v.hyp.read("ICH_NOPE_EL2")
    assert issubclass(vgic.UndefinedInstruction, vgic.VgicError)
    # An encoding tuple is accepted for a known register (API.md).
    v.sysreg_write((3, 0, 4, 6, 0), 0x90)
    assert v.sysreg_read("ICC_PMR_EL1") == 0x90
    v.exit()


def test_enter_twice_put_while_running_exit_twice():
    """vm.py contract: enter() while running, put() while running and exit()
    while not running are errors (VgicError)."""
    vm = make_vm()
    v = vm.vcpus[0]
    v.enter()
    assert v.running and v.loaded
    with pytest.raises(vgic.VgicError):
        v.enter()
    with pytest.raises(vgic.VgicError):
        v.put()
    v.exit()
    with pytest.raises(vgic.VgicError):
        v.exit()
    v.put()
    assert not v.loaded


# ================================================================= ICH_HCR_EL2
def test_hcr_idle_first_entry():
    """kvm-facts §4.6 step 4 with nothing queued and the reset VMCR (0):
    En | vSGIEOICount | VGrp0EIE | VGrp1EIE; restored to ICH_HCR_EL2 (§4.3)."""
    vm = make_vm()
    v = vm.vcpus[0]
    v.enter()
    assert v.cpu_if.hcr == EN | VSGIEOICOUNT | VGRP0EIE | VGRP1EIE
    assert v.hyp.read("ICH_HCR_EL2") == v.cpu_if.hcr
    guest_open(v, grp0=True)
    v.exit()
    assert v.hyp.read("ICH_HCR_EL2") == 0
    v.enter()
    # Both groups now enabled in the saved VMCR: the *disable* interrupts.
    assert v.cpu_if.hcr == EN | VSGIEOICOUNT | VGRP0DIE | VGRP1DIE
    v.sysreg_write("ICC_IGRPEN0_EL1", 0)
    v.exit()
    v.enter()
    assert v.cpu_if.hcr == EN | VSGIEOICOUNT | VGRP0EIE | VGRP1DIE
    v.exit()


@pytest.mark.parametrize("npend,extra", [
    (3, 0), (4, 0), (5, UIE | NPIE)])
def test_hcr_underflow_bits_with_more_pending_than_lrs(npend, extra):
    """kvm-facts §4.6 step 4: NPIE when nr_pend > nr_lr, UIE when total >
    nr_lr; TDIR because SPIs are in flight VM-wide; VGrp1DIE because the
    saved VMCR has VENG1 set (ICC_IGRPEN1_EL1 written in an earlier run)."""
    vm = make_vm(nr_lrs=4)
    v = vm.vcpus[0]
    v.enter()
    guest_open(v)
    v.exit()
    for i in range(npend):
        enable_spi(vm, 32 + i, 0x40)
        vm.set_irq_level(32 + i, 1)
    v.enter()
    assert v.cpu_if.used_lrs == min(npend, 4)
    assert v.cpu_if.hcr == EN | VSGIEOICOUNT | VGRP0EIE | VGRP1DIE | TDIR | extra
    v.exit()


def test_hcr_lrenpie_with_actives_and_overflow():
    """kvm-facts §4.6 step 4: LRENPIE when something is active and the total
    exceeds the LRs."""
    vm = make_vm(nr_lrs=1)
    enable_spi(vm, 40, 0x40)
    enable_spi(vm, 41, 0x20)
    vm.set_irq_level(40, 1)
    v = vm.vcpus[0]
    v.enter()
    guest_open(v)
    assert v.cpu_if.hcr & (LRENPIE | UIE | NPIE) == 0
    assert ack(v) == 40
    v.exit()
    vm.set_irq_level(41, 1)
    v.enter()
    # 1 active + 1 pending > 1 LR; only 1 pending, so no NPIE.
    assert v.cpu_if.hcr & (LRENPIE | UIE | NPIE) == LRENPIE | UIE
    # The pending one got the only LR (comparator (c)) and preempts 40.
    assert ack(v) == 41
    eoi(v, 41)
    eoi(v, 40)                                 # 40 is not in an LR: EOIcount
    v.exit()
    assert not vm.irq(40).active and not vm.irq(41).active


# ========================================================= CPU_SYSREGS (group 6)
def test_cpu_sysregs_pmr_round_trip():
    """kvm-facts §6: ICC_PMR_EL1 is 0xC230; value written is read back."""
    vm = make_vm()
    v = vm.vcpus[1]
    attr = sysreg_attr(v, 0xC230)
    vm.set_device_attr(GRP_SYSREGS, attr, 0xF0)
    assert vm.get_device_attr(GRP_SYSREGS, attr) == 0xF0
    # the other vCPU is untouched
    assert vm.get_device_attr(GRP_SYSREGS, sysreg_attr(vm.vcpus[0], 0xC230)) == 0


@pytest.mark.parametrize("pri_bits", [5, 6, 7])
def test_cpu_sysregs_ctlr_read(pri_bits):
    """kvm-facts §6: ICC_CTLR_EL1 (0xC664) reads PRIbits = pri_bits-1 in
    [10:8], IDbits 0 (16-bit), SEIS 0, A3V (bit 15) as the host."""
    vm = make_vm(pri_bits=pri_bits, pre_bits=5)
    v = vm.vcpus[0]
    val = vm.get_device_attr(GRP_SYSREGS, sysreg_attr(v, 0xC664))
    assert (val >> 8) & 7 == pri_bits - 1
    assert val & (1 << 15)
    assert val == (1 << 15) | ((pri_bits - 1) << 8)


def test_cpu_sysregs_ctlr_write_rules():
    """kvm-facts §6: ICC_CTLR_EL1 writes need PRIbits+1 <= the host's (else
    EINVAL), A3V/SEIS equal to the host; CBPR/EOImode are stored and the
    guest sees EOImode after load."""
    vm = make_vm(pri_bits=5)
    v = vm.vcpus[0]
    attr = sysreg_attr(v, 0xC664)
    with pytest.raises(vgic.KvmError) as ei:
        vm.set_device_attr(GRP_SYSREGS, attr, (1 << 15) | (5 << 8))   # 6 bits > 5
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(vgic.KvmError) as ei:
        vm.set_device_attr(GRP_SYSREGS, attr, 4 << 8)                 # A3V cleared
    assert ei.value.errno == errno.EINVAL
    vm.set_device_attr(GRP_SYSREGS, attr, (1 << 15) | (4 << 8) | 2)  # EOImode
    assert vm.get_device_attr(GRP_SYSREGS, attr) == (1 << 15) | (4 << 8) | 2
    v.enter()
    assert v.sysreg_read("ICC_CTLR_EL1") & 2 == 2
    v.exit()


def test_cpu_sysregs_sre():
    """kvm-facts §6: ICC_SRE_EL1 (0xC665) reads 0x7; a write with SRE=0 is
    EINVAL, SRE=1 is accepted."""
    vm = make_vm()
    attr = sysreg_attr(vm.vcpus[0], 0xC665)
    assert vm.get_device_attr(GRP_SYSREGS, attr) == 7
    with pytest.raises(vgic.KvmError) as ei:
        vm.set_device_attr(GRP_SYSREGS, attr, 0)
    assert ei.value.errno == errno.EINVAL
    vm.set_device_attr(GRP_SYSREGS, attr, 7)
    assert vm.get_device_attr(GRP_SYSREGS, attr) == 7


def test_cpu_sysregs_apr_index_limit():
    """kvm-facts §6: APnR index above the maximum for the priority bits
    (5 bits -> 0, 6 -> 1, 7 -> 3) is EINVAL; ICC_AP1R1 is 0xC649."""
    vm5 = make_vm(pri_bits=5)
    attr = sysreg_attr(vm5.vcpus[0], 0xC649)
    assert vm5.has_device_attr(GRP_SYSREGS, attr)      # still advertised
    for call in (lambda: vm5.get_device_attr(GRP_SYSREGS, attr),
                 lambda: vm5.set_device_attr(GRP_SYSREGS, attr, 1)):
        with pytest.raises(vgic.KvmError) as ei:
            call()
        assert ei.value.errno == errno.EINVAL
    vm6 = make_vm(pri_bits=6, pre_bits=6)
    attr6 = sysreg_attr(vm6.vcpus[0], 0xC649)
    vm6.set_device_attr(GRP_SYSREGS, attr6, 0x10)
    assert vm6.get_device_attr(GRP_SYSREGS, attr6) == 0x10
    with pytest.raises(vgic.KvmError) as ei:
        vm6.get_device_attr(GRP_SYSREGS, sysreg_attr(vm6.vcpus[0], 0xC64A))
    assert ei.value.errno == errno.EINVAL


def test_cpu_sysregs_unknown_encoding_and_mpidr():
    """kvm-facts §6: an encoding that is not a vGICv3 CPU register is ENXIO
    (here ICC_IAR1_EL1 (3,0,12,12,0) = 0xC660, and 0xC231); an MPIDR no vCPU
    has is EINVAL."""
    vm = make_vm(nr_vcpus=2)
    for enc in (0xC660, 0xC231):
        with pytest.raises(vgic.KvmError) as ei:
            vm.get_device_attr(GRP_SYSREGS, sysreg_attr(vm.vcpus[0], enc))
        assert ei.value.errno == errno.ENXIO
        with pytest.raises(vgic.KvmError) as ei:
            vm.set_device_attr(GRP_SYSREGS, sysreg_attr(vm.vcpus[0], enc), 0)
        assert ei.value.errno == errno.ENXIO
    ghost = uapi.mpidr_to_attr(vgic.default_mpidr(5)) | 0xC230
    with pytest.raises(vgic.KvmError) as ei:
        vm.get_device_attr(GRP_SYSREGS, ghost)
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(vgic.KvmError) as ei:
        vm.set_device_attr(GRP_SYSREGS, ghost, 0xF0)
    assert ei.value.errno == errno.EINVAL


def test_cpu_sysregs_pmr_reaches_the_guest_after_load():
    """kvm-facts §6 + §4.3: CPU_SYSREGS acts on the saved VMCR; vcpu_load
    restores it into ICH_VMCR_EL2, so after put / set attr / enter the guest
    reads the new ICC_PMR_EL1 and the masking follows it."""
    vm = make_vm()
    v = vm.vcpus[0]
    enable_spi(vm, 40, 0x70)
    v.enter()
    guest_open(v)
    v.exit()
    v.put()
    pmr = sysreg_attr(v, 0xC230)
    vm.set_device_attr(GRP_SYSREGS, pmr, 0x70)
    vm.set_irq_level(40, 1)
    v.enter()
    assert v.sysreg_read("ICC_PMR_EL1") == 0x70
    assert ack(v) == SPURIOUS                  # priority 0x70 == mask
    v.exit()
    v.put()
    vm.set_device_attr(GRP_SYSREGS, pmr, 0x78)
    v.enter()
    assert v.sysreg_read("ICC_PMR_EL1") == 0x78
    assert ack(v) == 40
    eoi(v, 40)
    v.exit()


def test_cpu_sysregs_see_guest_state_after_exit():
    """kvm-facts §4.3 save step 3 (6.19): VMCR is saved at every exit, so the
    guest's PMR / IGRPEN1 / EOImode are visible through CPU_SYSREGS right
    after exit; ICC_IGRPEN1_EL1 is 0xC667."""
    vm = make_vm()
    v = vm.vcpus[0]
    v.enter()
    v.sysreg_write("ICC_PMR_EL1", 0x60)
    v.sysreg_write("ICC_IGRPEN1_EL1", 1)
    v.sysreg_write("ICC_CTLR_EL1", 2)
    v.exit()
    assert vm.get_device_attr(GRP_SYSREGS, sysreg_attr(v, 0xC230)) == 0x60
    assert vm.get_device_attr(GRP_SYSREGS, sysreg_attr(v, 0xC667)) == 1
    assert vm.get_device_attr(GRP_SYSREGS, sysreg_attr(v, 0xC664)) & 3 == 2


def test_cpu_sysregs_igrpen1_enables_delivery():
    """kvm-facts §6 ICC_IGRPEN1_EL1 (0xC667) set by userspace: the guest can
    acknowledge without writing IGRPEN1 itself."""
    vm = make_vm()
    v = vm.vcpus[0]
    vm.set_device_attr(GRP_SYSREGS, sysreg_attr(v, 0xC667), 1)
    vm.set_device_attr(GRP_SYSREGS, sysreg_attr(v, 0xC230), 0xF8)
    enable_spi(vm, 33, 0x08)
    vm.set_irq_level(33, 1)
    v.enter()
    assert v.sysreg_read("ICC_IGRPEN1_EL1") == 1
    assert ack(v) == 33
    eoi(v, 33)
    v.exit()


def test_cpu_sysregs_ctlr_pribits_cannot_be_raised_again():
    """kvm-facts §6: an ICC_CTLR_EL1 write needs PRIbits+1 <= the vCPU's
    *current* number of priority bits, which the write then updates
    (vgic-sys-reg-v3.c set_gic_ctlr compares against
    vgic_cpu->num_pri_bits).  So after lowering 7 -> 5 bits, writing 7 back
    is EINVAL; and the APnR index limit follows (5 bits: only AP1R0)."""
    vm = make_vm(pri_bits=7, pre_bits=5)
    v = vm.vcpus[0]
    ctlr = sysreg_attr(v, 0xC664)
    assert vm.get_device_attr(GRP_SYSREGS, ctlr) == (1 << 15) | (6 << 8)
    assert vm.get_device_attr(GRP_SYSREGS, sysreg_attr(v, 0xC649)) == 0    # AP1R1 ok at 7 bits
    vm.set_device_attr(GRP_SYSREGS, ctlr, (1 << 15) | (4 << 8))             # lower to 5 bits
    assert vm.get_device_attr(GRP_SYSREGS, ctlr) == (1 << 15) | (4 << 8)
    with pytest.raises(vgic.KvmError) as ei:
        vm.get_device_attr(GRP_SYSREGS, sysreg_attr(v, 0xC649))
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(vgic.KvmError) as ei:
        vm.set_device_attr(GRP_SYSREGS, ctlr, (1 << 15) | (6 << 8))         # 7 > current 5
    assert ei.value.errno == errno.EINVAL
    assert vm.get_device_attr(GRP_SYSREGS, ctlr) == (1 << 15) | (4 << 8)


# ============================================================ more EOImode 1
def test_eoimode1_ppi_dir_without_tdir():
    """kvm-facts §4.6 step 4: with no SPI in flight and nothing active
    outside the LRs TDIR is clear, so ICC_DIR_EL1 is handled by the virtual
    interface on the LR (IHI 0069 §12.3 ICV_DIR_EL1)."""
    vm = make_vm(nr_vcpus=1)
    sgi_frame_wr(vm, 0, R.GICR_ISENABLER0, 1 << 23)
    set_private_prio(vm, 0, 23, 0x40)
    vm.set_irq_level(23, 1, vcpu=0)
    v = vm.vcpus[0]
    v.enter()
    assert not v.cpu_if.hcr & TDIR
    guest_open(v)
    v.sysreg_write("ICC_CTLR_EL1", 2)
    assert ack(v) == 23
    vm.set_irq_level(23, 0, vcpu=0)
    eoi(v, 23)
    v.exit()
    assert vm.irq(23, 0).active
    assert (sgi_frame_rd(vm, 0, R.GICR_ISACTIVER0) >> 23) & 1 == 1
    v.enter()
    assert not v.cpu_if.hcr & TDIR
    v.sysreg_write("ICC_DIR_EL1", 23)
    assert v.hyp.read("ICH_LR0_EL2") >> 62 == 0
    v.exit()
    assert not vm.irq(23, 0).active and not vm.irq(23, 0).pending


def test_eoimode1_dir_of_interrupt_outside_the_lrs():
    """kvm-facts §4.5 (EOImode=1) and §4.6: with 1 LR, an active SPI that
    lost its LR to a pending one sets TDIR; the guest's DIR of it traps and
    KVM deactivates it by synthesising an LR without Active; the DIR of the
    one in the LR is handled on the LR.  Both end inactive."""
    vm = make_vm(nr_lrs=1)
    enable_spi(vm, 40, 0x40)
    enable_spi(vm, 41, 0x20)
    vm.set_irq_level(40, 1)
    v = vm.vcpus[0]
    v.enter()
    guest_open(v)
    v.sysreg_write("ICC_CTLR_EL1", 2)
    assert ack(v) == 40
    eoi(v, 40)                                 # priority drop only
    v.exit()
    vm.set_irq_level(41, 1)
    v.enter()
    assert v.cpu_if.hcr & TDIR
    assert v.hyp.read("ICH_LR0_EL2") & 0xFFFFFFFF == 41
    assert ack(v) == 41
    eoi(v, 41)
    v.sysreg_write("ICC_DIR_EL1", 40)
    v.sysreg_write("ICC_DIR_EL1", 41)
    v.exit()
    assert not vm.irq(40).active and not vm.irq(41).active
    assert dist_rd(vm, R.GICD_ISACTIVER + 4) == 0


def test_eoimode1_dir_from_another_vcpu_owner_not_running():
    """kvm-facts §4.5: DIR (trapped: an SPI is in flight) of an SPI that is
    active and queued on another vCPU that is not running -- KVM
    synthesises an LR without Active, folds it and asks the owner to prune."""
    vm = make_vm(nr_vcpus=2)
    enable_spi(vm, 40, 0x40)
    vm.set_irq_level(40, 1)
    v0, v1 = vm.vcpus
    v0.enter()
    guest_open(v0)
    v0.sysreg_write("ICC_CTLR_EL1", 2)
    assert ack(v0) == 40
    eoi(v0, 40)
    v0.exit()
    assert vm.irq(40).active
    v1.enter()
    assert v1.cpu_if.hcr & TDIR
    v1.sysreg_write("ICC_CTLR_EL1", 2)
    v1.sysreg_write("ICC_DIR_EL1", 40)
    v1.exit()
    assert not vm.irq(40).active
    v0.enter()
    assert ack(v0) == SPURIOUS
    v0.exit()


def test_eoimode1_dir_from_another_vcpu_while_owner_runs():
    """kvm-facts §4.5: DIR of an SPI that is in an LR of another (running)
    vCPU is "treated as a GICD_ICACTIVER write (halts all vCPUs)": the owner
    is forced out, its LR folded, and the interrupt deactivated.  So after
    both vCPUs exit the SPI is inactive."""
    vm = make_vm(nr_vcpus=2)
    enable_spi(vm, 40, 0x40)
    vm.set_irq_level(40, 1)
    v0, v1 = vm.vcpus
    v0.enter()
    guest_open(v0)
    v0.sysreg_write("ICC_CTLR_EL1", 2)
    assert ack(v0) == 40
    eoi(v0, 40)                                # vCPU 0 keeps running
    v1.enter()
    assert v1.cpu_if.hcr & TDIR                # an SPI is in flight VM-wide
    v1.sysreg_write("ICC_CTLR_EL1", 2)
    v1.sysreg_write("ICC_DIR_EL1", 40)
    v1.exit()
    v0.exit()
    assert not vm.irq(40).active
    assert dist_bit(vm, R.GICD_ISACTIVER, 40) == 0


def test_active_state_access_while_owner_runs():
    """kvm-facts §4.5 / KVM's active-state MMIO accessors
    (vgic_access_active_prepare halts all vCPUs for GICv3): active-state
    accesses observe and change interrupts held in a running vCPU's LRs.
    vCPU 1 reads GICD_ISACTIVER while vCPU 0 has SPI 40 acknowledged in an
    LR (reads 1), then clears it with GICD_ICACTIVER; after vCPU 0 exits it
    is inactive."""
    vm = make_vm(nr_vcpus=2)
    enable_spi(vm, 40, 0x40)
    vm.set_irq_level(40, 1)
    v0 = vm.vcpus[0]
    v0.enter()
    guest_open(v0)
    assert ack(v0) == 40
    isactive = vm.mmio_read(vm.dist_base + R.GICD_ISACTIVER + 4, 4, 1)
    vm.mmio_write(vm.dist_base + R.GICD_ICACTIVER + 4, 4, 1 << 8, 1)
    v0.exit()
    assert (isactive >> 8) & 1 == 1
    assert not vm.irq(40).active


def test_private_active_read_while_owner_runs_sees_lr():
    """kvm-facts §2 (guest ISACTIVER/ICACTIVER halt all vCPUs, GICv3 always):
    GICR_ISACTIVER0 read by the owner's redistributor while the owner runs
    with an acknowledged PPI in an LR folds the LR first, so it reads 1; the
    owner resumes with the PPI still active in its LRs."""
    vm = make_vm(nr_vcpus=1)
    sgi_frame_wr(vm, 0, R.GICR_ISENABLER0, 1 << 20)
    set_private_prio(vm, 0, 20, 0x40)
    vm.set_irq_level(20, 1, vcpu=0)            # PPI: level by reset
    v = vm.vcpus[0]
    v.enter()
    guest_open(v)
    assert ack(v) == 20
    assert (sgi_frame_rd(vm, 0, R.GICR_ISACTIVER0) >> 20) & 1 == 1
    assert v.running
    # Re-flushed after the halt: the PPI is back in an LR, active.
    assert any((lr & 0xFFFFFFFF) == 20 and lr & LR_ACTIVE for lr in hyp_lrs(v, 4))
    eoi(v, 20)
    vm.set_irq_level(20, 0, vcpu=0)
    v.exit()
    assert not vm.irq(20, vcpu=0).active


def acked_spi_40(nr_vcpus=1):
    """vCPU 0 runs with SPI 40 acknowledged: Active in its LR only; the
    distributor's state says inactive until the LR is folded at an exit."""
    vm = make_vm(nr_vcpus=nr_vcpus)
    enable_spi(vm, 40, 0x40)
    vm.set_irq_level(40, 1)
    v = vm.vcpus[0]
    v.enter()
    guest_open(v)
    assert ack(v) == 40
    assert not vm.irq(40).active
    return vm, v


def test_halt_hook_set_only_while_a_vcpu_runs():
    vm = make_vm(nr_vcpus=2)
    assert vm.bus.halt_hook is None
    v = vm.vcpus[1]
    v.enter()
    assert vm.bus.halt_hook is not None
    v.exit()
    assert vm.bus.halt_hook is None


@pytest.mark.parametrize("what", ["byte access", "private word", "unmapped SGI-frame word",
                                  "ISENABLER", "replay without active access"])
def test_accesses_that_do_not_reach_an_active_handler_do_not_halt(what):
    """KVM halts the guest inside its active-state handlers
    (vgic_access_active_prepare), which only run for an access check_region
    accepts (kvm-facts §2): a byte access to GICD_ISACTIVER (32-bit only),
    the RAZ/WI private word GICD_ISACTIVER0, an unmapped word of the SGI
    frame, or any other register do not halt, so the running vCPU's LR is
    not folded (the distributor still says inactive)."""
    vm, v = acked_spi_40()
    d = vm.dist_base
    if what == "byte access":
        vm.mmio_read(d + R.GICD_ISACTIVER + 5, 1)
    elif what == "private word":
        vm.mmio_write(d + R.GICD_ICACTIVER, 4, 0xFFFFFFFF)
    elif what == "unmapped SGI-frame word":
        vm.mmio_read(v.sgi_base + R.GICR_ISACTIVER0 + 4, 4, 0)
    elif what == "ISENABLER":
        vm.mmio_read(d + R.GICD_ISENABLER + 4, 4)
    else:
        trace = np.zeros(2, dtype=vgic.MMIO_ACCESS)
        trace[0] = (d + R.GICD_ISENABLER + 4, 0, 0, 4, 0)
        trace[1] = (d + R.GICD_IPRIORITYR + 40, 0x40, 0, 1, 1)
        vm.mmio_replay(trace)
    assert not vm.irq(40).active
    v.exit()
    assert vm.irq(40).active                   # folded at the real exit


def test_rejected_replay_halts_nothing():
    """mmio_replay validates the whole trace first; a rejected trace runs
    no access (issue #2), so it halts no vCPU either."""
    vm, v = acked_spi_40()
    trace = np.zeros(2, dtype=vgic.MMIO_ACCESS)
    trace[0] = (vm.dist_base + R.GICD_ICACTIVER + 4, 1 << 8, 0, 4, 1)
    trace[1] = (vm.dist_base + R.GICD_CTLR, 0, 0, 3, 0)          # size 3: bad
    with pytest.raises(ValueError, match=r"trace\[1\]"):
        vm.mmio_replay(trace)
    assert not vm.irq(40).active
    v.exit()
    assert vm.irq(40).active


def test_replay_halts_around_each_active_access_only():
    """A replay behaves as its accesses made one by one: an edge SPI whose
    pending state moved into a running vCPU's LR reads 0 in GICD_ISPENDR
    (the latch was consumed by the flush, kvm-facts §4.4); a GICD_ISACTIVER
    read halts the vCPU (fold: the latch comes back, §4.5) and resumes it
    (flush: consumed again), so the next ISPENDR read is 0 again."""
    vm = make_vm(nr_vcpus=1)
    enable_spi(vm, 40, 0x40)
    vm.set_irq_level(40, 1)
    v = vm.vcpus[0]
    v.enter()
    d = vm.dist_base
    trace = np.zeros(3, dtype=vgic.MMIO_ACCESS)
    trace[0] = (d + R.GICD_ISPENDR + 4, 0, 0, 4, 0)
    trace[1] = (d + R.GICD_ISACTIVER + 4, 0, 0, 4, 0)
    trace[2] = (d + R.GICD_ISPENDR + 4, 0, 0, 4, 0)
    out = [(int(x) >> 8) & 1 for x in vm.mmio_replay(trace)]
    assert out == [0, 0, 0]
    one_by_one = [(vm.mmio_read(int(t["addr"]), 4) >> 8) & 1 for t in trace]
    assert one_by_one == out
    guest_open(v)
    assert ack(v) == 40                        # still delivered after the halts
    v.exit()


def test_tdir_set_by_count_of_active_interrupts():
    """KVM 6.19 vgic_v3_configure_hcr (kvm-facts §4.6): TDIR is set when
    irqs_active_outside_lrs(), a count test -- an active interrupt and more
    interrupts than LRs -- even if the sort put the active one in an LR.
    1 LR; PPI 20 (Group 1) active, PPI 21 (Group 0, disabled) pending: the
    comparator puts 20 in the LR (enabled group first), LRENPIE and TDIR set."""
    vm = make_vm(nr_vcpus=1, nr_lrs=1)
    sgi_frame_wr(vm, 0, R.GICR_ISENABLER0, (1 << 20) | (1 << 21))
    sgi_frame_wr(vm, 0, R.GICR_IGROUPR0, 0xFFFFFFFF & ~(1 << 21))
    vm.set_irq_level(20, 1, vcpu=0)
    v = vm.vcpus[0]
    v.enter()
    guest_open(v)                              # IGRPEN1 only: Group 0 off
    assert ack(v) == 20
    v.exit()
    vm.set_irq_level(21, 1, vcpu=0)
    v.enter()
    lr0 = v.hyp.read("ICH_LR0_EL2")
    assert lr0 & 0xFFFFFFFF == 20 and lr0 & LR_ACTIVE
    assert v.cpu_if.hcr & LRENPIE
    assert v.cpu_if.hcr & TDIR
    v.exit()


def test_replay_while_vcpu_runs_halts_it():
    """A trace replayed while a vCPU runs is run with every vCPU halted
    (documented: the whole trace is one halt), so an ICACTIVER write in it
    deactivates an SPI held active in the running vCPU's LR."""
    vm = make_vm(nr_vcpus=1)
    enable_spi(vm, 40, 0x40)
    vm.set_irq_level(40, 1)
    v = vm.vcpus[0]
    v.enter()
    guest_open(v)
    assert ack(v) == 40
    trace = np.zeros(2, dtype=vgic.MMIO_ACCESS)
    trace[0] = (vm.dist_base + R.GICD_ISACTIVER + 4, 0, 0, 4, 0)
    trace[1] = (vm.dist_base + R.GICD_ICACTIVER + 4, 1 << 8, 0, 4, 1)
    out = vm.mmio_replay(trace)
    assert (int(out[0]) >> 8) & 1 == 1
    assert v.running
    v.exit()
    assert not vm.irq(40).active


def test_halt_hook_rejects_non_callable():
    vm = make_vm(nr_vcpus=1)
    with pytest.raises(TypeError, match="halt_hook"):
        vm.bus.halt_hook = 5


def test_eoicount_replay_consumes_level_latch():
    """kvm-facts §4.5 (6.19 EOImode 0 overflow): each EOI counted in
    EOIcount folds a synthesised LR without Active for an active interrupt
    outside the LRs; for a level interrupt that LR has State 00, which
    clears its pending latch (level && State == 00 -> pending_latch = 0).
    Set-up: 1 LR; SPI 40 (level, latched pending through GICD_ISPENDR, line
    low) is acknowledged, then SPI 41 (higher priority) preempts it and is
    acknowledged; on the next entry 41 holds the only LR and 40 is active
    outside it; the guest EOIs 41 then 40 (EOIcount 1)."""
    vm = make_vm(nr_vcpus=1, nr_lrs=1)
    enable_spi(vm, 40, 0x80)
    enable_spi(vm, 41, 0x40)
    make_level(vm, 40)
    vm.mmio_write(vm.dist_base + R.GICD_ISPENDR + 4, 4, 1 << 8)
    v = vm.vcpus[0]
    v.enter()
    guest_open(v)
    assert ack(v) == 40
    v.exit()
    vm.set_irq_level(41, 1)
    v.enter()
    assert ack(v) == 41
    eoi(v, 41)
    eoi(v, 40)                                  # no LR: counted in EOIcount
    v.exit()
    assert not vm.irq(40).active
    assert not vm.irq(40).pending               # latch consumed, line low
    assert dist_bit(vm, R.GICD_ISPENDR, 40) == 0


PMR_ENC = 0xC230                      # ICC_PMR_EL1 = (3, 0, 4, 6, 0), kvm-facts §6


def test_register_groups_busy_while_a_vcpu_runs():
    """KVM's vgic_v3_attr_regs_access takes every vCPU's lock
    (lock_all_vcpus): with any vCPU inside KVM_RUN, DIST_REGS, REDIST_REGS,
    CPU_SYSREGS and LEVEL_INFO accesses fail with -EBUSY (kvm-facts §6)."""
    vm = make_vm(nr_vcpus=2)
    v0, v1 = vm.vcpus
    v1.enter()
    attempts = [
        lambda: vm.get_device_attr(uapi.KVM_DEV_ARM_VGIC_GRP_DIST_REGS, R.GICD_CTLR),
        lambda: vm.get_device_attr(uapi.KVM_DEV_ARM_VGIC_GRP_REDIST_REGS,
                                   uapi.mpidr_to_attr(v0.mpidr) | R.GICR_CTLR),
        lambda: vm.get_device_attr(GRP_SYSREGS, sysreg_attr(v0, PMR_ENC)),
        lambda: vm.set_device_attr(GRP_SYSREGS, sysreg_attr(v0, PMR_ENC), 0x80),
        lambda: vm.set_device_attr(uapi.KVM_DEV_ARM_VGIC_GRP_DIST_REGS, R.GICD_ISENABLER + 4, 1),
        lambda: vm.get_device_attr(uapi.KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO,
                                   uapi.mpidr_to_attr(v0.mpidr) | 32),
        lambda: vm.set_device_attr(uapi.KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO,
                                   uapi.mpidr_to_attr(v0.mpidr) | 32, 1),
        # kvm-facts §5.6: SAVE_PENDING_TABLES needs every vCPU lockable too.
        lambda: vm.set_device_attr(uapi.KVM_DEV_ARM_VGIC_GRP_CTRL,
                                   uapi.KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES, 0),
    ]
    for attempt in attempts:
        with pytest.raises(vgic.KvmError) as exc:
            attempt()
        assert exc.value.errno == errno.EBUSY
    assert dist_bit(vm, R.GICD_ISENABLER, 32) == 0           # the refused write did nothing
    v1.exit()
    assert vm.get_device_attr(GRP_SYSREGS, sysreg_attr(v0, PMR_ENC)) == 0
    vm.set_device_attr(uapi.KVM_DEV_ARM_VGIC_GRP_CTRL, uapi.KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES, 0)


def test_attribute_parsed_before_the_vcpu_lock():
    """KVM's vgic_v3_attr_regs_access parses the attribute (MPIDR to vCPU)
    before lock_all_vcpus: an MPIDR no vCPU has is -EINVAL even while a
    vCPU runs, and such a failed call leaves the vCPUs as they were."""
    vm = make_vm(nr_vcpus=2)
    v0, v1 = vm.vcpus
    v1.enter()
    bad = uapi.mpidr_to_attr(0xFF) | PMR_ENC
    with pytest.raises(vgic.KvmError) as exc:
        vm.get_device_attr(GRP_SYSREGS, bad)
    assert exc.value.errno == errno.EINVAL
    v1.exit()
    v0.load()
    with pytest.raises(vgic.KvmError) as exc:
        vm.get_device_attr(GRP_SYSREGS, bad)
    assert exc.value.errno == errno.EINVAL
    assert v0.loaded and v1.loaded


def test_sysreg_write_after_exit_without_put_reaches_the_guest():
    """Userspace only sees a vCPU outside KVM_RUN, where KVM has put it: a
    CPU_SYSREGS write after exit() (no explicit put()) is loaded into
    ICH_VMCR_EL2 at the next entry, so the guest reads it back."""
    vm = make_vm(nr_vcpus=1)
    v = vm.vcpus[0]
    v.enter()
    guest_open(v)                           # PMR 0xFF
    v.exit()
    assert v.loaded
    vm.set_device_attr(GRP_SYSREGS, sysreg_attr(v, PMR_ENC), 0x80)
    v.enter()
    assert v.sysreg_read("ICC_PMR_EL1") == 0x80
    v.exit()


def test_ap_list_keeps_injection_order():
    """kvm-facts §3.3: KVM appends an interrupt to its target's ap_list when
    it becomes deliverable (vgic_queue_irq_unlock), and with no more
    interrupts than LRs the flush fills LRs in ap_list order (§4.6 step 3).
    SPI 41 is injected before SPI 40, both at priority 0x40: LR0 holds 41,
    LR1 holds 40, and the guest acknowledges 41 first (equal priorities: the
    lowest LR, the model's documented tie-break)."""
    vm = make_vm(nr_vcpus=1)
    enable_spi(vm, 40, 0x40)
    enable_spi(vm, 41, 0x40)
    vm.set_irq_level(41, 1)
    vm.set_irq_level(40, 1)
    v = vm.vcpus[0]
    v.enter()
    assert [lr & 0xFFFFFFFF for lr in hyp_lrs(v, 2)] == [41, 40]
    guest_open(v)
    assert ack(v) == 41
    assert ack(v) == SPURIOUS                 # 40 does not preempt 41 (same priority)
    eoi(v, 41)
    assert ack(v) == 40
    eoi(v, 40)
    v.exit()


def test_queue_order_is_when_deliverable_not_when_pending():
    """KVM queues an interrupt when it becomes deliverable: SPI 40 pending
    while disabled is not queued (oracle NULL, §3.3); enabling it later
    queues it then, after SPI 41 which was enabled and made pending in
    between; so 41 is ahead of 40 on the ap_list and in the LRs."""
    vm = make_vm(nr_vcpus=1)
    vm.mmio_write(vm.dist_base + R.GICD_IPRIORITYR + 40, 1, 0x40)
    vm.set_irq_level(40, 1)                   # pending, disabled: not queued
    enable_spi(vm, 41, 0x40)
    vm.set_irq_level(41, 1)                   # queued now
    vm.mmio_write(vm.dist_base + R.GICD_ISENABLER + 4, 4, 1 << 8)   # 40 queued now
    v = vm.vcpus[0]
    v.enter()
    assert [lr & 0xFFFFFFFF for lr in hyp_lrs(v, 2)] == [41, 40]
    assert vm.gic.lists.ap_list(0) == [41, 40]
    v.exit()


# ====================================================== routing and enables
def test_disabled_interrupt_not_delivered_until_enabled():
    """kvm-facts §3.3 oracle: only enabled && pending interrupts are queued;
    GICD_ISPENDR still reads pending while disabled (§3.2)."""
    vm = make_vm()
    enable_spi(vm, 40, 0x40)
    vm.mmio_write(vm.dist_base + R.GICD_ICENABLER + 4, 4, 1 << 8)
    vm.set_irq_level(40, 1)
    v = vm.vcpus[0]
    v.enter()
    guest_open(v)
    assert v.cpu_if.used_lrs == 0
    assert ack(v) == SPURIOUS
    v.exit()
    assert dist_bit(vm, R.GICD_ISPENDR, 40) == 1
    vm.mmio_write(vm.dist_base + R.GICD_ISENABLER + 4, 4, 1 << 8)
    v.enter()
    assert ack(v) == 40
    eoi(v, 40)
    v.exit()


def test_distributor_disabled_blocks_pending_not_active():
    """kvm-facts §3.3 oracle: a pending SPI has no target while the
    distributor is disabled; an active one stays on its vCPU, so the guest
    can still complete it."""
    vm = make_vm()
    enable_spi(vm, 40, 0x40)
    enable_spi(vm, 41, 0x40)
    vm.set_irq_level(40, 1)
    v = vm.vcpus[0]
    v.enter()
    guest_open(v)
    assert ack(v) == 40
    v.exit()
    vm.mmio_write(vm.dist_base + R.GICD_CTLR, 4, 0)
    vm.set_irq_level(41, 1)
    v.enter()
    assert [lr & 0xFFFFFFFF for lr in hyp_lrs(v, 4) if lr >> 62] == [40]
    eoi(v, 40)
    assert ack(v) == SPURIOUS
    v.exit()
    assert not vm.irq(40).active
    assert vm.irq(41).pending


def test_spi_migrates_at_the_old_targets_prune():
    """kvm-facts §3.3 prune: an SPI queued on vCPU 0 whose GICD_IROUTER now
    names vCPU 1 is moved to vCPU 1's ap_list when vCPU 0 next exits (the
    IROUTER write itself does not requeue, §1.4)."""
    vm = make_vm(nr_vcpus=2)
    enable_spi(vm, 40, 0x40)
    vm.set_irq_level(40, 1)
    v0, v1 = vm.vcpus
    v0.enter()
    guest_open(v0, pmr=0x40)                   # masked: stays pending in its LR
    assert ack(v0) == SPURIOUS
    v0.exit()
    vm.mmio_write(vm.dist_base + R.GICD_IROUTER + 8 * 40, 8, vm.vcpus[1].mpidr & 0xFFFFFF)
    assert vm.irq(40).target_vcpu == 1
    v1.enter()
    guest_open(v1)
    assert ack(v1) == SPURIOUS                 # still on vCPU 0's ap_list
    v1.exit()
    v0.enter()
    assert v0.cpu_if.used_lrs == 0             # not for vCPU 0 any more
    v0.exit()                                  # prune migrates it
    v1.enter()
    assert ack(v1) == 40
    eoi(v1, 40)
    v1.exit()
