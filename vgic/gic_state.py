"""The named state of the vGICv3 distributor and redistributors.

Both implementations of :class:`Gic` (``vgic._core.gic`` and
``vgic._pure.gic``) describe their state with the same :class:`GicArrays`
(one numpy array per per-IRQ field, plus the scalar registers) and turn it
into the same dictionary with :func:`to_dict`; :func:`from_dict` checks a
dictionary against what the model can hold and returns the arrays a
``load_state`` applies.  The layout (``vm.gic.state()`` nests it):

``GICD_CTLR``, ``GICD_IIDR``, ``GICR_PROPBASER``
    the registers as a guest reads them (EnableGrp1 with ARE and DS; the
    implementation revision; the shared LPI property table base).
``seq_counter``
    the model's last queue stamp (see :mod:`vgic.vgic_v3`).
``spi``
    per-IRQ fields of INTIDs 32 .. nr_irqs-1, each a list in INTID order,
    named as KVM's ``struct vgic_irq`` names them: ``enabled``,
    ``pending_latch``, ``line_level``, ``active`` (bools), ``group`` (0 or 1),
    ``config`` (``"edge"`` or ``"level"``), ``priority``, ``mpidr`` (the
    GICD_IROUTER affinity), ``target_vcpu`` (the vCPU it resolves to, -1 for
    none) and ``seq`` (the model's stamp of when it last became deliverable).
``lpi``
    the LPIs that exist (KVM allocates a ``struct vgic_irq`` for an LPI an
    ITE maps), each field a list in INTID order: ``intid``, ``enabled``,
    ``pending_latch``, ``active`` (bools), ``priority`` (the configuration
    byte's 0xFC bits), ``target_vcpu``, ``seq``, and ``ite_count`` (the ITEs
    mapping it: KVM's references but the ap_list's).  LPIs are Group 1 and
    edge-triggered, always.  Empty without an ITS.
``vcpus``
    one dict per vCPU: ``GICR_CTLR`` (as read), ``GICR_PENDBASER`` (as
    stored: a read shows PTZ as 0) and ``private``, the fields above (but
    ``mpidr`` and ``target_vcpu``) of its INTIDs 0..31.

Sources: kvm-facts §1.2-§1.6 (registers, reset values), §3.1 (struct
vgic_irq).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vgic import regmap
from vgic.baser import sanitise_baser
from vgic.errors import StateError
from vgic.ich import U64
from vgic.topology import MpidrIndex

FLAG_FIELDS = ("enabled", "pending_latch", "line_level", "active")
#: Per-IRQ fields of every interrupt, in the order the dictionaries list them.
IRQ_FIELDS = (*FLAG_FIELDS, "group", "config", "priority", "seq")
#: Fields only SPIs have (routing).
SPI_FIELDS = ("mpidr", "target_vcpu")
#: Fields of an LPI (KVM: LPIs are Group 1, edge, with no line and no routing register).
LPI_FIELDS = ("intid", "enabled", "pending_latch", "active", "priority", "target_vcpu", "seq", "ite_count")
_DTYPES = {"enabled": np.bool_, "pending_latch": np.bool_, "line_level": np.bool_, "active": np.bool_,
           "group": np.uint8, "edge": np.bool_, "priority": np.uint8, "seq": np.uint64,
           "mpidr": np.uint32, "target_vcpu": np.int32, "intid": np.uint32, "ite_count": np.uint32}
GICD_CTLR_FIXED = regmap.GICD_CTLR_ARE | regmap.GICD_CTLR_DS
GICR_CTLR_REV3 = regmap.GICR_CTLR_CES | regmap.GICR_CTLR_IR


@dataclass
class GicArrays:
    """The distributor and redistributor state as arrays.

    ``spi[field]`` has ``nr_irqs - 32`` entries (INTID 32 first) and
    ``private[field]`` shape ``(nr_vcpus, 32)``; flag fields are bool
    arrays, ``edge`` stands for ``config`` (True for edge-triggered)."""

    dist_enabled: int
    implementation_rev: int
    propbaser: int
    seq_counter: int
    gicr_ctlr: np.ndarray       # uint32[nr_vcpus], EnableLPIs as stored
    pendbaser: np.ndarray       # uint64[nr_vcpus]
    spi: dict[str, np.ndarray]
    private: dict[str, np.ndarray]
    lpi: dict[str, np.ndarray] = field(default_factory=lambda: empty_lpis())


def empty_lpis() -> dict[str, np.ndarray]:
    """The ``lpi`` arrays of a state without LPIs."""
    return {name: np.zeros(0, dtype=_DTYPES[name]) for name in LPI_FIELDS}


def gicd_iidr(rev: int) -> int:
    """GICD_IIDR with implementation revision ``rev`` (kvm-facts §1.3)."""
    return ((regmap.PRODUCT_ID_KVM << regmap.IIDR_PRODUCT_ID_SHIFT)
            | (rev << regmap.IIDR_REVISION_SHIFT) | regmap.IMPLEMENTER_ARM)


def gicr_ctlr_read(stored: int, rev: int) -> int:
    """GICR_CTLR as read: the stored EnableLPIs, with CES and IR from revision 3 on (kvm-facts §1.5)."""
    return stored | (GICR_CTLR_REV3 if rev >= regmap.KVM_VGIC_IMP_REV_3 else 0)


def _irq_dict(fields: dict[str, np.ndarray], index: Any, names: tuple[str, ...]) -> dict[str, list]:
    out: dict[str, list] = {}
    for name in names:
        if name == "config":
            out[name] = ["edge" if e else "level" for e in fields["edge"][index].tolist()]
        elif name in FLAG_FIELDS:
            out[name] = [bool(x) for x in fields[name][index].tolist()]
        else:
            out[name] = [int(x) for x in fields[name][index].tolist()]
    return out


def to_dict(a: GicArrays) -> dict[str, Any]:
    """The named-state dictionary of ``a`` (layout in the module docstring)."""
    rev = int(a.implementation_rev)
    return {
        "GICD_CTLR": GICD_CTLR_FIXED | (regmap.GICD_CTLR_ENABLE_G1 if a.dist_enabled else 0),
        "GICD_IIDR": gicd_iidr(rev),
        "GICR_PROPBASER": int(a.propbaser),
        "seq_counter": int(a.seq_counter),
        "spi": _irq_dict(a.spi, slice(None), IRQ_FIELDS + SPI_FIELDS),
        "lpi": _irq_dict(a.lpi, slice(None), LPI_FIELDS),
        "vcpus": [
            {"GICR_CTLR": gicr_ctlr_read(int(a.gicr_ctlr[v]), rev),
             "GICR_PENDBASER": int(a.pendbaser[v]),
             "private": _irq_dict(a.private, v, IRQ_FIELDS)}
            for v in range(len(a.gicr_ctlr))
        ],
    }


# --------------------------------------------------------------------- parsing
def _fail(where: str, why: str) -> StateError:
    return StateError(f"{where}: {why}")


def _int(where: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise _fail(where, f"expected an integer, got {type(value).__name__}")
    value = int(value)
    if not lo <= value <= hi:
        raise _fail(where, f"{value:#x} is outside {lo:#x}..{hi:#x}")
    return value


def _keys(where: str, d: Any, keys: tuple[str, ...]) -> None:
    if not isinstance(d, dict):
        raise _fail(where, f"expected a dict, got {type(d).__name__}")
    if set(d) != set(keys):
        # repr: the keys may be of any (mixed, unorderable) types.
        missing, extra = sorted(set(keys) - set(d)), sorted(map(repr, set(d) - set(keys)))
        raise _fail(where, f"missing {missing}, unexpected {extra}")


def _list(where: str, value: Any, n: int | None = None) -> list:
    if not isinstance(value, (list, tuple)):
        raise _fail(where, f"expected a list, got {type(value).__name__}")
    if n is not None and len(value) != n:
        raise _fail(where, f"expected {n} entries, got {len(value)}")
    return list(value)


def _field(where: str, name: str, values: list) -> np.ndarray:
    if name in FLAG_FIELDS:
        for i, x in enumerate(values):
            if not (isinstance(x, (bool, np.bool_)) or (isinstance(x, (int, np.integer)) and x in (0, 1))):
                raise _fail(f"{where}[{i}]", f"expected a bool, got {x!r}")
        return np.array([bool(x) for x in values], dtype=np.bool_)
    if name == "config":
        for i, x in enumerate(values):
            if not isinstance(x, str) or x not in ("edge", "level"):
                raise _fail(f"{where}[{i}]", f"expected 'edge' or 'level', got {x!r}")
        return np.array([x == "edge" for x in values], dtype=np.bool_)
    limits = {"group": (0, 1), "priority": (0, 0xFF), "seq": (0, U64),
              "mpidr": (0, regmap.IROUTER_AFF_MASK), "target_vcpu": (-1, regmap.MAX_VCPUS - 1),
              "intid": (0, 0xFFFFFFFF), "ite_count": (0, 0xFFFFFFFF)}
    lo, hi = limits[name]
    return np.array([_int(f"{where}[{i}]", x, lo, hi) for i, x in enumerate(values)], dtype=_DTYPES[name])


def _irqs(where: str, d: Any, n: int, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    _keys(where, d, names)
    out = {}
    for name in names:
        arr = _field(f"{where}.{name}", name, _list(f"{where}.{name}", d[name], n))
        out["edge" if name == "config" else name] = arr
    pri = out["priority"]
    bad = np.flatnonzero(pri & ~np.uint8(regmap.PRIORITY_MASK))
    if bad.size:
        raise _fail(f"{where}.priority[{bad[0]}]", f"{int(pri[bad[0]]):#x} has bits below the 5 KVM implements "
                    f"(mask {regmap.PRIORITY_MASK:#x})")
    return out


def _lpis(where: str, d: Any, nr_lpis: int, nr_vcpus: int) -> dict[str, np.ndarray]:
    _keys(where, d, LPI_FIELDS)
    ids = d["intid"]
    n = len(ids) if isinstance(ids, (list, tuple)) else -1
    out = {name: _field(f"{where}.{name}", name, _list(f"{where}.{name}", d[name], n)) for name in LPI_FIELDS}
    intid = out["intid"].astype(np.int64)
    if n and nr_lpis == 0:
        raise _fail(f"{where}.intid", "this VM has no ITS, hence no LPIs")
    bad = np.flatnonzero((intid < regmap.LPI_BASE) | (intid >= regmap.LPI_BASE + nr_lpis))
    if bad.size:
        raise _fail(f"{where}.intid[{bad[0]}]", f"{intid[bad[0]]} is not an LPI INTID "
                    f"({regmap.LPI_BASE}..{regmap.LPI_BASE + nr_lpis - 1})")
    if n > 1 and not (np.diff(intid) > 0).all():
        raise _fail(f"{where}.intid", "the INTIDs are not in increasing order")
    bad = np.flatnonzero(out["priority"] & 3)
    if bad.size:
        raise _fail(f"{where}.priority[{bad[0]}]", f"{int(out['priority'][bad[0]]):#x}: KVM keeps the "
                    "configuration byte's priority bits 7:2 only")
    bad = np.flatnonzero(out["target_vcpu"] >= nr_vcpus)
    if bad.size:
        raise _fail(f"{where}.target_vcpu[{bad[0]}]", f"{int(out['target_vcpu'][bad[0]])} is not a vCPU")
    return out


def from_dict(d: Any, nr_vcpus: int, nr_irqs: int, mpidrs: MpidrIndex, where: str = "vgic_v3",
              nr_lpis: int = 0) -> GicArrays:
    """Check ``d`` against what the model can hold for this geometry and
    return it as arrays; :class:`StateError` names the first bad field.
    Nothing is changed anywhere: a ``load_state`` applies the result."""

    _keys(where, d, ("GICD_CTLR", "GICD_IIDR", "GICR_PROPBASER", "seq_counter", "spi", "lpi", "vcpus"))
    ctlr = _int(f"{where}.GICD_CTLR", d["GICD_CTLR"], 0, 0xFFFFFFFF)
    if ctlr & ~regmap.GICD_CTLR_ENABLE_G1 != GICD_CTLR_FIXED:
        raise _fail(f"{where}.GICD_CTLR", f"{ctlr:#x} is not ARE|DS with or without EnableGrp1")
    iidr = _int(f"{where}.GICD_IIDR", d["GICD_IIDR"], 0, 0xFFFFFFFF)
    rev = (iidr & regmap.IIDR_REVISION_MASK) >> regmap.IIDR_REVISION_SHIFT
    if rev not in (regmap.KVM_VGIC_IMP_REV_2, regmap.KVM_VGIC_IMP_REV_3) or iidr != gicd_iidr(rev):
        raise _fail(f"{where}.GICD_IIDR", f"{iidr:#x} is not KVM's IIDR with revision 2 or 3")
    propbaser = _int(f"{where}.GICR_PROPBASER", d["GICR_PROPBASER"], 0, U64)
    if propbaser and sanitise_baser(propbaser, regmap.PROPBASER_RES0) != propbaser:
        # (0, the reset value, is the one unsanitised value it can hold)
        raise _fail(f"{where}.GICR_PROPBASER", f"{propbaser:#x} is not a value KVM's sanitising keeps")
    seq_counter = _int(f"{where}.seq_counter", d["seq_counter"], 0, U64)

    spi = _irqs(f"{where}.spi", d["spi"], nr_irqs - regmap.NR_PRIVATE_IRQS, IRQ_FIELDS + SPI_FIELDS)
    for k, (route, target) in enumerate(zip(spi["mpidr"].tolist(), spi["target_vcpu"].tolist())):
        if mpidrs.vcpu(route) != target:
            raise _fail(f"{where}.spi.target_vcpu[{k}]", f"{target} but GICD_IROUTER affinity {route:#x} "
                        f"resolves to {mpidrs.vcpu(route)}")

    vcpus = _list(f"{where}.vcpus", d["vcpus"], nr_vcpus)
    gicr_ctlr = np.zeros(nr_vcpus, dtype=np.uint32)
    pendbaser = np.zeros(nr_vcpus, dtype=np.uint64)
    private: dict[str, list[np.ndarray]] = {}
    ces_ir = GICR_CTLR_REV3 if rev >= regmap.KVM_VGIC_IMP_REV_3 else 0
    reset_edge = np.arange(regmap.NR_PRIVATE_IRQS) < regmap.NR_SGIS
    for v, vd in enumerate(vcpus):
        w = f"{where}.vcpus[{v}]"
        _keys(w, vd, ("GICR_CTLR", "GICR_PENDBASER", "private"))
        c = _int(f"{w}.GICR_CTLR", vd["GICR_CTLR"], 0, 0xFFFFFFFF)
        if c & GICR_CTLR_REV3 != ces_ir or c & ~GICR_CTLR_REV3 not in (0, regmap.GICR_CTLR_ENABLE_LPIS):
            raise _fail(f"{w}.GICR_CTLR", f"{c:#x} is not EnableLPIs with CES|IR as revision {rev} reports them")
        gicr_ctlr[v] = c & ~GICR_CTLR_REV3
        pb = _int(f"{w}.GICR_PENDBASER", vd["GICR_PENDBASER"], 0, U64)
        if pb and sanitise_baser(pb, regmap.PENDBASER_RES0) != pb:
            raise _fail(f"{w}.GICR_PENDBASER", f"{pb:#x} is not a value KVM's sanitising keeps")
        pendbaser[v] = pb
        p = _irqs(f"{w}.private", vd["private"], regmap.NR_PRIVATE_IRQS, IRQ_FIELDS)
        # SGIs are edge and PPIs level, fixed (GICR_ICFGR0/1 are read-only
        # in KVM, kvm-facts §1.6); SGIs have no input line.
        if (p["edge"] != reset_edge).any():
            k = int(np.argmax(p["edge"] != reset_edge))
            raise _fail(f"{w}.private.config[{k}]", "SGIs are edge and PPIs level in KVM's GICv3")
        if p["line_level"][:regmap.NR_SGIS].any():
            k = int(np.argmax(p["line_level"][:regmap.NR_SGIS]))
            raise _fail(f"{w}.private.line_level[{k}]", "an SGI has no input line")
        for name, arr in p.items():
            private.setdefault(name, []).append(arr)
    priv = {name: np.stack(rows) for name, rows in private.items()}
    lpi = _lpis(f"{where}.lpi", d["lpi"], nr_lpis, nr_vcpus)
    for name, arrs in (("spi", spi), ("private", priv), ("lpi", lpi)):
        high = arrs["seq"] > np.uint64(seq_counter)
        if high.any():
            raise _fail(f"{where}.{name}.seq", f"a stamp exceeds seq_counter {seq_counter}")
    return GicArrays(int(bool(ctlr & regmap.GICD_CTLR_ENABLE_G1)), rev, propbaser, seq_counter,
                     gicr_ctlr, pendbaser, spi, priv, lpi)


def check_ap_lists(d: Any, nr_vcpus: int, nr_irqs: int, lpis: Any = (),
                   where: str = "vgic_v3") -> tuple[list[list[int]], list[list[int]], int]:
    """Check the ap_lists part of a state: per vCPU, ``ap_list`` (the
    INTIDs queued on it, in list order) and ``in_lr`` (those of them held
    in a list register between entry and exit), and ``active_spis`` (KVM's
    in-flight SPI count).  An INTID is queued at most once VM-wide, a
    private INTID only on its own vCPU's list; an LPI must exist (be in
    ``lpis``).  Returns the lists as plain ints and the count."""
    existing = frozenset(lpis)

    def checked(w: str, x: Any) -> int:
        i = _int(w, x, 0, 0xFFFFFFFF)
        if i >= nr_irqs and i not in existing:
            raise _fail(w, f"{i} is not an INTID of this VM (below nr_irqs {nr_irqs}, or an LPI that exists)")
        return i

    _keys(where, d, ("ap_list", "in_lr", "active_spis"))
    active_spis = _int(f"{where}.active_spis", d["active_spis"], 0, 0xFFFFFFFF)
    lists = _list(f"{where}.ap_list", d["ap_list"], nr_vcpus)
    in_lrs = _list(f"{where}.in_lr", d["in_lr"], nr_vcpus)
    seen_spis: set[int] = set()
    out_lists, out_in_lr = [], []
    for v in range(nr_vcpus):
        w = f"{where}.vcpus[{v}].ap_list"
        row = lists[v]
        if not isinstance(row, (list, tuple)):
            raise _fail(w, f"expected a list, got {type(row).__name__}")
        ids = [checked(f"{w}[{k}]", x) for k, x in enumerate(row)]
        if len(set(ids)) != len(ids):
            raise _fail(w, "an INTID is queued twice")
        for intid in ids:
            if intid >= regmap.NR_PRIVATE_IRQS:
                if intid in seen_spis:
                    raise _fail(w, f"INTID {intid} is queued on two vCPUs")
                seen_spis.add(intid)
        held = in_lrs[v]
        if not isinstance(held, (list, tuple)):
            raise _fail(f"{where}.vcpus[{v}].in_lr", f"expected a list, got {type(held).__name__}")
        held_ids = [checked(f"{where}.vcpus[{v}].in_lr[{k}]", x) for k, x in enumerate(held)]
        if not set(held_ids) <= set(ids) or len(set(held_ids)) != len(held_ids):
            raise _fail(f"{where}.vcpus[{v}].in_lr", "names an INTID that is not on the vCPU's ap_list")
        out_lists.append(ids)
        out_in_lr.append(sorted(held_ids))
    return out_lists, out_in_lr, active_spis


def check_lpis_held(a: GicArrays, ap_lists: list[list[int]], where: str = "vgic_v3.lpi") -> None:
    """Every LPI in ``a`` must be held by something, as KVM frees an LPI
    nothing references: an ITE (``ite_count``), an ap_list, or its way to
    one (active, or pending and enabled while the distributor is enabled,
    towards a vCPU: KVM would have queued it)."""
    queued = {i for row in ap_lists for i in row}
    lpi = a.lpi
    for k, intid in enumerate(lpi["intid"].tolist()):
        # gicstate.pxd lpi_release: the oracle names a vCPU.
        on_its_way = int(lpi["target_vcpu"][k]) >= 0 and (bool(lpi["active"][k]) or (
            bool(lpi["enabled"][k]) and bool(lpi["pending_latch"][k]) and bool(a.dist_enabled)))
        if not (int(lpi["ite_count"][k]) or intid in queued or on_its_way):
            raise _fail(f"{where}.intid[{k}]", f"LPI {intid} is held by no ITE and no ap_list: KVM would have "
                        "freed it")
