# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The arch timers of a VM in C: KVM's arch_timer.c on an nVHE host with a
GICv3 (docs/timer-facts.md; vgic/gtimer.py).  The pure-Python twin,
vgic/_pure/timer.py, states every rule in the same order; this module is
its C form over the same records (vgic.gtimer.TIMER_VCPU and TIMER_VM), so
the two are compared field by field.

The EL1 virtual timer is direct: on the modelled hardware while `loaded`,
its interrupt forwarded to the guest through an LR with HW = 1.  The EL1
physical timer is emulated by a soft timer.  `lazy` moves the vtimer at
vcpu_load/vcpu_put, `eager` at every entry and exit; both count the timer
system registers they touch.
"""
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from libc.stdlib cimport malloc, free
from cpython.exc cimport PyErr_NoMemory

import errno

import numpy as np

from vgic._core.consts cimport (CTL_ENABLE, CTL_IMASK, CTL_ISTATUS, CNTHCTL_HOST, CNTHCTL_GUEST,
    DEFAULT_VTIMER_PPI, DEFAULT_PTIMER_PPI, HOST_VTIMER_PINTID, TIMER_POLICY_LAZY, TIMER_POLICY_EAGER,
    TREG_CNTV_CTL, TREG_CNTV_CVAL, TREG_CNTV_TVAL, TREG_CNTVCT, TREG_CNTP_CTL, TREG_CNTP_CVAL,
    TREG_CNTPCT, TREG_CNTFRQ, NR_TREGS, ONEREG_TIMER_CTL, ONEREG_TIMER_CVAL, ONEREG_TIMER_CNT,
    ONEREG_PTIMER_CTL, ONEREG_PTIMER_CVAL, ONEREG_PTIMER_CNT, TIMER_EV_HOST_VTIMER, TIMER_EV_PTIMER)
from vgic._core.args cimport int_arg
from vgic._core.batch cimport run_steps
from vgic._core.gic cimport Gic
from vgic._core.gicstate cimport GicState, line_report, bank_of, SPI_BANKS, BM_ACTIVE

from vgic import gtimer
from vgic.errors import KvmError
from vgic.batchargs import value_array
from vgic.ich import vcpu_indices

cdef uint64_t U64MAX = 0xFFFFFFFFFFFFFFFFULL
cdef uint64_t NO_DEADLINE = 0xFFFFFFFFFFFFFFFFULL
cdef uint32_t HOST_BIT = 1u << HOST_VTIMER_PINTID


cdef struct TimerVcpu:
    uint64_t cntv_ctl, cntv_cval, cntp_ctl, cntp_cval
    uint64_t hw_cntv_ctl, hw_cntv_cval, hw_cntvoff, hw_cnthctl
    uint64_t ptimer_at, bg_at
    uint64_t sysreg_reads, sysreg_writes, gic_active_writes, host_irqs
    uint8_t enabled, vcpu_loaded, loaded, vlevel, plevel, ptimer_armed, bg_armed, blocking, woken
    uint8_t host_masked, user_levels, running, kick
    uint8_t pad[3]

cdef struct TimerVm:
    uint64_t counter, cntfrq, voffset, poffset
    uint32_t vppi, pppi
    uint8_t policy, counter_offset_set, ppis_frozen, irqchip
    uint32_t kicks

cdef struct Ctx:
    TimerVcpu *r
    TimerVm *v
    GicState *g             # NULL: no in-kernel irqchip
    Py_ssize_t n

cdef struct Event:
    uint64_t t
    uint32_t i
    uint32_t kind

if sizeof(TimerVcpu) != gtimer.TIMER_VCPU.itemsize or sizeof(TimerVm) != gtimer.TIMER_VM.itemsize:
    raise ImportError("vgic._core.timer: the C records disagree with vgic.gtimer's dtypes")


# --------------------------------------------------------------- helpers
cdef inline uint64_t sext32(uint64_t x) noexcept nogil:
    x &= 0xFFFFFFFFULL
    return x | 0xFFFFFFFF00000000ULL if x & 0x80000000ULL else x

cdef inline bint can_fire(uint64_t ctl) noexcept nogil:
    return (ctl & (CTL_ENABLE | CTL_IMASK)) == CTL_ENABLE

cdef inline uint64_t delta(uint64_t now, uint64_t cval) noexcept nogil:
    return 0 if now >= cval else cval - now

cdef inline uint64_t deadline(const Ctx *c, uint64_t ticks) noexcept nogil:
    cdef uint64_t now = c.v.counter
    return U64MAX if ticks > U64MAX - now else now + ticks

cdef inline uint64_t vnow(const Ctx *c) noexcept nogil:
    return c.v.counter - c.v.voffset

cdef inline uint64_t pnow(const Ctx *c) noexcept nogil:
    return c.v.counter - c.v.poffset

cdef inline uint64_t hw_vnow(const Ctx *c, const TimerVcpu *r) noexcept nogil:
    return c.v.counter - r.hw_cntvoff

cdef inline uint64_t hw_vctl(const Ctx *c, const TimerVcpu *r) noexcept nogil:
    # CNTV_CTL_EL0 as the hardware reads it: ISTATUS while enabled and met.
    cdef uint64_t ctl = r.hw_cntv_ctl
    if ctl & CTL_ENABLE and hw_vnow(c, r) >= r.hw_cntv_cval:
        ctl |= CTL_ISTATUS
    return ctl

cdef bint should_fire(Ctx *c, Py_ssize_t i, bint virtual) noexcept nogil:
    # kvm_timer_should_fire(): a loaded (direct) vtimer reads the hardware
    # CTL (counted); otherwise KVM's copy against the counter.
    cdef TimerVcpu *r = &c.r[i]
    cdef uint64_t ctl
    if virtual:
        if r.loaded:
            r.sysreg_reads += 1
            ctl = hw_vctl(c, r)
            return (ctl & CTL_ENABLE) != 0 and (ctl & CTL_ISTATUS) != 0 and not (ctl & CTL_IMASK)
        return can_fire(r.cntv_ctl) and vnow(c) >= r.cntv_cval
    return can_fire(r.cntp_ctl) and pnow(c) >= r.cntp_cval

cdef uint32_t input_level(void *ctx, int vcpu, uint32_t intid) noexcept nogil:
    # kvm_arch_timer_get_input_level(), the vGIC's resampling of a mapped line.
    cdef Ctx *c = <Ctx *>ctx
    if vcpu < 0 or vcpu >= c.n:
        return 0
    if intid == c.v.vppi:
        return should_fire(c, vcpu, True)
    if intid == c.v.pppi:
        return should_fire(c, vcpu, False)
    return 0

cdef void update_irq(Ctx *c, Py_ssize_t i, bint virtual, bint level) noexcept nogil:
    # kvm_timer_update_irq(): the context's level, told to the vGIC.
    cdef uint32_t ppi
    if level and c.r[i].running and not c.r[i].kick:
        c.r[i].kick = 1                     # raised on a running vCPU: KVM kicks it
        c.v.kicks += 1
    if virtual:
        c.r[i].vlevel = level
        ppi = c.v.vppi
    else:
        c.r[i].plevel = level
        ppi = c.v.pppi
    if c.g != NULL and ppi < 32:
        line_report(c.g, bank_of(c.g, <int>i, ppi), 1u << ppi, level)

cdef inline bint map_is_active(const Ctx *c, Py_ssize_t i) noexcept nogil:
    cdef uint32_t ppi = c.v.vppi
    return ppi < 32 and ((c.g.hw_mask[i] >> ppi) & (c.g.bm[BM_ACTIVE][SPI_BANKS + i] >> ppi) & 1) != 0

cdef void set_phys_active(Ctx *c, Py_ssize_t i, bint active) noexcept nogil:
    # set_timer_irq_phys_active() on the host GIC (counted).
    c.r[i].gic_active_writes += 1
    if c.g != NULL:
        if active:
            c.g.host_active[i] |= HOST_BIT
        else:
            c.g.host_active[i] &= ~HOST_BIT

cdef inline bint host_active(const Ctx *c, Py_ssize_t i) noexcept nogil:
    return c.g != NULL and (c.g.host_active[i] & HOST_BIT) != 0


# ---------------------------------------------- moving the direct vtimer
cdef void restore(Ctx *c, Py_ssize_t i) noexcept nogil:
    # timer_restore_state(vtimer): CNTVOFF, CVAL, then CTL.
    cdef TimerVcpu *r = &c.r[i]
    if r.loaded:
        return
    r.hw_cntvoff = c.v.voffset
    r.hw_cntv_cval = r.cntv_cval
    r.hw_cntv_ctl = r.cntv_ctl & (CTL_ENABLE | CTL_IMASK)
    r.sysreg_writes += 3
    r.loaded = 1

cdef void save(Ctx *c, Py_ssize_t i) noexcept nogil:
    # timer_save_state(vtimer): CTL (raw, ISTATUS included) and CVAL read,
    # CTL zeroed, CNTVOFF zeroed.
    cdef TimerVcpu *r = &c.r[i]
    if not r.loaded:
        return
    r.cntv_ctl = hw_vctl(c, r)
    r.cntv_cval = r.hw_cntv_cval
    r.hw_cntv_ctl = 0
    r.hw_cntvoff = 0
    r.sysreg_reads += 2
    r.sysreg_writes += 2
    r.loaded = 0

cdef inline void set_traps(Ctx *c, Py_ssize_t i, bint guest) noexcept nogil:
    # __timer_enable_traps / __timer_disable_traps (nVHE): CNTHCTL_EL2 read,
    # then written with the guest's or the host's access bits.
    cdef TimerVcpu *r = &c.r[i]
    r.sysreg_reads += 1
    r.sysreg_writes += 1
    r.hw_cnthctl = CNTHCTL_GUEST if guest else CNTHCTL_HOST


# -------------------------------------------------- the emulated ptimer
cdef void arm_ptimer(Ctx *c, Py_ssize_t i) noexcept nogil:
    # timer_emulate(ptimer).
    cdef TimerVcpu *r = &c.r[i]
    cdef bint fire = should_fire(c, i, False)
    if fire != (r.plevel != 0):
        update_irq(c, i, False, fire)
    if fire or not can_fire(r.cntp_ctl):
        return
    r.ptimer_at = deadline(c, delta(pnow(c), r.cntp_cval))
    r.ptimer_armed = 1

cdef uint64_t earliest(const Ctx *c, Py_ssize_t i) noexcept nogil:
    # kvm_timer_earliest_exp() in ticks from KVM's copy, or NO_DEADLINE.
    cdef const TimerVcpu *r = &c.r[i]
    cdef uint64_t best = NO_DEADLINE, d
    if can_fire(r.cntv_ctl):
        best = delta(vnow(c), r.cntv_cval)
    if can_fire(r.cntp_ctl):
        d = delta(pnow(c), r.cntp_cval)
        if d < best:
            best = d
    return best

cdef void arm_bg(Ctx *c, Py_ssize_t i) noexcept nogil:
    # kvm_timer_blocking(): the background timer at the earliest expiry.
    cdef uint64_t ticks = earliest(c, i)
    if ticks != NO_DEADLINE:
        c.r[i].bg_at = deadline(c, ticks)
        c.r[i].bg_armed = 1

cdef inline bint host_can_take(const Ctx *c, Py_ssize_t i) noexcept nogil:
    # The direct vtimer is on the hardware and its physical PPI can reach
    # the host: not active (in-kernel vGIC) or not disabled (userspace irqchip).
    if not c.r[i].loaded:
        return False
    if c.g == NULL:
        return not c.r[i].host_masked
    return not host_active(c, i)

cdef inline void mask_host(Ctx *c, Py_ssize_t i, bint masked) noexcept nogil:
    # disable_percpu_irq / enable_percpu_irq (userspace irqchip; counted
    # with the host-GIC writes).
    c.r[i].gic_active_writes += 1
    c.r[i].host_masked = masked

cdef bint host_check(Ctx *c, Py_ssize_t i) noexcept nogil:
    # The host takes the direct vtimer's physical PPI if the hardware
    # asserts it and nothing holds it off (kvm_arch_timer_handler).
    cdef TimerVcpu *r = &c.r[i]
    cdef uint64_t ctl
    if not host_can_take(c, i):
        return False
    ctl = hw_vctl(c, r)
    if not (ctl & CTL_ISTATUS) or (ctl & CTL_IMASK):
        return False
    if c.g != NULL:
        c.g.host_active[i] |= HOST_BIT
    r.host_irqs += 1
    if should_fire(c, i, True):
        update_irq(c, i, True, True)
    if c.g == NULL:
        r.host_masked = 1           # no active state to hold it off: disabled
    return True

cdef void sync_user(Ctx *c, Py_ssize_t i) noexcept nogil:
    # kvm_timer_sync_user() and kvm_timer_update_run() (userspace irqchip).
    cdef TimerVcpu *r = &c.r[i]
    if not should_fire(c, i, True):
        update_irq(c, i, True, False)
        mask_host(c, i, False)
    r.user_levels = (r.vlevel != 0) | ((r.plevel != 0) << 1)

cdef void hold_host(Ctx *c, Py_ssize_t i) noexcept nogil:
    # kvm_timer_vcpu_load_gic() / kvm_timer_vcpu_load_nogic().
    cdef bint active = c.r[i].vlevel != 0
    if c.g == NULL:
        mask_host(c, i, active)
        return
    if not active:
        active = map_is_active(c, i)
    set_phys_active(c, i, active)


# ------------------------------------------------------- the lifecycle
cdef void load_timers(Ctx *c, Py_ssize_t i) noexcept nogil:
    # kvm_timer_vcpu_load() (lazy).
    cdef TimerVcpu *r = &c.r[i]
    update_irq(c, i, True, should_fire(c, i, True))
    hold_host(c, i)
    r.bg_armed = 0
    restore(c, i)
    arm_ptimer(c, i)
    host_check(c, i)

cdef void do_load(void *ctx, Py_ssize_t i) noexcept nogil:
    cdef Ctx *c = <Ctx *>ctx
    cdef TimerVcpu *r = &c.r[i]
    r.vcpu_loaded = 1
    if r.enabled and c.v.policy == TIMER_POLICY_LAZY:
        load_timers(c, i)

cdef void do_put(void *ctx, Py_ssize_t i) noexcept nogil:
    cdef Ctx *c = <Ctx *>ctx
    cdef TimerVcpu *r = &c.r[i]
    r.vcpu_loaded = 0
    if not r.enabled or c.v.policy != TIMER_POLICY_LAZY:
        return
    save(c, i)
    r.ptimer_armed = 0
    if r.blocking:
        arm_bg(c, i)

cdef void do_enter(void *ctx, Py_ssize_t i) noexcept nogil:
    cdef Ctx *c = <Ctx *>ctx
    cdef TimerVcpu *r = &c.r[i]
    cdef bint fire
    if not r.enabled:
        r.running = 1
        return
    if c.v.policy == TIMER_POLICY_LAZY:
        set_traps(c, i, True)
        r.running = 1
        return
    fire = should_fire(c, i, True)
    if fire != (r.vlevel != 0):
        update_irq(c, i, True, fire)
    arm_ptimer(c, i)
    hold_host(c, i)
    set_traps(c, i, True)
    restore(c, i)
    host_check(c, i)
    r.running = 1

cdef void do_exit(void *ctx, Py_ssize_t i) noexcept nogil:
    cdef Ctx *c = <Ctx *>ctx
    cdef TimerVcpu *r = &c.r[i]
    cdef bint fire
    r.running = 0
    if not r.enabled:
        return
    if c.v.policy == TIMER_POLICY_LAZY:
        set_traps(c, i, False)
    else:
        save(c, i)
        set_traps(c, i, False)
        r.ptimer_armed = 0
        fire = should_fire(c, i, True)
        if fire != (r.vlevel != 0):
            update_irq(c, i, True, fire)
    if c.g == NULL:
        sync_user(c, i)


# ---------------------------------------------------------------- time
cdef inline bint ev_less(const Event *a, const Event *b) noexcept nogil:
    if a.t != b.t:
        return a.t < b.t
    if a.i != b.i:
        return a.i < b.i
    return a.kind < b.kind

cdef void heap_push(Event *h, Py_ssize_t *n, Event e) noexcept nogil:
    cdef Py_ssize_t k = n[0], p
    n[0] += 1
    while k > 0:
        p = (k - 1) >> 1
        if not ev_less(&e, &h[p]):
            break
        h[k] = h[p]
        k = p
    h[k] = e

cdef Event heap_pop(Event *h, Py_ssize_t *n) noexcept nogil:
    cdef Event top = h[0], last
    cdef Py_ssize_t k = 0, m, child
    n[0] -= 1
    m = n[0]
    if m == 0:
        return top
    last = h[m]
    while True:
        child = 2 * k + 1
        if child >= m:
            break
        if child + 1 < m and ev_less(&h[child + 1], &h[child]):
            child += 1
        if not ev_less(&h[child], &last):
            break
        h[k] = h[child]
        k = child
    h[k] = last
    return top

cdef bint event_of(const Ctx *c, Py_ssize_t i, uint32_t kind, uint64_t limit, uint64_t *t) noexcept nogil:
    # The event of vCPU i of this kind due by `limit`, if armed.
    cdef const TimerVcpu *r = &c.r[i]
    if kind == TIMER_EV_HOST_VTIMER:
        if not host_can_take(c, i) or not can_fire(r.hw_cntv_ctl):
            return False
        t[0] = deadline(c, delta(hw_vnow(c, r), r.hw_cntv_cval))
    elif kind == TIMER_EV_PTIMER:
        if not r.ptimer_armed:
            return False
        t[0] = r.ptimer_at
    else:
        if not r.bg_armed:
            return False
        t[0] = r.bg_at
    return t[0] <= limit

cdef bint fire_event(Ctx *c, Py_ssize_t i, uint32_t kind) noexcept nogil:
    cdef TimerVcpu *r = &c.r[i]
    cdef uint64_t ticks
    if kind == TIMER_EV_HOST_VTIMER:
        return host_check(c, i)
    if kind == TIMER_EV_PTIMER:
        # kvm_hrtimer_expire(): early (a saturated deadline) re-arms.
        ticks = delta(pnow(c), r.cntp_cval)
        if ticks:
            r.ptimer_at = deadline(c, ticks)
            if r.ptimer_at == c.v.counter:
                r.ptimer_armed = 0
            return False
        r.ptimer_armed = 0
        update_irq(c, i, False, True)
        return True
    ticks = earliest(c, i)                  # kvm_bg_timer_expire()
    if ticks and ticks != NO_DEADLINE:
        r.bg_at = deadline(c, ticks)
        if r.bg_at == c.v.counter:
            r.bg_armed = 0
        return False
    r.bg_armed = 0
    r.woken = 1
    return True

cdef Py_ssize_t advance_to(Ctx *c, uint64_t target, Event *h) noexcept nogil:
    # Every event due by `target`, in (time, vCPU, kind) order; `h` holds
    # 3 * n events (each vCPU has at most one of each kind in the heap).
    cdef Py_ssize_t i, nh = 0, fired = 0
    cdef uint32_t kind
    cdef uint64_t t
    cdef Event e
    for i in range(c.n):
        for kind in range(3):
            if event_of(c, i, kind, target, &t):
                e.t = t
                e.i = <uint32_t>i
                e.kind = kind
                heap_push(h, &nh, e)
    while nh:
        e = heap_pop(h, &nh)
        if not event_of(c, e.i, e.kind, target, &t) or t != e.t:
            continue                        # no longer armed as it was
        if e.t > c.v.counter:
            c.v.counter = e.t
        if fire_event(c, e.i, e.kind):
            fired += 1
        if event_of(c, e.i, e.kind, target, &t) and t > e.t:
            e.t = t                         # re-armed later (fired early)
            heap_push(h, &nh, e)
    c.v.counter = target
    return fired


cdef class Timers:
    """Every vCPU's EL1 virtual and physical timers and the VM's counter
    (see vgic/_pure/timer.py, the twin, for each method's rule).
    ``Timers(nr_vcpus, gic=None, policy=0, cntfrq=...)``."""

    cdef Ctx c
    cdef Gic _gic
    cdef Event *_heap
    cdef readonly object records
    cdef readonly object vm

    def __cinit__(self):
        self._heap = NULL
        self.c.g = NULL
        self.c.n = 0

    def __init__(self, nr_vcpus, Gic gic=None, policy=TIMER_POLICY_LAZY, cntfrq=gtimer.DEFAULT_CNTFRQ):
        cdef Py_ssize_t n = int_arg(nr_vcpus, "nr_vcpus", 1, 1 << 24)
        if self.c.n:
            raise TypeError("Timers is initialised once")
        recs = np.zeros(n, dtype=gtimer.TIMER_VCPU)
        vm = np.zeros(1, dtype=gtimer.TIMER_VM)
        recs["hw_cnthctl"] = CNTHCTL_HOST
        vm["cntfrq"] = int_arg(cntfrq, "cntfrq", 1, U64MAX)
        vm["policy"] = int_arg(policy, "policy", 0, 1)
        vm["vppi"] = DEFAULT_VTIMER_PPI
        vm["pppi"] = DEFAULT_PTIMER_PPI
        vm["irqchip"] = gic is not None
        self._heap = <Event *>malloc(3 * n * sizeof(Event))
        if self._heap == NULL:
            PyErr_NoMemory()
        self.records = recs
        self.vm = vm
        self.c.r = <TimerVcpu *><size_t>recs.ctypes.data
        self.c.v = <TimerVm *><size_t>vm.ctypes.data
        self.c.n = n
        if gic is not None:
            if gic.st.nr_vcpus != <uint32_t>n:
                raise ValueError(f"the Gic has {gic.st.nr_vcpus} vCPUs, the timers {n}")
            self._gic = gic
            self.c.g = &gic.st
            gic.st.input_level = input_level
            gic.st.input_ctx = &self.c

    def __dealloc__(self):
        if self.c.g != NULL and self.c.g.input_ctx == &self.c:
            self.c.g.input_level = NULL
            self.c.g.input_ctx = NULL
        free(self._heap)

    cdef Py_ssize_t _i(self, object vcpu) except -1:
        return int_arg(vcpu, "vcpu", 0, self.c.n - 1)

    cdef object _ids(self, object ids):
        return vcpu_indices(ids, self.c.n)

    # ------------------------------------------------------- lifecycle
    def first_run(self, vcpu):
        cdef Py_ssize_t i = self._i(vcpu)
        cdef TimerVcpu *r = &self.c.r[i]
        if r.enabled:
            return
        if self.c.g != NULL:
            if self.c.v.vppi == self.c.v.pppi:
                raise KvmError(errno.EINVAL, f"KVM_RUN: the timers share PPI {self.c.v.vppi}")
            self._gic.map_phys_irq(i, self.c.v.vppi, HOST_VTIMER_PINTID)
            self.c.v.ppis_frozen = 1
        r.enabled = 1
        if r.vcpu_loaded:
            load_timers(&self.c, i)

    def load(self, vcpu):
        do_load(&self.c, self._i(vcpu))

    def put(self, vcpu):
        do_put(&self.c, self._i(vcpu))

    def enter(self, vcpu):
        do_enter(&self.c, self._i(vcpu))

    def exit(self, vcpu):
        do_exit(&self.c, self._i(vcpu))

    def block(self, vcpu):
        cdef Py_ssize_t i = self._i(vcpu)
        cdef TimerVcpu *r = &self.c.r[i]
        r.blocking = 1
        r.woken = 0
        if r.enabled and self.c.v.policy == TIMER_POLICY_EAGER:
            arm_bg(&self.c, i)

    def unblock(self, vcpu):
        cdef Py_ssize_t i = self._i(vcpu)
        cdef TimerVcpu *r = &self.c.r[i]
        cdef bint woken = r.woken != 0
        r.blocking = 0
        r.woken = 0
        r.bg_armed = 0
        return woken

    def woken(self, vcpu):
        return self.c.r[self._i(vcpu)].woken != 0

    def host_check(self, vcpu):
        return host_check(&self.c, self._i(vcpu))

    def deactivated(self, vcpu):
        host_check(&self.c, self._i(vcpu))

    # ------------------------------------------------- the guest's view
    def read(self, vcpu, reg):
        cdef Py_ssize_t i = self._i(vcpu)
        cdef int t = int_arg(reg, "reg", 0, NR_TREGS - 1)
        cdef Ctx *c = &self.c
        cdef TimerVcpu *r = &c.r[i]
        if t == TREG_CNTFRQ:
            return c.v.cntfrq
        if t == TREG_CNTPCT:
            return pnow(c)
        if t <= TREG_CNTVCT:
            if not r.loaded:
                raise ValueError(f"vcpu {i}: the vtimer is not on the hardware (not running)")
            if t == TREG_CNTV_CTL:
                return hw_vctl(c, r)
            if t == TREG_CNTV_CVAL:
                return r.hw_cntv_cval
            if t == TREG_CNTV_TVAL:
                return (r.hw_cntv_cval - hw_vnow(c, r)) & 0xFFFFFFFFULL
            return hw_vnow(c, r)
        if t == TREG_CNTP_CTL:
            return r.cntp_ctl | (CTL_ISTATUS if pnow(c) >= r.cntp_cval else 0)
        if t == TREG_CNTP_CVAL:
            return r.cntp_cval
        return (r.cntp_cval - pnow(c)) & 0xFFFFFFFFULL

    def write(self, vcpu, reg, value):
        cdef Py_ssize_t i = self._i(vcpu)
        cdef int t = int_arg(reg, "reg", 0, NR_TREGS - 1)
        cdef uint64_t x = int_arg(value, "value", 0, U64MAX)
        cdef Ctx *c = &self.c
        cdef TimerVcpu *r = &c.r[i]
        if t == TREG_CNTVCT or t == TREG_CNTPCT or t == TREG_CNTFRQ:
            return
        if t <= TREG_CNTV_TVAL:
            if not r.loaded:
                raise ValueError(f"vcpu {i}: the vtimer is not on the hardware (not running)")
            if t == TREG_CNTV_CTL:
                r.hw_cntv_ctl = x & (CTL_ENABLE | CTL_IMASK)
            elif t == TREG_CNTV_CVAL:
                r.hw_cntv_cval = x
            else:
                r.hw_cntv_cval = hw_vnow(c, r) + sext32(x)
            host_check(c, i)
            return
        r.ptimer_armed = 0
        if t == TREG_CNTP_CTL:
            r.cntp_ctl = x & ~(<uint64_t>CTL_ISTATUS)
        elif t == TREG_CNTP_CVAL:
            r.cntp_cval = x
        else:
            r.cntp_cval = pnow(c) + sext32(x)
        arm_ptimer(c, i)

    cdef int _ready(self) except -1:
        if self.c.v == NULL:
            raise TypeError("this Timers was not initialised (call Timers(nr_vcpus, ...))")
        return 0

    def take_kicks(self):
        """The vCPUs a timer raised its interrupt on while they ran, in
        index order, their kick requests cleared."""
        cdef Py_ssize_t i
        out = []
        self._ready()
        if not self.c.v.kicks:
            return out
        for i in range(self.c.n):
            if self.c.r[i].kick:
                self.c.r[i].kick = 0
                out.append(i)
        self.c.v.kicks = 0
        return out

    # -------------------------------------------------------------- time
    def advance(self, ticks):
        cdef uint64_t d = int_arg(ticks, "ticks", 0, U64MAX)
        self._ready()
        if d > U64MAX - self.c.v.counter:
            raise ValueError(f"advancing by {d} would wrap the 64-bit counter")
        return advance_to(&self.c, self.c.v.counter + d, self._heap)

    # --------------------------------------------------------- userspace
    cdef bint _sync_out(self, Py_ssize_t i) noexcept:
        if self.c.r[i].loaded:
            save(&self.c, i)
            return True
        return False

    cdef void _sync_in(self, Py_ssize_t i, bint moved) noexcept:
        # KVM's ioctls find the vCPU put, and its next KVM_RUN loads it: a
        # vtimer saved for the access is loaded again in full (levels,
        # physical state, restore, ptimer), a put vCPU's ptimer re-emulated.
        if moved:
            self.c.r[i].ptimer_armed = 0
            load_timers(&self.c, i)
        elif self.c.r[i].ptimer_armed:
            self.c.r[i].ptimer_armed = 0
            arm_ptimer(&self.c, i)

    def get_reg(self, vcpu, which):
        cdef Py_ssize_t i = self._i(vcpu)
        cdef int w = int_arg(which, "which", 0, ONEREG_PTIMER_CNT)
        cdef Ctx *c = &self.c
        cdef bint moved = self._sync_out(i)
        cdef TimerVcpu *r = &c.r[i]
        cdef uint64_t out
        if w == ONEREG_TIMER_CTL:
            out = r.cntv_ctl | (CTL_ISTATUS if vnow(c) >= r.cntv_cval else 0)
        elif w == ONEREG_TIMER_CVAL:
            out = r.cntv_cval
        elif w == ONEREG_TIMER_CNT:
            out = vnow(c)
        elif w == ONEREG_PTIMER_CTL:
            out = r.cntp_ctl | (CTL_ISTATUS if pnow(c) >= r.cntp_cval else 0)
        elif w == ONEREG_PTIMER_CVAL:
            out = r.cntp_cval
        else:
            out = pnow(c)
        self._sync_in(i, moved)
        return out

    def set_reg(self, vcpu, which, value):
        cdef Py_ssize_t i = self._i(vcpu)
        cdef int w = int_arg(which, "which", 0, ONEREG_PTIMER_CNT)
        cdef uint64_t x = int_arg(value, "value", 0, U64MAX)
        cdef Ctx *c = &self.c
        cdef bint moved = self._sync_out(i)
        cdef TimerVcpu *r = &c.r[i]
        if w == ONEREG_TIMER_CTL:
            r.cntv_ctl = x & ~(<uint64_t>CTL_ISTATUS)
        elif w == ONEREG_TIMER_CVAL:
            r.cntv_cval = x
        elif w == ONEREG_PTIMER_CTL:
            r.cntp_ctl = x & ~(<uint64_t>CTL_ISTATUS)
        elif w == ONEREG_PTIMER_CVAL:
            r.cntp_cval = x
        elif not c.v.counter_offset_set:
            if w == ONEREG_TIMER_CNT:
                c.v.voffset = c.v.counter - x
            else:
                c.v.poffset = c.v.counter - x
        self._sync_in(i, moved)

    def get_reg_batch(self, vcpus, which):
        """:meth:`get_reg` of one register on many vCPUs (checked first):
        the values as ``uint64``."""
        ids = self._ids(vcpus)
        cdef int w = int_arg(which, "which", 0, ONEREG_PTIMER_CNT)
        cdef const int64_t[::1] v = ids
        out = np.zeros(v.shape[0], dtype=np.uint64)
        cdef uint64_t[::1] o = out
        cdef Py_ssize_t k
        for k in range(v.shape[0]):
            o[k] = self.get_reg(v[k], w)
        return out

    def set_reg_batch(self, vcpus, which, values):
        """:meth:`set_reg` of one register on many vCPUs, in order (checked first)."""
        ids = self._ids(vcpus)
        cdef int w = int_arg(which, "which", 0, ONEREG_PTIMER_CNT)
        vals = value_array("values", values, U64MAX)
        if vals.shape[0] != ids.shape[0]:
            raise ValueError(f"values has {vals.shape[0]} entries, vcpus {ids.shape[0]}")
        cdef const int64_t[::1] v = ids
        cdef const uint64_t[::1] x = vals
        cdef Py_ssize_t k
        for k in range(v.shape[0]):
            self.set_reg(v[k], w, x[k])

    def set_counter_offset(self, offset):
        cdef uint64_t x = int_arg(offset, "counter_offset", 0, U64MAX)
        self._ready()
        self.c.v.voffset = x
        self.c.v.poffset = x
        self.c.v.counter_offset_set = 1

    def reset(self, vcpu):
        cdef Py_ssize_t i = self._i(vcpu)
        cdef TimerVcpu *r = &self.c.r[i]
        cdef bint moved = self._sync_out(i)
        r.cntv_ctl = 0
        r.cntp_ctl = 0
        r.ptimer_armed = 0
        if r.enabled:
            update_irq(&self.c, i, True, False)
            update_irq(&self.c, i, False, False)
        self._sync_in(i, moved)

    # -------------------------------------------------------- batch forms
    def load_batch(self, ids):
        cdef const int64_t[::1] v = self._ids(ids)
        with nogil:
            run_steps(do_load, &self.c, v)

    def put_batch(self, ids):
        cdef const int64_t[::1] v = self._ids(ids)
        with nogil:
            run_steps(do_put, &self.c, v)

    def enter_batch(self, ids):
        cdef const int64_t[::1] v = self._ids(ids)
        with nogil:
            run_steps(do_enter, &self.c, v)

    def exit_batch(self, ids):
        cdef const int64_t[::1] v = self._ids(ids)
        with nogil:
            run_steps(do_exit, &self.c, v)

    def save_batch(self, ids):
        """timer_save_state of the vtimer of every vCPU in ``ids``."""
        cdef const int64_t[::1] v = self._ids(ids)
        cdef Py_ssize_t k
        with nogil:
            for k in range(v.shape[0]):
                save(&self.c, v[k])

    def restore_batch(self, ids):
        """timer_restore_state of the vtimer of every vCPU in ``ids``."""
        cdef const int64_t[::1] v = self._ids(ids)
        cdef Py_ssize_t k
        with nogil:
            for k in range(v.shape[0]):
                restore(&self.c, v[k])

    def expiry_batch(self, ids):
        """kvm_timer_earliest_exp of every vCPU in ``ids`` as a deadline on
        the physical counter (``NO_DEADLINE`` when no timer can fire)."""
        cdef const int64_t[::1] v = self._ids(ids)
        out = np.empty(v.shape[0], dtype=np.uint64)
        cdef uint64_t[::1] o = out
        cdef Py_ssize_t k
        cdef uint64_t x
        with nogil:
            for k in range(v.shape[0]):
                x = earliest(&self.c, v[k])
                o[k] = x if x == NO_DEADLINE else deadline(&self.c, x)
        return out


def plain_timer_loop(records, ids, counter, voffset):
    """The baseline of the batch benchmark: one plain C loop per step over
    the same records doing the record work of save_batch, restore_batch and
    expiry_batch (the vtimer's CTL - with ISTATUS - and CVAL out of the
    hardware fields and back, the loaded flags and access counts, and the
    earliest expiry of the two timers as a counter deadline), with no model
    around it: no per-vCPU functions, no policy or state tests."""
    if isinstance(records, np.ndarray):
        records = np.asarray(records)       # the real array: a subclass cannot fake its flags
    if (not isinstance(records, np.ndarray) or records.dtype != gtimer.TIMER_VCPU or records.ndim != 1
            or not records.flags.c_contiguous):
        raise TypeError("records must be a 1-D C-contiguous array of vgic.gtimer.TIMER_VCPU")
    if not records.flags.writeable:
        raise ValueError("records is read-only")
    cdef uint64_t cnt = int_arg(counter, "counter", 0, U64MAX)
    cdef uint64_t voff = int_arg(voffset, "voffset", 0, U64MAX)
    cdef const int64_t[::1] v = vcpu_indices(ids, records.shape[0])
    cdef TimerVcpu *r = <TimerVcpu *><size_t>records.ctypes.data
    out = np.empty(v.shape[0], dtype=np.uint64)
    cdef uint64_t[::1] o = out
    cdef Py_ssize_t k
    cdef TimerVcpu *x
    cdef uint64_t now_v = cnt - voff, best, d
    with nogil:
        for k in range(v.shape[0]):
            x = &r[v[k]]
            x.cntv_ctl = x.hw_cntv_ctl | (CTL_ISTATUS if (x.hw_cntv_ctl & CTL_ENABLE)
                                          and cnt - x.hw_cntvoff >= x.hw_cntv_cval else 0)
            x.cntv_cval = x.hw_cntv_cval
            x.hw_cntv_ctl = 0
            x.hw_cntvoff = 0
            x.sysreg_reads += 2
            x.sysreg_writes += 2
            x.loaded = 0
        for k in range(v.shape[0]):
            x = &r[v[k]]
            x.hw_cntvoff = voff
            x.hw_cntv_cval = x.cntv_cval
            x.hw_cntv_ctl = x.cntv_ctl & (CTL_ENABLE | CTL_IMASK)
            x.sysreg_writes += 3
            x.loaded = 1
        for k in range(v.shape[0]):
            x = &r[v[k]]
            best = NO_DEADLINE
            if (x.cntv_ctl & (CTL_ENABLE | CTL_IMASK)) == CTL_ENABLE:
                best = x.cntv_cval - now_v if x.cntv_cval > now_v else 0
            if (x.cntp_ctl & (CTL_ENABLE | CTL_IMASK)) == CTL_ENABLE:
                d = x.cntp_cval - cnt if x.cntp_cval > cnt else 0
                best = d if d < best else best
            o[k] = best if best == NO_DEADLINE else (U64MAX if best > U64MAX - cnt else cnt + best)
    return out
