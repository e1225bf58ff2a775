# cython: language_level=3
"""The vGICv3 distributor and redistributors: their C state and handlers.

:class:`Gic` owns the state of ``gicstate.pxd`` (per-IRQ bitmaps in 32-INTID
banks, priorities, routes, the redistributors' registers) in one buffer, and
binds the handler families of the GICD, GICR_RD and GICR_SGI frames of
:data:`vgic.regmap.FRAMES` (``vgic_irq_ops.pxd``, ``vgic_dist.pxd``,
``vgic_redist.pxd``) for the MMIO framework (``mmio.pyx``) to dispatch to.
It also takes KVM's injection calls (KVM_IRQ_LINE, LEVEL_INFO) and the
flush/fold kernel's per-IRQ accesses.  ``vgic._pure.gic`` is the twin.
"""
import numpy as np

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t

from vgic._core.args cimport int_arg
from vgic._core.cstate cimport CState, OpsRow, access_fn, uwrite_fn, add_ops
from vgic._core.cstate import check_bound
from vgic._core.consts cimport (NR_SGIS, NR_PRIVATE_IRQS, MAX_INTID_SPACE, KVM_VGIC_IMP_REV_LATEST, INITIAL_PENDBASER,
    LPI_BASE, NR_LPIS, INITIAL_PROPBASER)
from vgic._core.gicstate cimport (GicScalars, bank_of, prio_index, irq_index, valid_intid,
    deliverable, stamp_new, mpidr_to_vcpu, line_report, host_set_active, SPI_BANKS,
    BM_ENABLED, BM_PENDING_LATCH, BM_LINE_LEVEL, BM_ACTIVE, BM_GROUP, BM_EDGE, NR_BITMAPS)
from vgic._core.vgic_irq_ops cimport (raz, rao, wi, uwi, read_group, write_group,
    read_enable, write_senable, write_cenable, read_pending, write_spending,
    write_cpending, uread_spending, uwrite_spending, read_active, write_sactive,
    write_cactive, uwrite_sactive, uwrite_cactive, read_priority, write_prio, read_config, write_config)
from vgic._core.vgic_dist cimport (read_v3_misc, write_v3_misc, uwrite_v3_misc,
    read_irouter, write_irouter, read_idregs)
from vgic._core.lpi cimport lpi_save_pending_tables
from vgic._core.vgic_redist cimport (read_v3r_ctlr, write_v3r_ctlr, uwrite_v3r_ctlr, read_v3r_iidr,
    read_v3r_typer, read_propbase, write_propbase, read_pendbase, write_pendbase, write_invlpi, write_invall)

from vgic import gic_state, topology
from vgic.guestmem import check_memory

cdef extern from *:
    int count_trailing_zeros "__builtin_ctz"(unsigned int x) nogil

# ------------------------------------------------------------ handler families
cdef enum:
    MAX_OPS = 32

cdef OpsRow OPS[MAX_OPS]
cdef int NOPS = 0

cdef void def_ops(const char *name, access_fn r, access_fn w, access_fn ur, uwrite_fn uw) except *:
    global NOPS
    NOPS = add_ops(OPS, NOPS, MAX_OPS, name, r, w, ur, uw)

# name        guest read      guest write     uaccess read    uaccess write
def_ops("raz_wi", raz, wi, NULL, NULL)
def_ops("rao_wi", rao, wi, NULL, NULL)
def_ops("idregs", read_idregs, wi, NULL, NULL)
def_ops("v3_misc", read_v3_misc, write_v3_misc, NULL, uwrite_v3_misc)
def_ops("group", read_group, write_group, NULL, NULL)
def_ops("senable", read_enable, write_senable, NULL, NULL)
def_ops("cenable", read_enable, write_cenable, NULL, NULL)
def_ops("spending", read_pending, write_spending, uread_spending, uwrite_spending)
def_ops("cpending", read_pending, write_cpending, raz, uwi)
def_ops("sactive", read_active, write_sactive, NULL, uwrite_sactive)
def_ops("cactive", read_active, write_cactive, NULL, uwrite_cactive)
def_ops("priority", read_priority, write_prio, NULL, NULL)
def_ops("config", read_config, write_config, NULL, NULL)
def_ops("irouter", read_irouter, write_irouter, NULL, NULL)
def_ops("v3r_ctlr", read_v3r_ctlr, write_v3r_ctlr, NULL, uwrite_v3r_ctlr)
def_ops("v3r_iidr", read_v3r_iidr, wi, NULL, uwi)
def_ops("v3r_typer", read_v3r_typer, wi, NULL, uwi)
def_ops("propbase", read_propbase, write_propbase, NULL, NULL)
def_ops("pendbase", read_pendbase, write_pendbase, NULL, NULL)
def_ops("invlpi", raz, write_invlpi, NULL, NULL)
def_ops("invall", raz, write_invall, NULL, NULL)

check_bound("vgic_v3", [OPS[i].name.decode() for i in range(NOPS)])

_FIELD_NAMES = ("enabled", "pending_latch", "line_level", "active", "group", "edge")


cdef object vcpu_error(object vcpu, uint32_t nr_vcpus):
    return ValueError(f"vcpu {vcpu} out of range: the VM has {nr_vcpus} vCPUs")


cdef class Gic(CState):
    """Distributor and redistributor state of one VM (``nr_vcpus``
    redistributors, ``nr_irqs`` INTIDs below the LPIs, ``mpidrs[i]`` the
    MPIDR_EL1 of vCPU *i*).  See ``vgic/_core/gic.pyi``."""

    def __init__(self, nr_vcpus, nr_irqs, mpidrs, bint lpis=False):
        cdef uint32_t[:, ::1] bits
        cdef uint8_t[::1] prio
        cdef uint32_t[::1] route, ctlr, refs, exists
        cdef int32_t[::1] target, queued, ap_next, ap_prev, ap_head, ap_tail, ap_len
        cdef uint32_t[::1] hw_mask, host_active
        cdef uint16_t[::1] hw_pintid
        cdef uint8_t[::1] in_lr
        cdef uint64_t[::1] mp, pend, seq, live
        cdef uint8_t[::1] scal
        cdef int r
        if self.st.nr_vcpus:
            raise TypeError("a Gic is initialised once")
        nr_vcpus = topology.check_nr_vcpus(nr_vcpus)
        nr_irqs = topology.check_nr_irqs(nr_irqs)
        mpidr_arr = np.array(mpidrs, dtype=np.uint64).reshape(-1)
        if mpidr_arr.shape[0] != nr_vcpus:
            raise ValueError(f"{mpidr_arr.shape[0]} MPIDRs given for {nr_vcpus} vCPUs")
        # With an ITS, every LPI INTID KVM can map (16 ID bits) has a bank.
        nr_lpis = NR_LPIS if lpis else 0
        nb = SPI_BANKS + nr_vcpus + nr_lpis // 32
        layout = [("scalars", np.uint8, sizeof(GicScalars)),
                  ("bits", np.uint32, NR_BITMAPS * nb), ("priority", np.uint8, nb * 32 + 8),
                  ("route", np.uint32, MAX_INTID_SPACE), ("target", np.int32, nb * 32),
                  ("pendbaser", np.uint64, nr_vcpus), ("gicr_ctlr", np.uint32, nr_vcpus),
                  ("seq", np.uint64, nb * 32), ("lpi_refs", np.uint32, max(nr_lpis, 1)),
                  ("lpi_exists", np.uint32, max(nr_lpis // 32, 1)),
                  ("lpi_live", np.uint64, max((nr_lpis // 32 + 63) // 64, 1)),
                  ("host_active", np.uint32, nr_vcpus)]
        total = sum(-(-np.dtype(dt).itemsize * count // 8) * 8 for _, dt, count in layout)
        buf = np.zeros(total, dtype=np.uint8)
        views = {}
        start = 0
        for name, dt, count in layout:
            nbytes = np.dtype(dt).itemsize * count
            views[name] = buf[start:start + nbytes].view(dt)
            start += -(-nbytes // 8) * 8
        self._set_buffer(buf)
        self._scalars = views["scalars"]
        self._bits = views["bits"].reshape(NR_BITMAPS, nb)
        self._priority = views["priority"]
        self._route = views["route"]
        self._target = views["target"]
        self._pendbaser = views["pendbaser"]
        self._gicr_ctlr = views["gicr_ctlr"]
        self._seq = views["seq"]
        self._lpi_refs = views["lpi_refs"]
        self._lpi_exists = views["lpi_exists"]
        self._lpi_live = views["lpi_live"]
        self._queued_on = np.full(nb * 32, -1, dtype=np.int32)
        self._ap_next = np.full(nb * 32, -1, dtype=np.int32)
        self._ap_prev = np.full(nb * 32, -1, dtype=np.int32)
        self._ap_head = np.full(nr_vcpus, -1, dtype=np.int32)
        self._ap_tail = np.full(nr_vcpus, -1, dtype=np.int32)
        self._ap_len = np.zeros(nr_vcpus, dtype=np.int32)
        self._in_lr = np.zeros(nb * 32, dtype=np.uint8)
        self._hw_mask = np.zeros(nr_vcpus, dtype=np.uint32)
        self._hw_pintid = np.zeros(nr_vcpus * 32, dtype=np.uint16)
        # (in the state buffer: a replay's MMIO may change it and roll it back)
        self._host_active = views["host_active"]
        self._mpidr = mpidr_arr.copy()
        scal, bits, prio, route, target = self._scalars, self._bits, self._priority, self._route, self._target
        mp, pend, ctlr, seq = self._mpidr, self._pendbaser, self._gicr_ctlr, self._seq
        refs, exists, live, queued = self._lpi_refs, self._lpi_exists, self._lpi_live, self._queued_on
        ap_next, ap_prev, ap_head, ap_tail, ap_len = (self._ap_next, self._ap_prev, self._ap_head,
                                                      self._ap_tail, self._ap_len)
        self.st.nr_irqs = nr_irqs
        self.st.nr_vcpus = nr_vcpus
        self.st.nr_lpis = nr_lpis
        self.st.lpi_bank0 = SPI_BANKS + nr_vcpus
        self.st.nr_banks = nb
        self.st.mpidr = &mp[0]
        self.st.mpidrs_default = topology.MpidrIndex(mpidr_arr.tolist()).all_default()
        self.st.s = <GicScalars *>&scal[0]
        for r in range(NR_BITMAPS):
            self.st.bm[r] = &bits[r, 0]
        self.st.priority = &prio[0]
        self.st.route = &route[0]
        self.st.target = &target[0]
        self.st.pendbaser = &pend[0]
        self.st.gicr_ctlr = &ctlr[0]
        self.st.seq = &seq[0]
        self.st.lpi_refs = &refs[0]
        self.st.lpi_exists = &exists[0]
        self.st.lpi_live = &live[0]
        self.st.queued_on = &queued[0]
        self.st.ap_next = &ap_next[0]
        self.st.ap_prev = &ap_prev[0]
        self.st.ap_head = &ap_head[0]
        self.st.ap_tail = &ap_tail[0]
        self.st.ap_len = &ap_len[0]
        in_lr = self._in_lr
        self.st.in_lr = &in_lr[0]
        hw_mask, hw_pintid, host_active = self._hw_mask, self._hw_pintid, self._host_active
        self.st.hw_mask = &hw_mask[0]
        self.st.hw_pintid = &hw_pintid[0]
        self.st.host_active = &host_active[0]
        self.st.input_level = NULL
        self.st.input_ctx = NULL
        self.st.mem.base = NULL
        self.ctx = &self.st
        # GICR_CTLR and GICR_INVLPIR/INVALLR change ap_lists and read guest
        # memory once LPIs exist.
        self.opaque = nr_lpis != 0
        self.nr_intids = nr_irqs
        self.ops = OPS
        self.nops = NOPS
        self._reset()

    cdef void _reset(self) noexcept:
        # KVM's kvm_vgic_dist_init / kvm_vgic_vcpu_init reset values (kvm-facts §1.6).
        cdef uint32_t b, spi_words = self.st.nr_irqs >> 5
        self.st.s.implementation_rev = KVM_VGIC_IMP_REV_LATEST
        if self.st.nr_lpis:
            self.st.s.propbaser = INITIAL_PROPBASER     # set by creating the ITS
        self._target[:] = -1
        self._pendbaser[:] = INITIAL_PENDBASER
        for b in range(1, spi_words):
            self.st.bm[BM_GROUP][b] = 0xFFFFFFFF
            self.st.bm[BM_EDGE][b] = 0xFFFFFFFF      # SPIs start edge (config 0)
        for b in range(SPI_BANKS, self.st.lpi_bank0):      # private banks only: no LPI exists yet
            self.st.bm[BM_GROUP][b] = 0xFFFFFFFF
            self.st.bm[BM_ENABLED][b] = 0x0000FFFF   # SGIs enabled
            self.st.bm[BM_EDGE][b] = 0x0000FFFF      # SGIs edge, PPIs level
        for b in range(NR_PRIVATE_IRQS, self.st.nr_irqs):
            self.st.target[b] = 0                    # vCPU 0 (MPIDR affinity 0)

    cdef int _ready(self) except -1:
        if self.st.nr_vcpus == 0:
            raise TypeError("this Gic was not initialised (call Gic(nr_vcpus, nr_irqs, mpidrs))")
        return 0

    # ------------------------------------------------------------ attributes
    @property
    def nr_irqs(self):
        return self.st.nr_irqs

    @property
    def nr_vcpus(self):
        return self.st.nr_vcpus

    @property
    def nr_lpis(self):
        """LPI INTIDs this state can hold: NR_LPIS with an ITS, else 0."""
        return self.st.nr_lpis

    @property
    def seq_counter(self):
        """Moves whenever an interrupt becomes deliverable (active, or enabled
        and pending) or the guest enables the distributor: where KVM's
        vgic_queue_irq_unlock / vgic_kick_vcpus kick vCPUs."""
        return self.st.s.seq_counter

    def lpis(self):
        """The LPIs that exist (KVM: have a struct vgic_irq), in INTID order."""
        self._ready()
        flags = np.unpackbits(self._lpi_exists.view(np.uint8), bitorder="little")[:self.st.nr_lpis]
        return [LPI_BASE + int(k) for k in np.flatnonzero(flags)]

    def clear_queued(self):
        """Empty every ap_list (a new ApLists starts empty)."""
        self._ready()
        self._queued_on[:] = -1
        self._ap_next[:] = -1
        self._ap_prev[:] = -1
        self._ap_head[:] = -1
        self._ap_tail[:] = -1
        self._ap_len[:] = 0
        self._in_lr[:] = 0

    # ------------------------------------------- HW-mapped interrupts
    def map_phys_irq(self, vcpu, intid, pintid):
        """kvm_vgic_map_phys_irq(): private INTID ``intid`` (16..31) of
        ``vcpu`` is forwarded from host PPI ``pintid`` (0..31): its LRs get
        HW = 1 and pINTID, and its guest deactivation deactivates the
        physical interrupt."""
        cdef int v = self._vcpu(vcpu)
        cdef uint32_t i = <uint32_t>int_arg(intid, "intid", NR_SGIS, NR_PRIVATE_IRQS - 1)
        cdef uint32_t p = <uint32_t>int_arg(pintid, "pintid", 0, 31)
        self.st.hw_mask[v] |= 1u << i
        self.st.hw_pintid[v * 32 + i] = <uint16_t>p

    def unmap_phys_irq(self, vcpu, intid):
        """kvm_vgic_unmap_phys_irq(): ``intid`` of ``vcpu`` is a plain
        virtual interrupt again."""
        cdef int v = self._vcpu(vcpu)
        cdef uint32_t i = <uint32_t>int_arg(intid, "intid", NR_SGIS, NR_PRIVATE_IRQS - 1)
        self.st.hw_mask[v] &= ~(1u << i)
        self.st.hw_pintid[v * 32 + i] = 0

    def phys_irq(self, vcpu, intid):
        """The host PPI ``intid`` of ``vcpu`` is mapped to, or -1."""
        cdef int v = self._vcpu(vcpu)
        cdef uint32_t i = <uint32_t>int_arg(intid, "intid", 0, NR_PRIVATE_IRQS - 1)
        return self.st.hw_pintid[v * 32 + i] if (self.st.hw_mask[v] >> i) & 1 else -1

    def map_is_active(self, vcpu, intid):
        """kvm_vgic_map_is_active(): mapped and (virtually) active."""
        cdef int v = self._vcpu(vcpu)
        cdef uint32_t i = <uint32_t>int_arg(intid, "intid", 0, NR_PRIVATE_IRQS - 1)
        cdef uint32_t b = SPI_BANKS + <uint32_t>v
        return bool((self.st.hw_mask[v] >> i) & (self.st.bm[BM_ACTIVE][b] >> i) & 1)

    def host_active(self, vcpu):
        """The active bits of the host PPIs (0..31) of the physical CPU
        under ``vcpu``: the physical GIC state a HW LR deactivates."""
        return int(self.st.host_active[self._vcpu(vcpu)])

    def set_host_active(self, vcpu, mask):
        """Set those bits (irq_set_irqchip_state(IRQCHIP_STATE_ACTIVE))."""
        cdef int v = self._vcpu(vcpu)
        self.st.host_active[v] = <uint32_t>int_arg(mask, "mask", 0, 0xFFFFFFFF)

    def host_deactivate(self, vcpu, pintid):
        """A guest deactivation through an LR with HW = 1 deactivates
        physical INTID ``pintid`` (a host PPI below 32 has state here)."""
        cdef int v = self._vcpu(vcpu)
        cdef uint32_t p = <uint32_t>int_arg(pintid, "pintid", 0, 1023)
        host_set_active(&self.st, v, p, False)

    def save_pending_tables(self):
        """KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES: every LPI's pending state
        into its target's pending table; 0 or -EFAULT."""
        self._ready()
        return lpi_save_pending_tables(&self.st)

    def attach_memory(self, memory, gpa):
        """Guest RAM for the LPI property and pending tables: ``memory`` a
        writable 1-D uint8 numpy array standing for guest-physical
        ``gpa .. gpa + len - 1`` (kept alive here)."""
        self._ready()
        cdef uint8_t[::1] m = check_memory(memory)
        cdef uint64_t base = int_arg(gpa, "gpa", 0, 0xFFFFFFFFFFFFFFFF)
        if base + <uint64_t>m.shape[0] < base:
            raise ValueError(f"memory at {base:#x} wraps the 64-bit address space")
        self._memory = memory
        self.st.mem.base = &m[0] if m.shape[0] else NULL
        self.st.mem.gpa = base
        self.st.mem.size = m.shape[0]

    @property
    def dist_enabled(self):
        """GICD_CTLR.EnableGrp1: KVM's dist->enabled."""
        self._ready()
        return bool(self.st.s.dist_enabled)

    def mpidr_to_vcpu(self, mpidr):
        """The vCPU whose MPIDR affinity equals ``mpidr``'s, or -1 (as GICD_IROUTER resolves it)."""
        self._ready()
        cdef uint64_t m = int_arg(mpidr, "mpidr", 0, 0xFFFFFFFFFFFFFFFF)
        return mpidr_to_vcpu(&self.st, m)

    # ------------------------------------------------ device-attribute access
    cdef uint32_t _line_mask(self, object vcpu_arg, object intid_arg, uint32_t *bank) except? 0:
        # LEVEL_INFO covers 32 INTIDs; SGIs and unallocated INTIDs are RAZ/WI.
        self._ready()
        cdef int vcpu = self._vcpu(vcpu_arg)
        cdef uint32_t intid = int_arg(intid_arg, "intid", 0, 0xFFFFFFFF)
        if intid & 31:
            raise ValueError(f"intid {intid} is not a multiple of 32")
        if intid >= self.st.nr_irqs:
            return 0
        bank[0] = bank_of(&self.st, vcpu, intid)
        return 0xFFFF0000 if intid < NR_PRIVATE_IRQS else 0xFFFFFFFF

    def line_level_read(self, vcpu, intid):
        """KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO read of INTIDs ``intid..intid+31``."""
        cdef uint32_t b = 0
        cdef uint32_t m = self._line_mask(vcpu, intid, &b)
        if m == 0:
            return 0
        # Only level-triggered interrupts report a line level.
        return self.st.bm[BM_LINE_LEVEL][b] & ~self.st.bm[BM_EDGE][b] & m

    def line_level_write(self, vcpu, intid, value):
        """KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO write of INTIDs ``intid..intid+31``."""
        cdef uint32_t b = 0
        cdef uint32_t m = self._line_mask(vcpu, intid, &b)
        cdef uint32_t v = int_arg(value, "value", 0, 0xFFFFFFFF)
        if m == 0:
            return
        # Set whatever the trigger mode, so restore order does not matter.
        cdef uint32_t before = deliverable(&self.st, b)
        self.st.bm[BM_LINE_LEVEL][b] = (self.st.bm[BM_LINE_LEVEL][b] & ~m) | (v & m)
        stamp_new(&self.st, b, before)

    # ------------------------------------------------------- interrupt lines
    cdef int _vcpu(self, object vcpu) except -1:
        v = int_arg(vcpu, "vcpu", -(1 << 63), (1 << 63) - 1)
        if not 0 <= v < self.st.nr_vcpus:
            raise vcpu_error(v, self.st.nr_vcpus)
        return v

    cdef uint32_t _irq(self, object vcpu, object intid_arg, int *vcpu_out) except 0xFFFFFFFF:
        # The INTID below nr_irqs; the vCPU matters (and is checked) only
        # for a private INTID: an SPI's bank is global.
        self._ready()
        intid = int_arg(intid_arg, "intid", -(1 << 63), (1 << 63) - 1)
        if not 0 <= intid <= 0xFFFFFFFF or not valid_intid(&self.st, intid):
            if intid >= LPI_BASE:
                raise ValueError(f"intid {intid} is not an LPI that exists")
            raise ValueError(f"intid {intid} is not below nr_irqs {self.st.nr_irqs}")
        vcpu_out[0] = self._vcpu(vcpu) if intid < NR_PRIVATE_IRQS else 0
        return intid

    def set_irq_level(self, vcpu, intid, bint level):
        """kvm_vgic_inject_irq for an SPI (``vcpu`` ignored) or a PPI."""
        cdef int v = 0
        cdef uint32_t i = self._irq(vcpu, intid, &v)
        line_report(&self.st, bank_of(&self.st, v, i), 1u << (i & 31), level)

    def set_irq_level_batch(self, vcpus, intids, levels):
        """set_irq_level for every (vcpu, intid, level) of three equal-length
        1-D arrays, in order; every entry is checked (INTID below nr_irqs, a
        vCPU in range for a private INTID) before any is applied."""
        self._ready()
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
            if it[k] < NR_PRIVATE_IRQS and not 0 <= vc[k] < self.st.nr_vcpus:
                raise ValueError(f"vcpus[{k}] = {vc[k]} is out of range: the VM has {self.st.nr_vcpus} vCPUs")
        for k in range(m):
            intid = <uint32_t>it[k]
            line_report(&self.st, bank_of(&self.st, <int>vc[k], intid), 1u << (intid & 31), lvl[k] != 0)

    # ------------------------------------------------ the KVM side's access
    def set_irq_bit(self, vcpu, intid, field, bint value):
        """Set one single-bit field of an INTID's state: ``field`` 0 enabled,
        1 pending_latch, 2 line_level, 3 active, 4 group, 5 edge (the order
        of :meth:`irq_state`).  Used by KVM's side (SGIs, DIR)."""
        cdef int v = 0
        cdef uint32_t i = self._irq(vcpu, intid, &v)
        cdef int f = int_arg(field, "field", 0, NR_BITMAPS - 1)
        cdef uint32_t b = bank_of(&self.st, v, i)
        cdef uint32_t bit = 1u << (i & 31)
        cdef uint32_t before = deliverable(&self.st, b)
        if value:
            self.st.bm[f][b] |= bit
        else:
            self.st.bm[f][b] &= ~bit
        stamp_new(&self.st, b, before)

    def irq_scan(self, vcpu):
        """INTIDs that may need a list register: vCPU ``vcpu``'s private
        INTIDs, then every SPI, then every LPI, that are active or enabled
        and pending (pending as a guest reads it), in INTID order."""
        cdef uint32_t b, w, bits
        cdef list out = []
        self._ready()
        cdef int v = self._vcpu(vcpu)
        for w in range(self.st.nr_irqs >> 5):
            b = SPI_BANKS + <uint32_t>v if w == 0 else w
            bits = deliverable(&self.st, b)
            while bits:
                out.append((w << 5) | count_trailing_zeros(bits))
                bits &= bits - 1
        for w in range(self.st.nr_lpis >> 5):
            bits = deliverable(&self.st, self.st.lpi_bank0 + w)
            while bits:
                out.append(LPI_BASE + (w << 5) + count_trailing_zeros(bits))
                bits &= bits - 1
        return out

    # ---------------------------------------------------------- introspection
    def irq_state(self, vcpu, intid):
        """``(enabled, pending_latch, line_level, active, group, edge,
        priority, route, target)`` of one INTID (``vcpu`` ignored for an SPI)."""
        cdef int v = 0
        cdef uint32_t i = self._irq(vcpu, intid, &v)
        cdef uint32_t b = bank_of(&self.st, v, i)
        cdef uint32_t s = i & 31
        cdef tuple bits = tuple((self.st.bm[r][b] >> s) & 1 for r in (
            BM_ENABLED, BM_PENDING_LATCH, BM_LINE_LEVEL, BM_ACTIVE, BM_GROUP, BM_EDGE))
        if i < NR_PRIVATE_IRQS:
            return bits + (self.st.priority[prio_index(&self.st, v, i)], 0, -1)
        if i >= LPI_BASE:
            return bits + (self.st.priority[irq_index(b, i)], 0, self.st.target[irq_index(b, i)])
        return bits + (self.st.priority[i], self.st.route[i], self.st.target[i])

    def arrays(self):
        """The state as :class:`vgic.gic_state.GicArrays` (copies)."""
        self._ready()
        cdef uint32_t nv = self.st.nr_vcpus, ni = self.st.nr_irqs
        words = self._bits
        spi_words = slice(1, ni >> 5)
        priv_words = slice(SPI_BANKS, SPI_BANKS + nv)
        spi, private = {}, {}
        for row, name in enumerate(_FIELD_NAMES):
            flags = np.unpackbits(np.ascontiguousarray(words[row]).view(np.uint8), bitorder="little").astype(bool)
            spi[name] = flags[32:ni].copy()
            private[name] = flags[SPI_BANKS * 32:(SPI_BANKS + nv) * 32].reshape(nv, 32).copy()
        spi["group"] = spi["group"].astype(np.uint8)
        private["group"] = private["group"].astype(np.uint8)
        prio = self._priority[:-8]
        spi["priority"] = prio[32:ni].copy()
        private["priority"] = prio[SPI_BANKS * 32:(SPI_BANKS + nv) * 32].reshape(nv, 32).copy()
        spi["seq"] = self._seq[32:ni].copy()
        private["seq"] = self._seq[SPI_BANKS * 32:(SPI_BANKS + nv) * 32].reshape(nv, 32).copy()
        spi["mpidr"] = self._route[32:ni].copy()
        spi["target_vcpu"] = self._target[32:ni].copy()
        del priv_words, spi_words
        ids = np.array(self.lpis(), dtype=np.uint32)
        k = ids.astype(np.int64) - LPI_BASE
        idx = (self.st.lpi_bank0 << 5) + k
        lpi = {"intid": ids}
        for row, name in enumerate(_FIELD_NAMES):
            if name in ("enabled", "pending_latch", "active"):
                lpi[name] = ((words[row][idx >> 5] >> (idx & 31).astype(np.uint32)) & 1).astype(bool)
        lpi["priority"] = self._priority[idx].copy()
        lpi["target_vcpu"] = self._target[idx].copy()
        lpi["seq"] = self._seq[idx].copy()
        lpi["ite_count"] = self._lpi_refs[k].copy()
        return gic_state.GicArrays(int(self.st.s.dist_enabled), int(self.st.s.implementation_rev),
                                   int(self.st.s.propbaser), int(self.st.s.seq_counter),
                                   self._gicr_ctlr.copy(), self._pendbaser.copy(), spi, private,
                                   {name: lpi[name] for name in gic_state.LPI_FIELDS})

    def state(self):
        """The named state (:mod:`vgic.gic_state` layout)."""
        return gic_state.to_dict(self.arrays())

    def load_state(self, state):
        """Replace the whole state by ``state`` (a :meth:`state` dictionary):
        checked first with :func:`vgic.gic_state.from_dict`, which raises
        ``vgic.gic_state.StateError`` and changes nothing on a bad field."""
        self._ready()
        a = gic_state.from_dict(state, self.st.nr_vcpus, self.st.nr_irqs,
                                topology.MpidrIndex(self._mpidr.tolist()), nr_lpis=self.st.nr_lpis)
        self.apply_arrays(a)

    def apply_arrays(self, a):
        """Write checked :class:`vgic.gic_state.GicArrays` into the state (all
        of it is computed first, then copied in)."""
        self._ready()
        cdef uint32_t nv = self.st.nr_vcpus, ni = self.st.nr_irqs
        new = np.zeros_like(self._buf)
        # Build the new buffer in a scratch copy laid out as the live one.
        offsets = {name: arr.__array_interface__["data"][0] - self._buf.__array_interface__["data"][0]
                   for name, arr in (("scalars", self._scalars), ("bits", self._bits),
                                     ("priority", self._priority), ("route", self._route),
                                     ("target", self._target), ("pendbaser", self._pendbaser),
                                     ("gicr_ctlr", self._gicr_ctlr), ("seq", self._seq),
                                     ("lpi_refs", self._lpi_refs), ("lpi_exists", self._lpi_exists),
                                     ("lpi_live", self._lpi_live), ("host_active", self._host_active))}

        def view(name, like):
            o = offsets[name]
            return new[o:o + like.nbytes].view(like.dtype).reshape(like.shape)

        scal = np.zeros(1, dtype=[("propbaser", "<u8"), ("seq_counter", "<u8"),
                                  ("dist_enabled", "<u4"), ("implementation_rev", "<u4"),
                                  ("lpi_orphans", "<u4"), ("pad", "<u4")])
        if scal.itemsize != sizeof(GicScalars):
            raise AssertionError("GicScalars layout")
        # An LPI no ITE maps exists only as an orphan: the sweep looks for it.
        orphans = int(bool(np.any(np.asarray(a.lpi["ite_count"]) == 0)))
        scal[0] = (a.propbaser, a.seq_counter, a.dist_enabled, a.implementation_rev, orphans, 0)
        view("scalars", self._scalars)[:] = scal.view(np.uint8)
        # The host PPIs' active state is the arch timer's to load: kept.
        view("host_active", self._host_active)[:] = self._host_active
        if a.lpi["intid"].size and not self.st.nr_lpis:
            raise ValueError("this Gic has no LPIs")
        k = a.lpi["intid"].astype(np.int64) - LPI_BASE
        lidx = (self.st.lpi_bank0 << 5) + k
        bits = view("bits", self._bits)
        for row, name in enumerate(_FIELD_NAMES):
            flags = np.zeros(self._bits.shape[1] * 32, dtype=bool)
            flags[32:ni] = a.spi[name].astype(bool)
            flags[SPI_BANKS * 32:(SPI_BANKS + nv) * 32] = a.private[name].astype(bool).reshape(-1)
            if name in a.lpi:
                flags[lidx] = a.lpi[name].astype(bool)
            elif name in ("group", "edge"):
                flags[lidx] = True              # LPIs: Group 1, edge-triggered
            bits[row] = np.packbits(flags, bitorder="little").view(np.uint32)
        exists = np.zeros(max(self.st.nr_lpis, 32), dtype=bool)
        exists[k] = True
        ex_words = np.packbits(exists, bitorder="little").view(np.uint32)
        view("lpi_exists", self._lpi_exists)[:] = ex_words[:self._lpi_exists.shape[0]]
        live = np.zeros(self._lpi_live.shape[0] * 64, dtype=bool)
        live[:ex_words.shape[0]] = ex_words != 0
        view("lpi_live", self._lpi_live)[:] = np.packbits(live, bitorder="little").view(np.uint64)
        view("lpi_refs", self._lpi_refs)[k] = a.lpi["ite_count"]
        prio = view("priority", self._priority)
        prio[32:ni] = a.spi["priority"]
        prio[SPI_BANKS * 32:(SPI_BANKS + nv) * 32] = a.private["priority"].reshape(-1)
        seq = view("seq", self._seq)
        seq[32:ni] = a.spi["seq"]
        seq[SPI_BANKS * 32:(SPI_BANKS + nv) * 32] = a.private["seq"].reshape(-1)
        seq[lidx] = a.lpi["seq"]
        prio[lidx] = a.lpi["priority"]
        route = view("route", self._route)
        route[32:ni] = a.spi["mpidr"]
        target = view("target", self._target)
        target[:] = -1
        target[32:ni] = a.spi["target_vcpu"]
        target[lidx] = a.lpi["target_vcpu"]
        view("pendbaser", self._pendbaser)[:] = a.pendbaser
        view("gicr_ctlr", self._gicr_ctlr)[:] = a.gicr_ctlr
        self._buf[:] = new
