"""Architectural and uapi names of the registers KVM's userspace ABI moves:
a DIST_REGS / REDIST_REGS / ITS_REGS offset, a CPU_SYSREGS encoding, a
LEVEL_INFO word, a one-reg ID.  Snapshots store registers by their ABI
identity (attribute or one-reg ID); these functions give them back their
names (``GICD_ISENABLER3``, ``GICR_PROPBASER[63:32]``, ``ICC_PMR_EL1``,
``Z7``, ``KVM_REG_ARM_TIMER_CVAL``).
"""
from __future__ import annotations

from vgic import fpregs, regmap, sysregs, uapi

# Per-IRQ register families: (base offset of INTID 0's register, name,
# bits per interrupt), distributor and SGI_base frame alike.
_DIST_FAMILIES = (
    (regmap.GICD_IGROUPR, "GICD_IGROUPR", 1), (regmap.GICD_ISENABLER, "GICD_ISENABLER", 1),
    (regmap.GICD_ICENABLER, "GICD_ICENABLER", 1), (regmap.GICD_ISPENDR, "GICD_ISPENDR", 1),
    (regmap.GICD_ICPENDR, "GICD_ICPENDR", 1), (regmap.GICD_ISACTIVER, "GICD_ISACTIVER", 1),
    (regmap.GICD_ICACTIVER, "GICD_ICACTIVER", 1), (regmap.GICD_IPRIORITYR, "GICD_IPRIORITYR", 8),
    (regmap.GICD_ITARGETSR, "GICD_ITARGETSR", 8), (regmap.GICD_ICFGR, "GICD_ICFGR", 2),
    (regmap.GICD_IGRPMODR, "GICD_IGRPMODR", 1), (regmap.GICD_IROUTER, "GICD_IROUTER", 64),
)
_DIST_SINGLE = {regmap.GICD_CTLR: "GICD_CTLR", regmap.GICD_TYPER: "GICD_TYPER", regmap.GICD_IIDR: "GICD_IIDR",
                regmap.GICD_TYPER2: "GICD_TYPER2", regmap.GICD_STATUSR: "GICD_STATUSR"}
_RD_SINGLE = {regmap.GICR_CTLR: "GICR_CTLR", regmap.GICR_IIDR: "GICR_IIDR", regmap.GICR_TYPER: "GICR_TYPER",
              regmap.GICR_STATUSR: "GICR_STATUSR", regmap.GICR_WAKER: "GICR_WAKER",
              regmap.GICR_PROPBASER: "GICR_PROPBASER", regmap.GICR_PENDBASER: "GICR_PENDBASER",
              regmap.GICR_INVLPIR: "GICR_INVLPIR", regmap.GICR_INVALLR: "GICR_INVALLR",
              regmap.GICR_SYNCR: "GICR_SYNCR"}
_RD_WIDE = {regmap.GICR_TYPER, regmap.GICR_PROPBASER, regmap.GICR_PENDBASER, regmap.GICR_INVLPIR,
            regmap.GICR_INVALLR}
_SGI_SINGLE = {regmap.GICR_IGROUPR0: "GICR_IGROUPR0", regmap.GICR_ISENABLER0: "GICR_ISENABLER0",
               regmap.GICR_ICENABLER0: "GICR_ICENABLER0", regmap.GICR_ISPENDR0: "GICR_ISPENDR0",
               regmap.GICR_ICPENDR0: "GICR_ICPENDR0", regmap.GICR_ISACTIVER0: "GICR_ISACTIVER0",
               regmap.GICR_ICACTIVER0: "GICR_ICACTIVER0", regmap.GICR_IGRPMODR0: "GICR_IGRPMODR0",
               regmap.GICR_NSACR: "GICR_NSACR"}
_ITS_SINGLE = {regmap.GITS_CTLR: "GITS_CTLR", regmap.GITS_IIDR: "GITS_IIDR", regmap.GITS_TYPER: "GITS_TYPER",
               regmap.GITS_CBASER: "GITS_CBASER", regmap.GITS_CWRITER: "GITS_CWRITER",
               regmap.GITS_CREADR: "GITS_CREADR",
               **{regmap.GITS_BASER + 8 * n: f"GITS_BASER{n}" for n in range(8)}}


def _half(name: str, offset: int, base: int) -> str:
    """A 64-bit register reached as two 32-bit halves names the half."""
    return name + ("[63:32]" if (offset - base) % 8 >= 4 else "[31:0]")


def dist_name(offset: int) -> str:
    """The distributor register at a DIST_REGS offset."""
    if offset in _DIST_SINGLE:
        return _DIST_SINGLE[offset]
    for base, name, bpi in reversed(_DIST_FAMILIES):
        if offset >= base:
            if bpi == 64:
                intid = (offset - base) // 8
                return _half(f"{name}{intid}", offset, base) if intid < regmap.MAX_INTID_SPACE else f"GICD+{offset:#x}"
            n = (offset - base) // 4
            if n < regmap.MAX_INTID_SPACE * bpi // 32:
                return f"{name}{n}"
            break
    return f"GICD+{offset:#x}"


def redist_name(offset: int) -> str:
    """The redistributor register at a REDIST_REGS offset (RD_base, then
    SGI_base at +0x10000)."""
    if offset >= regmap.SGI_BASE_OFFSET:
        off = offset - regmap.SGI_BASE_OFFSET
        if off in _SGI_SINGLE:
            return _SGI_SINGLE[off]
        if regmap.GICR_IPRIORITYR0 <= off < regmap.GICR_IPRIORITYR0 + 32:
            return f"GICR_IPRIORITYR{(off - regmap.GICR_IPRIORITYR0) // 4}"
        if regmap.GICR_ICFGR0 <= off < regmap.GICR_ICFGR0 + 8:
            return f"GICR_ICFGR{(off - regmap.GICR_ICFGR0) // 4}"
        return f"GICR_SGI+{off:#x}"
    base = offset & ~7
    if base in _RD_WIDE:
        return _half(_RD_SINGLE[base], offset, base)
    return _RD_SINGLE.get(offset, f"GICR_RD+{offset:#x}")


def its_name(offset: int) -> str:
    """The ITS control register at an ITS_REGS offset."""
    return _ITS_SINGLE.get(offset, f"GITS+{offset:#x}")


def cpu_sysreg_name(encoding: int) -> str:
    """The ICC_* register of a CPU_SYSREGS packed encoding."""
    row = sysregs.CPU_SYSREGS.get(encoding)
    return row.name if row is not None else f"sysreg {encoding:#x}"


def level_info_name(intid: int) -> str:
    """A LEVEL_INFO word: the line levels of INTIDs intid..intid+31."""
    return f"LINE_LEVEL{intid}-{intid + 31}"


_ONE_REGS = {
    uapi.KVM_REG_ARM_TIMER_CTL: "KVM_REG_ARM_TIMER_CTL", uapi.KVM_REG_ARM_TIMER_CNT: "KVM_REG_ARM_TIMER_CNT",
    uapi.KVM_REG_ARM_TIMER_CVAL: "KVM_REG_ARM_TIMER_CVAL", uapi.KVM_REG_ARM_PTIMER_CTL: "KVM_REG_ARM_PTIMER_CTL",
    uapi.KVM_REG_ARM_PTIMER_CNT: "KVM_REG_ARM_PTIMER_CNT",
    uapi.KVM_REG_ARM_PTIMER_CVAL: "KVM_REG_ARM_PTIMER_CVAL",
    fpregs.KVM_REG_ARM_CORE_FPSR: "FPSR", fpregs.KVM_REG_ARM_CORE_FPCR: "FPCR",
    fpregs.KVM_REG_ZCR_EL1: "ZCR_EL1", fpregs.KVM_REG_ARM64_SVE_VLS: "KVM_REG_ARM64_SVE_VLS",
    **{fpregs.core_vreg(n): f"V{n}" for n in range(fpregs.NR_ZREGS)},
    **{fpregs.sve_zreg(n, 0): f"Z{n}" for n in range(fpregs.NR_ZREGS)},
    **{fpregs.sve_preg(n, 0): f"P{n}" for n in range(fpregs.NR_PREGS)},
    fpregs.sve_ffr(0): "FFR",
}


def one_reg_name(reg_id: int) -> str:
    """A one-reg ID's name (uapi or architectural)."""
    return _ONE_REGS.get(reg_id, f"one-reg {reg_id:#x}")


def timer_attr_name(attr: int) -> str:
    """A KVM_ARM_VCPU_TIMER_CTRL attribute."""
    return {uapi.KVM_ARM_VCPU_TIMER_IRQ_VTIMER: "KVM_ARM_VCPU_TIMER_IRQ_VTIMER",
            uapi.KVM_ARM_VCPU_TIMER_IRQ_PTIMER: "KVM_ARM_VCPU_TIMER_IRQ_PTIMER"}.get(attr, f"timer attr {attr}")


__all__ = ["dist_name", "redist_name", "its_name", "cpu_sysreg_name", "level_info_name", "one_reg_name",
           "timer_attr_name"]
