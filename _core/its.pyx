# cython: language_level=3
"""KVM's emulated ITS (vgic-its.c), in C.

The GITS registers (served through the MMIO bus from the GITS frames), the
command queue processed when GITS_CWRITER moves, DeviceID/EventID
translation to LPIs (the INT command and KVM_SIGNAL_MSI), and the
save/restore table ABI (revision 0: 8-byte DTE, ITE and CTE entries,
little-endian, in guest memory).  The LPIs themselves live in the VM's
:class:`vgic._core.gic.Gic` (``lpi.pxd``).  ``vgic._pure.its`` is the
pure-Python twin.

Sources: docs/its-facts-A.md (registers §1, commands §2, MSIs §4)
and its-facts-B.md (save/restore §1-§2, device §3), from Linux vgic-its.c.

Guest memory is reached only through ``guestmem.pxd``'s checked accessors:
a command queue, table or ITT outside RAM makes a command do nothing (as
KVM skips it) or a save/restore return -EFAULT, never a host access
outside the buffer.  Every walk is bounded by a table size.
"""
import numpy as np

from libc.errno cimport EINVAL, EBUSY, EEXIST, EFAULT, ENOMEM
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t
from libc.stdlib cimport calloc, malloc, realloc, free
from libc.string cimport memcpy, memmove, memset

from vgic._core.args cimport int_arg
from vgic._core.cstate cimport CState, OpsRow, access_fn, uwrite_fn, add_ops
from vgic._core.cstate import check_bound
from vgic._core.gic cimport Gic
from vgic._core.gicstate cimport LpiUndo, lpi_exists, lpi_free, BM_PENDING_LATCH
from vgic._core.guestmem cimport gm_ok, gm_at, gm_read64, gm_write64, gm_write8
from vgic._core.lpi cimport (lpi_add, lpi_put, lpi_set_bit, lpi_index, update_lpi_config, lpi_invall,
    lpi_intid_limit, lpis_enabled_on, next_lpi)
from vgic._core.bitmap cimport extract_bytes, update_64bit_reg
from vgic._core.vgic_redist cimport sanitise_cache_share
from vgic._core.consts cimport (LPI_BASE, GITS_CTLR_ENABLED, GITS_CTLR_QUIESCENT, ITS_ABI_REVISIONS,
    GITS_IIDR_REV_SHIFT, GITS_TYPER_VALUE, PRODUCT_ID_KVM, IIDR_PRODUCT_ID_SHIFT, IMPLEMENTER_ARM,
    GITS_BASER_TYPE_SHIFT, GITS_BASER_TYPE_DEVICE, GITS_BASER_TYPE_COLLECTION,
    GITS_BASER_ENTRY_SIZE_SHIFT, GITS_BASER_PAGE_SIZE_64K, GITS_BASER_SIZE_MASK,
    GITS_BASER_INNER_CACHE_SHIFT, GITS_BASER_OUTER_CACHE_SHIFT, GITS_BASER_SHAREABILITY_SHIFT,
    GITS_CBASER_SIZE_MASK, GITS_CMD_OFFSET_MASK, ITS_CMD_SIZE, ITS_ESZ, COLLECTION_NOT_MAPPED,
    ITS_MAX_EVENTID_BITS, VITS_DTE_MAX_DEVID_OFFSET, VITS_ITE_MAX_EVENTID_OFFSET,
    GITS_CMD_MOVI, GITS_CMD_INT, GITS_CMD_CLEAR, GITS_CMD_SYNC, GITS_CMD_MAPD, GITS_CMD_MAPC,
    GITS_CMD_MAPTI, GITS_CMD_MAPI, GITS_CMD_INV, GITS_CMD_INVALL, GITS_CMD_MOVALL, GITS_CMD_DISCARD,
    E_ITS_MOVI_UNMAPPED_INTERRUPT, E_ITS_MOVI_UNMAPPED_COLLECTION, E_ITS_INT_UNMAPPED_INTERRUPT,
    E_ITS_CLEAR_UNMAPPED_INTERRUPT, E_ITS_MAPD_DEVICE_OOR, E_ITS_MAPD_ITTSIZE_OOR,
    E_ITS_MAPC_PROCNUM_OOR, E_ITS_MAPC_COLLECTION_OOR, E_ITS_MAPTI_UNMAPPED_DEVICE, E_ITS_MAPTI_ID_OOR,
    E_ITS_MAPTI_PHYSICALID_OOR, E_ITS_INV_UNMAPPED_INTERRUPT, E_ITS_INVALL_UNMAPPED_COLLECTION,
    E_ITS_MOVALL_PROCNUM_OOR, E_ITS_DISCARD_UNMAPPED_INTERRUPT,
    INITIAL_BASER_DEVICE, INITIAL_BASER_COLLECTION, GITS_BASER_VALID, GITS_BASER_INDIRECT,
    GITS_BASER_TYPE_MASK, GITS_BASER_ENTRY_SIZE_MASK, GITS_BASER_PAGE_SIZE_MASK, GITS_CBASER_ADDR_MASK,
    ITS_L1E_VALID, ITS_L2_ADDR_MASK, ITS_ITT_ADDR_MASK,
    KVM_ITS_DTE_NEXT_SHIFT, KVM_ITS_DTE_ITTADDR_SHIFT, KVM_ITS_DTE_SIZE_MASK,
    KVM_ITS_ITE_NEXT_SHIFT, KVM_ITS_ITE_PINTID_SHIFT, KVM_ITS_ITE_ICID_MASK, KVM_ITS_CTE_RDBASE_SHIFT,
    KVM_ITS_CTE_ICID_MASK, GITS_PIDR0, GITS_PIDR1, GITS_PIDR2, GITS_PIDR4, GITS_CIDR0)

from vgic import its_state
from vgic.guestmem import check_entry_offsets, check_stripped_pair

cdef extern from *:
    int its_ctzll "__builtin_ctzll"(unsigned long long x) nogil

cdef enum:
    NR_IDS = 65536              # DeviceIDs and ICIDs: 16 bits each
    ID_WORDS = NR_IDS // 64
    L2_ENTRIES = 65536 // ITS_ESZ   # entries of a 64 KiB level-2 device table
    EFAULT_ = EFAULT

cdef uint64_t U64_ALL = 0xFFFFFFFFFFFFFFFFULL


# ------------------------------------------------------------ bit helpers
cdef inline bint id_test(const uint64_t *bits, uint32_t i) noexcept nogil:
    return (bits[i >> 6] >> (i & 63)) & 1

cdef inline void id_set(uint64_t *bits, uint32_t i, bint on) noexcept nogil:
    if on:
        bits[i >> 6] |= (<uint64_t>1) << (i & 63)
    else:
        bits[i >> 6] &= ~((<uint64_t>1) << (i & 63))

cdef inline int32_t id_next(const uint64_t *bits, uint32_t i) noexcept nogil:
    # The first set id at or after i, or -1.
    cdef uint32_t w
    cdef uint64_t m
    if i >= NR_IDS:
        return -1
    w = i >> 6
    m = bits[w] & (U64_ALL << (i & 63))
    while True:
        if m:
            return <int32_t>((w << 6) | <uint32_t>its_ctzll(m))
        w += 1
        if w >= ID_WORDS:
            return -1
        m = bits[w]


# --------------------------------------------------- register sanitising
cdef inline uint64_t sanitise_cbaser(uint64_t reg) noexcept nogil:
    # Cacheability and shareability, and the address 64 KiB aligned (bits
    # [15:12] cleared); the RES0 bits are kept as written (its-facts-A §1.3).
    reg = sanitise_cache_share(reg, GITS_BASER_INNER_CACHE_SHIFT, GITS_BASER_OUTER_CACHE_SHIFT,
                               GITS_BASER_SHAREABILITY_SHIFT)
    return reg & ~(<uint64_t>0xF000)

cdef inline uint64_t sanitise_baser(uint64_t reg, int idx) noexcept nogil:
    # Type and Entry_Size read-only (forced), no indirect collection table,
    # cacheability/shareability sanitised, 64 KiB pages.
    cdef uint64_t typ = GITS_BASER_TYPE_DEVICE if idx == 0 else GITS_BASER_TYPE_COLLECTION
    reg &= ~(GITS_BASER_TYPE_MASK | GITS_BASER_ENTRY_SIZE_MASK)
    reg |= (typ << GITS_BASER_TYPE_SHIFT) | ((<uint64_t>(ITS_ESZ - 1)) << GITS_BASER_ENTRY_SIZE_SHIFT)
    if idx == 1:
        reg &= ~GITS_BASER_INDIRECT
    reg = sanitise_cache_share(reg, GITS_BASER_INNER_CACHE_SHIFT, GITS_BASER_OUTER_CACHE_SHIFT,
                               GITS_BASER_SHAREABILITY_SHIFT)
    return (reg & ~GITS_BASER_PAGE_SIZE_MASK) | GITS_BASER_PAGE_SIZE_64K

cdef inline uint64_t cmdq_bytes(const ItsRegs *r) noexcept nogil:
    return ((r.cbaser & GITS_CBASER_SIZE_MASK) + 1) << 12

cdef inline uint64_t baser_base(uint64_t baser) noexcept nogil:
    # Bits [47:16], and [15:12] as PA[51:48] (64 KiB pages).
    return (baser & 0x0000FFFFFFFF0000ULL) | (((baser >> 12) & 0xF) << 48)

cdef inline uint64_t baser_bytes(uint64_t baser) noexcept nogil:
    return ((baser & GITS_BASER_SIZE_MASK) + 1) << 16


# ------------------------------------------------------------- table ids
cdef bint check_id(ItsState *s, uint64_t baser, uint32_t id, uint64_t *eaddr) noexcept nogil:
    # vgic_its_check_id: the guest-memory address of entry `id` of the table
    # `baser` describes (flat, or two-level through an L1 entry read now).
    cdef uint64_t typ = (baser & GITS_BASER_TYPE_MASK) >> GITS_BASER_TYPE_SHIFT
    cdef uint64_t esz = ((baser & GITS_BASER_ENTRY_SIZE_MASK) >> GITS_BASER_ENTRY_SIZE_SHIFT) + 1
    cdef uint64_t size = baser_bytes(baser), base = baser_base(baser), index, l1, addr
    cdef uint64_t per_page = 65536 // esz
    if typ == GITS_BASER_TYPE_DEVICE:
        if id > 0xFFFF:
            return False
    elif typ == GITS_BASER_TYPE_COLLECTION:
        if id >= 0x10000:
            return False
    else:
        return False
    if not (baser & GITS_BASER_INDIRECT):
        if id >= size // esz:
            return False
        addr = base + <uint64_t>id * esz
    else:
        index = id // per_page
        if index >= size // 8:
            return False
        if gm_read64(&s.g.mem, base + index * 8, &l1) < 0 or not (l1 & ITS_L1E_VALID):
            return False
        addr = (l1 & ITS_L2_ADDR_MASK) + (id % per_page) * esz
    if not gm_ok(&s.g.mem, addr, esz):
        return False
    if eaddr != NULL:
        eaddr[0] = addr
    return True


# ------------------------------------------------------- devices and ITEs
cdef inline Dev *find_dev(const ItsState *s, uint64_t devid) noexcept nogil:
    return s.dev[devid] if devid < NR_IDS else NULL

cdef inline int32_t ite_pos(const Dev *d, uint32_t event, bint *found) noexcept nogil:
    # Binary search: the index of `event`, or where it would go.
    cdef int32_t lo = 0, hi = <int32_t>d.n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if d.ites[mid].event < event:
            lo = mid + 1
        else:
            hi = mid
    found[0] = lo < <int32_t>d.n and d.ites[lo].event == event
    return lo

cdef inline Ite *find_ite(const ItsState *s, uint64_t devid, uint64_t event) noexcept nogil:
    cdef Dev *d = find_dev(s, devid)
    cdef bint found
    cdef int32_t i
    if d == NULL or event > 0xFFFFFFFFULL:
        return NULL
    i = ite_pos(d, <uint32_t>event, &found)
    return &d.ites[i] if found else NULL

cdef int grow_ites(Dev *d) noexcept nogil:
    # Double the device's ITE array: 0, or -1 with nothing changed.
    cdef uint32_t cap = 4 if d.cap == 0 else d.cap * 2
    cdef Ite *grown = <Ite *>realloc(d.ites, cap * sizeof(Ite))
    if grown == NULL:
        return -1
    d.ites = grown
    d.cap = cap
    return 0

cdef Ite *insert_ite(ItsState *s, Dev *d, uint32_t event) noexcept nogil:
    # A new ITE slot in EventID order (NULL: the model's ITE limit, or no
    # memory).  Restores and most MAPTI streams append: no search then.
    cdef bint found
    cdef int32_t i
    if d.n == 0 or d.ites[d.n - 1].event < event:
        i = <int32_t>d.n
    else:
        i = ite_pos(d, event, &found)
    if s.nites >= s.max_ites or (d.n == d.cap and grow_ites(d) < 0):
        return NULL
    if <uint32_t>i < d.n:
        memmove(&d.ites[i + 1], &d.ites[i], (d.n - <uint32_t>i) * sizeof(Ite))
    d.n += 1
    s.nites += 1
    d.ites[i].event = event
    d.ites[i].lpi = 0
    d.ites[i].icid = 0
    d.ites[i].has_coll = 0
    d.ites[i].pad = 0
    return &d.ites[i]

cdef void remove_ite(ItsState *s, Dev *d, Ite *ite) noexcept nogil:
    # Free an ITE: its LPI loses the reference.
    cdef uint32_t i = <uint32_t>(ite - d.ites)
    lpi_put(s.g, ite.lpi)
    memmove(&d.ites[i], &d.ites[i + 1], (d.n - i - 1) * sizeof(Ite))
    d.n -= 1
    s.nites -= 1

cdef Dev *new_dev(ItsState *s, uint32_t devid, uint64_t itt, uint32_t nbits) noexcept nogil:
    cdef Dev *d = <Dev *>calloc(1, sizeof(Dev))
    if d == NULL:
        return NULL
    d.itt_addr = itt
    d.nbits = nbits
    s.dev[devid] = d
    id_set(s.dev_bits, devid, True)
    s.ndev += 1
    return d

cdef void free_dev(ItsState *s, uint32_t devid) noexcept nogil:
    # vgic_its_free_device: every ITE freed (LPI references dropped).
    cdef Dev *d = s.dev[devid]
    cdef uint32_t i
    if d == NULL:
        return
    for i in range(d.n):
        lpi_put(s.g, d.ites[i].lpi)
    s.nites -= d.n
    free(d.ites)
    free(d)
    s.dev[devid] = NULL
    id_set(s.dev_bits, devid, False)
    s.ndev -= 1

cdef void free_all_devs(ItsState *s) noexcept nogil:
    cdef int32_t d = id_next(s.dev_bits, 0)
    while d >= 0:
        free_dev(s, <uint32_t>d)
        d = id_next(s.dev_bits, <uint32_t>d + 1)


# ------------------------------------------------------------ collections
cdef inline bint coll_exists(const ItsState *s, uint32_t icid) noexcept nogil:
    return icid < NR_IDS and id_test(s.coll_bits, icid)

cdef inline bint coll_mapped(const ItsState *s, uint32_t icid) noexcept nogil:
    return coll_exists(s, icid) and s.coll_target[icid] != COLLECTION_NOT_MAPPED

cdef inline int32_t coll_vcpu(const ItsState *s, uint32_t icid) noexcept nogil:
    # The collection's vCPU (its target is a vCPU id: PTA = 0), or -1.
    cdef uint32_t t
    if not coll_exists(s, icid):
        return -1
    t = s.coll_target[icid]
    return <int32_t>t if t < s.g.nr_vcpus else -1

cdef void new_coll(ItsState *s, uint32_t icid, uint32_t target) noexcept nogil:
    id_set(s.coll_bits, icid, True)
    s.coll_target[icid] = target
    s.coll_order[s.ncoll] = <uint16_t>icid
    s.ncoll += 1

cdef void free_coll(ItsState *s, uint32_t icid) noexcept nogil:
    # vgic_its_free_collection: the ITEs using it lose their collection
    # (their LPIs keep their target vCPU).
    cdef int32_t dv = id_next(s.dev_bits, 0)
    cdef uint32_t i, k
    cdef Dev *d
    if not coll_exists(s, icid):
        return
    while dv >= 0:
        d = s.dev[dv]
        for i in range(d.n):
            if d.ites[i].has_coll and d.ites[i].icid == icid:
                d.ites[i].has_coll = 0
        dv = id_next(s.dev_bits, <uint32_t>dv + 1)
    for k in range(s.ncoll):
        if s.coll_order[k] == icid:
            memmove(&s.coll_order[k], &s.coll_order[k + 1], (s.ncoll - k - 1) * sizeof(uint16_t))
            break
    s.ncoll -= 1
    id_set(s.coll_bits, icid, False)
    s.coll_target[icid] = COLLECTION_NOT_MAPPED

cdef void free_all_colls(ItsState *s) noexcept nogil:
    # Newest first, one step per collection: bounded even if coll_order and
    # coll_bits ever disagreed (free_coll ignores an id it does not know).
    cdef uint32_t k = s.ncoll
    while k:
        k -= 1
        if k < s.ncoll:
            free_coll(s, s.coll_order[k])
    if s.ncoll:
        s.ncoll = 0
        memset(s.coll_bits, 0, ID_WORDS * sizeof(uint64_t))
        memset(s.coll_target, 0xFF, NR_IDS * sizeof(uint32_t))

cdef inline void set_lpi_target(ItsState *s, uint32_t lpi, int32_t vcpu) noexcept nogil:
    # update_affinity: only irq->target_vcpu changes (no requeue: the prune
    # migrates it from an ap_list).
    if lpi_exists(s.g, lpi):
        s.g.target[lpi_index(s.g, lpi)] = vcpu


# ------------------------------------------------------------- MSI / INT
cdef int trigger_msi(ItsState *s, uint64_t devid, uint64_t event) noexcept nogil:
    # vgic_its_trigger_msi: 0 delivered (the LPI latched pending), a
    # positive E_ITS_* code (unmapped), or -EBUSY (ITS or target LPIs off).
    cdef Ite *ite
    cdef int32_t v
    if not s.r.enabled:
        return -EBUSY
    ite = find_ite(s, devid, event)
    if ite == NULL or not ite.has_coll or not coll_mapped(s, ite.icid):
        return E_ITS_INT_UNMAPPED_INTERRUPT
    v = coll_vcpu(s, ite.icid)
    if v < 0:
        return E_ITS_INT_UNMAPPED_INTERRUPT
    if not lpis_enabled_on(s.g, v):
        return -EBUSY
    lpi_set_bit(s.g, ite.lpi, BM_PENDING_LATCH, True)
    return 0


# --------------------------------------------------------------- commands
cdef inline uint64_t cmd_devid(const uint64_t *c) noexcept nogil:
    return c[0] >> 32

cdef inline uint64_t cmd_event(const uint64_t *c) noexcept nogil:
    return c[1] & 0xFFFFFFFFULL

cdef inline uint32_t cmd_icid(const uint64_t *c) noexcept nogil:
    return <uint32_t>(c[2] & 0xFFFF)

cdef inline uint64_t cmd_target(const uint64_t *c, int dw) noexcept nogil:
    return (c[dw] >> 16) & 0xFFFFFFFFULL

cdef int cmd_mapd(ItsState *s, const uint64_t *c) noexcept nogil:
    cdef uint64_t devid = cmd_devid(c), gpa
    cdef uint32_t size = <uint32_t>(c[1] & 0x1F)
    cdef bint valid = (c[2] >> 63) & 1
    if devid > 0xFFFFFFFFULL or not check_id(s, s.r.baser[0], <uint32_t>devid, &gpa):
        return E_ITS_MAPD_DEVICE_OOR
    if valid and size + 1 > ITS_MAX_EVENTID_BITS:
        return E_ITS_MAPD_ITTSIZE_OOR
    free_dev(s, <uint32_t>devid)
    if not valid:
        # Since Linux 6.13 the unmapped device's DTE is zeroed in guest
        # memory, so a later RESTORE_TABLES cannot bring it back.
        gm_write64(&s.g.mem, gpa, 0)
        return 0
    if new_dev(s, <uint32_t>devid, c[2] & ITS_ITT_ADDR_MASK, size + 1) == NULL:
        return -ENOMEM
    return 0

cdef int cmd_mapc(ItsState *s, const uint64_t *c) noexcept nogil:
    cdef uint32_t icid = cmd_icid(c), i
    cdef uint64_t target = cmd_target(c, 2)
    cdef int32_t dv
    cdef Dev *d
    if not ((c[2] >> 63) & 1):
        free_coll(s, icid)
        return 0
    if target >= s.g.nr_vcpus:
        return E_ITS_MAPC_PROCNUM_OOR
    if not coll_exists(s, icid):
        if not check_id(s, s.r.baser[1], icid, NULL):
            return E_ITS_MAPC_COLLECTION_OOR
        new_coll(s, icid, <uint32_t>target)
        return 0
    # An existing collection (mapped, or made unmapped by MAPTI): retarget
    # it and every LPI its ITEs map.
    s.coll_target[icid] = <uint32_t>target
    dv = id_next(s.dev_bits, 0)
    while dv >= 0:
        d = s.dev[dv]
        for i in range(d.n):
            if d.ites[i].has_coll and d.ites[i].icid == icid:
                set_lpi_target(s, d.ites[i].lpi, <int32_t>target)
        dv = id_next(s.dev_bits, <uint32_t>dv + 1)
    return 0

cdef int map_ite(ItsState *s, uint64_t devid, uint64_t event, uint64_t lpi, uint32_t icid) noexcept nogil:
    # MAPTI / MAPI (vgic_its_cmd_handle_mapi).
    cdef Dev *d = find_dev(s, devid)
    cdef Ite *ite
    cdef bint made_coll = False
    cdef int32_t target
    cdef int r
    if d == NULL:
        return E_ITS_MAPTI_UNMAPPED_DEVICE
    if event >= ((<uint64_t>1) << d.nbits) or not gm_ok(&s.g.mem, d.itt_addr + event * ITS_ESZ, ITS_ESZ):
        return E_ITS_MAPTI_ID_OOR
    # (KVM keeps the pINTID in an int: 2**31 and up are negative, out of range)
    if lpi < LPI_BASE or lpi >= lpi_intid_limit(s.g) or lpi >= 0x80000000ULL:
        return E_ITS_MAPTI_PHYSICALID_OOR
    if find_ite(s, devid, event) != NULL:
        return 0                        # already mapped: nothing changes
    if not coll_exists(s, icid):
        if not check_id(s, s.r.baser[1], icid, NULL):
            return E_ITS_MAPC_COLLECTION_OOR
        new_coll(s, icid, COLLECTION_NOT_MAPPED)
        made_coll = True
    ite = insert_ite(s, d, <uint32_t>event)
    if ite == NULL:
        if made_coll:
            free_coll(s, icid)
        return -ENOMEM
    ite.lpi = <uint32_t>lpi
    ite.icid = <uint16_t>icid
    ite.has_coll = 1
    target = coll_vcpu(s, icid)
    r = lpi_add(s.g, <uint32_t>lpi, target)
    if r < 0:
        # The LPI could not be made (a table byte outside RAM): undo.
        memmove(ite, ite + 1, (d.n - <uint32_t>(ite - d.ites) - 1) * sizeof(Ite))
        d.n -= 1
        s.nites -= 1
        if made_coll:
            free_coll(s, icid)
        return r
    return 0

cdef int cmd_movi(ItsState *s, const uint64_t *c) noexcept nogil:
    cdef Ite *ite = find_ite(s, cmd_devid(c), cmd_event(c))
    cdef uint32_t icid = cmd_icid(c)
    if ite == NULL:
        return E_ITS_MOVI_UNMAPPED_INTERRUPT
    if not ite.has_coll or not coll_mapped(s, ite.icid):
        return E_ITS_MOVI_UNMAPPED_COLLECTION
    if not coll_mapped(s, icid):
        return E_ITS_MOVI_UNMAPPED_COLLECTION
    ite.icid = <uint16_t>icid
    ite.has_coll = 1
    set_lpi_target(s, ite.lpi, coll_vcpu(s, icid))
    return 0

cdef int cmd_discard(ItsState *s, const uint64_t *c) noexcept nogil:
    cdef uint64_t devid = cmd_devid(c), event = cmd_event(c)
    cdef Ite *ite = find_ite(s, devid, event)
    cdef Dev *d
    if ite == NULL or not ite.has_coll or not coll_mapped(s, ite.icid):
        return E_ITS_DISCARD_UNMAPPED_INTERRUPT
    d = find_dev(s, devid)
    remove_ite(s, d, ite)
    # Since Linux 6.13 the ITE is zeroed in guest memory as well.
    gm_write64(&s.g.mem, d.itt_addr + event * ITS_ESZ, 0)
    return 0

cdef int cmd_clear(ItsState *s, const uint64_t *c) noexcept nogil:
    cdef Ite *ite = find_ite(s, cmd_devid(c), cmd_event(c))
    if ite == NULL:
        return E_ITS_CLEAR_UNMAPPED_INTERRUPT
    lpi_set_bit(s.g, ite.lpi, BM_PENDING_LATCH, False)
    return 0

cdef int cmd_inv(ItsState *s, const uint64_t *c) noexcept nogil:
    cdef Ite *ite = find_ite(s, cmd_devid(c), cmd_event(c))
    if ite == NULL:
        return E_ITS_INV_UNMAPPED_INTERRUPT
    return update_lpi_config(s.g, ite.lpi, -1)

cdef int cmd_invall(ItsState *s, const uint64_t *c) noexcept nogil:
    cdef int32_t v = coll_vcpu(s, cmd_icid(c))
    if not coll_mapped(s, cmd_icid(c)) or v < 0:
        return E_ITS_INVALL_UNMAPPED_COLLECTION
    lpi_invall(s.g, v)
    return 0

cdef int cmd_movall(ItsState *s, const uint64_t *c) noexcept nogil:
    # Since Linux 6.10 every LPI of the VM moves to the second vCPU, not
    # only those of the first (its-facts-A §2.4).
    cdef uint64_t t1 = cmd_target(c, 2), t2 = cmd_target(c, 3)
    cdef uint32_t k
    if t1 >= s.g.nr_vcpus or t2 >= s.g.nr_vcpus:
        return E_ITS_MOVALL_PROCNUM_OOR
    if t1 == t2:
        return 0
    k = next_lpi(s.g, 0)
    while k < s.g.nr_lpis:
        s.g.target[lpi_index(s.g, LPI_BASE + k)] = <int32_t>t2
        k = next_lpi(s.g, k + 1)
    return 0

cdef int handle_command(ItsState *s, const uint64_t *c) noexcept nogil:
    # vgic_its_handle_command; the result is KVM's internal code (0, an
    # E_ITS_* error or a negative errno), which no register reports.
    cdef uint32_t op = <uint32_t>(c[0] & 0xFF)
    if op == GITS_CMD_MAPD:
        return cmd_mapd(s, c)
    if op == GITS_CMD_MAPC:
        return cmd_mapc(s, c)
    if op == GITS_CMD_MAPTI:
        return map_ite(s, cmd_devid(c), cmd_event(c), c[1] >> 32, cmd_icid(c))
    if op == GITS_CMD_MAPI:
        return map_ite(s, cmd_devid(c), cmd_event(c), cmd_event(c), cmd_icid(c))
    if op == GITS_CMD_MOVI:
        return cmd_movi(s, c)
    if op == GITS_CMD_DISCARD:
        return cmd_discard(s, c)
    if op == GITS_CMD_CLEAR:
        return cmd_clear(s, c)
    if op == GITS_CMD_INT:
        return trigger_msi(s, cmd_devid(c), cmd_event(c))
    if op == GITS_CMD_INV:
        return cmd_inv(s, c)
    if op == GITS_CMD_INVALL:
        return cmd_invall(s, c)
    if op == GITS_CMD_MOVALL:
        return cmd_movall(s, c)
    if op == GITS_CMD_SYNC:
        return 0
    return -19                          # unknown (GICv4 V* included): -ENODEV, ignored

cdef void process_commands(ItsState *s) noexcept nogil:
    # vgic_its_process_commands: with the ITS enabled, run every command
    # from CREADR to CWRITER; a command that cannot be read is skipped.
    # Both offsets are multiples of 32 below the queue size, so the loop
    # ends within one pass of the queue.
    cdef ItsRegs *r = s.r
    cdef uint64_t base = r.cbaser & GITS_CBASER_ADDR_MASK, size = cmdq_bytes(r)
    cdef uint64_t c[4]
    cdef int i
    cdef bint ok
    if not r.enabled:
        return
    while r.creadr != r.cwriter:
        ok = True
        for i in range(4):
            if gm_read64(&s.g.mem, base + r.creadr + 8 * i, &c[i]) < 0:
                ok = False
                break
        if ok:
            handle_command(s, c)
        r.creadr += ITS_CMD_SIZE
        if r.creadr >= size:
            r.creadr = 0


# --------------------------------------------------------- MMIO handlers
cdef inline ItsState *its_of(void *ctx) noexcept nogil:
    return <ItsState *>ctx

cdef uint64_t read_ctlr(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    cdef ItsRegs *r = its_of(ctx).r
    return (GITS_CTLR_QUIESCENT if r.creadr == r.cwriter else 0) | (GITS_CTLR_ENABLED if r.enabled else 0)

cdef uint64_t write_ctlr(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    # Enabling needs valid CBASER, BASER0 and BASER1, or the whole write is
    # ignored; an accepted write runs the queued commands.
    cdef ItsState *s = its_of(ctx)
    cdef ItsRegs *r = s.r
    if not r.enabled and (val & GITS_CTLR_ENABLED) and not (
            (r.baser[0] & GITS_BASER_VALID) and (r.baser[1] & GITS_BASER_VALID)
            and (r.cbaser & GITS_BASER_VALID)):
        return 0
    r.enabled = 1 if val & GITS_CTLR_ENABLED else 0
    process_commands(s)
    return 0

cdef int uwrite_ctlr(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    write_ctlr(ctx, vcpu, off, intid, size, val)
    return 0

cdef uint64_t read_iidr(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    return ((PRODUCT_ID_KVM << IIDR_PRODUCT_ID_SHIFT) | (its_of(ctx).r.abi_rev << GITS_IIDR_REV_SHIFT)
            | IMPLEMENTER_ARM)

cdef int uwrite_iidr(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    # Userspace selects the ABI revision: only revision 0 exists.
    cdef uint32_t rev = <uint32_t>((val >> GITS_IIDR_REV_SHIFT) & 0xF)
    if rev >= ITS_ABI_REVISIONS:
        return -EINVAL
    its_of(ctx).r.abi_rev = rev
    return 0

cdef uint64_t read_typer(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    return extract_bytes(GITS_TYPER_VALUE, off & 4, size)

cdef uint64_t read_cbaser(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    return extract_bytes(its_of(ctx).r.cbaser, off & 4, size)

cdef uint64_t write_cbaser(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    # Read-only while enabled; a write resets CREADR and CWRITER.
    cdef ItsRegs *r = its_of(ctx).r
    if r.enabled:
        return 0
    r.cbaser = sanitise_cbaser(update_64bit_reg(r.cbaser, off, size, val))
    r.creadr = 0
    r.cwriter = 0
    return 0

cdef uint64_t read_cwriter(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    return extract_bytes(its_of(ctx).r.cwriter, off & 4, size)

cdef uint64_t write_cwriter(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    # An offset beyond the queue is ignored; otherwise the commands run.
    cdef ItsState *s = its_of(ctx)
    cdef uint64_t reg = update_64bit_reg(s.r.cwriter, off, size, val) & GITS_CMD_OFFSET_MASK
    if reg >= cmdq_bytes(s.r):
        return 0
    s.r.cwriter = reg
    process_commands(s)
    return 0

cdef uint64_t read_creadr(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    return extract_bytes(its_of(ctx).r.creadr, off & 4, size)

cdef int uwrite_creadr(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    cdef ItsRegs *r = its_of(ctx).r
    cdef uint64_t reg = val & GITS_CMD_OFFSET_MASK
    if r.enabled:
        return -EBUSY
    if reg >= cmdq_bytes(r):
        return -EINVAL
    r.creadr = reg
    return 0

cdef uint64_t read_baser(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    cdef uint32_t idx = (off >> 3) & 7
    if idx >= 2:
        return 0
    return extract_bytes(its_of(ctx).r.baser[idx], off & 4, size)

cdef uint64_t write_baser(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    # Ignored while enabled, and for BASER2..7.  KVM's newest code frees the
    # device (BASER0) or collection (BASER1) list whenever the stored value
    # changes (its-facts-B §3.6).
    cdef ItsState *s = its_of(ctx)
    cdef uint32_t idx = (off >> 3) & 7
    cdef uint64_t old, reg
    if s.r.enabled or idx >= 2:
        return 0
    old = s.r.baser[idx]
    reg = sanitise_baser(update_64bit_reg(old, off, size, val), idx)
    s.r.baser[idx] = reg
    if reg != old:
        if idx == 0:
            free_all_devs(s)
        else:
            free_all_colls(s)
    return 0

cdef uint64_t read_idregs(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    # PIDR4, PIDR0..2 and CIDR0..3 of an Arm ITS, ArchRev 3.
    if off == GITS_PIDR4:
        return 0x40
    if off == GITS_PIDR0:
        return 0x92
    if off == GITS_PIDR1:
        return 0xB4
    if off == GITS_PIDR2:
        return 0x3B
    if off == GITS_CIDR0:
        return 0x0D
    if off == GITS_CIDR0 + 4:
        return 0xF0
    if off == GITS_CIDR0 + 8:
        return 0x05
    if off == GITS_CIDR0 + 12:
        return 0xB1
    return 0

cdef uint64_t raz(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    return 0

cdef uint64_t wi(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    return 0

cdef int uwi(void *ctx, int vcpu, uint32_t off, uint32_t intid, int size, uint64_t val) noexcept nogil:
    return 0


cdef enum:
    MAX_OPS = 16

cdef OpsRow OPS[MAX_OPS]
cdef int NOPS = 0

cdef void def_ops(const char *name, access_fn r, access_fn w, access_fn ur, uwrite_fn uw) except *:
    global NOPS
    NOPS = add_ops(OPS, NOPS, MAX_OPS, name, r, w, ur, uw)

# name           guest read    guest write    uaccess read   uaccess write
def_ops("its_ctlr", read_ctlr, write_ctlr, NULL, uwrite_ctlr)
def_ops("its_iidr", read_iidr, wi, NULL, uwrite_iidr)
def_ops("its_typer", read_typer, wi, NULL, uwi)
def_ops("its_cbaser", read_cbaser, write_cbaser, NULL, NULL)
def_ops("its_cwriter", read_cwriter, write_cwriter, NULL, NULL)
def_ops("its_creadr", read_creadr, wi, NULL, uwrite_creadr)
def_ops("its_baser", read_baser, write_baser, NULL, NULL)
def_ops("its_idregs", read_idregs, wi, NULL, uwi)

check_bound("its", [OPS[i].name.decode() for i in range(NOPS)])


# ---------------------------------------------------------- save tables
cdef int save_itt(ItsState *s, const Dev *d) noexcept nogil:
    # vgic_its_save_itt: each ITE at ITT + EventID * 8, in EventID order; an
    # ITE without a collection is written 0, and `next` skips it.  Written
    # straight into RAM when the whole ITT lies in it.
    cdef uint32_t i, nv = 0
    cdef uint64_t v, nxt, at
    cdef uint8_t *p = NULL
    if gm_ok(&s.g.mem, d.itt_addr, ((<uint64_t>1) << d.nbits) * ITS_ESZ):
        p = gm_at(&s.g.mem, d.itt_addr)
    for i in range(d.n):
        if not d.ites[i].has_coll:
            v = 0
        else:
            if nv <= i:
                nv = i + 1
            while nv < d.n and not d.ites[nv].has_coll:
                nv += 1
            nxt = 0
            if nv < d.n:
                nxt = d.ites[nv].event - d.ites[i].event
                if nxt > VITS_ITE_MAX_EVENTID_OFFSET:
                    nxt = VITS_ITE_MAX_EVENTID_OFFSET
            v = ((nxt << KVM_ITS_ITE_NEXT_SHIFT) | (<uint64_t>d.ites[i].lpi << KVM_ITS_ITE_PINTID_SHIFT)
                 | d.ites[i].icid)
        at = <uint64_t>d.ites[i].event * ITS_ESZ
        if p != NULL:
            memcpy(p + at, &v, 8)
        elif gm_write64(&s.g.mem, d.itt_addr + at, v) < 0:
            return -EFAULT
    return 0


cdef int save_device_tables(ItsState *s) noexcept nogil:
    # Devices in DeviceID order, in KVM's order of guest-memory accesses:
    # the device's slot (vgic_its_check_id), its ITT, the following
    # devices' slots (for `next`), then its DTE.  A device whose slot cannot
    # be reached (an invalid L1 entry) is skipped, and `next` skips it too.
    cdef uint64_t baser = s.r.baser[0], ea = 0, nxt, v
    cdef int32_t cur, nd
    cdef int r
    if not (baser & GITS_BASER_VALID):
        return 0
    cur = id_next(s.dev_bits, 0)
    while cur >= 0:
        if check_id(s, baser, <uint32_t>cur, &ea):
            r = save_itt(s, s.dev[cur])
            if r < 0:
                return r
            nd = id_next(s.dev_bits, <uint32_t>cur + 1)
            while nd >= 0 and not check_id(s, baser, <uint32_t>nd, NULL):
                nd = id_next(s.dev_bits, <uint32_t>nd + 1)
            nxt = 0
            if nd >= 0:
                nxt = <uint64_t>(nd - cur)
                if nxt > VITS_DTE_MAX_DEVID_OFFSET:
                    nxt = VITS_DTE_MAX_DEVID_OFFSET
            v = ((<uint64_t>1 << 63) | (nxt << KVM_ITS_DTE_NEXT_SHIFT)
                 | ((s.dev[cur].itt_addr >> 8) << KVM_ITS_DTE_ITTADDR_SHIFT) | (s.dev[cur].nbits - 1))
            if gm_write64(&s.g.mem, ea, v) < 0:
                return -EFAULT
        cur = id_next(s.dev_bits, <uint32_t>cur + 1)
    return 0


cdef int save_collection_table(ItsState *s) noexcept nogil:
    # Every collection in creation order from the table's start, then a
    # zero entry unless the table is full.
    cdef uint64_t baser = s.r.baser[1], base, size, v, target
    cdef uint32_t k
    if not (baser & GITS_BASER_VALID):
        return 0
    base = baser_base(baser)
    size = baser_bytes(baser)
    for k in range(s.ncoll):
        if <uint64_t>(k + 1) * ITS_ESZ > size:
            return -EINVAL              # (cannot happen: a collection fits its table)
        target = s.coll_target[s.coll_order[k]]
        v = (<uint64_t>1 << 63) | (target << KVM_ITS_CTE_RDBASE_SHIFT) | s.coll_order[k]
        if gm_write64(&s.g.mem, base + <uint64_t>k * ITS_ESZ, v) < 0:
            return -EFAULT
    if <uint64_t>s.ncoll * ITS_ESZ < size:
        if gm_write64(&s.g.mem, base + <uint64_t>s.ncoll * ITS_ESZ, 0) < 0:
            return -EFAULT
    return 0


# ------------------------------------------------------- restore tables
ctypedef int (*entry_fn)(ItsState *s, void *arg, uint32_t id, uint64_t entry) noexcept nogil

cdef int scan_table(ItsState *s, uint64_t base, uint64_t size, uint32_t start, entry_fn fn,
                    void *arg) noexcept nogil:
    # scan_its_table: entries from `base`, ids from `start`; fn returns the id
    # step (1 for an invalid entry, `next` for a valid one), 0 for the last
    # entry, or an error.  1: the table ended without a last entry.  Steps
    # are >= 1, so the walk only moves forward and reads at most size / 8
    # entries.  A table wholly in RAM is read in place.
    cdef uint64_t entry, step
    cdef uint64_t id = start, off = 0
    cdef const uint8_t *p = gm_at(&s.g.mem, base) if gm_ok(&s.g.mem, base, size) else NULL
    cdef int r
    while True:
        if p != NULL:
            memcpy(&entry, p + off, 8)
        elif gm_read64(&s.g.mem, base + off, &entry) < 0:
            return -EFAULT
        r = fn(s, arg, <uint32_t>id, entry)
        if r <= 0:
            return r
        step = <uint64_t>r * ITS_ESZ
        if step >= size:
            return 1
        id += <uint64_t>r
        off += step
        size -= step


cdef inline int restore_ite(ItsState *s, Dev *d, uint32_t event, uint64_t v) noexcept nogil:
    # vgic_its_restore_ite: 1 for an invalid entry (pINTID 0), the entry's
    # `next` once it is restored, or an error.
    cdef uint64_t lpi = (v >> KVM_ITS_ITE_PINTID_SHIFT) & 0xFFFFFFFFULL
    cdef uint32_t icid = <uint32_t>(v & KVM_ITS_ITE_ICID_MASK), nxt = <uint32_t>(v >> KVM_ITS_ITE_NEXT_SHIFT)
    cdef uint32_t t
    cdef Ite *ite
    cdef int r
    if lpi == 0:
        return 1
    if lpi < LPI_BASE:
        return -EINVAL
    if <uint64_t>event + nxt >= ((<uint64_t>1) << d.nbits):
        return -EINVAL
    if not id_test(s.coll_bits, icid):
        return -EINVAL
    if lpi >= LPI_BASE + s.g.nr_lpis:
        # KVM would make it (it checks no ID bits here) though no guest could
        # map it; this model holds LPIs below 2**16 only.
        return -EINVAL
    # The walk only moves forward, so each ITE lands after the last one.
    if s.nites >= s.max_ites or (d.n == d.cap and grow_ites(d) < 0):
        return -ENOMEM
    ite = &d.ites[d.n]
    d.n += 1
    s.nites += 1
    ite.event = event
    ite.lpi = <uint32_t>lpi
    ite.icid = <uint16_t>icid
    ite.has_coll = 1
    ite.pad = 0
    t = s.coll_target[icid]
    r = lpi_add(s.g, <uint32_t>lpi, <int32_t>t if t < s.g.nr_vcpus else -1)
    if r < 0:
        d.n -= 1                        # (the ITE was the last: restores append)
        s.nites -= 1
        return r
    return <int>nxt

cdef int restore_itt(ItsState *s, Dev *d) noexcept nogil:
    # The device's ITT, walked as scan_table walks a table (EventIDs from 0,
    # `next` steps, bounded by the ITT's 2**nbits entries) with restore_ite
    # called directly, so the compiler inlines it: this loop is
    # RESTORE_TABLES' hot path.  An ITT wholly in RAM is read in place; any
    # other entry by entry, so one running past RAM's end fails only if the
    # walk reaches an entry outside it (-EFAULT), as KVM's walk does.
    cdef uint64_t n = (<uint64_t>1) << d.nbits, ev = 0, v
    cdef const uint8_t *p = NULL
    cdef int r
    if gm_ok(&s.g.mem, d.itt_addr, n * ITS_ESZ):
        p = gm_at(&s.g.mem, d.itt_addr)
    while True:
        if p != NULL:
            memcpy(&v, p + ev * ITS_ESZ, 8)
        elif gm_read64(&s.g.mem, d.itt_addr + ev * ITS_ESZ, &v) < 0:
            return -EFAULT
        r = restore_ite(s, d, <uint32_t>ev, v)
        if r <= 0:
            return r
        ev += <uint64_t>r
        if ev >= n:
            return 1

cdef int restore_dte(ItsState *s, void *arg, uint32_t id, uint64_t v) noexcept nogil:
    cdef uint32_t nxt = <uint32_t>((v >> KVM_ITS_DTE_NEXT_SHIFT) & 0x3FFF)
    cdef uint64_t itt = ((v >> KVM_ITS_DTE_ITTADDR_SHIFT) & ((<uint64_t>1 << 44) - 1)) << 8
    cdef uint32_t nbits = <uint32_t>(v & KVM_ITS_DTE_SIZE_MASK) + 1
    cdef Dev *d
    cdef int r
    if not (v >> 63):
        return 1
    if nbits > ITS_MAX_EVENTID_BITS:
        return -EINVAL                  # (Linux 2026: as MAPD refuses it)
    if not check_id(s, s.r.baser[0], id, NULL):
        return -EINVAL
    if s.dev[id] != NULL:
        # KVM would add a second device with this id; the model refuses.
        return -EEXIST
    d = new_dev(s, id, itt, nbits)
    if d == NULL:
        return -ENOMEM
    r = restore_itt(s, d)
    if r < 0:
        free_dev(s, id)
        return r
    return <int>nxt

cdef int restore_l1(ItsState *s, void *arg, uint32_t index, uint64_t v) noexcept nogil:
    # handle_l1_dte: a valid L1 entry's 64 KiB level-2 table, DeviceIDs from
    # index * 8192.  A last DTE there ends the whole device table.
    if not (v & ITS_L1E_VALID):
        return 1
    return scan_table(s, v & ITS_L2_ADDR_MASK, 65536, index * L2_ENTRIES, restore_dte, NULL)

cdef int restore_device_tables(ItsState *s) noexcept nogil:
    cdef uint64_t baser = s.r.baser[0]
    cdef int r
    if not (baser & GITS_BASER_VALID):
        return 0
    if baser & GITS_BASER_INDIRECT:
        r = scan_table(s, baser_base(baser), baser_bytes(baser), 0, restore_l1, NULL)
    else:
        r = scan_table(s, baser_base(baser), baser_bytes(baser), 0, restore_dte, NULL)
    return r if r < 0 else 0

cdef int restore_collection_table(ItsState *s) noexcept nogil:
    cdef uint64_t baser = s.r.baser[1], base, size, v, target, off = 0
    cdef uint32_t icid
    cdef int r = 0
    if not (baser & GITS_BASER_VALID):
        return 0
    base = baser_base(baser)
    size = baser_bytes(baser)
    while off < size:
        if gm_read64(&s.g.mem, base + off, &v) < 0:
            r = -EFAULT
            break
        if not (v >> 63):
            break
        target = (v >> KVM_ITS_CTE_RDBASE_SHIFT) & 0xFFFFFFFFULL
        icid = <uint32_t>(v & KVM_ITS_CTE_ICID_MASK)
        if target != COLLECTION_NOT_MAPPED and target >= s.g.nr_vcpus:
            r = -EINVAL
            break
        if coll_exists(s, icid):
            r = -EEXIST
            break
        if not check_id(s, baser, icid, NULL):
            r = -EINVAL
            break
        new_coll(s, icid, <uint32_t>target)
        off += ITS_ESZ
    return r


cdef int restore_tables(ItsState *s) noexcept nogil:
    # RESTORE_TABLES, all or nothing.  KVM restores the collection table,
    # then the device tables, and on an error frees every device and
    # collection of the ITS (those it had before the call too) and leaves
    # the pending bits it consumed cleared.  vgic keeps its rule that a
    # rejected restore changes nothing: on an error it frees what this call
    # made - devices, their ITEs, the LPIs they created, collections - and
    # writes the consumed pending-table bytes back, so the ITS, the LPIs
    # and guest memory are as before.  Into an empty ITS, KVM's documented
    # use, both leave the ITS empty.
    cdef LpiUndo undo
    cdef uint64_t *had = <uint64_t *>malloc(ID_WORDS * sizeof(uint64_t))
    cdef uint32_t ncoll = s.ncoll
    cdef uint64_t seq = s.g.s.seq_counter
    cdef int32_t d
    cdef size_t k
    cdef int r
    if had == NULL:
        return -ENOMEM
    memcpy(had, s.dev_bits, ID_WORDS * sizeof(uint64_t))
    memset(&undo, 0, sizeof(LpiUndo))
    s.g.undo = &undo
    r = restore_collection_table(s)
    if r == 0:
        r = restore_device_tables(s)
    if r < 0:
        # (undo still set: lpi_put drops the references this call added
        # without releasing an LPI that existed before it)
        d = id_next(s.dev_bits, 0)
        while d >= 0:
            if not id_test(had, <uint32_t>d):
                free_dev(s, <uint32_t>d)
            d = id_next(s.dev_bits, <uint32_t>d + 1)
    s.g.undo = NULL
    if r < 0:
        k = undo.nmade
        while k > 0:
            k -= 1
            if lpi_exists(s.g, undo.made[k]):
                lpi_free(s.g, undo.made[k])
        k = undo.nat
        while k > 0:
            k -= 1
            gm_write8(&s.g.mem, undo.at[k], undo.old[k])
        k = s.ncoll
        while k > ncoll:
            k -= 1
            if k < s.ncoll:
                free_coll(s, s.coll_order[k])
        s.g.s.seq_counter = seq
    free(undo.made)
    free(undo.at)
    free(undo.old)
    free(had)
    return r

cdef void its_reset(ItsState *s) noexcept nogil:
    # KVM_DEV_ARM_ITS_CTRL_RESET: disabled, queue registers zero, tables
    # invalid (their other BASER fields kept), every device and collection
    # freed; the ABI revision stays.
    s.r.baser[0] &= ~GITS_BASER_VALID
    s.r.baser[1] &= ~GITS_BASER_VALID
    s.r.cbaser = 0
    s.r.creadr = 0
    s.r.cwriter = 0
    s.r.enabled = 0
    free_all_devs(s)
    free_all_colls(s)


cdef class Its(CState):
    """The emulated ITS of a VM whose :class:`vgic._core.gic.Gic` has LPIs
    (``Gic(..., lpis=True)``): its registers, command queue, translation
    tables and save/restore ABI.  See ``vgic/_core/its.pyi``."""

    def __cinit__(self):
        self.s.dev = <Dev **>calloc(NR_IDS, sizeof(Dev *))
        self.s.dev_bits = <uint64_t *>calloc(ID_WORDS, sizeof(uint64_t))
        self.s.coll_target = <uint32_t *>malloc(NR_IDS * sizeof(uint32_t))
        self.s.coll_bits = <uint64_t *>calloc(ID_WORDS, sizeof(uint64_t))
        self.s.coll_order = <uint16_t *>calloc(NR_IDS, sizeof(uint16_t))
        if (self.s.dev == NULL or self.s.dev_bits == NULL or self.s.coll_target == NULL
                or self.s.coll_bits == NULL or self.s.coll_order == NULL):
            raise MemoryError()
        memset(self.s.coll_target, 0xFF, NR_IDS * sizeof(uint32_t))

    def __dealloc__(self):
        cdef uint32_t i
        if self.s.dev != NULL:
            for i in range(NR_IDS):
                if self.s.dev[i] != NULL:
                    free(self.s.dev[i].ites)
                    free(self.s.dev[i])
        free(self.s.dev)
        free(self.s.dev_bits)
        free(self.s.coll_target)
        free(self.s.coll_bits)
        free(self.s.coll_order)

    def __init__(self, Gic gic not None, max_ites=1 << 20):
        cdef uint8_t[::1] view
        if self._gic is not None:
            raise TypeError("an Its is initialised once")
        if gic.st.nr_vcpus == 0:
            raise TypeError("gic is not an initialised vgic._core.gic.Gic")
        if gic.st.nr_lpis == 0:
            raise ValueError("the Gic has no LPIs: build it with lpis=True for an ITS")
        self.s.max_ites = int_arg(max_ites, "max_ites", 1, 1 << 32)
        self._gic = gic
        self._regs = np.zeros(sizeof(ItsRegs), dtype=np.uint8)
        self._set_buffer(self._regs)
        view = self._regs
        self.s.r = <ItsRegs *>&view[0]
        self.s.g = &gic.st
        self.s.r.baser[0] = INITIAL_BASER_DEVICE
        self.s.r.baser[1] = INITIAL_BASER_COLLECTION
        self.ctx = &self.s
        self.ops = OPS
        self.nops = NOPS
        self.nr_intids = 0
        # Commands allocate tables and write guest memory: a replay through
        # the ITS is validated first, never rolled back by a buffer copy.
        self.opaque = True

    cdef int _ready(self) except -1:
        if self.s.r == NULL:
            raise TypeError("this Its was not initialised (call Its(gic))")
        return 0

    # ---- KVM's side ------------------------------------------------------------
    def signal_msi(self, devid, event):
        """KVM_SIGNAL_MSI for (``devid``, ``event``) at this ITS's doorbell
        with KVM_MSI_VALID_DEVID: 1 delivered (the LPI latched pending), 0
        blocked (no mapping), or -EBUSY (ITS disabled, or the target
        redistributor's LPIs disabled)."""
        self._ready()
        cdef uint64_t d = int_arg(devid, "devid", 0, 0xFFFFFFFF)
        cdef uint64_t e = int_arg(event, "event", 0, 0xFFFFFFFF)
        return msi_result(trigger_msi(&self.s, d, e))

    def signal_msi_batch(self, devids, events):
        """signal_msi for each (devid, event) of two equal-length 1-D integer
        arrays, in order (all checked first); the results as an int32 array."""
        self._ready()
        d = its_state.u32_array(devids, "devids")
        e = its_state.u32_array(events, "events")
        if d.shape != e.shape:
            raise ValueError("devids and events must be 1-D arrays of one length")
        out = np.zeros(d.shape[0], dtype=np.int32)
        cdef const uint32_t[::1] dv = d
        cdef const uint32_t[::1] ev = e
        cdef int32_t[::1] res = out
        cdef Py_ssize_t k
        for k in range(d.shape[0]):
            res[k] = msi_result(trigger_msi(&self.s, dv[k], ev[k]))
        return out

    def save_tables(self):
        """KVM_DEV_ARM_ITS_SAVE_TABLES: 0 or a negative errno (-EFAULT)."""
        self._ready()
        cdef int r = save_device_tables(&self.s)
        if r == 0:
            r = save_collection_table(&self.s)
        return r

    def restore_tables(self):
        """KVM_DEV_ARM_ITS_RESTORE_TABLES: 0 or a negative errno; an error
        changes nothing (see restore_tables in its.pyx for how KVM differs)."""
        self._ready()
        return restore_tables(&self.s)

    def reset(self):
        """KVM_DEV_ARM_ITS_CTRL_RESET."""
        self._ready()
        its_reset(&self.s)

    def process_commands(self):
        """Run the queued commands now (what an accepted GITS_CWRITER or
        GITS_CTLR write does)."""
        self._ready()
        process_commands(&self.s)

    def command(self, dw0, dw1, dw2, dw3):
        """Run one command given as its four 64-bit words, outside the
        queue; KVM's internal result: 0, an E_ITS_* code, or a negative errno."""
        self._ready()
        cdef uint64_t c[4]
        c[0] = int_arg(dw0, "dw0", 0, 0xFFFFFFFFFFFFFFFF)
        c[1] = int_arg(dw1, "dw1", 0, 0xFFFFFFFFFFFFFFFF)
        c[2] = int_arg(dw2, "dw2", 0, 0xFFFFFFFFFFFFFFFF)
        c[3] = int_arg(dw3, "dw3", 0, 0xFFFFFFFFFFFFFFFF)
        return handle_command(&self.s, c)

    @property
    def max_ites(self):
        """The most ITEs this ITS holds (a MAPTI beyond fails as KVM's -ENOMEM)."""
        return self.s.max_ites

    @property
    def nr_ites(self):
        return self.s.nites

    # ---- named state -----------------------------------------------------------
    def arrays(self):
        """The state as :class:`vgic.its_state.ItsArrays` (copies)."""
        self._ready()
        cdef ItsRegs *r = self.s.r
        cdef int32_t dv = id_next(self.s.dev_bits, 0)
        cdef Dev *d
        cdef uint32_t i, k
        cdef uint32_t[::1] evv, lpv
        cdef uint16_t[::1] icv
        cdef uint8_t[::1] hcv
        devices = []
        while dv >= 0:
            d = self.s.dev[dv]
            ev = np.empty(d.n, dtype=np.uint32)
            lp = np.empty(d.n, dtype=np.uint32)
            ic = np.empty(d.n, dtype=np.uint16)
            hc = np.empty(d.n, dtype=np.uint8)
            evv, lpv, icv, hcv = ev, lp, ic, hc
            for i in range(d.n):
                evv[i] = d.ites[i].event
                lpv[i] = d.ites[i].lpi
                icv[i] = d.ites[i].icid
                hcv[i] = d.ites[i].has_coll
            devices.append(its_state.Device(int(dv), int(d.itt_addr), int(d.nbits), ev, lp, ic,
                                            hc.astype(np.bool_)))
            dv = id_next(self.s.dev_bits, <uint32_t>dv + 1)
        colls = [(int(self.s.coll_order[k]), int(self.s.coll_target[self.s.coll_order[k]]))
                 for k in range(self.s.ncoll)]
        return its_state.ItsArrays(int(r.enabled), int(r.abi_rev), int(r.cbaser), int(r.cwriter),
                                   int(r.creadr), (int(r.baser[0]), int(r.baser[1])), devices, colls)

    def state(self):
        """The named state (:mod:`vgic.its_state` layout)."""
        return its_state.to_dict(self.arrays())

    def load_state(self, state):
        """Replace the whole state by ``state``, checked first (``vgic.StateError``,
        nothing changed): the LPIs its ITEs map must exist in the Gic, each
        with an ``ite_count`` of the ITEs that map it."""
        self._ready()
        a = its_state.from_dict(state, self.s.g.nr_vcpus, self.s.max_ites)
        lpi = self._gic.arrays().lpi
        its_state.check_lpi_links(a, lpi["intid"], lpi["ite_count"], "its", "gic.lpi")
        self.apply_arrays(a)

    def apply_arrays(self, a):
        """Write :class:`vgic.its_state.ItsArrays` into the state: the tables
        are rebuilt (no LPI reference changes: the Gic's state carries the
        ITE counts).  ``its_state.check_arrays`` checks them first (every id,
        EventID and count the tables index; ``vgic.StateError``, a
        ValueError, and nothing changed)."""
        self._ready()
        a = its_state.check_arrays(a, self.s.g.nr_vcpus, self.s.max_ites, self.s.g.nr_lpis)
        cdef ItsState *s = &self.s
        cdef Dev *d
        cdef uint32_t i
        cdef const uint32_t[::1] evv, lpv
        cdef const uint16_t[::1] icv
        cdef const uint8_t[::1] hcv
        # Everything is allocated before anything of the live state changes.
        built = []
        cdef Dev *nd
        cdef uint64_t total = 0
        try:
            for dev in a.devices:
                nd = <Dev *>calloc(1, sizeof(Dev))
                if nd == NULL:
                    raise MemoryError()
                built.append(<size_t>nd)
                nd.itt_addr = dev.itt_addr
                nd.nbits = dev.nbits
                n = dev.event.shape[0]
                if n:
                    nd.ites = <Ite *>calloc(n, sizeof(Ite))
                    if nd.ites == NULL:
                        raise MemoryError()
                nd.n = n
                nd.cap = n
                evv = np.ascontiguousarray(dev.event, dtype=np.uint32)
                lpv = np.ascontiguousarray(dev.lpi, dtype=np.uint32)
                icv = np.ascontiguousarray(dev.icid, dtype=np.uint16)
                hcv = np.ascontiguousarray(dev.has_coll, dtype=np.uint8)
                for i in range(n):
                    nd.ites[i].event = evv[i]
                    nd.ites[i].lpi = lpv[i]
                    nd.ites[i].icid = icv[i]
                    nd.ites[i].has_coll = hcv[i]
                total += n
        except BaseException:
            for p in built:
                nd = <Dev *><size_t>p
                free(nd.ites)
                free(nd)
            raise
        # Drop the old tables without touching LPI references.
        for i in range(NR_IDS):
            d = s.dev[i]
            if d != NULL:
                free(d.ites)
                free(d)
                s.dev[i] = NULL
        memset(s.dev_bits, 0, ID_WORDS * sizeof(uint64_t))
        s.ndev = 0
        for dev, p in zip(a.devices, built):
            s.dev[dev.devid] = <Dev *><size_t>p
            id_set(s.dev_bits, dev.devid, True)
            s.ndev += 1
        s.nites = total
        memset(s.coll_bits, 0, ID_WORDS * sizeof(uint64_t))
        memset(s.coll_target, 0xFF, NR_IDS * sizeof(uint32_t))
        s.ncoll = 0
        for icid, target in a.collections:
            new_coll(s, icid, target)
        s.r.enabled = a.enabled
        s.r.abi_rev = a.abi_rev
        s.r.cbaser = a.cbaser
        s.r.cwriter = a.cwriter
        s.r.creadr = a.creadr
        s.r.baser[0] = a.baser[0]
        s.r.baser[1] = a.baser[1]


cdef inline int msi_result(int r) noexcept nogil:
    # KVM_SIGNAL_MSI's value: 1 delivered, 0 blocked, or a negative errno.
    if r == 0:
        return 1
    return 0 if r > 0 else r


def plain_table_loop(memory, offsets, values):
    """The baseline of the save/restore benchmark: a plain C loop that
    writes ``values[i]`` as 8 little-endian bytes at ``memory[offsets[i]]``
    for every i, then reads them all back; returns the XOR of what it read.
    (What SAVE_TABLES and RESTORE_TABLES move, without their table logic.)"""
    mem, off = check_entry_offsets(memory, offsets)
    val = np.ascontiguousarray(values, dtype=np.uint64)
    if val.shape != off.shape:
        raise ValueError("offsets and values must be 1-D arrays of one length")
    cdef uint8_t[::1] m = mem
    cdef const uint64_t[::1] ov = off
    cdef const uint64_t[::1] vv = val
    cdef Py_ssize_t i, n = ov.shape[0]
    cdef uint64_t acc = 0, x
    with nogil:
        for i in range(n):
            memcpy(&m[ov[i]], &vv[i], 8)
        for i in range(n):
            memcpy(&x, &m[ov[i]], 8)
            acc ^= x
    return acc


def stripped_table_save(memory, offsets, ites, lpi_bitmap, lpi_target, lpi_priority, prop_offset):
    """The floor of SAVE_TABLES, for the benchmark beside it: each ITE
    ``ites[i]`` (pINTID, ICID) encoded as KVM's ITE with ``next`` 1 and
    written at ``memory[offsets[i]]`` - no ITT walk, no `next` search, no
    DTE or CTE.  Arguments as :func:`stripped_table_restore` (checked by
    ``vgic.guestmem.check_stripped_pair``; the LPI arrays are not used)."""
    mem, off, it, _, _, _ = check_stripped_pair(memory, offsets, ites, lpi_bitmap, lpi_target, lpi_priority,
                                                prop_offset)
    cdef uint8_t[::1] m = mem
    cdef const uint64_t[::1] ov = off
    cdef uint32_t[:, ::1] iv = it
    cdef Py_ssize_t i, n = ov.shape[0]
    cdef uint64_t v
    with nogil:
        for i in range(n):
            v = ((<uint64_t>1) << KVM_ITS_ITE_NEXT_SHIFT) | (<uint64_t>iv[i, 0] << KVM_ITS_ITE_PINTID_SHIFT) \
                | (iv[i, 1] & KVM_ITS_ITE_ICID_MASK)
            memcpy(&m[ov[i]], &v, 8)


def stripped_table_restore(memory, offsets, ites, lpi_bitmap, lpi_target, lpi_priority, prop_offset):
    """The floor of RESTORE_TABLES, for the benchmark beside it: each entry
    at ``memory[offsets[i]]`` decoded into ``ites[i]`` (pINTID, ICID), and
    the LPI of a pINTID not met before made - its bit set in
    ``lpi_bitmap``, its ICID as ``lpi_target``, its priority from its
    property byte at ``memory[prop_offset + pINTID - 8192]``.  No
    validation beyond the pINTID's range, no pending bit, no reference
    counts, no undo log: what any restore must at least do.  Returns the
    number of LPIs made; ``ValueError`` at an entry whose pINTID is not an
    LPI of the arrays (the entries before it are restored)."""
    mem, off, it, ex, tg, pr = check_stripped_pair(memory, offsets, ites, lpi_bitmap, lpi_target, lpi_priority,
                                                   prop_offset)
    cdef uint8_t[::1] m = mem
    cdef const uint64_t[::1] ov = off
    cdef uint32_t[:, ::1] iv = it
    cdef uint32_t[::1] exv = ex
    cdef int32_t[::1] tgv = tg
    cdef uint8_t[::1] prv = pr
    cdef Py_ssize_t i, n = ov.shape[0], bad = -1
    cdef uint64_t v, prop = <uint64_t>prop_offset
    cdef uint32_t k, nr = <uint32_t>prv.shape[0], made = 0
    with nogil:
        for i in range(n):
            memcpy(&v, &m[ov[i]], 8)
            k = <uint32_t>(v >> KVM_ITS_ITE_PINTID_SHIFT) - LPI_BASE
            if k >= nr:
                bad = i
                break
            iv[i, 0] = k + LPI_BASE
            iv[i, 1] = <uint32_t>(v & KVM_ITS_ITE_ICID_MASK)
            if not (exv[k >> 5] >> (k & 31)) & 1:
                exv[k >> 5] |= 1u << (k & 31)
                tgv[k] = <int32_t>(v & KVM_ITS_ITE_ICID_MASK)
                prv[k] = m[prop + k] & 0xFC
                made += 1
    if bad >= 0:
        raise ValueError(f"entry {bad}: pINTID {int(mem[off[bad]:off[bad] + 8].view('<u8')[0]) >> 16 & 0xFFFFFFFF} "
                         f"is not an LPI of the arrays (8192..{8191 + nr})")
    return made
