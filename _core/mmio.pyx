# cython: language_level=3
"""The table-driven GICv3 MMIO core.

The register tables of :mod:`vgic.regmap` are compiled at import into C arrays
of :c:type:`Region` descriptors holding function pointers to the handlers of
``vgic_irq_ops.pxd``, ``vgic_dist.pxd`` and ``vgic_redist.pxd``.  A guest access
is decoded to (frame, offset, vCPU), its region found by a direct index or by
binary search, checked once for width, alignment and INTID range (KVM's
``check_region``), and dispatched - all in C.  The value interface is a plain
64-bit little-endian value and a size, as the 2016 MMIO-framework review asked.
"""
import sys

import numpy as np

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from libc.string cimport memcpy, memset
from cpython.pycapsule cimport PyCapsule_New

from vgic._core.gicstate cimport (GicState, Region, URegion, access_fn, uwrite_fn,
    deliverable, stamp_new,
    bank_of, prio_index, default_mpidr, NR_PRIVATE, SPI_BANKS, INTID_SPACE,
    BM_ENABLED, BM_PENDING_LATCH, BM_LINE_LEVEL, BM_ACTIVE, BM_GROUP, BM_EDGE,
    NR_BITMAPS, FRAME_GICD, FRAME_GICR_RD, FRAME_GICR_SGI, NR_FRAMES,
    ACC_8, ACC_32, ACC_64)
from vgic._core.bitmap cimport size_mask
from vgic._core.vgic_irq_ops cimport (raz, rao, wi, uwi, read_group, write_group,
    read_enable, write_senable, write_cenable, read_pending, write_spending,
    write_cpending, uread_spending, uwrite_spending, read_active, write_sactive,
    write_cactive, read_priority, write_prio, read_config, write_config)
from vgic._core.vgic_dist cimport (read_v3_misc, write_v3_misc, uwrite_v3_misc,
    read_irouter, write_irouter, read_idregs)
from vgic._core.vgic_redist cimport (read_v3r_ctlr, read_v3r_iidr, read_v3r_typer,
    read_propbase, write_propbase, read_pendbase, write_pendbase)

from vgic import regmap
from vgic.errors import UnmappedAccess
from vgic.trace import MMIO_ACCESS

if sys.byteorder != "little":   # the handlers memcpy little-endian values
    raise ImportError("vgic._core requires a little-endian host")

cdef enum:
    FRAME_SIZE = 0x10000
    FRAME_WORDS = FRAME_SIZE // 4
    MAX_REGIONS = 64
    NO_REGION = MAX_REGIONS - 1     # the RAZ/WI sentinel slot of each frame
    MAX_OPS = 32
    FUSED_MIN_RECORDS = 16384   # from here replay checks while it runs (96 KiB of trace)
    REDIST_SHIFT = 17           # 0x20000 bytes of redistributor per vCPU

# ------------------------------------------------------------ handler families
cdef struct Ops:
    access_fn read
    access_fn write
    access_fn uread
    uwrite_fn uwrite

cdef Ops OPS[MAX_OPS]
cdef list OPS_ORDER = []

cdef void def_ops(str name, access_fn r, access_fn w, access_fn ur, uwrite_fn uw):
    cdef int i = len(OPS_ORDER)
    OPS_ORDER.append(name)
    OPS[i].read = r
    OPS[i].write = w
    OPS[i].uread = ur if ur != NULL else r
    OPS[i].uwrite = uw

# name           guest read      guest write     uaccess read    uaccess write
def_ops("raz_wi", raz, wi, NULL, NULL)
def_ops("rao_wi", rao, wi, NULL, NULL)
def_ops("idregs", read_idregs, wi, NULL, NULL)
def_ops("v3_misc", read_v3_misc, write_v3_misc, NULL, uwrite_v3_misc)
def_ops("group", read_group, write_group, NULL, NULL)
def_ops("senable", read_enable, write_senable, NULL, NULL)
def_ops("cenable", read_enable, write_cenable, NULL, NULL)
def_ops("spending", read_pending, write_spending, uread_spending, uwrite_spending)
def_ops("cpending", read_pending, write_cpending, raz, uwi)
def_ops("sactive", read_active, write_sactive, NULL, NULL)
def_ops("cactive", read_active, write_cactive, NULL, NULL)
def_ops("priority", read_priority, write_prio, NULL, NULL)
def_ops("config", read_config, write_config, NULL, NULL)
def_ops("irouter", read_irouter, write_irouter, NULL, NULL)
def_ops("v3r_ctlr", read_v3r_ctlr, wi, NULL, uwi)
def_ops("v3r_iidr", read_v3r_iidr, wi, NULL, uwi)
def_ops("v3r_typer", read_v3r_typer, wi, NULL, uwi)
def_ops("propbase", read_propbase, write_propbase, NULL, NULL)
def_ops("pendbase", read_pendbase, write_pendbase, NULL, NULL)

_missing = set(regmap.OPS_NAMES) - set(OPS_ORDER)
if _missing:
    raise ImportError(f"vgic._core.mmio binds no handlers for ops {sorted(_missing)}")

# -------------------------------------------------------------- region tables
cdef Region REGIONS[NR_FRAMES][MAX_REGIONS]
cdef URegion UREGIONS[NR_FRAMES][MAX_REGIONS]
cdef access_fn REFUSED[2]          # RAZ / WI: what a refused access does
cdef int NREG[NR_FRAMES]
# Direct index: region number of each 32-bit word of a frame (NO_REGION if
# none).  Region bounds are multiples of 4, so a word never spans two.
cdef uint8_t DIRECT[NR_FRAMES][FRAME_WORDS]
cdef bint LOOKUP_DIRECT = True
cdef list TABLE_ROWS = []

cdef int log2_exact(int v) except -1:
    cdef int s = 0
    while (1 << s) < v:
        s += 1
    if (1 << s) != v:
        raise ValueError(f"bits per IRQ {v} is not a power of two")
    return s

cdef void build_tables() except *:
    cdef int f, i, k
    cdef Region *r
    memset(DIRECT, NO_REGION, sizeof(DIRECT))
    for f, table in enumerate(regmap.FRAMES):
        rows = sorted(table, key=lambda row: row.offset)
        if len(rows) >= NO_REGION:
            raise ValueError(f"frame {f} has {len(rows)} regions, more than {NO_REGION - 1}")
        # The sentinel: where no region is, reads are 0 and writes ignored
        # (KVM's RAZ/WI for unknown offsets), so the direct lookup needs no
        # NULL test.
        REFUSED[0] = raz
        REFUSED[1] = wi
        r = &REGIONS[f][NO_REGION]
        memset(r, 0, sizeof(Region))
        r.widths = ACC_8 | ACC_32 | ACC_64
        r.guest[0] = raz
        r.guest[1] = wi
        end = 0
        for i, row in enumerate(rows):
            if row.offset < end or row.offset % 4 or row.length % 4 or row.offset + row.length > FRAME_SIZE:
                raise ValueError(f"region {row.name} overlaps, is unaligned or leaves the frame")
            end = row.offset + row.length
            k = OPS_ORDER.index(row.ops)
            r = &REGIONS[f][i]
            r.offset = row.offset
            r.length = row.length
            r.first_intid = row.first_intid
            r.widths = row.widths
            r.bpi = row.bpi
            r.bpi_shift = log2_exact(row.bpi) if row.bpi else 0
            r.guest[0] = OPS[k].read
            r.guest[1] = OPS[k].write
            UREGIONS[f][i].uread = OPS[k].uread
            UREGIONS[f][i].uwrite = OPS[k].uwrite
            # KVM's active-state accessors halt the guest (vgic_access_active_prepare).
            r.halts = row.ops in ("sactive", "cactive")
            for w in range(row.offset // 4, end // 4):
                DIRECT[f][w] = i
        NREG[f] = len(rows)
        TABLE_ROWS.append([(row.name, row.offset, row.length, row.widths, row.bpi,
                            row.first_intid, row.ops) for row in rows])

build_tables()


def regions(int frame):
    """The compiled region table of ``frame`` as (name, offset, length, widths,
    bpi, first_intid, ops) rows in offset order."""
    if not 0 <= frame < NR_FRAMES:
        raise ValueError(f"frame {frame} is not one of 0..{NR_FRAMES - 1}")
    return list(TABLE_ROWS[frame])


def set_lookup(str mode):
    """Choose region lookup: ``"direct"`` (index table) or ``"bsearch"``."""
    global LOOKUP_DIRECT
    if mode not in ("direct", "bsearch"):
        raise ValueError(f"lookup mode {mode!r} is not 'direct' or 'bsearch'")
    LOOKUP_DIRECT = mode == "direct"


def get_lookup():
    """The region lookup in use."""
    return "direct" if LOOKUP_DIRECT else "bsearch"


cdef inline const Region *find_region(int frame, uint32_t off) noexcept nogil:
    cdef int lo, hi, mid
    cdef const Region *r
    cdef uint8_t idx
    if LOOKUP_DIRECT:
        idx = DIRECT[frame][off >> 2]
        return NULL if idx == NO_REGION else &REGIONS[frame][idx]
    # (binary search never sees the sentinel: it lies beyond NREG)
    lo = 0
    hi = NREG[frame]
    while lo < hi:
        mid = (lo + hi) >> 1
        r = &REGIONS[frame][mid]
        if off < r.offset:
            hi = mid
        elif off >= r.offset + r.length:
            lo = mid + 1
        else:
            return r
    return NULL


cdef inline uint8_t width_flag(int size) noexcept nogil:
    # ACC_8 for 1 byte, ACC_32 for 4, ACC_64 for 8, nothing for 2 (the GIC
    # has no halfword registers): one nibble per size, looked up branch-free.
    return (0x400020010ULL >> ((size & 15) * 4)) & 0xF


cdef inline const Region *check_region(const GicState *g, int frame, uint32_t off,
                                       int size, uint32_t *intid) noexcept nogil:
    # One check for every region: width allowed, natural alignment, and for
    # per-IRQ regions an allocated INTID.  Failure means RAZ/WI.
    cdef const Region *r = find_region(frame, off)
    cdef uint32_t i
    if r == NULL or not (r.widths & width_flag(size)) or (off & <uint32_t>(size - 1)):
        return NULL
    if r.bpi:
        i = r.first_intid + (((off - r.offset) << 3) >> r.bpi_shift)
        if i >= g.nr_irqs:
            return NULL
        intid[0] = i
    return r


cdef inline bint decode(const GicState *g, uint64_t addr, int accessor, int *frame,
                        uint32_t *off, int *vcpu) noexcept nogil:
    # Distributor accesses act for the accessing vCPU; a redistributor's for
    # the vCPU that owns it (kvm-facts §2).  Both candidates are computed and
    # one selected without a branch: a mixed trace alternates at random.
    cdef uint64_t d = addr - g.dist_base
    cdef uint64_t rd = addr - g.redist_base
    cdef uint64_t in_d = d < FRAME_SIZE
    cdef uint64_t in_r = rd < (<uint64_t>g.nr_vcpus << REDIST_SHIFT)
    cdef uint64_t pick_d = <uint64_t>0 - in_d          # all ones for the distributor
    frame[0] = <int>(~pick_d & (FRAME_GICR_RD + ((rd >> 16) & 1)))
    off[0] = <uint32_t>((pick_d & d) | (~pick_d & (rd & (FRAME_SIZE - 1))))
    vcpu[0] = <int>((pick_d & <uint64_t>accessor) | (~pick_d & (rd >> REDIST_SHIFT)))
    return (in_d | in_r) != 0


cdef inline access_fn direct_handler(const GicState *g, int frame, uint32_t off, int size,
                                    int is_write, uint32_t *intid) noexcept nogil:
    # The handler of an access through the direct region index, with no
    # data-dependent branch (on a random trace each would mispredict):
    # unmapped words hit the RAZ/WI sentinel, the INTID is computed for every
    # region and kept only for per-IRQ ones, and an access the region check
    # refuses gets the RAZ/WI handler.  `off` must lie inside the frame.
    cdef const Region *r = &REGIONS[frame][DIRECT[frame][off >> 2]]
    cdef uint32_t i = r.first_intid + (((off - r.offset) << 3) >> r.bpi_shift)
    cdef uint32_t bad
    i &= <uint32_t>0 - <uint32_t>(r.bpi != 0)
    bad = ((r.widths & width_flag(size)) == 0) | ((off & <uint32_t>(size - 1)) != 0) \
        | ((r.bpi != 0) & (i >= g.nr_irqs))
    intid[0] = i
    return REFUSED[is_write] if bad else r.guest[is_write]


cdef inline uint64_t direct_access(GicState *g, int frame, uint32_t off, int vcpu,
                                   int size, int is_write, uint64_t val) noexcept nogil:
    cdef uint32_t intid
    cdef access_fn fn = direct_handler(g, frame, off, size, is_write, &intid)
    return fn(g, vcpu, off, intid, size, val)


cdef struct Prepared:
    # One access with its handler chosen and its arguments computed.
    access_fn fn
    uint64_t val
    uint32_t off
    uint32_t intid
    int32_t vcpu
    int32_t size

cdef enum:
    BLOCK = 64          # records prepared ahead of their dispatch


cdef inline bint prepare(const GicState *g, const MmioAccess *a, Prepared *p) noexcept nogil:
    # decode + direct lookup + the region check of one valid record, with no
    # data-dependent branch; False if the address is outside every frame.
    # Refused accesses get a RAZ/WI handler, so dispatch never branches.
    cdef int frame, owner
    cdef uint32_t off
    cdef int size = a.size
    cdef bint ok = decode(g, a.addr, a.vcpu, &frame, &off, &owner)
    off &= FRAME_SIZE - 1               # in range even for an undecodable address
    p.fn = direct_handler(g, frame, off, size, a.write != 0, &p.intid)
    p.val = a.value
    p.off = off
    p.vcpu = owner
    p.size = size
    return ok


cdef uint64_t searched_access(GicState *g, int frame, uint32_t off, int vcpu,
                              int size, int is_write, uint64_t val) noexcept nogil:
    # The same through binary search (set_lookup("bsearch")).
    cdef uint32_t intid = 0
    cdef const Region *r = check_region(g, frame, off, size, &intid)
    if r == NULL:
        return 0
    return r.guest[is_write](g, vcpu, off, intid, size, val)


cdef inline uint64_t guest_access(GicState *g, int frame, uint32_t off, int vcpu,
                                  int size, int is_write, uint64_t val) noexcept nogil:
    if LOOKUP_DIRECT:
        return direct_access(g, frame, off, vcpu, size, is_write, val)
    return searched_access(g, frame, off, vcpu, size, is_write, val)


cdef inline void line_report(GicState *g, uint32_t b, uint32_t bit, bint level) noexcept nogil:
    # kvm_vgic_inject_irq: an edge interrupt latches on a rising report (a
    # falling one is no event); a level interrupt's line follows the report.
    cdef uint32_t before = deliverable(g, b)
    if g.bm[BM_EDGE][b] & bit:
        if level:
            g.bm[BM_PENDING_LATCH][b] |= bit
    elif level:
        g.bm[BM_LINE_LEVEL][b] |= bit
    else:
        g.bm[BM_LINE_LEVEL][b] &= ~bit
    stamp_new(g, b, before)


cdef inline bint halts_guest(const GicState *g, int frame, uint32_t off, int size) noexcept nogil:
    # A valid guest access to GICD_I[SC]ACTIVER<n> (n >= 1) or GICR_I[SC]ACTIVER0:
    # KVM's active-state handlers halt every vCPU around their work; an access
    # that check_region refuses never reaches them.
    cdef uint32_t intid = 0
    cdef const Region *r = check_region(g, frame, off, size, &intid)
    return r != NULL and r.halts


# ------------------------------------------------------- argument validation
cdef extern from *:
    int count_trailing_zeros "__builtin_ctz"(unsigned int x) nogil

cdef extern from "Python.h":
    bint PyLong_CheckExact(object o)
    unsigned long long PyLong_AsUnsignedLongLong(object o)
    void *PyErr_Occurred()
    void PyErr_Clear()
    object PyNumber_Index(object o)

cdef extern from *:
    """
    #include <stdint.h>
    /* The value of an exact Python int that fits in 64 bits without a call:
       1 = done, 0 = negative or too wide, -1 = take the general path.
       Ints of one or two 30-bit digits (everything below 2**60) are read
       straight from the object, which is most of what an MMIO call passes. */
    static inline int vgic_small_u64(PyObject *v, uint64_t *out) {
    #if PY_VERSION_HEX >= 0x030C0000
        if (PyUnstable_Long_IsCompact((PyLongObject *)v)) {
            Py_ssize_t x = PyUnstable_Long_CompactValue((PyLongObject *)v);
            if (x < 0) return 0;
            *out = (uint64_t)x;
            return 1;
        }
        return -1;
    #else
        Py_ssize_t n = Py_SIZE(v);
        const digit *d = ((PyLongObject *)v)->ob_digit;
        if (n == 1) { *out = d[0]; return 1; }
        if (n == 0) { *out = 0; return 1; }
        if (n == 2 && PyLong_SHIFT == 30) {
            *out = ((uint64_t)d[1] << 30) | d[0];
            return 1;
        }
        if (n < 0) return 0;
        return -1;
    #endif
    }
    """
    int small_u64 "vgic_small_u64"(object v, uint64_t *out)


cdef inline int as_u64(object v, uint64_t *out) except -1:
    # 1 when v is an integer outside 0..2**64-1; TypeError for non-integers.
    # Plain ints take the direct path: this runs four times per
    # vm.mmio_write, so it is a large share of the per-call cost.
    cdef unsigned long long x
    cdef int r
    if PyLong_CheckExact(v):
        r = small_u64(v, out)
        if r >= 0:
            return 1 - r
        x = PyLong_AsUnsignedLongLong(v)
        if x == <unsigned long long>-1 and PyErr_Occurred() != NULL:
            PyErr_Clear()       # negative, or wider than 64 bits
            return 1
        out[0] = x
        return 0
    try:
        # bool, numpy integers, other __index__ types; floats are TypeError.
        out[0] = PyNumber_Index(v)
    except OverflowError:
        return 1
    return 0

cdef inline bint valid_size(uint64_t size) noexcept nogil:
    # 1, 2, 4 or 8: bits 1, 2, 4 and 8 of 0x116.
    return (size <= 8) & ((0x116 >> (size & 15)) & 1)

cdef object size_error(object size):
    return ValueError(f"size {size!r} is not one of 1, 2, 4, 8")

cdef object addr_error(object addr):
    if addr < 0:
        return ValueError(f"address {addr} is negative")
    return ValueError(f"address {addr:#x} does not fit in 64 bits")

cdef object value_error(object value, object size):
    if value < 0:
        return ValueError(f"value {value} does not fit in a {size}-byte access")
    return ValueError(f"value {value:#x} does not fit in a {size}-byte access")

cdef object vcpu_error(object vcpu, uint32_t nr_vcpus):
    return ValueError(f"vcpu {vcpu} out of range: the VM has {nr_vcpus} vCPUs")


# Per record size (a uint8): 1 if not an access size, and the value bits a
# write of that size may not set.  Tables keep the validation pass branch-free.
cdef uint8_t SIZE_BAD[256]
cdef uint64_t VALUE_EXCESS[256]

cdef void init_size_tables() noexcept:
    cdef int sz
    for sz in range(256):
        SIZE_BAD[sz] = 0 if valid_size(sz) else 1
        VALUE_EXCESS[sz] = ~size_mask(sz) if valid_size(sz) else 0

init_size_tables()


cdef packed struct MmioAccess:
    # vgic.trace.MMIO_ACCESS, field for field (24 bytes).
    uint64_t addr
    uint64_t value
    uint16_t vcpu
    uint8_t size
    uint8_t write
    uint32_t pad

cdef enum:
    BAD_NONE = 0
    BAD_SIZE = 1
    BAD_VALUE = 2
    BAD_VCPU = 3
    BAD_ADDR = 4


cdef class Noop:
    """A do-nothing extension type: the per-call baseline of the benchmarks."""

    def mmio_write(self, addr, size, value, vcpu=0):
        pass

    def mmio_read(self, addr, size, vcpu=0):
        return 0


cdef class Gic:
    """Distributor and redistributor state of one VM with its MMIO dispatch.

    See ``vgic/_core/mmio.pyi`` for the full contract; ``vgic._pure.mmio.Gic``
    is the pure-Python twin.
    """
    cdef GicState st
    cdef object _bits, _priority, _route, _target, _mpidr, _pendbaser, _gicr_ctlr, _seq
    # Every mutable array lives in one buffer, so the whole state can be
    # saved and restored with one memcpy (replay rollback, later snapshots).
    cdef object _state, _scratch
    cdef uint8_t *state_ptr
    cdef uint8_t *scratch_ptr
    cdef Py_ssize_t state_len
    cdef object _halt_hook

    def __init__(self, int nr_vcpus, int nr_irqs, uint64_t dist_base,
                 uint64_t redist_base, mpidrs):
        cdef uint32_t[:, ::1] bits
        cdef uint8_t[::1] prio
        cdef uint32_t[::1] route
        cdef int32_t[::1] target
        cdef uint64_t[::1] mp, pend
        cdef uint32_t[::1] ctlr
        cdef uint64_t[::1] seq
        cdef int r, v
        if self.st.nr_vcpus:
            raise TypeError("a Gic is initialised once")
        if not 1 <= nr_vcpus <= regmap.MAX_VCPUS:
            raise ValueError(f"nr_vcpus {nr_vcpus} is not in 1..{regmap.MAX_VCPUS}")
        if nr_irqs % 32 or not 64 <= nr_irqs <= 992:
            # KVM: at most VGIC_MAX_RESERVED (1023) INTIDs, in units of 32.
            raise ValueError(f"nr_irqs {nr_irqs} is not a multiple of 32 in 64..992")
        if dist_base > <uint64_t>0 - FRAME_SIZE:
            raise ValueError(f"dist_base {dist_base:#x} leaves the 64-bit address space")
        if redist_base > <uint64_t>0 - (<uint64_t>nr_vcpus << REDIST_SHIFT):
            raise ValueError(f"redist_base {redist_base:#x} leaves the 64-bit address space")
        mpidr_arr = np.array(mpidrs, dtype=np.uint64).reshape(-1)
        if mpidr_arr.shape[0] != nr_vcpus:
            raise ValueError(f"{mpidr_arr.shape[0]} MPIDRs given for {nr_vcpus} vCPUs")
        memset(&self.st, 0, sizeof(GicState))
        self.st.dist_base = dist_base
        self.st.redist_base = redist_base
        self.st.nr_irqs = nr_irqs
        self.st.nr_vcpus = nr_vcpus
        self.st.nr_banks = SPI_BANKS + nr_vcpus
        self.st.implementation_rev = regmap.KVM_VGIC_IMP_REV_LATEST
        nb = self.st.nr_banks
        layout = [("bits", np.uint32, NR_BITMAPS * nb), ("priority", np.uint8, nb * 32 + 8),
                  ("route", np.uint32, INTID_SPACE), ("target", np.int32, INTID_SPACE),
                  ("pendbaser", np.uint64, nr_vcpus), ("gicr_ctlr", np.uint32, nr_vcpus),
                  ("seq", np.uint64, nb * 32)]
        total = sum(-(-np.dtype(dt).itemsize * count // 8) * 8 for _, dt, count in layout)
        self._state = np.zeros(total, dtype=np.uint8)
        self._scratch = np.zeros(total, dtype=np.uint8)
        views = {}
        start = 0
        for name, dt, count in layout:
            nbytes = np.dtype(dt).itemsize * count
            views[name] = self._state[start:start + nbytes].view(dt)
            start += -(-nbytes // 8) * 8
        self._bits = views["bits"].reshape(NR_BITMAPS, nb)
        self._priority = views["priority"]
        self._route = views["route"]
        self._target = views["target"]
        self._target[:] = -1
        self._pendbaser = views["pendbaser"]
        self._pendbaser[:] = regmap.INITIAL_PENDBASER
        self._gicr_ctlr = views["gicr_ctlr"]
        self._seq = views["seq"]
        self._mpidr = mpidr_arr.copy()
        cdef uint8_t[::1] state_view = self._state
        cdef uint8_t[::1] scratch_view = self._scratch
        self.state_ptr = &state_view[0]
        self.scratch_ptr = &scratch_view[0]
        self.state_len = total
        bits = self._bits
        prio = self._priority
        route = self._route
        target = self._target
        mp = self._mpidr
        pend = self._pendbaser
        ctlr = self._gicr_ctlr
        seq = self._seq
        for r in range(NR_BITMAPS):
            self.st.bm[r] = &bits[r, 0]
        self.st.priority = &prio[0]
        self.st.route = &route[0]
        self.st.target = &target[0]
        self.st.mpidr = &mp[0]
        self.st.pendbaser = &pend[0]
        self.st.gicr_ctlr = &ctlr[0]
        self.st.seq = &seq[0]
        self.st.mpidrs_default = all(
            int(mpidr_arr[i]) == default_mpidr(i) for i in range(nr_vcpus))
        self._reset()

    cdef void _reset(self) noexcept:
        # KVM's kvm_vgic_dist_init / kvm_vgic_vcpu_init reset values (kvm-facts §1.6).
        cdef uint32_t b, spi_words = self.st.nr_irqs >> 5
        for b in range(1, spi_words):
            self.st.bm[BM_GROUP][b] = 0xFFFFFFFF
            self.st.bm[BM_EDGE][b] = 0xFFFFFFFF      # SPIs start edge (config 0)
        for b in range(SPI_BANKS, self.st.nr_banks):
            self.st.bm[BM_GROUP][b] = 0xFFFFFFFF
            self.st.bm[BM_ENABLED][b] = 0x0000FFFF   # SGIs enabled
            self.st.bm[BM_EDGE][b] = 0x0000FFFF      # SGIs edge, PPIs level
        for b in range(NR_PRIVATE, self.st.nr_irqs):
            self.st.target[b] = 0                    # vCPU 0 (MPIDR affinity 0)

    def state_capsule(self):
        """A PyCapsule (name ``"vgic._core.GicState"``) holding the address of
        this Gic's C state, for the other kernels of ``vgic._core``; the
        holder must keep this Gic alive."""
        return PyCapsule_New(&self.st, "vgic._core.GicState", NULL)

    # ------------------------------------------------------------ attributes
    @property
    def nr_irqs(self):
        return self.st.nr_irqs

    @property
    def nr_vcpus(self):
        return self.st.nr_vcpus

    @property
    def dist_base(self):
        return self.st.dist_base

    @property
    def redist_base(self):
        return self.st.redist_base

    # ------------------------------------------------------------- guest MMIO
    @property
    def halt_hook(self):
        """None, or a callable returning a context manager that halts every
        running vCPU (KVM's kvm_arm_halt_guest / kvm_arm_resume_guest).  Guest
        GICD/GICR ISACTIVER and ICACTIVER accesses run inside it, as KVM's
        vgic_access_active_prepare does for GICv3; a replay runs whole inside it."""
        return self._halt_hook

    @halt_hook.setter
    def halt_hook(self, hook):
        if hook is not None and not callable(hook):
            raise TypeError(f"halt_hook must be callable or None, not {type(hook).__name__}")
        self._halt_hook = hook

    cdef uint64_t _halted_access(self, int frame, uint32_t off, int owner, int size,
                                 int write, uint64_t val) except? 0xFFFFFFFFFFFFFFFF:
        with self._halt_hook():
            return guest_access(&self.st, frame, off, owner, size, write, val)

    def mmio_read(self, addr, size, vcpu=0):
        """A guest load of ``size`` bytes at ``addr`` by vCPU ``vcpu``."""
        cdef uint64_t a, sz, vc
        cdef int frame, owner
        cdef uint32_t off
        if as_u64(size, &sz) or not valid_size(sz):
            raise size_error(size)
        if as_u64(addr, &a):
            raise addr_error(addr)
        if as_u64(vcpu, &vc) or vc >= self.st.nr_vcpus:
            raise vcpu_error(vcpu, self.st.nr_vcpus)
        if not decode(&self.st, a, <int>vc, &frame, &off, &owner):
            raise UnmappedAccess(a)
        if self._halt_hook is not None and halts_guest(&self.st, frame, off, <int>sz):
            return self._halted_access(frame, off, owner, <int>sz, 0, 0)
        return guest_access(&self.st, frame, off, owner, <int>sz, 0, 0)

    def mmio_write(self, addr, size, value, vcpu=0):
        """A guest store of ``value`` (``size`` bytes) at ``addr`` by ``vcpu``."""
        cdef uint64_t a, sz, v, vc
        cdef int frame, owner
        cdef uint32_t off
        if as_u64(size, &sz) or not valid_size(sz):
            raise size_error(size)
        if as_u64(addr, &a):
            raise addr_error(addr)
        if as_u64(value, &v) or (v & ~size_mask(<int>sz)):
            raise value_error(value, size)
        if as_u64(vcpu, &vc) or vc >= self.st.nr_vcpus:
            raise vcpu_error(vcpu, self.st.nr_vcpus)
        if not decode(&self.st, a, <int>vc, &frame, &off, &owner):
            raise UnmappedAccess(a)
        if self._halt_hook is not None and halts_guest(&self.st, frame, off, <int>sz):
            self._halted_access(frame, off, owner, <int>sz, 1, v)
            return
        guest_access(&self.st, frame, off, owner, <int>sz, 1, v)

    def mmio_replay(self, trace):
        """Run a trace of ``vgic.MMIO_ACCESS`` records; returns the values read."""
        if self._halt_hook is not None:
            return self._replay_halting(trace)
        return self._replay(trace)

    cdef int _check_trace(self, trace) except -1:
        if not isinstance(trace, np.ndarray) or trace.dtype != MMIO_ACCESS or trace.ndim != 1:
            raise TypeError("trace must be a 1-D numpy array of vgic.MMIO_ACCESS, not "
                            f"{type(trace).__name__} {getattr(trace, 'dtype', '')}")
        return 0

    cdef _replay_halting(self, trace):
        # With vCPUs running, each active-state access halts them around
        # itself, as it would one by one; the rest run as usual.  The whole
        # trace is validated first, so a rejected trace halts nothing.
        self._check_trace(trace)
        # A private copy: the halts run Python code, so another thread could
        # otherwise change a record between its check and its use.
        arr = np.array(trace, copy=True, order="C")
        cdef Py_ssize_t n = arr.shape[0], i = 0, j
        out = np.zeros(n, dtype=np.uint64)
        if n == 0:
            return out
        cdef const uint8_t[::1] raw = arr.view(np.uint8)
        cdef uint64_t[::1] res = out
        cdef const MmioAccess *acc = <const MmioAccess *> &raw[0]
        cdef int kind = BAD_NONE, frame, owner
        cdef uint32_t off
        cdef Py_ssize_t bad = self._validate(acc, n, &kind)
        if bad >= 0:
            self._raise_bad(arr[bad], bad, kind)
        while i < n:
            j = i
            while j < n:
                if decode(&self.st, acc[j].addr, acc[j].vcpu, &frame, &off, &owner) \
                        and halts_guest(&self.st, frame, off, acc[j].size):
                    break
                j += 1
            self._run(acc + i, j - i, &res[i])
            if j < n:
                res[j] = self._halted_access(frame, off, owner, acc[j].size, acc[j].write != 0, acc[j].value)
            i = j + 1
        return out

    cdef _replay(self, trace):
        self._check_trace(trace)
        cdef Py_ssize_t n = trace.shape[0]
        out = np.zeros(n, dtype=np.uint64)
        if n == 0:
            return out
        arr = np.ascontiguousarray(trace)
        cdef const uint8_t[::1] raw = arr.view(np.uint8)
        cdef uint64_t[::1] res = out
        cdef const MmioAccess *acc = <const MmioAccess *> &raw[0]
        cdef int kind = BAD_NONE
        cdef Py_ssize_t bad
        cdef GicState saved
        # The GIL is held throughout, so no Python thread can change the
        # trace between a record's check and its use.
        if n < FUSED_MIN_RECORDS:
            # A short trace sits in cache: check it all, then run it.
            bad = self._validate(acc, n, &kind)
            if bad >= 0:
                self._raise_bad(arr[bad], bad, kind)
            self._run(acc, n, &res[0])
            return out
        # A long trace is read once: each record is checked as it runs, and
        # a bad one rolls the whole state back to before the trace.
        memcpy(self.scratch_ptr, self.state_ptr, self.state_len)
        saved = self.st
        bad = self._run_checked(acc, n, &res[0])
        if bad >= 0:
            memcpy(self.state_ptr, self.scratch_ptr, self.state_len)
            self.st.dist_enabled = saved.dist_enabled
            self.st.implementation_rev = saved.implementation_rev
            self.st.propbaser = saved.propbaser
            self.st.seq_counter = saved.seq_counter
            self._first_bad(acc + bad, 1, &kind)
            self._raise_bad(arr[bad], bad, kind)
        return out

    cdef Py_ssize_t _validate(self, const MmioAccess *acc, Py_ssize_t n, int *kind) noexcept nogil:
        # Everything is checked before anything runs, so a rejected trace
        # leaves the state untouched.  A valid trace costs one branch-free
        # pass; only a failed pass searches for the first bad record.
        cdef Py_ssize_t i
        cdef uint64_t bad = 0
        cdef uint64_t dist = self.st.dist_base, rd = self.st.redist_base
        cdef uint64_t rd_size = <uint64_t>self.st.nr_vcpus << REDIST_SHIFT
        cdef uint32_t nr_vcpus = self.st.nr_vcpus
        cdef const MmioAccess *a
        for i in range(n):
            a = &acc[i]
            bad |= SIZE_BAD[a.size] | (a.vcpu >= nr_vcpus)
            bad |= (a.write != 0) & ((a.value & VALUE_EXCESS[a.size]) != 0)
            bad |= ((a.addr - dist) >= FRAME_SIZE) & ((a.addr - rd) >= rd_size)
        if not bad:
            return -1
        return self._first_bad(acc, n, kind)

    cdef Py_ssize_t _first_bad(self, const MmioAccess *acc, Py_ssize_t n, int *kind) noexcept nogil:
        cdef Py_ssize_t i
        cdef int frame, owner
        cdef uint32_t off
        for i in range(n):
            if not valid_size(acc[i].size):
                kind[0] = BAD_SIZE
                return i
            if acc[i].write and (acc[i].value & ~size_mask(acc[i].size)):
                kind[0] = BAD_VALUE
                return i
            if acc[i].vcpu >= self.st.nr_vcpus:
                kind[0] = BAD_VCPU
                return i
            if not decode(&self.st, acc[i].addr, acc[i].vcpu, &frame, &off, &owner):
                kind[0] = BAD_ADDR
                return i
        return -1

    cdef Py_ssize_t _run_checked(self, const MmioAccess *acc, Py_ssize_t n, uint64_t *res) noexcept nogil:
        # One pass: the validation of _validate and the work of _run; returns
        # the index of the first bad record (the caller rolls back) or -1.
        cdef Py_ssize_t i
        cdef int frame, owner
        cdef uint32_t off
        cdef uint32_t nr_vcpus = self.st.nr_vcpus
        cdef const MmioAccess *a
        if not LOOKUP_DIRECT:
            for i in range(n):
                a = &acc[i]
                if (SIZE_BAD[a.size] | (a.vcpu >= nr_vcpus)
                        | ((a.write != 0) & ((a.value & VALUE_EXCESS[a.size]) != 0))):
                    return i
                if not decode(&self.st, a.addr, a.vcpu, &frame, &off, &owner):
                    return i
                res[i] = searched_access(&self.st, frame, off, owner, a.size, a.write != 0, a.value)
            return -1
        # Direct lookup: blocks of records are checked and prepared first
        # (no data-dependent branches, so the CPU overlaps them), then
        # dispatched; after a mispredicted dispatch the next one's handler
        # and arguments are already at hand.  Preparing reads only tables no
        # access can change, so the order of effects is the trace's.
        cdef Prepared pre[BLOCK]
        cdef Py_ssize_t base = 0, k, m, bad_at
        cdef uint32_t bad
        while base < n:
            m = n - base if n - base < BLOCK else BLOCK
            bad_at = -1
            for k in range(m):
                a = &acc[base + k]
                bad = (SIZE_BAD[a.size] | (a.vcpu >= nr_vcpus)
                       | ((a.write != 0) & ((a.value & VALUE_EXCESS[a.size]) != 0)))
                bad |= not prepare(&self.st, a, &pre[k])
                if bad:
                    bad_at = k
                    break
            if bad_at >= 0:
                m = bad_at
            for k in range(m):
                res[base + k] = pre[k].fn(&self.st, pre[k].vcpu, pre[k].off, pre[k].intid,
                                          pre[k].size, pre[k].val)
            if bad_at >= 0:
                return base + bad_at
            base += m
        return -1

    cdef void _run(self, const MmioAccess *acc, Py_ssize_t n, uint64_t *res) noexcept nogil:
        cdef Py_ssize_t i, base = 0, k, m
        cdef int frame, owner
        cdef uint32_t off
        cdef uint32_t nr_vcpus = self.st.nr_vcpus
        cdef Prepared pre[BLOCK]
        cdef const MmioAccess *a
        if not LOOKUP_DIRECT:
            for i in range(n):
                # Validated already; the checks stay so that no record can
                # ever index outside the tables.
                if decode(&self.st, acc[i].addr, acc[i].vcpu, &frame, &off, &owner) \
                        and valid_size(acc[i].size) and acc[i].vcpu < nr_vcpus:
                    res[i] = searched_access(&self.st, frame, off, owner, acc[i].size,
                                             acc[i].write != 0, acc[i].value)
                else:
                    res[i] = 0
            return
        # Blocks prepared, then dispatched, as in _run_checked.
        while base < n:
            m = n - base if n - base < BLOCK else BLOCK
            for k in range(m):
                a = &acc[base + k]
                if not (prepare(&self.st, a, &pre[k]) & valid_size(a.size) & (a.vcpu < nr_vcpus)):
                    pre[k].fn = REFUSED[a.write != 0]     # never after validation
                    pre[k].vcpu = 0
            for k in range(m):
                res[base + k] = pre[k].fn(&self.st, pre[k].vcpu, pre[k].off, pre[k].intid,
                                          pre[k].size, pre[k].val)
            base += m

    cdef _raise_bad(self, rec, Py_ssize_t i, int kind):
        addr, size, value, vcpu = int(rec["addr"]), int(rec["size"]), int(rec["value"]), int(rec["vcpu"])
        if kind == BAD_ADDR:
            raise UnmappedAccess(addr, f"trace[{i}]: address {addr:#x} is outside every GIC frame")
        if kind == BAD_SIZE:
            err = size_error(size)
        elif kind == BAD_VALUE:
            err = value_error(value, size)
        else:
            err = vcpu_error(vcpu, self.st.nr_vcpus)
        raise ValueError(f"trace[{i}]: {err}")

    # ------------------------------------------------------ userspace access
    cdef const Region *_uregion(self, int frame, int vcpu, uint64_t offset, uint32_t *intid) except? NULL:
        if not 0 <= frame < NR_FRAMES:
            raise ValueError(f"frame {frame} is not one of 0..{NR_FRAMES - 1}")
        if not 0 <= vcpu < <int>self.st.nr_vcpus:
            raise vcpu_error(vcpu, self.st.nr_vcpus)
        if offset >= FRAME_SIZE:
            return NULL
        return check_region(&self.st, frame, <uint32_t>offset, 4, intid)

    def has_region(self, int frame, uint64_t offset):
        """True if a 32-bit access at ``offset`` of ``frame`` hits a region."""
        cdef uint32_t intid = 0
        if offset & 3:
            return False
        return self._uregion(frame, 0, offset, &intid) != NULL

    def uaccess_read(self, int frame, int vcpu, uint64_t offset):
        """A 32-bit userspace read with KVM's uaccess semantics (0 if no region)."""
        cdef uint32_t intid = 0
        cdef const Region *r = self._uregion(frame, vcpu, offset, &intid)
        if r == NULL:
            return 0
        return UREGIONS[frame][r - &REGIONS[frame][0]].uread(&self.st, vcpu, <uint32_t>offset, intid, 4, 0)

    def uaccess_write(self, int frame, int vcpu, uint64_t offset, uint32_t value):
        """A 32-bit userspace write; returns 0 or a negative errno."""
        cdef uint32_t intid = 0
        cdef const Region *r = self._uregion(frame, vcpu, offset, &intid)
        if r == NULL:
            return 0
        cdef const URegion *u = &UREGIONS[frame][r - &REGIONS[frame][0]]
        if u.uwrite != NULL:
            return u.uwrite(&self.st, vcpu, <uint32_t>offset, intid, 4, value)
        r.guest[1](&self.st, vcpu, <uint32_t>offset, intid, 4, value)
        return 0

    cdef uint32_t _line_mask(self, int vcpu, uint32_t intid, uint32_t *bank) except? 0:
        # LEVEL_INFO covers 32 INTIDs; SGIs and unallocated INTIDs are RAZ/WI.
        if not 0 <= vcpu < <int>self.st.nr_vcpus:
            raise vcpu_error(vcpu, self.st.nr_vcpus)
        if intid & 31:
            raise ValueError(f"intid {intid} is not a multiple of 32")
        if intid >= self.st.nr_irqs:
            return 0
        bank[0] = bank_of(&self.st, vcpu, intid)
        return 0xFFFF0000 if intid < NR_PRIVATE else 0xFFFFFFFF

    def line_level_read(self, int vcpu, uint32_t intid):
        """KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO read of INTIDs ``intid..intid+31``."""
        cdef uint32_t b = 0
        cdef uint32_t m = self._line_mask(vcpu, intid, &b)
        if m == 0:
            return 0
        # Only level-triggered interrupts report a line level.
        return self.st.bm[BM_LINE_LEVEL][b] & ~self.st.bm[BM_EDGE][b] & m

    def line_level_write(self, int vcpu, uint32_t intid, uint32_t value):
        """KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO write of INTIDs ``intid..intid+31``."""
        cdef uint32_t b = 0
        cdef uint32_t m = self._line_mask(vcpu, intid, &b)
        if m == 0:
            return
        # Set whatever the trigger mode, so restore order does not matter.
        cdef uint32_t before = deliverable(&self.st, b)
        self.st.bm[BM_LINE_LEVEL][b] = (self.st.bm[BM_LINE_LEVEL][b] & ~m) | (value & m)
        stamp_new(&self.st, b, before)

    # ------------------------------------------------------- interrupt lines
    cdef uint32_t _bank_checked(self, int vcpu, uint32_t intid) except? 0xFFFFFFFF:
        if intid >= self.st.nr_irqs:
            raise ValueError(f"intid {intid} is not below nr_irqs {self.st.nr_irqs}")
        if intid < NR_PRIVATE and not 0 <= vcpu < <int>self.st.nr_vcpus:
            raise vcpu_error(vcpu, self.st.nr_vcpus)
        return bank_of(&self.st, vcpu, intid)

    def set_irq_level(self, int vcpu, uint32_t intid, bint level):
        """kvm_vgic_inject_irq for an SPI (``vcpu`` ignored) or a PPI."""
        cdef uint32_t b = self._bank_checked(vcpu, intid)
        line_report(&self.st, b, 1u << (intid & 31), level)

    def set_irq_level_batch(self, vcpus, intids, levels):
        """set_irq_level for every (vcpu, intid, level) of three equal-length
        1-D arrays, in order; every entry is checked (INTID below nr_irqs, a
        vCPU in range for a private INTID) before any is applied."""
        v = np.array(vcpus, dtype=np.int64, copy=True)
        n_ = np.array(intids, dtype=np.int64, copy=True)
        lv = np.array(levels, dtype=np.uint8, copy=True)
        if v.ndim != 1 or n_.shape != v.shape or lv.shape != v.shape:
            raise ValueError("vcpus, intids and levels must be 1-D arrays of one length")
        cdef const int64_t[::1] vc = v
        cdef const int64_t[::1] it = n_
        cdef const uint8_t[::1] lvl = lv
        cdef Py_ssize_t k, m = v.shape[0]
        cdef uint32_t intid
        for k in range(m):
            if not 0 <= it[k] < self.st.nr_irqs:
                raise ValueError(f"intids[{k}] = {it[k]} is not below nr_irqs {self.st.nr_irqs}")
            if it[k] < NR_PRIVATE and not 0 <= vc[k] < self.st.nr_vcpus:
                raise ValueError(f"vcpus[{k}] = {vc[k]} is out of range: the VM has {self.st.nr_vcpus} vCPUs")
        for k in range(m):
            intid = <uint32_t>it[k]
            line_report(&self.st, bank_of(&self.st, <int>vc[k], intid), 1u << (intid & 31), lvl[k] != 0)

    # ------------------------------------------------ the KVM side's access
    def set_irq_bit(self, int vcpu, uint32_t intid, int field, bint value):
        """Set one single-bit field of an INTID's state: ``field`` 0 enabled,
        1 pending_latch, 2 line_level, 3 active, 4 group, 5 edge (the order
        of :meth:`irq_state`).  Used by the list-register flush and fold."""
        cdef uint32_t b = self._bank_checked(vcpu, intid)
        cdef uint32_t bit = 1u << (intid & 31)
        if not 0 <= field < NR_BITMAPS:
            raise ValueError(f"field {field} is not one of 0..{NR_BITMAPS - 1}")
        cdef uint32_t before = deliverable(&self.st, b)
        if value:
            self.st.bm[field][b] |= bit
        else:
            self.st.bm[field][b] &= ~bit
        stamp_new(&self.st, b, before)

    def irq_scan(self, int vcpu):
        """INTIDs that may need a list register: vCPU ``vcpu``'s private
        INTIDs, then every SPI, that are active or enabled and pending
        (pending as a guest reads it), in INTID order."""
        cdef uint32_t b, w, bits
        cdef list out = []
        if not 0 <= vcpu < <int>self.st.nr_vcpus:
            raise vcpu_error(vcpu, self.st.nr_vcpus)
        for w in range(self.st.nr_irqs >> 5):
            b = SPI_BANKS + <uint32_t>vcpu if w == 0 else w
            bits = deliverable(&self.st, b)
            while bits:
                out.append((w << 5) | count_trailing_zeros(bits))
                bits &= bits - 1
        return out

    @property
    def dist_enabled(self):
        """GICD_CTLR.EnableGrp1: KVM's dist->enabled."""
        return bool(self.st.dist_enabled)

    # ---------------------------------------------------------- introspection
    def irq_state(self, int vcpu, uint32_t intid):
        """``(enabled, pending_latch, line_level, active, group, edge,
        priority, route, target)`` of one INTID."""
        cdef uint32_t b = self._bank_checked(vcpu, intid)
        cdef uint32_t s = intid & 31
        cdef tuple bits = tuple((self.st.bm[r][b] >> s) & 1 for r in (
            BM_ENABLED, BM_PENDING_LATCH, BM_LINE_LEVEL, BM_ACTIVE, BM_GROUP, BM_EDGE))
        if intid < NR_PRIVATE:
            return bits + (self.st.priority[prio_index(&self.st, vcpu, intid)], 0, -1)
        return bits + (self.st.priority[intid], self.st.route[intid], self.st.target[intid])

    def dump(self):
        """Every piece of state in the canonical form shared with the twin."""
        names = ("enabled", "pending_latch", "line_level", "active", "group", "edge")
        out = {name: self._bits[i].copy() for i, name in enumerate(names)}
        out["priority"] = self._priority[:-8].copy()
        out["route"] = self._route.copy()
        out["target"] = self._target.copy()
        out["dist_enabled"] = int(self.st.dist_enabled)
        out["implementation_rev"] = int(self.st.implementation_rev)
        out["propbaser"] = int(self.st.propbaser)
        out["pendbaser"] = self._pendbaser.copy()
        out["gicr_ctlr"] = self._gicr_ctlr.copy()
        out["seq"] = self._seq.copy()
        out["seq_counter"] = int(self.st.seq_counter)
        return out

