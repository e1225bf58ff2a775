"""The GICv3 virtual CPU interface, declared once: the ICH_*_EL2 and ICV_*_EL1
register fields, the rules the architecture gives them, and the per-vCPU
record the kernels work on.

* Field layouts of ICH_LR<n>_EL2, ICH_HCR_EL2, ICH_VMCR_EL2, ICH_VTR_EL2,
  ICH_MISR_EL2 and ICV_CTLR_EL1 (IHI 0069 §12.3, §12.4; kvm-facts §4.1, §4.2).
* The architecture's rules as small pure functions: priority masking, binary
  points, group and running priority, the highest priority pending list
  register, the EISR/ELRSR/MISR summaries, and what ICH_VMCR_EL2 stores when
  it is written.  The pure-Python twin of the ``icv`` kernel applies them one
  by one; the guest and hypervisor views (:mod:`vgic.cpuif`) use them too.
* The record that holds both the modelled hardware registers and KVM's saved
  copy of them (``struct vgic_v3_cpu_if``), contiguous over vCPUs so the
  kernels run over many vCPUs in one call.

This module imports nothing else of vgic (the build generates the kernels'
C constants from it), so anything may import it without a cycle.

Citations: "IHI 0069" is the Arm GICv3/GICv4 architecture specification
(section numbers of issue H; the register or pseudocode function is always
named too, so a citation survives renumbering between issues).
"""
from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

MAX_LRS = 16                    # ICH_LR0..15_EL2 (VGIC_V3_MAX_LRS)
MAX_APRS = 4                    # ICH_AP{0,1}R0..3_EL2

# ---- ICH_LR<n>_EL2
LR_VINTID_MASK = 0xFFFFFFFF
LR_PINTID_SHIFT = 32
LR_PINTID_MASK = 0x3FF << LR_PINTID_SHIFT
LR_EOI = 1 << 41                # with HW = 0: maintenance interrupt on EOI
LR_PRIORITY_SHIFT = 48
LR_PRIORITY_MASK = 0xFF << LR_PRIORITY_SHIFT
LR_GROUP = 1 << 60
LR_HW = 1 << 61
LR_PENDING = 1 << 62
LR_ACTIVE = 1 << 63
LR_STATE_MASK = LR_PENDING | LR_ACTIVE
# RES0 bits with HW = 0 ([40:32], [47:42], [59:56]) and with HW = 1
# ([47:42], [59:56]); bit 59 is NMI only with FEAT_GICv3_NMI, not modelled.
LR_RES0_SW = (0x1FF << 32) | (0x3F << 42) | (0xF << 56)
LR_RES0_HW = (0x3F << 42) | (0xF << 56)

# ---- ICH_HCR_EL2
HCR_EN = 1 << 0
HCR_UIE = 1 << 1
HCR_LRENPIE = 1 << 2
HCR_NPIE = 1 << 3
HCR_VGRP0EIE = 1 << 4
HCR_VGRP0DIE = 1 << 5
HCR_VGRP1EIE = 1 << 6
HCR_VGRP1DIE = 1 << 7
HCR_VSGIEOICOUNT = 1 << 8
HCR_TC = 1 << 10
HCR_TALL0 = 1 << 11
HCR_TALL1 = 1 << 12
HCR_TSEI = 1 << 13
HCR_TDIR = 1 << 14
HCR_DVIM = 1 << 15
HCR_EOICOUNT_SHIFT = 27
HCR_EOICOUNT_MASK = 0x1F << HCR_EOICOUNT_SHIFT
HCR_WRITABLE = 0xF800FDFF        # the fields above; the rest is RES0

# ---- ICH_VMCR_EL2
VMCR_ENG0 = 1 << 0
VMCR_ENG1 = 1 << 1
VMCR_ACKCTL = 1 << 2
VMCR_FIQEN = 1 << 3
VMCR_CBPR = 1 << 4
VMCR_EOIM = 1 << 9
VMCR_BPR1_SHIFT = 18
VMCR_BPR1_MASK = 0x7 << VMCR_BPR1_SHIFT
VMCR_BPR0_SHIFT = 21
VMCR_BPR0_MASK = 0x7 << VMCR_BPR0_SHIFT
VMCR_PMR_SHIFT = 24
VMCR_PMR_MASK = 0xFF << VMCR_PMR_SHIFT
VMCR_WRITABLE = VMCR_ENG0 | VMCR_ENG1 | VMCR_ACKCTL | VMCR_FIQEN | VMCR_CBPR | VMCR_EOIM \
    | VMCR_BPR1_MASK | VMCR_BPR0_MASK | VMCR_PMR_MASK

# ---- ICH_VTR_EL2
VTR_LISTREGS_MASK = 0x1F
VTR_DVIM = 1 << 18
VTR_TDS = 1 << 19
VTR_NV4 = 1 << 20
VTR_A3V = 1 << 21
VTR_SEIS = 1 << 22
VTR_IDBITS_SHIFT = 23
VTR_PREBITS_SHIFT = 26
VTR_PRIBITS_SHIFT = 29

# ---- what the virtual CPU interface asserts towards the PE (Icv.signals)
SIG_IRQ = 1 << 0        # a vIRQ (a Group 1 interrupt)
SIG_FIQ = 1 << 1        # a vFIQ (a Group 0 interrupt)
SIG_MAINT = 1 << 2      # the maintenance interrupt: ICH_HCR_EL2.En and ICH_MISR_EL2 != 0

# ---- ICH_MISR_EL2
MISR_EOI = 1 << 0
MISR_U = 1 << 1
MISR_LRENP = 1 << 2
MISR_NP = 1 << 3
MISR_VGRP0E = 1 << 4
MISR_VGRP0D = 1 << 5
MISR_VGRP1E = 1 << 6
MISR_VGRP1D = 1 << 7

# ---- ICV_*_EL1 (IHI 0069 §12.3)
INTID_SPURIOUS = 1023            # "no interrupt" (IHI 0069 §2.2.1, special INTIDs 1020..1023)
SPECIAL_FIRST = 1020
SPECIAL_LAST = 1023
LPI_BASE = 8192                  # first LPI INTID (IHI 0069 §2.2.1)
IDLE_PRIORITY = 0xFF             # running priority with no active priority (ICV_RPR_EL1)
INTID_FIELD = 0xFFFFFF           # INTID, bits [23:0] of ICV_IAR/EOIR/DIR/HPPIR
APR_BITS = 32                    # each ICH_AP{0,1}R<n>_EL2 holds 32 active-priority bits
ICC_SRE_VALUE = 0x7              # ICC_SRE_EL1 as a GICv3 guest sees it: SRE | DFB | DIB (kvm-facts §6)
ID_BITS = 0                      # ICV_CTLR_EL1.IDbits / ICH_VTR_EL2.IDbits: 16-bit INTIDs
CTLR_CBPR = 1 << 0               # ICV_CTLR_EL1 fields
CTLR_EOIMODE = 1 << 1
CTLR_PRIBITS_SHIFT = 8
CTLR_IDBITS_SHIFT = 11
CTLR_SEIS = 1 << 14
CTLR_A3V = 1 << 15
U32 = (1 << 32) - 1              # a 32-bit register's values
U64 = (1 << 64) - 1              # a 64-bit register's values


# --------------------------------------------------------------------------- geometry


def check_int(label: str, value: Any, lo: int, hi: int) -> int:
    """``value`` as an int in ``lo..hi``: ``TypeError`` for anything but an
    integer (bools refused), ``ValueError`` naming ``label`` outside the range."""
    if isinstance(value, bool):
        raise TypeError(f"{label} must be an integer, not bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{label} must be an integer, not {type(value).__name__}") from None
    if not lo <= value <= hi:
        if hi <= 0xFFFF:         # a count or a small field: decimal reads best
            raise ValueError(f"{label} {value} is outside {lo}..{hi}")
        raise ValueError(f"{label} {value:#x} is outside {lo:#x}..{hi:#x}")
    return value


def check_geometry(nr_lrs: Any, pri_bits: Any, pre_bits: Any) -> tuple[int, int, int]:
    """ICH_VTR_EL2 limits (IHI 0069 §12.4.9): 1..16 list registers, 5..7
    priority bits, 5..7 preemption bits, and PREbits <= PRIbits (a group
    priority cannot have more bits than the priority).  The three as ints."""
    n = check_int("nr_lrs", nr_lrs, 1, MAX_LRS)
    pri = check_int("pri_bits", pri_bits, 5, 7)
    return n, pri, check_int("pre_bits", pre_bits, 5, pri)



# --------------------------------------------------------------------------- architectural rules


def priority_mask(pri_bits: int) -> int:
    """The implemented bits of an 8-bit priority: the top ``pri_bits``
    (IHI 0069 §4.8, "Interrupt prioritization"; unimplemented low bits RAZ)."""
    return (0xFF << (8 - pri_bits)) & 0xFF


def vpmr(vmcr: int, pri_bits: int) -> int:
    """ICV_PMR_EL1 (IHI 0069 §12.3): ICH_VMCR_EL2.VPMR with the unimplemented
    low priority bits reading as zero."""
    return ((vmcr & VMCR_PMR_MASK) >> VMCR_PMR_SHIFT) & priority_mask(pri_bits)


def lr_state(lr: int) -> int:
    """ICH_LR<n>_EL2.State: 0 invalid, 1 pending, 2 active, 3 pending+active."""
    return (lr >> 62) & 3


def lr_group(lr: int) -> int:
    return (lr >> 60) & 1


def lr_priority(lr: int, pri_bits: int) -> int:
    """The significant part of ICH_LR<n>_EL2.Priority."""
    return (lr >> LR_PRIORITY_SHIFT) & priority_mask(pri_bits)


def lr_vintid(lr: int) -> int:
    return lr & LR_VINTID_MASK


def lr_pintid(lr: int) -> int:
    return (lr & LR_PINTID_MASK) >> LR_PINTID_SHIFT


def group_enabled(vmcr: int, group: int) -> bool:
    """ICH_VMCR_EL2.VENG0 / VENG1 (ICV_IGRPEN0_EL1 / ICV_IGRPEN1_EL1)."""
    return bool(vmcr & (VMCR_ENG1 if group else VMCR_ENG0))


def min_bpr0(pre_bits: int) -> int:
    """The smallest binary point a Group 0 BPR holds: 7 - PREbits, so the
    group priority keeps exactly the implemented preemption bits
    (IHI 0069 §4.8, "Priority grouping"; 5 preemption bits -> 2)."""
    return 7 - pre_bits


def min_bpr1(pre_bits: int) -> int:
    """The smallest Group 1 binary point: one more than the Group 0 minimum
    (IHI 0069 §12.3, ICV_BPR1_EL1)."""
    return min_bpr0(pre_bits) + 1


def bpr0(vmcr: int, pre_bits: int) -> int:
    """Effective VBPR0.  Choice: a stored value below the minimum (the reset
    VMCR is 0) behaves, and reads, as the minimum."""
    return max((vmcr & VMCR_BPR0_MASK) >> VMCR_BPR0_SHIFT, min_bpr0(pre_bits))


def bpr1(vmcr: int, pre_bits: int) -> int:
    """Effective ICV_BPR1_EL1 as read: with VCBPR set it is min(VBPR0 + 1, 7)
    (IHI 0069 §12.3, ICV_BPR1_EL1; kvm-facts §6), else the stored VBPR1
    clamped up to its minimum as for :func:`bpr0`."""
    if vmcr & VMCR_CBPR:
        return min(bpr0(vmcr, pre_bits) + 1, 7)
    return max((vmcr & VMCR_BPR1_MASK) >> VMCR_BPR1_SHIFT, min_bpr1(pre_bits))


def stored_vmcr(value: int, pri_bits: int, pre_bits: int) -> int:
    """What ICH_VMCR_EL2 holds after a write of ``value`` (IHI 0069 §12.4.10,
    ICH_VMCR_EL2; its fields alias the ICV_* registers of §12.3): RES0 bits
    dropped; VBPR0 and VBPR1 below their minimum stored as the minimum (as an
    ICV_BPR0_EL1/ICV_BPR1_EL1 write below it is); VPMR without the
    unimplemented low priority bits (RAZ/WI in ICV_PMR_EL1), so 0xFF becomes
    0xF8 with 5 priority bits.  KVM writes its saved VMCR into the register at
    every vcpu_load and reads it back at every exit, so the saved copy takes
    this form after one run."""
    v = value & VMCR_WRITABLE
    b0 = max((v & VMCR_BPR0_MASK) >> VMCR_BPR0_SHIFT, min_bpr0(pre_bits))
    b1 = max((v & VMCR_BPR1_MASK) >> VMCR_BPR1_SHIFT, min_bpr1(pre_bits))
    pmr = ((v & VMCR_PMR_MASK) >> VMCR_PMR_SHIFT) & priority_mask(pri_bits)
    v &= ~(VMCR_BPR0_MASK | VMCR_BPR1_MASK | VMCR_PMR_MASK)
    return v | (b0 << VMCR_BPR0_SHIFT) | (b1 << VMCR_BPR1_SHIFT) | (pmr << VMCR_PMR_SHIFT)


def group_priority(priority: int, group: int, vmcr: int, pre_bits: int) -> int:
    """The group (preemption) priority of an interrupt (IHI 0069 §4.8,
    "Priority grouping"; ICV_BPR0_EL1/ICV_BPR1_EL1 in §12.3).

    Group 0, or Group 1 with VCBPR=1: binary point N = VBPR0 and the group
    priority is bits [7:N+1].  Group 1 with VCBPR=0: the Group 1 binary point
    is offset by one, N = VBPR1 - 1, so the group priority is bits [7:VBPR1].
    """
    if group and not vmcr & VMCR_CBPR:
        point = bpr1(vmcr, pre_bits) - 1
    else:
        point = bpr0(vmcr, pre_bits)
    return priority & (0xFF << (point + 1)) & 0xFF


def apr_index(group_prio: int, pre_bits: int) -> int:
    """The active-priority bit of a group priority: one bit per preemption
    level, priority >> (8 - PREbits) (IHI 0069 §12.4.1, ICH_AP0R<n>_EL2)."""
    return group_prio >> (8 - pre_bits)


def highest_active(ap0: Sequence[int], ap1: Sequence[int], pre_bits: int) -> int:
    """Index of the lowest set bit over both groups' active-priority
    registers (the highest active priority), or -1 with none set."""
    for n in range(nr_aprs(pre_bits)):
        bits = int(ap0[n]) | int(ap1[n])
        if bits:
            return n * APR_BITS + ((bits & -bits).bit_length() - 1)
    return -1


def running_priority(ap0: Sequence[int], ap1: Sequence[int], pre_bits: int) -> int:
    """ICV_RPR_EL1: the highest active group priority, or 0xFF (idle) with no
    active-priority bit set (IHI 0069 §12.3, ICV_RPR_EL1; the physical
    running priority of §4.8 is defined the same way)."""
    idx = highest_active(ap0, ap1, pre_bits)
    return IDLE_PRIORITY if idx < 0 else idx << (8 - pre_bits)


def hppi(lrs: Sequence[int], nr_lrs: int, vmcr: int, pri_bits: int) -> int:
    """The list register holding the highest priority pending virtual
    interrupt, or -1.

    Candidates are implemented LRs in the Pending state exactly (State 01; a
    pending+active interrupt is not signalled while active) whose group is
    enabled in ICH_VMCR_EL2; the lowest significant priority wins and a tie
    goes to the lowest LR index (IHI 0069 §6, virtual interrupt signalling;
    the spec leaves ties IMPLEMENTATION DEFINED -- choice: lowest index)."""
    best, best_prio = -1, 0x100
    for n in range(nr_lrs):
        lr = int(lrs[n])
        if lr_state(lr) != 1 or not group_enabled(vmcr, lr_group(lr)):
            continue
        prio = lr_priority(lr, pri_bits)
        if prio < best_prio:
            best, best_prio = n, prio
    return best


def find_active_lr(lrs: Sequence[int], nr_lrs: int, vintid: int) -> int:
    """The lowest implemented LR whose vINTID is ``vintid`` and whose State
    has Active set (10 or 11), or -1 (IHI 0069 pseudocode
    FindActiveVirtualInterrupt)."""
    for n in range(nr_lrs):
        lr = int(lrs[n])
        if lr & LR_ACTIVE and lr_vintid(lr) == vintid:
            return n
    return -1


def eisr(lrs: Sequence[int], nr_lrs: int) -> int:
    """ICH_EISR_EL2 (IHI 0069 §12.4.3): bit n when LR n has State 00, HW 0
    and EOI 1 -- a deactivation that asks for an EOI maintenance interrupt."""
    out = 0
    for n in range(nr_lrs):
        lr = int(lrs[n])
        if not lr & (LR_STATE_MASK | LR_HW) and lr & LR_EOI:
            out |= 1 << n
    return out


def elrsr(lrs: Sequence[int], nr_lrs: int) -> int:
    """ICH_ELRSR_EL2 (IHI 0069 §12.4.4): bit n when LR n is free -- State 00
    and not holding an EOI maintenance request (HW 0 and EOI 1)."""
    out = 0
    for n in range(nr_lrs):
        lr = int(lrs[n])
        if lr & LR_STATE_MASK:
            continue
        if not lr & LR_HW and lr & LR_EOI:
            continue
        out |= 1 << n
    return out


def eoicount(hcr: int) -> int:
    return (hcr & HCR_EOICOUNT_MASK) >> HCR_EOICOUNT_SHIFT


def misr(lrs: Sequence[int], nr_lrs: int, hcr: int, vmcr: int) -> int:
    """ICH_MISR_EL2 (IHI 0069 §12.4.7; kvm-facts §4.2).  Choice: the
    conditions are reported whatever ICH_HCR_EL2.En is (En only gates the
    maintenance interrupt itself)."""
    states = [lr_state(int(lrs[n])) for n in range(nr_lrs)]
    out = 0
    if eisr(lrs, nr_lrs):
        out |= MISR_EOI
    if hcr & HCR_UIE and sum(1 for s in states if s != 0) <= 1:
        out |= MISR_U
    if hcr & HCR_LRENPIE and eoicount(hcr):
        out |= MISR_LRENP
    if hcr & HCR_NPIE and 1 not in states:
        out |= MISR_NP
    eng0, eng1 = bool(vmcr & VMCR_ENG0), bool(vmcr & VMCR_ENG1)
    if hcr & HCR_VGRP0EIE and eng0:
        out |= MISR_VGRP0E
    if hcr & HCR_VGRP0DIE and not eng0:
        out |= MISR_VGRP0D
    if hcr & HCR_VGRP1EIE and eng1:
        out |= MISR_VGRP1E
    if hcr & HCR_VGRP1DIE and not eng1:
        out |= MISR_VGRP1D
    return out



#: One vCPU's CPU-interface state: the modelled hardware registers
#: (``ich_*``, what the guest's ICC_* accesses act on while it runs) and KVM's
#: saved copy (``vgic_*``, ``struct vgic_v3_cpu_if``, LRs in storage order).
VCPU_IF = np.dtype(
    {
        "names": ["ich_lr", "ich_hcr", "ich_vmcr", "ich_ap0r", "ich_ap1r",
                  "vgic_lr", "vgic_hcr", "vgic_vmcr", "vgic_ap0r", "vgic_ap1r", "used_lrs"],
        "formats": [("<u8", MAX_LRS), "<u8", "<u8", ("<u4", MAX_APRS), ("<u4", MAX_APRS),
                    ("<u8", MAX_LRS), "<u8", "<u8", ("<u4", MAX_APRS), ("<u4", MAX_APRS), "<u4"],
        "offsets": [0, 128, 136, 144, 160, 176, 304, 312, 320, 336, 352],
        "itemsize": 360,
    }
)


#: The fields of one ICH_LR<n>_EL2 value, unpacked (IHI 0069 §12.4.6): the
#: record of the batch LR encode/decode kernels.  ``state`` is the 2-bit
#: State field (0 invalid, 1 pending, 2 active, 3 pending and active);
#: ``pintid`` is meaningful only with ``hw`` = 1 and ``eoi`` only with hw = 0.
LR_FIELDS = np.dtype(
    {
        "names": ["vintid", "pintid", "priority", "group", "state", "hw", "eoi"],
        "formats": ["<u4", "<u2", "u1", "u1", "u1", "u1", "u1"],
        "offsets": [0, 4, 6, 7, 8, 9, 10],
        "itemsize": 12,
    }
)


def check_records(records: object) -> np.ndarray:
    """The contract of every kernel that works on ``VCPU_IF`` records in
    place: a writable, C-contiguous, 1-D array of :data:`VCPU_IF`
    (``TypeError`` otherwise).  Returns the array as a plain ``ndarray``
    (a view, no copy): the checks and the kernels read that, so an ndarray
    subclass cannot fake its shape, dtype or flags."""
    if not isinstance(records, np.ndarray):
        raise TypeError(f"records must be a numpy array of vgic.ich.VCPU_IF, not {type(records).__name__}")
    base = np.asarray(records)
    if (base.dtype != VCPU_IF or base.ndim != 1 or not base.flags.c_contiguous
            or not base.flags.writeable):
        raise TypeError("records must be a writable 1-D C-contiguous array of vgic.ich.VCPU_IF")
    return base


def lr_values(lrs: object) -> np.ndarray:
    """ICH_LR<n>_EL2 values handed to a batch kernel, as a ``uint64`` array
    of the same shape: integers in 0..2**64-1 (Python ints or an integer
    numpy array).  ``TypeError`` for anything else (floats, bools, strings),
    ``ValueError`` naming the first value outside the range."""
    arr = np.asarray(lrs)
    if arr.dtype.kind == "O":
        flat = arr.reshape(-1).tolist()
        for k, x in enumerate(flat):
            if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
                raise TypeError(f"lrs[{k}] = {x!r} is not an integer")
            if not 0 <= int(x) <= U64:
                raise ValueError(f"lrs[{k}] = {x} does not fit in 64 bits")
        return np.array([int(x) for x in flat], dtype=np.uint64).reshape(arr.shape)
    if arr.dtype.kind not in "ui":
        raise TypeError(f"lrs must hold integers, not {arr.dtype}")
    if arr.dtype.kind == "i" and arr.size and int(arr.min()) < 0:
        k = int(np.argmax(arr.reshape(-1) < 0))
        raise ValueError(f"lrs[{k}] = {int(arr.reshape(-1)[k])} does not fit in 64 bits")
    return arr.astype(np.uint64)


def vcpu_indices(idx: object, n: int) -> np.ndarray:
    """The vCPU indices of a batch call as a private 1-D ``int64`` copy, each
    below ``n`` (``ValueError`` naming the first that is not).  A private
    copy: the kernels check it once and then use it, so no other thread can
    change an index in between."""
    src = np.asarray(idx)
    if src.size and src.dtype.kind not in "iu":
        if src.dtype.kind == "O" and all(type(x) is int for x in src.reshape(-1).tolist()):
            raise ValueError("idx holds an index outside the 64-bit range")
        raise TypeError(f"idx must hold integers, not {src.dtype}")
    arr = np.array(src, dtype=np.int64, copy=True)
    if arr.ndim != 1:
        raise ValueError("idx must be one-dimensional")
    bad = (arr < 0) | (arr >= n)
    if bad.any():
        k = int(np.argmax(bad))
        raise ValueError(f"idx[{k}] = {int(arr[k])} is not a vCPU index (0..{n - 1})")
    return arr


def nr_aprs(pre_bits: int) -> int:
    """Active-priority registers per group implied by the preemption bits:
    2^(PREbits + 1 - 5), so 5 bits -> 1, 6 -> 2, 7 -> 4 (IHI 0069 §12.4.1)."""
    return 1 << (pre_bits - 5)


def vtr(nr_lrs: int, pri_bits: int, pre_bits: int) -> int:
    """ICH_VTR_EL2 of the modelled hardware: ListRegs, PREbits, PRIbits, 16-bit
    INTIDs, no SEI, Aff3 valid (A3V), no direct vLPI injection (nV4), and
    TDIR supported (TDS), as on a GICv3-only host that KVM 6.19 relies on."""
    return ((nr_lrs - 1) | VTR_TDS | VTR_NV4 | VTR_A3V
            | ((pre_bits - 1) << VTR_PREBITS_SHIFT) | ((pri_bits - 1) << VTR_PRIBITS_SHIFT))


def lr_value(vintid: int, priority: int = 0, *, group: int = 1, pending: bool = False,
             active: bool = False, hw: bool = False, pintid: int = 0, eoi: bool = False) -> int:
    """Encode an ICH_LR<n>_EL2 value (IHI 0069 §12.4.6)."""
    v = (vintid & LR_VINTID_MASK) | ((priority & 0xFF) << LR_PRIORITY_SHIFT)
    v |= LR_GROUP if group else 0
    v |= LR_PENDING if pending else 0
    v |= LR_ACTIVE if active else 0
    if hw:
        v |= LR_HW | ((pintid & 0x3FF) << LR_PINTID_SHIFT)
    elif eoi:
        v |= LR_EOI
    return v
