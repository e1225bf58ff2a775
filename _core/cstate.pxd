# The contract between the MMIO framework (mmio.pyx) and the parts of a VM
# whose frames it dispatches: the handler signatures, a part's table of
# handler families, and CState, the base class of every part's C state.
from libc.stdint cimport uint8_t, uint32_t, uint64_t

# One signature for every guest handler, read or write (a read ignores
# `val`, a write returns 0), so dispatch is a single indirect call indexed by
# the access direction.  `ctx` is the owning part's C state (CState.ctx).
ctypedef uint64_t (*access_fn)(void *ctx, int vcpu, uint32_t off, uint32_t intid,
                               int size, uint64_t val) noexcept nogil
# A userspace (device-attribute) write: 0 or a negative errno.
ctypedef int (*uwrite_fn)(void *ctx, int vcpu, uint32_t off, uint32_t intid,
                          int size, uint64_t val) noexcept nogil

# One handler family (the "ops" of vgic.regmap rows).  uread NULL: userspace
# reads as the guest does; uwrite NULL: userspace writes as the guest does
# and succeeds (KVM's rule when a region has no uaccess handlers).
cdef struct OpsRow:
    const char *name
    access_fn read
    access_fn write
    access_fn uread
    uwrite_fn uwrite


cdef class CState:
    # What a part's handlers reach (passed as `ctx`).
    cdef void *ctx
    # The INTIDs the part's per-IRQ regions cover: an access naming one at or
    # above it is RAZ/WI (KVM's check_region).
    cdef uint32_t nr_intids
    # The part's handler families, `nops` rows.
    cdef const OpsRow *ops
    cdef int nops
    # Every mutable byte of the part's state in one buffer, so that it can be
    # saved and restored with one memcpy (replay rollback, snapshots).
    cdef uint8_t *buf
    cdef Py_ssize_t buf_len
    # True when part of the state lives outside `buf` (allocated tables,
    # ap_lists, guest memory written by a handler): the bus then never
    # relies on copying `buf` to undo a replay, it validates first.
    cdef bint opaque
    cdef object _buf
    cdef int _set_buffer(self, object arr) except -1


cdef inline int add_ops(OpsRow *rows, int n, int cap, const char *name, access_fn r, access_fn w,
                        access_fn ur, uwrite_fn uw) except -1:
    # Append one handler family to a part's table of `cap` rows; the count.
    if n >= cap:
        raise ImportError(f"more than {cap} handler families")
    rows[n].name = name
    rows[n].read = r
    rows[n].write = w
    rows[n].uread = ur
    rows[n].uwrite = uw
    return n + 1
