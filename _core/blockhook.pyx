# cython: language_level=3
"""The translation-block hook of ``vgic.run`` in C (and a thin C entry for
its MRS/MSR hook, ``SysHook``).

Unicorn calls a block hook at the start of every translation block the
guest executes.  The VMM's (``vgic.run._Cpu._on_block``) counts the
block's instructions, and now and then has more to do: move the counter
every ``quantum`` instructions, end a slice, take a signalled interrupt,
give up a turn in a spin-wait.  Through Python that hook costs more than
the block itself (about 0.5 us a block); this one does the common case -
count and go on - in C without the GIL, and calls the Python hook only when
there is more to do:

* the instruction count reached ``check_at`` (a time sync or the slice's end);
* ``irq`` is set (the CPU interface signals an interrupt) and PSTATE does
  not mask it (``irq_mask``, read through libunicorn's ``uc_reg_read`` once
  ``read_pstate_with_unicorn`` was called; before, the Python hook decides);
* ``may_yield`` is set and the block holds YIELD or WFE (a spin-wait), read
  straight from the guest RAM it is given (the same test as the Python
  hook's, on the same bytes), for the second time this slice (``spins``:
  the first one it counts itself, as the Python hook would).

When it calls the Python hook, that hook does everything itself, counting
included, exactly as without this one: the C side only ever skips calls that
would have counted and returned.  The Python hook is the reference and the
fallback (``Machine(block_hook="python")``, or no compiled core).
"""
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from libc.string cimport memcpy
from cpython.ref cimport PyObject

from vgic._core.args cimport int_arg

# YIELD and WFE (Arm ARM C6.2), the hints of a spin-wait.
cdef uint32_t INSN_YIELD = 0xD503203F
cdef uint32_t INSN_WFE = 0xD503205F


ctypedef int (*reg_read_t)(void *uc, int regid, void *value) noexcept nogil


cdef struct State:
    int64_t insns
    int64_t check_at
    uint64_t blk_start
    uint64_t blk_end
    int irq
    # PSTATE's mask bit of what is signalled (I for an IRQ, F for a FIQ),
    # and libunicorn's uc_reg_read to read PSTATE with (NULL: not known).
    uint32_t irq_mask
    reg_read_t reg_read
    int pstate_id
    int may_yield
    int64_t spins
    # Guest RAM (guest-physical [ram_base, ram_base + ram_size)) for the
    # spin-wait test; code outside it is never a spin-wait here.
    const uint8_t *ram
    uint64_t ram_base
    uint64_t ram_size
    PyObject *owner


cdef bint holds_hint(const State *s, uint64_t addr, uint32_t size) noexcept nogil:
    cdef uint64_t off, end
    cdef uint32_t word
    if s.ram == NULL or addr < s.ram_base:
        return False
    off = addr - s.ram_base
    end = off + size
    if end > s.ram_size or end < off:
        return False
    while off + 4 <= end:
        memcpy(&word, s.ram + off, 4)        # little-endian host, as the guest
        if word == INSN_YIELD or word == INSN_WFE:
            return True
        off += 4
    return False


cdef void _stop(object stop) noexcept:
    # The emulation ends at the next block: the VMM then raises the error.
    if stop is not None:
        try:
            stop()
        except BaseException:
            pass


cdef bint masked(const State *s, void *uc) noexcept nogil:
    # Whether PSTATE masks what the CPU interface signals (then the Python
    # hook would only find that out and go on).
    cdef uint64_t pstate = 0
    if s.reg_read == NULL or s.irq_mask == 0:
        return False
    if s.reg_read(uc, s.pstate_id, &pstate) != 0:
        return False
    return (<uint32_t>pstate & s.irq_mask) != 0


cdef void on_block(void *uc, uint64_t addr, uint32_t size, void *user) noexcept nogil:
    cdef State *s = <State *>user
    cdef bint spin = s.may_yield and holds_hint(s, addr, size)
    if s.insns >= s.check_at or (s.irq and not masked(s, uc)) or (spin and s.spins >= 1):
        with gil:
            (<BlockHook><object>s.owner)._call(addr, size)
        return
    if spin:
        s.spins += 1        # the first spin-wait block of the slice runs (the Python hook's rule)
    s.insns += size >> 2
    s.blk_start = addr
    s.blk_end = addr + size


cdef class BlockHook:
    """The C block hook of one vCPU and the counters it shares with the
    Python hook ``callback(addr, size)``.  ``ram`` is the guest RAM (a
    writable or read-only buffer, kept alive) at guest-physical ``ram_base``;
    ``stop`` (Unicorn's ``emu_stop``) is called when the callback raises."""
    cdef State s
    cdef object callback
    cdef object stop
    cdef object _ram
    cdef const uint8_t[::1] _view
    #: The first exception the Python hook raised (ctypes would drop it).
    cdef public object error

    def __init__(self, callback, ram, ram_base, stop=None):
        if not callable(callback):
            raise TypeError("callback must be callable")
        self.callback = callback
        self.stop = stop
        self._ram = ram
        self._view = memoryview(ram).cast("B")
        self.s.ram = &self._view[0] if self._view.shape[0] else NULL
        self.s.ram_size = <uint64_t>self._view.shape[0]
        self.s.ram_base = int_arg(ram_base, "ram_base", 0, 0xFFFFFFFFFFFFFFFF)
        self.s.owner = <PyObject *>self
        self.s.check_at = 0
        self.error = None

    cdef void _call(self, uint64_t addr, uint32_t size) noexcept:
        try:
            self.callback(addr, size)
        except BaseException as exc:        # re-raised by the VMM after emu_start
            if self.error is None:
                self.error = exc
            _stop(self.stop)

    @property
    def function(self):
        """The C function's address: a ``uc_cb_hookcode_t`` for uc_hook_add."""
        return <size_t>&on_block

    @property
    def user_data(self):
        """The address to give uc_hook_add as user_data (this object's state;
        keep the object alive while the hook exists)."""
        return <size_t>&self.s

    @property
    def insns(self):
        return self.s.insns

    @insns.setter
    def insns(self, value):
        self.s.insns = value

    @property
    def check_at(self):
        return self.s.check_at

    @check_at.setter
    def check_at(self, value):
        self.s.check_at = value

    @property
    def blk_start(self):
        return self.s.blk_start

    @blk_start.setter
    def blk_start(self, value):
        self.s.blk_start = value

    @property
    def blk_end(self):
        return self.s.blk_end

    @blk_end.setter
    def blk_end(self, value):
        self.s.blk_end = value

    @property
    def irq(self):
        return bool(self.s.irq)

    @irq.setter
    def irq(self, value):
        self.s.irq = 1 if value else 0

    @property
    def irq_mask(self):
        return self.s.irq_mask

    @irq_mask.setter
    def irq_mask(self, value):
        self.s.irq_mask = <uint32_t>int_arg(value, "irq_mask", 0, 0xFFFFFFFF)

    def read_pstate_with_unicorn(self):
        """Let the C hook read PSTATE itself, through the installed Unicorn's
        ``uc_reg_read`` and its UC_ARM64_REG_PSTATE (both taken from the
        unicorn package here, never from an argument: a wrong function or
        register id would write outside the 8-byte value it reads into)."""
        import ctypes
        from unicorn import arm64_const
        from unicorn.unicorn_py3 import unicorn as binding
        address = ctypes.cast(binding.uclib.uc_reg_read, ctypes.c_void_p).value
        if not address:
            raise ValueError("libunicorn has no uc_reg_read")
        self.s.pstate_id = <int>arm64_const.UC_ARM64_REG_PSTATE
        self.s.reg_read = <reg_read_t><size_t>address

    @property
    def spins(self):
        return self.s.spins

    @spins.setter
    def spins(self, value):
        self.s.spins = value

    @property
    def may_yield(self):
        return bool(self.s.may_yield)

    @may_yield.setter
    def may_yield(self, value):
        self.s.may_yield = 1 if value else 0

    def holds_hint(self, addr, size):
        """The C spin-wait test on the block at ``addr`` of ``size`` bytes."""
        return holds_hint(&self.s, int_arg(addr, "addr", 0, 0xFFFFFFFFFFFFFFFF),
                          int_arg(size, "size", 0, 0xFFFFFFFF))


# ------------------------------------------------------------ MRS/MSR hook
# libunicorn's uc_arm64_cp_reg (include/unicorn/arm64.h).
cdef struct CpReg:
    uint32_t crn
    uint32_t crm
    uint32_t op0
    uint32_t op1
    uint32_t op2
    uint64_t val


cdef uint32_t on_sys(void *uc, uint32_t reg, const CpReg *cp, void *user) noexcept nogil:
    with gil:
        return (<SysHook><object>user)._call(reg, cp)


cdef class SysHook:
    """A UC_HOOK_INSN hook for MRS (``read``) or MSR: calls
    ``callback(rt, (op0, op1, crn, crm, op2), value, read)`` and returns its
    truth to Unicorn (True: the instruction was handled), without the
    binding's two Python wrappers and its ctypes structure per call."""
    cdef object callback
    cdef object stop
    cdef bint read
    #: The first exception the callback raised (the instruction is then
    #: left to Unicorn; the VMM re-raises it after emu_start).
    cdef public object error

    def __init__(self, callback, read, stop=None):
        if not callable(callback):
            raise TypeError("callback must be callable")
        self.callback = callback
        self.stop = stop
        self.read = bool(read)
        self.error = None

    cdef uint32_t _call(self, uint32_t reg, const CpReg *cp) noexcept:
        try:
            return 1 if self.callback(reg, (cp.op0, cp.op1, cp.crn, cp.crm, cp.op2), cp.val, self.read) else 0
        except BaseException as exc:
            if self.error is None:
                self.error = exc
            _stop(self.stop)
            return 0

    @property
    def function(self):
        """The C function's address: a ``uc_cb_insn_sys_t`` for uc_hook_add."""
        return <size_t>&on_sys

    @property
    def user_data(self):
        """The address to give uc_hook_add as user_data: this object (keep
        it alive while the hook exists)."""
        return <size_t><PyObject *>self
