"""The GICv3 virtual CPU interface control registers (ICH_*_EL2), declared once.

Field layouts of ICH_LR<n>_EL2, ICH_HCR_EL2, ICH_VMCR_EL2, ICH_VTR_EL2,
ICH_MISR_EL2 (IHI 0069 §12.4; kvm-facts §4.1, §4.2) and the per-vCPU record
that holds both the modelled hardware registers and KVM's saved copy of them
(``struct vgic_v3_cpu_if``).  The record array is contiguous over vCPUs so the
hyp save/restore kernels run over many vCPUs in one call.
"""
from __future__ import annotations

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

# ---- ICH_MISR_EL2
MISR_EOI = 1 << 0
MISR_U = 1 << 1
MISR_LRENP = 1 << 2
MISR_NP = 1 << 3
MISR_VGRP0E = 1 << 4
MISR_VGRP0D = 1 << 5
MISR_VGRP1E = 1 << 6
MISR_VGRP1D = 1 << 7

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


def check_records(records: object) -> None:
    """The contract of every kernel that works on ``VCPU_IF`` records in
    place: a writable, C-contiguous, 1-D array of :data:`VCPU_IF`
    (``TypeError`` otherwise)."""
    if (not isinstance(records, np.ndarray) or records.dtype != VCPU_IF or records.ndim != 1
            or not records.flags.c_contiguous or not records.flags.writeable):
        raise TypeError("records must be a writable 1-D C-contiguous array of vgic.ich.VCPU_IF")


def vcpu_indices(idx: object, n: int) -> np.ndarray:
    """The vCPU indices of a batch call as a private 1-D ``int64`` copy, each
    below ``n`` (``ValueError`` naming the first that is not).  A private
    copy: the kernels check it once and then use it, so no other thread can
    change an index in between."""
    arr = np.array(idx, dtype=np.int64, copy=True)
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
