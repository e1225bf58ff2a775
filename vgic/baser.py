"""KVM's sanitising of the GIC's table-base registers, written once.

GICR_PROPBASER, GICR_PENDBASER, GITS_CBASER and GITS_BASER<n> carry the same
three memory-attribute fields at different places; KVM fixes them up the
same way on every write (vgic-mmio-v3.c / vgic-its.c ``vgic_sanitise_*``;
kvm-facts §5.6, its-facts-A §1.3): an outer-shareable table becomes
inner-shareable, an inner non-cacheable one (nC or nCnB) write-back
read-allocate, and outer attributes other than non-cacheable or
same-as-inner become same-as-inner.  The core's C form is
``_core/vgic_redist.pxd sanitise_cache_share``.
"""
from __future__ import annotations

from vgic import regmap


def sanitise_cache_share(reg: int, inner_shift: int, outer_shift: int, share_shift: int) -> int:
    """``reg`` with its shareability (at ``share_shift``) and inner/outer
    cacheability fields sanitised as KVM does."""
    sh = (reg >> share_shift) & regmap.BASER_SHAREABILITY_MASK
    ic = (reg >> inner_shift) & regmap.BASER_CACHE_MASK
    oc = (reg >> outer_shift) & regmap.BASER_CACHE_MASK
    if sh == regmap.GIC_BASER_OUTER_SHAREABLE:
        sh = regmap.GIC_BASER_INNER_SHAREABLE
    if ic in (regmap.GIC_BASER_CACHE_NCNB, regmap.GIC_BASER_CACHE_NC):
        ic = regmap.GIC_BASER_CACHE_RAWB
    if oc not in (regmap.GIC_BASER_CACHE_SAME_AS_INNER, regmap.GIC_BASER_CACHE_NC):
        oc = regmap.GIC_BASER_CACHE_SAME_AS_INNER
    m, c = regmap.BASER_SHAREABILITY_MASK, regmap.BASER_CACHE_MASK
    reg = (reg & ~(m << share_shift)) | (sh << share_shift)
    reg = (reg & ~(c << inner_shift)) | (ic << inner_shift)
    return (reg & ~(c << outer_shift)) | (oc << outer_shift)


def sanitise_baser(reg: int, res0: int) -> int:
    """GICR_PROPBASER / GICR_PENDBASER as KVM stores a write: the fields
    sanitised, then the RES0 bits ``res0`` cleared."""
    return sanitise_cache_share(reg, regmap.BASER_INNER_CACHE_SHIFT, regmap.BASER_OUTER_CACHE_SHIFT,
                                regmap.BASER_SHAREABILITY_SHIFT) & ~res0
