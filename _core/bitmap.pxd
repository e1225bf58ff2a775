# Bit-level kernels shared by the register handlers: little-endian value
# extraction and insertion, the 2-bit GICD_ICFGR field (un)packing, and the
# priority byte mask.  Inline, so each handler compiles to straight-line code.
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

cdef inline uint64_t size_mask(int size) noexcept nogil:
    # All-ones in the low `size` bytes for size 1..8, without a branch (the
    # shift count is kept in 0..63 so no size makes it undefined).
    return 0xFFFFFFFFFFFFFFFFULL >> ((64 - 8 * size) & 63)

cdef inline uint64_t extract_bytes(uint64_t data, uint32_t byte_off, int size) noexcept nogil:
    # The bytes of a wider register that an access of `size` at `byte_off` sees
    # (KVM's extract_bytes()).
    return (data >> (byte_off * 8)) & size_mask(size)

cdef inline uint64_t update_64bit_reg(uint64_t reg, uint32_t off, int size, uint64_t val) noexcept nogil:
    # A 32-bit access updates one half of a 64-bit register, selected by
    # address bit 2; a 64-bit access replaces it (KVM's update_64bit_reg()).
    cdef uint32_t lower = (off & 4) * 8
    cdef uint64_t m = size_mask(size) << lower
    return (reg & ~m) | ((val << lower) & m)

cdef inline uint32_t spread16(uint32_t x) noexcept nogil:
    # Bits 0..15 of x to the even bit positions 0, 2, .., 30.
    x &= 0xFFFF
    x = (x | (x << 8)) & 0x00FF00FF
    x = (x | (x << 4)) & 0x0F0F0F0F
    x = (x | (x << 2)) & 0x33333333
    x = (x | (x << 1)) & 0x55555555
    return x

cdef inline uint32_t compact16(uint32_t x) noexcept nogil:
    # The even bit positions of x to bits 0..15 (inverse of spread16).
    x &= 0x55555555
    x = (x | (x >> 1)) & 0x33333333
    x = (x | (x >> 2)) & 0x0F0F0F0F
    x = (x | (x >> 4)) & 0x00FF00FF
    x = (x | (x >> 8)) & 0x0000FFFF
    return x

cdef inline uint32_t icfgr_from_edge(uint32_t edge16) noexcept nogil:
    # GICD_ICFGR reads Int_config[1] = 1 for edge, Int_config[0] = 0 (RES0).
    return spread16(edge16) << 1

cdef inline uint32_t edge_from_icfgr(uint32_t icfgr) noexcept nogil:
    return compact16(icfgr >> 1)

cdef inline uint64_t read_bytes(const uint8_t *src, int size) noexcept nogil:
    # Little-endian load of `size` bytes (hosts are little-endian: checked at
    # import).  One fixed 8-byte load and a mask, no size-dependent branch:
    # the array behind `src` is padded by 8 bytes.
    cdef uint64_t v
    memcpy(&v, src, 8)
    return v & size_mask(size)

cdef inline void write_priority(uint8_t *dst, int size, uint64_t val, uint8_t mask) noexcept nogil:
    # Each byte keeps only the implemented priority bits (KVM: VGIC_PRI_BITS
    # = 5); read-modify-write of 8 padded bytes, as read_bytes.
    cdef uint64_t lanes = 0x0101010101010101ULL * mask
    cdef uint64_t m = size_mask(size)
    cdef uint64_t old
    memcpy(&old, dst, 8)
    old = (old & ~m) | (val & lanes & m)
    memcpy(dst, &old, 8)
