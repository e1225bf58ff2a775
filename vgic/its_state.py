"""The named state of the emulated ITS (``vm.its.state()``).

Both implementations of :class:`Its` (``vgic._core.its`` and
``vgic._pure.its``) describe their state with the same :class:`ItsArrays`
and turn it into the same dictionary with :func:`to_dict`;
:func:`from_dict` checks a dictionary and returns the arrays a
``load_state`` applies.  The layout:

``GITS_CTLR``, ``GITS_IIDR``, ``GITS_CBASER``, ``GITS_CWRITER``, ``GITS_CREADR``
    as a guest reads them (GITS_CTLR with Quiescent; the IIDR revision is
    the save/restore ABI revision).
``GITS_BASER``
    the eight GITS_BASER<n> (BASER0 the device table, BASER1 the collection
    table, BASER2..7 read 0).
``devices``
    one dict per mapped device, in DeviceID order: ``DeviceID``,
    ``ITT_addr``, ``num_eventid_bits`` (MAPD's Size + 1), and ``ites``, the
    device's interrupt translation entries as columns in EventID order:
    ``EventID``, ``pINTID``, ``ICID`` and ``collection`` (False once MAPC
    V=0 freed the collection the ITE named: KVM's NULL ``ite->collection``).
``collections``
    ``{"ICID", "target"}`` in creation order (KVM's collection list, the
    order SAVE_TABLES writes them): ``target`` is a vCPU id, or 0xFFFFFFFF
    for a collection MAPTI made before any MAPC mapped it.

Sources: its-facts-A §1-§2, its-facts-B §1 (vgic-its.c).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from vgic import regmap
from vgic.baser import sanitise_cache_share
from vgic.gic_state import _fail, _int, _keys, _list
from vgic.ich import U32, U64


class Device(NamedTuple):
    """One mapped device and its ITEs (columns in EventID order)."""

    devid: int
    itt_addr: int
    nbits: int
    event: np.ndarray       # uint32
    lpi: np.ndarray         # uint32
    icid: np.ndarray        # uint16
    has_coll: np.ndarray    # bool


@dataclass
class ItsArrays:
    """The ITS state: registers, devices (in DeviceID order) and
    collections ``(icid, target)`` in creation order."""

    enabled: int
    abi_rev: int
    cbaser: int
    cwriter: int
    creadr: int
    baser: tuple[int, int]
    devices: list[Device]
    collections: list[tuple[int, int]]


def gits_iidr(rev: int) -> int:
    """GITS_IIDR: ProductID 'K', the ABI revision, Implementer Arm (its-facts-A §1.3)."""
    return ((regmap.PRODUCT_ID_KVM << regmap.IIDR_PRODUCT_ID_SHIFT) | (rev << regmap.GITS_IIDR_REV_SHIFT)
            | regmap.IMPLEMENTER_ARM)


def gits_ctlr(enabled: int, cwriter: int, creadr: int) -> int:
    """GITS_CTLR as read: Quiescent while CREADR == CWRITER, and Enabled."""
    return ((regmap.GITS_CTLR_QUIESCENT if cwriter == creadr else 0)
            | (regmap.GITS_CTLR_ENABLED if enabled else 0))


def cmdq_bytes(cbaser: int) -> int:
    """The command queue's size: (CBASER.Size + 1) 4 KiB pages."""
    return ((cbaser & regmap.GITS_CBASER_SIZE_MASK) + 1) << 12


def sanitise_cbaser(reg: int) -> int:
    """KVM's vgic_sanitise_its_cbaser: cacheability and shareability fixed up,
    address bits [15:12] cleared, RES0 bits kept (its-facts-A §1.3)."""
    reg = sanitise_cache_share(reg, regmap.GITS_BASER_INNER_CACHE_SHIFT, regmap.GITS_BASER_OUTER_CACHE_SHIFT,
                       regmap.GITS_BASER_SHAREABILITY_SHIFT)
    return reg & ~0xF000


def sanitise_baser(reg: int, idx: int) -> int:
    """KVM's GITS_BASER write rule (its-facts-A §1.3): Type and Entry_Size
    forced, no indirect collection table, cacheability/shareability fixed
    up, 64 KiB pages."""
    typ = regmap.GITS_BASER_TYPE_DEVICE if idx == 0 else regmap.GITS_BASER_TYPE_COLLECTION
    reg &= ~(regmap.GITS_BASER_TYPE_MASK | regmap.GITS_BASER_ENTRY_SIZE_MASK)
    reg |= (typ << regmap.GITS_BASER_TYPE_SHIFT) | ((regmap.ITS_ESZ - 1) << regmap.GITS_BASER_ENTRY_SIZE_SHIFT)
    if idx == 1:
        reg &= ~regmap.GITS_BASER_INDIRECT
    reg = sanitise_cache_share(reg, regmap.GITS_BASER_INNER_CACHE_SHIFT, regmap.GITS_BASER_OUTER_CACHE_SHIFT,
                       regmap.GITS_BASER_SHAREABILITY_SHIFT)
    return (reg & ~regmap.GITS_BASER_PAGE_SIZE_MASK) | regmap.GITS_BASER_PAGE_SIZE_64K


def u32_array(values: Any, name: str) -> np.ndarray:
    """``values`` as a C-contiguous 1-D uint32 array: integers in 0..2**32-1
    (``TypeError`` for non-integers, ``ValueError`` naming a bad value)."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array")
    if arr.dtype.kind == "O":
        vals = arr.tolist()
        for k, x in enumerate(vals):
            if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
                raise TypeError(f"{name}[{k}] = {x!r} is not an integer")
            if not 0 <= int(x) <= U32:
                raise ValueError(f"{name}[{k}] = {int(x)} is outside 0..{U32:#x}")
        return np.array([int(x) for x in vals], dtype=np.uint32)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, not {arr.dtype}")
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > U32:
            k = int(np.argmax((arr < 0) | (arr > U32)))
            raise ValueError(f"{name}[{k}] = {int(arr[k])} is outside 0..{U32:#x}")
    return np.ascontiguousarray(arr, dtype=np.uint32)


def to_dict(a: ItsArrays) -> dict[str, Any]:
    """The named-state dictionary of ``a`` (layout in the module docstring)."""
    return {
        "GITS_CTLR": gits_ctlr(a.enabled, a.cwriter, a.creadr),
        "GITS_IIDR": gits_iidr(a.abi_rev),
        "GITS_CBASER": a.cbaser,
        "GITS_CWRITER": a.cwriter,
        "GITS_CREADR": a.creadr,
        "GITS_BASER": [a.baser[0], a.baser[1]] + [0] * 6,
        "devices": [
            {"DeviceID": d.devid, "ITT_addr": d.itt_addr, "num_eventid_bits": d.nbits,
             "ites": {"EventID": [int(x) for x in d.event.tolist()],
                      "pINTID": [int(x) for x in d.lpi.tolist()],
                      "ICID": [int(x) for x in d.icid.tolist()],
                      "collection": [bool(x) for x in d.has_coll.tolist()]}}
            for d in a.devices
        ],
        "collections": [{"ICID": icid, "target": target} for icid, target in a.collections],
    }


# ------------------------------------------------------------------ parsing
# (the checks every named state shares: vgic.gic_state)
def _column(where: str, values: list, lo: int, hi: int) -> list[int]:
    return [_int(f"{where}[{k}]", x, lo, hi) for k, x in enumerate(values)]


def _ites(where: str, d: Any, nbits: int, known_icids: set[int]) -> tuple[np.ndarray, ...]:
    _keys(where, d, ("EventID", "pINTID", "ICID", "collection"))
    n = len(d["EventID"]) if isinstance(d["EventID"], (list, tuple)) else -1
    ev = _column(f"{where}.EventID", _list(f"{where}.EventID", d["EventID"], n), 0, (1 << nbits) - 1)
    lp = _column(f"{where}.pINTID", _list(f"{where}.pINTID", d["pINTID"], n), regmap.LPI_BASE,
                 regmap.LPI_BASE + regmap.NR_LPIS - 1)
    ic = _column(f"{where}.ICID", _list(f"{where}.ICID", d["ICID"], n), 0, regmap.ITS_MAX_ICID)
    hc = []
    for k, x in enumerate(_list(f"{where}.collection", d["collection"], n)):
        if not isinstance(x, (bool, np.bool_)):
            raise _fail(f"{where}.collection[{k}]", f"expected a bool, got {x!r}")
        if x and ic[k] not in known_icids:
            raise _fail(f"{where}.collection[{k}]", f"ICID {ic[k]} names no collection")
        hc.append(bool(x))
    if any(b <= a for a, b in zip(ev, ev[1:])):
        raise _fail(f"{where}.EventID", "the EventIDs are not in increasing order")
    return (np.array(ev, dtype=np.uint32), np.array(lp, dtype=np.uint32), np.array(ic, dtype=np.uint16),
            np.array(hc, dtype=np.bool_))


def from_dict(d: Any, nr_vcpus: int, max_ites: int, where: str = "its") -> ItsArrays:
    """Check ``d`` against what the model can hold and return it as arrays;
    :class:`StateError` names the first bad field.  Nothing changes."""
    _keys(where, d, ("GITS_CTLR", "GITS_IIDR", "GITS_CBASER", "GITS_CWRITER", "GITS_CREADR", "GITS_BASER",
                     "devices", "collections"))
    iidr = _int(f"{where}.GITS_IIDR", d["GITS_IIDR"], 0, U32)
    rev = (iidr >> regmap.GITS_IIDR_REV_SHIFT) & 0xF
    if rev >= regmap.ITS_ABI_REVISIONS or iidr != gits_iidr(rev):
        raise _fail(f"{where}.GITS_IIDR", f"{iidr:#x} is not KVM's GITS_IIDR with ABI revision 0")
    cbaser = _int(f"{where}.GITS_CBASER", d["GITS_CBASER"], 0, U64)
    if cbaser and sanitise_cbaser(cbaser) != cbaser:
        raise _fail(f"{where}.GITS_CBASER", f"{cbaser:#x} is not a value KVM's sanitising keeps")
    qsize = cmdq_bytes(cbaser)
    offsets = {}
    for name in ("GITS_CWRITER", "GITS_CREADR"):
        v = _int(f"{where}.{name}", d[name], 0, U64)
        if v & ~regmap.GITS_CMD_OFFSET_MASK or v >= qsize:
            raise _fail(f"{where}.{name}", f"{v:#x} is not a command offset inside the {qsize:#x}-byte queue")
        offsets[name] = v
    baser_list = _list(f"{where}.GITS_BASER", d["GITS_BASER"], 8)
    baser = [_int(f"{where}.GITS_BASER[{k}]", x, 0, U64) for k, x in enumerate(baser_list)]
    for k in (0, 1):
        if sanitise_baser(baser[k], k) != baser[k]:
            raise _fail(f"{where}.GITS_BASER[{k}]", f"{baser[k]:#x} is not a value KVM's write rule keeps")
    for k in range(2, 8):
        if baser[k]:
            raise _fail(f"{where}.GITS_BASER[{k}]", "GITS_BASER2..7 read as zero")
    ctlr = _int(f"{where}.GITS_CTLR", d["GITS_CTLR"], 0, U32)
    enabled = ctlr & regmap.GITS_CTLR_ENABLED
    if ctlr != gits_ctlr(enabled, offsets["GITS_CWRITER"], offsets["GITS_CREADR"]):
        raise _fail(f"{where}.GITS_CTLR", f"{ctlr:#x} is not Enabled with Quiescent as CREADR/CWRITER imply")
    if enabled and not (baser[0] & baser[1] & cbaser & regmap.GITS_BASER_VALID):
        raise _fail(f"{where}.GITS_CTLR", "enabled without valid GITS_CBASER, BASER0 and BASER1")
    if enabled and offsets["GITS_CWRITER"] != offsets["GITS_CREADR"]:
        raise _fail(f"{where}.GITS_CWRITER", "an enabled ITS has run every queued command")

    colls_in = _list(f"{where}.collections", d["collections"])
    collections: list[tuple[int, int]] = []
    seen: set[int] = set()
    for k, c in enumerate(colls_in):
        w = f"{where}.collections[{k}]"
        _keys(w, c, ("ICID", "target"))
        icid = _int(f"{w}.ICID", c["ICID"], 0, regmap.ITS_MAX_ICID)
        target = _int(f"{w}.target", c["target"], 0, U32)
        if icid in seen:
            raise _fail(f"{w}.ICID", f"collection {icid} is listed twice")
        if target != regmap.COLLECTION_NOT_MAPPED and target >= nr_vcpus:
            raise _fail(f"{w}.target", f"{target} is not a vCPU (nor 0xffffffff, not mapped)")
        seen.add(icid)
        collections.append((icid, target))

    devs_in = _list(f"{where}.devices", d["devices"])
    devices: list[Device] = []
    total = 0
    last = -1
    for k, dev in enumerate(devs_in):
        w = f"{where}.devices[{k}]"
        _keys(w, dev, ("DeviceID", "ITT_addr", "num_eventid_bits", "ites"))
        devid = _int(f"{w}.DeviceID", dev["DeviceID"], 0, (1 << regmap.ITS_MAX_DEVID_BITS) - 1)
        if devid <= last:
            raise _fail(f"{w}.DeviceID", "the devices are not in increasing DeviceID order")
        last = devid
        itt = _int(f"{w}.ITT_addr", dev["ITT_addr"], 0, U64)
        if itt & ~regmap.ITS_ITT_ADDR_MASK:
            raise _fail(f"{w}.ITT_addr", f"{itt:#x} is not a 256-byte aligned address below 2**52")
        nbits = _int(f"{w}.num_eventid_bits", dev["num_eventid_bits"], 1, regmap.ITS_MAX_EVENTID_BITS)
        ev, lp, ic, hc = _ites(f"{w}.ites", dev["ites"], nbits, seen)
        total += ev.shape[0]
        devices.append(Device(devid, itt, nbits, ev, lp, ic, hc))
    if total > max_ites:
        raise _fail(f"{where}.devices", f"{total} ITEs, more than this ITS's max_ites {max_ites}")
    # In KVM every device and collection was made under a Valid BASER whose
    # table has its slot (vgic_its_check_id), and any later change of the
    # BASER frees the list (its-facts-B §1.4, §3.6).
    _fit(f"{where}.devices", [d.devid for d in devices], baser[0], "DeviceID")
    _fit(f"{where}.collections", [icid for icid, _ in collections], baser[1], "ICID")
    return ItsArrays(enabled, rev, cbaser, offsets["GITS_CWRITER"], offsets["GITS_CREADR"],
                     (baser[0], baser[1]), devices, collections)


def _fit(where: str, ids: list[int], baser: int, what: str) -> None:
    if not ids:
        return
    if not baser & regmap.GITS_BASER_VALID:
        raise _fail(where, f"objects exist but their GITS_BASER ({baser:#x}) is not Valid")
    entries = ((baser & regmap.GITS_BASER_SIZE_MASK) + 1) * (0x10000 // regmap.ITS_ESZ)
    if baser & regmap.GITS_BASER_INDIRECT:
        entries *= 0x10000 // regmap.ITS_ESZ       # one level-2 page per L1 entry
    if len(ids) > entries:
        raise _fail(where, f"{len(ids)} objects, more than the table's {entries} slots")
    bad = [i for i in ids if i >= entries]
    if bad:
        raise _fail(where, f"{what} {bad[0]} lies beyond the table's {entries} slots")


def ite_counts(a: ItsArrays) -> dict[int, int]:
    """How many ITEs map each LPI (what the Gic's ``lpi.ite_count`` must say)."""
    counts: dict[int, int] = {}
    for dev in a.devices:
        for lpi in dev.lpi.tolist():
            counts[lpi] = counts.get(lpi, 0) + 1
    return counts
