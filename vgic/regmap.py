"""The GICv3 register map, declared once.

Each MMIO frame is a sorted table of :class:`Region` rows, in the manner of
Linux ``arch/arm64/kvm/vgic/vgic-mmio-v3.c``: an offset, a length, the number
of bits each interrupt occupies (0 for a plain register), the access widths
the region accepts, and the name of the handler family ("ops") that implements
it.  :data:`FRAMES` lists every frame with the part of the VM that owns it:
that part binds the ops names to its handlers (C functions in the core,
Python functions in the twin), and its handlers reach its own state.  The
Cython core compiles these rows into C arrays of region descriptors with
function pointers; the userspace device API, the documentation and the named
state walk the same rows.  A register offset is written in this file and
nowhere else; the build generates the kernels' C constants from it.

A new device adds its frames here: its region tables and one :class:`Frame`
row each (see ``docs/architecture.md``).

Sources: kvm-facts §1.2, §1.5, §1.6 and §2 (Linux vgic-mmio-v3.c, vgic-mmio.h);
GICv3 architecture specification IHI 0069, chapter 12 (register maps).
"""
from __future__ import annotations

from typing import NamedTuple

from vgic.ich import LPI_BASE

# Access-width flags, as KVM's VGIC_ACCESS_8bit / 32bit / 64bit.
W8 = 1
W32 = 2
W64 = 4

FRAME_SIZE = 0x10000            # every GIC frame is 64 KiB (KVM_VGIC_V3_DIST_SIZE)
FRAME_SHIFT = 16
REDIST_STRIDE = 0x20000         # RD_base + SGI_base per vCPU (KVM_VGIC_V3_REDIST_SIZE)
SGI_BASE_OFFSET = 0x10000       # SGI_base frame inside a redistributor

NR_SGIS = 16
NR_PRIVATE_IRQS = 32            # VGIC_NR_PRIVATE_IRQS
MAX_INTID_SPACE = 1024          # SPIs end at 1019; 1020-1023 are special
MAX_VCPUS = 512                 # VGIC_V3_MAX_CPUS
VGIC_MAX_RESERVED = 1023        # the highest INTID below the LPIs KVM accepts for NR_IRQS
MPIDR_HWID_MASK = 0xFF00FFFFFF  # MPIDR_EL1 Aff3 [39:32] and Aff2.Aff1.Aff0 [23:0]
MPIDR_AFF210_MASK = 0xFFFFFF    # Aff2.Aff1.Aff0
INTERRUPT_ID_BITS_ITS = 16      # KVM's INTID bits with an ITS: LPIs end at 65535
NR_LPIS = (1 << INTERRUPT_ID_BITS_ITS) - LPI_BASE   # 57344 LPI INTIDs, 8192..65535


class Region(NamedTuple):
    """One row of a frame's register table.

    ``bpi`` is the number of bits per interrupt (1, 2, 8 or 64) for per-IRQ
    regions and 0 for plain registers; for per-IRQ regions ``first_intid`` is
    the INTID that the region's first byte describes, and the INTID of an
    access is ``first_intid + (offset - region.offset) * 8 // bpi``.  An
    access whose INTID is not below ``nr_irqs`` is RAZ/WI (KVM's
    ``check_region``).
    """

    name: str
    offset: int
    length: int
    widths: int
    ops: str
    bpi: int = 0
    first_intid: int = 0


def _shared(name: str, offset: int, bpi: int, widths: int, ops: str) -> tuple[Region, Region]:
    """A distributor per-IRQ register split as KVM's ..._SHARED macro does.

    With affinity routing enabled (ARE=1, always for a KVM GICv3) the bytes
    that describe INTIDs 0-31 are RAZ/WI in the distributor: private
    interrupts are programmed through each redistributor's SGI_base frame
    (IHI 0069 §12.9, "GICD_ISENABLER<n>" and friends, n = 0 with ARE).
    """
    private_len = bpi * NR_PRIVATE_IRQS // 8
    total_len = bpi * MAX_INTID_SPACE // 8
    return (
        Region(name + "_PRIVATE", offset, private_len, widths, "raz_wi"),
        Region(name, offset + private_len, total_len - private_len, widths, ops,
               bpi, NR_PRIVATE_IRQS),
    )


# ---------------------------------------------------------------- distributor
GICD_CTLR = 0x0000
GICD_TYPER = 0x0004
GICD_IIDR = 0x0008
GICD_TYPER2 = 0x000C
GICD_STATUSR = 0x0010
GICD_IGROUPR = 0x0080
GICD_ISENABLER = 0x0100
GICD_ICENABLER = 0x0180
GICD_ISPENDR = 0x0200
GICD_ICPENDR = 0x0280
GICD_ISACTIVER = 0x0300
GICD_ICACTIVER = 0x0380
GICD_IPRIORITYR = 0x0400
GICD_ITARGETSR = 0x0800
GICD_ICFGR = 0x0C00
GICD_IGRPMODR = 0x0D00
GICD_IROUTER = 0x6000
GICD_IDREGS = 0xFFD0
GICD_PIDR2 = 0xFFE8

GICD_REGIONS: tuple[Region, ...] = (
    # CTLR, TYPER, IIDR and TYPER2 share one 16-byte region selected by addr & 0xC.
    Region("GICD_CTLR", GICD_CTLR, 16, W32, "v3_misc"),
    Region("GICD_STATUSR", GICD_STATUSR, 4, W32, "rao_wi"),
    *_shared("GICD_IGROUPR", GICD_IGROUPR, 1, W32, "group"),
    *_shared("GICD_ISENABLER", GICD_ISENABLER, 1, W32, "senable"),
    *_shared("GICD_ICENABLER", GICD_ICENABLER, 1, W32, "cenable"),
    *_shared("GICD_ISPENDR", GICD_ISPENDR, 1, W32, "spending"),
    *_shared("GICD_ICPENDR", GICD_ICPENDR, 1, W32, "cpending"),
    *_shared("GICD_ISACTIVER", GICD_ISACTIVER, 1, W32, "sactive"),
    *_shared("GICD_ICACTIVER", GICD_ICACTIVER, 1, W32, "cactive"),
    *_shared("GICD_IPRIORITYR", GICD_IPRIORITYR, 8, W32 | W8, "priority"),
    # ITARGETSR is meaningless with ARE=1 and IGRPMODR with one security
    # state: RAZ/WI, but still per-IRQ regions (KVM registers them with the
    # ..._SHARED macro), so an unallocated INTID there does not resolve.
    *_shared("GICD_ITARGETSR", GICD_ITARGETSR, 8, W32 | W8, "raz_wi"),
    *_shared("GICD_ICFGR", GICD_ICFGR, 2, W32, "config"),
    *_shared("GICD_IGRPMODR", GICD_IGRPMODR, 1, W32, "raz_wi"),
    *_shared("GICD_IROUTER", GICD_IROUTER, 64, W64 | W32, "irouter"),
    Region("GICD_IDREGS", GICD_IDREGS, 0x30, W32, "idregs"),
)

# -------------------------------------------------- redistributor, RD_base
GICR_CTLR = 0x0000
GICR_IIDR = 0x0004
GICR_TYPER = 0x0008
GICR_STATUSR = 0x0010
GICR_WAKER = 0x0014
GICR_PROPBASER = 0x0070
GICR_PENDBASER = 0x0078
GICR_INVLPIR = 0x00A0
GICR_INVALLR = 0x00B0
GICR_SYNCR = 0x00C0
GICR_IDREGS = 0xFFD0
GICR_PIDR2 = 0xFFE8

GICR_RD_REGIONS: tuple[Region, ...] = (
    Region("GICR_CTLR", GICR_CTLR, 4, W32, "v3r_ctlr"),
    Region("GICR_IIDR", GICR_IIDR, 4, W32, "v3r_iidr"),
    Region("GICR_TYPER", GICR_TYPER, 8, W64 | W32, "v3r_typer"),
    Region("GICR_STATUSR", GICR_STATUSR, 4, W32, "raz_wi"),
    # ProcessorSleep/ChildrenAsleep are not modelled: KVM's WAKER is RAZ/WI.
    Region("GICR_WAKER", GICR_WAKER, 4, W32, "raz_wi"),
    Region("GICR_PROPBASER", GICR_PROPBASER, 8, W64 | W32, "propbase"),
    Region("GICR_PENDBASER", GICR_PENDBASER, 8, W64 | W32, "pendbase"),
    # LPI invalidation reads as zero; a write re-reads LPI configuration
    # bytes (LPIs exist only with an ITS).
    Region("GICR_INVLPIR", GICR_INVLPIR, 8, W64 | W32, "invlpi"),
    Region("GICR_INVALLR", GICR_INVALLR, 8, W64 | W32, "invall"),
    # SYNCR reads 1 only while an invalidation is in flight; ours complete at once.
    Region("GICR_SYNCR", GICR_SYNCR, 4, W32, "raz_wi"),
    Region("GICR_IDREGS", GICR_IDREGS, 0x30, W32, "idregs"),
)

# ------------------------------------------------- redistributor, SGI_base
# Offsets are within the SGI_base frame (RD_base + 0x10000).
GICR_IGROUPR0 = 0x0080
GICR_ISENABLER0 = 0x0100
GICR_ICENABLER0 = 0x0180
GICR_ISPENDR0 = 0x0200
GICR_ICPENDR0 = 0x0280
GICR_ISACTIVER0 = 0x0300
GICR_ICACTIVER0 = 0x0380
GICR_IPRIORITYR0 = 0x0400
GICR_ICFGR0 = 0x0C00
GICR_IGRPMODR0 = 0x0D00
GICR_NSACR = 0x0E00

GICR_SGI_REGIONS: tuple[Region, ...] = (
    Region("GICR_IGROUPR0", GICR_IGROUPR0, 4, W32, "group", 1, 0),
    Region("GICR_ISENABLER0", GICR_ISENABLER0, 4, W32, "senable", 1, 0),
    Region("GICR_ICENABLER0", GICR_ICENABLER0, 4, W32, "cenable", 1, 0),
    Region("GICR_ISPENDR0", GICR_ISPENDR0, 4, W32, "spending", 1, 0),
    Region("GICR_ICPENDR0", GICR_ICPENDR0, 4, W32, "cpending", 1, 0),
    Region("GICR_ISACTIVER0", GICR_ISACTIVER0, 4, W32, "sactive", 1, 0),
    Region("GICR_ICACTIVER0", GICR_ICACTIVER0, 4, W32, "cactive", 1, 0),
    Region("GICR_IPRIORITYR0", GICR_IPRIORITYR0, 32, W32 | W8, "priority", 8, 0),
    # The config handler ignores writes to private INTIDs, which makes
    # ICFGR0/1 read-only exactly as KVM's shared handler does.
    Region("GICR_ICFGR0", GICR_ICFGR0, 8, W32, "config", 2, 0),
    Region("GICR_IGRPMODR0", GICR_IGRPMODR0, 4, W32, "raz_wi"),
    Region("GICR_NSACR", GICR_NSACR, 4, W32, "raz_wi"),
)



# ------------------------------------------------------------------------ ITS
# The ITS control frame (ITS_base) and the translation frame after it
# (KVM_VGIC_V3_ITS_SIZE = 128 KiB).  Sources: its-facts-A §1 (vgic-its.c
# its_registers), IHI 0069 §12.19.
GITS_CTLR = 0x0000
GITS_IIDR = 0x0004
GITS_TYPER = 0x0008
GITS_CBASER = 0x0080
GITS_CWRITER = 0x0088
GITS_CREADR = 0x0090
GITS_BASER = 0x0100               # GITS_BASER0..7, 8 bytes each
GITS_IDREGS = 0xFFD0
GITS_PIDR0 = 0xFFE0
GITS_PIDR1 = 0xFFE4
GITS_PIDR2 = 0xFFE8
GITS_PIDR4 = 0xFFD0
GITS_CIDR0 = 0xFFF0
GITS_TRANSLATER = 0x10040         # in the second frame: offset 0x40 there

GITS_REGIONS: tuple[Region, ...] = (
    Region("GITS_CTLR", GITS_CTLR, 4, W32, "its_ctlr"),
    Region("GITS_IIDR", GITS_IIDR, 4, W32, "its_iidr"),
    Region("GITS_TYPER", GITS_TYPER, 8, W64 | W32, "its_typer"),
    Region("GITS_CBASER", GITS_CBASER, 8, W64 | W32, "its_cbaser"),
    Region("GITS_CWRITER", GITS_CWRITER, 8, W64 | W32, "its_cwriter"),
    Region("GITS_CREADR", GITS_CREADR, 8, W64 | W32, "its_creadr"),
    Region("GITS_BASER", GITS_BASER, 0x40, W64 | W32, "its_baser"),
    Region("GITS_IDREGS", GITS_IDREGS, 0x30, W32, "its_idregs"),
)
# GITS_TRANSLATER is not emulated: KVM registers no region in the second
# frame, so a guest access there is RAZ/WI and userspace gets -ENXIO.  MSIs
# arrive through vm.signal_msi (KVM_SIGNAL_MSI).
GITS_TRANSLATER_REGIONS: tuple[Region, ...] = ()


class Frame(NamedTuple):
    """One 64 KiB MMIO frame: its name, the part that owns it (whose handlers
    and state serve it; see :mod:`vgic.part`) and its register table."""

    name: str
    part: str
    regions: tuple[Region, ...]


#: Every frame of every part; a frame's identifier is its index here.
FRAMES: tuple[Frame, ...] = (
    Frame("GICD", "vgic_v3", GICD_REGIONS),
    Frame("GICR_RD", "vgic_v3", GICR_RD_REGIONS),
    Frame("GICR_SGI", "vgic_v3", GICR_SGI_REGIONS),
    Frame("GITS", "its", GITS_REGIONS),
    Frame("GITS_TRANSLATER", "its", GITS_TRANSLATER_REGIONS),
)
FRAME_NAMES: tuple[str, ...] = tuple(f.name for f in FRAMES)
NR_FRAMES = len(FRAMES)           # the build sizes the kernels' frame tables from this
FRAME_GICD = FRAME_NAMES.index("GICD")
FRAME_GICR_RD = FRAME_NAMES.index("GICR_RD")
FRAME_GICR_SGI = FRAME_NAMES.index("GICR_SGI")
FRAME_GITS = FRAME_NAMES.index("GITS")
FRAME_GITS_TRANSLATER = FRAME_NAMES.index("GITS_TRANSLATER")

#: Every ops name a table may use; the part owning a frame binds all of its
#: frame's ops, in the core and in the twin.
OPS_NAMES: tuple[str, ...] = (
    "raz_wi", "rao_wi", "idregs",
    "v3_misc", "group", "senable", "cenable", "spending", "cpending",
    "sactive", "cactive", "priority", "config", "irouter",
    "v3r_ctlr", "v3r_iidr", "v3r_typer", "propbase", "pendbase", "invlpi", "invall",
    "its_ctlr", "its_iidr", "its_typer", "its_cbaser", "its_cwriter", "its_creadr", "its_baser", "its_idregs",
)
#: Ops whose guest accesses halt every running vCPU around themselves:
#: KVM's active-state accessors (vgic_access_active_prepare, kvm-facts §2).
HALTING_OPS = frozenset({"sactive", "cactive"})


# ---------------------------------------------------------------- field values
GICD_CTLR_ENABLE_G1 = 1 << 1      # EnableGrp1 (DS=1 view): dist->enabled
GICD_CTLR_ARE = 1 << 4            # affinity routing, always on
GICD_CTLR_DS = 1 << 6             # single security state, always on
GICD_TYPER_LPIS = 1 << 17
GICD_TYPER_IDBITS_SHIFT = 19
INTERRUPT_ID_BITS_SPIS = 10       # GICD_TYPER.IDbits + 1 without an ITS (KVM)
IIDR_PRODUCT_ID_SHIFT = 24        # GICD_IIDR/GICR_IIDR.ProductID [31:24]
PRODUCT_ID_KVM = 0x4B             # 'K'
IMPLEMENTER_ARM = 0x43B
IIDR_REVISION_SHIFT = 12
IIDR_REVISION_MASK = 0xF << IIDR_REVISION_SHIFT
KVM_VGIC_IMP_REV_2 = 2
KVM_VGIC_IMP_REV_3 = 3
KVM_VGIC_IMP_REV_LATEST = KVM_VGIC_IMP_REV_3
PIDR2_GICV3 = 0x3B                # ArchRev 3 in [7:4]
GICR_CTLR_ENABLE_LPIS = 1 << 0
GICR_CTLR_CES = 1 << 1
GICR_CTLR_IR = 1 << 2
GICR_TYPER_PLPIS = 1 << 0
GICR_TYPER_LAST = 1 << 4
GICR_TYPER_PROCNUM_SHIFT = 8
GICR_TYPER_AFFINITY_SHIFT = 32
PRIORITY_MASK = 0xF8              # VGIC_PRI_BITS = 5: GENMASK(7, 3)
IROUTER_AFF_MASK = 0xFFFFFF       # Aff2.Aff1.Aff0 kept, IRM and Aff3 dropped
INITIAL_PENDBASER = 0x580         # RaWb inner, SameAsInner outer, Inner-shareable
INITIAL_PROPBASER = 0x580         # what creating an ITS writes to GICR_PROPBASER (vgic_its_create)
# GICR_PROPBASER / GICR_PENDBASER field layout (IHI 0069 §12.11.29, §12.11.31)
BASER_INNER_CACHE_SHIFT = 7
BASER_SHAREABILITY_SHIFT = 10
BASER_OUTER_CACHE_SHIFT = 56
BASER_SHAREABILITY_MASK = 0x3
BASER_CACHE_MASK = 0x7
# Shareability and cacheability encodings (Linux arm-gic-v3.h GIC_BASER_*)
GIC_BASER_NON_SHAREABLE = 0
GIC_BASER_INNER_SHAREABLE = 1
GIC_BASER_OUTER_SHAREABLE = 2
GIC_BASER_CACHE_NCNB = 0          # inner field: Device-nGnRnE
GIC_BASER_CACHE_SAME_AS_INNER = 0  # outer field: same as inner
GIC_BASER_CACHE_NC = 1
GIC_BASER_CACHE_RAWB = 3
PROPBASER_RES0 = (0x1F << 59) | (0xF << 52) | (0x3 << 5)
PENDBASER_RES0 = (1 << 63) | (0x7 << 59) | (0xF << 52) | (0xF << 12) | 0x7F
PENDBASER_PTZ = 1 << 62

# ------------------------------------------------------------- ITS values
# (its-facts-A §1.3, §2; its-facts-B §1; IHI 0069 §12.19, §5.3)
GITS_CTLR_ENABLED = 1 << 0
GITS_CTLR_QUIESCENT = 1 << 31
ITS_ABI_REVISIONS = 1                 # KVM's ITS save/restore ABI: revision 0 only
GITS_IIDR_REV_SHIFT = 12
GITS_IIDR_REV_MASK = 0xF << GITS_IIDR_REV_SHIFT
GITS_TYPER_VALUE = 0x1EF71            # PLPIS, 8-byte ITT entries, 16 EventID and DeviceID bits, PTA 0, CIL 0
ITS_MAX_DEVID_BITS = 16
ITS_MAX_EVENTID_BITS = 16
ITS_MAX_ICID = 0xFFFF                 # 16-bit collection IDs (CIL = 0)
GITS_BASER_VALID = 1 << 63
GITS_BASER_INDIRECT = 1 << 62
GITS_BASER_TYPE_SHIFT = 56
GITS_BASER_TYPE_MASK = 0x7 << GITS_BASER_TYPE_SHIFT
GITS_BASER_TYPE_DEVICE = 1
GITS_BASER_TYPE_COLLECTION = 4
GITS_BASER_ENTRY_SIZE_SHIFT = 48
GITS_BASER_ENTRY_SIZE_MASK = 0x1F << GITS_BASER_ENTRY_SIZE_SHIFT
GITS_BASER_PAGE_SIZE_SHIFT = 8
GITS_BASER_PAGE_SIZE_MASK = 0x3 << GITS_BASER_PAGE_SIZE_SHIFT
GITS_BASER_PAGE_SIZE_64K = 2 << GITS_BASER_PAGE_SIZE_SHIFT
GITS_BASER_SIZE_MASK = 0xFF           # pages - 1
GITS_BASER_INNER_CACHE_SHIFT = 59
GITS_BASER_OUTER_CACHE_SHIFT = 53
GITS_BASER_SHAREABILITY_SHIFT = 10
GITS_CBASER_SIZE_MASK = 0xFF          # 4 KiB pages - 1
GITS_CBASER_ADDR_MASK = 0x000FFFFFFFFFF000
GITS_CBASER_INNER_CACHE_SHIFT = 59
GITS_CBASER_OUTER_CACHE_SHIFT = 53
GITS_CBASER_SHAREABILITY_SHIFT = 10
GITS_CMD_OFFSET_MASK = 0xFFFE0        # CWRITER / CREADR offset bits [19:5]
ITS_CMD_SIZE = 32
INITIAL_BASER_DEVICE = 0x1907000000000600
INITIAL_BASER_COLLECTION = 0x1C07000000000600
ITS_ESZ = 8                           # DTE, ITE and CTE size in ABI revision 0
ITS_L1E_VALID = 1 << 63
ITS_L2_ADDR_MASK = 0x000FFFFFFFFF0000  # an L1 entry's level-2 table, bits [51:16]
ITS_ITT_ADDR_MASK = 0x000FFFFFFFFFFF00  # MAPD's ITT_addr, DW2 [51:8]
COLLECTION_NOT_MAPPED = 0xFFFFFFFF
# KVM's save/restore entries (rev 0)
KVM_ITS_DTE_VALID_SHIFT = 63
KVM_ITS_DTE_NEXT_SHIFT = 49
KVM_ITS_DTE_NEXT_MASK = 0x3FFF << 49
KVM_ITS_DTE_ITTADDR_SHIFT = 5
KVM_ITS_DTE_ITTADDR_MASK = ((1 << 44) - 1) << 5
KVM_ITS_DTE_SIZE_MASK = 0x1F
KVM_ITS_ITE_NEXT_SHIFT = 48
KVM_ITS_ITE_PINTID_SHIFT = 16
KVM_ITS_ITE_PINTID_MASK = 0xFFFFFFFF << 16
KVM_ITS_ITE_ICID_MASK = 0xFFFF
KVM_ITS_CTE_VALID_SHIFT = 63
KVM_ITS_CTE_RDBASE_SHIFT = 16
KVM_ITS_CTE_ICID_MASK = 0xFFFF
VITS_DTE_MAX_DEVID_OFFSET = (1 << 14) - 1
VITS_ITE_MAX_EVENTID_OFFSET = (1 << 16) - 1
# Command opcodes (DW0 [7:0])
GITS_CMD_MOVI = 0x01
GITS_CMD_INT = 0x03
GITS_CMD_CLEAR = 0x04
GITS_CMD_SYNC = 0x05
GITS_CMD_MAPD = 0x08
GITS_CMD_MAPC = 0x09
GITS_CMD_MAPTI = 0x0A
GITS_CMD_MAPI = 0x0B
GITS_CMD_INV = 0x0C
GITS_CMD_INVALL = 0x0D
GITS_CMD_MOVALL = 0x0E
GITS_CMD_DISCARD = 0x0F
# Command errors (internal to KVM: no error register; the command is skipped)
E_ITS_MOVI_UNMAPPED_INTERRUPT = 0x010107
E_ITS_MOVI_UNMAPPED_COLLECTION = 0x010109
E_ITS_INT_UNMAPPED_INTERRUPT = 0x010307
E_ITS_CLEAR_UNMAPPED_INTERRUPT = 0x010507
E_ITS_MAPD_DEVICE_OOR = 0x010801
E_ITS_MAPD_ITTSIZE_OOR = 0x010802
E_ITS_MAPC_PROCNUM_OOR = 0x010902
E_ITS_MAPC_COLLECTION_OOR = 0x010903
E_ITS_MAPTI_UNMAPPED_DEVICE = 0x010A04
E_ITS_MAPTI_ID_OOR = 0x010A05
E_ITS_MAPTI_PHYSICALID_OOR = 0x010A06
E_ITS_INV_UNMAPPED_INTERRUPT = 0x010C07
E_ITS_INVALL_UNMAPPED_COLLECTION = 0x010D09
E_ITS_MOVALL_PROCNUM_OOR = 0x010E01
E_ITS_DISCARD_UNMAPPED_INTERRUPT = 0x010F07
