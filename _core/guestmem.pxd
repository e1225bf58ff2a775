# Guest RAM as the kernels see it: one contiguous host buffer standing for
# the guest-physical range [gpa, gpa + size).  Every access is checked
# against that range first: a guest-supplied address (a table base, an ITT,
# the command queue) outside RAM is a failed access the caller turns into
# what KVM does (a skipped command, -EFAULT), never a host access outside
# the buffer.  Entries are little-endian (the KVM ITS ABI); the package
# refuses to import on a big-endian host (vgic/_core/__init__.py).
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy


cdef struct GuestMem:
    uint8_t *base       # NULL: no RAM attached (every access fails)
    uint64_t gpa        # the guest-physical address of base[0]
    uint64_t size


cdef inline bint gm_ok(const GuestMem *m, uint64_t gpa, uint64_t n) noexcept nogil:
    # [gpa, gpa + n) lies inside RAM (no overflow in the test).
    return (m.base != NULL and gpa >= m.gpa and n <= m.size
            and gpa - m.gpa <= m.size - n)


cdef inline uint8_t *gm_at(const GuestMem *m, uint64_t gpa) noexcept nogil:
    # (only after gm_ok)
    return m.base + (gpa - m.gpa)


cdef inline int gm_read64(const GuestMem *m, uint64_t gpa, uint64_t *out) noexcept nogil:
    # 0, or -1 when the 8 bytes are not all guest RAM.
    if not gm_ok(m, gpa, 8):
        return -1
    memcpy(out, gm_at(m, gpa), 8)
    return 0


cdef inline int gm_write64(const GuestMem *m, uint64_t gpa, uint64_t value) noexcept nogil:
    if not gm_ok(m, gpa, 8):
        return -1
    memcpy(gm_at(m, gpa), &value, 8)
    return 0


cdef inline int gm_read8(const GuestMem *m, uint64_t gpa, uint8_t *out) noexcept nogil:
    if not gm_ok(m, gpa, 1):
        return -1
    out[0] = gm_at(m, gpa)[0]
    return 0


cdef inline int gm_write8(const GuestMem *m, uint64_t gpa, uint8_t value) noexcept nogil:
    if not gm_ok(m, gpa, 1):
        return -1
    gm_at(m, gpa)[0] = value
    return 0
