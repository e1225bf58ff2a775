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


# ------------------------------------------------- arrays given to apply_arrays
def _id_column(where: str, values: Any, n: int, lo: int, hi: int, dtype: Any) -> np.ndarray:
    # A 1-D integer column of n entries in lo..hi, as a contiguous `dtype` array.
    try:
        arr = np.asarray(values)
    except Exception as e:          # (a ragged or otherwise unconvertible column)
        raise _fail(where, f"not an array ({e})") from None
    if arr.ndim != 1 or arr.shape[0] != n:
        raise _fail(where, f"expected a 1-D array of {n} entries, got shape {arr.shape}")
    if arr.dtype.kind == "b" and dtype is np.bool_:
        return np.ascontiguousarray(arr, dtype=np.bool_)
    if arr.dtype.kind == "O" and dtype is np.bool_:
        flags = []
        for k, x in enumerate(arr.tolist()):
            if not (isinstance(x, (bool, np.bool_)) or (isinstance(x, (int, np.integer)) and x in (0, 1))):
                raise _fail(f"{where}[{k}]", f"expected a bool, got {x!r}")
            flags.append(bool(x))
        return np.array(flags, dtype=np.bool_)
    if arr.dtype.kind == "O":
        vals = [_int(f"{where}[{k}]", x, lo, hi) for k, x in enumerate(arr.tolist())]
        return np.array(vals, dtype=dtype)
    if arr.dtype.kind not in "iu":
        raise _fail(where, f"expected integers, got {arr.dtype}")
    if n:
        bad = (arr < lo) | (arr > hi)
        if bad.any():
            k = int(np.argmax(bad))
            raise _fail(f"{where}[{k}]", f"{int(arr[k]):#x} is outside {lo:#x}..{hi:#x}")
    return np.ascontiguousarray(arr, dtype=dtype)


def check_arrays(a: Any, nr_vcpus: int, max_ites: int, nr_lpis: int = regmap.NR_LPIS,
                 where: str = "its") -> ItsArrays:
    """Check arrays given to ``Its.apply_arrays`` against what the tables
    can hold: every id in range and listed once, DeviceIDs and each
    device's EventIDs increasing, EventIDs below 2**num_eventid_bits, pINTIDs
    LPIs the Gic can hold, ICIDs of ITEs with a collection naming one,
    collection targets vCPUs (or not mapped), at most ``max_ites`` ITEs,
    and CWRITER/CREADR command offsets inside the queue.  Returns the same
    state as new :class:`ItsArrays` with columns of the table dtypes;
    :class:`vgic.StateError` (a ``ValueError``) names the first bad field.
    Nothing changes.  (Whether the LPIs exist, and their ITE counts, are
    the Gic's: :func:`check_lpi_links`.)"""
    if not isinstance(a, ItsArrays):
        raise _fail(where, f"expected vgic.its_state.ItsArrays, got {type(a).__name__}")
    enabled = _int(f"{where}.enabled", a.enabled, 0, 1)
    abi_rev = _int(f"{where}.abi_rev", a.abi_rev, 0, regmap.ITS_ABI_REVISIONS - 1)
    cbaser = _int(f"{where}.cbaser", a.cbaser, 0, U64)
    qsize = cmdq_bytes(cbaser)
    offsets = []
    for name in ("cwriter", "creadr"):
        v = _int(f"{where}.{name}", getattr(a, name), 0, U64)
        if v & ~regmap.GITS_CMD_OFFSET_MASK or v >= qsize:
            raise _fail(f"{where}.{name}", f"{v:#x} is not a command offset inside the {qsize:#x}-byte queue")
        offsets.append(v)
    baser_in = _list(f"{where}.baser", a.baser, 2)
    baser = (_int(f"{where}.baser[0]", baser_in[0], 0, U64), _int(f"{where}.baser[1]", baser_in[1], 0, U64))

    colls_in = _list(f"{where}.collections", a.collections)
    collections: list[tuple[int, int]] = []
    seen: set[int] = set()
    for k, c in enumerate(colls_in):
        w = f"{where}.collections[{k}]"
        pair = _list(w, c, 2)
        icid = _int(f"{w}.icid", pair[0], 0, regmap.ITS_MAX_ICID)
        target = _int(f"{w}.target", pair[1], 0, U32)
        if icid in seen:
            raise _fail(f"{w}.icid", f"collection {icid} is listed twice")
        if target != regmap.COLLECTION_NOT_MAPPED and target >= nr_vcpus:
            raise _fail(f"{w}.target", f"{target} is not a vCPU (nor 0xffffffff, not mapped)")
        seen.add(icid)
        collections.append((icid, target))
    known = np.zeros(regmap.ITS_MAX_ICID + 1, dtype=np.bool_)
    if seen:
        known[list(seen)] = True

    devs_in = _list(f"{where}.devices", a.devices)
    devices: list[Device] = []
    total = 0
    last = -1
    for k, dev in enumerate(devs_in):
        w = f"{where}.devices[{k}]"
        if not isinstance(dev, Device):
            raise _fail(w, f"expected vgic.its_state.Device, got {type(dev).__name__}")
        devid = _int(f"{w}.devid", dev.devid, 0, (1 << regmap.ITS_MAX_DEVID_BITS) - 1)
        if devid <= last:
            why = "listed twice" if devid == last else "not in increasing DeviceID order"
            raise _fail(f"{w}.devid", f"device {devid} is {why}")
        last = devid
        itt = _int(f"{w}.itt_addr", dev.itt_addr, 0, U64)
        if itt & ~regmap.ITS_ITT_ADDR_MASK:
            raise _fail(f"{w}.itt_addr", f"{itt:#x} is not a 256-byte aligned address below 2**52")
        nbits = _int(f"{w}.nbits", dev.nbits, 1, regmap.ITS_MAX_EVENTID_BITS)
        try:
            n = len(dev.event)
        except TypeError:
            raise _fail(f"{w}.event", f"expected an array, got {type(dev.event).__name__}") from None
        ev = _id_column(f"{w}.event", dev.event, n, 0, (1 << nbits) - 1, np.uint32)
        if n > 1 and not (ev[1:] > ev[:-1]).all():
            i = int(np.argmax(ev[1:] <= ev[:-1])) + 1
            raise _fail(f"{w}.event[{i}]", f"EventID {int(ev[i])} is not above the one before "
                        "(the EventIDs must increase)")
        lp = _id_column(f"{w}.lpi", dev.lpi, n, regmap.LPI_BASE, regmap.LPI_BASE + nr_lpis - 1, np.uint32)
        ic = _id_column(f"{w}.icid", dev.icid, n, 0, regmap.ITS_MAX_ICID, np.uint16)
        hc = _id_column(f"{w}.has_coll", dev.has_coll, n, 0, 1, np.bool_)
        orphan = hc & ~known[ic]
        if orphan.any():
            i = int(np.argmax(orphan))
            raise _fail(f"{w}.has_coll[{i}]", f"ICID {int(ic[i])} names no collection")
        total += n
        if total > max_ites:
            raise _fail(f"{where}.devices", f"more than this ITS's max_ites {max_ites} ITEs")
        devices.append(Device(devid, itt, nbits, ev, lp, ic, hc))
    return ItsArrays(enabled, abi_rev, cbaser, offsets[0], offsets[1], baser, devices, collections)


def check_lpi_links(a: ItsArrays, lpi_intids: Any, lpi_ite_counts: Any, where: str = "its",
                    gic_where: str = "vgic_v3.lpi") -> None:
    """Every ITE of ``a`` maps an LPI the distributor holds (KVM's ITE holds
    a reference to its vgic_irq), and each LPI's ``ite_count`` is the number
    of ITEs mapping it: :class:`vgic.StateError` otherwise.  ``lpi_intids``
    and ``lpi_ite_counts`` are the Gic's ``arrays().lpi`` columns."""
    counts = ite_counts(a)
    have = dict(zip(np.asarray(lpi_intids).tolist(), np.asarray(lpi_ite_counts).tolist()))
    for lpi in counts:
        if lpi not in have:
            raise _fail(f"{where}.devices", f"an ITE maps LPI {lpi}, which {gic_where} does not hold")
    for lpi, n in have.items():
        if n != counts.get(lpi, 0):
            raise _fail(gic_where, f"LPI {lpi} has ite_count {n} but {counts.get(lpi, 0)} ITEs map it")
