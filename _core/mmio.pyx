# cython: language_level=3
"""The table-driven MMIO framework: every frame of every part, one dispatch.

Each row of :data:`vgic.regmap.FRAMES` is compiled, when its part first
attaches to a :class:`Bus`, into a C array of :c:type:`Region` descriptors
holding the function pointers of the owning part's handler families (the
``OpsRow`` table of its :class:`vgic._core.cstate.CState`).  A bus maps
windows of guest physical addresses onto frames (one frame, or a group of
frames repeated per vCPU as the redistributors are); a guest access is
decoded to (frame, offset, acting vCPU), its region found by a direct index
or by binary search, checked once for width, alignment and INTID range
(KVM's ``check_region``), and dispatched to the handler with the owning
part's C state - all in C.  The value interface is a plain 64-bit
little-endian value and a size, as the 2016 MMIO-framework review asked.
"""
import sys

import numpy as np

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset, strcmp

from vgic._core.args cimport index_arg, int_arg
from vgic._core.cstate cimport CState, OpsRow, access_fn, uwrite_fn
from vgic._core.consts cimport FRAME_SIZE, FRAME_SHIFT, NR_FRAMES, W8, W32, W64
from vgic._core.bitmap cimport size_mask

from vgic import regmap
from vgic.errors import UnmappedAccess
from vgic.batchargs import index_array as batch_index_array
from vgic.batchargs import value_array as batch_value_array
from vgic.trace import MMIO_ACCESS, check_trace

if sys.byteorder != "little":   # the handlers memcpy little-endian values
    raise ImportError("vgic._core requires a little-endian host")

cdef enum:
    FRAME_WORDS = FRAME_SIZE // 4
    MAX_REGIONS = 64
    NO_REGION = MAX_REGIONS - 1     # the RAZ/WI sentinel slot of each frame
    FUSED_MIN_RECORDS = 16384       # from here replay checks while it runs (384 KiB of trace)
    BLOCK = 64                      # records prepared ahead of their dispatch
    MIN_WINDOWS = 1                 # window slots allocated at least (a miss decodes through slot 0)
    MAP_MAX_FRAMES = 1 << 16        # the frame map covers spans up to 4 GiB
    MAP_MAPPED = 1 << 8


# ------------------------------------------------------------- frame tables
# What a guest access needs, in 32 bytes (half a cache line): the replay
# loop reads one per access, so its size is its cache footprint.
cdef struct Region:
    uint32_t offset
    uint32_t length
    uint32_t first_intid
    uint8_t widths              # W8 | W32 | W64 flags
    uint8_t bpi                 # bits per IRQ, 0 for a plain register
    uint8_t bpi_shift           # log2(bpi)
    uint8_t halts               # a guest access halts every running vCPU (active state)
    access_fn guest[2]          # [0] guest read, [1] guest write

# The userspace handlers of the same region (cold: device attributes only).
cdef struct URegion:
    access_fn uread             # userspace read (KVM's uaccess_read)
    uwrite_fn uwrite            # userspace write, 0 or -errno; NULL: the guest write

cdef uint64_t refused_read(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size,
                           uint64_t val) noexcept nogil:
    return 0

cdef uint64_t refused_write(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size,
                            uint64_t val) noexcept nogil:
    return 0

cdef access_fn REFUSED[2]          # RAZ / WI: what a refused access does
REFUSED[0] = refused_read
REFUSED[1] = refused_write

# One table per row of vgic.regmap.FRAMES, sized by the build from the table
# itself (NR_FRAMES is generated from vgic.regmap): a new frame is a new row
# there, never a constant here.  A module built before the table grew refuses
# to load.
if NR_FRAMES != len(regmap.FRAMES):
    raise ImportError(f"vgic._core.mmio was built for {NR_FRAMES} frames, vgic.regmap has "
                      f"{len(regmap.FRAMES)}: rebuild the package")
if NR_FRAMES > 255:     # frame ids are bytes in the frame map and in Prepared
    raise ImportError(f"vgic.regmap has {NR_FRAMES} frames, more than 255")
cdef int NFRAMES = NR_FRAMES
cdef Region REGIONS[NR_FRAMES][MAX_REGIONS]
cdef URegion UREGIONS[NR_FRAMES][MAX_REGIONS]
# Direct index: region number of each 32-bit word of a frame (NO_REGION if
# none).  Region bounds are multiples of 4, so a word never spans two.
cdef uint8_t DIRECT[NR_FRAMES][FRAME_WORDS]
cdef int NREG[NR_FRAMES]
cdef const OpsRow *BUILT_FROM[NR_FRAMES]
cdef bint LOOKUP_DIRECT = True


cdef int log2_exact(int v) except -1:
    cdef int s = 0
    while (1 << s) < v:
        s += 1
    if (1 << s) != v:
        raise ValueError(f"{v} is not a power of two")
    return s


cdef const OpsRow *find_ops(CState state, str name) except NULL:
    cdef int i
    cdef bytes key = name.encode()
    for i in range(state.nops):
        if strcmp(state.ops[i].name, key) == 0:
            return &state.ops[i]
    raise ValueError(f"ops {name!r} is not bound by the part's {type(state).__name__}")


cdef int build_frame(int f, CState state) except -1:
    # Compile frame f's rows with the handlers of the part attaching it.
    cdef int i, w
    cdef Region *r
    cdef URegion *u
    cdef const OpsRow *ops
    if BUILT_FROM[f] != NULL:
        if BUILT_FROM[f] != state.ops:
            raise ValueError(f"frame {regmap.FRAME_NAMES[f]} is bound to another part's handlers")
        return 0
    if state.ops == NULL:
        raise ValueError(f"{type(state).__name__} binds no handler families")
    rows = sorted(regmap.FRAMES[f].regions, key=lambda row: row.offset)
    if len(rows) >= NO_REGION:
        raise ValueError(f"frame {regmap.FRAME_NAMES[f]} has {len(rows)} regions, more than {NO_REGION - 1}")
    # Everything is checked and looked up before the tables change.
    bound = [<size_t>find_ops(state, row.ops) for row in rows]
    end = 0
    for row in rows:
        if row.offset < end or row.offset % 4 or row.length % 4 or row.offset + row.length > FRAME_SIZE:
            raise ValueError(f"region {row.name} overlaps, is unaligned or leaves the frame")
        if row.bpi not in (0, 1, 2, 8, 64):
            raise ValueError(f"region {row.name}: {row.bpi} bits per IRQ")
        end = row.offset + row.length
    memset(DIRECT[f], NO_REGION, FRAME_WORDS)
    # The sentinel: where no region is, reads are 0 and writes ignored
    # (KVM's RAZ/WI for unknown offsets), so the direct lookup needs no
    # NULL test.
    r = &REGIONS[f][NO_REGION]
    memset(r, 0, sizeof(Region))
    r.widths = W8 | W32 | W64
    r.guest[0] = refused_read
    r.guest[1] = refused_write
    for i, row in enumerate(rows):
        ops = <const OpsRow *><size_t>bound[i]
        r = &REGIONS[f][i]
        u = &UREGIONS[f][i]
        r.offset = row.offset
        r.length = row.length
        r.first_intid = row.first_intid
        r.widths = row.widths
        r.bpi = row.bpi
        r.bpi_shift = log2_exact(row.bpi) if row.bpi else 0
        r.halts = row.ops in regmap.HALTING_OPS
        r.guest[0] = ops.read
        r.guest[1] = ops.write
        u.uread = ops.uread if ops.uread != NULL else ops.read
        u.uwrite = ops.uwrite
        for w in range(row.offset // 4, (row.offset + row.length) // 4):
            DIRECT[f][w] = i
    NREG[f] = len(rows)
    BUILT_FROM[f] = state.ops
    return 0


def regions(int frame):
    """The region table of ``frame`` as (name, offset, length, widths, bpi,
    first_intid, ops) rows in offset order (from :data:`vgic.regmap.FRAMES`)."""
    if not 0 <= frame < NFRAMES:
        raise ValueError(f"frame {frame} is not one of 0..{NFRAMES - 1}")
    return [(row.name, row.offset, row.length, row.widths, row.bpi, row.first_intid, row.ops)
            for row in sorted(regmap.FRAMES[frame].regions, key=lambda row: row.offset)]


def set_lookup(str mode):
    """Choose region lookup: ``"direct"`` (index table) or ``"bsearch"``."""
    global LOOKUP_DIRECT
    if mode not in ("direct", "bsearch"):
        raise ValueError(f"lookup mode {mode!r} is not 'direct' or 'bsearch'")
    LOOKUP_DIRECT = mode == "direct"


def get_lookup():
    """The region lookup in use."""
    return "direct" if LOOKUP_DIRECT else "bsearch"


# ------------------------------------------------------------------ the bus
cdef int uaccess_size(object size) except -1:
    # Userspace accesses are 32-bit (GICD/GICR attributes) or 64-bit (ITS registers).
    cdef int s = int_arg(size, "size", 0, 8)
    if s != 4 and s != 8:
        raise ValueError(f"size {s} is not 4 or 8")
    return s


cdef struct UAccess:
    # The converted arguments of one userspace access.
    int frame
    int vcpu
    uint32_t offset
    uint32_t intid


cdef struct Window:
    # A range of guest physical addresses: `instances` groups of
    # 2**frame_bits 64 KiB frames, frames first_frame.. in each group.
    uint64_t base
    uint64_t size               # instances << stride_shift
    uint64_t first_frame
    uint64_t frame_mask         # frames per group - 1
    uint64_t stride_shift       # FRAME_SHIFT + log2(frames per group)
    uint64_t per_vcpu           # all ones: the group index is the acting vCPU

cdef struct BusState:
    int nwin
    uint32_t nr_vcpus
    Window *win                 # nwin windows, never overlapping
    # The frame map: one entry per 64 KiB frame from map_base on, covering
    # every window when they span at most MAP_MAX_FRAMES frames (else NULL:
    # decode tries the windows instead), plus a last, unmapped entry that
    # every address beyond it reads.  Entry: frame id [7:0], mapped [8],
    # owning vCPU [31:16] of a per-vCPU group, and [63:32] all ones where
    # the accessing vCPU acts.
    uint64_t *map
    uint64_t map_base
    uint64_t map_frames
    void *ctx[NR_FRAMES]        # per frame: the owning part's C state (NULL: unattached)
    uint32_t limit[NR_FRAMES]   # per frame: the INTID bound of its per-IRQ regions
    bint opaque                 # an attached state keeps state outside its buffer


cdef inline bint decode(const BusState *b, uint64_t addr, uint64_t accessor, uint32_t *frame,
                        uint32_t *off, int *vcpu) noexcept nogil:
    # The (frame, offset, acting vCPU) of a guest address, without a
    # data-dependent branch (a mixed trace alternates between frames at
    # random).  A per-vCPU group acts for the vCPU that owns it, any other
    # frame for the accessor (kvm-facts §2).  False outside every window.
    cdef uint64_t d, idx, e
    cdef int w
    cdef uint64_t hit, sel = 0, anyhit = 0, m
    cdef const Window *win
    if b.map != NULL:
        # One lookup in the frame map; an address beyond it reads the last,
        # unmapped entry (below it, d wraps and is beyond too).
        d = addr - b.map_base
        idx = d >> FRAME_SHIFT
        e = b.map[idx if idx < b.map_frames else b.map_frames]
        frame[0] = <uint32_t>(e & 0xFF)
        off[0] = <uint32_t>(d & (FRAME_SIZE - 1))
        vcpu[0] = <int>(((e >> 16) & 0xFFFF) | (accessor & (e >> 32)))
        return (e & MAP_MAPPED) != 0
    # Windows too far apart for a map: try each, select the hit.
    for w in range(b.nwin):
        hit = (addr - b.win[w].base) < b.win[w].size
        sel |= (<uint64_t>0 - hit) & <uint64_t>w
        anyhit |= hit
    win = &b.win[sel]
    d = addr - win.base
    m = win.per_vcpu
    frame[0] = <uint32_t>(win.first_frame + ((d >> FRAME_SHIFT) & win.frame_mask))
    off[0] = <uint32_t>(d & (FRAME_SIZE - 1))
    vcpu[0] = <int>((m & (d >> win.stride_shift)) | (~m & accessor))
    return anyhit != 0


cdef inline uint8_t width_flag(int size) noexcept nogil:
    # W8 for 1 byte, W32 for 4, W64 for 8, nothing for 2 (the GIC has no
    # halfword registers): one nibble per size, looked up branch-free.
    return (0x400020010ULL >> ((size & 15) * 4)) & 0xF


cdef inline const Region *find_region(uint32_t frame, uint32_t off) noexcept nogil:
    cdef int lo, hi, mid
    cdef const Region *base = &REGIONS[frame][0]
    cdef const Region *r
    cdef uint8_t idx
    if LOOKUP_DIRECT:
        idx = DIRECT[frame][off >> 2]
        return NULL if idx == NO_REGION else &base[idx]
    # (binary search never sees the sentinel: it lies beyond NREG)
    lo = 0
    hi = NREG[frame]
    while lo < hi:
        mid = (lo + hi) >> 1
        r = &base[mid]
        if off < r.offset:
            hi = mid
        elif off >= r.offset + r.length:
            lo = mid + 1
        else:
            return r
    return NULL


cdef inline const Region *check_region(const BusState *b, uint32_t frame, uint32_t off,
                                       int size, uint32_t *intid) noexcept nogil:
    # One check for every region: width allowed, natural alignment, and for
    # per-IRQ regions an INTID the part has.  Failure means RAZ/WI.
    cdef const Region *r = find_region(frame, off)
    cdef uint32_t i
    if r == NULL or not (r.widths & width_flag(size)) or (off & <uint32_t>(size - 1)):
        return NULL
    if r.bpi:
        i = r.first_intid + (((off - r.offset) << 3) >> r.bpi_shift)
        if i >= b.limit[frame]:
            return NULL
        intid[0] = i
    return r


cdef inline access_fn direct_handler(const BusState *b, uint32_t frame, uint32_t off, int size,
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
        | ((r.bpi != 0) & (i >= b.limit[frame]))
    intid[0] = i
    return REFUSED[is_write] if bad else r.guest[is_write]


cdef uint64_t searched_access(const BusState *b, uint32_t frame, uint32_t off, int vcpu,
                              int size, int is_write, uint64_t val) noexcept nogil:
    # The access through binary search (set_lookup("bsearch")).
    cdef uint32_t intid = 0
    cdef const Region *r = check_region(b, frame, off, size, &intid)
    if r == NULL:
        return 0
    return r.guest[is_write](b.ctx[frame], vcpu, off, intid, size, val)


cdef inline uint64_t guest_access(const BusState *b, uint32_t frame, uint32_t off, int vcpu,
                                  int size, int is_write, uint64_t val) noexcept nogil:
    cdef uint32_t intid
    cdef access_fn fn
    if LOOKUP_DIRECT:
        fn = direct_handler(b, frame, off, size, is_write, &intid)
        return fn(b.ctx[frame], vcpu, off, intid, size, val)
    return searched_access(b, frame, off, vcpu, size, is_write, val)


cdef struct Prepared:
    # One access with its handler chosen and its arguments computed.
    access_fn fn
    void *ctx
    uint64_t val
    uint32_t off
    uint32_t intid
    uint16_t vcpu
    uint8_t size
    uint8_t frame


cdef inline bint prepare(const BusState *b, const MmioAccess *a, Prepared *p) noexcept nogil:
    # decode + direct lookup + the region check of one record, with no
    # data-dependent branch; False if the address is outside every window.
    # Refused accesses get a RAZ/WI handler, so dispatch never branches.
    cdef uint32_t frame, off
    cdef int owner
    cdef bint ok = decode(b, a.addr, a.vcpu, &frame, &off, &owner)
    p.fn = direct_handler(b, frame, off, a.size, a.write != 0, &p.intid)
    p.ctx = b.ctx[frame]
    p.val = a.value
    p.off = off
    p.vcpu = <uint16_t>owner
    p.size = a.size
    p.frame = <uint8_t>frame
    return ok


cdef inline bint halts_guest(const BusState *b, uint32_t frame, uint32_t off, int size) noexcept nogil:
    # A valid guest access to a region whose handlers halt the guest (KVM's
    # active-state accessors); an access check_region refuses never reaches them.
    cdef uint32_t intid = 0
    cdef const Region *r = check_region(b, frame, off, size, &intid)
    return r != NULL and r.halts


# ------------------------------------------------------- argument validation
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
    # bool, numpy integers, other __index__ types; floats are TypeError.
    i = PyNumber_Index(v)
    if i < 0 or i >> 64:
        return 1
    out[0] = i
    return 0

cdef inline bint valid_size(uint64_t size) noexcept nogil:
    # 1, 2, 4 or 8: bits 1, 2, 4 and 8 of 0x116.
    return (size <= 8) & ((0x116 >> (size & 15)) & 1)

cdef object size_error(object size):
    return ValueError(f"size {size!r} is not one of 1, 2, 4, 8")

cdef object addr_error(object addr):
    addr = PyNumber_Index(addr)
    if addr < 0:
        return ValueError(f"address {addr} is negative")
    return ValueError(f"address {addr:#x} does not fit in 64 bits")

cdef object value_error(object value, object size):
    value = PyNumber_Index(value)
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

if sizeof(MmioAccess) != MMIO_ACCESS.itemsize:
    raise ImportError("vgic._core.mmio: MmioAccess does not match vgic.MMIO_ACCESS")

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


cdef class Bus:
    """The guest-physical MMIO space of one VM: windows mapped onto the
    frames of :data:`vgic.regmap.FRAMES`, each frame served by the part
    attached to it.  See ``vgic/_core/mmio.pyi``."""
    cdef BusState b
    cdef list _states          # CState per frame (None: unattached)
    cdef list _windows         # (base, frames, instances, per_vcpu) per window
    cdef object _scratch       # rollback copy of every attached state's buffer
    cdef object _halt_hook

    def __cinit__(self):
        # A zeroed slot at least: a miss decodes through slot 0.
        self.b.win = <Window *>calloc(MIN_WINDOWS, sizeof(Window))
        if self.b.win == NULL:
            raise MemoryError()
        self._states = [None] * NFRAMES
        self._windows = []

    def __dealloc__(self):
        free(self.b.win)
        free(self.b.map)

    def __init__(self, nr_vcpus):
        if self.b.nr_vcpus:
            raise TypeError("a Bus is initialised once")
        self.b.nr_vcpus = int_arg(nr_vcpus, "nr_vcpus", 1, regmap.MAX_VCPUS)

    cdef int _ready(self) except -1:
        if self.b.nr_vcpus == 0:
            raise TypeError("this Bus was not initialised (call Bus(nr_vcpus))")
        return 0

    @property
    def nr_vcpus(self):
        return self.b.nr_vcpus

    @property
    def windows(self):
        """The mapped windows as (base, frames, instances, per_vcpu) tuples."""
        return list(self._windows)

    cdef int _frame(self, frame) except -1:
        return index_arg(frame, "frame", NFRAMES)

    def attach(self, frames, CState state not None):
        """Serve ``frames`` (frame indices of :data:`vgic.regmap.FRAMES`)
        with ``state``'s handlers and state.  The state is kept alive."""
        self._ready()
        ids = [self._frame(f) for f in frames]
        if state.ctx == NULL:
            raise ValueError(f"{type(state).__name__} is not initialised")
        for f in ids:
            if self._states[f] is not None:
                raise ValueError(f"frame {regmap.FRAME_NAMES[f]} is already attached")
            build_frame(f, state)
        for f in ids:
            self._states[f] = state
            self.b.ctx[f] = state.ctx
            self.b.limit[f] = state.nr_intids
        self.b.opaque |= state.opaque
        self._scratch = None

    def map(self, base, frames, instances=1, bint per_vcpu=False):
        """Map ``instances`` consecutive groups of the attached ``frames``
        (a power-of-two count of 64 KiB frames per group) at ``base``; with
        ``per_vcpu`` group *i* acts for vCPU *i* (a redistributor), else for
        the accessing vCPU.  Windows may not overlap."""
        cdef Window w
        cdef Window *grown
        self._ready()
        base = int_arg(base, "base", 0, 0xFFFFFFFFFFFFFFFF)
        instances = int_arg(instances, "instances", -(1 << 63), (1 << 63) - 1)
        ids = [self._frame(f) for f in frames]
        if not ids or ids != list(range(ids[0], ids[0] + len(ids))):
            raise ValueError(f"frames {frames!r} are not consecutive frame indices")
        bits = log2_exact(len(ids))
        for f in ids:
            if self._states[f] is None:
                raise ValueError(f"frame {regmap.FRAME_NAMES[f]} is not attached")
        if not 1 <= instances <= (self.b.nr_vcpus if per_vcpu else 1 << 20):
            raise ValueError(f"{instances} instances: a per-vCPU window has one per vCPU at most")
        if base & (FRAME_SIZE - 1):
            raise ValueError(f"base {base:#x} is not 64 KiB aligned")
        size = instances << (FRAME_SHIFT + bits)
        if base + size > 1 << 64:
            raise ValueError(f"window {base:#x}+{size:#x} leaves the 64-bit address space")
        for other_base, other_frames, other_n, _ in self._windows:
            other_size = other_n * len(other_frames) * FRAME_SIZE
            if base < other_base + other_size and other_base < base + size:
                raise ValueError(f"window {base:#x}+{size:#x} overlaps {other_base:#x}+{other_size:#x}")
        w.base = base
        w.size = size
        w.first_frame = ids[0]
        w.frame_mask = len(ids) - 1
        w.stride_shift = FRAME_SHIFT + bits
        w.per_vcpu = <uint64_t>0 - <uint64_t>per_vcpu
        grown = <Window *>calloc(max(self.b.nwin + 1, MIN_WINDOWS), sizeof(Window))
        if grown == NULL:
            raise MemoryError()
        memcpy(grown, self.b.win, self.b.nwin * sizeof(Window))
        grown[self.b.nwin] = w
        free(self.b.win)
        self.b.win = grown
        self.b.nwin += 1
        self._windows.append((base, tuple(ids), instances, bool(per_vcpu)))
        self._build_map()

    cdef int _build_map(self) except -1:
        # The frame map of every window, when they span few enough frames.
        cdef uint64_t lo, hi, n, i, k, fpg
        cdef uint64_t *m
        lo = min(b for b, _, _, _ in self._windows)
        hi = max(b + n * len(f) * FRAME_SIZE for b, f, n, _ in self._windows)
        n = (hi - lo) >> FRAME_SHIFT
        free(self.b.map)
        self.b.map = NULL
        if n > MAP_MAX_FRAMES:
            return 0
        m = <uint64_t *>calloc(n + 1, sizeof(uint64_t))     # + the unmapped entry
        if m == NULL:
            raise MemoryError()
        for base, frames, instances, per_vcpu in self._windows:
            fpg = len(frames)
            for i in range(instances):
                for k in range(fpg):
                    m[((base - lo) >> FRAME_SHIFT) + i * fpg + k] = (
                        frames[k] | MAP_MAPPED
                        | ((i << 16) if per_vcpu else (<uint64_t>0xFFFFFFFF << 32)))
        self.b.map = m
        self.b.map_base = lo
        self.b.map_frames = n
        return 0

    # ------------------------------------------------------------- guest MMIO
    @property
    def halt_hook(self):
        """None, or a callable returning a context manager that halts every
        running vCPU (KVM's kvm_arm_halt_guest / kvm_arm_resume_guest).  Guest
        accesses to the regions of :data:`vgic.regmap.HALTING_OPS` run inside
        it, one by one, also inside a replay."""
        return self._halt_hook

    @halt_hook.setter
    def halt_hook(self, hook):
        if hook is not None and not callable(hook):
            raise TypeError(f"halt_hook must be callable or None, not {type(hook).__name__}")
        self._halt_hook = hook

    cdef uint64_t _halted_access(self, hook, uint32_t frame, uint32_t off, int owner, int size,
                                 int write, uint64_t val) except? 0xFFFFFFFFFFFFFFFF:
        with hook():
            return guest_access(&self.b, frame, off, owner, size, write, val)

    def mmio_read(self, addr, size, vcpu=0):
        """A guest load of ``size`` bytes at ``addr`` by vCPU ``vcpu``."""
        cdef uint64_t a, sz, vc
        cdef uint32_t frame, off
        cdef int owner
        if as_u64(size, &sz) or not valid_size(sz):
            raise size_error(size)
        if as_u64(addr, &a):
            raise addr_error(addr)
        if as_u64(vcpu, &vc) or vc >= self.b.nr_vcpus:
            raise vcpu_error(vcpu, self.b.nr_vcpus)
        if not decode(&self.b, a, vc, &frame, &off, &owner):
            raise UnmappedAccess(a)
        hook = self._halt_hook
        if hook is not None and halts_guest(&self.b, frame, off, <int>sz):
            return self._halted_access(hook, frame, off, owner, <int>sz, 0, 0)
        return guest_access(&self.b, frame, off, owner, <int>sz, 0, 0)

    def mmio_write(self, addr, size, value, vcpu=0):
        """A guest store of ``value`` (``size`` bytes) at ``addr`` by ``vcpu``."""
        cdef uint64_t a, sz, v, vc
        cdef uint32_t frame, off
        cdef int owner
        if as_u64(size, &sz) or not valid_size(sz):
            raise size_error(size)
        if as_u64(addr, &a):
            raise addr_error(addr)
        if as_u64(value, &v) or (v & ~size_mask(<int>sz)):
            raise value_error(value, size)
        if as_u64(vcpu, &vc) or vc >= self.b.nr_vcpus:
            raise vcpu_error(vcpu, self.b.nr_vcpus)
        if not decode(&self.b, a, vc, &frame, &off, &owner):
            raise UnmappedAccess(a)
        hook = self._halt_hook
        if hook is not None and halts_guest(&self.b, frame, off, <int>sz):
            self._halted_access(hook, frame, off, owner, <int>sz, 1, v)
            return
        guest_access(&self.b, frame, off, owner, <int>sz, 1, v)

    def mmio_replay(self, trace):
        """Run a trace of ``vgic.MMIO_ACCESS`` records; returns the values read."""
        arr = check_trace(trace)
        # The hook is read once: a hook set or cleared by another thread
        # mid-replay does not change what this replay does.
        hook = self._halt_hook
        if hook is not None:
            return self._replay_halting(arr, hook)
        return self._replay(arr)

    cdef _replay_halting(self, arr, hook):
        # With vCPUs running, each access to a halting region halts them
        # around itself, as it would one by one; the rest run as usual.  The
        # whole trace is validated first, so a rejected trace halts nothing.
        # A private copy: the halts run Python code, so another thread could
        # otherwise change a record between its check and its use.
        arr = np.array(arr, copy=True, order="C")
        cdef Py_ssize_t n = arr.shape[0], i = 0, j
        out = np.zeros(n, dtype=np.uint64)
        if n == 0:
            return out
        cdef const uint8_t[::1] raw = arr.view(np.uint8)
        cdef uint64_t[::1] res = out
        cdef const MmioAccess *acc = <const MmioAccess *> &raw[0]
        cdef int kind = BAD_NONE, owner
        cdef uint32_t frame, off
        cdef Py_ssize_t bad = self._validate(acc, n, &kind)
        if bad >= 0:
            self._raise_bad(arr[bad], bad, kind)
        while i < n:
            j = i
            while j < n:
                if decode(&self.b, acc[j].addr, acc[j].vcpu, &frame, &off, &owner) \
                        and halts_guest(&self.b, frame, off, acc[j].size):
                    break
                j += 1
            self._run(acc + i, j - i, &res[i])
            if j < n:
                res[j] = self._halted_access(hook, frame, off, owner, acc[j].size, acc[j].write != 0,
                                             acc[j].value)
            i = j + 1
        return out

    cdef _replay(self, arr):
        cdef Py_ssize_t n = arr.shape[0]
        out = np.zeros(n, dtype=np.uint64)
        if n == 0:
            return out
        arr = np.ascontiguousarray(arr)
        cdef const uint8_t[::1] raw = arr.view(np.uint8)
        cdef uint64_t[::1] res = out
        cdef const MmioAccess *acc = <const MmioAccess *> &raw[0]
        cdef int kind = BAD_NONE
        cdef Py_ssize_t bad
        # The GIL is held throughout, so no Python thread can change the
        # trace between a record's check and its use.
        if n < FUSED_MIN_RECORDS or self.b.opaque:
            # A short trace sits in cache: check it all, then run it.  So
            # does any trace when a part keeps state outside its buffer (no
            # copy of the buffers could undo it).
            bad = self._validate(acc, n, &kind)
            if bad >= 0:
                self._raise_bad(arr[bad], bad, kind)
            self._run(acc, n, &res[0])
            return out
        # A long trace is read once: each record is checked as it runs, and
        # a bad one rolls every attached part's state back to before the
        # trace (one copy of each state buffer: nothing can escape it).
        self._save_states()
        bad = self._run_checked(acc, n, &res[0])
        if bad >= 0:
            self._restore_states()
            self._first_bad(acc + bad, 1, &kind)
            self._raise_bad(arr[bad], bad, kind)
        return out

    cdef list _attached(self):
        # Each attached state once, in frame order.
        seen = []
        for s in self._states:
            if s is not None and not any(s is t for t in seen):
                seen.append(s)
        return seen

    cdef int _save_states(self) except -1:
        cdef CState s
        cdef Py_ssize_t total = 0, at = 0
        states = self._attached()
        for s in states:
            total += s.buf_len
        if self._scratch is None or self._scratch.shape[0] != total:
            self._scratch = np.zeros(max(total, 1), dtype=np.uint8)
        cdef uint8_t[::1] scratch = self._scratch
        for s in states:
            if s.buf_len:
                memcpy(&scratch[at], s.buf, s.buf_len)
            at += s.buf_len
        return 0

    cdef int _restore_states(self) except -1:
        cdef CState s
        cdef Py_ssize_t at = 0
        cdef uint8_t[::1] scratch = self._scratch
        for s in self._attached():
            if s.buf_len:
                memcpy(s.buf, &scratch[at], s.buf_len)
            at += s.buf_len
        return 0

    cdef Py_ssize_t _validate(self, const MmioAccess *acc, Py_ssize_t n, int *kind) noexcept nogil:
        # Everything is checked before anything runs, so a rejected trace
        # leaves the state untouched.  A valid trace costs one branch-free
        # pass; only a failed pass searches for the first bad record.
        cdef Py_ssize_t i
        cdef uint64_t bad = 0
        cdef uint32_t nr_vcpus = self.b.nr_vcpus, frame, off
        cdef int owner
        cdef const MmioAccess *a
        for i in range(n):
            a = &acc[i]
            bad |= SIZE_BAD[a.size] | (a.vcpu >= nr_vcpus)
            bad |= (a.write != 0) & ((a.value & VALUE_EXCESS[a.size]) != 0)
            bad |= not decode(&self.b, a.addr, a.vcpu, &frame, &off, &owner)
        if not bad:
            return -1
        return self._first_bad(acc, n, kind)

    cdef Py_ssize_t _first_bad(self, const MmioAccess *acc, Py_ssize_t n, int *kind) noexcept nogil:
        cdef Py_ssize_t i
        cdef uint32_t frame, off
        cdef int owner
        for i in range(n):
            if not valid_size(acc[i].size):
                kind[0] = BAD_SIZE
                return i
            if acc[i].write and (acc[i].value & ~size_mask(acc[i].size)):
                kind[0] = BAD_VALUE
                return i
            if acc[i].vcpu >= self.b.nr_vcpus:
                kind[0] = BAD_VCPU
                return i
            if not decode(&self.b, acc[i].addr, acc[i].vcpu, &frame, &off, &owner):
                kind[0] = BAD_ADDR
                return i
        return -1

    cdef Py_ssize_t _run_checked(self, const MmioAccess *acc, Py_ssize_t n, uint64_t *res) noexcept nogil:
        # One pass: the validation of _validate and the work of _run; returns
        # the index of the first bad record (the caller rolls back) or -1.
        cdef Py_ssize_t i
        cdef uint32_t frame, off
        cdef int owner
        cdef uint32_t nr_vcpus = self.b.nr_vcpus
        cdef const MmioAccess *a
        if not LOOKUP_DIRECT:
            for i in range(n):
                a = &acc[i]
                if (SIZE_BAD[a.size] | (a.vcpu >= nr_vcpus)
                        | ((a.write != 0) & ((a.value & VALUE_EXCESS[a.size]) != 0))):
                    return i
                if not decode(&self.b, a.addr, a.vcpu, &frame, &off, &owner):
                    return i
                res[i] = searched_access(&self.b, frame, off, owner, a.size, a.write != 0, a.value)
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
                bad |= not prepare(&self.b, a, &pre[k])
                if bad:
                    bad_at = k
                    break
            if bad_at >= 0:
                m = bad_at
            for k in range(m):
                res[base + k] = pre[k].fn(pre[k].ctx, pre[k].vcpu, pre[k].off,
                                          pre[k].intid, pre[k].size, pre[k].val)
            if bad_at >= 0:
                return base + bad_at
            base += m
        return -1

    cdef void _run(self, const MmioAccess *acc, Py_ssize_t n, uint64_t *res) noexcept nogil:
        cdef Py_ssize_t i, base = 0, k, m
        cdef uint32_t frame, off
        cdef int owner
        cdef uint32_t nr_vcpus = self.b.nr_vcpus
        cdef Prepared pre[BLOCK]
        cdef const MmioAccess *a
        if not LOOKUP_DIRECT:
            for i in range(n):
                # Validated already; the checks stay so that no record can
                # ever index outside the tables.
                if decode(&self.b, acc[i].addr, acc[i].vcpu, &frame, &off, &owner) \
                        and valid_size(acc[i].size) and acc[i].vcpu < nr_vcpus:
                    res[i] = searched_access(&self.b, frame, off, owner, acc[i].size,
                                             acc[i].write != 0, acc[i].value)
                else:
                    res[i] = 0
            return
        # Blocks prepared, then dispatched, as in _run_checked.
        while base < n:
            m = n - base if n - base < BLOCK else BLOCK
            for k in range(m):
                a = &acc[base + k]
                if not (prepare(&self.b, a, &pre[k]) & valid_size(a.size) & (a.vcpu < nr_vcpus)):
                    pre[k].fn = REFUSED[a.write != 0]     # never after validation
                    pre[k].vcpu = 0
            for k in range(m):
                res[base + k] = pre[k].fn(pre[k].ctx, pre[k].vcpu, pre[k].off,
                                          pre[k].intid, pre[k].size, pre[k].val)
            base += m

    cdef _raise_bad(self, rec, Py_ssize_t i, int kind):
        addr, size, value, vcpu = int(rec["addr"]), int(rec["size"]), int(rec["value"]), int(rec["vcpu"])
        if kind == BAD_ADDR:
            raise UnmappedAccess(addr, f"trace[{i}]: address {addr:#x} is outside every mapped frame")
        if kind == BAD_SIZE:
            err = size_error(size)
        elif kind == BAD_VALUE:
            err = value_error(value, size)
        else:
            err = vcpu_error(vcpu, self.b.nr_vcpus)
        raise ValueError(f"trace[{i}]: {err}")

    # ------------------------------------------------------ userspace access
    cdef const Region *_uregion(self, frame, vcpu, offset, int size, UAccess *a) except? NULL:
        # The region of a userspace access of `size` bytes (KVM's
        # vgic_get_mmio_region), or NULL; bad arguments raise.  Each argument
        # goes through __index__ once, into ``a``: nothing re-reads the objects.
        a.frame = self._frame(frame)
        if self._states[a.frame] is None:
            raise ValueError(f"frame {regmap.FRAME_NAMES[a.frame]} is not attached")
        a.vcpu = index_arg(vcpu, "vcpu", self.b.nr_vcpus)
        off = int_arg(offset, "offset", 0, 0xFFFFFFFFFFFFFFFF)
        if off >= FRAME_SIZE:
            return NULL
        a.offset = off
        return check_region(&self.b, a.frame, a.offset, size, &a.intid)

    def has_region(self, frame, offset):
        """True if a 32-bit access at ``offset`` of ``frame`` hits a region
        whose check passes (KVM's vgic_v3_has_attr_regs)."""
        cdef UAccess a
        cdef const Region *r = self._uregion(frame, 0, offset, 4, &a)
        return r != NULL and not a.offset & 3

    def uaccess_read(self, frame, vcpu, offset, size=4):
        """A userspace read of ``size`` bytes (4, or 8 for a 64-bit ITS
        register) with KVM's uaccess semantics (0 if no region)."""
        cdef UAccess a
        cdef int sz = uaccess_size(size)
        cdef const Region *r = self._uregion(frame, vcpu, offset, sz, &a)
        if r == NULL:
            return 0
        return UREGIONS[a.frame][r - &REGIONS[a.frame][0]].uread(
            self.b.ctx[a.frame], a.vcpu, a.offset, a.intid, sz, 0)

    def uaccess_write(self, frame, vcpu, offset, value, size=4):
        """A userspace write of ``size`` bytes (4 or 8); returns 0 or a
        negative errno."""
        cdef UAccess a
        cdef int sz = uaccess_size(size)
        cdef uint64_t v = int_arg(value, "value", 0, 0xFFFFFFFF if sz == 4 else 0xFFFFFFFFFFFFFFFF)
        cdef const Region *r = self._uregion(frame, vcpu, offset, sz, &a)
        if r == NULL:
            return 0
        cdef const URegion *u = &UREGIONS[a.frame][r - &REGIONS[a.frame][0]]
        if u.uwrite != NULL:
            return u.uwrite(self.b.ctx[a.frame], a.vcpu, a.offset, a.intid, sz, v)
        r.guest[1](self.b.ctx[a.frame], a.vcpu, a.offset, a.intid, sz, v)
        return 0

    cdef tuple _ubatch_args(self, frame, vcpus, offsets, int size):
        # The checked arrays of a batch of userspace accesses: every vCPU
        # index and offset validated before any access runs.
        cdef int f = self._frame(frame)
        if self._states[f] is None:
            raise ValueError(f"frame {regmap.FRAME_NAMES[f]} is not attached")
        vc = batch_index_array("vcpus", vcpus)
        off = batch_index_array("offsets", offsets)
        if vc.shape[0] != off.shape[0]:
            raise ValueError(f"vcpus has {vc.shape[0]} entries, offsets {off.shape[0]}")
        if vc.shape[0]:
            if vc.min() < 0 or vc.max() >= self.b.nr_vcpus:
                k = int(np.argmax((vc < 0) | (vc >= self.b.nr_vcpus)))
                raise ValueError(f"vcpus[{k}] = {int(vc[k])} is not a vCPU index (0..{self.b.nr_vcpus - 1})")
            if off.min() < 0:
                k = int(np.argmax(off < 0))
                raise ValueError(f"offsets[{k}] = {int(off[k])} is negative")
        return f, vc, off

    def uaccess_read_batch(self, frame, vcpus, offsets, size=4):
        """:meth:`uaccess_read` of many registers of one frame, in order:
        ``vcpus`` and ``offsets`` are 1-D integer arrays of one length (all
        checked before any access); returns the values as ``uint64``."""
        cdef int sz = uaccess_size(size)
        f, vc, off = self._ubatch_args(frame, vcpus, offsets, sz)
        cdef int fr = f
        cdef const int64_t[::1] v = vc
        cdef const int64_t[::1] o = off
        cdef Py_ssize_t k, n = v.shape[0]
        out = np.zeros(n, dtype=np.uint64)
        cdef uint64_t[::1] res = out
        cdef uint32_t intid = 0
        cdef const Region *r
        for k in range(n):
            if <uint64_t>o[k] >= FRAME_SIZE:
                continue
            r = check_region(&self.b, fr, <uint32_t>o[k], sz, &intid)
            if r != NULL:
                res[k] = UREGIONS[fr][r - &REGIONS[fr][0]].uread(
                    self.b.ctx[fr], <int>v[k], <uint32_t>o[k], intid, sz, 0)
        return out

    def uaccess_write_batch(self, frame, vcpus, offsets, values, size=4):
        """:meth:`uaccess_write` of many registers of one frame, in order, as
        that many single writes stopping at the first refused one: returns
        ``(index, errno)`` of that write (its errno positive), or ``(-1, 0)``
        when every write succeeded.  Arguments are checked before anything
        is written."""
        cdef int sz = uaccess_size(size)
        f, vc, off = self._ubatch_args(frame, vcpus, offsets, sz)
        vals = batch_value_array("values", values, 0xFFFFFFFF if sz == 4 else 0xFFFFFFFFFFFFFFFF)
        if vals.shape[0] != vc.shape[0]:
            raise ValueError(f"values has {vals.shape[0]} entries, offsets {vc.shape[0]}")
        cdef int fr = f
        cdef const int64_t[::1] v = vc
        cdef const int64_t[::1] o = off
        cdef const uint64_t[::1] x = vals
        cdef Py_ssize_t k, n = v.shape[0]
        cdef uint32_t intid = 0
        cdef int ret
        cdef const Region *r
        cdef const URegion *u
        for k in range(n):
            if <uint64_t>o[k] >= FRAME_SIZE:
                continue
            r = check_region(&self.b, fr, <uint32_t>o[k], sz, &intid)
            if r == NULL:
                continue
            u = &UREGIONS[fr][r - &REGIONS[fr][0]]
            if u.uwrite != NULL:
                ret = u.uwrite(self.b.ctx[fr], <int>v[k], <uint32_t>o[k], intid, sz, x[k])
                if ret:
                    return k, -ret
            else:
                r.guest[1](self.b.ctx[fr], <int>v[k], <uint32_t>o[k], intid, sz, x[k])
        return -1, 0
